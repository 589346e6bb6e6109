//! A WHIP host played by aiortc (tests/whip/whip_publish.py), for the
//! tests of WHIP ingest and of return feeds.
//!
//! - [`WhipEndpoint`] is where a broadcast takes WHIP hosts, read from its
//!   log.
//! - [`WhipPublisher`] runs the script: it publishes a WAV file (a tone
//!   from [`tone_wav`]) until stopped, dropped or disconnected, reports
//!   its progress as JSON lines, and with `--receive` records the return
//!   feed the broadcast sends back.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::broadcast::{self, Broadcast};
use super::wav::{self, WavFormat};

/// Longest wait for a WHIP session to be answered and connected.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes one second of a sine at `freq_hz`, `dbfs` RMS, stereo 48 kHz
/// 16-bit: a whole number of cycles, so aiortc's looped playback has no
/// seam. Stereo at 48 kHz leaves nothing for aiortc's resampler to do.
pub fn tone_wav(dir: &Path, freq_hz: f64, dbfs: f64) -> PathBuf {
    let path = dir.join(format!("tone-{freq_hz}.wav"));
    let peak = 10f64.powf(dbfs / 20.0) * std::f64::consts::SQRT_2;
    let samples = wav::sine(freq_hz, broadcast::RATE, broadcast::RATE as usize, peak, 2);
    wav::write_wav(&path, broadcast::RATE, 2, WavFormat::Int16, &samples);
    path
}

/// The publisher script.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/whip/whip_publish.py")
}

/// Where the broadcast takes WHIP hosts, from its log line
/// `WHIP ingest: http://{http}/{stream}/whip (media on udp {addr})`.
pub struct WhipEndpoint {
    /// `http://ADDR/{stream}/whip`.
    pub url: String,
    /// The path part of `url`.
    pub path: String,
    /// The WebRTC media socket.
    pub media: SocketAddr,
}

impl WhipEndpoint {
    pub fn of(broadcast: &Broadcast) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(found) = broadcast
                .log_lines_with(&["WHIP ingest: http://"])
                .iter()
                .find_map(|line| Self::parse(line))
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no WHIP ingest line in the log:\n{}",
                broadcast.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = line.split("WHIP ingest: ").nth(1)?;
        let url = rest.split_whitespace().next()?.to_owned();
        let path = format!("/{}", url.strip_prefix("http://")?.split_once('/')?.1);
        let media = rest
            .split("media on udp ")
            .nth(1)?
            .split(|c: char| c == ')' || c.is_whitespace())
            .next()?
            .parse()
            .ok()?;
        Some(Self { url, path, media })
    }
}

/// whip_publish.py publishing a WAV file over WHIP until stopped, dropped
/// (killed) or disconnected by the server. Its JSON reports arrive on a
/// channel with the instant each was read.
pub struct WhipPublisher {
    child: Child,
    stdin: Option<ChildStdin>,
    reports: mpsc::Receiver<(Value, Instant)>,
    /// Every report read so far, for failure messages.
    seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
}

impl WhipPublisher {
    /// Starts publishing `wav` to `url` with `token` as the bearer, and
    /// the script's `extra` options.
    pub fn start(wav: &Path, url: &str, token: &str, extra: &[&str]) -> Self {
        let mut child = Command::new("python3")
            .arg(script())
            .arg(wav)
            .args(["--url", url, "--token", token, "--print-location"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 (with aiortc) is required to publish over WHIP");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, reports) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let report =
                    serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                if tx.send((report, Instant::now())).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&text);
        });
        Self {
            child,
            stdin,
            reports,
            seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for the first report with field `key` for which `accept`
    /// holds; returns it and when it was read. Panics (with everything
    /// the script said) on timeout, on an `error` report, or if the script
    /// ends first.
    pub fn wait_for(
        &mut self,
        key: &str,
        accept: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> (Value, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok((report, at)) => {
                    self.seen.push(report.clone());
                    assert!(report.get("error").is_none(), "{}", self.describe());
                    if report.get(key).is_some_and(&accept) {
                        return (report, at);
                    }
                }
                Err(e) => panic!("no {key:?} report ({e}); {}", self.describe()),
            }
        }
    }

    /// Waits for the POST's `201` and returns the session URL.
    pub fn location(&mut self) -> String {
        let (report, _) = self.wait_for("posted", |_| true, CONNECT_TIMEOUT);
        assert_eq!(report["posted"], 201, "{}", self.describe());
        report["location"]
            .as_str()
            .unwrap_or_else(|| panic!("no location: {}", self.describe()))
            .to_owned()
    }

    /// Waits until the peer connection is in one of `states`; returns the
    /// state and when it was reported.
    pub fn wait_state(&mut self, states: &[&str], timeout: Duration) -> (String, Instant) {
        let (report, at) = self.wait_for("state", |s| states.iter().any(|want| s == want), timeout);
        (report["state"].as_str().unwrap_or_default().to_owned(), at)
    }

    /// Asks the script to end: it DELETEs its session and closes.
    pub fn stop(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"stop\n")
            .and_then(|()| stdin.flush())
            .expect("write to the publisher");
    }

    /// Waits up to `limit` for the script to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn describe(&self) -> String {
        let stderr = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
        format!("publisher reports: {:?}; stderr:\n{stderr}", self.seen)
    }
}

impl Drop for WhipPublisher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One control API request (`Connection: close`) bearing `token`; returns
/// the status and the JSON body (`Null` when the body is not JSON).
pub fn control(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the control API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: not HTTP: {raw}"));
    let json = raw
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// Polls `GET /control/hosts/{name}` until the host is in `state`; returns
/// it. Panics after `timeout` with the host as last seen.
pub fn wait_for_host_state(
    addr: SocketAddr,
    token: &str,
    name: &str,
    state: &str,
    timeout: Duration,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (status, host) = control(addr, token, "GET", &format!("/control/hosts/{name}"), None);
        assert_eq!(status, 200, "GET /control/hosts/{name}: {host}");
        if host["state"] == state {
            return host;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state} within {timeout:?}: {host}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
