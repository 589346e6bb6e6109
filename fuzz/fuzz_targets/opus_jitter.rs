//! The Opus jitter buffer driven by an arbitrary script of pushes (sequence
//! number, RTP timestamp, payload, arrival) and pulls: it must never panic,
//! hold at most `max_packets`, emit 48 kHz stereo frames of 1..=120 ms whose
//! timeline only moves forward, conceal at most `max_conceal_ms` (rounded up
//! to one 2.5 ms frame) in a row, and emit per pull no more audio than what
//! it holds can account for.
//!
//! Script: 5 bytes of configuration, then operations, each a tag byte:
//! - `tag % 4 < 2`: a push. Bit 2 of the tag chooses absolute (`u16`, `u32`)
//!   or relative (`i8` step, `i8` × 120 step) sequence number and timestamp;
//!   bit 3 an arbitrary `u64` arrival instead of the current time; then a
//!   length byte and that many payload bytes.
//! - `tag % 4 == 2`: the clock advances by a `u16` of samples, then a pull.
//! - `tag % 4 == 3`: a pull at the time `poll_at` asks for (if any).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::whip::jitter::{
    Frame, FrameKind, MAX_PACKET_SAMPLES, OpusJitter, OpusJitterConfig,
};
use onair::time::ProgramTime;

/// The shortest Opus frame (2.5 ms), the unit of concealment.
const MIN_FRAME: usize = 120;
/// Samples per ms at 48 kHz.
const PER_MS: usize = 48;

/// Reads fixed-size values off the front of the script.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes::<1>().map(|[b]| b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// What the frames emitted so far must stay consistent with.
struct Checker {
    max_conceal: usize,
    /// (host_ts_ms, samples per channel) of the last frame.
    last: Option<(i64, usize)>,
    /// Samples concealed since the last decoded frame.
    conceal_run: usize,
}

impl Checker {
    fn check(&mut self, frames: &[Frame]) {
        for f in frames {
            assert_eq!((f.audio.rate, f.audio.channels), (48_000, 2));
            assert_eq!(f.audio.samples.len() % 2, 0);
            let n = f.audio.samples.len() / 2;
            assert!((1..=MAX_PACKET_SAMPLES).contains(&n), "{n} samples");
            assert!(f.audio.samples.iter().all(|s| s.is_finite()));
            if let Some((ts, len)) = self.last {
                // The next frame starts at or after the end of this one
                // (in whole ms, rounded down).
                let min_step = i64::try_from(len / PER_MS).unwrap_or(i64::MAX).max(1);
                assert!(
                    f.host_ts_ms >= ts.saturating_add(min_step),
                    "frame at {} ms after one at {ts} ms of {len} samples",
                    f.host_ts_ms
                );
            }
            self.last = Some((f.host_ts_ms, n));
            match f.kind {
                FrameKind::Decoded => self.conceal_run = 0,
                FrameKind::Fec | FrameKind::Plc => {
                    self.conceal_run += n;
                    assert!(
                        self.conceal_run < self.max_conceal + MIN_FRAME,
                        "{} samples concealed in a row, budget {}",
                        self.conceal_run,
                        self.max_conceal
                    );
                }
            }
        }
    }
}

fn config(head: [u8; 5]) -> OpusJitterConfig {
    let [reorder, conceal, packets, flags, corrupt] = head;
    OpusJitterConfig {
        reorder_ms: u32::from(reorder),
        max_conceal_ms: 3 + u32::from(conceal) * 2,
        max_packets: 1 + usize::from(packets % 64),
        fec: flags & 1 == 1,
        max_corrupt_run: 1 + u32::from(corrupt),
    }
}

fn pull(jb: &mut OpusJitter, now: u64, checker: &mut Checker) -> bool {
    let held = jb.held();
    let mut out = Vec::new();
    let ok = jb.pull(ProgramTime::from_samples(now), &mut out).is_ok();
    checker.check(&out);
    // Each held packet plays once (or is concealed once if undecodable) and
    // each gap before it costs at most the concealment budget.
    let emitted: usize = out.iter().map(|f| f.audio.samples.len() / 2).sum();
    let per_packet = MAX_PACKET_SAMPLES + checker.max_conceal + MIN_FRAME;
    assert!(
        emitted <= (held + 1) * per_packet,
        "{emitted} samples from {held} held packets"
    );
    ok
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let Some(head) = script.bytes::<5>() else {
        return;
    };
    let cfg = config(head);
    let mut jb = cfg.build().expect("a valid configuration builds");
    let mut checker = Checker {
        max_conceal: cfg.max_conceal_ms as usize * PER_MS,
        last: None,
        conceal_run: 0,
    };
    let (mut now, mut seq, mut ts, mut pushes) = (0u64, 0u16, 0u32, 0u64);
    while let Some(tag) = script.u8() {
        match tag % 4 {
            0 | 1 => {
                if tag & 4 == 0 {
                    let Some([ds, dt]) = script.bytes::<2>() else {
                        return;
                    };
                    seq = seq.wrapping_add_signed(i16::from(ds as i8));
                    ts = ts.wrapping_add_signed(i32::from(dt as i8) * MIN_FRAME as i32);
                } else {
                    let (Some(s), Some(t)) = (script.bytes::<2>(), script.bytes::<4>()) else {
                        return;
                    };
                    seq = u16::from_le_bytes(s);
                    ts = u32::from_le_bytes(t);
                }
                let arrival = if tag & 8 == 0 {
                    now
                } else {
                    let Some(a) = script.bytes::<8>() else {
                        return;
                    };
                    u64::from_le_bytes(a)
                };
                let len = usize::from(script.u8().unwrap_or(0));
                let payload = script.take(len);
                jb.push(seq, ts, payload, ProgramTime::from_samples(arrival));
                pushes += 1;
                assert!(jb.held() <= cfg.max_packets);
                assert_eq!(jb.stats().received, pushes);
            }
            2 => {
                let Some(step) = script.bytes::<2>() else {
                    return;
                };
                now = now.saturating_add(u64::from(u16::from_le_bytes(step)));
                if !pull(&mut jb, now, &mut checker) {
                    return; // Undecodable: the session ends.
                }
            }
            _ => {
                if let Some(at) = jb.poll_at() {
                    now = now.max(at.samples());
                    if !pull(&mut jb, now, &mut checker) {
                        return;
                    }
                }
            }
        }
    }
});
