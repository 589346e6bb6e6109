//! The S3-compatible test server started by `scripts/s3-server.sh start`, and
//! plain HTTP/1.1 requests to it.
//!
//! Tests that use it fail (never skip) when the server is not configured:
//! start one with `eval "$(scripts/s3-server.sh start)"` before `cargo test`
//! and stop it with `scripts/s3-server.sh stop "$ONAIR_TEST_S3_PID"`. The
//! server grants anonymous clients full rights, so a test creates its bucket
//! with an unsigned `PUT /BUCKET` and reads objects the way a CDN or a player
//! would, without signing.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long one request to the local test server may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The running test server.
#[derive(Debug)]
pub struct S3Server {
    endpoint: String,
    host_port: String,
}

/// A response read to the end.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (empty for `HEAD`).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl S3Server {
    /// The server that `scripts/s3-server.sh start` described in the
    /// environment. Panics with instructions when it is missing.
    pub fn from_env() -> Self {
        let endpoint = std::env::var("ONAIR_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!(
                "no S3 test server: ONAIR_TEST_S3_ENDPOINT is not set. Start one with \
                 `eval \"$(scripts/s3-server.sh start)\"` before `cargo test`, and stop it with \
                 `scripts/s3-server.sh stop \"$ONAIR_TEST_S3_PID\"`"
            )
        });
        // `s3://` stores read their endpoint and identity from these, exactly
        // as in production; the script exports all of them.
        for name in [
            "AWS_ENDPOINT",
            "AWS_ALLOW_HTTP",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(
                std::env::var_os(name).is_some(),
                "{name} is not set; `eval \"$(scripts/s3-server.sh start)\"` exports it"
            );
        }
        let host_port = endpoint
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("the S3 test server speaks plain HTTP, got {endpoint:?}"))
            .trim_end_matches('/')
            .to_owned();
        Self {
            endpoint: format!("http://{host_port}"),
            host_port,
        }
    }

    /// `http://HOST:PORT`, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Creates a fresh bucket whose name starts with `test` and returns the
    /// name. Names are unique per process and call, so reruns and parallel
    /// tests never share a bucket.
    pub fn create_bucket(&self, test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let bucket = format!("onair-{test}-{}-{nanos}", std::process::id());
        let response = self.request("PUT", &format!("/{bucket}"));
        assert_eq!(
            response.status,
            200,
            "creating bucket {bucket}: {}",
            String::from_utf8_lossy(&response.body)
        );
        bucket
    }

    /// One unsigned request without a body on its own connection, read until
    /// the server closes it.
    pub fn request(&self, method: &str, path: &str) -> HttpResponse {
        self.request_with(method, path, &[], b"")
    }

    /// One unsigned request with extra headers and a body on its own
    /// connection, read until the server closes it.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut stream = TcpStream::connect(&self.host_port).unwrap_or_else(|e| {
            panic!(
                "connecting to the S3 test server at {}: {e}",
                self.host_port
            )
        });
        stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .expect("set read timeout");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.host_port,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("write request");
        stream.write_all(body).expect("write body");
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        parse_response(&raw)
    }
}

/// Splits a raw HTTP/1.1 response into status, headers and body. The body is
/// kept as sent (no chunked decoding): it is only shown in failure messages.
fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII headers");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}
