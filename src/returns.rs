//! Mix-minus return feeds, encoded: the stage after the mixer that turns
//! the return of every heard host into 20 ms Opus packets for the sessions
//! that listen to it.
//!
//! # Rules
//! - A return is cut into 20 ms frames from the first block it is heard
//!   in; a packet's RTP timestamp is the program time of its first sample
//!   (48 kHz, RFC 7587 §4.1), the same for every return, so a listener
//!   whose return moves from the shared encode to its own (or back) keeps
//!   one continuous timeline.
//! - Work is shared where returns are identical: a host that contributed
//!   nothing to a frame (offline, buffering, muted, faded out) hears the
//!   whole program, encoded once for all such hosts. Only hosts that were
//!   in the program during the frame cost an encode of their own.
//! - Producer talkback ([`Talkback`]) is added to the returns of the hosts
//!   it is for, never to the program; a host that hears talkback is encoded
//!   on its own for that frame.
//! - Encoding never fails the broadcast: a frame that cannot be encoded is
//!   logged and not sent (listeners conceal it as a lost packet).
//! - The encoder runs in libopus's low-delay mode (CELT only, 2.5 ms of
//!   lookahead instead of 6.5 ms): a return is for conversation, and every
//!   millisecond counts towards ITU-T G.114's 150 ms.

use bytes::Bytes;

use crate::audio::{FeedId, MixReturn, Mixer};
use crate::ingest::ReturnPacket;
use crate::studio::Listener;
use crate::time::{ProgramTime, SAMPLE_RATE};

/// Stereo frames per return packet: 20 ms at 48 kHz.
pub const RETURN_FRAME: usize = 960;

/// Interleaved channels of a return.
const CHANNELS: usize = 2;

/// Largest Opus packet (RFC 6716 §3.2.1).
const MAX_PACKET: usize = 1500;

/// Settings of the return encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnConfig {
    /// Opus bitrate of each return, bits per second. Default 64 kb/s:
    /// transparent for speech and hold music in stereo CELT.
    pub bitrate: u32,
    /// libopus complexity 0..=10. Default 5, against the program's 10: a
    /// return is monitoring audio, heard once by one host and never
    /// stored, and a broadcast runs one encoder per speaking host.
    pub complexity: u8,
}

impl Default for ReturnConfig {
    fn default() -> Self {
        Self {
            bitrate: 64_000,
            complexity: 5,
        }
    }
}

/// Producer talkback: audio added to some hosts' returns and to nothing
/// else, for one mixed block.
#[derive(Debug, Clone, Copy)]
pub struct Talkback<'a> {
    /// Interleaved stereo, as many frames as the block.
    pub audio: &'a [f32],
    /// The feeds whose returns hear it; `None`: every return.
    pub to: Option<FeedId>,
}

impl Talkback<'_> {
    fn reaches(&self, feed: FeedId) -> bool {
        self.to.is_none_or(|to| to == feed)
    }
}

/// One encoder and the frame it is filling.
struct Track {
    encoder: Option<opus::Encoder>,
    pcm: Vec<f32>,
}

impl Track {
    fn new(cfg: ReturnConfig) -> Self {
        let encoder = match open(cfg) {
            Ok(encoder) => Some(encoder),
            Err(error) => {
                tracing::error!(%error, "cannot open a return encoder: that return is not sent");
                None
            }
        };
        Self {
            encoder,
            pcm: vec![0.0; RETURN_FRAME * CHANNELS],
        }
    }

    /// Encodes the full frame.
    fn encode(&mut self, scratch: &mut [u8]) -> Option<Bytes> {
        let encoder = self.encoder.as_mut()?;
        match encoder.encode_float(&self.pcm, scratch) {
            Ok(n) => Some(Bytes::copy_from_slice(&scratch[..n])),
            Err(error) => {
                tracing::warn!(%error, "return frame not encoded");
                None
            }
        }
    }
}

/// A heard host's own return.
struct Own {
    feed: FeedId,
    track: Track,
    /// Whether the frame being filled differs from the program (the host
    /// contributed to it, or it carries talkback).
    differs: bool,
}

/// The return encoders of a broadcast (see the module docs).
pub struct Returns {
    cfg: ReturnConfig,
    program: Track,
    own: Vec<Own>,
    /// Frames of the current packet filled so far.
    filled: usize,
    /// Program time of the current packet's first frame.
    frame_start: ProgramTime,
    packets: Vec<ReturnPacket>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Returns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returns")
            .field("own", &self.own.len())
            .field("filled", &self.filled)
            .finish()
    }
}

/// Opens one return encoder.
fn open(cfg: ReturnConfig) -> Result<opus::Encoder, opus::Error> {
    let mut encoder = opus::Encoder::new(
        SAMPLE_RATE,
        opus::Channels::Stereo,
        opus::Application::LowDelay,
    )?;
    encoder.set_bitrate(opus::Bitrate::Bits(
        i32::try_from(cfg.bitrate).unwrap_or(i32::MAX),
    ))?;
    encoder.set_complexity(i32::from(cfg.complexity.min(10)))?;
    Ok(encoder)
}

impl Returns {
    /// Return encoders with `cfg`; fails on settings libopus refuses.
    pub fn new(cfg: ReturnConfig) -> Result<Self, String> {
        open(cfg).map_err(|e| format!("return encoder: {e}"))?;
        Ok(Self {
            cfg,
            program: Track::new(cfg),
            own: Vec::new(),
            filled: 0,
            frame_start: ProgramTime::ZERO,
            packets: Vec::new(),
            scratch: vec![0; MAX_PACKET],
        })
    }

    /// Takes the block the mixer just rendered (`program`, limited,
    /// starting at program time `start`) and the returns it rendered with
    /// it; every packet completed is queued for [`drain`](Self::drain).
    pub fn push(
        &mut self,
        mixer: &Mixer,
        program: &[f32],
        start: ProgramTime,
        listeners: &[Listener],
        talkback: Option<Talkback<'_>>,
    ) {
        if listeners.is_empty() {
            // Nobody listens: the next listener starts a fresh frame.
            self.own.clear();
            self.filled = 0;
            return;
        }
        let cfg = self.cfg;
        self.own
            .retain(|own| listeners.iter().any(|l| l.feed == own.feed));
        for l in listeners {
            if !self.own.iter().any(|own| own.feed == l.feed) {
                self.own.push(Own {
                    feed: l.feed,
                    track: Track::new(cfg),
                    differs: false,
                });
            }
        }
        let frames = program.len() / CHANNELS;
        let mut pos = 0;
        while pos < frames {
            if self.filled == 0 {
                self.frame_start = start.plus(pos as u64);
            }
            let take = (RETURN_FRAME - self.filled).min(frames - pos);
            let from = pos * CHANNELS..(pos + take) * CHANNELS;
            let to = self.filled * CHANNELS..(self.filled + take) * CHANNELS;
            self.program.pcm[to.clone()].copy_from_slice(&program[from.clone()]);
            for own in &mut self.own {
                let (audio, differs) = match mixer.mix_return(own.feed) {
                    Some(MixReturn::Own(audio)) => (audio.get(from.clone()), true),
                    _ => (None, false),
                };
                let pcm = &mut own.track.pcm[to.clone()];
                pcm.copy_from_slice(audio.unwrap_or(&program[from.clone()]));
                own.differs |= differs && audio.is_some();
                if let Some(talk) = talkback.filter(|t| t.reaches(own.feed))
                    && let Some(talk) = talk.audio.get(from.clone())
                {
                    for (o, t) in pcm.iter_mut().zip(talk) {
                        // Talkback on top of the return, held inside full
                        // scale: it is for the host's ears only.
                        *o = (*o + t).clamp(-1.0, 1.0);
                    }
                    own.differs = true;
                }
            }
            self.filled += take;
            pos += take;
            if self.filled == RETURN_FRAME {
                self.emit(listeners);
            }
        }
    }

    /// Encodes the completed frame and addresses it to every listener.
    fn emit(&mut self, listeners: &[Listener]) {
        self.filled = 0;
        // RFC 3550 §5.1: the timestamp wraps modulo 2^32.
        let rtp_ts = self.frame_start.samples() as u32;
        let shared = if self.own.iter().any(|o| !o.differs) {
            self.program.encode(&mut self.scratch)
        } else {
            None
        };
        for own in &mut self.own {
            let payload = match own.differs {
                true => own.track.encode(&mut self.scratch),
                false => shared.clone(),
            };
            own.differs = false;
            let Some(payload) = payload else { continue };
            self.packets
                .extend(
                    listeners
                        .iter()
                        .filter(|l| l.feed == own.feed)
                        .map(|l| ReturnPacket {
                            listener: l.session,
                            rtp_ts,
                            payload: payload.clone(),
                        }),
                );
        }
    }

    /// Whether no return is being encoded (nobody listened to the last
    /// block): [`push`](Self::push) may then be skipped.
    pub fn is_idle(&self) -> bool {
        self.own.is_empty()
    }

    /// The packets completed so far, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, ReturnPacket> {
        self.packets.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{FeedConfig, MixerConfig};
    use crate::ingest::SessionId;

    fn feed(mixer: &mut Mixer, name: &str) -> FeedId {
        mixer.add_feed(FeedConfig {
            name: name.into(),
            gain_db: 0.0,
            muted: false,
        })
    }

    /// A block of a constant `value` on both channels.
    fn block(frames: usize, value: f32) -> Vec<f32> {
        vec![value; frames * CHANNELS]
    }

    fn decode(payload: &[u8]) -> Vec<f32> {
        let mut decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo).unwrap();
        let mut out = vec![0.0; RETURN_FRAME * CHANNELS];
        let n = decoder.decode_float(payload, &mut out, false).unwrap();
        out.truncate(n * CHANNELS);
        out
    }

    #[test]
    fn packets_are_twenty_ms_on_the_program_timeline_whatever_the_block_sizes() {
        let mut mixer = Mixer::new(MixerConfig::default());
        let a = feed(&mut mixer, "a");
        mixer.set_return(a, true);
        let listeners = [Listener {
            session: SessionId(7),
            feed: a,
        }];
        let mut returns = Returns::new(ReturnConfig::default()).unwrap();
        let mut out = Vec::new();
        let mut timestamps = Vec::new();
        for n in [500, 700, 960, 1, 2000, 679] {
            let start = mixer.clock();
            mixer.push(a, start, &block(n, 0.1));
            mixer.mix(n, &mut out);
            returns.push(&mixer, &out, start, &listeners, None);
            timestamps.extend(returns.drain().map(|p| {
                assert_eq!(p.listener, SessionId(7));
                p.rtp_ts
            }));
        }
        // 4840 frames: five whole packets, 40 frames waiting.
        assert_eq!(timestamps, [0, 960, 1920, 2880, 3840]);
    }

    #[test]
    fn silent_hosts_share_one_encode_and_speaking_hosts_get_their_own() {
        let mut mixer = Mixer::new(MixerConfig::default());
        let (a, b, c) = (
            feed(&mut mixer, "a"),
            feed(&mut mixer, "b"),
            feed(&mut mixer, "c"),
        );
        let listeners: Vec<Listener> = [a, b, c]
            .iter()
            .enumerate()
            .map(|(i, &feed)| Listener {
                session: SessionId(i as u64 + 1),
                feed,
            })
            .collect();
        for l in &listeners {
            mixer.set_return(l.feed, true);
        }
        let mut returns = Returns::new(ReturnConfig::default()).unwrap();
        let mut out = Vec::new();
        // Only a speaks: b and c hear the program (a), a hears silence.
        mixer.push(a, mixer.clock(), &block(RETURN_FRAME, 0.25));
        mixer.mix(RETURN_FRAME, &mut out);
        returns.push(&mixer, &out, ProgramTime::ZERO, &listeners, None);
        let packets: Vec<ReturnPacket> = returns.drain().collect();
        assert_eq!(packets.len(), 3);
        let of = |s: u64| {
            packets
                .iter()
                .find(|p| p.listener == SessionId(s))
                .unwrap()
                .payload
                .clone()
        };
        // One shared encode: the very same bytes, not just equal ones.
        assert_eq!(of(2).as_ptr(), of(3).as_ptr());
        assert_ne!(of(1).as_ptr(), of(2).as_ptr());
        let loudest = |p: &Bytes| decode(p).iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(loudest(&of(2)) > 0.1, "b hears a");
        assert!(loudest(&of(1)) < 0.001, "a does not hear itself");
    }

    #[test]
    fn talkback_reaches_only_its_host() {
        let mut mixer = Mixer::new(MixerConfig::default());
        let (a, b) = (feed(&mut mixer, "a"), feed(&mut mixer, "b"));
        let listeners = [
            Listener {
                session: SessionId(1),
                feed: a,
            },
            Listener {
                session: SessionId(2),
                feed: b,
            },
        ];
        mixer.set_return(a, true);
        mixer.set_return(b, true);
        let mut returns = Returns::new(ReturnConfig::default()).unwrap();
        let mut out = Vec::new();
        let talk = block(RETURN_FRAME, 0.3);
        // Two frames: the first primes the codec, the second is measured.
        let mut loudest = [0.0f32; 2];
        for _ in 0..2 {
            let start = mixer.clock();
            mixer.mix(RETURN_FRAME, &mut out);
            assert!(out.iter().all(|v| *v == 0.0), "talkback is not on air");
            let talkback = Talkback {
                audio: &talk,
                to: Some(b),
            };
            returns.push(&mixer, &out, start, &listeners, Some(talkback));
            for p in returns.drain() {
                let i = p.listener.0 as usize - 1;
                loudest[i] = decode(&p.payload).iter().fold(0.0, |m, v| m.max(v.abs()));
            }
        }
        assert!(loudest[1] > 0.2, "b hears the producer: {loudest:?}");
        assert!(loudest[0] < 0.001, "a does not: {loudest:?}");
    }
}
