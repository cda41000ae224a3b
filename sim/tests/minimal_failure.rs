//! The smallest failing set: what shrinking keeps, that it is sound (never a read "from thin
//! air" whose write was dropped), and how it is shown.

use std::time::Duration;

use sim::lincheck::formats::{self, parse};
use sim::lincheck::{CheckOptions, Format, Verdict, picture};

const SHRINK_BUDGET: Duration = Duration::from_secs(10);

fn invoke(process: u64, time: u64, f: &str, key: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!(
            r#"{{"type":"invoke","process":{process},"time":{time},"f":"{f}","key":"{key}","value":"{v}"}}"#
        ),
        None => format!(
            r#"{{"type":"invoke","process":{process},"time":{time},"f":"{f}","key":"{key}"}}"#
        ),
    }
}

fn ok(process: u64, time: u64) -> String {
    format!(r#"{{"type":"ok","process":{process},"time":{time}}}"#)
}

fn read(process: u64, time: u64, value: Option<&str>) -> String {
    let value = value.map_or("null".to_string(), |v| format!("\"{v}\""));
    format!(r#"{{"type":"ok","process":{process},"time":{time},"value":{value}}}"#)
}

fn info(process: u64, time: u64) -> String {
    format!(r#"{{"type":"info","process":{process},"time":{time}}}"#)
}

/// Analyzes raftkv lines; returns the report text and the minimal set as call descriptions.
fn analyze(lines: &[String]) -> (sim::lincheck::Analysis, sim::lincheck::History) {
    let loaded = parse(Format::Raftkv, &(lines.join("\n") + "\n")).expect("valid history");
    let analysis = loaded
        .model
        .analyze(&loaded.history, &CheckOptions::default(), SHRINK_BUDGET)
        .expect("checkable");
    (analysis, loaded.history)
}

fn described(history: &sim::lincheck::History, ids: &[usize]) -> Vec<String> {
    ids.iter()
        .map(|&id| history.calls[id].to_string())
        .collect()
}

#[test]
fn a_stale_read_among_noise_shrinks_to_the_two_writes_and_the_read() {
    let mut lines = vec![
        invoke(0, 0, "put", "k", Some("1")),
        ok(0, 1),
        invoke(0, 2, "put", "k", Some("2")),
        ok(0, 3),
    ];
    // Readers that saw "2" (noise), an unrelated key, and a write of unknown outcome.
    for p in 1..5u64 {
        lines.push(invoke(p, 3 + p * 2, "get", "k", None));
        lines.push(read(p, 4 + p * 2, Some("2")));
    }
    lines.push(invoke(7, 14, "put", "other", Some("x")));
    lines.push(info(7, 15));
    lines.push(invoke(9, 20, "get", "k", None));
    lines.push(read(9, 21, Some("1")));
    let (analysis, history) = analyze(&lines);
    assert_eq!(analysis.report.verdict, Verdict::NotLinearizable);
    let minimal = analysis.minimal.expect("a violation is shrunk");
    assert_eq!(
        described(&history, &minimal.calls),
        [
            "put \"k\"=\"1\" ok",
            "put \"k\"=\"2\" ok",
            "get \"k\" -> \"1\""
        ]
    );
    assert!(minimal.one_minimal);
    assert_eq!(minimal.label, "key \"k\"");
    assert_eq!(minimal.original_len, 7);
    // The text shows the timeline, the best attempt and the culprit.
    let text = &analysis.text;
    assert!(
        text.contains("these 3 of its 7 operations cannot be linearized"),
        "{text}"
    );
    assert!(
        text.contains("longest linearizable order found: #0 #1"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("get \"k\" -> \"1\"") && l.ends_with("<-- cannot be linearized")),
        "{text}"
    );
}

#[test]
fn shrinking_never_drops_the_write_a_read_saw() {
    // put 1, put 2 (both done), then reads of 2 and a late read of 1. Removing the puts would
    // leave reads that "cannot be linearized" only because their writes were dropped; the
    // shrunk set must keep a put of every value it reads.
    let mut lines = vec![
        invoke(0, 0, "put", "k", Some("1")),
        ok(0, 1),
        invoke(0, 2, "put", "k", Some("2")),
        ok(0, 3),
    ];
    for p in 1..8u64 {
        lines.push(invoke(p, 3 + p * 2, "get", "k", None));
        lines.push(read(p, 4 + p * 2, Some("2")));
    }
    lines.push(invoke(9, 30, "get", "k", None));
    lines.push(read(9, 31, Some("1")));
    let (analysis, history) = analyze(&lines);
    let minimal = analysis.minimal.expect("a violation is shrunk");
    let calls = described(&history, &minimal.calls);
    for call in &calls {
        if let Some(seen) = call.strip_prefix("get \"k\" -> ") {
            let value = seen.trim_matches('"');
            assert!(
                calls
                    .iter()
                    .any(|c| c == &format!("put \"k\"=\"{value}\" ok")),
                "{calls:?} reads {value} without its write"
            );
        }
    }
}

#[test]
fn a_write_of_unknown_outcome_cannot_appear_and_then_disappear() {
    let lines = vec![
        invoke(1, 0, "put", "k", Some("7")),
        info(1, 1),
        invoke(2, 2, "get", "k", None),
        read(2, 3, Some("7")),
        invoke(3, 4, "get", "k", None),
        read(3, 5, None),
    ];
    let (analysis, history) = analyze(&lines);
    assert_eq!(analysis.report.verdict, Verdict::NotLinearizable);
    let minimal = analysis.minimal.expect("a violation is shrunk");
    // The two reads, with the unknown write relaxed (it is already free to float).
    assert_eq!(
        described(&history, &minimal.calls),
        ["get \"k\" -> \"7\"", "get \"k\" -> absent"]
    );
    assert_eq!(minimal.relaxed, 1);
    assert!(minimal.one_minimal);
}

#[test]
fn a_lost_acknowledged_write_shrinks_to_the_write_and_the_read() {
    let lines = vec![
        invoke(1, 0, "put", "k", Some("1")),
        invoke(2, 1, "put", "j", Some("1")),
        ok(1, 2),
        ok(2, 3),
        invoke(1, 4, "get", "j", None),
        read(1, 5, Some("1")),
        invoke(2, 6, "get", "k", None),
        read(2, 7, None),
    ];
    let (analysis, history) = analyze(&lines);
    let minimal = analysis.minimal.expect("a violation is shrunk");
    assert_eq!(
        described(&history, &minimal.calls),
        ["put \"k\"=\"1\" ok", "get \"k\" -> absent"]
    );
    assert_eq!(minimal.culprit, Some(minimal.calls[1]));
}

#[test]
fn the_knossos_minimal_rethink_failure_shrinks_to_the_read_nobody_wrote() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/linearizability/knossos/cas-register/bad/rethink-fail-minimal.edn"
    );
    let loaded = formats::load(std::path::Path::new(path), None)
        .unwrap_or_else(|e| panic!("the shared histories are missing ({e})"));
    let analysis = loaded
        .model
        .analyze(&loaded.history, &CheckOptions::default(), SHRINK_BUDGET)
        .expect("checkable");
    assert_eq!(analysis.report.verdict, Verdict::NotLinearizable);
    let minimal = analysis.minimal.expect("a violation is shrunk");
    // Nothing ever writes 3, so the read of 3 fails alone, whatever the two writes did.
    assert!(minimal.one_minimal);
    assert_eq!(
        described(&loaded.history, &minimal.calls),
        ["get \"\" -> \"3\""]
    );
    assert_eq!(minimal.relaxed, 2);
    assert_eq!(minimal.culprit, Some(minimal.calls[0]));

    // Its picture has one red culprit and escapes everything.
    let svg = picture::svg(&loaded.history, &minimal, "rethink <minimal>");
    assert_eq!(svg.matches("fill=\"#d64541\" stroke").count(), 1, "{svg}");
    assert!(svg.contains("rethink &lt;minimal&gt;"));
}
