//! A finished stream decodes from every store it can be published to: a
//! local directory, the in-memory store and a real S3-compatible server read
//! over plain HTTP the way a CDN or a player reads it. And a store that
//! cannot take one segment fails the run with an error naming that segment,
//! without leaving a playlist that names an object the store does not hold.
//!
//! The S3 test needs a running server: `eval "$(scripts/s3-server.sh start)"`
//! before `cargo test`; without it that test fails.

#[path = "common/hooked_store.rs"]
mod hooked_store;
#[path = "common/s3.rs"]
mod s3;
#[path = "common/wav.rs"]
mod wav;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use hooked_store::{HookedStore, Hooks};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use onair::audio::{FeedConfig, FileSource, SourceOptions};
use onair::hls::TimelineConfig;
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{FileHost, Pipeline, PipelineConfig, RENDITIONS};
use onair::publish::{Capabilities, PublishError, RetryPolicy, Store, open_store};
use onair::run::{self, RunError};
use s3::S3Server;
use wav::{WavFormat, sine, write_wav};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// The stream name of every run.
const STREAM: &str = "show";

/// Length of the longest input, and so of the program.
const PROGRAM_SECONDS: f64 = 3.0;

/// How far a rendition decoded by ffmpeg may differ from the program length.
/// ffmpeg does not trim the AAC encoder's priming from CMAF fragments (it
/// decodes about 50 ms more), and a rendition may end on a whole codec frame.
const DURATION_TOLERANCE_S: f64 = 0.1;

/// Upper bound for one child process (a debug-build packaging run of 3 s of
/// audio or one ffmpeg decode): seconds normally.
const PROCESS_LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------

/// Two host recordings of different rates, layouts and lengths, like the
/// bundled fixtures: a 440 Hz tone, 48 kHz stereo, 3.0 s, and a 660 Hz tone,
/// 44.1 kHz mono, 2.5 s.
fn tone_inputs(dir: &Path) -> Vec<PathBuf> {
    let host_a = dir.join("host-a.wav");
    let frames_a = (48_000.0 * PROGRAM_SECONDS) as usize;
    let samples_a = sine(440.0, 48_000, frames_a, 0.25, 2);
    write_wav(&host_a, 48_000, 2, WavFormat::Int16, &samples_a);
    let host_b = dir.join("host-b.wav");
    let samples_b = sine(660.0, 44_100, 44_100 * 5 / 2, 0.25, 1);
    write_wav(&host_b, 44_100, 1, WavFormat::Int16, &samples_b);
    vec![host_a, host_b]
}

// ---------------------------------------------------------------------------
// Packaging
// ---------------------------------------------------------------------------

/// A pipeline as `onair package` builds it with its default settings (see
/// src/main.rs), over `inputs`.
fn pipeline(inputs: &[PathBuf]) -> Pipeline {
    let hosts = inputs
        .iter()
        .map(|path| FileHost {
            feed: FeedConfig {
                name: path
                    .file_stem()
                    .expect("file name")
                    .to_string_lossy()
                    .into(),
                gain_db: 0.0,
                muted: false,
            },
            source: FileSource::open(path, SourceOptions { looping: false })
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display())),
        })
        .collect();
    let config = PipelineConfig {
        opus: Default::default(),
        aac: Default::default(),
        mixer: Default::default(),
        packager: PackagerConfig {
            stream: STREAM.to_owned(),
            timeline: TimelineConfig {
                window: None,
                // A fixed date: the program dates in the playlists do not
                // matter here, and a fixed one keeps runs identical.
                epoch_unix_ms: 1_767_225_600_000,
                ..TimelineConfig::default()
            },
            mode: PlaylistMode::Vod,
        },
        parallel: true,
        returns: Default::default(),
    };
    Pipeline::new(config, hosts).expect("pipeline")
}

/// Runs `onair package` on `inputs` into `store_url` with this process's
/// environment (which holds the S3 settings when there are any).
fn package_with_binary(inputs: &[PathBuf], store_url: &str) {
    let mut command = Command::new(ONAIR);
    command.arg("package");
    for input in inputs {
        command.arg("--input").arg(input);
    }
    command.args(["--store", store_url, "--stream", STREAM]);
    let run = run_bounded(&mut command);
    assert!(
        run.status.success(),
        "onair package into {store_url} failed:\n{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// A child process that is killed when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished child process printed.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `command` to completion, or fails the test (killing it) after
/// [`PROCESS_LIMIT`]. A missing program fails the test too.
fn run_bounded(command: &mut Command) -> Finished {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    let mut child = KillOnDrop(child);
    // Both pipes are drained on threads, so a child that writes a lot never
    // blocks on a full pipe while we wait for it.
    let mut out = child.0.stdout.take().expect("stdout is piped");
    let mut err = child.0.stderr.take().expect("stderr is piped");
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = out.read_to_end(&mut bytes);
        bytes
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for child") {
            break status;
        }
        assert!(
            started.elapsed() < PROCESS_LIMIT,
            "{program} did not finish within {PROCESS_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

// ---------------------------------------------------------------------------
// Decoding with ffmpeg
// ---------------------------------------------------------------------------

/// Checks that ffmpeg plays the stream below `root` (a directory or an
/// `http://` URL) from its multivariant playlist, every rendition, with no
/// error output, and that each rendition holds the whole program.
///
/// ffmpeg runs at `-v warning`, not `-v error`: it reports a segment it
/// cannot open only as a warning, skips it and exits 0, so error level alone
/// would pass a stream with holes. The decoded length catches the same.
fn assert_stream_decodes(root: &str) {
    let index = format!("{root}/{STREAM}/index.m3u8");
    // `-map 0:a` decodes every variant, not only the one ffmpeg would pick.
    let run = run_bounded(Command::new("ffmpeg").args([
        "-nostdin", "-v", "warning", "-i", &index, "-map", "0:a", "-f", "null", "-",
    ]));
    assert!(
        run.status.success() && run.stderr.is_empty(),
        "ffmpeg could not play {index} ({}):\n{}",
        run.status,
        run.stderr
    );
    for rendition in RENDITIONS {
        let playlist = format!("{root}/{STREAM}/{rendition}/live.m3u8");
        let samples = decode_mono_48k(&playlist);
        let seconds = samples.len() as f64 / 48_000.0;
        assert!(
            (seconds - PROGRAM_SECONDS).abs() <= DURATION_TOLERANCE_S,
            "{playlist}: decoded {seconds:.3} s, expected {PROGRAM_SECONDS} s"
        );
        // Two tones at -12 dBFS each: a broken mix or an empty rendition
        // decodes to (near) silence.
        let rms = (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>()
            / samples.len().max(1) as f64)
            .sqrt();
        assert!(rms > 0.05, "{playlist}: RMS {rms:.4}, nearly silent");
    }
}

/// Decodes `url` to 48 kHz mono float samples with ffmpeg, requiring no
/// warning or error.
fn decode_mono_48k(url: &str) -> Vec<f32> {
    let run = run_bounded(Command::new("ffmpeg").args([
        "-nostdin", "-v", "warning", "-i", url, "-ac", "1", "-ar", "48000", "-f", "f32le", "-",
    ]));
    assert!(
        run.status.success() && run.stderr.is_empty(),
        "ffmpeg could not decode {url} ({}):\n{}",
        run.status,
        run.stderr
    );
    run.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

// ---------------------------------------------------------------------------
// Store contents
// ---------------------------------------------------------------------------

/// Every object of `store` by key.
async fn objects_of(store: &dyn ObjectStore) -> BTreeMap<String, Bytes> {
    let metas: Vec<ObjectMeta> = store
        .list(None)
        .map(|meta| meta.expect("list the store"))
        .collect()
        .await;
    let mut objects = BTreeMap::new();
    for meta in metas {
        let got = store.get(&meta.location).await;
        let body = match got {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        }
        .unwrap_or_else(|e| panic!("read {}: {e}", meta.location));
        objects.insert(meta.location.to_string(), body);
    }
    objects
}

/// Every file below `dir`, by its path relative to `dir` with `/` separators.
fn files_of(dir: &Path) -> BTreeMap<String, Bytes> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Bytes>) {
        for entry in std::fs::read_dir(dir).expect("read store directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let key = path.strip_prefix(root).expect("below the root");
                let body = std::fs::read(&path).expect("read stored file");
                out.insert(key.to_string_lossy().replace('\\', "/"), body.into());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes `objects` below `dir`, keys becoming relative paths.
fn write_out(objects: &BTreeMap<String, Bytes>, dir: &Path) {
    for (key, body) in objects {
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().expect("key has a folder")).expect("mkdir");
        std::fs::write(&path, body).expect("write object");
    }
}

/// The URIs a playlist names, as store keys: the media playlists of a
/// multivariant playlist, the `EXT-X-MAP`, segments, parts, rendition
/// reports. A preload hint is left out: it names the next part before it
/// exists, on purpose (RFC 8216bis 4.4.5.3).
fn references(playlist_key: &str, text: &str) -> Vec<String> {
    let folder = playlist_key.rsplit_once('/').map_or("", |(f, _)| f);
    let mut uris = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !line.starts_with('#') {
            uris.push(line);
        } else if !line.starts_with("#EXT-X-PRELOAD-HINT")
            && let Some((_, rest)) = line.split_once("URI=\"")
        {
            uris.push(rest.split('"').next().unwrap_or(rest));
        }
    }
    uris.into_iter().map(|uri| resolve(folder, uri)).collect()
}

/// Resolves a relative URI against the folder of the playlist naming it
/// (RFC 3986 5.2, for the plain relative paths playlists use).
fn resolve(folder: &str, uri: &str) -> String {
    assert!(
        !uri.contains("://") && !uri.starts_with('/'),
        "playlists name objects relative to themselves, got {uri:?}"
    );
    let mut parts: Vec<&str> = folder.split('/').filter(|s| !s.is_empty()).collect();
    for segment in uri.split('/') {
        match segment {
            "." | "" => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Every (playlist, key) pair where a playlist in `objects` names a key that
/// is not in `objects`: what a player would fail on (RFC 8216bis 6.2.2).
fn dangling_references(objects: &BTreeMap<String, Bytes>) -> Vec<String> {
    let mut dangling = Vec::new();
    for (key, body) in objects.iter().filter(|(k, _)| k.ends_with(".m3u8")) {
        let text = std::str::from_utf8(body).expect("playlists are UTF-8");
        for named in references(key, text) {
            if !objects.contains_key(&named) {
                dangling.push(format!("{key} names {named}, which is not stored"));
            }
        }
    }
    dangling
}

/// Asserts that the store holds a whole stream and that every object a
/// playlist names is there.
fn assert_complete(objects: &BTreeMap<String, Bytes>) {
    for rendition in RENDITIONS {
        for name in ["init.mp4", "live.m3u8", "0.m4s"] {
            let key = format!("{STREAM}/{rendition}/{name}");
            assert!(
                objects.contains_key(&key),
                "{key} missing: {:?}",
                objects.keys()
            );
        }
    }
    let dangling = dangling_references(objects);
    assert!(dangling.is_empty(), "{}", dangling.join("\n"));
}

// ---------------------------------------------------------------------------
// Every store
// ---------------------------------------------------------------------------

#[test]
fn stream_in_a_local_directory_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = tone_inputs(dir.path());
    let root = dir.path().join("data");
    package_with_binary(&inputs, root.to_str().expect("UTF-8 temp path"));
    assert_complete(&files_of(&root));
    assert_stream_decodes(root.to_str().expect("UTF-8 temp path"));
}

/// The in-memory store lives only inside this process, so its objects are
/// copied to a directory for ffmpeg: exactly the bytes it holds, nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_in_memory_decodes_once_copied_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = tone_inputs(dir.path());
    let store = open_store("memory://").expect("open memory store");
    let summary = run::package(pipeline(&inputs), store.clone(), None)
        .await
        .expect("package into memory");
    let objects = objects_of(store.object_store().as_ref()).await;
    assert_eq!(
        summary.publish.totals.puts,
        objects.len() as u64,
        "every put is one object: {:?}",
        objects.keys()
    );
    assert_complete(&objects);
    let copy = dir.path().join("copy");
    write_out(&objects, &copy);
    assert_stream_decodes(copy.to_str().expect("UTF-8 temp path"));
}

/// Published by the binary with the `AWS_*` settings of the test server,
/// then read without credentials over HTTP, as a CDN in front of the bucket
/// would (the test server allows anonymous reads; see scripts/s3-server.sh).
#[test]
fn stream_in_s3_decodes_over_http_with_its_headers() {
    let server = S3Server::from_env();
    let bucket = server.create_bucket("stores");
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = tone_inputs(dir.path());
    package_with_binary(&inputs, &format!("s3://{bucket}/broadcasts"));
    assert_stream_decodes(&format!("{}/{bucket}/broadcasts", server.endpoint()));

    // Media never changes: cached for a year (RFC 9111 5.2.2.1, RFC 8246).
    // The final media playlist keeps the live policy of half a part target
    // (320 ms, so 0 s); the multivariant playlist one target duration
    // (EXT-X-TARGETDURATION 2: 1.92 s segments of six 320 ms parts).
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";
    const PLAYLIST: &str = "application/vnd.apple.mpegurl";
    let expected = [
        ("aac/init.mp4", "audio/mp4", IMMUTABLE),
        ("opus/0.m4s", "audio/mp4", IMMUTABLE),
        ("aac/live.m3u8", PLAYLIST, "public, max-age=0"),
        ("index.m3u8", PLAYLIST, "public, max-age=2"),
    ];
    for (name, content_type, cache_control) in expected {
        let path = format!("/{bucket}/broadcasts/{STREAM}/{name}");
        let response = server.request("HEAD", &path);
        assert_eq!(response.status, 200, "HEAD {path}: {response:?}");
        assert_eq!(
            response.header("content-type"),
            Some(content_type),
            "{path} Content-Type"
        );
        assert_eq!(
            response.header("cache-control"),
            Some(cache_control),
            "{path} Cache-Control"
        );
    }
}

// ---------------------------------------------------------------------------
// A store that cannot take one segment
// ---------------------------------------------------------------------------

/// How the store fails the chosen key.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// An error that looks temporary (a network or server failure) on every
    /// attempt: the publisher retries, then gives up.
    Unavailable,
    /// A refusal retrying cannot fix (HTTP 403): the publisher stops at once.
    Denied,
}

/// Fails every put of one key.
#[derive(Debug)]
struct FailPuts {
    key: ObjectPath,
    failure: Failure,
    attempts: AtomicU32,
}

impl FailPuts {
    fn error(&self) -> object_store::Error {
        match self.failure {
            Failure::Unavailable => object_store::Error::Generic {
                store: "Failing",
                source: "injected: the disk is full".into(),
            },
            Failure::Denied => object_store::Error::PermissionDenied {
                path: self.key.to_string(),
                source: "injected: 403 Forbidden".into(),
            },
        }
    }
}

impl Hooks for FailPuts {
    const NAME: &'static str = "Failing";

    fn before_put<'a>(
        &'a self,
        location: &'a ObjectPath,
    ) -> BoxFuture<'a, object_store::Result<()>> {
        let result = if *location == self.key {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            Err(self.error())
        } else {
            Ok(())
        };
        Box::pin(async move { result })
    }
}

/// Packages the tone inputs into a store that fails every put of `key`, and
/// checks the run's error and what it left in the store. Returns the error.
async fn package_with_unstorable(key: &str, failure: Failure) -> PublishError {
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = tone_inputs(dir.path());
    let inner = Arc::new(InMemory::new());
    let failing = Arc::new(FailPuts {
        key: ObjectPath::from(key),
        failure,
        attempts: AtomicU32::new(0),
    });
    let url = "memory://failing";
    let store = Store::new(
        Arc::new(HookedStore::new(inner.clone(), Arc::clone(&failing))),
        url,
        Capabilities {
            supports_attributes: true,
        },
    );
    let started = Instant::now();
    let result = run::package(pipeline(&inputs), store, None).await;
    let elapsed = started.elapsed();
    let error = match result {
        Err(RunError::Publish(error)) => error,
        Err(other) => panic!("expected a publish error for {key}, got: {other}"),
        Ok(summary) => panic!("the run succeeded although {key} was never stored: {summary:?}"),
    };
    println!("{failure:?} {key}: gave up after {elapsed:?}: {error}");
    let text = error.to_string();
    for needle in [key, url, "injected"] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    let attempts = failing.attempts.load(Ordering::SeqCst);
    let expected_attempts = match failure {
        Failure::Unavailable => RetryPolicy::default().attempts(),
        Failure::Denied => 1,
    };
    assert_eq!(attempts, expected_attempts, "put attempts of {key}");
    assert!(
        text.contains(&format!("{attempts} attempts"))
            || text.contains(&format!("attempt {attempts}")),
        "the attempt count is missing from: {text}"
    );

    let objects = objects_of(inner.as_ref()).await;
    assert!(!objects.contains_key(key), "{key} was stored");
    let dangling = dangling_references(&objects);
    assert!(
        dangling.is_empty(),
        "after the failed run (objects {:?}):\n{}",
        objects.keys(),
        dangling.join("\n")
    );
    error
}

/// The first Opus segment goes out mid-run, in a batch that holds only
/// media; the store keeps failing it until the retry policy gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_the_store_keeps_failing_stops_the_run_without_dangling_playlists() {
    let key = format!("{STREAM}/opus/0.m4s");
    let error = package_with_unstorable(&key, Failure::Unavailable).await;
    assert!(
        matches!(&error, PublishError::Unavailable { key: k, .. } if *k == key),
        "{error:?}"
    );
}

/// The last AAC segment goes out in the final batch, in the stage just
/// before the playlists: the store refuses it, and those playlists must not
/// follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_the_store_refuses_stops_the_run_without_dangling_playlists() {
    // 3 s of program in 1.92 s segments: segment 1 is the last.
    let key = format!("{STREAM}/aac/1.m4s");
    let error = package_with_unstorable(&key, Failure::Denied).await;
    assert!(
        matches!(&error, PublishError::Rejected { key: k, .. } if *k == key),
        "{error:?}"
    );
}

/// The reference check above is only as good as its reading of playlists.
#[test]
fn playlist_references_resolve_to_store_keys() {
    let playlist = "#EXTM3U\n\
        #EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXT-X-PART:DURATION=0.320,URI=\"4.0.m4s\",INDEPENDENT=YES\n\
        #EXTINF:1.920,\n\
        4.m4s\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.1.m4s\"\n\
        #EXT-X-RENDITION-REPORT:URI=\"../opus/live.m3u8\",LAST-MSN=5\n";
    assert_eq!(
        references("show/aac/live.m3u8", playlist),
        [
            "show/aac/init.mp4",
            "show/aac/4.0.m4s",
            "show/aac/4.m4s",
            "show/opus/live.m3u8"
        ]
    );
    assert_eq!(
        references(
            "show/index.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\naac/live.m3u8\n"
        ),
        ["show/aac/live.m3u8"]
    );
}
