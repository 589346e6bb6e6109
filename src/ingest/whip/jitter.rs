//! An RTP jitter buffer and decoder for one Opus stream (RFC 7587).
//!
//! [`OpusJitter`] is a pure state machine between a WebRTC session's
//! depacketised Opus payloads and a [`LiveFeed`](crate::audio::LiveFeed). It
//! never reads a clock: [`OpusJitter::push`] says when each packet arrived
//! and [`OpusJitter::pull`] is called with the current program time,
//! normally every 10-20 ms. Both return at once; nothing ever waits.
//!
//! # Timelines
//! - Sequence numbers (16 bits) and RTP timestamps (32 bits, 48 kHz for
//!   Opus whatever the coded bandwidth, RFC 7587 §4.1) are unwrapped into
//!   running `i64` values against the highest sequence number seen.
//! - Output frames carry `host_ts_ms`: the unwrapped RTP time of their first
//!   sample, in ms since the first frame played. It strictly increases; a
//!   jump shows a span with no audio (intended silence, or loss beyond the
//!   concealment budget), which the feed fills or re-anchors on.
//! - Each packet's expected arrival is its RTP time plus the smallest
//!   transit offset (`arrival − rtp`) seen over the last 2-4 s, so the
//!   estimate follows clock drift between sender and program, and a path
//!   that got slower, within seconds.
//!
//! # Playout
//! - Packets leave in sequence order. The next packet in sequence is decoded
//!   as soon as it is there: reordering only costs time when there is a
//!   hole. At the very start the first packet is held for
//!   [`START_HOLD_MS`] (or `reorder_ms` if shorter) so an earlier one can
//!   still overtake it; a long hold there would only delay a new session
//!   (a host's reconnect) while the feed it replaces runs dry.
//! - A hole (a missing sequence number, or no packet at all) is waited for
//!   until `reorder_ms` after the expected arrival of the audio it would
//!   carry; after that the packet is late and its frame is concealed, one
//!   frame of the last packet's duration at a time: by the in-band FEC (LBRR)
//!   of the following packet when FEC was negotiated and that packet is
//!   already here in SILK or hybrid mode (RFC 6716 §4.2.4; CELT carries no
//!   FEC), otherwise by the decoder's packet loss concealment.
//! - Consecutive concealment stops after [`OpusJitterConfig::max_conceal_ms`]:
//!   from then on nothing is emitted, so the feed fades into silence, until
//!   the next real packet, which plays at once with its own timestamp.
//! - A timestamp gap without a sequence gap is intended silence (DTX, RFC
//!   7587 §3.1.3, or a paused sender): nothing is emitted for it. When the
//!   last packet was a DTX frame (two bytes or less), a stream that then goes
//!   quiet is also taken as intended silence and not concealed.
//! - A packet whose sequence number or audio was already played (or
//!   concealed) is dropped and counted: as a duplicate if it was played, as
//!   late otherwise.
//!
//! # Bounds
//! At most [`OpusJitterConfig::max_packets`] packets are held (the oldest is
//! dropped beyond that) and each payload is at most [`MAX_PAYLOAD`] bytes. A
//! payload the decoder rejects is concealed and counted; after
//! [`OpusJitterConfig::max_corrupt_run`] such packets in a row `pull` reports
//! [`JitterError::Undecodable`] so the session can be ended.

use std::collections::BTreeMap;

use crate::audio::Decoded;
use crate::time::{CHANNELS, ProgramTime, SAMPLE_RATE};

/// The longest Opus packet, in samples per channel at 48 kHz (120 ms, RFC
/// 6716 §3.2.5).
pub const MAX_PACKET_SAMPLES: usize = 5760;
/// The largest payload held, in bytes: above any Opus packet a WebRTC
/// sender puts into one MTU-sized RTP packet. Larger ones are concealed.
pub const MAX_PAYLOAD: usize = 4000;
/// The shortest Opus frame, and the granularity of concealment (2.5 ms).
const MIN_FRAME: i64 = 120;
/// Width of each window of the transit-offset minimum, in samples (2 s).
const OFFSET_WINDOW: i64 = 2 * SAMPLE_RATE as i64;
/// Played sequence numbers remembered to tell duplicates from late packets.
const PLAYED_MEMORY: i64 = 128;

/// How long the first packet of a stream is held for an earlier one to
/// overtake it, in ms (at most [`OpusJitterConfig::reorder_ms`]).
pub const START_HOLD_MS: u32 = 40;

/// Settings of an [`OpusJitter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusJitterConfig {
    /// How long after its expected arrival a missing packet is waited for,
    /// in ms (default 60). Jitter beyond this counts as loss.
    pub reorder_ms: u32,
    /// The most audio concealed in a row, in ms (default 200). After that
    /// the stream emits nothing until a real packet comes.
    pub max_conceal_ms: u32,
    /// The most packets held (default 256).
    pub max_packets: usize,
    /// In-band FEC was negotiated (`useinbandfec=1` in the offer, RFC 7587
    /// §6.1), so a lost frame may be recovered from the next packet
    /// (default false).
    pub fec: bool,
    /// Undecodable packets in a row after which `pull` fails (default 50,
    /// one second of 20 ms packets).
    pub max_corrupt_run: u32,
}

impl Default for OpusJitterConfig {
    fn default() -> Self {
        Self {
            reorder_ms: 60,
            max_conceal_ms: 200,
            max_packets: 256,
            fec: false,
            max_corrupt_run: 50,
        }
    }
}

impl OpusJitterConfig {
    /// A buffer with its Opus decoder (48 kHz stereo).
    pub fn build(self) -> Result<OpusJitter, JitterError> {
        if self.max_packets == 0 || self.max_corrupt_run == 0 {
            return Err(JitterError::Config(
                "max_packets and max_corrupt_run must be at least 1".into(),
            ));
        }
        if self.max_conceal_ms < 3 {
            return Err(JitterError::Config(
                "max_conceal_ms must be at least one 2.5 ms frame".into(),
            ));
        }
        let decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Stereo)
            .map_err(|e| JitterError::Codec(e.to_string()))?;
        Ok(OpusJitter {
            config: self,
            decoder,
            held: BTreeMap::new(),
            highest: None,
            offset: Offset::default(),
            first_arrival: None,
            played_seq: 0,
            next_ts: 0,
            origin_ts: 0,
            started: false,
            last_dur: 960,
            last_dtx: false,
            conceal_run: 0,
            played_bits: 0,
            corrupt_run: 0,
            stats: JitterStats::default(),
            pcm: vec![0.0; MAX_PACKET_SAMPLES * CHANNELS],
        })
    }
}

/// Why an [`OpusJitter`] cannot be built or cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitterError {
    /// The configuration is inconsistent: fix it.
    #[error("invalid jitter buffer configuration: {0}")]
    Config(String),
    /// The Opus decoder could not be created: the session cannot start.
    #[error("cannot create the Opus decoder: {0}")]
    Codec(String),
    /// Too many packets in a row could not be decoded: end the session (the
    /// sender is not sending Opus on this payload type).
    #[error("{count} Opus packets in a row could not be decoded (last: sequence number {seq})")]
    Undecodable {
        /// How many in a row.
        count: u32,
        /// The RTP sequence number of the last one.
        seq: u16,
    },
}

/// How a frame was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Decoded from its own packet.
    Decoded,
    /// Recovered from the in-band FEC of the following packet.
    Fec,
    /// Packet loss concealment: the packet was lost, late or undecodable.
    Plc,
}

/// One output frame: 48 kHz stereo audio and where it sits on the host
/// timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// RTP time of the first sample, unwrapped, in ms since the first frame
    /// (rounded down). Strictly increasing from frame to frame.
    pub host_ts_ms: i64,
    /// The samples: rate 48 000, 2 channels, interleaved.
    pub audio: Decoded,
    /// Decoded, recovered or concealed.
    pub kind: FrameKind,
}

/// Counters of an [`OpusJitter`] since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets pushed.
    pub received: u64,
    /// Sequence numbers that were never played (lost or late).
    pub lost: u64,
    /// Frames concealed by PLC (loss, lateness, corrupt payloads, stalls).
    pub concealed_plc: u64,
    /// Frames recovered from in-band FEC.
    pub concealed_fec: u64,
    /// Packets dropped because their audio was already concealed or skipped.
    pub late: u64,
    /// Packets dropped because the same sequence number was already held or
    /// played.
    pub duplicates: u64,
    /// Packets that arrived after a packet with a higher sequence number.
    pub reordered: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Packets the decoder rejected (or too large to hold).
    pub corrupt: u64,
    /// Timestamp gaps taken as intended silence.
    pub silence_gaps: u64,
}

/// One packet waiting to be played.
#[derive(Debug)]
struct Held {
    /// Unwrapped RTP timestamp.
    ts: i64,
    /// The payload; `None` if it was too large to keep.
    payload: Option<Vec<u8>>,
}

/// The smallest `arrival − rtp` over the current and the previous window.
#[derive(Debug, Default)]
struct Offset {
    window: Option<i64>,
    current: i64,
    previous: i64,
}

impl Offset {
    fn update(&mut self, arrival: i64, transit: i64) {
        let window = arrival.div_euclid(OFFSET_WINDOW);
        match self.window {
            Some(w) if w == window => self.current = self.current.min(transit),
            Some(w) => {
                // After a silence longer than a window the old minimum is
                // stale: start over.
                self.previous = if window == w + 1 {
                    self.current
                } else {
                    transit
                };
                self.current = transit;
                self.window = Some(window);
            }
            None => {
                self.window = Some(window);
                self.current = transit;
                self.previous = transit;
            }
        }
    }

    fn get(&self) -> i64 {
        self.current.min(self.previous)
    }
}

/// The jitter buffer and decoder of one Opus stream. See the module
/// documentation for the contract.
pub struct OpusJitter {
    config: OpusJitterConfig,
    decoder: opus::Decoder,
    /// Packets by unwrapped sequence number.
    held: BTreeMap<i64, Held>,
    /// The highest sequence number seen: (raw, unwrapped, raw ts, unwrapped ts).
    highest: Option<(u16, i64, u32, i64)>,
    offset: Offset,
    first_arrival: Option<i64>,
    started: bool,
    /// Unwrapped sequence number of the last packet played or given up.
    played_seq: i64,
    /// RTP time where the output ends (the next frame starts).
    next_ts: i64,
    /// RTP time of the first output sample (`host_ts_ms` 0).
    origin_ts: i64,
    /// Duration of the last decoded packet, in samples.
    last_dur: i64,
    /// The last decoded packet was a DTX frame.
    last_dtx: bool,
    /// Samples concealed since the last decoded packet.
    conceal_run: i64,
    /// Bit `i` set: `played_seq − i` was decoded.
    played_bits: u128,
    corrupt_run: u32,
    stats: JitterStats,
    /// Decoder output scratch, one maximal packet.
    pcm: Vec<f32>,
}

impl std::fmt::Debug for OpusJitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusJitter")
            .field("config", &self.config)
            .field("held", &self.held.len())
            .field("played_seq", &self.played_seq)
            .field("next_ts", &self.next_ts)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn ms_to_samples(ms: u32) -> i64 {
    i64::from(ms) * i64::from(SAMPLE_RATE) / 1000
}

/// Whether a packet is in SILK or hybrid mode, the only ones with LBRR
/// (RFC 6716 §3.1: TOC configurations 0-15).
fn carries_lbrr(payload: &[u8]) -> bool {
    payload.first().is_some_and(|toc| toc >> 3 < 16)
}

impl OpusJitter {
    /// The settings.
    pub fn config(&self) -> &OpusJitterConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// How many packets are held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes one RTP packet's Opus payload. `arrival` is the program time
    /// at which it was received. Never fails: what cannot be used is
    /// dropped and counted.
    pub fn push(&mut self, seq: u16, rtp_ts: u32, payload: &[u8], arrival: ProgramTime) {
        self.stats.received += 1;
        // Signed from here on: transit offsets (`arrival − rtp`) go negative.
        let arrival = to_i64(arrival.samples());
        let (ext_seq, ext_ts) = self.unwrap(seq, rtp_ts);
        if self.started && ext_seq <= self.played_seq {
            let age = self.played_seq - ext_seq;
            if age < PLAYED_MEMORY && self.played_bits >> age & 1 == 1 {
                self.stats.duplicates += 1;
            } else {
                self.stats.late += 1;
            }
            return;
        }
        if self.held.contains_key(&ext_seq) {
            self.stats.duplicates += 1;
            return;
        }
        if self.highest.is_some_and(|(_, h, _, _)| ext_seq < h) {
            self.stats.reordered += 1;
        }
        if let Some((_, h, _, _)) = self.highest {
            if ext_seq > h {
                self.highest = Some((seq, ext_seq, rtp_ts, ext_ts));
            }
        } else {
            self.highest = Some((seq, ext_seq, rtp_ts, ext_ts));
        }
        self.offset.update(arrival, arrival.saturating_sub(ext_ts));
        self.first_arrival.get_or_insert(arrival);
        let payload = (payload.len() <= MAX_PAYLOAD).then(|| payload.to_vec());
        self.held.insert(
            ext_seq,
            Held {
                ts: ext_ts,
                payload,
            },
        );
        while self.held.len() > self.config.max_packets {
            self.held.pop_first();
            self.stats.overflow += 1;
        }
    }

    /// Unwraps a sequence number and timestamp against the highest packet
    /// seen (RFC 3550 Appendix A.1: the nearest value modulo 2^16 / 2^32).
    fn unwrap(&self, seq: u16, ts: u32) -> (i64, i64) {
        match self.highest {
            None => (i64::from(seq), i64::from(ts)),
            Some((raw_seq, ext_seq, raw_ts, ext_ts)) => (
                ext_seq + i64::from(seq.wrapping_sub(raw_seq) as i16),
                ext_ts + i64::from(ts.wrapping_sub(raw_ts) as i32),
            ),
        }
    }

    /// The program time at which the next missing audio is given up on, if
    /// `pull` has anything to wait for; program time 0 if a packet can be
    /// played now. A driver may sleep until then (or its regular tick).
    pub fn poll_at(&self) -> Option<ProgramTime> {
        let reorder = ms_to_samples(self.config.reorder_ms);
        if !self.started {
            return self.first_arrival.map(|a| {
                ProgramTime::from_samples(
                    u64::try_from(a.saturating_add(self.start_hold())).unwrap_or(0),
                )
            });
        }
        let next = self.held.first_key_value().map(|(&s, _)| s);
        if next == Some(self.played_seq + 1) {
            return Some(ProgramTime::ZERO);
        }
        let budget_spent = self.conceal_run >= ms_to_samples(self.config.max_conceal_ms);
        if budget_spent && next.is_some() {
            return Some(ProgramTime::ZERO);
        }
        if budget_spent || (next.is_none() && self.last_dtx) {
            return None;
        }
        u64::try_from(
            self.next_ts
                .saturating_add(self.offset.get())
                .saturating_add(reorder),
        )
        .ok()
        .map(ProgramTime::from_samples)
    }

    /// The hold of the first packet, in samples.
    fn start_hold(&self) -> i64 {
        ms_to_samples(self.config.reorder_ms.min(START_HOLD_MS))
    }

    /// Plays everything due at program time `now` into `out` (appending):
    /// packets that are next in sequence, and concealment for audio that is
    /// now late. Returns at once.
    ///
    /// Fails only with [`JitterError::Undecodable`] when too many packets in
    /// a row could not be decoded: end the session.
    pub fn pull(&mut self, now: ProgramTime, out: &mut Vec<Frame>) -> Result<(), JitterError> {
        let now = to_i64(now.samples());
        let reorder = ms_to_samples(self.config.reorder_ms);
        let max_conceal = ms_to_samples(self.config.max_conceal_ms);
        if !self.started {
            let Some(first) = self.first_arrival else {
                return Ok(());
            };
            let Some((&seq, held)) = self.held.first_key_value() else {
                return Ok(());
            };
            if now < first.saturating_add(self.start_hold()) {
                return Ok(());
            }
            self.started = true;
            self.played_seq = seq - 1;
            self.next_ts = held.ts;
            self.origin_ts = held.ts;
        }
        loop {
            let next = self.held.first_key_value().map(|(&s, h)| (s, h.ts));
            if let Some((seq, _)) = next
                && seq <= self.played_seq + 1
            {
                if let Some(held) = self.held.remove(&seq) {
                    self.play(seq, held, out)?;
                }
                continue;
            }
            if self.conceal_run >= max_conceal {
                // Budget spent: skip straight to the next real packet, if any.
                match next {
                    Some((seq, _)) => {
                        self.give_up_to(seq - 1);
                        continue;
                    }
                    None => break,
                }
            }
            if now
                < self
                    .next_ts
                    .saturating_add(self.offset.get())
                    .saturating_add(reorder)
            {
                break;
            }
            let budget = (max_conceal - self.conceal_run).max(MIN_FRAME);
            match next {
                Some((seq, ts)) => {
                    let room = ts - self.next_ts;
                    if room < MIN_FRAME {
                        // The missing packets' time is already covered.
                        self.give_up_to(seq - 1);
                        continue;
                    }
                    let dur = floor_frame(self.last_dur.min(room).min(budget));
                    // The LBRR of a packet codes the frame just before it.
                    let fec = if self.config.fec && self.next_ts + dur == ts {
                        self.held
                            .get(&seq)
                            .and_then(|h| h.payload.clone())
                            .filter(|p| carries_lbrr(p))
                    } else {
                        None
                    };
                    self.conceal(dur, fec.as_deref(), out);
                    self.give_up_to(self.played_seq + 1);
                }
                None => {
                    if self.last_dtx {
                        // Intended silence after a DTX frame.
                        break;
                    }
                    let dur = floor_frame(self.last_dur.min(budget));
                    self.conceal(dur, None, out);
                }
            }
        }
        Ok(())
    }

    /// Marks every sequence number up to `seq` as played, counting the ones
    /// never decoded as lost.
    fn give_up_to(&mut self, seq: i64) {
        if seq > self.played_seq {
            self.stats.lost += u64::try_from(seq - self.played_seq).unwrap_or(0);
            self.advance_played(seq);
        }
    }

    fn advance_played(&mut self, seq: i64) {
        if seq <= self.played_seq {
            return;
        }
        let shift = seq - self.played_seq;
        self.played_bits = match u32::try_from(shift) {
            Ok(s) if s < 128 => self.played_bits << s,
            _ => 0,
        };
        self.played_seq = seq;
    }

    /// Plays the packet that is next in sequence.
    fn play(&mut self, seq: i64, held: Held, out: &mut Vec<Frame>) -> Result<(), JitterError> {
        let payload = held.payload.unwrap_or_default();
        let samples = opus::packet::get_nb_samples(&payload, SAMPLE_RATE)
            .ok()
            .filter(|&n| !payload.is_empty() && n > 0 && n <= MAX_PACKET_SAMPLES)
            .and_then(|n| i64::try_from(n).ok());
        let dur = samples.unwrap_or(self.last_dur);
        if held.ts + dur <= self.next_ts {
            // Its whole time was concealed already.
            self.stats.late += 1;
            self.advance_played(seq);
            return Ok(());
        }
        // A later timestamp right after a decoded packet, with no sequence
        // gap, is silence the sender meant (DTX or a pause).
        if held.ts >= self.next_ts + MIN_FRAME
            && seq == self.played_seq + 1
            && self.played_bits & 1 == 1
        {
            self.stats.silence_gaps += 1;
        }
        // A packet starting inside audio already played (a sender whose
        // timestamps step less than its packets last) continues after it.
        let start = held.ts.max(self.next_ts);
        self.advance_played(seq);
        let decoded = match samples {
            Some(_) => self
                .decoder
                .decode_float(&payload, &mut self.pcm, false)
                .ok(),
            None => None,
        };
        match decoded {
            Some(n) if n > 0 => {
                self.played_bits |= 1;
                self.corrupt_run = 0;
                self.conceal_run = 0;
                let n = i64::try_from(n).unwrap_or(dur);
                self.last_dur = n;
                // RFC 7587 §3.1.3 / libopus: DTX frames are one or two bytes.
                self.last_dtx = payload.len() <= 2;
                self.emit(start, n, FrameKind::Decoded, out);
                Ok(())
            }
            _ => {
                self.stats.corrupt += 1;
                self.corrupt_run += 1;
                tracing::debug!(
                    seq,
                    len = payload.len(),
                    "undecodable Opus packet concealed"
                );
                if self.corrupt_run >= self.config.max_corrupt_run {
                    return Err(JitterError::Undecodable {
                        count: self.corrupt_run,
                        seq: seq.rem_euclid(1 << 16) as u16,
                    });
                }
                let budget = ms_to_samples(self.config.max_conceal_ms) - self.conceal_run;
                if budget > 0 {
                    self.next_ts = start;
                    self.conceal(floor_frame(dur.min(budget)), None, out);
                }
                Ok(())
            }
        }
    }

    /// Conceals `dur` samples at the end of the output, from the FEC of
    /// `fec` if given, else by PLC.
    fn conceal(&mut self, dur: i64, fec: Option<&[u8]>, out: &mut Vec<Frame>) {
        let len = usize::try_from(dur)
            .unwrap_or(0)
            .clamp(MIN_FRAME as usize, MAX_PACKET_SAMPLES)
            * CHANNELS;
        let Some(buf) = self.pcm.get_mut(..len) else {
            return;
        };
        let (result, kind) = match fec {
            Some(p) => (self.decoder.decode_float(p, buf, true), FrameKind::Fec),
            None => (self.decoder.decode_float(&[], buf, false), FrameKind::Plc),
        };
        let n = match result {
            Ok(n) if n > 0 => i64::try_from(n).unwrap_or(dur),
            _ => {
                // Cannot happen for a valid frame size; keep time moving.
                buf.fill(0.0);
                dur
            }
        };
        match kind {
            FrameKind::Fec => self.stats.concealed_fec += 1,
            _ => self.stats.concealed_plc += 1,
        }
        self.conceal_run += n;
        let start = self.next_ts;
        self.emit(start, n, kind, out);
    }

    /// Emits the first `n` frames of the scratch buffer at RTP time `start`.
    fn emit(&mut self, start: i64, n: i64, kind: FrameKind, out: &mut Vec<Frame>) {
        let len = usize::try_from(n).unwrap_or(0).min(MAX_PACKET_SAMPLES) * CHANNELS;
        let samples = self.pcm.get(..len).map(<[f32]>::to_vec).unwrap_or_default();
        let host_ts_ms = (start - self.origin_ts)
            .saturating_mul(1000)
            .div_euclid(i64::from(SAMPLE_RATE));
        out.push(Frame {
            host_ts_ms,
            audio: Decoded {
                rate: SAMPLE_RATE,
                channels: CHANNELS,
                samples,
            },
            kind,
        });
        self.next_ts = start + n;
    }
}

/// Rounds a duration down to whole 2.5 ms frames (the decoder's unit for
/// PLC and FEC), at least one.
fn floor_frame(samples: i64) -> i64 {
    (samples / MIN_FRAME).max(1) * MIN_FRAME
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: u32 = 960;

    fn at(samples: u64) -> ProgramTime {
        ProgramTime::from_samples(samples)
    }

    /// 20 ms stereo Opus packets of a 1 kHz tone with RMS `rms`.
    #[test]
    fn poll_at_saturates() {
        let mut jb = OpusJitterConfig::default().build().expect("build");
        jb.push(0, 0, &tone_packets(1, false)[0], at(u64::MAX));
        assert!(jb.poll_at().is_some());
        jb.pull(at(u64::MAX), &mut Vec::new()).expect("pull");
        let _ = jb.poll_at();
    }

    fn tone_packets(n: usize, fec: bool) -> Vec<Vec<u8>> {
        let app = if fec {
            opus::Application::Voip
        } else {
            opus::Application::Audio
        };
        let mut enc =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Stereo, app).expect("encoder");
        enc.set_bitrate(opus::Bitrate::Bits(if fec { 32_000 } else { 64_000 }))
            .expect("bitrate");
        if fec {
            enc.set_inband_fec(true).expect("fec");
            enc.set_packet_loss_perc(10).expect("loss");
        }
        let amp = 0.25 * std::f32::consts::SQRT_2;
        (0..n)
            .map(|p| {
                let pcm: Vec<f32> = (0..PKT as usize)
                    .flat_map(|i| {
                        let t = (p * PKT as usize + i) as f32 / SAMPLE_RATE as f32;
                        let v = amp * (2.0 * std::f32::consts::PI * 1000.0 * t).sin();
                        [v, v]
                    })
                    .collect();
                enc.encode_vec_float(&pcm, 4000).expect("encode")
            })
            .collect()
    }

    /// Pushes `(seq, ts, payload, arrival)` and pulls every 10 ms until
    /// `extra` after the last arrival (so a stream's end is only concealed
    /// when `extra` lets it).
    fn run(
        cfg: OpusJitterConfig,
        packets: &[(u16, u32, Vec<u8>, u64)],
        extra: u64,
    ) -> (Vec<Frame>, JitterStats) {
        let mut jb = cfg.build().expect("build");
        let mut sorted: Vec<_> = packets.iter().collect();
        sorted.sort_by_key(|p| p.3);
        let mut it = sorted.into_iter().peekable();
        let mut out = Vec::new();
        let end = packets.iter().map(|p| p.3).max().unwrap_or(0) + extra;
        let mut now = 0;
        while now < end + 480 {
            while let Some(p) = it.next_if(|p| p.3 <= now) {
                jb.push(p.0, p.1, &p.2, at(p.3));
            }
            jb.pull(at(now), &mut out).expect("pull");
            now += 480;
        }
        (out, jb.stats())
    }

    /// Packets sent every 20 ms from `t0`, arriving 30 ms later.
    fn stream(payloads: &[Vec<u8>], seq0: u16, ts0: u32) -> Vec<(u16, u32, Vec<u8>, u64)> {
        payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    seq0.wrapping_add(i as u16),
                    ts0.wrapping_add(PKT * i as u32),
                    p.clone(),
                    1440 + 960 * i as u64,
                )
            })
            .collect()
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    fn assert_continuous(frames: &[Frame]) {
        for w in frames.windows(2) {
            assert_eq!(
                w[1].host_ts_ms,
                w[0].host_ts_ms + 20,
                "gap after {} ms",
                w[0].host_ts_ms
            );
        }
    }

    fn all_samples(frames: &[Frame]) -> Vec<f32> {
        frames
            .iter()
            .flat_map(|f| f.audio.samples.iter().copied())
            .collect()
    }

    #[test]
    fn in_order_tone_decodes() {
        let packets = stream(&tone_packets(50, false), 1000, 123_456);
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        assert_eq!(frames.len(), 50);
        assert_continuous(&frames);
        assert_eq!(frames[0].host_ts_ms, 0);
        assert!(
            frames
                .iter()
                .all(|f| f.kind == FrameKind::Decoded && f.audio.frames() == 960)
        );
        assert_eq!(frames[0].audio.rate, 48_000);
        assert_eq!(frames[0].audio.channels, 2);
        let samples = all_samples(&frames);
        let steady = &samples[9600..];
        let level = rms(steady);
        assert!((level - 0.25).abs() < 0.03, "rms {level}");
        // 1 kHz: 2000 zero crossings per second of the left channel.
        let left: Vec<f32> = steady.iter().step_by(2).copied().collect();
        let crossings = left
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        let expected = left.len() * 2000 / 48_000;
        assert!(
            crossings.abs_diff(expected) <= 4,
            "{crossings} vs {expected}"
        );
        assert_eq!(stats.received, 50);
        assert_eq!(
            stats.lost + stats.concealed_plc + stats.late + stats.reordered,
            0
        );
    }

    #[test]
    fn reordering_within_the_window_is_transparent() {
        let payloads = tone_packets(60, false);
        let ordered = stream(&payloads, 7, 0);
        let mut shuffled = ordered.clone();
        // Swap neighbours and delay every fifth packet by 50 ms.
        for i in (1..59).step_by(3) {
            let a = shuffled[i].3;
            shuffled[i].3 = shuffled[i + 1].3;
            shuffled[i + 1].3 = a;
        }
        for p in shuffled.iter_mut().skip(3).step_by(5) {
            p.3 += 720;
        }
        let (a, _) = run(OpusJitterConfig::default(), &ordered, 0);
        let (b, stats) = run(OpusJitterConfig::default(), &shuffled, 0);
        assert!(stats.reordered >= 15, "{stats:?}");
        assert_eq!(
            stats.lost + stats.late + stats.concealed_plc,
            0,
            "{stats:?}"
        );
        assert_eq!(a, b);
    }

    #[test]
    fn single_loss_is_recovered_by_fec() {
        let payloads = tone_packets(40, true);
        assert!(
            carries_lbrr(&payloads[21]),
            "encoder not in SILK/hybrid mode"
        );
        let mut packets = stream(&payloads, 0, 0);
        packets.remove(20);
        let cfg = OpusJitterConfig {
            fec: true,
            ..OpusJitterConfig::default()
        };
        let (frames, stats) = run(cfg, &packets, 0);
        assert_eq!(frames.len(), 40);
        assert_continuous(&frames);
        assert_eq!(stats.concealed_fec, 1, "{stats:?}");
        assert_eq!(stats.concealed_plc, 0);
        assert_eq!(stats.lost, 1);
        assert_eq!(frames[20].kind, FrameKind::Fec);
        let level = rms(&frames[20].audio.samples);
        assert!((0.12..0.4).contains(&level), "FEC frame rms {level}");
        // Without FEC negotiated the same loss is PLC.
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        assert_continuous(&frames);
        assert_eq!((stats.concealed_fec, stats.concealed_plc), (0, 1));
    }

    #[test]
    fn timestamp_jump_is_silence_not_loss() {
        let payloads = tone_packets(20, false);
        let mut packets = stream(&payloads, 0, 0);
        // After packet 9 the sender is silent for 500 ms: no sequence gap.
        for p in packets.iter_mut().skip(10) {
            p.1 += 25 * PKT;
            p.3 += 25 * 960;
        }
        // Pulled through the pause, the silence cannot be told from a stall
        // until packet 10 comes: at most 200 ms is concealed, no loss.
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        let decoded: Vec<_> = frames
            .iter()
            .filter(|f| f.kind == FrameKind::Decoded)
            .collect();
        assert_eq!(decoded.len(), 20);
        assert_eq!(frames.len(), 30, "{stats:?}");
        assert_eq!(decoded[10].host_ts_ms - decoded[9].host_ts_ms, 20 + 500);
        assert_eq!((stats.lost, stats.silence_gaps), (0, 1));
        // Pulled after packet 10 is here, nothing is concealed.
        let mut jb = OpusJitterConfig::default().build().expect("build");
        let mut out = Vec::new();
        for p in &packets {
            jb.push(p.0, p.1, &p.2, ProgramTime::ZERO);
        }
        jb.pull(at(2880), &mut out).expect("pull");
        assert_eq!(out.len(), 20);
        assert!(out.iter().all(|f| f.kind == FrameKind::Decoded));
        assert_eq!(out[10].host_ts_ms, 700);

        // With a DTX frame before the pause, pulling through it conceals
        // nothing either.
        let mut packets = packets.clone();
        packets[9].2 = vec![payloads[9][0] & 0xFC];
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        assert_eq!(
            stats.concealed_plc,
            0,
            "{stats:?} {:?}",
            frames
                .iter()
                .map(|f| (f.host_ts_ms, f.kind))
                .collect::<Vec<_>>()
        );
        assert_eq!(frames.len(), 20);
        assert_eq!(frames[10].host_ts_ms, 700);
    }

    #[test]
    fn stall_is_concealed_boundedly_then_resumes() {
        let payloads = tone_packets(40, false);
        let mut packets = stream(&payloads, 0, 0);
        packets.drain(10..30);
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        let plc = frames.iter().filter(|f| f.kind == FrameKind::Plc).count();
        assert_eq!(plc, 10, "200 ms of 20 ms frames");
        assert_eq!(frames.len(), 10 + 10 + 10);
        assert_continuous(&frames[..20]);
        assert_eq!(frames[20].host_ts_ms, 600);
        assert_eq!(stats.lost, 20);
    }

    #[test]
    fn sequence_and_timestamp_wrap() {
        let payloads = tone_packets(30, false);
        let packets = stream(&payloads, 65_530, u32::MAX - 5 * PKT + 1);
        let (frames, stats) = run(OpusJitterConfig::default(), &packets, 0);
        assert_eq!(frames.len(), 30);
        assert_continuous(&frames);
        assert_eq!(stats.lost + stats.late + stats.concealed_plc, 0);
        // Reordered across the wrap.
        let mut swapped = packets.clone();
        let a = swapped[5].3;
        swapped[5].3 = swapped[6].3;
        swapped[6].3 = a;
        let (again, stats) = run(OpusJitterConfig::default(), &swapped, 0);
        assert_eq!(stats.reordered, 1);
        assert_eq!(again, frames);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let payloads = tone_packets(20, false);
        let packets = stream(&payloads, 0, 0);
        let mut doubled = packets.clone();
        doubled.extend(packets.iter().map(|p| (p.0, p.1, p.2.clone(), p.3 + 480)));
        let (a, _) = run(OpusJitterConfig::default(), &packets, 0);
        let (b, stats) = run(OpusJitterConfig::default(), &doubled, 0);
        assert_eq!(a, b);
        assert_eq!(stats.duplicates, 20);
        // Packet 5 arrives 200 ms late: concealed, then dropped as late.
        let mut late = packets.clone();
        late[5].3 += 9600;
        let (frames, stats) = run(OpusJitterConfig::default(), &late, 0);
        assert_continuous(&frames);
        assert_eq!((stats.late, stats.lost, stats.concealed_plc), (1, 1, 1));
    }

    #[test]
    fn held_packets_are_bounded() {
        let payloads = tone_packets(1, false);
        let mut jb = OpusJitterConfig::default().build().expect("build");
        // Packet 0 never comes; 1..=300 wait for it.
        for s in 1..=300u16 {
            jb.push(s, u32::from(s) * PKT, &payloads[0], ProgramTime::ZERO);
        }
        assert_eq!(jb.held(), 256);
        assert_eq!(jb.stats().overflow, 44);
        let mut out = Vec::new();
        jb.pull(at(100_000), &mut out).expect("pull");
        let decoded = out.iter().filter(|f| f.kind == FrameKind::Decoded).count();
        assert_eq!(decoded, 256);
        assert_eq!(out.len() - decoded, 10, "then 200 ms concealed at the end");
        assert_eq!(jb.held(), 0);
        // Oversized payloads are not kept.
        jb.push(301, 400 * PKT, &vec![0u8; MAX_PAYLOAD + 1], at(100_000));
        jb.pull(at(100_000), &mut out).expect("pull");
        assert_eq!(jb.stats().corrupt, 1);
    }

    #[test]
    fn garbage_never_panics_and_persistent_garbage_fails() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut jb = OpusJitterConfig {
            max_corrupt_run: u32::MAX,
            ..OpusJitterConfig::default()
        }
        .build()
        .expect("build");
        let mut out = Vec::new();
        let mut now = 0u64;
        for _ in 0..20_000 {
            let len = (rnd() % 1500) as usize;
            let payload: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            jb.push(rnd() as u16, rnd() as u32, &payload, at(now));
            now += rnd() % 2000;
            jb.pull(at(now), &mut out)
                .expect("never fails with no limit");
            let mut last = i64::MIN;
            for f in out.drain(..) {
                assert!(f.host_ts_ms > last || last == i64::MIN);
                assert!(f.audio.samples.len() <= MAX_PACKET_SAMPLES * 2);
                last = f.host_ts_ms;
            }
        }
        assert!(jb.stats().corrupt > 0);

        // In order but undecodable: the 50th in a row ends the session.
        let mut jb = OpusJitterConfig::default().build().expect("build");
        let mut result = Ok(());
        for s in 0..60u16 {
            // TOC code 3 with a frame count of 0 is invalid (RFC 6716 §3.2.5).
            jb.push(s, u32::from(s) * PKT, &[0x03, 0x00], at(u64::from(s) * 960));
            result = jb.pull(at(u64::from(s) * 960 + 2880), &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(JitterError::Undecodable { count: 50, seq: 49 }));
    }
}
