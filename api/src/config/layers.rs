//! Merging the configuration layers: defaults < file < environment < flags.
//!
//! Each layer is turned into (dotted key, value) pairs, every key is checked against the
//! defaults' keys (so typos are caught with a suggestion), and the value is written into one
//! JSON tree. The tree remembers which layer set each key, so that a type or range error later
//! names the file, variable or flag to fix.
//!
//! A key written under one of its [`ALIASES`] is kept aside until every layer is in, then
//! moved to its key; if the key was given too, under its own name, the two values must mean
//! the same, or the configuration is refused (which one the operator meant cannot be known).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Config, ConfigError, NameConflict, Source, seed, units};

/// The prefix of environment variables read as configuration.
pub const ENV_PREFIX: &str = "RAFTKV_";
/// The separator between section and key in an environment variable name.
pub const ENV_SEPARATOR: &str = "__";
/// The configuration's sections, as they appear in environment variable names.
const SECTIONS: [&str; 5] = ["raft", "server", "storage", "wal", "observability"];
/// The largest configuration file read (a config file is small; anything bigger is a mistake).
pub const CONFIG_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// A setting accepted under a second name: the seed's name for it, or an earlier one of ours.
/// An alias means exactly what its key means.
pub struct Alias {
    /// The second name, as written in a file, a variable (`RAFTKV_WAL__BATCH_SIZE`) or `--set`.
    pub name: &'static str,
    /// The key it sets.
    pub key: &'static str,
    /// How the two names relate, for errors about either.
    pub meaning: &'static str,
}

/// Every alias.
pub const ALIASES: [Alias; 3] = [
    Alias {
        name: "raft.heartbeat_timeout",
        key: "raft.election_timeout",
        meaning: "raft.heartbeat_timeout is the seed's (hashicorp/raft) name for the election timeout, how long a follower waits without hearing from a leader before it campaigns; the time between a leader's heartbeats is raft.heartbeat_interval",
    },
    Alias {
        name: "wal.batch_size",
        key: "raft.batch_size",
        meaning: "wal.batch_size is the earlier name of raft.batch_size (the Raft driver's batch, not the WAL's)",
    },
    Alias {
        name: "wal.batch_wait_time",
        key: "raft.batch_wait",
        meaning: "wal.batch_wait_time is the earlier name of raft.batch_wait (the Raft driver's batch, not the WAL's)",
    },
];

/// The alias named `name`, if it is one.
fn alias(name: &str) -> Option<&'static Alias> {
    ALIASES.iter().find(|a| a.name == name)
}

/// The configuration flags of the `raftkv` binary (the highest-precedence layer).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// A configuration file (.yaml, .yml or .toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// raft.node_id: this node's stable name.
    #[arg(long)]
    pub node_id: Option<String>,
    /// raft.raft_addr: host:port for Raft traffic.
    #[arg(long)]
    pub raft_addr: Option<String>,
    /// raft.join_addr: HTTP URL of a member of the cluster to join.
    #[arg(long, alias = "join")]
    pub join_addr: Option<String>,
    /// raft.bootstrap: found a new cluster when the data directory is empty (`--bootstrap`
    /// alone means true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub bootstrap: Option<bool>,
    /// server.http_addr: host:port of the HTTP API.
    #[arg(long)]
    pub http_addr: Option<String>,
    /// server.grpc_addr: host:port of the gRPC API.
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// storage.data_dir: where the log and snapshots live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// observability.log_level: trace, debug, info, warn or error (or a filter).
    #[arg(long)]
    pub log_level: Option<String>,
    /// observability.log_format: json or console.
    #[arg(long)]
    pub log_format: Option<String>,
    /// Any key, as section.key=value (repeatable), e.g. --set wal.segment_size=16MiB.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// The merged tree and where each key's value came from.
struct Layers {
    tree: Value,
    /// The known keys, with the kind of value each default has.
    known: HashMap<String, Value>,
    origin: HashMap<String, Source>,
    /// Values given under an alias, by alias name, until [`Layers::resolve_aliases`].
    aliased: HashMap<&'static str, (Value, Source)>,
    /// Keys whose value came through an alias, so that errors name the key as written.
    via_alias: HashMap<&'static str, &'static Alias>,
    /// The ignored seed keys given, each with why (see [`seed`]).
    ignored_seed_keys: Vec<String>,
}

impl Layers {
    fn new() -> Layers {
        let tree = serde_json::to_value(Config::default())
            .expect("the defaults serialise: every field is a plain value");
        let mut known = HashMap::new();
        collect_leaves(&tree, String::new(), &mut known);
        Layers {
            tree,
            known,
            origin: HashMap::new(),
            aliased: HashMap::new(),
            via_alias: HashMap::new(),
            ignored_seed_keys: Vec::new(),
        }
    }

    /// Takes a seed key's value: refused when it cannot keep its meaning, noted when ignored.
    fn seed(
        &mut self,
        key: &'static seed::SeedKey,
        accepted: bool,
        written: String,
        source: Source,
    ) -> Result<(), ConfigError> {
        if !accepted {
            return Err(ConfigError::Refused {
                key: key.name.to_string(),
                value: written,
                source_: source,
                why: key.why,
            });
        }
        if key.rule == seed::Rule::Ignored {
            self.ignored_seed_keys
                .push(format!("{} {source} is ignored: {}", key.name, key.why));
        }
        Ok(())
    }

    fn unknown(&self, key: &str, source: Source) -> ConfigError {
        let hint = closest(key, self.known.keys())
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_default();
        ConfigError::UnknownKey {
            key: key.to_string(),
            source_: source,
            hint,
        }
    }

    /// Sets `key` to `value`, typed already (from a file).
    fn set(&mut self, key: &str, value: Value, source: Source) -> Result<(), ConfigError> {
        if let Some(alias) = alias(key) {
            // Kept aside: whether it may set its key depends on whether the key is given too.
            self.aliased.insert(alias.name, (value, source));
            return Ok(());
        }
        if let Some(seed_key) = seed::seed_key(key) {
            let accepted = seed::accepts(seed_key, &value);
            return self.seed(seed_key, accepted, as_written(&value), source);
        }
        if !self.known.contains_key(key) {
            return Err(self.unknown(key, source));
        }
        let (section, field) = key
            .split_once('.')
            .expect("known keys are all section.field");
        self.tree[section][field] = value;
        self.origin.insert(key.to_string(), source);
        Ok(())
    }

    /// Sets `key` from text (an environment variable or a flag), typed by its default's kind.
    fn set_text(&mut self, key: &str, text: &str, source: Source) -> Result<(), ConfigError> {
        if let Some(seed_key) = seed::seed_key(key) {
            let accepted = seed::accepts_text(seed_key, text);
            return self.seed(seed_key, accepted, text.to_string(), source);
        }
        let typed_as = alias(key).map_or(key, |a| a.key);
        let Some(default) = self.known.get(typed_as) else {
            return Err(self.unknown(key, source));
        };
        let value = match default {
            Value::Bool(_) => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Bool(true),
                "false" | "0" | "no" | "off" => Value::Bool(false),
                _ => {
                    return Err(ConfigError::BadValue {
                        key: key.to_string(),
                        source_: source,
                        problem: format!("`{text}` is not true or false"),
                    });
                }
            },
            Value::Number(_) => match text.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    return Err(ConfigError::BadValue {
                        key: key.to_string(),
                        source_: source,
                        problem: format!("`{text}` is not a whole number"),
                    });
                }
            },
            // An optional setting (null by default) is cleared by an empty value.
            Value::Null if text.is_empty() => Value::Null,
            _ => Value::String(text.to_string()),
        };
        self.set(key, value, source)
    }

    /// Moves each value given under an alias to its key, unless the key was given too: then
    /// the two must agree, or the configuration is refused.
    fn resolve_aliases(&mut self) -> Result<(), ConfigError> {
        for alias in ALIASES.iter() {
            let Some((value, source)) = self.aliased.remove(alias.name) else {
                continue;
            };
            let (section, field) = alias
                .key
                .split_once('.')
                .expect("alias keys are all section.field");
            if let Some(key_source) = self.origin.get(alias.key) {
                let given = &self.tree[section][field];
                if !same_setting(given, &value) {
                    return Err(ConfigError::Conflict(Box::new(NameConflict {
                        alias: alias.name,
                        alias_source: source,
                        alias_value: as_written(&value),
                        key: alias.key,
                        key_source: key_source.clone(),
                        key_value: as_written(given),
                        meaning: alias.meaning,
                    })));
                }
                continue;
            }
            self.tree[section][field] = value;
            self.origin.insert(alias.key.to_string(), source);
            self.via_alias.insert(alias.key, alias);
        }
        Ok(())
    }

    /// An error about `key` names it as the operator wrote it, and says what an alias means
    /// when the problem involves a value given through one.
    fn as_given(&self, key: String, mut problem: String) -> (String, String) {
        let mut written = key.clone();
        for (aliased_key, alias) in self.via_alias.iter() {
            if key == *aliased_key {
                written = alias.name.to_string();
            }
            if key == *aliased_key || problem.contains(aliased_key) {
                problem = format!("{problem} (note: {})", alias.meaning);
            }
        }
        (written, problem)
    }

    fn finish(mut self) -> Result<Config, ConfigError> {
        self.resolve_aliases()?;
        let tree = std::mem::take(&mut self.tree);
        let origin = &self.origin;
        let source_of = |key: &str| origin.get(key).cloned().unwrap_or(Source::Merged);
        let mut config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            let source_ = source_of(&key);
            let (key, problem) = self.as_given(key, e.into_inner().to_string());
            ConfigError::BadValue {
                source_,
                problem,
                key,
            }
        })?;
        config.ignored_seed_keys = std::mem::take(&mut self.ignored_seed_keys);
        if let Some(join) = &config.raft.join_addr {
            // The seed's form names the endpoint (`.../cluster/join`); the rest of the node
            // wants the member's base URL.
            config.raft.join_addr = Some(super::join_base(join).to_string());
        }
        if config.server.advertise_host.is_none() && config.needs_advertise_host() {
            config.server.advertise_host = super::host_name();
        }
        if !config.raft.enabled {
            // The seed's single-node mode: a cluster of one, founded when blank.
            if config.raft.join_addr.is_some() {
                return Err(ConfigError::BadValue {
                    key: "raft.join_addr".into(),
                    source_: source_of("raft.join_addr"),
                    problem: "cannot be given with raft.enabled=false (a single node founds its own cluster and joins none); set raft.enabled=true to join".into(),
                });
            }
            if !config.raft.bootstrap && origin.contains_key("raft.bootstrap") {
                return Err(ConfigError::BadValue {
                    key: "raft.bootstrap".into(),
                    source_: source_of("raft.bootstrap"),
                    problem: "cannot be false with raft.enabled=false: a single node founds its own cluster when its data directory is blank".into(),
                });
            }
            config.raft.bootstrap = true;
        } else if config.raft.join_addr.is_some() {
            // A node told to join an existing cluster must not also found one.
            if config.raft.bootstrap && origin.contains_key("raft.bootstrap") {
                return Err(ConfigError::BadValue {
                    key: "raft.bootstrap".into(),
                    source_: source_of("raft.bootstrap"),
                    problem: "cannot be true together with raft.join_addr (a node either founds a cluster or joins one)".into(),
                });
            }
            config.raft.bootstrap = false;
        } else if !origin.contains_key("raft.bootstrap") && origin.contains_key("raft.node_id") {
            // Founding is explicit: a node given a name of its own was set up as a member of
            // some cluster (perhaps already added to one, by name), and founding another in
            // its place would split its clients' writes off. Only the nameless quick-start
            // node founds without being told.
            config.raft.bootstrap = false;
        }
        config.validate().map_err(|e| match e {
            ConfigError::BadValue {
                key,
                source_: Source::Merged,
                problem,
            } => {
                let source_ = source_of(&key);
                let (key, problem) = self.as_given(key, problem);
                ConfigError::BadValue {
                    source_,
                    key,
                    problem,
                }
            }
            other => other,
        })?;
        Ok(config)
    }
}

/// Whether two values given for one setting mean the same: equal as given, or the same
/// duration written two ways (`1s` and `1000ms`, or a bare number of milliseconds).
fn same_setting(a: &Value, b: &Value) -> bool {
    let as_duration = |v: &Value| match v {
        Value::String(text) => units::parse_config_duration(text).ok(),
        Value::Number(n) => n.as_u64().map(std::time::Duration::from_millis),
        _ => None,
    };
    a == b || matches!((as_duration(a), as_duration(b)), (Some(x), Some(y)) if x == y)
}

/// A value as the operator wrote it, for an error line.
fn as_written(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn collect_leaves(value: &Value, prefix: String, out: &mut HashMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                collect_leaves(v, key, out);
            }
        }
        leaf => {
            out.insert(prefix, leaf.clone());
        }
    }
}

/// The known key nearest to `key` by edit distance, if it is close enough to be a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

/// The Levenshtein distance between `a` and `b` in characters; also used by the HTTP router
/// to suggest the parameter or header a client probably meant.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Refuses a YAML document in which a map repeats a key: read into a JSON tree, the last
/// value would silently win.
///
/// `serde_yaml_ng`'s own `Value` refuses duplicates in any YAML style, but names neither the
/// key's path nor its line; so a duplicate it finds is located by [`find_duplicate_yaml_key`],
/// a scan of block-style maps (the style of every example config). A duplicate only the
/// parser sees (in a flow map `{a: 1, a: 2}`) is reported with the parser's words.
fn refuse_duplicate_yaml_keys(text: &str) -> Result<(), String> {
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Err(e) if e.to_string().contains("duplicate entry") => {
            Err(match find_duplicate_yaml_key(text) {
                Some(d) => format!(
                    "key {} appears twice, on lines {} and {}; give each key once",
                    d.path, d.first_line, d.second_line
                ),
                None => format!("{e}; give each key once"),
            })
        }
        // Any other error is reported by the real parse, with the same wording as before.
        _ => Ok(()),
    }
}

/// A key given twice in one block-style YAML map.
#[derive(Debug, PartialEq, Eq)]
struct DuplicateYamlKey {
    /// Dotted path of the key (`raft.node_id`).
    path: String,
    /// Line (1-based) of its first occurrence.
    first_line: usize,
    /// Line of the repeat.
    second_line: usize,
}

/// Finds the first key repeated within one block-style map, by indentation: each open map is
/// the keys seen at one indentation under one parent key. Not a YAML parser: it only locates
/// a duplicate the parser has already found.
fn find_duplicate_yaml_key(text: &str) -> Option<DuplicateYamlKey> {
    struct Level {
        indent: usize,
        path: String,
        keys: HashMap<String, usize>,
    }
    let mut levels: Vec<Level> = Vec::new();
    let mut last_key_path = String::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
            continue;
        }
        let mut indent = line.len() - trimmed.len();
        let mut content = trimmed;
        if let Some(item) = content.strip_prefix("- ") {
            // A list item opens a fresh map at the item's content.
            levels.retain(|l| l.indent < indent);
            let inner = item.trim_start();
            indent += content.len() - inner.len();
            content = inner;
            levels.push(Level {
                indent,
                path: last_key_path.clone(),
                keys: HashMap::new(),
            });
        }
        let Some((key, _)) = content.split_once(':') else {
            continue;
        };
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue;
        }
        levels.retain(|l| l.indent <= indent);
        if levels.last().is_none_or(|l| l.indent < indent) {
            levels.push(Level {
                indent,
                path: last_key_path.clone(),
                keys: HashMap::new(),
            });
        }
        let level = levels
            .last_mut()
            .expect("invariant: a level was just pushed");
        let path = if level.path.is_empty() || level.indent == 0 {
            key.to_string()
        } else {
            format!("{}.{key}", level.path)
        };
        if let Some(&first_line) = level.keys.get(key) {
            return Some(DuplicateYamlKey {
                path,
                first_line,
                second_line: number,
            });
        }
        level.keys.insert(key.to_string(), number);
        last_key_path = path;
    }
    None
}

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let file_error = |problem: String| ConfigError::File {
        path: path.to_path_buf(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| file_error(e.to_string()))?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(file_error(format!(
            "{} bytes is larger than the {CONFIG_FILE_BYTES_MAX}-byte limit for a config file",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value: Value = match extension {
        "yaml" | "yml" => {
            refuse_duplicate_yaml_keys(&text).map_err(file_error)?;
            serde_yaml_ng::from_str(&text).map_err(|e| file_error(e.to_string()))?
        }
        "toml" => {
            toml::from_str(&text).map_err(|e| file_error(e.to_string().replace('\n', " ")))?
        }
        _ => {
            return Err(file_error(
                "unknown file type: name it .yaml, .yml or .toml".into(),
            ));
        }
    };
    match value {
        Value::Object(_) => Ok(value),
        // An empty YAML file is null: no settings.
        Value::Null => Ok(Value::Object(Map::new())),
        _ => Err(file_error("the top level must be a map of sections".into())),
    }
}

/// Builds the configuration from the defaults, the file named by `args.config`, the
/// environment `env` (pass `std::env::vars()`), and the flags in `args`.
pub fn load(
    args: &ConfigArgs,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let mut layers = Layers::new();

    if let Some(path) = &args.config {
        let tree = read_file(path)?;
        let source = Source::File(path.clone());
        let mut leaves = HashMap::new();
        collect_leaves(&tree, String::new(), &mut leaves);
        let mut leaves: Vec<_> = leaves.into_iter().collect();
        leaves.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, value) in leaves {
            layers.set(&key, value, source.clone())?;
        }
    }

    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let source = Source::Env(name.clone());
        let rest = &name[ENV_PREFIX.len()..];
        let key = match rest.split_once(ENV_SEPARATOR) {
            Some((section, field)) => {
                format!(
                    "{}.{}",
                    section.to_ascii_lowercase(),
                    field.to_ascii_lowercase()
                )
            }
            None => {
                // Other tools share the prefix (RAFTKV_ENDPOINTS for kvcli, RAFTKV_BIN for
                // scripts): only a name that starts like a section is a mistyped setting.
                let lower = rest.to_ascii_lowercase();
                let section = SECTIONS
                    .iter()
                    .find(|s| lower.starts_with(&format!("{s}_")));
                match section {
                    Some(section) => {
                        return Err(ConfigError::UnknownKey {
                            key: lower.clone(),
                            source_: source,
                            hint: format!(
                                " (settings are {ENV_PREFIX}<SECTION>{ENV_SEPARATOR}<KEY>: did you mean {ENV_PREFIX}{}{ENV_SEPARATOR}{}?)",
                                section.to_ascii_uppercase(),
                                &rest[section.len() + 1..]
                            ),
                        });
                    }
                    None => continue,
                }
            }
        };
        layers.set_text(&key, &value, source)?;
    }

    let flags: [(&str, &str, Option<String>); 9] = [
        ("--node-id", "raft.node_id", args.node_id.clone()),
        ("--raft-addr", "raft.raft_addr", args.raft_addr.clone()),
        ("--join-addr", "raft.join_addr", args.join_addr.clone()),
        (
            "--bootstrap",
            "raft.bootstrap",
            args.bootstrap.map(|b| b.to_string()),
        ),
        ("--http-addr", "server.http_addr", args.http_addr.clone()),
        ("--grpc-addr", "server.grpc_addr", args.grpc_addr.clone()),
        (
            "--data-dir",
            "storage.data_dir",
            args.data_dir.as_ref().map(|p| p.display().to_string()),
        ),
        (
            "--log-level",
            "observability.log_level",
            args.log_level.clone(),
        ),
        (
            "--log-format",
            "observability.log_format",
            args.log_format.clone(),
        ),
    ];
    for (flag, key, value) in flags {
        if let Some(value) = value {
            layers.set_text(key, &value, Source::Flag(flag.to_string()))?;
        }
    }
    for assignment in &args.set {
        let source = Source::Flag(format!("--set {assignment}"));
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(ConfigError::BadValue {
                key: assignment.clone(),
                source_: source,
                problem: "expected KEY=VALUE, e.g. wal.segment_size=16MiB".into(),
            });
        };
        layers.set_text(key.trim(), value, source)?;
    }

    layers.finish()
}

#[cfg(test)]
mod duplicate_key_tests {
    use super::{DuplicateYamlKey, find_duplicate_yaml_key};

    #[test]
    fn finds_the_repeat_in_its_own_map_only() {
        // The same key in two sections is no duplicate; the repeat within one is.
        let text = "raft:\n  node_id: a\nwal:\n  # node_id: commented\n  node_id: b\n  x: 1\n  node_id: c\n";
        assert_eq!(
            find_duplicate_yaml_key(text),
            Some(DuplicateYamlKey {
                path: "wal.node_id".into(),
                first_line: 5,
                second_line: 7,
            })
        );
        assert_eq!(find_duplicate_yaml_key("a:\n  b: 1\nc:\n  b: 2\n"), None);
    }

    #[test]
    fn list_items_are_maps_of_their_own() {
        let text = "peers:\n  - name: a\n    addr: x\n  - name: b\n    addr: y\n";
        assert_eq!(find_duplicate_yaml_key(text), None);
        let text = "peers:\n  - name: a\n    name: b\n";
        assert_eq!(
            find_duplicate_yaml_key(text).map(|d| (d.path, d.first_line, d.second_line)),
            Some(("peers.name".into(), 2, 3))
        );
    }
}
