//! The client session table: what makes a write exactly-once.
//!
//! Job: remember, per client session, the sequence number and response of its latest write,
//! so that a write retried after a timeout or a leader change returns the original response
//! instead of being applied twice (Raft dissertation §6.3). With the response goes a
//! fingerprint of the write ([`crate::WriteOp::fingerprint`]): the same sequence number with
//! a different write is [`crate::ApplyError::SequenceReused`], not the other write's answer.
//! The refusal changes nothing but the session's last use, like a retry, so replicas agree.
//!
//! Time here is the Raft log index: a session is *used* at the index of every command that
//! carries it, and it *expires* when more than `idle_indexes_max` indexes pass without a use.
//! When the table is full, registering a new session evicts the least recently used one.
//! Both rules depend only on the sequence of applied indexes, so every replica evicts and
//! expires the same sessions at the same index. An expired or evicted session is gone: a
//! later write carrying it gets [`crate::ApplyError::SessionExpired`] and is not applied, so
//! forgetting a session can never turn a retry into a second application.
//!
//! Invariants (checked by [`SessionTable::check_invariants`]):
//! - `lru` holds exactly one `(last_used_index, client_id)` per session, matching `sessions`;
//! - no two sessions share a `last_used_index` (each index uses at most one session);
//! - the table holds at most `sessions_max` sessions;
//! - `client_id <= last_used_index` (a session is used no earlier than it was registered).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::Response;

/// Default bound on the number of live sessions.
///
/// Each session costs about 100 bytes plus its cached response (which holds a previous value
/// only when the client asked for `prev_kv`). 10,000 clients is far more than one cluster of
/// this kind serves at once; a client that is evicted simply registers again.
pub const SESSIONS_MAX_DEFAULT: usize = 10_000;

/// Default number of applied indexes after which an unused session expires (1,000,000).
///
/// At 20,000 writes per second that is close to a minute, far longer than a leader election
/// plus a client's retry; at low write rates sessions live longer and the LRU bound still
/// holds memory in check.
pub const SESSION_IDLE_INDEXES_DEFAULT: u64 = 1_000_000;

/// Limits of the session table. Must be the same on every replica: they decide which
/// sessions are evicted, and so which retries are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most sessions kept; registering one more evicts the least recently used. At least 1.
    pub sessions_max: usize,
    /// A session unused for more than this many indexes expires. At least 1.
    pub idle_indexes_max: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            sessions_max: SESSIONS_MAX_DEFAULT,
            idle_indexes_max: SESSION_IDLE_INDEXES_DEFAULT,
        }
    }
}

/// The latest write of a session and the response it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// The write's sequence number.
    pub sequence: u64,
    /// The write's [`crate::WriteOp::fingerprint`]; `None` for a response restored from a
    /// snapshot of format 1, which did not keep it (any write with the sequence then gets the
    /// cached response, as before).
    pub fingerprint: Option<u64>,
    /// The response returned to the client, returned again on a retry.
    pub response: Response,
}

/// One session, as stored in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session id (the index of its registration).
    pub client_id: u64,
    /// The index of the last command that carried this session.
    pub last_used_index: u64,
    /// The latest write and its response, if the session has written.
    pub last: Option<CachedResponse>,
}

/// What the table says about an incoming write of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// A new sequence number: apply the write, then [`SessionTable::record`] the response.
    Fresh,
    /// A retry of the latest write: answer with this response, apply nothing.
    Duplicate(Response),
    /// The latest sequence number, carried by a different write: refuse, apply nothing.
    Reused,
    /// Older than the latest write.
    Stale {
        /// The session's latest sequence number.
        last_sequence: u64,
    },
    /// No such session.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SessionState {
    last_used_index: u64,
    last: Option<CachedResponse>,
}

/// Violations found by [`SessionTable::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionInvariantError {
    /// More sessions than the configured bound.
    #[error("{count} sessions exceed the bound of {max}")]
    TooMany {
        /// Sessions held.
        count: u64,
        /// The bound.
        max: u64,
    },
    /// The LRU index and the session map disagree.
    #[error("LRU order out of step with the session map at client {client_id}")]
    LruMismatch {
        /// A session involved.
        client_id: u64,
    },
    /// A session was used before it was registered, or after the applied index.
    #[error(
        "session {client_id} used at index {last_used_index}, outside [{client_id}, {applied_index}]"
    )]
    BadLastUse {
        /// The session.
        client_id: u64,
        /// Its last use.
        last_used_index: u64,
        /// The store's applied index.
        applied_index: u64,
    },
}

/// The bounded, deterministic table of client sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTable {
    config: SessionConfig,
    sessions: BTreeMap<u64, SessionState>,
    /// `(last_used_index, client_id)`, oldest first: the eviction and expiry order.
    lru: BTreeSet<(u64, u64)>,
}

impl SessionTable {
    /// An empty table. Bounds below 1 are raised to 1.
    pub fn new(config: SessionConfig) -> Self {
        let config = SessionConfig {
            sessions_max: config.sessions_max.max(1),
            idle_indexes_max: config.idle_indexes_max.max(1),
        };
        SessionTable {
            config,
            sessions: BTreeMap::new(),
            lru: BTreeSet::new(),
        }
    }

    /// The table's limits.
    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `client_id` is a live session.
    pub fn contains(&self, client_id: u64) -> bool {
        self.sessions.contains_key(&client_id)
    }

    /// Whether a write of `client_id` with `sequence` would be applied as a new write now: the
    /// session is live and `sequence` is above the last one it recorded. Otherwise the state
    /// machine answers it from the cache or refuses it, and changes no key (the space quota
    /// lets such writes through, so that a retry gets its first answer).
    pub fn is_new_write(&self, client_id: u64, sequence: u64) -> bool {
        self.sessions.get(&client_id).is_some_and(|state| {
            state
                .last
                .as_ref()
                .is_none_or(|last| sequence > last.sequence)
        })
    }

    /// Removes every session idle for more than `idle_indexes_max` as of `index`. Called
    /// before each applied index, so the expired set is a function of the index alone.
    pub(crate) fn expire(&mut self, index: u64) {
        while let Some(&(last_used, client_id)) = self.lru.first() {
            if index.saturating_sub(last_used) <= self.config.idle_indexes_max {
                break;
            }
            self.lru.pop_first();
            self.sessions.remove(&client_id);
            tracing::debug!(client_id, last_used, index, "client session expired");
        }
    }

    /// Opens a session with id `index`, evicting the least recently used one if full.
    pub(crate) fn register(&mut self, index: u64) -> u64 {
        while self.sessions.len() >= self.config.sessions_max {
            let (last_used, evicted) = self
                .lru
                .pop_first()
                .expect("invariant: a full session table has an LRU entry");
            self.sessions.remove(&evicted);
            tracing::debug!(
                client_id = evicted,
                last_used,
                index,
                "client session evicted"
            );
        }
        let previous = self.sessions.insert(
            index,
            SessionState {
                last_used_index: index,
                last: None,
            },
        );
        assert!(
            previous.is_none(),
            "invariant: session ids are unique applied indexes"
        );
        self.lru.insert((index, index));
        index
    }

    /// Classifies a write of `client_id` with `sequence` and `fingerprint`, marking the
    /// session used at `index`.
    pub(crate) fn check(
        &mut self,
        client_id: u64,
        sequence: u64,
        fingerprint: u64,
        index: u64,
    ) -> SessionCheck {
        let Some(state) = self.sessions.get_mut(&client_id) else {
            return SessionCheck::Unknown;
        };
        let removed = self.lru.remove(&(state.last_used_index, client_id));
        assert!(removed, "invariant: every session is in the LRU order");
        state.last_used_index = index;
        self.lru.insert((index, client_id));
        match &state.last {
            None => SessionCheck::Fresh,
            Some(last) if sequence > last.sequence => SessionCheck::Fresh,
            Some(last) if sequence == last.sequence => match last.fingerprint {
                Some(cached) if cached != fingerprint => SessionCheck::Reused,
                _ => SessionCheck::Duplicate(last.response.clone()),
            },
            Some(last) => SessionCheck::Stale {
                last_sequence: last.sequence,
            },
        }
    }

    /// Caches the response of a fresh write (after [`SessionTable::check`] said `Fresh`).
    pub(crate) fn record(
        &mut self,
        client_id: u64,
        sequence: u64,
        fingerprint: u64,
        response: &Response,
    ) {
        let state = self
            .sessions
            .get_mut(&client_id)
            .expect("invariant: a fresh write's session exists until the write is recorded");
        state.last = Some(CachedResponse {
            sequence,
            fingerprint: Some(fingerprint),
            response: response.clone(),
        });
    }

    /// The sessions, in client-id order, for a snapshot.
    pub fn records(&self) -> Vec<SessionRecord> {
        self.sessions
            .iter()
            .map(|(&client_id, state)| SessionRecord {
                client_id,
                last_used_index: state.last_used_index,
                last: state.last.clone(),
            })
            .collect()
    }

    /// Rebuilds a table from snapshot records. Duplicate ids or shared last-use indexes are
    /// reported by [`SessionTable::check_invariants`] (the LRU order loses one of them).
    pub(crate) fn from_records(config: SessionConfig, records: Vec<SessionRecord>) -> Self {
        let mut table = SessionTable::new(config);
        for record in records {
            table.lru.insert((record.last_used_index, record.client_id));
            table.sessions.insert(
                record.client_id,
                SessionState {
                    last_used_index: record.last_used_index,
                    last: record.last,
                },
            );
        }
        table
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self, applied_index: u64) -> Result<(), SessionInvariantError> {
        if self.sessions.len() > self.config.sessions_max {
            return Err(SessionInvariantError::TooMany {
                count: self.sessions.len() as u64,
                max: self.config.sessions_max as u64,
            });
        }
        if self.lru.len() != self.sessions.len() {
            let client_id = self.sessions.keys().next().copied().unwrap_or_default();
            return Err(SessionInvariantError::LruMismatch { client_id });
        }
        for (&client_id, state) in &self.sessions {
            if !self.lru.contains(&(state.last_used_index, client_id)) {
                return Err(SessionInvariantError::LruMismatch { client_id });
            }
            if state.last_used_index < client_id || state.last_used_index > applied_index {
                return Err(SessionInvariantError::BadLastUse {
                    client_id,
                    last_used_index: state.last_used_index,
                    applied_index,
                });
            }
        }
        let mut previous_use = None;
        for &(last_used, client_id) in &self.lru {
            if previous_use == Some(last_used) {
                return Err(SessionInvariantError::LruMismatch { client_id });
            }
            previous_use = Some(last_used);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Outcome;

    fn table(sessions_max: usize, idle_indexes_max: u64) -> SessionTable {
        SessionTable::new(SessionConfig {
            sessions_max,
            idle_indexes_max,
        })
    }

    fn ok(revision: u64) -> Response {
        Ok(Outcome::Noop { revision })
    }

    /// Fingerprints of two different writes.
    const WRITE_A: u64 = 0xaaaa;
    const WRITE_B: u64 = 0xbbbb;

    #[test]
    fn fresh_duplicate_stale() {
        let mut t = table(10, 100);
        let id = t.register(5);
        assert_eq!(id, 5);
        assert_eq!(t.check(id, 1, WRITE_A, 6), SessionCheck::Fresh);
        t.record(id, 1, WRITE_A, &ok(6));
        assert_eq!(t.check(id, 1, WRITE_A, 7), SessionCheck::Duplicate(ok(6)));
        assert_eq!(t.check(id, 3, WRITE_B, 8), SessionCheck::Fresh);
        t.record(id, 3, WRITE_B, &ok(8));
        assert_eq!(
            t.check(id, 2, WRITE_A, 9),
            SessionCheck::Stale { last_sequence: 3 }
        );
        assert_eq!(t.check(99, 1, WRITE_A, 10), SessionCheck::Unknown);
        t.check_invariants(10).expect("invariants hold");
    }

    #[test]
    fn only_a_sequence_above_the_last_of_a_live_session_is_a_new_write() {
        // Given a live session that has recorded sequence 2, and no session 99
        let mut t = table(10, 100);
        let id = t.register(1);
        assert!(
            t.is_new_write(id, 1),
            "a session with no write yet takes any sequence"
        );
        assert_eq!(t.check(id, 2, WRITE_A, 2), SessionCheck::Fresh);
        t.record(id, 2, WRITE_A, &ok(2));
        // Then only a higher sequence is new: the same one is a retry, a lower one stale,
        assert!(t.is_new_write(id, 3));
        assert!(!t.is_new_write(id, 2));
        assert!(!t.is_new_write(id, 1));
        // and a write of an unknown session is never applied.
        assert!(!t.is_new_write(99, 1));
    }

    #[test]
    fn the_latest_sequence_with_another_write_is_reused_not_a_duplicate() {
        // Given a session whose latest write, sequence 1, was write A
        let mut t = table(10, 100);
        let id = t.register(1);
        assert_eq!(t.check(id, 1, WRITE_A, 2), SessionCheck::Fresh);
        t.record(id, 1, WRITE_A, &ok(2));
        // When write B comes with sequence 1, then it is refused as a reuse
        assert_eq!(t.check(id, 1, WRITE_B, 3), SessionCheck::Reused);
        // and a retry of A still gets A's answer
        assert_eq!(t.check(id, 1, WRITE_A, 4), SessionCheck::Duplicate(ok(2)));
        t.check_invariants(4).expect("invariants hold");
    }

    #[test]
    fn a_response_without_fingerprint_answers_any_write_of_its_sequence() {
        // Given a session restored from a format-1 snapshot, which kept no fingerprint
        let records = vec![SessionRecord {
            client_id: 1,
            last_used_index: 2,
            last: Some(CachedResponse {
                sequence: 1,
                fingerprint: None,
                response: ok(2),
            }),
        }];
        let mut t = SessionTable::from_records(SessionConfig::default(), records);
        // Then the sequence is answered from the cache, as format 1 did
        assert_eq!(t.check(1, 1, WRITE_B, 3), SessionCheck::Duplicate(ok(2)));
    }

    #[test]
    fn evicts_least_recently_used() {
        let mut t = table(2, 1000);
        t.register(1);
        t.register(2);
        // Use session 1 so that session 2 becomes the least recently used.
        assert_eq!(t.check(1, 1, WRITE_A, 3), SessionCheck::Fresh);
        t.register(4);
        assert!(t.contains(1));
        assert!(!t.contains(2));
        assert!(t.contains(4));
        assert_eq!(t.len(), 2);
        t.check_invariants(4).expect("invariants hold");
    }

    #[test]
    fn expires_idle_sessions() {
        let mut t = table(10, 5);
        t.register(1);
        t.register(3);
        t.expire(6); // 6 - 1 = 5: still live
        assert!(t.contains(1));
        t.expire(7); // 7 - 1 = 6 > 5: expired
        assert!(!t.contains(1));
        assert!(t.contains(3));
        t.expire(100);
        assert!(t.is_empty());
        t.check_invariants(100).expect("invariants hold");
    }

    #[test]
    fn records_roundtrip() {
        let mut t = table(10, 100);
        t.register(1);
        t.register(2);
        assert_eq!(t.check(2, 4, WRITE_A, 3), SessionCheck::Fresh);
        t.record(2, 4, WRITE_A, &ok(3));
        let rebuilt = SessionTable::from_records(t.config(), t.records());
        assert_eq!(rebuilt, t);
    }

    #[test]
    fn invariant_violations_are_reported() {
        let records = vec![
            SessionRecord {
                client_id: 1,
                last_used_index: 4,
                last: None,
            },
            SessionRecord {
                client_id: 2,
                last_used_index: 4,
                last: None,
            },
        ];
        let t = SessionTable::from_records(SessionConfig::default(), records);
        assert!(matches!(
            t.check_invariants(4),
            Err(SessionInvariantError::LruMismatch { .. })
        ));

        let records = vec![SessionRecord {
            client_id: 5,
            last_used_index: 9,
            last: None,
        }];
        let t = SessionTable::from_records(SessionConfig::default(), records);
        assert!(matches!(
            t.check_invariants(8),
            Err(SessionInvariantError::BadLastUse { .. })
        ));

        let records = (1..=3)
            .map(|i| SessionRecord {
                client_id: i,
                last_used_index: i,
                last: None,
            })
            .collect();
        let t = SessionTable::from_records(
            SessionConfig {
                sessions_max: 2,
                idle_indexes_max: 9,
            },
            records,
        );
        assert!(matches!(
            t.check_invariants(3),
            Err(SessionInvariantError::TooMany { .. })
        ));
    }
}
