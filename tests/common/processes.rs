//! `onair live` with file hosts and a standalone `onair origin`, as child
//! processes of a test over a folder store: what a restart test kills and
//! starts again while listeners stay attached.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Longest wait for a process to come up.
const STARTUP: Duration = Duration::from_secs(20);

/// A child process, killed when dropped: a failing test leaves nothing
/// running.
pub struct Proc(pub Child);

impl Proc {
    /// `kill -9`: no flush, no `EXT-X-ENDLIST`.
    pub fn kill_9(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }

    /// SIGINT, then waits up to `limit` for the exit; whether it exited
    /// successfully.
    pub fn interrupt(&mut self, limit: Duration) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `onair live` broadcasting `input` (looping) as `stream` into the folder
/// store `store`, with a 12 s window, its log in `log`.
pub fn onair_live(input: &Path, store: &Path, stream: &str, log: &Path) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_onair"))
            .arg("live")
            .arg("--input")
            .arg(input)
            .arg("--loop")
            .arg("--store")
            .arg(store)
            .args(["--stream", stream, "--window", "12"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn onair live"),
    )
}

/// `onair origin` over the folder store `store`, with `extra` arguments;
/// returns it and its address.
pub fn onair_origin(store: &Path, extra: &[&std::ffi::OsStr]) -> (Proc, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["origin", "--http", "127.0.0.1:0", "--store"])
        .arg(store)
        .args(extra)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn onair origin");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(STARTUP)
        .expect("onair origin logged its address")
        .parse()
        .expect("socket address");
    (Proc(child), addr)
}
