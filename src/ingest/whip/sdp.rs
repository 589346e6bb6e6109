//! A bounded pre-check of a WHIP offer (RFC 9725 §4.2) before it reaches the
//! WebRTC stack.
//!
//! [`check_offer`] looks at the raw body of the `POST` (`application/sdp`)
//! and either summarises the one thing onair needs from it, an Opus audio
//! section the host sends, or says in plain words why the offer cannot be
//! used, for the body of a `400 Bad Request`.
//!
//! # Contract
//! - Work is bounded before any parsing: at most [`MAX_OFFER_BYTES`] bytes,
//!   [`MAX_LINES`] lines, [`MAX_MEDIA`] media sections and [`MAX_CANDIDATES`]
//!   ICE candidates. An offer over a limit is rejected as a whole, so the
//!   WebRTC stack never sees an SDP bomb.
//! - Every line must be `<type>=<value>` with a type letter RFC 8866 §5
//!   defines, and the first line must be `v=0` (RFC 8866 §5.1). Lines end in
//!   CRLF or, leniently, LF; a trailing blank line is tolerated.
//! - The offer must carry at least one `m=audio` section with a secure RTP
//!   profile, an `a=rtpmap:<pt> opus/48000/2` for one of its payload types
//!   (RFC 7587 §7; the encoding name is case-insensitive, RFC 8866 §6.6) and
//!   a direction of `sendonly` or `sendrecv` (RFC 8866 §6.7, the default
//!   being `sendrecv`): the WHIP endpoint only receives. The first such
//!   section is the one summarised.
//! - ICE credentials (`a=ice-ufrag`, `a=ice-pwd`, RFC 8839 §5.4) and a DTLS
//!   fingerprint (`a=fingerprint`, RFC 8122 §5) must be present at session
//!   level or in that audio section.
//! - The check never panics and never allocates more than a small multiple
//!   of the input; everything else (codecs of other sections, candidates,
//!   extensions) is the WebRTC stack's business.

use std::fmt;

/// The largest offer accepted, in bytes. Browser offers are 2-6 KiB.
pub const MAX_OFFER_BYTES: usize = 32 * 1024;
/// The most lines an offer may have.
pub const MAX_LINES: usize = 2000;
/// The most media sections (`m=` lines) an offer may have.
pub const MAX_MEDIA: usize = 8;
/// The most ICE candidates (`a=candidate` lines) an offer may have, in all.
pub const MAX_CANDIDATES: usize = 32;

/// Type letters defined by RFC 8866 §5 (`k=` is obsolete but still legal).
const KNOWN_TYPES: &[u8] = b"vosiuepcbtrzkam";
/// How much of an offending line an error quotes.
const QUOTE_CHARS: usize = 60;

/// What onair needs from an acceptable offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// The `a=mid` of the audio section the host sends Opus in (RFC 9143
    /// §4.2), `None` if that section has none.
    pub audio_mid: Option<String>,
    /// The RTP payload type mapped to `opus/48000/2` in that section.
    pub opus_payload_type: u8,
    /// The offer's `a=fmtp` for Opus asks for in-band FEC
    /// (`useinbandfec=1`, RFC 7587 §6.1).
    pub inband_fec: bool,
    /// The offer's `a=fmtp` for Opus announces DTX (`usedtx=1`, RFC 7587
    /// §6.1).
    pub dtx: bool,
    /// How many media sections the offer has.
    pub media_count: usize,
    /// The audio section is `sendrecv`: the host also receives on it, and
    /// is sent its mix-minus return there.
    pub wants_return: bool,
}

/// Why an offer was refused. Every variant means: answer `400 Bad Request`
/// with the `Display` text as the body, and do not hand the offer on. The
/// text names the offending line (1-based) where there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is empty.
    #[error("the offer is empty: POST an SDP offer (Content-Type: application/sdp)")]
    Empty,
    /// The body is larger than [`MAX_OFFER_BYTES`].
    #[error("the offer is {len} bytes; at most {MAX_OFFER_BYTES} bytes are accepted")]
    TooLarge {
        /// The body's length in bytes.
        len: usize,
    },
    /// The body is not UTF-8 text.
    #[error("the offer is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The body has more than [`MAX_LINES`] lines.
    #[error("the offer has more than {MAX_LINES} lines")]
    TooManyLines,
    /// The offer has more than [`MAX_MEDIA`] media sections.
    #[error("the offer has {count} media sections (m= lines); at most {MAX_MEDIA} are accepted")]
    TooManyMedia {
        /// How many `m=` lines were seen before giving up.
        count: usize,
    },
    /// The offer has more than [`MAX_CANDIDATES`] ICE candidates.
    #[error("the offer has more than {MAX_CANDIDATES} ICE candidates (a=candidate lines)")]
    TooManyCandidates,
    /// A line breaks the SDP grammar (RFC 8866 §9).
    #[error("line {line}: {reason}")]
    Malformed {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it, quoting the line.
        reason: String,
    },
    /// No audio section sends Opus to the endpoint.
    #[error("no usable audio: {reason}")]
    NoOpusAudio {
        /// What was found instead.
        reason: String,
    },
    /// ICE credentials are missing (RFC 8839 §5.4).
    #[error(
        "the offer has no {missing} for its audio section (RFC 8839 §5.4): \
         ICE credentials are required at session level or in the audio m= section"
    )]
    MissingIce {
        /// The missing attribute, `a=ice-ufrag` or `a=ice-pwd`.
        missing: &'static str,
    },
    /// No DTLS fingerprint (RFC 8122 §5).
    #[error(
        "the offer has no a=fingerprint for its audio section (RFC 8122 §5): \
         DTLS-SRTP needs the certificate fingerprint at session level or in the audio m= section"
    )]
    MissingFingerprint,
}

/// Media direction (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn parse(attr: &str) -> Option<Self> {
        match attr {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }

    fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }

    fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        })
    }
}

/// The attributes of one level (session or a media section) that matter.
#[derive(Debug, Default)]
struct Level {
    direction: Option<Direction>,
    ice_ufrag: bool,
    ice_pwd: bool,
    fingerprint: bool,
}

/// One `m=` section.
#[derive(Debug, Default)]
struct Media {
    /// Line number of its `m=` line.
    line: usize,
    audio: bool,
    /// Port 0 without `a=bundle-only`: the section is disabled (RFC 9143
    /// §6, RFC 3264 §6).
    port_zero: bool,
    bundle_only: bool,
    secure_rtp: bool,
    formats: Vec<u8>,
    mid: Option<String>,
    /// Payload types whose `a=rtpmap` is `opus/48000/2`, in order.
    opus: Vec<u8>,
    /// `a=fmtp` parameters for each payload type, as (pt, fec, dtx).
    fmtp: Vec<(u8, bool, bool)>,
    level: Level,
}

/// What an offer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A host publishes (WHIP): its audio section must send
    /// (`sendonly` or `sendrecv`).
    Publish,
    /// A host only hears its return feed (WHEP): its audio section must
    /// receive (`recvonly` or `sendrecv`).
    Return,
}

/// Checks a WHIP offer and summarises its Opus audio section.
///
/// Returns [`SdpError`] (answer 400 with its text) if the offer is over a
/// limit, breaks the SDP grammar, or has no usable Opus audio, ICE
/// credentials or fingerprint. See the module documentation for the rules.
pub fn check_offer(body: &[u8]) -> Result<OfferSummary, SdpError> {
    check_offer_for(body, Purpose::Publish)
}

/// [`check_offer`] for an offer with `purpose`: for [`Purpose::Return`]
/// the audio section must receive instead of send, and the summary always
/// wants the return.
pub fn check_offer_for(body: &[u8], purpose: Purpose) -> Result<OfferSummary, SdpError> {
    if body.is_empty() {
        return Err(SdpError::Empty);
    }
    if body.len() > MAX_OFFER_BYTES {
        return Err(SdpError::TooLarge { len: body.len() });
    }
    let text = std::str::from_utf8(body).map_err(|e| SdpError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    // Count before splitting so no work is proportional to a bomb's size.
    if text.bytes().filter(|&b| b == b'\n').count() > MAX_LINES {
        return Err(SdpError::TooManyLines);
    }

    let mut session = Level::default();
    let mut media: Vec<Media> = Vec::new();
    let mut candidates = 0usize;
    // A trailing CRLF leaves one empty piece after the last split.
    let mut lines = text.split('\n').peekable();
    let mut number = 0usize;
    while let Some(raw) = lines.next() {
        number += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            // Only trailing blank lines may follow: anything after a blank
            // line must still be checked (it is what a bomb would hide).
            if lines.clone().all(|rest| rest.trim().is_empty()) {
                break;
            }
            return Err(malformed(
                number,
                "empty line (RFC 8866 §5: every line is <type>=<value>)",
                line,
            ));
        }
        let bytes = line.as_bytes();
        let (kind, value) = match (bytes.first(), bytes.get(1)) {
            (Some(&k), Some(b'=')) if KNOWN_TYPES.contains(&k) => (k, line.get(2..).unwrap_or("")),
            (Some(k), Some(b'=')) => {
                return Err(malformed(
                    number,
                    &format!(
                        "unknown line type '{}' (RFC 8866 §5 defines v o s i u e p c b t r z k a m)",
                        char::from(*k).escape_default()
                    ),
                    line,
                ));
            }
            _ => return Err(malformed(number, "not of the form <type>=<value>", line)),
        };
        if number == 1 {
            if kind != b'v' || value != "0" {
                return Err(malformed(
                    number,
                    "the first line must be v=0 (RFC 8866 §5.1)",
                    line,
                ));
            }
            continue;
        }
        match kind {
            b'v' => return Err(malformed(number, "v= may only be the first line", line)),
            b'm' => {
                if media.len() == MAX_MEDIA {
                    return Err(SdpError::TooManyMedia {
                        count: MAX_MEDIA + 1,
                    });
                }
                media.push(parse_media(number, value, line)?);
            }
            b'a' => {
                if value.starts_with("candidate:") {
                    candidates += 1;
                    if candidates > MAX_CANDIDATES {
                        return Err(SdpError::TooManyCandidates);
                    }
                }
                match media.last_mut() {
                    Some(m) => media_attribute(m, number, value, line)?,
                    None => level_attribute(&mut session, number, value, line)?,
                }
            }
            _ => {}
        }
    }

    let media_count = media.len();
    let Some(audio) = media.iter().find(|m| usable(m, &session, purpose).is_ok()) else {
        return Err(SdpError::NoOpusAudio {
            reason: explain_no_audio(&media, &session, purpose),
        });
    };
    if !(session.ice_ufrag || audio.level.ice_ufrag) {
        return Err(SdpError::MissingIce {
            missing: "a=ice-ufrag",
        });
    }
    if !(session.ice_pwd || audio.level.ice_pwd) {
        return Err(SdpError::MissingIce {
            missing: "a=ice-pwd",
        });
    }
    if !(session.fingerprint || audio.level.fingerprint) {
        return Err(SdpError::MissingFingerprint);
    }
    let pt = opus_pt(audio).unwrap_or_default();
    let (inband_fec, dtx) = audio
        .fmtp
        .iter()
        .find(|(p, _, _)| *p == pt)
        .map(|&(_, fec, dtx)| (fec, dtx))
        .unwrap_or((false, false));
    Ok(OfferSummary {
        audio_mid: audio.mid.clone(),
        opus_payload_type: pt,
        inband_fec,
        dtx,
        media_count,
        wants_return: purpose == Purpose::Return
            || direction(audio, &session) == Direction::SendRecv,
    })
}

/// The first Opus payload type that the `m=` line lists.
fn opus_pt(m: &Media) -> Option<u8> {
    m.opus.iter().copied().find(|pt| m.formats.contains(pt))
}

/// A section's direction: its own, else the session's, else `sendrecv`
/// (RFC 8866 §6.7).
fn direction(m: &Media, session: &Level) -> Direction {
    m.level
        .direction
        .or(session.direction)
        .unwrap_or(Direction::SendRecv)
}

/// Whether a section is one the host sends Opus in, or why not.
fn usable(m: &Media, session: &Level, purpose: Purpose) -> Result<u8, String> {
    let at = format!("m=audio on line {}", m.line);
    if !m.audio {
        return Err(format!("line {} is not audio", m.line));
    }
    if m.port_zero && !m.bundle_only {
        return Err(format!("{at} is disabled (port 0)"));
    }
    if !m.secure_rtp {
        return Err(format!(
            "{at} does not use a secure RTP profile (WebRTC uses UDP/TLS/RTP/SAVPF)"
        ));
    }
    let Some(pt) = opus_pt(m) else {
        return Err(format!(
            "{at} has no a=rtpmap:<pt> opus/48000/2 for a payload type it lists (RFC 7587 §7)"
        ));
    };
    let direction = direction(m, session);
    match purpose {
        Purpose::Publish if !direction.sends() => Err(format!(
            "{at} is {direction}; a WHIP endpoint only receives, so the audio must be sendonly or sendrecv"
        )),
        Purpose::Return if !direction.receives() => Err(format!(
            "{at} is {direction}; a return session only sends, so the audio must be recvonly or sendrecv"
        )),
        _ => Ok(pt),
    }
}

/// The reason to give when no section is usable: the one about the first
/// audio section, which is what the sender most likely meant.
fn explain_no_audio(media: &[Media], session: &Level, purpose: Purpose) -> String {
    match media.iter().find(|m| m.audio) {
        None if media.is_empty() => "the offer has no media sections (m= lines)".into(),
        None => "the offer has no m=audio section".into(),
        Some(m) => usable(m, session, purpose).err().unwrap_or_default(),
    }
}

/// Parses `m=<media> <port>[/<n>] <proto> <fmt> ...` (RFC 8866 §5.14).
fn parse_media(number: usize, value: &str, line: &str) -> Result<Media, SdpError> {
    let mut fields = value.split(' ');
    let (Some(kind), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(malformed(
            number,
            "m= needs <media> <port> <proto> <fmt>...",
            line,
        ));
    };
    let port = port.split('/').next().unwrap_or(port);
    let port: u16 = port
        .parse()
        .map_err(|_| malformed(number, "m= port is not a number from 0 to 65535", line))?;
    let mut m = Media {
        line: number,
        audio: kind == "audio",
        port_zero: port == 0,
        // RFC 8866 §5.14: the profile name; DTLS-SRTP is RFC 5764 §8.
        secure_rtp: proto.ends_with("RTP/SAVPF") || proto.ends_with("RTP/SAVP"),
        ..Media::default()
    };
    if proto.contains("RTP/") {
        for fmt in fields {
            let pt: u8 = fmt.parse().ok().filter(|pt| *pt <= 127).ok_or_else(|| {
                malformed(
                    number,
                    "RTP payload types in m= must be numbers 0-127",
                    line,
                )
            })?;
            // Bounded by the line length, itself bounded by the offer size.
            m.formats.push(pt);
        }
    }
    Ok(m)
}

/// Records an attribute of a media section.
fn media_attribute(m: &mut Media, number: usize, value: &str, line: &str) -> Result<(), SdpError> {
    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
    match name {
        "mid" => m.mid = Some(arg.to_owned()),
        "bundle-only" => m.bundle_only = true,
        "rtpmap" => {
            // a=rtpmap:<pt> <encoding name>/<clock rate>[/<channels>] (RFC 8866 §6.6)
            let (pt, codec) = arg.split_once(' ').ok_or_else(|| {
                malformed(number, "a=rtpmap needs <payload type> <encoding>", line)
            })?;
            let pt = payload_type(number, pt, line)?;
            let mut parts = codec.trim().split('/');
            let name = parts.next().unwrap_or("");
            if name.eq_ignore_ascii_case("opus") {
                if parts.next() == Some("48000")
                    && parts.next() == Some("2")
                    && parts.next().is_none()
                {
                    m.opus.push(pt);
                } else {
                    return Err(malformed(
                        number,
                        "Opus must be mapped as opus/48000/2 whatever is sent (RFC 7587 §7)",
                        line,
                    ));
                }
            }
        }
        "fmtp" => {
            let (pt, params) = arg.split_once(' ').unwrap_or((arg, ""));
            let pt = payload_type(number, pt, line)?;
            let flag = |key: &str| {
                params.split(';').any(|p| {
                    p.split_once('=')
                        .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(key) && v.trim() == "1")
                })
            };
            m.fmtp.push((pt, flag("useinbandfec"), flag("usedtx")));
        }
        _ => level_attribute(&mut m.level, number, value, line)?,
    }
    Ok(())
}

/// Records an attribute that may appear at session or media level.
fn level_attribute(
    level: &mut Level,
    number: usize,
    value: &str,
    line: &str,
) -> Result<(), SdpError> {
    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
    if let Some(direction) = Direction::parse(name) {
        level.direction = Some(direction);
        return Ok(());
    }
    match name {
        // RFC 8839 §5.4: ice-ufrag 4-256, ice-pwd 22-256 ice-chars.
        "ice-ufrag" => {
            ice_chars(number, arg, 4, "a=ice-ufrag", line)?;
            level.ice_ufrag = true;
        }
        "ice-pwd" => {
            ice_chars(number, arg, 22, "a=ice-pwd", line)?;
            level.ice_pwd = true;
        }
        "fingerprint" => {
            // RFC 8122 §5: hash-func SP 2UHEX *(":" 2UHEX)
            let (hash, fp) = arg.split_once(' ').unwrap_or((arg, ""));
            let known = [
                "sha-1", "sha-224", "sha-256", "sha-384", "sha-512", "md5", "md2",
            ];
            let pairs_ok = !fp.is_empty()
                && fp
                    .split(':')
                    .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
            if !known.iter().any(|h| h.eq_ignore_ascii_case(hash)) || !pairs_ok {
                return Err(malformed(
                    number,
                    "a=fingerprint must be <hash function> <hex pairs separated by colons> (RFC 8122 §5)",
                    line,
                ));
            }
            level.fingerprint = true;
        }
        _ => {}
    }
    Ok(())
}

fn ice_chars(number: usize, arg: &str, min: usize, what: &str, line: &str) -> Result<(), SdpError> {
    let ok = (min..=256).contains(&arg.len())
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if ok {
        Ok(())
    } else {
        Err(malformed(
            number,
            &format!("{what} must be {min} to 256 characters of A-Z a-z 0-9 + / (RFC 8839 §5.4)"),
            line,
        ))
    }
}

fn payload_type(number: usize, text: &str, line: &str) -> Result<u8, SdpError> {
    text.parse()
        .ok()
        .filter(|pt| *pt <= 127)
        .ok_or_else(|| malformed(number, "the payload type must be a number 0-127", line))
}

/// A [`SdpError::Malformed`] quoting (the start of) the line, escaped.
fn malformed(line: usize, what: &str, text: &str) -> SdpError {
    let quoted: String = text.chars().take(QUOTE_CHARS).collect();
    let more = if text.chars().nth(QUOTE_CHARS).is_some() {
        "…"
    } else {
        ""
    };
    SdpError::Malformed {
        line,
        reason: format!("{what}: {:?}{more}", quoted),
    }
}

/// Adds `stereo=1; sprop-stereo=1` to the Opus format parameters of an SDP
/// answer (RFC 7587 §7.1) unless they say otherwise: `stereo` in the
/// answer is what tells the sender it may send stereo (§6.1), and the
/// program is stereo. Without an `a=fmtp` line for `payload_type` one is
/// added after its `a=rtpmap`.
pub fn answer_with_stereo(answer: &str, payload_type: u8) -> String {
    let fmtp = format!("a=fmtp:{payload_type} ");
    let rtpmap = format!("a=rtpmap:{payload_type} ");
    let has_fmtp = answer.lines().any(|l| l.starts_with(&fmtp));
    let mut out = String::with_capacity(answer.len() + 48);
    for line in answer.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        let ending = &line[text.len()..];
        if text.starts_with(&fmtp) && !text.contains("stereo=") {
            out.push_str(text);
            out.push_str(";stereo=1;sprop-stereo=1");
            out.push_str(ending);
        } else {
            out.push_str(line);
            if !has_fmtp && text.starts_with(&rtpmap) {
                let ending = if ending.is_empty() { "\r\n" } else { ending };
                if line.ends_with('\n') {
                    out.push_str(&format!("{fmtp}stereo=1;sprop-stereo=1{ending}"));
                } else {
                    out.push_str(&format!("{ending}{fmtp}stereo=1;sprop-stereo=1"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_after_blank_lines_are_checked() {
        let cand = "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n";
        let hidden = format!("{CHROMIUM_OFFER}\r\n\r\n{}", cand.repeat(MAX_CANDIDATES));
        assert!(check_offer(hidden.as_bytes()).is_err());
        let section = CHROMIUM_OFFER
            .split_once("m=audio")
            .map(|(_, r)| format!("m=audio{r}"))
            .unwrap_or_default();
        let hidden = format!("{CHROMIUM_OFFER}\r\n\r\n{}", section.repeat(MAX_MEDIA));
        assert!(check_offer(hidden.as_bytes()).is_err());
        assert!(check_offer(format!("{CHROMIUM_OFFER}\r\n\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn answers_offer_stereo_opus() {
        let answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n";
        let stereo = answer_with_stereo(answer, 111);
        assert!(
            stereo.contains("a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1\r\n")
        );
        // Already said: unchanged.
        assert_eq!(answer_with_stereo(&stereo, 111), stereo);
        let bare = "v=0\r\na=rtpmap:111 opus/48000/2\r\na=sendrecv\r\n";
        assert_eq!(
            answer_with_stereo(bare, 111),
            "v=0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 stereo=1;sprop-stereo=1\r\na=sendrecv\r\n"
        );
        let mono = "a=fmtp:111 stereo=0\r\n";
        assert_eq!(answer_with_stereo(mono, 111), mono);
    }

    /// A WHIP offer as Chromium makes it for `addTransceiver(track,
    /// {direction: 'sendonly'})` on a microphone track.
    pub(crate) const CHROMIUM_OFFER: &str = "v=0\r\n\
o=- 4215775240449105457 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS 3d2f3c7a-1f0c-4c8e-9a53-2b0d8a5f6e11\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1840965416 1 udp 2122260223 192.168.1.20 54321 typ host generation 0 network-id 1\r\n\
a=candidate:3479728136 1 tcp 1518280447 192.168.1.20 9 typ host tcptype active generation 0 network-id 1\r\n\
a=ice-ufrag:yZ7q\r\n\
a=ice-pwd:Qm3v9Lk0pWbT2sX8aRcN4dEf\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=sendonly\r\n\
a=msid:3d2f3c7a-1f0c-4c8e-9a53-2b0d8a5f6e11 7c1e5b2a-6d4f-4f3b-8e2a-1a9c0b7d3e45\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:110 telephone-event/48000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:2840264417 cname:Xq2cR3hPjQ7wW1mC\r\n\
a=ssrc:2840264417 msid:3d2f3c7a-1f0c-4c8e-9a53-2b0d8a5f6e11 7c1e5b2a-6d4f-4f3b-8e2a-1a9c0b7d3e45\r\n";

    /// An offer as aiortc makes it: media-level ICE credentials after the
    /// candidates, DTX announced, an upper-case codec name.
    const AIORTC_OFFER: &str = "v=0\r\n\
o=- 3926246321 3926246321 IN IP4 0.0.0.0\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0\r\n\
a=msid-semantic:WMS *\r\n\
m=audio 50312 UDP/TLS/RTP/SAVPF 96 0 8\r\n\
c=IN IP4 10.0.0.7\r\n\
a=sendonly\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid\r\n\
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=mid:0\r\n\
a=msid:5d0ec4fb-5b3e-4f1b-9a0e-6c44a7d1b0f2 0d5c1e0e-7f45-4bc8-8f60-b0e1b2f7f9d3\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=rtcp-mux\r\n\
a=ssrc:1786418216 cname:6a3f1d1e-2b9c-4b0e-8d6f-0f7e2c9a4b31\r\n\
a=rtpmap:96 OPUS/48000/2\r\n\
a=fmtp:96 usedtx=1; useinbandfec=0\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=candidate:4b2e6f1a3c8d9e0f7a6b5c4d3e2f1a0b 1 udp 2130706431 10.0.0.7 50312 typ host\r\n\
a=candidate:9f8e7d6c5b4a39281706f5e4d3c2b1a0 1 udp 1694498815 203.0.113.9 50312 typ srflx raddr 10.0.0.7 rport 50312\r\n\
a=end-of-candidates\r\n\
a=ice-ufrag:Xk3P\r\n\
a=ice-pwd:nB7rT2wQ9zL4mV8cF1hJ6s\r\n\
a=fingerprint:sha-256 0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9:0A:1B:2C:3D:4E:5F:60:71:82:93:A4:B5:C6:D7:E8:F9\r\n\
a=setup:actpass\r\n";

    /// xorshift64*: a tiny deterministic generator for property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn reason(e: &SdpError) -> String {
        e.to_string()
    }

    #[test]
    fn chromium_offer_is_summarised() {
        let s = check_offer(CHROMIUM_OFFER.as_bytes()).expect("valid offer");
        assert_eq!(
            s,
            OfferSummary {
                audio_mid: Some("0".into()),
                opus_payload_type: 111,
                inband_fec: true,
                dtx: false,
                media_count: 1,
                wants_return: false,
            }
        );
        let sendrecv = CHROMIUM_OFFER.replace("a=sendonly", "a=sendrecv");
        assert!(check_offer(sendrecv.as_bytes()).unwrap().wants_return);
        let default = CHROMIUM_OFFER.replace("a=sendonly\r\n", "");
        assert!(check_offer(default.as_bytes()).unwrap().wants_return);
    }

    #[test]
    fn a_return_offer_must_receive() {
        let recvonly = CHROMIUM_OFFER.replace("a=sendonly", "a=recvonly");
        let s = check_offer_for(recvonly.as_bytes(), Purpose::Return).expect("a WHEP offer");
        assert!(s.wants_return);
        assert!(
            check_offer(recvonly.as_bytes()).is_err(),
            "nothing to ingest"
        );
        let e = check_offer_for(CHROMIUM_OFFER.as_bytes(), Purpose::Return).unwrap_err();
        assert!(reason(&e).contains("recvonly or sendrecv"), "{e}");
    }

    #[test]
    fn aiortc_offer_is_summarised() {
        let s = check_offer(AIORTC_OFFER.as_bytes()).expect("valid offer");
        assert_eq!(s.opus_payload_type, 96);
        assert_eq!(s.audio_mid.as_deref(), Some("0"));
        assert!(s.dtx);
        assert!(!s.inband_fec, "useinbandfec=0 is not FEC");
    }

    #[test]
    fn lf_only_offer_is_accepted() {
        let lf = CHROMIUM_OFFER.replace("\r\n", "\n");
        assert!(check_offer(lf.as_bytes()).is_ok());
    }

    #[test]
    fn direction_must_send() {
        for dir in ["recvonly", "inactive"] {
            let offer = CHROMIUM_OFFER.replace("a=sendonly", &format!("a={dir}"));
            let e = check_offer(offer.as_bytes()).unwrap_err();
            assert!(matches!(e, SdpError::NoOpusAudio { .. }), "{e}");
            assert!(reason(&e).contains(dir), "{e}");
        }
        // No direction at all means sendrecv (RFC 8866 §6.7).
        let offer = CHROMIUM_OFFER.replace("a=sendonly\r\n", "");
        assert!(check_offer(offer.as_bytes()).is_ok());
        // A session-level recvonly applies to a section without its own.
        let offer = offer.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::NoOpusAudio { .. })
        ));
    }

    #[test]
    fn opus_must_be_mapped_exactly() {
        let offer = CHROMIUM_OFFER.replace("opus/48000/2", "opus/48000/1");
        let e = check_offer(offer.as_bytes()).unwrap_err();
        assert!(matches!(e, SdpError::Malformed { line: 27, .. }), "{e}");
        let offer = CHROMIUM_OFFER.replace("a=rtpmap:111 opus/48000/2\r\n", "");
        let e = check_offer(offer.as_bytes()).unwrap_err();
        assert!(reason(&e).contains("opus/48000/2"), "{e}");
        // Mapped but not listed on the m= line: not usable.
        let offer = CHROMIUM_OFFER.replace("SAVPF 111 63", "SAVPF 63");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::NoOpusAudio { .. })
        ));
    }

    #[test]
    fn video_only_and_second_audio() {
        let offer = CHROMIUM_OFFER.replace("m=audio", "m=video");
        let e = check_offer(offer.as_bytes()).unwrap_err();
        assert_eq!(
            reason(&e),
            "no usable audio: the offer has no m=audio section"
        );
        // A recvonly audio section first, a sendonly one second: the second is used.
        let first = CHROMIUM_OFFER
            .replace("a=sendonly", "a=recvonly")
            .replace("a=mid:0", "a=mid:a");
        let second = CHROMIUM_OFFER
            .split_once("m=audio")
            .map(|(_, rest)| format!("m=audio{rest}"))
            .unwrap_or_default()
            .replace("a=mid:0", "a=mid:b")
            .replace("rtpmap:111", "rtpmap:63 red/48000/2\r\na=rtpmap:111");
        let s = check_offer(format!("{first}{second}").as_bytes()).expect("second is usable");
        assert_eq!(s.audio_mid.as_deref(), Some("b"));
        assert_eq!(s.media_count, 2);
    }

    #[test]
    fn ice_and_fingerprint_required() {
        let offer = CHROMIUM_OFFER.replace("a=ice-ufrag:yZ7q\r\n", "");
        assert_eq!(
            check_offer(offer.as_bytes()),
            Err(SdpError::MissingIce {
                missing: "a=ice-ufrag"
            })
        );
        let offer = CHROMIUM_OFFER.replace("a=ice-pwd:Qm3v9Lk0pWbT2sX8aRcN4dEf\r\n", "");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::MissingIce { .. })
        ));
        let offer = CHROMIUM_OFFER.replace("a=ice-pwd:Qm3v9Lk0pWbT2sX8aRcN4dEf", "a=ice-pwd:short");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::Malformed { line: 14, .. })
        ));
        let fp_line = CHROMIUM_OFFER
            .lines()
            .find(|l| l.starts_with("a=fingerprint"))
            .unwrap_or("");
        let offer = CHROMIUM_OFFER.replace(&format!("{fp_line}\r\n"), "");
        assert_eq!(
            check_offer(offer.as_bytes()),
            Err(SdpError::MissingFingerprint)
        );
        // Session-level credentials are as good.
        let moved = CHROMIUM_OFFER
            .replace(&format!("{fp_line}\r\n"), "")
            .replace("t=0 0\r\n", &format!("t=0 0\r\n{fp_line}\r\n"));
        assert!(check_offer(moved.as_bytes()).is_ok());
        let bad = CHROMIUM_OFFER.replace("sha-256 6B:8B", "sha-256 6B8B");
        assert!(matches!(
            check_offer(bad.as_bytes()),
            Err(SdpError::Malformed { .. })
        ));
    }

    #[test]
    fn grammar_violations_name_the_line() {
        let e = check_offer(b"o=- 1 1 IN IP4 0.0.0.0\r\n").unwrap_err();
        assert!(matches!(e, SdpError::Malformed { line: 1, .. }), "{e}");
        let offer = CHROMIUM_OFFER.replace("s=-", "x=-");
        let e = check_offer(offer.as_bytes()).unwrap_err();
        assert!(matches!(e, SdpError::Malformed { line: 3, .. }), "{e}");
        assert!(reason(&e).contains("unknown line type 'x'"), "{e}");
        let offer = CHROMIUM_OFFER.replace("t=0 0\r\n", "t=0 0\r\n\r\n");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::Malformed { line: 5, .. })
        ));
        let offer = CHROMIUM_OFFER.replace("SAVPF 111", "SAVPF 300");
        assert!(matches!(
            check_offer(offer.as_bytes()),
            Err(SdpError::Malformed { line: 8, .. })
        ));
        let long = format!("{CHROMIUM_OFFER}bogus line {}\r\n", "z".repeat(500));
        let e = check_offer(long.as_bytes()).unwrap_err();
        assert!(reason(&e).len() < 200, "quotes are bounded: {e}");
    }

    #[test]
    fn limits() {
        assert_eq!(check_offer(b""), Err(SdpError::Empty));
        let big = vec![b'a'; MAX_OFFER_BYTES + 1];
        assert_eq!(
            check_offer(&big),
            Err(SdpError::TooLarge {
                len: MAX_OFFER_BYTES + 1
            })
        );
        assert_eq!(
            check_offer(b"v=0\r\n\xff"),
            Err(SdpError::NotUtf8 { offset: 5 })
        );
        let lines = format!("v=0\r\n{}", "a=x\n".repeat(MAX_LINES));
        assert_eq!(check_offer(lines.as_bytes()), Err(SdpError::TooManyLines));
        let section = CHROMIUM_OFFER
            .split_once("m=audio")
            .map(|(_, rest)| format!("m=audio{rest}"))
            .unwrap_or_default();
        let many = format!("{CHROMIUM_OFFER}{}", section.repeat(MAX_MEDIA));
        assert!(many.len() < MAX_OFFER_BYTES);
        assert_eq!(
            check_offer(many.as_bytes()),
            Err(SdpError::TooManyMedia {
                count: MAX_MEDIA + 1
            })
        );
        let cand = "a=candidate:1 1 udp 1 10.0.0.1 9 typ host\r\n";
        let offer = format!("{CHROMIUM_OFFER}{}", cand.repeat(MAX_CANDIDATES - 2));
        assert!(
            check_offer(offer.as_bytes()).is_ok(),
            "exactly the limit passes"
        );
        let offer = format!("{offer}{cand}");
        assert_eq!(
            check_offer(offer.as_bytes()),
            Err(SdpError::TooManyCandidates)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let len = rng.below(600);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = check_offer(&bytes);
            // Random SDP-looking text reaches the deeper paths.
            let alphabet = b"vosamtc=:/ \r\n0123456789abcdefopusaudiosendonly-";
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let mut sdp = b"v=0\r\n".to_vec();
            sdp.extend_from_slice(&text);
            let _ = check_offer(&sdp);
        }
    }

    #[test]
    fn mutated_offers_never_panic() {
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut accepted = 0;
        for base in [CHROMIUM_OFFER, AIORTC_OFFER] {
            for _ in 0..20_000 {
                let mut bytes = base.as_bytes().to_vec();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len());
                    match rng.below(5) {
                        0 => bytes[at] = rng.next() as u8,
                        1 => {
                            bytes.remove(at);
                        }
                        2 => bytes.insert(at, b"\r\n=: /"[rng.below(6)]),
                        3 => bytes.truncate(at),
                        _ => {
                            // Duplicate a slice: grows lines, sections, candidates.
                            let end = (at + rng.below(400)).min(bytes.len());
                            let copy = bytes[at..end].to_vec();
                            bytes.splice(at..at, copy);
                        }
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
                if let Ok(s) = check_offer(&bytes) {
                    accepted += 1;
                    assert!(s.media_count >= 1 && s.media_count <= MAX_MEDIA);
                    assert!(s.opus_payload_type <= 127);
                }
            }
        }
        // Many single mutations leave an offer usable; all-rejected would
        // mean the check is broken.
        assert!(accepted > 1000, "only {accepted} mutated offers accepted");
    }
}
