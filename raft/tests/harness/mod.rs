//! A deterministic in-process cluster of Raft cores, shared by the scenario tests, the
//! randomized tests and (in spirit) the benchmark.
//!
//! Goal: run many cores against a hostile network — messages dropped, duplicated, reordered,
//! delayed, links cut one way or both — and hostile hosts — crashes that lose everything not
//! yet persisted through a Ready, restarts from storage — and check the Raft safety
//! properties after *every* step (paper Figure 3):
//! - election safety: at most one leader per term;
//! - log matching: two logs with an entry of the same index and term are identical up to it;
//! - leader completeness: a leader holds every entry committed in an earlier term;
//! - state machine safety: no two nodes apply different entries at the same index;
//! - per node: commit and applied never go back within a run of the process, and
//!   `applied <= committed <= last`; a node votes for one candidate per term, even across
//!   crashes.
//!
//! Method: the network is a list of messages in flight; a step picks one to deliver (any one:
//! that is reordering and delay), drops or duplicates one, or processes a node's Ready the
//! way a driver would (persist, send, apply, advance). The state machine of each node is a
//! hash chain over the entries it applied, and its snapshots carry `(index, hash)`, so a
//! snapshot can be checked against what the cluster applied.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use raft::core::{
    Config, Configuration, Entry, EntryPayload, LogIndex, MemStorage, Message, MessageBody, NodeId,
    Raft, Ready, Role, Snapshot, Term,
};

/// A test-installed predicate over messages in flight.
pub type MessageFilter = Box<dyn Fn(&Message) -> bool>;

/// One node: the core while it runs, and what survives a crash.
pub struct Node {
    /// The running core; `None` while the node is down.
    pub raft: Option<Raft<MemStorage>>,
    /// The durable storage while the node is down (the core owns it while it runs).
    pub durable: MemStorage,
    /// The state machine: the last applied index and a hash chain over applied entries.
    pub sm_index: LogIndex,
    /// See `sm_index`.
    pub sm_hash: u64,
    /// Confirmed reads: (context, index).
    pub reads: Vec<(Bytes, LogIndex)>,
    /// Reads the node gave up on.
    pub dropped_reads: Vec<Bytes>,
    /// The configuration template the node restarts with.
    pub config: Config,
    /// Highest commit and applied index seen in this run of the process.
    seen_committed: LogIndex,
    seen_applied: LogIndex,
}

/// The cluster, its network, and the safety checker.
pub struct Cluster {
    /// Every node, running or down.
    pub nodes: BTreeMap<NodeId, Node>,
    /// Messages in flight, in send order.
    pub net: Vec<Message>,
    /// Links that drop everything: `(from, to)`.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// The leader seen for each term.
    leaders: BTreeMap<Term, NodeId>,
    /// The vote each node granted in each term.
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// Every committed entry seen: index → (term, payload, term of the node that saw it).
    committed: BTreeMap<LogIndex, (Term, EntryPayload, Term)>,
    /// Every applied entry: index → (term, payload), and the hash chain after it.
    applied: BTreeMap<LogIndex, (Term, EntryPayload, u64)>,
    /// What happened, for failure reports.
    pub trace: Vec<String>,
    /// Whether to print the trace as it happens (`RAFT_TRACE=1`).
    pub verbose: bool,
    /// Steps taken.
    pub steps: u64,
    /// Nodes whose Readies `stabilize` leaves alone (their driver is "busy").
    pub frozen: BTreeSet<NodeId>,
    /// Readies handled by the driver but not yet advanced, by node.
    held: BTreeMap<NodeId, Ready>,
    /// Test-installed filters: a message any of them matches is dropped when sent.
    pub drop_if: Vec<MessageFilter>,
    /// Every message sent (before filters and partitions): (from, to, kind, term).
    pub sent: Vec<(u64, u64, &'static str, Term)>,
}

/// A node's configuration for tests: small timeouts, both election safeguards, seed by id.
pub fn test_config(id: u64) -> Config {
    let mut cfg = Config::new(NodeId(id));
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.rng_seed = id * 7919;
    cfg.snapshot_retry_ticks = 30;
    cfg
}

fn hash_entry(prev: u64, entry: &Entry) -> u64 {
    // FNV-1a over (prev, index, term, payload): collisions are irrelevant at test scale.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ prev;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&entry.index.0.to_le_bytes());
    eat(&entry.term.0.to_le_bytes());
    match &entry.payload {
        EntryPayload::Noop => eat(b"noop"),
        EntryPayload::Normal(data) => eat(data),
        EntryPayload::ConfChange(cc) => eat(format!("{cc:?}").as_bytes()),
    }
    h
}

fn snapshot_data(index: LogIndex, hash: u64) -> Bytes {
    let mut v = index.0.to_le_bytes().to_vec();
    v.extend_from_slice(&hash.to_le_bytes());
    Bytes::from(v)
}

fn parse_snapshot(s: &Snapshot) -> (LogIndex, u64) {
    if s.data.is_empty() {
        return (s.metadata.index, 0); // The bootstrap snapshot.
    }
    let index = u64::from_le_bytes(s.data[..8].try_into().expect("snapshot data"));
    let hash = u64::from_le_bytes(s.data[8..16].try_into().expect("snapshot data"));
    assert_eq!(
        LogIndex(index),
        s.metadata.index,
        "snapshot data and metadata disagree"
    );
    (LogIndex(index), hash)
}

impl Cluster {
    /// A new cluster whose voters are `1..=voters`, plus `spares` empty nodes (ids after
    /// them) that can be added by configuration changes.
    pub fn new(voters: u64, spares: u64) -> Cluster {
        Cluster::with_config(voters, spares, test_config)
    }

    /// Like `new`, with a custom configuration per node.
    pub fn with_config(voters: u64, spares: u64, config: impl Fn(u64) -> Config) -> Cluster {
        let members = Configuration::with_voters((1..=voters).map(NodeId));
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net: Vec::new(),
            blocked: BTreeSet::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            trace: Vec::new(),
            drop_if: Vec::new(),
            held: BTreeMap::new(),
            frozen: BTreeSet::new(),
            sent: Vec::new(),
            verbose: std::env::var("RAFT_TRACE").is_ok_and(|v| v == "1"),
            steps: 0,
        };
        for id in 1..=voters + spares {
            let storage = if id <= voters {
                MemStorage::new_with_configuration(members.clone())
            } else {
                MemStorage::new()
            };
            let cfg = config(id);
            let raft = Raft::new(cfg.clone(), storage).expect("valid test config");
            let node = Node {
                raft: Some(raft),
                durable: MemStorage::new(),
                sm_index: LogIndex(if id <= voters { 1 } else { 0 }),
                sm_hash: 0,
                reads: Vec::new(),
                dropped_reads: Vec::new(),
                config: cfg,
                seen_committed: LogIndex::ZERO,
                seen_applied: LogIndex::ZERO,
            };
            c.nodes.insert(NodeId(id), node);
        }
        c.applied
            .insert(LogIndex(1), (Term(1), EntryPayload::Noop, 0));
        c.check();
        c
    }

    fn log(&mut self, line: String) {
        if self.verbose {
            eprintln!("[{}] {line}", self.steps);
        }
        if self.trace.len() >= 4000 {
            self.trace.drain(..2000);
        }
        // Runs of ticks are folded into one line ("tick n1 n2 n3"), so the trace shows
        // what happened rather than the passing of time.
        if let (Some(last), Some(node)) = (self.trace.last_mut(), line.strip_prefix("tick "))
            && last.starts_with("tick ")
        {
            last.push(' ');
            last.push_str(node);
            return;
        }
        self.trace.push(format!("[{}] {line}", self.steps));
    }

    /// The running core of `id`. Panics if the node is down.
    pub fn raft(&self, id: u64) -> &Raft<MemStorage> {
        self.nodes[&NodeId(id)].raft.as_ref().expect("node is up")
    }

    /// The running core of `id`, mutably. Panics if the node is down.
    pub fn raft_mut(&mut self, id: u64) -> &mut Raft<MemStorage> {
        self.nodes
            .get_mut(&NodeId(id))
            .expect("node exists")
            .raft
            .as_mut()
            .expect("node is up")
    }

    /// Whether `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[&id].raft.is_some()
    }

    /// Ids of all nodes.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id.0)
    }

    // ----- steps -----

    /// Ticks one node.
    pub fn tick(&mut self, id: u64) {
        if let Some(raft) = self
            .nodes
            .get_mut(&NodeId(id))
            .and_then(|n| n.raft.as_mut())
        {
            raft.tick();
            self.after_step(format!("tick n{id}"));
        }
    }

    /// Ticks every running node once.
    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id.0);
        }
    }

    /// Handles one Ready of `id` the way a correct driver does. Returns whether there was one.
    pub fn process_ready(&mut self, id: u64) -> bool {
        if self.finish_ready(id) {
            return true;
        }
        if !self.begin_ready(id) {
            return false;
        }
        self.finish_ready(id)
    }

    /// A driver that handles a Ready (persist, send, apply) but calls `advance` only later:
    /// meanwhile the core keeps being stepped and ticked. Returns whether there was one.
    pub fn begin_ready(&mut self, id: u64) -> bool {
        if self.held.contains_key(&NodeId(id)) {
            return false;
        }
        let Some(rd) = self.take_ready(id) else {
            return false;
        };
        self.send_all(&rd.messages);
        self.persist_ready(id, &rd);
        self.send_all(&rd.persisted_messages);
        self.apply_ready(id, &rd);
        self.held.insert(NodeId(id), rd);
        self.after_step(format!("ready n{id} handled, not advanced"));
        true
    }

    /// The Ready `begin_ready` handled and `finish_ready` has not advanced yet, if any.
    pub fn held_ready(&self, id: u64) -> Option<&Ready> {
        self.held.get(&NodeId(id))
    }

    /// Delivers every message on the network, in order (messages sent meanwhile included).
    pub fn deliver_all(&mut self) {
        while !self.net.is_empty() {
            self.deliver(0);
        }
    }

    /// Advances the Ready `begin_ready` handled. Returns whether there was one.
    pub fn finish_ready(&mut self, id: u64) -> bool {
        let Some(rd) = self.held.remove(&NodeId(id)) else {
            return false;
        };
        self.raft_mut(id).advance(rd);
        self.after_step(format!("ready n{id} advanced"));
        true
    }

    /// A driver that sends the Ready's early messages and applies its already durable
    /// committed entries (both allowed before persisting), then crashes before persisting.
    pub fn crash_mid_ready(&mut self, id: u64) {
        if self.held.contains_key(&NodeId(id)) {
            self.crash(id);
            return;
        }
        if let Some(rd) = self.take_ready(id) {
            self.send_all(&rd.messages);
            self.apply_entries(id, &rd.committed_entries[..rd.committed_durable]);
        }
        self.crash(id);
    }

    fn take_ready(&mut self, id: u64) -> Option<Ready> {
        let raft = self.nodes.get_mut(&NodeId(id))?.raft.as_mut()?;
        if !raft.has_ready() {
            return None;
        }
        let rd = raft.ready();
        // Pair assertions across the persistence boundary: what is handed out is well formed.
        for pair in rd.entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index.next(),
                "Ready entries are contiguous"
            );
        }
        for pair in rd.committed_entries.windows(2) {
            assert_eq!(
                pair[1].index,
                pair[0].index.next(),
                "committed entries are contiguous"
            );
        }
        // What the core says may be applied before this Ready's persist is in storage already.
        assert!(rd.committed_durable <= rd.committed_entries.len());
        assert!(rd.snapshot.is_none() || rd.committed_durable == 0);
        for entry in &rd.committed_entries[..rd.committed_durable] {
            assert_eq!(
                raft::core::Storage::term(raft.storage(), entry.index).ok(),
                Some(entry.term),
                "n{id}: committed entry {} handed out as durable is not in storage",
                entry.index
            );
        }
        Some(rd)
    }

    fn persist_ready(&mut self, id: u64, rd: &Ready) {
        let raft = self.raft_mut(id);
        let storage = raft.storage_mut();
        if let Some(snapshot) = &rd.snapshot {
            storage.apply_snapshot(snapshot.clone());
        }
        storage.append(&rd.entries);
        if let Some(hs) = &rd.hard_state {
            storage.set_hard_state(hs.clone());
        }
    }

    fn apply_ready(&mut self, id: u64, rd: &Ready) {
        if let Some(snapshot) = &rd.snapshot {
            let (index, hash) = parse_snapshot(snapshot);
            self.check_snapshot_hash(index, hash);
            let node = self.nodes.get_mut(&NodeId(id)).expect("node");
            node.sm_index = index;
            node.sm_hash = hash;
        }
        self.apply_entries(id, &rd.committed_entries);
        let node = self.nodes.get_mut(&NodeId(id)).expect("node");
        for rs in rd.read_states.iter() {
            node.reads.push((rs.context.clone(), rs.index));
        }
        node.dropped_reads.extend(rd.dropped_reads.iter().cloned());
    }

    fn apply_entries(&mut self, id: u64, entries: &[Entry]) {
        for entry in entries {
            let node = self.nodes.get_mut(&NodeId(id)).expect("node");
            assert_eq!(
                entry.index,
                node.sm_index.next(),
                "n{id} applies out of order"
            );
            let hash = hash_entry(node.sm_hash, entry);
            node.sm_index = entry.index;
            node.sm_hash = hash;
            self.record_applied(id, entry, hash);
        }
    }

    fn record_applied(&mut self, id: u64, entry: &Entry, hash: u64) {
        match self.applied.get(&entry.index) {
            Some((term, payload, h)) => {
                assert!(
                    *term == entry.term && *payload == entry.payload && *h == hash,
                    "state machine safety: n{id} applied {:?} at {} but {:?} of {term} was \
                     applied there before",
                    entry.payload,
                    entry.index,
                    payload
                );
            }
            None => {
                self.applied
                    .insert(entry.index, (entry.term, entry.payload.clone(), hash));
            }
        }
    }

    fn check_snapshot_hash(&self, index: LogIndex, hash: u64) {
        if let Some((_, _, h)) = self.applied.get(&index) {
            assert_eq!(
                *h, hash,
                "a snapshot at {index} disagrees with what was applied"
            );
        }
    }

    fn send_all(&mut self, msgs: &[Message]) {
        for m in msgs {
            self.observe_sent(m);
            if self.blocked.contains(&(m.from, m.to)) || self.drop_if.iter().any(|f| f(m)) {
                continue;
            }
            self.net.push(m.clone());
        }
    }

    /// Votes are checked as they leave: one grant per node per term, across crashes. The
    /// size limit of AppendEntries is checked too.
    fn observe_sent(&mut self, m: &Message) {
        if self.sent.len() < 1_000_000 {
            self.sent.push((m.from.0, m.to.0, m.body.name(), m.term));
        }
        if let MessageBody::AppendEntries { entries, .. } = &m.body {
            let limit = self.nodes[&m.from].config.msg_bytes_max;
            let size: u64 = entries.iter().map(Entry::size_bytes).sum();
            assert!(
                entries.len() <= 1 || size <= limit,
                "{} sent {size} bytes of entries, above msg_bytes_max {limit}",
                m.from
            );
        }
        if let MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        } = m.body
        {
            let previous = self.votes.insert((m.from, m.term), m.to);
            if let Some(previous) = previous {
                assert_eq!(previous, m.to, "{} voted twice in {}", m.from, m.term);
            }
        }
    }

    /// Delivers the message at position `k` of the network (any position: reordering).
    pub fn deliver(&mut self, k: usize) {
        if self.net.is_empty() {
            return;
        }
        let m = self.net.remove(k % self.net.len());
        let line = format!("deliver {}->{} {} {}", m.from, m.to, m.term, m.body.name());
        if self.blocked.contains(&(m.from, m.to)) {
            return;
        }
        if let Some(raft) = self.nodes.get_mut(&m.to).and_then(|n| n.raft.as_mut()) {
            raft.step(m).expect("step never fails on peer input");
            self.after_step(line);
        }
    }

    /// Drops the message at position `k`.
    pub fn drop_msg(&mut self, k: usize) {
        if !self.net.is_empty() {
            let m = self.net.remove(k % self.net.len());
            self.log(format!("drop {}->{} {}", m.from, m.to, m.body.name()));
        }
    }

    /// Duplicates the message at position `k` (the copy goes to the end).
    pub fn duplicate(&mut self, k: usize) {
        if !self.net.is_empty() {
            let m = self.net[k % self.net.len()].clone();
            self.net.push(m);
        }
    }

    /// Crashes `id`: everything not persisted through a Ready is lost, messages to it too.
    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&NodeId(id)).expect("node");
        self.held.remove(&NodeId(id));
        if let Some(raft) = node.raft.take() {
            node.durable = raft.storage().clone();
            self.net.retain(|m| m.to != NodeId(id));
            self.log(format!("crash n{id}"));
        }
    }

    /// Restarts `id` from its storage; the state machine restarts from the snapshot.
    pub fn restart(&mut self, id: u64) {
        let node = self.nodes.get_mut(&NodeId(id)).expect("node");
        if node.raft.is_some() {
            return;
        }
        let storage = std::mem::take(&mut node.durable);
        let snapshot = raft::core::Storage::snapshot(&storage).expect("snapshot");
        let (index, hash) = parse_snapshot(&snapshot);
        node.sm_index = index;
        node.sm_hash = hash;
        node.seen_committed = LogIndex::ZERO;
        node.seen_applied = LogIndex::ZERO;
        node.raft = Some(Raft::new(node.config.clone(), storage).expect("restart"));
        self.after_step(format!("restart n{id}"));
    }

    /// Cuts every link between `group` and the other nodes, both ways.
    pub fn partition(&mut self, group: &[u64]) {
        let inside: BTreeSet<NodeId> = group.iter().map(|i| NodeId(*i)).collect();
        for a in self.ids() {
            for b in self.ids() {
                if inside.contains(&a) != inside.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.log(format!("partition {group:?} | rest"));
    }

    /// Cuts the link from `from` to `to` only.
    pub fn block(&mut self, from: u64, to: u64) {
        self.blocked.insert((NodeId(from), NodeId(to)));
        self.log(format!("block n{from}->n{to}"));
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != NodeId(id) {
                self.blocked.insert((NodeId(id), other));
                self.blocked.insert((other, NodeId(id)));
            }
        }
        self.log(format!("isolate n{id}"));
    }

    /// Processes every node's Ready once, without delivering anything.
    pub fn process_all_readies(&mut self) {
        for id in self.ids() {
            if self.frozen.contains(&id) {
                continue;
            }
            while self.process_ready(id.0) {}
        }
    }

    /// Steps the cluster one message at a time (processing Readies in between) until `done`
    /// holds. Panics if it never does within `steps_max` deliveries.
    pub fn step_until(&mut self, steps_max: usize, done: impl Fn(&Cluster) -> bool) {
        for _ in 0..steps_max {
            self.process_all_readies();
            if done(self) {
                return;
            }
            if self.net.is_empty() {
                break;
            }
            self.deliver(0);
        }
        assert!(done(self), "condition not reached within {steps_max} steps");
    }

    /// The state machine of `id`: last applied index and hash chain.
    pub fn sm(&self, id: u64) -> (LogIndex, u64) {
        let node = &self.nodes[&NodeId(id)];
        (node.sm_index, node.sm_hash)
    }

    /// Every entry of `id`'s log still held, from its first index.
    pub fn log_of(&self, id: u64) -> Vec<Entry> {
        let r = self.raft(id);
        r.entries(r.first_index(), r.last_index().next())
            .unwrap_or_default()
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.log("heal".to_string());
    }

    /// Processes Readies and delivers messages until nothing moves (no ticks). Bounded.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for id in self.ids() {
                if self.frozen.contains(&id) {
                    continue;
                }
                while self.process_ready(id.0) {
                    moved = true;
                }
            }
            while !self.net.is_empty() {
                self.deliver(0);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster did not stabilize within 10000 rounds");
    }

    /// `ticks` rounds of: tick everyone, then stabilize.
    pub fn run_ticks(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick_all();
            self.stabilize();
        }
    }

    /// Makes `id` campaign now and lets the cluster settle; returns whether it leads.
    pub fn elect(&mut self, id: u64) -> bool {
        self.raft_mut(id).campaign_now();
        self.after_step(format!("campaign n{id}"));
        self.stabilize();
        self.raft(id).role() == Role::Leader
    }

    /// Proposes `data` at `id` and returns the result.
    pub fn propose(
        &mut self,
        id: u64,
        data: &str,
    ) -> Result<raft::core::EntryId, raft::core::Error> {
        let result = self.raft_mut(id).propose(Bytes::from(data.to_string()));
        self.after_step(format!("propose n{id} {data:?} -> {result:?}"));
        result
    }

    /// The state machine compacts `id`'s log up to its applied index.
    pub fn compact(&mut self, id: u64) -> bool {
        self.compact_keeping(id, 0)
    }

    /// The state machine compacts `id`'s log up to its applied index, keeping a catch-up
    /// tail of the last `tail` entries the snapshot covers. Returns whether it compacted.
    pub fn compact_keeping(&mut self, id: u64, tail: u64) -> bool {
        let node = &self.nodes[&NodeId(id)];
        let Some(raft) = node.raft.as_ref() else {
            return false;
        };
        if self.held.contains_key(&NodeId(id)) {
            return false; // The state machine is ahead of the core until advance().
        }
        let index = raft.applied();
        assert_eq!(
            index, node.sm_index,
            "the core's applied index follows the state machine"
        );
        let Ok(snapshot) = raft.snapshot_at(index, snapshot_data(index, node.sm_hash)) else {
            return false;
        };
        self.raft_mut(id)
            .storage_mut()
            .compact_keeping(snapshot, tail);
        self.after_step(format!("compact n{id} to {index} keeping {tail}"));
        true
    }

    /// Whether entry `data` is applied on node `id`.
    pub fn applied_data(&self, id: u64) -> Vec<String> {
        let raft = self.raft(id);
        let first = raft.first_index();
        let mut out = Vec::new();
        for e in raft
            .entries(first, raft.applied().next())
            .unwrap_or_default()
        {
            if let EntryPayload::Normal(d) = e.payload {
                out.push(String::from_utf8_lossy(&d).to_string());
            }
        }
        out
    }

    // ----- the checker -----

    fn after_step(&mut self, line: String) {
        self.steps += 1;
        self.log(line);
        self.check();
    }

    /// Checks every safety property; panics with the recent trace on a violation.
    pub fn check(&mut self) {
        if let Err(e) = self.try_check() {
            let tail: Vec<&String> = self.trace.iter().rev().take(60).collect();
            let mut report = String::new();
            for line in tail.into_iter().rev() {
                report.push_str(line);
                report.push('\n');
            }
            panic!(
                "safety violation after step {}: {e}\nrecent trace:\n{report}",
                self.steps
            );
        }
    }

    fn try_check(&mut self) -> Result<(), String> {
        let running: Vec<(NodeId, &Raft<MemStorage>)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .collect();
        for (id, raft) in running.iter() {
            raft.check_invariants().map_err(|e| format!("{id}: {e}"))?;
            let (applied, committed, last) = (raft.applied(), raft.committed(), raft.last_index());
            if !(applied <= committed && committed <= last) {
                return Err(format!(
                    "{id}: applied {applied} committed {committed} last {last}"
                ));
            }
        }
        // Election safety.
        for (id, raft) in running.iter() {
            if raft.role() == Role::Leader {
                let leader = *self.leaders.entry(raft.term()).or_insert(*id);
                if leader != *id {
                    return Err(format!("two leaders in {}: {leader} and {id}", raft.term()));
                }
            }
        }
        // Commit and applied never go back within a process run; committed entries agree.
        let mut new_commits = Vec::new();
        for (id, raft) in running.iter() {
            let node = &self.nodes[id];
            if raft.committed() < node.seen_committed || raft.applied() < node.seen_applied {
                return Err(format!("{id}: commit or applied went back"));
            }
            let from = raft.first_index().max(node.seen_committed.next());
            for e in raft
                .entries(from, raft.committed().next())
                .unwrap_or_default()
            {
                new_commits.push((*id, raft.term(), e));
            }
        }
        for (id, term_seen, e) in new_commits {
            match self.committed.get(&e.index) {
                Some((t, p, _)) if *t != e.term || *p != e.payload => {
                    return Err(format!(
                        "{id} committed {:?} at {} over {p:?}",
                        e.payload, e.index
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed
                        .insert(e.index, (e.term, e.payload, term_seen));
                }
            }
        }
        for (id, node) in self.nodes.iter_mut() {
            if let Some(raft) = node.raft.as_ref() {
                node.seen_committed = raft.committed();
                node.seen_applied = raft.applied();
                let held = self.held.contains_key(id);
                if raft.applied() > node.sm_index || (!held && raft.applied() != node.sm_index) {
                    return Err(format!(
                        "{id}: core applied {} vs sm {}",
                        raft.applied(),
                        node.sm_index
                    ));
                }
            }
        }
        let running: Vec<(NodeId, &Raft<MemStorage>)> = self
            .nodes
            .iter()
            .filter_map(|(id, n)| n.raft.as_ref().map(|r| (*id, r)))
            .collect();
        // Leader completeness: a leader holds every entry committed before its term.
        for (id, raft) in running.iter().filter(|(_, r)| r.role() == Role::Leader) {
            for (index, (term, _, seen)) in self.committed.range(raft.first_index()..) {
                if *seen < raft.term() && raft.term_at(*index) != Some(*term) {
                    return Err(format!(
                        "leader {id} of {} lacks committed {index}",
                        raft.term()
                    ));
                }
            }
        }
        // Log matching, pairwise.
        for (i, (a_id, a)) in running.iter().enumerate() {
            for (b_id, b) in running.iter().skip(i + 1) {
                check_log_matching(a, b).map_err(|e| format!("{a_id} vs {b_id}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Log matching: find the highest index where both logs hold an entry of the same term;
/// everything both hold below it must be identical.
fn check_log_matching(a: &Raft<MemStorage>, b: &Raft<MemStorage>) -> Result<(), String> {
    let low = a.first_index().max(b.first_index());
    let high = a.last_index().min(b.last_index());
    let mut top = None;
    let mut i = high;
    while i >= low && i > LogIndex::ZERO {
        if a.term_at(i).is_some() && a.term_at(i) == b.term_at(i) {
            top = Some(i);
            break;
        }
        i = i.prev();
    }
    let Some(top) = top else { return Ok(()) };
    let ea = a.entries(low, top.next()).unwrap_or_default();
    let eb = b.entries(low, top.next()).unwrap_or_default();
    if ea != eb {
        return Err(format!("logs agree at {top} but differ below it"));
    }
    Ok(())
}
