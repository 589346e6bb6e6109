//! Program time: integer sample counts at 48 kHz.
//!
//! Every stage of onair speaks one clock: the number of samples at
//! [`SAMPLE_RATE`] since the broadcast started. The CMAF track timescale is the
//! same 48 000, so `tfdt` and sample durations need no conversion. Floats appear
//! only when time is rendered as text (playlists, logs).

/// The program sample rate in Hz. Every feed is resampled to it.
pub const SAMPLE_RATE: u32 = 48_000;

/// Program channel count: the mix is always stereo.
pub const CHANNELS: usize = 2;

/// Converts `value` ticks of a clock running at `from` Hz into ticks of a clock
/// at `to` Hz, rounding down. Multiplies before dividing, in 128 bits, so it is
/// exact for every `u64` input.
pub fn rescale(value: u64, from: u32, to: u32) -> u64 {
    assert!(from > 0, "rescale from a zero rate");
    ((value as u128 * to as u128) / from as u128) as u64
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_is_exact_and_floors() {
        assert_eq!(rescale(44_100, 44_100, 48_000), 48_000);
        assert_eq!(rescale(1, 48_000, 1000), 0);
        assert_eq!(rescale(u64::MAX, 48_000, 48_000), u64::MAX);
    }

    #[test]
    fn seconds_text_rounds_up_partial_millis() {
        assert_eq!(seconds_text(15_360), "0.320");
        assert_eq!(seconds_text(92_160), "1.920");
        assert_eq!(seconds_text(1), "0.001");
        assert_eq!(seconds_text(0), "0.000");
    }
}
