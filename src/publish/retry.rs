//! When to try a store operation again, and how long to wait first.
//!
//! Contract: pure functions, no clock and no randomness. [`RetryPolicy`] says
//! how many attempts an operation gets and how long to wait between them;
//! [`classify`] says whether an `object_store` error is worth another attempt;
//! a [`RetryState`] follows one operation through its attempts and, after each
//! failure, decides: attempt again at a given instant, or give up. The caller
//! passes the time in and does the waiting (the publish driver sleeps on tokio's
//! clock), so the schedule is tested here without a runtime. The waits grow
//! exponentially and carry a jitter that is derived from the object key, so
//! concurrent operations that fail together do not retry in lockstep, while the
//! same key always gets the same schedule (tests see exactly what production
//! does).

use std::time::{Duration, Instant};

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

    /// The retry schedule of one operation on `key`, at its first attempt.
    pub fn start<'k>(&self, key: &'k str) -> RetryState<'k> {
        RetryState {
            policy: *self,
            key,
            attempt: 1,
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Make the next attempt at this instant (the failure's instant plus the
    /// policy's backoff), not before.
    RetryAt(Instant),
    /// The operation has failed; no further attempt.
    GiveUp(GiveUp),
}

/// Why an operation is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The error cannot go away by trying again; the reason says what an
    /// operator must fix.
    Permanent(&'static str),
    /// Every attempt the policy allows failed with transient errors.
    Exhausted,
}

/// Longest wait before a retry. A larger backoff (only a policy with an
/// absurd `max_backoff` yields one) is cut to this, as tokio cuts any longer
/// sleep, so the retry instant is always representable.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Where one operation stands in its [`RetryPolicy`]: which attempt it is
/// on, and after a failure, whether and when to attempt again.
///
/// Pure: it reads no clock. The caller makes attempt number
/// [`RetryState::attempt`], and when that fails reports it with
/// [`RetryState::failed`] and the instant of the failure, then waits until the
/// instant returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryState<'k> {
    policy: RetryPolicy,
    key: &'k str,
    attempt: u32,
}

impl RetryState<'_> {
    /// Number of the current attempt, from 1; once the operation is over,
    /// the attempts it took.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Records that the current attempt failed at `now` with an error of
    /// kind `retryable`, and says what follows: a permanent error gives up at
    /// once, a transient one is retried after [`RetryPolicy::backoff`] until
    /// [`RetryPolicy::attempts`] are used up. On [`Decision::RetryAt`] the
    /// state moves on to the next attempt.
    pub fn failed(&mut self, now: Instant, retryable: Retryable) -> Decision {
        match retryable {
            Retryable::Permanent(reason) => Decision::GiveUp(GiveUp::Permanent(reason)),
            Retryable::Transient if self.attempt >= self.policy.attempts() => {
                Decision::GiveUp(GiveUp::Exhausted)
            }
            Retryable::Transient => {
                let wait = self.policy.backoff(self.attempt, self.key).min(FAR_FUTURE);
                self.attempt += 1;
                // `now` 30 years short of the end of `Instant`'s range is not
                // a clock reading; retrying at once beats panicking on it.
                Decision::RetryAt(now.checked_add(wait).unwrap_or(now))
            }
        }
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

    /// Fails every attempt of an operation on `key` with `kind`, each
    /// attempt taking `took` of simulated time; returns the wait after each
    /// failed attempt, why the operation ended and the attempts it took.
    fn fail_throughout(
        policy: RetryPolicy,
        key: &str,
        took: Duration,
        kind: Retryable,
    ) -> (Vec<Duration>, GiveUp, u32) {
        let mut state = policy.start(key);
        let mut now = Instant::now();
        let mut waits = Vec::new();
        loop {
            let failed_at = now + took;
            match state.failed(failed_at, kind) {
                Decision::RetryAt(at) => {
                    waits.push(at - failed_at);
                    now = at;
                }
                Decision::GiveUp(why) => return (waits, why, state.attempt()),
            }
        }
    }

    #[test]
    fn transient_failures_retry_after_each_backoff_until_the_attempts_run_out() {
        let p = policy();
        let key = "demo/opus/3.1.m4s";
        let (waits, why, attempts) =
            fail_throughout(p, key, Duration::from_millis(30), Retryable::Transient);
        assert_eq!(why, GiveUp::Exhausted);
        assert_eq!(attempts, 6, "every attempt the policy allows was made");
        let expected: Vec<Duration> = (1..6).map(|a| p.backoff(a, key)).collect();
        assert_eq!(waits, expected, "the wait after attempt n is backoff(n)");
    }

    #[test]
    fn the_retry_instant_counts_from_the_failure() {
        let p = policy();
        let t0 = Instant::now();
        let mut a = p.start("k");
        let mut b = p.start("k");
        let late = t0 + Duration::from_secs(3);
        assert_eq!(
            a.failed(t0, Retryable::Transient),
            Decision::RetryAt(t0 + p.backoff(1, "k"))
        );
        assert_eq!(
            b.failed(late, Retryable::Transient),
            Decision::RetryAt(late + p.backoff(1, "k"))
        );
        assert_eq!((a.attempt(), b.attempt()), (2, 2));
    }

    #[test]
    fn a_permanent_failure_gives_up_at_once_even_after_retries() {
        let p = policy();
        let (waits, why, attempts) = fail_throughout(
            p,
            "k",
            Duration::ZERO,
            Retryable::Permanent("the credentials lack permission"),
        );
        assert!(waits.is_empty(), "{waits:?}");
        assert_eq!(why, GiveUp::Permanent("the credentials lack permission"));
        assert_eq!(attempts, 1);

        let mut state = p.start("k");
        let now = Instant::now();
        assert!(matches!(
            state.failed(now, Retryable::Transient),
            Decision::RetryAt(_)
        ));
        assert_eq!(
            state.failed(now, Retryable::Permanent("the store is misconfigured")),
            Decision::GiveUp(GiveUp::Permanent("the store is misconfigured"))
        );
        assert_eq!(
            state.attempt(),
            2,
            "the attempts made, the failed one included"
        );
    }

    #[test]
    fn the_default_policy_waits_at_most_one_and_a_half_seconds_over_five_attempts() {
        let (waits, why, attempts) = fail_throughout(
            RetryPolicy::default(),
            "demo/aac/12.0.m4s",
            Duration::from_millis(5),
            Retryable::Transient,
        );
        assert_eq!((why, attempts), (GiveUp::Exhausted, 5));
        let total: Duration = waits.iter().sum();
        assert!(
            total >= Duration::from_millis(750) && total <= Duration::from_millis(1_500),
            "{waits:?}"
        );
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        let p = RetryPolicy {
            max_attempts: 0,
            ..policy()
        };
        let (waits, why, attempts) = fail_throughout(p, "k", Duration::ZERO, Retryable::Transient);
        assert!(waits.is_empty());
        assert_eq!((why, attempts), (GiveUp::Exhausted, 1));
    }

    #[test]
    fn an_absurd_backoff_still_yields_a_retry_instant() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
        };
        let now = Instant::now();
        match p.start("k").failed(now, Retryable::Transient) {
            Decision::RetryAt(at) => assert!(at > now + Duration::from_secs(365 * 24 * 3600)),
            other => panic!("expected a retry, got {other:?}"),
        }
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
