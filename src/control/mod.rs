//! The control API: the operator's HTTP interface to a live broadcast.
//!
//! Served under [`CONTROL_PATH`]`/` by whatever HTTP server the broadcast
//! hands its [`Routes`] to (the in-process origin's), it lets
//! the person running the show see every host and act on them while the
//! broadcast is on air:
//!
//! - `GET /control/hosts`: every host, in the order added.
//! - `GET /control/hosts/{name}`: one host.
//! - `PATCH /control/hosts/{name}` with `{"gain_db": -6.0}` and/or
//!   `{"muted": true}`: sets the gain, then the mute, in the same tick.
//! - `GET /control/publish`: the publisher: `state` (`ok`, `failing`,
//!   `stopped`), since when the store has been failing and its last error,
//!   the backlog waiting for it, past outages and how fast it caught up.
//! - `POST /control/hosts/{name}/kick`: ends a live host's session and keeps
//!   the host out for [`KICK_HOLD`](crate::studio::KICK_HOLD) (60 s), so a
//!   publisher that reconnects by itself does not walk straight back in.
//!
//! - `PATCH /control/talkback` with `{"to": "bob"}` (or `{"to": null}`:
//!   every host): points the producer's talkback (a WHIP session at
//!   `/{stream}/talkback?to=NAME` with the admin token, heard on hosts'
//!   returns and never on air) at another host without reconnecting it;
//!   answers the hosts that hear it now. 409 when no talkback is connected.
//!
//! Hosts see a little of this through their own key at
//! `GET /{stream}/room` ([`room`]): who is on air and who is speaking.
//!
//! Contract:
//! - Nothing here touches the mixer: each request becomes
//!   [`Command`]s on the pipeline's inbox, answered within one tick (20 ms).
//!   No answer within [`REPLY_TIMEOUT`], or a closed inbox, is 503: the
//!   program clock never waits on the control API, only the other way round.
//! - Every request needs `Authorization: Bearer <admin token>` (compared in
//!   constant time; 401 otherwise). Without a configured token the API is
//!   disabled (403), never open: it can silence a live broadcast.
//! - Request bodies are JSON (415 otherwise), at most [`MAX_BODY_BYTES`]
//!   (413), and unknown fields are refused (400) rather than ignored, so a
//!   typo never passes for success.
//! - Every answer is JSON with `Cache-Control: no-store` (it describes an
//!   instant and may be private); errors are `{"error": "reason"}`. No CORS
//!   headers: browsers on other sites get no access.

pub mod room;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Body;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::publish::PublishMonitor;
use crate::studio::{Command, CommandError, CommandReply, ControlRequest, HostInfo};
use crate::web::attempts::{ClientAddr, FailedAttempts};
use crate::web::input::{self, BodyError, bearer_token, constant_time_eq};
use crate::web::{ResponseFuture, Routes};

/// Where the control API is served: this path and everything below it. Its
/// first segment is a reserved stream name of the store layout
/// ([`crate::publish::layout::RESERVED_STREAM_NAMES`]), so no stream's URLs
/// ever fall under it.
pub const CONTROL_PATH: &str = "/control";

/// Whether `path` is the control API's ([`CONTROL_PATH`] or below it).
pub fn is_control(path: &str) -> bool {
    path.strip_prefix(CONTROL_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How long a request waits for the pipeline's answer. The pipeline takes
/// its inbox every 20 ms, so this only runs out when the broadcast has
/// stopped or stalled.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest request body accepted. A PATCH is a few dozen bytes; more is a
/// mistake or abuse.
pub const MAX_BODY_BYTES: usize = 4096;

/// The challenge of a 401 (RFC 6750 3).
const CHALLENGE: &str = "Bearer realm=\"onair-control\"";

const DISABLED: &str = "control API disabled: start onair with --admin-token or ONAIR_ADMIN_TOKEN";
const NOT_RUNNING: &str = "broadcast is not running";

/// The control API of one broadcast: the admin token and the pipeline's
/// inbox. Cheap to clone.
#[derive(Clone)]
pub struct ControlApi {
    /// `None`: the API is disabled.
    token: Option<Arc<str>>,
    inbox: mpsc::Sender<ControlRequest>,
    reply_timeout: Duration,
    /// The publisher's state, for `GET /control/publish`.
    publisher: Option<PublishMonitor>,
    /// Failed token attempts per client address.
    attempts: Arc<FailedAttempts>,
}

impl fmt::Debug for ControlApi {
    // The token is a secret: never in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlApi")
            .field("enabled", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl ControlApi {
    /// A control API that sends its commands to `inbox` (the studio's
    /// control inbox) and admits requests bearing `token`.
    /// Without a token (or with an empty one) every request is refused with
    /// 403: an open API would let anyone mute or kick the hosts.
    pub fn new(token: Option<String>, inbox: mpsc::Sender<ControlRequest>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
            inbox,
            reply_timeout: REPLY_TIMEOUT,
            publisher: None,
            attempts: Arc::default(),
        }
    }

    /// Counts failed token attempts in `attempts` (the hosts' keys' table,
    /// so a guesser's budget is one across the admin token and host keys).
    pub fn with_attempts(mut self, attempts: Arc<FailedAttempts>) -> Self {
        self.attempts = attempts;
        self
    }

    /// Serves the state of the broadcast's publisher at
    /// `GET /control/publish`: whether the store is taking objects, since
    /// when it has been failing, what waits for it, past outages.
    pub fn with_publisher(mut self, monitor: PublishMonitor) -> Self {
        self.publisher = Some(monitor);
        self
    }

    /// Answers one request whose path is [`CONTROL_PATH`] or below it (see
    /// the module docs for the routes). Never fails: every problem is an
    /// HTTP error with a JSON reason.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.serve(req).await {
            Ok(response) => response,
            Err(problem) => problem.into_response(),
        }
    }

    async fn serve<B>(&self, req: Request<B>) -> Result<Response<Full<Bytes>>, Problem>
    where
        B: Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // Authorization comes first, so an unauthenticated client learns
        // nothing, not even which routes or hosts exist.
        let from = req.extensions().get::<ClientAddr>().map(|c| c.0);
        self.authorize(req.headers(), from)?;
        let endpoint = Endpoint::of(req.uri().path())?;
        let method = req.method().clone();
        match (endpoint, method) {
            (Endpoint::Hosts, Method::GET | Method::HEAD) => {
                let hosts = self.list().await?;
                Ok(json(
                    StatusCode::OK,
                    &hosts.iter().map(HostJson::from).collect::<Vec<_>>(),
                ))
            }
            (Endpoint::Host(name), Method::GET | Method::HEAD) => {
                let hosts = self.list().await?;
                let host = hosts
                    .iter()
                    .find(|h| h.name == name)
                    .ok_or_else(|| command_problem(CommandError::UnknownHost(name)))?;
                Ok(json(StatusCode::OK, &HostJson::from(host)))
            }
            (Endpoint::Host(name), Method::PATCH) => {
                if !is_json(req.headers()) {
                    return Err(Problem::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "the body must be application/json",
                    ));
                }
                let patch = HostPatch::parse(&read_body(req.into_body()).await?)?;
                let host = self.ask(patch.commands(&name)).await?;
                Ok(json(StatusCode::OK, &HostJson::from(&host)))
            }
            (Endpoint::Publish, Method::GET | Method::HEAD) => match &self.publisher {
                Some(monitor) => Ok(json(StatusCode::OK, &monitor.status())),
                None => Err(Problem::not_found()),
            },
            (Endpoint::Talkback, Method::PATCH) => {
                if !is_json(req.headers()) {
                    return Err(Problem::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "the body must be application/json",
                    ));
                }
                let body = read_body(req.into_body()).await?;
                let patch: TalkbackPatch = serde_json::from_slice(&body).map_err(|e| {
                    Problem::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}"))
                })?;
                let mut replies = self.send(vec![Command::Talkback { to: patch.to }]).await?;
                let hosts = replies
                    .pop()
                    .unwrap_or(Ok(Vec::new()))
                    .map_err(command_problem)?;
                Ok(json(
                    StatusCode::OK,
                    &hosts.iter().map(HostJson::from).collect::<Vec<_>>(),
                ))
            }
            (Endpoint::Kick(name), Method::POST) => {
                let host = self.ask(vec![Command::Kick { host: name }]).await?;
                Ok(json(StatusCode::OK, &HostJson::from(&host)))
            }
            (endpoint, _) => Err(Problem::method_not_allowed(endpoint.allow())),
        }
    }

    /// Admits the request if it bears the configured token. Failures count
    /// against the client's address (with the hosts' keys, when
    /// [`with_attempts`](Self::with_attempts) shares their table); an
    /// address that failed too often gets 429 whatever it presents.
    fn authorize(&self, headers: &HeaderMap, from: Option<IpAddr>) -> Result<(), Problem> {
        let Some(token) = &self.token else {
            return Err(Problem::new(StatusCode::FORBIDDEN, DISABLED));
        };
        let now = Instant::now();
        if let Some(from) = from {
            self.attempts.check(from, now).map_err(|refused| Problem {
                retry_after: Some(refused.retry_after_secs()),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed attempts from this address: try again later",
                )
            })?;
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        match presented {
            Some(presented) if constant_time_eq(token.as_bytes(), presented) => Ok(()),
            _ => {
                if let Some(from) = from {
                    self.attempts.failed(from, now);
                }
                Err(Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "a valid admin token is required: Authorization: Bearer <token>",
                ))
            }
        }
    }

    /// Every host, as the pipeline sees them now.
    async fn list(&self) -> Result<Vec<HostInfo>, Problem> {
        let mut replies = self.send(vec![Command::List]).await?;
        replies
            .pop()
            .unwrap_or(Ok(Vec::new()))
            .map_err(command_problem)
    }

    /// Carries out commands on one host, in order, and returns the host as
    /// the last one left it; the first failure wins.
    async fn ask(&self, commands: Vec<Command>) -> Result<HostInfo, Problem> {
        let mut host = None;
        for reply in self.send(commands).await? {
            host = reply.map_err(command_problem)?.into_iter().next();
        }
        host.ok_or_else(|| {
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the broadcast answered without the host",
            )
        })
    }

    /// Queues all `commands` before waiting for any answer, so the pipeline
    /// takes them in one tick: listeners never hear a PATCH half applied.
    async fn send(&self, commands: Vec<Command>) -> Result<Vec<CommandReply>, Problem> {
        let exchange = async {
            let mut pending = Vec::with_capacity(commands.len());
            for command in commands {
                let (reply, answer) = oneshot::channel();
                self.inbox
                    .send(ControlRequest { command, reply })
                    .await
                    .ok()?;
                pending.push(answer);
            }
            let mut replies = Vec::with_capacity(pending.len());
            for answer in pending {
                replies.push(answer.await.ok()?);
            }
            Some(replies)
        };
        match tokio::time::timeout(self.reply_timeout, exchange).await {
            Ok(Some(replies)) => Ok(replies),
            // Closed inbox, dropped answer or no answer in time: the
            // pipeline is not taking its inbox.
            _ => Err(Problem::new(StatusCode::SERVICE_UNAVAILABLE, NOT_RUNNING)),
        }
    }
}

impl Routes for ControlApi {
    /// Every method on [`CONTROL_PATH`] and below.
    fn claims(&self, _method: &Method, path: &str) -> bool {
        is_control(path)
    }

    fn handle(&self, req: Request<hyper::body::Incoming>) -> ResponseFuture<'_> {
        Box::pin(ControlApi::handle(self, req))
    }
}

/// What a control path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `/control/hosts`.
    Hosts,
    /// `/control/hosts/{name}`.
    Host(String),
    /// `/control/hosts/{name}/kick`.
    Kick(String),
    /// `/control/publish`.
    Publish,
    /// `/control/talkback`.
    Talkback,
}

impl Endpoint {
    /// Routes a request path; anything else under the prefix is 404.
    fn of(path: &str) -> Result<Endpoint, Problem> {
        let rest = path.strip_prefix(CONTROL_PATH);
        if rest == Some("/publish") {
            return Ok(Endpoint::Publish);
        }
        if rest == Some("/talkback") {
            return Ok(Endpoint::Talkback);
        }
        let rest = rest
            .and_then(|rest| rest.strip_prefix("/hosts"))
            .ok_or_else(Problem::not_found)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            [""] => Ok(Endpoint::Hosts),
            ["", name] if !name.is_empty() => Ok(Endpoint::Host(host_name(name)?)),
            ["", name, "kick"] if !name.is_empty() => Ok(Endpoint::Kick(host_name(name)?)),
            _ => Err(Problem::not_found()),
        }
    }

    /// The `Allow` header of a 405 (RFC 9110 15.5.6).
    fn allow(&self) -> &'static str {
        match self {
            Endpoint::Hosts | Endpoint::Publish => "GET, HEAD",
            Endpoint::Host(_) => "GET, HEAD, PATCH",
            Endpoint::Kick(_) => "POST",
            Endpoint::Talkback => "PATCH",
        }
    }
}

/// A host name from its path segment, percent-decoded (names come from
/// file stems and may hold spaces or non-ASCII).
fn host_name(segment: &str) -> Result<String, Problem> {
    let bad = || Problem::new(StatusCode::BAD_REQUEST, "malformed host name in path");
    let bytes = segment.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3).ok_or_else(bad)?;
            name.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            name.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(name).map_err(|_| bad())
}

/// Whether `Content-Type` is `application/json` (parameters such as
/// `charset` allowed; media types are case-insensitive, RFC 9110 8.3.1).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads a request body of at most [`MAX_BODY_BYTES`].
async fn read_body<B>(body: B) -> Result<Bytes, Problem>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    input::read_body(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let status = match error {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Read(_) => StatusCode::BAD_REQUEST,
            };
            Problem::new(status, error.to_string())
        })
}

/// The body of `PATCH /control/talkback`: `to` absent or null is every
/// host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TalkbackPatch {
    #[serde(default)]
    to: Option<String>,
}

/// The body of a PATCH of a host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostPatch {
    gain_db: Option<f32>,
    muted: Option<bool>,
}

impl HostPatch {
    fn parse(body: &[u8]) -> Result<HostPatch, Problem> {
        let bad = |reason: String| Problem::new(StatusCode::BAD_REQUEST, reason);
        let patch: HostPatch =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid body: {e}")))?;
        if patch.gain_db.is_none() && patch.muted.is_none() {
            return Err(bad("nothing to change: give gain_db and/or muted".into()));
        }
        // JSON has no infinities, but 1e39 overflows an f32 to one.
        if patch.gain_db.is_some_and(|db| !db.is_finite()) {
            return Err(bad("gain_db must be a finite number of dB".into()));
        }
        Ok(patch)
    }

    /// The commands, gain first: unmuting with a new gain then starts at
    /// that gain instead of ramping through the old one.
    fn commands(&self, host: &str) -> Vec<Command> {
        let gain = self.gain_db.map(|db| Command::SetGain {
            host: host.to_owned(),
            db,
        });
        let mute = self.muted.map(|muted| Command::SetMuted {
            host: host.to_owned(),
            muted,
        });
        gain.into_iter().chain(mute).collect()
    }
}

/// A host on the wire. Kept apart from [`HostInfo`] so the API's shape is
/// decided here: kinds as strings, unknown or non-finite values as `null`.
#[derive(Debug, Serialize)]
struct HostJson<'a> {
    name: &'a str,
    kind: &'static str,
    state: &'static str,
    protocol: Option<&'static str>,
    peer: Option<&'a str>,
    gain_db: Option<f32>,
    muted: bool,
    rms_dbfs: Option<f32>,
    peak_dbfs: Option<f32>,
    depth_ms: Option<u64>,
    underruns: Option<u64>,
    sessions: Option<u64>,
    drift_ppm: Option<f64>,
    overruns: Option<u64>,
    returns: Option<usize>,
    talkback: Option<bool>,
}

impl<'a> From<&'a HostInfo> for HostJson<'a> {
    fn from(host: &'a HostInfo) -> Self {
        let finite = |x: f32| x.is_finite().then_some(x);
        HostJson {
            name: &host.name,
            kind: host.kind.as_str(),
            state: host.state,
            protocol: host.protocol,
            peer: host.peer.as_deref(),
            gain_db: finite(host.gain_db),
            muted: host.muted,
            rms_dbfs: finite(host.rms_dbfs),
            peak_dbfs: finite(host.peak_dbfs),
            depth_ms: host.depth_ms,
            underruns: host.underruns,
            sessions: host.sessions,
            // One decimal: the controller's last digits are noise.
            drift_ppm: host
                .drift_ppm
                .filter(|p| p.is_finite())
                .map(|p| (p * 10.0).round() / 10.0),
            overruns: host.overruns,
            returns: host.returns,
            talkback: host.talkback,
        }
    }
}

/// An error answer.
#[derive(Debug)]
struct Problem {
    status: StatusCode,
    reason: Cow<'static, str>,
    /// The methods a 405 names.
    allow: Option<&'static str>,
    /// `Retry-After` of a 429, seconds.
    retry_after: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Problem {
        Problem {
            status,
            reason: reason.into(),
            allow: None,
            retry_after: None,
        }
    }

    fn not_found() -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not found")
    }

    fn method_not_allowed(allow: &'static str) -> Problem {
        Problem {
            allow: Some(allow),
            ..Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct ErrorJson<'a> {
            error: &'a str,
        }
        let mut response = json(
            self.status,
            &ErrorJson {
                error: &self.reason,
            },
        );
        let headers = response.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(CHALLENGE),
            );
        }
        response
    }
}

/// What a failed command means for the client: a name that matches no host
/// is 404; asking a host for what its kind or state cannot do is 409.
fn command_problem(error: CommandError) -> Problem {
    let status = match error {
        CommandError::UnknownHost(_) => StatusCode::NOT_FOUND,
        CommandError::NotLive(_) | CommandError::NotConnected(_) => StatusCode::CONFLICT,
        CommandError::NotAdded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Problem::new(status, error.to_string())
}

/// A JSON answer, never stored by caches.
fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"error":"cannot encode the answer"}"#.to_vec(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tokio::task::JoinHandle;

    use crate::audio::mix::MAX_GAIN_DB;
    use crate::audio::{FeedConfig, FeedId, LiveFeedConfig, Mixer, MixerConfig};
    use crate::ingest::{Close, IngestEvent, SessionId};
    use crate::studio::{HostKind, Studio};

    const TOKEN: &str = "s3cret-token";

    /// What the pipeline thread owns: the studio and the mixer.
    struct Desk {
        studio: Studio,
        mixer: Mixer,
        /// The mixer feed of the file host "intro".
        intro: FeedId,
    }

    /// A file host "intro", the hold music "hold music" (a name that needs
    /// percent-encoding in a path) and an offline live host "alice".
    fn desk() -> Desk {
        let mut mixer = Mixer::new(MixerConfig::default());
        let mut studio = Studio::new();
        let intro = mixer.add_feed(feed("intro"));
        studio.add_file("intro", HostKind::File, intro);
        let hold = mixer.add_feed(feed("hold music"));
        studio.add_file("hold music", HostKind::Hold, hold);
        studio
            .add_live(&mut mixer, feed("alice"), LiveFeedConfig::default())
            .expect("live host");
        Desk {
            studio,
            mixer,
            intro,
        }
    }

    fn feed(name: &str) -> FeedConfig {
        FeedConfig {
            name: name.into(),
            gain_db: 0.0,
            muted: false,
        }
    }

    /// Answers the inbox as the pipeline thread does (ingest events before
    /// commands), until the control API is gone; then hands the desk back
    /// for inspection.
    fn spawn_pipeline(
        mut desk: Desk,
    ) -> (
        mpsc::Sender<IngestEvent>,
        mpsc::Sender<ControlRequest>,
        JoinHandle<Desk>,
    ) {
        let (ingest, mut events) = mpsc::channel(16);
        let (control, mut requests) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    Some(event) = events.recv() => desk.studio.ingest(event),
                    request = requests.recv() => match request {
                        Some(ControlRequest { command, reply }) => {
                            let _ = reply.send(desk.studio.command(&mut desk.mixer, command));
                        }
                        None => return desk,
                    },
                }
            }
        });
        (ingest, control, task)
    }

    /// A running control API, the ingest side of its pipeline and the
    /// pipeline task.
    struct Running {
        api: ControlApi,
        ingest: mpsc::Sender<IngestEvent>,
        task: JoinHandle<Desk>,
    }

    fn running() -> (ControlApi, JoinHandle<Desk>) {
        let Running { api, task, .. } = running_with_ingest();
        (api, task)
    }

    fn running_with_ingest() -> Running {
        let (ingest, control, task) = spawn_pipeline(desk());
        Running {
            api: ControlApi::new(Some(TOKEN.into()), control),
            ingest,
            task,
        }
    }

    /// Ends the pipeline task (dropping the API closes its inbox).
    async fn stop(api: ControlApi, task: JoinHandle<Desk>) -> Desk {
        drop(api);
        task.await.expect("pipeline task")
    }

    /// A request to send.
    struct Call<'a> {
        method: Method,
        path: &'a str,
        authorization: Option<String>,
        content_type: Option<&'a str>,
        body: Bytes,
    }

    impl<'a> Call<'a> {
        fn new(method: Method, path: &'a str) -> Self {
            Call {
                method,
                path,
                authorization: Some(format!("Bearer {TOKEN}")),
                content_type: None,
                body: Bytes::new(),
            }
        }

        fn get(path: &'a str) -> Self {
            Call::new(Method::GET, path)
        }

        fn patch(path: &'a str, body: &str) -> Self {
            Call {
                content_type: Some("application/json"),
                body: Bytes::from(body.to_owned()),
                ..Call::new(Method::PATCH, path)
            }
        }

        fn authorization(self, value: Option<&str>) -> Self {
            Call {
                authorization: value.map(str::to_owned),
                ..self
            }
        }

        /// Sends the request; checks what every answer must carry.
        async fn send(self, api: &ControlApi) -> Answer {
            let mut req = Request::builder().method(self.method).uri(self.path);
            if let Some(value) = self.authorization {
                req = req.header(header::AUTHORIZATION, value);
            }
            if let Some(value) = self.content_type {
                req = req.header(header::CONTENT_TYPE, value);
            }
            let req = req.body(Full::new(self.body)).expect("request");
            let response = api.handle(req).await;
            let (parts, body) = response.into_parts();
            assert_eq!(parts.headers[header::CACHE_CONTROL], "no-store");
            assert_eq!(parts.headers[header::CONTENT_TYPE], "application/json");
            assert!(
                !parts
                    .headers
                    .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            );
            let bytes = body.collect().await.expect("body").to_bytes();
            let json = serde_json::from_slice(&bytes).expect("a JSON body");
            Answer {
                status: parts.status,
                headers: parts.headers,
                json,
            }
        }
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        json: Value,
    }

    impl Answer {
        /// The reason of an error answer.
        fn error(&self) -> &str {
            self.json["error"].as_str().expect("an error reason")
        }

        fn host<'j>(&'j self, name: &str) -> &'j Value {
            self.json
                .as_array()
                .expect("a host list")
                .iter()
                .find(|h| h["name"] == name)
                .unwrap_or_else(|| panic!("{name} is not listed: {}", self.json))
        }
    }

    #[tokio::test]
    async fn shows_the_publisher_when_it_has_one() {
        let (api, task) = running();
        let answer = Call::get("/control/publish").send(&api).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        let store = crate::publish::open_store("memory://").expect("store");
        let publisher =
            crate::publish::Publisher::new(store, crate::publish::RetryPolicy::default());
        let (handle, driver) =
            crate::publish::spawn_live(publisher, crate::publish::LiveSettings::default());
        let api = api.with_publisher(handle.monitor());
        let answer = Call::get("/control/publish").send(&api).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.json["state"], "ok");
        assert_eq!(answer.json["backlog_batches"], 0);
        assert_eq!(answer.json["failing_since_unix_ms"], Value::Null);
        let answer = Call::new(Method::POST, "/control/publish").send(&api).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
        drop(handle);
        driver.await.expect("driver").expect("published");
        stop(api, task).await;
    }

    #[tokio::test]
    async fn lists_every_host_with_the_token() {
        let (api, task) = running();
        let list = Call::get("/control/hosts").send(&api).await;
        assert_eq!(list.status, StatusCode::OK);
        let names: Vec<&str> = list
            .json
            .as_array()
            .expect("an array")
            .iter()
            .map(|h| h["name"].as_str().expect("a name"))
            .collect();
        assert_eq!(names, ["intro", "hold music", "alice"]);
        // Nothing has been mixed: levels are -inf, which JSON shows as null.
        assert_eq!(
            list.host("intro"),
            &json!({
                "name": "intro", "kind": "file", "state": "playing",
                "protocol": null, "peer": null, "gain_db": 0.0, "muted": false,
                "rms_dbfs": null, "peak_dbfs": null,
                "depth_ms": null, "underruns": null, "sessions": null,
                "drift_ppm": null, "overruns": null, "returns": null, "talkback": null,
            })
        );
        assert_eq!(list.host("hold music")["kind"], "hold");
        let alice = list.host("alice");
        assert_eq!(alice["kind"], "live");
        assert_eq!(alice["state"], "offline");
        assert_eq!(alice["sessions"], 0);
        assert_eq!(alice["underruns"], 0);
        assert_eq!(alice["overruns"], 0);
        assert_eq!(alice["returns"], 0);
        assert_eq!(alice["drift_ppm"], 0.0);
        assert!(alice["depth_ms"].is_u64());

        let one = Call::get("/control/hosts/alice").send(&api).await;
        assert_eq!(one.status, StatusCode::OK);
        assert_eq!(&one.json, alice);
        let encoded = Call::get("/control/hosts/hold%20music").send(&api).await;
        assert_eq!(encoded.status, StatusCode::OK);
        assert_eq!(encoded.json["name"], "hold music");
        let head = Call::new(Method::HEAD, "/control/hosts").send(&api).await;
        assert_eq!(head.status, StatusCode::OK);
        stop(api, task).await;
    }

    #[tokio::test]
    async fn refuses_missing_and_wrong_tokens() {
        // No pipeline behind the API: a request that got past the check
        // would be 503, so 401 shows the check comes first.
        let (inbox, _) = mpsc::channel(1);
        let api = ControlApi::new(Some(TOKEN.into()), inbox);
        let wrong = [
            None,
            Some("Bearer".to_owned()),
            Some("Bearer ".to_owned()),
            Some("Bearer wrong".to_owned()),
            Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
            Some(format!("Bearer {TOKEN}x")),
            Some(format!("Bearer {}", TOKEN.to_uppercase())),
            Some(format!("Basic {TOKEN}")),
            Some(TOKEN.to_owned()),
        ];
        for authorization in wrong {
            for path in ["/control/hosts", "/control/hosts/nobody/kick", "/control/x"] {
                let answer = Call::get(path)
                    .authorization(authorization.as_deref())
                    .send(&api)
                    .await;
                assert_eq!(
                    answer.status,
                    StatusCode::UNAUTHORIZED,
                    "{authorization:?} {path}"
                );
                assert_eq!(
                    answer.headers[header::WWW_AUTHENTICATE],
                    "Bearer realm=\"onair-control\""
                );
            }
        }
        // The scheme is case-insensitive: past the check, on to the
        // (absent) pipeline.
        let answer = Call::get("/control/hosts")
            .authorization(Some(&format!("bearer {TOKEN}")))
            .send(&api)
            .await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn is_disabled_without_a_token() {
        let (_ingest, inbox, task) = spawn_pipeline(desk());
        for token in [None, Some(String::new())] {
            let api = ControlApi::new(token, inbox.clone());
            for authorization in [
                None,
                Some(format!("Bearer {TOKEN}")),
                Some("Bearer ".into()),
            ] {
                let answer = Call::get("/control/hosts")
                    .authorization(authorization.as_deref())
                    .send(&api)
                    .await;
                assert_eq!(answer.status, StatusCode::FORBIDDEN);
                assert_eq!(answer.error(), DISABLED);
            }
        }
        drop(inbox);
        task.await.expect("pipeline task");
    }

    #[tokio::test]
    async fn patch_sets_gain_then_mute() {
        let (api, task) = running();
        let both = Call::patch(
            "/control/hosts/intro",
            r#"{"gain_db": -6.0, "muted": true}"#,
        )
        .send(&api)
        .await;
        assert_eq!(both.status, StatusCode::OK, "{}", both.json);
        assert_eq!(both.json["name"], "intro");
        assert_eq!(both.json["gain_db"], -6.0);
        assert_eq!(both.json["muted"], true);
        let list = Call::get("/control/hosts").send(&api).await;
        assert_eq!(list.host("intro")["gain_db"], -6.0);
        assert_eq!(list.host("intro")["muted"], true);
        assert_eq!(list.host("alice")["gain_db"], 0.0);

        // One field alone leaves the other as it was.
        let unmute = Call::patch("/control/hosts/intro", r#"{"muted": false}"#)
            .send(&api)
            .await;
        assert_eq!(unmute.json["gain_db"], -6.0);
        assert_eq!(unmute.json["muted"], false);
        // The mixer clamps; the answer shows what it applied.
        let loud = Call::patch("/control/hosts/alice", r#"{"gain_db": 100}"#)
            .send(&api)
            .await;
        assert_eq!(loud.status, StatusCode::OK);
        assert_eq!(loud.json["gain_db"], f64::from(MAX_GAIN_DB));
        let unknown = Call::patch("/control/hosts/bob", r#"{"muted": true}"#)
            .send(&api)
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.error().contains("bob"), "{}", unknown.error());

        let desk = stop(api, task).await;
        assert_eq!(
            desk.mixer.feed_config(desk.intro),
            Some(&FeedConfig {
                name: "intro".into(),
                gain_db: -6.0,
                muted: false
            })
        );
    }

    #[tokio::test]
    async fn patch_refuses_bad_bodies() {
        let (api, task) = running();
        for body in [
            "{}",
            r#"{"gain": 1}"#,
            r#"{"muted": true, "solo": true}"#,
            r#"{"muted": "yes"}"#,
            r#"{"gain_db": "-6"}"#,
            r#"{"gain_db": 1e39}"#,
            r#"{"gain_db": null}"#,
            "[1]",
            "-6",
            "not json",
            "",
        ] {
            let answer = Call::patch("/control/hosts/intro", body).send(&api).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body:?}");
            assert!(!answer.error().is_empty());
        }
        let reason = Call::patch("/control/hosts/intro", r#"{"gain": 1}"#)
            .send(&api)
            .await;
        assert!(reason.error().contains("gain"), "{}", reason.error());

        for content_type in [None, Some("text/plain"), Some("application/jsonp")] {
            let answer = Call {
                content_type,
                ..Call::patch("/control/hosts/intro", r#"{"muted": true}"#)
            }
            .send(&api)
            .await;
            assert_eq!(
                answer.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}"
            );
        }
        let with_charset = Call {
            content_type: Some("Application/JSON; charset=utf-8"),
            ..Call::patch("/control/hosts/intro", r#"{"muted": true}"#)
        }
        .send(&api)
        .await;
        assert_eq!(with_charset.status, StatusCode::OK);

        // Valid JSON, but over the limit.
        let huge = format!(r#"{{"muted": true{}}}"#, " ".repeat(MAX_BODY_BYTES));
        let answer = Call::patch("/control/hosts/intro", &huge).send(&api).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        let desk = stop(api, task).await;
        // Only the one valid request changed anything.
        assert_eq!(
            desk.mixer.feed_config(desk.intro).map(|c| c.muted),
            Some(true)
        );
        assert_eq!(
            desk.mixer.feed_config(desk.intro).map(|c| c.gain_db),
            Some(0.0)
        );
    }

    /// A chunked body declares no length: the limit must stop the read.
    #[tokio::test]
    async fn an_undeclared_body_is_cut_at_the_limit() {
        use futures::stream;
        use http_body_util::StreamBody;
        use hyper::body::Frame;

        let (api, task) = running();
        let chunk = Bytes::from(vec![b' '; 1024]);
        let chunks = (0..8).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone())));
        let req = Request::builder()
            .method(Method::PATCH)
            .uri("/control/hosts/intro")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(StreamBody::new(stream::iter(chunks)))
            .expect("request");
        let response = api.handle(req).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        stop(api, task).await;
    }

    #[tokio::test]
    async fn kick_ends_only_a_connected_live_session() {
        let Running { api, ingest, task } = running_with_ingest();
        let kick = |path| Call::new(Method::POST, path);
        let file = kick("/control/hosts/intro/kick").send(&api).await;
        assert_eq!(file.status, StatusCode::CONFLICT);
        assert!(file.error().contains("not a live host"), "{}", file.error());
        let offline = kick("/control/hosts/alice/kick").send(&api).await;
        assert_eq!(offline.status, StatusCode::CONFLICT);
        assert!(
            offline.error().contains("not connected"),
            "{}",
            offline.error()
        );
        let unknown = kick("/control/hosts/bob/kick").send(&api).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);

        let session = SessionId(7);
        ingest
            .send(IngestEvent::Connected {
                host: "alice".into(),
                session,
                protocol: "rtmp",
                peer: "192.0.2.1:50000".into(),
            })
            .await
            .expect("inbox");
        let connected = Call::get("/control/hosts/alice").send(&api).await;
        assert_eq!(connected.json["state"], "connected");
        assert_eq!(connected.json["protocol"], "rtmp");
        assert_eq!(connected.json["peer"], "192.0.2.1:50000");
        assert_eq!(connected.json["sessions"], 1);

        let kicked = kick("/control/hosts/alice/kick").send(&api).await;
        assert_eq!(kicked.status, StatusCode::OK, "{}", kicked.json);
        assert_eq!(kicked.json["state"], "offline");
        assert_eq!(kicked.json["peer"], Value::Null);
        assert_eq!(kicked.json["sessions"], 1);
        // Kicked once: the session is gone.
        let again = kick("/control/hosts/alice/kick").send(&api).await;
        assert_eq!(again.status, StatusCode::CONFLICT);

        let mut desk = stop(api, task).await;
        assert_eq!(
            desk.studio.take_closes(),
            [Close {
                session,
                reason: "kicked by the operator".into()
            }]
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let (api, task) = running();
        for path in [
            "/control",
            "/control/",
            "/control/host",
            "/control/hosts/",
            "/control/hosts//kick",
            "/control/hosts/alice/",
            "/control/hosts/alice/mute",
            "/control/hosts/alice/kick/now",
        ] {
            let answer = Call::get(path).send(&api).await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        }
        let unknown = Call::get("/control/hosts/bob").send(&api).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        for path in [
            "/control/hosts/%zz",
            "/control/hosts/%ff",
            "/control/hosts/a%2",
        ] {
            let answer = Call::get(path).send(&api).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        }
        for (method, path, allow) in [
            (Method::DELETE, "/control/hosts", "GET, HEAD"),
            (Method::POST, "/control/hosts", "GET, HEAD"),
            (Method::PUT, "/control/hosts/alice", "GET, HEAD, PATCH"),
            (Method::POST, "/control/hosts/alice", "GET, HEAD, PATCH"),
            (Method::GET, "/control/hosts/alice/kick", "POST"),
            (Method::OPTIONS, "/control/hosts/alice/kick", "POST"),
        ] {
            let answer = Call::new(method.clone(), path).send(&api).await;
            assert_eq!(
                answer.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(answer.headers[header::ALLOW], allow, "{method} {path}");
        }
        stop(api, task).await;
    }

    #[tokio::test]
    async fn a_stopped_or_stalled_broadcast_is_unavailable() {
        // Closed inbox: the pipeline thread has ended.
        let (inbox, messages) = mpsc::channel(1);
        drop(messages);
        let api = ControlApi::new(Some(TOKEN.into()), inbox);
        for call in [
            Call::get("/control/hosts"),
            Call::patch("/control/hosts/alice", r#"{"muted": true}"#),
            Call::new(Method::POST, "/control/hosts/alice/kick"),
        ] {
            let answer = call.send(&api).await;
            assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(answer.json, json!({"error": NOT_RUNNING}));
        }

        // A pipeline that takes messages but never answers: the wait ends.
        let (inbox, mut messages) = mpsc::channel(4);
        let stalled = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(message) = messages.recv().await {
                held.push(message);
            }
        });
        let api = ControlApi {
            reply_timeout: Duration::from_millis(50),
            ..ControlApi::new(Some(TOKEN.into()), inbox)
        };
        let answer = Call::get("/control/hosts").send(&api).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.error(), NOT_RUNNING);
        drop(api);
        stalled.await.expect("stalled task");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let (inbox, _) = mpsc::channel(1);
        let api = ControlApi::new(Some(TOKEN.into()), inbox);
        let text = format!("{api:?}");
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.contains("enabled: true"), "{text}");
    }

    #[test]
    fn control_paths_are_claimed_exactly() {
        for path in ["/control", "/control/", "/control/hosts/a/kick"] {
            assert!(is_control(path), "{path:?}");
        }
        // Streams whose names merely start with the word stay streams.
        for path in ["/controls/", "/control-room/index.m3u8", "/", "/show/"] {
            assert!(!is_control(path), "{path:?}");
        }
        let folder = CONTROL_PATH.trim_start_matches('/');
        assert!(crate::publish::layout::RESERVED_STREAM_NAMES.contains(&folder));
    }
}
