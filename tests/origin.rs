//! The origin end to end, against live broadcasts in real time.
//!
//! The same scenario runs against three origins: in-process (fed by the
//! publisher's announcements), standalone over a directory store, and
//! standalone over the S3-compatible test server (`eval "$(scripts/s3-server.sh
//! start)"` first; the S3 test fails without it). Each scenario broadcasts a
//! tone with 320 ms parts, three to a segment (0.96 s segments, so
//! EXT-X-TARGETDURATION is 1 s and the 503 deadline 3 s), next to a short
//! stream that has already ended, and checks against the bytes in the store:
//!
//! - blocking reloads wait and answer exactly `at/{msn}.{part}.m3u8`, with
//!   the "part past the segment's last part is part 0 of the next" rule and
//!   `_HLS_msn` alone (RFC 8216bis 6.2.5.2);
//! - 400 for bad directives and requests beyond the advance limits; 503 after
//!   three target durations once the packager stops without EXT-X-ENDLIST;
//!   directives ignored after EXT-X-ENDLIST;
//! - `_HLS_skip=YES|v2` deltas consistent with the full playlist (6.2.5.1);
//! - a preload-hinted part waits and answers its exact bytes (6.2.6);
//!   unlisted names 404 at once without a store request; hostile paths 400
//!   or 404;
//! - gzip, Content-Type, Cache-Control, CORS, ETag/304, HEAD, 405, h2c;
//! - standalone: store requests per part with 200 concurrent listeners.
//!
//! Nothing here measures how fast anything happens: a loaded machine may be
//! slow at any step. The tests wait on events instead (the broadcast's
//! stored playlists, blocking reloads the origin answers once it has a part)
//! with a generous overall timeout only as a hang guard. What must be
//! answered at once is asked while the broadcast is held still: a request
//! that waited would then end in 503 after three target durations instead
//! of its answer. What must wait is asked for parts the held broadcast has
//! not published, and the broadcast resumes only once the origin reports
//! those requests waiting.
//!
//! `binary_live_and_origin_play_in_ffmpeg` runs `onair live --http` and then
//! `onair origin` and decodes `/{stream}/index.m3u8` with ffmpeg while the
//! stream grows and after it ends.

#[path = "common/http.rs"]
mod client;
#[path = "common/hooked_store.rs"]
mod hooked_store;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/wav.rs"]
mod wav;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use hooked_store::{HookedStore, Hooks};
use http::Method;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use onair::audio::{FeedConfig, FileSource, MixerConfig, SourceOptions};
use onair::encode::{AacConfig, OpusConfig};
use onair::hls::{MediaPlaylist, PartId, TimelineConfig};
use onair::origin::{Origin, OriginConfig};
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{FileHost, Pipeline, PipelineConfig};
use onair::publish::{Batch, Op, Publisher, RetryPolicy, Store, open_store};
use onair::time::ProgramTime;
use tokio::sync::{broadcast, oneshot, watch};

use client::{Http, Reply, gunzip, raw_get_status};

/// Parts per segment: 0.96 s segments, so the target duration is 1 s.
const PARTS: u32 = 3;
/// One part: 320 ms.
const PART: Duration = Duration::from_millis(320);
/// EXT-X-TARGETDURATION of 0.96 s segments.
const TARGET_DURATION: Duration = Duration::from_secs(1);
/// Live window: the shortest the timeline accepts is six segments (5.76 s).
const WINDOW_S: u64 = 8;
const RATE: u64 = 48_000;
/// The growing stream and the one that has ended.
const LIVE: &str = "live";
const ENDED: &str = "ended";
const RENDITION: &str = "aac";
/// Length of the ended stream.
const ENDED_SAMPLES: u64 = 2 * RATE + 7_000;
/// Concurrent listeners in the store-request measurement.
const LISTENERS: usize = 200;
/// How long any wait for the broadcast or the origin may take: a guard
/// against a hang, never a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// How often a condition without an event to wait on is looked at.
const POLL: Duration = Duration::from_millis(10);

/// `f`, or a panic naming `what` if it hangs.
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {HANG_GUARD:?}"))
}

// ---------------------------------------------------------------------------
// Broadcasts
// ---------------------------------------------------------------------------

/// A one-second 440 Hz tone, looped by the live broadcast.
fn tone_file(dir: &FsPath) -> PathBuf {
    let path = dir.join("tone.wav");
    wav::write_wav(
        &path,
        48_000,
        2,
        wav::WavFormat::Int16,
        &wav::sine(440.0, 48_000, 48_000, 0.3, 2),
    );
    path
}

fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The live pipeline of `onair live` with short segments; program dates
/// start now, so a standalone origin can time its store reads by them.
fn pipeline(stream: &str, tone: &FsPath) -> Pipeline {
    let config = PipelineConfig {
        opus: OpusConfig::default(),
        aac: AacConfig::default(),
        mixer: MixerConfig::default(),
        packager: PackagerConfig {
            stream: stream.to_owned(),
            timeline: TimelineConfig {
                parts_per_segment: PARTS,
                window: Some(WINDOW_S * RATE),
                epoch_unix_ms: now_unix_ms(),
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Live,
        },
        parallel: false,
        returns: Default::default(),
    };
    let host = FileHost {
        feed: FeedConfig {
            name: "tone".into(),
            gain_db: 0.0,
            muted: false,
        },
        source: FileSource::open(tone, SourceOptions { looping: true }).expect("open tone"),
    };
    Pipeline::new(config, vec![host]).expect("pipeline")
}

fn publisher(store: &Store, observer: Option<&broadcast::Sender<Op>>) -> Publisher {
    let publisher = Publisher::new(store.clone(), RetryPolicy::default())
        .with_playlist_timing(1, PART.as_millis() as u32);
    match observer {
        Some(tx) => publisher.with_observer(tx.clone()),
        None => publisher,
    }
}

/// Publishes a short live stream that has ended (EXT-X-ENDLIST), as fast as
/// the CPU allows.
async fn publish_ended(tone: &FsPath, publisher: &Publisher) {
    let mut pipeline = pipeline(ENDED, tone);
    publisher
        .apply(pipeline.start().expect("start"))
        .await
        .expect("publish");
    if let Some(batch) = pipeline
        .advance(ProgramTime::from_samples(ENDED_SAMPLES))
        .expect("advance")
    {
        publisher.apply(batch).await.expect("publish");
    }
    publisher
        .apply(pipeline.finish().expect("finish"))
        .await
        .expect("publish");
}

/// How often the broadcast thread advances the pipeline to the wall clock.
const TICK: Duration = Duration::from_millis(20);

/// What a test asks of a running broadcast.
enum Control {
    /// Stop advancing; answered once everything published so far is
    /// stored.
    Hold(oneshot::Sender<()>),
    /// Follow the wall clock again, catching up at once.
    Resume,
    /// Stop without EXT-X-ENDLIST, like a packager that died.
    Abandon,
}

/// A broadcast paced by the wall clock on its own thread, like `onair live`,
/// that a test can hold still.
struct Broadcast {
    control: std::sync::mpsc::Sender<Control>,
    /// The newest `live.m3u8` of the live rendition, once stored.
    stored: watch::Receiver<Option<MediaPlaylist>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broadcast {
    fn start(stream: &str, tone: &FsPath, publisher: Publisher) -> Broadcast {
        let rt = tokio::runtime::Handle::current();
        let (control, commands) = std::sync::mpsc::channel();
        let (stored_tx, stored) = watch::channel(None);
        let live_key = format!("{stream}/{RENDITION}/live.m3u8");
        let mut pipeline = pipeline(stream, tone);
        let thread = std::thread::spawn(move || {
            // Each batch is stored completely before the next, as by the
            // publish driver of `onair live`; then its live playlist is
            // reported.
            let publish = |batch: Batch| {
                let live = batch.stages.iter().flatten().rev().find_map(|op| match op {
                    Op::Put(object) if object.key == live_key => Some(parse(&object.body)),
                    _ => None,
                });
                rt.block_on(publisher.apply(batch)).expect("publish");
                if live.is_some() {
                    stored_tx.send_replace(live);
                }
            };
            publish(pipeline.start().expect("start"));
            let start = Instant::now();
            let mut held = false;
            loop {
                match commands.recv_timeout(TICK) {
                    Ok(Control::Hold(done)) => {
                        held = true;
                        let _ = done.send(());
                    }
                    Ok(Control::Resume) => held = false,
                    Ok(Control::Abandon) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                if !held {
                    let due = start.elapsed().as_micros() as u64 * RATE / 1_000_000;
                    if let Some(batch) = pipeline
                        .advance(ProgramTime::from_samples(due))
                        .expect("advance")
                    {
                        publish(batch);
                    }
                }
            }
        });
        Broadcast {
            control,
            stored,
            thread: Some(thread),
        }
    }

    /// Holds the broadcast still; returns once everything it published is
    /// stored.
    async fn hold(&self) {
        let (done, held) = oneshot::channel();
        self.control
            .send(Control::Hold(done))
            .expect("broadcast running");
        within("holding the broadcast", held)
            .await
            .expect("broadcast held");
    }

    fn resume(&self) {
        self.control
            .send(Control::Resume)
            .expect("broadcast running");
    }

    /// Stops the broadcast without EXT-X-ENDLIST and waits until everything
    /// it published is stored.
    fn abandon(&mut self) {
        let _ = self.control.send(Control::Abandon);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("broadcast thread");
        }
    }

    /// The newest live playlist stored.
    fn newest(&self) -> MediaPlaylist {
        self.stored
            .borrow()
            .clone()
            .expect("a live playlist is stored")
    }
}

impl Drop for Broadcast {
    fn drop(&mut self) {
        let _ = self.control.send(Control::Abandon);
    }
}

// ---------------------------------------------------------------------------
// A store that records the keys read
// ---------------------------------------------------------------------------

/// Keys read from the store (gets and listings), in order.
#[derive(Debug, Clone, Default)]
struct ReadLog(Arc<Mutex<Vec<String>>>);

impl ReadLog {
    fn record(&self, key: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
    }

    fn entries(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Hooks for ReadLog {
    const NAME: &'static str = "Recording";

    fn on_get(&self, location: &Path) {
        self.record(location.to_string());
    }

    fn on_list(&self, prefix: Option<&Path>) {
        self.record(format!("list:{}", prefix.map_or("", |p| p.as_ref())));
    }
}

/// Wraps a store so that every read is recorded in `log`, to count what the
/// origin asks.
fn recording(store: &Store, log: &ReadLog) -> Store {
    let inner = HookedStore::new(store.object_store().clone(), Arc::new(log.clone()));
    Store::new(Arc::new(inner), store.url(), store.capabilities())
}

// ---------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fed by the publisher's announcements, like `onair live --http`.
    InProcess,
    /// Reading the store only, like `onair origin`.
    Standalone,
}

/// An origin serving a live and an ended stream.
struct Setup {
    mode: Mode,
    addr: SocketAddr,
    /// The store as written, for the bytes every answer must equal.
    store: Store,
    /// What the origin read from the store.
    reads: ReadLog,
    origin: Origin,
    broadcast: Broadcast,
    http: Http,
    /// Names the origin in the figures printed.
    label: &'static str,
}

impl Setup {
    async fn start(mode: Mode, store: Store, tone: &FsPath, label: &'static str) -> Setup {
        let reads = ReadLog::default();
        let origin = Origin::new(&recording(&store, &reads), OriginConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let serving = origin.clone();
        tokio::spawn(async move { serving.serve(listener).await });
        let observer = match mode {
            Mode::InProcess => {
                let (tx, rx) = broadcast::channel(4096);
                let observing = origin.clone();
                tokio::spawn(async move { observing.observe(rx).await });
                Some(tx)
            }
            Mode::Standalone => None,
        };
        publish_ended(tone, &publisher(&store, observer.as_ref())).await;
        let broadcast = Broadcast::start(LIVE, tone, publisher(&store, observer.as_ref()));
        Setup {
            mode,
            addr,
            store,
            reads,
            origin,
            broadcast,
            http: Http::default(),
            label,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn playlist_url(&self, query: &str) -> String {
        self.url(&format!("/{LIVE}/{RENDITION}/live.m3u8{query}"))
    }

    fn blocking_url(&self, id: PartId, extra: &str) -> String {
        self.playlist_url(&format!(
            "?_HLS_msn={}&_HLS_part={}{extra}",
            id.msn, id.part
        ))
    }

    fn part_url(&self, id: PartId) -> String {
        self.url(&format!("/{LIVE}/{RENDITION}/{}.{}.m4s", id.msn, id.part))
    }

    /// The stored object at `key`, if any.
    async fn stored(&self, key: &str) -> Option<Bytes> {
        match self.store.object_store().get(&Path::from(key)).await {
            Ok(got) => Some(got.bytes().await.expect("read body")),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("reading {key}: {e}"),
        }
    }

    async fn stored_at(&self, id: PartId) -> Bytes {
        let key = at_key(LIVE, id);
        self.stored(&key)
            .await
            .unwrap_or_else(|| panic!("{key} is not stored"))
    }

    /// The live playlist as the origin serves it now.
    async fn live(&self) -> MediaPlaylist {
        let reply = self.http.get(&self.playlist_url("")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        parse(&reply.body)
    }

    /// Waits until the live playlist lists at least `parts` parts in all,
    /// in the store and at the origin.
    async fn wait_for_parts(&self, parts: u64) -> MediaPlaylist {
        let id = from_ordinal(parts - 1);
        let mut stored = self.broadcast.stored.clone();
        within(&format!("the store reaching {id:?}"), async {
            stored
                .wait_for(|p| lists(p.as_ref(), id))
                .await
                .map(|_| ())
                .expect("broadcast running")
        })
        .await;
        self.origin_reaches(id).await
    }

    /// Waits until the origin's live playlist lists part `id`, which the
    /// store has. Each round is a blocking reload, answered once the origin
    /// has the part it names (or with 503 after three target durations),
    /// naming at most a segment past the origin's newest part to stay
    /// within the advance limits.
    async fn origin_reaches(&self, id: PartId) -> MediaPlaylist {
        within(&format!("the origin reaching {id:?}"), async {
            loop {
                let live = self.live().await;
                if lists(Some(&live), id) {
                    return live;
                }
                let next = last_part(&live).map_or(0, |l| ordinal(l) + 1);
                let target = from_ordinal(ordinal(id).min(next + u64::from(PARTS) - 1));
                let reply = self.http.get(&self.blocking_url(target, "")).await;
                assert!(
                    reply.status == 200 || reply.status == 503,
                    "{target:?}: {} {}",
                    reply.status,
                    reply.text()
                );
            }
        })
        .await
    }

    /// Holds the broadcast still and waits until the origin has everything
    /// it stored: until the broadcast resumes, nothing the origin answers
    /// can change, and a request that waits can only end in 503. Returns
    /// the held playlist.
    async fn hold(&self) -> MediaPlaylist {
        self.broadcast.hold().await;
        let stored = self.broadcast.newest();
        self.origin_reaches(last_part(&stored).expect("parts"))
            .await;
        stored
    }

    /// Resumes the broadcast once `n` requests wait at the origin. The
    /// origin has no event for that; its count is looked at every few
    /// milliseconds, never timed.
    async fn resume_once_waiting(&self, n: usize) {
        within(&format!("{n} requests waiting"), async {
            while self.origin.waiting() < n {
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        self.broadcast.resume();
    }
}

/// Whether `playlist` lists part `id`.
fn lists(playlist: Option<&MediaPlaylist>, id: PartId) -> bool {
    playlist
        .and_then(last_part)
        .is_some_and(|l| ordinal(l) >= ordinal(id))
}

fn at_key(stream: &str, id: PartId) -> String {
    format!("{stream}/{RENDITION}/at/{}.{}.m3u8", id.msn, id.part)
}

fn part_key(id: PartId) -> String {
    format!("{LIVE}/{RENDITION}/{}.{}.m4s", id.msn, id.part)
}

fn parse(body: &[u8]) -> MediaPlaylist {
    let text = std::str::from_utf8(body).expect("UTF-8 playlist");
    MediaPlaylist::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Position of a part in the stream, counting from 0.
fn ordinal(id: PartId) -> u64 {
    id.msn * u64::from(PARTS) + u64::from(id.part)
}

fn from_ordinal(n: u64) -> PartId {
    PartId {
        msn: n / u64::from(PARTS),
        part: (n % u64::from(PARTS)) as u32,
    }
}

/// The last part a playlist lists.
fn last_part(p: &MediaPlaylist) -> Option<PartId> {
    if let Some(open) = p.open.as_ref().filter(|o| !o.parts.is_empty()) {
        return Some(PartId {
            msn: p.open_msn(),
            part: open.parts.len() as u32 - 1,
        });
    }
    let last = p.segments.last()?;
    Some(PartId {
        msn: p.open_msn() - 1,
        part: (last.parts.len() as u32).checked_sub(1)?,
    })
}

/// The part the preload hint names.
fn hint(p: &MediaPlaylist) -> PartId {
    let uri = &p.preload_hint.as_ref().expect("a preload hint").uri;
    let stem = uri.strip_suffix(".m4s").expect("part URI");
    let (msn, part) = stem.split_once('.').expect("msn.part");
    PartId {
        msn: msn.parse().expect("msn"),
        part: part.parse().expect("part"),
    }
}

/// Asserts that a blocking request made while `expected` is not published
/// (the broadcast is held) waits for it and, once the broadcast resumes,
/// answers exactly its `at/` playlist.
async fn assert_waited_for(s: &Setup, url: String, expected: PartId) -> Duration {
    assert!(
        s.stored(&at_key(LIVE, expected)).await.is_none(),
        "{expected:?} was published before the request; pick a later part"
    );
    let reply = s.http.get(&url).await;
    assert_eq!(reply.status, 200, "{url}: {}", reply.text());
    assert_eq!(
        reply.body,
        s.stored_at(expected).await,
        "{url} must answer exactly at/{}.{}.m3u8",
        expected.msn,
        expected.part
    );
    assert_eq!(last_part(&parse(&reply.body)), Some(expected));
    reply.elapsed
}

/// Blocking reloads wait and answer the playlist of the requested part,
/// including a part index past the segment's end and `_HLS_msn` alone.
/// Asked while the broadcast is held: [`BLOCKING_WAITERS`] requests wait.
/// Returns the question with a part index past the segment's end, and the
/// part that answered it.
async fn check_blocking(s: &Setup) -> (PartId, PartId) {
    let live = s.live().await;
    let next = hint(&live);
    // A part past the hint; the broadcast holds it back until the three
    // requests wait.
    let ahead = from_ordinal(ordinal(next) + 1);
    // Part index 3 of a 3-part segment not yet complete: part 0 of the next.
    let past_end = PartId {
        msn: ahead.msn,
        part: PARTS,
    };
    let rolled = PartId {
        msn: ahead.msn + 1,
        part: 0,
    };
    // _HLS_msn alone: segment complete, i.e. its last part.
    let whole = PartId {
        msn: ahead.msn,
        part: PARTS - 1,
    };
    let segment_url = s.playlist_url(&format!("?_HLS_msn={}", ahead.msn));
    let (plain, past, segment) = tokio::join!(
        assert_waited_for(s, s.blocking_url(ahead, ""), ahead),
        assert_waited_for(s, s.blocking_url(past_end, ""), rolled),
        assert_waited_for(s, segment_url, whole),
    );
    eprintln!(
        "[{}] blocking reloads waited {plain:?} (part), {past:?} (past the segment's end), {segment:?} (_HLS_msn alone)",
        s.label
    );
    (past_end, rolled)
}

/// Requests [`check_blocking`] leaves waiting.
const BLOCKING_WAITERS: usize = 3;

/// The same question once answered is answered again, identically, without
/// waiting: asked while the broadcast is held, a wait would end in 503.
async fn check_answered_again(s: &Setup, (question, answered_by): (PartId, PartId)) {
    let again = s.http.get(&s.blocking_url(question, "")).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.body, s.stored_at(answered_by).await);
}

/// 400 for malformed directives and requests beyond the limits, at once:
/// asked while the broadcast is held, a request that waited would end in
/// 503. (That the limit itself is accepted is checked by
/// [`check_deadline`].)
async fn check_bad_requests(s: &Setup) {
    let live = s.live().await;
    let last = last_part(&live).expect("parts");
    let queries = [
        "?_HLS_part=1".to_owned(),
        "?_HLS_msn=abc".to_owned(),
        "?_HLS_msn=-1".to_owned(),
        "?_HLS_msn=1&_HLS_part=x".to_owned(),
        "?_HLS_msn=1&_HLS_msn=2".to_owned(),
        "?_HLS_skip=NO".to_owned(),
        // More than two segments ahead. (Exact boundaries are unit-tested;
        // here the stream may advance while the requests are sent.)
        format!("?_HLS_msn={}", last.msn + 4),
        // Advance Part Limit: 3 s / 0.32 s = 9.4 parts past the last part.
        format!("?_HLS_msn={}&_HLS_part={}", last.msn, last.part + 13),
    ];
    for query in &queries {
        let reply = s.http.get(&s.playlist_url(query)).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        assert_eq!(reply.header("cache-control"), "no-store", "{query}");
    }
}

/// The hinted part is held until stored, then served byte for byte. Asked
/// while the broadcast is held: one request waits.
async fn check_preload_hint(s: &Setup) {
    let next = hint(&s.live().await);
    assert!(
        s.stored(&part_key(next)).await.is_none(),
        "hinted part already stored"
    );
    let reply = s.http.get(&s.part_url(next)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stored = s.stored(&part_key(next)).await.expect("part stored");
    assert_eq!(reply.body, stored, "hinted part bytes");
    assert_eq!(reply.header("content-type"), "audio/mp4");
    assert_eq!(
        reply.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    eprintln!("[{}] hinted part waited {:?}", s.label, reply.elapsed);
}

/// Names neither listed nor hinted are 404 at once, without a store read;
/// hostile targets are 400 or 404 and read nothing outside the stream.
/// Asked while the broadcast is held: a request that waited would end in
/// 503, and no part is published that another request could read.
async fn check_not_found(s: &Setup) {
    let live = s.live().await;
    let next = hint(&live);
    let after_hint = from_ordinal(ordinal(next) + 1);
    let unknown = [
        s.part_url(after_hint),
        s.part_url(PartId {
            msn: next.msn + 40,
            part: 0,
        }),
        s.part_url(PartId {
            msn: live.first_listed_msn(),
            part: PARTS,
        }),
        // The segment after the open one cannot be complete.
        s.url(&format!("/{LIVE}/{RENDITION}/{}.m4s", live.open_msn() + 1)),
        s.url(&format!("/{LIVE}/{RENDITION}/99999.m4s")),
        s.url(&format!("/{LIVE}/{RENDITION}/at/0.0.m3u8")),
        s.url(&format!("/{LIVE}/{RENDITION}/007.m4s")),
        s.url("/etc/passwd"),
    ];
    let mut slowest = Duration::ZERO;
    for url in &unknown {
        let reply = s.http.get(url).await;
        assert_eq!(reply.status, 404, "{url}: {}", reply.text());
        assert_eq!(reply.header("cache-control"), "no-store", "{url}");
        slowest = slowest.max(reply.elapsed);
    }
    let reads = s.reads.entries();
    for key in [
        part_key(after_hint),
        format!("{LIVE}/{RENDITION}/99999.m4s"),
        format!("{LIVE}/{RENDITION}/{}.m4s", live.open_msn() + 1),
    ] {
        assert!(!reads.contains(&key), "the origin read {key} for a 404");
    }
    let hostile: [&[u8]; 9] = [
        b"/../../etc/passwd",
        b"/%2e%2e/%2e%2e/etc/passwd",
        b"/live//aac/live.m3u8",
        b"/live/aac/../../../etc/passwd",
        b"/live/aac/%2e%2e%2f%2e%2e%2fpasswd",
        b"/live/aac/..%2f..%2findex.m3u8",
        b"/\xff\xfe/index.m3u8",
        b"/live/aac/live.m3u8?_HLS_msn=\xc3\x28",
        b"/live/aac/\\..\\..\\index.m3u8",
    ];
    for target in hostile {
        let status = raw_get_status(s.addr, target).await;
        assert!(
            status == 400 || status == 404,
            "{} answered {status}",
            String::from_utf8_lossy(target)
        );
    }
    let overlong = format!("/{LIVE}/{RENDITION}/{}.m4s", "1".repeat(600));
    assert_eq!(raw_get_status(s.addr, overlong.as_bytes()).await, 400);
    // Nothing outside the two streams' prefixes was ever read.
    for key in s.reads.entries() {
        assert!(
            key.starts_with(&format!("{LIVE}/"))
                || key.starts_with(&format!("{ENDED}/"))
                || key == "list:",
            "the origin read {key:?}"
        );
    }
    eprintln!("[{}] slowest 404: {slowest:?}", s.label);
}

/// Headers of every kind of answer, gzip, ETag/304, HEAD, OPTIONS, 405.
async fn check_headers(s: &Setup) {
    let live = s.live().await;
    let last = last_part(&live).expect("parts");
    let cors = |r: &Reply| assert_eq!(r.header("access-control-allow-origin"), "*");

    // A blocking reload already satisfied: the immutable playlist, cacheable
    // for six target durations.
    let at = s.http.get(&s.blocking_url(last, "")).await;
    assert_eq!(at.status, 200);
    assert_eq!(at.body, s.stored_at(last).await);
    assert_eq!(at.header("content-type"), "application/vnd.apple.mpegurl");
    assert_eq!(at.header("cache-control"), "public, max-age=6");
    cors(&at);

    // gzip: same bytes once decoded, its own validator.
    let zipped = s
        .http
        .get_with(&s.blocking_url(last, ""), &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), "gzip");
    assert_eq!(zipped.header("vary"), "Accept-Encoding");
    assert_eq!(gunzip(&zipped.body), at.body.to_vec());
    assert!(zipped.body.len() < at.body.len());
    assert_ne!(zipped.header("etag"), at.header("etag"));
    let plain = s
        .http
        .get_with(&s.playlist_url(""), &[("accept-encoding", "gzip, br")])
        .await;
    assert_eq!(plain.header("content-encoding"), "gzip");
    assert_eq!(plain.header("cache-control"), "public, max-age=0");
    parse(&gunzip(&plain.body));

    // ETag and If-None-Match: 304 for the immutable playlist and a part.
    let etag = at.header("etag").to_owned();
    assert!(etag.starts_with('"'), "strong ETag: {etag}");
    let revalidated = s
        .http
        .get_with(&s.blocking_url(last, ""), &[("if-none-match", &etag)])
        .await;
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    let part = s.http.get(&s.part_url(last)).await;
    assert_eq!(part.status, 200);
    assert_eq!(
        part.body,
        s.stored(&part_key(last)).await.expect("part stored")
    );
    assert_eq!(part.header("content-type"), "audio/mp4");
    cors(&part);
    let part_etag = part.header("etag").to_owned();
    let part_304 = s
        .http
        .get_with(&s.part_url(last), &[("if-none-match", &part_etag)])
        .await;
    assert_eq!(part_304.status, 304);
    let other = s
        .http
        .get_with(&s.part_url(last), &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(other.status, 200);

    // Init, segment and the multivariant playlist.
    let init = s
        .http
        .get(&s.url(&format!("/{LIVE}/{RENDITION}/init.mp4")))
        .await;
    assert_eq!(init.status, 200);
    assert_eq!(init.header("content-type"), "audio/mp4");
    assert_eq!(
        init.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(!live.segments.is_empty(), "a segment is complete");
    let first = live.first_listed_msn();
    let segment = s
        .http
        .get(&s.url(&format!("/{LIVE}/{RENDITION}/{first}.m4s")))
        .await;
    assert_eq!(segment.status, 200);
    assert_eq!(
        Some(segment.body.clone()),
        s.stored(&format!("{LIVE}/{RENDITION}/{first}.m4s")).await
    );
    let index = s.http.get(&s.url(&format!("/{LIVE}/index.m3u8"))).await;
    assert_eq!(index.status, 200);
    assert_eq!(
        Some(index.body.clone()),
        s.stored(&format!("{LIVE}/index.m3u8")).await
    );
    assert_eq!(index.header("cache-control"), "public, max-age=1");

    // HEAD, a CORS preflight, and a method the origin does not serve.
    let head = s.http.request(Method::HEAD, &s.part_url(last), &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), part.body.len().to_string());
    let preflight = s
        .http
        .request(
            Method::OPTIONS,
            &s.playlist_url(""),
            &[
                ("origin", "https://player.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 204);
    cors(&preflight);
    assert!(
        preflight
            .header("access-control-allow-methods")
            .contains("GET")
    );
    assert_eq!(preflight.header("access-control-allow-headers"), "range");
    let post = s.http.request(Method::POST, &s.playlist_url(""), &[]).await;
    assert_eq!(post.status, 405);
    assert!(post.header("allow").contains("GET"));
}

/// HTTP/2 by prior knowledge: a waiting blocking reload and a part. Asked
/// while the broadcast is held: one request waits.
async fn check_h2c(s: &Setup) {
    let next = hint(&s.live().await);
    let reply = s.http.get_h2(&s.blocking_url(next, "")).await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, s.stored_at(next).await);
    let part = s.http.get_h2(&s.part_url(next)).await;
    assert_eq!(part.status, 200);
    assert_eq!(Some(part.body), s.stored(&part_key(next)).await);
}

/// `_HLS_skip=YES` and `v2`, alone and with a blocking reload: the delta
/// plus the skipped segments of the full playlist is the full playlist.
async fn check_delta(s: &Setup) {
    // CAN-SKIP-UNTIL is six target durations: wait until older segments
    // exist (a full window of 8 s).
    s.wait_for_parts(WINDOW_S * 1000 / PART.as_millis() as u64 + 2)
        .await;
    let next = hint(&s.live().await);
    for (skip, v2) in [("YES", false), ("v2", true)] {
        let reply = s
            .http
            .get(&s.blocking_url(next, &format!("&_HLS_skip={skip}")))
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let full = parse(&s.stored_at(next).await);
        assert_delta_consistent(&parse(&reply.body), &full, v2);
        assert_eq!(reply.text().contains("RECENTLY-REMOVED-DATERANGES"), v2);
        // Without blocking: a delta of the newest playlist.
        let plain = s
            .http
            .get(&s.playlist_url(&format!("?_HLS_skip={skip}")))
            .await;
        let delta = parse(&plain.body);
        let last = last_part(&delta).expect("parts");
        assert_delta_consistent(&delta, &parse(&s.stored_at(last).await), v2);
    }
}

/// RFC 8216bis 6.2.5.1: the delta replaces the oldest segments, which end at
/// least CAN-SKIP-UNTIL before the end of the playlist, by EXT-X-SKIP, and
/// its first remaining segment can be decoded on its own.
fn assert_delta_consistent(delta: &MediaPlaylist, full: &MediaPlaylist, v2: bool) {
    let skip = delta.skip.as_ref().expect("an EXT-X-SKIP");
    let skipped = skip.skipped_segments as usize;
    assert!(skipped > 0 && skipped < full.segments.len());
    assert_eq!(skip.recently_removed_dateranges.is_some(), v2);
    assert_eq!(delta.version(), if v2 { 10 } else { 9 });
    assert_eq!(delta.media_sequence, full.media_sequence);
    let until = full
        .server_control
        .and_then(|c| c.can_skip_until)
        .expect("CAN-SKIP-UNTIL");
    let total: u64 = full.segments.iter().map(|x| x.duration).sum();
    let skipped_end: u64 = full.segments[..skipped].iter().map(|x| x.duration).sum();
    assert!(
        skipped_end + until <= total,
        "skipped past the Skip Boundary"
    );
    let next_end = skipped_end + full.segments[skipped].duration;
    assert!(next_end + until > total, "skipped too little");
    assert_eq!(delta.segments.len(), full.segments.len() - skipped);
    for (d, f) in delta.segments.iter().zip(&full.segments[skipped..]) {
        assert_eq!(
            (&d.uri, d.duration, &d.parts, d.program_date_time),
            (&f.uri, f.duration, &f.parts, f.program_date_time)
        );
    }
    assert!(delta.segments[0].map.is_some(), "EXT-X-MAP carried over");
    assert_eq!(delta.open, full.open);
    assert_eq!(delta.preload_hint, full.preload_hint);
    assert_eq!(delta.rendition_reports, full.rendition_reports);
}

/// Directives are ignored once EXT-X-ENDLIST is present: the full playlist,
/// at once; media past the end is 404 at once. The ended stream never
/// changes, so a request that waited would end in 503.
async fn check_ended(s: &Setup) {
    let key = format!("{ENDED}/{RENDITION}/live.m3u8");
    let stored = s.stored(&key).await.expect("ended stream stored");
    let final_playlist = parse(&stored);
    assert!(final_playlist.end_list && final_playlist.preload_hint.is_none());
    let past = last_part(&final_playlist).expect("parts");
    let beyond = from_ordinal(ordinal(past) + 1);
    let url = |q: &str| s.url(&format!("/{ENDED}/{RENDITION}/live.m3u8{q}"));
    // A standalone origin reads the playlist on the first request.
    assert_eq!(s.http.get(&url("")).await.body, stored);
    for query in [
        format!("?_HLS_msn={}&_HLS_part={}", beyond.msn, beyond.part),
        format!("?_HLS_msn={}", past.msn + 50),
        "?_HLS_msn=0&_HLS_part=1&_HLS_skip=YES".to_owned(),
    ] {
        let reply = s.http.get(&url(&query)).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.text());
        assert_eq!(reply.body, stored, "{query}: the full final playlist");
    }
    let media = s
        .http
        .get(&s.url(&format!(
            "/{ENDED}/{RENDITION}/{}.{}.m4s",
            beyond.msn, beyond.part
        )))
        .await;
    assert_eq!(media.status, 404, "{}", media.text());
}

/// Many listeners waiting on the same parts: the origin asks the store a
/// bounded number of times per part, whatever their number. Returns store
/// requests per part.
async fn check_coalescing(s: &Setup) -> f64 {
    let http = Http::default();
    let base = s.url("");
    let start_live = s.live().await;
    let first = hint(&start_live);
    let measured_parts: u64 = 8;
    let reads_before = s.reads.len();
    let origin_before = s.origin.store_requests();
    let listeners = (0..LISTENERS).map(|_| {
        let http = http.clone();
        let base = base.clone();
        async move {
            // An LL-HLS player at the edge: block for the next part, then
            // fetch it, part after part.
            let mut answers = Vec::new();
            for n in 0..measured_parts {
                let id = from_ordinal(ordinal(first) + n);
                let playlist = http
                    .get(&format!(
                        "{base}/{LIVE}/{RENDITION}/live.m3u8?_HLS_msn={}&_HLS_part={}",
                        id.msn, id.part
                    ))
                    .await;
                let part = http
                    .get(&format!(
                        "{base}/{LIVE}/{RENDITION}/{}.{}.m4s",
                        id.msn, id.part
                    ))
                    .await;
                answers.push((id, playlist, part));
            }
            answers
        }
    });
    let results = join_all(listeners).await;
    // The live stream's reads only (the ended stream's tracker also looks
    // for a restart now and then).
    let live_reads = |from: usize| {
        s.reads.entries()[from..]
            .iter()
            .filter(|k| k.starts_with(&format!("{LIVE}/")))
            .count()
    };
    let reads = live_reads(reads_before);
    let origin_reads = s.origin.store_requests() - origin_before;
    let mut expected = std::collections::HashMap::new();
    for answers in &results {
        for (id, playlist, part) in answers {
            assert_eq!(playlist.status, 200, "{id:?}: {}", playlist.text());
            assert_eq!(part.status, 200, "{id:?}: {}", part.text());
            if !expected.contains_key(id) {
                expected.insert(
                    *id,
                    (
                        s.stored_at(*id).await,
                        s.stored(&part_key(*id)).await.expect("stored"),
                    ),
                );
            }
            let (at, bytes) = &expected[id];
            assert_eq!(&playlist.body, at, "{id:?}");
            assert_eq!(&part.body, bytes, "{id:?}");
        }
    }
    // The counting store and the origin's own count agree.
    assert_eq!((s.reads.len() - reads_before) as u64, origin_reads);
    let per_part = reads as f64 / measured_parts as f64;
    eprintln!(
        "[{}] {LISTENERS} listeners x {measured_parts} parts: {reads} store reads, {per_part:.2} per part",
        s.label
    );
    per_part
}

/// Once the packager stops without EXT-X-ENDLIST, a blocking reload and a
/// hinted part end with 503 after three target durations; so does a
/// blocking reload at the Advance Part Limit, which is accepted, not
/// rejected. (Three target durations at the least: the origin's timer
/// cannot fire early, whatever the load. That it ends then and not later is
/// the paused-time unit test `waiting_ends_with_503_after_three_target_durations`.)
async fn check_deadline(s: &mut Setup) {
    s.broadcast.abandon();
    let stored = s.broadcast.newest();
    assert!(!stored.end_list);
    let last = last_part(&stored).expect("parts");
    let next = hint(&stored);
    s.origin_reaches(last).await;
    // Advance Part Limit: 3 s / 0.32 s = 9.4 parts past the last part.
    let limit_url = s.playlist_url(&format!(
        "?_HLS_msn={}&_HLS_part={}",
        last.msn,
        last.part + 9
    ));
    let (playlist_url, part_url) = (s.blocking_url(next, ""), s.part_url(next));
    let (playlist, part, limit) = tokio::join!(
        s.http.get(&playlist_url),
        s.http.get(&part_url),
        s.http.get(&limit_url)
    );
    let deadline = TARGET_DURATION * 3;
    for (what, reply) in [
        ("blocking reload", &playlist),
        ("hinted part", &part),
        ("blocking reload at the limit", &limit),
    ] {
        assert_eq!(reply.status, 503, "{what}: {}", reply.text());
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(
            reply.text(),
            "not available within three target durations\n",
            "{what}"
        );
        assert!(
            reply.elapsed >= deadline,
            "{what}: 503 after {:?}, before three target durations",
            reply.elapsed
        );
    }
    eprintln!(
        "[{}] 503 after {:?} / {:?} / {:?}",
        s.label, playlist.elapsed, part.elapsed, limit.elapsed
    );
}

/// Everything, against one origin.
async fn scenario(mode: Mode, store: Store, label: &'static str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tone = tone_file(dir.path());
    let mut s = Setup::start(mode, store, &tone, label).await;
    // One complete segment and a part of the next.
    s.wait_for_parts(u64::from(PARTS) + 1).await;
    let reads_at_start = s.reads.len();
    // Held still, the stream cannot satisfy a waiting request: what must be
    // answered at once either is, or ends in 503.
    s.hold().await;
    tokio::join!(
        check_bad_requests(&s),
        check_not_found(&s),
        check_headers(&s),
        check_ended(&s),
    );
    // Requests for parts the held stream has not published wait for them;
    // it resumes once they all do.
    let (answered, (), (), ()) = tokio::join!(
        check_blocking(&s),
        check_preload_hint(&s),
        check_h2c(&s),
        s.resume_once_waiting(BLOCKING_WAITERS + 2),
    );
    s.hold().await;
    check_answered_again(&s, answered).await;
    s.broadcast.resume();
    match s.mode {
        Mode::Standalone => {
            let per_part = check_coalescing(&s).await;
            assert!(
                per_part <= 4.0,
                "{per_part:.2} store reads per part with {LISTENERS} listeners"
            );
        }
        Mode::InProcess => {
            // Announcements fill the cache: serving the growing stream
            // needs no store read at all.
            let per_part = check_coalescing(&s).await;
            let live_reads = s
                .reads
                .entries()
                .iter()
                .skip(reads_at_start)
                .filter(|k| k.starts_with(&format!("{LIVE}/")))
                .count();
            assert_eq!(live_reads, 0, "in-process origin read the live stream");
            assert_eq!(per_part, 0.0);
        }
    }
    check_delta(&s).await;
    check_deadline(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_origin_follows_the_publisher() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path().to_str().expect("UTF-8 path")).expect("store");
    scenario(Mode::InProcess, store, "in-process").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_origin_over_a_directory_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path().to_str().expect("UTF-8 path")).expect("store");
    scenario(Mode::Standalone, store, "standalone dir").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_origin_over_s3() {
    let server = s3::S3Server::from_env();
    let bucket = server.create_bucket("origin");
    let store = open_store(&format!("s3://{bucket}/streams")).expect("s3 store");
    scenario(Mode::Standalone, store, "standalone s3").await;
}

// ---------------------------------------------------------------------------
// The binary and ffmpeg
// ---------------------------------------------------------------------------

/// A child process killed when dropped, whatever happened.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `onair` with `args` and returns it with the address its origin
/// logged ("origin listening on http://ADDR/").
fn spawn_onair(args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start onair");
    let stderr = child.stderr.take().expect("stderr");
    let guard = ChildGuard(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split('/').next().unwrap_or("").to_owned();
                let _ = tx.send(addr);
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("onair logged its address");
    (guard, addr.parse().expect("socket address"))
}

/// Decodes `url` with ffmpeg to 48 kHz stereo PCM for at most `limit`
/// seconds of media; asserts ffmpeg warns about nothing; returns the
/// seconds decoded.
fn ffmpeg_decode(url: &str, limit: Option<f64>) -> f64 {
    let mut args: Vec<String> = ["-nostdin", "-v", "warning", "-i", url, "-map", "0:a:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(t) = limit {
        args.extend(["-t".to_owned(), t.to_string()]);
    }
    args.extend(
        ["-f", "s16le", "-ac", "2", "-ar", "48000", "-"]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = Command::new("ffmpeg")
        .args(&args)
        .output()
        .expect("ffmpeg must be installed to check playback");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed on {url}: {warnings}");
    assert!(
        warnings.trim().is_empty(),
        "ffmpeg printed warnings on {url}:\n{warnings}"
    );
    out.stdout.len() as f64 / 4.0 / 48_000.0
}

/// Seconds of media the playlist at `url` lists.
async fn listed_seconds(http: &Http, url: &str) -> f64 {
    let playlist = parse(&http.get(url).await.body);
    playlist
        .segments
        .iter()
        .map(|s| s.duration as f64 / RATE as f64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_live_and_origin_play_in_ffmpeg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tone = tone_file(dir.path());
    let store = dir.path().join("store");
    let store_arg = store.to_str().expect("UTF-8 path");
    let tone_arg = tone.to_str().expect("UTF-8 path");
    let http = Http::default();
    let (mut live, addr) = spawn_onair(&[
        "live",
        "--input",
        tone_arg,
        "--loop",
        "--http",
        "127.0.0.1:0",
        "--store",
        store_arg,
        "--stream",
        "bin",
        "--parts-per-segment",
        "3",
        "--window",
        "8",
    ]);
    let index = format!("http://{addr}/bin/index.m3u8");
    // Wait for three segments, then decode the growing stream.
    let media = format!("http://{addr}/bin/{RENDITION}/live.m3u8");
    within("the live stream growing to three segments", async {
        // The playlist exists once the first part is stored; nothing
        // announces that to a client, so look every few milliseconds.
        let first = loop {
            let reply = http.get(&media).await;
            if reply.status == 200 {
                break parse(&reply.body);
            }
            assert_eq!(reply.status, 404, "{}", reply.text());
            tokio::time::sleep(POLL).await;
        };
        // Then block until the third segment is complete (503 after three
        // target durations on a slow machine: ask again).
        let third = first.first_listed_msn() + 2;
        loop {
            let reply = http.get(&format!("{media}?_HLS_msn={third}")).await;
            match reply.status {
                200 => {
                    let segments = parse(&reply.body).segments.len();
                    assert!(segments >= 3, "segment {third} complete, {segments} listed");
                    break;
                }
                503 => {}
                status => panic!("{status}: {}", reply.text()),
            }
        }
    })
    .await;
    let growing = tokio::task::spawn_blocking({
        let index = index.clone();
        move || ffmpeg_decode(&index, Some(2.0))
    })
    .await
    .expect("ffmpeg task");
    assert!((growing - 2.0).abs() < 0.05, "decoded {growing} s of 2");

    // End the broadcast (SIGINT: EXT-X-ENDLIST), then serve the finished
    // stream from the store with `onair origin`.
    let pid = live.0.id().to_string();
    let signalled = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(signalled.success());
    let status = live.0.wait().expect("onair live exits");
    assert!(status.success(), "onair live: {status}");
    let (_origin, addr) = spawn_onair(&["origin", "--store", store_arg, "--http", "127.0.0.1:0"]);
    let index = format!("http://{addr}/bin/index.m3u8");
    let listed = listed_seconds(&http, &format!("http://{addr}/bin/{RENDITION}/live.m3u8")).await;
    let ended = tokio::task::spawn_blocking(move || ffmpeg_decode(&index, None))
        .await
        .expect("ffmpeg task");
    // The finished playlist lists the window; ffmpeg decodes all of it. Its
    // HLS reader does not trim the AAC priming (2048 samples, 43 ms) nor the
    // rest of the last frame (< 21 ms), hence the tolerance.
    assert!(
        (ended - listed).abs() < 0.1,
        "decoded {ended} s of a playlist listing {listed} s"
    );
    eprintln!(
        "ffmpeg decoded {growing:.3} s of the growing stream and {ended:.3} s of the ended one"
    );
}

/// An origin with `config` over an empty in-memory store, serving on a
/// port of its own until the test's runtime ends; its address.
async fn serve_empty(config: OriginConfig) -> SocketAddr {
    let store = open_store("memory://").expect("memory store");
    let origin = Origin::new(&store, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { origin.serve(listener).await });
    addr
}

/// Clients that connect and send nothing are let go after the header read
/// timeout, counted from accept (hyper's own starts with the first byte):
/// they cannot hold the process's file descriptors. A client that asks
/// meanwhile is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_send_a_byte_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const IDLE: usize = 200;
    let addr = serve_empty(OriginConfig {
        header_read_timeout: Duration::from_secs(1),
        ..OriginConfig::default()
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // A client that asks is served while the idle ones wait.
    let mut asking = tokio::net::TcpStream::connect(addr).await.expect("connect");
    asking
        .write_all(b"GET /nothing/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    asking.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // Every idle connection is closed by the server: a read ends (EOF or
    // reset) well within ten times the limit.
    for (i, mut stream) in idle.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "idle connection {i} is still open: {read:?}"
        );
    }
}

/// With a cap per client address, one more connection from an address that
/// holds the cap is closed at once; closing one lets the next one in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_when_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = serve_empty(OriginConfig {
        max_connections_per_address: 3,
        ..OriginConfig::default()
    })
    .await;
    async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut fourth = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert!(closed(&mut fourth).await, "a fourth connection was kept");
    for stream in &mut held {
        assert!(
            !closed(stream).await,
            "a connection within the cap was closed"
        );
    }
    // One ends: the next is served.
    drop(held.pop());
    let mut answered = false;
    for _ in 0..20 {
        let mut next = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let _ = next
            .write_all(b"GET /x/index.m3u8 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = String::new();
        let _ = next.read_to_string(&mut answer).await;
        if answer.starts_with("HTTP/1.1 404") {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answered, "the freed slot was not given again");
}
