//! The object layout of a broadcast: where every object lives in the store.
//! The same names are the URL paths under which origins serve them (a key
//! with a leading `/`), so this is the one place that knows them.
//!
//! ```text
//! {stream}/index.m3u8                        multivariant playlist
//! {stream}/{rendition}/init.mp4              CMAF header
//! {stream}/{rendition}/{msn}.m4s             media segment
//! {stream}/{rendition}/{msn}.{part}.m4s      partial segment
//! {stream}/{rendition}/live.m3u8             newest media playlist
//! {stream}/{rendition}/at/{msn}.{part}.m3u8  the media playlist as it stood
//!                                            when part {msn}.{part} completed
//! ```
//!
//! Contract:
//! - Stream and rendition names pass [`valid_name`]: one key segment and one
//!   URL path segment each, with nothing to escape.
//! - Numbers are canonical decimal (no sign, no leading zero): one object
//!   has exactly one key, so [`ObjectKey::parse`] accepts exactly the keys
//!   [`ObjectKey::key`] writes, and a request can never reach an object
//!   through an alias such as `007.m4s`.
//! - Some stream names are [reserved](RESERVED_STREAM_NAMES) for the
//!   broadcast's own HTTP resources, so listener URLs and operator URLs
//!   never overlap.
//! - Media playlists name their media relative to themselves
//!   ([`rendition_names`]); the multivariant playlist names each rendition's
//!   `live.m3u8` relative to itself ([`variant_uri`]); rendition reports
//!   name the other renditions' `live.m3u8` relative to a media playlist
//!   ([`report_uri`]).
//!
//! Room to grow: a new kind of object is a new [`RenditionFile`] or
//! [`ObjectKey`] variant here (with its [`ObjectKind`]), for example a
//! producer generation folder (`{stream}/{rendition}/g{n}/…`) if two
//! producers ever need separate namespaces; nothing else builds keys.

use std::fmt;
use std::sync::LazyLock;

use crate::hls::{PartId, RenditionNames};

/// Stream names that are never streams: the first path segment of the
/// broadcast's control API and of the origin's own assets.
pub const RESERVED_STREAM_NAMES: &[&str] = &["control", "_onair"];

/// The multivariant playlist's file name under `{stream}/`.
pub const MULTIVARIANT: &str = "index.m3u8";

/// The stream's timing record under `{stream}/` (see
/// `crate::run::StreamTiming`): written once, read by every run of the
/// stream, never served to listeners.
pub const TIMING: &str = "timing.json";

/// The key of `stream`'s timing record.
pub fn timing_key(stream: &str) -> String {
    format!("{stream}/{TIMING}")
}

/// The operator state a standby group shares under `{stream}/` (see
/// `crate::run::operator`): never served to listeners.
pub const OPERATOR: &str = "operator.json";

/// The key of `stream`'s shared operator state.
pub fn operator_key(stream: &str) -> String {
    format!("{stream}/{OPERATOR}")
}

/// The folder of a stream's lease records (see `crate::publish::lease`):
/// never served to listeners.
pub const LEASE_DIR: &str = "lease";

/// The key of generation `generation`'s lease record of `stream`.
pub fn lease_key(stream: &str, generation: u64) -> String {
    format!("{stream}/{LEASE_DIR}/{generation}.json")
}

/// The key of renewal `renewal` of a generation's lease (renewal 0 is the
/// generation's own record, [`lease_key`]).
pub fn lease_renewal_key(stream: &str, generation: u64, renewal: u64) -> String {
    if renewal == 0 {
        lease_key(stream, generation)
    } else {
        format!("{stream}/{LEASE_DIR}/{generation}.{renewal}.json")
    }
}

/// The generation and renewal a lease record's key names, if it is one of
/// `stream`'s (as [`lease_renewal_key`] writes it).
pub fn lease_position(stream: &str, key: &str) -> Option<(u64, u64)> {
    let name = key
        .strip_prefix(stream)?
        .strip_prefix('/')?
        .strip_prefix(LEASE_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".json")?;
    match name.split_once('.') {
        None => Some((canonical_u64(name)?, 0)),
        Some((g, n)) => Some((canonical_u64(g)?, canonical_u64(n).filter(|n| *n > 0)?)),
    }
}

/// The newest media playlist's file name under `{stream}/{rendition}/`.
const LIVE: &str = "live.m3u8";
/// The folder of the per-part playlists under `{stream}/{rendition}/`.
const AT: &str = "at/";
/// File name patterns of a rendition's media, as [`RenditionNames`] reads
/// them.
const INIT: &str = "init.mp4";
const SEGMENT: &str = "{msn}.m4s";
const PART: &str = "{msn}.{part}.m4s";

/// The names of a rendition's media inside its folder, which are also the
/// URIs its media playlists use for them.
pub fn rendition_names() -> &'static RenditionNames {
    static NAMES: LazyLock<RenditionNames> = LazyLock::new(|| {
        RenditionNames::new(INIT, SEGMENT, PART).expect("the layout's patterns are valid")
    });
    &NAMES
}

/// True if `name` is safe as one object key segment and one URL path
/// segment: 1 to 64 ASCII letters, digits, `-`, `_` and `.`, and not a dot
/// segment.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// True if `name` can name a stream: a [`valid_name`] that is not
/// [reserved](RESERVED_STREAM_NAMES).
pub fn valid_stream_name(name: &str) -> bool {
    valid_name(name) && !RESERVED_STREAM_NAMES.contains(&name)
}

/// The URI of a rendition's `live.m3u8` in the multivariant playlist
/// (relative to `{stream}/index.m3u8`).
pub fn variant_uri(rendition: &str) -> String {
    format!("{rendition}/{LIVE}")
}

/// The URI of another rendition's `live.m3u8` in a rendition report
/// (relative to `{stream}/{rendition}/…`, RFC 8216bis §4.4.5.4).
pub fn report_uri(rendition: &str) -> String {
    format!("../{rendition}/{LIVE}")
}

/// What an object is, which decides how it is stored and cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A CMAF header (`init.mp4`: `ftyp` + `moov`).
    Init,
    /// A media segment or a part (`{msn}.m4s`, `{msn}.{part}.m4s`).
    Media,
    /// A media playlist as it stood when one part completed
    /// (`at/{msn}.{part}.m3u8`); the answer to a blocking playlist reload.
    PartPlaylist,
    /// The newest media playlist (`live.m3u8`), rewritten every part.
    LivePlaylist,
    /// The multivariant playlist (`index.m3u8`).
    Multivariant,
    /// A web page, for a store served as a plain website (no layout key
    /// names one).
    Page,
}

/// One year, the conventional "forever" of HTTP caching (RFC 9111 5.2.2.1).
const ONE_YEAR_S: u32 = 31_536_000;

/// How long a web page may be cached: long enough to absorb a burst of
/// listeners arriving together, short enough that an edit shows within a minute.
const PAGE_MAX_AGE_S: u32 = 60;

impl ObjectKind {
    /// The `Content-Type` to store and serve.
    ///
    /// - Playlists: `application/vnd.apple.mpegurl` (RFC 8216bis 4).
    /// - Init and media: `audio/mp4` (RFC 4337 2: MPEG-4 files with audio
    ///   and no visual content). A media segment on its own could also be
    ///   labelled `video/iso.segment`, the type registered for ISO BMFF
    ///   segments without their initialization (ISO/IEC 23009-1 / IANA), but
    ///   for audio-only CMAF that label says "video", MSE and CDNs key their
    ///   handling on `audio/mp4`, and Apple's HLS authoring guidance lists
    ///   `audio/mp4` for audio fMP4, so one type serves both init and media.
    /// - Pages: `text/html; charset=utf-8`.
    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Init | Self::Media => "audio/mp4",
            Self::PartPlaylist | Self::LivePlaylist | Self::Multivariant => {
                "application/vnd.apple.mpegurl"
            }
            Self::Page => "text/html; charset=utf-8",
        }
    }

    /// The `Cache-Control` to store and serve, given the playlist's
    /// `EXT-X-TARGETDURATION` (seconds) and `PART-TARGET` (milliseconds).
    ///
    /// - Init and media never change: cached for a year, `immutable`.
    /// - An `at/` playlist never changes either, but is only useful while its
    ///   part is near the live edge: 6 target durations, the span of the
    ///   CAN-SKIP-UNTIL window a delta update may refer back to.
    /// - `live.m3u8` changes every part: half a part target. `max-age` counts
    ///   whole seconds (RFC 9111 1.2.2), so sub-second halves round down to 0,
    ///   that is "revalidate every time"; blocking reloads are answered from
    ///   the cacheable `at/` objects instead.
    /// - The multivariant playlist rarely changes: one target duration.
    /// - Pages: one minute.
    pub fn cache_control(&self, target_duration_s: u32, part_target_ms: u32) -> String {
        match self {
            Self::Init | Self::Media => format!("public, max-age={ONE_YEAR_S}, immutable"),
            Self::PartPlaylist => {
                format!("public, max-age={}", target_duration_s.saturating_mul(6))
            }
            Self::LivePlaylist => format!("public, max-age={}", part_target_ms / 2 / 1000),
            Self::Multivariant => format!("public, max-age={target_duration_s}"),
            Self::Page => format!("public, max-age={PAGE_MAX_AGE_S}"),
        }
    }

    /// Whether an object of this kind, once stored, must never change.
    pub fn immutable(&self) -> bool {
        matches!(self, Self::Init | Self::Media | Self::PartPlaylist)
    }
}

/// One rendition of one stream: the folder `{stream}/{rendition}/`. Both
/// names are [`valid_name`]s and the stream name is not reserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenditionPath {
    /// Stream name.
    pub stream: String,
    /// Rendition folder name (`aac`, `opus`).
    pub rendition: String,
}

impl RenditionPath {
    /// The folder of `rendition` in `stream`, if both names can be written.
    pub fn new(stream: &str, rendition: &str) -> Option<RenditionPath> {
        (valid_stream_name(stream) && valid_name(rendition)).then(|| RenditionPath {
            stream: stream.to_owned(),
            rendition: rendition.to_owned(),
        })
    }

    /// The key of `file` in this folder.
    pub fn key(&self, file: RenditionFile) -> String {
        format!("{}/{}/{}", self.stream, self.rendition, file.name())
    }

    /// The key of the rendition's newest media playlist.
    pub fn live_key(&self) -> String {
        self.key(RenditionFile::Live)
    }

    /// The key of the immutable playlist as it stood when `id` completed.
    pub fn at_key(&self, id: PartId) -> String {
        self.key(RenditionFile::At(id))
    }
}

/// An object in a rendition's folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RenditionFile {
    /// `init.mp4`.
    Init,
    /// `{msn}.m4s`: a whole segment.
    Segment(u64),
    /// `{msn}.{part}.m4s`: a Partial Segment.
    Part(PartId),
    /// `live.m3u8`.
    Live,
    /// `at/{msn}.{part}.m3u8`.
    At(PartId),
}

impl RenditionFile {
    /// The object's name inside the rendition's folder (for media, also the
    /// URI a media playlist gives it).
    pub fn name(&self) -> String {
        let names = rendition_names();
        match self {
            Self::Init => names.init_uri().to_owned(),
            Self::Segment(msn) => names.segment_uri(*msn),
            Self::Part(id) => names.part_uri(*id),
            Self::Live => LIVE.to_owned(),
            Self::At(id) => format!("{AT}{}.{}.m3u8", id.msn, id.part),
        }
    }

    /// Reads a name inside a rendition's folder, as [`name`](Self::name)
    /// writes it; anything else (including non-canonical numbers) is `None`.
    /// Also reads the URIs of a media playlist's parts and preload hint.
    pub fn parse(name: &str) -> Option<RenditionFile> {
        if name == INIT {
            return Some(Self::Init);
        }
        if name == LIVE {
            return Some(Self::Live);
        }
        if let Some(at) = name.strip_prefix(AT) {
            let (msn, part) = at.strip_suffix(".m3u8")?.split_once('.')?;
            return Some(Self::At(part_id(msn, part)?));
        }
        let stem = name.strip_suffix(".m4s")?;
        match stem.split_once('.') {
            None => canonical_u64(stem).map(Self::Segment),
            Some((msn, part)) => Some(Self::Part(part_id(msn, part)?)),
        }
    }

    /// What the object is.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Init => ObjectKind::Init,
            Self::Segment(_) | Self::Part(_) => ObjectKind::Media,
            Self::Live => ObjectKind::LivePlaylist,
            Self::At(_) => ObjectKind::PartPlaylist,
        }
    }
}

/// The key of any object of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `{stream}/index.m3u8`.
    Multivariant {
        /// Stream name.
        stream: String,
    },
    /// An object in a rendition's folder.
    Rendition {
        /// The folder.
        path: RenditionPath,
        /// The object.
        file: RenditionFile,
    },
}

impl ObjectKey {
    /// The multivariant playlist of `stream`.
    pub fn multivariant(stream: &str) -> ObjectKey {
        ObjectKey::Multivariant {
            stream: stream.to_owned(),
        }
    }

    /// The store key.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Reads a store key as [`key`](Self::key) writes it; `None` for any
    /// key that is not part of the layout.
    pub fn parse(key: &str) -> Option<ObjectKey> {
        let (stream, rest) = key.split_once('/')?;
        if !valid_stream_name(stream) {
            return None;
        }
        if rest == MULTIVARIANT {
            return Some(ObjectKey::multivariant(stream));
        }
        let (rendition, file) = rest.split_once('/')?;
        Some(ObjectKey::Rendition {
            path: RenditionPath::new(stream, rendition)?,
            file: RenditionFile::parse(file)?,
        })
    }

    /// What the object is.
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Multivariant { .. } => ObjectKind::Multivariant,
            Self::Rendition { file, .. } => file.kind(),
        }
    }

    /// The stream the object belongs to.
    pub fn stream(&self) -> &str {
        match self {
            Self::Multivariant { stream } => stream,
            Self::Rendition { path, .. } => &path.stream,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Multivariant { stream } => write!(f, "{stream}/{MULTIVARIANT}"),
            Self::Rendition { path, file } => {
                write!(f, "{}/{}/{}", path.stream, path.rendition, file.name())
            }
        }
    }
}

fn part_id(msn: &str, part: &str) -> Option<PartId> {
    Some(PartId {
        msn: canonical_u64(msn)?,
        part: u32::try_from(canonical_u64(part)?).ok()?,
    })
}

/// A number as the packager writes it: decimal digits without a leading
/// zero (except `0` itself), fitting in a `u64`.
fn canonical_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::XorShift;

    fn path(stream: &str, rendition: &str) -> RenditionPath {
        RenditionPath::new(stream, rendition).expect("valid names")
    }

    #[test]
    fn content_types_follow_the_hls_and_mp4_registrations() {
        assert_eq!(ObjectKind::Init.content_type(), "audio/mp4");
        assert_eq!(ObjectKind::Media.content_type(), "audio/mp4");
        for kind in [
            ObjectKind::PartPlaylist,
            ObjectKind::LivePlaylist,
            ObjectKind::Multivariant,
        ] {
            assert_eq!(kind.content_type(), "application/vnd.apple.mpegurl");
        }
        assert_eq!(ObjectKind::Page.content_type(), "text/html; charset=utf-8");
    }

    #[test]
    fn cache_control_for_default_timing() {
        let cc = |kind: ObjectKind| kind.cache_control(2, 320);
        assert_eq!(cc(ObjectKind::Init), "public, max-age=31536000, immutable");
        assert_eq!(cc(ObjectKind::Media), "public, max-age=31536000, immutable");
        assert_eq!(cc(ObjectKind::PartPlaylist), "public, max-age=12");
        assert_eq!(cc(ObjectKind::LivePlaylist), "public, max-age=0");
        assert_eq!(cc(ObjectKind::Multivariant), "public, max-age=2");
        assert_eq!(cc(ObjectKind::Page), "public, max-age=60");
    }

    #[test]
    fn cache_control_scales_with_timing() {
        assert_eq!(
            ObjectKind::PartPlaylist.cache_control(6, 2000),
            "public, max-age=36"
        );
        assert_eq!(
            ObjectKind::LivePlaylist.cache_control(6, 2000),
            "public, max-age=1"
        );
        assert_eq!(
            ObjectKind::LivePlaylist.cache_control(6, 1999),
            "public, max-age=0"
        );
        assert_eq!(
            ObjectKind::PartPlaylist.cache_control(u32::MAX, 0),
            format!("public, max-age={}", u32::MAX)
        );
    }

    #[test]
    fn only_media_init_and_part_playlists_are_immutable() {
        assert!(ObjectKind::Init.immutable());
        assert!(ObjectKind::Media.immutable());
        assert!(ObjectKind::PartPlaylist.immutable());
        assert!(!ObjectKind::LivePlaylist.immutable());
        assert!(!ObjectKind::Multivariant.immutable());
        assert!(!ObjectKind::Page.immutable());
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let r = path("show", "aac");
        let id = PartId { msn: 12, part: 3 };
        assert_eq!(ObjectKey::multivariant("show").key(), "show/index.m3u8");
        assert_eq!(r.key(RenditionFile::Init), "show/aac/init.mp4");
        assert_eq!(r.key(RenditionFile::Segment(12)), "show/aac/12.m4s");
        assert_eq!(r.key(RenditionFile::Part(id)), "show/aac/12.3.m4s");
        assert_eq!(r.live_key(), "show/aac/live.m3u8");
        assert_eq!(r.at_key(id), "show/aac/at/12.3.m3u8");
        assert_eq!(variant_uri("aac"), "aac/live.m3u8");
        assert_eq!(report_uri("opus"), "../opus/live.m3u8");
    }

    #[test]
    fn kinds_follow_the_files() {
        let id = PartId { msn: 0, part: 0 };
        let kinds = [
            ("s/index.m3u8", ObjectKind::Multivariant),
            ("s/a/init.mp4", ObjectKind::Init),
            ("s/a/0.m4s", ObjectKind::Media),
            ("s/a/0.0.m4s", ObjectKind::Media),
            ("s/a/live.m3u8", ObjectKind::LivePlaylist),
            ("s/a/at/0.0.m3u8", ObjectKind::PartPlaylist),
        ];
        for (key, kind) in kinds {
            assert_eq!(ObjectKey::parse(key).map(|k| k.kind()), Some(kind), "{key}");
        }
        assert_eq!(RenditionFile::At(id).kind(), ObjectKind::PartPlaylist);
    }

    #[test]
    fn only_canonical_layout_keys_parse() {
        for key in [
            "",
            "show",
            "show/",
            "show/index.m3u8/x",
            "show/aac",
            "show/aac/",
            "show/aac/007.m4s",
            "show/aac/1.01.m4s",
            "show/aac/-1.m4s",
            "show/aac/+1.m4s",
            "show/aac/1.m4s.m4s",
            "show/aac/1.4294967296.m4s",
            "show/aac/18446744073709551616.m4s",
            "show/aac/at/1.m3u8",
            "show/aac/at/01.0.m3u8",
            "show/aac/x/init.mp4",
            "show/a:c/init.mp4",
            "sh*w/aac/live.m3u8",
            "../aac/live.m3u8",
            "show/../live.m3u8",
            "control/index.m3u8",
            "control/aac/live.m3u8",
            "_onair/index.m3u8",
        ] {
            assert_eq!(ObjectKey::parse(key), None, "{key:?}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("morning-show_2.0"));
        assert!(valid_name(&"x".repeat(64)));
        for bad in ["", ".", "..", "a/b", "a b", "é", "a%20", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_name("control") && !valid_stream_name("control"));
        assert!(RenditionPath::new("control", "aac").is_none());
        assert!(RenditionPath::new("show", "control").is_some());
    }

    #[test]
    fn media_names_are_the_playlist_uris() {
        let names = rendition_names();
        let id = PartId { msn: 7, part: 2 };
        assert_eq!(RenditionFile::Init.name(), names.init_uri());
        assert_eq!(RenditionFile::Segment(7).name(), names.segment_uri(7));
        assert_eq!(RenditionFile::Part(id).name(), names.part_uri(id));
    }

    /// A random layout key: names from the whole valid alphabet, numbers
    /// at the edges of their types as often as in between.
    fn random_key(rng: &mut XorShift) -> ObjectKey {
        const ALPHABET: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.";
        let name = |rng: &mut XorShift| loop {
            let len = 1 + (rng.next() % 64) as usize;
            let name: String = (0..len)
                .map(|_| char::from(ALPHABET[(rng.next() % ALPHABET.len() as u64) as usize]))
                .collect();
            if valid_stream_name(&name) {
                return name;
            }
        };
        let number = |rng: &mut XorShift| match rng.next() % 4 {
            0 => 0,
            1 => u64::MAX,
            2 => rng.next() % 1000,
            _ => rng.next(),
        };
        let id = |rng: &mut XorShift| PartId {
            msn: number(rng),
            part: number(rng) as u32,
        };
        let stream = name(rng);
        let file = match rng.next() % 6 {
            0 => return ObjectKey::Multivariant { stream },
            1 => RenditionFile::Init,
            2 => RenditionFile::Live,
            3 => RenditionFile::Segment(number(rng)),
            4 => RenditionFile::Part(id(rng)),
            _ => RenditionFile::At(id(rng)),
        };
        ObjectKey::Rendition {
            path: RenditionPath {
                stream,
                rendition: name(rng),
            },
            file,
        }
    }

    #[test]
    fn every_key_round_trips() {
        let mut rng = XorShift::new(0x5eed_1a70);
        for _ in 0..20_000 {
            let key = random_key(&mut rng);
            assert_eq!(ObjectKey::parse(&key.key()), Some(key.clone()), "{key}");
        }
    }

    /// Keys mutated one byte at a time (and random bytes): parsing never
    /// panics, and whatever parses is written back byte for byte, so no
    /// two texts name one object.
    #[test]
    fn parsing_accepts_only_what_it_writes() {
        const BYTES: &[u8] = b"/.0123456789amt-_%\\ \x00";
        let mut rng = XorShift::new(0x000b_1ec7);
        for _ in 0..50_000 {
            let mut bytes = random_key(&mut rng).key().into_bytes();
            for _ in 0..1 + rng.next() % 3 {
                let at = (rng.next() % bytes.len() as u64) as usize;
                let b = BYTES[(rng.next() % BYTES.len() as u64) as usize];
                match rng.next() % 3 {
                    0 => bytes[at] = b,
                    1 => bytes.insert(at, b),
                    _ => {
                        bytes.remove(at);
                    }
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Some(key) = ObjectKey::parse(&text) {
                assert_eq!(key.key(), text, "{text:?} parsed as {key:?}");
            }
        }
    }
}
