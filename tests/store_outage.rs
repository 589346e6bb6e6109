//! The live publisher against a store that fails: random errors, outages,
//! calls that never answer. Batches come at the live rate (one part every
//! 320 ms of tokio's paused clock) in the packager's shape, with playlists
//! rendered by the real timeline; the store under the faults is a real
//! in-memory `object_store`, and it checks at every playlist write that
//! nothing is listed before it is stored.

#[path = "common/faulty_store.rs"]
mod faulty_store;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use faulty_store::{Faults, FaultyStore};
use object_store::ObjectStoreExt;
use onair::hls::{MediaPlaylist, PartId, Timeline, TimelineConfig};
use onair::publish::layout::{RenditionFile, RenditionPath, rendition_names};
use onair::publish::{
    Backlog, BacklogLimit, Batch, LiveSettings, ObjectKind, Op, PublishError, PublishStatus,
    Publisher, PutObject, RetryPolicy, Store, open_store, spawn_live, spawn_live_with,
};
use tokio::time::Instant;

const PART: Duration = Duration::from_millis(320);
const RENDITIONS: [&str; 2] = ["aac", "opus"];

/// Makes the batches a live packager makes, one part at a time.
struct Producer {
    timeline: Timeline,
    dirs: Vec<RenditionPath>,
    parts: u64,
}

impl Producer {
    fn new() -> Self {
        Self {
            timeline: TimelineConfig {
                window: Some(60 * 48_000),
                epoch_unix_ms: 1_764_300_000_000,
                ..TimelineConfig::default()
            }
            .build()
            .expect("timeline"),
            dirs: RENDITIONS
                .iter()
                .map(|r| RenditionPath::new("show", r).expect("names"))
                .collect(),
            parts: 0,
        }
    }

    fn start(&self) -> Batch {
        Batch {
            stages: vec![
                self.dirs
                    .iter()
                    .map(|d| put(d.key(RenditionFile::Init), ObjectKind::Init, "init"))
                    .collect(),
            ],
        }
    }

    fn next(&mut self) -> (PartId, Batch) {
        let id = self.timeline.push_part(15_360).expect("part");
        self.parts += 1;
        let closed = self.timeline.next_part().is_some_and(|n| n.msn != id.msn);
        let mut media = Vec::new();
        let mut at = Vec::new();
        let mut live = Vec::new();
        let mut deletes = Vec::new();
        let expired = self.timeline.take_expired(self.timeline.head());
        for dir in &self.dirs {
            // Bodies that differ per object, as real media does.
            let body = format!("{} part {}.{}", dir.rendition, id.msn, id.part);
            media.push(put(
                dir.key(RenditionFile::Part(id)),
                ObjectKind::Media,
                body,
            ));
            if closed {
                let body = format!("{} segment {}", dir.rendition, id.msn);
                media.push(put(
                    dir.key(RenditionFile::Segment(id.msn)),
                    ObjectKind::Media,
                    body,
                ));
            }
            let playlist = self
                .timeline
                .media_playlist(rendition_names(), &[])
                .render();
            at.push(put(
                dir.at_key(id),
                ObjectKind::PartPlaylist,
                playlist.clone(),
            ));
            live.push(put(dir.live_key(), ObjectKind::LivePlaylist, playlist));
            for gone in &expired {
                deletes.push(Op::Delete(dir.key(RenditionFile::Segment(gone.msn))));
                for part in 0..gone.parts {
                    deletes.push(Op::Delete(dir.key(RenditionFile::Part(PartId {
                        msn: gone.msn,
                        part,
                    }))));
                }
            }
        }
        let mut stages = vec![media, at, live];
        if !deletes.is_empty() {
            stages.push(deletes);
        }
        (id, Batch { stages })
    }
}

fn put(key: String, kind: ObjectKind, body: impl Into<Bytes>) -> Op {
    Op::Put(PutObject {
        key,
        body: body.into(),
        kind,
    })
}

struct Rig {
    inner: Store,
    faults: Arc<Faults>,
    publisher: Publisher,
}

fn rig() -> Rig {
    let inner = open_store("memory://").expect("memory store");
    let faults = Arc::new(Faults::default());
    let faulty = FaultyStore::new(Arc::clone(inner.object_store()), Arc::clone(&faults));
    let store = Store::new(Arc::new(faulty), inner.url(), inner.capabilities());
    Rig {
        inner,
        faults,
        publisher: Publisher::new(store, RetryPolicy::default()),
    }
}

fn settings() -> LiveSettings {
    LiveSettings::for_part_target(PART)
}

async fn live_playlist(store: &Store, rendition: &str) -> MediaPlaylist {
    let key = RenditionPath::new("show", rendition)
        .expect("names")
        .live_key();
    let bytes = store
        .object_store()
        .get(&object_store::path::Path::from(key.as_str()))
        .await
        .expect("live playlist stored")
        .bytes()
        .await
        .expect("read");
    MediaPlaylist::parse(std::str::from_utf8(&bytes).expect("utf-8")).expect("parses")
}

/// The last part a playlist lists.
fn last_part(playlist: &MediaPlaylist) -> PartId {
    match &playlist.open {
        Some(open) if !open.parts.is_empty() => PartId {
            msn: playlist.open_msn(),
            part: open.parts.len() as u32 - 1,
        },
        _ => {
            let segment = playlist.segments.last().expect("a segment");
            PartId {
                msn: playlist.open_msn() - 1,
                part: segment.parts.len().max(6) as u32 - 1,
            }
        }
    }
}

/// Every object the final playlists name is stored, and the newest part is
/// the last one produced.
async fn assert_complete(rig: &Rig, last: PartId) {
    for rendition in RENDITIONS {
        let playlist = live_playlist(&rig.inner, rendition).await;
        assert_eq!(last_part(&playlist), last, "{rendition} is behind");
        let dir = format!("show/{rendition}");
        for segment in &playlist.segments {
            assert!(rig.faults.has(&format!("{dir}/{}", segment.uri)));
            for part in &segment.parts {
                assert!(rig.faults.has(&format!("{dir}/{}", part.uri)));
            }
        }
    }
    assert_eq!(rig.faults.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_fifth_of_calls_failing_for_an_hour_loses_nothing_and_lists_nothing_unstored() {
    let rig = rig();
    rig.faults.random_errors(200_000, 0x5eed);
    rig.faults.latency(Duration::from_millis(15));
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let monitor = handle.monitor();
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    let started = Instant::now();
    let mut next = started;
    let mut last = PartId { msn: 0, part: 0 };
    let mut most_waiting = 0;
    // One hour of program: 11 250 parts.
    for _ in 0..11_250 {
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        // Sending never waits on the store.
        let before = Instant::now();
        handle
            .send(batch)
            .expect("the driver never stops on store errors");
        assert_eq!(Instant::now(), before);
        last = id;
        most_waiting = most_waiting.max(monitor.status().backlog_bytes);
    }
    drop(handle);
    let summary = task.await.expect("driver").expect("published");
    assert_eq!(summary.batches, 11_251);
    assert_complete(&rig, last).await;
    let failed = rig.faults.failed.load(Ordering::SeqCst);
    let served = rig.faults.served.load(Ordering::SeqCst);
    let ratio = failed as f64 / (failed + served) as f64;
    assert!(
        (0.15..0.25).contains(&ratio),
        "{failed} of {}",
        failed + served
    );
    // The backlog never held more than a window's worth.
    assert!(most_waiting < 200_000, "{most_waiting} bytes waited");
    let status: PublishStatus = monitor.status();
    assert_eq!(status.state, "ok");
    assert!(status.outages > 100, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn after_a_five_second_outage_the_live_edge_is_back_within_a_part() {
    let rig = rig();
    let latency = Duration::from_millis(20);
    rig.faults.latency(latency);
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let monitor = handle.monitor();
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    let started = Instant::now();
    let down = started + Duration::from_secs(10);
    let back = started + Duration::from_secs(15);
    rig.faults.outage(down, back);
    let mut next = started;
    let mut produced = Vec::new();
    let mut failing_seen = false;
    let mut most_waiting = 0;
    for _ in 0..94 {
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        handle.send(batch).expect("send");
        produced.push((Instant::now(), id));
        let status = monitor.status();
        failing_seen |= status.state == "failing";
        most_waiting = most_waiting.max(status.backlog_batches);
    }
    assert!(failing_seen, "the outage was never noticed");
    // The status counts what waits, taken by the driver or not: about the
    // 15 parts of the outage.
    assert!(
        (14..=17).contains(&most_waiting),
        "{most_waiting} batches waited"
    );
    // When did the store first hold a live playlist naming a part produced
    // after the store came back?
    let first_after = produced
        .iter()
        .find(|(at, _)| *at >= back)
        .map(|(_, id)| *id)
        .expect("parts after the outage");
    let live_key = "show/opus/live.m3u8";
    let stored_at = rig.faults.stored_at(live_key).expect("stored");
    drop(handle);
    task.await.expect("driver").expect("published");
    assert_complete(&rig, produced.last().expect("parts").1).await;
    // Every segment produced during the outage is in the store.
    let playlist = live_playlist(&rig.inner, "opus").await;
    let first_listed = playlist.media_sequence;
    assert!(first_listed <= first_after.msn.saturating_sub(3));
    let status = monitor.status();
    assert_eq!(status.outages, 1, "{status:?}");
    // Seen from the first failed write (the first part after the store
    // went) to the first stage stored whole after it came back.
    let outage = Duration::from_millis(status.last_outage_ms.expect("outage"));
    assert!(
        outage >= Duration::from_secs(5) - PART
            && outage <= Duration::from_secs(5) + PART + latency * 2,
        "{outage:?}"
    );
    // The catch-up took about one round of store latency per stage, far
    // below a part.
    let catch_up = Duration::from_millis(status.last_catch_up_ms.expect("caught up"));
    assert!(catch_up <= PART, "{catch_up:?}");
    assert!(stored_at >= back);
}

#[tokio::test(start_paused = true)]
async fn the_live_edge_returns_one_part_after_the_store() {
    // The same outage, watched from the store: the first live playlist
    // stored after the outage names the newest part, and is stored within
    // one part time (the capped retry) plus the store's latency of its
    // return.
    let rig = rig();
    let latency = Duration::from_millis(20);
    rig.faults.latency(latency);
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    let started = Instant::now();
    let back = started + Duration::from_secs(15);
    rig.faults.outage(started + Duration::from_secs(10), back);
    let mut next = started;
    let newest = loop {
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        handle.send(batch).expect("send");
        if Instant::now() >= back {
            break id;
        }
    };
    // Let the driver work without new parts for one part time.
    let deadline = back + PART + 4 * latency;
    tokio::time::sleep_until(deadline).await;
    let stored = rig.faults.stored_at("show/opus/live.m3u8").expect("stored");
    assert!(stored >= back && stored <= deadline, "{:?}", stored - back);
    let playlist = live_playlist(&rig.inner, "opus").await;
    assert_eq!(last_part(&playlist), newest);
    drop(handle);
    task.await.expect("driver").expect("published");
    assert_eq!(rig.faults.violations(), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_call_that_never_answers_does_not_hang_the_broadcast() {
    let rig = rig();
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let monitor = handle.monitor();
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    rig.faults.hang_puts.store(3, Ordering::SeqCst);
    let mut next = Instant::now();
    let mut last = PartId { msn: 0, part: 0 };
    // 20 s of parts: longer than the attempt timeout.
    for _ in 0..63 {
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        handle.send(batch).expect("send");
        last = id;
    }
    drop(handle);
    task.await.expect("driver").expect("published");
    assert_complete(&rig, last).await;
    let status = monitor.status();
    assert!(status.outages >= 1, "{status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no answer within")),
        "{status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_still_down_when_the_broadcast_ends_gives_up_after_the_drain_timeout() {
    let rig = rig();
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    tokio::time::sleep(PART).await;
    rig.faults.down.store(true, Ordering::SeqCst);
    let (_, batch) = producer.next();
    handle.send(batch).expect("send");
    drop(handle);
    let ended = Instant::now();
    let result = task.await.expect("driver");
    let took = Instant::now() - ended;
    assert!(
        matches!(result, Err(PublishError::Unavailable { .. })),
        "{result:?}"
    );
    let drain = settings().drain_timeout;
    assert!(took <= drain + PART, "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_stop_at_the_start_and_are_an_outage_later() {
    // At the start, a permanent error is a misconfiguration: retrying
    // forever would hide it.
    let refused = rig();
    refused.faults.refuse.store(true, Ordering::SeqCst);
    let (handle, task) = spawn_live(refused.publisher.clone(), settings());
    handle.send(Producer::new().start()).expect("send");
    let result = task.await.expect("driver");
    assert!(
        matches!(result, Err(PublishError::Rejected { .. })),
        "{result:?}"
    );
    assert!(matches!(
        handle.send(Batch::default()),
        Err(PublishError::DriverStopped)
    ));

    // Once on air, the same refusal (a rotated credential, a policy
    // glitch) is waited out.
    let rig = rig();
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    let mut next = Instant::now();
    let mut last = PartId { msn: 0, part: 0 };
    for n in 0..40 {
        rig.faults
            .refuse
            .store((10..20).contains(&n), Ordering::SeqCst);
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        handle.send(batch).expect("the driver goes on");
        last = id;
    }
    drop(handle);
    task.await.expect("driver").expect("published");
    assert_complete(&rig, last).await;
}

#[tokio::test(start_paused = true)]
async fn a_key_outside_the_layout_stops_the_driver() {
    let rig = rig();
    let (handle, task) = spawn_live(rig.publisher.clone(), settings());
    handle
        .send(Batch {
            stages: vec![vec![put("../escape".to_owned(), ObjectKind::Media, "x")]],
        })
        .expect("send");
    let result = task.await.expect("driver");
    assert!(result.is_err(), "{result:?}");
    assert!(matches!(
        handle.send(Batch::default()),
        Err(PublishError::DriverStopped)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_minute_long_outage_with_a_twenty_second_backlog_lists_the_oldest_forty_as_gaps() {
    let rig = rig();
    rig.faults.latency(Duration::from_millis(20));
    // 20 s of 1.92 s segments.
    let limit = BacklogLimit {
        segments: Some(11),
        bytes: None,
    };
    let filler: onair::publish::GapFiller = Arc::new(|path: &RenditionPath, msn: u64| {
        Some(Bytes::from(format!("{} silence {msn}", path.rendition)))
    });
    let (handle, task) = spawn_live_with(
        rig.publisher.clone(),
        settings(),
        Backlog::limited(limit, filler),
    );
    let monitor = handle.monitor();
    let mut producer = Producer::new();
    handle.send(producer.start()).expect("send");
    let started = Instant::now();
    let down = started + Duration::from_secs(30);
    let back = started + Duration::from_secs(90);
    rig.faults.outage(down, back);
    let mut next = started;
    let mut during = Vec::new();
    let mut checked = 0;
    let mut last_stored = None;
    while next < started + Duration::from_secs(120) {
        next += PART;
        tokio::time::sleep_until(next).await;
        let (id, batch) = producer.next();
        if (down..back).contains(&Instant::now()) {
            during.push(id.msn);
        }
        handle.send(batch).expect("send");
        // Every playlist the store holds passes the LL-HLS rules.
        let stored = rig.faults.stored_at("show/aac/live.m3u8");
        if stored != last_stored {
            last_stored = stored;
            for rendition in RENDITIONS {
                let playlist = live_playlist(&rig.inner, rendition).await;
                let violations = onair::hls::check(&playlist);
                assert!(
                    violations.is_empty(),
                    "{violations:?}\n{}",
                    playlist.render()
                );
            }
            checked += 1;
        }
    }
    // The first playlist after the outage: the oldest segments made during
    // it are gaps, the newest 20 s are real.
    during.dedup();
    let status = monitor.status();
    drop(handle);
    task.await.expect("driver").expect("published");
    assert_eq!(rig.faults.violations(), Vec::<String>::new());
    let shed = status.gap_segments;
    assert!(
        (during.len() as u64 - 12..=during.len() as u64 - 9).contains(&shed),
        "{shed} segments shed of the {} made during the outage",
        during.len()
    );
    let playlist = live_playlist(&rig.inner, "opus").await;
    let mut gaps = 0;
    for (segment, msn) in playlist.segments.iter().zip(playlist.media_sequence..) {
        let key = format!("show/opus/{}", segment.uri);
        assert!(rig.faults.has(&key), "{key} listed, not stored");
        if segment.gap {
            gaps += 1;
            assert!(segment.parts.is_empty());
            let body = rig
                .inner
                .object_store()
                .get(&object_store::path::Path::from(key.as_str()))
                .await
                .expect("stored")
                .bytes()
                .await
                .expect("read");
            assert_eq!(body, format!("opus silence {msn}").as_bytes());
            assert!(
                during.contains(&msn),
                "segment {msn} is a gap, yet the store was up"
            );
        }
    }
    // The window (60 s) still reaches back into the outage's first part.
    assert!(gaps > 0, "no gap listed:\n{}", playlist.render());
    assert!(checked > 50, "{checked} playlists checked");
    eprintln!(
        "{shed} of {} outage segments shed; {gaps} gaps still listed; {checked} playlists checked",
        during.len()
    );
}
