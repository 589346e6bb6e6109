//! AAC-LC encoding with the Fraunhofer FDK AAC library, raw access units
//! (ISO/IEC 14496-3), 1024 samples per frame.

use bytes::Bytes;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};

use super::{AudioEncoder, CodecInfo, EncodeError, FrameQueue, Packet, whole_frame_delay};
use crate::time::{CHANNELS, MediaTime, SAMPLE_RATE};

/// Samples per AAC-LC frame.
pub const AAC_FRAME: u32 = 1024;

/// AAC-LC encoder settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// Constant bitrate in bits per second. Default 96 kb/s stereo.
    pub bitrate: u32,
}

impl Default for AacConfig {
    fn default() -> Self {
        Self { bitrate: 96_000 }
    }
}

/// An fdk-aac AAC-LC stereo encoder producing raw access units.
pub struct AacEncoder {
    inner: Encoder,
    queue: FrameQueue,
    delay: u32,
    bitrate: u32,
    asc: Bytes,
    pcm: Vec<i16>,
    scratch: Vec<u8>,
    /// Access units emitted: the library may hold frames back, so the media
    /// time of a unit is counted on the output side.
    units: u64,
}

impl std::fmt::Debug for AacEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacEncoder")
            .field("delay", &self.delay)
            .field("bitrate", &self.bitrate)
            .finish()
    }
}

fn config_err(e: fdk_aac::enc::EncoderError) -> EncodeError {
    EncodeError::Config {
        codec: "aac",
        reason: e.to_string(),
    }
}

impl AacEncoder {
    /// Opens an AAC-LC stereo 48 kHz CBR encoder with `cfg`.
    pub fn new(cfg: &AacConfig) -> Result<Self, EncodeError> {
        let inner = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(cfg.bitrate),
            sample_rate: SAMPLE_RATE,
            transport: Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(config_err)?;
        let info = inner.info().map_err(config_err)?;
        if info.frameLength != AAC_FRAME {
            return Err(EncodeError::Config {
                codec: "aac",
                reason: format!("frame length {} instead of {AAC_FRAME}", info.frameLength),
            });
        }
        let conf_len = (info.confSize as usize).min(info.confBuf.len());
        let asc = Bytes::copy_from_slice(&info.confBuf[..conf_len]);
        // nDelay is the decoder output delay in samples (no SBR in AAC-LC, so
        // it equals nDelayCore): what an edit list must skip.
        let (priming, delay) = whole_frame_delay(info.nDelay, AAC_FRAME);
        Ok(Self {
            inner,
            queue: FrameQueue::new(AAC_FRAME as usize, priming as usize),
            delay,
            bitrate: cfg.bitrate,
            asc,
            pcm: vec![0; AAC_FRAME as usize * CHANNELS],
            scratch: vec![0; (info.maxOutBufBytes as usize).max(2048)],
            units: 0,
        })
    }

    fn encode_queued(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        let Self {
            inner,
            queue,
            pcm,
            scratch,
            units,
            ..
        } = self;
        queue.drain(|media_time, frame| {
            let media_time = MediaTime::from_samples(media_time);
            for (dst, src) in pcm.iter_mut().zip(frame) {
                // Saturating round to 16 bits; the limiter keeps the mix inside.
                *dst = (src * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
            }
            let fail = |reason: String| EncodeError::Encode {
                codec: "aac",
                media_time,
                reason,
            };
            let mut input: &[i16] = pcm;
            // The library buffers internally: it may take a frame in more than
            // one call and emits at most one access unit per call.
            while !input.is_empty() {
                let r = inner
                    .encode(input, scratch)
                    .map_err(|e| fail(e.to_string()))?;
                if r.input_consumed == 0 && r.output_size == 0 {
                    return Err(fail("encoder made no progress".into()));
                }
                input = input.get(r.input_consumed..).unwrap_or(&[]);
                if r.output_size > 0 {
                    out.push(Packet {
                        media_time: MediaTime::from_samples(*units * u64::from(AAC_FRAME)),
                        duration: AAC_FRAME,
                        data: Bytes::copy_from_slice(&scratch[..r.output_size]),
                    });
                    *units += 1;
                }
            }
            Ok(())
        })?;
        Ok(())
    }
}

impl AudioEncoder for AacEncoder {
    fn codec_name(&self) -> &'static str {
        "aac"
    }

    fn frame_len(&self) -> u32 {
        AAC_FRAME
    }

    fn delay(&self) -> u32 {
        self.delay
    }

    fn info(&self) -> CodecInfo {
        CodecInfo::Aac {
            channels: CHANNELS as u16,
            audio_specific_config: self.asc.clone(),
            bitrate: self.bitrate,
        }
    }

    fn push(&mut self, pcm: &[f32], out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        self.queue.push(pcm);
        self.encode_queued(out)
    }

    fn finish(&mut self, out: &mut Vec<Packet>) -> Result<(), EncodeError> {
        let end = self.queue.pushed + u64::from(self.delay);
        self.queue.pad_to_end(u64::from(self.delay));
        self.encode_queued(out)?;
        // Frames the library still holds come out as it is fed silence.
        let mut guard = 0;
        while self.units * u64::from(AAC_FRAME) < end {
            guard += 1;
            if guard > 16 {
                return Err(EncodeError::Encode {
                    codec: "aac",
                    media_time: MediaTime::from_samples(self.units * u64::from(AAC_FRAME)),
                    reason: "encoder did not drain".into(),
                });
            }
            self.queue.pad_frame();
            self.encode_queued(out)?;
        }
        Ok(())
    }
}
