//! Rate-limited refusal log lines.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_refusal_is_logged_once_per_interval_per_peer_and_kind() {
    // Given a refusal of node 4 just logged,
    let log = RefusalLog::default();
    assert!(log.should_log(NodeId(4), "removed"));
    // when node 4 is refused again within the interval, then it is not logged again,
    tokio::time::advance(REFUSAL_LOG_INTERVAL - Duration::from_secs(1)).await;
    assert!(!log.should_log(NodeId(4), "removed"));
    // while another peer, or another kind of refusal, is;
    assert!(log.should_log(NodeId(5), "removed"));
    assert!(log.should_log(NodeId(4), "wrong_cluster"));
    // and once the interval has passed, node 4's refusal is logged again.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(log.should_log(NodeId(4), "removed"));
}

#[tokio::test(start_paused = true)]
async fn the_refusal_log_remembers_a_bounded_number_of_peers() {
    // Given refusals of as many distinct peers as the log remembers, just logged,
    let log = RefusalLog::default();
    for id in 0..REFUSAL_LOG_PEERS_MAX as u64 {
        assert!(log.should_log(NodeId(id), "wrong_cluster"));
    }
    // when yet another peer is refused, then it is neither logged nor remembered,
    let stranger = NodeId(u64::MAX);
    assert!(!log.should_log(stranger, "wrong_cluster"));
    assert_eq!(log.0.lock().unwrap().len(), REFUSAL_LOG_PEERS_MAX);
    // and once the others' lines are older than the interval, they make room for it.
    tokio::time::advance(REFUSAL_LOG_INTERVAL).await;
    assert!(log.should_log(stranger, "wrong_cluster"));
    assert_eq!(log.0.lock().unwrap().len(), 1);
}
