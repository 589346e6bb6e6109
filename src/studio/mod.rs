//! The studio: the broadcast's table of hosts, between ingest and the mixer.
//!
//! [`Studio`] is a pure state machine owned by the pipeline thread. It knows
//! every host of the broadcast: file hosts (`--input`), the hold music
//! (`--hold`) and live hosts (one per configured key, whether connected or
//! not), each one mixer feed. Ingest drivers (RTMP, WHIP) report sessions
//! and decoded audio as [`IngestEvent`]s; the control API sends
//! [`Command`]s. Neither touches the mixer directly, so the program clock
//! never waits on a socket or a lock.
//!
//! # Rules
//! - A live host has one [`LiveFeed`] for the whole broadcast, whatever
//!   its sessions do: a host that drops fades out to silence, and a new
//!   session (a reconnect) is re-anchored in the same feed, so listeners
//!   hear no gap, no discontinuity and no MSN reset.
//! - A new session for a host that already has one replaces it: the old
//!   session is asked to close ([`Studio::take_closes`]) and its late
//!   packets are ignored.
//! - Audio of a session that is not its host's current one is ignored.
//!   A packet the feed cannot take ends its session with the reason.
//! - The hold music is ducked out (over [`DUCK_OUT_FRAMES`]) while any live
//!   host is on air and comes back (over [`DUCK_IN_FRAMES`]) when none is.
//! - A live host's mix-minus return (the program without the host) is
//!   rendered by the mixer while at least one session listens to it
//!   ([`IngestEvent::ReturnOpened`]); [`Studio::listeners`] says who hears
//!   which feed's return. A listener of a host that leaves the broadcast
//!   is closed.
//! - Producer talkback ([`IngestEvent::TalkbackConnected`]) has one cue
//!   feed of its own ([`Mixer::add_cue_feed`]: never in the program),
//!   enabled with [`Studio::enable_talkback`]; [`Studio::talkback_to`] says
//!   whose returns hear it. A new talkback session replaces the current
//!   one.

pub mod inbox;

use std::fmt;

use crate::audio::{FeedConfig, FeedId, FeedState, LiveFeed, LiveFeedConfig, Mixer};
use crate::ingest::{Close, IngestEvent, SessionId};
use crate::time::{ProgramTime, SAMPLE_RATE};

pub use inbox::{CommandReply, ControlRequest};

/// How long a kicked host is kept out: new sessions in this span are closed
/// at once, so a publisher that reconnects by itself (OBS, the host page)
/// does not walk straight back in: 60 s.
pub const KICK_HOLD: u64 = 60 * SAMPLE_RATE as u64;

/// How fast the hold music fades out when a host comes on air: 0.5 s.
pub const DUCK_OUT_FRAMES: u32 = SAMPLE_RATE / 2;
/// How fast the hold music comes back when the last host leaves: 2 s.
pub const DUCK_IN_FRAMES: u32 = 2 * SAMPLE_RATE;

/// What kind of host a mixer feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// A file played from the start of the broadcast.
    File,
    /// The hold music: a file ducked out while a live host is on air.
    Hold,
    /// A publisher that connects over RTMP or WHIP with its key.
    Live,
}

impl HostKind {
    /// The name used in logs and the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::File => "file",
            HostKind::Hold => "hold",
            HostKind::Live => "live",
        }
    }
}

/// A control API request.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Every host with its state and level.
    List,
    /// Sets a host's gain in dB.
    SetGain {
        /// The host's name.
        host: String,
        /// The gain, clamped to the mixer's range.
        db: f32,
    },
    /// Mutes or unmutes a host.
    SetMuted {
        /// The host's name.
        host: String,
        /// Whether to mute.
        muted: bool,
    },
    /// Ends a live host's session and keeps the host out for [`KICK_HOLD`].
    Kick {
        /// The host's name.
        host: String,
    },
    /// Adds a live host while the broadcast runs (its key was added): a
    /// silent feed until a session for it connects. A host of that name
    /// already live is left as it is.
    AddLive {
        /// The host's name.
        host: String,
        /// Its live feed's settings.
        live: LiveFeedConfig,
    },
    /// Points the producer's talkback at one live host (`Some`) or every
    /// host (`None`) without reconnecting it. Answers the hosts that hear
    /// it now.
    Talkback {
        /// The host's name; `None`: every host.
        to: Option<String>,
    },
    /// Ends a live host's session because its key no longer opens it (the
    /// key was removed or changed); with `remove`, the host also leaves the
    /// mix (faded out) and the host list.
    Revoke {
        /// The host's name.
        host: String,
        /// Whether the host itself goes too.
        remove: bool,
    },
}

/// Why a [`Command`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No host has that name.
    #[error("no host named {0:?}")]
    UnknownHost(String),
    /// Only live hosts have sessions to end.
    #[error("host {0:?} is not a live host")]
    NotLive(String),
    /// The live host has no session.
    #[error("host {0:?} is not connected")]
    NotConnected(String),
    /// A live host could not be added.
    #[error("host {host:?} cannot be added: {reason}")]
    NotAdded {
        /// The host's name.
        host: String,
        /// Why.
        reason: String,
    },
}

/// A host as the control API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostInfo {
    /// The host's name.
    pub name: String,
    /// What kind of host.
    pub kind: HostKind,
    /// `playing` (file hosts), `ducked` (hold music under a host),
    /// `offline`, `connected` (buffering) or `on-air` (live hosts).
    pub state: &'static str,
    /// The ingest protocol of the current session.
    pub protocol: Option<&'static str>,
    /// The publisher's address.
    pub peer: Option<String>,
    /// Configured gain, dB.
    pub gain_db: f32,
    /// Whether muted.
    pub muted: bool,
    /// RMS over the last mixed block, before gain and mute, dBFS
    /// (`-inf` for silence).
    pub rms_dbfs: f32,
    /// Peak over the last mixed block, dBFS.
    pub peak_dbfs: f32,
    /// Live hosts: audio buffered ahead of the program, ms.
    pub depth_ms: Option<u64>,
    /// Live hosts: times the buffer ran dry while playing.
    pub underruns: Option<u64>,
    /// Live hosts: sessions accepted so far.
    pub sessions: Option<u64>,
    /// Live hosts: the resampling correction absorbing the host's clock
    /// drift, ppm (positive: the host runs fast).
    pub drift_ppm: Option<f64>,
    /// Live hosts: times a burst overflowed the buffer and old audio was
    /// dropped.
    pub overruns: Option<u64>,
    /// Live hosts: sessions listening to the host's return feed.
    pub returns: Option<usize>,
    /// Live hosts: whether the producer's talkback is in the host's return
    /// now.
    pub talkback: Option<bool>,
}

/// A session listening to a host's return feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// The listening session.
    pub session: SessionId,
    /// The mixer feed of the host whose return it hears.
    pub feed: FeedId,
}

struct Live {
    feed: LiveFeed,
    session: Option<Session>,
    sessions: u64,
}

struct Session {
    id: SessionId,
    protocol: &'static str,
    peer: String,
}

struct Host {
    name: String,
    kind: HostKind,
    feed: FeedId,
    live: Option<Live>,
}

/// The host table (see the module docs).
pub struct Studio {
    hosts: Vec<Host>,
    closes: Vec<Close>,
    /// Whether the hold music is ducked now.
    ducked: bool,
    /// Program time up to which the studio has pulled.
    now: ProgramTime,
    /// Kicked hosts and the program time until which they are kept out.
    kicked: Vec<(String, ProgramTime)>,
    scratch: Vec<f32>,
    /// Sessions listening to returns, in the order they opened.
    listeners: Vec<Listener>,
    /// The producer's talkback, once enabled.
    talkback: Option<Talkback>,
}

/// The producer's talkback feed and its current session.
struct Talkback {
    /// The mixer's cue feed.
    feed: FeedId,
    live: LiveFeed,
    /// The current session and the feed of the host it talks to (`None`:
    /// every host).
    session: Option<(SessionId, Option<FeedId>)>,
}

impl fmt::Debug for Studio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Studio")
            .field("hosts", &self.hosts.len())
            .field("ducked", &self.ducked)
            .finish()
    }
}

impl Default for Studio {
    fn default() -> Self {
        Self::new()
    }
}

impl Studio {
    /// An empty studio.
    pub fn new() -> Self {
        Self {
            hosts: Vec::new(),
            closes: Vec::new(),
            ducked: false,
            now: ProgramTime::ZERO,
            kicked: Vec::new(),
            scratch: Vec::new(),
            listeners: Vec::new(),
            talkback: None,
        }
    }

    /// Registers a file host (or the hold music) already added to the mixer
    /// as `feed`.
    pub fn add_file(&mut self, name: &str, kind: HostKind, feed: FeedId) {
        self.hosts.push(Host {
            name: name.to_owned(),
            kind,
            feed,
            live: None,
        });
    }

    /// Adds a live host: a mixer feed and a [`LiveFeed`] built from `live`
    /// starting at the mixer's clock. Fails on an inconsistent
    /// [`LiveFeedConfig`] or a duplicate name.
    pub fn add_live(
        &mut self,
        mixer: &mut Mixer,
        cfg: FeedConfig,
        live: LiveFeedConfig,
    ) -> Result<(), String> {
        if self.hosts.iter().any(|h| h.name == cfg.name) {
            return Err(format!("two hosts are named {:?}", cfg.name));
        }
        let feed = live.build(mixer.clock()).map_err(|e| e.to_string())?;
        let name = cfg.name.clone();
        let id = mixer.add_feed(cfg);
        self.hosts.push(Host {
            name,
            kind: HostKind::Live,
            feed: id,
            live: Some(Live {
                feed,
                session: None,
                sessions: 0,
            }),
        });
        Ok(())
    }

    /// Enables producer talkback: a cue feed built from `live` (its jitter
    /// buffer), silent until a talkback session connects. Once only.
    pub fn enable_talkback(
        &mut self,
        mixer: &mut Mixer,
        live: LiveFeedConfig,
    ) -> Result<(), String> {
        if self.talkback.is_some() {
            return Ok(());
        }
        let feed = live.build(mixer.clock()).map_err(|e| e.to_string())?;
        let id = mixer.add_cue_feed(FeedConfig {
            name: "talkback".into(),
            gain_db: 0.0,
            muted: false,
        });
        self.talkback = Some(Talkback {
            feed: id,
            live: feed,
            session: None,
        });
        Ok(())
    }

    /// Whose returns hear the talkback now: `Some(None)` every host's,
    /// `Some(Some(feed))` that feed's host's, `None` nobody's (no talkback
    /// session).
    pub fn talkback_to(&self) -> Option<Option<FeedId>> {
        self.talkback.as_ref()?.session.map(|(_, to)| to)
    }

    fn talkback_connected(&mut self, session: SessionId, to: Option<String>, peer: String) {
        let to_feed = match &to {
            None => None,
            Some(name) => match self
                .hosts
                .iter()
                .find(|h| &h.name == name && h.live.is_some())
            {
                Some(host) => Some(host.feed),
                None => {
                    self.closes.push(Close {
                        session,
                        reason: format!("no live host named {name:?} to talk to"),
                    });
                    return;
                }
            },
        };
        let Some(talkback) = &mut self.talkback else {
            self.closes.push(Close {
                session,
                reason: "talkback is not enabled in this broadcast".into(),
            });
            return;
        };
        if let Some((old, _)) = talkback.session.take() {
            self.closes.push(Close {
                session: old,
                reason: format!("replaced by {session}, the producer's new talkback"),
            });
        }
        let to_name = to.as_deref().unwrap_or("every host");
        tracing::info!(%session, to = to_name, peer, "talkback connected");
        talkback.session = Some((session, to_feed));
    }

    /// Whether the studio has live hosts (a broadcast with live hosts never
    /// ends by itself).
    pub fn has_live_hosts(&self) -> bool {
        self.hosts.iter().any(|h| h.live.is_some())
    }

    /// Takes an ingest event (see the module docs for the rules).
    pub fn ingest(&mut self, event: IngestEvent) {
        match event {
            IngestEvent::Connected {
                host,
                session,
                protocol,
                peer,
            } => self.connect(&host, session, protocol, peer),
            IngestEvent::Audio {
                session,
                host_ts_ms,
                audio,
                arrival,
            } => {
                if let Some(talkback) = &mut self.talkback
                    && talkback.session.is_some_and(|(id, _)| id == session)
                {
                    if let Err(error) = talkback.live.push(host_ts_ms, &audio, arrival) {
                        tracing::warn!(%session, %error, "ending the talkback: its audio cannot be mixed");
                        talkback.session = None;
                        self.closes.push(Close {
                            session,
                            reason: error.to_string(),
                        });
                    }
                    return;
                }
                let Some(host) = self.host_of_session(session) else {
                    return;
                };
                let Some(live) = &mut host.live else { return };
                if let Err(error) = live.feed.push(host_ts_ms, &audio, arrival) {
                    tracing::warn!(host = host.name, %session, %error, "ending the session: its audio cannot be mixed");
                    live.session = None;
                    self.closes.push(Close {
                        session,
                        reason: error.to_string(),
                    });
                }
            }
            IngestEvent::Disconnected { session, reason } => {
                if let Some(talkback) = &mut self.talkback
                    && talkback.session.is_some_and(|(id, _)| id == session)
                {
                    tracing::info!(%session, reason, "talkback ended");
                    talkback.session = None;
                }
                if let Some(host) = self.host_of_session(session) {
                    tracing::info!(host = host.name, %session, reason, "host left");
                    if let Some(live) = &mut host.live {
                        live.session = None;
                    }
                }
            }
            IngestEvent::ReturnOpened { host, listener } => self.listen(&host, listener),
            IngestEvent::TalkbackConnected { session, to, peer } => {
                self.talkback_connected(session, to, peer)
            }
            IngestEvent::ReturnClosed { listener } => {
                self.listeners.retain(|l| l.session != listener);
            }
        }
    }

    fn listen(&mut self, name: &str, session: SessionId) {
        let Some(host) = self
            .hosts
            .iter()
            .find(|h| h.name == name && h.live.is_some())
        else {
            self.closes.push(Close {
                session,
                reason: format!("no live host named {name:?} to return audio to"),
            });
            return;
        };
        if !self.listeners.iter().any(|l| l.session == session) {
            tracing::info!(host = name, %session, "return feed opened");
            self.listeners.push(Listener {
                session,
                feed: host.feed,
            });
        }
    }

    /// Sessions listening to hosts' returns: the mixer renders the return
    /// of each feed named here (from the next [`pull`](Self::pull) on).
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    fn connect(&mut self, name: &str, session: SessionId, protocol: &'static str, peer: String) {
        let Some(host) = self.hosts.iter_mut().find(|h| h.name == name) else {
            self.closes.push(Close {
                session,
                reason: format!("no live host named {name:?}"),
            });
            return;
        };
        let Some(live) = &mut host.live else {
            self.closes.push(Close {
                session,
                reason: format!("host {name:?} is not a live host"),
            });
            return;
        };
        self.kicked.retain(|(_, until)| *until > self.now);
        if let Some((_, until)) = self.kicked.iter().find(|(host, _)| host == name) {
            let wait_s = until.since(self.now).div_ceil(u64::from(SAMPLE_RATE));
            tracing::info!(host = name, %session, wait_s, "kicked host refused");
            self.closes.push(Close {
                session,
                reason: format!("kicked by the operator: may publish again in {wait_s} s"),
            });
            return;
        }
        if let Some(old) = live.session.take() {
            tracing::info!(host = name, old = %old.id, new = %session, "host reconnected: replacing its session");
            self.closes.push(Close {
                session: old.id,
                reason: format!("replaced by {session} of the same host"),
            });
        }
        tracing::info!(host = name, %session, protocol, peer, "host connected");
        live.sessions += 1;
        live.session = Some(Session {
            id: session,
            protocol,
            peer,
        });
    }

    fn host_of_session(&mut self, session: SessionId) -> Option<&mut Host> {
        self.hosts.iter_mut().find(|h| {
            h.live
                .as_ref()
                .and_then(|l| l.session.as_ref())
                .is_some_and(|s| s.id == session)
        })
    }

    /// Sessions to close, taken once: replaced sessions, kicked hosts,
    /// unknown hosts and sessions whose audio was refused.
    pub fn take_closes(&mut self) -> Vec<Close> {
        std::mem::take(&mut self.closes)
    }

    /// Queues every live host's audio on the mixer up to program time
    /// `until` (call before mixing up to it) and ducks the hold music.
    pub fn pull(&mut self, until: ProgramTime, mixer: &mut Mixer) {
        self.now = self.now.max(until);
        let mut on_air = false;
        for host in &mut self.hosts {
            if let Some(live) = &mut host.live {
                live.feed
                    .pull_into(until, mixer, host.feed, &mut self.scratch);
                on_air |= live.feed.stats().state == FeedState::Playing;
                let heard = self.listeners.iter().any(|l| l.feed == host.feed);
                mixer.set_return(host.feed, heard);
            }
        }
        if let Some(talkback) = &mut self.talkback {
            talkback
                .live
                .pull_into(until, mixer, talkback.feed, &mut self.scratch);
        }
        if on_air != self.ducked {
            self.ducked = on_air;
            let (db, ramp) = if on_air {
                (crate::audio::mix::MIN_GAIN_DB, DUCK_OUT_FRAMES)
            } else {
                (0.0, DUCK_IN_FRAMES)
            };
            for host in self.hosts.iter().filter(|h| h.kind == HostKind::Hold) {
                mixer.set_duck_db(host.feed, db, ramp);
            }
        }
    }

    /// Carries out a control command.
    pub fn command(
        &mut self,
        mixer: &mut Mixer,
        command: Command,
    ) -> Result<Vec<HostInfo>, CommandError> {
        let name = match &command {
            Command::List => return Ok(self.hosts(mixer)),
            Command::Talkback { to } => return self.retarget_talkback(mixer, to.as_deref()),
            Command::AddLive { host, live } => return self.add_live_running(mixer, host, *live),
            Command::SetGain { host, .. }
            | Command::SetMuted { host, .. }
            | Command::Kick { host }
            | Command::Revoke { host, .. } => host.clone(),
        };
        let index = self
            .hosts
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| CommandError::UnknownHost(name.clone()))?;
        let feed = self.hosts[index].feed;
        match command {
            Command::List | Command::AddLive { .. } | Command::Talkback { .. } => {}
            Command::Revoke { remove, .. } => {
                let live = self.hosts[index]
                    .live
                    .as_mut()
                    .ok_or_else(|| CommandError::NotLive(name.clone()))?;
                if let Some(session) = live.session.take() {
                    tracing::info!(host = name, session = %session.id, "host's key revoked: session ended");
                    self.closes.push(Close {
                        session: session.id,
                        reason: "the host's key was revoked".into(),
                    });
                }
                if remove {
                    let info = self.info(&self.hosts[index], mixer);
                    mixer.remove_feed(feed);
                    self.hosts.remove(index);
                    let (gone, kept) = self.listeners.iter().partition(|l| l.feed == feed);
                    self.listeners = kept;
                    self.closes
                        .extend(gone.into_iter().map(|l: Listener| Close {
                            session: l.session,
                            reason: "the host's key was revoked".into(),
                        }));
                    tracing::info!(host = name, "live host removed");
                    return Ok(vec![info]);
                }
            }
            Command::SetGain { db, .. } => mixer.set_gain_db(feed, db),
            Command::SetMuted { muted, .. } => mixer.set_muted(feed, muted),
            Command::Kick { .. } => {
                let live = self.hosts[index]
                    .live
                    .as_mut()
                    .ok_or_else(|| CommandError::NotLive(name.clone()))?;
                let session = live
                    .session
                    .take()
                    .ok_or_else(|| CommandError::NotConnected(name.clone()))?;
                tracing::info!(host = name, session = %session.id, "host kicked");
                self.kicked.push((name.clone(), self.now.plus(KICK_HOLD)));
                self.closes.push(Close {
                    session: session.id,
                    reason: "kicked by the operator".into(),
                });
            }
        }
        Ok(vec![self.info(&self.hosts[index], mixer)])
    }

    /// [`Command::Talkback`]: the hosts that hear the talkback now.
    fn retarget_talkback(
        &mut self,
        mixer: &Mixer,
        to: Option<&str>,
    ) -> Result<Vec<HostInfo>, CommandError> {
        let feed = match to {
            None => None,
            Some(name) => {
                let host = self
                    .hosts
                    .iter()
                    .find(|h| h.name == name)
                    .ok_or_else(|| CommandError::UnknownHost(name.to_owned()))?;
                if host.live.is_none() {
                    return Err(CommandError::NotLive(name.to_owned()));
                }
                Some(host.feed)
            }
        };
        let session = self
            .talkback
            .as_mut()
            .and_then(|t| t.session.as_mut())
            .ok_or_else(|| CommandError::NotConnected("talkback".into()))?;
        session.1 = feed;
        tracing::info!(to = to.unwrap_or("every host"), "talkback retargeted");
        Ok(self
            .hosts(mixer)
            .into_iter()
            .filter(|h| h.talkback == Some(true))
            .collect())
    }

    /// [`Command::AddLive`]: the new host, or the one already there.
    fn add_live_running(
        &mut self,
        mixer: &mut Mixer,
        name: &str,
        live: LiveFeedConfig,
    ) -> Result<Vec<HostInfo>, CommandError> {
        if !self.hosts.iter().any(|h| h.name == name) {
            let feed = FeedConfig {
                name: name.to_owned(),
                gain_db: 0.0,
                muted: false,
            };
            self.add_live(mixer, feed, live)
                .map_err(|reason| CommandError::NotAdded {
                    host: name.to_owned(),
                    reason,
                })?;
            tracing::info!(host = name, "live host added");
        }
        let host = self
            .hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| CommandError::UnknownHost(name.to_owned()))?;
        Ok(vec![self.info(host, mixer)])
    }

    /// Every host, in the order added.
    pub fn hosts(&self, mixer: &Mixer) -> Vec<HostInfo> {
        self.hosts.iter().map(|h| self.info(h, mixer)).collect()
    }

    fn info(&self, host: &Host, mixer: &Mixer) -> HostInfo {
        let cfg = mixer.feed_config(host.feed);
        let level = mixer.level(host.feed).unwrap_or_default();
        let stats = host.live.as_ref().map(|l| l.feed.stats());
        let session = host.live.as_ref().and_then(|l| l.session.as_ref());
        let state = match (host.kind, stats) {
            (HostKind::Live, Some(s)) if s.state == FeedState::Playing => "on-air",
            (HostKind::Live, _) if session.is_some() => "connected",
            (HostKind::Live, _) => "offline",
            (HostKind::Hold, _) if self.ducked => "ducked",
            _ => "playing",
        };
        HostInfo {
            name: host.name.clone(),
            kind: host.kind,
            state,
            protocol: session.map(|s| s.protocol),
            peer: session.map(|s| s.peer.clone()),
            gain_db: cfg.map_or(0.0, |c| c.gain_db),
            muted: cfg.is_some_and(|c| c.muted),
            rms_dbfs: level.rms_dbfs(),
            peak_dbfs: level.peak_dbfs(),
            depth_ms: stats.map(|s| s.depth_ms()),
            underruns: stats.map(|s| s.underruns),
            sessions: host.live.as_ref().map(|l| l.sessions),
            drift_ppm: stats.map(|s| s.correction_ppm),
            overruns: stats.map(|s| s.overruns),
            returns: host.live.as_ref().map(|_| {
                self.listeners
                    .iter()
                    .filter(|l| l.feed == host.feed)
                    .count()
            }),
            talkback: host.live.as_ref().map(|_| {
                self.talkback_to()
                    .is_some_and(|to| to.is_none_or(|feed| feed == host.feed))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::MixerConfig;

    fn live(name: &str) -> FeedConfig {
        FeedConfig {
            name: name.into(),
            gain_db: 0.0,
            muted: false,
        }
    }

    /// A studio with live hosts alice and bob and talkback enabled.
    fn studio() -> (Studio, Mixer) {
        let mut mixer = Mixer::new(MixerConfig::default());
        let mut studio = Studio::new();
        for name in ["alice", "bob"] {
            studio
                .add_live(&mut mixer, live(name), LiveFeedConfig::default())
                .unwrap();
        }
        studio
            .enable_talkback(&mut mixer, LiveFeedConfig::default())
            .unwrap();
        (studio, mixer)
    }

    fn closed(studio: &mut Studio) -> Vec<SessionId> {
        studio
            .take_closes()
            .into_iter()
            .map(|c| c.session)
            .collect()
    }

    #[test]
    fn listeners_open_and_close_and_leave_with_their_host() {
        let (mut studio, mut mixer) = studio();
        let (a, b, stranger) = (SessionId(1), SessionId(2), SessionId(3));
        for (host, listener) in [("alice", a), ("bob", b), ("nobody", stranger)] {
            studio.ingest(IngestEvent::ReturnOpened {
                host: host.into(),
                listener,
            });
        }
        assert_eq!(closed(&mut studio), [stranger], "no such host");
        assert_eq!(studio.listeners().len(), 2);
        studio.pull(ProgramTime::ZERO.plus(960), &mut mixer);
        let returns = |s: &Studio| {
            s.hosts(&mixer)
                .iter()
                .map(|h| h.returns)
                .collect::<Vec<_>>()
        };
        assert_eq!(returns(&studio), [Some(1), Some(1)]);
        studio.ingest(IngestEvent::ReturnClosed { listener: a });
        assert_eq!(returns(&studio), [Some(0), Some(1)]);
        let revoke = Command::Revoke {
            host: "bob".into(),
            remove: true,
        };
        studio.command(&mut mixer, revoke).unwrap();
        assert_eq!(closed(&mut studio), [b], "bob's listener goes with him");
        assert!(studio.listeners().is_empty());
    }

    #[test]
    fn talkback_goes_to_its_host_is_replaced_and_can_be_turned() {
        let (mut studio, mut mixer) = studio();
        assert_eq!(studio.talkback_to(), None);
        let retarget = |to: Option<&str>| Command::Talkback {
            to: to.map(str::to_owned),
        };
        assert_eq!(
            studio.command(&mut mixer, retarget(None)),
            Err(CommandError::NotConnected("talkback".into()))
        );
        let talk = |session, to: Option<&str>| IngestEvent::TalkbackConnected {
            session,
            to: to.map(str::to_owned),
            peer: "127.0.0.1:9".into(),
        };
        studio.ingest(talk(SessionId(10), Some("nobody")));
        assert_eq!(closed(&mut studio), [SessionId(10)]);
        studio.ingest(talk(SessionId(11), Some("bob")));
        let bob = studio.hosts[1].feed;
        assert_eq!(studio.talkback_to(), Some(Some(bob)));
        let hearing = |s: &Studio| {
            s.hosts(&mixer)
                .iter()
                .map(|h| h.talkback)
                .collect::<Vec<_>>()
        };
        assert_eq!(hearing(&studio), [Some(false), Some(true)]);
        // A new talkback replaces the current one.
        studio.ingest(talk(SessionId(12), None));
        assert_eq!(closed(&mut studio), [SessionId(11)]);
        assert_eq!(hearing(&studio), [Some(true), Some(true)]);
        let now = studio.command(&mut mixer, retarget(Some("alice"))).unwrap();
        assert_eq!(
            now.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["alice"]
        );
        assert_eq!(
            studio.command(&mut mixer, retarget(Some("carol"))),
            Err(CommandError::UnknownHost("carol".into()))
        );
        studio.ingest(IngestEvent::Disconnected {
            session: SessionId(12),
            reason: "gone".into(),
        });
        assert_eq!(studio.talkback_to(), None);
    }
}
