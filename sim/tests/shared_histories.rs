//! Every external history of the team's shared folder (porcupine and knossos test data,
//! verdicts stated by their sources) must get exactly the verdict listed in its `verdicts.tsv`.
//! The histories are vendored, unchanged and with their licenses, in
//! `sim/tests/data/linearizability/` (a copy of `../shared/linearizability/`), so that the
//! test runs on a checkout that has no shared folder beside it, as CI's has not.
//!
//! The format is chosen by the top-level folder, as MANIFEST.md prescribes (the formats give
//! `:fail` and `nil` reads different meanings); a second check makes sure `lincheck`'s content
//! sniffing picks the same format.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sim::lincheck::{CheckOptions, Format, Verdict, formats};

/// The vendored copy of the shared histories.
const SHARED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/linearizability");

/// Budget per history: generous, since a miss here must be a wrong verdict, not a slow machine.
const CHECK_BUDGET_PER_HISTORY: Duration = Duration::from_secs(60);

/// The number of histories MANIFEST.md lists; a different count means the folder changed.
const EXPECTED_HISTORIES: usize = 155;

struct Row {
    path: String,
    expected: Verdict,
}

fn shared_dir() -> PathBuf {
    let dir = Path::new(SHARED_DIR);
    assert!(
        dir.join("verdicts.tsv").is_file(),
        "the vendored linearizability histories are missing: expected {}/verdicts.tsv \
         (copy ../shared/linearizability/ there)",
        dir.display()
    );
    dir.to_path_buf()
}

fn rows(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("verdicts.tsv")).expect("read verdicts.tsv");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            assert!(fields.len() >= 4, "verdicts.tsv: malformed row `{line}`");
            let expected = match fields[3] {
                "linearizable" => Verdict::Linearizable,
                "not-linearizable" => Verdict::NotLinearizable,
                other => panic!("verdicts.tsv: unknown verdict `{other}` in `{line}`"),
            };
            Row {
                path: fields[0].to_string(),
                expected,
            }
        })
        .collect()
}

fn format_of(path: &str) -> Format {
    match path.split('/').next() {
        Some("porcupine-etcd") => Format::PorcupineEtcd,
        Some("porcupine-kv") => Format::PorcupineKv,
        Some("knossos") => Format::Knossos,
        _ => panic!("{path}: no format is known for this folder"),
    }
}

#[test]
fn every_shared_history_gets_exactly_its_stated_verdict() {
    let dir = shared_dir();
    let rows = rows(&dir);
    assert_eq!(rows.len(), EXPECTED_HISTORIES, "verdicts.tsv changed size");
    let options = CheckOptions {
        budget: CHECK_BUDGET_PER_HISTORY,
        ..CheckOptions::default()
    };
    let mut mismatches = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let started = Instant::now();
    for row in &rows {
        let file = dir.join(&row.path);
        let loaded = match formats::load(&file, Some(format_of(&row.path))) {
            Ok(loaded) => loaded,
            Err(error) => {
                mismatches.push(format!("{}: unreadable: {error}", row.path));
                continue;
            }
        };
        let report = match loaded.model.check(&loaded.history, &options) {
            Ok(report) => report,
            Err(error) => {
                mismatches.push(format!("{}: cannot check: {error}", row.path));
                continue;
            }
        };
        if report.elapsed > slowest.0 {
            slowest = (report.elapsed, row.path.clone());
        }
        if report.verdict != row.expected {
            mismatches.push(format!(
                "{}: expected {}, got {} ({:.3} s)",
                row.path,
                row.expected,
                report.verdict,
                report.elapsed.as_secs_f64()
            ));
        }
    }
    println!(
        "{}/{} shared histories got their stated verdict in {:.2} s (slowest: {} in {:.3} s)",
        rows.len() - mismatches.len(),
        rows.len(),
        started.elapsed().as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    assert!(
        mismatches.is_empty(),
        "verdict mismatches:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn content_sniffing_picks_each_shared_history_s_format() {
    let dir = shared_dir();
    let mut wrong = Vec::new();
    for row in rows(&dir) {
        let file = dir.join(&row.path);
        let text = std::fs::read_to_string(&file).expect("read history");
        let detected = Format::detect(&file, &text);
        if detected != Some(format_of(&row.path)) {
            wrong.push(format!("{}: detected {detected:?}", row.path));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_shared_folder_holds_both_verdicts_for_every_format() {
    // Guards the test above against a folder that lost, say, all its violations.
    let rows = rows(&shared_dir());
    for format in [Format::PorcupineEtcd, Format::PorcupineKv, Format::Knossos] {
        for verdict in [Verdict::Linearizable, Verdict::NotLinearizable] {
            assert!(
                rows.iter()
                    .any(|r| format_of(&r.path) == format && r.expected == verdict),
                "no {verdict} history in {}",
                format.name()
            );
        }
    }
}
