//! Low-Latency HLS playlists (RFC 8216bis-16 with its Low-Latency extensions).
//!
//! Pure code, no IO:
//! - [`playlist`]: a typed media playlist model with a writer, a parser that
//!   never panics, and Playlist Delta Updates (`EXT-X-SKIP`); also the one
//!   text form of `EXT-X-PROGRAM-DATE-TIME` ([`format_pdt`], [`parse_pdt`]),
//!   which everything that writes or reads a program date uses.
//! - [`timeline`]: the state machine the packager drives with completed
//!   parts; it renders each rendition's media playlist and reports segments
//!   whose objects may be deleted.
//! - [`mod@multivariant`]: the multivariant playlist, via m3u8-rs.
//! - [`rules`]: conformance checks for tests and debug builds.
//!
//! Time is program samples at 48 kHz throughout ([`crate::time`]); text
//! durations are rendered with [`crate::time::seconds_text`].

pub mod multivariant;
pub mod playlist;
pub mod rules;
pub mod timeline;

pub use multivariant::{MultivariantError, Variant, multivariant};
pub(crate) use playlist::add_samples;
pub use playlist::{
    HintType, Map, MediaPlaylist, OpenSegment, ParseError, Part, PlaylistType, PreloadHint,
    ProgramDateTime, RenditionReport, Segment, ServerControl, Skip, format_pdt, parse_pdt,
};
pub use rules::{Violation, check, check_named};
pub use timeline::{
    ConfigError, EarlierSegment, ExpiredSegment, NamesError, PartId, RenditionNames, Timeline,
    TimelineConfig, TimelineError,
};
