//! An `ObjectStore` that forwards to a real store and breaks on command:
//! random errors, added latency, an outage, calls that never answer. It also
//! checks, at the instant each playlist is stored, that every media object
//! the playlist names is already there, and that no immutable object is ever
//! stored twice with different bytes. Time is tokio's, so tests with paused
//! time drive outages exactly.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use onair::hls::MediaPlaylist;
use tokio::time::Instant;

/// What goes wrong, changed by the test while the store is in use.
#[derive(Debug, Default)]
pub struct Faults {
    /// Calls failing at random, in parts per million.
    pub error_ppm: AtomicU32,
    /// Added to every call, in microseconds.
    pub latency_us: AtomicU64,
    /// Every call fails while set.
    pub down: AtomicBool,
    /// Every call is refused with 403 while set.
    pub refuse: AtomicBool,
    /// The next this-many puts never answer.
    pub hang_puts: AtomicU32,
    outage: Mutex<Option<(Instant, Instant)>>,
    seed: AtomicU64,
    /// Calls refused so far.
    pub failed: AtomicU64,
    /// Calls answered so far.
    pub served: AtomicU64,
    /// What the checks found.
    violations: Mutex<Vec<String>>,
    /// What is stored, by key, as the checks see it.
    stored: Mutex<HashMap<String, Bytes>>,
    /// When each key was last stored (tokio time).
    stored_at: Mutex<HashMap<String, Instant>>,
}

impl Faults {
    /// Fails every call between `from` and `to` (tokio time).
    pub fn outage(&self, from: Instant, to: Instant) {
        *self.outage.lock().expect("faults") = Some((from, to));
    }

    /// Fails `ppm` parts per million of calls, drawn from `seed`.
    pub fn random_errors(&self, ppm: u32, seed: u64) {
        self.seed.store(seed.max(1), Ordering::SeqCst);
        self.error_ppm.store(ppm, Ordering::SeqCst);
    }

    /// Adds `latency` to every call.
    pub fn latency(&self, latency: Duration) {
        self.latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// What the checks found wrong.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("faults").clone()
    }

    /// When `key` was last stored.
    pub fn stored_at(&self, key: &str) -> Option<Instant> {
        self.stored_at.lock().expect("faults").get(key).copied()
    }

    /// Whether `key` is stored.
    pub fn has(&self, key: &str) -> bool {
        self.stored.lock().expect("faults").contains_key(key)
    }

    /// Every stored key, as the checks see it.
    pub fn stored_keys(&self) -> Vec<String> {
        self.stored
            .lock()
            .expect("faults")
            .keys()
            .cloned()
            .collect()
    }

    fn violation(&self, what: String) {
        self.violations.lock().expect("faults").push(what);
    }

    fn next_random(&self) -> u64 {
        // xorshift64 on an atomic: reproducible from the seed.
        let mut x = self.seed.load(Ordering::SeqCst).max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::SeqCst);
        x
    }

    /// Whether this call fails, after the added latency.
    async fn toll(&self, what: &str) -> object_store::Result<()> {
        let latency = self.latency_us.load(Ordering::SeqCst);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        let now = Instant::now();
        let in_outage = self
            .outage
            .lock()
            .expect("faults")
            .is_some_and(|(from, to)| now >= from && now < to);
        if self.refuse.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::PermissionDenied {
                path: what.to_owned(),
                source: "injected 403".into(),
            });
        }
        let ppm = u64::from(self.error_ppm.load(Ordering::SeqCst));
        let unlucky = ppm > 0 && self.next_random() % 1_000_000 < ppm;
        if in_outage || unlucky || self.down.load(Ordering::SeqCst) {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "Faulty",
                source: format!("injected failure of {what}").into(),
            });
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Checks a put about to be stored.
    fn check_put(&self, key: &str, body: &Bytes, mode: &PutMode) {
        let stored = self.stored.lock().expect("faults");
        if matches!(mode, PutMode::Create)
            && let Some(before) = stored.get(key)
            && before != body
        {
            self.violation(format!("{key} offered again with different bytes"));
        }
        if !key.ends_with(".m3u8") || key.ends_with("index.m3u8") {
            return;
        }
        let Some((dir, _)) = key.rsplit_once('/') else {
            return;
        };
        let dir = dir.strip_suffix("/at").unwrap_or(dir);
        let Ok(playlist) = std::str::from_utf8(body)
            .map_err(|e| e.to_string())
            .and_then(|text| MediaPlaylist::parse(text).map_err(|e| e.to_string()))
        else {
            self.violation(format!("{key} is not a media playlist"));
            return;
        };
        let mut named: Vec<&str> = Vec::new();
        for segment in &playlist.segments {
            named.push(&segment.uri);
            named.extend(segment.parts.iter().map(|p| p.uri.as_str()));
        }
        if let Some(open) = &playlist.open {
            named.extend(open.parts.iter().map(|p| p.uri.as_str()));
        }
        for uri in named {
            let media = format!("{dir}/{uri}");
            if !stored.contains_key(&media) {
                self.violation(format!("{key} names {media} before it is stored"));
            }
        }
    }

    fn record_put(&self, key: &str, body: Bytes) {
        self.stored
            .lock()
            .expect("faults")
            .insert(key.to_owned(), body);
        self.stored_at
            .lock()
            .expect("faults")
            .insert(key.to_owned(), Instant::now());
    }

    fn record_delete(&self, key: &str) {
        self.stored.lock().expect("faults").remove(key);
    }
}

/// Forwards to `inner`, breaking as [`Faults`] says.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

// `ObjectStore` is declared with `#[async_trait]`; these are the signatures
// that macro generates, written out.
impl ObjectStore for FaultyStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, object_store::Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let hang = self
                .faults
                .hang_puts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if hang {
                futures::future::pending::<()>().await;
            }
            self.faults.toll("put").await?;
            let key = location.to_string();
            let body: Bytes = payload.iter().flat_map(|b| b.iter().copied()).collect();
            self.faults.check_put(&key, &body, &opts.mode);
            let result = self.inner.put_opts(location, payload, opts).await;
            if result.is_ok() {
                self.faults.record_put(&key, body);
            }
            result
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, object_store::Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.faults.toll("get").await?;
            self.inner.get_opts(location, options).await
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let faults = Arc::clone(&self.faults);
        let inner = Arc::clone(&self.inner);
        locations
            .then(move |location| {
                let faults = Arc::clone(&faults);
                let inner = Arc::clone(&inner);
                async move {
                    let location = location?;
                    faults.toll("delete").await?;
                    let done = inner
                        .delete_stream(futures::stream::iter([Ok(location.clone())]).boxed())
                        .next()
                        .await
                        .unwrap_or(Ok(location));
                    if let Ok(path) = &done {
                        faults.record_delete(path.as_ref());
                    }
                    done
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, object_store::Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.faults.toll("list").await?;
            self.inner.list_with_delimiter(prefix).await
        })
    }

    fn copy_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy_opts(from, to, options)
    }
}
