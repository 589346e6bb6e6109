//! `onair live` on the real S3-compatible test server, with the path to the
//! store broken under it: an ffmpeg RTMP host sends a tone while a TCP
//! proxy between onair and the S3 server freezes the path for 5 s (bytes
//! held, nothing answers), resets it for 5 s (every connection reset, new
//! ones refused) and freezes it again for 20 s (longer than an attempt's
//! timeout). An ffmpeg listener reads the live stream from the in-process
//! origin throughout.
//!
//! The broadcast process keeps running through all of it and stops
//! cleanly; the store then holds a seamless stream in which the host's tone
//! is at its level over the whole broadcast, outages included (the backlog
//! kept every part of them and wrote it when the store came back), in both
//! renditions; the listener kept reading to the end of the stream.

#[path = "common/broadcast.rs"]
mod broadcast;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/tcp_proxy.rs"]
mod tcp_proxy;

use std::net::ToSocketAddrs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, ProgramAudio, Publisher, Tone};
use onair::hls::MediaPlaylist;
use onair::pipeline::RENDITIONS;
use tcp_proxy::TcpProxy;

const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};

/// AAC, stereo, 48 kHz, 1 kHz at -24 dBFS.
const TONE: Tone = Tone {
    freq_hz: 1_000.0,
    volume_db: -2.93,
    sample_rate: 48_000,
    channels: 2,
    codec: Codec::Aac,
};

/// Allowed deviation of the tone from its level (two lossy generations).
const TOLERANCE_DB: f64 = 1.0;
const WINDOW_S: f64 = 0.1;
/// From the publisher's start to its steady level in the program.
const SETTLE_S: f64 = 1.5;
const END_MARGIN_S: f64 = 0.5;
const STREAM: &str = "outage";
/// How long the listener may take to reach the end of the stream after the
/// stop.
const LISTENER_END: Duration = Duration::from_secs(30);

/// Copies the finished stream's `rendition` (playlist, init, segments) from
/// the S3 server to `dir`, the way a CDN would read it: unsigned GETs.
fn mirror(server: &s3::S3Server, bucket: &str, rendition: &str, dir: &Path) -> MediaPlaylist {
    let base = format!("/{bucket}/streams/{STREAM}/{rendition}");
    let get = |name: &str| {
        let response = server.request("GET", &format!("{base}/{name}"));
        assert_eq!(response.status, 200, "GET {base}/{name}");
        std::fs::write(dir.join(name), &response.body).expect("write");
        response.body
    };
    let text = String::from_utf8(get("live.m3u8")).expect("utf-8");
    let playlist = MediaPlaylist::parse(&text).expect("the stored playlist parses");
    get("init.mp4");
    for segment in &playlist.segments {
        get(&segment.uri);
    }
    playlist
}

#[test]
fn the_broadcast_survives_a_frozen_a_reset_and_a_long_frozen_store() {
    let server = s3::S3Server::from_env();
    let bucket = server.create_bucket("outage");
    let upstream = server
        .endpoint()
        .trim_start_matches("http://")
        .to_socket_addrs()
        .expect("S3 address")
        .next()
        .expect("an address");
    let proxy = TcpProxy::start(upstream);
    let wall = Instant::now();
    let mut live = Broadcast::start_on(
        STREAM,
        &[ALICE],
        Some(&format!("s3://{bucket}/streams")),
        &[("AWS_ENDPOINT", format!("http://{}", proxy.addr()))],
        std::iter::empty::<&str>(),
    );
    let alice = Publisher::start(&live.rtmp_url(&ALICE), &TONE);
    let alice_started = live.program_time(alice.started());

    // A listener reading the live stream from the in-process origin.
    let heard = tempfile::tempdir().expect("temp dir");
    let heard_wav = heard.path().join("listener.wav");
    live.sleep_until(3.0);
    let mut listener = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
        .arg(format!(
            "http://{}/{STREAM}/aac/live.m3u8",
            live.http_addr()
        ))
        .args(["-f", "wav"])
        .arg(&heard_wav)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg");

    let faults: [(f64, f64, &str); 3] = [
        (5.0, 10.0, "freeze"),
        (14.0, 19.0, "drop"),
        (23.0, 43.0, "freeze"),
    ];
    for (from, to, what) in faults {
        live.sleep_until(from);
        match what {
            "freeze" => proxy.freeze(),
            _ => proxy.drop_all(),
        }
        live.sleep_until(to);
        proxy.restore();
    }
    live.sleep_until(49.0);
    let stopped = live.stop();
    drop(alice);

    // The process went on and said what happened.
    let failing = live.log_lines_with(&["the store is failing"]);
    let back = live.log_lines_with(&["the store is back"]);
    assert!(
        !failing.is_empty() && back.len() >= failing.len(),
        "outages not reported; log:\n{}",
        live.log()
    );

    // The listener read to the end of the stream.
    let ended = Instant::now();
    let status = loop {
        if let Some(status) = listener.try_wait().expect("listener") {
            break status;
        }
        if ended.elapsed() > LISTENER_END {
            let _ = listener.kill();
            panic!("the listener did not reach the end of the stream");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "the listener's ffmpeg failed: {status}");
    let listened = ProgramAudio::decode(&heard_wav);
    assert!(
        listened.duration_s() > stopped - 3.0 - 10.0,
        "the listener heard {:.1} s",
        listened.duration_s()
    );
    let tail = listened.duration_s() - 4.0..listened.duration_s() - 1.0;
    let expected = TONE.expected_rms_dbfs();
    listened.assert_tone_level(
        "the host, to the listener at the end",
        TONE.freq_hz,
        tail,
        WINDOW_S,
        expected,
        TOLERANCE_DB,
    );

    // The store holds the whole broadcast, outages included.
    for rendition in RENDITIONS {
        let dir = tempfile::tempdir().expect("temp dir");
        let playlist = mirror(&server, &bucket, rendition, dir.path());
        assert!(playlist.end_list, "{rendition} was not ended");
        assert_eq!(playlist.media_sequence, 0, "{rendition} lost its start");
        let program = ProgramAudio::decode(&dir.path().join("live.m3u8"));
        let stats = program.assert_tone_level(
            "the host throughout",
            TONE.freq_hz,
            alice_started + SETTLE_S..stopped - END_MARGIN_S,
            WINDOW_S,
            expected,
            TOLERANCE_DB,
        );
        eprintln!("{rendition}: {stats}");
    }
    for line in live.log_lines_with(&["the store is"]) {
        eprintln!("{line}");
    }
    for line in live.log_lines_with(&["caught up"]) {
        eprintln!("{line}");
    }
    eprintln!(
        "the_broadcast_survives_a_frozen_a_reset_and_a_long_frozen_store: {} outages reported, {:.1} s",
        failing.len(),
        wall.elapsed().as_secs_f64()
    );
}
