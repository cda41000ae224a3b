//! The linearizability checker.
//!
//! Pipeline, one module per step:
//! [`formats`] reads a file into [`Event`]s and names the [`ModelSpec`] its source meant;
//! [`history`] pairs invocations with completions into [`Call`]s;
//! [`model`] says what each operation may do to the store's state and splits a history into
//! independent per-key partitions;
//! [`search`] runs the Wing & Gong / Lowe search with memoisation on one partition;
//! [`check`](mod@check) runs every partition under one time budget and gives a [`Verdict`];
//! [`shrink`] cuts a violation down to a small set of operations that still cannot be linearized;
//! [`report`] prints that set as a text timeline and [`picture`] draws it as SVG or HTML.
//!
//! The verdict is never a guess: when the budget runs out the answer is [`Verdict::Unknown`].

pub mod check;
pub mod formats;
pub mod history;
pub mod model;
pub mod picture;
pub mod report;
pub mod search;
pub mod shrink;

use std::time::Duration;

pub use check::{
    CheckError, CheckOptions, CheckReport, Failure, PartitionOutcome, PartitionStats, Verdict,
    check,
};
pub use formats::{Format, LoadError, Loaded, ModelSpec, load, parse};
pub use history::{
    Call, Event, EventKind, History, HistoryError, Key, MicroOp, Operation, Outcome, Output,
    ProcessId, Time, Value,
};
pub use model::{KvModel, Model, MultiRegisterModel, Partition, RegisterModel};
pub use shrink::MinimalFailure;

/// Everything the checker found about one history: the verdict and, for a violation, the
/// smallest failing set it could find, already rendered as a text timeline.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// The verdict and search statistics.
    pub report: CheckReport,
    /// For a violation: the operations that cannot be linearized, shrunk as far as the budget
    /// allowed.
    pub minimal: Option<MinimalFailure>,
    /// A human-readable account of the result (a timeline for a violation).
    pub text: String,
}

/// Checks `history` against `model`, and on a violation shrinks it to a small failing set
/// (spending at most `shrink_budget` on that) and renders the text report.
pub fn analyze<M: Model>(
    model: &M,
    history: &History,
    options: &CheckOptions,
    shrink_budget: Duration,
) -> Result<Analysis, CheckError> {
    let report = check(model, history, options)?;
    let minimal = report
        .failure
        .as_ref()
        .map(|failure| shrink::shrink(model, history, failure, shrink_budget, options));
    let text = report::render_text(model, history, &report, minimal.as_ref());
    Ok(Analysis {
        report,
        minimal,
        text,
    })
}
