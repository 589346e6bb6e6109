//! Conformance checks for media playlists, for tests and debug builds.
//!
//! [`check`] verifies the RFC 8216bis rules onair relies on (and onair's own
//! stricter choices, marked as such) on a [`MediaPlaylist`] and lists every
//! violation; an empty list means the playlist passed. [`check_named`] adds
//! the checks that need the rendition's naming pattern: segment and part URIs
//! carry the right Media Sequence Numbers, and the preload hint names exactly
//! the next part.
//!
//! Durations compare in samples. `EXT-X-PROGRAM-DATE-TIME` has millisecond
//! precision, so date continuity is exact to the millisecond.

use crate::hls::playlist::{HintType, MediaPlaylist, Part};
use crate::hls::timeline::{PartId, RenditionNames, uri_is_writable};
use crate::time::SAMPLE_RATE;

/// One broken rule, with enough context to find the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Parts are listed but `EXT-X-PART-INF` is missing (4.4.3.7).
    #[error("playlist lists parts without EXT-X-PART-INF")]
    MissingPartInf,
    /// A part is longer than `PART-TARGET` (4.4.4.9).
    #[error(
        "part {part} of segment {msn} lasts {duration} samples, over PART-TARGET {part_target}"
    )]
    PartTooLong {
        /// Segment.
        msn: u64,
        /// Part index.
        part: usize,
        /// Part duration.
        duration: u64,
        /// `PART-TARGET`.
        part_target: u64,
    },
    /// A part other than its segment's last is under 85 % of `PART-TARGET`
    /// (4.4.4.9).
    #[error(
        "part {part} of segment {msn} lasts {duration} samples, under 85 % of PART-TARGET {part_target}"
    )]
    PartTooShort {
        /// Segment.
        msn: u64,
        /// Part index.
        part: usize,
        /// Part duration.
        duration: u64,
        /// `PART-TARGET`.
        part_target: u64,
    },
    /// A segment's listed parts do not add up to its `EXTINF` (4.4.4.9: the
    /// parts of a segment together are the segment).
    #[error("parts of segment {msn} sum to {parts} samples, EXTINF says {extinf}")]
    PartsDoNotSumToSegment {
        /// Segment.
        msn: u64,
        /// Sum of the parts.
        parts: u64,
        /// The segment's duration.
        extinf: u64,
    },
    /// `EXTINF` rounded to the nearest second exceeds `EXT-X-TARGETDURATION`
    /// (4.4.3.1).
    #[error("segment {msn} lasts {duration} samples, over target duration {target_duration} s")]
    SegmentOverTarget {
        /// Segment.
        msn: u64,
        /// Segment duration.
        duration: u64,
        /// `EXT-X-TARGETDURATION`.
        target_duration: u64,
    },
    /// `PART-HOLD-BACK` is missing although parts are listed (4.4.3.8), or
    /// below 3 x `PART-TARGET` (onair's choice; the RFC minimum is 2 x).
    #[error("PART-HOLD-BACK {part_hold_back:?} is below {minimum} samples")]
    PartHoldBackTooSmall {
        /// The value, if present.
        part_hold_back: Option<u64>,
        /// 3 x `PART-TARGET`.
        minimum: u64,
    },
    /// `HOLD-BACK` is below 3 x target duration (4.4.3.8).
    #[error("HOLD-BACK {hold_back} is below {minimum} samples")]
    HoldBackTooSmall {
        /// The value.
        hold_back: u64,
        /// 3 x target duration.
        minimum: u64,
    },
    /// `CAN-SKIP-UNTIL` is below 6 x target duration (4.4.3.8).
    #[error("CAN-SKIP-UNTIL {can_skip_until} is below {minimum} samples")]
    SkipBoundaryTooSmall {
        /// The value.
        can_skip_until: u64,
        /// 6 x target duration.
        minimum: u64,
    },
    /// A segment's date is not the previous date plus the durations since,
    /// and no discontinuity separates them.
    #[error("segment {msn} is dated {actual_ms} ms, expected {expected_ms} ms")]
    DateDiscontinuity {
        /// Segment (the open segment counts).
        msn: u64,
        /// Its date, ms since the Unix epoch.
        actual_ms: i64,
        /// Previous date plus durations since, ms (rounded down).
        expected_ms: i64,
    },
    /// A preload hint in a playlist that has ended.
    #[error("EXT-X-PRELOAD-HINT after EXT-X-ENDLIST")]
    HintAfterEndList,
    /// The preload hint names a part that is already listed.
    #[error("preload hint {uri} names a listed part")]
    HintNamesListedPart {
        /// The hint's URI.
        uri: String,
    },
    /// The preload hint does not name the part right after the last listed
    /// one.
    #[error("preload hint {actual} should name {expected}")]
    HintNotNextPart {
        /// The hint's URI.
        actual: String,
        /// URI of the next part.
        expected: String,
    },
    /// A segment or part URI does not carry the expected Media Sequence
    /// Number (numbering must be consecutive, 4.4.3.2).
    #[error("URI {actual} should be {expected}")]
    MisnumberedUri {
        /// URI in the playlist.
        actual: String,
        /// URI the numbering implies.
        expected: String,
    },
    /// A URI that cannot be written into a playlist line or quoted-string.
    #[error("URI {uri:?} contains characters a playlist cannot carry")]
    UnwritableUri {
        /// The URI.
        uri: String,
    },
}

/// Checks the rules that need nothing but the playlist.
pub fn check(playlist: &MediaPlaylist) -> Vec<Violation> {
    let mut out = Vec::new();
    let rate = u64::from(SAMPLE_RATE);
    let td = playlist.target_duration.saturating_mul(rate);
    let first_msn = playlist.first_listed_msn();
    let open_parts = playlist.open.as_ref().map_or(&[][..], |o| &o.parts[..]);
    let any_parts = !open_parts.is_empty() || playlist.segments.iter().any(|s| !s.parts.is_empty());

    // Server control and part information (4.4.3.7, 4.4.3.8).
    if any_parts && playlist.part_target.is_none() {
        out.push(Violation::MissingPartInf);
    }
    let sc = playlist.server_control.unwrap_or_default();
    if let Some(pt) = playlist.part_target {
        let minimum = pt.saturating_mul(3);
        if sc.part_hold_back.is_none_or(|v| v < minimum) {
            out.push(Violation::PartHoldBackTooSmall {
                part_hold_back: sc.part_hold_back,
                minimum,
            });
        }
    }
    if let Some(hold_back) = sc.hold_back {
        let minimum = td.saturating_mul(3);
        if hold_back < minimum {
            out.push(Violation::HoldBackTooSmall { hold_back, minimum });
        }
    }
    if let Some(can_skip_until) = sc.can_skip_until {
        let minimum = td.saturating_mul(6);
        if can_skip_until < minimum {
            out.push(Violation::SkipBoundaryTooSmall {
                can_skip_until,
                minimum,
            });
        }
    }

    // Segments: duration, parts, dates.
    // Start instant of the next segment implied by the dates so far.
    let mut expected: Option<i128> = None;
    for (i, s) in playlist.segments.iter().enumerate() {
        let msn = first_msn.saturating_add(i as u64);
        // 4.4.3.1: the duration rounded to the nearest integer second.
        let rounded = s.duration.saturating_add(rate / 2) / rate;
        if rounded > playlist.target_duration {
            out.push(Violation::SegmentOverTarget {
                msn,
                duration: s.duration,
                target_duration: playlist.target_duration,
            });
        }
        check_parts(playlist, msn, &s.parts, true, &mut out);
        if !s.parts.is_empty() {
            let sum = s
                .parts
                .iter()
                .fold(0u64, |a, p| a.saturating_add(p.duration));
            if sum != s.duration {
                out.push(Violation::PartsDoNotSumToSegment {
                    msn,
                    parts: sum,
                    extinf: s.duration,
                });
            }
        }
        check_date(
            msn,
            s.discontinuity,
            s.program_date_time.map(|d| d.timestamp_millis()),
            &mut expected,
            &mut out,
        );
        expected = expected.map(|t| t + i128::from(s.duration));
        for uri in std::iter::once(&s.uri).chain(s.parts.iter().map(|p| &p.uri)) {
            check_uri(uri, &mut out);
        }
        if let Some(m) = &s.map {
            check_uri(&m.uri, &mut out);
        }
    }
    if let Some(o) = &playlist.open {
        let msn = playlist.open_msn();
        // The open segment's last part is not known to be its last.
        check_parts(playlist, msn, &o.parts, false, &mut out);
        check_date(
            msn,
            o.discontinuity,
            o.program_date_time.map(|d| d.timestamp_millis()),
            &mut expected,
            &mut out,
        );
        for p in &o.parts {
            check_uri(&p.uri, &mut out);
        }
    }

    // Preload hint (4.4.5.3).
    if let Some(h) = &playlist.preload_hint {
        check_uri(&h.uri, &mut out);
        if playlist.end_list {
            out.push(Violation::HintAfterEndList);
        }
        let listed = playlist
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(open_parts.iter());
        if h.hint_type == HintType::Part && listed.clone().any(|p| p.uri == h.uri) {
            out.push(Violation::HintNamesListedPart { uri: h.uri.clone() });
        }
    }
    for r in &playlist.rendition_reports {
        check_uri(&r.uri, &mut out);
    }
    out
}

/// [`check`] plus the rules that need the rendition's names: every segment
/// and part URI carries its Media Sequence Number and index (so numbering is
/// consecutive), and a part preload hint names the part right after the last
/// listed one (the next index in the open segment, or part 0 of the next
/// segment when the last one is complete).
pub fn check_named(playlist: &MediaPlaylist, names: &RenditionNames) -> Vec<Violation> {
    let mut out = check(playlist);
    let first_msn = playlist.first_listed_msn();
    let mut expect = |actual: &str, expected: String| {
        if actual != expected {
            out.push(Violation::MisnumberedUri {
                actual: actual.to_owned(),
                expected,
            });
        }
    };
    for (i, s) in playlist.segments.iter().enumerate() {
        let msn = first_msn.saturating_add(i as u64);
        expect(&s.uri, names.segment_uri(msn));
        for (j, p) in s.parts.iter().enumerate() {
            expect(
                &p.uri,
                names.part_uri(PartId {
                    msn,
                    part: j as u32,
                }),
            );
        }
    }
    let open_msn = playlist.open_msn();
    let open_parts = playlist.open.as_ref().map_or(0, |o| o.parts.len());
    if let Some(o) = &playlist.open {
        for (j, p) in o.parts.iter().enumerate() {
            expect(
                &p.uri,
                names.part_uri(PartId {
                    msn: open_msn,
                    part: j as u32,
                }),
            );
        }
    }
    if let Some(h) = &playlist.preload_hint
        && h.hint_type == HintType::Part
    {
        let next = names.part_uri(PartId {
            msn: open_msn,
            part: open_parts as u32,
        });
        if h.uri != next {
            out.push(Violation::HintNotNextPart {
                actual: h.uri.clone(),
                expected: next,
            });
        }
    }
    out
}

fn check_parts(
    playlist: &MediaPlaylist,
    msn: u64,
    parts: &[Part],
    complete: bool,
    out: &mut Vec<Violation>,
) {
    let Some(part_target) = playlist.part_target else {
        return;
    };
    for (i, p) in parts.iter().enumerate() {
        if p.duration > part_target {
            out.push(Violation::PartTooLong {
                msn,
                part: i,
                duration: p.duration,
                part_target,
            });
        }
        let last_of_segment = complete && i + 1 == parts.len();
        if !last_of_segment && p.duration.saturating_mul(100) < part_target.saturating_mul(85) {
            out.push(Violation::PartTooShort {
                msn,
                part: i,
                duration: p.duration,
                part_target,
            });
        }
    }
}

/// Compares a segment's date with the instant its predecessors imply.
///
/// `expected` is that instant in samples since the Unix epoch (dates carried
/// forward through undated segments); it is `None` at the start and after a
/// discontinuity. Dates are whole milliseconds, so a date must be the
/// expected instant rounded down to the millisecond.
fn check_date(
    msn: u64,
    discontinuity: bool,
    date_ms: Option<i64>,
    expected: &mut Option<i128>,
    out: &mut Vec<Violation>,
) {
    let per_ms = i128::from(SAMPLE_RATE / 1000);
    if discontinuity {
        *expected = None;
    }
    let Some(actual_ms) = date_ms else {
        return;
    };
    let actual = i128::from(actual_ms) * per_ms;
    if let Some(want) = *expected
        && (actual > want || want - actual >= per_ms)
    {
        out.push(Violation::DateDiscontinuity {
            msn,
            actual_ms,
            expected_ms: i64::try_from(want.div_euclid(per_ms)).unwrap_or(i64::MAX),
        });
    }
    *expected = Some(actual);
}

fn check_uri(uri: &str, out: &mut Vec<Violation>) {
    if !uri_is_writable(uri) {
        out.push(Violation::UnwritableUri {
            uri: uri.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::playlist::{PreloadHint, Segment};
    use crate::hls::timeline::TimelineConfig;

    const PART: u64 = 15_360;

    /// A valid live playlist: 8 segments and 2 parts of the ninth.
    fn good() -> MediaPlaylist {
        let mut t = TimelineConfig {
            epoch_unix_ms: 1_764_300_000_000,
            ..TimelineConfig::default()
        }
        .build()
        .expect("valid");
        for _ in 0..50 {
            t.push_part(PART).expect("part");
        }
        let p = t.media_playlist(&RenditionNames::for_tests(), &[]);
        assert_eq!(check_named(&p, &RenditionNames::for_tests()), Vec::new());
        p
    }

    fn last_with_parts(p: &mut MediaPlaylist) -> &mut Segment {
        p.segments.last_mut().expect("segments")
    }

    fn violations(p: &MediaPlaylist) -> Vec<Violation> {
        check_named(p, &RenditionNames::for_tests())
    }

    #[test]
    fn long_and_short_parts() {
        let mut p = good();
        let s = last_with_parts(&mut p);
        s.parts[2].duration = PART + 48;
        s.parts[3].duration = PART - 48;
        let v = violations(&p);
        assert!(v.contains(&Violation::PartTooLong {
            msn: 7,
            part: 2,
            duration: PART + 48,
            part_target: PART
        }));
        // Sum unchanged, so only the per-part rules fire.
        assert_eq!(v.len(), 1, "{v:?}");

        let mut p = good();
        let s = last_with_parts(&mut p);
        s.parts[0].duration = PART * 80 / 100;
        s.parts[5].duration = PART * 120 / 100 - PART * 80 / 100 + PART - PART / 5;
        let v = violations(&p);
        assert!(v.contains(&Violation::PartTooShort {
            msn: 7,
            part: 0,
            duration: PART * 80 / 100,
            part_target: PART
        }));
        // A short last part of a complete segment is allowed, of an open
        // segment not.
        let mut p = good();
        let s = last_with_parts(&mut p);
        s.parts[5].duration = PART / 2;
        s.duration -= PART / 2;
        // The open segment starts 160 ms earlier then.
        if let Some(o) = p.open.as_mut() {
            o.program_date_time = o
                .program_date_time
                .map(|d| d - chrono::TimeDelta::milliseconds(160));
        }
        assert_eq!(violations(&p), Vec::new());
        let mut p = good();
        if let Some(o) = p.open.as_mut() {
            o.parts[1].duration = PART / 2;
        }
        assert_eq!(
            violations(&p),
            vec![Violation::PartTooShort {
                msn: 8,
                part: 1,
                duration: PART / 2,
                part_target: PART
            }]
        );
    }

    #[test]
    fn parts_must_sum_to_extinf() {
        let mut p = good();
        last_with_parts(&mut p).duration += 48;
        let v = violations(&p);
        assert!(v.contains(&Violation::PartsDoNotSumToSegment {
            msn: 7,
            parts: 6 * PART,
            extinf: 6 * PART + 48
        }));
    }

    #[test]
    fn segment_over_target() {
        let mut p = good();
        p.segments[0].duration = 120_000; // 2.5 s rounds to 3 > 2
        let v = violations(&p);
        assert!(v.contains(&Violation::SegmentOverTarget {
            msn: 0,
            duration: 120_000,
            target_duration: 2
        }));
        // 2.49 s rounds to 2: allowed by 4.4.3.1 (dates now break, though).
        let mut p = good();
        p.segments[0].duration = 119_520;
        assert!(
            !violations(&p)
                .iter()
                .any(|v| matches!(v, Violation::SegmentOverTarget { .. }))
        );
    }

    #[test]
    fn hold_backs_and_skip_boundary() {
        let mut p = good();
        let sc = p.server_control.as_mut().expect("server control");
        sc.part_hold_back = Some(2 * PART);
        sc.hold_back = Some(5 * 48_000);
        sc.can_skip_until = Some(11 * 48_000);
        assert_eq!(
            violations(&p),
            vec![
                Violation::PartHoldBackTooSmall {
                    part_hold_back: Some(2 * PART),
                    minimum: 3 * PART
                },
                Violation::HoldBackTooSmall {
                    hold_back: 5 * 48_000,
                    minimum: 6 * 48_000
                },
                Violation::SkipBoundaryTooSmall {
                    can_skip_until: 11 * 48_000,
                    minimum: 12 * 48_000
                },
            ]
        );
        let mut p = good();
        p.part_target = None;
        assert_eq!(violations(&p), vec![Violation::MissingPartInf]);
    }

    #[test]
    fn date_continuity() {
        let mut p = good();
        let d = p.segments[3].program_date_time.expect("dated");
        p.segments[3].program_date_time = Some(d + chrono::TimeDelta::milliseconds(1));
        let v = violations(&p);
        // Segment 3 is late, so segment 4 is early relative to it.
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(v[0], Violation::DateDiscontinuity { msn: 3, .. }));
        // A discontinuity excuses the jump into segment 3.
        p.segments[3].discontinuity = true;
        let v = violations(&p);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(v[0], Violation::DateDiscontinuity { msn: 4, .. }));
        // The open segment is checked too.
        let mut p = good();
        if let Some(o) = p.open.as_mut() {
            o.program_date_time = o
                .program_date_time
                .map(|d| d - chrono::TimeDelta::milliseconds(1));
        }
        assert!(matches!(
            violations(&p).as_slice(),
            [Violation::DateDiscontinuity { msn: 8, .. }]
        ));
    }

    #[test]
    fn preload_hint_rules() {
        let mut p = good();
        p.end_list = true;
        assert_eq!(violations(&p), vec![Violation::HintAfterEndList]);

        let mut p = good();
        p.preload_hint = Some(PreloadHint {
            hint_type: HintType::Part,
            uri: "8.1.m4s".into(),
        });
        assert_eq!(
            violations(&p),
            vec![
                Violation::HintNamesListedPart {
                    uri: "8.1.m4s".into()
                },
                Violation::HintNotNextPart {
                    actual: "8.1.m4s".into(),
                    expected: "8.2.m4s".into()
                }
            ]
        );
        // With the open segment gone, the next part is part 0 of the next MSN.
        let mut p = good();
        p.open = None;
        assert_eq!(
            violations(&p),
            vec![Violation::HintNotNextPart {
                actual: "8.2.m4s".into(),
                expected: "8.0.m4s".into()
            }]
        );
    }

    #[test]
    fn numbering_and_uris() {
        let mut p = good();
        p.segments[2].uri = "3.m4s".into();
        assert_eq!(
            violations(&p),
            vec![Violation::MisnumberedUri {
                actual: "3.m4s".into(),
                expected: "2.m4s".into()
            }]
        );
        let mut p = good();
        p.media_sequence += 1;
        assert!(violations(&p).len() > 8);
        let mut p = good();
        p.segments[0].uri = "a\nb".into();
        assert!(violations(&p).contains(&Violation::UnwritableUri { uri: "a\nb".into() }));
    }
}
