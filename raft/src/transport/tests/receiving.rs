//! The receiver and admission: whom node 2 serves or refuses, what reaches its node, and
//! the bounds on what callers may hold (connection slots, snapshot bytes in flight).

use super::*;

/// Drops what the node sends: these tests watch what reaches the node, not its answers.
struct Nowhere;

impl Transport for Nowhere {
    fn send(&self, _: Message) {}
}

/// A running node 2 in term 1 with the voters {1, 3}, whose latest configuration has
/// `also_learners` too. Node 2 is a learner itself, so it never campaigns: its term moves
/// only when a message moves it. The one place these tests build a node (the store's API
/// is the part most likely to change under them).
fn node2(also_learners: &[NodeId]) -> Node<()> {
    let mut learners: BTreeSet<NodeId> = also_learners.iter().copied().collect();
    learners.insert(NodeId(2));
    node2_of(Configuration {
        voters: [NodeId(1), NodeId(3)].into(),
        learners,
        ..Configuration::default()
    })
}

/// A running node 2 in term 1 whose configuration is `configuration`.
fn node2_of(configuration: Configuration) -> Node<()> {
    node2_with_files(configuration, Arc::new(NoFiles))
}

/// [`node2_of`] keeping its snapshots in `files`.
fn node2_with_files(configuration: Configuration, files: Arc<dyn SnapshotFiles>) -> Node<()> {
    let wal = Wal::open(SimFs::new(2), "/n2/wal", WalConfig::default()).expect("a fresh WAL");
    let store = crate::node::testing::store_in_term_1_with(wal, configuration, files.clone());
    let config = NodeConfig {
        raft: core::Config::new(NodeId(2)),
        tick: Duration::from_millis(10),
        snapshot_every: 0,
        snapshot_log_share: 0.25,
        events_per_ready_max: 16,
        batch_wait: Duration::ZERO,
    };
    crate::node::spawn(
        config,
        store,
        Arc::new(Nowhere),
        files,
        Arc::new(Mutex::new(Nothing)),
    )
    .expect("the node starts")
}

/// Node 2's transport, of `cluster`; it is only served, never sends.
fn node2_transport(cluster: ClusterId) -> Arc<PeerTransport<Duplexes>> {
    node2_transport_with(
        cluster,
        Arc::new(crate::node::MemSnapshotFiles::accepting_all()),
    )
}

/// [`node2_transport`] receiving snapshots into `files`.
fn node2_transport_with(
    cluster: ClusterId,
    files: Arc<dyn SnapshotFiles>,
) -> Arc<PeerTransport<Duplexes>> {
    let (unused, _) = mpsc::unbounded_channel();
    PeerTransport::new(NodeId(2), "n2".into(), cluster, Duplexes(unused), files).0
}

/// A message from `from` to node 2 in `term` (a leader's heartbeat).
fn heartbeat_from(from: NodeId, term: Term) -> Message {
    Message {
        from,
        to: NodeId(2),
        term,
        body: MessageBody::Heartbeat {
            leader_commit: LogIndex::ZERO,
            read_round: 0,
        },
    }
}

/// Calls node 2 as `from` of `cluster` and sends a heartbeat of term 5 behind the Hello.
/// Returns the caller's end of the connection and the task that serves the other end.
async fn call_node2(
    node: &Node<()>,
    transport: &Arc<PeerTransport<Duplexes>>,
    from: NodeId,
    cluster: ClusterId,
) -> (
    BufReader<DuplexStream>,
    tokio::task::JoinHandle<Result<(), frame::FrameError>>,
) {
    call_node2_at(node, transport, from, cluster, Term(5)).await
}

/// [`call_node2`] with a heartbeat of `term`.
async fn call_node2_at(
    node: &Node<()>,
    transport: &Arc<PeerTransport<Duplexes>>,
    from: NodeId,
    cluster: ClusterId,
    term: Term,
) -> (
    BufReader<DuplexStream>,
    tokio::task::JoinHandle<Result<(), frame::FrameError>>,
) {
    let message = Frame::Message(heartbeat_from(from, term));
    call_node2_with(node, transport, from, cluster, [message]).await
}

/// Calls node 2 as `from` of `cluster`: its Hello, then `frames`.
async fn call_node2_with(
    node: &Node<()>,
    transport: &Arc<PeerTransport<Duplexes>>,
    from: NodeId,
    cluster: ClusterId,
    frames: impl IntoIterator<Item = Frame>,
) -> (
    BufReader<DuplexStream>,
    tokio::task::JoinHandle<Result<(), frame::FrameError>>,
) {
    let (mut caller, theirs) = tokio::io::duplex(64 * 1024);
    let served = tokio::spawn(serve_connection(
        theirs,
        node.clone(),
        Arc::clone(transport),
    ));
    let hello = Frame::Hello {
        from,
        addr: format!("{from}"),
        cluster,
    };
    for f in std::iter::once(hello).chain(frames) {
        frame::write(&mut caller, &f).await.expect("written");
    }
    caller.flush().await.expect("flushed");
    (BufReader::new(caller), served)
}

/// The next frame the caller reads (`None`: the connection closed); fails the test if
/// nothing comes within a (virtual) 10 s.
async fn answer(caller: &mut BufReader<DuplexStream>) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(10), frame::read(caller))
        .await
        .expect("an answer in time")
        .expect("a well-formed frame")
}

/// Node 2's term once it has had (a virtual) second to take in anything it was handed.
async fn settled_term(node: &Node<()>) -> Term {
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.status().term
}

#[tokio::test(start_paused = true)]
async fn a_caller_of_another_cluster_is_refused_and_none_of_its_messages_reach_the_node() {
    // Given node 2 of cluster A in term 1,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    // when node 1 calls announcing cluster B, with a heartbeat of term 5 behind its Hello,
    let (mut caller, served) = call_node2(&node, &transport, NodeId(1), CLUSTER_B).await;
    // then its one answer is a refusal naming both clusters, and the connection closes,
    assert_eq!(
        answer(&mut caller).await,
        Some(Frame::Refused(Refusal::WrongCluster {
            expected: CLUSTER_A,
            got: CLUSTER_B,
        }))
    );
    assert_eq!(answer(&mut caller).await, None);
    let ended = served.await.expect("the server task ends");
    assert!(ended.is_ok(), "a refusal is a normal end: {ended:?}");
    // and the node never took the heartbeat (its term is still 1), nor learned the
    // caller's address.
    assert_eq!(settled_term(&node).await, Term(1));
    assert!(transport.peers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_removed_peer_is_refused_until_the_configuration_has_it_again() {
    // Given node 2 that knows node 4 was removed by the change at index 7, and whose
    // configuration does not have node 4,
    let removed = HashMap::from([(NodeId(4), LogIndex(7))]);
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    transport.set_removed(removed.clone());
    assert_eq!(transport.removed(), removed);
    // when node 4 calls (of the same cluster), then it is refused with the index of its
    // removal, and its heartbeat does not reach the node.
    let (mut caller, _served) = call_node2(&node, &transport, NodeId(4), CLUSTER_A).await;
    assert_eq!(
        answer(&mut caller).await,
        Some(Frame::Refused(Refusal::Removed { at: LogIndex(7) }))
    );
    assert_eq!(answer(&mut caller).await, None);
    assert_eq!(settled_term(&node).await, Term(1));

    // Given the same knowledge on a node whose latest configuration has node 4 again (it
    // was added back after its removal),
    let node = node2(&[NodeId(4)]);
    let transport = node2_transport(CLUSTER_A);
    transport.set_removed(removed);
    // when node 4 calls, then it is served: its bytes are acknowledged, and its heartbeat
    // moves the node to term 5.
    let (mut caller, _served) = call_node2(&node, &transport, NodeId(4), CLUSTER_A).await;
    assert!(
        matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
        "acknowledged, not refused"
    );
    assert_eq!(settled_term(&node).await, Term(5));
}

#[tokio::test(start_paused = true)]
async fn a_stranger_of_the_right_cluster_is_refused_as_not_a_member() {
    // Given node 2 (voters {1, 3}, learner 2) of cluster A, following leader 1 in term 5,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
    assert_eq!(settled_term(&node).await, Term(5));
    assert_eq!(node.status().leader, Some(NodeId(1)));
    // when node 12345, which no configuration names, calls with the right cluster id and
    // a heartbeat of term 5 behind its Hello,
    let (mut caller, served) = call_node2(&node, &transport, NodeId(12345), CLUSTER_A).await;
    // then it is refused as not a member, once the grace period has passed,
    let asked = tokio::time::Instant::now();
    assert_eq!(
        answer(&mut caller).await,
        Some(Frame::Refused(Refusal::NotMember))
    );
    assert!(asked.elapsed() >= MEMBERSHIP_GRACE);
    assert_eq!(answer(&mut caller).await, None);
    assert!(served.await.expect("the server task ends").is_ok());
    // and its heartbeat never reached the node (it still follows 1), nor was its address
    // learned.
    assert_eq!(settled_term(&node).await, Term(5));
    assert_eq!(node.status().leader, Some(NodeId(1)));
    assert!(!transport.peers().iter().any(|(id, _)| *id == NodeId(12345)));
}

#[tokio::test(start_paused = true)]
async fn a_node_that_knows_no_leader_serves_a_caller_its_configuration_lacks() {
    // Given node 2 that follows no leader, and whose configuration does not have node 5
    // (node 5 joined and came to lead while node 2 was away: node 2's log is behind),
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    assert_eq!(node.status().leader, None);
    // when node 5 calls with its heartbeat, then it is served: only it can bring node 2's
    // log, and with it the configuration, up to date.
    let (mut caller, _served) = call_node2(&node, &transport, NodeId(5), CLUSTER_A).await;
    assert!(
        matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
        "acknowledged, not refused"
    );
    assert_eq!(settled_term(&node).await, Term(5));
    assert_eq!(node.status().leader, Some(NodeId(5)));
}

#[tokio::test(start_paused = true)]
async fn a_fake_leader_far_ahead_is_not_followed_by_a_node_that_knows_no_leader() {
    // Given node 2 in term 1 that follows no leader (it just started),
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    assert_eq!((node.status().term, node.status().leader), (Term(1), None));
    // when node 12345, which no configuration names, calls with the right cluster id and
    // a heartbeat 5,000 terms ahead (within the bound for members),
    let forged = Term(1 + 5_000);
    let (mut stranger, _served) =
        call_node2_at(&node, &transport, NodeId(12345), CLUSTER_A, forged).await;
    // then it is served (it might have been a real leader this node does not know yet),
    assert!(
        matches!(answer(&mut stranger).await, Some(Frame::Ack { .. })),
        "acknowledged, not refused"
    );
    // but its heartbeat is refused: the node keeps its term and follows no one.
    assert_eq!(settled_term(&node).await, Term(1));
    assert_eq!(node.status().leader, None);

    // Given then that node 2 follows member 1 in term 5,
    let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
    assert_eq!(settled_term(&node).await, Term(5));
    // when the stranger, still connected, sends a heartbeat one term ahead,
    let next = Frame::Message(heartbeat_from(NodeId(12345), Term(6)));
    frame::write(stranger.get_mut(), &next)
        .await
        .expect("written");
    stranger.get_mut().flush().await.expect("flushed");
    // then that too is refused: a node that follows a leader is moved on only by members.
    assert_eq!(settled_term(&node).await, Term(5));
    assert_eq!(node.status().leader, Some(NodeId(1)));
}

#[tokio::test(start_paused = true)]
async fn a_node_with_no_configuration_follows_a_leader_far_ahead() {
    // Given node 2 in term 1 whose configuration is empty: a joiner restarted before its
    // log arrived, which no longer knows whom it expected,
    let node = node2_of(Configuration::default());
    let transport = node2_transport(CLUSTER_A);
    // when the leader of a long-lived cluster calls, 5,000 terms ahead,
    let far = Term(1 + 5_000);
    let (mut leader, _served) = call_node2_at(&node, &transport, NodeId(5), CLUSTER_A, far).await;
    // then it is followed: only that leader can bring the node in.
    assert!(matches!(answer(&mut leader).await, Some(Frame::Ack { .. })));
    assert_eq!(settled_term(&node).await, far);
    assert_eq!(node.status().leader, Some(NodeId(5)));
}

#[tokio::test(start_paused = true)]
async fn a_node_with_no_configuration_that_follows_an_old_leader_still_serves_the_new_one() {
    // Given node 2 whose configuration is empty (a learner whose log has not arrived), that
    // follows node 5, the leader that added it before losing office,
    let node = node2_of(Configuration::default());
    let transport = node2_transport(CLUSTER_A);
    let (_old, _served) = call_node2_at(&node, &transport, NodeId(5), CLUSTER_A, Term(7)).await;
    assert_eq!(settled_term(&node).await, Term(7));
    assert_eq!(node.status().leader, Some(NodeId(5)));
    // when node 6, which leads now, calls in a later term,
    let asked = tokio::time::Instant::now();
    let (mut new, _served) = call_node2_at(&node, &transport, NodeId(6), CLUSTER_A, Term(9)).await;
    // then it is served at once and followed: only it can bring the node's log.
    assert!(matches!(answer(&mut new).await, Some(Frame::Ack { .. })));
    assert!(asked.elapsed() < MEMBERSHIP_GRACE, "no grace period waited");
    assert_eq!(settled_term(&node).await, Term(9));
    assert_eq!(node.status().leader, Some(NodeId(6)));
}

#[tokio::test(start_paused = true)]
async fn an_expected_joiner_is_served_before_the_configuration_names_it() {
    // Given node 2 following leader 1, that expects node 7 (it was told of it, as a
    // joiner is told of the members), though its configuration does not have it,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let (_leader, _served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
    assert_eq!(settled_term(&node).await, Term(5));
    transport.expect_peers([NodeId(7)]);
    // when node 7 calls, then it is served at once: its bytes are acknowledged.
    let asked = tokio::time::Instant::now();
    let (mut caller, _served) = call_node2(&node, &transport, NodeId(7), CLUSTER_A).await;
    assert!(
        matches!(answer(&mut caller).await, Some(Frame::Ack { .. })),
        "acknowledged, not refused"
    );
    assert!(asked.elapsed() < MEMBERSHIP_GRACE, "no grace period waited");
}

#[tokio::test(start_paused = true)]
async fn a_message_naming_another_sender_than_the_hello_closes_the_connection() {
    // Given node 2, and member 1 connected to it,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let (mut caller, served) = call_node2(&node, &transport, NodeId(1), CLUSTER_A).await;
    assert_eq!(settled_term(&node).await, Term(5));
    // when a message on that connection claims to come from member 3 at a higher term,
    let spoofed = Frame::Message(heartbeat_from(NodeId(3), Term(9)));
    frame::write(caller.get_mut(), &spoofed)
        .await
        .expect("written");
    caller.get_mut().flush().await.expect("flushed");
    // then the connection is closed as a protocol error, and the message is not taken.
    let ended = tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("the connection ends")
        .expect("the server task ends");
    assert!(ended.is_err(), "{ended:?}");
    assert_eq!(settled_term(&node).await, Term(5));
}

#[tokio::test(start_paused = true)]
async fn a_refused_opener_reports_it_and_asks_again_only_after_the_longest_backoff() {
    // Given node 1 of cluster B, whose peer 2 is a node of cluster A,
    let (opener, mut connects, mut reports) = node1_of_cluster_to_2(CLUSTER_B);
    let node = node2(&[]);
    let acceptor = node2_transport(CLUSTER_A);
    // when node 1 sends a message,
    opener.send(heartbeat(1));
    let (_, far) = next_connect(&mut connects).await;
    tokio::spawn(serve_connection(far, node.clone(), Arc::clone(&acceptor)));
    // then its server hears that peer 2 refused it, and why,
    let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("a report in time");
    assert_eq!(
        report,
        Some(TransportReport::Refused {
            by: NodeId(2),
            refusal: Refusal::WrongCluster {
                expected: CLUSTER_A,
                got: CLUSTER_B,
            },
        })
    );
    // and when the next message is due, it connects again (the peer may have been
    // fixed), but only after the longest backoff: a refusal is no passing failure.
    let due = tokio::time::Instant::now();
    opener.send(heartbeat(2));
    let (at, _far) = next_connect(&mut connects).await;
    assert!(
        at - due >= RECONNECT_BACKOFF_MAX,
        "reconnected after {:?}",
        at - due
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_sends_no_hello_is_closed_after_the_hello_timeout() {
    // Given node 2, when a caller connects and sends nothing,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let (mut caller, theirs) = tokio::io::duplex(64 * 1024);
    let connected = tokio::time::Instant::now();
    let served = tokio::spawn(serve_connection(theirs, node.clone(), transport));
    // then the connection is closed once the Hello timeout has passed, as a timeout.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(HELLO_TIMEOUT * 2, caller.read(&mut byte))
        .await
        .expect("closed in time");
    assert_eq!(read.expect("a clean close"), 0);
    assert!(connected.elapsed() >= HELLO_TIMEOUT);
    let ended = served.await.expect("the server task ends");
    assert!(
        matches!(&ended, Err(frame::FrameError::Io(e)) if e.kind() == io::ErrorKind::TimedOut),
        "{ended:?}"
    );
}

/// Calls node 2 as `from` (of its cluster) and announces a snapshot of `data_bytes`
/// bytes, of which it sends one chunk. Returns the caller's end and the serving task.
async fn begin_snapshot(
    node: &Node<()>,
    transport: &Arc<PeerTransport<Duplexes>>,
    from: NodeId,
    data_bytes: u64,
) -> (
    BufReader<DuplexStream>,
    tokio::task::JoinHandle<Result<(), frame::FrameError>>,
) {
    let begin = Frame::SnapshotBegin {
        message: Message {
            from,
            to: NodeId(2),
            term: Term(5),
            body: MessageBody::InstallSnapshot {
                snapshot: core::Snapshot::default(),
            },
        },
        data_bytes,
    };
    let chunk = Frame::SnapshotChunk(Bytes::from_static(b"the first bytes"));
    call_node2_with(node, transport, from, CLUSTER_A, [begin, chunk]).await
}

/// Bytes of snapshot data node 2's transport holds reserved now.
fn reserved(transport: &PeerTransport<Duplexes>) -> u64 {
    *transport.snapshot_bytes.lock().expect(PEERS_LOCK)
}

/// Node 2 (a learner of voters 1 and 3), its snapshot files, which refuse data of four
/// bytes or fewer, and its transport over them.
fn node2_with_picky_files() -> (
    Node<()>,
    Arc<crate::node::MemSnapshotFiles>,
    Arc<PeerTransport<Duplexes>>,
) {
    let files = Arc::new(crate::node::MemSnapshotFiles::new(|metadata, data| {
        if data.len() > 4 {
            Ok(())
        } else {
            Err(crate::node::SnapshotFilesError::damaged(
                metadata.index,
                "too short to be a snapshot",
            ))
        }
    }));
    let configuration = Configuration {
        voters: [NodeId(1), NodeId(3)].into(),
        learners: [NodeId(2)].into(),
        ..Configuration::default()
    };
    let node = node2_with_files(configuration, files.clone());
    let transport = node2_transport_with(CLUSTER_A, files.clone());
    (node, files, transport)
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_received_with_a_heartbeat_between_its_chunks_is_checked_then_installed() {
    // Given node 2 (a learner of voters 1 and 3) receiving into files that check data,
    let (node, files, transport) = node2_with_picky_files();
    // when member 1 streams the snapshot at 7 in two chunks with a heartbeat between them,
    let data = snapshot_data(64);
    let frames = [
        Frame::SnapshotBegin {
            message: install_snapshot(7),
            data_bytes: data.len() as u64,
        },
        Frame::SnapshotChunk(data.slice(..20)),
        Frame::Message(heartbeat(1)),
        Frame::SnapshotChunk(data.slice(20..)),
        Frame::SnapshotEnd,
    ];
    let (_caller, _served) = call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // then the heartbeat reached the node during the stream (it follows member 1), and
    // the snapshot, checked whole, was installed and kept byte for byte.
    let status = node.status();
    assert_eq!(status.leader, Some(NodeId(1)));
    assert_eq!(status.snapshot.index, LogIndex(7));
    assert_eq!(files.data(LogIndex(7)), Some(data));
}

#[tokio::test(start_paused = true)]
async fn a_received_snapshot_that_fails_its_check_never_reaches_the_node() {
    // Given node 2 receiving into files that refuse short data,
    let (node, files, transport) = node2_with_picky_files();
    // when member 1 streams a snapshot at 7 whose data fails the check,
    let frames = [
        Frame::SnapshotBegin {
            message: install_snapshot(7),
            data_bytes: 3,
        },
        Frame::SnapshotChunk(Bytes::from_static(b"bad")),
        Frame::SnapshotEnd,
    ];
    let (mut caller, served) =
        call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
    // then the connection is closed, the node never took the snapshot, and nothing is kept.
    while answer(&mut caller).await.is_some() {}
    assert!(served.await.expect("ends").is_ok());
    assert_eq!(node.status().snapshot.index, LogIndex::ZERO);
    assert_eq!(files.data(LogIndex(7)), None);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_this_node_refuses_does_not_count_as_losing_its_leader() {
    // Given node 2 following member 1 (a heartbeat of term 5 on member 1's connection),
    let node = node2(&[]);
    let transport = node2_transport_with(CLUSTER_A, Arc::new(crate::node::testing::NoFiles));
    // when member 1 then starts a snapshot that node 2 cannot take (its files refuse
    // every snapshot), so that node 2 hangs up,
    let frames = [
        Frame::Message(heartbeat_from(NodeId(1), Term(5))),
        Frame::SnapshotBegin {
            message: install_snapshot(7),
            data_bytes: 3,
        },
    ];
    let (mut caller, served) =
        call_node2_with(&node, &transport, NodeId(1), CLUSTER_A, frames).await;
    while answer(&mut caller).await.is_some() {}
    assert!(served.await.expect("ends").is_ok());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // then node 2 still follows member 1: a leader it hung up on is not a lost leader,
    // and it does not campaign early.
    let status = node.status();
    assert_eq!((status.term, status.leader), (Term(5), Some(NodeId(1))));
}

#[tokio::test(start_paused = true)]
async fn snapshot_streams_share_one_budget_and_a_stalled_one_gives_its_share_back() {
    // Given node 2, receiving from member 1 a snapshot stream that claims the whole
    // budget and has sent its first chunk,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let (_first, first_served) =
        begin_snapshot(&node, &transport, NodeId(1), SNAPSHOT_BYTES_IN_FLIGHT_MAX).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reserved(&transport), SNAPSHOT_BYTES_IN_FLIGHT_MAX);
    // when member 3 starts a small snapshot stream on another connection,
    let (_second, second_served) = begin_snapshot(&node, &transport, NodeId(3), 1024).await;
    // then that stream is refused: its connection ends at once, holding nothing,
    let ended = tokio::time::timeout(Duration::from_secs(1), second_served)
        .await
        .expect("refused at once")
        .expect("the server task ends");
    assert!(ended.is_ok(), "a refusal is a normal end: {ended:?}");
    assert_eq!(reserved(&transport), SNAPSHOT_BYTES_IN_FLIGHT_MAX);
    // and when the first stream sends nothing more, its connection is closed once the
    // chunk timeout has passed, and its share of the budget is given back,
    let ended = tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT * 2, first_served)
        .await
        .expect("closed in time")
        .expect("the server task ends");
    assert!(
        matches!(&ended, Err(frame::FrameError::Io(e)) if e.kind() == io::ErrorKind::TimedOut),
        "{ended:?}"
    );
    assert_eq!(reserved(&transport), 0);
    // so that member 3's stream, tried again, is taken.
    let (_again, again_served) = begin_snapshot(&node, &transport, NodeId(3), 1024).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(reserved(&transport), 1024);
    assert!(!again_served.is_finished());
}

/// Opens a TCP connection to `addr` as member 1 and sends its Hello and a heartbeat.
async fn tcp_call(addr: std::net::SocketAddr) -> BufReader<tokio::net::TcpStream> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connected");
    let hello = Frame::Hello {
        from: NodeId(1),
        addr: "n1".into(),
        cluster: CLUSTER_A,
    };
    frame::write(&mut stream, &hello).await.expect("written");
    let message = Frame::Message(heartbeat_from(NodeId(1), Term(5)));
    frame::write(&mut stream, &message).await.expect("written");
    BufReader::new(stream)
}

/// The next frame on a TCP connection; `None` when it closed (cleanly or by a reset).
async fn tcp_answer(caller: &mut BufReader<tokio::net::TcpStream>) -> Option<Frame> {
    tokio::time::timeout(Duration::from_secs(20), frame::read(caller))
        .await
        .expect("an answer in time")
        .ok()
        .flatten()
}

#[tokio::test]
async fn inbound_connections_over_the_cap_are_closed_at_once_until_a_slot_frees() {
    // Given node 2 serving its peer port, with as many connections open and served as it
    // serves at once,
    let node = node2(&[]);
    let transport = node2_transport(CLUSTER_A);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(serve_peers(listener, node.clone(), transport));
    let mut served = Vec::new();
    for _ in 0..PEER_CONNECTIONS_MAX {
        served.push(tcp_call(addr).await);
    }
    for caller in &mut served {
        assert!(matches!(tcp_answer(caller).await, Some(Frame::Ack { .. })));
    }
    // when one more connects, then it is closed without an answer (long before any
    // timeout could have closed it: the others are all still served),
    let mut over = tcp_call(addr).await;
    assert_eq!(tcp_answer(&mut over).await, None);
    // and once one of the served connections ends, a new one is served again.
    drop(served.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut again = tcp_call(addr).await;
        if matches!(tcp_answer(&mut again).await, Some(Frame::Ack { .. })) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
