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
//! - **Store** (`onair origin`): a task started by the first request follows
//!   the stream in the store, reading `live.m3u8` and then the hinted parts'
//!   immutable `at/` playlists. When to read what, how to back off and when
//!   to stop is the pure [`Follower`]'s decision; the task only performs the
//!   reads and waits it asks for, and publishes what it reads. Waiters share
//!   this one task, so the store requests per part per origin do not grow
//!   with the listeners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;

use crate::hls::{MediaPlaylist, PartId};
use crate::publish::ObjectKind;

use super::cache::{Document, LoadError, Loader, ObjectCache};
use super::follower::{Action, Follower, Now, Object, Playlist, ReadOutcome, StopReason, Usage};
use super::request::RenditionPath;
use super::state::StreamState;

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
    /// On tokio's clock, which tests may pause.
    epoch: tokio::time::Instant,
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
            epoch: tokio::time::Instant::now(),
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

    /// The store task's next action: `follower`'s answer, given how the
    /// tracker is used. Decided under the map lock, where subscriptions
    /// happen, and a tracker stopping for idleness is removed under it too:
    /// a request never subscribes to a tracker whose task has stopped.
    fn next_action(
        &self,
        rendition: &RenditionPath,
        tracker: &Arc<Tracker>,
        follower: &mut Follower,
        last: Option<ReadOutcome>,
    ) -> Action {
        let now = Now {
            instant: tokio::time::Instant::now().into_std(),
            unix_ms: chrono::Utc::now().timestamp_millis(),
        };
        let missing = matches!(
            *tracker.tx.borrow(),
            TrackState::Missing | TrackState::Unavailable
        );
        let mut map = lock(&self.map);
        let last_used = Duration::from_millis(tracker.last_used_ms.load(Ordering::Relaxed));
        let usage = Usage {
            receivers: tracker.tx.receiver_count(),
            last_used: (self.epoch + last_used).into_std(),
            observed: tracker.observed.load(Ordering::Relaxed),
            missing,
        };
        let action = follower.poll(now, last, usage);
        if action == Action::Stop(StopReason::Idle)
            && map.get(rendition).is_some_and(|t| Arc::ptr_eq(t, tracker))
        {
            map.remove(rendition);
        }
        action
    }
}

fn label(rendition: &RenditionPath) -> Arc<str> {
    format!("{}/{}", rendition.stream, rendition.rendition).into()
}

/// The store feeder of one tracker: performs what its [`Follower`] asks.
async fn follow_store(trackers: Arc<Trackers>, rendition: RenditionPath, tracker: Arc<Tracker>) {
    let mut follower = Follower::new(trackers.idle);
    let mut outcome = None;
    let stop = loop {
        match trackers.next_action(&rendition, &tracker, &mut follower, outcome.take()) {
            Action::Stop(reason) => break reason,
            Action::SleepUntil(at) => tokio::time::sleep_until(at.into()).await,
            Action::Read(Object::Live) => {
                outcome = Some(read_live(&trackers, &rendition, &tracker).await);
            }
            Action::Read(Object::At(id)) => {
                outcome = Some(read_at(&trackers, &rendition, &tracker, id).await);
            }
        }
    };
    tracing::debug!(stream = %rendition.stream, rendition = %rendition.rendition,
        reason = match stop { StopReason::Idle => "idle", StopReason::Observed => "observed" },
        "store tracker stopped");
}

/// Reads `live.m3u8` and publishes it: the newest playlist, 404 if there is
/// none, 503 if the store fails before any playlist was read.
async fn read_live(
    trackers: &Trackers,
    rendition: &RenditionPath,
    tracker: &Tracker,
) -> ReadOutcome {
    match trackers.loader.get(&rendition.live_key()).await {
        Ok(bytes) => {
            publish(tracker, bytes, None);
            ReadOutcome::Found(followed(tracker))
        }
        Err(LoadError::NotFound) => {
            tracker.tx.send_replace(TrackState::Missing);
            ReadOutcome::NotFound
        }
        Err(LoadError::Store(error)) => {
            tracing::warn!(key = %rendition.live_key(), %error, "cannot read playlist");
            if matches!(*tracker.tx.borrow(), TrackState::Loading) {
                tracker.tx.send_replace(TrackState::Unavailable);
            }
            ReadOutcome::Failed
        }
    }
}

/// Reads part `id`'s `at/` playlist and, if it is stored, publishes it as
/// the newest playlist.
async fn read_at(
    trackers: &Trackers,
    rendition: &RenditionPath,
    tracker: &Tracker,
    id: PartId,
) -> ReadOutcome {
    let key = rendition.at_key(id);
    match trackers.loader.get(&key).await {
        Ok(bytes) => {
            // The immutable playlist is also the answer to every blocking
            // request for this part: keep it, gzip-encoded before anyone
            // waits on it.
            let doc = Arc::new(Document::new(bytes.clone()));
            doc.gzip();
            trackers.cache.insert(key, doc.clone());
            publish(tracker, bytes, Some(doc));
            ReadOutcome::Found(followed(tracker))
        }
        Err(LoadError::NotFound) => ReadOutcome::NotFound,
        Err(LoadError::Store(error)) => {
            tracing::warn!(%key, %error, "cannot read part playlist");
            ReadOutcome::Failed
        }
    }
}

/// The tracker's newest playlist, if any.
fn current(tracker: &Tracker) -> Option<Arc<Live>> {
    match &*tracker.tx.borrow() {
        TrackState::Ready(live) => Some(live.clone()),
        _ => None,
    }
}

/// The tracker's newest playlist as its [`Follower`] sees it.
fn followed(tracker: &Tracker) -> Option<Playlist> {
    current(tracker).map(|live| Playlist::of(&live.state, live.playlist.etag()))
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

#[cfg(test)]
mod tests {
    use super::*;

    use object_store::memory::InMemory;
    use object_store::path::Path;
    use object_store::{ObjectStoreExt, PutPayload};

    use crate::origin::follower::{FINISHED_RECHECK, MAX_SPACING, MISSING_RECHECK};
    use crate::origin::state::tests::live_after;

    const IDLE: Duration = Duration::from_secs(30);
    /// Hang guard of the waits below, in paused (virtual) time.
    const GUARD: Duration = Duration::from_secs(60);

    async fn put(store: &InMemory, key: &str, text: String) {
        store
            .put(&Path::from(key), PutPayload::from(text))
            .await
            .expect("put");
    }

    fn store_trackers(store: &Arc<InMemory>) -> Arc<Trackers> {
        let loader = Arc::new(Loader::new(store.clone()));
        Arc::new(Trackers::new(
            loader,
            Arc::new(ObjectCache::new(1 << 20)),
            IDLE,
            16,
        ))
    }

    fn rendition() -> RenditionPath {
        RenditionPath {
            stream: "s".into(),
            rendition: "aac".into(),
        }
    }

    fn last_part(state: &TrackState) -> Option<PartId> {
        match state {
            TrackState::Ready(live) => live.state.last_part(),
            _ => None,
        }
    }

    /// Waits, in virtual time, until the tracker's state satisfies `ready`.
    async fn until(
        rx: &mut watch::Receiver<TrackState>,
        ready: impl FnMut(&TrackState) -> bool,
    ) -> TrackState {
        tokio::time::timeout(GUARD, rx.wait_for(ready))
            .await
            .expect("the tracker reached the state")
            .expect("the tracker is alive")
            .clone()
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_task_follows_parts_and_stops_once_idle() {
        let store = Arc::new(InMemory::new());
        put(&store, "s/aac/live.m3u8", live_after(8).render()).await;
        let trackers = store_trackers(&store);
        let mut rx = trackers.subscribe(&rendition()).expect("a tracker");
        let p = |msn, part| Some(PartId { msn, part });
        until(&mut rx, |s| last_part(s) == p(101, 1)).await;

        // The hinted part's playlist is stored: the task reads it, publishes
        // it as the newest playlist with its `at/` document, and caches it.
        let at = live_after(9).render();
        put(&store, "s/aac/at/101.2.m3u8", at.clone()).await;
        let state = until(&mut rx, |s| last_part(s) == p(101, 2)).await;
        let TrackState::Ready(live) = state else {
            panic!("ready");
        };
        let newest_at = live.newest_at.get().expect("the at/ playlist");
        assert_eq!(newest_at.bytes(), at.as_bytes());
        assert!(trackers.cache.get("s/aac/at/101.2.m3u8").is_some());

        // Nobody waits any more: once idle, the task stops reading and the
        // tracker is gone.
        drop(rx);
        tokio::time::sleep(IDLE + MAX_SPACING).await;
        assert!(trackers.states().is_empty(), "tracker removed");
        let reads = trackers.loader.requests();
        tokio::time::sleep(FINISHED_RECHECK * 10).await;
        assert_eq!(trackers.loader.requests(), reads, "no read once stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_stream_is_found_once_stored() {
        let store = Arc::new(InMemory::new());
        let trackers = store_trackers(&store);
        let mut rx = trackers.subscribe(&rendition()).expect("a tracker");
        until(&mut rx, |s| matches!(s, TrackState::Missing)).await;
        let stored = tokio::time::Instant::now();
        put(&store, "s/aac/live.m3u8", live_after(8).render()).await;
        until(&mut rx, |s| matches!(s, TrackState::Ready(_))).await;
        assert!(
            stored.elapsed() <= MISSING_RECHECK,
            "{:?}",
            stored.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn announcements_stop_the_store_task() {
        let store = Arc::new(InMemory::new());
        put(&store, "s/aac/live.m3u8", live_after(8).render()).await;
        let trackers = store_trackers(&store);
        let mut rx = trackers.subscribe(&rendition()).expect("a tracker");
        until(&mut rx, |s| matches!(s, TrackState::Ready(_))).await;
        trackers.observe_live(rendition(), Bytes::from(live_after(9).render()));
        assert_eq!(trackers.observed(), vec![rendition()]);
        // The task stops at its next read, though a request still waits.
        tokio::time::sleep(FINISHED_RECHECK).await;
        let reads = trackers.loader.requests();
        tokio::time::sleep(IDLE * 2).await;
        assert_eq!(trackers.loader.requests(), reads, "no read once observed");
        assert_eq!(
            trackers.states().len(),
            1,
            "still tracked, by announcements"
        );
        drop(rx);
    }

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
}
