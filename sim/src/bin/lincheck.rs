//! `lincheck`: checks one history file for linearizability.
//!
//! Exit status: 0 linearizable, 1 not linearizable, 2 unknown (a budget ran out) or the input
//! could not be read (one line on stderr says why). The verdict and, for a violation, the
//! smallest failing set found go to stdout; `--html`/`--svg` also draw that set.
//!
//! Invariant: every path out of `main` is one of those three codes (clap's own usage errors
//! exit 2 as well); bad input never panics.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use sim::lincheck::{CheckOptions, Format, Verdict, formats, picture};
use util::parse_flag_duration;

/// Exit status for a linearizable history.
const EXIT_LINEARIZABLE: u8 = 0;
/// Exit status for a history proven not linearizable.
const EXIT_NOT_LINEARIZABLE: u8 = 1;
/// Exit status when the budget ran out, or the input or the options could not be used.
const EXIT_UNKNOWN_OR_UNREADABLE: u8 = 2;

/// Check a history of key-value operations for linearizability.
///
/// Exits 0 when linearizable, 1 when not, 2 when unknown (the time budget ran out) or when the
/// input cannot be read.
#[derive(Debug, Parser)]
#[command(name = "lincheck", version)]
struct Args {
    /// The history file.
    file: PathBuf,

    /// The file's format. Without it, the format is recognised from the content (or the
    /// extension: .jsonl raftkv, .txt porcupine-kv, .log porcupine-etcd, .edn knossos).
    #[arg(long, value_enum)]
    format: Option<Format>,

    /// Time budget for the check, e.g. `60`, `60s`, `1500ms`, `2m`. When it runs out the verdict
    /// is "unknown" (exit 2), never a guess.
    #[arg(long, default_value = "60s", value_parser = parse_flag_duration)]
    timeout: Duration,

    /// Time budget for shrinking a violation to a small failing set.
    #[arg(long, default_value = "10s", value_parser = parse_flag_duration)]
    shrink_timeout: Duration,

    /// Write an HTML page with the report and, for a violation, a picture of the failing set.
    #[arg(long, value_name = "OUT")]
    html: Option<PathBuf>,

    /// Write an SVG picture of the failing set (only written for a violation).
    #[arg(long, value_name = "OUT")]
    svg: Option<PathBuf>,

    /// Also print timings and search statistics.
    #[arg(long)]
    stats: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("lincheck: {message}");
            ExitCode::from(EXIT_UNKNOWN_OR_UNREADABLE)
        }
    }
}

fn run(args: &Args) -> Result<u8, String> {
    let started = Instant::now();
    let loaded = formats::load(&args.file, args.format).map_err(|e| e.to_string())?;
    let parsed = started.elapsed();
    let options = CheckOptions {
        budget: args.timeout,
        ..CheckOptions::default()
    };
    let analysis = loaded
        .model
        .analyze(&loaded.history, &options, args.shrink_timeout)
        .map_err(|e| format!("{}: {e}", args.file.display()))?;
    print!("{}", analysis.text);
    if args.stats {
        let report = &analysis.report;
        println!(
            "stats: format {}, model {}, {} events, {} operations checked ({} failed ones and {} \
             unknown reads dropped), {} partition(s), largest {} operations; parse {:.3} s, \
             check {:.3} s, total {:.3} s; {} search steps, largest memo {} entries",
            loaded.format.name(),
            loaded.model,
            loaded.events,
            report.calls,
            loaded.history.failed_dropped,
            loaded.history.unknown_reads_dropped,
            report.partitions_total,
            report.partition_calls_max,
            parsed.as_secs_f64(),
            report.elapsed.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            report.steps_total,
            report.cache_entries_max_seen,
        );
        for part in &report.partition_stats {
            println!(
                "stats: {}: {} operations, {}, {:.3} s, {} steps, memo {} entries",
                part.label,
                part.calls,
                part.outcome,
                part.elapsed.as_secs_f64(),
                part.steps,
                part.cache_entries
            );
        }
    }

    let title = format!("{}: {}", args.file.display(), analysis.report.verdict);
    if let Some(out) = &args.html {
        let page = picture::html(
            &loaded.history,
            analysis.minimal.as_ref(),
            &title,
            &analysis.text,
        );
        write(out, &page)?;
    }
    if let Some(out) = &args.svg {
        match &analysis.minimal {
            Some(minimal) => write(out, &picture::svg(&loaded.history, minimal, &title))?,
            None => eprintln!(
                "lincheck: no violation, so no picture was written to {}",
                out.display()
            ),
        }
    }
    Ok(match analysis.report.verdict {
        Verdict::Linearizable => EXIT_LINEARIZABLE,
        Verdict::NotLinearizable => EXIT_NOT_LINEARIZABLE,
        Verdict::Unknown => EXIT_UNKNOWN_OR_UNREADABLE,
    })
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: cannot write: {e}", path.display()))
}
