//! The server handshake fed arbitrary bytes, step by step: it must consume
//! whole steps only, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::rtmp::handshake::Handshake;

fuzz_target!(|data: &[u8]| {
    let mut handshake = Handshake::new(0);
    let mut rest = data;
    while let Ok(Some(step)) = handshake.feed(rest) {
        assert!(step.consumed <= rest.len());
        rest = &rest[step.consumed..];
        if step.done {
            break;
        }
    }
});
