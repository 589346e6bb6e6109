//! FLV audio tag parsing (E.4.2.1) of arbitrary bytes: an accepted AAC
//! config must be within the bounds the parser promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::rtmp::flv::{AudioTag, parse_audio_tag};

fuzz_target!(|data: &[u8]| {
    if let Ok(AudioTag::AacSequenceHeader(config)) = parse_audio_tag(data) {
        assert!((7_350..=96_000).contains(&config.sample_rate));
        assert!((1..=8).contains(&config.channels));
        assert_eq!(config.object_type, 2);
    }
});
