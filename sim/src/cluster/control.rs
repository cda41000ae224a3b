//! The controller: carries out the faults that are requests to the cluster (membership
//! changes, leadership transfers, forced snapshots) through the current leader, one at a time,
//! as an operator would, while the harness keeps injecting network and host faults.
//!
//! A request that fails (no leader, a change already in flight, a timeout) is dropped: the
//! schedule says what was attempted, the trace says what happened. A join is the exception: a
//! joining server keeps asking until it is added, so each join runs on its own task and retries
//! (see [`join`]).

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
/// The pause between two attempts of one join. A server waits 200 ms at first
/// (`api::server::join::JOIN_RETRY_MIN`); the simulated nodes' clock runs faster (elections in
/// 100–200 ms), so the joins here retry faster too.
pub const JOIN_RETRY: Duration = Duration::from_millis(50);
/// How long a join keeps asking before the harness gives up on it. A server asks for ever;
/// a run is bounded, and a join still refused after this long shows in the trace.
pub const JOIN_WAIT_MAX: Duration = Duration::from_secs(3);

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
        if let Fault::Join { host } = request {
            tokio::spawn(join(Arc::clone(&cluster), host));
            continue;
        }
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

/// Adds host `host` as its server would join: asks the current leader to run the server's
/// `add_learner` with the host's address record, again every [`JOIN_RETRY`] while there is no
/// leader or the leader refuses (a change in flight, leadership lost), for at most
/// [`JOIN_WAIT_MAX`]. The outcome goes to the trace.
pub async fn join(cluster: Arc<Cluster>, host: usize) {
    let member = cluster.member_info(host);
    let started = tokio::time::Instant::now();
    let mut attempts = 0u32;
    let result = loop {
        attempts += 1;
        let attempt = async {
            let leader = cluster.leader().ok_or_else(|| "no leader".to_string())?;
            let live = cluster
                .live(leader)
                .ok_or_else(|| "leader down".to_string())?;
            replica::duties::add_learner(&live.node, member.clone())
                .await
                .map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err("timed out".to_string()),
        };
        if result.is_ok() || started.elapsed() >= JOIN_WAIT_MAX {
            break result;
        }
        tokio::time::sleep(JOIN_RETRY).await;
    };
    cluster
        .monitor
        .trace(&("join", host, attempts, format!("{result:?}")));
}
