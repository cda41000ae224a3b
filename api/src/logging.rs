//! The node's log lines: JSON lines for log shippers (`observability.log_format: json`), with
//! the seed's field names, or console lines for people; colour codes only when the output is
//! a terminal.
//!
//! Every line says which node wrote it (`node_id`) and, once the node runs, its `term` and
//! whether it leads (`is_leader`), read from the node's status when the line is written; a
//! line written while a request is served carries the request's id (`request_id`), its `op`
//! and, for a request on one key, the `key` ([`crate::request_id`]). Fields the event names
//! itself (`term`, `index`, ...) win over the ones added here.
//!
//! Levels, as the seed has them: `debug` for internal state, `info` for operations, cluster
//! events and elections, `warn` for errors the node recovers from, `error` for failed
//! operations. Nothing is logged at `info` per request.
//!
//! Invariant: a JSON line is one object on one line (values are JSON-escaped), starting with
//! `ts`, `level` and `msg`, each field named once.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::{Config, LogFormat};

/// What a log line says of the node as it is now: its term and whether it leads.
pub type NodeView = Box<dyn Fn() -> (u64, bool) + Send + Sync>;

static NODE_VIEW: OnceLock<NodeView> = OnceLock::new();

/// Tells the log lines from now on where to read the node's term and role (once the node
/// runs; lines before it carry neither). Later calls are ignored: one node per process.
pub fn set_node_view(view: NodeView) {
    let _ = NODE_VIEW.set(view);
}

/// Installs the process's log output on stderr, as `config` says (`RUST_LOG` overrides the
/// level). Colour codes are written only when stderr is a terminal, so that a log file or a
/// pipe holds plain text.
pub fn init(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.observability.log_level));
    let node_id = config.raft.node_id.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.observability.log_format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(Lines {
                node_id,
                json: true,
            })
            .init(),
        LogFormat::Console => builder
            .event_format(Lines {
                node_id,
                json: false,
            })
            .init(),
    }
}

/// The event formatter of both formats.
pub struct Lines {
    /// This node's name.
    pub node_id: String,
    /// JSON lines (else console lines).
    pub json: bool,
}

/// An event's fields, in order, with the message apart.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(&'static str, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.push((field.name(), Value::from(value)));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), Value::from(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), Value::from(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), Value::from(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.push((field.name(), Value::from(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .push((field.name(), Value::from(format!("{value:?}"))));
        }
    }
}

/// The fields a line gets besides the event's own, in order.
fn context(node_id: &str) -> Vec<(&'static str, Value)> {
    let mut added = vec![("node_id", Value::from(node_id))];
    if let Some(view) = NODE_VIEW.get() {
        let (term, is_leader) = view();
        added.push(("term", Value::from(term)));
        added.push(("is_leader", Value::from(is_leader)));
    }
    crate::request_id::with_current(|request| {
        added.push(("request_id", Value::from(&*request.id)));
        added.push(("op", Value::from(request.op())));
        if let Some(key) = request.key() {
            added.push(("key", Value::from(key)));
        }
    });
    added
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visited = Fields::default();
        event.record(&mut visited);
        let meta = event.metadata();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        // Spans' fields (the server opens none today; a library might), outermost first.
        let spans: Vec<String> = ctx
            .event_scope()
            .into_iter()
            .flat_map(|scope| scope.from_root())
            .filter_map(|span| {
                let ext = span.extensions();
                ext.get::<FormattedFields<N>>()
                    .map(|f| f.fields.clone())
                    .filter(|f| !f.is_empty())
            })
            .collect();
        let own: std::collections::HashSet<&str> =
            visited.fields.iter().map(|(name, _)| *name).collect();
        let added: Vec<_> = context(&self.node_id)
            .into_iter()
            .filter(|(name, _)| !own.contains(name))
            .collect();
        if self.json {
            // Written field by field, so that a line reads in the same order every time:
            // time, level, message, the node and request, then the event's own fields.
            let mut seen = std::collections::HashSet::new();
            let mut text = String::from("{");
            let mut field = |name: &str, value: &Value| {
                if seen.insert(name.to_string()) {
                    if text.len() > 1 {
                        text.push(',');
                    }
                    text.push_str(&Value::from(name).to_string());
                    text.push(':');
                    text.push_str(&value.to_string());
                }
            };
            field("ts", &Value::from(ts));
            field("level", &Value::from(level_name(meta.level())));
            field("msg", &Value::from(visited.message));
            for (name, value) in added.iter().chain(&visited.fields) {
                field(name, value);
            }
            for span in spans {
                if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&span) {
                    for (name, value) in &fields {
                        field(name, value);
                    }
                }
            }
            field("target", &Value::from(meta.target()));
            text.push('}');
            return writeln!(writer, "{text}");
        }
        let level = level_name(meta.level()).to_ascii_uppercase();
        if writer.has_ansi_escapes() {
            let colour = match *meta.level() {
                Level::ERROR => "31",
                Level::WARN => "33",
                Level::INFO => "32",
                _ => "34",
            };
            write!(writer, "{ts} \x1b[{colour}m{level:>5}\x1b[0m ")?;
        } else {
            write!(writer, "{ts} {level:>5} ")?;
        }
        write!(writer, "{}: {}", meta.target(), visited.message)?;
        for (name, value) in visited.fields.iter().chain(&added) {
            match value {
                Value::String(s) => write!(writer, " {name}={s}")?,
                other => write!(writer, " {name}={other}")?,
            }
        }
        for span in spans {
            write!(writer, " {span}")?;
        }
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what the formatter writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(json: bool, emit: impl FnOnce()) -> String {
        let out = Captured::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .fmt_fields(JsonFields::new())
            .event_format(Lines {
                node_id: "node7".into(),
                json,
            })
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_json_line_has_the_seeds_fields_and_the_request_it_was_written_for() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A running node's term and role, as `raftkv` installs them.
        set_node_view(Box::new(|| (9, true)));
        let text = lines(true, || {
            let request = crate::request_id::Request::http(
                Arc::from("req-1"),
                hyper::Method::PUT,
                "/keys/user%2F1".parse().unwrap(),
            );
            runtime.block_on(crate::request_id::scope(request, async {
                tracing::warn!(index = 12u64, "could not do it");
            }));
            tracing::info!(term = 3u64, "outside any request");
        });
        let mut lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap());
        let first = lines.next().unwrap();
        assert_eq!(first["level"], "warn");
        assert_eq!(first["msg"], "could not do it");
        assert_eq!(first["node_id"], "node7");
        assert_eq!(first["index"], 12);
        assert_eq!(first["request_id"], "req-1");
        assert_eq!(first["op"], "put");
        assert_eq!(first["key"], "user%2F1");
        assert!(first["ts"].as_str().unwrap().ends_with('Z'), "{first}");
        assert_eq!(first["term"], 9, "the node's term when no field names one");
        assert_eq!(first["is_leader"], true);
        let second = lines.next().unwrap();
        assert_eq!(second["term"], 3, "the event's own field wins");
        assert!(second.get("request_id").is_none());
    }

    #[test]
    fn a_console_line_written_to_a_file_holds_no_colour_codes() {
        let text = lines(false, || tracing::error!(peer = "node2", "it failed"));
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(text.contains("ERROR"), "{text}");
        assert!(
            text.contains("it failed peer=node2 node_id=node7"),
            "{text}"
        );
    }
}
