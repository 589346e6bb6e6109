//! A Low-Latency HLS listener simulator, for load tests and benchmarks.
//!
//! Each simulated listener is a tokio task that behaves like an LL-HLS
//! player (RFC 8216bis-16 6.2.5.2 and 6.2.6):
//! 1. it loads the playlist URL; a multivariant playlist is followed to its
//!    first variant (or, with `all_variants`, to variants in turn, one
//!    listener each);
//! 2. it loads the media playlist, the initialization section and the newest
//!    listed part;
//! 3. then, until the run ends, it asks for the part after the last listed
//!    one with a blocking reload (`?_HLS_msn=M&_HLS_part=P`) and, at the same
//!    time, GETs the part named by `EXT-X-PRELOAD-HINT` (which the server holds
//!    until the part exists); when the playlist arrives, it fetches every
//!    newly listed part it does not already hold.
//!
//! With `segment_wakeups`, step 3 asks for the first part of the next
//! segment instead of the next part: every listener then waits for the same
//! part, and all are woken at once, once per segment (a wake-up benchmark).
//!
//! Every listener has its own HTTP/1.1 client with a keep-alive pool, as
//! distinct players have their own connections. It asks for gzip, as players
//! do, and counts the bytes on the wire.
//!
//! What a run measures ([`Report`]): requests per second, bytes, errors by
//! resource and kind, how many times a playlist named a part that then
//! answered 404 (a correct origin and CDN make this 0), and two delays:
//! - *part delay*: from a part's publication to a listener holding all of
//!   its bytes, for every part fetched after the first playlist;
//! - *playlist delay*: from a part's publication to a listener holding the
//!   playlist that announces it, for blocking reloads sent before the part
//!   existed (so it measures how fast waiting requests are woken).
//!
//! A part's publication time is when it became complete in program time:
//! the `EXT-X-PROGRAM-DATE-TIME` of its segment plus the durations of the
//! parts before it and its own. Clock assumption: the packager derives its
//! dates from one wall-clock reading at start and paces production by the
//! same clock, and the simulator compares them with its own wall clock, so
//! both must run on one machine (or on well-synchronised clocks). The delays
//! therefore include the packager's own latency (encoding, storing) besides
//! the origin's and the network's; a run with one listener measures that
//! floor.
//!
//! The pure parts (which part comes next, which URL asks for it, when a part
//! was published, percentiles) are free functions with unit tests; the
//! tokio driver below them owns the sockets and the clock.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::Instant;
use url::Url;

use onair::hls::{HintType, MediaPlaylist, PartId, ProgramDateTime};
use onair::time::{SAMPLE_RATE, rescale};

/// How long a listener waits after a failed request before the next one, so
/// that a failing server is not hammered in a tight loop.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Idle keep-alive connections a listener keeps: one for the blocking
/// playlist, one for the hinted part.
const IDLE_CONNECTIONS: usize = 2;

/// `onair loadtest`: what to load and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadtestArgs {
    /// URL of an LL-HLS media playlist, or of a multivariant playlist
    /// (index.m3u8), whose first variant is then played (http:// only).
    #[arg(value_parser = parse_http_url)]
    pub url: Url,
    /// Number of simulated listeners.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub listeners: u32,
    /// How long the run lasts, in seconds (listeners stop mid-request).
    #[arg(long, default_value = "10", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Start the listeners evenly spread over this many seconds, so that
    /// thousands of them do not all connect in the same instant.
    #[arg(long, default_value = "0", value_parser = parse_seconds)]
    pub ramp: Duration,
    /// At most this many requests per listener.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Spread the listeners over every variant of a multivariant playlist
    /// (round robin) instead of playing the first.
    #[arg(long)]
    pub all_variants: bool,
    /// Do not request preload-hinted parts before they are listed.
    #[arg(long)]
    pub no_hints: bool,
    /// Blocking playlist reloads only: fetch no media at all.
    #[arg(long)]
    pub playlists_only: bool,
    /// Each blocking reload asks for the first part of the next segment
    /// instead of the next part, so that every listener waits for the same
    /// part and all are woken together, once per segment (for wake-up
    /// benchmarks; meant with --playlists-only).
    #[arg(long)]
    pub segment_wakeups: bool,
    /// Give up on one request after this many seconds (counted as a timeout).
    #[arg(long, default_value = "15", value_parser = parse_seconds)]
    pub request_timeout: Duration,
}

impl LoadtestArgs {
    /// The defaults of the command line for `url` and `listeners`.
    // Used by the end-to-end tests, which include this file; the command
    // line builds its arguments with clap.
    #[allow(dead_code)]
    pub fn new(url: Url, listeners: u32) -> Self {
        LoadtestArgs {
            url,
            listeners,
            duration: Duration::from_secs(10),
            ramp: Duration::ZERO,
            max_requests: 1_000_000,
            all_variants: false,
            no_hints: false,
            playlists_only: false,
            segment_wakeups: false,
            request_timeout: Duration::from_secs(15),
        }
    }
}

fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if url.scheme() == "http" && url.host().is_some() {
        Ok(url)
    } else {
        Err(format!("{s:?}: only http:// URLs are supported"))
    }
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds"))
}

/// Why a run could not start. Failures during a run are not errors: they are
/// counted in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// The URL cannot be loaded by this simulator; fix the command line.
    #[error("{url}: only http:// URLs with a host are supported")]
    UnsupportedUrl {
        /// The URL given.
        url: Url,
    },
    /// No listener was asked for; fix the command line.
    #[error("at least one listener is needed")]
    NoListeners,
    /// A listener task panicked: a bug in the simulator.
    #[error("listener task failed: {0}")]
    Listener(#[from] tokio::task::JoinError),
}

// ---------------------------------------------------------------------------
// Pure player logic
// ---------------------------------------------------------------------------

/// A Partial Segment as a media playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPart {
    /// Its segment's Media Sequence Number and its index in that segment.
    pub id: PartId,
    /// Its URI as written in the playlist (relative to the playlist).
    pub uri: String,
    /// When it became complete in program time: its segment's
    /// `EXT-X-PROGRAM-DATE-TIME` plus the parts before it plus its own
    /// duration. `None` when no date applies (no date since the last
    /// discontinuity).
    pub completed_at: Option<ProgramDateTime>,
}

/// Every Partial Segment `playlist` lists, oldest first, with the time each
/// became complete.
///
/// A segment without its own `EXT-X-PROGRAM-DATE-TIME` continues the date of
/// the previous one (RFC 8216bis 4.4.4.6), except after a discontinuity,
/// where the date is unknown until the next tag.
pub fn listed_parts(playlist: &MediaPlaylist) -> Vec<ListedPart> {
    let mut out = Vec::new();
    let mut msn = playlist.first_listed_msn();
    let mut date: Option<ProgramDateTime> = None;
    let open = playlist
        .open
        .iter()
        .map(|o| (o.discontinuity, o.program_date_time, &o.parts, None));
    let complete = playlist.segments.iter().map(|s| {
        (
            s.discontinuity,
            s.program_date_time,
            &s.parts,
            Some(s.duration),
        )
    });
    for (discontinuity, segment_date, parts, duration) in complete.chain(open) {
        if segment_date.is_some() {
            date = segment_date;
        } else if discontinuity {
            date = None;
        }
        let mut end = date;
        for (index, part) in parts.iter().enumerate() {
            end = end.and_then(|t| plus_samples(t, part.duration));
            out.push(ListedPart {
                id: PartId {
                    msn,
                    part: u32::try_from(index).unwrap_or(u32::MAX),
                },
                uri: part.uri.clone(),
                completed_at: end,
            });
        }
        // The next segment starts where this one ends: its EXTINF is the
        // authority, the parts may be rounded.
        date = match duration {
            Some(d) => date.and_then(|t| plus_samples(t, d)),
            None => end,
        };
        msn = msn.saturating_add(1);
    }
    out
}

/// `t` plus `samples` of program time, to the microsecond.
fn plus_samples(t: ProgramDateTime, samples: u64) -> Option<ProgramDateTime> {
    let micros = i64::try_from(rescale(samples, SAMPLE_RATE, 1_000_000)).ok()?;
    t.checked_add_signed(TimeDelta::microseconds(micros))
}

/// The part a player asks for with its next blocking reload: the one after
/// the last part `playlist` lists (RFC 8216bis 6.2.5.2; 6.3.2 asks a client
/// that plays parts to request the next one).
///
/// The open segment's next part when it has parts; otherwise part 0 of the
/// open segment (the segment after the last complete one). Asking for part 0
/// of the next segment, rather than for the part past the end of a complete
/// one, keeps one URL per part, so a CDN caches each answer once.
pub fn next_part(playlist: &MediaPlaylist) -> PartId {
    let parts = playlist.open.as_ref().map_or(0, |o| o.parts.len());
    PartId {
        msn: playlist.open_msn(),
        part: u32::try_from(parts).unwrap_or(u32::MAX),
    }
}

/// The first part of the next segment to start after the last part
/// `playlist` lists: [`next_part`] when that begins a segment, else part 0
/// of the segment after it. Listeners that ask for this converge on the same
/// part whenever they joined, and are woken together once per segment.
pub fn next_segment_start(playlist: &MediaPlaylist) -> PartId {
    let next = next_part(playlist);
    if next.part == 0 {
        next
    } else {
        PartId {
            msn: next.msn.saturating_add(1),
            part: 0,
        }
    }
}

/// Whether `playlist` can answer a blocking request for `target`: it lists
/// the part (or anything later), or it has ended.
pub fn satisfies(playlist: &MediaPlaylist, target: PartId) -> bool {
    playlist.end_list || next_part(playlist) > target
}

/// The URL of a blocking reload of `playlist_url` for `target`: its query
/// with any previous delivery directives replaced by `_HLS_msn` and
/// `_HLS_part` (RFC 8216bis 6.2.5.2).
pub fn blocking_url(playlist_url: &Url, target: PartId) -> Url {
    let kept: Vec<(String, String)> = playlist_url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("_HLS_"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = playlist_url.clone();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("_HLS_msn", &target.msn.to_string())
        .append_pair("_HLS_part", &target.part.to_string());
    url
}

/// Whether `text` is a multivariant playlist (RFC 8216bis 4.4.6) rather than
/// a media playlist.
pub fn is_multivariant(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("#EXT-X-STREAM-INF"))
}

/// The media playlists a multivariant playlist offers, in order, without
/// repeats: the URI line after each `EXT-X-STREAM-INF` (RFC 8216bis
/// 4.4.6.2), then the `URI` of each `EXT-X-MEDIA` rendition (4.4.6.1; an
/// audio rendition without one is carried by the variant itself). The first
/// is what a player starts with.
pub fn variant_uris(text: &str) -> Vec<String> {
    let mut variants = Vec::new();
    let mut renditions = Vec::new();
    let mut after_stream_inf = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with("#EXT-X-STREAM-INF") {
            after_stream_inf = true;
        } else if let Some(attributes) = line.strip_prefix("#EXT-X-MEDIA:") {
            renditions.extend(quoted_attribute(attributes, "URI").map(str::to_owned));
        } else if after_stream_inf && !line.is_empty() && !line.starts_with('#') {
            variants.push(line.to_owned());
            after_stream_inf = false;
        }
    }
    let mut uris: Vec<String> = Vec::new();
    for uri in variants.into_iter().chain(renditions) {
        if !uris.contains(&uri) {
            uris.push(uri);
        }
    }
    uris
}

/// The value of the quoted-string attribute `name` in an attribute list
/// (RFC 8216bis 4.2): `NAME="value"` at the start or after a comma. Quoted
/// strings contain no double quote, so the value ends at the next one.
fn quoted_attribute<'a>(attributes: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attributes;
    loop {
        let after_name = rest.strip_prefix(name).and_then(|r| r.strip_prefix("=\""));
        if let Some(value) = after_name {
            return value.split('"').next();
        }
        // Skip this attribute, stepping over a quoted value that may hold
        // commas.
        let mut in_quotes = false;
        let end = rest.char_indices().find_map(|(i, c)| match c {
            '"' => {
                in_quotes = !in_quotes;
                None
            }
            ',' if !in_quotes => Some(i),
            _ => None,
        })?;
        rest = rest.get(end + 1..)?;
    }
}

/// The URI of the initialization section in force at the end of the
/// playlist: the last `EXT-X-MAP` (RFC 8216bis 4.4.4.5).
pub fn init_uri(playlist: &MediaPlaylist) -> Option<&str> {
    let open = playlist.open.as_ref().and_then(|o| o.map.as_ref());
    open.or_else(|| playlist.segments.iter().rev().find_map(|s| s.map.as_ref()))
        .map(|m| m.uri.as_str())
}

/// The nearest-rank quantile `num / den` of `sorted` (ascending): the
/// smallest value with at least that fraction of the values at or below it.
/// `None` for an empty slice.
pub fn quantile(sorted: &[i64], num: u64, den: u64) -> Option<i64> {
    let n = sorted.len() as u64;
    if n == 0 || den == 0 {
        return None;
    }
    let rank = (n.saturating_mul(num)).div_ceil(den).clamp(1, n);
    sorted.get(usize::try_from(rank - 1).ok()?).copied()
}

/// Decodes a response body according to its `Content-Encoding`.
fn decode_body(encoding: Option<&[u8]>, body: Bytes) -> std::io::Result<Bytes> {
    match encoding {
        None | Some(b"identity") => Ok(body),
        Some(b"gzip") => {
            let mut out = Vec::with_capacity(body.len() * 4);
            flate2::read::GzDecoder::new(body.as_ref()).read_to_end(&mut out)?;
            Ok(out.into())
        }
        Some(other) => Err(std::io::Error::other(format!(
            "unsupported Content-Encoding {:?}",
            String::from_utf8_lossy(other)
        ))),
    }
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// The multivariant playlist.
    Multivariant,
    /// The media playlist without delivery directives.
    Playlist,
    /// A blocking reload of the media playlist.
    BlockingPlaylist,
    /// The initialization section.
    Init,
    /// A listed part.
    Part,
    /// A preload-hinted part, requested before it was listed.
    HintedPart,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Multivariant => "multivariant",
            Resource::Playlist => "playlist",
            Resource::BlockingPlaylist => "blocking-playlist",
            Resource::Init => "init",
            Resource::Part => "part",
            Resource::HintedPart => "hinted-part",
        })
    }
}

/// How a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// The server answered with this status instead of 200.
    Status(u16),
    /// No answer: the connection could not be made or broke.
    Connection,
    /// No complete answer within the request timeout.
    Timeout,
    /// The body could not be read or decoded.
    Body,
    /// A playlist that does not parse, or a multivariant playlist without
    /// variants.
    Unparsable,
    /// A media playlist without `CAN-BLOCK-RELOAD=YES` and parts: not
    /// Low-Latency HLS, so the listener stopped.
    NotLowLatency,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(s) => write!(f, "{s}"),
            Failure::Connection => f.write_str("connection"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Body => f.write_str("body"),
            Failure::Unparsable => f.write_str("unparsable"),
            Failure::NotLowLatency => f.write_str("not-low-latency"),
        }
    }
}

/// Distribution of a delay over all listeners, in microseconds. Negative
/// values mean a listener held a part before its nominal publication time
/// (clock offset between packager and simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayStats {
    /// Number of samples.
    pub count: usize,
    /// Smallest.
    pub min_us: i64,
    /// Median (nearest rank).
    pub p50_us: i64,
    /// 99th percentile (nearest rank).
    pub p99_us: i64,
    /// Largest.
    pub max_us: i64,
}

impl DelayStats {
    /// The statistics of `samples`; `None` when there are none.
    pub fn of(mut samples: Vec<i64>) -> Option<DelayStats> {
        samples.sort_unstable();
        Some(DelayStats {
            count: samples.len(),
            min_us: *samples.first()?,
            p50_us: quantile(&samples, 50, 100)?,
            p99_us: quantile(&samples, 99, 100)?,
            max_us: *samples.last()?,
        })
    }
}

impl fmt::Display for DelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: i64| us as f64 / 1000.0;
        write!(
            f,
            "count={} min={:.1} p50={:.1} p99={:.1} max={:.1}",
            self.count,
            ms(self.min_us),
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us)
        )
    }
}

/// The outcome of a run, summed over all listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Listeners started.
    pub listeners: u32,
    /// Wall-clock length of the run.
    pub elapsed: Duration,
    /// Requests sent (answered or not).
    pub requests: u64,
    /// Response body bytes received, as on the wire (compressed).
    pub bytes: u64,
    /// Media playlists received and parsed.
    pub playlists: u64,
    /// Parts received with status 200 after the first playlist (listed or
    /// hinted).
    pub parts: u64,
    /// Times a listed part answered 404: a playlist named a part that could
    /// not be fetched. A correct origin (and CDN) keeps this at 0.
    pub listed_part_not_found: u64,
    /// Blocking reloads answered with a playlist that does not yet list the
    /// requested part (a server that ignores delivery directives).
    pub stale_playlists: u64,
    /// Failed requests by resource and kind.
    pub errors: BTreeMap<(Resource, Failure), u64>,
    /// Part publication to the part's bytes held by a listener.
    pub part_delay: Option<DelayStats>,
    /// Part publication to the blocking playlist announcing it held by a
    /// listener that asked before the part existed.
    pub playlist_delay: Option<DelayStats>,
}

impl Report {
    /// Requests per second over the run.
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Failed requests of every kind.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One `key=value` line per figure, stable for scripts to read.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "listeners={}", self.listeners)?;
        writeln!(f, "duration_s={:.3}", self.elapsed.as_secs_f64())?;
        writeln!(f, "requests={}", self.requests)?;
        writeln!(f, "requests_per_s={:.1}", self.requests_per_second())?;
        writeln!(f, "bytes={}", self.bytes)?;
        writeln!(f, "playlists={}", self.playlists)?;
        writeln!(f, "parts={}", self.parts)?;
        writeln!(f, "listed_part_not_found={}", self.listed_part_not_found)?;
        writeln!(f, "stale_playlists={}", self.stale_playlists)?;
        writeln!(f, "errors={}", self.error_count())?;
        for ((resource, failure), n) in &self.errors {
            writeln!(f, "error {resource} {failure}={n}")?;
        }
        match &self.part_delay {
            Some(d) => writeln!(f, "part_delay_ms {d}")?,
            None => writeln!(f, "part_delay_ms count=0")?,
        }
        match &self.playlist_delay {
            Some(d) => write!(f, "playlist_delay_ms {d}"),
            None => write!(f, "playlist_delay_ms count=0"),
        }
    }
}

/// One listener's counts, merged into the [`Report`] at the end.
#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    bytes: u64,
    playlists: u64,
    parts: u64,
    listed_part_not_found: u64,
    stale_playlists: u64,
    errors: BTreeMap<(Resource, Failure), u64>,
    part_delays: Vec<i64>,
    playlist_delays: Vec<i64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.playlists += other.playlists;
        self.parts += other.parts;
        self.listed_part_not_found += other.listed_part_not_found;
        self.stale_playlists += other.stale_playlists;
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
        self.part_delays.extend(other.part_delays);
        self.playlist_delays.extend(other.playlist_delays);
    }

    fn error(&mut self, resource: Resource, failure: Failure) {
        *self.errors.entry((resource, failure)).or_default() += 1;
    }
}

/// Signed microseconds from `from` to `to`.
fn micros_between(from: ProgramDateTime, to: SystemTime) -> i64 {
    (DateTime::<Utc>::from(to) - from)
        .num_microseconds()
        .unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

/// Runs `args.listeners` simulated listeners against `args.url` for
/// `args.duration` and reports what they saw.
pub async fn run(args: &LoadtestArgs) -> Result<Report, LoadtestError> {
    if args.url.scheme() != "http" || args.url.host().is_none() {
        return Err(LoadtestError::UnsupportedUrl {
            url: args.url.clone(),
        });
    }
    if args.listeners == 0 {
        return Err(LoadtestError::NoListeners);
    }
    let started = Instant::now();
    let deadline = started + args.duration;
    let args = Arc::new(args.clone());
    let mut tasks = JoinSet::new();
    for index in 0..args.listeners {
        let offset = args
            .ramp
            .mul_f64(f64::from(index) / f64::from(args.listeners));
        let args = Arc::clone(&args);
        tasks.spawn(async move {
            tokio::time::sleep_until(started + offset).await;
            let mut listener = Listener::new(args, index);
            // The run ends mid-request: whatever is in flight is dropped
            // uncounted.
            let _ = tokio::time::timeout_at(deadline, listener.play()).await;
            listener.tally
        });
    }
    let mut total = Tally::default();
    while let Some(tally) = tasks.join_next().await {
        total.merge(tally?);
    }
    Ok(Report {
        listeners: args.listeners,
        elapsed: started.elapsed(),
        requests: total.requests,
        bytes: total.bytes,
        playlists: total.playlists,
        parts: total.parts,
        listed_part_not_found: total.listed_part_not_found,
        stale_playlists: total.stale_playlists,
        errors: total.errors,
        part_delay: DelayStats::of(total.part_delays),
        playlist_delay: DelayStats::of(total.playlist_delays),
    })
}

/// A response with status 200.
struct Fetched {
    body: Bytes,
    received_at: SystemTime,
}

/// One simulated player.
struct Listener {
    args: Arc<LoadtestArgs>,
    index: u32,
    client: Client<HttpConnector, Empty<Bytes>>,
    tally: Tally,
    /// Parts received through their preload hint, by URL, with the time they
    /// arrived, until a playlist lists them.
    hinted: HashMap<String, SystemTime>,
}

impl Listener {
    fn new(args: Arc<LoadtestArgs>, index: u32) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build(connector);
        Listener {
            args,
            index,
            client,
            tally: Tally::default(),
            hinted: HashMap::new(),
        }
    }

    fn exhausted(&self) -> bool {
        self.tally.requests >= self.args.max_requests
    }

    /// GETs `url`; only status 200 with a readable body is a success.
    async fn get(&self, url: &Url) -> (Result<Fetched, Failure>, u64) {
        let request = Request::get(url.as_str())
            .header(ACCEPT_ENCODING, "gzip")
            .body(Empty::new());
        let Ok(request) = request else {
            return (Err(Failure::Connection), 0);
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|_| (Failure::Connection, 0))?;
            let status = response.status();
            let encoding = response.headers().get(CONTENT_ENCODING).cloned();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| (Failure::Body, 0))?
                .to_bytes();
            let wire = body.len() as u64;
            if status != StatusCode::OK {
                return Err((Failure::Status(status.as_u16()), wire));
            }
            let received_at = SystemTime::now();
            // Let every other listener whose answer is in take its arrival
            // time before this one spends CPU on decoding and parsing:
            // with thousands of answers in one burst, the simulator's own
            // work would otherwise show up as delay.
            tokio::task::yield_now().await;
            let body = decode_body(encoding.as_ref().map(|v| v.as_bytes()), body)
                .map_err(|_| (Failure::Body, wire))?;
            Ok((Fetched { body, received_at }, wire))
        };
        match tokio::time::timeout(self.args.request_timeout, exchange).await {
            Ok(Ok((fetched, wire))) => (Ok(fetched), wire),
            Ok(Err((failure, wire))) => (Err(failure), wire),
            Err(_) => (Err(Failure::Timeout), 0),
        }
    }

    /// Counts a finished request; returns the response if it succeeded.
    fn note(
        &mut self,
        resource: Resource,
        (result, wire): (Result<Fetched, Failure>, u64),
    ) -> Option<Fetched> {
        self.tally.requests += 1;
        self.tally.bytes += wire;
        match result {
            Ok(fetched) => Some(fetched),
            Err(failure) => {
                self.tally.error(resource, failure);
                None
            }
        }
    }

    /// A pause after a failure, staggered per listener so that failing
    /// listeners do not retry in lockstep.
    async fn back_off(&self) {
        let stagger = Duration::from_millis(u64::from(self.index % 50));
        tokio::time::sleep(RETRY_BACKOFF + stagger).await;
    }

    /// GETs a playlist until it arrives and parses, or the request budget is
    /// spent.
    async fn load_playlist(&mut self, url: &Url, resource: Resource) -> Option<MediaPlaylist> {
        while !self.exhausted() {
            let outcome = self.get(url).await;
            if let Some(fetched) = self.note(resource, outcome) {
                match parse_media_playlist(&fetched.body) {
                    Some(playlist) => {
                        self.tally.playlists += 1;
                        return Some(playlist);
                    }
                    None => self.tally.error(resource, Failure::Unparsable),
                }
            }
            self.back_off().await;
        }
        None
    }

    /// The media playlist URL: `args.url` itself, or the chosen variant of
    /// the multivariant playlist it names.
    async fn media_playlist_url(&mut self) -> Option<Url> {
        let url = self.args.url.clone();
        while !self.exhausted() {
            let outcome = self.get(&url).await;
            if let Some(fetched) = self.note(Resource::Multivariant, outcome) {
                let text = String::from_utf8_lossy(&fetched.body);
                if !is_multivariant(&text) {
                    return Some(url);
                }
                let variants = variant_uris(&text);
                let choice = if self.args.all_variants {
                    self.index as usize % variants.len().max(1)
                } else {
                    0
                };
                match variants.get(choice).and_then(|v| url.join(v).ok()) {
                    Some(variant) => return Some(variant),
                    None => self
                        .tally
                        .error(Resource::Multivariant, Failure::Unparsable),
                }
            }
            self.back_off().await;
        }
        None
    }

    /// Plays until the stream ends or the request budget is spent; the
    /// caller stops it at the end of the run.
    async fn play(&mut self) {
        let Some(url) = self.media_playlist_url().await else {
            return;
        };
        let Some(mut playlist) = self.load_playlist(&url, Resource::Playlist).await else {
            return;
        };
        let low_latency = playlist.part_target.is_some()
            && playlist.server_control.is_some_and(|s| s.can_block_reload);
        if !low_latency && !playlist.end_list {
            self.tally.error(Resource::Playlist, Failure::NotLowLatency);
            return;
        }
        let fetch_media = !self.args.playlists_only;
        if fetch_media {
            self.start_media(&url, &playlist).await;
        }
        let mut cursor = next_part(&playlist);
        while !playlist.end_list && !self.exhausted() {
            let target = if self.args.segment_wakeups {
                next_segment_start(&playlist)
            } else {
                next_part(&playlist)
            };
            let hint = self.hint_url(&url, &playlist);
            let sent_at = SystemTime::now();
            let reload_url = blocking_url(&url, target);
            let (reloaded, hinted) = tokio::join!(self.get(&reload_url), async {
                match &hint {
                    Some(h) => Some(self.get(h).await),
                    None => None,
                }
            });
            if let (Some(h), Some(outcome)) = (hint, hinted)
                && let Some(part) = self.note(Resource::HintedPart, outcome)
            {
                self.hinted.insert(h.into(), part.received_at);
            }
            let Some(fetched) = self.note(Resource::BlockingPlaylist, reloaded) else {
                self.back_off().await;
                continue;
            };
            let Some(reloaded) = parse_media_playlist(&fetched.body) else {
                self.tally
                    .error(Resource::BlockingPlaylist, Failure::Unparsable);
                self.back_off().await;
                continue;
            };
            self.tally.playlists += 1;
            let listed = listed_parts(&reloaded);
            if !satisfies(&reloaded, target) {
                // The server ignored the directive: poll at the part rate.
                self.tally.stale_playlists += 1;
                let part_target = reloaded.part_target.unwrap_or(u64::from(SAMPLE_RATE));
                tokio::time::sleep(Duration::from_micros(
                    rescale(part_target, SAMPLE_RATE, 1_000_000) / 2,
                ))
                .await;
            } else if let Some(published) = listed
                .iter()
                .find(|p| p.id == target)
                .and_then(|p| p.completed_at)
                .filter(|&t| DateTime::<Utc>::from(sent_at) < t)
            {
                self.tally
                    .playlist_delays
                    .push(micros_between(published, fetched.received_at));
            }
            let from = cursor;
            for part in listed.iter().filter(|p| p.id >= from) {
                if fetch_media {
                    self.receive_part(&url, part).await;
                }
                cursor = PartId {
                    msn: part.id.msn,
                    part: part.id.part.saturating_add(1),
                };
            }
            playlist = reloaded;
        }
    }

    /// What a player loads before it plays: the initialization section and
    /// the newest part (whose delay is not measured: it was published before
    /// the listener arrived).
    async fn start_media(&mut self, url: &Url, playlist: &MediaPlaylist) {
        if let Some(init) = init_uri(playlist).and_then(|u| url.join(u).ok()) {
            let outcome = self.get(&init).await;
            self.note(Resource::Init, outcome);
        }
        if let Some(newest) = listed_parts(playlist)
            .last()
            .and_then(|p| url.join(&p.uri).ok())
        {
            let outcome = self.get(&newest).await;
            self.note(Resource::Part, outcome);
        }
    }

    /// The hinted part to request alongside the next blocking reload, unless
    /// hints are off or it was already received.
    fn hint_url(&self, url: &Url, playlist: &MediaPlaylist) -> Option<Url> {
        if self.args.no_hints || self.args.playlists_only {
            return None;
        }
        let hint = playlist
            .preload_hint
            .as_ref()
            .filter(|h| h.hint_type == HintType::Part)?;
        url.join(&hint.uri)
            .ok()
            .filter(|u| !self.hinted.contains_key(u.as_str()))
    }

    /// Takes a newly listed part: already received through its hint, or
    /// fetched now. Records its delay.
    async fn receive_part(&mut self, url: &Url, part: &ListedPart) {
        let Ok(part_url) = url.join(&part.uri) else {
            self.tally.error(Resource::Part, Failure::Unparsable);
            return;
        };
        let received_at = match self.hinted.remove(part_url.as_str()) {
            Some(at) => at,
            None => {
                let (result, wire) = self.get(&part_url).await;
                if result.as_ref().err() == Some(&Failure::Status(404)) {
                    self.tally.listed_part_not_found += 1;
                    tracing::warn!(url = %part_url, "a listed part answered 404");
                }
                match self.note(Resource::Part, (result, wire)) {
                    Some(fetched) => fetched.received_at,
                    None => return,
                }
            }
        };
        self.tally.parts += 1;
        if let Some(published) = part.completed_at {
            self.tally
                .part_delays
                .push(micros_between(published, received_at));
        }
    }
}

fn parse_media_playlist(body: &[u8]) -> Option<MediaPlaylist> {
    MediaPlaylist::parse(std::str::from_utf8(body).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onair::hls::{Map, OpenSegment, Part, PreloadHint, Segment, ServerControl};

    const PART: u64 = 15_360;

    fn part(uri: &str) -> Part {
        Part {
            duration: PART,
            uri: uri.to_owned(),
            independent: true,
            gap: false,
        }
    }

    fn date(text: &str) -> ProgramDateTime {
        onair::hls::parse_pdt(text).unwrap()
    }

    /// Segment 7 complete (two parts), segment 8 open with one part.
    fn playlist() -> MediaPlaylist {
        MediaPlaylist {
            target_duration: 1,
            server_control: Some(ServerControl {
                can_block_reload: true,
                ..ServerControl::default()
            }),
            part_target: Some(PART),
            media_sequence: 7,
            discontinuity_sequence: 0,
            playlist_type: None,
            independent_segments: true,
            skip: None,
            segments: vec![Segment {
                discontinuity: false,
                map: Some(Map {
                    uri: "init.mp4".into(),
                }),
                program_date_time: Some(date("2026-01-01T00:00:00.000Z")),
                parts: vec![part("7.0.m4s"), part("7.1.m4s")],
                gap: false,
                duration: 2 * PART,
                uri: "7.m4s".into(),
            }],
            open: Some(OpenSegment {
                discontinuity: false,
                map: None,
                program_date_time: Some(date("2026-01-01T00:00:00.640Z")),
                parts: vec![part("8.0.m4s")],
            }),
            preload_hint: Some(PreloadHint {
                hint_type: HintType::Part,
                uri: "8.1.m4s".into(),
            }),
            rendition_reports: vec![],
            end_list: false,
        }
    }

    fn id(msn: u64, part: u32) -> PartId {
        PartId { msn, part }
    }

    #[test]
    fn listed_parts_carry_ids_uris_and_completion_times() {
        let parts = listed_parts(&playlist());
        let got: Vec<(PartId, &str, String)> = parts
            .iter()
            .map(|p| {
                (
                    p.id,
                    p.uri.as_str(),
                    onair::hls::format_pdt(p.completed_at.unwrap()),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (id(7, 0), "7.0.m4s", "2026-01-01T00:00:00.320Z".to_owned()),
                (id(7, 1), "7.1.m4s", "2026-01-01T00:00:00.640Z".to_owned()),
                (id(8, 0), "8.0.m4s", "2026-01-01T00:00:00.960Z".to_owned()),
            ]
        );
    }

    #[test]
    fn undated_segments_continue_the_previous_date_until_a_discontinuity() {
        let mut p = playlist();
        p.open.as_mut().unwrap().program_date_time = None;
        let parts = listed_parts(&p);
        assert_eq!(
            parts[2].completed_at,
            Some(date("2026-01-01T00:00:00.960Z"))
        );
        p.open.as_mut().unwrap().discontinuity = true;
        assert_eq!(listed_parts(&p)[2].completed_at, None);
    }

    #[test]
    fn completion_times_keep_sub_millisecond_precision() {
        let mut p = playlist();
        // 1000 samples = 20.833 ms: the part ends 20833 µs after the date.
        p.segments[0].parts[0].duration = 1000;
        let first = listed_parts(&p)[0].completed_at.unwrap();
        assert_eq!(
            (first - date("2026-01-01T00:00:00Z")).num_microseconds(),
            Some(20_833)
        );
    }

    #[test]
    fn next_part_follows_the_last_listed_part() {
        assert_eq!(next_part(&playlist()), id(8, 1));
        // Right after a segment completes, the open segment has no parts
        // yet: the next part is part 0 of the open segment.
        let mut p = playlist();
        p.open.as_mut().unwrap().parts.clear();
        assert_eq!(next_part(&p), id(8, 0));
        p.open = None;
        assert_eq!(next_part(&p), id(8, 0));
    }

    #[test]
    fn next_segment_start_is_part_0_of_a_segment() {
        // 8.0 is listed: the next segment starts at 9.0.
        assert_eq!(next_segment_start(&playlist()), id(9, 0));
        // Nothing of segment 8 listed yet: 8.0 is both next and a start.
        let mut p = playlist();
        p.open.as_mut().unwrap().parts.clear();
        assert_eq!(next_segment_start(&p), id(8, 0));
    }

    #[test]
    fn a_playlist_satisfies_requests_up_to_its_last_part() {
        let p = playlist();
        assert!(satisfies(&p, id(8, 0)));
        assert!(satisfies(&p, id(7, 1)));
        assert!(!satisfies(&p, id(8, 1)));
        assert!(!satisfies(&p, id(9, 0)));
        let ended = MediaPlaylist {
            end_list: true,
            ..p
        };
        assert!(satisfies(&ended, id(9, 0)));
    }

    #[test]
    fn blocking_url_replaces_directives_and_keeps_other_parameters() {
        let base = Url::parse("http://127.0.0.1:8080/show/aac/live.m3u8").unwrap();
        assert_eq!(
            blocking_url(&base, id(12, 3)).as_str(),
            "http://127.0.0.1:8080/show/aac/live.m3u8?_HLS_msn=12&_HLS_part=3"
        );
        let with_query =
            Url::parse("http://h/live.m3u8?token=a%20b&_HLS_msn=1&_HLS_part=0").unwrap();
        assert_eq!(
            blocking_url(&with_query, id(2, 5)).as_str(),
            "http://h/live.m3u8?token=a+b&_HLS_msn=2&_HLS_part=5"
        );
    }

    #[test]
    fn variant_uris_are_read_in_order() {
        let text = "#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n\
            #EXT-X-STREAM-INF:BANDWIDTH=104000,CODECS=\"mp4a.40.2\"\naac/live.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=85000,CODECS=\"opus\"\n\nopus/live.m3u8\n";
        assert!(is_multivariant(text));
        assert_eq!(variant_uris(text), vec!["aac/live.m3u8", "opus/live.m3u8"]);
        assert!(!is_multivariant(&playlist().render()));
    }

    #[test]
    fn audio_renditions_count_as_variants_after_the_stream_inf_ones() {
        let text = "#EXTM3U\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"AAC\",DEFAULT=YES\n\
            #EXT-X-MEDIA:TYPE=AUDIO,NAME=\"a, b\",URI=\"opus/live.m3u8\",GROUP-ID=\"audio\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=104000,CODECS=\"mp4a.40.2,opus\",AUDIO=\"audio\"\n\
            aac/live.m3u8\n";
        assert!(is_multivariant(text));
        assert_eq!(variant_uris(text), vec!["aac/live.m3u8", "opus/live.m3u8"]);
    }

    #[test]
    fn quoted_attributes_are_found_by_exact_name() {
        // A comma and "URI=" inside a quoted value are not an attribute.
        let list = "NAME=\"x,URI=\",XURI=\"no\",URI=\"yes\"";
        assert_eq!(quoted_attribute(list, "URI"), Some("yes"));
        assert_eq!(quoted_attribute("URI=\"first\"", "URI"), Some("first"));
        assert_eq!(quoted_attribute("TYPE=AUDIO", "URI"), None);
    }

    #[test]
    fn init_uri_is_the_last_map() {
        let mut p = playlist();
        assert_eq!(init_uri(&p), Some("init.mp4"));
        p.open.as_mut().unwrap().map = Some(Map {
            uri: "init-2.mp4".into(),
        });
        assert_eq!(init_uri(&p), Some("init-2.mp4"));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 50, 100), Some(50));
        assert_eq!(quantile(&v, 99, 100), Some(99));
        assert_eq!(quantile(&v, 100, 100), Some(100));
        assert_eq!(quantile(&v, 0, 100), Some(1));
        assert_eq!(quantile(&[7], 99, 100), Some(7));
        // Ten values: the 99th percentile is the largest.
        let ten: Vec<i64> = (1..=10).collect();
        assert_eq!(quantile(&ten, 99, 100), Some(10));
        assert_eq!(quantile(&ten, 50, 100), Some(5));
        assert_eq!(quantile(&[], 50, 100), None);
    }

    #[test]
    fn delay_stats_sort_their_samples() {
        let stats = DelayStats::of(vec![30, -5, 10, 20]).unwrap();
        assert_eq!(
            stats,
            DelayStats {
                count: 4,
                min_us: -5,
                p50_us: 10,
                p99_us: 30,
                max_us: 30
            }
        );
        assert_eq!(DelayStats::of(Vec::new()), None);
    }

    #[test]
    fn gzip_bodies_are_decoded() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"#EXTM3U\n").unwrap();
        let packed = Bytes::from(gz.finish().unwrap());
        assert_eq!(
            decode_body(Some(b"gzip"), packed).unwrap(),
            Bytes::from_static(b"#EXTM3U\n")
        );
        assert!(decode_body(Some(b"br"), Bytes::new()).is_err());
        assert!(decode_body(Some(b"gzip"), Bytes::from_static(b"nope")).is_err());
    }

    #[test]
    fn arguments_parse_like_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadtestArgs,
        }
        let cli = Cli::try_parse_from([
            "onair",
            "http://127.0.0.1:1/s/index.m3u8",
            "--listeners",
            "5",
            "--duration",
            "2.5",
        ])
        .unwrap();
        assert_eq!(cli.args.listeners, 5);
        assert_eq!(cli.args.duration, Duration::from_millis(2500));
        assert!(Cli::try_parse_from(["onair", "https://x/index.m3u8"]).is_err());
        assert!(Cli::try_parse_from(["onair", "http://x/i.m3u8", "--listeners", "0"]).is_err());
    }
}
