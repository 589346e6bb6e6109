//! AMF0 decoding of arbitrary bytes: whatever decodes must re-encode to
//! bytes that decode to the same encoding (values are compared by encoding,
//! since NaN != NaN).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::rtmp::amf0;

fuzz_target!(|data: &[u8]| {
    if let Ok(values) = amf0::decode_all(data) {
        let encoded = amf0::encode_all(&values);
        let again = amf0::decode_all(&encoded).expect("re-encoded values decode");
        assert_eq!(amf0::encode_all(&again), encoded);
    }
});
