//! Ingest: the ways a host's audio enters onair.
//!
//! Each protocol is a pure state machine (bytes in; events and bytes to send
//! out) with a thin tokio driver that owns the sockets. Ingest knows nothing
//! about mixing or packaging: it hands decoded-protocol events (codec
//! configuration, timestamped compressed frames) to whoever wires it up.
//!
//! - [`rtmp`]: RTMP 1.0 publishers (ffmpeg, OBS) sending AAC or MP3 in FLV
//!   audio tags.

pub mod keys;
pub mod rtmp;
pub mod whip;
