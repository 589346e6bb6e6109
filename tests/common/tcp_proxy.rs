//! A TCP proxy a test can break: it forwards connections to an upstream
//! server until told to freeze them (bytes are held, nothing answers: a
//! black-holed network path) or to drop them (every connection is reset and
//! new ones are closed at once: a server that went away), and forwards again
//! once restored. Threads, no runtime; they end with the test process.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

/// How often a held or idle pump looks at the mode again.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Freeze,
    Drop,
}

#[derive(Debug)]
struct State {
    mode: Mutex<Mode>,
    connections: Mutex<Vec<TcpStream>>,
}

impl State {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy on 127.0.0.1.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Pass),
            connections: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if accepting.mode() == Mode::Drop {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut connections = accepting
                    .connections
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for s in [&client, &server] {
                    if let Ok(clone) = s.try_clone() {
                        connections.push(clone);
                    }
                }
                drop(connections);
                pump(&client, &server, &accepting);
                pump(&server, &client, &accepting);
            }
        });
        Self { addr, state }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds every byte in both directions, on open and new connections.
    pub fn freeze(&self) {
        self.set(Mode::Freeze);
    }

    /// Resets every open connection and closes new ones at once.
    pub fn drop_all(&self) {
        self.set(Mode::Drop);
        let connections = std::mem::take(
            &mut *self
                .state
                .connections
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for connection in connections {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }

    /// Forwards again (held bytes first).
    pub fn restore(&self) {
        self.set(Mode::Pass);
    }

    fn set(&self, mode: Mode) {
        *self
            .state
            .mode
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = mode;
    }
}

/// Copies `from` to `to` on a thread of its own, as the mode allows.
fn pump(from: &TcpStream, to: &TcpStream, state: &Arc<State>) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let state = Arc::clone(state);
    thread::spawn(move || {
        let _ = from.set_read_timeout(Some(POLL));
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if state.mode() == Mode::Drop {
                        break;
                    }
                    continue;
                }
                Err(_) => break,
            };
            // Frozen: hold the bytes until the path comes back.
            while state.mode() == Mode::Freeze {
                thread::sleep(POLL);
            }
            if state.mode() == Mode::Drop || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
