//! RTMP chunk streams (RTMP 1.0 §5.3): splitting messages into chunks and
//! reassembling them.
//!
//! A chunk is a basic header (format and chunk stream id, 1 to 3 bytes), a
//! message header whose size depends on the format (type 0: 11 bytes, type 1:
//! 7, type 2: 3, type 3: none), an optional 4-byte extended timestamp, and up
//! to one chunk size of payload. Types 1 to 3 reuse fields of the previous
//! chunk on the same chunk stream.
//!
//! Contract: [`ChunkDecoder::decode`] parses exactly one chunk from the front
//! of its input or consumes nothing (`Ok(None)`) when the chunk is not all
//! there yet, so the caller may split the stream anywhere. Each message
//! length is checked against [`ChunkLimits`] when its header arrives, before
//! any payload is buffered; messages of discarded types (video) are counted
//! and never buffered. Chunk size changes and aborts come from the session,
//! which handles each message before asking for the next chunk, as §5.4.1
//! requires.

use std::collections::HashMap;

use bytes::Bytes;

use super::{Reader, RtmpError};

/// The chunk size both directions start with (§5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;

/// The largest chunk size onair accepts, 16 MiB. The spec allows up to
/// 2^31 - 1; no encoder needs more than a message, and messages are bounded.
pub const MAX_CHUNK_SIZE: u32 = 1 << 24;

/// The largest chunk stream id a 3-byte basic header can carry (§5.3.1.1).
pub const MAX_CHUNK_STREAM_ID: u32 = 65_599;

/// A 24-bit timestamp field with this value means "see the extended
/// timestamp" (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;

/// Message type ids (§5.4 protocol control, §6.2 user control, §7.1).
pub mod message_type {
    /// Set Chunk Size (§5.4.1).
    pub const SET_CHUNK_SIZE: u8 = 1;
    /// Abort Message (§5.4.2).
    pub const ABORT: u8 = 2;
    /// Acknowledgement (§5.4.3).
    pub const ACKNOWLEDGEMENT: u8 = 3;
    /// User Control Message (§6.2).
    pub const USER_CONTROL: u8 = 4;
    /// Window Acknowledgement Size (§5.4.4).
    pub const WINDOW_ACK_SIZE: u8 = 5;
    /// Set Peer Bandwidth (§5.4.5).
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    /// Audio (§7.1.4).
    pub const AUDIO: u8 = 8;
    /// Video (§7.1.5).
    pub const VIDEO: u8 = 9;
    /// Data message, AMF3 (§7.1.2).
    pub const DATA_AMF3: u8 = 15;
    /// Shared object message, AMF3 (§7.1.3).
    pub const SHARED_OBJECT_AMF3: u8 = 16;
    /// Command message, AMF3 (§7.1.1).
    pub const COMMAND_AMF3: u8 = 17;
    /// Data message, AMF0 (§7.1.2).
    pub const DATA_AMF0: u8 = 18;
    /// Shared object message, AMF0 (§7.1.3).
    pub const SHARED_OBJECT_AMF0: u8 = 19;
    /// Command message, AMF0 (§7.1.1).
    pub const COMMAND_AMF0: u8 = 20;
    /// Aggregate message (§7.1.6).
    pub const AGGREGATE: u8 = 22;

    /// A short name for logs and errors.
    pub fn name(type_id: u8) -> &'static str {
        match type_id {
            SET_CHUNK_SIZE => "set chunk size",
            ABORT => "abort",
            ACKNOWLEDGEMENT => "acknowledgement",
            USER_CONTROL => "user control",
            WINDOW_ACK_SIZE => "window acknowledgement size",
            SET_PEER_BANDWIDTH => "set peer bandwidth",
            AUDIO => "audio",
            VIDEO => "video",
            DATA_AMF3 => "data (AMF3)",
            SHARED_OBJECT_AMF3 => "shared object (AMF3)",
            COMMAND_AMF3 => "command (AMF3)",
            DATA_AMF0 => "data (AMF0)",
            SHARED_OBJECT_AMF0 => "shared object (AMF0)",
            COMMAND_AMF0 => "command (AMF0)",
            AGGREGATE => "aggregate",
            _ => "unknown",
        }
    }
}

/// A complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The chunk stream it travelled on.
    pub chunk_stream_id: u32,
    /// Timestamp in milliseconds, 32-bit, wrapping (§5.3.1.2).
    pub timestamp: u32,
    /// Message type id ([`message_type`]).
    pub type_id: u8,
    /// Message stream id (0 for protocol control and NetConnection commands).
    pub stream_id: u32,
    /// The reassembled payload.
    pub payload: Bytes,
}

/// Bounds on what a peer may make the decoder hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// The longest message that is buffered (audio, commands, metadata).
    pub max_message_len: u32,
    /// The longest message of a discarded type, which is counted but not
    /// buffered.
    pub max_discarded_message_len: u32,
    /// How many chunk streams a peer may open.
    pub max_chunk_streams: usize,
}

impl Default for ChunkLimits {
    /// 1 MiB messages (an AAC frame is under 8 KiB, metadata a few hundred
    /// bytes), 8 MiB discarded video messages (a keyframe at 20 Mb/s is well
    /// under that), 16 chunk streams (ffmpeg and OBS use fewer than 8). A
    /// peer can thus hold at most 16 MiB of partial messages.
    fn default() -> Self {
        Self {
            max_message_len: 1 << 20,
            max_discarded_message_len: 8 << 20,
            max_chunk_streams: 16,
        }
    }
}

/// What one decoded chunk produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Part of a message; more chunks follow.
    Partial,
    /// The chunk completed a message.
    Message(Message),
    /// The chunk completed a message of a discarded type; its payload was
    /// skipped.
    Discarded {
        /// The chunk stream it travelled on.
        chunk_stream_id: u32,
        /// Its type id.
        type_id: u8,
        /// Its length in bytes.
        length: u32,
    },
}

/// The fields in force on a chunk stream, as the last header left them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Header {
    timestamp: u32,
    /// What a type 3 chunk that starts a message adds to the timestamp: the
    /// last delta, or after a type 0 chunk its absolute timestamp, as ffmpeg
    /// and librtmp read it.
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// Whether the last 24-bit timestamp field was 0xFFFFFF, so that type 3
    /// chunks carry the extended timestamp too (§5.3.1.3, as ffmpeg and OBS
    /// send it).
    extended: bool,
}

#[derive(Debug)]
struct Partial {
    received: u32,
    /// Empty for discarded messages.
    payload: Vec<u8>,
}

#[derive(Debug, Default)]
struct ChunkStream {
    header: Header,
    partial: Option<Partial>,
}

/// Reassembles messages from the chunks a peer sends.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    limits: ChunkLimits,
    discarded_type: Option<u8>,
    streams: HashMap<u32, ChunkStream>,
}

impl ChunkDecoder {
    /// A decoder at the default chunk size. Messages of `discarded_type` (if
    /// any) are counted and skipped rather than buffered.
    pub fn new(limits: ChunkLimits, discarded_type: Option<u8>) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            discarded_type,
            streams: HashMap::new(),
        }
    }

    /// The chunk size the peer sends with.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Applies the peer's Set Chunk Size (§5.4.1). 0 and values with the top
    /// bit set are malformed; sizes above [`MAX_CHUNK_SIZE`] are refused.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), RtmpError> {
        if size == 0 || size > 0x7FFF_FFFF {
            return Err(RtmpError::malformed(format!(
                "Set Chunk Size to {size}: must be 1 to 2^31-1"
            )));
        }
        if size > MAX_CHUNK_SIZE {
            return Err(RtmpError::limit(format!(
                "Set Chunk Size to {size} exceeds the bound of {MAX_CHUNK_SIZE}"
            )));
        }
        self.chunk_size = size;
        Ok(())
    }

    /// Drops the partly received message on `chunk_stream_id` (Abort
    /// Message, §5.4.2).
    pub fn abort(&mut self, chunk_stream_id: u32) {
        if let Some(stream) = self.streams.get_mut(&chunk_stream_id) {
            stream.partial = None;
        }
    }

    /// Whether some message is partly received.
    pub fn has_partial_message(&self) -> bool {
        self.streams.values().any(|s| s.partial.is_some())
    }

    /// Decodes one chunk from the front of `input`. `Ok(None)`: the chunk is
    /// incomplete and nothing was consumed. Otherwise returns how many bytes
    /// the chunk took and what it produced. Errors carry the chunk stream id
    /// and message type; the caller adds the byte offset.
    pub fn decode(&mut self, input: &[u8]) -> Result<Option<(usize, Decoded)>, RtmpError> {
        let mut reader = Reader::new(input);
        let Some(first) = reader.u8() else {
            return Ok(None);
        };
        let format = first >> 6;
        // Basic header (§5.3.1.1): ids 0 and 1 announce a 2- or 3-byte form.
        let chunk_stream_id = match first & 0x3f {
            0 => match reader.u8() {
                Some(b) => 64 + u32::from(b),
                None => return Ok(None),
            },
            1 => match reader.bytes(2) {
                Some(b) => 64 + u32::from(b[0]) + 256 * u32::from(b[1]),
                None => return Ok(None),
            },
            id => u32::from(id),
        };

        let stream = self.streams.get(&chunk_stream_id);
        let in_progress = stream.and_then(|s| s.partial.as_ref());
        let previous = match stream {
            Some(stream) => stream.header,
            None if format != 0 => {
                return Err(RtmpError::malformed(format!(
                    "chunk of type {format} starts chunk stream {chunk_stream_id}, \
                     which has no previous header to refer to"
                ))
                .in_message(chunk_stream_id, 0));
            }
            None if self.streams.len() >= self.limits.max_chunk_streams => {
                return Err(RtmpError::limit(format!(
                    "more than {} chunk streams",
                    self.limits.max_chunk_streams
                )));
            }
            None => Header::default(),
        };
        if in_progress.is_some() && format != 3 {
            return Err(RtmpError::malformed(format!(
                "chunk of type {format} arrived while a message was incomplete \
                 (only type 3 may continue a message)"
            ))
            .in_message(chunk_stream_id, previous.type_id));
        }

        // Message header (§5.3.1.2): each type carries a prefix of the
        // type 0 fields.
        let mut header = previous;
        let mut timestamp_field = None;
        if format <= 2 {
            let Some(field) = reader.u24_be() else {
                return Ok(None);
            };
            timestamp_field = Some(field);
        }
        if format <= 1 {
            let (Some(length), Some(type_id)) = (reader.u24_be(), reader.u8()) else {
                return Ok(None);
            };
            header.length = length;
            header.type_id = type_id;
        }
        if format == 0 {
            let Some(stream_id) = reader.u32_le() else {
                return Ok(None);
            };
            header.stream_id = stream_id;
        }
        header.extended = match timestamp_field {
            Some(field) => field == EXTENDED_TIMESTAMP,
            None => previous.extended,
        };
        let extended_value = if header.extended {
            match reader.u32_be() {
                Some(value) => Some(value),
                None => return Ok(None),
            }
        } else {
            None
        };
        if in_progress.is_none() {
            // A new message: work out its timestamp. On a continuation chunk
            // the extended timestamp repeats the first chunk's and is ignored.
            match format {
                0 => {
                    header.timestamp = extended_value.or(timestamp_field).unwrap_or(0);
                    header.delta = header.timestamp;
                }
                1 | 2 => {
                    header.delta = extended_value.or(timestamp_field).unwrap_or(0);
                    header.timestamp = previous.timestamp.wrapping_add(header.delta);
                }
                _ => {
                    header.delta = extended_value.unwrap_or(previous.delta);
                    header.timestamp = previous.timestamp.wrapping_add(header.delta);
                }
            }
            self.check_length(&header, chunk_stream_id)?;
        }

        let received = in_progress.map_or(0, |p| p.received);
        let take = (header.length - received).min(self.chunk_size);
        let Some(data) = reader.bytes(take as usize) else {
            return Ok(None);
        };
        let consumed = reader.position();

        // The whole chunk is here: commit.
        let discarded = Some(header.type_id) == self.discarded_type;
        let stream = self.streams.entry(chunk_stream_id).or_default();
        stream.header = header;
        let mut partial = stream.partial.take().unwrap_or_else(|| Partial {
            received: 0,
            // Grown as bytes arrive, never sized by the length the peer
            // announced: memory follows what the peer actually sent.
            payload: Vec::new(),
        });
        partial.received += take;
        if !discarded {
            partial.payload.extend_from_slice(data);
        }
        if partial.received < header.length {
            stream.partial = Some(partial);
            return Ok(Some((consumed, Decoded::Partial)));
        }
        let decoded = if discarded {
            Decoded::Discarded {
                chunk_stream_id,
                type_id: header.type_id,
                length: header.length,
            }
        } else {
            Decoded::Message(Message {
                chunk_stream_id,
                timestamp: header.timestamp,
                type_id: header.type_id,
                stream_id: header.stream_id,
                payload: Bytes::from(partial.payload),
            })
        };
        Ok(Some((consumed, decoded)))
    }

    fn check_length(&self, header: &Header, chunk_stream_id: u32) -> Result<(), RtmpError> {
        let bound = if Some(header.type_id) == self.discarded_type {
            self.limits.max_discarded_message_len
        } else {
            self.limits.max_message_len
        };
        if header.length > bound {
            return Err(RtmpError::limit(format!(
                "message length {} exceeds the bound of {bound} bytes",
                header.length
            ))
            .in_message(chunk_stream_id, header.type_id));
        }
        Ok(())
    }
}

/// Splits messages into chunks, choosing the smallest header that carries
/// what changed since the last message on the same chunk stream.
#[derive(Debug)]
pub struct ChunkEncoder {
    chunk_size: u32,
    previous: HashMap<u32, Header>,
}

impl Default for ChunkEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkEncoder {
    /// An encoder at the default chunk size.
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            previous: HashMap::new(),
        }
    }

    /// Changes the chunk size for the messages encoded from now on. Send a
    /// Set Chunk Size message (at the old size) first.
    ///
    /// # Panics
    /// If `size` is 0 or above [`MAX_CHUNK_SIZE`]: the size is ours to
    /// choose.
    pub fn set_chunk_size(&mut self, size: u32) {
        assert!(
            (1..=MAX_CHUNK_SIZE).contains(&size),
            "chunk size {size} out of range"
        );
        self.chunk_size = size;
    }

    /// Appends the chunks of `message` to `out`.
    ///
    /// # Panics
    /// If the chunk stream id is below 2 or above [`MAX_CHUNK_STREAM_ID`], or
    /// the payload is longer than 2^24 - 1 bytes: both are ours to choose.
    pub fn encode(&mut self, message: &Message, out: &mut Vec<u8>) {
        let csid = message.chunk_stream_id;
        assert!(
            (2..=MAX_CHUNK_STREAM_ID).contains(&csid),
            "chunk stream id {csid} out of range"
        );
        let length = u32::try_from(message.payload.len())
            .ok()
            .filter(|&l| l < 1 << 24)
            .expect("message payload longer than 2^24 - 1 bytes");
        let previous = self.previous.get(&csid).copied();
        let (format, header) = match previous {
            Some(prev)
                if prev.stream_id == message.stream_id && message.timestamp >= prev.timestamp =>
            {
                let delta = message.timestamp - prev.timestamp;
                let header = Header {
                    timestamp: message.timestamp,
                    delta,
                    length,
                    type_id: message.type_id,
                    stream_id: message.stream_id,
                    extended: delta >= EXTENDED_TIMESTAMP,
                };
                let format = if length != prev.length || message.type_id != prev.type_id {
                    1
                } else if delta != prev.delta || header.extended != prev.extended {
                    2
                } else {
                    3
                };
                (format, header)
            }
            _ => (
                0,
                Header {
                    timestamp: message.timestamp,
                    delta: message.timestamp,
                    length,
                    type_id: message.type_id,
                    stream_id: message.stream_id,
                    extended: message.timestamp >= EXTENDED_TIMESTAMP,
                },
            ),
        };
        self.previous.insert(csid, header);

        let field = if format == 0 {
            header.timestamp
        } else {
            header.delta
        };
        let mut chunks = message.payload.chunks(self.chunk_size as usize);
        let first = chunks.next().unwrap_or(&[]);
        write_basic_header(format, csid, out);
        if format <= 2 {
            out.extend_from_slice(&field.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
        }
        if format <= 1 {
            out.extend_from_slice(&length.to_be_bytes()[1..]);
            out.push(message.type_id);
        }
        if format == 0 {
            out.extend_from_slice(&message.stream_id.to_le_bytes());
        }
        if header.extended {
            out.extend_from_slice(&field.to_be_bytes());
        }
        out.extend_from_slice(first);
        for chunk in chunks {
            write_basic_header(3, csid, out);
            if header.extended {
                out.extend_from_slice(&field.to_be_bytes());
            }
            out.extend_from_slice(chunk);
        }
    }
}

fn write_basic_header(format: u8, csid: u32, out: &mut Vec<u8>) {
    let format = format << 6;
    match csid {
        2..=63 => out.push(format | csid as u8),
        64..=319 => out.extend_from_slice(&[format, (csid - 64) as u8]),
        _ => {
            let rest = csid - 64;
            out.extend_from_slice(&[format | 1, rest as u8, (rest >> 8) as u8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::{XorShift, prop};

    fn message(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, len: usize) -> Message {
        let mut payload = vec![0; len];
        XorShift::new(u64::from(timestamp) + len as u64).fill(&mut payload);
        Message {
            chunk_stream_id: csid,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        }
    }

    /// Messages exercising every header type, all three basic header
    /// forms, extended timestamps (absolute and delta), the 32-bit wrap
    /// (a timestamp going backwards forces type 0), and empty payloads.
    fn sample_messages() -> Vec<Message> {
        vec![
            message(3, 0, 20, 0, 200),
            message(4, 1000, 8, 1, 300),
            message(4, 1023, 8, 1, 300),
            message(4, 1046, 8, 1, 300),
            message(4, 1070, 8, 1, 17),
            message(4, 1070, 9, 1, 0),
            message(70, 5, 18, 1, 129),
            message(400, 7, 18, 1, 128),
            message(MAX_CHUNK_STREAM_ID, 8, 18, 1, 1),
            message(5, 0x00FF_FFFF, 8, 1, 400),
            message(5, 0x0100_0017, 8, 1, 400),
            message(5, 0x0200_0017, 8, 1, 400),
            message(5, 0x0200_002E, 8, 1, 400),
            message(5, 0x0200_0045, 8, 1, 400),
            message(5, 30, 8, 1, 400),
            message(6, u32::MAX, 8, 1, 300),
        ]
    }

    fn encode_all(messages: &[Message], chunk_size: u32) -> Vec<u8> {
        let mut encoder = ChunkEncoder::new();
        encoder.set_chunk_size(chunk_size);
        let mut bytes = Vec::new();
        for message in messages {
            encoder.encode(message, &mut bytes);
        }
        bytes
    }

    /// Decodes `bytes` fed in pieces of `piece` bytes, as a socket would.
    fn decode_in_pieces(
        bytes: &[u8],
        chunk_size: u32,
        piece: usize,
    ) -> Result<Vec<Message>, RtmpError> {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
        decoder.set_chunk_size(chunk_size)?;
        let mut buffer = Vec::new();
        let mut messages = Vec::new();
        for piece in bytes.chunks(piece) {
            buffer.extend_from_slice(piece);
            while let Some((consumed, decoded)) = decoder.decode(&buffer)? {
                buffer.drain(..consumed);
                if let Decoded::Message(message) = decoded {
                    messages.push(message);
                }
            }
        }
        assert!(buffer.is_empty(), "{} bytes left over", buffer.len());
        Ok(messages)
    }

    #[test]
    fn round_trips_every_header_type_and_extended_timestamps() {
        let messages = sample_messages();
        for chunk_size in [1, 128, 4096] {
            let bytes = encode_all(&messages, chunk_size);
            let decoded = decode_in_pieces(&bytes, chunk_size, bytes.len()).unwrap();
            assert_eq!(decoded, messages, "chunk size {chunk_size}");
        }
    }

    #[test]
    fn encoder_uses_all_four_header_types() {
        let bytes = encode_all(&sample_messages(), 128);
        // Walk the chunk starts by decoding and record each one's format.
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
        let mut formats = [0usize; 4];
        let mut rest = &bytes[..];
        while let Some((consumed, _)) = decoder.decode(rest).unwrap() {
            formats[(rest[0] >> 6) as usize] += 1;
            rest = &rest[consumed..];
        }
        assert!(formats.iter().all(|&n| n > 0), "formats used: {formats:?}");
    }

    #[test]
    fn decodes_split_at_every_offset_and_byte_by_byte() {
        let messages = sample_messages();
        let bytes = encode_all(&messages, 128);
        assert_eq!(decode_in_pieces(&bytes, 128, 1).unwrap(), messages);
        for split in 0..=bytes.len() {
            let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
            let mut buffer = bytes[..split].to_vec();
            let mut decoded = Vec::new();
            for more in [&[][..], &bytes[split..]] {
                buffer.extend_from_slice(more);
                while let Some((consumed, d)) = decoder.decode(&buffer).unwrap() {
                    buffer.drain(..consumed);
                    if let Decoded::Message(m) = d {
                        decoded.push(m);
                    }
                }
            }
            assert_eq!(decoded, messages, "split at {split}");
        }
    }

    /// ffmpeg's and OBS's way: a message whose timestamp needs the extended
    /// field repeats it on every type 3 continuation chunk. Written by hand
    /// so the test does not depend on our own encoder.
    #[test]
    fn reads_extended_timestamps_on_continuation_chunks() {
        let mut bytes = vec![0x04]; // type 0, csid 4
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]); // timestamp: extended
        bytes.extend_from_slice(&[0, 0, 200, 8]); // length 200, audio
        bytes.extend_from_slice(&1u32.to_le_bytes()); // stream 1
        bytes.extend_from_slice(&0x0123_4567u32.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xaa, 128));
        bytes.push(0xc4); // type 3, csid 4
        bytes.extend_from_slice(&0x0123_4567u32.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xbb, 72));
        let messages = decode_in_pieces(&bytes, 128, 7).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].timestamp, 0x0123_4567);
        assert_eq!(&messages[0].payload[126..130], &[0xaa, 0xaa, 0xbb, 0xbb]);
    }

    #[test]
    fn rejects_absurd_chunk_sizes() {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
        assert!(matches!(
            decoder.set_chunk_size(0),
            Err(RtmpError::Malformed { .. })
        ));
        assert!(matches!(
            decoder.set_chunk_size(0x8000_0000),
            Err(RtmpError::Malformed { .. })
        ));
        assert!(matches!(
            decoder.set_chunk_size(MAX_CHUNK_SIZE + 1),
            Err(RtmpError::Limit { .. })
        ));
        decoder.set_chunk_size(MAX_CHUNK_SIZE).unwrap();
        assert_eq!(decoder.chunk_size(), MAX_CHUNK_SIZE);
    }

    #[test]
    fn rejects_an_oversize_message_at_its_header() {
        let limits = ChunkLimits::default();
        let mut decoder = ChunkDecoder::new(limits, Some(message_type::VIDEO));
        // Only the 12 header bytes are present: the bound applies before any
        // payload is buffered.
        let header = [0x04, 0, 0, 0, 0x10, 0x00, 0x01, 8, 1, 0, 0, 0];
        let error = decoder.decode(&header).unwrap_err();
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");
        assert_eq!(error.context().chunk_stream_id, Some(4));
        assert_eq!(error.context().message_type, Some(8));
        // The same length is fine for a discarded video message.
        let video = [0x04, 0, 0, 0, 0x10, 0x00, 0x01, 9, 1, 0, 0, 0];
        assert_eq!(decoder.decode(&video).unwrap(), None);
    }

    #[test]
    fn discards_video_without_buffering() {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), Some(message_type::VIDEO));
        let bytes = encode_all(&[message(6, 40, 9, 1, 1000)], 128);
        let mut rest = &bytes[..];
        let mut last = None;
        while let Some((consumed, decoded)) = decoder.decode(rest).unwrap() {
            rest = &rest[consumed..];
            last = Some(decoded);
        }
        assert_eq!(
            last,
            Some(Decoded::Discarded {
                chunk_stream_id: 6,
                type_id: 9,
                length: 1000
            })
        );
    }

    #[test]
    fn rejects_headers_that_refer_to_nothing_or_interrupt_a_message() {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), None);
        assert!(decoder.decode(&[0x44, 0, 0, 0, 0, 0, 1, 8]).is_err());
        let bytes = encode_all(&[message(4, 0, 8, 1, 200)], 128);
        let (consumed, decoded) = decoder.decode(&bytes).unwrap().unwrap();
        assert_eq!(decoded, Decoded::Partial);
        assert!(decoder.has_partial_message());
        // A type 0 header on csid 4 while 72 bytes are still owed.
        let error = decoder.decode(&bytes[..consumed]).unwrap_err();
        assert!(matches!(error, RtmpError::Malformed { .. }), "{error}");
        decoder.abort(4);
        assert!(!decoder.has_partial_message());
    }

    #[test]
    fn bounds_the_number_of_chunk_streams() {
        let limits = ChunkLimits {
            max_chunk_streams: 3,
            ..ChunkLimits::default()
        };
        let messages: Vec<_> = (10..14).map(|csid| message(csid, 0, 8, 1, 4)).collect();
        let bytes = encode_all(&messages, 128);
        let mut decoder = ChunkDecoder::new(limits, None);
        let mut rest = &bytes[..];
        let error = loop {
            match decoder.decode(rest) {
                Ok(Some((consumed, _))) => rest = &rest[consumed..],
                Ok(None) => panic!("all chunk streams accepted"),
                Err(error) => break error,
            }
        };
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");
    }

    #[test]
    fn survives_random_and_mutated_input() {
        let valid = encode_all(&sample_messages(), 128);
        let mut inputs = prop::random_inputs(21, 500, 2000);
        inputs.extend(prop::mutations(22, &valid, 500));
        for input in inputs {
            fuzz_one(&input);
        }
    }

    /// What the fuzz target does: decode every chunk, honouring Set Chunk
    /// Size and Abort as a session would.
    pub(crate) fn fuzz_one(input: &[u8]) {
        let mut decoder = ChunkDecoder::new(ChunkLimits::default(), Some(message_type::VIDEO));
        let mut rest = input;
        while let Ok(Some((consumed, decoded))) = decoder.decode(rest) {
            assert!(consumed > 0 && consumed <= rest.len());
            rest = &rest[consumed..];
            if let Decoded::Message(m) = decoded
                && m.payload.len() >= 4
            {
                let value =
                    u32::from_be_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
                match m.type_id {
                    message_type::SET_CHUNK_SIZE if decoder.set_chunk_size(value).is_err() => {
                        return;
                    }
                    message_type::ABORT => decoder.abort(value),
                    _ => {}
                }
            }
        }
    }
}
