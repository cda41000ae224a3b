//! The series read at scrape time: what the node, its WAL, its transport and its store
//! already keep, turned into Prometheus families. Nothing here runs on a request's path.
//! Invariant: per-peer series name only members of the configuration the node follows, so a
//! stranger's connection or a removed node's old counters never make a series.

use prometheus::proto::MetricFamily;
use raft::core::{NodeId, Role};
use raft::node::names;

use super::family::{Families, Labels};
use crate::server::Server;

const MICROS: f64 = 1e-6;

fn peer(id: NodeId) -> Labels {
    vec![("peer", names::of(id).to_string())]
}

/// What the metrics count of proposals themselves (the rest is read from the node).
pub(super) struct Proposals {
    /// Proposals the node waits on.
    pub(super) pending: i64,
    /// Proposals refused or lost.
    pub(super) failed: u64,
    /// The commit and applied index the node started with.
    pub(super) start: (u64, u64),
}

/// Every family read from `server`'s state now.
pub(super) fn families(server: &Server, proposals: Proposals) -> Vec<MetricFamily> {
    let status = server.node.status();
    let node = server.node.metrics();
    let wal = server.wal_metrics.snapshot();
    let (keys, sessions) = {
        let machine = server.machine.lock().expect(crate::service::MACHINE_LOCK);
        (machine.kv.len(), machine.kv.sessions().len())
    };
    let quota = server.quota.state();
    let mut f = Families::default();

    // The seed's names.
    f.gauge(
        "kvstore_storage_keys_total",
        "Keys in the store as this node applied it",
        keys as f64,
    );
    f.gauge(
        "raftkv_wal_segments_total",
        "Segment files in the write-ahead log",
        wal.segments as f64,
    );
    f.gauge(
        "raftkv_wal_size_bytes",
        "Bytes of the write-ahead log's segment files",
        wal.bytes_on_disk as f64,
    );
    f.counter(
        "raftkv_wal_entries_compacted_total",
        "Log entries removed from the write-ahead log by compaction behind a snapshot",
        wal.entries_compacted,
    );
    f.gauge(
        "raftkv_raft_log_size_bytes",
        "Bytes of the Raft log on disk (the write-ahead log's segments, which hold only entries)",
        wal.bytes_on_disk as f64,
    );
    f.gauge(
        "raftkv_raft_log_entries_total",
        "Entries the Raft log holds (from its first kept entry to its last)",
        status
            .last_index
            .0
            .saturating_add(1)
            .saturating_sub(wal.first_index) as f64,
    );
    let role = status.role;
    let is_leader = role == Some(Role::Leader);
    f.gauge(
        "raftkv_raft_is_leader",
        "1 on the leader, 0 elsewhere",
        f64::from(u8::from(is_leader)),
    );

    // What etcd's operators watch.
    f.gauge(
        "raftkv_raft_has_leader",
        "1 when this node knows a leader",
        f64::from(u8::from(status.leader.is_some())),
    );
    f.gauge("raftkv_raft_term", "The current term", status.term.0 as f64);
    f.gauge(
        "raftkv_raft_commit_index",
        "The highest log index known committed",
        status.commit.0 as f64,
    );
    f.gauge(
        "raftkv_raft_applied_index",
        "The highest log index applied to the state machine",
        status.applied.0 as f64,
    );
    f.counter(
        "raftkv_raft_leader_changes_seen_total",
        "Times this node saw a new leader",
        node.leader_changes_seen,
    );
    let configuration = &status.configuration;
    let learner = !configuration.is_voter(server.id) && configuration.is_learner(server.id);
    let current = match role {
        Some(Role::Leader) => "leader",
        Some(Role::Candidate) => "candidate",
        Some(Role::PreCandidate) => "precandidate",
        Some(Role::Follower) if learner => "learner",
        Some(Role::Follower) | None => "follower",
    };
    f.gauges(
        "raftkv_raft_role",
        "1 for the role this node is in, 0 for the others",
        ["leader", "follower", "candidate", "precandidate", "learner"].map(|r| {
            (
                vec![("role", r.to_string())],
                f64::from(u8::from(r == current)),
            )
        }),
    );
    f.counter(
        "raftkv_raft_elections_started_total",
        "Elections this node started as a candidate",
        node.elections_started,
    );
    f.counter(
        "raftkv_raft_read_index_rounds_total",
        "Read indexes this node asked for (one per linearizable read it served)",
        node.read_index_requests,
    );
    let (commit_at_start, applied_at_start) = proposals.start;
    f.counter(
        "raftkv_proposals_committed_total",
        "Log entries committed since this process started (on every node, as etcd counts them)",
        status.commit.0.saturating_sub(commit_at_start),
    );
    f.counter(
        "raftkv_proposals_applied_total",
        "Log entries applied since this process started (on every node, as etcd counts them)",
        status.applied.0.saturating_sub(applied_at_start),
    );
    f.gauge(
        "raftkv_proposals_pending",
        "Proposals this node made and waits on",
        proposals.pending.max(0) as f64,
    );
    f.counter(
        "raftkv_proposals_failed_total",
        "Proposals this node made that were refused (but for not leading), lost or given up on",
        proposals.failed,
    );
    f.histograms(
        "raftkv_wal_fsync_duration_seconds",
        "Time of each fdatasync of the write-ahead log",
        MICROS,
        [(Vec::new(), &wal.fsync_latency_us)],
    );
    f.histograms(
        "raftkv_snapshot_duration_seconds",
        "Time to write a snapshot of this node's state",
        MICROS,
        [(Vec::new(), &node.snapshot_write_us)],
    );
    f.gauge(
        "raftkv_snapshot_size_bytes",
        "Bytes of the snapshot this node wrote last",
        node.snapshot_bytes as f64,
    );
    f.counter(
        "raftkv_snapshots_total",
        "Snapshots this node wrote of its own state",
        node.snapshots_taken,
    );
    f.counter(
        "raftkv_snapshots_received_total",
        "Snapshots this node received from a leader",
        node.snapshots_received,
    );
    f.gauge(
        "raftkv_snapshot_index",
        "The log index the latest snapshot covers",
        status.snapshot.index.0 as f64,
    );

    // Peers: members only, so that a stranger's connection makes no series.
    let mut members = configuration.members();
    members.remove(&server.id);
    f.gauges(
        "raftkv_peer_replication_lag_entries",
        "On the leader: entries a peer lacks of the leader's log",
        status
            .match_index
            .iter()
            .filter(|(id, _)| members.contains(id))
            .map(|(id, matched)| {
                (
                    peer(*id),
                    status.last_index.0.saturating_sub(matched.0) as f64,
                )
            }),
    );
    f.histograms(
        "raftkv_peer_round_trip_time_seconds",
        "On the leader: time from a heartbeat to a peer until its answer",
        MICROS,
        node.round_trips_us
            .iter()
            .filter(|(id, _)| members.contains(id))
            .map(|(id, h)| (peer(*id), h)),
    );
    let traffic = server.transport.traffic();
    f.counter(
        "raftkv_snapshots_sent_total",
        "Snapshots this node streamed whole to a follower",
        traffic.iter().map(|t| t.snapshots_sent).sum(),
    );
    let traffic: Vec<_> = traffic
        .into_iter()
        .filter(|t| members.contains(&t.peer))
        .collect();
    f.counters(
        "raftkv_peer_sent_bytes_total",
        "Bytes sent to a peer over the Raft transport",
        traffic.iter().map(|t| (peer(t.peer), t.sent_bytes)),
    );
    f.counters(
        "raftkv_peer_received_bytes_total",
        "Bytes received from a peer over the Raft transport",
        traffic.iter().map(|t| (peer(t.peer), t.received_bytes)),
    );
    let voters = configuration
        .voters
        .union(&configuration.voters_outgoing)
        .count();
    // A voter being demoted (outgoing voter, next learner) is counted once, as a voter, so the
    // two kinds always add up to the members.
    let learners = configuration.members().len() - voters;
    f.gauges(
        "raftkv_cluster_members",
        "Members of the configuration this node follows, by kind",
        [
            (vec![("kind", "voter".to_string())], voters as f64),
            (vec![("kind", "learner".to_string())], learners as f64),
        ],
    );

    // The store and the disk.
    f.gauge(
        "raftkv_sessions",
        "Client sessions (exactly-once writes) the store keeps",
        sessions as f64,
    );
    f.gauge(
        "raftkv_quota_bytes",
        "The space quota over the applied state (storage.quota_bytes)",
        quota.quota_bytes as f64,
    );
    f.gauge(
        "raftkv_quota_used_bytes",
        "Bytes of the applied state the quota counts",
        quota.used_bytes as f64,
    );
    let dir = &server.config.storage.data_dir;
    if let Ok(stats) = fs4::statvfs(dir) {
        let (free, total) = (stats.available_space(), stats.total_space());
        f.gauge(
            "raftkv_disk_free_bytes",
            "Bytes an unprivileged writer may still use on the data directory's file system",
            free as f64,
        );
        f.gauge(
            "raftkv_disk_total_bytes",
            "Size of the data directory's file system",
            total as f64,
        );
    }
    f.gauges(
        "raftkv_node_info",
        "Always 1: this node's id, cluster and version",
        [(
            vec![
                ("node_id", server.config.raft.node_id.clone()),
                ("cluster_id", server.cluster_id.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ],
            1.0,
        )],
    );
    f.0
}
