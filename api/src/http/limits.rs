//! What clients may hold of a node, and for how long: connections, file descriptors, time,
//! and the memory of request bodies.
//!
//! - **Connections.** At most [`Limits::connections_allowed`] client connections are served at
//!   once: `server.max_connections`, lowered when the process's file-descriptor limit cannot
//!   hold that many beside [`FD_RESERVE`] (the WAL's segment files, snapshots, peers, the
//!   runtime) and the WAL's segments open now. One more is answered `503
//!   too_many_connections` and closed, never left waiting in the kernel's backlog; clients are
//!   refused before the WAL can ever lack a descriptor.
//! - **Time.** A connection with no request in progress is closed after `server.idle_timeout`;
//!   a request's header must arrive within `server.header_read_timeout` of its first byte, and
//!   its body within `server.body_read_timeout` of the header (`408 body_timeout`).
//! - **Memory.** Bytes of request bodies being received count against one node-wide budget,
//!   `server.body_bytes_in_flight_max`; a body that would pass it is answered `503
//!   overloaded`. Its bytes are released when the request ends, however it ends.
//!
//! Invariant: every counted connection and every budget byte is returned by a drop guard, so a
//! request or connection that dies (timeout, reset, refusal) gives back what it held.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ServerSection;

/// File descriptors kept out of the clients' reach for everything else the node opens: the
/// runtime (epoll, event fds), the listeners, standard streams, the data directory's lock and
/// hard-state file, snapshot files being written or sent, directory syncs, and peer
/// connections (at most `raft::transport::PEER_CONNECTIONS_MAX` inbound and
/// `LEARNED_PEERS_MAX` outbound, checked below to take at most half of it). The WAL's
/// segment files are counted apart, as they are open now.
pub const FD_RESERVE: u64 = 256;
// The peer port's sockets (inbound connections, and a sender's socket per known peer) must
// leave at least half of the reserve to everything else it counts.
const _: () = assert!(
    (raft::transport::PEER_CONNECTIONS_MAX + raft::transport::LEARNED_PEERS_MAX) as u64
        <= FD_RESERVE / 2,
    "the peer port's connection bounds must fit in half of FD_RESERVE"
);
/// File descriptors one client connection may hold: its own socket, and a second one while a
/// follower forwards its request to the leader.
pub const FDS_PER_CLIENT: u64 = 2;
/// The most over-limit connections being answered `503 too_many_connections` at once (each
/// holds a descriptor while its answer is written); beyond it, an over-limit connection is
/// closed without an answer. Part of [`FD_RESERVE`].
pub const REFUSALS_IN_FLIGHT_MAX: usize = 64;
/// How long a refused connection is kept open after its answer, reading what the client still
/// sends, so that closing it does not reset the connection before the client read the answer.
pub const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// The process's limit on open file descriptors, as [`raise_fd_limit`] found and left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub now: u64,
    /// The hard limit (the most an unprivileged process may raise the soft limit to).
    pub hard: u64,
}

/// What an unlimited (`RLIM_INFINITY`) descriptor limit counts as: Linux never lets a process
/// open more than `fs.nr_open`, which defaults to this.
const FD_LIMIT_UNLIMITED: u64 = 1 << 20;

/// The process's soft limit on open file descriptors now.
pub fn fd_limit_now() -> u64 {
    use rustix::process::{Resource, getrlimit};
    getrlimit(Resource::Nofile)
        .current
        .unwrap_or(FD_LIMIT_UNLIMITED)
}

/// Raises the soft limit on open file descriptors to the hard limit, where the system allows
/// (called once at start, before any thread opens files): the default soft limit (often
/// 1,024) is far below what a server with thousands of clients needs, while the hard limit is
/// the operator's real bound. Returns the figures, to be logged; a refusal leaves the limit as
/// it was and is not an error (the connection cap is derived from whatever limit holds).
pub fn raise_fd_limit() -> FdLimit {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(FD_LIMIT_UNLIMITED);
    let hard = limit.maximum.unwrap_or(FD_LIMIT_UNLIMITED);
    if before < hard {
        let raised = Rlimit {
            current: Some(hard),
            maximum: limit.maximum,
        };
        // A refusal (a hard limit above fs.nr_open, a sandbox) keeps the soft limit.
        let _ = setrlimit(Resource::Nofile, raised);
    }
    FdLimit {
        before,
        now: fd_limit_now(),
        hard,
    }
}

/// How long an accept loop pauses after `accept` failed (out of file descriptors, say) before
/// it tries again, so that a persistent failure does not spin.
pub const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// The node's connection, time and memory bounds for client traffic (see the module docs).
pub struct Limits {
    /// `server.max_connections`.
    max_connections: usize,
    /// The process's file-descriptor limit (soft), as raised at start.
    fd_limit: u64,
    /// The WAL's counters: how many segment files it holds open now.
    wal: Arc<wal::WalMetrics>,
    /// Client connections served now.
    open: Arc<AtomicUsize>,
    refusals: Arc<Semaphore>,
    body_bytes: Arc<Semaphore>,
    body_bytes_max: usize,
    /// `server.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `server.body_read_timeout`.
    pub body_read_timeout: Duration,
    /// `server.idle_timeout`.
    pub idle_timeout: Duration,
}

/// One served client connection; counted until dropped.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Bytes of one request body counted against the node-wide budget; returned when dropped.
pub struct BodyBytes(#[allow(dead_code, reason = "held only to be dropped")] OwnedSemaphorePermit);

/// Why a body's bytes were not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetFull {
    /// The node-wide budget, in bytes.
    pub max: usize,
}

impl Limits {
    /// The bounds of `config`, for a process allowed `fd_limit` descriptors, whose WAL
    /// publishes its segment count in `wal`.
    pub fn new(config: &ServerSection, fd_limit: u64, wal: Arc<wal::WalMetrics>) -> Limits {
        let body_bytes_max = usize::try_from(config.body_bytes_in_flight_max)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Limits {
            max_connections: config.max_connections,
            fd_limit,
            wal,
            open: Arc::new(AtomicUsize::new(0)),
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT_MAX)),
            body_bytes: Arc::new(Semaphore::new(body_bytes_max)),
            body_bytes_max,
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// The process's file-descriptor limit these bounds were derived from.
    pub fn fd_limit(&self) -> u64 {
        self.fd_limit
    }

    /// How many client connections may be open now: `server.max_connections`, or fewer when
    /// the descriptors left after [`FD_RESERVE`] and the WAL's open segments cannot hold that
    /// many clients at [`FDS_PER_CLIENT`] each.
    pub fn connections_allowed(&self) -> usize {
        let segments = self.wal.segments();
        let for_clients = self.fd_limit.saturating_sub(FD_RESERVE + segments) / FDS_PER_CLIENT;
        self.max_connections
            .min(usize::try_from(for_clients).unwrap_or(usize::MAX))
    }

    /// Client connections served now.
    pub fn connections_open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// A slot for a new client connection, or `None` when [`Limits::connections_allowed`]
    /// are open. Called by the one accept loop, so the check and the count cannot race with
    /// another admission (closing connections only lowers the count).
    pub fn admit(&self) -> Option<ConnectionSlot> {
        if self.connections_open() >= self.connections_allowed() {
            return None;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        Some(ConnectionSlot(Arc::clone(&self.open)))
    }

    /// A permit to answer one over-limit connection, or `None` when
    /// [`REFUSALS_IN_FLIGHT_MAX`] are being answered.
    pub fn refusal(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.refusals).try_acquire_owned().ok()
    }

    /// Counts `bytes` of a request body against the node-wide budget, without waiting.
    pub fn body_bytes(&self, bytes: usize) -> Result<BodyBytes, BudgetFull> {
        let full = BudgetFull {
            max: self.body_bytes_max,
        };
        let n = u32::try_from(bytes).map_err(|_| full)?;
        Arc::clone(&self.body_bytes)
            .try_acquire_many_owned(n)
            .map(BodyBytes)
            .map_err(|_| full)
    }

    /// Bytes of request bodies counted now.
    pub fn body_bytes_in_flight(&self) -> usize {
        self.body_bytes_max - self.body_bytes.available_permits()
    }
}

impl BodyBytes {
    /// Adds `more` (counted by [`Limits::body_bytes`]) to this body's count.
    pub fn merge(&mut self, more: BodyBytes) {
        self.0.merge(more.0);
    }
}

/// Where a connection stands, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress and no byte of the next one yet: `idle_timeout` runs.
    Idle,
    /// Bytes of a request's header have come in: `header_read_timeout` runs.
    Header,
    /// A request is being handled (its body timeout is the handler's).
    Busy,
    /// The handler is done but its answer is not all written: the client is taking it more
    /// slowly than it is made (a backup, a long listing). [`WRITE_STALL_TIMEOUT`] runs from the
    /// last byte the client took, not `idle_timeout`: the socket reports room again only once
    /// a good share of its buffer has drained, which takes a slow client longer than a short
    /// idle timeout though it is reading all along.
    Writing,
}

/// How long an answer may wait for its client to take more of it before the connection is
/// closed (or `idle_timeout`, if longer): a client that stopped reading is let go, one that
/// reads slowly is not cut off mid-answer.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The phase of one connection and since when; shared by its reader, its handler and its
/// watchdog. The [`Notify`] wakes the watchdog when a header starts: it sleeps towards the
/// idle deadline, and without the wake-up a half-sent header would only be cut at that
/// (longer) deadline instead of `header_read_timeout` after its first byte.
#[derive(Debug)]
pub struct Activity(Mutex<(Phase, Instant)>, Notify, AtomicBool);

const ACTIVITY_LOCK: &str = "an activity lock is held only for a field update that cannot panic";

impl Activity {
    /// A connection just accepted: idle since now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity(
            Mutex::new((Phase::Idle, Instant::now())),
            Notify::new(),
            // Whether the socket's last write was refused for want of room (see `Writing`).
            AtomicBool::new(false),
        ))
    }

    fn get(&self) -> (Phase, Instant) {
        *self.0.lock().expect(ACTIVITY_LOCK)
    }

    fn bytes_in(&self) {
        let mut state = self.0.lock().expect(ACTIVITY_LOCK);
        if matches!(state.0, Phase::Idle | Phase::Writing) {
            *state = (Phase::Header, Instant::now());
            // A stored permit if the watchdog is not waiting yet: the change is never missed.
            self.1.notify_one();
        }
    }

    /// Bytes of an answer went out: an idle connection's idle time starts again, since idle
    /// means nothing moving either way. The tail of a large answer (a backup, a long listing)
    /// is still being written after its handler is done, and must not be cut as idle while
    /// a slow client takes it.
    fn bytes_out(&self) {
        self.2.store(false, Ordering::Relaxed);
        let mut state = self.0.lock().expect(ACTIVITY_LOCK);
        if matches!(state.0, Phase::Idle | Phase::Writing) {
            *state = (Phase::Idle, Instant::now());
        }
    }

    /// The socket took no more of an answer for now: outside a request, the connection waits
    /// on its client ([`Phase::Writing`]), since the first such wait.
    fn write_blocked(&self) {
        self.2.store(true, Ordering::Relaxed);
        let mut state = self.0.lock().expect(ACTIVITY_LOCK);
        if state.0 == Phase::Idle {
            *state = (Phase::Writing, Instant::now());
        }
    }

    /// A request's header is in and its handler runs; the connection is idle again when the
    /// returned guard drops.
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        *self.0.lock().expect(ACTIVITY_LOCK) = (Phase::Busy, Instant::now());
        BusyGuard(Arc::clone(self))
    }

    /// When the connection must be closed if nothing changes meanwhile (`None` while a
    /// request is handled).
    fn deadline(&self, limits: &Limits) -> (Option<Instant>, (Phase, Instant)) {
        let state = self.get();
        let deadline = match state.0 {
            Phase::Idle => Some(state.1 + limits.idle_timeout),
            Phase::Header => Some(state.1 + limits.header_read_timeout),
            Phase::Writing => Some(state.1 + limits.idle_timeout.max(WRITE_STALL_TIMEOUT)),
            Phase::Busy => None,
        };
        (deadline, state)
    }
}

/// Marks the connection idle again when the request's handler is done.
pub struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        // An answer still waiting for room in the socket is being taken, not idle.
        let phase = if self.0.2.load(Ordering::Relaxed) {
            Phase::Writing
        } else {
            Phase::Idle
        };
        *self.0.0.lock().expect(ACTIVITY_LOCK) = (phase, Instant::now());
    }
}

/// A client's stream that tells its [`Activity`] when bytes come in.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_in();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.activity.bytes_out(),
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.activity.bytes_out(),
            Poll::Pending => self.activity.write_blocked(),
            _ => {}
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Why a connection ended.
pub enum Ended<E> {
    /// The connection itself finished (the client closed, or an error).
    Served(Result<(), E>),
    /// It was idle longer than `idle_timeout`.
    Idle,
    /// A request's header took longer than `header_read_timeout`.
    HeaderTimeout,
}

/// Runs `conn` until it ends or one of the connection's timeouts passes, in which case it is
/// dropped (which closes the socket).
pub async fn watch<E>(
    conn: impl Future<Output = Result<(), E>>,
    activity: &Activity,
    limits: &Limits,
) -> Ended<E> {
    let mut conn = std::pin::pin!(conn);
    loop {
        let (deadline, seen) = activity.deadline(limits);
        // While a request is handled, look again after the shorter timeout: its handler is
        // bounded by its own timeouts.
        let wake = deadline.unwrap_or_else(|| {
            Instant::now() + limits.header_read_timeout.min(limits.idle_timeout)
        });
        tokio::select! {
            result = &mut conn => return Ended::Served(result),
            // A header started: its deadline replaces the idle one.
            _ = activity.1.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                if deadline.is_some() && activity.get() == seen {
                    return match seen.0 {
                        Phase::Header => Ended::HeaderTimeout,
                        _ => Ended::Idle,
                    };
                }
            }
        }
    }
}

/// The answer to an over-limit connection: `503 too_many_connections`, and close.
fn refusal_answer(allowed: usize) -> String {
    let code = proto::rest::ErrorCode::TooManyConnections;
    let status = hyper::StatusCode::from_u16(code.http_status())
        .expect("invariant: every error code's status is a valid HTTP status");
    let body = serde_json::to_string(&proto::rest::ErrorBody {
        error: format!(
            "this node serves at most {allowed} client connections at once and all are in use (server.max_connections, and the file descriptor limit); retry later or on another node"
        ),
        code: code.as_str().to_string(),
        extra: serde_json::Map::new(),
    })
    .expect("invariant: an error body serialises to JSON");
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    )
}

/// Answers an over-limit connection with `503 too_many_connections` at once, without
/// waiting (a fresh socket's send buffer takes the short answer whole), and closes it: after
/// [`REFUSAL_LINGER`] if `linger` holds a refusal permit, else now. Lingering reads what the
/// client still sends until it closes, because closing a socket with unread bytes resets it
/// and a reset can destroy the answer before the client reads it; without a permit, what has
/// arrived so far is read first for the same reason.
///
/// The socket is written through its std handle: tokio's `try_write` on a socket it has not
/// yet seen writable refuses without trying.
pub fn refuse(stream: tokio::net::TcpStream, allowed: usize, linger: Option<OwnedSemaphorePermit>) {
    use std::io::{Read, Write};
    let Ok(mut stream) = stream.into_std() else {
        return; // Dropped: closed now.
    };
    let mut sink = [0u8; 4096];
    // Nonblocking (as tokio left it): reads what has arrived, then stops.
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    let _ = stream.write_all(refusal_answer(allowed).as_bytes());
    let Some(permit) = linger else {
        return; // Dropped: closed now.
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let Ok(mut stream) = tokio::net::TcpStream::from_std(stream) else {
        return;
    };
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            loop {
                match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(max_connections: usize) -> ServerSection {
        ServerSection {
            max_connections,
            ..crate::config::Config::default().server
        }
    }

    #[test]
    fn the_connection_cap_leaves_the_reserve_and_the_wal_segments_to_the_node() {
        // Given a process allowed 1,024 descriptors and a WAL with no segment yet (a gauge at
        // zero), when the configured cap is far higher,
        let wal = Arc::new(wal::WalMetrics::default());
        let limits = Limits::new(&section(10_000), 1024, Arc::clone(&wal));
        // then clients get what is left after the reserve, two descriptors each,
        assert_eq!(limits.connections_allowed(), (1024 - 256) / 2);
        // and a configured cap below that is kept as it is.
        let limits = Limits::new(&section(10), 1024, wal);
        assert_eq!(limits.connections_allowed(), 10);
        // A limit below the reserve leaves no client at all rather than wrapping around.
        let limits = Limits::new(&section(10), 100, Arc::new(wal::WalMetrics::default()));
        assert_eq!(limits.connections_allowed(), 0);
    }

    #[test]
    fn slots_and_body_bytes_are_given_back_when_dropped() {
        // Given a cap of two connections,
        let limits = Limits::new(&section(2), 1 << 20, Arc::new(wal::WalMetrics::default()));
        let a = limits.admit().expect("first");
        let _b = limits.admit().expect("second");
        // then a third is refused until one closes.
        assert!(limits.admit().is_none());
        drop(a);
        assert!(limits.admit().is_some());
        // Given the default body budget, a body that would pass it is refused, and the bytes
        // of a dead request come back.
        let max = crate::config::Config::default()
            .server
            .body_bytes_in_flight_max as usize;
        let held = limits.body_bytes(max - 10).expect("fits");
        assert_eq!(limits.body_bytes(11).err(), Some(BudgetFull { max }));
        drop(held);
        assert_eq!(limits.body_bytes_in_flight(), 0);
        assert!(limits.body_bytes(max).is_ok());
    }
}
