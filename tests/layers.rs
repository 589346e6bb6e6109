//! The library's dependency arrows point one way: down the pipeline, from
//! the composition layer to the pure bottom (docs/ARCHITECTURE.md, "Layers").
//! This test reads every source file under `src/` and fails on any
//! `crate::…` path (code, not comments) that reaches a module its layer may
//! not use, so an upward import is caught in review, not months later.
//!
//! The allow-list below is the rule; change it only with the picture in
//! docs/ARCHITECTURE.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the library and the modules it may use.
/// `testing` (unit-test helpers, compiled only for tests) may be used by
/// every module.
const ALLOWED: &[(&str, &[&str])] = &[
    // The bottom: no dependencies inside the crate.
    ("time", &[]),
    ("web", &[]),
    ("reload", &[]),
    ("tls", &["reload"]),
    ("cmaf", &[]),
    ("cli", &[]),
    ("testing", &[]),
    // Media building blocks.
    ("audio", &["time"]),
    ("encode", &["time"]),
    ("hls", &["time"]),
    // Where hosts come in and where objects go out.
    ("ingest", &["audio", "time", "web"]),
    ("publish", &["hls", "time"]),
    // The live mix, the packager, and the stateless origin. The origin
    // knows the store and its layout, never ingest, mixing or control.
    ("studio", &["audio", "ingest", "time"]),
    ("packager", &["cmaf", "encode", "hls", "publish", "time"]),
    // Hosts' mix-minus returns, encoded for the sessions that hear them.
    ("returns", &["audio", "ingest", "studio", "time"]),
    ("origin", &["hls", "publish", "time", "tls", "web"]),
    // The operator's API: commands into the studio. Its tests build a
    // studio with live hosts and check the reserved layout name.
    ("control", &["audio", "ingest", "publish", "studio", "web"]),
    // One broadcast's media path.
    (
        "pipeline",
        &[
            "audio", "encode", "ingest", "packager", "publish", "returns", "studio", "time",
        ],
    ),
    // The composition layer: wires the layers into a running broadcast.
    (
        "run",
        &[
            "audio", "cli", "control", "encode", "hls", "ingest", "origin", "packager", "pipeline",
            "publish", "reload", "returns", "studio", "time", "tls", "web",
        ],
    ),
];

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/origin/server.rs` →
/// `origin`, `src/time.rs` → `time`); `None` for the crate roots and for
/// `src/tools/`, the binary's own modules (they use the library as any
/// client does, through `onair::`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "tools")).then(|| name.to_owned())
}

/// The top-level modules named by `crate::NAME` paths in the code of `text`
/// (comments are skipped: a doc link is not a dependency).
fn crate_paths(text: &str) -> BTreeSet<(usize, String)> {
    let mut found = BTreeSet::new();
    for (number, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}` would hide names from this scan: refuse it.
            assert!(
                !after.starts_with('{'),
                "line {}: write one `use crate::module::…` per module, so the \
                 layer check can read it",
                number + 1
            );
            if !name.is_empty() {
                found.insert((number + 1, name));
            }
            rest = after;
        }
    }
    found
}

#[test]
fn imports_point_down_the_layers() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        seen.insert(module.clone());
        let Some(may_use) = allowed.get(module.as_str()) else {
            violations.push(format!(
                "{}: module `{module}` has no place in the layers",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for (line, used) in crate_paths(&text) {
            if used != module && used != "testing" && !may_use.contains(&used.as_str()) {
                violations.push(format!(
                    "{}:{line}: `{module}` may not use `{used}`",
                    file.display()
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers (docs/ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
    // Every module of the list exists, so the rule cannot silently rot.
    for (module, _) in ALLOWED {
        assert!(seen.contains(*module), "no module `{module}` under src/");
    }
}

#[test]
fn the_scan_sees_upward_imports() {
    let text = "use crate::origin::Origin;\n// crate::control in a comment\n\
                let x = crate::studio::KICK_HOLD; // crate::run\n";
    let found: Vec<String> = crate_paths(text).into_iter().map(|(_, m)| m).collect();
    assert_eq!(found, ["origin", "studio"]);
}
