//! WebRTC media endpoint for WHIP publishers: many receive-only sessions on one
//! UDP socket.
//!
//! WHIP (RFC 9725) carries the SDP offer/answer over HTTP; this module is the
//! media side that the HTTP layer hands each offer to. It uses `str0m`, a
//! sans-IO WebRTC implementation, and is split in two:
//!
//! - `Sessions` (private, synchronous, no IO): every [`str0m::Rtc`], the
//!   demultiplexing of datagrams to sessions, the liveness timers and the
//!   queue of datagrams and events to emit. Time enters only as an `Instant`
//!   argument, so its unit tests run without sockets or sleeping.
//! - [`RtcEndpoint`] / [`RtcHandle`]: a tokio task that owns the socket and
//!   one timer, feeds `Sessions`, and talks to the rest of the process over
//!   bounded channels.
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

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpPacket, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info};

/// Largest UDP payload read from the socket. WebRTC keeps datagrams near the
/// path MTU (str0m's target is 1150 bytes); anything larger than this is not
/// WebRTC and is truncated by the kernel, then rejected by the parsers.
const MAX_DATAGRAM: usize = 2048;

/// Capacity of the command channel from [`RtcHandle`] to the driver task.
const COMMAND_QUEUE: usize = 64;

/// Upper bound applied to the configured timeouts, so deadline arithmetic on
/// `Instant` cannot overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

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
}

/// What the endpoint reports about its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcEvent {
    /// ICE and DTLS are up: SRTP media can flow. `peer` is the publisher's
    /// address as seen from the socket.
    Connected {
        /// Session id from [`Accepted::session`].
        session: u64,
        /// Source address of the publisher's datagrams.
        peer: SocketAddr,
    },
    /// One decrypted Opus RTP packet (RFC 7587), unmodified and in arrival
    /// order: not reordered, deduplicated or gap-filled.
    Opus {
        /// Session id from [`Accepted::session`].
        session: u64,
        /// RTP sequence number (RFC 3550 §5.1), as on the wire.
        seq: u16,
        /// RTP timestamp at 48 kHz (RFC 7587 §4.1), as on the wire.
        rtp_ts: u32,
        /// The Opus packet (RFC 6716 §3), without RTP header or padding.
        payload: Bytes,
        /// When the datagram was read from the socket.
        arrival: Instant,
    },
    /// The session ended and its resources are freed; no more events follow
    /// for it.
    Closed {
        /// Session id from [`Accepted::session`].
        session: u64,
        /// Why it ended, for logs.
        reason: String,
    },
}

/// A session created by [`RtcHandle::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Id naming the session in [`RtcEvent`]s and [`RtcHandle::close`];
    /// never reused by the endpoint.
    pub session: u64,
    /// SDP answer to return to the publisher (RFC 9725 §4.2: body of the
    /// `201 Created` response).
    pub answer_sdp: String,
}

/// Why an offer was not accepted. Each variant names the WHIP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The endpoint is at [`RtcConfig::max_sessions`]: answer `503 Service
    /// Unavailable` and let the publisher retry later.
    #[error("all {limit} WebRTC sessions are in use")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
    /// The SDP offer could not be parsed or negotiated: answer `400 Bad
    /// Request` with the reason.
    #[error("SDP offer rejected: {reason}")]
    OfferRejected {
        /// What was wrong with the offer.
        reason: String,
    },
    /// The offer negotiates no audio the publisher sends with Opus: answer
    /// `400 Bad Request` (onair ingests Opus audio only).
    #[error("SDP offer has no Opus audio m-line that the publisher sends")]
    NoOpusAudio,
    /// The endpoint task has stopped: answer `503 Service Unavailable`.
    #[error("WebRTC endpoint has stopped")]
    EndpointStopped,
}

/// Counters of an [`RtcEndpoint`], from [`RtcHandle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcStats {
    /// Sessions alive now.
    pub sessions: usize,
    /// Datagrams dropped because no session accepted them or they were not
    /// WebRTC at all (RFC 7983 §7 demultiplexing failed).
    pub unclaimed_datagrams: u64,
    /// Datagrams a session accepted but failed to process (for example a
    /// DTLS record that does not decode).
    pub rejected_datagrams: u64,
    /// RTP packets not delivered: a payload type that is not the negotiated
    /// Opus one, a second SSRC, or a full event channel.
    pub dropped_packets: u64,
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
        let sessions = Sessions::new(&config, candidate);
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
                    sessions.stats.dropped_packets += 1;
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

/// Something [`Sessions`] wants done.
#[derive(Debug)]
enum Out {
    /// Send this datagram from the shared socket.
    Transmit(Transmit),
    /// Deliver this event.
    Event(RtcEvent),
}

/// One publisher's WebRTC session.
struct Session {
    id: u64,
    rtc: Rtc,
    /// Payload types the negotiation mapped to Opus.
    opus_pts: Vec<Pt>,
    /// The SSRC delivered so far; the first Opus packet fixes it.
    ssrc: Option<Ssrc>,
    /// Latest instant `rtc` asked to be woken at.
    rtc_deadline: Instant,
    /// Last STUN message from the peer (initially: when accepted).
    last_stun: Instant,
    /// Set once DTLS is up; last RTP arrival (initially: when connected).
    last_rtp: Option<Instant>,
    /// Source of the latest datagram this session accepted.
    last_source: Option<SocketAddr>,
    /// Set when the session must end, with the reason.
    ending: Option<String>,
}

impl Session {
    fn end(&mut self, reason: impl Into<String>) {
        // The first cause wins; later ones are consequences of it.
        if self.ending.is_none() {
            self.ending = Some(reason.into());
        }
    }

    fn deadline(&self, ice_timeout: Duration, media_timeout: Duration) -> Instant {
        let consent = self.last_stun + ice_timeout;
        let media = self.last_rtp.map(|t| t + media_timeout);
        media
            .map_or(consent, |m| m.min(consent))
            .min(self.rtc_deadline)
    }
}

/// All sessions of an endpoint, as a synchronous state machine: datagrams,
/// timeouts and commands in (each with `now`); datagrams and events out via
/// [`Sessions::poll_output`], next wake-up via [`Sessions::next_deadline`].
struct Sessions {
    candidate: SocketAddr,
    max_sessions: usize,
    ice_timeout: Duration,
    media_timeout: Duration,
    next_id: u64,
    live: Vec<Session>,
    out: VecDeque<Out>,
    stats: RtcStats,
}

impl Sessions {
    fn new(config: &RtcConfig, candidate: SocketAddr) -> Self {
        Self {
            candidate,
            max_sessions: config.max_sessions,
            ice_timeout: config.ice_timeout.min(MAX_TIMEOUT),
            media_timeout: config.media_timeout.min(MAX_TIMEOUT),
            next_id: 1,
            live: Vec::new(),
            out: VecDeque::new(),
            stats: RtcStats::default(),
        }
    }

    fn stats(&self) -> RtcStats {
        RtcStats {
            sessions: self.live.len(),
            ..self.stats
        }
    }

    fn poll_output(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// Earliest instant [`Sessions::timeout`] has work to do; `None` when
    /// there are no sessions.
    fn next_deadline(&self) -> Option<Instant> {
        self.live
            .iter()
            .map(|s| s.deadline(self.ice_timeout, self.media_timeout))
            .min()
    }

    fn accept(&mut self, now: Instant, offer_sdp: &str) -> Result<Accepted, AcceptError> {
        if self.live.len() >= self.max_sessions {
            return Err(AcceptError::TooManySessions {
                limit: self.max_sessions,
            });
        }
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| AcceptError::OfferRejected {
                reason: e.to_string(),
            })?;
        let mut rtc = Rtc::builder()
            // RFC 8445 §2.5: the server answers checks, it never makes them.
            .set_ice_lite(true)
            // Raw RTP for the jitter buffer: sequence numbers and timestamps
            // as sent, no depacketizer reordering or holding packets back.
            .set_rtp_mode(true)
            // Only Opus, without RED (RFC 2198), so each payload is exactly
            // one Opus packet (RFC 7587 §4.2).
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        let candidate =
            Candidate::host(self.candidate, "udp").map_err(|e| AcceptError::OfferRejected {
                reason: format!("host candidate {}: {e}", self.candidate),
            })?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| AcceptError::OfferRejected {
                reason: e.to_string(),
            })?;
        let answer_sdp = answer.to_sdp_string();
        let mut session = Session {
            id: self.next_id,
            rtc,
            opus_pts: Vec::new(),
            ssrc: None,
            rtc_deadline: now,
            last_stun: now,
            last_rtp: None,
            last_source: None,
            ending: None,
        };
        // str0m announces negotiated media (`MediaAdded`) only once SRTP is
        // up, so read the outcome now from the m-lines of the answer.
        for mid in answer_sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
            note_media(&mut session, Mid::from(mid.trim()));
        }
        if session.opus_pts.is_empty() {
            return Err(AcceptError::NoOpusAudio);
        }
        // Kept aside until accepted, so a refused offer leaves nothing behind.
        let mut out = VecDeque::new();
        drain(&mut session, now, &mut out, &mut self.stats);
        if let Some(reason) = session.ending {
            return Err(AcceptError::OfferRejected { reason });
        }
        self.next_id += 1;
        self.out.append(&mut out);
        let accepted = Accepted {
            session: session.id,
            answer_sdp,
        };
        debug!(session = session.id, "WebRTC session accepted");
        self.live.push(session);
        Ok(accepted)
    }

    fn receive(&mut self, now: Instant, source: SocketAddr, data: &[u8]) {
        // The datagram was addressed to the advertised candidate (possibly
        // translated by NAT on the way); ICE matches pairs on that address.
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.candidate, data) else {
            self.stats.unclaimed_datagrams += 1;
            return;
        };
        // RFC 7983 §7: first byte 0..=3 is STUN.
        let is_stun = data.first().is_some_and(|b| *b <= 3);
        let input = Input::Receive(now, receive);
        let Some(session) = self.live.iter_mut().find(|s| s.rtc.accepts(&input)) else {
            self.stats.unclaimed_datagrams += 1;
            return;
        };
        session.last_source = Some(source);
        if is_stun {
            session.last_stun = now;
        }
        if let Err(e) = session.rtc.handle_input(input) {
            // A bad datagram from the peer's address is the datagram's
            // problem, not the session's.
            debug!(session = session.id, error = %e, "datagram rejected");
            self.stats.rejected_datagrams += 1;
        }
        drain(session, now, &mut self.out, &mut self.stats);
        self.reap(now);
    }

    fn timeout(&mut self, now: Instant) {
        for session in &mut self.live {
            if now >= session.rtc_deadline {
                if let Err(e) = session.rtc.handle_input(Input::Timeout(now)) {
                    session.end(format!("WebRTC timer failed: {e}"));
                }
                drain(session, now, &mut self.out, &mut self.stats);
            }
            if now.saturating_duration_since(session.last_stun) >= self.ice_timeout {
                session.end(format!(
                    "no ICE consent: no STUN from the peer for {} ms",
                    self.ice_timeout.as_millis()
                ));
            }
            if let Some(last_rtp) = session.last_rtp
                && now.saturating_duration_since(last_rtp) >= self.media_timeout
            {
                session.end(format!(
                    "no RTP from the peer for {} ms",
                    self.media_timeout.as_millis()
                ));
            }
        }
        self.reap(now);
    }

    fn close(&mut self, now: Instant, session: u64, reason: &str) {
        if let Some(s) = self.live.iter_mut().find(|s| s.id == session) {
            s.end(reason);
            self.reap(now);
        }
    }

    fn close_all(&mut self, now: Instant, reason: &str) {
        for s in &mut self.live {
            s.end(reason);
        }
        self.reap(now);
    }

    /// Removes ended sessions: sends their DTLS close_notify and emits one
    /// `Closed` each.
    fn reap(&mut self, now: Instant) {
        let mut i = 0;
        while let Some(session) = self.live.get_mut(i) {
            if session.ending.is_none() && !session.rtc.is_alive() {
                session.end("WebRTC session stopped");
            }
            let Some(reason) = session.ending.clone() else {
                i += 1;
                continue;
            };
            if session.rtc.is_alive() {
                // RFC 8827 §6.5 / RFC 5246 §7.2.1: tell the peer, so it stops
                // sending instead of timing out.
                if let Err(e) = session.rtc.close() {
                    debug!(session = session.id, error = %e, "DTLS close failed");
                }
                drain(session, now, &mut self.out, &mut self.stats);
            }
            let id = session.id;
            self.live.swap_remove(i);
            info!(session = id, %reason, "WebRTC session closed");
            self.out.push_back(Out::Event(RtcEvent::Closed {
                session: id,
                reason,
            }));
        }
    }
}

/// Drains `session.rtc` until it asks to wait, as str0m requires after every
/// input.
fn drain(session: &mut Session, now: Instant, out: &mut VecDeque<Out>, stats: &mut RtcStats) {
    loop {
        match session.rtc.poll_output() {
            Ok(Output::Timeout(at)) => {
                session.rtc_deadline = at;
                return;
            }
            Ok(Output::Transmit(t)) => out.push_back(Out::Transmit(t)),
            Ok(Output::Event(event)) => on_event(session, event, now, out, stats),
            Err(e) => {
                session.end(format!("WebRTC failed: {e}"));
                session.rtc.disconnect();
                return;
            }
        }
    }
}

fn on_event(
    session: &mut Session,
    event: Event,
    now: Instant,
    out: &mut VecDeque<Out>,
    stats: &mut RtcStats,
) {
    match event {
        Event::Connected => match session.last_source {
            Some(peer) => {
                session.last_rtp = Some(now);
                out.push_back(Out::Event(RtcEvent::Connected {
                    session: session.id,
                    peer,
                }));
            }
            // DTLS completes only on a datagram from the peer, so this cannot
            // happen; if it did, no peer address means no usable session.
            None => session.end("connected without a datagram from the peer"),
        },
        Event::IceConnectionStateChange(IceConnectionState::Disconnected)
            if session.last_rtp.is_some() =>
        {
            // Before DTLS is up, the ICE-lite agent may pass through
            // Disconnected while the offer's candidates are pruned; the
            // consent timer covers that phase.
            session.end("ICE disconnected: the peer stopped its consent checks");
        }
        Event::RtpPacket(packet) => on_rtp(session, packet, out, stats),
        Event::Closed => session.end("peer closed the DTLS association"),
        _ => {}
    }
}

/// Records the Opus payload types of `mid` if it is audio we receive.
fn note_media(session: &mut Session, mid: Mid) {
    let Some(media) = session.rtc.media(mid) else {
        return;
    };
    if media.kind() != MediaKind::Audio || !media.direction().is_receiving() {
        return;
    }
    let config = session.rtc.codec_config();
    for pt in media.remote_pts() {
        let is_opus = config
            .find(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
            .is_some();
        if is_opus && !session.opus_pts.contains(pt) {
            session.opus_pts.push(*pt);
        }
    }
}

fn on_rtp(session: &mut Session, packet: RtpPacket, out: &mut VecDeque<Out>, stats: &mut RtcStats) {
    // Any RTP counts as media activity, even packets not delivered below.
    session.last_rtp = Some(packet.timestamp);
    let header = &packet.header;
    if !session.opus_pts.contains(&header.payload_type) {
        stats.dropped_packets += 1;
        return;
    }
    match session.ssrc {
        None => session.ssrc = Some(header.ssrc),
        Some(ssrc) if ssrc == header.ssrc => {}
        Some(ssrc) => {
            // RFC 3550 §8: a new SSRC is a new source with its own sequence
            // and timestamp spaces, which one jitter buffer cannot merge.
            debug!(session = session.id, expected = %ssrc, got = %header.ssrc, "RTP from a second SSRC dropped");
            stats.dropped_packets += 1;
            return;
        }
    }
    let payload = Bytes::from_owner(packet.payload);
    // Padding-only packets (bandwidth probes) carry no Opus packet; an Opus
    // packet always has at least its TOC byte (RFC 6716 §3.1).
    if payload.is_empty() {
        stats.dropped_packets += 1;
        return;
    }
    out.push_back(Out::Event(RtcEvent::Opus {
        session: session.id,
        seq: header.sequence_number,
        rtp_ts: header.timestamp,
        payload,
        arrival: packet.timestamp,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const FINGERPRINT: &str = "a=fingerprint:sha-256 \
        0F:73:1C:4E:9A:2B:55:60:81:D4:3E:17:C2:8B:99:AA:\
        10:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:01";

    /// A browser-shaped offer: one sendonly audio m-line with `rtpmap`.
    fn offer(rtpmap: &str, pt: u8) -> String {
        [
            "v=0",
            "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=msid-semantic: WMS",
            &format!("m=audio 9 UDP/TLS/RTP/SAVPF {pt}"),
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=ice-ufrag:Xk3q",
            "a=ice-pwd:9pGd0W7hbVjXKzK2yY3fQ1mB",
            "a=ice-options:trickle",
            FINGERPRINT,
            "a=setup:actpass",
            "a=mid:0",
            "a=sendonly",
            "a=rtcp-mux",
            &format!("a=rtpmap:{pt} {rtpmap}"),
            "a=ssrc:3735928559 cname:publisher",
            "",
        ]
        .join("\r\n")
    }

    fn opus_offer() -> String {
        offer("opus/48000/2", 111)
    }

    fn sessions(max_sessions: usize) -> Sessions {
        let udp: SocketAddr = "127.0.0.1:40000".parse().expect("address");
        let config = RtcConfig {
            max_sessions,
            ice_timeout: Duration::from_secs(5),
            media_timeout: Duration::from_secs(2),
            ..RtcConfig::new(udp)
        };
        Sessions::new(&config, udp)
    }

    fn closed_events(s: &mut Sessions) -> Vec<(u64, String)> {
        let mut closed = Vec::new();
        while let Some(out) = s.poll_output() {
            if let Out::Event(RtcEvent::Closed { session, reason }) = out {
                closed.push((session, reason));
            }
        }
        closed
    }

    #[test]
    fn answer_is_ice_lite_recvonly_opus_with_one_host_candidate() {
        let mut s = sessions(4);
        let accepted = s.accept(Instant::now(), &opus_offer()).expect("accepted");
        let sdp = accepted.answer_sdp;
        assert!(sdp.contains("a=ice-lite"), "{sdp}");
        assert!(sdp.contains("a=recvonly"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "{sdp}");
        assert_eq!(sdp.matches("a=candidate:").count(), 1, "{sdp}");
        assert!(sdp.contains("127.0.0.1 40000 typ host"), "{sdp}");
        assert_eq!(s.stats().sessions, 1);
    }

    #[test]
    fn session_ids_are_distinct_and_the_limit_holds() {
        let mut s = sessions(2);
        let now = Instant::now();
        let a = s.accept(now, &opus_offer()).expect("first");
        let b = s.accept(now, &opus_offer()).expect("second");
        assert_ne!(a.session, b.session);
        assert_eq!(
            s.accept(now, &opus_offer()),
            Err(AcceptError::TooManySessions { limit: 2 })
        );
        s.close(now, a.session, "done");
        let c = s.accept(now, &opus_offer()).expect("a slot was freed");
        assert!(c.session > b.session, "ids are never reused");
    }

    #[test]
    fn unparseable_offer_is_rejected_with_a_reason() {
        let mut s = sessions(2);
        match s.accept(Instant::now(), "v=0\r\nnonsense\r\n") {
            Err(AcceptError::OfferRejected { reason }) => assert!(!reason.is_empty()),
            other => panic!("expected OfferRejected, got {other:?}"),
        }
        assert_eq!(s.stats().sessions, 0);
        assert!(
            s.poll_output().is_none(),
            "a refused offer leaves no output"
        );
    }

    #[test]
    fn offer_without_opus_is_rejected() {
        let mut s = sessions(2);
        let pcmu = offer("PCMU/8000", 0);
        assert_eq!(
            s.accept(Instant::now(), &pcmu),
            Err(AcceptError::NoOpusAudio)
        );
        assert_eq!(s.stats().sessions, 0);
    }

    #[test]
    fn offer_the_publisher_does_not_send_on_is_rejected() {
        let mut s = sessions(2);
        let recvonly = opus_offer().replace("a=sendonly", "a=recvonly");
        assert_eq!(
            s.accept(Instant::now(), &recvonly),
            Err(AcceptError::NoOpusAudio)
        );
    }

    #[test]
    fn garbage_is_counted_and_harms_no_session() {
        let mut s = sessions(2);
        let now = Instant::now();
        let a = s.accept(now, &opus_offer()).expect("accepted");
        let stranger: SocketAddr = "198.51.100.7:5000".parse().expect("address");
        let rtp_like = [0x80_u8, 111, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2];
        let stun_like = [0_u8; 40];
        for datagram in [&[][..], &[0xff; 100], &[0x16; 30], &rtp_like, &stun_like] {
            s.receive(now, stranger, datagram);
        }
        let stats = s.stats();
        assert_eq!(stats.unclaimed_datagrams, 5);
        assert_eq!(stats.sessions, 1);
        assert!(closed_events(&mut s).is_empty());
        assert!(
            s.live
                .iter()
                .any(|x| x.id == a.session && x.ending.is_none())
        );
    }

    #[test]
    fn silent_peer_ends_after_the_ice_timeout_with_one_closed() {
        let mut s = sessions(2);
        let t0 = Instant::now();
        let a = s.accept(t0, &opus_offer()).expect("accepted");
        let deadline = s.next_deadline().expect("a session has a deadline");
        assert!(deadline <= t0 + Duration::from_secs(5));

        s.timeout(t0 + Duration::from_secs(4));
        assert!(closed_events(&mut s).is_empty(), "still within the timeout");

        s.timeout(t0 + Duration::from_secs(5));
        let closed = closed_events(&mut s);
        assert_eq!(closed.len(), 1, "{closed:?}");
        let (id, reason) = &closed[0];
        assert_eq!(*id, a.session);
        assert!(reason.contains("STUN"), "{reason}");
        assert_eq!(s.next_deadline(), None);

        s.timeout(t0 + Duration::from_secs(60));
        s.close(t0 + Duration::from_secs(60), a.session, "again");
        assert!(closed_events(&mut s).is_empty(), "Closed is emitted once");
    }

    #[test]
    fn close_and_close_all_emit_their_reason_once() {
        let mut s = sessions(3);
        let now = Instant::now();
        let a = s.accept(now, &opus_offer()).expect("a");
        let b = s.accept(now, &opus_offer()).expect("b");
        s.close(now, a.session, "host left");
        s.close(now, 999, "unknown session is ignored");
        assert_eq!(
            closed_events(&mut s),
            vec![(a.session, "host left".to_owned())]
        );
        s.close_all(now, "shutting down");
        assert_eq!(
            closed_events(&mut s),
            vec![(b.session, "shutting down".to_owned())]
        );
        assert_eq!(s.stats().sessions, 0);
    }
}
