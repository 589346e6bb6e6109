//! The packager: access units of every rendition in, CMAF objects and LL-HLS
//! playlists out, as ordered publish [`Batch`]es. Pure: no clock, no IO.
//!
//! # Contract
//! - Parts have the same program-time boundaries in every rendition: a part
//!   covering program time `[s, e)` holds, for a rendition with whole-frame
//!   delay `D`, the access units whose media time lies in `[s + D, e + D)`
//!   (part 0 also holds the priming units before `D`). See [`crate::encode`].
//! - A part is cut only when every rendition has it complete, so playlists of
//!   all renditions advance together and rendition reports are always exact.
//! - Every batch stores media first, then the playlists that name it
//!   (`at/{msn}.{part}.m3u8`, then `live.m3u8`), then deletions: a playlist
//!   never names an object that is not stored yet (a preload hint names the
//!   next part on purpose; the origin holds that request until it exists).
//! - A segment's bytes are its parts' bytes back to back; its first part
//!   begins with `styp` (ISO/IEC 23000-19 §7.3.3).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::cmaf;
use crate::encode::{AudioEncoder, CodecInfo, Packet};
use crate::hls::{
    self, MediaPlaylist, PartId, PlaylistType, RenditionReport, Timeline, TimelineConfig, Variant,
};
use crate::publish::layout::{self, ObjectKey, RenditionFile, RenditionPath};
use crate::publish::{Batch, GapFiller, ObjectKind, Op, PutObject};
use crate::time::{MediaTime, ProgramTime};

/// Every onair file has one track.
const TRACK_ID: u32 = 1;

/// How playlists are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistMode {
    /// A live broadcast: every part is stored on its own and followed by the
    /// immutable `at/` playlist and the new `live.m3u8`; old segments slide
    /// out of the window and are deleted.
    Live,
    /// A finished recording packaged as fast as possible: only whole segments
    /// are stored, and one final playlist (`EXT-X-PLAYLIST-TYPE:VOD`,
    /// `EXT-X-ENDLIST`) is written at the end. Parts only matter at a live
    /// edge, which a finished recording does not have.
    Vod,
}

/// One rendition as the packager and the multivariant playlist see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionSpec {
    /// Folder name under the stream, e.g. `aac`, `opus`.
    pub name: String,
    /// Sample entry description.
    pub info: CodecInfo,
    /// Whole-frame encoder delay: media time of program sample 0.
    pub delay: u32,
    /// Samples per access unit.
    pub frame_len: u32,
    /// Target codec bitrate in bits per second (for `BANDWIDTH`).
    pub bitrate: u32,
    /// One access unit that decodes to silence ([`crate::encode::silent_unit`]):
    /// the content of the gap segments a restarted stream lists for the span
    /// no process published. Empty: this rendition cannot fill gaps.
    pub silence: Bytes,
}

impl RenditionSpec {
    /// Describes the output of `encoder` under folder `name`.
    pub fn of(name: &str, encoder: &dyn AudioEncoder, bitrate: u32) -> Self {
        Self {
            name: name.to_string(),
            info: encoder.info(),
            delay: encoder.delay(),
            frame_len: encoder.frame_len(),
            bitrate,
            silence: Bytes::new(),
        }
    }

    /// The spec with `silence` as its gap filler.
    pub fn with_silence(self, silence: Bytes) -> Self {
        Self { silence, ..self }
    }

    fn codecs(&self) -> &'static str {
        match self.info {
            CodecInfo::Opus { .. } => "opus",
            CodecInfo::Aac { .. } => "mp4a.40.2",
        }
    }

    fn channels(&self) -> u32 {
        match &self.info {
            CodecInfo::Opus { channels, .. } => u32::from(*channels),
            CodecInfo::Aac { channels, .. } => u32::from(*channels),
        }
    }

    /// `BANDWIDTH` and `AVERAGE-BANDWIDTH` (RFC 8216bis §4.4.6.2): the codec
    /// rate plus CMAF overhead (a `moof` of about 200 bytes per 320 ms part is
    /// 5 kb/s); Opus is VBR, so its peak gets a quarter on top.
    fn bandwidth(&self) -> (u64, u64) {
        let avg = u64::from(self.bitrate) + 5_000;
        let peak = match self.info {
            CodecInfo::Opus { .. } => avg + u64::from(self.bitrate) / 4,
            CodecInfo::Aac { .. } => avg + 3_000,
        };
        (peak, avg)
    }
}

/// Packager settings.
#[derive(Debug, Clone)]
pub struct PackagerConfig {
    /// Stream name: the key prefix of every object.
    pub stream: String,
    /// Part, segment, window and date settings.
    pub timeline: TimelineConfig,
    /// Live or finished-recording publishing.
    pub mode: PlaylistMode,
}

/// Errors of the packager. All of them are configuration or wiring errors:
/// fix the setup; retrying the same input fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    /// The timeline settings are invalid.
    #[error("invalid timing configuration: {0}")]
    Config(#[from] hls::ConfigError),
    /// A rendition cannot share part boundaries with the others.
    #[error(
        "rendition {name}: part target {part} is not a whole number of {frame}-sample frames, \
         or its delay {delay} is not; parts could not share boundaries"
    )]
    Misaligned {
        /// Rendition name.
        name: String,
        /// Part target in samples.
        part: u64,
        /// Codec frame length.
        frame: u32,
        /// Encoder delay.
        delay: u32,
    },
    /// The stream or a rendition name is not a safe object key segment.
    #[error(
        "name {0:?} must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.', and not \".\" or \"..\""
    )]
    BadName(String),
    /// The multivariant playlist could not be built.
    #[error("multivariant playlist: {0}")]
    Multivariant(#[from] hls::MultivariantError),
    /// The timeline refused a part (a packaging bug).
    #[error("timeline: {0}")]
    Timeline(#[from] hls::TimelineError),
    /// A CMAF box could not be written.
    #[error("CMAF: {0}")]
    Cmaf(#[from] cmaf::Error),
    /// Encoded units arrived out of order or overlapping (an encoder bug).
    #[error(
        "rendition {name}: unit at media time {} does not follow {}",
        got.samples(),
        expected.samples()
    )]
    Discontiguous {
        /// Rendition name.
        name: String,
        /// Expected media time.
        expected: MediaTime,
        /// Media time received.
        got: MediaTime,
    },
    /// The timeline lists gap segments but a rendition has no silence to
    /// store under them (see [`RenditionSpec::silence`]).
    #[error("rendition {0}: no silent access unit to fill the stream's gap segments")]
    NoSilence(String),
}

#[derive(Debug)]
struct Rendition {
    spec: RenditionSpec,
    queue: VecDeque<Packet>,
    /// Media time the next unit must start at.
    next_media: MediaTime,
    /// Bytes of the open segment's parts so far.
    segment: BytesMut,
}

impl Rendition {
    /// Media time up to which units are queued.
    fn covered(&self) -> MediaTime {
        self.next_media
    }
}

/// The packager state machine. See the module docs.
#[derive(Debug)]
pub struct Packager {
    stream: String,
    mode: PlaylistMode,
    timeline: Timeline,
    renditions: Vec<Rendition>,
    /// Program time where the next part starts.
    next_start: ProgramTime,
    /// Program end, once known.
    end: Option<ProgramTime>,
    /// Parts per segment: with the part index, the `mfhd` sequence number.
    parts_per_segment: u32,
    part_target: u64,
    /// The multivariant playlist until it is published.
    index: Option<Bytes>,
}

impl Packager {
    /// Checks the configuration and starts at program time 0.
    pub fn new(cfg: PackagerConfig, specs: Vec<RenditionSpec>) -> Result<Self, PackagerError> {
        if !layout::valid_stream_name(&cfg.stream) {
            return Err(PackagerError::BadName(cfg.stream));
        }
        let part_target = cfg.timeline.part_target;
        for s in &specs {
            if !layout::valid_name(&s.name) {
                return Err(PackagerError::BadName(s.name.clone()));
            }
            let f = u64::from(s.frame_len);
            if f == 0 || !part_target.is_multiple_of(f) || !u64::from(s.delay).is_multiple_of(f) {
                return Err(PackagerError::Misaligned {
                    name: s.name.clone(),
                    part: part_target,
                    frame: s.frame_len,
                    delay: s.delay,
                });
            }
        }
        let mut timeline_cfg = cfg.timeline;
        if cfg.mode == PlaylistMode::Vod {
            timeline_cfg.window = None;
        }
        let variants: Vec<Variant> = specs
            .iter()
            .map(|spec| {
                let (bandwidth, average) = spec.bandwidth();
                Variant {
                    name: match spec.info {
                        CodecInfo::Aac { .. } => "AAC".into(),
                        CodecInfo::Opus { .. } => "Opus".into(),
                    },
                    uri: layout::variant_uri(&spec.name),
                    codecs: spec.codecs().to_string(),
                    bandwidth,
                    average_bandwidth: Some(average),
                    channels: spec.channels(),
                }
            })
            .collect();
        let index = Some(Bytes::from(hls::multivariant(&variants)?));
        let renditions = specs
            .into_iter()
            .map(|spec| Rendition {
                next_media: first_media_time(timeline_cfg.start, spec.delay),
                spec,
                queue: VecDeque::new(),
                segment: BytesMut::new(),
            })
            .collect();
        let next_start = timeline_cfg.start;
        let parts_per_segment = timeline_cfg.parts_per_segment;
        Ok(Self {
            stream: cfg.stream,
            mode: cfg.mode,
            timeline: timeline_cfg.build()?,
            renditions,
            next_start,
            end: None,
            parts_per_segment,
            part_target,
            index,
        })
    }

    /// How playlists are published.
    pub fn mode(&self) -> PlaylistMode {
        self.mode
    }

    /// The playlist state, for the origin and for tests.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Key of an object of rendition `r`.
    fn key(&self, r: usize, file: RenditionFile) -> String {
        ObjectKey::Rendition {
            path: RenditionPath {
                stream: self.stream.clone(),
                rendition: self.renditions[r].spec.name.clone(),
            },
            file,
        }
        .key()
    }

    /// Init segments of every rendition, and the silent segments of the
    /// timeline's gaps: the first batch of a broadcast, stored before any
    /// playlist names them. The multivariant playlist follows the first
    /// media playlists, so it never names a playlist that is not stored.
    pub fn start(&self) -> Result<Batch, PackagerError> {
        let inits = (0..self.renditions.len())
            .map(|r| {
                Ok(Op::Put(PutObject {
                    key: self.key(r, RenditionFile::Init),
                    body: init_segment(&self.renditions[r].spec)?,
                    kind: ObjectKind::Init,
                }))
            })
            .collect::<Result<Vec<Op>, PackagerError>>()?;
        let mut first = inits;
        first.extend(self.gap_segments()?);
        Ok(Batch {
            stages: vec![first],
        })
    }

    /// Appends the multivariant playlist as a last stage, once: after the
    /// media playlists it names are stored.
    fn announce(&mut self, stages: &mut Vec<Vec<Op>>) {
        if let Some(index) = self.index.take() {
            stages.push(vec![Op::Put(PutObject {
                key: ObjectKey::multivariant(&self.stream).key(),
                body: index,
                kind: ObjectKind::Multivariant,
            })]);
        }
    }

    /// Queues units of rendition `r` (in media-time order), draining `units`.
    pub fn push(&mut self, r: usize, units: &mut Vec<Packet>) -> Result<(), PackagerError> {
        let rendition = &mut self.renditions[r];
        for p in units.drain(..) {
            if p.media_time != rendition.next_media {
                return Err(PackagerError::Discontiguous {
                    name: rendition.spec.name.clone(),
                    expected: rendition.next_media,
                    got: p.media_time,
                });
            }
            rendition.next_media = rendition.next_media.plus(u64::from(p.duration));
            rendition.queue.push_back(p);
        }
        Ok(())
    }

    /// Cuts every part that all renditions have complete and returns the
    /// objects to publish, or `None` if no part is complete. `now` is the
    /// program time (for deleting segments that expired).
    pub fn poll(&mut self, now: ProgramTime) -> Result<Option<Batch>, PackagerError> {
        let mut media = Vec::new();
        let mut at = Vec::new();
        while let Some(end) = self.next_part_end() {
            self.cut_part(end, &mut media, &mut at)?;
        }
        if media.is_empty() {
            return Ok(None);
        }
        let mut stages = vec![media];
        if self.mode == PlaylistMode::Live {
            stages.push(at);
            stages.push(self.playlists(ObjectKind::LivePlaylist, None));
            self.announce(&mut stages);
            let deletes = self.expired(now);
            if !deletes.is_empty() {
                stages.push(deletes);
            }
        }
        Ok(Some(Batch { stages }))
    }

    /// Ends the broadcast at program time `end`: cuts the remaining parts
    /// (the last one short) and writes the final playlists with
    /// `EXT-X-ENDLIST`. The encoders must have been finished and their last
    /// units pushed.
    pub fn finish(&mut self, end: ProgramTime) -> Result<Batch, PackagerError> {
        self.end = Some(end.max(self.next_start));
        let mut media = Vec::new();
        let mut at = Vec::new();
        while let Some(part_end) = self.next_part_end() {
            self.cut_part(part_end, &mut media, &mut at)?;
        }
        self.timeline.finish();
        // The last part's `at/` playlist is the final state: render it again
        // now that the timeline is finished (EXT-X-ENDLIST, no preload hint).
        if self.mode == PlaylistMode::Live
            && !at.is_empty()
            && let Some(last) = self.timeline.last_part()
        {
            at.truncate(at.len() - self.renditions.len());
            at.extend(self.playlists(ObjectKind::PartPlaylist, Some(last)));
        }
        // `finish` closes a short open segment: store it too.
        if self.renditions.iter().any(|r| !r.segment.is_empty())
            && let Some(msn) = self.last_closed_msn()
        {
            for r in 0..self.renditions.len() {
                media.push(self.segment_op(r, msn));
            }
        }
        let mut stages = vec![media];
        if self.mode == PlaylistMode::Live {
            stages.push(at);
        }
        stages.push(self.playlists(ObjectKind::LivePlaylist, None));
        self.announce(&mut stages);
        stages.retain(|s| !s.is_empty());
        Ok(Batch { stages })
    }

    /// The `mfhd` sequence number (ISO/IEC 14496-12 §8.8.5) of a part:
    /// counted from 1 at part 0 of segment 0 of the stream's timeline, so it
    /// increases across restarts and every process computes the same one
    /// (wrapping after 2^32 parts, over 40 years of 320 ms parts).
    fn sequence_number(&self, msn: u64, part: u32) -> u32 {
        sequence_number(msn, part, self.parts_per_segment)
    }

    /// What the live publisher stores under a segment its backlog had to
    /// shed during a long store outage (see [`crate::publish::Backlog`]):
    /// the rendition's silence over the segment's nominal span on the
    /// stream's wall-clock-locked timeline (segment `n` starts at `n` × the
    /// nominal segment duration).
    pub fn gap_filler(&self) -> GapFiller {
        let stream = self.stream.clone();
        let pps = self.parts_per_segment;
        let segment = self.part_target * u64::from(pps);
        let specs: Vec<RenditionSpec> = self.renditions.iter().map(|r| r.spec.clone()).collect();
        Arc::new(move |path: &RenditionPath, msn: u64| {
            if path.stream != stream {
                return None;
            }
            let spec = specs.iter().find(|s| s.name == path.rendition)?;
            let start = ProgramTime::from_samples(msn.checked_mul(segment)?);
            silent_segment(spec, sequence_number(msn, 0, pps), start, segment).ok()
        })
    }

    /// The silent segments the timeline lists as gaps (see
    /// [`hls::TimelineConfig::earlier`]): one fragment of the silent unit
    /// repeated over each gap's span, so a player that ignores
    /// `EXT-X-GAP` (ffmpeg) reads silence on the stream's timeline.
    fn gap_segments(&self) -> Result<Vec<Op>, PackagerError> {
        let mut ops = Vec::new();
        for (msn, start, duration) in self.timeline.gaps() {
            for (r, rendition) in self.renditions.iter().enumerate() {
                let body = silent_segment(
                    &rendition.spec,
                    self.sequence_number(msn, 0),
                    start,
                    duration,
                )?;
                ops.push(Op::Put(PutObject {
                    key: self.key(r, RenditionFile::Segment(msn)),
                    body,
                    kind: ObjectKind::Media,
                }));
            }
        }
        Ok(ops)
    }

    fn last_closed_msn(&self) -> Option<u64> {
        self.timeline.last_part().map(|p| p.msn)
    }

    /// Program end of the next part if every rendition has its units.
    fn next_part_end(&self) -> Option<ProgramTime> {
        if self.timeline.is_finished() {
            return None;
        }
        let nominal = self.next_start.plus(self.part_target);
        let end = match self.end {
            Some(e) if e <= self.next_start => return None,
            Some(e) => nominal.min(e),
            None => nominal,
        };
        let complete = self.renditions.iter().all(|r| {
            let f = u64::from(r.spec.frame_len);
            let needed = end.media(r.spec.delay).samples().div_ceil(f) * f;
            r.covered().samples() >= needed
        });
        complete.then_some(end)
    }

    fn cut_part(
        &mut self,
        end: ProgramTime,
        media: &mut Vec<Op>,
        at: &mut Vec<Op>,
    ) -> Result<(), PackagerError> {
        let id = self
            .timeline
            .next_part()
            .ok_or(hls::TimelineError::Finished)?;
        let duration = end.since(self.next_start);
        let sequence = self.sequence_number(id.msn, id.part);
        let last = self.end == Some(end);
        let mut parts = Vec::with_capacity(self.renditions.len());
        for rendition in &mut self.renditions {
            let boundary = end.media(rendition.spec.delay);
            let mut samples = Vec::with_capacity(24);
            let base = rendition
                .queue
                .front()
                .map_or(MediaTime::ZERO, |p| p.media_time);
            while let Some(p) = rendition.queue.front() {
                if p.media_time >= boundary {
                    break;
                }
                let p = rendition.queue.pop_front().expect("front exists");
                // The program's last unit decodes past the end: its sample
                // duration stops at the end (ISO/IEC 14496-12 §8.8.8), so a
                // player that trims to sample durations ends exactly there.
                let duration = if last {
                    boundary.since(p.media_time).min(u64::from(p.duration)) as u32
                } else {
                    p.duration
                };
                samples.push(cmaf::Sample {
                    duration,
                    data: p.data,
                });
            }
            let mut bytes = BytesMut::new();
            if id.part == 0 {
                bytes.extend_from_slice(&cmaf::styp());
            }
            // `cmaf` imports nothing from the crate (tests/layers.rs): it
            // takes the raw `tfdt` value.
            bytes.extend_from_slice(&cmaf::fragment(
                sequence,
                TRACK_ID,
                base.samples(),
                &samples,
            )?);
            let bytes = bytes.freeze();
            rendition.segment.extend_from_slice(&bytes);
            parts.push(bytes);
        }
        let pushed = self.timeline.push_part(duration)?;
        debug_assert_eq!(pushed, id);
        self.next_start = end;
        let closed = self
            .timeline
            .next_part()
            .is_some_and(|next| next.msn != id.msn);
        for (r, bytes) in parts.into_iter().enumerate() {
            if self.mode == PlaylistMode::Live {
                media.push(Op::Put(PutObject {
                    key: self.key(r, RenditionFile::Part(id)),
                    body: bytes,
                    kind: ObjectKind::Media,
                }));
            }
            if closed {
                media.push(self.segment_op(r, id.msn));
            }
        }
        if self.mode == PlaylistMode::Live {
            at.extend(self.playlists(ObjectKind::PartPlaylist, Some(id)));
        }
        Ok(())
    }

    /// Takes the open segment's bytes of rendition `r` as segment `msn`.
    fn segment_op(&mut self, r: usize, msn: u64) -> Op {
        let body = std::mem::take(&mut self.renditions[r].segment).freeze();
        Op::Put(PutObject {
            key: self.key(r, RenditionFile::Segment(msn)),
            body,
            kind: ObjectKind::Media,
        })
    }

    /// The media playlist of rendition `r` as it stands. Rendition reports
    /// appear once every `live.m3u8` they name is stored (that is, once the
    /// multivariant playlist, which follows them, has been published).
    pub fn media_playlist(&self, r: usize) -> MediaPlaylist {
        let reports: Vec<RenditionReport> = match self.timeline.last_part() {
            Some(last) if self.mode == PlaylistMode::Live && self.index.is_none() => self
                .renditions
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != r)
                .map(|(_, o)| RenditionReport::at(layout::report_uri(&o.spec.name), last))
                .collect(),
            _ => Vec::new(),
        };
        let mut playlist = self
            .timeline
            .media_playlist(layout::rendition_names(), &reports);
        if self.mode == PlaylistMode::Vod {
            to_vod(&mut playlist);
        }
        playlist
    }

    /// Playlist objects of every rendition: `live.m3u8` or, with `at`, the
    /// immutable `at/{msn}.{part}.m3u8`.
    fn playlists(&self, kind: ObjectKind, at: Option<PartId>) -> Vec<Op> {
        (0..self.renditions.len())
            .map(|r| {
                let file = match at {
                    Some(id) => RenditionFile::At(id),
                    None => RenditionFile::Live,
                };
                Op::Put(PutObject {
                    key: self.key(r, file),
                    body: Bytes::from(self.media_playlist(r).render()),
                    kind,
                })
            })
            .collect()
    }

    /// Deletions for segments that left the window long enough ago.
    fn expired(&mut self, now: ProgramTime) -> Vec<Op> {
        let mut ops = Vec::new();
        for seg in self.timeline.take_expired(now) {
            for r in 0..self.renditions.len() {
                ops.push(Op::Delete(self.key(r, RenditionFile::Segment(seg.msn))));
                for part in 0..seg.parts {
                    let id = PartId { msn: seg.msn, part };
                    ops.push(Op::Delete(self.key(r, RenditionFile::Part(id))));
                    ops.push(Op::Delete(self.key(r, RenditionFile::At(id))));
                }
            }
        }
        ops
    }
}

/// The `mfhd` sequence number of part `part` of segment `msn`, see
/// [`Packager::sequence_number`].
fn sequence_number(msn: u64, part: u32, parts_per_segment: u32) -> u32 {
    msn.wrapping_mul(u64::from(parts_per_segment))
        .wrapping_add(u64::from(part))
        .wrapping_add(1) as u32
}

/// A segment of `spec`'s silence over `duration` samples from `start`: one
/// fragment of its silent unit repeated (see [`RenditionSpec::silence`]).
fn silent_segment(
    spec: &RenditionSpec,
    sequence: u32,
    start: ProgramTime,
    duration: u64,
) -> Result<Bytes, PackagerError> {
    if spec.silence.is_empty() {
        return Err(PackagerError::NoSilence(spec.name.clone()));
    }
    let frame = u64::from(spec.frame_len);
    let samples: Vec<cmaf::Sample> = (0..duration.div_ceil(frame))
        .map(|_| cmaf::Sample {
            duration: spec.frame_len,
            data: spec.silence.clone(),
        })
        .collect();
    let mut body = BytesMut::new();
    body.extend_from_slice(&cmaf::styp());
    body.extend_from_slice(&cmaf::fragment(
        sequence,
        TRACK_ID,
        start.media(spec.delay).samples(),
        &samples,
    )?);
    Ok(body.freeze())
}

/// Media time of a rendition's first unit in a run that starts at program
/// time `start`. A stream's first run keeps the encoder's priming units
/// (media time 0 to `delay`), which the init segment's edit list and the
/// Opus pre-skip hide. Those apply at the start of the track only, so a run
/// that continues a stream drops its priming and starts exactly at `start`
/// on the media timeline.
pub fn first_media_time(start: ProgramTime, delay: u32) -> MediaTime {
    if start == ProgramTime::ZERO {
        MediaTime::ZERO
    } else {
        start.media(delay)
    }
}

/// Strips the live-edge machinery from a finished recording's playlist.
fn to_vod(p: &mut MediaPlaylist) {
    p.playlist_type = Some(PlaylistType::Vod);
    p.server_control = None;
    p.part_target = None;
    p.preload_hint = None;
    p.rendition_reports.clear();
    p.open = None;
    for s in &mut p.segments {
        s.parts.clear();
    }
}

/// The CMAF header of a rendition.
fn init_segment(spec: &RenditionSpec) -> Result<Bytes, cmaf::Error> {
    let codec = match &spec.info {
        // The delay doubles as the `dOps` PreSkip.
        CodecInfo::Opus { channels, .. } => cmaf::Codec::Opus {
            channels: *channels,
            input_sample_rate: crate::time::SAMPLE_RATE,
        },
        CodecInfo::Aac {
            channels,
            audio_specific_config,
            bitrate,
        } => cmaf::Codec::Aac {
            audio_specific_config: audio_specific_config.clone(),
            channels: *channels,
            avg_bitrate: *bitrate,
            max_bitrate: *bitrate,
        },
    };
    cmaf::init_segment(&cmaf::TrackConfig {
        track_id: TRACK_ID,
        timescale: crate::time::SAMPLE_RATE,
        codec,
        delay: spec.delay,
        language: cmaf::Language::UNDETERMINED,
    })
}
