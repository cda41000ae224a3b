//! Admission: whom the accepting side serves, and what a caller may hold before anyone knows
//! who it is. [`PeerTransport::refusal_for`] decides from the caller's Hello (cluster,
//! removal, membership, the joiners expected); [`PeerTransport::inbound_slot`] caps the
//! connections served at [`PEER_CONNECTIONS_MAX`]; [`PeerTransport::reserve_snapshot`] caps
//! the snapshot bytes being received at [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`]. Invariants: a slot
//! or a reservation is given back when dropped, however its connection ends; every log line a
//! caller can cause here is rate-limited ([`super::log_limit`]).

use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::core::NodeId;
use crate::node::{ClusterId, Node, names};

use super::frame;
use super::log_limit::rate_limited;
use super::network::Network;
use super::registry::PeerTransport;
use super::{
    BAD_FRAME_LOG_INTERVAL, MEMBERSHIP_GRACE, OVER_CAP_LOG_INTERVAL, PEER_CONNECTIONS_MAX,
    PEERS_LOCK, Refusal, SNAPSHOT_BYTES_IN_FLIGHT_MAX,
};

/// Bytes of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] held by one snapshot stream being reassembled;
/// given back when dropped, however the stream ends.
pub(super) struct SnapshotReservation {
    bytes: u64,
    used: Arc<Mutex<u64>>,
}

impl Drop for SnapshotReservation {
    fn drop(&mut self) {
        let mut used = self.used.lock().expect(PEERS_LOCK);
        *used = used
            .checked_sub(self.bytes)
            .expect("a reservation gives back only what it took");
    }
}

/// One of the [`PEER_CONNECTIONS_MAX`] inbound connection slots; given back when dropped, so
/// a connection that ends however it ends frees its slot.
pub struct InboundSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl<N: Network> PeerTransport<N> {
    /// Why a caller that announced itself as `from` of `cluster` is refused, if it is:
    /// - of another cluster: always;
    /// - a member of this node's latest configuration (committed or not): never;
    /// - removed by a committed change ([`PeerTransport::set_removed`]): as removed;
    /// - expected ([`PeerTransport::expect_peers`]): never;
    /// - while this node knows no leader: never. This node may be the one that is behind: a
    ///   member added while it was away (or partitioned) is unknown to it, and if that member
    ///   now leads, only it can bring this node's log, and with it the configuration, up to
    ///   date (a blank joiner, or a joiner restarted before its log arrived, is the extreme
    ///   case). Refusing it would leave this node out of the cluster for good. Its messages
    ///   are stepped as a stranger's, which may raise the term only a little, and only while
    ///   the node follows no leader ([`Node::step_from_stranger`]): a forger in this window
    ///   cannot take the node to a far term, nor climb once the node follows someone;
    /// - anyone else, while this node follows a leader: as not a member, once the
    ///   configuration has not come to include it within [`MEMBERSHIP_GRACE`].
    pub(super) async fn refusal_for<O: Send + 'static>(
        &self,
        from: NodeId,
        cluster: ClusterId,
        node: &Node<O>,
    ) -> Option<Refusal> {
        if cluster != self.cluster {
            return Some(Refusal::WrongCluster {
                expected: self.cluster,
                got: cluster,
            });
        }
        let (member, leaderless, unconfigured) = node.with_status(|s| {
            (
                s.configuration.contains(from),
                s.leader.is_none(),
                s.configuration.members().is_empty(),
            )
        });
        if member {
            return None;
        }
        // A node removed and later added back is a member again (above): the latest
        // configuration, not the old removal, decides.
        let removed_at = self.removed.lock().expect(PEERS_LOCK).get(&from).copied();
        if let Some(at) = removed_at {
            return Some(Refusal::Removed { at });
        }
        let expected = self.expected.lock().expect(PEERS_LOCK).contains(&from);
        // A node with no configuration yet (a joiner whose log has not arrived) has no member
        // to prefer and no state to protect: whoever leads now must be able to bring it in,
        // even while it still follows an earlier leader that lost office before it could.
        if expected || leaderless || unconfigured {
            return None;
        }
        let mut status = node.watch_status();
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_GRACE;
        loop {
            if status.borrow_and_update().configuration.contains(from) {
                return None;
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => continue,
                // Out of time, or the node stopped.
                _ => return Some(Refusal::NotMember),
            }
        }
    }

    /// A slot for one more inbound connection, held for as long as it is served; `None` when
    /// [`PEER_CONNECTIONS_MAX`] are open (the caller closes the connection, and the refusal is
    /// logged, rate-limited).
    pub fn inbound_slot(&self, addr: &str) -> Option<InboundSlot> {
        match Arc::clone(&self.inbound_slots).try_acquire_owned() {
            Ok(permit) => Some(InboundSlot(permit)),
            Err(_) => {
                if let Some(skipped) = rate_limited(&self.over_cap_logged, OVER_CAP_LOG_INTERVAL) {
                    warn!(
                        peer = %addr,
                        cap = PEER_CONNECTIONS_MAX,
                        not_logged = skipped,
                        "closed a peer connection from {addr} at once: {PEER_CONNECTIONS_MAX} \
                         peer connections are open, the most this node serves ({skipped} more \
                         such connections since the last line were not logged); a real \
                         cluster needs one per peer, so someone else is holding them open"
                    );
                }
                None
            }
        }
    }

    /// Reserves `bytes` of [`SNAPSHOT_BYTES_IN_FLIGHT_MAX`] for a snapshot stream from
    /// `from`, or, when they would pass it, logs (rate-limited) that the stream is refused and
    /// returns `None`.
    pub(super) fn reserve_snapshot(&self, from: NodeId, bytes: u64) -> Option<SnapshotReservation> {
        let mut used = self.snapshot_bytes.lock().expect(PEERS_LOCK);
        if used.saturating_add(bytes) > SNAPSHOT_BYTES_IN_FLIGHT_MAX {
            let busy = *used;
            drop(used);
            if let Some(skipped) =
                rate_limited(&self.snapshot_refusals_logged, BAD_FRAME_LOG_INTERVAL)
            {
                let from = names::of(from);
                warn!(
                    peer = %from,
                    snapshot_bytes = bytes,
                    reassembling_bytes = busy,
                    not_logged = skipped,
                    "refused a snapshot stream of {bytes} bytes from {from}: {busy} bytes of \
                     other snapshots are being received, and at most \
                     {SNAPSHOT_BYTES_IN_FLIGHT_MAX} are held at once; the leader sends it \
                     again later ({skipped} more such refusals since the last line were not \
                     logged)"
                );
            }
            return None;
        }
        *used += bytes;
        Some(SnapshotReservation {
            bytes,
            used: Arc::clone(&self.snapshot_bytes),
        })
    }

    /// Whether `from` is a stranger to `node`: neither a member of its latest configuration
    /// nor a joiner it expects. Such a caller is served only while the node knows no leader
    /// (see `refusal_for`), and its messages are stepped with [`Node::step_from_stranger`].
    /// A node whose configuration is empty (a joiner restarted before its log arrived, which
    /// no longer knows whom it expected) has no stranger: it knows no member to learn the
    /// term from, and no state to protect, so only a leader can bring it in, whatever its term.
    pub(super) fn is_stranger<O: Send + 'static>(&self, from: NodeId, node: &Node<O>) -> bool {
        let unknown = node.with_status(|s| {
            !s.configuration.contains(from) && !s.configuration.members().is_empty()
        });
        unknown && !self.expected.lock().expect(PEERS_LOCK).contains(&from)
    }

    /// Logs, at most once per [`BAD_FRAME_LOG_INTERVAL`], that a peer connection from `addr`
    /// was closed on a bad frame.
    pub(super) fn log_bad_frame(&self, addr: &str, error: &frame::FrameError) {
        if let Some(skipped) = rate_limited(&self.bad_frames_logged, BAD_FRAME_LOG_INTERVAL) {
            warn!(
                peer = %addr,
                error = %error,
                not_logged = skipped,
                "peer connection from {addr} closed on a bad frame: {error} ({skipped} more \
                 since the last such line were not logged)"
            );
        }
    }

    /// Logs (rate-limited) that this node refused the caller `from` at `addr`.
    pub(super) fn log_refusal(&self, from: NodeId, addr: &str, refusal: &Refusal) {
        if !self.refusals_logged.should_log(from, refusal.kind()) {
            return;
        }
        let from = names::of(from);
        match refusal {
            Refusal::WrongCluster { expected, got } => warn!(
                peer = %from,
                addr,
                peer_cluster = %got,
                cluster = %expected,
                "refused a peer: node {from} at {addr} belongs to cluster {got}, this node to \
                 cluster {expected}; if it was meant to join this cluster it holds another \
                 cluster's data: remove it from this cluster or restart it with an empty data \
                 directory and --join-addr"
            ),
            Refusal::Removed { at } => warn!(
                peer = %from,
                addr,
                removed_at = at.0,
                "refused a peer: node {from} at {addr} was removed from this cluster (at index \
                 {}) and still runs; stop it, or to bring it back restart it with an empty data \
                 directory and --join-addr",
                at.0
            ),
            Refusal::NotMember => warn!(
                peer = %from,
                addr,
                "refused a peer: node {from} at {addr} is not a member of this node's \
                 configuration and was not expected to join; if it is a real member that \
                 joined while this node was away, this node catches up from the leader it \
                 follows (if it stays behind, re-add it with an empty data directory and \
                 --join-addr)"
            ),
        }
    }
}
