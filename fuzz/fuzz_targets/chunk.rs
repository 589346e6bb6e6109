//! The chunk decoder fed arbitrary bytes, honouring Set Chunk Size and Abort
//! as a session does: every chunk consumes at least one byte and never more
//! than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::rtmp::chunk::{ChunkDecoder, ChunkLimits, Decoded, message_type};

fuzz_target!(|data: &[u8]| {
    let mut decoder = ChunkDecoder::new(ChunkLimits::default(), Some(message_type::VIDEO));
    let mut rest = data;
    while let Ok(Some((consumed, decoded))) = decoder.decode(rest) {
        assert!(consumed > 0 && consumed <= rest.len());
        rest = &rest[consumed..];
        let Decoded::Message(message) = decoded else {
            continue;
        };
        let Some(value) = message.payload.get(..4) else {
            continue;
        };
        let value = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        match message.type_id {
            message_type::SET_CHUNK_SIZE => {
                if decoder.set_chunk_size(value).is_err() {
                    return;
                }
            }
            message_type::ABORT => decoder.abort(value),
            _ => {}
        }
    }
});
