//! The deployment files of `deployments/` (issue 17), checked as their tools check them: the
//! systemd unit passes `systemd-analyze verify` with not even a warning (an unknown or
//! misspelt key is only a warning there, and would silently drop a hardening option).

use std::path::Path;
use std::process::Command;

fn deployments() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deployments")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let unit = std::fs::read_to_string(deployments().join("systemd/raftkv.service"))
        .expect("deployments/systemd/raftkv.service");
    // Given the shipped unit, its binary where this build put it (verify checks that the
    // command exists and is executable),
    let shipped = "ExecStart=/usr/local/bin/raftkv ";
    assert!(
        unit.contains(shipped),
        "the unit runs {shipped:?} as its docs say"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raftkv.service");
    std::fs::write(
        &path,
        unit.replace(
            shipped,
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_raftkv")),
        ),
    )
    .unwrap();
    // when systemd checks it,
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it) checks the unit");
    // then it finds nothing to say.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warned:\n{said}"
    );
}
