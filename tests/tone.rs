//! Two tones through the whole packaging core, via the real binary.
//!
//! `onair package` mixes two host files, one of which must be resampled and
//! upmixed, applies a per-feed gain, encodes Opus and AAC-LC and writes a
//! finished LL-HLS stream. Each rendition's playlist is then decoded by ffmpeg
//! as a player presents it (by timestamp, see
//! [`analysis::ffmpeg_decode_by_timestamp`]) and measured:
//!
//! - the level of each tone in each channel: the mix is a plain sum, the gain
//!   is exact and a mono feed keeps its level in both channels;
//! - nothing else in the spectrum above -50 dBFS (no resampling images,
//!   limiter distortion or intermodulation, no gross codec artefacts);
//! - a click in each feed at the same program time as in the input, in both
//!   renditions (the edit list and `dOps` pre-skip signal the encoder delays
//!   exactly, and the resampler's delay is compensated);
//! - the decoded length equals the longer feed within one codec frame.
//!
//! The program (48 kHz), with every time in milliseconds:
//!
//! ```text
//! feed A, 48 kHz stereo float:    click@100   440 Hz -12 dBFS from 300 to 4000
//! feed B, 44.1 kHz mono 16-bit:   click@200   1 kHz -18 dBFS from 400 to 3800, gain -6 dB
//! ```

#[path = "common/analysis.rs"]
mod analysis;
#[path = "common/wav.rs"]
mod wav;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use analysis::{Decoded, amplitude_of_dbfs, dbfs};
use wav::{WavFormat, write_wav};

/// Program sample rate.
const RATE: u32 = 48_000;
/// Peak of each feed's click: below the limiter's -6 dBFS threshold, so the
/// limiter passes the whole program unchanged.
const CLICK: f32 = 0.4;

/// One host file's content. Times are in milliseconds so they fall on whole
/// samples at 44.1 and 48 kHz alike.
struct Feed {
    rate: u32,
    channels: u16,
    format: WavFormat,
    click_ms: u32,
    onset_ms: u32,
    end_ms: u32,
    freq: f64,
    level_dbfs: f64,
    gain_db: f64,
}

const FEED_A: Feed = Feed {
    rate: 48_000,
    channels: 2,
    format: WavFormat::Float32,
    click_ms: 100,
    onset_ms: 300,
    end_ms: 4_000,
    freq: 440.0,
    level_dbfs: -12.0,
    gain_db: 0.0,
};

const FEED_B: Feed = Feed {
    rate: 44_100,
    channels: 1,
    format: WavFormat::Int16,
    click_ms: 200,
    onset_ms: 400,
    end_ms: 3_800,
    freq: 1_000.0,
    level_dbfs: -18.0,
    gain_db: -6.0,
};

/// Where both tones play steadily: from 150 ms after the last onset to
/// 100 ms before feed B ends.
const STEADY_MS: (u32, u32) = (550, 3_700);
/// Spectrum length: 2.73 s, within the steady span (0.37 Hz bins).
const FFT_LEN: usize = 1 << 17;
/// Level tolerance of each tone.
const LEVEL_TOLERANCE_DB: f64 = 1.0;
/// Every other spectral component must stay below this.
const SPUR_LIMIT_DBFS: f64 = -50.0;
/// Half-width of the band around each tone left out of the spur search: the
/// flat-top main lobe (±5 bins) and two bins of margin, ±2.6 Hz.
const TONE_GUARD_HZ: f64 = 7.0 * RATE as f64 / FFT_LEN as f64;
/// Accepted timing error: 1 ms.
const ALIGN_TOLERANCE: i64 = 48;
/// Half-width of the correlation window around a click: 20 ms.
const CLICK_SPAN: usize = 960;
/// The largest lag searched: 50 ms, so an error of a whole encoder delay
/// (AAC's 2048 samples) is measured, not mistaken for another peak. With
/// [`CLICK_SPAN`] it keeps each search clear of the other click and the
/// tones' onsets.
const MAX_LAG: usize = 2_400;
/// The least correlation at the best lag for a click to count as found.
/// A codec-coded click correlates at 0.5 to 0.9 with the original; away from
/// it the windows correlate below 0.05.
const MIN_CORRELATION: f64 = 0.3;
/// AAC-LC frame length: the accepted error on the AAC decode's length.
const AAC_FRAME: usize = 1_024;
/// Opus frame length (20 ms): the accepted error on the Opus decode's length.
const OPUS_FRAME: usize = 960;

/// Samples at `rate` Hz in `ms` milliseconds.
fn at(ms: u32, rate: u32) -> usize {
    (u64::from(ms) * u64::from(rate) / 1_000) as usize
}

impl Feed {
    /// Interleaved samples at `rate` Hz with `channels` channels: silence, the
    /// click, silence, then the tone from its onset (phase 0) to the end.
    fn render(&self, rate: u32, channels: usize) -> Vec<f32> {
        let onset = at(self.onset_ms, rate);
        let mut x = vec![0.0; onset * channels];
        x[at(self.click_ms, rate) * channels..][..channels].fill(CLICK);
        let tone_frames = at(self.end_ms, rate) - onset;
        x.extend(wav::sine(
            self.freq,
            rate,
            tone_frames,
            amplitude_of_dbfs(self.level_dbfs),
            channels,
        ));
        x
    }

    fn write(&self, path: &Path) {
        let samples = self.render(self.rate, usize::from(self.channels));
        write_wav(path, self.rate, self.channels, self.format, &samples);
    }

    /// The tone's expected level in the program.
    fn program_dbfs(&self) -> f64 {
        self.level_dbfs + self.gain_db
    }
}

/// The ideal program (one channel; both carry it): each feed rendered
/// directly at 48 kHz, scaled by its gain, and summed.
fn program_reference() -> Vec<f64> {
    let mut sum = vec![0.0; at(FEED_A.end_ms.max(FEED_B.end_ms), RATE)];
    for feed in [&FEED_A, &FEED_B] {
        let gain = amplitude_of_dbfs(feed.gain_db);
        for (s, v) in sum.iter_mut().zip(feed.render(RATE, 1)) {
            *s += gain * f64::from(v);
        }
    }
    sum
}

/// Both renditions, decoded.
struct Renditions {
    aac: Decoded,
    opus: Decoded,
}

impl Renditions {
    /// `(name, decode, codec frame length)` of each rendition.
    fn each(&self) -> [(&'static str, &Decoded, usize); 2] {
        [
            ("aac", &self.aac, AAC_FRAME),
            ("opus", &self.opus, OPUS_FRAME),
        ]
    }
}

/// Packages the two feeds once (the tests share the result) and decodes both
/// renditions' playlists.
fn renditions() -> &'static Renditions {
    static RENDITIONS: OnceLock<Renditions> = OnceLock::new();
    RENDITIONS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
        FEED_A.write(&a);
        FEED_B.write(&b);
        let store = dir.path().join("store");
        let out = Command::new(env!("CARGO_BIN_EXE_onair"))
            .arg("package")
            .arg("--input")
            .arg(&a)
            .arg("--input")
            .arg(format!("{}:gain={}", b.display(), FEED_B.gain_db))
            .arg("--store")
            .arg(&store)
            .args(["--stream", "tone"])
            .output()
            .expect("run onair");
        assert!(
            out.status.success(),
            "onair package failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let decode = |r: &str| {
            analysis::ffmpeg_decode_by_timestamp(&store.join("tone").join(r).join("live.m3u8"))
        };
        Renditions {
            aac: decode("aac"),
            opus: decode("opus"),
        }
    })
}

#[test]
fn renditions_decode_cleanly_to_the_length_of_the_longer_feed() {
    let want = at(FEED_A.end_ms.max(FEED_B.end_ms), RATE);
    for (name, decoded, frame) in renditions().each() {
        assert!(
            decoded.stderr.is_empty(),
            "{name}: ffmpeg reported: {}",
            decoded.stderr
        );
        let got = decoded.frames();
        eprintln!(
            "{name}: {got} frames decoded, input {want} ({:+})",
            got as i64 - want as i64
        );
        assert!(
            got.abs_diff(want) <= frame,
            "{name}: decoded {got} frames, input has {want} (tolerance {frame})"
        );
    }
}

#[test]
fn each_tone_keeps_its_level_in_both_channels() {
    let steady = at(STEADY_MS.0, RATE)..at(STEADY_MS.1, RATE);
    for (name, decoded, _) in renditions().each() {
        for c in 0..2 {
            let x = analysis::channel(&decoded.samples, 2, c);
            let x = x
                .get(steady.clone())
                .expect("decode covers the steady span");
            for feed in [&FEED_A, &FEED_B] {
                let got = dbfs(analysis::tone_amplitude(x, feed.freq, f64::from(RATE)));
                let want = feed.program_dbfs();
                eprintln!("{name} channel {c}: {} Hz at {got:.3} dBFS", feed.freq);
                assert!(
                    (got - want).abs() <= LEVEL_TOLERANCE_DB,
                    "{name} channel {c}: {} Hz at {got:.2} dBFS, expected {want} ± {LEVEL_TOLERANCE_DB}",
                    feed.freq
                );
            }
        }
    }
}

#[test]
fn nothing_else_in_the_spectrum_above_minus_50_dbfs() {
    let start = at(STEADY_MS.0, RATE);
    assert!(start + FFT_LEN <= at(STEADY_MS.1, RATE));
    for (name, decoded, _) in renditions().each() {
        for c in 0..2 {
            let x = analysis::channel(&decoded.samples, 2, c);
            let x = x
                .get(start..start + FFT_LEN)
                .expect("decode covers the spectrum window");
            let spectrum = analysis::amplitude_spectrum(x);
            let (freq, amp) = analysis::strongest_other_component(
                &spectrum,
                f64::from(RATE),
                &[FEED_A.freq, FEED_B.freq],
                TONE_GUARD_HZ,
            );
            let level = dbfs(amp);
            eprintln!(
                "{name} channel {c}: strongest other component {level:.1} dBFS at {freq:.1} Hz"
            );
            assert!(
                level < SPUR_LIMIT_DBFS,
                "{name} channel {c}: {level:.1} dBFS at {freq:.1} Hz (limit {SPUR_LIMIT_DBFS})"
            );
        }
    }
}

/// Mid channel `(L + R) / 2` of a decode.
fn mid(decoded: &Decoded) -> Vec<f64> {
    decoded
        .samples
        .chunks_exact(2)
        .map(|f| (f64::from(f[0]) + f64::from(f[1])) / 2.0)
        .collect()
}

/// Finds the click at program time `at_ms` of `reference` in `x` and asserts
/// that it lies within [`ALIGN_TOLERANCE`] of where it should.
fn assert_aligned(what: &str, reference: &[f64], x: &[f64], at_ms: u32) {
    let centre = at(at_ms, RATE);
    let window = centre - CLICK_SPAN..centre + CLICK_SPAN;
    let (lag, corr) = analysis::best_lag(reference, x, window, MAX_LAG);
    eprintln!("{what}, click at {at_ms} ms: lag {lag} samples (correlation {corr:.3})");
    assert!(
        corr >= MIN_CORRELATION,
        "{what}, click at {at_ms} ms: not found (best correlation {corr:.3} at lag {lag})"
    );
    assert!(
        lag.abs() <= ALIGN_TOLERANCE,
        "{what}, click at {at_ms} ms: off by {lag} samples (correlation {corr:.3})"
    );
}

#[test]
fn both_renditions_are_aligned_with_the_input_and_each_other() {
    let renditions = renditions();
    let reference = program_reference();
    let (aac, opus) = (mid(&renditions.aac), mid(&renditions.opus));
    // Feed A's click is not resampled; feed B's passes through the resampler.
    for feed in [&FEED_A, &FEED_B] {
        assert_aligned("aac vs input", &reference, &aac, feed.click_ms);
        assert_aligned("opus vs input", &reference, &opus, feed.click_ms);
        assert_aligned("opus vs aac", &aac, &opus, feed.click_ms);
    }
}

/// The measurements themselves, on synthetic signals: a sine between two
/// bins and a weak one 43 dB below it, a tone 300 ppm sharp, and the lag of
/// a delayed click.
#[test]
fn analysis_reads_known_signals() {
    let rate = f64::from(RATE);
    let (strong, weak) = (amplitude_of_dbfs(-12.0), amplitude_of_dbfs(-55.0));
    let x: Vec<f64> = (0..FFT_LEN)
        .map(|n| {
            let t = n as f64 / rate;
            strong * (std::f64::consts::TAU * 440.2 * t).sin()
                + weak * (std::f64::consts::TAU * 3_000.0 * t + 1.0).sin()
        })
        .collect();
    let level = analysis::tone_dbfs(&x, 440.2, rate);
    assert!((level + 12.0).abs() < 0.01, "tone level read {level}");
    // A sine is a cosine a quarter turn late.
    let phase = analysis::tone_phasor(&x, 440.2, rate).phase();
    assert!(
        (phase + std::f64::consts::FRAC_PI_2).abs() < 1e-3,
        "tone phase read {phase}"
    );
    let spectrum = analysis::amplitude_spectrum(&x);
    let (freq, amp) = analysis::strongest_other_component(&spectrum, rate, &[440.2], TONE_GUARD_HZ);
    assert!((freq - 3_000.0).abs() < 1.0, "spur found at {freq} Hz");
    assert!(
        (dbfs(amp) + 55.0).abs() < 0.05,
        "spur read {} dBFS",
        dbfs(amp)
    );

    // One second of a 1 kHz tone 300 ppm sharp, as f32 like decoded audio.
    let sharp: Vec<f32> = (0..RATE)
        .map(|n| {
            let t = f64::from(n) / rate;
            (0.5 * (std::f64::consts::TAU * 1_000.0 * (1.0 + 300e-6) * t + 1.0).cos()) as f32
        })
        .collect();
    let ppm = analysis::frequency_offset_ppm(&sharp, 1_000.0, rate, 4_800);
    assert!((ppm - 300.0).abs() < 0.1, "frequency offset read {ppm} ppm");

    let mut reference = vec![0.0; 4_000];
    reference[2_000] = 1.0;
    let mut late = vec![0.0; 4_000];
    late[2_037] = 0.5;
    let (lag, corr) = analysis::best_lag(&reference, &late, 1_500..2_500, 200);
    assert_eq!(lag, 37);
    assert!((corr - 1.0).abs() < 1e-9);
}
