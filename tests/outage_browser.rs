//! A listener left behind by a store outage comes back to the live edge.
//!
//! `onair live` broadcasts an ffmpeg RTMP host's tone to the real
//! S3-compatible test server through a TCP proxy, and serves the listener
//! page from its in-process origin. Headless Chromium (driven by
//! `tests/browser/watch.js`) opens the page with hls.js, presses play and
//! reports the player's state every half second. Once the page plays at its
//! normal delay, the proxy freezes the path to the store for 20 s: nothing
//! new is stored, so the playlists stop, the player runs dry and waits. When
//! the path comes back the publisher writes its backlog and the playlists
//! jump to the live edge, while the player goes on from where it stopped,
//! far behind: the test checks from the page's state that it was left
//! behind, then that within a bounded time the same page (never reloaded:
//! one load, and a value set in it at load is still there) plays again,
//! `currentTime` advancing, at its normal delay, and its status line said
//! so. The page's latency watch brings it there. Without it the page stays
//! about 20 s behind for the rest of the broadcast: hls.js does not come
//! back to the live edge by itself, and neither does the page's stall
//! watchdog, which reconnects during the outage but then joins at the stale
//! edge of the frozen playlists.
//!
//! `a_listener_page_plays_on_across_a_kill_and_restart_of_the_broadcast`
//! kills `onair live` with SIGKILL while the page, served by a standalone
//! `onair origin` over the same store, plays; a new process continues the
//! stream on its wall-clock timeline, and the same page plays on at its
//! normal delay.
//!
//! Needs the S3 test server (`eval "$(scripts/s3-server.sh start)"`) and the
//! browser tools (`scripts/browser-deps.sh`); fails without them.

#[path = "common/broadcast.rs"]
mod broadcast;
#[path = "common/browser_tools.rs"]
mod browser_tools;
#[allow(dead_code)]
#[path = "common/processes.rs"]
mod processes;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;
#[allow(dead_code)]
#[path = "common/wav.rs"]
mod wav;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, Publisher, Tone};
use browser_tools::{browser_dir, require_browser_tools};
use tcp_proxy::TcpProxy;

const STREAM: &str = "outage-page";
const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-page-4c1d",
};
const TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 0.0,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};
/// How long the path to the store is frozen: far more than the player's
/// buffer and its normal delay, so it ends up well behind.
const OUTAGE: Duration = Duration::from_secs(20);
/// How long the page may take to play at all once play is pressed.
const START_LIMIT: Duration = Duration::from_secs(25);
/// How long it plays before the outage.
const BEFORE_OUTAGE: Duration = Duration::from_secs(3);
/// How long after the path is back the page may take to be at its normal
/// delay again. Generous: the store writes its backlog, hls.js fetches the
/// playlists again, the page notices and jumps, and two busy cores run it
/// all.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// A latency below this is the normal LL-HLS delay (about 1.3 s with hls.js,
/// a little more after stalls, which make hls.js hold back a little more).
const NORMAL_LATENCY_S: f64 = 4.0;
/// Behind by more than this after the outage: left behind, not jitter.
const LEFT_BEHIND_S: f64 = 10.0;
/// Back means playing at the normal delay for this long without a break.
const STEADY: f64 = 2.0;
/// `watch.js` gives up by itself after this long, whatever the test does.
const WATCH_LIMIT_S: u32 = 120;

/// The S3 test server's address.
fn s3_addr(server: &s3::S3Server) -> SocketAddr {
    server
        .endpoint()
        .trim_start_matches("http://")
        .to_socket_addrs()
        .expect("S3 address")
        .next()
        .expect("an address")
}

/// One of `watch.js`'s readings of the page.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sample {
    /// Seconds since play was pressed.
    t: f64,
    state: String,
    current_time: f64,
    latency: Option<f64>,
    date_latency: Option<f64>,
    live_jumps: Option<u32>,
    /// The `<audio>` element's buffered ranges, as `start-end,…`.
    #[serde(default)]
    buffered: String,
    reconnects: u32,
    status: String,
    paused: bool,
    mark: Option<String>,
    loads: u32,
}

impl Sample {
    fn playing_at_normal_delay(&self) -> bool {
        self.state == "playing"
            && !self.paused
            && self.latency.is_some_and(|l| l < NORMAL_LATENCY_S)
    }
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        write!(
            f,
            "t={:5.1} {:12} currentTime={:6.2} latency={:>5} date={:>5} jumps={} reconnects={} loads={} status={:?} buffered={}",
            self.t,
            self.state,
            self.current_time,
            secs(self.latency),
            secs(self.date_latency),
            self.live_jumps.map_or("-".to_owned(), |j| j.to_string()),
            self.reconnects,
            self.loads,
            self.status,
            self.buffered,
        )
    }
}

/// `watch.js` on the listener page: its readings arrive on a channel as it
/// prints them. Closing its stdin ends it; dropped, it is killed.
struct Watcher {
    child: Child,
    stdin: Option<ChildStdin>,
    samples: mpsc::Receiver<Sample>,
    /// Every line it printed (stdout and stderr), for failure messages.
    output: Arc<Mutex<Vec<String>>>,
    /// Every reading taken from `samples` so far.
    seen: Vec<Sample>,
    _profile: tempfile::TempDir,
}

impl Watcher {
    fn start(page: &str) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = Command::new("node")
            .current_dir(browser_dir())
            .arg("watch.js")
            .args(["--page", page])
            .arg("--user-data-dir")
            .arg(profile.path())
            .args(["--seconds", &WATCH_LIMIT_S.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e} (run scripts/browser-deps.sh)"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, samples) = mpsc::channel();
        let lines = Arc::clone(&output);
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(json) = line.strip_prefix("sample=") {
                    let sample = serde_json::from_str(json)
                        .unwrap_or_else(|e| panic!("watch.js sample {json}: {e}"));
                    let _ = tx.send(sample);
                }
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        let lines = Arc::clone(&output);
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(format!("stderr: {line}"));
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            samples,
            output,
            seen: Vec::new(),
            _profile: profile,
        }
    }

    /// Takes readings until `done` says yes to the readings so far (it gets
    /// them all, newest last) or `limit` passes; whether it did.
    fn wait_for(&mut self, limit: Duration, mut done: impl FnMut(&[Sample]) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.samples.recv_timeout(left) {
                Ok(sample) => {
                    self.seen.push(sample);
                    if done(&self.seen) {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("watch.js ended early\n{}", self.report())
                }
            }
        }
    }

    /// Takes the readings of the next `span`.
    fn watch(&mut self, span: Duration) {
        self.wait_for(span, |_| false);
    }

    /// Ends the browser and returns what it printed after the readings.
    fn finish(&mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().expect("watch.js").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader threads end with the process's pipes.
        std::thread::sleep(Duration::from_millis(100));
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|line| !line.starts_with("sample="))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The readings so far and whatever else watch.js printed.
    fn report(&self) -> String {
        let mut text = String::from("page readings:\n");
        for sample in &self.seen {
            let _ = writeln!(text, "  {sample}");
        }
        for line in self
            .output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|line| !line.starts_with("sample="))
        {
            let _ = writeln!(text, "  {line}");
        }
        text
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last readings cover `STEADY` seconds of playing at the normal delay
/// with `currentTime` advancing at every reading.
fn steady_at_normal_delay(seen: &[Sample]) -> bool {
    let Some(last) = seen.last() else {
        return false;
    };
    let run: Vec<&Sample> = seen
        .iter()
        .rev()
        .take_while(|s| s.playing_at_normal_delay())
        .collect();
    let advancing = run
        .windows(2)
        .all(|w| w[0].current_time > w[1].current_time);
    run.last().is_some_and(|first| last.t - first.t >= STEADY) && advancing
}

#[test]
fn a_listener_left_behind_by_a_store_outage_returns_to_the_live_edge() {
    let hlsjs = require_browser_tools();
    let server = s3::S3Server::from_env();
    let bucket = server.create_bucket("outage-page");
    let proxy = TcpProxy::start(s3_addr(&server));
    let wall = Instant::now();
    let mut live = Broadcast::start_on(
        STREAM,
        &[ALICE],
        Some(&format!("s3://{bucket}/streams")),
        &[("AWS_ENDPOINT", format!("http://{}", proxy.addr()))],
        [OsStr::new("--hlsjs-file"), hlsjs.as_os_str()],
    );
    let alice = Publisher::start(&live.rtmp_url(&ALICE), &TONE);
    // Join a running broadcast, with a few segments stored.
    live.sleep_until(4.0);
    let mut page = Watcher::start(&format!(
        "http://{}/{STREAM}/?player=hlsjs",
        live.http_addr()
    ));

    // Plays, at its normal delay.
    let playing = page.wait_for(START_LIMIT, steady_at_normal_delay);
    assert!(
        playing,
        "the page did not play at its normal delay\n{}\n{}",
        page.report(),
        live.log()
    );
    let loaded = page.seen.last().cloned().expect("a reading");
    let steady_at = page.seen.len();
    assert_eq!(loaded.loads, 1, "{}", page.report());
    let mark = loaded.mark.clone().expect("the page's load mark");
    page.watch(BEFORE_OUTAGE);

    // Normal playback never makes the page jump.
    assert!(
        page.seen.iter().all(|s| s.live_jumps.unwrap_or(0) == 0),
        "the page jumped in normal playback\n{}",
        page.report()
    );
    proxy.freeze();
    page.watch(OUTAGE);
    proxy.restore();
    let restored_at = page.seen.len();

    // Left behind: once the store is back, the page plays (or waits) far
    // from the live edge.
    let recovered = page.wait_for(RECOVERY_LIMIT, |seen| {
        steady_at_normal_delay(&seen[restored_at..])
    });
    // How far behind the page played once the store was back (while the
    // path is frozen, hls.js's latency is not updated: it stands still).
    let behind = page.seen[restored_at..]
        .iter()
        .filter(|s| s.state == "playing")
        .filter_map(|s| s.latency)
        .fold(0.0, f64::max);
    let report = page.report();
    let tail = page.finish();
    eprintln!("{report}");
    assert!(
        behind > LEFT_BEHIND_S,
        "the outage did not leave the page behind (at most {behind:.1} s): \
         nothing to recover from\n{report}"
    );
    assert!(
        recovered,
        "the page was not back at its normal delay (< {NORMAL_LATENCY_S} s, \
         playing, currentTime advancing for {STEADY} s) within {RECOVERY_LIMIT:?} \
         of the store's return\n{report}"
    );
    // The same page all along: loaded once, its load mark still there.
    let last = page.seen.last().expect("a reading");
    assert!(
        page.seen[steady_at..]
            .iter()
            .any(|s| s.status.starts_with("Back to live")),
        "the status line never said that the player went back to live\n{report}"
    );
    assert_eq!(last.loads, 1, "the page was reloaded\n{report}");
    assert_eq!(
        last.mark.as_deref(),
        Some(mark.as_str()),
        "the page was reloaded\n{report}"
    );

    live.stop();
    drop(alice);
    // When the final run at the normal delay began, after the store's return.
    let back = page.seen[restored_at..]
        .iter()
        .rev()
        .take_while(|s| s.playing_at_normal_delay())
        .last()
        .map_or(f64::NAN, |s| s.t - page.seen[restored_at].t);
    eprintln!(
        "a_listener_left_behind_by_a_store_outage_returns_to_the_live_edge: \
         {behind:.1} s behind at most, at the normal delay again {back:.1} s after the store's return, \
         {} jumps, {} reconnects; {:.1} s\n{tail}",
        last.live_jumps.unwrap_or(0),
        last.reconnects,
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn a_listener_page_plays_on_across_a_kill_and_restart_of_the_broadcast() {
    const STREAM: &str = "restart-page";
    const DOWN: Duration = Duration::from_secs(4);
    let hlsjs = require_browser_tools();
    let dir = tempfile::tempdir().expect("temp dir");
    let tone = dir.path().join("tone.wav");
    wav::write_wav(
        &tone,
        48_000,
        2,
        wav::WavFormat::Float32,
        &wav::sine(440.0, 48_000, 5 * 48_000, 0.25, 2),
    );
    let store = dir.path().join("store");
    let logs: Vec<std::path::PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("live{i}.log")))
        .collect();
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();
    let wall = Instant::now();
    let mut first = processes::onair_live(&tone, &store, STREAM, &logs[0]);
    let (_origin, origin) =
        processes::onair_origin(&store, &[OsStr::new("--hlsjs-file"), hlsjs.as_os_str()]);
    // Join a running broadcast, with a few segments stored.
    std::thread::sleep(Duration::from_secs(4));
    let mut page = Watcher::start(&format!("http://{origin}/{STREAM}/?player=hlsjs"));
    let playing = page.wait_for(START_LIMIT, steady_at_normal_delay);
    assert!(
        playing,
        "the page did not play at its normal delay\n{}\n{}",
        page.report(),
        log(0)
    );
    let mark = page
        .seen
        .last()
        .and_then(|s| s.mark.clone())
        .expect("load mark");
    page.watch(BEFORE_OUTAGE);
    first.kill_9();
    page.watch(DOWN);
    let restarted_at = page.seen.len();
    let mut second = processes::onair_live(&tone, &store, STREAM, &logs[1]);
    let recovered = page.wait_for(RECOVERY_LIMIT, |seen| {
        steady_at_normal_delay(&seen[restarted_at..])
    });
    let report = page.report();
    let tail = page.finish();
    assert!(
        recovered,
        "the page did not play on at its normal delay within {RECOVERY_LIMIT:?} of the \
         restart\n{report}\n{tail}\nsecond run:\n{}",
        log(1)
    );
    let last = page.seen.last().expect("a reading");
    assert_eq!(last.loads, 1, "the page was reloaded\n{report}");
    assert_eq!(
        last.mark.as_deref(),
        Some(mark.as_str()),
        "the page was reloaded\n{report}"
    );
    assert!(second.interrupt(Duration::from_secs(10)), "{}", log(1));
    let back = page.seen[restarted_at..]
        .iter()
        .rev()
        .take_while(|s| s.playing_at_normal_delay())
        .last()
        .map_or(f64::NAN, |s| s.t - page.seen[restarted_at].t);
    eprintln!(
        "{report}\na_listener_page_plays_on_across_a_kill_and_restart_of_the_broadcast: \
         at the normal delay again {back:.1} s after the restart, {} jumps, {} reconnects; \
         {:.1} s\n{tail}",
        last.live_jumps.unwrap_or(0),
        last.reconnects,
        wall.elapsed().as_secs_f64()
    );
}
