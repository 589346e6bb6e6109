//! `kill -9` of a live broadcast and its restart, against real peers: a
//! standalone `onair origin` over the same store keeps serving, an ffmpeg
//! listener keeps reading through it, and the restarted process continues
//! the same stream on its wall-clock timeline.
//!
//! What a listener must get: the same session (ffmpeg never stops reading),
//! no Media Sequence Number going backwards and no object name reused, the
//! span nobody published as silence on the stream's timeline (gap segments),
//! and the host again after the restart, at the same program time in both
//! renditions. The time from the restart to the listener hearing the host
//! again is printed (docs/BENCHMARKS.md, "Restart").

#[path = "common/analysis.rs"]
mod analysis;
#[allow(dead_code)]
#[path = "common/listener.rs"]
mod listener;
#[allow(dead_code)]
#[path = "common/processes.rs"]
mod processes;
#[allow(dead_code)]
#[path = "common/store_dir.rs"]
mod store_dir;
#[allow(dead_code)]
#[path = "common/wav.rs"]
mod wav;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use listener::{BLOCK, Listener};
use onair::hls::MediaPlaylist;
use processes::{onair_live, onair_origin};
use store_dir::{read_playlist, snapshot, wait_until};
use wav::{WavFormat, sine, write_wav};

const STREAM: &str = "restart";
const RATE: usize = 48_000;
/// Samples per segment: 6 parts of 320 ms.
const SEGMENT: usize = 92_160;
/// Amplitude of the host's tone.
const TONE: f64 = 0.25;
/// How long the broadcast stays dead between `kill -9` and the restart.
const DOWN: Duration = Duration::from_secs(4);
const STARTUP: Duration = Duration::from_secs(20);

fn require_ffmpeg() {
    let ran = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        ran.is_ok_and(|s| s.success()),
        "ffmpeg must be installed and on PATH (scripts/deps.sh)"
    );
}

/// Arrival of the first block with the tone after a silent one that
/// follows the tone first heard: the host again after the span nobody
/// published. (The tone heard after `since` may still be the killed run's,
/// buffered ahead of the listener.)
fn tone_back_after(listener: &Listener, since: Instant) -> Option<Instant> {
    let blocks = listener.blocks();
    let heard = blocks.iter().position(|(_, rms)| *rms > TONE / 4.0)?;
    let silent = heard
        + blocks[heard..]
            .iter()
            .position(|(_, rms)| *rms < TONE / 100.0)?;
    blocks[silent..]
        .iter()
        .find(|(at, rms)| *at >= since && *rms > TONE / 4.0)
        .map(|(at, _)| *at)
}

/// Index of the first 10 ms block of `samples` (interleaved stereo) after
/// `from` whose RMS exceeds half the tone's, in samples per channel.
fn onset_after(samples: &[f32], from: usize) -> Option<usize> {
    let frames = samples.len() / 2;
    (from / BLOCK..frames / BLOCK)
        .map(|b| b * BLOCK)
        .find(|&start| {
            let block = &samples[start * 2..(start + BLOCK) * 2];
            let rms = (block.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>()
                / block.len() as f64)
                .sqrt();
            rms > TONE / std::f64::consts::SQRT_2 / 2.0
        })
}

/// Index of the first silent block at or after `from`.
fn silence_after(samples: &[f32], from: usize) -> Option<usize> {
    let frames = samples.len() / 2;
    (from / BLOCK..frames / BLOCK)
        .map(|b| b * BLOCK)
        .find(|&start| {
            samples[start * 2..(start + BLOCK) * 2]
                .iter()
                .all(|x| x.abs() < 1e-3)
        })
}

fn media_objects(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = snapshot(store);
    all.retain(|key, _| !key.ends_with("/live.m3u8") && !key.ends_with("/index.m3u8"));
    all
}

#[test]
fn a_broadcast_killed_with_sigkill_continues_its_stream_after_a_restart() {
    require_ffmpeg();
    let dir = tempfile::tempdir().expect("temp dir");
    let tone = dir.path().join("tone.wav");
    write_wav(
        &tone,
        48_000,
        2,
        WavFormat::Float32,
        &sine(1000.0, 48_000, 5 * RATE, TONE, 2),
    );
    let store = dir.path().join("store");
    let stream_dir = store.join(STREAM);
    let aac_live = stream_dir.join("aac/live.m3u8");
    let logs: Vec<PathBuf> = (1..=2)
        .map(|i| dir.path().join(format!("live{i}.log")))
        .collect();
    let log = |i: usize| std::fs::read_to_string(&logs[i]).unwrap_or_default();

    let mut first = onair_live(&tone, &store, STREAM, &logs[0]);
    wait_until(STARTUP, || {
        read_playlist(&aac_live).filter(|p| p.segments.len() >= 2)
    })
    .unwrap_or_else(|| panic!("the first run did not publish; log:\n{}", log(0)));
    let (_origin, origin) = onair_origin(&store, &[]);
    let mut listener = Listener::start(&format!("http://{origin}/{STREAM}/aac/live.m3u8"));
    wait_until(STARTUP, || {
        (listener
            .blocks()
            .iter()
            .filter(|(_, rms)| *rms > TONE / 4.0)
            .count()
            > 100)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the listener hears nothing: {}",
            listener.stderr.lock().unwrap()
        )
    });

    // kill -9: no flush, no EXT-X-ENDLIST.
    first.kill_9();
    let killed = Instant::now();
    let before = media_objects(&store);
    let last_before = read_playlist(&aac_live).expect("playlist after the kill");
    assert!(
        !last_before.end_list,
        "a killed run cannot have ended its stream"
    );
    let last_msn = last_before.open_msn();
    std::thread::sleep(DOWN);
    assert!(
        listener.child.0.try_wait().ok().flatten().is_none(),
        "the listener gave up while the broadcast was down: {}",
        listener.stderr.lock().unwrap()
    );

    let restarted = Instant::now();
    let mut second = onair_live(&tone, &store, STREAM, &logs[1]);
    let heard = wait_until(STARTUP, || tone_back_after(&listener, killed)).unwrap_or_else(|| {
        panic!(
            "the listener did not hear the host again after the restart; log:\n{}\nffmpeg:\n{}",
            log(1),
            listener.stderr.lock().unwrap()
        )
    });
    let restart_to_audio = heard.saturating_duration_since(restarted);
    // Let the new run publish a few segments, then end it properly.
    let resumed = read_playlist(&aac_live).expect("playlist");
    wait_until(STARTUP, || {
        read_playlist(&aac_live).filter(|p| p.open_msn() >= resumed.open_msn() + 2)
    })
    .expect("the restarted run grows");
    let pid = second.0.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    wait_until(Duration::from_secs(10), || {
        second.0.try_wait().ok().flatten()
    })
    .unwrap_or_else(|| panic!("the restarted run did not stop; log:\n{}", log(1)));

    // The listener reads to the end of the stream and exits cleanly: it
    // kept its session across the kill.
    let mut listener_child = listener.child;
    let status = wait_until(Duration::from_secs(30), || {
        listener_child.0.try_wait().ok().flatten()
    })
    .expect("the listener reaches EXT-X-ENDLIST");
    let ffmpeg_log = listener.stderr.lock().unwrap().clone();
    assert!(status.success(), "ffmpeg listener failed: {ffmpeg_log}");

    // No name reused: every object of the first run is unchanged or gone.
    let after = media_objects(&store);
    for (key, bytes) in &before {
        if let Some(now) = after.get(key) {
            assert!(now == bytes, "{key} was rewritten by the restart");
        }
    }
    // The restart continues after the killed run's last part, on the
    // stream's timeline: dates are epoch + MSN × 1.92 s, the killed run's
    // open segment and the down span are gaps.
    let timing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(stream_dir.join("timing.json")).expect("timing"))
            .expect("JSON");
    let epoch_ms = timing["epoch_unix_ms"].as_i64().expect("epoch");
    let mut first_new = None;
    for r in ["aac", "opus"] {
        let p: MediaPlaylist =
            read_playlist(&stream_dir.join(r).join("live.m3u8")).expect("final playlist");
        assert!(p.end_list);
        for (s, msn) in p.segments.iter().zip(p.media_sequence..) {
            let pdt = s.program_date_time.expect("dated").timestamp_millis();
            assert_eq!(pdt, epoch_ms + (msn * 1920) as i64, "{r}: segment {msn}");
            assert!(
                store.join(STREAM).join(r).join(&s.uri).exists(),
                "{r}: {} is listed but not stored",
                s.uri
            );
            if msn == last_msn {
                assert!(
                    s.gap,
                    "{r}: the killed run's open segment {msn} is not a gap"
                );
            }
        }
        let new = p
            .segments
            .iter()
            .zip(p.media_sequence..)
            .find(|(s, msn)| *msn > last_msn && !s.gap)
            .map(|(_, msn)| msn)
            .expect("the restarted run's segments");
        assert!(
            p.media_sequence <= last_msn,
            "{r}: the killed run's segments are not listed"
        );
        first_new = Some(new);
    }
    let first_new = first_new.expect("renditions");

    // Both renditions: the host's tone until the killed run's last complete
    // segment, silence, and the tone again exactly where the restarted
    // run's first segment starts, at the same sample in both.
    let p = read_playlist(&aac_live).expect("playlist");
    let new_start = (first_new - p.media_sequence) as usize * SEGMENT;
    let killed_at = (last_msn - p.media_sequence) as usize * SEGMENT;
    let mut onsets = Vec::new();
    for r in ["aac", "opus"] {
        let decoded = analysis::ffmpeg_decode_by_timestamp(&stream_dir.join(r).join("live.m3u8"));
        assert!(
            decoded.stderr.is_empty(),
            "{r}: ffmpeg reports errors: {}",
            decoded.stderr
        );
        let silence = silence_after(&decoded.samples, killed_at.saturating_sub(SEGMENT))
            .unwrap_or_else(|| panic!("{r}: no silence for the span nobody published"));
        // The tone lasts to the end of the killed run's last complete
        // segment; the decoder's overlap with the first silent frame (one
        // AAC frame of 1024 samples at most) may ring a little past it.
        assert!(
            silence + BLOCK >= killed_at && silence <= killed_at + 1024 + 2 * BLOCK,
            "{r}: silence starts at {silence}, the killed run's open segment at {killed_at}"
        );
        let onset = onset_after(&decoded.samples, silence).expect("the tone again");
        assert!(
            onset.abs_diff(new_start) <= BLOCK,
            "{r}: the tone is back at sample {onset}, the restarted run starts at {new_start}"
        );
        // To the sample, past the splice (the first frames of a fresh
        // encoder after another's, which for AAC spoil the first 1024
        // samples): the phase of the tone, which started at `new_start` at
        // phase 0. With the onset within a block, this pins the program
        // time of the restarted run's audio in each rendition.
        let from = new_start + 2 * SEGMENT / 6;
        let left = analysis::channel(&decoded.samples[from * 2..(from + 9600) * 2], 2, 0);
        let phase = analysis::tone_phasor(&left, 1000.0, RATE as f64).phase();
        // sin(ωn) is cos(ωn − π/2): at `from` the phase is ω(from − start) − π/2.
        let expected = std::f64::consts::TAU * 1000.0 * (from - new_start) as f64 / RATE as f64
            - std::f64::consts::FRAC_PI_2;
        let error = (phase - expected).rem_euclid(std::f64::consts::TAU);
        let error_samples = error.min(std::f64::consts::TAU - error) / std::f64::consts::TAU * 48.0;
        assert!(
            error_samples < 1.0,
            "{r}: the restarted run's tone is {error_samples:.2} samples off its program time"
        );
        onsets.push(onset);
    }
    eprintln!(
        "restart: killed at MSN {last_msn}, down {DOWN:?}, restarted run from MSN {first_new}; \
         restart to audio at the listener (ffmpeg via a standalone origin): {} ms; \
         tone back at blocks {onsets:?} (AAC, Opus), run start {new_start}",
        restart_to_audio.as_millis()
    );
}
