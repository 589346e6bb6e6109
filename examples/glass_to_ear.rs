//! Glass-to-ear benchmark of a live broadcast: how long after a host's
//! sound is sent over RTMP can a listener fetch it from the origin?
//!
//! The program starts `onair live` with an RTMP ingest and an in-process
//! origin, then plays both ends itself:
//! - a publisher: a minimal RTMP client (simple handshake, `connect`,
//!   `createStream`, `publish`) that sends AAC-LC in FLV audio tags, paced in
//!   real time. Its signal is silence with a 10 ms burst of 1 kHz at -6 dBFS
//!   every `--period-ms`; for each burst it notes when the AAC frame holding
//!   the burst's first sample was written to the socket;
//! - a listener: an LL-HLS client of the Opus rendition (blocking playlist
//!   reload for the next part, then GET of the part) that decodes every part
//!   and notes, for each burst onset it hears, when the part holding it had
//!   finished downloading.
//!
//! Latency = served − written, per burst; the report gives p50, p99 and max,
//! and splits each burst's path with the program dates of the playlist
//! (`EXT-X-PROGRAM-DATE-TIME`): frame accumulation and AAC encoder delay
//! before the write, the jitter buffer's placement of the burst on the
//! program timeline, the wait for the part holding it to end, and the
//! packaging and serving of that part.
//!
//! ```text
//! cargo build --release --bin onair --example glass_to_ear
//! target/release/examples/glass_to_ear --seconds 60 --jitter-ms 200
//! ```
//!
//! Clock assumption: the packager dates program time 0 with one wall-clock
//! reading taken just before its program clock starts, so the split (not the
//! end-to-end latency, which uses one monotonic clock) is off by that gap,
//! a few milliseconds.

// The LL-HLS client of `onair loadtest` (outside the library); this
// benchmark uses its playlist walking only.
#[allow(dead_code)]
#[path = "../src/tools/loadtest.rs"]
mod loadtest;

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use loadtest::{blocking_url, init_uri, listed_parts, next_part, quantile};
use mp4_atom::{Decode as _, Moof, Moov};
use onair::encode::{AacConfig, AacEncoder, AudioEncoder as _, CodecInfo};
use onair::hls::{MediaPlaylist, PartId};
use onair::ingest::rtmp::amf0::{self, Amf0Value};
use onair::ingest::rtmp::chunk::{
    ChunkDecoder, ChunkEncoder, ChunkLimits, Decoded, Message, message_type,
};
use onair::ingest::rtmp::handshake::{HANDSHAKE_SIZE, RTMP_VERSION};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use url::Url;

/// Program and codec sample rate.
const RATE: u32 = 48_000;
/// Samples per AAC-LC frame (ISO/IEC 14496-3): the publisher's pacing unit.
const AAC_FRAME: usize = 1024;
/// Stream name of the broadcast under test.
const STREAM: &str = "bench";
/// Host name and stream key the publisher uses.
const HOST: &str = "host";
const SECRET: &str = "glass-to-ear";
/// Peak of the burst: -6 dBFS.
const BURST_AMPLITUDE: f32 = 0.5;
const BURST_HZ: f32 = 1_000.0;
/// A decoded sample above this (-26 dBFS) is sound, 20 dB under the burst:
/// the program is otherwise digital silence, and Opus pre-echo ahead of a
/// -6 dBFS onset stays well below it.
const ONSET_THRESHOLD: f32 = 0.05;
/// The issue's target: p99 ≤ one part (320 ms) + 100 ms.
const TARGET_P99_MS: f64 = 420.0;

#[derive(Parser, Debug)]
#[command(about = "Glass-to-ear latency of `onair live` with an RTMP host")]
struct Args {
    /// The onair binary (default: $ONAIR, else target/release/onair).
    #[arg(long, env = "ONAIR", default_value = "target/release/onair")]
    onair: PathBuf,
    /// Seconds of bursts to send.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// `onair live --jitter-ms`: the host's jitter buffer target.
    #[arg(long, default_value_t = 200)]
    jitter_ms: u32,
    /// Time between burst onsets, in ms.
    #[arg(long, default_value_t = 1_500)]
    period_ms: u64,
    /// Burst length, in ms.
    #[arg(long, default_value_t = 10)]
    burst_ms: u64,
    /// Silence sent before the first burst, in ms, so that the host's jitter
    /// buffer has settled.
    #[arg(long, default_value_t = 4_000)]
    lead_ms: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.period_ms > 4 * args.burst_ms && args.burst_ms > 0,
        "--period-ms must be well above --burst-ms"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&args))?;
    report.print(&args);
    Ok(())
}

async fn run(args: &Args) -> Result<Report> {
    let store = tempfile::tempdir()?;
    let onair = Onair::start(args, store.path())?;
    let clock = WallClock::now();
    let signal = Signal {
        lead: ms_to_samples(args.lead_ms),
        period: ms_to_samples(args.period_ms),
        length: ms_to_samples(args.burst_ms),
    };
    let total = signal.lead + ms_to_samples(args.seconds * 1_000);
    let playlist = Url::parse(&format!("http://{}/{STREAM}/opus/live.m3u8", onair.http))?;
    let listener = Listener::new(playlist, ms_to_samples(args.period_ms / 2));
    let heard = listener.heard.clone();
    let listening = tokio::spawn(listener.run());
    let publisher = Publisher::connect(&onair.rtmp, SECRET).await?;
    let bursts = publisher.publish(signal, total).await?;
    // The last burst needs the jitter buffer, a part and the serving delay
    // to come out: a second is plenty (the report shows how much is used).
    tokio::time::sleep(Duration::from_secs(2)).await;
    listening.abort();
    if let Ok(Err(error)) = listening.await {
        bail!("the listener failed: {error:#}");
    }
    let heard = std::mem::take(&mut *heard.lock().unwrap_or_else(PoisonError::into_inner));
    drop(onair);
    Ok(Report::new(bursts, heard, clock))
}

/// A monotonic clock with the wall-clock time of its origin, to compare
/// instants with the playlist's program dates.
#[derive(Debug, Clone, Copy)]
struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// Milliseconds from the origin to `instant`.
    fn ms(&self, instant: Instant) -> f64 {
        instant
            .saturating_duration_since(self.instant)
            .as_secs_f64()
            * 1e3
    }

    /// Milliseconds from the origin to a wall-clock date (negative before).
    fn ms_of_date(&self, date: SystemTime) -> f64 {
        match date.duration_since(self.system) {
            Ok(after) => after.as_secs_f64() * 1e3,
            Err(before) => -before.duration().as_secs_f64() * 1e3,
        }
    }
}

fn ms_to_samples(ms: u64) -> u64 {
    ms * u64::from(RATE) / 1_000
}

fn samples_to_ms(samples: i64) -> f64 {
    samples as f64 * 1e3 / f64::from(RATE)
}

// ---------------------------------------------------------------------------
// onair under test
// ---------------------------------------------------------------------------

/// A running `onair live`, killed when dropped.
struct Onair {
    child: Child,
    /// `HOST:PORT` of the RTMP ingest.
    rtmp: String,
    /// `HOST:PORT` of the in-process origin.
    http: String,
}

impl Onair {
    /// Starts the broadcast on free ports and reads the addresses it logs.
    fn start(args: &Args, store: &std::path::Path) -> Result<Self> {
        let mut child = Command::new(&args.onair)
            .args(["live", "--rtmp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--store")
            .arg(store)
            .args(["--stream", STREAM, "--window", "30"])
            .args(["--key", &format!("{HOST}={SECRET}")])
            .args(["--jitter-ms", &args.jitter_ms.to_string()])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {:?} (build it first)", args.onair))?;
        let stderr = child.stderr.take().context("onair stderr")?;
        // Wrapped at once so that an early return still kills the child.
        let mut onair = Self {
            child,
            rtmp: String::new(),
            http: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining the log so that onair never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if std::env::var_os("GLASS_TO_EAR_LOG").is_some() {
                    eprintln!("onair: {line}");
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut log = Vec::new();
        while onair.rtmp.is_empty() || onair.http.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(wait) else {
                bail!("onair did not log its addresses; log:\n{}", log.join("\n"));
            };
            if let Some(addr) = between(&line, "RTMP ingest: rtmp://", "/") {
                onair.rtmp = addr.to_owned();
            }
            if let Some(addr) = between(&line, "origin listening on http://", "/") {
                onair.http = addr.to_owned();
            }
            log.push(line);
        }
        Ok(onair)
    }
}

impl Drop for Onair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of `line` between `start` and the next `end`.
fn between<'a>(line: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &line[line.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}

/// `line` without terminal colour sequences (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The signal
// ---------------------------------------------------------------------------

/// Silence with a burst of 1 kHz every `period` samples after `lead`.
#[derive(Debug, Clone, Copy)]
struct Signal {
    lead: u64,
    period: u64,
    length: u64,
}

impl Signal {
    /// The sample at program sample `t` (the same on both channels).
    fn sample(&self, t: u64) -> f32 {
        let Some(since) = t.checked_sub(self.lead) else {
            return 0.0;
        };
        let phase = since % self.period;
        if phase >= self.length {
            return 0.0;
        }
        // Starts at full amplitude (a sine from its peak): a sharp onset.
        let seconds = phase as f32 / RATE as f32;
        BURST_AMPLITUDE * (std::f32::consts::TAU * BURST_HZ * seconds).cos()
    }

    /// The burst onsets in `[from, to)`.
    fn onsets(&self, from: u64, to: u64) -> impl Iterator<Item = u64> {
        let first = from.saturating_sub(self.lead).div_ceil(self.period);
        (first..)
            .map(move |k| self.lead + k * self.period)
            .take_while(move |&t| t < to)
    }
}

// ---------------------------------------------------------------------------
// RTMP publisher (RTMP 1.0, Adobe, December 2012)
// ---------------------------------------------------------------------------

/// Chunk stream ids, as ffmpeg assigns them: protocol control must use 2
/// (§5.4); commands, audio and stream commands use 3, 4 and 8 by convention.
mod csid {
    pub const CONTROL: u32 = 2;
    pub const COMMAND: u32 = 3;
    pub const AUDIO: u32 = 4;
    pub const STREAM: u32 = 8;
}

/// The chunk size we send with. A stereo AAC frame at 128 kb/s is under
/// 1 KiB, so each audio message is a single chunk.
const CHUNK_SIZE: u32 = 4096;

/// FLV AUDIODATA header byte for AAC (FLV 10.1 E.4.2.1): SoundFormat 10
/// (AAC), SoundRate 3 (the value the spec fixes for AAC), SoundSize 1
/// (16-bit), SoundType 1 (stereo).
const FLV_AAC_STEREO: u8 = 0xAF;
/// AACPacketType (FLV 10.1 E.4.2.2): the AudioSpecificConfig, then raw frames.
const AAC_SEQUENCE_HEADER: u8 = 0;
const AAC_RAW: u8 = 1;

/// One burst as sent: when its onset was "captured" (the real-time instant
/// the signal reached it) and when the AAC frame holding it was written to
/// the socket.
#[derive(Debug, Clone, Copy)]
struct Sent {
    captured: Instant,
    written: Instant,
}

/// An RTMP connection that has been accepted for publishing.
struct Publisher {
    writer: OwnedWriteHalf,
    encoder: ChunkEncoder,
    stream_id: u32,
}

impl Publisher {
    /// Connects to `addr` and publishes to `live/{key}`: handshake (§5.2),
    /// Set Chunk Size (§5.4.1), `connect` (§7.2.1.1), `createStream`
    /// (§7.2.1.3), `publish` (§7.2.2.6), each command awaited.
    async fn connect(addr: &str, key: &str) -> Result<Self> {
        let socket = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to rtmp://{addr}"))?;
        // Each audio message should leave at once, as an encoder's would.
        socket.set_nodelay(true)?;
        let (mut reader, mut writer) = socket.into_split();
        handshake(&mut reader, &mut writer).await?;
        let mut messages = MessageReader::new(reader);
        let mut publisher = Self {
            writer,
            encoder: ChunkEncoder::new(),
            stream_id: 0,
        };
        publisher
            .send(
                csid::CONTROL,
                message_type::SET_CHUNK_SIZE,
                0,
                0,
                CHUNK_SIZE.to_be_bytes().to_vec(),
            )
            .await?;
        publisher.encoder.set_chunk_size(CHUNK_SIZE);

        let connect = Amf0Value::object([
            ("app", Amf0Value::string("live")),
            ("type", Amf0Value::string("nonprivate")),
            (
                "flashVer",
                Amf0Value::string("FMLE/3.0 (compatible; onair)"),
            ),
            ("tcUrl", Amf0Value::string(format!("rtmp://{addr}/live"))),
        ]);
        publisher
            .command(
                0,
                &[
                    Amf0Value::string("connect"),
                    Amf0Value::Number(1.0),
                    connect,
                ],
            )
            .await?;
        let reply = messages.result(1.0).await?;
        ensure!(
            status_code(&reply) == Some("NetConnection.Connect.Success"),
            "connect refused: {reply:?}"
        );

        let create = [
            Amf0Value::string("createStream"),
            Amf0Value::Number(2.0),
            Amf0Value::Null,
        ];
        publisher.command(0, &create).await?;
        let reply = messages.result(2.0).await?;
        let stream_id = reply.get(3).and_then(Amf0Value::as_number);
        publisher.stream_id = stream_id
            .filter(|id| *id >= 1.0 && *id <= f64::from(u32::MAX))
            .ok_or_else(|| anyhow!("createStream result without a stream id: {reply:?}"))?
            as u32;

        // The transaction id of publish is 0: it is answered by onStatus.
        let publish = [
            Amf0Value::string("publish"),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
            Amf0Value::string(key),
            Amf0Value::string("live"),
        ];
        publisher.command(publisher.stream_id, &publish).await?;
        let status = messages.on_status().await?;
        ensure!(
            status_code(&status) == Some("NetStream.Publish.Start"),
            "publish refused: {status:?}"
        );
        // What the server sends from now on (acknowledgements, pings) needs
        // no answer from a publisher; it is read so that it never blocks.
        tokio::spawn(messages.drain());
        Ok(publisher)
    }

    /// Sends `signal` up to program sample `total`, paced in real time:
    /// each AAC frame's input is pushed to the encoder once the wall clock
    /// has reached its last sample, and the frames the encoder returns are
    /// written at once. Returns every burst sent.
    async fn publish(mut self, signal: Signal, total: u64) -> Result<Vec<Sent>> {
        let mut encoder = AacEncoder::new(&AacConfig { bitrate: 128_000 })?;
        let CodecInfo::Aac {
            audio_specific_config,
            ..
        } = encoder.info()
        else {
            bail!("the AAC encoder describes itself as another codec");
        };
        let delay = u64::from(encoder.delay());
        self.audio(0, AAC_SEQUENCE_HEADER, &audio_specific_config)
            .await?;
        // Program time 0 is now: the signal is captured from here on.
        let start = tokio::time::Instant::now();
        let at = |samples: u64| start + Duration::from_secs_f64(samples as f64 / f64::from(RATE));
        let mut sent = Vec::new();
        let mut pending: Vec<(u64, Instant)> = Vec::new();
        let mut pcm = vec![0f32; AAC_FRAME * 2];
        let mut packets = Vec::new();
        let mut t = 0u64;
        while t < total {
            let end = t + AAC_FRAME as u64;
            tokio::time::sleep_until(at(end)).await;
            for (i, frame) in pcm.chunks_exact_mut(2).enumerate() {
                frame.fill(signal.sample(t + i as u64));
            }
            pending.extend(signal.onsets(t, end).map(|s| (s, at(s).into_std())));
            encoder.push(&pcm, &mut packets)?;
            for packet in packets.drain(..) {
                // RTMP timestamps are milliseconds (§5.3.1.2) on the AAC
                // media timeline, which starts `delay` before program time.
                let media = packet.media_time.samples();
                let ms = media * 1_000 / u64::from(RATE);
                self.audio(u32::try_from(ms)?, AAC_RAW, &packet.data)
                    .await?;
                let written = Instant::now();
                // Program sample s is at media time s + delay.
                let covers = media..media + u64::from(packet.duration);
                pending.retain(|&(onset, captured)| {
                    let inside = covers.contains(&(onset + delay));
                    if inside {
                        sent.push(Sent { captured, written });
                    }
                    !inside
                });
            }
            t = end;
        }
        Ok(sent)
    }

    /// Sends an FLV AAC audio tag (§7.1.4 audio message).
    async fn audio(&mut self, timestamp: u32, packet_type: u8, data: &[u8]) -> Result<()> {
        let mut payload = Vec::with_capacity(2 + data.len());
        payload.extend_from_slice(&[FLV_AAC_STEREO, packet_type]);
        payload.extend_from_slice(data);
        self.send(
            csid::AUDIO,
            message_type::AUDIO,
            self.stream_id,
            timestamp,
            payload,
        )
        .await
    }

    /// Sends an AMF0 command message (§7.1.1): NetConnection commands on
    /// message stream 0, NetStream commands on their stream.
    async fn command(&mut self, stream_id: u32, values: &[Amf0Value]) -> Result<()> {
        let chunk_stream = if stream_id == 0 {
            csid::COMMAND
        } else {
            csid::STREAM
        };
        let payload = amf0::encode_all(values);
        self.send(
            chunk_stream,
            message_type::COMMAND_AMF0,
            stream_id,
            0,
            payload,
        )
        .await
    }

    async fn send(
        &mut self,
        chunk_stream_id: u32,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: Vec<u8>,
    ) -> Result<()> {
        let message = Message {
            chunk_stream_id,
            timestamp,
            type_id,
            stream_id,
            payload: Bytes::from(payload),
        };
        let mut out = Vec::new();
        self.encoder.encode(&message, &mut out);
        self.writer.write_all(&out).await?;
        Ok(())
    }
}

/// The client side of the simple handshake (§5.2): C0 and C1, then S0, S1
/// and S2, then C2, the echo of S1 (§5.2.4).
async fn handshake(reader: &mut OwnedReadHalf, writer: &mut OwnedWriteHalf) -> Result<()> {
    let mut c0c1 = vec![0u8; 1 + HANDSHAKE_SIZE];
    c0c1[0] = RTMP_VERSION;
    // C1 (§5.2.3): time (0 is allowed), four zero bytes, then filler that
    // only has to look random; a linear congruential sequence will do.
    let mut state = 0x2545_f491_u32;
    for byte in &mut c0c1[1 + 8..] {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *byte = (state >> 24) as u8;
    }
    writer.write_all(&c0c1).await?;
    let mut s0s1s2 = vec![0u8; 1 + 2 * HANDSHAKE_SIZE];
    reader
        .read_exact(&mut s0s1s2)
        .await
        .context("the server closed during the handshake")?;
    ensure!(
        s0s1s2[0] == RTMP_VERSION,
        "server answered RTMP version {}",
        s0s1s2[0]
    );
    writer.write_all(&s0s1s2[1..1 + HANDSHAKE_SIZE]).await?;
    Ok(())
}

/// Reassembles the server's messages, obeying its Set Chunk Size.
struct MessageReader {
    reader: OwnedReadHalf,
    decoder: ChunkDecoder,
    buffer: Vec<u8>,
}

impl MessageReader {
    fn new(reader: OwnedReadHalf) -> Self {
        Self {
            reader,
            decoder: ChunkDecoder::new(ChunkLimits::default(), None),
            buffer: Vec::new(),
        }
    }

    /// The next complete message.
    async fn next(&mut self) -> Result<Message> {
        loop {
            while let Some((used, decoded)) = self.decoder.decode(&self.buffer)? {
                self.buffer.drain(..used);
                if let Decoded::Message(message) = decoded {
                    if message.type_id == message_type::SET_CHUNK_SIZE {
                        // §5.4.1: 31 bits, big-endian; applies to what follows.
                        let size: [u8; 4] = message.payload[..]
                            .try_into()
                            .context("Set Chunk Size of the wrong length")?;
                        self.decoder.set_chunk_size(u32::from_be_bytes(size))?;
                    }
                    return Ok(message);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.reader.read(&mut chunk).await?;
            ensure!(n > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next AMF0 command (§7.1.1), as its values.
    async fn next_command(&mut self) -> Result<Vec<Amf0Value>> {
        loop {
            let message = self.next().await?;
            if message.type_id == message_type::COMMAND_AMF0 {
                return Ok(amf0::decode_all(&message.payload)?);
            }
        }
    }

    /// The `_result` of transaction `transaction` (§7.2.1.1): an `_error`
    /// for it is a failure.
    async fn result(&mut self, transaction: f64) -> Result<Vec<Amf0Value>> {
        loop {
            let values = self.next_command().await?;
            if values.get(1).and_then(Amf0Value::as_number) != Some(transaction) {
                continue;
            }
            match values.first().and_then(Amf0Value::as_str) {
                Some("_result") => return Ok(values),
                Some("_error") => bail!("transaction {transaction} failed: {values:?}"),
                _ => {}
            }
        }
    }

    /// The next `onStatus` (§7.2.2).
    async fn on_status(&mut self) -> Result<Vec<Amf0Value>> {
        loop {
            let values = self.next_command().await?;
            if values.first().and_then(Amf0Value::as_str) == Some("onStatus") {
                return Ok(values);
            }
        }
    }

    async fn drain(mut self) {
        while self.next().await.is_ok() {}
    }
}

/// The `code` of the info object a `_result` or `onStatus` carries last.
fn status_code(values: &[Amf0Value]) -> Option<&str> {
    values.last()?.get("code")?.as_str()
}

// ---------------------------------------------------------------------------
// LL-HLS listener
// ---------------------------------------------------------------------------

/// A burst onset heard in the Opus rendition.
#[derive(Debug, Clone, Copy)]
struct Heard {
    /// When the part holding it had been downloaded.
    served: Instant,
    /// Its program date: the part's end date minus the samples after it.
    date: SystemTime,
    /// How long after the onset its part ended, in program samples.
    to_part_end: u64,
    /// The part's end date.
    part_end: SystemTime,
}

/// Follows the Opus rendition part by part, like an LL-HLS player (RFC
/// 8216bis-16 6.2.5.2, 6.3.2), decoding every part.
struct Listener {
    client: Client<HttpConnector, Empty<Bytes>>,
    playlist: Url,
    heard: Arc<Mutex<Vec<Heard>>>,
    /// Minimum distance between two onsets, in samples: a burst is one onset.
    refractory: u64,
}

/// An Opus track as the init segment describes it.
struct OpusTrack {
    /// `dOps` PreSkip: media time = program time + pre-skip.
    pre_skip: u64,
}

/// The decoding side of the listener.
struct Ear {
    decoder: opus::Decoder,
    pcm: Vec<f32>,
    /// Program sample of the last onset heard.
    last_onset: Option<u64>,
    /// Packets decoded so far: the first one only primes the decoder (it
    /// starts mid-stream).
    packets: u64,
}

impl Listener {
    fn new(playlist: Url, refractory: u64) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            playlist,
            heard: Arc::default(),
            refractory,
        }
    }

    async fn get(&self, url: &Url) -> Result<Option<Bytes>> {
        let response = self.client.get(url.as_str().parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        ensure!(status.is_success(), "GET {url}: {status}");
        Ok(Some(body))
    }

    async fn get_playlist(&self, url: &Url) -> Result<Option<MediaPlaylist>> {
        let Some(body) = self.get(url).await? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&body).context("playlist is not UTF-8")?;
        Ok(Some(MediaPlaylist::parse(text)?))
    }

    async fn run(self) -> Result<()> {
        // The rendition exists once its first part is out.
        let mut playlist = loop {
            if let Some(p) = self.get_playlist(&self.playlist).await?
                && !listed_parts(&p).is_empty()
            {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let init = init_uri(&playlist).context("no EXT-X-MAP")?;
        let init = self
            .get(&self.playlist.join(init)?)
            .await?
            .context("init segment 404")?;
        let track = parse_init(&init)?;
        let mut ear = Ear {
            decoder: opus::Decoder::new(RATE, opus::Channels::Stereo)?,
            pcm: vec![0.0; 5_760 * 2],
            last_onset: None,
            packets: 0,
        };
        // Like a player, start at the newest part and take every one after.
        let mut last: Option<PartId> = listed_parts(&playlist).last().map(|p| p.id);
        if let Some(newest) = listed_parts(&playlist).pop() {
            self.take_part(&newest, &track, &mut ear).await?;
        }
        loop {
            let url = blocking_url(&self.playlist, next_part(&playlist));
            let Some(next) = self.get_playlist(&url).await? else {
                bail!("blocking reload {url}: 404");
            };
            playlist = next;
            for part in listed_parts(&playlist) {
                if last.is_some_and(|l| part.id <= l) {
                    continue;
                }
                self.take_part(&part, &track, &mut ear).await?;
                last = Some(part.id);
            }
        }
    }

    /// Downloads one part, notes when it was all there, and listens to it.
    async fn take_part(
        &self,
        part: &loadtest::ListedPart,
        track: &OpusTrack,
        ear: &mut Ear,
    ) -> Result<()> {
        let url = self.playlist.join(&part.uri)?;
        let body = self
            .get(&url)
            .await?
            .with_context(|| format!("listed part {url} answered 404"))?;
        let served = Instant::now();
        let fragment = parse_part(&body)?;
        let part_end_media = fragment.base + fragment.samples.iter().map(|s| s.1).sum::<u64>();
        let mut media = fragment.base;
        for (data, duration) in &fragment.samples {
            if let Some(offset) = ear.listen(data, media, track, self.refractory)? {
                let onset_media = media + offset;
                let to_part_end = part_end_media - onset_media;
                if let Some(part_end) = part.completed_at {
                    let part_end = SystemTime::from(part_end);
                    let date =
                        part_end - Duration::from_secs_f64(to_part_end as f64 / f64::from(RATE));
                    self.heard
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Heard {
                            served,
                            date,
                            to_part_end,
                            part_end,
                        });
                }
            }
            media += duration;
        }
        Ok(())
    }
}

impl Ear {
    /// Decodes one Opus packet at `media` time; returns the offset (in
    /// samples) of a new onset in it, if any.
    fn listen(
        &mut self,
        packet: &[u8],
        media: u64,
        track: &OpusTrack,
        refractory: u64,
    ) -> Result<Option<u64>> {
        let frames = self.decoder.decode_float(packet, &mut self.pcm, false)?;
        self.packets += 1;
        if self.packets == 1 {
            return Ok(None);
        }
        for (i, frame) in self.pcm[..frames * 2].chunks_exact(2).enumerate() {
            if frame[0].abs().max(frame[1].abs()) < ONSET_THRESHOLD {
                continue;
            }
            let program = (media + i as u64).saturating_sub(track.pre_skip);
            if self
                .last_onset
                .is_some_and(|last| program < last + refractory)
            {
                continue;
            }
            self.last_onset = Some(program);
            return Ok(Some(i as u64));
        }
        Ok(None)
    }
}

/// The Opus sample entry of an init segment (ISO/IEC 14496-12 §8.5.2 `stsd`;
/// `dOps` as "Encapsulation of Opus in ISO Base Media File Format" 4.3.2).
fn parse_init(init: &[u8]) -> Result<OpusTrack> {
    let moov = top_level_boxes(init)?
        .into_iter()
        .find(|(kind, _)| kind == b"moov")
        .context("init segment without moov")?;
    let moov = Moov::decode(&mut &init[moov.1])?;
    let trak = moov.trak.first().context("moov without trak")?;
    ensure!(
        trak.mdia.mdhd.timescale == RATE,
        "timescale {}",
        trak.mdia.mdhd.timescale
    );
    let Some(mp4_atom::Codec::Opus(opus)) = trak.mdia.minf.stbl.stsd.codecs.first() else {
        bail!("the first sample entry is not Opus");
    };
    Ok(OpusTrack {
        pre_skip: u64::from(opus.dops.pre_skip),
    })
}

/// A CMAF chunk's samples: payload and duration, from `base` media time.
struct Fragment {
    /// `tfdt` baseMediaDecodeTime (ISO/IEC 14496-12 §8.8.12).
    base: u64,
    samples: Vec<(Bytes, u64)>,
}

/// Parses a part: an optional `styp`, then one `moof` and its `mdat`. Sample
/// sizes and durations come from the `trun` (§8.8.8) or the `tfhd` defaults
/// (§8.8.7); `data_offset` counts from the `moof` (default-base-is-moof,
/// which CMAF requires).
fn parse_part(part: &Bytes) -> Result<Fragment> {
    let boxes = top_level_boxes(part)?;
    let (_, moof_range) = boxes
        .iter()
        .find(|(kind, _)| kind == b"moof")
        .context("part without moof")?;
    let moof = Moof::decode(&mut &part[moof_range.clone()])?;
    let [traf] = moof.traf.as_slice() else {
        bail!("{} traf boxes, expected one", moof.traf.len());
    };
    ensure!(
        traf.tfhd.default_base_is_moof,
        "tfhd without default-base-is-moof"
    );
    let base = traf
        .tfdt
        .as_ref()
        .context("traf without tfdt")?
        .base_media_decode_time;
    let mut samples = Vec::new();
    for trun in &traf.trun {
        let offset = trun.data_offset.context("trun without data_offset")?;
        let mut at = moof_range.start + usize::try_from(offset)?;
        for entry in trun.samples.iter() {
            let size = entry
                .size
                .or(traf.tfhd.default_sample_size)
                .context("sample without size")? as usize;
            let duration = entry
                .duration
                .or(traf.tfhd.default_sample_duration)
                .context("sample without duration")?;
            ensure!(at + size <= part.len(), "sample past the end of the part");
            samples.push((part.slice(at..at + size), u64::from(duration)));
            at += size;
        }
    }
    Ok(Fragment { base, samples })
}

/// The type and byte range (header included) of each top-level box
/// (ISO/IEC 14496-12 §4.2: 32-bit size, or 1 and a 64-bit size).
fn top_level_boxes(bytes: &[u8]) -> Result<Vec<([u8; 4], std::ops::Range<usize>)>> {
    let mut boxes = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes.get(at..at + 8).context("truncated box header")?;
        let kind: [u8; 4] = header[4..8].try_into()?;
        let size = match u32::from_be_bytes(header[..4].try_into()?) {
            1 => {
                let large = bytes.get(at + 8..at + 16).context("truncated largesize")?;
                usize::try_from(u64::from_be_bytes(large.try_into()?))?
            }
            0 => bytes.len() - at,
            size => size as usize,
        };
        ensure!(size >= 8 && at + size <= bytes.len(), "bad box size {size}");
        boxes.push((kind, at..at + size));
        at += size;
    }
    Ok(boxes)
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

/// One burst from its capture to its serving, in ms.
#[derive(Debug, Clone, Copy)]
struct Path {
    /// Written − captured: AAC frame accumulation and encoder delay.
    to_written: f64,
    /// Program date of the onset − written: where the jitter buffer put it.
    to_program: f64,
    /// End of its part − onset: the wait for the part to be complete.
    to_part_end: f64,
    /// Served − end date of the part: packaging, publishing, serving.
    to_served: f64,
    /// Served − written: the figure the target is about.
    written_to_served: f64,
}

struct Report {
    sent: usize,
    paths: Vec<Path>,
    missed: usize,
    spurious: usize,
}

impl Report {
    /// Matches each onset heard to the last burst written before it was
    /// served (the latency is far below the burst period).
    fn new(sent: Vec<Sent>, heard: Vec<Heard>, clock: WallClock) -> Self {
        let mut taken = vec![false; sent.len()];
        let mut paths = Vec::new();
        let mut spurious = 0;
        for h in &heard {
            let Some(i) = sent.iter().rposition(|s| s.written <= h.served) else {
                spurious += 1;
                continue;
            };
            if std::mem::replace(&mut taken[i], true) {
                spurious += 1;
                continue;
            }
            let s = sent[i];
            let written = clock.ms(s.written);
            let onset_date = clock.ms_of_date(h.date);
            let part_end = clock.ms_of_date(h.part_end);
            let served = clock.ms(h.served);
            paths.push(Path {
                to_written: written - clock.ms(s.captured),
                to_program: onset_date - written,
                to_part_end: samples_to_ms(h.to_part_end as i64),
                to_served: served - part_end,
                written_to_served: served - written,
            });
        }
        Self {
            sent: sent.len(),
            missed: taken.iter().filter(|t| !**t).count(),
            spurious,
            paths,
        }
    }

    fn print(&self, args: &Args) {
        println!(
            "glass-to-ear: onair live --jitter-ms {}, {} s, {} bursts sent, {} heard, {} missed, {} spurious onsets",
            args.jitter_ms,
            args.seconds,
            self.sent,
            self.paths.len(),
            self.missed,
            self.spurious
        );
        let stats = |f: fn(&Path) -> f64| Stats::of(self.paths.iter().map(f));
        let latency = stats(|p| p.written_to_served);
        let glass = stats(|p| p.to_written + p.written_to_served);
        println!("written -> served      {latency}");
        println!("captured -> served     {glass}");
        println!("split, per burst (ms):");
        println!(
            "  captured -> written (AAC frame + encoder delay)       {}",
            stats(|p| p.to_written)
        );
        println!(
            "  written -> program date of the onset (jitter buffer)  {}",
            stats(|p| p.to_program)
        );
        println!(
            "  onset -> end of its part (part wait, 0-320)           {}",
            stats(|p| p.to_part_end)
        );
        println!(
            "  end of part -> part downloaded (package, serve)       {}",
            stats(|p| p.to_served)
        );
        let verdict = if latency.p99 <= TARGET_P99_MS {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "target written -> served p99 <= {TARGET_P99_MS:.0} ms: {verdict} (p99 {:.0} ms; with {} bursts p99 is the {}th value)",
            latency.p99,
            self.paths.len(),
            (self.paths.len() * 99).div_ceil(100)
        );
        // One line for scripts.
        println!(
            "result jitter_ms={} bursts={} heard={} missed={} spurious={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} glass_p50_ms={:.1} glass_p99_ms={:.1} jitter_p50_ms={:.1} part_wait_p50_ms={:.1} serve_p50_ms={:.1} serve_p99_ms={:.1} encode_p50_ms={:.1}",
            args.jitter_ms,
            self.sent,
            self.paths.len(),
            self.missed,
            self.spurious,
            latency.p50,
            latency.p99,
            latency.max,
            glass.p50,
            glass.p99,
            stats(|p| p.to_program).p50,
            stats(|p| p.to_part_end).p50,
            stats(|p| p.to_served).p50,
            stats(|p| p.to_served).p99,
            stats(|p| p.to_written).p50,
        );
    }
}

/// Nearest-rank percentiles of a set of milliseconds.
#[derive(Debug, Clone, Copy, Default)]
struct Stats {
    p50: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        // Microseconds, to share the loadtest's quantile.
        let mut us: Vec<i64> = values.map(|ms| (ms * 1e3).round() as i64).collect();
        us.sort_unstable();
        let q = |num| quantile(&us, num, 100).map_or(f64::NAN, |v| v as f64 / 1e3);
        Self {
            p50: q(50),
            p99: q(99),
            min: q(0),
            max: q(100),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:6.1}  p99 {:6.1}  min {:6.1}  max {:6.1} ms",
            self.p50, self.p99, self.min, self.max
        )
    }
}
