//! Failed credential attempts, limited per client address: guessing a host
//! key or the admin token is slow, while the right key from any other
//! address works at once.
//!
//! Contract: pure, no clock (the caller passes `now`) and no IO. Each
//! address has a budget of [`AttemptLimit::burst`] failures that refills at
//! [`AttemptLimit::per_minute`]; an address that spent it is refused every
//! attempt (the right credential included, else the limit would tell a
//! guesser when they are right) until the budget has one failure again, and
//! is told when ([`Refused::retry_after`]). Successes cost nothing.
//!
//! The budget is the generic cell rate algorithm: per address only the
//! time at which its budget is full again ("theoretical arrival time"), so
//! an entry is one `Instant`. IPv6 addresses count by /64, the block one
//! subscriber usually holds. At most [`AttemptLimit::max_addresses`] are
//! kept: when full, recovered entries go first, then the ones closest to
//! recovery; an attacker with more addresses than that gets as far as one
//! with fewer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The client's address, added to every request's extensions by the HTTP
/// server: the TCP peer, or behind trusted proxies the address they name
/// (see [`super::forwarded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// How many failures an address may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimit {
    /// Failures in a row before the address is refused. Default 10.
    pub burst: u32,
    /// Failures per minute it may go on making. Default 10.
    pub per_minute: u32,
    /// Addresses remembered at once. Default 65 536.
    pub max_addresses: usize,
}

impl Default for AttemptLimit {
    fn default() -> Self {
        AttemptLimit {
            burst: 10,
            per_minute: 10,
            max_addresses: 65_536,
        }
    }
}

/// An address that has spent its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When it may try again.
    pub retry_after: Duration,
}

impl Refused {
    /// `Retry-After` in whole seconds, rounded up (RFC 9110 §10.2.3).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_nanos().div_ceil(1_000_000_000) as u64
    }
}

/// Failed attempts per client address; shared by every place that checks a
/// credential.
#[derive(Debug)]
pub struct FailedAttempts {
    limit: AttemptLimit,
    /// Per address: when its budget is full again.
    full_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for FailedAttempts {
    /// With the default [`AttemptLimit`].
    fn default() -> Self {
        FailedAttempts::new(AttemptLimit::default())
    }
}

impl FailedAttempts {
    /// An empty table with `limit`.
    pub fn new(limit: AttemptLimit) -> FailedAttempts {
        FailedAttempts {
            limit,
            full_at: Mutex::new(HashMap::new()),
        }
    }

    /// One failure's cost: a minute over `per_minute`.
    fn interval(&self) -> Duration {
        Duration::from_secs(60) / self.limit.per_minute.max(1)
    }

    /// Whether `addr` may attempt now.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Refused> {
        let table = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(&full_at) = table.get(&key(addr)) else {
            return Ok(());
        };
        // Room for one more failure while full_at + interval stays within
        // burst intervals of now.
        let allowed = self.interval() * self.limit.burst.saturating_sub(1);
        let owed = full_at.saturating_duration_since(now);
        match owed.checked_sub(allowed) {
            Some(wait) if !wait.is_zero() => Err(Refused { retry_after: wait }),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt of `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let interval = self.interval();
        let mut table = self.full_at.lock().unwrap_or_else(PoisonError::into_inner);
        let addr = key(addr);
        if !table.contains_key(&addr) && table.len() >= self.limit.max_addresses {
            table.retain(|_, full_at| *full_at > now);
            if table.len() >= self.limit.max_addresses {
                // The entry closest to recovery makes room.
                if let Some(nearest) = table.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    table.remove(&nearest);
                }
            }
        }
        let full_at = table.entry(addr).or_insert(now);
        *full_at = (*full_at).max(now) + interval;
    }

    /// Addresses remembered now (for tests and metrics).
    pub fn len(&self) -> usize {
        self.full_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// IPv4 addresses count alone, IPv6 ones by /64 (an IPv4-mapped IPv6
/// address as its IPv4 address): what one client is, for every
/// per-address limit.
pub(crate) fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn limit() -> AttemptLimit {
        AttemptLimit {
            burst: 5,
            per_minute: 6, // one failure every 10 s
            max_addresses: 4,
        }
    }

    #[test]
    fn a_burst_of_failures_is_allowed_then_refused_until_one_refills() {
        let attempts = FailedAttempts::new(limit());
        let t0 = Instant::now();
        let guesser = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(attempts.check(guesser, t0), Ok(()), "attempt {i}");
            attempts.failed(guesser, t0);
        }
        let refused = attempts
            .check(guesser, t0)
            .expect_err("the sixth is refused");
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        assert_eq!(refused.retry_after_secs(), 10);
        // Still refused just before, allowed once one failure has refilled.
        let almost = t0 + Duration::from_millis(9_999);
        assert_eq!(
            attempts.check(guesser, almost).map_err(|r| r.retry_after),
            Err(Duration::from_millis(1))
        );
        assert_eq!(
            attempts.check(guesser, t0 + Duration::from_secs(10)),
            Ok(())
        );
        attempts.failed(guesser, t0 + Duration::from_secs(10));
        assert!(
            attempts
                .check(guesser, t0 + Duration::from_secs(10))
                .is_err()
        );
        // A guesser who keeps going gets one try per 10 s: 6 per minute.
        let mut tries = 0;
        for s in 11..71 {
            let now = t0 + Duration::from_secs(s);
            if attempts.check(guesser, now).is_ok() {
                attempts.failed(guesser, now);
                tries += 1;
            }
        }
        assert_eq!(tries, 6);
    }

    #[test]
    fn other_addresses_are_not_affected() {
        let attempts = FailedAttempts::new(limit());
        let t0 = Instant::now();
        for _ in 0..100 {
            attempts.failed(ip("192.0.2.1"), t0);
        }
        assert!(attempts.check(ip("192.0.2.1"), t0).is_err());
        assert_eq!(attempts.check(ip("192.0.2.2"), t0), Ok(()));
        assert_eq!(attempts.check(ip("2001:db8::1"), t0), Ok(()));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let attempts = FailedAttempts::new(limit());
        let t0 = Instant::now();
        for i in 0..5 {
            attempts.failed(ip(&format!("2001:db8:1:2::{i:x}")), t0);
        }
        assert!(attempts.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert_eq!(attempts.check(ip("2001:db8:1:3::1"), t0), Ok(()));
        for _ in 0..5 {
            attempts.failed(ip("::ffff:192.0.2.7"), t0);
        }
        assert!(attempts.check(ip("192.0.2.7"), t0).is_err());
    }

    #[test]
    fn the_table_is_bounded_and_makes_room_with_recovered_entries_first() {
        let attempts = FailedAttempts::new(limit());
        let t0 = Instant::now();
        attempts.failed(ip("192.0.2.1"), t0);
        for i in 2..=4 {
            for _ in 0..10 {
                attempts.failed(ip(&format!("192.0.2.{i}")), t0);
            }
        }
        assert_eq!(attempts.len(), 4);
        // 192.0.2.1 has recovered by 11 s; a new address takes its place.
        let later = t0 + Duration::from_secs(11);
        attempts.failed(ip("192.0.2.5"), later);
        assert_eq!(attempts.len(), 4);
        assert!(attempts.check(ip("192.0.2.2"), later).is_err());
        // Full of blocked addresses: the one nearest recovery goes.
        attempts.failed(ip("192.0.2.6"), later);
        assert_eq!(attempts.len(), 4);
    }
}
