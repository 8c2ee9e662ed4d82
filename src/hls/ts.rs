//! MPEG-TS packetising for HLS segments: H.264 and AAC. Pure: bytes in,
//! bytes out, no I/O, no clock.
//!
//! A [`TsMuxer`] turns our frames (H.264 in AVCC form, raw AAC; times in
//! milliseconds) into 188-byte transport packets appended to a buffer the
//! caller owns:
//!
//! - a segment starts with the PAT and PMT ([`TsMuxer::tables`]);
//! - H.264 goes as one PES per access unit, Annex B with an access unit
//!   delimiter first and, on keyframes that lack them, the SPS and PPS of
//!   the decoder configuration; the PCR rides on its first packet;
//! - AAC goes ADTS-framed, several frames per PES (up to
//!   [`AUDIO_PES_PAYLOAD`] bytes or [`AUDIO_PES_SPAN_MS`] of audio), as
//!   libavformat does, so audio costs about what it weighs; the pending
//!   audio is written out by [`TsMuxer::flush`] (at a segment's end). A
//!   segment's first audio frame goes in a PES of its own, written as it
//!   comes: a demuxer that starts at this segment learns the track's frame
//!   duration from it, and every later frame it has to time from a PES's
//!   first (libavformat gave the second frame of a first multi-frame PES
//!   the first one's time when the PES lay past its probe);
//!
//! Times match libavformat's mpegts muxer, which this replaces: PTS and
//! DTS are the frame's plus 1.4 s (its default `max_delay` twice), and the
//! PCR is the DTS without that offset, so a decoder's buffer has 1.4 s of
//! slack. Continuity counters run on across segments, as one stream.
//!
//! Steady state allocates nothing: a PES is built in a scratch buffer the
//! muxer keeps, then cut into packets.

use crate::media::h264::BitReader;
use crate::media::{Codec, EncodedFrame, TrackConfig, TrackKind};

const PACKET: usize = 188;
const PAT_PID: u16 = 0x0000;
const PMT_PID: u16 = 0x1000;
const FIRST_ES_PID: u16 = 0x0100;
/// PTS/DTS lead over the PCR, in 90 kHz ticks (1.4 s, as libavformat).
const DELAY_90K: i64 = 126_000;
/// Audio PES payload limit (libavformat's default `pes_payload_size`).
pub(crate) const AUDIO_PES_PAYLOAD: usize = 2930;
/// Audio held in one PES at most (half of libavformat's `max_delay`).
pub(crate) const AUDIO_PES_SPAN_MS: i64 = 350;
const AUD: [u8; 6] = [0, 0, 0, 1, 0x09, 0xf0];

/// Why a track cannot be carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TsError {
    #[error("{0:?} cannot be carried in MPEG-TS here (H.264 and AAC only)")]
    Codec(Codec),
    #[error("AAC configuration that ADTS cannot describe: {0}")]
    Aac(&'static str),
}

/// ADTS header fields from an AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Adts {
    /// Audio object type minus one (ADTS's profile, 0..=3).
    profile: u8,
    freq_index: u8,
    channels: u8,
}

impl Adts {
    /// Reads what ADTS needs from an AudioSpecificConfig; an explicit SBR
    /// or PS signal gives the core object type, as libavformat does.
    pub(crate) fn from_asc(asc: &[u8]) -> Result<Adts, TsError> {
        let mut bits = BitReader::new(asc);
        let mut object = object_type(&mut bits)?;
        let freq_index = read(&mut bits, 4)? as u8;
        if freq_index == 15 {
            return Err(TsError::Aac("explicit sampling rate"));
        }
        let channels = read(&mut bits, 4)? as u8;
        if object == 5 || object == 29 {
            let ext = read(&mut bits, 4)?;
            if ext == 15 {
                read(&mut bits, 24)?;
            }
            object = object_type(&mut bits)?;
        }
        if !(1..=4).contains(&object) {
            return Err(TsError::Aac("object type beyond AAC-LTP"));
        }
        if channels == 0 || channels > 7 {
            return Err(TsError::Aac("channel configuration in the stream"));
        }
        Ok(Adts {
            profile: object as u8 - 1,
            freq_index,
            channels,
        })
    }

    /// The 7-byte header (no CRC) of a frame of `payload` bytes.
    fn header(self, payload: usize) -> [u8; 7] {
        let len = (payload + 7).min(0x1fff) as u16;
        [
            0xff,
            0xf1,
            (self.profile << 6) | (self.freq_index << 2) | (self.channels >> 2),
            ((self.channels & 3) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            (((len & 7) as u8) << 5) | 0x1f,
            0xfc,
        ]
    }
}

/// `n` bits of an AudioSpecificConfig.
fn read(bits: &mut BitReader<'_>, n: u32) -> Result<u32, TsError> {
    bits.bits(n).ok_or(TsError::Aac("truncated"))
}

/// An audio object type (5 bits, escaped to 6 more).
fn object_type(bits: &mut BitReader<'_>) -> Result<u32, TsError> {
    match read(bits, 5)? {
        31 => Ok(32 + read(bits, 6)?),
        t => Ok(t),
    }
}

struct Video {
    pid: u16,
    cc: u8,
    /// SPS and PPS of the decoder configuration, each with a start code.
    parameter_sets: Vec<u8>,
}

struct Audio {
    pid: u16,
    cc: u8,
    adts: Adts,
    /// ADTS frames waiting for their PES.
    pending: Vec<u8>,
    /// PTS (ms) of the first pending frame.
    pending_pts: Option<i64>,
    /// The next frame is a segment's first: it goes in a PES of its own.
    alone: bool,
}

/// Whether a track's configuration can be carried (H.264, or AAC that
/// ADTS can describe).
pub(crate) fn check(config: &TrackConfig) -> Result<(), TsError> {
    match config.codec {
        Codec::H264 => Ok(()),
        Codec::Aac => Adts::from_asc(&config.extradata).map(drop),
        other => Err(TsError::Codec(other)),
    }
}

/// One program's packetiser: a video and/or an audio track.
pub(crate) struct TsMuxer {
    video: Option<Video>,
    audio: Option<Audio>,
    pat_cc: u8,
    pmt_cc: u8,
    /// The PES being cut into packets.
    scratch: Vec<u8>,
}

impl TsMuxer {
    /// A muxer for these tracks (either may be missing, not both).
    pub(crate) fn new(
        video: Option<&TrackConfig>,
        audio: Option<&TrackConfig>,
    ) -> Result<TsMuxer, TsError> {
        let mut pid = FIRST_ES_PID;
        let video = match video {
            Some(c) if c.codec == Codec::H264 => {
                let mut parameter_sets = Vec::new();
                for nal in crate::media::h264::parameter_sets(&c.extradata) {
                    parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
                    parameter_sets.extend_from_slice(nal);
                }
                pid += 1;
                Some(Video {
                    pid: pid - 1,
                    cc: 0,
                    parameter_sets,
                })
            }
            Some(c) => return Err(TsError::Codec(c.codec)),
            None => None,
        };
        let audio = match audio {
            Some(c) if c.codec == Codec::Aac => Some(Audio {
                pid,
                cc: 0,
                adts: Adts::from_asc(&c.extradata)?,
                pending: Vec::with_capacity(AUDIO_PES_PAYLOAD + 1024),
                pending_pts: None,
                alone: true,
            }),
            Some(c) => return Err(TsError::Codec(c.codec)),
            None => None,
        };
        Ok(TsMuxer {
            video,
            audio,
            pat_cc: 0,
            pmt_cc: 0,
            scratch: Vec::new(),
        })
    }

    /// The PAT and PMT: what a segment starts with.
    pub(crate) fn tables(&mut self, out: &mut Vec<u8>) {
        // PAT: program 1 at PMT_PID.
        let mut pat = [0u8; 16];
        let n = section(
            &mut pat,
            0x00,
            1,
            &[0x00, 0x01, 0xe0 | (PMT_PID >> 8) as u8, PMT_PID as u8],
        );
        psi_packet(out, PAT_PID, &mut self.pat_cc, &pat[..n]);
        // PMT: the PCR on video if any, then each elementary stream.
        let pcr_pid = self.pcr_pid();
        let mut body = [0u8; 4 + 2 * 5];
        body[..4].copy_from_slice(&[0xe0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xf0, 0x00]);
        let mut len = 4;
        let streams = [
            self.video.as_ref().map(|v| (0x1b, v.pid)),
            self.audio.as_ref().map(|a| (0x0f, a.pid)),
        ];
        for (kind, pid) in streams.into_iter().flatten() {
            body[len..len + 5].copy_from_slice(&[
                kind,
                0xe0 | (pid >> 8) as u8,
                pid as u8,
                0xf0,
                0x00,
            ]);
            len += 5;
        }
        let mut pmt = [0u8; 8 + 14 + 4];
        let n = section(&mut pmt, 0x02, 1, &body[..len]);
        psi_packet(out, PMT_PID, &mut self.pmt_cc, &pmt[..n]);
    }

    fn pcr_pid(&self) -> u16 {
        match (&self.video, &self.audio) {
            (Some(v), _) => v.pid,
            (None, Some(a)) => a.pid,
            (None, None) => 0x1fff,
        }
    }

    /// Appends `f` (times in ms). Frames of a track the muxer does not
    /// carry are skipped.
    pub(crate) fn frame(&mut self, f: &EncodedFrame, out: &mut Vec<u8>) {
        match f.kind {
            TrackKind::Video => self.video_frame(f, out),
            TrackKind::Audio => self.audio_frame(f, out),
        }
    }

    fn video_frame(&mut self, f: &EncodedFrame, out: &mut Vec<u8>) {
        let Some(v) = self.video.as_mut() else {
            return;
        };
        let (pts, dts) = (ticks(f.pts), ticks(f.dts));
        let pes = &mut self.scratch;
        pes.clear();
        pes_header(pes, 0xe0, pts, (dts != pts).then_some(dts), None);
        // Annex B: AUD, the parameter sets on a keyframe that lacks them,
        // then every NAL unit (a truncated one ends the unit).
        let nals = || AvccNals(&f.data);
        if nals().next().is_none_or(|n| n[0] & 0x1f != 9) {
            pes.extend_from_slice(&AUD);
        }
        if f.keyframe && !nals().any(|n| n[0] & 0x1f == 7) {
            pes.extend_from_slice(&v.parameter_sets);
        }
        for nal in nals() {
            pes.extend_from_slice(&[0, 0, 0, 1]);
            pes.extend_from_slice(nal);
        }
        let pcr = Some(pcr_of(dts));
        packetise(out, v.pid, &mut v.cc, pes, pcr, f.keyframe);
    }

    fn audio_frame(&mut self, f: &EncodedFrame, out: &mut Vec<u8>) {
        let pcr_here = self.video.is_none();
        let Some(a) = self.audio.as_mut() else {
            return;
        };
        let size = 7 + f.data.len();
        if let Some(first) = a.pending_pts
            && (a.pending.len() + size > AUDIO_PES_PAYLOAD
                || f.pts.saturating_sub(first) >= AUDIO_PES_SPAN_MS)
        {
            flush_audio(a, &mut self.scratch, pcr_here, out);
        }
        a.pending.extend_from_slice(&a.adts.header(f.data.len()));
        a.pending.extend_from_slice(&f.data);
        a.pending_pts.get_or_insert(f.pts);
        if std::mem::take(&mut a.alone) {
            flush_audio(a, &mut self.scratch, pcr_here, out);
        }
    }

    /// Writes the audio held for its PES (a segment ends).
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) {
        let pcr_here = self.video.is_none();
        if let Some(a) = self.audio.as_mut() {
            flush_audio(a, &mut self.scratch, pcr_here, out);
            a.alone = true;
        }
    }
}

fn flush_audio(a: &mut Audio, pes: &mut Vec<u8>, pcr_here: bool, out: &mut Vec<u8>) {
    let Some(pts_ms) = a.pending_pts.take() else {
        return;
    };
    let pts = ticks(pts_ms);
    pes.clear();
    pes_header(pes, 0xc0, pts, None, Some(a.pending.len()));
    pes.extend_from_slice(&a.pending);
    a.pending.clear();
    packetise(
        out,
        a.pid,
        &mut a.cc,
        pes,
        pcr_here.then(|| pcr_of(pts)),
        pcr_here,
    );
}

/// Milliseconds → 90 kHz PTS/DTS (with the decoder delay), 33 bits.
fn ticks(ms: i64) -> i64 {
    (ms.wrapping_mul(90) + DELAY_90K).rem_euclid(1 << 33)
}

/// The PCR base (90 kHz) that goes with a DTS: the delay before it.
fn pcr_of(dts: i64) -> i64 {
    (dts - DELAY_90K).rem_euclid(1 << 33)
}

/// The NAL units of an AVCC access unit (4-byte lengths); empty units are
/// skipped, a truncated one ends it.
struct AvccNals<'a>(&'a [u8]);

impl<'a> Iterator for AvccNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let rest = self.0;
            let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
            let nal = rest.get(4..4usize.checked_add(len)?)?;
            self.0 = &rest[4 + len..];
            if !nal.is_empty() {
                return Some(nal);
            }
        }
    }
}

/// A PES header: `payload_len` for a bounded packet, `None` for video (0).
fn pes_header(
    pes: &mut Vec<u8>,
    stream_id: u8,
    pts: i64,
    dts: Option<i64>,
    payload_len: Option<usize>,
) {
    let header_data = if dts.is_some() { 10 } else { 5 };
    let length = payload_len.map_or(0, |n| {
        let n = 3 + header_data + n;
        if n > 0xffff { 0 } else { n as u16 }
    });
    pes.extend_from_slice(&[0, 0, 1, stream_id]);
    pes.extend_from_slice(&length.to_be_bytes());
    pes.push(0x84); // '10', data aligned
    pes.push(if dts.is_some() { 0xc0 } else { 0x80 });
    pes.push(header_data as u8);
    timestamp(pes, if dts.is_some() { 3 } else { 2 }, pts);
    if let Some(dts) = dts {
        timestamp(pes, 1, dts);
    }
}

fn timestamp(out: &mut Vec<u8>, prefix: u8, t: i64) {
    let t = t as u64;
    out.extend_from_slice(&[
        (prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
        (t >> 22) as u8,
        (((t >> 15) as u8) << 1) | 1,
        (t >> 7) as u8,
        ((t as u8) << 1) | 1,
    ]);
}

/// Cuts a PES into packets on `pid`: the first carries the PCR and the
/// random access flag if asked, the last is padded by stuffing.
fn packetise(
    out: &mut Vec<u8>,
    pid: u16,
    cc: &mut u8,
    pes: &[u8],
    pcr: Option<i64>,
    random_access: bool,
) {
    out.reserve(pes.len().div_ceil(170) * PACKET);
    let mut rest = pes;
    let mut first = true;
    while !rest.is_empty() {
        // The adaptation field this packet must carry (without stuffing).
        let mut af = [0u8; 8];
        let mut af_len = 0;
        if first && (pcr.is_some() || random_access) {
            af[1] = if random_access { 0x40 } else { 0 };
            af_len = 2;
            if let Some(base) = pcr {
                af[1] |= 0x10;
                let b = base as u64;
                af[2..8].copy_from_slice(&[
                    (b >> 25) as u8,
                    (b >> 17) as u8,
                    (b >> 9) as u8,
                    (b >> 1) as u8,
                    ((b as u8 & 1) << 7) | 0x7e,
                    0,
                ]);
                af_len = 8;
            }
        }
        let room = PACKET - 4 - af_len;
        let take = rest.len().min(room);
        let stuffing = room - take;
        let af_total = if af_len == 0 && stuffing > 0 {
            stuffing
        } else {
            af_len + stuffing
        };
        out.extend_from_slice(&[
            0x47,
            (if first { 0x40 } else { 0 }) | (pid >> 8) as u8,
            pid as u8,
            (if af_total > 0 { 0x30 } else { 0x10 }) | *cc,
        ]);
        *cc = (*cc + 1) & 0x0f;
        if af_total > 0 {
            out.push((af_total - 1) as u8);
            if af_total > 1 {
                out.push(if af_len > 0 { af[1] } else { 0 });
                if af_len > 2 {
                    out.extend_from_slice(&af[2..af_len]);
                }
                out.extend(std::iter::repeat_n(0xff, af_total - af_len.max(2)));
            }
        }
        out.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        first = false;
    }
}

/// A PSI section with `table_id`, `id` (stream or program) and `body`,
/// CRC included, into `buf`; returns its length.
fn section(buf: &mut [u8], table_id: u8, id: u16, body: &[u8]) -> usize {
    let length = 5 + body.len() + 4;
    buf[0] = table_id;
    buf[1] = 0xb0 | (length >> 8) as u8;
    buf[2] = length as u8;
    buf[3..5].copy_from_slice(&id.to_be_bytes());
    buf[5] = 0xc1; // version 0, current
    buf[6] = 0;
    buf[7] = 0;
    buf[8..8 + body.len()].copy_from_slice(body);
    let end = 8 + body.len();
    let crc = crc32(&buf[..end]);
    buf[end..end + 4].copy_from_slice(&crc.to_be_bytes());
    end + 4
}

/// One packet carrying a section (pointer field 0, the rest 0xff).
fn psi_packet(out: &mut Vec<u8>, pid: u16, cc: &mut u8, section: &[u8]) {
    out.extend_from_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | *cc, 0x00]);
    *cc = (*cc + 1) & 0x0f;
    out.extend_from_slice(section);
    out.extend(std::iter::repeat_n(0xff, PACKET - 5 - section.len()));
}

/// CRC-32/MPEG-2 (polynomial 0x04c11db7, not reflected, no final xor).
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = (i as u32) << 24;
            let mut k = 0;
            while k < 8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04c1_1db7
                } else {
                    c << 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

#[cfg(test)]
#[path = "ts_tests.rs"]
mod tests;
