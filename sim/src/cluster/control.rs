//! The controller: carries out the faults that are requests to the cluster (membership
//! changes, leadership transfers, forced snapshots) through the current leader, one at a time,
//! as an operator would, while the harness keeps injecting network and host faults.
//!
//! A request that fails (no leader, a change already in flight, a timeout) is dropped: the
//! schedule says what was attempted, the trace says what happened.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::core::{ConfChange, ConfChangeKind};

use super::faults::Fault;
use super::host::Cluster;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the controller looks for new requests.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Requests waiting for the controller.
#[derive(Default)]
pub struct Requests {
    queue: Mutex<VecDeque<Fault>>,
}

const QUEUE_LOCK: &str = "the request queue lock is never held across a panic";

impl Requests {
    /// Queues a request.
    pub fn push(&self, fault: Fault) {
        self.queue.lock().expect(QUEUE_LOCK).push_back(fault);
    }

    fn pop(&self) -> Option<Fault> {
        self.queue.lock().expect(QUEUE_LOCK).pop_front()
    }
}

/// Runs requests until `stop` is set and the queue is empty.
pub async fn controller(
    cluster: Arc<Cluster>,
    requests: Arc<Requests>,
    stop: Arc<AtomicBool>,
) -> turmoil::Result {
    loop {
        let Some(request) = requests.pop() else {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, carry_out(&cluster, &request)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        };
        cluster
            .monitor
            .trace(&("request", format!("{request:?}"), format!("{result:?}")));
    }
}

async fn carry_out(cluster: &Cluster, request: &Fault) -> Result<(), String> {
    if let Fault::Snapshot { host } = request {
        let live = cluster.live(*host).ok_or("host down")?;
        return live
            .node
            .snapshot_now()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let leader = cluster.leader().ok_or("no leader")?;
    let live = cluster.live(leader).ok_or("leader down")?;
    let configuration = live.node.status().configuration;
    let (kind, host) = match *request {
        Fault::AddLearner { host } => (ConfChangeKind::AddLearner, host),
        Fault::Promote { host } => (ConfChangeKind::AddVoter, host),
        Fault::Remove { host } => (ConfChangeKind::RemoveNode, host),
        Fault::RemoveLeader => (ConfChangeKind::RemoveNode, leader),
        Fault::Transfer { host } => {
            return live
                .node
                .transfer_leader(cluster.hosts[host].id)
                .await
                .map_err(|e| e.to_string());
        }
        _ => return Err(format!("not a request: {request:?}")),
    };
    let id = cluster.hosts[host].id;
    if kind == ConfChangeKind::RemoveNode {
        let voters_left = configuration.voters.iter().filter(|v| **v != id).count();
        if voters_left == 0 {
            return Err("would remove the last voter".into());
        }
    }
    live.node
        .change_membership(ConfChange::single(kind, id))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
