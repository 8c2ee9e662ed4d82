//! AAC re-encoding: decode with libavcodec, resample with libswresample,
//! encode AAC-LC at the profile's rate, channels and bitrate.
//!
//! Used by passthrough relays whose profile says `audio.reencode = true`
//! (TRTC always re-encodes audio). Blocking CPU work: callers run it on a
//! dedicated thread (`audio_stage`, a `media::stage::Stage`), never on the async runtime. Output frames
//! are 1024 samples with timestamps counted from the first input frame, so
//! the output clock is steady whatever the input's frame sizes.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use bytes::Bytes;
use ffmpeg_next as ff;

use super::ffi::{self, Received, received};
use super::{Codec, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind};
use crate::profile::AudioEncoding;

#[derive(Debug, thiserror::Error)]
pub enum AacError {
    #[error("libav: {0}")]
    Av(#[from] ff::Error),
    #[error("no {0} in this libavcodec")]
    NoCodec(&'static str),
}

fn layout_for(channels: usize) -> ff::ChannelLayout {
    if channels == 1 {
        ff::ChannelLayout::MONO
    } else {
        ff::ChannelLayout::STEREO
    }
}

const PLANAR_F32: ff::format::Sample = ff::format::Sample::F32(ff::format::sample::Type::Planar);

/// AAC (RTMP) or Opus (WebRTC) frames in, planar f32 samples at a chosen
/// rate and channel count out.
pub(crate) struct AacDecoder {
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    rate: u32,
    channels: usize,
    scratch: ff::frame::Audio,
}

impl AacDecoder {
    pub(crate) fn new(
        input: &TrackConfig,
        rate: u32,
        channels: usize,
    ) -> Result<AacDecoder, AacError> {
        ff::init()?;
        let (id, name) = match input.codec {
            Codec::Opus => (ff::codec::Id::OPUS, "Opus decoder"),
            _ => (ff::codec::Id::AAC, "AAC decoder"),
        };
        let dcodec = ff::decoder::find(id).ok_or(AacError::NoCodec(name))?;
        let mut dctx = ff::codec::context::Context::new_with_codec(dcodec);
        if input.codec == Codec::Opus {
            // WebRTC Opus has no OpusHead: 48 kHz stereo, as RFC 7587 says.
            ffi::set_audio_format(&mut dctx, 48_000, 2);
        }
        ffi::set_extradata(&mut dctx, &input.extradata);
        Ok(AacDecoder {
            decoder: dctx.decoder().audio()?,
            resampler: None,
            rate,
            channels,
            scratch: ff::frame::Audio::empty(),
        })
    }

    /// Decodes one frame and appends its samples to `out` (one Vec per channel).
    pub(crate) fn push(&mut self, f: &EncodedFrame, out: &mut [Vec<f32>]) -> Result<(), AacError> {
        let mut pkt = ff::Packet::copy(&f.data);
        pkt.set_pts(Some(f.pts));
        self.decoder.send_packet(&pkt)?;
        while received(self.decoder.receive_frame(&mut self.scratch))? == Received::Got {
            let decoded = std::mem::replace(&mut self.scratch, ff::frame::Audio::empty());
            self.resample_into(&decoded, out)?;
        }
        Ok(())
    }

    /// Resamples planar/interleaved PCM of any layout into `out`.
    fn resample_into(
        &mut self,
        decoded: &ff::frame::Audio,
        out: &mut [Vec<f32>],
    ) -> Result<(), AacError> {
        let rs = match &mut self.resampler {
            Some(r) => r,
            None => {
                let in_layout = if decoded.channel_layout().is_empty() {
                    ff::ChannelLayout::default(decoded.channels() as i32)
                } else {
                    decoded.channel_layout()
                };
                self.resampler
                    .insert(ff::software::resampling::Context::get(
                        decoded.format(),
                        in_layout,
                        decoded.rate(),
                        PLANAR_F32,
                        layout_for(self.channels),
                        self.rate,
                    )?)
            }
        };
        let mut converted = ff::frame::Audio::empty();
        rs.run(decoded, &mut converted)?;
        let n = converted.samples();
        for (ch, buf) in out.iter_mut().enumerate().take(self.channels) {
            buf.extend_from_slice(&converted.plane::<f32>(ch)[..n]);
        }
        Ok(())
    }
}

/// Planar f32 samples in, AAC-LC frames out with steady timestamps.
pub(crate) struct AacEncoder {
    encoder: ff::encoder::Audio,
    config: TrackConfig,
    rate: u32,
    channels: usize,
    frame_size: usize,
    sent: i64,
    packets: i64,
    /// Opus (libopus, for WebRTC) rather than AAC: interleaved samples.
    opus: bool,
}

/// Opus for WebRTC viewers: 48 kHz stereo, 20 ms frames.
const OPUS_RATE: u32 = 48_000;

impl AacEncoder {
    /// An Opus encoder (libopus) for WebRTC: 48 kHz stereo, 960-sample frames.
    pub(crate) fn opus(bitrate_kbps: u32) -> Result<AacEncoder, AacError> {
        ff::init()?;
        let ecodec = ff::encoder::find_by_name("libopus").ok_or(AacError::NoCodec("libopus"))?;
        let mut enc = ff::codec::context::Context::new_with_codec(ecodec)
            .encoder()
            .audio()?;
        enc.set_rate(OPUS_RATE as i32);
        enc.set_channel_layout(ff::ChannelLayout::STEREO);
        enc.set_channels(2);
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Packed));
        enc.set_bit_rate(bitrate_kbps as usize * 1000);
        enc.set_time_base(ff::Rational::new(1, OPUS_RATE as i32));
        let encoder = enc.open_as(ecodec)?;
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AacEncoder {
            encoder,
            config: TrackConfig {
                kind: TrackKind::Audio,
                codec: Codec::Opus,
                extradata: Bytes::new(),
            },
            rate: OPUS_RATE,
            channels: 2,
            frame_size,
            sent: 0,
            packets: 0,
            opus: true,
        })
    }

    pub(crate) fn new(out: &AudioEncoding) -> Result<AacEncoder, AacError> {
        ff::init()?;
        let ecodec =
            ff::encoder::find(ff::codec::Id::AAC).ok_or(AacError::NoCodec("AAC encoder"))?;
        let mut ectx = ff::codec::context::Context::new_with_codec(ecodec);
        ectx.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        let mut enc = ectx.encoder().audio()?;
        enc.set_rate(out.sample_rate as i32);
        enc.set_channel_layout(layout_for(out.channels as usize));
        enc.set_channels(out.channels as i32);
        enc.set_format(PLANAR_F32);
        enc.set_bit_rate(out.bitrate_kbps as usize * 1000);
        enc.set_time_base(ff::Rational::new(1, out.sample_rate as i32));
        let encoder = enc.open_as(ecodec)?;
        let extradata = ffi::encoder_extradata(&encoder);
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AacEncoder {
            encoder,
            config: TrackConfig {
                kind: TrackKind::Audio,
                codec: Codec::Aac,
                extradata: Bytes::from(extradata),
            },
            rate: out.sample_rate,
            channels: out.channels as usize,
            frame_size,
            sent: 0,
            packets: 0,
            opus: false,
        })
    }

    pub(crate) fn config(&self) -> &TrackConfig {
        &self.config
    }

    /// The encoder's priming delay in milliseconds: the first packet's audio
    /// is this much later than its timestamp.
    pub(crate) fn delay_ms(&self) -> i64 {
        let padding = ffi::initial_padding(&self.encoder);
        i64::from(padding.max(0)) * 1000 / i64::from(self.rate)
    }

    /// Samples per encoded frame (1024 for AAC-LC).
    pub(crate) fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Encodes exactly one frame of samples (`frame_size` per channel);
    /// output times are `base_ms` plus the samples encoded before.
    pub(crate) fn encode(
        &mut self,
        planes: &[&[f32]],
        base_ms: i64,
    ) -> Result<Vec<EncodedFrame>, AacError> {
        let mut frame = if self.opus {
            // libopus takes interleaved stereo.
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
                self.frame_size,
                ff::ChannelLayout::STEREO,
            );
            let (l, r) = (planes[0], planes.get(1).copied().unwrap_or(planes[0]));
            for (i, out) in frame.plane_mut::<(f32, f32)>(0).iter_mut().enumerate() {
                *out = (l[i], r[i]);
            }
            frame
        } else {
            let mut frame =
                ff::frame::Audio::new(PLANAR_F32, self.frame_size, layout_for(self.channels));
            for (ch, samples) in planes.iter().enumerate().take(self.channels) {
                frame
                    .plane_mut::<f32>(ch)
                    .copy_from_slice(&samples[..self.frame_size]);
            }
            frame
        };
        frame.set_rate(self.rate);
        frame.set_pts(Some(self.sent));
        self.sent += self.frame_size as i64;
        self.encoder.send_frame(&frame)?;
        let mut out = Vec::new();
        let mut pkt = ff::Packet::empty();
        while received(self.encoder.receive_packet(&mut pkt))? == Received::Got {
            // Counted per packet (the encoder's own pts starts negative, at its priming delay).
            let samples = self.packets * self.frame_size as i64;
            self.packets += 1;
            let ms = base_ms
                + TimeBase {
                    num: 1,
                    den: self.rate,
                }
                .rescale(samples, TimeBase::MILLIS);
            out.push(EncodedFrame {
                kind: TrackKind::Audio,
                codec: self.config.codec,
                pts: ms,
                dts: ms,
                time_base: TimeBase::MILLIS,
                keyframe: true,
                data: Bytes::copy_from_slice(pkt.data().unwrap_or_default()),
            });
        }
        Ok(out)
    }
}

/// Decode, resample, re-encode: one anchor's AAC at the profile's settings.
pub(crate) struct AacReencoder {
    decoder: AacDecoder,
    encoder: AacEncoder,
    pending: Vec<Vec<f32>>,
    base_ms: Option<i64>,
}

impl AacReencoder {
    pub(crate) fn new(input: &TrackConfig, out: &AudioEncoding) -> Result<AacReencoder, AacError> {
        Ok(AacReencoder {
            decoder: AacDecoder::new(input, out.sample_rate, out.channels as usize)?,
            encoder: AacEncoder::new(out)?,
            pending: vec![Vec::new(); out.channels as usize],
            base_ms: None,
        })
    }

    /// Decode AAC, encode Opus for WebRTC (48 kHz stereo, `bitrate_kbps`).
    fn to_opus(input: &TrackConfig, bitrate_kbps: u32) -> Result<AacReencoder, AacError> {
        Ok(AacReencoder {
            decoder: AacDecoder::new(input, OPUS_RATE, 2)?,
            encoder: AacEncoder::opus(bitrate_kbps)?,
            pending: vec![Vec::new(); 2],
            base_ms: None,
        })
    }

    /// The output's AudioSpecificConfig (empty for Opus).
    pub(crate) fn config(&self) -> &TrackConfig {
        self.encoder.config()
    }

    /// Decodes one AAC frame and returns the re-encoded frames it completes.
    pub(crate) fn push(&mut self, f: &EncodedFrame) -> Result<Vec<EncodedFrame>, AacError> {
        let base = *self
            .base_ms
            .get_or_insert_with(|| f.time_base.rescale(f.pts, TimeBase::MILLIS));
        self.decoder.push(f, &mut self.pending)?;
        self.encode_ready(base)
    }

    fn encode_ready(&mut self, base: i64) -> Result<Vec<EncodedFrame>, AacError> {
        let n = self.encoder.frame_size();
        let mut out = Vec::new();
        while self.pending[0].len() >= n {
            let planes: Vec<&[f32]> = self.pending.iter().map(|p| &p[..n]).collect();
            out.extend(self.encoder.encode(&planes, base)?);
            for p in &mut self.pending {
                p.drain(..n);
            }
        }
        Ok(out)
    }
}

/// Messages queued for the audio thread (about 20 s of AAC frames).
const STAGE_CAPACITY: usize = 1024;

/// Re-encodes a relay's audio (AAC, or Opus to AAC) on its own thread.
pub(crate) fn audio_stage(settings: AudioEncoding) -> super::stage::Stage {
    super::stage::Stage::spawn("aac-reencode", STAGE_CAPACITY, move |rx, out| {
        stage(rx, out, move |c| AacReencoder::new(c, &settings))
    })
}

/// Transcodes AAC to Opus (64 kbps) on its own thread, for WebRTC viewers.
pub(crate) fn opus_stage() -> super::stage::Stage {
    super::stage::Stage::spawn("opus-encode", STAGE_CAPACITY, move |rx, out| {
        stage(rx, out, |c| AacReencoder::to_opus(c, 64))
    })
}

fn stage(
    rx: Receiver<Arc<MediaMessage>>,
    out: tokio::sync::mpsc::Sender<Arc<MediaMessage>>,
    make: impl Fn(&TrackConfig) -> Result<AacReencoder, AacError>,
) {
    let mut coder: Option<AacReencoder> = None;
    while let Ok(m) = rx.recv() {
        match &*m {
            MediaMessage::Config(c) => match make(c) {
                Ok(r) => {
                    let cfg = Arc::new(MediaMessage::Config(r.config().clone()));
                    coder = Some(r);
                    if out.blocking_send(cfg).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("audio re-encoder: {e}; audio dropped until the next config");
                    coder = None;
                }
            },
            MediaMessage::Frame(f) => {
                let Some(c) = coder.as_mut() else { continue };
                match c.push(f) {
                    Ok(frames) => {
                        if !super::stage::send_frames(&out, frames) {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!("audio re-encoder skipped a frame: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::AudioCodec;

    /// Encodes a tone with our own encoder settings, then re-encodes it at
    /// another rate and channel count: frame sizes, config and timestamps.
    /// Opus (WebRTC anchors) decodes into the same planar samples.
    #[test]
    fn aac_is_transcoded_to_opus_for_webrtc() {
        // A second of a 440 Hz tone as AAC, then through the Opus re-encoder.
        let settings = AudioEncoding {
            sample_rate: 48_000,
            channels: 2,
            bitrate_kbps: 128,
            codec: AudioCodec::AacLc,
        };
        let mut aac = AacEncoder::new(&settings).unwrap();
        let tone: Vec<f32> = (0..48_000)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.5)
            .collect();
        let mut frames = Vec::new();
        for chunk in tone.chunks_exact(aac.frame_size()) {
            frames.extend(aac.encode(&[chunk, chunk], 0).unwrap());
        }
        let mut opus = AacReencoder::to_opus(aac.config(), 64).unwrap();
        assert_eq!(opus.config().codec, Codec::Opus);
        let out: Vec<EncodedFrame> = frames.iter().flat_map(|f| opus.push(f).unwrap()).collect();
        // 20 ms Opus frames, 20 ms apart.
        assert!(out.len() >= 40, "{} Opus frames", out.len());
        assert!(
            out.iter()
                .all(|f| f.codec == Codec::Opus && !f.data.is_empty())
        );
        assert_eq!(out[1].pts - out[0].pts, 20);
        // And back: Opus decodes to the tone's level.
        let mut dec = AacDecoder::new(opus.config(), 48_000, 2).unwrap();
        let mut pcm = vec![Vec::new(), Vec::new()];
        for f in &out {
            dec.push(f, &mut pcm).unwrap();
        }
        let peak = pcm[0].iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((0.35..0.65).contains(&peak), "peak {peak}");
    }

    #[test]
    fn decodes_opus() {
        ff::init().unwrap();
        let codec = ff::encoder::find_by_name("libopus").unwrap();
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .unwrap();
        enc.set_rate(48_000);
        enc.set_channel_layout(ff::ChannelLayout::STEREO);
        enc.set_channels(2);
        enc.set_format(ff::format::Sample::I16(ff::format::sample::Type::Packed));
        enc.set_bit_rate(64_000);
        enc.set_time_base(ff::Rational::new(1, 48_000));
        let mut enc = enc.open_as(codec).unwrap();
        let n = enc.frame_size() as usize;
        let cfg = TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Opus,
            extradata: Bytes::new(),
        };
        let mut dec = AacDecoder::new(&cfg, 48_000, 2).unwrap();
        let mut out = vec![Vec::new(), Vec::new()];
        for i in 0..20 {
            let mut pcm = ff::frame::Audio::new(
                ff::format::Sample::I16(ff::format::sample::Type::Packed),
                n,
                ff::ChannelLayout::STEREO,
            );
            pcm.set_rate(48_000);
            for (k, s) in pcm.plane_mut::<(i16, i16)>(0).iter_mut().enumerate() {
                let t = (i * n + k) as f32 / 48_000.0;
                let v = ((t * 440.0 * std::f32::consts::TAU).sin() * 12_000.0) as i16;
                *s = (v, v);
            }
            pcm.set_pts(Some((i * n) as i64));
            enc.send_frame(&pcm).unwrap();
            let mut pkt = ff::Packet::empty();
            while enc.receive_packet(&mut pkt).is_ok() {
                let f = EncodedFrame {
                    kind: TrackKind::Audio,
                    codec: Codec::Opus,
                    pts: 0,
                    dts: 0,
                    time_base: TimeBase::MILLIS,
                    keyframe: true,
                    data: Bytes::copy_from_slice(pkt.data().unwrap()),
                };
                dec.push(&f, &mut out).unwrap();
            }
        }
        assert!(out[0].len() > 48_000 / 4, "{}", out[0].len());
        let peak = out[0].iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.2 && peak < 0.6, "{peak}");
    }

    #[test]
    fn reencodes_aac_to_the_profile_rate_and_layout() {
        let source = AudioEncoding {
            sample_rate: 44_100,
            channels: 2,
            bitrate_kbps: 128,
            codec: AudioCodec::AacLc,
        };
        // Make a real AAC stream: re-encode silence-free PCM through a first encoder.
        let seed = TrackConfig {
            kind: TrackKind::Audio,
            codec: Codec::Aac,
            extradata: Bytes::from_static(&[0x12, 0x10]), // 44.1 kHz stereo AAC-LC
        };
        let mut first = AacReencoder::new(&seed, &source).unwrap();
        let mut frames = Vec::new();
        let layout = ff::ChannelLayout::STEREO;
        for i in 0..50 {
            let mut pcm = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Planar),
                1024,
                layout,
            );
            pcm.set_rate(44_100);
            for ch in 0..2 {
                for (n, s) in pcm.plane_mut::<f32>(ch).iter_mut().enumerate() {
                    let t = (i * 1024 + n) as f32 / 44_100.0;
                    *s = (t * 440.0 * std::f32::consts::TAU).sin() * 0.5;
                }
            }
            first
                .decoder
                .resample_into(&pcm, &mut first.pending)
                .unwrap();
            frames.extend(first.encode_ready(0).unwrap());
        }
        assert!(frames.len() > 40, "{}", frames.len());
        let input_cfg = first.config().clone();

        let target = AudioEncoding {
            sample_rate: 48_000,
            channels: 1,
            bitrate_kbps: 64,
            codec: AudioCodec::AacLc,
        };
        let mut re = AacReencoder::new(&input_cfg, &target).unwrap();
        assert_eq!(
            crate::hls::writer::aac_rate_channels(&re.config().extradata),
            Some((48_000, 1))
        );
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let mut f = f.clone();
            f.pts = 1000 + i as i64 * 23;
            f.dts = f.pts;
            out.extend(re.push(&f).unwrap());
        }
        assert!(out.len() > 30, "{}", out.len());
        assert_eq!(out[0].pts, 1000, "first output at the first input time");
        for w in out.windows(2) {
            assert!(w[1].pts > w[0].pts);
        }
    }
}
