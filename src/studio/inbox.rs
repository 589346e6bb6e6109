//! The studio's inbox: what reaches the pipeline thread of a live run from
//! the outside, taken once per tick (20 ms).
//!
//! Two bounded channels feed it. Ingest drivers send
//! [`IngestEvent`](crate::ingest::IngestEvent)s on their own channel (a full
//! one slows the publishers down, through TCP or the jitter buffers); the
//! control API sends [`ControlRequest`]s, each answered on its oneshot
//! within the tick. Per tick the ingest events are applied first, then the
//! commands, so a command sees the hosts as they are at that tick.

use tokio::sync::oneshot;

use super::{Command, CommandError, HostInfo};

/// The answer to a control command: the hosts it concerns, as they are
/// after it.
pub type CommandReply = Result<Vec<HostInfo>, CommandError>;

/// A control command and where to send its answer.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub command: Command,
    /// Where the answer goes. The requester may have given up (timeout):
    /// a closed sender is not an error.
    pub reply: oneshot::Sender<CommandReply>,
}
