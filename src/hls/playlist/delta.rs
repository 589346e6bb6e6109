//! Playlist Delta Updates: [`MediaPlaylist::delta`] and
//! [`MediaPlaylist::delta_v2`].
//!
//! Implements the server side of RFC 8216bis 6.2.5.1: in answer to
//! `_HLS_skip=YES` (or `v2`), the oldest segments before the Skip Boundary
//! (`CAN-SKIP-UNTIL`, 4.4.3.8) are replaced by one `EXT-X-SKIP` tag
//! (4.4.5.2), so a client polling a long window downloads only its recent
//! end. The update stays a valid playlist on its own: the first remaining
//! segment carries the `EXT-X-MAP` (4.4.4.5) and `EXT-X-PROGRAM-DATE-TIME`
//! (4.4.4.6) the skipped ones established.

use super::{Map, MediaPlaylist, ProgramDateTime, Skip, add_samples};

impl MediaPlaylist {
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

    /// Both forms: `dateranges` is the `RECENTLY-REMOVED-DATERANGES` list,
    /// `None` for `_HLS_skip=YES`.
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

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

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
}
