//! The tokio task that applies batches to the store, one after another.
//!
//! Contract: [`spawn`] starts a task that receives [`Batch`]es over a bounded
//! channel and applies them strictly in the order sent, each completely before
//! the next begins, so the order the packager decided (media before the
//! playlists naming them, across batches too) holds in the store. When the
//! channel is full, [`PublishHandle::send`] waits: a slow store shows up as
//! back-pressure on the sender, never as unbounded memory. The first batch
//! that fails for good stops the task; its join handle returns that error and
//! every later `send` fails with [`PublishError::DriverStopped`]. When every
//! handle is dropped the task finishes the queued batches and returns a
//! [`PublishSummary`].

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::publisher::{Batch, BatchStats, PublishError, Publisher};

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
