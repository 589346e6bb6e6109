//! The WebRTC endpoint of WHIP ingest against a real publisher: aiortc
//! (tests/whip/publish.py) offers a sendonly Opus track playing a 1 kHz tone;
//! the SDP travels over the script's stdio. Requires `python3` with `aiortc`
//! (`pip install aiortc`); without them the test fails.

#[path = "common/analysis.rs"]
mod analysis;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use onair::ingest::whip::rtc::{
    AcceptError, Accepted, RtcConfig, RtcEndpoint, RtcEvent, RtcHandle,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::timeout;

const RATE: u32 = 48_000;
const TONE_HZ: f64 = 1000.0;
const TONE_DBFS: f64 = -12.0;
/// Opus frames of 20 ms at 48 kHz (RFC 7587 §4.1 timestamp units).
const FRAME_TICKS: u32 = 960;

/// The publisher script and its stdio.
struct Publisher {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<serde_line::Line>,
}

/// Minimal line protocol of publish.py (JSON objects with one string field).
mod serde_line {
    #[derive(Debug)]
    pub enum Line {
        Offer(String),
        State(String),
        Other(String),
    }

    /// Extracts `{"key": "value"}` without a JSON dependency: the script
    /// writes exactly one key per line via `json.dumps`.
    pub fn parse(line: &str) -> Line {
        for (key, make) in [
            ("offer", Line::Offer as fn(String) -> Line),
            ("state", Line::State),
        ] {
            let prefix = format!("{{\"{key}\": \"");
            if let Some(rest) = line.strip_prefix(&prefix)
                && let Some(body) = rest.strip_suffix("\"}")
            {
                return make(unescape(body));
            }
        }
        Line::Other(line.to_owned())
    }

    fn unescape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        }
        out
    }

    pub fn escape(s: &str) -> String {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\r', "\\r")
            .replace('\n', "\\n")
    }
}

impl Publisher {
    fn start(wav: &Path) -> Self {
        let check = Command::new("python3")
            .args(["-c", "import aiortc"])
            .output()
            .expect("python3 is required for this test (with aiortc: pip install aiortc)");
        assert!(
            check.status.success(),
            "python3 cannot import aiortc (pip install aiortc): {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/whip/publish.py")
            .canonicalize()
            .or_else(|_| Path::new("/work/main/tests/whip/publish.py").canonicalize())
            .expect("tests/whip/publish.py exists");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(wav)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start publish.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_line::parse(&line)).is_err() {
                    break;
                }
            }
        });
        Publisher {
            child,
            stdin,
            lines,
        }
    }

    async fn offer(&mut self) -> String {
        loop {
            let line = timeout(Duration::from_secs(30), self.lines.recv())
                .await
                .expect("publish.py printed its offer within 30 s")
                .expect("publish.py exited before printing its offer");
            match line {
                serde_line::Line::Offer(sdp) => return sdp,
                serde_line::Line::State(state) => eprintln!("publisher state: {state}"),
                serde_line::Line::Other(text) => eprintln!("publisher: {text}"),
            }
        }
    }

    fn send(&mut self, json: &str) {
        writeln!(self.stdin, "{json}").expect("write to publish.py");
        self.stdin.flush().expect("flush publish.py stdin");
    }

    fn answer(&mut self, sdp: &str) {
        let json = format!("{{\"answer\": \"{}\"}}", serde_line::escape(sdp));
        self.send(&json);
    }

    fn close(&mut self) {
        self.send("{\"close\": true}");
    }

    fn mute(&mut self) {
        self.send("{\"mute\": true}");
    }

    /// Vanishes without a DTLS close_notify, as a crashed browser would.
    fn kill(&mut self) {
        self.child.kill().expect("kill publish.py");
        self.child.wait().expect("reap publish.py");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Ends the script if an assertion failed before `close`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stereo 16-bit WAV of a 1 kHz sine at -12 dBFS (both channels equal, so
/// no up-mix changes its level on the way into the Opus encoder).
fn write_tone(path: &Path, seconds: u32) {
    let frames = RATE * seconds;
    let amplitude = 10_f64.powf(TONE_DBFS / 20.0) * f64::from(i16::MAX);
    let data_len = frames * 4;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16_u32.to_le_bytes());
    wav.extend_from_slice(&1_u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&2_u16.to_le_bytes()); // channels
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 4).to_le_bytes());
    wav.extend_from_slice(&4_u16.to_le_bytes());
    wav.extend_from_slice(&16_u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for n in 0..frames {
        let phase = 2.0 * std::f64::consts::PI * TONE_HZ * f64::from(n) / f64::from(RATE);
        let sample = (amplitude * phase.sin()).round() as i16;
        wav.extend_from_slice(&sample.to_le_bytes());
        wav.extend_from_slice(&sample.to_le_bytes());
    }
    std::fs::write(path, wav).expect("write tone WAV");
}

async fn next_event(endpoint: &mut RtcEndpoint, within: Duration, what: &str) -> RtcEvent {
    timeout(within, endpoint.recv())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?} while waiting for {what}"))
        .unwrap_or_else(|| panic!("endpoint stopped while waiting for {what}"))
}

/// One received Opus packet.
struct Packet {
    seq: u16,
    rtp_ts: u32,
    payload: bytes::Bytes,
}

/// Collects `count` Opus packets of `session`, failing on any other event.
async fn collect(endpoint: &mut RtcEndpoint, session: u64, count: usize) -> Vec<Packet> {
    let mut packets = Vec::with_capacity(count);
    while packets.len() < count {
        match next_event(endpoint, Duration::from_secs(5), "Opus packets").await {
            RtcEvent::Opus {
                session: s,
                seq,
                rtp_ts,
                payload,
                ..
            } => {
                assert_eq!(s, session, "packet of an unknown session");
                packets.push(Packet {
                    seq,
                    rtp_ts,
                    payload,
                });
            }
            other => panic!("unexpected event while receiving media: {other:?}"),
        }
    }
    packets
}

/// On loopback nothing is lost or reordered: each packet follows the
/// previous one by one sequence number and one 20 ms frame.
fn assert_contiguous(packets: &[Packet]) {
    for pair in packets.windows(2) {
        let [a, b] = pair else { unreachable!() };
        assert_eq!(b.seq, a.seq.wrapping_add(1), "sequence gap after {}", a.seq);
        assert_eq!(
            b.rtp_ts.wrapping_sub(a.rtp_ts),
            FRAME_TICKS,
            "timestamp step after seq {}",
            a.seq
        );
    }
}

/// Datagrams of every demultiplexing class (RFC 7983 §7) and none, from a
/// stranger's address.
async fn send_garbage(to: SocketAddr) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind garbage socket");
    let mut state = 0x2545_f491_u32;
    let mut sent = 0;
    for i in 0..200_u32 {
        let len = match i % 5 {
            0 => 0,
            1 => 20 + (i as usize % 80),
            _ => 1 + (i as usize * 37) % 1200,
        };
        let mut datagram = Vec::with_capacity(len);
        for _ in 0..len {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            datagram.push(state.to_le_bytes()[0]);
        }
        if let Some(first) = datagram.first_mut() {
            // STUN, DTLS, RTP/RTCP, and nothing known.
            *first = [0x00, 0x16, 0x80, 0xff][i as usize % 4];
        }
        socket.send_to(&datagram, to).await.expect("send garbage");
        sent += 1;
        if i % 10 == 9 {
            // Paced, so the count measures the endpoint and not the kernel's
            // receive buffer overflowing.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    sent
}

async fn stats(handle: &RtcHandle) -> onair::ingest::whip::rtc::RtcStats {
    handle.stats().await.expect("endpoint is running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_a_tone_that_survives_garbage_and_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 4);

    let mut config = RtcConfig::new("127.0.0.1:0".parse().expect("address"));
    config.max_sessions = 1;
    // Above aiortc's consent-check interval (RFC 7675 §5.1: 4 to 6 s).
    config.ice_timeout = Duration::from_secs(8);
    config.media_timeout = Duration::from_secs(3);
    let (mut endpoint, handle) = RtcEndpoint::bind(config).await.expect("bind endpoint");
    let addr = endpoint.bound().udp.expect("a UDP socket");

    // A bogus offer is refused with a reason and creates nothing.
    match handle.accept("this is not SDP".to_owned()).await {
        Err(AcceptError::OfferRejected { reason }) => {
            assert!(!reason.is_empty(), "rejection has a reason");
        }
        other => panic!("bogus SDP must be rejected, got {other:?}"),
    }
    assert_eq!(stats(&handle).await.sessions, 0);

    let mut publisher = Publisher::start(&wav);
    let offer = publisher.offer().await;
    assert!(offer.contains("opus/48000"), "aiortc offers Opus:\n{offer}");
    let Accepted {
        session,
        answer_sdp,
    } = handle.accept(offer.clone()).await.expect("offer accepted");
    assert!(answer_sdp.contains("a=ice-lite"), "answer:\n{answer_sdp}");
    assert!(answer_sdp.contains("a=recvonly"), "answer:\n{answer_sdp}");
    assert!(
        answer_sdp.contains(&format!("{} {} typ host", addr.ip(), addr.port())),
        "answer advertises the bound address:\n{answer_sdp}"
    );

    // The limit is one session.
    assert_eq!(
        handle.accept(offer).await,
        Err(AcceptError::TooManySessions { limit: 1 })
    );

    publisher.answer(&answer_sdp);
    match next_event(&mut endpoint, Duration::from_secs(15), "Connected").await {
        RtcEvent::Connected { session: s, peer } => {
            assert_eq!(s, session);
            assert_eq!(peer.ip(), addr.ip(), "peer on loopback");
        }
        other => panic!("expected Connected, got {other:?}"),
    }

    let mut packets = collect(&mut endpoint, session, 100).await;
    assert_contiguous(&packets);

    // Garbage from a stranger is counted and leaves the session untouched.
    let before = stats(&handle).await;
    let sent = send_garbage(addr).await;
    packets.extend(collect(&mut endpoint, session, 60).await);
    assert_contiguous(&packets);
    let after = stats(&handle).await;
    assert_eq!(after.sessions, 1);
    assert_eq!(
        after.unclaimed_datagrams - before.unclaimed_datagrams,
        sent,
        "{sent} garbage datagrams counted: {before:?} -> {after:?}"
    );

    // The audio is the tone: decode, then measure 1 kHz over the last second.
    let mut decoder = opus::Decoder::new(RATE, opus::Channels::Stereo).expect("Opus decoder");
    let mut left = Vec::new();
    let mut pcm = vec![0_f32; 5760 * 2];
    for packet in &packets {
        let frames = decoder
            .decode_float(&packet.payload, &mut pcm, false)
            .expect("valid Opus packet");
        assert_eq!(frames, FRAME_TICKS as usize, "20 ms frames");
        left.extend(pcm.chunks_exact(2).take(frames).map(|f| f[0]));
    }
    let window = &left[left.len() - RATE as usize..];
    let level = analysis::tone_dbfs(window, TONE_HZ, f64::from(RATE));
    eprintln!("decoded 1 kHz level: {level:.2} dBFS");
    assert!(
        (level - TONE_DBFS).abs() <= 2.0,
        "1 kHz at {level:.2} dBFS, expected {TONE_DBFS} ± 2"
    );
    let off_tone = analysis::tone_dbfs(window, 3100.0, f64::from(RATE));
    assert!(
        off_tone < TONE_DBFS - 30.0,
        "3.1 kHz at {off_tone:.2} dBFS: the signal is not a clean tone"
    );

    // The publisher leaves: the session ends within the ICE timeout.
    publisher.close();
    let reason = loop {
        match next_event(&mut endpoint, Duration::from_secs(8), "Closed").await {
            RtcEvent::Closed { session: s, reason } => {
                assert_eq!(s, session);
                break reason;
            }
            RtcEvent::Opus { session: s, .. } => assert_eq!(s, session),
            other => panic!("expected Closed, got {other:?}"),
        }
    };
    assert!(!reason.is_empty());
    eprintln!("session closed: {reason}");
    assert_eq!(stats(&handle).await.sessions, 0);

    endpoint.shutdown().await.expect("clean shutdown");
}

/// Starts a publisher, negotiates through `handle`, and waits for Connected.
async fn connect(endpoint: &mut RtcEndpoint, handle: &RtcHandle, wav: &Path) -> (Publisher, u64) {
    let mut publisher = Publisher::start(wav);
    let offer = publisher.offer().await;
    let accepted = handle.accept(offer).await.expect("offer accepted");
    publisher.answer(&accepted.answer_sdp);
    loop {
        match next_event(endpoint, Duration::from_secs(15), "Connected").await {
            RtcEvent::Connected { session, .. } if session == accepted.session => {
                return (publisher, session);
            }
            // Media of sessions connected earlier keeps flowing meanwhile.
            RtcEvent::Opus { .. } => {}
            other => panic!("expected Connected, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_share_the_socket_and_a_vanished_peer_loses_consent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 4);

    let mut config = RtcConfig::new("127.0.0.1:0".parse().expect("address"));
    config.max_sessions = 2;
    // Above aiortc's consent-check interval (RFC 7675 §5.1: 4 to 6 s).
    config.ice_timeout = Duration::from_secs(7);
    // Longer than the consent timeout, so consent is what ends the session.
    config.media_timeout = Duration::from_secs(30);
    let (mut endpoint, handle) = RtcEndpoint::bind(config).await.expect("bind endpoint");

    let (mut first, a) = connect(&mut endpoint, &handle, &wav).await;
    let (_second, b) = connect(&mut endpoint, &handle, &wav).await;
    assert_ne!(a, b);

    // Both publishers stream through the one socket.
    let mut counts = [0_usize; 2];
    while counts.iter().any(|&n| n < 50) {
        match next_event(&mut endpoint, Duration::from_secs(5), "media of both").await {
            RtcEvent::Opus { session, .. } if session == a => counts[0] += 1,
            RtcEvent::Opus { session, .. } if session == b => counts[1] += 1,
            other => panic!("unexpected event: {other:?}"),
        }
    }

    // The first publisher vanishes: no close_notify, no more STUN.
    first.kill();
    let killed = tokio::time::Instant::now();
    let mut after_kill = 0;
    let reason = loop {
        match next_event(&mut endpoint, Duration::from_secs(10), "Closed").await {
            RtcEvent::Closed { session, reason } => {
                assert_eq!(session, a, "only the vanished session ends: {reason}");
                break reason;
            }
            RtcEvent::Opus { session, .. } if session == b => after_kill += 1,
            RtcEvent::Opus { session, .. } if session == a => {}
            other => panic!("unexpected event: {other:?}"),
        }
    };
    let elapsed = killed.elapsed();
    eprintln!("vanished session closed after {elapsed:?}: {reason}");
    assert!(reason.contains("STUN"), "ended by consent: {reason}");
    // The last check came at most one interval (6 s) before the kill.
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed <= Duration::from_secs(8),
        "consent timeout of 7 s took {elapsed:?} after the kill"
    );
    // The survivor streamed on while the other timed out (20 ms packets).
    assert!(after_kill >= 40, "{after_kill} packets of the survivor");
    assert_eq!(handle.stats().await.map(|s| s.sessions), Some(1));

    endpoint.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_peer_that_stops_sending_rtp_hits_the_media_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("tone.wav");
    write_tone(&wav, 4);

    let mut config = RtcConfig::new("127.0.0.1:0".parse().expect("address"));
    config.media_timeout = Duration::from_secs(2);
    let (mut endpoint, handle) = RtcEndpoint::bind(config).await.expect("bind endpoint");
    let (mut publisher, session) = connect(&mut endpoint, &handle, &wav).await;
    let packets = collect(&mut endpoint, session, 20).await;
    assert_contiguous(&packets);

    publisher.mute();
    let muted = tokio::time::Instant::now();
    let reason = loop {
        match next_event(&mut endpoint, Duration::from_secs(5), "Closed").await {
            RtcEvent::Closed { session: s, reason } => {
                assert_eq!(s, session);
                break reason;
            }
            RtcEvent::Opus { session: s, .. } => assert_eq!(s, session),
            other => panic!("unexpected event: {other:?}"),
        }
    };
    let elapsed = muted.elapsed();
    eprintln!("muted session closed after {elapsed:?}: {reason}");
    assert!(
        reason.contains("RTP"),
        "ended by the media timeout: {reason}"
    );
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed <= Duration::from_secs(4),
        "media timeout of 2 s took {elapsed:?}"
    );
    endpoint.shutdown().await.expect("clean shutdown");
}
