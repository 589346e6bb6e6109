//! The packaging pipeline for file hosts: sources → mixer → encoders →
//! packager. Synchronous and clock-free: the caller says how far program time
//! should advance ([`Pipeline::advance`]) and gets publish batches back. The
//! drivers in [`crate::run`] pace it by the CPU (`onair package`) or by the
//! wall clock (`onair live`).

use std::time::Duration;

use cpu_time::ThreadTime;

use crate::audio::{FeedConfig, FeedId, FileSource, Mixer, MixerConfig, SourceError};
use crate::encode::{
    AacConfig, AacEncoder, AudioEncoder, EncodeError, OpusConfig, OpusEncoder, Packet,
};
use crate::packager::{Packager, PackagerConfig, PackagerError, PlaylistMode, RenditionSpec};
use crate::publish::Batch;

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
}

struct Host {
    source: FileSource,
    feed: FeedId,
    /// Program time at which the host's file ended, once known.
    ended_at: Option<u64>,
}

/// The file pipeline state machine.
pub struct Pipeline {
    mixer: Mixer,
    hosts: Vec<Host>,
    encoders: Vec<Box<dyn AudioEncoder>>,
    packager: Packager,
    mix: Vec<f32>,
    /// Most samples mixed and encoded at once.
    block: u64,
    /// Units each encoder produced for the block being packaged.
    rendition_units: Vec<Vec<Packet>>,
    parallel: bool,
    times: StageTimes,
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
            RenditionSpec::of(RENDITIONS[0], &aac, cfg.aac.bitrate),
            RenditionSpec::of(RENDITIONS[1], &opus, cfg.opus.bitrate),
        ];
        let packager = Packager::new(cfg.packager, specs)?;
        let mut mixer = Mixer::new(cfg.mixer);
        let hosts = hosts
            .into_iter()
            .map(|h| Host {
                feed: mixer.add_feed(h.feed),
                source: h.source,
                ended_at: None,
            })
            .collect();
        Ok(Self {
            mixer,
            hosts,
            encoders: vec![Box::new(aac), Box::new(opus)],
            packager,
            mix: Vec::with_capacity(MAX_BLOCK as usize * 2),
            block: if cfg.parallel {
                PARALLEL_BLOCK
            } else {
                MAX_BLOCK
            },
            rendition_units: (0..2).map(|_| Vec::with_capacity(32)).collect(),
            parallel: cfg.parallel,
            times: StageTimes::default(),
        })
    }

    /// The first batch: init segments and the multivariant playlist.
    pub fn start(&self) -> Result<Batch, PipelineError> {
        Ok(self.packager.start()?)
    }

    /// Program time mixed so far.
    pub fn clock(&self) -> u64 {
        self.mixer.clock()
    }

    /// The packager, for its timeline and playlists.
    pub fn packager(&self) -> &Packager {
        &self.packager
    }

    /// The mixer, for levels and host control.
    pub fn mixer_mut(&mut self) -> &mut Mixer {
        &mut self.mixer
    }

    /// Program time at which every host has ended, once all have (never for
    /// looping hosts): where a `package` run ends.
    pub fn content_end(&self) -> Option<u64> {
        self.hosts
            .iter()
            .map(|h| h.ended_at)
            .try_fold(0, |end, e| e.map(|e| end.max(e)))
    }

    /// Decodes ahead so every host has `n` samples queued past the clock, or
    /// has ended.
    fn feed(&mut self, n: u64) -> Result<(), PipelineError> {
        let t = ThreadTime::now();
        for host in &mut self.hosts {
            while host.ended_at.is_none() && self.mixer.buffered(host.feed) < n {
                match host.source.next_block()? {
                    Some(block) => self.mixer.push(host.feed, block.pts, &block.samples),
                    None => {
                        let queued = self.mixer.clock() + self.mixer.buffered(host.feed);
                        host.ended_at = Some(queued);
                    }
                }
            }
        }
        self.times.decode.lap(t);
        Ok(())
    }

    /// Mixes, encodes and packages program time up to `until` (capped at the
    /// content end once every host has ended). Returns what to publish.
    pub fn advance(&mut self, until: u64) -> Result<Option<Batch>, PipelineError> {
        let mut out: Option<Batch> = None;
        while self.mixer.clock() < until {
            let mut n = (until - self.mixer.clock()).min(self.block);
            self.feed(n)?;
            if let Some(end) = self.content_end() {
                n = n.min(end.saturating_sub(self.mixer.clock()));
                if n == 0 {
                    break;
                }
            }
            let t = ThreadTime::now();
            self.mix.clear();
            self.mixer.mix(n as usize, &mut self.mix);
            let t = self.times.mix.lap(t);
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
                                media_time: 0,
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
