//! Conversion of any PCM stream to the program format: 48 kHz interleaved
//! stereo `f32`.
//!
//! [`Converter`] is a pure state machine shared by every input path (files
//! now; RTMP AAC/MP3 and WHIP Opus later): push decoded samples in, get
//! program-format samples out. It first maps the input channels to stereo
//! ([`ChannelLayout`]), then resamples the two channels to
//! [`SAMPLE_RATE`](crate::time::SAMPLE_RATE).
//!
//! # Sample accounting
//! The conversion is sample-exact: after `n` input frames and
//! [`Converter::finish`], exactly `round(n × 48000 / in_rate)` frames have been
//! produced (half rounds up), and output frame `k` corresponds to input time
//! `k / 48000` s. This holds because:
//! - the resampler is rubato's synchronous FFT resampler
//!   ([`FftFixedInOut`]), whose ratio is exactly `48000 / in_rate` (its chunk
//!   sizes are whole multiples of `in_rate / gcd` and `48000 / gcd`);
//! - its anti-aliasing filter is a windowed sinc centred on tap
//!   `chunk_in / 2`; the chunk sizes are chosen even on both sides, so the
//!   delay is a whole `chunk_out / 2` output frames, which are discarded at the
//!   start;
//! - [`Converter::finish`] feeds zeros until the filter tail has come out and
//!   cuts the output at the exact length.
//!
//! A 48 kHz input bypasses the resampler entirely (bit-exact, no delay).
//!
//! # Latency
//! The resampler works on chunks of about 20 ms of input, so a live input
//! sees up to one chunk of buffering plus the filter delay (about 10 ms).

use rubato::{FftFixedInOut, Resampler};

use crate::time::{CHANNELS, SAMPLE_RATE};

/// Why a [`Converter`] cannot be built or fed. Each is a programming or
/// configuration error of the caller: the stream cannot be converted as
/// described.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The input sample rate is zero.
    #[error("input sample rate is zero")]
    ZeroRate,
    /// The channel layout has no channels.
    #[error("input has no channels")]
    NoChannels,
    /// An interleaved block whose length is not a multiple of the channel
    /// count, or planar channels of unequal length or count.
    #[error("input block is ragged: {samples} samples for {channels} channels")]
    Ragged {
        /// Samples (interleaved) or frames (planar) offered.
        samples: usize,
        /// Channels the converter was built for.
        channels: usize,
    },
    /// Input pushed after [`Converter::finish`]; call [`Converter::reset`]
    /// to start a new stream.
    #[error("input pushed after the stream was finished")]
    Finished,
    /// The resampler rejected a buffer (an internal sizing error).
    #[error("resampler failed: {0}")]
    Resampler(String),
}

/// A loudspeaker position, as declared by a container (WAVEFORMATEXTENSIBLE
/// channel mask, FLAC/AAC channel configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// Front left (L).
    FrontLeft,
    /// Front right (R).
    FrontRight,
    /// Front centre (C).
    FrontCentre,
    /// Low-frequency effects (LFE).
    LowFrequency,
    /// Rear (back) left surround.
    BackLeft,
    /// Rear (back) right surround.
    BackRight,
    /// Front left of centre.
    FrontLeftCentre,
    /// Front right of centre.
    FrontRightCentre,
    /// Rear centre.
    BackCentre,
    /// Side left surround.
    SideLeft,
    /// Side right surround.
    SideRight,
    /// Any other position (height channels, wides): folded into both sides.
    Other,
}

/// `1/√2` (-3 dB): the BS.775 weight of the centre and surround channels.
const MINUS_3_DB: f32 = std::f32::consts::FRAC_1_SQRT_2;

impl Speaker {
    /// The (left, right) weights of this speaker in the stereo downmix.
    ///
    /// ITU-R BS.775-3, Table 2 (3/2 to 2/0): `Lo = L + 0.7071·C + 0.7071·Ls`,
    /// `Ro = R + 0.7071·C + 0.7071·Rs`. BS.775 leaves the LFE channel out of
    /// the downmix, and so does this. Positions BS.775 does not name are
    /// mapped by analogy: left/right-of-centre go to their side at unity,
    /// side and back surrounds at -3 dB, the rear centre at -3 dB into each
    /// surround and so -6 dB into each side, anything else as a centre.
    fn weights(self) -> [f32; 2] {
        match self {
            Speaker::FrontLeft | Speaker::FrontLeftCentre => [1.0, 0.0],
            Speaker::FrontRight | Speaker::FrontRightCentre => [0.0, 1.0],
            Speaker::FrontCentre | Speaker::Other => [MINUS_3_DB, MINUS_3_DB],
            Speaker::LowFrequency => [0.0, 0.0],
            Speaker::BackLeft | Speaker::SideLeft => [MINUS_3_DB, 0.0],
            Speaker::BackRight | Speaker::SideRight => [0.0, MINUS_3_DB],
            Speaker::BackCentre => [0.5, 0.5],
        }
    }
}

/// How the input channels map to program stereo.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelLayout {
    mix: Mix,
}

#[derive(Debug, Clone, PartialEq)]
enum Mix {
    /// One channel, played on both sides at unity.
    Mono,
    /// Two channels, taken as left and right unchanged.
    Stereo,
    /// Three or more channels: per-channel (left, right) weights.
    Matrix(Vec<[f32; 2]>),
}

impl ChannelLayout {
    /// A single channel, copied to both sides at unity gain (a mono feed keeps
    /// its level in each channel).
    pub fn mono() -> Self {
        Self { mix: Mix::Mono }
    }

    /// Left and right, passed through unchanged.
    pub fn stereo() -> Self {
        Self { mix: Mix::Stereo }
    }

    /// The layout for `channels` channels in the default WAVE/SMPTE order
    /// (`L R C LFE Ls Rs` for 5.1, as WAVEFORMATEXTENSIBLE, FLAC and most
    /// decoders deliver them when no mask is given).
    pub fn default_for(channels: usize) -> Result<Self, ConvertError> {
        use Speaker::*;
        let speakers: &[Speaker] = match channels {
            0 => return Err(ConvertError::NoChannels),
            1 => return Ok(Self::mono()),
            2 => return Ok(Self::stereo()),
            3 => &[FrontLeft, FrontRight, FrontCentre],
            4 => &[FrontLeft, FrontRight, BackLeft, BackRight],
            5 => &[FrontLeft, FrontRight, FrontCentre, BackLeft, BackRight],
            6 => &[
                FrontLeft,
                FrontRight,
                FrontCentre,
                LowFrequency,
                BackLeft,
                BackRight,
            ],
            7 => &[
                FrontLeft,
                FrontRight,
                FrontCentre,
                LowFrequency,
                BackCentre,
                SideLeft,
                SideRight,
            ],
            _ => &[
                FrontLeft,
                FrontRight,
                FrontCentre,
                LowFrequency,
                BackLeft,
                BackRight,
                SideLeft,
                SideRight,
            ],
        };
        // Channels past the eighth have no standard position.
        let mut all = speakers.to_vec();
        all.resize(channels, Other);
        Self::from_speakers(&all)
    }

    /// The layout for channels at the given positions, in stream order. One
    /// channel is treated as mono and two as stereo, whatever positions they
    /// declare.
    pub fn from_speakers(speakers: &[Speaker]) -> Result<Self, ConvertError> {
        Ok(match speakers.len() {
            0 => return Err(ConvertError::NoChannels),
            1 => Self::mono(),
            2 => Self::stereo(),
            _ => Self {
                mix: Mix::Matrix(speakers.iter().map(|s| s.weights()).collect()),
            },
        })
    }

    /// The number of input channels.
    pub fn channels(&self) -> usize {
        match &self.mix {
            Mix::Mono => 1,
            Mix::Stereo => 2,
            Mix::Matrix(m) => m.len(),
        }
    }
}

/// Converts one PCM stream of any rate and channel layout to 48 kHz stereo,
/// sample-exactly (see the module docs).
pub struct Converter {
    in_rate: u32,
    layout: ChannelLayout,
    resampler: Option<Box<ResampleStage>>,
    frames_in: u64,
    frames_out: u64,
    finished: bool,
}

/// The resampling half of a [`Converter`] (absent at 48 kHz).
struct ResampleStage {
    fft: FftFixedInOut<f32>,
    chunk_in: usize,
    chunk_out: usize,
    /// Planar stereo input waiting for a whole chunk (`< chunk_in` frames
    /// between calls).
    pending: [Vec<f32>; CHANNELS],
    /// One chunk of resampler output.
    output: [Vec<f32>; CHANNELS],
    /// Filter delay still to discard from the start of the output.
    to_skip: usize,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl ResampleStage {
    fn new(in_rate: u32) -> Result<Self, ConvertError> {
        let g = gcd(u64::from(in_rate), u64::from(SAMPLE_RATE));
        let unit_in = (u64::from(in_rate) / g) as usize;
        // About 20 ms of input (at least 256 frames) per chunk, in whole
        // units so the ratio is exact, and an even number of units so both
        // chunk sizes are even and the filter delay is a whole frame count.
        let target = (in_rate as usize / 50).max(256);
        let mut units = target.div_ceil(unit_in);
        units += units % 2;
        let fft = FftFixedInOut::<f32>::new(
            in_rate as usize,
            SAMPLE_RATE as usize,
            units * unit_in,
            CHANNELS,
        )
        .map_err(|e| ConvertError::Resampler(e.to_string()))?;
        let chunk_in = fft.input_frames_next();
        let chunk_out = fft.output_frames_next();
        let to_skip = fft.output_delay();
        debug_assert_eq!(chunk_in, units * unit_in);
        debug_assert_eq!(to_skip * 2, chunk_out);
        Ok(Self {
            fft,
            chunk_in,
            chunk_out,
            pending: [Vec::with_capacity(chunk_in), Vec::with_capacity(chunk_in)],
            output: [vec![0.0; chunk_out], vec![0.0; chunk_out]],
            to_skip,
        })
    }

    /// Appends one stereo frame; runs the resampler when a chunk is full,
    /// appending its output to `out` and counting it in `produced`.
    #[inline]
    fn push_frame(
        &mut self,
        l: f32,
        r: f32,
        out: &mut Vec<f32>,
        produced: &mut u64,
    ) -> Result<(), ConvertError> {
        let [pl, pr] = &mut self.pending;
        pl.push(l);
        pr.push(r);
        if pl.len() == self.chunk_in {
            self.run(out, produced, u64::MAX)?;
        }
        Ok(())
    }

    /// Resamples the (full) pending chunk and emits its output, skipping the
    /// filter delay and stopping at `limit` frames produced in total.
    fn run(
        &mut self,
        out: &mut Vec<f32>,
        produced: &mut u64,
        limit: u64,
    ) -> Result<(), ConvertError> {
        let (_, n) = self
            .fft
            .process_into_buffer(&self.pending, &mut self.output, None)
            .map_err(|e| ConvertError::Resampler(e.to_string()))?;
        self.pending.iter_mut().for_each(Vec::clear);
        let skip = self.to_skip.min(n);
        self.to_skip -= skip;
        let room = usize::try_from(limit.saturating_sub(*produced)).unwrap_or(usize::MAX);
        let take = (n - skip).min(room);
        let [ol, or] = &self.output;
        out.reserve(take * CHANNELS);
        for (l, r) in ol.iter().zip(or).skip(skip).take(take) {
            out.push(*l);
            out.push(*r);
        }
        *produced += take as u64;
        Ok(())
    }
}

impl Converter {
    /// A converter for a stream at `in_rate` Hz with the given channels.
    pub fn new(in_rate: u32, layout: ChannelLayout) -> Result<Self, ConvertError> {
        if in_rate == 0 {
            return Err(ConvertError::ZeroRate);
        }
        let resampler = if in_rate == SAMPLE_RATE {
            None
        } else {
            Some(Box::new(ResampleStage::new(in_rate)?))
        };
        Ok(Self {
            in_rate,
            layout,
            resampler,
            frames_in: 0,
            frames_out: 0,
            finished: false,
        })
    }

    /// A converter for `channels` channels in the default order
    /// ([`ChannelLayout::default_for`]).
    pub fn with_channels(in_rate: u32, channels: usize) -> Result<Self, ConvertError> {
        Self::new(in_rate, ChannelLayout::default_for(channels)?)
    }

    /// The input sample rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// The number of input channels.
    pub fn in_channels(&self) -> usize {
        self.layout.channels()
    }

    /// Input frames pushed since the start (or the last [`reset`](Self::reset)).
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Program frames (48 kHz) produced since the start.
    pub fn frames_out(&self) -> u64 {
        self.frames_out
    }

    /// The exact number of program frames `frames` input frames at `in_rate`
    /// become: `round(frames × 48000 / in_rate)`, half rounding up.
    pub fn output_len(frames: u64, in_rate: u32) -> u64 {
        if in_rate == 0 {
            return 0;
        }
        let num = u128::from(frames) * u128::from(SAMPLE_RATE) * 2 + u128::from(in_rate);
        (num / (u128::from(in_rate) * 2)) as u64
    }

    /// The filter delay of the resampler in program frames (0 at 48 kHz).
    /// It is compensated internally; it is the extra latency a live input
    /// sees on top of one chunk of buffering.
    pub fn delay(&self) -> usize {
        self.resampler.as_ref().map_or(0, |r| r.chunk_out / 2)
    }

    /// Pushes interleaved samples (`frames × channels`), appending any
    /// program-format output (interleaved stereo) to `out`.
    pub fn push_interleaved(
        &mut self,
        samples: &[f32],
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        let channels = self.layout.channels();
        if !samples.len().is_multiple_of(channels) {
            return Err(ConvertError::Ragged {
                samples: samples.len(),
                channels,
            });
        }
        if self.finished {
            return Err(ConvertError::Finished);
        }
        let frames = samples.len() / channels;
        self.frames_in += frames as u64;
        let Self {
            layout,
            resampler,
            frames_out,
            ..
        } = self;
        match (&layout.mix, resampler.as_deref_mut()) {
            (Mix::Stereo, None) => out.extend_from_slice(samples),
            (Mix::Mono, None) => {
                out.reserve(frames * CHANNELS);
                for &s in samples {
                    out.push(s);
                    out.push(s);
                }
            }
            (Mix::Matrix(m), None) => {
                out.reserve(frames * CHANNELS);
                for frame in samples.chunks_exact(channels) {
                    let [l, r] = downmix(m, frame.iter().copied());
                    out.push(l);
                    out.push(r);
                }
            }
            (Mix::Stereo, Some(rs)) => {
                for f in samples.chunks_exact(2) {
                    if let [l, r] = *f {
                        rs.push_frame(l, r, out, frames_out)?;
                    }
                }
                return Ok(());
            }
            (Mix::Mono, Some(rs)) => {
                for &s in samples {
                    rs.push_frame(s, s, out, frames_out)?;
                }
                return Ok(());
            }
            (Mix::Matrix(m), Some(rs)) => {
                for frame in samples.chunks_exact(channels) {
                    let [l, r] = downmix(m, frame.iter().copied());
                    rs.push_frame(l, r, out, frames_out)?;
                }
                return Ok(());
            }
        }
        *frames_out += frames as u64;
        Ok(())
    }

    /// Pushes planar samples (one slice per channel, all the same length),
    /// appending program-format output (interleaved stereo) to `out`.
    pub fn push_planar(
        &mut self,
        planes: &[&[f32]],
        out: &mut Vec<f32>,
    ) -> Result<(), ConvertError> {
        let channels = self.layout.channels();
        let frames = planes.first().map_or(0, |p| p.len());
        if planes.len() != channels || planes.iter().any(|p| p.len() != frames) {
            return Err(ConvertError::Ragged {
                samples: frames,
                channels,
            });
        }
        if self.finished {
            return Err(ConvertError::Finished);
        }
        self.frames_in += frames as u64;
        let Self {
            layout,
            resampler,
            frames_out,
            ..
        } = self;
        match (&layout.mix, resampler.as_deref_mut()) {
            (mix, None) => {
                out.reserve(frames * CHANNELS);
                for i in 0..frames {
                    let [l, r] = planar_frame(mix, planes, i);
                    out.push(l);
                    out.push(r);
                }
                *frames_out += frames as u64;
            }
            (mix, Some(rs)) => {
                for i in 0..frames {
                    let [l, r] = planar_frame(mix, planes, i);
                    rs.push_frame(l, r, out, frames_out)?;
                }
            }
        }
        Ok(())
    }

    /// Ends the stream: flushes the resampler so that exactly
    /// [`output_len`](Self::output_len)`(frames_in, in_rate)` frames have been
    /// produced in total. Further pushes fail until [`reset`](Self::reset).
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), ConvertError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let target = Self::output_len(self.frames_in, self.in_rate);
        if let Some(rs) = self.resampler.as_deref_mut() {
            while self.frames_out < target {
                let chunk_in = rs.chunk_in;
                rs.pending.iter_mut().for_each(|p| p.resize(chunk_in, 0.0));
                rs.run(out, &mut self.frames_out, target)?;
            }
        }
        debug_assert_eq!(self.frames_out, target);
        Ok(())
    }

    /// Forgets all state and counts, ready for a new stream with the same
    /// rate and layout.
    pub fn reset(&mut self) {
        if let Some(rs) = self.resampler.as_deref_mut() {
            rs.fft.reset();
            rs.pending.iter_mut().for_each(Vec::clear);
            rs.to_skip = rs.chunk_out / 2;
        }
        self.frames_in = 0;
        self.frames_out = 0;
        self.finished = false;
    }
}

/// One frame through the downmix matrix.
#[inline]
fn downmix(matrix: &[[f32; 2]], frame: impl Iterator<Item = f32>) -> [f32; 2] {
    let mut acc = [0.0f32; 2];
    for (s, [wl, wr]) in frame.zip(matrix) {
        acc[0] += s * wl;
        acc[1] += s * wr;
    }
    acc
}

/// Frame `i` of planar input mapped to stereo. `planes` has been checked to
/// match the layout and `i` to be in range.
#[inline]
fn planar_frame(mix: &Mix, planes: &[&[f32]], i: usize) -> [f32; 2] {
    let at = |c: usize| planes.get(c).and_then(|p| p.get(i)).copied().unwrap_or(0.0);
    match mix {
        Mix::Mono => [at(0), at(0)],
        Mix::Stereo => [at(0), at(1)],
        Mix::Matrix(m) => downmix(m, (0..m.len()).map(at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    fn tone(freq: f64, rate: u32, frames: usize, amp: f64, channels: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (amp * (TAU * freq * i as f64 / f64::from(rate)).sin()) as f32;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    fn convert(rate: u32, layout: ChannelLayout, input: &[f32], block: usize) -> Vec<f32> {
        let mut c = Converter::new(rate, layout).expect("converter");
        let mut out = Vec::new();
        let ch = c.in_channels();
        for b in input.chunks(block * ch) {
            c.push_interleaved(b, &mut out).expect("push");
        }
        c.finish(&mut out).expect("finish");
        out
    }

    /// Amplitude and frequency of a sine by least squares at a trial
    /// frequency, refined over a small grid (a tiny DFT search).
    fn amplitude_at(x: &[f32], freq: f64) -> f64 {
        let (mut s, mut c) = (0.0f64, 0.0f64);
        for (i, v) in x.iter().enumerate() {
            let ph = TAU * freq * i as f64 / f64::from(SAMPLE_RATE);
            s += f64::from(*v) * ph.sin();
            c += f64::from(*v) * ph.cos();
        }
        2.0 * (s * s + c * c).sqrt() / x.len() as f64
    }

    fn left(x: &[f32]) -> Vec<f32> {
        x.iter().step_by(2).copied().collect()
    }

    fn right(x: &[f32]) -> Vec<f32> {
        x.iter().skip(1).step_by(2).copied().collect()
    }

    #[test]
    fn output_length_is_rounded_ratio_for_every_rate_and_block_size() {
        for rate in [
            8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 88_200, 96_000, 192_000, 44_101,
        ] {
            for frames in [0usize, 1, 2, 3, 147, 1000, 12_345] {
                for block in [1usize, 7, 4096] {
                    let input = vec![0.1f32; frames * 2];
                    let out = convert(rate, ChannelLayout::stereo(), &input, block);
                    let want = Converter::output_len(frames as u64, rate);
                    assert_eq!(
                        out.len() as u64,
                        want * 2,
                        "rate {rate} frames {frames} block {block}"
                    );
                }
            }
        }
    }

    #[test]
    fn output_len_rounds_half_up() {
        assert_eq!(Converter::output_len(44_100, 44_100), 48_000);
        assert_eq!(Converter::output_len(1, 44_100), 1); // 1.088
        assert_eq!(Converter::output_len(1, 96_000), 1); // 0.5 rounds up
        assert_eq!(Converter::output_len(1, 192_000), 0); // 0.25
        assert_eq!(Converter::output_len(3, 8_000), 18);
    }

    #[test]
    fn tone_44k1_keeps_frequency_level_and_timing() {
        let amp = 0.5;
        let input = tone(1000.0, 44_100, 44_100, amp, 2);
        let out = convert(44_100, ChannelLayout::stereo(), &input, 1000);
        assert_eq!(out.len(), 96_000);
        let l = left(&out);
        // Away from the edges (filter transients), the output must be the
        // same sine sampled at 48 kHz: same level, same frequency, same phase.
        let mid = &l[4_800..43_200];
        let a = amplitude_at(mid, 1000.0);
        let db = 20.0 * (a / amp).log10();
        assert!(db.abs() < 0.1, "level changed by {db} dB");
        let off = amplitude_at(mid, 1010.0);
        assert!(off < a * 0.05, "energy not at 1 kHz: {off} vs {a}");
        // Phase (timing): compare sample by sample with the ideal sine.
        let mut max_err = 0.0f64;
        for (i, v) in mid.iter().enumerate() {
            let t = (i + 4_800) as f64 / 48_000.0;
            let ideal = amp * (TAU * 1000.0 * t).sin();
            max_err = max_err.max((f64::from(*v) - ideal).abs());
        }
        assert!(
            max_err < 1e-3,
            "output is shifted or distorted: max error {max_err}"
        );
    }

    #[test]
    fn mono_22k05_goes_to_both_channels_at_unity() {
        let input = tone(440.0, 22_050, 22_050, 0.25, 1);
        let out = convert(22_050, ChannelLayout::mono(), &input, 512);
        assert_eq!(out.len(), 96_000);
        let (l, r) = (left(&out), right(&out));
        assert_eq!(l, r);
        let a = amplitude_at(&l[4_800..43_200], 440.0);
        assert!((20.0 * (a / 0.25).log10()).abs() < 0.1, "amplitude {a}");
    }

    #[test]
    fn six_channels_downmix_per_bs775() {
        // L, R, C, LFE, Ls, Rs each carry a distinct frequency.
        let freqs = [500.0, 700.0, 900.0, 60.0, 1100.0, 1300.0];
        let frames = 48_000;
        let input: Vec<f32> = (0..frames)
            .flat_map(|i| freqs.map(|f| (0.1 * (TAU * f * f64::from(i) / 48_000.0).sin()) as f32))
            .collect();
        let out = convert(
            48_000,
            ChannelLayout::default_for(6).expect("layout"),
            &input,
            999,
        );
        assert_eq!(out.len(), frames as usize * 2);
        let (l, r) = (left(&out), right(&out));
        let k = std::f64::consts::FRAC_1_SQRT_2;
        let want_l = [1.0, 0.0, k, 0.0, k, 0.0];
        let want_r = [0.0, 1.0, k, 0.0, 0.0, k];
        for (i, f) in freqs.iter().enumerate() {
            let (al, ar) = (amplitude_at(&l, *f) / 0.1, amplitude_at(&r, *f) / 0.1);
            assert!((al - want_l[i]).abs() < 1e-3, "{f} Hz left gain {al}");
            assert!((ar - want_r[i]).abs() < 1e-3, "{f} Hz right gain {ar}");
        }
    }

    #[test]
    fn planar_and_interleaved_agree() {
        let input = tone(1000.0, 44_100, 5_000, 0.3, 2);
        let a = convert(44_100, ChannelLayout::stereo(), &input, 333);
        let (l, r) = (left(&input), right(&input));
        let mut c = Converter::with_channels(44_100, 2).expect("converter");
        let mut b = Vec::new();
        for (pl, pr) in l.chunks(123).zip(r.chunks(123)) {
            c.push_planar(&[pl, pr], &mut b).expect("push");
        }
        c.finish(&mut b).expect("finish");
        assert_eq!(a, b);
    }

    #[test]
    fn passthrough_at_48k_is_bit_exact() {
        let input = tone(1234.5, 48_000, 1_000, 0.7, 2);
        assert_eq!(convert(48_000, ChannelLayout::stereo(), &input, 100), input);
    }

    #[test]
    fn ragged_input_and_push_after_finish_are_rejected() {
        let mut c = Converter::with_channels(44_100, 2).expect("converter");
        let mut out = Vec::new();
        assert!(matches!(
            c.push_interleaved(&[0.0; 3], &mut out),
            Err(ConvertError::Ragged { .. })
        ));
        assert!(matches!(
            c.push_planar(&[&[0.0; 2], &[0.0; 3]], &mut out),
            Err(ConvertError::Ragged { .. })
        ));
        c.finish(&mut out).expect("finish");
        assert!(matches!(
            c.push_interleaved(&[0.0; 2], &mut out),
            Err(ConvertError::Finished)
        ));
        c.reset();
        c.push_interleaved(&[0.0; 2], &mut out)
            .expect("push after reset");
        assert!(matches!(
            Converter::with_channels(0, 2),
            Err(ConvertError::ZeroRate)
        ));
        assert!(matches!(
            Converter::with_channels(44_100, 0),
            Err(ConvertError::NoChannels)
        ));
    }
}
