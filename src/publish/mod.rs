//! Publishing: every object of a broadcast goes to object storage.
//!
//! - [`layout`]: where each object of a broadcast lives (keys, names,
//!   kinds); pure.
//! - [`store`]: opens a store from a URL (`file://`, `memory://`, `s3://`,
//!   `gs://`, `az://` or a plain path) with client timeouts that keep one
//!   attempt short.
//! - [`retry`]: the retry policy, the transient/permanent split and each
//!   operation's retry state, which says when to attempt again or to give up
//!   (pure, time passed in).
//! - [`publisher`]: typed puts (Content-Type, Cache-Control, conditional
//!   create for immutable objects), one attempt at a time, and staged batches
//!   that keep media ahead of the playlists naming it.
//! - [`driver`]: the tokio side: sleeps until each retry, applies a batch's
//!   stages in order, and runs the task that applies batches in order behind
//!   a bounded queue (`onair package`: a store that fails for good ends the
//!   job).
//! - [`backlog`]: what a live broadcast has produced and the store has not
//!   taken, merged so that it stays bounded by the live window (pure).
//! - [`lease`]: leader election for a standby group through the store (a
//!   pure state machine, time passed in).
//! - [`standby`]: the lease driver of a standby group and the [`Fence`]
//!   the live driver asks before every write.
//! - [`live`]: the live driver: never blocks the pipeline, retries for as
//!   long as the broadcast runs, catches up on the newest playlists and the
//!   media they name when the store is back.
//!
//! Invariants the rest of onair relies on: an immutable object, once stored,
//! never changes; a batch stage starts only after the previous stage is
//! stored; a failed operation stops its batch before any later stage, and
//! (in `onair package`) stops the driver before any later batch, while the
//! live driver keeps the batch, merged with newer ones, until the store is
//! back.

pub mod backlog;
pub mod driver;
pub mod layout;
pub mod lease;
pub mod live;
pub mod publisher;
pub mod retry;
pub mod standby;
pub mod store;

pub use backlog::{Backlog, BacklogLimit, GapFiller};
pub use driver::{PublishHandle, PublishSummary, spawn};
pub use layout::ObjectKind;
pub use live::{
    LiveHandle, LiveSettings, PublishMonitor, PublishStatus, spawn_live, spawn_live_fenced,
    spawn_live_with,
};
pub use publisher::{AttemptError, Batch, BatchStats, Op, PublishError, Publisher, PutObject};
pub use retry::{Decision, GiveUp, RetryPolicy, RetryState};
pub use standby::{Fence, Standing, spawn_lease};
pub use store::{Capabilities, Store, StoreError, StoreOptions, open_store, open_store_with};
