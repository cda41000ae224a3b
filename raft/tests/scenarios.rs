//! Scenario tests on the pure core, written to read like the Raft paper: each test sets a
//! scene (given), does one thing (when), and checks what the paper says must follow (then).
//! Every step of every scenario also runs the harness's safety checker.

mod harness;

use harness::Cluster;
use raft::core::{LogIndex, NodeId, Role};

#[test]
fn smoke_a_three_node_cluster_elects_a_leader_and_commits() {
    let mut c = Cluster::new(3, 0);
    assert!(c.elect(1));
    c.propose(1, "x").unwrap();
    c.stabilize();
    for id in 1..=3 {
        assert_eq!(c.applied_data(id), vec!["x".to_string()], "n{id}");
    }
    assert_eq!(c.raft(2).leader(), Some(NodeId(1)));
    assert_eq!(c.raft(1).role(), Role::Leader);
    assert!(c.raft(1).committed() >= LogIndex(3));
}
