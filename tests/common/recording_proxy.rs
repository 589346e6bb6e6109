//! An HTTP/1.1 proxy in front of a store that records every request it
//! forwards (when, method, path): the store's history as one client wrote
//! it. One proxy per process under test tells whose writes are whose.
//! Threads, no runtime; they end with the test process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

/// One request as the proxy forwarded it.
#[derive(Debug, Clone)]
pub struct Request {
    /// When its head was read in full (before it went upstream).
    pub at: Instant,
    /// `GET`, `PUT`, `DELETE`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
}

impl Request {
    /// Whether the request changes the store.
    pub fn writes(&self) -> bool {
        matches!(self.method.as_str(), "PUT" | "POST" | "DELETE")
    }
}

/// A running recording proxy on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct RecordingProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
}

impl RecordingProxy {
    /// Listens on a free port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::clone(&log);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let requests = Arc::clone(&requests);
                thread::spawn(move || forward_requests(client, server, &requests));
                thread::spawn(move || pump(s2, c2));
            }
        });
        Self { addr, log }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request forwarded so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Copies responses back as they come.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Reads requests one by one (head, then a `Content-Length` body), records
/// each and forwards it.
fn forward_requests(client: TcpStream, mut server: TcpStream, log: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = server.shutdown(Shutdown::Write);
                    return;
                }
                Ok(_) => {}
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let mut words = head[0].split_whitespace();
        let request = Request {
            at: Instant::now(),
            method: words.next().unwrap_or_default().to_owned(),
            target: words.next().unwrap_or_default().to_owned(),
        };
        assert!(
            !chunked,
            "the recording proxy reads Content-Length bodies only"
        );
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut out = head.concat().into_bytes();
        out.extend_from_slice(&body);
        if server.write_all(&out).is_err() {
            return;
        }
    }
}
