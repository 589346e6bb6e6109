//! Mix-minus return feeds with real peers: two aiortc WHIP hosts
//! (tests/whip/whip_publish.py `--receive`, each sending its own tone and
//! recording what the broadcast sends back) and one ffmpeg RTMP host.
//!
//! - `hosts_hear_the_others_and_the_producer_but_not_themselves`: each WHIP host's
//!   return holds the other WHIP host's tone and the RTMP host's tone at
//!   their program levels (±2 dB, window by window) and its own tone at
//!   least 40 dB lower; the RTMP host hears its own return through a WHEP
//!   session (`/{stream}/whep`, its key), with the WHIP hosts and without
//!   itself. The producer talks to Bob (aiortc publishing a tone to
//!   `/{stream}/talkback?to=bob` with the admin token): Bob's return holds
//!   it at its level, the other returns and both renditions of the program
//!   do not. Then one host is muted: it still hears the others, and the
//!   others no longer hear it; the producer turns the talkback to the
//!   muted host (`PATCH /control/talkback`), who hears it, and Bob no
//!   longer does.
//!
//! Levels are compared with the program itself (the Opus rendition,
//! decoded over the same span), so what a host hears is checked against
//! what listeners hear. A recording's sample `i` arrived at about
//! `i / 48000` s after its first frame (aiortc delivers frames as they
//! come), which places it on the broadcast's program time.
//!
//! Requires `python3` with `aiortc` and ffmpeg; without them it fails.

#[path = "common/broadcast.rs"]
mod broadcast;
#[path = "common/wav.rs"]
mod wav;
#[path = "common/whip_peer.rs"]
mod whip_peer;

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, ProgramAudio, Publisher, Tone};
use whip_peer::{CONNECT_TIMEOUT, WhipEndpoint, WhipPublisher, control, wait_for_host_state};

const TOKEN: &str = "mix-minus-admin-41c9";

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f2a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-93de",
};
const CAROL: HostKey = HostKey {
    name: "carol",
    secret: "carol-secret-0b5c",
};

/// The WHIP hosts' tones, and their level.
const ALICE_HZ: f64 = 1_000.0;
const BOB_HZ: f64 = 1_500.0;
const WHIP_DBFS: f64 = -18.0;

/// The producer's talkback tone.
const TALKBACK_HZ: f64 = 2_200.0;

/// The RTMP host's tone.
const CAROL_TONE: Tone = Tone {
    freq_hz: 700.0,
    volume_db: 3.0,
    sample_rate: 48_000,
    channels: 1,
    codec: Codec::Aac,
};

/// How close a return's level must be to the program's, window by window.
const LEVEL_TOLERANCE_DB: f64 = 2.0;
/// How far below its program level a host's own tone must be in its return.
const OWN_SUPPRESSION_DB: f64 = 40.0;
/// Window of a level measurement, seconds.
const WINDOW_S: f64 = 0.1;
/// Kept clear of each phase's edges: a return follows the program by the
/// return path's latency (a few hundred ms), and a mute ramps.
const EDGE_S: f64 = 0.8;
/// Length of each phase, seconds.
const PHASE_S: f64 = 4.0;
/// Longest wait for a host to change state.
const STATE_TIMEOUT: Duration = Duration::from_secs(8);

/// A WHIP host that publishes a tone and records its return.
struct Host {
    publisher: WhipPublisher,
    recording: std::path::PathBuf,
    /// Program time of the recording's first frame.
    first_frame: f64,
}

impl Host {
    fn start(
        broadcast: &Broadcast,
        whip: &WhipEndpoint,
        dir: &Path,
        key: &HostKey,
        hz: f64,
    ) -> Self {
        let wav = whip_peer::tone_wav(dir, hz, WHIP_DBFS);
        Self::run(broadcast, &wav, &whip.url, dir, key, &[])
    }

    /// Only listens to `key`'s return, over WHEP.
    fn listen(broadcast: &Broadcast, whip: &WhipEndpoint, dir: &Path, key: &HostKey) -> Self {
        let whep = format!(
            "{}/whep",
            whip.url.strip_suffix("/whip").expect("a WHIP URL")
        );
        Self::run(broadcast, Path::new("-"), &whep, dir, key, &["--whep"])
    }

    fn run(
        broadcast: &Broadcast,
        wav: &Path,
        url: &str,
        dir: &Path,
        key: &HostKey,
        extra: &[&str],
    ) -> Self {
        let recording = dir.join(format!("{}-return.wav", key.name));
        let recording_arg = recording.to_str().expect("UTF-8 path");
        let mut args = vec!["--receive", recording_arg];
        args.extend_from_slice(extra);
        let mut publisher = WhipPublisher::start(wav, url, key.secret, &args);
        publisher.wait_state(&["connected"], CONNECT_TIMEOUT);
        let (_, at) = publisher.wait_for("receiving", |_| true, CONNECT_TIMEOUT);
        Self {
            publisher,
            recording,
            first_frame: broadcast.program_time(at),
        }
    }

    /// Ends the session and waits for the recording to be complete.
    fn finish(&mut self) -> ProgramAudio {
        self.publisher.stop();
        self.publisher
            .wait_for("state", |s| s == "closed-by-script", CONNECT_TIMEOUT);
        ProgramAudio::decode(&self.recording)
    }
}

/// The median level of a tone over `span` (program seconds) in `audio`,
/// whose second 0 is program time `offset`.
fn median_dbfs(audio: &ProgramAudio, offset: f64, hz: f64, span: &Range<f64>) -> f64 {
    let mut levels: Vec<f64> = audio
        .tone_windows(hz, span.start - offset..span.end - offset, WINDOW_S)
        .iter()
        .map(|w| w.dbfs[0])
        .collect();
    assert!(!levels.is_empty(), "nothing to measure in {span:?}");
    levels.sort_by(f64::total_cmp);
    levels[levels.len() / 2]
}

/// Asserts a return holds a tone at the program's level over `span`, in
/// every window.
fn assert_heard(
    what: &str,
    ret: &ProgramAudio,
    offset: f64,
    program: &ProgramAudio,
    hz: f64,
    span: &Range<f64>,
) {
    let expected = median_dbfs(program, 0.0, hz, span);
    assert!(
        expected > -30.0,
        "{what}: the program should hold the tone over {span:.2?}, it is at {expected:.2} dBFS"
    );
    ret.assert_tone_level(
        what,
        hz,
        span.start - offset..span.end - offset,
        WINDOW_S,
        expected,
        LEVEL_TOLERANCE_DB,
    );
}

/// Asserts a return holds a tone at least [`OWN_SUPPRESSION_DB`] below
/// `program_dbfs` over `span`.
fn assert_not_heard(
    what: &str,
    ret: &ProgramAudio,
    offset: f64,
    hz: f64,
    span: &Range<f64>,
    program_dbfs: f64,
) -> broadcast::LevelStats {
    ret.assert_tone_below(
        what,
        hz,
        span.start - offset..span.end - offset,
        WINDOW_S,
        program_dbfs - OWN_SUPPRESSION_DB,
    )
}

#[test]
fn hosts_hear_the_others_and_the_producer_but_not_themselves() {
    let wall = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broadcast = Broadcast::start_with(
        "mix-minus",
        &[ALICE, BOB, CAROL],
        ["--webrtc-udp", "127.0.0.1:0", "--admin-token", TOKEN],
    );
    let whip = WhipEndpoint::of(&broadcast);
    let http = broadcast.http_addr();

    let carol = Publisher::start(&broadcast.rtmp_url(&CAROL), &CAROL_TONE);
    let mut alice = Host::start(&broadcast, &whip, dir.path(), &ALICE, ALICE_HZ);
    let mut bob = Host::start(&broadcast, &whip, dir.path(), &BOB, BOB_HZ);
    let mut carol_listens = Host::listen(&broadcast, &whip, dir.path(), &CAROL);
    // Talkback is the producer's: a host's key does not open it.
    let (status, _) = control(http, ALICE.secret, "POST", "/mix-minus/talkback", None);
    assert_eq!(status, 401);
    let talkback_wav = whip_peer::tone_wav(dir.path(), TALKBACK_HZ, WHIP_DBFS);
    let talkback_url = format!(
        "{}/talkback?to=bob",
        whip.url.strip_suffix("/whip").expect("a WHIP URL")
    );
    let mut producer = WhipPublisher::start(&talkback_wav, &talkback_url, TOKEN, &[]);
    producer.wait_state(&["connected"], CONNECT_TIMEOUT);
    for key in [ALICE, BOB, CAROL] {
        let host = wait_for_host_state(http, TOKEN, key.name, "on-air", STATE_TIMEOUT);
        assert_eq!(host["returns"], 1, "{host}");
        assert_eq!(host["talkback"], key.name == BOB.name, "{host}");
    }

    // Everyone on air.
    let all_on = broadcast.now() + 1.0;
    broadcast.sleep_until(all_on + PHASE_S);
    // Alice muted: listeners and Bob no longer hear her; she hears them.
    let (status, host) = control(
        http,
        TOKEN,
        "PATCH",
        "/control/hosts/alice",
        Some(r#"{"muted": true}"#),
    );
    assert_eq!(status, 200, "{host}");
    // The producer turns to Alice, without reconnecting.
    let (status, hearing) = control(
        http,
        TOKEN,
        "PATCH",
        "/control/talkback",
        Some(r#"{"to": "alice"}"#),
    );
    assert_eq!(status, 200, "{hearing}");
    assert_eq!(hearing[0]["name"], "alice", "{hearing}");
    assert_eq!(hearing.as_array().map(Vec::len), Some(1), "{hearing}");
    let muted = broadcast.now();
    broadcast.sleep_until(muted + PHASE_S);
    let ended = broadcast.now();

    let alice_hears = alice.finish();
    let bob_hears = bob.finish();
    let carol_hears = carol_listens.finish();
    producer.stop();
    broadcast.stop();
    drop(carol);
    let program = broadcast.decode("opus");
    let aac = broadcast.decode("aac");

    let together = all_on + EDGE_S..muted - EDGE_S;
    let alice_muted = muted + EDGE_S..ended - EDGE_S;
    let (a, b, c) = (
        alice.first_frame,
        bob.first_frame,
        carol_listens.first_frame,
    );
    let carol_hz = CAROL_TONE.freq_hz;

    // Together: each hears the other two, not itself.
    assert_heard(
        "bob in alice's return",
        &alice_hears,
        a,
        &program,
        BOB_HZ,
        &together,
    );
    assert_heard(
        "carol in alice's return",
        &alice_hears,
        a,
        &program,
        carol_hz,
        &together,
    );
    assert_heard(
        "alice in bob's return",
        &bob_hears,
        b,
        &program,
        ALICE_HZ,
        &together,
    );
    assert_heard(
        "carol in bob's return",
        &bob_hears,
        b,
        &program,
        carol_hz,
        &together,
    );
    // Talkback: in Bob's ears only, never on air.
    bob_hears.assert_tone_level(
        "talkback in bob's return",
        TALKBACK_HZ,
        together.start - b..together.end - b,
        WINDOW_S,
        WHIP_DBFS,
        LEVEL_TOLERANCE_DB,
    );
    for (what, ret, offset) in [
        ("talkback in alice's return", &alice_hears, a),
        ("talkback in carol's return", &carol_hears, c),
        ("talkback in the program (opus)", &program, 0.0),
        ("talkback in the program (aac)", &aac, 0.0),
    ] {
        assert_not_heard(what, ret, offset, TALKBACK_HZ, &together, WHIP_DBFS);
    }

    // Turned to Alice (muted: the talkback is still in her ears).
    alice_hears.assert_tone_level(
        "talkback in alice's return, turned to her",
        TALKBACK_HZ,
        alice_muted.start - a..alice_muted.end - a,
        WINDOW_S,
        WHIP_DBFS,
        LEVEL_TOLERANCE_DB,
    );
    for (what, ret, offset) in [
        ("talkback in bob's return, turned away", &bob_hears, b),
        ("talkback in the program, turned to alice", &program, 0.0),
    ] {
        assert_not_heard(what, ret, offset, TALKBACK_HZ, &alice_muted, WHIP_DBFS);
    }

    // The RTMP host, over WHEP, hears both WHIP hosts and not itself.
    assert_heard(
        "alice in carol's return",
        &carol_hears,
        c,
        &program,
        ALICE_HZ,
        &together,
    );
    assert_heard(
        "bob in carol's return",
        &carol_hears,
        c,
        &program,
        BOB_HZ,
        &together,
    );
    let carol_level = median_dbfs(&program, 0.0, carol_hz, &together);
    assert_not_heard(
        "carol in her own return",
        &carol_hears,
        c,
        carol_hz,
        &together,
        carol_level,
    );
    let alice_level = median_dbfs(&program, 0.0, ALICE_HZ, &together);
    let bob_level = median_dbfs(&program, 0.0, BOB_HZ, &together);
    let own = assert_not_heard(
        "alice in her own return",
        &alice_hears,
        a,
        ALICE_HZ,
        &together,
        alice_level,
    );
    assert_not_heard(
        "bob in his own return",
        &bob_hears,
        b,
        BOB_HZ,
        &together,
        bob_level,
    );

    // Alice muted: off the program and out of Bob's return; she still
    // hears Bob and Carol.
    program.assert_tone_below(
        "alice muted",
        ALICE_HZ,
        alice_muted.clone(),
        WINDOW_S,
        -60.0,
    );
    assert_heard(
        "bob while alice is muted",
        &alice_hears,
        a,
        &program,
        BOB_HZ,
        &alice_muted,
    );
    assert_heard(
        "carol while alice is muted",
        &alice_hears,
        a,
        &program,
        carol_hz,
        &alice_muted,
    );
    assert_heard(
        "carol in bob's return, alice muted",
        &bob_hears,
        b,
        &program,
        carol_hz,
        &alice_muted,
    );
    assert_not_heard(
        "muted alice in carol's return",
        &carol_hears,
        c,
        ALICE_HZ,
        &alice_muted,
        alice_level,
    );
    assert_not_heard(
        "muted alice in bob's return",
        &bob_hears,
        b,
        ALICE_HZ,
        &alice_muted,
        alice_level,
    );
    eprintln!(
        "alice's own tone in her return: at most {:.1} dBFS (program {alice_level:.1}); wall time {:?}",
        own.max,
        wall.elapsed()
    );
}
