//! Bodies the origin serves, the bounded cache that keeps them, and the
//! single-flight loader that fills it from the store.
//!
//! Contract:
//! - A [`Document`] is one object's bytes with what serving it needs,
//!   computed at most once however many requests share it: a strong ETag,
//!   the gzip encoding and, for media playlists, the Playlist Delta Updates.
//! - [`ObjectCache`] keeps immutable objects (init, media, `at/` playlists)
//!   by key, within a byte budget, evicting the oldest insertions first: a
//!   live stream's requests concentrate on its newest objects.
//! - [`Loader`] reads the store. Concurrent reads of one key share a single
//!   store request, and every store request is counted, so the requests per
//!   part per origin can be stated.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::hls::MediaPlaylist;

use super::request::SkipRequest;

/// One object's bytes and everything derived from them for serving.
#[derive(Debug)]
pub struct Document {
    bytes: Bytes,
    /// Hash part of the ETag, without quotes.
    tag: String,
    /// The ETags of the stored bytes and of their gzip encoding, quoted,
    /// ready to be sent: a woken request copies no header text.
    etag: HeaderValue,
    gzip_etag: HeaderValue,
    gzip: OnceLock<Bytes>,
    /// `_HLS_skip=YES` and `_HLS_skip=v2` answers.
    deltas: [OnceLock<Arc<Document>>; 2],
}

impl Document {
    /// Wraps `bytes`; derived forms are computed on first use.
    pub fn new(bytes: Bytes) -> Self {
        let tag = format!("{:x}-{:016x}", bytes.len(), fnv1a(&bytes));
        Self {
            bytes,
            etag: quoted(format!("\"{tag}\"")),
            gzip_etag: quoted(format!("\"{tag}-gz\"")),
            tag,
            gzip: OnceLock::new(),
            deltas: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// The bytes as stored.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The strong ETag of the stored bytes (RFC 9110 8.8.3), quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.tag)
    }

    /// [`Document::etag`] as a header value.
    pub fn etag_value(&self) -> &HeaderValue {
        &self.etag
    }

    /// [`Document::gzip_etag`] as a header value.
    pub fn gzip_etag_value(&self) -> &HeaderValue {
        &self.gzip_etag
    }

    /// The strong ETag of the gzip encoding: a different representation
    /// needs a different strong validator.
    pub fn gzip_etag(&self) -> String {
        format!("\"{}-gz\"", self.tag)
    }

    /// The bytes gzip-encoded, compressed on first use.
    pub fn gzip(&self) -> &Bytes {
        self.gzip.get_or_init(|| gzip(&self.bytes))
    }

    /// The Playlist Delta Update of this media playlist (RFC 8216bis
    /// 6.2.5.1) with the playlist's own `CAN-SKIP-UNTIL`; `v2` also skips
    /// date ranges where `CAN-SKIP-DATERANGES=YES` allows it. A playlist that
    /// offers no delta updates, or does not parse, answers in full, which a
    /// client must accept in answer to a skip request.
    pub fn delta(self: &Arc<Self>, skip: SkipRequest) -> Arc<Document> {
        let slot = match skip {
            SkipRequest::Yes => &self.deltas[0],
            SkipRequest::V2 => &self.deltas[1],
        };
        slot.get_or_init(|| {
            let playlist = std::str::from_utf8(&self.bytes)
                .ok()
                .and_then(|text| MediaPlaylist::parse(text).ok());
            let Some(playlist) = playlist else {
                return self.clone();
            };
            let Some(sc) = playlist.server_control else {
                return self.clone();
            };
            let Some(until) = sc.can_skip_until else {
                return self.clone();
            };
            let delta = match skip {
                SkipRequest::V2 if sc.can_skip_dateranges => playlist.delta_v2(until),
                _ => playlist.delta(until),
            };
            Arc::new(Document::new(Bytes::from(delta.render())))
        })
        .clone()
    }

    /// Bytes held, for the cache budget.
    fn weight(&self) -> usize {
        self.bytes.len() + self.tag.len() + self.gzip.get().map_or(0, Bytes::len)
    }
}

/// An ETag as a header value. Hex digits, `-` and quotes are always valid
/// header text; the fallback only keeps this total.
fn quoted(etag: String) -> HeaderValue {
    HeaderValue::try_from(etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

/// 64-bit FNV-1a: a stable hash (the same in every replica and version),
/// which is all an ETag needs next to the length.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3 + 32),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Immutable objects by key, within a byte budget.
#[derive(Debug)]
pub struct ObjectCache {
    inner: Mutex<CacheInner>,
    limit: usize,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<String, Arc<Document>>,
    /// Keys in insertion order, for eviction. May hold keys already removed.
    order: VecDeque<String>,
    bytes: usize,
}

impl ObjectCache {
    /// An empty cache holding at most about `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::default(),
            limit,
        }
    }

    /// The object at `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<Document>> {
        lock(&self.inner).map.get(key).cloned()
    }

    /// Caches `doc` at `key`, evicting the oldest entries beyond the budget.
    pub fn insert(&self, key: String, doc: Arc<Document>) {
        let mut inner = lock(&self.inner);
        let weight = doc.weight();
        if let Some(old) = inner.map.insert(key.clone(), doc) {
            inner.bytes = inner.bytes.saturating_sub(old.weight());
        }
        inner.bytes += weight;
        inner.order.push_back(key);
        while inner.bytes > self.limit {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.map.remove(&oldest) {
                inner.bytes = inner.bytes.saturating_sub(gone.weight());
            }
        }
    }

    /// Forgets `key` (the object was deleted from the store).
    pub fn remove(&self, key: &str) {
        let mut inner = lock(&self.inner);
        if let Some(gone) = inner.map.remove(key) {
            inner.bytes = inner.bytes.saturating_sub(gone.weight());
        }
        if inner.order.len() > 2 * inner.map.len() + 64 {
            let CacheInner { map, order, .. } = &mut *inner;
            order.retain(|k| map.contains_key(k));
        }
    }

    /// Objects cached.
    pub fn len(&self) -> usize {
        lock(&self.inner).map.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Overwritable objects (multivariant playlists, the store listing) kept for
/// a short time, or until replaced when an observer announces them.
#[derive(Debug)]
pub struct ShortLived<T> {
    entries: Mutex<HashMap<String, (T, Option<Instant>)>>,
}

impl<T> Default for ShortLived<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T: Clone> ShortLived<T> {
    /// The entry for `key` if it has not expired at `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<T> {
        let entries = lock(&self.entries);
        let (value, expires) = entries.get(key)?;
        match expires {
            Some(at) if *at <= now => None,
            _ => Some(value.clone()),
        }
    }

    /// Keeps `value` until `now + ttl`, or until replaced if `ttl` is `None`.
    pub fn put(&self, key: &str, value: T, now: Instant, ttl: Option<Duration>) {
        let expires = ttl.map(|t| now + t);
        let mut entries = lock(&self.entries);
        // An announced entry (no expiry) is not replaced by a store read.
        if expires.is_some() && matches!(entries.get(key), Some((_, None))) {
            return;
        }
        entries.insert(key.to_owned(), (value, expires));
    }
}

/// Why a store read gave nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The store failed; the message says how.
    #[error("store error: {0}")]
    Store(Arc<str>),
}

type Flight = Arc<tokio::sync::OnceCell<Result<Bytes, LoadError>>>;

/// Reads objects from the store, one request per key at a time however
/// many callers ask, and counts the requests made.
#[derive(Debug)]
pub struct Loader {
    store: Arc<dyn ObjectStore>,
    in_flight: Mutex<HashMap<String, Flight>>,
    requests: AtomicU64,
}

impl Loader {
    /// A loader over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            in_flight: Mutex::default(),
            requests: AtomicU64::new(0),
        }
    }

    /// Store requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The object at `key`. Callers arriving while a read of the same key is
    /// in flight share its result.
    pub async fn get(&self, key: &str) -> Result<Bytes, LoadError> {
        let flight = lock(&self.in_flight)
            .entry(key.to_owned())
            .or_default()
            .clone();
        let result = flight.get_or_init(|| self.read(key)).await.clone();
        let mut in_flight = lock(&self.in_flight);
        if in_flight.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            in_flight.remove(key);
        }
        result
    }

    /// The names directly below the store root (the streams).
    pub async fn list_root(&self) -> Result<Vec<String>, LoadError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let listing = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(|e| LoadError::Store(e.to_string().into()))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.parts().next_back().map(|s| s.as_ref().to_owned()))
            .collect())
    }

    async fn read(&self, key: &str) -> Result<Bytes, LoadError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = Path::parse(key).map_err(|e| LoadError::Store(e.to_string().into()))?;
        let got = match self.store.get_opts(&path, Default::default()).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        got.map_err(|e| match e {
            object_store::Error::NotFound { .. } => LoadError::NotFound,
            other => LoadError::Store(other.to_string().into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::state::tests::live_after;
    use object_store::{ObjectStoreExt, PutPayload};

    fn doc(text: &str) -> Arc<Document> {
        Arc::new(Document::new(Bytes::from(text.to_owned())))
    }

    #[test]
    fn etags_are_stable_and_distinguish_bytes_and_encodings() {
        let a = doc("#EXTM3U\n");
        assert_eq!(a.etag(), doc("#EXTM3U\n").etag());
        assert_ne!(a.etag(), doc("#EXTM3U\r\n").etag());
        assert_ne!(a.etag(), a.gzip_etag());
        assert!(a.etag().starts_with('"') && a.etag().ends_with('"'));
        assert_eq!(a.etag_value().to_str().ok(), Some(a.etag().as_str()));
        assert_eq!(
            a.gzip_etag_value().to_str().ok(),
            Some(a.gzip_etag().as_str())
        );
    }

    #[test]
    fn gzip_round_trips() {
        let text = live_after(40).render();
        let d = doc(&text);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&d.gzip()[..]), &mut out)
            .expect("gunzip");
        assert_eq!(out, text);
        assert!(d.gzip().len() < text.len() / 2);
        // Computed once.
        assert!(std::ptr::eq(d.gzip().as_ptr(), d.gzip().as_ptr()));
    }

    #[test]
    fn deltas_match_the_playlist_model() {
        let p = live_after(12 * 6 + 3);
        let d = doc(&p.render());
        let until = p
            .server_control
            .and_then(|s| s.can_skip_until)
            .expect("skip");
        let yes = d.delta(SkipRequest::Yes);
        assert_eq!(yes.bytes(), &Bytes::from(p.delta(until).render()));
        assert!(p.delta(until).skip.is_some(), "long enough to skip");
        let v2 = d.delta(SkipRequest::V2);
        assert_eq!(v2.bytes(), &Bytes::from(p.delta_v2(until).render()));
        assert!(Arc::ptr_eq(&yes, &d.delta(SkipRequest::Yes)));
        // Not a playlist: answered in full.
        let media = doc("\0\0\0\x18ftyp");
        assert!(Arc::ptr_eq(&media.delta(SkipRequest::Yes), &media));
    }

    #[test]
    fn cache_evicts_oldest_beyond_its_budget() {
        // Each entry weighs its 40 bytes plus its ETag's 19.
        let cache = ObjectCache::new(150);
        cache.insert("a".into(), doc(&"a".repeat(40)));
        cache.insert("b".into(), doc(&"b".repeat(40)));
        assert_eq!(cache.len(), 2);
        cache.insert("c".into(), doc(&"c".repeat(40)));
        assert!(cache.get("a").is_none(), "oldest evicted");
        assert!(cache.get("b").is_some() && cache.get("c").is_some());
        cache.remove("b");
        assert!(cache.get("b").is_none());
        cache.insert("d".into(), doc(&"d".repeat(40)));
        assert!(cache.get("c").is_some() && cache.get("d").is_some());
    }

    #[test]
    fn short_lived_entries_expire_unless_announced() {
        let entries = ShortLived::default();
        let t0 = Instant::now();
        entries.put("s", 1, t0, Some(Duration::from_secs(1)));
        assert_eq!(entries.get("s", t0), Some(1));
        assert_eq!(entries.get("s", t0 + Duration::from_secs(2)), None);
        entries.put("s", 2, t0, None);
        entries.put("s", 3, t0, Some(Duration::from_secs(1)));
        assert_eq!(entries.get("s", t0 + Duration::from_secs(9)), Some(2));
    }

    #[tokio::test]
    async fn loader_reads_and_counts() {
        let store = Arc::new(object_store::memory::InMemory::new());
        store
            .put(&Path::from("s/a/0.0.m4s"), PutPayload::from_static(b"part"))
            .await
            .expect("put");
        let loader = Loader::new(store);
        assert_eq!(
            loader.get("s/a/0.0.m4s").await,
            Ok(Bytes::from_static(b"part"))
        );
        assert_eq!(loader.get("s/a/none").await, Err(LoadError::NotFound));
        assert_eq!(loader.list_root().await, Ok(vec!["s".to_owned()]));
        assert_eq!(loader.requests(), 3);
    }
}
