//! The mixer: sums host feeds on the program clock.
//!
//! [`Mixer`] is a pure state machine driven by its caller's clock. Feeds push
//! program-format samples (48 kHz interleaved stereo) stamped with program
//! time; [`Mixer::mix`] renders the next `n` frames `[clock, clock + n)` and
//! advances the clock by exactly `n`. The mixer never reads a clock and never
//! waits: a feed with no data for a span contributes silence to it, so a host
//! dropping out is silence in the mix, not a discontinuity in the output.
//!
//! # Invariants
//! - Each feed's queue starts at the mixer clock: queued sample `i` (frame
//!   `i / 2`) plays at program frame `clock + i / 2`.
//! - Data stamped before the clock is dropped (only the part before it); a gap
//!   between queued data and a later `pts` is filled with silence; data for
//!   frames already queued replaces them (the latest push wins).
//! - Gain, mute and removal changes ramp linearly over
//!   [`MixerConfig::ramp_frames`] so they never click; a ramp ends exactly on
//!   the target gain.
//! - The sum goes through the [`Limiter`], which adds no delay, so output frame
//!   `k` of a `mix` call is program frame `clock + k`.
//! - In steady state `push` and `mix` make no allocator call: the output
//!   `Vec` and the feed queues keep their capacity (`tests/mix_alloc.rs`
//!   counts the calls).
//!
//! # Mix-minus returns
//!
//! A host talking live must hear the others at once, but not itself (its own
//! voice coming back, however slightly late, is an echo that makes speech
//! stumble). [`Mixer::set_return`] asks for such a return for a feed: the
//! program without that feed's contribution ("mix-minus", N−1), after every
//! feed's gain, mute and ducking, so a host hears what listeners hear minus
//! themselves. Each return has its own limiter (the same settings as the
//! program's), since the sum it limits is another. A feed's contribution is
//! rendered once into its own buffer and subtracted from the sum, so N
//! returns cost N subtractions, not N mixes. A return whose feed
//! contributed nothing to the block (muted, silent, not connected) is the
//! program itself: [`Mixer::mix_return`] says so, and an encoder can serve
//! every such host the program's encode.
//!
//! # Cue feeds
//!
//! A feed added with [`Mixer::add_cue_feed`] (producer talkback) is mixed
//! like any other (gain, mute, ramps, level) but never into the program or
//! the returns' sums: it goes to a separate cue bus, [`Mixer::cue`], which
//! whoever builds the returns adds to the returns it is meant for.

use std::collections::VecDeque;

use crate::audio::limiter::{Limiter, LimiterConfig, db_to_amplitude, peak_abs};
use crate::time::{CHANNELS, ProgramTime, SAMPLE_RATE};

/// The lowest gain a feed can be set to, in dB (not silence: use mute).
pub const MIN_GAIN_DB: f32 = -96.0;
/// The highest gain a feed can be set to, in dB.
pub const MAX_GAIN_DB: f32 = 24.0;

/// Mixer settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixerConfig {
    /// The program limiter.
    pub limiter: LimiterConfig,
    /// Length of gain, mute and removal ramps in frames (default 240 = 5 ms).
    pub ramp_frames: u32,
    /// How far ahead of the clock a feed may queue, in frames (default 60 s).
    /// Data beyond it is dropped and counted, so a wild timestamp cannot make
    /// the mixer allocate without bound.
    pub max_lead_frames: u64,
}

impl Default for MixerConfig {
    fn default() -> Self {
        Self {
            limiter: LimiterConfig::default(),
            ramp_frames: SAMPLE_RATE / 200,
            max_lead_frames: 60 * u64::from(SAMPLE_RATE),
        }
    }
}

/// Identifies a feed in one [`Mixer`]. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedId(u64);

/// A feed's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// A name for logs and the control API.
    pub name: String,
    /// Gain in dB, clamped to [`MIN_GAIN_DB`]..=[`MAX_GAIN_DB`]; NaN means 0 dB.
    pub gain_db: f32,
    /// Whether the feed is muted.
    pub muted: bool,
}

/// Peak and RMS of a block, as linear amplitudes (1.0 = full scale).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Level {
    /// The largest absolute sample value.
    pub peak: f32,
    /// Root mean square over all samples of both channels.
    pub rms: f32,
}

impl Level {
    /// Peak in dBFS (`-inf` for silence).
    pub fn peak_dbfs(&self) -> f32 {
        20.0 * self.peak.log10()
    }

    /// RMS in dBFS (`-inf` for silence).
    pub fn rms_dbfs(&self) -> f32 {
        20.0 * self.rms.log10()
    }

    /// Measures interleaved samples, counting `silent` further zero samples
    /// in the mean.
    fn measure(parts: [&[f32]; 2], silent: usize) -> Self {
        let n = parts[0].len() + parts[1].len() + silent;
        if n == 0 {
            return Self::default();
        }
        let peak = peak_abs(parts[0]).max(peak_abs(parts[1]));
        let sum = sum_squares(parts[0]) + sum_squares(parts[1]);
        Self {
            peak,
            rms: (sum / n as f64).sqrt() as f32,
        }
    }
}

/// Sum of squares, accumulated in f32 lanes (vectorised) and summed in f64
/// per 4096 samples so long blocks keep their precision.
fn sum_squares(x: &[f32]) -> f64 {
    x.chunks(4096)
        .map(|block| {
            let mut lanes = [0.0f32; 8];
            let chunks = block.chunks_exact(8);
            let rest = chunks.remainder();
            for c in chunks {
                for (a, v) in lanes.iter_mut().zip(c) {
                    *a += v * v;
                }
            }
            let tail: f32 = rest.iter().map(|v| v * v).sum();
            lanes.iter().map(|v| f64::from(*v)).sum::<f64>() + f64::from(tail)
        })
        .sum()
}

/// Frames dropped by [`Mixer::push`] for one feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dropped {
    /// Frames that arrived for program time already mixed.
    pub late: u64,
    /// Frames beyond [`MixerConfig::max_lead_frames`] ahead of the clock.
    pub too_early: u64,
}

/// A linear gain ramp that lands exactly on its target.
#[derive(Debug, Clone, Copy)]
struct Gain {
    current: f32,
    target: f32,
    step: f32,
    left: u32,
}

impl Gain {
    fn fixed(g: f32) -> Self {
        Self {
            current: g,
            target: g,
            step: 0.0,
            left: 0,
        }
    }

    fn ramp_to(&mut self, target: f32, frames: u32) {
        if target == self.target {
            return;
        }
        self.target = target;
        if frames == 0 {
            self.current = target;
            self.left = 0;
        } else {
            self.step = (target - self.current) / frames as f32;
            self.left = frames;
        }
    }

    /// Adds `src` (interleaved stereo) times the gain into `out`, advancing
    /// the ramp by one step per frame.
    fn add_into(&mut self, out: &mut [f32], src: &[f32]) {
        let mut out = out;
        let mut src = src;
        if self.left > 0 {
            let frames = (src.len() / CHANNELS).min(self.left as usize);
            let (ramp_out, rest_out) = out.split_at_mut(frames * CHANNELS);
            let (ramp_src, rest_src) = src.split_at(frames * CHANNELS);
            for (o, s) in ramp_out
                .chunks_exact_mut(CHANNELS)
                .zip(ramp_src.chunks_exact(CHANNELS))
            {
                self.tick(1);
                for (o, s) in o.iter_mut().zip(s) {
                    *o += s * self.current;
                }
            }
            out = rest_out;
            src = rest_src;
        }
        let g = self.current;
        if g == 0.0 {
            return;
        }
        // The hot loop: a multiply-add the compiler vectorises.
        for (o, s) in out.iter_mut().zip(src) {
            *o += s * g;
        }
    }

    /// Advances the ramp by `frames` frames without audio.
    fn tick(&mut self, frames: u32) {
        if self.left == 0 {
            return;
        }
        if frames >= self.left {
            self.left = 0;
            self.current = self.target;
        } else {
            self.left -= frames;
            self.current += self.step * frames as f32;
        }
    }
}

struct Feed {
    id: FeedId,
    cfg: FeedConfig,
    gain: Gain,
    /// Interleaved stereo starting at the mixer clock.
    queue: VecDeque<f32>,
    level: Level,
    dropped: Dropped,
    /// Removed by the caller; fading out, then dropped.
    leaving: bool,
    /// Automatic attenuation on top of the configured gain (hold music
    /// ducked under a host), in dB; at or below [`MIN_GAIN_DB`] silent.
    duck_db: f32,
    /// Mixed to the cue bus instead of the program (see the module docs).
    cue: bool,
}

impl Feed {
    fn target_gain(&self) -> f32 {
        if self.cfg.muted || self.leaving || self.duck_db <= MIN_GAIN_DB {
            0.0
        } else {
            db_to_amplitude(self.cfg.gain_db + self.duck_db)
        }
    }
}

fn clamp_db(db: f32) -> f32 {
    if db.is_nan() {
        0.0
    } else {
        db.clamp(MIN_GAIN_DB, MAX_GAIN_DB)
    }
}

/// Replaces NaN and infinities (a broken decoder) with silence so one feed
/// cannot poison the whole mix.
#[inline]
fn finite(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

/// A feed's mix-minus return (see the module docs).
struct Return {
    feed: FeedId,
    /// The feed's contribution to the last block, after its gain.
    contribution: Vec<f32>,
    /// Whether that contribution was all zero.
    silent: bool,
    /// The last block of the return, limited.
    audio: Vec<f32>,
    limiter: Limiter,
}

/// The last block of a feed's mix-minus return, from
/// [`Mixer::mix_return`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixReturn<'a> {
    /// The feed contributed nothing to the block: its return is the
    /// program block itself.
    Program,
    /// The program without the feed: interleaved stereo, as many frames as
    /// the last [`Mixer::mix`].
    Own(&'a [f32]),
}

/// The program mixer (see the module docs).
pub struct Mixer {
    cfg: MixerConfig,
    feeds: Vec<Feed>,
    next_id: u64,
    clock: ProgramTime,
    limiter: Limiter,
    returns: Vec<Return>,
    /// The cue bus of the last block, and whether anything was on it.
    cue: Vec<f32>,
    cue_used: bool,
}

impl Mixer {
    /// A mixer at program time 0 with no feeds.
    pub fn new(cfg: MixerConfig) -> Self {
        Self {
            cfg,
            feeds: Vec::new(),
            next_id: 0,
            clock: ProgramTime::ZERO,
            limiter: Limiter::new(cfg.limiter, SAMPLE_RATE),
            returns: Vec::new(),
            cue: Vec::new(),
            cue_used: false,
        }
    }

    /// The mixer with its clock at `start`, where a run that continues a
    /// stream begins. Call before anything is pushed or mixed.
    pub fn starting_at(self, start: ProgramTime) -> Self {
        Self {
            clock: start,
            ..self
        }
    }

    /// Adds a feed; it contributes silence until data is pushed for it. It
    /// starts at its configured gain without a ramp.
    pub fn add_feed(&mut self, cfg: FeedConfig) -> FeedId {
        self.add(cfg, false)
    }

    /// Adds a cue feed: mixed to the cue bus ([`cue`](Self::cue)), never
    /// into the program (see the module docs). Otherwise as
    /// [`add_feed`](Self::add_feed).
    pub fn add_cue_feed(&mut self, cfg: FeedConfig) -> FeedId {
        self.add(cfg, true)
    }

    fn add(&mut self, cfg: FeedConfig, cue: bool) -> FeedId {
        let id = FeedId(self.next_id);
        self.next_id += 1;
        let cfg = FeedConfig {
            gain_db: clamp_db(cfg.gain_db),
            ..cfg
        };
        let mut feed = Feed {
            id,
            cfg,
            gain: Gain::fixed(0.0),
            queue: VecDeque::new(),
            level: Level::default(),
            dropped: Dropped::default(),
            leaving: false,
            duck_db: 0.0,
            cue,
        };
        feed.gain = Gain::fixed(feed.target_gain());
        self.feeds.push(feed);
        id
    }

    /// Removes a feed: it fades out over one ramp (its queued data keeps
    /// playing under the fade) and is then forgotten. Its id is invalid from
    /// now on. Unknown ids are ignored.
    pub fn remove_feed(&mut self, id: FeedId) {
        let ramp = self.cfg.ramp_frames;
        if let Some(f) = self.feed_mut(id) {
            f.leaving = true;
            let t = f.target_gain();
            f.gain.ramp_to(t, ramp);
        }
    }

    /// Sets a feed's gain in dB (clamped; NaN is ignored), ramped.
    pub fn set_gain_db(&mut self, id: FeedId, db: f32) {
        if db.is_nan() {
            return;
        }
        let ramp = self.cfg.ramp_frames;
        if let Some(f) = self.feed_mut(id) {
            f.cfg.gain_db = clamp_db(db);
            let t = f.target_gain();
            f.gain.ramp_to(t, ramp);
        }
    }

    /// Mutes or unmutes a feed, ramped.
    pub fn set_muted(&mut self, id: FeedId, muted: bool) {
        let ramp = self.cfg.ramp_frames;
        if let Some(f) = self.feed_mut(id) {
            f.cfg.muted = muted;
            let t = f.target_gain();
            f.gain.ramp_to(t, ramp);
        }
    }

    /// Sets a feed's automatic attenuation (ducking) in dB, ramped over
    /// `ramp_frames`: a separate stage from the configured gain, so an
    /// operator's gain survives the ducking. At or below [`MIN_GAIN_DB`] the
    /// feed is silent; NaN is ignored.
    pub fn set_duck_db(&mut self, id: FeedId, db: f32, ramp_frames: u32) {
        if db.is_nan() {
            return;
        }
        if let Some(f) = self.feed_mut(id) {
            f.duck_db = db.clamp(MIN_GAIN_DB, 0.0);
            let t = f.target_gain();
            f.gain.ramp_to(t, ramp_frames);
        }
    }

    /// A feed's current settings.
    pub fn feed_config(&self, id: FeedId) -> Option<&FeedConfig> {
        self.feed(id).map(|f| &f.cfg)
    }

    /// The ids of the feeds present (not removed), in the order they were
    /// added.
    pub fn feed_ids(&self) -> impl Iterator<Item = FeedId> + '_ {
        self.feeds.iter().filter(|f| !f.leaving).map(|f| f.id)
    }

    /// Queues interleaved stereo samples for a feed at program time `pts`.
    ///
    /// Frames before the clock are dropped (only those), a gap between the
    /// queued data and `pts` becomes silence, frames already queued are
    /// replaced, and frames more than [`MixerConfig::max_lead_frames`] ahead
    /// of the clock are dropped. Drops are counted in [`dropped`](Self::dropped).
    /// A trailing odd sample is ignored; non-finite samples become 0. Unknown
    /// ids are ignored.
    pub fn push(&mut self, id: FeedId, pts: ProgramTime, samples: &[f32]) {
        let clock = self.clock;
        let max_lead = self.cfg.max_lead_frames;
        let Some(feed) = self.feed_mut(id) else {
            return;
        };
        let frames = (samples.len() / CHANNELS) as u64;
        let late = clock.since(pts).min(frames);
        feed.dropped.late += late;
        let offset = pts.since(clock);
        // Frames that fit before the lead limit.
        let fit = max_lead.saturating_sub(offset).min(frames - late);
        feed.dropped.too_early += frames - late - fit;
        if fit == 0 {
            return;
        }
        // offset < max_lead and fit <= frames here, so both fit in usize
        // wherever the data itself does.
        let (Ok(start), Ok(late), Ok(fit)) = (
            usize::try_from(offset * 2),
            usize::try_from(late),
            usize::try_from(fit),
        ) else {
            return;
        };
        let data = samples
            .get(late * CHANNELS..(late + fit) * CHANNELS)
            .unwrap_or_default();
        let queue = &mut feed.queue;
        if queue.len() < start {
            queue.resize(start, 0.0);
        }
        let overlap = (queue.len() - start).min(data.len());
        let (replace, append) = data.split_at(overlap);
        for (q, v) in queue.range_mut(start..start + overlap).zip(replace) {
            *q = finite(*v);
        }
        queue.extend(append.iter().map(|v| finite(*v)));
    }

    /// Frames queued for a feed beyond the clock (0 for unknown ids), so a
    /// driver can keep each feed a chosen distance ahead.
    pub fn buffered(&self, id: FeedId) -> u64 {
        self.feed(id)
            .map_or(0, |f| (f.queue.len() / CHANNELS) as u64)
    }

    /// Frames dropped by [`push`](Self::push) for a feed so far.
    pub fn dropped(&self, id: FeedId) -> Option<Dropped> {
        self.feed(id).map(|f| f.dropped)
    }

    /// Mixes program frames `[clock, clock + n)` into `out` (cleared first,
    /// then `n` interleaved stereo frames) and advances the clock by `n`.
    /// Feeds without data for part of the span contribute silence there.
    pub fn mix(&mut self, n: usize, out: &mut Vec<f32>) {
        let len = n * CHANNELS;
        out.clear();
        out.resize(len, 0.0);
        self.cue.clear();
        self.cue_used = false;
        for feed in &mut self.feeds {
            let avail = feed.queue.len().min(len);
            let (a, b) = feed.queue.as_slices();
            let a = &a[..a.len().min(avail)];
            let b = &b[..avail - a.len()];
            feed.level = Level::measure([a, b], len - avail);
            if feed.cue {
                self.cue.resize(len, 0.0);
                self.cue_used = true;
                let (cue_a, rest) = self.cue.split_at_mut(a.len());
                feed.gain.add_into(cue_a, a);
                feed.gain.add_into(&mut rest[..b.len()], b);
                let silent = u32::try_from((len - avail) / CHANNELS).unwrap_or(u32::MAX);
                feed.gain.tick(silent);
                feed.queue.drain(..avail);
                continue;
            }
            match self.returns.iter_mut().find(|r| r.feed == feed.id) {
                // Rendered apart first, to be taken out of its own return.
                Some(ret) => {
                    let mine = &mut ret.contribution;
                    mine.clear();
                    mine.resize(len, 0.0);
                    let (mine_a, rest) = mine.split_at_mut(a.len());
                    feed.gain.add_into(mine_a, a);
                    feed.gain.add_into(&mut rest[..b.len()], b);
                    ret.silent = mine.iter().all(|v| *v == 0.0);
                    if !ret.silent {
                        for (o, m) in out.iter_mut().zip(mine.iter()) {
                            *o += m;
                        }
                    }
                }
                None => {
                    let (out_a, rest) = out.split_at_mut(a.len());
                    feed.gain.add_into(out_a, a);
                    feed.gain.add_into(&mut rest[..b.len()], b);
                }
            }
            // Time passes for the ramp even where the feed is silent.
            let silent = u32::try_from((len - avail) / CHANNELS).unwrap_or(u32::MAX);
            feed.gain.tick(silent);
            feed.queue.drain(..avail);
        }
        self.feeds.retain(|f| !(f.leaving && f.gain.left == 0));
        let feeds = &self.feeds;
        self.returns
            .retain(|r| feeds.iter().any(|f| f.id == r.feed && !f.leaving));
        for ret in &mut self.returns {
            // Kept running on the program's input even while it is the
            // program, so its gain reduction is current when the feed
            // starts to contribute again.
            ret.audio.clear();
            ret.audio.extend(
                out.iter()
                    .zip(ret.contribution.iter().chain(std::iter::repeat(&0.0)))
                    .map(|(sum, mine)| sum - mine),
            );
            ret.limiter.process(&mut ret.audio);
        }
        self.limiter.process(out);
        self.clock = self.clock.plus(n as u64);
    }

    /// Asks for (`true`) or stops (`false`) the mix-minus return of a feed,
    /// from the next [`mix`](Self::mix) on. Unknown ids are ignored; a
    /// removed feed's return ends with it.
    pub fn set_return(&mut self, id: FeedId, enabled: bool) {
        let has = self.returns.iter().any(|r| r.feed == id);
        if enabled && !has && self.feed(id).is_some() {
            self.returns.push(Return {
                feed: id,
                contribution: Vec::new(),
                silent: true,
                audio: Vec::new(),
                limiter: Limiter::new(self.cfg.limiter, SAMPLE_RATE),
            });
        } else if !enabled {
            self.returns.retain(|r| r.feed != id);
        }
    }

    /// The last mixed block of a feed's return: the program without it.
    /// `None` when no return was asked for it.
    pub fn mix_return(&self, id: FeedId) -> Option<MixReturn<'_>> {
        let ret = self.returns.iter().find(|r| r.feed == id)?;
        Some(if ret.silent {
            MixReturn::Program
        } else {
            MixReturn::Own(&ret.audio)
        })
    }

    /// The cue bus of the last [`mix`](Self::mix): the sum of the cue feeds
    /// (interleaved stereo, as many frames as the block), or `None` when
    /// there is no cue feed.
    pub fn cue(&self) -> Option<&[f32]> {
        self.cue_used.then_some(self.cue.as_slice())
    }

    /// The program time of the next frame [`mix`](Self::mix) renders.
    pub fn clock(&self) -> ProgramTime {
        self.clock
    }

    /// A feed's level over the last mixed block, before its gain and mute (so
    /// a meter shows a muted host talking). `None` for unknown ids.
    pub fn level(&self, id: FeedId) -> Option<Level> {
        self.feed(id).map(|f| f.level)
    }

    /// The limiter's current gain reduction in dB.
    pub fn gain_reduction_db(&self) -> f32 {
        self.limiter.gain_reduction_db()
    }

    fn feed(&self, id: FeedId) -> Option<&Feed> {
        self.feeds.iter().find(|f| f.id == id && !f.leaving)
    }

    fn feed_mut(&mut self, id: FeedId) -> Option<&mut Feed> {
        self.feeds.iter_mut().find(|f| f.id == id && !f.leaving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut Mixer, db: f32) -> FeedId {
        m.add_feed(FeedConfig {
            name: "host".into(),
            gain_db: db,
            muted: false,
        })
    }

    fn at(samples: u64) -> ProgramTime {
        ProgramTime::from_samples(samples)
    }

    fn constant(v: f32, frames: usize) -> Vec<f32> {
        vec![v; frames * 2]
    }

    fn mixer() -> Mixer {
        Mixer::new(MixerConfig::default())
    }

    /// The last block of `id`'s return, with the program block `program`
    /// standing in for [`MixReturn::Program`].
    fn heard(m: &Mixer, id: FeedId, program: &[f32]) -> (Vec<f32>, bool) {
        match m.mix_return(id).expect("a return") {
            MixReturn::Program => (program.to_vec(), true),
            MixReturn::Own(audio) => (audio.to_vec(), false),
        }
    }

    fn all_near(samples: &[f32], v: f32) -> bool {
        samples.iter().all(|s| (s - v).abs() < 1e-6)
    }

    #[test]
    fn each_return_is_the_program_without_its_own_feed() {
        let mut m = mixer();
        let a = feed(&mut m, 0.0);
        let b = feed(&mut m, -6.0);
        let music = feed(&mut m, 0.0);
        m.set_return(a, true);
        m.set_return(b, true);
        let half = db_to_amplitude(-6.0);
        m.push(a, at(0), &constant(0.1, 480));
        m.push(b, at(0), &constant(0.2, 480));
        m.push(music, at(0), &constant(0.05, 480));
        let mut out = Vec::new();
        m.mix(480, &mut out);
        assert!(all_near(&out, 0.1 + 0.2 * half + 0.05));
        let (for_a, shared) = heard(&m, a, &out);
        assert!(!shared);
        assert!(
            all_near(&for_a, 0.2 * half + 0.05),
            "a hears b (at its gain) and the music"
        );
        let (for_b, _) = heard(&m, b, &out);
        assert!(all_near(&for_b, 0.1 + 0.05), "b hears a and the music");
        assert_eq!(
            m.mix_return(music),
            None,
            "no return was asked for the music"
        );
    }

    #[test]
    fn a_muted_or_silent_feed_hears_the_program_and_others_do_not_hear_it() {
        let mut m = mixer();
        let a = feed(&mut m, 0.0);
        let b = feed(&mut m, 0.0);
        m.set_return(a, true);
        m.set_return(b, true);
        m.set_muted(a, true);
        let mut out = Vec::new();
        // Past the mute ramp.
        for _ in 0..2 {
            m.push(a, m.clock(), &constant(0.1, 480));
            m.push(b, m.clock(), &constant(0.2, 480));
            m.mix(480, &mut out);
        }
        assert_eq!(
            m.mix_return(a),
            Some(MixReturn::Program),
            "muted: a shares the program"
        );
        assert!(all_near(&out, 0.2));
        let (for_b, _) = heard(&m, b, &out);
        assert!(all_near(&for_b, 0.0), "b does not hear the muted a");
        // b stops sending: silent, so it shares the program too.
        m.mix(480, &mut out);
        assert_eq!(m.mix_return(b), Some(MixReturn::Program));
    }

    #[test]
    fn returns_are_limited_and_end_with_their_feed() {
        let mut m = mixer();
        let a = feed(&mut m, 0.0);
        let b = feed(&mut m, 0.0);
        let c = feed(&mut m, 0.0);
        m.set_return(a, true);
        m.set_return(a, true);
        let mut out = Vec::new();
        for _ in 0..5 {
            for id in [a, b, c] {
                m.push(id, m.clock(), &constant(0.9, 480));
            }
            m.mix(480, &mut out);
        }
        let ceiling = m.limiter.ceiling();
        let (for_a, _) = heard(&m, a, &out);
        assert!(
            for_a.iter().all(|s| s.abs() <= ceiling + 1e-6),
            "b + c is limited"
        );
        assert!(for_a.iter().all(|s| *s > 0.5), "and still the others");
        m.remove_feed(a);
        for _ in 0..2 {
            m.mix(480, &mut out);
        }
        assert_eq!(m.mix_return(a), None, "a removed feed has no return");
        m.set_return(b, true);
        m.set_return(b, false);
        assert_eq!(m.mix_return(b), None);
    }

    #[test]
    fn gain_in_db_is_exact() {
        for db in [0.0f32, -6.0, -20.0, 3.0] {
            let mut m = mixer();
            let id = feed(&mut m, db);
            m.push(id, at(0), &constant(0.25, 100));
            let mut out = Vec::new();
            m.mix(100, &mut out);
            let want = 0.25 * 10f32.powf(db / 20.0);
            assert!(
                out.iter().all(|v| (v - want).abs() <= want * 1e-6),
                "{db} dB: {} vs {want}",
                out[0]
            );
        }
    }

    #[test]
    fn gain_change_ramps_and_lands_exactly() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        m.push(id, at(0), &constant(0.25, 1_000));
        m.set_gain_db(id, -6.0);
        let mut out = Vec::new();
        m.mix(1_000, &mut out);
        let left: Vec<f32> = out.iter().step_by(2).copied().collect();
        // Monotonic ramp, no step larger than the ramp slope.
        let ramp = MixerConfig::default().ramp_frames as usize;
        for w in left.windows(2).take(ramp) {
            assert!(
                w[1] <= w[0] && w[0] - w[1] < 0.25 / ramp as f32 * 1.01,
                "{w:?}"
            );
        }
        let want = 0.25 * 10f32.powf(-6.0 / 20.0);
        assert!(
            left[ramp..].iter().all(|v| *v == want),
            "after ramp: {}",
            left[ramp]
        );
        assert!(left[ramp / 2] > want && left[ramp / 2] < 0.25);
    }

    #[test]
    fn mute_ramps_to_silence_and_back() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        m.push(id, at(0), &constant(0.5, 2_000));
        let mut out = Vec::new();
        m.mix(100, &mut out);
        m.set_muted(id, true);
        m.mix(1_000, &mut out);
        let ramp = MixerConfig::default().ramp_frames as usize;
        assert!(
            out[0] < 0.5 && out[0] > 0.49,
            "first muted frame jumps: {}",
            out[0]
        );
        assert!(out[2 * (ramp / 2)] > 0.2 && out[2 * (ramp / 2)] < 0.3);
        assert!(out[2 * ramp..].iter().all(|v| *v == 0.0));
        // The muted feed is still metered.
        assert_eq!(m.level(id).map(|l| l.peak), Some(0.5));
        m.set_muted(id, false);
        m.mix(900, &mut out);
        assert!(out[0] > 0.0 && out[0] < 0.01);
        assert_eq!(out[2 * ramp], 0.5);
    }

    #[test]
    fn late_data_is_dropped_and_gaps_are_silent() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        let mut out = Vec::new();
        m.mix(100, &mut out);
        // Frames 50..150: the first 50 are late.
        let data: Vec<f32> = (50..150).flat_map(|i| [i as f32 / 1000.0; 2]).collect();
        m.push(id, at(50), &data);
        assert_eq!(m.dropped(id).map(|d| d.late), Some(50));
        assert_eq!(m.buffered(id), 50);
        // A gap: frames 150..160 silent, then data at 160.
        m.push(id, at(160), &constant(0.45, 10));
        assert_eq!(m.buffered(id), 70);
        m.mix(80, &mut out);
        for (k, frame) in out.chunks(2).enumerate() {
            let t = 100 + k;
            let want = match t {
                100..150 => t as f32 / 1000.0,
                150..160 => 0.0,
                160..170 => 0.45,
                _ => 0.0,
            };
            assert_eq!(frame, [want, want], "program frame {t}");
        }
        assert_eq!(m.clock(), at(180));
        // Entirely late data changes nothing.
        m.push(id, at(0), &constant(0.3, 100));
        assert_eq!(m.buffered(id), 0);
    }

    #[test]
    fn overlapping_push_replaces_queued_frames() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        m.push(id, at(0), &constant(0.1, 10));
        m.push(id, at(5), &constant(0.2, 10));
        assert_eq!(m.buffered(id), 15);
        let mut out = Vec::new();
        m.mix(15, &mut out);
        assert!(out[..10].iter().all(|v| *v == 0.1));
        assert!(out[10..].iter().all(|v| *v == 0.2));
    }

    #[test]
    fn feeds_sum_and_ending_feeds_contribute_silence() {
        let mut m = mixer();
        let a = feed(&mut m, 0.0);
        let b = feed(&mut m, 0.0);
        m.push(a, at(0), &constant(0.25, 100));
        m.push(b, at(0), &constant(0.125, 40));
        let mut out = Vec::new();
        m.mix(120, &mut out);
        assert!(out[..80].iter().all(|v| *v == 0.375));
        assert!(out[80..200].iter().all(|v| *v == 0.25));
        assert!(out[200..].iter().all(|v| *v == 0.0));
        assert_eq!(m.level(b).map(|l| l.peak), Some(0.125));
        // No data at all: silence, clock still advances exactly.
        m.mix(7, &mut out);
        assert_eq!(out, vec![0.0; 14]);
        assert_eq!(m.clock(), at(127));
        assert_eq!(m.level(a), Some(Level::default()));
    }

    #[test]
    fn clock_advances_exactly_and_data_lands_at_its_pts() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        // One impulse at program frame 12_345, pushed early.
        let mut data = constant(0.0, 1);
        data[0] = 0.5;
        m.push(id, at(12_345), &data);
        let mut out = Vec::new();
        let mut found = None;
        for n in [1000usize, 1, 960, 1024, 7, 10_000] {
            let start = m.clock();
            m.mix(n, &mut out);
            assert_eq!(out.len(), 2 * n);
            assert_eq!(m.clock(), start.plus(n as u64));
            if let Some(k) = out.iter().position(|v| *v != 0.0) {
                found = Some(start.plus((k / 2) as u64));
            }
        }
        assert_eq!(found, Some(at(12_345)));
    }

    #[test]
    fn removed_feed_fades_out_and_disappears() {
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        m.push(id, at(0), &constant(0.5, 1_000));
        m.remove_feed(id);
        assert_eq!(m.buffered(id), 0);
        assert!(m.level(id).is_none());
        let mut out = Vec::new();
        m.mix(1_000, &mut out);
        assert!(out[0] > 0.49);
        let ramp = MixerConfig::default().ramp_frames as usize;
        assert!(out[2 * ramp..].iter().all(|v| *v == 0.0));
        assert_eq!(m.feed_ids().count(), 0);
        m.mix(10, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn gain_is_clamped_and_bad_samples_are_silenced() {
        let mut m = mixer();
        let id = feed(&mut m, f32::INFINITY);
        assert_eq!(m.feed_config(id).map(|c| c.gain_db), Some(MAX_GAIN_DB));
        m.set_gain_db(id, f32::NAN);
        assert_eq!(m.feed_config(id).map(|c| c.gain_db), Some(MAX_GAIN_DB));
        m.set_gain_db(id, -1e9);
        assert_eq!(m.feed_config(id).map(|c| c.gain_db), Some(MIN_GAIN_DB));
        let mut m = mixer();
        let id = feed(&mut m, 0.0);
        m.push(id, at(0), &[f32::NAN, 0.1, f32::INFINITY, 0.2]);
        let mut out = Vec::new();
        m.mix(2, &mut out);
        assert_eq!(out, [0.0, 0.1, 0.0, 0.2]);
    }

    #[test]
    fn far_future_data_is_bounded() {
        let mut m = Mixer::new(MixerConfig {
            max_lead_frames: 100,
            ..MixerConfig::default()
        });
        let id = feed(&mut m, 0.0);
        m.push(id, at(90), &constant(0.1, 20));
        m.push(id, at(u64::MAX - 5), &constant(0.1, 3));
        assert_eq!(m.buffered(id), 100);
        assert_eq!(m.dropped(id).map(|d| d.too_early), Some(13));
    }

    #[test]
    fn limiter_catches_two_full_scale_feeds() {
        let mut m = mixer();
        let a = feed(&mut m, 0.0);
        let b = feed(&mut m, 0.0);
        let tone: Vec<f32> = (0..48_000)
            .flat_map(|i| [(std::f32::consts::TAU * 1000.0 * i as f32 / 48_000.0).sin(); 2])
            .collect();
        m.push(a, at(0), &tone);
        m.push(b, at(0), &tone);
        let mut out = Vec::new();
        let mut peak = 0.0f32;
        for _ in 0..50 {
            m.mix(960, &mut out);
            peak = peak.max(peak_abs(&out));
        }
        let ceiling = db_to_amplitude(LimiterConfig::default().ceiling_db);
        assert!(peak < ceiling && peak > 0.8 * ceiling, "peak {peak}");
        assert!(m.gain_reduction_db() > 6.0);
    }

    #[test]
    fn a_cue_feed_is_heard_on_the_cue_bus_and_never_on_air() {
        let mut m = mixer();
        let host = feed(&mut m, 0.0);
        let mut out = Vec::new();
        m.mix(4, &mut out);
        assert_eq!(m.cue(), None, "no cue feed yet");
        let cue = m.add_cue_feed(FeedConfig {
            name: "talkback".into(),
            gain_db: 0.0,
            muted: false,
        });
        m.set_return(host, true);
        m.push(host, m.clock(), &constant(0.25, 4));
        m.push(cue, m.clock(), &constant(0.5, 4));
        m.mix(4, &mut out);
        assert_eq!(out, constant(0.25, 4), "the program holds the host only");
        assert_eq!(m.cue(), Some(&constant(0.5, 4)[..]));
        match m.mix_return(host) {
            Some(MixReturn::Own(r)) => assert!(r.iter().all(|v| *v == 0.0), "{r:?}"),
            other => panic!("{other:?}"),
        }
        m.mix(4, &mut out);
        assert_eq!(m.cue(), Some(&constant(0.0, 4)[..]), "silent, still a bus");
    }
}
