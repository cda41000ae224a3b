//! One simulated node's disk: the WAL's crashable [`SimFs`] and the snapshot files.
//!
//! The disk outlives the host's software: a crash kills the node's tasks and then crashes the
//! `SimFs` (unsynced writes are lost, the last may be torn); a restart opens the same disk.
//! Snapshot files are kept in memory beside it and survive every crash, because the real
//! snapshot store returns only after fsync, rename and directory fsync, so a saved snapshot is
//! durable by contract. A snapshot being received when the host crashes is lost with the
//! host's tasks, as a real store's temporary file is never renamed into place.
//!
//! The snapshot files count what they do ([`SnapshotActivity`]), so that a scenario can tell
//! that snapshots were sent at all, and the harness can crash a host in the middle of
//! receiving one. Counting takes no task and draws no randomness: a seed's trace is the same
//! with or without anyone looking.

use std::io::Read;
use std::sync::{Arc, Mutex};

use raft::core::SnapshotMetadata;
use raft::node::{
    MemSnapshotFiles, Offload, SnapshotFiles, SnapshotFilesError, SnapshotSink, SnapshotView,
};
use replica::machine::check_snapshot_data;
use wal::SimFs;

/// The WAL directory on every simulated disk.
pub const WAL_DIR: &str = "/data/wal";

/// A simulated node's durable storage.
pub struct Disk {
    /// The WAL's file system.
    pub fs: SimFs,
    /// The snapshot files.
    pub snapshots: Arc<MemSnapshots>,
}

impl Disk {
    /// An empty disk whose crashes are decided by `seed`.
    pub fn new(seed: u64) -> Disk {
        Disk {
            fs: SimFs::new(seed),
            snapshots: Arc::new(mem_snapshots()),
        }
    }
}

/// What one disk's snapshot files did since the run began (across the host's restarts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotActivity {
    /// The node's own snapshots written.
    pub written: u64,
    /// Snapshots a peer began to stream here.
    pub streams_begun: u64,
    /// Chunks received, over all streams.
    pub chunks_received: u64,
    /// Streams received whole and checked.
    pub streams_received: u64,
    /// Streams that ended before their last byte (the connection closed, the host crashed,
    /// the data was refused).
    pub streams_abandoned: u64,
    /// Received snapshots kept as the node's latest (the log store persisted them).
    pub kept_received: u64,
    /// The largest snapshot received whole, in bytes.
    pub largest_received_bytes: u64,
    /// Streams open now, and the chunks they have received so far.
    pub open_streams: u64,
    /// See [`SnapshotActivity::open_streams`].
    pub open_chunks: u64,
    /// The harness waits for a stream to be part-way received here, to crash the host
    /// ([`MemSnapshots::arm_crash_mid_stream`]).
    pub crash_mid_stream_armed: bool,
    /// A stream stopped part-way for the armed crash: the chunks it had received. The harness
    /// crashes the host at the end of the step.
    pub crash_due: Option<u64>,
}

const ACTIVITY_LOCK: &str = "the snapshot activity lock is never held across a panic";

/// Snapshot files in memory, checked like the real ones before they are kept (the data must
/// be a whole snapshot of the state machine, at the index its metadata says), and counted.
pub struct MemSnapshots {
    files: MemSnapshotFiles,
    activity: Arc<Mutex<SnapshotActivity>>,
}

impl MemSnapshots {
    /// What these files did so far.
    pub fn activity(&self) -> SnapshotActivity {
        *self.activity.lock().expect(ACTIVITY_LOCK)
    }

    /// Arms (or disarms) a crash in the middle of the next stream received here. Within one
    /// simulated step a node receives every chunk that has arrived, and turmoil delivers a
    /// stream's chunks in the same step, so a crash between steps would never find one
    /// part-way. Armed, the next stream's first chunk is taken and the rest refused, as a
    /// node that died there would: the stream stays unfinished, nothing of it is kept, and
    /// [`SnapshotActivity::crash_due`] tells the harness to crash the host at the end of the
    /// step, before anything else of the stream can happen.
    pub fn arm_crash_mid_stream(&self, armed: bool) {
        let mut activity = self.activity.lock().expect(ACTIVITY_LOCK);
        activity.crash_mid_stream_armed = armed;
        if !armed {
            activity.crash_due = None;
        }
    }
}

/// Snapshot files for a simulated disk.
fn mem_snapshots() -> MemSnapshots {
    let files = MemSnapshotFiles::new(|metadata, data| {
        check_snapshot_data(metadata.index, &mut &data[..]).map(|_cluster| ())
    });
    MemSnapshots {
        files,
        activity: Arc::default(),
    }
}

impl SnapshotFiles for MemSnapshots {
    fn write(
        &self,
        metadata: &SnapshotMetadata,
        view: &dyn SnapshotView,
    ) -> Result<u64, SnapshotFilesError> {
        let written = self.files.write(metadata, view)?;
        self.activity.lock().expect(ACTIVITY_LOCK).written += 1;
        Ok(written)
    }

    fn open(
        &self,
        metadata: &SnapshotMetadata,
    ) -> Result<(Box<dyn Read + Send>, u64), SnapshotFilesError> {
        self.files.open(metadata)
    }

    fn receive(
        &self,
        metadata: &SnapshotMetadata,
        bytes: u64,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotFilesError> {
        let inner = self.files.receive(metadata, bytes)?;
        let mut activity = self.activity.lock().expect(ACTIVITY_LOCK);
        activity.streams_begun += 1;
        activity.open_streams += 1;
        Ok(Box::new(CountedSink {
            inner: Some(inner),
            bytes,
            received_bytes: 0,
            chunks: 0,
            halted: false,
            activity: Arc::clone(&self.activity),
        }))
    }

    fn has_received(&self, metadata: &SnapshotMetadata) -> bool {
        self.files.has_received(metadata)
    }

    fn keep_received(&self, metadata: &SnapshotMetadata) -> Result<(), SnapshotFilesError> {
        self.files.keep_received(metadata)?;
        self.activity.lock().expect(ACTIVITY_LOCK).kept_received += 1;
        Ok(())
    }

    fn offload(&self) -> Offload {
        self.files.offload()
    }
}

/// A received stream, counted as it goes. Dropped before [`SnapshotSink::finish`] succeeded
/// (the connection ended, the host crashed), it counts as abandoned.
struct CountedSink {
    /// `None` once finished.
    inner: Option<Box<dyn SnapshotSink>>,
    /// The bytes announced.
    bytes: u64,
    /// Bytes written into it so far.
    received_bytes: u64,
    /// Chunks written into it so far.
    chunks: u64,
    /// Stopped for an armed crash: every further chunk is refused.
    halted: bool,
    activity: Arc<Mutex<SnapshotActivity>>,
}

impl CountedSink {
    /// The stream is no longer open: received whole, or abandoned.
    fn close(&mut self, received: bool) {
        let mut activity = self.activity.lock().expect(ACTIVITY_LOCK);
        activity.open_streams -= 1;
        activity.open_chunks -= self.chunks;
        if received {
            activity.streams_received += 1;
            activity.largest_received_bytes = activity.largest_received_bytes.max(self.bytes);
        } else {
            activity.streams_abandoned += 1;
        }
    }
}

impl SnapshotSink for CountedSink {
    fn write(&mut self, chunk: &[u8]) -> Result<(), SnapshotFilesError> {
        if self.halted {
            return Err(SnapshotFilesError::io(
                "receiving a snapshot",
                std::io::Error::other("the host is crashing (an armed simulation fault)"),
            ));
        }
        let inner = self
            .inner
            .as_mut()
            .expect("a sink is written only before finish, which consumes it");
        inner.write(chunk)?;
        self.chunks += 1;
        self.received_bytes += chunk.len() as u64;
        let mut activity = self.activity.lock().expect(ACTIVITY_LOCK);
        activity.chunks_received += 1;
        activity.open_chunks += 1;
        if activity.crash_mid_stream_armed && self.received_bytes < self.bytes {
            activity.crash_mid_stream_armed = false;
            activity.crash_due = Some(self.chunks);
            self.halted = true;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), SnapshotFilesError> {
        let inner = self
            .inner
            .take()
            .expect("finish consumes the sink, so it runs once");
        let finished = inner.finish();
        self.close(finished.is_ok());
        finished
    }
}

impl Drop for CountedSink {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.close(false);
        }
    }
}
