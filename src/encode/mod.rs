//! Encoders: the program mix (48 kHz interleaved stereo `f32`) to Opus and AAC-LC
//! access units on each rendition's media timeline.
//!
//! # Timing contract
//! Every encoder delays its output: libopus by its lookahead, fdk-aac by its
//! priming. onair never hides that delay in timestamps; it signals it (`dOps`
//! pre-skip and an edit list, ISO/IEC 14496-12 §8.6.6) so both renditions decode
//! to the same program time. To let part boundaries fall on frame boundaries in
//! both renditions, each encoder first consumes enough silence to round its delay
//! up to a whole number of frames:
//!
//! ```text
//! media time = program time + delay,   delay = k × frame length
//! ```
//!
//! Access unit `n` covers media time `[n × F, (n + 1) × F)`. A 320 ms part starting
//! at program time `t` therefore starts at media time `t + delay` in both
//! renditions, on a frame boundary (15 360 = 16 × 960 = 15 × 1024).

mod aac;
mod opus;

pub use aac::{AacConfig, AacEncoder};
pub use opus::{OpusApplication, OpusConfig, OpusEncoder};

use bytes::Bytes;

use crate::time::MediaTime;

/// One encoded access unit on a rendition's media timeline (48 kHz ticks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Media time of the first sample this unit decodes to.
    pub media_time: MediaTime,
    /// Samples this unit decodes to (the codec frame length).
    pub duration: u32,
    /// The raw access unit (no ADTS header, no Ogg framing).
    pub data: Bytes,
}

/// What the CMAF init segment needs to describe an encoder's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecInfo {
    /// Opus; `pre_skip` equals the encoder's whole-frame delay.
    Opus {
        /// Channel count of the coded stream.
        channels: u8,
        /// Samples to discard at the start (the `dOps` PreSkip field).
        pre_skip: u16,
    },
    /// AAC-LC with the encoder's AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
    Aac {
        /// Channel count of the coded stream.
        channels: u16,
        /// AudioSpecificConfig bytes for the `esds` DecoderSpecificInfo.
        audio_specific_config: Bytes,
        /// Target bitrate in bits per second.
        bitrate: u32,
    },
}

/// Errors from an encoder. Every one of them ends the broadcast: the codec
/// library refused its configuration or its input, which a retry cannot fix.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The codec library rejected the configuration (bitrate, complexity...).
    #[error("{codec} encoder rejected its configuration: {reason}")]
    Config {
        /// Codec name.
        codec: &'static str,
        /// The library's message.
        reason: String,
    },
    /// The codec library failed on a frame of input.
    #[error("{codec} encoder failed at media time {}: {reason}", media_time.samples())]
    Encode {
        /// Codec name.
        codec: &'static str,
        /// Media time of the frame that failed.
        media_time: MediaTime,
        /// The library's message.
        reason: String,
    },
}

/// The interface the packager drives: PCM in, access units out.
pub trait AudioEncoder: Send {
    /// Short name of the codec, for logs and errors.
    fn codec_name(&self) -> &'static str;
    /// Samples per access unit.
    fn frame_len(&self) -> u32;
    /// Media time of program sample 0: a whole number of frames.
    fn delay(&self) -> u32;
    /// Description for the CMAF sample entry.
    fn info(&self) -> CodecInfo;
    /// Consumes interleaved stereo program samples and appends every access
    /// unit that became complete.
    fn push(&mut self, pcm: &[f32], out: &mut Vec<Packet>) -> Result<(), EncodeError>;
    /// Ends the stream: encodes silence until the emitted units cover every
    /// program sample pushed so far (media time `pushed + delay`).
    fn finish(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError>;
}

/// Accumulates interleaved input until whole frames are available, and keeps
/// the count of program samples pushed and frames emitted.
#[derive(Debug)]
struct FrameQueue {
    frame_len: usize,
    pending: Vec<f32>,
    /// Program samples (per channel) pushed by the caller, without priming.
    pushed: u64,
    /// Access units emitted so far.
    frames_out: u64,
}

impl FrameQueue {
    fn new(frame_len: usize, priming: usize) -> Self {
        let mut pending = Vec::with_capacity(frame_len * crate::time::CHANNELS * 4);
        pending.resize(priming * crate::time::CHANNELS, 0.0);
        Self {
            frame_len,
            pending,
            pushed: 0,
            frames_out: 0,
        }
    }

    fn frame_values(&self) -> usize {
        self.frame_len * crate::time::CHANNELS
    }

    /// Calls `encode` for every whole frame queued; `encode` gets the frame's
    /// media time and its interleaved samples.
    fn drain<E>(&mut self, mut encode: impl FnMut(u64, &[f32]) -> Result<(), E>) -> Result<(), E> {
        let n = self.frame_values();
        let whole = self.pending.len() / n * n;
        for frame in self.pending[..whole].chunks_exact(n) {
            encode(self.frames_out * self.frame_len as u64, frame)?;
            self.frames_out += 1;
        }
        self.pending.drain(..whole);
        Ok(())
    }

    fn push(&mut self, pcm: &[f32]) {
        self.pushed += (pcm.len() / crate::time::CHANNELS) as u64;
        self.pending.extend_from_slice(pcm);
    }

    /// Appends one frame of silence that is not program time (drains encoders
    /// that hold frames back).
    fn pad_frame(&mut self) {
        let len = self.pending.len() + self.frame_values();
        self.pending.resize(len, 0.0);
    }

    /// Pads with silence so that the frames cover media time `pushed + delay`.
    fn pad_to_end(&mut self, delay: u64) {
        let end = self.pushed + delay;
        let covered = (self.frames_out * self.frame_len as u64)
            + (self.pending.len() / crate::time::CHANNELS) as u64;
        let frames_needed = end.div_ceil(self.frame_len as u64);
        let target = frames_needed.max(self.frames_out) * self.frame_len as u64;
        if target > covered {
            let extra = (target - covered) as usize * crate::time::CHANNELS;
            self.pending.resize(self.pending.len() + extra, 0.0);
        }
    }
}

/// One access unit of digital silence from `encoder`, taken after its
/// priming so that it decodes to silence on its own: what a gap segment
/// (RFC 8216bis 4.4.4.7) is made of. Use a fresh encoder: this consumes it.
pub fn silent_unit(encoder: &mut dyn AudioEncoder) -> Result<Bytes, EncodeError> {
    let frame = encoder.frame_len() as usize;
    let silence = vec![0.0f32; frame * crate::time::CHANNELS];
    let mut out = Vec::new();
    // Past the delay, and a few frames more so the codec has settled.
    let frames = (encoder.delay() as usize).div_ceil(frame) + 4;
    for _ in 0..frames {
        encoder.push(&silence, &mut out)?;
    }
    out.pop().map(|p| p.data).ok_or(EncodeError::Encode {
        codec: encoder.codec_name(),
        media_time: MediaTime::ZERO,
        reason: "no access unit from a run of silence".into(),
    })
}

/// Rounds `lookahead` up to a whole number of frames: returns
/// `(silence to prepend, delay)`.
fn whole_frame_delay(lookahead: u32, frame_len: u32) -> (u32, u32) {
    let delay = lookahead.div_ceil(frame_len).max(1) * frame_len;
    (delay - lookahead, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frame_delay_rounds_up() {
        assert_eq!(whole_frame_delay(312, 960), (648, 960));
        assert_eq!(whole_frame_delay(2048, 1024), (0, 2048));
        assert_eq!(whole_frame_delay(0, 1024), (1024, 1024));
    }

    #[test]
    fn frame_queue_pads_to_cover_the_end() {
        let mut q = FrameQueue::new(960, 648);
        q.push(&vec![0.5; 1000 * 2]);
        let mut times = Vec::new();
        q.drain(|t, f| {
            assert_eq!(f.len(), 1920);
            times.push(t);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(times, vec![0]);
        q.pad_to_end(960);
        q.drain(|t, _| {
            times.push(t);
            Ok::<_, ()>(())
        })
        .unwrap();
        // 1000 program samples + 960 delay = 1960 media samples: three frames.
        assert_eq!(times, vec![0, 960, 1920]);
        assert!(q.pending.is_empty());
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    fn tone(n: usize) -> Vec<f32> {
        (0..n)
            .flat_map(|i| {
                let v = 0.25 * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin();
                [v, v]
            })
            .collect()
    }

    fn check_covers(enc: &mut dyn AudioEncoder, program: usize) {
        let mut out = Vec::new();
        for chunk in tone(program).chunks(2 * 700) {
            enc.push(chunk, &mut out).unwrap();
        }
        enc.finish(&mut out).unwrap();
        let f = u64::from(enc.frame_len());
        for (i, p) in out.iter().enumerate() {
            assert_eq!(
                p.media_time,
                MediaTime::from_samples(i as u64 * f),
                "{} unit {i}",
                enc.codec_name()
            );
            assert_eq!(u64::from(p.duration), f);
            assert!(!p.data.is_empty());
        }
        let end = out.len() as u64 * f;
        let need = program as u64 + u64::from(enc.delay());
        assert!(
            end >= need && end < need + f,
            "{} covers {end}, needs {need}",
            enc.codec_name()
        );
        assert_eq!(u64::from(enc.delay()) % f, 0);
    }

    #[test]
    fn opus_units_cover_the_program_exactly() {
        let mut enc = OpusEncoder::new(&OpusConfig::default()).unwrap();
        assert!(matches!(
            enc.info(),
            CodecInfo::Opus {
                pre_skip: 960,
                channels: 2
            }
        ));
        check_covers(&mut enc, 48_000 + 123);
    }

    #[test]
    fn aac_units_cover_the_program_exactly() {
        let mut enc = AacEncoder::new(&AacConfig::default()).unwrap();
        let CodecInfo::Aac {
            audio_specific_config,
            ..
        } = enc.info()
        else {
            panic!("not aac")
        };
        // AAC-LC (object type 2), 48 kHz (index 3), stereo: 0x11 0x90.
        assert_eq!(&audio_specific_config[..2], &[0x11, 0x90]);
        check_covers(&mut enc, 48_000 + 123);
    }
}
