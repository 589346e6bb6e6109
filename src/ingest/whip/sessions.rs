//! The sessions of a WebRTC endpoint as a synchronous state machine: no
//! sockets, no tasks, no clock.
//!
//! [`Sessions`] holds every [`str0m::Rtc`] of an endpoint and implements the
//! contract of [`rtc`](super::rtc) apart from its IO: accepting offers into
//! ICE-lite, receive-only Opus sessions, routing each datagram to the session
//! that accepts it, the consent and media timeouts, and the one `Closed` per
//! session. Everything enters as a method call that carries `now`: an offer
//! ([`Sessions::accept`]), a datagram ([`Sessions::receive`]), a close
//! ([`Sessions::close`], [`Sessions::close_all`]) or the passing of time
//! ([`Sessions::timeout`], due at [`Sessions::next_deadline`]). What it wants
//! done comes out of [`Sessions::poll_output`]: datagrams to send and events to
//! deliver, in order. The driver in `rtc` owns the socket, the timer and the
//! channels; the tests here drive the same code with made-up instants.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use super::sdp::Purpose;
use tracing::{debug, info};

/// Upper bound applied to the configured timeouts, so deadline arithmetic on
/// `Instant` cannot overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

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

/// A session created by [`RtcHandle::accept`](super::rtc::RtcHandle::accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Id naming the session in [`RtcEvent`]s and [`RtcHandle::close`](super::rtc::RtcHandle::close);
    /// never reused by the endpoint.
    pub session: u64,
    /// SDP answer to return to the publisher (RFC 9725 §4.2: body of the
    /// `201 Created` response).
    pub answer_sdp: String,
}

/// Why an offer was not accepted. Each variant names the WHIP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The endpoint is at [`RtcConfig::max_sessions`](super::rtc::RtcConfig::max_sessions): answer `503 Service
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

/// Counters of an [`RtcEndpoint`](super::rtc::RtcEndpoint), from [`RtcHandle::stats`](super::rtc::RtcHandle::stats).
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

/// Something [`Sessions`] wants done.
#[derive(Debug)]
pub(crate) enum Out {
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
    /// Where a return feed goes, when the publisher also receives on its
    /// audio m-line (`sendrecv`): the m-line and the Opus payload type.
    send: Option<(Mid, Pt)>,
    /// The next RTP sequence number of the return (RFC 3550 §5.1), with
    /// its rollover count.
    send_seq: u64,
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
    /// A return-only session ([`Purpose::Return`]): it sends and receives
    /// no media, so only ICE consent keeps it alive, not RTP.
    plays_only: bool,
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

/// The host candidates every answer advertises (RFC 8445 §5.1.1.1): a UDP
/// one, a passive ICE-TCP one (RFC 6544 §4.5), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidates {
    /// Where peers send UDP datagrams.
    pub(crate) udp: Option<SocketAddr>,
    /// Where peers open TCP connections (RFC 4571 framing).
    pub(crate) tcp: Option<SocketAddr>,
}

impl Candidates {
    /// The advertised address for `proto`, if the endpoint offers it.
    fn address(&self, proto: Protocol) -> Option<SocketAddr> {
        match proto {
            Protocol::Udp => self.udp,
            Protocol::Tcp => self.tcp,
            _ => None,
        }
    }

    /// The str0m candidates to add to a new session.
    fn build(&self) -> Result<Vec<Candidate>, String> {
        let mut all = Vec::new();
        if let Some(udp) = self.udp {
            all.push(Candidate::host(udp, "udp").map_err(|e| format!("UDP candidate {udp}: {e}"))?);
        }
        if let Some(tcp) = self.tcp {
            // RFC 6544 §4.5: a passive candidate accepts connections and
            // never opens them, which is all an ICE-lite endpoint can do.
            let candidate = Candidate::builder()
                .tcp()
                .host(tcp)
                .tcptype(TcpType::Passive)
                .build()
                .map_err(|e| format!("TCP candidate {tcp}: {e}"))?;
            all.push(candidate);
        }
        Ok(all)
    }
}

/// The limits a [`Sessions`] enforces, as documented on
/// [`RtcConfig`](super::rtc::RtcConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Most sessions alive at once.
    pub(crate) max_sessions: usize,
    /// A session with no STUN request from its peer for this long ends.
    pub(crate) ice_timeout: Duration,
    /// A connected session that receives no RTP for this long ends.
    pub(crate) media_timeout: Duration,
}

/// All sessions of an endpoint, as a synchronous state machine: datagrams,
/// timeouts and commands in (each with `now`); datagrams and events out via
/// [`Sessions::poll_output`], next wake-up via [`Sessions::next_deadline`].
pub(crate) struct Sessions {
    candidates: Candidates,
    max_sessions: usize,
    ice_timeout: Duration,
    media_timeout: Duration,
    next_id: u64,
    live: Vec<Session>,
    out: VecDeque<Out>,
    stats: RtcStats,
}

impl Sessions {
    /// No sessions yet; every answer will advertise `candidates`.
    pub(crate) fn new(candidates: Candidates, limits: Limits) -> Self {
        Self {
            candidates,
            max_sessions: limits.max_sessions,
            ice_timeout: limits.ice_timeout.min(MAX_TIMEOUT),
            media_timeout: limits.media_timeout.min(MAX_TIMEOUT),
            next_id: 1,
            live: Vec::new(),
            out: VecDeque::new(),
            stats: RtcStats::default(),
        }
    }

    /// The counters, with the sessions alive now.
    pub(crate) fn stats(&self) -> RtcStats {
        RtcStats {
            sessions: self.live.len(),
            ..self.stats
        }
    }

    /// Counts an Opus event the driver could not deliver (its consumer had
    /// no room), so [`RtcStats::dropped_packets`] covers every loss.
    pub(crate) fn count_undelivered_packet(&mut self) {
        self.stats.dropped_packets += 1;
    }

    /// The next datagram to send or event to deliver, oldest first; `None`
    /// when there is nothing to do until the next input.
    pub(crate) fn poll_output(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// Earliest instant [`Sessions::timeout`] has work to do; `None` when
    /// there are no sessions.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.live
            .iter()
            .map(|s| s.deadline(self.ice_timeout, self.media_timeout))
            .min()
    }

    /// Negotiates `offer_sdp` into a new session, or refuses it leaving
    /// nothing behind.
    #[cfg(test)]
    pub(crate) fn accept(
        &mut self,
        now: Instant,
        offer_sdp: &str,
    ) -> Result<Accepted, AcceptError> {
        self.accept_for(now, offer_sdp, Purpose::Publish)
    }

    /// Negotiates `offer_sdp` into a new session for `purpose`: a publisher
    /// must send Opus, a return-only session must receive it.
    pub(crate) fn accept_for(
        &mut self,
        now: Instant,
        offer_sdp: &str,
        purpose: Purpose,
    ) -> Result<Accepted, AcceptError> {
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
        let candidates = self
            .candidates
            .build()
            .map_err(|reason| AcceptError::OfferRejected { reason })?;
        for candidate in candidates {
            rtc.add_local_candidate(candidate);
        }
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
            send: None,
            send_seq: 0,
            ssrc: None,
            rtc_deadline: now,
            last_stun: now,
            last_rtp: None,
            last_source: None,
            ending: None,
            plays_only: purpose == Purpose::Return,
        };
        // str0m announces negotiated media (`MediaAdded`) only once SRTP is
        // up, so read the outcome now from the m-lines of the answer.
        for mid in answer_sdp.lines().filter_map(|l| l.strip_prefix("a=mid:")) {
            note_media(&mut session, Mid::from(mid.trim()));
        }
        let usable = match purpose {
            Purpose::Publish => !session.opus_pts.is_empty(),
            Purpose::Return => session.send.is_some(),
        };
        if !usable {
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

    /// Hands the datagram `data` (a UDP datagram, or one RFC 4571 frame of an
    /// ICE-TCP connection) from `source`, read at `now`, to the session that
    /// accepts it and returns that session's id; counts it as unclaimed and
    /// returns `None` if none does.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        data: &[u8],
    ) -> Option<u64> {
        // The datagram was addressed to the advertised candidate (possibly
        // translated by NAT on the way); ICE matches pairs on that address.
        let receive = self
            .candidates
            .address(proto)
            .and_then(|local| Receive::new(proto, source, local, data).ok());
        let Some(receive) = receive else {
            self.stats.unclaimed_datagrams += 1;
            return None;
        };
        // RFC 7983 §7: first byte 0..=3 is STUN.
        let is_stun = data.first().is_some_and(|b| *b <= 3);
        let input = Input::Receive(now, receive);
        let Some(session) = self.live.iter_mut().find(|s| s.rtc.accepts(&input)) else {
            self.stats.unclaimed_datagrams += 1;
            return None;
        };
        let id = session.id;
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
        Some(id)
    }

    /// Sends one Opus packet (RFC 7587) of `session`'s return feed at RTP
    /// time `rtp_ts` (48 kHz), sampled at `now`. Returns false, sending
    /// nothing, when the session takes no return: its offer did not receive
    /// on its audio m-line (`sendonly`), or DTLS is not up yet.
    pub(crate) fn send_opus(
        &mut self,
        now: Instant,
        session: u64,
        rtp_ts: u32,
        opus: &[u8],
    ) -> bool {
        let Some(s) = self.live.iter_mut().find(|s| s.id == session) else {
            return false;
        };
        let (Some((mid, pt)), Some(_), None) = (s.send, s.last_rtp, &s.ending) else {
            return false;
        };
        let seq = SeqNo::from(s.send_seq);
        let mut direct = s.rtc.direct_api();
        let Some(stream) = direct.stream_tx_by_mid(mid, None) else {
            return false;
        };
        stream.write_rtp(RtpWrite::new(pt, seq, rtp_ts, now, opus.to_vec()));
        s.send_seq += 1;
        drain(s, now, &mut self.out, &mut self.stats);
        true
    }

    /// Runs the timers due at `now`: str0m's own, consent freshness and the
    /// media timeout.
    pub(crate) fn timeout(&mut self, now: Instant) {
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
                && !session.plays_only
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

    /// Ends `session` with `reason`; unknown or already closed ids are
    /// ignored.
    pub(crate) fn close(&mut self, now: Instant, session: u64, reason: &str) {
        if let Some(s) = self.live.iter_mut().find(|s| s.id == session) {
            s.end(reason);
            self.reap(now);
        }
    }

    /// Ends every session with `reason`.
    pub(crate) fn close_all(&mut self, now: Instant, reason: &str) {
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

/// Records the Opus payload types of `mid` if it is audio we receive, and
/// the m-line a return goes out on if it is audio we send.
fn note_media(session: &mut Session, mid: Mid) {
    let Some(media) = session.rtc.media(mid) else {
        return;
    };
    if media.kind() != MediaKind::Audio {
        return;
    }
    let receiving = media.direction().is_receiving();
    let sending = media.direction().is_sending();
    let config = session.rtc.codec_config();
    for pt in media.remote_pts() {
        let is_opus = config
            .find(|p| p.pt() == *pt && p.spec().codec == Codec::Opus)
            .is_some();
        if is_opus && receiving && !session.opus_pts.contains(pt) {
            session.opus_pts.push(*pt);
        }
        if is_opus && sending && session.send.is_none() {
            session.send = Some((mid, *pt));
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

    fn limits(max_sessions: usize) -> Limits {
        Limits {
            max_sessions,
            ice_timeout: Duration::from_secs(5),
            media_timeout: Duration::from_secs(2),
        }
    }

    /// Sessions advertising UDP 127.0.0.1:40000 only.
    fn sessions(max_sessions: usize) -> Sessions {
        let candidates = Candidates {
            udp: Some("127.0.0.1:40000".parse().expect("address")),
            tcp: None,
        };
        Sessions::new(candidates, limits(max_sessions))
    }

    /// Sessions advertising TCP 127.0.0.1:40001 only.
    fn tcp_sessions(max_sessions: usize) -> Sessions {
        let candidates = Candidates {
            udp: None,
            tcp: Some("127.0.0.1:40001".parse().expect("address")),
        };
        Sessions::new(candidates, limits(max_sessions))
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
            assert_eq!(s.receive(now, Protocol::Udp, stranger, datagram), None);
        }
        // Nothing arrives over TCP when no TCP candidate was advertised.
        assert_eq!(s.receive(now, Protocol::Tcp, stranger, &stun_like), None);
        let stats = s.stats();
        assert_eq!(stats.unclaimed_datagrams, 6);
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

    /// A str0m publisher talking to [`Sessions`] over a simulated network:
    /// every datagram arrives the instant it is sent and time advances only
    /// to the next deadline of either side.
    struct Peer {
        rtc: Rtc,
        addr: SocketAddr,
        /// UDP, or TCP with the peer as the active side (RFC 6544 §4.5).
        proto: Protocol,
        mid: Mid,
        pt: Pt,
        /// When `rtc` asked to be woken next.
        deadline: Instant,
        /// Everything `Sessions` emitted, in order.
        events: Vec<RtcEvent>,
        /// The payloads of the media the peer received (a return feed).
        received: Vec<Vec<u8>>,
    }

    impl Peer {
        /// Offers a sendonly audio m-line to `s` over `proto` and applies the
        /// answer.
        fn publish_to(s: &mut Sessions, now: Instant, proto: Protocol) -> (Peer, u64) {
            Self::offer_to(s, now, proto, str0m::media::Direction::SendOnly)
        }

        /// As [`Peer::publish_to`], with the audio m-line's `direction`.
        fn offer_to(
            s: &mut Sessions,
            now: Instant,
            proto: Protocol,
            direction: str0m::media::Direction,
        ) -> (Peer, u64) {
            let addr: SocketAddr = "192.0.2.10:5000".parse().expect("address");
            let mut rtc = Rtc::builder().build(now);
            let candidate = match proto {
                Protocol::Tcp => Candidate::builder()
                    .tcp()
                    .host(addr)
                    .tcptype(TcpType::Active)
                    .build(),
                _ => Candidate::host(addr, "udp"),
            };
            rtc.add_local_candidate(candidate.expect("candidate"));
            let mut change = rtc.sdp_api();
            let mid = change.add_media(MediaKind::Audio, direction, None, None, None);
            let (offer, pending) = change.apply().expect("an offer");
            let accepted = s
                .accept(now, &offer.to_sdp_string())
                .expect("the offer is accepted");
            let answer =
                str0m::change::SdpAnswer::from_sdp_string(&accepted.answer_sdp).expect("answer");
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .expect("the answer applies");
            let pt = rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .expect("Opus negotiated")
                .pt();
            let peer = Peer {
                rtc,
                addr,
                proto,
                mid,
                pt,
                deadline: now,
                events: Vec::new(),
                received: Vec::new(),
            };
            (peer, accepted.session)
        }

        /// Exchanges datagrams at `now` until neither side has any to send.
        fn pump(&mut self, s: &mut Sessions, now: Instant) {
            loop {
                let mut quiet = true;
                loop {
                    match self.rtc.poll_output().expect("peer output") {
                        Output::Timeout(at) => {
                            self.deadline = at;
                            break;
                        }
                        Output::Transmit(t) => {
                            quiet = false;
                            assert_eq!(t.proto, self.proto, "the peer sends on its transport");
                            s.receive(now, t.proto, self.addr, &t.contents);
                        }
                        Output::Event(Event::MediaData(data)) => {
                            self.received.push(data.data.to_vec())
                        }
                        Output::Event(_) => {}
                    }
                }
                while let Some(out) = s.poll_output() {
                    match out {
                        Out::Transmit(t) => {
                            quiet = false;
                            assert_eq!(t.proto, self.proto, "answers go back the same way");
                            let receive =
                                Receive::new(t.proto, t.source, t.destination, &t.contents)
                                    .expect("a datagram for the peer");
                            // A peer that already closed may refuse late input.
                            let _ = self.rtc.handle_input(Input::Receive(now, receive));
                        }
                        Out::Event(event) => self.events.push(event),
                    }
                }
                if quiet {
                    return;
                }
            }
        }

        /// Runs both sides' timers and traffic up to `until`, leaving `now`
        /// there.
        fn advance(&mut self, s: &mut Sessions, now: &mut Instant, until: Instant) {
            loop {
                self.pump(s, *now);
                let due = s
                    .next_deadline()
                    .map_or(self.deadline, |d| d.min(self.deadline));
                // At least a millisecond per step, so a timer that asks for
                // "now" again cannot stall the simulation.
                let next = due.max(*now + Duration::from_millis(1));
                if next > until {
                    *now = until;
                    self.pump(s, *now);
                    return;
                }
                *now = next;
                // A peer that already closed may refuse late input.
                let _ = self.rtc.handle_input(Input::Timeout(*now));
                s.timeout(*now);
            }
        }

        /// Sends Opus frame `n` (20 ms each) at `now`; its payload is its TOC
        /// byte followed by `n`.
        fn send_frame(&mut self, s: &mut Sessions, now: Instant, n: u16) {
            let rtp_time = str0m::media::MediaTime::new(
                u64::from(n) * 960,
                str0m::media::Frequency::FORTY_EIGHT_KHZ,
            );
            let [hi, lo] = n.to_be_bytes();
            self.rtc
                .writer(self.mid)
                .expect("a writer for the audio m-line")
                .write(self.pt, now, rtp_time, vec![0xfc, hi, lo])
                .expect("write");
            // str0m queues the packet for its next timeout; let it go now.
            self.rtc
                .handle_input(Input::Timeout(now))
                .expect("peer timer");
            self.pump(s, now);
        }

        fn connected(&self) -> Vec<(u64, SocketAddr)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    RtcEvent::Connected { session, peer } => Some((*session, *peer)),
                    _ => None,
                })
                .collect()
        }

        fn closed(&self) -> Vec<(u64, String)> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    RtcEvent::Closed { session, reason } => Some((*session, reason.clone())),
                    _ => None,
                })
                .collect()
        }
    }

    /// Connects a simulated publisher; returns it, its session id and the
    /// instant the session connected.
    fn connected_peer(s: &mut Sessions, now: &mut Instant) -> (Peer, u64) {
        connected_peer_over(s, now, Protocol::Udp)
    }

    /// As [`connected_peer`], over `proto`.
    fn connected_peer_over(s: &mut Sessions, now: &mut Instant, proto: Protocol) -> (Peer, u64) {
        let (mut peer, id) = Peer::publish_to(s, *now, proto);
        let give_up = *now + Duration::from_secs(2);
        while peer.connected().is_empty() && *now < give_up {
            let step = *now + Duration::from_millis(10);
            peer.advance(s, now, step);
        }
        assert_eq!(
            peer.connected(),
            vec![(id, peer.addr)],
            "ICE and DTLS complete in simulated time: {:?}",
            peer.events
        );
        (peer, id)
    }

    #[test]
    fn a_simulated_publisher_connects_and_its_packets_arrive_raw_and_in_order() {
        let mut s = sessions(2);
        let mut now = Instant::now();
        let (mut peer, id) = connected_peer(&mut s, &mut now);

        let mut sent_at = Vec::new();
        for n in 0..50_u16 {
            let at = now + Duration::from_millis(20);
            peer.advance(&mut s, &mut now, at);
            peer.send_frame(&mut s, now, n);
            sent_at.push(now);
        }

        let opus: Vec<_> = peer
            .events
            .iter()
            .filter_map(|e| match e {
                RtcEvent::Opus {
                    session,
                    seq,
                    rtp_ts,
                    payload,
                    arrival,
                } => Some((*session, *seq, *rtp_ts, payload.clone(), *arrival)),
                _ => None,
            })
            .collect();
        assert_eq!(opus.len(), 50, "every frame is delivered once");
        let (_, seq0, ts0, _, _) = opus[0];
        for (n, (session, seq, rtp_ts, payload, arrival)) in opus.into_iter().enumerate() {
            let k = u16::try_from(n).expect("small");
            assert_eq!(session, id);
            assert_eq!(seq, seq0.wrapping_add(k), "sequence numbers as sent");
            assert_eq!(
                rtp_ts,
                ts0.wrapping_add(u32::from(k) * 960),
                "timestamps as sent"
            );
            let [hi, lo] = k.to_be_bytes();
            assert_eq!(&payload[..], &[0xfc, hi, lo], "payload unmodified");
            assert_eq!(arrival, sent_at[n], "arrival is the receive instant");
        }
        assert!(peer.closed().is_empty(), "{:?}", peer.closed());
        assert_eq!(s.stats().dropped_packets, 0);
    }

    #[test]
    fn a_publisher_reaching_only_the_tcp_candidate_connects_over_ice_tcp() {
        let mut s = tcp_sessions(2);
        let mut now = Instant::now();
        let (mut peer, id) = connected_peer_over(&mut s, &mut now, Protocol::Tcp);
        for n in 0..10_u16 {
            let at = now + Duration::from_millis(20);
            peer.advance(&mut s, &mut now, at);
            peer.send_frame(&mut s, now, n);
        }
        let delivered = peer
            .events
            .iter()
            .filter(|e| matches!(e, RtcEvent::Opus { session, .. } if *session == id))
            .count();
        assert_eq!(delivered, 10);
        // A UDP datagram cannot reach an endpoint that offered only TCP.
        let stray = s.stats().unclaimed_datagrams;
        assert_eq!(s.receive(now, Protocol::Udp, peer.addr, &[0_u8; 20]), None);
        assert_eq!(s.stats().unclaimed_datagrams, stray + 1);
    }

    #[test]
    fn a_sendrecv_publisher_gets_the_return_feed_and_a_sendonly_one_does_not() {
        let mut s = sessions(2);
        let mut now = Instant::now();
        let (mut peer, id) = Peer::offer_to(
            &mut s,
            now,
            Protocol::Udp,
            str0m::media::Direction::SendRecv,
        );
        assert!(!s.send_opus(now, id, 0, &[0xfc]), "not before DTLS is up");
        let give_up = now + Duration::from_secs(2);
        while peer.connected().is_empty() && now < give_up {
            let step = now + Duration::from_millis(10);
            peer.advance(&mut s, &mut now, step);
        }
        for n in 0..20_u8 {
            let at = now + Duration::from_millis(20);
            peer.advance(&mut s, &mut now, at);
            assert!(s.send_opus(now, id, u32::from(n) * 960, &[0xfc, n]));
            peer.pump(&mut s, now);
        }
        let later = now + Duration::from_millis(200);
        peer.advance(&mut s, &mut now, later);
        assert_eq!(peer.received.len(), 20, "every return packet arrives");
        for (n, payload) in peer.received.iter().enumerate() {
            assert_eq!(payload, &vec![0xfc, n as u8]);
        }

        let (_, sendonly) = connected_peer(&mut s, &mut now);
        assert!(
            !s.send_opus(now, sendonly, 0, &[0xfc]),
            "a sendonly publisher takes no return"
        );
    }

    #[test]
    fn an_answer_offers_the_passive_tcp_candidate_beside_the_udp_one() {
        let candidates = Candidates {
            udp: Some("127.0.0.1:40000".parse().expect("address")),
            tcp: Some("127.0.0.1:40001".parse().expect("address")),
        };
        let mut s = Sessions::new(candidates, limits(1));
        let sdp = s
            .accept(Instant::now(), &opus_offer())
            .expect("accepted")
            .answer_sdp;
        assert_eq!(sdp.matches("a=candidate:").count(), 2, "{sdp}");
        assert!(sdp.contains("udp"), "{sdp}");
        let tcp = sdp
            .lines()
            .find(|l| l.contains(" tcp ") || l.contains(" TCP "))
            .unwrap_or_else(|| panic!("a TCP candidate: {sdp}"));
        assert!(
            tcp.contains("127.0.0.1 40001 typ host tcptype passive"),
            "{tcp}"
        );
    }

    #[test]
    fn a_connected_publisher_that_stops_sending_hits_the_media_timeout() {
        let mut s = sessions(2);
        let mut now = Instant::now();
        let (mut peer, id) = connected_peer(&mut s, &mut now);
        let step = now + Duration::from_millis(20);
        peer.advance(&mut s, &mut now, step);
        peer.send_frame(&mut s, now, 0);
        let last_rtp = now;

        // The peer keeps its consent checks going but sends no more RTP.
        let before = last_rtp + Duration::from_millis(1_990);
        peer.advance(&mut s, &mut now, before);
        assert!(peer.closed().is_empty(), "{:?}", peer.events);

        let after = last_rtp + Duration::from_millis(2_010);
        peer.advance(&mut s, &mut now, after);
        let closed = peer.closed();
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(closed[0].0, id);
        assert!(closed[0].1.contains("no RTP"), "{}", closed[0].1);
        assert_eq!(s.stats().sessions, 0);
    }

    #[test]
    fn a_publisher_closing_dtls_ends_its_session_once() {
        let mut s = sessions(2);
        let mut now = Instant::now();
        let (mut peer, id) = connected_peer(&mut s, &mut now);
        peer.rtc.close().expect("close");
        let later = now + Duration::from_millis(100);
        peer.advance(&mut s, &mut now, later);
        let closed = peer.closed();
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(closed[0].0, id);
        assert!(closed[0].1.contains("peer closed"), "{}", closed[0].1);

        let much_later = now + Duration::from_secs(30);
        peer.advance(&mut s, &mut now, much_later);
        assert_eq!(peer.closed().len(), 1, "Closed is emitted once");
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn an_undelivered_packet_is_counted_as_dropped() {
        let mut s = sessions(1);
        s.count_undelivered_packet();
        s.count_undelivered_packet();
        assert_eq!(s.stats().dropped_packets, 2);
    }
}
