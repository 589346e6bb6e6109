//! Measurements on decoded audio: sine levels (windowed Goertzel), amplitude
//! spectra (radix-2 FFT with a flat-top window), alignment (normalised
//! cross-correlation), and decoding onair's renditions with ffmpeg the way a
//! player presents them.
//!
//! Levels are in dBFS of a sine: `20·log10(peak amplitude)`, so a full-scale
//! sine reads 0 dBFS.

// Each test crate includes this file and uses only some of it.
#![allow(dead_code)]

use std::f64::consts::TAU;
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

/// A periodic Hann window of `n` points.
fn hann(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 - 0.5 * (TAU * i as f64 / n as f64).cos())
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

/// Peak amplitude of the sine at `freq` Hz in `x` (sampled at `rate` Hz).
///
/// A Hann-windowed DFT evaluated exactly at `freq` by the Goertzel recurrence
/// (any real frequency, not only a bin centre), normalised by the window's sum
/// so a sine of amplitude `a` reads `a`. The window keeps leakage from other
/// tones far below the measured level; `x` should hold many periods.
pub fn tone_amplitude(x: &[f64], freq: f64, rate: f64) -> f64 {
    let window = hann(x.len());
    let w = TAU * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for (v, g) in x.iter().zip(&window) {
        let s = v * g + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    // |X(w)|² from the last two states of the recurrence.
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / window.iter().sum::<f64>()
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
