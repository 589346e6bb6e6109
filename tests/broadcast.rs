//! `onair live` with RTMP hosts, end to end: ffmpeg publishers push tones
//! at known levels to the binary, which mixes them into the program; the
//! stored renditions are decoded by timestamp and each tone is measured per
//! window, so a host that is lost, late, doubled or at the wrong level
//! shows at the program time where it happens.
//!
//! - `three_publishers_levels`: AAC mono 44.1 kHz, AAC stereo 48 kHz and
//!   MP3 stereo 44.1 kHz hosts at -18, -24 and -30 dBFS each come out at
//!   their level (±1 dB) in both renditions.
//! - `reconnect_has_no_gap`: a host whose connection dies comes back with
//!   the same key; the other host is never interrupted, the stream has no
//!   discontinuity or gap, and the host is silent only while away.
//! - `replace_same_key`: a second publisher with a host's key replaces the
//!   first, which the server disconnects.
//! - `hold_music_ducks`: the hold music plays until a host is on air and is
//!   ducked out under it.
//!
//! Levels are RMS dBFS per channel (see `common/broadcast.rs`); ±1 dB
//! allows for two lossy generations (ffmpeg's encoder, then onair's AAC or
//! Opus).

#[path = "common/broadcast.rs"]
mod broadcast;
#[path = "common/wav.rs"]
mod wav;

use std::ops::Range;
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, ProgramAudio, Publisher, RATE, Tone};
use onair::pipeline::RENDITIONS;
use wav::{WavFormat, sine, write_wav};

/// Allowed deviation of a tone from its expected level.
const TOLERANCE_DB: f64 = 1.0;
/// Measurement window: short enough that a dropout of a few frames shows.
const WINDOW_S: f64 = 0.1;
/// From a publisher's start to its steady level in the program: ffmpeg's
/// start-up and RTMP handshake, the jitter buffer (200 ms) and its fade-in.
const SETTLE_S: f64 = 1.5;
/// Audio measured up to this long before the stop: the last part is cut
/// at the interrupt, and publishers' last packets may not have arrived.
const END_MARGIN_S: f64 = 0.5;
/// A host that is not in the program is below this level.
const SILENCE_DBFS: f64 = -50.0;

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-91c2",
};
const CAROL: HostKey = HostKey {
    name: "carol",
    secret: "carol-secret-5e88",
};

/// Alice: AAC, mono, 44.1 kHz, 440 Hz at -18 dBFS.
const ALICE_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 44_100,
    channels: 1,
    codec: Codec::Aac,
};
/// Bob: AAC, stereo, 48 kHz, 1 kHz at -24 dBFS.
const BOB_TONE: Tone = Tone {
    freq_hz: 1_000.0,
    volume_db: -2.93,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};
/// Carol: MP3, stereo, 44.1 kHz, 2.5 kHz at -30 dBFS.
const CAROL_TONE: Tone = Tone {
    freq_hz: 2_500.0,
    volume_db: -8.93,
    sample_rate: 44_100,
    channels: 2,
    codec: Codec::Mp3,
};

/// The steady span of a host started at program time `started_s` and
/// heard until `until_s`.
fn steady(started_s: f64, until_s: f64) -> Range<f64> {
    started_s + SETTLE_S..until_s - END_MARGIN_S
}

/// Every rendition decoded, with its name.
fn decode_all(broadcast: &Broadcast) -> Vec<(&'static str, ProgramAudio)> {
    RENDITIONS
        .iter()
        .map(|&r| (r, broadcast.decode(r)))
        .collect()
}

/// Asserts that `tone` is at its expected level (±[`TOLERANCE_DB`]) in
/// every window of `span`, and prints what was measured.
fn assert_host_level(
    rendition: &str,
    program: &ProgramAudio,
    what: &str,
    tone: &Tone,
    span: Range<f64>,
) {
    let expected = tone.expected_rms_dbfs();
    let stats =
        program.assert_tone_level(what, tone.freq_hz, span, WINDOW_S, expected, TOLERANCE_DB);
    eprintln!("{rendition} {what}: expected {expected:.2} dBFS, measured {stats}");
}

/// Asserts every rendition's playlist is ended and seamless; returns the
/// last MSN.
fn assert_seamless_stream(broadcast: &Broadcast) -> u64 {
    let msns: Vec<Vec<u64>> = RENDITIONS
        .iter()
        .map(|r| broadcast.playlist(r).assert_seamless())
        .collect();
    assert!(
        msns.windows(2).all(|pair| pair[0] == pair[1]),
        "renditions list different segments: {msns:?}"
    );
    *msns[0].last().expect("segments listed")
}

/// Asserts `host` connected `times` times, per the log.
fn assert_connections(broadcast: &Broadcast, host: &HostKey, times: usize) {
    let field = format!("host=\"{}\"", host.name);
    let connected = broadcast.log_lines_with(&["host connected", &field]);
    assert_eq!(
        connected.len(),
        times,
        "{} should have connected {times} times; log:\n{}",
        host.name,
        broadcast.log()
    );
}

#[test]
fn three_publishers_levels() {
    const PUBLISH: Duration = Duration::from_secs(8);
    let wall = Instant::now();
    let mut broadcast = Broadcast::start("levels", &[ALICE, BOB, CAROL]);
    let hosts = [(ALICE, ALICE_TONE), (BOB, BOB_TONE), (CAROL, CAROL_TONE)];
    let publishers: Vec<Publisher> = hosts
        .iter()
        .map(|(key, tone)| Publisher::start(&broadcast.rtmp_url(key), tone))
        .collect();
    let last_start = publishers
        .iter()
        .map(|p| broadcast.program_time(p.started()))
        .fold(0.0, f64::max);
    std::thread::sleep(PUBLISH);
    let stopped = broadcast.stop();
    drop(publishers);

    for (key, _) in &hosts {
        assert_connections(&broadcast, key, 1);
    }
    assert_seamless_stream(&broadcast);
    let span = steady(last_start, stopped);
    for (rendition, program) in decode_all(&broadcast) {
        for (key, tone) in &hosts {
            assert_host_level(rendition, &program, key.name, tone, span.clone());
        }
    }
    eprintln!(
        "three_publishers_levels: {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn reconnect_has_no_gap() {
    const BEFORE_DROP: Duration = Duration::from_secs(4);
    const AWAY: Duration = Duration::from_secs(2);
    const AFTER_RETURN: Duration = Duration::from_secs(4);
    let wall = Instant::now();
    let mut broadcast = Broadcast::start("reconnect", &[ALICE, BOB]);
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    let mut bob = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let bob_started = broadcast.program_time(bob.started());
    std::thread::sleep(BEFORE_DROP);
    let dropped = broadcast.program_time(bob.kill());
    std::thread::sleep(AWAY);
    let bob_again = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let returned = broadcast.program_time(bob_again.started());
    std::thread::sleep(AFTER_RETURN);
    let stopped = broadcast.stop();
    drop((alice, bob_again));

    assert_connections(&broadcast, &BOB, 2);
    assert_connections(&broadcast, &ALICE, 1);
    let last_msn = assert_seamless_stream(&broadcast);
    let alice_span = steady(alice_started, stopped);
    for (rendition, program) in decode_all(&broadcast) {
        let level = |what: &str, tone: &Tone, span: Range<f64>| {
            assert_host_level(rendition, &program, what, tone, span);
        };
        level("alice throughout", &ALICE_TONE, alice_span.clone());
        level(
            "bob before the drop",
            &BOB_TONE,
            steady(bob_started, dropped),
        );
        level("bob after the return", &BOB_TONE, steady(returned, stopped));
        // Bob's buffered audio plays out and fades after the drop; his new
        // session is heard after its start-up and jitter buffer.
        let away = dropped + 0.6..returned;
        let stats = program.assert_tone_below(
            "bob while away",
            BOB_TONE.freq_hz,
            away,
            WINDOW_S,
            SILENCE_DBFS,
        );
        eprintln!("{rendition} bob while away: {stats}");
    }
    eprintln!(
        "reconnect_has_no_gap: dropped at {dropped:.2} s, back at {returned:.2} s, MSN 0..={last_msn}, {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn replace_same_key() {
    /// Bob's second publisher: another tone, so it is told from the first.
    const BOB_SECOND_TONE: Tone = Tone {
        freq_hz: 1_500.0,
        volume_db: -5.93,
        ..BOB_TONE
    };
    const BEFORE_REPLACE: Duration = Duration::from_secs(3);
    const AFTER_REPLACE: Duration = Duration::from_secs(4);
    /// Longest the replaced publisher may go on after the new one starts.
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
    let wall = Instant::now();
    let mut broadcast = Broadcast::start("replace", &[ALICE, BOB]);
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    let mut first = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_TONE);
    let first_started = broadcast.program_time(first.started());
    std::thread::sleep(BEFORE_REPLACE);
    let second = Publisher::start(&broadcast.rtmp_url(&BOB), &BOB_SECOND_TONE);
    let replaced = broadcast.program_time(second.started());
    let ended = first.wait_exit(CLOSE_TIMEOUT);
    assert!(
        ended.is_some(),
        "the replaced publisher still runs {CLOSE_TIMEOUT:?} after its replacement started; log:\n{}",
        broadcast.log()
    );
    let first_ended = broadcast.now();
    broadcast.sleep_until(replaced + AFTER_REPLACE.as_secs_f64());
    let stopped = broadcast.stop();
    drop((alice, second));

    assert_connections(&broadcast, &BOB, 2);
    let replacing = broadcast.log_lines_with(&["replacing its session", "host=\"bob\""]);
    assert_eq!(
        replacing.len(),
        1,
        "the log should say bob's session was replaced once; log:\n{}",
        broadcast.log()
    );
    assert_seamless_stream(&broadcast);
    let alice_span = steady(alice_started, stopped);
    for (rendition, program) in decode_all(&broadcast) {
        let level = |what: &str, tone: &Tone, span: Range<f64>| {
            assert_host_level(rendition, &program, what, tone, span);
        };
        level("alice throughout", &ALICE_TONE, alice_span.clone());
        level(
            "bob's first publisher",
            &BOB_TONE,
            steady(first_started, replaced),
        );
        level(
            "bob's second publisher",
            &BOB_SECOND_TONE,
            steady(replaced, stopped),
        );
        let stats = program.assert_tone_below(
            "bob's first publisher once replaced",
            BOB_TONE.freq_hz,
            steady(replaced, stopped),
            WINDOW_S,
            SILENCE_DBFS,
        );
        eprintln!("{rendition} bob's first publisher once replaced: {stats}");
    }
    eprintln!(
        "replace_same_key: replaced at {replaced:.2} s, first publisher gone by {first_ended:.2} s, {:.1} s",
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn hold_music_ducks() {
    /// The hold music: 300 Hz at -20 dBFS RMS, two seconds (600 whole
    /// periods, so the loop is seamless).
    const HOLD_HZ: f64 = 300.0;
    const HOLD_DBFS: f64 = -20.0;
    const HOLD_SECONDS: usize = 2;
    /// How far below its level the hold music is while a host is on air.
    const DUCK_DEPTH_DB: f64 = 40.0;
    /// Program time at which Alice starts publishing.
    const ALICE_AT_S: f64 = 3.0;
    const ALICE_ON_AIR: Duration = Duration::from_secs(5);
    /// The hold music is measured from here: past the file's start-up.
    const HOLD_FROM_S: f64 = 0.5;
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let hold = dir.path().join("hold.wav");
    let amplitude = 10f64.powf(HOLD_DBFS / 20.0) * std::f64::consts::SQRT_2;
    let frames = HOLD_SECONDS * RATE as usize;
    write_wav(
        &hold,
        RATE,
        2,
        WavFormat::Float32,
        &sine(HOLD_HZ, RATE, frames, amplitude, 2),
    );

    let mut broadcast = Broadcast::start_with(
        "hold",
        &[ALICE],
        [std::ffi::OsStr::new("--hold"), hold.as_os_str()],
    );
    broadcast.sleep_until(ALICE_AT_S);
    let alice = Publisher::start(&broadcast.rtmp_url(&ALICE), &ALICE_TONE);
    let alice_started = broadcast.program_time(alice.started());
    std::thread::sleep(ALICE_ON_AIR);
    let stopped = broadcast.stop();
    drop(alice);

    assert_seamless_stream(&broadcast);
    let on_air = steady(alice_started, stopped);
    for (rendition, program) in decode_all(&broadcast) {
        let before = program.assert_tone_level(
            "hold music before any host",
            HOLD_HZ,
            HOLD_FROM_S..alice_started,
            WINDOW_S,
            HOLD_DBFS,
            TOLERANCE_DB,
        );
        let ducked = program.assert_tone_below(
            "hold music under alice",
            HOLD_HZ,
            on_air.clone(),
            WINDOW_S,
            HOLD_DBFS - DUCK_DEPTH_DB,
        );
        let expected = ALICE_TONE.expected_rms_dbfs();
        let alice_level = program.assert_tone_level(
            "alice",
            ALICE_TONE.freq_hz,
            on_air.clone(),
            WINDOW_S,
            expected,
            TOLERANCE_DB,
        );
        eprintln!(
            "{rendition}: hold before alice {before}; hold under alice {ducked}; alice (expected {expected:.2}) {alice_level}"
        );
    }
    eprintln!("hold_music_ducks: {:.1} s", wall.elapsed().as_secs_f64());
}
