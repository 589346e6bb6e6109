//! The control API of `onair live`, end to end: an operator's HTTP requests
//! to the running binary, with ffmpeg publishers on the air, and what they
//! do to the stored program.
//!
//! - `control_needs_the_token`: without the admin token (or with a wrong
//!   one) every request is 401 and changes nothing, in the API or in the
//!   program; with it, `GET /control/hosts` lists the configured live hosts,
//!   offline before they publish and on air over RTMP after.
//! - `mute_gain_kick_change_the_output`: muting, unmuting, a -6 dB gain and
//!   a kick of one host show in both renditions at the program times of the
//!   requests, and never touch the other host.
//!
//! Program times of actions are taken around each request
//! ([`Broadcast::program_time`]); the pipeline applies a command within one
//! 20 ms tick, with a 5 ms ramp, so levels are only measured [`MARGIN_S`]
//! away from any action.

#[path = "common/broadcast.rs"]
mod broadcast;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, ProgramAudio, Publisher, Tone};
use onair::pipeline::RENDITIONS;
use serde_json::Value;

/// The admin token the broadcasts are started with.
const TOKEN: &str = "control-token-4d1e9a";

/// Allowed deviation of a tone from its expected level: two lossy
/// generations (ffmpeg's AAC, then onair's AAC or Opus).
const TOLERANCE_DB: f64 = 1.0;
/// Measurement window.
const WINDOW_S: f64 = 0.1;
/// From a publisher's start to its steady level in the program: ffmpeg's
/// start-up and handshake, the jitter buffer (200 ms) and its fade-in.
const SETTLE_S: f64 = 1.5;
/// Audio left out around each control request: one pipeline tick, the
/// 5 ms gain ramp and scheduling noise on a busy machine, many times over.
const MARGIN_S: f64 = 0.3;
/// Left out after a kick: the host's buffered audio (the 200 ms jitter
/// buffer) plays out, then fades.
const KICK_PLAYOUT_S: f64 = 0.6;
/// Audio measured up to this long before the stop.
const END_MARGIN_S: f64 = 0.5;
/// How much quieter than its level a muted host must be.
const MUTE_DEPTH_DB: f64 = 50.0;
/// The gain change under test.
const GAIN_DB: f64 = -6.0;
/// Longest wait for hosts to go on air or off.
const STATE_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest a kicked publisher may keep running.
const KICKED_EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any control request may take (the API answers within a tick or
/// gives 503 after 2 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-91c2",
};

/// Alice: AAC, mono, 44.1 kHz, 440 Hz at -18 dBFS.
const ALICE_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 44_100,
    channels: 1,
    codec: Codec::Aac,
};
/// Bob: AAC, stereo, 48 kHz, 1 kHz at -18 dBFS. Both tones together peak
/// at 0.36, below the limiter's threshold (-6 dBFS), so neither moves the
/// other's level.
const BOB_TONE: Tone = Tone {
    freq_hz: 1_000.0,
    volume_db: 3.07,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};

/// One answer of the control API.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header lines as `(lower-case name, value)`.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    /// The value of header `name` (lower case), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics on anything else.
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {self:?}"))
    }

    /// Asserts the status and the headers every control answer carries.
    fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {self:?}");
        // The control API describes an instant and may be private.
        assert_eq!(
            self.header("cache-control"),
            Some("no-store"),
            "{what}: {self:?}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}: {self:?}"
        );
        self
    }
}

/// A client of the control API on the broadcast's `--http` server: plain
/// HTTP/1.1, one connection per request.
struct ControlClient {
    addr: SocketAddr,
}

impl ControlClient {
    /// Sends `method path` with an optional `Authorization` value and JSON
    /// body, and reads the whole answer.
    fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(value) = authorization {
            request.push_str(&format!("Authorization: {value}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let mut stream = TcpStream::connect(self.addr).expect("connect to the HTTP server");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set a read timeout");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{method} {path}: no complete answer: {e}"));
        parse_answer(&String::from_utf8_lossy(&raw))
    }

    /// A request bearing the admin token.
    fn authorized(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.send(method, path, Some(&format!("Bearer {TOKEN}")), body)
    }

    /// `GET /control/hosts`: every host, as a JSON array.
    fn hosts(&self) -> Vec<Value> {
        let answer = self
            .authorized("GET", "/control/hosts", None)
            .expect(200, "GET /control/hosts");
        match answer.json() {
            Value::Array(hosts) => hosts,
            other => panic!("GET /control/hosts is not an array: {other}"),
        }
    }

    /// `GET /control/hosts/{name}`.
    fn host(&self, name: &str) -> Value {
        let path = format!("/control/hosts/{name}");
        self.authorized("GET", &path, None)
            .expect(200, &format!("GET {path}"))
            .json()
    }

    /// `PATCH /control/hosts/{name}` with `body`; returns the host as left.
    fn patch(&self, name: &str, body: &str) -> Value {
        let path = format!("/control/hosts/{name}");
        self.authorized("PATCH", &path, Some(body))
            .expect(200, &format!("PATCH {path} {body}"))
            .json()
    }

    /// Polls until every host named in `names` is in `state`; panics after
    /// [`STATE_TIMEOUT`] with the last listing.
    fn wait_for_state(&self, names: &[&str], state: &str) -> Vec<Value> {
        let deadline = Instant::now() + STATE_TIMEOUT;
        loop {
            let hosts = self.hosts();
            let ready = names.iter().all(|name| {
                hosts
                    .iter()
                    .any(|h| h["name"] == *name && h["state"] == state)
            });
            if ready {
                return hosts;
            }
            assert!(
                Instant::now() < deadline,
                "{names:?} not {state} within {STATE_TIMEOUT:?}: {hosts:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Splits a raw HTTP/1.1 answer into status, headers and body (the body
/// cut at `Content-Length` when given).
fn parse_answer(raw: &str) -> Answer {
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(body.len());
    Answer {
        status,
        headers,
        body: body[..length.min(body.len())].to_owned(),
    }
}

/// Starts a broadcast of alice and bob with the control API enabled.
fn start_broadcast(stream: &str) -> (Broadcast, ControlClient) {
    // A guess budget for the tests of wrong tokens, which make a few dozen.
    let broadcast = Broadcast::start_with(
        stream,
        &[ALICE, BOB],
        ["--admin-token", TOKEN, "--max-auth-failures", "100"],
    );
    let client = ControlClient {
        addr: broadcast.http_addr(),
    };
    (broadcast, client)
}

/// Program times just before and just after running `request`: the span
/// in which its change reaches the mixer.
fn timed<T>(broadcast: &Broadcast, request: impl FnOnce() -> T) -> (Range<f64>, T) {
    let before = broadcast.now();
    let result = request();
    (before..broadcast.now(), result)
}

/// The span between two actions, [`MARGIN_S`] away from both.
fn between(after: &Range<f64>, before: &Range<f64>) -> Range<f64> {
    after.end + MARGIN_S..before.start - MARGIN_S
}

/// The host named `name` in a listing.
fn find<'h>(hosts: &'h [Value], name: &str) -> &'h Value {
    hosts
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name:?} in {hosts:#?}"))
}

/// Asserts `tone` at its level in every window of `span`, in `program`.
fn assert_level(
    program: &ProgramAudio,
    rendition: &str,
    what: &str,
    tone: &Tone,
    offset_db: f64,
    span: Range<f64>,
) -> broadcast::LevelStats {
    let expected = tone.expected_rms_dbfs() + offset_db;
    let stats =
        program.assert_tone_level(what, tone.freq_hz, span, WINDOW_S, expected, TOLERANCE_DB);
    eprintln!("{rendition} {what}: expected {expected:.2} dBFS, measured {stats}");
    stats
}

#[test]
fn control_needs_the_token() {
    /// How long the publishers go on after the refused requests, so the
    /// program shows that nothing changed.
    const AFTER_REFUSALS: Duration = Duration::from_millis(2_500);
    let wall = Instant::now();
    let (mut broadcast, api) = start_broadcast("control-auth");

    // Refused before anything is revealed: no token, a wrong one, another
    // scheme, the bare token (RFC 6750 §2.1 wants "Bearer <token>").
    let wrong = [
        None,
        Some("Bearer not-the-token".to_owned()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
    ];
    for authorization in &wrong {
        let what = format!("GET /control/hosts with {authorization:?}");
        let answer = api
            .send("GET", "/control/hosts", authorization.as_deref(), None)
            .expect(401, &what);
        // RFC 6750 §3: a 401 names the Bearer scheme.
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {answer:?}");
        assert!(answer.json()["error"].is_string(), "{what}: {answer:?}");
        assert!(
            !answer.body.contains(ALICE.name) && !answer.body.contains(BOB.name),
            "{what} reveals host names: {answer:?}"
        );
    }

    // With the token: the configured live hosts, offline so far.
    let hosts = api.hosts();
    let names: Vec<&str> = hosts.iter().filter_map(|h| h["name"].as_str()).collect();
    assert_eq!(names, [ALICE.name, BOB.name], "{hosts:#?}");
    for host in &hosts {
        assert_eq!(host["kind"], "live", "{host}");
        assert_eq!(host["state"], "offline", "{host}");
        assert!(host["protocol"].is_null(), "{host}");
        assert!(host["peer"].is_null(), "{host}");
        assert_eq!(host["sessions"], 0, "{host}");
        assert_eq!(host["muted"], false, "{host}");
    }

    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_started = broadcast.program_time(bob.started());
    let hosts = api.wait_for_state(&[ALICE.name, BOB.name], "on-air");
    for name in [ALICE.name, BOB.name] {
        let host = find(&hosts, name);
        assert_eq!(host["protocol"], "rtmp", "{host}");
        let peer = host["peer"].as_str().unwrap_or_default();
        assert!(peer.starts_with("127.0.0.1:"), "{host}");
        assert_eq!(host["sessions"], 1, "{host}");
    }

    // Changes without the token are refused and change nothing.
    let bob_path = format!("/control/hosts/{}", BOB.name);
    let kick_path = format!("{bob_path}/kick");
    let attempts = [
        ("PATCH", bob_path.as_str(), Some(r#"{"muted": true}"#)),
        ("PATCH", bob_path.as_str(), Some(r#"{"gain_db": -40}"#)),
        ("POST", kick_path.as_str(), None),
    ];
    let refused_from = broadcast.now();
    for (method, path, body) in attempts {
        for authorization in &wrong {
            let what = format!("{method} {path} {body:?} with {authorization:?}");
            api.send(method, path, authorization.as_deref(), body)
                .expect(401, &what);
        }
    }
    let refused_until = broadcast.now();
    let bob_now = api.host(BOB.name);
    assert_eq!(bob_now["muted"], false, "{bob_now}");
    assert_eq!(bob_now["gain_db"], 0.0, "{bob_now}");
    assert_eq!(bob_now["state"], "on-air", "{bob_now}");
    assert_eq!(bob_now["sessions"], 1, "{bob_now}");

    std::thread::sleep(AFTER_REFUSALS);
    let stopped = broadcast.stop();
    drop((alice, bob));

    // Bob was never muted, quieter or kicked, before, during or after the
    // refused requests.
    let kicked = broadcast.log_lines_with(&["host kicked"]);
    assert!(kicked.is_empty(), "{kicked:?}");
    // A refused mute, gain or kick would have lasted: bob's steady span
    // shows it wherever it falls.
    let span = bob_started + SETTLE_S..stopped - END_MARGIN_S;
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        assert_level(&program, rendition, "bob", &BOB_TONE, 0.0, span.clone());
    }
    eprintln!(
        "control_needs_the_token: {} refused requests in {refused_from:.2}..{refused_until:.2} s, {:.1} s",
        attempts.len() * wrong.len(),
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn mute_gain_kick_change_the_output() {
    /// How long each state of bob lasts.
    const PHASE_S: f64 = 1.5;
    /// How long the program goes on after the kick.
    const AFTER_KICK_S: f64 = 2.0;
    let wall = Instant::now();
    let (mut broadcast, api) = start_broadcast("control-mix");
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    let mut bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_started = broadcast.program_time(bob.started());
    api.wait_for_state(&[ALICE.name, BOB.name], "on-air");
    let bob_steady = (bob_started + SETTLE_S).max(broadcast.now());

    broadcast.sleep_until(bob_steady + PHASE_S);
    let (muted, bob_muted) = timed(&broadcast, || api.patch(BOB.name, r#"{"muted": true}"#));
    assert_eq!(bob_muted["muted"], true, "{bob_muted}");

    broadcast.sleep_until(muted.end + PHASE_S);
    let (unmuted, bob_unmuted) = timed(&broadcast, || api.patch(BOB.name, r#"{"muted": false}"#));
    assert_eq!(bob_unmuted["muted"], false, "{bob_unmuted}");

    broadcast.sleep_until(unmuted.end + PHASE_S);
    let (gained, bob_gained) = timed(&broadcast, || {
        api.patch(BOB.name, &format!(r#"{{"gain_db": {GAIN_DB}}}"#))
    });
    assert_eq!(bob_gained["gain_db"], GAIN_DB, "{bob_gained}");
    assert_eq!(bob_gained["muted"], false, "{bob_gained}");

    broadcast.sleep_until(gained.end + PHASE_S);
    let kick_path = format!("/control/hosts/{}/kick", BOB.name);
    let (kicked, bob_kicked) = timed(&broadcast, || {
        api.authorized("POST", &kick_path, None)
            .expect(200, "kick bob")
            .json()
    });
    // The session is gone at once; its buffered audio may still play out.
    assert!(bob_kicked["protocol"].is_null(), "{bob_kicked}");
    let exited = bob.wait_exit(KICKED_EXIT_TIMEOUT);
    assert!(
        exited.is_some(),
        "bob's ffmpeg still runs {KICKED_EXIT_TIMEOUT:?} after the kick: the server kept its connection; log:\n{}",
        broadcast.log()
    );
    let bob_exited = broadcast.now();
    // Only a connected host can be kicked.
    api.authorized("POST", &kick_path, None)
        .expect(409, "kick bob again");
    api.wait_for_state(&[BOB.name], "offline");
    let alice_now = api.host(ALICE.name);
    assert_eq!(alice_now["state"], "on-air", "{alice_now}");

    broadcast.sleep_until(kicked.end + AFTER_KICK_S);
    let stopped = broadcast.stop();
    drop(alice);

    let closed = broadcast.log_lines_with(&[
        "RTMP connection closed by the server",
        "kicked by the operator",
    ]);
    assert_eq!(
        closed.len(),
        1,
        "one close for the kick; log:\n{}",
        broadcast.log()
    );
    let alice_span = alice_started + SETTLE_S..stopped - END_MARGIN_S;
    let before_mute = bob_steady..muted.start - MARGIN_S;
    let while_muted = between(&muted, &unmuted);
    let after_unmute = between(&unmuted, &gained);
    let after_gain = between(&gained, &kicked);
    let after_kick = kicked.end + KICK_PLAYOUT_S..stopped - END_MARGIN_S;
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let alice = assert_level(
            &program,
            rendition,
            "alice throughout",
            &ALICE_TONE,
            0.0,
            alice_span.clone(),
        );
        let before = assert_level(
            &program,
            rendition,
            "bob before the mute",
            &BOB_TONE,
            0.0,
            before_mute.clone(),
        );
        let muted = program.assert_tone_below(
            "bob muted",
            BOB_TONE.freq_hz,
            while_muted.clone(),
            WINDOW_S,
            before.mean - MUTE_DEPTH_DB,
        );
        let unmuted = assert_level(
            &program,
            rendition,
            "bob unmuted",
            &BOB_TONE,
            0.0,
            after_unmute.clone(),
        );
        let gained = assert_level(
            &program,
            rendition,
            "bob at -6 dB",
            &BOB_TONE,
            GAIN_DB,
            after_gain.clone(),
        );
        let gone = program.assert_tone_below(
            "bob kicked",
            BOB_TONE.freq_hz,
            after_kick.clone(),
            WINDOW_S,
            before.mean - MUTE_DEPTH_DB,
        );
        eprintln!(
            "{rendition}: bob muted {muted}; kicked {gone}; gain step {:.2} dB; alice {alice}",
            gained.mean - unmuted.mean
        );
    }
    eprintln!(
        "mute_gain_kick_change_the_output: muted {muted:.2?}, unmuted {unmuted:.2?}, gain {gained:.2?}, kicked {kicked:.2?}, bob's ffmpeg gone by {bob_exited:.2} s, {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

/// Guessing the token is slow: a thousand wrong tokens from one address
/// get 401 for the first ten, then 429 with `Retry-After`, and that address
/// is refused even the right token; the right token from another address
/// works at once, and the hosts on air are not disturbed.
#[test]
fn a_thousand_guesses_from_one_address_are_refused_and_another_address_gets_in() {
    const GUESSES: usize = 1_000;
    const FLOOD: Duration = Duration::from_secs(2);
    const THREADS: usize = 4;
    const BURST: usize = 10;
    let wall = Instant::now();
    let mut broadcast = Broadcast::start_with(
        "guessing",
        &[ALICE, BOB],
        ["--admin-token", TOKEN, "--max-auth-failures", "10"],
    );
    let api = ControlClient {
        addr: broadcast.http_addr(),
    };
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_on = broadcast.program_time(alice.started()) + SETTLE_S;
    api.wait_for_state(&[ALICE.name], "on-air");
    broadcast.sleep_until(alice_on);

    let flood_from = broadcast.now();
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let api = &api;
                scope.spawn(move || {
                    // At least GUESSES in all, for at least FLOOD.
                    let started = Instant::now();
                    let mut answers = Vec::new();
                    let mut i = t;
                    while i < GUESSES || started.elapsed() < FLOOD {
                        let token = format!("Bearer guess-{i:05}");
                        answers.push(api.send("GET", "/control/hosts", Some(&token), None));
                        i += THREADS;
                    }
                    answers
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("guesser"))
            .collect()
    });
    let flood_until = broadcast.now();
    let unauthorized = answers.iter().filter(|a| a.status == 401).count();
    let limited: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    // The budget refills by one every 6 s: the flood may earn one more.
    assert!(
        (BURST..=BURST + 1).contains(&unauthorized),
        "{unauthorized} guesses were looked at"
    );
    assert!(answers.len() >= GUESSES);
    assert_eq!(unauthorized + limited.len(), answers.len(), "other answers");
    for answer in &limited {
        let retry: u64 = answer
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("429 without Retry-After: {answer:?}"));
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        assert!(
            !answer.body.contains(ALICE.name),
            "a refusal reveals a host: {answer:?}"
        );
    }
    // The guesser's address is refused even the right token.
    api.authorized("GET", "/control/hosts", None)
        .expect(429, "the right token from the guessing address");
    // Another address gets in at once.
    let other = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--interface", "127.0.0.2"])
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {TOKEN}"))
        .arg(format!("http://{}/control/hosts", broadcast.http_addr()))
        .output()
        .expect("curl must be installed (scripts/deps.sh)");
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "200",
        "the right token from 127.0.0.2: {other:?}"
    );
    std::thread::sleep(Duration::from_millis(1_500));
    let stopped = broadcast.stop();
    drop(alice);

    // Alice, on air throughout, at her level within ±0.5 dB.
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let stats = program.assert_tone_level(
            "alice during the guessing",
            ALICE_TONE.freq_hz,
            alice_on..stopped - END_MARGIN_S,
            WINDOW_S,
            ALICE_TONE.expected_rms_dbfs(),
            0.5,
        );
        eprintln!("{rendition} alice: {stats}");
    }
    eprintln!(
        "{} guesses in {:.2} s: {unauthorized} looked at, {} refused (429); {:.1} s",
        answers.len(),
        flood_until - flood_from,
        limited.len(),
        wall.elapsed().as_secs_f64()
    );
}

/// Hosts come and go with the keys file, without a restart: a host added
/// to the file (noticed by its change) publishes at once; a host removed
/// from it (signalled with SIGHUP) loses its session, which the server
/// closes, and leaves the host list and the mix; the host who stays is on
/// air throughout.
#[test]
fn hosts_come_and_go_with_the_keys_file() {
    const PHASE_S: f64 = 2.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_file = dir.path().join("keys");
    // As a deploy tool writes it: a new file renamed over the old one.
    let write_keys = |hosts: &[&HostKey]| {
        let text: String = hosts
            .iter()
            .map(|h| format!("{}={}\n", h.name, h.secret))
            .collect();
        let next = dir.path().join("keys.next");
        std::fs::write(&next, format!("# hosts\n{text}")).expect("write keys");
        std::fs::rename(&next, &keys_file).expect("rename keys");
    };
    write_keys(&[&ALICE]);
    let args: [&std::ffi::OsStr; 4] = [
        "--admin-token".as_ref(),
        TOKEN.as_ref(),
        "--keys-file".as_ref(),
        keys_file.as_os_str(),
    ];
    let mut broadcast = Broadcast::start_with("keys-file", &[], args);
    let api = ControlClient {
        addr: broadcast.http_addr(),
    };
    let mut alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    api.wait_for_state(&[ALICE.name], "on-air");
    assert_eq!(api.hosts().len(), 1, "{:#?}", api.hosts());

    // Bob is added; the file's change is noticed within a few seconds.
    write_keys(&[&ALICE, &BOB]);
    wait_for_log(&broadcast, "keys file reloaded", 1);
    let bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_started = broadcast.program_time(bob.started());
    api.wait_for_state(&[ALICE.name, BOB.name], "on-air");
    broadcast.sleep_until(bob_started + SETTLE_S + PHASE_S);

    // Alice is removed and the process told at once.
    write_keys(&[&BOB]);
    let (removed, ()) = timed(&broadcast, || {
        let hup = std::process::Command::new("kill")
            .args(["-HUP", &broadcast.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(hup.success());
        wait_for_log(&broadcast, "keys file reloaded", 2);
    });
    let exited = alice.wait_exit(KICKED_EXIT_TIMEOUT);
    assert!(
        exited.is_some(),
        "alice's ffmpeg still runs {KICKED_EXIT_TIMEOUT:?} after her key was removed; log:\n{}",
        broadcast.log()
    );
    let hosts = api.hosts();
    assert!(
        hosts.iter().all(|h| h["name"] != ALICE.name),
        "alice left the host list: {hosts:#?}"
    );
    assert_eq!(find(&hosts, BOB.name)["state"], "on-air", "{hosts:#?}");
    // Her old key opens nothing now.
    let mut again = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    assert!(
        again.wait_exit(KICKED_EXIT_TIMEOUT).is_some(),
        "a removed key must be refused; log:\n{}",
        broadcast.log()
    );

    broadcast.sleep_until(removed.end + PHASE_S);
    let stopped = broadcast.stop();
    drop(bob);
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let before = assert_level(
            &program,
            rendition,
            "alice before her key was removed",
            &ALICE_TONE,
            0.0,
            alice_started + SETTLE_S..removed.start - MARGIN_S,
        );
        assert_level(
            &program,
            rendition,
            "bob, added while running",
            &BOB_TONE,
            0.0,
            bob_started + SETTLE_S..stopped - END_MARGIN_S,
        );
        let gone = program.assert_tone_below(
            "alice after her key was removed",
            ALICE_TONE.freq_hz,
            removed.end + KICK_PLAYOUT_S..stopped - END_MARGIN_S,
            WINDOW_S,
            before.mean - MUTE_DEPTH_DB,
        );
        eprintln!("{rendition}: alice removed {gone}");
    }
}

/// Waits until the log has `count` lines containing `needle`.
fn wait_for_log(broadcast: &Broadcast, needle: &str, count: usize) {
    let deadline = Instant::now() + STATE_TIMEOUT;
    while broadcast.log_lines_with(&[needle]).len() < count {
        assert!(
            Instant::now() < deadline,
            "{count} × {needle:?} not logged within {STATE_TIMEOUT:?}:\n{}",
            broadcast.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Behind a trusted proxy (`--trusted-proxy`), failed attempts count per
/// client named in `X-Forwarded-For`: one client guessing is refused while
/// another behind the same proxy gets in. Without it the header is
/// ignored, so a guesser cannot escape the limit by writing it.
#[test]
fn attempts_count_per_forwarded_client_only_behind_a_trusted_proxy() {
    let status = |broadcast: &Broadcast, token: &str, forwarded_for: &str| -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg("-H")
            .arg(format!("X-Forwarded-For: {forwarded_for}"))
            .arg(format!("http://{}/control/hosts", broadcast.http_addr()))
            .output()
            .expect("curl must be installed (scripts/deps.sh)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let guess = |broadcast: &Broadcast, forwarded_for: &str| {
        let answers: Vec<String> = (0..5)
            .map(|i| status(broadcast, &format!("guess-{i}"), forwarded_for))
            .collect();
        assert_eq!(answers, ["401", "401", "401", "429", "429"], "guesses");
    };
    for trusted in [true, false] {
        let mut args = vec!["--admin-token", TOKEN, "--max-auth-failures", "3"];
        if trusted {
            args.extend(["--trusted-proxy", "127.0.0.0/8"]);
        }
        let mut broadcast = Broadcast::start_with("forwarded", &[ALICE], args);
        // The edge appends the client's address to what the client sent.
        guess(&broadcast, "192.0.2.1, 203.0.113.5");
        let guesser = status(&broadcast, TOKEN, "203.0.113.5");
        let other = status(&broadcast, TOKEN, "192.0.2.1, 203.0.113.6");
        if trusted {
            assert_eq!(guesser, "429", "the guessing client, right token");
            assert_eq!(other, "200", "another client behind the same proxy");
        } else {
            assert_eq!(guesser, "429", "the guessing peer");
            assert_eq!(other, "429", "a forged header changes nothing");
        }
        broadcast.stop();
    }
}
