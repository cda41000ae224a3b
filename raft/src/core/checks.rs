//! What the core checks in every message from a peer before it acts on it. A message comes
//! off the network, and whoever can reach the Raft port can write one: nothing in it may
//! panic the node, move its term out of reach, or plant entries no correct leader would send.
//!
//! The checks are of two kinds, both applied in [`Raft::step`](super::Raft::step) before the
//! term is looked at, so that a refused message changes nothing at all:
//! - the term: at most [`TERM_JUMP_MAX`] above this node's and never above [`TERM_MAX`]
//!   (a term, once adopted, is durable and never goes back); from a stranger (a sender the
//!   configuration lacks, served only while this node knows no leader), at most
//!   [`STRANGER_TERM_JUMP_MAX`] above, and only while this node follows no leader;
//! - the shape: every index and term a message carries is one a correct sender could have
//!   produced (contiguous entries, no entry newer than its leader's term, indexes far from
//!   overflow, a snapshot's membership that holds its invariants).
//!
//! Invariant: a message that passes is safe to hand to the rules; the rules may still ignore
//! it (stale, or not for this role), but none of their arithmetic or assertions can fail on it.

use super::errors::Error;
use super::message::{Message, MessageBody};
use super::raft::{STRANGER_TERM_JUMP_MAX, TERM_JUMP_MAX};
use super::types::{LOG_INDEX_MAX, NodeId, TERM_MAX, Term};

/// Refuses a message whose term this node must not adopt.
pub(crate) fn check_term(m: &Message, current: Term) -> Result<(), Error> {
    let reachable = current.0.saturating_add(TERM_JUMP_MAX);
    if m.term > TERM_MAX || m.term.0 > reachable {
        return Err(Error::TermJump {
            from: m.from,
            term: m.term,
            current,
        });
    }
    Ok(())
}

/// Refuses a stranger's message (see [`Raft::step_from_stranger`](super::Raft::step_from_stranger))
/// that would raise this node's term by more than [`STRANGER_TERM_JUMP_MAX`], or at all while
/// this node follows `leader`.
pub(crate) fn check_stranger_term(
    m: &Message,
    current: Term,
    leader: Option<NodeId>,
) -> Result<(), Error> {
    if m.term <= current {
        return Ok(());
    }
    if leader.is_some() || m.term.0 - current.0 > STRANGER_TERM_JUMP_MAX {
        return Err(Error::StrangerTerm {
            from: m.from,
            term: m.term,
            current,
            leader,
        });
    }
    Ok(())
}

/// Refuses a message whose fields no correct sender produces.
pub(crate) fn check_shape(m: &Message) -> Result<(), Error> {
    let malformed = |what| Error::Malformed {
        from: m.from,
        kind: m.body.name(),
        what,
    };
    match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            ..
        } => {
            if *last_log_index > LOG_INDEX_MAX {
                return Err(malformed("the last log index is beyond any real log"));
            }
            if *last_log_term > m.term {
                return Err(malformed(
                    "the last entry is newer than the candidate's term",
                ));
            }
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            if *prev_log_index > LOG_INDEX_MAX || *leader_commit > LOG_INDEX_MAX {
                return Err(malformed("an index is beyond any real log"));
            }
            if *prev_log_term > m.term {
                return Err(malformed(
                    "the previous entry is newer than the leader's term",
                ));
            }
            let mut expected = *prev_log_index;
            let mut newest = *prev_log_term;
            for e in entries {
                // `expected` stays at most LOG_INDEX_MAX + entries (far below u64::MAX): a
                // frame cannot hold u64::MAX / 2 entries.
                expected = expected.next();
                if e.index != expected || e.index > LOG_INDEX_MAX {
                    return Err(malformed(
                        "the entries are not consecutive after prev_log_index",
                    ));
                }
                if e.term < newest || e.term > m.term {
                    return Err(malformed(
                        "the entries' terms go back, or are newer than the leader's term",
                    ));
                }
                newest = e.term;
            }
        }
        MessageBody::AppendEntriesResponse {
            index,
            reject_hint_index,
            reject_hint_term,
            ..
        } => {
            if *index > LOG_INDEX_MAX || *reject_hint_index > LOG_INDEX_MAX {
                return Err(malformed("an index is beyond any real log"));
            }
            if *reject_hint_term > m.term {
                return Err(malformed(
                    "the hint's term is newer than the follower's term",
                ));
            }
        }
        MessageBody::Heartbeat { leader_commit, .. } => {
            if *leader_commit > LOG_INDEX_MAX {
                return Err(malformed("the commit index is beyond any real log"));
            }
        }
        MessageBody::InstallSnapshot { snapshot } => {
            let meta = &snapshot.metadata;
            if meta.index > LOG_INDEX_MAX {
                return Err(malformed("the snapshot's index is beyond any real log"));
            }
            if meta.term > m.term {
                return Err(malformed("the snapshot is newer than the leader's term"));
            }
            if meta.configuration.check_invariants().is_err() {
                return Err(malformed(
                    "the snapshot's membership is not a valid configuration",
                ));
            }
        }
        MessageBody::ReadIndexResponse { index, .. } => {
            if *index > LOG_INDEX_MAX {
                return Err(malformed("the read index is beyond any real log"));
            }
        }
        MessageBody::RequestVoteResponse { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::ReadIndex { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::membership::{ConfChange, ConfChangeKind, Configuration};
    use crate::core::message::{Entry, EntryPayload, Snapshot, SnapshotMetadata};
    use crate::core::{Config, LogIndex, MemStorage, NodeId, Raft, Role};
    use util::SplitMix64;

    fn voters() -> Configuration {
        Configuration::with_voters([NodeId(1), NodeId(2), NodeId(3)])
    }

    /// Node 1 of the voters {1, 2, 3}, in term 1, with an empty log.
    fn node1() -> Raft<MemStorage> {
        Raft::new(
            Config::new(NodeId(1)),
            MemStorage::new_with_configuration(voters()),
        )
        .expect("valid config")
    }

    /// Persists and applies whatever the node handed out, as a driver does.
    fn drain(node: &mut Raft<MemStorage>) {
        while node.has_ready() {
            let rd = node.ready();
            let storage = node.storage_mut();
            if let Some(snapshot) = &rd.snapshot {
                storage.apply_snapshot(snapshot.clone());
            }
            storage.append(&rd.entries);
            if let Some(hs) = &rd.hard_state {
                storage.set_hard_state(hs.clone());
            }
            node.advance(rd);
        }
    }

    fn heartbeat(from: u64, term: u64) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(1),
            term: Term(term),
            body: MessageBody::Heartbeat {
                leader_commit: LogIndex::ZERO,
                read_round: 0,
            },
        }
    }

    #[test]
    fn a_heartbeat_at_the_highest_term_is_refused_and_changes_nothing() {
        // Given a follower, when a peer's heartbeat claims term u64::MAX (the forged frame
        // that once stopped a whole cluster),
        let mut node = node1();
        let start = node.term();
        let refused = node.step(heartbeat(2, u64::MAX));
        // then it is refused naming the sender, and the node keeps its term and leader.
        assert!(
            matches!(
                refused,
                Err(Error::TermJump {
                    from: NodeId(2),
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(node.term(), start);
        assert_eq!(node.leader(), None);
    }

    #[test]
    fn a_node_whose_storage_holds_a_forged_term_refuses_to_start_instead_of_panicking() {
        // Given storage whose persisted term is u64::MAX (adopted from a forged frame by a
        // version before these checks), when a node is built on it, then it is refused with
        // an error that says what happened, rather than panicking at its first election.
        let mut storage = MemStorage::new_with_configuration(voters());
        let mut hs = storage.hard_state().clone();
        hs.term = Term(u64::MAX);
        storage.set_hard_state(hs);
        match Raft::new(Config::new(NodeId(1)), storage) {
            Err(Error::Storage(e)) => assert!(e.to_string().contains("forged"), "{e}"),
            Err(other) => panic!("unexpected error: {other}"),
            Ok(_) => panic!("a node started on a term it can never increment"),
        }
    }

    #[test]
    fn a_stranger_may_raise_the_term_of_a_leaderless_node_only_by_a_few_terms() {
        // Given a follower that knows no leader (it just started),
        let mut node = node1();
        let start = node.term().0;
        assert_eq!(node.leader(), None);
        // when a stranger (node 12345, not in its configuration) sends a heartbeat 5,000
        // terms ahead (well within the bound for members), then it is refused and changes
        // nothing: the node neither takes the term nor follows the stranger,
        let forged = node.step_from_stranger(heartbeat(12345, start + 5_000));
        assert!(
            matches!(
                forged,
                Err(Error::StrangerTerm {
                    from: NodeId(12345),
                    leader: None,
                    ..
                })
            ),
            "{forged:?}"
        );
        let one_past =
            node.step_from_stranger(heartbeat(12345, start + STRANGER_TERM_JUMP_MAX + 1));
        assert!(
            matches!(one_past, Err(Error::StrangerTerm { .. })),
            "{one_past:?}"
        );
        assert_eq!(node.term(), Term(start));
        assert_eq!(node.leader(), None);
        // while a stranger a few terms ahead (a member that joined and came to lead while
        // this node was away) is followed: only it can bring this node up to date.
        node.step_from_stranger(heartbeat(5, start + STRANGER_TERM_JUMP_MAX))
            .expect("within the stranger's bound");
        assert_eq!(node.term(), Term(start + STRANGER_TERM_JUMP_MAX));
        assert_eq!(node.leader(), Some(NodeId(5)));
    }

    #[test]
    fn a_stranger_cannot_move_a_node_that_follows_a_leader_to_a_new_term() {
        // Given a follower of leader 2 in its term,
        let mut node = node1();
        let term = node.term().0 + 1;
        node.step(heartbeat(2, term)).expect("a member's heartbeat");
        assert_eq!(node.leader(), Some(NodeId(2)));
        // when a stranger (even the stranger it follows, were it one) sends a heartbeat just
        // one term ahead, then it is refused: step by step it could otherwise climb anywhere,
        let refused = node.step_from_stranger(heartbeat(12345, term + 1));
        assert!(
            matches!(
                refused,
                Err(Error::StrangerTerm {
                    leader: Some(NodeId(2)),
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!((node.term(), node.leader()), (Term(term), Some(NodeId(2))));
        // while a stranger's message in the node's own term is stepped as any other.
        node.step_from_stranger(heartbeat(2, term))
            .expect("no term raised");
    }

    #[test]
    fn a_term_jump_is_refused_beyond_the_bound_and_taken_within_it() {
        let mut node = node1();
        let start = node.term().0;
        // Given a follower: one term beyond the bound is refused,
        let beyond = node.step(heartbeat(2, start + TERM_JUMP_MAX + 1));
        assert!(matches!(beyond, Err(Error::TermJump { .. })), "{beyond:?}");
        assert_eq!(node.term(), Term(start));
        // while exactly the bound is a leader's heartbeat like any other.
        node.step(heartbeat(2, start + TERM_JUMP_MAX))
            .expect("within reach");
        assert_eq!(node.term(), Term(start + TERM_JUMP_MAX));
        assert_eq!(node.leader(), Some(NodeId(2)));
    }

    #[test]
    fn entries_that_no_leader_sends_are_refused_before_they_touch_the_log() {
        let append = |prev: u64, entries: Vec<(u64, u64)>| Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(3),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(prev),
                prev_log_term: Term::ZERO,
                entries: entries
                    .into_iter()
                    .map(|(index, term)| Entry {
                        term: Term(term),
                        index: LogIndex(index),
                        payload: EntryPayload::Noop,
                    })
                    .collect(),
                leader_commit: LogIndex(2),
            },
        };
        for (what, m) in [
            ("a gap", append(0, vec![(1, 1), (3, 1)])),
            ("terms going back", append(0, vec![(1, 2), (2, 1)])),
            ("an entry newer than the leader", append(0, vec![(1, 4)])),
            ("an index at the end of u64", append(u64::MAX, vec![(0, 1)])),
        ] {
            // Given a follower with an empty log, when a peer sends entries with `what`,
            let mut node = node1();
            let (start, last) = (node.term(), node.last_index());
            let refused = node.step(m);
            // then the message is refused as malformed, and neither the term nor the log move.
            assert!(
                matches!(refused, Err(Error::Malformed { .. })),
                "{what}: {refused:?}"
            );
            assert_eq!(node.term(), start, "{what}");
            assert_eq!(node.last_index(), last, "{what}");
        }
    }

    #[test]
    fn only_the_followed_leader_may_order_an_election_or_confirm_a_read() {
        // Given node 1 following leader 2 in its term,
        let mut node = node1();
        let term = node.term().0;
        node.step(heartbeat(2, term))
            .expect("the leader's heartbeat");
        drain(&mut node);
        let from = |id: u64, body: MessageBody| Message {
            from: NodeId(id),
            to: NodeId(1),
            term: Term(term),
            body,
        };
        let read = || MessageBody::ReadIndexResponse {
            context: Bytes::from_static(b"r"),
            index: LogIndex(1),
        };
        // when member 3 (not the leader) sends TimeoutNow and a read confirmation,
        node.step(from(3, MessageBody::TimeoutNow)).unwrap();
        node.step(from(3, read())).unwrap();
        // then the node neither campaigns nor hands out a read;
        assert_eq!(node.role(), Role::Follower);
        assert_eq!(node.term(), Term(term));
        assert!(!node.has_ready(), "nothing to hand out");
        // while the same from leader 2 are taken.
        node.step(from(2, read())).unwrap();
        assert_eq!(node.ready().read_states.len(), 1);
    }

    /// Extreme and ordinary values, for the random messages below.
    fn pick_u64(rng: &mut SplitMix64) -> u64 {
        match rng.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX / 2,
            3 => u64::MAX / 2 + 1,
            4 => TERM_JUMP_MAX + rng.below(3),
            _ => rng.below(12),
        }
    }

    fn random_message(rng: &mut SplitMix64) -> Message {
        let term = Term(pick_u64(rng));
        let body = match rng.below(12) {
            0 => MessageBody::RequestVote {
                pre_vote: rng.below(2) == 0,
                last_log_index: LogIndex(pick_u64(rng)),
                last_log_term: Term(pick_u64(rng)),
                leadership_transfer: rng.below(2) == 0,
            },
            1 => MessageBody::RequestVoteResponse {
                pre_vote: rng.below(2) == 0,
                granted: rng.below(2) == 0,
            },
            2 => {
                let prev = pick_u64(rng).min(20);
                let count = rng.below(4);
                let first_term = rng.below(term.0.saturating_add(1).min(12));
                MessageBody::AppendEntries {
                    prev_log_index: LogIndex(prev),
                    prev_log_term: Term(rng.below(first_term + 1)),
                    entries: (1..=count)
                        .map(|k| Entry {
                            term: Term(first_term),
                            index: LogIndex(prev + k),
                            payload: match rng.below(3) {
                                0 => EntryPayload::Noop,
                                1 => EntryPayload::Normal(Bytes::from_static(b"x")),
                                _ => EntryPayload::ConfChange(ConfChange::single(
                                    ConfChangeKind::AddLearner,
                                    NodeId(rng.below(6)),
                                )),
                            },
                        })
                        .collect(),
                    leader_commit: LogIndex(pick_u64(rng)),
                }
            }
            3 => MessageBody::AppendEntriesResponse {
                success: rng.below(2) == 0,
                index: LogIndex(pick_u64(rng)),
                reject_hint_index: LogIndex(pick_u64(rng)),
                reject_hint_term: Term(pick_u64(rng)),
            },
            4 => MessageBody::Heartbeat {
                leader_commit: LogIndex(pick_u64(rng)),
                read_round: pick_u64(rng),
            },
            5 => MessageBody::HeartbeatResponse {
                read_round: pick_u64(rng),
            },
            6 => MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    metadata: SnapshotMetadata {
                        index: LogIndex(pick_u64(rng)),
                        term: Term(pick_u64(rng)),
                        configuration: if rng.below(2) == 0 {
                            voters()
                        } else {
                            Configuration {
                                voters: [NodeId(1)].into(),
                                learners: [NodeId(1)].into(),
                                ..Configuration::default()
                            }
                        },
                    },
                    data: Bytes::new(),
                },
            },
            7 => MessageBody::TimeoutNow,
            8 => MessageBody::ReadIndex {
                context: Bytes::from_static(b"r"),
            },
            9 => MessageBody::ReadIndexResponse {
                context: Bytes::from_static(b"r"),
                index: LogIndex(pick_u64(rng)),
            },
            _ => MessageBody::Heartbeat {
                leader_commit: LogIndex(rng.below(4)),
                read_round: rng.below(4),
            },
        };
        Message {
            from: NodeId(rng.below(6)),
            to: NodeId(if rng.below(10) == 0 { 9 } else { 1 }),
            term,
            body,
        }
    }

    #[test]
    fn random_and_extreme_messages_never_panic_a_node_nor_break_its_invariants() {
        // Given node 1 of three voters, sometimes leading and sometimes following, when it is
        // stepped with thousands of random messages full of extreme values (from members,
        // strangers and node 0), then it never panics, its invariants hold after every step,
        // and its term never passes TERM_MAX.
        for seed in 0..40u64 {
            let mut rng = SplitMix64::new(seed);
            let mut node = node1();
            if seed % 2 == 0 {
                let mut cfg = Config::new(NodeId(1));
                cfg.pre_vote = false;
                node = Raft::new(cfg, MemStorage::new_with_configuration(voters())).unwrap();
                node.campaign_now();
                drain(&mut node);
                for from in [2, 3] {
                    let vote = Message {
                        from: NodeId(from),
                        to: NodeId(1),
                        term: node.term(),
                        body: MessageBody::RequestVoteResponse {
                            pre_vote: false,
                            granted: true,
                        },
                    };
                    let _ = node.step(vote);
                }
                drain(&mut node);
                assert_eq!(node.role(), Role::Leader, "seed {seed}");
                let _ = node.propose(Bytes::from_static(b"v"));
                drain(&mut node);
            }
            for step in 0..500 {
                let m = random_message(&mut rng);
                let _ = node.step(m);
                if rng.below(8) == 0 {
                    node.tick();
                }
                drain(&mut node);
                if let Err(e) = node.check_invariants() {
                    panic!("seed {seed} step {step}: {e}");
                }
                assert!(node.term() <= TERM_MAX, "seed {seed} step {step}");
            }
        }
    }
}
