//! Acknowledgements: how each side of a peer connection tells whether the stream still moves.
//!
//! The receiver counts the bytes it reads ([`Counted`]) and reports them every
//! [`ACK_INTERVAL`] on the same connection ([`write_acks`]), or says it is busy while its node's
//! queue is full. The sender counts the bytes its socket accepted ([`Watched`]) and fails its
//! next write or flush once they have gone unacknowledged for [`ACK_TIMEOUT`], or once the
//! receiver's side closed ([`read_acks`]). Invariant: a connection whose bytes stopped moving
//! is never written to for longer than [`ACK_TIMEOUT`] plus one [`ACK_INTERVAL`]; progress is
//! counted in bytes, so a slow but moving stream is never taken for a dead one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::frame::{self, Frame};
use super::sender::RefusalReporter;
use super::{ACK_INTERVAL, ACK_TIMEOUT};

/// What the receiver last acknowledged, stored by the sender's ack reader task.
#[derive(Default)]
pub(super) struct AckState {
    /// Bytes the receiver has read from this connection.
    pub(super) bytes: AtomicU64,
    /// How many "still busy" acknowledgements arrived: the receiver is alive but waits on its
    /// node, so it reads nothing new.
    pub(super) busy: AtomicU64,
    /// The receiver's side of the connection ended (the peer closed it, crashed, or
    /// restarted): nothing more sent on it can arrive.
    pub(super) closed: AtomicBool,
    /// The receiver refused the connection (set before `closed`).
    pub(super) refused: AtomicBool,
}

/// The sender's socket: counts the bytes the socket accepts and fails a write or flush once
/// written bytes have gone unacknowledged for longer than [`ACK_TIMEOUT`].
pub(super) struct Watched<W> {
    inner: W,
    written: u64,
    acks: Arc<AckState>,
    /// The acknowledgement state last looked at: (bytes, busy count).
    seen: (u64, u64),
    /// Since when written bytes have waited for an acknowledgement that moves.
    waiting_since: Option<tokio::time::Instant>,
    /// Wakes a blocked write or flush to look at the acknowledgements again.
    tick: Pin<Box<tokio::time::Sleep>>,
    /// Where the bytes the socket accepted are also counted for the peer, across connections.
    traffic: Option<Arc<super::traffic::PeerTraffic>>,
}

impl<W> Watched<W> {
    pub(super) fn new(
        inner: W,
        acks: Arc<AckState>,
        traffic: Option<Arc<super::traffic::PeerTraffic>>,
    ) -> Watched<W> {
        Watched {
            traffic,
            inner,
            written: 0,
            acks,
            seen: (0, 0),
            waiting_since: None,
            tick: Box::pin(tokio::time::sleep(ACK_INTERVAL)),
        }
    }

    /// Fails when the receiver closed the connection, or when written bytes have waited too
    /// long for it to read them.
    pub(super) fn check(&mut self) -> io::Result<()> {
        if self.acks.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer closed the connection",
            ));
        }
        let now = tokio::time::Instant::now();
        let seen = (
            self.acks.bytes.load(Ordering::Acquire),
            self.acks.busy.load(Ordering::Acquire),
        );
        if seen != self.seen {
            self.seen = seen;
            self.waiting_since = None;
        }
        if self.written <= seen.0 {
            self.waiting_since = None;
            return Ok(());
        }
        let since = *self.waiting_since.get_or_insert(now);
        if now.duration_since(since) > ACK_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer stopped acknowledging what was sent",
            ));
        }
        Ok(())
    }

    /// While the socket is blocked: checks the acknowledgements every [`ACK_INTERVAL`].
    fn poll_stalled(&mut self, cx: &mut std::task::Context<'_>) -> io::Result<()> {
        while self.tick.as_mut().poll(cx).is_ready() {
            self.check()?;
            let next = tokio::time::Instant::now() + ACK_INTERVAL;
            self.tick.as_mut().reset(next);
        }
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Watched<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                if let Some(traffic) = &this.traffic {
                    traffic.sent(n);
                }
                std::task::Poll::Ready(Ok(n))
            }
            std::task::Poll::Pending => {
                this.poll_stalled(cx)?;
                std::task::Poll::Pending
            }
            other => other,
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            std::task::Poll::Pending => {
                this.poll_stalled(cx)?;
                std::task::Poll::Pending
            }
            other => other,
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The receiver's socket: counts the bytes read, for the acknowledgements.
pub(super) struct Counted<R> {
    pub(super) inner: R,
    pub(super) read: Arc<AtomicU64>,
    /// Where the bytes read are also counted for the peer, once its Hello was served.
    pub(super) traffic: Option<Arc<super::traffic::PeerTraffic>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.read.fetch_add(read as u64, Ordering::AcqRel);
            if let Some(traffic) = &this.traffic {
                traffic.received(read as u64);
            }
        }
        polled
    }
}

/// Stops a helper task when the connection it serves ends.
pub(super) struct AbortOnDrop(pub(super) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sender side: reads the receiver's acknowledgements until the connection ends, and then
/// says so, so that the sender replaces the connection before it writes the next message into
/// a socket nobody reads (the message would be lost; for a vote request, an election's worth).
/// A refusal is reported, and marks the connection refused as well as closed.
pub(super) async fn read_acks<R: AsyncRead + Unpin>(
    reader: R,
    acks: Arc<AckState>,
    refusals: RefusalReporter,
) {
    let mut r = BufReader::new(reader);
    loop {
        match frame::read(&mut r).await {
            Ok(Some(Frame::Ack { bytes, busy })) => {
                acks.bytes.store(bytes, Ordering::Release);
                if busy {
                    acks.busy.fetch_add(1, Ordering::AcqRel);
                }
            }
            Ok(Some(Frame::Refused(refusal))) => {
                acks.refused.store(true, Ordering::Release);
                refusals.refused(refusal);
                break;
            }
            _ => break,
        }
    }
    acks.closed.store(true, Ordering::Release);
}

/// Receiver side: every [`ACK_INTERVAL`], tells the sender how many bytes were read (when
/// that changed, or while the receiver waits on its node), until the connection ends.
pub(super) async fn write_acks<W: AsyncWrite + Unpin>(
    writer: W,
    read: Arc<AtomicU64>,
    busy: Arc<AtomicBool>,
) {
    let mut w = writer;
    let mut last = 0;
    loop {
        tokio::time::sleep(ACK_INTERVAL).await;
        let bytes = read.load(Ordering::Acquire);
        let busy = busy.load(Ordering::Acquire);
        if bytes == last && !busy {
            continue;
        }
        let ack = Frame::Ack { bytes, busy };
        if frame::write(&mut w, &ack).await.is_err() || w.flush().await.is_err() {
            return;
        }
        last = bytes;
    }
}
