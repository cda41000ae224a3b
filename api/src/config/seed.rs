//! The seed's settings that have no key of their own here: each is either accepted and
//! ignored, because its meaning already holds (the seed's read cache: every key is in memory),
//! or accepted only at the value that is always true here and refused otherwise, because
//! honouring the other value would break a promise (turning fsync off would lose
//! acknowledged writes).
//!
//! Invariant: a seed key never changes what the node does; a value the node cannot keep is
//! refused at start with one line that says why, never silently dropped.

use serde_json::Value;

/// What a seed key's value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Any value is accepted; the node does as it always does, and says so once at start.
    Ignored,
    /// Only `true` is accepted (it is always so here); `false` is refused.
    OnlyTrue,
}

/// A setting of the seed that is not a key of this configuration.
#[derive(Debug)]
pub struct SeedKey {
    /// The dotted name, as the seed's files and variables write it.
    pub name: &'static str,
    /// Which values are accepted.
    pub rule: Rule,
    /// Why: what the node does instead, for the start-up note or the refusal.
    pub why: &'static str,
}

/// Every seed key.
pub const SEED_KEYS: [SeedKey; 6] = [
    SeedKey {
        name: "storage.sync_on_write",
        rule: Rule::OnlyTrue,
        why: "a write is acknowledged only once its log entry is fsynced on a quorum, and there is no mode that acknowledges unsynced writes (a crash would lose them); many writes already share one fsync (raft.batch_size, raft.batch_wait)",
    },
    SeedKey {
        name: "wal.batch_enabled",
        rule: Rule::OnlyTrue,
        why: "the Raft driver always batches what arrives while an fsync runs, so the seed's switch has no off position; raft.batch_size caps a batch (1 writes each entry on its own)",
    },
    SeedKey {
        name: "wal.compaction_enabled",
        rule: Rule::OnlyTrue,
        why: "the log is always compacted behind snapshots (storage.snapshot_every); without that, the disk would fill",
    },
    SeedKey {
        name: "cache.enabled",
        rule: Rule::Ignored,
        why: "every key is held in memory, so every read is what the seed's cache hit was",
    },
    SeedKey {
        name: "cache.max_size",
        rule: Rule::Ignored,
        why: "there is no separate read cache to size: every key is held in memory (storage.quota_bytes bounds the data)",
    },
    SeedKey {
        name: "cache.ttl",
        rule: Rule::Ignored,
        why: "there is no separate read cache whose entries could expire: every key is held in memory, and reads come from the applied state itself",
    },
];

/// The seed key named `name`, if it is one.
pub fn seed_key(name: &str) -> Option<&'static SeedKey> {
    SEED_KEYS.iter().find(|k| k.name == name)
}

/// Whether `value` (from a file) is accepted for `key`.
pub fn accepts(key: &SeedKey, value: &Value) -> bool {
    match key.rule {
        Rule::Ignored => true,
        Rule::OnlyTrue => match value {
            Value::Bool(b) => *b,
            Value::String(text) => accepts_text(key, text),
            _ => false,
        },
    }
}

/// Whether `text` (from a variable or a flag) is accepted for `key`.
pub fn accepts_text(key: &SeedKey, text: &str) -> bool {
    match key.rule {
        Rule::Ignored => true,
        Rule::OnlyTrue => matches!(
            text.trim().to_ascii_lowercase().as_str(),
            "true" | "1" | "yes" | "on"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_off_is_refused_and_on_is_accepted_in_any_spelling() {
        let key = seed_key("storage.sync_on_write").expect("a seed key");
        assert!(accepts(key, &Value::Bool(true)));
        assert!(accepts_text(key, "TRUE"));
        assert!(accepts_text(key, "1"));
        assert!(!accepts(key, &Value::Bool(false)));
        assert!(!accepts_text(key, "false"));
        assert!(!accepts_text(key, "maybe"));
        assert!(!accepts(key, &Value::from(0)));
    }

    #[test]
    fn cache_settings_are_accepted_whatever_their_value() {
        let key = seed_key("cache.max_size").expect("a seed key");
        assert!(accepts(key, &Value::from(100_000)));
        assert!(accepts_text(key, "10"));
        assert!(seed_key("cache.size").is_none());
    }
}
