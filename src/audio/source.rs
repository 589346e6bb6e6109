//! Audio files as program-format feeds.
//!
//! [`FileSource`] decodes a WAV, FLAC, MP3, AAC (ADTS) or MP4/M4A file with
//! Symphonia and converts it with a [`Converter`] to 48 kHz interleaved
//! stereo. [`FileSource::next_block`] yields [`PcmBlock`]s whose `pts` counts
//! program frames from 0 at the start of the file, without gaps: each block
//! starts where the previous one ended.
//!
//! # Length
//! A file of `n` decoded frames at rate `r` yields exactly
//! `round(n × 48000 / r)` program frames ([`Converter::output_len`]). Encoder
//! delay and padding that the container declares (the LAME/Xing tag of an
//! MP3) are trimmed by Symphonia's gapless mode before counting.
//!
//! # Looping
//! With [`SourceOptions::looping`] the file is read again from its start each
//! time it ends, and the decoded passes run through one converter without a
//! break: the result is the resampled endless loop, with continuous `pts` and
//! no gap or click added at the seam. (A file at 48 kHz repeats bit-exactly;
//! at other rates a pass is not a whole number of program frames, so the seam
//! moves by a fraction of a frame each pass instead of being rounded.)
//!
//! # Errors
//! Opening fails with a [`SourceError`] that names the file. While reading:
//! - a packet the decoder rejects ([`SourceError::CorruptPacket`]) is
//!   replaced by silence of its duration, so timing holds, and reported;
//!   calling `next_block` again continues after it;
//! - a stream that ends before the length its header declares
//!   ([`SourceError::Truncated`]) is reported after the audio that was there;
//!   the next call ends the stream (or starts the next pass when looping).
//!   Only WAV PCM and FLAC declare an exact length; the lengths MP3 and ADTS
//!   headers give are estimates and are not checked.
//! - an I/O error ([`SourceError::Unreadable`]) ends the stream.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use symphonia::core::audio::{Channels, SampleBuffer, SignalSpec};
use symphonia::core::codecs::{self, CodecType, Decoder, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::audio::resample::{ChannelLayout, ConvertError, Converter, Speaker};
use crate::time::{CHANNELS, SAMPLE_RATE, seconds_text};

/// Program frames a block holds at least (except the last): 100 ms.
const BLOCK_FRAMES: usize = SAMPLE_RATE as usize / 10;

/// What went wrong with an audio file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file does not exist: check the path.
    #[error("{}: no such file", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions, I/O error): fix
    /// access or replace the file.
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not in a supported audio format (WAV, FLAC, MP3, AAC in
    /// ADTS, MP4/M4A), or its container header is malformed: reject it.
    #[error("{}: not a supported audio file (WAV, FLAC, MP3, AAC, MP4/M4A): {reason}", path.display())]
    NotAudio {
        /// The file.
        path: PathBuf,
        /// What the demuxer said.
        reason: String,
    },
    /// The container holds no audio track: reject it.
    #[error("{}: no audio track", path.display())]
    NoAudioTrack {
        /// The file.
        path: PathBuf,
    },
    /// The audio track uses a codec that is not supported: re-encode it.
    #[error("{}: unsupported codec {codec}", path.display())]
    UnsupportedCodec {
        /// The file.
        path: PathBuf,
        /// The codec's name, or its Symphonia id.
        codec: String,
    },
    /// The stream ended before the length its header declares (a cut
    /// download or copy). The audio before the cut was delivered.
    #[error(
        "{}: truncated: the stream ends at {} s but its header declares {} s ({decoded} of {declared} frames)",
        path.display(),
        seconds_text(Converter::output_len(*decoded, *rate)),
        seconds_text(Converter::output_len(*declared, *rate))
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Frames (at the file's rate) actually present.
        decoded: u64,
        /// Frames the header declares.
        declared: u64,
        /// The file's sample rate.
        rate: u32,
    },
    /// A packet could not be decoded. It was replaced by silence of the same
    /// duration; reading can go on.
    #[error("{}: corrupt packet at {} s (program frame {pts}): {reason}", path.display(), seconds_text(*pts))]
    CorruptPacket {
        /// The file.
        path: PathBuf,
        /// Program frame (48 kHz, from the file start) where the packet
        /// begins.
        pts: u64,
        /// What the decoder said.
        reason: String,
    },
    /// The decoded stream has a sample rate or channel count the converter
    /// rejects (zero channels or a zero rate).
    #[error("{}: cannot convert: {source}", path.display())]
    Convert {
        /// The file.
        path: PathBuf,
        /// The converter's error.
        source: ConvertError,
    },
}

/// How a [`FileSource`] plays its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceOptions {
    /// Repeat the file forever, seamlessly.
    pub looping: bool,
}

/// A block of program-format audio.
#[derive(Debug, Clone, PartialEq)]
pub struct PcmBlock {
    /// Program frame of the first frame, counting from 0 at the start of the
    /// file (and on across loops).
    pub pts: u64,
    /// Interleaved stereo samples at 48 kHz.
    pub samples: Vec<f32>,
}

impl PcmBlock {
    /// The number of frames in the block.
    pub fn frames(&self) -> u64 {
        (self.samples.len() / CHANNELS) as u64
    }
}

/// A length in the file's own sample rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeDuration {
    /// Frames at `rate`.
    pub frames: u64,
    /// The file's sample rate in Hz.
    pub rate: u32,
}

impl NativeDuration {
    /// The length in program frames this becomes after conversion.
    pub fn program_frames(&self) -> u64 {
        Converter::output_len(self.frames, self.rate)
    }
}

/// One pass over the file: demuxer, decoder and the track being read.
struct Pass {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    /// Frames decoded (or substituted by silence) in this pass.
    frames: u64,
}

enum State {
    Playing(Box<Pass>),
    /// The stream has ended; any error left to report comes first.
    Ended,
}

/// A decoded, converted audio file (see the module docs).
pub struct FileSource {
    path: PathBuf,
    opts: SourceOptions,
    state: State,
    native: Option<NativeDuration>,
    /// The declared length is exact, so a shorter stream is truncated.
    exact_length: bool,
    converter: Option<(SignalSpec, Converter)>,
    decoded: Option<SampleBuffer<f32>>,
    /// Converted audio not yet returned, starting at `next_pts`.
    ready: Vec<f32>,
    next_pts: u64,
    /// An error to report after the audio in `ready`.
    deferred: Option<SourceError>,
}

impl FileSource {
    /// Opens and probes `path`; fails if it is missing, unreadable, not audio,
    /// has no audio track or uses an unsupported codec.
    pub fn open(path: &Path, opts: SourceOptions) -> Result<FileSource, SourceError> {
        let pass = open_pass(path)?;
        let params = pass.decoder.codec_params();
        let native = match (params.n_frames, params.sample_rate) {
            (Some(frames), Some(rate)) if rate > 0 => Some(NativeDuration { frames, rate }),
            _ => None,
        };
        let codec = params.codec;
        // PCM (every `pcm_*` codec) and FLAC declare their exact length.
        let exact_length = codec == codecs::CODEC_TYPE_FLAC
            || symphonia::default::get_codecs()
                .get_codec(codec)
                .is_some_and(|d| d.short_name.starts_with("pcm_"));
        Ok(FileSource {
            path: path.to_path_buf(),
            opts,
            state: State::Playing(Box::new(pass)),
            native,
            exact_length,
            converter: None,
            decoded: None,
            ready: Vec::new(),
            next_pts: 0,
            deferred: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length at its own rate, if the header declares it (an
    /// estimate for MP3 without a Xing/LAME tag and for ADTS AAC).
    pub fn native_duration(&self) -> Option<NativeDuration> {
        self.native
    }

    /// The next block of program audio; `Ok(None)` when a non-looping file
    /// has ended. See the module docs for which errors allow reading on.
    pub fn next_block(&mut self) -> Result<Option<PcmBlock>, SourceError> {
        loop {
            if self.ready.len() >= BLOCK_FRAMES * CHANNELS {
                return Ok(Some(self.take_block()));
            }
            if let Some(e) = self.deferred.take() {
                return Err(e);
            }
            let State::Playing(pass) = &mut self.state else {
                if self.ready.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_block()));
            };
            let packet = match pass.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.end_pass(None)?;
                    continue;
                }
                Err(SymError::ResetRequired) => {
                    // A new logical stream (chained file): treat as the end.
                    self.end_pass(None)?;
                    continue;
                }
                Err(SymError::IoError(e)) => {
                    let err = SourceError::Unreadable {
                        path: self.path.clone(),
                        source: e,
                    };
                    self.end_pass(Some(err))?;
                    continue;
                }
                Err(e) => {
                    let err = SourceError::CorruptPacket {
                        path: self.path.clone(),
                        pts: self.position(),
                        reason: e.to_string(),
                    };
                    self.end_pass(Some(err))?;
                    continue;
                }
            };
            if packet.track_id() != pass.track_id {
                continue;
            }
            match pass.decoder.decode(&packet) {
                Ok(buf) => {
                    let spec = *buf.spec();
                    let frames = buf.frames();
                    if frames == 0 {
                        continue;
                    }
                    pass.frames += frames as u64;
                    let sb = match &mut self.decoded {
                        Some(sb)
                            if sb.capacity() >= frames && spec_matches(&self.converter, &spec) =>
                        {
                            sb
                        }
                        slot => slot.insert(SampleBuffer::new(buf.capacity() as u64, spec)),
                    };
                    sb.copy_interleaved_ref(buf);
                    let samples = sb.samples();
                    let conv =
                        converter_for(&mut self.converter, spec, &mut self.ready, &self.path)?;
                    conv.push_interleaved(samples, &mut self.ready)
                        .map_err(|source| SourceError::Convert {
                            path: self.path.clone(),
                            source,
                        })?;
                }
                Err(SymError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.end_pass(None)?;
                }
                Err(SymError::Unsupported(what)) => {
                    return Err(SourceError::UnsupportedCodec {
                        path: self.path.clone(),
                        codec: format!("feature: {what}"),
                    });
                }
                Err(e) => {
                    // Keep time: the packet's span becomes silence.
                    let pts = self.position();
                    let reason = e.to_string();
                    self.substitute_silence(packet.dur)?;
                    return Err(SourceError::CorruptPacket {
                        path: self.path.clone(),
                        pts,
                        reason,
                    });
                }
            }
        }
    }

    /// Program frame of the next audio to come out of the converter.
    fn position(&self) -> u64 {
        let done = self.next_pts + (self.ready.len() / CHANNELS) as u64;
        match &self.converter {
            // Frames inside the resampler: where the current input would land.
            Some((spec, c)) => {
                let pending =
                    Converter::output_len(c.frames_in(), spec.rate).saturating_sub(c.frames_out());
                done + pending
            }
            None => done,
        }
    }

    /// Feeds `dur` frames of silence (at the track's rate) into the stream.
    fn substitute_silence(&mut self, dur: u64) -> Result<(), SourceError> {
        let State::Playing(pass) = &mut self.state else {
            return Ok(());
        };
        let Some((spec, conv)) = &mut self.converter else {
            return Ok(());
        };
        // Bound the substitute so a corrupt duration field cannot make us
        // allocate without limit: at most one second per packet.
        let frames = dur.min(u64::from(spec.rate)) as usize;
        let channels = spec.channels.count();
        pass.frames += frames as u64;
        let zeros = vec![0.0f32; frames * channels];
        conv.push_interleaved(&zeros, &mut self.ready)
            .map_err(|source| SourceError::Convert {
                path: self.path.clone(),
                source,
            })
    }

    /// Ends the current pass: checks its length, then either starts the next
    /// pass (looping) or flushes the converter. `err` (an error that ended
    /// the pass) is reported unless truncation explains it.
    fn end_pass(&mut self, err: Option<SourceError>) -> Result<(), SourceError> {
        let State::Playing(pass) = std::mem::replace(&mut self.state, State::Ended) else {
            return Ok(());
        };
        let truncated = match self.native {
            Some(n) if self.exact_length && pass.frames < n.frames => {
                Some(SourceError::Truncated {
                    path: self.path.clone(),
                    decoded: pass.frames,
                    declared: n.frames,
                    rate: n.rate,
                })
            }
            _ => None,
        };
        self.deferred = truncated.or(err);
        // A pass that yielded nothing would loop forever without output.
        if self.opts.looping && pass.frames > 0 {
            self.state = State::Playing(Box::new(open_pass(&self.path)?));
            return Ok(());
        }
        if let Some((_, conv)) = &mut self.converter {
            conv.finish(&mut self.ready)
                .map_err(|source| SourceError::Convert {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn take_block(&mut self) -> PcmBlock {
        let take = self.ready.len().min(BLOCK_FRAMES * CHANNELS);
        let samples: Vec<f32> = self.ready.drain(..take).collect();
        let block = PcmBlock {
            pts: self.next_pts,
            samples,
        };
        self.next_pts += block.frames();
        block
    }
}

fn spec_matches(conv: &Option<(SignalSpec, Converter)>, spec: &SignalSpec) -> bool {
    conv.as_ref().is_some_and(|(s, _)| s == spec)
}

/// The converter for `spec`, created on first use. If the stream changes
/// rate or channels mid-way, the old converter is flushed into `out` and a
/// new one continues from there.
fn converter_for<'a>(
    slot: &'a mut Option<(SignalSpec, Converter)>,
    spec: SignalSpec,
    out: &mut Vec<f32>,
    path: &Path,
) -> Result<&'a mut Converter, SourceError> {
    let conv_err = |source| SourceError::Convert {
        path: path.to_path_buf(),
        source,
    };
    if let Some((old, conv)) = slot.as_mut()
        && *old != spec
    {
        conv.finish(out).map_err(conv_err)?;
        *slot = None;
    }
    let (_, conv) = match slot {
        Some(c) => c,
        None => {
            let layout = layout_of(spec.channels).map_err(conv_err)?;
            slot.insert((spec, Converter::new(spec.rate, layout).map_err(conv_err)?))
        }
    };
    Ok(conv)
}

/// The stereo mapping for Symphonia's channel positions (in stream order,
/// which is bit order).
fn layout_of(channels: Channels) -> Result<ChannelLayout, ConvertError> {
    let speakers: Vec<Speaker> = channels
        .iter()
        .map(|c| match c {
            Channels::FRONT_LEFT => Speaker::FrontLeft,
            Channels::FRONT_RIGHT => Speaker::FrontRight,
            Channels::FRONT_CENTRE => Speaker::FrontCentre,
            Channels::LFE1 | Channels::LFE2 => Speaker::LowFrequency,
            Channels::REAR_LEFT => Speaker::BackLeft,
            Channels::REAR_RIGHT => Speaker::BackRight,
            Channels::FRONT_LEFT_CENTRE => Speaker::FrontLeftCentre,
            Channels::FRONT_RIGHT_CENTRE => Speaker::FrontRightCentre,
            Channels::REAR_CENTRE => Speaker::BackCentre,
            Channels::SIDE_LEFT => Speaker::SideLeft,
            Channels::SIDE_RIGHT => Speaker::SideRight,
            _ => Speaker::Other,
        })
        .collect();
    ChannelLayout::from_speakers(&speakers)
}

/// A readable name for a codec Symphonia knows of but this build may not
/// decode.
fn codec_name(codec: CodecType) -> String {
    if let Some(d) = symphonia::default::get_codecs().get_codec(codec) {
        return d.short_name.to_string();
    }
    let name = match codec {
        codecs::CODEC_TYPE_OPUS => "opus",
        codecs::CODEC_TYPE_VORBIS => "vorbis",
        codecs::CODEC_TYPE_ALAC => "alac",
        codecs::CODEC_TYPE_MP1 => "mp1",
        codecs::CODEC_TYPE_MP2 => "mp2",
        codecs::CODEC_TYPE_WAVPACK => "wavpack",
        codecs::CODEC_TYPE_MONKEYS_AUDIO => "monkeys-audio",
        codecs::CODEC_TYPE_ADPCM_MS => "adpcm-ms",
        codecs::CODEC_TYPE_ADPCM_IMA_WAV => "adpcm-ima",
        _ => return format!("id {codec}"),
    };
    name.to_string()
}

/// Opens the file and sets up the demuxer and decoder for its first audio
/// track.
fn open_pass(path: &Path) -> Result<Pass, SourceError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SourceError::NotFound {
            path: path.to_path_buf(),
        },
        _ => SourceError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let mss = MediaSourceStream::new(Box::new(file), MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..FormatOptions::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, mss, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            SymError::IoError(e) if e.kind() != io::ErrorKind::UnexpectedEof => {
                SourceError::Unreadable {
                    path: path.to_path_buf(),
                    source: e,
                }
            }
            other => SourceError::NotAudio {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    let format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != codecs::CODEC_TYPE_NULL)
        .ok_or_else(|| SourceError::NoAudioTrack {
            path: path.to_path_buf(),
        })?;
    let track_id = track.id;
    let decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| SourceError::UnsupportedCodec {
            path: path.to_path_buf(),
            codec: match e {
                SymError::Unsupported(_) => codec_name(track.codec_params.codec),
                other => format!("{} ({other})", codec_name(track.codec_params.codec)),
            },
        })?;
    Ok(Pass {
        format,
        decoder,
        track_id,
        frames: 0,
    })
}
