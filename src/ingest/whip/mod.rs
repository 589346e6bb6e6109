//! WHIP ingest (RFC 9725): browser hosts publishing Opus over WebRTC.
//!
//! The WebRTC stack (str0m) and what needs it ([`endpoint`] with its HTTP
//! resource and bridge, [`rtc`]) come
//! with the `webrtc` Cargo feature; the offer check, the jitter buffer and
//! the host page do not need it.

#[cfg(feature = "webrtc")]
mod bridge;
#[cfg(feature = "webrtc")]
pub mod endpoint;
pub mod ice_servers;
#[cfg(feature = "webrtc")]
mod ice_tcp;
pub mod jitter;
pub mod page;
#[cfg(feature = "webrtc")]
mod resource;
pub mod return_page;
#[cfg(feature = "webrtc")]
pub mod rtc;
pub mod sdp;
#[cfg(feature = "webrtc")]
mod sessions;

/// The last path segment of the WHIP endpoint (`/{stream}/whip`).
pub const WHIP_SEGMENT: &str = "whip";

/// The last path segment of the WHEP endpoint of hosts' return feeds
/// (`/{stream}/whep`): a host that publishes without a return path (RTMP)
/// hears its return through it, with its key.
pub const WHEP_SEGMENT: &str = "whep";

/// The last path segment of the producer's talkback endpoint
/// (`/{stream}/talkback`): WHIP with the admin token, heard on hosts'
/// returns only.
pub const TALKBACK_SEGMENT: &str = "talkback";
