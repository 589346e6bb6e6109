//! WebRTC media endpoint for WHIP publishers: many receive-only sessions on one
//! UDP socket and one ICE-TCP port.
//!
//! WHIP (RFC 9725) carries the SDP offer/answer over HTTP; this module is the
//! media side that the HTTP layer hands each offer to. It uses `str0m`, a
//! sans-IO WebRTC implementation, and is split in two:
//!
//! - `Sessions` (`whip/sessions.rs`, synchronous, no IO): every
//!   [`str0m::Rtc`], the demultiplexing of datagrams to sessions, the liveness
//!   timers and the queue of datagrams and events to emit. Time enters only
//!   as an `Instant` argument, so its unit tests run without sockets or
//!   sleeping.
//! - [`RtcEndpoint`] / [`RtcHandle`] (here): a tokio task that owns the socket,
//!   the ICE-TCP connections (`whip/ice_tcp.rs`) and one timer, feeds
//!   `Sessions`, and talks to the rest of the process over bounded channels.
//!   It makes no decision of its own beyond what to do with socket errors, a
//!   full event channel and TCP connections no session claims.
//!
//! # Contract
//!
//! - **ICE-lite** (RFC 8445 §2.5): the endpoint never gathers candidates and
//!   never sends connectivity checks. Every answer carries the same host
//!   candidates: a UDP one ([`RtcConfig::public`], default: the bound
//!   address) and, when [`RtcConfig::tcp`] is set, a passive ICE-TCP one
//!   (RFC 6544, [`RtcConfig::tcp_public`]) for publishers whose network
//!   blocks UDP. The publisher, a full ICE agent, checks and nominates.
//! - **One socket, one port**: a datagram, or an RFC 4571 frame of an ICE-TCP
//!   connection, belongs to the session whose `Rtc` accepts it (STUN by ICE
//!   username fragment, DTLS/SRTP by the nominated peer address). One that no
//!   session accepts, or that is neither STUN, DTLS nor RTP/RTCP (RFC 7983
//!   §7), is dropped and counted in [`RtcStats::unclaimed_datagrams`]; it
//!   never reaches a session. A TCP connection whose first frame no session
//!   claims is closed, as is every connection of a session that ends.
//! - **Receive, and a return when asked**: the offer must carry an audio
//!   m-line the publisher sends on with Opus (RFC 7587); the answer is
//!   `recvonly` for a `sendonly` offer and `sendrecv` for a `sendrecv` one,
//!   whose publisher can then be sent a return feed on the same m-line
//!   ([`RtcHandle::send_opus`]); any other m-line is rejected. Opus is negotiated without RED so every RTP payload is one
//!   Opus packet.
//! - **Raw RTP out**: `str0m` runs in RTP mode, so no depacketizer or reorder
//!   buffer sits between the wire and [`RtcEvent::Opus`]: every decrypted Opus
//!   packet is delivered once, in arrival order, with its RTP sequence number
//!   and timestamp (RFC 3550 §5.1) for the jitter buffer downstream. Packets
//!   from a second SSRC of the same session are dropped and counted (a
//!   publisher has one audio source).
//! - **Lifetime**: a session ends on (a) its ICE agent reporting
//!   disconnection after it was connected, (b) no STUN request from the peer
//!   for [`RtcConfig::ice_timeout`] (RFC 7675 §5.1 consent freshness, as seen
//!   from the answering side), (c) no RTP for [`RtcConfig::media_timeout`]
//!   after it connected, (d) the peer closing DTLS, (e) [`RtcHandle::close`],
//!   or (f) the endpoint shutting down. Each accepted session produces exactly
//!   one [`RtcEvent::Closed`], after at most one [`RtcEvent::Connected`].
//! - **Back-pressure**: events go out on a bounded channel. Opus packets are
//!   dropped (and counted in [`RtcStats::dropped_packets`]) when it is full,
//!   so one slow consumer cannot stall the socket every session shares;
//!   `Connected` and `Closed` are never dropped.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::ice_tcp::{self, TcpEvent, TcpLimits, Writer};
pub use super::sdp::Purpose;
pub use super::sessions::{AcceptError, Accepted, RtcEvent, RtcStats};
use super::sessions::{Candidates, Limits, Out, Sessions};

/// Largest UDP payload read from the socket. WebRTC keeps datagrams near the
/// path MTU (str0m's target is 1150 bytes); anything larger than this is not
/// WebRTC and is truncated by the kernel, then rejected by the parsers.
const MAX_DATAGRAM: usize = 2048;

/// Capacity of the command channel from [`RtcHandle`] to the driver task.
const COMMAND_QUEUE: usize = 64;

/// A TCP connection must bring its first RFC 4571 frame within this long.
const TCP_FIRST_FRAME_WITHIN: Duration = Duration::from_secs(10);

/// Settings of an [`RtcEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcConfig {
    /// Address the UDP socket binds to, e.g. `0.0.0.0:8189`; `None` offers
    /// ICE-TCP only (then [`RtcConfig::tcp`] must be set).
    pub udp: Option<SocketAddr>,
    /// Address advertised as the UDP host candidate when it differs from
    /// the bound one (a public address in front of NAT 1:1, or a concrete IP
    /// when binding to the wildcard address). `None` advertises the bound
    /// address, which then must not be a wildcard.
    pub public: Option<SocketAddr>,
    /// Address the ICE-TCP listener binds to (RFC 6544 passive candidate),
    /// e.g. `0.0.0.0:8189`: publishers whose network blocks UDP connect
    /// here. `None` offers UDP only.
    pub tcp: Option<SocketAddr>,
    /// Address advertised as the TCP candidate when it differs from the
    /// bound one, as [`RtcConfig::public`] is for UDP.
    pub tcp_public: Option<SocketAddr>,
    /// Most sessions alive at once; [`RtcHandle::accept`] refuses more with
    /// [`AcceptError::TooManySessions`].
    pub max_sessions: usize,
    /// A session with no STUN request from its peer for this long ends
    /// (RFC 7675 §5.1 consent freshness; also bounds how long an accepted
    /// session may take to start ICE). It must exceed the interval of the
    /// peers' consent checks (4 to 6 s, randomised, RFC 7675 §5.1) or live
    /// sessions end. Independently of this bound, str0m's
    /// ICE-lite agent declares a connected session disconnected after 15 s
    /// without binding requests, so values above 15 s only matter before
    /// the session connects.
    pub ice_timeout: Duration,
    /// A connected session that receives no RTP for this long ends.
    pub media_timeout: Duration,
    /// Capacity of the event channel returned by [`RtcEndpoint::recv`].
    pub event_queue: usize,
}

impl Default for RtcConfig {
    /// No transport yet (set [`RtcConfig::udp`], [`RtcConfig::tcp`] or
    /// both), with the documented defaults: 64 sessions, 30 s ICE timeout
    /// (RFC 7675 §5.1), 10 s media timeout, 1024 queued events (about 20 s
    /// of one publisher's 20 ms packets).
    fn default() -> Self {
        Self {
            udp: None,
            public: None,
            tcp: None,
            tcp_public: None,
            max_sessions: 64,
            ice_timeout: Duration::from_secs(30),
            media_timeout: Duration::from_secs(10),
            event_queue: 1024,
        }
    }
}

impl RtcConfig {
    /// A configuration binding `udp`, advertising the bound address, with
    /// the defaults of [`RtcConfig::default`].
    pub fn new(udp: SocketAddr) -> Self {
        Self {
            udp: Some(udp),
            ..Self::default()
        }
    }

    /// As [`RtcConfig::new`], offering only a passive ICE-TCP candidate on
    /// `tcp`.
    pub fn tcp_only(tcp: SocketAddr) -> Self {
        Self {
            tcp: Some(tcp),
            ..Self::default()
        }
    }

    /// The part of the configuration that [`Sessions`] enforces.
    fn limits(&self) -> Limits {
        Limits {
            max_sessions: self.max_sessions,
            ice_timeout: self.ice_timeout,
            media_timeout: self.media_timeout,
        }
    }
}

/// Owner side of a running endpoint: receives its events and stops it.
/// Dropping it stops the endpoint as [`RtcEndpoint::shutdown`] does.
#[derive(Debug)]
pub struct RtcEndpoint {
    events: mpsc::Receiver<RtcEvent>,
    bound: Transports,
    candidates: Transports,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<io::Result<()>>,
}

/// A UDP and a TCP address of an endpoint; at least one is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transports {
    /// The UDP address, if the endpoint offers UDP.
    pub udp: Option<SocketAddr>,
    /// The ICE-TCP address, if the endpoint offers ICE-TCP.
    pub tcp: Option<SocketAddr>,
}

impl std::fmt::Display for Transports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.udp, self.tcp) {
            (Some(udp), Some(tcp)) => write!(f, "udp {udp}, tcp {tcp}"),
            (Some(udp), None) => write!(f, "udp {udp}"),
            (None, Some(tcp)) => write!(f, "tcp {tcp}"),
            (None, None) => write!(f, "none"),
        }
    }
}

/// Cloneable command side of an endpoint, for the WHIP HTTP handlers.
#[derive(Debug, Clone)]
pub struct RtcHandle {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug)]
enum Command {
    Accept {
        offer_sdp: String,
        purpose: Purpose,
        reply: oneshot::Sender<Result<Accepted, AcceptError>>,
    },
    Close {
        session: u64,
        reason: String,
    },
    SendOpus {
        session: u64,
        rtp_ts: u32,
        payload: bytes::Bytes,
    },
    Stats {
        reply: oneshot::Sender<RtcStats>,
    },
    Shutdown,
}

impl RtcEndpoint {
    /// Binds the UDP socket and the ICE-TCP listener and starts the driver
    /// task on the current tokio runtime.
    ///
    /// Fails with `InvalidInput` when neither transport is configured, or an
    /// advertised address ([`RtcConfig::public`], [`RtcConfig::tcp_public`],
    /// else the bound one) is a wildcard or port 0, since a peer could not
    /// reach it.
    pub async fn bind(config: RtcConfig) -> io::Result<(RtcEndpoint, RtcHandle)> {
        if config.udp.is_none() && config.tcp.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a WebRTC endpoint needs a UDP address, a TCP address or both",
            ));
        }
        let socket = match config.udp {
            Some(addr) => Some(UdpSocket::bind(addr).await?),
            None => None,
        };
        let listener = match config.tcp {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let bound = Transports {
            udp: socket.as_ref().map(UdpSocket::local_addr).transpose()?,
            tcp: listener.as_ref().map(TcpListener::local_addr).transpose()?,
        };
        let candidates = Transports {
            udp: bound.udp.map(|b| config.public.unwrap_or(b)),
            tcp: bound.tcp.map(|b| config.tcp_public.unwrap_or(b)),
        };
        for candidate in [candidates.udp, candidates.tcp].into_iter().flatten() {
            if candidate.ip().is_unspecified() || candidate.port() == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "WebRTC host candidate {candidate} is not reachable: \
                         set a concrete public address"
                    ),
                ));
            }
        }
        let (events_tx, events) = mpsc::channel(config.event_queue.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let sessions = Sessions::new(
            Candidates {
                udp: candidates.udp,
                tcp: candidates.tcp,
            },
            config.limits(),
        );
        let (tcp_tx, tcp_rx) = mpsc::channel(COMMAND_QUEUE);
        if let Some(listener) = listener {
            let limits = TcpLimits {
                // A publisher's agent may try a pair per local interface;
                // unclaimed connections close at their first frame.
                max_connections: config.max_sessions.saturating_mul(2).max(1),
                first_frame_within: TCP_FIRST_FRAME_WITHIN,
            };
            tokio::spawn(ice_tcp::listen(listener, limits, tcp_tx));
        }
        info!(
            udp = ?bound.udp,
            tcp = ?bound.tcp,
            udp_candidate = ?candidates.udp,
            tcp_candidate = ?candidates.tcp,
            "WebRTC endpoint listening (ICE-lite)"
        );
        let driver = Driver {
            socket,
            sessions,
            tcp: tcp_rx,
            connections: HashMap::new(),
        };
        let task = tokio::spawn(driver.run(commands_rx, events_tx));
        let endpoint = RtcEndpoint {
            events,
            bound,
            candidates,
            commands: commands_tx.clone(),
            task,
        };
        Ok((
            endpoint,
            RtcHandle {
                commands: commands_tx,
            },
        ))
    }

    /// Addresses the UDP socket and the ICE-TCP listener are bound to.
    pub fn bound(&self) -> Transports {
        self.bound
    }

    /// Addresses advertised as host candidates in every answer.
    pub fn candidates(&self) -> Transports {
        self.candidates
    }

    /// Next event; `None` once the endpoint has stopped and every event was
    /// received.
    pub async fn recv(&mut self) -> Option<RtcEvent> {
        self.events.recv().await
    }

    /// Closes every session (each ends with [`RtcEvent::Closed`], which is
    /// discarded here) and waits for the driver task. Returns the socket
    /// error that stopped the task early, if one did.
    pub async fn shutdown(mut self) -> io::Result<()> {
        // Failure means the task already stopped; its result says why.
        let _ = self.commands.send(Command::Shutdown).await;
        // Keep draining so the task never waits on a full event channel.
        while self.events.recv().await.is_some() {}
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(io::Error::other(format!(
                "WebRTC endpoint task failed: {join}"
            ))),
        }
    }
}

impl RtcHandle {
    /// Negotiates `offer_sdp` into a new session of a publisher and returns
    /// its id and SDP answer. Media events for it follow on
    /// [`RtcEndpoint::recv`].
    pub async fn accept(&self, offer_sdp: String) -> Result<Accepted, AcceptError> {
        self.accept_for(offer_sdp, Purpose::Publish).await
    }

    /// [`accept`](Self::accept) for `purpose`: a [`Purpose::Return`]
    /// session receives nothing and is only sent a return feed
    /// ([`send_opus`](Self::send_opus)); it lives as long as ICE consent.
    pub async fn accept_for(
        &self,
        offer_sdp: String,
        purpose: Purpose,
    ) -> Result<Accepted, AcceptError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Accept {
                offer_sdp,
                purpose,
                reply,
            })
            .await
            .map_err(|_| AcceptError::EndpointStopped)?;
        answer.await.map_err(|_| AcceptError::EndpointStopped)?
    }

    /// Ends `session` (DTLS close_notify to the peer, then
    /// [`RtcEvent::Closed`] with `reason`). Unknown or already closed
    /// sessions are ignored, as are calls after the endpoint stopped.
    pub async fn close(&self, session: u64, reason: impl Into<String>) {
        let reason = reason.into();
        // A stopped endpoint has no sessions left to close.
        let _ = self.commands.send(Command::Close { session, reason }).await;
    }

    /// Queues one Opus packet of `session`'s return feed (RFC 7587, RTP time
    /// `rtp_ts` at 48 kHz), sent if the session takes one (its publisher
    /// offered `sendrecv`; see the module docs). Never waits: returns false
    /// when the command queue is full or the endpoint has stopped, and the
    /// packet is lost as on a congested network.
    pub fn send_opus(&self, session: u64, rtp_ts: u32, payload: bytes::Bytes) -> bool {
        let command = Command::SendOpus {
            session,
            rtp_ts,
            payload,
        };
        self.commands.try_send(command).is_ok()
    }

    /// Current counters, or `None` if the endpoint has stopped.
    pub async fn stats(&self) -> Option<RtcStats> {
        let (reply, stats) = oneshot::channel();
        self.commands.send(Command::Stats { reply }).await.ok()?;
        stats.await.ok()
    }
}

/// An ICE-TCP connection as the driver knows it.
struct Connection {
    conn: u64,
    writer: Writer,
    /// The session that claimed its first frame.
    session: Option<u64>,
}

/// The driver task's state: the socket, the ICE-TCP connections by peer
/// address, and the sessions.
struct Driver {
    socket: Option<UdpSocket>,
    sessions: Sessions,
    tcp: mpsc::Receiver<TcpEvent>,
    connections: HashMap<SocketAddr, Connection>,
}

impl Driver {
    /// One socket, one listener, one timer, the command channel.
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<RtcEvent>,
    ) -> io::Result<()> {
        let mut buf = vec![0_u8; MAX_DATAGRAM];
        let result = loop {
            self.flush(&events).await;
            let deadline = self.sessions.next_deadline();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Accept { offer_sdp, purpose, reply }) => {
                        let result = self.sessions.accept_for(Instant::now(), &offer_sdp, purpose);
                        if let (Err(_), Ok(accepted)) = (reply.send(result.clone()), result) {
                            // The HTTP request went away: nobody can use the answer.
                            self.sessions.close(Instant::now(), accepted.session, "offer abandoned");
                        }
                    }
                    Some(Command::Close { session, reason }) => {
                        self.sessions.close(Instant::now(), session, &reason);
                    }
                    Some(Command::SendOpus { session, rtp_ts, payload }) => {
                        // A session that takes no return ignores it.
                        self.sessions.send_opus(Instant::now(), session, rtp_ts, &payload);
                    }
                    Some(Command::Stats { reply }) => {
                        // The asker may have given up; nothing to do then.
                        let _ = reply.send(self.sessions.stats());
                    }
                    Some(Command::Shutdown) | None => break Ok(()),
                },
                received = recv_from(self.socket.as_ref(), &mut buf) => match received {
                    Ok((len, source)) => {
                        let data = buf.get(..len).unwrap_or_default();
                        self.sessions.receive(Instant::now(), Protocol::Udp, source, data);
                    }
                    // ICMP errors surface here on some platforms; they concern
                    // one peer, not the socket.
                    Err(e) if is_transient(&e) => debug!(error = %e, "UDP receive error ignored"),
                    Err(e) => break Err(e),
                },
                Some(event) = self.tcp.recv() => self.on_tcp(event),
                () = sleep_until(deadline), if deadline.is_some() => {
                    self.sessions.timeout(Instant::now());
                }
                // The RtcEndpoint was dropped: nobody consumes the media.
                () = events.closed() => break Ok(()),
            }
        };
        let reason = match &result {
            Ok(()) => "endpoint shut down".to_owned(),
            Err(e) => format!("endpoint socket failed: {e}"),
        };
        self.sessions.close_all(Instant::now(), &reason);
        // The close_notify datagrams and Closed events.
        self.flush(&events).await;
        result
    }

    fn on_tcp(&mut self, event: TcpEvent) {
        match event {
            TcpEvent::Opened { conn, peer, writer } => {
                let connection = Connection {
                    conn,
                    writer,
                    session: None,
                };
                self.connections.insert(peer, connection);
            }
            TcpEvent::Frame { conn, peer, data } => {
                let Some(connection) = self.connections.get_mut(&peer) else {
                    return;
                };
                if connection.conn != conn {
                    return;
                }
                let claimed = self
                    .sessions
                    .receive(Instant::now(), Protocol::Tcp, peer, &data);
                match (claimed, connection.session) {
                    (Some(session), None) => connection.session = Some(session),
                    // RFC 6544 §7.1: the first frame of a connection is the
                    // peer's binding request; one no session knows means the
                    // connection serves no session.
                    (None, None) => {
                        debug!(%peer, "ICE-TCP connection closed: no session claims it");
                        self.connections.remove(&peer);
                    }
                    _ => {}
                }
            }
            TcpEvent::Closed { conn, peer } => {
                if self.connections.get(&peer).is_some_and(|c| c.conn == conn) {
                    self.connections.remove(&peer);
                }
            }
        }
    }

    /// Sends queued datagrams and frames and delivers queued events.
    async fn flush(&mut self, events: &mpsc::Sender<RtcEvent>) {
        while let Some(out) = self.sessions.poll_output() {
            match out {
                Out::Transmit(t) if t.proto == Protocol::Tcp => {
                    // A full or closed connection loses the packet as a
                    // datagram would be lost; the session's timers cover it.
                    let sent = self
                        .connections
                        .get(&t.destination)
                        .is_some_and(|c| c.writer.send(&t.contents));
                    if !sent {
                        debug!(to = %t.destination, "ICE-TCP frame not sent");
                    }
                }
                Out::Transmit(t) => {
                    // A failed send concerns one destination (unreachable,
                    // filtered); the session's own timers end it if it persists.
                    let Some(socket) = &self.socket else { continue };
                    if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                        debug!(error = %e, to = %t.destination, "UDP send failed");
                    }
                }
                Out::Event(event @ RtcEvent::Opus { .. }) => {
                    if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
                        self.sessions.count_undelivered_packet();
                    }
                }
                Out::Event(event) => {
                    if let RtcEvent::Closed { session, .. } = &event {
                        // The session's connections carry nothing else.
                        self.connections.retain(|_, c| c.session != Some(*session));
                    }
                    // Lifecycle events are never dropped; if the receiver is gone
                    // the owner has stopped listening and nothing is lost.
                    let _ = events.send(event).await;
                }
            }
        }
    }
}

/// Receives from `socket`, or waits forever without one.
async fn recv_from(socket: Option<&UdpSocket>, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Errors that concern one datagram or one peer rather than the socket.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
