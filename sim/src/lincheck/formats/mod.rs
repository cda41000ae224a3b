//! History file formats: each reader turns text into [`Event`]s and says which model its source
//! meant, because the formats disagree on meanings (a Jepsen etcd `:fail` CAS executed and
//! compared false; a Knossos `:fail` never happened; a Knossos `nil` read is unconstrained).
//!
//! Every reader treats its input as hostile: size-limited, no panics, and every error names the
//! line (and, through [`load`], the file).

pub mod edn;
pub mod knossos;
pub mod porcupine_etcd;
pub mod porcupine_kv;
pub mod raftkv;

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::check::{CheckError, CheckOptions, CheckReport, check};
use super::history::{Event, History, HistoryError, Value};
use super::model::{KvModel, MultiRegisterModel, RegisterModel};
use super::{Analysis, analyze};

/// The largest history file read, in bytes: bounds memory before parsing.
pub const INPUT_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// A history file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// RaftKV's own JSON Lines (docs/history-format.md).
    Raftkv,
    /// Porcupine's kv test data: one EDN map per line, get/put/append on string keys.
    PorcupineKv,
    /// Porcupine's etcd Jepsen logs: `INFO jepsen.util - <process> <type> <f> <value>`.
    PorcupineEtcd,
    /// A Knossos EDN history: one vector or list of operation maps (cas-register or multi-register).
    Knossos,
}

impl Format {
    /// Guesses the format from a file name: `.edn` knossos, `.log` porcupine-etcd, `.txt`
    /// porcupine-kv, `.jsonl`/`.json` raftkv; `None` for any other name.
    pub fn from_extension(path: &Path) -> Option<Format> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("edn") => Some(Format::Knossos),
            Some("log") => Some(Format::PorcupineEtcd),
            Some("txt") => Some(Format::PorcupineKv),
            Some("jsonl" | "json") => Some(Format::Raftkv),
            _ => None,
        }
    }

    /// Recognises the format from the first thing in `text` that is not blank or a `;` comment:
    /// `{"` is a raftkv JSON object, `{:` a porcupine kv EDN map, `[` or `(` a knossos
    /// collection, `INFO` a porcupine etcd log line. `None` when the text is empty or starts with
    /// anything else.
    pub fn sniff(text: &str) -> Option<Format> {
        let first = text
            .lines()
            .map(str::trim_start)
            .find(|line| !line.is_empty() && !line.starts_with(';'))?;
        if first.starts_with("INFO") {
            return Some(Format::PorcupineEtcd);
        }
        match first.as_bytes().first()? {
            b'[' | b'(' => Some(Format::Knossos),
            b'{' => match first[1..].trim_start().as_bytes().first() {
                Some(b'"') | Some(b'}') => Some(Format::Raftkv),
                Some(b':') => Some(Format::PorcupineKv),
                _ => None,
            },
            _ => None,
        }
    }

    /// The format of a file: recognised from its content, else from its name.
    pub fn detect(path: &Path, text: &str) -> Option<Format> {
        Format::sniff(text).or_else(|| Format::from_extension(path))
    }

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raftkv => "raftkv",
            Format::PorcupineKv => "porcupine-kv",
            Format::PorcupineEtcd => "porcupine-etcd",
            Format::Knossos => "knossos",
        }
    }
}

/// The model a history is meant to be checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// A key-value map checked key by key ([`KvModel`]).
    Kv {
        /// Each key's initial value (`None`: absent).
        initial: Option<Value>,
    },
    /// One register ([`RegisterModel`]).
    Register {
        /// Its initial value (`None`: absent).
        initial: Option<Value>,
    },
    /// Registers read and written by transactions ([`MultiRegisterModel`]).
    MultiRegister {
        /// Every register's initial value (`None`: absent).
        initial: Option<Value>,
    },
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<Value>| {
            v.as_ref()
                .map_or("absent".to_string(), |v| format!("{v:?}"))
        };
        match self {
            ModelSpec::Kv { initial } => write!(f, "kv map, per key, initially {}", show(initial)),
            ModelSpec::Register { initial } => write!(f, "register, initially {}", show(initial)),
            ModelSpec::MultiRegister { initial } => {
                write!(f, "multi-register, initially {}", show(initial))
            }
        }
    }
}

impl ModelSpec {
    /// Checks `history` against this model.
    pub fn check(
        &self,
        history: &History,
        options: &CheckOptions,
    ) -> Result<CheckReport, CheckError> {
        match self {
            ModelSpec::Kv { initial } => check(
                &KvModel {
                    initial: initial.clone(),
                },
                history,
                options,
            ),
            ModelSpec::Register { initial } => check(
                &RegisterModel {
                    initial: initial.clone(),
                },
                history,
                options,
            ),
            ModelSpec::MultiRegister { initial } => check(
                &MultiRegisterModel {
                    initial: initial.clone(),
                },
                history,
                options,
            ),
        }
    }

    /// Checks, shrinks a violation and renders the text report (see [`analyze`]).
    pub fn analyze(
        &self,
        history: &History,
        options: &CheckOptions,
        shrink_budget: Duration,
    ) -> Result<Analysis, CheckError> {
        match self {
            ModelSpec::Kv { initial } => analyze(
                &KvModel {
                    initial: initial.clone(),
                },
                history,
                options,
                shrink_budget,
            ),
            ModelSpec::Register { initial } => analyze(
                &RegisterModel {
                    initial: initial.clone(),
                },
                history,
                options,
                shrink_budget,
            ),
            ModelSpec::MultiRegister { initial } => analyze(
                &MultiRegisterModel {
                    initial: initial.clone(),
                },
                history,
                options,
                shrink_budget,
            ),
        }
    }
}

/// A parsed history with the model its format implies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The calls.
    pub history: History,
    /// The model to check them against.
    pub model: ModelSpec,
    /// Events read (after dropping ones the format says to ignore, such as nemesis events).
    pub events: usize,
    /// The format the text was read as.
    pub format: Format,
}

/// Why text could not be read as a history (without the file name).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the problem (0: the input as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ParseError {
    /// An error at `line`.
    pub fn new(line: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            line,
            message: message.into(),
        }
    }
}

impl From<edn::EdnError> for ParseError {
    fn from(error: edn::EdnError) -> ParseError {
        ParseError::new(error.line, error.message)
    }
}

impl From<HistoryError> for ParseError {
    fn from(error: HistoryError) -> ParseError {
        let line = match &error {
            HistoryError::UnmatchedCompletion { line, .. }
            | HistoryError::OverlappingInvoke { line, .. }
            | HistoryError::TimeGoesBack { line, .. }
            | HistoryError::OutputMismatch { line, .. } => *line,
            HistoryError::TooLarge { .. } => 0,
        };
        let text = error.to_string();
        let message = text
            .strip_prefix(&format!("line {line}: "))
            .unwrap_or(&text)
            .to_string();
        ParseError::new(line, message)
    }
}

/// Why a history file could not be loaded. Displays as one line naming the file.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`INPUT_BYTES_MAX`].
    #[error("{path}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file is not UTF-8 text.
    #[error("{path}: not UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// No format was given and none could be recognised.
    #[error(
        "{path}: cannot tell the history format from the content or the file name; pass --format \
         raftkv|porcupine-kv|porcupine-etcd|knossos"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The text is not a valid history in the format.
    #[error("{path}:{line}: {message} (format {format})")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        message: String,
        /// The format it was read as.
        format: &'static str,
    },
}

/// Parses `text` in `format` into a history.
pub fn parse(format: Format, text: &str) -> Result<Loaded, ParseError> {
    let (events, model): (Vec<Event>, ModelSpec) = match format {
        Format::Raftkv => (raftkv::parse_events(text)?, ModelSpec::Kv { initial: None }),
        Format::PorcupineKv => (
            porcupine_kv::parse_events(text)?,
            ModelSpec::Kv {
                initial: Some(String::new()),
            },
        ),
        Format::PorcupineEtcd => (
            porcupine_etcd::parse_events(text)?,
            ModelSpec::Register { initial: None },
        ),
        Format::Knossos => knossos::parse_events(text)?,
    };
    let history = History::from_events(&events)?;
    Ok(Loaded {
        history,
        model,
        events: events.len(),
        format,
    })
}

/// Reads and parses the file at `path`, in `format`, or in the format [`Format::detect`]
/// recognises when `format` is `None`.
pub fn load(path: &Path, format: Option<Format>) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Read at most one byte past the limit, so a huge file (or an endless pipe) is refused
    // without being read into memory.
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(INPUT_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > INPUT_BYTES_MAX {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            limit: INPUT_BYTES_MAX,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| LoadError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    let format = match format.or_else(|| Format::detect(path, &text)) {
        Some(format) => format,
        None => {
            return Err(LoadError::UnknownFormat {
                path: path.to_path_buf(),
            });
        }
    };
    parse(format, &text).map_err(|error| LoadError::Parse {
        path: path.to_path_buf(),
        line: error.line,
        message: error.message,
        format: format.name(),
    })
}

/// Converts an EDN scalar to a store value: integers as decimal text, strings as themselves,
/// keywords by name; `nil` is `None`.
pub(crate) fn edn_value(node: &edn::Node) -> Result<Option<Value>, ParseError> {
    match &node.value {
        edn::Edn::Nil => Ok(None),
        edn::Edn::Int(n) => Ok(Some(n.to_string())),
        edn::Edn::Str(s) => Ok(Some(s.clone())),
        edn::Edn::Keyword(k) => Ok(Some(k.clone())),
        other => Err(ParseError::new(
            node.line,
            format!(
                "expected a value (nil, integer, string or keyword), found {}",
                kind(other)
            ),
        )),
    }
}

/// A short name of an EDN value's kind, for messages.
pub(crate) fn kind(value: &edn::Edn) -> &'static str {
    match value {
        edn::Edn::Nil => "nil",
        edn::Edn::Bool(_) => "a boolean",
        edn::Edn::Int(_) => "an integer",
        edn::Edn::Str(_) => "a string",
        edn::Edn::Keyword(_) => "a keyword",
        edn::Edn::Symbol(_) => "a symbol",
        edn::Edn::Vector(_) => "a vector",
        edn::Edn::List(_) => "a list",
        edn::Edn::Map(_) => "a map",
    }
}
