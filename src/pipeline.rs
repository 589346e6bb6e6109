//! The packaging pipeline: hosts → mixer → encoders → packager. File hosts
//! are decoded here; live hosts arrive as [`IngestEvent`]s and are mixed
//! through the [`Studio`]. Synchronous and clock-free: the caller says how
//! far program time should advance ([`Pipeline::advance`]) and gets publish
//! batches back. The drivers in [`crate::run`] pace it by the CPU
//! (`onair package`) or by the wall clock (`onair live`).

use std::time::Duration;

use cpu_time::ThreadTime;

use crate::audio::{
    FeedConfig, FeedId, FileSource, LiveFeedConfig, Mixer, MixerConfig, SourceError,
};
use crate::encode::{
    AacConfig, AacEncoder, AudioEncoder, EncodeError, OpusConfig, OpusEncoder, Packet, silent_unit,
};
use crate::ingest::ReturnPacket;
use crate::ingest::{Close, IngestEvent};
use crate::packager::{
    Packager, PackagerConfig, PackagerError, PlaylistMode, RenditionSpec, first_media_time,
};
use crate::publish::Batch;
use crate::returns::{ReturnConfig, Returns, Talkback};
use crate::studio::{Command, CommandError, HostInfo, HostKind, Studio};
use crate::time::{MediaTime, ProgramTime};

/// Longest block mixed and encoded at once: one part (320 ms). Smaller steps
/// follow the caller's pacing (20 ms in a live run).
const MAX_BLOCK: u64 = 15_360;

/// Block size with parallel encoders: ten parts (3.2 s), so handing a block to
/// the encoder threads costs next to nothing against encoding it.
const PARALLEL_BLOCK: u64 = 10 * MAX_BLOCK;

/// Settings of a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Opus rendition settings.
    pub opus: OpusConfig,
    /// AAC rendition settings.
    pub aac: AacConfig,
    /// Mixer and limiter settings.
    pub mixer: MixerConfig,
    /// Stream, timing and publishing mode.
    pub packager: PackagerConfig,
    /// Encode the renditions on parallel threads (for `package`, where wall
    /// time matters; a live run has time to spare and keeps one thread).
    pub parallel: bool,
    /// Hosts' return feeds.
    pub returns: ReturnConfig,
}

/// A file host: a decoded source feeding one mixer input.
pub struct FileHost {
    /// Mixer settings of the host (name, gain, mute).
    pub feed: FeedConfig,
    /// The decoded, resampled file.
    pub source: FileSource,
}

/// Why the pipeline stopped. Source errors name the file; the rest are
/// configuration or codec failures that end the run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A host's file could not be decoded.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// An encoder failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Packaging failed.
    #[error(transparent)]
    Package(#[from] PackagerError),
    /// A host could not be added (a duplicate name, a bad live feed
    /// configuration).
    #[error("host {name:?}: {reason}")]
    Host {
        /// The host's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Places an encoder's units, timed from the encoder's own start, on the
/// stream's media timeline.
#[derive(Debug, Clone, Copy)]
struct EncoderOutput {
    /// Program time of the encoder's first input sample.
    offset: u64,
    /// Units before this media time are priming, dropped.
    drop_below: MediaTime,
}

impl EncoderOutput {
    fn place(&self, units: &mut Vec<Packet>) {
        for unit in units.iter_mut() {
            unit.media_time = unit.media_time.plus(self.offset);
        }
        units.retain(|u| u.media_time >= self.drop_below);
    }
}

struct Host {
    source: FileSource,
    feed: FeedId,
    /// Program time at which the host's file ended, once known.
    ended_at: Option<ProgramTime>,
}

/// The file pipeline state machine.
pub struct Pipeline {
    mixer: Mixer,
    hosts: Vec<Host>,
    studio: Studio,
    encoders: Vec<Box<dyn AudioEncoder>>,
    packager: Packager,
    mix: Vec<f32>,
    /// Most samples mixed and encoded at once.
    block: u64,
    /// Units each encoder produced for the block being packaged.
    rendition_units: Vec<Vec<Packet>>,
    /// Where each encoder's units sit on the stream's media timeline.
    outputs: Vec<EncoderOutput>,
    /// Program time of the run's first sample.
    start: ProgramTime,
    parallel: bool,
    times: StageTimes,
    returns: Returns,
}

/// CPU time spent per stage (thread CPU time, so the figures hold on a busy
/// machine).
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    /// Decoding and resampling host files.
    pub decode: Lap,
    /// Mixing and limiting.
    pub mix: Lap,
    /// Encoding, CPU time of the pipeline thread (with parallel encoders it
    /// encodes one rendition; the others run on their own threads).
    pub encode: Lap,
    /// Encoding, summed over every rendition's encoder.
    pub encode_all: Lap,
    /// CMAF fragments, playlists, publish batches.
    pub package: Lap,
    /// Encoding hosts' return feeds.
    pub returns: Lap,
}

/// An accumulated duration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Lap(pub Duration);

impl Lap {
    /// Adds the thread CPU time since `since` and returns now, for the next
    /// lap.
    fn lap(&mut self, since: ThreadTime) -> ThreadTime {
        let now = ThreadTime::now();
        self.0 += now.duration_since(since);
        now
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("clock", &self.mixer.clock())
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

/// Folder names of the renditions, in multivariant order.
pub const RENDITIONS: [&str; 2] = ["aac", "opus"];

impl Pipeline {
    /// Opens the encoders and the packager and adds every host to the mix.
    pub fn new(cfg: PipelineConfig, hosts: Vec<FileHost>) -> Result<Self, PipelineError> {
        let aac = AacEncoder::new(&cfg.aac)?;
        let opus = OpusEncoder::new(&cfg.opus)?;
        let specs = vec![
            RenditionSpec::of(RENDITIONS[0], &aac, cfg.aac.bitrate)
                .with_silence(silent_unit(&mut AacEncoder::new(&cfg.aac)?)?),
            RenditionSpec::of(RENDITIONS[1], &opus, cfg.opus.bitrate)
                .with_silence(silent_unit(&mut OpusEncoder::new(&cfg.opus)?)?),
        ];
        let start = cfg.packager.timeline.start;
        let packager = Packager::new(cfg.packager, specs)?;
        let mixer = Mixer::new(cfg.mixer).starting_at(start);
        // A run that starts mid-stream cannot lean on the init segment's
        // edit list or the Opus pre-skip, which apply at the track's start
        // only: each encoder primes on silence and its priming output (the
        // units before the first program sample) is dropped, so both
        // renditions carry exactly the program from `start` on.
        let outputs = [&aac as &dyn AudioEncoder, &opus]
            .iter()
            .map(|e| EncoderOutput {
                offset: start.samples(),
                drop_below: first_media_time(start, e.delay()),
            })
            .collect();
        let mut pipeline = Self {
            mixer,
            hosts: Vec::with_capacity(hosts.len()),
            studio: Studio::new(),
            encoders: vec![Box::new(aac), Box::new(opus)],
            packager,
            mix: Vec::with_capacity(MAX_BLOCK as usize * 2),
            block: if cfg.parallel {
                PARALLEL_BLOCK
            } else {
                MAX_BLOCK
            },
            rendition_units: (0..2).map(|_| Vec::with_capacity(32)).collect(),
            outputs,
            start,
            parallel: cfg.parallel,
            times: StageTimes::default(),
            returns: Returns::new(cfg.returns).map_err(|reason| PipelineError::Host {
                name: "returns".into(),
                reason,
            })?,
        };
        for host in hosts {
            pipeline.add_file(host, HostKind::File)?;
        }
        Ok(pipeline)
    }

    fn add_file(&mut self, host: FileHost, kind: HostKind) -> Result<(), PipelineError> {
        self.check_name(&host.feed.name)?;
        let name = host.feed.name.clone();
        let feed = self.mixer.add_feed(host.feed);
        self.studio.add_file(&name, kind, feed);
        self.hosts.push(Host {
            source: host.source,
            feed,
            ended_at: None,
        });
        Ok(())
    }

    fn check_name(&self, name: &str) -> Result<(), PipelineError> {
        match self
            .studio
            .hosts(&self.mixer)
            .iter()
            .any(|h| h.name == name)
        {
            true => Err(PipelineError::Host {
                name: name.to_owned(),
                reason: "another host has this name".into(),
            }),
            false => Ok(()),
        }
    }

    /// Adds the hold music: a file host (open it looping) that is ducked out
    /// while a live host is on air.
    pub fn add_hold(&mut self, host: FileHost) -> Result<(), PipelineError> {
        self.add_file(host, HostKind::Hold)
    }

    /// Adds a live host, silent until a session for it sends audio (see
    /// [`Studio`]). A pipeline with live hosts never ends by itself.
    pub fn add_live_host(
        &mut self,
        feed: FeedConfig,
        live: LiveFeedConfig,
    ) -> Result<(), PipelineError> {
        let name = feed.name.clone();
        self.check_name(&name)?;
        self.studio
            .add_live(&mut self.mixer, feed, live)
            .map_err(|reason| PipelineError::Host { name, reason })
    }

    /// Enables producer talkback (see [`Studio::enable_talkback`]).
    pub fn enable_talkback(&mut self, live: LiveFeedConfig) -> Result<(), PipelineError> {
        self.studio
            .enable_talkback(&mut self.mixer, live)
            .map_err(|reason| PipelineError::Host {
                name: "talkback".into(),
                reason,
            })
    }

    /// Takes an ingest event for the live hosts.
    pub fn ingest(&mut self, event: IngestEvent) {
        self.studio.ingest(event);
    }

    /// Carries out a control command on the hosts.
    pub fn command(&mut self, command: Command) -> Result<Vec<HostInfo>, CommandError> {
        self.studio.command(&mut self.mixer, command)
    }

    /// Return feed packets completed so far, for the ingest sessions that
    /// listen (see [`crate::returns`]).
    pub fn take_returns(&mut self) -> std::vec::Drain<'_, ReturnPacket> {
        self.returns.drain()
    }

    /// Ingest sessions the studio wants closed (see [`Studio::take_closes`]).
    pub fn take_closes(&mut self) -> Vec<Close> {
        self.studio.take_closes()
    }

    /// The first batch: init segments and the multivariant playlist.
    pub fn start(&self) -> Result<Batch, PipelineError> {
        Ok(self.packager.start()?)
    }

    /// Program time mixed so far.
    pub fn clock(&self) -> ProgramTime {
        self.mixer.clock()
    }

    /// The packager, for its timeline and playlists.
    pub fn packager(&self) -> &Packager {
        &self.packager
    }

    /// Program time at which every host has ended, once all have (never for
    /// looping hosts or live hosts): where a `package` run ends.
    pub fn content_end(&self) -> Option<ProgramTime> {
        if self.studio.has_live_hosts() {
            return None;
        }
        self.hosts
            .iter()
            .map(|h| h.ended_at)
            .try_fold(self.start, |end, e| e.map(|e| end.max(e)))
    }

    /// Decodes ahead so every host has `n` samples queued past the clock, or
    /// has ended.
    fn feed(&mut self, n: u64) -> Result<(), PipelineError> {
        let t = ThreadTime::now();
        for host in &mut self.hosts {
            while host.ended_at.is_none() && self.mixer.buffered(host.feed) < n {
                match host.source.next_block()? {
                    // A file host starts with the run, so a block's
                    // position in the file is its time since the start.
                    Some(block) => {
                        self.mixer
                            .push(host.feed, self.start.plus(block.pts), &block.samples)
                    }
                    None => {
                        let queued = self.mixer.clock().plus(self.mixer.buffered(host.feed));
                        host.ended_at = Some(queued);
                    }
                }
            }
        }
        let until = self.mixer.clock().plus(n);
        self.studio.pull(until, &mut self.mixer);
        self.times.decode.lap(t);
        Ok(())
    }

    /// Mixes, encodes and packages program time up to `until` (capped at the
    /// content end once every host has ended). Returns what to publish.
    pub fn advance(&mut self, until: ProgramTime) -> Result<Option<Batch>, PipelineError> {
        let mut out: Option<Batch> = None;
        while self.mixer.clock() < until {
            let mut n = until.since(self.mixer.clock()).min(self.block);
            self.feed(n)?;
            if let Some(end) = self.content_end() {
                n = n.min(end.since(self.mixer.clock()));
                if n == 0 {
                    break;
                }
            }
            let t = ThreadTime::now();
            let block_start = self.mixer.clock();
            self.mix.clear();
            self.mixer.mix(n as usize, &mut self.mix);
            let t = self.times.mix.lap(t);
            let listeners = self.studio.listeners();
            if !listeners.is_empty() || !self.returns.is_idle() {
                let talkback = self.studio.talkback_to().and_then(|to| {
                    Some(Talkback {
                        audio: self.mixer.cue()?,
                        to,
                    })
                });
                self.returns
                    .push(&self.mixer, &self.mix, block_start, listeners, talkback);
            }
            let t = self.times.returns.lap(t);
            self.encode()?;
            let t = self.times.encode.lap(t);
            if let Some(batch) = self.packager.poll(self.mixer.clock())? {
                match &mut out {
                    Some(o) => merge(o, batch, self.packager.mode()),
                    None => out = Some(batch),
                }
            }
            self.times.package.lap(t);
        }
        Ok(out)
    }

    /// Encodes the mixed block in every rendition and queues the units for
    /// the packager. With [`PipelineConfig::parallel`] the renditions encode
    /// on their own threads: the codecs are nearly all of the work.
    fn encode(&mut self) -> Result<(), PipelineError> {
        let mix = &self.mix;
        if self.parallel && self.encoders.len() > 1 {
            let results: Vec<(Result<(), EncodeError>, Duration)> = std::thread::scope(|scope| {
                let (first, rest) = self.encoders.split_at_mut(1);
                let (first_units, rest_units) = self.rendition_units.split_at_mut(1);
                let handles: Vec<_> = rest
                    .iter_mut()
                    .zip(rest_units.iter_mut())
                    .map(|(enc, units)| scope.spawn(move || timed_push(enc.as_mut(), mix, units)))
                    .collect();
                let mut results = vec![timed_push(first[0].as_mut(), mix, &mut first_units[0])];
                for h in handles {
                    results.push(h.join().unwrap_or_else(|_| {
                        (
                            Err(EncodeError::Encode {
                                codec: "unknown",
                                media_time: MediaTime::ZERO,
                                reason: "encoder thread panicked".into(),
                            }),
                            Duration::ZERO,
                        )
                    }));
                }
                results
            });
            for (r, spent) in results {
                self.times.encode_all.0 += spent;
                r?;
            }
        } else {
            for (enc, units) in self.encoders.iter_mut().zip(&mut self.rendition_units) {
                let (r, spent) = timed_push(enc.as_mut(), mix, units);
                self.times.encode_all.0 += spent;
                r?;
            }
        }
        for (r, units) in self.rendition_units.iter_mut().enumerate() {
            self.outputs[r].place(units);
            self.packager.push(r, units)?;
        }
        Ok(())
    }

    /// Where the pipeline thread spent its time so far.
    pub fn stage_times(&self) -> StageTimes {
        self.times
    }

    /// Ends the program at the current clock: flushes the encoders and
    /// returns the last media and the final playlists.
    pub fn finish(&mut self) -> Result<Batch, PipelineError> {
        for (r, enc) in self.encoders.iter_mut().enumerate() {
            enc.finish(&mut self.rendition_units[r])?;
            self.outputs[r].place(&mut self.rendition_units[r]);
            self.packager.push(r, &mut self.rendition_units[r])?;
        }
        Ok(self.packager.finish(self.mixer.clock())?)
    }
}

/// Runs one encoder on a block and measures how long it took.
fn timed_push(
    enc: &mut dyn AudioEncoder,
    pcm: &[f32],
    units: &mut Vec<Packet>,
) -> (Result<(), EncodeError>, Duration) {
    let t = ThreadTime::now();
    let r = enc.push(pcm, units);
    (r, t.elapsed())
}

/// Appends `next` to `into` so that it runs after it. Live batches keep their
/// stage order (media, then the playlists naming it); a recording's batches
/// hold only media, which may all go at once.
fn merge(into: &mut Batch, next: Batch, mode: PlaylistMode) {
    match (mode, into.stages.last_mut()) {
        (PlaylistMode::Vod, Some(last)) => last.extend(next.stages.into_iter().flatten()),
        _ => into.stages.extend(next.stages),
    }
}
