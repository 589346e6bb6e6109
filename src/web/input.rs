//! Untrusted HTTP request input, shared by the control API and WHIP ingest:
//! bearer credentials compared in constant time, and request bodies read
//! with a bound.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1;
/// the scheme is case-insensitive, RFC 9110 §11.1).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value[7..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Compares a secret with a presented value in time that depends only on
/// the secret's length, so response timing cannot reveal how many leading
/// bytes of a guess were right.
pub fn constant_time_eq(secret: &[u8], presented: &[u8]) -> bool {
    let mut diff = secret.len() ^ presented.len();
    for (i, s) in secret.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(s ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or says it is) longer than allowed: answer 413.
    #[error("the body must be at most {max} bytes")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// The body could not be read (the client went away): answer 400.
    #[error("cannot read the body: {0}")]
    Read(String),
}

/// Reads a request body of at most `max` bytes. A declared length over the
/// bound is refused before anything is read; a longer chunked body stops
/// being read at the bound, so a huge upload costs at most `max` bytes.
pub async fn read_body<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.size_hint().lower() > max as u64 {
        return Err(BodyError::TooLarge { max });
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge { max }),
        Err(error) => Err(BodyError::Read(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_in_full_and_parses_bearer_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        for other in [&b"abd"[..], b"ab", b"abcd", b"", b"ABC", b"ab\0"] {
            assert!(!constant_time_eq(b"abc", other), "{other:?}");
        }
        assert_eq!(bearer_token(b"Bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer   "), None);
    }
}
