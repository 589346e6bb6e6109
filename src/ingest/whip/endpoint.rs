//! WHIP ingest for a broadcast: the HTTP resources of RFC 9725
//! ([`WhipApi`], in `resource`) and the bridge from WebRTC sessions to the
//! studio ([`WhipIngest`] and its task, in `bridge`), joined by the session
//! table they share.
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
//!
//! One task owns the [`RtcEndpoint`]: when a session's ICE and DTLS are up
//! it reports the host `Connected` to the studio; each Opus RTP packet goes
//! into the session's [`OpusJitter`], which is pulled every
//! [`PULL_INTERVAL`] and its frames sent to the studio as the host's audio,
//! stamped on the [`ProgramClock`]; a closed session is `Disconnected`. A
//! WHIP host is a live host like an RTMP host: same keys, same control API,
//! same replacement rule (the studio asks [`WhipIngest::close`] to end a
//! replaced or kicked session).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::bridge::Bridge;
use super::ice_servers::IceServers;
use super::jitter::OpusJitterConfig;
use super::rtc::{RtcEndpoint, RtcHandle};
use super::sdp::OfferSummary;
use crate::ingest::keys::Keys;
use crate::ingest::{IngestEvent, SessionId};
use crate::time::ProgramClock;
use crate::web::per_address::{PerAddress, Slot};

pub use super::bridge::{PULL_INTERVAL, WhipIngest};
pub use super::resource::WhipApi;
pub use super::{TALKBACK_SEGMENT, WHEP_SEGMENT, WHIP_SEGMENT};

/// A session as the HTTP side knows it.
pub(super) struct Resource {
    /// The location id (the last path segment of `Location`).
    pub(super) id: String,
    /// The host the token belongs to.
    pub(super) host: String,
    /// The studio's id of the session.
    pub(super) studio: SessionId,
    /// What the offer said about FEC, for the jitter buffer.
    pub(super) offer: OfferSummary,
    /// What the session is for.
    pub(super) kind: Kind,
    /// A talkback session's host (`None`: every host).
    pub(super) talkback_to: Option<String>,
    /// The client address's slot, freed with the resource, or as soon as
    /// the publisher ends the session with `DELETE`.
    pub(super) slot: Option<Slot>,
}

/// What a session is for, by the endpoint it was opened at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A host publishing (`/{stream}/whip`, the host's key).
    Host,
    /// A host hearing only its return (`/{stream}/whep`, the host's key).
    Return,
    /// The producer talking to hosts' returns (`/{stream}/talkback`, the
    /// admin token).
    Talkback,
}

impl Kind {
    /// The endpoint's last path segment.
    pub(super) fn segment(self) -> &'static str {
        match self {
            Kind::Host => WHIP_SEGMENT,
            Kind::Return => WHEP_SEGMENT,
            Kind::Talkback => TALKBACK_SEGMENT,
        }
    }

    /// What the offer must do.
    pub(super) fn purpose(self) -> super::sdp::Purpose {
        match self {
            Kind::Host | Kind::Talkback => super::sdp::Purpose::Publish,
            Kind::Return => super::sdp::Purpose::Return,
        }
    }
}

#[derive(Default)]
pub(super) struct Table {
    /// By WebRTC session id.
    pub(super) by_rtc: HashMap<u64, Resource>,
}

impl Table {
    pub(super) fn rtc_of_location(&self, id: &str) -> Option<u64> {
        self.by_rtc
            .iter()
            .find_map(|(rtc, r)| (r.id == id).then_some(*rtc))
    }

    pub(super) fn rtc_of_studio(&self, studio: SessionId) -> Option<u64> {
        self.by_rtc
            .iter()
            .find_map(|(rtc, r)| (r.studio == studio).then_some(*rtc))
    }
}

pub(super) struct Shared {
    pub(super) stream: String,
    pub(super) keys: Arc<Keys>,
    pub(super) rtc: RtcHandle,
    pub(super) table: Mutex<Table>,
    pub(super) closes: mpsc::UnboundedSender<(u64, String)>,
    /// Sessions per client address.
    pub(super) per_address: Arc<PerAddress>,
    /// STUN and TURN servers handed to hosts.
    pub(super) ice: IceServers,
    /// The token the producer's talkback sessions bear (the admin
    /// token); `None`: no talkback.
    pub(super) talkback_token: Option<Arc<str>>,
}

impl Shared {
    pub(super) fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Per-host and per-address settings of WHIP ingest.
#[derive(Debug, Clone)]
pub struct WhipOptions {
    /// Each host's Opus jitter buffer.
    pub jitter: OpusJitterConfig,
    /// Sessions one client address may hold at once.
    pub max_per_address: usize,
    /// STUN and TURN servers for hosts (`GET /{stream}/whip`, `Link`
    /// headers of every `201`).
    pub ice_servers: IceServers,
    /// The producer's talkback token (the admin token): talkback sessions
    /// at `/{stream}/talkback` bear it. `None`: talkback is off.
    pub talkback_token: Option<String>,
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
    options: WhipOptions,
) -> (WhipApi, WhipIngest) {
    let WhipOptions {
        jitter,
        max_per_address,
        ice_servers,
        talkback_token,
    } = options;
    let (closes, close_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        stream: stream.to_owned(),
        keys,
        rtc,
        table: Mutex::default(),
        closes,
        per_address: PerAddress::new(max_per_address),
        ice: ice_servers,
        talkback_token: talkback_token.filter(|t| !t.is_empty()).map(Arc::from),
    });
    let bridge = Bridge::new(shared.clone(), inbox, clock, jitter);
    tokio::spawn(bridge.run(endpoint, close_rx));
    (
        WhipApi {
            shared: shared.clone(),
        },
        WhipIngest { shared },
    )
}
