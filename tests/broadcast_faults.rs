//! `onair live` against misbehaving RTMP peers while a good host is on the
//! air: each bad connection must end alone, with its reason in the log, and
//! the good host must not lose a single window of audio.
//!
//! - `bad_peers_leave_the_program_untouched`: while alice publishes, one
//!   connection each: ffmpeg with a wrong stream key; an HTTP request
//!   instead of a handshake; a connect then half a chunk and a hang-up; Set
//!   Chunk Size 2^31-1 and 0; a 16 MiB - 1 audio message; and bob's valid
//!   publish with an AAC Main sequence header. Every one is closed by the
//!   server within seconds with a logged reason, bob never goes on air, and
//!   alice's tone is at its level in every 100 ms window of a seamless
//!   stream that ends cleanly on SIGINT.
//!
//! Raw RTMP (Adobe RTMP specification 1.0, §5) is written with the crate's
//! own [`ChunkEncoder`] and AMF0 encoder; the reasons matched in the log are
//! the ones `src/ingest/rtmp` gives for each fault.

#[path = "common/broadcast.rs"]
mod broadcast;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, Publisher, Tone};
use bytes::Bytes;
use onair::ingest::rtmp::amf0::{self, Amf0Value};
use onair::ingest::rtmp::chunk::{ChunkEncoder, Message, message_type};
use onair::ingest::rtmp::handshake::HANDSHAKE_SIZE;
use onair::pipeline::RENDITIONS;
use serde_json::Value;

/// The admin token, to read host states from the control API.
const TOKEN: &str = "faults-token-0c7b52";

/// Allowed deviation of alice's tone from its level (two lossy codecs).
const TOLERANCE_DB: f64 = 1.0;
/// Measurement window: a dropout of a few frames shows.
const WINDOW_S: f64 = 0.1;
/// From a publisher's start to its steady level in the program.
const SETTLE_S: f64 = 1.5;
/// Audio measured up to this long before the stop.
const END_MARGIN_S: f64 = 0.5;
/// Alice's steady audio before the first bad peer, seconds.
const BEFORE_FAULTS_S: f64 = 0.5;
/// How long alice goes on after the last bad peer.
const AFTER_FAULTS: Duration = Duration::from_millis(1_500);
/// Longest the server may keep a bad connection open. Its own timeouts are
/// 10 s, so a close within this is the server acting on the fault.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// Longest the wrong-key ffmpeg may run before giving up.
const REJECTED_EXIT_TIMEOUT: Duration = Duration::from_secs(8);
/// Longest wait for a host state in the control API.
const STATE_TIMEOUT: Duration = Duration::from_secs(8);

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-91c2",
};
/// A key no host has.
const WRONG: HostKey = HostKey {
    name: "nobody",
    secret: "guessed-secret-0000",
};

/// Alice: AAC, mono, 44.1 kHz, 440 Hz at -18 dBFS.
const ALICE_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 44_100,
    channels: 1,
    codec: Codec::Aac,
};

/// The chunk stream of commands (what ffmpeg uses).
const COMMAND_CSID: u32 = 3;
/// The chunk stream of audio.
const AUDIO_CSID: u32 = 4;
/// The protocol control chunk stream (§5.4).
const CONTROL_CSID: u32 = 2;
/// The message stream `createStream` yields for the first stream.
const PUBLISH_STREAM: u32 = 1;

/// A raw RTMP connection to the server, blocking.
struct RawPeer {
    stream: TcpStream,
    encoder: ChunkEncoder,
}

impl RawPeer {
    /// Connects without a handshake.
    fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).expect("connect to the RTMP port"),
            encoder: ChunkEncoder::new(),
        }
    }

    /// Connects and completes the simple handshake (§5.2): C0+C1, read
    /// S0+S1+S2, C2 echoing S1.
    fn handshake(addr: SocketAddr) -> Self {
        let mut peer = Self::connect(addr);
        let mut c0c1 = vec![3u8];
        c0c1.extend((0..HANDSHAKE_SIZE).map(|i| i as u8));
        peer.write(&c0c1);
        let mut s0s1s2 = vec![0; 1 + 2 * HANDSHAKE_SIZE];
        peer.stream
            .set_read_timeout(Some(CLOSE_TIMEOUT))
            .expect("set a read timeout");
        peer.stream
            .read_exact(&mut s0s1s2)
            .expect("read S0, S1 and S2");
        peer.write(&s0s1s2[1..1 + HANDSHAKE_SIZE]);
        peer
    }

    /// The client's address, as the server logs it (`peer=`).
    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Sends one message, chunked at the default 128 bytes.
    fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            chunk_stream_id: csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        let mut bytes = Vec::new();
        self.encoder.encode(&message, &mut bytes);
        self.write(&bytes);
    }

    fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        let payload = amf0::encode_all(values);
        self.send(COMMAND_CSID, message_type::COMMAND_AMF0, stream_id, payload);
    }

    /// `connect` to the `live` application (§7.2.1.1).
    fn connect_app(&mut self) {
        let app = Amf0Value::object([("app", Amf0Value::string("live"))]);
        self.command(
            0,
            &[Amf0Value::string("connect"), Amf0Value::Number(1.0), app],
        );
    }

    /// `connect`, `createStream` and `publish` with `key`, without waiting
    /// for the answers (the server takes them in order).
    fn publish(&mut self, key: &str) {
        let s = Amf0Value::string;
        self.connect_app();
        self.command(
            0,
            &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        );
        let publish = [
            s("publish"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            s(key),
            s("live"),
        ];
        self.command(PUBLISH_STREAM, &publish);
    }

    /// Reads (and drops) whatever the server sends until it closes the
    /// connection; panics if it is still open after [`CLOSE_TIMEOUT`].
    fn expect_closed_by_server(mut self, what: &str, broadcast: &Broadcast) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let mut sink = [0; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: the server kept the connection open {CLOSE_TIMEOUT:?}; log:\n{}",
                broadcast.log()
            );
            self.stream
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset: the server closed with our bytes unread.
                Err(_) => return,
            }
        }
    }
}

/// `GET /control/hosts/{name}` with the admin token: the host as JSON.
fn control_host(addr: SocketAddr, name: &str) -> Value {
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let request = format!(
        "GET /control/hosts/{name} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{answer}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

/// Polls the control API until host `name` is in `state`; returns every
/// state seen on the way, in order, without repeats.
fn wait_for_state(broadcast: &Broadcast, name: &str, state: &str) -> Vec<String> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let host = control_host(broadcast.http_addr(), name);
        let now = host["state"].as_str().unwrap_or_default().to_owned();
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == state {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state} within {STATE_TIMEOUT:?}; states seen {seen:?}; log:\n{}",
            broadcast.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts one log line has every one of `needles`; `what` names the fault.
fn assert_logged(broadcast: &Broadcast, what: &str, needles: &[&str]) -> String {
    let lines = broadcast.log_lines_with(needles);
    assert!(
        !lines.is_empty(),
        "{what}: no log line with {needles:?}; log:\n{}",
        broadcast.log()
    );
    lines[0].clone()
}

/// A type 0 chunk header (§5.3.1.2.1) on `csid` announcing a message of
/// `length` bytes of `type_id` on message stream 1, timestamp 0.
fn type0_header(csid: u8, length: u32, type_id: u8) -> Vec<u8> {
    assert!((2..64).contains(&csid), "one-byte basic header");
    let mut header = vec![csid];
    header.extend_from_slice(&[0, 0, 0]);
    header.extend_from_slice(&length.to_be_bytes()[1..]);
    header.push(type_id);
    header.extend_from_slice(&PUBLISH_STREAM.to_le_bytes());
    header
}

/// A fault thrown at the server: what it is, how the server's log says it
/// ended, and the peer it came from.
struct Fault {
    what: &'static str,
    peer: SocketAddr,
    reason: &'static [&'static str],
}

/// One raw connection per fault, each closed by the server before the next.
fn throw_raw_faults(broadcast: &Broadcast) -> Vec<Fault> {
    let addr = broadcast.rtmp_addr();
    let mut faults = Vec::new();
    let mut done = |what, peer: RawPeer, reason| {
        faults.push(Fault {
            what,
            peer: peer.local_addr(),
            reason,
        });
        peer.expect_closed_by_server(what, broadcast);
    };

    // An HTTP request on the RTMP port: C0 must be version 3 (§5.2.2).
    let mut garbage = RawPeer::connect(addr);
    garbage.write(b"GET / HTTP/1.1\r\nHost: onair\r\n\r\n");
    done("garbage handshake", garbage, &["not an RTMP client"]);

    // A valid connect, then a chunk header announcing 100 bytes, 1 sent,
    // and the peer hangs up.
    let mut truncated = RawPeer::handshake(addr);
    truncated.connect_app();
    let mut half = type0_header(COMMAND_CSID as u8, 100, message_type::COMMAND_AMF0);
    half.push(0x02);
    truncated.write(&half);
    truncated
        .stream
        .shutdown(Shutdown::Write)
        .expect("half-close the connection");
    done(
        "truncated chunk",
        truncated,
        &["connection ended inside a handshake packet, chunk or message"],
    );

    // Set Chunk Size (§5.4.1): 2^31-1 is legal but beyond onair's bound;
    // 0 is not a size.
    let mut huge_chunks = RawPeer::handshake(addr);
    let size = 0x7FFF_FFFFu32.to_be_bytes().to_vec();
    huge_chunks.send(CONTROL_CSID, message_type::SET_CHUNK_SIZE, 0, size);
    done(
        "Set Chunk Size 2^31-1",
        huge_chunks,
        &["Set Chunk Size to 2147483647 exceeds the bound"],
    );
    let mut zero_chunks = RawPeer::handshake(addr);
    let size = 0u32.to_be_bytes().to_vec();
    zero_chunks.send(CONTROL_CSID, message_type::SET_CHUNK_SIZE, 0, size);
    done(
        "Set Chunk Size 0",
        zero_chunks,
        &["Set Chunk Size to 0: must be 1 to 2^31-1"],
    );

    // An audio message of 16 MiB - 1, the largest a header can announce.
    let mut oversize = RawPeer::handshake(addr);
    oversize.write(&type0_header(
        AUDIO_CSID as u8,
        0xFF_FFFF,
        message_type::AUDIO,
    ));
    done(
        "16 MiB audio message",
        oversize,
        &["message length 16777215 exceeds the bound"],
    );

    // Bob's valid publish, then an AAC sequence header (FLV AACPacketType
    // 0) whose AudioSpecificConfig is AAC Main (object type 1), 44.1 kHz,
    // stereo: 00001 0100 0010 000.
    let mut aac_main = RawPeer::handshake(addr);
    aac_main.publish(BOB.secret);
    let sequence_header = vec![0xAF, 0x00, 0x0A, 0x10];
    aac_main.send(
        AUDIO_CSID,
        message_type::AUDIO,
        PUBLISH_STREAM,
        sequence_header,
    );
    done("AAC Main from bob", aac_main, &["AAC object type 1"]);
    faults
}

#[test]
fn bad_peers_leave_the_program_untouched() {
    let wall = Instant::now();
    let mut broadcast = Broadcast::start_with("faults", &[ALICE, BOB], ["--admin-token", TOKEN]);
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    wait_for_state(&broadcast, ALICE.name, "on-air");
    // Faults arrive while alice is at her steady level, with steady
    // windows before them to compare with.
    broadcast.sleep_until(alice_started + SETTLE_S + BEFORE_FAULTS_S);
    let faults_from = broadcast.now();

    let mut wrong_key = Publisher::start(&broadcast.rtmp_url(&WRONG), &ALICE_TONE);
    let refused = wrong_key
        .wait_exit(REJECTED_EXIT_TIMEOUT)
        .unwrap_or_else(|| {
            panic!(
                "ffmpeg with a wrong key still runs after {REJECTED_EXIT_TIMEOUT:?}; log:\n{}",
                broadcast.log()
            )
        });
    assert!(
        !refused.success(),
        "ffmpeg with a wrong key exited with {refused}"
    );
    assert!(
        wrong_key.log().contains("unknown stream key"),
        "ffmpeg was not told why it was refused: {}",
        wrong_key.log()
    );

    let faults = throw_raw_faults(&broadcast);
    // Bob's session was accepted and ended; he never went on air.
    let bob_states = wait_for_state(&broadcast, BOB.name, "offline");
    assert!(
        !bob_states.iter().any(|s| s == "on-air"),
        "bob went on air: {bob_states:?}"
    );
    let bob = control_host(broadcast.http_addr(), BOB.name);
    assert_eq!(bob["sessions"], 1, "{bob}");
    assert!(bob["protocol"].is_null(), "{bob}");
    let faults_until = broadcast.now();

    std::thread::sleep(AFTER_FAULTS);
    let alice_state = control_host(broadcast.http_addr(), ALICE.name);
    assert_eq!(alice_state["state"], "on-air", "{alice_state}");
    let stopped = broadcast.stop();
    drop(alice);

    // Every fault ended with its reason, logged against its peer.
    assert_logged(
        &broadcast,
        "wrong key",
        &["RTMP publish rejected", "unknown stream key"],
    );
    for fault in &faults {
        let peer = format!("peer={}", fault.peer);
        let mut needles = vec!["RTMP connection ended", peer.as_str()];
        needles.extend_from_slice(fault.reason);
        let line = assert_logged(&broadcast, fault.what, &needles);
        eprintln!("{}: {line}", fault.what);
    }
    let alice_field = format!("host=\"{}\"", ALICE.name);
    let alice_connected = broadcast.log_lines_with(&["host connected", &alice_field]);
    assert_eq!(alice_connected.len(), 1, "{alice_connected:?}");
    let errors = broadcast.log_lines_with(&["ERROR"]);
    assert!(errors.is_empty(), "errors in the log: {errors:#?}");

    // Alice never noticed: her tone in every window, a seamless stream.
    let span = alice_started + SETTLE_S..stopped - END_MARGIN_S;
    let expected = ALICE_TONE.expected_rms_dbfs();
    let mut msns = Vec::new();
    for rendition in RENDITIONS {
        msns.push(broadcast.playlist(rendition).assert_seamless());
        let program = broadcast.decode(rendition);
        let stats = program.assert_tone_level(
            "alice",
            ALICE_TONE.freq_hz,
            span.clone(),
            WINDOW_S,
            expected,
            TOLERANCE_DB,
        );
        eprintln!("{rendition} alice: expected {expected:.2} dBFS, measured {stats}");
    }
    assert!(
        msns.windows(2).all(|pair| pair[0] == pair[1]),
        "renditions list different segments: {msns:?}"
    );
    eprintln!(
        "bad_peers_leave_the_program_untouched: faults in {faults_from:.2}..{faults_until:.2} s, MSNs {}..={}, {:.1} s",
        msns[0][0],
        msns[0][msns[0].len() - 1],
        wall.elapsed().as_secs_f64()
    );

    // Last, so everything above is checked first: the studio's own line
    // for bob's departure gives the reason too, not just the server's.
    let bob_field = format!("host=\"{}\"", BOB.name);
    assert_logged(
        &broadcast,
        "AAC Main from bob, as the studio logs it",
        &["host left", &bob_field, "AAC object type 1"],
    );
}
