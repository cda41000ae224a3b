//! Loopback ports for processes a test or a verification run starts: a [`PortRange`] hands out
//! ports that nobody listens on right now and that it has not handed out before.
//!
//! Why a range of its own, below Linux's ephemeral range (32768–60999): a port chosen from the
//! ephemeral range can be taken as the local port of an outgoing connection (a client's, a
//! proxy's) between its choice and the node's bind, and under CI's load that race was lost now
//! and then. Two processes may pick at once: each starts at its own place in the range (its
//! process id), so they rarely try the same ports. Another process may still bind a port
//! between its choice and its use; the caller then sees its node fail to listen.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

/// A range of loopback ports handed out once each, for the lifetime of the process.
pub struct PortRange {
    base: u16,
    span: u32,
    taken: AtomicU32,
}

impl PortRange {
    /// The `span` ports from `base` (the range must end at or below port 65535).
    pub const fn new(base: u16, span: u16) -> PortRange {
        assert!(
            base as u32 + span as u32 <= 65_536,
            "a port range ends at 65535"
        );
        PortRange {
            base,
            span: span as u32,
            taken: AtomicU32::new(0),
        }
    }

    /// A port of the range nobody listens on now and that this range has not handed out
    /// before; an error once every port of the range was tried.
    pub fn free_port(&self) -> std::io::Result<u16> {
        let start = std::process::id() % self.span.max(1);
        let mut last_error = None;
        loop {
            let taken = self.taken.fetch_add(1, Ordering::Relaxed);
            if taken >= self.span {
                return Err(last_error.unwrap_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "every port of the range was handed out or is taken",
                    )
                }));
            }
            let offset = u16::try_from((start + taken) % self.span)
                .expect("invariant: the offset is below the span, which fits in a port number");
            let port = self.base + offset;
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(_) => return Ok(port),
                Err(e) => last_error = Some(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_hands_out_each_port_once_and_then_says_it_is_spent() {
        // Given a range of three ports,
        let range = PortRange::new(42_000, 3);
        // when ports are asked for, then each comes from the range, none twice,
        let mut got = Vec::new();
        while let Ok(port) = range.free_port() {
            assert!((42_000..42_003).contains(&port));
            assert!(!got.contains(&port), "port {port} handed out twice");
            got.push(port);
        }
        // and once the range is spent, the answer is an error, not a port.
        assert!(got.len() <= 3);
        assert!(range.free_port().is_err());
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        // Given a listener on the only port of a range,
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let range = PortRange::new(port, 1);
        // then the range has no free port to give.
        assert!(range.free_port().is_err());
    }
}
