//! CMAF chunks (`moof` + `mdat`) and the `styp` that opens a CMAF segment.
//!
//! A chunk is written into one pre-sized buffer in one pass: the `moof` is
//! encoded with a placeholder `data_offset`, which is patched once the `moof`
//! size is known, and the sample payloads are copied straight into the `mdat`.

use bytes::{Bytes, BytesMut};
use mp4_atom::{BufMut, Encode, FourCC, Mfhd, Tfdt, Tfhd, Trun, TrunEntry, TrunSamples};

use super::{Error, SYNC_SAMPLE_FLAGS, Sample};

/// `styp` (ISO/IEC 14496-12 §8.16.2) opening every CMAF segment: major brand
/// `cmfs` (CMAF segment), compatible `cmfs`, `cmff` (its chunks start with a
/// sync sample, so each is also a CMAF fragment) and `cmfl` (CMAF chunk), the
/// brands ISO/IEC 23000-19 defines for those structures.
const STYP: [u8; 28] = *b"\0\0\0\x1cstypcmfs\0\0\0\0cmfscmffcmfl";

/// Offset of `data_offset` inside `trun`: box header (8), version and flags
/// (4), `sample_count` (4). It is the first optional field (§8.8.8.2).
const TRUN_DATA_OFFSET_AT: usize = 16;

/// `mdat` box header size (32-bit size form).
const MDAT_HEADER: usize = 8;

/// Bytes of a chunk besides the per-sample `trun` entries and the payload:
/// moof 8, mfhd 16, traf 8, tfhd at most 32, tfdt 20, trun head 20, mdat 8.
const FIXED_BYTES: usize = 8 + 16 + 8 + 32 + 20 + 20 + MDAT_HEADER;

/// Upper bounds far beyond any audio chunk that keep every size, count and
/// `data_offset` inside its 32-bit field.
const MAX_PAYLOAD: usize = 1 << 30;
const MAX_SAMPLES: usize = 1 << 20;

/// The `styp` box that starts every CMAF segment. Part 0 of a segment is
/// `styp()` followed by a [`fragment`]; later parts are fragments alone.
pub fn styp() -> Bytes {
    Bytes::from_static(&STYP)
}

/// Writes one CMAF chunk: `moof` (`mfhd` with `sequence_number`; `traf` with
/// `tfhd` default-base-is-moof, `tfdt` version 1 = `base_media_decode_time`,
/// `trun` with `data_offset`) followed by an `mdat` holding `samples` in order.
///
/// `base_media_decode_time` is media time (program time + track delay) in the
/// track timescale. Values shared by every sample go in `tfhd` defaults, so a
/// run of equal-duration frames carries only per-sample sizes, and the sync
/// flags are never repeated per sample.
pub fn fragment(
    sequence_number: u32,
    track_id: u32,
    base_media_decode_time: u64,
    samples: &[Sample],
) -> Result<Bytes, Error> {
    let first = samples.first().ok_or(Error::NoSamples)?;
    let mut payload = 0usize;
    for (index, sample) in samples.iter().enumerate() {
        if sample.duration == 0 {
            return Err(Error::ZeroDuration {
                sequence_number,
                index,
            });
        }
        payload = payload.saturating_add(sample.data.len());
    }
    let too_large = Error::FragmentTooLarge {
        sequence_number,
        bytes: payload,
    };
    if payload > MAX_PAYLOAD || samples.len() > MAX_SAMPLES {
        return Err(too_large);
    }
    // Both bounds above make these conversions infallible; keep them checked.
    let count = u32::try_from(samples.len()).map_err(|_| Error::FragmentTooLarge {
        sequence_number,
        bytes: payload,
    })?;
    let size_of = |sample: &Sample| u32::try_from(sample.data.len()).unwrap_or(u32::MAX);

    let same_duration = samples.iter().all(|s| s.duration == first.duration);
    let same_size = samples.iter().all(|s| s.data.len() == first.data.len());
    let tfhd = Tfhd {
        track_id,
        base_data_offset: None,
        sample_description_index: None,
        default_sample_duration: same_duration.then_some(first.duration),
        default_sample_size: same_size.then(|| size_of(first)),
        // Repeated from trex so that each chunk describes itself.
        default_sample_flags: Some(SYNC_SAMPLE_FLAGS),
        duration_is_empty: false,
        // CMAF requires offsets relative to the moof (§8.8.7.1 flag 0x020000).
        default_base_is_moof: true,
    };
    let entries = if same_duration && same_size {
        TrunSamples::Inherited {
            count,
            first_flags: None,
        }
    } else {
        TrunSamples::Explicit(
            samples
                .iter()
                .map(|sample| TrunEntry {
                    duration: (!same_duration).then_some(sample.duration),
                    size: (!same_size).then(|| size_of(sample)),
                    flags: None,
                    cts: None,
                })
                .collect(),
        )
    };
    let trun = Trun {
        // Placeholder, patched below once the moof size is known.
        data_offset: Some(0),
        samples: entries,
    };

    let mut buf = BytesMut::with_capacity(FIXED_BYTES + 8 * samples.len() + payload);
    let mut data_offset_at = 0;
    buf.encode_atom(FourCC::new(b"moof"), |buf| {
        Mfhd { sequence_number }.encode(buf)?;
        buf.encode_atom(FourCC::new(b"traf"), |buf| {
            tfhd.encode(buf)?;
            Tfdt {
                base_media_decode_time,
            }
            .encode(buf)?;
            data_offset_at = buf.len() + TRUN_DATA_OFFSET_AT;
            trun.encode(buf)
        })
    })?;
    // With default-base-is-moof the offset counts from the first byte of the
    // moof, which is the first byte of `buf`.
    let data_offset = i32::try_from(buf.len() + MDAT_HEADER).map_err(|_| too_large)?;
    buf.set_slice(data_offset_at, &data_offset.to_be_bytes());

    buf.encode_atom(FourCC::new(b"mdat"), |buf| {
        for sample in samples {
            buf.append_slice(&sample.data);
        }
        Ok(())
    })?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode, Mdat, Moof, Styp};

    fn frames(durations: &[u32]) -> Vec<Sample> {
        durations
            .iter()
            .enumerate()
            .map(|(i, &duration)| Sample {
                duration,
                // Distinct sizes and contents so that misplaced bytes show.
                data: Bytes::from(vec![i as u8; 100 + i * 7]),
            })
            .collect()
    }

    fn parse(bytes: &[u8]) -> (Moof, Mdat) {
        let mut rest = bytes;
        let moof = Moof::decode(&mut rest).expect("moof");
        let mdat = Mdat::decode(&mut rest).expect("mdat");
        assert!(rest.is_empty(), "{} trailing bytes", rest.len());
        (moof, mdat)
    }

    fn payload(samples: &[Sample]) -> Vec<u8> {
        samples
            .iter()
            .flat_map(|s| s.data.iter().copied())
            .collect()
    }

    #[test]
    fn equal_durations_go_to_tfhd_and_sizes_to_trun() {
        let samples = frames(&[960; 16]);
        let bytes = fragment(7, 1, 48_960, &samples).expect("fragment");
        let (moof, mdat) = parse(&bytes);
        assert_eq!(moof.mfhd.sequence_number, 7);
        let [traf] = moof.traf.as_slice() else {
            panic!("one traf expected");
        };
        assert_eq!(traf.tfhd.track_id, 1);
        assert!(traf.tfhd.default_base_is_moof);
        assert_eq!(traf.tfhd.base_data_offset, None);
        assert_eq!(traf.tfhd.default_sample_duration, Some(960));
        assert_eq!(traf.tfhd.default_sample_size, None);
        assert_eq!(traf.tfhd.default_sample_flags, Some(SYNC_SAMPLE_FLAGS));
        assert_eq!(
            traf.tfdt.as_ref().map(|t| t.base_media_decode_time),
            Some(48_960)
        );
        let [trun] = traf.trun.as_slice() else {
            panic!("one trun expected");
        };
        let sizes: Vec<_> = trun.samples.iter().map(|e| e.size).collect();
        let expected: Vec<_> = samples.iter().map(|s| Some(s.data.len() as u32)).collect();
        assert_eq!(sizes, expected);
        assert!(
            trun.samples
                .iter()
                .all(|e| e.duration.is_none() && e.flags.is_none())
        );
        assert_eq!(mdat.data, payload(&samples));
    }

    #[test]
    fn data_offset_points_at_the_first_payload_byte() {
        for samples in [
            frames(&[960; 16]),
            frames(&[1024; 15]),
            frames(&[1024, 1024, 17]),
        ] {
            let bytes = fragment(1, 1, 0, &samples).expect("fragment");
            let (moof, _) = parse(&bytes);
            let offset = moof.traf[0].trun[0].data_offset.expect("data_offset") as usize;
            let moof_size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            assert_eq!(offset, moof_size + 8);
            assert_eq!(&bytes[moof_size + 4..moof_size + 8], b"mdat");
            // Walking the trun sizes from data_offset recovers every sample.
            let mut at = offset;
            for sample in &samples {
                assert_eq!(&bytes[at..at + sample.data.len()], &sample.data[..]);
                at += sample.data.len();
            }
            assert_eq!(at, bytes.len());
        }
    }

    #[test]
    fn a_short_final_frame_puts_durations_in_trun() {
        let samples = frames(&[1024, 1024, 1024, 400]);
        let bytes = fragment(3, 1, 2048, &samples).expect("fragment");
        let (moof, _) = parse(&bytes);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.default_sample_duration, None);
        let durations: Vec<_> = traf.trun[0].samples.iter().map(|e| e.duration).collect();
        assert_eq!(durations, [Some(1024), Some(1024), Some(1024), Some(400)]);
    }

    #[test]
    fn equal_sizes_and_durations_leave_trun_without_entries() {
        let samples: Vec<_> = (0..4u8)
            .map(|i| Sample {
                duration: 960,
                data: Bytes::from(vec![i; 160]),
            })
            .collect();
        let bytes = fragment(9, 2, 0, &samples).expect("fragment");
        let (moof, mdat) = parse(&bytes);
        let traf = &moof.traf[0];
        assert_eq!(traf.tfhd.track_id, 2);
        assert_eq!(traf.tfhd.default_sample_size, Some(160));
        assert_eq!(traf.tfhd.default_sample_duration, Some(960));
        assert_eq!(
            traf.trun[0].samples,
            TrunSamples::Inherited {
                count: 4,
                first_flags: None
            }
        );
        assert_eq!(mdat.data, payload(&samples));
    }

    #[test]
    fn styp_names_the_cmaf_segment_brands() {
        let styp = Styp::decode(&mut &styp()[..]).expect("styp");
        assert_eq!(styp.major_brand, FourCC::new(b"cmfs"));
        assert_eq!(styp.minor_version, 0);
        assert_eq!(
            styp.compatible_brands,
            [b"cmfs", b"cmff", b"cmfl"].map(FourCC::new).to_vec()
        );
    }

    #[test]
    fn a_segment_is_its_parts_concatenated() {
        let mut segment = styp().to_vec();
        for (seq, base) in [(1u32, 0u64), (2, 15_360)] {
            segment.extend_from_slice(&fragment(seq, 1, base, &frames(&[960; 16])).expect("part"));
        }
        let mut rest = segment.as_slice();
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            kinds.push(Any::decode(&mut rest).expect("box").kind());
        }
        let expected = [b"styp", b"moof", b"mdat", b"moof", b"mdat"].map(FourCC::new);
        assert_eq!(kinds, expected);
    }

    #[test]
    fn unusable_input_is_refused() {
        assert!(matches!(fragment(1, 1, 0, &[]), Err(Error::NoSamples)));
        let samples = frames(&[960, 0]);
        assert!(matches!(
            fragment(4, 1, 0, &samples),
            Err(Error::ZeroDuration {
                sequence_number: 4,
                index: 1
            })
        ));
    }
}
