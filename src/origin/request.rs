//! Request targets: routing and LL-HLS delivery directives. Pure: no IO.
//!
//! Contract:
//! - [`route`] maps a request path and query to exactly one [`Route`] or a
//!   [`Rejection`], and never panics, whatever the input.
//! - Every accepted route names keys of the store layout
//!   ([`crate::publish::layout`]) inside one `{stream}/` prefix: valid names
//!   and numbers in canonical decimal, so a request can only ever address the
//!   key the packager would have written (no `..`, no percent-encoding, no
//!   aliases such as `007.m4s`).
//! - Malformed targets (overlong, empty or dot segments, percent-encoded or
//!   control bytes, bad directive values) are [`Rejection::BadRequest`];
//!   well-formed targets that name nothing onair serves are
//!   [`Rejection::NotFound`].
//! - Delivery directives (RFC 8216bis 6.2.5) are read only on media
//!   playlists; other routes ignore the query, so cache busters do no harm.
//!   Unknown query parameters are ignored everywhere.
//! - Reserved stream names ([`layout::RESERVED_STREAM_NAMES`], such as the
//!   control API's folder) are never routed: routes that other layers serve
//!   on the same server (see [`crate::web::Routes`]) and listener URLs never
//!   overlap.

use crate::hls::PartId;
use crate::publish::layout::{self, MULTIVARIANT, RenditionFile};

pub use crate::publish::layout::RenditionPath;

/// Longest request target (path and query) accepted, in bytes. onair's own
/// URLs are far shorter; anything longer is abuse or garbage.
pub const MAX_TARGET_LEN: usize = 512;

/// Where the origin serves a copy of hls.js when one is configured.
pub const HLSJS_PATH: &str = "/_onair/hls.min.js";

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/`: the page listing live streams.
    Home,
    /// [`HLSJS_PATH`]: the configured copy of hls.js.
    HlsJs,
    /// `/{stream}/`: the listener page.
    ListenerPage {
        /// Stream name.
        stream: String,
    },
    /// `/{stream}/index.m3u8`: the multivariant playlist.
    Multivariant {
        /// Stream name.
        stream: String,
    },
    /// `/{stream}/{rendition}/live.m3u8`, with its delivery directives.
    MediaPlaylist {
        /// Which rendition.
        rendition: RenditionPath,
        /// `_HLS_msn`, `_HLS_part`, `_HLS_skip`.
        directives: Directives,
    },
    /// `/{stream}/{rendition}/init.mp4`, `{msn}.m4s` or `{msn}.{part}.m4s`.
    Media {
        /// Which rendition.
        rendition: RenditionPath,
        /// Which object.
        name: MediaName,
    },
}

/// A media object of a rendition: the [`RenditionFile`]s a listener may
/// request directly (playlists have their own routes, `at/` playlists none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaName {
    /// `init.mp4`.
    Init,
    /// `{msn}.m4s`: a whole segment.
    Segment(u64),
    /// `{msn}.{part}.m4s`: a Partial Segment.
    Part(PartId),
}

impl MediaName {
    /// The object in the rendition's folder.
    pub fn file(&self) -> RenditionFile {
        match *self {
            Self::Init => RenditionFile::Init,
            Self::Segment(msn) => RenditionFile::Segment(msn),
            Self::Part(id) => RenditionFile::Part(id),
        }
    }

    /// Reads a media file name (`init.mp4`, `12.m4s`, `12.3.m4s`) by the
    /// store layout; numbers must be canonical decimal. Also reads the URIs
    /// of a playlist's parts and preload hint, which the packager writes in
    /// the same form.
    pub fn parse(name: &str) -> Option<MediaName> {
        match RenditionFile::parse(name)? {
            RenditionFile::Init => Some(Self::Init),
            RenditionFile::Segment(msn) => Some(Self::Segment(msn)),
            RenditionFile::Part(id) => Some(Self::Part(id)),
            RenditionFile::Live | RenditionFile::At(_) => None,
        }
    }
}

/// What a blocking playlist reload waits for (RFC 8216bis 6.2.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockTarget {
    /// `_HLS_msn=M` alone: Media Segment M complete.
    Segment(u64),
    /// `_HLS_msn=M&_HLS_part=P`: Partial Segment P of segment M.
    Part(PartId),
}

/// `_HLS_skip` (RFC 8216bis 6.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipRequest {
    /// `_HLS_skip=YES`: skip old Media Segments.
    Yes,
    /// `_HLS_skip=v2`: also skip `EXT-X-DATERANGE` tags.
    V2,
}

/// The delivery directives of a media playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Directives {
    /// Blocking reload target, if any.
    pub block: Option<BlockTarget>,
    /// Delta update request, if any.
    pub skip: Option<SkipRequest>,
}

/// Why a request target was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Malformed: answer 400 with the reason.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// Well-formed but names nothing onair serves: answer 404.
    #[error("not found")]
    NotFound,
}

/// Routes a request target. `path` is the request path as received (not
/// percent-decoded), `query` the text after `?`, if any.
pub fn route(path: &str, query: Option<&str>) -> Result<Route, Rejection> {
    let length = path.len() + query.map_or(0, |q| q.len() + 1);
    if length > MAX_TARGET_LEN {
        return Err(Rejection::BadRequest("request target too long"));
    }
    let rest = path
        .strip_prefix('/')
        .ok_or(Rejection::BadRequest("path must start with /"))?;
    check_path_bytes(rest)?;
    if path == HLSJS_PATH {
        return Ok(Route::HlsJs);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let (last, inner) = segments.split_last().ok_or(Rejection::NotFound)?;
    // An empty segment is only meaningful as the trailing slash of a folder.
    if inner.iter().any(|s| s.is_empty()) {
        return Err(Rejection::BadRequest("empty path segment"));
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(Rejection::BadRequest("dot segment in path"));
    }
    match (inner, *last) {
        ([], "") => Ok(Route::Home),
        ([stream], "") => Ok(Route::ListenerPage {
            stream: stream_name(stream)?,
        }),
        ([stream], MULTIVARIANT) => Ok(Route::Multivariant {
            stream: stream_name(stream)?,
        }),
        ([stream, rendition], file) => {
            let rendition = RenditionPath::new(stream, rendition).ok_or(Rejection::NotFound)?;
            if RenditionFile::parse(file) == Some(RenditionFile::Live) {
                return Ok(Route::MediaPlaylist {
                    rendition,
                    directives: directives(query.unwrap_or(""))?,
                });
            }
            let name = MediaName::parse(file).ok_or(Rejection::NotFound)?;
            Ok(Route::Media { rendition, name })
        }
        _ => Err(Rejection::NotFound),
    }
}

/// Refuses bytes that no onair URL contains and that only serve to smuggle
/// something past a naive decoder: percent-encoding, backslashes, control
/// characters and non-ASCII.
fn check_path_bytes(path: &str) -> Result<(), Rejection> {
    for b in path.bytes() {
        match b {
            b'%' => return Err(Rejection::BadRequest("percent-encoded path")),
            b'\\' => return Err(Rejection::BadRequest("backslash in path")),
            0..=0x20 | 0x7f.. => return Err(Rejection::BadRequest("invalid byte in path")),
            _ => {}
        }
    }
    Ok(())
}

/// A stream name, or 404: a name the packager cannot write cannot exist,
/// and reserved names (the control API's folder) are never streams.
fn stream_name(segment: &str) -> Result<String, Rejection> {
    if layout::valid_stream_name(segment) {
        Ok(segment.to_owned())
    } else {
        Err(Rejection::NotFound)
    }
}

/// Reads `_HLS_msn`, `_HLS_part` and `_HLS_skip` (RFC 8216bis 6.2.5): values
/// must be decimal integers or `YES`/`v2`, each may appear once, and
/// `_HLS_part` needs `_HLS_msn`.
fn directives(query: &str) -> Result<Directives, Rejection> {
    let mut msn: Option<u64> = None;
    let mut part: Option<u32> = None;
    let mut skip: Option<SkipRequest> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                let v =
                    decimal(value).ok_or(Rejection::BadRequest("_HLS_msn is not an integer"))?;
                set_once(&mut msn, v, "_HLS_msn given twice")?;
            }
            "_HLS_part" => {
                let v = decimal(value)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(Rejection::BadRequest("_HLS_part is not an integer"))?;
                set_once(&mut part, v, "_HLS_part given twice")?;
            }
            "_HLS_skip" => {
                let v = match value {
                    "YES" => SkipRequest::Yes,
                    "v2" => SkipRequest::V2,
                    _ => return Err(Rejection::BadRequest("_HLS_skip must be YES or v2")),
                };
                set_once(&mut skip, v, "_HLS_skip given twice")?;
            }
            _ => {}
        }
    }
    let block = match (msn, part) {
        (None, Some(_)) => {
            // RFC 8216bis 6.2.5.2: _HLS_part without _HLS_msn is an error.
            return Err(Rejection::BadRequest("_HLS_part without _HLS_msn"));
        }
        (None, None) => None,
        (Some(msn), None) => Some(BlockTarget::Segment(msn)),
        (Some(msn), Some(part)) => Some(BlockTarget::Part(PartId { msn, part })),
    };
    Ok(Directives { block, skip })
}

fn set_once<T>(slot: &mut Option<T>, value: T, twice: &'static str) -> Result<(), Rejection> {
    if slot.replace(value).is_some() {
        return Err(Rejection::BadRequest(twice));
    }
    Ok(())
}

/// A decimal-integer (RFC 8216bis 4.2): digits only, no sign, fits in u64.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    fn rendition() -> RenditionPath {
        RenditionPath {
            stream: "show".into(),
            rendition: "aac".into(),
        }
    }

    fn playlist(query: &str) -> Result<Directives, Rejection> {
        match route("/show/aac/live.m3u8", Some(query))? {
            Route::MediaPlaylist { directives, .. } => Ok(directives),
            other => panic!("routed to {other:?}"),
        }
    }

    #[test]
    fn routes_every_object_of_the_store_layout() {
        assert_eq!(route("/", None), Ok(Route::Home));
        assert_eq!(route(HLSJS_PATH, None), Ok(Route::HlsJs));
        assert_eq!(
            route("/show/", None),
            Ok(Route::ListenerPage {
                stream: "show".into()
            })
        );
        assert_eq!(
            route("/show/index.m3u8", Some("x=1")),
            Ok(Route::Multivariant {
                stream: "show".into()
            })
        );
        for (file, name) in [
            ("init.mp4", MediaName::Init),
            ("12.m4s", MediaName::Segment(12)),
            ("0.m4s", MediaName::Segment(0)),
            ("12.3.m4s", MediaName::Part(PartId { msn: 12, part: 3 })),
        ] {
            assert_eq!(
                route(&format!("/show/aac/{file}"), Some("_HLS_part=x")),
                Ok(Route::Media {
                    rendition: rendition(),
                    name
                }),
                "{file}"
            );
            assert_eq!(name.file().name(), file);
        }
    }

    #[test]
    fn directives_follow_rfc_8216bis_6_2_5() {
        assert_eq!(playlist(""), Ok(Directives::default()));
        assert_eq!(
            playlist("_HLS_msn=7"),
            Ok(Directives {
                block: Some(BlockTarget::Segment(7)),
                skip: None
            })
        );
        assert_eq!(
            playlist("_HLS_part=2&cb=1&_HLS_msn=7&_HLS_skip=v2"),
            Ok(Directives {
                block: Some(BlockTarget::Part(PartId { msn: 7, part: 2 })),
                skip: Some(SkipRequest::V2)
            })
        );
        assert_eq!(
            playlist("_HLS_skip=YES").map(|d| d.skip),
            Ok(Some(SkipRequest::Yes))
        );
        // Leading zeros are a valid decimal-integer in a query value.
        assert_eq!(
            playlist("_HLS_msn=007").map(|d| d.block),
            Ok(Some(BlockTarget::Segment(7)))
        );
    }

    #[test]
    fn malformed_directives_are_bad_requests() {
        for query in [
            "_HLS_part=1",
            "_HLS_msn=",
            "_HLS_msn=x",
            "_HLS_msn=-1",
            "_HLS_msn=+1",
            "_HLS_msn=1.5",
            "_HLS_msn=18446744073709551616",
            "_HLS_msn=1&_HLS_part=4294967296",
            "_HLS_msn=1&_HLS_msn=2",
            "_HLS_skip=yes",
            "_HLS_skip=NO",
            "_HLS_skip",
            "_HLS_msn=%31",
        ] {
            assert!(
                matches!(playlist(query), Err(Rejection::BadRequest(_))),
                "{query:?} was accepted"
            );
        }
    }

    #[test]
    fn hostile_and_unknown_paths_are_refused() {
        let bad = [
            "",
            "show/aac/live.m3u8",
            "//show/aac/live.m3u8",
            "/show//aac/live.m3u8",
            "/show/aac/../../etc/passwd",
            "/../show/index.m3u8",
            "/show/./index.m3u8",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/show/aac/%31.m4s",
            "/show\\aac/live.m3u8",
            "/show/aac/\u{e9}.m4s",
            "/show/aac/1.m4s\u{0}",
        ];
        for path in bad {
            assert!(
                matches!(route(path, None), Err(Rejection::BadRequest(_))),
                "{path:?} was not a bad request: {:?}",
                route(path, None)
            );
        }
        let long = format!("/show/aac/{}.m4s", "1".repeat(MAX_TARGET_LEN));
        assert!(matches!(route(&long, None), Err(Rejection::BadRequest(_))));
        let not_found = [
            "/show",
            "/show/aac/",
            "/show/aac/at/1.0.m3u8",
            "/show/aac/01.m4s",
            "/show/aac/1.01.m4s",
            "/show/aac/1.m4s.m4s",
            "/show/aac/1.4294967296.m4s",
            "/show/aac/live.m3u",
            "/sh*w/aac/live.m3u8",
            "/show/a:c/init.mp4",
            "/show/aac/x/init.mp4",
            "/_onair/other.js",
        ];
        for path in not_found {
            assert_eq!(route(path, None), Err(Rejection::NotFound), "{path:?}");
        }
    }

    #[test]
    fn the_control_folder_is_never_a_stream() {
        for path in [
            "/control/",
            "/control/index.m3u8",
            "/control/aac/live.m3u8",
            "/control/aac/init.mp4",
            "/control/aac/1.m4s",
            "/control/hosts",
            "/control",
        ] {
            assert_eq!(route(path, None), Err(Rejection::NotFound), "{path:?}");
        }
        // Streams whose names merely start with the word stay streams.
        assert_eq!(
            route("/control-room/", None),
            Ok(Route::ListenerPage {
                stream: "control-room".into()
            })
        );
    }

    #[test]
    fn keys_stay_inside_the_stream_prefix() {
        let r = rendition();
        assert_eq!(r.live_key(), "show/aac/live.m3u8");
        assert_eq!(r.at_key(PartId { msn: 3, part: 1 }), "show/aac/at/3.1.m3u8");
    }

    /// Random and hostile targets, built from fragments that matter to the
    /// router (separators, dots, escapes, numbers at the edges of their
    /// types, directive names): routing never panics, and whatever it
    /// accepts names only keys made of valid names and canonical numbers.
    #[test]
    fn routing_never_panics_and_accepts_only_safe_keys() {
        let fragments = [
            "/",
            "//",
            ".",
            "..",
            "%2e",
            "%",
            "\\",
            "show",
            "aac",
            "opus",
            "live.m3u8",
            "index.m3u8",
            "init.mp4",
            ".m4s",
            "0",
            "1",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "4294967295",
            "4294967296",
            "?",
            "&",
            "=",
            "_HLS_msn",
            "_HLS_part",
            "_HLS_skip",
            "YES",
            "v2",
            "-",
            "+",
            "\u{0}",
            "\u{e9}",
            "at",
            " ",
            "_onair",
            "hls.min.js",
            "#",
        ];
        let mut rng = XorShift::new(0x9e37_79b9_7f4a_7c15);
        for _ in 0..50_000 {
            let n = 1 + rng.next() % 12;
            let mut target = String::new();
            for _ in 0..n {
                target.push_str(rng.pick(&fragments));
            }
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target.as_str(), None),
            };
            let Ok(routed) = route(path, query) else {
                continue;
            };
            let keys = match &routed {
                Route::Home | Route::HlsJs => continue,
                Route::ListenerPage { stream } | Route::Multivariant { stream } => {
                    vec![format!("{stream}/index.m3u8")]
                }
                Route::MediaPlaylist { rendition, .. } => vec![rendition.live_key()],
                Route::Media { rendition, name } => vec![rendition.key(name.file())],
            };
            for key in keys {
                let parts: Vec<&str> = key.split('/').collect();
                assert!(
                    parts.iter().all(|p| layout::valid_name(p)),
                    "{target:?} routed to unsafe key {key:?}"
                );
                // The key is exactly the requested path: no aliasing.
                if !matches!(routed, Route::ListenerPage { .. }) {
                    assert_eq!(format!("/{key}"), path, "{target:?}");
                }
            }
        }
    }
}
