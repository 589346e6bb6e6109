//! A live host feed: timestamped decoded audio in, program-clock audio out.
//!
//! [`LiveFeed`] is a pure state machine between one host's decoded packets
//! and the [`Mixer`]. It never reads a clock: the caller says when each
//! packet arrived (in program time) and pulls program frames up to a time of
//! its choosing, normally every 10-20 ms.
//!
//! # Data path
//! `push` → [`Converter`] (host rate and channels to 48 kHz stereo, exact
//! nominal ratio) → jitter buffer → adaptive resampler (ratio `1 ± ε`) →
//! `pull`.
//!
//! # Invariants
//! - `pull` always yields exactly the frames asked for, contiguous in
//!   program time: the program clock never stops or jumps, whatever the
//!   host does. With no host data the feed yields silence.
//! - Clock drift between the host and the program is absorbed by steering
//!   the resampling ratio, never by dropping or repeating samples. The
//!   buffer depth is low-pass filtered (time constant
//!   [`DEPTH_SMOOTHING_S`]) and a PI controller keeps it at
//!   [`LiveFeedConfig::target_depth_ms`]; the correction is bounded by
//!   [`LiveFeedConfig::max_correction_ppm`] and changes by ramps inside each
//!   10 ms resampler chunk, so pitch moves imperceptibly and nothing clicks.
//! - The resampler is rubato's windowed-sinc [`SincFixedOut`] (64 taps,
//!   Blackman-Harris², linear interpolation between 256 sub-phases): it
//!   emits a fixed 10 ms chunk per step and asks for however many input
//!   frames the current ratio needs.
//! - Every start and stop of the host's audio is ramped over
//!   [`LiveFeedConfig::ramp_frames`]: playback starts (first packet, resume
//!   after a stall) fade in, an underrun fades out on the last buffered
//!   frames, and an overrun cut is a crossfade.
//!
//! # Host timeline
//! The sample count is the host's clock: consecutive packets are appended
//! back to back and the host timestamps (milliseconds, already unwrapped)
//! only detect breaks. The first packet anchors the host timeline; each
//! packet's timestamp is compared with the one its predecessors predict.
//! A forward jump beyond [`LiveFeedConfig::gap_tolerance_ms`] (the host
//! skipped audio) is filled with silence so later audio keeps its place; a
//! jump back, or forward by more than the maximum depth, re-anchors the
//! timeline and the new audio follows the old without a gap. Both are
//! counted.
//!
//! # Underrun and overrun
//! - Underrun: the buffer runs dry (host stalled or gone). The feed fades
//!   out, then contributes silence. When audio comes again the timeline is
//!   re-anchored and playback restarts once the buffer is back at its target
//!   depth. The drift estimate is kept across the stall.
//! - Overrun: a burst leaves more than [`LiveFeedConfig::max_depth_ms`]
//!   buffered (e.g. a TCP backlog after a network stall). The oldest audio
//!   is dropped down to the target depth, crossfaded, counted and logged.

use rubato::{
    Resampler, SincFixedOut, SincInterpolationParameters, SincInterpolationType, WindowFunction,
    calculate_cutoff,
};

use crate::audio::decode::Decoded;
use crate::audio::mix::{FeedId, Mixer};
use crate::audio::resample::{ConvertError, Converter};
use crate::time::{CHANNELS, ProgramTime, SAMPLE_RATE, millis, rescale};

/// Output frames per resampler step (10 ms): the controller's update period.
const CHUNK: usize = SAMPLE_RATE as usize / 100;
/// Sinc filter length of the adaptive resampler, in input frames.
const SINC_LEN: usize = 64;
/// Sub-phases of the tabulated sinc.
const OVERSAMPLING: usize = 256;
/// Time constant of the depth low-pass filter, in seconds: long enough to
/// average TCP bursts of a few hundred ms, short against the control loop.
pub const DEPTH_SMOOTHING_S: f64 = 4.0;
/// Natural angular frequency of the control loop, in rad/s (time constant
/// about one minute): drift is slow, bursts must not move the pitch.
const LOOP_OMEGA: f64 = 1.0 / 60.0;
/// Damping of the control loop (0.7: fast settling, about 5 % overshoot).
const LOOP_DAMPING: f64 = 0.7;

/// Settings of a [`LiveFeed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveFeedConfig {
    /// The buffer depth the feed steers to, in ms (default 200: RTMP arrives
    /// in TCP bursts). Playback starts once this much is buffered.
    pub target_depth_ms: u32,
    /// Above this depth the oldest audio is dropped down to the target, in ms
    /// (default 1000).
    pub max_depth_ms: u32,
    /// The largest resampling correction, in parts per million (default
    /// 1000; crystal clocks are within ±100 ppm, sound cards a few hundred).
    pub max_correction_ppm: u32,
    /// How far a packet timestamp may stray from the one its predecessors
    /// predict before it counts as a break, in ms (default 100).
    pub gap_tolerance_ms: u32,
    /// Length of fade-ins, fade-outs and crossfades, in program frames
    /// (default 240 = 5 ms).
    pub ramp_frames: u32,
}

impl Default for LiveFeedConfig {
    fn default() -> Self {
        Self {
            target_depth_ms: 200,
            max_depth_ms: 1000,
            max_correction_ppm: 1000,
            gap_tolerance_ms: 100,
            ramp_frames: SAMPLE_RATE / 200,
        }
    }
}

impl LiveFeedConfig {
    /// A feed whose first program frame is `now`.
    pub fn build(self, now: ProgramTime) -> Result<LiveFeed, LiveError> {
        let target = ms_to_frames(self.target_depth_ms);
        let max = ms_to_frames(self.max_depth_ms);
        if self.target_depth_ms < 20 || (self.ramp_frames as usize) > target / 2 {
            return Err(LiveError::Config(
                "target depth must be at least 20 ms and twice the ramp".into(),
            ));
        }
        if max < target + CHUNK * 2 {
            return Err(LiveError::Config(
                "max depth must exceed the target by at least 20 ms".into(),
            ));
        }
        if self.max_correction_ppm == 0 || self.max_correction_ppm > 10_000 {
            return Err(LiveError::Config(
                "max correction must be 1..=10000 ppm".into(),
            ));
        }
        LiveFeed::new(self, now)
    }
}

/// Gain of frame `i` of a fade-in over `len` frames: a raised cosine,
/// which, unlike a linear ramp, has no corner where it starts or ends (the
/// corner of a 5 ms linear ramp is audible on a loud tone as a soft tick).
/// Frame `len - 1 - i` of a fade-out has the same gain.
fn fade_in_gain(i: usize, len: usize) -> f32 {
    let x = (i + 1) as f64 / (len + 1) as f64;
    (0.5 - 0.5 * (std::f64::consts::PI * x).cos()) as f32
}

fn ms_to_frames(ms: u32) -> usize {
    rescale(u64::from(ms), 1000, SAMPLE_RATE) as usize
}

/// Why a [`LiveFeed`] cannot be built or rejected a packet.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The configuration is inconsistent: fix it.
    #[error("live feed configuration: {0}")]
    Config(String),
    /// The packet's PCM cannot be converted (zero rate or channels, ragged
    /// samples): drop the packet.
    #[error("live feed packet at host time {host_ts_ms} ms: {source}")]
    Convert {
        /// The packet's host timestamp.
        host_ts_ms: i64,
        /// The converter's error.
        source: ConvertError,
    },
    /// The resampler could not be built (an internal sizing error).
    #[error("live feed resampler: {0}")]
    Resampler(String),
}

/// What a feed is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedState {
    /// No host audio (never came, or ran dry): silence.
    Waiting,
    /// Audio is arriving; silence until the buffer reaches its target.
    Buffering,
    /// Host audio is playing.
    Playing,
}

/// Where a host timeline was anchored to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Host timestamp (ms) of the first buffered packet.
    pub host_ts_ms: i64,
    /// Program time at which that packet arrived.
    pub arrival: ProgramTime,
}

/// A snapshot of a feed's state, for logs and the control API.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveStats {
    /// What the feed is doing.
    pub state: FeedState,
    /// Program frames buffered now (jitter buffer plus rendered, unpulled
    /// output).
    pub depth_frames: u64,
    /// The low-pass filtered depth the controller steers, in frames.
    pub smoothed_depth_frames: u64,
    /// The resampling correction: positive when the host runs fast and
    /// audio is consumed faster than nominal, in ppm.
    pub correction_ppm: f64,
    /// Times the buffer ran dry while playing.
    pub underruns: u64,
    /// Times the buffer overflowed and old audio was dropped.
    pub overruns: u64,
    /// Program frames dropped by overruns and underrun tails.
    pub dropped_frames: u64,
    /// Timestamp gaps filled with silence.
    pub gaps: u64,
    /// Timestamp breaks that re-anchored the host timeline.
    pub discontinuities: u64,
    /// The current host timeline anchor.
    pub anchor: Option<Anchor>,
    /// Program time of the last packet's arrival.
    pub last_arrival: Option<ProgramTime>,
}

impl LiveStats {
    /// [`depth_frames`](Self::depth_frames) in ms.
    pub fn depth_ms(&self) -> u64 {
        millis(self.depth_frames)
    }

    /// [`smoothed_depth_frames`](Self::smoothed_depth_frames) in ms.
    pub fn smoothed_depth_ms(&self) -> u64 {
        millis(self.smoothed_depth_frames)
    }
}

/// Where the host timeline stands, to tell continuity from breaks.
#[derive(Debug, Clone, Copy)]
struct HostClock {
    anchor_ts_ms: i64,
    /// Host frames pushed since the anchor.
    frames: u64,
    rate: u32,
}

impl HostClock {
    /// The timestamp the next packet should carry.
    fn expected_ms(&self) -> i64 {
        let elapsed = rescale(self.frames, self.rate, 1000);
        self.anchor_ts_ms
            .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
    }
}

/// The PI controller that turns buffer depth into a resampling correction.
#[derive(Debug, Clone, Copy)]
struct DriftLoop {
    /// Low-pass filtered depth, in frames.
    smoothed: f64,
    /// Integral term: the estimate of the host's drift (fraction).
    integral: f64,
    /// The correction applied (fraction), within ±`max`.
    correction: f64,
    max: f64,
}

impl DriftLoop {
    /// Updates from a depth measured at the start of a chunk of `CHUNK`
    /// frames; returns the correction for that chunk.
    fn update(&mut self, depth: usize, target: usize) -> f64 {
        let dt = CHUNK as f64 / f64::from(SAMPLE_RATE);
        self.smoothed += (depth as f64 - self.smoothed) * (dt / DEPTH_SMOOTHING_S);
        // Depth error in seconds: d(error)/dt = drift - correction.
        let err = (self.smoothed - target as f64) / f64::from(SAMPLE_RATE);
        let kp = 2.0 * LOOP_DAMPING * LOOP_OMEGA;
        let ki = LOOP_OMEGA * LOOP_OMEGA;
        let integral = self.integral + ki * err * dt;
        // Anti-windup: stop integrating while the output is saturated.
        if (kp * err + integral).abs() <= self.max {
            self.integral = integral;
        }
        self.correction = (kp * err + self.integral).clamp(-self.max, self.max);
        self.correction
    }
}

/// One host's live feed (see the module docs).
pub struct LiveFeed {
    cfg: LiveFeedConfig,
    target: usize,
    max_depth: usize,
    ramp: usize,
    state: FeedState,
    /// Program time of the next frame `pull` yields.
    clock: ProgramTime,
    converter: Option<Converter>,
    host: Option<HostClock>,
    /// Host frames of the next packets still to fade in (after a gap).
    host_fade_in: usize,
    /// Jitter buffer: interleaved 48 kHz stereo from `head` on.
    queue: Vec<f32>,
    head: usize,
    resampler: SincFixedOut<f32>,
    input: [Vec<f32>; CHANNELS],
    output: [Vec<f32>; CHANNELS],
    /// Rendered output (interleaved) not yet pulled, from `ready_pos` on.
    ready: Vec<f32>,
    ready_pos: usize,
    drift: DriftLoop,
    stats: LiveStats,
    /// Scratch for converted and faded packets.
    scratch: Vec<f32>,
}

impl LiveFeed {
    fn new(cfg: LiveFeedConfig, now: ProgramTime) -> Result<Self, LiveError> {
        let window = WindowFunction::BlackmanHarris2;
        let params = SincInterpolationParameters {
            sinc_len: SINC_LEN,
            f_cutoff: calculate_cutoff(SINC_LEN, window),
            oversampling_factor: OVERSAMPLING,
            interpolation: SincInterpolationType::Linear,
            window,
        };
        let max_rel = 1.0 + 2.0 * f64::from(cfg.max_correction_ppm) * 1e-6;
        let resampler = SincFixedOut::new(1.0, max_rel, params, CHUNK, CHANNELS)
            .map_err(|e| LiveError::Resampler(e.to_string()))?;
        let max = f64::from(cfg.max_correction_ppm) * 1e-6;
        Ok(Self {
            target: ms_to_frames(cfg.target_depth_ms),
            max_depth: ms_to_frames(cfg.max_depth_ms),
            ramp: cfg.ramp_frames as usize,
            cfg,
            state: FeedState::Waiting,
            clock: now,
            converter: None,
            host: None,
            host_fade_in: 0,
            queue: Vec::new(),
            head: 0,
            resampler,
            input: [Vec::new(), Vec::new()],
            output: [vec![0.0; CHUNK], vec![0.0; CHUNK]],
            ready: Vec::with_capacity(4 * CHUNK * CHANNELS),
            ready_pos: 0,
            drift: DriftLoop {
                smoothed: 0.0,
                integral: 0.0,
                correction: 0.0,
                max,
            },
            stats: LiveStats {
                state: FeedState::Waiting,
                depth_frames: 0,
                smoothed_depth_frames: 0,
                correction_ppm: 0.0,
                underruns: 0,
                overruns: 0,
                dropped_frames: 0,
                gaps: 0,
                discontinuities: 0,
                anchor: None,
                last_arrival: None,
            },
            scratch: Vec::new(),
        })
    }

    /// The configuration the feed was built with.
    pub fn config(&self) -> &LiveFeedConfig {
        &self.cfg
    }

    /// Program time of the next frame [`pull`](Self::pull) yields.
    pub fn clock(&self) -> ProgramTime {
        self.clock
    }

    /// A snapshot of the feed's state.
    pub fn stats(&self) -> LiveStats {
        LiveStats {
            state: self.state,
            depth_frames: self.depth() as u64,
            smoothed_depth_frames: self.drift.smoothed.max(0.0) as u64,
            correction_ppm: self.drift.correction * 1e6,
            ..self.stats
        }
    }

    /// Frames in the jitter buffer.
    fn queued(&self) -> usize {
        (self.queue.len() - self.head) / CHANNELS
    }

    /// Frames buffered ahead of the clock: queued input plus unpulled output.
    fn depth(&self) -> usize {
        self.queued() + (self.ready.len() - self.ready_pos) / CHANNELS
    }

    /// Takes one decoded packet with host timestamp `host_ts_ms` (already
    /// unwrapped) that arrived at program time `arrival`.
    pub fn push(
        &mut self,
        host_ts_ms: i64,
        audio: &Decoded,
        arrival: ProgramTime,
    ) -> Result<(), LiveError> {
        let convert_err = |source| LiveError::Convert { host_ts_ms, source };
        let same_format = self
            .converter
            .as_ref()
            .is_some_and(|c| c.in_rate() == audio.rate && c.in_channels() == audio.channels);
        if !same_format {
            let mut fresh =
                Converter::with_channels(audio.rate, audio.channels).map_err(convert_err)?;
            // The old format's last frames still belong to the stream; they
            // end with a fade-out like any break.
            self.end_run();
            fresh.reset();
            self.converter = Some(fresh);
            self.host = None;
        }
        if !audio.samples.len().is_multiple_of(audio.channels.max(1)) {
            return Err(convert_err(ConvertError::Ragged {
                samples: audio.samples.len(),
                channels: audio.channels,
            }));
        }
        self.stats.last_arrival = Some(arrival);
        if self.state == FeedState::Waiting {
            self.state = FeedState::Buffering;
            self.host = None;
        }
        self.follow_timeline(host_ts_ms, audio, arrival)?;
        let frames = audio.frames();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let result = if self.host_fade_in > 0 {
            // Fade in after a gap of silence, in the host's own samples.
            let mut faded = audio.samples.clone();
            let n = self.host_fade_in;
            let ramp_len = self.host_fade_in_len();
            for (i, frame) in faded.chunks_exact_mut(audio.channels).take(n).enumerate() {
                let g = fade_in_gain(ramp_len - n + i, ramp_len);
                frame.iter_mut().for_each(|s| *s *= g);
            }
            self.host_fade_in = n.saturating_sub(frames);
            self.convert(&faded, &mut scratch)
        } else {
            self.convert(&audio.samples, &mut scratch)
        };
        result.map_err(convert_err)?;
        self.append(&scratch);
        self.scratch = scratch;
        if let Some(h) = &mut self.host {
            h.frames += frames as u64;
        }
        // A guard against a flood between pulls; pulls trim at max depth.
        if self.queued() > 2 * self.max_depth {
            self.trim("burst beyond twice the maximum depth");
        }
        Ok(())
    }

    fn host_fade_in_len(&self) -> usize {
        let rate = self.converter.as_ref().map_or(SAMPLE_RATE, |c| c.in_rate());
        rescale(self.ramp as u64, SAMPLE_RATE, rate).max(1) as usize
    }

    fn convert(&mut self, samples: &[f32], out: &mut Vec<f32>) -> Result<(), ConvertError> {
        match &mut self.converter {
            Some(c) => c.push_interleaved(samples, out),
            None => Ok(()),
        }
    }

    /// Starts the host timeline at `host_ts_ms` (first packet, or after a
    /// jump that cannot be bridged with silence).
    fn anchor(&mut self, host_ts_ms: i64, rate: u32, arrival: ProgramTime) {
        self.host = Some(HostClock {
            anchor_ts_ms: host_ts_ms,
            frames: 0,
            rate,
        });
        self.stats.anchor = Some(Anchor {
            host_ts_ms,
            arrival,
        });
    }

    /// Checks `host_ts_ms` against the host timeline: anchors it, fills a
    /// gap with silence, or re-anchors after a break.
    fn follow_timeline(
        &mut self,
        host_ts_ms: i64,
        audio: &Decoded,
        arrival: ProgramTime,
    ) -> Result<(), LiveError> {
        let Some(host) = self.host else {
            self.anchor(host_ts_ms, audio.rate, arrival);
            return Ok(());
        };
        let tolerance = i64::from(self.cfg.gap_tolerance_ms);
        let ahead = host_ts_ms.saturating_sub(host.expected_ms());
        if ahead.abs() <= tolerance {
            return Ok(());
        }
        let gap_frames = rescale(ahead.unsigned_abs(), 1000, SAMPLE_RATE);
        if ahead > 0 && gap_frames + self.queued() as u64 <= self.max_depth as u64 {
            // The host skipped audio: silence keeps later audio in place.
            tracing::debug!(
                gap_ms = ahead,
                "live feed: timestamp gap filled with silence"
            );
            self.stats.gaps += 1;
            self.end_run();
            // The silence goes straight into the buffer in program format:
            // the converter restarts with the audio after the gap.
            let gap = usize::try_from(gap_frames).unwrap_or(usize::MAX);
            self.queue.resize(self.queue.len() + gap * CHANNELS, 0.0);
            let host_frames = rescale(ahead.unsigned_abs(), 1000, audio.rate);
            if let Some(h) = &mut self.host {
                h.frames += host_frames;
            }
        } else {
            tracing::info!(
                jump_ms = ahead,
                "live feed: host timestamps jumped; timeline re-anchored"
            );
            self.stats.discontinuities += 1;
            self.end_run();
            self.anchor(host_ts_ms, audio.rate, arrival);
        }
        self.host_fade_in = self.host_fade_in_len();
        Ok(())
    }

    /// Ends a run of host audio before a break (a gap, a re-anchor, a new
    /// format): flushes the converter so the run's last frames are queued
    /// rather than blended into what follows, then fades out the queued tail
    /// over up to one ramp, so the cut never clicks (the audio after the
    /// break fades in).
    fn end_run(&mut self) {
        if let Some(mut converter) = self.converter.take() {
            let mut tail = std::mem::take(&mut self.scratch);
            tail.clear();
            if converter.finish(&mut tail).is_ok() {
                self.append(&tail);
            }
            converter.reset();
            self.converter = Some(converter);
            self.scratch = tail;
        }
        let n = self.ramp.min(self.queued());
        let start = self.queue.len() - n * CHANNELS;
        for (i, frame) in self.queue[start..].chunks_exact_mut(CHANNELS).enumerate() {
            let g = fade_in_gain(n - 1 - i, n);
            frame.iter_mut().for_each(|s| *s *= g);
        }
    }

    /// Appends program-format samples to the jitter buffer.
    fn append(&mut self, samples: &[f32]) {
        if self.head > 0 && self.head >= self.queue.len() / 2 {
            self.queue.drain(..self.head);
            self.head = 0;
        }
        self.queue.extend_from_slice(samples);
    }

    /// Yields program frames `[clock, until)` into `out` (cleared first,
    /// interleaved stereo) and returns their start time, the previous clock.
    /// `until` at or before the clock yields nothing.
    pub fn pull(&mut self, until: ProgramTime, out: &mut Vec<f32>) -> ProgramTime {
        out.clear();
        let pts = self.clock;
        let frames = usize::try_from(until.since(pts)).unwrap_or(usize::MAX);
        let want = frames.saturating_mul(CHANNELS);
        out.reserve(want);
        while out.len() < want {
            if self.ready_pos == self.ready.len() {
                self.render();
            }
            let take = (want - out.len()).min(self.ready.len() - self.ready_pos);
            out.extend_from_slice(&self.ready[self.ready_pos..self.ready_pos + take]);
            self.ready_pos += take;
        }
        self.clock = pts.max(until);
        pts
    }

    /// Pulls up to `until` and queues the result on the mixer feed `id` at
    /// its program time. `scratch` is reused between calls.
    pub fn pull_into(
        &mut self,
        until: ProgramTime,
        mixer: &mut Mixer,
        id: FeedId,
        scratch: &mut Vec<f32>,
    ) {
        let pts = self.pull(until, scratch);
        mixer.push(id, pts, scratch);
    }

    /// Renders the next chunk into `ready` (which has been consumed).
    fn render(&mut self) {
        self.ready.clear();
        self.ready_pos = 0;
        if self.queued() > self.max_depth {
            self.trim("burst beyond the maximum depth");
        }
        if self.state == FeedState::Buffering && self.queued() >= self.target {
            self.start_playing();
        }
        if self.state == FeedState::Playing {
            self.play_chunk();
        } else {
            self.ready.resize(CHUNK * CHANNELS, 0.0);
        }
    }

    /// Starts playback of the buffered audio with a fade-in.
    fn start_playing(&mut self) {
        self.state = FeedState::Playing;
        self.drift.smoothed = self.queued() as f64;
        let ramp = self.ramp;
        let start = self.head;
        for (i, frame) in self.queue[start..]
            .chunks_exact_mut(CHANNELS)
            .take(ramp)
            .enumerate()
        {
            let g = fade_in_gain(i, ramp);
            frame.iter_mut().for_each(|s| *s *= g);
        }
    }

    /// Resamples one chunk of buffered audio, or fades out on underrun.
    fn play_chunk(&mut self) {
        let depth = self.queued();
        let correction = self.drift.update(depth, self.target);
        // Input frames per output frame is 1 + correction; rubato's ratio is
        // output over input.
        if let Err(e) = self
            .resampler
            .set_resample_ratio_relative(1.0 / (1.0 + correction), true)
        {
            tracing::error!(%e, "live feed: resampling ratio rejected");
        }
        let need = self.resampler.input_frames_next();
        if depth >= need + self.ramp {
            self.take_input(need, need);
            self.run_resampler();
            return;
        }
        // Underrun: play what is left with a fade-out, flush the filter,
        // then silence until the host comes back.
        let have = depth.min(need);
        self.take_input(have, need);
        let ramp = self.ramp.min(have);
        for (i, k) in (have - ramp..have).enumerate() {
            let g = fade_in_gain(ramp - 1 - i, ramp);
            self.input.iter_mut().for_each(|ch| ch[k] *= g);
        }
        self.run_resampler();
        let flush = self.resampler.input_frames_next();
        self.input.iter_mut().for_each(|ch| {
            ch.clear();
            ch.resize(flush, 0.0);
        });
        self.run_resampler();
        let lost = self.queued();
        self.stats.dropped_frames += lost as u64;
        self.queue.clear();
        self.head = 0;
        self.resampler.reset();
        if let Some(c) = &mut self.converter {
            c.reset();
        }
        self.host = None;
        self.host_fade_in = 0;
        self.state = FeedState::Waiting;
        self.stats.underruns += 1;
        tracing::warn!(
            underruns = self.stats.underruns,
            "live feed: buffer ran dry; silent until the host sends again"
        );
    }

    /// Moves `n` buffered frames into the planar resampler input, padded
    /// with silence to `len` frames.
    fn take_input(&mut self, n: usize, len: usize) {
        let [l, r] = &mut self.input;
        l.clear();
        r.clear();
        l.resize(len, 0.0);
        r.resize(len, 0.0);
        let src = &self.queue[self.head..self.head + n * CHANNELS];
        for i in 0..n {
            l[i] = src[2 * i];
            r[i] = src[2 * i + 1];
        }
        self.head += n * CHANNELS;
    }

    /// Runs the resampler on `input`, appending one chunk to `ready`.
    fn run_resampler(&mut self) {
        let n = match self
            .resampler
            .process_into_buffer(&self.input, &mut self.output, None)
        {
            Ok((_, n)) => n,
            Err(e) => {
                // Cannot happen with the buffers sized as asked; stay silent
                // rather than stop the program clock.
                tracing::error!(%e, "live feed: resampler failed");
                self.output.iter_mut().for_each(|ch| ch.fill(0.0));
                CHUNK
            }
        };
        let [l, r] = &self.output;
        let start = self.ready.len();
        self.ready.resize(start + n * CHANNELS, 0.0);
        let dst = &mut self.ready[start..];
        for i in 0..n {
            dst[2 * i] = l[i];
            dst[2 * i + 1] = r[i];
        }
    }

    /// Drops the oldest buffered audio down to the target depth.
    fn trim(&mut self, reason: &'static str) {
        let queued = self.queued();
        let drop = queued.saturating_sub(self.target);
        if drop == 0 {
            return;
        }
        if self.state == FeedState::Playing {
            // Crossfade from the audio that would have played next into the
            // audio after the cut, so the cut does not click.
            let ramp = self.ramp.min(queued - drop);
            let q = &mut self.queue[self.head..];
            for i in 0..ramp {
                let w = fade_in_gain(i, ramp);
                for c in 0..CHANNELS {
                    let old = q[i * CHANNELS + c];
                    let new = &mut q[(drop + i) * CHANNELS + c];
                    *new = old * (1.0 - w) + *new * w;
                }
            }
        }
        self.head += drop * CHANNELS;
        self.stats.overruns += 1;
        self.stats.dropped_frames += drop as u64;
        tracing::warn!(
            dropped_ms = millis(drop as u64),
            overruns = self.stats.overruns,
            reason,
            "live feed: overrun, oldest audio dropped"
        );
    }
}
