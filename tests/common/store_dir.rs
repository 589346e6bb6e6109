//! Reading a `file://` store (a directory) while a broadcast writes into it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use onair::hls::MediaPlaylist;

/// How often [`wait_until`] probes: short against a 320 ms part, so measured
/// arrival times are accurate to a few milliseconds.
const POLL: Duration = Duration::from_millis(5);

/// Calls `probe` until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// The media playlist stored at `path`, or `None` while it does not exist.
/// Panics if it exists but does not parse: stores replace objects
/// atomically, so a reader never sees a half-written playlist.
pub fn read_playlist(path: &Path) -> Option<MediaPlaylist> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    match MediaPlaylist::parse(&text) {
        Ok(p) => Some(p),
        Err(e) => panic!("{} does not parse: {e}\n{text}", path.display()),
    }
}

/// Every object under `root` by key (the `/`-separated path relative to
/// `root`), with its bytes. Skips the local store's staging files (`key#n`),
/// which are not objects yet.
pub fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let key = path
                .strip_prefix(root)
                .expect("under root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if key.contains('#') {
                continue;
            }
            match std::fs::read(&path) {
                Ok(bytes) => {
                    out.insert(key, bytes);
                }
                // Deleted between listing and reading: a pruned segment.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot read {}: {e}", path.display()),
            }
        }
    }
    out
}
