//! Live host feeds: packet decoding of real AAC/MP3 frames, and the jitter
//! buffer with adaptive resampling, in simulated time (no sockets).
//!
//! The simulated host produces 1024-frame blocks on its own clock (running
//! some ppm fast or slow against the program clock) and a delivery model
//! decides when each block reaches the feed (TCP bursts, jitter, stalls).
//! The program side pulls 10 ms at a time, as the mixer driver does, and the
//! output is checked sample by sample against the sine the host sent.

#[path = "common/analysis.rs"]
mod analysis;

use std::f64::consts::TAU;
use std::path::Path;
use std::process::Command;

use onair::audio::{
    DecodeError, Decoded, FeedConfig, FeedState, LiveFeedConfig, LiveStats, Mixer, MixerConfig,
    PacketDecoder,
};
use onair::time::ProgramTime;

const PROGRAM_RATE: u64 = 48_000;
/// Frames per host block: one AAC frame.
const BLOCK: usize = 1024;
/// Program frames per pull (10 ms).
const TICK: u64 = 480;

// ---------------------------------------------------------------------------
// Real packets made by ffmpeg.
// ---------------------------------------------------------------------------

/// Runs ffmpeg; a missing ffmpeg fails the test.
fn ffmpeg(args: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg must be installed for these tests");
    assert!(status.success(), "ffmpeg {args:?} failed");
}

/// A 1 kHz tone at amplitude 0.5 on every channel, encoded by ffmpeg.
fn encode_tone(dir: &Path, rate: u32, channels: u32, codec: &[&str], name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let expr = vec!["0.5*sin(2*PI*1000*t)"; channels as usize].join("|");
    let src = format!("aevalsrc={expr}:s={rate}:d=2");
    let mut args = vec!["-f", "lavfi", "-i", &src];
    args.extend_from_slice(codec);
    let out = path.to_str().expect("utf-8 temp path");
    args.push(out);
    ffmpeg(&args);
    std::fs::read(&path).expect("read encoded file")
}

/// Splits an ADTS stream into raw AAC access units and builds the
/// AudioSpecificConfig an FLV sequence header would carry.
///
/// ADTS fixed header (ISO/IEC 13818-7 §6.2): profile (2 bits) is the audio
/// object type minus one, then the 4-bit sampling frequency index and the
/// 3-bit channel configuration; `aac_frame_length` (13 bits) counts the
/// header.
fn adts_to_raw(adts: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut frames = Vec::new();
    let mut asc = Vec::new();
    let mut pos = 0;
    while pos + 7 <= adts.len() {
        let h = &adts[pos..pos + 7];
        assert_eq!((h[0], h[1] & 0xF6), (0xFF, 0xF0), "ADTS sync at {pos}");
        let header_len = if h[1] & 1 == 1 { 7 } else { 9 };
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let object_type = (h[2] >> 6) + 1;
        let rate_index = (h[2] >> 2) & 0xF;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        asc = vec![
            (object_type << 3) | (rate_index >> 1),
            ((rate_index & 1) << 7) | (channels << 3),
        ];
        frames.push(adts[pos + header_len..pos + len].to_vec());
        pos += len;
    }
    assert_eq!(pos, adts.len(), "trailing bytes after the last ADTS frame");
    (asc, frames)
}

/// Splits a bare MP3 stream (no ID3, no Xing frame) into frames, reading the
/// layer III frame length from each header (ISO/IEC 11172-3 §2.4.2.3).
fn mp3_frames(data: &[u8]) -> Vec<Vec<u8>> {
    const KBPS: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const RATES: [u32; 3] = [44_100, 48_000, 32_000];
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let h = &data[pos..pos + 4];
        assert_eq!(
            (h[0], h[1] & 0xFE),
            (0xFF, 0xFA),
            "MPEG-1 layer III sync at {pos}"
        );
        let kbps = KBPS[usize::from(h[2] >> 4)];
        let rate = RATES[usize::from((h[2] >> 2) & 3)];
        let len = (144 * kbps * 1000 / rate + u32::from((h[2] >> 1) & 1)) as usize;
        frames.push(data[pos..(pos + len).min(data.len())].to_vec());
        pos += len;
    }
    frames
}

/// Decodes every packet and concatenates the first channel.
fn decode_all(dec: &mut PacketDecoder, packets: &[Vec<u8>]) -> (u32, usize, Vec<f32>) {
    let mut first = Vec::new();
    let (mut rate, mut channels) = (0, 0);
    for (i, p) in packets.iter().enumerate() {
        let d = dec.decode(p).unwrap_or_else(|e| panic!("packet {i}: {e}"));
        (rate, channels) = (d.rate, d.channels);
        first.extend(d.samples.iter().step_by(d.channels));
    }
    (rate, channels, first)
}

/// Checks that `x` holds the 1 kHz tone at amplitude 0.5 (±0.5 dB) and
/// nothing comparable at neighbouring frequencies, away from the codec's
/// start-up transient.
fn assert_tone(x: &[f32], rate: u32, what: &str) {
    let mid = &x[x.len() / 4..x.len() * 3 / 4];
    let rate = f64::from(rate);
    let a = analysis::tone_amplitude(mid, 1000.0, rate);
    let db = analysis::dbfs(a / 0.5);
    assert!(db.abs() < 0.5, "{what}: 1 kHz level off by {db:.2} dB");
    for other in [700.0, 1300.0, 2000.0] {
        let o = analysis::tone_amplitude(mid, other, rate);
        assert!(o < a * 0.01, "{what}: energy at {other} Hz: {o} vs {a}");
    }
}

#[test]
fn aac_lc_packets_decode_to_the_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (rate, channels) in [(44_100, 2), (48_000, 1)] {
        let adts = encode_tone(
            dir.path(),
            rate,
            channels,
            &["-c:a", "aac", "-b:a", "128k", "-f", "adts"],
            "t.aac",
        );
        let (asc, frames) = adts_to_raw(&adts);
        let mut dec = PacketDecoder::aac(&asc).expect("AAC-LC is supported");
        let cfg = *dec.aac_config().expect("AAC config");
        assert_eq!(
            (cfg.sample_rate, u32::from(cfg.channel_config), cfg.sbr),
            (rate, channels, false)
        );
        let (got_rate, got_channels, left) = decode_all(&mut dec, &frames);
        assert_eq!((got_rate, got_channels), (rate, channels as usize));
        assert_eq!(left.len(), frames.len() * BLOCK, "1024 frames per packet");
        assert_tone(&left, rate, &format!("AAC {rate} Hz × {channels}"));
    }
}

#[test]
fn he_aac_signalling_decodes_the_lc_core() {
    // An explicit HE-AAC config (object type 5, core 22.05 kHz mono, output
    // 44.1 kHz, core AAC-LC) over LC access units at 22.05 kHz: what an
    // HE-AAC publisher's core layer is. Symphonia has no SBR tool, so the
    // core is what comes out, at the core rate.
    let dir = tempfile::tempdir().expect("tempdir");
    let adts = encode_tone(
        dir.path(),
        22_050,
        1,
        &["-c:a", "aac", "-b:a", "48k", "-f", "adts"],
        "core.aac",
    );
    let (_, frames) = adts_to_raw(&adts);
    // 00101 0111 0001 0100 00010 000: SBR, 22050 Hz, mono, 44100 Hz, LC.
    let asc = [0x2B, 0x8A, 0x08, 0x00];
    let mut dec = PacketDecoder::aac(&asc).expect("HE-AAC decodes its core");
    let cfg = *dec.aac_config().expect("AAC config");
    assert!(cfg.sbr && !cfg.ps);
    assert_eq!(
        (cfg.sample_rate, cfg.extension_rate),
        (22_050, Some(44_100))
    );
    let (rate, channels, left) = decode_all(&mut dec, &frames);
    assert_eq!((rate, channels), (22_050, 1));
    assert_tone(&left, rate, "HE-AAC core");
}

#[test]
fn mp3_packets_of_one_or_more_frames_decode_to_the_tone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mp3 = encode_tone(
        dir.path(),
        44_100,
        2,
        &[
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
        ],
        "t.mp3",
    );
    let frames = mp3_frames(&mp3);
    let mut dec = PacketDecoder::mp3().expect("MP3 is supported");
    let (rate, channels, one) = decode_all(&mut dec, &frames);
    assert_eq!((rate, channels), (44_100, 2));
    assert_eq!(one.len(), frames.len() * 1152);
    assert_tone(&one, rate, "MP3, one frame per packet");
    // FLV allows several frames per tag.
    let pairs: Vec<Vec<u8>> = frames.chunks(2).map(|c| c.concat()).collect();
    let mut dec = PacketDecoder::mp3().expect("MP3 is supported");
    let (_, _, two) = decode_all(&mut dec, &pairs);
    assert_eq!(two, one, "splitting packets differently changes nothing");
}

#[test]
fn unsupported_aac_configs_are_rejected_when_the_session_starts() {
    let cases: [(&[u8], &str); 4] = [
        (&[0x0A, 0x10], "AAC Main"),
        (&[0x12, 0x30], "5.1"),
        (&[0x12, 0x14], "960-sample frames"),
        (&[0xF8, 0x08, 0x40], "object type 32 (MPEG-1 layer 1)"),
    ];
    for (asc, what) in cases {
        match PacketDecoder::aac(asc) {
            Err(DecodeError::Unsupported(reason)) => assert!(!reason.is_empty()),
            Err(e) => panic!("{what}: wrong error {e}"),
            Ok(_) => panic!("{what}: accepted"),
        }
    }
    assert!(matches!(
        PacketDecoder::aac(&[0x12]),
        Err(DecodeError::MalformedConfig(_))
    ));
}

/// A deterministic generator (SplitMix64), so every run sees the same
/// jitter and corruption.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

#[test]
fn truncated_and_corrupt_packets_are_errors_for_that_packet_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adts = encode_tone(
        dir.path(),
        48_000,
        2,
        &["-c:a", "aac", "-f", "adts"],
        "t.aac",
    );
    let (asc, frames) = adts_to_raw(&adts);
    let mp3 = encode_tone(
        dir.path(),
        48_000,
        2,
        &[
            "-c:a",
            "libmp3lame",
            "-write_xing",
            "0",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
        ],
        "t.mp3",
    );
    let mp3 = mp3_frames(&mp3);
    let mut rng = Rng(7);
    for (name, packets) in [("aac", &frames), ("mp3", &mp3)] {
        let mut dec = match name {
            "aac" => PacketDecoder::aac(&asc),
            _ => PacketDecoder::mp3(),
        }
        .expect("decoder");
        let mut corrupt = 0;
        for (i, good) in packets.iter().enumerate().take(60) {
            // Every packet is preceded by a damaged copy of a neighbour:
            // truncated, bit-flipped, or random bytes.
            let mut bad = good.clone();
            match i % 3 {
                0 => bad.truncate(rng.range(0, good.len() as u64 - 1) as usize),
                1 => {
                    for _ in 0..8 {
                        let k = rng.range(0, bad.len() as u64 - 1) as usize;
                        bad[k] ^= 1 << rng.range(0, 7);
                    }
                }
                _ => bad.iter_mut().for_each(|b| *b = rng.next() as u8),
            }
            match dec.decode(&bad) {
                Err(DecodeError::Corrupt { len, .. }) => {
                    assert_eq!(len, bad.len());
                    corrupt += 1;
                }
                Err(e) => panic!("{name} packet {i}: wrong error kind {e}"),
                // A flipped bit in the spectral data can still decode.
                Ok(d) => assert!(d.samples.iter().all(|v| v.is_finite())),
            }
            // The decoder is still usable for the next good packet.
            let d = dec
                .decode(good)
                .unwrap_or_else(|e| panic!("{name}: good packet {i} after a bad one: {e}"));
            assert!(d.frames() > 0);
        }
        assert!(
            corrupt >= 20,
            "{name}: only {corrupt} of 60 damaged packets were rejected"
        );
        let truncated_mp3 = &packets[5][..packets[5].len() - 1];
        if name == "mp3" {
            assert!(matches!(
                dec.decode(truncated_mp3),
                Err(DecodeError::Corrupt { .. })
            ));
        }
        assert!(matches!(dec.decode(&[]), Err(DecodeError::Corrupt { .. })));
    }
}

// ---------------------------------------------------------------------------
// The live feed in simulated time.
// ---------------------------------------------------------------------------

/// Amplitude of the simulated hosts' tone.
const AMP: f64 = 0.5;
/// Frequency of the hosts' tone on their own clock.
const FREQ: f64 = 1000.0;

/// A host producing 1024-frame blocks of a sine on a clock `drift_ppm` off
/// the program clock.
struct Host {
    rate: u32,
    channels: usize,
    drift_ppm: f64,
    /// Blocks produced so far.
    blocks: u64,
    /// One period of the tone when it is a whole number of samples.
    table: Vec<f32>,
}

impl Host {
    fn new(rate: u32, channels: usize, drift_ppm: f64) -> Self {
        let period = f64::from(rate) / FREQ;
        let table = if period.fract() == 0.0 {
            (0..period as usize)
                .map(|n| (AMP * (TAU * FREQ * n as f64 / f64::from(rate)).sin()) as f32)
                .collect()
        } else {
            Vec::new()
        };
        Self {
            rate,
            channels,
            drift_ppm,
            blocks: 0,
            table,
        }
    }

    /// Program time at which the next block is complete on the host.
    fn next_ready_at(&self) -> f64 {
        let host_frames = ((self.blocks + 1) * BLOCK as u64) as f64;
        host_frames * PROGRAM_RATE as f64 / (f64::from(self.rate) * (1.0 + self.drift_ppm * 1e-6))
    }

    /// The next block and its timestamp in ms, as an encoder stamps it.
    fn next_block(&mut self) -> (i64, Decoded) {
        let first = self.blocks * BLOCK as u64;
        self.blocks += 1;
        let mut samples = Vec::with_capacity(BLOCK * self.channels);
        for n in first..first + BLOCK as u64 {
            let v = if self.table.is_empty() {
                (AMP * (TAU * FREQ * n as f64 / f64::from(self.rate)).sin()) as f32
            } else {
                self.table[(n % self.table.len() as u64) as usize]
            };
            samples.extend(std::iter::repeat_n(v, self.channels));
        }
        let ts = (first * 1000 / u64::from(self.rate)) as i64;
        (
            ts,
            Decoded {
                rate: self.rate,
                channels: self.channels,
                samples,
            },
        )
    }
}

/// When blocks reach the feed.
enum Delivery {
    /// Everything produced so far arrives together every 40-200 ms.
    Bursts { next: u64 },
    /// Each block is delayed by 0..=`max_ms`, arriving in order.
    Jitter { max_ms: u64, last: u64 },
}

impl Delivery {
    /// Arrival time of a block ready at `ready` (program frames).
    fn arrival(&mut self, ready: u64, rng: &mut Rng) -> u64 {
        match self {
            Delivery::Bursts { next } => {
                while *next < ready {
                    *next += rng.range(40, 200) * PROGRAM_RATE / 1000;
                }
                *next
            }
            Delivery::Jitter { max_ms, last } => {
                let t = (ready + rng.range(0, *max_ms) * PROGRAM_RATE / 1000).max(*last);
                *last = t;
                t
            }
        }
    }
}

/// A break in delivery: `(from, to)` in program seconds.
#[derive(Clone, Copy)]
enum Outage {
    None,
    /// The host sends nothing it produces in the window (its timestamps
    /// jump over it).
    HostStall(f64, f64),
    /// The network holds everything in the window and delivers it at the end.
    NetworkStall(f64, f64),
}

/// What a run measured.
#[derive(Debug, Default)]
struct Report {
    /// Largest deviation from the sine recurrence, relative to the amplitude.
    max_residual: f64,
    /// Program frame where it occurred.
    max_residual_at: u64,
    /// Smoothed depth bounds after convergence, in ms.
    smoothed_ms: (u64, u64),
    /// Instantaneous depth bounds while playing after convergence, in ms.
    depth_ms: (u64, u64),
    /// Mean correction over the last tenth of the run, in ppm.
    late_ppm: f64,
    /// 1 s windows whose RMS level strayed from the tone's, after the first.
    level_errors_db: f64,
    /// Silent runs in the output: (start, length) in program frames.
    silences: Vec<(u64, u64)>,
    stats: Option<LiveStats>,
}

/// Checks each output sample against the recurrence every sine obeys,
/// `y[n+1] + y[n-1] = 2 cos(ω) y[n]`. A dropped or repeated sample, a
/// fractional time jump of 1/50 sample or a level step of 0.3 % shows up as a
/// residual above 3e-3 of the amplitude; the 5 ms raised-cosine fades stay
/// below it (about 1.7e-3; a linear 5 ms ramp's corners would not),
/// and so do the resampler's error and the tone shifted by 1000 ppm.
struct SineCheck {
    two_cos: f64,
    prev: [f64; 2],
    n: u64,
    max: f64,
    max_at: u64,
    silent_from: Option<u64>,
    silences: Vec<(u64, u64)>,
    window: (f64, u64),
    level_err: f64,
}

impl SineCheck {
    fn new(start: u64) -> Self {
        Self {
            two_cos: 2.0 * (TAU * FREQ / PROGRAM_RATE as f64).cos(),
            prev: [0.0; 2],
            n: start,
            max: 0.0,
            max_at: 0,
            silent_from: None,
            silences: Vec::new(),
            window: (0.0, 0),
            level_err: 0.0,
        }
    }

    /// Feeds interleaved stereo output; the two channels must be equal.
    fn feed(&mut self, stereo: &[f32], playing: bool) {
        for frame in stereo.chunks_exact(2) {
            assert_eq!(frame[0], frame[1], "channels differ at frame {}", self.n);
            let y = f64::from(frame[0]);
            let r = (y + self.prev[0] - self.two_cos * self.prev[1]).abs() / AMP;
            if r > self.max {
                (self.max, self.max_at) = (r, self.n);
            }
            self.prev = [self.prev[1], y];
            match (y == 0.0, self.silent_from) {
                (true, None) => self.silent_from = Some(self.n),
                (false, Some(s)) => {
                    self.silences.push((s, self.n - s));
                    self.silent_from = None;
                }
                _ => {}
            }
            self.window.0 += y * y;
            self.window.1 += 1;
            self.n += 1;
        }
        // Level per whole second of steady playing.
        if self.window.1 >= PROGRAM_RATE {
            let rms = (self.window.0 / self.window.1 as f64).sqrt();
            if playing {
                let db = 20.0 * (rms / (AMP / 2f64.sqrt())).log10();
                self.level_err = self.level_err.max(db.abs());
            }
            self.window = (0.0, 0);
        }
    }
}

/// Runs one host into a feed for `seconds` of program time and measures the
/// output. Depth bounds are taken after `settle_s`.
fn simulate(
    host: &mut Host,
    mut delivery: Delivery,
    outage: Outage,
    seconds: u64,
    settle_s: u64,
    seed: u64,
) -> Report {
    let mut rng = Rng(seed);
    let start = 123_456; // The program is already running when the host joins.
    let mut feed = LiveFeedConfig::default()
        .build(ProgramTime::from_samples(start))
        .expect("feed");
    let mut check = SineCheck::new(start);
    let mut out = Vec::new();
    let mut report = Report {
        smoothed_ms: (u64::MAX, 0),
        depth_ms: (u64::MAX, 0),
        ..Report::default()
    };
    let end = start + seconds * PROGRAM_RATE;
    let settle = start + settle_s * PROGRAM_RATE;
    let tail_from = end - (end - start) / 10;
    let (mut ppm_sum, mut ppm_n) = (0.0, 0u64);
    let mut pending: Option<(u64, i64, Decoded)> = None;
    let mut now = start;
    let mut steady_since = None;
    while now < end {
        // Deliver every block that has arrived by now.
        loop {
            if pending.is_none() {
                let ready = start as f64 + host.next_ready_at();
                let (ts, block) = host.next_block();
                let ready = ready.ceil() as u64;
                let secs = (ready - start) as f64 / PROGRAM_RATE as f64;
                let arrival = match outage {
                    Outage::HostStall(a, b) if secs >= a && secs < b => continue,
                    Outage::NetworkStall(a, b) if secs >= a && secs < b => {
                        let resume = start + (b * PROGRAM_RATE as f64) as u64;
                        delivery.arrival(ready, &mut rng).max(resume)
                    }
                    _ => delivery.arrival(ready, &mut rng),
                };
                pending = Some((arrival, ts, block));
            }
            match pending.take() {
                Some((arrival, ts, block)) if arrival <= now => {
                    feed.push(ts, &block, ProgramTime::from_samples(arrival))
                        .expect("push");
                }
                other => {
                    pending = other;
                    break;
                }
            }
        }
        let pts = feed.pull(ProgramTime::from_samples(now + TICK), &mut out);
        assert_eq!(
            pts,
            ProgramTime::from_samples(now),
            "program timeline is contiguous"
        );
        assert_eq!(out.len(), 2 * TICK as usize);
        let stats = feed.stats();
        let playing = stats.state == FeedState::Playing;
        // Level is judged only over seconds fully inside playback.
        steady_since = match (playing, steady_since) {
            (true, None) => Some(now),
            (true, s) => s,
            (false, _) => None,
        };
        let steady = steady_since.is_some_and(|s| now >= s + 2 * PROGRAM_RATE);
        check.feed(&out, steady);
        if now >= settle && playing {
            let s = stats.smoothed_depth_ms();
            report.smoothed_ms = (report.smoothed_ms.0.min(s), report.smoothed_ms.1.max(s));
            let d = stats.depth_ms();
            report.depth_ms = (report.depth_ms.0.min(d), report.depth_ms.1.max(d));
        }
        if now >= tail_from {
            ppm_sum += stats.correction_ppm;
            ppm_n += 1;
        }
        now += TICK;
    }
    report.max_residual = check.max;
    report.max_residual_at = check.max_at;
    report.level_errors_db = check.level_err;
    report.silences = check.silences;
    report.late_ppm = ppm_sum / ppm_n.max(1) as f64;
    report.stats = Some(feed.stats());
    report
}

/// Asserts a long drifting run stays within bounds, and prints what it saw.
fn assert_drift_absorbed(drift_ppm: f64, seed: u64) {
    let seconds = 3600;
    let started = std::time::Instant::now();
    let mut host = Host::new(48_000, 2, drift_ppm);
    let r = simulate(
        &mut host,
        Delivery::Bursts { next: 0 },
        Outage::None,
        seconds,
        600,
        seed,
    );
    let stats = r.stats.expect("stats");
    eprintln!(
        "drift {drift_ppm:+} ppm over {seconds} s: smoothed depth {:?} ms, depth {:?} ms, \
         correction {:.1} ppm (last tenth), max residual {:.2e} at {}, level within {:.3} dB, \
         {:?} (ran {:.1} s)",
        r.smoothed_ms,
        r.depth_ms,
        r.late_ppm,
        r.max_residual,
        r.max_residual_at,
        r.level_errors_db,
        stats,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        (stats.underruns, stats.overruns, stats.dropped_frames),
        (0, 0, 0)
    );
    assert_eq!((stats.gaps, stats.discontinuities), (0, 0));
    // The smoothed depth is what the controller holds: target ± 20 ms.
    assert!(
        r.smoothed_ms.0 >= 180 && r.smoothed_ms.1 <= 220,
        "smoothed depth drifted: {:?} ms",
        r.smoothed_ms
    );
    // Bursts up to 200 ms apart make the instantaneous depth swing by about
    // that much around the mean, but it stays clear of empty and of the
    // overrun limit (1 s).
    assert!(
        r.depth_ms.0 >= 25 && r.depth_ms.1 <= 450,
        "depth out of bounds: {:?} ms",
        r.depth_ms
    );
    assert!(
        (r.late_ppm - drift_ppm).abs() < 15.0,
        "correction {} ppm does not match the host's {drift_ppm} ppm",
        r.late_ppm
    );
    assert!(
        r.max_residual < 3e-3,
        "output not a continuous sine: residual {:.2e} at frame {}",
        r.max_residual,
        r.max_residual_at
    );
    assert!(
        r.level_errors_db < 0.05,
        "level moved by {} dB",
        r.level_errors_db
    );
    // Silence only before playback started (buffering to the target).
    assert_eq!(r.silences.len(), 1, "silences {:?}", r.silences);
}

#[test]
fn host_300_ppm_fast_for_an_hour_keeps_depth_and_continuity() {
    assert_drift_absorbed(300.0, 1);
}

#[test]
fn host_300_ppm_slow_for_an_hour_keeps_depth_and_continuity() {
    assert_drift_absorbed(-300.0, 2);
}

#[test]
fn jitter_of_60_ms_is_absorbed_at_the_default_depth() {
    // 44.1 kHz mono goes through the rate converter before the buffer.
    let mut host = Host::new(44_100, 1, 80.0);
    let r = simulate(
        &mut host,
        Delivery::Jitter {
            max_ms: 60,
            last: 0,
        },
        Outage::None,
        180,
        60,
        3,
    );
    let stats = r.stats.expect("stats");
    eprintln!("jitter 60 ms: {r:?}");
    assert_eq!((stats.underruns, stats.overruns), (0, 0));
    assert!(r.depth_ms.0 >= 100, "depth fell to {} ms", r.depth_ms.0);
    assert!(
        r.max_residual < 3e-3,
        "residual {:.2e} at {}",
        r.max_residual,
        r.max_residual_at
    );
    assert!(
        r.level_errors_db < 0.1,
        "level moved by {} dB",
        r.level_errors_db
    );
}

#[test]
fn host_stall_of_two_seconds_is_silence_with_ramped_edges() {
    let mut host = Host::new(48_000, 2, 0.0);
    let r = simulate(
        &mut host,
        Delivery::Bursts { next: 0 },
        Outage::HostStall(20.0, 22.0),
        40,
        0,
        4,
    );
    let stats = r.stats.expect("stats");
    eprintln!(
        "host stall: silences {:?}, {stats:?}, residual {:.2e}",
        r.silences, r.max_residual
    );
    assert_eq!(stats.underruns, 1);
    assert_eq!(stats.overruns, 0);
    assert_eq!(
        stats.state,
        FeedState::Playing,
        "the host is mixed in again"
    );
    // Silence before the first playback, then one stretch for the stall: it
    // starts when the 200 ms buffer has drained and ends when it is full
    // again, so it lasts about the stall.
    assert_eq!(r.silences.len(), 2, "silences {:?}", r.silences);
    let (at, len) = r.silences[1];
    let at_s = (at - 123_456) as f64 / PROGRAM_RATE as f64;
    let len_s = len as f64 / PROGRAM_RATE as f64;
    assert!((20.0..20.5).contains(&at_s), "silence starts at {at_s} s");
    assert!((1.8..2.4).contains(&len_s), "silence lasts {len_s} s");
    // No click at either edge: the recurrence residual (a hard cut is ~1)
    // stays at the level of a 5 ms ramp.
    assert!(
        r.max_residual < 3e-3,
        "click: residual {:.2e} at {}",
        r.max_residual,
        r.max_residual_at
    );
}

#[test]
fn network_stall_backlog_is_trimmed_without_a_click() {
    // The host keeps producing; the network holds 2 s and then delivers it
    // at once. The feed runs dry, then gets 2 s in one burst: it drops the
    // oldest audio down to the target so latency does not grow.
    let mut host = Host::new(48_000, 2, 0.0);
    let r = simulate(
        &mut host,
        Delivery::Bursts { next: 0 },
        Outage::NetworkStall(20.0, 22.0),
        40,
        30,
        5,
    );
    let stats = r.stats.expect("stats");
    eprintln!("network stall: {r:?}");
    assert_eq!((stats.underruns, stats.overruns), (1, 1));
    assert!(
        stats.dropped_frames > PROGRAM_RATE,
        "dropped {}",
        stats.dropped_frames
    );
    assert!(
        r.depth_ms.1 <= 450,
        "latency kept: depth up to {} ms",
        r.depth_ms.1
    );
    assert!(
        r.max_residual < 3e-3,
        "click: residual {:.2e} at {}",
        r.max_residual,
        r.max_residual_at
    );
}

#[test]
fn feed_plays_into_the_mixer_at_its_program_time() {
    let mut mixer = Mixer::new(MixerConfig::default());
    let id = mixer.add_feed(FeedConfig {
        name: "host".into(),
        gain_db: 0.0,
        muted: false,
    });
    let mut feed = LiveFeedConfig::default()
        .build(ProgramTime::ZERO)
        .expect("feed");
    let mut host = Host::new(48_000, 2, 0.0);
    let (mut scratch, mut out) = (Vec::new(), Vec::new());
    let mut check = SineCheck::new(0);
    let mut delivered = 0;
    for tick in 0..500u64 {
        let now = tick * TICK;
        while (host.next_ready_at() as u64) <= now {
            let (ts, block) = host.next_block();
            feed.push(ts, &block, ProgramTime::from_samples(now))
                .expect("push");
            delivered += 1;
        }
        feed.pull_into(
            ProgramTime::from_samples(now + TICK),
            &mut mixer,
            id,
            &mut scratch,
        );
        mixer.mix(TICK as usize, &mut out);
        check.feed(&out, false);
    }
    assert!(delivered > 200);
    assert_eq!(mixer.dropped(id).map(|d| d.late), Some(0));
    // Silent while buffering the first 200 ms, then the tone, continuous.
    let first_sound = check
        .silences
        .first()
        .map(|s| s.1)
        .expect("initial silence");
    let ms = first_sound * 1000 / PROGRAM_RATE;
    assert!((200..260).contains(&ms), "playback starts after {ms} ms");
    assert!(
        check.max < 3e-3,
        "residual {:.2e} at {}",
        check.max,
        check.max_at
    );
}
