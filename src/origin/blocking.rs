//! What to answer a playlist or media request, given a rendition's
//! [`StreamState`]: now, later, or never. Pure: no IO, no clock; the driver
//! re-asks whenever the state changes and enforces the deadline.
//!
//! Rules (RFC 8216bis-16):
//! - 6.2.5.2 blocking reload: `_HLS_msn=M&_HLS_part=P` is answered once part
//!   P of segment M is published, with the immutable playlist as it stood
//!   then (`at/M.P.m3u8`), so every client asking the same question gets the
//!   same cacheable bytes. A P past the last part of a complete segment M
//!   means part 0 of segment M+1. `_HLS_msn=M` alone waits for segment M to
//!   be complete, answered with the playlist of its last part. Requests for
//!   things older than the parts still listed get the current playlist,
//!   which contains them. 400 when M is more than two past the last MSN, or
//!   P more than the Advance Part Limit past the last part (three seconds of
//!   parts when PART-TARGET is under a second, else three parts).
//! - Once the playlist has `EXT-X-ENDLIST` (or never offered blocking), the
//!   directives are ignored and the current playlist is the answer.
//! - 6.2.6 preload hints: the hinted part is worth waiting for; other media
//!   is served only if the playlist lists it (or listed it recently), so a
//!   made-up name costs no store request and no wait.

use crate::hls::PartId;
use crate::time::SAMPLE_RATE;

use super::request::{BlockTarget, MediaName};
use super::state::StreamState;

/// What to answer a media playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistDecision {
    /// Answer now with this playlist.
    Serve(PlaylistAnswer),
    /// Not yet: ask again when the state changes.
    Wait,
    /// 400: the request is beyond what the server will wait for.
    Reject(&'static str),
}

/// Which playlist answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistAnswer {
    /// The newest playlist (`live.m3u8` as it stands).
    Live,
    /// The immutable playlist as it stood when this part completed.
    At(PartId),
}

/// What to answer a media request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaDecision {
    /// The object is published (or was recently): read it.
    Fetch,
    /// The preload hint names it: wait until it is published.
    Wait,
    /// Neither listed nor hinted: 404 now.
    NotFound,
}

/// Decides a media playlist request with blocking target `target`.
pub fn decide_playlist(state: &StreamState, target: Option<BlockTarget>) -> PlaylistDecision {
    let Some(target) = target else {
        return PlaylistDecision::Serve(PlaylistAnswer::Live);
    };
    if !state.blocks() {
        return PlaylistDecision::Serve(PlaylistAnswer::Live);
    }
    let msn = match target {
        BlockTarget::Segment(msn) => msn,
        BlockTarget::Part(id) => id.msn,
    };
    if msn > state.last_msn().saturating_add(2) {
        return PlaylistDecision::Reject("_HLS_msn is more than two segments ahead");
    }
    match target {
        BlockTarget::Segment(msn) => segment_complete(state, msn),
        BlockTarget::Part(id) => {
            if beyond_advance_part_limit(state, id) {
                return PlaylistDecision::Reject("_HLS_part is beyond the Advance Part Limit");
            }
            part_published(state, id)
        }
    }
}

/// `_HLS_msn=M` alone: segment M complete.
fn segment_complete(state: &StreamState, msn: u64) -> PlaylistDecision {
    if msn >= state.open_msn() {
        return PlaylistDecision::Wait;
    }
    match state.listed_parts(msn) {
        Some(n) if n > 0 => {
            PlaylistDecision::Serve(PlaylistAnswer::At(PartId { msn, part: n - 1 }))
        }
        _ => PlaylistDecision::Serve(PlaylistAnswer::Live),
    }
}

/// `_HLS_msn=M&_HLS_part=P`, with P past a complete segment's last part
/// meaning part 0 of the next segment.
fn part_published(state: &StreamState, id: PartId) -> PlaylistDecision {
    let open = state.open_msn();
    if id.msn > open {
        return PlaylistDecision::Wait;
    }
    if id.msn == open {
        return if state.has_part(id) {
            PlaylistDecision::Serve(PlaylistAnswer::At(id))
        } else {
            PlaylistDecision::Wait
        };
    }
    match state.listed_parts(id.msn) {
        Some(n) if id.part < n => PlaylistDecision::Serve(PlaylistAnswer::At(id)),
        Some(_) => part_published(
            state,
            PartId {
                msn: id.msn + 1,
                part: 0,
            },
        ),
        // Older than the listed parts: the current playlist contains it.
        None => PlaylistDecision::Serve(PlaylistAnswer::Live),
    }
}

/// RFC 8216bis 6.2.5.2: the Advance Part Limit is 3 / PART-TARGET parts when
/// PART-TARGET is under one second, else 3. Parts ahead of the last listed
/// part are counted with the nominal parts per segment for later segments.
fn beyond_advance_part_limit(state: &StreamState, id: PartId) -> bool {
    let (Some(last), Some(pt)) = (state.last_part(), state.part_target()) else {
        return false;
    };
    let ahead: u64 = if id.msn <= last.msn {
        if id.msn == last.msn {
            u64::from(id.part.saturating_sub(last.part))
        } else {
            0
        }
    } else {
        let nominal = u64::from(state.nominal_parts());
        let rest_of_last = nominal.saturating_sub(u64::from(last.part) + 1);
        let between = (id.msn - last.msn - 1).saturating_mul(nominal);
        rest_of_last
            .saturating_add(between)
            .saturating_add(u64::from(id.part) + 1)
    };
    let second = u64::from(SAMPLE_RATE);
    if pt < second {
        // ahead > 3 s / PART-TARGET, in integers.
        u128::from(ahead) * u128::from(pt) > 3 * u128::from(second)
    } else {
        ahead > 3
    }
}

/// Decides a media request.
pub fn decide_media(state: &StreamState, name: MediaName) -> MediaDecision {
    let published = match name {
        MediaName::Init => true,
        MediaName::Segment(msn) => state.has_segment(msn),
        MediaName::Part(id) => state.has_part(id),
    };
    match name {
        _ if published => MediaDecision::Fetch,
        MediaName::Part(id) if state.hint() == Some(id) && !state.ended() => MediaDecision::Wait,
        _ => MediaDecision::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::state::tests::live_after;

    fn id(msn: u64, part: u32) -> PartId {
        PartId { msn, part }
    }

    fn part(msn: u64, part: u32) -> Option<BlockTarget> {
        Some(BlockTarget::Part(id(msn, part)))
    }

    fn at(msn: u64, part: u32) -> PlaylistDecision {
        PlaylistDecision::Serve(PlaylistAnswer::At(id(msn, part)))
    }

    const LIVE: PlaylistDecision = PlaylistDecision::Serve(PlaylistAnswer::Live);

    #[test]
    fn published_parts_are_answered_with_their_own_playlist() {
        // Segment 100 complete (6 parts), 101 has parts 0 and 1.
        let s = StreamState::from_playlist(&live_after(8));
        assert_eq!(decide_playlist(&s, None), LIVE);
        assert_eq!(decide_playlist(&s, part(101, 1)), at(101, 1));
        assert_eq!(decide_playlist(&s, part(100, 3)), at(100, 3));
        // Past segment 100's last part: part 0 of segment 101.
        assert_eq!(decide_playlist(&s, part(100, 6)), at(101, 0));
        assert_eq!(decide_playlist(&s, part(100, 9)), at(101, 0));
        // _HLS_msn alone: the segment complete, i.e. its last part.
        assert_eq!(
            decide_playlist(&s, Some(BlockTarget::Segment(100))),
            at(100, 5)
        );
    }

    #[test]
    fn future_parts_wait_within_the_limits() {
        let s = StreamState::from_playlist(&live_after(8));
        assert_eq!(decide_playlist(&s, part(101, 2)), PlaylistDecision::Wait);
        assert_eq!(decide_playlist(&s, part(102, 0)), PlaylistDecision::Wait);
        assert_eq!(
            decide_playlist(&s, Some(BlockTarget::Segment(101))),
            PlaylistDecision::Wait
        );
        assert_eq!(
            decide_playlist(&s, Some(BlockTarget::Segment(103))),
            PlaylistDecision::Wait
        );
        // 3 s / 0.32 s = 9.375 parts ahead of 101.1 at most.
        assert_eq!(decide_playlist(&s, part(101, 10)), PlaylistDecision::Wait);
        assert!(matches!(
            decide_playlist(&s, part(101, 11)),
            PlaylistDecision::Reject(_)
        ));
        // 102.4 is 4 + 5 = 9 parts ahead; 102.5 is 10.
        assert_eq!(decide_playlist(&s, part(102, 4)), PlaylistDecision::Wait);
        assert!(matches!(
            decide_playlist(&s, part(102, 5)),
            PlaylistDecision::Reject(_)
        ));
        // More than two segments ahead.
        assert!(matches!(
            decide_playlist(&s, Some(BlockTarget::Segment(104))),
            PlaylistDecision::Reject(_)
        ));
        assert!(matches!(
            decide_playlist(&s, part(104, 0)),
            PlaylistDecision::Reject(_)
        ));
    }

    #[test]
    fn a_part_past_the_open_segment_waits_for_the_segment_to_close() {
        let open = StreamState::from_playlist(&live_after(8));
        assert_eq!(decide_playlist(&open, part(101, 7)), PlaylistDecision::Wait);
        // Segment 101 closes with 6 parts: 101.7 means 102.0, still ahead.
        let closed = StreamState::from_playlist(&live_after(12));
        assert_eq!(
            decide_playlist(&closed, part(101, 7)),
            PlaylistDecision::Wait
        );
        let next = StreamState::from_playlist(&live_after(13));
        assert_eq!(decide_playlist(&next, part(101, 7)), at(102, 0));
    }

    #[test]
    fn old_requests_get_the_current_playlist() {
        let p = live_after(30 * 6 + 2);
        let s = StreamState::from_playlist(&p);
        let first = p.first_listed_msn();
        assert_eq!(decide_playlist(&s, part(first, 2)), LIVE);
        assert_eq!(decide_playlist(&s, part(first - 5, 0)), LIVE);
        assert_eq!(decide_playlist(&s, Some(BlockTarget::Segment(first))), LIVE);
    }

    #[test]
    fn directives_are_ignored_once_the_stream_ended() {
        let mut p = live_after(8);
        p.end_list = true;
        p.preload_hint = None;
        let s = StreamState::from_playlist(&p);
        for target in [part(101, 2), part(500, 0), Some(BlockTarget::Segment(900))] {
            assert_eq!(decide_playlist(&s, target), LIVE, "{target:?}");
        }
        assert_eq!(
            decide_media(&s, MediaName::Part(id(101, 2))),
            MediaDecision::NotFound
        );
    }

    #[test]
    fn media_is_fetched_only_when_listed_and_awaited_only_when_hinted() {
        let s = StreamState::from_playlist(&live_after(8));
        let media = |name| decide_media(&s, name);
        assert_eq!(media(MediaName::Init), MediaDecision::Fetch);
        assert_eq!(media(MediaName::Segment(100)), MediaDecision::Fetch);
        assert_eq!(media(MediaName::Part(id(101, 1))), MediaDecision::Fetch);
        assert_eq!(media(MediaName::Part(id(101, 2))), MediaDecision::Wait);
        for name in [
            MediaName::Segment(101),
            MediaName::Segment(5_000),
            MediaName::Part(id(101, 3)),
            MediaName::Part(id(102, 0)),
            MediaName::Part(id(100, 6)),
            MediaName::Part(id(0, 0)),
        ] {
            assert_eq!(media(name), MediaDecision::NotFound, "{name:?}");
        }
    }

    #[test]
    fn limits_use_part_counts_for_long_part_targets() {
        // A 2 s part target: the limit is three parts.
        let text = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=6.0\n\
            #EXT-X-PART-INF:PART-TARGET=2.0\n#EXT-X-MEDIA-SEQUENCE:0\n\
            #EXT-X-PART:DURATION=2.0,URI=\"0.0.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"0.1.m4s\"\n";
        let p = crate::hls::MediaPlaylist::parse(text).expect("parses");
        let s = StreamState::from_playlist(&p);
        assert_eq!(decide_playlist(&s, part(0, 3)), PlaylistDecision::Wait);
        assert!(matches!(
            decide_playlist(&s, part(0, 4)),
            PlaylistDecision::Reject(_)
        ));
    }
}
