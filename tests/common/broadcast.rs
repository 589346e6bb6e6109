//! `onair live` as a real process with RTMP hosts: start it on free ports,
//! publish tones to it with ffmpeg, stop it with SIGINT, and measure what it
//! stored.
//!
//! - [`Broadcast`] runs `onair live --rtmp 127.0.0.1:0 --http 127.0.0.1:0
//!   --store DIR --stream NAME --key NAME=SECRET...` in its own temporary
//!   directory. It reads the RTMP and HTTP addresses from the log, keeps
//!   draining the log into memory (a full pipe would block the process) and
//!   interrupts, then kills, the process when dropped.
//! - [`Publisher`] is `ffmpeg -re` pushing a sine ([`Tone`]) over RTMP as a
//!   host does; dropped or [`Publisher::kill`]ed, it is gone like a host
//!   whose connection broke.
//! - [`ProgramAudio`] is a rendition decoded to 48 kHz stereo by timestamp,
//!   so second `t` of the decoded audio is program time `t`, with tone levels
//!   per window; [`PlaylistReport`] is a media playlist's numbering and its
//!   discontinuity and gap tags.
//!
//! Levels are RMS dBFS of the tone in one channel: a full-scale sine reads
//! -3.01 dBFS. ffmpeg's `sine` source has a peak amplitude of 1/8
//! (ffmpeg-filters, "sine"), so its RMS level is [`sine_source_rms_dbfs`],
//! and a `volume` of `v` dB shifts it by `v`: [`Tone::expected_rms_dbfs`].
//!
//! Program time 0 is when `onair live` started its program clock, just
//! before it logged its addresses; [`Broadcast::program_time`] maps an
//! [`Instant`] of the test onto it, to within the few milliseconds between
//! the two.

// Each test crate includes this file and uses only some of it.
#![allow(dead_code)]

#[path = "analysis.rs"]
mod analysis;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use onair::hls::MediaPlaylist;

/// The program's sample rate: what renditions are decoded to.
pub const RATE: u32 = 48_000;

/// Longest wait for `onair live` to log its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for `onair live` to flush and exit after SIGINT. Generous:
/// the machine may be busy with parallel tests.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a dropped [`Broadcast`] may take to exit after SIGINT before it
/// is killed.
const DROP_GRACE: Duration = Duration::from_secs(2);
/// How often process exits are polled.
const POLL: Duration = Duration::from_millis(20);

/// A host's name and secret: `--key NAME=SECRET`, and the RTMP stream key
/// its publisher uses.
#[derive(Debug, Clone, Copy)]
pub struct HostKey {
    /// The host's name in the studio and the logs.
    pub name: &'static str,
    /// The stream key (onair wants at least 8 characters).
    pub secret: &'static str,
}

/// Panics with a clear message unless ffmpeg runs: every test here needs
/// it to publish and to decode.
pub fn require_ffmpeg() {
    let ran = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => {}
        other => panic!("ffmpeg must be installed and on PATH for broadcast tests: {other:?}"),
    }
}

/// Appends everything `from` writes to `log`, line by line, on a thread,
/// and passes each line to `on_line` as well.
fn drain_lines(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    mut on_line: impl FnMut(&str) + Send + 'static,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            on_line(&line);
            let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// Sends SIGINT to `child`, as Ctrl-C does.
fn interrupt(child: &Child) {
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill(1) must be installed to interrupt onair");
    assert!(sent.success(), "kill -INT {pid} failed");
}

/// Polls `child` until it exits or `limit` passes.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Where a line of onair's log says it listens: `(rtmp, http)`.
#[derive(Debug, Default)]
struct Addresses {
    rtmp: Option<SocketAddr>,
    http: Option<SocketAddr>,
    rtmps: Option<SocketAddr>,
}

impl Addresses {
    /// Reads `RTMP ingest: rtmp://ADDR/live/{stream key}[, rtmps://ADDR/…]`
    /// and `origin listening on http[s]://ADDR/`.
    fn read(&mut self, line: &str) {
        let address = |marker: &str| -> Option<SocketAddr> {
            let rest = line.split(marker).nth(1)?;
            rest.split('/').next()?.parse().ok()
        };
        if let Some(addr) = address("RTMP ingest: rtmp://") {
            self.rtmp = Some(addr);
        }
        if let Some(addr) = address("RTMP ingest: rtmp://").and(address(", rtmps://")) {
            self.rtmps = Some(addr);
        }
        if let Some(addr) =
            address("origin listening on http://").or(address("origin listening on https://"))
        {
            self.http = Some(addr);
        }
    }

    fn both(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.rtmp?, self.http?))
    }
}

/// A running `onair live` with RTMP hosts and an in-process origin (see
/// the module docs). Interrupted, then killed, when dropped.
pub struct Broadcast {
    child: Child,
    dir: tempfile::TempDir,
    stream: String,
    rtmp: SocketAddr,
    http: SocketAddr,
    /// The RTMPS listener, when started with `--rtmps`.
    rtmps: Option<SocketAddr>,
    /// When the addresses were logged: program time 0, give or take the
    /// milliseconds between starting the clock and logging.
    epoch: Instant,
    log: Arc<Mutex<String>>,
    stopped: Option<ExitStatus>,
}

impl Broadcast {
    /// Starts `onair live` for `stream` with the hosts of `keys`.
    pub fn start(stream: &str, keys: &[HostKey]) -> Self {
        Self::start_with(stream, keys, std::iter::empty::<&OsStr>())
    }

    /// [`Broadcast::start`] with further arguments (e.g. `--hold FILE`).
    pub fn start_with<I, S>(stream: &str, keys: &[HostKey], extra_args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_on(stream, keys, None, &[], extra_args)
    }

    /// [`Broadcast::start_with`] on the store `store` (a URL; `None`: a
    /// folder of the broadcast's temporary directory), with `env` set for
    /// the process (e.g. the S3 endpoint).
    pub fn start_on<I, S>(
        stream: &str,
        keys: &[HostKey],
        store: Option<&str>,
        env: &[(&str, String)],
        extra_args: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        require_ffmpeg();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(env!("CARGO_BIN_EXE_onair"));
        command
            .args(["live", "--rtmp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--store");
        match store {
            Some(url) => command.arg(url),
            None => command.arg(dir.path().join("store")),
        };
        command.args(["--stream", stream]);
        command.envs(env.iter().map(|(k, v)| (k, v)));
        for key in keys {
            command
                .arg("--key")
                .arg(format!("{}={}", key.name, key.secret));
        }
        let mut child = command
            .args(extra_args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn onair live");
        let log = Arc::new(Mutex::new(String::new()));
        let (found, addresses) = mpsc::channel();
        let mut seen = Addresses::default();
        drain_lines(
            child.stderr.take().expect("stderr"),
            log.clone(),
            move |line| {
                let before = seen.both();
                seen.read(line);
                if let (None, Some(both)) = (before, seen.both()) {
                    let _ = found.send((both, seen.rtmps, Instant::now()));
                }
            },
        );
        let started = addresses.recv_timeout(START_TIMEOUT);
        let ((rtmp, http), rtmps, epoch) = match started {
            Ok(started) => started,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().unwrap_or_else(PoisonError::into_inner);
                panic!(
                    "onair live did not log its RTMP and HTTP addresses within {START_TIMEOUT:?}; log:\n{log}"
                );
            }
        };
        Self {
            child,
            dir,
            stream: stream.to_owned(),
            rtmp,
            http,
            rtmps,
            epoch,
            log,
            stopped: None,
        }
    }

    /// The RTMPS listener's address (started with `--rtmps`).
    pub fn rtmps_addr(&self) -> SocketAddr {
        self.rtmps.expect("the broadcast was started with --rtmps")
    }

    /// The process id of `onair live` (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The RTMP listener's address.
    pub fn rtmp_addr(&self) -> SocketAddr {
        self.rtmp
    }

    /// The in-process origin's address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// Where `key`'s host publishes: `rtmp://ADDR/live/SECRET`.
    pub fn rtmp_url(&self, key: &HostKey) -> String {
        format!("rtmp://{}/live/{}", self.rtmp, key.secret)
    }

    /// The store directory (`--store`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The directory of a rendition (`aac`, `opus`) in the store.
    pub fn rendition_dir(&self, rendition: &str) -> PathBuf {
        self.store_dir().join(&self.stream).join(rendition)
    }

    /// Program time of `at`, in seconds.
    pub fn program_time(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Program time now, in seconds.
    pub fn now(&self) -> f64 {
        self.program_time(Instant::now())
    }

    /// Sleeps until program time `t` seconds (returns at once if it passed).
    pub fn sleep_until(&self, t: f64) {
        let until = self.epoch + Duration::from_secs_f64(t);
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Sends SIGINT and waits for the process to flush, write
    /// `EXT-X-ENDLIST` and exit successfully; returns the program time of
    /// the interrupt, in seconds.
    pub fn stop(&mut self) -> f64 {
        let at = self.now();
        interrupt(&self.child);
        let status = wait_exit(&mut self.child, STOP_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "onair live still runs {STOP_TIMEOUT:?} after SIGINT; log:\n{}",
                self.log()
            )
        });
        self.stopped = Some(status);
        assert!(
            status.success(),
            "onair live exited with {status}; log:\n{}",
            self.log()
        );
        at
    }

    /// Decodes `rendition`'s media playlist (`live.m3u8`) from the store.
    pub fn decode(&self, rendition: &str) -> ProgramAudio {
        ProgramAudio::decode(&self.rendition_dir(rendition).join("live.m3u8"))
    }

    /// `rendition`'s media playlist as stored.
    pub fn playlist(&self, rendition: &str) -> PlaylistReport {
        PlaylistReport::read(&self.rendition_dir(rendition).join("live.m3u8"))
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        // Let it end its stream if it can (leaves a consistent store to
        // look at), but never leave it running.
        interrupt(&self.child);
        if wait_exit(&mut self.child, DROP_GRACE).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How a [`Publisher`] encodes its tone for FLV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// AAC-LC by ffmpeg's native encoder.
    Aac,
    /// MP3 by libmp3lame (FLV carries it at 44.1, 22.05 or 11.025 kHz).
    Mp3,
}

impl Codec {
    /// ffmpeg's encoder options. LAME gets 320 kbit/s: at its default
    /// 128 kbit/s a -30 dBFS tone decodes 0.45 dB low (any decoder), which
    /// would spend half of a ±1 dB budget before onair sees the audio.
    fn encoder_args(self) -> &'static [&'static str] {
        match self {
            Codec::Aac => &["-c:a", "aac"],
            Codec::Mp3 => &["-c:a", "libmp3lame", "-b:a", "320k"],
        }
    }
}

/// The RMS level of ffmpeg's `sine` source before any volume change: a
/// peak amplitude of 1/8 (ffmpeg-filters, "sine"), so
/// `20·log10(1/8 / √2)` ≈ -21.07 dBFS.
pub fn sine_source_rms_dbfs() -> f64 {
    20.0 * (0.125 / std::f64::consts::SQRT_2).log10()
}

/// What a [`Publisher`] sends: a sine from ffmpeg's `sine` source at
/// `freq_hz`, changed by `volume_db`, in the given format.
#[derive(Debug, Clone, Copy)]
pub struct Tone {
    /// Frequency, Hz.
    pub freq_hz: f64,
    /// The `volume` filter's gain on the source, dB.
    pub volume_db: f64,
    /// Sample rate the source generates (no resampling in ffmpeg).
    pub sample_rate: u32,
    /// 1 (mono) or 2 (the same sine in both channels).
    pub channels: u32,
    /// The codec sent over RTMP.
    pub codec: Codec,
}

impl Tone {
    /// The tone's RMS level in each channel, from the generator's
    /// parameters alone (see [`sine_source_rms_dbfs`]). The studio copies a
    /// mono host to both program channels at unity, so this is also its
    /// level in each channel of the program.
    pub fn expected_rms_dbfs(&self) -> f64 {
        sine_source_rms_dbfs() + self.volume_db
    }

    /// The filter graph: the volume change, then for stereo an explicit
    /// unity upmix (`pan`), rather than the default matrix of ffmpeg's
    /// resampler, whose mono-to-stereo gain is an implementation choice.
    fn filters(&self) -> String {
        let mut graph = format!("volume={}dB", self.volume_db);
        if self.channels == 2 {
            graph.push_str(",pan=stereo|c0=c0|c1=c0");
        }
        graph
    }
}

/// `ffmpeg -re` publishing a [`Tone`] to an RTMP URL until killed or
/// dropped.
pub struct Publisher {
    child: Child,
    started: Instant,
    log: Arc<Mutex<String>>,
}

impl Publisher {
    /// Starts publishing `tone` to `url` in real time.
    pub fn start(url: &str, tone: &Tone) -> Self {
        Self::start_to(&["-f", "flv", url], tone)
    }

    /// Starts publishing `tone` to every URL of `urls` at once, as a host
    /// of a standby group does: ffmpeg's `tee` muxer, each output with
    /// `onfail=ignore` so that one ingest going away leaves the others fed
    /// (the muxer never reconnects the failed one).
    pub fn start_tee(urls: &[String], tone: &Tone) -> Self {
        let outputs = urls
            .iter()
            .map(|url| format!("[f=flv:onfail=ignore]{url}"))
            .collect::<Vec<_>>()
            .join("|");
        Self::start_to(&["-map", "0:a", "-f", "tee", &outputs], tone)
    }

    fn start_to(output: &[&str], tone: &Tone) -> Self {
        assert!(
            matches!(tone.channels, 1 | 2),
            "a publisher sends 1 or 2 channels"
        );
        let source = format!(
            "sine=frequency={}:sample_rate={}",
            tone.freq_hz, tone.sample_rate
        );
        let started = Instant::now();
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", &source])
            .args(["-af", &tone.filters()])
            .args(["-ac", &tone.channels.to_string()])
            .args(tone.codec.encoder_args())
            .args(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed to publish over RTMP");
        let log = Arc::new(Mutex::new(String::new()));
        drain_lines(child.stderr.take().expect("stderr"), log.clone(), |_| {});
        Self {
            child,
            started,
            log,
        }
    }

    /// When the publisher was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Kills ffmpeg at once (SIGKILL), as when a host's connection or
    /// machine dies; returns when it is gone.
    pub fn kill(&mut self) -> Instant {
        let at = Instant::now();
        let _ = self.child.kill();
        let _ = self.child.wait();
        at
    }

    /// Waits up to `limit` for ffmpeg to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, limit)
    }

    /// What ffmpeg printed (errors only).
    pub fn log(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tone level in one window of [`ProgramAudio`].
#[derive(Debug, Clone, Copy)]
pub struct WindowLevel {
    /// Start of the window, program seconds.
    pub start_s: f64,
    /// RMS dBFS of the tone in the left and right channels.
    pub dbfs: [f64; 2],
}

/// The spread of a tone's level over many windows.
#[derive(Debug, Clone, Copy)]
pub struct LevelStats {
    /// Lowest window level over both channels, dBFS.
    pub min: f64,
    /// Highest window level over both channels, dBFS.
    pub max: f64,
    /// Mean of the window levels (in dB) over both channels.
    pub mean: f64,
    /// Windows measured.
    pub windows: usize,
}

impl std::fmt::Display for LevelStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mean {:.2} dBFS, range {:.2}..{:.2} over {} windows",
            self.mean, self.min, self.max, self.windows
        )
    }
}

/// A rendition decoded to 48 kHz stereo, sample `i` at program time
/// `i / 48000` s.
pub struct ProgramAudio {
    /// Where it was decoded from, for messages.
    pub source: PathBuf,
    /// Left and right channels.
    pub channels: [Vec<f64>; 2],
}

impl ProgramAudio {
    /// Decodes the media playlist at `playlist` by timestamp (see
    /// `analysis::ffmpeg_decode_by_timestamp`); panics on an ffmpeg failure
    /// or any error it prints: a finished stream must decode cleanly.
    pub fn decode(playlist: &Path) -> Self {
        let decoded = analysis::ffmpeg_decode_by_timestamp(playlist);
        assert!(
            decoded.stderr.trim().is_empty(),
            "ffmpeg reported errors decoding {}:\n{}",
            playlist.display(),
            decoded.stderr
        );
        Self {
            source: playlist.to_owned(),
            channels: [0, 1].map(|c| analysis::channel(&decoded.samples, 2, c)),
        }
    }

    /// Decoded length, seconds.
    pub fn duration_s(&self) -> f64 {
        self.channels[0].len() as f64 / f64::from(RATE)
    }

    /// RMS dBFS of the tone at `freq_hz` in channel `c` over `span`
    /// (program seconds); a windowed Goertzel measurement that ignores
    /// other tones and noise away from `freq_hz`.
    pub fn tone_dbfs(&self, c: usize, freq_hz: f64, span: Range<f64>) -> f64 {
        let x = &self.channels[c];
        let index = |t: f64| ((t * f64::from(RATE)).round().max(0.0) as usize).min(x.len());
        let (start, end) = (index(span.start), index(span.end));
        assert!(
            end > start,
            "{}: nothing decoded in {span:?} (decoded {:.3} s)",
            self.source.display(),
            self.duration_s()
        );
        let peak = analysis::tone_amplitude(&x[start..end], freq_hz, f64::from(RATE));
        analysis::dbfs(peak / std::f64::consts::SQRT_2)
    }

    /// The tone's level in consecutive windows of `window_s` seconds
    /// covering `span` (a last partial window is left out).
    pub fn tone_windows(&self, freq_hz: f64, span: Range<f64>, window_s: f64) -> Vec<WindowLevel> {
        let count = ((span.end - span.start) / window_s + 1e-9).floor() as usize;
        (0..count)
            .map(|i| {
                let start_s = span.start + i as f64 * window_s;
                let window = start_s..start_s + window_s;
                WindowLevel {
                    start_s,
                    dbfs: [0, 1].map(|c| self.tone_dbfs(c, freq_hz, window.clone())),
                }
            })
            .collect()
    }

    /// Asserts the tone at `freq_hz` is within `tolerance_db` of
    /// `expected_dbfs` in both channels of every `window_s` window of
    /// `span`; returns the spread. `what` names the tone in the message,
    /// which lists the offending windows.
    pub fn assert_tone_level(
        &self,
        what: &str,
        freq_hz: f64,
        span: Range<f64>,
        window_s: f64,
        expected_dbfs: f64,
        tolerance_db: f64,
    ) -> LevelStats {
        let windows = self.tone_windows(freq_hz, span.clone(), window_s);
        let stats = stats(&windows, what, &span);
        let mut bad = String::new();
        for w in &windows {
            if w.dbfs
                .iter()
                .any(|db| (db - expected_dbfs).abs() > tolerance_db)
            {
                let _ = writeln!(
                    bad,
                    "  {:.2} s: {:.2} / {:.2} dBFS",
                    w.start_s, w.dbfs[0], w.dbfs[1]
                );
            }
        }
        assert!(
            bad.is_empty(),
            "{}: {what} ({freq_hz} Hz) should be {expected_dbfs:.2} ± {tolerance_db} dBFS over {span:.2?} s ({stats}); windows off (left / right):\n{bad}",
            self.source.display()
        );
        stats
    }

    /// Asserts the tone at `freq_hz` stays below `ceiling_dbfs` in both
    /// channels of every `window_s` window of `span`; returns the spread.
    pub fn assert_tone_below(
        &self,
        what: &str,
        freq_hz: f64,
        span: Range<f64>,
        window_s: f64,
        ceiling_dbfs: f64,
    ) -> LevelStats {
        let windows = self.tone_windows(freq_hz, span.clone(), window_s);
        let stats = stats(&windows, what, &span);
        assert!(
            stats.max < ceiling_dbfs,
            "{}: {what} ({freq_hz} Hz) should stay below {ceiling_dbfs:.2} dBFS over {span:.2?} s but reached {:.2} ({stats})",
            self.source.display(),
            stats.max
        );
        stats
    }
}

/// The spread of window levels; panics when there are none (a span that
/// is too short or outside the decoded audio is a broken test).
fn stats(windows: &[WindowLevel], what: &str, span: &Range<f64>) -> LevelStats {
    assert!(
        !windows.is_empty(),
        "no window to measure {what} in {span:?}"
    );
    let all = || windows.iter().flat_map(|w| w.dbfs);
    LevelStats {
        min: all().fold(f64::INFINITY, f64::min),
        max: all().fold(f64::NEG_INFINITY, f64::max),
        mean: all().sum::<f64>() / (2 * windows.len()) as f64,
        windows: windows.len(),
    }
}

/// A media playlist's numbering and its continuity tags, read from the
/// text as stored.
#[derive(Debug)]
pub struct PlaylistReport {
    /// Where it was read from.
    pub path: PathBuf,
    /// The text.
    pub text: String,
    /// The parsed playlist.
    pub playlist: MediaPlaylist,
    /// `EXT-X-DISCONTINUITY` tags (RFC 8216bis §4.4.4.3).
    pub discontinuities: usize,
    /// `EXT-X-GAP` tags and parts with `GAP=YES` (§4.4.4.7, §4.4.4.9).
    pub gaps: usize,
}

impl PlaylistReport {
    /// Reads and parses the playlist at `path`.
    pub fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let playlist = MediaPlaylist::parse(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{text}", path.display()));
        let tags = |tag: &str| text.lines().filter(|l| l.trim_end() == tag).count();
        let gap_parts = text
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:") && l.contains("GAP=YES"))
            .count();
        Self {
            path: path.to_owned(),
            discontinuities: tags("#EXT-X-DISCONTINUITY"),
            gaps: tags("#EXT-X-GAP") + gap_parts,
            text,
            playlist,
        }
    }

    /// The Media Sequence Number of each listed segment, read from its URI
    /// (`{msn}.m4s`), open segment included.
    pub fn segment_msns(&self) -> Vec<u64> {
        let p = &self.playlist;
        let mut msns: Vec<u64> = p
            .segments
            .iter()
            .map(|s| self.number(s.uri.strip_suffix(".m4s")))
            .collect();
        if p.open.as_ref().is_some_and(|o| !o.parts.is_empty()) {
            msns.push(p.media_sequence + p.segments.len() as u64);
        }
        msns
    }

    /// `(msn, part index)` of each listed part, read from its URI
    /// (`{msn}.{index}.m4s`), in playlist order.
    pub fn part_ids(&self) -> Vec<(u64, u64)> {
        let p = &self.playlist;
        p.segments
            .iter()
            .flat_map(|s| &s.parts)
            .chain(p.open.iter().flat_map(|o| &o.parts))
            .map(|part| {
                let stem = part.uri.strip_suffix(".m4s");
                let (msn, index) = stem.and_then(|s| s.split_once('.')).unzip();
                (self.number(msn), self.number(index))
            })
            .collect()
    }

    fn number(&self, text: Option<&str>) -> u64 {
        text.and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{}: unexpected URI in\n{}", self.path.display(), self.text))
    }

    /// Asserts an ended, seamless stream: `EXT-X-ENDLIST`, no discontinuity
    /// and no gap, segments numbered `EXT-X-MEDIA-SEQUENCE`, +1, +2, ...
    /// (each URI its own MSN, §6.2.1), and each segment's parts numbered
    /// from 0 without a hole. Returns the MSNs.
    pub fn assert_seamless(&self) -> Vec<u64> {
        let context = || format!("{}:\n{}", self.path.display(), self.text);
        assert!(self.playlist.end_list, "no EXT-X-ENDLIST in {}", context());
        assert_eq!(self.discontinuities, 0, "discontinuity in {}", context());
        assert_eq!(self.gaps, 0, "gap in {}", context());
        let msns = self.segment_msns();
        let first = self.playlist.media_sequence;
        let expected: Vec<u64> = (first..first + msns.len() as u64).collect();
        assert_eq!(msns, expected, "segment numbering in {}", context());
        let parts = self.part_ids();
        for pair in parts.windows(2) {
            let [(msn, index), (next_msn, next_index)] = [pair[0], pair[1]];
            let follows = (next_msn == msn && next_index == index + 1)
                || (next_msn == msn + 1 && next_index == 0);
            assert!(
                follows,
                "part {next_msn}.{next_index} follows {msn}.{index} in {}",
                context()
            );
        }
        msns
    }
}
