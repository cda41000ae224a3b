//! The network seam: the sockets the transport opens go through [`Network`], and the
//! connections it accepts come from a [`Listener`], so the same sender, accept loop and
//! receiver run over tokio's TCP in production ([`TcpNetwork`], `tokio::net::TcpListener`)
//! and over a simulated network in the simulations and tests. The only promise asked of an
//! implementation is a connected, ordered byte stream per `connect` or `accept`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// The sockets the transport uses: tokio's TCP, or a simulated network.
pub trait Network: Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// [`Network`] over tokio's TCP, with `TCP_NODELAY` (Raft messages are small and latency-bound).
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpNetwork;

impl Network for TcpNetwork {
    type Stream = tokio::net::TcpStream;

    async fn connect(&self, addr: String) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Where peers' connections come in: tokio's TCP listener, or a simulated one.
pub trait Listener: Send + 'static {
    /// An accepted byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Waits for the next connection: the stream, ready to be served, and the caller's
    /// address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

/// Accepts with `TCP_NODELAY`, as [`TcpNetwork`] connects.
impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        // Without it a small message may wait for the previous one's acknowledgement; the
        // connection is still usable, so a failure to set it is not a reason to drop it.
        let _ = stream.set_nodelay(true);
        Ok((stream, addr))
    }
}
