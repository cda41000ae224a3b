//! The log against a model, on the simulated disk, through random operations and crashes.
//!
//! After every reopen: every synced entry is present; unsynced entries are present as a prefix
//! or absent; indexes are contiguous; nothing is invented; the hard state is the last one saved.
//! proptest shrinks a failure to a minimal sequence of operations; the failing sequence and seed
//! are printed, and `PROPTEST_CASES=5000 cargo test -p wal --test model` explores more.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use wal::{Entry, SimFs, Wal, WalConfig};

#[derive(Debug, Clone)]
enum Op {
    /// Append this many entries with payloads of this size; bump the term first if set.
    Append {
        count: u8,
        payload_bytes: u16,
        new_term: bool,
    },
    /// Truncate at this fraction (per mille) of the way through the log.
    TruncateSuffix {
        at_per_mille: u16,
    },
    /// Compact up to this fraction of the way through the log.
    CompactPrefix {
        upto_per_mille: u16,
    },
    Sync,
    SaveHardState(u8),
    /// Restart the log empty this far past its end.
    Reset {
        gap: u8,
    },
    CrashAndReopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40, 0u16..300, any::<bool>())
            .prop_map(|(count, payload_bytes, new_term)| Op::Append { count, payload_bytes, new_term }),
        1 => (0u16..=1000).prop_map(|at_per_mille| Op::TruncateSuffix { at_per_mille }),
        1 => (0u16..=1000).prop_map(|upto_per_mille| Op::CompactPrefix { upto_per_mille }),
        3 => Just(Op::Sync),
        1 => any::<u8>().prop_map(Op::SaveHardState),
        1 => (0u8..5).prop_map(|gap| Op::Reset { gap }),
        2 => Just(Op::CrashAndReopen),
    ]
}

/// What the log must contain.
struct Model {
    first: u64,
    entries: BTreeMap<u64, (u64, Vec<u8>)>,
    durable: u64,
    term: u64,
    hard_state: Option<Vec<u8>>,
}

impl Model {
    fn last(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .unwrap_or(self.first - 1)
    }
}

fn payload_for(index: u64, term: u64, len: u16) -> Vec<u8> {
    (0..len)
        .map(|i| (index as u8) ^ (term as u8) ^ (i as u8))
        .collect()
}

fn config() -> WalConfig {
    WalConfig {
        segment_bytes: wal::SEGMENT_BYTES_MIN,
    }
}

fn at_fraction(lo: u64, hi: u64, per_mille: u16) -> u64 {
    lo + (hi.saturating_sub(lo)) * u64::from(per_mille) / 1000
}

fn run(seed: u64, ops: &[Op]) -> Result<(), TestCaseError> {
    let fs = SimFs::new(seed);
    let dir = Path::new("/node/wal");
    let mut wal = Wal::open(fs.clone(), dir, config()).unwrap();
    let mut model = Model {
        first: 1,
        entries: BTreeMap::new(),
        durable: 0,
        term: 1,
        hard_state: None,
    };
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Append {
                count,
                payload_bytes,
                new_term,
            } => {
                if *new_term {
                    model.term += 1;
                }
                let first = model.last() + 1;
                let batch: Vec<Entry> = (first..first + u64::from(*count))
                    .map(|index| Entry {
                        index,
                        term: model.term,
                        payload: payload_for(index, model.term, *payload_bytes),
                    })
                    .collect();
                wal.append(&batch).unwrap();
                for e in batch {
                    model.entries.insert(e.index, (e.term, e.payload));
                }
            }
            Op::TruncateSuffix { at_per_mille } => {
                let from = at_fraction(wal.first_index(), model.last() + 1, *at_per_mille);
                wal.truncate_suffix(from).unwrap();
                // A cut syncs what remains; truncating past the end changes nothing.
                if from <= model.last() {
                    model.entries.split_off(&from);
                    model.durable = model.last();
                }
            }
            Op::CompactPrefix { upto_per_mille } => {
                let upto =
                    at_fraction(model.first.saturating_sub(1), model.last(), *upto_per_mille);
                wal.compact_prefix(upto).unwrap();
                prop_assert!(
                    wal.first_index() <= upto + 1 || wal.first_index() == model.first,
                    "step {step}: compaction removed entry {} that the snapshot at {upto} does not cover",
                    upto + 1
                );
                model.first = wal.first_index();
                model.entries = model.entries.split_off(&model.first);
                model.durable = model.durable.max(model.first - 1);
            }
            Op::Sync => {
                prop_assert_eq!(wal.sync().unwrap(), model.last());
                model.durable = model.last();
            }
            Op::SaveHardState(v) => {
                let hs = vec![*v; usize::from(*v)];
                wal.save_hard_state(&hs).unwrap();
                model.hard_state = Some(hs);
            }
            Op::Reset { gap } => {
                let next = model.last() + 1 + u64::from(*gap);
                wal.reset(next).unwrap();
                model.first = next;
                model.entries.clear();
                model.durable = next - 1;
            }
            Op::CrashAndReopen => {
                let report = fs.crash();
                drop(wal);
                wal = Wal::open(fs.clone(), dir, config()).map_err(|e| {
                    TestCaseError::fail(format!("step {step}: reopen failed after {report:?}: {e}"))
                })?;
                let last = wal.last_index();
                prop_assert_eq!(
                    wal.first_index(),
                    model.first,
                    "step {}: first index after {:?}",
                    step,
                    report
                );
                prop_assert!(
                    last >= model.durable,
                    "step {step}: synced entry {} lost ({report:?})",
                    model.durable
                );
                prop_assert!(
                    last <= model.last(),
                    "step {step}: entries invented up to {last}"
                );
                let got = wal.read(wal.first_index(), last + 1).unwrap();
                for e in &got {
                    let (term, payload) = &model.entries[&e.index];
                    prop_assert_eq!(
                        (e.term, &e.payload),
                        (*term, payload),
                        "step {}: entry {} differs",
                        step,
                        e.index
                    );
                }
                prop_assert_eq!(
                    wal.hard_state(),
                    model.hard_state.as_deref(),
                    "step {}: hard state",
                    step
                );
                model.entries.split_off(&(last + 1));
                model.durable = last;
                // A recovered log keeps its terms in order, so the next term must not step back.
                model.term = model.term.max(wal.term(last).unwrap_or(0));
            }
        }
        wal.check_invariants().expect("the WAL invariants hold");
        prop_assert_eq!(wal.last_index(), model.last(), "step {}: last index", step);
        prop_assert_eq!(wal.first_index(), model.first, "step {}: first index", step);
        prop_assert!(wal.durable_index() >= model.durable.min(wal.last_index()));
    }
    Ok(())
}

/// 1000 cases by default (about a second); `PROPTEST_CASES` explores more.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn the_log_matches_its_model_through_random_operations_and_crashes(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run(seed, &ops)?;
    }
}

#[test]
fn crashes_with_unsynced_appends_across_rotations_keep_a_prefix() {
    // A fixed, long schedule as a regression anchor (many rotations with unsynced data).
    for seed in 0..50 {
        let mut ops = Vec::new();
        for _ in 0..5 {
            ops.push(Op::Append {
                count: 30,
                payload_bytes: 200,
                new_term: false,
            });
            ops.push(Op::Sync);
            ops.push(Op::Append {
                count: 39,
                payload_bytes: 150,
                new_term: true,
            });
            ops.push(Op::CrashAndReopen);
        }
        run(seed, &ops).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
