//! The packaging pipeline for file hosts: sources → mixer → encoders →
//! packager. Synchronous and clock-free: the caller says how far program time
//! should advance ([`Pipeline::advance`]) and gets publish batches back. The
//! drivers in [`crate::run`] pace it by the CPU (`onair package`) or by the
//! wall clock (`onair live`).

use crate::audio::{FeedConfig, FeedId, FileSource, Mixer, MixerConfig, SourceError};
use crate::encode::{
    AacConfig, AacEncoder, AudioEncoder, EncodeError, OpusConfig, OpusEncoder, Packet,
};
use crate::packager::{Packager, PackagerConfig, PackagerError, PlaylistMode, RenditionSpec};
use crate::publish::Batch;

/// Longest block mixed and encoded at once: one part (320 ms). Smaller steps
/// follow the caller's pacing (20 ms in a live run).
const MAX_BLOCK: u64 = 15_360;

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
    units: Vec<Packet>,
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
            units: Vec::with_capacity(32),
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
        Ok(())
    }

    /// Mixes, encodes and packages program time up to `until` (capped at the
    /// content end once every host has ended). Returns what to publish.
    pub fn advance(&mut self, until: u64) -> Result<Option<Batch>, PipelineError> {
        let mut out: Option<Batch> = None;
        while self.mixer.clock() < until {
            let mut n = (until - self.mixer.clock()).min(MAX_BLOCK);
            self.feed(n)?;
            if let Some(end) = self.content_end() {
                n = n.min(end.saturating_sub(self.mixer.clock()));
                if n == 0 {
                    break;
                }
            }
            self.mix.clear();
            self.mixer.mix(n as usize, &mut self.mix);
            for (r, enc) in self.encoders.iter_mut().enumerate() {
                enc.push(&self.mix, &mut self.units)?;
                self.packager.push(r, &mut self.units)?;
            }
            if let Some(batch) = self.packager.poll(self.mixer.clock())? {
                match &mut out {
                    Some(o) => merge(o, batch, self.packager.mode()),
                    None => out = Some(batch),
                }
            }
        }
        Ok(out)
    }

    /// Ends the program at the current clock: flushes the encoders and
    /// returns the last media and the final playlists.
    pub fn finish(&mut self) -> Result<Batch, PipelineError> {
        for (r, enc) in self.encoders.iter_mut().enumerate() {
            enc.finish(&mut self.units)?;
            self.packager.push(r, &mut self.units)?;
        }
        Ok(self.packager.finish(self.mixer.clock())?)
    }
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
