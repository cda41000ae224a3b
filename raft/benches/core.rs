//! Throughput of the pure core: entries committed per second on a 3-node cluster held in
//! memory, with no I/O and no invariant checking, so that the figure is the core's own cost
//! (message handling, log bookkeeping, quorum counting, Ready assembly).
//!
//! Method: the leader receives `batch` proposals between two Readies (the driver's natural
//! batching: everything proposed while the previous Ready was being handled goes out in one
//! AppendEntries per follower); the three drivers then persist to `MemStorage`, deliver
//! every message and advance, until the batch is applied on the leader. Criterion reports
//! elements (entries) per second.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raft::core::{Config, Configuration, MemStorage, Message, NodeId, Raft, Role};

/// Nodes in the benchmarked cluster.
const NODES: u64 = 3;
/// Payload bytes per entry (a small key-value command).
const PAYLOAD_BYTES: usize = 64;
/// Compact the in-memory log every this many entries, so memory stays flat.
const COMPACT_EVERY_ENTRIES: u64 = 200_000;

struct Cluster {
    nodes: Vec<Raft<MemStorage>>,
    inbox: Vec<Vec<Message>>,
    applied_on_leader: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let members = Configuration::with_voters((1..=NODES).map(NodeId));
        let nodes = (1..=NODES)
            .map(|id| {
                let mut cfg = Config::new(NodeId(id));
                cfg.rng_seed = id;
                let storage = MemStorage::new_with_configuration(members.clone());
                Raft::new(cfg, storage).expect("valid config")
            })
            .collect();
        let mut c = Cluster {
            nodes,
            inbox: vec![Vec::new(); NODES as usize],
            applied_on_leader: 0,
        };
        c.nodes[0].campaign_now();
        c.settle();
        assert_eq!(c.nodes[0].role(), Role::Leader);
        c
    }

    /// Handles Readies and delivers messages until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for k in 0..self.nodes.len() {
                if !self.nodes[k].has_ready() {
                    continue;
                }
                moved = true;
                let rd = self.nodes[k].ready();
                for m in rd.messages.iter().chain(rd.persisted_messages.iter()) {
                    self.inbox[(m.to.0 - 1) as usize].push(m.clone());
                }
                let storage = self.nodes[k].storage_mut();
                if let Some(snapshot) = &rd.snapshot {
                    storage.apply_snapshot(snapshot.clone());
                }
                storage.append(&rd.entries);
                if let Some(hs) = &rd.hard_state {
                    storage.set_hard_state(hs.clone());
                }
                if k == 0 {
                    self.applied_on_leader += rd.committed_entries.len() as u64;
                }
                self.nodes[k].advance(rd);
            }
            for k in 0..self.nodes.len() {
                for m in std::mem::take(&mut self.inbox[k]) {
                    moved = true;
                    self.nodes[k].step(m).expect("step");
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Proposes `batch` entries and runs until they are applied on the leader.
    fn commit_batch(&mut self, batch: u64, payload: &Bytes) {
        let target = self.applied_on_leader + batch;
        for _ in 0..batch {
            self.nodes[0]
                .propose(payload.clone())
                .expect("leader accepts");
        }
        while self.applied_on_leader < target {
            self.settle();
        }
        let applied = self.nodes[0].applied();
        if applied.0 % COMPACT_EVERY_ENTRIES < batch {
            for node in self.nodes.iter_mut() {
                let index = node.applied().min(applied);
                if let Ok(snapshot) = node.snapshot_at(index, Bytes::new()) {
                    node.storage_mut().compact(snapshot);
                }
            }
        }
    }
}

fn commit_throughput(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("core_3_nodes_commit");
    for batch in [1u64, 64, 1024] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, &batch| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.commit_batch(batch, &payload));
        });
    }
    group.finish();
}

criterion_group!(benches, commit_throughput);
criterion_main!(benches);
