//! The RTMP bridge: RTMP publishers as live hosts of the broadcast.
//!
//! [`start`] runs the RTMP [`server`](super::server) with an authorizer
//! built from the broadcast's [`Keys`] and a bridge task that turns each
//! accepted publisher's session events into [`IngestEvent`]s: `Connected`
//! on an accepted publish, decoded audio stamped with its arrival on the
//! [`ProgramClock`], `Disconnected` when the publisher stops. Decoding happens here, off the pipeline thread, one decoder per
//! connection.
//!
//! Publishers connect to `rtmp://ADDR/live/{secret}`. An unknown secret or
//! another application is refused with `NetStream.Publish.BadName`. Audio
//! that cannot be decoded (a truncated or corrupt frame, AAC without its
//! sequence header) ends that connection with the reason logged; the
//! broadcast and the other hosts go on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::server::{
    self, ConnectionEvent, ConnectionId, Connections, PublishRequest, ServerConfig,
};
use super::{AudioCodec, Event, Timeline};
use crate::audio::PacketDecoder;
use crate::ingest::keys::{Keys, Refusal};
use crate::ingest::{Close, IngestEvent, SessionId};
use crate::time::ProgramClock;

/// The RTMP application publishers use: `rtmp://ADDR/live/{secret}`.
pub const APP: &str = "live";

/// Session events buffered between the connections and the bridge.
const EVENTS: usize = 256;

/// Running RTMP ingest: closes sessions for the studio.
#[derive(Clone)]
pub struct RtmpIngest {
    connections: Connections,
    sessions: Arc<Mutex<HashMap<SessionId, ConnectionId>>>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for RtmpIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtmpIngest")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl RtmpIngest {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes the connection carrying `close.session`, if it is an RTMP
    /// session still open. Returns whether one was closed.
    pub fn close(&self, close: &Close) -> bool {
        let connection = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&close.session)
            .copied();
        connection.is_some_and(|c| self.connections.close(c, close.reason.clone()))
    }
}

/// Starts RTMP ingest on `listeners` (RTMP and RTMPS: one set of sessions,
/// so a host's publish over either replaces its session over the other)
/// for the hosts of `keys`, reporting to the pipeline through `inbox`. Runs
/// until the inbox closes.
pub fn start(
    listeners: Vec<server::Listener>,
    keys: Arc<Keys>,
    mut config: ServerConfig,
    inbox: mpsc::Sender<IngestEvent>,
    clock: ProgramClock,
) -> std::io::Result<RtmpIngest> {
    let mut urls = Vec::new();
    for listener in &listeners {
        let scheme = if listener.tls.is_some() {
            "rtmps"
        } else {
            "rtmp"
        };
        urls.push(format!(
            "{scheme}://{}/{APP}/{{stream key}}",
            listener.tcp.local_addr()?
        ));
    }
    let local_addr = match listeners.first() {
        Some(listener) => listener.tcp.local_addr()?,
        None => return Err(std::io::Error::other("RTMP ingest without a listener")),
    };
    let connections = config.connections.clone();
    config.connections = connections.clone();
    let ingest = RtmpIngest {
        connections,
        sessions: Arc::default(),
        local_addr,
    };
    let authorize_keys = keys.clone();
    let authorize: server::Authorizer = Arc::new(move |request: &PublishRequest| {
        authorize_publish(&authorize_keys, request).map(|_| ())
    });
    let (events_tx, events) = mpsc::channel(EVENTS);
    let serving = tokio::spawn(async move {
        if let Err(error) = server::serve_all(listeners, config, authorize, events_tx).await {
            tracing::error!(%error, "RTMP ingest stopped");
        }
    });
    let bridge = Bridge {
        keys,
        inbox,
        clock,
        sessions: ingest.sessions.clone(),
        connections: ingest.connections.clone(),
        publishers: HashMap::new(),
    };
    tokio::spawn(async move {
        bridge.run(events).await;
        serving.abort();
    });
    tracing::info!("RTMP ingest: {}", urls.join(", "));
    Ok(ingest)
}

/// The host a publish request is for, or why it is refused.
fn authorize_publish(keys: &Keys, request: &PublishRequest) -> Result<String, String> {
    if request.app != APP {
        return Err(format!(
            "unknown application {:?}: publish to rtmp://HOST/{APP}/KEY",
            request.app
        ));
    }
    keys.authorize(&request.key, Some(request.peer.ip()))
        .map_err(|refusal| match refusal {
            Refusal::Unknown => "unknown stream key".to_owned(),
            Refusal::TooManyFailures(refused) => format!(
                "too many failed attempts from {}: refused for {} s",
                request.peer.ip(),
                refused.retry_after_secs()
            ),
        })
}

/// An accepted publisher.
struct Publisher {
    host: String,
    session: SessionId,
    decoder: Option<PacketDecoder>,
    /// The AudioSpecificConfig the decoder was built from.
    asc: Vec<u8>,
    timeline: Timeline,
    /// The publisher unpublished: its audio is no longer mixed.
    stopped: bool,
}

struct Bridge {
    keys: Arc<Keys>,
    inbox: mpsc::Sender<IngestEvent>,
    clock: ProgramClock,
    sessions: Arc<Mutex<HashMap<SessionId, ConnectionId>>>,
    connections: Connections,
    publishers: HashMap<ConnectionId, Publisher>,
}

impl Bridge {
    async fn run(mut self, mut events: mpsc::Receiver<ConnectionEvent>) {
        let mut out = Vec::new();
        while let Some(event) = events.recv().await {
            self.on_event(event, &mut out);
            for message in out.drain(..) {
                if self.inbox.send(message).await.is_err() {
                    // The broadcast is over.
                    return;
                }
            }
        }
    }

    /// Turns one connection event into what the studio needs to know.
    fn on_event(&mut self, event: ConnectionEvent, out: &mut Vec<IngestEvent>) {
        let ConnectionEvent {
            connection,
            peer,
            event,
        } = event;
        if matches!(event, Event::PublishRequested { .. }) {
            // A new publish on a connection that published before: the
            // earlier session is over.
            out.extend(self.leave(connection, "the publisher published again".into()));
        }
        out.extend(self.translate(connection, peer, event));
    }

    fn translate(
        &mut self,
        connection: ConnectionId,
        peer: SocketAddr,
        event: Event,
    ) -> Option<IngestEvent> {
        match event {
            Event::PublishRequested { app, key } => {
                let request = PublishRequest {
                    connection,
                    peer,
                    app,
                    key,
                };
                // The server asked the same keys (and counted a failure);
                // this second look counts nothing.
                if request.app != APP {
                    return None;
                }
                let host = self.keys.admitted(&request.key, Some(request.peer.ip()))?;
                let session = SessionId::next();
                self.sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(session, connection);
                self.publishers.insert(
                    connection,
                    Publisher {
                        host: host.clone(),
                        session,
                        decoder: None,
                        asc: Vec::new(),
                        timeline: Timeline::default(),
                        stopped: false,
                    },
                );
                Some(IngestEvent::Connected {
                    host,
                    session,
                    protocol: "rtmp",
                    peer: peer.to_string(),
                })
            }
            Event::AacConfig(asc) => {
                let publisher = self.publishers.get_mut(&connection)?;
                if publisher.decoder.is_some() && publisher.asc == asc.bytes {
                    // Publishers repeat the sequence header; keep the state.
                    return None;
                }
                match PacketDecoder::aac(&asc.bytes) {
                    Ok(decoder) => {
                        publisher.decoder = Some(decoder);
                        publisher.asc = asc.bytes;
                        None
                    }
                    Err(error) => self.refuse(connection, format!("AAC configuration: {error}")),
                }
            }
            Event::Audio {
                timestamp_ms,
                codec,
                data,
            } => self.audio(connection, timestamp_ms, codec, &data),
            Event::Unpublished => {
                // The session reports why it ended in the `Closed` that
                // follows when it closes; until then the audio stops here.
                if let Some(p) = self.publishers.get_mut(&connection) {
                    p.stopped = true;
                }
                None
            }
            Event::Closed(reason) => self.leave(connection, reason.to_string()),
            Event::Connected { .. } | Event::Metadata(_) => None,
        }
    }

    fn audio(
        &mut self,
        connection: ConnectionId,
        timestamp_ms: u32,
        codec: AudioCodec,
        data: &[u8],
    ) -> Option<IngestEvent> {
        let publisher = self.publishers.get_mut(&connection)?;
        if publisher.stopped {
            return None;
        }
        if codec == AudioCodec::Mp3 && publisher.decoder.is_none() {
            match PacketDecoder::mp3() {
                Ok(decoder) => publisher.decoder = Some(decoder),
                Err(error) => return self.refuse(connection, format!("MP3 decoder: {error}")),
            }
        }
        let Some(decoder) = &mut publisher.decoder else {
            return self.refuse(connection, "AAC audio before its sequence header".into());
        };
        let audio = match decoder.decode(data) {
            Ok(audio) => audio,
            Err(error) => return self.refuse(connection, format!("undecodable audio: {error}")),
        };
        if audio.frames() == 0 {
            return None;
        }
        let host_ts_ms = match publisher.timeline.unwrap(timestamp_ms) {
            Ok(ts) => ts,
            Err(jump) => {
                // The live feed re-anchors on a break; start a new timeline
                // from this timestamp rather than drop the audio.
                tracing::warn!(host = publisher.host, %jump, "RTMP timestamps jumped");
                publisher.timeline = Timeline::default();
                publisher.timeline.unwrap(timestamp_ms).unwrap_or(0)
            }
        };
        Some(IngestEvent::Audio {
            session: publisher.session,
            host_ts_ms,
            audio,
            arrival: self.clock.now(),
        })
    }

    /// Ends a connection whose audio cannot be used; the host leaves.
    fn refuse(&mut self, connection: ConnectionId, reason: String) -> Option<IngestEvent> {
        if let Some(p) = self.publishers.get(&connection) {
            tracing::warn!(host = p.host, %connection, reason, "ending the RTMP session");
        }
        self.connections.close(connection, reason.clone());
        self.leave(connection, reason)
    }

    /// The publisher of `connection` has gone.
    fn leave(&mut self, connection: ConnectionId, reason: String) -> Option<IngestEvent> {
        let publisher = self.publishers.remove(&connection)?;
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&publisher.session);
        Some(IngestEvent::Disconnected {
            session: publisher.session,
            reason,
        })
    }
}
