//! The sender: snapshots streamed from their files, reconnects and their backoff.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_snapshot_streams_from_its_file_with_heartbeats_between_its_chunks() {
    // Given node 1, whose snapshot files keep a snapshot of two and a half chunks at
    // index 7,
    let files = Arc::new(crate::node::MemSnapshotFiles::accepting_all());
    let data = snapshot_data(SNAPSHOT_CHUNK_BYTES * 5 / 2);
    let MessageBody::InstallSnapshot { snapshot } = install_snapshot(7).body else {
        unreachable!("built as an InstallSnapshot")
    };
    files.insert(&snapshot.metadata, data.clone());
    let (transport, mut connects, mut reports) = node1_with_files_to_2(CLUSTER_A, files);
    // when the node sends peer 2 that snapshot and then a heartbeat,
    transport.send(install_snapshot(7));
    transport.send(heartbeat(1));
    let (_, far) = next_connect(&mut connects).await;
    let mut far = BufReader::new(far);
    // then the peer reads the snapshot's announced length, its chunks with the heartbeat
    // between the first two (not after the whole snapshot), and its end,
    let mut frames = Vec::new();
    loop {
        let f = frame::read(&mut far).await.expect("a frame").expect("open");
        let end = matches!(f, Frame::SnapshotEnd);
        frames.push(f);
        if end {
            break;
        }
    }
    assert!(matches!(frames[0], Frame::Hello { .. }));
    assert!(
        matches!(&frames[1], Frame::SnapshotBegin { data_bytes, .. } if *data_bytes == data.len() as u64)
    );
    assert!(matches!(frames[2], Frame::SnapshotChunk(_)));
    assert_eq!(frames[3], Frame::Message(heartbeat(1)));
    let received: Vec<u8> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::SnapshotChunk(chunk) => Some(chunk.to_vec()),
            _ => None,
        })
        .flatten()
        .collect();
    // the data is the file's, byte for byte,
    assert_eq!(received, data.to_vec());
    // and the node hears that the snapshot was delivered.
    let report = tokio::time::timeout(Duration::from_secs(1), reports.recv())
        .await
        .expect("reported")
        .expect("open");
    assert_eq!(
        report,
        TransportReport::Snapshot(SnapshotReport {
            to: NodeId(2),
            delivered: true
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_whose_file_is_gone_is_reported_undelivered_and_the_connection_lives() {
    // Given node 1, whose snapshot files hold nothing at index 9,
    let files = Arc::new(crate::node::MemSnapshotFiles::accepting_all());
    let (transport, mut connects, mut reports) = node1_with_files_to_2(CLUSTER_A, files);
    // when the node sends peer 2 the snapshot at 9, then a heartbeat,
    transport.send(install_snapshot(9));
    transport.send(heartbeat(1));
    // then the snapshot is reported undelivered (the leader will try again),
    let report = tokio::time::timeout(Duration::from_secs(10), reports.recv())
        .await
        .expect("reported")
        .expect("open");
    assert_eq!(
        report,
        TransportReport::Snapshot(SnapshotReport {
            to: NodeId(2),
            delivered: false
        })
    );
    // and the heartbeat still goes out on the connection, nothing announced before it.
    let (_, far) = next_connect(&mut connects).await;
    let mut far = BufReader::new(far);
    assert_eq!(first_message(&mut far).await, heartbeat(1));
}

#[tokio::test(start_paused = true)]
async fn a_long_lived_connection_the_peer_closed_is_replaced_at_once_and_loses_nothing() {
    // Given a connection to peer 2 that has lived two seconds, when the peer closes it (it
    // restarted) and a message is due, then a new connection opens without a backoff
    // delay, and the message arrives on it (it was not written into the dead one).
    let (delay, arrived) = reconnect_after_peer_closed(2 * STABLE_CONNECTION).await;
    assert!(delay < RECONNECT_BACKOFF_MIN, "reconnected after {delay:?}");
    assert_eq!(arrived, heartbeat(2));
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_closing_new_connections_is_retried_ever_more_slowly() {
    // Given a peer that closes every connection soon after it opens, when a message is
    // due after each close, then the sender waits the backoff before each reconnect, and
    // the wait doubles (a flapping peer is not hammered), and every message still arrives.
    let (transport, mut connects) = node1_to_2();
    transport.send(heartbeat(0));
    let (_, far) = next_connect(&mut connects).await;
    let mut far = BufReader::new(far);
    assert_eq!(first_message(&mut far).await, heartbeat(0));
    let mut delays = Vec::new();
    for round in 1..=3 {
        drop(far);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let due = tokio::time::Instant::now();
        transport.send(heartbeat(round));
        let (at, next) = next_connect(&mut connects).await;
        far = BufReader::new(next);
        assert_eq!(first_message(&mut far).await, heartbeat(round));
        delays.push(at - due);
    }
    let floors = [1, 2, 4].map(|k| RECONNECT_BACKOFF_MIN * k);
    assert!(
        delays.iter().zip(floors).all(|(d, floor)| *d >= floor),
        "delays {delays:?}, expected at least {floors:?}"
    );
}
