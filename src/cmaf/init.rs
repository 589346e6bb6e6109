//! The CMAF header: `ftyp` + `moov` for one audio track.
//!
//! Containers whose children mp4-atom would order differently from the order
//! ISO/IEC 14496-12 §6.2.3 recommends (`moov`: mvhd, trak, mvex; `trak`: tkhd,
//! edts, mdia; `minf`: smhd, dinf, stbl) are framed here with
//! [`BufMut::encode_atom`] and their children encoded one by one, in that order.

use bytes::{Bytes, BytesMut};
use mp4_atom::{
    Audio, BufMut, Dinf, Dref, DrefEntry, Edts, Elst, ElstEntry, Encode, Esds, FourCC, Ftyp, Hdlr,
    Mdhd, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tkhd, Trex, Url, u24,
};
use mp4_atom::{Dops, esds};

use super::{Codec, Error, SYNC_SAMPLE_FLAGS, TrackConfig};

/// The Opus sample rate: `dOps` `PreSkip` and the sample entry's rate are in
/// 48 kHz samples whatever the input rate (Opus in ISOBMFF §4.3).
const OPUS_RATE: u32 = 48_000;

/// `objectTypeIndication` for ISO/IEC 14496-3 audio (MP4RA object types).
const OTI_MPEG4_AUDIO: u8 = 0x40;
/// `streamType` AudioStream (ISO/IEC 14496-1, DecoderConfigDescriptor).
const STREAM_TYPE_AUDIO: u8 = 0x05;
/// AAC decoder input buffer per channel: 6144 bits (ISO/IEC 14496-3).
const AAC_BUFFER_BYTES_PER_CHANNEL: u32 = 6144 / 8;
/// The most channels an AAC bitstream can carry (ISO/IEC 14496-3).
const AAC_MAX_CHANNELS: u16 = 48;

/// Writes the CMAF header of one audio track: `ftyp` then `moov` with `mvhd`,
/// one `trak` (`tkhd`, `edts/elst` when `delay > 0`, `mdia` with empty sample
/// tables) and `mvex/trex`.
///
/// Brands: major `iso6` (the ISOBMFF brand covering every feature used here;
/// `default-base-is-moof` alone needs `iso5`), compatible `iso6`, `cmfc` (CMAF
/// structural brand, required in a CMAF header) and the media brand: `caac`
/// (CMAF AAC media profile) or `Opus` (defined by the Opus encapsulation). No
/// `dash`: these files are delivered by HLS.
pub fn init_segment(cfg: &TrackConfig) -> Result<Bytes, Error> {
    if cfg.track_id == 0 || cfg.track_id == u32::MAX {
        return Err(Error::InvalidTrackId {
            track_id: cfg.track_id,
        });
    }
    let (sample_entry, media_brand) = sample_entry(cfg)?;

    let mut buf = BytesMut::with_capacity(1024);
    Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![FourCC::new(b"iso6"), FourCC::new(b"cmfc"), media_brand],
    }
    .encode(&mut buf)?;

    buf.encode_atom(FourCC::new(b"moov"), |buf| {
        Mvhd {
            timescale: cfg.timescale,
            // Duration 0: unknown, the movie is fragmented (§8.2.2.3).
            duration: 0,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: cfg.track_id + 1,
            ..Default::default()
        }
        .encode(buf)?;
        buf.encode_atom(FourCC::new(b"trak"), |buf| {
            write_trak(buf, cfg, sample_entry)
        })?;
        Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: cfg.track_id,
                default_sample_description_index: 1,
                // Every fragment states its durations and sizes (tfhd or trun),
                // so the trex defaults for them are never used.
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: SYNC_SAMPLE_FLAGS,
            }],
        }
        .encode(buf)
    })?;
    Ok(buf.freeze())
}

fn write_trak(
    buf: &mut BytesMut,
    cfg: &TrackConfig,
    sample_entry: mp4_atom::Codec,
) -> mp4_atom::Result<()> {
    Tkhd {
        track_id: cfg.track_id,
        enabled: true,
        in_movie: true,
        // Full volume, the audio track default (§8.3.2.3).
        volume: 1.into(),
        ..Default::default()
    }
    .encode(buf)?;
    if cfg.delay > 0 {
        // One edit that starts presentation at media time `delay`. A
        // segment_duration of 0 in a fragmented movie means "to the end of
        // the media, including all fragments" (§8.6.6.3), the form CMAF uses
        // to trim codec priming.
        Edts {
            elst: Some(Elst {
                entries: vec![ElstEntry {
                    segment_duration: 0,
                    media_time: Some(u64::from(cfg.delay)),
                    media_rate: 1.into(),
                }],
            }),
        }
        .encode(buf)?;
    }
    buf.encode_atom(FourCC::new(b"mdia"), |buf| {
        Mdhd {
            timescale: cfg.timescale,
            duration: 0,
            language: cfg.language.as_str().to_owned(),
            ..Default::default()
        }
        .encode(buf)?;
        Hdlr {
            handler: FourCC::new(b"soun"),
            name: "SoundHandler".to_owned(),
        }
        .encode(buf)?;
        buf.encode_atom(FourCC::new(b"minf"), |buf| {
            Smhd::default().encode(buf)?;
            Dinf {
                dref: Dref {
                    // An empty `url ` means "media in this file" (§8.7.2).
                    entries: vec![DrefEntry::Url(Url::default())],
                },
            }
            .encode(buf)?;
            // Empty sample tables: all samples live in movie fragments (§8.8).
            Stbl {
                stsd: Stsd {
                    codecs: vec![sample_entry],
                },
                stco: Some(Stco::default()),
                ..Default::default()
            }
            .encode(buf)
        })
    })
}

/// The sample entry for the configured codec and the matching CMAF media brand.
fn sample_entry(cfg: &TrackConfig) -> Result<(mp4_atom::Codec, FourCC), Error> {
    match &cfg.codec {
        Codec::Opus {
            channels,
            input_sample_rate,
        } => {
            if cfg.timescale != OPUS_RATE {
                return Err(Error::UnsupportedTimescale {
                    timescale: cfg.timescale,
                    codec: "Opus",
                });
            }
            if !(1..=2).contains(channels) {
                return Err(Error::UnsupportedChannels {
                    channels: u16::from(*channels),
                    codec: "Opus",
                });
            }
            let pre_skip = u16::try_from(cfg.delay)
                .map_err(|_| Error::PreSkipTooLarge { delay: cfg.delay })?;
            let entry = Opus {
                // Opus in ISOBMFF §4.3.1: channelcount = OutputChannelCount,
                // samplesize 16, samplerate 48000 << 16.
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: u16::from(*channels),
                    sample_size: 16,
                    sample_rate: 48_000u16.into(),
                },
                dops: Dops {
                    output_channel_count: *channels,
                    pre_skip,
                    input_sample_rate: *input_sample_rate,
                    output_gain: 0,
                    // Family 0: mono or stereo, no mapping table (RFC 7845 §5.1.1.1).
                    channel_mapping: None,
                },
                btrt: None,
            };
            Ok((entry.into(), FourCC::new(b"Opus")))
        }
        Codec::Aac {
            audio_specific_config,
            channels,
            avg_bitrate,
            max_bitrate,
        } => {
            let sample_rate = u16::try_from(cfg.timescale)
                .ok()
                .filter(|&rate| rate > 0)
                .ok_or(Error::UnsupportedTimescale {
                    timescale: cfg.timescale,
                    codec: "AAC",
                })?;
            if !(1..=AAC_MAX_CHANNELS).contains(channels) {
                return Err(Error::UnsupportedChannels {
                    channels: *channels,
                    codec: "AAC",
                });
            }
            if audio_specific_config.len() < 2 {
                return Err(Error::AudioSpecificConfigTooShort {
                    len: audio_specific_config.len(),
                });
            }
            let buffer_size_db = AAC_BUFFER_BYTES_PER_CHANNEL * u32::from(*channels);
            let entry = Mp4a {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: *channels,
                    sample_size: 16,
                    sample_rate: sample_rate.into(),
                },
                esds: Esds {
                    es_desc: esds::EsDescriptor {
                        // ES_ID is 0 for streams stored in a file (ISO/IEC 14496-14).
                        es_id: 0,
                        dec_config: esds::DecoderConfig {
                            object_type_indication: OTI_MPEG4_AUDIO,
                            stream_type: STREAM_TYPE_AUDIO,
                            up_stream: 0,
                            // At most 48 * 768 bytes, far below the 24-bit limit.
                            buffer_size_db: u24::try_from(buffer_size_db.min(u24::MAX))
                                .unwrap_or_default(),
                            max_bitrate: *max_bitrate,
                            avg_bitrate: *avg_bitrate,
                            // `raw` is written verbatim; the parsed fields are
                            // only a decoding convenience of mp4-atom.
                            dec_specific: Some(esds::DecoderSpecific {
                                profile: 0,
                                freq_index: 0,
                                chan_conf: 0,
                                raw: audio_specific_config.to_vec(),
                            }),
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            Ok((entry.into(), FourCC::new(b"caac")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmaf::Language;
    use mp4_atom::{Decode, Ftyp, Moov};

    fn opus(delay: u32) -> TrackConfig {
        TrackConfig {
            track_id: 1,
            timescale: 48_000,
            codec: Codec::Opus {
                channels: 2,
                input_sample_rate: 48_000,
            },
            delay,
            language: Language::UNDETERMINED,
        }
    }

    fn aac() -> TrackConfig {
        TrackConfig {
            track_id: 1,
            timescale: 48_000,
            codec: Codec::Aac {
                // AAC-LC, 48 kHz, stereo.
                audio_specific_config: Bytes::from_static(&[0x11, 0x90]),
                channels: 2,
                avg_bitrate: 96_000,
                max_bitrate: 120_000,
            },
            delay: 2048,
            language: Language::new("eng").expect("valid code"),
        }
    }

    fn parse(bytes: &[u8]) -> (Ftyp, Moov) {
        let mut rest = bytes;
        let ftyp = Ftyp::decode(&mut rest).expect("ftyp");
        let moov = Moov::decode(&mut rest).expect("moov");
        assert!(rest.is_empty(), "{} trailing bytes", rest.len());
        (ftyp, moov)
    }

    /// The four-character codes of the boxes directly inside `body`.
    fn child_kinds(mut body: &[u8]) -> Vec<[u8; 4]> {
        let mut kinds = Vec::new();
        while body.len() >= 8 {
            let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
            kinds.push([body[4], body[5], body[6], body[7]]);
            body = &body[size..];
        }
        assert!(body.is_empty());
        kinds
    }

    /// The body of the first box of kind `kind` directly inside `body`.
    fn child<'a>(mut body: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
        while body.len() >= 8 {
            let size = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
            if &body[4..8] == kind {
                return &body[8..size];
            }
            body = &body[size..];
        }
        panic!("no {} box", String::from_utf8_lossy(kind));
    }

    #[test]
    fn opus_header_round_trips_with_delay_in_elst_and_dops() {
        let bytes = init_segment(&opus(312)).expect("init");
        let (ftyp, moov) = parse(&bytes);
        assert_eq!(ftyp.major_brand, FourCC::new(b"iso6"));
        assert_eq!(
            ftyp.compatible_brands,
            [b"iso6", b"cmfc", b"Opus"].map(FourCC::new).to_vec()
        );
        assert_eq!(moov.mvhd.timescale, 48_000);
        assert_eq!(moov.mvhd.next_track_id, 2);
        assert_eq!(moov.trak.len(), 1);
        let trak = &moov.trak[0];
        assert_eq!(trak.tkhd.track_id, 1);
        assert!(trak.tkhd.enabled && trak.tkhd.in_movie);
        let elst = trak
            .edts
            .as_ref()
            .and_then(|e| e.elst.as_ref())
            .expect("elst");
        assert_eq!(
            elst.entries,
            vec![ElstEntry {
                segment_duration: 0,
                media_time: Some(312),
                media_rate: 1.into(),
            }]
        );
        assert_eq!(trak.mdia.mdhd.timescale, 48_000);
        assert_eq!(trak.mdia.mdhd.language, "und");
        assert_eq!(trak.mdia.hdlr.handler, FourCC::new(b"soun"));
        assert!(trak.mdia.minf.smhd.is_some());
        let stbl = &trak.mdia.minf.stbl;
        assert!(stbl.stts.entries.is_empty() && stbl.stsc.entries.is_empty());
        let [mp4_atom::Codec::Opus(entry)] = stbl.stsd.codecs.as_slice() else {
            panic!("expected one Opus sample entry: {:?}", stbl.stsd.codecs);
        };
        assert_eq!(entry.audio.channel_count, 2);
        assert_eq!(entry.audio.sample_rate.integer(), 48_000);
        assert_eq!(entry.dops.pre_skip, 312, "pre-skip equals the edit");
        assert_eq!(entry.dops.output_channel_count, 2);
        assert_eq!(entry.dops.input_sample_rate, 48_000);
        assert_eq!(entry.dops.channel_mapping, None);
        let mvex = moov.mvex.expect("mvex");
        assert_eq!(mvex.trex.len(), 1);
        assert_eq!(mvex.trex[0].track_id, 1);
        assert_eq!(mvex.trex[0].default_sample_description_index, 1);
        assert_eq!(mvex.trex[0].default_sample_flags, SYNC_SAMPLE_FLAGS);
    }

    #[test]
    fn aac_header_carries_the_audio_specific_config_verbatim() {
        let bytes = init_segment(&aac()).expect("init");
        let (ftyp, moov) = parse(&bytes);
        assert_eq!(
            ftyp.compatible_brands,
            [b"iso6", b"cmfc", b"caac"].map(FourCC::new).to_vec()
        );
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.mdhd.language, "eng");
        let elst = trak
            .edts
            .as_ref()
            .and_then(|e| e.elst.as_ref())
            .expect("elst");
        assert_eq!(elst.entries[0].media_time, Some(2048));
        let [mp4_atom::Codec::Mp4a(entry)] = trak.mdia.minf.stbl.stsd.codecs.as_slice() else {
            panic!("expected one mp4a sample entry");
        };
        assert_eq!(entry.audio.channel_count, 2);
        assert_eq!(entry.audio.sample_rate.integer(), 48_000);
        let config = &entry.esds.es_desc.dec_config;
        assert_eq!(config.object_type_indication, 0x40);
        assert_eq!(config.stream_type, 5);
        assert_eq!(u32::from(config.buffer_size_db), 1536);
        assert_eq!((config.avg_bitrate, config.max_bitrate), (96_000, 120_000));
        let specific = config.dec_specific.as_ref().expect("DecoderSpecificInfo");
        assert_eq!(specific.raw, [0x11, 0x90]);
        // mp4-atom's parse of it: AAC-LC (2), 48 kHz (index 3), stereo (2).
        assert_eq!(
            (specific.profile, specific.freq_index, specific.chan_conf),
            (2, 3, 2)
        );
    }

    #[test]
    fn boxes_follow_the_recommended_order() {
        let bytes = init_segment(&opus(960)).expect("init");
        assert_eq!(child_kinds(&bytes), [*b"ftyp", *b"moov"]);
        let moov = child(&bytes, b"moov");
        assert_eq!(child_kinds(moov), [*b"mvhd", *b"trak", *b"mvex"]);
        let trak = child(moov, b"trak");
        assert_eq!(child_kinds(trak), [*b"tkhd", *b"edts", *b"mdia"]);
        let minf = child(child(trak, b"mdia"), b"minf");
        assert_eq!(child_kinds(minf), [*b"smhd", *b"dinf", *b"stbl"]);
    }

    #[test]
    fn zero_delay_writes_no_edit_list() {
        let bytes = init_segment(&opus(0)).expect("init");
        let (_, moov) = parse(&bytes);
        assert_eq!(moov.trak[0].edts, None);
        let [mp4_atom::Codec::Opus(entry)] = moov.trak[0].mdia.minf.stbl.stsd.codecs.as_slice()
        else {
            panic!("expected Opus");
        };
        assert_eq!(entry.dops.pre_skip, 0);
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let mut cfg = opus(312);
        cfg.track_id = 0;
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::InvalidTrackId { track_id: 0 })
        ));
        let mut cfg = opus(65_536);
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::PreSkipTooLarge { delay: 65_536 })
        ));
        cfg.delay = 312;
        cfg.timescale = 44_100;
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::UnsupportedTimescale {
                timescale: 44_100,
                ..
            })
        ));
        cfg.timescale = 48_000;
        cfg.codec = Codec::Opus {
            channels: 6,
            input_sample_rate: 48_000,
        };
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::UnsupportedChannels { channels: 6, .. })
        ));
        let mut cfg = aac();
        cfg.codec = Codec::Aac {
            audio_specific_config: Bytes::from_static(&[0x11]),
            channels: 2,
            avg_bitrate: 0,
            max_bitrate: 0,
        };
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::AudioSpecificConfigTooShort { len: 1 })
        ));
        cfg.timescale = 96_000;
        assert!(matches!(
            init_segment(&cfg),
            Err(Error::UnsupportedTimescale { .. })
        ));
    }

    #[test]
    fn language_accepts_only_three_lowercase_letters() {
        assert_eq!(Language::new("fra").expect("valid").as_str(), "fra");
        for bad in ["", "en", "ENG", "engl", "e1g", "é"] {
            assert!(Language::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
