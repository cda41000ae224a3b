//! Porcupine's kv histories: one EDN map per line, string keys and values.
//!
//! `{:process 0, :type :invoke, :f :append, :key "0", :value "x 0 0 y"}`. Types are `:invoke`
//! and `:ok` (a `:fail` or `:info`, which these files never hold, is read as "did not happen" and
//! "unknown"). Operations: `:get` (the `:ok` value is the full current string), `:put`,
//! `:append`. Every key starts as the empty string. Line order is time order.

use super::edn::{self, Node};
use super::{ParseError, edn_value};
use crate::lincheck::history::{Event, EventKind, Operation, Outcome, Output};

/// Reads the file into events (time = event index).
pub fn parse_events(text: &str) -> Result<Vec<Event>, ParseError> {
    let mut events = Vec::new();
    for node in edn::parse_all(text, 1)? {
        let line = node.line;
        let field = |name: &str| {
            node.get(name)
                .ok_or_else(|| ParseError::new(line, format!("missing `:{name}`")))
        };
        let process = match field("process")?.value {
            edn::Edn::Int(p) if p >= 0 => p as u64,
            _ => {
                return Err(ParseError::new(
                    line,
                    "`:process` must be a non-negative integer",
                ));
            }
        };
        let kind = keyword(field("type")?, "type")?;
        let f = keyword(field("f")?, "f")?;
        let value = match node.get("value") {
            Some(v) => edn_value(v)?,
            None => None,
        };
        let kind = match kind {
            "invoke" => {
                let key = edn_value(field("key")?)?
                    .ok_or_else(|| ParseError::new(line, "`:key` must not be nil"))?;
                let needs_value = |value: Option<String>| {
                    value.ok_or_else(|| ParseError::new(line, format!("a {f} needs a value")))
                };
                EventKind::Invoke(match f {
                    "get" => Operation::Get { key },
                    "put" => Operation::Put {
                        key,
                        value: needs_value(value)?,
                    },
                    "append" => Operation::Append {
                        key,
                        value: needs_value(value)?,
                    },
                    other => return Err(unknown_f(other, line)),
                })
            }
            "ok" => EventKind::Complete(Outcome::Ok(match f {
                "get" => Output::Value(value),
                "put" | "append" => Output::Done,
                other => return Err(unknown_f(other, line)),
            })),
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
    Ok(events)
}

fn keyword<'a>(node: &'a Node, name: &str) -> Result<&'a str, ParseError> {
    node.keyword()
        .ok_or_else(|| ParseError::new(node.line, format!("`:{name}` must be a keyword")))
}

fn unknown_f(f: &str, line: usize) -> ParseError {
    ParseError::new(
        line,
        format!("unknown operation `:{f}` (expected :get, :put or :append)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_an_append_and_a_get_when_read_then_values_are_kept_verbatim() {
        let text = "{:process 0, :type :invoke, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :ok, :f :append, :key \"0\", :value \"x 0 0 y\"}\n\
                    {:process 0, :type :invoke, :f :get, :key \"0\", :value nil}\n\
                    {:process 0, :type :ok, :f :get, :key \"0\", :value \"\"}\n";
        let events = parse_events(text).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0].kind,
            EventKind::Invoke(Operation::Append {
                key: "0".into(),
                value: "x 0 0 y".into()
            })
        );
        assert_eq!(
            events[3].kind,
            EventKind::Complete(Outcome::Ok(Output::Value(Some(String::new()))))
        );
        assert_eq!(events[3].line, 4);
    }

    #[test]
    fn given_a_map_without_process_when_read_then_the_error_names_the_line() {
        let text = "{:process 0, :type :invoke, :f :get, :key \"0\", :value nil}\n{:type :ok}\n";
        let error = parse_events(text).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains(":process"));
    }
}
