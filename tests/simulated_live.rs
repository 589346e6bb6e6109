//! The live loop (`run::broadcast`) driven in simulated time: its pacing
//! comes from an injected [`Pacer`], so a test runs seconds of a live
//! broadcast instantly and exactly, and can stall the clock on purpose,
//! without timing the scheduler.

#[path = "common/faulty_store.rs"]
mod faulty_store;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;
use onair::audio::{FeedConfig, LiveFeedConfig, MixerConfig};
use onair::encode::{AacConfig, OpusConfig};
use onair::hls::{MediaPlaylist, TimelineConfig};
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{Pipeline, PipelineConfig};
use onair::publish::{BacklogLimit, Store, open_store};
use onair::run::{self, LiveIo, LivePublisher};
use onair::time::{Pacer, ProgramClock, SimulatedClock};

const STREAM: &str = "sim";
/// One live tick: 20 ms at 48 kHz.
const TICK: u64 = 960;
const PART: u64 = 15_360;

/// What a script does after sleep number `n`, with the clock.
type Cue = Box<dyn Fn(u64, &SimulatedClock) + Send + Sync>;

/// Simulated time that stops the broadcast after `limit` sleeps and runs
/// `cue` after every sleep.
struct Script {
    clock: SimulatedClock,
    sleeps: AtomicU64,
    limit: u64,
    cue: Cue,
    stop: Arc<AtomicBool>,
}

impl Script {
    fn new(start: Instant, limit: u64, stop: &Arc<AtomicBool>, cue: Cue) -> Self {
        Self {
            clock: SimulatedClock::starting_at(start),
            sleeps: AtomicU64::new(0),
            limit,
            cue,
            stop: Arc::clone(stop),
        }
    }
}

impl Pacer for Script {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn sleep_until(&self, deadline: Instant) {
        self.clock.sleep_until(deadline);
        let n = self.sleeps.fetch_add(1, Ordering::SeqCst) + 1;
        (self.cue)(n, &self.clock);
        if n >= self.limit {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
}

fn config() -> PipelineConfig {
    PipelineConfig {
        opus: OpusConfig::default(),
        aac: AacConfig::default(),
        mixer: MixerConfig::default(),
        packager: PackagerConfig {
            stream: STREAM.to_owned(),
            timeline: TimelineConfig {
                epoch_unix_ms: 1_764_300_000_000,
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Live,
        },
        parallel: false,
        returns: Default::default(),
    }
}

/// The test pipeline with one live host who never connects: the program
/// runs until stopped.
fn pipeline_with_guest() -> Pipeline {
    let mut pipeline = Pipeline::new(config(), Vec::new()).expect("pipeline");
    let guest = FeedConfig {
        name: "guest".into(),
        gain_db: 0.0,
        muted: false,
    };
    pipeline
        .add_live_host(guest, LiveFeedConfig::default())
        .expect("live host");
    pipeline
}

/// Runs a live broadcast (one live host who never connects) under `script`; the summary's program
/// samples, the program time of the simulated clock at the end, and the
/// final AAC playlist.
async fn run_scripted(limit: u64, stall_at: u64, stall: Duration) -> (u64, u64, MediaPlaylist) {
    let store: Store = open_store("memory://").expect("memory store");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Stalls for `stall` at sleep number `stall_at`.
    let cue: Cue = Box::new(move |n, clock| {
        if n == stall_at {
            clock.advance(stall);
        }
    });
    let script = Arc::new(Script::new(start, limit, &stop, cue));
    let clock = ProgramClock::starting_at(start);
    let io = LiveIo {
        clock,
        pacer: script.clone(),
        ..LiveIo::default()
    };
    let pipeline = pipeline_with_guest();
    let summary = run::broadcast(pipeline, store.clone(), stop, io)
        .await
        .expect("broadcast");
    let playlist = live_playlist(&store, "aac").await;
    (
        summary.program_samples,
        clock.at(script.now()).samples(),
        playlist,
    )
}

/// The stored `live.m3u8` of `rendition`.
async fn live_playlist(store: &Store, rendition: &str) -> MediaPlaylist {
    let path = object_store::path::Path::from(format!("{STREAM}/{rendition}/live.m3u8"));
    let bytes = store
        .object_store()
        .get(&path)
        .await
        .expect("live.m3u8 stored")
        .bytes()
        .await
        .expect("read");
    MediaPlaylist::parse(std::str::from_utf8(&bytes).expect("utf-8")).expect("playlist")
}

/// Program time listed in `playlist`, in samples.
fn listed_samples(playlist: &MediaPlaylist) -> u64 {
    let segments: u64 = playlist.segments.iter().map(|s| s.duration).sum();
    let open: u64 = playlist
        .open
        .as_ref()
        .map_or(0, |o| o.parts.iter().map(|p| p.duration).sum());
    segments + open
}

#[tokio::test]
async fn ten_simulated_seconds_are_exactly_ten_seconds_of_program() {
    let (program, clock_end, playlist) = run_scripted(500, 0, Duration::ZERO).await;
    assert_eq!(program, 500 * TICK, "500 ticks of 20 ms");
    assert_eq!(program, clock_end, "the program ends where the clock is");
    assert!(playlist.end_list, "the stream was ended");
    // No window in this configuration: every part from the start is listed.
    assert_eq!(listed_samples(&playlist), program);
    assert_eq!(program.div_ceil(PART), 32);
}

#[tokio::test]
async fn a_stalled_clock_is_caught_up_in_one_step() {
    // Five seconds stall at tick 100: the loop catches up in one go (far
    // behind), so the program still ends at the clock's time, with nothing
    // missing from the playlist.
    let (program, clock_end, playlist) = run_scripted(500, 100, Duration::from_secs(5)).await;
    assert_eq!(program, clock_end, "the program ends where the clock is");
    assert!(program >= 500 * TICK + 5 * 48_000 - TICK, "{program}");
    assert!(playlist.end_list);
    assert_eq!(listed_samples(&playlist), program);
}

#[tokio::test]
async fn the_program_clock_goes_on_through_a_store_outage() {
    // The store goes away for 5 s of program in the middle of 20 s: the
    // program still ends exactly where the clock is, every part is on the
    // timeline, and after the outage the store holds complete, honest
    // playlists.
    let inner: Store = open_store("memory://").expect("memory store");
    let faults = Arc::new(faulty_store::Faults::default());
    let faulty =
        faulty_store::FaultyStore::new(Arc::clone(inner.object_store()), Arc::clone(&faults));
    let store = Store::new(Arc::new(faulty), inner.url(), inner.capabilities());
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // The store goes at sleep 250 and comes back at sleep 500, once the
    // publisher has met the outage (waiting on the store's own count, not
    // on a timer).
    let outage = Arc::clone(&faults);
    let cue: Cue = Box::new(move |n, _| {
        if n == 250 {
            outage.down.store(true, Ordering::SeqCst);
        }
        if n == 500 {
            let waited = Instant::now();
            while outage.failed.load(Ordering::SeqCst) < 3
                && waited.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            outage.down.store(false, Ordering::SeqCst);
        }
    });
    let pacer = Arc::new(Script::new(start, 1000, &stop, cue));
    let pipeline = pipeline_with_guest();
    let publisher = LivePublisher::start(store.clone(), &pipeline, None, BacklogLimit::default());
    let monitor = publisher.monitor();
    let clock = ProgramClock::starting_at(start);
    let io = LiveIo {
        clock,
        pacer: pacer.clone(),
        publisher: Some(publisher),
        ..LiveIo::default()
    };
    let summary = run::broadcast(pipeline, store.clone(), stop, io)
        .await
        .expect("the broadcast survives the outage");
    assert_eq!(
        summary.program_samples,
        1000 * TICK,
        "the clock never waited"
    );
    assert_eq!(summary.program_samples, clock.at(pacer.now()).samples());
    let status = monitor.status();
    assert_eq!((status.state, status.outages), ("ok", 1), "{status:?}");
    assert_eq!(faults.violations(), Vec::<String>::new());
    for rendition in ["aac", "opus"] {
        let playlist = live_playlist(&inner, rendition).await;
        assert!(playlist.end_list);
        assert_eq!(listed_samples(&playlist), summary.program_samples);
        for segment in &playlist.segments {
            assert!(faults.has(&format!("{STREAM}/{rendition}/{}", segment.uri)));
        }
    }
}
