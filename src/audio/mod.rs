//! Audio: decoding, resampling and mixing on the 48 kHz program clock.
//!
//! Data flows `source` → `resample` → `mix` → `limiter`:
//! - [`source`] decodes files (WAV, FLAC, MP3, AAC, MP4) into program-format
//!   blocks stamped with program time;
//! - [`resample`] converts any rate and channel layout to 48 kHz stereo,
//!   sample-exactly; live ingest paths reuse its [`Converter`];
//! - [`mix`] sums feeds on the caller-driven program clock, with ramped gain
//!   and mute;
//! - [`limiter`] keeps the sum below the ceiling with no added delay.
//!
//! Program format everywhere: interleaved `f32` stereo at
//! [`SAMPLE_RATE`](crate::time::SAMPLE_RATE), time as `u64` frames.

pub mod decode;
pub mod limiter;
pub mod live;
pub mod mix;
pub mod resample;
pub mod source;

pub use decode::{AacConfig, DecodeError, Decoded, PacketDecoder};
pub use limiter::{Limiter, LimiterConfig};
pub use live::{Anchor, FeedState, LiveError, LiveFeed, LiveFeedConfig, LiveStats};
pub use mix::{Dropped, FeedConfig, FeedId, Level, MixReturn, Mixer, MixerConfig};
pub use resample::{ChannelLayout, ConvertError, Converter, Speaker};
pub use source::{FileSource, NativeDuration, PcmBlock, SourceError, SourceOptions};
