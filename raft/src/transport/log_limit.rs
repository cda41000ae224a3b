//! Rate limits for the transport's log lines. Callers of the peer port are untrusted and may
//! retry every second, so every line they can cause is limited: per (peer, kind of refusal)
//! with [`RefusalLog`], whose table is bounded by [`REFUSAL_LOG_PEERS_MAX`], or per kind of
//! line with [`rate_limited`], which counts the lines left out so that the next one says how
//! many there were.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::core::NodeId;

use super::{PEERS_LOCK, REFUSAL_LOG_INTERVAL, REFUSAL_LOG_PEERS_MAX};

/// When each (peer, kind of refusal) was last logged, so that a refused peer that reconnects
/// every second is logged once per [`REFUSAL_LOG_INTERVAL`], not every time.
/// The node's loop uses it too, for the messages its core refuses (see `node::driver`).
#[derive(Default)]
pub(crate) struct RefusalLog(
    pub(super) Mutex<HashMap<(NodeId, &'static str), tokio::time::Instant>>,
);

impl RefusalLog {
    /// Whether a refusal of `kind` to or from `peer` is to be logged now; if so, notes that it
    /// was.
    pub(crate) fn should_log(&self, peer: NodeId, kind: &'static str) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.0.lock().expect(PEERS_LOCK);
        let recent = |at: &tokio::time::Instant| now.duration_since(*at) < REFUSAL_LOG_INTERVAL;
        match last.get(&(peer, kind)) {
            Some(at) if recent(at) => return false,
            Some(_) => {}
            None if last.len() >= REFUSAL_LOG_PEERS_MAX => {
                last.retain(|_, at| recent(at));
                if last.len() >= REFUSAL_LOG_PEERS_MAX {
                    return false;
                }
            }
            None => {}
        }
        last.insert((peer, kind), now);
        true
    }
}

/// Whether a line of a kind limited to one per `interval` may be logged now: if so, returns
/// how many were left out since the last one and notes the time; if not, counts one more left
/// out. `state` is (when last logged, how many left out since).
pub(super) fn rate_limited(
    state: &Mutex<(Option<tokio::time::Instant>, u64)>,
    interval: Duration,
) -> Option<u64> {
    let now = tokio::time::Instant::now();
    let mut state = state.lock().expect(PEERS_LOCK);
    let (last, skipped) = &mut *state;
    if last.is_some_and(|at| now.duration_since(at) < interval) {
        *skipped += 1;
        return None;
    }
    *last = Some(now);
    Some(std::mem::take(skipped))
}
