//! `jepsen`: a Jepsen-style run against real `raftkv` processes on loopback, or a re-check of
//! a finished run's directory.
//!
//! Exit status: 0 linearizable with equal final states, 1 a violation (history or states), 2
//! undecided or a setup error. One line on stdout (or stderr for an error) says which.
//!
//! Invariant: every path out of `main` returns one of those codes after the runtime has shut
//! down, so the cluster's drop guard has killed every child process (an interrupt included).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use sim::jepsen::{self, Options, cluster, faults::FaultKind, report};
use util::parse_flag_duration;

/// Run a Jepsen-style test: real raftkv processes, concurrent clients, injected faults, a
/// linearizability check and a report.
///
/// Exits 0 when the history is linearizable and all members end equal, 1 on a violation, 2
/// when undecided or on a setup error.
#[derive(Debug, Parser)]
#[command(name = "jepsen", version)]
struct Args {
    /// Cluster size (3 to 9).
    #[arg(long, default_value_t = 3)]
    nodes: usize,

    /// Length of the workload, during which faults happen (e.g. 60s, 2m, 1500ms).
    #[arg(long, default_value = "60s", value_parser = parse_flag_duration)]
    duration: Duration,

    /// Faults to inject, comma-separated: kill, pause, partition, membership (or none).
    #[arg(long, value_delimiter = ',', default_value = "kill,pause,partition,membership", value_parser = parse_fault)]
    faults: Vec<Option<FaultKind>>,

    /// Seed of the fault schedule and of the clients' choices (default: the clock).
    #[arg(long)]
    seed: Option<u64>,

    /// Concurrent client processes.
    #[arg(long, default_value_t = 8)]
    clients: usize,

    /// Keys the clients work on.
    #[arg(long, default_value_t = 6)]
    keys: usize,

    /// Bound on each client operation. Short, so that a client stuck on a paused or cut-off
    /// node soon tries another (its operation is then recorded with an unknown outcome).
    #[arg(long, default_value = "1s", value_parser = parse_flag_duration)]
    op_timeout: Duration,

    /// Report directory (default: <target dir>/jepsen/<unix time>-<seed>/).
    #[arg(long)]
    out: Option<PathBuf>,

    /// The raftkv binary (default: $RAFTKV_BIN, else next to this binary, built if missing).
    #[arg(long)]
    raftkv: Option<PathBuf>,

    /// The nodes' log level (their logs go to <out>/logs/).
    #[arg(long, default_value = "info")]
    node_log_level: String,

    /// Time budget of the linearizability check (when it runs out the verdict is unknown).
    #[arg(long, default_value = "120s", value_parser = parse_flag_duration)]
    check_budget: Duration,

    /// Time budget for shrinking a violation to a small failing set.
    #[arg(long, default_value = "10s", value_parser = parse_flag_duration)]
    shrink_budget: Duration,

    /// Re-check a finished run's directory (its history.jsonl and run.json) instead of running;
    /// rewrites its report.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "seed"])]
    recheck: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("jepsen: setup: cannot start the async runtime: {e}");
            return ExitCode::from(report::EXIT_UNKNOWN);
        }
    };
    let code = runtime.block_on(async {
        tokio::select! {
            code = run(args) => code,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("jepsen: interrupted: stopping every node");
                report::EXIT_UNKNOWN
            }
        }
    });
    // Dropping the runtime drops every task still holding the cluster: its guard kills the
    // child processes before the exit status is returned.
    drop(runtime);
    ExitCode::from(code)
}

async fn run(args: Args) -> u8 {
    if let Some(dir) = &args.recheck {
        return recheck(dir, budgets(&args));
    }
    let faults: Vec<FaultKind> = args.faults.iter().flatten().copied().collect();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    // Finding (or building) the binary may run cargo: off the async threads.
    let explicit = args.raftkv.clone();
    let raftkv = match tokio::task::spawn_blocking(move || {
        cluster::find_raftkv(explicit.as_deref())
    })
    .await
    {
        Ok(Ok(path)) => path,
        Ok(Err(e)) => {
            eprintln!("jepsen: setup: {e}");
            return report::EXIT_UNKNOWN;
        }
        Err(e) => {
            eprintln!("jepsen: setup: finding raftkv failed: {e}");
            return report::EXIT_UNKNOWN;
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&raftkv, seed));
    let fault_names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    let command = format!(
        "jepsen --nodes {} --duration {}ms --faults {} --seed {seed} --clients {} --keys {} --op-timeout {}ms",
        args.nodes,
        args.duration.as_millis(),
        if fault_names.is_empty() {
            "none".to_string()
        } else {
            fault_names.join(",")
        },
        args.clients,
        args.keys,
        args.op_timeout.as_millis()
    );
    println!("jepsen: {command}");
    println!("jepsen: writing to {}", out.display());
    let options = Options {
        nodes: args.nodes,
        duration: args.duration,
        faults,
        seed,
        clients: args.clients,
        keys: args.keys,
        op_timeout: args.op_timeout,
        out,
        raftkv,
        node_log_level: args.node_log_level.clone(),
        budgets: budgets(&args),
        command,
    };
    match jepsen::run(&options).await {
        Ok(result) => {
            println!("jepsen: {}", result.evaluation.headline);
            println!(
                "jepsen: report {}",
                result.dir.join("report.html").display()
            );
            result.evaluation.exit_code
        }
        Err(e) => {
            eprintln!("jepsen: {e}");
            report::EXIT_UNKNOWN
        }
    }
}

fn budgets(args: &Args) -> report::Budgets {
    report::Budgets {
        check: args.check_budget,
        shrink: args.shrink_budget,
    }
}

fn recheck(dir: &std::path::Path, budgets: report::Budgets) -> u8 {
    let evaluated = report::load(dir)
        .and_then(|(record, events)| report::evaluate(&record, &events, dir, budgets));
    match evaluated {
        Ok(evaluation) => {
            println!("jepsen: {}", evaluation.headline);
            evaluation.exit_code
        }
        Err(e) => {
            eprintln!("jepsen: {e}");
            report::EXIT_UNKNOWN
        }
    }
}

/// `<target dir>/jepsen/<unix seconds>-<seed>`, next to the binaries' profile directory.
fn default_out(raftkv: &std::path::Path, seed: u64) -> PathBuf {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let target = raftkv
        .parent()
        .and_then(|profile| profile.parent())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("jepsen").join(format!("{stamp}-{seed}"))
}

fn parse_fault(text: &str) -> Result<Option<FaultKind>, String> {
    match text.trim() {
        "kill" => Ok(Some(FaultKind::Kill)),
        "pause" => Ok(Some(FaultKind::Pause)),
        "partition" => Ok(Some(FaultKind::Partition)),
        "membership" => Ok(Some(FaultKind::Membership)),
        "none" | "" => Ok(None),
        other => Err(format!(
            "`{other}` is not a fault (kill, pause, partition, membership, none)"
        )),
    }
}
