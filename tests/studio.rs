//! The studio in simulated time: live hosts mixed on the program clock across
//! their sessions (clock drift, a reconnect, a replaced session, a kick) and
//! the hold music ducked under them.
//!
//! Sans-IO: the simulated publishers produce 1024-frame blocks (one AAC
//! frame each) of a sine on their own clocks and hand them to the studio as
//! the RTMP driver does, as [`IngestEvent`]s with session-relative
//! millisecond timestamps and the program time of their arrival. Arrival is
//! TCP-like: every 100 ms (±30 ms) a burst delivers everything produced
//! since the previous one. The program pulls and mixes 20 ms at a time, as
//! `onair live` does, and the mix is measured per window.

#[path = "common/analysis.rs"]
mod analysis;
#[path = "common/wav.rs"]
mod wav;

use std::f64::consts::{PI, TAU};
use std::time::Instant;

use onair::audio::{
    Decoded, FeedConfig, FileSource, LiveFeedConfig, Mixer, MixerConfig, SourceOptions,
};
use onair::hls::TimelineConfig;
use onair::ingest::{Close, IngestEvent, SessionId};
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{FileHost, Pipeline, PipelineConfig};
use onair::studio::{Command, CommandError, HostInfo, HostKind, KICK_HOLD, Studio};
use onair::time::ProgramTime;
use wav::{WavFormat, sine, write_wav};

/// Program rate, frames per second.
const RATE: u64 = 48_000;
/// Frames per publisher block: one AAC frame.
const BLOCK: u64 = 1024;
/// Program frames pulled and mixed per step (20 ms).
const TICK: u64 = RATE / 50;
/// Mean interval between TCP bursts (100 ms).
const BURST: u64 = RATE / 10;
/// Largest deviation of a burst from its slot (30 ms).
const BURST_JITTER: u64 = RATE * 3 / 100;
/// Measurement window for tone levels (100 ms).
const WINDOW: usize = (RATE / 10) as usize;
/// The live feeds' default target depth, in ms.
const TARGET_MS: f64 = 200.0;
/// The feeds' and the mixer's fade length (5 ms), in frames.
const RAMP: f64 = 240.0;
/// Below this a tone counts as absent from the mix, in dBFS.
const SILENT_DBFS: f64 = -100.0;

/// Program frame of `seconds`.
fn at(seconds: f64) -> u64 {
    (seconds * RATE as f64).round() as u64
}

/// Program frame as seconds, for messages.
fn secs(frame: u64) -> f64 {
    frame as f64 / RATE as f64
}

// ---------------------------------------------------------------------------
// Signals and measurements.
// ---------------------------------------------------------------------------

/// A sine a publisher sends: a whole number of Hz on its own clock, at a
/// peak level in dBFS.
#[derive(Debug, Clone, Copy)]
struct Tone {
    freq: u32,
    dbfs: f64,
}

impl Tone {
    fn amplitude(self) -> f64 {
        analysis::amplitude_of_dbfs(self.dbfs)
    }

    /// RMS level, dBFS: 3.01 dB below the peak.
    fn rms_dbfs(self) -> f64 {
        self.dbfs - analysis::dbfs(std::f64::consts::SQRT_2)
    }

    /// Largest sample-to-sample step of the tone at the program rate: its
    /// steepest slope, `a·ω`.
    fn max_step(self) -> f64 {
        self.amplitude() * TAU * f64::from(self.freq) / RATE as f64
    }
}

/// Host A's tone.
const TONE_A: Tone = Tone {
    freq: 440,
    dbfs: -12.0,
};
/// Host B's tone.
const TONE_B: Tone = Tone {
    freq: 1000,
    dbfs: -20.0,
};

/// Level of the `freq` component in each whole [`WINDOW`] of `x` (one
/// channel at the program rate), dBFS, with the window's start in frames
/// from the start of `x`. A tone a few hundred ppm off `freq` reads the same
/// over a 100 ms window (0.01 bin off), and the Hann window puts the other
/// host's tone, over 50 bins away, more than 100 dB down.
fn window_levels(x: &[f32], freq: u32) -> Vec<(u64, f64)> {
    analysis::tone_levels(x, f64::from(freq), RATE as f64, WINDOW)
        .into_iter()
        .map(|(start, level)| (start as u64, level))
        .collect()
}

/// The frequency offset of a tone near `freq` Hz in `x`, in ppm, from its
/// phase advance across consecutive [`WINDOW`]s. At ±300 ppm the phase
/// moves well under π per window, so the reading is unambiguous.
fn frequency_offset_ppm(x: &[f32], freq: u32) -> f64 {
    analysis::frequency_offset_ppm(x, f64::from(freq), RATE as f64, WINDOW)
}

/// The largest sample-to-sample step of `x` (one channel) and the index of
/// the sample it steps to.
fn max_step(x: &[f32]) -> (f64, usize) {
    x.windows(2)
        .enumerate()
        .map(|(i, w)| (f64::from((w[1] - w[0]).abs()), i + 1))
        .fold((0.0, 0), |a, b| if b.0 > a.0 { b } else { a })
}

/// The largest step a click-free mix of `tones` can take where the `faded`
/// ones start or stop: each tone's steepest slope plus each fade's, whose
/// raised-cosine gain `½ - ½·cos(π·i/(R+1))` moves by at most `π/(2(R+1))`
/// per frame. A 2 % margin covers the resampler (its ratio is 1 ± 0.1 %). A
/// hard cut of host A's tone steps by up to its amplitude, eight times this.
fn click_free_step(tones: &[Tone], faded: &[Tone]) -> f64 {
    let slopes: f64 = tones.iter().map(|t| t.max_step()).sum();
    let fades: f64 = faded
        .iter()
        .map(|t| t.amplitude() * PI / (2.0 * (RAMP + 1.0)))
        .sum();
    (slopes + fades) * 1.02
}

/// Frames `first..first + frames` of `tone` sampled at `rate`, the same on
/// each of `channels` (interleaved). The phase is exact however long the
/// run; within the block a rotation steps it.
fn sine_samples(tone: Tone, rate: u32, channels: usize, first: u64, frames: u64) -> Vec<f32> {
    let rate = u64::from(rate);
    let turns = (u64::from(tone.freq) * first % rate) as f64 / rate as f64;
    let (mut s, mut c) = (TAU * turns).sin_cos();
    let (ds, dc) = (TAU * f64::from(tone.freq) / rate as f64).sin_cos();
    let a = tone.amplitude();
    let mut samples = Vec::with_capacity(frames as usize * channels);
    for _ in 0..frames {
        samples.extend(std::iter::repeat_n((a * s) as f32, channels));
        (s, c) = (s * dc + c * ds, c * dc - s * ds);
    }
    samples
}

/// A deterministic generator (SplitMix64), so every run sees the same
/// bursts.
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

// ---------------------------------------------------------------------------
// Publishers and the studio.
// ---------------------------------------------------------------------------

/// One ingest session of a publisher sending a tone on a clock `drift_ppm`
/// off the program's: it captures from program time `start`, stamps blocks
/// with milliseconds from its own start (a reconnecting RTMP publisher
/// starts again at 0) and sends nothing it captures after `stop`.
struct Publisher {
    session: SessionId,
    rate: u32,
    channels: usize,
    drift_ppm: f64,
    tone: Tone,
    start: u64,
    stop: u64,
    /// Blocks sent so far.
    sent: u64,
    /// Bursts so far, and when the next one goes.
    bursts: u64,
    next_burst: u64,
    rng: Rng,
}

impl Publisher {
    fn new(session: u64, rate: u32, channels: usize, drift_ppm: f64, tone: Tone) -> Self {
        Self {
            session: SessionId(session),
            rate,
            channels,
            drift_ppm,
            tone,
            start: 0,
            stop: u64::MAX,
            sent: 0,
            bursts: 0,
            next_burst: 0,
            rng: Rng(session),
        }
    }

    /// Captures from program time `start` to `stop`.
    fn between(mut self, start: u64, stop: u64) -> Self {
        self.start = start;
        self.stop = stop;
        self.schedule_burst();
        self
    }

    fn schedule_burst(&mut self) {
        self.bursts += 1;
        let jitter = self.rng.range(0, 2 * BURST_JITTER);
        self.next_burst = self.start + self.bursts * BURST + jitter - BURST_JITTER;
    }

    /// Program time at which block `k` is complete on the publisher's clock.
    fn ready_at(&self, k: u64) -> u64 {
        let host_frames = ((k + 1) * BLOCK) as f64;
        let seconds = host_frames / (f64::from(self.rate) * (1.0 + self.drift_ppm * 1e-6));
        self.start + (seconds * RATE as f64).ceil() as u64
    }

    /// Block `k` and its timestamp in ms, as an encoder stamps it.
    fn block(&self, k: u64) -> (i64, Decoded) {
        let first = k * BLOCK;
        let samples = sine_samples(self.tone, self.rate, self.channels, first, BLOCK);
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

    /// The audio of every burst due by `now`.
    fn deliver(&mut self, now: u64) -> Vec<IngestEvent> {
        let mut events = Vec::new();
        while self.next_burst <= now {
            let burst = self.next_burst;
            while self.ready_at(self.sent) <= burst.min(self.stop) {
                let (host_ts_ms, audio) = self.block(self.sent);
                events.push(IngestEvent::Audio {
                    session: self.session,
                    host_ts_ms,
                    audio,
                    arrival: ProgramTime::from_samples(burst),
                });
                self.sent += 1;
            }
            self.schedule_burst();
        }
        events
    }

    /// Whether everything captured before `stop` has been sent.
    fn done(&self) -> bool {
        self.ready_at(self.sent) > self.stop
    }

    fn connected(&self, host: &str) -> IngestEvent {
        IngestEvent::Connected {
            host: host.into(),
            session: self.session,
            protocol: "rtmp",
            peer: format!("192.0.2.{}:1935", self.session.0),
        }
    }

    fn disconnected(&self) -> IngestEvent {
        IngestEvent::Disconnected {
            session: self.session,
            reason: "publisher closed the connection".into(),
        }
    }
}

fn feed(name: &str) -> FeedConfig {
    FeedConfig {
        name: name.into(),
        gain_db: 0.0,
        muted: false,
    }
}

/// A studio and its mixer, driven 20 ms at a time, keeping the left channel
/// of the mix.
struct Show {
    studio: Studio,
    mixer: Mixer,
    block: Vec<f32>,
    left: Vec<f32>,
    /// Largest absolute sample of either channel so far.
    peak: f32,
}

impl Show {
    fn new(live_hosts: &[&str]) -> Self {
        let mut show = Self {
            studio: Studio::new(),
            mixer: Mixer::new(MixerConfig::default()),
            block: Vec::new(),
            left: Vec::new(),
            peak: 0.0,
        };
        for name in live_hosts {
            show.studio
                .add_live(&mut show.mixer, feed(name), LiveFeedConfig::default())
                .expect("live host");
        }
        show
    }

    fn now(&self) -> u64 {
        self.mixer.clock().samples()
    }

    /// Hands the studio what `publisher` has sent by now.
    fn send(&mut self, publisher: &mut Publisher) {
        for event in publisher.deliver(self.now()) {
            self.studio.ingest(event);
        }
    }

    /// Pulls the live hosts and mixes the next 20 ms; `keep` says whether
    /// to record the left channel.
    fn tick(&mut self, keep: bool) {
        let start = self.now();
        self.studio
            .pull(ProgramTime::from_samples(start + TICK), &mut self.mixer);
        self.mixer.mix(TICK as usize, &mut self.block);
        assert_eq!(self.block.len(), 2 * TICK as usize);
        assert_eq!(
            self.mixer.clock(),
            ProgramTime::from_samples(start + TICK),
            "the program clock steps"
        );
        self.peak = self.block.iter().fold(self.peak, |p, v| p.max(v.abs()));
        if keep {
            self.left.extend(self.block.iter().step_by(2));
        }
    }

    fn host(&self, name: &str) -> HostInfo {
        self.studio
            .hosts(&self.mixer)
            .into_iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// The kept left channel from `from` to `to` (program frames; recording
    /// started at 0).
    fn mix_between(&self, from: u64, to: u64) -> &[f32] {
        &self.left[from as usize..to as usize]
    }
}

// ---------------------------------------------------------------------------
// 1. Drift over an hour.
// ---------------------------------------------------------------------------

/// What one host's feed did over the drift run.
struct DepthTrack {
    name: &'static str,
    /// RMS of the host's tone on both channels, dBFS, as the mixer meters it.
    expected_rms_dbfs: f64,
    /// The depth low-pass filtered as the feed's controller does (4 s), ms.
    smoothed_ms: Option<f64>,
    /// Smoothed and instantaneous depth bounds after convergence, ms.
    smoothed_bounds: (f64, f64),
    depth_bounds: (u64, u64),
    /// The deepest buffer found before a pull: the feed trims (an overrun)
    /// only above its maximum depth.
    deepest_before_pull_ms: u64,
    /// Last time the smoothed depth was more than 10 ms off the target.
    settled_at: u64,
    /// Times the host went on air.
    on_air_runs: u32,
    was_on_air: bool,
    /// Largest deviation of a 20 ms block's level from the tone's, dB.
    level_error_db: f64,
}

impl DepthTrack {
    fn new(name: &'static str, tone: Tone) -> Self {
        Self {
            name,
            expected_rms_dbfs: tone.rms_dbfs(),
            smoothed_ms: None,
            smoothed_bounds: (f64::MAX, 0.0),
            depth_bounds: (u64::MAX, 0),
            deepest_before_pull_ms: 0,
            settled_at: 0,
            on_air_runs: 0,
            was_on_air: false,
            level_error_db: 0.0,
        }
    }

    /// Takes the host's state before and after the block mixed at `now`.
    fn observe(&mut self, now: u64, converge_by: u64, before: &HostInfo, after: &HostInfo) {
        self.deepest_before_pull_ms = self
            .deepest_before_pull_ms
            .max(before.depth_ms.expect("live host"));
        let on_air = after.state == "on-air";
        if on_air && !self.was_on_air {
            self.on_air_runs += 1;
        }
        // A gap filled with silence, a re-anchored timeline (its audio fades
        // in), an underrun (fade-out) or an overrun (crossfade) each move a
        // 20 ms block's level by at least a third of a dB; the first block
        // on air holds the fade-in.
        if on_air && self.was_on_air {
            let err = (f64::from(after.rms_dbfs) - self.expected_rms_dbfs).abs();
            self.level_error_db = self.level_error_db.max(err);
        }
        self.was_on_air = on_air;
        if !on_air {
            return;
        }
        // The controller measures the depth at the start of each 10 ms
        // resampler chunk, so twice per pull: before it, and 10 ms into it.
        let measured = before.depth_ms.expect("live host") as f64 - 5.0;
        let alpha = TICK as f64 / (4.0 * RATE as f64);
        let smoothed = match self.smoothed_ms {
            Some(s) => s + (measured - s) * alpha,
            None => measured,
        };
        self.smoothed_ms = Some(smoothed);
        if (smoothed - TARGET_MS).abs() > 10.0 {
            self.settled_at = now;
        }
        if now >= converge_by {
            let (lo, hi) = self.smoothed_bounds;
            self.smoothed_bounds = (lo.min(smoothed), hi.max(smoothed));
            let depth = after.depth_ms.expect("live host");
            let (lo, hi) = self.depth_bounds;
            self.depth_bounds = (lo.min(depth), hi.max(depth));
        }
    }
}

#[test]
fn two_hosts_drifting_apart_for_an_hour_stay_in_time_and_in_tune() {
    let started = Instant::now();
    let end = at(3600.0);
    let converge_by = at(600.0);
    let tail_from = end - at(60.0);
    let mut show = Show::new(&["a", "b"]);
    // A: 44.1 kHz mono, clock 300 ppm fast. B: 48 kHz stereo, 300 ppm slow,
    // joining 1.3 s later.
    let mut a = Publisher::new(1, 44_100, 1, 300.0, TONE_A).between(0, u64::MAX);
    let mut b = Publisher::new(2, 48_000, 2, -300.0, TONE_B).between(at(1.3), u64::MAX);
    show.studio.ingest(a.connected("a"));
    let mut tracks = [DepthTrack::new("a", TONE_A), DepthTrack::new("b", TONE_B)];
    while show.now() < end {
        let now = show.now();
        if now == b.start {
            show.studio.ingest(b.connected("b"));
        }
        show.send(&mut a);
        show.send(&mut b);
        let before = show.studio.hosts(&show.mixer);
        show.tick(now >= tail_from);
        let after = show.studio.hosts(&show.mixer);
        for (track, (before, after)) in tracks.iter_mut().zip(before.iter().zip(&after)) {
            track.observe(now, converge_by, before, after);
        }
    }
    assert_eq!(
        show.mixer.clock(),
        ProgramTime::from_samples(3600 * RATE),
        "program clock"
    );
    assert!(show.studio.take_closes().is_empty());
    let tail = &show.left;
    let measured: Vec<(f64, f64)> = [TONE_A, TONE_B]
        .iter()
        .map(|t| {
            let levels = window_levels(tail, t.freq);
            let worst = levels
                .iter()
                .map(|(_, l)| l - t.dbfs)
                .fold(0.0, |w: f64, e| if e.abs() > w.abs() { e } else { w });
            (worst, frequency_offset_ppm(tail, t.freq))
        })
        .collect();
    let infos = show.studio.hosts(&show.mixer);
    eprintln!(
        "drift run of {} s, {:.1} s to run",
        end / RATE,
        started.elapsed().as_secs_f64()
    );
    for (track, (level_error, ppm)) in tracks.iter().zip(&measured) {
        eprintln!(
            "  {}: smoothed depth {:.1}..{:.1} ms after 10 min (within 10 ms of the target \
             from {:.0} s on), depth after a pull {:?} ms, deepest {} ms before one, 20 ms \
             blocks within {:.3} dB; last minute: level {level_error:+.3} dB, tone shifted \
             {ppm:+.1} ppm",
            track.name,
            track.smoothed_bounds.0,
            track.smoothed_bounds.1,
            secs(track.settled_at),
            track.depth_bounds,
            track.deepest_before_pull_ms,
            track.level_error_db,
        );
    }
    for (track, info) in tracks.iter().zip(&infos) {
        let name = track.name;
        assert_eq!(info.state, "on-air", "{name} on air at the end");
        assert_eq!(track.on_air_runs, 1, "{name} went on air once, never left");
        assert_eq!(info.underruns, Some(0), "{name} underruns");
        let (lo, hi) = track.smoothed_bounds;
        assert!(
            lo >= TARGET_MS - 40.0 && hi <= TARGET_MS + 40.0,
            "{name}: smoothed depth {lo:.1}..{hi:.1} ms after 10 min"
        );
        assert!(
            track.deepest_before_pull_ms < u64::from(LiveFeedConfig::default().max_depth_ms),
            "{name}: {} ms buffered, an overrun trims it",
            track.deepest_before_pull_ms
        );
        assert!(
            track.level_error_db < 0.25,
            "{name}: a 20 ms block's level strayed {:.2} dB from the tone's",
            track.level_error_db
        );
    }
    for ((level_error, ppm), (tone, drift)) in
        measured.iter().zip([(TONE_A, 300.0), (TONE_B, -300.0)])
    {
        assert!(
            level_error.abs() < 0.2,
            "{} Hz off by {level_error:.2} dB in a window of the last minute",
            tone.freq
        );
        // The feed plays the host's samples at the host's pace: its tone is
        // shifted by the host's drift. The controller wanders a few ppm
        // around it as it holds the depth against the bursts.
        assert!(
            (ppm - drift).abs() < 15.0,
            "{} Hz tone shifted by {ppm:.1} ppm, the host drifts {drift} ppm",
            tone.freq
        );
    }
}

// ---------------------------------------------------------------------------
// 2-3. Sessions: a reconnect, a replaced session.
// ---------------------------------------------------------------------------

/// The states a host went through, each with the program time it was first
/// seen after a mix.
#[derive(Debug, Default)]
struct StateLog(Vec<(u64, &'static str)>);

impl StateLog {
    fn observe(&mut self, now: u64, state: &'static str) {
        if self.0.last().is_none_or(|(_, s)| *s != state) {
            self.0.push((now, state));
        }
    }

    fn states(&self) -> Vec<&'static str> {
        self.0.iter().map(|(_, s)| *s).collect()
    }

    /// When the `n`th entry into `state` happened (from 0).
    fn entered(&self, state: &str, n: usize) -> u64 {
        self.0
            .iter()
            .filter(|(_, s)| *s == state)
            .nth(n)
            .unwrap_or_else(|| panic!("never {state} (#{n}): {:?}", self.0))
            .0
    }
}

/// Asserts the `freq` tone's level in every window of the kept mix that
/// lies within `from..to` is `dbfs` ± `tolerance` dB (or absent, for `None`).
fn assert_tone_level(
    show: &Show,
    freq: u32,
    from: u64,
    to: u64,
    dbfs: Option<f64>,
    tolerance: f64,
) -> usize {
    let levels = window_levels(&show.left, freq);
    let inside: Vec<(u64, f64)> = levels
        .into_iter()
        .filter(|(start, _)| *start >= from && start + WINDOW as u64 <= to)
        .collect();
    assert!(!inside.is_empty(), "no window in {from}..{to}");
    for (start, level) in &inside {
        match dbfs {
            Some(want) => assert!(
                (level - want).abs() <= tolerance,
                "{freq} Hz at {:.1} s: {level:.2} dBFS, want {want} ± {tolerance}",
                secs(*start)
            ),
            None => assert!(
                *level < SILENT_DBFS,
                "{freq} Hz at {:.1} s: {level:.1} dBFS, want silence",
                secs(*start)
            ),
        }
    }
    inside.len()
}

#[test]
fn a_host_that_drops_and_reconnects_fades_out_and_back_without_a_click() {
    let end = at(16.0);
    let mut show = Show::new(&["a", "b"]);
    let mut b = Publisher::new(10, 48_000, 2, -300.0, TONE_B).between(0, u64::MAX);
    // A's first session drops mid-tone at 6 s; its publisher reconnects 2 s
    // later as a new session whose timestamps start again at 0.
    let mut first = Publisher::new(1, 44_100, 1, 300.0, TONE_A).between(at(0.5), at(6.0));
    let mut second = Publisher::new(2, 44_100, 1, 300.0, TONE_A).between(at(8.0), u64::MAX);
    show.studio.ingest(b.connected("b"));
    let mut dropped_at = None;
    let (mut log_a, mut log_b) = (StateLog::default(), StateLog::default());
    while show.now() < end {
        let now = show.now();
        if now == first.start {
            show.studio.ingest(first.connected("a"));
        }
        if now == second.start {
            show.studio.ingest(second.connected("a"));
        }
        show.send(&mut b);
        show.send(&mut first);
        show.send(&mut second);
        if dropped_at.is_none() && first.done() {
            show.studio.ingest(first.disconnected());
            dropped_at = Some(now);
        }
        show.tick(true);
        log_a.observe(now, show.host("a").state);
        log_b.observe(now, show.host("b").state);
    }
    let dropped_at = dropped_at.expect("the first session ended");
    assert_eq!(
        show.mixer.clock(),
        ProgramTime::from_samples(end),
        "program clock"
    );
    assert!(show.studio.take_closes().is_empty());
    // A plays out what it had buffered, goes silent, and is back once the
    // new session has filled the buffer to its target.
    assert_eq!(
        log_a.states(),
        [
            "offline",
            "connected",
            "on-air",
            "offline",
            "connected",
            "on-air"
        ],
        "{:?}",
        log_a.0
    );
    let on_air = log_a.entered("on-air", 0);
    let silent_at = log_a.entered("offline", 1);
    let back_at = log_a.entered("on-air", 1);
    let info = show.host("a");
    assert_eq!(
        (info.sessions, info.underruns, info.peer.as_deref()),
        (Some(2), Some(1), Some("192.0.2.2:1935"))
    );
    let drained = secs(silent_at - dropped_at);
    let refilled = secs(back_at - second.start);
    assert!(
        (0.1..0.4).contains(&drained),
        "buffer drained in {drained} s"
    );
    assert!((0.15..0.4).contains(&refilled), "back after {refilled} s");

    // Levels in 100 ms windows of the mix.
    assert_tone_level(
        &show,
        440,
        on_air + TICK,
        dropped_at,
        Some(TONE_A.dbfs),
        0.5,
    );
    assert_tone_level(&show, 440, silent_at + TICK, second.start, None, 0.0);
    assert_tone_level(&show, 440, back_at + TICK, end, Some(TONE_A.dbfs), 0.5);
    let b_on_air = log_b.entered("on-air", 0);
    assert_eq!(log_b.states(), ["connected", "on-air"], "B never stops");
    let b_windows = assert_tone_level(&show, 1000, b_on_air + TICK, end, Some(TONE_B.dbfs), 0.1);
    assert!(show.peak <= 1.0, "sample beyond full scale: {}", show.peak);

    // No click where A stops or comes back.
    let bound = click_free_step(&[TONE_A, TONE_B], &[TONE_A]);
    let (steady, _) = max_step(show.mix_between(at(2.0), at(5.0)));
    let (drop, _) = max_step(show.mix_between(dropped_at - at(0.1), silent_at + at(0.1)));
    let (back, _) = max_step(show.mix_between(back_at - at(0.1), back_at + at(0.2)));
    eprintln!(
        "reconnect: dropped at {:.3} s, silent at {:.3} s, back at {:.3} s; largest step \
         steady {steady:.4}, drop {drop:.4}, return {back:.4} (bound {bound:.4}); B checked in \
         {b_windows} windows; peak {:.3}",
        secs(dropped_at),
        secs(silent_at),
        secs(back_at),
        show.peak
    );
    assert!(
        drop <= bound,
        "click where A drops: step {drop:.4} > {bound:.4}"
    );
    assert!(
        back <= bound,
        "click where A returns: step {back:.4} > {bound:.4}"
    );
}

#[test]
fn a_new_session_replaces_the_current_one_whose_audio_is_then_ignored() {
    let end = at(10.0);
    let mut show = Show::new(&["a"]);
    // The old session keeps sending (440 Hz) until 6 s, though replaced at
    // 3 s by a new one sending 1 kHz.
    let mut old = Publisher::new(1, 48_000, 2, 0.0, TONE_A).between(0, at(6.0));
    let mut new = Publisher::new(2, 48_000, 2, 0.0, TONE_B).between(at(3.0), u64::MAX);
    show.studio.ingest(old.connected("a"));
    let mut old_left_at = None;
    let mut log = StateLog::default();
    while show.now() < end {
        let now = show.now();
        if now == new.start {
            show.studio.ingest(new.connected("a"));
            let closes = show.studio.take_closes();
            assert_eq!(closes.len(), 1, "{closes:?}");
            assert_eq!(closes[0].session, old.session);
            assert!(
                closes[0].reason.contains("replaced") && closes[0].reason.contains("session#2"),
                "reason {:?}",
                closes[0].reason
            );
            let info = show.host("a");
            assert_eq!(
                (info.sessions, info.peer.as_deref()),
                (Some(2), Some("192.0.2.2:1935"))
            );
        }
        show.send(&mut old);
        show.send(&mut new);
        if old_left_at.is_none() && old.done() {
            // The old session's connection ends late: it must not take the
            // new session with it.
            show.studio.ingest(old.disconnected());
            assert!(show.studio.take_closes().is_empty());
            old_left_at = Some(now);
        }
        show.tick(true);
        log.observe(now, show.host("a").state);
    }
    assert!(old_left_at.is_some_and(|t| t >= at(5.9)));
    assert_eq!(log.states(), ["connected", "on-air"], "never off air");
    let info = show.host("a");
    assert_eq!(
        (info.sessions, info.underruns, info.peer.as_deref()),
        (Some(2), Some(0), Some("192.0.2.2:1935"))
    );
    // The old session's buffered audio plays out (at most about 300 ms of
    // it); after that only the new session is heard, before and after the
    // old one disconnects.
    let heard_from = new.start + at(0.5);
    assert_tone_level(&show, 440, heard_from, end, None, 0.0);
    assert_tone_level(&show, 1000, heard_from, end, Some(TONE_B.dbfs), 0.1);
    // Where one session's audio gives way to the other's, the old fades out
    // and the new fades in.
    let (seam, i) = max_step(show.mix_between(new.start, heard_from));
    let seam_at = new.start + i as u64;
    let bound = click_free_step(&[TONE_A, TONE_B], &[TONE_A, TONE_B]);
    let k = seam_at as usize;
    eprintln!(
        "replace: largest step at the seam {seam:.4} at {:.4} s (bound {bound:.4}); mix \
         around it {:?}",
        secs(seam_at),
        &show.left[k - 4..k + 4]
    );
    assert!(
        seam <= bound,
        "click at the seam, {:.4} s: step {seam:.4} > {bound:.4}",
        secs(seam_at)
    );
}

// ---------------------------------------------------------------------------
// 4. Control commands and session closes, through the pipeline.
// ---------------------------------------------------------------------------

fn file_host(dir: &std::path::Path, name: &str, looping: bool) -> FileHost {
    let path = dir.join(format!("{name}.wav"));
    write_wav(
        &path,
        48_000,
        2,
        WavFormat::Int16,
        &sine(330.0, 48_000, 48_000, 0.25, 2),
    );
    FileHost {
        feed: feed(name),
        source: FileSource::open(&path, SourceOptions { looping })
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
    }
}

fn pipeline_config() -> PipelineConfig {
    PipelineConfig {
        opus: Default::default(),
        aac: Default::default(),
        mixer: MixerConfig::default(),
        packager: PackagerConfig {
            stream: "studio".into(),
            timeline: TimelineConfig {
                window: None,
                epoch_unix_ms: 1_767_225_600_000,
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Vod,
        },
        parallel: false,
        returns: Default::default(),
    }
}

/// Hands `publisher`'s audio to the pipeline and advances it to `until`, 20
/// ms at a time.
fn run_until(pipeline: &mut Pipeline, publisher: &mut Publisher, until: u64) {
    while pipeline.clock().samples() < until {
        for event in publisher.deliver(pipeline.clock().samples()) {
            pipeline.ingest(event);
        }
        pipeline
            .advance(pipeline.clock().plus(TICK))
            .expect("advance");
    }
}

fn info<'a>(hosts: &'a [HostInfo], name: &str) -> &'a HostInfo {
    hosts
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no host {name} in {hosts:?}"))
}

#[test]
fn commands_kick_sessions_and_refuse_what_does_not_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pipeline = Pipeline::new(
        pipeline_config(),
        vec![file_host(dir.path(), "music", false)],
    )
    .expect("pipeline");
    pipeline
        .add_hold(file_host(dir.path(), "hold", true))
        .expect("hold");
    for name in ["anna", "ben"] {
        pipeline
            .add_live_host(feed(name), LiveFeedConfig::default())
            .expect("live host");
    }
    assert!(
        pipeline
            .add_live_host(feed("music"), LiveFeedConfig::default())
            .is_err(),
        "two hosts named music"
    );
    let hosts = pipeline.command(Command::List).expect("list");
    let table: Vec<(&str, HostKind, &str, Option<u64>)> = hosts
        .iter()
        .map(|h| (h.name.as_str(), h.kind, h.state, h.sessions))
        .collect();
    assert_eq!(
        table,
        [
            ("music", HostKind::File, "playing", None),
            ("hold", HostKind::Hold, "playing", None),
            ("anna", HostKind::Live, "offline", Some(0)),
            ("ben", HostKind::Live, "offline", Some(0)),
        ]
    );

    // Sessions for hosts that cannot take them are closed with the reason.
    let stranger = Publisher::new(7, 48_000, 2, 0.0, TONE_A);
    pipeline.ingest(stranger.connected("nobody"));
    let impostor = Publisher::new(8, 48_000, 2, 0.0, TONE_A);
    pipeline.ingest(impostor.connected("music"));
    let closes = pipeline.take_closes();
    assert_eq!(
        closes,
        [
            Close {
                session: SessionId(7),
                reason: "no live host named \"nobody\"".into()
            },
            Close {
                session: SessionId(8),
                reason: "host \"music\" is not a live host".into()
            },
        ]
    );
    assert!(pipeline.take_closes().is_empty(), "closes are taken once");

    // Command errors.
    let kick = |host: &str| Command::Kick { host: host.into() };
    assert_eq!(
        pipeline.command(kick("nobody")),
        Err(CommandError::UnknownHost("nobody".into()))
    );
    assert_eq!(
        pipeline.command(Command::SetGain {
            host: "nobody".into(),
            db: -6.0
        }),
        Err(CommandError::UnknownHost("nobody".into()))
    );
    assert_eq!(
        pipeline.command(kick("music")),
        Err(CommandError::NotLive("music".into()))
    );
    assert_eq!(
        pipeline.command(kick("hold")),
        Err(CommandError::NotLive("hold".into()))
    );
    assert_eq!(
        pipeline.command(kick("anna")),
        Err(CommandError::NotConnected("anna".into()))
    );

    // Anna connects and goes on air; the hold music ducks.
    let mut anna = Publisher::new(1, 48_000, 2, 0.0, TONE_A).between(0, u64::MAX);
    pipeline.ingest(anna.connected("anna"));
    assert!(pipeline.take_closes().is_empty());
    let hosts = pipeline.command(Command::List).expect("list");
    let a = info(&hosts, "anna");
    assert_eq!(
        (a.state, a.protocol, a.peer.as_deref(), a.sessions),
        ("connected", Some("rtmp"), Some("192.0.2.1:1935"), Some(1))
    );
    run_until(&mut pipeline, &mut anna, at(1.0));
    let hosts = pipeline.command(Command::List).expect("list");
    assert_eq!(info(&hosts, "anna").state, "on-air");
    assert_eq!(info(&hosts, "hold").state, "ducked");
    assert!(
        (f64::from(info(&hosts, "anna").rms_dbfs) - TONE_A.rms_dbfs()).abs() < 0.3,
        "anna metered at {} dBFS",
        info(&hosts, "anna").rms_dbfs
    );

    // Gain and mute go to the mixer and show in the table.
    let set = pipeline
        .command(Command::SetGain {
            host: "anna".into(),
            db: -6.0,
        })
        .expect("gain");
    assert_eq!(
        (set.len(), set[0].name.as_str(), set[0].gain_db),
        (1, "anna", -6.0)
    );
    pipeline
        .command(Command::SetMuted {
            host: "music".into(),
            muted: true,
        })
        .expect("mute");
    let hosts = pipeline.command(Command::List).expect("list");
    assert!(info(&hosts, "music").muted && !info(&hosts, "anna").muted);
    assert_eq!(info(&hosts, "anna").gain_db, -6.0);

    // The kick closes the session; its audio is ignored from then on, so
    // the host plays out its buffer and goes offline.
    let kicked = pipeline.command(kick("anna")).expect("kick");
    assert_eq!((kicked[0].protocol, kicked[0].peer.as_ref()), (None, None));
    assert_eq!(
        pipeline.take_closes(),
        [Close {
            session: SessionId(1),
            reason: "kicked by the operator".into()
        }]
    );
    assert_eq!(
        pipeline.command(kick("anna")),
        Err(CommandError::NotConnected("anna".into()))
    );
    run_until(&mut pipeline, &mut anna, at(2.0));
    let hosts = pipeline.command(Command::List).expect("list");
    let a = info(&hosts, "anna");
    assert_eq!(
        (a.state, a.depth_ms, a.underruns, a.sessions),
        ("offline", Some(0), Some(1), Some(1))
    );
    assert_eq!(info(&hosts, "hold").state, "playing");

    // An unknown session leaving changes nothing.
    pipeline.ingest(IngestEvent::Disconnected {
        session: SessionId(99),
        reason: "gone".into(),
    });
    // A kicked host is kept out for KICK_HOLD: a publisher that reconnects
    // by itself is closed at once.
    let early = Publisher::new(2, 48_000, 2, 0.0, TONE_A).between(at(2.0), u64::MAX);
    pipeline.ingest(early.connected("anna"));
    let refused = pipeline.take_closes();
    assert!(
        refused.len() == 1
            && refused[0].session == SessionId(2)
            && refused[0]
                .reason
                .starts_with("kicked by the operator: may publish again in"),
        "{refused:?}"
    );
    // After the hold the host may publish again.
    let back = at(2.0) + KICK_HOLD;
    run_until(&mut pipeline, &mut anna, back);
    let mut again = Publisher::new(3, 48_000, 2, 0.0, TONE_A).between(back, u64::MAX);
    pipeline.ingest(again.connected("anna"));
    assert!(pipeline.take_closes().is_empty());
    run_until(&mut pipeline, &mut again, back + at(1.0));
    let hosts = pipeline.command(Command::List).expect("list");
    let a = info(&hosts, "anna");
    assert_eq!((a.state, a.sessions), ("on-air", Some(2)));
    assert_eq!(info(&hosts, "ben").state, "offline");
}

// ---------------------------------------------------------------------------
// 5. The hold music.
// ---------------------------------------------------------------------------

/// The gain of `reference` in `x`, by least squares. The host's 1 kHz tone
/// is orthogonal to the 300 Hz hold tone over a 20 ms block (whole periods
/// of both), so it does not disturb the reading.
fn gain_of(x: &[f32], reference: &[f32]) -> f64 {
    let (mut xy, mut yy) = (0.0, 0.0);
    for (x, y) in x.iter().zip(reference) {
        xy += f64::from(*x) * f64::from(*y);
        yy += f64::from(*y) * f64::from(*y);
    }
    xy / yy
}

#[test]
fn hold_music_ducks_under_a_live_host_and_returns_when_it_leaves() {
    const HOLD: Tone = Tone {
        freq: 300,
        dbfs: -14.0,
    };
    let end = at(12.0);
    let mut show = Show::new(&["a"]);
    let hold = show.mixer.add_feed(feed("hold"));
    show.studio.add_file("hold", HostKind::Hold, hold);
    let mut host = Publisher::new(1, 48_000, 2, 0.0, TONE_B).between(at(3.0), at(8.0));
    let mut left_at = None;
    // (block start, hold gain, hold state, host state) per 20 ms block.
    let mut blocks: Vec<(u64, f64, &str, &str)> = Vec::new();
    while show.now() < end {
        let now = show.now();
        let hold_block = sine_samples(HOLD, 48_000, 2, now, TICK);
        show.mixer
            .push(hold, ProgramTime::from_samples(now), &hold_block);
        if now == host.start {
            show.studio.ingest(host.connected("a"));
        }
        show.send(&mut host);
        if left_at.is_none() && host.done() {
            show.studio.ingest(host.disconnected());
            left_at = Some(now);
        }
        show.tick(true);
        let reference: Vec<f32> = hold_block.iter().step_by(2).copied().collect();
        let gain = gain_of(show.mix_between(now, now + TICK), &reference);
        blocks.push((now, gain, show.host("hold").state, show.host("a").state));
    }
    let left_at = left_at.expect("the host left");
    let on_air_at = blocks
        .iter()
        .find(|b| b.3 == "on-air")
        .expect("host on air")
        .0;
    let off_air_at = blocks
        .iter()
        .find(|b| b.0 > on_air_at && b.3 != "on-air")
        .expect("host off air")
        .0;
    eprintln!(
        "hold: host connected {:.3} s, on air {:.3} s, left {:.3} s, off air {:.3} s",
        secs(host.start),
        secs(on_air_at),
        secs(left_at),
        secs(off_air_at)
    );
    let on_air_delay = secs(on_air_at - host.start);
    assert!(
        (0.2..0.4).contains(&on_air_delay),
        "on air after {on_air_delay} s"
    );
    let drained = secs(off_air_at - left_at);
    assert!(
        (0.1..0.4).contains(&drained),
        "host's buffer ran dry after {drained} s"
    );
    // Ducking ramps the gain linearly (the mixer's ramps): block k of a ramp
    // of n blocks has a mean gain of (k + ½)/n into it.
    let out_blocks = (at(0.5) / TICK) as f64;
    let in_blocks = (at(2.0) / TICK) as f64;
    for &(t, gain, hold_state, host_state) in &blocks {
        let expected = if t < on_air_at {
            assert_eq!(hold_state, "playing", "at {:.2} s", secs(t));
            let want = if t < host.start {
                "offline"
            } else {
                "connected"
            };
            assert_eq!(host_state, want, "at {:.2} s", secs(t));
            1.0
        } else if t < off_air_at {
            assert_eq!(
                (hold_state, host_state),
                ("ducked", "on-air"),
                "at {:.2} s",
                secs(t)
            );
            let k = ((t - on_air_at) / TICK) as f64;
            (1.0 - (k + 0.5) / out_blocks).max(0.0)
        } else {
            assert_eq!(
                (hold_state, host_state),
                ("playing", "offline"),
                "at {:.2} s",
                secs(t)
            );
            let k = ((t - off_air_at) / TICK) as f64;
            ((k + 0.5) / in_blocks).min(1.0)
        };
        assert!(
            (gain - expected).abs() < 0.005,
            "hold gain {gain:.4} at {:.2} s, want {expected:.4}",
            secs(t)
        );
    }
}
