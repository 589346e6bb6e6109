//! WHIP ingest (RFC 9725) of `onair live`, end to end: aiortc publishers
//! (tests/whip/whip_publish.py) doing the WHIP HTTP exchange themselves
//! against the broadcast's `--http` server, next to an ffmpeg RTMP host.
//!
//! - `aiortc_whip_host_in_both_renditions`: a WHIP host's 1 kHz WAV tone is
//!   in both renditions at its level beside an RTMP host's tone; the
//!   control API lists it with protocol "whip"; after its DELETE it is
//!   silent, with no discontinuity and the RTMP host untouched.
//! - `whip_reconnect_replaces_the_session`: a second session for the same
//!   host closes the first (its peer sees the connection end) and is mixed
//!   in its place, with no gap in the program.
//! - `whip_refusals`: every refusal of the WHIP resources (401, 400, 413,
//!   415, 405, 404, 503, CORS preflight) and UDP garbage on the media port,
//!   while a WHIP host and an RTMP host stay continuous on the air.
//!
//! Requires `python3` with `aiortc` (`pip install aiortc`) and ffmpeg;
//! without them the tests fail. The tests run one at a time
//! ([`serial`]): each runs a broadcast, ffmpeg and aiortc in real time,
//! and timing is what they measure.

#[path = "common/broadcast.rs"]
mod broadcast;
#[path = "common/wav.rs"]
mod wav;
#[path = "common/whip_peer.rs"]
mod whip_peer;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, LevelStats, ProgramAudio, Publisher, Tone};
use onair::pipeline::RENDITIONS;
use serde_json::Value;
use whip_peer::{CONNECT_TIMEOUT, WhipEndpoint, WhipPublisher};

/// The admin token of the control API.
const TOKEN: &str = "whip-admin-5b8e1c";

/// The WHIP host under test.
const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-whip-secret-2c9d",
};
/// The RTMP host beside it.
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-rtmp-secret-61fa",
};
/// A second WHIP host, refused when the session limit is reached.
const CAROL: HostKey = HostKey {
    name: "carol",
    secret: "carol-whip-secret-a470",
};

/// Alice's WAV: a 1 kHz sine, stereo, 48 kHz, at this RMS level in each
/// channel. With Bob's tone the sum peaks at 0.36, below the limiter's
/// threshold (-6 dBFS), so neither tone moves the other's level.
const ALICE_HZ: f64 = 1_000.0;
const ALICE_DBFS: f64 = -18.0;
/// The tone of Alice's replacing session (another frequency, so the test
/// tells which session is in the mix).
const ALICE_NEW_HZ: f64 = 1_500.0;

/// Bob: AAC over RTMP, stereo, 48 kHz, 440 Hz at -18 dBFS.
const BOB_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};

/// Allowed deviation of Alice's tone. Three lossy generations instead of
/// two: aiortc's Opus (libopus, 96 kb/s, `voip`), then onair's AAC or Opus;
/// each keeps a pure tone's level within a few tenths of a dB. The rest is
/// the WebRTC path: aiortc paces packets from Python on a busy machine, so a
/// 100 ms window may hold a concealed (PLC) frame or two of a late packet,
/// each a little quieter than the tone.
const WHIP_TOLERANCE_DB: f64 = 1.5;
/// Allowed deviation of Bob's tone: ffmpeg's AAC, then onair's encoders.
const RTMP_TOLERANCE_DB: f64 = 1.0;
/// Measurement window.
const WINDOW_S: f64 = 0.1;
/// A departed host must be this quiet.
const SILENCE_DBFS: f64 = -50.0;
/// From a WHIP connection to its steady level in the program: the jitter
/// buffer's first hold (60 ms), the feed's fade-in, and the first packets
/// aiortc sends while DTLS-SRTP settles.
const WHIP_SETTLE_S: f64 = 1.0;
/// From an ffmpeg publisher's start to its steady level in the program.
const RTMP_SETTLE_S: f64 = 1.5;
/// After a session ends: what the jitter buffer holds plays out, at most
/// 200 ms is concealed, then the feed fades.
const PLAYOUT_S: f64 = 0.6;
/// Audio around a WHIP request left out of level measurements: the request
/// reaches the mixer within one 20 ms tick; this is scheduling noise.
const MARGIN_S: f64 = 0.3;
/// Audio measured up to this long before the broadcast stops.
const END_MARGIN_S: f64 = 0.5;

/// Longest wait for a replaced session's peer to see its connection end.
const REPLACED_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest any WHIP or control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a refusal may take: it is decided on the headers or on at most
/// 32 KiB of body, without the WebRTC stack.
const PROMPT_REFUSAL: Duration = Duration::from_secs(1);
/// Longest wait for a host to change state in the control API.
const STATE_TIMEOUT: Duration = Duration::from_secs(8);

/// Runs the tests one at a time (see the module docs); a failed test must
/// not fail the others, so a poisoned lock is taken over.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes one second of a sine at `freq_hz`, [`ALICE_DBFS`] RMS, stereo
/// 48 kHz 16-bit: a whole number of cycles, so aiortc's looped playback has
/// no seam. Stereo at 48 kHz leaves nothing for aiortc's resampler to do.
fn tone_wav(dir: &Path, freq_hz: f64) -> PathBuf {
    whip_peer::tone_wav(dir, freq_hz, ALICE_DBFS)
}

/// `onair live` with RTMP and WHIP hosts and the control API.
fn start_broadcast(stream: &str, keys: &[HostKey], extra: &[&str]) -> (Broadcast, WhipEndpoint) {
    let mut args = vec!["--webrtc-udp", "127.0.0.1:0", "--admin-token", TOKEN];
    args.extend_from_slice(extra);
    let broadcast = Broadcast::start_with(stream, keys, args);
    let whip = WhipEndpoint::of(&broadcast);
    (broadcast, whip)
}

/// One HTTP/1.1 answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header lines as `(lower-case name, value)`.
    headers: Vec<(String, String)>,
    body: String,
    /// From the first byte sent to the end of the answer.
    elapsed: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status, and for a refusal a plain-text reason.
    fn expect(self, status: u16, what: &str) -> Self {
        assert_eq!(self.status, status, "{what}: {self:?}");
        if status >= 400 {
            assert!(
                self.header("content-type")
                    .is_some_and(|t| t.starts_with("text/plain")),
                "{what}: a refusal says why in text/plain: {self:?}"
            );
            assert!(!self.body.trim().is_empty(), "{what}: no reason: {self:?}");
        }
        self
    }

    /// Asserts the answer came within [`PROMPT_REFUSAL`].
    fn promptly(self, what: &str) -> Self {
        assert!(
            self.elapsed < PROMPT_REFUSAL,
            "{what} took {:?}: {self:?}",
            self.elapsed
        );
        self
    }
}

/// A WHIP or control request: method, path, headers, body.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    headers: Vec<(&'a str, String)>,
    body: &'a [u8],
    /// `Content-Length` to announce when it is not the body's length (an
    /// announced body that is never sent in full).
    announced_length: Option<usize>,
}

impl<'a> Request<'a> {
    fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            path,
            headers: Vec::new(),
            body: b"",
            announced_length: None,
        }
    }

    fn bearer(mut self, token: &str) -> Self {
        self.headers
            .push(("Authorization", format!("Bearer {token}")));
        self
    }

    fn header(mut self, name: &'a str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// An SDP offer as the body.
    fn offer(self, sdp: &'a [u8]) -> Self {
        let mut request = self.header("Content-Type", "application/sdp");
        request.body = sdp;
        request
    }

    /// Sends the request on a new connection and reads one answer. Write
    /// errors are ignored: a server may answer and close before it has
    /// read a body it refuses.
    fn send(&self, addr: SocketAddr) -> Answer {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n",
            self.method, self.path
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let length = self.announced_length.unwrap_or(self.body.len());
        head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connect to the HTTP server");
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set a read timeout");
        let _ = stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(self.body));
        let what = format!("{} {}", self.method, self.path);
        let mut answer = read_answer(&mut stream, &what);
        answer.elapsed = started.elapsed();
        answer
    }
}

/// Reads one HTTP/1.1 answer: the head, then `Content-Length` bytes.
fn read_answer(stream: &mut TcpStream, what: &str) -> Answer {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!("{what}: connection closed before an answer: {raw:?}"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: no answer: {e} (read {raw:?})"),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => panic!("{what}: body cut short: {e}"),
        }
    }
    body.truncate(length);
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        elapsed: Duration::ZERO,
    }
}

/// The path of a session URL (`Location`, made absolute by the script).
fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    format!("/{}", rest.split_once('/').map_or("", |(_, p)| p))
}

/// `GET /control/hosts` with the admin token: the host named `name`.
fn control_host(addr: SocketAddr, name: &str) -> Value {
    let answer = Request::new("GET", &format!("/control/hosts/{name}"))
        .bearer(TOKEN)
        .send(addr);
    assert_eq!(answer.status, 200, "GET /control/hosts/{name}: {answer:?}");
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer:?}"))
}

/// Polls the control API until host `name` is in `state`; returns it.
fn wait_for_host_state(addr: SocketAddr, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let host = control_host(addr, name);
        if host["state"] == state {
            return host;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state} within {STATE_TIMEOUT:?}: {host}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Program times just before and just after `action`.
fn timed<T>(broadcast: &Broadcast, action: impl FnOnce() -> T) -> (Range<f64>, T) {
    let before = broadcast.now();
    let result = action();
    (before..broadcast.now(), result)
}

/// Asserts a tone at `expected_dbfs` ± `tolerance_db` in every window of
/// `span` and logs the measured spread.
fn assert_level(
    program: &ProgramAudio,
    what: &str,
    freq_hz: f64,
    span: Range<f64>,
    expected_dbfs: f64,
    tolerance_db: f64,
) -> LevelStats {
    let stats =
        program.assert_tone_level(what, freq_hz, span, WINDOW_S, expected_dbfs, tolerance_db);
    eprintln!("{what}: expected {expected_dbfs:.2} dBFS, measured {stats}");
    stats
}

/// Asserts a tone below [`SILENCE_DBFS`] in every window of `span`.
fn assert_silent(program: &ProgramAudio, what: &str, freq_hz: f64, span: Range<f64>) {
    let stats = program.assert_tone_below(what, freq_hz, span, WINDOW_S, SILENCE_DBFS);
    eprintln!("{what}: silent, measured {stats}");
}

/// An SDP offer as aiortc makes it for a sendonly Opus track (ICE gathering
/// complete, loopback candidate): valid for the endpoint, the base of the
/// malformed ones.
const AIORTC_OFFER: &str = "v=0\r\n\
o=- 4004841004 4004841004 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic:WMS *\r\n\
m=audio 43147 UDP/TLS/RTP/SAVPF 96 9 0 8\r\n\
c=IN IP4 127.0.0.1\r\n\
a=sendonly\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=mid:0\r\n\
a=msid:f202f699-7775-4130-acd0-40d20dba9bcb 91d17c3e-f5c5-4b86-bd94-720a3628adc5\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=rtcp-mux\r\n\
a=ssrc:1953848271 cname:fe7ceb1d-0871-41d8-bebb-c535449c0d83\r\n\
a=rtpmap:96 opus/48000/2\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=candidate:16572de626da4e5384a0ce2d0d932906 1 udp 2130706431 127.0.0.1 43147 typ host\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:T2nH\r\n\
a=ice-pwd:4d8Y0Hk3bX2e9QzL7mR1sVwa\r\n\
a=fingerprint:sha-256 3A:91:0C:5E:7B:24:D8:6F:11:A2:C3:4D:E5:F6:07:18:29:3A:4B:5C:6D:7E:8F:90:A1:B2:C3:D4:E5:F6:07:18\r\n\
a=setup:actpass\r\n";

#[test]
fn aiortc_whip_host_in_both_renditions() {
    let _serial = serial();
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = tone_wav(dir.path(), ALICE_HZ);
    let (mut broadcast, whip) = start_broadcast("whip-host", &[ALICE, BOB], &[]);
    let http = broadcast.http_addr();

    let bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_on = broadcast.program_time(bob.started()) + RTMP_SETTLE_S;
    let mut alice = WhipPublisher::start(&wav, &whip.url, ALICE.secret, &[]);
    let location = alice.location();
    assert!(
        path_of(&location).starts_with(&format!("{}/", whip.path)),
        "Location {location} is not under {}",
        whip.path
    );
    let (_, connected) = alice.wait_state(&["connected"], CONNECT_TIMEOUT);
    let alice_on = broadcast.program_time(connected) + WHIP_SETTLE_S;

    // A WHIP host is a live host like an RTMP one, told apart by protocol.
    let host = wait_for_host_state(http, ALICE.name, "on-air");
    assert_eq!(host["protocol"], "whip", "{host}");
    assert_eq!(
        host["peer"].as_str().map(|p| p.starts_with("127.0.0.1:")),
        Some(true),
        "{host}"
    );
    let host = wait_for_host_state(http, BOB.name, "on-air");
    assert_eq!(host["protocol"], "rtmp", "{host}");

    // Alice on air for a while, then she ends her session (RFC 9725 §4.2.2).
    broadcast.sleep_until(alice_on.max(bob_on) + 2.0);
    let (deleted, (report, _)) = timed(&broadcast, || {
        alice.stop();
        alice.wait_for("deleted", |_| true, REQUEST_TIMEOUT)
    });
    assert_eq!(report["deleted"], 200, "{}", alice.describe());
    let host = wait_for_host_state(http, ALICE.name, "offline");
    assert!(host["protocol"].is_null(), "{host}");
    // The session is gone: its URL is no longer a resource.
    Request::new("DELETE", &path_of(&location))
        .bearer(ALICE.secret)
        .send(http)
        .expect(404, "DELETE of an ended session");

    broadcast.sleep_until(deleted.end + PLAYOUT_S + 1.5);
    let stopped = broadcast.stop();
    drop(bob);

    let on_air = alice_on..deleted.start - MARGIN_S;
    let gone = deleted.end + PLAYOUT_S..stopped - END_MARGIN_S;
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let name = |who: &str| format!("{rendition}: {who}");
        assert_level(
            &program,
            &name("alice over WHIP"),
            ALICE_HZ,
            on_air.clone(),
            ALICE_DBFS,
            WHIP_TOLERANCE_DB,
        );
        assert_silent(
            &program,
            &name("alice after DELETE"),
            ALICE_HZ,
            gone.clone(),
        );
        // Bob goes on through Alice's arrival and departure, window by window.
        assert_level(
            &program,
            &name("bob over RTMP"),
            BOB_TONE.freq_hz,
            bob_on..stopped - END_MARGIN_S,
            BOB_TONE.expected_rms_dbfs(),
            RTMP_TOLERANCE_DB,
        );
        broadcast.playlist(rendition).assert_seamless();
    }
    eprintln!("wall time {:?}", wall.elapsed());
}

#[test]
fn whip_reconnect_replaces_the_session() {
    let _serial = serial();
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let (first_wav, second_wav) = (
        tone_wav(dir.path(), ALICE_HZ),
        tone_wav(dir.path(), ALICE_NEW_HZ),
    );
    let (mut broadcast, whip) = start_broadcast("whip-reconnect", &[ALICE], &[]);
    let http = broadcast.http_addr();

    let mut first = WhipPublisher::start(&first_wav, &whip.url, ALICE.secret, &[]);
    let first_location = first.location();
    let (_, connected) = first.wait_state(&["connected"], CONNECT_TIMEOUT);
    let first_on = broadcast.program_time(connected) + WHIP_SETTLE_S;
    broadcast.sleep_until(first_on + 1.5);

    // The same host again, as a browser reloading its page does.
    let second_posted = broadcast.now();
    let mut second = WhipPublisher::start(&second_wav, &whip.url, ALICE.secret, &[]);
    let second_location = second.location();
    assert_ne!(
        first_location, second_location,
        "a new session has a new URL"
    );
    let (_, connected) = second.wait_state(&["connected"], CONNECT_TIMEOUT);
    let second_connected = broadcast.program_time(connected);

    // The server ends the replaced session: its peer sees it, and its URL
    // is gone while the new one stays.
    let (state, ended) = first.wait_state(&["closed", "failed"], REPLACED_TIMEOUT);
    let first_ended = broadcast.program_time(ended);
    eprintln!(
        "replaced session {state} {:.3} s after the new one connected",
        first_ended - second_connected
    );
    Request::new("DELETE", &path_of(&first_location))
        .bearer(ALICE.secret)
        .send(http)
        .expect(404, "DELETE of the replaced session");
    let host = wait_for_host_state(http, ALICE.name, "on-air");
    assert_eq!(host["protocol"], "whip", "{host}");
    assert!(
        first.wait_exit(REPLACED_TIMEOUT).is_some(),
        "the replaced publisher goes on: {}",
        first.describe()
    );

    let second_on = second_connected.max(first_ended) + WHIP_SETTLE_S;
    broadcast.sleep_until(second_on + 2.0);
    let stopped = broadcast.stop();
    drop(second);

    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let name = |who: &str| format!("{rendition}: {who}");
        assert_level(
            &program,
            &name("first session"),
            ALICE_HZ,
            first_on..second_posted - MARGIN_S,
            ALICE_DBFS,
            WHIP_TOLERANCE_DB,
        );
        assert_level(
            &program,
            &name("second session"),
            ALICE_NEW_HZ,
            second_on..stopped - END_MARGIN_S,
            ALICE_DBFS,
            WHIP_TOLERANCE_DB,
        );
        assert_silent(
            &program,
            &name("first session after its replacement"),
            ALICE_HZ,
            first_ended + PLAYOUT_S..stopped - END_MARGIN_S,
        );
        let lowest = assert_one_tone_on_air(
            &program,
            rendition,
            [ALICE_HZ, ALICE_NEW_HZ],
            first_on..stopped - END_MARGIN_S,
        );
        eprintln!("{rendition}: lowest window of either session {lowest:.2} dBFS");
        broadcast.playlist(rendition).assert_seamless();
    }
    eprintln!("wall time {:?}", wall.elapsed());
}

/// How far the host's level may dip in a window across a session switch.
/// The old session's buffered audio is followed by the new session's first
/// frames with a 5 ms fade-out and a 5 ms fade-in: on an idle machine that
/// is a 10 ms dip, -0.4 dB over a 100 ms window. Here the second publisher
/// (Python, PyAV) starts on the same two cores and can hold up the first
/// one's last packets for a few tens of ms (measured: up to 4.5 dB in one
/// window). A dropped session, silent until the buffer refills, costs far
/// more than 6 dB.
const SWITCH_DIP_DB: f64 = 6.0;

/// Asserts that in every window of `span` one of two tones (two sessions
/// of one host, each at [`ALICE_DBFS`]) is on air: their summed power is
/// within [`SWITCH_DIP_DB`] of one tone's. Returns the lowest window's sum.
fn assert_one_tone_on_air(
    program: &ProgramAudio,
    rendition: &str,
    tones: [f64; 2],
    span: Range<f64>,
) -> f64 {
    let [a, b] = tones.map(|hz| program.tone_windows(hz, span.clone(), WINDOW_S));
    let power = |db: f64| 10f64.powf(db / 10.0);
    let sums: Vec<(f64, f64)> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| {
            let sum = (0..2)
                .map(|c| 10.0 * (power(a.dbfs[c]) + power(b.dbfs[c])).log10())
                .fold(f64::INFINITY, f64::min);
            (a.start_s, sum)
        })
        .collect();
    let holes: Vec<String> = sums
        .iter()
        .filter(|(_, sum)| *sum < ALICE_DBFS - SWITCH_DIP_DB)
        .map(|(at, sum)| format!("  {at:.2} s: {sum:.2} dBFS"))
        .collect();
    assert!(
        holes.is_empty(),
        "{rendition}: the host drops out at the session switch ({tones:?} Hz summed):\n{}",
        holes.join("\n")
    );
    sums.iter()
        .map(|(_, sum)| *sum)
        .fold(f64::INFINITY, f64::min)
}

/// `count` m= lines in an offer that is otherwise small: an SDP bomb
/// within the 32 KiB a body may have.
fn media_bomb(count: usize) -> String {
    let mut sdp = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
    for _ in 0..count {
        sdp.push_str("m=audio 9 RTP/AVP 0\r\n");
    }
    sdp
}

/// The valid offer with `count` more ICE candidates.
fn candidate_bomb(count: usize) -> String {
    let candidate = "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n";
    format!("{AIORTC_OFFER}{}", candidate.repeat(count))
}

/// Sends `count` datagrams of junk to `to`: random bytes, and junk that
/// starts like STUN, DTLS and RTP (RFC 7983 §7 demultiplexing) so it gets
/// past a first-byte check.
fn udp_garbage(to: SocketAddr, count: usize) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..count {
        let len = 1 + (next() % 1200) as usize;
        let mut datagram: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // STUN (0-3), DTLS (20-63), RTP/RTCP (128-191), or anything.
        datagram[0] = match i % 4 {
            0 => (next() % 4) as u8,
            1 => 20 + (next() % 44) as u8,
            2 => 128 + (next() % 64) as u8,
            _ => datagram[0],
        };
        let _ = socket.send_to(&datagram, to);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn whip_refusals() {
    let _serial = serial();
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = tone_wav(dir.path(), ALICE_HZ);
    // One WHIP session at most: Alice's; Carol's is one too many.
    let (mut broadcast, whip) = start_broadcast(
        "whip-refusals",
        &[ALICE, BOB, CAROL],
        &["--max-whip-sessions", "1"],
    );
    let http = broadcast.http_addr();
    let endpoint = whip.path.as_str();

    let bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_on = broadcast.program_time(bob.started()) + RTMP_SETTLE_S;
    let mut alice = WhipPublisher::start(&wav, &whip.url, ALICE.secret, &[]);
    let session = path_of(&alice.location());
    let (_, connected) = alice.wait_state(&["connected"], CONNECT_TIMEOUT);
    let alice_on = broadcast.program_time(connected) + WHIP_SETTLE_S;
    broadcast.sleep_until(alice_on.max(bob_on));
    let offer = AIORTC_OFFER.as_bytes();

    // 401 with a Bearer challenge (RFC 6750 §3), before the offer is read.
    for (what, request) in [
        (
            "wrong token",
            Request::new("POST", endpoint)
                .bearer("not-a-secret")
                .offer(offer),
        ),
        ("no token", Request::new("POST", endpoint).offer(offer)),
        (
            "another scheme",
            Request::new("POST", endpoint)
                .header("Authorization", &format!("Basic {}", CAROL.secret))
                .offer(offer),
        ),
    ] {
        let answer = request.send(http).expect(401, what).promptly(what);
        let challenge = answer.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{what}: {answer:?}");
    }

    // 400 with the reason in the body.
    let not_sdp = b"hello, this is not an offer\r\n".as_slice();
    let video_only = AIORTC_OFFER.replace("m=audio", "m=video");
    let recvonly = AIORTC_OFFER.replace("a=sendonly", "a=recvonly");
    let media_bomb = media_bomb(1_500);
    let candidate_bomb = candidate_bomb(600);
    for (what, body, reason) in [
        ("malformed SDP", not_sdp, "line 1"),
        ("no audio", video_only.as_bytes(), "audio"),
        ("recvonly audio", recvonly.as_bytes(), "recvonly"),
        ("1500 m= lines", media_bomb.as_bytes(), "m="),
        (
            "hundreds of candidates",
            candidate_bomb.as_bytes(),
            "candidate",
        ),
    ] {
        assert!(body.len() <= 32 * 1024, "{what} must fit the size limit");
        let answer = Request::new("POST", endpoint)
            .bearer(CAROL.secret)
            .offer(body)
            .send(http)
            .expect(400, what)
            .promptly(what);
        assert!(answer.body.contains(reason), "{what}: {answer:?}");
        eprintln!(
            "{what}: 400 in {:?}: {}",
            answer.elapsed,
            answer.body.trim()
        );
    }

    // The return endpoint (WHEP) needs an offer that receives; talkback
    // needs the admin token and a live host to talk to.
    let stream_path = endpoint.strip_suffix("/whip").expect("a WHIP path");
    let whep = format!("{stream_path}/whep");
    let what = "a sendonly offer to WHEP";
    let answer = Request::new("POST", &whep)
        .bearer(CAROL.secret)
        .offer(offer)
        .send(http)
        .expect(400, what)
        .promptly(what);
    assert!(answer.body.contains("recvonly or sendrecv"), "{answer:?}");
    let talkback = format!("{stream_path}/talkback");
    let what = "talkback with a host's key";
    Request::new("POST", &talkback)
        .bearer(CAROL.secret)
        .offer(offer)
        .send(http)
        .expect(401, what)
        .promptly(what);
    let what = "talkback to nobody";
    let answer = Request::new("POST", &format!("{talkback}?to=nobody"))
        .bearer(TOKEN)
        .offer(offer)
        .send(http)
        .expect(400, what)
        .promptly(what);
    assert!(answer.body.contains("nobody"), "{answer:?}");

    // 413 for 10 MiB, decided without reading it: only 64 KiB is ever sent,
    // so an endpoint waiting for the whole body would never answer.
    let some = vec![b'a'; 64 * 1024];
    let answer = Request {
        announced_length: Some(10 * 1024 * 1024),
        ..Request::new("POST", endpoint)
            .bearer(CAROL.secret)
            .offer(&some)
    }
    .send(http)
    .expect(413, "10 MiB offer")
    .promptly("10 MiB offer");
    eprintln!("10 MiB offer: 413 in {:?}", answer.elapsed);

    // 415: the offer is SDP or nothing.
    Request::new("POST", endpoint)
        .bearer(CAROL.secret)
        .header("Content-Type", "application/json")
        .send(http)
        .expect(415, "Content-Type application/json")
        .promptly("415");

    // 405: no trickle ICE on an ICE-lite endpoint (RFC 9725 §4.3.1).
    let answer = Request::new("PATCH", &session)
        .bearer(ALICE.secret)
        .header("Content-Type", "application/trickle-ice-sdpfrag")
        .send(http)
        .expect(405, "PATCH of the session");
    assert!(
        answer.header("allow").is_some(),
        "405 lists what is allowed: {answer:?}"
    );

    // The CORS preflight of a host page on another origin.
    let answer = Request::new("OPTIONS", endpoint)
        .header("Origin", "https://studio.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send(http)
        .expect(204, "OPTIONS");
    let cors = |name: &str| answer.header(name).unwrap_or_default().to_ascii_lowercase();
    assert_eq!(cors("access-control-allow-origin"), "*", "{answer:?}");
    for method in ["post", "delete", "patch", "options"] {
        assert!(
            cors("access-control-allow-methods").contains(method),
            "{answer:?}"
        );
    }
    for header in ["authorization", "content-type"] {
        assert!(
            cors("access-control-allow-headers").contains(header),
            "{answer:?}"
        );
    }
    assert!(
        cors("access-control-expose-headers").contains("location"),
        "{answer:?}"
    );

    // 404: unknown sessions, another host's session, another stream.
    Request::new(
        "DELETE",
        &format!("{endpoint}/00000000000000000000000000000000"),
    )
    .bearer(ALICE.secret)
    .send(http)
    .expect(404, "DELETE of an unknown session");
    Request::new("DELETE", &session)
        .bearer(CAROL.secret)
        .send(http)
        .expect(404, "DELETE of Alice's session with Carol's token");
    Request::new("DELETE", &session)
        .send(http)
        .expect(401, "DELETE without a token");
    Request::new("POST", "/another-stream/whip")
        .bearer(CAROL.secret)
        .offer(offer)
        .send(http)
        .expect(404, "POST to another stream");

    // 503 with Retry-After: Alice holds the only session.
    let answer = Request::new("POST", endpoint)
        .bearer(CAROL.secret)
        .offer(offer)
        .send(http)
        .expect(503, "a session over --max-whip-sessions");
    assert!(answer.header("retry-after").is_some(), "{answer:?}");

    // The candidate bomb again, after blank lines: the check must read to
    // the end, as the WebRTC stack does (RFC 8866 §5: no blank line inside
    // an SDP). Past the check it reaches str0m, which answers 201, or 503
    // here as Alice holds the only session. Asserted last, so a failure
    // here leaves the other checks standing.
    let hidden_bomb = format!(
        "{AIORTC_OFFER}\r\n\r\n{}",
        &candidate_bomb[AIORTC_OFFER.len()..]
    );
    let hidden = Request::new("POST", endpoint)
        .bearer(CAROL.secret)
        .offer(hidden_bomb.as_bytes())
        .send(http);

    // Junk on the media port while Alice publishes.
    udp_garbage(whip.media, 2_000);
    let refusals_done = broadcast.now();

    // Nothing refused touched Alice's session.
    let host = control_host(http, ALICE.name);
    assert_eq!(host["state"], "on-air", "{host}");
    assert_eq!(host["sessions"], 1, "{host}");
    assert_eq!(control_host(http, CAROL.name)["state"], "offline");
    broadcast.sleep_until(refusals_done + 1.0);
    let stopped = broadcast.stop();
    drop(bob);
    drop(alice);

    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let name = |who: &str| format!("{rendition}: {who}");
        assert_level(
            &program,
            &name("alice over WHIP through the refusals and UDP junk"),
            ALICE_HZ,
            alice_on..stopped - END_MARGIN_S,
            ALICE_DBFS,
            WHIP_TOLERANCE_DB,
        );
        assert_level(
            &program,
            &name("bob over RTMP"),
            BOB_TONE.freq_hz,
            bob_on..stopped - END_MARGIN_S,
            BOB_TONE.expected_rms_dbfs(),
            RTMP_TOLERANCE_DB,
        );
        broadcast.playlist(rendition).assert_seamless();
    }
    hidden
        .expect(400, "candidates after blank lines")
        .promptly("candidates after blank lines");
    eprintln!("wall time {:?}", wall.elapsed());
}

/// One client address holds at most `--max-whip-per-address` sessions: one
/// more from it is refused with 429 and `Retry-After`, another address
/// gets in, and ending a session frees its slot.
#[test]
fn one_address_holds_at_most_its_whip_sessions() {
    let _serial = serial();
    let (broadcast, whip) = start_broadcast(
        "whip-per-address",
        &[ALICE, BOB, CAROL],
        &["--max-whip-per-address", "2"],
    );
    let http = broadcast.http_addr();
    let endpoint = whip.path.as_str();
    let offer = AIORTC_OFFER.as_bytes();
    let post = |host: &HostKey| {
        Request::new("POST", endpoint)
            .bearer(host.secret)
            .offer(offer)
            .send(http)
    };
    let alice = post(&ALICE).expect(201, "Alice's session");
    post(&BOB).expect(201, "Bob's session");
    let refused = post(&CAROL).expect(429, "a third session from one address");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    // Another address: curl from 127.0.0.2.
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("offer.sdp");
    std::fs::write(&body, offer).expect("offer");
    let other = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "--interface", "127.0.0.2"])
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Content-Type: application/sdp", "-H"])
        .arg(format!("Authorization: Bearer {}", CAROL.secret))
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("http://{http}{endpoint}"))
        .output()
        .expect("curl must be installed (scripts/deps.sh)");
    assert_eq!(
        String::from_utf8_lossy(&other.stdout),
        "201",
        "Carol from 127.0.0.2: {other:?}"
    );
    // Alice leaves: her slot is free again.
    let location = alice.header("location").expect("Location").to_owned();
    Request::new("DELETE", &path_of(&location))
        .bearer(ALICE.secret)
        .send(http)
        .expect(200, "DELETE of Alice's session");
    post(&ALICE).expect(201, "a session in the freed slot");
}

/// `GET /{stream}/whip` hands a host the STUN and TURN servers it must
/// gather with before offering (JSON and `Link` headers, TURN credentials
/// minted per host from the shared secret); every `201` carries the same
/// `Link` headers (RFC 9725 §4.6). Without a key, nothing is given out.
#[test]
fn ice_servers_go_to_hosts_before_the_offer_and_with_the_answer() {
    const TURN: &str = "turn:turn.example.net:3478?transport=udp";
    const STUN: &str = "stun:stun.example.net:3478";
    let _serial = serial();
    let (broadcast, whip) = start_broadcast(
        "whip-ice-servers",
        &[ALICE],
        &[
            "--ice-server",
            TURN,
            "--ice-server",
            STUN,
            "--turn-secret",
            "shared-secret",
            "--turn-ttl",
            "600",
        ],
    );
    let http = broadcast.http_addr();
    let endpoint = whip.path.as_str();
    let refused = Request::new("GET", endpoint)
        .send(http)
        .expect(401, "ICE servers without a key");
    assert!(!refused.body.contains("turn:"), "{refused:?}");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let given = Request::new("GET", endpoint)
        .bearer(ALICE.secret)
        .send(http)
        .expect(200, "ICE servers for Alice");
    let json: Value = serde_json::from_str(&given.body).expect("JSON");
    let servers = json["iceServers"].as_array().expect("iceServers");
    assert_eq!(servers.len(), 2, "{json}");
    assert_eq!(servers[0]["urls"], TURN);
    assert_eq!(servers[1]["urls"], STUN);
    assert!(
        servers[1].get("username").is_none(),
        "STUN has no credentials: {json}"
    );
    let username = servers[0]["username"].as_str().expect("a TURN username");
    let (expiry, host) = username.split_once(':').expect("EXPIRY:HOST");
    assert_eq!(host, ALICE.name);
    let expiry: u64 = expiry.parse().expect("expiry in Unix seconds");
    assert!(
        (before + 600..=before + 660).contains(&expiry),
        "expiry {expiry} is not --turn-ttl after {before}"
    );
    // The password is HMAC-SHA1(secret, username) in base64, which coturn
    // recomputes: checked here with openssl.
    let expected = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s '{username}' | openssl dgst -sha1 -hmac shared-secret -binary | base64"
        ))
        .output()
        .expect("openssl must be installed (scripts/deps.sh)");
    assert_eq!(
        servers[0]["credential"].as_str(),
        Some(String::from_utf8_lossy(&expected.stdout).trim()),
        "{json}"
    );
    let links: Vec<&str> = given
        .headers
        .iter()
        .filter(|(name, _)| name == "link")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(links.len(), 2, "{given:?}");
    assert!(
        links[0].starts_with(&format!(
            "<{TURN}>; rel=\"ice-server\"; username=\"{username}\""
        )) && links[0].ends_with("credential-type=\"password\""),
        "{links:?}"
    );
    assert_eq!(links[1], format!("<{STUN}>; rel=\"ice-server\""));

    let created = Request::new("POST", endpoint)
        .bearer(ALICE.secret)
        .offer(AIORTC_OFFER.as_bytes())
        .send(http)
        .expect(201, "Alice's offer");
    let created_links = created
        .headers
        .iter()
        .filter(|(name, value)| name == "link" && value.contains("rel=\"ice-server\""))
        .count();
    assert_eq!(created_links, 2, "{created:?}");
}
