//! Files re-read while the broadcast runs (the TLS certificate, the host
//! keys): when the process gets SIGHUP, or when a file changes on disk.
//!
//! Change is seen by polling each file's length and modification time every
//! [`INTERVAL`] rather than by inotify: it works the same for an editor's
//! rename-over, certbot's symlink swap and a Kubernetes secret's atomic
//! directory swap, on every filesystem, with one `stat` per file per tick.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often [`watch`] looks at the files.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Length and modification time of some files, `None` for one that cannot
/// be read (missing, mid-rename).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp(Vec<Option<(u64, Option<SystemTime>)>>);

impl Stamp {
    /// The files as they are now.
    pub fn of(paths: &[PathBuf]) -> Stamp {
        Stamp(paths.iter().map(|p| one(p)).collect())
    }

    /// Whether every file could be looked at.
    pub fn is_complete(&self) -> bool {
        self.0.iter().all(Option::is_some)
    }
}

fn one(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

/// Why [`watch`] calls its reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The process got SIGHUP.
    Signal,
    /// A file changed.
    Changed,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Why::Signal => "SIGHUP",
            Why::Changed => "the file changed",
        })
    }
}

/// Calls `reload` on SIGHUP, and whenever `changed` says so (asked every
/// [`INTERVAL`]), until the task is dropped. `reload` does the reading and
/// the logging; it runs on this task, so a slow reload delays the next
/// look, never a broadcast.
pub async fn watch(mut changed: impl FnMut() -> bool, mut reload: impl FnMut(Why)) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hangup.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            _ = signalled => Why::Signal,
            _ = tick.tick() => {
                if !changed() {
                    continue;
                }
                Why::Changed
            }
        };
        reload(why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file_and_notes_missing_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys");
        let paths = [path.clone()];
        let missing = Stamp::of(&paths);
        assert!(!missing.is_complete());
        std::fs::write(&path, "a=12345678\n").expect("write");
        let first = Stamp::of(&paths);
        assert!(first.is_complete());
        assert_ne!(first, missing);
        assert_eq!(Stamp::of(&paths), first);
        std::fs::write(&path, "a=12345678\nb=87654321\n").expect("write");
        assert_ne!(Stamp::of(&paths), first, "a longer file is a change");
    }

    #[tokio::test(start_paused = true)]
    async fn reloads_when_told_the_files_changed() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut polls = 0;
        let task = tokio::spawn(watch(
            move || {
                polls += 1;
                polls == 3
            },
            move |why| {
                let _ = tx.send(why);
            },
        ));
        // Paused time: the ticks pass as soon as everything waits.
        assert_eq!(rx.recv().await, Some(Why::Changed));
        task.abort();
    }
}
