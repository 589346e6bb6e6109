//! A live broadcast assembled from its parts: the composition layer's
//! builder, which `onair live` and anything embedding onair use.
//!
//! [`OnAir`] says what a broadcast is made of (file hosts, hold music, the
//! keys of live hosts, the ingest listeners, the in-process origin, the
//! control API); [`OnAir::run`] wires the layers together, each through its
//! own interface: ingest sends `IngestEvent`s to the studio's ingest inbox,
//! the control API sends commands to its control inbox, both serve HTTP
//! through [`web::Routes`] on the origin's server, and the publisher
//! announces stored objects to the origin. The policies that join them live
//! here too: how deep a live host's buffer is, how long WHIP waits for a
//! missing packet, how many events each inbox holds.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use crate::audio::{FeedConfig, LiveFeedConfig};
use crate::control::ControlApi;
use crate::control::room::RoomApi;
use crate::ingest::keys::Keys;
use crate::ingest::{Close, rtmp};
use crate::origin::Origin;
use crate::pipeline::{FileHost, Pipeline, PipelineConfig};
use crate::publish::lease::LeaseSettings;
use crate::publish::{self, BacklogLimit, Op, PublishMonitor, Store};
use crate::time::ProgramClock;
use crate::web;

use super::{Closer, LiveIo, LivePublisher, RunError, RunSummary};

/// Ingest events queued for the pipeline thread, which takes them every
/// 20 ms: a few hundred ms of audio packets of many hosts. A full inbox
/// slows the publishers down through TCP.
const INBOX: usize = 1024;

/// Control commands queued for the pipeline thread: a PATCH is two.
pub(super) const CONTROL_INBOX: usize = 64;

/// Announcements queued for the in-process origin: a part of both
/// renditions with its playlists and deletions is a few dozen operations,
/// so this is many parts of slack before the origin must resynchronise.
const ORIGIN_ANNOUNCEMENTS: usize = 4096;

/// WHIP ingest settings.
#[derive(Debug, Clone)]
pub struct WhipSettings {
    /// The UDP address WebRTC media is received on, if any.
    pub udp: Option<std::net::SocketAddr>,
    /// The address peers reach that socket at, if not `udp` (NAT).
    pub public: Option<std::net::SocketAddr>,
    /// The ICE-TCP address (RFC 6544 passive candidate) for publishers whose
    /// network blocks UDP, if any.
    pub tcp: Option<std::net::SocketAddr>,
    /// The address peers reach the TCP listener at, if not `tcp` (NAT).
    pub tcp_public: Option<std::net::SocketAddr>,
    /// STUN and TURN servers handed to hosts.
    pub ice_servers: crate::ingest::whip::ice_servers::IceServers,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// Most sessions of one client address at once.
    pub max_per_address: usize,
}

/// What a live broadcast is made of.
pub struct OnAir {
    /// Media settings, locked to the stream's timeline before building it
    /// (see [`super::lock_to_stream`]).
    pub pipeline: PipelineConfig,
    /// The program clock, anchored on the stream's timeline
    /// ([`super::lock_to_stream`]); `ProgramClock::start()` for a stream of
    /// its own that starts at program time 0.
    pub clock: ProgramClock,
    /// File hosts mixed from the start.
    pub hosts: Vec<FileHost>,
    /// Hold music, ducked while a live host speaks (the host named "hold").
    pub hold: Option<FileHost>,
    /// Live hosts by key: each key's name is a live host for the whole
    /// broadcast, silent until it publishes.
    pub keys: Arc<Keys>,
    /// Where `keys` came from, when a file is re-read while running (hosts
    /// added and removed without a restart).
    pub keys_file: Option<super::KeysFile>,
    /// A live host's jitter buffer target, milliseconds.
    pub jitter_ms: u32,
    /// RTMP publishers are accepted on this listener.
    pub rtmp: Option<TcpListener>,
    /// RTMPS publishers are accepted on this listener, with this certificate.
    pub rtmps: Option<(TcpListener, crate::tls::Certificate)>,
    /// RTMP and RTMPS connections one client address may hold at once.
    pub rtmp_per_address: usize,
    /// WHIP hosts (needs an origin to serve the WHIP endpoint).
    pub whip: Option<WhipSettings>,
    /// The in-process origin (over the broadcast's store) and its
    /// listener; it also serves the control API and WHIP.
    pub origin: Option<(Origin, TcpListener)>,
    /// The control API's admin token (served by the origin).
    pub admin_token: Option<String>,
    /// How much the publisher keeps while the store is away, beyond which
    /// the oldest segments are listed as gaps (default: the live window).
    pub backlog: BacklogLimit,
    /// One process of a standby group: it publishes only while it holds the
    /// stream's lease (see [`crate::publish::lease`]).
    pub standby: Option<StandbyGroup>,
}

/// A process's place in a standby group.
#[derive(Debug, Clone)]
pub struct StandbyGroup {
    /// This process's holder id in lease records: unique per process start.
    pub holder: String,
    /// Lease timing.
    pub lease: LeaseSettings,
}

impl StandbyGroup {
    /// A holder id for this process: host name, process id and a random
    /// suffix, so a restarted process is a new holder.
    pub fn holder_id() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "onair".to_owned());
        // The standard library seeds each RandomState from the OS: a
        // random suffix without another dependency. A clash would only
        // delay a takeover by one lease.
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("{host}-{}-{:08x}", std::process::id(), random as u32)
    }
}

impl OnAir {
    /// Runs the broadcast until `stop` is set, then ends the stream.
    pub async fn run(self, store: Store, stop: Arc<AtomicBool>) -> Result<RunSummary, RunError> {
        let stream = self.pipeline.packager.stream.clone();
        let hand_over = self.standby.is_some();
        let mut pipeline = Pipeline::new(self.pipeline, self.hosts)?;
        if let Some(hold) = self.hold {
            pipeline.add_hold(hold)?;
        }
        let live_feed = live_feed(self.jitter_ms);
        for name in self.keys.names() {
            let feed = FeedConfig {
                name,
                gain_db: 0.0,
                muted: false,
            };
            pipeline.add_live_host(feed, live_feed)?;
        }
        // The origin learns of each object as it is stored; the control API
        // shows the publisher's state: both need the publisher first.
        // In a standby group the origin follows the store, as a standalone
        // origin does: what this process stores is not all that is stored.
        let (announce, announcements) = match self.origin {
            Some(_) if self.standby.is_some() => (None, None),
            Some(_) => {
                let (tx, rx) = broadcast::channel(ORIGIN_ANNOUNCEMENTS);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let publisher = match &self.standby {
            None => LivePublisher::start(store.clone(), &pipeline, announce, self.backlog),
            Some(group) => {
                let monitor = Arc::new(OnceLock::<PublishMonitor>::new());
                let listed = Arc::clone(&monitor);
                let (fence, _lease) = publish::spawn_lease(
                    store.clone(),
                    &stream,
                    group.holder.clone(),
                    group.lease,
                    move || listed.get().and_then(PublishMonitor::listed),
                );
                tracing::info!(
                    holder = %group.holder,
                    lease_ms = group.lease.duration.as_millis() as u64,
                    "standby group: publishing only while holding the stream's lease"
                );
                let publisher = LivePublisher::start_fenced(
                    store.clone(),
                    &pipeline,
                    self.backlog,
                    fence,
                    group.lease.request_timeout,
                );
                let _ = monitor.set(publisher.monitor());
                publisher
            }
        };
        let clock = self.clock;
        let (ingest_tx, ingest) = mpsc::channel(INBOX);
        let (control_tx, control) = mpsc::channel(CONTROL_INBOX);
        if let Some(file) = self.keys_file {
            // Ends with the broadcast: the control channel closes then.
            tokio::spawn(super::keys_file::watch(
                file,
                self.keys.clone(),
                control_tx.clone(),
                live_feed,
            ));
        }

        // In a standby group the operator's commands reach every member
        // through the store.
        let operator_tx = match &self.standby {
            Some(_) => super::operator::share(&store, &stream, control_tx.clone()),
            None => control_tx.clone(),
        };
        let mut routes: Vec<Arc<dyn web::Routes>> = vec![Arc::new(RoomApi::new(
            &stream,
            self.keys.clone(),
            control_tx.clone(),
        ))];
        if let Some(token) = self.admin_token.clone() {
            routes.push(Arc::new(
                ControlApi::new(Some(token), operator_tx.clone())
                    .with_publisher(publisher.monitor())
                    .with_attempts(self.keys.attempts()),
            ));
        }
        let mut closers: Vec<SessionCloser> = Vec::new();
        let mut returner: Option<super::Returner> = None;
        if let Some(settings) = self.whip {
            if self.admin_token.is_some() {
                pipeline.enable_talkback(live_feed)?;
            }
            let whip = whip::start(
                settings,
                self.admin_token.clone(),
                &stream,
                &self.keys,
                &ingest_tx,
                clock,
                self.jitter_ms,
            )
            .await?;
            let http = self.origin.as_ref().and_then(|(origin, listener)| {
                let scheme = if origin.is_tls() { "https" } else { "http" };
                Some((scheme, listener.local_addr().ok()?))
            });
            match http {
                Some((scheme, http)) => tracing::info!(
                    "WHIP ingest: {scheme}://{http}/{stream}/whip (media on {}); host page {scheme}://{http}/{stream}/host",
                    whip.media
                ),
                None => tracing::warn!(
                    media = %whip.media,
                    "WHIP ingest without an HTTP server: no host can reach its endpoint"
                ),
            }
            routes.push(whip.routes);
            closers.push(whip.close);
            returner = Some(whip.returns);
        }
        let mut rtmp_listeners: Vec<rtmp::server::Listener> =
            self.rtmp.into_iter().map(Into::into).collect();
        if let Some((tcp, certificate)) = self.rtmps {
            rtmp_listeners.push(rtmp::server::Listener {
                tcp,
                tls: Some(certificate.acceptor(&[])),
            });
        }
        if !rtmp_listeners.is_empty() {
            let bridge = rtmp::bridge::start(
                rtmp_listeners,
                self.keys.clone(),
                rtmp::server::ServerConfig {
                    max_per_address: self.rtmp_per_address,
                    ..rtmp::server::ServerConfig::default()
                },
                ingest_tx.clone(),
                clock,
            )
            .map_err(|e| RunError::Io {
                what: "cannot start RTMP ingest".into(),
                source: e,
            })?;
            closers.push(Box::new(move |close| bridge.close(close)));
        }
        drop(ingest_tx);
        if let Some((origin, listener)) = self.origin {
            start_origin(origin, listener, routes, announcements);
        }
        // A session is one protocol's; each closes only its own.
        let closer: Closer = Box::new(move |close| {
            if !closers.iter().any(|c| c(&close)) {
                tracing::debug!(session = %close.session, "session to close is already gone");
            }
        });
        let io = LiveIo {
            observer: None,
            publisher: Some(publisher),
            ingest: Some(ingest),
            control: Some(control),
            closer: Some(closer),
            returner,
            clock,
            pacer: Arc::new(crate::time::WallClock),
            hand_over,
        };
        super::broadcast(pipeline, store, stop, io).await
    }
}

/// A live host's feed: the jitter buffer target, and room for five times
/// as much (at least a second) before the oldest audio is dropped.
fn live_feed(jitter_ms: u32) -> LiveFeedConfig {
    LiveFeedConfig {
        target_depth_ms: jitter_ms,
        max_depth_ms: (jitter_ms * 5).max(1_000),
        ..LiveFeedConfig::default()
    }
}

/// Starts the in-process origin with the broadcast's routes, learning of
/// stored objects from the publisher's announcements `rx`, or else from the
/// store.
fn start_origin(
    mut origin: Origin,
    listener: TcpListener,
    routes: Vec<Arc<dyn web::Routes>>,
    rx: Option<broadcast::Receiver<Op>>,
) {
    for r in routes {
        origin = origin.with_routes(r);
    }
    if let Some(rx) = rx {
        let observing = origin.clone();
        tokio::spawn(async move { observing.observe(rx).await });
    }
    tokio::spawn(async move {
        if let Err(error) = origin.serve(listener).await {
            tracing::error!(%error, "origin stopped");
        }
    });
}

/// Ends one protocol's session the studio replaced or kicked; false if the
/// session is not that protocol's.
type SessionCloser = Box<dyn Fn(&Close) -> bool + Send>;

/// WHIP ingest, once started.
struct Whip {
    routes: Arc<dyn web::Routes>,
    /// The advertised media addresses, for the log.
    media: String,
    close: SessionCloser,
    /// Sends return feeds to the WHIP sessions that receive.
    returns: super::Returner,
}

#[cfg(feature = "webrtc")]
mod whip {
    use super::*;
    use crate::ingest::IngestEvent;
    use crate::ingest::whip::jitter::OpusJitterConfig;
    use crate::ingest::whip::{endpoint, rtc};

    /// Binds the WebRTC socket and starts the WHIP bridge.
    pub(super) async fn start(
        settings: WhipSettings,
        talkback_token: Option<String>,
        stream: &str,
        keys: &Arc<Keys>,
        ingest: &mpsc::Sender<IngestEvent>,
        clock: ProgramClock,
        jitter_ms: u32,
    ) -> Result<Whip, RunError> {
        let wanted = rtc::Transports {
            udp: settings.udp,
            tcp: settings.tcp,
        };
        let config = rtc::RtcConfig {
            udp: settings.udp,
            public: settings.public,
            tcp: settings.tcp,
            tcp_public: settings.tcp_public,
            max_sessions: settings.max_sessions,
            ..rtc::RtcConfig::default()
        };
        let (socket, handle) =
            rtc::RtcEndpoint::bind(config)
                .await
                .map_err(|source| RunError::Io {
                    what: format!("cannot open the WebRTC media transports ({wanted})"),
                    source,
                })?;
        let media = socket.candidates().to_string();
        let (api, bridge) = endpoint::start(
            socket,
            handle,
            stream,
            keys.clone(),
            ingest.clone(),
            clock,
            endpoint::WhipOptions {
                jitter: opus_jitter(jitter_ms),
                max_per_address: settings.max_per_address,
                ice_servers: settings.ice_servers,
                talkback_token,
            },
        );
        let returns = bridge.clone();
        Ok(Whip {
            routes: Arc::new(api),
            media,
            close: Box::new(move |close| bridge.close(close)),
            returns: Box::new(move |packet| {
                returns.send_return(packet);
            }),
        })
    }

    /// The Opus jitter buffer of a WHIP host, sized from its live feed's
    /// depth. In-order packets pass at once; a packet that is missing is
    /// waited for up to three quarters of the depth before it is concealed,
    /// so a burst that arrives late (a stalled sender, a congested path)
    /// plays from the feed's buffer instead of being replaced by
    /// concealment and then dropped, while a real loss is concealed before
    /// the feed runs dry.
    fn opus_jitter(jitter_ms: u32) -> OpusJitterConfig {
        let default = OpusJitterConfig::default();
        OpusJitterConfig {
            reorder_ms: (jitter_ms * 3 / 4).max(default.reorder_ms),
            ..default
        }
    }
}

#[cfg(not(feature = "webrtc"))]
mod whip {
    use super::*;
    use crate::ingest::IngestEvent;

    /// Without the `webrtc` feature, asking for WHIP is an error, not
    /// ignored.
    pub(super) async fn start(
        _settings: WhipSettings,
        _talkback_token: Option<String>,
        _stream: &str,
        _keys: &Arc<Keys>,
        _ingest: &mpsc::Sender<IngestEvent>,
        _clock: ProgramClock,
        _jitter_ms: u32,
    ) -> Result<Whip, RunError> {
        Err(RunError::NotBuilt { feature: "webrtc" })
    }
}
