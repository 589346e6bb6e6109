//! Operator state that follows the broadcast, not the process: in a standby
//! group, a mute, gain or kick given to any member's control API reaches
//! every member, so after a takeover a muted host is still muted.
//!
//! The state lives in the store, at `{stream}/operator.json` (never served
//! to listeners), beside the lease: no other service. Each member
//! - passes its control API's commands on to its studio, and once one that
//!   changes the operator state (gain, mute, kick) succeeds, merges the
//!   change into the stored state (read, merge, write);
//! - reads the stored state every [`POLL`] (a conditional GET, so an
//!   unchanged state costs a `304`) and applies to its own studio what
//!   differs from what it last applied: gains and mutes, and kicks newer
//!   than the last it applied and younger than the studio's kick hold.
//!
//! Two operators changing the state on two members within one read-merge-
//! write of each other may lose one of the two changes (the last write
//! wins); operators of one broadcast share one console in practice.
//! Store failures are logged and retried at the next change or poll; they
//! never reach the control API's answers or the pipeline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::publish::Store;
use crate::studio::{Command, ControlRequest, KICK_HOLD};
use crate::time::SAMPLE_RATE;

/// How often each member reads the stored state.
pub const POLL: Duration = Duration::from_millis(500);

/// A host's settings as the operator last gave them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostSetting {
    /// Gain, dB.
    pub gain_db: f32,
    /// Muted.
    pub muted: bool,
}

/// The operator state of a broadcast.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Gain and mute per host the operator has touched.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostSetting>,
    /// When each host was last kicked, ms since the Unix epoch.
    #[serde(default)]
    pub kicks: BTreeMap<String, i64>,
}

impl OperatorState {
    /// The change a successful `command` made, as a state holding only it;
    /// `None` for commands that change no operator state. `setting` is the
    /// host's setting after the command (from the studio's answer).
    pub fn change(command: &Command, setting: Option<HostSetting>, now_ms: i64) -> Option<Self> {
        let mut change = Self::default();
        match command {
            Command::SetGain { host, .. } | Command::SetMuted { host, .. } => {
                change.hosts.insert(host.clone(), setting?);
            }
            Command::Kick { host } => {
                change.kicks.insert(host.clone(), now_ms);
            }
            _ => return None,
        }
        Some(change)
    }

    /// `self` with `change` laid over it.
    pub fn merged(&self, change: &Self) -> Self {
        let mut out = self.clone();
        out.hosts
            .extend(change.hosts.iter().map(|(k, v)| (k.clone(), *v)));
        for (host, at) in &change.kicks {
            let entry = out.kicks.entry(host.clone()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        out
    }

    /// The commands that take a studio from `applied` to `self`, at wall
    /// clock `now_ms`: settings that differ, and kicks newer than the last
    /// applied and younger than the studio's kick hold (an older one has
    /// run its course).
    pub fn commands_from(&self, applied: &Self, now_ms: i64) -> Vec<Command> {
        let hold_ms = i64::try_from(KICK_HOLD * 1000 / u64::from(SAMPLE_RATE)).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for (host, setting) in &self.hosts {
            let before = applied.hosts.get(host);
            if before.is_none_or(|b| b.gain_db != setting.gain_db) {
                out.push(Command::SetGain {
                    host: host.clone(),
                    db: setting.gain_db,
                });
            }
            if before.is_none_or(|b| b.muted != setting.muted) {
                out.push(Command::SetMuted {
                    host: host.clone(),
                    muted: setting.muted,
                });
            }
        }
        for (host, at) in &self.kicks {
            let newer = applied.kicks.get(host).is_none_or(|a| at > a);
            if newer && now_ms.saturating_sub(*at) < hold_ms {
                out.push(Command::Kick { host: host.clone() });
            }
        }
        out
    }
}

/// Shares the operator state of `stream` through `store`: returns the
/// sender the control API should use; commands go on to `studio`.
pub fn share(
    store: &Store,
    stream: &str,
    studio: mpsc::Sender<ControlRequest>,
) -> mpsc::Sender<ControlRequest> {
    let (tx, rx) = mpsc::channel(super::on_air::CONTROL_INBOX);
    let shared = Arc::new(Shared {
        store: Arc::clone(store.object_store()),
        key: Path::from(crate::publish::layout::operator_key(stream)),
        applied: Mutex::new(OperatorState::default()),
    });
    tokio::spawn(Arc::clone(&shared).forward(rx, studio.clone()));
    tokio::spawn(shared.follow(studio));
    tx
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    key: Path,
    /// What this member last applied or wrote.
    applied: Mutex<OperatorState>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Shared {
    fn applied(&self) -> std::sync::MutexGuard<'_, OperatorState> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Passes the control API's commands on, and records the changes of
    /// those that succeed.
    async fn forward(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<ControlRequest>,
        studio: mpsc::Sender<ControlRequest>,
    ) {
        while let Some(ControlRequest { command, reply }) = rx.recv().await {
            let (tx, answer) = oneshot::channel();
            let recorded = match &command {
                Command::SetGain { .. } | Command::SetMuted { .. } | Command::Kick { .. } => {
                    Some(command.clone())
                }
                _ => None,
            };
            if studio
                .send(ControlRequest { command, reply: tx })
                .await
                .is_err()
            {
                return;
            }
            let Ok(result) = answer.await else {
                continue;
            };
            let setting = result.as_ref().ok().and_then(|hosts| {
                hosts.first().map(|h| HostSetting {
                    gain_db: h.gain_db,
                    muted: h.muted,
                })
            });
            let succeeded = result.is_ok();
            let _ = reply.send(result);
            if let Some(command) = recorded.filter(|_| succeeded)
                && let Some(change) = OperatorState::change(&command, setting, now_ms())
            {
                self.write(&change).await;
            }
        }
    }

    /// Merges `change` into the stored state.
    async fn write(&self, change: &OperatorState) {
        let stored = match self.read(None).await {
            Ok(Some((state, _))) => state,
            Ok(None) => OperatorState::default(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the operator state; writing this change alone");
                self.applied().clone()
            }
        };
        let merged = stored.merged(change);
        let body = serde_json::to_vec(&merged).expect("operator state serialises");
        match self.store.put(&self.key, PutPayload::from(body)).await {
            Ok(_) => *self.applied() = merged,
            Err(error) => {
                tracing::warn!(%error, "cannot store the operator state: other members of the group do not see this change");
            }
        }
    }

    /// The stored state and its ETag, unless it still has ETag `known`
    /// (`Ok(None)`: absent or unchanged).
    async fn read(
        &self,
        known: Option<&str>,
    ) -> object_store::Result<Option<(OperatorState, Option<String>)>> {
        let options = GetOptions {
            if_none_match: known.map(str::to_owned),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.key, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. } | object_store::Error::NotModified { .. }) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await?;
        match serde_json::from_slice(&bytes) {
            Ok(state) => Ok(Some((state, etag))),
            Err(error) => {
                tracing::warn!(%error, "the stored operator state is not readable; ignored");
                Ok(None)
            }
        }
    }

    /// Applies what other members stored, every [`POLL`].
    async fn follow(self: Arc<Self>, studio: mpsc::Sender<ControlRequest>) {
        let mut etag: Option<String> = None;
        loop {
            tokio::time::sleep(POLL).await;
            let stored = match self.read(etag.as_deref()).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(%error, "cannot read the operator state");
                    continue;
                }
            };
            let (state, tag) = stored;
            etag = tag;
            let commands = {
                let mut applied = self.applied();
                let commands = state.commands_from(&applied, now_ms());
                *applied = state;
                commands
            };
            for command in commands {
                tracing::info!(?command, "operator state from another member of the group");
                let (reply, _) = oneshot::channel();
                if studio
                    .send(ControlRequest { command, reply })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(gain_db: f32, muted: bool) -> HostSetting {
        HostSetting { gain_db, muted }
    }

    #[test]
    fn changes_merge_over_the_stored_state() {
        let stored = OperatorState::change(
            &Command::SetMuted {
                host: "bob".into(),
                muted: true,
            },
            Some(setting(0.0, true)),
            1_000,
        )
        .expect("a change");
        let gain = OperatorState::change(
            &Command::SetGain {
                host: "alice".into(),
                db: -6.0,
            },
            Some(setting(-6.0, false)),
            2_000,
        )
        .expect("a change");
        let kick = OperatorState::change(&Command::Kick { host: "bob".into() }, None, 3_000)
            .expect("a change");
        let merged = stored.merged(&gain).merged(&kick);
        assert_eq!(merged.hosts["bob"], setting(0.0, true));
        assert_eq!(merged.hosts["alice"], setting(-6.0, false));
        assert_eq!(merged.kicks["bob"], 3_000);
        assert!(OperatorState::change(&Command::List, None, 0).is_none());
    }

    #[test]
    fn a_member_applies_only_what_differs_and_fresh_kicks() {
        let applied = OperatorState {
            hosts: [("alice".to_owned(), setting(-6.0, false))].into(),
            kicks: [("carol".to_owned(), 5_000)].into(),
        };
        let stored = OperatorState {
            hosts: [
                ("alice".to_owned(), setting(-6.0, true)),
                ("bob".to_owned(), setting(3.0, false)),
            ]
            .into(),
            kicks: [("carol".to_owned(), 5_000), ("bob".to_owned(), 90_000)].into(),
        };
        let commands = stored.commands_from(&applied, 100_000);
        let text: Vec<String> = commands.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(
            text,
            [
                "SetMuted { host: \"alice\", muted: true }",
                "SetGain { host: \"bob\", db: 3.0 }",
                "SetMuted { host: \"bob\", muted: false }",
                "Kick { host: \"bob\" }",
            ]
        );
        // A kick older than the hold is over: not applied again.
        assert!(
            stored
                .commands_from(&applied, 90_000 + 61_000)
                .iter()
                .all(|c| !matches!(c, Command::Kick { .. }))
        );
        // Nothing differs: nothing to do.
        assert!(stored.commands_from(&stored, 100_000).is_empty());
    }
}
