//! The tokio side of publishing: the waits between attempts, the stages of a
//! batch, and the task that applies batches to the store one after another.
//!
//! Contract: [`perform`] makes the attempts at one operation that its
//! [`RetryState`](super::retry::RetryState) allows, sleeping on tokio's clock until each retry instant
//! (so tests with paused time see the exact schedule at no cost in real
//! time). [`apply`] applies a batch's stages in order, the operations of one
//! stage concurrently, and stops at the first operation that fails for good.
//! [`spawn`] starts a task that receives [`Batch`]es over a bounded
//! channel and applies them strictly in the order sent, each completely before
//! the next begins, so the order the packager decided (media before the
//! playlists naming them, across batches too) holds in the store. When the
//! channel is full, [`PublishHandle::send`] waits: a slow store shows up as
//! back-pressure on the sender, never as unbounded memory. The first batch
//! that fails for good stops the task; its join handle returns that error and
//! every later `send` fails with [`PublishError::DriverStopped`]. When every
//! handle is dropped the task finishes the queued batches and returns a
//! [`PublishSummary`].

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::publisher::{self, AttemptError, Batch, BatchStats, Op, PublishError, Publisher};
use super::retry::{Decision, classify};

/// Sends batches to a running publish driver. Cloneable; the driver ends once
/// every clone is dropped and the queue is drained.
#[derive(Debug, Clone)]
pub struct PublishHandle {
    tx: mpsc::Sender<Batch>,
}

impl PublishHandle {
    /// Queues `batch`, waiting while the queue is full. Fails with
    /// [`PublishError::DriverStopped`] once the driver has stopped (the join
    /// handle then holds the reason).
    pub async fn send(&self, batch: Batch) -> Result<(), PublishError> {
        self.tx
            .send(batch)
            .await
            .map_err(|_| PublishError::DriverStopped)
    }

    /// Whether the driver has stopped.
    pub fn is_stopped(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What a driver did over its lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Batches applied.
    pub batches: u64,
    /// Operation counts over all batches.
    pub totals: BatchStats,
}

/// Starts the driver on the current tokio runtime with a queue of `capacity`
/// batches (at least 1). Must be called from within a tokio runtime.
pub fn spawn(
    publisher: Publisher,
    capacity: usize,
) -> (
    PublishHandle,
    JoinHandle<Result<PublishSummary, PublishError>>,
) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(run(publisher, rx));
    (PublishHandle { tx }, task)
}

async fn run(
    publisher: Publisher,
    mut rx: mpsc::Receiver<Batch>,
) -> Result<PublishSummary, PublishError> {
    let mut summary = PublishSummary::default();
    while let Some(batch) = rx.recv().await {
        match publisher.apply(batch).await {
            Ok(stats) => {
                summary.batches += 1;
                summary.totals.add(&stats);
            }
            Err(error) => {
                // Refuse further batches at once: a later batch may hold a
                // playlist naming what just failed to store.
                rx.close();
                tracing::error!(store = %publisher.store().url(), error = %error, "publishing stopped");
                return Err(error);
            }
        }
    }
    Ok(summary)
}

/// Applies the stages of `batch` with `publisher` in order, the operations of
/// each stage concurrently (at most [`Publisher::DEFAULT_CONCURRENCY`] at
/// once), each retried by [`perform`]. A stage starts only once every operation of
/// the previous one is stored, and is announced on the publisher's observer
/// then. Stops at the first operation that fails for good: later stages are
/// not started (so no playlist names a missing object), and operations of
/// the failing stage still in flight are abandoned.
pub async fn apply(publisher: &Publisher, batch: Batch) -> Result<BatchStats, PublishError> {
    publisher::validate(&batch)?;
    let mut total = BatchStats::default();
    for stage in batch.stages {
        let announce = publisher.observer().map(|o| (o, stage.clone()));
        // Each future owns its operation: futures borrowing from `stage`
        // would make the spawned driver task's future not `Send` for every
        // lifetime, which `tokio::spawn` requires.
        let mut running = futures::stream::iter(stage)
            .map(|op| async move { perform(publisher, &op).await })
            .buffer_unordered(Publisher::DEFAULT_CONCURRENCY);
        while let Some(stats) = running.next().await {
            total.add(&stats?);
        }
        if let Some((observer, ops)) = announce {
            for op in ops {
                // No receiver is not an error: nobody is listening yet.
                let _ = observer.send(op);
            }
        }
    }
    Ok(total)
}

/// Performs `op` with `publisher`: attempts it, and after each failure asks
/// the operation's [`RetryState`](super::retry::RetryState) what follows,
/// sleeping until the retry instant it names. Returns what the operation
/// stored, its retries counted in [`BatchStats::retries`], or the error it
/// ended with.
pub async fn perform(publisher: &Publisher, op: &Op) -> Result<BatchStats, PublishError> {
    let policy = publisher.retry_policy();
    let mut retry = policy.start(op.key());
    loop {
        let error = match publisher.attempt(op).await {
            Ok(stats) => {
                return Ok(BatchStats {
                    retries: u64::from(retry.attempt().saturating_sub(1)),
                    ..stats
                });
            }
            Err(AttemptError::Final(error)) => return Err(error),
            Err(AttemptError::Store(error)) => error,
        };
        let attempt = retry.attempt();
        let now = Instant::now();
        match retry.failed(now.into_std(), classify(&error)) {
            Decision::RetryAt(at) => {
                let at = Instant::from_std(at);
                tracing::warn!(
                    op = op.verb(), key = op.key(), store = %publisher.store().url(),
                    attempt, max = policy.attempts(),
                    wait = ?at.saturating_duration_since(now),
                    error = %error, "store operation failed; retrying"
                );
                tokio::time::sleep_until(at).await;
            }
            Decision::GiveUp(why) => {
                return Err(publisher.give_up(op, retry.attempt(), why, error));
            }
        }
    }
}
