//! The tokio driver for RTMP ingest: accepts connections and runs one
//! [`Session`] per connection. The only file of the RTMP ingest that does IO.
//!
//! Contract: [`serve`] accepts until its listener fails or its task is
//! dropped. At most [`ServerConfig::max_connections`] connections run at
//! once, and [`ServerConfig::max_per_address`] per client address; one more
//! is closed at once with a warning. Each connection reads
//! into its session, writes the session's output, asks the caller's
//! [`Authorizer`] about a publish, and forwards every session event, tagged
//! with its [`ConnectionId`], to the caller's channel (waiting when it is
//! full, so a slow consumer slows the publisher through TCP). A connection
//! that breaks the protocol, exceeds a bound, is rejected or is silent for
//! longer than its timeout ends alone, with its reason in a `tracing`
//! warning and in its last event, [`Event::Closed`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::{Instant, timeout, timeout_at};

use super::session::{CloseReason, Event, Session, SessionConfig};
use crate::web::per_address::PerAddress;

/// Identifies one accepted connection for the life of a [`serve`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rtmp#{}", self.0)
    }
}

/// A publisher asking to publish, as the [`Authorizer`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// The connection.
    pub connection: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The application (first URL path segment), e.g. "live".
    pub app: String,
    /// The stream key.
    pub key: String,
}

/// Decides publishes: `Ok(())` accepts, `Err(reason)` rejects with that
/// reason (sent to the client in NetStream.Publish.BadName).
pub type Authorizer = Arc<dyn Fn(&PublishRequest) -> Result<(), String> + Send + Sync>;

/// An event of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionEvent {
    /// The connection.
    pub connection: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// What happened.
    pub event: Event,
}

/// The open connections of a [`serve`] call, so its owner can end one
/// (replace a host's session by its reconnect, kick a host, refuse audio it
/// cannot decode). Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    closers: Arc<Mutex<HashMap<ConnectionId, oneshot::Sender<String>>>>,
}

impl Connections {
    /// Ends connection `id` with `reason` (logged and sent to the peer as
    /// the close reason). Returns false when it is not open.
    pub fn close(&self, id: ConnectionId, reason: impl Into<String>) -> bool {
        let closer = self
            .closers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        closer.is_some_and(|c| c.send(reason.into()).is_ok())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.closers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(&self, id: ConnectionId) -> Registration {
        let (tx, rx) = oneshot::channel();
        self.closers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        Registration {
            connections: self.clone(),
            id,
            close: Some(rx),
        }
    }
}

/// A connection's entry in [`Connections`], removed when the connection
/// ends.
struct Registration {
    connections: Connections,
    id: ConnectionId,
    close: Option<oneshot::Receiver<String>>,
}

impl Registration {
    /// Waits for a close request; never returns when none can come.
    async fn closed(&mut self) -> String {
        match &mut self.close {
            Some(rx) => match rx.await {
                Ok(reason) => reason,
                Err(_) => {
                    self.close = None;
                    std::future::pending().await
                }
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections
            .closers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Bounds and timeouts of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once (a host needs one,
    /// two while a reconnect replaces the old).
    pub max_per_address: usize,
    /// How long a connection may be silent (and how long one write may
    /// take) before it is closed.
    pub read_timeout: Duration,
    /// How long a connection may take from accept to its publish request.
    pub setup_timeout: Duration,
    /// Session settings; the handshake seed is varied per connection.
    pub session: SessionConfig,
    /// The table through which the owner closes connections.
    pub connections: Connections,
}

impl Default for ServerConfig {
    /// 32 connections, 4 per address, 10 s silence, 10 s to reach
    /// `publish`.
    fn default() -> Self {
        Self {
            max_connections: 32,
            max_per_address: 4,
            read_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
            session: SessionConfig::default(),
            connections: Connections::default(),
        }
    }
}

/// Where RTMP connections come from: a TCP listener, with TLS for RTMPS.
pub struct Listener {
    /// The socket.
    pub tcp: TcpListener,
    /// Present for RTMPS: each connection's TLS handshake comes first, within
    /// the setup timeout; a client speaking plain RTMP fails it and is
    /// closed.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl From<TcpListener> for Listener {
    fn from(tcp: TcpListener) -> Self {
        Listener { tcp, tls: None }
    }
}

/// Accepts RTMP connections on `listener` until it fails; see the module
/// docs. Stop it by aborting its task.
pub async fn serve(
    listener: impl Into<Listener>,
    config: ServerConfig,
    authorize: Authorizer,
    events: mpsc::Sender<ConnectionEvent>,
) -> std::io::Result<()> {
    serve_all(vec![listener.into()], config, authorize, events).await
}

/// Accepts RTMP connections on every listener (RTMP and RTMPS, say) until
/// one fails, with one connection limit and one numbering for all.
pub async fn serve_all(
    listeners: Vec<Listener>,
    config: ServerConfig,
    authorize: Authorizer,
    events: mpsc::Sender<ConnectionEvent>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let next_id = Arc::new(AtomicU64::new(1));
    let per_address = PerAddress::new(config.max_per_address);
    let loops = listeners.into_iter().map(|listener| {
        accept_loop(
            listener,
            config.clone(),
            permits.clone(),
            per_address.clone(),
            next_id.clone(),
            authorize.clone(),
            events.clone(),
        )
    });
    futures::future::try_join_all(loops).await.map(|_| ())
}

async fn accept_loop(
    listener: Listener,
    config: Arc<ServerConfig>,
    permits: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    next_id: Arc<AtomicU64>,
    authorize: Authorizer,
    events: mpsc::Sender<ConnectionEvent>,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.tcp.accept().await {
            Ok(accepted) => accepted,
            // Per-connection failures (reset before accept, out of file
            // descriptors): back off briefly and go on.
            Err(error) if is_transient(&error) => {
                tracing::warn!(%error, "RTMP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        let id = ConnectionId(next_id.fetch_add(1, Ordering::Relaxed));
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(
                connection = %id,
                %peer,
                limit = config.max_connections,
                "RTMP connection refused: connection limit reached"
            );
            continue;
        };
        let Some(slot) = per_address.acquire(peer.ip()) else {
            tracing::warn!(
                connection = %id,
                %peer,
                limit = config.max_per_address,
                "RTMP connection refused: this address holds its limit of connections"
            );
            continue;
        };
        // Audio frames are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            id,
            peer,
            config: config.clone(),
            authorize: authorize.clone(),
            events: events.clone(),
        };
        let tls = listener.tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.run(stream).await,
                Some(tls) => {
                    match timeout(connection.config.setup_timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => connection.run(stream).await,
                        Ok(Err(error)) => tracing::warn!(
                            connection = %id,
                            %peer,
                            %error,
                            "RTMPS connection closed: TLS handshake failed"
                        ),
                        Err(_) => tracing::warn!(
                            connection = %id,
                            %peer,
                            "RTMPS connection closed: no TLS handshake within the setup timeout"
                        ),
                    }
                }
            }
            drop((permit, slot));
        });
    }
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || error
        .raw_os_error()
        .is_some_and(|code| code == 23 || code == 24) // ENFILE, EMFILE
}

struct Connection {
    id: ConnectionId,
    peer: SocketAddr,
    config: Arc<ServerConfig>,
    authorize: Authorizer,
    events: mpsc::Sender<ConnectionEvent>,
}

impl Connection {
    async fn run<S>(self, mut stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut session_config = self.config.session.clone();
        session_config.handshake_seed ^= self.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut session = Session::new(session_config);
        let setup_deadline = Instant::now() + self.config.setup_timeout;
        let mut registration = self.config.connections.register(self.id);
        let mut buffer = vec![0; 64 * 1024];
        while !session.is_closed() {
            let mut deadline = Instant::now() + self.config.read_timeout;
            if !session.is_publishing() {
                deadline = deadline.min(setup_deadline);
            }
            tokio::select! {
                read = timeout_at(deadline, stream.read(&mut buffer)) => match read {
                    Err(_) => session.close(CloseReason::TimedOut),
                    Ok(Err(error)) => {
                        session.close(CloseReason::Io(format!("read failed: {error}")));
                    }
                    Ok(Ok(0)) => session.peer_closed(),
                    Ok(Ok(n)) => {
                        // An error closes the session and is reported by its
                        // Closed event below.
                        let _ = session.feed(&buffer[..n]);
                    }
                },
                reason = registration.closed() => session.close(CloseReason::Closed(reason)),
            }
            if !self.drain(&mut session).await {
                session.close(CloseReason::Io("event receiver is gone".into()));
            }
            let output = session.take_output();
            if !output.is_empty() {
                match timeout(self.config.read_timeout, stream.write_all(&output)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        session.close(CloseReason::Io(format!("write failed: {error}")));
                    }
                    Err(_) => session.close(CloseReason::TimedOut),
                }
            }
        }
        // Events queued by a close after the last drain.
        self.drain(&mut session).await;
        let _ = stream.shutdown().await;
    }

    /// Forwards the session's events, answering publish requests on the way.
    /// Returns false when the receiver is gone.
    async fn drain(&self, session: &mut Session) -> bool {
        while let Some(event) = session.poll_event() {
            match &event {
                Event::PublishRequested { app, key } => {
                    let request = PublishRequest {
                        connection: self.id,
                        peer: self.peer,
                        app: app.clone(),
                        key: key.clone(),
                    };
                    // Forward the request first so the consumer sees it
                    // before the audio that follows an accept.
                    if !self.forward(event.clone()).await {
                        return false;
                    }
                    match (self.authorize)(&request) {
                        Ok(()) => {
                            // The key is a secret: never logged.
                            tracing::info!(connection = %self.id, peer = %self.peer, app, "RTMP publish accepted");
                            let _ = session.accept();
                        }
                        Err(reason) => session.reject(&reason),
                    }
                    continue;
                }
                Event::Closed(reason) => self.log_close(reason, session),
                _ => {}
            }
            if !self.forward(event).await {
                return false;
            }
        }
        true
    }

    async fn forward(&self, event: Event) -> bool {
        let event = ConnectionEvent {
            connection: self.id,
            peer: self.peer,
            event,
        };
        self.events.send(event).await.is_ok()
    }

    fn log_close(&self, reason: &CloseReason, session: &Session) {
        let stats = session.stats();
        let (id, peer) = (self.id, self.peer);
        match reason {
            CloseReason::PeerClosed => tracing::info!(
                connection = %id, %peer, bytes = stats.bytes_received,
                audio_messages = stats.audio_messages,
                video_dropped = stats.video_messages_dropped,
                "RTMP connection closed by the peer"
            ),
            CloseReason::Rejected(reason) => {
                tracing::warn!(connection = %id, %peer, reason, "RTMP publish rejected")
            }
            CloseReason::Error(error) => {
                tracing::warn!(connection = %id, %peer, %error, "RTMP connection ended")
            }
            CloseReason::TimedOut => {
                tracing::warn!(connection = %id, %peer, "RTMP connection timed out")
            }
            CloseReason::Io(error) => {
                tracing::warn!(connection = %id, %peer, error, "RTMP connection failed")
            }
            CloseReason::Closed(reason) => {
                tracing::info!(connection = %id, %peer, reason, "RTMP connection closed by the server")
            }
        }
    }
}
