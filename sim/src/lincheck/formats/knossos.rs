//! Knossos EDN histories: one vector or list of operation maps, in time order.
//!
//! Map keys: `:process` (integer, or `:nemesis` — nemesis events are ignored), `:type`
//! (`:invoke`, `:ok`, `:fail`, `:info`), `:f`, `:value` (missing counts as nil); `:time` and
//! `:error` are ignored (file order is authoritative).
//!
//! Meanings (Knossos' `cas-register` and `multi-register` models): registers start at 0; `:fail`
//! means the operation did not happen; `:info` (or never completed) is unknown; an `:ok :read nil`
//! is a read whose value was not recorded, so it constrains nothing. `:f` is `:read`, `:write`,
//! `:cas` (`[old new]`) for a cas-register, and `:txn` (a vector of `[:read k v]` /
//! `[:write k v]`) for a multi-register; a history holding any `:txn` is a multi-register one.

use super::edn::{self, Edn, Node};
use super::{ModelSpec, ParseError, edn_value};
use crate::lincheck::history::{Event, EventKind, MicroOp, Operation, Outcome, Output, Value};

/// The registers' initial value in Knossos' own tests (`(cas-register 0)`,
/// `(multi-register {:x 0 :y 0})`).
pub const KNOSSOS_INITIAL_VALUE: &str = "0";

/// Reads the file into events (time = index among client events) and picks the model.
pub fn parse_events(text: &str) -> Result<(Vec<Event>, ModelSpec), ParseError> {
    let nodes = edn::parse_all(text, 1)?;
    let top = match nodes.as_slice() {
        [one] => one,
        [] => {
            return Err(ParseError::new(
                0,
                "empty file: expected one vector or list of maps",
            ));
        }
        [_, second, ..] => {
            return Err(ParseError::new(
                second.line,
                "expected one vector or list of maps, found more forms",
            ));
        }
    };
    let items = top.items().ok_or_else(|| {
        ParseError::new(top.line, "expected a vector or a list of operation maps")
    })?;
    let mut events = Vec::new();
    let mut transactional = false;
    for node in items {
        let line = node.line;
        if !matches!(node.value, Edn::Map(_)) {
            return Err(ParseError::new(
                line,
                format!(
                    "expected an operation map, found {}",
                    super::kind(&node.value)
                ),
            ));
        }
        let field = |name: &str| {
            node.get(name)
                .ok_or_else(|| ParseError::new(line, format!("missing `:{name}`")))
        };
        let process = match &field("process")?.value {
            Edn::Keyword(k) if k == "nemesis" => continue,
            Edn::Int(p) if *p >= 0 => *p as u64,
            _ => {
                return Err(ParseError::new(
                    line,
                    "`:process` must be a non-negative integer or :nemesis",
                ));
            }
        };
        let kind = field("type")?
            .keyword()
            .ok_or_else(|| ParseError::new(line, "`:type` must be a keyword"))?;
        let f = field("f")?
            .keyword()
            .ok_or_else(|| ParseError::new(line, "`:f` must be a keyword"))?;
        let nil = Node {
            value: Edn::Nil,
            line,
        };
        let value = node.get("value").unwrap_or(&nil);
        transactional |= f == "txn";
        let kind = match kind {
            "invoke" => EventKind::Invoke(operation(f, value)?),
            "ok" => EventKind::Complete(Outcome::Ok(output(f, value)?)),
            "fail" => EventKind::Complete(Outcome::Fail),
            "info" => EventKind::Complete(Outcome::Unknown),
            other => {
                return Err(ParseError::new(
                    line,
                    format!("unknown type `:{other}` (expected :invoke, :ok, :fail or :info)"),
                ));
            }
        };
        events.push(Event {
            process,
            time: events.len() as u64,
            kind,
            line,
        });
    }
    let initial = Some(KNOSSOS_INITIAL_VALUE.to_string());
    let model = if transactional {
        ModelSpec::MultiRegister { initial }
    } else {
        ModelSpec::Register { initial }
    };
    Ok((events, model))
}

fn operation(f: &str, value: &Node) -> Result<Operation, ParseError> {
    let key = String::new();
    let line = value.line;
    match f {
        "read" => Ok(Operation::Get { key }),
        "write" => match edn_value(value)? {
            Some(value) => Ok(Operation::Put { key, value }),
            None => Err(ParseError::new(line, "a write needs a value")),
        },
        "cas" => match value.items().unwrap_or_default() {
            [old, new] => match (edn_value(old)?, edn_value(new)?) {
                (expected, Some(new)) => Ok(Operation::Cas { key, expected, new }),
                (_, None) => Err(ParseError::new(line, "a cas cannot store nil")),
            },
            _ => Err(ParseError::new(line, "a cas value must be `[old new]`")),
        },
        "txn" => {
            let mut ops = Vec::new();
            for micro in txn_items(value)? {
                let (name, key, written) = micro_parts(micro)?;
                ops.push(match name {
                    "read" => MicroOp::Read { key },
                    _ => MicroOp::Write {
                        key,
                        value: written.ok_or_else(|| {
                            ParseError::new(micro.line, "a txn write needs a value")
                        })?,
                    },
                });
            }
            Ok(Operation::Txn { ops })
        }
        other => Err(unknown_f(other, line)),
    }
}

fn output(f: &str, value: &Node) -> Result<Output, ParseError> {
    match f {
        // A nil read is a read whose value Knossos did not record: it constrains nothing.
        "read" => Ok(match edn_value(value)? {
            Some(v) => Output::Value(Some(v)),
            None => Output::Unknown,
        }),
        "write" => Ok(Output::Done),
        "cas" => Ok(Output::Cas { swapped: true }),
        "txn" => {
            let mut reads = Vec::new();
            for micro in txn_items(value)? {
                let (name, _, seen) = micro_parts(micro)?;
                reads.push(if name == "read" { seen } else { None });
            }
            Ok(Output::Txn { reads })
        }
        other => Err(unknown_f(other, value.line)),
    }
}

fn txn_items(value: &Node) -> Result<&[Node], ParseError> {
    value
        .items()
        .ok_or_else(|| ParseError::new(value.line, "a txn value must be a vector of micro-ops"))
}

/// `[:read k v]` or `[:write k v]` → (name, key, value).
fn micro_parts(micro: &Node) -> Result<(&str, String, Option<Value>), ParseError> {
    let bad = || {
        ParseError::new(
            micro.line,
            "a micro-op must be `[:read k v]` or `[:write k v]`",
        )
    };
    let [name, key, value] = micro.items().ok_or_else(bad)? else {
        return Err(bad());
    };
    let name = match name.keyword() {
        Some(n @ ("read" | "write")) => n,
        _ => return Err(bad()),
    };
    let key = edn_value(key)?.ok_or_else(bad)?;
    Ok((name, key, edn_value(value)?))
}

fn unknown_f(f: &str, line: usize) -> ParseError {
    ParseError::new(
        line,
        format!("unknown operation `:{f}` (expected :read, :write, :cas or :txn)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_nemesis_and_failed_ops_when_read_then_nemesis_is_skipped_and_fail_kept_as_fail() {
        let text = "; comment\n[{:process :nemesis, :type :info, :f :kill, :value nil}\n\
                    {:type :invoke, :process 1, :f :write, :value 3}\n\
                    {:type :fail, :process 1, :f :write, :value 3, :error [:temporarily-unavailable nil]}]";
        let (events, model) = parse_events(text).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].kind, EventKind::Complete(Outcome::Fail));
        assert_eq!(events[1].line, 4);
        assert_eq!(
            model,
            ModelSpec::Register {
                initial: Some("0".into())
            }
        );
    }

    #[test]
    fn given_an_ok_nil_read_when_read_then_its_output_is_unknown() {
        let text =
            "({:process 0 :type :invoke :f :read} {:process 0 :type :ok :f :read :value nil})";
        let (events, _) = parse_events(text).unwrap();
        assert_eq!(
            events[1].kind,
            EventKind::Complete(Outcome::Ok(Output::Unknown))
        );
    }

    #[test]
    fn given_a_txn_history_when_read_then_the_model_is_a_multi_register() {
        let text = "[{:type :invoke, :f :txn, :value [[:read :x nil] [:write :y 2]], :process 2}\n\
                    {:type :ok, :f :txn, :value [[:read :x 0] [:write :y 2]], :process 2}]";
        let (events, model) = parse_events(text).unwrap();
        assert!(matches!(model, ModelSpec::MultiRegister { .. }));
        assert_eq!(
            events[1].kind,
            EventKind::Complete(Outcome::Ok(Output::Txn {
                reads: vec![Some("0".into()), None]
            }))
        );
    }

    #[test]
    fn given_a_malformed_micro_op_when_read_then_the_error_names_its_line() {
        let text = "[{:type :invoke, :f :txn,\n :value [[:read]], :process 2}]";
        let error = parse_events(text).unwrap_err();
        assert_eq!(error.line, 2);
    }
}
