//! The endpoints a client is given: each must be `http://host:port` (a trailing `/` allowed),
//! normalised once so that the leader's announced `http_addr` can be matched against them.
//! Invariant: every [`Endpoint`] held has a scheme of `http`, a port, and no path or query.

use hyper::Uri;

use crate::error::{Error, Result};

/// One server, as given to the client.
#[derive(Debug)]
pub(super) struct Endpoint {
    /// `http://host:port`, no trailing slash.
    pub(super) base: String,
    /// `host:port`, to recognise the leader's `http_addr`.
    pub(super) authority: String,
}

/// Parses `http://host:port` (a trailing `/` allowed) into an [`Endpoint`].
pub(super) fn parse_endpoint(text: &str) -> Result<Endpoint> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: text.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = text.trim().trim_end_matches('/');
    let uri: Uri = trimmed
        .parse()
        .map_err(|_| invalid("not a URL; expected http://host:port"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(invalid("only http:// is supported")),
        None => return Err(invalid("missing http:// scheme")),
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
    Ok(Endpoint {
        base: format!("http://{authority}"),
        authority: authority.as_str().to_owned(),
    })
}

/// A leader's `http_addr` as `host:port` (with or without a scheme).
pub(super) fn authority_of(http_addr: &str) -> &str {
    let without_scheme = http_addr.strip_prefix("http://").unwrap_or(http_addr);
    without_scheme.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    #[test]
    fn endpoints_parse_strictly() {
        let e = parse_endpoint("http://127.0.0.1:8080/").expect("valid endpoint");
        assert_eq!(e.base, "http://127.0.0.1:8080");
        assert_eq!(e.authority, "127.0.0.1:8080");
        for bad in [
            "127.0.0.1:8080",
            "https://h:1",
            "http://h",
            "http://h:1/x",
            "http://h:1?q=1",
            "not a url",
        ] {
            assert!(
                matches!(parse_endpoint(bad), Err(Error::InvalidEndpoint { .. })),
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
