//! ffmpeg decodes onair's CMAF output with the intended timing.
//!
//! A known signal (silence, a 1 kHz sine at -12 dBFS from `ONSET` to `SINE_END`,
//! silence, a one-sample click at `CLICK`) is encoded with libopus (20 ms frames)
//! and fdk-aac (AAC-LC, 96 kb/s, raw access units), packaged with
//! `onair::cmaf`, and decoded by the `ffmpeg` binary, both as one fMP4 file and
//! as an HLS playlist with an `EXT-X-MAP` init segment and separate segment
//! files (how listeners consume onair). Length must match the input within one
//! codec frame, and the sine onset and the click must land within 48 samples
//! (1 ms) of where the timing contract puts them.
//!
//! Two decodes per file:
//! - Honouring timestamps (`-copyts -af atrim=start=0`, as a player presents by
//!   timestamp): both codecs must be aligned with the input. This proves the
//!   edit list and `dOps` pre-skip say what they should.
//! - Plain `ffmpeg -i`: ffmpeg 5.1 applies an edit list in a *fragmented* file
//!   only as a timestamp offset (first packet pts = -delay) and discards no
//!   samples; its CLI then rebases the first pts to 0. Opus stays aligned
//!   because ffmpeg's Opus decoder drops `dOps` pre-skip itself; AAC comes out
//!   late by exactly the encoder delay. The test pins that measured behaviour so
//!   a change in ffmpeg shows up here.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use onair::cmaf::{self, Codec, Language, Sample, TrackConfig};

const RATE: u32 = 48_000;
/// Input length: one second.
const LEN: usize = 48_000;
const ONSET: usize = 9_600;
const SINE_END: usize = 28_800;
const CLICK: usize = 38_400;
/// The accepted timing error: 1 ms.
const TOLERANCE: usize = 48;
/// -12 dBFS.
const AMPLITUDE: f32 = 0.251_188_64;

/// The mono test signal; both channels carry it.
fn signal() -> Vec<f32> {
    let mut x = vec![0.0f32; LEN];
    for (n, v) in x.iter_mut().enumerate().take(SINE_END).skip(ONSET) {
        let phase = 2.0 * std::f64::consts::PI * 1000.0 * (n - ONSET) as f64 / f64::from(RATE);
        *v = AMPLITUDE * phase.sin() as f32;
    }
    x[CLICK] = 0.9;
    x
}

/// Interleaved stereo i16 of `mono`.
fn stereo_i16(mono: &[f32]) -> Vec<i16> {
    mono.iter()
        .flat_map(|&v| {
            let s = (v * 32767.0).round() as i16;
            [s, s]
        })
        .collect()
}

/// An encoded rendition: its track configuration and frames, frame `k`
/// covering media time `[k * frame, (k + 1) * frame)`.
struct Rendition {
    name: &'static str,
    config: TrackConfig,
    frame: u32,
    frames_per_part: usize,
    samples: Vec<Sample>,
}

/// Durations for `count` frames of `frame` samples whose media ends at
/// `delay + LEN`: the last frame is shortened to end exactly there.
fn durations(count: usize, frame: u32, delay: u32) -> Vec<u32> {
    let end = u64::from(delay) + LEN as u64;
    (0..count as u64)
        .map(|k| {
            let start = k * u64::from(frame);
            (end.min(start + u64::from(frame)) - start) as u32
        })
        .collect()
}

fn encode_opus() -> Rendition {
    const FRAME: usize = 960;
    let mut encoder = opus::Encoder::new(RATE, opus::Channels::Stereo, opus::Application::Audio)
        .expect("opus encoder");
    encoder
        .set_bitrate(opus::Bitrate::Bits(64_000))
        .expect("bitrate");
    let lookahead =
        usize::try_from(encoder.get_lookahead().expect("lookahead")).expect("lookahead");
    assert!(lookahead <= FRAME, "lookahead {lookahead}");
    // Pad the start so the delay is one whole frame: media time 960 is input 0.
    let pad = FRAME - lookahead;
    let delay = FRAME as u32;
    let count = (delay as usize + LEN).div_ceil(FRAME);
    let mut input = vec![0.0f32; pad];
    input.extend(signal());
    input.resize(count * FRAME + pad, 0.0);
    let pcm = stereo_i16(&input);
    let durations = durations(count, FRAME as u32, delay);
    let samples = pcm
        .chunks_exact(2 * FRAME)
        .take(count)
        .zip(durations)
        .map(|(frame, duration)| Sample {
            duration,
            data: Bytes::from(encoder.encode_vec(frame, 4000).expect("opus encode")),
        })
        .collect();
    eprintln!("opus: lookahead {lookahead}, start pad {pad}, delay {delay}, {count} frames");
    Rendition {
        name: "opus",
        config: TrackConfig {
            track_id: 1,
            timescale: RATE,
            codec: Codec::Opus {
                channels: 2,
                input_sample_rate: RATE,
            },
            delay,
            language: Language::UNDETERMINED,
        },
        frame: FRAME as u32,
        frames_per_part: 16,
        samples,
    }
}

fn encode_aac() -> Rendition {
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
    const FRAME: usize = 1024;
    let encoder = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(96_000),
        sample_rate: RATE,
        transport: Transport::Raw,
        channels: ChannelMode::Stereo,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .expect("fdk-aac encoder");
    let info = encoder.info().expect("encoder info");
    assert_eq!(info.frameLength as usize, FRAME);
    let config = Bytes::copy_from_slice(&info.confBuf[..info.confSize as usize]);
    let delay = info.nDelay;
    let count = (delay as usize + LEN).div_ceil(FRAME);
    let mut input = signal();
    // Trailing silence flushes the encoder until `count` frames are out.
    input.resize(LEN + 4 * FRAME + delay as usize, 0.0);
    let pcm = stereo_i16(&input);
    let mut packets = Vec::new();
    let mut out = vec![0u8; 8192];
    for chunk in pcm.chunks_exact(2 * FRAME) {
        if packets.len() == count {
            break;
        }
        let result = encoder.encode(chunk, &mut out).expect("aac encode");
        assert_eq!(result.input_consumed, chunk.len());
        if result.output_size > 0 {
            packets.push(Bytes::copy_from_slice(&out[..result.output_size]));
        }
    }
    assert_eq!(packets.len(), count, "encoder produced too few frames");
    let samples = packets
        .into_iter()
        .zip(durations(count, FRAME as u32, delay))
        .map(|(data, duration)| Sample { duration, data })
        .collect();
    eprintln!("aac: config {config:02x?}, delay {delay}, {count} frames");
    Rendition {
        name: "aac",
        config: TrackConfig {
            track_id: 1,
            timescale: RATE,
            codec: Codec::Aac {
                audio_specific_config: config,
                channels: 2,
                avg_bitrate: 96_000,
                max_bitrate: 96_000,
            },
            delay,
            language: Language::UNDETERMINED,
        },
        frame: FRAME as u32,
        frames_per_part: 15,
        samples,
    }
}

/// The rendition's parts (CMAF chunks), in order, with their durations.
fn parts(r: &Rendition) -> Vec<(Bytes, u64)> {
    let mut base = 0u64;
    r.samples
        .chunks(r.frames_per_part)
        .enumerate()
        .map(|(i, frames)| {
            let bytes = cmaf::fragment(i as u32 + 1, 1, base, frames).expect("fragment");
            let duration: u64 = frames.iter().map(|s| u64::from(s.duration)).sum();
            base += duration;
            (bytes, duration)
        })
        .collect()
}

/// Decodes `input` with ffmpeg to interleaved stereo f32 at 48 kHz and returns
/// the left channel. Fails on any ffmpeg error output.
fn decode(input: &Path, honour_timestamps: bool) -> Vec<f32> {
    let mut command = Command::new("ffmpeg");
    command.args(["-nostdin", "-v", "error"]);
    if honour_timestamps {
        command.arg("-copyts");
    }
    command.arg("-i").arg(input);
    if honour_timestamps {
        // Drop what is presented before time 0, as a player would.
        command.args(["-af", "atrim=start=0"]);
    }
    let output = command
        .args(["-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
        .output()
        .expect("ffmpeg must be installed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported: {stderr}");
    output
        .stdout
        .chunks_exact(8)
        .map(|frame| f32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]))
        .collect()
}

/// First index at or after `from` where `|x|` reaches half the sine amplitude.
fn onset(x: &[f32], from: usize) -> Option<usize> {
    x.iter()
        .skip(from)
        .position(|v| v.abs() >= AMPLITUDE / 2.0)
        .map(|i| i + from)
}

/// Index of the largest `|x|` within `around ± 2400` (50 ms of silence each side).
fn click(x: &[f32], around: usize) -> Option<usize> {
    let lo = around - 2400;
    let hi = (around + 2400).min(x.len());
    (lo..hi).max_by(|&a, &b| x[a].abs().total_cmp(&x[b].abs()))
}

/// Decodes `input` both ways and checks length and alignment.
fn assert_aligned(r: &Rendition, how: &str, input: &Path) {
    check_decode(r, &format!("{how}, timestamps honoured"), input, true, 0);
    // ffmpeg 5.1 trims no samples for an edit list in a fragmented file (see
    // the module docs): only the Opus decoder's own pre-skip removes priming.
    let late_by = match r.config.codec {
        Codec::Opus { .. } => 0,
        Codec::Aac { .. } => r.config.delay as usize,
    };
    check_decode(r, &format!("{how}, plain decode"), input, false, late_by);
}

/// Decodes `input` and checks that length and events are `late_by` samples
/// behind the input.
fn check_decode(r: &Rendition, how: &str, input: &Path, honour_timestamps: bool, late_by: usize) {
    let decoded = decode(input, honour_timestamps);
    let reference = signal();
    let want_onset = onset(&reference, 0).expect("reference onset") + late_by;
    let want_click = CLICK + late_by;
    let want_len = LEN + late_by;
    let got_onset = onset(&decoded, ONSET.saturating_sub(4800));
    let got_click = click(&decoded, want_click);
    eprintln!(
        "{} via {how}: decoded {} samples (input {LEN}); onset {got_onset:?} (expected {want_onset}); \
         click {got_click:?} (expected {want_click})",
        r.name,
        decoded.len()
    );
    assert!(
        decoded.len().abs_diff(want_len) <= r.frame as usize,
        "{} via {how}: decoded {} samples, expected {want_len}",
        r.name,
        decoded.len()
    );
    let got_onset = got_onset.expect("no sine onset in the decoded audio");
    assert!(
        got_onset.abs_diff(want_onset) <= TOLERANCE,
        "{} via {how}: sine onset at {got_onset}, expected {want_onset}",
        r.name
    );
    let got_click = got_click.expect("decoded audio ends before the click");
    assert!(
        got_click.abs_diff(want_click) <= TOLERANCE,
        "{} via {how}: click at {got_click}, expected {want_click}",
        r.name
    );
}

/// One file: init segment, then every segment (styp + its parts).
fn check_single_file(r: &Rendition) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = cmaf::init_segment(&r.config).expect("init").to_vec();
    for (i, (part, _)) in parts(r).iter().enumerate() {
        if i % 2 == 0 {
            file.extend_from_slice(&cmaf::styp());
        }
        file.extend_from_slice(part);
    }
    let path = dir.path().join(format!("{}.mp4", r.name));
    std::fs::write(&path, file).expect("write");
    assert_aligned(r, "one fMP4 file", &path);
}

/// An HLS playlist: init.mp4 via EXT-X-MAP and segments of two parts each.
fn check_hls(r: &Rendition) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("init.mp4"),
        cmaf::init_segment(&r.config).expect("init"),
    )
    .expect("write init");
    let mut playlist = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for (msn, pair) in parts(r).chunks(2).enumerate() {
        let mut segment = cmaf::styp().to_vec();
        let mut duration = 0;
        for (part, part_duration) in pair {
            segment.extend_from_slice(part);
            duration += part_duration;
        }
        std::fs::write(dir.path().join(format!("{msn}.m4s")), segment).expect("write segment");
        playlist += &format!(
            "#EXTINF:{},\n{msn}.m4s\n",
            onair::time::seconds_text(duration)
        );
    }
    playlist += "#EXT-X-ENDLIST\n";
    let path = dir.path().join("media.m3u8");
    std::fs::write(&path, playlist).expect("write playlist");
    assert_aligned(r, "HLS (EXT-X-MAP + segments)", &path);
}

#[test]
fn opus_single_file_is_aligned() {
    check_single_file(&encode_opus());
}

#[test]
fn aac_single_file_is_aligned() {
    check_single_file(&encode_aac());
}

#[test]
fn opus_hls_is_aligned() {
    check_hls(&encode_opus());
}

#[test]
fn aac_hls_is_aligned() {
    check_hls(&encode_aac());
}
