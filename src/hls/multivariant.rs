//! The multivariant playlist (`index.m3u8`, RFC 8216bis 4.4.6).
//!
//! All renditions of a broadcast are one audio program, so the playlist
//! offers them as one group of alternative audio renditions (`EXT-X-MEDIA`,
//! 4.4.6.1) behind a single `EXT-X-STREAM-INF` (4.4.6.2):
//!
//! ```text
//! #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="AAC",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2"
//! #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Opus",AUTOSELECT=YES,CHANNELS="2",URI="opus/live.m3u8"
//! #EXT-X-STREAM-INF:BANDWIDTH=…,CODECS="mp4a.40.2,opus",AUDIO="audio"
//! aac/live.m3u8
//! ```
//!
//! The default rendition has no URI: its media is the variant's own media
//! playlist (4.4.6.1, URI). `CODECS` lists every codec of the group and
//! `BANDWIDTH` covers the largest rendition, as 4.4.6.2 requires.
//!
//! Why not one `EXT-X-STREAM-INF` per codec: Chromium's native HLS player
//! (Chromium 156) switches between variants for bandwidth and refuses to
//! switch codecs ("Audio codec changes not allowed"), failing with
//! `MEDIA_ERR_DECODE` on an Opus and an AAC variant in any order or form.
//! With a single variant it plays the default (AAC) rendition and never
//! switches; hls.js plays the default and offers Opus as an audio track;
//! ffmpeg reads both. `tests/browser.rs` plays this playlist natively.
//!
//! Order: Apple's HLS authoring rules require a stereo AAC-LC rendition, and
//! the default rendition is what most players play, so stereo AAC comes
//! first, then other AAC renditions, then the rest, each group in the order
//! given. The playlist is written with m3u8-rs.

use m3u8_rs::{AlternativeMedia, AlternativeMediaType, MasterPlaylist, VariantStream};

use crate::hls::timeline::uri_is_writable;

/// The `GROUP-ID` of the audio renditions.
const AUDIO_GROUP: &str = "audio";

/// One rendition offered in the multivariant playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// `NAME` shown by players that let a listener pick a rendition.
    pub name: String,
    /// URI of the rendition's media playlist, relative to `index.m3u8`.
    pub uri: String,
    /// RFC 6381 codec string: `"opus"` or `"mp4a.40.2"` (AAC-LC).
    pub codecs: String,
    /// `BANDWIDTH`: peak bit rate in bits per second, container included.
    pub bandwidth: u64,
    /// `AVERAGE-BANDWIDTH`: average bit rate in bits per second.
    pub average_bandwidth: Option<u64>,
    /// Audio channel count. `CHANNELS` is an `EXT-X-MEDIA` attribute, not an
    /// `EXT-X-STREAM-INF` one, so it is not written; it decides the order
    /// (stereo AAC first).
    pub channels: u32,
}

/// A variant list that cannot make a valid multivariant playlist. Fix the
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultivariantError {
    /// No variant was given.
    #[error("a multivariant playlist needs at least one variant")]
    NoVariants,
    /// A URI or codec string would break the playlist text.
    #[error("variant {index}: {field} {value:?} cannot be written into a playlist")]
    Unwritable {
        /// Index in the given list.
        index: usize,
        /// `URI` or `CODECS`.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// `BANDWIDTH` is zero or below `AVERAGE-BANDWIDTH` (4.4.6.2: BANDWIDTH
    /// is the peak).
    #[error(
        "variant {index}: BANDWIDTH {bandwidth} must be positive and at least AVERAGE-BANDWIDTH {average:?}"
    )]
    InvalidBandwidth {
        /// Index in the given list.
        index: usize,
        /// Peak bit rate.
        bandwidth: u64,
        /// Average bit rate.
        average: Option<u64>,
    },
}

/// Renders the multivariant playlist for `variants`, stereo AAC first.
pub fn multivariant(variants: &[Variant]) -> Result<String, MultivariantError> {
    if variants.is_empty() {
        return Err(MultivariantError::NoVariants);
    }
    for (index, v) in variants.iter().enumerate() {
        if variants[..index].iter().any(|o| o.name == v.name) {
            return Err(MultivariantError::Unwritable {
                index,
                field: "NAME (not unique)",
                value: v.name.clone(),
            });
        }
        for (field, value) in [("URI", &v.uri), ("CODECS", &v.codecs), ("NAME", &v.name)] {
            if !uri_is_writable(value) {
                return Err(MultivariantError::Unwritable {
                    index,
                    field,
                    value: value.clone(),
                });
            }
        }
        if v.bandwidth == 0 || v.average_bandwidth.is_some_and(|a| a > v.bandwidth) {
            return Err(MultivariantError::InvalidBandwidth {
                index,
                bandwidth: v.bandwidth,
                average: v.average_bandwidth,
            });
        }
    }
    let mut ordered: Vec<&Variant> = variants.iter().collect();
    // Stable: the given order holds within each rank.
    ordered.sort_by_key(|v| match (is_aac(&v.codecs), v.channels) {
        (true, 2) => 0,
        (true, _) => 1,
        _ => 2,
    });
    let mut codecs: Vec<&str> = Vec::new();
    for v in &ordered {
        for c in v.codecs.split(',') {
            if !codecs.contains(&c) {
                codecs.push(c);
            }
        }
    }
    let first = ordered[0];
    let playlist = MasterPlaylist {
        independent_segments: true,
        alternatives: ordered
            .iter()
            .enumerate()
            .map(|(i, v)| AlternativeMedia {
                media_type: AlternativeMediaType::Audio,
                // The default rendition is the variant's own media playlist.
                uri: (i > 0).then(|| v.uri.clone()),
                group_id: AUDIO_GROUP.into(),
                name: v.name.clone(),
                default: i == 0,
                autoselect: true,
                channels: Some(v.channels.to_string()),
                ..AlternativeMedia::default()
            })
            .collect(),
        variants: vec![VariantStream {
            uri: first.uri.clone(),
            bandwidth: ordered
                .iter()
                .map(|v| v.bandwidth)
                .max()
                .unwrap_or(first.bandwidth),
            average_bandwidth: ordered.iter().filter_map(|v| v.average_bandwidth).max(),
            codecs: Some(codecs.join(",")),
            audio: Some(AUDIO_GROUP.into()),
            ..VariantStream::default()
        }],
        ..MasterPlaylist::default()
    };
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail, and every field written is valid UTF-8
    // text; fall back to a lossy conversion rather than panic.
    let _ = playlist.write_to(&mut bytes);
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// AAC (any object type) in RFC 6381 form: `mp4a.40.*`.
fn is_aac(codecs: &str) -> bool {
    codecs.starts_with("mp4a.40.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(uri: &str, codecs: &str, bandwidth: u64, channels: u32) -> Variant {
        Variant {
            name: uri.split('/').next().unwrap_or(uri).to_uppercase(),
            uri: uri.into(),
            codecs: codecs.into(),
            bandwidth,
            average_bandwidth: Some(bandwidth * 9 / 10),
            channels,
        }
    }

    #[test]
    fn stereo_aac_comes_first() {
        let text = multivariant(&[
            variant("opus/live.m3u8", "opus", 70_000, 2),
            variant("aac-mono/live.m3u8", "mp4a.40.2", 60_000, 1),
            variant("aac/live.m3u8", "mp4a.40.2", 104_000, 2),
        ])
        .expect("valid");
        let expected = "\
#EXTM3U
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"AAC\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\"
#EXT-X-MEDIA:TYPE=AUDIO,URI=\"aac-mono/live.m3u8\",GROUP-ID=\"audio\",NAME=\"AAC-MONO\",AUTOSELECT=YES,CHANNELS=\"1\"
#EXT-X-MEDIA:TYPE=AUDIO,URI=\"opus/live.m3u8\",GROUP-ID=\"audio\",NAME=\"OPUS\",AUTOSELECT=YES,CHANNELS=\"2\"
#EXT-X-STREAM-INF:BANDWIDTH=104000,AVERAGE-BANDWIDTH=93600,CODECS=\"mp4a.40.2,opus\",AUDIO=\"audio\"
aac/live.m3u8
";
        assert_eq!(text, expected);
        // m3u8-rs reads back what it wrote.
        match m3u8_rs::parse_playlist_res(text.as_bytes()) {
            Ok(m3u8_rs::Playlist::MasterPlaylist(m)) => {
                assert_eq!(m.variants.len(), 1);
                assert_eq!(m.variants[0].uri, "aac/live.m3u8");
                assert_eq!(m.alternatives.len(), 3);
                assert_eq!(m.alternatives[2].uri.as_deref(), Some("opus/live.m3u8"));
            }
            other => panic!("not a multivariant playlist: {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_variants() {
        assert_eq!(multivariant(&[]), Err(MultivariantError::NoVariants));
        assert!(matches!(
            multivariant(&[variant("a b.m3u8", "opus", 1, 2)]),
            Err(MultivariantError::Unwritable {
                index: 0,
                field: "URI",
                ..
            })
        ));
        assert!(matches!(
            multivariant(&[variant("a.m3u8", "opus\"", 1, 2)]),
            Err(MultivariantError::Unwritable {
                field: "CODECS",
                ..
            })
        ));
        let mut v = variant("a.m3u8", "opus", 64_000, 2);
        v.average_bandwidth = Some(65_000);
        assert_eq!(
            multivariant(&[v]),
            Err(MultivariantError::InvalidBandwidth {
                index: 0,
                bandwidth: 64_000,
                average: Some(65_000)
            })
        );
    }
}
