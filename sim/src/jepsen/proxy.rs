//! The fault-injecting TCP proxy on every Raft peer link.
//!
//! One proxy per destination node. The node advertises the proxy's address as its
//! `raft.raft_addr`, so every peer that sends to it connects to the proxy, and binds its real
//! Raft listener to a second port (`raft.raft_listen_addr`) that only the proxy knows. A peer
//! connection is one-way: the sender opens it and its first frame is `Hello { from, .. }`
//! (raft/src/transport/frame.rs); answers travel on the receiver's own connection to the
//! sender's proxy. So the proxy knows the (from, to) pair of every byte it forwards, and
//! [`Links`] can cut each *directed* link on its own: `a -> b` blocked while `b -> a` flows is
//! an asymmetric partition.
//!
//! Invariants: a blocked link carries nothing: a new connection on it is closed after its Hello
//! (before a byte reaches the destination), and an open one is closed the moment the link is
//! blocked. Healing only allows new connections; the transport reconnects by itself. A
//! connection whose sender cannot be identified (no Hello within [`HELLO_TIMEOUT`], an unknown
//! node id) is closed: the runner names every node it starts, so that never happens in a run.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::transport::frame::{self, Frame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest wait for a new connection's Hello frame before the proxy gives up on it.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the proxy's own connection to the destination's real listener.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

const LINKS_LOCK: &str = "the links lock is never held across a panic";

/// Which directed links between node slots are cut, shared by all proxies and the nemesis.
#[derive(Debug)]
pub struct Links {
    /// Blocked (from slot, to slot) pairs.
    blocked: Mutex<BTreeSet<(usize, usize)>>,
    /// Node id (`raft::node::driver::node_id_for_name`) of every name the runner started, to
    /// its slot.
    slots_by_id: Mutex<HashMap<u64, usize>>,
    /// Bumped on every change, so open connections re-check their link.
    generation: watch::Sender<u64>,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            blocked: Mutex::new(BTreeSet::new()),
            slots_by_id: Mutex::new(HashMap::new()),
            generation: watch::Sender::new(0),
        }
    }
}

impl Links {
    /// Records that the node named `name` runs in `slot` (before it is started).
    pub fn register(&self, name: &str, slot: usize) {
        let id = raft::node::driver::node_id_for_name(name).0;
        self.slots_by_id.lock().expect(LINKS_LOCK).insert(id, slot);
    }

    /// The slot of a node id, if the runner started a node with it.
    pub fn slot_of(&self, id: u64) -> Option<usize> {
        self.slots_by_id.lock().expect(LINKS_LOCK).get(&id).copied()
    }

    /// Cuts the directed link `from -> to`.
    pub fn block(&self, from: usize, to: usize) {
        self.blocked.lock().expect(LINKS_LOCK).insert((from, to));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Restores every link.
    pub fn heal_all(&self) {
        self.blocked.lock().expect(LINKS_LOCK).clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// True when `from -> to` is cut.
    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        self.blocked.lock().expect(LINKS_LOCK).contains(&(from, to))
    }

    /// The cut links, for the report.
    pub fn blocked(&self) -> Vec<(usize, usize)> {
        self.blocked
            .lock()
            .expect(LINKS_LOCK)
            .iter()
            .copied()
            .collect()
    }
}

/// A running proxy in front of one node's Raft listener; stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    /// The address peers are told to use (the node's advertised `raft.raft_addr`).
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Aborting the accept loop drops the listener; open connections end with their tasks,
        // which the runtime drops at shutdown.
        self.accept.abort();
    }
}

impl Proxy {
    /// Starts forwarding connections accepted on `listener` to `upstream` (the node's real Raft
    /// listener), for the node in slot `to`.
    pub fn spawn(
        listener: TcpListener,
        to: usize,
        upstream: SocketAddr,
        links: Arc<Links>,
    ) -> std::io::Result<Proxy> {
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors or similar: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let links = Arc::clone(&links);
                tokio::spawn(async move {
                    if let Err(why) = forward(stream, to, upstream, &links).await {
                        tracing::debug!(to, %why, "proxy connection ended");
                    }
                });
            }
        });
        Ok(Proxy { addr, accept })
    }
}

/// Serves one peer connection: identify the sender, then copy bytes both ways until either
/// side closes or the link is cut.
async fn forward(
    mut inbound: TcpStream,
    to: usize,
    upstream: SocketAddr,
    links: &Links,
) -> Result<(), String> {
    let _ = inbound.set_nodelay(true);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, frame::read(&mut inbound))
        .await
        .map_err(|_| "no Hello in time".to_string())?
        .map_err(|e| format!("reading Hello: {e}"))?;
    let Some(hello @ Frame::Hello { from: sender, .. }) = hello else {
        return Err("the first frame is not Hello".into());
    };
    let from = links
        .slot_of(sender.0)
        .ok_or_else(|| format!("Hello from unknown node id {}", sender.0))?;
    let mut generation = links.generation.subscribe();
    if links.is_blocked(from, to) {
        return Ok(()); // Dropping `inbound` closes it: the sender sees a lost connection.
    }
    let mut outbound = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, TcpStream::connect(upstream))
        .await
        .map_err(|_| "upstream connect timed out".to_string())?
        .map_err(|e| format!("upstream connect: {e}"))?;
    let _ = outbound.set_nodelay(true);
    frame::write(&mut outbound, &hello)
        .await
        .map_err(|e| format!("forwarding Hello: {e}"))?;
    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
    tokio::pin!(copy);
    loop {
        tokio::select! {
            result = &mut copy => return result.map(|_| ()).map_err(|e| e.to_string()),
            changed = generation.changed() => {
                if changed.is_err() || links.is_blocked(from, to) {
                    // Returning drops both sockets: the link is cut mid-stream.
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn hello_from(proxy: SocketAddr, name: &str) -> TcpStream {
        let mut s = TcpStream::connect(proxy)
            .await
            .expect("connect to the proxy");
        let hello = Frame::Hello {
            from: raft::node::driver::node_id_for_name(name),
            addr: "x:1".into(),
            cluster: raft::node::ClusterId(1),
        };
        frame::write(&mut s, &hello).await.expect("send Hello");
        s
    }

    #[tokio::test]
    async fn a_blocked_directed_link_carries_nothing_and_healing_restores_it() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream_addr = upstream.local_addr().expect("addr");
        let links = Arc::new(Links::default());
        links.register("a", 0);
        links.register("b", 1);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = Proxy::spawn(listener, 1, upstream_addr, Arc::clone(&links)).expect("spawn");

        // Open link: the Hello reaches the destination unchanged.
        let _a = hello_from(proxy.addr, "a").await;
        let (mut got, _) = upstream.accept().await.expect("forwarded");
        match frame::read(&mut got).await.expect("a frame") {
            Some(Frame::Hello { from, .. }) => {
                assert_eq!(from, raft::node::driver::node_id_for_name("a"))
            }
            other => panic!("expected Hello, got {other:?}"),
        }

        // Cutting a -> b closes the open connection.
        links.block(0, 1);
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), got.read(&mut byte))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "the destination side was closed");

        // A new connection on the cut link never reaches the destination.
        let mut cut = hello_from(proxy.addr, "a").await;
        let n = tokio::time::timeout(Duration::from_secs(2), cut.read(&mut byte))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "the proxy closed the sender's connection");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), upstream.accept())
                .await
                .is_err(),
            "nothing was forwarded"
        );
        assert!(!links.is_blocked(1, 0), "b -> a is a different link");

        // Healing lets new connections through again.
        links.heal_all();
        let _a = hello_from(proxy.addr, "a").await;
        tokio::time::timeout(Duration::from_secs(2), upstream.accept())
            .await
            .expect("forwarded after healing")
            .expect("accept");
    }
}
