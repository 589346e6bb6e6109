//! An ffmpeg listener reading a live HLS playlist, its decoded audio timed
//! by arrival in 10 ms blocks: what a listener hears, and when.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::processes::Proc;

/// An ffmpeg listener reading a media playlist from the origin, its decoded
/// audio timed by arrival in 10 ms blocks.
pub struct Listener {
    /// The ffmpeg process.
    pub child: Proc,
    /// (arrival, RMS of the block) per 10 ms block.
    blocks: Arc<Mutex<Vec<(Instant, f64)>>>,
    /// What ffmpeg printed.
    pub stderr: Arc<Mutex<String>>,
}

/// Samples per channel in a block: 10 ms.
pub const BLOCK: usize = 480;

impl Listener {
    /// Starts ffmpeg reading `url`.
    pub fn start(url: &str) -> Self {
        let mut child = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "warning", "-i", url])
            .args(["-f", "f32le", "-ac", "2", "-ar", "48000", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ffmpeg must be installed (scripts/deps.sh)");
        let mut stdout = child.stdout.take().expect("stdout");
        let blocks = Arc::new(Mutex::new(Vec::new()));
        let sink = blocks.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; BLOCK * 2 * 4];
            while stdout.read_exact(&mut buf).is_ok() {
                let at = Instant::now();
                let sum: f64 = buf
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).powi(2))
                    .sum();
                let rms = (sum / (BLOCK * 2) as f64).sqrt();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((at, rms));
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&text);
        });
        Self {
            child: Proc(child),
            blocks,
            stderr,
        }
    }

    /// (arrival, RMS) of every block so far.
    pub fn blocks(&self) -> Vec<(Instant, f64)> {
        self.blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
