//! The endpoints a client is given: each `http://host:port` (the REST API) or
//! `grpc://host:port` (the gRPC API), a trailing `/` allowed, normalised once so that the
//! leader's announced address for that protocol can be matched against them. A gRPC endpoint
//! keeps its HTTP/2 connections once made (calls multiplex over them, taken in turn).
//! Invariant: every [`Endpoint`] held has a known scheme, a port, and no path or query.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Uri;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// Which API an endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// REST over HTTP/1.1 (`http://`, `server.http_addr`).
    Http,
    /// gRPC over HTTP/2 (`grpc://`, `server.grpc_addr`).
    Grpc,
}

/// One server, as given to the client.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// `http://host:port` or `grpc://host:port`, no trailing slash.
    pub(super) base: String,
    /// `host:port`, to recognise the leader's address for [`Endpoint::protocol`].
    pub(super) authority: String,
    /// The API it speaks.
    pub(super) protocol: Protocol,
    /// A gRPC endpoint's connections (one channel each), each once connected; calls take
    /// them in turn.
    channels: Vec<Mutex<Option<Channel>>>,
    /// The next of `channels` to use.
    next: AtomicUsize,
}

impl Endpoint {
    /// The gRPC channel to this endpoint, connecting it first if need be; `Err` says why no
    /// connection could be made (nothing was sent).
    pub(super) async fn channel(
        &self,
        connect_timeout: Duration,
    ) -> std::result::Result<Channel, String> {
        let slot = &self.channels[self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()];
        if let Some(channel) = slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
        {
            return Ok(channel);
        }
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.authority))
            .map_err(|e| e.to_string())?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(": ");
                    text.push_str(&cause.to_string());
                    source = cause.source();
                }
                text
            })?;
        *slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(channel.clone());
        Ok(channel)
    }
}

/// Parses `http://host:port` or `grpc://host:port` (a trailing `/` allowed) into an
/// [`Endpoint`]; a gRPC one uses up to `grpc_connections` connections (at least 1).
pub(super) fn parse_endpoint(text: &str, grpc_connections: usize) -> Result<Endpoint> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| invalid("not a URL; expected http://host:port or grpc://host:port"))?;
    let protocol = match uri.scheme_str() {
        Some("http") => Protocol::Http,
        Some("grpc") => Protocol::Grpc,
        Some(_) => return Err(invalid("only http:// and grpc:// are supported")),
        None => return Err(invalid("missing http:// or grpc:// scheme")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("missing host:port"))?;
    if authority.port_u16().is_none() {
        return Err(invalid("missing port"));
    }
    if uri
        .path_and_query()
        .is_some_and(|p| p.as_str() != "/" && !p.as_str().is_empty())
    {
        return Err(invalid("must not have a path or query"));
    }
    let scheme = match protocol {
        Protocol::Http => "http",
        Protocol::Grpc => "grpc",
    };
    Ok(Endpoint {
        base: format!("{scheme}://{authority}"),
        authority: authority.as_str().to_owned(),
        protocol,
        channels: (0..grpc_connections.max(1))
            .map(|_| Mutex::new(None))
            .collect(),
        next: AtomicUsize::new(0),
    })
}

/// A leader's address as `host:port` (with or without a scheme).
pub(super) fn authority_of(addr: &str) -> &str {
    let without_scheme = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("grpc://"))
        .unwrap_or(addr);
    without_scheme.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    #[test]
    fn endpoints_parse_strictly() {
        let e = parse_endpoint("http://127.0.0.1:8080/", 1).expect("valid endpoint");
        assert_eq!(e.base, "http://127.0.0.1:8080");
        assert_eq!(e.authority, "127.0.0.1:8080");
        let g = parse_endpoint("grpc://127.0.0.1:9090", 1).expect("valid endpoint");
        assert_eq!(
            (g.base.as_str(), g.protocol),
            ("grpc://127.0.0.1:9090", Protocol::Grpc)
        );
        for bad in [
            "127.0.0.1:8080",
            "https://h:1",
            "grpc://h",
            "http://h",
            "http://h:1/x",
            "http://h:1?q=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_endpoint(bad, 1), Err(Error::InvalidEndpoint { .. })),
                "{bad}"
            );
        }
        assert!(Client::new(Vec::<String>::new()).is_err());
    }

    #[test]
    fn leader_addresses_match_with_or_without_scheme() {
        assert_eq!(authority_of("http://10.0.0.1:8081/"), "10.0.0.1:8081");
        assert_eq!(authority_of("10.0.0.1:8081"), "10.0.0.1:8081");
    }
}
