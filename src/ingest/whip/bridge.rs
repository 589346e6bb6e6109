//! The bridge from WebRTC sessions to the studio: one task that owns the
//! [`RtcEndpoint`] and turns its events into [`IngestEvent`]s.
//!
//! it reports the host `Connected` to the studio; each Opus RTP packet goes
//! into the session's [`OpusJitter`], which is pulled every
//! [`PULL_INTERVAL`] and its frames sent to the studio as the host's audio,
//! stamped on the [`ProgramClock`]; a closed session is `Disconnected`. A
//! WHIP host is a live host like an RTMP host: same keys, same control API,
//! same replacement rule (the studio asks [`WhipIngest::close`] to end a
//! replaced or kicked session).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::endpoint::{Kind, Shared};
use super::jitter::{Frame, OpusJitter, OpusJitterConfig};
use super::rtc::{RtcEndpoint, RtcEvent};
use crate::ingest::{Close, IngestEvent, ReturnPacket, SessionId};
use crate::time::ProgramClock;

/// How often each session's jitter buffer is pulled: half an Opus frame,
/// so a frame waits at most 10 ms once it is due.
pub const PULL_INTERVAL: Duration = Duration::from_millis(10);

/// Closes WHIP sessions on behalf of the studio.
#[derive(Clone)]
pub struct WhipIngest {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for WhipIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhipIngest").finish_non_exhaustive()
    }
}

impl WhipIngest {
    /// Ends the WHIP session carrying `close.session`, if there is one.
    /// Returns whether one was found.
    pub fn close(&self, close: &Close) -> bool {
        let rtc = self.shared.table().rtc_of_studio(close.session);
        match rtc {
            Some(rtc) => self.shared.closes.send((rtc, close.reason.clone())).is_ok(),
            None => false,
        }
    }

    /// Sends a return feed packet to the WHIP session that listens, if it
    /// is still there. Never waits; returns whether the packet went.
    pub fn send_return(&self, packet: ReturnPacket) -> bool {
        let rtc = self.shared.table().rtc_of_studio(packet.listener);
        rtc.is_some_and(|rtc| {
            self.shared
                .rtc
                .send_opus(rtc, packet.rtp_ts, packet.payload)
        })
    }
}

/// A live session's media state.
struct Live {
    studio: SessionId,
    jitter: OpusJitter,
    /// Whether the session listens to its host's return feed.
    listens: bool,
}

pub(super) struct Bridge {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<IngestEvent>,
    clock: ProgramClock,
    jitter: OpusJitterConfig,
    /// Connected sessions by WebRTC id.
    sessions: HashMap<u64, Live>,
    /// Connected return-only (WHEP) sessions: WebRTC id to studio id.
    listening: HashMap<u64, SessionId>,
    frames: Vec<Frame>,
}

impl Bridge {
    /// A bridge that hands `shared`'s sessions to `inbox`.
    pub(super) fn new(
        shared: Arc<Shared>,
        inbox: mpsc::Sender<IngestEvent>,
        clock: ProgramClock,
        jitter: OpusJitterConfig,
    ) -> Self {
        Self {
            shared,
            inbox,
            clock,
            jitter,
            sessions: HashMap::new(),
            listening: HashMap::new(),
            frames: Vec::new(),
        }
    }

    pub(super) async fn run(
        mut self,
        mut endpoint: RtcEndpoint,
        mut closes: mpsc::UnboundedReceiver<(u64, String)>,
    ) {
        let mut pull = tokio::time::interval(PULL_INTERVAL);
        pull.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Biased: every packet that has arrived is in its jitter buffer
            // before the next pull, so a task that was not scheduled for a
            // while never conceals audio that is already here.
            let sent = tokio::select! {
                biased;
                event = endpoint.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => return,
                },
                Some((rtc, reason)) = closes.recv() => {
                    self.shared.rtc.close(rtc, reason).await;
                    true
                }
                _ = pull.tick() => self.pull().await,
            };
            if !sent {
                // The broadcast is over.
                let _ = endpoint.shutdown().await;
                return;
            }
        }
    }

    async fn on_event(&mut self, event: RtcEvent) -> bool {
        match event {
            RtcEvent::Connected { session, peer } => {
                let (host, studio, fec, listens, kind, talkback_to) = {
                    let table = self.shared.table();
                    let Some(r) = table.by_rtc.get(&session) else {
                        return true;
                    };
                    let o = &r.offer;
                    (
                        r.host.clone(),
                        r.studio,
                        o.inband_fec,
                        o.wants_return && r.kind == Kind::Host,
                        r.kind,
                        r.talkback_to.clone(),
                    )
                };
                if kind == Kind::Return {
                    // Not a publisher: the host only hears its return.
                    self.listening.insert(session, studio);
                    let opened = IngestEvent::ReturnOpened {
                        host,
                        listener: studio,
                    };
                    return send(&self.inbox, opened).await;
                }
                let jitter = match (OpusJitterConfig { fec, ..self.jitter }).build() {
                    Ok(jitter) => jitter,
                    Err(error) => {
                        tracing::error!(%error, "WHIP jitter buffer");
                        self.shared.rtc.close(session, error.to_string()).await;
                        return true;
                    }
                };
                self.sessions.insert(
                    session,
                    Live {
                        studio,
                        jitter,
                        listens,
                    },
                );
                let connected = match kind {
                    Kind::Talkback => IngestEvent::TalkbackConnected {
                        session: studio,
                        to: talkback_to,
                        peer: peer.to_string(),
                    },
                    _ => IngestEvent::Connected {
                        host: host.clone(),
                        session: studio,
                        protocol: "whip",
                        peer: peer.to_string(),
                    },
                };
                // A publisher that offered sendrecv hears its return on the
                // same m-line.
                send(&self.inbox, connected).await
                    && (!listens
                        || send(
                            &self.inbox,
                            IngestEvent::ReturnOpened {
                                host,
                                listener: studio,
                            },
                        )
                        .await)
            }
            RtcEvent::Opus {
                session,
                seq,
                rtp_ts,
                payload,
                arrival,
            } => {
                if let Some(live) = self.sessions.get_mut(&session) {
                    live.jitter
                        .push(seq, rtp_ts, &payload, self.clock.at(arrival));
                }
                true
            }
            RtcEvent::Closed { session, reason } => {
                let resource = self.shared.table().by_rtc.remove(&session);
                if let Some(listener) = self.listening.remove(&session) {
                    tracing::info!(session, reason, "WHEP return session ended");
                    return send(&self.inbox, IngestEvent::ReturnClosed { listener }).await;
                }
                let live = self.sessions.remove(&session);
                if let Some(live) = &live {
                    let stats = live.jitter.stats();
                    tracing::info!(
                        session,
                        received = stats.received,
                        lost = stats.lost,
                        fec = stats.concealed_fec,
                        plc = stats.concealed_plc,
                        late = stats.late,
                        reordered = stats.reordered,
                        silence_gaps = stats.silence_gaps,
                        "WHIP session's RTP"
                    );
                }
                match (resource, live) {
                    (Some(r), Some(live)) => {
                        let closed = IngestEvent::ReturnClosed { listener: r.studio };
                        (!live.listens || send(&self.inbox, closed).await)
                            && send(
                                &self.inbox,
                                IngestEvent::Disconnected {
                                    session: r.studio,
                                    reason,
                                },
                            )
                            .await
                    }
                    (Some(r), None) => {
                        tracing::info!(
                            host = r.host,
                            reason,
                            "WHIP session ended before it connected"
                        );
                        true
                    }
                    _ => true,
                }
            }
        }
    }

    /// Sends every frame that is due to the studio; ends sessions whose
    /// audio cannot be decoded.
    async fn pull(&mut self) -> bool {
        let now = self.clock.now();
        let mut failed = Vec::new();
        let mut events = Vec::new();
        for (rtc, live) in &mut self.sessions {
            self.frames.clear();
            if let Err(error) = live.jitter.pull(now, &mut self.frames) {
                failed.push((*rtc, error.to_string()));
            }
            for frame in self.frames.drain(..) {
                events.push(IngestEvent::Audio {
                    session: live.studio,
                    host_ts_ms: frame.host_ts_ms,
                    audio: frame.audio,
                    arrival: now,
                });
            }
        }
        for (rtc, reason) in failed {
            tracing::warn!(session = rtc, reason, "ending the WHIP session");
            self.shared.rtc.close(rtc, reason).await;
        }
        for event in events {
            if !send(&self.inbox, event).await {
                return false;
            }
        }
        true
    }
}

/// Hands an event to the studio; false once the broadcast is over.
async fn send(inbox: &mpsc::Sender<IngestEvent>, event: IngestEvent) -> bool {
    inbox.send(event).await.is_ok()
}
