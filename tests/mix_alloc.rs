//! The mixer in steady state makes no allocator call: pushing host audio and
//! mixing it reuses the buffers it already has (see the invariants in
//! `onair::audio::mix`).
//!
//! This test crate's global allocator is [`System`] behind a counter of the
//! calls made on the current thread while counting is switched on, so other
//! test threads and the harness itself do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use onair::audio::{FeedConfig, FeedId, MixReturn, Mixer, MixerConfig};
use onair::time::ProgramTime;

/// Allocator calls seen on one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Calls {
    /// `alloc` and `alloc_zeroed`.
    alloc: u64,
    realloc: u64,
    dealloc: u64,
}

thread_local! {
    /// Whether calls on this thread are being counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<Calls> = const {
        Cell::new(Calls {
            alloc: 0,
            realloc: 0,
            dealloc: 0,
        })
    };
}

/// Counts one call of the kind `bump` picks, if this thread is counting.
/// The thread-locals are `const`-initialised `Cell`s without destructors, so
/// touching them never allocates; `try_with` keeps a call made while the
/// thread is being torn down from panicking.
fn note(bump: fn(&mut Calls)) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = CALLS.try_with(|c| {
                let mut calls = c.get();
                bump(&mut calls);
                c.set(calls);
            });
        }
    });
}

/// [`System`], counting the calls made on each thread.
struct CountingAllocator;

// SAFETY: every call is passed unchanged to `System`; the counting touches
// only thread-local `Cell`s and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(|c| c.alloc += 1);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(|c| c.alloc += 1);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(|c| c.realloc += 1);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(|c| c.dealloc += 1);
        // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `f` and returns the allocator calls it made on this thread.
fn allocator_calls(f: impl FnOnce()) -> Calls {
    CALLS.with(|c| c.set(Calls::default()));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    CALLS.with(Cell::get)
}

/// The counter itself: a test of the mixer is only as good as its
/// instrument.
#[test]
fn the_counter_sees_allocations_on_this_thread_only() {
    let calls = allocator_calls(|| {
        let mut v: Vec<u64> = Vec::with_capacity(4);
        v.extend(0..100);
        black_box(&v);
    });
    assert!(
        calls.alloc >= 1 && calls.realloc >= 1 && calls.dealloc >= 1,
        "{calls:?}"
    );
    // Another thread's allocations are its own: the harness runs tests on
    // several threads at once. (Spawning and joining allocate a little
    // here.)
    let calls = allocator_calls(|| {
        std::thread::spawn(|| {
            for i in 0..1_000 {
                black_box(Box::new(i));
            }
        })
        .join()
        .expect("thread");
    });
    assert!(calls.alloc < 100, "{calls:?}");
    assert_eq!(allocator_calls(|| {}), Calls::default());
}

/// Program frames mixed per round: 20 ms, the pipeline's block.
const TICK: usize = 960;
/// Rounds before counting: every queue and buffer reaches its working size.
const WARM_UP: u64 = 200;
/// Rounds counted.
const ROUNDS: u64 = 100;

/// A host feeding the mixer the way the pipeline does: whole codec frames of
/// a sine, pushed ahead until at least `lead` frames are queued past the
/// clock.
struct Host {
    id: FeedId,
    block: Vec<f32>,
    /// Program time of the next block.
    next_pts: u64,
    lead: u64,
}

impl Host {
    fn new(mixer: &mut Mixer, name: &str, gain_db: f32, frames: usize, freq: f32) -> Self {
        let id = mixer.add_feed(FeedConfig {
            name: name.to_owned(),
            gain_db,
            muted: false,
        });
        let block = (0..frames)
            .flat_map(|i| {
                let v = 0.25 * (std::f32::consts::TAU * freq * i as f32 / 48_000.0).sin();
                [v, v]
            })
            .collect();
        Self {
            id,
            block,
            next_pts: 0,
            lead: TICK as u64,
        }
    }

    fn feed(&mut self, mixer: &mut Mixer) {
        while mixer.buffered(self.id) < self.lead {
            mixer.push(
                self.id,
                ProgramTime::from_samples(self.next_pts),
                &self.block,
            );
            self.next_pts += (self.block.len() / 2) as u64;
        }
    }
}

#[test]
fn steady_state_push_and_mix_make_no_allocator_call() {
    let mut mixer = Mixer::new(MixerConfig::default());
    // AAC, MP3 and Opus frame sizes: queue lengths vary from round to round.
    let mut hosts = [
        Host::new(&mut mixer, "anna", 0.0, 1024, 440.0),
        Host::new(&mut mixer, "ben", -6.0, 1152, 1000.0),
        Host::new(&mut mixer, "carla", -3.0, 960, 2500.0),
    ];
    // Hold music: ducked far enough to be silent, so its gain is zero.
    let mut hold = Host::new(&mut mixer, "hold", 0.0, 4096, 300.0);
    hold.lead = 4 * TICK as u64;
    mixer.set_duck_db(hold.id, -120.0, 0);
    // A host that is connected but sends nothing: silence from the mixer.
    let quiet = mixer.add_feed(FeedConfig {
        name: "dan".to_owned(),
        gain_db: 0.0,
        muted: false,
    });
    // Every live host hears a mix-minus return (the quiet one the program).
    for id in hosts.iter().map(|h| h.id).chain([quiet]) {
        mixer.set_return(id, true);
    }
    let mut out = Vec::new();
    // Gain, mute and duck ramps in the middle of the counted rounds.
    let controls = |mixer: &mut Mixer, hosts: &[Host], hold: &Host, round: u64| match round % 40 {
        10 => mixer.set_gain_db(hosts[0].id, -4.5),
        20 => mixer.set_muted(hosts[1].id, true),
        25 => mixer.set_muted(hosts[1].id, false),
        30 => mixer.set_duck_db(hold.id, -12.0, 4_800),
        35 => mixer.set_duck_db(hold.id, -120.0, 480),
        39 => mixer.set_gain_db(hosts[0].id, 0.0),
        _ => {}
    };
    let mut round = |mixer: &mut Mixer, hosts: &mut [Host], hold: &mut Host, k: u64| {
        controls(mixer, hosts, hold, k);
        for host in hosts.iter_mut() {
            host.feed(mixer);
        }
        hold.feed(mixer);
        mixer.mix(TICK, &mut out);
    };
    for k in 0..WARM_UP {
        round(&mut mixer, &mut hosts, &mut hold, k);
    }
    let start = mixer.clock();
    let calls = allocator_calls(|| {
        for k in WARM_UP..WARM_UP + ROUNDS {
            round(&mut mixer, &mut hosts, &mut hold, k);
        }
    });
    // The rounds really mixed: the clock moved, every host was on air and
    // the quiet one was silent.
    assert_eq!(mixer.clock(), start.plus(ROUNDS * TICK as u64));
    for host in &hosts {
        let level = mixer.level(host.id).expect("feed present");
        assert!(level.peak > 0.2, "{level:?}");
    }
    assert_eq!(mixer.level(quiet).map(|l| l.peak), Some(0.0));
    assert!(
        matches!(mixer.mix_return(hosts[0].id), Some(MixReturn::Own(block)) if block.len() == 2 * TICK)
    );
    assert_eq!(mixer.mix_return(quiet), Some(MixReturn::Program));
    assert_eq!(
        calls,
        Calls::default(),
        "{ROUNDS} rounds of push and mix after {WARM_UP} of warm-up"
    );
}
