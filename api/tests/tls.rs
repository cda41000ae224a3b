//! TLS against real `raftkv` processes, with certificates from scripts/tls-certs.sh (openssl):
//! a 3-node cluster serving REST and gRPC over TLS with mTLS and talking to itself over
//! mutually authenticated TLS; plain text to a TLS port, a client trusting another CA, no
//! client certificate, one from another CA, an expired one; a peer without a certificate from
//! the cluster's CA that cannot be heard or join; and a certificate rotated under a write load
//! without a failed write, a bad new one refused with the old one kept.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cli::{Client, ClientOptions, ClientTls, Consistency};
use common::{Proc, http, runtime, wait_until};

/// Makes a CA and its node and client certificates in `dir` with the repository's script.
fn certs(dir: &Path) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/tls-certs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .env("FORCE", "1")
        .output()
        .expect("run scripts/tls-certs.sh (needs openssl)");
    assert!(
        out.status.success(),
        "tls-certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// A client certificate signed by `ca_dir`'s CA that expired in 2020 (`openssl ca` sets the
/// dates), in `dir`: (cert, key).
fn expired_client_cert(ca_dir: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir.join("db")).expect("mkdir");
    std::fs::write(dir.join("db/index.txt"), "").expect("index");
    std::fs::write(dir.join("db/serial"), "1000\n").expect("serial");
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = x\n[x]\ndatabase = db/index.txt\nserial = db/serial\n\
         new_certs_dir = db\ndefault_md = sha256\npolicy = p\n[p]\ncommonName = supplied\n\
         [ext]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n",
    )
    .expect("config");
    let script = format!(
        "set -e; openssl ecparam -name prime256v1 -genkey -noout -out key.pem; \
         openssl req -new -key key.pem -subj /CN=expired -out req.csr; \
         openssl ca -batch -config ca.cnf -cert {ca}/ca-cert.pem -keyfile {ca}/ca-key.pem \
           -in req.csr -out cert.pem -startdate 20200101000000Z -enddate 20200102000000Z \
           -extensions ext -notext 2>/dev/null",
        ca = ca_dir.display()
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}

fn tls_flags(certs: &Path) -> Vec<String> {
    let file = |name: &str| certs.join(name).display().to_string();
    [
        ("tls.enabled", "true".to_string()),
        ("tls.cert_file", file("server-cert.pem")),
        ("tls.key_file", file("server-key.pem")),
        ("tls.ca_file", file("ca-cert.pem")),
        ("tls.enable_mtls", "true".to_string()),
        ("tls.enable_peer_tls", "true".to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
    .collect()
}

/// The TLS client options with the client certificate of `certs` (or none).
fn client_tls(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientTls {
    ClientTls::from_files(ca, identity).expect("read the PEM files")
}

fn client(endpoints: &[String], tls: ClientTls) -> Client {
    let options = ClientOptions {
        tls: Some(tls),
        call_timeout: Duration::from_secs(5),
        ..ClientOptions::default()
    };
    Client::with_options(endpoints, options).expect("a client")
}

fn with_identity(certs: &Path) -> ClientTls {
    client_tls(
        &certs.join("ca-cert.pem"),
        Some((
            &certs.join("client-cert.pem"),
            &certs.join("client-key.pem"),
        )),
    )
}

/// Starts n1 (founding) and n2, n3 (joining over HTTPS) with `flags`; waits for three voters.
fn secured_cluster(root: &Path, certs: &Path) -> (Proc, Proc, Proc) {
    let flags = tls_flags(certs);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root, None, &flags);
    let probe = client(&[format!("https://{}", n1.http)], with_identity(certs));
    wait_until("n1 is ready over TLS", || {
        runtime().block_on(probe.ready()).is_ok_and(|r| r.ready)
    });
    let join = format!("https://{}", n1.http);
    let mut n2 = Proc::configure("n2", root, Some(join.clone()), &flags);
    let mut n3 = Proc::configure("n3", root, Some(join), &flags);
    n2.start();
    n3.start();
    wait_until("three voters", || {
        runtime()
            .block_on(probe.nodes())
            .is_ok_and(|nodes| nodes.iter().filter(|n| n.role == "follower").count() == 2)
    });
    (n1, n2, n3)
}

#[test]
fn a_cluster_over_tls_serves_certified_clients_only_and_hears_certified_peers_only() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = certs(&root.path().join("certs"));
    let other = self::certs(&root.path().join("other-ca"));
    let (n1, n2, n3) = secured_cluster(root.path(), &certs);
    let all: Vec<String> = [&n1, &n2, &n3]
        .iter()
        .map(|n| format!("https://{}", n.http))
        .collect();
    let grpc: Vec<String> = [&n1, &n2, &n3]
        .iter()
        .map(|n| format!("grpcs://{}", n.grpc))
        .collect();
    runtime().block_on(async {
        // Given a client with a certificate from the cluster's CA: writes through a follower
        // are forwarded to the leader over HTTPS (the follower presents its own certificate),
        // and reads come back over REST and gRPC.
        let follower_first = client(&[all[1].clone()], with_identity(&certs));
        follower_first
            .put("k", "v")
            .await
            .expect("a write over TLS");
        let over_grpc = client(&grpc, with_identity(&certs));
        let kv = over_grpc
            .get("k", Consistency::Linearizable)
            .await
            .expect("a read over gRPC with TLS");
        assert_eq!(&kv.value[..], b"v");
        over_grpc
            .put("g", "1")
            .await
            .expect("a write over gRPC with TLS");

        // Then every other client is refused.
        let refused = |tls: ClientTls, what: &str| {
            let endpoints = all.clone();
            let what = what.to_string();
            async move {
                let c = client(&endpoints[..1], tls);
                let outcome = c.get("k", Consistency::Stale).await;
                assert!(outcome.is_err(), "{what}: {outcome:?}");
            }
        };
        refused(
            client_tls(&certs.join("ca-cert.pem"), None),
            "no client certificate",
        )
        .await;
        refused(
            client_tls(
                &certs.join("ca-cert.pem"),
                Some((
                    &other.join("client-cert.pem"),
                    &other.join("client-key.pem"),
                )),
            ),
            "a client certificate from another CA",
        )
        .await;
        refused(
            client_tls(
                &other.join("ca-cert.pem"),
                Some((
                    &certs.join("client-cert.pem"),
                    &certs.join("client-key.pem"),
                )),
            ),
            "a client that trusts another CA",
        )
        .await;
        let (cert, key) = expired_client_cert(&certs, &root.path().join("expired"));
        refused(
            client_tls(&certs.join("ca-cert.pem"), Some((&cert, &key))),
            "an expired client certificate",
        )
        .await;
    });
    // Plain text to the TLS port gets no HTTP answer.
    assert_eq!(http(&n1.http, "GET", "/health", b"").0, 0);

    // A peer without a certificate from the cluster's CA cannot be heard: plain bytes, and a
    // TLS client with another CA's certificate, are cut off at the handshake,
    let refusals = || n2.log_text().matches("refused a peer connection").count();
    let before = refusals();
    let mut plain = TcpStream::connect(&n2.raft).expect("connect to the peer port");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = plain.write_all(b"\x00\x00\x00\x10not a raft frame");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    // At most a TLS alert (content type 21), never a Raft frame.
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    wait_until("the plain connection's refusal is logged", || {
        refusals() > before
    });
    let foreign = runtime().block_on(tls_handshake(&n2.raft, &other, "server"));
    assert!(
        foreign.as_ref().is_err_and(|e| e.contains("alert")),
        "a peer certificate of another CA is refused at the handshake: {foreign:?}"
    );
    wait_until("the foreign certificate's refusal is logged", || {
        refusals() > before + 1
    });
    // A client certificate of the cluster's own CA is not a node certificate: refused too.
    let client_cert = runtime().block_on(tls_handshake(&n2.raft, &certs, "client"));
    assert!(
        client_cert.as_ref().is_err_and(|e| e.contains("alert")),
        "a client certificate on the peer port is refused at the handshake: {client_cert:?}"
    );
    wait_until("the client certificate's refusal is logged", || {
        refusals() > before + 2
    });
    // A peer with the cluster's own node certificate does get through the handshake (the node
    // then closes the connection over the made-up frame, without a TLS alert).
    let own = runtime().block_on(tls_handshake(&n2.raft, &certs, "server"));
    assert!(
        !own.as_ref().is_err_and(|e| e.contains("alert")),
        "the cluster's own certificate: {own:?}"
    );
    // and a node whose certificates come from another CA cannot join.
    let flags = tls_flags(&other);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut stranger = Proc::configure(
        "stranger",
        root.path(),
        Some(format!("https://{}", n1.http)),
        &flags,
    );
    stranger.start();
    wait_until("the stranger gives up or keeps failing", || {
        stranger
            .log_text()
            .contains("cannot reach the cluster to join")
            || stranger.log_text().contains("refused")
    });
    // The cluster went on serving all along, and has three members still.
    runtime().block_on(async {
        let c = client(&all, with_identity(&certs));
        c.put("after", "1").await.expect("still serving");
        assert_eq!(c.nodes().await.expect("members").len(), 3);
    });
    drop(n3);
}

/// A TLS handshake with the peer port at `addr` presenting `certs`' `identity` certificate
/// (`server`: the node certificate; `client`: the client one), then a made-up frame; the
/// outcome (a refused certificate shows as a TLS alert).
async fn tls_handshake(addr: &str, certs: &Path, identity: &str) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.join("ca-cert.pem")).expect("CA") {
        roots.add(cert.expect("a cert")).expect("added");
    }
    let chain = CertificateDer::pem_file_iter(certs.join(format!("{identity}-cert.pem")))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("{identity}-key.pem"))).expect("key");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("identity");
    config.alpn_protocols = vec![api::tls::PEER_ALPN.to_vec()];
    // Another CA: the node's certificate is not trusted here either, so skip checking it and
    // test only whether the node accepts ours.
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(AcceptAnything(
            rustls::crypto::ring::default_provider(),
        )));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("127.0.0.1").expect("a name");
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // In TLS 1.3 a refused client certificate shows on the first read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.write_all(b"\x00\x00\x00\x01x").await;
    let mut buf = [0u8; 16];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(Ok(_)) => Err("closed".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Ok(()),
    }
}

#[derive(Debug)]
struct AcceptAnything(rustls::crypto::CryptoProvider);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The serial number of the certificate the server at `addr` presents (openssl s_client).
fn served_serial(addr: &str, certs: &Path) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -CAfile {ca} -cert {c} -key {k} </dev/null 2>/dev/null \
         | openssl x509 -noout -serial",
        ca = certs.join("ca-cert.pem").display(),
        c = certs.join("client-cert.pem").display(),
        k = certs.join("client-key.pem").display(),
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn serial_of(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_certificate_is_rotated_under_load_without_a_failed_write_and_a_bad_one_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let certs = certs(&root.path().join("certs"));
    // The node reads its certificate from files that are replaced in place.
    let live = root.path().join("live");
    std::fs::create_dir_all(&live).expect("mkdir");
    for name in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        std::fs::copy(certs.join(name), live.join(name)).expect("copy");
    }
    let mut flags = tls_flags(&live);
    flags.truncate(flags.len() - 2); // one node: no peers
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let n1 = Proc::new("n1", root.path(), None, &flags);
    let endpoint = format!("https://{}", n1.http);
    let probe = client(std::slice::from_ref(&endpoint), with_identity(&certs));
    wait_until("ready over TLS", || {
        runtime().block_on(probe.ready()).is_ok_and(|r| r.ready)
    });
    let first = served_serial(&n1.http, &certs);
    assert_eq!(first, serial_of(&certs.join("server-cert.pem")));

    // Given a steady write load over kept-alive connections,
    let stop = Arc::new(AtomicBool::new(false));
    let (written, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, written, failed) = (stop.clone(), written.clone(), failed.clone());
        let c = client(std::slice::from_ref(&endpoint), with_identity(&certs));
        std::thread::spawn(move || {
            runtime().block_on(async {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match c.put(format!("load/{i}"), "v").await {
                        Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
    };
    wait_until("writes flow", || written.load(Ordering::Relaxed) > 20);

    // when a new certificate from the same CA replaces the files (a new serial number) and the
    // node is told with SIGHUP,
    let again = root.path().join("again");
    std::fs::create_dir_all(&again).expect("mkdir");
    for name in ["ca-cert.pem", "ca-key.pem"] {
        std::fs::copy(certs.join(name), again.join(name)).expect("copy");
    }
    let out = Command::new("bash")
        .args([
            "-c",
            &format!(
                "cd {d} && openssl ecparam -name prime256v1 -genkey -noout -out server-key.pem && \
                 openssl req -new -key server-key.pem -subj /CN=raftkv-node -out s.csr && \
                 printf 'extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=DNS:localhost,IP:127.0.0.1\\n' > s.ext && \
                 openssl x509 -req -in s.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 -extfile s.ext -out server-cert.pem 2>/dev/null",
                d = again.display()
            ),
        ])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_serial = serial_of(&again.join("server-cert.pem"));
    assert_ne!(new_serial, first);
    // Key first, then certificate: a reload between the two is refused (they do not match)
    // and the next one, on the certificate's change, succeeds.
    std::fs::copy(again.join("server-key.pem"), live.join("server-key.pem")).expect("key");
    std::fs::copy(again.join("server-cert.pem"), live.join("server-cert.pem")).expect("cert");
    let pid = n1.child.as_ref().expect("running").id().to_string();
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("SIGHUP");
    // then new connections get the new certificate,
    wait_until("the new certificate is served", || {
        served_serial(&n1.http, &certs) == new_serial
    });
    let during = written.load(Ordering::Relaxed);
    wait_until("writes go on", || {
        written.load(Ordering::Relaxed) > during + 20
    });

    // and a bad new certificate is refused with a log line, the one in force kept.
    let refusals = || n1.log_text().matches("refused the new TLS files").count();
    let before = refusals();
    std::fs::write(live.join("server-cert.pem"), "not a certificate\n").expect("garbage");
    Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("SIGHUP");
    wait_until("the refusal is logged", || refusals() > before);
    assert_eq!(served_serial(&n1.http, &certs), new_serial);
    let before = written.load(Ordering::Relaxed);
    wait_until("writes still go on", || {
        written.load(Ordering::Relaxed) > before + 20
    });
    stop.store(true, Ordering::Relaxed);
    load.join().expect("the load thread");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no write failed across the rotations ({} written)",
        written.load(Ordering::Relaxed)
    );
}
