//! CMAF (ISO/IEC 23000-19) box writers for onair's audio renditions.
//!
//! Three pure functions produce every byte of an fMP4 rendition:
//!
//! - [`init_segment`]: the CMAF header (`ftyp` + `moov`), written once per rendition.
//! - [`styp`]: the segment type box that opens every CMAF segment.
//! - [`fragment`]: one CMAF chunk (`moof` + `mdat`) holding whole encoded frames.
//!
//! Part 0 of a segment is `styp` + [`fragment`], later parts are [`fragment`]
//! alone, so a segment's bytes are exactly its parts concatenated.
//!
//! # Timing contract
//!
//! The track timescale is the program clock (48 000 Hz), so program time needs no
//! conversion. *Media time* is program time plus [`TrackConfig::delay`], the codec's
//! priming (Opus pre-skip, AAC encoder delay): the encoder's output frame `k`
//! covers media time `[k * F, (k + 1) * F)`, `tfdt` carries media time, and a
//! single-entry edit list (ISO/IEC 14496-12 §8.6.6) makes a player present media
//! time `delay` as presentation time 0. For Opus the same value is the `dOps`
//! `PreSkip`, as the Opus encapsulation requires the two to agree. Both renditions
//! therefore present the same program sample at the same presentation time.
//!
//! Measured with ffmpeg 5.1 (`tests/cmaf_ffmpeg.rs`): it turns the edit list of
//! a fragmented file into a timestamp offset (first pts = -delay) but discards
//! no samples, so a plain decode is aligned for Opus (its decoder drops
//! `PreSkip`) and late by the delay for AAC; decoding by timestamp aligns both.
//!
//! # Invariants
//!
//! - One track per file, as CMAF tracks are; every sample is a sync sample.
//! - Fragments use `default-base-is-moof` and a `trun` `data_offset` that points
//!   exactly at the first payload byte of the `mdat` that follows the `moof`.
//! - No IO and no clock: the same inputs always give the same bytes.

mod fragment;
mod init;

pub use fragment::{fragment, styp};
pub use init::init_segment;

use bytes::Bytes;

/// `sample_flags` of a sync sample (ISO/IEC 14496-12 §8.8.3.1): `sample_depends_on`
/// = 2 ("does not depend on others"), `sample_is_non_sync_sample` = 0. Every
/// encoded Opus or AAC frame is independently decodable in this sense.
pub const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;

/// What went wrong while writing boxes. Configuration variants mean the track
/// cannot be packaged as configured (fix the configuration, do not retry);
/// sample variants mean this chunk is unusable (drop it and report it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ISO/IEC 14496-12 §8.3.2 forbids track id 0, and `next_track_id` must
    /// fit after it, so `u32::MAX` is unusable too. Fix the configuration.
    #[error("track id {track_id} is not usable (must be 1..u32::MAX)")]
    InvalidTrackId {
        /// The rejected track id.
        track_id: u32,
    },
    /// The timescale does not suit the codec: Opus is always 48 000 Hz (so the
    /// edit list and `PreSkip` share one unit), an audio sample entry's rate field
    /// holds at most 65 535 Hz, and 0 is never valid. Fix the configuration.
    #[error("timescale {timescale} Hz is not usable for {codec}")]
    UnsupportedTimescale {
        /// The rejected timescale.
        timescale: u32,
        /// The codec it was configured for.
        codec: &'static str,
    },
    /// The channel count cannot be signalled: Opus without a channel mapping
    /// table (family 0) carries 1 or 2 channels; AAC needs at least one. Fix
    /// the configuration.
    #[error("{channels} channels cannot be signalled for {codec}")]
    UnsupportedChannels {
        /// The rejected channel count.
        channels: u16,
        /// The codec it was configured for.
        codec: &'static str,
    },
    /// Opus `PreSkip` is a 16-bit field; the delay does not fit. Fix the
    /// configuration (an encoder's lookahead is a few hundred samples).
    #[error("delay of {delay} samples does not fit the 16-bit Opus pre-skip")]
    PreSkipTooLarge {
        /// The rejected delay, in samples at 48 kHz.
        delay: u32,
    },
    /// An AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) is at least 2 bytes.
    /// Take it from the encoder's configuration output.
    #[error("AudioSpecificConfig of {len} bytes is too short (at least 2)")]
    AudioSpecificConfigTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// Not an ISO 639-2/T code of three lowercase ASCII letters. Fix the
    /// configuration (or use [`Language::UNDETERMINED`]).
    #[error("language {text:?} is not three lowercase ASCII letters")]
    InvalidLanguage {
        /// The rejected text.
        text: String,
    },
    /// A CMAF chunk holds at least one sample. The caller
    /// asked for an empty one: skip the call.
    #[error("a fragment needs at least one sample")]
    NoSamples,
    /// A sample with duration 0 would stall the timeline. Drop the chunk; the
    /// encoder produced something it should not have.
    #[error("sample {index} of fragment {sequence_number} has duration 0")]
    ZeroDuration {
        /// The fragment's sequence number.
        sequence_number: u32,
        /// Index of the sample within the fragment.
        index: usize,
    },
    /// The fragment would exceed the 32-bit box size or `data_offset` range.
    /// Drop it: audio chunks are kilobytes, so the input is broken.
    #[error("fragment {sequence_number} is too large ({bytes} payload bytes)")]
    FragmentTooLarge {
        /// The fragment's sequence number.
        sequence_number: u32,
        /// Payload bytes it would carry.
        bytes: usize,
    },
    /// The box encoder refused a value. Not expected for validated input;
    /// treat like a configuration error.
    #[error("box encoding failed: {0}")]
    Encode(#[from] mp4_atom::Error),
}

/// The codec of a track and the configuration its sample entry carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Codec {
    /// Opus in ISOBMFF ("Encapsulation of Opus in ISO Base Media File Format"):
    /// an `Opus` sample entry with a `dOps` box. `PreSkip` is
    /// [`TrackConfig::delay`], so the two cannot disagree.
    Opus {
        /// Output channel count: 1 or 2 (channel mapping family 0).
        channels: u8,
        /// Sample rate of the encoder's input, informational (`dOps`
        /// `InputSampleRate`); decoding is always at 48 kHz.
        input_sample_rate: u32,
    },
    /// AAC-LC: an `mp4a` sample entry with an `esds` box (ISO/IEC 14496-14 §5.6)
    /// carrying the AudioSpecificConfig.
    Aac {
        /// The encoder's AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1), verbatim.
        audio_specific_config: Bytes,
        /// Channel count of the sample entry.
        channels: u16,
        /// Average bitrate in bit/s (`DecoderConfigDescriptor.avgBitrate`).
        avg_bitrate: u32,
        /// Peak bitrate in bit/s over any one-second window (`maxBitrate`).
        max_bitrate: u32,
    },
}

/// An ISO 639-2/T language code as `mdhd` stores it (three lowercase letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language([u8; 3]);

impl Language {
    /// `und`: undetermined, the ISO/IEC 14496-12 default.
    pub const UNDETERMINED: Language = Language(*b"und");

    /// Parses a three-letter lowercase ISO 639-2/T code such as `eng`.
    pub fn new(text: &str) -> Result<Self, Error> {
        match text.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_lowercase) => Ok(Self([a, b, c])),
            _ => Err(Error::InvalidLanguage {
                text: text.to_owned(),
            }),
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("und")
    }
}

impl Default for Language {
    fn default() -> Self {
        Self::UNDETERMINED
    }
}

/// Everything the CMAF header of one audio track says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackConfig {
    /// Track id, 1 for onair's single-track files; `tfhd` must repeat it.
    pub track_id: u32,
    /// Media timescale in Hz: the program rate, 48 000.
    pub timescale: u32,
    /// The codec and its decoder configuration.
    pub codec: Codec,
    /// Media time of the first presented sample: the codec priming (Opus
    /// pre-skip, AAC encoder delay) to skip. Signalled as a single-entry edit
    /// list (`media_time` = delay) and, for Opus, as `dOps` `PreSkip`.
    pub delay: u32,
    /// Language of the track (`mdhd`).
    pub language: Language,
}

/// One encoded frame: its duration in timescale units and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Duration in timescale units (960 for a 20 ms Opus frame, 1024 for AAC-LC;
    /// the final frame of a stream may be shorter).
    pub duration: u32,
    /// The encoded frame (one Opus packet, or one raw AAC access unit).
    pub data: Bytes,
}
