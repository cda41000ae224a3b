//! The wire and disk vocabulary of the core: log entries, the hard state, snapshots and the
//! messages peers exchange. Everything here derives serde so the driver can frame it with
//! postcard; nothing here has behaviour beyond size accounting.
//!
//! Every message from a peer is untrusted: the core validates what it reads from one (see
//! `Raft::step`), so these types may hold any values at all.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::membership::{ConfChange, Configuration};
use super::types::{LogIndex, NodeId, Term};

/// The most entries one AppendEntries carries. A leader stops there (as it stops at
/// `msg_bytes_max`), and a receiver refuses to decode more: without a count bound a 16 MiB
/// frame of empty entries (three bytes each on the wire) decodes into five million of them,
/// half a gigabyte, from a single frame of a caller nobody has authenticated.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 65_536;

/// Deserializes a sequence, refusing it once it holds more than `max` elements, before they
/// are all allocated (a length prefix is only a claim: the elements are counted as they
/// come).
pub(crate) fn bounded_vec<'de, D, T>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T> {
        max: usize,
        what: &'static str,
        elements: std::marker::PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Bounded<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "at most {} {}", self.max, self.what)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(1024));
            while let Some(element) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(serde::de::Error::invalid_length(out.len() + 1, &self));
                }
                out.push(element);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded {
        max,
        what,
        elements: std::marker::PhantomData,
    })
}

fn entries_bounded<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
    bounded_vec(d, ENTRIES_PER_MESSAGE_MAX, "entries")
}

/// Bytes counted for an entry on top of its payload, so that even empty entries cost
/// something against the byte limits (index, term and tag as encoded, roughly).
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// The empty entry a new leader appends at the start of its term (paper §8, dissertation
    /// §6.4): committing it commits every earlier entry and lets the leader serve reads.
    Noop,
    /// An application command, opaque to the core.
    Normal(Bytes),
    /// A membership change. It takes effect as soon as it is in a node's log (dissertation §4.1).
    ConfChange(ConfChange),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// The size counted against `msg_bytes_max` and the other byte limits.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Normal(data) => data.len() as u64,
            EntryPayload::ConfChange(cc) => 16 * cc.changes.len() as u64,
        };
        ENTRY_OVERHEAD_BYTES + payload
    }
}

/// The state that must be durable before any message that depends on it leaves the node
/// (paper Figure 2, "persistent state on all servers").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed. Persisting it is an optimisation (entries up to it
    /// can be applied at restart without waiting for a leader); it is never required for safety.
    pub commit: LogIndex,
}

/// What a snapshot covers: the log prefix it replaces and the membership as of its last entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMetadata {
    /// The index of the last entry the snapshot replaces.
    pub index: LogIndex,
    /// The term of that entry.
    pub term: Term,
    /// The membership as of `index`.
    pub configuration: Configuration,
}

/// A snapshot of the state machine. The driver streams `data` in chunks; the core only looks at
/// the metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the snapshot covers.
    pub metadata: SnapshotMetadata,
    /// The state machine's serialized state, opaque to the core.
    pub data: Bytes,
}

/// A message between two cores. `term` is the sender's current term, except for a pre-vote
/// request (the term the sender would campaign in) and a granted pre-vote response (that
/// same future term), which never change anyone's term.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// See the type's documentation.
    pub term: Term,
    /// What the message says.
    pub body: MessageBody,
}

/// The kinds of message, with their fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// RequestVote (paper §5.2), or its pre-vote probe (dissertation §9.6).
    RequestVote {
        /// True for a pre-vote: nobody changes term or vote because of it.
        pre_vote: bool,
        /// The index of the candidate's last entry, for the election restriction (§5.4.1).
        last_log_index: LogIndex,
        /// The term of the candidate's last entry.
        last_log_term: Term,
        /// Set by a candidate campaigning on `TimeoutNow`: it may disturb a live leader.
        leadership_transfer: bool,
    },
    /// The answer to `RequestVote`.
    RequestVoteResponse {
        /// Mirrors the request.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (paper §5.3) carrying entries.
    AppendEntries {
        /// The index just before the first entry.
        prev_log_index: LogIndex,
        /// The term at `prev_log_index`, for the consistency check.
        prev_log_term: Term,
        /// Consecutive entries starting at `prev_log_index + 1`, at most
        /// [`ENTRIES_PER_MESSAGE_MAX`].
        #[serde(deserialize_with = "entries_bounded")]
        entries: Vec<Entry>,
        /// The leader's commit index.
        leader_commit: LogIndex,
    },
    /// The answer to `AppendEntries` or `InstallSnapshot`.
    AppendEntriesResponse {
        /// Whether the consistency check passed.
        success: bool,
        /// On success: the follower's log matches the leader's up to here, durably.
        /// On rejection: the `prev_log_index` the leader sent, so stale rejections are spotted.
        index: LogIndex,
        /// On rejection: the follower's hint for fast back-off (dissertation §5.3 end): an
        /// index where the follower's term is at most `reject_hint_term`.
        reject_hint_index: LogIndex,
        /// On rejection: the follower's term at `reject_hint_index`.
        reject_hint_term: Term,
    },
    /// An empty AppendEntries, sent every heartbeat interval and to confirm ReadIndex rounds.
    Heartbeat {
        /// `min(leader commit, follower match)`: the follower is only told about entries it is
        /// known to hold.
        leader_commit: LogIndex,
        /// The latest ReadIndex round the leader has started; echoed back.
        read_round: u64,
    },
    /// The answer to `Heartbeat`.
    HeartbeatResponse {
        /// Echo of the heartbeat's round.
        read_round: u64,
    },
    /// InstallSnapshot (paper §7). The driver may stream `snapshot.data` separately.
    InstallSnapshot {
        /// The snapshot, including the membership it carries.
        snapshot: Snapshot,
    },
    /// Leadership transfer (dissertation §3.10): start an election now.
    TimeoutNow,
    /// A follower asks the leader for a read index on behalf of its client.
    ReadIndex {
        /// Opaque request identifier, echoed back.
        context: Bytes,
    },
    /// The leader's answer: the read may be served once the follower applied `index`.
    ReadIndexResponse {
        /// Echo of the request's context.
        context: Bytes,
        /// The confirmed read index.
        index: LogIndex,
    },
}

impl MessageBody {
    /// A short name, for traces and test output.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::RequestVote { pre_vote: true, .. } => "PreVote",
            MessageBody::RequestVote { .. } => "RequestVote",
            MessageBody::RequestVoteResponse { pre_vote: true, .. } => "PreVoteResponse",
            MessageBody::RequestVoteResponse { .. } => "RequestVoteResponse",
            MessageBody::AppendEntries { .. } => "AppendEntries",
            MessageBody::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::membership::{ConfChangeKind, Configuration};

    #[test]
    fn more_entries_than_a_message_may_carry_are_refused_while_decoding() {
        // Given an AppendEntries of one entry more than the bound (each entry three bytes on
        // the wire), when it is decoded, then decoding fails, and exactly the bound passes.
        let append = |count: usize| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: (1..=count as u64)
                    .map(|i| Entry {
                        term: Term(1),
                        index: LogIndex(i),
                        payload: EntryPayload::Noop,
                    })
                    .collect(),
                leader_commit: LogIndex(0),
            },
        };
        let over = postcard::to_stdvec(&append(ENTRIES_PER_MESSAGE_MAX + 1)).unwrap();
        assert!(postcard::from_bytes::<Message>(&over).is_err());
        let at = append(ENTRIES_PER_MESSAGE_MAX);
        let bytes = postcard::to_stdvec(&at).unwrap();
        assert_eq!(postcard::from_bytes::<Message>(&bytes).unwrap(), at);
    }

    #[test]
    fn a_membership_of_more_ids_or_changes_than_the_bounds_is_refused_while_decoding() {
        use crate::core::membership::{CONF_CHANGES_MAX, CONFIGURATION_IDS_MAX};
        // Given a snapshot header whose membership names one id more than the bound,
        let ids = |n: u64| {
            (1..=n)
                .map(NodeId)
                .collect::<std::collections::BTreeSet<_>>()
        };
        let metadata = |n: u64| SnapshotMetadata {
            index: LogIndex(1),
            term: Term(1),
            configuration: Configuration {
                voters: ids(n),
                ..Configuration::default()
            },
        };
        // when it is decoded, then decoding fails, while exactly the bound passes;
        let over = postcard::to_stdvec(&metadata(CONFIGURATION_IDS_MAX as u64 + 1)).unwrap();
        assert!(postcard::from_bytes::<SnapshotMetadata>(&over).is_err());
        let at = metadata(CONFIGURATION_IDS_MAX as u64);
        let bytes = postcard::to_stdvec(&at).unwrap();
        assert_eq!(
            postcard::from_bytes::<SnapshotMetadata>(&bytes).unwrap(),
            at
        );
        // and likewise for the single changes of one membership change.
        let change = |n: usize| ConfChange {
            changes: vec![ConfChange::single(ConfChangeKind::AddLearner, NodeId(4)).changes[0]; n],
        };
        let over = postcard::to_stdvec(&change(CONF_CHANGES_MAX + 1)).unwrap();
        assert!(postcard::from_bytes::<ConfChange>(&over).is_err());
        let bytes = postcard::to_stdvec(&change(CONF_CHANGES_MAX)).unwrap();
        assert_eq!(
            postcard::from_bytes::<ConfChange>(&bytes).unwrap(),
            change(CONF_CHANGES_MAX)
        );
    }

    /// The transport frames messages with postcard: every kind must survive the round trip.
    #[test]
    fn every_message_kind_round_trips_through_postcard() {
        let entry = |payload| Entry {
            term: Term(3),
            index: LogIndex(7),
            payload,
        };
        let snapshot = Snapshot {
            metadata: SnapshotMetadata {
                index: LogIndex(9),
                term: Term(2),
                configuration: Configuration::with_voters([NodeId(1), NodeId(2)]),
            },
            data: Bytes::from_static(b"state"),
        };
        let bodies = vec![
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: LogIndex(4),
                last_log_term: Term(2),
                leadership_transfer: false,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(6),
                prev_log_term: Term(3),
                entries: vec![
                    entry(EntryPayload::Noop),
                    entry(EntryPayload::Normal(Bytes::from_static(b"put k v"))),
                    entry(EntryPayload::ConfChange(ConfChange::single(
                        ConfChangeKind::AddLearner,
                        NodeId(4),
                    ))),
                ],
                leader_commit: LogIndex(5),
            },
            MessageBody::AppendEntriesResponse {
                success: false,
                index: LogIndex(6),
                reject_hint_index: LogIndex(3),
                reject_hint_term: Term(1),
            },
            MessageBody::Heartbeat {
                leader_commit: LogIndex(5),
                read_round: 8,
            },
            MessageBody::HeartbeatResponse { read_round: 8 },
            MessageBody::InstallSnapshot { snapshot },
            MessageBody::TimeoutNow,
            MessageBody::ReadIndex {
                context: Bytes::from_static(b"ctx"),
            },
            MessageBody::ReadIndexResponse {
                context: Bytes::new(),
                index: LogIndex(5),
            },
        ];
        for body in bodies {
            let m = Message {
                from: NodeId(1),
                to: NodeId(2),
                term: Term(3),
                body,
            };
            let bytes = postcard::to_stdvec(&m).expect("encode");
            let back: Message = postcard::from_bytes(&bytes).expect("decode");
            assert_eq!(back, m, "{}", m.body.name());
        }
    }
}
