//! The peer transport's sockets in simulation: turmoil's TCP behind the transport's
//! [`Network`] and [`Listener`] seams, so that the server's own sender, accept loop and
//! receiver carry the simulated nodes' traffic.
//!
//! Hosts are addressed by name (`n1:7000`); turmoil resolves the name to its simulated address,
//! so partitions, held links and latency apply to Raft traffic exactly as they would on wires.

use std::io;
use std::net::SocketAddr;

use raft::transport::{Listener, Network};

/// The port every simulated node listens on for its peers.
pub const PEER_PORT: u16 = 7000;

/// [`Network`] over turmoil's simulated TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNetwork;

impl Network for TurmoilNetwork {
    type Stream = turmoil::net::TcpStream;

    async fn connect(&self, addr: String) -> io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr.as_str()).await
    }
}

/// The Raft address of the simulated host `name`.
pub fn peer_addr(name: &str) -> String {
    format!("{name}:{PEER_PORT}")
}

/// turmoil's listener behind the transport's [`Listener`] seam, so that the simulated node
/// accepts its peers with the server's own accept loop.
pub struct TurmoilListener(pub turmoil::net::TcpListener);

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, SocketAddr)> {
        self.0.accept().await
    }
}
