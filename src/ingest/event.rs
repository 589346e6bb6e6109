//! What ingest hands on: the events of host sessions.
//!
//! Every ingest protocol (RTMP, WHIP) reports its publishers the same way:
//! a session is [`Connected`](IngestEvent::Connected), delivers decoded
//! [`Audio`](IngestEvent::Audio) stamped with the host's own timestamps and
//! the program time of arrival, and is
//! [`Disconnected`](IngestEvent::Disconnected). Whoever consumes these (the
//! studio) may ask for a session to end with a [`Close`], which the
//! protocol that owns the session carries out. A session that can play
//! audio back to its host says so ([`ReturnOpened`](IngestEvent::ReturnOpened))
//! and is handed its host's return feed as [`ReturnPacket`]s. Ingest knows nothing of what
//! happens to the audio next.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::audio::decode::Decoded;
use crate::time::ProgramTime;

/// Identifies one ingest session (an RTMP connection, a WHIP session) for
/// the life of the broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// A new id, unique in this process: ingest protocols draw from one
    /// sequence so the studio never confuses their sessions.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

/// What ingest reports to the studio.
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// A publisher for `host` was accepted. Replaces the host's current
    /// session, if any.
    Connected {
        /// The host's name (from its key).
        host: String,
        /// The new session.
        session: SessionId,
        /// The ingest protocol, e.g. "rtmp".
        protocol: &'static str,
        /// The publisher's address, for the control API.
        peer: String,
    },
    /// Decoded audio of a session.
    Audio {
        /// The session.
        session: SessionId,
        /// The packet's host timestamp in ms, unwrapped.
        host_ts_ms: i64,
        /// The samples at the publisher's rate and channels.
        audio: Decoded,
        /// Program time at which the packet arrived.
        arrival: ProgramTime,
    },
    /// The session ended (the publisher left, broke the protocol, or was
    /// closed by the studio).
    Disconnected {
        /// The session.
        session: SessionId,
        /// Why, for logs.
        reason: String,
    },
    /// A session can take `host`'s return feed (the program without the
    /// host, [`ReturnPacket`]s addressed to `listener`): a WHIP publisher
    /// that also receives, or a return-only session of the host.
    ReturnOpened {
        /// The host whose return it is (from the key).
        host: String,
        /// Where to send it: the session's id.
        listener: SessionId,
    },
    /// A session that took a return feed has ended.
    ReturnClosed {
        /// The session.
        listener: SessionId,
    },
    /// The producer's talkback: a session whose audio goes to hosts'
    /// returns (`to`'s, or every host's), never to the program. Its audio
    /// and its end are reported as a host session's are.
    TalkbackConnected {
        /// The new session.
        session: SessionId,
        /// The host talked to; `None`: every host.
        to: Option<String>,
        /// The producer's address, for logs.
        peer: String,
    },
}

/// One Opus packet (20 ms) of a host's return feed, for the ingest session
/// that listens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPacket {
    /// The listening session.
    pub listener: SessionId,
    /// The RTP timestamp (RFC 7587 §4.1: 48 kHz), the program time of the
    /// packet's first sample, wrapped: every return of a broadcast shares
    /// it, so a listener moved from one shared encode to another keeps a
    /// continuous timeline.
    pub rtp_ts: u32,
    /// The Opus packet.
    pub payload: bytes::Bytes,
}

/// A session the consumer of ingest events wants closed, with the reason to log and send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The session.
    pub session: SessionId,
    /// Why.
    pub reason: String,
}
