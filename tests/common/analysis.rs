//! Measurements on decoded audio: a sine's level, phase and frequency
//! (a Hann-windowed DFT at the tone's exact frequency), amplitude spectra
//! (radix-2 FFT with a flat-top window), alignment (normalised
//! cross-correlation), and decoding onair's renditions with ffmpeg the way a
//! player presents them.
//!
//! Levels are in dBFS of a sine: `20·log10(peak amplitude)`, so a full-scale
//! sine reads 0 dBFS. Everything is computed in `f64`, from `f32` or `f64`
//! samples; positions and lengths are sample counts, and a sample rate turns
//! them into seconds only where a frequency is involved.
//!
//! Tone measurements, all on one channel:
//! - [`tone_phasor`]: the complex amplitude of the sine at a given frequency
//!   (amplitude and phase), the primitive the others are built on;
//! - [`tone_amplitude`] and [`tone_dbfs`]: its level over a whole span;
//! - [`tone_levels`]: its level in consecutive windows;
//! - [`frequency_offset_ppm`]: how far the tone runs from its nominal
//!   frequency, from its phase advance across consecutive windows.

// Each test crate includes this file and uses only some of it.
#![allow(dead_code)]

use std::f64::consts::{PI, TAU};
use std::ops::Range;
use std::path::Path;
use std::process::Command;

/// `20·log10(amplitude)`; a peak amplitude of 1.0 is 0 dBFS.
pub fn dbfs(amplitude: f64) -> f64 {
    20.0 * amplitude.log10()
}

/// The peak amplitude of a sine at `db` dBFS.
pub fn amplitude_of_dbfs(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

/// Channel `c` of interleaved `samples` with `channels` channels, as `f64`.
pub fn channel(samples: &[f32], channels: usize, c: usize) -> Vec<f64> {
    samples
        .iter()
        .skip(c)
        .step_by(channels)
        .map(|&v| f64::from(v))
        .collect()
}

/// The flat-top window HFT95 of `n` points (Heinzel, Rüdiger and Schilling,
/// "Spectrum and spectral density estimation by the Discrete Fourier
/// transform (DFT)", 2002): under 0.005 dB of scalloping, sidelobes below
/// -95 dB, main lobe ±5 bins.
fn flat_top(n: usize) -> Vec<f64> {
    const A: [f64; 5] = [1.0, 1.938_337_9, 1.304_520_2, 0.402_827_0, 0.035_066_5];
    (0..n)
        .map(|i| {
            let z = TAU * i as f64 / n as f64;
            A.iter()
                .enumerate()
                .map(|(k, a)| if k % 2 == 0 { 1.0 } else { -1.0 } * a * (k as f64 * z).cos())
                .sum::<f64>()
        })
        .collect()
}

/// The complex amplitude of a sine: a component `a·cos(2π·f·n/rate + φ)`
/// (`n` counting samples from the start of the measured span) reads
/// `a·e^{iφ}`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phasor {
    pub re: f64,
    pub im: f64,
}

impl Phasor {
    /// Peak amplitude `a`.
    pub fn amplitude(self) -> f64 {
        self.re.hypot(self.im)
    }

    /// Phase `φ` at the first sample of the span, in `-π..=π`.
    pub fn phase(self) -> f64 {
        self.im.atan2(self.re)
    }
}

/// The component of `x` (one channel sampled at `rate` Hz) at `freq` Hz: a
/// Hann-windowed DFT evaluated at exactly `freq` (any real frequency, not
/// only a bin centre), scaled by the window's sum so that a sine of
/// amplitude `a` and phase `φ` reads `a·e^{iφ}` (see [`Phasor`]).
///
/// The window keeps leakage from other components far below the measured
/// one: with `x.len() = N`, a tone `k` bins (`k·rate/N` Hz) away from `freq`
/// leaks in at most about `-32 - 60·log10(k/2.5)` dB of its level from
/// `k = 2.5` on (-71 dB at 10 bins, below -100 dB beyond 35). A tone
/// slightly off `freq` reads a little low: 0.13 dB at 0.15 bin, 1.4 dB at
/// half a bin. `x` should hold many periods of the tone.
pub fn tone_phasor<T: Copy + Into<f64>>(x: &[T], freq: f64, rate: f64) -> Phasor {
    let n = x.len() as f64;
    let w = TAU * freq / rate;
    let (mut re, mut im, mut sum) = (0.0, 0.0, 0.0);
    for (i, v) in x.iter().enumerate() {
        // Periodic Hann window.
        let g = 0.5 - 0.5 * (TAU * i as f64 / n).cos();
        let (sin, cos) = (w * i as f64).sin_cos();
        let v: f64 = (*v).into();
        re += v * g * cos;
        im -= v * g * sin;
        sum += g;
    }
    if sum == 0.0 {
        return Phasor { re: 0.0, im: 0.0 };
    }
    Phasor {
        re: 2.0 * re / sum,
        im: 2.0 * im / sum,
    }
}

/// Peak amplitude of the sine at `freq` Hz in `x` (sampled at `rate` Hz):
/// the modulus of [`tone_phasor`].
pub fn tone_amplitude<T: Copy + Into<f64>>(x: &[T], freq: f64, rate: f64) -> f64 {
    tone_phasor(x, freq, rate).amplitude()
}

/// Level of the sine at `freq` Hz in `x`, dBFS of its peak ([`dbfs`] of
/// [`tone_amplitude`]); `-inf` where there is none at all.
pub fn tone_dbfs<T: Copy + Into<f64>>(x: &[T], freq: f64, rate: f64) -> f64 {
    dbfs(tone_amplitude(x, freq, rate))
}

/// [`tone_dbfs`] in each whole window of `window` samples of `x`, with the
/// index in `x` where the window starts; a last partial window is left out.
pub fn tone_levels<T: Copy + Into<f64>>(
    x: &[T],
    freq: f64,
    rate: f64,
    window: usize,
) -> Vec<(usize, f64)> {
    x.chunks_exact(window)
        .enumerate()
        .map(|(k, w)| (k * window, tone_dbfs(w, freq, rate)))
        .collect()
}

/// How far the tone near `freq` Hz in `x` (sampled at `rate` Hz) runs from
/// `freq`, in parts per million (positive: higher), from its phase advance
/// across consecutive windows of `window` samples.
///
/// A tone at `freq` advances by `2π·freq·window/rate` from one window's start
/// to the next; what it advances beyond that, averaged over the windows, is
/// the offset. Each step is taken in `-π..π`, so the measurement is
/// unambiguous while the offset stays under `rate / (2·window)` Hz (5 Hz for
/// 100 ms windows); beyond that it folds back. Within that range the steps
/// add up to the phase difference between the first and the last window, so
/// noise in one window's phase is divided by the whole span. Needs at least
/// two windows.
pub fn frequency_offset_ppm<T: Copy + Into<f64>>(
    x: &[T],
    freq: f64,
    rate: f64,
    window: usize,
) -> f64 {
    let phases: Vec<f64> = x
        .chunks_exact(window)
        .map(|w| tone_phasor(w, freq, rate).phase())
        .collect();
    assert!(
        phases.len() >= 2,
        "a frequency offset needs two windows of {window} samples, got {} samples",
        x.len()
    );
    // The nominal advance per window, reduced to one turn first so that a
    // long window loses no precision.
    let nominal = TAU * (freq * window as f64 / rate).fract();
    let advance: f64 = phases
        .windows(2)
        .map(|p| (p[1] - p[0] - nominal + PI).rem_euclid(TAU) - PI)
        .sum();
    let elapsed = (phases.len() - 1) as f64 * window as f64 / rate;
    advance / (TAU * freq * elapsed) * 1e6
}

/// In-place iterative radix-2 decimation-in-time FFT; the length must be a
/// power of two.
pub fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    assert!(n.is_power_of_two() && im.len() == n, "FFT length {n}");
    // Bit-reversal permutation.
    let bits = n.trailing_zeros();
    for i in 0..n {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let step = -TAU / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (sin, cos) = (step * k as f64).sin_cos();
                let (a, b) = (start + k, start + k + len / 2);
                let t_re = re[b] * cos - im[b] * sin;
                let t_im = re[b] * sin + im[b] * cos;
                re[b] = re[a] - t_re;
                im[b] = im[a] - t_im;
                re[a] += t_re;
                im[a] += t_im;
            }
        }
        len *= 2;
    }
}

/// Amplitude spectrum of `x` (length a power of two) with a flat-top window:
/// bin `k` (frequency `k·rate/len`) holds the peak amplitude of a sine there,
/// within 0.01 dB wherever the sine falls between bins. Bins `0..=len/2`.
pub fn amplitude_spectrum(x: &[f64]) -> Vec<f64> {
    let window = flat_top(x.len());
    let gain: f64 = window.iter().sum();
    let mut re: Vec<f64> = x.iter().zip(&window).map(|(v, w)| v * w).collect();
    let mut im = vec![0.0; x.len()];
    fft(&mut re, &mut im);
    (0..=x.len() / 2)
        .map(|k| {
            // A real sine splits between bins k and len - k; DC does not.
            let scale = if k == 0 { 1.0 } else { 2.0 };
            scale * re[k].hypot(im[k]) / gain
        })
        .collect()
}

/// The strongest bin of `spectrum` (from [`amplitude_spectrum`] of `len`
/// samples at `rate` Hz) farther than `guard_hz` from every frequency in
/// `excluded`: `(frequency in Hz, amplitude)`.
pub fn strongest_other_component(
    spectrum: &[f64],
    rate: f64,
    excluded: &[f64],
    guard_hz: f64,
) -> (f64, f64) {
    let bin_hz = rate / (2 * (spectrum.len() - 1)) as f64;
    spectrum
        .iter()
        .enumerate()
        .map(|(k, &a)| (k as f64 * bin_hz, a))
        .filter(|(f, _)| excluded.iter().all(|e| (f - e).abs() > guard_hz))
        .fold((0.0, 0.0), |best, c| if c.1 > best.1 { c } else { best })
}

/// The lag of `x` against `reference` that best matches them over `window`
/// (indices into `reference`): the `lag` in `-max_lag..=max_lag` maximising
/// the normalised cross-correlation
/// `Σ r[i]·x[i+lag] / sqrt(Σ r[i]² · Σ x[i+lag]²)`, `i` in `window`.
/// A positive lag means `x` is late. Returns `(lag, correlation)`.
///
/// Normalising by the energy of `x` under the window penalises a lag that
/// brings extra signal into it, so an onset after silence has one clear peak.
pub fn best_lag(reference: &[f64], x: &[f64], window: Range<usize>, max_lag: usize) -> (i64, f64) {
    let r = &reference[window.clone()];
    let r_energy: f64 = r.iter().map(|v| v * v).sum();
    let max_lag = max_lag as i64;
    (-max_lag..=max_lag)
        .filter_map(|lag| {
            let start = usize::try_from(window.start as i64 + lag).ok()?;
            let shifted = x.get(start..start + r.len())?;
            let dot: f64 = r.iter().zip(shifted).map(|(a, b)| a * b).sum();
            let energy: f64 = shifted.iter().map(|v| v * v).sum();
            let norm = (r_energy * energy).sqrt();
            Some((lag, if norm > 0.0 { dot / norm } else { 0.0 }))
        })
        .fold(
            (0, f64::NEG_INFINITY),
            |best, c| {
                if c.1 > best.1 { c } else { best }
            },
        )
}

/// Audio decoded by ffmpeg, with whatever it printed on stderr.
pub struct Decoded {
    /// Interleaved stereo 48 kHz samples.
    pub samples: Vec<f32>,
    /// ffmpeg's stderr (at `-v error`, empty when the decode was clean).
    pub stderr: String,
}

impl Decoded {
    /// Length in frames.
    pub fn frames(&self) -> usize {
        self.samples.len() / 2
    }
}

/// Decodes `input` (a file or an HLS playlist) to interleaved stereo 48 kHz
/// `f32`, presented by timestamp as a player does.
///
/// ffmpeg 5.1 applies the edit list of a fragmented MP4 (ISO/IEC 14496-12
/// §8.6.6) only as a timestamp offset: the first AAC packet gets pts -2048 and
/// no samples are dropped, and a plain `ffmpeg -i` then rebases the first pts
/// to 0, which makes AAC come out 2048 samples late. `-copyts` keeps the
/// timestamps and `atrim=start=0` drops what lies before program time 0.
/// (Opus is unaffected: ffmpeg's Opus decoder drops the `dOps` pre-skip
/// itself.) A missing ffmpeg or a failed decode panics.
pub fn ffmpeg_decode_by_timestamp(input: &Path) -> Decoded {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-copyts", "-i"])
        .arg(input)
        .args([
            "-af",
            "atrim=start=0",
            "-f",
            "f32le",
            "-ac",
            "2",
            "-ar",
            "48000",
            "-",
        ])
        .output()
        .expect("ffmpeg must be installed to decode the renditions");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ffmpeg failed to decode {}: {stderr}",
        input.display()
    );
    let samples = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Decoded { samples, stderr }
}
