//! The room: what a host's page shows of the others, `GET /{stream}/room`.
//!
//! A host on air needs to see who else is on air and who is speaking, the
//! way a studio's on-air lights show it; the control API shows that and far
//! more, but only to the producer. The room answers any host of the
//! broadcast, authenticated by its own key (`Authorization: Bearer
//! SECRET`, failures counted per address with the keys' other uses), with
//! `{"you": NAME, "hosts": [{"name", "kind", "state", "muted",
//! "speaking"}]}`: no levels beyond speaking or not, no addresses, no
//! gains. Served whenever the broadcast has live hosts, with or without an
//! admin token. Answers are JSON with `Cache-Control: no-store`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{ControlApi, Problem, json};
use crate::ingest::keys::{Keys, Refusal};
use crate::studio::{ControlRequest, HostInfo};
use crate::web::attempts::ClientAddr;
use crate::web::input::bearer_token;
use crate::web::{ResponseFuture, Routes};

/// The last path segment of the room (`/{stream}/room`).
pub const ROOM_SEGMENT: &str = "room";

/// A host whose last mixed block was above this RMS level is speaking: a
/// voice at a conversational level sits near -30 to -20 dBFS, room noise
/// and a quiet microphone's hiss below -50 dBFS.
pub const SPEAKING_DBFS: f32 = -45.0;

/// `GET /{stream}/room` (see the module docs).
#[derive(Debug)]
pub struct RoomApi {
    path: String,
    keys: Arc<Keys>,
    /// Asks the pipeline for the host list, as the control API does (no
    /// admin token: the room authenticates hosts itself).
    list: ControlApi,
}

/// One host as the room shows it.
#[derive(Debug, Serialize, PartialEq)]
struct RoomHost<'a> {
    name: &'a str,
    kind: &'static str,
    state: &'static str,
    muted: bool,
    speaking: bool,
}

#[derive(Debug, Serialize)]
struct RoomJson<'a> {
    you: &'a str,
    hosts: Vec<RoomHost<'a>>,
}

impl<'a> From<&'a HostInfo> for RoomHost<'a> {
    fn from(host: &'a HostInfo) -> Self {
        let audible = matches!(host.state, "on-air" | "playing");
        RoomHost {
            name: &host.name,
            kind: host.kind.as_str(),
            state: host.state,
            muted: host.muted,
            speaking: audible && !host.muted && host.rms_dbfs > SPEAKING_DBFS,
        }
    }
}

impl RoomApi {
    /// The room of `stream` for the hosts of `keys`, asking the pipeline's
    /// control inbox for the host list.
    pub fn new(stream: &str, keys: Arc<Keys>, inbox: mpsc::Sender<ControlRequest>) -> Self {
        Self {
            path: format!("/{stream}/{ROOM_SEGMENT}"),
            keys,
            list: ControlApi::new(None, inbox),
        }
    }

    async fn serve<B>(&self, req: &Request<B>) -> Result<Response<Full<Bytes>>, Problem> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            return Err(Problem::method_not_allowed("GET, HEAD"));
        }
        let from = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let secret = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()))
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("");
        let you = self
            .keys
            .authorize(secret, from)
            .map_err(|refusal| match refusal {
                Refusal::TooManyFailures(refused) => Problem {
                    retry_after: Some(refused.retry_after_secs()),
                    ..Problem::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed attempts from this address: try again later",
                    )
                },
                Refusal::Unknown => Problem::new(
                    StatusCode::UNAUTHORIZED,
                    "a host's key is required: Authorization: Bearer <key>",
                ),
            })?;
        let hosts = self.list.list().await?;
        Ok(json(
            StatusCode::OK,
            &RoomJson {
                you: &you,
                hosts: hosts.iter().map(RoomHost::from).collect(),
            },
        ))
    }
}

impl Routes for RoomApi {
    fn claims(&self, _method: &Method, path: &str) -> bool {
        path == self.path
    }

    fn handle(&self, req: Request<hyper::body::Incoming>) -> ResponseFuture<'_> {
        Box::pin(async move {
            match self.serve(&req).await {
                Ok(response) => response,
                Err(problem) => problem.into_response(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::studio::HostKind;

    fn host(state: &'static str, muted: bool, rms_dbfs: f32) -> HostInfo {
        HostInfo {
            name: "alice".into(),
            kind: HostKind::Live,
            state,
            protocol: None,
            peer: None,
            gain_db: 0.0,
            muted,
            rms_dbfs,
            peak_dbfs: rms_dbfs,
            depth_ms: None,
            underruns: None,
            sessions: None,
            drift_ppm: None,
            overruns: None,
            returns: None,
            talkback: None,
        }
    }

    #[test]
    fn speaking_means_audible_on_air_and_above_the_threshold() {
        let speaking = |h: &HostInfo| RoomHost::from(h).speaking;
        assert!(speaking(&host("on-air", false, -25.0)));
        assert!(!speaking(&host("on-air", false, -60.0)), "room noise");
        assert!(!speaking(&host("on-air", true, -25.0)), "muted");
        assert!(!speaking(&host("connected", false, -25.0)), "buffering");
        assert!(!speaking(&host("on-air", false, f32::NEG_INFINITY)));
    }
}
