//! The network seam: the sockets the transport opens go through [`Network`], so the same
//! sender and receiver run over tokio's TCP in production ([`TcpNetwork`]) and over a
//! simulated network in the simulations and tests. The only promise asked of an
//! implementation is a connected, ordered byte stream per `connect`.

use std::future::Future;
use std::io;

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
