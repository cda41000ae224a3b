//! `kvcli backup save` against fake nodes that answer `GET /admin/backup` with canned bytes:
//! a whole backup is saved, readable by its owner only; a body whose SHA-256 does not match,
//! or that is cut short, is refused with nothing left at FILE; a node slow to start is waited
//! for past the global `--timeout`, up to `--wait`, and a node that is busy is passed over for
//! the next while one that does not answer in time is not.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use cli::command::{self, Cli, Output};
use proto::rest::backup::{BackupInfo, hex};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a fake node does with each request.
#[derive(Clone)]
enum Behaviour {
    /// After `delay`, the headers of `info`, then `body` (which may disagree with them), then
    /// it closes the connection.
    Serve {
        info: BackupInfo,
        body: Vec<u8>,
        delay: Duration,
    },
    /// `503 overloaded`, as a node serving its most backups answers.
    Busy,
    /// Reads the request and never answers (a node still taking its snapshot).
    Silent,
}

/// A fake node; its URL, and how many requests it has read.
async fn fake(behaviour: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = listener.local_addr().expect("an address");
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let behaviour = behaviour.clone();
            let counted = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = stream.read(&mut request).await;
                counted.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Serve { info, body, delay } => {
                        tokio::time::sleep(delay).await;
                        answer(&mut stream, &info, &body).await;
                    }
                    Behaviour::Busy => {
                        let body = r#"{"error":"this node is serving 2 backups already","code":"overloaded"}"#;
                        let head = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(body.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    }
                    Behaviour::Silent => {
                        // Holds the connection open until the client gives up.
                        let _ = stream.read(&mut request).await;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), asked)
}

/// A fake node that serves `body` at once under the headers of `info`.
async fn fake_node(info: BackupInfo, body: Vec<u8>) -> String {
    let serve = Behaviour::Serve {
        info,
        body,
        delay: Duration::ZERO,
    };
    fake(serve).await.0
}

/// Sends the headers of `info`, then `body`, then closes the connection.
async fn answer(stream: &mut tokio::net::TcpStream, info: &BackupInfo, body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n",
        info.bytes
    );
    for (name, value) in info.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

fn info_of(body: &[u8]) -> BackupInfo {
    BackupInfo {
        index: 40,
        term: 2,
        keys: 3,
        bytes: body.len() as u64,
        sha256: hex(&Sha256::digest(body)),
        cluster_id: "00000000000000ab".to_owned(),
    }
}

/// Runs `kvcli --endpoints URL backup save FILE`; returns the exit code, stdout and the one
/// error line kvcli would print.
async fn save(url: &str, file: &Path) -> (u8, String, String) {
    save_with(url, file, &[], &[]).await
}

/// Runs `kvcli --endpoints URLS [GLOBAL...] backup save [FLAGS...] FILE`, as [`save`].
async fn save_with(
    urls: &str,
    file: &Path,
    global: &[&str],
    flags: &[&str],
) -> (u8, String, String) {
    let file = file.to_str().expect("a UTF-8 path");
    let mut args = vec!["kvcli", "--endpoints", urls];
    args.extend_from_slice(global);
    args.extend(["backup", "save"]);
    args.extend_from_slice(flags);
    args.push(file);
    let cli = Cli::try_parse_from(args).expect("the command line parses");
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    let outcome = command::run(
        cli,
        &mut std::io::empty(),
        Output {
            out: &mut out,
            notes: &mut notes,
            terminal: false,
        },
    )
    .await;
    let (code, error) = match outcome {
        Ok(()) => (command::EXIT_OK, String::new()),
        Err(e) => (command::exit_code(&e), format!("error: {e}")),
    };
    (code, String::from_utf8_lossy(&out).into_owned(), error)
}

/// Whether `dir` holds nothing but the files named.
fn only(dir: &Path, names: &[&str]) -> bool {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("listed")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    found == names
}

#[tokio::test]
async fn a_whole_backup_is_saved_with_what_it_is() {
    // Given a node that sends a backup whose digest matches,
    let body = b"RKVSNAP\0 pretend this is a snapshot".to_vec();
    let info = info_of(&body);
    let url = fake_node(info.clone(), body.clone()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    // when it is saved,
    let (code, out, notes) = save(&url, &file).await;
    // then the file holds exactly the body, the answer says what it is, and no part is left.
    assert_eq!(code, command::EXIT_OK, "{notes}");
    assert_eq!(std::fs::read(&file).expect("saved"), body);
    assert!(out.contains("index 40, term 2, 3 keys"), "{out}");
    assert!(out.contains(&info.sha256), "{out}");
    assert!(only(dir.path(), &["cluster.backup"]));
}

#[cfg(unix)]
#[tokio::test]
async fn a_saved_backup_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    // Given a node that serves a backup, and an earlier file at FILE readable by all,
    let body = b"RKVSNAP\0 password hashes and a signing key".to_vec();
    let url = fake_node(info_of(&body), body.clone()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    std::fs::write(&file, b"the earlier backup").expect("written");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("set");
    // when a backup is saved over it,
    let (code, _, notes) = save(&url, &file).await;
    assert_eq!(code, command::EXIT_OK, "{notes}");
    // then FILE is the new backup, and only its owner may read or write it.
    assert_eq!(std::fs::read(&file).expect("saved"), body);
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[tokio::test]
async fn a_node_slow_to_start_is_waited_for_past_the_global_timeout() {
    // Given a node that takes 1.5 s before it answers (its snapshot), and a --timeout of
    // 300 ms, which bounds other requests,
    let body = vec![3u8; 5_000];
    let serve = Behaviour::Serve {
        info: info_of(&body),
        body: body.clone(),
        delay: Duration::from_millis(1_500),
    };
    let (url, _) = fake(serve).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    // when a backup is saved, then it is waited for and saved whole.
    let (code, _, notes) = save_with(&url, &file, &["--timeout", "300ms"], &[]).await;
    assert_eq!(code, command::EXIT_OK, "{notes}");
    assert_eq!(std::fs::read(&file).expect("saved"), body);
}

#[tokio::test]
async fn a_node_that_does_not_answer_within_wait_is_not_followed_by_another() {
    // Given a node that never answers (still snapshotting), then one that would serve,
    let body = vec![5u8; 1_000];
    let (silent, silent_asked) = fake(Behaviour::Silent).await;
    let serve = Behaviour::Serve {
        info: info_of(&body),
        body,
        delay: Duration::ZERO,
    };
    let (serving, serving_asked) = fake(serve).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    // when a backup is saved with --wait 500ms,
    let urls = format!("{silent},{serving}");
    let (code, _, notes) = save_with(&urls, &file, &[], &["--wait", "500ms"]).await;
    // then it fails, saying to wait longer, and the second node was never asked (it would
    // have taken a snapshot of its own), and nothing is left.
    assert_eq!(code, command::EXIT_UNAVAILABLE, "{notes}");
    assert!(notes.contains("--wait"), "{notes}");
    assert_eq!(silent_asked.load(Ordering::SeqCst), 1);
    assert_eq!(serving_asked.load(Ordering::SeqCst), 0);
    assert!(only(dir.path(), &[]), "nothing is left");
}

#[tokio::test]
async fn a_busy_or_unreachable_node_is_passed_over_for_the_next() {
    // Given an endpoint where nothing listens, a node serving its most backups (503
    // overloaded), then one that serves,
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bound");
        format!("http://{}", listener.local_addr().expect("an address"))
    };
    let (busy, busy_asked) = fake(Behaviour::Busy).await;
    let body = vec![9u8; 2_000];
    let serve = Behaviour::Serve {
        info: info_of(&body),
        body: body.clone(),
        delay: Duration::ZERO,
    };
    let (serving, _) = fake(serve).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    // when a backup is saved, then the third node's is.
    let urls = format!("{closed},{busy},{serving}");
    let (code, _, notes) = save_with(&urls, &file, &[], &[]).await;
    assert_eq!(code, command::EXIT_OK, "{notes}");
    assert_eq!(busy_asked.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read(&file).expect("saved"), body);
}

#[tokio::test]
async fn a_body_whose_digest_does_not_match_is_refused_and_nothing_is_left() {
    // Given a node whose body was damaged after its digest was taken (one byte flipped),
    let body = b"RKVSNAP\0 pretend this is a snapshot".to_vec();
    let info = info_of(&body);
    let mut damaged = body.clone();
    damaged[10] ^= 0x01;
    let url = fake_node(info, damaged).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    // when it is saved, then kvcli refuses with one line and no file is left.
    let (code, _, notes) = save(&url, &file).await;
    assert_eq!(code, command::EXIT_ERROR);
    assert!(notes.contains("SHA-256"), "{notes}");
    assert_eq!(notes.trim_end().lines().count(), 1, "{notes}");
    assert!(only(dir.path(), &[]), "nothing is left");
}

#[tokio::test]
async fn a_body_cut_short_is_refused_and_an_earlier_file_is_kept() {
    // Given an earlier backup at FILE, and a node that closes the connection halfway,
    let body = vec![7u8; 10_000];
    let info = info_of(&body);
    let url = fake_node(info, body[..4_000].to_vec()).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("cluster.backup");
    std::fs::write(&file, b"the earlier backup").expect("written");
    // when a new one is saved over it, then kvcli refuses and the earlier one is untouched.
    let (code, _, notes) = save(&url, &file).await;
    assert_eq!(code, command::EXIT_ERROR);
    assert!(notes.contains("did not arrive whole"), "{notes}");
    assert_eq!(std::fs::read(&file).expect("kept"), b"the earlier backup");
    assert!(only(dir.path(), &["cluster.backup"]));
}
