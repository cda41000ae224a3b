//! Porcupine's etcd Jepsen logs: one register, one event per line.
//!
//! `INFO  jepsen.util - <process> <type> <f> <value>`, fields split on runs of whitespace; the
//! value is the rest of the line (a CAS value `[a b]` holds a space). Line order is time order.
//!
//! Meanings (porcupine's etcd model; the register starts absent):
//! * `:ok :read nil` saw the register absent; `:ok :read v` saw `v`;
//! * `:fail :cas` executed and its comparison failed (it is *not* "did not happen");
//! * `:fail :read` timed out: unknown, constrains nothing;
//! * `:info` (and any invocation never completed) is unknown: it may take effect once, later, or
//!   never. A `:fail :write`, which these logs never hold, is treated as unknown too.

use super::ParseError;
use super::edn::{self, Edn};
use crate::lincheck::history::{Event, EventKind, Operation, Outcome, Output, Value};

/// Reads a log into events (time = event index).
pub fn parse_events(text: &str) -> Result<Vec<Event>, ParseError> {
    let mut events = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let (fields, value) = split_fields(raw);
        let [info, logger, dash, process, kind, f] = fields;
        if info != "INFO" || logger != "jepsen.util" || dash != "-" {
            return Err(ParseError::new(
                line,
                "expected `INFO jepsen.util - <process> <type> <f> <value>`",
            ));
        }
        let process: u64 = process
            .parse()
            .map_err(|_| ParseError::new(line, format!("process `{process}` is not an integer")))?;
        let f = f.strip_prefix(':').unwrap_or(f);
        let value_node = parse_value(value, line)?;
        let kind = match kind {
            ":invoke" => EventKind::Invoke(operation(f, &value_node, line)?),
            ":ok" => EventKind::Complete(Outcome::Ok(match f {
                "read" => Output::Value(scalar(&value_node, line)?),
                "write" => Output::Done,
                "cas" => Output::Cas { swapped: true },
                _ => return Err(unknown_f(f, line)),
            })),
            ":fail" => EventKind::Complete(match f {
                "cas" => Outcome::Ok(Output::Cas { swapped: false }),
                "read" | "write" => Outcome::Unknown,
                _ => return Err(unknown_f(f, line)),
            }),
            ":info" => EventKind::Complete(Outcome::Unknown),
            other => {
                return Err(ParseError::new(
                    line,
                    format!("unknown type `{other}` (expected :invoke, :ok, :fail or :info)"),
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

/// The first six whitespace-separated fields (empty when missing) and the rest of the line.
fn split_fields(raw: &str) -> ([&str; 6], &str) {
    let mut fields = [""; 6];
    let mut rest = raw;
    for field in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        *field = &rest[..end];
        rest = &rest[end..];
    }
    (fields, rest.trim())
}

fn parse_value(text: &str, line: usize) -> Result<edn::Node, ParseError> {
    let mut nodes = edn::parse_all(text, line)?;
    match (nodes.pop(), nodes.is_empty()) {
        (Some(node), true) => Ok(node),
        _ => Err(ParseError::new(
            line,
            "expected exactly one value after the operation",
        )),
    }
}

fn operation(f: &str, value: &edn::Node, line: usize) -> Result<Operation, ParseError> {
    let key = String::new();
    match f {
        "read" => Ok(Operation::Get { key }),
        "write" => match scalar(value, line)? {
            Some(value) => Ok(Operation::Put { key, value }),
            None => Err(ParseError::new(line, "a write needs a value")),
        },
        "cas" => {
            let pair = value.items().unwrap_or_default();
            match pair {
                [old, new] => match (scalar(old, line)?, scalar(new, line)?) {
                    (expected, Some(new)) => Ok(Operation::Cas { key, expected, new }),
                    (_, None) => Err(ParseError::new(line, "a cas cannot store nil")),
                },
                _ => Err(ParseError::new(line, "a cas value must be `[old new]`")),
            }
        }
        _ => Err(unknown_f(f, line)),
    }
}

fn scalar(node: &edn::Node, line: usize) -> Result<Option<Value>, ParseError> {
    match &node.value {
        Edn::Nil => Ok(None),
        Edn::Int(n) => Ok(Some(n.to_string())),
        other => Err(ParseError::new(
            line,
            format!("expected nil or an integer, found {}", super::kind(other)),
        )),
    }
}

fn unknown_f(f: &str, line: usize) -> ParseError {
    ParseError::new(
        line,
        format!("unknown operation `:{f}` (expected :read, :write or :cas)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_tab_and_space_separated_lines_when_read_then_both_parse_alike() {
        let text = "INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\nINFO  jepsen.util - 2   :fail   :cas    [3 0]\n";
        let events = parse_events(text).unwrap();
        assert_eq!(
            events[0].kind,
            EventKind::Invoke(Operation::Cas {
                key: String::new(),
                expected: Some("3".into()),
                new: "0".into()
            })
        );
        assert_eq!(
            events[1].kind,
            EventKind::Complete(Outcome::Ok(Output::Cas { swapped: false }))
        );
        assert_eq!(events[1].time, 1);
    }

    #[test]
    fn given_a_timed_out_write_when_read_then_its_outcome_is_unknown() {
        let text = "INFO  jepsen.util - 7\t:invoke\t:write\t3\nINFO  jepsen.util - 7\t:info\t:write\t:timed-out\n";
        let events = parse_events(text).unwrap();
        assert_eq!(events[1].kind, EventKind::Complete(Outcome::Unknown));
    }

    #[test]
    fn given_a_nil_read_when_read_then_it_saw_the_register_absent() {
        let text = "INFO jepsen.util - 0 :invoke :read nil\nINFO jepsen.util - 0 :ok :read nil\n";
        let events = parse_events(text).unwrap();
        assert_eq!(
            events[1].kind,
            EventKind::Complete(Outcome::Ok(Output::Value(None)))
        );
    }

    #[test]
    fn given_a_garbage_line_when_read_then_the_error_names_it() {
        let text = "INFO jepsen.util - 0 :invoke :read nil\nhello world\n";
        let error = parse_events(text).unwrap_err();
        assert_eq!(error.line, 2);
    }
}
