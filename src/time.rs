//! Program time: integer sample counts at 48 kHz.
//!
//! Every stage of onair speaks one clock: the number of samples at
//! [`SAMPLE_RATE`] since the broadcast started. The CMAF track timescale is the
//! same 48 000, so `tfdt` and sample durations need no conversion. Floats appear
//! only when time is rendered as text (playlists, logs).

use std::time::{Duration, Instant};

/// The program sample rate in Hz. Every feed is resampled to it.
pub const SAMPLE_RATE: u32 = 48_000;

/// Program channel count: the mix is always stereo.
pub const CHANNELS: usize = 2;

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

/// The program clock of a live run: program time is the monotonic time
/// elapsed since the run started, in samples. Ingest stamps packet arrivals
/// with it and the pipeline is paced by it, so both agree on "now".
#[derive(Debug, Clone, Copy)]
pub struct ProgramClock {
    start: Instant,
}

impl ProgramClock {
    /// A clock whose program time 0 is now.
    pub fn start() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A clock whose program time 0 is `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self { start }
    }

    /// Program time now, in samples at 48 kHz.
    pub fn now(&self) -> u64 {
        self.at(Instant::now())
    }

    /// Program time at `instant` (0 before the start).
    pub fn at(&self, instant: Instant) -> u64 {
        let elapsed = instant.saturating_duration_since(self.start);
        rescale(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            1_000_000_000,
            SAMPLE_RATE,
        )
    }

    /// The instant of program time `t`.
    pub fn instant(&self, t: u64) -> Instant {
        self.start + Duration::from_nanos(rescale(t, SAMPLE_RATE, 1_000_000_000))
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
        assert_eq!(clock.at(start), 0);
        assert_eq!(clock.at(start + Duration::from_millis(20)), 960);
        assert_eq!(clock.instant(48_000), start + Duration::from_secs(1));
        // Before the start is program time 0, never a wrap.
        assert_eq!(
            clock.at(start.checked_sub(Duration::from_secs(1)).unwrap_or(start)),
            0
        );
    }

    #[test]
    fn seconds_text_rounds_up_partial_millis() {
        assert_eq!(seconds_text(15_360), "0.320");
        assert_eq!(seconds_text(92_160), "1.920");
        assert_eq!(seconds_text(1), "0.001");
        assert_eq!(seconds_text(0), "0.000");
    }
}
