//! The composition layer: drivers that run the [`Pipeline`] against a real
//! store, as fast as the CPU allows (`onair package`) or paced by the wall
//! clock (`onair live`), and [`OnAir`], which assembles a live broadcast
//! from the layers below.
//!
//! The pipeline runs on a blocking thread (it is CPU work: decoding,
//! resampling, encoding). In `package`, batches cross to the publish driver
//! over its bounded queue, so a slow store slows packaging down instead of
//! growing memory. In a live run they go to the live driver's backlog, which
//! never makes the pipeline wait: the program clock goes on whatever the
//! store does, and the backlog stays bounded by the live window.

pub mod keys_file;
pub mod on_air;
pub mod operator;
pub mod resume;

pub use keys_file::KeysFile;
pub use on_air::{OnAir, StandbyGroup, WhipSettings};
pub use resume::{StreamTiming, TimingError, lock_to_stream, lock_to_stream_as};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{broadcast, mpsc};

use crate::ingest::{Close, IngestEvent, ReturnPacket};
use crate::pipeline::{Pipeline, PipelineError, StageTimes};
use crate::publish::{
    self, Backlog, BacklogLimit, Batch, LiveHandle, LiveSettings, Op, PublishError, PublishHandle,
    PublishMonitor, PublishSummary, Publisher, Store,
};
use crate::studio::ControlRequest;
use crate::time::{Pacer, ProgramClock, ProgramTime, SAMPLE_RATE, WallClock, rescale};

/// Batches queued between the pipeline and the store.
const QUEUE: usize = 16;

/// Program time a `package` run advances between progress updates: 10 parts.
const PACKAGE_STEP: u64 = 10 * 15_360;

/// Pacing step of a live run: one Opus frame, 20 ms.
const LIVE_TICK: Duration = Duration::from_millis(20);

/// A run that failed. Says which stage failed; the inner error says why.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The media pipeline failed (a source, an encoder, the packager).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Publishing failed after its retries.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The stream's previous playlist could not be read to continue its
    /// numbering. Check the store's reachability and permissions.
    #[error("cannot read {key} from {store} to continue the stream: {source}")]
    Resume {
        /// Object key.
        key: String,
        /// Store URL.
        store: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The stream's timing record could not be read, created or matched.
    #[error(transparent)]
    Timing(#[from] TimingError),
    /// A listener or socket of the broadcast could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The broadcast asks for something this build of onair leaves out.
    #[error(
        "this onair was built without the {feature} feature: rebuild with `--features {feature}`"
    )]
    NotBuilt {
        /// The Cargo feature.
        feature: &'static str,
    },
    /// A task of the run panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

/// What a finished run did.
#[derive(Debug, Clone, Copy)]
pub struct RunSummary {
    /// Program samples this run produced.
    pub program_samples: u64,
    /// Store operations.
    pub publish: PublishSummary,
    /// Where the pipeline thread spent its time.
    pub stages: StageTimes,
}

/// Progress reports from a `package` run: program samples done.
pub type Progress = Box<dyn Fn(u64) + Send>;

/// A publisher for `store` with playlist cache lifetimes taken from the
/// pipeline's timing, announcing stored operations on `observer`.
fn publisher(
    store: Store,
    pipeline: &Pipeline,
    observer: Option<broadcast::Sender<Op>>,
) -> Publisher {
    let timeline = pipeline.packager().timeline();
    let part_ms = rescale(timeline.config().part_target, SAMPLE_RATE, 1000);
    let publisher = Publisher::new(store, publish::RetryPolicy::default()).with_playlist_timing(
        u32::try_from(timeline.target_duration()).unwrap_or(u32::MAX),
        u32::try_from(part_ms).unwrap_or(u32::MAX),
    );
    match observer {
        Some(observer) => publisher.with_observer(observer),
        None => publisher,
    }
}

/// Starts the publish driver of a `package` run: a bounded queue, so that
/// packaging faster than the store takes it waits instead of filling memory.
fn start_publisher(
    store: Store,
    pipeline: &Pipeline,
) -> (
    PublishHandle,
    tokio::task::JoinHandle<Result<PublishSummary, PublishError>>,
) {
    publish::spawn(publisher(store, pipeline, None), QUEUE)
}

/// The publisher of a live run: a [`publish::live`] driver, which never
/// makes the pipeline wait and outlasts store outages.
pub struct LivePublisher {
    handle: LiveHandle,
    task: tokio::task::JoinHandle<Result<PublishSummary, PublishError>>,
}

impl LivePublisher {
    /// Starts the live driver for `store`, retrying at most one part apart,
    /// with playlist cache lifetimes from the pipeline's timing, announcing
    /// stored operations on `observer`, its backlog bounded by the window
    /// and by `limit` (beyond which the oldest segments become gaps). Must
    /// be called within a tokio runtime.
    pub fn start(
        store: Store,
        pipeline: &Pipeline,
        observer: Option<broadcast::Sender<Op>>,
        limit: BacklogLimit,
    ) -> Self {
        Self::start_with(publisher(store, pipeline, observer), pipeline, limit, None)
    }

    /// [`start`](Self::start) for a process of a standby group: it writes
    /// only while `fence` lets it, keeps what another member stored first
    /// ([`Publisher::sharing_names`]), and bounds each attempt by
    /// `request_timeout` (the lease's, much shorter than the lease). Its
    /// origin follows the store, so nothing is announced.
    pub fn start_fenced(
        store: Store,
        pipeline: &Pipeline,
        limit: BacklogLimit,
        fence: publish::Fence,
        request_timeout: Duration,
    ) -> Self {
        let publisher = publisher(store, pipeline, None).sharing_names();
        Self::start_with(publisher, pipeline, limit, Some((fence, request_timeout)))
    }

    fn start_with(
        publisher: Publisher,
        pipeline: &Pipeline,
        limit: BacklogLimit,
        fence: Option<(publish::Fence, Duration)>,
    ) -> Self {
        let part = Duration::from_nanos(rescale(
            pipeline.packager().timeline().config().part_target,
            SAMPLE_RATE,
            1_000_000_000,
        ));
        let backlog = if limit == BacklogLimit::default() {
            Backlog::new()
        } else {
            Backlog::limited(limit, pipeline.packager().gap_filler())
        };
        let mut settings = LiveSettings::for_part_target(part);
        if let Some((_, timeout)) = &fence {
            settings.attempt_timeout = *timeout;
        }
        let (handle, task) =
            publish::spawn_live_fenced(publisher, settings, backlog, fence.map(|(f, _)| f));
        Self { handle, task }
    }

    /// The publisher's state, for the control API.
    pub fn monitor(&self) -> PublishMonitor {
        self.handle.monitor()
    }
}

/// Sends `batch` from the pipeline thread.
fn send(handle: &PublishHandle, rt: &Handle, batch: Batch) -> Result<(), PublishError> {
    rt.block_on(handle.send(batch))
}

/// Waits for the publish driver; its error wins over a send failure, since
/// it is the cause.
async fn join_publisher(
    task: tokio::task::JoinHandle<Result<PublishSummary, PublishError>>,
) -> Result<PublishSummary, RunError> {
    task.await
        .map_err(|e| RunError::Task(e.to_string()))?
        .map_err(RunError::from)
}

/// Packages every host to the end of the longest file as fast as possible
/// and leaves a finished stream (`EXT-X-ENDLIST`).
pub async fn package(
    mut pipeline: Pipeline,
    store: Store,
    progress: Option<Progress>,
) -> Result<RunSummary, RunError> {
    let (handle, task) = start_publisher(store, &pipeline);
    let rt = Handle::current();
    let work = tokio::task::spawn_blocking(move || -> Result<(u64, StageTimes), RunError> {
        send(&handle, &rt, pipeline.start()?)?;
        loop {
            let until = pipeline.clock().plus(PACKAGE_STEP);
            if let Some(batch) = pipeline.advance(until)? {
                send(&handle, &rt, batch)?;
            }
            if let Some(p) = &progress {
                p(pipeline.clock().samples());
            }
            if pipeline
                .content_end()
                .is_some_and(|end| pipeline.clock() >= end)
            {
                break;
            }
        }
        send(&handle, &rt, pipeline.finish()?)?;
        Ok((pipeline.clock().samples(), pipeline.stage_times()))
    });
    finish_run(work, task).await
}

/// Waits for the pipeline thread and the publisher; reports the publisher's
/// error when the pipeline only failed because the publisher had stopped.
async fn finish_run(
    work: tokio::task::JoinHandle<Result<(u64, StageTimes), RunError>>,
    task: tokio::task::JoinHandle<Result<PublishSummary, PublishError>>,
) -> Result<RunSummary, RunError> {
    let worked = work.await.map_err(|e| RunError::Task(e.to_string()))?;
    let published = join_publisher(task).await;
    match (worked, published) {
        (Ok((program_samples, stages)), Ok(publish)) => Ok(RunSummary {
            program_samples,
            publish,
            stages,
        }),
        (Err(RunError::Publish(PublishError::DriverStopped)), Err(cause)) => Err(cause),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// Closes ingest sessions on behalf of the studio (replaced, kicked,
/// refused audio).
pub type Closer = Box<dyn Fn(Close) + Send>;

/// Hands hosts' return feed packets to the ingest sessions that listen.
/// Never waits: a packet that cannot go at once is lost, as on a network.
pub type Returner = Box<dyn Fn(ReturnPacket) + Send>;

/// The connections of a live run beyond its files.
pub struct LiveIo {
    /// Announces every stored operation (see [`Publisher::with_observer`]):
    /// how an in-process origin ([`crate::origin::Origin::observe`]) learns
    /// of each part the moment it is stored. Used when `publisher` is
    /// `None`; a publisher started beforehand has its own.
    pub observer: Option<broadcast::Sender<Op>>,
    /// The publisher, when the caller started it (to show its state in the
    /// control API); otherwise the run starts one.
    pub publisher: Option<LivePublisher>,
    /// Ingest events, taken once per tick (20 ms).
    pub ingest: Option<mpsc::Receiver<IngestEvent>>,
    /// Control commands, taken once per tick after the ingest events.
    pub control: Option<mpsc::Receiver<ControlRequest>>,
    /// Carries out the studio's session closes.
    pub closer: Option<Closer>,
    /// Delivers hosts' return feeds.
    pub returner: Option<Returner>,
    /// The clock ingest stamps arrivals with.
    pub clock: ProgramClock,
    /// Where the loop reads the time and waits for each tick: the wall
    /// clock, or simulated time in tests.
    pub pacer: Arc<dyn Pacer>,
    /// Stop without ending the stream (no `EXT-X-ENDLIST`): a member of a
    /// standby group leaves the stream to the others.
    pub hand_over: bool,
}

impl Default for LiveIo {
    fn default() -> Self {
        Self {
            observer: None,
            publisher: None,
            ingest: None,
            control: None,
            closer: None,
            returner: None,
            clock: ProgramClock::start(),
            pacer: Arc::new(WallClock),
            hand_over: false,
        }
    }
}

/// Runs the pipeline paced by the wall clock, like a live broadcast, until
/// `stop` is set; then flushes everything and writes `EXT-X-ENDLIST`.
pub async fn live(
    pipeline: Pipeline,
    store: Store,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, RunError> {
    broadcast(pipeline, store, stop, LiveIo::default()).await
}

/// [`live`] with live hosts, control and an in-process origin: every tick
/// (20 ms of program time) the pipeline thread takes the inbox's messages,
/// mixes and encodes up to the clock, hands the batch to the publisher and
/// passes on the studio's session closes.
pub async fn broadcast(
    mut pipeline: Pipeline,
    store: Store,
    stop: Arc<AtomicBool>,
    io: LiveIo,
) -> Result<RunSummary, RunError> {
    let LiveIo {
        observer,
        publisher,
        mut ingest,
        mut control,
        closer,
        returner,
        clock,
        pacer,
        hand_over,
    } = io;
    let LivePublisher { handle, task } = publisher.unwrap_or_else(|| {
        LivePublisher::start(store, &pipeline, observer, BacklogLimit::default())
    });
    let work = tokio::task::spawn_blocking(move || -> Result<(u64, StageTimes), RunError> {
        // Sending never waits: the store's troubles never reach the clock.
        handle.send(pipeline.start()?)?;
        let first = pipeline.clock();
        // A run that continues a stream may start up to a segment ahead of
        // the clock (its first free segment): it waits for it.
        let mut tick = pacer.now().max(clock.instant(pipeline.clock()));
        let epoch_unix_ms = pipeline.packager().timeline().config().epoch_unix_ms;
        let mut steps = ClockSteps::default();
        while !stop.load(Ordering::Relaxed) {
            tick += LIVE_TICK;
            let now = pacer.now();
            if tick > now {
                pacer.sleep_until(tick);
            } else if now - tick > Duration::from_secs(1) {
                // Far behind (the machine stalled): catch up in one go rather
                // than tick by tick.
                tracing::warn!(
                    behind_ms = (now - tick).as_millis() as u64,
                    "pipeline is behind the wall clock"
                );
                tick = now;
            }
            take_messages(&mut pipeline, ingest.as_mut(), control.as_mut());
            let now = pacer.now();
            steps.check(pacer.unix_ms(), epoch_unix_ms, clock.at(now));
            if let Some(batch) = pipeline.advance(clock.at(now))? {
                handle.send(batch)?;
            }
            match &returner {
                Some(returner) => pipeline.take_returns().for_each(returner),
                None => pipeline.take_returns().for_each(drop),
            }
            let closes = pipeline.take_closes();
            if let Some(closer) = &closer {
                closes.into_iter().for_each(closer);
            }
        }
        if !hand_over {
            handle.send(pipeline.finish()?)?;
        }
        Ok((pipeline.clock().since(first), pipeline.stage_times()))
    });
    finish_run(work, task).await
}

/// Watches the wall clock against the program clock of a live run: the
/// program clock follows the monotonic clock only, so a step of the wall
/// clock (an NTP correction, a manual change) opens a difference between
/// `EXT-X-PROGRAM-DATE-TIME` and the machine's time. It is logged, once per
/// change of more than a second, and never followed into the timeline.
#[derive(Debug, Default)]
struct ClockSteps {
    /// Ticks since the last check.
    ticks: u32,
    /// The difference last logged, milliseconds (wall ahead positive).
    logged_ms: i64,
}

impl ClockSteps {
    /// Checks every 250 ticks (5 s).
    const EVERY: u32 = 250;
    /// A difference this much beyond the logged one is a step.
    const STEP_MS: i64 = 1000;

    fn check(&mut self, wall_unix_ms: Option<i64>, epoch_unix_ms: i64, program: ProgramTime) {
        self.ticks += 1;
        if self.ticks < Self::EVERY {
            return;
        }
        self.ticks = 0;
        let Some(wall) = wall_unix_ms else {
            return;
        };
        let program_ms = i64::try_from(crate::time::millis(program.samples())).unwrap_or(i64::MAX);
        let difference = wall
            .saturating_sub(epoch_unix_ms)
            .saturating_sub(program_ms);
        if (difference - self.logged_ms).abs() > Self::STEP_MS {
            tracing::warn!(
                wall_ahead_ms = difference,
                "the wall clock stepped: program time keeps the monotonic clock's pace, \
                 so program date-times now differ from this machine's clock by that much"
            );
            self.logged_ms = difference;
        }
    }
}

/// Hands the inbox's waiting messages to the pipeline: the ingest events
/// first, then the commands, so a command sees the hosts as of this tick.
fn take_messages(
    pipeline: &mut Pipeline,
    ingest: Option<&mut mpsc::Receiver<IngestEvent>>,
    control: Option<&mut mpsc::Receiver<ControlRequest>>,
) {
    if let Some(ingest) = ingest {
        while let Ok(event) = ingest.try_recv() {
            pipeline.ingest(event);
        }
    }
    if let Some(control) = control {
        while let Ok(ControlRequest { command, reply }) = control.try_recv() {
            // The requester may have gone (timeout): nothing to do.
            let _ = reply.send(pipeline.command(command));
        }
    }
}
