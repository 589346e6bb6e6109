//! When to try a store operation again, and how long to wait first.
//!
//! Contract: pure functions, no clock and no randomness. [`RetryPolicy`] says
//! how many attempts an operation gets and how long to wait between them;
//! [`classify`] says whether an `object_store` error is worth another attempt.
//! The waits grow exponentially and carry a jitter that is derived from the
//! object key, so concurrent operations that fail together do not retry in
//! lockstep, while the same key always gets the same schedule (tests see
//! exactly what production does).

use std::time::Duration;

/// How many times to attempt a store operation and how long to wait between
/// attempts.
///
/// With the defaults (5 attempts, 100 ms doubling up to 1 s) an operation
/// gives up after at most 1.5 s of waiting plus five request times; with the
/// store's default timeouts ([`StoreOptions`](super::StoreOptions)) a refused
/// connection fails in about 1.5 s and a black-holed one in about 11.5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included. `0` is treated as `1`.
    pub max_attempts: u32,
    /// Nominal wait after the first failed attempt.
    pub initial_backoff: Duration,
    /// Upper bound of any single wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// Attempts in total, at least one.
    pub fn attempts(&self) -> u32 {
        self.max_attempts.max(1)
    }

    /// The wait after failed attempt number `attempt` (1-based) of the
    /// operation on `key`.
    ///
    /// The nominal wait is `initial_backoff * 2^(attempt-1)`, capped at
    /// `max_backoff`; the actual wait lies in `[nominal/2, nominal]` ("equal
    /// jitter"), its position fixed by a hash of `key` and `attempt`.
    pub fn backoff(&self, attempt: u32, key: &str) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        let nominal = self
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff);
        let half = nominal / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let offset = if spread == 0 {
            0
        } else {
            jitter_seed(key, attempt) % spread.saturating_add(1)
        };
        half + Duration::from_nanos(offset)
    }
}

/// FNV-1a over the key and attempt number: cheap, stable across runs and
/// platforms, and good enough to spread retries of different keys.
fn jitter_seed(key: &str, attempt: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    key.as_bytes()
        .iter()
        .chain(attempt.to_le_bytes().iter())
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
}

/// Whether an error may go away if the same operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// Network failure, timeout, server error or throttling: try again.
    Transient,
    /// The request itself is wrong for this store (permissions, credentials,
    /// missing bucket, unsupported operation, invalid path): trying again
    /// cannot help; an operator must fix the configuration.
    Permanent(&'static str),
}

/// Sorts an `object_store` error into [`Retryable`].
///
/// `object_store` maps HTTP 401/403/404/409/412 to dedicated variants and
/// leaves everything else (connection errors, timeouts, 5xx, 429 throttling,
/// local IO errors) in `Generic`. The status of a `Generic` error is not
/// reachable through the public API, so a rare unexpected 4xx is retried a
/// bounded number of times too: slower to fail, never wrong to.
pub fn classify(error: &object_store::Error) -> Retryable {
    use object_store::Error as E;
    match error {
        E::Generic { .. } => Retryable::Transient,
        // On a put, 404 means the bucket or container does not exist.
        E::NotFound { .. } => Retryable::Permanent("the bucket or container does not exist"),
        E::PermissionDenied { .. } => Retryable::Permanent("the credentials lack permission"),
        E::Unauthenticated { .. } => Retryable::Permanent("the credentials are missing or invalid"),
        E::NotImplemented { .. } | E::NotSupported { .. } => {
            Retryable::Permanent("the store does not support this operation")
        }
        E::InvalidPath { .. } => Retryable::Permanent("the object key is not a valid path"),
        E::UnknownConfigurationKey { .. } => Retryable::Permanent("the store is misconfigured"),
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            Retryable::Permanent("a condition on the object failed")
        }
        // JoinError (a panicked blocking task) and any variant added later.
        _ => Retryable::Permanent("the store failed unexpectedly"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
        }
    }

    #[test]
    fn backoff_doubles_within_equal_jitter_bounds_and_is_capped() {
        let p = policy();
        let nominal_ms = [100u64, 200, 400, 700, 700, 700];
        for (i, nominal) in nominal_ms.iter().enumerate() {
            let attempt = u32::try_from(i).expect("small") + 1;
            let wait = p.backoff(attempt, "demo/opus/1.0.m4s");
            let low = Duration::from_millis(*nominal) / 2;
            let high = Duration::from_millis(*nominal);
            assert!(
                wait >= low && wait <= high,
                "attempt {attempt}: {wait:?} not in [{low:?}, {high:?}]"
            );
        }
    }

    #[test]
    fn backoff_is_deterministic_per_key_and_differs_between_keys() {
        let p = policy();
        assert_eq!(p.backoff(3, "a/1.m4s"), p.backoff(3, "a/1.m4s"));
        let waits: std::collections::BTreeSet<Duration> = (0..20)
            .map(|i| p.backoff(3, &format!("a/{i}.m4s")))
            .collect();
        assert!(waits.len() > 10, "jitter does not spread keys: {waits:?}");
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_secs(u64::MAX / 4),
            max_backoff: Duration::MAX,
        };
        let wait = p.backoff(u32::MAX, "k");
        assert!(wait >= Duration::MAX / 2);
    }

    #[test]
    fn zero_backoff_and_zero_attempts_are_sane() {
        let p = RetryPolicy {
            max_attempts: 0,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
        };
        assert_eq!(p.attempts(), 1);
        assert_eq!(p.backoff(1, "k"), Duration::ZERO);
    }

    #[test]
    fn classification_separates_transient_from_configuration_errors() {
        let generic = object_store::Error::Generic {
            store: "S3",
            source: "connection refused".into(),
        };
        assert_eq!(classify(&generic), Retryable::Transient);
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "403".into(),
        };
        assert!(matches!(classify(&denied), Retryable::Permanent(_)));
        let missing = object_store::Error::NotImplemented {
            operation: "put_opts with attributes".into(),
            implementer: "LocalFileSystem".into(),
        };
        assert!(matches!(classify(&missing), Retryable::Permanent(_)));
    }
}
