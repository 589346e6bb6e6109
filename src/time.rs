//! Program time: integer sample counts at 48 kHz.
//!
//! Every stage of onair speaks one clock: the number of samples at
//! [`SAMPLE_RATE`] since the broadcast started. The CMAF track timescale is the
//! same 48 000, so `tfdt` and sample durations need no conversion. Floats appear
//! only when time is rendered as text (playlists, logs).
//!
//! Points in time cross module boundaries as [`ProgramTime`] (the program
//! timeline) or [`MediaTime`] (a rendition's track timeline, shifted by its
//! encoder's delay), never as a bare `u64`: a host timestamp in ms or a
//! media time cannot be passed where program samples are expected.
//! Durations stay plain `u64` sample counts.

use std::time::{Duration, Instant};

/// The program sample rate in Hz. Every feed is resampled to it.
pub const SAMPLE_RATE: u32 = 48_000;

/// Program channel count: the mix is always stereo.
pub const CHANNELS: usize = 2;

/// The arithmetic both timelines share: construction from and reading of a
/// sample count, saturating moves and the distance between two points.
macro_rules! timeline_point {
    ($name:ident, $what:literal) => {
        impl $name {
            #[doc = concat!($what, " 0.")]
            pub const ZERO: Self = Self(0);

            #[doc = concat!("The ", $what, " `samples` samples after ", $what, " 0.")]
            pub const fn from_samples(samples: u64) -> Self {
                Self(samples)
            }

            #[doc = concat!("Samples since ", $what, " 0.")]
            pub const fn samples(self) -> u64 {
                self.0
            }

            /// `samples` later (saturating).
            #[must_use]
            pub const fn plus(self, samples: u64) -> Self {
                Self(self.0.saturating_add(samples))
            }

            #[doc = concat!("`samples` earlier (saturating at ", $what, " 0).")]
            #[must_use]
            pub const fn minus(self, samples: u64) -> Self {
                Self(self.0.saturating_sub(samples))
            }

            /// Samples from `earlier` to this time; 0 if `earlier` is not earlier.
            pub const fn since(self, earlier: Self) -> u64 {
                self.0.saturating_sub(earlier.0)
            }
        }
    };
}

/// A point on the program timeline: samples at 48 kHz since program time 0,
/// where the broadcast starts.
///
/// Ingest stamps arrivals with it, the mixer and the live feeds are clocked
/// by it, and the packager cuts parts at it. Arithmetic saturates: a time
/// never wraps around (`u64` samples last millions of years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProgramTime(u64);

timeline_point!(ProgramTime, "program time");

impl ProgramTime {
    /// This program time on the track timeline of a rendition whose encoder
    /// delays its output by `delay` samples (saturating).
    pub const fn media(self, delay: u32) -> MediaTime {
        MediaTime(self.0.saturating_add(delay as u64))
    }
}

/// A point on a rendition's track timeline: program time + the encoder's
/// whole-frame delay, in 48 kHz samples (the CMAF timescale); what `tfdt`
/// carries. Media time 0 is the first priming sample of a rendition.
///
/// A separate type from [`ProgramTime`] because the two differ by the delay
/// (960 samples for Opus, 2048 for AAC): mixing them up shifts a rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MediaTime(u64);

timeline_point!(MediaTime, "media time");

impl MediaTime {
    /// The program time of this media time on a rendition delayed by
    /// `delay` samples; program time 0 for the priming before it.
    pub const fn program(self, delay: u32) -> ProgramTime {
        ProgramTime(self.0.saturating_sub(delay as u64))
    }
}

/// Converts `value` ticks of a clock running at `from` Hz into ticks of a clock
/// at `to` Hz, rounding down. Multiplies before dividing, in 128 bits, so the
/// result is exact whenever it fits in a `u64`; a result that does not fit
/// (only possible when `to > from`, beyond 2^64 ticks of the faster clock)
/// saturates at `u64::MAX` rather than wrapping.
pub fn rescale(value: u64, from: u32, to: u32) -> u64 {
    assert!(from > 0, "rescale from a zero rate");
    let exact = (value as u128 * to as u128) / from as u128;
    u64::try_from(exact).unwrap_or(u64::MAX)
}

/// Renders a sample count at 48 kHz as seconds with millisecond precision, as
/// playlists want (`EXTINF`, `PART-TARGET`): `15360` becomes `"0.320"`.
pub fn seconds_text(samples: u64) -> String {
    let ms = rescale(samples, SAMPLE_RATE, 1000);
    // Playlist durations must not understate: round up a sub-millisecond rest.
    let ms = if rescale(ms, 1000, SAMPLE_RATE) < samples {
        ms + 1
    } else {
        ms
    };
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Milliseconds of program time, rounded down.
pub fn millis(samples: u64) -> u64 {
    rescale(samples, SAMPLE_RATE, 1000)
}

/// The program clock of a live run: program time advances with the
/// monotonic clock from an anchor, in samples. Ingest stamps packet
/// arrivals with it and the pipeline is paced by it, so both agree on "now".
///
/// A live run anchors it once, at its start, to the stream's wall-clock
/// timeline (program time = wall clock − stream epoch); from then on only
/// the monotonic clock moves it, so a step of the wall clock during the run
/// (an NTP correction, an operator's `date`) is not followed into the
/// timeline.
#[derive(Debug, Clone, Copy)]
pub struct ProgramClock {
    start: Instant,
    origin: ProgramTime,
}

impl ProgramClock {
    /// A clock whose program time 0 is now.
    pub fn start() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock whose program time 0 is `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self::anchored(start, ProgramTime::ZERO)
    }

    /// A clock that reads `program` at `instant`. (An [`Instant`] cannot
    /// reach back to a stream epoch before the machine booted, so the
    /// anchor is a pair rather than an instant of program time 0.)
    pub fn anchored(instant: Instant, program: ProgramTime) -> Self {
        Self {
            start: instant,
            origin: program,
        }
    }

    /// Program time now.
    pub fn now(&self) -> ProgramTime {
        self.at(Instant::now())
    }

    /// Program time at `instant` (the anchor's program time before the
    /// anchor).
    pub fn at(&self, instant: Instant) -> ProgramTime {
        let elapsed = instant.saturating_duration_since(self.start);
        self.origin.plus(rescale(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            1_000_000_000,
            SAMPLE_RATE,
        ))
    }

    /// The instant of program time `t` (the anchor for a time before it).
    pub fn instant(&self, t: ProgramTime) -> Instant {
        self.start + Duration::from_nanos(rescale(t.since(self.origin), SAMPLE_RATE, 1_000_000_000))
    }
}

/// Where the live loop reads the time and waits for its next tick: the
/// wall clock in a broadcast ([`WallClock`]), simulated time in tests
/// ([`SimulatedClock`]), so that a test drives a live run without timing
/// the scheduler.
pub trait Pacer: Send + Sync {
    /// The time now.
    fn now(&self) -> Instant;

    /// Returns at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant);

    /// The wall clock, milliseconds since the Unix epoch, where the pacer
    /// has one (to notice a step of the wall clock); `None` in simulated
    /// time.
    fn unix_ms(&self) -> Option<i64> {
        None
    }
}

/// The machine's monotonic clock; sleeping blocks the calling thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl Pacer for WallClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
    }

    fn unix_ms(&self) -> Option<i64> {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
    }
}

/// Simulated time: it stands still until someone sleeps, and sleeping moves
/// it to the deadline at once.
#[derive(Debug)]
pub struct SimulatedClock {
    now: std::sync::Mutex<Instant>,
}

impl SimulatedClock {
    /// A clock that reads `start` until it is advanced.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            now: std::sync::Mutex::new(start),
        }
    }

    /// Moves the clock forward by `by` (a stall, as far as a sleeper can
    /// tell).
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Pacer for SimulatedClock {
    fn now(&self) -> Instant {
        *self.lock()
    }

    fn sleep_until(&self, deadline: Instant) {
        let mut now = self.lock();
        *now = (*now).max(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_time_moves_only_when_slept_or_advanced() {
        let start = Instant::now();
        let clock = SimulatedClock::starting_at(start);
        assert_eq!(clock.now(), start);
        clock.sleep_until(start + Duration::from_millis(20));
        assert_eq!(clock.now(), start + Duration::from_millis(20));
        // A deadline in the past does not move it back.
        clock.sleep_until(start);
        assert_eq!(clock.now(), start + Duration::from_millis(20));
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now(), start + Duration::from_millis(2020));
    }

    #[test]
    fn rescale_is_exact_and_floors() {
        assert_eq!(rescale(44_100, 44_100, 48_000), 48_000);
        assert_eq!(rescale(1, 48_000, 1000), 0);
        assert_eq!(rescale(u64::MAX, 48_000, 48_000), u64::MAX);
        assert_eq!(rescale(u64::MAX, 48_000, 1000), u64::MAX / 48);
    }

    #[test]
    fn rescale_saturates_at_the_overflow_edge() {
        // The largest value whose result still fits is exact...
        let edge = u64::MAX / 1_000_000_000 * 48_000;
        let fits = rescale(edge, 48_000, 1_000_000_000);
        assert_eq!(u128::from(fits), u128::from(edge) * 1_000_000_000 / 48_000);
        // ...and beyond it the result saturates instead of wrapping.
        assert_eq!(rescale(u64::MAX, 48_000, 1_000_000_000), u64::MAX);
        assert_eq!(rescale(u64::MAX / 2 + 1, 1, 2), u64::MAX);
        assert_eq!(rescale(u64::MAX / 2, 1, 2), u64::MAX - 1);
    }

    #[test]
    fn program_clock_counts_samples_from_its_start() {
        let start = Instant::now();
        let clock = ProgramClock::starting_at(start);
        assert_eq!(clock.at(start), ProgramTime::ZERO);
        assert_eq!(
            clock.at(start + Duration::from_millis(20)),
            ProgramTime::from_samples(960)
        );
        assert_eq!(
            clock.instant(ProgramTime::from_samples(48_000)),
            start + Duration::from_secs(1)
        );
        // Before the start is program time 0, never a wrap.
        assert_eq!(
            clock.at(start.checked_sub(Duration::from_secs(1)).unwrap_or(start)),
            ProgramTime::ZERO
        );
    }

    #[test]
    fn seconds_text_rounds_up_partial_millis() {
        assert_eq!(seconds_text(15_360), "0.320");
        assert_eq!(seconds_text(92_160), "1.920");
        assert_eq!(seconds_text(1), "0.001");
        assert_eq!(seconds_text(0), "0.000");
    }

    #[test]
    fn program_time_arithmetic_saturates() {
        let t = ProgramTime::from_samples(48_000);
        assert_eq!(t.samples(), 48_000);
        assert_eq!(ProgramTime::default(), ProgramTime::ZERO);
        assert_eq!(t.plus(960), ProgramTime::from_samples(48_960));
        assert_eq!(t.minus(960), ProgramTime::from_samples(47_040));
        assert_eq!(t.minus(u64::MAX), ProgramTime::ZERO);
        assert_eq!(
            ProgramTime::from_samples(u64::MAX).plus(1),
            ProgramTime::from_samples(u64::MAX)
        );
        assert_eq!(t.since(ProgramTime::from_samples(47_000)), 1_000);
        assert_eq!(ProgramTime::ZERO.since(t), 0);
        assert!(ProgramTime::ZERO < t);
    }

    #[test]
    fn media_time_is_program_time_plus_the_delay() {
        let t = ProgramTime::from_samples(15_360);
        assert_eq!(t.media(2048), MediaTime::from_samples(17_408));
        assert_eq!(t.media(2048).program(2048), t);
        assert_eq!(ProgramTime::ZERO.media(960), MediaTime::from_samples(960));
        // The priming before the delay maps to program time 0.
        assert_eq!(MediaTime::from_samples(500).program(960), ProgramTime::ZERO);
        assert_eq!(
            ProgramTime::from_samples(u64::MAX).media(960),
            MediaTime::from_samples(u64::MAX)
        );
        let m = MediaTime::from_samples(1_920);
        assert_eq!(m.plus(960).samples(), 2_880);
        assert_eq!(m.minus(u64::MAX), MediaTime::ZERO);
        assert_eq!(m.since(MediaTime::from_samples(960)), 960);
        assert_eq!(MediaTime::ZERO.since(m), 0);
    }
}
