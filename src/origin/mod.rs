//! The origin: serves the streams of a store to listeners (and CDNs) over
//! HTTP/1.1 and h2c, with LL-HLS blocking playlist reloads, preload hints
//! and delta updates (RFC 8216bis-16 6.2.5, 6.2.6).
//!
//! Layers, pure first:
//! - [`request`]: request targets to routes and delivery directives.
//! - [`state`]: a rendition's [`state::StreamState`], derived from its
//!   newest media playlist.
//! - [`blocking`]: what to answer given a state: now, later, or never.
//! - [`follower`]: when a standalone origin reads the store, and when it
//!   stops: the policy the tracker's store task carries out.
//! - [`cache`]: documents (bytes with ETag, gzip, deltas computed once), the
//!   bounded object cache and the single-flight store loader.
//! - [`tracker`]: one watch channel per rendition that waiting requests
//!   share, fed by the publisher in-process or by following the store.
//! - [`server`]: the hyper service: headers, gzip, CORS, ETag, limits.
//! - [`page`]: the listener pages.
//!
//! With [`Origin::with_routes`], the origin also serves resources other
//! layers own (the broadcast's control API, WHIP ingest and its host page)
//! through the [`Routes`] interface, without knowing what they are; they are
//! the one part that is not stateless, and only the broadcast's own
//! in-process origin has them.
//!
//! Contract: the origin keeps no state a second replica would not have:
//! everything it serves and decides comes from the store (or, in-process,
//! from the publisher's announcements of what it has just stored, which the
//! store then holds too). It only ever reads keys inside one `{stream}/`
//! prefix built from valid names, and never writes.

pub mod blocking;
pub mod cache;
pub mod follower;
pub mod page;
pub mod request;
pub mod server;
pub mod state;
pub mod tracker;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::publish::layout::{ObjectKey, RenditionFile, RenditionPath};
use crate::publish::{ObjectKind, Op, Store};
use crate::web::Routes;
use crate::web::forwarded::TrustedProxies;

use cache::{Document, Loader, ObjectCache, ShortLived};
use tracker::Trackers;

/// The hls.js the listener page loads by default (a public CDN).
pub const DEFAULT_HLSJS_URL: &str = "https://cdn.jsdelivr.net/npm/hls.js@1/dist/hls.min.js";

/// Settings of an [`Origin`].
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// URL of hls.js for the listener page.
    pub hlsjs_url: String,
    /// A copy of hls.js to serve at [`request::HLSJS_PATH`]; when set, the
    /// listener page loads that instead of `hlsjs_url`.
    pub hlsjs_file: Option<Bytes>,
    /// Requests that may wait at once (blocking reloads and hinted parts);
    /// beyond it, 503 with `Retry-After`. Default 100 000.
    pub max_waiting: usize,
    /// Time a client has to send its request headers (slowloris). Default
    /// 10 s.
    pub header_read_timeout: Duration,
    /// Bytes of immutable objects kept in memory. Default 256 MiB.
    pub cache_bytes: usize,
    /// A store-fed tracker stops after this long without requests. Default
    /// 30 s.
    pub tracker_idle: Duration,
    /// Renditions tracked at once; requests for more get 503. Default 4096.
    pub max_trackers: usize,
    /// Connections one client address may hold at once; 0 (the default)
    /// for no limit. Behind a CDN or carrier NAT many listeners share an
    /// address, so this is for origins that face hosts, not listeners.
    pub max_connections_per_address: usize,
    /// Proxies (CDN edges, load balancers) whose `X-Forwarded-For` names
    /// the client for the per-address limits of keys and WHIP sessions.
    /// None by default: the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            hlsjs_url: DEFAULT_HLSJS_URL.to_owned(),
            hlsjs_file: None,
            max_waiting: 100_000,
            header_read_timeout: Duration::from_secs(10),
            cache_bytes: 256 << 20,
            tracker_idle: Duration::from_secs(30),
            max_trackers: 4096,
            max_connections_per_address: 0,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// An origin over one store. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Origin {
    shared: Arc<Shared>,
    /// Resources other layers serve here, asked in order before the
    /// origin's own routes.
    routes: Arc<[Arc<dyn Routes>]>,
    /// Serve HTTPS with this certificate instead of cleartext HTTP.
    tls: Option<crate::tls::Certificate>,
}

#[derive(Debug)]
struct Shared {
    config: OriginConfig,
    loader: Arc<Loader>,
    cache: Arc<ObjectCache>,
    trackers: Arc<Trackers>,
    /// Multivariant playlists by stream name (`None`: not in the store).
    indexes: ShortLived<Option<Arc<Document>>>,
    /// The store's stream names, under the key "".
    listing: ShortLived<Arc<Vec<String>>>,
    /// Requests waiting right now.
    waiting: AtomicUsize,
}

impl Origin {
    /// An origin serving the streams of `store`.
    pub fn new(store: &Store, config: OriginConfig) -> Origin {
        let loader = Arc::new(Loader::new(store.object_store().clone()));
        let cache = Arc::new(ObjectCache::new(config.cache_bytes));
        let trackers = Arc::new(Trackers::new(
            loader.clone(),
            cache.clone(),
            config.tracker_idle,
            config.max_trackers,
        ));
        Origin {
            shared: Arc::new(Shared {
                config,
                loader,
                cache,
                trackers,
                indexes: ShortLived::default(),
                listing: ShortLived::default(),
                waiting: AtomicUsize::new(0),
            }),
            routes: Arc::new([]),
            tls: None,
        }
    }

    /// Serves HTTPS (HTTP/2 and HTTP/1.1 through ALPN) with `certificate`
    /// instead of cleartext HTTP; a reload of the certificate applies to
    /// the next connection.
    pub fn with_tls(mut self, certificate: crate::tls::Certificate) -> Origin {
        self.tls = Some(certificate);
        self
    }

    /// Whether this origin serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Also serves what `routes` claims (see [`Routes`]), before the
    /// origin's own routes and after those added earlier. Without it a
    /// request for such a path is the origin's like any other (most often
    /// 404): a standalone origin has no broadcast to control or ingest.
    pub fn with_routes(mut self, routes: Arc<dyn Routes>) -> Origin {
        let mut all = self.routes.to_vec();
        all.push(routes);
        self.routes = all.into();
        self
    }

    /// Follows a publisher's announcements (see
    /// [`Publisher::with_observer`](crate::publish::Publisher::with_observer)):
    /// stored objects go into the cache, stored playlists wake waiting
    /// requests at once. Runs until the sender is dropped. A receiver that
    /// lags re-reads the playlists from the store.
    pub async fn observe(&self, mut announcements: broadcast::Receiver<Op>) {
        loop {
            match announcements.recv().await {
                Ok(op) => self.shared.apply(op),
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "origin fell behind the publisher; re-reading playlists"
                    );
                    self.shared.resync().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Store requests made so far (reads and listings).
    pub fn store_requests(&self) -> u64 {
        self.shared.loader.requests()
    }

    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.shared
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Shared {
    /// Applies one announced store operation.
    fn apply(&self, op: Op) {
        match op {
            Op::Put(object) => match object.kind {
                ObjectKind::Init | ObjectKind::Media => {
                    let doc = Arc::new(Document::new(object.body));
                    self.cache.insert(object.key, doc);
                }
                ObjectKind::PartPlaylist => {
                    // Every request the next live.m3u8 wakes is answered
                    // with this playlist: encode it now, before they wait
                    // on it.
                    let doc = Arc::new(Document::new(object.body));
                    doc.gzip();
                    self.cache.insert(object.key, doc);
                }
                ObjectKind::LivePlaylist => {
                    if let Some(rendition) = live_playlist_rendition(&object.key) {
                        self.trackers.observe_live(rendition, object.body);
                    }
                }
                ObjectKind::Page => {}
                ObjectKind::Multivariant => {
                    if let Some(ObjectKey::Multivariant { stream }) = ObjectKey::parse(&object.key)
                    {
                        let doc = Arc::new(Document::new(object.body));
                        self.indexes.put(&stream, Some(doc), Instant::now(), None);
                    }
                }
            },
            Op::Delete(key) => self.cache.remove(&key),
        }
    }

    /// Re-reads every announced rendition's playlist from the store.
    async fn resync(&self) {
        for rendition in self.trackers.observed() {
            match self.loader.get(&rendition.live_key()).await {
                Ok(bytes) => self.trackers.observe_live(rendition, bytes),
                Err(error) => {
                    tracing::warn!(key = %rendition.live_key(), %error, "resync failed");
                }
            }
        }
    }
}

/// `{stream}/{rendition}/live.m3u8` to its rendition.
fn live_playlist_rendition(key: &str) -> Option<RenditionPath> {
    match ObjectKey::parse(key)? {
        ObjectKey::Rendition {
            path,
            file: RenditionFile::Live,
        } => Some(path),
        _ => None,
    }
}
