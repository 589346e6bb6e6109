//! The playlist state machine the packager drives.
//!
//! A [`Timeline`] records completed Partial Segments in program time and
//! groups them into Media Segments; from that state it renders the media
//! playlist of any rendition ([`Timeline::media_playlist`]). Both renditions
//! share one timeline: parts have the same boundaries in Opus and AAC (320 ms
//! = 16 Opus frames = 15 AAC frames), only their URIs differ.
//!
//! Contract:
//! - Pure and synchronous: no clock, no IO. Time is program samples at 48 kHz;
//!   "now" is passed in by the caller ([`Timeline::take_expired`]).
//! - A part is never longer than the configured part target (RFC 8216bis
//!   4.4.4.9 makes PART-TARGET an upper bound), so the target duration derived
//!   at build time holds for the whole broadcast, as 4.4.3.1 requires.
//! - A segment closes after `parts_per_segment` parts, or early after a part
//!   shorter than 85 % of the target: 4.4.4.9 allows only a segment's last part
//!   to be that short.
//! - Segments leave a bounded window only when a newer segment completes, and
//!   only while the rest still covers the window (6.2.2 requires at least three
//!   target durations to remain; the window is at least six segments). A
//!   segment that left is reported by [`Timeline::take_expired`] once the
//!   configured deletion delay of program time has passed (three target
//!   durations by default), when its objects may be deleted.
//! - Program date-times are computed from the epoch and each segment's start
//!   sample, never accumulated, so they cannot drift.

use std::collections::VecDeque;

use chrono::DateTime;

use crate::hls::playlist::{
    HintType, Map, MediaPlaylist, OpenSegment, Part, PlaylistType, PreloadHint, RenditionReport,
    Segment, ServerControl,
};
use crate::time::{ProgramTime, SAMPLE_RATE, millis};

/// Identifies a Partial Segment: its segment's Media Sequence Number and its
/// index within that segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    /// Media Sequence Number of the parent segment.
    pub msn: u64,
    /// Index of the part within the segment, from 0.
    pub part: u32,
}

/// A segment that left the playlist window and whose objects may now be
/// deleted: `{msn}.m4s` and the parts `{msn}.0.m4s` to `{msn}.{parts-1}.m4s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiredSegment {
    /// Media Sequence Number.
    pub msn: u64,
    /// How many parts the segment had.
    pub parts: u32,
}

/// Settings of a [`Timeline`]. Durations in samples at 48 kHz.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineConfig {
    /// Longest part, `PART-TARGET`. Default 15 360 (320 ms).
    pub part_target: u64,
    /// Parts per segment. Default 6 (1.92 s segments).
    pub parts_per_segment: u32,
    /// Live window: segments are kept while the newer ones cover less than
    /// this. `None` keeps every segment (an EVENT playlist, which becomes a
    /// complete recording once finished). Default 60 s.
    pub window: Option<u64>,
    /// Wall clock of program sample 0, in milliseconds since the Unix epoch
    /// (UTC), for `EXT-X-PROGRAM-DATE-TIME`.
    pub epoch_unix_ms: i64,
    /// Media Sequence Number of the first segment. A restarted broadcast
    /// continues the previous numbering so no object name is reused.
    pub first_msn: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` while the first segment is listed; a
    /// restarted broadcast continues the previous value.
    pub discontinuity_sequence: u64,
    /// Mark the first segment with `EXT-X-DISCONTINUITY` (a restarted
    /// broadcast: timestamps and encoder state start over).
    pub start_discontinuity: bool,
    /// How long a segment that left the window stays in the store, in
    /// samples. `None` (the default): three target durations, the project's
    /// rule. RFC 8216bis 6.2.2 asks for longer, the segment's duration plus
    /// the duration of the longest playlist that listed it (about the window),
    /// for a client that loaded a playlist just before the segment left and
    /// plays from its start; set it to that to follow the RFC to the letter.
    pub deletion_delay: Option<u64>,
    /// Segments of an earlier run of the stream, as its last playlist
    /// listed them, that this run does not list (it starts after them);
    /// they count as having left the window at [`start`](Self::start), so
    /// [`Timeline::take_expired`] reports them once the deletion delay has
    /// passed and a restarted stream deletes what the run before it left.
    pub inherited: Vec<ExpiredSegment>,
    /// Program time of this run's first part. A wall-clock-locked stream
    /// starts each run on a segment boundary of its timeline, `first_msn`
    /// × the nominal segment duration; a fresh stream at 0.
    pub start: ProgramTime,
    /// Segments of an earlier run of the same timeline to list again
    /// before this run's own, oldest first, consecutive, ending before
    /// `first_msn`. The Media Sequence Numbers between the last of them and
    /// `first_msn` (the span no process was publishing) are listed as
    /// `EXT-X-GAP` segments (RFC 8216bis 4.4.4.7) of the nominal duration,
    /// ending at `start`; the caller stores a silent segment under each
    /// ([`Timeline::gaps`]), for players that ignore the tag. When the span
    /// is longer than the window, nothing of the earlier run is listed: its
    /// segments count as inherited.
    pub earlier: Vec<EarlierSegment>,
}

/// A segment an earlier run of the stream listed (see
/// [`TimelineConfig::earlier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierSegment {
    /// Media Sequence Number.
    pub msn: u64,
    /// Program time of its first sample.
    pub start: ProgramTime,
    /// Duration in samples.
    pub duration: u64,
    /// Durations of its parts as listed (empty once they aged out of the
    /// playlist).
    pub parts: Vec<u64>,
    /// Part objects stored for it, deleted with it.
    pub stored_parts: u32,
    /// Listed with `EXT-X-DISCONTINUITY`.
    pub discontinuity: bool,
    /// Listed with `EXT-X-GAP`.
    pub gap: bool,
}

impl Default for TimelineConfig {
    fn default() -> Self {
        TimelineConfig {
            part_target: 15_360,
            parts_per_segment: 6,
            window: Some(60 * u64::from(SAMPLE_RATE)),
            epoch_unix_ms: 0,
            first_msn: 0,
            discontinuity_sequence: 0,
            start_discontinuity: false,
            deletion_delay: None,
            inherited: Vec::new(),
            start: ProgramTime::ZERO,
            earlier: Vec::new(),
        }
    }
}

/// A [`TimelineConfig`] that cannot produce a valid playlist. Fix the
/// configuration; nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The part target is zero.
    #[error("part target must be positive")]
    ZeroPartTarget,
    /// Zero parts per segment.
    #[error("a segment needs at least one part")]
    ZeroPartsPerSegment,
    /// Segments would be absurdly long (over an hour).
    #[error("segments of {samples} samples are too long for a live playlist")]
    SegmentTooLong {
        /// Nominal segment duration in samples.
        samples: u64,
    },
    /// The window holds fewer than six segments, below what RFC 8216bis 6.2.2
    /// and the delta-update boundary need.
    #[error("window of {window} samples is shorter than six segments ({minimum} samples)")]
    WindowTooShort {
        /// Configured window.
        window: u64,
        /// Smallest accepted window.
        minimum: u64,
    },
    /// The epoch is outside the representable date range.
    #[error("epoch {epoch_unix_ms} ms is outside the representable date range")]
    EpochOutOfRange {
        /// Configured epoch.
        epoch_unix_ms: i64,
    },
}

/// A part the timeline refused. The timeline is unchanged; the caller has a
/// packaging bug (or fed a finished timeline) and should stop or fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimelineError {
    /// A part of zero samples.
    #[error("part of zero duration for segment {msn}")]
    EmptyPart {
        /// Segment the part was meant for.
        msn: u64,
    },
    /// A part longer than `PART-TARGET` (RFC 8216bis 4.4.4.9 forbids it).
    #[error("part of {duration} samples for segment {msn} exceeds the part target {part_target}")]
    PartTooLong {
        /// Segment the part was meant for.
        msn: u64,
        /// Offered duration.
        duration: u64,
        /// Configured part target.
        part_target: u64,
    },
    /// [`Timeline::finish`] was already called.
    #[error("the timeline is finished; no part can follow EXT-X-ENDLIST")]
    Finished,
}

/// Object names of one rendition, as URIs relative to its media playlist.
///
/// Patterns use `{msn}` and `{part}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionNames {
    init: String,
    segment: String,
    part: String,
}

/// A [`RenditionNames`] pattern that would produce colliding or unwritable
/// names. Fix the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamesError {
    /// A pattern lacks a placeholder, so different objects would share a name.
    #[error("pattern {pattern:?} must contain {placeholder}")]
    MissingPlaceholder {
        /// The pattern.
        pattern: String,
        /// The missing placeholder.
        placeholder: &'static str,
    },
    /// A name contains a character that cannot appear in a playlist URI
    /// (control characters, whitespace, `"`) or is empty.
    #[error("name {name:?} cannot be written into a playlist")]
    Unwritable {
        /// The name.
        name: String,
    },
}

impl RenditionNames {
    /// Checks and builds the names: `segment` must contain `{msn}`, `part`
    /// both `{msn}` and `{part}`.
    pub fn new(
        init: impl Into<String>,
        segment: impl Into<String>,
        part: impl Into<String>,
    ) -> Result<Self, NamesError> {
        let names = RenditionNames {
            init: init.into(),
            segment: segment.into(),
            part: part.into(),
        };
        for name in [&names.init, &names.segment, &names.part] {
            if !uri_is_writable(name) {
                return Err(NamesError::Unwritable { name: name.clone() });
            }
        }
        for (pattern, placeholder) in [
            (&names.segment, "{msn}"),
            (&names.part, "{msn}"),
            (&names.part, "{part}"),
        ] {
            if !pattern.contains(placeholder) {
                return Err(NamesError::MissingPlaceholder {
                    pattern: pattern.clone(),
                    placeholder,
                });
            }
        }
        Ok(names)
    }

    /// URI of the initialization section.
    pub fn init_uri(&self) -> &str {
        &self.init
    }

    /// URI of segment `msn`.
    pub fn segment_uri(&self, msn: u64) -> String {
        self.segment.replace("{msn}", &msn.to_string())
    }

    /// URI of a part.
    pub fn part_uri(&self, id: PartId) -> String {
        self.part
            .replace("{msn}", &id.msn.to_string())
            .replace("{part}", &id.part.to_string())
    }

    /// Names for unit tests: the pattern of the store layout
    /// (`crate::publish::layout`), written out here because hls sits below
    /// it.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Self::new("init.mp4", "{msn}.m4s", "{msn}.{part}.m4s").expect("valid patterns")
    }
}

/// True if `uri` is non-empty and free of characters that would break a
/// playlist line or a quoted-string (RFC 8216bis 4.2).
pub(crate) fn uri_is_writable(uri: &str) -> bool {
    !uri.is_empty()
        && !uri
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '"')
}

impl RenditionReport {
    /// The report for a rendition at `uri` whose last part is `last`.
    pub fn at(uri: impl Into<String>, last: PartId) -> Self {
        RenditionReport {
            uri: uri.into(),
            last_msn: last.msn,
            last_part: Some(last.part),
        }
    }
}

#[derive(Debug, Clone)]
struct ClosedSegment {
    msn: u64,
    start: u64,
    duration: u64,
    parts: Vec<u64>,
    /// Part objects stored for the segment (deleted with it).
    stored_parts: u32,
    discontinuity: bool,
    gap: bool,
}

#[derive(Debug, Clone, Copy)]
struct Departed {
    segment: ExpiredSegment,
    left_at: u64,
}

/// The playlist state of one broadcast. Build with [`TimelineConfig::build`].
#[derive(Debug, Clone)]
pub struct Timeline {
    config: TimelineConfig,
    /// `EXT-X-TARGETDURATION`, whole seconds.
    target_duration: u64,
    /// Complete segments in the window, oldest first.
    segments: VecDeque<ClosedSegment>,
    /// Sum of `segments` durations.
    listed: u64,
    /// The segment being produced.
    open_msn: u64,
    open_start: u64,
    open_parts: Vec<u64>,
    open_discontinuity: bool,
    /// End of the last part, program samples.
    head: u64,
    discontinuity_sequence: u64,
    departed: VecDeque<Departed>,
    finished: bool,
}

impl TimelineConfig {
    /// Checks the settings and starts an empty timeline at program sample 0.
    pub fn build(self) -> Result<Timeline, ConfigError> {
        if self.part_target == 0 {
            return Err(ConfigError::ZeroPartTarget);
        }
        if self.parts_per_segment == 0 {
            return Err(ConfigError::ZeroPartsPerSegment);
        }
        let rate = u64::from(SAMPLE_RATE);
        let segment = self
            .part_target
            .checked_mul(u64::from(self.parts_per_segment))
            .filter(|s| *s <= 3600 * rate)
            .ok_or(ConfigError::SegmentTooLong {
                samples: self
                    .part_target
                    .saturating_mul(u64::from(self.parts_per_segment)),
            })?;
        if let Some(window) = self.window {
            let minimum = 6 * segment;
            if window < minimum {
                return Err(ConfigError::WindowTooShort { window, minimum });
            }
        }
        if DateTime::from_timestamp_millis(self.epoch_unix_ms).is_none() {
            return Err(ConfigError::EpochOutOfRange {
                epoch_unix_ms: self.epoch_unix_ms,
            });
        }
        // 4.4.3.1: the rounded EXTINF must not exceed it; rounding the
        // nominal (longest possible) segment up satisfies that for every
        // segment and never needs to change.
        let target_duration = segment.div_ceil(rate);
        let start = self.start.samples();
        let mut timeline = Timeline {
            target_duration,
            segments: VecDeque::new(),
            listed: 0,
            open_msn: self.first_msn,
            open_start: start,
            open_parts: Vec::new(),
            open_discontinuity: false,
            head: start,
            discontinuity_sequence: self.discontinuity_sequence,
            departed: self
                .inherited
                .iter()
                .map(|&segment| Departed {
                    segment,
                    left_at: start,
                })
                .collect(),
            finished: false,
            config: self,
        };
        timeline.list_earlier(segment);
        Ok(timeline)
    }
}

impl Timeline {
    /// Lists the earlier run's segments and the gap up to this run's start
    /// (see [`TimelineConfig::earlier`]), or lets them depart when the gap
    /// is longer than the window; marks this run's first segment with
    /// `EXT-X-DISCONTINUITY` when it does not continue the last listed one
    /// seamlessly.
    fn list_earlier(&mut self, segment: u64) {
        let earlier = std::mem::take(&mut self.config.earlier);
        let start = self.head;
        let first_msn = self.config.first_msn;
        let contiguous = earlier
            .windows(2)
            .all(|w| w[0].msn.checked_add(1) == Some(w[1].msn));
        let reachable = earlier.last().is_some_and(|last| {
            let gaps = first_msn.saturating_sub(last.msn.saturating_add(1));
            let longest = self
                .config
                .window
                .map_or(u64::MAX, |w| w.div_ceil(segment).saturating_add(1));
            last.msn < first_msn && gaps <= longest && gaps.saturating_mul(segment) <= start
        });
        if !(contiguous && reachable) {
            for e in &earlier {
                // 6.2.2: a discontinuity that leaves bumps the sequence.
                if e.discontinuity {
                    self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
                }
                self.departed.push_back(Departed {
                    segment: ExpiredSegment {
                        msn: e.msn,
                        parts: e.stored_parts,
                    },
                    left_at: start,
                });
            }
            // The playlist jumps over the span nobody published: a player
            // that read the earlier run's playlist learns of the jump in
            // timestamps from the tag.
            self.open_discontinuity = self.config.start_discontinuity || !earlier.is_empty();
            return;
        }
        let mut end = None;
        for e in earlier {
            end = Some(e.start.samples().saturating_add(e.duration));
            self.append(ClosedSegment {
                msn: e.msn,
                start: e.start.samples(),
                duration: e.duration,
                parts: e.parts,
                stored_parts: e.stored_parts,
                discontinuity: e.discontinuity,
                gap: e.gap,
            });
        }
        let next = self.segments.back().map_or(first_msn, |s| s.msn + 1);
        for msn in next..first_msn {
            let from = start - (first_msn - msn) * segment;
            let discontinuity = end != Some(from);
            end = Some(from + segment);
            self.append(ClosedSegment {
                msn,
                start: from,
                duration: segment,
                parts: Vec::new(),
                stored_parts: 0,
                discontinuity,
                gap: true,
            });
        }
        self.open_discontinuity = self.config.start_discontinuity || end != Some(start);
    }

    /// The gap segments listed (see [`TimelineConfig::earlier`]): Media
    /// Sequence Number and program span of each, for the caller to store
    /// silence under their URIs.
    pub fn gaps(&self) -> Vec<(u64, ProgramTime, u64)> {
        self.segments
            .iter()
            .filter(|s| s.gap)
            .map(|s| (s.msn, ProgramTime::from_samples(s.start), s.duration))
            .collect()
    }

    /// `EXT-X-TARGETDURATION` in whole seconds.
    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// The target duration in samples.
    pub fn target_duration_samples(&self) -> u64 {
        self.target_duration * u64::from(SAMPLE_RATE)
    }

    /// How long a departed segment is kept: the configured delay, or three
    /// target durations.
    pub fn deletion_delay(&self) -> u64 {
        self.config
            .deletion_delay
            .unwrap_or(3 * self.target_duration_samples())
    }

    /// Program time at the end of the last part.
    pub fn head(&self) -> ProgramTime {
        ProgramTime::from_samples(self.head)
    }

    /// True once [`finish`](Self::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The configuration this timeline was built from.
    pub fn config(&self) -> &TimelineConfig {
        &self.config
    }

    /// Appends a completed part of `duration` samples to the open segment and
    /// returns its id. The segment closes when it has `parts_per_segment`
    /// parts or when this part is shorter than 85 % of the part target.
    pub fn push_part(&mut self, duration: u64) -> Result<PartId, TimelineError> {
        if self.finished {
            return Err(TimelineError::Finished);
        }
        if duration == 0 {
            return Err(TimelineError::EmptyPart { msn: self.open_msn });
        }
        if duration > self.config.part_target {
            return Err(TimelineError::PartTooLong {
                msn: self.open_msn,
                duration,
                part_target: self.config.part_target,
            });
        }
        let id = PartId {
            msn: self.open_msn,
            part: self.open_parts.len() as u32,
        };
        self.open_parts.push(duration);
        self.head = self.head.saturating_add(duration);
        let full = self.open_parts.len() >= self.config.parts_per_segment as usize;
        // 4.4.4.9: only a segment's last part may be under 85 % of the target.
        let short = duration.saturating_mul(100) < self.config.part_target.saturating_mul(85);
        if full || short {
            self.close_segment();
        }
        Ok(id)
    }

    /// Ends the broadcast: closes a partly filled segment and marks the
    /// playlist with `EXT-X-ENDLIST`. Calling it again changes nothing.
    pub fn finish(&mut self) {
        if !self.open_parts.is_empty() {
            self.close_segment();
        }
        self.finished = true;
    }

    fn close_segment(&mut self) {
        let parts = std::mem::take(&mut self.open_parts);
        let duration = parts.iter().sum::<u64>();
        let stored_parts = parts.len() as u32;
        let discontinuity = std::mem::take(&mut self.open_discontinuity);
        self.append(ClosedSegment {
            msn: self.open_msn,
            start: self.open_start,
            duration,
            parts,
            stored_parts,
            discontinuity,
            gap: false,
        });
        self.open_msn = self.open_msn.saturating_add(1);
        self.open_start = self.head;
    }

    /// Lists a closed segment and lets the oldest leave while the others
    /// still cover the window.
    fn append(&mut self, segment: ClosedSegment) {
        self.listed = self.listed.saturating_add(segment.duration);
        self.segments.push_back(segment);
        let Some(window) = self.config.window else {
            return;
        };
        // Drop the oldest while the others still cover the window.
        while let Some(front) = self.segments.front() {
            if self.listed - front.duration < window {
                break;
            }
            let Some(gone) = self.segments.pop_front() else {
                break;
            };
            self.listed -= gone.duration;
            // 6.2.2: removing a discontinuity tag bumps the sequence.
            if gone.discontinuity {
                self.discontinuity_sequence = self.discontinuity_sequence.saturating_add(1);
            }
            self.departed.push_back(Departed {
                segment: ExpiredSegment {
                    msn: gone.msn,
                    parts: gone.stored_parts,
                },
                left_at: self.head,
            });
        }
    }

    /// Segments that left the window at least the deletion delay before
    /// `now`, oldest first; each is reported once. Clients that loaded a
    /// playlist just before the segment left may still fetch it until then
    /// (RFC 8216bis 6.2.2).
    pub fn take_expired(&mut self, now: ProgramTime) -> Vec<ExpiredSegment> {
        let now = now.samples();
        let grace = self.deletion_delay();
        let mut out = Vec::new();
        while let Some(d) = self.departed.front() {
            if d.left_at.saturating_add(grace) > now {
                break;
            }
            out.push(d.segment);
            self.departed.pop_front();
        }
        out
    }

    /// When the next departed segment becomes deletable, if any: the time to
    /// call [`take_expired`](Self::take_expired) again.
    pub fn next_expiry(&self) -> Option<ProgramTime> {
        let grace = self.deletion_delay();
        self.departed
            .front()
            .map(|d| ProgramTime::from_samples(d.left_at.saturating_add(grace)))
    }

    /// The last completed part, for rendition reports and blocking requests.
    pub fn last_part(&self) -> Option<PartId> {
        if let Some(n) = self.open_parts.len().checked_sub(1) {
            return Some(PartId {
                msn: self.open_msn,
                part: n as u32,
            });
        }
        let last = self.segments.back()?;
        Some(PartId {
            msn: last.msn,
            part: (last.parts.len() as u32).saturating_sub(1),
        })
    }

    /// The part a preload hint names: the next one to be completed; `None`
    /// once finished.
    pub fn next_part(&self) -> Option<PartId> {
        (!self.finished).then_some(PartId {
            msn: self.open_msn,
            part: self.open_parts.len() as u32,
        })
    }

    /// Program time at which part `id` starts, if it is listed or is the next
    /// part.
    pub fn part_start(&self, id: PartId) -> Option<ProgramTime> {
        let (start, parts) = if id.msn == self.open_msn {
            (self.open_start, &self.open_parts)
        } else {
            let first = self.segments.front()?.msn;
            let seg = self
                .segments
                .get(usize::try_from(id.msn.checked_sub(first)?).ok()?)?;
            (seg.start, &seg.parts)
        };
        let index = id.part as usize;
        if index > parts.len() || (index == parts.len() && id.msn != self.open_msn) {
            return None;
        }
        Some(ProgramTime::from_samples(
            start + parts.iter().take(index).sum::<u64>(),
        ))
    }

    /// The media playlist of one rendition as the timeline stands.
    ///
    /// Lists the window's segments, each with `EXT-X-PROGRAM-DATE-TIME`, the
    /// parts of segments that end within three target durations of the live
    /// edge (RFC 8216bis 4.4.4.9 asks to drop older ones), the open
    /// segment's parts, a preload hint for the next part (none after
    /// `EXT-X-ENDLIST`) and the given rendition reports. Server control:
    /// blocking reload, `PART-HOLD-BACK` = 3 x PART-TARGET, `HOLD-BACK` = 3 x
    /// target duration, `CAN-SKIP-UNTIL` = 6 x target duration (the minimum
    /// 4.4.3.8 allows).
    pub fn media_playlist(
        &self,
        names: &RenditionNames,
        reports: &[RenditionReport],
    ) -> MediaPlaylist {
        let td = self.target_duration_samples();
        let parts_from = self.head.saturating_sub(3 * td);
        let map = Map {
            uri: names.init.clone(),
        };
        let mut first = true;
        let mut segments = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let parts = if s.start + s.duration > parts_from && !s.gap {
                self.parts(names, s.msn, &s.parts)
            } else {
                Vec::new()
            };
            segments.push(Segment {
                discontinuity: s.discontinuity,
                map: first.then(|| map.clone()),
                program_date_time: self.date_at(s.start),
                parts,
                gap: s.gap,
                duration: s.duration,
                uri: names.segment_uri(s.msn),
            });
            first = false;
        }
        let open = (!self.open_parts.is_empty()).then(|| OpenSegment {
            discontinuity: self.open_discontinuity,
            map: first.then(|| map.clone()),
            program_date_time: self.date_at(self.open_start),
            parts: self.parts(names, self.open_msn, &self.open_parts),
        });
        let media_sequence = self.segments.front().map_or(self.open_msn, |s| s.msn);
        MediaPlaylist {
            target_duration: self.target_duration,
            server_control: Some(ServerControl {
                can_block_reload: true,
                can_skip_until: Some(6 * td),
                can_skip_dateranges: true,
                hold_back: Some(3 * td),
                part_hold_back: Some(3 * self.config.part_target),
            }),
            part_target: Some(self.config.part_target),
            media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            // An unbounded window only ever appends: EVENT, kept after
            // ENDLIST too, since switching a playlist's type confuses players.
            playlist_type: self.config.window.is_none().then_some(PlaylistType::Event),
            // Every Opus and AAC frame decodes on its own.
            independent_segments: true,
            skip: None,
            segments,
            open,
            preload_hint: self.next_part().map(|id| PreloadHint {
                hint_type: HintType::Part,
                uri: names.part_uri(id),
            }),
            rendition_reports: reports.to_vec(),
            end_list: self.finished,
        }
    }

    fn parts(&self, names: &RenditionNames, msn: u64, durations: &[u64]) -> Vec<Part> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &duration)| Part {
                duration,
                uri: names.part_uri(PartId {
                    msn,
                    part: i as u32,
                }),
                independent: true,
                gap: false,
            })
            .collect()
    }

    /// Wall-clock date of program sample `at`: epoch plus elapsed time,
    /// computed afresh each time so rounding never accumulates.
    fn date_at(&self, at: u64) -> Option<crate::hls::playlist::ProgramDateTime> {
        let ms = i64::try_from(millis(at)).ok()?;
        DateTime::from_timestamp_millis(self.config.epoch_unix_ms.checked_add(ms)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_runs_segments_expire_after_the_deletion_delay() {
        let inherited = vec![
            ExpiredSegment { msn: 7, parts: 6 },
            ExpiredSegment { msn: 8, parts: 2 },
        ];
        let mut t = TimelineConfig {
            first_msn: 9,
            start_discontinuity: true,
            inherited: inherited.clone(),
            ..TimelineConfig::default()
        }
        .build()
        .expect("timeline");
        let delay = t.deletion_delay();
        assert_eq!(t.next_expiry(), Some(ProgramTime::from_samples(delay)));
        assert!(
            t.take_expired(ProgramTime::from_samples(delay - 1))
                .is_empty()
        );
        // Not listed: this run's playlist starts at its own first segment.
        t.push_part(15_360).expect("part");
        let playlist = t.media_playlist(
            &RenditionNames::new("i.mp4", "{msn}.m4s", "{msn}.{part}.m4s").expect("names"),
            &[],
        );
        assert_eq!(playlist.media_sequence, 9);
        assert_eq!(t.take_expired(ProgramTime::from_samples(delay)), inherited);
    }
    use crate::hls::rules;

    const PART: u64 = 15_360;
    const SEGMENT: u64 = 6 * PART;

    fn at(samples: u64) -> ProgramTime {
        ProgramTime::from_samples(samples)
    }

    fn timeline(window: Option<u64>) -> Timeline {
        TimelineConfig {
            window,
            epoch_unix_ms: 1_764_300_000_000,
            first_msn: 100,
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid config")
    }

    #[test]
    fn golden_playlist_of_a_small_timeline() {
        let mut t = timeline(Some(60 * 48_000));
        for _ in 0..8 {
            t.push_part(PART).expect("part");
        }
        let names = RenditionNames::for_tests();
        let report = RenditionReport::at("../aac/live.m3u8", t.last_part().expect("some"));
        let text = t.media_playlist(&names, &[report]).render();
        let expected = "\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,CAN-SKIP-DATERANGES=YES,HOLD-BACK=6.000,PART-HOLD-BACK=0.960
#EXT-X-PART-INF:PART-TARGET=0.320
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:00.000Z
#EXT-X-PART:DURATION=0.320,URI=\"100.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"100.1.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"100.2.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"100.3.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"100.4.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"100.5.m4s\",INDEPENDENT=YES
#EXTINF:1.920,
100.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-11-28T03:20:01.920Z
#EXT-X-PART:DURATION=0.320,URI=\"101.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.320,URI=\"101.1.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"101.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../aac/live.m3u8\",LAST-MSN=101,LAST-PART=1
";
        assert_eq!(text, expected);
        // Closing the open segment exactly: the hint moves to the next MSN.
        for _ in 0..4 {
            t.push_part(PART).expect("part");
        }
        let p = t.media_playlist(&names, &[]);
        assert!(p.open.is_none());
        assert_eq!(p.preload_hint.map(|h| h.uri), Some("102.0.m4s".to_owned()));
        assert_eq!(t.last_part(), Some(PartId { msn: 101, part: 5 }));
    }

    #[test]
    fn finished_playlist_has_a_short_last_segment_and_no_hint() {
        let mut t = timeline(None);
        for _ in 0..9 {
            t.push_part(PART).expect("part");
        }
        t.push_part(4_800).expect("short part");
        t.finish();
        assert_eq!(t.push_part(PART), Err(TimelineError::Finished));
        let p = t.media_playlist(&RenditionNames::for_tests(), &[]);
        assert!(p.end_list);
        assert!(p.preload_hint.is_none());
        assert!(p.open.is_none());
        assert_eq!(p.playlist_type, Some(PlaylistType::Event));
        assert_eq!(p.segments.len(), 2);
        assert_eq!(p.segments[1].duration, 3 * PART + 4_800);
        assert_eq!(p.segments[1].parts.len(), 4);
        assert_eq!(rules::check(&p), Vec::new());
        let text = p.render();
        assert!(
            text.ends_with("#EXTINF:1.060,\n101.m4s\n#EXT-X-ENDLIST\n"),
            "{text}"
        );
    }

    #[test]
    fn a_short_part_closes_its_segment_early() {
        let mut t = timeline(Some(60 * 48_000));
        t.push_part(PART).expect("part");
        assert_eq!(t.push_part(PART / 2), Ok(PartId { msn: 100, part: 1 }));
        assert_eq!(t.push_part(PART), Ok(PartId { msn: 101, part: 0 }));
        let p = t.media_playlist(&RenditionNames::for_tests(), &[]);
        assert_eq!(rules::check(&p), Vec::new());
        assert_eq!(p.segments[0].duration, PART + PART / 2);
    }

    #[test]
    fn rejects_bad_parts_without_changing_state() {
        let mut t = timeline(Some(60 * 48_000));
        assert_eq!(t.push_part(0), Err(TimelineError::EmptyPart { msn: 100 }));
        assert_eq!(
            t.push_part(PART + 1),
            Err(TimelineError::PartTooLong {
                msn: 100,
                duration: PART + 1,
                part_target: PART
            })
        );
        assert_eq!(t.last_part(), None);
        assert_eq!(t.head(), ProgramTime::ZERO);
    }

    #[test]
    fn config_is_validated() {
        let bad = |c: TimelineConfig| c.build().err();
        assert_eq!(
            bad(TimelineConfig {
                part_target: 0,
                ..Default::default()
            }),
            Some(ConfigError::ZeroPartTarget)
        );
        assert_eq!(
            bad(TimelineConfig {
                window: Some(5 * SEGMENT),
                ..Default::default()
            }),
            Some(ConfigError::WindowTooShort {
                window: 5 * SEGMENT,
                minimum: 6 * SEGMENT
            })
        );
        assert_eq!(
            bad(TimelineConfig {
                epoch_unix_ms: i64::MAX,
                ..Default::default()
            }),
            Some(ConfigError::EpochOutOfRange {
                epoch_unix_ms: i64::MAX
            })
        );
        assert!(RenditionNames::new("init.mp4", "seg.m4s", "{msn}.{part}.m4s").is_err());
        assert!(RenditionNames::new("init.mp4", "{msn}.m4s", "{msn}.m4s").is_err());
        assert!(RenditionNames::new("in it.mp4", "{msn}.m4s", "{msn}.{part}.m4s").is_err());
    }

    #[test]
    fn window_slides_and_segments_expire_three_target_durations_later() {
        // Window of 6 segments (11.52 s).
        let mut t = timeline(Some(6 * SEGMENT));
        let names = RenditionNames::for_tests();
        for _ in 0..6 * 6 {
            t.push_part(PART).expect("part");
        }
        assert_eq!(t.media_playlist(&names, &[]).segments.len(), 6);
        assert_eq!(t.next_expiry(), None);
        // The seventh segment pushes the first out, at the moment it closes.
        for _ in 0..6 {
            t.push_part(PART).expect("part");
        }
        let left_at = 7 * SEGMENT;
        let p = t.media_playlist(&names, &[]);
        assert_eq!(p.segments.len(), 6);
        assert_eq!(p.media_sequence, 101);
        assert_eq!(
            p.segments[0].map.as_ref().map(|m| m.uri.as_str()),
            Some("init.mp4")
        );
        assert_eq!(rules::check(&p), Vec::new());
        let grace = 3 * 2 * 48_000;
        assert_eq!(t.next_expiry(), Some(at(left_at + grace)));
        assert_eq!(t.take_expired(at(left_at + grace - 1)), Vec::new());
        assert_eq!(
            t.take_expired(at(left_at + grace)),
            vec![ExpiredSegment { msn: 100, parts: 6 }]
        );
        // Reported once only.
        assert_eq!(t.take_expired(at(u64::MAX)), Vec::new());
        // The RFC 8216bis 6.2.2 delay, when configured, is honoured.
        let mut strict = TimelineConfig {
            window: Some(6 * SEGMENT),
            deletion_delay: Some(7 * SEGMENT),
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        for _ in 0..7 * 6 {
            strict.push_part(PART).expect("part");
        }
        assert_eq!(strict.next_expiry(), Some(at(left_at + 7 * SEGMENT)));
        assert_eq!(
            strict.take_expired(at(left_at + 7 * SEGMENT - 1)),
            Vec::new()
        );
        assert_eq!(strict.take_expired(at(left_at + 7 * SEGMENT)).len(), 1);
        // Parts listed only for segments ending within 3 target durations
        // (6 s) of the head at 13.44 s: those ending after 7.44 s.
        let with_parts: Vec<u64> = p
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.parts.is_empty())
            .map(|(i, _)| p.media_sequence + i as u64)
            .collect();
        assert_eq!(with_parts, vec![103, 104, 105, 106]);
    }

    #[test]
    fn restart_continues_numbering_with_a_discontinuity() {
        let mut t = TimelineConfig {
            window: Some(6 * SEGMENT),
            first_msn: 500,
            discontinuity_sequence: 3,
            start_discontinuity: true,
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        let names = RenditionNames::for_tests();
        t.push_part(PART).expect("part");
        let p = t.media_playlist(&names, &[]);
        assert_eq!(p.media_sequence, 500);
        assert_eq!(p.discontinuity_sequence, 3);
        assert!(p.open.as_ref().is_some_and(|o| o.discontinuity));
        for _ in 0..7 * 6 {
            t.push_part(PART).expect("part");
        }
        let p = t.media_playlist(&names, &[]);
        assert!(p.segments.iter().all(|s| !s.discontinuity));
        // The first segment left with its discontinuity tag.
        assert_eq!(p.discontinuity_sequence, 4);
        assert_eq!(MediaPlaylist::parse(&p.render()), Ok(p));
    }

    fn earlier(msn: u64, parts: usize) -> EarlierSegment {
        EarlierSegment {
            msn,
            start: at(msn * SEGMENT),
            duration: SEGMENT,
            parts: vec![PART; parts],
            stored_parts: 6,
            discontinuity: false,
            gap: false,
        }
    }

    #[test]
    fn a_restart_lists_the_earlier_run_then_gaps_then_its_own_without_a_discontinuity() {
        let epoch = 1_764_300_000_000i64;
        let mut t = TimelineConfig {
            window: Some(8 * SEGMENT),
            epoch_unix_ms: epoch,
            first_msn: 14,
            start: at(14 * SEGMENT),
            earlier: vec![earlier(9, 0), earlier(10, 0), earlier(11, 6)],
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        assert_eq!(
            t.gaps(),
            vec![
                (12, at(12 * SEGMENT), SEGMENT),
                (13, at(13 * SEGMENT), SEGMENT)
            ]
        );
        assert_eq!(t.head(), at(14 * SEGMENT));
        let id = t.push_part(PART).expect("part");
        assert_eq!(id, PartId { msn: 14, part: 0 });
        let names = RenditionNames::for_tests();
        let p = t.media_playlist(&names, &[]);
        assert_eq!(p.media_sequence, 9);
        let gaps: Vec<bool> = p.segments.iter().map(|s| s.gap).collect();
        assert_eq!(gaps, [false, false, false, true, true]);
        // Continuous timestamps: no discontinuity anywhere.
        assert!(p.segments.iter().all(|s| !s.discontinuity));
        assert!(p.open.as_ref().is_some_and(|o| !o.discontinuity));
        // Dates are epoch + program time, across the gap.
        for (s, msn) in p.segments.iter().zip(9u64..) {
            let pdt = s.program_date_time.expect("pdt").timestamp_millis();
            assert_eq!(pdt, epoch + (msn * SEGMENT / 48) as i64);
            assert!(s.gap || msn != 11 || s.parts.len() == 6);
        }
        assert!(rules::check(&p).is_empty(), "{:?}", rules::check(&p));
        assert_eq!(MediaPlaylist::parse(&p.render()), Ok(p));
        // The earlier segments leave the window like the run's own, and
        // their parts are deleted with them.
        for _ in 0..8 * 6 {
            t.push_part(PART).expect("part");
        }
        let gone = t.take_expired(at(100 * SEGMENT));
        assert_eq!(gone[0], ExpiredSegment { msn: 9, parts: 6 });
        assert_eq!(gone[3], ExpiredSegment { msn: 12, parts: 0 });
    }

    #[test]
    fn a_short_last_earlier_segment_puts_a_discontinuity_after_it() {
        let mut last = earlier(10, 3);
        last.duration = 3 * PART;
        let t = TimelineConfig {
            first_msn: 11,
            start: at(11 * SEGMENT),
            earlier: vec![earlier(9, 0), last],
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        let mut t2 = t.clone();
        t2.push_part(PART).expect("part");
        let p = t2.media_playlist(&RenditionNames::for_tests(), &[]);
        assert!(p.open.is_some_and(|o| o.discontinuity));
        assert!(t.gaps().is_empty());
    }

    #[test]
    fn an_earlier_run_beyond_the_window_is_deleted_not_listed() {
        let mut t = TimelineConfig {
            window: Some(6 * SEGMENT),
            first_msn: 500,
            start: at(500 * SEGMENT),
            earlier: vec![earlier(9, 0), earlier(10, 0)],
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        assert!(t.gaps().is_empty());
        t.push_part(PART).expect("part");
        let p = t.media_playlist(&RenditionNames::for_tests(), &[]);
        assert_eq!(p.media_sequence, 500);
        assert!(p.segments.is_empty());
        assert!(p.open.as_ref().is_some_and(|o| o.discontinuity));
        let gone = t.take_expired(at(500 * SEGMENT + t.deletion_delay()));
        assert_eq!(gone.iter().map(|g| g.msn).collect::<Vec<_>>(), [9, 10]);
    }

    #[test]
    fn program_date_time_is_exact_over_an_hour() {
        let epoch = 1_764_300_000_123i64;
        let mut t = TimelineConfig {
            window: None,
            epoch_unix_ms: epoch,
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        let hour_parts = 3600 * 48_000 / PART; // 11 250 parts
        for _ in 0..hour_parts {
            t.push_part(PART).expect("part");
        }
        t.finish();
        let p = t.media_playlist(&RenditionNames::for_tests(), &[]);
        assert_eq!(p.segments.len(), 1875);
        assert_eq!(rules::check(&p), Vec::new());
        for (i, s) in p.segments.iter().enumerate() {
            let expected = epoch + 1920 * i as i64;
            assert_eq!(
                s.program_date_time.map(|d| d.timestamp_millis()),
                Some(expected),
                "segment {i}"
            );
        }
        let last = p.segments.last().and_then(|s| s.program_date_time);
        assert_eq!(
            last.map(crate::hls::playlist::format_pdt),
            Some("2025-11-28T04:19:58.203Z".to_owned())
        );
        assert_eq!(t.head(), at(3600 * 48_000));
    }

    #[test]
    fn part_start_locates_listed_and_next_parts() {
        let mut t = timeline(Some(60 * 48_000));
        for _ in 0..8 {
            t.push_part(PART).expect("part");
        }
        assert_eq!(
            t.part_start(PartId { msn: 100, part: 3 }),
            Some(at(3 * PART))
        );
        assert_eq!(
            t.part_start(PartId { msn: 101, part: 2 }),
            Some(at(8 * PART))
        );
        assert_eq!(t.part_start(PartId { msn: 101, part: 3 }), None);
        assert_eq!(t.part_start(PartId { msn: 100, part: 6 }), None);
        assert_eq!(t.part_start(PartId { msn: 99, part: 0 }), None);
    }
}
