//! Video stages of a mix: H.264 / VP8 / VP9 decode per input, the canvas anchors are
//! composed on (libswscale, buffers reused), and the libx264 encoder.
//!
//! Blocking CPU work, called only from the mix thread.

use std::collections::HashMap;

use bytes::Bytes;
use ffmpeg_next as ff;

use super::layout::{Placement, Rect};
use super::up2::{self, Up2};
use crate::media::ffi::{self, Received, received};
use crate::media::h264;
use crate::media::{Codec, EncodedFrame, TimeBase, TrackConfig, TrackKind};
use crate::profile::{Background, H264Profile, RenderMode, Rgb, VideoEncoding};

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("libav: {0}")]
    Av(#[from] ff::Error),
    #[error("no {0} in this libavcodec")]
    NoCodec(&'static str),
}

/// The largest picture an input decoder takes (4096x2304: 4K UHD fits).
const MAX_DECODED_PIXELS: i64 = 4096 * 2304;

/// One input's H.264 decoder, rebuilt when its configuration changes.
pub(crate) struct VideoDecoder {
    decoder: ff::decoder::Video,
    config: Bytes,
    frame: ff::frame::Video,
    scratch: ff::frame::Video,
}

impl VideoDecoder {
    pub(crate) fn new(config: &TrackConfig) -> Result<VideoDecoder, VideoError> {
        let (id, name) = match config.codec {
            Codec::H264 => (ff::codec::Id::H264, "H.264 decoder"),
            Codec::Vp8 => (ff::codec::Id::VP8, "VP8 decoder"),
            Codec::Vp9 => (ff::codec::Id::VP9, "VP9 decoder"),
            Codec::Aac | Codec::Opus => {
                return Err(VideoError::NoCodec("a video decoder for an audio codec"));
            }
        };
        let codec = ff::decoder::find(id).ok_or(VideoError::NoCodec(name))?;
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        ffi::set_extradata(&mut ctx, &config.extradata);
        // A publisher's SPS may declare any size: libavcodec refuses
        // pictures over this instead of allocating for them.
        ffi::set_max_pixels(&mut ctx, MAX_DECODED_PIXELS);
        Ok(VideoDecoder {
            decoder: ctx.decoder().video()?,
            config: config.extradata.clone(),
            frame: ff::frame::Video::empty(),
            scratch: ff::frame::Video::empty(),
        })
    }

    pub(crate) fn config(&self) -> &Bytes {
        &self.config
    }

    /// Decodes one frame; `Ok(true)` when a new picture is in `picture()`.
    pub(crate) fn push(&mut self, f: &EncodedFrame) -> Result<bool, VideoError> {
        let mut pkt = ff::Packet::copy(&f.data);
        pkt.set_pts(Some(f.pts));
        pkt.set_dts(Some(f.dts));
        if f.keyframe {
            pkt.set_flags(ff::packet::Flags::KEY);
        }
        self.decoder.send_packet(&pkt)?;
        // receive_frame clears its frame even when it has nothing (EAGAIN),
        // so decode into a scratch frame and keep the last picture.
        let mut got = false;
        while received(self.decoder.receive_frame(&mut self.scratch))? == Received::Got {
            std::mem::swap(&mut self.frame, &mut self.scratch);
            got = true;
        }
        Ok(got)
    }

    pub(crate) fn picture(&self) -> &ff::frame::Video {
        &self.frame
    }
}

/// A decoder for a stream joined (or resumed after a loss) mid-GOP: frames
/// wait for a keyframe, and after an undecodable frame for the next one.
#[derive(Default)]
pub(crate) struct GatedDecoder {
    decoder: Option<VideoDecoder>,
    need_keyframe: bool,
}

impl GatedDecoder {
    /// A new configuration: a new decoder (none if it cannot be made),
    /// waiting for a keyframe.
    pub(crate) fn configure(&mut self, config: &TrackConfig) -> Result<(), VideoError> {
        self.need_keyframe = true;
        self.decoder = None;
        self.decoder = Some(VideoDecoder::new(config)?);
        Ok(())
    }

    /// Decodes `f`; the picture it completed, if any.
    pub(crate) fn decode(
        &mut self,
        f: &EncodedFrame,
    ) -> Result<Option<&mut ff::frame::Video>, VideoError> {
        let Some(dec) = self.decoder.as_mut() else {
            return Ok(None);
        };
        if self.need_keyframe && !f.keyframe {
            return Ok(None);
        }
        self.need_keyframe = false;
        match dec.push(f) {
            Ok(true) => Ok(Some(&mut dec.frame)),
            Ok(false) => Ok(None),
            Err(e) => {
                self.need_keyframe = true;
                Err(e)
            }
        }
    }
}

/// BT.601 limited-range YUV of an RGB colour.
fn yuv(c: Rgb) -> (u8, u8, u8) {
    let (r, g, b) = (f64::from(c.0), f64::from(c.1), f64::from(c.2));
    let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
    let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
    let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
    (y.round() as u8, u.round() as u8, v.round() as u8)
}

fn colour_of(b: &Background) -> Rgb {
    match b {
        Background::Color(c) => *c,
        // Behind (and instead of, if unreadable) an image: black.
        Background::Image(_) => Rgb(0, 0, 0),
    }
}

/// Whether `path` holds a picture the mixer can draw (decoded as it will be).
pub(crate) fn check_image(path: &std::path::Path) -> Result<(), VideoError> {
    let frame = load_image(path)?;
    if frame.width() == 0 || frame.height() == 0 {
        return Err(VideoError::NoCodec("a picture in the image file"));
    }
    Ok(())
}

/// Decodes the first picture of an image file (PNG, JPEG, … anything libav reads).
fn load_image(path: &std::path::Path) -> Result<ff::frame::Video, VideoError> {
    let mut input = ff::format::input(&path)?;
    let stream = input
        .streams()
        .best(ff::media::Type::Video)
        .ok_or(VideoError::NoCodec("a picture in the image file"))?;
    let index = stream.index();
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters())?;
    let mut decoder = ctx.decoder().video()?;
    let mut frame = ff::frame::Video::empty();
    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        decoder.send_packet(&packet)?;
        if received(decoder.receive_frame(&mut frame))? == Received::Got {
            return Ok(frame);
        }
    }
    decoder.send_eof()?;
    decoder.receive_frame(&mut frame)?;
    Ok(frame)
}

/// The mixed picture, reused frame after frame.
pub(crate) struct Canvas {
    frame: ff::frame::Video,
    background: (u8, u8, u8),
    background_image: Option<std::path::PathBuf>,
    /// Decoded image files (backgrounds, placeholders) with their scaling key; `None` if unreadable.
    images: HashMap<std::path::PathBuf, Option<(String, ff::frame::Video)>>,
    /// Scaled copies of inputs, by (user, target size); scalers by (source, target).
    /// Scaled copies by source key (UserID or `image:<path>`), then target size.
    scaled: HashMap<String, HashMap<(Rect, u32, u32), ff::frame::Video>>,
    scalers: HashMap<(u32, u32, i32, u32, u32), ff::software::scaling::Context>,
    /// Borrowed by the scaler to view the part of a source that shows.
    view: ff::frame::Video,
    /// Scales by exactly two without libswscale (`up2`), when `Some`. Not
    /// in an unoptimised (debug) build: there its per-pixel loop takes
    /// 22.8 ms a 640x720 cell against libswscale's 0.29 ms (0.1 ms
    /// optimised; `cargo bench --profile dev --bench scale`), and every
    /// mix run by the test suite's gateway would miss its ticks.
    up2: Option<Up2>,
}

impl Canvas {
    pub(crate) fn new(width: u32, height: u32, background: &Background) -> Canvas {
        Canvas {
            frame: ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height),
            background: yuv(colour_of(background)),
            background_image: image_of(background),
            images: HashMap::new(),
            scaled: HashMap::new(),
            scalers: HashMap::new(),
            view: ff::frame::Video::empty(),
            up2: (!cfg!(debug_assertions)).then(Up2::default),
        }
    }

    pub(crate) fn set_background(&mut self, background: &Background) {
        self.background = yuv(colour_of(background));
        self.background_image = image_of(background);
    }

    /// Paints a background (colour, or image stretched over `r`).
    fn paint(&mut self, r: Rect, b: &Background) -> Result<(), VideoError> {
        let Background::Image(path) = b else {
            self.fill(r, yuv(colour_of(b)));
            return Ok(());
        };
        if !self.images.contains_key(path) {
            let img = match load_image(path) {
                Ok(f) => Some((format!("image:{}", path.display()), f)),
                Err(e) => {
                    tracing::warn!(image = %path.display(), "mix: cannot read image, using black: {e}");
                    None
                }
            };
            self.images.insert(path.clone(), img);
        }
        // Taken out while drawn (draw needs the canvas mutably), then put back: no copy.
        let Some((key, img)) = self.images.get_mut(path).and_then(Option::take) else {
            self.fill(r, yuv(Rgb(0, 0, 0)));
            return Ok(());
        };
        let drawn = self.draw(&key, &img, r, RenderMode::Stretch, true);
        if let Some(slot) = self.images.get_mut(path) {
            *slot = Some((key, img));
        }
        drawn
    }

    pub(crate) fn frame_mut(&mut self) -> &mut ff::frame::Video {
        &mut self.frame
    }

    fn fill(&mut self, r: Rect, (y, u, v): (u8, u8, u8)) {
        let (w, h) = (self.frame.width(), self.frame.height());
        let r = clip(r, w, h);
        for (plane, val, shift) in [(0, y, 0), (1, u, 1), (2, v, 1)] {
            let stride = self.frame.stride(plane);
            let data = self.frame.data_mut(plane);
            for row in (r.y >> shift)..((r.y + r.h) >> shift) {
                let start = row as usize * stride + (r.x >> shift) as usize;
                let len = (r.w >> shift) as usize;
                data[start..start + len].fill(val);
            }
        }
    }

    /// Draws one frame: the background unless `covered` (the placements
    /// cover the canvas, `layout::covers`: every cell paints all of its
    /// rectangle), then every placement bottom to top, each anchor's latest
    /// picture (`picture(user)`, if it has one to show) or its placeholder.
    pub(crate) fn compose<'p>(
        &mut self,
        placements: &[Placement],
        covered: bool,
        picture: impl Fn(&str) -> Option<&'p ff::frame::Video>,
    ) -> Result<(), VideoError> {
        // The encoder let go of the last frame; if not, this copies it.
        ffi::make_writable(&mut self.frame)?;
        let (w, h) = (self.frame.width(), self.frame.height());
        let full = Rect { x: 0, y: 0, w, h };
        if !covered {
            match self.background_image.clone() {
                Some(path) => self.paint(full, &Background::Image(path))?,
                None => self.fill(full, self.background),
            }
        }
        for p in placements {
            let pic = p.user.as_ref().and_then(|u| picture(u).map(|f| (u, f)));
            match pic {
                Some((user, src)) if src.width() > 1 && src.height() > 1 => {
                    self.draw(user, src, p.rect, p.render, false)?;
                }
                _ => self.paint(p.rect, &p.placeholder)?,
            }
        }
        Ok(())
    }

    /// Draws `src` into `cell`: only the part of it that shows (a crop's
    /// centre) is scaled, straight into the canvas where the rectangle
    /// allows it, else into a picture of the cell's size that is copied in.
    /// A `still` source (an image file) is scaled once and copied after.
    fn draw(
        &mut self,
        key: &str,
        src: &ff::frame::Video,
        cell: Rect,
        mode: RenderMode,
        still: bool,
    ) -> Result<(), VideoError> {
        let (w, h) = (self.frame.width(), self.frame.height());
        let cell = clip(cell, w, h);
        let (sw, sh) = (src.width(), src.height());
        if cell.w == 0 || cell.h == 0 || sw < 2 || sh < 2 {
            return Ok(());
        }
        let (region, dst) = shown_part((sw, sh), cell, mode);
        if mode == RenderMode::Fit {
            self.fill(cell, self.background);
        }
        if !still && self.doubles(src, region, dst) {
            return Ok(());
        }
        let scaler_key = (
            region.w,
            region.h,
            ff::ffi::AVPixelFormat::from(src.format()) as i32,
            dst.w,
            dst.h,
        );
        let scaler = match self.scalers.entry(scaler_key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(scaler(
                src.format(),
                region,
                dst,
                ff::software::scaling::Flags::BILINEAR,
            )?),
        };
        if !still && ffi::writes_in_place(&self.frame, dst) {
            ffi::scale_into(scaler, src, region, &mut self.view, &mut self.frame, dst)?;
            return Ok(());
        }
        // Allocates only the first time a source is shown at a size.
        let copies = self.scaled.entry(key.to_owned()).or_default();
        let fresh = !copies.contains_key(&(region, dst.w, dst.h));
        let out = copies
            .entry((region, dst.w, dst.h))
            .or_insert_with(|| ff::frame::Video::new(ff::format::Pixel::YUV420P, dst.w, dst.h));
        if fresh || !still {
            let whole = Rect {
                x: 0,
                y: 0,
                w: dst.w,
                h: dst.h,
            };
            ffi::scale_into(scaler, src, region, &mut self.view, out, whole)?;
        }
        for plane in 0..3 {
            let shift = if plane == 0 { 0 } else { 1 };
            let s_stride = out.stride(plane);
            let d_stride = self.frame.stride(plane);
            let src_data = out.data(plane);
            let dst_data = self.frame.data_mut(plane);
            let len = (dst.w >> shift) as usize;
            for row in 0..(dst.h >> shift) as usize {
                let s = row * s_stride;
                let d = ((dst.y >> shift) as usize + row) * d_stride + (dst.x >> shift) as usize;
                dst_data[d..d + len].copy_from_slice(&src_data[s..s + len]);
            }
        }
        Ok(())
    }

    /// Draws `region` of `src` into `dst` of the canvas with [`Up2`] if
    /// that is a scale by exactly two of a YUV420P picture; `false` if not
    /// (libswscale draws it).
    fn doubles(&mut self, src: &ff::frame::Video, region: Rect, dst: Rect) -> bool {
        let even = |r: Rect| [r.x, r.y, r.w, r.h].iter().all(|v| v.is_multiple_of(2));
        let Some(up2) = self.up2.as_mut() else {
            return false;
        };
        if src.format() != ff::format::Pixel::YUV420P
            || dst.w != 2 * region.w
            || dst.h != 2 * region.h
            || !even(region)
            || !even(dst)
        {
            return false;
        }
        for plane in 0..3 {
            let shift = if plane == 0 { 0 } else { 1 };
            let half = |v: u32| (v >> shift) as usize;
            let source = up2::Plane {
                data: src.data(plane),
                stride: src.stride(plane),
                width: src.plane_width(plane) as usize,
                height: src.plane_height(plane) as usize,
            };
            let area = up2::Area {
                x: half(region.x),
                y: half(region.y),
                w: half(region.w),
                h: half(region.h),
            };
            let stride = self.frame.stride(plane);
            let canvas = self.frame.data_mut(plane);
            // Refused before anything is written (a plane that does not
            // hold it): libswscale draws the whole cell again.
            if up2
                .scale(source, area, canvas, stride, (half(dst.x), half(dst.y)))
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Forgets scaled copies of inputs no longer shown (images stay).
    pub(crate) fn retain_users(&mut self, users: &[&str]) {
        self.scaled
            .retain(|u, _| u.starts_with("image:") || users.contains(&u.as_str()));
    }
}

/// A libswscale context from `region`'s size in `format` to `dst`'s in
/// YUV420P.
fn scaler(
    format: ff::format::Pixel,
    region: Rect,
    dst: Rect,
    flags: ff::software::scaling::Flags,
) -> Result<ff::software::scaling::Context, ff::Error> {
    ff::software::scaling::Context::get(
        format,
        region.w,
        region.h,
        ff::format::Pixel::YUV420P,
        dst.w,
        dst.h,
        flags,
    )
}

fn image_of(b: &Background) -> Option<std::path::PathBuf> {
    match b {
        Background::Image(p) => Some(p.clone()),
        Background::Color(_) => None,
    }
}

/// Which part of a `sw`x`sh` picture shows in `cell` drawn as `mode`, and
/// where in the canvas it lands (even coordinates and sizes).
fn shown_part((sw, sh): (u32, u32), cell: Rect, mode: RenderMode) -> (Rect, Rect) {
    let whole = Rect {
        x: 0,
        y: 0,
        w: sw,
        h: sh,
    };
    let sx = f64::from(cell.w) / f64::from(sw);
    let sy = f64::from(cell.h) / f64::from(sh);
    match mode {
        RenderMode::Stretch => (whole, cell),
        // The centre of the picture, as much as the cell's shape takes.
        RenderMode::Crop => {
            let s = sx.max(sy);
            let rw = ((f64::from(cell.w) / s).round() as u32).clamp(2, sw) & !1;
            let rh = ((f64::from(cell.h) / s).round() as u32).clamp(2, sh) & !1;
            let region = Rect {
                x: ((sw - rw) / 2) & !1,
                y: ((sh - rh) / 2) & !1,
                w: rw,
                h: rh,
            };
            (region, cell)
        }
        // All of the picture, centred in the cell.
        RenderMode::Fit => {
            let s = sx.min(sy);
            let dw = ((f64::from(sw) * s).round() as u32).clamp(2, cell.w) & !1;
            let dh = ((f64::from(sh) * s).round() as u32).clamp(2, cell.h) & !1;
            let dst = Rect {
                x: cell.x + (((cell.w - dw) / 2) & !1),
                y: cell.y + (((cell.h - dh) / 2) & !1),
                w: dw,
                h: dh,
            };
            (whole, dst)
        }
    }
}

fn clip(r: Rect, w: u32, h: u32) -> Rect {
    let x = r.x.min(w);
    let y = r.y.min(h);
    Rect {
        x,
        y,
        w: r.w.min(w - x) & !1,
        h: r.h.min(h - y) & !1,
    }
}

/// The libx264 encoder of a mix, producing AVCC frames in milliseconds.
pub(crate) struct VideoEncoder {
    encoder: ff::encoder::Video,
    config: TrackConfig,
    /// The encoder's time base: 1/fps, or milliseconds for `new_vfr`.
    tb: TimeBase,
    /// Added to every output time, ms (to line pictures up with buffered audio).
    offset_ms: i64,
}

impl VideoEncoder {
    pub(crate) fn new(v: &VideoEncoding) -> Result<VideoEncoder, VideoError> {
        VideoEncoder::open(v, v.fps)
    }

    /// An encoder whose frames carry their own times in milliseconds
    /// (`encode_at`), e.g. pictures of a stream that is not constant-rate.
    pub(crate) fn new_vfr(v: &VideoEncoding) -> Result<VideoEncoder, VideoError> {
        VideoEncoder::open(v, 1000)
    }

    fn open(v: &VideoEncoding, tb_den: u32) -> Result<VideoEncoder, VideoError> {
        let codec = ff::encoder::find_by_name("libx264").ok_or(VideoError::NoCodec("libx264"))?;
        let mut ctx = ff::codec::context::Context::new_with_codec(codec);
        ctx.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        let mut enc = ctx.encoder().video()?;
        enc.set_width(v.width);
        enc.set_height(v.height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, tb_den as i32));
        enc.set_frame_rate(Some(ff::Rational::new(v.fps as i32, 1)));
        enc.set_gop(v.fps * v.gop_seconds);
        enc.set_max_b_frames(v.bframes as usize);
        let bps = v.bitrate_kbps as usize * 1000;
        enc.set_bit_rate(bps);
        enc.set_max_bit_rate(bps);
        // VBV of one second: CBR-like for CDNs.
        ffi::set_rc_buffer_size(&mut enc, bps as i32);
        let mut opts = ff::Dictionary::new();
        opts.set("preset", &v.preset);
        opts.set(
            "profile",
            match v.profile {
                H264Profile::Baseline => "baseline",
                H264Profile::Main => "main",
                H264Profile::High => "high",
            },
        );
        if let Some(t) = &v.tune {
            opts.set("tune", t);
        }
        opts.set(
            "threads",
            &crate::capacity::encoder_threads(v, crate::capacity::cores()).to_string(),
        );
        // Keyframes exactly every GOP, so HLS segments and CDN joins line up.
        opts.set(
            "x264-params",
            &format!(
                "keyint={0}:min-keyint={0}:scenecut=0",
                v.fps * v.gop_seconds
            ),
        );
        let encoder = enc.open_as_with(codec, opts)?;
        let headers = ffi::encoder_extradata(&encoder);
        let record =
            h264::avcc_record(&headers).ok_or(VideoError::NoCodec("SPS/PPS from libx264"))?;
        Ok(VideoEncoder {
            encoder,
            config: TrackConfig {
                kind: TrackKind::Video,
                codec: Codec::H264,
                extradata: record,
            },
            tb: TimeBase {
                num: 1,
                den: tb_den,
            },
            offset_ms: 0,
        })
    }

    /// Presents every picture this much later (the audio path's latency).
    pub(crate) fn set_offset_ms(&mut self, ms: i64) {
        self.offset_ms = ms;
    }

    pub(crate) fn config(&self) -> &TrackConfig {
        &self.config
    }

    /// The time (ms) `encode` gives frame number `n`.
    pub(crate) fn pts_ms(&self, n: i64) -> i64 {
        self.tb.rescale(n, TimeBase::MILLIS) + self.offset_ms
    }

    /// Encodes the canvas as output frame number `n`.
    /// The encoder references the canvas's buffers, not a copy of them
    /// (libx264 copies the picture in, and `Canvas::compose` makes them
    /// its own again should anything still hold them).
    pub(crate) fn encode(
        &mut self,
        canvas: &mut ff::frame::Video,
        n: i64,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        canvas.set_pts(Some(n));
        self.encoder.send_frame(canvas)?;
        self.drain()
    }

    /// Encodes `picture` at `ms` (a `new_vfr` encoder), as an IDR when
    /// `keyframe` (so renditions cut where their source does).
    pub(crate) fn encode_at(
        &mut self,
        picture: &mut ff::frame::Video,
        ms: i64,
        keyframe: bool,
    ) -> Result<Vec<EncodedFrame>, VideoError> {
        picture.set_pts(Some(ms));
        picture.set_kind(if keyframe {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        self.encoder.send_frame(picture)?;
        self.drain()
    }

    fn drain(&mut self) -> Result<Vec<EncodedFrame>, VideoError> {
        let tb = self.tb;
        let mut out = Vec::new();
        let mut pkt = ff::Packet::empty();
        while received(self.encoder.receive_packet(&mut pkt))? == Received::Got {
            let data = h264::annexb_to_avcc(pkt.data().unwrap_or_default());
            if data.is_empty() {
                continue;
            }
            let pts = tb.rescale(pkt.pts().unwrap_or(0), TimeBase::MILLIS) + self.offset_ms;
            let dts = tb.rescale(pkt.dts().unwrap_or(0), TimeBase::MILLIS) + self.offset_ms;
            out.push(EncodedFrame {
                kind: TrackKind::Video,
                codec: Codec::H264,
                pts,
                dts,
                time_base: TimeBase::MILLIS,
                keyframe: pkt.is_key(),
                data,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A realtime libvpx (`libvpx`: VP8, `libvpx-vp9`) encoder of `w`x`h` at 25 fps.
    fn vpx_encoder(name: &str, w: u32, h: u32) -> ff::encoder::Video {
        let codec = ff::encoder::find_by_name(name).unwrap();
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .unwrap();
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, 25));
        enc.set_bit_rate(200_000);
        let mut opts = ff::Dictionary::new();
        opts.set("deadline", "realtime");
        opts.set("cpu-used", "8");
        opts.set("lag-in-frames", "0");
        enc.open_as_with(codec, opts).unwrap()
    }

    /// VP8 and VP9 (WebRTC anchors) decode like H.264.
    #[test]
    fn decodes_vp8_and_vp9() {
        ff::init().unwrap();
        for (codec, name) in [(Codec::Vp8, "libvpx"), (Codec::Vp9, "libvpx-vp9")] {
            let mut enc = vpx_encoder(name, 160, 120);
            let mut canvas = Canvas::new(160, 120, &Background::Color(Rgb(255, 0, 0)));
            let config = TrackConfig {
                kind: TrackKind::Video,
                codec,
                extradata: Bytes::new(),
            };
            let mut dec = VideoDecoder::new(&config).unwrap();
            let mut got = false;
            for n in 0..10 {
                canvas.compose(&[], false, |_| None).unwrap();
                let frame = canvas.frame_mut();
                frame.set_pts(Some(n));
                enc.send_frame(frame).unwrap();
                let mut pkt = ff::Packet::empty();
                while enc.receive_packet(&mut pkt).is_ok() {
                    let f = EncodedFrame {
                        kind: TrackKind::Video,
                        codec,
                        pts: n * 40,
                        dts: n * 40,
                        time_base: TimeBase::MILLIS,
                        keyframe: pkt.is_key(),
                        data: Bytes::copy_from_slice(pkt.data().unwrap()),
                    };
                    got |= dec.push(&f).unwrap();
                }
            }
            assert!(got, "{name}");
            let pic = dec.picture();
            assert_eq!((pic.width(), pic.height()), (160, 120));
            let (ry, _, _) = yuv(Rgb(255, 0, 0));
            assert!(
                (i32::from(pic.data(0)[60 * pic.stride(0) + 80]) - i32::from(ry)).abs() < 10,
                "{name}"
            );
        }
    }

    /// One VP8 keyframe of `w`x`h`, as a WebRTC anchor would send it.
    fn vp8_keyframe(w: u32, h: u32) -> EncodedFrame {
        let mut enc = vpx_encoder("libvpx", w, h);
        let mut canvas = Canvas::new(w, h, &Background::Color(Rgb(0, 0, 255)));
        canvas.compose(&[], false, |_| None).unwrap();
        let frame = canvas.frame_mut();
        frame.set_pts(Some(0));
        enc.send_frame(frame).unwrap();
        enc.send_eof().unwrap();
        let mut pkt = ff::Packet::empty();
        enc.receive_packet(&mut pkt).unwrap();
        EncodedFrame {
            kind: TrackKind::Video,
            codec: Codec::Vp8,
            pts: 0,
            dts: 0,
            time_base: TimeBase::MILLIS,
            keyframe: true,
            data: Bytes::copy_from_slice(pkt.data().unwrap()),
        }
    }

    /// A picture larger than the cap is refused by the decoder instead of
    /// allocated for; one under it decodes.
    #[test]
    fn pictures_over_the_pixel_cap_are_refused() {
        ff::init().unwrap();
        let config = TrackConfig {
            kind: TrackKind::Video,
            codec: Codec::Vp8,
            extradata: Bytes::new(),
        };
        let mut dec = VideoDecoder::new(&config).unwrap();
        let small = vp8_keyframe(640, 360);
        assert!(dec.push(&small).unwrap());
        let mut dec = VideoDecoder::new(&config).unwrap();
        let big = vp8_keyframe(4160, 2400);
        assert!(!matches!(dec.push(&big), Ok(true)));
    }

    fn rect(x: u32, y: u32, w: u32, h: u32) -> Rect {
        Rect { x, y, w, h }
    }

    #[test]
    fn only_the_part_that_shows_is_scaled() {
        let cell = rect(640, 0, 640, 720);
        // Crop: the centre half of a 16:9 picture fills a 8:9 cell.
        let shown = shown_part((640, 360), cell, RenderMode::Crop);
        assert_eq!(shown, (rect(160, 0, 320, 360), rect(640, 0, 640, 720)));
        // Fit: all of it, centred, letterboxed.
        let shown = shown_part((640, 360), cell, RenderMode::Fit);
        assert_eq!(shown, (rect(0, 0, 640, 360), rect(640, 180, 640, 360)));
        // Stretch: all of it, all of the cell.
        let shown = shown_part((641, 359), cell, RenderMode::Stretch);
        assert_eq!(shown, (rect(0, 0, 641, 359), rect(640, 0, 640, 720)));
        // A tall picture in a wide cell: its middle rows.
        let (region, _) = shown_part((360, 640), rect(0, 0, 640, 360), RenderMode::Crop);
        assert_eq!(region, rect(0, 218, 360, 202));
        // Never outside the picture, always even.
        for (sw, sh) in [(2, 2), (3, 1000), (1000, 3), (1921, 1081)] {
            for mode in [RenderMode::Crop, RenderMode::Fit, RenderMode::Stretch] {
                let (r, d) = shown_part((sw, sh), rect(2, 4, 98, 50), mode);
                assert!(
                    r.x + r.w <= sw && r.y + r.h <= sh,
                    "{sw}x{sh} {mode:?} {r:?}"
                );
                assert!(
                    d.x >= 2 && d.y >= 4 && d.x + d.w <= 100 && d.y + d.h <= 54,
                    "{d:?}"
                );
                assert!(r.x % 2 == 0 && r.y % 2 == 0 && d.x % 2 == 0 && d.y % 2 == 0);
            }
        }
    }

    /// A `w` x `h` YUV420P picture, each pixel `value(plane, x, y, plane
    /// width)`.
    fn picture(
        w: u32,
        h: u32,
        mut value: impl FnMut(usize, usize, usize, usize) -> u8,
    ) -> ff::frame::Video {
        let mut f = ff::frame::Video::new(ff::format::Pixel::YUV420P, w, h);
        for plane in 0..3 {
            let stride = f.stride(plane);
            let (pw, ph) = if plane == 0 { (w, h) } else { (w / 2, h / 2) };
            let data = f.data_mut(plane);
            for y in 0..ph as usize {
                for x in 0..pw as usize {
                    data[y * stride + x] = value(plane, x, y, pw as usize);
                }
            }
        }
        f
    }

    /// A YUV420P picture whose luma rises from left to right.
    fn ramp(w: u32, h: u32) -> ff::frame::Video {
        picture(w, h, |plane, x, _, pw| {
            if plane == 0 {
                (16 + x * 200 / pw) as u8
            } else {
                128
            }
        })
    }

    fn luma_row(f: &ff::frame::Video, y: usize, x: usize, w: usize) -> Vec<u8> {
        let stride = f.stride(0);
        f.data(0)[y * stride + x..y * stride + x + w].to_vec()
    }

    #[test]
    fn scaled_in_place_or_through_a_copy_alike() {
        ff::init().unwrap();
        // 640x400 cropped into 640x720: its centre 356x400, scaled by 1.8
        // (libswscale; a scale by two would not use it).
        let src = ramp(640, 400);
        let cell = |x| Placement {
            user: Some("a".into()),
            rect: rect(x, 0, 640, 720),
            z: 0,
            render: RenderMode::Crop,
            placeholder: Background::Color(Rgb(255, 0, 0)),
        };
        let black = Background::Color(Rgb(0, 0, 0));
        // At x = 640 the scaler writes into the canvas; at x = 2 it cannot
        // (unaligned) and scales into a copy.
        let mut direct = Canvas::new(1280, 720, &black);
        direct.compose(&[cell(640)], false, |_| Some(&src)).unwrap();
        let mut copied = Canvas::new(1280, 720, &black);
        copied.compose(&[cell(2)], false, |_| Some(&src)).unwrap();
        for y in [0, 1, 359, 718, 719] {
            let a = luma_row(&direct.frame, y, 640, 640);
            assert_eq!(a, luma_row(&copied.frame, y, 2, 640), "row {y}");
            // The centre of the ramp: columns 142 to 497.
            assert!((a[0] as i32 - (16 + 44)).abs() <= 3, "{}", a[0]);
            assert!((a[639] as i32 - (16 + 155)).abs() <= 3, "{}", a[639]);
            // The background on the left, untouched by the scaler.
            assert_eq!(luma_row(&direct.frame, y, 0, 640), vec![16; 640]);
        }
        for (plane, x, w) in [(1, 320, 320), (2, 320, 320)] {
            let stride = direct.frame.stride(plane);
            let row = &direct.frame.data(plane)[..stride];
            assert!(row[x..x + w].iter().all(|&c| c == 128), "plane {plane}");
        }
        // The same source again, nothing changed: the same canvas.
        let before = direct.frame.data(0).to_vec();
        direct.compose(&[cell(640)], false, |_| Some(&src)).unwrap();
        assert_eq!(before, direct.frame.data(0));
    }

    #[test]
    fn colours_in_limited_range() {
        assert_eq!(yuv(Rgb(0, 0, 0)), (16, 128, 128));
        assert_eq!(yuv(Rgb(255, 255, 255)), (235, 128, 128));
        let (y, u, v) = yuv(Rgb(255, 0, 0));
        assert!(y < 90 && u < 110 && v > 230, "{y} {u} {v}");
    }

    #[test]
    fn encodes_a_canvas_and_decodes_it_back() {
        ff::init().unwrap();
        let v = VideoEncoding::small(25);
        let mut enc = VideoEncoder::new(&v).unwrap();
        let mut canvas = Canvas::new(320, 180, &Background::Color(Rgb(0, 0, 255)));
        let placement = Placement {
            user: None,
            rect: Rect {
                x: 0,
                y: 0,
                w: 160,
                h: 180,
            },
            z: 0,
            render: RenderMode::Crop,
            placeholder: Background::Color(Rgb(255, 0, 0)),
        };
        let mut frames = Vec::new();
        for n in 0..30 {
            canvas
                .compose(std::slice::from_ref(&placement), false, |_| None)
                .unwrap();
            frames.extend(enc.encode(canvas.frame_mut(), n).unwrap());
        }
        assert!(frames.len() >= 25, "{}", frames.len());
        assert!(frames[0].keyframe);
        assert_eq!(
            frames.iter().filter(|f| f.keyframe).count(),
            2,
            "one keyframe per second"
        );
        assert_eq!(frames[1].pts, 40);
        let mut dec = VideoDecoder::new(enc.config()).unwrap();
        let mut got = false;
        for f in &frames {
            got |= dec.push(f).unwrap();
        }
        assert!(got);
        let pic = dec.picture();
        assert_eq!((pic.width(), pic.height()), (320, 180));
        let (ry, _, rv) = yuv(Rgb(255, 0, 0));
        let y_left = pic.data(0)[90 * pic.stride(0) + 40];
        let v_left = pic.data(2)[45 * pic.stride(2) + 20];
        assert!((i32::from(y_left) - i32::from(ry)).abs() < 8, "{y_left}");
        assert!((i32::from(v_left) - i32::from(rv)).abs() < 8, "{v_left}");
        let (by, _, _) = yuv(Rgb(0, 0, 255));
        let y_right = pic.data(0)[90 * pic.stride(0) + 280];
        assert!((i32::from(y_right) - i32::from(by)).abs() < 8, "{y_right}");
    }

    /// A YUV420P picture with detail in every plane: two crossing waves
    /// and noise.
    fn textured(w: u32, h: u32, seed: u64) -> ff::frame::Video {
        let mut state = seed | 1;
        picture(w, h, |plane, x, y, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let wave =
                60.0 * (x as f64 / 7.0 + plane as f64).sin() + 40.0 * (y as f64 / 11.0).cos();
            let v = 128.0 + wave + f64::from((state % 21) as u8) - 10.0;
            v.clamp(16.0, 235.0) as u8
        })
    }

    /// PSNR of `a` against `b` over all three planes' pixels right of
    /// luma column `from`.
    fn psnr(a: &ff::frame::Video, b: &ff::frame::Video, from: usize) -> f64 {
        let (mut sum, mut n) = (0f64, 0f64);
        for plane in 0..3 {
            let (w, h) = (
                a.plane_width(plane) as usize,
                a.plane_height(plane) as usize,
            );
            for y in 0..h {
                for x in (from >> usize::from(plane > 0))..w {
                    let d = f64::from(a.data(plane)[y * a.stride(plane) + x])
                        - f64::from(b.data(plane)[y * b.stride(plane) + x]);
                    sum += d * d;
                    n += 1.0;
                }
            }
        }
        10.0 * (255.0f64 * 255.0 / (sum / n).max(1e-9)).log10()
    }

    /// The canvas with `region` of `src` scaled into `dst` by libswscale.
    fn swscaled(
        src: &ff::frame::Video,
        region: Rect,
        dst: Rect,
        flags: ff::software::scaling::Flags,
    ) -> ff::frame::Video {
        let mut canvas = ff::frame::Video::new(ff::format::Pixel::YUV420P, 1280, 720);
        let mut scaler = scaler(src.format(), region, dst, flags).unwrap();
        let mut view = ff::frame::Video::empty();
        ffi::scale_into(&mut scaler, src, region, &mut view, &mut canvas, dst).unwrap();
        canvas
    }

    #[test]
    fn a_scale_by_two_draws_what_libswscale_would() {
        ff::init().unwrap();
        let src = textured(640, 360, 7);
        let cell = Placement {
            user: Some("a".into()),
            rect: rect(640, 0, 640, 720),
            z: 0,
            render: RenderMode::Crop,
            placeholder: Background::Color(Rgb(255, 0, 0)),
        };
        let mut canvas = Canvas::new(1280, 720, &Background::Color(Rgb(0, 0, 0)));
        // On whatever the build (an unoptimised one leaves it to libswscale).
        canvas.up2 = Some(Up2::default());
        canvas
            .compose(std::slice::from_ref(&cell), false, |_| Some(&src))
            .unwrap();
        // The centre 320x360 of the picture, doubled.
        let (region, dst) = (rect(160, 0, 320, 360), rect(640, 0, 640, 720));
        let bilinear = swscaled(&src, region, dst, ff::software::scaling::Flags::BILINEAR);
        // Without it, the cell is libswscale's bilinear exactly.
        let mut without = Canvas::new(1280, 720, &Background::Color(Rgb(0, 0, 0)));
        without.up2 = None;
        without.compose(&[cell], false, |_| Some(&src)).unwrap();
        assert!(psnr(&without.frame, &bilinear, 640) > 100.0, "identical");
        let bicubic = swscaled(&src, region, dst, ff::software::scaling::Flags::BICUBIC);
        // Only the cell is compared: left of it is the background on one
        // side and nothing on the others.
        let ours = &canvas.frame;
        let against_bilinear = psnr(ours, &bilinear, 640);
        let against_bicubic = psnr(ours, &bicubic, 640);
        let bilinear_against_bicubic = psnr(&bilinear, &bicubic, 640);
        eprintln!(
            "PSNR: ours/bilinear {against_bilinear:.1} dB, ours/bicubic {against_bicubic:.1} dB, \
             bilinear/bicubic {bilinear_against_bicubic:.1} dB"
        );
        assert!(against_bilinear >= 55.0, "{against_bilinear}");
        assert!(against_bilinear < 100.0, "the canvas's own scaler drew it");
    }
}
