//! Bad input through the real `onair` binary: every mistake an operator can
//! make with `onair package` ends the run quickly, with a non-zero exit status
//! and one error line on stderr that names what is wrong and where; a failed
//! run leaves no playlist behind for a player to find.

#[path = "common/wav.rs"]
mod wav;

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use onair::publish::RetryPolicy;
use wav::{WavFormat, sine, wav_bytes, write_wav};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");

/// How long a run refusing a bad file may take. Such errors are found while
/// opening or decoding the first seconds of a file: milliseconds, even in a
/// debug build on a loaded machine.
const QUICK: Duration = Duration::from_secs(5);

/// The bound the brief for an unreachable store sets: the publisher's retry
/// policy, not the operating system or the HTTP client, decides when to stop.
const STORE_GIVE_UP: Duration = Duration::from_secs(30);

/// The stream name of every run.
const STREAM: &str = "show";

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// A child process that is killed when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a finished run of the binary left behind.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// The last `error: ...` line: what the binary reports as the reason it
    /// stopped (log lines before it may mention the error too).
    fn error_line(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|line| line.starts_with("error: "))
            .unwrap_or_else(|| panic!("no `error:` line on stderr:\n{}", self.stderr))
    }

    /// Asserts a clean failure: a non-zero exit status from the program
    /// itself, not a signal or a panic (Rust's panic status is 101).
    fn assert_failed_cleanly(&self) {
        let code = self
            .status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"));
        assert!(
            code != 0 && code != 101 && !self.stderr.contains("panicked"),
            "expected an error exit, got status {code}:\n{}",
            self.stderr
        );
    }
}

/// Runs `onair` with `args`, with every `AWS_*` variable of this process
/// removed and `env` set instead, and waits at most `limit` for it.
fn onair<I, S>(args: I, env: &[(&str, &str)], limit: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(ONAIR);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A test server's settings in the environment must not leak into a run
    // that configures its own store.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let started = Instant::now();
    let mut child = KillOnDrop(command.spawn().expect("start the onair binary"));
    // Read stderr on a thread so a chatty child never blocks on a full pipe.
    let mut pipe = child.0.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for onair") {
            break status;
        }
        assert!(
            started.elapsed() < limit,
            "onair did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    Run {
        status,
        stderr: reader.join().expect("stderr reader"),
        elapsed,
    }
}

/// `onair package --input INPUT --store STORE --stream show`.
fn package(input: &OsStr, store: &Path) -> Run {
    let args: [&OsStr; 7] = [
        "package".as_ref(),
        "--input".as_ref(),
        input,
        "--store".as_ref(),
        store.as_os_str(),
        "--stream".as_ref(),
        STREAM.as_ref(),
    ];
    onair(args, &[], QUICK)
}

/// Every file below `dir`, relative to it, sorted.
fn stored_objects(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).expect("below the root");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A failed `package` run may leave media behind (harmless: nothing names
/// it) but no playlist: a playlist of an unfinished recording names media
/// playlists or segments that were never stored, and a player that finds it
/// fails (RFC 8216bis 6.2.2: objects must be available before a playlist
/// names them).
fn assert_no_playlist(store: &Path) {
    let objects = stored_objects(store);
    let playlists: Vec<String> = objects
        .iter()
        .filter(|key| key.ends_with(".m3u8"))
        .map(|key| {
            let text = std::fs::read_to_string(store.join(key)).unwrap_or_default();
            format!("{key}:\n{text}")
        })
        .collect();
    assert!(
        playlists.is_empty(),
        "a failed run left playlists in the store (objects: {objects:?}):\n{}",
        playlists.join("\n")
    );
}

/// Runs `package` on `input` and checks the common contract of a refused
/// file: clean failure, quickly, an error line naming the file and
/// containing `what` (the reason), and no playlist in the store.
fn assert_refused(input: &Path, what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let run = package(input.as_os_str(), &store);
    run.assert_failed_cleanly();
    assert!(run.elapsed < QUICK, "took {:?}", run.elapsed);
    let line = run.error_line();
    assert!(
        line.contains(&input.display().to_string()),
        "the error does not name the file {}: {line}",
        input.display()
    );
    assert!(line.contains(what), "{what:?} missing from: {line}");
    assert_no_playlist(&store);
}

// ---------------------------------------------------------------------------
// Test inputs
// ---------------------------------------------------------------------------

/// 48 kHz stereo 16-bit WAV of a 440 Hz tone, `seconds` long.
fn tone_wav(dir: &Path, name: &str, seconds: f64) -> PathBuf {
    let path = dir.join(name);
    let frames = (48_000.0 * seconds) as usize;
    write_wav(
        &path,
        48_000,
        2,
        WavFormat::Int16,
        &sine(440.0, 48_000, frames, 0.25, 2),
    );
    path
}

/// Deterministic bytes with no structure (xorshift64), so the test sees the
/// same "random" file on every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Bad input files
// ---------------------------------------------------------------------------

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_refused(&dir.path().join("no-such-take.wav"), "no such file");
}

/// The header declares 3 s; the file stops after about 1 s. The audio before
/// the cut was packaged into the store, but the run must fail and leave no
/// playlist presenting 1 s as the whole recording.
#[test]
fn truncated_wav_is_reported_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let samples = sine(440.0, 48_000, 3 * 48_000, 0.25, 2);
    let bytes = wav_bytes(48_000, 2, WavFormat::Int16, &samples);
    // 44-byte header, then 4 bytes per stereo frame: keep 1 s and a half frame.
    let path = dir.path().join("cut.wav");
    std::fs::write(&path, &bytes[..44 + 4 * 48_000 + 2]).expect("write");
    assert_refused(&path, "truncated");
}

#[test]
fn truncated_flac_is_reported_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.flac");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:sample_rate=44100:duration=3")
        .args(["-c:a", "flac"])
        .arg(&full)
        .status()
        .expect("ffmpeg must be installed for this test");
    assert!(
        status.success(),
        "ffmpeg could not write {}",
        full.display()
    );
    let bytes = std::fs::read(&full).expect("read flac");
    // STREAMINFO declares 3 s; keep 60% of the file.
    let path = dir.path().join("cut.flac");
    std::fs::write(&path, &bytes[..bytes.len() * 6 / 10]).expect("write");
    assert_refused(&path, "truncated");
}

#[test]
fn text_file_named_wav_is_not_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.wav");
    std::fs::write(&path, "Running order: intro, guest, news.\n".repeat(40)).expect("write");
    assert_refused(&path, "not a supported audio file");
}

#[test]
fn random_bytes_named_mp3_are_not_audio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("noise.mp3");
    std::fs::write(&path, noise(64 * 1024)).expect("write");
    assert_refused(&path, "not a supported audio file");
}

// ---------------------------------------------------------------------------
// An unreachable store
// ---------------------------------------------------------------------------

/// Nothing listens on the endpoint: every put is refused at once. The run
/// gives up after the retry policy's attempts and says which object, which
/// store, how many attempts and why, once.
#[test]
fn unreachable_store_fails_within_bounded_time_naming_store_key_and_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = tone_wav(dir.path(), "tone.wav", 1.0);
    // Bind, note the port, release it: nothing listens there afterwards.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = "s3://onair-unreachable/x";
    let args: [&OsStr; 7] = [
        "package".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--store".as_ref(),
        store.as_ref(),
        "--stream".as_ref(),
        STREAM.as_ref(),
    ];
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "onair-dummy"),
        ("AWS_SECRET_ACCESS_KEY", "onair-dummy-secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let run = onair(args, &env, STORE_GIVE_UP + Duration::from_secs(10));
    println!("unreachable store: gave up after {:?}", run.elapsed);
    run.assert_failed_cleanly();
    assert!(
        run.elapsed < STORE_GIVE_UP,
        "giving up took {:?}",
        run.elapsed
    );

    let line = run.error_line();
    let attempts = RetryPolicy::default().attempts();
    // The first batch holds the two init segments; either may fail first.
    let keys = [
        format!("{STREAM}/aac/init.mp4"),
        format!("{STREAM}/opus/init.mp4"),
    ];
    assert!(
        keys.iter().any(|k| line.contains(k.as_str())),
        "no object key in: {line}"
    );
    for needle in [
        store.to_owned(),
        format!("after {attempts} attempts"),
        format!("127.0.0.1:{port}"),
        "refused".to_owned(),
    ] {
        assert!(line.contains(&needle), "{needle:?} missing from: {line}");
    }
    // Each retry is visible while it happens, not only in the final line.
    let retries = run.stderr.matches("retrying").count();
    assert!(
        retries >= (attempts as usize - 1),
        "expected at least {} retry warnings:\n{}",
        attempts - 1,
        run.stderr
    );
    // One line an operator can read: the root cause once, not the error's
    // source chain appended to a message that already contains it.
    let causes = line.matches("Connection refused").count();
    assert_eq!(
        causes, 1,
        "the cause is repeated {causes} times in the error line: {line}"
    );
}

// ---------------------------------------------------------------------------
// Bad command-line values
// ---------------------------------------------------------------------------

/// One bad invocation and what its error must say.
struct BadArgs {
    input_opts: &'static str,
    stream: &'static str,
    expected: Vec<String>,
}

/// Runs every case and reports all that fail at once.
fn check_bad_args(cases: &[BadArgs]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = tone_wav(dir.path(), "tone.wav", 0.5);
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let store = dir.path().join(format!("store-{i}"));
        let spec = format!("{}{}", input.display(), case.input_opts);
        let args: [&OsStr; 7] = [
            "package".as_ref(),
            "--input".as_ref(),
            spec.as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--stream".as_ref(),
            case.stream.as_ref(),
        ];
        let run = onair(args, &[], QUICK);
        let label = format!("--input {spec:?} --stream {:?}", case.stream);
        if run.status.success() {
            failures.push(format!("{label}: succeeded"));
            continue;
        }
        run.assert_failed_cleanly();
        let line = run.error_line();
        for needle in &case.expected {
            if !line.contains(needle.as_str()) {
                failures.push(format!("{label}: {needle:?} missing from: {line}"));
            }
        }
        let objects = stored_objects(&store);
        if !objects.is_empty() {
            failures.push(format!("{label}: objects were stored: {objects:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_input_options_are_refused_with_the_reason() {
    check_bad_args(&[
        BadArgs {
            input_opts: ":gain=loud",
            stream: STREAM,
            expected: strings(&["--input", "gain \"loud\" is not a number of dB"]),
        },
        BadArgs {
            input_opts: ":gain=40",
            stream: STREAM,
            expected: strings(&["--input", "gain 40 dB is outside -96..=24 dB"]),
        },
        BadArgs {
            input_opts: ":gain=-3,volume=11",
            stream: STREAM,
            expected: strings(&[
                "--input",
                "unknown option \"volume=11\"",
                "gain=DB, name=NAME, mute",
            ]),
        },
    ]);
}

/// The stream name becomes the first segment of every object key and URL
/// path, so a '/' or a dot segment would escape or split it. The error must
/// quote the value and say that the stream name is at fault.
#[test]
fn unsafe_stream_names_are_refused_naming_the_stream() {
    let case = |stream: &'static str| BadArgs {
        input_opts: "",
        stream,
        expected: vec![format!("{stream:?}"), "stream".to_owned()],
    };
    check_bad_args(&[
        case("a/b"),
        case(".."),
        case("../escape"),
        case("."),
        case("on air"),
    ]);
}

/// Owned copies of `items`.
fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// TLS and ICE server settings that cannot work are refused before anything
/// is stored or bound, naming the file or value and the reason once.
#[test]
fn bad_tls_and_ice_settings_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = tone_wav(dir.path(), "tone.wav", 0.5);
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").expect("write");
    let missing = dir.path().join("missing.pem");
    let whip = |server: &'static str| -> Vec<&OsStr> {
        vec![
            "--http".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--webrtc-udp".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--ice-server".as_ref(),
            server.as_ref(),
        ]
    };
    let cases: [(Vec<&OsStr>, &[&str]); 7] = [
        (
            whip("turn:127.0.0.1:3478"),
            &["turn:127.0.0.1:3478", "no credentials", "--turn-secret"],
        ),
        (
            whip("http://turn.example.net"),
            &["http://turn.example.net", "not a STUN or TURN URI"],
        ),
        (
            whip("turn:127.0.0.1:3478,user-without-credential"),
            &["URL,USERNAME,CREDENTIAL"],
        ),
        (
            vec!["--ice-server".as_ref(), "stun:127.0.0.1:3478".as_ref()],
            &["--ice-server", "WHIP hosts", "--webrtc-udp"],
        ),
        (
            vec!["--rtmps".as_ref(), "127.0.0.1:0".as_ref()],
            &["--rtmps", "--tls-cert FILE --tls-key FILE"],
        ),
        (
            vec![
                "--http".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--tls-cert".as_ref(),
                not_pem.as_os_str(),
                "--tls-key".as_ref(),
                not_pem.as_os_str(),
            ],
            &["not.pem", "no PEM certificate"],
        ),
        (
            vec![
                "--http".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--tls-cert".as_ref(),
                missing.as_os_str(),
                "--tls-key".as_ref(),
                not_pem.as_os_str(),
            ],
            &["missing.pem", "No such file"],
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let store = dir.path().join(format!("store-{i}"));
        let mut args: Vec<&OsStr> = vec![
            "live".as_ref(),
            "--input".as_ref(),
            input.as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
            "--stream".as_ref(),
            STREAM.as_ref(),
            "--key".as_ref(),
            "host=host-secret-1".as_ref(),
        ];
        args.extend(extra.iter().copied());
        let run = onair(args, &[], QUICK);
        run.assert_failed_cleanly();
        let line = run.error_line();
        for needle in *expected {
            assert!(line.contains(needle), "{needle:?} missing from: {line}");
        }
        assert!(
            line.matches("No such file").count() <= 1,
            "the cause is repeated: {line}"
        );
        let objects = stored_objects(&store);
        assert!(
            objects.is_empty(),
            "case {i}: objects were stored: {objects:?}"
        );
    }
}
