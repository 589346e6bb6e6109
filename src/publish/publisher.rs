//! Storing the objects of a broadcast: typed puts, staged batches, one
//! attempt at a time.
//!
//! Contract:
//! - Every object carries an [`ObjectKind`] that fixes its `Content-Type`, its
//!   `Cache-Control` and whether it is immutable. Where the store keeps
//!   attributes ([`Capabilities::supports_attributes`](super::Capabilities))
//!   both headers are stored with the object; elsewhere the origin derives
//!   them from the key.
//! - Immutable objects (init, media, `at/` playlists) are written with a
//!   conditional create (`PutMode::Create`, `If-None-Match: *` on S3). If the
//!   object already exists it is read back: identical bytes mean an earlier
//!   attempt already stored it (a retry after a lost response) and count as
//!   success; different bytes are refused with
//!   [`PublishError::WouldOverwrite`] and the stored object stays as it was.
//! - Overwritable objects (`live.m3u8`, the multivariant playlist, pages) are
//!   plain overwrites; each put is atomic, so readers see the old or the new
//!   object, never a mix.
//! - A [`Batch`] is a list of stages. The operations of one stage run
//!   concurrently (at most [`Publisher::DEFAULT_CONCURRENCY`] at once); a stage starts
//!   only after every operation of the previous stage has been stored. The
//!   packager puts media in an earlier stage than any playlist naming it, so a
//!   playlist never lists an object that is not there (RFC 8216bis 6.2.2).
//! - Transient failures are retried with the [`RetryPolicy`]; configuration
//!   failures (permissions, missing bucket, unsupported operation) are not.
//!   Every error names the key, the store URL, the attempt count and the cause.
//!
//! [`Publisher::attempt`] makes a single attempt at one operation and reports
//! its outcome, never waiting; [`RetryState`](super::retry::RetryState) decides
//! whether and when to try again, and the [`driver`] sleeps
//! until then. [`Publisher::apply`], [`Publisher::put`] and
//! [`Publisher::delete`] run that loop on the caller's task.

use std::collections::HashSet;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use super::driver;
use super::layout::ObjectKind;
use super::retry::{GiveUp, RetryPolicy};
use super::store::Store;

/// One object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutObject {
    /// The key relative to the store root, e.g. `demo/opus/12.3.m4s`.
    pub key: String,
    /// The complete object.
    pub body: Bytes,
    /// What the object is.
    pub kind: ObjectKind,
}

/// One store operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Store an object.
    Put(PutObject),
    /// Remove the object with this key (relative to the store root). A key
    /// that does not exist is not an error.
    Delete(String),
}

impl Op {
    /// The key the operation is on.
    pub fn key(&self) -> &str {
        match self {
            Self::Put(obj) => &obj.key,
            Self::Delete(key) => key,
        }
    }

    /// The operation's name in errors and logs.
    pub(super) fn verb(&self) -> &'static str {
        match self {
            Self::Put(_) => "put",
            Self::Delete(_) => "delete",
        }
    }
}

/// Ops of one stage go concurrently (bounded), stages run in order: a stage
/// starts only when every op of the previous stage is stored. The packager
/// uses this to store media before any playlist that names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The stages, in the order they are applied. A key may appear at most
    /// once per stage (two operations on one key would race).
    pub stages: Vec<Vec<Op>>,
}

/// What applying a batch (or many) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Objects stored (including immutable objects found already stored).
    pub puts: u64,
    /// Immutable objects that were already stored with identical bytes.
    pub already_present: u64,
    /// Delete operations done (including keys that did not exist).
    pub deletes: u64,
    /// Body bytes of the objects stored.
    pub bytes: u64,
    /// Attempts beyond the first, over all operations.
    pub retries: u64,
    /// Immutable objects stored first by another process of the standby
    /// group, with other bytes, and kept as they are
    /// ([`Publisher::sharing_names`]).
    pub adopted: u64,
}

impl BatchStats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &BatchStats) {
        self.puts += other.puts;
        self.already_present += other.already_present;
        self.deletes += other.deletes;
        self.bytes += other.bytes;
        self.retries += other.retries;
        self.adopted += other.adopted;
    }
}

/// Why publishing failed. Each variant says what the operator should do.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// An immutable object exists with different bytes. Nothing was
    /// overwritten. A broadcast is reusing names: a restarted broadcast must
    /// continue the media sequence (or use a new stream name).
    #[error(
        "refusing to overwrite immutable object {key:?} in {store} with different bytes \
         ({stored_len} bytes stored, {new_len} bytes offered); the stored object is unchanged. \
         Media names are never reused: continue the sequence or publish under a new stream name"
    )]
    WouldOverwrite {
        /// The object key.
        key: String,
        /// The store URL.
        store: String,
        /// Size of the object already stored.
        stored_len: usize,
        /// Size of the object offered.
        new_len: usize,
    },
    /// The store kept failing with errors that may be temporary (network,
    /// timeouts, server errors) until the retry policy gave up. Check that the
    /// store is reachable and healthy.
    #[error(
        "could not {op} {key:?} in {store}: gave up after {attempts} attempts; last error: {}",
        full_cause(.cause)
    )]
    Unavailable {
        /// The operation: `put` or `delete`.
        op: &'static str,
        /// The object key.
        key: String,
        /// The store URL.
        store: String,
        /// Attempts made.
        attempts: u32,
        /// The last error, with its whole cause chain already in the
        /// message (so it is not also reported as the error's source).
        cause: Box<object_store::Error>,
    },
    /// The store refused the operation for a reason retrying cannot fix
    /// (credentials, permissions, missing bucket, unsupported feature). Fix
    /// the store configuration.
    #[error(
        "could not {op} {key:?} in {store}: {reason} (attempt {attempts}, not retried); error: {}",
        full_cause(.cause)
    )]
    Rejected {
        /// The operation: `put`, `delete` or `read back`.
        op: &'static str,
        /// The object key.
        key: String,
        /// The store URL.
        store: String,
        /// Attempts made.
        attempts: u32,
        /// Why retrying cannot help.
        reason: &'static str,
        /// The store's error, with its whole cause chain already in the
        /// message.
        cause: Box<object_store::Error>,
    },
    /// A key is not a valid object path (empty segment, `.` or `..`, ...).
    /// This is a bug in whatever built the key; nothing of the batch was stored.
    #[error(
        "object key {key:?} is not a valid store path (nothing of this batch was stored): {source}"
    )]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it is invalid.
        source: object_store::path::Error,
    },
    /// One stage names a key twice, so the two operations would race. A bug
    /// in whatever built the batch; nothing of the batch was stored.
    #[error(
        "stage {stage} of a batch names {key:?} twice, so the operations would race (nothing of this batch was stored)"
    )]
    DuplicateKey {
        /// The stage index (0-based).
        stage: usize,
        /// The key.
        key: String,
    },
    /// The publish driver has stopped after an error; its join handle returns
    /// that error. Nothing more can be published through it.
    #[error("the publish driver has stopped; its join handle holds the error that stopped it")]
    DriverStopped,
}

/// Stores objects in one [`Store`] with one [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct Publisher {
    store: Store,
    retry: RetryPolicy,
    target_duration_s: u32,
    part_target_ms: u32,
    observer: Option<tokio::sync::broadcast::Sender<Op>>,
    shared_names: bool,
}

/// Why one attempt at an operation failed.
#[derive(Debug)]
pub enum AttemptError {
    /// The store failed the attempt.
    /// [`classify`](super::retry::classify) says whether another attempt may
    /// succeed; [`Publisher::give_up`] turns it into the operation's error.
    Store(object_store::Error),
    /// The operation failed in a way no other attempt can change (different
    /// bytes stored under an immutable key, an invalid key).
    Final(PublishError),
}

impl Publisher {
    /// Operations in flight per stage by default: enough to put a part of
    /// every rendition and their playlists at once without flooding the store.
    pub const DEFAULT_CONCURRENCY: usize = 16;

    /// A publisher for `store` retrying with `retry`.
    pub fn new(store: Store, retry: RetryPolicy) -> Self {
        Self {
            store,
            retry,
            target_duration_s: DEFAULT_TARGET_DURATION_S,
            part_target_ms: DEFAULT_PART_TARGET_MS,
            observer: None,
            shared_names: false,
        }
    }

    /// For a process of a standby group, whose members compute the same
    /// names for the same span of the stream and encode it each their own
    /// way: a part, segment or `at/` playlist already stored with other
    /// bytes was stored by another member (an old leader that died before
    /// listing it) and is kept as it is, for names never change their
    /// bytes. The init segment, which every member makes identical, must
    /// still match.
    pub fn sharing_names(mut self) -> Self {
        self.shared_names = true;
        self
    }

    /// Announces every operation on `observer` once its whole stage is
    /// done, so an in-process origin learns of a part or playlist the moment
    /// it is stored (and never before). A lagging receiver misses messages
    /// and must resynchronise from the store.
    pub fn with_observer(mut self, observer: tokio::sync::broadcast::Sender<Op>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sets the playlist timing that [`ObjectKind::cache_control`] derives
    /// playlist lifetimes from: `EXT-X-TARGETDURATION` in seconds and
    /// `PART-TARGET` in milliseconds. Defaults: 2 s and 320 ms (DESIGN.md).
    pub fn with_playlist_timing(mut self, target_duration_s: u32, part_target_ms: u32) -> Self {
        self.target_duration_s = target_duration_s;
        self.part_target_ms = part_target_ms;
        self
    }

    /// The store objects go to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The policy the operations of this publisher are retried with.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Applies the stages of `batch` in order, the operations of each stage
    /// concurrently, retrying as the [`RetryPolicy`] says. Stops at the first
    /// operation that fails for good: later stages are not started (so no
    /// playlist names a missing object), and operations of the failing stage
    /// still in flight are abandoned. This is what the publish driver does
    /// with each batch ([`driver::apply`]).
    pub async fn apply(&self, batch: Batch) -> Result<BatchStats, PublishError> {
        driver::apply(self, batch).await
    }

    /// Stores one object (see the module docs for immutable kinds), retrying
    /// as the [`RetryPolicy`] says.
    pub async fn put(&self, obj: PutObject) -> Result<(), PublishError> {
        parse_key(&obj.key)?;
        driver::perform(self, &Op::Put(obj)).await.map(|_| ())
    }

    /// Deletes one object, retrying as the [`RetryPolicy`] says; a key that
    /// does not exist is success.
    pub async fn delete(&self, key: &str) -> Result<(), PublishError> {
        parse_key(key)?;
        driver::perform(self, &Op::Delete(key.to_owned()))
            .await
            .map(|_| ())
    }

    /// Makes one attempt at `op`, without retrying or waiting, and returns
    /// what it stored ([`BatchStats::retries`] is 0) or why it failed.
    pub async fn attempt(&self, op: &Op) -> Result<BatchStats, AttemptError> {
        // Batch keys were validated before anything was stored; parsing
        // again is cheap and keeps this free of assumptions.
        let path = parse_key(op.key()).map_err(AttemptError::Final)?;
        match op {
            Op::Put(obj) => self.attempt_put(&path, obj).await,
            Op::Delete(_) => self.attempt_delete(&path).await,
        }
    }

    /// The error of `op` once its retry state gave up for `why` after
    /// `attempts` attempts, the last failing with `cause`.
    pub fn give_up(
        &self,
        op: &Op,
        attempts: u32,
        why: GiveUp,
        cause: object_store::Error,
    ) -> PublishError {
        let (op_name, key, store) = (op.verb(), op.key().to_owned(), self.store.url().to_owned());
        match why {
            GiveUp::Permanent(reason) => PublishError::Rejected {
                op: op_name,
                key,
                store,
                attempts,
                reason,
                cause: Box::new(cause),
            },
            GiveUp::Exhausted => PublishError::Unavailable {
                op: op_name,
                key,
                store,
                attempts,
                cause: Box::new(cause),
            },
        }
    }

    /// Where each operation is announced once its stage is stored, if
    /// anywhere.
    pub(super) fn observer(&self) -> Option<&tokio::sync::broadcast::Sender<Op>> {
        self.observer.as_ref()
    }

    fn put_options(&self, obj: &PutObject) -> PutOptions {
        let mode = if obj.kind.immutable() {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let mut options = PutOptions::from(mode);
        if self.store.capabilities().supports_attributes {
            let cache = obj
                .kind
                .cache_control(self.target_duration_s, self.part_target_ms);
            options.attributes = Attributes::from_iter([
                (
                    Attribute::ContentType,
                    AttributeValue::from(obj.kind.content_type()),
                ),
                (Attribute::CacheControl, AttributeValue::from(cache)),
            ]);
        }
        options
    }

    async fn attempt_put(&self, path: &Path, obj: &PutObject) -> Result<BatchStats, AttemptError> {
        let payload = PutPayload::from_bytes(obj.body.clone());
        let result = self
            .store
            .object_store()
            .put_opts(path, payload, self.put_options(obj))
            .await;
        let error = match result {
            Ok(_) => return Ok(self.put_stats(obj, false)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) if obj.kind.immutable() => match self.compare_stored(path, obj).await {
                Ok(()) => return Ok(self.put_stats(obj, true)),
                Err(CompareError::Different { .. })
                    if self.shared_names
                        && matches!(obj.kind, ObjectKind::Media | ObjectKind::PartPlaylist) =>
                {
                    tracing::info!(key = %obj.key, store = %self.store.url(), "kept what another ingest of the group stored under this name");
                    return Ok(BatchStats {
                        adopted: 1,
                        ..self.put_stats(obj, true)
                    });
                }
                Err(CompareError::Different { stored_len }) => {
                    return Err(AttemptError::Final(PublishError::WouldOverwrite {
                        key: obj.key.clone(),
                        store: self.store.url().to_owned(),
                        stored_len,
                        new_len: obj.body.len(),
                    }));
                }
                // Deleted between our create and our read: a transient
                // failure, so the next attempt creates it again.
                Err(CompareError::Store(object_store::Error::NotFound { path, source })) => {
                    object_store::Error::Generic {
                        store: "publish",
                        source: format!(
                            "object {path} existed on create but was gone on read back: {source}"
                        )
                        .into(),
                    }
                }
                Err(CompareError::Store(error)) => error,
            },
            Err(error) => error,
        };
        Err(AttemptError::Store(error))
    }

    fn put_stats(&self, obj: &PutObject, already_present: bool) -> BatchStats {
        if already_present {
            tracing::debug!(key = %obj.key, store = %self.store.url(), "immutable object already stored with identical bytes");
        }
        BatchStats {
            puts: 1,
            already_present: u64::from(already_present),
            bytes: u64::try_from(obj.body.len()).unwrap_or(u64::MAX),
            ..BatchStats::default()
        }
    }

    /// Reads the stored object back and compares it with `obj`.
    async fn compare_stored(&self, path: &Path, obj: &PutObject) -> Result<(), CompareError> {
        let stored = self
            .store
            .object_store()
            .get(path)
            .await
            .map_err(CompareError::Store)?
            .bytes()
            .await
            .map_err(CompareError::Store)?;
        if stored == obj.body {
            Ok(())
        } else {
            Err(CompareError::Different {
                stored_len: stored.len(),
            })
        }
    }

    async fn attempt_delete(&self, path: &Path) -> Result<BatchStats, AttemptError> {
        match self.store.object_store().delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(BatchStats {
                deletes: 1,
                ..BatchStats::default()
            }),
            Err(error) => Err(AttemptError::Store(error)),
        }
    }
}

/// `EXT-X-TARGETDURATION` of the default timing (DESIGN.md: 1.92 s segments).
const DEFAULT_TARGET_DURATION_S: u32 = 2;
/// `PART-TARGET` of the default timing (DESIGN.md: 320 ms parts).
const DEFAULT_PART_TARGET_MS: u32 = 320;

/// An error and its sources on one line. `object_store` errors put the root
/// cause (such as "Connection refused") only in their source chain, and an
/// operator needs it.
fn full_cause(error: &object_store::Error) -> String {
    let mut text = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

enum CompareError {
    Different { stored_len: usize },
    Store(object_store::Error),
}

fn parse_key(key: &str) -> Result<Path, PublishError> {
    if key.trim_matches('/').is_empty() {
        // `Path::parse` accepts this as the store root, which is no object.
        return Err(PublishError::InvalidKey {
            key: key.to_owned(),
            source: object_store::path::Error::EmptySegment {
                path: key.to_owned(),
            },
        });
    }
    Path::parse(key).map_err(|source| PublishError::InvalidKey {
        key: key.to_owned(),
        source,
    })
}

/// Checks every key before anything is stored, so that a malformed batch
/// stores nothing rather than its first stages.
pub(super) fn validate(batch: &Batch) -> Result<(), PublishError> {
    for (stage, ops) in batch.stages.iter().enumerate() {
        let mut seen = HashSet::with_capacity(ops.len());
        for op in ops {
            let key = op.key();
            parse_key(key)?;
            if !seen.insert(key) {
                return Err(PublishError::DuplicateKey {
                    stage,
                    key: key.to_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Op {
        Op::Put(PutObject {
            key: key.to_owned(),
            body: Bytes::from_static(b"x"),
            kind: ObjectKind::Media,
        })
    }

    #[test]
    fn duplicate_keys_within_a_stage_are_rejected() {
        let batch = Batch {
            stages: vec![
                vec![put("a/1.m4s")],
                vec![put("a/2.m4s"), Op::Delete("a/2.m4s".into())],
            ],
        };
        match validate(&batch) {
            Err(PublishError::DuplicateKey { stage, key }) => {
                assert_eq!(stage, 1);
                assert_eq!(key, "a/2.m4s");
            }
            other => panic!("expected DuplicateKey, got {other:?}"),
        }
    }

    #[test]
    fn the_same_key_in_different_stages_is_fine() {
        let batch = Batch {
            stages: vec![vec![put("a/live.m3u8")], vec![put("a/live.m3u8")]],
        };
        assert!(validate(&batch).is_ok());
    }

    #[test]
    fn malformed_keys_are_rejected_before_anything_is_stored() {
        for key in ["", "/", "a//b.m4s", "a/../b.m4s"] {
            let batch = Batch {
                stages: vec![vec![put("ok/1.m4s")], vec![put(key)]],
            };
            assert!(
                matches!(validate(&batch), Err(PublishError::InvalidKey { .. })),
                "key {key:?} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn invalid_batch_stores_nothing() {
        let store = crate::publish::open_store("memory://").expect("memory store");
        let publisher = Publisher::new(store.clone(), RetryPolicy::default());
        let batch = Batch {
            stages: vec![vec![put("ok/1.m4s")], vec![put("bad//key")]],
        };
        let err = publisher.apply(batch).await.expect_err("must fail");
        assert!(err.to_string().contains("bad//key"), "{err}");
        let found = store.object_store().head(&Path::from("ok/1.m4s")).await;
        assert!(
            matches!(found, Err(object_store::Error::NotFound { .. })),
            "{found:?}"
        );
    }
}
