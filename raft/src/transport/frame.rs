//! The peer wire format: length-prefixed, versioned postcard frames.
//!
//! ```text
//! offset  size  field
//!      0     4  body length n (u32 LE), at most FRAME_BYTES_MAX
//!      4     1  wire version (WIRE_VERSION)
//!      5   n-1  postcard encoding of a `Frame`
//! ```
//!
//! The opener's first frame is always [`Frame::Hello`]: who calls, where it listens, and which
//! cluster it belongs to. Then frames flow from the opener to the acceptor, except two that go
//! back: [`Frame::Ack`], which the acceptor sends now and then to say how many bytes it has
//! read, and [`Frame::Refused`], which an acceptor that will not serve the caller (another
//! cluster's node, one removed from this cluster, or one that is not a member at all) writes
//! as its only frame before it closes.
//!
//! A snapshot travels as `SnapshotBegin` (the message, which carries only the snapshot's
//! metadata, and the data's length), `SnapshotChunk`s of at most `SNAPSHOT_CHUNK_BYTES`, and
//! `SnapshotEnd`; `Message` frames may come between the chunks (the sender's heartbeats). The
//! receiver streams the chunks into a file, checks it whole, and only then hands the core the
//! message. A connection that breaks mid-stream loses the partial snapshot, and the core sends
//! it again later.
//!
//! Invariants: a reader never allocates more than `FRAME_BYTES_MAX` for a frame, whatever the
//! length field claims; a frame of another wire version is an error, not a guess.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::core::{LogIndex, Message, NodeId};
use crate::node::ClusterId;

/// The wire version this code speaks.
/// Version 2 added [`Frame::Ack`]: a version-1 receiver never acknowledges, so mixing the two
/// is refused at the first frame rather than reset every second.
/// Version 3 added the cluster id to [`Frame::Hello`] and the [`Frame::Refused`] frame.
/// Version 4 added [`Refusal::NotMember`]: a version-3 opener could not decode it, so it
/// would take the refusal for a broken connection and retry at full speed.
/// Version 5 lets `Message` frames come between a snapshot's chunks: a version-4 receiver
/// would close the connection on the first heartbeat sent during a snapshot.
pub const WIRE_VERSION: u8 = 5;
/// The largest frame body accepted (16 MiB): room for a full AppendEntries
/// (`msg_bytes_max`, 1 MiB by default) or a snapshot chunk, with margin.
pub const FRAME_BYTES_MAX: u32 = 16 * 1024 * 1024;
/// The largest first frame of a connection accepted (4 KiB). It must be a Hello (an id, an
/// address, a cluster id: a few dozen bytes), and it comes from a caller nobody has checked
/// yet: without this bound, anyone who reaches the port could make the node allocate and
/// decode a 16 MiB frame of millions of entries before learning it is not a Hello.
pub const HELLO_BYTES_MAX: u32 = 4096;
/// The size of the chunks a snapshot's data is streamed in.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// The largest snapshot a receiver reassembles (4 GiB).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// One unit on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// The first frame on a connection: who is calling, and where it listens, so that a
    /// node can answer a peer it has no address for yet (a new member learns the address book
    /// only from the log the caller is about to send it).
    Hello {
        /// The sender's node id.
        from: NodeId,
        /// The sender's Raft address.
        addr: String,
        /// The cluster the sender belongs to: an acceptor of another cluster refuses it.
        cluster: ClusterId,
    },
    /// A Raft message (never an InstallSnapshot with data: that is streamed).
    Message(Message),
    /// The start of a streamed snapshot: the message with empty data, and the data's length.
    SnapshotBegin {
        /// The InstallSnapshot message, data cut out.
        message: Message,
        /// The length of the data that follows in chunks.
        data_bytes: u64,
    },
    /// A piece of the snapshot's data, in order.
    SnapshotChunk(Bytes),
    /// The snapshot's data is complete.
    SnapshotEnd,
    /// Receiver to sender, on the same connection: how many bytes it has read so far, and
    /// whether it is waiting on its node (alive, but reading nothing new for now). The sender
    /// replaces a connection whose bytes stop being acknowledged (see
    /// `transport::ACK_TIMEOUT`).
    Ack {
        /// Bytes read on this connection.
        bytes: u64,
        /// The receiver is blocked handing a message to its busy node.
        busy: bool,
    },
    /// Acceptor to opener, in answer to the Hello: the acceptor will not serve this caller.
    /// It is the only frame the acceptor writes on such a connection, and it closes the
    /// connection after it; nothing the opener sent is handed to the acceptor's node.
    Refused(Refusal),
}

/// Why an acceptor refused a connection (see [`Frame::Refused`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The caller belongs to another cluster: a node of one cluster must never step with
    /// another's messages (they would overwrite its log, or elect a stranger).
    #[error("the caller belongs to cluster {got}, the refusing node to cluster {expected}")]
    WrongCluster {
        /// The refusing node's cluster.
        expected: ClusterId,
        /// The cluster the caller announced.
        got: ClusterId,
    },
    /// The refusing node has applied a membership change that removed the caller: the
    /// caller's votes and messages no longer count, and it should stop.
    #[error("the caller was removed from the cluster by the membership change at index {}", at.0)]
    Removed {
        /// The log index of the membership change that removed the caller.
        at: LogIndex,
    },
    /// The caller is of the right cluster but not a member of the refusing node's latest
    /// configuration (committed or not), nor a joiner it expects, and the refusing node
    /// follows a leader: nothing the caller sends would be taken. A real member that joined
    /// while the refusing node was away can meet this until that leader brings the refusing
    /// node's log up to date.
    #[error(
        "the caller is not a member of the refusing node's configuration, nor a node it expects to join"
    )]
    NotMember,
}

impl Refusal {
    /// A short name for the kind of refusal, for log fields and rate limits.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::WrongCluster { .. } => "wrong_cluster",
            Refusal::Removed { .. } => "removed",
            Refusal::NotMember => "not_member",
        }
    }
}

/// What can go wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The length field is zero or over the limit.
    #[error("frame of {len} bytes is outside 1..={max}")]
    BadLength {
        /// What the length field said.
        len: u32,
        /// The limit for this frame ([`FRAME_BYTES_MAX`], or [`HELLO_BYTES_MAX`] for the
        /// first frame of a connection).
        max: u32,
    },
    /// The peer speaks another wire version.
    #[error("wire version {0} (this node speaks {WIRE_VERSION})")]
    Version(u8),
    /// The body does not decode.
    #[error("undecodable frame: {0}")]
    Decode(postcard::Error),
}

/// Appends `frame`, length-prefixed, to `out`.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, WIRE_VERSION]);
    let out_vec = std::mem::take(out);
    let mut full = postcard::to_extend(frame, out_vec).expect("frames always encode");
    let body = (full.len() - start - 4) as u32;
    debug_assert!(
        body <= FRAME_BYTES_MAX,
        "the sender keeps frames within the limit"
    );
    full[start..start + 4].copy_from_slice(&body.to_le_bytes());
    *out = full;
}

/// Writes one frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> std::io::Result<()> {
    let mut buf = Vec::new();
    encode(frame, &mut buf);
    w.write_all(&buf).await
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    read_at_most(r, FRAME_BYTES_MAX).await
}

/// Reads a connection's first frame, which must be a Hello: at most [`HELLO_BYTES_MAX`].
pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    read_at_most(r, HELLO_BYTES_MAX).await
}

/// Reads one frame of at most `max` body bytes.
async fn read_at_most<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
) -> Result<Option<Frame>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_le_bytes(len);
    if len == 0 || len > max {
        return Err(FrameError::BadLength { len, max });
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    if body[0] != WIRE_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    postcard::from_bytes(&body[1..])
        .map(Some)
        .map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{MessageBody, Term};

    fn heartbeat() -> Frame {
        Frame::Message(Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body: MessageBody::TimeoutNow,
        })
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let frames = vec![
            Frame::Hello {
                from: NodeId(7),
                addr: "127.0.0.1:7001".into(),
                cluster: ClusterId(0xa1),
            },
            heartbeat(),
            Frame::SnapshotChunk(Bytes::from_static(b"abc")),
            Frame::SnapshotEnd,
            Frame::Ack {
                bytes: 1 << 40,
                busy: true,
            },
            Frame::Refused(Refusal::WrongCluster {
                expected: ClusterId(0xa1),
                got: ClusterId(u64::MAX),
            }),
            Frame::Refused(Refusal::Removed { at: LogIndex(42) }),
            Frame::Refused(Refusal::NotMember),
        ];
        let mut buf = Vec::new();
        for f in &frames {
            encode(f, &mut buf);
        }
        let mut r = &buf[..];
        for f in &frames {
            assert_eq!(read(&mut r).await.unwrap().as_ref(), Some(f));
        }
        assert!(read(&mut r).await.unwrap().is_none(), "clean end of stream");
    }

    #[tokio::test]
    async fn a_length_claiming_4_gib_is_refused_without_allocating() {
        let mut r = &[0xff, 0xff, 0xff, 0xff, WIRE_VERSION][..];
        assert!(matches!(
            read(&mut r).await,
            Err(FrameError::BadLength { len: u32::MAX, .. })
        ));
    }

    #[tokio::test]
    async fn a_first_frame_larger_than_a_hello_is_refused_before_it_is_read() {
        // Given a caller whose first frame claims 1 MiB (a message of a million entries
        // instead of a Hello), when the acceptor reads it as the first frame, then it is
        // refused on its length alone, while a real Hello passes.
        let mut big = (1024u32 * 1024).to_le_bytes().to_vec();
        big.push(WIRE_VERSION);
        assert!(matches!(
            read_hello(&mut &big[..]).await,
            Err(FrameError::BadLength {
                max: HELLO_BYTES_MAX,
                ..
            })
        ));
        let mut hello = Vec::new();
        let frame = Frame::Hello {
            from: NodeId(1),
            addr: "a-long-host-name.example.com:7001".into(),
            cluster: ClusterId(7),
        };
        encode(&frame, &mut hello);
        assert_eq!(read_hello(&mut &hello[..]).await.unwrap(), Some(frame));
    }

    #[tokio::test]
    async fn another_wire_version_and_garbage_are_errors() {
        let mut buf = Vec::new();
        encode(&heartbeat(), &mut buf);
        buf[4] = 9;
        assert!(matches!(
            read(&mut &buf[..]).await,
            Err(FrameError::Version(9))
        ));
        let garbage = [3, 0, 0, 0, WIRE_VERSION, 0xff, 0xff];
        assert!(matches!(
            read(&mut &garbage[..]).await,
            Err(FrameError::Decode(_))
        ));
        let cut = [10, 0, 0, 0, WIRE_VERSION, 1];
        assert!(matches!(read(&mut &cut[..]).await, Err(FrameError::Io(_))));
    }
}
