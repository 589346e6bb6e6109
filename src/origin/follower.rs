//! How a standalone origin follows one rendition in the store: when it reads
//! `live.m3u8`, when it reads the hinted part's `at/` playlist, how it backs
//! off while nothing changes or the store fails, and when it stops. Pure: no
//! IO, no clock, no sleeping. [`Follower::poll`] is given the time and the
//! outcome of the read it asked for, and answers the next [`Action`]; the
//! tracker's store task ([`super::tracker`]) performs the reads and waits.
//!
//! The policy:
//! - **First read**: `live.m3u8`, at once.
//! - **Following parts**: a live low-latency playlist (`CAN-BLOCK-RELOAD=YES`,
//!   no `EXT-X-ENDLIST`) names the next part in its `EXT-X-PRELOAD-HINT`
//!   (RFC 8216bis 4.4.5.3), and its program dates (4.4.4.6) say when that
//!   part ends: the hinted part starts where the listed media ends and lasts
//!   at most one PART-TARGET (4.4.3.7, 4.4.4.9). The follower reads the
//!   hinted part's immutable `at/` playlist (404 until the packager has
//!   stored it) at that date plus the packager's usual lateness
//!   ([`Lateness`]), then up to [`AT_TRIES`] times in all, a *spacing* apart,
//!   then reads `live.m3u8` again to catch an end, a restart or missed
//!   parts. Each `at/` playlist found is the next playlist, and names the
//!   next part: while the packager keeps up, one read per part.
//! - **Stalls**: the spacing starts at an eighth of a PART-TARGET (one part
//!   of lateness over the tries) and doubles for every round of tries after
//!   which `live.m3u8` has not changed, up to [`MAX_SPACING`]: a briefly late
//!   packager is still caught within one spacing, a stopped one costs a few
//!   reads a second at most.
//! - **Dates that cannot be trusted**: without program dates the first try
//!   is one PART-TARGET after the previous read. A date more than three
//!   target durations ahead (the longest a blocking reload may wait for a
//!   part, 6.2.5.2) means the clocks disagree; it too falls back to one
//!   PART-TARGET. Dates are compared with the wall clock once, when a wait
//!   is decided: every wait is then on the monotonic clock, so a wall-clock
//!   jump during it changes nothing.
//! - **Store errors**: a failed `live.m3u8` read is retried after
//!   [`ERROR_BACKOFF`]; a failed `at/` read counts as one of the tries.
//! - **Missing and ended streams**: a rendition without `live.m3u8` is looked
//!   for again every [`MISSING_RECHECK`]; a finished (or not low-latency)
//!   one every [`FINISHED_RECHECK`], for a restart under the same name.
//! - **Stopping**: before every read. Once announcements feed the tracker
//!   ([`Usage::observed`]); or once nobody waits on it and it has not been
//!   requested for the idle period ([`MISSING_IDLE`] while it answers 404 or
//!   503).

use std::time::{Duration, Instant};

use crate::hls::PartId;
use crate::time::SAMPLE_RATE;

use super::state::StreamState;

/// Reads of the hinted part's `at/` playlist before `live.m3u8` is read
/// again.
pub const AT_TRIES: u32 = 8;

/// How often a missing stream is looked for again while it is requested.
pub const MISSING_RECHECK: Duration = Duration::from_secs(1);

/// A missing stream's tracker stops after this long without requests.
pub const MISSING_IDLE: Duration = Duration::from_secs(5);

/// Longest spacing of the reads of a stream that stopped changing.
pub const MAX_SPACING: Duration = Duration::from_millis(500);

/// How often a finished stream is looked at again, for a restart.
pub const FINISHED_RECHECK: Duration = Duration::from_secs(4);

/// Pause after a failed read of `live.m3u8`.
pub const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// Shortest PART-TARGET the follower paces itself by.
const MIN_PART_TARGET: Duration = Duration::from_millis(10);

/// The time, twice: the monotonic clock that every wait is measured on, and
/// the wall clock that program dates are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time: milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

/// An object of the rendition to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// `live.m3u8`, the newest playlist.
    Live,
    /// `at/{msn}.{part}.m3u8`, the immutable playlist as it stood when that
    /// part completed.
    At(PartId),
}

/// What the follower needs of the tracker's newest playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Playlist {
    /// Identifies the playlist's bytes (their ETag): equal for the same
    /// bytes, different otherwise.
    pub etag: String,
    /// Blocking reloads are offered and the stream is live.
    pub blocks: bool,
    /// The part `EXT-X-PRELOAD-HINT` names.
    pub hint: Option<PartId>,
    /// When the hinted part ends by the program dates, in milliseconds since
    /// the Unix epoch.
    pub hint_due_ms: Option<i64>,
    /// PART-TARGET (the target duration when there are no parts), at least
    /// 10 ms.
    pub part_target: Duration,
    /// `EXT-X-TARGETDURATION` in seconds.
    pub target_duration_s: u64,
}

impl Playlist {
    /// What the follower needs of `state`, whose bytes have ETag `etag`.
    pub fn of(state: &StreamState, etag: String) -> Playlist {
        let rate = u64::from(SAMPLE_RATE);
        let samples = state
            .part_target()
            .unwrap_or(state.target_duration().saturating_mul(rate));
        let part_target = Duration::from_micros(samples.saturating_mul(1_000_000) / rate);
        Playlist {
            etag,
            blocks: state.blocks(),
            hint: state.hint(),
            hint_due_ms: state.hint_due().map(|d| d.timestamp_millis()),
            part_target: part_target.max(MIN_PART_TARGET),
            target_duration_s: state.target_duration(),
        }
    }
}

/// How the read an [`Action::Read`] asked for went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The object was read and applied: the tracker's newest playlist now,
    /// or `None` if it has none (nothing readable was ever read, or the
    /// rendition went missing).
    Found(Option<Playlist>),
    /// The store has no such object (404).
    NotFound,
    /// The store failed.
    Failed,
}

/// How the tracker is used, as of the [`Follower::poll`] call. The driver
/// gathers it where requests subscribe, so that a stop for idleness and a
/// new subscription cannot cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Requests subscribed to the tracker right now.
    pub receivers: usize,
    /// When it was last requested.
    pub last_used: Instant,
    /// The publisher's announcements feed it: the store need not be read.
    pub observed: bool,
    /// It answers that the rendition is missing (404) or the store
    /// unavailable (503).
    pub missing: bool,
}

/// Why following the store stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Nobody used the tracker for the idle period.
    Idle,
    /// The publisher's announcements feed the tracker.
    Observed,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read this object, then poll with its outcome.
    Read(Object),
    /// Wait until this monotonic instant, then poll without an outcome.
    SleepUntil(Instant),
    /// Stop following the store; every later poll says the same.
    Stop(StopReason),
}

/// The store-following state machine of one rendition (see the module
/// docs).
#[derive(Debug, Clone)]
pub struct Follower {
    /// The idle period of a tracker that has a playlist.
    idle: Duration,
    /// The next read, and the earliest time for it.
    next: Object,
    not_before: Option<Instant>,
    /// The read handed out and not yet reported.
    asked: Option<Object>,
    /// The tracker's newest playlist, as last reported.
    playlist: Option<Playlist>,
    /// Its ETag at the previous round's read of `live.m3u8`.
    seen: Option<String>,
    /// Rounds of tries after which `live.m3u8` had not changed.
    stalled_rounds: u32,
    /// Between the tries of one `at/` playlist.
    spacing: Duration,
    /// Reads of the hinted part's `at/` playlist so far.
    tries: u32,
    /// When the hinted part is due, by the program dates.
    due_ms: Option<i64>,
    lateness: Lateness,
    stopped: Option<StopReason>,
}

impl Follower {
    /// A follower whose tracker stops after `idle` without requests (once it
    /// has a playlist; see [`MISSING_IDLE`]).
    pub fn new(idle: Duration) -> Follower {
        Follower {
            idle,
            next: Object::Live,
            not_before: None,
            asked: None,
            playlist: None,
            seen: None,
            stalled_rounds: 0,
            spacing: Duration::ZERO,
            tries: 0,
            due_ms: None,
            lateness: Lateness::default(),
            stopped: None,
        }
    }

    /// The next action at `now`. `last` is the outcome of the read the
    /// previous action asked for (a read not reported counts as
    /// [`ReadOutcome::Failed`]); `None` after a wait. May be called early:
    /// before the instant a [`Action::SleepUntil`] named, it names it again.
    pub fn poll(&mut self, now: Now, last: Option<ReadOutcome>, usage: Usage) -> Action {
        if let Some(reason) = self.stopped {
            return Action::Stop(reason);
        }
        if let Some(asked) = self.asked.take() {
            let outcome = last.unwrap_or(ReadOutcome::Failed);
            match asked {
                Object::Live => self.after_live(now, outcome),
                Object::At(_) => self.after_at(now, outcome),
            }
        }
        if let Some(at) = self.not_before
            && now.instant < at
        {
            return Action::SleepUntil(at);
        }
        if let Some(reason) = self.stop(now, usage) {
            self.stopped = Some(reason);
            return Action::Stop(reason);
        }
        self.not_before = None;
        self.asked = Some(self.next);
        Action::Read(self.next)
    }

    /// Whether to stop instead of reading now.
    fn stop(&self, now: Now, usage: Usage) -> Option<StopReason> {
        if usage.observed {
            return Some(StopReason::Observed);
        }
        let idle = if usage.missing {
            MISSING_IDLE
        } else {
            self.idle
        };
        let unused = now.instant.saturating_duration_since(usage.last_used) >= idle;
        (usage.receivers == 0 && unused).then_some(StopReason::Idle)
    }

    /// The next read is of `next`, not before `at` (`None`: at once).
    fn schedule(&mut self, next: Object, at: Option<Instant>) {
        self.next = next;
        self.not_before = at;
    }

    fn after_live(&mut self, now: Now, outcome: ReadOutcome) {
        let playlist = match outcome {
            ReadOutcome::NotFound => {
                self.playlist = None;
                return self.schedule(Object::Live, Some(now.instant + MISSING_RECHECK));
            }
            ReadOutcome::Failed => {
                return self.schedule(Object::Live, Some(now.instant + ERROR_BACKOFF));
            }
            ReadOutcome::Found(None) => {
                self.playlist = None;
                return self.schedule(Object::Live, Some(now.instant + ERROR_BACKOFF));
            }
            ReadOutcome::Found(Some(playlist)) => playlist,
        };
        if !playlist.blocks {
            // Finished or not low-latency: look again now and then, for a
            // restart under the same name.
            self.playlist = Some(playlist);
            return self.schedule(Object::Live, Some(now.instant + FINISHED_RECHECK));
        }
        let progressed = self.seen.as_ref() != Some(&playlist.etag);
        self.seen = Some(playlist.etag.clone());
        self.stalled_rounds = if progressed {
            0
        } else {
            self.stalled_rounds.saturating_add(1)
        };
        // Nothing new since the last round: the packager is late, stalled or
        // stopped. Look less often, doubling, up to MAX_SPACING.
        self.spacing = (playlist.part_target / 8)
            .saturating_mul(1 << self.stalled_rounds.min(8))
            .min(MAX_SPACING);
        self.playlist = Some(playlist);
        self.look_for_hint(now);
    }

    fn after_at(&mut self, now: Now, outcome: ReadOutcome) {
        match outcome {
            ReadOutcome::Found(playlist) => {
                if let Some(due) = self.due_ms {
                    let late = u64::try_from(now.unix_ms.saturating_sub(due)).unwrap_or(0);
                    self.lateness.record(Duration::from_millis(late));
                }
                self.playlist = playlist;
                self.look_for_hint(now);
            }
            ReadOutcome::NotFound | ReadOutcome::Failed => {
                self.tries += 1;
                if self.tries < AT_TRIES {
                    let next = self.next;
                    self.schedule(next, Some(now.instant + self.spacing));
                } else {
                    self.schedule(Object::Live, None);
                }
            }
        }
    }

    /// Schedules the first read of the hinted part's `at/` playlist, or
    /// (without a hint to follow) a read of `live.m3u8` at once.
    fn look_for_hint(&mut self, now: Now) {
        let Some((hint, wait, due)) = self.playlist.as_ref().and_then(|p| {
            let hint = p.hint.filter(|_| p.blocks)?;
            let late = self.lateness.estimate(p.part_target);
            Some((hint, until_due(p, now.unix_ms, late), p.hint_due_ms))
        }) else {
            return self.schedule(Object::Live, None);
        };
        self.tries = 0;
        self.due_ms = due;
        let at = (!wait.is_zero()).then(|| now.instant + wait);
        self.schedule(Object::At(hint), at);
    }
}

/// How long to wait before the first read of the hinted part's `at/`
/// playlist, at wall-clock time `now_ms`: until its program date says it is
/// complete, plus `late`. A date in the past means "now"; no date, or one
/// implausibly far ahead (clocks disagree), falls back to one part target.
fn until_due(playlist: &Playlist, now_ms: i64, late: Duration) -> Duration {
    let Some(due) = playlist.hint_due_ms else {
        return playlist.part_target;
    };
    let ahead = Duration::from_millis(u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0));
    let limit = Duration::from_secs(playlist.target_duration_s.max(1)) * 3;
    if ahead > limit {
        playlist.part_target
    } else {
        ahead + late
    }
}

/// How long after its program date says a part ends the packager has
/// stored it: the encoders' look-ahead, the packager's pacing and the
/// store's latency, none of which the origin can know in advance. Each part
/// found gives an upper bound (it was stored no later than it was found);
/// the smallest of the recent ones is the estimate, so a single slow read
/// does not delay the following parts.
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    recent: [Option<Duration>; 8],
    next: usize,
}

impl Lateness {
    /// Records that a part was found `late` after its due date.
    pub fn record(&mut self, late: Duration) {
        self.recent[self.next] = Some(late);
        self.next = (self.next + 1) % self.recent.len();
    }

    /// When to look for a part, after its due date: the smallest recent
    /// lateness (a sixteenth of a part before any is known), at most one
    /// part.
    pub fn estimate(&self, part_target: Duration) -> Duration {
        self.recent
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(part_target / 16)
            .min(part_target)
    }
}

#[cfg(test)]
mod tests {
    //! The follower in simulated time: a simulated packager stores parts on
    //! the simulation's monotonic clock, a simulated store answers the reads
    //! the follower asks for, and the simulation jumps to every instant the
    //! follower sleeps until. Nothing sleeps; nothing reads a real clock
    //! except for one arbitrary origin instant.

    use super::*;

    use std::collections::HashMap;
    use std::ops::Range;

    use crate::origin::state::tests::{EPOCH_MS, live_after};

    /// PART-TARGET of the `live_after` playlists: 320 ms, six to a segment,
    /// first MSN 100, target duration 2 s.
    const PT: Duration = Duration::from_millis(320);
    const PT_MS: u64 = 320;
    const PARTS_PER_SEGMENT: u64 = 6;
    const FIRST_MSN: u64 = 100;
    const IDLE: Duration = Duration::from_secs(30);
    /// How long after its program date says a part ends the simulated
    /// packager has stored it.
    const LATE_MS: u64 = 30;
    /// How long a simulated store read takes, unless a test says otherwise.
    const READ_MS: u64 = 5;

    fn id(ordinal: u64) -> PartId {
        PartId {
            msn: FIRST_MSN + ordinal / PARTS_PER_SEGMENT,
            part: (ordinal % PARTS_PER_SEGMENT) as u32,
        }
    }

    fn ordinal(id: PartId) -> u64 {
        (id.msn - FIRST_MSN) * PARTS_PER_SEGMENT + u64::from(id.part)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// A packager keeping up: part `k` ends `(k + 1) * PT` after the
    /// program's epoch and is stored [`LATE_MS`] later, on a monotonic clock
    /// that starts with the program (the simulated wall clock then reads
    /// `EPOCH_MS` plus the monotonic milliseconds, unless it jumps).
    fn steady(k: u64) -> Option<u64> {
        Some((k + 1) * PT_MS + LATE_MS)
    }

    /// A simulated packager and store.
    struct World {
        /// When part `k` (counting from the first) is stored, if ever; its
        /// `at/` playlist and a `live.m3u8` listing it appear at that time.
        stored_at: Box<dyn Fn(u64) -> Option<u64>>,
        /// Monotonic milliseconds during which every read fails.
        failing: Range<u64>,
        /// Monotonic milliseconds during which `live.m3u8` says the stream
        /// has ended (EXT-X-ENDLIST, no preload hint).
        ended: Range<u64>,
        playlists: HashMap<(u64, bool), Playlist>,
    }

    impl World {
        fn new(stored_at: impl Fn(u64) -> Option<u64> + 'static) -> World {
            World {
                stored_at: Box::new(stored_at),
                failing: 0..0,
                ended: 0..0,
                playlists: HashMap::new(),
            }
        }

        fn stored_by(&self, k: u64, at_ms: u64) -> bool {
            (self.stored_at)(k).is_some_and(|s| s <= at_ms)
        }

        /// The playlist after `parts` parts, as the follower sees it.
        fn playlist(&mut self, parts: u64, ended: bool) -> Playlist {
            self.playlists
                .entry((parts, ended))
                .or_insert_with(|| {
                    let mut p = live_after(parts as usize);
                    if ended {
                        p.end_list = true;
                        p.preload_hint = None;
                    }
                    let etag = format!("\"{parts}{}\"", if ended { "-end" } else { "" });
                    Playlist::of(&StreamState::from_playlist(&p), etag)
                })
                .clone()
        }

        fn read(&mut self, at_ms: u64, object: Object) -> ReadOutcome {
            if self.failing.contains(&at_ms) {
                return ReadOutcome::Failed;
            }
            match object {
                Object::Live => {
                    let parts = (0..).take_while(|k| self.stored_by(*k, at_ms)).count() as u64;
                    if parts == 0 {
                        return ReadOutcome::NotFound;
                    }
                    let ended = self.ended.contains(&at_ms);
                    ReadOutcome::Found(Some(self.playlist(parts, ended)))
                }
                Object::At(id) => {
                    let k = ordinal(id);
                    if self.stored_by(k, at_ms) {
                        ReadOutcome::Found(Some(self.playlist(k + 1, false)))
                    } else {
                        ReadOutcome::NotFound
                    }
                }
            }
        }
    }

    /// One read: when it started (monotonic ms), what, and how it went.
    #[derive(Debug, Clone, PartialEq)]
    struct Read {
        ms: u64,
        object: Object,
        outcome: ReadOutcome,
    }

    /// The follower, its driver and the world, in simulated time.
    struct Sim {
        follower: Follower,
        world: World,
        t0: Instant,
        /// Simulated monotonic time since `t0`.
        elapsed: Duration,
        /// How long a store read takes.
        read_latency: Duration,
        /// The simulated wall clock minus (`EPOCH_MS` + monotonic ms).
        wall_offset_ms: i64,
        receivers: usize,
        last_used: Duration,
        observed: bool,
        /// What the tracker answers, as the driver keeps it: 404 or 503.
        missing: bool,
        has_playlist: bool,
        pending: Option<ReadOutcome>,
        reads: Vec<Read>,
        /// Every wait: from, until (monotonic ms).
        sleeps: Vec<(u64, u64)>,
        stopped: Option<(u64, StopReason)>,
    }

    impl Sim {
        /// A follower started at monotonic `start_ms` with one request
        /// waiting on its tracker.
        fn new(world: World, start_ms: u64) -> Sim {
            Sim {
                follower: Follower::new(IDLE),
                world,
                t0: Instant::now(),
                elapsed: Duration::from_millis(start_ms),
                read_latency: Duration::from_millis(READ_MS),
                wall_offset_ms: 0,
                receivers: 1,
                last_used: Duration::from_millis(start_ms),
                observed: false,
                missing: false,
                has_playlist: false,
                pending: None,
                reads: Vec::new(),
                sleeps: Vec::new(),
                stopped: None,
            }
        }

        fn now_ms(&self) -> u64 {
            ms(self.elapsed)
        }

        fn now(&self) -> Now {
            Now {
                instant: self.t0 + self.elapsed,
                unix_ms: EPOCH_MS + self.now_ms() as i64 + self.wall_offset_ms,
            }
        }

        fn usage(&self) -> Usage {
            Usage {
                receivers: self.receivers,
                last_used: self.t0 + self.last_used,
                observed: self.observed,
                missing: self.missing,
            }
        }

        /// One poll, and what the driver does with its action.
        fn step(&mut self) -> Action {
            let action = self
                .follower
                .poll(self.now(), self.pending.take(), self.usage());
            match action {
                Action::Read(object) => {
                    let outcome = self.world.read(self.now_ms(), object);
                    // The tracker's state, as the driver sets it.
                    if object == Object::Live {
                        match &outcome {
                            ReadOutcome::Found(Some(_)) => {
                                (self.missing, self.has_playlist) = (false, true);
                            }
                            ReadOutcome::NotFound => {
                                (self.missing, self.has_playlist) = (true, false);
                            }
                            ReadOutcome::Failed if !self.has_playlist => self.missing = true,
                            _ => {}
                        }
                    }
                    self.reads.push(Read {
                        ms: self.now_ms(),
                        object,
                        outcome: outcome.clone(),
                    });
                    self.pending = Some(outcome);
                    self.elapsed += self.read_latency;
                }
                Action::SleepUntil(until) => {
                    let until = until - self.t0;
                    assert!(until > self.elapsed, "a wait into the past: {action:?}");
                    self.sleeps.push((self.now_ms(), ms(until)));
                    self.elapsed = until;
                }
                Action::Stop(reason) => {
                    self.stopped.get_or_insert((self.now_ms(), reason));
                }
            }
            action
        }

        /// Runs until monotonic `end_ms` or a stop.
        fn run_until(&mut self, end_ms: u64) {
            while self.stopped.is_none() && self.now_ms() < end_ms {
                self.step();
            }
        }

        fn reads_between(&self, from_ms: u64, to_ms: u64) -> Vec<&Read> {
            self.reads
                .iter()
                .filter(|r| (from_ms..to_ms).contains(&r.ms))
                .collect()
        }

        /// Parts found through their `at/` playlists: (when read, ordinal).
        fn found(&self) -> Vec<(u64, u64)> {
            self.reads
                .iter()
                .filter_map(|r| match (&r.object, &r.outcome) {
                    (Object::At(id), ReadOutcome::Found(_)) => Some((r.ms, ordinal(*id))),
                    _ => None,
                })
                .collect()
        }

        fn live_reads(&self) -> Vec<u64> {
            self.reads
                .iter()
                .filter(|r| r.object == Object::Live)
                .map(|r| r.ms)
                .collect()
        }

        /// Reads of part `k`'s `at/` playlist.
        fn at_reads(&self, k: u64) -> Vec<u64> {
            self.reads
                .iter()
                .filter(|r| r.object == Object::At(id(k)))
                .map(|r| r.ms)
                .collect()
        }
    }

    /// Gaps between consecutive times.
    fn gaps(times: &[u64]) -> Vec<u64> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[test]
    fn the_first_read_is_the_live_playlist_at_once() {
        let mut sim = Sim::new(World::new(steady), 2000);
        assert_eq!(sim.step(), Action::Read(Object::Live));
        // Six parts are stored; the hint is the seventh, due at 7 × 320 ms.
        // The first try is then, plus a sixteenth of a part (no lateness
        // known yet).
        let due = 7 * PT_MS;
        assert_eq!(
            sim.step(),
            Action::SleepUntil(sim.t0 + Duration::from_millis(due + PT_MS / 16))
        );
        assert_eq!(sim.step(), Action::Read(Object::At(id(6))));
    }

    #[test]
    fn parts_are_followed_with_one_read_each_once_lateness_is_known() {
        // Instant reads: a read's latency counts as lateness (see
        // `read_latency_adds_to_the_lateness_estimate`).
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.read_latency = Duration::ZERO;
        sim.run_until(20_000);
        assert_eq!(sim.live_reads(), vec![2000], "live.m3u8 read once");
        let found = sim.found();
        let ordinals: Vec<u64> = found.iter().map(|(_, k)| *k).collect();
        let last = *ordinals.last().expect("parts found");
        assert_eq!(
            ordinals,
            (6..=last).collect::<Vec<_>>(),
            "every part, in order"
        );
        assert!(last >= 20_000 / PT_MS - 2, "kept up: last part {last}");
        // The first part costs a miss while the lateness is learnt; every
        // later one a single read.
        assert_eq!(sim.at_reads(6).len(), 2);
        for k in 7..=last {
            assert_eq!(sim.at_reads(k).len(), 1, "part {k}");
        }
        // Each part is found within one spacing (an eighth of a part) of
        // being stored, the first found part's lateness being the estimate.
        for (read_ms, k) in found {
            let stored = steady(k).expect("stored");
            assert!(
                read_ms >= stored && read_ms - stored <= PT_MS / 8,
                "part {k} stored at {stored} ms, found at {read_ms} ms"
            );
        }
    }

    #[test]
    fn read_latency_adds_to_the_lateness_estimate() {
        // A part's lateness is measured when the read that found it ends,
        // and the estimate is the smallest of the last eight: with reads
        // taking 5 ms, it grows by 5 ms every eight parts, up to one part.
        // Still one read per part, each part found within a part of being
        // stored.
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.run_until(60_000);
        let found = sim.found();
        let last = found.last().expect("parts found").1;
        for k in 7..=last {
            assert_eq!(sim.at_reads(k).len(), 1, "part {k}");
        }
        let lag = |(read_ms, k): (u64, u64)| read_ms - steady(k).expect("stored");
        let lags: Vec<u64> = found.iter().copied().map(lag).collect();
        assert!(lags.iter().all(|l| *l <= PT_MS), "{lags:?}");
        assert!(lags.windows(2).all(|w| w[1] >= w[0]), "{lags:?}");
        let first_steady = lag(found[1]);
        assert_eq!(lag(found[9]), first_steady + READ_MS, "{lags:?}");
        assert_eq!(lag(found[17]), first_steady + 2 * READ_MS, "{lags:?}");
    }

    #[test]
    fn a_stalled_playlist_is_read_less_and_less_often_and_caught_when_it_resumes() {
        // Parts 0..=9 as usual, then nothing until 30 s, then one part every
        // PART-TARGET again (late by then: their dates are long past).
        let resume_ms = 30_000;
        let stored_at = move |k: u64| {
            Some(if k < 10 {
                (k + 1) * PT_MS + LATE_MS
            } else {
                resume_ms + (k - 10) * PT_MS
            })
        };
        let mut sim = Sim::new(World::new(stored_at), 2000);
        sim.run_until(resume_ms);
        // Rounds of AT_TRIES reads of the hinted part, then one of
        // live.m3u8, unchanged: the spacing doubles each round, up to
        // MAX_SPACING.
        let tries = sim.at_reads(10);
        let rounds: Vec<&[u64]> = tries.chunks(AT_TRIES as usize).collect();
        let spacings: Vec<u64> = rounds
            .iter()
            .take(7)
            .map(|round| {
                let g = gaps(round);
                assert!(
                    g.iter().all(|x| *x == g[0]),
                    "even spacing in a round: {g:?}"
                );
                g[0] - READ_MS
            })
            .collect();
        // The first round's live.m3u8 read still shows progress (parts found
        // through their `at/` playlists since the previous one): the
        // doubling starts with the second.
        assert_eq!(spacings, vec![40, 40, 80, 160, 320, 500, 500]);
        let live = sim.live_reads();
        for pair in rounds.windows(2).take(6) {
            let between = live.iter().filter(|t| (pair[0][7]..pair[1][0]).contains(t));
            assert_eq!(between.count(), 1, "one live.m3u8 read between rounds");
        }
        // A stopped packager costs a few reads a second at most.
        let late_reads = sim.reads_between(resume_ms - 10_000, resume_ms).len();
        assert!(late_reads <= 30, "{late_reads} reads in the last 10 s");
        assert!(
            sim.sleeps
                .iter()
                .all(|(from, until)| until - from <= ms(MAX_SPACING)),
            "no wait beyond MAX_SPACING: {:?}",
            sim.sleeps
        );

        // Once the packager resumes, each part is caught within one
        // spacing of being stored, in order, none skipped.
        sim.run_until(resume_ms + 10_000);
        let after: Vec<(u64, u64)> = sim
            .found()
            .into_iter()
            .filter(|(t, _)| *t >= resume_ms)
            .collect();
        assert_eq!(after[0].1, 10);
        for window in after.windows(2) {
            assert_eq!(window[1].1, window[0].1 + 1, "{after:?}");
        }
        for (read_ms, k) in &after {
            let stored = stored_at(*k).expect("stored");
            assert!(
                *read_ms - stored <= ms(MAX_SPACING) + READ_MS,
                "part {k} stored at {stored} ms, found at {read_ms} ms"
            );
        }
    }

    #[test]
    fn store_errors_back_off_and_following_resumes_after_them() {
        // The store fails from the first read for 3 s, and again from 6 to
        // 9 s while the stream is followed.
        let mut world = World::new(steady);
        world.failing = 0..3000;
        let mut sim = Sim::new(world, 0);
        sim.run_until(2999);
        let live = sim.live_reads();
        assert!(live.len() >= 5);
        assert_eq!(sim.reads.len(), live.len(), "only live.m3u8 is read");
        for gap in gaps(&live) {
            assert_eq!(gap, ms(ERROR_BACKOFF) + READ_MS);
        }
        assert!(sim.missing, "503 until the first read succeeds");
        sim.run_until(6000);
        assert!(!sim.missing);
        let first_found = sim.found()[0];
        assert!(first_found.0 < 3000 + ms(ERROR_BACKOFF) + PT_MS + PT_MS / 16 + READ_MS);

        sim.world.failing = 6000..9000;
        sim.run_until(9000);
        let outage = sim.reads_between(6000, 9000);
        // At reads fail as tries (the spacing doubling while live.m3u8
        // does not change), live.m3u8 reads back off: no hot loop, and no
        // wait longer than the longest backoff.
        assert!(
            outage.len() <= 20,
            "{} reads during the outage",
            outage.len()
        );
        assert!(
            sim.sleeps
                .iter()
                .filter(|(from, _)| (6000..9000).contains(from))
                .all(|(from, until)| until - from <= ms(ERROR_BACKOFF.max(MAX_SPACING))),
            "{:?}",
            sim.sleeps
        );
        // Afterwards the stream is followed again, part by part, none
        // skipped.
        sim.run_until(15_000);
        let after: Vec<u64> = sim
            .found()
            .iter()
            .filter(|(t, _)| *t >= 9000)
            .map(|(_, k)| *k)
            .collect();
        assert!(after.len() >= 15, "{after:?}");
        assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
        let first_after = sim.reads_between(9000, 15_000)[0].ms;
        assert!(first_after <= 9000 + ms(ERROR_BACKOFF.max(MAX_SPACING)));
    }

    #[test]
    fn a_read_not_reported_counts_as_a_failure() {
        let mut sim = Sim::new(World::new(steady), 2000);
        assert_eq!(sim.step(), Action::Read(Object::Live));
        sim.pending = None;
        let now = sim.now();
        assert_eq!(
            sim.follower.poll(now, None, sim.usage()),
            Action::SleepUntil(now.instant + ERROR_BACKOFF)
        );
    }

    #[test]
    fn an_ended_stream_is_only_looked_at_now_and_then_until_it_restarts() {
        let mut world = World::new(steady);
        world.ended = 0..20_000;
        let mut sim = Sim::new(world, 2000);
        sim.run_until(19_999);
        assert!(sim.found().is_empty() && sim.reads.iter().all(|r| r.object == Object::Live));
        let live = sim.live_reads();
        assert_eq!(live.len(), 5, "{live:?}");
        for gap in gaps(&live) {
            assert_eq!(gap, ms(FINISHED_RECHECK) + READ_MS);
        }
        // Restarted under the same name: followed part by part again.
        sim.run_until(30_000);
        let restarted: Vec<u64> = sim.found().iter().map(|(_, k)| *k).collect();
        assert!(restarted.len() >= 20, "{restarted:?}");
        assert!(
            restarted.windows(2).all(|w| w[1] == w[0] + 1),
            "{restarted:?}"
        );
        assert!(sim.found()[0].0 <= 20_000 + ms(FINISHED_RECHECK) + PT_MS);
    }

    #[test]
    fn a_missing_stream_is_looked_for_every_second_and_dropped_sooner() {
        // Nothing until 3.5 s.
        let mut sim = Sim::new(World::new(|k| Some(3500 + k * PT_MS)), 0);
        sim.run_until(3500);
        assert_eq!(sim.live_reads(), vec![0, 1005, 2010, 3015]);
        assert!(sim.missing);
        // Found at the next look, then followed.
        sim.run_until(6000);
        assert!(!sim.missing);
        assert_eq!(sim.live_reads()[4], 4020);
        assert!(sim.found().len() >= 4, "{:?}", sim.found());

        // Nobody asks for a missing stream: dropped after MISSING_IDLE,
        // well before the idle period.
        let mut sim = Sim::new(World::new(|_| None), 0);
        sim.receivers = 0;
        sim.run_until(60_000);
        let (stop_ms, reason) = sim.stopped.expect("stopped");
        assert_eq!(reason, StopReason::Idle);
        assert!(
            (ms(MISSING_IDLE)..ms(MISSING_IDLE + MISSING_RECHECK) + READ_MS).contains(&stop_ms)
        );
        assert!(sim.reads.iter().all(|r| r.ms < ms(MISSING_IDLE)));
    }

    #[test]
    fn the_follower_stops_once_unused_for_the_idle_period() {
        // Requested at 2 s, nobody waiting since.
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.receivers = 0;
        sim.run_until(120_000);
        let (stop_ms, reason) = sim.stopped.expect("stopped");
        assert_eq!(reason, StopReason::Idle);
        let idle_end = 2000 + ms(IDLE);
        assert!(
            (idle_end..idle_end + PT_MS).contains(&stop_ms),
            "stopped at {stop_ms} ms"
        );
        assert!(
            sim.reads.iter().all(|r| r.ms < idle_end),
            "no read once idle"
        );
        // For good.
        let now = sim.now();
        assert_eq!(
            sim.follower.poll(now, None, sim.usage()),
            Action::Stop(StopReason::Idle)
        );

        // A waiting request keeps it going however long ago it came.
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.run_until(120_000);
        assert_eq!(sim.stopped, None);

        // A later request starts the idle period again.
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.receivers = 0;
        sim.run_until(20_000);
        sim.last_used = Duration::from_millis(20_000);
        sim.run_until(120_000);
        let (stop_ms, _) = sim.stopped.expect("stopped");
        assert!((50_000..50_000 + PT_MS).contains(&stop_ms), "{stop_ms}");
    }

    #[test]
    fn the_follower_stops_once_announcements_feed_the_tracker() {
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.run_until(5000);
        sim.observed = true;
        let reads = sim.reads.len();
        sim.run_until(60_000);
        let (stop_ms, reason) = sim.stopped.expect("stopped");
        assert_eq!(reason, StopReason::Observed);
        assert!(stop_ms < 5000 + PT_MS, "{stop_ms}");
        assert_eq!(sim.reads.len(), reads, "no read once observed");
    }

    #[test]
    fn a_wall_clock_set_back_falls_back_to_part_target_waits() {
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.run_until(5000);
        // The wall clock is set back an hour: every due date looks an hour
        // ahead, beyond three target durations, and cannot be trusted.
        sim.wall_offset_ms = -3_600_000;
        let sleeps_before = sim.sleeps.len();
        sim.run_until(15_000);
        assert!(
            sim.sleeps[sleeps_before..]
                .iter()
                .all(|(from, until)| until - from <= PT_MS),
            "no wait longer than a part: {:?}",
            &sim.sleeps[sleeps_before..]
        );
        let after: Vec<(u64, u64)> = sim
            .found()
            .into_iter()
            .filter(|(t, _)| *t >= 5000)
            .collect();
        assert!(after.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{after:?}");
        assert!(after.len() >= 28, "kept up: {after:?}");
        for (read_ms, k) in after {
            let stored = steady(k).expect("stored");
            assert!(
                read_ms - stored <= PT_MS + READ_MS,
                "part {k}: {stored} → {read_ms}"
            );
        }
    }

    #[test]
    fn a_wall_clock_set_forward_reads_at_once_and_keeps_up() {
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.run_until(5000);
        // Set forward an hour: every due date looks an hour past. Lateness
        // then reads as an hour, which the estimate caps at one part.
        sim.wall_offset_ms = 3_600_000;
        sim.run_until(25_000);
        let after: Vec<(u64, u64)> = sim
            .found()
            .into_iter()
            .filter(|(t, _)| *t >= 5000)
            .collect();
        assert!(after.windows(2).all(|w| w[1].1 == w[0].1 + 1), "{after:?}");
        assert!(after.len() >= 60, "kept up: {}", after.len());
        for (read_ms, k) in &after {
            let stored = steady(*k).expect("stored");
            assert!(
                read_ms - stored <= PT_MS + READ_MS,
                "part {k}: {stored} → {read_ms}"
            );
        }
        let reads = sim.reads_between(5000, 25_000).len();
        assert!(
            reads <= 3 * after.len(),
            "{reads} reads for {} parts",
            after.len()
        );
    }

    #[test]
    fn a_wall_clock_jump_during_a_wait_does_not_move_it() {
        let mut sim = Sim::new(World::new(steady), 2000);
        sim.step();
        let Action::SleepUntil(until) = sim.step() else {
            panic!("waits for the hinted part");
        };
        sim.sleeps.clear();
        for offset in [3_600_000, -3_600_000] {
            sim.wall_offset_ms = offset;
            let early = Now {
                instant: until - Duration::from_millis(1),
                ..sim.now()
            };
            assert_eq!(
                sim.follower.poll(early, None, sim.usage()),
                Action::SleepUntil(until),
                "woken early, the same wait"
            );
        }
        let on_time = Now {
            instant: until,
            ..sim.now()
        };
        assert_eq!(
            sim.follower.poll(on_time, None, sim.usage()),
            Action::Read(Object::At(id(6)))
        );
    }

    #[test]
    fn waits_for_a_hint_follow_its_program_date() {
        let playlist = |due: Option<i64>| Playlist {
            etag: "\"x\"".into(),
            blocks: true,
            hint: Some(id(8)),
            hint_due_ms: due,
            part_target: PT,
            target_duration_s: 2,
        };
        let late = Duration::from_millis(25);
        let now = EPOCH_MS;
        // Due in 200 ms: then, plus the usual lateness.
        assert_eq!(
            until_due(&playlist(Some(now + 200)), now, late),
            Duration::from_millis(225)
        );
        // Already due: only the lateness.
        assert_eq!(until_due(&playlist(Some(now - 900)), now, late), late);
        // Up to three target durations ahead is believed; beyond, or
        // without a date, one part target.
        assert_eq!(
            until_due(&playlist(Some(now + 6000)), now, late),
            Duration::from_millis(6025)
        );
        assert_eq!(until_due(&playlist(Some(now + 6001)), now, late), PT);
        assert_eq!(until_due(&playlist(None), now, late), PT);
    }

    #[test]
    fn playlists_are_summarised_from_their_state() {
        let state = StreamState::from_playlist(&live_after(8));
        let p = Playlist::of(&state, "\"8\"".into());
        assert_eq!(
            p,
            Playlist {
                etag: "\"8\"".into(),
                blocks: true,
                hint: Some(PartId { msn: 101, part: 2 }),
                hint_due_ms: Some(EPOCH_MS + 9 * 320),
                part_target: PT,
                target_duration_s: 2,
            }
        );
    }

    #[test]
    fn lateness_is_the_smallest_recent_observation() {
        let pt = Duration::from_millis(320);
        let mut late = Lateness::default();
        assert_eq!(late.estimate(pt), Duration::from_millis(20));
        for ms in [90, 70, 110, 75] {
            late.record(Duration::from_millis(ms));
        }
        assert_eq!(late.estimate(pt), Duration::from_millis(70));
        // Old observations age out after eight parts.
        for _ in 0..8 {
            late.record(Duration::from_millis(100));
        }
        assert_eq!(late.estimate(pt), Duration::from_millis(100));
        late.record(Duration::from_secs(5));
        assert_eq!(late.estimate(pt), Duration::from_millis(100));
        let mut slow = Lateness::default();
        slow.record(Duration::from_secs(5));
        assert_eq!(slow.estimate(pt), pt, "capped at one part");
    }
}
