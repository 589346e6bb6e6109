//! Opus encoding with libopus (RFC 6716), 20 ms frames.

use bytes::Bytes;

use super::{AudioEncoder, CodecInfo, EncodeError, FrameQueue, Packet, whole_frame_delay};
use crate::time::{MediaTime, SAMPLE_RATE};

/// Samples per Opus frame: 20 ms at 48 kHz.
pub const OPUS_FRAME: u32 = 960;

/// Largest Opus packet (RFC 6716 §3.2.1 bounds a frame at 1275 bytes; two
/// frames plus TOC and lengths stay under this).
const MAX_PACKET: usize = 4000;

/// The libopus application mode (`OPUS_SET_APPLICATION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpusApplication {
    /// Best for speech intelligibility.
    Voip,
    /// Best for general audio, music and mixed programs. The default: a mix of
    /// several hosts and hold music is not plain speech.
    #[default]
    Audio,
    /// Lowest delay; fewer coding tools.
    LowDelay,
}

/// Opus encoder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate in bits per second. Default 64 kb/s.
    pub bitrate: u32,
    /// Encoder complexity 0..=10. Default 10 (best quality; cheap for audio only).
    pub complexity: u8,
    /// Application mode. Default [`OpusApplication::Audio`].
    pub application: OpusApplication,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            bitrate: 64_000,
            complexity: 10,
            application: OpusApplication::Audio,
        }
    }
}

/// A libopus encoder producing 20 ms stereo packets on the media timeline.
pub struct OpusEncoder {
    inner: opus::Encoder,
    queue: FrameQueue,
    delay: u32,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("delay", &self.delay)
            .finish()
    }
}

fn config_err(e: opus::Error) -> EncodeError {
    EncodeError::Config {
        codec: "opus",
        reason: e.to_string(),
    }
}

impl OpusEncoder {
    /// Opens a stereo 48 kHz encoder with `cfg`.
    pub fn new(cfg: &OpusConfig) -> Result<Self, EncodeError> {
        let app = match cfg.application {
            OpusApplication::Voip => opus::Application::Voip,
            OpusApplication::Audio => opus::Application::Audio,
            OpusApplication::LowDelay => opus::Application::LowDelay,
        };
        let mut inner =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Stereo, app).map_err(config_err)?;
        inner
            .set_bitrate(opus::Bitrate::Bits(cfg.bitrate as i32))
            .map_err(config_err)?;
        inner
            .set_complexity(i32::from(cfg.complexity.min(10)))
            .map_err(config_err)?;
        let lookahead = inner.get_lookahead().map_err(config_err)?;
        let lookahead = u32::try_from(lookahead).map_err(|_| EncodeError::Config {
            codec: "opus",
            reason: format!("negative lookahead {lookahead}"),
        })?;
        let (priming, delay) = whole_frame_delay(lookahead, OPUS_FRAME);
        Ok(Self {
            inner,
            queue: FrameQueue::new(OPUS_FRAME as usize, priming as usize),
            delay,
            scratch: vec![0; MAX_PACKET],
        })
    }

    fn encode_queued(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        let Self {
            inner,
            queue,
            scratch,
            ..
        } = self;
        queue.drain(|media_time, frame| {
            let media_time = MediaTime::from_samples(media_time);
            let n = inner
                .encode_float(frame, scratch)
                .map_err(|e| EncodeError::Encode {
                    codec: "opus",
                    media_time,
                    reason: e.to_string(),
                })?;
            out.push(Packet {
                media_time,
                duration: OPUS_FRAME,
                data: Bytes::copy_from_slice(&scratch[..n]),
            });
            Ok(())
        })
    }
}

impl AudioEncoder for OpusEncoder {
    fn codec_name(&self) -> &'static str {
        "opus"
    }

    fn frame_len(&self) -> u32 {
        OPUS_FRAME
    }

    fn delay(&self) -> u32 {
        self.delay
    }

    fn info(&self) -> CodecInfo {
        CodecInfo::Opus {
            channels: 2,
            // The delay is a few frames at most (960 with libopus defaults).
            pre_skip: u16::try_from(self.delay).unwrap_or(u16::MAX),
        }
    }

    fn push(&mut self, pcm: &[f32], out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        self.queue.push(pcm);
        self.encode_queued(out)
    }

    fn finish(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        self.queue.pad_to_end(u64::from(self.delay));
        self.encode_queued(out)
    }
}
