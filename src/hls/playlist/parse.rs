//! Playlist text to the model: [`MediaPlaylist::parse`] and [`ParseError`].
//!
//! Reads the media playlist format of RFC 8216bis section 4 as a client
//! must: lines and comments (4.1), attribute lists and their value types
//! (4.2), the tags of 4.4 that the model holds (4.4.1 to 4.4.5, including
//! the Low-Latency `EXT-X-PART-INF`, `EXT-X-SERVER-CONTROL`, `EXT-X-PART`,
//! `EXT-X-SKIP`, `EXT-X-PRELOAD-HINT` and `EXT-X-RENDITION-REPORT`), and the
//! `EXT-X-VERSION` check of section 8. Invalid text is an error naming its
//! line, never a panic, since the origin and the load tester read playlists
//! they did not write.

use super::{
    HintType, Map, MediaPlaylist, OpenSegment, Part, PlaylistType, PreloadHint, ProgramDateTime,
    RenditionReport, Segment, ServerControl, Skip, parse_pdt,
};
use crate::time::SAMPLE_RATE;

/// Why a playlist text was rejected. Every variant carries the 1-based line
/// number; the caller should treat the playlist as unusable (RFC 8216bis 4:
/// clients must fail to parse invalid playlists) and report the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The first line is not `#EXTM3U` (4.4.1.1).
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
    /// Parses a media playlist. Accepts everything [`render`](Self::render)
    /// writes and the standard tags listed in the module docs; ignores unknown
    /// tags and comments. Never panics.
    pub fn parse(text: &str) -> Result<MediaPlaylist, ParseError> {
        Parser::default().run(text)
    }
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

/// The text of a quoted-string value (4.2), or `None` if `v` is not quoted:
/// attributes such as `URI` must be quoted, and an unquoted one is an error
/// rather than a guess.
fn unquote(v: &str) -> Option<&str> {
    v.strip_prefix('"')?.strip_suffix('"')
}

/// Segment tags seen since the last URI line. They apply to the next segment
/// (4.4.4), or, if the text ends first, to the open segment.
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

/// Parser state: the playlist-wide tags seen so far, each an `Option` so a
/// repetition can be reported, and the segments read. [`Parser::finish`]
/// checks what can only be checked at the end.
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
    // The error constructors stamp the current line, so no error can be
    // reported without one.
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

    /// Reads `text` line by line, accepting LF and CRLF line ends as
    /// RFC 8216bis 4.1 does.
    fn run(mut self, text: &str) -> Result<MediaPlaylist, ParseError> {
        let mut saw_header = false;
        for (i, raw) in text.split('\n').enumerate() {
            self.line = i + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw).trim();
            if !saw_header {
                // 4.4.1.1: the first line must be EXTM3U (a BOM is forbidden).
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

    /// Applies one tag line: playlist-wide tags to the parser, segment tags
    /// to [`Pending`].
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

    /// A URI line closes the segment the pending tags describe.
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

    /// Builds the playlist and checks what needs the whole text: a dangling
    /// `EXTINF`, the required target duration and the declared version.
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
    use super::super::format_pdt;
    use super::super::tests::sample;
    use super::*;

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
