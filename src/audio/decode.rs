//! Packet decoding for live ingest: one compressed audio packet in, PCM out.
//!
//! An RTMP/FLV publisher sends AAC as an `AudioSpecificConfig` (the sequence
//! header) followed by raw access units, and MP3 as whole frames.
//! [`PacketDecoder`] turns each such packet into interleaved `f32` at the
//! stream's own rate and channel count ([`Decoded`]), using Symphonia's codecs.
//! Conversion to the program format is the caller's (see
//! [`LiveFeed`](crate::audio::LiveFeed)).
//!
//! # What is supported
//! - AAC-LC (audio object type 2), mono or stereo, 1024-sample frames.
//! - HE-AAC v1/v2 with explicit signalling (object type 5 or 29 over an LC
//!   core): Symphonia 0.5 has no SBR or PS tool, so the LC core is decoded and
//!   the SBR/PS payload ignored. The result has the right timing and pitch at
//!   the core rate (half the declared output rate) but no content above a
//!   quarter of the output rate, and PS streams come out mono.
//!   [`AacConfig::sbr`] tells the caller so it can warn the host.
//! - MP3 (MPEG-1/2/2.5 layer III). A packet may hold several frames.
//!
//! Everything else (AAC Main/LTP/LD/ELD, 960-sample frames, more than two
//! channels or a program config element) is [`DecodeError::Unsupported`]
//! when the decoder is built: reject the session.
//!
//! # Errors per packet
//! A truncated or corrupt packet is [`DecodeError::Corrupt`] for that packet
//! only; the decoder stays usable. The caller decides whether to conceal it
//! with silence of [`PacketDecoder::frame_len`] frames or to end the session
//! after several in a row. Decoding never panics: a panic inside the codec
//! library is caught, reported as `Corrupt`, and the codec rebuilt.

use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::audio::{Channels, SampleBuffer, SignalSpec};
use symphonia::core::codecs::{
    CODEC_TYPE_AAC, CODEC_TYPE_MP3, CodecParameters, Decoder, DecoderOptions,
};
use symphonia::core::formats::Packet;

/// Why a [`PacketDecoder`] cannot be built or could not decode a packet.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stream configuration is valid but not decodable here: reject the
    /// session (the publisher must change its encoder settings).
    #[error("unsupported audio configuration: {0}")]
    Unsupported(String),
    /// The configuration bytes are malformed (too short, reserved values):
    /// reject the session.
    #[error("malformed audio configuration: {0}")]
    MalformedConfig(String),
    /// One packet could not be decoded: drop it (or conceal it) and go on.
    #[error("corrupt packet #{packet} ({len} bytes): {reason}")]
    Corrupt {
        /// Index of the packet since the decoder was built, from 0.
        packet: u64,
        /// Its length in bytes.
        len: usize,
        /// What the codec said.
        reason: String,
    },
}

/// One decoded packet: interleaved samples at the stream's own rate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    /// Sample rate in Hz.
    pub rate: u32,
    /// Channel count (the samples are interleaved in this many channels).
    pub channels: usize,
    /// Interleaved samples, `frames × channels`.
    pub samples: Vec<f32>,
}

impl Decoded {
    /// The number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len().checked_div(self.channels).unwrap_or(0)
    }
}

/// The fields of an MPEG-4 `AudioSpecificConfig` (ISO/IEC 14496-3 §1.6.2.1)
/// that decide whether and how a stream is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// The signalled audio object type (2 = LC, 5 = SBR, 29 = PS).
    pub object_type: u8,
    /// The object type of the core codec (2 for every supported stream).
    pub core_object_type: u8,
    /// The core sampling rate in Hz: the rate of the decoded output.
    pub sample_rate: u32,
    /// For explicit SBR/PS: the output rate a full HE-AAC decoder would give.
    pub extension_rate: Option<u32>,
    /// The channel configuration (1 = mono, 2 = stereo; 0 = PCE).
    pub channel_config: u8,
    /// Spectral band replication is signalled (HE-AAC): only the core is
    /// decoded.
    pub sbr: bool,
    /// Parametric stereo is signalled (HE-AAC v2): the core is mono.
    pub ps: bool,
    /// 960-sample frames (`frameLengthFlag`).
    pub short_frames: bool,
}

/// Table 1.18 of ISO/IEC 14496-3: `samplingFrequencyIndex` to Hz.
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// A most-significant-bit-first reader over configuration bytes.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Result<u32, DecodeError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or_else(|| {
                DecodeError::MalformedConfig(format!(
                    "AudioSpecificConfig ends after {} bytes",
                    self.data.len()
                ))
            })?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    /// `GetAudioObjectType()`: 5 bits, escape 31 adds 6 more.
    fn object_type(&mut self) -> Result<u8, DecodeError> {
        let t = self.read(5)?;
        let t = if t == 31 { 32 + self.read(6)? } else { t };
        Ok(t as u8)
    }

    /// `samplingFrequencyIndex`, with the explicit 24-bit escape.
    fn rate(&mut self) -> Result<u32, DecodeError> {
        match self.read(4)? {
            0xF => match self.read(24)? {
                0 => Err(DecodeError::MalformedConfig("sampling rate 0".into())),
                // The listed rates span 7 350 to 96 000 Hz; an explicit rate
                // outside them is no real encoder's and would only make the
                // resampler work for nothing.
                r if !(7_350..=96_000).contains(&r) => Err(DecodeError::Unsupported(format!(
                    "AAC sampling rate {r} Hz (outside 7350 to 96000 Hz)"
                ))),
                r => Ok(r),
            },
            i => AAC_RATES.get(i as usize).copied().ok_or_else(|| {
                DecodeError::MalformedConfig(format!("reserved samplingFrequencyIndex {i}"))
            }),
        }
    }
}

impl AacConfig {
    /// Parses an `AudioSpecificConfig` and checks that it can be decoded.
    pub fn parse(asc: &[u8]) -> Result<Self, DecodeError> {
        let mut b = Bits { data: asc, pos: 0 };
        let object_type = b.object_type()?;
        let sample_rate = b.rate()?;
        let channel_config = b.read(4)? as u8;
        // §1.6.2.1: explicit hierarchical SBR/PS signalling names the
        // extension rate, then the core object type.
        let (core_object_type, extension_rate) = if matches!(object_type, 5 | 29) {
            let ext = b.rate()?;
            (b.object_type()?, Some(ext))
        } else {
            (object_type, None)
        };
        // GASpecificConfig (§4.4.1): frameLengthFlag comes first.
        let short_frames = if core_object_type == 2 {
            b.read(1)? == 1
        } else {
            false
        };
        let cfg = Self {
            object_type,
            core_object_type,
            sample_rate,
            extension_rate,
            channel_config,
            sbr: extension_rate.is_some(),
            ps: object_type == 29,
            short_frames,
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), DecodeError> {
        let unsupported = |what: String| Err(DecodeError::Unsupported(what));
        if self.core_object_type != 2 {
            return unsupported(format!(
                "AAC object type {} (only AAC-LC, or HE-AAC over an LC core)",
                self.core_object_type
            ));
        }
        if self.short_frames {
            return unsupported("AAC with 960-sample frames".into());
        }
        match self.channel_config {
            1 | 2 => Ok(()),
            0 => unsupported("AAC channel layout in a program config element".into()),
            n => unsupported(format!(
                "AAC channel configuration {n} (only mono or stereo)"
            )),
        }
    }
}

/// Which codec a [`PacketDecoder`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Aac,
    Mp3,
}

/// Decodes the packets of one live audio stream (see the module docs).
pub struct PacketDecoder {
    codec: Codec,
    params: CodecParameters,
    decoder: Box<dyn Decoder>,
    aac: Option<AacConfig>,
    /// The last decoded frame, interleaved, with the layout it was made for.
    buffer: Option<(SignalSpec, SampleBuffer<f32>)>,
    packets: u64,
}

impl PacketDecoder {
    /// A decoder for raw AAC access units described by `asc`, the
    /// `AudioSpecificConfig` of an FLV AAC sequence header.
    pub fn aac(asc: &[u8]) -> Result<Self, DecodeError> {
        let cfg = AacConfig::parse(asc)?;
        let mut params = CodecParameters::new();
        params
            .for_codec(CODEC_TYPE_AAC)
            .with_sample_rate(cfg.sample_rate)
            .with_extra_data(asc.into());
        let mut d = Self::build(Codec::Aac, params)?;
        d.aac = Some(cfg);
        Ok(d)
    }

    /// A decoder for MP3 packets (one or more whole frames each).
    pub fn mp3() -> Result<Self, DecodeError> {
        let mut params = CodecParameters::new();
        params.for_codec(CODEC_TYPE_MP3);
        Self::build(Codec::Mp3, params)
    }

    fn build(codec: Codec, params: CodecParameters) -> Result<Self, DecodeError> {
        let decoder = new_decoder(&params)?;
        Ok(Self {
            codec,
            params,
            decoder,
            aac: None,
            buffer: None,
            packets: 0,
        })
    }

    /// The parsed AAC configuration (`None` for MP3).
    pub fn aac_config(&self) -> Option<&AacConfig> {
        self.aac.as_ref()
    }

    /// Frames one packet decodes to when it is whole: 1024 for AAC; for MP3
    /// 1152 (MPEG-1) or 576 (MPEG-2/2.5) per frame, known only from the
    /// packet, so `None`.
    pub fn frame_len(&self) -> Option<usize> {
        (self.codec == Codec::Aac).then_some(1024)
    }

    /// Decodes one packet. A truncated or corrupt packet is
    /// [`DecodeError::Corrupt`]; the next packet may decode again.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Decoded, DecodeError> {
        let index = self.packets;
        self.packets += 1;
        let corrupt = |reason: String| DecodeError::Corrupt {
            packet: index,
            len: packet.len(),
            reason,
        };
        let mut out = Decoded::default();
        match self.codec {
            Codec::Aac => {
                if packet.is_empty() {
                    return Err(corrupt("empty packet".into()));
                }
                self.decode_unit(packet, &mut out).map_err(corrupt)?;
            }
            Codec::Mp3 => {
                let mut rest = packet;
                if rest.is_empty() {
                    return Err(corrupt("empty packet".into()));
                }
                while !rest.is_empty() {
                    let len = mp3_frame_len(rest).map_err(&corrupt)?;
                    let Some((frame, tail)) = rest.split_at_checked(len) else {
                        return Err(corrupt(format!(
                            "MP3 frame of {len} bytes truncated to {}",
                            rest.len()
                        )));
                    };
                    self.decode_unit(frame, &mut out).map_err(&corrupt)?;
                    rest = tail;
                }
            }
        }
        Ok(out)
    }

    /// Decodes one codec frame, appending it to `out` (whose rate and
    /// channels it sets, or checks when already set).
    fn decode_unit(&mut self, unit: &[u8], out: &mut Decoded) -> Result<(), String> {
        let packet = Packet::new_from_slice(0, 0, 0, unit);
        let decoder = &mut self.decoder;
        let buffer = &mut self.buffer;
        // The codec parses peer bytes; a panic in it must not take down the
        // broadcast. Its state is unknown afterwards, so it is rebuilt.
        let result = catch_unwind(AssertUnwindSafe(|| {
            let decoded = decoder.decode(&packet).map_err(|e| e.to_string())?;
            let spec = *decoded.spec();
            let frames = decoded.frames();
            let reusable = matches!(buffer, Some((s, sb)) if sb.capacity() >= frames && *s == spec);
            if !reusable {
                *buffer = Some((spec, SampleBuffer::new(decoded.capacity() as u64, spec)));
            }
            if let Some((_, sb)) = buffer {
                sb.copy_interleaved_ref(decoded);
            }
            Ok::<_, String>((spec.rate, spec.channels))
        }));
        let (rate, channels) = match result {
            Ok(r) => r?,
            Err(_) => {
                self.decoder = new_decoder(&self.params).map_err(|e| e.to_string())?;
                return Err("the codec failed on this packet and was reset".into());
            }
        };
        let channels = Channels::count(channels);
        if out.rate == 0 {
            out.rate = rate;
            out.channels = channels;
        } else if (out.rate, out.channels) != (rate, channels) {
            return Err(format!(
                "frames in one packet disagree: {} Hz × {} then {rate} Hz × {channels}",
                out.rate, out.channels
            ));
        }
        if let Some((_, sb)) = &self.buffer {
            out.samples.extend_from_slice(sb.samples());
        }
        Ok(())
    }

    /// Forgets the codec state (overlap, bit reservoir), as after a seek or a
    /// publisher reconnect.
    pub fn reset(&mut self) {
        self.decoder.reset();
    }
}

fn new_decoder(params: &CodecParameters) -> Result<Box<dyn Decoder>, DecodeError> {
    symphonia::default::get_codecs()
        .make(params, &DecoderOptions::default())
        .map_err(|e| DecodeError::Unsupported(e.to_string()))
}

/// The length in bytes of the MPEG audio layer III frame at the start of
/// `data`, from its header (ISO/IEC 11172-3 §2.4.2.3, 13818-3 §2.4.2.3).
fn mp3_frame_len(data: &[u8]) -> Result<usize, String> {
    let Some(&[b0, b1, b2, _]) = data.first_chunk::<4>() else {
        return Err(format!(
            "{} bytes is shorter than an MP3 header",
            data.len()
        ));
    };
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 {
        return Err("no MP3 frame sync".into());
    }
    // Version: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5, 1 reserved.
    let version = (b1 >> 3) & 3;
    if (b1 >> 1) & 3 != 1 {
        return Err("not layer III".into());
    }
    const KBPS_V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const KBPS_V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    const RATES_V1: [u32; 3] = [44_100, 48_000, 32_000];
    let bitrate_index = usize::from(b2 >> 4);
    let rate_index = usize::from((b2 >> 2) & 3);
    let padding = u32::from((b2 >> 1) & 1);
    let (kbps, base_rate) = match version {
        3 => (KBPS_V1.get(bitrate_index), RATES_V1.get(rate_index)),
        2 | 0 => (KBPS_V2.get(bitrate_index), RATES_V1.get(rate_index)),
        _ => return Err("reserved MPEG version".into()),
    };
    let (Some(&kbps), Some(&base_rate)) = (kbps, base_rate) else {
        return Err("reserved bitrate or sampling rate index".into());
    };
    if kbps == 0 {
        return Err("free-format MP3 is not supported".into());
    }
    let (rate, per_frame) = match version {
        3 => (base_rate, 144),
        2 => (base_rate / 2, 72),
        _ => (base_rate / 4, 72),
    };
    Ok((per_frame * kbps * 1000 / rate + padding) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asc_lc_stereo_44k1() {
        // 00010 0100 0010 0 0 0: AAC-LC, 44.1 kHz, stereo.
        let cfg = AacConfig::parse(&[0x12, 0x10]).expect("parse");
        assert_eq!(
            (cfg.object_type, cfg.sample_rate, cfg.channel_config),
            (2, 44_100, 2)
        );
        assert!(!cfg.sbr);
    }

    #[test]
    fn asc_he_aac_explicit_decodes_the_core() {
        // 00101 0111 0010 0100 00010 0: SBR, core 22.05 kHz stereo, output
        // 44.1 kHz, core AAC-LC.
        let cfg = AacConfig::parse(&[0x2B, 0x92, 0x08, 0x00]).expect("parse");
        assert!(cfg.sbr && !cfg.ps);
        assert_eq!(cfg.sample_rate, 22_050);
        assert_eq!(cfg.extension_rate, Some(44_100));
        assert_eq!(cfg.core_object_type, 2);
    }

    #[test]
    fn asc_unsupported_and_malformed_are_told_apart() {
        // AAC Main (1).
        assert!(matches!(
            AacConfig::parse(&[0x0A, 0x10]),
            Err(DecodeError::Unsupported(_))
        ));
        // LC 5.1 (channel configuration 6).
        assert!(matches!(
            AacConfig::parse(&[0x12, 0x30]),
            Err(DecodeError::Unsupported(_))
        ));
        // LC with a PCE (channel configuration 0): Symphonia would panic.
        assert!(matches!(
            AacConfig::parse(&[0x12, 0x00]),
            Err(DecodeError::Unsupported(_))
        ));
        // Reserved sampling frequency index 13.
        assert!(matches!(
            AacConfig::parse(&[0x16, 0x90]),
            Err(DecodeError::MalformedConfig(_))
        ));
        for short in [&[][..], &[0x12]] {
            assert!(matches!(
                AacConfig::parse(short),
                Err(DecodeError::MalformedConfig(_))
            ));
        }
    }

    #[test]
    fn mp3_frame_lengths() {
        // MPEG-1 layer III, 128 kb/s, 44.1 kHz, no padding: 417 bytes.
        assert_eq!(mp3_frame_len(&[0xFF, 0xFB, 0x90, 0x00]), Ok(417));
        // Same with padding.
        assert_eq!(mp3_frame_len(&[0xFF, 0xFB, 0x92, 0x00]), Ok(418));
        // MPEG-2 layer III, 64 kb/s, 24 kHz: 72 × 64000 / 24000 = 192.
        assert_eq!(mp3_frame_len(&[0xFF, 0xF3, 0x84, 0x00]), Ok(192));
        assert!(mp3_frame_len(&[0xFF, 0xFB]).is_err());
        assert!(mp3_frame_len(&[0x00, 0xFB, 0x90, 0x00]).is_err());
        assert!(mp3_frame_len(&[0xFF, 0xFB, 0xF0, 0x00]).is_err());
    }
}
