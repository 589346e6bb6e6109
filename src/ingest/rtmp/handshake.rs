//! The RTMP handshake, server side (RTMP 1.0 §5.2), simple form.
//!
//! The client sends C0 (one version byte) and C1 (1536 bytes: time, four
//! zero bytes, 1528 random bytes); the server answers S0 S1 S2 in one write;
//! the client sends C2 (its echo of S1) and the chunk streams begin.
//!
//! Contract: [`Handshake::feed`] takes the bytes received so far and either
//! consumes a whole step (C0+C1, then C2) or nothing. A wrong C0 is reported
//! as soon as its single byte arrives, so a peer speaking another protocol
//! (an HTTP request, a port scan) is turned away without waiting for 1537
//! bytes. The digest ("complex") handshake of Flash Player 9 is not
//! implemented: ffmpeg and OBS fall back to the simple one when S1 carries a
//! zero version field, as ours does.

use super::{Reader, RtmpError, XorShift};

/// The RTMP version in C0/S0 (§5.2.2): 3, plain RTMP.
pub const RTMP_VERSION: u8 = 3;

/// The size of C1, C2, S1 and S2 (§5.2.3).
pub const HANDSHAKE_SIZE: usize = 1536;

/// C0/S0 value of RTMPE (encrypted RTMP), which onair does not speak.
const RTMPE_VERSION: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitC0C1,
    AwaitC2,
    Done,
}

/// One completed handshake step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes the step consumed.
    pub consumed: usize,
    /// Bytes to send to the client (S0 S1 S2 after C0+C1, nothing after C2).
    pub send: Vec<u8>,
    /// Whether the handshake is complete: the bytes after it are chunks.
    pub done: bool,
}

/// The server side of the simple handshake.
#[derive(Debug, Clone)]
pub struct Handshake {
    state: State,
    s1: Vec<u8>,
}

impl Handshake {
    /// A handshake whose S1 filler comes from `seed` (any value: the simple
    /// handshake's random bytes only have to differ between connections).
    pub fn new(seed: u64) -> Self {
        let mut s1 = vec![0; HANDSHAKE_SIZE];
        // Bytes 0..4: our time, 0 is allowed (§5.2.3). Bytes 4..8: zero, which
        // tells Flash-era clients that this is the simple handshake.
        XorShift::new(seed).fill(&mut s1[8..]);
        Self {
            state: State::AwaitC0C1,
            s1,
        }
    }

    /// Whether C2 has been received.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Parses the next step from `input` (the unconsumed bytes received so
    /// far). `Ok(None)`: more bytes are needed, nothing was consumed.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<Step>, RtmpError> {
        match self.state {
            State::AwaitC0C1 => {
                let mut reader = Reader::new(input);
                let Some(version) = reader.u8() else {
                    return Ok(None);
                };
                check_version(version)?;
                let Some(c1) = reader.bytes(HANDSHAKE_SIZE) else {
                    return Ok(None);
                };
                let mut send = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE);
                send.push(RTMP_VERSION);
                send.extend_from_slice(&self.s1);
                // S2 echoes C1 (§5.2.3). The spec puts the time C1 was read in
                // bytes 4..8; librtmp compares the whole echo with what it
                // sent and complains otherwise, so C1 is echoed unchanged.
                send.extend_from_slice(c1);
                self.state = State::AwaitC2;
                Ok(Some(Step {
                    consumed: reader.position(),
                    send,
                    done: false,
                }))
            }
            State::AwaitC2 => {
                // C2 should echo S1; ffmpeg does, other clients send their own
                // bytes, and nothing depends on it, so it is not compared.
                if input.len() < HANDSHAKE_SIZE {
                    return Ok(None);
                }
                self.state = State::Done;
                Ok(Some(Step {
                    consumed: HANDSHAKE_SIZE,
                    send: Vec::new(),
                    done: true,
                }))
            }
            State::Done => Ok(None),
        }
    }
}

fn check_version(version: u8) -> Result<(), RtmpError> {
    match version {
        RTMP_VERSION => Ok(()),
        RTMPE_VERSION => Err(RtmpError::unsupported(
            "encrypted RTMP (RTMPE, C0 version 6) is not supported",
        )),
        other => Err(RtmpError::malformed(format!(
            "C0 version is {other} (0x{other:02x}), expected {RTMP_VERSION}: not an RTMP client"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::prop;

    fn client_hello() -> Vec<u8> {
        let mut bytes = vec![RTMP_VERSION];
        bytes.extend((0..HANDSHAKE_SIZE).map(|i| (i * 7) as u8));
        bytes
    }

    #[test]
    fn answers_c0_c1_with_s0_s1_s2_then_takes_c2() {
        let mut handshake = Handshake::new(1);
        let hello = client_hello();
        assert_eq!(handshake.feed(&hello[..1000]).unwrap(), None);
        let step = handshake.feed(&hello).unwrap().unwrap();
        assert_eq!(step.consumed, 1 + HANDSHAKE_SIZE);
        assert!(!step.done);
        assert_eq!(step.send.len(), 1 + 2 * HANDSHAKE_SIZE);
        assert_eq!(step.send[0], RTMP_VERSION);
        assert_eq!(&step.send[1..9], &[0; 8], "S1 time and zero field");
        assert_eq!(
            &step.send[1 + HANDSHAKE_SIZE..],
            &hello[1..],
            "S2 echoes C1"
        );

        let c2 = step.send[1..1 + HANDSHAKE_SIZE].to_vec();
        assert_eq!(handshake.feed(&c2[..HANDSHAKE_SIZE - 1]).unwrap(), None);
        let step = handshake.feed(&c2).unwrap().unwrap();
        assert_eq!((step.consumed, step.done), (HANDSHAKE_SIZE, true));
        assert!(handshake.is_done());
    }

    #[test]
    fn rejects_a_foreign_protocol_at_the_first_byte() {
        let mut handshake = Handshake::new(1);
        let error = handshake.feed(b"G").unwrap_err();
        assert!(matches!(error, RtmpError::Malformed { .. }), "{error}");
        let error = Handshake::new(1).feed(&[RTMPE_VERSION]).unwrap_err();
        assert!(matches!(error, RtmpError::Unsupported { .. }), "{error}");
    }

    #[test]
    fn survives_random_and_mutated_input() {
        let mut inputs = prop::random_inputs(11, 300, 4000);
        let mut valid = client_hello();
        valid.extend(vec![0; HANDSHAKE_SIZE]);
        inputs.extend(prop::mutations(12, &valid, 300));
        for input in inputs {
            fuzz_one(&input);
        }
    }

    /// What the fuzz target does: feed everything, step by step.
    pub(crate) fn fuzz_one(input: &[u8]) {
        let mut handshake = Handshake::new(0);
        let mut rest = input;
        while let Ok(Some(step)) = handshake.feed(rest) {
            assert!(step.consumed <= rest.len());
            rest = &rest[step.consumed..];
            if step.done {
                break;
            }
        }
    }
}
