//! TLS for the client: `https://` and `grpcs://` endpoints, checked against the CA the caller
//! gives ([`ClientTls`]), with a client certificate when the cluster requires mTLS. rustls
//! with the ring provider, as the server.

use std::sync::Arc;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::{Error, Result};
use crate::types::ClientTls;

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("TLS: {what}: {e}"))
}

/// The rustls client configuration for `tls` (none: plain endpoints only).
fn config(tls: Option<&ClientTls>) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", e))?;
    let Some(tls) = tls else {
        return Ok(builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth());
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&tls.ca_cert_pem) {
        roots
            .add(cert.map_err(|e| bad("the CA certificate", e))?)
            .map_err(|e| bad("the CA certificate", e))?;
    }
    if roots.is_empty() {
        return Err(bad("the CA certificate", "no PEM certificate in it"));
    }
    let builder = builder.with_root_certificates(roots);
    match &tls.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert_pem, key_pem)) => {
            let chain = CertificateDer::pem_slice_iter(cert_pem)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| bad("the client certificate", e))?;
            let key =
                PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad("the client key", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad("the client certificate and key", e))
        }
    }
}

/// A connector for `http://` and `https://` URLs; `http2`: HTTP/2 only (gRPC), else HTTP/1.1.
pub(super) fn connector(
    tls: Option<&ClientTls>,
    mut http: HttpConnector,
    http2: bool,
) -> Result<HttpsConnector<HttpConnector>> {
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config(tls)?)
        .https_or_http();
    Ok(if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}

/// The TLS connector of a `grpcs://` endpoint's HTTP/2 connections (ALPN `h2`).
pub(super) fn grpc_connector(tls: Option<&ClientTls>) -> Result<tokio_rustls::TlsConnector> {
    let mut config = config(tls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
