//! Where the browser tests' tools live, and a loud failure when they are
//! missing: Debian's Chromium, node, and the npm packages
//! (`playwright-core`, `hls.js`) that `scripts/browser-deps.sh` installs into
//! `tests/browser/node_modules`. Browser tests never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/browser`: the node drivers and their `node_modules`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Fails unless Chromium, node and the npm packages are installed; returns
/// the npm copy of hls.js for the origin to serve.
pub fn require_browser_tools() -> PathBuf {
    const HOW: &str = "run scripts/browser-deps.sh";
    for tool in ["chromium", "node"] {
        let ran = Command::new(tool).arg("--version").output();
        assert!(
            ran.is_ok_and(|o| o.status.success()),
            "{tool} is missing: {HOW}"
        );
    }
    let modules = browser_dir().join("node_modules");
    assert!(
        modules.join("playwright-core/package.json").is_file(),
        "npm playwright-core is missing from {}: {HOW}",
        modules.display()
    );
    let hlsjs = modules.join("hls.js/dist/hls.min.js");
    assert!(
        hlsjs.is_file(),
        "npm hls.js is missing ({}): {HOW}",
        hlsjs.display()
    );
    hlsjs
}
