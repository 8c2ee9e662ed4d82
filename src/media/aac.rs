//! AAC re-encoding: decode with libavcodec, resample with libswresample,
//! encode AAC-LC at the profile's rate, channels and bitrate.
//!
//! Used by passthrough relays whose profile says `audio.reencode = true`
//! (TRTC always re-encodes audio). Blocking CPU work: callers run it on a
//! dedicated thread (`AudioStage`), never on the async runtime. Output frames
//! are 1024 samples with timestamps counted from the first input frame, so
//! the output clock is steady whatever the input's frame sizes.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use bytes::Bytes;
use ffmpeg_next as ff;

use super::{Codec, DropToKeyframe, EncodedFrame, MediaMessage, TimeBase, TrackConfig, TrackKind};
use crate::profile::AudioEncoding;

#[derive(Debug, thiserror::Error)]
pub enum AacError {
    #[error("libav: {0}")]
    Av(#[from] ff::Error),
    #[error("no {0} in this libavcodec")]
    NoCodec(&'static str),
}

pub struct AacReencoder {
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    encoder: ff::encoder::Audio,
    config: TrackConfig,
    rate: u32,
    channels: usize,
    frame_size: usize,
    /// Resampled samples waiting for a full encoder frame, per channel (planar f32).
    pending: Vec<Vec<f32>>,
    /// Output time of the first sample (ms), samples sent to the encoder, packets out.
    base_ms: Option<i64>,
    emitted: i64,
    packets: i64,
}

impl AacReencoder {
    pub fn new(input: &TrackConfig, out: &AudioEncoding) -> Result<AacReencoder, AacError> {
        ff::init()?;
        let dcodec =
            ff::decoder::find(ff::codec::Id::AAC).ok_or(AacError::NoCodec("AAC decoder"))?;
        let mut dctx = ff::codec::context::Context::new_with_codec(dcodec);
        unsafe {
            let ctx = dctx.as_mut_ptr();
            let len = input.extradata.len();
            let buf = ff::ffi::av_mallocz(len + ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize)
                as *mut u8;
            if !buf.is_null() {
                std::ptr::copy_nonoverlapping(input.extradata.as_ptr(), buf, len);
                (*ctx).extradata = buf;
                (*ctx).extradata_size = len as i32;
            }
        }
        let decoder = dctx.decoder().audio()?;

        let ecodec =
            ff::encoder::find(ff::codec::Id::AAC).ok_or(AacError::NoCodec("AAC encoder"))?;
        let mut ectx = ff::codec::context::Context::new_with_codec(ecodec);
        ectx.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        let mut enc = ectx.encoder().audio()?;
        let layout = if out.channels == 1 {
            ff::ChannelLayout::MONO
        } else {
            ff::ChannelLayout::STEREO
        };
        enc.set_rate(out.sample_rate as i32);
        enc.set_channel_layout(layout);
        enc.set_channels(out.channels as i32);
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        enc.set_bit_rate(out.bitrate_kbps as usize * 1000);
        enc.set_time_base(ff::Rational::new(1, out.sample_rate as i32));
        let encoder = enc.open_as(ecodec)?;
        let extradata = unsafe {
            let ctx = encoder.as_ptr();
            std::slice::from_raw_parts((*ctx).extradata, (*ctx).extradata_size.max(0) as usize)
                .to_vec()
        };
        let frame_size = (encoder.frame_size() as usize).max(1);
        Ok(AacReencoder {
            decoder,
            resampler: None,
            encoder,
            config: TrackConfig {
                kind: TrackKind::Audio,
                codec: Codec::Aac,
                extradata: Bytes::from(extradata),
            },
            rate: out.sample_rate,
            channels: out.channels as usize,
            frame_size,
            pending: vec![Vec::new(); out.channels as usize],
            base_ms: None,
            emitted: 0,
            packets: 0,
        })
    }

    /// The output's AudioSpecificConfig.
    pub fn config(&self) -> &TrackConfig {
        &self.config
    }

    /// Decodes one AAC frame and returns the re-encoded frames it completes.
    pub fn push(&mut self, f: &EncodedFrame) -> Result<Vec<EncodedFrame>, AacError> {
        if self.base_ms.is_none() {
            self.base_ms = Some(f.time_base.rescale(f.pts, TimeBase::MILLIS));
        }
        let mut pkt = ff::Packet::copy(&f.data);
        pkt.set_pts(Some(f.pts));
        self.decoder.send_packet(&pkt)?;
        let mut decoded = ff::frame::Audio::empty();
        let mut out = Vec::new();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            self.resample_into_pending(&decoded)?;
            self.encode_ready(&mut out)?;
        }
        Ok(out)
    }

    fn resample_into_pending(&mut self, decoded: &ff::frame::Audio) -> Result<(), AacError> {
        let layout = if self.channels == 1 {
            ff::ChannelLayout::MONO
        } else {
            ff::ChannelLayout::STEREO
        };
        let target = ff::format::Sample::F32(ff::format::sample::Type::Planar);
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
                        target,
                        layout,
                        self.rate,
                    )?)
            }
        };
        let mut converted = ff::frame::Audio::empty();
        rs.run(decoded, &mut converted)?;
        let n = converted.samples();
        for (ch, buf) in self.pending.iter_mut().enumerate() {
            buf.extend_from_slice(&converted.plane::<f32>(ch)[..n]);
        }
        Ok(())
    }

    fn encode_ready(&mut self, out: &mut Vec<EncodedFrame>) -> Result<(), AacError> {
        let layout = if self.channels == 1 {
            ff::ChannelLayout::MONO
        } else {
            ff::ChannelLayout::STEREO
        };
        while self.pending[0].len() >= self.frame_size {
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Planar),
                self.frame_size,
                layout,
            );
            frame.set_rate(self.rate);
            for (ch, buf) in self.pending.iter_mut().enumerate() {
                frame
                    .plane_mut::<f32>(ch)
                    .copy_from_slice(&buf[..self.frame_size]);
                buf.drain(..self.frame_size);
            }
            frame.set_pts(Some(self.emitted));
            self.emitted += self.frame_size as i64;
            self.encoder.send_frame(&frame)?;
            let mut pkt = ff::Packet::empty();
            while self.encoder.receive_packet(&mut pkt).is_ok() {
                // Counted per packet (the encoder's own pts starts negative, at its priming delay).
                let samples = self.packets * self.frame_size as i64;
                self.packets += 1;
                let ms = self.base_ms.unwrap_or(0)
                    + TimeBase {
                        num: 1,
                        den: self.rate,
                    }
                    .rescale(samples, TimeBase::MILLIS);
                out.push(EncodedFrame {
                    kind: TrackKind::Audio,
                    codec: Codec::Aac,
                    pts: ms,
                    dts: ms,
                    time_base: TimeBase::MILLIS,
                    keyframe: true,
                    data: Bytes::copy_from_slice(pkt.data().unwrap_or_default()),
                });
            }
        }
        Ok(())
    }
}

/// Messages queued for the audio thread (about 20 s of AAC frames).
const STAGE_CAPACITY: usize = 1024;

/// Re-encodes a relay's audio on its own thread.
pub struct AudioStage {
    tx: SyncSender<Arc<MediaMessage>>,
    gate: DropToKeyframe,
    /// Re-encoded messages (the new config, then frames), for the relay to fan out.
    pub out: tokio::sync::mpsc::Receiver<Arc<MediaMessage>>,
}

impl AudioStage {
    pub fn spawn(settings: AudioEncoding) -> AudioStage {
        let (tx, rx) = sync_channel::<Arc<MediaMessage>>(STAGE_CAPACITY);
        let (out_tx, out) = tokio::sync::mpsc::channel(STAGE_CAPACITY);
        std::thread::Builder::new()
            .name("aac-reencode".into())
            .spawn(move || stage(rx, out_tx, settings))
            .expect("spawn thread");
        AudioStage {
            tx,
            gate: DropToKeyframe::default(),
            out,
        }
    }

    /// Queues an audio config or frame without waiting.
    pub fn offer(&mut self, msg: &Arc<MediaMessage>) {
        if !self.gate.admit(msg) {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(msg.clone()) {
            self.gate.overflowed();
        }
    }
}

fn stage(
    rx: Receiver<Arc<MediaMessage>>,
    out: tokio::sync::mpsc::Sender<Arc<MediaMessage>>,
    settings: AudioEncoding,
) {
    let mut coder: Option<AacReencoder> = None;
    while let Ok(m) = rx.recv() {
        match &*m {
            MediaMessage::Config(c) => match AacReencoder::new(c, &settings) {
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
                        for fr in frames {
                            if out
                                .blocking_send(Arc::new(MediaMessage::Frame(fr)))
                                .is_err()
                            {
                                return;
                            }
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
            first.resample_into_pending(&pcm).unwrap();
            first.encode_ready(&mut frames).unwrap();
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
