//! The Jepsen-style runner end to end: a short run of real `raftkv` processes with every fault
//! kind must be linearizable with equal final states, with faults really injected and
//! operations really completed; and the check stage must say "not linearizable" (exit 1) when
//! the same history is doctored, or when two members' states differ.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sim::jepsen::faults::{FaultKind, FaultRecord};
use sim::jepsen::report::{self, NodeState, RunRecord};
use sim::jepsen::{Options, cluster, run};
use sim::lincheck::Verdict;

/// The workload phase of the short run; with start-up, settling and checking the whole test
/// stays near 30 s on 2 cores in a debug build.
const SHORT_RUN: Duration = Duration::from_secs(20);
/// Fewest `ok` operations a healthy short run must complete: a run whose clients mostly fail
/// checks nothing. (Observed: several thousand.)
const OK_OPERATIONS_MIN: usize = 300;

/// The check stage's limits: the verdict on a few thousand operations takes well under a
/// second; shrinking the doctored history's violation is cut short to keep the test quick.
const BUDGETS: report::Budgets = report::Budgets {
    check: Duration::from_secs(60),
    shrink: Duration::from_secs(1),
};

const ALL_FAULTS: [FaultKind; 4] = [
    FaultKind::Kill,
    FaultKind::Pause,
    FaultKind::Partition,
    FaultKind::Membership,
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for name in ["history.jsonl", "run.json"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy a run file");
    }
}

#[test]
fn a_short_run_with_every_fault_is_linearizable_and_a_doctored_copy_of_its_history_is_not() {
    let raftkv = cluster::find_raftkv(None).unwrap_or_else(|e| panic!("{e}"));
    let root = tempfile::tempdir().expect("a temporary directory");
    let out = root.path().join("run");
    let options = Options {
        nodes: 3,
        duration: SHORT_RUN,
        faults: ALL_FAULTS.to_vec(),
        seed: 20_261_125,
        clients: 6,
        keys: 5,
        op_timeout: Duration::from_secs(1),
        out: out.clone(),
        raftkv,
        node_log_level: "info".into(),
        budgets: BUDGETS,
        command: "sim/tests/jepsen.rs short run".into(),
    };
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let result = runtime.block_on(run(&options));
    drop(runtime);
    let result = match result {
        Ok(result) => result,
        Err(e) => {
            let kept = root.keep();
            panic!("the run failed: {e} (files kept in {})", kept.display());
        }
    };
    let report_text = std::fs::read_to_string(out.join("report.txt")).unwrap_or_default();
    let evaluation = &result.evaluation;
    let record = &result.record;
    let applied: Vec<FaultKind> = record
        .faults
        .iter()
        .filter(|f| f.applied)
        .map(|f| f.kind)
        .collect();
    let healthy = evaluation.exit_code == report::EXIT_OK
        && evaluation.verdict == Verdict::Linearizable
        && evaluation.states_equal == Some(true)
        && record.final_states.len() == 3
        && ALL_FAULTS.iter().all(|k| applied.contains(k))
        && evaluation.counts.ok >= OK_OPERATIONS_MIN;
    if !healthy {
        let kept = root.keep();
        panic!(
            "{}\n{report_text}\nfiles kept in {}",
            evaluation.headline,
            kept.display()
        );
    }
    eprintln!(
        "short run: {} in {:.1} s\n{report_text}",
        evaluation.headline,
        started.elapsed().as_secs_f64()
    );

    // The same history with one read answering a value nobody wrote must fail the check, both
    // in the library and through the binary's --recheck (exit 1).
    let doctored = root.path().join("doctored");
    copy_dir(&out, &doctored);
    let (record, mut events) = report::load(&doctored).expect("the run's files load back");
    let reads = evaluation.counts.by_op.get("get").map_or(0, |c| c.0);
    assert!(
        report::doctor_read(&mut events, reads / 2, "never-written"),
        "a read to doctor"
    );
    std::fs::write(
        doctored.join("history.jsonl"),
        sim::lincheck::formats::raftkv::write_events(&events).expect("writable"),
    )
    .expect("write the doctored history");
    let verdict = report::evaluate(&record, &events, &doctored, BUDGETS)
        .expect("the doctored history checks");
    assert_eq!(verdict.verdict, Verdict::NotLinearizable);
    assert_eq!(verdict.exit_code, report::EXIT_VIOLATION);
    assert!(doctored.join("violation.html").is_file());
    let status = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .arg("--recheck")
        .arg(&doctored)
        .args(["--shrink-budget", "1s"])
        .status()
        .expect("run jepsen --recheck");
    assert_eq!(
        status.code(),
        Some(1),
        "jepsen --recheck on a doctored history"
    );
    // The undoctored run re-checks clean through the binary too.
    let status = Command::new(env!("CARGO_BIN_EXE_jepsen"))
        .arg("--recheck")
        .arg(&out)
        .status()
        .expect("run jepsen --recheck");
    assert_eq!(
        status.code(),
        Some(0),
        "jepsen --recheck on the real history"
    );
}

fn synthetic_record(states: Vec<NodeState>) -> RunRecord {
    RunRecord {
        command: "synthetic".into(),
        seed: 1,
        nodes: states.len(),
        clients: 1,
        keys: 1,
        duration_s: 1.0,
        faults_enabled: vec![FaultKind::Kill],
        faults: vec![FaultRecord {
            kind: FaultKind::Kill,
            description: "kill -9 n1".into(),
            start_s: 0.2,
            end_s: 0.5,
            applied: true,
            note: String::new(),
        }],
        settled_after_s: Some(1.0),
        final_states: states,
        problem: None,
        crashes: Vec::new(),
    }
}

fn state(name: &str, value: Option<&str>) -> NodeState {
    NodeState {
        name: name.into(),
        applied_index: 7,
        values: [("k0".to_string(), value.map(str::to_string))].into(),
    }
}

#[test]
fn members_that_end_with_different_states_are_a_violation_even_with_a_linearizable_history() {
    let history = concat!(
        r#"{"type":"invoke","process":0,"time":100,"f":"put","key":"k0","value":"a"}"#,
        "\n",
        r#"{"type":"ok","process":0,"time":200}"#,
        "\n",
        r#"{"type":"invoke","process":1,"time":300,"f":"get","key":"k0"}"#,
        "\n",
        r#"{"type":"ok","process":1,"time":400,"value":"a"}"#,
        "\n"
    );
    let events = sim::lincheck::formats::raftkv::parse_events(history).expect("parses");
    let dir = tempfile::tempdir().expect("a temporary directory");

    let equal = synthetic_record(vec![state("n1", Some("a")), state("n2", Some("a"))]);
    let ok = report::evaluate(&equal, &events, dir.path(), BUDGETS).expect("checks");
    assert_eq!(ok.exit_code, report::EXIT_OK, "{}", ok.headline);

    let differ = synthetic_record(vec![state("n1", Some("a")), state("n2", None)]);
    let bad = report::evaluate(&differ, &events, dir.path(), BUDGETS).expect("checks");
    assert_eq!(bad.verdict, Verdict::Linearizable);
    assert_eq!(bad.exit_code, report::EXIT_VIOLATION);
    assert!(
        bad.headline.contains("final states differ"),
        "{}",
        bad.headline
    );

    let unread = RunRecord {
        problem: Some("the cluster did not settle".into()),
        ..synthetic_record(Vec::new())
    };
    let unknown = report::evaluate(&unread, &events, dir.path(), BUDGETS).expect("checks");
    assert_eq!(
        unknown.exit_code,
        report::EXIT_UNKNOWN,
        "{}",
        unknown.headline
    );
    for name in ["report.txt", "report.html", "latency.svg", "check.txt"] {
        assert!(dir.path().join(name).is_file(), "{name} written");
    }
}
