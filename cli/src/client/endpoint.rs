//! The endpoints a client is given: each `http://host:port` (the REST API) or
//! `grpc://host:port` (the gRPC API), or `https://` and `grpcs://` for the same over TLS, a
//! trailing `/` allowed, normalised once so that the
//! leader's announced address for that protocol can be matched against them. A gRPC endpoint
//! keeps its HTTP/2 connections ([`Channel`]; calls multiplex over them, taken in turn).
//! Invariant: every [`Endpoint`] held has a known scheme, a port, and no path or query.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Uri;

use super::channel::Channel;
use crate::error::{Error, Result};
use crate::types::ClientTls;

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
    /// `http://host:port` or `grpc://host:port` (`https`, `grpcs` over TLS), no trailing
    /// slash.
    pub(super) base: String,
    /// `host:port`, to recognise the leader's address for [`Endpoint::protocol`].
    pub(super) authority: String,
    /// The API it speaks.
    pub(super) protocol: Protocol,
    /// A gRPC endpoint's HTTP/2 connections (each made at its first call, and again after it
    /// breaks); calls take them in turn.
    grpc: Vec<Channel>,
    /// The next of `grpc` to use.
    next: AtomicUsize,
}

impl Endpoint {
    /// The next of this gRPC endpoint's connections.
    pub(super) fn grpc(&self) -> &Channel {
        &self.grpc[self.next.fetch_add(1, Ordering::Relaxed) % self.grpc.len()]
    }
}

/// Parses `http://host:port` or `grpc://host:port` (`https://`, `grpcs://` over TLS, which
/// needs `tls`; a trailing `/` allowed) into an [`Endpoint`]; a gRPC one uses up to
/// `grpc_connections` connections (at least 1), each opened within `connect_timeout`.
pub(super) fn parse_endpoint(
    text: &str,
    grpc_connections: usize,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Endpoint> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| invalid("not a URL; expected http://host:port or grpc://host:port"))?;
    let (protocol, secure) = match uri.scheme_str() {
        Some("http") => (Protocol::Http, false),
        Some("grpc") => (Protocol::Grpc, false),
        Some("https") => (Protocol::Http, true),
        Some("grpcs") => (Protocol::Grpc, true),
        Some(_) => {
            return Err(invalid(
                "only http://, grpc://, https:// and grpcs:// are supported",
            ));
        }
        None => return Err(invalid("missing http:// or grpc:// scheme")),
    };
    if secure && tls.is_none() {
        return Err(invalid(
            "a TLS endpoint needs the CA to check the node against (kvcli --ca-cert; ClientOptions::tls)",
        ));
    }
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
    let scheme = match (protocol, secure) {
        (Protocol::Http, false) => "http",
        (Protocol::Grpc, false) => "grpc",
        (Protocol::Http, true) => "https",
        (Protocol::Grpc, true) => "grpcs",
    };
    Ok(Endpoint {
        base: format!("{scheme}://{authority}"),
        authority: authority.as_str().to_owned(),
        protocol,
        grpc: match protocol {
            Protocol::Http => Vec::new(),
            Protocol::Grpc => {
                let connector = if secure {
                    Some(super::tls::grpc_connector(tls)?)
                } else {
                    None
                };
                (0..grpc_connections.max(1))
                    .map(|_| {
                        Channel::new(authority.as_str(), connector.clone(), connect_timeout)
                            .map_err(|reason| invalid(&reason))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        },
        next: AtomicUsize::new(0),
    })
}

/// A leader's address as `host:port` (with or without a scheme).
pub(super) fn authority_of(addr: &str) -> &str {
    let without_scheme = ["http://", "grpc://", "https://", "grpcs://"]
        .iter()
        .find_map(|scheme| addr.strip_prefix(scheme))
        .unwrap_or(addr);
    without_scheme.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    #[test]
    fn endpoints_parse_strictly() {
        let e = parse_endpoint("http://127.0.0.1:8080/", 1, Duration::from_secs(1), None)
            .expect("valid endpoint");
        assert_eq!(e.base, "http://127.0.0.1:8080");
        assert_eq!(e.authority, "127.0.0.1:8080");
        let g = parse_endpoint("grpc://127.0.0.1:9090", 1, Duration::from_secs(1), None)
            .expect("valid endpoint");
        assert_eq!(
            (g.base.as_str(), g.protocol),
            ("grpc://127.0.0.1:9090", Protocol::Grpc)
        );
        for bad in [
            "127.0.0.1:8080",
            "https://h:1",
            "ftp://h:1",
            "grpc://h",
            "http://h",
            "http://h:1/x",
            "http://h:1?q=1",
            "not a url",
        ] {
            assert!(
                matches!(
                    parse_endpoint(bad, 1, Duration::from_secs(1), None),
                    Err(Error::InvalidEndpoint { .. })
                ),
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
