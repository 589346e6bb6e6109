//! The WHIP HTTP resources of a broadcast (RFC 9725 §4).
//!
//! Served by whatever HTTP server the broadcast hands [`WhipApi`]'s
//! [`Routes`] to (the in-process origin's), beside the host page
//! (`GET /{stream}/host`, see [`super::page`], never cached):
//! - `POST /{stream}/whip` with `Content-Type: application/sdp` and
//!   `Authorization: Bearer SECRET` (a host key's secret): the offer is
//!   checked by [`sdp::check_offer`] before the WebRTC stack sees it, then
//!   answered: `201 Created`, the SDP answer, and `Location:
//!   /{stream}/whip/{id}` with an unguessable id.
//! - `GET /{stream}/whip` with the same bearer answers the STUN and TURN
//!   servers a host should gather with before it offers, as JSON
//!   (`{"iceServers": [...]}`, TURN credentials minted for that host) and as
//!   `Link: <URL>; rel="ice-server"` headers, which every `201` carries too
//!   (RFC 9725 §4.6; see [`super::ice_servers`]).
//! - `DELETE /{stream}/whip/{id}` with the same bearer ends the session
//!   (`200`).
//! - `POST /{stream}/whep` (WHEP, draft-ietf-wish-whep) with a host's key
//!   and an offer whose audio receives (`recvonly`): a return-only session
//!   that is sent the host's mix-minus return and nothing else, for hosts
//!   who publish without a return path (RTMP). `Location:
//!   /{stream}/whep/{id}`, ended by `DELETE`; `GET` answers the ICE servers
//!   as for WHIP. `GET /{stream}/return` is a small page that plays it
//!   ([`super::return_page`]).
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

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Body;

use super::endpoint::{Kind, Resource, Shared};
use super::ice_servers::{IceServers, ServerFor};
use super::page::{HOST_SEGMENT, host_page};
use super::return_page::{RETURN_PAGE_SEGMENT, return_page};
use super::rtc::AcceptError;
use super::sdp;
use super::{TALKBACK_SEGMENT, WHEP_SEGMENT, WHIP_SEGMENT};
use crate::ingest::SessionId;
use crate::ingest::keys::Refusal;
use crate::web::attempts::ClientAddr;
use crate::web::input::{self, BodyError, bearer_token, constant_time_eq};
use crate::web::{ResponseFuture, Routes};

/// `Retry-After` of a 503 when every session slot is taken, seconds.
const RETRY_AFTER_S: u64 = 5;

/// The challenge of a 401 (RFC 6750 §3).
const CHALLENGE: &str = "Bearer realm=\"onair-whip\"";

/// Methods of the endpoint and of a session, for `Allow` and CORS.
const ALLOW: &str = "GET, POST, DELETE, PATCH, OPTIONS";

/// The WHIP HTTP resources of one broadcast (cheap to clone).
#[derive(Clone)]
pub struct WhipApi {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for WhipApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipApi")
            .field("stream", &self.shared.stream)
            .finish()
    }
}

/// A response under construction.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
    location: Option<String>,
    /// `Link` header values (RFC 8288).
    links: Vec<String>,
    challenge: bool,
    /// `Retry-After`, seconds.
    retry_after: Option<u64>,
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
            links: Vec::new(),
            challenge: false,
            retry_after: None,
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
            HeaderValue::from_static("Location, Link"),
        );
        if let Some(location) = self.location.and_then(|l| HeaderValue::try_from(l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        for link in self.links {
            // The values were checked to be sendable when configured.
            if let Ok(link) = HeaderValue::try_from(link) {
                headers.append(header::LINK, link);
            }
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
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
    /// `/{stream}/whip`, `/{stream}/whep` or `/{stream}/talkback`.
    Endpoint(Kind),
    /// A session under one of them.
    Session(Kind, &'a str),
}

/// The producer, as the host of a talkback session (no host key names
/// it: [`Kind`] tells talkback sessions apart).
const PRODUCER: &str = "";

impl WhipApi {
    /// The page `path` names, `/{stream}/host` or `/{stream}/return`, if
    /// any (asked of every request the server gets, so it builds no
    /// string).
    fn page_of(&self, path: &str) -> Option<&'static str> {
        let segment = path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(self.shared.stream.as_str()))
            .and_then(|p| p.strip_prefix('/'))?;
        [HOST_SEGMENT, RETURN_PAGE_SEGMENT]
            .into_iter()
            .find(|page| *page == segment)
    }

    /// The host page or the return page, for `GET` and `HEAD`.
    fn page(&self, which: &str) -> Response<Full<Bytes>> {
        let ice = !self.shared.ice.is_empty();
        let page = match which {
            HOST_SEGMENT => host_page(&self.shared.stream, ice),
            _ => return_page(&self.shared.stream, ice),
        };
        let mut response = Response::new(Full::new(Bytes::from(page)));
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

    /// Whether `path` belongs to WHIP or WHEP: `/{stream}/whip`,
    /// `/{stream}/whep` and below, for any stream name (so another stream's
    /// URL gets a WHIP 404).
    pub fn is_whip_path(path: &str) -> bool {
        let mut segments = path.trim_start_matches('/').split('/');
        let _stream = segments.next();
        matches!(
            segments.next(),
            Some(WHIP_SEGMENT | WHEP_SEGMENT | TALKBACK_SEGMENT)
        )
    }

    fn target<'p>(&self, path: &'p str) -> Option<Target<'p>> {
        let rest = path.strip_prefix('/')?;
        let rest = rest.strip_prefix(self.shared.stream.as_str())?;
        let rest = rest.strip_prefix('/')?;
        let (kind, rest) = [Kind::Host, Kind::Return, Kind::Talkback]
            .into_iter()
            .find_map(|k| Some((k, rest.strip_prefix(k.segment())?)))?;
        match rest {
            "" => Some(Target::Endpoint(kind)),
            _ => {
                let id = rest.strip_prefix('/')?;
                (!id.is_empty() && !id.contains('/')).then_some(Target::Session(kind, id))
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
            (Some(Target::Endpoint(kind)), Method::POST) => self.publish(req, kind).await,
            (Some(Target::Endpoint(kind)), Method::GET) => self.ice_servers(&req, kind),
            (Some(Target::Session(kind, id)), Method::DELETE) => self.delete(&req, kind, id).await,
            (Some(Target::Session(..)), Method::PATCH) => Answer {
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

    /// The host a request's bearer token belongs to. Failures count
    /// against the client's address; an address that failed too often is
    /// answered 429 whatever it presents.
    fn host_of<B>(&self, req: &Request<B>) -> Result<String, Answer> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .and_then(|token| std::str::from_utf8(token).ok())
            .unwrap_or("");
        let from = req.extensions().get::<ClientAddr>().map(|c| c.0);
        match self.shared.keys.authorize(token, from) {
            Ok(host) => Ok(host),
            Err(Refusal::Unknown) => Err(Answer {
                challenge: true,
                ..Answer::text(
                    StatusCode::UNAUTHORIZED,
                    "a host's token is required: Authorization: Bearer SECRET",
                )
            }),
            Err(Refusal::TooManyFailures(refused)) => Err(Answer {
                retry_after: Some(refused.retry_after_secs()),
                ..Answer::text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed attempts from this address: try again later",
                )
            }),
        }
    }

    /// Who a request to an endpoint of `kind` comes from: the host whose
    /// key it bears, or for talkback the producer ([`PRODUCER`]), whose
    /// token is the admin token. Failures count against the address with
    /// the keys' others.
    fn caller<B>(&self, req: &Request<B>, kind: Kind) -> Result<String, Answer> {
        if kind != Kind::Talkback {
            return self.host_of(req);
        }
        let Some(expected) = &self.shared.talkback_token else {
            return Err(Answer::text(
                StatusCode::FORBIDDEN,
                "talkback is off: start onair with --admin-token",
            ));
        };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .unwrap_or(b"");
        let from = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let attempts = self.shared.keys.attempts();
        let now = std::time::Instant::now();
        if let Some(from) = from
            && let Err(refused) = attempts.check(from, now)
        {
            return Err(Answer {
                retry_after: Some(refused.retry_after_secs()),
                ..Answer::text(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed attempts from this address: try again later",
                )
            });
        }
        if constant_time_eq(expected.as_bytes(), presented) {
            return Ok(PRODUCER.to_owned());
        }
        if let Some(from) = from {
            attempts.failed(from, now);
        }
        Err(Answer {
            challenge: true,
            ..Answer::text(
                StatusCode::UNAUTHORIZED,
                "the admin token is required: Authorization: Bearer TOKEN",
            )
        })
    }

    /// The host a talkback request is for, from its query (`?to=NAME`;
    /// none: every host); a name that is no host's key is refused.
    fn talkback_to<B>(&self, req: &Request<B>) -> Result<Option<String>, Answer> {
        let to = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == "to")
            .map(|(_, v)| v.into_owned())
            .filter(|to| !to.is_empty());
        match to {
            Some(to) if !self.shared.keys.names().contains(&to) => Err(Answer::text(
                StatusCode::BAD_REQUEST,
                format!("no live host named {to:?} to talk to"),
            )),
            to => Ok(to),
        }
    }

    /// The STUN and TURN servers for the host whose key the request bears.
    fn ice_servers<B>(&self, req: &Request<B>, kind: Kind) -> Answer {
        let host = match self.caller(req, kind) {
            Ok(host) => host,
            Err(answer) => return answer,
        };
        let servers = self.shared.ice.for_host(&host, SystemTime::now());
        Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body: Bytes::from(IceServers::json(&servers)),
            links: servers.iter().map(ServerFor::link).collect(),
            ..Answer::empty(StatusCode::OK)
        }
    }

    /// Opens a session of `kind`: a publisher's (WHIP), a return-only one
    /// (WHEP) or the producer's talkback (WHIP).
    async fn publish<B>(&self, req: Request<B>, kind: Kind) -> Answer
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let host = match self.caller(&req, kind) {
            Ok(host) => host,
            Err(answer) => return answer,
        };
        let talkback_to = match kind {
            Kind::Talkback => match self.talkback_to(&req) {
                Ok(to) => to,
                Err(answer) => return answer,
            },
            _ => None,
        };
        let purpose = kind.purpose();
        // A slot of the client's address, held with the session.
        let slot = match req.extensions().get::<ClientAddr>() {
            Some(client) => match self.shared.per_address.acquire(client.0) {
                Some(slot) => Some(slot),
                None => {
                    tracing::info!(host, client = %client.0, "WHIP offer refused: address at its session limit");
                    return Answer {
                        retry_after: Some(RETRY_AFTER_S),
                        ..Answer::text(
                            StatusCode::TOO_MANY_REQUESTS,
                            format!(
                                "this address holds {} WHIP sessions already: end one first",
                                self.shared.per_address.max()
                            ),
                        )
                    };
                }
            },
            None => None,
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
        let offer = match sdp::check_offer_for(&body, purpose) {
            Ok(offer) => offer,
            Err(error) => {
                tracing::info!(host, %error, "WHIP offer refused");
                return Answer::text(StatusCode::BAD_REQUEST, error.to_string());
            }
        };
        // check_offer proved the body is UTF-8.
        let text = String::from_utf8_lossy(&body).into_owned();
        let accepted = match self.shared.rtc.accept_for(text, purpose).await {
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
                    retry_after: (status == StatusCode::SERVICE_UNAVAILABLE)
                        .then_some(RETRY_AFTER_S),
                    ..Answer::text(status, error.to_string())
                };
            }
        };
        let opus_payload_type = offer.opus_payload_type;
        let id = location_id();
        let location = format!("/{}/{}/{id}", self.shared.stream, kind.segment());
        let session = accepted.session;
        match kind {
            Kind::Host => tracing::info!(host, session, "WHIP session created"),
            Kind::Return => tracing::info!(host, session, "WHEP return session created"),
            Kind::Talkback => tracing::info!(
                to = talkback_to.as_deref().unwrap_or("every host"),
                session,
                "talkback session created"
            ),
        }
        let links = self
            .shared
            .ice
            .for_host(&host, SystemTime::now())
            .iter()
            .map(ServerFor::link)
            .collect();
        self.shared.table().by_rtc.insert(
            accepted.session,
            Resource {
                id,
                host,
                studio: SessionId::next(),
                offer,
                kind,
                talkback_to,
                slot,
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
            links,
            ..Answer::empty(StatusCode::CREATED)
        }
    }

    async fn delete<B>(&self, req: &Request<B>, kind: Kind, id: &str) -> Answer {
        let host = match self.caller(req, kind) {
            Ok(host) => host,
            Err(answer) => return answer,
        };
        let rtc = {
            let table = self.shared.table();
            table.rtc_of_location(id).filter(|rtc| {
                table
                    .by_rtc
                    .get(rtc)
                    .is_some_and(|r| r.host == host && r.kind == kind)
            })
        };
        match rtc {
            Some(rtc) => {
                self.shared
                    .rtc
                    .close(rtc, "the publisher ended the session (WHIP DELETE)")
                    .await;
                // The session is over for the publisher now: its address may
                // open another at once, without waiting for the endpoint to
                // report the close.
                if let Some(resource) = self.shared.table().by_rtc.get_mut(&rtc) {
                    resource.slot = None;
                }
                Answer::empty(StatusCode::OK)
            }
            None => Answer::text(StatusCode::NOT_FOUND, "no such WHIP session"),
        }
    }
}

impl Routes for WhipApi {
    /// Every method on `/{stream}/whip`, `/{stream}/whep` and below (any
    /// stream), and `GET` or `HEAD` of the broadcast's host and return
    /// pages.
    fn claims(&self, method: &Method, path: &str) -> bool {
        WhipApi::is_whip_path(path)
            || (matches!(*method, Method::GET | Method::HEAD) && self.page_of(path).is_some())
    }

    fn handle(&self, req: Request<hyper::body::Incoming>) -> ResponseFuture<'_> {
        Box::pin(async move {
            match self.page_of(req.uri().path()) {
                Some(page) => self.page(page),
                None => WhipApi::handle(self, req).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_whip_paths() {
        assert!(WhipApi::is_whip_path("/show/whip"));
        assert!(WhipApi::is_whip_path("/show/whip/abc"));
        assert!(WhipApi::is_whip_path("/show/whep"));
        assert!(WhipApi::is_whip_path("/show/whep/abc"));
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
