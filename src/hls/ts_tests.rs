use std::collections::HashMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::media::TimeBase;

/// SPS and PPS of a real 640x360 libx264 stream, in a configuration record.
fn avcc_record() -> Bytes {
    let sps: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    let pps: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
    let mut annexb = vec![0, 0, 0, 1];
    annexb.extend_from_slice(sps);
    annexb.extend_from_slice(&[0, 0, 0, 1]);
    annexb.extend_from_slice(pps);
    crate::media::h264::avcc_record(&annexb).unwrap()
}

fn video_config() -> TrackConfig {
    TrackConfig {
        kind: TrackKind::Video,
        codec: Codec::H264,
        extradata: avcc_record(),
    }
}

fn audio_config() -> TrackConfig {
    TrackConfig {
        kind: TrackKind::Audio,
        codec: Codec::Aac,
        extradata: Bytes::from_static(&[0x12, 0x10]), // LC, 44.1 kHz, stereo
    }
}

fn frame(kind: TrackKind, ms: i64, cts: i64, keyframe: bool, data: Vec<u8>) -> EncodedFrame {
    EncodedFrame {
        kind,
        codec: if kind == TrackKind::Video {
            Codec::H264
        } else {
            Codec::Aac
        },
        pts: ms + cts,
        dts: ms,
        time_base: TimeBase::MILLIS,
        keyframe,
        data: Bytes::from(data),
    }
}

/// An AVCC access unit of NAL units of these types and sizes.
fn access_unit(nals: &[(u8, usize)], fill: u8) -> Vec<u8> {
    let mut out = Vec::new();
    for &(kind, len) in nals {
        out.extend_from_slice(&(len as u32 + 1).to_be_bytes());
        out.push(0x60 | kind);
        out.extend(std::iter::repeat_n(fill, len));
    }
    out
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Pes {
    pts: i64,
    dts: Option<i64>,
    payload: Vec<u8>,
    pcr: Option<i64>,
    random_access: bool,
}

#[derive(Debug, Default)]
struct Demuxed {
    /// PID → stream type, from the PMT.
    streams: Vec<(u8, u16)>,
    pcr_pid: Option<u16>,
    pes: HashMap<u16, Vec<Pes>>,
    last_cc: HashMap<u16, u8>,
    tables: usize,
}

fn parse_pes(mut p: Pes) -> Pes {
    let raw = std::mem::take(&mut p.payload);
    assert_eq!(&raw[..3], &[0, 0, 1], "PES start code");
    let declared = usize::from(u16::from_be_bytes([raw[4], raw[5]]));
    assert_eq!(raw[6] & 0xc0, 0x80);
    let flags = raw[7];
    let header_len = usize::from(raw[8]);
    let ts = |b: &[u8]| {
        assert_eq!(b[0] & 1, 1);
        assert_eq!(b[2] & 1, 1);
        assert_eq!(b[4] & 1, 1);
        (i64::from(b[0] >> 1 & 7) << 30)
            | (i64::from(b[1]) << 22)
            | (i64::from(b[2] >> 1) << 15)
            | (i64::from(b[3]) << 7)
            | i64::from(b[4] >> 1)
    };
    p.pts = ts(&raw[9..14]);
    if flags & 0x40 != 0 {
        assert_eq!(header_len, 10);
        p.dts = Some(ts(&raw[14..19]));
    } else {
        assert_eq!(header_len, 5);
    }
    if declared != 0 {
        assert_eq!(declared, raw.len() - 6, "PES length");
    }
    p.payload = raw[9 + header_len..].to_vec();
    p
}

/// A strict reader of what the muxer wrote: every packet's framing, the
/// continuity counters, the tables' CRCs, and the PES it carries.
fn demux(ts: &[u8], d: &mut Demuxed) {
    assert_eq!(ts.len() % PACKET, 0, "whole packets");
    let mut open: HashMap<u16, Pes> = HashMap::new();
    for p in ts.chunks(PACKET) {
        assert_eq!(p[0], 0x47);
        let start = p[1] & 0x40 != 0;
        let pid = u16::from(p[1] & 0x1f) << 8 | u16::from(p[2]);
        let control = p[3] >> 4 & 3;
        let cc = p[3] & 0x0f;
        if let Some(last) = d.last_cc.insert(pid, cc) {
            assert_eq!(cc, (last + 1) & 0x0f, "continuity on {pid:#x}");
        }
        assert!(control == 1 || control == 3, "payload in every packet");
        let mut at = 4;
        let mut pcr = None;
        let mut random_access = false;
        if control == 3 {
            let len = usize::from(p[4]);
            assert!(len <= 183);
            if len > 0 {
                let flags = p[5];
                random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 {
                    let b = &p[6..12];
                    pcr = Some(
                        (i64::from(b[0]) << 25)
                            | (i64::from(b[1]) << 17)
                            | (i64::from(b[2]) << 9)
                            | (i64::from(b[3]) << 1)
                            | i64::from(b[4] >> 7),
                    );
                    assert!(p[6 + 6..5 + len].iter().all(|&b| b == 0xff), "stuffing");
                } else {
                    assert!(p[6..5 + len].iter().all(|&b| b == 0xff), "stuffing");
                }
            }
            at = 5 + len;
        }
        let payload = &p[at..];
        assert!(!payload.is_empty());
        if pid == 0 || pid == PMT_PID {
            assert!(start);
            assert_eq!(payload[0], 0, "pointer field");
            let s = &payload[1..];
            let len = usize::from(u16::from_be_bytes([s[1] & 0x0f, s[2]]));
            let section = &s[..3 + len];
            assert_eq!(crc32(section), 0, "CRC of {pid:#x}");
            assert!(s[3 + len..].iter().all(|&b| b == 0xff));
            if pid == PMT_PID {
                d.tables += 1;
                d.pcr_pid = Some(u16::from(section[8] & 0x1f) << 8 | u16::from(section[9]));
                d.streams = section[12..section.len() - 4]
                    .chunks(5)
                    .map(|e| (e[0], u16::from(e[1] & 0x1f) << 8 | u16::from(e[2])))
                    .collect();
            } else {
                assert_eq!(&section[8..12], &[0, 1, 0xf0, 0x00]);
            }
            continue;
        }
        if start {
            if let Some(done) = open.remove(&pid) {
                d.pes.entry(pid).or_default().push(parse_pes(done));
            }
            open.insert(
                pid,
                Pes {
                    pcr,
                    random_access,
                    ..Pes::default()
                },
            );
        } else {
            assert!(
                pcr.is_none() && !random_access,
                "flags on a first packet only"
            );
        }
        open.get_mut(&pid)
            .expect("a PES starts before it continues")
            .payload
            .extend_from_slice(payload);
    }
    for (pid, done) in open {
        d.pes.entry(pid).or_default().push(parse_pes(done));
    }
}

#[test]
fn crc_is_mpeg2s() {
    assert_eq!(crc32(b"123456789"), 0x0376_e6e7);
}

#[test]
fn adts_headers_from_audio_specific_configs() {
    let lc = Adts::from_asc(&[0x12, 0x10]).unwrap();
    assert_eq!(lc.header(100), [0xff, 0xf1, 0x50, 0x80, 0x0d, 0x7f, 0xfc]);
    // 48 kHz mono.
    let mono = Adts::from_asc(&[0x11, 0x88]).unwrap();
    assert_eq!((mono.profile, mono.freq_index, mono.channels), (1, 3, 1));
    // HE-AAC signalled explicitly (object 5, core 24 kHz, SBR to 48 kHz, core LC): the core goes in ADTS.
    let he = Adts::from_asc(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
    assert_eq!((he.profile, he.freq_index, he.channels), (1, 6, 2));
    assert_eq!(Adts::from_asc(&[0x12]), Err(TsError::Aac("truncated")));
    assert!(
        Adts::from_asc(&[0x17, 0x80, 0, 0, 0]).is_err(),
        "explicit rate"
    );
    assert!(Adts::from_asc(&[0x12, 0x00]).is_err(), "channels in a PCE");
    assert!(
        Adts::from_asc(&[0xf8, 0x40, 0x00]).is_err(),
        "escaped object type"
    );
    let opus = TrackConfig {
        kind: TrackKind::Audio,
        codec: Codec::Opus,
        extradata: Bytes::new(),
    };
    assert_eq!(check(&opus), Err(TsError::Codec(Codec::Opus)));
    assert!(TsMuxer::new(None, Some(&opus)).is_err());
}

#[test]
fn a_segment_carries_tables_then_video_with_its_parameter_sets_and_grouped_audio() {
    let mut mux = TsMuxer::new(Some(&video_config()), Some(&audio_config())).unwrap();
    let mut out = Vec::new();
    mux.tables(&mut out);
    let idr = access_unit(&[(5, 3000)], 0x11);
    mux.frame(&frame(TrackKind::Video, 0, 66, true, idr.clone()), &mut out);
    for i in 0..20 {
        mux.frame(
            &frame(TrackKind::Audio, i * 23, 0, true, vec![i as u8; 300]),
            &mut out,
        );
    }
    let p = access_unit(&[(9, 1), (1, 500)], 0x22); // with its own AUD
    mux.frame(&frame(TrackKind::Video, 33, 0, false, p.clone()), &mut out);
    mux.flush(&mut out);
    let mut d = Demuxed::default();
    demux(&out, &mut d);
    assert_eq!(d.tables, 1);
    assert_eq!(d.streams, [(0x1b, 0x100), (0x0f, 0x101)]);
    assert_eq!(d.pcr_pid, Some(0x100));

    let video = &d.pes[&0x100];
    assert_eq!(video.len(), 2);
    assert_eq!(video[0].pts, 66 * 90 + DELAY_90K);
    assert_eq!(video[0].dts, Some(DELAY_90K));
    assert_eq!(video[0].pcr, Some(0));
    assert!(video[0].random_access);
    let mut want = AUD.to_vec();
    for nal in crate::media::h264::parameter_sets(&avcc_record()) {
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(nal);
    }
    want.extend_from_slice(&crate::media::h264::avcc_to_annexb(&idr, &[]));
    assert_eq!(video[1 - 1].payload, want);
    assert_eq!(video[1].pts, 33 * 90 + DELAY_90K);
    assert_eq!(video[1].dts, None, "DTS only where it differs");
    assert_eq!(video[1].pcr, Some(33 * 90));
    assert!(!video[1].random_access);
    assert_eq!(
        video[1].payload[..],
        crate::media::h264::avcc_to_annexb(&p, &[])[..]
    );

    // 20 frames of 307 bytes: the segment's first alone, then 9 to a PES
    // (2,930 bytes at most), the rest at the flush.
    let audio = &d.pes[&0x101];
    assert_eq!(
        audio
            .iter()
            .map(|p| p.payload.len() / 307)
            .collect::<Vec<_>>(),
        [1, 9, 9, 1]
    );
    assert_eq!(audio[1].pts, 23 * 90 + DELAY_90K);
    assert_eq!(audio[2].pts, 10 * 23 * 90 + DELAY_90K);
    assert!(audio.iter().all(|p| p.dts.is_none() && p.pcr.is_none()));
    let all: Vec<u8> = audio.iter().flat_map(|p| p.payload.clone()).collect();
    for (i, adts) in all.chunks(307).enumerate() {
        assert_eq!(
            &adts[..7],
            &Adts::from_asc(&[0x12, 0x10]).unwrap().header(300)
        );
        assert!(adts[7..].iter().all(|&b| b == i as u8));
    }
}

#[test]
fn audio_pes_span_at_most_350_ms_and_audio_only_carries_the_pcr() {
    let mut mux = TsMuxer::new(None, Some(&audio_config())).unwrap();
    let mut out = Vec::new();
    mux.tables(&mut out);
    for i in 0..10 {
        mux.frame(
            &frame(TrackKind::Audio, i * 100, 0, true, vec![1; 20]),
            &mut out,
        );
    }
    // Video frames of a track it does not carry are skipped.
    mux.frame(
        &frame(TrackKind::Video, 0, 0, true, access_unit(&[(5, 10)], 0)),
        &mut out,
    );
    mux.flush(&mut out);
    let mut d = Demuxed::default();
    demux(&out, &mut d);
    assert_eq!(d.streams, [(0x0f, 0x100)]);
    assert_eq!(d.pcr_pid, Some(0x100));
    let audio = &d.pes[&0x100];
    assert_eq!(
        audio
            .iter()
            .map(|p| p.payload.len() / 27)
            .collect::<Vec<_>>(),
        [1, 4, 4, 1]
    );
    assert_eq!(audio[3].pcr, Some(900 * 90));
    assert!(audio.iter().all(|p| p.random_access));
}

#[test]
fn timestamps_wrap_at_33_bits_and_never_go_negative() {
    assert_eq!(ticks(-1000), DELAY_90K - 90_000);
    assert_eq!(ticks(-2000), (1 << 33) - 180_000 + DELAY_90K);
    assert_eq!(ticks(0), DELAY_90K);
    assert_eq!(pcr_of(ticks(-1000)), (1 << 33) - 90_000);
    assert_eq!(
        ticks((1 << 33) / 90 + 1),
        (90 + DELAY_90K - (1 << 33) % 90) % (1 << 33)
    );
}

#[test]
fn truncated_and_empty_nal_units_end_or_vanish() {
    let mut au = access_unit(&[(1, 10)], 7);
    au.extend_from_slice(&[0, 0, 0, 0]); // empty: skipped
    au.extend_from_slice(&access_unit(&[(1, 3)], 8));
    au.extend_from_slice(&[0, 0, 1, 0, 0x41]); // claims 256 bytes: ends it
    let nals: Vec<_> = AvccNals(&au).collect();
    assert_eq!(nals.len(), 2);
    assert_eq!(nals[1], &[0x61, 8, 8, 8]);
    assert_eq!(AvccNals(&[0xff, 0xff, 0xff, 0xff, 1]).count(), 0);
}

proptest! {
    /// Whatever the frames, the output is whole packets with continuous
    /// counters over several segments, and every frame comes back whole,
    /// in order, at its time.
    #[test]
    fn frames_come_back_whole_from_the_packets(
        frames in proptest::collection::vec(
            (any::<bool>(), 0i64..40, 0i64..100, any::<bool>(), 0usize..9000),
            1..60,
        ),
        cut_every in 1usize..20,
    ) {
        let mut mux = TsMuxer::new(Some(&video_config()), Some(&audio_config())).unwrap();
        let mut d = Demuxed::default();
        let mut sent_video = Vec::new();
        let mut sent_audio = Vec::new();
        let mut ms = 0;
        let mut segment = Vec::new();
        mux.tables(&mut segment);
        for (i, (is_video, step, cts, key, len)) in frames.iter().copied().enumerate() {
            ms += step;
            if is_video {
                let au = access_unit(&[(if key { 5 } else { 1 }, len)], i as u8);
                sent_video.push((ms, cts, key, au.clone()));
                mux.frame(&frame(TrackKind::Video, ms, cts, key, au), &mut segment);
            } else {
                let len = len.min(2000);
                sent_audio.push((ms, vec![i as u8; len]));
                mux.frame(&frame(TrackKind::Audio, ms, 0, true, vec![i as u8; len]), &mut segment);
            }
            if (i + 1) % cut_every == 0 {
                mux.flush(&mut segment);
                demux(&segment, &mut d);
                segment.clear();
                mux.tables(&mut segment);
            }
        }
        mux.flush(&mut segment);
        demux(&segment, &mut d);

        let record = avcc_record();
        let video = d.pes.get(&0x100).cloned().unwrap_or_default();
        prop_assert_eq!(video.len(), sent_video.len());
        for (pes, (ms, cts, key, au)) in video.iter().zip(&sent_video) {
            prop_assert_eq!(pes.dts.unwrap_or(pes.pts), ms * 90 + DELAY_90K);
            prop_assert_eq!(pes.pts, (ms + cts) * 90 + DELAY_90K);
            prop_assert_eq!(pes.pcr, Some(ms * 90));
            prop_assert_eq!(pes.random_access, *key);
            let sets = if *key { crate::media::h264::parameter_sets(&record) } else { Vec::new() };
            let mut want = AUD.to_vec();
            want.extend_from_slice(&crate::media::h264::avcc_to_annexb(au, &sets));
            prop_assert_eq!(&pes.payload, &want);
        }
        let audio = d.pes.get(&0x101).cloned().unwrap_or_default();
        let mut got = Vec::new();
        for pes in &audio {
            prop_assert!(pes.payload.len() <= AUDIO_PES_PAYLOAD);
            let mut rest = &pes.payload[..];
            let mut first = true;
            while !rest.is_empty() {
                let len = usize::from(rest[3] & 3) << 11 | usize::from(rest[4]) << 3 | usize::from(rest[5] >> 5);
                got.push((first.then_some(pes.pts), rest[7..len].to_vec()));
                first = false;
                rest = &rest[len..];
            }
        }
        prop_assert_eq!(got.len(), sent_audio.len());
        for ((pts, data), (ms, sent)) in got.iter().zip(&sent_audio) {
            prop_assert_eq!(data, sent);
            if let Some(pts) = pts {
                prop_assert_eq!(*pts, ms * 90 + DELAY_90K);
            }
        }
    }
}
