//! The program limiter: keeps the mix below a ceiling without hard clipping
//! and without delaying it.
//!
//! # Contract
//! - **Transparent below the threshold.** While the signal and the envelope
//!   stay at or below `threshold_db`, samples pass bit-for-bit unchanged.
//! - **Never above the ceiling.** Every output sample satisfies
//!   `|y| < ceiling` for any finite input (see the curve below).
//! - **No lookahead, no delay.** Output sample `k` is input sample `k`: the
//!   limiter adds no latency, so the mix stays sample-aligned with program
//!   time and no compensation is needed anywhere downstream. A lookahead
//!   limiter would delay the program by its window (typically 1 to 5 ms) and
//!   every timestamp after it would need to be shifted; keeping program time
//!   exact is worth more to this pipeline than the cleaner attack a lookahead
//!   buys.
//!
//! # How
//! A stereo-linked peak envelope `e` follows `max(|L|, |R|)` with an
//! instantaneous attack and an exponential release (`release_ms` time
//! constant), so the gain recovers smoothly over tens of milliseconds instead
//! of pumping on each waveform cycle. Above the threshold `T`, the gain is
//! `g = f(e) / e` with the soft-knee curve
//!
//! ```text
//! f(e) = T + S · u / (1 + u),   u = (e − T) / S,   S = ceiling − T
//! ```
//!
//! which is continuous with slope 1 at `T` (no kink where limiting starts),
//! strictly increasing, and tends to the ceiling without reaching it. Because
//! `e ≥ |x|`, `|y| = |x| · f(e) / e ≤ f(e) < ceiling`. Without lookahead the
//! first overshooting samples of a transient must be reduced on the spot; with
//! this curve they are shaped by a smooth, strictly increasing function rather
//! than cut to a constant, so there are no flat-topped runs pinned at the
//! ceiling. After the attack the envelope holds the gain, and the waveform
//! passes through a slowly varying gain, undistorted.
//!
//! With the defaults (ceiling -1 dBFS, threshold -6 dBFS), a single feed at
//! 0 dBFS comes out near -2.8 dBFS and two full-scale feeds in phase (+6 dBFS)
//! near -1.7 dBFS.

/// Limiter settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimiterConfig {
    /// The level the output never reaches, in dBFS (clamped to at most 0).
    pub ceiling_db: f32,
    /// Where gain reduction starts, in dBFS; at least 0.5 dB below the
    /// ceiling (lowered if needed).
    pub threshold_db: f32,
    /// Release time constant in milliseconds (at least 1).
    pub release_ms: f32,
}

impl Default for LimiterConfig {
    /// Ceiling -1 dBFS, threshold -6 dBFS, release 50 ms.
    fn default() -> Self {
        Self {
            ceiling_db: -1.0,
            threshold_db: -6.0,
            release_ms: 50.0,
        }
    }
}

/// Linear amplitude of a level in dB.
pub fn db_to_amplitude(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// The limiter state (see the module docs).
#[derive(Debug, Clone)]
pub struct Limiter {
    threshold: f32,
    ceiling: f32,
    span: f32,
    release: f32,
    envelope: f32,
}

impl Limiter {
    /// A limiter with the given settings at `sample_rate` Hz.
    pub fn new(cfg: LimiterConfig, sample_rate: u32) -> Self {
        let ceiling_db = if cfg.ceiling_db.is_finite() {
            cfg.ceiling_db.min(0.0)
        } else {
            -1.0
        };
        let threshold_db = if cfg.threshold_db.is_finite() {
            cfg.threshold_db.min(ceiling_db - 0.5)
        } else {
            ceiling_db - 5.0
        };
        let release_ms = if cfg.release_ms.is_finite() {
            cfg.release_ms.max(1.0)
        } else {
            50.0
        };
        let ceiling = db_to_amplitude(ceiling_db);
        let threshold = db_to_amplitude(threshold_db);
        // One-pole release: the envelope falls by 1/e every `release_ms`.
        let release = (-1000.0 / (release_ms * sample_rate.max(1) as f32)).exp();
        Self {
            threshold,
            ceiling,
            span: ceiling - threshold,
            release,
            envelope: 0.0,
        }
    }

    /// The ceiling as a linear amplitude.
    pub fn ceiling(&self) -> f32 {
        self.ceiling
    }

    /// The current gain reduction in dB (0 when not limiting, positive when
    /// limiting).
    pub fn gain_reduction_db(&self) -> f32 {
        let g = self.gain(self.envelope);
        -20.0 * g.log10()
    }

    /// The gain for envelope `e`.
    #[inline]
    fn gain(&self, e: f32) -> f32 {
        if e <= self.threshold {
            return 1.0;
        }
        let over = e - self.threshold;
        let limited = self.threshold + self.span * over / (self.span + over);
        limited / e
    }

    /// Limits interleaved stereo samples in place.
    pub fn process(&mut self, samples: &mut [f32]) {
        // Fast path: below the threshold the exact envelope value does not
        // matter (the first sample above it resets the envelope to itself),
        // so a quiet block is left untouched.
        let peak = peak_abs(samples);
        if self.envelope <= self.threshold && peak <= self.threshold {
            self.envelope = self.envelope.max(peak);
            return;
        }
        for frame in samples.chunks_exact_mut(2) {
            if let [l, r] = frame {
                let p = l.abs().max(r.abs());
                self.envelope = p.max(self.envelope * self.release);
                let g = self.gain(self.envelope);
                // The clamp only acts where f32 rounding of the curve at
                // absurd levels (|x| > 1e6) could land on the ceiling.
                *l = (*l * g).clamp(-self.ceiling, self.ceiling);
                *r = (*r * g).clamp(-self.ceiling, self.ceiling);
            }
        }
    }
}

/// The largest absolute sample value, in lanes the compiler vectorises.
pub(crate) fn peak_abs(samples: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks = samples.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let mut m = lanes.iter().fold(0.0f32, |m, v| m.max(*v));
    for v in rest {
        m = m.max(v.abs());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    fn stereo_tone(freq: f64, db: f64, frames: usize) -> Vec<f32> {
        let amp = 10f64.powf(db / 20.0);
        (0..frames)
            .flat_map(|i| {
                let v = (amp * (TAU * freq * i as f64 / 48_000.0).sin()) as f32;
                [v, v]
            })
            .collect()
    }

    #[test]
    fn transparent_below_threshold() {
        let a = stereo_tone(1000.0, -12.0, 48_000);
        let b = stereo_tone(1500.0, -24.0, 48_000);
        let sum: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut out = sum.clone();
        let mut lim = Limiter::new(LimiterConfig::default(), 48_000);
        for block in out.chunks_mut(960) {
            lim.process(block);
        }
        assert_eq!(out, sum);
        assert_eq!(lim.gain_reduction_db(), 0.0);
    }

    #[test]
    fn two_full_scale_feeds_stay_under_ceiling_without_flat_tops() {
        let a = stereo_tone(1000.0, 0.0, 48_000);
        let b = stereo_tone(1000.0, 0.0, 48_000);
        let mut out: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let mut lim = Limiter::new(LimiterConfig::default(), 48_000);
        for block in out.chunks_mut(960) {
            lim.process(block);
        }
        let ceiling = lim.ceiling();
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        let peak = peak_abs(&left);
        assert!(peak < ceiling, "peak {peak} reaches ceiling {ceiling}");
        // Limiting is real: the output is loud, not merely attenuated.
        assert!(peak > 0.8 * ceiling, "over-limited: peak {peak}");
        // No flat tops: no two neighbouring samples near the top are equal
        // (a clipper would pin runs of samples at one value).
        for w in left.windows(3) {
            let near_top = w.iter().all(|v| v.abs() > 0.95 * peak);
            if near_top {
                assert!(
                    (w[0] - w[1]).abs() > 1e-6 || (w[1] - w[2]).abs() > 1e-6,
                    "flat run at the top: {w:?}"
                );
            }
        }
        // Smooth: after the attack, successive peaks differ little (the gain
        // moves slowly, it does not chatter).
        let cycle_peaks: Vec<f32> = left[4_800..].chunks(48).map(peak_abs).collect();
        for w in cycle_peaks.windows(2) {
            assert!((w[0] - w[1]).abs() < 0.01, "gain chatters: {w:?}");
        }
        assert!(lim.gain_reduction_db() > 6.0);
    }

    #[test]
    fn release_recovers_within_tens_of_ms() {
        let mut lim = Limiter::new(LimiterConfig::default(), 48_000);
        let mut loud = stereo_tone(1000.0, 6.0, 4_800);
        lim.process(&mut loud);
        assert!(lim.gain_reduction_db() > 3.0);
        // Silence: after ~5 release constants the gain is back to unity.
        let mut quiet = vec![0.0f32; 2 * 12_000];
        lim.process(&mut quiet);
        assert!(
            lim.gain_reduction_db() < 0.01,
            "still reducing: {}",
            lim.gain_reduction_db()
        );
        // ...but not instantly: 5 ms after the burst it was still limiting.
        let mut lim2 = Limiter::new(LimiterConfig::default(), 48_000);
        let mut loud2 = stereo_tone(1000.0, 6.0, 4_800);
        lim2.process(&mut loud2);
        let mut short = vec![0.0f32; 2 * 240];
        lim2.process(&mut short);
        assert!(lim2.gain_reduction_db() > 1.0);
    }

    #[test]
    fn absurd_input_stays_below_ceiling() {
        let mut lim = Limiter::new(LimiterConfig::default(), 48_000);
        let mut x = vec![1e30f32, -1e30, 1e9, -3.0, 0.5, 0.1];
        lim.process(&mut x);
        assert!(x.iter().all(|v| v.abs() <= lim.ceiling()), "{x:?}");
    }
}
