//! The live publish driver: the store may fail, the broadcast may not.
//!
//! Contract:
//! - [`LiveHandle::send`] never waits: the batch joins the [`Backlog`] and
//!   the pipeline thread goes on with the program clock, the mix and the
//!   encoders whatever the store does. While the store keeps up the backlog
//!   holds at most one batch; while it fails, new batches are merged into
//!   what waits, which keeps the backlog bounded by the live window however
//!   long the outage lasts (see [`super::backlog`]).
//! - One task applies the work in order: a stage's operations concurrently
//!   (at most [`Publisher::DEFAULT_CONCURRENCY`]), each attempt bounded by
//!   [`LiveSettings::attempt_timeout`] (a call that never answers is a
//!   failure, not a hang), and the next stage only once every operation of
//!   the previous one is stored. The media a playlist names is therefore
//!   stored before the playlist, across merges too.
//! - A failed stage is tried again, its failed operations only, after a
//!   capped backoff ([`LiveSettings::retry`]: 100 ms doubling up to one part
//!   by default, so a store that comes back is noticed within about one
//!   part), for as long as the broadcast runs. If newer batches arrived in
//!   the meantime, the unfinished work is merged with them first: after the
//!   outage the store receives the newest playlists and only the media they
//!   name, and listeners are back at the live edge at once.
//! - What cannot go away by retrying stops the driver and so the broadcast,
//!   loudly: an immutable object stored with different bytes (two producers
//!   writing one stream), a key outside the layout, and a permanent store
//!   error (credentials, permissions, missing bucket) before anything was
//!   ever stored, which is a misconfiguration. The same permanent error in
//!   the middle of a broadcast is treated as an outage: a rotated
//!   credential or a policy glitch must not end a show.
//! - Every change is logged: the store failing (since when, why), the
//!   backlog while it lasts (every [`LiveSettings::report_every`]), the store
//!   back, and the backlog caught up (in how long). [`LiveHandle::status`]
//!   reports the same for the control API.
//! - Closing: once every handle is dropped the driver publishes what waits
//!   and returns. With the store still failing it gives up after
//!   [`LiveSettings::drain_timeout`], so stopping a broadcast always ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ObjectKind;
use super::backlog::{Backlog, body_bytes};
use super::driver::PublishSummary;
use super::publisher::{self, AttemptError, Batch, BatchStats, Op, PublishError, Publisher};
use super::retry::{GiveUp, RetryPolicy, Retryable, classify};
use super::standby::{Fence, Standing};
use crate::hls::{MediaPlaylist, PartId};

/// How the live driver retries and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Backoff between rounds of a failing stage (its `max_attempts` is not
    /// used: the driver never gives up while the broadcast runs).
    pub retry: RetryPolicy,
    /// Longest wait for one attempt; beyond it the attempt counts as failed.
    pub attempt_timeout: Duration,
    /// How often the backlog is logged while the store fails.
    pub report_every: Duration,
    /// How long a closing driver keeps trying to publish what waits.
    pub drain_timeout: Duration,
}

impl LiveSettings {
    /// Settings for parts of `part_target`: retries capped at one part, so
    /// that a store that comes back is written to within about one part.
    pub fn for_part_target(part_target: Duration) -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100).min(part_target),
                max_backoff: part_target.max(Duration::from_millis(10)),
            },
            ..Self::default()
        }
    }
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                max_attempts: u32::MAX,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(320),
            },
            attempt_timeout: Duration::from_secs(10),
            report_every: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// The publisher as the control API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PublishStatus {
    /// `"ok"`, `"failing"` (the store refuses or does not answer; the
    /// backlog grows) or `"stopped"` (a fault retrying cannot fix).
    pub state: &'static str,
    /// Since when the store has been failing, milliseconds since the Unix
    /// epoch.
    pub failing_since_unix_ms: Option<i64>,
    /// The last error while failing.
    pub last_error: Option<String>,
    /// Packager batches waiting for the store.
    pub backlog_batches: u64,
    /// Body bytes waiting for the store.
    pub backlog_bytes: u64,
    /// Packager batches stored so far.
    pub published_batches: u64,
    /// Objects stored so far.
    pub published_objects: u64,
    /// Outages so far (a run of failures ended by the store coming back).
    pub outages: u64,
    /// How long the last outage lasted, in milliseconds.
    pub last_outage_ms: Option<u64>,
    /// From the store coming back to the backlog being written, in
    /// milliseconds, after the last outage.
    pub last_catch_up_ms: Option<u64>,
    /// Segments the backlog shed past its limit during outages: listed as
    /// gaps, with silence stored under their names.
    pub gap_segments: u64,
    /// The last part listed in every rendition's stored `live.m3u8`.
    #[serde(skip)]
    pub listed: Option<PartId>,
    /// Immutable objects another process of the standby group had stored
    /// first, with other bytes (the same span, encoded by another ingest),
    /// kept as they are.
    pub adopted: u64,
    /// In a standby group: this process's role and lease.
    pub standby: Option<Standing>,
}

#[derive(Debug, Default)]
struct State {
    backlog: Backlog,
    /// The last part of each rendition's stored `live.m3u8`, by its key.
    listed: HashMap<String, PartId>,
    /// The lease's view, in a standby group.
    fence: Option<Fence>,
    /// Packager batches and body bytes of the work the driver has taken and
    /// not yet stored: waiting for the store as much as the backlog is.
    in_hand: (u64, u64),
    /// Every handle is gone: publish what waits and stop.
    closed: bool,
    /// The driver stopped; nothing more is accepted.
    stopped: bool,
    status: PublishStatus,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    work: Notify,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Packager batches waiting for the store, taken or not.
    fn waiting_batches(&self) -> u64 {
        self.backlog.batches() + self.in_hand.0
    }

    /// Body bytes waiting for the store, taken or not.
    fn waiting_bytes(&self) -> u64 {
        self.backlog.bytes() + self.in_hand.1
    }
}

/// Closes the driver's intake when the last handle goes.
#[derive(Debug)]
struct Intake(Arc<Shared>);

impl Drop for Intake {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.work.notify_one();
    }
}

/// Hands batches to a running live driver. Cloneable; the driver publishes
/// what waits and ends once every clone is dropped.
#[derive(Debug, Clone)]
pub struct LiveHandle {
    intake: Arc<Intake>,
}

impl LiveHandle {
    /// Adds `batch` to the backlog; never waits. Fails with
    /// [`PublishError::DriverStopped`] once the driver has stopped (its join
    /// handle holds why).
    pub fn send(&self, batch: Batch) -> Result<(), PublishError> {
        let shared = &self.intake.0;
        {
            let mut state = shared.state();
            if state.stopped {
                return Err(PublishError::DriverStopped);
            }
            state.backlog.push(batch);
            state.status.backlog_batches = state.waiting_batches();
            state.status.backlog_bytes = state.waiting_bytes();
            state.status.gap_segments = state.backlog.shed_segments();
        }
        shared.work.notify_one();
        Ok(())
    }

    /// A view of the driver for monitoring, which does not keep it running.
    pub fn monitor(&self) -> PublishMonitor {
        PublishMonitor {
            shared: Arc::clone(&self.intake.0),
        }
    }
}

/// Reads the state of a live driver (for the control API) without keeping
/// its intake open.
#[derive(Debug, Clone)]
pub struct PublishMonitor {
    shared: Arc<Shared>,
}

impl PublishMonitor {
    /// The publisher now.
    pub fn status(&self) -> PublishStatus {
        let state = self.shared.state();
        let mut status = state.status.clone();
        status.backlog_batches = state.waiting_batches();
        status.backlog_bytes = state.waiting_bytes();
        status.gap_segments = state.backlog.shed_segments();
        status.standby = state.fence.as_ref().map(Fence::standing);
        status
    }

    /// The last part listed in every rendition (the oldest of their
    /// newest), once each has a stored `live.m3u8`.
    pub fn listed(&self) -> Option<PartId> {
        self.shared.state().status.listed
    }
}

/// Starts the live driver on the current tokio runtime, its backlog
/// bounded by the live window.
pub fn spawn_live(
    publisher: Publisher,
    settings: LiveSettings,
) -> (LiveHandle, JoinHandle<Result<PublishSummary, PublishError>>) {
    spawn_live_with(publisher, settings, Backlog::new())
}

/// [`spawn_live`] with `backlog` (for example [`Backlog::limited`]).
pub fn spawn_live_with(
    publisher: Publisher,
    settings: LiveSettings,
    backlog: Backlog,
) -> (LiveHandle, JoinHandle<Result<PublishSummary, PublishError>>) {
    spawn_live_fenced(publisher, settings, backlog, None)
}

/// [`spawn_live_with`] for a process of a standby group: every operation
/// first asks `fence` whether this process may write. While it may not (a
/// standby), the backlog waits as during an outage, merged and bounded by
/// the window, and forgets the media and `at/` playlists the leader has
/// listed; once it may (it took over), the backlog is published: the
/// newest playlists and the media they name that the old leader did not
/// list. Status `"standby"`.
pub fn spawn_live_fenced(
    publisher: Publisher,
    settings: LiveSettings,
    backlog: Backlog,
    fence: Option<Fence>,
) -> (LiveHandle, JoinHandle<Result<PublishSummary, PublishError>>) {
    let shared = Arc::new(Shared::default());
    {
        let mut state = shared.state();
        state.status.state = "ok";
        state.backlog = backlog;
        state.fence = fence.clone();
    }
    let driver = Driver {
        publisher,
        fence,
        settings,
        shared: Arc::clone(&shared),
        summary: PublishSummary::default(),
        stored_any: false,
        outage: None,
        catching_up: None,
    };
    let task = tokio::spawn(driver.run());
    (
        LiveHandle {
            intake: Arc::new(Intake(shared)),
        },
        task,
    )
}

/// A run of failures.
#[derive(Debug)]
struct Outage {
    since: Instant,
    rounds: u32,
    last_report: Instant,
}

/// How one stage ended.
enum StageEnd {
    Stored,
    /// Newer work arrived while the stage was failing; the rest goes back.
    Interrupted(Vec<Op>),
}

struct Driver {
    publisher: Publisher,
    fence: Option<Fence>,
    settings: LiveSettings,
    shared: Arc<Shared>,
    summary: PublishSummary,
    stored_any: bool,
    outage: Option<Outage>,
    /// When the store came back with a backlog still to write.
    catching_up: Option<Instant>,
}

impl Driver {
    async fn run(mut self) -> Result<PublishSummary, PublishError> {
        let result = self.publish_until_closed().await;
        let mut state = self.shared.state();
        state.stopped = true;
        if let Err(error) = &result {
            state.status.state = "stopped";
            state.status.last_error = Some(error.to_string());
            tracing::error!(store = %self.publisher.store().url(), %error, "publishing stopped");
        }
        result
    }

    async fn publish_until_closed(&mut self) -> Result<PublishSummary, PublishError> {
        let mut deadline: Option<Instant> = None;
        loop {
            if let Some(fence) = self.fence.clone()
                && !fence.may_write(Instant::now())
            {
                if self.stand_by(fence).await {
                    return Ok(self.summary);
                }
                continue;
            }
            let next = {
                let mut state = self.shared.state();
                if state.closed && deadline.is_none() {
                    deadline = Some(Instant::now() + self.settings.drain_timeout);
                }
                let taken = state.backlog.take();
                state.in_hand = taken
                    .as_ref()
                    .map_or((0, 0), |(batch, n)| (*n, body_bytes(batch)));
                (taken, state.closed)
            };
            let (batch, batches) = match next {
                (Some(work), _) => work,
                (None, true) => return Ok(self.summary),
                (None, false) => {
                    self.caught_up();
                    self.shared.work.notified().await;
                    continue;
                }
            };
            publisher::validate(&batch)?;
            let mut stages = batch.stages.into_iter();
            let mut interrupted = None;
            for stage in stages.by_ref() {
                match self.stage(stage, deadline).await? {
                    StageEnd::Stored => {}
                    StageEnd::Interrupted(rest) => {
                        interrupted = Some(rest);
                        break;
                    }
                }
            }
            match interrupted {
                None => {
                    self.summary.batches += batches;
                    let mut state = self.shared.state();
                    state.in_hand = (0, 0);
                    state.status.published_batches = self.summary.batches;
                }
                Some(rest) => {
                    let mut left = vec![rest];
                    left.extend(stages);
                    let mut state = self.shared.state();
                    state.in_hand = (0, 0);
                    state.backlog.put_back(Batch { stages: left }, batches);
                }
            }
        }
    }

    /// Applies one stage until every operation is stored, or until newer
    /// work arrives while it is failing.
    async fn stage(
        &mut self,
        mut ops: Vec<Op>,
        deadline: Option<Instant>,
    ) -> Result<StageEnd, PublishError> {
        loop {
            let round = Instant::now();
            let mut failed = self.attempt_all(ops).await?;
            if failed.is_empty() {
                self.recovered();
                return Ok(StageEnd::Stored);
            }
            if self.fenced() {
                // The lease ran out mid-batch: what is left waits, unwritten.
                return Ok(StageEnd::Interrupted(
                    failed.into_iter().map(|(op, _)| op).collect(),
                ));
            }
            if let Retryable::Permanent(reason) = classify(&failed[0].1)
                && !self.stored_any
            {
                let (op, error) = failed.swap_remove(0);
                return Err(self
                    .publisher
                    .give_up(&op, 1, GiveUp::Permanent(reason), error));
            }
            let (op, error) = &failed[0];
            let wait = self.failing(op, error, failed.len(), round);
            let resume = Instant::now() + wait;
            if let Some(deadline) = deadline
                && resume > deadline
            {
                let (op, error) = failed.into_iter().next().expect("a failure");
                let waiting = self.shared.state().waiting_batches();
                tracing::error!(
                    store = %self.publisher.store().url(), waiting,
                    "the store is still failing as the broadcast ends; giving up on what waits"
                );
                return Err(self.publisher.give_up(
                    &op,
                    self.outage.as_ref().map_or(1, |o| o.rounds),
                    GiveUp::Exhausted,
                    error,
                ));
            }
            tokio::time::sleep_until(resume).await;
            ops = failed.into_iter().map(|(op, _)| op).collect();
            if !self.shared.state().backlog.is_empty() {
                return Ok(StageEnd::Interrupted(ops));
            }
        }
    }

    /// One attempt at every operation, concurrently; returns those that
    /// failed with a store error, and stops on an error no retry can fix.
    async fn attempt_all(
        &mut self,
        ops: Vec<Op>,
    ) -> Result<Vec<(Op, object_store::Error)>, PublishError> {
        let publisher = &self.publisher;
        let fence = self.fence.as_ref();
        let timeout = self.settings.attempt_timeout;
        let mut running = futures::stream::iter(ops)
            .map(|op| async move {
                // Asked at the last moment before each operation: a leader
                // paused mid-batch wakes with its lease gone.
                if fence.is_some_and(|f| !f.may_write(Instant::now())) {
                    return (op, Err(AttemptError::Store(fenced_error())));
                }
                let result = match tokio::time::timeout(timeout, publisher.attempt(&op)).await {
                    Ok(result) => result,
                    Err(_) => Err(AttemptError::Store(object_store::Error::Generic {
                        store: "publish",
                        source: format!("no answer within {timeout:?}").into(),
                    })),
                };
                (op, result)
            })
            .buffer_unordered(Publisher::DEFAULT_CONCURRENCY);
        let mut failed = Vec::new();
        let mut stored = BatchStats::default();
        let mut announce = Vec::new();
        while let Some((op, result)) = running.next().await {
            match result {
                Ok(stats) => {
                    stored.add(&stats);
                    announce.push(op);
                }
                Err(AttemptError::Store(error)) => failed.push((op, error)),
                Err(AttemptError::Final(error)) => return Err(error),
            }
        }
        drop(running);
        if !announce.is_empty() {
            self.stored(&stored, announce);
        }
        Ok(failed)
    }

    /// Books what was stored and announces it.
    fn stored(&mut self, stats: &BatchStats, ops: Vec<Op>) {
        self.stored_any = true;
        self.summary.totals.add(stats);
        {
            let mut state = self.shared.state();
            state.status.adopted += stats.adopted;
            let mut changed = false;
            for op in &ops {
                if let Op::Put(obj) = op
                    && obj.kind == ObjectKind::LivePlaylist
                    && let Some(last) = last_listed(&obj.body)
                {
                    state.listed.insert(obj.key.clone(), last);
                    changed = true;
                }
            }
            if changed {
                state.status.listed = state.listed.values().min().copied();
            }
        }
        if let Some(observer) = self.publisher.observer() {
            announce(observer, ops);
        }
        self.shared.state().status.published_objects = self.summary.totals.puts;
    }

    /// Whether the fence forbids writing now.
    fn fenced(&self) -> bool {
        self.fence
            .as_ref()
            .is_some_and(|f| !f.may_write(Instant::now()))
    }

    /// Waits as a standby until the fence opens: the backlog keeps what
    /// the leader has not listed. Returns true once closed (the broadcast
    /// ended while standing by: nothing of the backlog is this process's to
    /// publish).
    async fn stand_by(&mut self, mut fence: Fence) -> bool {
        {
            let listed = fence.standing().leader_listed;
            let mut state = self.shared.state();
            if let Some(listed) = listed {
                state.backlog.forget(&|op| listed_by_leader(op, listed));
            }
            state.status.state = "standby";
            state.status.backlog_batches = state.waiting_batches();
            state.status.backlog_bytes = state.waiting_bytes();
            if state.closed {
                return true;
            }
        }
        // The outage bookkeeping does not apply to a standby.
        self.outage = None;
        self.catching_up = None;
        tokio::select! {
            () = fence.changed() => {}
            () = self.shared.work.notified() => {}
        }
        if fence.may_write(Instant::now()) {
            self.shared.state().status.state = "ok";
        }
        false
    }

    /// A stage was stored whole: if the store was failing, it is back.
    fn recovered(&mut self) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        let now = Instant::now();
        let lasted = now - outage.since;
        let mut state = self.shared.state();
        state.status.state = "ok";
        state.status.failing_since_unix_ms = None;
        state.status.outages += 1;
        state.status.last_outage_ms = Some(lasted.as_millis() as u64);
        tracing::warn!(
            store = %self.publisher.store().url(),
            outage_ms = lasted.as_millis() as u64,
            waiting_batches = state.waiting_batches(),
            "the store is back"
        );
        self.catching_up = Some(now);
    }

    /// Records a failed round that started at `round` (an outage starts
    /// when its first failed attempt was made, not when a timeout noticed
    /// it) and returns the wait before the next round.
    fn failing(
        &mut self,
        op: &Op,
        error: &object_store::Error,
        failures: usize,
        round: Instant,
    ) -> Duration {
        let now = Instant::now();
        let store = self.publisher.store().url().to_owned();
        let mut state = self.shared.state();
        state.status.last_error = Some(format!("{} {}: {error}", op.verb(), op.key()));
        let outage = match &mut self.outage {
            Some(outage) => {
                outage.rounds += 1;
                if now - outage.last_report >= self.settings.report_every {
                    outage.last_report = now;
                    tracing::warn!(
                        store,
                        failing_ms = (now - outage.since).as_millis() as u64,
                        waiting_batches = state.waiting_batches(),
                        waiting_bytes = state.waiting_bytes(),
                        %error,
                        "the store is still failing; the broadcast goes on and the backlog waits"
                    );
                }
                outage
            }
            None => {
                state.status.state = "failing";
                let noticed_ms = i64::try_from((now - round).as_millis()).unwrap_or(i64::MAX);
                state.status.failing_since_unix_ms = Some(
                    chrono::Utc::now()
                        .timestamp_millis()
                        .saturating_sub(noticed_ms),
                );
                self.catching_up = None;
                tracing::warn!(
                    store, op = op.verb(), key = op.key(), failures, %error,
                    "the store is failing; the broadcast goes on and publishing will resume when it is back"
                );
                self.outage.insert(Outage {
                    since: round,
                    rounds: 1,
                    last_report: now,
                })
            }
        };
        self.settings.retry.backoff(outage.rounds, op.key())
    }

    /// Nothing waits: an outage's backlog is written.
    fn caught_up(&mut self) {
        if let Some(back) = self.catching_up.take() {
            let took = Instant::now() - back;
            let mut state = self.shared.state();
            state.status.last_catch_up_ms = Some(took.as_millis() as u64);
            tracing::info!(
                store = %self.publisher.store().url(),
                catch_up_ms = took.as_millis() as u64,
                "caught up: the backlog is published"
            );
        }
    }
}

/// The error of an operation the fence held back.
fn fenced_error() -> object_store::Error {
    object_store::Error::Generic {
        store: "publish",
        source: "not the leader of the standby group: nothing is written".into(),
    }
}

/// The last part a media playlist lists.
fn last_listed(body: &[u8]) -> Option<PartId> {
    let playlist = MediaPlaylist::parse(std::str::from_utf8(body).ok()?).ok()?;
    let uri = match &playlist.open {
        Some(open) => open.parts.last().map(|p| p.uri.as_str()),
        None => None,
    }
    .or_else(|| {
        playlist
            .segments
            .last()
            .and_then(|s| s.parts.last())
            .map(|p| p.uri.as_str())
    })?;
    match super::layout::RenditionFile::parse(uri)? {
        super::layout::RenditionFile::Part(id) => Some(id),
        _ => None,
    }
}

/// Whether the leader has listed (and so stored) what `op` would store:
/// a part or `at/` playlist up to `listed`, or a segment before its
/// segment. Playlists that are rewritten and deletions are never forgotten.
fn listed_by_leader(op: &Op, listed: PartId) -> bool {
    use super::layout::{ObjectKey, RenditionFile};
    let Op::Put(obj) = op else {
        return false;
    };
    match ObjectKey::parse(&obj.key) {
        Some(ObjectKey::Rendition { file, .. }) => match file {
            RenditionFile::Part(id) | RenditionFile::At(id) => id <= listed,
            RenditionFile::Segment(msn) => msn < listed.msn,
            RenditionFile::Init | RenditionFile::Live => false,
        },
        _ => false,
    }
}

fn announce(observer: &broadcast::Sender<Op>, ops: Vec<Op>) {
    for op in ops {
        // No receiver is not an error: nobody is listening yet.
        let _ = observer.send(op);
    }
}
