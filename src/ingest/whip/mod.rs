//! WHIP ingest (RFC 9725): browser hosts publishing Opus over WebRTC.

pub mod endpoint;
pub mod jitter;
pub mod page;
pub mod rtc;
pub mod sdp;
mod sessions;
