//! Live broadcasts end to end: the packaging and LL-HLS playlist rules a
//! listener depends on while the stream grows, when it ends and when it is
//! restarted.
//!
//! - `simulated_live_run_keeps_store_and_playlists_consistent` drives the
//!   file pipeline in simulated time (no wall clock, no sockets) in the 20 ms
//!   steps of a live run and applies every publish batch, stage by stage, to
//!   an in-memory model of the store, checking after each stage what a
//!   listener could observe.
//! - `onair_live_stops_on_sigint_and_resumes_the_numbering` runs the binary
//!   against a directory store, decodes the growing and the finished stream
//!   with ffmpeg, stops it with SIGINT and restarts it under the same name.

#[path = "common/store_dir.rs"]
mod store_dir;
#[path = "common/wav.rs"]
mod wav;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use onair::audio::{FeedConfig, FileSource, MixerConfig, SourceOptions};
use onair::encode::{AacConfig, OpusConfig};
use onair::hls::{MediaPlaylist, PartId, TimelineConfig, check_named};
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{FileHost, Pipeline, PipelineConfig, RENDITIONS};
use onair::publish::{Batch, ObjectKind, Op};
use onair::time::{ProgramTime, seconds_text};
use store_dir::{read_playlist, snapshot, wait_until};
use wav::{WavFormat, sine, write_wav};

/// Samples per second of program time.
const RATE: u64 = 48_000;
/// The default part: 320 ms.
const PART: u64 = 15_360;
const PARTS_PER_SEGMENT: u32 = 6;
const SEGMENT: u64 = PART * PARTS_PER_SEGMENT as u64;
/// `EXT-X-TARGETDURATION` of 1.92 s segments, in seconds (rounded up).
const TARGET_DURATION_S: u64 = 2;
const TARGET_DURATION: u64 = TARGET_DURATION_S * RATE;
/// The shortest window the timeline accepts: six segments.
const MIN_WINDOW: u64 = 6 * SEGMENT;
/// How long a segment that left the window stays stored (DESIGN: three
/// target durations).
const DELETION_DELAY: u64 = 3 * TARGET_DURATION;
/// The pacing step of `onair live`: one Opus frame.
const STEP: u64 = 960;
/// Program length of the simulated run: 35 s, which ends 120 ms into a part.
const PROGRAM_END: u64 = 35 * RATE;
/// Wall clock of program sample 0 in the simulated run.
const EPOCH_MS: i64 = 1_764_300_000_000;
const STREAM: &str = "show";

/// Both tests load the CPU (two cores are shared); running them one at a
/// time keeps the wall-clock run's timing meaningful.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the two hosts of both tests into `dir`: a 440 Hz tone at 48 kHz
/// stereo and a 660 Hz tone at 44.1 kHz mono (so the resampler is in play),
/// each shorter than the runs so that looping matters.
fn tone_files(dir: &Path) -> [PathBuf; 2] {
    let a = dir.join("a.wav");
    write_wav(
        &a,
        48_000,
        2,
        WavFormat::Int16,
        &sine(440.0, 48_000, 48_000, 0.3, 2),
    );
    let b = dir.join("b.wav");
    write_wav(
        &b,
        44_100,
        1,
        WavFormat::Int16,
        &sine(660.0, 44_100, 30_870, 0.3, 1),
    );
    [a, b]
}

// ---------------------------------------------------------------------------
// Simulated time
// ---------------------------------------------------------------------------

/// The plan of the simulated run: every segment and part is full except the
/// last ones, cut short where the program ends.
fn segment_len(msn: u64) -> u64 {
    SEGMENT.min(PROGRAM_END.saturating_sub(msn * SEGMENT))
}

fn part_len(id: PartId) -> u64 {
    PART.min(PROGRAM_END.saturating_sub(id.msn * SEGMENT + u64::from(id.part) * PART))
}

fn parts_in(msn: u64) -> u32 {
    segment_len(msn).div_ceil(PART) as u32
}

/// Program date of segment `msn`, in ms since the Unix epoch.
fn planned_date_ms(msn: u64) -> i64 {
    EPOCH_MS + (msn * SEGMENT * 1000 / RATE) as i64
}

/// The configuration `onair live` builds (src/main.rs), with a fixed epoch
/// and the shortest window.
fn live_config() -> PipelineConfig {
    PipelineConfig {
        opus: OpusConfig::default(),
        aac: AacConfig::default(),
        mixer: MixerConfig::default(),
        packager: PackagerConfig {
            stream: STREAM.to_string(),
            timeline: TimelineConfig {
                parts_per_segment: PARTS_PER_SEGMENT,
                window: Some(MIN_WINDOW),
                epoch_unix_ms: EPOCH_MS,
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Live,
        },
        // `onair live` encodes on the pipeline thread.
        parallel: false,
        returns: Default::default(),
    }
}

/// The first host plays once (then the mix has only the second); the second
/// loops, as with `onair live --loop`.
fn hosts(files: &[PathBuf; 2]) -> Vec<FileHost> {
    files
        .iter()
        .zip([false, true])
        .map(|(path, looping)| FileHost {
            feed: FeedConfig {
                name: path.file_stem().expect("named").to_string_lossy().into(),
                gain_db: 0.0,
                muted: false,
            },
            source: FileSource::open(path, SourceOptions { looping })
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
        })
        .collect()
}

/// What an object key names, by the store layout of DESIGN.md.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Object {
    Multivariant,
    Init(String),
    LivePlaylist(String),
    PartPlaylist(String, PartId),
    Segment(String, u64),
    Part(String, PartId),
}

/// `"12.3"` as a part id.
fn part_id(text: &str) -> Option<PartId> {
    let (msn, part) = text.split_once('.')?;
    Some(PartId {
        msn: msn.parse().ok()?,
        part: part.parse().ok()?,
    })
}

/// Classifies a key of the simulated stream; any other key is a packaging
/// error.
fn classify(key: &str) -> Object {
    let rest = key
        .strip_prefix(STREAM)
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or_else(|| panic!("key {key} is outside stream {STREAM}"));
    if rest == "index.m3u8" {
        return Object::Multivariant;
    }
    let (rendition, name) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("unexpected key {key}"));
    let r = rendition.to_string();
    let object = match name {
        "init.mp4" => Some(Object::Init(r)),
        "live.m3u8" => Some(Object::LivePlaylist(r)),
        _ => {
            if let Some(id) = name
                .strip_prefix("at/")
                .and_then(|n| n.strip_suffix(".m3u8"))
            {
                part_id(id).map(|id| Object::PartPlaylist(r, id))
            } else if let Some(media) = name.strip_suffix(".m4s") {
                match media.parse() {
                    Ok(msn) => Some(Object::Segment(r, msn)),
                    Err(_) => part_id(media).map(|id| Object::Part(r, id)),
                }
            } else {
                None
            }
        }
    };
    object.unwrap_or_else(|| panic!("unexpected key {key}"))
}

fn rendition_dir(rendition: &str) -> String {
    format!("{STREAM}/{rendition}/")
}

fn part_key(rendition: &str, id: PartId) -> String {
    format!("{STREAM}/{rendition}/{}.{}.m4s", id.msn, id.part)
}

/// Resolves a relative URI against a directory key ending in `/`.
fn resolve(dir: &str, uri: &str) -> String {
    let mut path: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for segment in uri.split('/') {
        match segment {
            ".." => {
                path.pop();
            }
            "." => {}
            s => path.push(s),
        }
    }
    path.join("/")
}

/// Every URI a playlist lists for loading: segments, parts and init sections
/// (not the preload hint, not the rendition reports).
fn listed_uris(p: &MediaPlaylist) -> Vec<&str> {
    let mut out = Vec::new();
    for s in &p.segments {
        out.extend(s.map.iter().map(|m| m.uri.as_str()));
        out.extend(s.parts.iter().map(|part| part.uri.as_str()));
        out.push(s.uri.as_str());
    }
    if let Some(o) = &p.open {
        out.extend(o.map.iter().map(|m| m.uri.as_str()));
        out.extend(o.parts.iter().map(|part| part.uri.as_str()));
    }
    out
}

/// The last part a playlist lists: the open segment's last, or the last
/// complete segment's last.
fn last_part(p: &MediaPlaylist) -> Option<PartId> {
    if let Some(n) = p.open.as_ref().and_then(|o| o.parts.len().checked_sub(1)) {
        return Some(PartId {
            msn: p.open_msn(),
            part: n as u32,
        });
    }
    let last = p.segments.last()?;
    Some(PartId {
        msn: p.open_msn() - 1,
        part: u32::try_from(last.parts.len().checked_sub(1)?).ok()?,
    })
}

/// Every segment a playlist lists (the open one included) with its MSN.
fn dated_segments(p: &MediaPlaylist) -> Vec<(u64, Option<i64>)> {
    let first = p.first_listed_msn();
    let mut out: Vec<(u64, Option<i64>)> = p
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let date = s.program_date_time.map(|d| d.timestamp_millis());
            (first + i as u64, date)
        })
        .collect();
    if let Some(o) = &p.open {
        let date = o.program_date_time.map(|d| d.timestamp_millis());
        out.push((p.open_msn(), date));
    }
    out
}

/// Every part a playlist lists, with its id.
fn listed_parts(p: &MediaPlaylist) -> Vec<(PartId, u64)> {
    let first = p.first_listed_msn();
    let closed = p
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| (first + i as u64, &s.parts));
    let open = p.open.iter().map(|o| (p.open_msn(), &o.parts));
    closed
        .chain(open)
        .flat_map(|(msn, parts)| {
            parts.iter().enumerate().map(move |(i, part)| {
                let id = PartId {
                    msn,
                    part: i as u32,
                };
                (id, part.duration)
            })
        })
        .collect()
}

/// Counts of what the model checked, so the test can show it checked enough.
#[derive(Debug, Default)]
struct Checked {
    live_playlists: usize,
    part_playlists: usize,
    segments: usize,
}

/// The store as listeners see it, applied stage by stage, and what the
/// checks must remember across batches. Rule violations are collected (with
/// the program time and key) and asserted at the end, so one run reports
/// every broken rule, not only the first.
#[derive(Default)]
struct Model {
    objects: BTreeMap<String, (Bytes, ObjectKind)>,
    /// Bytes of every immutable object ever stored, kept after deletion.
    immutable: HashMap<String, Bytes>,
    /// The newest `live.m3u8` of each rendition.
    live: BTreeMap<String, MediaPlaylist>,
    /// Renditions whose newest `live.m3u8` was stored before every other
    /// rendition's `live.m3u8` existed: it cannot report on them yet, since a
    /// report names a playlist that must already be stored.
    first_live: HashSet<String>,
    /// Renditions whose `live.m3u8` was stored before the current stage.
    live_before_stage: HashSet<String>,
    /// The part each rendition's `live.m3u8` hints, until that part is stored.
    hinted: HashMap<String, String>,
    /// Date of each segment as first listed, ms since the Unix epoch.
    dates: HashMap<u64, i64>,
    /// Program time each segment left a rendition's `live.m3u8`.
    left_window: BTreeMap<(String, u64), u64>,
    /// Program time each key was deleted.
    deleted: BTreeMap<String, u64>,
    /// Program time of the batch being applied.
    now: u64,
    checked: Checked,
    problems: Vec<String>,
}

impl Model {
    fn problem(&mut self, what: impl Display) {
        self.problems
            .push(format!("t={} s: {what}", seconds_text(self.now)));
    }

    /// Applies a batch produced at program time `now`. The operations of a
    /// stage run concurrently (publish::Publisher), so a playlist may rely
    /// only on objects stored by earlier stages and batches.
    fn apply(&mut self, batch: &Batch, now: u64) {
        self.now = now;
        for stage in &batch.stages {
            let playlists = self.parse_playlists(stage);
            for (key, p) in &playlists {
                self.check_references(key, p);
            }
            for op in stage {
                if let Op::Delete(key) = op {
                    self.check_unlisted(key, &playlists);
                }
            }
            self.live_before_stage = RENDITIONS
                .iter()
                .filter(|r| {
                    self.objects
                        .contains_key(&format!("{STREAM}/{r}/live.m3u8"))
                })
                .map(|r| r.to_string())
                .collect();
            for op in stage {
                self.store(op);
            }
            for (key, p) in playlists {
                self.check_playlist(&key, p);
            }
            for op in stage {
                if let Op::Put(put) = op
                    && let Object::Segment(r, msn) = classify(&put.key)
                {
                    self.check_segment_bytes(&r, msn, &put.body);
                }
            }
            self.check_rendition_reports();
        }
    }

    fn parse_playlists(&mut self, stage: &[Op]) -> Vec<(String, MediaPlaylist)> {
        let mut out = Vec::new();
        for op in stage {
            let Op::Put(put) = op else { continue };
            if !matches!(
                put.kind,
                ObjectKind::LivePlaylist | ObjectKind::PartPlaylist
            ) {
                continue;
            }
            let text = String::from_utf8_lossy(&put.body);
            match MediaPlaylist::parse(&text) {
                Ok(p) => out.push((put.key.clone(), p)),
                Err(e) => self.problem(format!("{} does not parse: {e}", put.key)),
            }
        }
        out
    }

    /// Everything `p` names is stored already, except the preload hint,
    /// which must not be. `at/` playlists are the answer to a blocking
    /// request for `live.m3u8` (DESIGN: the origin), so their URIs resolve
    /// against the rendition folder too.
    fn check_references(&mut self, key: &str, p: &MediaPlaylist) {
        let dir = match classify(key) {
            Object::LivePlaylist(r) | Object::PartPlaylist(r, _) => rendition_dir(&r),
            other => unreachable!("{other:?} is not a media playlist"),
        };
        let named = listed_uris(p)
            .into_iter()
            .chain(p.rendition_reports.iter().map(|r| r.uri.as_str()));
        let missing: Vec<String> = named
            .filter(|uri| !self.objects.contains_key(&resolve(&dir, uri)))
            .map(str::to_string)
            .collect();
        for uri in missing {
            self.problem(format!("{key} names {uri}, which is not stored yet"));
        }
        if let Some(h) = &p.preload_hint
            && self.objects.contains_key(&resolve(&dir, &h.uri))
        {
            self.problem(format!("{key} hints {}, which is already stored", h.uri));
        }
    }

    /// A deleted object is listed neither by the `live.m3u8` in force nor by
    /// one stored concurrently.
    fn check_unlisted(&mut self, deleted: &str, stage: &[(String, MediaPlaylist)]) {
        let stored = self
            .live
            .iter()
            .map(|(r, p)| (rendition_dir(r), p))
            .collect::<Vec<_>>();
        let concurrent = stage.iter().filter_map(|(key, p)| match classify(key) {
            Object::LivePlaylist(r) => Some((rendition_dir(&r), p)),
            _ => None,
        });
        let listing: Vec<String> = stored
            .into_iter()
            .chain(concurrent)
            .filter(|(dir, p)| listed_uris(p).iter().any(|u| resolve(dir, u) == deleted))
            .map(|(dir, _)| format!("{dir}live.m3u8"))
            .collect();
        for playlist in listing {
            self.problem(format!("{deleted} deleted while {playlist} lists it"));
        }
    }

    fn store(&mut self, op: &Op) {
        match op {
            Op::Put(put) => {
                if put.kind.immutable() {
                    match self.immutable.get(&put.key) {
                        Some(before) if *before != put.body => {
                            self.problem(format!("{} rewritten with other bytes", put.key))
                        }
                        _ => {
                            self.immutable.insert(put.key.clone(), put.body.clone());
                        }
                    }
                }
                if let Object::Part(r, _) = classify(&put.key)
                    && let Some(hint) = self.hinted.remove(&r)
                    && hint != put.key
                {
                    self.problem(format!("stored part {} but the hint named {hint}", put.key));
                }
                self.objects
                    .insert(put.key.clone(), (put.body.clone(), put.kind));
            }
            Op::Delete(key) => {
                if self.objects.remove(key).is_none() {
                    self.problem(format!("{key} deleted but not stored"));
                }
                self.deleted.insert(key.clone(), self.now);
            }
        }
    }

    /// The rules for a playlist just stored.
    fn check_playlist(&mut self, key: &str, p: MediaPlaylist) {
        let violations = check_named(&p, onair::publish::layout::rendition_names());
        if !violations.is_empty() {
            self.problem(format!("{key} breaks {violations:?}"));
        }
        self.check_timing(key, &p);
        self.check_dates(key, &p);
        match classify(key) {
            Object::PartPlaylist(_, id) => {
                self.checked.part_playlists += 1;
                if last_part(&p) != Some(id) {
                    self.problem(format!("{key} ends at part {:?}", last_part(&p)));
                }
                // Both renditions are cut together: the others stand at the
                // same part.
                for report in &p.rendition_reports {
                    if (report.last_msn, report.last_part) != (id.msn, Some(id.part)) {
                        self.problem(format!("{key} reports {report:?}, expected part {id:?}"));
                    }
                }
            }
            Object::LivePlaylist(r) => {
                self.checked.live_playlists += 1;
                match &p.preload_hint {
                    Some(h) => {
                        self.hinted
                            .insert(r.clone(), resolve(&rendition_dir(&r), &h.uri));
                    }
                    None => {
                        self.hinted.remove(&r);
                    }
                }
                if let Some(before) = self.live.get(&r) {
                    for msn in before.first_listed_msn()..p.first_listed_msn() {
                        self.left_window.insert((r.clone(), msn), self.now);
                    }
                }
                let others_stored = RENDITIONS
                    .iter()
                    .filter(|o| **o != r)
                    .all(|o| self.live_before_stage.contains(*o));
                if others_stored {
                    self.first_live.remove(&r);
                } else {
                    self.first_live.insert(r.clone());
                }
                self.live.insert(r, p);
            }
            other => unreachable!("{other:?} is not a media playlist"),
        }
    }

    /// Durations and server control: PART-TARGET 0.32 s; every part 0.32 s
    /// but the program's last; PART-HOLD-BACK = 3 x PART-TARGET, HOLD-BACK =
    /// 3 x and CAN-SKIP-UNTIL = 6 x the target duration (RFC 8216bis 4.4.3.8
    /// minimums, DESIGN defaults).
    fn check_timing(&mut self, key: &str, p: &MediaPlaylist) {
        let sc = p.server_control.unwrap_or_default();
        let header = (
            p.target_duration,
            p.part_target,
            sc.can_block_reload,
            sc.part_hold_back,
            sc.hold_back,
            sc.can_skip_until,
        );
        let expected = (
            TARGET_DURATION_S,
            Some(PART),
            true,
            Some(3 * PART),
            Some(3 * TARGET_DURATION),
            Some(6 * TARGET_DURATION),
        );
        if header != expected {
            self.problem(format!(
                "{key}: (TARGETDURATION, PART-TARGET, CAN-BLOCK-RELOAD, PART-HOLD-BACK, \
                 HOLD-BACK, CAN-SKIP-UNTIL) = {header:?}, expected {expected:?}"
            ));
        }
        for (id, duration) in listed_parts(p) {
            if duration != part_len(id) {
                self.problem(format!(
                    "{key}: part {id:?} lasts {duration}, expected {}",
                    part_len(id)
                ));
            }
        }
        let first = p.first_listed_msn();
        for (i, s) in p.segments.iter().enumerate() {
            let msn = first + i as u64;
            if s.duration != segment_len(msn) {
                self.problem(format!("{key}: segment {msn} lasts {}", s.duration));
            }
        }
    }

    /// Each segment keeps the date it was first listed with, in every
    /// playlist of every rendition, and that date is the epoch plus its
    /// start (DESIGN: one wall-clock reading plus elapsed samples).
    fn check_dates(&mut self, key: &str, p: &MediaPlaylist) {
        for (msn, date) in dated_segments(p) {
            let Some(date) = date else {
                self.problem(format!(
                    "{key}: segment {msn} has no EXT-X-PROGRAM-DATE-TIME"
                ));
                continue;
            };
            let first = *self.dates.entry(msn).or_insert(date);
            if date != first {
                self.problem(format!(
                    "{key}: segment {msn} dated {date} ms, before {first} ms"
                ));
            }
            if date != planned_date_ms(msn) {
                self.problem(format!(
                    "{key}: segment {msn} dated {date} ms, expected {} ms",
                    planned_date_ms(msn)
                ));
            }
        }
    }

    /// A segment object is its parts back to back (packager contract).
    fn check_segment_bytes(&mut self, rendition: &str, msn: u64, body: &Bytes) {
        self.checked.segments += 1;
        let mut joined = Vec::with_capacity(body.len());
        for part in 0..parts_in(msn) {
            let key = part_key(rendition, PartId { msn, part });
            match self.objects.get(&key) {
                Some((bytes, _)) => joined.extend_from_slice(bytes),
                None => {
                    self.problem(format!(
                        "segment {rendition}/{msn} stored without part {key}"
                    ));
                    return;
                }
            }
        }
        if joined[..] != body[..] {
            self.problem(format!(
                "{rendition}/{msn}.m4s ({} bytes) is not its parts ({} bytes) back to back",
                body.len(),
                joined.len()
            ));
        }
    }

    /// Each `live.m3u8` reports where every other rendition's `live.m3u8`
    /// stands (RFC 8216bis 4.4.5.4).
    fn check_rendition_reports(&mut self) {
        let mut found = Vec::new();
        for (r, p) in &self.live {
            let expected = if self.first_live.contains(r) {
                0
            } else {
                RENDITIONS.len() - 1
            };
            if p.rendition_reports.len() != expected {
                found.push(format!("{r}/live.m3u8 has {:?}", p.rendition_reports));
            }
            for report in &p.rendition_reports {
                let target = resolve(&rendition_dir(r), &report.uri);
                let Object::LivePlaylist(other) = classify(&target) else {
                    found.push(format!("{r}/live.m3u8 reports on {target}"));
                    continue;
                };
                let actual = self.live.get(&other).and_then(last_part);
                let reported = report.last_part.map(|part| PartId {
                    msn: report.last_msn,
                    part,
                });
                if reported != actual {
                    found.push(format!(
                        "{r}/live.m3u8 reports {other} at {reported:?}, which stands at {actual:?}"
                    ));
                }
            }
        }
        for f in found {
            self.problem(f);
        }
    }

    /// Every object of a segment that left the window is deleted one
    /// deletion delay later (to within the part that triggers the deletion),
    /// never earlier; only such objects are deleted.
    fn check_pruning(&mut self) {
        let mut found = Vec::new();
        for ((r, msn), &left) in &self.left_window {
            let mut keys = vec![format!("{STREAM}/{r}/{msn}.m4s")];
            for part in 0..parts_in(*msn) {
                keys.push(format!("{STREAM}/{r}/{msn}.{part}.m4s"));
                keys.push(format!("{STREAM}/{r}/at/{msn}.{part}.m3u8"));
            }
            for key in keys {
                match self.deleted.get(&key) {
                    Some(&at)
                        if !(DELETION_DELAY..=DELETION_DELAY + PART).contains(&(at - left)) =>
                    {
                        found.push(format!(
                            "{key} deleted {} s after it left the window at {} s",
                            seconds_text(at - left),
                            seconds_text(left)
                        ));
                    }
                    None if left + DELETION_DELAY + PART <= self.now => {
                        found.push(format!(
                            "{key} left the window at {} s and is never deleted",
                            seconds_text(left)
                        ));
                    }
                    _ => {}
                }
            }
        }
        for key in self.deleted.keys() {
            let departed = match classify(key) {
                Object::Segment(r, msn) => self.left_window.contains_key(&(r, msn)),
                Object::Part(r, id) | Object::PartPlaylist(r, id) => {
                    self.left_window.contains_key(&(r, id.msn))
                }
                _ => false,
            };
            if !departed {
                found.push(format!("{key} deleted although it never left the window"));
            }
        }
        for f in found {
            self.problem(f);
        }
    }

    fn assert_no_problems(&self) {
        assert!(
            self.problems.is_empty(),
            "{} rule violations; the first ones:\n{}",
            self.problems.len(),
            self.problems
                .iter()
                .take(25)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn simulated_live_run_keeps_store_and_playlists_consistent() {
    let _serial = serial();
    assert_ne!(PROGRAM_END % PART, 0, "the program must end mid-part");
    let dir = tempfile::tempdir().expect("temp dir");
    let files = tone_files(dir.path());
    let mut pipeline = Pipeline::new(live_config(), hosts(&files)).expect("pipeline");
    let mut model = Model::default();
    model.apply(&pipeline.start().expect("start"), 0);
    while pipeline.clock().samples() < PROGRAM_END {
        let until = pipeline.clock().plus(STEP);
        if let Some(batch) = pipeline.advance(until).expect("advance") {
            model.apply(&batch, pipeline.clock().samples());
        }
    }
    assert_eq!(
        pipeline.clock(),
        ProgramTime::from_samples(PROGRAM_END),
        "a looping host never ends"
    );
    model.apply(
        &pipeline.finish().expect("finish"),
        pipeline.clock().samples(),
    );
    model.check_pruning();
    model.assert_no_problems();

    // The ended playlists: EXT-X-ENDLIST, no hint, the last part short.
    let last_msn = PROGRAM_END / SEGMENT;
    let last = PartId {
        msn: last_msn,
        part: parts_in(last_msn) - 1,
    };
    for r in RENDITIONS {
        let p = &model.live[r];
        assert!(p.end_list, "{r}/live.m3u8 lacks EXT-X-ENDLIST");
        assert_eq!(p.preload_hint, None, "{r}/live.m3u8 hints after the end");
        assert_eq!(last_part(p), Some(last), "{r}: last part");
        let (_, duration) = *listed_parts(p).last().expect("parts listed");
        assert_eq!(
            duration,
            PROGRAM_END % PART,
            "{r}: the last part is cut short"
        );
    }

    // The run went through every situation checked above.
    let departed = model.left_window.len() / RENDITIONS.len();
    let deleted_segments = model
        .deleted
        .keys()
        .filter(|k| matches!(classify(k), Object::Segment(..)))
        .count()
        / RENDITIONS.len();
    let parts = (PROGRAM_END.div_ceil(PART) as usize) * RENDITIONS.len();
    assert!(departed >= 10, "only {departed} segments left the window");
    assert!(
        deleted_segments >= 8,
        "only {deleted_segments} segments deleted"
    );
    assert_eq!(
        model.checked.part_playlists, parts,
        "one at/ playlist per part"
    );
    assert!(model.checked.live_playlists >= parts);
    assert_eq!(
        model.checked.segments,
        (last_msn as usize + 1) * RENDITIONS.len(),
        "one segment object per segment and rendition"
    );
    eprintln!(
        "simulated {} s: {} parts, {departed} segments left the window, {deleted_segments} deleted, \
         {:?}",
        seconds_text(PROGRAM_END),
        parts / RENDITIONS.len(),
        model.checked
    );
}

// ---------------------------------------------------------------------------
// The real process
// ---------------------------------------------------------------------------

/// Stream name of the process test (the brief's `--stream live`).
const LIVE_STREAM: &str = "live";
/// Window of the process test, seconds: the shortest the CLI accepts.
const LIVE_WINDOW_S: &str = "12";
/// Longest wait for the process to start publishing or to grow.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for the process to flush and exit after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Complete segments to wait for before decoding the growing stream.
const SEGMENTS_BEFORE_DECODE: usize = 3;
/// Longest the restarted broadcast runs: until the first run's segments have
/// left its window (12 s) and the deletion delay (three target durations,
/// 6 s) has passed, when they are deleted.
const SECOND_RUN: Duration = Duration::from_secs(40);

/// A running `onair live`, killed when dropped (a failing test leaves no
/// process behind). Its log goes to a file, shown when it misbehaves.
struct LiveProcess {
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl LiveProcess {
    fn spawn(inputs: &[PathBuf], store: &Path, log: PathBuf) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_onair"));
        cmd.arg("live");
        for input in inputs {
            cmd.arg("--input").arg(input);
        }
        cmd.arg("--loop")
            .arg("--store")
            .arg(store)
            .args(["--stream", LIVE_STREAM, "--window", LIVE_WINDOW_S])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"));
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn onair live");
        Self {
            child,
            log,
            started,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGINT, as Ctrl-C does, and waits for a successful exit.
    /// Returns how long the process took to flush and exit.
    fn interrupt(&mut self) -> Duration {
        let pid = self.child.id().to_string();
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill(1) must be installed for this test");
        assert!(kill.success(), "kill -INT {pid} failed");
        let child = &mut self.child;
        let status: Option<ExitStatus> =
            wait_until(STOP_TIMEOUT, || child.try_wait().expect("wait for onair"));
        let status = status.unwrap_or_else(|| {
            panic!(
                "onair live still runs {STOP_TIMEOUT:?} after SIGINT; log:\n{}",
                self.log()
            )
        });
        assert!(
            status.success(),
            "onair live exited with {status}; log:\n{}",
            self.log()
        );
        sent.elapsed()
    }
}

impl Drop for LiveProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Decodes an HLS stream with ffmpeg, as a listener's player would; `limit`
/// caps the decoded seconds. Fails on a non-zero exit or any error output.
fn ffmpeg_decodes(playlist: &Path, limit: Option<&str>) {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-i"]).arg(playlist);
    if let Some(seconds) = limit {
        cmd.args(["-t", seconds]);
    }
    let out = cmd
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg must be installed for this test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "ffmpeg on {} exited with {}: {stderr}",
        playlist.display(),
        out.status
    );
}

/// For each part `p` lists, how long after the program date of its last
/// sample its file was stored (file modification time), in ms. The epoch
/// is read before the encoders start, so this includes the start-up.
fn part_latencies_ms(rendition_dir: &Path, p: &MediaPlaylist) -> Vec<i64> {
    let mut out = Vec::new();
    for s in &p.segments {
        let Some(date) = s.program_date_time else {
            continue;
        };
        let mut end_ms = date.timestamp_millis();
        for part in &s.parts {
            end_ms += (part.duration * 1000 / RATE) as i64;
            let stored = std::fs::metadata(rendition_dir.join(&part.uri))
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| panic!("{}: {e}", part.uri));
            let stored_ms = stored
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("after 1970")
                .as_millis() as i64;
            out.push(stored_ms - end_ms);
        }
    }
    out.sort_unstable();
    out
}

/// The `live.m3u8` of every rendition of the process test's stream.
fn live_playlists(stream_dir: &Path) -> Vec<MediaPlaylist> {
    RENDITIONS
        .iter()
        .map(|r| {
            read_playlist(&stream_dir.join(r).join("live.m3u8"))
                .unwrap_or_else(|| panic!("{r}/live.m3u8 missing"))
        })
        .collect()
}

/// Objects that must never change: everything but the rewritable
/// playlists (`live.m3u8`, `index.m3u8`).
fn immutable_objects(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut all = snapshot(store);
    all.retain(|key, _| !key.ends_with("/live.m3u8") && !key.ends_with("/index.m3u8"));
    all
}

#[test]
fn onair_live_stops_on_sigint_and_resumes_the_numbering() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let inputs = tone_files(dir.path());
    let store = dir.path().join("store");
    let stream_dir = store.join(LIVE_STREAM);
    let index = stream_dir.join("index.m3u8");
    let aac_live = stream_dir.join("aac/live.m3u8");

    // First broadcast: it grows, a player decodes it, SIGINT ends it.
    let mut first = LiveProcess::spawn(&inputs, &store, dir.path().join("first.log"));
    let first_part = stream_dir.join("aac/0.0.m4s");
    let first_part_after = wait_until(STARTUP_TIMEOUT, || {
        first_part.exists().then(|| first.started.elapsed())
    })
    .unwrap_or_else(|| panic!("no part after {STARTUP_TIMEOUT:?}; log:\n{}", first.log()));
    wait_until(STARTUP_TIMEOUT, || {
        read_playlist(&aac_live).filter(|p| p.segments.len() >= SEGMENTS_BEFORE_DECODE)
    })
    .unwrap_or_else(|| panic!("live.m3u8 did not grow; log:\n{}", first.log()));
    let decode_started = Instant::now();
    ffmpeg_decodes(&index, Some("2"));
    let growing_decode = decode_started.elapsed();
    let ran = first.started.elapsed();
    let first_stop = first.interrupt();

    let ended = live_playlists(&stream_dir);
    for (r, p) in RENDITIONS.iter().zip(&ended) {
        assert!(p.end_list, "{r}/live.m3u8 lacks EXT-X-ENDLIST after SIGINT");
        assert_eq!(p.preload_hint, None, "{r}/live.m3u8 hints after the end");
        let text = std::fs::read_to_string(stream_dir.join(r).join("live.m3u8")).expect("read");
        assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{r}:\n{text}");
    }
    ffmpeg_decodes(&index, None);
    let latencies = part_latencies_ms(&stream_dir.join("aac"), &ended[0]);
    let median_latency = latencies[latencies.len() / 2];
    // A player at PART-HOLD-BACK (0.96 s) behind the edge needs each part
    // well within that.
    assert!(
        median_latency < (3 * PART * 1000 / RATE) as i64,
        "parts are stored {latencies:?} ms after their program date"
    );
    let old_last_msn = ended[0].open_msn() - 1;
    let before = immutable_objects(&store);

    // Second broadcast under the same name: continues the stream's
    // wall-clock timeline after the first run's segments and overwrites
    // nothing.
    let timing: serde_json::Value = serde_json::from_slice(
        &std::fs::read(stream_dir.join("timing.json")).expect("the stream's timing record"),
    )
    .expect("timing record is JSON");
    let epoch_ms = timing["epoch_unix_ms"].as_i64().expect("epoch");
    let mut second = LiveProcess::spawn(&inputs, &store, dir.path().join("second.log"));
    let relisted = wait_until(STARTUP_TIMEOUT, || {
        read_playlist(&aac_live).filter(|p| !p.end_list)
    })
    .unwrap_or_else(|| panic!("the restart published nothing; log:\n{}", second.log()));
    // The first run's segments are listed again (the window still covers
    // them); the one after its short last segment opens with a discontinuity.
    assert!(
        relisted.media_sequence <= old_last_msn,
        "the restart does not list the first run's segments: {}",
        relisted.render()
    );
    let after_first = relisted
        .segments
        .get((old_last_msn + 1 - relisted.media_sequence) as usize)
        .map(|s| s.discontinuity)
        .or(relisted.open.as_ref().map(|o| o.discontinuity));
    assert_eq!(after_first, Some(true), "{}", relisted.render());
    // Wait until the first run's media has left the window and been deleted.
    let first_run_media = |after: &BTreeMap<String, Vec<u8>>| -> Vec<String> {
        before
            .keys()
            .filter(|key| {
                !key.ends_with("/init.mp4")
                    && !key.ends_with("/timing.json")
                    && after.contains_key(*key)
            })
            .cloned()
            .collect()
    };
    wait_until(SECOND_RUN, || {
        first_run_media(&snapshot(&store)).is_empty().then_some(())
    });
    let second_stop = second.interrupt();

    for (r, p) in RENDITIONS.iter().zip(live_playlists(&stream_dir)) {
        assert!(
            p.media_sequence > old_last_msn,
            "{r}: the first run's segments are still listed at MSN {}",
            p.media_sequence
        );
        // Every date is the stream's epoch plus the segment's place on the
        // timeline: MSN × 1.92 s.
        for (s, msn) in p.segments.iter().zip(p.media_sequence..) {
            let pdt = s.program_date_time.expect("dated").timestamp_millis();
            assert_eq!(pdt, epoch_ms + (msn * 1920) as i64, "{r}: segment {msn}");
        }
        assert!(p.end_list, "{r}: the second run ended too");
    }
    let after = snapshot(&store);
    let mut compared = 0;
    for (key, bytes) in &before {
        if let Some(now) = after.get(key) {
            assert!(now == bytes, "{key} was overwritten by the restart");
            compared += 1;
        }
    }
    assert!(compared > 0, "no object of the first run left to compare");
    // The first run's media left with the second run's window and deletion
    // delay: none of its segments, parts or `at/` playlists is left behind
    // for ever.
    let left = first_run_media(&after);
    assert!(
        left.is_empty(),
        "objects of the first run still stored after the second: {left:?}"
    );

    eprintln!(
        "first part stored {} ms after spawn; growing stream ({ran:?} in) decoded in \
         {growing_decode:?}; stops took {first_stop:?} and {second_stop:?}; part store \
         latency after program date: min {} / median {median_latency} / max {} ms over {} \
         parts; restart listed from MSN {} after {old_last_msn}; {compared} objects of the \
         first run unchanged",
        first_part_after.as_millis(),
        latencies[0],
        latencies[latencies.len() - 1],
        latencies.len(),
        relisted.media_sequence,
    );
}
