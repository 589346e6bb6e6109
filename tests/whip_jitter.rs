//! The WHIP jitter buffer end to end, in simulated time: a 10 s 1 kHz tone
//! encoded to 20 ms Opus packets crosses a network with 5 % loss, up to
//! 60 ms of jitter (so packets reorder) and a 2 s outage, into
//! [`OpusJitter`], pulled every 10 ms.

use onair::ingest::whip::jitter::{Frame, FrameKind, OpusJitterConfig};
use onair::time::ProgramTime;

const RATE: u32 = 48_000;
const PACKET: u64 = 960;
const PACKETS: u64 = 500;
/// The outage: packets sent in [4 s, 6 s) never arrive.
const OUTAGE: std::ops::Range<u64> = 200..300;
/// -12 dBFS RMS.
const LEVEL_DB: f64 = -12.0;

/// xorshift64: deterministic loss and jitter.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn tone_packets() -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(RATE, opus::Channels::Stereo, opus::Application::Audio)
        .expect("encoder");
    enc.set_bitrate(opus::Bitrate::Bits(64_000))
        .expect("bitrate");
    let amp = 10f64.powf(LEVEL_DB / 20.0) * std::f64::consts::SQRT_2;
    (0..PACKETS)
        .map(|p| {
            let pcm: Vec<f32> = (0..PACKET)
                .flat_map(|i| {
                    let t = (p * PACKET + i) as f64 / f64::from(RATE);
                    let v = (amp * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()) as f32;
                    [v, v]
                })
                .collect();
            enc.encode_vec_float(&pcm, 4000).expect("encode")
        })
        .collect()
}

fn db(rms: f64) -> f64 {
    20.0 * rms.max(1e-9).log10()
}

#[test]
fn lossy_jittery_network_with_an_outage() {
    let payloads = tone_packets();
    let mut rng = Rng(0x5DEE_CE66_D1CE_4E5B);
    // (arrival, seq, ts, payload): sent at the end of each frame, 20 ms
    // transit plus 0-60 ms jitter.
    let mut network = Vec::new();
    let mut dropped = 0;
    for (i, payload) in payloads.iter().enumerate() {
        let i = i as u64;
        // The first packet and the first after the outage always arrive, so
        // the timeline's anchors are known.
        let keep = i == 0 || i == OUTAGE.end;
        if OUTAGE.contains(&i) || (!keep && rng.next() % 100 < 5) {
            dropped += 1;
            continue;
        }
        let jitter = rng.next() % (60 * 48 + 1);
        let arrival = (i + 1) * PACKET + 20 * 48 + jitter;
        let seq = (40_000 + i) as u16;
        let ts = (3_000_000_000 + i * PACKET) as u32;
        network.push((arrival, seq, ts, payload.clone()));
    }
    network.sort_by_key(|p| p.0);

    let mut jb = OpusJitterConfig::default().build().expect("build");
    let mut frames: Vec<Frame> = Vec::new();
    let mut pending = network.iter().peekable();
    let mut pulls_during_outage_with_frames = 0;
    let end = (PACKETS + 10) * PACKET;
    let mut now = 0;
    while now <= end {
        while let Some(p) = pending.next_if(|p| p.0 <= now) {
            jb.push(p.1, p.2, &p.3, ProgramTime::from_samples(p.0));
        }
        let before = frames.len();
        jb.pull(ProgramTime::from_samples(now), &mut frames)
            .expect("pull");
        // Well inside the outage (after 200 ms of concealment plus the
        // reorder wait), nothing comes out.
        let outage_ms = now * 1000 / u64::from(RATE);
        if (4_500..6_000).contains(&outage_ms) && frames.len() > before {
            pulls_during_outage_with_frames += 1;
        }
        now += 480;
    }
    let stats = jb.stats();
    println!("{stats:?}, {dropped} dropped by the network");

    assert_eq!(pulls_during_outage_with_frames, 0);

    // The timeline: every 20 ms frame is there, decoded or concealed,
    // except one span: the outage beyond the concealment budget.
    assert!(frames.windows(2).all(|w| w[1].host_ts_ms > w[0].host_ts_ms));
    assert_eq!(frames.first().map(|f| f.host_ts_ms), Some(0));
    let gaps: Vec<(i64, i64)> = frames
        .windows(2)
        .filter(|w| w[1].host_ts_ms != w[0].host_ts_ms + 20)
        .map(|w| (w[0].host_ts_ms, w[1].host_ts_ms))
        .collect();
    assert_eq!(gaps.len(), 1, "gaps {gaps:?}");
    let (last_before, first_after) = gaps[0];
    assert_eq!(
        first_after, 6_000,
        "output resumes with the first packet after the outage"
    );
    let last_real = frames
        .iter()
        .filter(|f| f.kind == FrameKind::Decoded && f.host_ts_ms < 4_000)
        .map(|f| f.host_ts_ms)
        .max()
        .unwrap_or(0);
    let concealed_after = last_before - last_real;
    assert!(
        (20..=200).contains(&concealed_after),
        "{concealed_after} ms concealed into the outage"
    );
    // The whole stream is out; after its end (the pulls go on for 200 ms)
    // only concealment, within the budget.
    let last = frames.last().map_or(0, |f| f.host_ts_ms);
    assert!(
        (9_980..=9_980 + 200).contains(&last),
        "last frame at {last} ms"
    );
    assert!(
        frames
            .iter()
            .filter(|f| f.host_ts_ms > 9_980)
            .all(|f| f.kind == FrameKind::Plc)
    );
    assert!(
        frames
            .iter()
            .all(|f| f.audio.frames() == 960 && f.audio.channels == 2)
    );
    assert!(stats.lost >= dropped - 1, "{stats:?}");
    assert!(stats.concealed_plc + stats.concealed_fec >= 10);

    // Level: 100 ms windows after the first, of five frames each.
    let mut checked = 0;
    let mut with_concealment = 0;
    for w in 1..100i64 {
        let window: Vec<&Frame> = frames.iter().filter(|f| f.host_ts_ms / 100 == w).collect();
        if window.len() < 5 {
            continue; // the outage
        }
        // The decoder needs a frame to recover after concealment or a gap:
        // a window starting right after one counts as containing it.
        let first = window[0].host_ts_ms;
        let after_break = frames
            .iter()
            .rev()
            .find(|f| f.host_ts_ms < first)
            .is_none_or(|p| p.kind != FrameKind::Decoded || p.host_ts_ms + 20 != first);
        if after_break || window.iter().any(|f| f.kind != FrameKind::Decoded) {
            with_concealment += 1;
            continue;
        }
        let sum: f64 = window
            .iter()
            .flat_map(|f| f.audio.samples.iter())
            .map(|&s| f64::from(s) * f64::from(s))
            .sum();
        let rms = (sum / (window.len() * 960 * 2) as f64).sqrt();
        let level = db(rms);
        assert!(
            (level - LEVEL_DB).abs() <= 3.0,
            "window {w}: {level:.1} dBFS"
        );
        checked += 1;
    }
    println!("{checked} windows within ±3 dB, {with_concealment} with a concealment excluded");
    assert!(checked >= 50, "only {checked} clean windows");
    assert!(with_concealment > 0);
}
