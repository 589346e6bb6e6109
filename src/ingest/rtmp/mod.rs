//! RTMP ingest: the server side of RTMP 1.0 (Adobe, December 2012) for
//! publishers that send audio as FLV audio tags (Adobe FLV and F4V file
//! format specification 10.1, E.4.2.1 AUDIODATA).
//!
//! The layers follow the spec, bottom up:
//! - [`handshake`]: C0/C1/C2 against S0/S1/S2 (§5.2), the simple handshake.
//! - [`chunk`]: chunk streams (§5.3): headers of type 0 to 3, extended
//!   timestamps, reassembly of messages, and the encoder for what we send.
//! - [`amf0`]: the AMF0 values that commands and metadata are written in.
//! - [`flv`]: FLV audio tags: AAC (AudioSpecificConfig and raw frames) and MP3.
//! - [`session`]: the protocol state machine for one connection: protocol
//!   control, the command flow ffmpeg and OBS expect, audio events.
//! - [`server`]: the driver: a tokio accept loop feeding one [`Session`]
//!   per connection, with the table of open connections.
//! - [`bridge`]: the broadcast's RTMP ingest: the authorizer built from the
//!   host keys and the bridge task that decodes each publisher's audio and
//!   turns session events into [`IngestEvent`](crate::ingest::IngestEvent)s.
//!
//! Only `server` and `bridge` do IO (tokio); the rest is sans-IO.
//!
//! Contract: every parser here is sans-IO. It takes the bytes received so far
//! and either consumes a whole unit or consumes nothing (incomplete input is
//! `Ok(None)`); it never indexes peer bytes without a length check and never
//! panics on any input. Every size the peer chooses is bounded ([`Limits`]).
//! Errors are [`RtmpError`], whose variant tells the caller what to do and
//! whose [`ErrorContext`] locates the offending bytes in a capture.

pub mod amf0;
pub mod bridge;
pub mod chunk;
pub mod flv;
pub mod handshake;
pub mod server;
pub mod session;

use std::fmt;

pub use flv::{AudioCodec, AudioSpecificConfig};
pub use session::{CloseReason, Event, Limits, Metadata, Session, SessionConfig, SessionStats};

/// Where in a connection an error was found, precise enough to find the bytes
/// in a capture of what the peer sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorContext {
    /// Offset from the first byte the peer sent (handshake included) of the
    /// unit (handshake packet, chunk) being parsed.
    pub offset: Option<u64>,
    /// Chunk stream id of the chunk or message.
    pub chunk_stream_id: Option<u32>,
    /// RTMP message type id (§5.4, §7.1).
    pub message_type: Option<u8>,
}

impl fmt::Display for ErrorContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(offset) = self.offset {
            parts.push(format!("byte {offset}"));
        }
        if let Some(csid) = self.chunk_stream_id {
            parts.push(format!("chunk stream {csid}"));
        }
        if let Some(type_id) = self.message_type {
            parts.push(format!(
                "message type {type_id} ({})",
                chunk::message_type::name(type_id)
            ));
        }
        if parts.is_empty() {
            f.write_str("no position")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// What went wrong in an RTMP connection. The variant says what to do; every
/// one of them ends the session that produced it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    /// The peer broke the protocol (bad handshake, chunk or AMF0). End the
    /// session: nothing after this point can be parsed reliably.
    #[error("malformed RTMP input at {context}: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
        /// Where.
        context: ErrorContext,
    },
    /// The peer exceeded a bound (message length, chunk size, buffered
    /// bytes, chunk streams). End the session: it is abuse or a broken client.
    #[error("RTMP limit exceeded at {context}: {reason}")]
    Limit {
        /// Which bound, and the value the peer asked for.
        reason: String,
        /// Where.
        context: ErrorContext,
    },
    /// Valid input onair does not handle (a codec, an AAC profile, playback).
    /// Reject the publisher with this reason.
    #[error("unsupported RTMP input at {context}: {reason}")]
    Unsupported {
        /// What is not supported.
        reason: String,
        /// Where.
        context: ErrorContext,
    },
}

impl RtmpError {
    /// A [`RtmpError::Malformed`] without a position yet.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::Malformed {
            reason: reason.into(),
            context: ErrorContext::default(),
        }
    }

    /// A [`RtmpError::Limit`] without a position yet.
    pub fn limit(reason: impl Into<String>) -> Self {
        Self::Limit {
            reason: reason.into(),
            context: ErrorContext::default(),
        }
    }

    /// A [`RtmpError::Unsupported`] without a position yet.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::Unsupported {
            reason: reason.into(),
            context: ErrorContext::default(),
        }
    }

    /// The position carried by the error.
    pub fn context(&self) -> &ErrorContext {
        match self {
            Self::Malformed { context, .. }
            | Self::Limit { context, .. }
            | Self::Unsupported { context, .. } => context,
        }
    }

    fn context_mut(&mut self) -> &mut ErrorContext {
        match self {
            Self::Malformed { context, .. }
            | Self::Limit { context, .. }
            | Self::Unsupported { context, .. } => context,
        }
    }

    /// Sets the connection byte offset unless an inner layer already did.
    pub fn at_offset(mut self, offset: u64) -> Self {
        self.context_mut().offset.get_or_insert(offset);
        self
    }

    /// Sets the chunk stream and message type unless already set.
    pub fn in_message(mut self, chunk_stream_id: u32, message_type: u8) -> Self {
        let context = self.context_mut();
        context.chunk_stream_id.get_or_insert(chunk_stream_id);
        context.message_type.get_or_insert(message_type);
        self
    }
}

/// A bounds-checked reader over peer bytes. Every read returns `None` when
/// the input is too short, so callers decide whether that means "incomplete"
/// (wait for more) or "truncated" (malformed).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }

    pub(crate) fn u16_be(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24_be(&mut self) -> Option<u32> {
        self.bytes(3)
            .map(|b| u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    pub(crate) fn u32_be(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32_le(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A jump between consecutive RTMP timestamps larger than the
/// [`Timeline`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "RTMP timestamp jumped from {from_ms} ms to {to_ms} ms ({jump_ms} ms, bound {bound_ms} ms)"
)]
pub struct TimelineJump {
    /// The last accepted timestamp, unwrapped.
    pub from_ms: i64,
    /// The rejected timestamp as received (32-bit).
    pub to_ms: u32,
    /// The signed distance the timestamp would have moved.
    pub jump_ms: i64,
    /// The configured bound.
    pub bound_ms: u32,
}

/// Unwraps RTMP's 32-bit millisecond timestamps (which wrap after about 49.7
/// days) into a running `i64`, and rejects absurd jumps.
///
/// Each timestamp is read as the signed 32-bit distance from the previous
/// one, so a wrap from `u32::MAX` to `0` is +1 ms and a small step back is a
/// small negative move (publishers interleave audio and video with slightly
/// out-of-order stamps). A distance beyond `max_jump_ms` either way is
/// reported and not taken: the timeline stays where it was.
#[derive(Debug, Clone)]
pub struct Timeline {
    last: Option<(u32, i64)>,
    max_jump_ms: u32,
}

impl Timeline {
    /// The default bound on a jump between consecutive timestamps: 10 s. An
    /// encoder stalls for far less before a publisher gives up.
    pub const DEFAULT_MAX_JUMP_MS: u32 = 10_000;

    /// A timeline whose first timestamp maps to itself (as an i64).
    pub fn new(max_jump_ms: u32) -> Self {
        Self {
            last: None,
            max_jump_ms,
        }
    }

    /// Unwraps `timestamp_ms`.
    pub fn unwrap(&mut self, timestamp_ms: u32) -> Result<i64, TimelineJump> {
        let Some((last_raw, last)) = self.last else {
            self.last = Some((timestamp_ms, i64::from(timestamp_ms)));
            return Ok(i64::from(timestamp_ms));
        };
        let jump = i64::from(timestamp_ms.wrapping_sub(last_raw) as i32);
        if jump.unsigned_abs() > u64::from(self.max_jump_ms) {
            return Err(TimelineJump {
                from_ms: last,
                to_ms: timestamp_ms,
                jump_ms: jump,
                bound_ms: self.max_jump_ms,
            });
        }
        let unwrapped = last + jump;
        self.last = Some((timestamp_ms, unwrapped));
        Ok(unwrapped)
    }
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_JUMP_MS)
    }
}

/// A small deterministic generator (xorshift64*) for the handshake's filler
/// bytes and for the property tests: RTMP's simple handshake needs bytes that
/// look random, not secrecy, and a sans-IO core must not read the OS.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        // A zero state would stay zero forever.
        Self(seed | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Property-test support: random and mutated byte strings, and a check that
/// a parser survives every split of a valid input.
#[cfg(test)]
pub(crate) mod prop {
    use super::XorShift;

    /// Random byte strings of length `0..max_len`, `count` of them.
    pub(crate) fn random_inputs(seed: u64, count: usize, max_len: usize) -> Vec<Vec<u8>> {
        let mut rng = XorShift::new(seed);
        (0..count)
            .map(|_| {
                let len = (rng.next_u64() as usize) % max_len;
                let mut bytes = vec![0; len];
                rng.fill(&mut bytes);
                bytes
            })
            .collect()
    }

    /// `count` copies of `valid`, each with a few bytes overwritten, flipped,
    /// inserted or cut, the way a fuzzer mutates a corpus entry.
    pub(crate) fn mutations(seed: u64, valid: &[u8], count: usize) -> Vec<Vec<u8>> {
        let mut rng = XorShift::new(seed);
        (0..count)
            .map(|_| {
                let mut bytes = valid.to_vec();
                for _ in 0..1 + rng.next_u64() % 4 {
                    let at = if bytes.is_empty() {
                        0
                    } else {
                        (rng.next_u64() as usize) % bytes.len()
                    };
                    match rng.next_u64() % 5 {
                        0 if !bytes.is_empty() => bytes[at] = rng.next_u64() as u8,
                        1 if !bytes.is_empty() => bytes[at] ^= 1 << (rng.next_u64() % 8),
                        2 if !bytes.is_empty() => bytes[at] = [0x00, 0xff, 0x7f, 0x80][at % 4],
                        3 => bytes.insert(at, rng.next_u64() as u8),
                        _ => bytes.truncate(at),
                    }
                }
                bytes
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_unwraps_across_the_32_bit_wrap() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.unwrap(u32::MAX - 10), Ok(i64::from(u32::MAX) - 10));
        assert_eq!(timeline.unwrap(12), Ok(i64::from(u32::MAX) + 13));
        assert_eq!(timeline.unwrap(35), Ok(i64::from(u32::MAX) + 36));
    }

    #[test]
    fn timeline_allows_small_steps_back_and_rejects_absurd_jumps() {
        let mut timeline = Timeline::new(1_000);
        assert_eq!(timeline.unwrap(5_000), Ok(5_000));
        assert_eq!(timeline.unwrap(4_990), Ok(4_990));
        let jump = timeline.unwrap(3_000_000).unwrap_err();
        assert_eq!(jump.from_ms, 4_990);
        assert_eq!(jump.jump_ms, 3_000_000 - 4_990);
        // A rejected stamp does not move the timeline.
        assert_eq!(timeline.unwrap(5_013), Ok(5_013));
        assert!(timeline.unwrap(5_013 - 1_001).is_err());
    }

    #[test]
    fn errors_keep_the_innermost_context() {
        let error = RtmpError::malformed("bad")
            .in_message(4, 8)
            .at_offset(100)
            .at_offset(7)
            .in_message(9, 20);
        assert_eq!(
            error.context(),
            &ErrorContext {
                offset: Some(100),
                chunk_stream_id: Some(4),
                message_type: Some(8),
            }
        );
        assert_eq!(
            error.to_string(),
            "malformed RTMP input at byte 100, chunk stream 4, message type 8 (audio): bad"
        );
    }
}
