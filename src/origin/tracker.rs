//! Trackers: one per stream rendition, each holding the newest
//! [`StreamState`] in a `tokio::sync::watch` channel that every waiting
//! request of that rendition subscribes to. A state change wakes them all
//! at once; a waiting request costs a receiver and its deadline, nothing
//! else: no timer of its own, no store request.
//!
//! Two feeders keep a tracker current:
//! - **Observed** (in-process, `onair live --http`): the publisher announces
//!   every stored `live.m3u8` ([`Trackers::observe_live`]); the tracker is
//!   updated the moment the playlist is stored.
//! - **Store** (`onair origin`): a task started by the first request reads
//!   `live.m3u8` once, then follows the stream part by part. The playlist's
//!   program dates say when the hinted part is due, and the task learns how
//!   late after that the packager usually stores a part (encoder look-ahead,
//!   pacing, store latency: [`Lateness`]); at that time the task reads that
//!   part's immutable `at/` playlist (404 until the packager has stored it)
//!   a bounded number of times, [`AT_TRIES`] an eighth of a PART-TARGET
//!   apart (one part of lateness), then reads `live.m3u8` again to catch an
//!   end, a restart or missed parts. While nothing changes the spacing of
//!   the tries doubles each round, up to [`MAX_SPACING`]: a briefly late
//!   packager is still caught within one spacing, a stopped one costs a few
//!   reads a second at most. Waiters
//!   share this one task, so the store requests per part per origin do not
//!   grow with the listeners. The task stops once nobody has used the
//!   tracker for the idle period.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;

use crate::hls::MediaPlaylist;
use crate::publish::ObjectKind;
use crate::time::SAMPLE_RATE;

use super::cache::{Document, LoadError, Loader, ObjectCache};
use super::request::RenditionPath;
use super::state::StreamState;

/// Reads of the hinted part's `at/` playlist before `live.m3u8` is read
/// again.
pub const AT_TRIES: u32 = 8;

/// How often a missing stream is looked for again while it is requested.
const MISSING_RECHECK: Duration = Duration::from_secs(1);

/// A missing stream's tracker stops after this long without requests.
const MISSING_IDLE: Duration = Duration::from_secs(5);

/// Longest spacing of the reads of a stream that stopped changing.
const MAX_SPACING: Duration = Duration::from_millis(500);

/// How often a finished stream is looked at again, for a restart.
const FINISHED_RECHECK: Duration = Duration::from_secs(4);

/// Pause after a store error.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// What a tracker knows.
#[derive(Debug, Clone)]
pub enum TrackState {
    /// The first read of `live.m3u8` has not finished.
    Loading,
    /// The rendition has no `live.m3u8`: 404.
    Missing,
    /// The store failed before any playlist was read: 503.
    Unavailable,
    /// The newest playlist.
    Ready(Arc<Live>),
}

/// A rendition's newest playlist and its derived state, with everything
/// the requests it wakes need prepared once: thousands of requests may be
/// answered from one `Live`, each should only copy references.
#[derive(Debug)]
pub struct Live {
    /// What the playlist says.
    pub state: StreamState,
    /// Its bytes, as served for a plain `live.m3u8` request.
    pub playlist: Arc<Document>,
    /// `Cache-Control` of a blocking reload's answer (an `at/` playlist).
    pub blocking_cache_control: HeaderValue,
    /// `Cache-Control` of a plain `live.m3u8`.
    pub live_cache_control: HeaderValue,
    /// The `at/` playlist of the newest part ([`StreamState::last_part`]),
    /// the answer to every request this state wakes, once known.
    pub newest_at: OnceLock<Arc<Document>>,
    /// How long the requests this state woke took to be answered.
    pub wakes: WakeStats,
    /// `stream/rendition`, for the wake summary.
    label: Arc<str>,
}

impl Live {
    /// Parses `bytes` as a media playlist.
    fn parse(label: Arc<str>, bytes: Bytes) -> Option<Live> {
        let text = std::str::from_utf8(&bytes).ok()?;
        let playlist = MediaPlaylist::parse(text).ok()?;
        let state = StreamState::from_playlist(&playlist);
        let (td, pt) = (td_seconds(&state), part_target_ms(&state));
        Some(Live {
            blocking_cache_control: header_value(ObjectKind::PartPlaylist.cache_control(td, pt)),
            live_cache_control: header_value(ObjectKind::LivePlaylist.cache_control(td, pt)),
            state,
            playlist: Arc::new(Document::new(bytes)),
            newest_at: OnceLock::new(),
            wakes: WakeStats::new(),
            label,
        })
    }
}

impl Drop for Live {
    /// Once a newer state has replaced this one and every request it woke
    /// has been answered: one summary line per woken part.
    fn drop(&mut self) {
        let Some(summary) = self.wakes.summary() else {
            return;
        };
        let part = self.state.last_part();
        tracing::debug!(target: "onair::origin::wake", rendition = %self.label,
            msn = part.map(|p| p.msn), part = part.map(|p| p.part),
            woken = summary.count, p50_us = summary.p50_us, p99_us = summary.p99_us,
            max_us = summary.max_us, "woken requests answered");
    }
}

/// A rendition's target duration in whole seconds.
pub fn td_seconds(state: &StreamState) -> u32 {
    u32::try_from(state.target_duration()).unwrap_or(u32::MAX)
}

/// A rendition's PART-TARGET in milliseconds (0 without parts).
pub fn part_target_ms(state: &StreamState) -> u32 {
    let ms = state.part_target().map_or(0, crate::time::millis);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// A `Cache-Control` value as a header value. The publisher's values are
/// plain ASCII; the fallback only keeps this total.
pub fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("no-store"))
}

/// Histogram buckets: exact below 16 µs, then eight per power of two up to
/// 2^27 µs (over two minutes); larger delays land in the last bucket.
const WAKE_BUCKETS: usize = 16 + 24 * 8;

/// Delays from a tracker state's publication to the answers of the
/// requests it woke, as they are handed to the HTTP layer: the origin's
/// own share of a listener's wake-up latency, whatever the client's load.
/// Lock-free, so recording costs a woken request two atomic additions.
#[derive(Debug)]
pub struct WakeStats {
    published: Instant,
    buckets: [AtomicU32; WAKE_BUCKETS],
    max_us: AtomicU64,
}

/// A [`WakeStats`] summary; quantiles are bucket upper bounds (within
/// 12.5 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeSummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl WakeStats {
    fn new() -> Self {
        Self {
            published: Instant::now(),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            max_us: AtomicU64::new(0),
        }
    }

    /// Records that a request woken by this state is answered now.
    pub fn record(&self) {
        self.record_us(u64::try_from(self.published.elapsed().as_micros()).unwrap_or(u64::MAX));
    }

    fn record_us(&self, us: u64) {
        self.buckets[wake_bucket(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Count and quantiles, or `None` if nothing was recorded.
    pub fn summary(&self) -> Option<WakeSummary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| u64::from(b.load(Ordering::Relaxed)))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return None;
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        let quantile = |q: u64| {
            // The smallest bucket holding the ceil(q% of count)-th delay.
            let rank = (count * q).div_ceil(100).max(1);
            let mut seen = 0;
            let bucket = counts
                .iter()
                .position(|c| {
                    seen += c;
                    seen >= rank
                })
                .unwrap_or(WAKE_BUCKETS - 1);
            wake_bucket_upper(bucket).min(max_us)
        };
        Some(WakeSummary {
            count,
            p50_us: quantile(50),
            p99_us: quantile(99),
            max_us,
        })
    }
}

fn wake_bucket(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let power = 63 - us.leading_zeros() as usize;
    let eighth = ((us >> (power - 3)) & 7) as usize;
    (16 + (power - 4) * 8 + eighth).min(WAKE_BUCKETS - 1)
}

/// The largest delay that falls in `bucket`.
fn wake_bucket_upper(bucket: usize) -> u64 {
    if bucket < 16 {
        return bucket as u64;
    }
    let power = (bucket - 16) / 8 + 4;
    let eighth = ((bucket - 16) % 8) as u64;
    ((9 + eighth) << (power - 3)) - 1
}

#[derive(Debug)]
struct Tracker {
    tx: watch::Sender<TrackState>,
    /// `stream/rendition`.
    label: Arc<str>,
    /// Fed by the publisher's announcements; the store task must stop.
    observed: AtomicBool,
    /// Milliseconds since [`Trackers::epoch`] of the last request.
    last_used_ms: AtomicU64,
}

/// Every tracker of an origin.
#[derive(Debug)]
pub struct Trackers {
    map: Mutex<HashMap<RenditionPath, Arc<Tracker>>>,
    loader: Arc<Loader>,
    cache: Arc<ObjectCache>,
    idle: Duration,
    max_trackers: usize,
    epoch: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// No tracker could be started: too many renditions are tracked already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many streams are being tracked")]
pub struct TooManyTrackers;

impl Trackers {
    /// Trackers reading through `loader` and caching `at/` playlists they
    /// read in `cache`; store trackers stop after `idle` without requests.
    pub fn new(
        loader: Arc<Loader>,
        cache: Arc<ObjectCache>,
        idle: Duration,
        max_trackers: usize,
    ) -> Self {
        Self {
            map: Mutex::default(),
            loader,
            cache,
            idle,
            max_trackers,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Subscribes to `rendition`'s tracker, starting a store-fed one if
    /// there is none. Must be called within a tokio runtime.
    pub fn subscribe(
        self: &Arc<Self>,
        rendition: &RenditionPath,
    ) -> Result<watch::Receiver<TrackState>, TooManyTrackers> {
        let now = self.now_ms();
        let mut map = lock(&self.map);
        if let Some(tracker) = map.get(rendition) {
            tracker.last_used_ms.store(now, Ordering::Relaxed);
            // Subscribing under the lock: the store task checks for
            // receivers under the same lock before it stops.
            return Ok(tracker.tx.subscribe());
        }
        if map.len() >= self.max_trackers {
            return Err(TooManyTrackers);
        }
        let tracker = Arc::new(Tracker {
            tx: watch::Sender::new(TrackState::Loading),
            label: label(rendition),
            observed: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now),
        });
        let rx = tracker.tx.subscribe();
        map.insert(rendition.clone(), tracker.clone());
        drop(map);
        tokio::spawn(follow_store(self.clone(), rendition.clone(), tracker));
        Ok(rx)
    }

    /// Applies a `live.m3u8` the publisher has just stored.
    pub fn observe_live(&self, rendition: RenditionPath, bytes: Bytes) {
        let tracker = {
            let mut map = lock(&self.map);
            map.entry(rendition.clone())
                .or_insert_with(|| {
                    Arc::new(Tracker {
                        tx: watch::Sender::new(TrackState::Loading),
                        label: label(&rendition),
                        observed: AtomicBool::new(true),
                        last_used_ms: AtomicU64::new(0),
                    })
                })
                .clone()
        };
        let Some(live) = Live::parse(tracker.label.clone(), bytes) else {
            tracing::warn!(stream = %rendition.stream, rendition = %rendition.rendition,
                "announced live.m3u8 does not parse; ignored");
            return;
        };
        // The publisher stores (and announces) the `at/` playlist of a part
        // before the live.m3u8 that lists it: look it up once here rather
        // than once per woken request.
        if let Some(newest) = live.state.last_part()
            && let Some(doc) = self.cache.get(&rendition.at_key(newest))
        {
            let _ = live.newest_at.set(doc);
        }
        tracker.observed.store(true, Ordering::Relaxed);
        tracker.tx.send_replace(TrackState::Ready(Arc::new(live)));
    }

    /// Renditions fed by announcements, for a resynchronisation.
    pub fn observed(&self) -> Vec<RenditionPath> {
        lock(&self.map)
            .iter()
            .filter(|(_, t)| t.observed.load(Ordering::Relaxed))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The newest state of every tracked rendition, for listings.
    pub fn states(&self) -> Vec<(RenditionPath, TrackState)> {
        lock(&self.map)
            .iter()
            .map(|(r, t)| (r.clone(), t.tx.borrow().clone()))
            .collect()
    }

    /// Removes `tracker` if nobody waits on it and it has been idle; says
    /// whether it was removed. Checked under the map lock, where
    /// subscriptions happen, so a request never subscribes to a tracker
    /// whose task has stopped.
    fn retire_if_idle(&self, rendition: &RenditionPath, tracker: &Arc<Tracker>) -> bool {
        let idle = match &*tracker.tx.borrow() {
            TrackState::Missing | TrackState::Unavailable => MISSING_IDLE,
            _ => self.idle,
        };
        let mut map = lock(&self.map);
        let last = tracker.last_used_ms.load(Ordering::Relaxed);
        let unused = self.now_ms().saturating_sub(last) >= millis(idle);
        if tracker.tx.receiver_count() == 0 && unused {
            if map.get(rendition).is_some_and(|t| Arc::ptr_eq(t, tracker)) {
                map.remove(rendition);
            }
            return true;
        }
        false
    }
}

fn label(rendition: &RenditionPath) -> Arc<str> {
    format!("{}/{}", rendition.stream, rendition.rendition).into()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why following the store stopped.
enum Stop {
    Idle,
    Observed,
}

/// The store feeder of one tracker (see the module docs).
async fn follow_store(trackers: Arc<Trackers>, rendition: RenditionPath, tracker: Arc<Tracker>) {
    let stop = follow(&trackers, &rendition, &tracker).await;
    tracing::debug!(stream = %rendition.stream, rendition = %rendition.rendition,
        reason = match stop { Stop::Idle => "idle", Stop::Observed => "observed" },
        "store tracker stopped");
}

async fn follow(trackers: &Trackers, rendition: &RenditionPath, tracker: &Arc<Tracker>) -> Stop {
    let mut stalled_rounds: u32 = 0;
    let mut lateness = Lateness::default();
    // The playlist seen at the previous read of live.m3u8.
    let mut previous: Option<String> = None;
    loop {
        if tracker.observed.load(Ordering::Relaxed) {
            return Stop::Observed;
        }
        if trackers.retire_if_idle(rendition, tracker) {
            return Stop::Idle;
        }
        match trackers.loader.get(&rendition.live_key()).await {
            Ok(bytes) => publish(tracker, bytes, None),
            Err(LoadError::NotFound) => {
                tracker.tx.send_replace(TrackState::Missing);
                tokio::time::sleep(MISSING_RECHECK).await;
                continue;
            }
            Err(LoadError::Store(error)) => {
                tracing::warn!(key = %rendition.live_key(), %error, "cannot read playlist");
                if matches!(*tracker.tx.borrow(), TrackState::Loading) {
                    tracker.tx.send_replace(TrackState::Unavailable);
                }
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        }
        let Some(live) = current(tracker) else {
            tokio::time::sleep(ERROR_BACKOFF).await;
            continue;
        };
        if !live.state.blocks() {
            // Finished or not low-latency: look again now and then, for a
            // restart under the same name.
            tokio::time::sleep(FINISHED_RECHECK).await;
            continue;
        }
        let seen = live.playlist.etag();
        let progressed = previous.as_ref() != Some(&seen);
        previous = Some(seen);
        stalled_rounds = if progressed { 0 } else { stalled_rounds + 1 };
        // Nothing new since the last round: the packager is late, stalled or
        // stopped. Look less often, doubling, up to MAX_SPACING.
        let spacing = (part_target(&live.state) / 8)
            .saturating_mul(1 << stalled_rounds.min(8))
            .min(MAX_SPACING);
        match follow_parts(trackers, rendition, tracker, &mut lateness, spacing).await {
            Some(stop) => return stop,
            None => continue,
        }
    }
}

/// Follows the hinted parts through their `at/` playlists until one does not
/// appear within [`AT_TRIES`] reads `spacing` apart, the stream ends, or the
/// tracker stops. `None` means: read `live.m3u8` again.
async fn follow_parts(
    trackers: &Trackers,
    rendition: &RenditionPath,
    tracker: &Arc<Tracker>,
    lateness: &mut Lateness,
    spacing: Duration,
) -> Option<Stop> {
    loop {
        let live = current(tracker)?;
        let hint = live.state.hint().filter(|_| live.state.blocks())?;
        let pt = part_target(&live.state);
        let due = live.state.hint_due();
        tokio::time::sleep(until_due(due, &live.state, pt, lateness.estimate(pt))).await;
        let key = rendition.at_key(hint);
        let mut found = None;
        for attempt in 0..AT_TRIES {
            if tracker.observed.load(Ordering::Relaxed) {
                return Some(Stop::Observed);
            }
            if trackers.retire_if_idle(rendition, tracker) {
                return Some(Stop::Idle);
            }
            if attempt > 0 {
                tokio::time::sleep(spacing).await;
            }
            match trackers.loader.get(&key).await {
                Ok(bytes) => {
                    found = Some(bytes);
                    break;
                }
                Err(LoadError::NotFound) => {}
                Err(LoadError::Store(error)) => {
                    tracing::warn!(%key, %error, "cannot read part playlist");
                }
            }
        }
        let bytes = found?;
        if let Some(due) = due {
            lateness.record(
                (chrono::Utc::now() - due)
                    .to_std()
                    .unwrap_or(Duration::ZERO),
            );
        }
        // The immutable playlist is also the answer to every blocking
        // request for this part: keep it, gzip-encoded before anyone waits
        // on it.
        let doc = Arc::new(Document::new(bytes.clone()));
        doc.gzip();
        trackers.cache.insert(key, doc.clone());
        publish(tracker, bytes, Some(doc));
    }
}

/// The tracker's newest playlist, if any.
fn current(tracker: &Tracker) -> Option<Arc<Live>> {
    match &*tracker.tx.borrow() {
        TrackState::Ready(live) => Some(live.clone()),
        _ => None,
    }
}

/// Publishes `bytes` as the newest playlist unless it is the same;
/// `newest_at` is the `at/` playlist of its newest part, if known.
fn publish(tracker: &Tracker, bytes: Bytes, newest_at: Option<Arc<Document>>) {
    let Some(live) = Live::parse(tracker.label.clone(), bytes) else {
        tracing::warn!("stored playlist does not parse; keeping the previous one");
        return;
    };
    if let Some(doc) = newest_at {
        let _ = live.newest_at.set(doc);
    }
    tracker.tx.send_if_modified(|state| match state {
        TrackState::Ready(old) if old.playlist.bytes() == live.playlist.bytes() => false,
        _ => {
            *state = TrackState::Ready(Arc::new(live));
            true
        }
    });
}

/// PART-TARGET as a duration (the target duration when there are no parts).
fn part_target(state: &StreamState) -> Duration {
    let samples = state.part_target().unwrap_or(
        state
            .target_duration()
            .saturating_mul(u64::from(SAMPLE_RATE)),
    );
    Duration::from_micros(samples.saturating_mul(1_000_000) / u64::from(SAMPLE_RATE))
        .max(Duration::from_millis(10))
}

/// How long to wait before the first read of the hinted part's playlist:
/// until its program date says it is complete, plus how late parts usually
/// are stored. A date in the past means "now"; no date, or one implausibly
/// far ahead (clocks disagree), falls back to one part target.
fn until_due(
    due: Option<crate::hls::ProgramDateTime>,
    state: &StreamState,
    pt: Duration,
    late: Duration,
) -> Duration {
    let Some(due) = due else {
        return pt;
    };
    let ahead = (due - chrono::Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    let limit = Duration::from_secs(state.target_duration().max(1)) * 3;
    if ahead > limit { pt } else { ahead + late }
}

/// How long after its program date says a part ends the packager has
/// stored it: the encoders' look-ahead, the packager's pacing and the
/// store's latency, none of which the origin can know in advance. Each part
/// found gives an upper bound (it was stored no later than it was found);
/// the smallest of the recent ones is the estimate, so a single slow read
/// does not delay the following parts.
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    recent: [Option<Duration>; 8],
    next: usize,
}

impl Lateness {
    /// Records that a part was found `late` after its due date.
    pub fn record(&mut self, late: Duration) {
        self.recent[self.next] = Some(late);
        self.next = (self.next + 1) % self.recent.len();
    }

    /// When to look for a part, after its due date: the smallest recent
    /// lateness (a sixteenth of a part before any is known), at most one
    /// part.
    pub fn estimate(&self, part_target: Duration) -> Duration {
        self.recent
            .iter()
            .flatten()
            .min()
            .copied()
            .unwrap_or(part_target / 16)
            .min(part_target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_buckets_bound_their_delays() {
        for us in (0..5000).chain([65_535, 65_536, 1 << 26, u64::MAX]) {
            let b = wake_bucket(us);
            assert!(us <= wake_bucket_upper(b) || b == WAKE_BUCKETS - 1, "{us}");
            assert!(b == 0 || us > wake_bucket_upper(b - 1), "{us}");
        }
        let stats = WakeStats::new();
        assert_eq!(stats.summary(), None);
        for us in 1..=1000 {
            stats.record_us(us * 10);
        }
        let s = stats.summary().expect("recorded");
        assert_eq!((s.count, s.max_us), (1000, 10_000));
        assert!((5000..=5000 * 9 / 8).contains(&s.p50_us), "{s:?}");
        assert!((9900..=10_000).contains(&s.p99_us), "{s:?}");
    }

    #[test]
    fn lateness_is_the_smallest_recent_observation() {
        let pt = Duration::from_millis(320);
        let mut late = Lateness::default();
        assert_eq!(late.estimate(pt), Duration::from_millis(20));
        for ms in [90, 70, 110, 75] {
            late.record(Duration::from_millis(ms));
        }
        assert_eq!(late.estimate(pt), Duration::from_millis(70));
        // Old observations age out after eight parts.
        for _ in 0..8 {
            late.record(Duration::from_millis(100));
        }
        assert_eq!(late.estimate(pt), Duration::from_millis(100));
        late.record(Duration::from_secs(5));
        assert_eq!(late.estimate(pt), Duration::from_millis(100));
        let mut slow = Lateness::default();
        slow.record(Duration::from_secs(5));
        assert_eq!(slow.estimate(pt), pt, "capped at one part");
    }
}
