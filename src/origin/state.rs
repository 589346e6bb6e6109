//! What the origin knows of one rendition: a [`StreamState`] derived from its
//! newest media playlist. Pure: no IO, no clock.
//!
//! Contract:
//! - Everything comes from the playlist text; nothing is remembered between
//!   playlists, so two origin replicas reading the same store agree.
//! - Media Sequence Numbers and part indices come from the playlist's
//!   structure (position), the preload hint from its URI.
//! - Segments whose parts have aged out of the playlist (RFC 8216bis 4.4.4.9
//!   lists parts only near the live edge) count `ceil(duration / PART-TARGET)`
//!   parts, which is exact for onair's streams, where only a segment's last
//!   part can be short.

use crate::hls::{HintType, MediaPlaylist, PartId, ProgramDateTime, add_samples};
use crate::time::SAMPLE_RATE;

use super::request::MediaName;

/// How far back, in target durations, media that has left the playlist may
/// still be requested: an `at/` playlist may be cached for six target
/// durations (DESIGN.md), and a client holding one may still fetch what it
/// lists. The store is the judge of whether such an object still exists.
const RECENT_TARGET_DURATIONS: u64 = 6;

/// A complete Media Segment as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentInfo {
    /// Listed parts, or `None` when they have aged out of the playlist.
    listed_parts: Option<u32>,
    /// `EXTINF` in samples.
    duration: u64,
}

/// The state of one rendition as its media playlist describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    /// MSN of the first listed segment.
    first_msn: u64,
    /// MSN of the segment after the last complete one.
    open_msn: u64,
    /// Complete segments, from `first_msn`.
    segments: Vec<SegmentInfo>,
    /// Parts of the open segment listed so far.
    open_parts: u32,
    /// The last listed part.
    last_part: Option<PartId>,
    /// The part named by `EXT-X-PRELOAD-HINT:TYPE=PART`.
    hint: Option<PartId>,
    /// `EXT-X-ENDLIST`.
    ended: bool,
    /// `CAN-BLOCK-RELOAD=YES`.
    can_block: bool,
    /// `EXT-X-TARGETDURATION` in seconds.
    target_duration: u64,
    /// `PART-TARGET` in samples.
    part_target: Option<u64>,
    /// `CAN-SKIP-UNTIL` in samples.
    skip_until: Option<u64>,
    /// `CAN-SKIP-DATERANGES=YES`.
    skip_dateranges: bool,
    /// Wall-clock date at which the hinted part ends, if the playlist dates
    /// its segments.
    hint_end: Option<ProgramDateTime>,
}

impl StreamState {
    /// Derives the state from a parsed media playlist.
    pub fn from_playlist(p: &MediaPlaylist) -> StreamState {
        let first_msn = p.first_listed_msn();
        let segments: Vec<SegmentInfo> = p
            .segments
            .iter()
            .map(|s| SegmentInfo {
                listed_parts: (!s.parts.is_empty()).then(|| count(s.parts.len())),
                duration: s.duration,
            })
            .collect();
        let open_msn = p.open_msn();
        let open_parts = p.open.as_ref().map_or(0, |o| count(o.parts.len()));
        let last_part = match open_parts.checked_sub(1) {
            Some(part) => Some(PartId {
                msn: open_msn,
                part,
            }),
            None => p.segments.last().and_then(|s| {
                Some(PartId {
                    msn: open_msn.checked_sub(1)?,
                    part: count(s.parts.len()).checked_sub(1)?,
                })
            }),
        };
        let hint = p.preload_hint.as_ref().and_then(|h| match h.hint_type {
            HintType::Part => match MediaName::parse(&h.uri)? {
                MediaName::Part(id) => Some(id),
                _ => None,
            },
            HintType::Map => None,
        });
        let sc = p.server_control.unwrap_or_default();
        StreamState {
            first_msn,
            open_msn,
            open_parts,
            last_part,
            hint,
            ended: p.end_list,
            can_block: sc.can_block_reload,
            target_duration: p.target_duration,
            part_target: p.part_target.filter(|t| *t > 0),
            skip_until: sc.can_skip_until.filter(|t| *t > 0),
            skip_dateranges: sc.can_skip_dateranges,
            hint_end: hint_end(p),
            segments,
        }
    }

    /// `EXT-X-ENDLIST` is present: the playlist will not change.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The server control allows blocking reloads and the stream is live.
    pub fn blocks(&self) -> bool {
        self.can_block && !self.ended
    }

    /// `EXT-X-TARGETDURATION` in seconds.
    pub fn target_duration(&self) -> u64 {
        self.target_duration
    }

    /// `PART-TARGET` in samples, if the playlist lists parts.
    pub fn part_target(&self) -> Option<u64> {
        self.part_target
    }

    /// `CAN-SKIP-UNTIL` in samples, if delta updates are offered.
    pub fn skip_until(&self) -> Option<u64> {
        self.skip_until
    }

    /// `CAN-SKIP-DATERANGES=YES`: `_HLS_skip=v2` is offered.
    pub fn skip_dateranges(&self) -> bool {
        self.skip_dateranges
    }

    /// The last listed part.
    pub fn last_part(&self) -> Option<PartId> {
        self.last_part
    }

    /// The part the preload hint names.
    pub fn hint(&self) -> Option<PartId> {
        self.hint
    }

    /// MSN of the open segment (one past the last complete segment).
    pub fn open_msn(&self) -> u64 {
        self.open_msn
    }

    /// MSN of the last segment that has content, complete or open: the
    /// `LAST-MSN` a rendition report would carry.
    pub fn last_msn(&self) -> u64 {
        self.last_part
            .map_or(self.open_msn.saturating_sub(1), |p| p.msn)
    }

    /// When the hinted part should be complete, by the playlist's program
    /// dates: the date of its start plus one part target.
    pub fn hint_due(&self) -> Option<ProgramDateTime> {
        self.hint_end
    }

    fn segment(&self, msn: u64) -> Option<&SegmentInfo> {
        let index = usize::try_from(msn.checked_sub(self.first_msn)?).ok()?;
        self.segments.get(index)
    }

    /// Parts a complete listed segment has: as listed, or counted from its
    /// duration once its parts have aged out. `None` for segments that are
    /// not complete and listed.
    pub fn parts_in(&self, msn: u64) -> Option<u32> {
        let s = self.segment(msn)?;
        s.listed_parts.or_else(|| {
            let pt = self.part_target?;
            u32::try_from(s.duration.div_ceil(pt)).ok()
        })
    }

    /// Parts listed for a complete segment (not counted from durations).
    pub fn listed_parts(&self, msn: u64) -> Option<u32> {
        self.segment(msn)?.listed_parts
    }

    /// The usual number of parts per segment: the most any listed segment
    /// has, or the target duration's worth of part targets.
    pub fn nominal_parts(&self) -> u32 {
        let listed = self.segments.iter().filter_map(|s| s.listed_parts).max();
        let from_target = self.part_target.map(|pt| {
            let td = self.target_duration.saturating_mul(u64::from(SAMPLE_RATE));
            u32::try_from(td.div_ceil(pt)).unwrap_or(u32::MAX)
        });
        listed.or(from_target).unwrap_or(1).max(1)
    }

    /// Oldest MSN whose media may still be in the store: the first listed
    /// segment, or a few before it (see [`RECENT_TARGET_DURATIONS`]).
    pub fn oldest_servable_msn(&self) -> u64 {
        let shortest = self
            .segments
            .iter()
            .map(|s| s.duration)
            .filter(|d| *d > 0)
            .min()
            .unwrap_or(1);
        let span = RECENT_TARGET_DURATIONS
            .saturating_mul(self.target_duration)
            .saturating_mul(u64::from(SAMPLE_RATE));
        self.first_msn.saturating_sub(span.div_ceil(shortest) + 1)
    }

    /// Segment `msn` is complete and listed, or left the playlist recently.
    pub fn has_segment(&self, msn: u64) -> bool {
        (self.oldest_servable_msn()..self.open_msn).contains(&msn)
    }

    /// Part `id` has been published: it is listed, or belongs to a complete
    /// segment of the window (or one that left it recently) and lies within
    /// that segment's part count.
    pub fn has_part(&self, id: PartId) -> bool {
        if id.msn == self.open_msn {
            return id.part < self.open_parts;
        }
        if id.msn < self.first_msn {
            // Parts of segments that left recently: they were the nominal
            // count unless the segment was the stream's short last one.
            return self.has_segment(id.msn)
                && self.part_target.is_some()
                && id.part < self.nominal_parts();
        }
        self.parts_in(id.msn).is_some_and(|n| id.part < n)
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The program date at which the hinted part ends: the open segment's date
/// plus its parts, plus one part target (the last complete segment's end
/// when no part of the open segment is listed yet).
fn hint_end(p: &MediaPlaylist) -> Option<ProgramDateTime> {
    let pt = p.part_target?;
    let open_start = match p.open.as_ref().and_then(|o| o.program_date_time) {
        Some(date) => date,
        None => {
            let last = p.segments.last()?;
            add_samples(last.program_date_time?, last.duration)?
        }
    };
    let listed: u64 = p
        .open
        .as_ref()
        .map_or(0, |o| o.parts.iter().map(|x| x.duration).sum());
    add_samples(open_start, listed.saturating_add(pt))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hls::TimelineConfig;

    pub(crate) const PART: u64 = 15_360;
    pub(crate) const EPOCH_MS: i64 = 1_764_300_000_000;

    /// A live playlist after `parts` parts of 320 ms, 6 to a segment,
    /// starting at MSN 100 with a 12-segment window.
    pub(crate) fn live_after(parts: usize) -> MediaPlaylist {
        let mut t = TimelineConfig {
            window: Some(12 * 6 * PART),
            epoch_unix_ms: EPOCH_MS,
            first_msn: 100,
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid timeline");
        for _ in 0..parts {
            t.push_part(PART).expect("part");
        }
        t.media_playlist(crate::publish::layout::rendition_names(), &[])
    }

    fn id(msn: u64, part: u32) -> PartId {
        PartId { msn, part }
    }

    #[test]
    fn open_segment_state() {
        let s = StreamState::from_playlist(&live_after(8));
        assert_eq!(s.open_msn(), 101);
        assert_eq!(s.last_part(), Some(id(101, 1)));
        assert_eq!(s.hint(), Some(id(101, 2)));
        assert_eq!(s.last_msn(), 101);
        assert_eq!(s.parts_in(100), Some(6));
        assert_eq!(s.parts_in(101), None);
        assert!(s.has_part(id(100, 5)) && s.has_part(id(101, 1)));
        assert!(!s.has_part(id(101, 2)) && !s.has_part(id(100, 6)));
        assert!(s.has_segment(100) && !s.has_segment(101));
        assert!(s.blocks());
        assert_eq!(s.target_duration(), 2);
        assert_eq!(s.skip_until(), Some(12 * 48_000));
        // Part 101.2 starts 1.92 + 0.64 s after the epoch and lasts 0.32 s.
        let due = s.hint_due().expect("dated");
        assert_eq!(due.timestamp_millis(), EPOCH_MS + 1920 + 640 + 320);
    }

    #[test]
    fn closed_segment_state() {
        let s = StreamState::from_playlist(&live_after(12));
        assert_eq!(s.open_msn(), 102);
        assert_eq!(s.last_part(), Some(id(101, 5)));
        assert_eq!(s.hint(), Some(id(102, 0)));
        assert_eq!(s.last_msn(), 101);
        let due = s.hint_due().expect("dated");
        assert_eq!(due.timestamp_millis(), EPOCH_MS + 2 * 1920 + 320);
    }

    #[test]
    fn aged_parts_are_counted_from_durations() {
        // 30 segments: the window keeps 12 and lists parts of the last ~3.
        let p = live_after(30 * 6 + 2);
        let s = StreamState::from_playlist(&p);
        let first = p.first_listed_msn();
        assert!(first > 100, "window slid");
        assert!(p.segments[0].parts.is_empty(), "old parts not listed");
        assert_eq!(s.listed_parts(first), None);
        assert_eq!(s.parts_in(first), Some(6));
        assert!(s.has_part(id(first, 5)));
        assert!(!s.has_part(id(first, 6)));
        // Segments that left the window recently stay servable for a while.
        assert!(s.has_segment(first - 1) && s.has_part(id(first - 1, 0)));
        assert!(!s.has_segment(first - 20));
        assert_eq!(s.nominal_parts(), 6);
    }

    #[test]
    fn finished_stream_has_no_hint_and_does_not_block() {
        let mut p = live_after(9);
        p.end_list = true;
        p.preload_hint = None;
        let s = StreamState::from_playlist(&p);
        assert!(s.ended() && !s.blocks());
        assert_eq!(s.hint(), None);
    }

    #[test]
    fn empty_playlist_is_harmless() {
        let p = MediaPlaylist::parse("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n")
            .expect("parses");
        let s = StreamState::from_playlist(&p);
        assert_eq!(s.last_part(), None);
        assert_eq!(s.hint(), None);
        assert!(!s.has_segment(0) && !s.has_part(id(0, 0)));
        assert_eq!(s.nominal_parts(), 1);
    }
}
