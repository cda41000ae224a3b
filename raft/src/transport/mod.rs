//! Peer transport: one outgoing connection per peer, carrying [`frame`]s.
//!
//! Each peer has a sender task with a bounded queue. `send` never waits: when a peer's queue is
//! full (the peer is slow or gone) the message is dropped, and Raft's retries cover it. The
//! sender connects on demand, retries failed connects with exponential backoff (a connection
//! that had been up a while is replaced at once), and streams snapshots in chunks read from the
//! snapshot files ([`SnapshotFiles::open`]), reporting to the node whether each one arrived;
//! messages queued meanwhile go out between the chunks, so that a follower receiving a large
//! snapshot goes on hearing its leader's heartbeats. The receiving side accepts connections,
//! checks every frame, streams a snapshot's chunks into the snapshot files
//! ([`SnapshotFiles::receive`]), which check it whole before the node hears of it, and steps
//! the node with each message.
//! A peer that sends garbage loses its connection and nothing else. The receiver acknowledges
//! the bytes it has read every [`ACK_INTERVAL`] on the same connection (or says it is busy
//! while its node's queue is full), and a sender whose bytes go unacknowledged for
//! [`ACK_TIMEOUT`] drops the connection and opens a new one: a stream that silently stopped
//! moving (a half-open connection, a lost segment in simulation) would otherwise swallow every
//! later message to that peer.
//!
//! Every connection opens with a Hello that names the caller, its address and its cluster. The
//! acceptor refuses a caller of another cluster, one that a committed membership change
//! removed and that is not a member again ([`PeerTransport::set_removed`]), and, while its node
//! follows a leader, any other caller that is neither a member of its latest configuration nor
//! a joiner it expects ([`PeerTransport::expect_peers`]): it writes one `Refused` frame,
//! closes, and steps its node with nothing from that connection. A caller served only because
//! its node knows no leader is a stranger: its messages may raise the node's term only a
//! little, and only while the node follows no leader ([`Node::step_from_stranger`]). Every
//! message on a served
//! connection must name the Hello's caller as its sender; one that names another closes the
//! connection. The opener
//! hands each refusal to its server ([`TransportReport::Refused`]), which can tell the operator
//! or stop the node, and tries again only after [`RECONNECT_BACKOFF_MAX`] (the peer may be
//! fixed). Both sides log a refusal at most once per [`REFUSAL_LOG_INTERVAL`] per peer and kind.
//!
//! What a caller can hold is bounded before anyone knows who it is: at most
//! [`PEER_CONNECTIONS_MAX`] inbound connections are served at once (one more is closed
//! unread), and one that sends no Hello within [`HELLO_TIMEOUT`] is closed. Snapshot streams
//! being received hold at most [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] of disk between them (a stream that
//! would pass it is refused by closing its connection), and one that stops moving for
//! [`SNAPSHOT_CHUNK_TIMEOUT`] is dropped with what it held.
//!
//! Sockets are behind the [`Network`] trait, so the same code runs over tokio's TCP in
//! production and over turmoil's simulated TCP in the simulations.
//!
//! Modules, one job each: `network` (the socket seam), `registry` (the peers and the node's
//! [`Transport`]), `sender` (one task per peer), `receiver` (accepting and serving
//! connections), `admission` (whom the receiver serves, and what a caller may hold), `ack`
//! (acknowledgements, both sides), `traffic` (bytes per peer, for metrics) and `log_limit`
//! (rate-limited log lines). This module holds
//! the limits they share.

mod ack;
mod admission;
pub mod frame;
mod log_limit;
mod network;
mod receiver;
mod registry;
mod sender;
#[cfg(test)]
mod tests;
mod traffic;

use std::time::Duration;

/// Why a peer refused a connection: [`TransportReport::Refused`] carries it to the server.
pub use frame::Refusal;
use frame::SNAPSHOT_BYTES_MAX;

#[cfg(doc)]
use crate::node::{Node, SnapshotFiles, Transport};
pub use admission::InboundSlot;
pub(crate) use log_limit::RefusalLog;
pub use network::{Listener, Network, TcpNetwork};
pub use receiver::{serve_connection, serve_peers};
pub use registry::{PeerTransport, SnapshotReport, TransportReport};
pub use traffic::{PEERS_COUNTED_MAX, PeerTrafficSnapshot};

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_MAX: usize = 4096;
/// The first reconnect delay; it doubles up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// The longest reconnect delay.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a connection must have lived for its loss to be answered with an immediate
/// reconnect rather than a backoff delay.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(1);
/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the receiving side of a connection tells the sender how many bytes it has read
/// (when that changed, or while it waits on a busy node).
pub const ACK_INTERVAL: Duration = Duration::from_millis(100);
/// How long a sender lets bytes it wrote go unacknowledged before it presumes the connection
/// dead and opens a new one. TCP itself may take many minutes to notice a peer that vanished
/// without a reset, or a stream that stopped moving; Raft cannot wait that long. Progress is
/// counted in bytes, so a large snapshot chunk on a slow link is not mistaken for a stall.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest time between two log lines about refusals of the same kind from or to the
/// same peer: a refused peer tries again every [`RECONNECT_BACKOFF_MAX`], and one line a minute
/// tells the operator as much as sixty.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// The most (peer, kind of refusal) pairs whose last log line is remembered. Peer ids come from
/// untrusted Hellos, so the table is bounded; while it is full of lines younger than
/// [`REFUSAL_LOG_INTERVAL`], refusals of further peers are not logged.
pub const REFUSAL_LOG_PEERS_MAX: usize = 1024;
/// How long an acceptor that refused a connection goes on reading, and discarding, what the
/// opener sends before it closes. The opener writes its first message right behind its Hello,
/// and closing a TCP socket with unread bytes resets the connection, which can destroy the
/// Refused frame before the opener has read it.
pub const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How long an acceptor waits for its own configuration to name a caller it does not know
/// before refusing it as [`Refusal::NotMember`]. A leader appends a learner's configuration
/// entry and sends it entries in the same step, but publishes its new configuration only
/// after its own fsync; a fast learner's answering connection can arrive in between, and
/// should be served, not refused and retried a second later. Shorter than [`ACK_TIMEOUT`],
/// so that the caller does not give up on the connection meanwhile.
pub const MEMBERSHIP_GRACE: Duration = Duration::from_millis(500);
/// The most node ids a node expects to hear from without having them in its configuration
/// ([`PeerTransport::expect_peers`]): a joiner's list of the members it was told of. More
/// are ignored, so a hostile join answer cannot grow the table without bound.
pub const EXPECTED_PEERS_MAX: usize = 1024;
/// The most peers whose address a node learns from callers' Hellos (rather than from the
/// replicated address book). A node that knows no leader serves callers it has never heard
/// of (see `refusal_for`), and each one learned costs a sender task, and with it a socket
/// while it is connected: beyond this many known peers, a new caller's address is not learned
/// (the address book still brings every real member's). With [`PEER_CONNECTIONS_MAX`] it
/// bounds the file descriptors the peer port can take: 128, half of the server's reserve
/// beside its clients (`FD_RESERVE` in the api crate), which is checked at compile time there.
pub const LEARNED_PEERS_MAX: usize = 64;
/// The most inbound peer connections served at once, those still waiting for their Hello
/// included. A real cluster needs one per peer (two for a moment while a peer replaces its
/// connection); anything beyond is someone holding sockets open, and each would take a file
/// descriptor the WAL may need. A connection over the cap is closed at once, unread.
pub const PEER_CONNECTIONS_MAX: usize = 64;
/// How long an inbound connection may take to send its Hello. A real peer writes it the
/// moment it connects; a caller that sends nothing must not hold one of the
/// [`PEER_CONNECTIONS_MAX`] slots for ever.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The most bytes of snapshot data this node receives at once, over all its inbound
/// connections (they go to temporary files): each stream reserves the length its
/// `SnapshotBegin` announces, and one that would pass the budget is refused (its connection
/// closed, so that its sender reports it undelivered and the leader sends it again later). As
/// large as the largest snapshot accepted ([`SNAPSHOT_BYTES_MAX`]), so that any one snapshot
/// can be received: a leader sends a node one at a time. Without it, every connection could
/// fill the disk with that much.
pub const SNAPSHOT_BYTES_IN_FLIGHT_MAX: u64 = SNAPSHOT_BYTES_MAX;
/// How long a snapshot stream may go without its next frame before its connection is closed
/// and its reservation of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] given back: a sender writes the
/// chunks back to back, and a stream that stopped moving must not hold the budget for ever.
pub const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest time between two log lines about inbound peer connections closed because
/// [`PEER_CONNECTIONS_MAX`] were open; each line says how many were left out before it.
pub const OVER_CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The shortest time between two log lines about peer connections closed on a bad frame
/// (undecodable, out of order, or a message naming another sender than the Hello did). The
/// caller of such a connection is not known to be anyone, so these lines are limited
/// together, each saying how many were left out before it.
pub const BAD_FRAME_LOG_INTERVAL: Duration = Duration::from_secs(10);

const PEERS_LOCK: &str = "the peer table lock is never held across a panic";
