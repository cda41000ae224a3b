//! Acknowledgements: a stalled stream fails its writer, a slow one that moves does not.

use super::*;

#[tokio::test]
async fn a_stream_whose_reader_stopped_fails_the_writer_after_the_ack_timeout() {
    // Given a connection whose other end never reads (so never acknowledges), when the
    // sender keeps writing, then a write fails with TimedOut once the socket is full and
    // ACK_TIMEOUT has passed, instead of blocking forever.
    let (ours, _theirs) = tokio::io::duplex(1024);
    let mut w = Watched::new(ours, Arc::new(AckState::default()), None);
    let started = tokio::time::Instant::now();
    let chunk = [7u8; 256];
    let error = loop {
        if let Err(e) = w.write_all(&chunk).await {
            break e;
        }
    };
    assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    assert!(started.elapsed() >= ACK_TIMEOUT);
}

#[tokio::test]
async fn acknowledged_bytes_keep_a_slow_stream_alive() {
    // Given a reader that drains slowly but acknowledges what it read, when the sender
    // writes far more than the socket holds, then every write eventually succeeds.
    let (ours, theirs) = tokio::io::duplex(1024);
    let acks = Arc::new(AckState::default());
    let read = Arc::new(AtomicU64::new(0));
    let reader_acks = Arc::clone(&acks);
    let reader_read = Arc::clone(&read);
    let reader = tokio::spawn(async move {
        let mut r = Counted {
            inner: theirs,
            read: reader_read,
            traffic: None,
        };
        let mut buf = [0u8; 512];
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => reader_acks
                    .bytes
                    .store(r.read.load(Ordering::Acquire), Ordering::Release),
            }
        }
    });
    let mut w = Watched::new(ours, acks, None);
    w.write_all(&[1u8; 16 * 1024])
        .await
        .expect("acknowledged progress");
    drop(w);
    reader.await.expect("the reader ends with the stream");
    assert_eq!(read.load(Ordering::Acquire), 16 * 1024);
}
