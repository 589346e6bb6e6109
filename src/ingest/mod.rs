//! Ingest: the ways a host's audio enters onair.
//!
//! Each protocol is a pure state machine (bytes in; events and bytes to send
//! out) with a thin tokio driver that owns the sockets. Ingest turns a
//! publisher's stream into [`IngestEvent`]s: a session connected, its audio
//! decoded to PCM and stamped with the host's timestamp and the program
//! time of arrival, the session gone. It knows nothing of mixing, HLS or
//! the store; whoever consumes the events (the studio) may ask for a session
//! to end with a [`Close`].
//!
//! - [`rtmp`]: RTMP 1.0 publishers (ffmpeg, OBS) sending AAC or MP3 in FLV
//!   audio tags.
//! - [`whip`]: browsers and other WebRTC publishers over WHIP (RFC 9725),
//!   Opus over RTP.
//! - [`keys`]: the host keys both protocols authenticate with.
//! - [`event`]: the events and the close request.

pub mod event;
pub mod keys;
pub mod rtmp;
pub mod whip;

pub use event::{Close, IngestEvent, ReturnPacket, SessionId};
