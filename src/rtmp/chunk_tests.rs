use super::*;

use bytes::Bytes;
use proptest::prelude::*;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;

fn payload(type_id: u8, stream_id: u32, ts: u32, data: Vec<u8>) -> MessagePayload {
    MessagePayload {
        timestamp: RtmpTimestamp::new(ts),
        type_id,
        message_stream_id: stream_id,
        data: Bytes::from(data),
    }
}

fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
    let mut out = Vec::new();
    reader.push(bytes, &mut out)?;
    Ok(out)
}

/// A chunk header of type 0 on `csid` (< 64).
fn header0(csid: u8, ts: u32, len: u32, type_id: u8, stream_id: u32) -> Vec<u8> {
    let mut b = vec![csid];
    b.extend_from_slice(&ts.min(EXTENDED).to_be_bytes()[1..]);
    b.extend_from_slice(&len.to_be_bytes()[1..]);
    b.push(type_id);
    b.extend_from_slice(&stream_id.to_le_bytes());
    if ts >= EXTENDED {
        b.extend_from_slice(&ts.to_be_bytes());
    }
    b
}

/// `connect` with AMF0 objects nested `depth` deep.
fn deep_connect(depth: usize) -> Vec<u8> {
    let mut b = vec![0x02, 0, 7];
    b.extend_from_slice(b"connect");
    b.push(0x00);
    b.extend_from_slice(&1f64.to_be_bytes());
    for _ in 0..depth {
        b.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    b.push(0x05);
    for _ in 0..depth {
        b.extend_from_slice(&[0, 0, 0x09]);
    }
    b
}

#[test]
fn messages_split_into_chunks_are_reassembled_with_their_timestamps() {
    let mut ser = ChunkSerializer::new();
    let mut wire = ser
        .set_max_chunk_size(100, RtmpTimestamp::new(0))
        .unwrap()
        .bytes;
    let sent = vec![
        payload(9, 1, 0, vec![0x17; 250]),
        payload(8, 1, 21, vec![0xaf; 30]),
        payload(9, 1, 33, vec![0x27; 99]),
        payload(9, 1, 66, vec![0x27; 100]),
        payload(9, 1, 100, vec![0x27; 201]),
        payload(8, 1, 0x0100_0000, vec![0xaf; 130]),
        payload(9, 1, 0x0100_0021, vec![0x27; 1]),
    ];
    for p in &sent {
        wire.extend(ser.serialize(p, false, false).unwrap().bytes);
    }
    // Byte by byte: every header and body split at every place.
    let mut reader = ChunkReader::new(ChunkLimits::default());
    let mut got = Vec::new();
    for b in &wire {
        reader.push(std::slice::from_ref(b), &mut got).unwrap();
    }
    assert_eq!(got.len(), sent.len());
    for (g, s) in got.iter().zip(&sent) {
        assert_eq!(
            (g.type_id, g.stream_id, g.timestamp, &g.payload[..]),
            (
                s.type_id,
                s.message_stream_id,
                s.timestamp.value,
                &s.data[..]
            )
        );
    }
}

#[test]
fn a_declared_length_over_the_limit_is_refused_at_the_header() {
    let mut reader = ChunkReader::new(ChunkLimits::default());
    // 0xFFFFFF bytes of video declared, nothing of the body sent.
    let err = read_all(&mut reader, &header0(4, 0, 0xff_ffff, 9, 1)).unwrap_err();
    assert_eq!(
        err,
        ChunkError::TooLarge {
            type_id: 9,
            declared: 0xff_ffff,
            limit: 4 << 20
        }
    );
    assert!(err.to_string().contains("message larger than"));
    // Commands are held to a smaller limit: a 4 MiB `connect` is refused.
    let mut reader = ChunkReader::new(ChunkLimits::default());
    let err = read_all(&mut reader, &header0(3, 0, 4 << 20, 20, 0)).unwrap_err();
    assert!(matches!(err, ChunkError::TooLarge { type_id: 20, .. }));
}

#[test]
fn deep_amf_is_refused_and_a_real_connect_passes() {
    let limits = ChunkLimits::default();
    let deep = deep_connect(100_000);
    let mut wire = header0(3, 0, deep.len() as u32, 20, 0);
    wire.extend_from_slice(&deep);
    let big = ChunkLimits {
        max_command_bytes: 1 << 20,
        max_buffered_bytes: 1 << 20,
        ..ChunkLimits::default()
    };
    let mut reader = ChunkReader::new(big);
    // A chunk size large enough that the body is one chunk.
    let mut all = header0(2, 0, 4, 1, 0);
    all.extend_from_slice(&(1u32 << 20).to_be_bytes());
    all.extend_from_slice(&wire);
    assert_eq!(
        read_all(&mut reader, &all),
        Err(ChunkError::Amf(AmfError::TooDeep(limits.amf.max_depth)))
    );

    let ok = deep_connect(3);
    let mut wire = header0(3, 0, ok.len() as u32, 20, 0);
    wire.extend_from_slice(&ok);
    let got = read_all(&mut ChunkReader::new(limits), &wire).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, ok);
}

#[test]
fn every_message_type_rml_rtmp_decodes_as_amf0_is_checked() {
    let deep = deep_connect(5_000);
    let one_chunk = |type_id: u8, body: &[u8]| {
        let mut all = header0(2, 0, 4, 1, 0);
        all.extend_from_slice(&(1u32 << 20).to_be_bytes());
        all.extend(header0(3, 0, body.len() as u32, type_id, 0));
        all.extend_from_slice(body);
        all
    };
    let mut amf3_command = vec![0u8];
    amf3_command.extend_from_slice(&deep);
    for (type_id, body) in [
        (20, &deep),
        (18, &deep),
        (15, &deep),
        (17, &amf3_command),
        (17, &deep),
    ] {
        let got = read_all(
            &mut ChunkReader::new(ChunkLimits::default()),
            &one_chunk(type_id, body),
        );
        assert_eq!(
            got,
            Err(ChunkError::Amf(AmfError::TooDeep(32))),
            "type {type_id}"
        );
    }
    // Shapes rml_rtmp's session would panic on are refused.
    let name_only = [0x02, 0, 7, b'c', b'o', b'n', b'n', b'e', b'c', b't'];
    for type_id in [20, 17] {
        assert!(matches!(
            read_all(
                &mut ChunkReader::new(ChunkLimits::default()),
                &one_chunk(type_id, &name_only)
            ),
            Err(ChunkError::Shape(_))
        ));
    }
    let set_data_frame = b"\x02\x00\x0d@setDataFrame";
    // Found by the rtmp_ingest fuzz target: `onMetaData` without its object
    // panicked rml_rtmp's session while publishing.
    let without_object = b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData";
    for body in [&set_data_frame[..], &without_object[..]] {
        for type_id in [18, 15] {
            assert!(matches!(
                read_all(
                    &mut ChunkReader::new(ChunkLimits::default()),
                    &one_chunk(type_id, body)
                ),
                Err(ChunkError::Shape(_))
            ));
        }
    }
    let mut whole = without_object.to_vec();
    whole.extend_from_slice(b"\x03\x00\x00\x09");
    assert!(
        read_all(
            &mut ChunkReader::new(ChunkLimits::default()),
            &one_chunk(18, &whole)
        )
        .is_ok()
    );
    // Audio is held to its own, smaller limit.
    assert!(matches!(
        read_all(
            &mut ChunkReader::new(ChunkLimits::default()),
            &header0(4, 0, 1 << 20, 8, 1)
        ),
        Err(ChunkError::TooLarge {
            type_id: 8,
            limit: 65536,
            ..
        })
    ));
}

#[test]
fn bytes_held_in_unfinished_messages_are_bounded_across_streams() {
    let limits = ChunkLimits {
        max_buffered_bytes: 1000,
        ..ChunkLimits::default()
    };
    let mut reader = ChunkReader::new(limits);
    let mut wire = Vec::new();
    // Seven chunk streams each start a 1000-byte message with one 128-byte chunk.
    for csid in 3..10u8 {
        wire.extend(header0(csid, 0, 1000, 9, 1));
        wire.extend_from_slice(&[0u8; 128]);
    }
    assert_eq!(read_all(&mut reader, &wire), Ok(vec![]));
    // The eighth would hold 1024 bytes.
    let err = read_all(&mut reader, &header0(10, 0, 1000, 9, 1)).unwrap_err();
    assert_eq!(err, ChunkError::Buffered(1000));
}

#[test]
fn interleaved_chunk_streams_and_abort() {
    let mut reader = ChunkReader::new(ChunkLimits::default());
    let mut wire = header0(4, 10, 200, 8, 1);
    wire.extend_from_slice(&[1u8; 128]);
    wire.extend(header0(6, 20, 130, 9, 1));
    wire.extend_from_slice(&[2u8; 128]);
    wire.push(0xc4); // type 3 on csid 4: the rest of the audio
    wire.extend_from_slice(&[1u8; 72]);
    wire.push(0xc6);
    wire.extend_from_slice(&[2u8; 2]);
    let got = read_all(&mut reader, &wire).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].type_id, got[0].timestamp), (8, 10));
    assert_eq!(got[0].payload, vec![1u8; 200]);
    assert_eq!((got[1].type_id, got[1].timestamp), (9, 20));
    assert_eq!(got[1].payload, vec![2u8; 130]);

    // An abort of csid 4 drops its half message; the next one starts clean.
    let mut wire = header0(4, 30, 200, 8, 1);
    wire.extend_from_slice(&[3u8; 128]);
    wire.extend(header0(2, 0, 4, 2, 0));
    wire.extend_from_slice(&4u32.to_be_bytes());
    wire.extend(header0(4, 40, 3, 8, 1));
    wire.extend_from_slice(&[4u8; 3]);
    let got = read_all(&mut reader, &wire).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].timestamp, &got[0].payload[..]), (40, &[4u8; 3][..]));
    assert_eq!(reader.buffered, 0);
}

#[test]
fn media_messages_are_slices_of_shared_blocks_and_stay_intact() {
    // 100 video frames of 1000 bytes, audio between them: the video is
    // read into 64 KiB blocks (65 frames each), the audio into its own.
    let mut ser = ChunkSerializer::new();
    let mut wire = ser
        .set_max_chunk_size(4096, RtmpTimestamp::new(0))
        .unwrap()
        .bytes;
    for i in 0..100u32 {
        let video = (0..1000).map(|b| (b as u32 * 7 + i) as u8).collect();
        wire.extend(
            ser.serialize(&payload(9, 1, i * 33, video), false, false)
                .unwrap()
                .bytes,
        );
        let audio = vec![i as u8; 300];
        wire.extend(
            ser.serialize(&payload(8, 1, i * 33, audio), false, false)
                .unwrap()
                .bytes,
        );
    }
    let mut reader = ChunkReader::new(ChunkLimits::default());
    // Read in pieces, as a socket gives them.
    let mut got = Vec::new();
    for piece in wire.chunks(1500) {
        reader.push(piece, &mut got).unwrap();
    }
    let video: Vec<&Message> = got.iter().filter(|m| m.type_id == 9).collect();
    let audio: Vec<&Message> = got.iter().filter(|m| m.type_id == 8).collect();
    assert_eq!((video.len(), audio.len()), (100, 100));
    // Every frame holds its own bytes once all were read (none overwrote another).
    for (i, m) in video.iter().enumerate() {
        let want: Vec<u8> = (0..1000).map(|b| (b * 7 + i) as u8).collect();
        assert_eq!(&m.payload[..], &want[..], "frame {i}");
    }
    for (i, m) in audio.iter().enumerate() {
        assert_eq!(&m.payload[..], &[i as u8; 300][..], "audio frame {i}");
    }
    // Consecutive frames of a track sit side by side in a block: a new
    // allocation only when a block is full.
    let blocks = |ms: &[&Message]| {
        1 + ms
            .windows(2)
            .filter(|w| w[0].payload.as_ptr_range().end != w[1].payload.as_ptr())
            .count()
    };
    assert_eq!(blocks(&video), 2, "100 KB of video in 64 KiB blocks");
    assert_eq!(blocks(&audio), 4, "30 KB of audio in 8 KiB blocks");
    assert_eq!(reader.buffered, 0);
}

#[test]
fn protocol_violations_are_errors_not_panics() {
    let fresh = || ChunkReader::new(ChunkLimits::default());
    // A type-1 header on a stream never opened.
    assert_eq!(
        read_all(&mut fresh(), &[0x44, 0, 0, 0, 0, 0, 1, 9]),
        Err(ChunkError::NoPreviousHeader(4))
    );
    // A new message while the last one on the stream is unfinished.
    let mut wire = header0(4, 0, 200, 9, 1);
    wire.extend_from_slice(&[0u8; 128]);
    wire.extend(header0(4, 0, 10, 9, 1));
    assert_eq!(
        read_all(&mut fresh(), &wire),
        Err(ChunkError::Interleaved(4))
    );
    // Chunk size zero would never advance.
    let mut wire = header0(2, 0, 4, 1, 0);
    wire.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(read_all(&mut fresh(), &wire), Err(ChunkError::ChunkSize(0)));
    // A truncated Set Chunk Size.
    let mut wire = header0(2, 0, 2, 1, 0);
    wire.extend_from_slice(&[0, 1]);
    assert_eq!(read_all(&mut fresh(), &wire), Err(ChunkError::Control(1)));
    // Control messages are small.
    assert!(matches!(
        read_all(&mut fresh(), &header0(2, 0, 1000, 5, 0)),
        Err(ChunkError::TooLarge { type_id: 5, .. })
    ));
    // Too many chunk streams.
    let limits = ChunkLimits {
        max_chunk_streams: 2,
        ..ChunkLimits::default()
    };
    let mut wire = Vec::new();
    for csid in 3..6u8 {
        wire.extend(header0(csid, 0, 0, 9, 1));
    }
    assert_eq!(
        read_all(&mut ChunkReader::new(limits), &wire),
        Err(ChunkError::TooManyStreams(2))
    );
}

#[test]
fn framed_messages_read_back_identically_in_rml_rtmp() {
    let mut de = ChunkDeserializer::new();
    assert!(de.get_next_message(&SESSION_PREAMBLE).unwrap().is_some());
    de.set_max_chunk_size(0x7fff_ffff).unwrap();
    for (ts, len) in [
        (0u32, 0usize),
        (5, 300),
        (0xff_fffe, 70_000),
        (0xff_ffff, 1),
        (u32::MAX, 9),
    ] {
        let msg = Message {
            type_id: 9,
            stream_id: 1,
            timestamp: ts,
            payload: (0..len).map(|i| i as u8).collect::<Vec<u8>>().into(),
        };
        let mut wire = Vec::new();
        frame_for_session(&msg, &mut wire);
        let back = de.get_next_message(&wire).unwrap().expect("one message");
        assert_eq!(back.timestamp.value, ts);
        assert_eq!((back.type_id, back.message_stream_id), (9, 1));
        assert_eq!(&back.data[..], &msg.payload[..]);
        assert!(de.get_next_message(&[]).unwrap().is_none());
    }
}

proptest! {
    /// What rml_rtmp's own serializer writes, at any chunk size and split at
    /// any places, reads back here as the same messages; framed again, it
    /// reads back the same in rml_rtmp's deserializer.
    #[test]
    fn serialized_streams_round_trip(
        chunk_size in 1u32..600,
        msgs in proptest::collection::vec((prop_oneof![Just(8u8), Just(9u8)], 0u32..2000, 1usize..1500), 1..12),
        cuts in proptest::collection::vec(1usize..700, 0..40),
    ) {
        let mut ser = ChunkSerializer::new();
        let mut wire = ser.set_max_chunk_size(chunk_size, RtmpTimestamp::new(0)).unwrap().bytes;
        let mut ts = 0u32;
        let mut sent = Vec::new();
        for (i, (type_id, step, len)) in msgs.into_iter().enumerate() {
            ts += step;
            let p = payload(type_id, 1, ts, vec![i as u8; len]);
            wire.extend(ser.serialize(&p, false, false).unwrap().bytes);
            sent.push(p);
        }
        let mut reader = ChunkReader::new(ChunkLimits::default());
        let mut got = Vec::new();
        let mut rest = &wire[..];
        for c in cuts {
            let n = c.min(rest.len());
            reader.push(&rest[..n], &mut got).unwrap();
            rest = &rest[n..];
        }
        reader.push(rest, &mut got).unwrap();
        prop_assert_eq!(got.len(), sent.len());
        let mut de = ChunkDeserializer::new();
        de.get_next_message(&SESSION_PREAMBLE).unwrap();
        de.set_max_chunk_size(0x7fff_ffff).unwrap();
        for (g, s) in got.iter().zip(&sent) {
            prop_assert_eq!(g.timestamp, s.timestamp.value);
            prop_assert_eq!(g.type_id, s.type_id);
            prop_assert_eq!(&g.payload[..], &s.data[..]);
            let mut framed = Vec::new();
            frame_for_session(g, &mut framed);
            let back = de.get_next_message(&framed).unwrap().unwrap();
            prop_assert_eq!(&back, s);
        }
    }

    /// Any bytes at all: an error or messages, never a panic or a hang.
    #[test]
    fn any_bytes_end_cleanly(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let limits = ChunkLimits { max_buffered_bytes: 10_000, ..ChunkLimits::default() };
        let mut reader = ChunkReader::new(limits);
        let mut out = Vec::new();
        let _ = reader.push(&data, &mut out);
        prop_assert!(reader.buffered <= 10_000);
    }
}

/// A publisher's opening: its Window Acknowledgement Size (1000 bytes),
/// `publish` on message stream 1, 300 bytes of video on stream 1 (in
/// 128-byte chunks), 2 bytes of audio on stream 2.
fn publisher_opening(video: &[u8]) -> Vec<u8> {
    let mut wire = header0(2, 0, 4, WINDOW_ACK_SIZE, 0);
    wire.extend_from_slice(&1000u32.to_be_bytes());
    // publish(0, null, "k", "live")
    let mut publish = vec![0x02, 0, 7];
    publish.extend_from_slice(b"publish");
    publish.push(0x00);
    publish.extend_from_slice(&0f64.to_be_bytes());
    publish.push(0x05);
    publish.extend_from_slice(&[0x02, 0, 1, b'k', 0x02, 0, 4]);
    publish.extend_from_slice(b"live");
    wire.extend(header0(3, 0, publish.len() as u32, AMF0_COMMAND, 1));
    wire.extend_from_slice(&publish);
    wire.extend(header0(4, 40, video.len() as u32, VIDEO, 1));
    for (i, piece) in video.chunks(128).enumerate() {
        if i > 0 {
            wire.push(0xc4);
        }
        wire.extend_from_slice(piece);
    }
    wire.extend(header0(5, 41, 2, AUDIO, 2));
    wire.extend_from_slice(&[0xaf, 1]);
    wire
}

#[test]
fn a_publishers_media_skips_the_session_and_its_bytes_are_acknowledged_at_its_window() {
    let video = vec![0x17u8; 300];
    let wire = publisher_opening(&video);
    let mut feed = SessionFeed::for_publisher(ChunkLimits::default());
    feed.push(&wire).unwrap();
    // The window size is the feed's: the session gets the command first.
    let Some(Next::Session(framed)) = feed.next() else {
        panic!("the publish command goes to the session")
    };
    assert_eq!(framed[7], AMF0_COMMAND);
    feed.publishing_on_last_stream();
    match feed.next() {
        Some(Next::Media(m)) => {
            assert_eq!((m.type_id, m.stream_id, m.timestamp), (VIDEO, 1, 40));
            assert_eq!(m.payload, video);
        }
        other => panic!("{other:?}"),
    }
    // Another stream's media is the session's to judge.
    assert!(matches!(feed.next(), Some(Next::Session(f)) if f[7] == AUDIO));
    assert!(feed.next().is_none());

    // Fewer bytes than the window: no acknowledgement yet.
    assert!(wire.len() < 1000);
    assert_eq!(feed.ack_due(), None);
    // Past the window: one, whose sequence number is every byte read,
    // and none again until another window has come.
    let mut more = header0(6, 50, 900, AUDIO, 1);
    for (i, piece) in [0xafu8; 900].chunks(128).enumerate() {
        if i > 0 {
            more.push(0xc6);
        }
        more.extend_from_slice(piece);
    }
    feed.push(&more).unwrap();
    let total = (wire.len() + more.len()) as u32;
    assert!(total >= 1000);
    let ack = feed.ack_due().expect("an acknowledgement");
    assert_eq!(u32::from_be_bytes(ack[12..].try_into().unwrap()), total);
    assert_eq!(feed.ack_due(), None);
    // rml_rtmp reads it as an Acknowledgement of that many bytes.
    let mut d = ChunkDeserializer::new();
    let msg = d.get_next_message(&ack).unwrap().expect("a message");
    assert_eq!((msg.type_id, msg.message_stream_id), (ACKNOWLEDGEMENT, 0));
    assert_eq!(&msg.data[..], &total.to_be_bytes());

    // A feed for another session (the push side) hands everything over.
    let mut plain = SessionFeed::new(ChunkLimits::default());
    plain.push(&wire).unwrap();
    plain.publishing_on_last_stream();
    let mut types = Vec::new();
    while let Some(Next::Session(f)) = plain.next() {
        types.push(f[7]);
    }
    assert_eq!(types, [WINDOW_ACK_SIZE, AMF0_COMMAND, VIDEO, AUDIO]);
    assert_eq!(plain.ack_due(), None);
}

proptest! {
    /// Media chunked by the push reads back whole, in rml_rtmp's reader
    /// and in ours, at any size, chunk size and timestamp (extended ones
    /// repeated in every continuation chunk).
    #[test]
    fn written_chunks_read_back_in_rml_rtmp_and_in_our_reader(
        messages in proptest::collection::vec(
            (0usize..6, 0usize..700, prop_oneof![0u32..100_000, 0x00ff_fff0u32..0x0100_0100, any::<u32>()], any::<bool>()),
            1..6,
        ),
        chunk_size in prop_oneof![Just(128usize), 1usize..300, Just(4096usize)],
    ) {
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (i, (head_len, body_len, ts, video)) in messages.iter().enumerate() {
            let head: Vec<u8> = (0..*head_len).map(|b| b as u8 ^ 0x55).collect();
            let body: Vec<u8> = (0..*body_len).map(|b| (b * 7 + i) as u8).collect();
            if head.len() + body.len() == 0 {
                continue;
            }
            let (csid, type_id) = if *video { (4, VIDEO) } else { (5, AUDIO) };
            write_chunks(&mut wire, csid, (type_id, 1, *ts), chunk_size, &head, &body);
            sent.push((type_id, *ts, [head, body].concat()));
        }
        let mut set_size = vec![0x02, 0, 0, 0, 0, 0, 4, SET_CHUNK_SIZE, 0, 0, 0, 0];
        set_size.extend_from_slice(&(chunk_size as u32).to_be_bytes());

        let mut ours = ChunkReader::new(ChunkLimits::default());
        let read = read_all(&mut ours, &[set_size.clone(), wire.clone()].concat()).unwrap();
        let got: Vec<(u8, u32, Vec<u8>)> = read.into_iter().map(|m| (m.type_id, m.timestamp, m.payload.to_vec())).collect();
        prop_assert_eq!(&got, &sent);

        let mut rml = ChunkDeserializer::new();
        rml.set_max_chunk_size(chunk_size).unwrap();
        let mut theirs = Vec::new();
        let mut input: &[u8] = &wire;
        while let Some(m) = rml.get_next_message(input).unwrap() {
            input = &[];
            prop_assert_eq!(m.message_stream_id, 1);
            theirs.push((m.type_id, m.timestamp.value, m.data.to_vec()));
        }
        prop_assert_eq!(&theirs, &sent);
    }

    /// A vectored write of a message gives the socket exactly the bytes
    /// `write` appends, and whatever part of them the socket takes, the
    /// rest left over is the remainder, so nothing is lost or repeated;
    /// a message of more chunks than one write holds is refused untouched.
    #[test]
    fn a_vectored_write_sends_the_same_bytes_and_leaves_the_rest(
        head_len in 0usize..=5,
        // One chunk, a few, up to the bound, and over it: each size of
        // slice array the write sets up.
        body_len in prop_oneof![0usize..4_100, 0usize..17_000, 0usize..200_000],
        ts in prop_oneof![0u32..100_000, 0x00ff_fff0u32..0x0100_0100],
        chunk_size in prop_oneof![1usize..300, Just(4096usize)],
        take in any::<prop::sample::Index>(),
    ) {
        let body: Vec<u8> = (0..body_len).map(|b| (b * 7) as u8).collect();
        let o = Outgoing {
            csid: 6,
            header: (VIDEO, 1, ts),
            chunk_size,
            head: [1, 2, 3, 4, 5],
            head_len,
            body: &body,
        };
        let mut whole = Vec::new();
        o.write(&mut whole);
        let mut given = Vec::new();
        let mut rest = vec![0xee];
        let written = o.write_vectored(
            |parts| {
                given = parts.iter().flat_map(|p| p.iter().copied()).collect();
                take.index(given.len() + 1)
            },
            &mut rest,
        );
        let parts_needed = parts_of((head_len + body_len).div_ceil(chunk_size));
        match written {
            None => {
                prop_assert!(parts_needed > MAX_PARTS);
                prop_assert_eq!(rest, vec![0xee]);
            }
            Some(n) => {
                prop_assert_eq!(&given, &whole);
                prop_assert_eq!(&rest[1..], &whole[n..]);
            }
        }
    }
}

#[test]
fn the_publish_streams_id_is_read_from_rml_rtmps_publish_command_only() {
    let mut ser = ChunkSerializer::new();
    // createStream goes on stream 0 first: not the publish.
    let create = ser
        .serialize(
            &payload(AMF0_COMMAND, 0, 0, b"\x02\x00\x0ccreateStream".to_vec()),
            false,
            false,
        )
        .unwrap();
    assert_eq!(publish_stream_of(&create.bytes), None);
    for (stream, ts) in [(1u32, 0), (7, 5), (0x0102_0304, 0x0100_0000)] {
        let p = ser
            .serialize(
                &payload(
                    AMF0_COMMAND,
                    stream,
                    ts,
                    b"\x02\x00\x07publish\x00".to_vec(),
                ),
                false,
                false,
            )
            .unwrap();
        assert_eq!(publish_stream_of(&p.bytes), Some(stream), "ts {ts}");
    }
    // Media, a compressed header, a short chunk: none.
    let video = ser
        .serialize(
            &payload(9, 1, 0, b"\x02\x00\x07publish".to_vec()),
            false,
            false,
        )
        .unwrap();
    assert_eq!(publish_stream_of(&video.bytes), None);
    let again = ser
        .serialize(
            &payload(
                AMF0_COMMAND,
                0x0102_0304,
                0x0100_0005,
                b"\x02\x00\x07publish".to_vec(),
            ),
            false,
            false,
        )
        .unwrap();
    assert_eq!(publish_stream_of(&again.bytes), None);
    assert_eq!(publish_stream_of(&[0x03, 0, 0]), None);
    assert_eq!(publish_stream_of(&[]), None);
}
