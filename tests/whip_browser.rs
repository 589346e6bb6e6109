//! The host studio page, `/{stream}/host`, in a real browser: headless
//! Chromium (driven by npm `playwright-core` from `tests/browser/host.js`)
//! with a fake microphone playing a WAV tone publishes over WHIP (RFC 9725)
//! to `onair live --webrtc-udp`, next to an ffmpeg RTMP host, while a second
//! Chromium listens through the listener page (`tests/browser/listen.js`,
//! hls.js).
//!
//! - `browser_host_goes_on_air_mutes_and_leaves`: the host types the key,
//!   goes on air, mutes, unmutes and goes off air. The page must show ON AIR,
//!   a connected peer connection and a meter reading the microphone's level;
//!   the listener must hear sound; and both stored renditions, decoded by
//!   timestamp, must carry the browser host's tone at its level while it is
//!   live and unmuted, nothing of it while muted and after it left (its
//!   `DELETE` ends the session), and the RTMP host's tone throughout.
//! - `browser_host_with_a_wrong_key_stops_and_says_so`: the kiosk form of
//!   the page (`#token=KEY&start=1`, no click) with a wrong key: one `POST`,
//!   answered 401, no retry, and a message that names the key.
//! - `browser_host_goes_on_air_over_ice_tcp_when_no_udp_is_offered`: onair
//!   offers only its passive ICE-TCP candidate (RFC 6544); the page's
//!   connection selects a TCP pair and the tone is in both renditions.
//! - `browser_host_goes_on_air_through_turn_when_only_relay_works`: the
//!   page may use relayed candidates only (`iceTransportPolicy: "relay"`,
//!   as on a network where only a TURN server is reachable); onair hands it
//!   coturn (started here on loopback) with credentials minted from the
//!   shared secret, and the tone goes through the relay into both
//!   renditions.
//! - `two_browser_hosts_hear_each_other_and_not_themselves`: two host pages
//!   (two Chromiums, each with its own profile and fake microphone: 1000 Hz
//!   and 1500 Hz at -18 dBFS) go on air with their own keys; the pages
//!   offer `sendrecv`, so each is sent its mix-minus return and plays it.
//!   Measured in each page's Web Audio graph while both are on air (each
//!   page stays on air until the other has measured), the return must
//!   carry the other host's tone at its level and the host's own tone at
//!   least 40 dB lower; each page's room list must show both hosts on air
//!   and speaking. One page then switches to speakers: the microphone is
//!   opened again with echo cancellation and swapped in without a new
//!   offer.
//!
//! `scripts/browser-deps.sh` installs Chromium and the npm packages; without
//! them these tests fail, they never skip. Screenshots go to
//! `$CARGO_TARGET_TMPDIR`.

#[path = "common/browser_tools.rs"]
mod browser_tools;
#[path = "common/broadcast.rs"]
mod live;
#[path = "common/wav.rs"]
mod wav;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use browser_tools::{browser_dir, require_browser_tools};
use live::{Broadcast, Codec, HostKey, Publisher, Tone};
use onair::pipeline::RENDITIONS;
use wav::{WavFormat, sine, write_wav};

const STREAM: &str = "studio";
/// The browser host: publishes over WHIP with this key as bearer token.
const BROWSER_HOST: HostKey = HostKey {
    name: "carol",
    secret: "carol-whip-secret",
};
/// The second browser host, in the test of two hosts hearing each other.
const SECOND_BROWSER_HOST: HostKey = HostKey {
    name: "dave",
    secret: "dave-whip-secret",
};
/// The RTMP host beside it.
const RTMP_HOST: HostKey = HostKey {
    name: "alice",
    secret: "alice-rtmp-secret",
};

/// The fake microphone: a 660 Hz sine at -12 dBFS RMS in both channels,
/// 30 s long, longer than the test publishes: Chromium's fake capture
/// drops a few ms where it loops a file, which would show as a dip in one
/// window.
const MIC_TONE_HZ: f64 = 660.0;
const MIC_RMS_DBFS: f64 = -12.0;
const MIC_SECONDS: usize = 30;
const MIC_RATE: u32 = 48_000;
/// The RTMP host: 440 Hz at ffmpeg's sine level +6 dB, about -15.1 dBFS.
const RTMP_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 6.0,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};

/// The browser host's script, in seconds after it is on air.
const MUTE_AT_S: f64 = 3.5;
const UNMUTE_AT_S: f64 = 6.0;
const OFF_AIR_AT_S: f64 = 9.0;
/// How long the broadcast runs on after the browser host left, so its
/// absence is measured.
const AFTER_OFF_AIR_S: f64 = 2.0;

/// The RTMP host's level: two lossy generations (ffmpeg's AAC, then
/// onair's AAC or Opus), as in tests/broadcast.rs.
const RTMP_TOLERANCE_DB: f64 = 1.0;
/// The browser host's level against the WAV's. The page turns echo
/// cancellation, noise suppression and automatic gain control off, so
/// Chromium's capture path is unity gain; what is left is two lossy
/// generations again (Chromium's Opus, then onair's encoders) and Chromium's
/// mono/stereo handling of identical channels. A page that left the call
/// processing on would move the level by more (AGC aims at about -20 dBFS
/// peak-to-loudness, noise suppression attenuates a steady tone).
const BROWSER_TOLERANCE_DB: f64 = 2.0;
/// Measurement window, as in tests/broadcast.rs.
const WINDOW_S: f64 = 0.1;
/// From a change at the browser (on air, mute, unmute) to its steady effect
/// in the program: RTP and the jitter buffer (200 ms), the fade of a host
/// going silent or coming back, and the page's sampling of the clock.
const SETTLE_S: f64 = 1.0;
/// Audio measured up to this long before a later change or the stop.
const END_MARGIN_S: f64 = 0.3;
/// A host that is not in the program is below this level.
const SILENCE_DBFS: f64 = -50.0;
/// What the page's meter must read while unmuted: the WAV's RMS level,
/// give or take the analyser's 2048-sample frame (a whole number of cycles
/// only by chance).
const METER_TOLERANCE_DB: f64 = 1.0;
/// Quieter than this (RMS, median over the analyser's reads) is silence,
/// as in tests/browser.rs.
const LISTENER_MIN_RMS: f64 = 0.05;
/// The listener joins once this segment is stored (1.92 s segments).
const LISTENER_JOIN_AFTER_SEGMENT: u32 = 1;
/// How far the listener's playback must get.
const LISTENER_SECONDS: f64 = 4.0;

/// The two browser hosts' tones in the return test, as in
/// tests/mix_minus.rs: far enough apart (500 Hz, 21 bins of the page's
/// 8192-sample Hann frames) that one does not leak into the other's
/// measurement.
const RETURN_TONES_HZ: [f64; 2] = [1_000.0, 1_500.0];
const RETURN_MIC_DBFS: f64 = -18.0;
/// The other host's tone in a page's return against its microphone's
/// level. The program carries it within BROWSER_TOLERANCE_DB (capture at
/// unity gain, Chromium's Opus, onair's mix at unity); the return adds one
/// more lossy generation (onair's Opus for returns) and Chromium's decoding
/// and jitter buffer, whose time stretching keeps a steady tone's level, and
/// the page's Web Audio path is unity gain. A pure tone loses well under
/// 0.5 dB per Opus generation, so 3 dB is slack, not a guess.
const RETURN_TOLERANCE_DB: f64 = 3.0;
/// How far below the other host's tone a host's own tone must be in its
/// return, as in tests/mix_minus.rs.
const OWN_SUPPRESSION_DB: f64 = 40.0;
/// How long each page measures its return once the other's tone arrived.
const RETURN_MEASURE_S: f64 = 4.0;

/// One test at a time: two shared cores run two browsers, the broadcast and
/// ffmpeg.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn browser_host_goes_on_air_mutes_and_leaves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let wall = Instant::now();
    let tools = BrowserTools::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let mic = write_mic_tone(dir.path());
    let mut broadcast = start_broadcast(&tools);
    let _rtmp = Publisher::start(&broadcast.rtmp_url(&RTMP_HOST), &RTMP_TONE);

    let host = NodeRun::start(
        "host.js",
        [
            "--page".into(),
            format!("{}host", stream_url(&broadcast)).into(),
            "--token".into(),
            BROWSER_HOST.secret.into(),
            "--audio-file".into(),
            mic.into_os_string(),
            "--mute-at".into(),
            MUTE_AT_S.to_string().into(),
            "--unmute-at".into(),
            UNMUTE_AT_S.to_string().into(),
            "--seconds".into(),
            OFF_AIR_AT_S.to_string().into(),
            "--screenshot".into(),
            screenshot("host-page-on-air").into_os_string(),
        ],
    );
    wait_for_segment(&broadcast, LISTENER_JOIN_AFTER_SEGMENT);
    let listener = NodeRun::start(
        "listen.js",
        [
            "--page".into(),
            format!("{}?player=hlsjs", stream_url(&broadcast)).into(),
            "--seconds".into(),
            LISTENER_SECONDS.to_string().into(),
        ],
    );
    let host = host.finish(&broadcast);
    let listener = listener.finish(&broadcast);
    let clock = ProgramClock::now(&broadcast);
    let on_air = clock.at(host.number("on_air_at_ms"));
    let muted = clock.at(host.number("mute_at_ms"));
    let unmuted = clock.at(host.number("unmute_at_ms"));
    let off_air = clock.at(host.number("off_air_at_ms"));
    broadcast.sleep_until(off_air + AFTER_OFF_AIR_S);
    let stopped = broadcast.stop();

    assert_page_went_on_air(&host);
    assert_listener_heard(&listener);
    let live = on_air + SETTLE_S..muted;
    let mute = muted + SETTLE_S..unmuted - END_MARGIN_S;
    let live_again = unmuted + SETTLE_S..off_air;
    let gone = off_air + SETTLE_S..stopped - END_MARGIN_S;
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let level = |what: &str, tone: f64, span: Range<f64>, expected: f64, tolerance: f64| {
            let stats = program.assert_tone_level(what, tone, span, WINDOW_S, expected, tolerance);
            eprintln!("{rendition} {what}: expected {expected:.2} dBFS, measured {stats}");
        };
        let silent = |what: &str, span: Range<f64>| {
            let stats = program.assert_tone_below(what, MIC_TONE_HZ, span, WINDOW_S, SILENCE_DBFS);
            eprintln!("{rendition} {what}: {stats}");
        };
        let browser = BROWSER_HOST.name;
        level(
            &format!("{browser} on air"),
            MIC_TONE_HZ,
            live.clone(),
            MIC_RMS_DBFS,
            BROWSER_TOLERANCE_DB,
        );
        silent(&format!("{browser} muted"), mute.clone());
        level(
            &format!("{browser} unmuted"),
            MIC_TONE_HZ,
            live_again.clone(),
            MIC_RMS_DBFS,
            BROWSER_TOLERANCE_DB,
        );
        silent(&format!("{browser} off air"), gone.clone());
        level(
            &format!("{} (RTMP) throughout", RTMP_HOST.name),
            RTMP_TONE.freq_hz,
            on_air + SETTLE_S..stopped - END_MARGIN_S,
            RTMP_TONE.expected_rms_dbfs(),
            RTMP_TOLERANCE_DB,
        );
    }
    eprintln!(
        "on air {on_air:.2} s ({} s after the click), muted {muted:.2} s, unmuted {unmuted:.2} s, \
         off air {off_air:.2} s, stopped {stopped:.2} s; meter {} dBFS (muted: {} dBFS), \
         {} channels, answer stereo={}; listener RMS {}; {:.1} s",
        host.text("on_air_after_s"),
        host.text("level_median_db"),
        host.text("muted_level_median_db"),
        host.text("channels"),
        host.text("answer_stereo"),
        listener.text("rms_median"),
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn browser_host_with_a_wrong_key_stops_and_says_so() {
    /// Long enough for two retries had the page retried (1 s, then 2 s).
    const WATCH_S: f64 = 4.0;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let tools = BrowserTools::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let mic = write_mic_tone(dir.path());
    let broadcast = start_broadcast(&tools);
    let run = NodeRun::start(
        "host.js",
        [
            "--page".into(),
            format!(
                "{}host#token=not-{}&start=1",
                stream_url(&broadcast),
                BROWSER_HOST.secret
            )
            .into(),
            "--audio-file".into(),
            mic.into_os_string(),
            "--seconds".into(),
            WATCH_S.to_string().into(),
            "--on-air-timeout".into(),
            "10".into(),
            "--screenshot".into(),
            screenshot("host-page-wrong-key").into_os_string(),
        ],
    )
    .finish(&broadcast);
    assert_eq!(
        run.text("whip_requests"),
        "POST 401",
        "WHIP requests\n{run}"
    );
    assert_eq!(run.text("state"), "failed", "page state\n{run}");
    assert_eq!(run.text("on_air_seen"), "false", "never on air\n{run}");
    assert_eq!(run.text("on_air_badge"), "false", "ON AIR badge\n{run}");
    assert!(
        run.text("error_text").contains("refused this host key"),
        "the page must say the key is wrong\n{run}"
    );
    assert_eq!(run.number("page_error_count"), 0.0, "script errors\n{run}");
}

#[test]
fn browser_host_goes_on_air_over_ice_tcp_when_no_udp_is_offered() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let tools = BrowserTools::require();
    let broadcast_args: Vec<OsString> = vec!["--webrtc-tcp".into(), "127.0.0.1:0".into()];
    let host = on_air_through("ICE-TCP", &tools, broadcast_args, Vec::new());
    for (key, expected) in [
        ("ice_selected", "succeeded"),
        ("ice_local_protocol", "tcp"),
        ("ice_remote_protocol", "tcp"),
        ("ice_remote_type", "host"),
    ] {
        assert_eq!(host.text(key), expected, "{key}\n{host}");
    }
}

#[test]
fn browser_host_goes_on_air_through_turn_when_only_relay_works() {
    const SECRET: &str = "turn-shared-secret";
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let tools = BrowserTools::require();
    let coturn = Coturn::start(SECRET);
    let turn_url = format!("turn:{}?transport=udp", coturn.addr);
    let broadcast_args: Vec<OsString> = vec![
        "--webrtc-udp".into(),
        "127.0.0.1:0".into(),
        "--ice-server".into(),
        turn_url.clone().into(),
        "--turn-secret".into(),
        SECRET.into(),
    ];
    let host_args: Vec<OsString> = vec!["--relay-only".into(), "1".into()];
    let host = on_air_through("TURN", &tools, broadcast_args, host_args);
    for (key, expected) in [
        ("ice_selected", "succeeded"),
        ("ice_local_type", "relay"),
        ("ice_local_relay_protocol", "udp"),
        ("ice_remote_type", "host"),
    ] {
        assert_eq!(
            host.text(key),
            expected,
            "{key}\n{host}\ncoturn:\n{}",
            coturn.log()
        );
    }
    let servers = host.text("ice_servers");
    assert!(
        servers.contains(&turn_url) && servers.contains(&format!(":{}\"", BROWSER_HOST.name)),
        "the page must have been given the TURN server with credentials minted for its host: {servers}"
    );
}

#[test]
fn two_browser_hosts_hear_each_other_and_not_themselves() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let wall = Instant::now();
    let tools = BrowserTools::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = [BROWSER_HOST, SECOND_BROWSER_HOST];
    let mut broadcast = start_broadcast_for(&tools, &hosts);
    let measured = |host: &HostKey| dir.path().join(format!("{}.measured", host.name));
    let runs: Vec<NodeRun> = (0..2)
        .map(|i| {
            let (me, other) = (&hosts[i], &hosts[1 - i]);
            let (own_hz, other_hz) = (RETURN_TONES_HZ[i], RETURN_TONES_HZ[1 - i]);
            let mic = write_tone(
                dir.path(),
                &format!("{}.wav", me.name),
                own_hz,
                RETURN_MIC_DBFS,
            );
            let mut args: Vec<OsString> = vec![
                "--page".into(),
                format!("{}host", stream_url(&broadcast)).into(),
                "--token".into(),
                me.secret.into(),
                "--audio-file".into(),
                mic.into_os_string(),
                "--measure-return".into(),
                format!("{own_hz},{other_hz}").into(),
                "--room-hosts".into(),
                "2".into(),
                "--measure-seconds".into(),
                RETURN_MEASURE_S.to_string().into(),
                "--measured-file".into(),
                measured(me).into_os_string(),
                "--stay-until-file".into(),
                measured(other).into_os_string(),
                "--seconds".into(),
                "0".into(),
                "--screenshot".into(),
                screenshot(&format!("host-page-room-{}", me.name)).into_os_string(),
            ];
            if i == 1 {
                args.extend(["--then-speakers".into(), "1".into()]);
            }
            NodeRun::start("host.js", args)
        })
        .collect();
    let runs: Vec<Run> = runs.into_iter().map(|run| run.finish(&broadcast)).collect();
    let clock = ProgramClock::now(&broadcast);
    let off_air = runs
        .iter()
        .map(|run| clock.at(run.number("off_air_at_ms")))
        .fold(f64::MIN, f64::max);
    broadcast.sleep_until(off_air + 0.5);
    broadcast.stop();

    let mut summary = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let (me, other) = (hosts[i].name, hosts[1 - i].name);
        for (key, expected) in [
            ("on_air_seen", "true"),
            ("on_air_drops", "0"),
            ("output", "headphones"),
            ("echo_cancellation", "false"),
            ("return_playing", "true"),
            ("room_seen", "true"),
            ("return_other_arrived", "true"),
            ("return_text", "playing"),
            ("room_status", "200"),
            ("other_measured", "true"),
            ("reconnects", "0"),
            ("host_error_count", "0"),
            ("page_error_count", "0"),
            ("delete_status", "200"),
            ("post_count", "1"),
            // Off air: no room list, no return.
            ("off_air_room_hidden", "true"),
            ("off_air_room", "null"),
            ("off_air_hearing", "false"),
        ] {
            assert_eq!(run.text(key), expected, "{me}: {key}\n{run}");
        }
        assert!(
            run.number("return_frames") >= RETURN_MEASURE_S * 3.0,
            "{me}: too few frames of the return measured\n{run}"
        );
        let other_db = run.number("return_other_dbfs");
        assert!(
            (other_db - RETURN_MIC_DBFS).abs() <= RETURN_TOLERANCE_DB,
            "{me} must hear {other} at {RETURN_MIC_DBFS} dBFS ±{RETURN_TOLERANCE_DB} dB, \
             heard {other_db} dBFS\n{run}"
        );
        let own_db = run.number("return_own_dbfs");
        assert!(
            own_db <= other_db - OWN_SUPPRESSION_DB,
            "{me} must not hear itself: its own tone at {own_db} dBFS, \
             not {OWN_SUPPRESSION_DB} dB below {other}'s {other_db} dBFS\n{run}"
        );
        // The room list as displayed: both hosts, on air and speaking, this
        // one marked as "you".
        let room = run.text("room_text");
        for expected in [
            format!("{me} (you) on air, speaking"),
            format!("{other} on air, speaking"),
        ] {
            assert!(
                room.split(" | ").any(|entry| entry == expected),
                "{me}'s room list must show {expected:?}: {room}\n{run}"
            );
        }
        summary.push(format!(
            "{me}: hears {other} at {other_db:.2} dBFS (min {}, max {}), itself at {own_db:.2} dBFS \
             (max {}), {} frames; room: {room}",
            run.text("return_other_min_dbfs"),
            run.text("return_other_max_dbfs"),
            run.text("return_own_max_dbfs"),
            run.text("return_frames"),
        ));
    }
    // Speakers: the microphone again, with echo cancellation, swapped into
    // the same session (post_count above: no second offer).
    let speakers = &runs[1];
    for (key, expected) in [
        ("speakers_swapped", "true"),
        ("speakers_output", "speakers"),
        ("speakers_echo_cancellation", "true"),
        ("speakers_same_session", "true"),
        ("speakers_on_air", "true"),
    ] {
        assert_eq!(speakers.text(key), expected, "{key}\n{speakers}");
    }
    eprintln!(
        "{}; {:.1} s",
        summary.join("; "),
        wall.elapsed().as_secs_f64()
    );
}

/// coturn on a loopback UDP port, relaying to loopback peers, with TURN
/// REST API credentials (`--use-auth-secret`); killed when dropped.
struct Coturn {
    addr: std::net::SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Coturn {
    fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("turnserver.log");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--listening-ip",
                "127.0.0.1",
                "--relay-ip",
                "127.0.0.1",
            ])
            .arg("--listening-port")
            .arg(port.to_string())
            .args(["--allow-loopback-peers", "--use-auth-secret"])
            .arg("--static-auth-secret")
            .arg(secret)
            .args(["--realm", "onair.test", "--fingerprint"])
            .args(["--no-tls", "--no-dtls", "--no-cli", "--simple-log"])
            .arg("--log-file")
            .arg(&log)
            .arg("--pidfile")
            .arg(dir.path().join("turnserver.pid"))
            .arg("--userdb")
            .arg(dir.path().join("turndb"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run turnserver: {e} (run scripts/browser-deps.sh)"));
        let coturn = Coturn {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            log,
            _dir: dir,
        };
        coturn.wait_ready();
        coturn
    }

    /// Waits until the server answers a STUN binding request (RFC 8489
    /// §6: type 0x0001, no attributes, the magic cookie, a transaction id).
    fn wait_ready(&self) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut request = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
        request.extend_from_slice(b"onair-ready!");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0_u8; 512];
        loop {
            // Until the server listens, the send or the wait fails.
            let _ = socket.send_to(&request, self.addr);
            if let Ok((len, _)) = socket.recv_from(&mut buf)
                && len >= 20
                && buf[..2] == [0x01, 0x01]
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "coturn does not answer STUN on {} after 20 s:\n{}",
                self.addr,
                self.log()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a broadcast with WHIP set up by `broadcast_args` (and hls.js, and
/// a 600 ms jitter buffer as in [`start_broadcast`]), puts the browser host
/// on air for a few seconds with `host_args` added to host.js, and checks
/// that the page went on air and off again cleanly and that its tone is in
/// both stored renditions at its level. Returns the page's report, for the
/// caller to check how it got through.
fn on_air_through(
    what: &str,
    tools: &BrowserTools,
    broadcast_args: Vec<OsString>,
    host_args: Vec<OsString>,
) -> Run {
    const ON_AIR_S: f64 = 5.0;
    let dir = tempfile::tempdir().expect("temp dir");
    let mic = write_mic_tone(dir.path());
    let mut args = broadcast_args;
    args.extend([
        "--hlsjs-file".into(),
        tools.hlsjs.clone().into_os_string(),
        "--jitter-ms".into(),
        "600".into(),
    ]);
    let mut broadcast = Broadcast::start_with(STREAM, &[RTMP_HOST, BROWSER_HOST], args);
    let mut page_args: Vec<OsString> = vec![
        "--page".into(),
        format!("{}host", stream_url(&broadcast)).into(),
        "--token".into(),
        BROWSER_HOST.secret.into(),
        "--audio-file".into(),
        mic.into_os_string(),
        "--seconds".into(),
        ON_AIR_S.to_string().into(),
    ];
    page_args.extend(host_args);
    let host = NodeRun::start("host.js", page_args).finish(&broadcast);
    for (key, expected) in [
        ("on_air_seen", "true"),
        ("on_air_drops", "0"),
        ("host_error_count", "0"),
        ("page_error_count", "0"),
        ("delete_status", "200"),
    ] {
        assert_eq!(host.text(key), expected, "{what}: {key}\n{host}");
    }
    let clock = ProgramClock::now(&broadcast);
    let on_air = clock.at(host.number("on_air_at_ms"));
    let off_air = clock.at(host.number("off_air_at_ms"));
    broadcast.sleep_until(off_air + AFTER_OFF_AIR_S);
    broadcast.stop();
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let stats = program.assert_tone_level(
            &format!("the browser host over {what}"),
            MIC_TONE_HZ,
            on_air + SETTLE_S..off_air,
            WINDOW_S,
            MIC_RMS_DBFS,
            BROWSER_TOLERANCE_DB,
        );
        eprintln!("{what}, {rendition}: {stats}");
    }
    eprintln!(
        "{what}: on air {} s after the click",
        host.text("on_air_after_s")
    );
    host
}

/// The checks of the page's own account of going on air and off again.
fn assert_page_went_on_air(host: &Run) {
    let checks = [
        ("on_air_badge", "true"),
        ("on_air_seen", "true"),
        ("on_air_drops", "0"),
        ("state", "onair"),
        ("connection_state", "connected"),
        ("connection_text", "connected"),
        ("mute_switch_checked", "true"),
        ("unmute_switch_checked", "true"),
        ("reconnects", "0"),
        ("host_error_count", "0"),
        ("page_error_count", "0"),
        // One session, ended by "Go off air": the page saw the DELETE's
        // 200 (the driver's own record of the DELETE may say aborted: the
        // browser closes right after the page has its answer).
        ("delete_status", "200"),
        ("off_air_state", "idle"),
    ];
    for (key, expected) in checks {
        assert_eq!(host.text(key), expected, "{key}\n{host}");
    }
    let requests = host.text("whip_requests");
    assert!(
        requests.starts_with("POST 201 | DELETE") && requests.matches("POST").count() == 1,
        "one session, opened and deleted: {requests}\n{host}"
    );
    let meter = host.number("level_median_db");
    assert!(
        (meter - MIC_RMS_DBFS).abs() <= METER_TOLERANCE_DB,
        "the meter must read the microphone's {MIC_RMS_DBFS} dBFS, read {meter}\n{host}"
    );
    // The meter reads the microphone, not what is sent: mute does not
    // silence it.
    let muted_meter = host.number("muted_level_median_db");
    assert!(
        (muted_meter - MIC_RMS_DBFS).abs() <= METER_TOLERANCE_DB,
        "the meter must keep reading the microphone while muted, read {muted_meter}\n{host}"
    );
}

fn assert_listener_heard(listener: &Run) {
    for (key, expected) in [("kind", "hlsjs"), ("state", "playing")] {
        assert_eq!(listener.text(key), expected, "{key}\n{listener}");
    }
    for key in ["player_error_count", "page_error_count"] {
        assert_eq!(listener.number(key), 0.0, "{key}\n{listener}");
    }
    assert!(
        listener.number("advance_s") >= LISTENER_SECONDS,
        "the listener's playback must advance {LISTENER_SECONDS} s\n{listener}"
    );
    assert!(
        listener.number("rms_median") >= LISTENER_MIN_RMS,
        "the listener heard silence\n{listener}"
    );
}

/// `onair live` with WHIP on a loopback UDP port, both hosts' keys, and
/// hls.js for the listener page.
fn start_broadcast(tools: &BrowserTools) -> Broadcast {
    start_broadcast_for(tools, &[RTMP_HOST, BROWSER_HOST])
}

/// [`start_broadcast`] with the keys of `hosts`.
fn start_broadcast_for(tools: &BrowserTools, hosts: &[HostKey]) -> Broadcast {
    let args: [OsString; 6] = [
        "--webrtc-udp".into(),
        "127.0.0.1:0".into(),
        "--hlsjs-file".into(),
        tools.hlsjs.clone().into_os_string(),
        // Two Chromiums, ffmpeg and the broadcast share two cores: while the
        // listener's browser starts, the host's browser can be starved of
        // CPU for a few hundred ms and send nothing. A deeper jitter buffer
        // than the default 200 ms rides that out, as it would a network
        // stall; the default is exercised by the RTMP and aiortc tests.
        "--jitter-ms".into(),
        "600".into(),
    ];
    Broadcast::start_with(STREAM, hosts, args)
}

/// `http://ADDR/{stream}/`: the listener page; the host page is `host` in it.
fn stream_url(broadcast: &Broadcast) -> String {
    format!("http://{}/{STREAM}/", broadcast.http_addr())
}

/// Writes the fake microphone's WAV in `dir`.
fn write_mic_tone(dir: &Path) -> PathBuf {
    write_tone(dir, "mic.wav", MIC_TONE_HZ, MIC_RMS_DBFS)
}

/// Writes a fake microphone's WAV, `hz` at `rms_dbfs` in both channels, as
/// `dir/name`.
fn write_tone(dir: &Path, name: &str, hz: f64, rms_dbfs: f64) -> PathBuf {
    let path = dir.join(name);
    let amplitude = 10f64.powf(rms_dbfs / 20.0) * std::f64::consts::SQRT_2;
    let frames = MIC_SECONDS * MIC_RATE as usize;
    let samples = sine(hz, MIC_RATE, frames, amplitude, 2);
    write_wav(&path, MIC_RATE, 2, WavFormat::Int16, &samples);
    path
}

/// Waits until segment `msn` of the AAC rendition is stored.
fn wait_for_segment(broadcast: &Broadcast, msn: u32) {
    let segment = broadcast.rendition_dir("aac").join(format!("{msn}.m4s"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !segment.exists() {
        assert!(
            Instant::now() < deadline,
            "no {} after 20 s; log:\n{}",
            segment.display(),
            broadcast.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn screenshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"))
}

/// Maps the drivers' wall-clock times (ms since the epoch) onto the
/// broadcast's program time, from one reading of both clocks.
struct ProgramClock {
    program_s: f64,
    epoch_ms: f64,
}

impl ProgramClock {
    fn now(broadcast: &Broadcast) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64()
            * 1000.0;
        Self {
            program_s: broadcast.now(),
            epoch_ms,
        }
    }

    /// Program seconds of `epoch_ms`.
    fn at(&self, epoch_ms: f64) -> f64 {
        self.program_s - (self.epoch_ms - epoch_ms) / 1000.0
    }
}

/// Chromium, node and the npm packages, or a failure saying how to get them.
struct BrowserTools {
    /// The npm copy of hls.js, for the origin to serve.
    hlsjs: PathBuf,
}

impl BrowserTools {
    fn require() -> Self {
        Self {
            hlsjs: require_browser_tools(),
        }
    }
}

/// A driver script in `tests/browser` running in the background with its own
/// Chromium profile; killed if dropped before [`NodeRun::finish`].
struct NodeRun {
    script: &'static str,
    child: Option<Child>,
    _profile: tempfile::TempDir,
}

impl NodeRun {
    fn start(script: &'static str, args: impl IntoIterator<Item = OsString>) -> Self {
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new("node")
            .current_dir(browser_dir())
            .arg(script)
            .args(args)
            .arg("--user-data-dir")
            .arg(profile.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e} (install nodejs)"));
        Self {
            script,
            child: Some(child),
            _profile: profile,
        }
    }

    /// Waits for the script and reads its `key=value` lines; fails with the
    /// broadcast's log if it could not measure.
    fn finish(mut self, broadcast: &Broadcast) -> Run {
        let child = self.child.take().expect("not finished yet");
        let output = child.wait_with_output().expect("wait for node");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{} failed ({}):\n{stdout}\n{}\nonair log:\n{}",
            self.script,
            output.status,
            String::from_utf8_lossy(&output.stderr),
            broadcast.log()
        );
        let values = stdout
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Run {
            script: self.script,
            values,
        }
    }
}

impl Drop for NodeRun {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a driver script reported.
struct Run {
    script: &'static str,
    values: BTreeMap<String, String>,
}

impl Run {
    fn text(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("{} reported no {key}\n{self}", self.script))
    }

    fn number(&self, key: &str) -> f64 {
        let text = self.text(key);
        text.parse()
            .unwrap_or_else(|_| panic!("{key}={text} is not a number\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} reported:", self.script)?;
        for (key, value) in &self.values {
            writeln!(f, "  {key}={value}")?;
        }
        Ok(())
    }
}

/// A certificate for `onair.test` made with openssl, and the base64 SHA-256
/// of its public key, which Chromium trusts through
/// `--ignore-certificate-errors-spki-list`.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
    spki: String,
}

impl TestCert {
    fn make(dir: &Path) -> TestCert {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=onair.test"])
            .args(["-addext", "subjectAltName=DNS:onair.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl must be installed (scripts/deps.sh)");
        assert!(made.success(), "openssl req failed");
        let spki = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der \
                 | openssl dgst -sha256 -binary | base64",
                cert.display()
            ))
            .output()
            .expect("openssl");
        assert!(spki.status.success(), "SPKI hash failed");
        TestCert {
            cert,
            key,
            spki: String::from_utf8_lossy(&spki.stdout).trim().to_owned(),
        }
    }

    /// The driver scripts' arguments that make Chromium reach and trust
    /// `https://onair.test:PORT`.
    fn chromium_args(&self) -> [OsString; 4] {
        [
            "--host-rules".into(),
            "MAP onair.test 127.0.0.1".into(),
            "--spki".into(),
            self.spki.clone().into(),
        ]
    }
}

#[test]
fn browser_host_goes_on_air_over_https_and_listeners_play_it_over_https() {
    const ON_AIR_S: f64 = 6.0;
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let wall = Instant::now();
    let tools = BrowserTools::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let mic = write_mic_tone(dir.path());
    let cert = TestCert::make(dir.path());
    let args: [OsString; 10] = [
        "--webrtc-udp".into(),
        "127.0.0.1:0".into(),
        "--hlsjs-file".into(),
        tools.hlsjs.clone().into_os_string(),
        // As in start_broadcast: two Chromiums share two cores.
        "--jitter-ms".into(),
        "600".into(),
        "--tls-cert".into(),
        cert.cert.clone().into_os_string(),
        "--tls-key".into(),
        cert.key.clone().into_os_string(),
    ];
    let mut broadcast = Broadcast::start_with(STREAM, &[RTMP_HOST, BROWSER_HOST], args);
    let page = format!(
        "https://onair.test:{}/{STREAM}/",
        broadcast.http_addr().port()
    );
    let mut host_args: Vec<OsString> = vec![
        "--page".into(),
        format!("{page}host").into(),
        "--token".into(),
        BROWSER_HOST.secret.into(),
        "--audio-file".into(),
        mic.into_os_string(),
        "--seconds".into(),
        ON_AIR_S.to_string().into(),
    ];
    host_args.extend(cert.chromium_args());
    let host = NodeRun::start("host.js", host_args);
    wait_for_segment(&broadcast, LISTENER_JOIN_AFTER_SEGMENT);
    let mut listener_args: Vec<OsString> = vec![
        "--page".into(),
        format!("{page}?player=hlsjs").into(),
        "--seconds".into(),
        LISTENER_SECONDS.to_string().into(),
    ];
    listener_args.extend(cert.chromium_args());
    let listener = NodeRun::start("listen.js", listener_args);
    let host = host.finish(&broadcast);
    let listener = listener.finish(&broadcast);
    let clock = ProgramClock::now(&broadcast);
    let on_air = clock.at(host.number("on_air_at_ms"));
    let off_air = clock.at(host.number("off_air_at_ms"));
    broadcast.sleep_until(off_air + AFTER_OFF_AIR_S);
    broadcast.stop();

    for (key, expected) in [
        ("page_status", "200"),
        ("secure_context", "true"),
        ("on_air_seen", "true"),
        ("on_air_drops", "0"),
        ("host_error_count", "0"),
        ("page_error_count", "0"),
        ("delete_status", "200"),
    ] {
        assert_eq!(host.text(key), expected, "{key}\n{host}");
    }
    assert_listener_heard(&listener);
    for rendition in RENDITIONS {
        let program = broadcast.decode(rendition);
        let stats = program.assert_tone_level(
            "the browser host over HTTPS",
            MIC_TONE_HZ,
            on_air + SETTLE_S..off_air,
            WINDOW_S,
            MIC_RMS_DBFS,
            BROWSER_TOLERANCE_DB,
        );
        eprintln!("{rendition}: {stats}");
    }
    eprintln!(
        "https host page: on air {} s after the click; listener RMS {}; {:.1} s",
        host.text("on_air_after_s"),
        listener.text("rms_median"),
        wall.elapsed().as_secs_f64()
    );
}

#[test]
fn host_page_over_plain_http_from_another_machine_says_https_is_needed() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let tools = BrowserTools::require();
    let dir = tempfile::tempdir().expect("temp dir");
    let mic = write_mic_tone(dir.path());
    let broadcast = start_broadcast(&tools);
    // `onair.test` is not this machine to the browser: no secure context.
    let run = NodeRun::start(
        "host.js",
        [
            "--page".into(),
            format!(
                "http://onair.test:{}/{STREAM}/host",
                broadcast.http_addr().port()
            )
            .into(),
            "--audio-file".into(),
            mic.into_os_string(),
            "--on-air-timeout".into(),
            "1".into(),
            "--seconds".into(),
            "0".into(),
            "--host-rules".into(),
            "MAP onair.test 127.0.0.1".into(),
        ],
    );
    let run = run.finish(&broadcast);
    for (key, expected) in [
        ("page_status", "200"),
        ("secure_context", "false"),
        ("go_disabled", "true"),
        ("post_count", "0"),
        ("page_error_count", "0"),
    ] {
        assert_eq!(run.text(key), expected, "{key}\n{run}");
    }
    let error = run.text("error_text");
    assert!(
        error.contains("HTTPS") && error.contains("--tls-cert"),
        "the page must say HTTPS is needed and how: {error:?}\n{run}"
    );
}
