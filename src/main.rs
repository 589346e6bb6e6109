//! The `onair` command: `package` a recording or run a `live` broadcast.

// `onair loadtest`: a client of the origin, outside the library (the
// end-to-end tests include the same file).
#[path = "tools/loadtest.rs"]
mod loadtest;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use loadtest::LoadtestArgs;
use onair::audio::{FeedConfig, FileSource, MixerConfig, SourceOptions};
use onair::cli::InputSpec;
use onair::encode::{AacConfig, OpusApplication, OpusConfig};
use onair::hls::TimelineConfig;
use onair::packager::{PackagerConfig, PlaylistMode};
use onair::pipeline::{FileHost, Pipeline, PipelineConfig};
use onair::publish::{BacklogLimit, Store, open_store};
use onair::run::{self, RunSummary};
use onair::time::{SAMPLE_RATE, seconds_text};

#[derive(Parser, Debug)]
#[command(
    name = "onair",
    version,
    about = "Live audio broadcast packager: mixed Opus + AAC CMAF LL-HLS to object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Package host files into a finished stream as fast as the CPU allows.
    Package(PackageArgs),
    /// Run a live broadcast paced by the wall clock until SIGINT/SIGTERM.
    Live(Box<LiveArgs>),
    /// Serve the streams of a store to listeners: an LL-HLS origin with listener pages.
    Origin(OriginArgs),
    /// Simulate LL-HLS listeners against a playlist URL and report requests/s, errors and delays.
    Loadtest(LoadtestArgs),
}

#[derive(Args, Debug)]
struct PackageArgs {
    /// A host file, optionally with options: FILE[:gain=DB,name=NAME,mute].
    #[arg(long = "input", required = true, value_name = "FILE[:OPTS]")]
    inputs: Vec<InputSpec>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct LiveArgs {
    /// A host file, optionally with options: FILE[:gain=DB,name=NAME,mute].
    #[arg(long = "input", value_name = "FILE[:OPTS]")]
    inputs: Vec<InputSpec>,
    /// Repeat every file host forever instead of turning it to silence at its end.
    #[arg(long = "loop")]
    looping: bool,
    /// Add the two bundled demo hosts (fixtures/host-a.flac, fixtures/host-b.flac), looping.
    #[arg(long)]
    demo: bool,
    /// Live window in seconds: how much of the past the playlist lists.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Most seconds of media kept for the store while it is away; past it the
    /// oldest segments are dropped and listed as gaps, silence stored in their
    /// place. Default: the window.
    #[arg(long, value_name = "SECONDS")]
    max_backlog: Option<u64>,
    /// Also serve the stream over HTTP on this address (an in-process origin), e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Accept RTMP publishers on this address (rtmp://ADDR/live/SECRET), e.g. 127.0.0.1:1935.
    #[arg(long, value_name = "ADDR")]
    rtmp: Option<String>,
    /// Accept RTMPS publishers (RTMP over TLS, with --tls-cert) on this address
    /// (rtmps://ADDR/live/SECRET), e.g. 0.0.0.0:1936.
    #[arg(long, value_name = "ADDR")]
    rtmps: Option<String>,
    /// Accept WHIP hosts (browsers, WebRTC): WebRTC media on this UDP address, e.g. 0.0.0.0:8189;
    /// the WHIP endpoint is http://HTTP/{stream}/whip and the host page http://HTTP/{stream}/host.
    #[arg(long, value_name = "ADDR", requires = "http")]
    webrtc_udp: Option<std::net::SocketAddr>,
    /// The address WebRTC peers reach the UDP socket at (behind NAT, or when --webrtc-udp binds 0.0.0.0).
    #[arg(long, value_name = "ADDR", requires = "webrtc_udp")]
    webrtc_public: Option<std::net::SocketAddr>,
    /// Also accept WebRTC media over TCP on this address (ICE-TCP, RFC 6544), e.g. 0.0.0.0:8189:
    /// hosts whose network blocks UDP still go on air. Alone, without --webrtc-udp, it offers TCP only.
    #[arg(long, value_name = "ADDR", requires = "http")]
    webrtc_tcp: Option<std::net::SocketAddr>,
    /// The address WebRTC peers reach the TCP listener at (behind NAT, or when --webrtc-tcp binds 0.0.0.0).
    #[arg(long, value_name = "ADDR", requires = "webrtc_tcp")]
    webrtc_tcp_public: Option<std::net::SocketAddr>,
    /// A STUN or TURN server for WHIP hosts, e.g. turn:turn.example.net:3478?transport=udp; repeatable.
    /// The host page gathers with them before its offer; other WHIP clients get them as Link headers.
    /// TURN credentials: URL,USERNAME,CREDENTIAL, or minted per host with --turn-secret.
    #[arg(long = "ice-server", value_name = "URL[,USERNAME,CREDENTIAL]")]
    ice_servers: Vec<onair::ingest::whip::ice_servers::IceServer>,
    /// The TURN server's shared secret (coturn --static-auth-secret): each host gets its own
    /// short-lived credentials (TURN REST API) for the --ice-server TURN URLs given without any.
    #[arg(
        long,
        env = "ONAIR_TURN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    turn_secret: Option<String>,
    /// How long minted TURN credentials stay valid, in seconds: longer than a host's longest session.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(60..=2_592_000))]
    turn_ttl: u64,
    /// Most WHIP sessions one client address may hold at once; more are refused with 429.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_whip_per_address: u32,
    /// Most RTMP and RTMPS connections one client address may hold at once; more are closed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_rtmp_per_address: u32,
    /// Most WHIP sessions at once; more are refused with 503.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_whip_sessions: u32,
    /// A live host and its secret (the RTMP stream key, the WHIP bearer token); repeatable.
    #[arg(long = "key", value_name = "NAME=SECRET")]
    keys: Vec<onair::ingest::keys::Key>,
    /// Failed key or token attempts a client address may make in a row (then as many per minute);
    /// beyond, it is refused (HTTP 429 with Retry-After, RTMP closed) whatever it presents.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_auth_failures: u32,
    /// A file of live hosts' keys, one NAME=SECRET per line (# comments); re-read on SIGHUP or
    /// when it changes: an added host can publish at once, a removed one's session ends.
    #[arg(long, value_name = "PATH")]
    keys_file: Option<PathBuf>,
    /// Hold music played (looping) while no live host is on air, ducked out when one is; host "hold" in the control API.
    #[arg(long, value_name = "FILE[:OPTS]")]
    hold: Option<InputSpec>,
    /// Token guarding the control API (/control/...) on the --http server.
    #[arg(
        long,
        env = "ONAIR_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
    /// Jitter buffer depth of each live host, in ms: the delay that absorbs network bursts.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(20..=2_000))]
    jitter_ms: u32,
    /// One of several `onair live` processes of this stream (a standby group, on other machines,
    /// with the same store, stream, keys and settings): each ingests, mixes and packages, and only
    /// the holder of the stream's lease in the store publishes; the others take over when it stops.
    #[arg(long)]
    redundant: bool,
    /// How long the lease of a --redundant process lasts without renewal, in ms (renewed every
    /// part): a standby takes over this long (plus 100 ms of clock skew) after the leader stops.
    /// Store requests are bounded by a quarter of it.
    #[arg(long, default_value_t = 1000, requires = "redundant",
          value_parser = clap::value_parser!(u64).range(700..=60_000))]
    lease_ms: u64,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct OriginArgs {
    /// Object store URL: a path, file:///abs/path, memory://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, default_value = "./onair-data")]
    store: String,
    /// Address to serve HTTP/1.1 and h2c on; port 0 picks a free port (the log says which).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: String,
    #[command(flatten)]
    page: PageArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Args, Debug)]
struct TlsArgs {
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) instead of HTTP with this PEM certificate chain (leaf first);
    /// a renewal is picked up on SIGHUP or when the file changes, without ending anything.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate, loaded, with a task reloading it; `None` without TLS.
    fn load(&self) -> Result<Option<onair::tls::Certificate>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let certificate = onair::tls::Certificate::load(onair::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?;
        tokio::spawn(onair::tls::watch(certificate.clone()));
        Ok(Some(certificate))
    }
}

#[derive(Args, Debug)]
struct PageArgs {
    /// Most HTTP connections one client address may hold at once (0: no limit). Listeners behind a
    /// CDN or carrier NAT share addresses: set it only where clients are not such listeners.
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_http_per_address: usize,
    /// A proxy (CDN edge, load balancer) whose X-Forwarded-For names the client, as an address or
    /// network (10.0.0.0/8); repeatable. Only then do key attempts and WHIP sessions count per
    /// real client; without it the header is ignored (anyone can write it).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxies: Vec<onair::web::forwarded::Cidr>,
    /// URL of hls.js for the listener page (browsers without native HLS).
    #[arg(long, value_name = "URL", default_value = onair::origin::DEFAULT_HLSJS_URL)]
    hlsjs_url: String,
    /// Serve this copy of hls.js at /_onair/hls.min.js and have the listener page use it.
    #[arg(long, value_name = "PATH")]
    hlsjs_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct Common {
    /// Object store URL: a path, file:///abs/path, memory://, s3://bucket/prefix, gs://bucket/prefix, az://container/prefix.
    #[arg(long, default_value = "./onair-data")]
    store: String,
    /// Stream name: the prefix of every object of the broadcast (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long, value_parser = parse_stream_name)]
    stream: String,
    /// Opus bitrate in bits per second.
    #[arg(long, default_value_t = 64_000, value_parser = clap::value_parser!(u32).range(6_000..=510_000))]
    opus_bitrate: u32,
    /// Opus encoder complexity, 0 (fastest) to 10 (best).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=10))]
    opus_complexity: u8,
    /// Opus application mode.
    #[arg(long, value_enum, default_value_t = Application::Audio)]
    opus_application: Application,
    /// AAC-LC bitrate in bits per second.
    #[arg(long, default_value_t = 96_000, value_parser = clap::value_parser!(u32).range(32_000..=320_000))]
    aac_bitrate: u32,
    /// Parts per segment (a part is 320 ms, the shortest span that is a whole number of both Opus and AAC frames).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=30))]
    parts_per_segment: u32,
}

/// Checks `--stream`: it becomes a key prefix and a URL path segment.
fn parse_stream_name(s: &str) -> Result<String, String> {
    use onair::publish::layout;
    if layout::RESERVED_STREAM_NAMES.contains(&s) {
        Err(format!(
            "stream name {s:?} is reserved for the control API and the origin's own files"
        ))
    } else if layout::valid_stream_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "stream name {s:?} must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-', and not \".\" or \"..\""
        ))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Application {
    Voip,
    Audio,
    LowDelay,
}

impl Common {
    fn pipeline_config(&self, mode: PlaylistMode, window: Option<u64>) -> PipelineConfig {
        let epoch_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        PipelineConfig {
            opus: OpusConfig {
                bitrate: self.opus_bitrate,
                complexity: self.opus_complexity,
                application: match self.opus_application {
                    Application::Voip => OpusApplication::Voip,
                    Application::Audio => OpusApplication::Audio,
                    Application::LowDelay => OpusApplication::LowDelay,
                },
            },
            aac: AacConfig {
                bitrate: self.aac_bitrate,
            },
            mixer: MixerConfig::default(),
            packager: PackagerConfig {
                stream: self.stream.clone(),
                timeline: TimelineConfig {
                    parts_per_segment: self.parts_per_segment,
                    window,
                    epoch_unix_ms,
                    ..TimelineConfig::default()
                },
                mode,
            },
            parallel: mode == PlaylistMode::Vod,
            returns: Default::default(),
        }
    }

    fn store(&self) -> Result<Store> {
        open_store(&self.store).with_context(|| format!("cannot open store {:?}", self.store))
    }
}

fn open_hosts(inputs: &[InputSpec], looping: bool) -> Result<Vec<FileHost>> {
    inputs
        .iter()
        .map(|spec| {
            let source = FileSource::open(&spec.path, SourceOptions { looping })?;
            Ok(FileHost {
                feed: FeedConfig {
                    name: spec.name.clone(),
                    gain_db: spec.gain_db,
                    muted: spec.muted,
                },
                source,
            })
        })
        .collect()
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_command(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Package(args) => package(args).await,
        Command::Live(args) => live(*args).await,
        Command::Origin(args) => origin(args).await,
        Command::Loadtest(args) => {
            let report = loadtest::run(&args).await?;
            println!("{report}");
            Ok(())
        }
    }
}

async fn package(args: PackageArgs) -> Result<()> {
    let hosts = open_hosts(&args.inputs, false)?;
    let store = args.common.store()?;
    let total = hosts
        .iter()
        .filter_map(|h| h.source.native_duration().map(|d| d.program_frames()))
        .max();
    let pipeline = Pipeline::new(args.common.pipeline_config(PlaylistMode::Vod, None), hosts)?;
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let progress_bar = bar.clone();
    let progress: run::Progress = Box::new(move |done| {
        progress_bar.set_position(done);
        progress_bar.set_message(format!("{} s", seconds_text(done)));
    });
    let started = std::time::Instant::now();
    let summary = run::package(pipeline, store.clone(), Some(progress)).await?;
    bar.finish_and_clear();
    report(&args.common.stream, &store, &summary, started.elapsed());
    Ok(())
}

async fn live(args: LiveArgs) -> Result<()> {
    let mut inputs = args.inputs.clone();
    if args.demo {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        for (file, opts) in [
            ("host-a.flac", "name=host-a"),
            ("host-b.flac", "name=host-b,gain=-2"),
        ] {
            let spec = format!("{}:{opts}", dir.join(file).display());
            inputs.push(spec.parse().context("demo fixture")?);
        }
    }
    let mut keys = args.keys.clone();
    if let Some(path) = &args.keys_file {
        keys.extend(onair::ingest::keys::Keys::read_file(path)?);
    }
    let keys = Arc::new(onair::ingest::keys::Keys::new(keys)?.with_attempt_limit(
        onair::web::attempts::AttemptLimit {
            burst: args.max_auth_failures,
            per_minute: args.max_auth_failures,
            ..Default::default()
        },
    ));
    let whip = args.webrtc_udp.is_some() || args.webrtc_tcp.is_some();
    if !whip && (!args.ice_servers.is_empty() || args.turn_secret.is_some()) {
        anyhow::bail!(
            "--ice-server and --turn-secret are for WHIP hosts: add --webrtc-udp or --webrtc-tcp"
        );
    }
    let ice_servers = onair::ingest::whip::ice_servers::IceServers::new(
        args.ice_servers.clone(),
        args.turn_secret.as_deref(),
        std::time::Duration::from_secs(args.turn_ttl),
    )?;
    if (args.rtmp.is_some() || args.rtmps.is_some() || whip) && keys.is_empty() {
        anyhow::bail!(
            "live hosts (--rtmp, --rtmps, --webrtc-udp, --webrtc-tcp) need at least one host key: --key NAME=SECRET or --keys-file"
        );
    }
    if args.admin_token.is_some() && args.http.is_none() {
        anyhow::bail!("the control API (--admin-token) is served on --http ADDR: add it");
    }
    // Checked before anything is stored or bound.
    let certificate = args.tls.load()?;
    if certificate.is_some() && args.http.is_none() && args.rtmps.is_none() {
        anyhow::bail!("--tls-cert is for the --http server and --rtmps: add one of them");
    }
    if args.rtmps.is_some() && certificate.is_none() {
        anyhow::bail!("RTMPS (--rtmps) needs a certificate: --tls-cert FILE --tls-key FILE");
    }
    let looping = args.looping || args.demo;
    let hosts = open_hosts(&inputs, looping)?;
    let standby = args.redundant.then(|| {
        let part = std::time::Duration::from_millis(320);
        let duration = std::time::Duration::from_millis(args.lease_ms);
        run::StandbyGroup {
            holder: run::StandbyGroup::holder_id(),
            lease: onair::publish::lease::LeaseSettings {
                duration,
                request_timeout: duration / 4,
                ..onair::publish::lease::LeaseSettings::for_part(part)
            },
        }
    });
    if let Some(group) = &standby {
        group.lease.validate().map_err(anyhow::Error::msg)?;
    }
    let store = args.common.store()?;
    // A member of a standby group publishes (and keeps its lease) through
    // a store whose every request ends within the lease's request timeout,
    // so a write it started cannot land after another member took over.
    // Starting up (the stream's timeline, the origin) keeps the usual
    // timeouts.
    let publish_store = match &standby {
        Some(group) => onair::publish::open_store_with(
            &args.common.store,
            &onair::publish::StoreOptions {
                request_timeout: group.lease.request_timeout,
                ..onair::publish::StoreOptions::default()
            },
        )
        .with_context(|| format!("cannot open store {:?}", args.common.store))?,
        None => store.clone(),
    };
    let mut cfg = args.common.pipeline_config(
        PlaylistMode::Live,
        Some(args.window * u64::from(SAMPLE_RATE)),
    );
    // Program time, names and dates follow the stream's wall-clock
    // timeline: a restarted broadcast continues where the clock is.
    let clock = run::lock_to_stream_as(&store, &mut cfg, standby.is_some()).await?;
    let hold = match &args.hold {
        Some(hold) => {
            // The hold music is the host named "hold" in the control API.
            let mut host = open_hosts(std::slice::from_ref(hold), true)?.remove(0);
            host.feed.name = "hold".into();
            Some(host)
        }
        None => None,
    };
    let origin = match &args.http {
        Some(addr) => Some(bind_origin(addr, &store, &args.page, certificate.as_ref()).await?),
        None => None,
    };
    if let Some((origin, listener)) = &origin {
        let local = listener.local_addr().context("listener address")?;
        let stream = &args.common.stream;
        let scheme = if origin.is_tls() { "https" } else { "http" };
        tracing::info!(
            "listen: {scheme}://{local}/{stream}/ (playlist {scheme}://{local}/{stream}/index.m3u8)"
        );
        if args.admin_token.is_some() {
            tracing::info!("control API: {scheme}://{local}/control/hosts");
        }
    }
    let rtmp = match &args.rtmp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for RTMP on {addr}"))?,
        ),
        None => None,
    };
    let rtmps = match (&args.rtmps, &certificate) {
        (Some(addr), Some(certificate)) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for RTMPS on {addr}"))?,
            certificate.clone(),
        )),
        _ => None,
    };
    let segment =
        cfg.packager.timeline.part_target * u64::from(cfg.packager.timeline.parts_per_segment);
    let on_air = run::OnAir {
        pipeline: cfg,
        clock,
        hosts,
        hold,
        keys,
        keys_file: args.keys_file.clone().map(|path| run::KeysFile {
            path,
            fixed: args.keys.clone(),
        }),
        jitter_ms: args.jitter_ms,
        rtmp,
        rtmps,
        rtmp_per_address: args.max_rtmp_per_address as usize,
        whip: whip.then_some(run::WhipSettings {
            udp: args.webrtc_udp,
            public: args.webrtc_public,
            tcp: args.webrtc_tcp,
            tcp_public: args.webrtc_tcp_public,
            ice_servers,
            max_sessions: args.max_whip_sessions as usize,
            max_per_address: args.max_whip_per_address as usize,
        }),
        origin,
        admin_token: args.admin_token.clone(),
        backlog: BacklogLimit {
            segments: args
                .max_backlog
                .map(|s| (s * u64::from(SAMPLE_RATE)).div_ceil(segment)),
            bytes: None,
        },
        standby,
    };
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn(stop_on_signal(stop.clone()));
    tracing::info!(
        stream = %args.common.stream,
        store = %store.url(),
        "on air: {}/{}/index.m3u8",
        store.url().trim_end_matches('/'),
        args.common.stream
    );
    let started = std::time::Instant::now();
    let summary = on_air.run(publish_store, stop).await?;
    report(&args.common.stream, &store, &summary, started.elapsed());
    Ok(())
}

/// Binds the origin's listener and builds the origin; logs the address.
async fn bind_origin(
    addr: &str,
    store: &Store,
    page: &PageArgs,
    tls: Option<&onair::tls::Certificate>,
) -> Result<(onair::origin::Origin, tokio::net::TcpListener)> {
    let hlsjs_file = match &page.hlsjs_file {
        Some(path) => Some(bytes::Bytes::from(
            std::fs::read(path).with_context(|| format!("cannot read --hlsjs-file {path:?}"))?,
        )),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr().context("listener address")?;
    let config = onair::origin::OriginConfig {
        hlsjs_url: page.hlsjs_url.clone(),
        hlsjs_file,
        max_connections_per_address: page.max_http_per_address,
        trusted_proxies: onair::web::forwarded::TrustedProxies::new(page.trusted_proxies.clone()),
        ..onair::origin::OriginConfig::default()
    };
    let mut origin = onair::origin::Origin::new(store, config);
    let scheme = match tls {
        Some(certificate) => {
            origin = origin.with_tls(certificate.clone());
            "https"
        }
        None => "http",
    };
    tracing::info!(store = %store.url(), "origin listening on {scheme}://{local}/");
    Ok((origin, listener))
}

async fn origin(args: OriginArgs) -> Result<()> {
    let store =
        open_store(&args.store).with_context(|| format!("cannot open store {:?}", args.store))?;
    let certificate = args.tls.load()?;
    let (origin, listener) =
        bind_origin(&args.http, &store, &args.page, certificate.as_ref()).await?;
    tokio::select! {
        served = origin.serve(listener) => served.context("origin stopped")?,
        () = shutdown_signal() => tracing::info!("stopping the origin"),
    }
    Ok(())
}

/// Sets `stop` on SIGINT or SIGTERM.
async fn stop_on_signal(stop: Arc<AtomicBool>) {
    shutdown_signal().await;
    tracing::info!("stopping: flushing and ending the stream");
    stop.store(true, Ordering::Relaxed);
}

/// Returns on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn report(stream: &str, store: &Store, summary: &RunSummary, elapsed: std::time::Duration) {
    let secs = summary.program_samples as f64 / f64::from(SAMPLE_RATE);
    tracing::info!(
        program_s = format!("{secs:.3}"),
        wall_s = format!("{:.3}", elapsed.as_secs_f64()),
        realtime = format!("{:.1}x", secs / elapsed.as_secs_f64().max(1e-9)),
        objects = summary.publish.totals.puts,
        decode_s = format!("{:.3}", summary.stages.decode.0.as_secs_f64()),
        mix_s = format!("{:.3}", summary.stages.mix.0.as_secs_f64()),
        encode_s = format!("{:.3}", summary.stages.encode_all.0.as_secs_f64()),
        package_s = format!("{:.3}", summary.stages.package.0.as_secs_f64()),
        bytes = summary.publish.totals.bytes,
        "finished {}/{}/index.m3u8",
        store.url().trim_end_matches('/'),
        stream
    );
}
