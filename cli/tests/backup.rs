//! `kvcli backup save` against a fake node that answers `GET /admin/backup` with canned bytes:
//! a whole backup is saved, and a body whose SHA-256 does not match, or that is cut short, is
//! refused with nothing left at FILE.

use std::path::Path;

use clap::Parser;
use cli::command::{self, Cli, Output};
use proto::rest::backup::BackupInfo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the fake node sends: the headers of `info`, then `body` (which may disagree with them),
/// then it closes the connection.
async fn fake_node(info: BackupInfo, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = vec![0u8; 4096];
            let _ = stream.read(&mut request).await;
            let mut head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n",
                info.bytes
            );
            for (name, value) in info.headers() {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
            let _ = stream.shutdown().await;
        }
    });
    format!("http://{addr}")
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
    let file = file.to_str().expect("a UTF-8 path");
    let cli = Cli::try_parse_from(["kvcli", "--endpoints", url, "backup", "save", file])
        .expect("the command line parses");
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
