//! Debian's nginx as a caching CDN edge in front of an origin.
//!
//! [`Nginx::caching_proxy`] starts `nginx -c CONF -p DIR -g 'daemon off;'`
//! with everything it writes (config, cache, temp files, logs, pid) in its
//! own temporary directory, listening on 127.0.0.1. The edge behaves as a
//! CDN should in front of an LL-HLS origin:
//! - `proxy_cache` keyed on the scheme, upstream and `$request_uri` (path and
//!   query string), so each blocking reload `?_HLS_msn=M&_HLS_part=P` is its
//!   own cache entry;
//! - `proxy_cache_lock on`: concurrent misses on one key send one request
//!   upstream while the others wait for its answer;
//! - the origin's `Cache-Control` decides what is cached and for how long
//!   (no `proxy_cache_valid`, no `proxy_ignore_headers`);
//! - HTTP/1.1 with keep-alive to the origin.
//!
//! Every request that reached the origin is logged (an `access_log` guarded
//! by `$upstream_addr`, which is empty for answers from the cache), so a
//! test can count origin requests per URI with [`Nginx::origin_requests`].
//!
//! Known limit of nginx 1.22 (`ngx_http_file_cache.c`,
//! `ngx_http_file_cache_lock`): requests waiting on the cache lock are not
//! woken when the answer arrives; they re-check on a timer of at most
//! 500 ms. Listeners collapsed behind one origin request therefore get the
//! answer up to 500 ms after the origin gave it.
//!
//! A missing nginx fails the test loudly: `scripts/cdn-deps.sh` installs it.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long nginx may take to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long nginx may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Port picks to try: another process may take a picked port before nginx
/// binds it.
const START_ATTEMPTS: usize = 3;
/// How long a request may wait on the cache lock: longer than the origin
/// holds a blocking request (3 target durations, 6 s by default), so a
/// waiting request never gives up and goes upstream itself.
const LOCK_TIMEOUT_S: u32 = 10;

/// A running nginx; SIGTERM (then SIGKILL) on drop.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

/// One request nginx passed to the origin, from the upstream log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    /// `$upstream_cache_status`: `MISS`, `EXPIRED`, `BYPASS`, ...
    pub cache_status: String,
    /// `$upstream_status`: the origin's status code(s) as nginx logs them.
    pub upstream_status: String,
    /// `$request_uri`: path and query string as the client sent them.
    pub uri: String,
}

impl Nginx {
    /// A caching edge in front of the HTTP origin at `origin`.
    pub fn caching_proxy(origin: SocketAddr) -> Nginx {
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("temp dir for nginx");
            let port = free_port();
            std::fs::create_dir(dir.path().join("temp")).expect("nginx temp dir");
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, caching_proxy_conf(dir.path(), port, origin))
                .expect("write nginx.conf");
            match start(dir, &conf, port) {
                Ok(nginx) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start in {START_ATTEMPTS} attempts: {last_error}");
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request that reached the origin so far, in log order.
    pub fn origin_requests(&self) -> Vec<OriginRequest> {
        let path = self.dir.path().join("upstream.log");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.lines()
            .map(|line| {
                let mut fields = line.split('\t');
                let mut next = || fields.next().unwrap_or_default().to_owned();
                OriginRequest {
                    cache_status: next(),
                    upstream_status: next(),
                    uri: next(),
                }
            })
            .collect()
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL alone would
        // leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nginx binary: on PATH, or where Debian installs it.
fn nginx_binary() -> PathBuf {
    let on_path = Command::new("nginx")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if on_path {
        return PathBuf::from("nginx");
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    assert!(
        debian.exists(),
        "nginx is not installed: run scripts/cdn-deps.sh (Debian package nginx)"
    );
    debian
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// Starts nginx and waits until it accepts connections. `Err` with the
/// error log when it exits or does not listen in time.
fn start(dir: tempfile::TempDir, conf: &Path, port: u16) -> Result<Nginx, String> {
    let error_log = dir.path().join("error.log");
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(conf)
        .arg("-p")
        .arg(dir.path())
        // Errors before the config is read go here too, not to /var/log.
        .arg("-e")
        .arg(&error_log)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run nginx: {e}"))?;
    let mut nginx = Nginx { child, dir, port };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            return Err(format!(
                "nginx exited with {status}:\n{}",
                nginx.error_log()
            ));
        }
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(nginx);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "nginx not listening after {STARTUP_TIMEOUT:?}:\n{}",
                nginx.error_log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The configuration of a caching edge on `port` in front of `origin`, with
/// every file under `dir`.
fn caching_proxy_conf(dir: &Path, port: u16, origin: SocketAddr) -> String {
    let d = dir.display();
    let mut conf = String::new();
    // `user root`: the master runs as root in tests, and workers must write
    // the cache and logs in a temp dir that only root can enter.
    let _ = write!(
        conf,
        r#"user root;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    client_body_temp_path {d}/temp/client;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;

    log_format upstream "$upstream_cache_status\t$upstream_status\t$request_uri";
    access_log off;

    proxy_cache_path {d}/cache levels=1:2 keys_zone=edge:10m max_size=256m
                     inactive=10m use_temp_path=off;

    upstream origin {{
        server {origin};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        # Requests that reached the origin: $upstream_addr is empty when
        # the cache answered.
        access_log {d}/upstream.log upstream if=$upstream_addr;

        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_key $scheme$proxy_host$request_uri;
            proxy_cache_lock on;
            proxy_cache_lock_timeout {LOCK_TIMEOUT_S}s;
            proxy_cache_lock_age {LOCK_TIMEOUT_S}s;
            proxy_read_timeout 30s;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
"#
    );
    conf
}
