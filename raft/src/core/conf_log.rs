//! The configurations implied by the log. A configuration entry takes effect as soon as it is
//! in a node's log, committed or not (dissertation §4.1), so when a follower's uncommitted
//! suffix is overwritten, the configurations it carried must be undone. This module keeps the
//! history that makes that possible: the snapshot's configuration as the base, then one item
//! per configuration entry still in the log.
//!
//! Invariants (checked by [`ConfigLog::check_invariants`]):
//! - the history is never empty (the base is always there);
//! - indexes are strictly increasing;
//! - every configuration in it satisfies the membership invariants.

use super::confchange;
use super::invariant::InvariantError;
use super::membership::{ConfChange, Configuration};
use super::types::LogIndex;

/// The base configuration plus one configuration per configuration entry in the log.
#[derive(Clone, Debug)]
pub struct ConfigLog {
    /// `(index of the entry or snapshot that produced it, configuration)`, oldest first.
    history: Vec<(LogIndex, Configuration)>,
}

impl ConfigLog {
    /// A history whose base is the snapshot's configuration at `index`.
    pub fn new(index: LogIndex, base: Configuration) -> ConfigLog {
        ConfigLog {
            history: vec![(index, base)],
        }
    }

    /// The configuration in force: the latest one in the log.
    pub fn current(&self) -> &Configuration {
        &self
            .history
            .last()
            .expect("invariant: the config history is never empty")
            .1
    }

    /// The index of the entry (or snapshot) that produced the configuration in force.
    pub fn current_index(&self) -> LogIndex {
        self.history
            .last()
            .expect("invariant: the config history is never empty")
            .0
    }

    /// The configuration in force right after the entry at `index`, if the history still
    /// reaches back that far (it starts at the latest snapshot the node restored or started
    /// from).
    pub fn at(&self, index: LogIndex) -> Option<&Configuration> {
        self.history
            .iter()
            .rev()
            .find(|(at, _)| *at <= index)
            .map(|(_, config)| config)
    }

    /// Whether `pred` holds for the configuration in force at `index` or for any later one.
    pub fn any_since(&self, index: LogIndex, pred: impl Fn(&Configuration) -> bool) -> bool {
        let from = self
            .history
            .iter()
            .rposition(|(at, _)| *at <= index)
            .unwrap_or(0);
        self.history[from..].iter().any(|(_, config)| pred(config))
    }

    /// A configuration entry at `index` landed in the log: applies it. Invalid changes are
    /// skipped; every node skips them alike because they all hold the same prefix. Returns
    /// whether the configuration changed.
    pub fn append(&mut self, index: LogIndex, change: &ConfChange) -> bool {
        assert!(
            index > self.current_index(),
            "configuration entries arrive in log order"
        );
        match confchange::apply(self.current(), change) {
            Ok(next) => {
                self.history.push((index, next));
                true
            }
            Err(_) => false,
        }
    }

    /// The log was truncated from `index` on: configurations produced there are undone.
    /// Returns whether the configuration changed.
    pub fn truncate_from(&mut self, index: LogIndex) -> bool {
        let before = self.history.len();
        while self.history.len() > 1 && self.current_index() >= index {
            self.history.pop();
        }
        self.history.len() != before
    }

    /// The log was replaced by a snapshot carrying `configuration` at `index`.
    pub fn reset(&mut self, index: LogIndex, configuration: Configuration) {
        self.history = vec![(index, configuration)];
    }

    /// Checks the invariants listed in the module documentation.
    pub fn check_invariants(&self) -> Result<(), InvariantError> {
        if self.history.is_empty() {
            return Err(InvariantError::EmptyConfigurationHistory);
        }
        for pair in self.history.windows(2) {
            if pair[1].0 <= pair[0].0 {
                return Err(InvariantError::ConfigurationsOutOfOrder {
                    earlier: pair[0].0,
                    later: pair[1].0,
                });
            }
        }
        for (index, config) in self.history.iter() {
            config
                .check_invariants()
                .map_err(|broken| InvariantError::Configuration {
                    index: *index,
                    broken: Box::new(broken),
                })?;
        }
        Ok(())
    }
}
