//! TLS for the client APIs (HTTP and gRPC), and for the calls a node makes to other nodes'
//! client ports (relaying a request to the leader, asking to join), from the files the `tls`
//! settings name: the node's certificate and key, and the CA that client certificates (mTLS)
//! and other nodes' certificates must chain to.
//!
//! The certificate, key and CA are reloaded without a restart (on SIGHUP, and when a file
//! changes: [`RELOAD_POLL`]) and without dropping a connection: the rustls configurations hold
//! resolvers and verifiers that read the current material at each handshake, so established
//! connections keep the keys they agreed on and new ones get the new certificate. New material
//! is checked whole before it replaces the old (it parses, the key matches the certificate, the
//! certificate chains to the CA and is valid now); a bad one is refused with a log line and the
//! old one kept.
//!
//! Only the ring provider is used (../shared/deps.md: no aws-lc build).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};
use tracing::{info, warn};

use crate::config::TlsSection;

/// How often the certificate files are looked at for a change.
pub const RELOAD_POLL: Duration = Duration::from_secs(5);
/// How long a client has to finish its TLS handshake once connected.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The ALPN protocol of peer (Raft) connections, so that a client of another protocol cannot
/// complete a handshake with a peer port by mistake.
pub const PEER_ALPN: &[u8] = b"raftkv-peer/1";
/// Peer connections whose TLS handshake is under way at once; more wait to be accepted.
pub const PEER_HANDSHAKES_MAX: usize = 64;

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(String);

fn error(what: impl fmt::Display) -> TlsError {
    TlsError(what.to_string())
}

/// The certificate, key and CA in force.
struct Material {
    key: Arc<CertifiedKey>,
    /// Checks client certificates against the CA, when a CA is given.
    clients: Option<Arc<dyn ClientCertVerifier>>,
    /// Checks other nodes' certificates against the CA, when a CA is given.
    servers: Option<Arc<WebPkiServerVerifier>>,
    /// The CA's trust anchors, when a CA is given.
    roots: Option<Arc<RootCertStore>>,
}

/// What the files looked like when last read (modification time and length of each).
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The node's TLS material, reloadable.
pub struct Tls {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_file: Option<PathBuf>,
    mtls: bool,
    /// Peer connections use this material too: the node certificate must then serve both
    /// for server and for client authentication.
    peer: bool,
    provider: Arc<CryptoProvider>,
    material: RwLock<Arc<Material>>,
    stamp: Mutex<Stamp>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(error(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn stamp_of(paths: &[&Path]) -> Stamp {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Whether a verification failure means the certificate is unusable: any failure, except a
/// missing client-authentication purpose when the node never presents its certificate as a
/// client (no mTLS between nodes' client ports, no peer TLS).
fn disqualifies(e: &rustls::Error, client_side_used: bool) -> bool {
    client_side_used
        || !matches!(
            e,
            rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        )
}

impl Tls {
    /// The TLS material the settings name, checked; `None` when neither the client APIs nor
    /// the peer transport use TLS.
    pub fn load(settings: &TlsSection) -> Result<Option<Arc<Tls>>, TlsError> {
        if !settings.enabled && !settings.enable_peer_tls {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
            return Err(error("TLS needs tls.cert_file and tls.key_file"));
        };
        if settings.enable_mtls && settings.ca_file.is_none() {
            return Err(error(
                "tls.enable_mtls needs tls.ca_file: client certificates are checked against it",
            ));
        }
        let tls = Tls {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            ca_file: settings.ca_file.clone(),
            mtls: settings.enable_mtls,
            peer: settings.enable_peer_tls,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            material: RwLock::new(Arc::new(Material {
                key: Arc::new(CertifiedKey::new(Vec::new(), placeholder_key())),
                clients: None,
                servers: None,
                roots: None,
            })),
            stamp: Mutex::new(Vec::new()),
        };
        tls.reload()?;
        Ok(Some(Arc::new(tls)))
    }

    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert_file.as_path(), self.key_file.as_path()];
        paths.extend(self.ca_file.as_deref());
        paths
    }

    /// Reads and checks the files (see the module).
    fn read(&self) -> Result<(Material, Stamp), TlsError> {
        let stamp = stamp_of(&self.paths());
        let chain = read_certs(&self.cert_file, "tls.cert_file")?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| error(format!("tls.key_file {}: {e}", self.key_file.display())))?;
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| error(format!("tls.key_file {}: {e}", self.key_file.display())))?;
        let certified = CertifiedKey::new(chain.clone(), signing);
        certified.keys_match().map_err(|e| {
            error(format!(
                "tls.key_file {} is not the key of tls.cert_file {}: {e}",
                self.key_file.display(),
                self.cert_file.display()
            ))
        })?;
        let (mut clients, mut servers, mut roots_kept) = (None, None, None);
        if let Some(ca_file) = &self.ca_file {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca_file, "tls.ca_file")? {
                roots
                    .add(cert)
                    .map_err(|e| error(format!("tls.ca_file {}: {e}", ca_file.display())))?;
            }
            let roots = Arc::new(roots);
            let client_verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&self.provider),
            )
            .build()
            .map_err(|e| error(format!("tls.ca_file {}: {e}", ca_file.display())))?;
            // The node's own certificate must chain to the CA and be valid now: other nodes
            // check it against the same CA.
            let client_side_used = self.mtls || self.peer;
            if let Err(e) =
                client_verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
                && disqualifies(&e, client_side_used)
            {
                return Err(error(format!(
                    "tls.cert_file {} does not verify against tls.ca_file {}: {e}",
                    self.cert_file.display(),
                    ca_file.display()
                )));
            }
            if self.peer {
                server_purpose(
                    &self.provider,
                    &roots,
                    &chain[0],
                    &chain[1..],
                    UnixTime::now(),
                )
                .map_err(|e| {
                    error(format!(
                        "tls.cert_file {} cannot serve peer TLS: {e}",
                        self.cert_file.display()
                    ))
                })?;
            }
            roots_kept = Some(Arc::clone(&roots));
            servers = Some(
                WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&self.provider))
                    .build()
                    .map_err(|e| error(format!("tls.ca_file {}: {e}", ca_file.display())))?,
            );
            clients = Some(client_verifier);
        }
        Ok((
            Material {
                key: Arc::new(certified),
                clients,
                servers,
                roots: roots_kept,
            },
            stamp,
        ))
    }

    fn current(&self) -> Arc<Material> {
        Arc::clone(&self.material.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Reads the files again and, if they are good, uses them for every later handshake;
    /// otherwise keeps the material in force and says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (material, stamp) = self.read()?;
        *self.material.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(material);
        *self.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp;
        Ok(())
    }

    /// Whether a file changed since it was last read.
    fn changed(&self) -> bool {
        stamp_of(&self.paths()) != *self.stamp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether client certificates are required.
    pub fn mtls(&self) -> bool {
        self.mtls
    }

    /// The server side of the client APIs, offering `alpn` (`h2` for gRPC, `http/1.1` for
    /// REST), requiring client certificates under `tls.enable_mtls`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let client_certs = if self.mtls {
            ClientCerts::FromCa
        } else {
            ClientCerts::None
        };
        self.server_side(alpn, client_certs)
    }

    fn server_side(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        client_certs: ClientCerts,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(error)?;
        let builder = match client_certs {
            ClientCerts::None => builder.with_no_client_auth(),
            ClientCerts::FromCa => {
                builder.with_client_cert_verifier(Arc::new(Reloading(Arc::clone(self))))
            }
            ClientCerts::Nodes => {
                builder.with_client_cert_verifier(Arc::new(NodesOnly(Reloading(Arc::clone(self)))))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(Reloading(Arc::clone(self))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The client side of a node's calls to other nodes' client ports (same CA; its own
    /// certificate when mTLS is on), offering `alpn`.
    pub fn client_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
        self.client_side(alpn, self.mtls)
    }

    fn client_side(
        self: &Arc<Self>,
        alpn: &[&[u8]],
        identity: bool,
    ) -> Result<ClientConfig, TlsError> {
        if self.ca_file.is_none() {
            return Err(error(
                "tls.ca_file is needed: a node checks other nodes' certificates against it when it forwards a request or joins",
            ));
        }
        let builder = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Reloading(Arc::clone(self))));
        let mut config = if identity {
            builder.with_client_cert_resolver(Arc::new(Reloading(Arc::clone(self))))
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// Both sides of peer (Raft) connections: certificates required and checked both ways
    /// against the CA, and a connecting peer's must be a node certificate (valid for server
    /// authentication too), so that a client certificate from the same CA cannot speak Raft.
    pub fn peer_configs(
        self: &Arc<Self>,
    ) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>), TlsError> {
        Ok((
            self.server_side(&[PEER_ALPN], ClientCerts::Nodes)?,
            Arc::new(self.client_side(&[PEER_ALPN], true)?),
        ))
    }
}

/// A key that signs nothing: the material's stand-in for the instant before the first read.
fn placeholder_key() -> Arc<dyn rustls::sign::SigningKey> {
    #[derive(Debug)]
    struct Nothing;
    impl rustls::sign::SigningKey for Nothing {
        fn choose_scheme(&self, _: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
            None
        }
        fn algorithm(&self) -> rustls::SignatureAlgorithm {
            rustls::SignatureAlgorithm::Anonymous
        }
    }
    Arc::new(Nothing)
}

/// Which client certificates a server side asks for.
#[derive(Clone, Copy)]
enum ClientCerts {
    /// None.
    None,
    /// Any from the CA (mTLS on the client APIs).
    FromCa,
    /// Only nodes' certificates from the CA: also valid for server authentication.
    Nodes,
}

/// Checks that `cert` chains to `roots` and is valid now for server authentication: what a
/// node certificate is and a client certificate is not.
fn server_purpose(
    provider: &CryptoProvider,
    roots: &RootCertStore,
    cert: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let end_entity = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| rustls::Error::General(format!("the certificate does not parse: {e}")))?;
    end_entity
        .verify_for_usage(
            provider.signature_verification_algorithms.all,
            &roots.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map(drop)
        .map_err(|e| {
            rustls::Error::General(format!(
                "not a node certificate of this cluster (it must chain to tls.ca_file and allow server authentication): {e}"
            ))
        })
}

/// The client verifier of the peer port: [`Reloading`]'s, and the certificate must also be a
/// node certificate ([`server_purpose`]).
#[derive(Debug)]
struct NodesOnly(Reloading);

impl ClientCertVerifier for NodesOnly {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let material = self.0.0.current();
        let roots = material.roots.as_ref().ok_or_else(no_ca)?;
        server_purpose(&self.0.0.provider, roots, end_entity, intermediates, now)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(&self.0, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(&self.0, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(&self.0)
    }
}

/// Reads the material in force at each handshake (see the module).
#[derive(Debug)]
struct Reloading(Arc<Tls>);

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }
}

impl ResolvesClientCert for Reloading {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.current().key))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn no_ca() -> rustls::Error {
    rustls::Error::General("no CA is configured (tls.ca_file)".into())
}

impl ClientCertVerifier for Reloading {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; a client then offers the certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let material = self.0.current();
        let verifier = material.clients.as_ref().ok_or_else(no_ca)?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ServerCertVerifier for Reloading {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let material = self.0.current();
        let verifier = material.servers.as_ref().ok_or_else(no_ca)?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ClientCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        ClientCertVerifier::supported_verify_schemes(self)
    }
}

/// Reloads `tls` on SIGHUP and whenever its files change (looked at every [`RELOAD_POLL`]),
/// logging what happened; ends when `shutdown` turns true.
pub async fn watch_files(tls: Arc<Tls>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP; TLS files are still reloaded when they change");
            None
        }
    };
    let mut poll = tokio::time::interval(RELOAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = poll.tick() => {
                if !tls.changed() {
                    continue;
                }
                "a file changed"
            }
            Some(()) = async {
                match hangups.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
            _ = shutdown.changed() => return,
        };
        match tls.reload() {
            Ok(_) => {
                info!(why, cert = %tls.cert_file.display(), "TLS certificate, key and CA reloaded; new connections use them")
            }
            Err(e) => {
                // Not looked at again until the files change once more.
                *tls.stamp.lock().unwrap_or_else(|p| p.into_inner()) = stamp_of(&tls.paths());
                warn!(why, error = %e, "refused the new TLS files; the ones in force are kept");
            }
        }
    }
}

/// A connector for a node's calls to other nodes' client ports: HTTPS with this node's TLS
/// material (its CA, and its certificate under mTLS) when TLS is on, plain HTTP otherwise.
/// `http2`: offer only HTTP/2 (gRPC), else only HTTP/1.1.
pub fn connector(
    tls: Option<&Arc<Tls>>,
    mut http: hyper_util::client::legacy::connect::HttpConnector,
    http2: bool,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    TlsError,
> {
    http.enforce_http(false);
    let config = match tls {
        Some(tls) => tls.client_config(&[])?,
        // Never used for https (the URLs are http:// without TLS), but the connector wants one.
        None => {
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(error)?
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth()
        }
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    Ok(if http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    })
}

/// The URL scheme of other nodes' client ports: `https` when TLS is on.
pub fn scheme(tls: Option<&Arc<Tls>>) -> &'static str {
    if tls.is_some() { "https" } else { "http" }
}

/// A peer stream: plain TCP, or TLS over it.
pub type PeerStream<T> = tokio_util::either::Either<tokio::net::TcpStream, T>;

/// The peer transport's outgoing connections: plain TCP, or TLS with this node's certificate
/// checked by the peer and the peer's checked against the CA (`tls.enable_peer_tls`).
#[derive(Clone)]
pub struct PeerNetwork {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl PeerNetwork {
    /// Plain TCP, or TLS with `config` ([`Tls::peer_configs`]).
    pub fn new(config: Option<Arc<ClientConfig>>) -> PeerNetwork {
        PeerNetwork {
            tls: config.map(tokio_rustls::TlsConnector::from),
        }
    }
}

impl raft::transport::Network for PeerNetwork {
    type Stream = PeerStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

    async fn connect(&self, addr: String) -> std::io::Result<Self::Stream> {
        let tcp = raft::transport::TcpNetwork.connect(addr.clone()).await?;
        let Some(connector) = &self.tls else {
            return Ok(tokio_util::either::Either::Left(tcp));
        };
        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
        let name =
            ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
            })?;
        let secured = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        Ok(tokio_util::either::Either::Right(secured))
    }
}

type Accepted = std::io::Result<(
    PeerStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    std::net::SocketAddr,
)>;

/// Where peers' connections come in: the TCP listener, with each TLS handshake done on its
/// own task (at most [`PEER_HANDSHAKES_MAX`] at once) so that a slow or hostile client holds
/// up no other; a connection whose handshake fails (no certificate, one not from the CA) is
/// closed before it can send a frame, and logged.
pub struct PeerListener {
    plain: Option<tokio::net::TcpListener>,
    secured: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Accepted>>,
}

impl PeerListener {
    /// Serves `listener` plain, or over TLS with `config`.
    pub fn new(
        listener: tokio::net::TcpListener,
        config: Option<Arc<ServerConfig>>,
    ) -> PeerListener {
        let (tx, rx) = tokio::sync::mpsc::channel(PEER_HANDSHAKES_MAX);
        let Some(config) = config else {
            return PeerListener {
                plain: Some(listener),
                secured: tokio::sync::Mutex::new(rx),
            };
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(tokio::sync::Semaphore::new(PEER_HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match raft::transport::Listener::accept(&listener).await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let (acceptor, handed) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(secured)) => {
                            let _ = handed
                                .send(Ok((tokio_util::either::Either::Right(secured), addr)))
                                .await;
                        }
                        Ok(Err(e)) => {
                            warn!(%addr, error = %e, "refused a peer connection: its TLS handshake failed (a peer needs a certificate from the cluster's CA)")
                        }
                        Err(_) => {
                            warn!(%addr, "refused a peer connection: its TLS handshake was too slow")
                        }
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        PeerListener {
            plain: None,
            secured: tokio::sync::Mutex::new(rx),
        }
    }
}

impl raft::transport::Listener for PeerListener {
    type Stream = PeerStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

    async fn accept(&self) -> std::io::Result<(Self::Stream, std::net::SocketAddr)> {
        if let Some(listener) = &self.plain {
            let (tcp, addr) = raft::transport::Listener::accept(listener).await?;
            return Ok((tokio_util::either::Either::Left(tcp), addr));
        }
        match self.secured.lock().await.recv().await {
            Some(accepted) => accepted,
            None => Err(std::io::Error::other("the peer listener stopped")),
        }
    }
}
