//! Decoding real files made by ffmpeg in every supported format and rate, and
//! the errors for broken files.

#[path = "common/analysis.rs"]
mod analysis;
#[path = "common/wav.rs"]
mod wav;

use std::path::{Path, PathBuf};
use std::process::Command;

use onair::audio::{Converter, FileSource, SourceError, SourceOptions};
use wav::{WavFormat, sine, wav_bytes, write_wav};

/// Runs ffmpeg; a missing ffmpeg fails the test.
fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed for these tests");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// Frames ffmpeg itself decodes from `path` (downmixed to one channel).
fn ffmpeg_frames(path: &Path) -> u64 {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-ac", "1", "-f", "f32le", "-c:a", "pcm_f32le", "-"])
        .output()
        .expect("ffmpeg must be installed for these tests");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}",
        path.display()
    );
    out.stdout.len() as u64 / 4
}

/// A 1 kHz sine at amplitude 1/8 (ffmpeg's `sine` source), 1.5 s.
fn make_tone(dir: &Path, name: &str, rate: u32, channels: u32, codec_args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let src = format!("sine=frequency=1000:sample_rate={rate}:duration=1.5");
    let mut args = vec!["-f", "lavfi", "-i", &src];
    let pan = "pan=stereo|c0=c0|c1=c0";
    if channels == 2 {
        args.extend(["-af", pan]);
    }
    args.extend(codec_args);
    let p = path.to_str().expect("utf-8 temp path");
    args.push(p);
    ffmpeg(&args);
    path
}

/// Decodes a whole non-looping file, checking that pts are continuous.
fn decode_all(path: &Path) -> Vec<f32> {
    let mut src = FileSource::open(path, SourceOptions::default())
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut out = Vec::new();
    while let Some(block) = src
        .next_block()
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()))
    {
        assert_eq!(
            block.pts,
            (out.len() / 2) as u64,
            "{}: pts gap",
            path.display()
        );
        assert!(!block.samples.is_empty());
        out.extend_from_slice(&block.samples);
    }
    out
}

/// Frequency (Hz) and peak amplitude of the tone near `nominal` Hz in `x`
/// (one channel at 48 kHz). The frequency comes from the phase advance over
/// 10 ms windows, unambiguous within ±50 Hz of `nominal`; a tone further off
/// also reads far below its level.
fn tone_of(x: &[f32], nominal: f64) -> (f64, f64) {
    const RATE: f64 = 48_000.0;
    const WINDOW: usize = 480;
    let ppm = analysis::frequency_offset_ppm(x, nominal, RATE, WINDOW);
    let freq = nominal * (1.0 + ppm * 1e-6);
    (freq, analysis::tone_amplitude(x, nominal, RATE))
}

fn check_tone(path: &Path, rate: u32, lossy_frames: Option<u64>, level_db: f64) {
    let out = decode_all(path);
    let frames = (out.len() / 2) as u64;
    let want = Converter::output_len(ffmpeg_frames(path), rate);
    match lossy_frames {
        None => assert_eq!(frames, want, "{}: length", path.display()),
        Some(pad) => {
            let tol = Converter::output_len(pad, rate);
            assert!(
                frames.abs_diff(want) <= tol,
                "{}: {frames} frames, ffmpeg {want} (±{tol})",
                path.display()
            );
        }
    }
    let left: Vec<f32> = out.iter().step_by(2).copied().collect();
    let right: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
    // Lossy stereo coding (M/S) may leave tiny differences between channels.
    let max_diff = left
        .iter()
        .zip(&right)
        .fold(0.0f32, |m, (l, r)| m.max((l - r).abs()));
    let tol = if lossy_frames.is_some() { 0.01 } else { 0.0 };
    assert!(
        max_diff <= tol,
        "{}: channels differ by {max_diff}",
        path.display()
    );
    let mid = &left[12_000..60_000];
    let (freq, amp) = tone_of(mid, 1000.0);
    assert!(
        (freq - 1000.0).abs() < 0.5,
        "{}: frequency {freq}",
        path.display()
    );
    let db = analysis::dbfs(amp / 0.125);
    assert!(
        db.abs() < level_db,
        "{}: level off by {db} dB",
        path.display()
    );
}

const RATES: [u32; 5] = [8_000, 22_050, 44_100, 48_000, 96_000];

#[test]
fn wav_in_every_sample_format_rate_and_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (codec, tag) in [
        ("pcm_s16le", "s16"),
        ("pcm_s24le", "s24"),
        ("pcm_f32le", "f32"),
    ] {
        for rate in RATES {
            for ch in [1, 2] {
                let p = make_tone(
                    dir.path(),
                    &format!("{tag}-{rate}-{ch}.wav"),
                    rate,
                    ch,
                    &["-c:a", codec],
                );
                check_tone(&p, rate, None, 0.1);
            }
        }
    }
}

#[test]
fn flac_at_every_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in RATES {
        for ch in [1, 2] {
            let p = make_tone(
                dir.path(),
                &format!("{rate}-{ch}.flac"),
                rate,
                ch,
                &["-c:a", "flac"],
            );
            check_tone(&p, rate, None, 0.1);
        }
    }
}

#[test]
fn mp3_matches_ffmpeg_within_codec_padding() {
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in [8_000, 22_050, 44_100, 48_000] {
        for ch in [1, 2] {
            let p = make_tone(
                dir.path(),
                &format!("{rate}-{ch}.mp3"),
                rate,
                ch,
                &["-c:a", "libmp3lame", "-b:a", "128k"],
            );
            check_tone(&p, rate, Some(2 * 1152), 0.5);
        }
    }
}

#[test]
fn aac_adts_and_m4a_match_ffmpeg_within_codec_padding() {
    let dir = tempfile::tempdir().expect("tempdir");
    for rate in [22_050, 44_100, 48_000, 96_000] {
        for ch in [1, 2] {
            let adts = make_tone(
                dir.path(),
                &format!("{rate}-{ch}.aac"),
                rate,
                ch,
                &["-c:a", "aac", "-b:a", "128k", "-f", "adts"],
            );
            check_tone(&adts, rate, Some(2 * 1024), 0.5);
            let m4a = make_tone(
                dir.path(),
                &format!("{rate}-{ch}.m4a"),
                rate,
                ch,
                &["-c:a", "aac", "-b:a", "128k"],
            );
            check_tone(&m4a, rate, Some(2 * 1024), 0.5);
        }
    }
}

#[test]
fn speech_fixtures_decode_to_their_length() {
    // Tests run from the package root, which holds `fixtures/`.
    for name in ["host-a.flac", "host-b.flac"] {
        let path = Path::new("fixtures").join(name);
        let src = FileSource::open(&path, SourceOptions::default()).expect("open fixture");
        let native = src.native_duration().expect("FLAC declares its length");
        assert_eq!(native.rate, 48_000);
        let out = decode_all(&path);
        assert_eq!((out.len() / 2) as u64, native.program_frames());
        let peak = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak > 0.1, "{name} is silent");
    }
}

fn expect_err(path: &Path) -> SourceError {
    let mut src = match FileSource::open(path, SourceOptions::default()) {
        Ok(s) => s,
        Err(e) => return e,
    };
    loop {
        match src.next_block() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{}: decoded without error", path.display()),
            Err(e) => return e,
        }
    }
}

fn assert_names(e: &SourceError, path: &Path) {
    let text = e.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name the file: {text}"
    );
}

#[test]
fn missing_file_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.wav");
    let e = expect_err(&path);
    assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
    assert_names(&e, &path);
}

#[test]
fn text_file_named_wav_is_not_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.wav");
    std::fs::write(&path, "These are show notes, not audio.\n".repeat(50)).expect("write");
    let e = expect_err(&path);
    assert!(matches!(e, SourceError::NotAudio { .. }), "{e:?}");
    assert_names(&e, &path);
}

#[test]
fn truncated_wav_reports_truncation_after_its_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.wav");
    let bytes = wav_bytes(
        44_100,
        2,
        WavFormat::Int16,
        &sine(1000.0, 44_100, 44_100, 0.5, 2),
    );
    // Keep the header (which declares 1 s) and about 0.4 s of the data.
    std::fs::write(&path, &bytes[..44 + 4 * 17_640 + 3]).expect("write");
    let mut src = FileSource::open(&path, SourceOptions::default()).expect("header is fine");
    let mut frames = 0u64;
    let err = loop {
        match src.next_block() {
            Ok(Some(b)) => frames += b.frames(),
            Ok(None) => panic!("truncation not reported"),
            Err(e) => break e,
        }
    };
    match &err {
        SourceError::Truncated {
            decoded,
            declared,
            rate,
            ..
        } => {
            assert_eq!((*decoded, *declared, *rate), (17_640, 44_100, 44_100));
        }
        other => panic!("wrong error {other:?}"),
    }
    assert_names(&err, &path);
    assert_eq!(
        frames,
        Converter::output_len(17_640, 44_100),
        "the audio before the cut is delivered"
    );
    assert!(src.next_block().expect("after the error").is_none());
}

#[test]
fn truncated_flac_reports_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = make_tone(dir.path(), "full.flac", 44_100, 2, &["-c:a", "flac"]);
    let bytes = std::fs::read(&full).expect("read");
    let path = dir.path().join("cut.flac");
    std::fs::write(&path, &bytes[..bytes.len() * 6 / 10]).expect("write");
    let e = expect_err(&path);
    assert!(matches!(e, SourceError::Truncated { .. }), "{e:?}");
    assert_names(&e, &path);
}

#[test]
fn looping_48k_repeats_bit_exactly_with_continuous_pts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loop.wav");
    // A ramp, so any dropped or repeated frame at the seam shows.
    let frames = 7_001;
    let ramp: Vec<f32> = (0..frames)
        .flat_map(|i| [i as f32 / 8192.0 - 0.4; 2])
        .collect();
    write_wav(&path, 48_000, 2, WavFormat::Float32, &ramp);
    let mut src = FileSource::open(&path, SourceOptions { looping: true }).expect("open");
    let mut out = Vec::new();
    while out.len() < 5 * ramp.len() {
        let b = src
            .next_block()
            .expect("decode")
            .expect("looping never ends");
        assert_eq!(b.pts, (out.len() / 2) as u64);
        out.extend_from_slice(&b.samples);
    }
    for pass in out.chunks(ramp.len()).take(5) {
        assert_eq!(pass, &ramp[..pass.len()]);
    }
}

#[test]
fn looping_44k1_is_seamless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("loop.wav");
    // Exactly 100 periods of 441 Hz in 0.1 s: the loop is one continuous sine.
    let one = sine(441.0, 44_100, 10_000, 0.5, 2);
    write_wav(&path, 44_100, 2, WavFormat::Float32, &one);
    let mut src = FileSource::open(&path, SourceOptions { looping: true }).expect("open");
    let mut out = Vec::new();
    while out.len() < 2 * 48_000 {
        let b = src
            .next_block()
            .expect("decode")
            .expect("looping never ends");
        assert_eq!(b.pts, (out.len() / 2) as u64, "pts gap");
        out.extend_from_slice(&b.samples);
    }
    // After the first ~10 ms of filter start-up, every frame (across four
    // seams) matches the endless sine.
    for (k, v) in out.iter().step_by(2).enumerate().skip(1_000) {
        let ideal = 0.5 * (std::f64::consts::TAU * 441.0 * k as f64 / 48_000.0).sin();
        assert!(
            (f64::from(*v) - ideal).abs() < 2e-3,
            "frame {k}: {v} vs {ideal}"
        );
    }
}
