//! RTMP ingest against real publishers: ffmpeg pushes AAC and MP3 over RTMP
//! to the tokio driver on 127.0.0.1, and the events that come out are
//! measured. Misbehaving peers (garbage, a wrong key, a truncated chunk, an
//! absurd chunk size or message length, an unsupported AAC config) run
//! beside a good publisher, which must not notice them.
//!
//! - `aac_mono_44100_publish_delivers_config_and_evenly_spaced_frames`,
//!   `aac_stereo_48000_publish_delivers_config_and_evenly_spaced_frames`,
//!   `mp3_publish_delivers_evenly_spaced_frames`: one 3 s ffmpeg publish
//!   each; checks the command flow, the codec config, frame spacing (1024 or
//!   1152 samples per frame) and total duration.
//! - `bad_peers_end_alone_while_a_good_publisher_continues`: the bad peers
//!   above against one server during a good publish.
//! - `record_ffmpeg_fixture` (ignored): rewrites
//!   `fixtures/rtmp/ffmpeg-aac-publish.bin`, the bytes ffmpeg sends in a
//!   short publish, which the session's split-point tests replay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use onair::ingest::rtmp::amf0::{self, Amf0Value};
use onair::ingest::rtmp::chunk::{ChunkEncoder, Message, message_type};
use onair::ingest::rtmp::handshake::HANDSHAKE_SIZE;
use onair::ingest::rtmp::server::{self, ConnectionEvent, ConnectionId, ServerConfig};
use onair::ingest::rtmp::{AudioCodec, CloseReason, Event, RtmpError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Seconds of audio each publisher sends.
const PUBLISH_SECONDS: u32 = 3;

/// The only stream key the test servers accept.
const GOOD_KEY: &str = "host-a-secret";

/// A running server and the events of all its connections.
struct TestServer {
    addr: SocketAddr,
    events: mpsc::Receiver<ConnectionEvent>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, events) = mpsc::channel(1024);
        let config = ServerConfig {
            read_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(5),
            ..ServerConfig::default()
        };
        let authorize: server::Authorizer = Arc::new(|request| {
            if request.app == "live" && request.key == GOOD_KEY {
                Ok(())
            } else {
                Err(format!("unknown stream key for app {}", request.app))
            }
        });
        let task = tokio::spawn(server::serve(listener, config, authorize, tx));
        Self { addr, events, task }
    }

    fn url(&self, key: &str) -> String {
        format!("rtmp://{}/live/{key}", self.addr)
    }

    /// Collects events until `connections` connections have closed.
    async fn events_until_closed(
        &mut self,
        connections: usize,
    ) -> HashMap<ConnectionId, Connection> {
        let mut seen: HashMap<ConnectionId, Connection> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.values().filter(|c| c.closed().is_some()).count() < connections {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("connections did not close; events so far: {seen:#?}"))
                .expect("server stopped");
            seen.entry(event.connection)
                .or_insert_with(|| Connection {
                    peer: event.peer,
                    events: Vec::new(),
                })
                .events
                .push(event.event);
        }
        seen
    }
}

/// The events of one connection.
#[derive(Debug)]
struct Connection {
    peer: SocketAddr,
    events: Vec<Event>,
}

impl Connection {
    fn closed(&self) -> Option<&CloseReason> {
        match self.events.last() {
            Some(Event::Closed(reason)) => Some(reason),
            _ => None,
        }
    }

    fn key(&self) -> Option<&str> {
        self.events.iter().find_map(|e| match e {
            Event::PublishRequested { key, .. } => Some(key.as_str()),
            _ => None,
        })
    }

    fn error(&self) -> &RtmpError {
        match self.closed() {
            Some(CloseReason::Error(error)) => error,
            other => panic!("expected an error close, got {other:?}: {:#?}", self.events),
        }
    }

    /// `(timestamp_ms, codec)` of every audio frame.
    fn frames(&self) -> Vec<(u32, AudioCodec)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Audio {
                    timestamp_ms,
                    codec,
                    data,
                } => {
                    assert!(!data.is_empty());
                    Some((*timestamp_ms, *codec))
                }
                _ => None,
            })
            .collect()
    }
}

/// Kills the child when dropped, so a failing test leaves no ffmpeg behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    async fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ffmpeg did not exit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Encoder settings of one publisher.
struct Publisher {
    sample_rate: u32,
    channels: u32,
    codec_args: &'static [&'static str],
}

const AAC_MONO_44100: Publisher = Publisher {
    sample_rate: 44_100,
    channels: 1,
    codec_args: &["-c:a", "aac"],
};

/// Starts `ffmpeg -re` publishing a 440 Hz sine to `url`; its stderr goes
/// to `log`.
fn spawn_ffmpeg(
    publisher: &Publisher,
    seconds: u32,
    url: &str,
    log: &std::path::Path,
    realtime: bool,
) -> ChildGuard {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-loglevel", "info"]);
    if realtime {
        command.arg("-re");
    }
    command
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=f=440:r={}", publisher.sample_rate))
        .args([
            "-t",
            &seconds.to_string(),
            "-ac",
            &publisher.channels.to_string(),
        ])
        .args(publisher.codec_args)
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    ChildGuard(
        command
            .spawn()
            .expect("ffmpeg must be installed to run the RTMP tests"),
    )
}

/// Checks one finished publish: command flow, metadata, codec config, frame
/// spacing of `samples_per_frame` and a total of [`PUBLISH_SECONDS`].
fn check_publish(
    connection: &Connection,
    publisher: &Publisher,
    codec: AudioCodec,
    samples_per_frame: u32,
) {
    let events = &connection.events;
    assert!(
        matches!(&events[0], Event::Connected { app } if app == "live"),
        "{events:#?}"
    );
    assert_eq!(connection.key(), Some(GOOD_KEY));
    assert_eq!(connection.closed(), Some(&CloseReason::PeerClosed));
    assert!(events.contains(&Event::Unpublished), "no Unpublished event");
    let metadata = events
        .iter()
        .find_map(|e| match e {
            Event::Metadata(m) => Some(m),
            _ => None,
        })
        .expect("onMetaData");
    assert_eq!(
        metadata.audio_sample_rate(),
        Some(f64::from(publisher.sample_rate))
    );
    if codec == AudioCodec::Aac {
        let configs: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::AacConfig(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(configs.len(), 1, "one AAC config");
        assert_eq!(configs[0].object_type, 2, "AAC-LC");
        assert_eq!(configs[0].sample_rate, publisher.sample_rate);
        assert_eq!(u32::from(configs[0].channels), publisher.channels);
        let config_at = events.iter().position(|e| matches!(e, Event::AacConfig(_)));
        let first_frame = events.iter().position(|e| matches!(e, Event::Audio { .. }));
        assert!(config_at < first_frame, "config before the first frame");
    }

    let frames = connection.frames();
    assert!(
        frames.iter().all(|&(_, c)| c == codec),
        "codec of every frame"
    );
    let step_ms = f64::from(samples_per_frame) * 1000.0 / f64::from(publisher.sample_rate);
    // FLV timestamps are whole milliseconds: each step is the exact frame
    // duration rounded down or up.
    for pair in frames.windows(2) {
        let delta = f64::from(pair[1].0 - pair[0].0);
        assert!(
            (delta - step_ms).abs() < 1.0,
            "frame step {delta} ms, expected {step_ms:.2} ms"
        );
    }
    let first = f64::from(frames[0].0);
    let last = f64::from(frames[frames.len() - 1].0);
    let mean_step = (last - first) / (frames.len() - 1) as f64;
    assert!(
        (mean_step - step_ms).abs() < 0.05,
        "mean frame step {mean_step:.3} ms, expected {step_ms:.3} ms"
    );
    let duration_ms = last - first + step_ms;
    let expected_ms = f64::from(PUBLISH_SECONDS * 1000);
    // The encoder's priming and final partial frame add up to two frames.
    assert!(
        (duration_ms - expected_ms).abs() <= 2.5 * step_ms,
        "{} frames span {duration_ms:.1} ms, expected {expected_ms} ms",
        frames.len()
    );
    println!(
        "{codec:?} {} Hz x{}: {} frames, mean step {mean_step:.3} ms (exact {step_ms:.3}), span {duration_ms:.1} ms",
        publisher.sample_rate,
        publisher.channels,
        frames.len()
    );
}

async fn publish_once(publisher: &Publisher, codec: AudioCodec, samples_per_frame: u32) {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ffmpeg.log");
    let mut ffmpeg = spawn_ffmpeg(
        publisher,
        PUBLISH_SECONDS,
        &server.url(GOOD_KEY),
        &log,
        true,
    );
    let connections = server.events_until_closed(1).await;
    let status = ffmpeg.wait(Duration::from_secs(10)).await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "ffmpeg failed: {stderr}");
    let connection = connections.values().next().unwrap();
    check_publish(connection, publisher, codec, samples_per_frame);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_mono_44100_publish_delivers_config_and_evenly_spaced_frames() {
    publish_once(&AAC_MONO_44100, AudioCodec::Aac, 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aac_stereo_48000_publish_delivers_config_and_evenly_spaced_frames() {
    let publisher = Publisher {
        sample_rate: 48_000,
        channels: 2,
        codec_args: &["-c:a", "aac"],
    };
    publish_once(&publisher, AudioCodec::Aac, 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mp3_publish_delivers_evenly_spaced_frames() {
    let encoders = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .expect("ffmpeg must be installed to run the RTMP tests");
    assert!(
        String::from_utf8_lossy(&encoders.stdout).contains("libmp3lame"),
        "this ffmpeg has no libmp3lame encoder"
    );
    // FLV carries MP3 at 44.1, 22.05 or 11.025 kHz only.
    let publisher = Publisher {
        sample_rate: 44_100,
        channels: 2,
        codec_args: &["-c:a", "libmp3lame", "-b:a", "128k"],
    };
    publish_once(&publisher, AudioCodec::Mp3, 1152).await;
}

/// A raw RTMP client for the misbehaving peers.
struct RawClient {
    stream: TcpStream,
    encoder: ChunkEncoder,
}

impl RawClient {
    /// Connects and completes the simple handshake.
    async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = vec![3u8];
        hello.extend((0..HANDSHAKE_SIZE).map(|i| i as u8));
        stream.write_all(&hello).await.unwrap();
        let mut reply = vec![0; 1 + 2 * HANDSHAKE_SIZE];
        stream.read_exact(&mut reply).await.unwrap();
        // C2 echoes S1.
        stream
            .write_all(&reply[1..1 + HANDSHAKE_SIZE])
            .await
            .unwrap();
        Self {
            stream,
            encoder: ChunkEncoder::new(),
        }
    }

    fn peer(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    async fn send(&mut self, csid: u32, type_id: u8, stream_id: u32, payload: Vec<u8>) {
        let message = Message {
            chunk_stream_id: csid,
            timestamp: 0,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        let mut bytes = Vec::new();
        self.encoder.encode(&message, &mut bytes);
        self.stream.write_all(&bytes).await.unwrap();
    }

    async fn command(&mut self, stream_id: u32, values: &[Amf0Value]) {
        self.send(
            3,
            message_type::COMMAND_AMF0,
            stream_id,
            amf0::encode_all(values),
        )
        .await;
    }

    /// connect, createStream and publish with `key`, without waiting for
    /// answers (the server reads them in order).
    async fn publish(&mut self, key: &str) {
        let s = Amf0Value::string;
        let app = Amf0Value::object([("app", s("live"))]);
        self.command(0, &[s("connect"), Amf0Value::Number(1.0), app])
            .await;
        self.command(
            0,
            &[s("createStream"), Amf0Value::Number(2.0), Amf0Value::Null],
        )
        .await;
        let publish = [
            s("publish"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            s(key),
            s("live"),
        ];
        self.command(1, &publish).await;
    }

    /// Waits until the server closes the connection; fails after 5 s.
    async fn expect_closed_by_server(mut self) {
        let mut sink = vec![0; 8192];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "server kept the connection open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_end_alone_while_a_good_publisher_continues() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good_log = dir.path().join("good.log");
    let mut good = spawn_ffmpeg(
        &AAC_MONO_44100,
        PUBLISH_SECONDS,
        &server.url(GOOD_KEY),
        &good_log,
        true,
    );
    // Let the good publisher get going before the others arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let wrong_log = dir.path().join("wrong.log");
    let mut wrong = spawn_ffmpeg(
        &AAC_MONO_44100,
        PUBLISH_SECONDS,
        &server.url("guessed-key"),
        &wrong_log,
        true,
    );

    // An HTTP request on the RTMP port.
    let mut garbage = TcpStream::connect(server.addr).await.unwrap();
    let garbage_peer = garbage.local_addr().unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: onair\r\n\r\n")
        .await
        .unwrap();
    RawClient {
        stream: garbage,
        encoder: ChunkEncoder::new(),
    }
    .expect_closed_by_server()
    .await;

    // Set Chunk Size to 2^31 - 1 (§5.4.1 allows it; onair bounds it).
    let mut absurd_chunk = RawClient::connect(server.addr).await;
    let absurd_chunk_peer = absurd_chunk.peer();
    absurd_chunk
        .send(
            2,
            message_type::SET_CHUNK_SIZE,
            0,
            0x7FFF_FFFFu32.to_be_bytes().to_vec(),
        )
        .await;
    absurd_chunk.expect_closed_by_server().await;

    // A type 0 header announcing a 16 MiB - 1 audio message.
    let mut oversize = RawClient::connect(server.addr).await;
    let oversize_peer = oversize.peer();
    let header = [
        0x04,
        0,
        0,
        0,
        0xff,
        0xff,
        0xff,
        message_type::AUDIO,
        1,
        0,
        0,
        0,
    ];
    oversize.stream.write_all(&header).await.unwrap();
    oversize.expect_closed_by_server().await;

    // Half a chunk, then the client hangs up.
    let mut truncated = RawClient::connect(server.addr).await;
    let truncated_peer = truncated.peer();
    let header = [
        0x03,
        0,
        0,
        0,
        0,
        0,
        100,
        message_type::COMMAND_AMF0,
        0,
        0,
        0,
        0,
        0x02,
    ];
    truncated.stream.write_all(&header).await.unwrap();
    truncated.stream.shutdown().await.unwrap();
    truncated.expect_closed_by_server().await;

    // A valid publish whose AAC sequence header is AAC Main, 44.1 kHz stereo.
    let mut aac_main = RawClient::connect(server.addr).await;
    let aac_main_peer = aac_main.peer();
    aac_main.publish(GOOD_KEY).await;
    aac_main
        .send(4, message_type::AUDIO, 1, vec![0xAF, 0x00, 0x0A, 0x10])
        .await;
    aac_main.expect_closed_by_server().await;

    let wrong_status = wrong.wait(Duration::from_secs(10)).await;
    let good_status = good.wait(Duration::from_secs(10)).await;
    let connections = server.events_until_closed(7).await;
    let good_stderr = std::fs::read_to_string(&good_log).unwrap();
    assert!(
        good_status.success(),
        "good publisher failed: {good_stderr}"
    );
    let wrong_stderr = std::fs::read_to_string(&wrong_log).unwrap();
    assert!(!wrong_status.success(), "wrong key was accepted");
    assert!(
        wrong_stderr.contains("unknown stream key"),
        "ffmpeg was not told why: {wrong_stderr}"
    );

    let by_peer = |peer: SocketAddr| {
        connections
            .values()
            .find(|c| c.peer == peer)
            .unwrap_or_else(|| panic!("no events from {peer}"))
    };
    let by_key = |key: &str| {
        connections
            .values()
            .find(|c| c.key() == Some(key) && c.peer.port() != aac_main_peer.port())
            .unwrap_or_else(|| panic!("no publish with key {key}"))
    };

    check_publish(by_key(GOOD_KEY), &AAC_MONO_44100, AudioCodec::Aac, 1024);
    assert_eq!(
        by_key("guessed-key").closed(),
        Some(&CloseReason::Rejected(
            "unknown stream key for app live".into()
        ))
    );
    assert!(by_key("guessed-key").frames().is_empty());

    let garbage = by_peer(garbage_peer).error();
    assert!(matches!(garbage, RtmpError::Malformed { .. }), "{garbage}");
    assert!(
        garbage.to_string().contains("not an RTMP client"),
        "{garbage}"
    );
    assert_eq!(garbage.context().offset, Some(0));

    let absurd = by_peer(absurd_chunk_peer).error();
    assert!(matches!(absurd, RtmpError::Limit { .. }), "{absurd}");
    assert_eq!(
        absurd.context().message_type,
        Some(message_type::SET_CHUNK_SIZE)
    );
    // The chunk starts right after C0, C1 and C2.
    assert_eq!(absurd.context().offset, Some(1 + 2 * HANDSHAKE_SIZE as u64));

    let oversize = by_peer(oversize_peer).error();
    assert!(matches!(oversize, RtmpError::Limit { .. }), "{oversize}");
    assert!(oversize.to_string().contains("16777215"), "{oversize}");

    let truncated = by_peer(truncated_peer).error();
    assert!(
        matches!(truncated, RtmpError::Malformed { .. }),
        "{truncated}"
    );

    let aac_main = by_peer(aac_main_peer);
    let error = aac_main.error();
    assert!(matches!(error, RtmpError::Unsupported { .. }), "{error}");
    assert!(error.to_string().contains("object type 1"), "{error}");
    assert_eq!(error.context().message_type, Some(message_type::AUDIO));
    assert!(aac_main.events.contains(&Event::Unpublished));
}

/// Rewrites `fixtures/rtmp/ffmpeg-aac-publish.bin`: everything ffmpeg sends
/// in a 1.5 s AAC publish, captured by a proxy in front of the server. Run
/// with `cargo test --test rtmp -- --ignored record_ffmpeg_fixture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rewrites a fixture"]
async fn record_ffmpeg_fixture() {
    let mut server = TestServer::start().await;
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("rtmp://{}/live/{GOOD_KEY}", proxy.local_addr().unwrap());
    let server_addr = server.addr;
    let capture = tokio::spawn(async move {
        let (mut client, _) = proxy.accept().await.unwrap();
        let mut upstream = TcpStream::connect(server_addr).await.unwrap();
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let to_client = tokio::io::copy(&mut upstream_read, &mut client_write);
        let to_server = async {
            let mut captured = Vec::new();
            let mut buffer = vec![0; 8192];
            loop {
                let n = client_read.read(&mut buffer).await.unwrap();
                if n == 0 {
                    upstream_write.shutdown().await.unwrap();
                    return captured;
                }
                captured.extend_from_slice(&buffer[..n]);
                upstream_write.write_all(&buffer[..n]).await.unwrap();
            }
        };
        let (captured, _) = tokio::join!(to_server, to_client);
        captured
    });
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ffmpeg.log");
    let publisher = Publisher {
        sample_rate: 44_100,
        channels: 1,
        codec_args: &["-c:a", "aac", "-b:a", "32k"],
    };
    let mut ffmpeg = spawn_ffmpeg(&publisher, 2, &proxy_url, &log, false);
    let status = ffmpeg.wait(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let captured = capture.await.unwrap();
    let connections = server.events_until_closed(1).await;
    check_publish_shape(connections.values().next().unwrap());
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/rtmp/ffmpeg-aac-publish.bin");
    std::fs::write(&path, &captured).unwrap();
    println!("wrote {} bytes to {}", captured.len(), path.display());
}

fn check_publish_shape(connection: &Connection) {
    assert_eq!(connection.closed(), Some(&CloseReason::PeerClosed));
    assert!(connection.frames().len() > 50);
}

/// One client address holds at most `max_per_address` connections: one more
/// from it is closed at once, another address still gets in, and a freed
/// slot can be taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_connections() {
    use tokio::io::AsyncReadExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, _events) = mpsc::channel(1024);
    let config = ServerConfig {
        max_per_address: 2,
        read_timeout: Duration::from_secs(30),
        setup_timeout: Duration::from_secs(30),
        ..ServerConfig::default()
    };
    let authorize: server::Authorizer = Arc::new(|_| Ok(()));
    let task = tokio::spawn(server::serve(listener, config, authorize, tx));
    let connect_from = |source: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source"))
            .expect("bind the source address");
        socket.connect(addr).await.expect("connect")
    };
    // Open (silent but within its setup time) or closed by the server.
    async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
    let mut first = connect_from("127.0.0.1").await;
    let mut second = connect_from("127.0.0.1").await;
    let mut third = connect_from("127.0.0.1").await;
    assert!(
        closed(&mut third).await,
        "a third connection from one address"
    );
    let mut elsewhere = connect_from("127.0.0.2").await;
    assert!(!closed(&mut elsewhere).await, "another address is refused");
    assert!(!closed(&mut first).await && !closed(&mut second).await);
    drop(first);
    // The server notices the close on its next read; then the slot is free.
    let mut again = None;
    for _ in 0..50 {
        let mut stream = connect_from("127.0.0.1").await;
        if !closed(&mut stream).await {
            again = Some(stream);
            break;
        }
    }
    assert!(again.is_some(), "the freed slot was not given again");
    task.abort();
}
