//! WHIP ingest for a broadcast: the HTTP resources of RFC 9725 and the
//! bridge from WebRTC sessions to the studio.
//!
//! # HTTP (RFC 9725 §4)
//! Served by whatever HTTP server the broadcast hands [`WhipApi`]'s
//! [`Routes`] to (the in-process origin's), beside the host page
//! (`GET /{stream}/host`, see [`super::page`], never cached):
//! - `POST /{stream}/whip` with `Content-Type: application/sdp` and
//!   `Authorization: Bearer SECRET` (a host key's secret): the offer is
//!   checked by [`sdp::check_offer`] before the WebRTC stack sees it, then
//!   answered: `201 Created`, the SDP answer, and `Location:
//!   /{stream}/whip/{id}` with an unguessable id.
//! - `DELETE /{stream}/whip/{id}` with the same bearer ends the session
//!   (`200`).
//! - `PATCH` of a session is `405`: the endpoint is ICE-lite with one host
//!   candidate and takes the offer's candidates whole (no trickle ICE,
//!   RFC 9725 §4.3.1).
//! - `OPTIONS` answers CORS preflights so a host page on another origin can
//!   publish; responses carry `Access-Control-Allow-Origin: *` and expose
//!   `Location`.
//! - Refusals: 401 (no or wrong token), 400 (malformed offer, SDP bomb, no
//!   sendable Opus audio; the reason in the body), 413 (body over
//!   [`sdp::MAX_OFFER_BYTES`], refused without reading it all), 415 (not
//!   `application/sdp`), 503 (session limit, with `Retry-After`), 404
//!   (another stream, unknown session). Nothing is cacheable.
//!
//! # Media
//! One task owns the [`RtcEndpoint`]: when a session's ICE and DTLS are up
//! it reports the host `Connected` to the studio; each Opus RTP packet goes
//! into the session's [`OpusJitter`], which is pulled every
//! [`PULL_INTERVAL`] and its frames sent to the studio as the host's audio,
//! stamped on the [`ProgramClock`]; a closed session is `Disconnected`. A
//! WHIP host is a live host like an RTMP host: same keys, same control API,
//! same replacement rule (the studio asks [`WhipIngest::close`] to end a
//! replaced or kicked session).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Body;
use tokio::sync::mpsc;

use super::jitter::{OpusJitter, OpusJitterConfig};
use super::page::{HOST_SEGMENT, host_page};
use super::rtc::{AcceptError, RtcEndpoint, RtcEvent, RtcHandle};
use super::sdp::{self, OfferSummary};
use crate::ingest::keys::Keys;
use crate::ingest::{Close, IngestEvent, SessionId};
use crate::time::ProgramClock;
use crate::web::input::{self, BodyError, bearer_token};
use crate::web::{ResponseFuture, Routes};

/// How often each session's jitter buffer is pulled: half an Opus frame,
/// so a frame waits at most 10 ms once it is due.
pub const PULL_INTERVAL: Duration = Duration::from_millis(10);

pub use super::WHIP_SEGMENT;

/// `Retry-After` of a 503 when every session slot is taken, seconds.
const RETRY_AFTER_S: &str = "5";

/// The challenge of a 401 (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"onair-whip\"";

/// Methods of the endpoint and of a session, for `Allow` and CORS.
const ALLOW: &str = "POST, DELETE, PATCH, OPTIONS";

/// A session as the HTTP side knows it.
struct Resource {
    /// The location id (the last path segment of `Location`).
    id: String,
    /// The host the token belongs to.
    host: String,
    /// The studio's id of the session.
    studio: SessionId,
    /// What the offer said about FEC, for the jitter buffer.
    offer: OfferSummary,
}

#[derive(Default)]
struct Table {
    /// By WebRTC session id.
    by_rtc: HashMap<u64, Resource>,
}

impl Table {
    fn rtc_of_location(&self, id: &str) -> Option<u64> {
        self.by_rtc
            .iter()
            .find_map(|(rtc, r)| (r.id == id).then_some(*rtc))
    }

    fn rtc_of_studio(&self, studio: SessionId) -> Option<u64> {
        self.by_rtc
            .iter()
            .find_map(|(rtc, r)| (r.studio == studio).then_some(*rtc))
    }
}

struct Shared {
    stream: String,
    keys: Arc<Keys>,
    rtc: RtcHandle,
    table: Mutex<Table>,
    closes: mpsc::UnboundedSender<(u64, String)>,
}

impl Shared {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The WHIP HTTP resources of one broadcast (cheap to clone).
#[derive(Clone)]
pub struct WhipApi {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WhipApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipApi")
            .field("stream", &self.shared.stream)
            .finish()
    }
}

/// Closes WHIP sessions on behalf of the studio.
#[derive(Clone)]
pub struct WhipIngest {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WhipIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipIngest").finish_non_exhaustive()
    }
}

impl WhipIngest {
    /// Ends the WHIP session carrying `close.session`, if there is one.
    /// Returns whether one was found.
    pub fn close(&self, close: &Close) -> bool {
        let rtc = self.shared.table().rtc_of_studio(close.session);
        match rtc {
            Some(rtc) => self.shared.closes.send((rtc, close.reason.clone())).is_ok(),
            None => false,
        }
    }
}

/// Starts WHIP ingest for `stream` on `endpoint`: returns the HTTP resources
/// for the origin and the closer for the studio. Runs until the inbox
/// closes.
pub fn start(
    endpoint: RtcEndpoint,
    rtc: RtcHandle,
    stream: &str,
    keys: Arc<Keys>,
    inbox: mpsc::Sender<IngestEvent>,
    clock: ProgramClock,
    jitter: OpusJitterConfig,
) -> (WhipApi, WhipIngest) {
    let (closes, close_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        stream: stream.to_owned(),
        keys,
        rtc,
        table: Mutex::default(),
        closes,
    });
    let bridge = Bridge {
        shared: shared.clone(),
        inbox,
        clock,
        jitter,
        sessions: HashMap::new(),
        frames: Vec::new(),
    };
    tokio::spawn(bridge.run(endpoint, close_rx));
    (
        WhipApi {
            shared: shared.clone(),
        },
        WhipIngest { shared },
    )
}

/// A response under construction.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    location: Option<String>,
    challenge: bool,
    retry_after: bool,
    allow: bool,
}

impl Answer {
    fn text(status: StatusCode, reason: impl Into<String>) -> Self {
        let mut body = reason.into();
        body.push('\n');
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body),
            location: None,
            challenge: false,
            retry_after: false,
            allow: false,
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            body: Bytes::new(),
            ..Self::text(status, "")
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if !response_is_empty(self.status) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // RFC 9725 §4.6: a browser page on another origin may publish.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location"),
        );
        if let Some(location) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        if self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        if self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        }
        response
    }
}

fn response_is_empty(status: StatusCode) -> bool {
    status == StatusCode::NO_CONTENT
}

/// Which resource a path names.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// `/{stream}/whip`.
    Endpoint,
    /// `/{stream}/whip/{id}`.
    Session(&'a str),
}

impl WhipApi {
    /// Whether `path` is the broadcast's host page, `/{stream}/host`
    /// (asked of every request the server gets, so it builds no string).
    fn is_host_page(&self, path: &str) -> bool {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.shared.stream.as_str()))
            .and_then(|p| p.strip_prefix('/'))
            == Some(HOST_SEGMENT)
    }

    /// The host page, for `GET` and `HEAD`.
    fn host_page(&self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(Bytes::from(host_page(&self.shared.stream))));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        // The page belongs to the ingest side: a CDN in front of listeners
        // never needs it.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        response
    }

    /// Whether `path` belongs to WHIP: `/{stream}/whip` and below, for any
    /// stream name (so another stream's WHIP URL gets a WHIP 404).
    pub fn is_whip_path(path: &str) -> bool {
        let mut segments = path.trim_start_matches('/').split('/');
        let _stream = segments.next();
        segments.next() == Some(WHIP_SEGMENT)
    }

    fn target<'p>(&self, path: &'p str) -> Option<Target<'p>> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_prefix(self.shared.stream.as_str())?;
        let rest = rest.strip_prefix('/')?.strip_prefix(WHIP_SEGMENT)?;
        match rest {
            "" => Some(Target::Endpoint),
            _ => {
                let id = rest.strip_prefix('/')?;
                (!id.is_empty() && !id.contains('/')).then_some(Target::Session(id))
            }
        }
    }

    /// Answers one WHIP request (see the module docs).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        let answer = match (self.target(&path), req.method().clone()) {
            (None, _) => Answer::text(StatusCode::NOT_FOUND, "no such WHIP endpoint"),
            (Some(_), Method::OPTIONS) => {
                let mut response = preflight().into_response();
                add_preflight_headers(&mut response);
                return response;
            }
            (Some(Target::Endpoint), Method::POST) => self.publish(req).await,
            (Some(Target::Session(id)), Method::DELETE) => self.delete(&req, id).await,
            (Some(Target::Session(_)), Method::PATCH) => Answer {
                allow: true,
                ..Answer::text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "trickle ICE is not supported: this endpoint is ICE-lite; \
                     send the offer once ICE gathering is complete",
                )
            },
            (Some(_), _) => Answer {
                allow: true,
                ..Answer::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            },
        };
        answer.into_response()
    }

    /// The host a request's bearer token belongs to.
    fn host_of<B>(&self, req: &Request<B>) -> Result<String, Answer> {
        let host = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .and_then(|token| std::str::from_utf8(token).ok())
            .and_then(|token| self.shared.keys.host_for(token));
        host.map(str::to_owned).ok_or_else(|| Answer {
            challenge: true,
            ..Answer::text(
                StatusCode::UNAUTHORIZED,
                "a host's token is required: Authorization: Bearer SECRET",
            )
        })
    }

    async fn publish<B>(&self, req: Request<B>) -> Answer
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let host = match self.host_of(&req) {
            Ok(host) => host,
            Err(answer) => return answer,
        };
        let is_sdp = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/sdp"));
        if !is_sdp {
            return Answer::text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the offer must be sent as Content-Type: application/sdp",
            );
        }
        let body = match input::read_body(req.into_body(), sdp::MAX_OFFER_BYTES).await {
            Ok(body) => body,
            Err(error @ BodyError::TooLarge { .. }) => {
                return Answer::text(StatusCode::PAYLOAD_TOO_LARGE, error.to_string());
            }
            Err(error) => return Answer::text(StatusCode::BAD_REQUEST, error.to_string()),
        };
        let offer = match sdp::check_offer(&body) {
            Ok(offer) => offer,
            Err(error) => {
                tracing::info!(host, %error, "WHIP offer refused");
                return Answer::text(StatusCode::BAD_REQUEST, error.to_string());
            }
        };
        // check_offer proved the body is UTF-8.
        let text = String::from_utf8_lossy(&body).into_owned();
        let accepted = match self.shared.rtc.accept(text).await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::info!(host, %error, "WHIP offer not accepted");
                let status = match error {
                    AcceptError::TooManySessions { .. } | AcceptError::EndpointStopped => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                    AcceptError::OfferRejected { .. } | AcceptError::NoOpusAudio => {
                        StatusCode::BAD_REQUEST
                    }
                };
                return Answer {
                    retry_after: status == StatusCode::SERVICE_UNAVAILABLE,
                    ..Answer::text(status, error.to_string())
                };
            }
        };
        let opus_payload_type = offer.opus_payload_type;
        let id = location_id();
        let location = format!("/{}/{WHIP_SEGMENT}/{id}", self.shared.stream);
        tracing::info!(host, session = accepted.session, "WHIP session created");
        self.shared.table().by_rtc.insert(
            accepted.session,
            Resource {
                id,
                host,
                studio: SessionId::next(),
                offer,
            },
        );
        Answer {
            status: StatusCode::CREATED,
            content_type: "application/sdp",
            body: Bytes::from(sdp::answer_with_stereo(
                &accepted.answer_sdp,
                opus_payload_type,
            )),
            location: Some(location),
            ..Answer::empty(StatusCode::CREATED)
        }
    }

    async fn delete<B>(&self, req: &Request<B>, id: &str) -> Answer {
        let host = match self.host_of(req) {
            Ok(host) => host,
            Err(answer) => return answer,
        };
        let rtc = {
            let table = self.shared.table();
            table
                .rtc_of_location(id)
                .filter(|rtc| table.by_rtc.get(rtc).is_some_and(|r| r.host == host))
        };
        match rtc {
            Some(rtc) => {
                self.shared
                    .rtc
                    .close(rtc, "the publisher ended the session (WHIP DELETE)")
                    .await;
                Answer::empty(StatusCode::OK)
            }
            None => Answer::text(StatusCode::NOT_FOUND, "no such WHIP session"),
        }
    }
}

impl Routes for WhipApi {
    /// Every method on `/{stream}/whip` and below (any stream), and `GET` or
    /// `HEAD` of the broadcast's host page.
    fn claims(&self, method: &Method, path: &str) -> bool {
        WhipApi::is_whip_path(path)
            || (matches!(*method, Method::GET | Method::HEAD) && self.is_host_page(path))
    }

    fn handle(&self, req: Request<hyper::body::Incoming>) -> ResponseFuture<'_> {
        Box::pin(async move {
            if self.is_host_page(req.uri().path()) {
                self.host_page()
            } else {
                WhipApi::handle(self, req).await
            }
        })
    }
}

/// The answer to a CORS preflight (Fetch standard, CORS protocol).
fn preflight() -> Answer {
    let mut answer = Answer::empty(StatusCode::NO_CONTENT);
    answer.allow = true;
    answer
}

/// CORS headers a preflight needs beyond those of every answer.
fn add_preflight_headers(response: &mut Response<Full<Bytes>>) {
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
}

/// An unguessable session id for `Location`: 128 bits from two SipHash
/// keys the standard library draws from the OS, over a counter.
fn location_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = RandomState::new().hash_one(n);
    let b = RandomState::new().hash_one(n.rotate_left(32));
    format!("{a:016x}{b:016x}")
}

/// A live session's media state.
struct Live {
    studio: SessionId,
    jitter: OpusJitter,
}

struct Bridge {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<IngestEvent>,
    clock: ProgramClock,
    jitter: OpusJitterConfig,
    /// Connected sessions by WebRTC id.
    sessions: HashMap<u64, Live>,
    frames: Vec<super::jitter::Frame>,
}

impl Bridge {
    async fn run(
        mut self,
        mut endpoint: RtcEndpoint,
        mut closes: mpsc::UnboundedReceiver<(u64, String)>,
    ) {
        let mut pull = tokio::time::interval(PULL_INTERVAL);
        pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased: every packet that has arrived is in its jitter buffer
            // before the next pull, so a task that was not scheduled for a
            // while never conceals audio that is already here.
            let sent = tokio::select! {
                biased;
                event = endpoint.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => return,
                },
                Some((rtc, reason)) = closes.recv() => {
                    self.shared.rtc.close(rtc, reason).await;
                    true
                }
                _ = pull.tick() => self.pull().await,
            };
            if !sent {
                // The broadcast is over.
                let _ = endpoint.shutdown().await;
                return;
            }
        }
    }

    async fn on_event(&mut self, event: RtcEvent) -> bool {
        match event {
            RtcEvent::Connected { session, peer } => {
                let (host, studio, fec) = {
                    let table = self.shared.table();
                    let Some(r) = table.by_rtc.get(&session) else {
                        return true;
                    };
                    (r.host.clone(), r.studio, r.offer.inband_fec)
                };
                let jitter = match (OpusJitterConfig { fec, ..self.jitter }).build() {
                    Ok(jitter) => jitter,
                    Err(error) => {
                        tracing::error!(%error, "WHIP jitter buffer");
                        self.shared.rtc.close(session, error.to_string()).await;
                        return true;
                    }
                };
                self.sessions.insert(session, Live { studio, jitter });
                send(
                    &self.inbox,
                    IngestEvent::Connected {
                        host,
                        session: studio,
                        protocol: "whip",
                        peer: peer.to_string(),
                    },
                )
                .await
            }
            RtcEvent::Opus {
                session,
                seq,
                rtp_ts,
                payload,
                arrival,
            } => {
                if let Some(live) = self.sessions.get_mut(&session) {
                    live.jitter
                        .push(seq, rtp_ts, &payload, self.clock.at(arrival));
                }
                true
            }
            RtcEvent::Closed { session, reason } => {
                let resource = self.shared.table().by_rtc.remove(&session);
                let live = self.sessions.remove(&session);
                if let Some(live) = &live {
                    let stats = live.jitter.stats();
                    tracing::info!(
                        session,
                        received = stats.received,
                        lost = stats.lost,
                        fec = stats.concealed_fec,
                        plc = stats.concealed_plc,
                        late = stats.late,
                        reordered = stats.reordered,
                        silence_gaps = stats.silence_gaps,
                        "WHIP session's RTP"
                    );
                }
                match (resource, live) {
                    (Some(r), Some(_)) => {
                        send(
                            &self.inbox,
                            IngestEvent::Disconnected {
                                session: r.studio,
                                reason,
                            },
                        )
                        .await
                    }
                    (Some(r), None) => {
                        tracing::info!(
                            host = r.host,
                            reason,
                            "WHIP session ended before it connected"
                        );
                        true
                    }
                    _ => true,
                }
            }
        }
    }

    /// Sends every frame that is due to the studio; ends sessions whose
    /// audio cannot be decoded.
    async fn pull(&mut self) -> bool {
        let now = self.clock.now();
        let mut failed = Vec::new();
        let mut events = Vec::new();
        for (rtc, live) in &mut self.sessions {
            self.frames.clear();
            if let Err(error) = live.jitter.pull(now, &mut self.frames) {
                failed.push((*rtc, error.to_string()));
            }
            for frame in self.frames.drain(..) {
                events.push(IngestEvent::Audio {
                    session: live.studio,
                    host_ts_ms: frame.host_ts_ms,
                    audio: frame.audio,
                    arrival: now,
                });
            }
        }
        for (rtc, reason) in failed {
            tracing::warn!(session = rtc, reason, "ending the WHIP session");
            self.shared.rtc.close(rtc, reason).await;
        }
        for event in events {
            if !send(&self.inbox, event).await {
                return false;
            }
        }
        true
    }
}

/// Hands an event to the studio; false once the broadcast is over.
async fn send(inbox: &mpsc::Sender<IngestEvent>, event: IngestEvent) -> bool {
    inbox.send(event).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_whip_paths() {
        assert!(WhipApi::is_whip_path("/show/whip"));
        assert!(WhipApi::is_whip_path("/show/whip/abc"));
        assert!(!WhipApi::is_whip_path("/show/"));
        assert!(!WhipApi::is_whip_path("/show/host"));
        assert!(!WhipApi::is_whip_path("/show/aac/live.m3u8"));
        assert!(!WhipApi::is_whip_path("/whip"));
    }

    #[test]
    fn location_ids_are_long_and_distinct() {
        let a = location_id();
        let b = location_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
