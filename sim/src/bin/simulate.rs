//! `simulate`: runs deterministic cluster simulations over many seeds (the package's default
//! binary, so `cargo run -p sim --release -- --seeds 10000` runs it).
//!
//! Exit status: 0 when every run passed, 1 when any failed (each failure is printed with the
//! command that replays it), 2 on bad arguments.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use sim::cluster::{RunReport, run_seed, scenarios};

/// Explore seeds of the cluster simulations.
#[derive(Parser, Debug)]
#[command(name = "simulate", version)]
struct Args {
    /// How many seeds to run per scenario.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run exactly this seed (overrides --seeds and --start).
    #[arg(long)]
    seed: Option<u64>,
    /// Scenarios to run, comma-separated (default: random3,random5). `all` runs every
    /// scenario except the deliberately broken ones.
    #[arg(long, default_value = "random3,random5")]
    scenario: String,
    /// Print every run's summary, and a failing run's history.
    #[arg(long)]
    verbose: bool,
    /// Stop at the first failure.
    #[arg(long)]
    fail_fast: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let names: Vec<String> = if args.scenario == "all" {
        scenarios::all()
            .into_iter()
            .map(|s| s.name.to_string())
            .filter(|n| !n.starts_with("broken_"))
            .collect()
    } else {
        args.scenario
            .split(',')
            .map(|s| s.trim().to_string())
            .collect()
    };
    let mut chosen = Vec::new();
    for name in &names {
        match scenarios::by_name(name) {
            Some(s) => chosen.push(s),
            None => {
                let known: Vec<&str> = scenarios::all().iter().map(|s| s.name).collect();
                eprintln!(
                    "simulate: unknown scenario {name:?} (known: {})",
                    known.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let seeds: Vec<u64> = match args.seed {
        Some(seed) => vec![seed],
        None => (args.start..args.start.saturating_add(args.seeds)).collect(),
    };
    let total = (seeds.len() * chosen.len()) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} runs, {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut failed: Vec<RunReport> = Vec::new();
    let mut ops = 0usize;
    'runs: for scenario in &chosen {
        for &seed in &seeds {
            let report = run_seed(scenario, seed);
            ops += report.ops.0 + report.ops.1 + report.ops.2;
            if args.verbose {
                bar.suspend(|| eprintln!("{report}"));
            }
            if !report.passed() {
                if !args.verbose {
                    bar.suspend(|| eprintln!("{report}"));
                } else {
                    for event in &report.history {
                        bar.suspend(|| eprintln!("    {event:?}"));
                    }
                }
                failed.push(report);
                if args.fail_fast {
                    break 'runs;
                }
            }
            bar.inc(1);
            bar.set_message(format!("{} failed", failed.len()));
        }
    }
    bar.finish();
    println!(
        "{} runs, {} operations, {} failed, in {:.1?}",
        bar.position(),
        ops,
        failed.len(),
        started.elapsed()
    );
    for report in &failed {
        println!(
            "FAILED {} seed {}: {}",
            report.scenario,
            report.seed,
            report.replay_command()
        );
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
