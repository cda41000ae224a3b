//! The peer transport's sockets in simulation: turmoil's TCP behind the transport's
//! [`Network`] seam, and the accept loop that feeds incoming peer connections to the real
//! [`serve_connection`].
//!
//! Hosts are addressed by name (`n1:7000`); turmoil resolves the name to its simulated address,
//! so partitions, held links and latency apply to Raft traffic exactly as they would on wires.

use std::io;
use std::sync::Arc;

use raft::node::Node;
use raft::transport::{Network, PeerTransport, serve_connection};
use tracing::debug;

/// The port every simulated node listens on for its peers.
pub const PEER_PORT: u16 = 7000;

/// How long the accept loop waits after a failed accept before it tries again.
pub const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(10);

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

/// Accepts peer connections until the host is crashed, serving each with the transport's own
/// receiving code.
pub async fn serve_peers<O: Send + 'static>(
    listener: turmoil::net::TcpListener,
    node: Node<O>,
    transport: Arc<PeerTransport<TurmoilNetwork>>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                debug!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let node = node.clone();
        let transport = Arc::clone(&transport);
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, node, transport).await {
                debug!(%from, error = %e, "peer connection closed on a bad frame");
            }
        });
    }
}
