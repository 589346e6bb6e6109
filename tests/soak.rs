//! A soak in simulated time: a long program through the real pipeline and
//! the live publisher, with live hosts that connect, drop and replace their
//! own sessions at random, and a store that fails at random (error bursts,
//! outages of 1 to 20 s, latency spikes, calls that never answer). At every
//! 20 ms tick, so after every batch the pipeline hands over, the soak reads
//! what the store holds and checks what a listener relies on:
//!
//! - nothing listed is missing from the store, and no immutable object is
//!   stored twice with different bytes (the fault-injecting store checks
//!   every put as it happens; the soak checks every stored `live.m3u8`
//!   against the store again at each tick, so a deletion of a listed
//!   object shows too);
//! - the Media Sequence Number and the last part never go back;
//! - each listed segment's `EXT-X-PROGRAM-DATE-TIME` is the timeline's epoch
//!   plus the segment's program start, read from the media itself (`tfdt`
//!   and sample durations, less the encoder delay of the init segment's
//!   edit list), and listed segments follow one another without a gap;
//! - the listed complete segments cover at most the window plus one
//!   segment, the open segment less than a segment;
//! - the publisher's backlog stays below twice the window's bytes, and once
//!   the publisher is idle the store holds no segment older than the window
//!   plus the deletion delay, nor more objects than that.
//!
//! Time is tokio's paused clock. The test task drives the pipeline as
//! `run::broadcast` does (ingest events, advance to the clock, hand the
//! batch to the live driver, carry out the studio's session closes) and
//! sleeps to the next tick; meanwhile the live driver and the store's
//! faults run in the same simulated time. (`run::broadcast` runs its
//! pipeline under `spawn_blocking`, which keeps a paused clock from moving
//! by itself, so its publisher's timers could only run in real time.)
//!
//! `ONAIR_SOAK_SECONDS` sets the program length (default 600),
//! `ONAIR_SOAK_SEED` the seed of every random choice (printed; default
//! fixed). `scripts/soak.sh` runs a long one and prints its figures.

#[path = "common/faulty_store.rs"]
mod faulty_store;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use faulty_store::{Faults, FaultyStore};
use mp4_atom::{Decode, Ftyp, Moof, Moov};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use onair::audio::{Decoded, FeedConfig, LiveFeedConfig, MixerConfig};
use onair::encode::{AacConfig, OpusConfig};
use onair::hls::{MediaPlaylist, TimelineConfig};
use onair::ingest::{IngestEvent, SessionId};
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{Pipeline, PipelineConfig, RENDITIONS};
use onair::publish::{self, LiveSettings, PublishStatus, Publisher, RetryPolicy, Store};
use onair::time::{ProgramTime, SAMPLE_RATE, millis, rescale};
use tokio::time::Instant;

const STREAM: &str = "soak";
/// One live tick: 20 ms at 48 kHz.
const TICK: u64 = 960;
const TICK_TIME: Duration = Duration::from_millis(20);
const SECOND: u64 = SAMPLE_RATE as u64;
const HOSTS: [(&str, f32); 2] = [("anna", 440.0), ("ben", 660.0)];
/// Program length when `ONAIR_SOAK_SECONDS` is not set: ten minutes.
const DEFAULT_SECONDS: u64 = 600;
const DEFAULT_SEED: u64 = 0x50a4_2026;

/// A seeded generator (SplitMix64): every random choice of a soak comes
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `ppm` parts per million.
    fn chance(&mut self, ppm: u64) -> bool {
        self.next() % 1_000_000 < ppm
    }

    fn float(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

fn pipeline() -> Pipeline {
    let config = PipelineConfig {
        opus: OpusConfig::default(),
        aac: AacConfig::default(),
        mixer: MixerConfig::default(),
        packager: PackagerConfig {
            stream: STREAM.to_owned(),
            timeline: TimelineConfig {
                epoch_unix_ms: 1_764_300_000_123,
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Live,
        },
        parallel: false,
        returns: Default::default(),
    };
    let mut pipeline = Pipeline::new(config, Vec::new()).expect("pipeline");
    for (name, _) in HOSTS {
        let feed = FeedConfig {
            name: name.into(),
            gain_db: -6.0,
            muted: false,
        };
        pipeline
            .add_live_host(feed, LiveFeedConfig::default())
            .expect("live host");
    }
    pipeline
}

/// How a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The publisher says goodbye.
    Clean,
    /// The publisher vanishes; the server notices seconds later.
    Silent,
    /// The publisher reconnects while its old session still sends: the
    /// studio closes the old one.
    Replaced,
}

/// One publisher session: 20 ms blocks of a tone at the publisher's rate and
/// clock, arriving with network jitter and now and then a stall.
struct Session {
    id: SessionId,
    rate: u32,
    channels: usize,
    drift_ppm: f64,
    /// Program time of the connection.
    start: u64,
    /// Blocks sent.
    sent: u64,
    /// Arrival of block `sent`, once drawn.
    next_arrival: Option<u64>,
    last_arrival: u64,
    /// Blocks ready before this arrive together at it (a TCP stall).
    stall_until: u64,
    /// Program time the publisher stops sending.
    stop_at: u64,
    ending: Ending,
    /// When the server reports the session gone (set once it stopped).
    disconnect_at: Option<u64>,
    phase: f64,
}

impl Session {
    fn frames(&self) -> u64 {
        u64::from(self.rate / 50)
    }

    /// Program time at which block `k` is captured, on the publisher's clock.
    fn ready_at(&self, k: u64) -> u64 {
        let frames = ((k + 1) * self.frames()) as f64;
        let seconds = frames / (f64::from(self.rate) * (1.0 + self.drift_ppm * 1e-6));
        self.start + (seconds * SECOND as f64).ceil() as u64
    }

    /// Audio events that have arrived by `now`.
    fn deliver(&mut self, now: u64, tone: f32, rng: &mut Rng, out: &mut Vec<IngestEvent>) {
        loop {
            let ready = self.ready_at(self.sent);
            if ready > self.stop_at {
                return;
            }
            let arrival = match self.next_arrival {
                Some(a) => a,
                None => {
                    // About one stall a minute, 0.2 to 2.5 s long.
                    if ready >= self.stall_until && rng.chance(330) {
                        self.stall_until = ready + rng.range(SECOND / 5, SECOND * 5 / 2);
                    }
                    let jitter = rng.range(0, SECOND / 25);
                    let a =
                        (ready + jitter)
                            .max(self.last_arrival)
                            .max(if ready < self.stall_until {
                                self.stall_until
                            } else {
                                0
                            });
                    self.next_arrival = Some(a);
                    a
                }
            };
            if arrival > now {
                return;
            }
            out.push(IngestEvent::Audio {
                session: self.id,
                host_ts_ms: (self.sent * 20) as i64,
                audio: self.block(tone),
                arrival: ProgramTime::from_samples(arrival),
            });
            self.last_arrival = arrival;
            self.next_arrival = None;
            self.sent += 1;
        }
    }

    fn block(&mut self, tone: f32) -> Decoded {
        let frames = self.frames() as usize;
        let step = std::f64::consts::TAU * f64::from(tone) / f64::from(self.rate);
        let mut samples = Vec::with_capacity(frames * self.channels);
        for _ in 0..frames {
            let v = (0.25 * self.phase.sin()) as f32;
            self.phase = (self.phase + step) % std::f64::consts::TAU;
            samples.extend(std::iter::repeat_n(v, self.channels));
        }
        Decoded {
            rate: self.rate,
            channels: self.channels,
            samples,
        }
    }
}

/// A live host: offline, or on air with one session, plus sessions that
/// still send or wait for the server to report them gone.
struct Host {
    name: &'static str,
    tone: f32,
    current: Option<Session>,
    /// Offline until then (when `current` is none).
    offline_until: u64,
    old: Vec<Session>,
}

#[derive(Debug, Default)]
struct HostFigures {
    sessions: u64,
    clean: u64,
    silent: u64,
    replaced: u64,
    closes: u64,
    unexpected_closes: Vec<String>,
}

impl Host {
    fn connect(&mut self, now: u64, rng: &mut Rng, figures: &mut HostFigures) -> IngestEvent {
        let (rate, channels) = match rng.range(0, 3) {
            0 => (44_100, 1),
            1 => (44_100, 2),
            2 => (48_000, 1),
            _ => (48_000, 2),
        };
        let ending = match rng.range(0, 2) {
            0 => Ending::Clean,
            1 => Ending::Silent,
            _ => Ending::Replaced,
        };
        let session = Session {
            id: SessionId::next(),
            rate,
            channels,
            drift_ppm: rng.float() * 400.0 - 200.0,
            start: now,
            sent: 0,
            next_arrival: None,
            last_arrival: now,
            stall_until: 0,
            stop_at: now + rng.range(10 * SECOND, 300 * SECOND),
            ending,
            disconnect_at: None,
            phase: 0.0,
        };
        figures.sessions += 1;
        let event = IngestEvent::Connected {
            host: self.name.into(),
            session: session.id,
            protocol: "rtmp",
            peer: format!("192.0.2.{}:1935", session.id.0 % 250),
        };
        self.current = Some(session);
        event
    }

    /// Everything the host's publishers do by `now`.
    fn step(&mut self, now: u64, rng: &mut Rng, figures: &mut HostFigures) -> Vec<IngestEvent> {
        let mut events = Vec::new();
        if self.current.is_none() && now >= self.offline_until {
            events.push(self.connect(now, rng, figures));
        }
        for s in &mut self.old {
            s.deliver(now, self.tone, rng, &mut events);
        }
        self.old.retain(|s| {
            let gone = s.disconnect_at.is_some_and(|at| at <= now);
            if gone {
                events.push(IngestEvent::Disconnected {
                    session: s.id,
                    reason: "connection closed".into(),
                });
            }
            !gone
        });
        if let Some(s) = &mut self.current {
            s.deliver(now, self.tone, rng, &mut events);
            if now >= s.stop_at {
                let mut s = self.current.take().expect("current");
                match s.ending {
                    Ending::Clean => {
                        figures.clean += 1;
                        s.disconnect_at = Some(now);
                        self.offline_until = now + rng.range(SECOND, 120 * SECOND);
                    }
                    Ending::Silent => {
                        // The server times the connection out 5 to 10 s
                        // later; the publisher may be back before that.
                        figures.silent += 1;
                        s.disconnect_at = Some(now + rng.range(5 * SECOND, 10 * SECOND));
                        self.offline_until = now + rng.range(SECOND, 30 * SECOND);
                    }
                    Ending::Replaced => {
                        // The old session goes on sending until the studio
                        // has it closed.
                        figures.replaced += 1;
                        s.stop_at = u64::MAX;
                        self.offline_until = now;
                    }
                }
                self.old.push(s);
                if self.offline_until <= now {
                    events.push(self.connect(now, rng, figures));
                }
            }
        }
        events
    }

    /// The studio closed `id`: it stops, and the server reports it gone.
    fn close(&mut self, id: SessionId, reason: &str, now: u64, figures: &mut HostFigures) -> bool {
        if let Some(s) = self.old.iter_mut().find(|s| s.id == id) {
            figures.closes += 1;
            s.stop_at = 0;
            s.disconnect_at = Some(now);
            return true;
        }
        if self.current.as_ref().is_some_and(|s| s.id == id) {
            // The studio ended a session the publisher still considers live.
            figures
                .unexpected_closes
                .push(format!("{}: {id}: {reason}", self.name));
            let mut s = self.current.take().expect("current");
            s.stop_at = 0;
            s.disconnect_at = Some(now);
            self.old.push(s);
            self.offline_until = now + SECOND;
            return true;
        }
        false
    }
}

/// The store's faults over the program, drawn from the seed.
struct FaultPlan {
    rng: Rng,
    background_ppm: u32,
    base_latency: Duration,
    next_burst: u64,
    burst_end: Option<u64>,
    next_outage: u64,
    refusal_end: Option<u64>,
    next_spike: u64,
    spike_end: Option<u64>,
    next_hang: u64,
    bursts: u64,
    outages: u64,
    refusals: u64,
    outage_samples: u64,
    longest_outage: u64,
    spikes: u64,
    longest_spike: Duration,
    hangs: u64,
}

impl FaultPlan {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed ^ 0xfa17);
        let background_ppm = rng.range(0, 5_000) as u32;
        let base_latency = Duration::from_millis(rng.range(0, 40));
        Self {
            next_burst: rng.range(10, 120) * SECOND,
            next_outage: rng.range(20, 120) * SECOND,
            next_spike: rng.range(20, 180) * SECOND,
            next_hang: rng.range(30, 300) * SECOND,
            rng,
            background_ppm,
            base_latency,
            burst_end: None,
            refusal_end: None,
            refusals: 0,
            spike_end: None,
            bursts: 0,
            outages: 0,
            outage_samples: 0,
            longest_outage: 0,
            spikes: 0,
            longest_spike: Duration::ZERO,
            hangs: 0,
        }
    }

    fn start(&self, faults: &Faults, seed: u64) {
        faults.random_errors(self.background_ppm, seed);
        faults.latency(self.base_latency);
    }

    /// Sets the faults for program time `now`; `origin` is the tokio instant
    /// of program time 0.
    fn apply(&mut self, now: u64, origin: Instant, faults: &Faults) {
        let at = |t: u64| origin + Duration::from_nanos(rescale(t, SAMPLE_RATE, 1_000_000_000));
        if self.burst_end.is_some_and(|end| now >= end) {
            self.burst_end = None;
            faults
                .error_ppm
                .store(self.background_ppm, Ordering::SeqCst);
        }
        if now >= self.next_burst {
            let ppm = self.rng.range(20_000, 600_000) as u32;
            let len = self.rng.range(2 * SECOND, 40 * SECOND);
            faults.error_ppm.store(ppm, Ordering::SeqCst);
            self.burst_end = Some(now + len);
            self.next_burst = now + len + self.rng.range(20, 180) * SECOND;
            self.bursts += 1;
        }
        if self.refusal_end.is_some_and(|end| now >= end) {
            self.refusal_end = None;
            faults.refuse.store(false, Ordering::SeqCst);
        }
        if now >= self.next_outage {
            let len = self.rng.range(SECOND, 20 * SECOND);
            // One in four refuses every call (403) instead of failing it:
            // a permanent error mid-broadcast is waited out like an outage.
            if self.rng.chance(250_000) {
                faults.refuse.store(true, Ordering::SeqCst);
                self.refusal_end = Some(now + len);
                self.refusals += 1;
            } else {
                faults.outage(at(now), at(now + len));
            }
            self.next_outage = now + len + self.rng.range(20, 240) * SECOND;
            self.outages += 1;
            self.outage_samples += len;
            self.longest_outage = self.longest_outage.max(len);
        }
        if self.spike_end.is_some_and(|end| now >= end) {
            self.spike_end = None;
            faults.latency(self.base_latency);
        }
        if now >= self.next_spike {
            // Now and then beyond the live driver's 10 s attempt timeout.
            let latency = Duration::from_millis(if self.rng.chance(200_000) {
                self.rng.range(10_000, 15_000)
            } else {
                self.rng.range(100, 4_000)
            });
            let len = self.rng.range(SECOND, 30 * SECOND);
            faults.latency(latency);
            self.spike_end = Some(now + len);
            self.next_spike = now + len + self.rng.range(30, 300) * SECOND;
            self.spikes += 1;
            self.longest_spike = self.longest_spike.max(latency);
        }
        if now >= self.next_hang {
            let n = self.rng.range(1, 3) as u32;
            faults.hang_puts.store(n, Ordering::SeqCst);
            self.next_hang = now + self.rng.range(60, 600) * SECOND;
            self.hangs += u64::from(n);
        }
    }

    /// A healthy store for the end of the broadcast.
    fn clear(&self, faults: &Faults) {
        faults.error_ppm.store(0, Ordering::SeqCst);
        faults.latency(Duration::ZERO);
        faults.hang_puts.store(0, Ordering::SeqCst);
        faults.refuse.store(false, Ordering::SeqCst);
        faults.outage(Instant::now(), Instant::now());
    }
}

/// A rendition's state as the checks last saw it in the store.
#[derive(Default)]
struct Seen {
    bytes: Option<Bytes>,
    media_sequence: u64,
    last_part: (u64, u32),
    /// Encoder delay from the init segment's edit list.
    delay: Option<u64>,
    /// Program start of each listed object read so far, by URI.
    starts: HashMap<String, u64>,
    /// Program time at the end of the last stored part.
    edge: u64,
    playlist: Option<MediaPlaylist>,
}

/// What the soak found, besides its failures.
#[derive(Debug, Default)]
struct Figures {
    checks: u64,
    playlists_checked: u64,
    segments_dated: u64,
    max_backlog_bytes: u64,
    max_backlog_batches: u64,
    max_catch_up_ms: u64,
    max_lag: u64,
    max_objects: usize,
    idle_checks: u64,
}

/// The invariants, checked against the store after each tick.
struct Checker {
    seed: u64,
    inner: Store,
    faults: Arc<Faults>,
    epoch_unix_ms: i64,
    window: u64,
    segment: u64,
    parts_per_segment: u32,
    deletion_delay: u64,
    backlog_bound: u64,
    seen: Vec<Seen>,
    figures: Figures,
}

impl Checker {
    fn new(seed: u64, inner: Store, faults: Arc<Faults>, pipeline: &Pipeline) -> Self {
        let timeline = pipeline.packager().timeline();
        let config = timeline.config();
        let segment = config.part_target * u64::from(config.parts_per_segment);
        let window = config.window.expect("a live window");
        let td = timeline.target_duration_samples();
        // What the newest playlists name: the window's segments plus the one
        // closing, the parts of the last three target durations and the
        // open segment, at the configured rates (Opus is VBR: a quarter on
        // top) plus CMAF's 5 kb/s; plus the playlists themselves. The live
        // driver may hold one merged batch while another waits behind it:
        // twice that.
        let rate = |bitrate: u32| u64::from(bitrate + bitrate / 4 + 5_000) / 8;
        let bytes_per_second =
            rate(OpusConfig::default().bitrate) + rate(AacConfig::default().bitrate);
        let listed = window + 2 * segment + 3 * td + segment;
        let window_bytes = bytes_per_second * listed.div_ceil(SECOND) + 8 * 16 * 1024;
        Self {
            seed,
            inner,
            faults,
            epoch_unix_ms: config.epoch_unix_ms,
            window,
            segment,
            parts_per_segment: config.parts_per_segment,
            deletion_delay: timeline.deletion_delay(),
            backlog_bound: 2 * window_bytes,
            seen: RENDITIONS.iter().map(|_| Seen::default()).collect(),
            figures: Figures::default(),
        }
    }

    fn fail(&self, now: u64, what: String) -> ! {
        panic!(
            "soak seed {} at program {:.3} s: {what}",
            self.seed,
            now as f64 / SECOND as f64
        );
    }

    async fn get(&self, key: &str) -> Option<Bytes> {
        let got = self.inner.object_store().get(&Path::from(key)).await.ok()?;
        Some(got.bytes().await.expect("read from memory"))
    }

    /// Checks the store at program time `now`, with the packager's head.
    async fn check(&mut self, now: u64, head: u64, status: &PublishStatus) {
        self.figures.checks += 1;
        let violations = self.faults.violations();
        if !violations.is_empty() {
            self.fail(now, format!("the store saw {violations:?}"));
        }
        if status.state == "stopped" {
            self.fail(
                now,
                format!("the publisher stopped: {:?}", status.last_error),
            );
        }
        let f = &mut self.figures;
        f.max_backlog_bytes = f.max_backlog_bytes.max(status.backlog_bytes);
        f.max_backlog_batches = f.max_backlog_batches.max(status.backlog_batches);
        f.max_catch_up_ms = f.max_catch_up_ms.max(status.last_catch_up_ms.unwrap_or(0));
        if status.backlog_bytes > self.backlog_bound {
            self.fail(
                now,
                format!(
                    "backlog of {} bytes ({} batches) over the bound of {} bytes",
                    status.backlog_bytes, status.backlog_batches, self.backlog_bound
                ),
            );
        }
        let mut changed = false;
        for r in 0..RENDITIONS.len() {
            changed |= self.check_rendition(r, now).await;
        }
        let edge = self.seen.iter().map(|s| s.edge).min().unwrap_or(0);
        self.figures.max_lag = self.figures.max_lag.max(head.saturating_sub(edge));
        // Once nothing waits, deletions have caught up too.
        if changed && status.backlog_batches == 0 && status.state == "ok" {
            self.check_retention(now);
        }
    }

    /// Checks the stored `live.m3u8` of rendition `r` if it changed; returns
    /// whether it did.
    async fn check_rendition(&mut self, r: usize, now: u64) -> bool {
        let name = RENDITIONS[r];
        let dir = format!("{STREAM}/{name}");
        let Some(bytes) = self.get(&format!("{dir}/live.m3u8")).await else {
            return false;
        };
        if self.seen[r].bytes.as_ref() == Some(&bytes) {
            return false;
        }
        self.figures.playlists_checked += 1;
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let playlist = MediaPlaylist::parse(text)
            .unwrap_or_else(|e| self.fail(now, format!("{dir}/live.m3u8 does not parse: {e}")));
        let rules = onair::hls::check(&playlist);
        if !rules.is_empty() {
            self.fail(now, format!("{dir}/live.m3u8 breaks {rules:?}"));
        }
        // Nothing listed is missing.
        let mut named: Vec<&str> = Vec::new();
        for s in &playlist.segments {
            named.push(&s.uri);
            named.extend(s.parts.iter().map(|p| p.uri.as_str()));
            named.extend(s.map.as_ref().map(|m| m.uri.as_str()));
        }
        if let Some(open) = &playlist.open {
            named.extend(open.parts.iter().map(|p| p.uri.as_str()));
            named.extend(open.map.as_ref().map(|m| m.uri.as_str()));
        }
        for uri in named {
            if !self.faults.has(&format!("{dir}/{uri}")) {
                self.fail(
                    now,
                    format!("{dir}/live.m3u8 lists {uri}, which is not stored"),
                );
            }
        }
        // Monotonic numbering.
        let last_part = match &playlist.open {
            Some(open) if !open.parts.is_empty() => {
                (playlist.open_msn(), open.parts.len() as u32 - 1)
            }
            _ => {
                let last = playlist
                    .segments
                    .last()
                    .unwrap_or_else(|| self.fail(now, format!("{dir}/live.m3u8 lists no part")));
                (
                    playlist.open_msn() - 1,
                    (last.parts.len() as u32).max(1) - 1,
                )
            }
        };
        let seen = &self.seen[r];
        if seen.bytes.is_some()
            && (playlist.media_sequence < seen.media_sequence || last_part < seen.last_part)
        {
            self.fail(
                now,
                format!(
                    "{dir}/live.m3u8 went back: MSN {} last part {:?} after MSN {} last part {:?}",
                    playlist.media_sequence, last_part, seen.media_sequence, seen.last_part
                ),
            );
        }
        // A bounded window.
        let complete: u64 = playlist.segments.iter().map(|s| s.duration).sum();
        if complete > self.window + self.segment {
            self.fail(
                now,
                format!(
                    "{dir}/live.m3u8 lists {complete} samples of complete segments, over the window {} + one segment",
                    self.window
                ),
            );
        }
        let open_parts = playlist.open.as_ref().map_or(0, |o| o.parts.len());
        if open_parts >= self.parts_per_segment as usize {
            self.fail(
                now,
                format!("{dir}/live.m3u8 has an open segment of {open_parts} parts"),
            );
        }
        // Dates from the media.
        self.date_check(r, &dir, &playlist, now).await;
        let seen = &mut self.seen[r];
        seen.media_sequence = playlist.media_sequence;
        seen.last_part = last_part;
        seen.bytes = Some(bytes);
        seen.playlist = Some(playlist);
        true
    }

    /// Each listed segment's date is the epoch plus its program start, read
    /// from the media; the segments follow one another without a gap.
    async fn date_check(&mut self, r: usize, dir: &str, playlist: &MediaPlaylist, now: u64) {
        let delay = match self.seen[r].delay {
            Some(d) => d,
            None => {
                let init = self
                    .get(&format!("{dir}/init.mp4"))
                    .await
                    .unwrap_or_else(|| self.fail(now, format!("{dir}/init.mp4 is not stored")));
                let d = init_delay(&init);
                self.seen[r].delay = Some(d);
                d
            }
        };
        // (URI of the object that starts the segment, its listed duration,
        // the segment's date.)
        let mut listed: Vec<(&str, u64, Option<i64>)> = playlist
            .segments
            .iter()
            .map(|s| {
                (
                    s.uri.as_str(),
                    s.duration,
                    s.program_date_time.map(|d| d.timestamp_millis()),
                )
            })
            .collect();
        if let Some(open) = &playlist.open
            && let Some(first) = open.parts.first()
        {
            listed.push((
                first.uri.as_str(),
                first.duration,
                open.program_date_time.map(|d| d.timestamp_millis()),
            ));
        }
        let mut expected_start: Option<u64> = None;
        for (uri, duration, date) in listed {
            let start = match self.seen[r].starts.get(uri) {
                Some(&s) => s,
                None => {
                    let key = format!("{dir}/{uri}");
                    let media = self
                        .get(&key)
                        .await
                        .unwrap_or_else(|| self.fail(now, format!("{key} is listed, not stored")));
                    let end =
                        media_end(&media).unwrap_or_else(|e| self.fail(now, format!("{key}: {e}")));
                    let Some(start) = end.checked_sub(delay + duration) else {
                        self.fail(
                            now,
                            format!("{key} ends at media time {end}, before its duration"),
                        );
                    };
                    self.seen[r].starts.insert(uri.to_owned(), start);
                    self.figures.segments_dated += 1;
                    start
                }
            };
            let Some(date) = date else {
                self.fail(now, format!("{dir}: {uri} has no EXT-X-PROGRAM-DATE-TIME"));
            };
            let want = self.epoch_unix_ms + millis(start) as i64;
            if date != want {
                self.fail(
                    now,
                    format!(
                        "{dir}: {uri} dated {date} ms, but it starts at program sample {start}: epoch {} + {} ms = {want}",
                        self.epoch_unix_ms,
                        millis(start)
                    ),
                );
            }
            if let Some(e) = expected_start
                && e != start
            {
                self.fail(
                    now,
                    format!(
                        "{dir}: {uri} starts at program sample {start}, its predecessor ends at {e}"
                    ),
                );
            }
            expected_start = Some(start + duration);
        }
        // The stored live edge: the end of the last listed part.
        let open_rest: u64 = playlist
            .open
            .as_ref()
            .map_or(0, |o| o.parts.iter().skip(1).map(|p| p.duration).sum());
        let seen = &mut self.seen[r];
        seen.edge = expected_start.unwrap_or(0) + open_rest;
        // Forget what has left the playlist.
        if seen.starts.len() > 4 * (playlist.segments.len() + 1) {
            let keep: HashSet<&str> = playlist
                .segments
                .iter()
                .map(|s| s.uri.as_str())
                .chain(
                    playlist
                        .open
                        .iter()
                        .flat_map(|o| o.parts.first())
                        .map(|p| p.uri.as_str()),
                )
                .collect();
            seen.starts.retain(|k, _| keep.contains(k.as_str()));
        }
    }

    /// With nothing waiting for the store, deletions are done: no stored
    /// object belongs to a segment that left the window more than the
    /// deletion delay ago, and the object count is what that allows.
    fn check_retention(&mut self, now: u64) {
        self.figures.idle_checks += 1;
        let keys = self.faults.stored_keys();
        self.figures.max_objects = self.figures.max_objects.max(keys.len());
        // Segments that left within the deletion delay (one at most per
        // closed segment), and the one closing as the check runs.
        let grace = self.deletion_delay.div_ceil(self.segment) + 1;
        let listed_max = (self.window + self.segment).div_ceil(self.segment) + 1;
        let per_segment = 1 + 2 * self.parts_per_segment as usize;
        let bound = RENDITIONS.len() * ((listed_max + grace) as usize * per_segment + 2) + 1;
        if keys.len() > bound {
            self.fail(
                now,
                format!("the store holds {} objects, over {bound}", keys.len()),
            );
        }
        for (r, name) in RENDITIONS.iter().enumerate() {
            let Some(playlist) = &self.seen[r].playlist else {
                continue;
            };
            let oldest_allowed = playlist.media_sequence.saturating_sub(grace);
            let prefix = format!("{STREAM}/{name}/");
            for key in &keys {
                let Some(rest) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let file = rest.strip_prefix("at/").unwrap_or(rest);
                let Some(msn) = file.split('.').next().and_then(|m| m.parse::<u64>().ok()) else {
                    continue;
                };
                if msn < oldest_allowed {
                    self.fail(
                        now,
                        format!(
                            "{key} is still stored, the playlist starting at MSN {} and the deletion delay allow MSN {oldest_allowed} and later",
                            playlist.media_sequence
                        ),
                    );
                }
            }
        }
    }
}

/// The encoder delay in an init segment: its edit list's media time.
fn init_delay(init: &[u8]) -> u64 {
    let mut rest = init;
    Ftyp::decode(&mut rest).expect("ftyp");
    let moov = Moov::decode(&mut rest).expect("moov");
    let elst = moov.trak[0]
        .edts
        .as_ref()
        .and_then(|e| e.elst.as_ref())
        .expect("an edit list");
    elst.entries[0].media_time.expect("a media time")
}

/// Media time at the end of a segment or part: the last fragment's `tfdt`
/// plus its sample durations.
fn media_end(bytes: &[u8]) -> Result<u64, String> {
    let mut at = 0usize;
    let mut end = None;
    while at + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if size < 8 || at + size > bytes.len() {
            return Err(format!("box of {size} bytes at {at}"));
        }
        if &bytes[at + 4..at + 8] == b"moof" {
            let mut slice = &bytes[at..at + size];
            let moof = Moof::decode(&mut slice).map_err(|e| e.to_string())?;
            let traf = moof.traf.first().ok_or("moof without traf")?;
            let base = traf
                .tfdt
                .as_ref()
                .ok_or("traf without tfdt")?
                .base_media_decode_time;
            let default = traf.tfhd.default_sample_duration;
            let mut total = 0u64;
            for trun in &traf.trun {
                for s in &trun.samples {
                    total += u64::from(s.duration.or(default).ok_or("no sample duration")?);
                }
            }
            end = Some(base + total);
        }
        at += size;
    }
    end.ok_or_else(|| "no moof".to_owned())
}

#[tokio::test(start_paused = true)]
async fn soak() {
    let seconds = env_u64("ONAIR_SOAK_SECONDS", DEFAULT_SECONDS);
    let seed = env_u64("ONAIR_SOAK_SEED", DEFAULT_SEED);
    println!("soak: seed={seed} program_s={seconds}");
    let wall = std::time::Instant::now();

    let inner = publish::open_store("memory://").expect("memory store");
    let faults = Arc::new(Faults::default());
    let faulty = FaultyStore::new(Arc::clone(inner.object_store()), Arc::clone(&faults));
    let store = Store::new(Arc::new(faulty), inner.url(), inner.capabilities());

    let mut pipeline = pipeline();
    // The live publisher as a broadcast starts it (`run::LivePublisher`).
    let (td, part) = {
        let timeline = pipeline.packager().timeline();
        (timeline.target_duration(), timeline.config().part_target)
    };
    let publisher = Publisher::new(store, RetryPolicy::default())
        .with_playlist_timing(td as u32, millis(part) as u32);
    let part_time = Duration::from_nanos(rescale(part, SAMPLE_RATE, 1_000_000_000));
    let (handle, task) = publish::spawn_live(publisher, LiveSettings::for_part_target(part_time));
    let monitor = handle.monitor();
    let mut checker = Checker::new(seed, inner.clone(), Arc::clone(&faults), &pipeline);

    let mut plan = FaultPlan::new(seed);
    plan.start(&faults, seed);
    let mut rng = Rng(seed);
    let mut hosts: Vec<Host> = HOSTS
        .iter()
        .map(|&(name, tone)| Host {
            name,
            tone,
            current: None,
            offline_until: rng.range(0, 30) * SECOND,
            old: Vec::new(),
        })
        .collect();
    let mut host_figures = HostFigures::default();

    // Program time `first` is now; every tick adds 20 ms of both.
    let first = pipeline.clock().samples();
    let origin = Instant::now();
    handle.send(pipeline.start().expect("start")).expect("send");
    let ticks = seconds * SECOND / TICK;
    let mut deadline = origin;
    for tick in 1..=ticks {
        deadline += TICK_TIME;
        tokio::time::sleep_until(deadline).await;
        let now = first + tick * TICK;
        checker
            .check(
                now,
                pipeline.packager().timeline().head().samples(),
                &monitor.status(),
            )
            .await;
        plan.apply(now - first, origin, &faults);
        for host in &mut hosts {
            for event in host.step(now, &mut rng, &mut host_figures) {
                pipeline.ingest(event);
            }
        }
        if let Some(batch) = pipeline
            .advance(ProgramTime::from_samples(now))
            .expect("advance")
        {
            handle.send(batch).expect("the publisher runs");
        }
        for close in pipeline.take_closes() {
            let known = hosts
                .iter_mut()
                .any(|h| h.close(close.session, &close.reason, now, &mut host_figures));
            assert!(known, "the studio closed {close:?}, which no host had");
        }
    }
    // The end of the broadcast, on a store that works (a broadcast stopped
    // during an outage gives up on what waits, by design).
    let program = pipeline.clock().samples() - first;
    plan.clear(&faults);
    handle
        .send(pipeline.finish().expect("finish"))
        .expect("send");
    drop(handle);
    let summary = task.await.expect("publisher task").expect("publisher");
    let status = monitor.status();
    let end = first + program;
    checker.check(end, end, &status).await;
    checker.check_retention(end);
    for (r, name) in RENDITIONS.iter().enumerate() {
        let playlist = checker.seen[r].playlist.as_ref().expect("a playlist");
        assert!(playlist.end_list, "{name}: the stream was ended");
        assert_eq!(checker.seen[r].edge, end, "{name}: every part is stored");
    }
    let f = &checker.figures;
    assert!(
        host_figures.unexpected_closes.is_empty(),
        "seed {seed}: {:?}",
        host_figures.unexpected_closes
    );
    let wall_s = wall.elapsed().as_secs_f64();
    println!(
        "soak: seed={seed} program_s={:.1} wall_s={wall_s:.1} x_realtime={:.0} batches={} objects_put={} \
         driver_outages={} injected_outages={} of_which_refusals={} injected_outage_s={:.1} longest_outage_s={:.1} \
         error_bursts={} latency_spikes={} longest_latency_ms={} hung_puts={} background_ppm={} \
         max_backlog_bytes={} backlog_bound_bytes={} max_backlog_batches={} max_catch_up_ms={} \
         max_edge_lag_ms={} max_objects={} checks={} playlists_checked={} segments_dated={} \
         idle_checks={} sessions={} clean={} silent={} replaced={} closes={}",
        program as f64 / SECOND as f64,
        program as f64 / SECOND as f64 / wall_s,
        summary.batches,
        summary.totals.puts,
        status.outages,
        plan.outages,
        plan.refusals,
        plan.outage_samples as f64 / SECOND as f64,
        plan.longest_outage as f64 / SECOND as f64,
        plan.bursts,
        plan.spikes,
        plan.longest_spike.as_millis(),
        plan.hangs,
        plan.background_ppm,
        f.max_backlog_bytes,
        checker.backlog_bound,
        f.max_backlog_batches,
        f.max_catch_up_ms,
        millis(f.max_lag),
        f.max_objects,
        f.checks,
        f.playlists_checked,
        f.segments_dated,
        f.idle_checks,
        host_figures.sessions,
        host_figures.clean,
        host_figures.silent,
        host_figures.replaced,
        host_figures.closes,
    );
}
