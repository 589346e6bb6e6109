//! Host keys: which secret lets which host publish.
//!
//! A broadcast's live hosts are exactly the names of its keys: `--key
//! NAME=SECRET` (repeatable) or a keys file with one `NAME=SECRET` per line
//! (`#` comments and blank lines allowed). An RTMP publisher puts the
//! secret in its URL (`rtmp://HOST/live/SECRET`, the "stream key"); a WHIP
//! publisher sends it as a bearer token.
//!
//! The keys can change while the broadcast runs ([`Keys::replace`], from a
//! keys file re-read on SIGHUP or change): a check made after the change
//! sees only the new keys.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use crate::web::attempts::{AttemptLimit, FailedAttempts, Refused};
use crate::web::input::constant_time_eq;

/// Why keys could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key spec is not `NAME=SECRET`, or its parts are not acceptable.
    #[error("bad key {spec:?}: {reason}")]
    Bad {
        /// The offending spec (the secret masked).
        spec: String,
        /// Why.
        reason: &'static str,
    },
    /// Two keys name the same host or carry the same secret.
    #[error("duplicate key: {0}")]
    Duplicate(String),
    /// The keys file could not be read.
    #[error("cannot read keys file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

/// Secrets shorter than this are refused: a stream key is a password.
pub const MIN_SECRET_LEN: usize = 8;

/// One host's key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// The host's name (its mixer feed and control API name).
    pub name: String,
    secret: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("secret", &"…")
            .finish()
    }
}

impl std::str::FromStr for Key {
    type Err = KeyError;

    /// Parses `NAME=SECRET`. Names are 1-64 of `A-Z a-z 0-9 _ -` (they end
    /// up in logs and URLs); secrets are at least [`MIN_SECRET_LEN`]
    /// printable ASCII characters without spaces or `/` (they end up in an
    /// RTMP URL path).
    fn from_str(spec: &str) -> Result<Self, KeyError> {
        let bad = |reason| KeyError::Bad {
            spec: mask(spec),
            reason,
        };
        let (name, secret) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SECRET"))?;
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(bad("the name must be 1-64 of A-Z a-z 0-9 _ -"));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(bad("the secret must be at least 8 characters"));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
            return Err(bad(
                "the secret must be printable ASCII without spaces or '/'",
            ));
        }
        Ok(Key {
            name: name.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// `NAME=SECRET` with the secret hidden, for error messages.
fn mask(spec: &str) -> String {
    match spec.split_once('=') {
        Some((name, _)) => format!("{name}=…"),
        None => "…".to_owned(),
    }
}

/// The keys of a broadcast, and the failed attempts to guess one.
#[derive(Debug, Default)]
pub struct Keys {
    keys: RwLock<Vec<Key>>,
    /// Shared by every clone: RTMP, WHIP and the control API count
    /// against one budget per address.
    attempts: Arc<FailedAttempts>,
}

/// Why a presented secret opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No host has this secret.
    Unknown,
    /// The client's address has failed too often: refused whatever it
    /// presents, until `retry_after`.
    TooManyFailures(Refused),
}

/// What [`Keys::replace`] changed, by host name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// Hosts that have a key now and had none.
    pub added: Vec<String>,
    /// Hosts that had a key and have none now.
    pub removed: Vec<String>,
    /// Hosts whose secret changed: the old one opens nothing any more.
    pub rekeyed: Vec<String>,
}

impl KeyChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.rekeyed.is_empty()
    }
}

/// Refuses two keys with one name or one secret.
fn check_unique(keys: &[Key]) -> Result<(), KeyError> {
    for (i, k) in keys.iter().enumerate() {
        for other in &keys[..i] {
            if other.name == k.name {
                return Err(KeyError::Duplicate(format!(
                    "two keys for host {:?}",
                    k.name
                )));
            }
            if other.secret == k.secret {
                return Err(KeyError::Duplicate(format!(
                    "hosts {:?} and {:?} share a secret",
                    other.name, k.name
                )));
            }
        }
    }
    Ok(())
}

impl Keys {
    /// Keys from specs, checked for duplicate names and secrets.
    pub fn new(keys: Vec<Key>) -> Result<Self, KeyError> {
        check_unique(&keys)?;
        Ok(Self {
            keys: RwLock::new(keys),
            attempts: Arc::default(),
        })
    }

    /// Replaces every key with `keys` (checked as [`Keys::new`] does; on
    /// error nothing changes) and says what changed.
    pub fn replace(&self, keys: Vec<Key>) -> Result<KeyChanges, KeyError> {
        check_unique(&keys)?;
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let mut changes = KeyChanges::default();
        for old in current.iter() {
            match keys.iter().find(|k| k.name == old.name) {
                None => changes.removed.push(old.name.clone()),
                Some(new) if new.secret != old.secret => changes.rekeyed.push(old.name.clone()),
                Some(_) => {}
            }
        }
        for new in &keys {
            if !current.iter().any(|k| k.name == new.name) {
                changes.added.push(new.name.clone());
            }
        }
        *current = keys;
        Ok(changes)
    }

    /// Limits failed attempts per address by `limit` (default:
    /// [`AttemptLimit::default`]); forgets earlier failures.
    pub fn with_attempt_limit(mut self, limit: AttemptLimit) -> Self {
        self.attempts = Arc::new(FailedAttempts::new(limit));
        self
    }

    /// The failed attempts per address, for other credentials (the admin
    /// token) to count against the same budget.
    pub fn attempts(&self) -> Arc<FailedAttempts> {
        self.attempts.clone()
    }

    /// The host `secret` belongs to, presented from `from` (when known):
    /// refused without looking if `from` has failed too often, and a
    /// failure counted against `from` if no host has it.
    pub fn authorize(&self, secret: &str, from: Option<IpAddr>) -> Result<String, Refusal> {
        let now = Instant::now();
        if let Some(from) = from {
            self.attempts
                .check(from, now)
                .map_err(Refusal::TooManyFailures)?;
        }
        match self.host_for(secret) {
            Some(host) => Ok(host),
            None => {
                if let Some(from) = from {
                    self.attempts.failed(from, now);
                }
                Err(Refusal::Unknown)
            }
        }
    }

    /// Parses a keys file: one `NAME=SECRET` per line; blank lines and
    /// lines starting with `#` are ignored.
    pub fn parse_file_text(text: &str) -> Result<Vec<Key>, KeyError> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::parse)
            .collect()
    }

    /// Reads a keys file (see [`parse_file_text`](Self::parse_file_text)).
    pub fn read_file(path: &Path) -> Result<Vec<Key>, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse_file_text(&text)
    }

    /// What [`authorize`](Self::authorize) decides, without counting a
    /// failure: for a second look at a request already authorized.
    pub fn admitted(&self, secret: &str, from: Option<IpAddr>) -> Option<String> {
        if let Some(from) = from {
            self.attempts.check(from, Instant::now()).ok()?;
        }
        self.host_for(secret)
    }

    /// The host a secret belongs to. Every key is compared in full, in time
    /// independent of where the secrets differ, so timing does not reveal a
    /// secret's prefix.
    pub fn host_for(&self, secret: &str) -> Option<String> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        for key in keys.iter() {
            if constant_time_eq(key.secret.as_bytes(), secret.as_bytes()) {
                found = Some(key.name.clone());
            }
        }
        found
    }

    /// The hosts' names, in order.
    pub fn names(&self) -> Vec<String> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.iter().map(|k| k.name.clone()).collect()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_finds_hosts_by_secret() {
        let keys = Keys::new(vec![
            "alice=s3cret-alice".parse().unwrap(),
            "bob=s3cret-bob!".parse().unwrap(),
        ])
        .unwrap();
        assert_eq!(keys.host_for("s3cret-alice").as_deref(), Some("alice"));
        assert_eq!(keys.host_for("s3cret-bob!").as_deref(), Some("bob"));
        assert_eq!(keys.host_for("s3cret-bob"), None);
        assert_eq!(keys.host_for(""), None);
        assert_eq!(keys.names(), ["alice", "bob"]);
    }

    #[test]
    fn refuses_bad_specs_without_echoing_the_secret() {
        for spec in [
            "alice",
            "=longenough",
            "al ice=longenough",
            "alice=short",
            "alice=with/slash",
            "alice=with space",
        ] {
            let err = spec.parse::<Key>().unwrap_err();
            assert!(!err.to_string().contains("longenough"), "{err}");
        }
        let dup = Keys::new(vec![
            "a=12345678".parse().unwrap(),
            "a=87654321".parse().unwrap(),
        ]);
        assert!(matches!(dup, Err(KeyError::Duplicate(_))));
        let shared = Keys::new(vec![
            "a=12345678".parse().unwrap(),
            "b=12345678".parse().unwrap(),
        ]);
        assert!(matches!(shared, Err(KeyError::Duplicate(_))));
    }

    #[test]
    fn a_replacement_takes_effect_at_once_and_says_what_changed() {
        let keys = Keys::new(vec![
            "alice=aaaaaaaa".parse().unwrap(),
            "bob=bbbbbbbb".parse().unwrap(),
            "carol=cccccccc".parse().unwrap(),
        ])
        .unwrap();
        let changes = keys
            .replace(vec![
                "alice=aaaaaaaa".parse().unwrap(),
                "bob=BBBBBBBB".parse().unwrap(),
                "dave=dddddddd".parse().unwrap(),
            ])
            .unwrap();
        assert_eq!(
            changes,
            KeyChanges {
                added: vec!["dave".into()],
                removed: vec!["carol".into()],
                rekeyed: vec!["bob".into()],
            }
        );
        assert_eq!(keys.host_for("aaaaaaaa").as_deref(), Some("alice"));
        assert_eq!(keys.host_for("bbbbbbbb"), None, "the old secret is gone");
        assert_eq!(keys.host_for("BBBBBBBB").as_deref(), Some("bob"));
        assert_eq!(keys.host_for("cccccccc"), None);
        assert_eq!(keys.host_for("dddddddd").as_deref(), Some("dave"));
        // A bad replacement changes nothing.
        let dup = keys.replace(vec![
            "x=12345678".parse().unwrap(),
            "y=12345678".parse().unwrap(),
        ]);
        assert!(matches!(dup, Err(KeyError::Duplicate(_))));
        assert_eq!(keys.names(), ["alice", "bob", "dave"]);
        assert!(keys.replace(keys_of(&keys)).unwrap().is_empty());
    }

    /// The keys now in `keys`, for a replacement that changes nothing.
    fn keys_of(keys: &Keys) -> Vec<Key> {
        keys.keys.read().unwrap().clone()
    }

    #[test]
    fn reads_a_keys_file_with_comments() {
        let keys = Keys::parse_file_text("# hosts\n\nalice=aaaaaaaa\n  bob=bbbbbbbb  \n").unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1].name, "bob");
        assert!(Keys::parse_file_text("alice\n").is_err());
    }
}
