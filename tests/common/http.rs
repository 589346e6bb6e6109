//! A small HTTP client for origin tests: HTTP/1.1 and HTTP/2 over cleartext
//! (prior knowledge) through hyper, and raw request lines for targets that a
//! well-behaved client refuses to send.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any single test request may take: blocking requests end within
/// three target durations, so this only catches a hung origin.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// A response read to the end, with the time it took.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// HTTP version of the response.
    pub version: Version,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as received (not decoded).
    pub body: Bytes,
    /// From sending the request to the end of the body.
    pub elapsed: Duration,
}

impl Reply {
    /// Header `name` as text, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

/// HTTP/1.1 and h2c clients with connection pools.
#[derive(Clone)]
pub struct Http {
    h1: Client<HttpConnector, Empty<Bytes>>,
    h2: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Self {
            h1: Client::builder(TokioExecutor::new()).build_http(),
            h2: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build_http(),
        }
    }
}

impl Http {
    /// `GET url` over HTTP/1.1.
    pub async fn get(&self, url: &str) -> Reply {
        self.send(false, Method::GET, url, &[]).await
    }

    /// `GET url` over HTTP/1.1 with extra request headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(false, Method::GET, url, headers).await
    }

    /// Any method over HTTP/1.1.
    pub async fn request(&self, method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(false, method, url, headers).await
    }

    /// `GET url` over HTTP/2 without TLS, by prior knowledge (RFC 9113 3.3).
    pub async fn get_h2(&self, url: &str) -> Reply {
        self.send(true, Method::GET, url, &[]).await
    }

    async fn send(&self, h2: bool, method: Method, url: &str, headers: &[(&str, &str)]) -> Reply {
        let mut builder = Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::new()).expect("valid request");
        let client = if h2 { &self.h2 } else { &self.h1 };
        let started = Instant::now();
        let exchange = async {
            let response = client
                .request(request)
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"))
                .to_bytes();
            (parts, body)
        };
        let (parts, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {url}: no answer within {REQUEST_TIMEOUT:?}"));
        Reply {
            status: parts.status.as_u16(),
            version: parts.version,
            headers: parts.headers,
            body,
            elapsed: started.elapsed(),
        }
    }
}

/// Sends `GET {target} HTTP/1.1` with `target` as raw bytes on a fresh
/// connection and returns the status code: for targets (bad UTF-8, dot
/// segments) that URL types normalise or refuse.
pub async fn raw_get_status(addr: SocketAddr, target: &[u8]) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.expect("send request");
    let mut response = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("answer in time")
        .expect("read response");
    let head = String::from_utf8_lossy(&response);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

/// Decodes a gzip body.
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
        .expect("valid gzip");
    out
}
