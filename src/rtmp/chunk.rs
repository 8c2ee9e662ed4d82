//! The RTMP chunk stream a peer sends, read under limits: a sans-IO core.
//!
//! rml_rtmp's server session parses chunks and decodes AMF0 itself, trusting
//! what it is given: a message length is believed until its bytes arrive, its
//! parser keeps one payload buffer for every chunk stream (and subtracts
//! without checking when they interleave), and its AMF0 decoder recurses once
//! per nesting level. So the session never sees a peer's bytes. This reader
//! stands in front of it:
//!
//! - it reassembles messages per chunk stream as RTMP 1.0 §5.3 says, applying
//!   the peer's Set Chunk Size and Abort itself;
//! - a declared length over the limit for the message's type closes the
//!   connection at the chunk header, before any of the body is read, and the
//!   bytes held in unfinished messages are bounded in total;
//! - every AMF0 command and data message is scanned by [`super::amf`];
//! - each accepted message is written again as one type-0 chunk
//!   ([`frame_for_session`]), after [`SESSION_PREAMBLE`] told the session
//!   that chunks may be that large: its chunk parser only ever sees chunks of
//!   the one shape it writes itself.
//!
//! Timestamps are computed as rml_rtmp computed them (a type-3 chunk that
//! starts a message adds the stream's last timestamp field), so what the
//! rest of the gateway sees is unchanged. Pure: bytes in, messages out.

use bytes::{Bytes, BytesMut};

use super::amf::{self, AmfError, AmfLimits};

/// What one connection may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkLimits {
    /// Video and every type not named below.
    pub max_media_bytes: u32,
    /// Audio (an AAC frame is at most 6 KiB a channel).
    pub max_audio_bytes: u32,
    /// AMF0/AMF3 command, data and shared-object messages (15-20).
    pub max_command_bytes: u32,
    /// Protocol control messages (1-6): a few bytes each.
    pub max_control_bytes: u32,
    /// Bytes held in unfinished messages, all chunk streams together.
    pub max_buffered_bytes: usize,
    /// Chunk streams in use at once (real clients use three to five).
    pub max_chunk_streams: usize,
    pub amf: AmfLimits,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_media_bytes: 4 << 20,
            max_audio_bytes: 64 << 10,
            max_command_bytes: 64 << 10,
            max_control_bytes: 64,
            max_buffered_bytes: 4 << 20,
            max_chunk_streams: 64,
            amf: AmfLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkError {
    #[error(
        "message of type {type_id} declares {declared} bytes: message larger than {limit} bytes"
    )]
    TooLarge {
        type_id: u8,
        declared: u32,
        limit: u32,
    },
    #[error("unfinished messages hold more than {0} bytes")]
    Buffered(usize),
    #[error("more than {0} chunk streams in use")]
    TooManyStreams(usize),
    #[error("chunk stream {0} continues a message it never started")]
    NoPreviousHeader(u32),
    #[error("chunk stream {0} starts a new message before the last one is complete")]
    Interleaved(u32),
    #[error("invalid chunk size {0}")]
    ChunkSize(u32),
    #[error("protocol control message of type {0} is truncated")]
    Control(u8),
    #[error("{0}")]
    Amf(#[from] AmfError),
    #[error("{0}")]
    Shape(&'static str),
}

/// One complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub type_id: u8,
    pub stream_id: u32,
    /// Milliseconds, wrapping as RTMP timestamps do.
    pub timestamp: u32,
    pub payload: Bytes,
}

const SET_CHUNK_SIZE: u8 = 1;
const ABORT: u8 = 2;
const ACKNOWLEDGEMENT: u8 = 3;
const WINDOW_ACK_SIZE: u8 = 5;
const AUDIO: u8 = 8;
const VIDEO: u8 = 9;
/// rml_rtmp decodes the AMF3-flagged data and command types as AMF0 too.
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;
/// A timestamp field of this value means a 4-byte extended timestamp follows.
const EXTENDED: u32 = 0x00ff_ffff;
/// The longest chunk header: 3 basic, 11 message, 4 extended timestamp.
const MAX_HEADER: usize = 18;
/// RTMP's initial chunk size.
const INITIAL_CHUNK_SIZE: u32 = 128;
/// The largest chunk size RTMP can announce (31 bits).
const MAX_CHUNK_SIZE: u32 = 0x7fff_ffff;
/// Capacity reserved for a message when its first header is read (its
/// declared length, up to this): most media messages need no reallocation,
/// and a peer declaring large messages it never sends holds at most this
/// per chunk stream.
const PAYLOAD_RESERVE: usize = 64 << 10;
/// A media chunk stream's messages are read into blocks of this many
/// bytes (or one message, if larger), each message a slice of its block:
/// one allocation for several frames (a 2 Mbps stream's average video
/// frame is 8 KiB; an AAC frame a few hundred bytes), freed once the last
/// frame of the block is.
const VIDEO_BLOCK: usize = 64 << 10;
const AUDIO_BLOCK: usize = 8 << 10;

/// Where a [`ChunkReader`] puts the messages it completes, in order.
pub(crate) trait Messages {
    fn put(&mut self, m: Message);
}

impl Messages for Vec<Message> {
    fn put(&mut self, m: Message) {
        self.push(m);
    }
}

/// The session feed's queue: read into directly, not through a `Vec`
/// drained into it (which cost a hundred instructions a message).
impl Messages for std::collections::VecDeque<Message> {
    fn put(&mut self, m: Message) {
        self.push_back(m);
    }
}

/// What a chunk stream remembers from its last header.
#[derive(Debug, Default)]
struct Stream {
    timestamp: u32,
    /// The last timestamp field read: absolute after type 0, a delta after
    /// types 1 and 2; [`EXTENDED`] when an extended timestamp followed.
    field: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The unfinished message's bytes (empty between messages), at the
    /// end of what was read into the current block.
    payload: BytesMut,
    /// A message is unfinished.
    open: bool,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    /// Inside a chunk of the chunk stream at `index` in the reader's list,
    /// with `left` body bytes still to come.
    Body {
        index: usize,
        left: u32,
    },
}

/// Reads one connection's chunk stream (after the handshake).
#[derive(Debug)]
pub(crate) struct ChunkReader {
    limits: ChunkLimits,
    chunk_size: u32,
    /// Chunk streams by id, in order of first use. A connection uses a
    /// handful (at most `max_chunk_streams`, and none is ever removed), so
    /// a short list searched per chunk is cheaper than hashing its id.
    streams: Vec<(u32, Stream)>,
    state: State,
    /// Bytes of an incomplete chunk header: `pending[..pending_len]`.
    pending: [u8; MAX_HEADER],
    pending_len: usize,
    buffered: usize,
}

impl ChunkReader {
    pub(crate) fn new(limits: ChunkLimits) -> Self {
        ChunkReader {
            limits,
            chunk_size: INITIAL_CHUNK_SIZE,
            streams: Vec::new(),
            state: State::Header,
            pending: [0; MAX_HEADER],
            pending_len: 0,
            buffered: 0,
        }
    }

    /// Reads `input`, appending every message it completes to `out` (Set
    /// Chunk Size and Abort are applied, not returned). After an error the
    /// connection must be closed: the stream cannot be resynchronised.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut impl Messages) -> Result<(), ChunkError> {
        let mut input = input;
        while !input.is_empty() {
            match self.state {
                State::Body { index, left } => {
                    let n = (left as usize).min(input.len());
                    let stream = &mut self.streams[index].1;
                    debug_assert!(stream.open, "body of a started message");
                    stream.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.buffered += n;
                    let left = left - n as u32;
                    if left > 0 {
                        self.state = State::Body { index, left };
                    } else {
                        self.state = State::Header;
                        self.chunk_done(index, out)?;
                    }
                }
                // Headers are at most 18 bytes, so one that does not parse
                // from what is here has fewer than 18 pending.
                State::Header if self.pending_len == 0 => match self.header(input, out)? {
                    Some(used) => input = &input[used..],
                    None => {
                        self.pending[..input.len()].copy_from_slice(input);
                        self.pending_len = input.len();
                        input = &[];
                    }
                },
                State::Header => {
                    let have = self.pending_len;
                    let take = input.len().min(MAX_HEADER - have);
                    let mut header = self.pending;
                    header[have..have + take].copy_from_slice(&input[..take]);
                    match self.header(&header[..have + take], out)? {
                        Some(used) => {
                            self.pending_len = 0;
                            input = &input[used - have..];
                        }
                        None => {
                            self.pending = header;
                            self.pending_len = have + take;
                            input = &input[take..];
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Parses one chunk header from the start of `b`: `None` when more bytes
    /// are needed (nothing changed), else the bytes it used.
    fn header(&mut self, b: &[u8], out: &mut impl Messages) -> Result<Option<usize>, ChunkError> {
        let Some(&b0) = b.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut at) = match b0 & 0x3f {
            0 if b.len() >= 2 => (u32::from(b[1]) + 64, 2),
            1 if b.len() >= 3 => (u32::from(b[1]) + u32::from(b[2]) * 256 + 64, 3),
            0 | 1 => return Ok(None),
            id => (u32::from(id), 1),
        };
        let message_header = [11, 7, 3, 0][usize::from(fmt)];
        if b.len() < at + message_header {
            return Ok(None);
        }
        let u24 = |i: usize| u32::from_be_bytes([0, b[i], b[i + 1], b[i + 2]]);
        let known = self.streams.iter().position(|(id, _)| *id == csid);
        let prev_field = match known {
            Some(i) => self.streams[i].1.field,
            None if fmt == 0 => 0,
            None => return Err(ChunkError::NoPreviousHeader(csid)),
        };
        let field = if fmt == 3 { prev_field } else { u24(at) };
        let extended = field == EXTENDED;
        let ext_at = at + message_header;
        if extended && b.len() < ext_at + 4 {
            return Ok(None);
        }
        let ext = extended
            .then(|| u32::from_be_bytes([b[ext_at], b[ext_at + 1], b[ext_at + 2], b[ext_at + 3]]));
        let used = ext_at + if extended { 4 } else { 0 };

        let index = match known {
            Some(i) => i,
            None => {
                if self.streams.len() >= self.limits.max_chunk_streams {
                    return Err(ChunkError::TooManyStreams(self.limits.max_chunk_streams));
                }
                self.streams.push((csid, Stream::default()));
                self.streams.len() - 1
            }
        };
        let stream = &mut self.streams[index].1;
        let continuing = stream.open;
        if continuing && fmt != 3 {
            return Err(ChunkError::Interleaved(csid));
        }
        if !continuing {
            // A new message: its timestamp, and for types 0 and 1 its shape.
            let value = ext.unwrap_or(field);
            match fmt {
                0 => stream.timestamp = value,
                _ => stream.timestamp = stream.timestamp.wrapping_add(value),
            }
            if fmt != 3 {
                stream.field = field;
            }
            if fmt <= 1 {
                stream.length = u24(at + 3);
                stream.type_id = b[at + 6];
            }
            if fmt == 0 {
                let s = &b[at + 7..at + 11];
                stream.stream_id = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            }
            let limit = match stream.type_id {
                1..=6 => self.limits.max_control_bytes,
                AUDIO => self.limits.max_audio_bytes,
                15..=20 => self.limits.max_command_bytes,
                _ => self.limits.max_media_bytes,
            };
            if stream.length > limit {
                return Err(ChunkError::TooLarge {
                    type_id: stream.type_id,
                    declared: stream.length,
                    limit,
                });
            }
            let want = (stream.length as usize).min(PAYLOAD_RESERVE);
            if stream.payload.capacity() < want {
                let block = match stream.type_id {
                    VIDEO => VIDEO_BLOCK,
                    AUDIO => AUDIO_BLOCK,
                    _ => 0,
                };
                stream.payload = BytesMut::with_capacity(block.max(want));
            }
            stream.open = true;
        }
        at = used;
        let have = stream.payload.len() as u32;
        let left = (stream.length - have).min(self.chunk_size);
        if self.buffered + left as usize > self.limits.max_buffered_bytes {
            return Err(ChunkError::Buffered(self.limits.max_buffered_bytes));
        }
        if left == 0 {
            self.chunk_done(index, out)?;
        } else {
            self.state = State::Body { index, left };
        }
        Ok(Some(at))
    }

    /// A chunk of the stream at `index` is complete: if its message is
    /// too, handle it.
    fn chunk_done(&mut self, index: usize, out: &mut impl Messages) -> Result<(), ChunkError> {
        let stream = &mut self.streams[index].1;
        debug_assert!(stream.open, "started message");
        if stream.payload.len() < stream.length as usize {
            return Ok(());
        }
        let payload = stream.payload.split().freeze();
        stream.open = false;
        self.buffered -= payload.len();
        let msg = Message {
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            timestamp: stream.timestamp,
            payload,
        };
        match msg.type_id {
            SET_CHUNK_SIZE => {
                let size = control_u32(&msg)?;
                if size == 0 || size > MAX_CHUNK_SIZE {
                    return Err(ChunkError::ChunkSize(size));
                }
                self.chunk_size = size;
            }
            ABORT => {
                let aborted = control_u32(&msg)?;
                if let Some((_, s)) = self.streams.iter_mut().find(|(id, _)| *id == aborted)
                    && std::mem::take(&mut s.open)
                {
                    self.buffered -= s.payload.len();
                    s.payload.clear();
                }
            }
            AMF0_DATA | AMF3_DATA | AMF0_COMMAND | AMF3_COMMAND => {
                check_amf(&msg, self.limits.amf)?;
                out.put(msg);
            }
            _ => out.put(msg),
        }
        Ok(())
    }
}

/// Checks an AMF message as rml_rtmp will decode it: bounded, and of a
/// shape its session takes without panicking (a command needs a name, a
/// transaction id and a command object; `@setDataFrame` needs a name and
/// its data).
fn check_amf(msg: &Message, limits: AmfLimits) -> Result<(), ChunkError> {
    let body = match (msg.type_id, msg.payload.first()) {
        // As rml_rtmp reads AMF3 commands: a leading zero byte is skipped.
        (AMF3_COMMAND, Some(0)) => &msg.payload[1..],
        _ => &msg.payload[..],
    };
    let values = amf::check(body, limits)?;
    match msg.type_id {
        AMF0_COMMAND | AMF3_COMMAND if values < 3 => Err(ChunkError::Shape(
            "AMF command without a name, transaction id and command object",
        )),
        // rml_rtmp reads the value after the name, and, for `onMetaData`
        // while publishing, the one after that, without looking.
        AMF0_DATA | AMF3_DATA if values < 3 && body.starts_with(b"\x02\x00\x0d@setDataFrame") => {
            Err(ChunkError::Shape("@setDataFrame without its name and data"))
        }
        _ => Ok(()),
    }
}

fn control_u32(msg: &Message) -> Result<u32, ChunkError> {
    match msg.payload[..] {
        [a, b, c, d, ..] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(ChunkError::Control(msg.type_id)),
    }
}

/// A [`ChunkReader`] feeding an rml_rtmp session (server or client): the
/// messages it accepts wait here and are handed out one at a time, each
/// framed as a single chunk. Messages completed before a refused one are
/// still handed out, in order.
///
/// On the ingest side ([`SessionFeed::for_publisher`]) the media of the
/// stream being published skips the session ([`Next::Media`]): the session
/// only ever checked it belonged to that stream (and cloned two strings per
/// message to say so). The feed then acknowledges what it reads itself,
/// counting the peer's bytes as they came, at the window the peer asked for
/// (its Window Acknowledgement Size is kept here, not given to the session).
#[derive(Debug)]
pub(crate) struct SessionFeed {
    reader: ChunkReader,
    waiting: std::collections::VecDeque<Message>,
    framed: Vec<u8>,
    /// Acknowledgements are this feed's (the ingest side).
    acks: bool,
    /// The peer's Window Acknowledgement Size, once it said it.
    peer_window: Option<u32>,
    /// Bytes read from the peer, and when the last acknowledgement was due.
    received: u64,
    acked: u64,
    /// The message stream of the last message handed to the session.
    last_stream: u32,
    /// Audio and video of this message stream skip the session.
    media_stream: Option<u32>,
}

/// What the feed hands out next.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// A message framed for the session.
    Session(&'a [u8]),
    /// Audio (type 8) or video (type 9) of the stream being published.
    Media(Message),
}

impl SessionFeed {
    pub(crate) fn new(limits: ChunkLimits) -> Self {
        SessionFeed {
            reader: ChunkReader::new(limits),
            waiting: std::collections::VecDeque::new(),
            framed: Vec::new(),
            acks: false,
            peer_window: None,
            received: 0,
            acked: 0,
            last_stream: 0,
            media_stream: None,
        }
    }

    /// A feed for a server session that takes a publish: it acknowledges
    /// the peer's bytes itself, and media can skip the session.
    pub(crate) fn for_publisher(limits: ChunkLimits) -> Self {
        SessionFeed {
            acks: true,
            ..SessionFeed::new(limits)
        }
    }

    /// Reads a peer's bytes; after an error the connection must be closed
    /// (what was accepted before it still waits).
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        self.received += bytes.len() as u64;
        self.reader.push(bytes, &mut self.waiting)
    }

    /// The next accepted message, framed for the session.
    pub(crate) fn next_framed(&mut self) -> Option<&[u8]> {
        let msg = self.waiting.pop_front()?;
        self.framed.clear();
        frame_for_session(&msg, &mut self.framed);
        Some(&self.framed)
    }

    /// The next accepted message: media of the published stream as it is,
    /// anything else framed for the session.
    pub(crate) fn next(&mut self) -> Option<Next<'_>> {
        loop {
            let msg = self.waiting.pop_front()?;
            if self.acks && msg.type_id == WINDOW_ACK_SIZE {
                if let Ok(size) = <[u8; 4]>::try_from(&msg.payload[..]) {
                    self.peer_window = Some(u32::from_be_bytes(size)).filter(|w| *w > 0);
                }
                continue;
            }
            if matches!(msg.type_id, AUDIO | VIDEO) && self.media_stream == Some(msg.stream_id) {
                return Some(Next::Media(msg));
            }
            self.last_stream = msg.stream_id;
            self.framed.clear();
            frame_for_session(&msg, &mut self.framed);
            return Some(Next::Session(&self.framed));
        }
    }

    /// The session accepted a publish in the last message it was given:
    /// that message stream's audio and video skip the session from now on.
    pub(crate) fn publishing_on_last_stream(&mut self) {
        self.media_stream = Some(self.last_stream);
    }

    /// An Acknowledgement to send, once the peer's window of bytes has
    /// come since the last (its sequence number is every byte read, as a
    /// wrapping 32-bit count).
    pub(crate) fn ack_due(&mut self) -> Option<[u8; 16]> {
        let window = u64::from(self.peer_window.filter(|_| self.acks)?);
        if self.received - self.acked < window {
            return None;
        }
        self.acked = self.received;
        let mut chunk = [0u8; 16];
        chunk[0] = 0x02; // type-0 header on chunk stream 2 (protocol control)
        chunk[6] = 4; // timestamp 0, length 4
        chunk[7] = ACKNOWLEDGEMENT; // message stream 0
        chunk[12..].copy_from_slice(&(self.received as u32).to_be_bytes());
        Some(chunk)
    }
}

/// Fed to a new server session before anything else: a Set Chunk Size of the
/// largest value, so that every message it is given fits in one chunk.
pub(crate) const SESSION_PREAMBLE: [u8; 16] = [
    0x02,
    0,
    0,
    0,
    0,
    0,
    4,
    SET_CHUNK_SIZE,
    0,
    0,
    0,
    0,
    0x7f,
    0xff,
    0xff,
    0xff,
];

/// Writes `msg` as a single type-0 chunk on chunk stream 3.
pub(crate) fn frame_for_session(msg: &Message, out: &mut Vec<u8>) {
    write_chunks(
        out,
        3,
        (msg.type_id, msg.stream_id, msg.timestamp),
        msg.payload.len().max(1),
        &[],
        &msg.payload,
    );
}

/// Writes one message as chunks on chunk stream `csid` (3 to 63), at most
/// `chunk_size` payload bytes each: a type-0 header, then type-3 headers
/// (each repeating an extended timestamp, as RTMP wants). The payload is
/// `head` followed by `body`, so an FLV tag header and a frame are written
/// without being joined first.
pub(crate) fn write_chunks(
    out: &mut Vec<u8>,
    csid: u8,
    (type_id, stream_id, timestamp): (u8, u32, u32),
    chunk_size: usize,
    head: &[u8],
    body: &[u8],
) {
    let len = head.len() + body.len();
    let headers = ChunkHeaders::new(csid, (type_id, stream_id, timestamp), len, chunk_size);
    let chunks = len.div_ceil(chunk_size).max(1);
    out.reserve(len + headers.first().len() + (chunks - 1) * headers.next().len());
    for_each_chunk_part(&headers, chunk_size, head, body, |part| {
        out.extend_from_slice(part);
    });
}

/// The two headers a message's chunks carry: a type-0 header on the
/// first, the same type-3 header on each after it.
struct ChunkHeaders {
    bytes: [u8; 21],
    first: usize,
    next: usize,
}

impl ChunkHeaders {
    fn new(
        csid: u8,
        (type_id, stream_id, timestamp): (u8, u32, u32),
        len: usize,
        chunk_size: usize,
    ) -> Self {
        debug_assert!((3..64).contains(&csid) && chunk_size > 0);
        debug_assert!(len < 1 << 24, "a message is under 16 MiB");
        let ts_field = timestamp.min(EXTENDED);
        let extended = ts_field == EXTENDED;
        let mut bytes = [0u8; 21];
        bytes[0] = csid;
        bytes[1..4].copy_from_slice(&ts_field.to_be_bytes()[1..]);
        bytes[4..7].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
        bytes[7] = type_id;
        bytes[8..12].copy_from_slice(&stream_id.to_le_bytes());
        let mut first = 12;
        if extended {
            bytes[12..16].copy_from_slice(&timestamp.to_be_bytes());
            first = 16;
        }
        bytes[first] = 0xc0 | csid;
        let mut next = 1;
        if extended {
            bytes[first + 1..first + 5].copy_from_slice(&timestamp.to_be_bytes());
            next = 5;
        }
        ChunkHeaders { bytes, first, next }
    }

    fn first(&self) -> &[u8] {
        &self.bytes[..self.first]
    }

    fn next(&self) -> &[u8] {
        &self.bytes[self.first..self.first + self.next]
    }
}

/// Calls `part` with each piece of a message's chunks in order: a header,
/// then the chunk's bytes of `head` and of `body` (empty pieces skipped).
fn for_each_chunk_part<'a>(
    headers: &'a ChunkHeaders,
    chunk_size: usize,
    head: &'a [u8],
    body: &'a [u8],
    mut part: impl FnMut(&'a [u8]),
) {
    let len = head.len() + body.len();
    part(headers.first());
    let mut at = 0;
    while at < len {
        if at > 0 {
            part(headers.next());
        }
        let end = (at + chunk_size).min(len);
        if at < head.len() {
            part(&head[at..end.min(head.len())]);
        }
        if end > head.len() {
            part(&body[at.max(head.len()) - head.len()..end - head.len()]);
        }
        at = end;
    }
}

/// Slices a vectored write of one message takes at most (see
/// [`Outgoing::write_vectored`]): 32 chunks, 128 KiB at 4 KiB a chunk, a
/// large keyframe. Longer messages are copied into one buffer.
pub(crate) const MAX_PARTS: usize = parts_of(32);

/// The slices a message of `chunks` chunks is written from: each chunk's
/// header and its bytes, and one more in the chunk where the tag head ends
/// and the frame begins.
pub(crate) const fn parts_of(chunks: usize) -> usize {
    2 * chunks + 1
}

/// One message to send as chunks ([`write_chunks`]): its payload is an FLV
/// tag head, kept here, then the frame's own bytes.
pub(crate) struct Outgoing<'a> {
    pub csid: u8,
    /// Message type, message stream and timestamp.
    pub header: (u8, u32, u32),
    pub chunk_size: usize,
    pub head: [u8; 5],
    pub head_len: usize,
    pub body: &'a [u8],
}

impl Outgoing<'_> {
    /// Appends the message's chunks to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        write_chunks(
            out,
            self.csid,
            self.header,
            self.chunk_size,
            &self.head[..self.head_len],
            self.body,
        );
    }

    /// Gives `write` the same bytes as [`Outgoing::write`] appends, as
    /// slices for one vectored write, none of the frame copied; appends to
    /// `rest` what it did not take. `None` (nothing written) if the message
    /// has more chunks than one write takes ([`MAX_PARTS`]).
    pub(crate) fn write_vectored(
        &self,
        write: impl FnOnce(&[std::io::IoSlice<'_>]) -> usize,
        rest: &mut Vec<u8>,
    ) -> Option<usize> {
        let len = self.head_len + self.body.len();
        let headers = ChunkHeaders::new(self.csid, self.header, len, self.chunk_size);
        // The slices are an array on the stack, filled in before use and
        // sized for the message: one of one chunk (audio) fills 3, one of
        // up to 4 (most pictures at 4 KiB chunks) 9, not all 65.
        const ONE: usize = parts_of(1);
        const FOUR: usize = parts_of(4);
        let parts = parts_of(len.div_ceil(self.chunk_size).max(1));
        if parts <= ONE {
            Some(self.write_parts::<ONE>(&headers, write, rest))
        } else if parts <= FOUR {
            Some(self.write_parts::<FOUR>(&headers, write, rest))
        } else if parts <= MAX_PARTS {
            Some(self.write_parts::<MAX_PARTS>(&headers, write, rest))
        } else {
            None
        }
    }

    /// [`Outgoing::write_vectored`] of a message of at most `N` slices.
    fn write_parts<const N: usize>(
        &self,
        headers: &ChunkHeaders,
        write: impl FnOnce(&[std::io::IoSlice<'_>]) -> usize,
        rest: &mut Vec<u8>,
    ) -> usize {
        let mut parts = [std::io::IoSlice::new(&[]); N];
        let mut n = 0;
        for_each_chunk_part(
            headers,
            self.chunk_size,
            &self.head[..self.head_len],
            self.body,
            |p| {
                parts[n] = std::io::IoSlice::new(p);
                n += 1;
            },
        );
        let written = write(&parts[..n]);
        let mut skip = written;
        for p in &parts[..n] {
            if skip >= p.len() {
                skip -= p.len();
            } else {
                rest.extend_from_slice(&p[skip..]);
                skip = 0;
            }
        }
        written
    }
}

/// The message stream a `publish` command is sent on, if `chunk` starts
/// one with a full (type-0) header: how the push learns which stream it
/// publishes on from what rml_rtmp's client session writes (it sends
/// `publish` once the origin answered `createStream`, and a new stream id
/// always takes a full header).
pub(crate) fn publish_stream_of(chunk: &[u8]) -> Option<u32> {
    const PUBLISH: &[u8] = b"\x02\x00\x07publish";
    let b0 = *chunk.first()?;
    if b0 >> 6 != 0 {
        return None;
    }
    let basic = match b0 & 0x3f {
        0 => 2,
        1 => 3,
        _ => 1,
    };
    let header = chunk.get(basic..basic + 11)?;
    // AMF0 command messages only.
    if header[6] != 20 {
        return None;
    }
    let extended = header[..3] == [0xff, 0xff, 0xff];
    let body = basic + 11 + if extended { 4 } else { 0 };
    if chunk.get(body..body + PUBLISH.len())? != PUBLISH {
        return None;
    }
    Some(u32::from_le_bytes(header[7..11].try_into().ok()?))
}

#[cfg(test)]
#[path = "chunk_tests.rs"]
mod tests;
