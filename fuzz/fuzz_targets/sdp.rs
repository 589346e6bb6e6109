//! The WHIP offer pre-check on arbitrary bytes, for a publisher's offer and
//! for a return-only (WHEP) one: it must never panic, every
//! refusal must be a short text fit for a `400` body, and an accepted offer
//! must really carry what the summary says (RFC 9725 §4.2, RFC 7587 §7).
//! Seed the corpus with a real offer, e.g. one printed by
//! `tests/whip/whip_publish.py --print-offer`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onair::ingest::whip::sdp::{
    MAX_CANDIDATES, MAX_LINES, MAX_MEDIA, MAX_OFFER_BYTES, Purpose, check_offer_for,
};

/// A refusal is sent back as the body of the 400: it quotes at most 60
/// characters of the offending line, escaped (at most 10 bytes each).
const MAX_REASON_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    for purpose in [Purpose::Publish, Purpose::Return] {
        check(data, purpose);
    }
});

fn check(data: &[u8], purpose: Purpose) {
    let summary = match check_offer_for(data, purpose) {
        Ok(summary) => summary,
        Err(e) => {
            let reason = e.to_string();
            assert!(!reason.is_empty());
            assert!(reason.len() <= MAX_REASON_BYTES, "{} bytes", reason.len());
            return;
        }
    };
    // Accepted: the limits held and the text is what the summary claims.
    assert!(data.len() <= MAX_OFFER_BYTES);
    let text = std::str::from_utf8(data).expect("an accepted offer is UTF-8");
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    assert!(lines.len() <= MAX_LINES + 1);
    assert_eq!(lines.first().copied(), Some("v=0"));
    let m_lines = lines.iter().filter(|l| l.starts_with("m=")).count();
    assert_eq!(summary.media_count, m_lines);
    assert!((1..=MAX_MEDIA).contains(&summary.media_count));
    let candidates = lines
        .iter()
        .filter(|l| l.starts_with("a=candidate:"))
        .count();
    assert!(candidates <= MAX_CANDIDATES);
    assert!(lines.iter().any(|l| l.starts_with("m=audio ")));
    assert!(summary.opus_payload_type <= 127);
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has("a=ice-ufrag:") && has("a=ice-pwd:") && has("a=fingerprint:"));
    assert!(
        lines.iter().any(|l| l.starts_with("a=rtpmap:")
            && l.to_ascii_lowercase().contains("opus/48000/2")),
        "accepted without an Opus rtpmap"
    );
    if let Some(mid) = &summary.audio_mid {
        assert!(has(&format!("a=mid:{mid}")) || (mid.is_empty() && has("a=mid")));
    }
    let fmtp_says = |key: &str| {
        lines.iter().any(|l| {
            l.starts_with("a=fmtp:") && l.to_ascii_lowercase().contains(&format!("{key}="))
        })
    };
    assert!(!summary.inband_fec || fmtp_says("useinbandfec"));
    assert!(!summary.dtx || fmtp_says("usedtx"));
    assert!(purpose == Purpose::Publish || summary.wants_return);
}
