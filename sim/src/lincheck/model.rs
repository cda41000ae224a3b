//! Sequential specifications: what each operation may do to the store's state.
//!
//! A [`Model`] is a pure function: `step(state, op, output)` is `Some(next)` exactly when `op`,
//! applied to `state`, can answer `output`. An [`Output::Unknown`] answer is accepted by every
//! state. `partition` splits a history into sub-histories that share no state, so each can be
//! checked alone (P-compositionality, Herlihy & Wing): a history is linearizable iff every
//! partition is.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::hash::Hash;

use super::history::{Call, Key, MicroOp, Operation, Output, Value};

/// A subset of a history's calls that can be checked on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// What the calls have in common, for people (e.g. `key "a"`).
    pub label: String,
    /// Ids of the calls, in invocation order.
    pub calls: Vec<usize>,
}

/// A sequential specification the search checks histories against.
pub trait Model {
    /// The state of one partition. Cheap to clone and hash: the search memoises it.
    type State: Clone + Eq + Hash + Debug;

    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// The state every partition starts from.
    fn init(&self) -> Self::State;

    /// The state after `op` answered `output` from `state`, or `None` if it could not have.
    fn step(&self, state: &Self::State, op: &Operation, output: &Output) -> Option<Self::State>;

    /// True when this model knows the operation at all.
    fn supports(&self, op: &Operation) -> bool;

    /// Splits the calls into independent partitions. The default keeps them all together.
    fn partition(&self, calls: &[Call]) -> Vec<Partition> {
        vec![Partition {
            label: "all operations".to_string(),
            calls: calls.iter().map(|c| c.id).collect(),
        }]
    }

    /// The state, for people.
    fn describe(&self, state: &Self::State) -> String {
        format!("{state:?}")
    }
}

/// One key's step: the semantics shared by [`KvModel`] and [`RegisterModel`].
/// `None` as a state means the key is absent.
fn key_step(state: &Option<Value>, op: &Operation, output: &Output) -> Option<Option<Value>> {
    match (op, output) {
        (Operation::Get { .. }, Output::Value(seen)) => (seen == state).then(|| state.clone()),
        (Operation::Get { .. }, Output::Unknown) => Some(state.clone()),
        (Operation::Put { value, .. }, Output::Done | Output::Unknown) => Some(Some(value.clone())),
        (Operation::Delete { .. }, Output::Done | Output::Unknown) => Some(None),
        (Operation::Append { value, .. }, Output::Done | Output::Unknown) => {
            let mut next = state.clone().unwrap_or_default();
            next.push_str(value);
            Some(Some(next))
        }
        (Operation::Cas { expected, new, .. }, Output::Cas { swapped }) => {
            let holds = expected == state;
            match (holds, swapped) {
                (true, true) => Some(Some(new.clone())),
                (false, false) => Some(state.clone()),
                _ => None,
            }
        }
        // Taking effect at all, a CAS of unknown outcome swaps exactly when the comparison holds.
        (Operation::Cas { expected, new, .. }, Output::Unknown) => {
            if expected == state {
                Some(Some(new.clone()))
            } else {
                Some(state.clone())
            }
        }
        _ => None,
    }
}

fn describe_value(state: &Option<Value>) -> String {
    match state {
        Some(value) => format!("{value:?}"),
        None => "absent".to_string(),
    }
}

/// A key-value map, checked one key at a time: get, put, delete, compare-and-swap, append.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KvModel {
    /// The value every key starts with; `None` means absent (RaftKV), `Some("")` is the porcupine
    /// kv histories' empty string.
    pub initial: Option<Value>,
}

impl Model for KvModel {
    type State = Option<Value>;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> Self::State {
        self.initial.clone()
    }

    fn step(&self, state: &Self::State, op: &Operation, output: &Output) -> Option<Self::State> {
        key_step(state, op, output)
    }

    fn supports(&self, op: &Operation) -> bool {
        !matches!(op, Operation::Txn { .. })
    }

    fn partition(&self, calls: &[Call]) -> Vec<Partition> {
        let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for call in calls {
            by_key
                .entry(call.op.key().unwrap_or_default())
                .or_default()
                .push(call.id);
        }
        by_key
            .into_iter()
            .map(|(key, calls)| Partition {
                label: format!("key {key:?}"),
                calls,
            })
            .collect()
    }

    fn describe(&self, state: &Self::State) -> String {
        describe_value(state)
    }
}

/// A single register (the Jepsen cas-register): read, write and compare-and-swap all act on one
/// value and the key is ignored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegisterModel {
    /// The register's initial value; `None` means absent (etcd), `Some("0")` for knossos.
    pub initial: Option<Value>,
}

impl Model for RegisterModel {
    type State = Option<Value>;

    fn name(&self) -> &'static str {
        "register"
    }

    fn init(&self) -> Self::State {
        self.initial.clone()
    }

    fn step(&self, state: &Self::State, op: &Operation, output: &Output) -> Option<Self::State> {
        key_step(state, op, output)
    }

    fn supports(&self, op: &Operation) -> bool {
        matches!(
            op,
            Operation::Get { .. } | Operation::Put { .. } | Operation::Cas { .. }
        )
    }

    fn describe(&self, state: &Self::State) -> String {
        describe_value(state)
    }
}

/// Several registers read and written by atomic transactions (the knossos multi-register).
/// Single-key operations act on one register. Not partitioned: a transaction spans keys.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MultiRegisterModel {
    /// The value a register has before it is first written; `None` means absent.
    pub initial: Option<Value>,
}

impl Model for MultiRegisterModel {
    /// Only registers that were written are stored; the others hold `initial`.
    type State = BTreeMap<Key, Option<Value>>;

    fn name(&self) -> &'static str {
        "multi-register"
    }

    fn init(&self) -> Self::State {
        BTreeMap::new()
    }

    fn step(&self, state: &Self::State, op: &Operation, output: &Output) -> Option<Self::State> {
        let current = |key: &str| match state.get(key) {
            Some(value) => value.clone(),
            None => self.initial.clone(),
        };
        match op {
            Operation::Txn { ops } => {
                let reads: &[Option<Value>] = match output {
                    Output::Txn { reads } => reads,
                    Output::Unknown => &[],
                    _ => return None,
                };
                let mut next = state.clone();
                for (i, micro) in ops.iter().enumerate() {
                    match micro {
                        MicroOp::Read { key } => {
                            if let Some(Some(seen)) = reads.get(i) {
                                let value = match next.get(key) {
                                    Some(value) => value.clone(),
                                    None => self.initial.clone(),
                                };
                                if value.as_ref() != Some(seen) {
                                    return None;
                                }
                            }
                        }
                        MicroOp::Write { key, value } => {
                            next.insert(key.clone(), Some(value.clone()));
                        }
                    }
                }
                Some(next)
            }
            single => {
                let key = single.key()?;
                let value = key_step(&current(key), single, output)?;
                let mut next = state.clone();
                next.insert(key.to_string(), value);
                Some(next)
            }
        }
    }

    fn supports(&self, _op: &Operation) -> bool {
        true
    }

    fn describe(&self, state: &Self::State) -> String {
        let mut parts: Vec<String> = state
            .iter()
            .map(|(key, value)| format!("{key}={}", describe_value(value)))
            .collect();
        parts.push(format!("others={}", describe_value(&self.initial)));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(expected: Option<&str>, new: &str) -> Operation {
        Operation::Cas {
            key: "k".into(),
            expected: expected.map(str::to_string),
            new: new.into(),
        }
    }

    #[test]
    fn given_an_absent_key_when_a_get_sees_absent_then_the_step_is_allowed() {
        let model = KvModel::default();
        let get = Operation::Get { key: "k".into() };
        assert_eq!(model.step(&None, &get, &Output::Value(None)), Some(None));
        assert_eq!(
            model.step(&None, &get, &Output::Value(Some("1".into()))),
            None
        );
    }

    #[test]
    fn given_a_cas_when_its_comparison_holds_then_only_swapped_is_allowed() {
        let model = RegisterModel::default();
        let state = Some("1".to_string());
        let op = cas(Some("1"), "2");
        assert_eq!(
            model.step(&state, &op, &Output::Cas { swapped: true }),
            Some(Some("2".into()))
        );
        assert_eq!(
            model.step(&state, &op, &Output::Cas { swapped: false }),
            None
        );
        assert_eq!(
            model.step(&Some("3".into()), &op, &Output::Cas { swapped: false }),
            Some(Some("3".into()))
        );
    }

    #[test]
    fn given_an_unknown_cas_when_stepped_then_it_swaps_only_if_the_comparison_holds() {
        let model = KvModel::default();
        let op = cas(None, "2");
        assert_eq!(
            model.step(&None, &op, &Output::Unknown),
            Some(Some("2".into()))
        );
        assert_eq!(
            model.step(&Some("5".into()), &op, &Output::Unknown),
            Some(Some("5".into()))
        );
    }

    #[test]
    fn given_appends_when_stepped_then_values_concatenate_without_separator() {
        let model = KvModel {
            initial: Some(String::new()),
        };
        let append = |v: &str| Operation::Append {
            key: "k".into(),
            value: v.into(),
        };
        let s = model.step(&model.init(), &append("x 0 0 y"), &Output::Done);
        let s = model.step(&s.unwrap(), &append("x 0 1 y"), &Output::Done);
        assert_eq!(s, Some(Some("x 0 0 yx 0 1 y".into())));
    }

    #[test]
    fn given_a_txn_when_a_read_disagrees_with_an_earlier_write_in_it_then_it_is_refused() {
        let model = MultiRegisterModel {
            initial: Some("0".into()),
        };
        let op = Operation::Txn {
            ops: vec![
                MicroOp::Write {
                    key: "x".into(),
                    value: "1".into(),
                },
                MicroOp::Read { key: "x".into() },
                MicroOp::Read { key: "y".into() },
            ],
        };
        let ok = Output::Txn {
            reads: vec![None, Some("1".into()), Some("0".into())],
        };
        let bad = Output::Txn {
            reads: vec![None, Some("0".into()), None],
        };
        assert!(model.step(&model.init(), &op, &ok).is_some());
        assert!(model.step(&model.init(), &op, &bad).is_none());
    }

    #[test]
    fn given_calls_on_two_keys_when_partitioned_then_each_key_is_alone() {
        let call = |id: usize, key: &str| Call {
            id,
            process: id as u64,
            op: Operation::Get { key: key.into() },
            output: Output::Value(None),
            invoke: 0,
            ret: Some(1),
            invoke_line: 0,
            return_line: None,
        };
        let calls = [call(0, "b"), call(1, "a"), call(2, "b")];
        let parts = KvModel::default().partition(&calls);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].calls, vec![1]);
        assert_eq!(parts[1].calls, vec![0, 2]);
    }
}
