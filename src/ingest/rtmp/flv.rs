//! FLV audio tags as RTMP audio messages carry them (Adobe FLV and F4V file
//! format specification 10.1, E.4.2.1 AUDIODATA and AACAUDIODATA), and the
//! AAC AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).
//!
//! The first byte of an audio message packs SoundFormat (4 bits), SoundRate
//! (2), SoundSize (1) and SoundType (1). For AAC (SoundFormat 10) a second
//! byte says whether the rest is the AudioSpecificConfig (0) or a raw frame
//! (1); the rate and type bits are then fixed placeholders and the config is
//! authoritative. MP3 (SoundFormat 2, and 14 for MP3 at 8 kHz) carries MPEG
//! audio frames whose own headers are authoritative.
//!
//! Contract: [`parse_audio_tag`] takes one whole audio message and either
//! describes it or says why onair cannot use it: a tag cut short is
//! malformed; another codec or an AAC profile the decoder does not handle is
//! unsupported.

use super::{Reader, RtmpError};
use crate::audio::decode::{AacConfig, DecodeError};

/// Audio codecs onair ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// AAC in raw access units, configured by an [`AudioSpecificConfig`].
    Aac,
    /// MPEG-1/2 Layer III frames.
    Mp3,
}

/// SoundFormat values (E.4.2.1).
mod sound_format {
    pub const MP3: u8 = 2;
    pub const AAC: u8 = 10;
    pub const MP3_8KHZ: u8 = 14;

    pub fn name(format: u8) -> &'static str {
        match format {
            0 => "linear PCM, platform endian",
            1 => "ADPCM",
            3 => "linear PCM, little endian",
            4 => "Nellymoser 16 kHz mono",
            5 => "Nellymoser 8 kHz mono",
            6 => "Nellymoser",
            7 => "G.711 A-law",
            8 => "G.711 mu-law",
            9 => "reserved",
            11 => "Speex",
            15 => "device-specific",
            _ => "unknown",
        }
    }
}

/// A validated AAC AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// The core object type: always AAC-LC (2), also under SBR and PS.
    pub object_type: u8,
    /// The core decoder's sampling rate in Hz (for HE-AAC, half the output
    /// rate).
    pub sample_rate: u32,
    /// The output sampling rate with SBR, if signalled explicitly.
    pub extension_sample_rate: Option<u32>,
    /// Channel count from the channel configuration (1 or 2).
    pub channels: u8,
    /// Spectral Band Replication is signalled (HE-AAC).
    pub sbr: bool,
    /// Parametric Stereo is signalled (HE-AAC v2).
    pub ps: bool,
    /// The config bytes as received, for a decoder or an `esds` box.
    pub bytes: Vec<u8>,
}

impl AudioSpecificConfig {
    /// PCM samples per channel in one access unit of the core decoder.
    pub const SAMPLES_PER_FRAME: u32 = 1024;

    /// Parses and validates an AudioSpecificConfig with the live decoder's
    /// own parser ([`AacConfig::parse`]), so a publisher is refused exactly
    /// when its audio could not be decoded: AAC-LC, optionally with SBR or
    /// PS (explicit signalling, object type 5 or 29), a listed sampling
    /// frequency or an explicit one from 7 350 to 96 000 Hz, mono or stereo,
    /// and 1024-sample frames.
    pub fn parse(bytes: &[u8]) -> Result<Self, RtmpError> {
        let config = AacConfig::parse(bytes).map_err(|e| match e {
            DecodeError::Unsupported(what) => RtmpError::unsupported(what),
            other => RtmpError::malformed(other.to_string()),
        })?;
        Ok(Self {
            object_type: config.core_object_type,
            sample_rate: config.sample_rate,
            extension_sample_rate: config.extension_rate,
            channels: config.channel_config,
            sbr: config.sbr,
            ps: config.ps,
            bytes: bytes.to_vec(),
        })
    }
}

/// One parsed audio message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AACPacketType 0: the decoder configuration.
    AacSequenceHeader(AudioSpecificConfig),
    /// AACPacketType 1: one raw AAC access unit.
    AacFrame(&'a [u8]),
    /// MP3 frames.
    Mp3(&'a [u8]),
}

/// Parses one audio message body (E.4.2.1).
pub fn parse_audio_tag(payload: &[u8]) -> Result<AudioTag<'_>, RtmpError> {
    let mut reader = Reader::new(payload);
    let header = reader
        .u8()
        .ok_or_else(|| RtmpError::malformed("empty audio message"))?;
    let format = header >> 4;
    match format {
        sound_format::AAC => {
            let packet_type = reader
                .u8()
                .ok_or_else(|| RtmpError::malformed("AAC audio tag without AACPacketType"))?;
            let body = &payload[reader.position()..];
            match packet_type {
                0 => Ok(AudioTag::AacSequenceHeader(AudioSpecificConfig::parse(
                    body,
                )?)),
                1 => Ok(AudioTag::AacFrame(body)),
                other => Err(RtmpError::malformed(format!(
                    "AACPacketType {other} (only 0 and 1 exist)"
                ))),
            }
        }
        sound_format::MP3 | sound_format::MP3_8KHZ => Ok(AudioTag::Mp3(&payload[1..])),
        other => Err(RtmpError::unsupported(format!(
            "audio SoundFormat {other} ({}) is not supported: send AAC or MP3",
            sound_format::name(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::prop;

    /// AAC-LC, 44.1 kHz, mono: what ffmpeg's encoder writes.
    const LC_44100_MONO: [u8; 2] = [0x12, 0x08];
    /// AAC-LC, 48 kHz, stereo.
    const LC_48000_STEREO: [u8; 2] = [0x11, 0x90];

    #[test]
    fn parses_aac_lc_configs() {
        let config = AudioSpecificConfig::parse(&LC_44100_MONO).unwrap();
        assert_eq!(
            (config.object_type, config.sample_rate, config.channels),
            (2, 44_100, 1)
        );
        assert!(!config.sbr && !config.ps);
        let config = AudioSpecificConfig::parse(&LC_48000_STEREO).unwrap();
        assert_eq!((config.sample_rate, config.channels), (48_000, 2));
        assert_eq!(config.bytes, LC_48000_STEREO);
    }

    #[test]
    fn parses_explicit_he_aac_and_he_aac_v2() {
        // Object type 5, 24 kHz core, stereo, 48 kHz extension, core type 2.
        // 00101 0110 0010 0011 00010 0 -> bits packed big-endian.
        let he = [0b0010_1011, 0b0001_0001, 0b1000_1000, 0b0000_0000];
        let config = AudioSpecificConfig::parse(&he).unwrap();
        assert!(config.sbr && !config.ps);
        assert_eq!(config.sample_rate, 24_000);
        assert_eq!(config.extension_sample_rate, Some(48_000));
        assert_eq!(config.channels, 2);
        let mut v2 = he;
        v2[0] = 0b1110_1011; // object type 29
        assert!(AudioSpecificConfig::parse(&v2).unwrap().ps);
    }

    #[test]
    fn rejects_unsupported_and_malformed_configs() {
        // AAC Main (1), 44.1 kHz, stereo.
        let main = [0x0A, 0x10];
        assert!(matches!(
            AudioSpecificConfig::parse(&main),
            Err(RtmpError::Unsupported { .. })
        ));
        // AAC-LC with channel configuration 0 (PCE).
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x12, 0x00]),
            Err(RtmpError::Unsupported { .. })
        ));
        // Reserved sampling frequency index 13.
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x16, 0x88]),
            Err(RtmpError::Malformed { .. })
        ));
        // 960-sample frames.
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x12, 0x0C]),
            Err(RtmpError::Unsupported { .. })
        ));
        assert!(matches!(
            AudioSpecificConfig::parse(&[0x12]),
            Err(RtmpError::Malformed { .. })
        ));
    }

    #[test]
    fn parses_audio_tags() {
        // SoundFormat 10, 44 kHz, 16-bit, stereo: 0xAF.
        let header = [0xAF, 0x00, 0x12, 0x08];
        assert!(matches!(
            parse_audio_tag(&header).unwrap(),
            AudioTag::AacSequenceHeader(c) if c.sample_rate == 44_100
        ));
        assert_eq!(
            parse_audio_tag(&[0xAF, 0x01, 1, 2, 3]).unwrap(),
            AudioTag::AacFrame(&[1, 2, 3])
        );
        assert_eq!(
            parse_audio_tag(&[0x2F, 0xFF, 0xFB]).unwrap(),
            AudioTag::Mp3(&[0xFF, 0xFB])
        );
        assert_eq!(
            parse_audio_tag(&[0xE2, 0xFF, 0xF3]).unwrap(),
            AudioTag::Mp3(&[0xFF, 0xF3])
        );
        let error = parse_audio_tag(&[0xB6, 0]).unwrap_err();
        assert!(error.to_string().contains("Speex"), "{error}");
        assert!(matches!(error, RtmpError::Unsupported { .. }));
        assert!(matches!(
            parse_audio_tag(&[]),
            Err(RtmpError::Malformed { .. })
        ));
        assert!(matches!(
            parse_audio_tag(&[0xAF]),
            Err(RtmpError::Malformed { .. })
        ));
        assert!(matches!(
            parse_audio_tag(&[0xAF, 2]),
            Err(RtmpError::Malformed { .. })
        ));
    }

    #[test]
    fn survives_random_and_mutated_input() {
        let mut inputs = prop::random_inputs(41, 2000, 16);
        inputs.extend(prop::mutations(42, &[0xAF, 0x00, 0x12, 0x08], 2000));
        inputs.extend(prop::mutations(
            43,
            &[0xAF, 0x00, 0x2B, 0x11, 0x88, 0x00],
            2000,
        ));
        for input in inputs {
            fuzz_one(&input);
        }
    }

    /// What the fuzz target does.
    pub(crate) fn fuzz_one(input: &[u8]) {
        if let Ok(AudioTag::AacSequenceHeader(config)) = parse_audio_tag(input) {
            assert!((7_350..=96_000).contains(&config.sample_rate));
            assert!((1..=8).contains(&config.channels));
        }
    }
}
