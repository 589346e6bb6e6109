//! Typed LL-HLS media playlist: the model, and the text form of its program
//! dates.
//!
//! The model covers the tags onair writes (RFC 8216bis-16 section 4.4 with
//! the Low-Latency extensions): the header tags (4.4.1 to 4.4.3), one entry
//! per complete Media Segment with its Partial Segments (4.4.4), the Partial
//! Segments of the segment still being produced, a preload hint, rendition
//! reports (4.4.5) and the end list. The work on it is split by direction:
//! - `render`: model to text ([`MediaPlaylist::render`]).
//! - `parse`: text to model ([`MediaPlaylist::parse`], [`ParseError`]).
//! - `delta`: Playlist Delta Updates ([`MediaPlaylist::delta`],
//!   RFC 8216bis 4.4.5.2 and 6.2.5.1).
//!
//! This module keeps what all three share: the types, the `EXT-X-VERSION`
//! a playlist needs (section 8), and `EXT-X-PROGRAM-DATE-TIME` (4.4.4.6) in
//! one place ([`format_pdt`], [`parse_pdt`] and `add_samples`), so that
//! whatever writes, reads or derives a program date (the packager, the
//! origin, the load tester) agrees on it to the millisecond.
//!
//! Contract:
//! - Durations are program samples at 48 kHz ([`crate::time::SAMPLE_RATE`]) and
//!   are written with [`crate::time::seconds_text`] (milliseconds, rounded up so
//!   a duration is never understated). The parser reads them back to the
//!   nearest sample, so `parse(render(p)) == p` holds whenever every duration is
//!   a whole number of milliseconds (every multiple of 48 samples, which
//!   includes the default 320 ms parts and 1.92 s segments).
//! - `EXT-X-VERSION` is not stored: [`MediaPlaylist::render`] writes the lowest
//!   version the content needs ([`MediaPlaylist::version`], RFC 8216bis
//!   section 8) and [`MediaPlaylist::parse`] rejects a playlist that declares
//!   less than its content needs, as section 4 asks of clients.
//! - The parser never panics, whatever the input; every error names the line.
//!   Unknown tags and comments are ignored (RFC 8216bis 4.1), so a playlist
//!   written by another packager parses as far as this model reaches.
//! - [`MediaPlaylist::render`] trusts its model: URIs are written verbatim, so
//!   a URI with a line break or a double quote breaks the text.
//!   [`crate::hls::rules::check`] reports such URIs.

mod delta;
mod parse;
mod render;

use chrono::{DateTime, Utc};

use crate::time::millis;

pub use parse::ParseError;

/// A date and time in UTC, as carried by `EXT-X-PROGRAM-DATE-TIME`.
///
/// Written by [`format_pdt`] with millisecond precision and a `Z` suffix;
/// [`parse_pdt`] truncates to the millisecond so a parsed playlist renders
/// back unchanged.
pub type ProgramDateTime = DateTime<Utc>;

/// A media playlist (RFC 8216bis 4.4), including the Low-Latency HLS tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    /// `EXT-X-TARGETDURATION` in whole seconds (4.4.3.1): every segment's
    /// duration, rounded to the nearest second, is at most this.
    pub target_duration: u64,
    /// `EXT-X-SERVER-CONTROL` (4.4.3.8), if the server offers any delivery
    /// directive.
    pub server_control: Option<ServerControl>,
    /// `EXT-X-PART-INF:PART-TARGET` in samples (4.4.3.7); present when the
    /// playlist lists Partial Segments.
    pub part_target: Option<u64>,
    /// `EXT-X-MEDIA-SEQUENCE` (4.4.3.2): the Media Sequence Number of the first
    /// segment, counting skipped segments of a delta update.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (4.4.3.3). Always written, even when 0.
    pub discontinuity_sequence: u64,
    /// `EXT-X-PLAYLIST-TYPE` (4.4.3.5).
    pub playlist_type: Option<PlaylistType>,
    /// `EXT-X-INDEPENDENT-SEGMENTS` (4.4.2.1).
    pub independent_segments: bool,
    /// `EXT-X-SKIP` (4.4.5.2): present only in a Playlist Delta Update, where
    /// it stands for the oldest segments.
    pub skip: Option<Skip>,
    /// Complete Media Segments, oldest first. The first one has Media
    /// Sequence Number `media_sequence + skip.skipped_segments`.
    pub segments: Vec<Segment>,
    /// The segment being produced: tags and Partial Segments written after
    /// the last complete segment. Its Media Sequence Number follows the last
    /// complete segment's.
    pub open: Option<OpenSegment>,
    /// `EXT-X-PRELOAD-HINT` (4.4.5.3).
    pub preload_hint: Option<PreloadHint>,
    /// `EXT-X-RENDITION-REPORT` tags (4.4.5.4), one per other rendition.
    pub rendition_reports: Vec<RenditionReport>,
    /// `EXT-X-ENDLIST` (4.4.3.4): no segment will ever be added.
    pub end_list: bool,
}

/// `EXT-X-SERVER-CONTROL` attributes (RFC 8216bis 4.4.3.8). Times in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerControl {
    /// `CAN-BLOCK-RELOAD=YES`: the server answers `_HLS_msn`/`_HLS_part`.
    pub can_block_reload: bool,
    /// `CAN-SKIP-UNTIL`: the Skip Boundary of delta updates; at least six
    /// target durations.
    pub can_skip_until: Option<u64>,
    /// `CAN-SKIP-DATERANGES=YES`: delta updates may also skip
    /// `EXT-X-DATERANGE` tags (`_HLS_skip=v2`). Only meaningful with
    /// `can_skip_until`.
    pub can_skip_dateranges: bool,
    /// `HOLD-BACK`: the recommended live distance for clients that do not
    /// use parts; at least three target durations.
    pub hold_back: Option<u64>,
    /// `PART-HOLD-BACK`: the recommended live distance when playing parts;
    /// at least twice the part target (onair uses three times).
    pub part_hold_back: Option<u64>,
}

/// `EXT-X-PLAYLIST-TYPE` values (RFC 8216bis 4.4.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    /// Segments are only ever appended; `EXT-X-ENDLIST` may follow.
    Event,
    /// The playlist never changes.
    Vod,
}

/// `EXT-X-SKIP` (RFC 8216bis 4.4.5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// `SKIPPED-SEGMENTS`: how many of the oldest segments this tag replaces.
    pub skipped_segments: u64,
    /// `RECENTLY-REMOVED-DATERANGES`: present (possibly empty) in a delta
    /// update that also skips `EXT-X-DATERANGE` tags (`_HLS_skip=v2`).
    pub recently_removed_dateranges: Option<Vec<String>>,
}

/// `EXT-X-MAP` (RFC 8216bis 4.4.4.5): the initialization section that applies
/// to this and every following segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    /// `URI` of the initialization section (`init.mp4`).
    pub uri: String,
}

/// A complete Media Segment and the tags applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `EXT-X-DISCONTINUITY` (4.4.4.3) before this segment.
    pub discontinuity: bool,
    /// `EXT-X-MAP` written before this segment.
    pub map: Option<Map>,
    /// `EXT-X-PROGRAM-DATE-TIME` (4.4.4.6) of the segment's first sample.
    pub program_date_time: Option<ProgramDateTime>,
    /// The segment's Partial Segments, listed while they are recent
    /// (4.4.4.9); empty once they have aged out of the playlist.
    pub parts: Vec<Part>,
    /// `EXT-X-GAP` (4.4.4.7): the segment is missing; clients must not load it.
    pub gap: bool,
    /// `EXTINF` duration in samples (4.4.4.1).
    pub duration: u64,
    /// The segment URI line.
    pub uri: String,
}

/// The segment still being produced: its tags and the parts completed so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenSegment {
    /// `EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
    /// `EXT-X-MAP` written before this segment.
    pub map: Option<Map>,
    /// `EXT-X-PROGRAM-DATE-TIME` of the segment's first sample.
    pub program_date_time: Option<ProgramDateTime>,
    /// Partial Segments completed so far.
    pub parts: Vec<Part>,
}

/// `EXT-X-PART` (RFC 8216bis 4.4.4.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `DURATION` in samples.
    pub duration: u64,
    /// `URI` of the part.
    pub uri: String,
    /// `INDEPENDENT=YES`: the part starts with an independent frame (every
    /// audio frame of onair's codecs is one).
    pub independent: bool,
    /// `GAP=YES`: the part is missing.
    pub gap: bool,
}

/// `TYPE` of an `EXT-X-PRELOAD-HINT` (RFC 8216bis 4.4.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintType {
    /// The next Partial Segment.
    Part,
    /// The next initialization section.
    Map,
}

/// `EXT-X-PRELOAD-HINT` (RFC 8216bis 4.4.5.3): a resource the client may
/// request before it exists; the origin holds the request until it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloadHint {
    /// `TYPE`.
    pub hint_type: HintType,
    /// `URI` of the hinted resource.
    pub uri: String,
}

/// `EXT-X-RENDITION-REPORT` (RFC 8216bis 4.4.5.4): where another rendition's
/// playlist stands, so a client can switch with one blocking request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// `URI` of the other rendition's media playlist, relative to this one.
    pub uri: String,
    /// `LAST-MSN`: Media Sequence Number of its last (possibly partial) segment.
    pub last_msn: u64,
    /// `LAST-PART`: index of its last Partial Segment, if it lists parts.
    pub last_part: Option<u32>,
}

impl MediaPlaylist {
    /// The lowest `EXT-X-VERSION` this playlist's content needs (RFC 8216bis
    /// section 8): 3 for decimal `EXTINF` durations (always written), 6 for
    /// `EXT-X-MAP` outside an I-frame playlist, 9 for `EXT-X-SKIP`, 10 for an
    /// `EXT-X-SKIP` that also replaces `EXT-X-DATERANGE` tags.
    pub fn version(&self) -> u64 {
        let has_map = self.segments.iter().any(|s| s.map.is_some())
            || self.open.as_ref().is_some_and(|o| o.map.is_some());
        match &self.skip {
            Some(Skip {
                recently_removed_dateranges: Some(_),
                ..
            }) => 10,
            Some(_) => 9,
            None if has_map => 6,
            None => 3,
        }
    }

    /// Media Sequence Number of the first listed (not skipped) segment.
    pub fn first_listed_msn(&self) -> u64 {
        let skipped = self.skip.as_ref().map_or(0, |s| s.skipped_segments);
        self.media_sequence.saturating_add(skipped)
    }

    /// Media Sequence Number of the open segment (the one after the last
    /// complete segment).
    pub fn open_msn(&self) -> u64 {
        self.first_listed_msn()
            .saturating_add(self.segments.len() as u64)
    }
}

/// Formats an `EXT-X-PROGRAM-DATE-TIME` value (RFC 8216bis 4.4.4.6), e.g.
/// `2026-11-28T04:12:53.123Z`.
///
/// ISO 8601 / RFC 3339 as the section requires, always in UTC with a `Z`, and
/// with exactly three fractional digits: millisecond precision is what
/// players use to align renditions, and a fixed form means equal dates are
/// equal text. Anything finer than a millisecond is truncated, which is what
/// [`parse_pdt`] does too, so the two round-trip.
pub fn format_pdt(t: ProgramDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses an `EXT-X-PROGRAM-DATE-TIME` value (RFC 8216bis 4.4.4.6): an
/// RFC 3339 date-time with any offset, converted to UTC and truncated to the
/// millisecond. `None` if the text is not such a date.
///
/// Other packagers write offsets and microseconds; truncating here means a
/// parsed date renders back with [`format_pdt`] as the same instant, and two
/// readers of one playlist compare dates at the precision it is written in.
pub fn parse_pdt(s: &str) -> Option<ProgramDateTime> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

/// `t` plus `samples` of program time, truncated to the millisecond; `None`
/// beyond chrono's range.
///
/// Dates are only ever written to the millisecond, so a date derived from
/// another (a delta update's first segment, the origin's hint deadline) is
/// kept at that precision too, and compares equal to the one the packager
/// wrote for the same sample.
pub(crate) fn add_samples(t: ProgramDateTime, samples: u64) -> Option<ProgramDateTime> {
    let ms = i64::try_from(millis(samples)).ok()?;
    t.checked_add_signed(chrono::TimeDelta::try_milliseconds(ms)?)
}

#[cfg(test)]
mod tests {
    //! Fixtures shared by the tests of the submodules, and the tests of what
    //! this module owns: the version a playlist needs and program dates.

    use super::*;

    pub(super) fn pdt(ms: i64) -> ProgramDateTime {
        DateTime::from_timestamp_millis(ms).expect("in range")
    }

    pub(super) fn part(msn: u64, i: u32, duration: u64) -> Part {
        Part {
            duration,
            uri: format!("{msn}.{i}.m4s"),
            independent: true,
            gap: false,
        }
    }

    /// A live playlist of `n` complete 1.92 s segments with parts on the last
    /// two, plus two parts of the open segment.
    pub(super) fn sample(n: u64) -> MediaPlaylist {
        let start_ms = 1_764_300_000_000i64;
        let segments = (0..n)
            .map(|i| Segment {
                discontinuity: false,
                map: (i == 0).then(|| Map {
                    uri: "init.mp4".into(),
                }),
                program_date_time: Some(pdt(start_ms + 1920 * i as i64)),
                parts: if i + 2 >= n {
                    (0..6).map(|p| part(10 + i, p, 15_360)).collect()
                } else {
                    Vec::new()
                },
                gap: false,
                duration: 92_160,
                uri: format!("{}.m4s", 10 + i),
            })
            .collect();
        MediaPlaylist {
            target_duration: 2,
            server_control: Some(ServerControl {
                can_block_reload: true,
                can_skip_until: Some(6 * 2 * 48_000),
                can_skip_dateranges: true,
                hold_back: Some(3 * 2 * 48_000),
                part_hold_back: Some(3 * 15_360),
            }),
            part_target: Some(15_360),
            media_sequence: 10,
            discontinuity_sequence: 0,
            playlist_type: None,
            independent_segments: true,
            skip: None,
            segments,
            open: Some(OpenSegment {
                discontinuity: false,
                map: None,
                program_date_time: Some(pdt(start_ms + 1920 * n as i64)),
                parts: vec![part(10 + n, 0, 15_360), part(10 + n, 1, 15_360)],
            }),
            preload_hint: Some(PreloadHint {
                hint_type: HintType::Part,
                uri: format!("{}.2.m4s", 10 + n),
            }),
            rendition_reports: vec![RenditionReport {
                uri: "../aac/live.m3u8".into(),
                last_msn: 10 + n,
                last_part: Some(1),
            }],
            end_list: false,
        }
    }

    #[test]
    fn version_follows_features() {
        let mut p = sample(3);
        assert_eq!(p.version(), 6);
        p.segments[0].map = None;
        assert_eq!(p.version(), 3);
        let d = sample(12).delta(12 * 48_000);
        assert_eq!(d.version(), 9);
        assert!(d.render().contains("#EXT-X-VERSION:9\n"));
        let d2 = sample(12).delta_v2(12 * 48_000);
        assert_eq!(d2.version(), 10);
        assert!(
            d2.render()
                .contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=5,RECENTLY-REMOVED-DATERANGES=\"\"\n")
        );
        assert_eq!(MediaPlaylist::parse(&d2.render()), Ok(d2));
    }

    #[test]
    fn program_dates_round_trip_to_the_millisecond() {
        // Every millisecond of a second, and dates either side of the ones
        // onair writes, come back as the same instant and the same text.
        let start_ms = 1_764_300_000_000i64;
        for ms in (0..1000).chain([-86_400_000, 4_102_444_800_000 - start_ms]) {
            let t = pdt(start_ms + ms);
            let text = format_pdt(t);
            assert_eq!(parse_pdt(&text), Some(t), "{text}");
            assert_eq!(parse_pdt(&text).map(format_pdt), Some(text));
        }
        assert_eq!(format_pdt(pdt(start_ms + 7)), "2025-11-28T03:20:00.007Z");
        // Finer precision is truncated, on both sides, to the same instant.
        let fine = DateTime::from_timestamp(1_764_300_000, 123_999_999).expect("in range");
        assert_eq!(format_pdt(fine), "2025-11-28T03:20:00.123Z");
        assert_eq!(
            parse_pdt("2025-11-28T03:20:00.123999999Z"),
            Some(pdt(start_ms + 123))
        );
        // Offsets are converted to UTC.
        assert_eq!(
            parse_pdt("2025-11-28T04:20:00.5+01:00"),
            Some(pdt(start_ms + 500))
        );
        for bad in ["", "2025-11-28", "2025-11-28T03:20:00", "yesterday"] {
            assert_eq!(parse_pdt(bad), None, "{bad:?}");
        }
    }
}
