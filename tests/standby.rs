//! Hot standby with real processes and real peers: two `onair live
//! --redundant` processes of one stream on the SeaweedFS S3 server, two
//! ffmpeg RTMP hosts publishing to both (ffmpeg's `tee` muxer), and an
//! ffmpeg listener reading through a standalone `onair origin`.
//!
//! What must hold:
//! - `kill -9` of the leader: the standby publishes the next part within
//!   about a lease and a part, from its own memory, so the listener's audio
//!   has no silent gap and ffmpeg keeps reading; Media Sequence Numbers
//!   continue and program date-times stay on the stream's timeline.
//! - A mute given to the leader's control API reaches the standby (through
//!   the store), so the host is still muted after the takeover, and a
//!   restarted member picks it up too.
//! - The killed process, restarted, joins as a standby; the leader keeps
//!   its role.
//! - `SIGSTOP` of the leader for 10 s: the standby takes over, and the old
//!   leader, woken with `SIGCONT`, writes nothing more to the store (each
//!   process reaches the store through its own recording proxy, so the
//!   store's history says who wrote what and when).
//!
//! Figures are printed (docs/BENCHMARKS.md, "Hot standby").

#[path = "common/broadcast.rs"]
mod broadcast;
#[allow(dead_code)]
#[path = "common/listener.rs"]
mod listener;
#[allow(dead_code)]
#[path = "common/processes.rs"]
mod processes;
#[path = "common/recording_proxy.rs"]
mod recording_proxy;
#[path = "common/s3.rs"]
mod s3;
#[allow(dead_code)]
#[path = "common/store_dir.rs"]
mod store_dir;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use broadcast::{Broadcast, Codec, HostKey, Publisher, Tone};
use listener::Listener;
use onair::hls::MediaPlaylist;
use processes::onair_origin;
use recording_proxy::RecordingProxy;
use store_dir::wait_until;

const STREAM: &str = "standby";
const ALICE: HostKey = HostKey {
    name: "alice",
    secret: "alice-secret-7f3a",
};
const BOB: HostKey = HostKey {
    name: "bob",
    secret: "bob-secret-91c2",
};
/// Alice: 440 Hz, Bob: 1 kHz, both at -18 dBFS.
const ALICE_TONE: Tone = Tone {
    freq_hz: 440.0,
    volume_db: 3.07,
    sample_rate: 48_000,
    channels: 1,
    codec: Codec::Aac,
};
const BOB_TONE: Tone = Tone {
    freq_hz: 1_000.0,
    volume_db: 3.07,
    sample_rate: 48_000,
    channels: 1,
    codec: Codec::Aac,
};
/// The listener hears the two tones mixed: well above this RMS.
const HEARD: f64 = 0.05;
/// A silent 10 ms block is below this RMS.
const SILENT: f64 = 0.005;
const LEASE: Duration = Duration::from_millis(1000);
const PART: Duration = Duration::from_millis(320);
const WAIT: Duration = Duration::from_secs(20);
/// The members' admin token.
const TOKEN: &str = "standby-token-2b7c";

/// One control API request to `member`; the status and the body.
fn control(member: &Broadcast, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(member.http_addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: onair\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = response
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Waits until `member`'s control API shows `host` muted or not.
fn wait_muted(member: &Broadcast, host: &str, muted: bool, what: &str) {
    wait_until(WAIT, || {
        let (status, host) = control(member, "GET", &format!("/control/hosts/{host}"), "");
        (status == 200 && host["muted"] == serde_json::Value::Bool(muted)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{what}: the host's mute is not {muted} there:\n{}",
            member.log()
        )
    });
}

fn s3_addr(server: &s3::S3Server) -> SocketAddr {
    server
        .endpoint()
        .trim_start_matches("http://")
        .to_socket_addrs()
        .expect("S3 address")
        .next()
        .expect("an address")
}

/// One member of the group, reaching the store through its own proxy.
fn member(store: &str, proxy: &RecordingProxy) -> Broadcast {
    Broadcast::start_on(
        STREAM,
        &[ALICE, BOB],
        Some(store),
        &[("AWS_ENDPOINT", format!("http://{}", proxy.addr()))],
        ["--redundant", "--admin-token", TOKEN],
    )
}

fn wait_for_log(member: &Broadcast, needle: &str, what: &str) {
    wait_until(WAIT, || member.log().contains(needle).then_some(()))
        .unwrap_or_else(|| panic!("{what}: no {needle:?} in the log:\n{}", member.log()));
}

fn signal(member: &Broadcast, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &member.pid().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig}");
}

/// The newest `live.m3u8` of `rendition`, read from the store directly.
fn playlist(server: &s3::S3Server, bucket: &str, rendition: &str) -> Option<MediaPlaylist> {
    let response = server.request(
        "GET",
        &format!("/{bucket}/streams/{STREAM}/{rendition}/live.m3u8"),
    );
    (response.status == 200)
        .then(|| MediaPlaylist::parse(std::str::from_utf8(&response.body).ok()?).ok())
        .flatten()
}

/// The last part a playlist lists, as (MSN, index).
fn last_part(p: &MediaPlaylist) -> (u64, usize) {
    match &p.open {
        Some(open) if !open.parts.is_empty() => (p.open_msn(), open.parts.len() - 1),
        _ => (
            p.open_msn() - 1,
            p.segments
                .last()
                .map_or(0, |s| s.parts.len().saturating_sub(1)),
        ),
    }
}

/// Waits until the store's playlist lists a part after `after`; returns
/// when it was seen.
fn next_part_seen(server: &s3::S3Server, bucket: &str, after: (u64, usize)) -> Instant {
    wait_until(WAIT, || {
        playlist(server, bucket, "aac")
            .filter(|p| last_part(p) > after)
            .map(|_| Instant::now())
    })
    .expect("a part after the takeover")
}

/// The first write of a part through `proxy` at or after `since`.
fn first_part_write(proxy: &RecordingProxy, since: Instant) -> Option<Instant> {
    proxy
        .requests()
        .iter()
        .find(|r| r.at >= since && r.method == "PUT" && r.target.contains(".m4s"))
        .map(|r| r.at)
}

/// Checks what the listener heard: both hosts without a silent block from
/// the first time it heard them (the stream starts before they join) to
/// now; returns the longest wait between two blocks arriving after `from`
/// (ffmpeg reads whole segments, so about a segment is normal).
fn assert_heard_throughout(listener: &Listener, from: Instant, what: &str) -> Duration {
    let blocks = listener.blocks();
    let first = blocks
        .iter()
        .position(|(_, rms)| *rms > HEARD)
        .unwrap_or(blocks.len());
    let heard = &blocks[first..];
    let since = heard.iter().filter(|(at, _)| *at >= from).count();
    assert!(
        since > 300,
        "{what}: the listener decoded only {since} blocks since; ffmpeg: {}",
        listener.stderr.lock().unwrap()
    );
    let silent: Vec<_> = heard
        .iter()
        .enumerate()
        .filter(|(_, (_, rms))| *rms < SILENT)
        .map(|(i, (at, _))| {
            format!(
                "#{i} (arrived {} ms after the fault)",
                at.saturating_duration_since(from).as_millis()
            )
        })
        .collect();
    assert!(
        silent.is_empty(),
        "{what}: {} silent 10 ms blocks at the listener (of {} since the hosts were first heard): {}",
        silent.len(),
        heard.len(),
        silent.join(", ")
    );
    heard
        .iter()
        .filter(|(at, _)| *at >= from)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default()
}

/// The stream as stored: every segment on the timeline (date = epoch + MSN
/// × 1.92 s), none a gap, every listed object stored, no end.
fn assert_stream_continuous(server: &s3::S3Server, bucket: &str) {
    let timing = server.request("GET", &format!("/{bucket}/streams/{STREAM}/timing.json"));
    let timing: serde_json::Value = serde_json::from_slice(&timing.body).expect("timing JSON");
    let epoch_ms = timing["epoch_unix_ms"].as_i64().expect("epoch");
    for r in ["aac", "opus"] {
        let p = playlist(server, bucket, r).expect("playlist");
        assert!(!p.end_list, "{r}: the stream ended");
        for (s, msn) in p.segments.iter().zip(p.media_sequence..) {
            let pdt = s.program_date_time.expect("dated").timestamp_millis();
            assert_eq!(pdt, epoch_ms + (msn * 1920) as i64, "{r}: segment {msn}");
            if msn > p.media_sequence + 1 {
                assert!(!s.gap, "{r}: segment {msn} is a gap");
            }
            let uris = std::iter::once(&s.uri).chain(s.parts.iter().map(|p| &p.uri));
            for uri in uris {
                let head = server.request("HEAD", &format!("/{bucket}/streams/{STREAM}/{r}/{uri}"));
                assert_eq!(head.status, 200, "{r}: {uri} is listed but not stored");
            }
        }
    }
}

#[test]
fn a_standby_takes_over_a_killed_and_a_paused_leader_without_a_gap() {
    let server = s3::S3Server::from_env();
    let bucket = server.create_bucket("standby");
    let store = format!("s3://{bucket}/streams");
    let upstream = s3_addr(&server);
    let proxies = [
        RecordingProxy::start(upstream),
        RecordingProxy::start(upstream),
    ];

    let a = member(&store, &proxies[0]);
    wait_for_log(&a, "leading the standby group", "the first member");
    let b = member(&store, &proxies[1]);
    wait_for_log(&b, "standing by", "the second member");

    let alice = Publisher::start_tee(&[a.rtmp_url(&ALICE), b.rtmp_url(&ALICE)], &ALICE_TONE);
    let bob = Publisher::start_tee(&[a.rtmp_url(&BOB), b.rtmp_url(&BOB)], &BOB_TONE);
    // ffmpeg's HLS reader gives up on a playlist without a whole segment.
    wait_until(WAIT, || {
        playlist(&server, &bucket, "aac").filter(|p| p.segments.len() >= 2)
    })
    .unwrap_or_else(|| panic!("the leader publishes nothing:\n{}", a.log()));
    let (_origin, origin) = onair_origin(Path::new(&store), &[]);
    let mut listener = Listener::start(&format!("http://{origin}/{STREAM}/aac/live.m3u8"));
    wait_until(WAIT, || {
        (listener
            .blocks()
            .iter()
            .filter(|(_, rms)| *rms > HEARD)
            .count()
            > 300)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the listener hears nothing: {}",
            listener.stderr.lock().unwrap()
        )
    });

    // The operator mutes Bob on the leader: the standby mutes him too.
    let (status, _) = control(&a, "PATCH", "/control/hosts/bob", r#"{"muted": true}"#);
    assert_eq!(status, 200, "PATCH on the leader");
    wait_muted(
        &b,
        "bob",
        true,
        "the standby, after a mute given to the leader",
    );

    // kill -9 the leader.
    let killed = Instant::now();
    signal(&a, "-9");
    let before = last_part(&playlist(&server, &bucket, "aac").expect("playlist"));
    let seen = next_part_seen(&server, &bucket, before);
    let first = wait_until(WAIT, || first_part_write(&proxies[1], killed))
        .expect("the standby writes parts");
    wait_for_log(
        &b,
        "leading the standby group",
        "the standby after the kill",
    );
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        listener.child.0.try_wait().ok().flatten().is_none(),
        "the listener stopped: {}",
        listener.stderr.lock().unwrap()
    );
    let gap = assert_heard_throughout(&listener, killed, "after the kill");
    assert_stream_continuous(&server, &bucket);
    let takeover = first - killed;
    assert!(
        takeover <= LEASE + PART + Duration::from_secs(1),
        "the standby's first part {takeover:?} after the kill"
    );
    eprintln!(
        "standby: kill -9 -> first part written by the standby {} ms (lease {} ms + part {} ms), \
         -> listed in the store {} ms; longest wait between blocks at the ffmpeg listener {} ms",
        takeover.as_millis(),
        LEASE.as_millis(),
        PART.as_millis(),
        (seen - killed).as_millis(),
        gap.as_millis()
    );
    drop(a);

    // The killed member comes back as a standby; the leader stays.
    let proxies = [RecordingProxy::start(upstream), proxies[1].clone()];
    let a2 = member(&store, &proxies[0]);
    wait_for_log(&a2, "standing by", "the restarted member");
    wait_muted(&b, "bob", true, "the new leader");
    wait_muted(&a2, "bob", true, "the restarted member");
    // Unmuted on the leader, for the standby too (and Bob's tone covers
    // the moment the hosts' sessions are replaced below).
    let (status, _) = control(&b, "PATCH", "/control/hosts/bob", r#"{"muted": false}"#);
    assert_eq!(status, 200, "PATCH on the new leader");
    wait_muted(
        &a2,
        "bob",
        false,
        "the standby, after an unmute given to the leader",
    );
    // ffmpeg's tee muxer never reconnects an output that failed: the hosts
    // publish again, to both members (the leader replaces their sessions
    // in the same feeds), and the old publishers stop once the new ones run.
    // One host at a time, so that the moment a host's session is replaced
    // (its audio re-anchored in its feed) never falls on the other's.
    let _alice = Publisher::start_tee(&[a2.rtmp_url(&ALICE), b.rtmp_url(&ALICE)], &ALICE_TONE);
    std::thread::sleep(Duration::from_secs(1));
    drop(alice);
    std::thread::sleep(Duration::from_secs(1));
    let _bob = Publisher::start_tee(&[a2.rtmp_url(&BOB), b.rtmp_url(&BOB)], &BOB_TONE);
    std::thread::sleep(Duration::from_secs(1));
    drop(bob);
    std::thread::sleep(Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !a2.log().contains("leading the standby group"),
        "the restarted member took the lease from a healthy leader:\n{}",
        a2.log()
    );
    let b_log = b.log();
    let led = b_log.find("leading the standby group").expect("b led");
    assert!(
        !b_log[led..].contains("standing by"),
        "the leader lost its role to the restarted member:\n{b_log}"
    );

    // SIGSTOP the leader for 10 s: the restarted member takes over, and
    // the old leader writes nothing after its first write.
    let stopped = Instant::now();
    signal(&b, "-STOP");
    wait_for_log(
        &a2,
        "leading the standby group",
        "the standby while the leader is paused",
    );
    let took = wait_until(WAIT, || first_part_write(&proxies[0], stopped))
        .expect("the new leader writes parts");
    let first_write = proxies[0]
        .requests()
        .iter()
        .find(|r| r.at >= stopped && r.writes())
        .map(|r| r.at)
        .expect("a write by the new leader");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    signal(&b, "-CONT");
    let woke = Instant::now();
    wait_until(WAIT, || {
        let log = b.log();
        log[led..].contains("standing by").then_some(())
    })
    .unwrap_or_else(|| panic!("the paused leader did not stand by:\n{}", b.log()));
    std::thread::sleep(Duration::from_secs(3));
    let late: Vec<_> = proxies[1]
        .requests()
        .into_iter()
        .filter(|r| r.writes() && r.at >= first_write)
        .map(|r| {
            format!(
                "{} {} at +{} ms",
                r.method,
                r.target,
                (r.at - first_write).as_millis()
            )
        })
        .collect();
    assert!(
        late.is_empty(),
        "the old leader wrote after the new leader's first write:\n{}",
        late.join("\n")
    );
    assert!(
        b.log()[led..].contains("Lapsed"),
        "the paused leader's log says why it stood down:\n{}",
        b.log()
    );
    let gap = assert_heard_throughout(&listener, stopped, "after SIGSTOP");
    assert_stream_continuous(&server, &bucket);
    eprintln!(
        "standby: SIGSTOP -> first part written by the other member {} ms; the paused leader \
         woke {} ms after that and wrote nothing; longest wait between blocks at the listener {} ms",
        (took - stopped).as_millis(),
        (woke - took).as_millis(),
        gap.as_millis()
    );
}
