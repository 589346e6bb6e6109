//! The HTTP side of the origin: the accept loop, the hyper service, and
//! every header a player, a browser or a CDN relies on.
//!
//! Contract:
//! - HTTP/1.1 and HTTP/2 over cleartext (h2c, prior knowledge) on one port;
//!   request headers must arrive within the configured time (slowloris).
//! - `GET` and `HEAD` serve, `OPTIONS` answers CORS preflights, anything
//!   else is 405. Every response carries `Access-Control-Allow-Origin: *`.
//!   Exception: a request that added [`Routes`] claim goes to their owner
//!   whatever its method, body included, and gets the owner's headers.
//! - `Content-Type` comes from [`ObjectKind`]; `Cache-Control` too: media
//!   and init immutable for a year; answers to blocking reloads and `at/`
//!   playlists six target durations; a plain `live.m3u8` half a part (0 s);
//!   the multivariant playlist one target duration; errors `no-store`.
//! - Playlists are gzip-encoded when the client accepts it, each body
//!   compressed once; every served body has a strong ETag and
//!   `If-None-Match` answers 304. No redirects.
//! - Waiting (blocking reloads, hinted parts) ends after three target
//!   durations with 503; at most `max_waiting` requests wait at once, beyond
//!   that 503 with `Retry-After`. No request can make the origin panic or
//!   read outside the requested stream's prefix.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::hls::PartId;
use crate::publish::ObjectKind;
use crate::publish::layout::ObjectKey;
use crate::web::Routes;

use super::blocking::{
    MediaDecision, PlaylistAnswer, PlaylistDecision, decide_media, decide_playlist,
};
use super::cache::{Document, LoadError};
use super::request::{self, Directives, HLSJS_PATH, MediaName, Rejection, RenditionPath, Route};
use super::state::StreamState;
use super::tracker::{Live, TrackState, header_value, td_seconds};
use super::{Origin, Shared, page};

type Body = Full<Bytes>;

/// How long the multivariant playlist and the store listing are reused
/// before the store is asked again (standalone origins).
const INDEX_TTL: Duration = Duration::from_secs(1);
const LISTING_TTL: Duration = Duration::from_secs(10);

/// Longest wait for a tracker's first read of a playlist.
const FIRST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `Cache-Control` of errors: never store (a 404 for a hinted part would
/// otherwise outlive the part's arrival in a CDN).
const NO_STORE: &str = "no-store";

/// `Cache-Control` of init segments and media, the same for every stream.
static INIT_CACHE_CONTROL: LazyLock<HeaderValue> =
    LazyLock::new(|| header_value(ObjectKind::Init.cache_control(0, 0)));
static MEDIA_CACHE_CONTROL: LazyLock<HeaderValue> =
    LazyLock::new(|| header_value(ObjectKind::Media.cache_control(0, 0)));

impl Origin {
    /// Serves HTTP (or HTTPS, see [`Origin::with_tls`]) on `listener` until
    /// the task is dropped. Each connection runs on its own task;
    /// connection errors are logged, never fatal.
    pub async fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.shared.config.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
        let tls = self
            .tls
            .as_ref()
            .map(|certificate| certificate.acceptor(crate::tls::HTTP_ALPN));
        let max_per_address = self.shared.config.max_connections_per_address;
        let per_address = (max_per_address > 0)
            .then(|| crate::web::per_address::PerAddress::new(max_per_address));
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather
                    // than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match &per_address {
                Some(table) => match table.acquire(peer.ip()) {
                    Some(slot) => Some(slot),
                    None => {
                        tracing::debug!(%peer, "connection refused: address at its limit");
                        continue;
                    }
                },
                None => None,
            };
            let _ = stream.set_nodelay(true);
            let shared = self.shared.clone();
            let routes = self.routes.clone();
            let builder = builder.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let limit = shared.config.header_read_timeout;
                let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let seen = requested.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    seen.store(true, Ordering::Relaxed);
                    let proxies = &shared.config.trusted_proxies;
                    let client = proxies.client(peer.ip(), req.headers());
                    req.extensions_mut()
                        .insert(crate::web::attempts::ClientAddr(client));
                    handle(shared.clone(), routes.clone(), req)
                });
                let served = match tls {
                    None => {
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        first_request_within(limit, &requested, connection).await
                    }
                    Some(tls) => {
                        // The handshake counts against the same limit as
                        // the first request: a client that connects and
                        // says nothing holds nothing for long.
                        let started = tokio::time::Instant::now();
                        let stream = match tokio::time::timeout(limit, tls.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let left = limit.saturating_sub(started.elapsed());
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        first_request_within(left, &requested, connection).await
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
    }
}

/// Runs a connection, dropping it if no request has started within `limit`
/// of the call. hyper's header read timeout starts only with the first
/// byte (and the HTTP version detection waits for bytes without a limit),
/// so a client that connects and never sends anything would otherwise hold
/// its connection, and a file descriptor, forever.
async fn first_request_within<F, E>(
    limit: Duration,
    requested: &std::sync::atomic::AtomicBool,
    connection: F,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => served,
        () = tokio::time::sleep(limit) => {
            if requested.load(Ordering::Relaxed) {
                connection.await
            } else {
                Ok(())
            }
        }
    }
}

/// What the service needs of a request; the rest (and the body) is dropped
/// before any waiting, to keep waiting requests small.
struct Head {
    method: Method,
    uri: Uri,
    gzip: bool,
    if_none_match: Option<HeaderValue>,
    preflight_headers: Option<HeaderValue>,
}

impl Head {
    fn of(req: Request<Incoming>) -> Head {
        let (parts, _body) = req.into_parts();
        let headers = &parts.headers;
        Head {
            gzip: accepts_gzip(headers),
            if_none_match: headers.get(header::IF_NONE_MATCH).cloned(),
            preflight_headers: headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
            method: parts.method,
            uri: parts.uri,
        }
    }
}

/// What to send, before the representation is chosen.
enum Reply {
    /// A stored object or a playlist.
    Doc {
        doc: Arc<Document>,
        kind: ObjectKind,
        cache_control: HeaderValue,
        /// The state that woke this request, if it waited.
        woken_by: Option<Arc<Live>>,
    },
    /// A page or script made by the origin.
    Text {
        body: Bytes,
        content_type: &'static str,
        cache_control: &'static str,
    },
    /// An error with a one-line reason.
    Error {
        status: StatusCode,
        reason: &'static str,
        retry_after: Option<u32>,
    },
}

impl Reply {
    fn error(status: StatusCode, reason: &'static str) -> Reply {
        Reply::Error {
            status,
            reason,
            retry_after: None,
        }
    }

    fn not_found() -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "not found")
    }

    fn bad_request(reason: &'static str) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, reason)
    }

    fn unavailable(reason: &'static str) -> Reply {
        Reply::Error {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason,
            retry_after: Some(1),
        }
    }

    fn busy() -> Reply {
        Reply::unavailable("too many requests are waiting; retry shortly")
    }
}

async fn handle(
    shared: Arc<Shared>,
    routes: Arc<[Arc<dyn Routes>]>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Before `Head::of`, which drops the body a PATCH or a WHIP offer needs.
    if let Some(owner) = routes
        .iter()
        .find(|r| r.claims(req.method(), req.uri().path()))
    {
        return Ok(owner.handle(req).await);
    }
    let head = Head::of(req);
    let mut reply = match head.method {
        Method::GET | Method::HEAD => dispatch(&shared, &head).await,
        Method::OPTIONS => return Ok(preflight(&head)),
        _ => {
            let mut response = respond(
                &head,
                Reply::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            );
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            return Ok(response);
        }
    };
    let woken_by = match &mut reply {
        Reply::Doc { woken_by, .. } => woken_by.take(),
        _ => None,
    };
    let response = respond(&head, reply);
    if let Some(live) = woken_by {
        live.wakes.record();
    }
    Ok(response)
}

async fn dispatch(shared: &Arc<Shared>, head: &Head) -> Reply {
    let route = match request::route(head.uri.path(), head.uri.query()) {
        Ok(route) => route,
        Err(Rejection::BadRequest(reason)) => return Reply::bad_request(reason),
        Err(Rejection::NotFound) => return Reply::not_found(),
    };
    match route {
        Route::Home => {
            let streams = live_streams(shared).await;
            html(page::index_page(&streams))
        }
        Route::HlsJs => match &shared.config.hlsjs_file {
            Some(script) => Reply::Text {
                body: script.clone(),
                content_type: "text/javascript; charset=utf-8",
                cache_control: "public, max-age=86400",
            },
            None => Reply::not_found(),
        },
        Route::ListenerPage { stream } => match index(shared, &stream).await {
            Ok(_) => {
                let hlsjs = match shared.config.hlsjs_file {
                    Some(_) => HLSJS_PATH,
                    None => shared.config.hlsjs_url.as_str(),
                };
                html(page::listener_page(&stream, hlsjs))
            }
            Err(reply) => reply,
        },
        Route::Multivariant { stream } => match index(shared, &stream).await {
            Ok(doc) => Reply::Doc {
                doc,
                kind: ObjectKind::Multivariant,
                cache_control: header_value(
                    ObjectKind::Multivariant
                        .cache_control(stream_target_duration(shared, &stream), 0),
                ),
                woken_by: None,
            },
            Err(reply) => reply,
        },
        Route::MediaPlaylist {
            rendition,
            directives,
        } => playlist(shared, &rendition, directives).await,
        Route::Media { rendition, name } => media(shared, &rendition, name).await,
    }
}

fn html(page: String) -> Reply {
    Reply::Text {
        body: Bytes::from(page),
        content_type: "text/html; charset=utf-8",
        // Short: the home page lists streams that come and go.
        cache_control: "public, max-age=10",
    }
}

/// A media playlist request: plain, blocking and/or delta.
async fn playlist(
    shared: &Arc<Shared>,
    rendition: &RenditionPath,
    directives: Directives,
) -> Reply {
    let mut rx = match shared.trackers.subscribe(rendition) {
        Ok(rx) => rx,
        Err(_) => return Reply::busy(),
    };
    let mut live = match first_state(&mut rx).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let target = directives.block;
    let mut decision = decide_playlist(&live.state, target);
    let mut woken_by = None;
    if decision == PlaylistDecision::Wait {
        live = match wait(shared, &mut rx, &live.state, |s| {
            decide_playlist(s, target) != PlaylistDecision::Wait
        })
        .await
        {
            Ok(live) => live,
            Err(reply) => return reply,
        };
        decision = decide_playlist(&live.state, target);
        woken_by = Some(live.clone());
    }
    let state = &live.state;
    let blocking = target.is_some() && state.blocks();
    let cache_control = if blocking {
        live.blocking_cache_control.clone()
    } else {
        live.live_cache_control.clone()
    };
    let doc = match decision {
        PlaylistDecision::Reject(reason) => return Reply::bad_request(reason),
        PlaylistDecision::Wait => return Reply::unavailable("the playlist did not advance"),
        PlaylistDecision::Serve(PlaylistAnswer::Live) => live.playlist.clone(),
        PlaylistDecision::Serve(PlaylistAnswer::At(id)) => {
            at_playlist(shared, rendition, id, &live).await
        }
    };
    // Directives, skip included, are ignored once the stream has ended.
    let doc = match directives.skip {
        Some(skip) if !state.ended() => doc.delta(skip),
        _ => doc,
    };
    Reply::Doc {
        doc,
        kind: if blocking {
            ObjectKind::PartPlaylist
        } else {
            ObjectKind::LivePlaylist
        },
        cache_control,
        woken_by,
    }
}

/// The immutable playlist of part `id`, or (if it cannot be read) the
/// newest playlist, which contains that part too. The newest part's is
/// kept with the state: all the requests a part wakes want that one.
async fn at_playlist(
    shared: &Shared,
    rendition: &RenditionPath,
    id: PartId,
    live: &Live,
) -> Arc<Document> {
    let newest = live.state.last_part() == Some(id);
    if newest && let Some(doc) = live.newest_at.get() {
        return doc.clone();
    }
    match object(shared, rendition.at_key(id)).await {
        Ok(doc) => {
            if newest {
                let _ = live.newest_at.set(doc.clone());
            }
            doc
        }
        Err(error) => {
            tracing::debug!(key = %rendition.at_key(id), %error, "serving live.m3u8 instead");
            live.playlist.clone()
        }
    }
}

/// A media request: init, segment or part.
async fn media(shared: &Arc<Shared>, rendition: &RenditionPath, name: MediaName) -> Reply {
    let mut rx = match shared.trackers.subscribe(rendition) {
        Ok(rx) => rx,
        Err(_) => return Reply::busy(),
    };
    let live = match first_state(&mut rx).await {
        Ok(live) => live,
        Err(reply) => return reply,
    };
    let mut decision = decide_media(&live.state, name);
    let mut woken_by = None;
    if decision == MediaDecision::Wait {
        let live = match wait(shared, &mut rx, &live.state, |s| {
            decide_media(s, name) != MediaDecision::Wait
        })
        .await
        {
            Ok(live) => live,
            Err(reply) => return reply,
        };
        decision = decide_media(&live.state, name);
        woken_by = Some(live);
    }
    drop(rx);
    match decision {
        MediaDecision::Fetch => match object(shared, rendition.key(name.file())).await {
            Ok(doc) => {
                let (kind, cache_control) = match name {
                    MediaName::Init => (ObjectKind::Init, &INIT_CACHE_CONTROL),
                    _ => (ObjectKind::Media, &MEDIA_CACHE_CONTROL),
                };
                Reply::Doc {
                    doc,
                    kind,
                    cache_control: HeaderValue::clone(cache_control),
                    woken_by,
                }
            }
            Err(LoadError::NotFound) => Reply::not_found(),
            Err(LoadError::Store(_)) => Reply::unavailable("the store is unavailable"),
        },
        MediaDecision::NotFound | MediaDecision::Wait => Reply::not_found(),
    }
}

/// The tracker's first playlist: 404 if the rendition has none.
async fn first_state(rx: &mut watch::Receiver<TrackState>) -> Result<Arc<Live>, Reply> {
    let state = tokio::time::timeout(
        FIRST_READ_TIMEOUT,
        rx.wait_for(|s| !matches!(s, TrackState::Loading)),
    )
    .await;
    match state {
        Ok(Ok(state)) => match &*state {
            TrackState::Ready(live) => Ok(live.clone()),
            TrackState::Missing => Err(Reply::not_found()),
            _ => Err(Reply::unavailable("the store is unavailable")),
        },
        _ => Err(Reply::unavailable("the store is unavailable")),
    }
}

/// Counts a waiting request; the count drops when this does.
struct WaitPermit<'a>(&'a AtomicUsize);

impl<'a> WaitPermit<'a> {
    fn acquire(waiting: &'a AtomicUsize, max: usize) -> Option<Self> {
        if waiting.fetch_add(1, Ordering::Relaxed) >= max {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(WaitPermit(waiting))
    }
}

impl Drop for WaitPermit<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until `ready` holds for the tracker's state, for at most three
/// target durations (RFC 8216bis 6.2.5.2), holding a [`WaitPermit`].
async fn wait(
    shared: &Shared,
    rx: &mut watch::Receiver<TrackState>,
    now: &StreamState,
    ready: impl Fn(&StreamState) -> bool,
) -> Result<Arc<Live>, Reply> {
    let Some(_permit) = WaitPermit::acquire(&shared.waiting, shared.config.max_waiting) else {
        return Err(Reply::busy());
    };
    let deadline = Duration::from_secs(3 * td_seconds(now).max(1) as u64);
    let woken = tokio::time::timeout(
        deadline,
        rx.wait_for(|s| match s {
            TrackState::Ready(live) => ready(&live.state),
            _ => true,
        }),
    )
    .await;
    match woken {
        Ok(Ok(state)) => match &*state {
            TrackState::Ready(live) => Ok(live.clone()),
            TrackState::Missing => Err(Reply::not_found()),
            _ => Err(Reply::unavailable("the store is unavailable")),
        },
        Ok(Err(_)) => Err(Reply::unavailable("the stream's tracker stopped")),
        Err(_) => Err(Reply::Error {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: "not available within three target durations",
            retry_after: None,
        }),
    }
}

/// An immutable object from the cache, or from the store into the cache.
async fn object(shared: &Shared, key: String) -> Result<Arc<Document>, LoadError> {
    if let Some(doc) = shared.cache.get(&key) {
        return Ok(doc);
    }
    let bytes = shared.loader.get(&key).await?;
    let doc = Arc::new(Document::new(bytes));
    shared.cache.insert(key, doc.clone());
    Ok(doc)
}

/// The stream's multivariant playlist: as announced, or read from the store
/// at most once per [`INDEX_TTL`] (missing ones too).
async fn index(shared: &Shared, stream: &str) -> Result<Arc<Document>, Reply> {
    let now = Instant::now();
    let known = match shared.indexes.get(stream, now) {
        Some(known) => known,
        None => {
            let read = match shared
                .loader
                .get(&ObjectKey::multivariant(stream).key())
                .await
            {
                Ok(bytes) => Some(Arc::new(Document::new(bytes))),
                Err(LoadError::NotFound) => None,
                Err(LoadError::Store(_)) => {
                    return Err(Reply::unavailable("the store is unavailable"));
                }
            };
            shared
                .indexes
                .put(stream, read.clone(), now, Some(INDEX_TTL));
            read
        }
    };
    known.ok_or_else(Reply::not_found)
}

/// Streams to list on the home page: the store's, plus those announced,
/// less those whose playlists say they have ended.
async fn live_streams(shared: &Shared) -> Vec<String> {
    let now = Instant::now();
    let mut names: Vec<String> = match shared.listing.get("", now) {
        Some(listing) => listing.to_vec(),
        None => {
            let listing = Arc::new(shared.loader.list_root().await.unwrap_or_default());
            shared
                .listing
                .put("", listing.clone(), now, Some(LISTING_TTL));
            listing.to_vec()
        }
    };
    let states = shared.trackers.states();
    names.extend(states.iter().map(|(r, _)| r.stream.clone()));
    names.retain(|n| crate::publish::layout::valid_stream_name(n));
    names.sort();
    names.dedup();
    names.retain(|name| {
        !states.iter().any(|(r, s)| {
            &r.stream == name && matches!(s, TrackState::Ready(live) if live.state.ended())
        })
    });
    names
}

/// A tracked stream's target duration, or 1 s if none is tracked yet.
fn stream_target_duration(shared: &Shared, stream: &str) -> u32 {
    shared
        .trackers
        .states()
        .iter()
        .find_map(|(r, s)| match s {
            TrackState::Ready(live) if r.stream == stream => Some(td_seconds(&live.state)),
            _ => None,
        })
        .unwrap_or(1)
}

/// Whether `Accept-Encoding` allows gzip (RFC 9110 12.5.3): listed, or
/// covered by `*`, with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip: Option<bool> = None;
    let mut any: Option<bool> = None;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut fields = item.split(';');
            let coding = fields.next().unwrap_or("").trim();
            let allowed = fields
                .filter_map(|p| p.trim().strip_prefix("q="))
                .all(|q| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0));
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                gzip = Some(allowed);
            } else if coding == "*" {
                any = Some(allowed);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

/// Whether `If-None-Match` matches `etag` (weak comparison, RFC 9110
/// 13.1.2).
fn etag_matches(if_none_match: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(text) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let etag = etag.trim_start_matches("W/");
    text.split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

/// Builds the response. Every header value is either static or prepared
/// with its document or state, so answering a woken request copies
/// references, not text.
fn respond(head: &Head, reply: Reply) -> Response<Body> {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    let (status, body) = match reply {
        Reply::Doc {
            doc,
            kind,
            cache_control,
            woken_by: _,
        } => {
            let compressible = matches!(
                kind,
                ObjectKind::LivePlaylist | ObjectKind::PartPlaylist | ObjectKind::Multivariant
            );
            let gzip = compressible && head.gzip;
            let (body, etag) = if gzip {
                (doc.gzip().clone(), doc.gzip_etag_value())
            } else {
                (doc.bytes().clone(), doc.etag_value())
            };
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(kind.content_type()),
            );
            headers.insert(header::CACHE_CONTROL, cache_control);
            if compressible {
                headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            }
            if gzip {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            let matched = etag_matches(head.if_none_match.as_ref(), etag.to_str().unwrap_or(""));
            headers.insert(header::ETAG, etag.clone());
            if matched {
                (StatusCode::NOT_MODIFIED, Bytes::new())
            } else {
                (StatusCode::OK, body)
            }
        }
        Reply::Text {
            body,
            content_type,
            cache_control,
        } => {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            (StatusCode::OK, body)
        }
        Reply::Error {
            status,
            reason,
            retry_after,
        } => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
            if let Some(seconds) = retry_after {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            (status, Bytes::from(format!("{reason}\n")))
        }
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Answers a CORS preflight (Fetch standard, CORS protocol): any origin,
/// the read methods, and the request headers asked for if they are plain
/// header names.
fn preflight(head: &Head) -> Response<Body> {
    let mut builder = Response::builder()
        .status(StatusCode::NO_CONTENT)
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .header(header::ACCESS_CONTROL_ALLOW_METHODS, "GET, HEAD, OPTIONS")
        .header(header::ACCESS_CONTROL_MAX_AGE, "86400")
        .header(header::CACHE_CONTROL, "public, max-age=86400");
    if let Some(asked) = &head.preflight_headers {
        let plain = asked.len() <= 256
            && asked
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '));
        if plain {
            builder = builder.header(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
    }
    builder
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"internal error\n")));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::origin::OriginConfig;

    /// Serves `origin` on a free port; the task ends with the test.
    async fn serve(origin: Origin) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { origin.serve(listener).await });
        addr
    }

    /// One HTTP/1.1 exchange; the raw response text.
    async fn exchange(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    fn origin() -> Origin {
        let store = crate::publish::open_store("memory://").expect("memory store");
        Origin::new(&store, OriginConfig::default())
    }

    /// Routes that answer every method under `/echo` with the method and
    /// the body they received.
    #[derive(Debug)]
    struct Echo;

    impl Routes for Echo {
        fn claims(&self, _method: &Method, path: &str) -> bool {
            path.starts_with("/echo")
        }

        fn handle(&self, req: Request<Incoming>) -> crate::web::ResponseFuture<'_> {
            Box::pin(async move {
                let method = req.method().clone();
                let body = crate::web::input::read_body(req.into_body(), 1024)
                    .await
                    .unwrap_or_default();
                let text = format!("{method} {}", String::from_utf8_lossy(&body));
                let mut response = Response::new(Full::new(Bytes::from(text)));
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            })
        }
    }

    #[tokio::test]
    async fn claimed_requests_reach_their_owner_with_their_body() {
        let addr = serve(origin().with_routes(Arc::new(Echo))).await;
        let body = r#"{"muted": true}"#;
        let response = exchange(
            addr,
            &format!(
                "PATCH /echo/hosts/alice HTTP/1.1\r\nHost: origin\r\n\
                 Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(&format!("PATCH {body}")), "{response}");
        let lower = response.to_ascii_lowercase();
        assert!(lower.contains("cache-control: no-store"), "{response}");
        // The owner's headers only: the origin adds no CORS to them.
        assert!(!lower.contains("access-control-allow-origin"), "{response}");
        // Paths nobody claims are still the origin's.
        let home = exchange(
            addr,
            "GET / HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(home.starts_with("HTTP/1.1 200"), "{home}");
        assert!(home.contains("Nothing is on air"), "{home}");
    }

    #[tokio::test]
    async fn without_a_control_api_control_paths_are_unknown() {
        let addr = serve(origin()).await;
        for path in ["/control", "/control/", "/control/hosts"] {
            let response = exchange(
                addr,
                &format!("GET {path} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"),
            )
            .await;
            assert!(response.starts_with("HTTP/1.1 404"), "{path}: {response}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_with_503_after_three_target_durations() {
        // A stream that stopped at part 101.1 (target duration 2 s): neither
        // the next part's playlist nor the part itself ever comes.
        use http_body_util::BodyExt;
        use object_store::ObjectStoreExt;
        let store = crate::publish::open_store("memory://").expect("memory store");
        let live = crate::origin::state::tests::live_after(8).render();
        store
            .object_store()
            .put(
                &object_store::path::Path::from("s/aac/live.m3u8"),
                object_store::PutPayload::from(live),
            )
            .await
            .expect("put");
        let origin = Origin::new(&store, OriginConfig::default());
        for target in [
            "/s/aac/live.m3u8?_HLS_msn=101&_HLS_part=2",
            "/s/aac/101.2.m4s",
        ] {
            let head = Head {
                method: Method::GET,
                uri: target.parse().expect("URI"),
                gzip: false,
                if_none_match: None,
                preflight_headers: None,
            };
            let start = tokio::time::Instant::now();
            let response = respond(&head, dispatch(&origin.shared, &head).await);
            assert_eq!(start.elapsed(), Duration::from_secs(6), "{target}");
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{target}"
            );
            assert_eq!(response.headers()[header::CACHE_CONTROL], NO_STORE);
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(&body[..], b"not available within three target durations\n");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let yes = [
            "gzip",
            "gzip, deflate, br",
            "br;q=1.0, gzip;q=0.5",
            "*",
            "identity, *;q=0.1",
        ];
        for value in yes {
            assert!(
                accepts_gzip(&headers(&[("accept-encoding", value)])),
                "{value}"
            );
        }
        let no = [
            "",
            "br",
            "identity",
            "gzip;q=0",
            "gzip;q=0.0, *",
            "*;q=0",
            "gzip;q=x",
        ];
        for value in no {
            assert!(
                !accepts_gzip(&headers(&[("accept-encoding", value)])),
                "{value}"
            );
        }
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = "\"1a-00ff\"";
        let m = |v: &'static str| etag_matches(Some(&HeaderValue::from_static(v)), tag);
        assert!(m("\"1a-00ff\""));
        assert!(m("W/\"1a-00ff\""));
        assert!(m("\"x\", \"1a-00ff\""));
        assert!(m("*"));
        assert!(!m("\"1a-00fe\""));
        assert!(!etag_matches(None, tag));
    }
}
