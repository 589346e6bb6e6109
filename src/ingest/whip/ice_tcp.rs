//! ICE-TCP transport of a WebRTC endpoint: the passive side of RFC 6544,
//! with RFC 4571 framing.
//!
//! A publisher whose network blocks UDP (hotel and office firewalls) can
//! still reach a TCP port. Its ICE agent opens a connection to the endpoint's
//! passive TCP candidate and sends every STUN, DTLS and SRTP packet on it as
//! a frame: a 16-bit big-endian length, then the packet (RFC 4571 §2). Here
//! each frame becomes one "datagram" for the same sessions that serve UDP;
//! what a session sends back to that peer goes out as a frame on the same
//! connection.
//!
//! The listener owns no session state. It reports connections and frames to
//! the endpoint's driver over one channel, and the driver answers by writing
//! to a connection's [`Writer`] or dropping it, which closes the connection.
//!
//! # Limits, for a port open to anyone
//!
//! - At most [`TcpLimits::max_connections`] connections at once; more are
//!   closed on accept.
//! - A connection must deliver its first frame within
//!   [`TcpLimits::first_frame_within`], and the driver closes it at once if
//!   no session claims that frame (a connection carries one ICE candidate
//!   pair, so its first frame is a STUN binding request for a known session,
//!   RFC 6544 §7.1).
//! - A frame longer than [`MAX_FRAME`] is not WebRTC: the connection closes.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::debug;

/// Longest frame accepted. WebRTC keeps packets near the path MTU (str0m
/// targets 1150 bytes); RFC 4571 allows 65535, which only a peer that is not
/// WebRTC would send.
pub(crate) const MAX_FRAME: usize = 4096;

/// Frames queued for one connection before more are dropped (as a full UDP
/// socket buffer would): media is real-time, a stalled reader gets no
/// backlog.
const WRITE_QUEUE: usize = 256;

/// Limits of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpLimits {
    /// Most connections open at once.
    pub(crate) max_connections: usize,
    /// A connection that sends no complete frame for this long after accept
    /// is closed.
    pub(crate) first_frame_within: Duration,
}

/// What the listener reports to the driver.
#[derive(Debug)]
pub(crate) enum TcpEvent {
    /// A connection was accepted; frames for `peer` go to `writer`.
    Opened {
        /// Connection id, never reused.
        conn: u64,
        /// The publisher's address as seen by the socket.
        peer: SocketAddr,
        /// Where to send frames to the peer. Dropping it closes the
        /// connection.
        writer: Writer,
    },
    /// One RFC 4571 frame from `peer`, without its length prefix.
    Frame {
        /// Connection id from [`TcpEvent::Opened`].
        conn: u64,
        /// The publisher's address.
        peer: SocketAddr,
        /// The packet: STUN, DTLS or SRTP/SRTCP.
        data: Bytes,
    },
    /// The connection ended (closed by the peer, an error, a limit, or the
    /// driver dropping its writer).
    Closed {
        /// Connection id from [`TcpEvent::Opened`].
        conn: u64,
        /// The publisher's address.
        peer: SocketAddr,
    },
}

/// The sending side of one connection.
#[derive(Debug)]
pub(crate) struct Writer {
    frames: mpsc::Sender<Bytes>,
}

impl Writer {
    /// Queues `packet` to be sent as one frame. Returns false when the
    /// connection's queue is full or it has closed: the packet is dropped,
    /// as a datagram would be.
    pub(crate) fn send(&self, packet: &[u8]) -> bool {
        let Ok(len) = u16::try_from(packet.len()) else {
            return false;
        };
        let mut frame = BytesMut::with_capacity(2 + packet.len());
        frame.put_u16(len);
        frame.put_slice(packet);
        self.frames.try_send(frame.freeze()).is_ok()
    }
}

/// Accepts connections on `listener` until `events` closes (the driver
/// stopped).
pub(crate) async fn listen(
    listener: TcpListener,
    limits: TcpLimits,
    events: mpsc::Sender<TcpEvent>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut next_conn = 1_u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = events.closed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or a connection reset before accept:
                // neither concerns the connections already open.
                debug!(error = %e, "ICE-TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "ICE-TCP connection refused: all connections in use");
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        let events = events.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve(stream, conn, peer, limits, events).await;
        });
    }
}

/// One connection: reports it, forwards its frames, writes what the driver
/// sends, and reports its end.
async fn serve(
    stream: TcpStream,
    conn: u64,
    peer: SocketAddr,
    limits: TcpLimits,
    events: mpsc::Sender<TcpEvent>,
) {
    // Every packet is real-time media or a handshake step: no coalescing.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "ICE-TCP set_nodelay failed");
    }
    let (frames_tx, mut frames_rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    let writer = Writer { frames: frames_tx };
    if events
        .send(TcpEvent::Opened { conn, peer, writer })
        .await
        .is_err()
    {
        return;
    }
    let (mut reader, mut write_half) = stream.into_split();
    let read = async {
        let mut first = true;
        loop {
            let frame = if first {
                match tokio::time::timeout(limits.first_frame_within, read_frame(&mut reader)).await
                {
                    Ok(frame) => frame,
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no frame after connecting",
                    )),
                }
            } else {
                read_frame(&mut reader).await
            };
            first = false;
            match frame {
                Ok(data) => {
                    let event = TcpEvent::Frame { conn, peer, data };
                    if events.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    debug!(%peer, error = %e, "ICE-TCP connection ends");
                    return;
                }
            }
        }
    };
    let write = async {
        // Ends when the driver drops the writer: that closes the connection.
        while let Some(frame) = frames_rx.recv().await {
            if let Err(e) = write_half.write_all(&frame).await {
                debug!(%peer, error = %e, "ICE-TCP write failed");
                return;
            }
        }
    };
    tokio::select! {
        () = read => {}
        () = write => {}
    }
    // The driver may be gone already; then nobody needs to know.
    let _ = events.send(TcpEvent::Closed { conn, peer }).await;
}

/// Reads one RFC 4571 frame: a 16-bit length, then that many bytes.
async fn read_frame(reader: &mut (impl AsyncReadExt + Unpin)) -> io::Result<Bytes> {
    let len = usize::from(reader.read_u16().await?);
    if len == 0 || len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is not WebRTC"),
        ));
    }
    let mut data = BytesMut::zeroed(len);
    reader.read_exact(&mut data).await?;
    Ok(data.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn listening(limits: TcpLimits) -> (SocketAddr, mpsc::Receiver<TcpEvent>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(listen(listener, limits, tx));
        (addr, rx)
    }

    fn limits() -> TcpLimits {
        TcpLimits {
            max_connections: 2,
            first_frame_within: Duration::from_secs(10),
        }
    }

    #[tokio::test]
    async fn frames_both_ways_and_the_driver_closes_by_dropping_the_writer() {
        let (addr, mut events) = listening(limits()).await;
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let Some(TcpEvent::Opened { conn, writer, .. }) = events.recv().await else {
            panic!("opened first");
        };
        // Two frames in one write, then one split across three writes.
        for bytes in [&[0_u8, 3, 1, 2, 3, 0, 1, 9, 0][..], &[2, 7], &[7]] {
            client.write_all(bytes).await.expect("write");
        }
        for expected in [&[1_u8, 2, 3][..], &[9], &[7, 7]] {
            match events.recv().await {
                Some(TcpEvent::Frame { conn: c, data, .. }) => {
                    assert_eq!(c, conn);
                    assert_eq!(&data[..], expected);
                }
                other => panic!("a frame, got {other:?}"),
            }
        }
        assert!(writer.send(&[5, 6]));
        let mut back = [0_u8; 4];
        client.read_exact(&mut back).await.expect("read");
        assert_eq!(back, [0, 2, 5, 6]);
        drop(writer);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("closed cleanly");
        assert!(rest.is_empty());
        assert!(matches!(events.recv().await, Some(TcpEvent::Closed { conn: c, .. }) if c == conn));
    }

    #[tokio::test]
    async fn an_oversized_frame_closes_only_its_connection() {
        let (addr, mut events) = listening(limits()).await;
        let mut bad = TcpStream::connect(addr).await.expect("connect");
        let Some(TcpEvent::Opened {
            conn: bad_conn,
            writer: _w1,
            ..
        }) = events.recv().await
        else {
            panic!("opened");
        };
        let mut good = TcpStream::connect(addr).await.expect("connect");
        let Some(TcpEvent::Opened {
            conn: good_conn,
            writer: _w2,
            ..
        }) = events.recv().await
        else {
            panic!("opened");
        };
        bad.write_all(&[0xff, 0xff, 0]).await.expect("write");
        assert!(
            matches!(events.recv().await, Some(TcpEvent::Closed { conn, .. }) if conn == bad_conn)
        );
        good.write_all(&[0, 1, 42]).await.expect("write");
        assert!(matches!(
            events.recv().await,
            Some(TcpEvent::Frame { conn, data, .. }) if conn == good_conn && data[..] == [42]
        ));
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_are_closed_on_accept() {
        let (addr, mut events) = listening(limits()).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let stream = TcpStream::connect(addr).await.expect("connect");
            // Holding the writer keeps the connection open.
            let opened = events.recv().await;
            assert!(
                matches!(opened, Some(TcpEvent::Opened { .. })),
                "{opened:?}"
            );
            held.push((stream, opened));
        }
        let mut third = TcpStream::connect(addr).await.expect("the kernel accepts");
        let mut buf = [0_u8; 1];
        // Closed at once: end of stream, or a reset on some kernels. A
        // connection held open would hang here (the bound only stops a
        // broken build from hanging the suite).
        let read = tokio::time::timeout(Duration::from_secs(60), third.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed_after_the_first_frame_limit() {
        let (addr, mut events) = listening(limits()).await;
        let _silent = TcpStream::connect(addr).await.expect("connect");
        let Some(TcpEvent::Opened {
            conn, writer: _w, ..
        }) = events.recv().await
        else {
            panic!("opened");
        };
        // Paused time: the 10 s limit passes as soon as everything waits.
        assert!(matches!(events.recv().await, Some(TcpEvent::Closed { conn: c, .. }) if c == conn));
    }
}
