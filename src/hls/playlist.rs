//! Typed LL-HLS media playlist: model, writer, parser and delta updates.
//!
//! The model covers the tags onair writes (RFC 8216bis-16 with the
//! Low-Latency extensions): the header tags, one entry per complete Media
//! Segment with its Partial Segments, the Partial Segments of the segment
//! still being produced, a preload hint, rendition reports and the end list.
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

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::time::{SAMPLE_RATE, seconds_text};

/// A date and time in UTC, as carried by `EXT-X-PROGRAM-DATE-TIME`.
///
/// Written with millisecond precision and a `Z` suffix; parsed values are
/// truncated to the millisecond so a parsed playlist renders back unchanged.
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

/// Why a playlist text was rejected. Every variant carries the 1-based line
/// number; the caller should treat the playlist as unusable (RFC 8216bis 4:
/// clients must fail to parse invalid playlists) and report the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first line is not `#EXTM3U` (4.3.1.1).
    #[error("line {line}: a playlist must start with #EXTM3U")]
    MissingHeader {
        /// Line number.
        line: usize,
    },
    /// A multivariant-only tag appeared: this is not a media playlist.
    #[error("line {line}: {tag} belongs in a multivariant playlist, not a media playlist")]
    NotMediaPlaylist {
        /// Line number.
        line: usize,
        /// The offending tag.
        tag: String,
    },
    /// A tag that may appear once appeared again.
    #[error("line {line}: {tag} appears more than once")]
    DuplicateTag {
        /// Line number of the repetition.
        line: usize,
        /// The repeated tag.
        tag: String,
    },
    /// A tag value or attribute could not be read.
    #[error("line {line}: invalid value {value:?} for {name}")]
    InvalidValue {
        /// Line number.
        line: usize,
        /// Tag or `TAG:ATTRIBUTE` name.
        name: String,
        /// The text that failed to parse.
        value: String,
    },
    /// A required attribute is missing.
    #[error("line {line}: {tag} lacks its {attribute} attribute")]
    MissingAttribute {
        /// Line number.
        line: usize,
        /// Tag name.
        tag: String,
        /// Missing attribute name.
        attribute: String,
    },
    /// A URI line came without an `EXTINF` before it (4.4.4.1).
    #[error("line {line}: segment URI without a preceding EXTINF")]
    UriWithoutExtinf {
        /// Line number.
        line: usize,
    },
    /// An `EXTINF` was not followed by its URI line.
    #[error("line {line}: EXTINF without a segment URI after it")]
    ExtinfWithoutUri {
        /// Line number of the `EXTINF`.
        line: usize,
    },
    /// `EXT-X-TARGETDURATION` is missing (it is required, 4.4.3.1).
    #[error("line {line}: the playlist has no EXT-X-TARGETDURATION")]
    MissingTargetDuration {
        /// Last line number of the playlist.
        line: usize,
    },
    /// The playlist uses features of a newer protocol version than it declares.
    #[error("line {line}: EXT-X-VERSION {declared} is below the {required} its tags require")]
    VersionTooLow {
        /// Line of `EXT-X-VERSION`, or 1 when it is absent.
        line: usize,
        /// Declared version (1 when absent).
        declared: u64,
        /// Version the content requires (RFC 8216bis section 8).
        required: u64,
    },
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

    /// Writes the playlist text. Tags come in the order Apple's LL-HLS
    /// examples use: header, segments (tags, parts, `EXTINF`, URI), the open
    /// segment's parts, preload hint, rendition reports, end list.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(256 + 128 * self.segments.len());
        // `write!` into a String cannot fail; the results are ignored.
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:{}", self.version());
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        if let Some(sc) = &self.server_control {
            let mut attrs = Vec::new();
            if sc.can_block_reload {
                attrs.push("CAN-BLOCK-RELOAD=YES".to_owned());
            }
            if let Some(v) = sc.can_skip_until {
                attrs.push(format!("CAN-SKIP-UNTIL={}", seconds_text(v)));
            }
            if sc.can_skip_dateranges {
                attrs.push("CAN-SKIP-DATERANGES=YES".to_owned());
            }
            if let Some(v) = sc.hold_back {
                attrs.push(format!("HOLD-BACK={}", seconds_text(v)));
            }
            if let Some(v) = sc.part_hold_back {
                attrs.push(format!("PART-HOLD-BACK={}", seconds_text(v)));
            }
            let _ = writeln!(out, "#EXT-X-SERVER-CONTROL:{}", attrs.join(","));
        }
        if let Some(pt) = self.part_target {
            let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", seconds_text(pt));
        }
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        match self.playlist_type {
            Some(PlaylistType::Event) => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            Some(PlaylistType::Vod) => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            None => {}
        }
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        if let Some(skip) = &self.skip {
            let _ = write!(
                out,
                "#EXT-X-SKIP:SKIPPED-SEGMENTS={}",
                skip.skipped_segments
            );
            if let Some(ids) = &skip.recently_removed_dateranges {
                let _ = write!(out, ",RECENTLY-REMOVED-DATERANGES=\"{}\"", ids.join("\t"));
            }
            out.push('\n');
        }
        for s in &self.segments {
            write_segment_tags(
                &mut out,
                s.discontinuity,
                s.map.as_ref(),
                s.program_date_time,
            );
            for p in &s.parts {
                write_part(&mut out, p);
            }
            if s.gap {
                out.push_str("#EXT-X-GAP\n");
            }
            let _ = writeln!(out, "#EXTINF:{},", seconds_text(s.duration));
            let _ = writeln!(out, "{}", s.uri);
        }
        if let Some(o) = &self.open {
            write_segment_tags(
                &mut out,
                o.discontinuity,
                o.map.as_ref(),
                o.program_date_time,
            );
            for p in &o.parts {
                write_part(&mut out, p);
            }
        }
        if let Some(h) = &self.preload_hint {
            let t = match h.hint_type {
                HintType::Part => "PART",
                HintType::Map => "MAP",
            };
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE={t},URI=\"{}\"", h.uri);
        }
        for r in &self.rendition_reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}",
                r.uri, r.last_msn
            );
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        if self.end_list {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// Parses a media playlist. Accepts everything [`render`](Self::render)
    /// writes and the standard tags listed in the module docs; ignores unknown
    /// tags and comments. Never panics.
    pub fn parse(text: &str) -> Result<MediaPlaylist, ParseError> {
        Parser::default().run(text)
    }

    /// A Playlist Delta Update (RFC 8216bis 6.2.5.1) for `_HLS_skip=YES`:
    /// the oldest complete segments that end at least `skip_until` samples
    /// before the end of the last complete segment are replaced by one
    /// `EXT-X-SKIP` tag.
    ///
    /// `skip_until` is normally the playlist's `CAN-SKIP-UNTIL`. The first
    /// remaining segment keeps what a client needs to decode it on its own:
    /// its `EXT-X-PROGRAM-DATE-TIME` (derived from the last skipped one when
    /// no discontinuity intervenes) and the `EXT-X-MAP` in force. When
    /// nothing is old enough to skip, the full playlist is returned, which a
    /// client must accept in answer to a skip request.
    pub fn delta(&self, skip_until: u64) -> MediaPlaylist {
        self.delta_with(skip_until, None)
    }

    /// The `_HLS_skip=v2` form of [`delta`](Self::delta): the update also
    /// skips `EXT-X-DATERANGE` tags. onair writes none, so the only difference
    /// is an empty `RECENTLY-REMOVED-DATERANGES` list (and version 10).
    pub fn delta_v2(&self, skip_until: u64) -> MediaPlaylist {
        self.delta_with(skip_until, Some(Vec::new()))
    }

    fn delta_with(&self, skip_until: u64, dateranges: Option<Vec<String>>) -> MediaPlaylist {
        let mut out = self.clone();
        // A delta of a delta is not a thing a server produces; answer with
        // the playlist as it is.
        if self.skip.is_some() {
            return out;
        }
        let total: u64 = self
            .segments
            .iter()
            .fold(0u64, |acc, s| acc.saturating_add(s.duration));
        let boundary = total.saturating_sub(skip_until);
        if skip_until == 0 || boundary == 0 {
            return out;
        }
        // Skip whole segments lying entirely before the Skip Boundary, and
        // always keep at least one segment.
        let mut end = 0u64;
        let mut skipped = 0usize;
        for s in &self.segments {
            end = end.saturating_add(s.duration);
            if end > boundary || skipped + 1 >= self.segments.len() {
                break;
            }
            skipped += 1;
        }
        if skipped == 0 {
            return out;
        }
        // The first remaining segment must stand alone: carry the last map
        // and derive its date from the last dated segment before it, unless a
        // discontinuity makes the date unknowable.
        let mut map: Option<Map> = None;
        let mut pdt: Option<ProgramDateTime> = None;
        for s in self.segments.iter().take(skipped) {
            if s.map.is_some() {
                map.clone_from(&s.map);
            }
            if s.discontinuity {
                pdt = None;
            }
            if s.program_date_time.is_some() {
                pdt = s.program_date_time;
            }
            pdt = pdt.and_then(|t| add_samples(t, s.duration));
        }
        let mut remaining = out.segments.split_off(skipped);
        if let Some(first) = remaining.first_mut() {
            if first.map.is_none() {
                first.map = map;
            }
            if first.program_date_time.is_none() && !first.discontinuity {
                first.program_date_time = pdt;
            }
        }
        out.segments = remaining;
        out.skip = Some(Skip {
            skipped_segments: skipped as u64,
            recently_removed_dateranges: dateranges,
        });
        out
    }
}

/// `t` plus `samples` of program time, truncated to the millisecond; `None`
/// beyond chrono's range.
pub(crate) fn add_samples(t: ProgramDateTime, samples: u64) -> Option<ProgramDateTime> {
    let ms = i64::try_from(crate::time::millis(samples)).ok()?;
    t.checked_add_signed(chrono::TimeDelta::try_milliseconds(ms)?)
}

fn write_segment_tags(
    out: &mut String,
    discontinuity: bool,
    map: Option<&Map>,
    pdt: Option<ProgramDateTime>,
) {
    if discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if let Some(m) = map {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", m.uri);
    }
    if let Some(t) = pdt {
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(t));
    }
}

fn write_part(out: &mut String, p: &Part) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={},URI=\"{}\"",
        seconds_text(p.duration),
        p.uri
    );
    if p.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    if p.gap {
        out.push_str(",GAP=YES");
    }
    out.push('\n');
}

/// `2026-11-28T04:12:53.123Z`: ISO 8601 / RFC 3339 as 4.4.4.6 requires, with
/// the millisecond precision players use to align renditions.
pub fn format_pdt(t: ProgramDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Reads an RFC 3339 date-time with any offset, truncated to the millisecond.
fn parse_pdt(s: &str) -> Option<ProgramDateTime> {
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

/// Converts a decimal-floating-point number of seconds (RFC 8216bis 4.2) to
/// samples at 48 kHz, rounded to the nearest sample, in exact integer
/// arithmetic. Rejects signs, exponents and values beyond `u64`.
pub(crate) fn parse_seconds(s: &str) -> Option<u64> {
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rate = u128::from(SAMPLE_RATE);
    let whole_samples = if whole.is_empty() {
        0
    } else {
        whole.parse::<u128>().ok()?.checked_mul(rate)?
    };
    // Nine fractional digits are far below a sample (20.8 us); more would only
    // risk overflow.
    let frac = frac.get(..frac.len().min(9)).unwrap_or("");
    let frac_samples = if frac.is_empty() {
        0
    } else {
        let digits = frac.parse::<u128>().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        (digits * rate + scale / 2) / scale
    };
    u64::try_from(whole_samples.checked_add(frac_samples)?).ok()
}

/// Splits an attribute list (RFC 8216bis 4.2) into name/value pairs. Quoted
/// values keep their quotes so the caller can tell a quoted-string from an
/// enumerated string. Returns `None` on an unterminated quote or a pair
/// without `=`.
fn attributes(list: &str) -> Option<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=')?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let close = quoted.find('"')?;
            let end = close + 2; // opening and closing quotes
            (after.get(..end)?, after.get(end..)?)
        } else {
            match after.find(',') {
                Some(i) => (after.get(..i)?, after.get(i..)?),
                None => (after, ""),
            }
        };
        out.push((name.trim(), value));
        rest = match next.strip_prefix(',') {
            Some(r) => r,
            None if next.is_empty() => next,
            None => return None,
        };
    }
    Some(out)
}

fn unquote(v: &str) -> Option<&str> {
    v.strip_prefix('"')?.strip_suffix('"')
}

/// Segment tags seen since the last URI line.
#[derive(Default)]
struct Pending {
    discontinuity: bool,
    map: Option<Map>,
    program_date_time: Option<ProgramDateTime>,
    parts: Vec<Part>,
    gap: bool,
    extinf: Option<(u64, usize)>,
    any: bool,
}

#[derive(Default)]
struct Parser {
    line: usize,
    version: Option<(u64, usize)>,
    target_duration: Option<u64>,
    server_control: Option<ServerControl>,
    part_target: Option<u64>,
    media_sequence: Option<u64>,
    discontinuity_sequence: Option<u64>,
    playlist_type: Option<PlaylistType>,
    independent_segments: bool,
    skip: Option<Skip>,
    segments: Vec<Segment>,
    pending: Pending,
    preload_hint: Option<PreloadHint>,
    rendition_reports: Vec<RenditionReport>,
    end_list: bool,
}

impl Parser {
    fn invalid(&self, name: &str, value: &str) -> ParseError {
        ParseError::InvalidValue {
            line: self.line,
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn duplicate(&self, tag: &str) -> ParseError {
        ParseError::DuplicateTag {
            line: self.line,
            tag: tag.to_owned(),
        }
    }

    fn missing(&self, tag: &str, attribute: &str) -> ParseError {
        ParseError::MissingAttribute {
            line: self.line,
            tag: tag.to_owned(),
            attribute: attribute.to_owned(),
        }
    }

    fn integer(&self, tag: &str, v: &str) -> Result<u64, ParseError> {
        // decimal-integer (4.2): digits only, no sign.
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.invalid(tag, v));
        }
        v.parse::<u64>().map_err(|_| self.invalid(tag, v))
    }

    fn seconds(&self, name: &str, v: &str) -> Result<u64, ParseError> {
        parse_seconds(v).ok_or_else(|| self.invalid(name, v))
    }

    fn attrs<'a>(&self, tag: &str, v: &'a str) -> Result<Vec<(&'a str, &'a str)>, ParseError> {
        attributes(v).ok_or_else(|| self.invalid(tag, v))
    }

    fn quoted<'a>(&self, tag: &str, name: &str, v: &'a str) -> Result<&'a str, ParseError> {
        unquote(v).ok_or_else(|| self.invalid(&format!("{tag}:{name}"), v))
    }

    fn yes(&self, tag: &str, name: &str, v: &str) -> Result<bool, ParseError> {
        match v {
            "YES" => Ok(true),
            "NO" => Ok(false),
            _ => Err(self.invalid(&format!("{tag}:{name}"), v)),
        }
    }

    fn run(mut self, text: &str) -> Result<MediaPlaylist, ParseError> {
        let mut saw_header = false;
        for (i, raw) in text.split('\n').enumerate() {
            self.line = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
            if !saw_header {
                // 4.3.1.1: the first line must be EXTM3U (a BOM is forbidden).
                if line != "#EXTM3U" {
                    return Err(ParseError::MissingHeader { line: self.line });
                }
                saw_header = true;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            if let Some(tag) = line.strip_prefix('#').filter(|t| t.starts_with("EXT")) {
                let (name, value) = match tag.split_once(':') {
                    Some((n, v)) => (n, v),
                    None => (tag, ""),
                };
                self.tag(name, value)?;
            } else if line.starts_with('#') {
                // A comment (4.1).
            } else {
                self.uri(line)?;
            }
        }
        if !saw_header {
            return Err(ParseError::MissingHeader { line: 1 });
        }
        self.finish()
    }

    fn tag(&mut self, name: &str, v: &str) -> Result<(), ParseError> {
        // `name` is the tag without its leading '#'.
        match name {
            "EXTM3U" => return Err(self.duplicate("EXTM3U")),
            "EXT-X-VERSION" => {
                if self.version.is_some() {
                    return Err(self.duplicate("EXT-X-VERSION"));
                }
                self.version = Some((self.integer("EXT-X-VERSION", v)?, self.line));
            }
            "EXT-X-TARGETDURATION" => {
                if self.target_duration.is_some() {
                    return Err(self.duplicate("EXT-X-TARGETDURATION"));
                }
                self.target_duration = Some(self.integer("EXT-X-TARGETDURATION", v)?);
            }
            "EXT-X-SERVER-CONTROL" => {
                const TAG: &str = "EXT-X-SERVER-CONTROL";
                if self.server_control.is_some() {
                    return Err(self.duplicate(TAG));
                }
                let mut sc = ServerControl::default();
                for (k, val) in self.attrs(TAG, v)? {
                    match k {
                        "CAN-BLOCK-RELOAD" => sc.can_block_reload = self.yes(TAG, k, val)?,
                        "CAN-SKIP-DATERANGES" => sc.can_skip_dateranges = self.yes(TAG, k, val)?,
                        "CAN-SKIP-UNTIL" => sc.can_skip_until = Some(self.seconds(k, val)?),
                        "HOLD-BACK" => sc.hold_back = Some(self.seconds(k, val)?),
                        "PART-HOLD-BACK" => sc.part_hold_back = Some(self.seconds(k, val)?),
                        _ => {}
                    }
                }
                self.server_control = Some(sc);
            }
            "EXT-X-PART-INF" => {
                const TAG: &str = "EXT-X-PART-INF";
                if self.part_target.is_some() {
                    return Err(self.duplicate(TAG));
                }
                let mut target = None;
                for (k, val) in self.attrs(TAG, v)? {
                    if k == "PART-TARGET" {
                        target = Some(self.seconds("EXT-X-PART-INF:PART-TARGET", val)?);
                    }
                }
                self.part_target = Some(target.ok_or_else(|| self.missing(TAG, "PART-TARGET"))?);
            }
            "EXT-X-MEDIA-SEQUENCE" => {
                if self.media_sequence.is_some() {
                    return Err(self.duplicate("EXT-X-MEDIA-SEQUENCE"));
                }
                self.media_sequence = Some(self.integer("EXT-X-MEDIA-SEQUENCE", v)?);
            }
            "EXT-X-DISCONTINUITY-SEQUENCE" => {
                if self.discontinuity_sequence.is_some() {
                    return Err(self.duplicate("EXT-X-DISCONTINUITY-SEQUENCE"));
                }
                self.discontinuity_sequence =
                    Some(self.integer("EXT-X-DISCONTINUITY-SEQUENCE", v)?);
            }
            "EXT-X-PLAYLIST-TYPE" => {
                if self.playlist_type.is_some() {
                    return Err(self.duplicate("EXT-X-PLAYLIST-TYPE"));
                }
                self.playlist_type = Some(match v {
                    "EVENT" => PlaylistType::Event,
                    "VOD" => PlaylistType::Vod,
                    _ => return Err(self.invalid("EXT-X-PLAYLIST-TYPE", v)),
                });
            }
            "EXT-X-INDEPENDENT-SEGMENTS" => self.independent_segments = true,
            "EXT-X-ENDLIST" => self.end_list = true,
            "EXT-X-SKIP" => {
                const TAG: &str = "EXT-X-SKIP";
                if self.skip.is_some() {
                    return Err(self.duplicate(TAG));
                }
                if !self.segments.is_empty() || self.pending.any {
                    // 4.4.5.2: the tag replaces the oldest segments, so it
                    // must come before any segment.
                    return Err(self.invalid(TAG, "after a segment"));
                }
                let mut skipped = None;
                let mut ids = None;
                for (k, val) in self.attrs(TAG, v)? {
                    match k {
                        "SKIPPED-SEGMENTS" => {
                            skipped = Some(self.integer("SKIPPED-SEGMENTS", val)?)
                        }
                        "RECENTLY-REMOVED-DATERANGES" => {
                            let list = self.quoted(TAG, k, val)?;
                            ids = Some(if list.is_empty() {
                                Vec::new()
                            } else {
                                list.split('\t').map(str::to_owned).collect()
                            });
                        }
                        _ => {}
                    }
                }
                self.skip = Some(Skip {
                    skipped_segments: skipped
                        .ok_or_else(|| self.missing(TAG, "SKIPPED-SEGMENTS"))?,
                    recently_removed_dateranges: ids,
                });
            }
            "EXT-X-DISCONTINUITY" => {
                self.pending.discontinuity = true;
                self.pending.any = true;
            }
            "EXT-X-GAP" => {
                self.pending.gap = true;
                self.pending.any = true;
            }
            "EXT-X-MAP" => {
                const TAG: &str = "EXT-X-MAP";
                let mut uri = None;
                for (k, val) in self.attrs(TAG, v)? {
                    if k == "URI" {
                        uri = Some(self.quoted(TAG, k, val)?.to_owned());
                    }
                }
                let uri = uri.ok_or_else(|| self.missing(TAG, "URI"))?;
                self.pending.map = Some(Map { uri });
                self.pending.any = true;
            }
            "EXT-X-PROGRAM-DATE-TIME" => {
                let t = parse_pdt(v).ok_or_else(|| self.invalid("EXT-X-PROGRAM-DATE-TIME", v))?;
                self.pending.program_date_time = Some(t);
                self.pending.any = true;
            }
            "EXT-X-PART" => {
                const TAG: &str = "EXT-X-PART";
                let mut duration = None;
                let mut uri = None;
                let mut independent = false;
                let mut gap = false;
                for (k, val) in self.attrs(TAG, v)? {
                    match k {
                        "DURATION" => duration = Some(self.seconds("EXT-X-PART:DURATION", val)?),
                        "URI" => uri = Some(self.quoted(TAG, k, val)?.to_owned()),
                        "INDEPENDENT" => independent = self.yes(TAG, k, val)?,
                        "GAP" => gap = self.yes(TAG, k, val)?,
                        _ => {}
                    }
                }
                let part = Part {
                    duration: duration.ok_or_else(|| self.missing(TAG, "DURATION"))?,
                    uri: uri.ok_or_else(|| self.missing(TAG, "URI"))?,
                    independent,
                    gap,
                };
                self.pending.parts.push(part);
                self.pending.any = true;
            }
            "EXTINF" => {
                if self.pending.extinf.is_some() {
                    return Err(self.duplicate("EXTINF"));
                }
                // `EXTINF:<duration>,[<title>]`; the title is not kept.
                let duration = v.split_once(',').map_or(v, |(d, _)| d).trim();
                let samples = self.seconds("EXTINF", duration)?;
                self.pending.extinf = Some((samples, self.line));
                self.pending.any = true;
            }
            "EXT-X-PRELOAD-HINT" => {
                const TAG: &str = "EXT-X-PRELOAD-HINT";
                let mut hint_type = None;
                let mut uri = None;
                for (k, val) in self.attrs(TAG, v)? {
                    match k {
                        "TYPE" => {
                            hint_type = Some(match val {
                                "PART" => HintType::Part,
                                "MAP" => HintType::Map,
                                _ => return Err(self.invalid("EXT-X-PRELOAD-HINT:TYPE", val)),
                            })
                        }
                        "URI" => uri = Some(self.quoted(TAG, k, val)?.to_owned()),
                        _ => {}
                    }
                }
                if self.preload_hint.is_some() {
                    return Err(self.duplicate(TAG));
                }
                self.preload_hint = Some(PreloadHint {
                    hint_type: hint_type.ok_or_else(|| self.missing(TAG, "TYPE"))?,
                    uri: uri.ok_or_else(|| self.missing(TAG, "URI"))?,
                });
            }
            "EXT-X-RENDITION-REPORT" => {
                const TAG: &str = "EXT-X-RENDITION-REPORT";
                let mut uri = None;
                let mut last_msn = None;
                let mut last_part = None;
                for (k, val) in self.attrs(TAG, v)? {
                    match k {
                        "URI" => uri = Some(self.quoted(TAG, k, val)?.to_owned()),
                        "LAST-MSN" => last_msn = Some(self.integer("LAST-MSN", val)?),
                        "LAST-PART" => {
                            let p = self.integer("LAST-PART", val)?;
                            last_part =
                                Some(u32::try_from(p).map_err(|_| self.invalid("LAST-PART", val))?);
                        }
                        _ => {}
                    }
                }
                self.rendition_reports.push(RenditionReport {
                    uri: uri.ok_or_else(|| self.missing(TAG, "URI"))?,
                    last_msn: last_msn.ok_or_else(|| self.missing(TAG, "LAST-MSN"))?,
                    last_part,
                });
            }
            "EXT-X-STREAM-INF"
            | "EXT-X-I-FRAME-STREAM-INF"
            | "EXT-X-MEDIA"
            | "EXT-X-SESSION-DATA"
            | "EXT-X-SESSION-KEY" => {
                return Err(ParseError::NotMediaPlaylist {
                    line: self.line,
                    tag: format!("#{name}"),
                });
            }
            // 4.1: unknown tags are ignored.
            _ => {}
        }
        Ok(())
    }

    fn uri(&mut self, uri: &str) -> Result<(), ParseError> {
        let pending = std::mem::take(&mut self.pending);
        let Some((duration, _)) = pending.extinf else {
            return Err(ParseError::UriWithoutExtinf { line: self.line });
        };
        self.segments.push(Segment {
            discontinuity: pending.discontinuity,
            map: pending.map,
            program_date_time: pending.program_date_time,
            parts: pending.parts,
            gap: pending.gap,
            duration,
            uri: uri.to_owned(),
        });
        Ok(())
    }

    fn finish(self) -> Result<MediaPlaylist, ParseError> {
        let last = self.line;
        if let Some((_, line)) = self.pending.extinf {
            return Err(ParseError::ExtinfWithoutUri { line });
        }
        let target_duration = self
            .target_duration
            .ok_or(ParseError::MissingTargetDuration { line: last })?;
        let p = self.pending;
        let open = p.any.then_some(OpenSegment {
            discontinuity: p.discontinuity,
            map: p.map,
            program_date_time: p.program_date_time,
            parts: p.parts,
        });
        let playlist = MediaPlaylist {
            target_duration,
            server_control: self.server_control,
            part_target: self.part_target,
            media_sequence: self.media_sequence.unwrap_or(0),
            discontinuity_sequence: self.discontinuity_sequence.unwrap_or(0),
            playlist_type: self.playlist_type,
            independent_segments: self.independent_segments,
            skip: self.skip,
            segments: self.segments,
            open,
            preload_hint: self.preload_hint,
            rendition_reports: self.rendition_reports,
            end_list: self.end_list,
        };
        let (declared, line) = self.version.unwrap_or((1, 1));
        let required = playlist.version();
        if declared < required {
            return Err(ParseError::VersionTooLow {
                line,
                declared,
                required,
            });
        }
        Ok(playlist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdt(ms: i64) -> ProgramDateTime {
        DateTime::from_timestamp_millis(ms).expect("in range")
    }

    fn part(msn: u64, i: u32, duration: u64) -> Part {
        Part {
            duration,
            uri: format!("{msn}.{i}.m4s"),
            independent: true,
            gap: false,
        }
    }

    /// A live playlist of `n` complete 1.92 s segments with parts on the last
    /// two, plus two parts of the open segment.
    fn sample(n: u64) -> MediaPlaylist {
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
    fn renders_the_expected_text() {
        let text = sample(2).render();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,CAN-SKIP-DATERANGES=YES,HOLD-BACK=6.000,PART-HOLD-BACK=0.960
#EXT-X-PART-INF:PART-TARGET=0.320
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:00.000Z
#EXT-X-PART:DURATION=0.320,URI=\"10.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.1.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.2.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.3.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"10.5.m4s\",INDEPENDENT=YES
#EXTINF:1.920,
10.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:01.920Z
#EXT-X-PART:DURATION=0.320,URI=\"11.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.1.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.2.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.3.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"11.5.m4s\",INDEPENDENT=YES
#EXTINF:1.920,
11.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:03.840Z
#EXT-X-PART:DURATION=0.320,URI=\"12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"12.1.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"12.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../aac/live.m3u8\",LAST-MSN=12,LAST-PART=1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn parse_inverts_render() {
        for n in [0, 1, 2, 9] {
            let p = sample(n);
            assert_eq!(MediaPlaylist::parse(&p.render()), Ok(p.clone()), "n = {n}");
            let mut finished = p;
            finished.open = None;
            finished.preload_hint = None;
            finished.end_list = true;
            finished.playlist_type = Some(PlaylistType::Vod);
            finished.discontinuity_sequence = 4;
            if let Some(s) = finished.segments.first_mut() {
                s.discontinuity = true;
                s.gap = true;
            }
            assert_eq!(MediaPlaylist::parse(&finished.render()), Ok(finished));
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
    fn delta_skips_only_segments_older_than_the_boundary() {
        let full = sample(12);
        // 12 segments of 1.92 s = 23.04 s; the boundary 12 s before the end
        // is at 11.04 s: segments ending at or before it (5 x 1.92 = 9.6 s)
        // are skipped, the sixth (ending 11.52 s) is kept.
        let d = full.delta(12 * 48_000);
        assert_eq!(d.skip.as_ref().map(|s| s.skipped_segments), Some(5));
        assert_eq!(d.segments.len(), 7);
        assert_eq!(d.segments[0].uri, "15.m4s");
        assert_eq!(d.media_sequence, full.media_sequence);
        assert_eq!(d.first_listed_msn(), 15);
        // The init section stays reachable from the first remaining segment.
        assert_eq!(d.segments[0].map, full.segments[0].map);
        assert_eq!(
            d.segments[0].program_date_time,
            full.segments[5].program_date_time
        );
        assert_eq!(MediaPlaylist::parse(&d.render()), Ok(d));
        // Too short to skip anything: the full playlist comes back.
        assert_eq!(sample(6).delta(12 * 48_000), sample(6));
    }

    #[test]
    fn delta_derives_a_missing_date() {
        let mut full = sample(12);
        for s in full.segments.iter_mut().skip(1) {
            s.program_date_time = None;
        }
        let d = full.delta(12 * 48_000);
        let first = full.segments[0].program_date_time.expect("dated");
        assert_eq!(
            d.segments[0].program_date_time,
            add_samples(first, 5 * 92_160)
        );
    }

    #[test]
    fn seconds_parse_exactly() {
        assert_eq!(parse_seconds("0.320"), Some(15_360));
        assert_eq!(parse_seconds("1.92"), Some(92_160));
        assert_eq!(parse_seconds("2"), Some(96_000));
        assert_eq!(parse_seconds(".5"), Some(24_000));
        assert_eq!(parse_seconds("0.0000104"), Some(0));
        assert_eq!(parse_seconds("0.0000105"), Some(1));
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("1e3"), None);
        assert_eq!(parse_seconds("."), None);
        assert_eq!(parse_seconds(""), None);
        assert_eq!(
            parse_seconds("99999999999999999999999999999999999999999"),
            None
        );
    }

    #[test]
    fn attribute_lists_honour_quotes() {
        assert_eq!(
            attributes("A=1,B=\"x,y\",C=YES"),
            Some(vec![("A", "1"), ("B", "\"x,y\""), ("C", "YES")])
        );
        assert_eq!(attributes("A=\"open"), None);
        assert_eq!(attributes("A=\"x\"B=1"), None);
        assert_eq!(attributes("NOVALUE"), None);
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, ParseError); 7] = [
            ("", ParseError::MissingHeader { line: 1 }),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\nseg.m4s\n",
                ParseError::UriWithoutExtinf { line: 3 },
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1.0,\n",
                ParseError::ExtinfWithoutUri { line: 3 },
            ),
            (
                "#EXTM3U\n#EXTINF:1.0,\na.m4s\n",
                ParseError::MissingTargetDuration { line: 4 },
            ),
            (
                "#EXTM3U\n#EXT-X-TARGETDURATION:x\n",
                ParseError::InvalidValue {
                    line: 2,
                    name: "EXT-X-TARGETDURATION".into(),
                    value: "x".into(),
                },
            ),
            (
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:1.0,\na.m4s\n",
                ParseError::VersionTooLow {
                    line: 2,
                    declared: 3,
                    required: 6,
                },
            ),
            (
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n",
                ParseError::NotMediaPlaylist {
                    line: 2,
                    tag: "#EXT-X-STREAM-INF".into(),
                },
            ),
        ];
        for (text, err) in cases {
            assert_eq!(MediaPlaylist::parse(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn reads_foreign_but_standard_text() {
        let text = "#EXTM3U\r\n#EXT-X-VERSION:3\r\n#EXT-X-TARGETDURATION:4\r\n# a comment\r\n#EXT-X-UNKNOWN:1\r\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-01-01T01:00:00.123456+01:00\r\n#EXTINF:3.5,title\r\nhttp://x/a.aac\r\n";
        let p = MediaPlaylist::parse(text).expect("valid");
        assert_eq!(p.target_duration, 4);
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].duration, 168_000);
        assert_eq!(p.segments[0].uri, "http://x/a.aac");
        assert_eq!(
            p.segments[0].program_date_time.map(format_pdt),
            Some("2026-01-01T00:00:00.123Z".to_owned())
        );
    }
}
