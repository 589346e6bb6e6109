//! The keys file, re-read while the broadcast runs, so hosts can be added
//! and removed without a restart.
//!
//! On SIGHUP or a change of the file ([`crate::reload`]), the file is read
//! again and, with the `--key` options (which always stay), replaces the
//! broadcast's keys at once ([`Keys::replace`]): from then on an RTMP
//! publish or WHIP offer is checked against the new keys. Then the studio
//! follows: an added host becomes a live host (silent until it connects),
//! a removed host's session ends and the host leaves the mix, and a host
//! whose secret changed has its session ended (it reconnects with the new
//! secret). A file that cannot be read or has a bad line changes nothing
//! and is logged; the keys in use stay.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::audio::live::LiveFeedConfig;
use crate::ingest::keys::{Key, KeyChanges, KeyError, Keys};
use crate::reload::{self, Stamp};
use crate::studio::{Command, ControlRequest};

/// A keys file and the keys given beside it on the command line.
#[derive(Debug, Clone)]
pub struct KeysFile {
    /// The file: one `NAME=SECRET` per line.
    pub path: PathBuf,
    /// The `--key` options, kept through every reload.
    pub fixed: Vec<Key>,
}

impl KeysFile {
    /// The fixed keys and the file's, as they are now.
    pub fn read(&self) -> Result<Vec<Key>, KeyError> {
        let mut all = self.fixed.clone();
        all.extend(Keys::read_file(&self.path)?);
        Ok(all)
    }
}

/// The studio commands that carry out `changes`.
pub(super) fn commands(changes: &KeyChanges, live: LiveFeedConfig) -> Vec<Command> {
    let revoke = |host: &String, remove| Command::Revoke {
        host: host.clone(),
        remove,
    };
    changes
        .removed
        .iter()
        .map(|host| revoke(host, true))
        .chain(changes.rekeyed.iter().map(|host| revoke(host, false)))
        .chain(changes.added.iter().map(|host| Command::AddLive {
            host: host.clone(),
            live,
        }))
        .collect()
}

/// Re-reads `file` on SIGHUP or change into `keys`, and tells the studio
/// through `control`, until the broadcast ends.
pub(super) async fn watch(
    file: KeysFile,
    keys: Arc<Keys>,
    control: mpsc::Sender<ControlRequest>,
    live: LiveFeedConfig,
) {
    let (wake, mut woken) = mpsc::unbounded_channel();
    let paths = vec![file.path.clone()];
    let mut seen = Stamp::of(&paths);
    let watcher = reload::watch(
        move || {
            let now = Stamp::of(&paths);
            // A file missing for a moment (replaced by rename) is not a
            // change; its return is.
            let changed = now.is_complete() && now != seen;
            if changed {
                seen = now;
            }
            changed
        },
        move |why| {
            // The receiver lives as long as this task.
            let _ = wake.send(why);
        },
    );
    let apply = async {
        while let Some(why) = woken.recv().await {
            let changes = match file.read().and_then(|all| keys.replace(all)) {
                Ok(changes) => changes,
                Err(error) => {
                    tracing::error!(file = %file.path.display(), %error, "keys file not reloaded ({why}); the keys in use stay");
                    continue;
                }
            };
            tracing::info!(
                file = %file.path.display(),
                added = ?changes.added,
                removed = ?changes.removed,
                rekeyed = ?changes.rekeyed,
                "keys file reloaded ({why})"
            );
            for command in commands(&changes, live) {
                let (reply, answer) = oneshot::channel();
                if control
                    .send(ControlRequest { command, reply })
                    .await
                    .is_err()
                {
                    return;
                }
                match answer.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "keys file change not applied"),
                    // The broadcast is ending.
                    Err(_) => return,
                }
            }
        }
    };
    tokio::select! {
        () = watcher => {}
        () = apply => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_hosts_leave_rekeyed_hosts_reconnect_added_hosts_join() {
        let changes = KeyChanges {
            added: vec!["dave".into()],
            removed: vec!["carol".into()],
            rekeyed: vec!["bob".into()],
        };
        let live = LiveFeedConfig::default();
        assert_eq!(
            commands(&changes, live),
            vec![
                Command::Revoke {
                    host: "carol".into(),
                    remove: true
                },
                Command::Revoke {
                    host: "bob".into(),
                    remove: false
                },
                Command::AddLive {
                    host: "dave".into(),
                    live
                },
            ]
        );
    }
}
