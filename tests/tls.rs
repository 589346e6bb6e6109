//! HTTPS and RTMPS against real peers: curl (HTTP/2 through ALPN, HTTP/1.1,
//! certificate trust), ffmpeg reading the stream over HTTPS and publishing
//! over `rtmps://`, a renewed certificate picked up without ending anything,
//! and clients that connect and say nothing.
//!
//! Certificates are made here (rcgen), self-signed for `onair.test` and
//! 127.0.0.1; curl trusts them through `--cacert` and reaches `onair.test`
//! through `--resolve`.

#[path = "common/broadcast.rs"]
mod broadcast;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, Publisher, Tone};
use onair::pipeline::RENDITIONS;

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-91c2",
};
const ALICE_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 48_000,
    channels: 1,
    codec: Codec::Aac,
};
const BOB_TONE: Tone = Tone {
    freq_hz: 1_000.0,
    volume_db: -2.93,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};
const TOLERANCE_DB: f64 = 1.0;
const SETTLE_S: f64 = 1.5;
/// Longest wait for a renewed certificate to be served.
const RENEWAL_LIMIT: Duration = Duration::from_secs(15);

/// A self-signed certificate for `onair.test` and 127.0.0.1, its key, and
/// where they were written.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    fn make(dir: &Path, name: &str) -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![
            "onair.test".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("certificate");
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, made.cert.pem()).expect("write certificate");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
        TestCert { cert, key }
    }

    /// Installs this pair at `target`'s paths as a renewal tool does: each
    /// file written aside, then renamed over the old one.
    fn install_as(&self, target: &TestCert) {
        for (from, to) in [(&self.key, &target.key), (&self.cert, &target.cert)] {
            let aside = to.with_extension("new");
            std::fs::copy(from, &aside).expect("copy");
            std::fs::rename(&aside, to).expect("rename");
        }
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-cert".into(),
            self.cert.clone().into(),
            "--tls-key".into(),
            self.key.clone().into(),
        ]
    }
}

/// `curl -sS` for `https://onair.test:PORT{path}`, trusting `ca`, with
/// `extra` arguments; prints the HTTP version after the body.
fn curl(http: SocketAddr, path: &str, ca: &Path, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("onair.test:{}:127.0.0.1", http.port()))
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .args(["-w", "\nhttp_version=%{http_version}"])
        .arg(format!("https://onair.test:{}{path}", http.port()))
        .stdin(Stdio::null())
        .output()
        .expect("curl must be installed (scripts/deps.sh)")
}

fn trusted_with(http: SocketAddr, ca: &Path) -> bool {
    curl(http, "/", ca, &[]).status.success()
}

/// Polls `check` every 100 ms for up to `limit`.
fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// ffmpeg reading a playlist over HTTPS until the stream ends, its decoded
/// stereo samples (interleaved) kept.
struct HttpsListener {
    child: std::process::Child,
    samples: Arc<Mutex<Vec<f32>>>,
    bytes: Arc<AtomicUsize>,
    stderr: Arc<Mutex<String>>,
}

impl HttpsListener {
    fn start(url: &str, ca: &Path) -> HttpsListener {
        let mut child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-tls_verify", "1", "-ca_file"])
            .arg(ca)
            .args(["-i", url, "-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed (scripts/deps.sh)");
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            log.lock().unwrap().push_str(&text);
        });
        let mut stdout = child.stdout.take().expect("stdout");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (sink, count) = (samples.clone(), bytes.clone());
        std::thread::spawn(move || {
            // 4-byte samples, read whole.
            let mut buf = [0u8; 4096];
            while stdout.read_exact(&mut buf).is_ok() {
                count.fetch_add(buf.len(), Ordering::Relaxed);
                sink.lock().unwrap().extend(
                    buf.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        });
        HttpsListener {
            child,
            samples,
            bytes,
            stderr,
        }
    }
}

/// RMS level in dBFS of `samples`.
fn rms_dbfs(samples: &[f32]) -> f64 {
    let sum: f64 = samples.iter().map(|x| f64::from(*x).powi(2)).sum();
    10.0 * (sum / samples.len().max(1) as f64).log10()
}

#[test]
fn listeners_read_over_https_and_a_renewed_certificate_reaches_new_connections() {
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let live = TestCert::make(dir.path(), "live");
    let first = TestCert::make(dir.path(), "first");
    first.install_as(&live);
    let broadcast = Broadcast::start_with("https", &[ALICE], live.args());
    let http = broadcast.http_addr();
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);

    // Clients that connect and never send a byte: neither a TLS handshake
    // nor a request. They must not hold their connections.
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(http).expect("connect"))
        .collect();
    let idle_since = Instant::now();

    // HTTP/2 through ALPN, and HTTP/1.1 for clients that ask for it.
    assert!(
        wait_for(Duration::from_secs(15), || {
            let out = curl(http, "/https/index.m3u8", &first.cert, &["--fail"]);
            out.status.success()
        }),
        "the multivariant playlist is not served over HTTPS; log:\n{}",
        broadcast.log()
    );
    let h2 = curl(http, "/https/index.m3u8", &first.cert, &["--fail"]);
    let body = String::from_utf8_lossy(&h2.stdout);
    assert!(body.starts_with("#EXTM3U"), "{body}");
    assert!(body.ends_with("http_version=2"), "not HTTP/2: {body}");
    let h1 = curl(
        http,
        "/https/index.m3u8",
        &first.cert,
        &["--fail", "--http1.1"],
    );
    assert!(
        String::from_utf8_lossy(&h1.stdout).ends_with("http_version=1.1"),
        "{h1:?}"
    );
    // Cleartext HTTP on the HTTPS port fails for that client alone.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{}/https/index.m3u8", http.port()))
        .output()
        .expect("curl");
    assert!(
        !plain.status.success(),
        "cleartext answered on the HTTPS port"
    );

    // A listener over HTTPS, verifying the certificate, once two segments
    // are out (ffmpeg reads whole segments).
    assert!(
        wait_for(Duration::from_secs(20), || {
            let out = curl(http, "/https/aac/live.m3u8", &first.cert, &["--fail"]);
            String::from_utf8_lossy(&out.stdout)
                .matches("#EXTINF")
                .count()
                >= 2
        }),
        "no segments; log:\n{}",
        broadcast.log()
    );
    let url = format!("https://127.0.0.1:{}/https/aac/live.m3u8", http.port());
    let mut listener = HttpsListener::start(&url, &first.cert);
    assert!(
        wait_for(Duration::from_secs(20), || listener
            .bytes
            .load(Ordering::Relaxed)
            > 48_000 * 4),
        "the HTTPS listener decodes nothing: {}",
        listener.stderr.lock().unwrap()
    );

    // Renewal 1: new files, then SIGHUP.
    let second = TestCert::make(dir.path(), "second");
    assert!(!trusted_with(http, &second.cert));
    second.install_as(&live);
    let hup = Command::new("kill")
        .args(["-HUP", &broadcast.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    assert!(
        wait_for(RENEWAL_LIMIT, || trusted_with(http, &second.cert)),
        "the renewed certificate is not served after SIGHUP; log:\n{}",
        broadcast.log()
    );
    assert!(
        !trusted_with(http, &first.cert),
        "the old certificate is still served to new connections"
    );
    // Renewal 2: new files only; the file watch picks them up.
    let third = TestCert::make(dir.path(), "third");
    third.install_as(&live);
    assert!(
        wait_for(RENEWAL_LIMIT, || trusted_with(http, &third.cert)),
        "a changed certificate file is not picked up; log:\n{}",
        broadcast.log()
    );
    let heard_before = listener.bytes.load(Ordering::Relaxed);
    assert!(
        wait_for(Duration::from_secs(10), || listener
            .bytes
            .load(Ordering::Relaxed)
            > heard_before + 48_000 * 4),
        "the HTTPS listener stopped receiving audio across the renewals"
    );

    // The idle clients have been let go (the first-request limit is 10 s).
    for (i, mut stream) in idle.into_iter().enumerate() {
        let left = Duration::from_secs(20).saturating_sub(idle_since.elapsed());
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(100))))
            .expect("timeout");
        let mut byte = [0u8; 1];
        // EOF or reset: closed; a read timeout: still open.
        let closed = match stream.read(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(
            closed,
            "idle connection {i} still open {:?} after connecting",
            idle_since.elapsed()
        );
    }

    let mut broadcast = broadcast;
    let stopped = broadcast.stop();
    drop(alice);
    let status = wait_for(Duration::from_secs(30), || {
        listener.child.try_wait().ok().flatten().is_some()
    });
    assert!(
        status,
        "the HTTPS listener did not reach the end of the stream"
    );
    let exit = listener.child.wait().expect("ffmpeg exit");
    assert!(
        exit.success(),
        "the HTTPS listener failed: {exit:?}: {}",
        listener.stderr.lock().unwrap()
    );

    // What the HTTPS listener heard: the host's tone at its level (the
    // middle of what it decoded, away from the join and the end).
    let samples = listener.samples.lock().unwrap().clone();
    let n = samples.len();
    assert!(n > 8 * 48_000, "the listener decoded {n} samples");
    let left: Vec<f32> = samples[n / 4..3 * n / 4]
        .iter()
        .step_by(2)
        .copied()
        .collect();
    let heard = rms_dbfs(&left);
    let expected = ALICE_TONE.expected_rms_dbfs();
    assert!(
        (heard - expected).abs() <= TOLERANCE_DB,
        "the HTTPS listener heard {heard:.2} dBFS, the host sent {expected:.2}"
    );
    for r in RENDITIONS {
        broadcast.playlist(r).assert_seamless();
    }
    eprintln!(
        "https: listener heard {heard:.2} dBFS (sent {expected:.2}); program {stopped:.1} s; {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn ffmpeg_publishes_over_rtmps_and_plain_rtmp_on_its_port_is_refused() {
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = TestCert::make(dir.path(), "rtmps");
    let mut args = cert.args();
    args.extend(["--rtmps".into(), "127.0.0.1:0".into()]);
    let mut broadcast = Broadcast::start_with("rtmps", &[ALICE, BOB], args);
    let rtmps = broadcast.rtmps_addr();
    let alice = Publisher::start(
        &format!("rtmps://{rtmps}/live/{}", ALICE.secret),
        &ALICE_TONE,
    );
    let alice_started = broadcast.program_time(alice.started());
    // Bob on the plain RTMP port of the same broadcast.
    let bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_started = broadcast.program_time(bob.started());
    // A plain RTMP client on the RTMPS port, with Alice's key: refused at
    // the TLS handshake, before any key is looked at.
    let plain = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args([
            "-f",
            "lavfi",
            "-t",
            "3",
            "-i",
            "sine=frequency=3000:sample_rate=48000",
        ])
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(format!("rtmp://{rtmps}/live/{}", ALICE.secret))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("ffmpeg");
    assert!(
        !plain.status.success(),
        "plain RTMP was accepted on the RTMPS port"
    );
    std::thread::sleep(Duration::from_secs(5));
    let stopped = broadcast.stop();
    drop((alice, bob));

    let log = broadcast.log();
    assert!(
        log.contains("TLS handshake failed"),
        "the refused client is not logged; log:\n{log}"
    );
    for host in [ALICE, BOB] {
        let connected =
            broadcast.log_lines_with(&["host connected", &format!("host=\"{}\"", host.name)]);
        assert_eq!(connected.len(), 1, "{}: {connected:?}\n{log}", host.name);
    }
    for r in RENDITIONS {
        broadcast.playlist(r).assert_seamless();
        let program = broadcast.decode(r);
        for (what, tone, from) in [
            ("alice over RTMPS", &ALICE_TONE, alice_started),
            ("bob over RTMP", &BOB_TONE, bob_started),
        ] {
            let stats = program.assert_tone_level(
                what,
                tone.freq_hz,
                from + SETTLE_S..stopped - 0.5,
                0.1,
                tone.expected_rms_dbfs(),
                TOLERANCE_DB,
            );
            eprintln!("{r} {what}: {stats}");
        }
        // The refused client's tone never reached the program.
        program.assert_tone_below(
            "the plain client",
            3000.0,
            alice_started..stopped - 0.5,
            0.1,
            -50.0,
        );
    }
    eprintln!("rtmps: {:.1} s", wall.elapsed().as_secs_f64());
}
