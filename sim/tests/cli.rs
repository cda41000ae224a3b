//! The `lincheck` binary: exit codes 0 (linearizable), 1 (not), 2 (unknown or unreadable), one
//! clear line on stderr for a problem, and the pictures it writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LINCHECK: &str = env!("CARGO_BIN_EXE_lincheck");

/// A put of "1" then a read of it: linearizable.
const GOOD: &str = concat!(
    r#"{"type":"invoke","process":1,"time":10,"f":"put","key":"a","value":"1"}"#,
    "\n",
    r#"{"type":"ok","process":1,"time":20}"#,
    "\n",
    r#"{"type":"invoke","process":2,"time":30,"f":"get","key":"a"}"#,
    "\n",
    r#"{"type":"ok","process":2,"time":40,"value":"1"}"#,
    "\n",
);

/// Two completed puts, then a read of the first: a stale read.
const STALE: &str = concat!(
    r#"{"type":"invoke","process":1,"time":10,"f":"put","key":"a","value":"1"}"#,
    "\n",
    r#"{"type":"ok","process":1,"time":20}"#,
    "\n",
    r#"{"type":"invoke","process":1,"time":30,"f":"put","key":"a","value":"2"}"#,
    "\n",
    r#"{"type":"ok","process":1,"time":40}"#,
    "\n",
    r#"{"type":"invoke","process":3,"time":41,"f":"get","key":"b"}"#,
    "\n",
    r#"{"type":"ok","process":3,"time":42,"value":null}"#,
    "\n",
    r#"{"type":"invoke","process":2,"time":50,"f":"get","key":"a"}"#,
    "\n",
    r#"{"type":"ok","process":2,"time":60,"value":"1"}"#,
    "\n",
);

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test input");
    path
}

fn lincheck(args: &[&str]) -> Output {
    Command::new(LINCHECK)
        .args(args)
        .output()
        .expect("run lincheck")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("lincheck exited (no signal)")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A problem is reported as exactly one line starting `lincheck:`, never as a panic.
fn assert_one_line_error(output: &Output, words: &[&str]) {
    assert_eq!(
        code(output),
        2,
        "stdout: {}\nstderr: {}",
        stdout(output),
        stderr(output)
    );
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("lincheck: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for word in words {
        assert!(err.contains(word), "`{err}` lacks `{word}`");
    }
}

#[test]
fn a_linearizable_history_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "good.jsonl", GOOD);
    let output = lincheck(&[path.to_str().expect("utf-8 path")]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("linearizable"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn a_stale_read_exits_1_and_prints_the_minimal_failing_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "stale.jsonl", STALE);
    let output = lincheck(&[path.to_str().expect("utf-8 path"), "--format", "raftkv"]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let out = stdout(&output);
    assert!(out.starts_with("NOT linearizable"), "{out}");
    assert!(
        out.contains("key \"a\": these 3 of its 3 operations"),
        "{out}"
    );
    assert!(out.contains("<-- cannot be linearized"), "{out}");
    assert!(out.contains("get \"a\" -> \"1\""), "{out}");
    // The unrelated key is not in the failing set.
    assert!(!out.contains("get \"b\""), "{out}");
}

#[test]
fn html_and_svg_pictures_are_written_for_a_violation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "stale.jsonl", STALE);
    let html = dir.path().join("report.html");
    let svg = dir.path().join("report.svg");
    let output = lincheck(&[
        path.to_str().expect("utf-8 path"),
        "--html",
        html.to_str().expect("utf-8 path"),
        "--svg",
        svg.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    let page = std::fs::read_to_string(&html).expect("html written");
    assert!(
        page.starts_with("<!DOCTYPE html>") && page.contains("<svg"),
        "{page}"
    );
    let picture = std::fs::read_to_string(&svg).expect("svg written");
    assert!(picture.starts_with("<svg") && picture.contains("cannot be linearized"));
    // Two process lanes and three bars.
    assert_eq!(picture.matches("<rect x=").count(), 5, "{picture}");
}

#[test]
fn a_spent_time_budget_exits_2_and_says_unknown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "stale.jsonl", STALE);
    let output = lincheck(&[path.to_str().expect("utf-8 path"), "--timeout", "0s"]);
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("unknown: the time budget ran out"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn unreadable_inputs_exit_2_with_one_clear_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.jsonl");
    assert_one_line_error(
        &lincheck(&[missing.to_str().expect("utf-8 path")]),
        &["missing.jsonl", "cannot read"],
    );

    let broken = file(
        dir.path(),
        "broken.jsonl",
        &GOOD.replace(r#""time":30,"#, r#""time":"x","#),
    );
    assert_one_line_error(
        &lincheck(&[broken.to_str().expect("utf-8 path")]),
        &["broken.jsonl:3:", "`time`", "format raftkv"],
    );

    let binary = dir.path().join("binary.dat");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x81]).expect("write");
    assert_one_line_error(
        &lincheck(&[binary.to_str().expect("utf-8 path")]),
        &["not UTF-8"],
    );

    let unknown = file(dir.path(), "notes.md", "hello\n");
    assert_one_line_error(
        &lincheck(&[unknown.to_str().expect("utf-8 path")]),
        &["--format"],
    );

    let wrong = file(dir.path(), "wrong.edn", GOOD);
    assert_one_line_error(
        &lincheck(&[wrong.to_str().expect("utf-8 path"), "--format", "knossos"]),
        &["wrong.edn", "format knossos"],
    );

    let good = file(dir.path(), "good.jsonl", GOOD);
    let bad_timeout = lincheck(&[good.to_str().expect("utf-8 path"), "--timeout", "soon"]);
    assert_eq!(code(&bad_timeout), 2);
    assert!(
        stderr(&bad_timeout).contains("not a duration"),
        "{}",
        stderr(&bad_timeout)
    );
    let bad_format = lincheck(&[good.to_str().expect("utf-8 path"), "--format", "csv"]);
    assert_eq!(code(&bad_format), 2);
}

#[test]
fn the_format_is_recognised_without_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No telling extension: the content decides.
    let etcd = file(
        dir.path(),
        "history",
        "INFO  jepsen.util - 0\t:invoke\t:write\t1\nINFO  jepsen.util - 0\t:ok\t:write\t1\n\
         INFO  jepsen.util - 1\t:invoke\t:read\tnil\nINFO  jepsen.util - 1\t:ok\t:read\tnil\n",
    );
    let output = lincheck(&[etcd.to_str().expect("utf-8 path"), "--stats"]);
    assert_eq!(
        code(&output),
        1,
        "a read of nil after a completed write: {}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("format porcupine-etcd"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn huge_budgets_are_accepted_without_overflow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file(dir.path(), "stale.jsonl", STALE);
    let huge = "99999999999999s";
    let output = lincheck(&[
        path.to_str().expect("utf-8 path"),
        "--timeout",
        huge,
        "--shrink-timeout",
        huge,
    ]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
}
