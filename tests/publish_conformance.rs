//! Storage conformance: one suite, run against every backend the publisher
//! supports (in-memory, local filesystem, and a real S3-compatible server).
//!
//! The S3 tests need a running server. Start one with
//! `eval "$(scripts/s3-server.sh start)"`, which exports `AWS_ENDPOINT` (or
//! `ONAIR_TEST_S3_ENDPOINT`) and credentials; without it those tests fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{Attribute, GetResult, ObjectStoreExt};
#[path = "common/hooked_store.rs"]
mod hooked_store;
#[path = "common/s3.rs"]
mod s3;

use hooked_store::{HookedStore, Hooks};
use s3::S3Server;

use onair::publish::{
    Batch, ObjectKind, Op, PublishError, Publisher, PutObject, RetryPolicy, Store, StoreOptions,
    open_store, open_store_with, spawn,
};

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

/// A retry policy with short waits so that retry tests run fast.
fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(10),
    }
}

fn object(key: &str, body: &'static [u8], kind: ObjectKind) -> PutObject {
    PutObject {
        key: key.to_owned(),
        body: Bytes::from_static(body),
        kind,
    }
}

async fn read(store: &Store, key: &str) -> Option<GetResult> {
    match store.object_store().get(&Path::from(key)).await {
        Ok(result) => Some(result),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(error) => panic!("reading {key} from {}: {error}", store.url()),
    }
}

async fn read_bytes(store: &Store, key: &str) -> Option<Bytes> {
    match read(store, key).await {
        Some(result) => Some(result.bytes().await.expect("read body")),
        None => None,
    }
}

/// Runs every conformance check against `store`.
async fn conformance(store: Store) {
    put_then_get_returns_the_bytes(&store).await;
    immutable_put_twice_with_same_bytes_succeeds(&store).await;
    immutable_put_with_different_bytes_fails_and_keeps_the_original(&store).await;
    live_playlist_is_overwritten(&store).await;
    attributes_are_stored_where_supported(&store).await;
    stages_run_in_order_and_ops_within_a_stage_concurrently(&store).await;
    delete_removes_and_deleting_a_missing_key_succeeds(&store).await;
    transient_failures_are_retried(&store).await;
    permanent_failures_are_not_retried(&store).await;
    driver_returns_the_first_error_and_stops(&store).await;
    driver_applies_batches_in_order(&store).await;
}

async fn put_then_get_returns_the_bytes(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    let body: &'static [u8] = b"\x00\x00\x00\x18styp and more media bytes";
    publisher
        .put(object("demo/opus/12.3.m4s", body, ObjectKind::Media))
        .await
        .expect("put media");
    assert_eq!(
        read_bytes(store, "demo/opus/12.3.m4s").await.as_deref(),
        Some(body)
    );
}

async fn immutable_put_twice_with_same_bytes_succeeds(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    let init = object("demo/opus/init.mp4", b"ftyp-moov", ObjectKind::Init);
    publisher.put(init.clone()).await.expect("first put");
    let stats = publisher
        .apply(Batch {
            stages: vec![vec![Op::Put(init)]],
        })
        .await
        .expect("second put of identical bytes is an idempotent success");
    assert_eq!(stats.puts, 1);
    assert_eq!(
        stats.already_present, 1,
        "the second put must find the object stored"
    );
    assert_eq!(
        read_bytes(store, "demo/opus/init.mp4").await.as_deref(),
        Some(&b"ftyp-moov"[..])
    );
}

async fn immutable_put_with_different_bytes_fails_and_keeps_the_original(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    publisher
        .put(object("demo/aac/7.0.m4s", b"original", ObjectKind::Media))
        .await
        .expect("first put");
    let err = publisher
        .put(object(
            "demo/aac/7.0.m4s",
            b"a different part",
            ObjectKind::Media,
        ))
        .await
        .expect_err("overwriting media with different bytes must fail");
    match &err {
        PublishError::WouldOverwrite {
            key,
            store: url,
            stored_len,
            new_len,
        } => {
            assert_eq!(key, "demo/aac/7.0.m4s");
            assert_eq!(url, store.url());
            assert_eq!((*stored_len, *new_len), (8, 16));
        }
        other => panic!("expected WouldOverwrite, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("demo/aac/7.0.m4s") && text.contains(store.url()),
        "{text}"
    );
    assert_eq!(
        read_bytes(store, "demo/aac/7.0.m4s").await.as_deref(),
        Some(&b"original"[..]),
        "the stored object must be unchanged"
    );
    // The `at/` playlists are immutable too.
    publisher
        .put(object(
            "demo/aac/at/7.0.m3u8",
            b"#EXTM3U\n1",
            ObjectKind::PartPlaylist,
        ))
        .await
        .expect("put at/ playlist");
    let err = publisher
        .put(object(
            "demo/aac/at/7.0.m3u8",
            b"#EXTM3U\n2",
            ObjectKind::PartPlaylist,
        ))
        .await
        .expect_err("at/ playlists are immutable");
    assert!(matches!(err, PublishError::WouldOverwrite { .. }), "{err}");
}

async fn live_playlist_is_overwritten(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    for version in [&b"#EXTM3U\nv1"[..], &b"#EXTM3U\nversion 2"[..]] {
        publisher
            .put(PutObject {
                key: "demo/opus/live.m3u8".into(),
                body: Bytes::copy_from_slice(version),
                kind: ObjectKind::LivePlaylist,
            })
            .await
            .expect("put live playlist");
        assert_eq!(
            read_bytes(store, "demo/opus/live.m3u8").await.as_deref(),
            Some(version)
        );
    }
}

async fn attributes_are_stored_where_supported(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry()).with_playlist_timing(4, 1000);
    let cases = [
        (
            "attrs/opus/init.mp4",
            ObjectKind::Init,
            "audio/mp4",
            "public, max-age=31536000, immutable",
        ),
        (
            "attrs/opus/3.1.m4s",
            ObjectKind::Media,
            "audio/mp4",
            "public, max-age=31536000, immutable",
        ),
        (
            "attrs/opus/at/3.1.m3u8",
            ObjectKind::PartPlaylist,
            "application/vnd.apple.mpegurl",
            "public, max-age=24",
        ),
        (
            "attrs/opus/live.m3u8",
            ObjectKind::LivePlaylist,
            "application/vnd.apple.mpegurl",
            "public, max-age=0",
        ),
        (
            "attrs/index.m3u8",
            ObjectKind::Multivariant,
            "application/vnd.apple.mpegurl",
            "public, max-age=4",
        ),
        (
            "attrs/index.html",
            ObjectKind::Page,
            "text/html; charset=utf-8",
            "public, max-age=60",
        ),
    ];
    for (key, kind, content_type, cache_control) in cases {
        publisher
            .put(object(key, b"body", kind))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        let got = read(store, key)
            .await
            .unwrap_or_else(|| panic!("{key} missing"));
        let attrs = &got.attributes;
        if store.capabilities().supports_attributes {
            assert_eq!(
                attrs.get(&Attribute::ContentType).map(|v| v.as_ref()),
                Some(content_type),
                "{key} Content-Type"
            );
            assert_eq!(
                attrs.get(&Attribute::CacheControl).map(|v| v.as_ref()),
                Some(cache_control),
                "{key} Cache-Control"
            );
        } else {
            // Nothing was sent (the store would have refused it); the origin
            // derives the headers from the key.
            assert!(attrs.is_empty(), "{key}: unexpected attributes {attrs:?}");
        }
    }
}

async fn stages_run_in_order_and_ops_within_a_stage_concurrently(store: &Store) {
    let observed = ObservedStore::wrap(store);
    // The first op of stage 0 is the slowest, so a stage 1 that started after
    // the first completion, rather than after all, would be caught.
    observed.set_delay("order/opus/5.0.m4s", Duration::from_millis(300));
    observed.set_delay("order/aac/5.0.m4s", Duration::from_millis(100));
    let publisher = Publisher::new(observed.store(), quick_retry());
    let stage0 = [
        "order/opus/5.0.m4s",
        "order/aac/5.0.m4s",
        "order/opus/5.m4s",
    ];
    let stage1 = ["order/opus/live.m3u8", "order/aac/live.m3u8"];
    let stage2 = ["order/opus/1.0.m4s"];
    let batch = Batch {
        stages: vec![
            stage0
                .iter()
                .map(|k| Op::Put(object(k, b"media", ObjectKind::Media)))
                .collect(),
            stage1
                .iter()
                .map(|k| Op::Put(object(k, b"#EXTM3U", ObjectKind::LivePlaylist)))
                .collect(),
            stage2.iter().map(|k| Op::Delete((*k).to_owned())).collect(),
        ],
    };
    let stats = publisher.apply(batch).await.expect("apply");
    assert_eq!((stats.puts, stats.deletes, stats.retries), (5, 1, 0));

    let events = observed.events();
    let position = |kind: EventKind, key: &str| {
        events
            .iter()
            .position(|e| e.kind == kind && e.key == key)
            .unwrap_or_else(|| panic!("no {kind:?} event for {key} in {events:?}"))
    };
    for (earlier, later) in [(&stage0[..], &stage1[..]), (&stage1[..], &stage2[..])] {
        let last_done = earlier
            .iter()
            .map(|k| position(EventKind::Done, k))
            .max()
            .expect("non-empty stage");
        for key in later {
            let started = position(EventKind::Start, key);
            assert!(
                started > last_done,
                "{key} started before the previous stage was stored: {events:?}"
            );
        }
    }
    // Within stage 0 every op started before the slowest one finished.
    let slowest_done = position(EventKind::Done, "order/opus/5.0.m4s");
    for key in stage0 {
        assert!(
            position(EventKind::Start, key) < slowest_done,
            "stage 0 ran serially: {events:?}"
        );
    }
}

async fn delete_removes_and_deleting_a_missing_key_succeeds(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    publisher
        .put(object("demo/opus/1.m4s", b"old segment", ObjectKind::Media))
        .await
        .expect("put");
    publisher.delete("demo/opus/1.m4s").await.expect("delete");
    assert!(
        read(store, "demo/opus/1.m4s").await.is_none(),
        "object still there"
    );
    publisher
        .delete("demo/opus/1.m4s")
        .await
        .expect("deleting a missing key is success");
    publisher
        .delete("never/existed/at/all.m4s")
        .await
        .expect("deleting a missing key is success");
}

async fn transient_failures_are_retried(store: &Store) {
    let observed = ObservedStore::wrap(store);
    observed.fail_next_puts("retry/opus/9.0.m4s", 2, FailureKind::Transient);
    let publisher = Publisher::new(observed.store(), quick_retry());
    let stats = publisher
        .apply(Batch {
            stages: vec![vec![Op::Put(object(
                "retry/opus/9.0.m4s",
                b"part",
                ObjectKind::Media,
            ))]],
        })
        .await
        .expect("two transient failures are within four attempts");
    assert_eq!(stats.retries, 2);
    assert_eq!(
        read_bytes(store, "retry/opus/9.0.m4s").await.as_deref(),
        Some(&b"part"[..])
    );

    // More failures than attempts: the error names key, store, attempts, cause.
    observed.fail_next_puts("retry/opus/9.1.m4s", 10, FailureKind::Transient);
    let err = publisher
        .put(object("retry/opus/9.1.m4s", b"part", ObjectKind::Media))
        .await
        .expect_err("must give up");
    match &err {
        PublishError::Unavailable { key, attempts, .. } => {
            assert_eq!(key, "retry/opus/9.1.m4s");
            assert_eq!(*attempts, 4);
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let text = err.to_string();
    for needle in [
        "retry/opus/9.1.m4s",
        store.url(),
        "4 attempts",
        "injected transient failure",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert_eq!(observed.put_attempts("retry/opus/9.1.m4s"), 4);
}

async fn permanent_failures_are_not_retried(store: &Store) {
    let observed = ObservedStore::wrap(store);
    observed.fail_next_puts("denied/opus/1.0.m4s", 10, FailureKind::PermissionDenied);
    let publisher = Publisher::new(observed.store(), quick_retry());
    let err = publisher
        .put(object("denied/opus/1.0.m4s", b"part", ObjectKind::Media))
        .await
        .expect_err("permission denied must fail");
    assert!(
        matches!(&err, PublishError::Rejected { attempts: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("permission"), "{err}");
    assert_eq!(
        observed.put_attempts("denied/opus/1.0.m4s"),
        1,
        "must not retry"
    );
}

async fn driver_returns_the_first_error_and_stops(store: &Store) {
    let publisher = Publisher::new(store.clone(), quick_retry());
    publisher
        .put(object("driver/opus/1.0.m4s", b"first", ObjectKind::Media))
        .await
        .expect("seed");
    let (handle, task) = spawn(publisher, 4);
    let batch = |key: &str, body: &'static [u8]| Batch {
        stages: vec![vec![Op::Put(object(key, body, ObjectKind::Media))]],
    };
    handle
        .send(batch("driver/opus/1.1.m4s", b"ok"))
        .await
        .expect("send 1");
    handle
        .send(batch("driver/opus/1.0.m4s", b"conflicting"))
        .await
        .expect("send 2");
    // Queued behind the failing batch: must never be applied.
    let _ = handle.send(batch("driver/opus/1.2.m4s", b"after")).await;
    let result = task.await.expect("driver task panicked");
    match result {
        Err(PublishError::WouldOverwrite { key, .. }) => assert_eq!(key, "driver/opus/1.0.m4s"),
        other => panic!("expected the first error (WouldOverwrite), got {other:?}"),
    }
    assert!(handle.is_stopped());
    let err = handle
        .send(batch("driver/opus/1.3.m4s", b"late"))
        .await
        .expect_err("send after the driver stopped must fail");
    assert!(matches!(err, PublishError::DriverStopped), "{err:?}");
    assert!(
        read(store, "driver/opus/1.1.m4s").await.is_some(),
        "batch before the error lost"
    );
    assert!(
        read(store, "driver/opus/1.2.m4s").await.is_none(),
        "batch after the error applied"
    );
}

async fn driver_applies_batches_in_order(store: &Store) {
    let observed = ObservedStore::wrap(store);
    // An early, slow batch: a driver that overlapped batches would finish the
    // later ones first.
    observed.set_delay("seq/opus/0.m4s", Duration::from_millis(80));
    let (handle, task) = spawn(Publisher::new(observed.store(), quick_retry()), 1);
    let keys: Vec<String> = (0..5).map(|i| format!("seq/opus/{i}.m4s")).collect();
    for key in &keys {
        handle
            .send(Batch {
                stages: vec![vec![Op::Put(PutObject {
                    key: key.clone(),
                    body: Bytes::from(key.clone()),
                    kind: ObjectKind::Media,
                })]],
            })
            .await
            .expect("send");
    }
    drop(handle);
    let summary = task
        .await
        .expect("driver task panicked")
        .expect("driver result");
    assert_eq!(summary.batches, 5);
    assert_eq!(summary.totals.puts, 5);
    let done: Vec<String> = observed
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::Done)
        .map(|e| e.key)
        .collect();
    assert_eq!(done, keys, "batches completed out of order");
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

#[tokio::test]
async fn conformance_in_memory() {
    let store = open_store("memory://").expect("open memory store");
    assert!(store.capabilities().supports_attributes);
    conformance(store).await;
}

#[tokio::test]
async fn conformance_local_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("onair-data");
    let store = open_store(root.to_str().expect("utf-8 temp path")).expect("open local store");
    assert!(!store.capabilities().supports_attributes);
    conformance(store).await;
    // The keys are relative to the directory given.
    assert!(root.join("demo/opus/12.3.m4s").is_file());
}

#[tokio::test]
async fn conformance_s3() {
    let server = S3Server::from_env();
    let bucket = server.create_bucket("conformance");
    let url = format!("s3://{bucket}/broadcasts");
    let store = open_store(&url).expect("open S3 store");
    assert!(store.capabilities().supports_attributes);
    conformance(store).await;

    // What an HTTP client (the origin, a CDN) sees: the prefix from the URL is
    // applied and the headers are stored with the object.
    let response = server.request("GET", &format!("/{bucket}/broadcasts/attrs/opus/3.1.m4s"));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("audio/mp4"));
    assert_eq!(
        response.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(&response.body[..], b"body");
}

/// The server really refuses a conditional create over an existing object
/// (so `PutMode::Create` is a guarantee there, not emulated by us).
#[tokio::test]
async fn s3_server_enforces_if_none_match() {
    let server = S3Server::from_env();
    let bucket = server.create_bucket("ifnonematch");
    let put = |body: &[u8]| {
        server.request_with(
            "PUT",
            &format!("/{bucket}/k.m4s"),
            &[("If-None-Match", "*")],
            body,
        )
    };
    assert_eq!(put(b"one").status, 200);
    assert_eq!(put(b"two").status, 412);
    let store = open_store(&format!("s3://{bucket}")).expect("open");
    assert_eq!(
        read_bytes(&store, "k.m4s").await.as_deref(),
        Some(&b"one"[..])
    );
}

#[tokio::test]
async fn s3_missing_bucket_is_a_permanent_error_naming_the_store() {
    let _server = S3Server::from_env();
    let url = "s3://onair-no-such-bucket-anywhere/x";
    let store = open_store(url).expect("open");
    let started = Instant::now();
    let err = Publisher::new(store, RetryPolicy::default())
        .put(object("a/1.m4s", b"x", ObjectKind::Media))
        .await
        .expect_err("missing bucket must fail");
    assert!(
        matches!(&err, PublishError::Rejected { attempts: 1, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(url) && text.contains("a/1.m4s") && text.contains("bucket"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn s3_wrong_credentials_are_rejected_without_retry() {
    let server = S3Server::from_env();
    let bucket = server.create_bucket("badcreds");
    let options = StoreOptions {
        config: vec![
            ("aws_access_key_id".into(), "onair-test".into()),
            ("aws_secret_access_key".into(), "not-the-secret".into()),
        ],
        ..StoreOptions::default()
    };
    let store = open_store_with(&format!("s3://{bucket}"), &options).expect("open");
    let err = Publisher::new(store, RetryPolicy::default())
        .put(object("a/1.m4s", b"x", ObjectKind::Media))
        .await
        .expect_err("a wrong secret must fail");
    assert!(
        matches!(&err, PublishError::Rejected { attempts: 1, .. }),
        "{err:?}"
    );
}

/// Nothing listens on the port: every attempt is refused at once, and the
/// publisher gives up after its attempts, well within a few seconds.
#[tokio::test]
async fn unreachable_s3_endpoint_fails_after_bounded_retries() {
    let port = unused_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = open_store_with(
        "s3://onair-unreachable/prefix",
        &s3_options(&endpoint, None),
    )
    .expect("open");
    let started = Instant::now();
    let err = Publisher::new(store, RetryPolicy::default())
        .put(object("demo/opus/1.0.m4s", b"x", ObjectKind::Media))
        .await
        .expect_err("an unreachable store must fail");
    let elapsed = started.elapsed();
    let attempts = RetryPolicy::default().max_attempts;
    assert!(
        matches!(&err, PublishError::Unavailable { attempts: a, .. } if *a == attempts),
        "{err:?}"
    );
    let text = err.to_string();
    for needle in [
        "demo/opus/1.0.m4s".to_owned(),
        "s3://onair-unreachable/prefix".to_owned(),
        format!("after {attempts} attempts"),
        format!("127.0.0.1:{port}"),
        // The root cause from the source chain, not only "error sending request".
        "refused".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} missing from: {text}");
    }
    assert!(
        elapsed < Duration::from_secs(5),
        "giving up took {elapsed:?}"
    );
}

/// The port accepts connections but never answers: the request timeout, not
/// the operating system, bounds every attempt.
#[tokio::test]
async fn hanging_s3_endpoint_fails_within_the_request_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let options = s3_options(&endpoint, Some(Duration::from_millis(300)));
    let store = open_store_with("s3://onair-hanging", &options).expect("open");
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    let started = Instant::now();
    let err = Publisher::new(store, retry)
        .put(object("demo/opus/1.0.m4s", b"x", ObjectKind::Media))
        .await
        .expect_err("a hanging store must fail");
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, PublishError::Unavailable { attempts: 3, .. }),
        "{err:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "timeouts not applied? {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "giving up took {elapsed:?}"
    );
    drop(listener);
}

// ---------------------------------------------------------------------------
// Retries on tokio's clock, paused: the exact schedule, no real waiting
// ---------------------------------------------------------------------------

/// The timer wheel rounds every sleep up to the next millisecond.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// When each put attempt on `key` started, in order.
fn put_starts(events: &[Event], key: &str) -> Vec<tokio::time::Instant> {
    events
        .iter()
        .filter(|e| e.kind == EventKind::Start && e.key == key)
        .map(|e| e.at)
        .collect()
}

fn position(events: &[Event], kind: EventKind, key: &str) -> Option<usize> {
    events.iter().position(|e| e.kind == kind && e.key == key)
}

#[tokio::test(start_paused = true)]
async fn driver_retries_a_failing_store_on_the_policy_schedule() {
    let store = open_store("memory://").expect("open memory store");
    let observed = ObservedStore::wrap(&store);
    let retry = RetryPolicy::default();
    let failing = "paused/opus/1.0.m4s";
    let sibling = "paused/aac/1.0.m4s";
    let playlist = "paused/opus/live.m3u8";
    let next = "paused/opus/1.1.m4s";
    observed.fail_next_puts(failing, 3, FailureKind::Transient);

    let (handle, task) = spawn(Publisher::new(observed.store(), retry), 4);
    let started = tokio::time::Instant::now();
    handle
        .send(Batch {
            stages: vec![
                vec![
                    Op::Put(object(failing, b"opus part", ObjectKind::Media)),
                    Op::Put(object(sibling, b"aac part", ObjectKind::Media)),
                ],
                vec![Op::Put(object(
                    playlist,
                    b"#EXTM3U",
                    ObjectKind::LivePlaylist,
                ))],
            ],
        })
        .await
        .expect("send the first batch");
    handle
        .send(Batch {
            stages: vec![vec![Op::Put(object(next, b"next part", ObjectKind::Media))]],
        })
        .await
        .expect("send the second batch");
    drop(handle);
    let summary = task
        .await
        .expect("driver task panicked")
        .expect("three transient failures are within five attempts");
    let elapsed = started.elapsed();

    assert_eq!(summary.batches, 2);
    assert_eq!((summary.totals.puts, summary.totals.retries), (4, 3));
    assert_eq!(observed.put_attempts(failing), 4);
    assert_eq!(
        read_bytes(&store, failing).await.as_deref(),
        Some(&b"opus part"[..])
    );

    // Each retry starts its backoff after the failure before it (the store
    // answers at once, so an attempt fails the instant it starts).
    let events = observed.events();
    let starts = put_starts(&events, failing);
    assert_eq!(starts.len(), 4, "{events:?}");
    for (attempt, pair) in (1..).zip(starts.windows(2)) {
        let wait = pair[1] - pair[0];
        let backoff = retry.backoff(attempt, failing);
        assert!(
            wait >= backoff && wait <= backoff + TIMER_SLACK,
            "wait after attempt {attempt}: {wait:?}, backoff {backoff:?}"
        );
    }
    let waits: Duration = (1..=3).map(|a| retry.backoff(a, failing)).sum();
    assert!(
        elapsed >= waits && elapsed <= waits + 3 * TIMER_SLACK,
        "{elapsed:?} for {waits:?} of backoff"
    );

    // The retrying put held back neither its sibling in the stage nor
    // anything outside it: the next stage and the next batch waited for it.
    let at = |kind, key| {
        position(&events, kind, key).unwrap_or_else(|| panic!("no {kind:?} {key}: {events:?}"))
    };
    let sibling_done = at(EventKind::Done, sibling);
    let second_attempt = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == EventKind::Start && e.key == failing)
        .nth(1)
        .map(|(i, _)| i)
        .expect("a second attempt");
    assert!(sibling_done < second_attempt, "{events:?}");
    let failing_done = events
        .iter()
        .rposition(|e| e.kind == EventKind::Done && e.key == failing)
        .expect("stored at last");
    assert!(failing_done < at(EventKind::Start, playlist), "{events:?}");
    assert!(
        at(EventKind::Done, playlist) < at(EventKind::Start, next),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn driver_gives_up_after_the_policy_attempts_and_stores_nothing_later() {
    let store = open_store("memory://").expect("open memory store");
    let observed = ObservedStore::wrap(&store);
    let retry = RetryPolicy::default();
    let failing = "down/opus/7.0.m4s";
    let playlist = "down/opus/live.m3u8";
    let next = "down/opus/7.1.m4s";
    observed.fail_next_puts(failing, 100, FailureKind::Transient);

    let (handle, task) = spawn(Publisher::new(observed.store(), retry), 4);
    let started = tokio::time::Instant::now();
    handle
        .send(Batch {
            stages: vec![
                vec![Op::Put(object(failing, b"part", ObjectKind::Media))],
                vec![Op::Put(object(
                    playlist,
                    b"#EXTM3U",
                    ObjectKind::LivePlaylist,
                ))],
            ],
        })
        .await
        .expect("send the first batch");
    // Queued behind the failing batch, or refused once the driver stopped.
    let _ = handle
        .send(Batch {
            stages: vec![vec![Op::Put(object(next, b"part", ObjectKind::Media))]],
        })
        .await;
    let result = task.await.expect("driver task panicked");
    let elapsed = started.elapsed();

    let attempts = retry.attempts();
    match &result {
        Err(PublishError::Unavailable {
            key, attempts: a, ..
        }) => {
            assert_eq!((key.as_str(), *a), (failing, attempts));
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(observed.put_attempts(failing), attempts);
    let waits: Duration = (1..attempts).map(|a| retry.backoff(a, failing)).sum();
    let slack = TIMER_SLACK * (attempts - 1);
    assert!(
        elapsed >= waits && elapsed <= waits + slack,
        "{elapsed:?} for {waits:?} of backoff"
    );
    let events = observed.events();
    for key in [playlist, next] {
        assert_eq!(
            position(&events, EventKind::Start, key),
            None,
            "{key} was attempted after {failing} failed: {events:?}"
        );
    }
    assert!(handle.is_stopped());
}

fn s3_options(endpoint: &str, request_timeout: Option<Duration>) -> StoreOptions {
    let defaults = StoreOptions::default();
    StoreOptions {
        request_timeout: request_timeout.unwrap_or(defaults.request_timeout),
        config: vec![
            ("aws_endpoint".into(), endpoint.into()),
            ("aws_allow_http".into(), "true".into()),
            ("aws_access_key_id".into(), "unused".into()),
            ("aws_secret_access_key".into(), "unused".into()),
            ("aws_region".into(), "us-east-1".into()),
        ],
        ..defaults
    }
}

fn unused_port() -> u16 {
    // Bind, note the port, release it: nothing listens there afterwards.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------
// A store wrapper that records operation order and injects failures
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Start,
    Done,
}

#[derive(Debug, Clone)]
struct Event {
    kind: EventKind,
    key: String,
    /// On tokio's clock, so paused-time tests can read the retry schedule.
    at: tokio::time::Instant,
}

#[derive(Debug, Clone, Copy)]
enum FailureKind {
    Transient,
    PermissionDenied,
}

#[derive(Debug, Default)]
struct Observations {
    events: Vec<Event>,
    delays: HashMap<String, Duration>,
    failures: HashMap<String, (u32, FailureKind)>,
    put_attempts: HashMap<String, u32>,
}

/// Records when each put and delete starts and completes, delays chosen
/// keys, and fails chosen puts.
#[derive(Debug, Default)]
struct Observer {
    state: Mutex<Observations>,
}

impl Observer {
    fn state(&self) -> std::sync::MutexGuard<'_, Observations> {
        self.state.lock().expect("observation lock")
    }

    fn record(&self, kind: EventKind, key: &str) {
        self.state().events.push(Event {
            kind,
            key: key.to_owned(),
            at: tokio::time::Instant::now(),
        });
    }
}

impl Hooks for Observer {
    const NAME: &'static str = "Observed";

    fn before_put<'a>(&'a self, location: &'a Path) -> BoxFuture<'a, object_store::Result<()>> {
        Box::pin(async move {
            let key = location.to_string();
            let (delay, failure) = {
                let mut state = self.state();
                *state.put_attempts.entry(key.clone()).or_default() += 1;
                let delay = state.delays.get(&key).copied();
                let failure = match state.failures.get_mut(&key) {
                    Some((remaining, kind)) if *remaining > 0 => {
                        *remaining -= 1;
                        Some(*kind)
                    }
                    _ => None,
                };
                state.events.push(Event {
                    kind: EventKind::Start,
                    key: key.clone(),
                    at: tokio::time::Instant::now(),
                });
                (delay, failure)
            };
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match failure {
                Some(FailureKind::Transient) => Err(object_store::Error::Generic {
                    store: "Observed",
                    source: "injected transient failure".into(),
                }),
                Some(FailureKind::PermissionDenied) => Err(object_store::Error::PermissionDenied {
                    path: key,
                    source: "injected 403".into(),
                }),
                None => Ok(()),
            }
        })
    }

    fn after_put(&self, location: &Path) {
        self.record(EventKind::Done, location.as_ref());
    }

    fn before_delete(&self, location: &Path) {
        self.record(EventKind::Start, location.as_ref());
    }

    fn after_delete(&self, location: &Path) {
        self.record(EventKind::Done, location.as_ref());
    }
}

/// A backend wrapped with an [`Observer`].
struct ObservedStore {
    store: Store,
    observer: Arc<Observer>,
}

impl ObservedStore {
    fn wrap(store: &Store) -> Self {
        let observer = Arc::new(Observer::default());
        let hooked = HookedStore::new(Arc::clone(store.object_store()), Arc::clone(&observer));
        Self {
            store: Store::new(Arc::new(hooked), store.url(), store.capabilities()),
            observer,
        }
    }

    fn store(&self) -> Store {
        self.store.clone()
    }

    fn set_delay(&self, key: &str, delay: Duration) {
        self.observer.state().delays.insert(key.to_owned(), delay);
    }

    fn fail_next_puts(&self, key: &str, count: u32, kind: FailureKind) {
        self.observer
            .state()
            .failures
            .insert(key.to_owned(), (count, kind));
    }

    fn put_attempts(&self, key: &str) -> u32 {
        self.observer
            .state()
            .put_attempts
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    fn events(&self) -> Vec<Event> {
        self.observer.state().events.clone()
    }
}
