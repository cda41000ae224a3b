//! RaftKV's own history format: JSON Lines, one event per line (see docs/history-format.md).
//!
//! Invocation: `{"type":"invoke","process":1,"time":100,"f":"put","key":"a","value":"1"}`;
//! `f` is `get`, `put` (`value`), `delete`, `cas` (`expected`: string or null for "absent",
//! `new`) or `append` (`value`). Completion: `{"type":"ok","process":1,"time":120}` plus, for a
//! get, `"value"` (string, or null: absent) and, for a cas, `"swapped"` (bool). `"type":"fail"`:
//! known not to have happened; `"type":"info"`: unknown. A completion may repeat `f`; it must
//! then match. Unknown fields are errors, so a typo cannot silently change a meaning.
//!
//! [`write_events`] is the inverse of [`parse_events`] for every event this format can hold.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};
use thiserror::Error;

use super::ParseError;
use crate::lincheck::history::{Event, EventKind, Operation, Outcome, Output, ProcessId, Value};

const FIELDS: &[&str] = &[
    "type", "process", "time", "f", "key", "value", "expected", "new", "swapped",
];

/// Reads JSON Lines into events. Blank lines are skipped.
pub fn parse_events(text: &str) -> Result<Vec<Event>, ParseError> {
    let mut events = Vec::new();
    let mut outstanding: HashMap<ProcessId, &'static str> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let object: Map<String, Json> = match serde_json::from_str(raw) {
            Ok(Json::Object(object)) => object,
            Ok(_) => return Err(ParseError::new(line, "expected a JSON object")),
            Err(error) => return Err(ParseError::new(line, format!("invalid JSON: {error}"))),
        };
        let reader = Line {
            object: &object,
            line,
        };
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(ParseError::new(line, format!("unknown field `{unknown}`")));
        }
        let process = reader.u64("process")?;
        let time = reader.u64("time")?;
        let kind = match reader.string("type")? {
            "invoke" => {
                let op = reader.operation()?;
                outstanding.insert(process, op.name());
                EventKind::Invoke(op)
            }
            kind @ ("ok" | "fail" | "info") => {
                let Some(f) = outstanding.remove(&process) else {
                    return Err(ParseError::new(
                        line,
                        format!(
                            "completion for process {process}, which has no outstanding invocation"
                        ),
                    ));
                };
                if let Some(given) = reader.optional_string("f")?
                    && given != f
                {
                    return Err(ParseError::new(
                        line,
                        format!("completion says `{given}` but process {process} invoked `{f}`"),
                    ));
                }
                EventKind::Complete(match kind {
                    "ok" => Outcome::Ok(reader.output(f)?),
                    "fail" => Outcome::Fail,
                    _ => Outcome::Unknown,
                })
            }
            other => {
                return Err(ParseError::new(
                    line,
                    format!("unknown type `{other}` (expected invoke, ok, fail or info)"),
                ));
            }
        };
        events.push(Event {
            process,
            time,
            kind,
            line,
        });
    }
    Ok(events)
}

struct Line<'a> {
    object: &'a Map<String, Json>,
    line: usize,
}

impl Line<'_> {
    fn error(&self, message: String) -> ParseError {
        ParseError::new(self.line, message)
    }

    fn required(&self, name: &str) -> Result<&Json, ParseError> {
        self.object
            .get(name)
            .ok_or_else(|| self.error(format!("missing field `{name}`")))
    }

    fn u64(&self, name: &str) -> Result<u64, ParseError> {
        self.required(name)?
            .as_u64()
            .ok_or_else(|| self.error(format!("`{name}` must be a non-negative integer")))
    }

    fn string(&self, name: &str) -> Result<&str, ParseError> {
        self.required(name)?
            .as_str()
            .ok_or_else(|| self.error(format!("`{name}` must be a string")))
    }

    fn optional_string(&self, name: &str) -> Result<Option<&str>, ParseError> {
        match self.object.get(name) {
            None => Ok(None),
            Some(_) => self.string(name).map(Some),
        }
    }

    /// A string or null (null: absent).
    fn nullable(&self, name: &str) -> Result<Option<Value>, ParseError> {
        match self.required(name)? {
            Json::Null => Ok(None),
            Json::String(s) => Ok(Some(s.clone())),
            _ => Err(self.error(format!("`{name}` must be a string or null"))),
        }
    }

    fn only(&self, allowed: &[&str], what: &str) -> Result<(), ParseError> {
        let common = ["type", "process", "time", "f"];
        match self
            .object
            .keys()
            .find(|k| !common.contains(&k.as_str()) && !allowed.contains(&k.as_str()))
        {
            Some(extra) => Err(self.error(format!("field `{extra}` does not belong on {what}"))),
            None => Ok(()),
        }
    }

    fn operation(&self) -> Result<Operation, ParseError> {
        let f = self.string("f")?;
        let key = || self.string("key").map(str::to_string);
        let value = || self.string("value").map(str::to_string);
        let what = format!("a {f} invocation");
        let op = match f {
            "get" => {
                self.only(&["key"], &what)?;
                Operation::Get { key: key()? }
            }
            "put" => {
                self.only(&["key", "value"], &what)?;
                Operation::Put {
                    key: key()?,
                    value: value()?,
                }
            }
            "delete" => {
                self.only(&["key"], &what)?;
                Operation::Delete { key: key()? }
            }
            "cas" => {
                self.only(&["key", "expected", "new"], &what)?;
                Operation::Cas {
                    key: key()?,
                    expected: self.nullable("expected")?,
                    new: self.string("new")?.to_string(),
                }
            }
            "append" => {
                self.only(&["key", "value"], &what)?;
                Operation::Append {
                    key: key()?,
                    value: value()?,
                }
            }
            other => {
                return Err(self.error(format!(
                    "unknown operation `{other}` (expected get, put, delete, cas or append)"
                )));
            }
        };
        Ok(op)
    }

    fn output(&self, f: &str) -> Result<Output, ParseError> {
        let what = format!("a {f} completion");
        match f {
            "get" => {
                self.only(&["value"], &what)?;
                Ok(Output::Value(self.nullable("value")?))
            }
            "cas" => {
                self.only(&["swapped"], &what)?;
                self.required("swapped")?
                    .as_bool()
                    .map(|swapped| Output::Cas { swapped })
                    .ok_or_else(|| self.error("`swapped` must be true or false".into()))
            }
            _ => {
                self.only(&[], &what)?;
                Ok(Output::Done)
            }
        }
    }
}

/// An event this format cannot hold.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// Transactions and "ok with unknown answer" have no JSON Lines form.
    #[error("event {index}: {what} cannot be written as raftkv JSON Lines")]
    Unsupported {
        /// Index of the event.
        index: usize,
        /// What it was.
        what: &'static str,
    },
}

/// Writes events as JSON Lines, one per line, each ending in `\n`.
pub fn write_events(events: &[Event]) -> Result<String, WriteError> {
    let mut out = String::new();
    for (index, event) in events.iter().enumerate() {
        let unsupported = |what| WriteError::Unsupported { index, what };
        let mut object = Map::new();
        let kind = match &event.kind {
            EventKind::Invoke(_) => "invoke",
            EventKind::Complete(Outcome::Ok(_)) => "ok",
            EventKind::Complete(Outcome::Fail) => "fail",
            EventKind::Complete(Outcome::Unknown) => "info",
        };
        object.insert("type".into(), json!(kind));
        object.insert("process".into(), json!(event.process));
        object.insert("time".into(), json!(event.time));
        match &event.kind {
            EventKind::Invoke(op) => {
                object.insert("f".into(), json!(op.name()));
                match op {
                    Operation::Get { key } | Operation::Delete { key } => {
                        object.insert("key".into(), json!(key));
                    }
                    Operation::Put { key, value } | Operation::Append { key, value } => {
                        object.insert("key".into(), json!(key));
                        object.insert("value".into(), json!(value));
                    }
                    Operation::Cas { key, expected, new } => {
                        object.insert("key".into(), json!(key));
                        object.insert("expected".into(), json!(expected));
                        object.insert("new".into(), json!(new));
                    }
                    Operation::Txn { .. } => return Err(unsupported("a transaction")),
                }
            }
            EventKind::Complete(Outcome::Ok(output)) => match output {
                Output::Value(value) => {
                    object.insert("value".into(), json!(value));
                }
                Output::Cas { swapped } => {
                    object.insert("swapped".into(), json!(swapped));
                }
                Output::Done => {}
                Output::Unknown => return Err(unsupported("an ok with an unknown answer")),
                Output::Txn { .. } => return Err(unsupported("a transaction's answer")),
            },
            EventKind::Complete(_) => {}
        }
        out.push_str(&Json::Object(object).to_string());
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_every_operation_when_written_and_read_back_then_events_are_equal() {
        let text = concat!(
            r#"{"type":"invoke","process":1,"time":1,"f":"put","key":"a","value":"1"}"#,
            "\n",
            r#"{"type":"invoke","process":2,"time":2,"f":"cas","key":"a","expected":null,"new":"2"}"#,
            "\n",
            r#"{"type":"ok","process":1,"time":3}"#,
            "\n",
            r#"{"type":"ok","process":2,"time":4,"swapped":false}"#,
            "\n",
            r#"{"type":"invoke","process":1,"time":5,"f":"get","key":"a"}"#,
            "\n",
            r#"{"type":"ok","process":1,"time":6,"f":"get","value":"1"}"#,
            "\n",
            r#"{"type":"invoke","process":1,"time":7,"f":"delete","key":"a"}"#,
            "\n",
            r#"{"type":"info","process":1,"time":8}"#,
            "\n",
            r#"{"type":"invoke","process":3,"time":9,"f":"append","key":"b","value":"x"}"#,
            "\n",
            r#"{"type":"fail","process":3,"time":10}"#,
            "\n",
        );
        let events = parse_events(text).unwrap();
        assert_eq!(events.len(), 10);
        let written = write_events(&events).unwrap();
        assert_eq!(parse_events(&written).unwrap(), events);
    }

    #[test]
    fn given_a_get_completion_without_value_when_read_then_the_error_names_the_field() {
        let text = "{\"type\":\"invoke\",\"process\":1,\"time\":1,\"f\":\"get\",\"key\":\"a\"}\n\
                    {\"type\":\"ok\",\"process\":1,\"time\":2}\n";
        let error = parse_events(text).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("`value`"), "{error}");
    }

    #[test]
    fn given_a_typo_in_a_field_name_when_read_then_it_is_an_error() {
        let text = "{\"type\":\"invoke\",\"process\":1,\"time\":1,\"f\":\"put\",\"key\":\"a\",\"valeu\":\"1\"}\n";
        let error = parse_events(text).unwrap_err();
        assert!(error.message.contains("valeu"), "{error}");
    }

    #[test]
    fn given_a_completion_without_invocation_when_read_then_it_is_an_error() {
        let text = "\n{\"type\":\"ok\",\"process\":4,\"time\":2}\n";
        let error = parse_events(text).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("no outstanding invocation"));
    }

    #[test]
    fn given_invalid_json_when_read_then_the_error_says_so() {
        let error = parse_events("{\"type\": \n").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.message.starts_with("invalid JSON"));
    }
}
