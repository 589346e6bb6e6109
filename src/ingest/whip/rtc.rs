//! WebRTC media endpoint for WHIP publishers: many receive-only sessions on one
//! UDP socket.
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
//! - [`RtcEndpoint`] / [`RtcHandle`] (here): a tokio task that owns the socket
//!   and one timer, feeds `Sessions`, and talks to the rest of the process
//!   over bounded channels. It makes no decision of its own beyond what to do
//!   with socket errors and a full event channel.
//!
//! # Contract
//!
//! - **ICE-lite** (RFC 8445 §2.5): the endpoint never gathers candidates and
//!   never sends connectivity checks. Every answer carries exactly one host
//!   candidate, [`RtcConfig::public`] (default: the bound address), and the
//!   publisher, a full ICE agent, checks and nominates.
//! - **One socket**: a datagram belongs to the session whose `Rtc` accepts it
//!   (STUN by ICE username fragment, DTLS/SRTP by the nominated peer
//!   address). A datagram that no session accepts, or that is neither STUN,
//!   DTLS nor RTP/RTCP (RFC 7983 §7), is dropped and counted in
//!   [`RtcStats::unclaimed_datagrams`]; it never reaches a session.
//! - **Receive only**: the offer must carry an audio m-line the publisher sends
//!   on with Opus (RFC 7587); the answer is `recvonly` for it and rejects any
//!   other m-line. Opus is negotiated without RED so every RTP payload is one
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

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info};

pub use super::sessions::{AcceptError, Accepted, RtcEvent, RtcStats};
use super::sessions::{Limits, Out, Sessions};

/// Largest UDP payload read from the socket. WebRTC keeps datagrams near the
/// path MTU (str0m's target is 1150 bytes); anything larger than this is not
/// WebRTC and is truncated by the kernel, then rejected by the parsers.
const MAX_DATAGRAM: usize = 2048;

/// Capacity of the command channel from [`RtcHandle`] to the driver task.
const COMMAND_QUEUE: usize = 64;

/// Settings of an [`RtcEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcConfig {
    /// Address the UDP socket binds to, e.g. `0.0.0.0:8189`.
    pub udp: SocketAddr,
    /// Address advertised as the single host candidate when it differs from
    /// the bound one (a public address in front of NAT 1:1, or a concrete IP
    /// when binding to the wildcard address). `None` advertises the bound
    /// address, which then must not be a wildcard.
    pub public: Option<SocketAddr>,
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

impl RtcConfig {
    /// A configuration binding `udp`, with the documented defaults: the bound
    /// address advertised, 64 sessions, 30 s ICE timeout (RFC 7675 §5.1),
    /// 10 s media timeout, 1024 queued events (about 20 s of one publisher's
    /// 20 ms packets).
    pub fn new(udp: SocketAddr) -> Self {
        Self {
            udp,
            public: None,
            max_sessions: 64,
            ice_timeout: Duration::from_secs(30),
            media_timeout: Duration::from_secs(10),
            event_queue: 1024,
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
    local_addr: SocketAddr,
    candidate: SocketAddr,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<io::Result<()>>,
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
        reply: oneshot::Sender<Result<Accepted, AcceptError>>,
    },
    Close {
        session: u64,
        reason: String,
    },
    Stats {
        reply: oneshot::Sender<RtcStats>,
    },
    Shutdown,
}

impl RtcEndpoint {
    /// Binds the UDP socket and starts the driver task on the current tokio
    /// runtime.
    ///
    /// Fails with `InvalidInput` when the advertised address
    /// ([`RtcConfig::public`], else the bound one) is a wildcard or port 0
    /// cannot be resolved, since a peer could not reach it.
    pub async fn bind(config: RtcConfig) -> io::Result<(RtcEndpoint, RtcHandle)> {
        let socket = UdpSocket::bind(config.udp).await?;
        let local_addr = socket.local_addr()?;
        let candidate = config.public.unwrap_or(local_addr);
        if candidate.ip().is_unspecified() || candidate.port() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "WebRTC host candidate {candidate} is not reachable: \
                     set a concrete public address"
                ),
            ));
        }
        let (events_tx, events) = mpsc::channel(config.event_queue.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let sessions = Sessions::new(candidate, config.limits());
        info!(%local_addr, %candidate, "WebRTC endpoint listening (ICE-lite)");
        let task = tokio::spawn(drive(socket, sessions, commands_rx, events_tx));
        let endpoint = RtcEndpoint {
            events,
            local_addr,
            candidate,
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

    /// Address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Address advertised as the host candidate in every answer.
    pub fn candidate_addr(&self) -> SocketAddr {
        self.candidate
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
    /// Negotiates `offer_sdp` into a new receive-only session and returns its
    /// id and SDP answer. Media events for it follow on [`RtcEndpoint::recv`].
    pub async fn accept(&self, offer_sdp: String) -> Result<Accepted, AcceptError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Accept { offer_sdp, reply })
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

    /// Current counters, or `None` if the endpoint has stopped.
    pub async fn stats(&self) -> Option<RtcStats> {
        let (reply, stats) = oneshot::channel();
        self.commands.send(Command::Stats { reply }).await.ok()?;
        stats.await.ok()
    }
}

/// The driver task: one socket, one timer, the command channel.
async fn drive(
    socket: UdpSocket,
    mut sessions: Sessions,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<RtcEvent>,
) -> io::Result<()> {
    let mut buf = vec![0_u8; MAX_DATAGRAM];
    let result = loop {
        flush(&socket, &mut sessions, &events).await;
        let deadline = sessions.next_deadline();
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Accept { offer_sdp, reply }) => {
                    let result = sessions.accept(Instant::now(), &offer_sdp);
                    if let (Err(_), Ok(accepted)) = (reply.send(result.clone()), result) {
                        // The HTTP request went away: nobody can use the answer.
                        sessions.close(Instant::now(), accepted.session, "offer abandoned");
                    }
                }
                Some(Command::Close { session, reason }) => {
                    sessions.close(Instant::now(), session, &reason);
                }
                Some(Command::Stats { reply }) => {
                    // The asker may have given up; nothing to do then.
                    let _ = reply.send(sessions.stats());
                }
                Some(Command::Shutdown) | None => break Ok(()),
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, source)) => {
                    let data = buf.get(..len).unwrap_or_default();
                    sessions.receive(Instant::now(), source, data);
                }
                // ICMP errors surface here on some platforms; they concern
                // one peer, not the socket.
                Err(e) if is_transient(&e) => debug!(error = %e, "UDP receive error ignored"),
                Err(e) => break Err(e),
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                sessions.timeout(Instant::now());
            }
            // The RtcEndpoint was dropped: nobody consumes the media.
            () = events.closed() => break Ok(()),
        }
    };
    let reason = match &result {
        Ok(()) => "endpoint shut down".to_owned(),
        Err(e) => format!("endpoint socket failed: {e}"),
    };
    sessions.close_all(Instant::now(), &reason);
    // The close_notify datagrams and Closed events.
    flush(&socket, &mut sessions, &events).await;
    result
}

/// Sends queued datagrams and delivers queued events.
async fn flush(socket: &UdpSocket, sessions: &mut Sessions, events: &mpsc::Sender<RtcEvent>) {
    while let Some(out) = sessions.poll_output() {
        match out {
            Out::Transmit(t) => {
                // A failed send concerns one destination (unreachable,
                // filtered); the session's own timers end it if it persists.
                if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                    debug!(error = %e, to = %t.destination, "UDP send failed");
                }
            }
            Out::Event(event @ RtcEvent::Opus { .. }) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
                    sessions.count_undelivered_packet();
                }
            }
            Out::Event(event) => {
                // Lifecycle events are never dropped; if the receiver is gone
                // the owner has stopped listening and nothing is lost.
                let _ = events.send(event).await;
            }
        }
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
