//! A minimal RIFF/WAVE writer for test signals (PCM 16/24-bit and IEEE float).

use std::io::Write;
use std::path::Path;

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub enum WavFormat {
    /// 16-bit signed integer PCM.
    Int16,
    /// 24-bit signed integer PCM.
    Int24,
    /// 32-bit IEEE float.
    Float32,
}

/// Encodes interleaved samples in [-1, 1] as a WAV file image.
pub fn wav_bytes(rate: u32, channels: u16, format: WavFormat, samples: &[f32]) -> Vec<u8> {
    let (tag, bits): (u16, u16) = match format {
        WavFormat::Int16 => (1, 16),
        WavFormat::Int24 => (1, 24),
        WavFormat::Float32 => (3, 32),
    };
    let block = channels * bits / 8;
    let mut data = Vec::with_capacity(samples.len() * usize::from(bits / 8));
    for &s in samples {
        let s = s.clamp(-1.0, 1.0);
        match format {
            WavFormat::Int16 => {
                data.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes())
            }
            WavFormat::Int24 => {
                data.extend_from_slice(&((s * 8_388_607.0).round() as i32).to_le_bytes()[..3])
            }
            WavFormat::Float32 => data.extend_from_slice(&s.to_le_bytes()),
        }
    }
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Writes a WAV file.
pub fn write_wav(path: &Path, rate: u32, channels: u16, format: WavFormat, samples: &[f32]) {
    let mut f = std::fs::File::create(path).expect("create wav");
    f.write_all(&wav_bytes(rate, channels, format, samples))
        .expect("write wav");
}

/// `frames` frames of a sine at `freq` Hz and amplitude `amp`, the same in
/// every channel.
pub fn sine(freq: f64, rate: u32, frames: usize, amp: f64, channels: usize) -> Vec<f32> {
    (0..frames)
        .flat_map(|i| {
            let v =
                (amp * (std::f64::consts::TAU * freq * i as f64 / f64::from(rate)).sin()) as f32;
            std::iter::repeat_n(v, channels)
        })
        .collect()
}
