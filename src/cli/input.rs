//! Parsing of `--input FILE[:key=value,...]` host specifications.

use std::path::PathBuf;

/// One file host as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// The audio file.
    pub path: PathBuf,
    /// Host name in logs and (later) the control API; defaults to the file stem.
    pub name: String,
    /// Gain in dB applied in the mix.
    pub gain_db: f32,
    /// Starts muted.
    pub muted: bool,
}

/// A malformed `--input` value.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad --input {spec:?}: {reason}")]
pub struct InputSpecError {
    spec: String,
    reason: String,
}

impl std::str::FromStr for InputSpec {
    type Err = InputSpecError;

    /// Parses `path`, or `path:opt,opt` where each opt is `gain=DB`,
    /// `name=NAME` or `mute`. A colon followed by something that is not an
    /// option list stays part of the path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| InputSpecError {
            spec: s.to_string(),
            reason,
        };
        let (path, opts) = match s.rsplit_once(':') {
            Some((p, o)) if !p.is_empty() && looks_like_options(o) => (p, Some(o)),
            _ => (s, None),
        };
        if path.is_empty() {
            return Err(err("no file name".into()));
        }
        let path = PathBuf::from(path);
        let mut spec = InputSpec {
            name: path
                .file_stem()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "host".into()),
            path,
            gain_db: 0.0,
            muted: false,
        };
        for opt in opts.into_iter().flat_map(|o| o.split(',')) {
            match opt.split_once('=') {
                Some(("gain", v)) => {
                    let db: f32 = v
                        .trim_end_matches("dB")
                        .parse()
                        .map_err(|_| err(format!("gain {v:?} is not a number of dB")))?;
                    if !db.is_finite() || !(-96.0..=24.0).contains(&db) {
                        return Err(err(format!("gain {db} dB is outside -96..=24 dB")));
                    }
                    spec.gain_db = db;
                }
                Some(("name", v)) if !v.is_empty() => spec.name = v.to_string(),
                None if opt == "mute" => spec.muted = true,
                _ => {
                    return Err(err(format!(
                        "unknown option {opt:?} (gain=DB, name=NAME, mute)"
                    )));
                }
            }
        }
        Ok(spec)
    }
}

fn looks_like_options(o: &str) -> bool {
    !o.is_empty()
        && o.split(',').all(|opt| {
            opt == "mute"
                || opt.split_once('=').is_some_and(|(k, _)| {
                    k.chars().all(|c| c.is_ascii_alphabetic()) && !k.is_empty()
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_paths_and_options() {
        let s: InputSpec = "fixtures/host-b.flac:gain=-3".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("fixtures/host-b.flac"));
        assert_eq!(s.gain_db, -3.0);
        assert_eq!(s.name, "host-b");
        let s: InputSpec = "a.wav:gain=-6dB,name=guest,mute".parse().unwrap();
        assert_eq!((s.gain_db, s.name.as_str(), s.muted), (-6.0, "guest", true));
        let s: InputSpec = "dir:with/colon.wav".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("dir:with/colon.wav"));
    }

    #[test]
    fn rejects_bad_options() {
        assert!("a.wav:gain=loud".parse::<InputSpec>().is_err());
        assert!("a.wav:gain=1000".parse::<InputSpec>().is_err());
        assert!("a.wav:volume=3".parse::<InputSpec>().is_err());
        assert!("".parse::<InputSpec>().is_err());
    }
}
