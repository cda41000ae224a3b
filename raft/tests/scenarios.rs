//! Scenario tests on the pure core, written to read like the Raft paper and dissertation.
//!
//! Goal: each behaviour the paper describes, and each feature's edge case, as a short script.
//! Method: a deterministic in-process cluster (see `harness`); each test sets a scene (given),
//! does one thing (when), and checks what the paper says must follow (then). The harness also
//! checks every safety property after every single step of every scenario.
//!
//! Node ids are 1..=n for the initial voters; spare nodes (empty, not members) follow them.
//! Terms: the bootstrap snapshot is term 1, so the first elected leader has term 2.

mod harness;

use bytes::Bytes;
use harness::{Cluster, test_config};
use raft::core::{
    ConfChange, ConfChangeKind, ConfChangeSingle, Config, EntryPayload, Error, LogIndex,
    MessageBody, NodeId, Role, Term,
};

/// The paper's basic Raft: no pre-vote, no check-quorum, so figures play out exactly.
fn basic(id: u64) -> Config {
    let mut cfg = test_config(id);
    cfg.pre_vote = false;
    cfg.check_quorum = false;
    cfg
}

fn ids(v: &[u64]) -> std::collections::BTreeSet<NodeId> {
    v.iter().map(|i| NodeId(*i)).collect()
}

fn change(list: &[(ConfChangeKind, u64)]) -> ConfChange {
    ConfChange {
        changes: list
            .iter()
            .map(|(kind, n)| ConfChangeSingle {
                kind: *kind,
                node: NodeId(*n),
            })
            .collect(),
    }
}

fn data(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

use ConfChangeKind::{AddLearner, AddVoter, RemoveNode};

#[test]
fn a_three_node_cluster_elects_a_leader_and_commits_a_proposal() {
    // Given three fresh nodes.
    let mut c = Cluster::new(3, 0);
    // When node 1 campaigns and then proposes "x".
    assert!(c.elect(1));
    c.propose(1, "x").expect("the leader accepts proposals");
    c.stabilize();
    // Then every node applies "x" and knows node 1 leads term 2.
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), data("x"), "n{id}");
        assert_eq!(c.raft(id).leader(), Some(NodeId(1)));
        assert_eq!(c.raft(id).term(), Term(2));
    }
}

/// Paper Figure 7 and §5.3: a new leader forces followers' logs to duplicate its own — a
/// follower missing entries is filled in, a follower with extra uncommitted entries from an
/// old term has them overwritten.
#[test]
fn figure_7_followers_with_missing_and_extra_entries_are_repaired() {
    // Given a five-node cluster with "a" committed everywhere.
    let mut c = Cluster::with_config(5, 0, basic);
    assert!(c.elect(1));
    c.propose(1, "a").unwrap();
    c.stabilize();
    // ... node 1 (still leader of term 2) is cut off and appends entries nobody else gets,
    c.isolate(1);
    c.propose(1, "x1").unwrap();
    c.propose(1, "x2").unwrap();
    c.stabilize();
    // ... node 4 is cut off too and misses what the majority does next,
    c.isolate(4);
    // ... and the majority {2, 3, 5} elects node 2, which commits "b" and "c".
    assert!(c.elect(2));
    c.propose(2, "b").unwrap();
    c.propose(2, "c").unwrap();
    c.stabilize();
    assert_eq!(
        c.raft(1).last_index(),
        LogIndex(5),
        "n1 holds two extra entries"
    );
    assert_eq!(
        c.raft(4).last_index(),
        LogIndex(3),
        "n4 misses the new term"
    );
    // When the network heals and the leader's heartbeats flow.
    c.heal();
    c.run_ticks(4);
    // Then every log is the leader's log: extra entries gone, missing entries filled in.
    let leader_log = c.log_of(2);
    for id in 1..=5 {
        assert_eq!(c.log_of(id), leader_log, "n{id}");
        assert_eq!(c.applied_data(id), data("a b c"), "n{id}");
    }
    assert_eq!(c.raft(1).role(), Role::Follower);
}

/// Paper Figure 8 and §5.4.2: an entry from an older term is not committed by counting
/// replicas, even once a majority holds it — a later leader could still overwrite it.
#[test]
fn figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() {
    let mut c = Cluster::with_config(5, 0, |id| {
        let mut cfg = basic(id);
        cfg.msg_bytes_max = 1; // One entry per AppendEntries, to steer which entries arrive.
        cfg
    });
    // (a) S1 leads term 2 and replicates the entry at index 3 to S2 only.
    assert!(c.elect(1));
    c.stabilize();
    c.drop_if
        .push(Box::new(|m| m.from == NodeId(1) && m.to != NodeId(2)));
    let old = c.propose(1, "term2-entry").unwrap();
    assert_eq!((old.term, old.index), (Term(2), LogIndex(3)));
    c.stabilize();
    c.drop_if.clear();
    // (b) S1 crashes; S5 is elected for term 3 by S3, S4, S5 and appends its own entry at
    // index 3, which nobody receives.
    c.crash(1);
    c.drop_if.push(Box::new(|m| {
        m.from == NodeId(5) && matches!(m.body, MessageBody::AppendEntries { .. })
    }));
    assert!(c.elect(5));
    assert_eq!(c.raft(5).term_at(LogIndex(3)), Some(Term(3)));
    c.drop_if.clear();
    // (c) S5 crashes; S1 restarts and is elected for term 4; it replicates its term-2 entry to
    // S3, but its own term-4 entry only to S2.
    c.crash(5);
    c.restart(1);
    // The first term-4 AppendEntries to S3 passes: it probes at index 3, which S3 lacks, so
    // S3 rejects it and S1 backs off to send index 3 alone. Later ones carry the term-4
    // entry that S3 would accept, and are dropped.
    let probe_passed = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = probe_passed.clone();
    c.drop_if.push(Box::new(move |m| {
        let carries_term_4 = match &m.body {
            MessageBody::AppendEntries { entries, .. } => entries.iter().any(|e| e.term == Term(4)),
            _ => false,
        };
        if m.from != NodeId(1) {
            return false;
        }
        if m.to == NodeId(3) && carries_term_4 {
            return seen.replace(true);
        }
        m.to == NodeId(4)
    }));
    // Its first try, in term 3, fails: S3 and S4 already voted for S5 in term 3.
    assert!(!c.elect(1));
    assert!(c.elect(1));
    assert_eq!(c.raft(1).term(), Term(4));
    c.run_ticks(3);
    for id in [1, 2, 3] {
        assert_eq!(
            c.raft(id).term_at(LogIndex(3)),
            Some(Term(2)),
            "n{id} holds the old entry"
        );
    }
    // Then: a majority (S1, S2, S3) holds the term-2 entry, yet S1 has not committed it.
    assert!(
        c.raft(1).committed() < LogIndex(3),
        "an old-term entry was committed by counting"
    );
    // And this is why: if S1 crashes, S5 can win term 5 (its last term 3 beats S3's 2 and S4's)
    // and overwrite index 3 everywhere it can reach.
    c.drop_if.clear();
    c.crash(1);
    c.restart(5);
    c.isolate(2); // S2 holds the term-4 entry and would refuse S5; the others suffice.
    // Term 4 is taken (S3 voted for S1), so S5 wins on its second try, in term 5.
    assert!(!c.elect(5));
    assert!(c.elect(5));
    assert_eq!(c.raft(5).term(), Term(5));
    c.stabilize();
    assert_eq!(
        c.raft(3).term_at(LogIndex(3)),
        Some(Term(3)),
        "S3's old entry was overwritten"
    );
    assert!(c.raft(5).committed() >= LogIndex(4));
}

/// Paper §5.4.1: a candidate whose log lacks a committed entry cannot win.
#[test]
fn the_election_restriction_keeps_a_stale_candidate_from_winning() {
    // Given "a" committed on nodes 1 and 2 only.
    let mut c = Cluster::with_config(3, 0, basic);
    assert!(c.elect(1));
    c.stabilize();
    c.drop_if.push(Box::new(|m| m.to == NodeId(3)));
    c.propose(1, "a").unwrap();
    c.stabilize();
    assert_eq!(c.raft(1).committed(), LogIndex(3));
    c.drop_if.clear();
    // When the leader crashes and node 3, which lacks "a", campaigns.
    c.crash(1);
    // Then node 2 refuses its vote and node 3 cannot win.
    assert!(!c.elect(3));
    // And node 2, whose log is up to date, wins with node 3's vote and keeps "a".
    assert!(c.elect(2));
    c.stabilize();
    assert_eq!(c.applied_data(3), data("a"));
}

/// Dissertation §9.6: a node that was partitioned away does not depose a healthy leader when
/// it comes back, because its pre-votes fail and its term never moved.
#[test]
fn pre_vote_a_partitioned_node_rejoining_does_not_depose_a_healthy_leader() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    let term = c.raft(1).term();
    // Given node 3 cut off for many election timeouts.
    c.isolate(3);
    c.run_ticks(100);
    // Then its term did not move (it only pre-campaigned).
    assert_eq!(c.raft(3).term(), term);
    assert!(
        c.sent
            .iter()
            .any(|(from, _, kind, _)| *from == 3 && *kind == "PreVote")
    );
    // When it comes back.
    c.heal();
    c.run_ticks(30);
    // Then node 1 still leads the same term and node 3 follows it.
    assert_eq!(c.leader(), Some(1));
    assert_eq!(c.raft(1).term(), term);
    assert_eq!(c.raft(3).leader(), Some(NodeId(1)));
}

/// Without pre-vote the same rejoin does disrupt (the contrast that motivates §9.6).
#[test]
fn without_pre_vote_a_rejoining_node_forces_a_new_term() {
    let mut c = Cluster::with_config(3, 0, basic);
    assert!(c.elect(1));
    c.stabilize();
    let term = c.raft(1).term();
    c.isolate(3);
    c.run_ticks(60);
    assert!(c.raft(3).term() > term);
    c.heal();
    c.run_ticks(30);
    assert!(c.leader().map(|l| c.raft(l).term()) > Some(term));
}

/// Dissertation §6.2: a leader that cannot hear from a majority steps down (check-quorum).
#[test]
fn check_quorum_a_leader_cut_off_from_the_majority_steps_down() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    // When the leader is cut off for two election timeouts.
    c.isolate(1);
    c.run_ticks(2 * 10 + 1);
    // Then it no longer considers itself leader,
    assert_eq!(c.raft(1).role(), Role::Follower);
    // ... and once their leases expire, the majority elects another.
    c.run_ticks(40);
    assert!(matches!(c.leader(), Some(2) | Some(3)));
}

/// A follower that holds a live leader's lease ignores pre-votes; one that was told the
/// leader is gone (`forget_leader`, what the node does when the leader's connection ends)
/// answers them at once, so the survivors elect a leader without waiting out their leases.
#[test]
fn followers_that_forget_a_dead_leader_elect_another_at_once() {
    // Given node 1 leading three nodes, when it crashes,
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    c.crash(1);
    let term = c.raft(2).term();
    // then while node 3 still holds node 1's lease, node 2's campaign gets nowhere,
    assert!(!c.elect(2));
    assert_eq!(c.raft(2).term(), term, "a failed pre-vote changes no term");
    assert_eq!(c.raft(3).leader(), Some(NodeId(1)));
    // but once both forget node 1, node 2's campaign wins right away, in the next term,
    c.raft_mut(2).forget_leader();
    c.raft_mut(3).forget_leader();
    assert_eq!(c.raft(3).leader(), None);
    assert_eq!(
        c.raft(3).role(),
        Role::Follower,
        "forgetting is not campaigning"
    );
    assert!(c.elect(2));
    assert_eq!(c.raft(2).term(), term.next());
    // and node 3 follows it.
    assert_eq!(c.raft(3).leader(), Some(NodeId(2)));
}

/// A follower that forgot a leader which is in fact alive (one connection ended) follows it
/// again at its next heartbeat, and the leader keeps its term: forgetting, with the election
/// clock skipped forward as it is, never deposes a live leader the others still hear.
#[test]
fn a_forgotten_leader_that_is_alive_is_followed_again_and_keeps_its_term() {
    for seed_base in 0..20 {
        let mut c = Cluster::with_config(3, 0, |id| {
            let mut cfg = test_config(id);
            cfg.rng_seed = seed_base * 1000 + id;
            cfg
        });
        assert!(c.elect(1));
        c.stabilize();
        let term = c.raft(1).term();
        c.raft_mut(2).forget_leader();
        assert_eq!(c.raft(2).leader(), None);
        assert_eq!(
            c.raft(2).role(),
            Role::Follower,
            "forgetting is not campaigning"
        );
        // Long enough for node 2's shortened timer to run out whatever it drew.
        c.run_ticks(3 * 10);
        assert_eq!(c.raft(2).leader(), Some(NodeId(1)), "seed base {seed_base}");
        assert_eq!(c.raft(1).role(), Role::Leader, "seed base {seed_base}");
        assert_eq!(c.raft(1).term(), term, "seed base {seed_base}");
    }
}

/// Dissertation §6.4: a leader that was deposed without knowing it must not answer a
/// ReadIndex request — the majority may have committed writes it has not seen.
#[test]
fn read_index_is_never_answered_by_a_deposed_leader() {
    let mut c = Cluster::new(5, 0);
    assert!(c.elect(1));
    c.propose(1, "a").unwrap();
    c.stabilize();
    // Given node 1 cut off; it still believes it leads.
    c.isolate(1);
    assert_eq!(c.raft(1).role(), Role::Leader);
    // When a client asks it for a read.
    c.raft_mut(1)
        .read_index(Bytes::from_static(b"stale?"))
        .unwrap();
    c.stabilize();
    // ... while the majority elects a new leader (once leases expire) and commits a newer write.
    c.run_ticks(40);
    let leader = c.leader().expect("the majority elected a leader");
    assert_ne!(leader, 1);
    c.propose(leader, "b").unwrap();
    c.stabilize();
    // Then node 1 never confirmed the read; it gave it up when check-quorum deposed it.
    assert!(c.nodes[&NodeId(1)].reads.is_empty());
    assert_eq!(
        c.nodes[&NodeId(1)].dropped_reads,
        vec![Bytes::from_static(b"stale?")]
    );
    c.heal();
    c.run_ticks(5);
    assert!(c.nodes[&NodeId(1)].reads.is_empty());
}

/// ReadIndex on a healthy leader: reads registered between two Readies share one heartbeat
/// round, and the index covers every committed write.
#[test]
fn read_index_batches_reads_into_one_heartbeat_round() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    let w = c.propose(1, "w").unwrap();
    c.stabilize();
    let heartbeats_before = c.sent.iter().filter(|s| s.2 == "Heartbeat").count();
    for k in 0..5u8 {
        c.raft_mut(1).read_index(Bytes::from(vec![k])).unwrap();
    }
    c.stabilize();
    let heartbeats = c.sent.iter().filter(|s| s.2 == "Heartbeat").count() - heartbeats_before;
    assert_eq!(heartbeats, 2, "one round: one heartbeat per follower");
    let reads = &c.nodes[&NodeId(1)].reads;
    assert_eq!(reads.len(), 5);
    assert!(reads.iter().all(|(_, index)| *index >= w.index));
}

/// A follower obtains a read index from the leader for a read it serves locally.
#[test]
fn read_index_on_a_follower_is_forwarded_to_the_leader() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    let w = c.propose(1, "w").unwrap();
    c.stabilize();
    c.raft_mut(3).read_index(Bytes::from_static(b"f")).unwrap();
    c.stabilize();
    let reads = &c.nodes[&NodeId(3)].reads;
    assert_eq!(reads.len(), 1);
    assert!(reads[0].1 >= w.index);
    assert!(
        c.raft(3).applied() >= reads[0].1,
        "the follower can serve it once applied"
    );
    // A node that knows no leader refuses.
    let mut lonely = Cluster::new(3, 0);
    let err = lonely.raft_mut(2).read_index(Bytes::new()).unwrap_err();
    assert_eq!(err, Error::NotLeader { leader_hint: None });
}

/// Dissertation §3.10: transfer to an up-to-date follower is immediate (TimeoutNow).
#[test]
fn leadership_transfer_to_an_up_to_date_follower() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.propose(1, "a").unwrap();
    c.stabilize();
    let term = c.raft(1).term();
    c.raft_mut(1).transfer_leader(NodeId(2)).unwrap();
    c.stabilize();
    assert_eq!(c.leader(), Some(2));
    assert_eq!(c.raft(2).term(), term.next());
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert!(
        c.sent
            .iter()
            .any(|s| s.0 == 1 && s.1 == 2 && s.2 == "TimeoutNow")
    );
}

/// Dissertation §3.10: a lagging target is caught up first; proposals are refused meanwhile.
#[test]
fn leadership_transfer_to_a_lagging_follower_catches_it_up_first() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.isolate(3);
    for k in 0..5 {
        c.propose(1, &format!("w{k}")).unwrap();
    }
    c.stabilize();
    assert!(c.raft(3).last_index() < c.raft(1).last_index());
    c.heal();
    // When leadership is handed to the lagging node 3.
    c.raft_mut(1).transfer_leader(NodeId(3)).unwrap();
    // Then proposals are refused until the transfer ends.
    assert_eq!(
        c.propose(1, "refused"),
        Err(Error::TransferInProgress { to: NodeId(3) })
    );
    c.stabilize();
    // And node 3 leads, holding every write.
    assert_eq!(c.leader(), Some(3));
    c.stabilize();
    assert_eq!(c.applied_data(3), data("w0 w1 w2 w3 w4"));
}

/// A transfer to an unreachable node is abandoned after an election timeout.
#[test]
fn leadership_transfer_times_out_after_an_election_timeout() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    c.isolate(3);
    c.raft_mut(1).transfer_leader(NodeId(3)).unwrap();
    assert!(c.propose(1, "x").is_err());
    c.run_ticks(10);
    assert_eq!(c.raft(1).transfer_target(), None);
    assert!(c.propose(1, "y").is_ok());
    assert_eq!(c.leader(), Some(1));
    let bad = c.raft_mut(1).transfer_leader(NodeId(9)).unwrap_err();
    assert!(matches!(bad, Error::InvalidTransferTarget { .. }));
}

/// Paper §7: a follower behind the leader's compacted log receives a snapshot.
#[test]
fn snapshot_install_to_a_follower_behind_compaction() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.isolate(3);
    for k in 0..10 {
        c.propose(1, &format!("w{k}")).unwrap();
    }
    c.stabilize();
    // Given the others compacted their logs past what node 3 has.
    assert!(c.compact(1));
    assert!(c.compact(2));
    assert!(c.raft(1).first_index() > c.raft(3).last_index().next());
    // When node 3 comes back.
    c.heal();
    c.run_ticks(3);
    // Then it received a snapshot with the membership, and its state machine matches.
    assert!(c.sent.iter().any(|s| s.1 == 3 && s.2 == "InstallSnapshot"));
    assert_eq!(c.sm(3), c.sm(1));
    assert_eq!(c.raft(3).configuration().voters, ids(&[1, 2, 3]));
    // And it goes on replicating from there.
    c.propose(1, "after").unwrap();
    c.stabilize();
    assert_eq!(c.sm(3), c.sm(1));
    assert_eq!(c.applied_data(3), data("after"));
}

/// A three-node cluster led by node 1 in which node 3, cut off, missed `writes` writes; then
/// nodes 1 and 2 compact to their applied index keeping a catch-up tail of `tail` entries.
/// Node 3 is left `writes` entries behind their snapshot, and still cut off.
fn follower_behind_a_snapshot_with_a_tail(writes: u64, tail: u64) -> Cluster {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    c.isolate(3);
    for k in 0..writes {
        c.propose(1, &format!("w{k}")).unwrap();
    }
    c.stabilize();
    assert!(c.compact_keeping(1, tail));
    assert!(c.compact_keeping(2, tail));
    let behind = c
        .raft(1)
        .snapshot_index()
        .count_since(c.raft(3).last_index());
    assert_eq!(
        behind, writes,
        "node 3 is `writes` entries behind the snapshot"
    );
    c
}

/// Issue 12 (etcd's catch-up entries): a follower that lags behind the leader's snapshot by
/// fewer entries than the tail the leader kept catches up from the log, not the snapshot.
#[test]
fn a_follower_within_the_catch_up_tail_gets_entries_not_the_snapshot() {
    // Given node 3 ten entries behind a snapshot that kept a tail of eleven,
    let mut c = follower_behind_a_snapshot_with_a_tail(10, 11);
    assert!(c.raft(1).first_index() <= c.raft(3).last_index().next());
    // when it comes back,
    c.heal();
    c.run_ticks(3);
    // then it was sent entries only, and holds and applied everything.
    assert!(
        !c.sent.iter().any(|s| s.1 == 3 && s.2 == "InstallSnapshot"),
        "no snapshot was sent to node 3"
    );
    assert_eq!(c.sm(3), c.sm(1));
    assert_eq!(c.applied_data(3), data("w0 w1 w2 w3 w4 w5 w6 w7 w8 w9"));
}

/// The other side of the same rule: a follower further behind than the tail gets the snapshot.
#[test]
fn a_follower_behind_the_catch_up_tail_gets_the_snapshot() {
    // Given node 3 ten entries behind a snapshot that kept a tail of five,
    let mut c = follower_behind_a_snapshot_with_a_tail(10, 5);
    assert!(c.raft(1).first_index() > c.raft(3).last_index().next());
    // when it comes back,
    c.heal();
    c.run_ticks(3);
    // then it received the snapshot, and its state machine matches.
    assert!(c.sent.iter().any(|s| s.1 == 3 && s.2 == "InstallSnapshot"));
    assert_eq!(c.sm(3), c.sm(1));
    assert_eq!(c.raft(3).first_index(), c.raft(1).snapshot_index().next());
}

/// A snapshot is out of date when it is not past the latest one, wherever the log starts: an
/// index inside the catch-up tail is below the snapshot and must be refused.
#[test]
fn a_snapshot_inside_the_catch_up_tail_is_out_of_date() {
    // Given node 1 compacted to its applied index keeping a tail,
    let mut c = follower_behind_a_snapshot_with_a_tail(6, 4);
    let snapshot_index = c.raft(1).snapshot_index();
    assert!(c.raft(1).first_index() < snapshot_index);
    // when asked for a snapshot at the latest snapshot's index or inside the tail,
    for index in [snapshot_index, snapshot_index.prev()] {
        let refused = c.raft(1).snapshot_at(index, Bytes::new());
        // then it refuses, naming the latest snapshot.
        assert_eq!(
            refused.unwrap_err(),
            Error::SnapshotOutOfDate {
                index,
                current: snapshot_index
            }
        );
    }
    // And once more is applied, a snapshot past it is taken.
    c.propose(1, "more").unwrap();
    c.stabilize();
    assert!(c.compact_keeping(1, 4));
    assert!(c.raft(1).snapshot_index() > snapshot_index);
}

/// A node restarted from storage that keeps a catch-up tail starts at its snapshot: it applies
/// nothing the snapshot covers again, and a configuration entry inside the tail (already in the
/// snapshot's configuration) is not replayed on top of it.
#[test]
fn a_node_restarted_with_a_tail_starts_at_its_snapshot() {
    // Given a learner added, then writes, and node 2 compacted keeping a tail that holds the
    // configuration entry,
    let mut c = Cluster::new(3, 1);
    assert!(c.elect(1));
    c.stabilize();
    let conf = c
        .raft_mut(1)
        .propose_conf_change(change(&[(AddLearner, 4)]))
        .unwrap();
    c.stabilize();
    for k in 0..5 {
        c.propose(1, &format!("w{k}")).unwrap();
    }
    c.stabilize();
    assert!(c.compact_keeping(2, 20));
    let snapshot_index = c.raft(2).snapshot_index();
    assert!(c.raft(2).first_index() <= conf.index && conf.index < snapshot_index);
    // when node 2 restarts from its storage,
    c.crash(2);
    c.restart(2);
    // then it starts applied at the snapshot (the harness fails any entry applied out of
    // order, so a tail entry handed out again would stop the test), with the configuration
    // the leader has,
    assert_eq!(c.raft(2).applied(), snapshot_index);
    assert_eq!(c.sm(2).0, snapshot_index);
    assert_eq!(c.raft(2).configuration(), c.raft(1).configuration());
    assert_eq!(c.raft(2).configuration().learners, ids(&[4]));
    // and it goes on applying from there in step with the leader.
    c.propose(1, "after").unwrap();
    c.stabilize();
    assert_eq!(c.sm(2), c.sm(1));
    assert_eq!(c.raft(2).configuration(), c.raft(1).configuration());
}

/// A new node that starts empty learns the log, membership included, through a snapshot.
#[test]
fn joint_consensus_add_two_voters() {
    let mut c = Cluster::new(3, 2);
    assert!(c.elect(1));
    c.stabilize();
    c.raft_mut(1)
        .propose_conf_change(change(&[(AddVoter, 4), (AddVoter, 5)]))
        .unwrap();
    // Right after proposing, the leader is in the joint configuration C(old,new).
    let joint = c.raft(1).configuration().clone();
    assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
    assert_eq!(joint.voters, ids(&[1, 2, 3, 4, 5]));
    c.stabilize();
    c.run_ticks(2);
    // Then it left the joint state by itself, and everyone agrees on C(new).
    for id in 1..=5 {
        let config = c.raft(id).configuration();
        assert_eq!(config.voters, ids(&[1, 2, 3, 4, 5]), "n{id}");
        assert!(!config.is_joint(), "n{id}");
    }
    c.propose(1, "x").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(5), data("x"));
}

#[test]
fn joint_consensus_remove_two_voters() {
    let mut c = Cluster::new(5, 0);
    assert!(c.elect(1));
    c.stabilize();
    c.raft_mut(1)
        .propose_conf_change(change(&[(RemoveNode, 4), (RemoveNode, 5)]))
        .unwrap();
    c.stabilize();
    c.run_ticks(2);
    for id in 1..=3 {
        assert_eq!(c.raft(id).configuration().voters, ids(&[1, 2, 3]), "n{id}");
    }
    // The remaining three commit on their own.
    c.isolate(4);
    c.isolate(5);
    c.propose(1, "x").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(3), data("x"));
}

/// Dissertation §4.3: while joint, a decision needs a majority of C(old) *and* of C(new).
#[test]
fn joint_consensus_needs_majorities_of_both_configurations() {
    let mut c = Cluster::new(3, 2);
    assert!(c.elect(1));
    c.stabilize();
    // C(old) = {1,2,3}, C(new) = {1,4,5}; nodes 4 and 5 are unreachable.
    c.isolate(4);
    c.isolate(5);
    let entered = c
        .raft_mut(1)
        .propose_conf_change(change(&[
            (RemoveNode, 2),
            (RemoveNode, 3),
            (AddVoter, 4),
            (AddVoter, 5),
        ]))
        .unwrap();
    c.run_ticks(3);
    // Then: all of C(old) holds the joint entry, but C(new) has no majority: not committed.
    assert!(c.raft(2).last_index() >= entered.index);
    assert!(c.raft(1).committed() < entered.index);
    // When C(new) becomes reachable, the change commits and the leader leaves the joint state.
    c.heal();
    c.run_ticks(5);
    assert!(c.raft(1).committed() >= entered.index);
    assert_eq!(c.raft(1).configuration().voters, ids(&[1, 4, 5]));
    assert!(!c.raft(1).configuration().is_joint());
}

/// Dissertation §4.2.2: the leader can remove itself; it steps down once C(new) commits, and
/// the remaining nodes elect a leader among themselves.
#[test]
fn joint_consensus_replace_the_leader() {
    let mut c = Cluster::new(3, 1);
    assert!(c.elect(1));
    c.propose(1, "before").unwrap();
    c.stabilize();
    c.raft_mut(1)
        .propose_conf_change(change(&[(RemoveNode, 1), (AddVoter, 4)]))
        .unwrap();
    c.stabilize();
    // Then node 1 stepped down once the configuration without it was committed.
    assert_eq!(c.raft(1).role(), Role::Follower);
    assert_eq!(c.raft(1).configuration().voters, ids(&[2, 3, 4]));
    c.run_ticks(40);
    let leader = c.leader().expect("the new configuration elects a leader");
    assert!([2, 3, 4].contains(&leader));
    c.propose(leader, "after").unwrap();
    c.stabilize();
    assert_eq!(c.applied_data(4), data("before after"));
}

/// A removed leader stops sending heartbeats and cannot disrupt the new configuration.
#[test]
fn a_removed_leader_stops_heartbeats_and_cannot_disrupt() {
    let mut c = Cluster::new(3, 1);
    assert!(c.elect(1));
    c.stabilize();
    c.raft_mut(1)
        .propose_conf_change(change(&[(RemoveNode, 1), (AddVoter, 4)]))
        .unwrap();
    c.stabilize();
    c.run_ticks(40);
    let leader = c.leader().expect("a new leader");
    let term = c.raft(leader).term();
    // When time passes.
    c.sent.clear();
    c.run_ticks(100);
    // Then node 1 sent nothing at all: no heartbeats, no (pre-)votes.
    assert!(
        c.sent.iter().all(|s| s.0 != 1),
        "n1 sent {:?}",
        c.sent.iter().find(|s| s.0 == 1)
    );
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.raft(leader).term(), term);
    assert_eq!(
        c.propose(1, "x"),
        Err(Error::NotLeader { leader_hint: None })
    );
}

/// The leader crashes while the joint configuration is not committed: the new leader, which
/// holds the joint entry, finishes the change.
#[test]
fn a_leader_crash_in_the_middle_of_the_joint_state() {
    let mut c = Cluster::with_config(3, 2, basic);
    assert!(c.elect(1));
    c.stabilize();
    // The joint entry reaches node 2 only, then the leader crashes.
    c.drop_if
        .push(Box::new(|m| m.from == NodeId(1) && m.to != NodeId(2)));
    let joint = c
        .raft_mut(1)
        .propose_conf_change(change(&[(AddVoter, 4), (AddVoter, 5)]))
        .unwrap();
    c.process_all_readies();
    c.step_until(100, |c| c.raft(2).last_index() >= joint.index);
    c.crash(1);
    c.drop_if.clear();
    c.stabilize();
    // Node 3 lacks the joint entry: node 2 refuses it, so it cannot win.
    assert!(!c.elect(3));
    // Node 2 is in C(old,new) and needs majorities of both: {2,3} of C(old), {2,3,4} of C(new).
    assert!(c.raft(2).configuration().is_joint());
    assert!(c.elect(2));
    c.stabilize();
    c.run_ticks(3);
    assert_eq!(c.raft(2).configuration().voters, ids(&[1, 2, 3, 4, 5]));
    assert!(!c.raft(2).configuration().is_joint());
    // The old leader comes back into the finished configuration.
    c.restart(1);
    c.run_ticks(3);
    assert_eq!(c.raft(1).configuration(), c.raft(2).configuration());
}

/// A configuration entry that was never committed is undone when a new leader overwrites it.
#[test]
fn an_uncommitted_configuration_is_rolled_back_when_overwritten() {
    let mut c = Cluster::with_config(3, 1, basic);
    assert!(c.elect(1));
    c.stabilize();
    c.isolate(1);
    c.raft_mut(1)
        .propose_conf_change(change(&[(AddVoter, 4)]))
        .unwrap();
    c.stabilize();
    assert!(c.raft(1).configuration().is_joint());
    assert!(c.elect(2));
    c.propose(2, "b").unwrap();
    c.stabilize();
    c.heal();
    c.run_ticks(3);
    assert_eq!(c.raft(1).configuration().voters, ids(&[1, 2, 3]));
    assert!(!c.raft(1).configuration().is_joint());
    assert_eq!(c.applied_data(1), data("b"));
}

/// Learners receive the log but neither vote nor count for commit; promotion makes a voter.
#[test]
fn a_learner_catches_up_then_is_promoted() {
    let mut c = Cluster::new(3, 1);
    assert!(c.elect(1));
    for k in 0..3 {
        c.propose(1, &format!("w{k}")).unwrap();
    }
    c.stabilize();
    c.raft_mut(1)
        .propose_conf_change(change(&[(AddLearner, 4)]))
        .unwrap();
    c.stabilize();
    c.run_ticks(2);
    assert_eq!(c.raft(1).configuration().learners, ids(&[4]));
    assert_eq!(c.applied_data(4), data("w0 w1 w2"), "the learner caught up");
    // A learner does not count toward commit: with both other voters away, nothing commits.
    c.isolate(2);
    c.isolate(3);
    let x = c.propose(1, "x").unwrap();
    c.stabilize();
    assert!(
        c.raft(4).last_index() >= x.index,
        "the learner holds the entry"
    );
    assert!(c.raft(1).committed() < x.index, "but it does not count");
    // A learner never campaigns.
    c.heal();
    c.stabilize();
    for _ in 0..50 {
        c.tick(4);
    }
    assert!(c.sent.iter().all(|s| !(s.0 == 4 && s.2.contains("Vote"))));
    // Promotion.
    c.run_ticks(2);
    c.raft_mut(1)
        .propose_conf_change(change(&[(AddVoter, 4)]))
        .unwrap();
    c.stabilize();
    c.run_ticks(2);
    assert_eq!(c.raft(1).configuration().voters, ids(&[1, 2, 3, 4]));
    assert!(c.raft(1).configuration().learners.is_empty());
}

/// Only one configuration change may be in flight; a second is refused with a clear error.
#[test]
fn a_second_concurrent_configuration_change_is_refused() {
    let mut c = Cluster::new(3, 2);
    assert!(c.elect(1));
    c.stabilize();
    let first = c
        .raft_mut(1)
        .propose_conf_change(change(&[(AddVoter, 4)]))
        .unwrap();
    let second = c.raft_mut(1).propose_conf_change(change(&[(AddVoter, 5)]));
    assert_eq!(
        second,
        Err(Error::ConfChangeInProgress {
            pending_index: first.index
        })
    );
    c.stabilize();
    c.run_ticks(2);
    // Once the first (and its automatic leave) committed, the next is accepted.
    assert!(
        c.raft_mut(1)
            .propose_conf_change(change(&[(AddVoter, 5)]))
            .is_ok()
    );
    // Invalid changes are refused before they reach the log.
    c.stabilize();
    c.run_ticks(2);
    let bad = c
        .raft_mut(1)
        .propose_conf_change(change(&[(RemoveNode, 9)]));
    assert!(matches!(bad, Err(Error::InvalidConfChange(_))));
}

/// A ReadIndex issued just after a leadership transfer is answered only by the new leader,
/// with an index covering every write the old leader acknowledged.
#[test]
fn read_index_right_after_a_transfer_includes_every_acknowledged_write() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    let mut acked = LogIndex::ZERO;
    for k in 0..3 {
        acked = c.propose(1, &format!("w{k}")).unwrap().index;
    }
    c.stabilize();
    assert!(
        c.raft(1).committed() >= acked,
        "the old leader acknowledged the writes"
    );
    c.raft_mut(1).transfer_leader(NodeId(2)).unwrap();
    // Step until node 2 has just become leader, before its first entry of the term commits.
    c.step_until(200, |c| c.raft(2).role() == Role::Leader);
    assert!(c.raft(2).term_at(c.raft(2).committed()) != Some(c.raft(2).term()));
    c.raft_mut(2)
        .read_index(Bytes::from_static(b"new"))
        .unwrap();
    // The old leader no longer answers on its own: until it hears from the new leader it
    // refuses (the client retries), afterwards it forwards.
    assert_ne!(c.raft(1).role(), Role::Leader);
    if c.raft_mut(1)
        .read_index(Bytes::from_static(b"old"))
        .is_err()
    {
        c.stabilize();
        c.raft_mut(1)
            .read_index(Bytes::from_static(b"old"))
            .unwrap();
    }
    c.stabilize();
    for id in [1, 2] {
        let reads = &c.nodes[&NodeId(id)].reads;
        assert_eq!(reads.len(), 1, "n{id}");
        assert!(
            reads[0].1 >= acked,
            "n{id} read at {} before write {acked}",
            reads[0].1
        );
    }
    assert!(
        c.sent
            .iter()
            .any(|s| s.0 == 1 && s.1 == 2 && s.2 == "ReadIndex")
    );
}

/// Dissertation §10.2.1: the leader sends AppendEntries before its own write is durable,
/// but counts itself only once it is; a crash before persisting loses nothing committed.
#[test]
fn the_leader_counts_itself_only_after_persisting() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    let x = c.propose(1, "x").unwrap();
    // The leader hands out the Ready: AppendEntries may go now, then it crashes.
    c.crash_mid_ready(1);
    assert!(
        c.net
            .iter()
            .any(|m| matches!(m.body, MessageBody::AppendEntries { .. }))
    );
    c.stabilize();
    // The followers hold "x"; nothing of it was committed by the crashed leader.
    assert!(c.raft(2).last_index() >= x.index);
    c.restart(1);
    c.run_ticks(40);
    let leader = c.leader().unwrap();
    c.stabilize();
    assert!(c.raft(leader).committed() >= x.index);
}

/// Bounded pipelining: a replicating follower never has more than `inflight_msgs_max`
/// AppendEntries unacknowledged, and each carries at most `msg_bytes_max` of entries.
#[test]
fn replication_is_pipelined_within_the_inflight_window_and_byte_limit() {
    let mut c = Cluster::with_config(3, 0, |id| {
        let mut cfg = test_config(id);
        cfg.inflight_msgs_max = 4;
        cfg.msg_bytes_max = 100;
        cfg
    });
    assert!(c.elect(1));
    c.stabilize();
    for k in 0..40 {
        c.propose(1, &format!("entry-{k:04}")).unwrap();
    }
    c.process_ready(1);
    let to_2 = c
        .net
        .iter()
        .filter(|m| m.to == NodeId(2) && matches!(m.body, MessageBody::AppendEntries { .. }))
        .count();
    assert_eq!(to_2, 4, "the window holds four messages");
    let pr = c.raft(1).progress(NodeId(2)).unwrap();
    assert_eq!(pr.inflights.len(), 4);
    c.stabilize();
    assert_eq!(c.applied_data(2).len(), 40);
}

/// Fast back-off (dissertation §5.3): a follower with a long divergent suffix is repaired in
/// a few round trips, not one per entry.
#[test]
fn fast_back_off_skips_a_whole_conflicting_term_per_round_trip() {
    let mut c = Cluster::with_config(3, 0, basic);
    assert!(c.elect(1));
    c.stabilize();
    c.isolate(1);
    for k in 0..50 {
        c.propose(1, &format!("lost{k}")).unwrap();
    }
    c.stabilize();
    assert!(c.elect(2));
    for k in 0..50 {
        c.propose(2, &format!("kept{k}")).unwrap();
    }
    c.stabilize();
    c.heal();
    c.sent.clear();
    c.run_ticks(3);
    let rejections = c
        .sent
        .iter()
        .filter(|s| s.0 == 1 && s.2 == "AppendEntriesResponse")
        .count();
    assert!(
        rejections <= 6,
        "{rejections} responses from n1 to repair 50 entries"
    );
    assert_eq!(c.log_of(1), c.log_of(2));
    let kept = c.applied_data(1);
    assert_eq!(kept.len(), 50);
    assert!(kept.iter().all(|d| d.starts_with("kept")));
}

/// Entries carry their payload type, and the leader's no-op opens each term (paper §8).
#[test]
fn each_new_leader_appends_a_noop_of_its_term() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.stabilize();
    let last = c.raft(1).last_index();
    let entries = c.raft(1).entries(last, last.next()).unwrap();
    assert_eq!(entries[0].payload, EntryPayload::Noop);
    assert_eq!(entries[0].term, c.raft(1).term());
}

/// The driver may keep stepping the core while it persists a Ready. If a new leader
/// overwrites entries of that Ready meanwhile, `advance` must not count the overwritten
/// entries as durable, and the next Ready must carry their replacements.
#[test]
fn entries_overwritten_while_their_ready_is_being_persisted_are_written_again() {
    let mut c = Cluster::with_config(5, 0, basic);
    assert!(c.elect(1));
    c.stabilize();
    // Node 5 alone receives "x" from leader 1, and its driver starts persisting it.
    c.drop_if
        .push(Box::new(|m| m.from == NodeId(1) && m.to != NodeId(5)));
    let x = c.propose(1, "x").unwrap();
    c.process_ready(1);
    c.frozen.insert(NodeId(5));
    c.step_until(10, |c| c.raft(5).last_index() >= x.index);
    assert!(c.begin_ready(5));
    c.drop_if.clear();
    // While that Ready is outstanding, node 2 wins term 3 and overwrites index 3 on node 5.
    c.crash(1);
    assert!(c.elect(2));
    c.stabilize();
    assert_eq!(c.raft(5).term_at(x.index), Some(Term(3)));
    // When node 5's driver finishes, the replacement is persisted by the next Ready.
    c.frozen.clear();
    c.stabilize();
    let stored = raft::core::Storage::term(c.raft(5).storage(), x.index).unwrap();
    assert_eq!(stored, Term(3), "storage holds the new leader's entry");
    assert_eq!(c.log_of(5), c.log_of(2));
    c.crash(5);
    c.restart(5);
    assert_eq!(c.log_of(5), c.log_of(2), "and it survives a restart");
}

/// A leader cut off from its followers refuses proposals once `uncommitted_bytes_max` of
/// them wait uncommitted, instead of growing its log without bound.
#[test]
fn a_leader_drops_proposals_beyond_the_uncommitted_byte_limit() {
    let mut c = Cluster::with_config(3, 0, |id| {
        let mut cfg = basic(id);
        cfg.uncommitted_bytes_max = 10;
        cfg
    });
    assert!(c.elect(1));
    c.stabilize();
    c.isolate(1);
    c.propose(1, "12345").unwrap();
    c.propose(1, "67890").unwrap();
    let refused = c.propose(1, "x");
    assert_eq!(
        refused,
        Err(Error::ProposalDropped {
            reason: "too many uncommitted bytes"
        })
    );
    c.heal();
    c.run_ticks(3);
    assert!(c.propose(1, "x").is_ok(), "committing frees the budget");
}

#[test]
fn a_leader_missing_a_committed_entry_is_refused_and_the_committed_log_kept() {
    use raft::core::{Configuration, Entry, HardState, MemStorage, Message, Raft};
    // Given a follower that committed entries 2..=4 of term 1 (after the bootstrap snapshot at 1),
    let mut storage =
        MemStorage::new_with_configuration(Configuration::with_voters(ids(&[1, 2, 3])));
    let entry = |index: u64, term: u64| Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::Normal(Bytes::from(format!("e{index}t{term}"))),
    };
    storage.append(&[entry(2, 1), entry(3, 1), entry(4, 1)]);
    storage.set_hard_state(HardState {
        term: Term(1),
        vote: None,
        commit: LogIndex(4),
    });
    let mut follower = Raft::new(basic(1), storage).expect("valid config");
    // when the leader of term 2 (elected against the rules: it lacks entry 3) sends it an
    // append whose entry 3 differs from the committed one,
    let append = Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(2),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(2),
            prev_log_term: Term(1),
            entries: vec![entry(3, 2), entry(4, 2)],
            leader_commit: LogIndex(4),
        },
    };
    // then the follower refuses it with a typed error, and its committed log is unchanged
    // (it never tells that leader it matched).
    assert!(matches!(
        follower.step(append),
        Err(Error::CommittedConflict {
            index: LogIndex(3),
            commit: LogIndex(4),
            ..
        })
    ));
    assert_eq!(follower.term_at(LogIndex(3)), Some(Term(1)));
    assert_eq!(follower.term_at(LogIndex(4)), Some(Term(1)));
    assert_eq!(follower.committed(), LogIndex(4));
}

/// A busy leader's next Ready persists a new batch and hands out the previous one, committed
/// meanwhile. The previous batch was durable before that Ready, and the Ready says so
/// (`committed_durable`), so a driver may apply it without waiting for the new batch's fsync.
/// An entry that the same Ready persists is never among them.
#[test]
fn committed_entries_durable_before_a_ready_may_be_applied_ahead_of_its_persist() {
    // The held Ready of `id`: the indexes it persists, those it hands out as committed, and
    // how many of those were durable before it.
    let held = |c: &Cluster, id: u64| {
        let rd = c.held_ready(id).expect("a Ready is held");
        let indexes = |entries: &[raft::core::Entry]| -> Vec<LogIndex> {
            entries.iter().map(|e| e.index).collect()
        };
        (
            indexes(&rd.entries),
            indexes(&rd.committed_entries),
            rd.committed_durable,
        )
    };
    // Given a three-node cluster whose leader replicated "a" and heard both followers
    // acknowledge it, but has not handled a Ready since,
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    let a = c.propose(1, "a").expect("the leader accepts").index;
    c.process_ready(1);
    c.deliver_all();
    c.process_ready(2);
    c.process_ready(3);
    c.deliver_all();
    assert_eq!(c.raft(1).committed(), a);
    // when it takes "b" and hands out its next Ready,
    let b = c.propose(1, "b").expect("the leader accepts").index;
    assert!(c.begin_ready(1));
    // then that Ready persists "b" and hands out "a" as committed and already durable.
    assert_eq!(held(&c, 1), (vec![b], vec![a], 1));
    c.finish_ready(1);
    c.stabilize();

    // Given follower 3 cut off while "c" commits without it,
    c.isolate(3);
    let c_index = c.propose(1, "c").expect("the leader accepts").index;
    c.stabilize();
    assert_eq!(c.raft(1).committed(), c_index);
    // when it is back and receives "c" together with the commit index that covers it,
    c.heal();
    let carries_c = |m: &raft::core::Message| {
        m.to == NodeId(3)
            && matches!(&m.body, MessageBody::AppendEntries { entries, leader_commit, .. }
                if entries.iter().any(|e| e.index == c_index) && *leader_commit >= c_index)
    };
    for _ in 0..200 {
        c.process_all_readies();
        if let Some(k) = c.net.iter().position(carries_c) {
            c.deliver(k);
            break;
        }
        if c.net.is_empty() {
            c.tick(1);
        } else {
            c.deliver(0);
        }
    }
    assert_eq!(c.raft(3).last_index(), c_index, "n3 received c");
    assert!(c.begin_ready(3));
    // then its Ready persists "c" and hands it out as committed, but not as durable: it may
    // be applied only after this Ready's persist.
    assert_eq!(held(&c, 3), (vec![c_index], vec![c_index], 0));
    c.finish_ready(3);
    c.stabilize();
    assert_eq!(c.applied_data(3), data("a b c"));
}
