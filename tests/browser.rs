//! The listener page in a real browser. Headless Chromium (Debian's
//! `chromium`, driven by npm `playwright-core` from `tests/browser/listen.js`)
//! opens `/{stream}/` of an `onair live --http` broadcast of a 440 Hz tone,
//! presses play and listens, once with the browser's native HLS player
//! (`?player=native`) and once with hls.js (`?player=hlsjs`, served by the
//! origin from the npm copy). Each run must advance `currentTime` by at least
//! 5 s, let a WebAudio analyser on the page's `<audio>` element hear the tone
//! (RMS level and strongest frequency), show no player error and throw no
//! script error, and give a plausible latency readout, which the test prints.
//! The native run first checks that `/` links to the stream's page. A third
//! run plays a live mix: two ffmpeg RTMP hosts publishing to `onair live
//! --rtmp`, heard through the page with hls.js.
//!
//! `scripts/browser-deps.sh` installs Chromium and the npm packages (into
//! `tests/browser/node_modules`); without them these tests fail, they never
//! skip. Screenshots of the page go to `$CARGO_TARGET_TMPDIR`.

#[path = "common/browser_tools.rs"]
mod browser_tools;
#[path = "common/broadcast.rs"]
mod live;
#[path = "common/wav.rs"]
mod wav;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use browser_tools::{browser_dir, require_browser_tools};
use wav::{WavFormat, sine, write_wav};

const STREAM: &str = "tone";
const RATE: u32 = 48_000;
/// The broadcast: a looped 440 Hz sine (2 s is exactly 880 cycles, so the
/// loop has no click) at amplitude 0.3, i.e. an RMS of 0.21.
const TONE_HZ: f64 = 440.0;
const TONE_AMPLITUDE: f64 = 0.3;
const TONE_SECONDS: usize = 2;
/// Listening starts once this segment is stored: four segments, 7.68 s.
const JOIN_AFTER_SEGMENT: u32 = 3;
/// Quieter than this (RMS, median over the analyser's 100 ms reads) is
/// silence: Opus and AAC at their default bitrates keep a tone within a dB.
const MIN_RMS: f64 = 0.05;
/// The analyser's bins are 48000 / 4096 = 11.7 Hz wide.
const MAX_PITCH_ERROR_HZ: f64 = 25.0;
/// How far playback must get (issue: "currentTime advances by at least 5 s").
const MIN_ADVANCE_S: f64 = 5.0;
/// A readout beyond this is not a live latency (HOLD-BACK is 6 s, native
/// players join about three segments back).
const MAX_LATENCY_S: f64 = 15.0;
/// Drives Chromium (with the flags) and measures, in `tests/browser/`.
const NODE_SCRIPT: &str = "listen.js";

/// One browser run at a time: two shared cores decode, encode and render.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn listener_page_plays_with_native_hls() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let broadcast = Broadcast::start();
    let run = listen(&broadcast.base, "native", true, &broadcast);
    assert_eq!(
        run.number("index_links"),
        1.0,
        "the index page must link to the stream once\n{run}"
    );
    assert_eq!(
        run.text("index_target"),
        broadcast.page_url(),
        "index link target\n{run}"
    );
    assert_played(&run, "native");
}

#[test]
fn listener_page_plays_with_hlsjs() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let broadcast = Broadcast::start();
    let run = listen(&broadcast.base, "hlsjs", false, &broadcast);
    assert_played(&run, "hlsjs");
}

/// The live mix of two RTMP hosts: alice's 440 Hz is the louder tone, so
/// the analyser's strongest frequency is hers; bob (44.1 kHz mono, 1 kHz)
/// is mixed under it.
#[test]
fn listener_page_plays_a_live_mix_of_rtmp_hosts() {
    const ALICE: live::HostKey = live::HostKey {
        name: "alice",
        secret: "alice-browser-key",
    };
    const BOB: live::HostKey = live::HostKey {
        name: "bob",
        secret: "bob-browser-key",
    };
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let hlsjs = require_browser_tools();
    let broadcast = live::Broadcast::start_with(
        STREAM,
        &[ALICE, BOB],
        [std::ffi::OsStr::new("--hlsjs-file"), hlsjs.as_os_str()],
    );
    let tone = |freq_hz, volume_db, sample_rate, channels| live::Tone {
        freq_hz,
        volume_db,
        sample_rate,
        channels,
        codec: live::Codec::Aac,
    };
    // +6 dB on ffmpeg's 1/8 sine: RMS 0.18, well above MIN_RMS.
    let _alice =
        live::Publisher::start(&broadcast.rtmp_url(&ALICE), &tone(TONE_HZ, 6.0, 48_000, 2));
    let _bob = live::Publisher::start(&broadcast.rtmp_url(&BOB), &tone(1000.0, -6.0, 44_100, 1));
    // Join once the hosts are on air and a segment with them is stored.
    let segment = broadcast
        .store_dir()
        .join(STREAM)
        .join(format!("aac/{JOIN_AFTER_SEGMENT}.m4s"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !segment.exists() {
        assert!(
            Instant::now() < deadline,
            "no {} after 30 s\n{}",
            segment.display(),
            broadcast.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base = format!("http://{}/", broadcast.http_addr());
    let run = listen(&base, "hlsjs", false, &broadcast.log());
    assert_played(&run, "hlsjs");
}

/// The checks every player must pass.
fn assert_played(run: &Run, player: &str) {
    println!(
        "{player}: latency {} s (page readout {:?}; wall clock minus program date {} s), \
         playback started {} s after play, currentTime +{} s, RMS {} (min {}), peak {} Hz, \
         {} recovered warnings, {} reconnects",
        run.text("latency_s"),
        run.text("latency_text"),
        run.text("date_latency_s"),
        run.text("start_s"),
        run.text("advance_s"),
        run.text("rms_median"),
        run.text("rms_min"),
        run.text("peak_hz"),
        run.text("warnings"),
        run.text("reconnects"),
    );
    assert_eq!(run.text("kind"), player, "player kind\n{run}");
    assert_eq!(
        run.number("player_error_count"),
        0.0,
        "the page showed player errors\n{run}"
    );
    assert_eq!(
        run.number("page_error_count"),
        0.0,
        "the page threw script errors\n{run}"
    );
    assert!(
        run.number("advance_s") >= MIN_ADVANCE_S,
        "currentTime must advance by {MIN_ADVANCE_S} s\n{run}"
    );
    assert!(
        run.number("rms_median") >= MIN_RMS,
        "the analyser heard silence\n{run}"
    );
    assert!(
        (run.number("peak_hz") - TONE_HZ).abs() <= MAX_PITCH_ERROR_HZ,
        "the analyser did not hear the {TONE_HZ} Hz tone\n{run}"
    );
    let latency = run.number("latency_s");
    assert!(
        latency > 0.0 && latency < MAX_LATENCY_S,
        "latency readout out of range\n{run}"
    );
    assert_eq!(run.text("state"), "playing", "player state\n{run}");
}

/// `onair live --http 127.0.0.1:0` broadcasting the tone, killed on drop.
struct Broadcast {
    child: Child,
    /// `http://127.0.0.1:PORT/`.
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Broadcast {
    fn start() -> Broadcast {
        let hlsjs = require_browser_tools();
        let dir = tempfile::tempdir().expect("temp dir");
        let tone = dir.path().join("tone.wav");
        let frames = TONE_SECONDS * RATE as usize;
        write_wav(
            &tone,
            RATE,
            2,
            WavFormat::Int16,
            &sine(TONE_HZ, RATE, frames, TONE_AMPLITUDE, 2),
        );
        let store = dir.path().join("store");
        let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
            .arg("live")
            .arg("--store")
            .arg(&store)
            .args(["--stream", STREAM, "--http", "127.0.0.1:0", "--loop"])
            .arg("--hlsjs-file")
            .arg(&hlsjs)
            .arg("--input")
            .arg(&tone)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn onair live");
        let (log, base) = follow_log(child.stderr.take().expect("stderr"));
        let mut broadcast = Broadcast {
            child,
            base: String::new(),
            log,
            _dir: dir,
        };
        broadcast.base = base
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("onair live never said where it listens\n{broadcast}"));
        // Listeners join a running broadcast: Chromium's native player then
        // starts about HOLD-BACK (three segments) behind the live edge.
        let segment = store
            .join(STREAM)
            .join(format!("aac/{JOIN_AFTER_SEGMENT}.m4s"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !segment.exists() {
            assert!(
                Instant::now() < deadline,
                "no {} after 30 s\n{broadcast}",
                segment.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broadcast
    }

    /// The listener page, `/{stream}/`.
    fn page_url(&self) -> String {
        format!("{}{STREAM}/", self.base)
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Display for Broadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(f, "onair live log (last lines):")?;
        for line in log.iter().rev().take(20).rev() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Reads the broadcast's log on a thread (so the pipe never fills): keeps the
/// lines, and sends the origin's base URL from its `listen: http://...` line.
fn follow_log(
    stderr: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(base) = origin_base(&line) {
                let _ = tx.send(base);
            }
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    });
    (log, rx)
}

/// `http://127.0.0.1:PORT/` from the line announcing the listener page,
/// `listen: http://127.0.0.1:PORT/{stream}/ (...)`.
fn origin_base(line: &str) -> Option<String> {
    let url = line.split("listen: ").nth(1)?.split_whitespace().next()?;
    let base = url.strip_suffix(&format!("{STREAM}/"))?;
    base.starts_with("http://127.0.0.1:")
        .then(|| base.to_owned())
}

/// What `listen.js` measured: its `key=value` lines.
struct Run {
    values: BTreeMap<String, String>,
}

impl Run {
    fn text(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("listen.js reported no {key}\n{self}"))
    }

    fn number(&self, key: &str) -> f64 {
        let text = self.text(key);
        text.parse()
            .unwrap_or_else(|_| panic!("{key}={text} is not a number\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "listen.js measured:")?;
        for (key, value) in &self.values {
            writeln!(f, "  {key}={value}")?;
        }
        Ok(())
    }
}

/// Opens the listener page of the origin at `base` with `player` in a fresh
/// Chromium profile and listens; with `check_index`, first opens `/` and
/// reports its link to the stream. `broadcast` shows the broadcast's log
/// when it fails.
fn listen(base: &str, player: &str, check_index: bool, broadcast: &dyn std::fmt::Display) -> Run {
    let profile = tempfile::tempdir().expect("profile dir");
    let screenshot =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("listener-page-{player}.png"));
    let mut command = Command::new("node");
    command
        .current_dir(browser_dir())
        .arg(NODE_SCRIPT)
        .arg("--page")
        .arg(format!("{base}{STREAM}/?player={player}"))
        .arg("--user-data-dir")
        .arg(profile.path())
        .arg("--seconds")
        .arg((MIN_ADVANCE_S + 0.5).to_string())
        .arg("--screenshot")
        .arg(&screenshot);
    if check_index {
        command.args(["--index", base]).args(["--stream", STREAM]);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (install nodejs)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "listen.js failed ({}):\n{stdout}\n{}\n{broadcast}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let values = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    Run { values }
}
