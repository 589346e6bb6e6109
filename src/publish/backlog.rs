//! What a live broadcast has produced and the store has not yet taken.
//!
//! Contract: pure, no clock and no IO. The live publish driver
//! ([`super::live`]) pushes every batch the packager makes into a
//! [`Backlog`] and takes work from it; while the store keeps up the backlog
//! holds at most one batch and hands it on unchanged. While the store is
//! failing batches pile up, and each new one is [`merge`]d into what waits,
//! which keeps the backlog bounded by the live window rather than by the
//! length of the outage, and lets listeners return to the live edge as soon
//! as the store is back instead of after a replay of every part they missed:
//!
//! - Playlists that are rewritten (`live.m3u8`, the multivariant playlist,
//!   pages) keep only their newest version.
//! - Of the immutable `at/` playlists, only each rendition's newest is kept:
//!   an older one describes a moment that has passed (the origin's follower
//!   reads `live.m3u8` when an `at/` playlist it looks for never comes).
//! - Media (segments and parts) are kept only if the newest `live.m3u8` of
//!   their rendition in the merge names them: a part of a segment that has
//!   since completed and aged out of the part window, or a segment that slid
//!   out of the window while the store was away, can no longer serve a
//!   listener. Init segments are always kept. A rendition without a newest
//!   playlist in the merge (or one that cannot be read) keeps all its media.
//! - Deletions are kept (deleting what was never stored is harmless), and a
//!   put followed in the merge by a deletion of its key is dropped.
//! - The merged batch has the packager's stage order: media, then `at/`
//!   playlists, then `live.m3u8`, then the multivariant playlist and pages,
//!   then deletions. So a merge still never stores a playlist before the
//!   media it names (RFC 8216bis §6.2.2), and the newest `live.m3u8` names
//!   only objects stored before it or already in the store.
//!
//! A backlog may also be given a [`BacklogLimit`] smaller than the window
//! (memory is finite, and an outage can outlast any window). Past it the
//! oldest complete segments are shed: their media and `at/` playlists leave
//! the backlog, a silent segment from the [`GapFiller`] takes each one's
//! place in the store (players that ignore `EXT-X-GAP`, such as ffmpeg 5.1,
//! still read a real segment), and every playlist published from then on
//! lists them with `EXT-X-GAP` (RFC 8216bis §4.4.4.7) and without parts:
//! the audio is lost, and the playlists say so.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use super::ObjectKind;
use super::layout::{ObjectKey, RenditionFile, RenditionPath};
use super::publisher::{Batch, Op, PutObject};
use crate::hls::MediaPlaylist;

/// Makes the silent segment stored under the name of a shed segment: the
/// rendition and the segment's Media Sequence Number in, the segment's bytes
/// out (`None`: the rendition cannot be filled, so nothing is shed).
pub type GapFiller = Arc<dyn Fn(&RenditionPath, u64) -> Option<Bytes> + Send + Sync>;

/// How much media a [`Backlog`] keeps before it sheds the oldest segments.
/// `None` everywhere (the default): bounded by the live window only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BacklogLimit {
    /// Most complete segments (per rendition) waiting.
    pub segments: Option<u64>,
    /// Most body bytes waiting.
    pub bytes: Option<u64>,
}

/// The batches waiting for the store, merged into one.
#[derive(Default)]
pub struct Backlog {
    waiting: Option<Batch>,
    /// Packager batches merged into `waiting`.
    batches: u64,
    /// Body bytes of the puts in `waiting`.
    bytes: u64,
    limit: BacklogLimit,
    filler: Option<GapFiller>,
    /// Segments shed and listed as gaps (while playlists may still list
    /// them).
    gaps: BTreeSet<u64>,
    /// Segments shed so far.
    shed: u64,
}

impl std::fmt::Debug for Backlog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlog")
            .field("batches", &self.batches)
            .field("bytes", &self.bytes)
            .field("limit", &self.limit)
            .field("gaps", &self.gaps)
            .finish_non_exhaustive()
    }
}

impl Backlog {
    /// An empty backlog bounded by the live window.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty backlog that sheds the oldest segments beyond `limit`,
    /// storing `filler`'s silence in their place.
    pub fn limited(limit: BacklogLimit, filler: GapFiller) -> Self {
        Self {
            limit,
            filler: Some(filler),
            ..Self::default()
        }
    }

    /// Segments shed so far (listed as gaps, silence stored).
    pub fn shed_segments(&self) -> u64 {
        self.shed
    }

    /// Adds a batch newer than everything waiting.
    pub fn push(&mut self, batch: Batch) {
        self.join(batch, 1, false);
    }

    /// Returns work the driver took but could not finish (`batches` packager
    /// batches' worth): it is older than everything waiting, so it goes
    /// first.
    pub fn put_back(&mut self, rest: Batch, batches: u64) {
        self.join(rest, batches, true);
    }

    /// Takes everything waiting as one batch, with the number of packager
    /// batches it stands for.
    pub fn take(&mut self) -> Option<(Batch, u64)> {
        let batch = self.waiting.take()?;
        let batches = std::mem::take(&mut self.batches);
        self.bytes = 0;
        Some((batch, batches))
    }

    /// Drops the puts `stored` says are in the store already (a standby's
    /// backlog forgets what the leader has listed); playlists that
    /// remain still name only what remains or is stored.
    pub fn forget(&mut self, stored: &dyn Fn(&Op) -> bool) {
        let Some(batch) = &mut self.waiting else {
            return;
        };
        for stage in &mut batch.stages {
            stage.retain(|op| !stored(op));
        }
        batch.stages.retain(|stage| !stage.is_empty());
        if batch.stages.is_empty() {
            self.waiting = None;
            self.batches = 0;
        }
        self.bytes = self.waiting.as_ref().map_or(0, body_bytes);
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_none()
    }

    /// Packager batches waiting (merged or not).
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// Body bytes waiting: the backlog's memory, give or take the keys.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn join(&mut self, batch: Batch, batches: u64, older: bool) {
        let mut merged = match self.waiting.take() {
            None => batch,
            Some(waiting) if older => merge(batch, waiting),
            Some(waiting) => merge(waiting, batch),
        };
        self.shed_over_limit(&mut merged);
        if !self.gaps.is_empty() {
            mark_gaps(&mut merged, &mut self.gaps);
        }
        self.bytes = body_bytes(&merged);
        self.batches += batches;
        self.waiting = Some(merged);
    }

    fn over_limit(&self, batch: &Batch, segments: usize) -> bool {
        self.limit
            .segments
            .is_some_and(|most| segments as u64 > most)
            || self
                .limit
                .bytes
                .is_some_and(|most| body_bytes(batch) > most)
    }

    /// Sheds the oldest complete segments while `batch` holds more than
    /// the limit.
    fn shed_over_limit(&mut self, batch: &mut Batch) {
        let Some(filler) = self.filler.clone() else {
            return;
        };
        loop {
            // Complete segments waiting: a segment object is in the batch.
            let mut complete: BTreeSet<u64> = BTreeSet::new();
            for op in batch.stages.iter().flatten() {
                if let Op::Put(obj) = op
                    && let Some(ObjectKey::Rendition {
                        file: RenditionFile::Segment(msn),
                        ..
                    }) = ObjectKey::parse(&obj.key)
                    && !self.gaps.contains(&msn)
                {
                    complete.insert(msn);
                }
            }
            let Some(&oldest) = complete.first() else {
                return;
            };
            if !self.over_limit(batch, complete.len()) {
                return;
            }
            let mut silent = Vec::new();
            let mut fillable = true;
            for op in batch.stages.iter().flatten() {
                if let Op::Put(obj) = op
                    && let Some(ObjectKey::Rendition {
                        path,
                        file: RenditionFile::Segment(msn),
                    }) = ObjectKey::parse(&obj.key)
                    && msn == oldest
                {
                    match filler(&path, msn) {
                        Some(body) => silent.push(Op::Put(PutObject {
                            key: obj.key.clone(),
                            body,
                            kind: ObjectKind::Media,
                        })),
                        None => fillable = false,
                    }
                }
            }
            if !fillable {
                return;
            }
            for stage in &mut batch.stages {
                stage.retain(|op| !of_segment(op, oldest));
            }
            batch.stages.retain(|stage| !stage.is_empty());
            match batch.stages.first_mut() {
                Some(first) if first.iter().all(|op| stage_of(op) == Stage::Media) => {
                    first.extend(silent)
                }
                _ => batch.stages.insert(0, silent),
            }
            self.gaps.insert(oldest);
            self.shed += 1;
            tracing::warn!(
                msn = oldest,
                "publish backlog over its limit: the oldest waiting segment is dropped, \
                 listed as a gap with silence stored under its name"
            );
        }
    }
}

/// Whether `op` puts media or an `at/` playlist of segment `msn`.
fn of_segment(op: &Op, msn: u64) -> bool {
    let Op::Put(obj) = op else { return false };
    matches!(
        ObjectKey::parse(&obj.key),
        Some(ObjectKey::Rendition {
            file: RenditionFile::Segment(m)
                | RenditionFile::Part(crate::hls::PartId { msn: m, .. })
                | RenditionFile::At(crate::hls::PartId { msn: m, .. }),
            ..
        }) if m == msn
    )
}

/// Lists the segments of `gaps` as gaps in every media playlist of
/// `batch`: `EXT-X-GAP`, no parts. Forgets gaps that have left every
/// playlist's window.
fn mark_gaps(batch: &mut Batch, gaps: &mut BTreeSet<u64>) {
    let mut oldest_listed: Option<u64> = None;
    for op in batch.stages.iter_mut().flatten() {
        let Op::Put(obj) = op else { continue };
        if !matches!(
            obj.kind,
            ObjectKind::LivePlaylist | ObjectKind::PartPlaylist
        ) {
            continue;
        }
        let Some(mut playlist) = std::str::from_utf8(&obj.body)
            .ok()
            .and_then(|text| MediaPlaylist::parse(text).ok())
        else {
            continue;
        };
        let first = playlist.first_listed_msn();
        if obj.kind == ObjectKind::LivePlaylist {
            oldest_listed = Some(oldest_listed.map_or(first, |o: u64| o.min(first)));
        }
        let mut changed = false;
        for (segment, msn) in playlist.segments.iter_mut().zip(first..) {
            if gaps.contains(&msn) && !segment.gap {
                segment.gap = true;
                segment.parts.clear();
                changed = true;
            }
        }
        if changed {
            obj.body = Bytes::from(playlist.render());
        }
    }
    if let Some(oldest) = oldest_listed {
        gaps.retain(|&msn| msn >= oldest);
    }
}

/// Body bytes of the puts in `batch`.
pub fn body_bytes(batch: &Batch) -> u64 {
    batch
        .stages
        .iter()
        .flatten()
        .map(|op| match op {
            Op::Put(obj) => obj.body.len() as u64,
            Op::Delete(_) => 0,
        })
        .sum()
}

/// Where an operation goes in a merged batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Media,
    At,
    Live,
    Index,
    Delete,
}

fn stage_of(op: &Op) -> Stage {
    match op {
        Op::Delete(_) => Stage::Delete,
        Op::Put(obj) => match obj.kind {
            ObjectKind::Init | ObjectKind::Media => Stage::Media,
            ObjectKind::PartPlaylist => Stage::At,
            ObjectKind::LivePlaylist => Stage::Live,
            ObjectKind::Multivariant | ObjectKind::Page => Stage::Index,
        },
    }
}

/// The work of `older` followed by `newer` as one batch (see the module
/// docs for what is dropped and why).
pub fn merge(older: Batch, newer: Batch) -> Batch {
    let ops: Vec<Op> = older
        .stages
        .into_iter()
        .chain(newer.stages)
        .flatten()
        .collect();
    // The last put of each key wins, and a later delete cancels a put.
    let mut last_put: HashMap<&str, usize> = HashMap::new();
    let mut deleted: HashSet<&str> = HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(obj) => {
                last_put.insert(&obj.key, i);
                deleted.remove(obj.key.as_str());
            }
            Op::Delete(key) => {
                deleted.insert(key);
            }
        }
    }
    // The newest `at/` playlist of each rendition, and what each rendition's
    // newest `live.m3u8` names.
    let mut newest_at: HashMap<RenditionPath, usize> = HashMap::new();
    let mut named: HashMap<RenditionPath, Option<HashSet<RenditionFile>>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Op::Put(obj) = op else { continue };
        if last_put.get(obj.key.as_str()) != Some(&i) {
            continue;
        }
        match ObjectKey::parse(&obj.key) {
            Some(ObjectKey::Rendition {
                path,
                file: RenditionFile::At(_),
            }) => {
                newest_at.insert(path, i);
            }
            Some(ObjectKey::Rendition {
                path,
                file: RenditionFile::Live,
            }) => {
                named.insert(path, names_in(obj));
            }
            _ => {}
        }
    }
    let keep = |i: usize, op: &Op| -> bool {
        let Op::Put(obj) = op else { return true };
        if last_put.get(obj.key.as_str()) != Some(&i) || deleted.contains(obj.key.as_str()) {
            return false;
        }
        match ObjectKey::parse(&obj.key) {
            Some(ObjectKey::Rendition {
                path,
                file: RenditionFile::At(_),
            }) => newest_at.get(&path) == Some(&i),
            Some(ObjectKey::Rendition {
                path,
                file: file @ (RenditionFile::Segment(_) | RenditionFile::Part(_)),
            }) => match named.get(&path) {
                Some(Some(names)) => names.contains(&file),
                // No newest playlist, or one that cannot be read: keep.
                _ => true,
            },
            _ => true,
        }
    };
    let mut seen_deletes: HashSet<&str> = HashSet::new();
    let mut stages: Vec<(Stage, Vec<Op>)> = Vec::new();
    let mut kept: Vec<(Stage, Op)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Delete(key) = op
            && !seen_deletes.insert(key)
        {
            continue;
        }
        if keep(i, op) {
            kept.push((stage_of(op), op.clone()));
        }
    }
    // A stable sort keeps each stage's operations in the order they came.
    kept.sort_by_key(|(stage, _)| *stage);
    for (stage, op) in kept {
        match stages.last_mut() {
            Some((s, ops)) if *s == stage => ops.push(op),
            _ => stages.push((stage, vec![op])),
        }
    }
    Batch {
        stages: stages.into_iter().map(|(_, ops)| ops).collect(),
    }
}

/// The media a media playlist names (segments, parts, init), or `None` if
/// it cannot be read.
fn names_in(playlist: &PutObject) -> Option<HashSet<RenditionFile>> {
    let text = std::str::from_utf8(&playlist.body).ok()?;
    let parsed = MediaPlaylist::parse(text).ok()?;
    let mut names = HashSet::new();
    let mut add = |uri: &str| {
        if let Some(file) = RenditionFile::parse(uri) {
            names.insert(file);
        }
    };
    for segment in &parsed.segments {
        add(&segment.uri);
        segment.parts.iter().for_each(|p| add(&p.uri));
    }
    if let Some(open) = &parsed.open {
        open.parts.iter().for_each(|p| add(&p.uri));
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hls::TimelineConfig;
    use crate::publish::layout::rendition_names;

    fn put(key: String, kind: ObjectKind, body: impl Into<Bytes>) -> Op {
        Op::Put(PutObject {
            key,
            body: body.into(),
            kind,
        })
    }

    /// The batches a packager would make for `parts` parts of one rendition
    /// of stream `s`: parts, segments when they close, `at/` and `live.m3u8`.
    fn packager_batches(parts: u32) -> Vec<Batch> {
        let mut timeline = TimelineConfig {
            window: Some(6 * 6 * 15_360),
            ..TimelineConfig::default()
        }
        .build()
        .expect("timeline");
        let names = rendition_names();
        let dir = RenditionPath::new("s", "opus").expect("names");
        let mut out = Vec::new();
        for _ in 0..parts {
            let id = timeline.push_part(15_360).expect("part");
            let mut media = vec![put(
                dir.key(RenditionFile::Part(id)),
                ObjectKind::Media,
                format!("part {id:?}"),
            )];
            if timeline.next_part().is_some_and(|n| n.msn != id.msn) {
                media.push(put(
                    dir.key(RenditionFile::Segment(id.msn)),
                    ObjectKind::Media,
                    format!("segment {}", id.msn),
                ));
            }
            let playlist = timeline.media_playlist(names, &[]).render();
            let deletes: Vec<Op> = timeline
                .take_expired(timeline.head())
                .into_iter()
                .map(|e| Op::Delete(dir.key(RenditionFile::Segment(e.msn))))
                .collect();
            let mut stages = vec![
                media,
                vec![put(
                    dir.at_key(id),
                    ObjectKind::PartPlaylist,
                    playlist.clone(),
                )],
                vec![put(dir.live_key(), ObjectKind::LivePlaylist, playlist)],
            ];
            if !deletes.is_empty() {
                stages.push(deletes);
            }
            out.push(Batch { stages });
        }
        out
    }

    fn keys(batch: &Batch) -> Vec<Vec<String>> {
        batch
            .stages
            .iter()
            .map(|s| s.iter().map(|op| op.key().to_owned()).collect())
            .collect()
    }

    #[test]
    fn a_backlog_that_keeps_up_hands_each_batch_on_unchanged() {
        let batches = packager_batches(3);
        let mut backlog = Backlog::new();
        for batch in batches {
            backlog.push(batch.clone());
            assert_eq!(backlog.batches(), 1);
            assert_eq!(backlog.take(), Some((batch, 1)));
            assert!(backlog.is_empty());
        }
    }

    #[test]
    fn merged_batches_keep_the_stage_order_and_the_newest_playlists() {
        let batches = packager_batches(2);
        let merged = merge(batches[0].clone(), batches[1].clone());
        assert_eq!(
            keys(&merged),
            vec![
                vec!["s/opus/0.0.m4s".to_owned(), "s/opus/0.1.m4s".to_owned()],
                vec!["s/opus/at/0.1.m3u8".to_owned()],
                vec!["s/opus/live.m3u8".to_owned()],
            ]
        );
        let Op::Put(live) = &merged.stages[2][0] else {
            panic!("a put")
        };
        assert_eq!(
            Some(live),
            batches[1].stages[2].first().and_then(|op| match op {
                Op::Put(p) => Some(p),
                Op::Delete(_) => None,
            })
        );
    }

    #[test]
    fn a_standby_forgets_what_the_leader_listed_and_keeps_the_rest_in_order() {
        let mut backlog = Backlog::new();
        for batch in packager_batches(20) {
            backlog.push(batch);
        }
        // The leader listed up to part 2.3 (the 16th part).
        let listed = crate::hls::PartId { msn: 2, part: 3 };
        backlog.forget(&|op| match ObjectKey::parse(op.key()) {
            Some(ObjectKey::Rendition {
                file: RenditionFile::Part(id) | RenditionFile::At(id),
                ..
            }) => matches!(op, Op::Put(_)) && id <= listed,
            Some(ObjectKey::Rendition {
                file: RenditionFile::Segment(msn),
                ..
            }) => matches!(op, Op::Put(_)) && msn < listed.msn,
            _ => false,
        });
        let (merged, _) = backlog.take().expect("what the leader did not list waits");
        let keys = keys(&merged);
        // Parts 2.4, 2.5, 3.0 to 3.1 and segment 2, then the newest at/
        // and live playlists.
        assert_eq!(
            keys[0],
            [
                "s/opus/2.4.m4s",
                "s/opus/2.5.m4s",
                "s/opus/2.m4s",
                "s/opus/3.0.m4s",
                "s/opus/3.1.m4s"
            ]
        );
        assert_eq!(keys[1], ["s/opus/at/3.1.m3u8"]);
        assert_eq!(keys[2], ["s/opus/live.m3u8"]);

        // Everything listed: nothing waits.
        let mut backlog = Backlog::new();
        for batch in packager_batches(3) {
            backlog.push(batch);
        }
        backlog.forget(&|op| matches!(op, Op::Put(_)));
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn a_long_outage_leaves_a_backlog_bounded_by_the_window() {
        // 10 minutes of parts while the store is away.
        let mut backlog = Backlog::new();
        let batches = packager_batches(1875);
        let total = batches.len() as u64;
        let last = batches.last().cloned().expect("batches");
        for batch in batches {
            backlog.push(batch);
        }
        assert_eq!(backlog.batches(), total);
        let (merged, n) = backlog.take().expect("work");
        assert_eq!(n, total);
        // What is kept is exactly what the newest playlist names, plus its
        // playlists: no part that aged out, no segment that left the window.
        let Some(Op::Put(live)) = last.stages[2].first() else {
            panic!("live playlist")
        };
        let named = names_in(live).expect("readable");
        let media: Vec<&Op> = merged.stages[0].iter().collect();
        assert_eq!(media.len(), named.len());
        for op in media {
            let Some(ObjectKey::Rendition { file, .. }) = ObjectKey::parse(op.key()) else {
                panic!("layout key {}", op.key())
            };
            assert!(named.contains(&file), "{} not named", op.key());
        }
        // The window is 36 segments of 6 parts: far below 10 minutes.
        assert!(named.len() < 36 + 3 * 6 + 6, "{}", named.len());
    }

    #[test]
    fn work_put_back_goes_before_what_arrived_since() {
        let batches = packager_batches(3);
        let mut backlog = Backlog::new();
        backlog.push(batches[0].clone());
        let (taken, n) = backlog.take().expect("work");
        backlog.push(batches[1].clone());
        backlog.push(batches[2].clone());
        // The media stage was stored; the playlists failed.
        let rest = Batch {
            stages: taken.stages[1..].to_vec(),
        };
        backlog.put_back(rest, n);
        assert_eq!(backlog.batches(), 3);
        let (merged, _) = backlog.take().expect("work");
        assert_eq!(
            keys(&merged),
            vec![
                vec!["s/opus/0.1.m4s".to_owned(), "s/opus/0.2.m4s".to_owned()],
                vec!["s/opus/at/0.2.m3u8".to_owned()],
                vec!["s/opus/live.m3u8".to_owned()],
            ]
        );
    }

    #[test]
    fn a_put_deleted_later_is_dropped_and_deletes_are_kept_once() {
        let media = |k: &str| put(k.to_owned(), ObjectKind::Media, "m");
        let older = Batch {
            stages: vec![vec![media("s/opus/1.m4s"), media("s/opus/2.m4s")]],
        };
        let newer = Batch {
            stages: vec![
                vec![media("s/opus/3.m4s")],
                vec![
                    Op::Delete("s/opus/1.m4s".to_owned()),
                    Op::Delete("s/opus/0.m4s".to_owned()),
                ],
            ],
        };
        let again = Batch {
            stages: vec![vec![Op::Delete("s/opus/0.m4s".to_owned())]],
        };
        let merged = merge(merge(older, newer), again);
        assert_eq!(
            keys(&merged),
            vec![
                vec!["s/opus/2.m4s".to_owned(), "s/opus/3.m4s".to_owned()],
                vec!["s/opus/1.m4s".to_owned(), "s/opus/0.m4s".to_owned()],
            ]
        );
    }

    #[test]
    fn an_unreadable_playlist_drops_no_media() {
        let older = Batch {
            stages: vec![vec![put(
                "s/opus/0.0.m4s".to_owned(),
                ObjectKind::Media,
                "m",
            )]],
        };
        let newer = Batch {
            stages: vec![vec![put(
                "s/opus/live.m3u8".to_owned(),
                ObjectKind::LivePlaylist,
                "not a playlist",
            )]],
        };
        let merged = merge(older, newer);
        assert_eq!(
            keys(&merged),
            vec![
                vec!["s/opus/0.0.m4s".to_owned()],
                vec!["s/opus/live.m3u8".to_owned()],
            ]
        );
    }
}
