//! Where a live run sits on its stream's timeline.
//!
//! A live stream's timeline is locked to the wall clock: program time is the
//! time since the stream's **epoch** in 48 kHz samples, segment `n` covers
//! program time `[n × S, (n + 1) × S)` for the nominal segment duration
//! `S`, `tfdt` is program time plus the codec delay and
//! `EXT-X-PROGRAM-DATE-TIME` is epoch plus program time (the idea of epoch
//! locking in AWS Elemental MediaLive and of EpochSegmentSync in Unified
//! Streaming). The epoch and the settings that fix names and bytes (part and
//! segment durations, the AAC bitrate written in its init segment) are
//! stored with the stream once, in [`StreamTiming`] at `{stream}/timing.json`,
//! by a conditional create: every process that broadcasts the stream, now or
//! after a restart, computes the same names for the same instant.
//!
//! A run starts on the segment boundary at or before the clock's "now"
//! (the part of that segment already past is produced at once, as silence
//! before any host has connected), and never below the last segment an
//! earlier run listed + 1, so no name is ever reused and no Media Sequence
//! Number goes backwards even if the wall clock was stepped back. The
//! earlier run's segments still in the window are listed again, then
//! `EXT-X-GAP` segments (with silent objects stored under them) for the
//! span no process was publishing, then the new run's own.
//!
//! Clocks: the design assumes an NTP-disciplined wall clock. Two machines a
//! few milliseconds apart compute the same part for all but those few
//! milliseconds at a part boundary; a skew up to about one part (320 ms)
//! only moves where a restarted run's first segment starts, never a name.
//! During a run only the monotonic clock paces program time (see
//! [`ProgramClock`]): a wall-clock step is logged by the live loop, not
//! followed.

use std::time::{Instant, SystemTime};

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::hls::{EarlierSegment, ExpiredSegment, MediaPlaylist, TimelineConfig};
use crate::pipeline::{PipelineConfig, RENDITIONS};
use crate::publish::Store;
use crate::publish::layout::{self, RenditionPath};
use crate::time::{ProgramClock, ProgramTime, SAMPLE_RATE, rescale};

use super::RunError;

/// Version of the [`StreamTiming`] record this build writes and reads.
const TIMING_VERSION: u32 = 1;

/// The timing a stream keeps for life (see the module docs), stored as JSON
/// at [`layout::timing_key`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamTiming {
    /// Format version.
    pub version: u32,
    /// Wall clock of program time 0, milliseconds since the Unix epoch.
    pub epoch_unix_ms: i64,
    /// Program samples per second.
    pub sample_rate: u32,
    /// Part target in samples: with the parts per segment, the names.
    pub part_samples: u64,
    /// Parts per segment.
    pub parts_per_segment: u32,
    /// AAC bitrate, bits per second: written in the AAC init segment, which
    /// is immutable.
    pub aac_bitrate: u32,
}

impl StreamTiming {
    /// The record a run of `cfg` would create, with `epoch_unix_ms`.
    fn wanted(cfg: &PipelineConfig, epoch_unix_ms: i64) -> Self {
        Self {
            version: TIMING_VERSION,
            epoch_unix_ms,
            sample_rate: SAMPLE_RATE,
            part_samples: cfg.packager.timeline.part_target,
            parts_per_segment: cfg.packager.timeline.parts_per_segment,
            aac_bitrate: cfg.aac.bitrate,
        }
    }

    /// Nominal segment duration in samples.
    fn segment(&self) -> u64 {
        self.part_samples
            .saturating_mul(u64::from(self.parts_per_segment))
            .max(1)
    }

    /// The first setting in which `self` (stored) and `wanted` differ.
    fn mismatch(&self, wanted: &Self) -> Option<(&'static str, String, String)> {
        let fields = [
            (
                "version",
                self.version.to_string(),
                wanted.version.to_string(),
            ),
            (
                "sample rate",
                self.sample_rate.to_string(),
                wanted.sample_rate.to_string(),
            ),
            (
                "part duration (samples)",
                self.part_samples.to_string(),
                wanted.part_samples.to_string(),
            ),
            (
                "parts per segment",
                self.parts_per_segment.to_string(),
                wanted.parts_per_segment.to_string(),
            ),
            (
                "AAC bitrate",
                self.aac_bitrate.to_string(),
                wanted.aac_bitrate.to_string(),
            ),
        ];
        fields.into_iter().find(|(_, stored, want)| stored != want)
    }
}

/// The stream's timing record could not be used. Nothing was published.
#[derive(Debug, thiserror::Error)]
pub enum TimingError {
    /// The store could not be read or written.
    #[error("cannot use {key} on {store}: {source}")]
    Store {
        /// Object key.
        key: String,
        /// Store URL.
        store: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The record is not one this build understands.
    #[error(
        "{key} on {store} is not a timing record this onair understands ({reason}); \
         broadcast under another stream name, or delete the stream's objects to start it afresh"
    )]
    Corrupt {
        /// Object key.
        key: String,
        /// Store URL.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// The run's settings differ from the ones the stream was started with.
    #[error(
        "stream {stream:?} was started with {setting} {stored}, this run asks for {wanted}: \
         a stream keeps its timing for life (its object names and init segments depend on it); \
         use the stream's settings or another stream name"
    )]
    Mismatch {
        /// Stream name.
        stream: String,
        /// The setting.
        setting: &'static str,
        /// Stored value.
        stored: String,
        /// This run's value.
        wanted: String,
    },
}

/// Locks a live run of `cfg` to its stream's timeline: reads the stream's
/// last media playlist and its timing record (creating the record for a
/// new stream), and sets the timeline's epoch, start, first Media Sequence
/// Number and the earlier run's segments. Returns the program clock the
/// run and its ingest share.
pub async fn lock_to_stream(
    store: &Store,
    cfg: &mut PipelineConfig,
) -> Result<ProgramClock, RunError> {
    lock_to_stream_as(store, cfg, false).await
}

/// [`lock_to_stream`] for a member of a standby group (`standby`): when
/// another member holds a fresh lease, the stream is live, and the open
/// segment of its playlist is one the leader is completing, not one a
/// killed run left: it is listed again as a whole segment of the nominal
/// parts, as the leader will list it, rather than as a gap. So the
/// member's playlists equal the leader's from its first segment on, and a
/// takeover changes nothing already listed.
pub async fn lock_to_stream_as(
    store: &Store,
    cfg: &mut PipelineConfig,
    standby: bool,
) -> Result<ProgramClock, RunError> {
    let stream = cfg.packager.stream.clone();
    let earlier = last_playlist(store, &stream).await?;
    let leader_live = standby
        && {
            let now = chrono::Utc::now().timestamp_millis();
            match crate::publish::standby::newest_lease(store.object_store().as_ref(), &stream)
                .await
            {
                Ok(lease) => lease.is_some_and(|l| l.expires_unix_ms > now),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the stream's lease; taking its open segment for a killed run's");
                    false
                }
            }
        };
    let instant = Instant::now();
    let now_unix_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    // A new record puts the clock's segment right after whatever the stream
    // listed before (a stream first published by an onair without timing
    // records), so nothing is skipped.
    let next_msn = earlier.as_ref().map_or(0, next_msn);
    let segment_ms = rescale(
        cfg.packager.timeline.part_target * u64::from(cfg.packager.timeline.parts_per_segment),
        SAMPLE_RATE,
        1000,
    );
    let epoch = now_unix_ms
        .saturating_sub(i64::try_from(next_msn.saturating_mul(segment_ms)).unwrap_or(i64::MAX));
    let (timing, created) =
        load_or_create(store, &stream, StreamTiming::wanted(cfg, epoch)).await?;
    let legacy = created && earlier.is_some();
    let plan = plan(
        &timing,
        earlier.as_ref(),
        legacy,
        leader_live,
        now_unix_ms,
        &mut cfg.packager.timeline,
    );
    if let Some(behind) = plan.clock_behind {
        tracing::warn!(
            behind_ms = crate::time::millis(behind),
            "the wall clock is behind the stream's last published segment: \
             this run's timeline runs ahead of the wall clock by that much"
        );
    }
    let timeline = &cfg.packager.timeline;
    tracing::info!(
        epoch_unix_ms = timing.epoch_unix_ms,
        first_msn = timeline.first_msn,
        start_ms = crate::time::millis(timeline.start.samples()),
        relisted = timeline.earlier.len(),
        new_stream = created && !legacy,
        "stream timeline locked to the wall clock"
    );
    Ok(ProgramClock::anchored(instant, plan.now))
}

/// What [`plan`] decided beyond the timeline settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    /// Program time at the instant the plan was made: the clock's anchor.
    now: ProgramTime,
    /// How far the wall clock was behind the first segment the run may use
    /// (a clock stepped back): the run's clock is anchored there instead.
    clock_behind: Option<u64>,
}

/// Sets `timeline` for a run of the stream `timing` describes at
/// `now_unix_ms`, after the `earlier` playlist (`legacy`: published before
/// the stream had a timing record, on a timeline of its own).
fn plan(
    timing: &StreamTiming,
    earlier: Option<&MediaPlaylist>,
    legacy: bool,
    leader_live: bool,
    now_unix_ms: i64,
    timeline: &mut TimelineConfig,
) -> Plan {
    let segment = timing.segment();
    let since_epoch = u64::try_from(now_unix_ms.saturating_sub(timing.epoch_unix_ms)).unwrap_or(0);
    let clock = ProgramTime::from_samples(rescale(since_epoch, 1000, SAMPLE_RATE));
    let first_msn = (clock.samples() / segment).max(earlier.map_or(0, next_msn));
    let start = ProgramTime::from_samples(first_msn.saturating_mul(segment));
    // Up to one segment ahead is the normal wait for a boundary after a
    // quick restart; more means the wall clock went back.
    let clock_behind = (start.since(clock) > segment).then(|| start.since(clock));
    timeline.epoch_unix_ms = timing.epoch_unix_ms;
    timeline.first_msn = first_msn;
    timeline.start = start;
    if let Some(playlist) = earlier {
        if legacy {
            timeline.inherited = listed_segments(playlist);
            timeline.discontinuity_sequence = playlist.discontinuity_sequence
                + playlist.segments.iter().filter(|s| s.discontinuity).count() as u64
                + 1;
            timeline.start_discontinuity = true;
        } else {
            let open = if leader_live {
                OpenSegment::Completing {
                    part_target: timeline.part_target,
                    parts: timeline.parts_per_segment,
                }
            } else {
                OpenSegment::Killed
            };
            timeline.earlier = earlier_segments(playlist, segment, open);
            timeline.discontinuity_sequence = playlist.discontinuity_sequence;
        }
    }
    Plan {
        now: if clock_behind.is_some() { start } else { clock },
        clock_behind,
    }
}

/// The first Media Sequence Number after everything `playlist` lists (its
/// open segment too, once it has a part).
fn next_msn(playlist: &MediaPlaylist) -> u64 {
    let open_has_parts = playlist.open.as_ref().is_some_and(|o| !o.parts.is_empty());
    playlist.open_msn() + u64::from(open_has_parts)
}

/// Parts stored for a listed segment: as listed, or for a segment whose
/// parts have aged out of the playlist, its duration in whole part targets
/// (every live segment was stored part by part).
fn stored_parts(duration: u64, listed: usize, part_target: u64) -> u32 {
    if listed == 0 && part_target > 0 {
        u32::try_from(duration.div_ceil(part_target)).unwrap_or(u32::MAX)
    } else {
        u32::try_from(listed).unwrap_or(u32::MAX)
    }
}

/// The segments `playlist` lists, the open one included, with how many
/// parts each stored: what a run that does not list them again deletes.
fn listed_segments(playlist: &MediaPlaylist) -> Vec<ExpiredSegment> {
    let part_target = playlist.part_target.unwrap_or(0);
    let mut out: Vec<ExpiredSegment> = playlist
        .segments
        .iter()
        .zip(playlist.first_listed_msn()..)
        .map(|(segment, msn)| ExpiredSegment {
            msn,
            parts: if segment.gap {
                0
            } else {
                stored_parts(segment.duration, segment.parts.len(), part_target)
            },
        })
        .collect();
    if let Some(open) = playlist.open.as_ref().filter(|o| !o.parts.is_empty()) {
        out.push(ExpiredSegment {
            msn: playlist.open_msn(),
            parts: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
        });
    }
    out
}

/// What the open segment of the playlist a run starts after is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenSegment {
    /// A killed run's: parts but never a segment object.
    Killed,
    /// A live leader's (a standby group): it will complete it with
    /// `parts` parts of `part_target`.
    Completing { part_target: u64, parts: u32 },
}

/// The segments of a playlist on the stream's own timeline, for a new run
/// to list again. The open segment of a run that never finished (killed)
/// has parts but no segment object: it becomes a gap of the nominal
/// duration, with a silent segment stored under its name by the new run.
/// The open segment of a live leader is listed as it will be completed.
fn earlier_segments(
    playlist: &MediaPlaylist,
    segment: u64,
    open_segment: OpenSegment,
) -> Vec<EarlierSegment> {
    let part_target = playlist.part_target.unwrap_or(0);
    let mut out: Vec<EarlierSegment> = playlist
        .segments
        .iter()
        .zip(playlist.first_listed_msn()..)
        .map(|(s, msn)| EarlierSegment {
            msn,
            start: ProgramTime::from_samples(msn.saturating_mul(segment)),
            duration: s.duration,
            parts: s.parts.iter().map(|p| p.duration).collect(),
            stored_parts: if s.gap {
                0
            } else {
                stored_parts(s.duration, s.parts.len(), part_target)
            },
            discontinuity: s.discontinuity,
            gap: s.gap,
        })
        .collect();
    if let Some(open) = playlist.open.as_ref().filter(|o| !o.parts.is_empty()) {
        let msn = playlist.open_msn();
        let start = ProgramTime::from_samples(msn.saturating_mul(segment));
        out.push(match open_segment {
            OpenSegment::Killed => EarlierSegment {
                msn,
                start,
                duration: segment,
                parts: Vec::new(),
                stored_parts: u32::try_from(open.parts.len()).unwrap_or(u32::MAX),
                discontinuity: open.discontinuity,
                gap: true,
            },
            OpenSegment::Completing { part_target, parts } => EarlierSegment {
                msn,
                start,
                duration: segment,
                parts: vec![part_target; parts as usize],
                stored_parts: parts,
                discontinuity: open.discontinuity,
                gap: false,
            },
        });
    }
    out
}

/// Reads the stream's timing record, or creates it from `wanted` if the
/// stream has none (a conditional create: of two processes starting the
/// same stream at once, one record wins and both use it).
async fn load_or_create(
    store: &Store,
    stream: &str,
    wanted: StreamTiming,
) -> Result<(StreamTiming, bool), TimingError> {
    let key = layout::timing_key(stream);
    let path = object_store::path::Path::from(key.as_str());
    let store_err = |source| TimingError::Store {
        key: key.clone(),
        store: store.url().to_string(),
        source,
    };
    for _ in 0..2 {
        match store.object_store().get(&path).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(store_err)?;
                let stored: StreamTiming =
                    serde_json::from_slice(&bytes).map_err(|e| TimingError::Corrupt {
                        key: key.clone(),
                        store: store.url().to_string(),
                        reason: e.to_string(),
                    })?;
                if let Some((setting, stored_value, wanted_value)) = stored.mismatch(&wanted) {
                    return Err(TimingError::Mismatch {
                        stream: stream.to_string(),
                        setting,
                        stored: stored_value,
                        wanted: wanted_value,
                    });
                }
                return Ok((stored, false));
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err(e)),
        }
        let body = serde_json::to_vec_pretty(&wanted).expect("a timing record serializes");
        let created = store
            .object_store()
            .put_opts(
                &path,
                PutPayload::from(body),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            )
            .await;
        match created {
            Ok(_) => return Ok((wanted, true)),
            // Another process created it first: read theirs.
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(TimingError::Corrupt {
        key: key.clone(),
        store: store.url().to_string(),
        reason: "it exists, yet cannot be read".into(),
    })
}

/// The stream's last media playlist: of the renditions' `live.m3u8`, the
/// one furthest ahead (a run killed between two puts can leave one behind).
async fn last_playlist(store: &Store, stream: &str) -> Result<Option<MediaPlaylist>, RunError> {
    let mut best: Option<MediaPlaylist> = None;
    for r in RENDITIONS {
        // A name the packager refuses has nothing stored to resume from.
        let Some(rendition) = RenditionPath::new(stream, r) else {
            continue;
        };
        let path = object_store::path::Path::from(rendition.live_key());
        let bytes = match store.object_store().get(&path).await {
            Ok(got) => got.bytes().await,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => Err(e),
        };
        let bytes = bytes.map_err(|source| RunError::Resume {
            key: path.to_string(),
            store: store.url().to_string(),
            source,
        })?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let Ok(playlist) = MediaPlaylist::parse(text) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|b| next_msn(&playlist) > next_msn(b))
        {
            best = Some(playlist);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> StreamTiming {
        StreamTiming {
            version: TIMING_VERSION,
            epoch_unix_ms: 1_000_000,
            sample_rate: SAMPLE_RATE,
            part_samples: 15_360,
            parts_per_segment: 6,
            aac_bitrate: 96_000,
        }
    }

    const SEGMENT_MS: i64 = 1920;

    #[test]
    fn a_new_stream_starts_on_the_clocks_segment() {
        let mut t = TimelineConfig::default();
        let plan = plan(
            &timing(),
            None,
            false,
            false,
            1_000_000 + 10 * SEGMENT_MS + 500,
            &mut t,
        );
        assert_eq!(t.first_msn, 10);
        assert_eq!(t.start, ProgramTime::from_samples(10 * 92_160));
        assert_eq!(plan.now, ProgramTime::from_samples((10 * 1920 + 500) * 48));
        assert_eq!(plan.clock_behind, None);
        assert_eq!(t.epoch_unix_ms, 1_000_000);
    }

    fn killed_playlist() -> MediaPlaylist {
        // Segments 20 and 21 complete, 22 open with two parts.
        let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-PART-INF:PART-TARGET=0.320\n#EXT-X-MEDIA-SEQUENCE:20\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXTINF:1.920,\n20.m4s\n#EXTINF:1.920,\n21.m4s\n\
            #EXT-X-PART:DURATION=0.320,URI=\"22.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.320,URI=\"22.1.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"22.2.m4s\"\n";
        MediaPlaylist::parse(text).expect("playlist")
    }

    #[test]
    fn a_restart_continues_after_the_killed_run_with_gaps_for_the_down_span() {
        let playlist = killed_playlist();
        let mut t = TimelineConfig::default();
        // Five segments later by the clock.
        let plan = plan(
            &timing(),
            Some(&playlist),
            false,
            false,
            1_000_000 + 27 * SEGMENT_MS + 100,
            &mut t,
        );
        assert_eq!(t.first_msn, 27);
        assert_eq!(plan.clock_behind, None);
        let msns: Vec<u64> = t.earlier.iter().map(|e| e.msn).collect();
        assert_eq!(msns, [20, 21, 22]);
        let open = &t.earlier[2];
        assert!(
            open.gap,
            "the killed run's open segment has no segment object"
        );
        assert_eq!(open.stored_parts, 2);
        assert_eq!(open.duration, 92_160);
        let timeline = t.build().expect("timeline");
        // 23 to 26: the span no process published.
        let gaps: Vec<u64> = timeline.gaps().iter().map(|g| g.0).collect();
        assert_eq!(gaps, [22, 23, 24, 25, 26]);
    }

    #[test]
    fn a_standby_lists_a_live_leaders_open_segment_whole_not_as_a_gap() {
        let playlist = killed_playlist();
        let mut t = TimelineConfig::default();
        plan(
            &timing(),
            Some(&playlist),
            false,
            true,
            1_000_000 + 22 * SEGMENT_MS + 100,
            &mut t,
        );
        let open = t.earlier.last().expect("the leader's open segment");
        assert!(!open.gap);
        assert_eq!(
            open.parts,
            vec![t.part_target; t.parts_per_segment as usize]
        );
        assert_eq!(open.stored_parts, t.parts_per_segment);
        assert_eq!(t.first_msn, open.msn + 1, "the member starts after it");
        let timeline = t.build().expect("timeline");
        assert!(timeline.gaps().is_empty(), "no gap in a live stream");
    }

    #[test]
    fn a_quick_restart_waits_for_the_next_segment_instead_of_reusing_a_name() {
        let playlist = killed_playlist();
        let mut t = TimelineConfig::default();
        // The clock is still in segment 22, which the killed run opened.
        let now = 1_000_000 + 22 * SEGMENT_MS + 900;
        let plan = plan(&timing(), Some(&playlist), false, false, now, &mut t);
        assert_eq!(t.first_msn, 23);
        assert_eq!(
            plan.clock_behind, None,
            "a wait of under a segment is normal"
        );
        assert_eq!(plan.now, ProgramTime::from_samples((22 * 1920 + 900) * 48));
    }

    #[test]
    fn a_clock_stepped_back_never_reuses_a_name() {
        let playlist = killed_playlist();
        let mut t = TimelineConfig::default();
        let plan = plan(&timing(), Some(&playlist), false, false, 1_000_000, &mut t);
        assert_eq!(t.first_msn, 23);
        assert_eq!(
            plan.now, t.start,
            "the run's clock starts at its first segment"
        );
        assert_eq!(plan.clock_behind, Some(23 * 92_160));
    }

    #[test]
    fn a_stream_from_before_timing_records_continues_after_a_discontinuity() {
        let playlist = killed_playlist();
        let mut t = TimelineConfig::default();
        plan(
            &timing(),
            Some(&playlist),
            true,
            false,
            1_000_000 + 23 * SEGMENT_MS,
            &mut t,
        );
        assert_eq!(t.first_msn, 23);
        assert!(t.start_discontinuity);
        assert!(t.earlier.is_empty());
        assert_eq!(
            t.inherited,
            [
                ExpiredSegment { msn: 20, parts: 6 },
                ExpiredSegment { msn: 21, parts: 6 },
                ExpiredSegment { msn: 22, parts: 2 },
            ]
        );
    }

    #[test]
    fn settings_that_change_names_or_init_segments_are_refused() {
        let stored = timing();
        let wanted = StreamTiming {
            parts_per_segment: 4,
            ..timing()
        };
        assert_eq!(
            stored.mismatch(&wanted).map(|m| m.0),
            Some("parts per segment")
        );
        assert_eq!(
            stored.mismatch(&StreamTiming {
                epoch_unix_ms: 5,
                ..timing()
            }),
            None
        );
    }
}
