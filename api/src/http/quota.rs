//! The space quota (`storage.quota_bytes`, as etcd's `--quota-backend-bytes`): once the
//! state's size reaches the quota, the leader refuses writes that would grow it with
//! `507 quota_exceeded`, before they are proposed; everything else goes on, and the refusals
//! stop by themselves once deletes bring the state under the quota.
//!
//! The size is [`kv::KvStore::data_bytes`], which the state machine publishes after every
//! apply ([`crate::server::machine::Machine::data_bytes_gauge`]), so a write under the quota
//! is admitted without the state machine's lock. Invariants and limits:
//! - the decision is the leader's, on its applied state: a follower forwards the write first,
//!   so every write is judged by the node that proposes it;
//! - writes proposed but not yet applied are not counted, so a burst in flight may take the
//!   state past the quota by what it adds (as in etcd), and the last write admitted under the
//!   quota may pass it by its own size;
//! - a write is refused only if applying it now would grow the state: a put of a new key, a
//!   put with a longer value than the stored one, or a compare-and-swap whose put would do
//!   either. Deletes, shorter or equal overwrites, session registration, membership changes
//!   and snapshots go on, and so does a retry of an exactly-once write that the state machine
//!   answers from its session cache (it changes nothing);
//! - the condition is logged once when the state reaches the quota and once when it is back
//!   under, by the periodic look of [`watch`] (or by the first refusal), never per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use kv::{CasAction, Command, KvStore, Write, WriteOp};
use proto::rest::ErrorCode;
use serde_json::Value;
use tracing::{info, warn};

use super::ApiError;
use crate::config::units::format_size;
use crate::server::machine::Machine;
use crate::service::MACHINE_LOCK;

/// How often each node looks at its state's size to log a change of the quota condition: a
/// state that keeps crossing the quota logs at most one pair of lines per interval (only this
/// look logs the condition's end).
pub const QUOTA_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The state's size against the quota, as `/ready` and a refusal show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaState {
    /// [`kv::KvStore::data_bytes`] of the applied state.
    pub used_bytes: u64,
    /// `storage.quota_bytes`.
    pub quota_bytes: u64,
}

impl QuotaState {
    /// Whether the state has reached the quota, so that writes that grow it are refused.
    pub fn exceeded(&self) -> bool {
        self.used_bytes >= self.quota_bytes
    }

    /// As the contract sends it.
    pub fn info(&self) -> proto::rest::QuotaInfo {
        proto::rest::QuotaInfo {
            used_bytes: self.used_bytes,
            quota_bytes: self.quota_bytes,
            exceeded: self.exceeded(),
        }
    }

    /// As a JSON value, for the `quota` field of error answers.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.info()).expect("invariant: a quota serialises to JSON")
    }
}

/// One node's quota: the configured bound, the published size, and the condition as logged.
pub struct Quota {
    quota_bytes: u64,
    used: Arc<AtomicU64>,
    /// The condition as last logged; the swap on it is what makes each change log once.
    logged_exceeded: AtomicBool,
}

impl Quota {
    /// A quota of `quota_bytes` over the size the state machine publishes in `used`.
    pub fn new(quota_bytes: u64, used: Arc<AtomicU64>) -> Quota {
        Quota {
            quota_bytes,
            used,
            logged_exceeded: AtomicBool::new(false),
        }
    }

    /// The size and the quota now.
    pub fn state(&self) -> QuotaState {
        QuotaState {
            used_bytes: self.used.load(Ordering::Acquire),
            quota_bytes: self.quota_bytes,
        }
    }

    /// [`Quota::state`], logging the condition if it changed since it was last logged: a
    /// `warn` when the state reaches the quota, an `info` when it is back under.
    pub fn observe(&self) -> QuotaState {
        let state = self.state();
        self.log_change(state);
        state
    }

    /// Logs `state`'s condition if it differs from the one last logged.
    fn log_change(&self, state: QuotaState) {
        let exceeded = state.exceeded();
        let was = self.logged_exceeded.swap(exceeded, Ordering::AcqRel);
        match (was, exceeded) {
            (false, true) => warn!(
                used_bytes = state.used_bytes,
                quota_bytes = state.quota_bytes,
                "the state has reached its space quota (storage.quota_bytes): writes that would grow it are refused with 507 quota_exceeded until deletes free space; deletes and reads go on"
            ),
            (true, false) => info!(
                used_bytes = state.used_bytes,
                quota_bytes = state.quota_bytes,
                "the state is back under its space quota: writes that grow it are taken again"
            ),
            _ => {}
        }
    }

    /// Decides, on the leader and before proposing, whether `command` may go into the log:
    /// refused with `507 quota_exceeded` when the state has reached the quota and applying
    /// the command now would grow it ([`would_grow`]). `node` names this node in the answer.
    pub fn check_write(
        &self,
        machine: &Mutex<Machine>,
        command: &Command,
        node: &str,
    ) -> Result<(), ApiError> {
        let state = self.state();
        if !state.exceeded() {
            return Ok(());
        }
        let grows = would_grow(&machine.lock().expect(MACHINE_LOCK).kv, command);
        if !grows {
            return Ok(());
        }
        // Only ever logs the condition beginning: it is cleared by `watch` alone, once per
        // interval, which bounds the lines a state hovering at the quota can log.
        self.log_change(state);
        Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "the write was refused and not applied: the stored data ({} bytes) has reached the space quota of {} (storage.quota_bytes on the leader {node}); deletes, overwrites with values no longer than the stored ones, and reads go on, and writes are taken again once deletes bring the data under the quota",
                state.used_bytes,
                format_size(state.quota_bytes),
            ),
        )
        .with("quota", state.to_json()))
    }
}

/// Whether applying `command` to `store` now would grow [`KvStore::data_bytes`]: a put (plain
/// or in a compare-and-swap, whose condition is not evaluated here) of a key that does not
/// exist or with a value longer than the stored one. An exactly-once write that the session
/// table would answer from its cache or refuse is never growth.
pub fn would_grow(store: &KvStore, command: &Command) -> bool {
    let Command::Write(Write { session, op }) = command else {
        return false;
    };
    if let Some(session) = session
        && !store
            .sessions()
            .is_new_write(session.client_id, session.sequence)
    {
        return false;
    }
    let (key, value) = match op {
        WriteOp::Put { key, value, .. }
        | WriteOp::CompareAndSwap {
            key,
            action: CasAction::Put(value),
            ..
        } => (key, value),
        WriteOp::Delete { .. }
        | WriteOp::DeletePrefix { .. }
        | WriteOp::CompareAndSwap {
            action: CasAction::Delete,
            ..
        } => return false,
    };
    store
        .get(key)
        .is_none_or(|stored| value.len() > stored.value.len())
}

/// Looks at the quota every [`QUOTA_CHECK_INTERVAL`] so that the condition is logged when it
/// begins and when it clears, with or without traffic. Ends once the quota is dropped (the
/// server stopped).
pub async fn watch(quota: Weak<Quota>) {
    let mut interval = tokio::time::interval(QUOTA_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(quota) = quota.upgrade() else {
            return;
        };
        quota.observe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{Compare, KvConfig, Session};
    use serde_json::json;

    fn store_with(keys: &[(&'static str, &'static str)]) -> KvStore {
        let mut store = KvStore::new(KvConfig::default());
        for (i, (key, value)) in keys.iter().enumerate() {
            store
                .apply_command(i as u64 + 1, Command::put(*key, *value))
                .expect("put");
        }
        store
    }

    fn cas_put(key: &str, value: &str) -> Command {
        Command::compare_and_swap(
            key.to_string(),
            Compare::Version(1),
            CasAction::Put(value.to_string().into()),
        )
    }

    #[test]
    fn only_puts_of_new_keys_or_longer_values_grow_the_state() {
        // Given a store holding k = "1234"
        let store = store_with(&[("k", "1234")]);
        // Then a new key grows it, and so does a longer value, plain or in a compare-and-swap,
        assert!(would_grow(&store, &Command::put("new", "")));
        assert!(would_grow(&store, &Command::put("k", "12345")));
        assert!(would_grow(&store, &cas_put("k", "12345")));
        assert!(would_grow(&store, &cas_put("new", "x")));
        // while an equal or shorter value, deletes of every kind and the rest do not.
        assert!(!would_grow(&store, &Command::put("k", "abcd")));
        assert!(!would_grow(&store, &cas_put("k", "")));
        assert!(!would_grow(&store, &Command::delete("k")));
        assert!(!would_grow(&store, &Command::delete_prefix("k")));
        let cas_delete = Command::compare_and_swap("k", Compare::Version(1), CasAction::Delete);
        assert!(!would_grow(&store, &cas_delete));
        assert!(!would_grow(&store, &Command::RegisterSession));
        assert!(!would_grow(&store, &Command::Noop));
    }

    #[test]
    fn a_session_write_the_cache_answers_is_not_growth() {
        // Given a session (id 1) whose sequence 1 put k, after which k was deleted
        let mut store = KvStore::new(KvConfig::default());
        store
            .apply_command(1, Command::RegisterSession)
            .expect("register");
        let put = |sequence| {
            Command::put("k", "value").with_session(Session {
                client_id: 1,
                sequence,
            })
        };
        store.apply_command(2, put(1)).expect("put");
        store
            .apply_command(3, Command::delete("k"))
            .expect("delete");
        // Then a retry of sequence 1 is not growth (it gets its first answer, writes nothing),
        assert!(!would_grow(&store, &put(1)));
        // nor a write of an unknown session (refused as expired),
        let unknown = Command::put("k", "v").with_session(Session {
            client_id: 9,
            sequence: 1,
        });
        assert!(!would_grow(&store, &unknown));
        // but the session's next write is.
        assert!(would_grow(&store, &put(2)));
    }

    #[test]
    fn the_quota_is_exceeded_from_the_moment_the_size_reaches_it() {
        // Given a quota of 100 bytes over a published size
        let used = Arc::new(AtomicU64::new(99));
        let quota = Quota::new(100, Arc::clone(&used));
        assert!(!quota.observe().exceeded());
        // When the size reaches it, the condition holds, and clears once under it again.
        used.store(100, Ordering::Release);
        assert!(quota.observe().exceeded());
        assert!(quota.logged_exceeded.load(Ordering::Acquire));
        used.store(42, Ordering::Release);
        let state = quota.observe();
        assert_eq!(
            state.to_json(),
            json!({"used_bytes": 42, "quota_bytes": 100, "exceeded": false})
        );
        assert!(!quota.logged_exceeded.load(Ordering::Acquire));
    }

    #[test]
    fn a_write_that_grows_a_full_state_is_refused_and_others_are_not() {
        // Given a machine holding k = "1234" and a quota its size has reached
        let (mut machine, _book) = Machine::new(KvConfig::default(), raft::node::ClusterId(7));
        machine
            .kv
            .apply_command(1, Command::put("k", "1234"))
            .expect("put");
        let machine = Mutex::new(machine);
        let used = Arc::new(AtomicU64::new(1000));
        let quota = Quota::new(1000, Arc::clone(&used));
        // When a new key is written, it is refused with 507 quota_exceeded and the figures,
        let refused = quota
            .check_write(&machine, &Command::put("new", "v"), "n1")
            .expect_err("over the quota");
        assert_eq!(
            (refused.code.http_status(), refused.code),
            (507, ErrorCode::QuotaExceeded)
        );
        assert!(refused.message.contains("leader n1"), "{}", refused.message);
        assert_eq!(
            refused
                .extra
                .as_ref()
                .map(|(field, value)| (*field, value["exceeded"].clone())),
            Some(("quota", json!(true)))
        );
        // while a shorter overwrite and a delete go on,
        assert!(
            quota
                .check_write(&machine, &Command::put("k", "1"), "n1")
                .is_ok()
        );
        assert!(
            quota
                .check_write(&machine, &Command::delete("k"), "n1")
                .is_ok()
        );
        // and under the quota the new key is taken.
        used.store(999, Ordering::Release);
        assert!(
            quota
                .check_write(&machine, &Command::put("new", "v"), "n1")
                .is_ok()
        );
    }
}
