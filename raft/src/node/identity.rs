//! Cluster identity: the id a cluster gets when it is founded (as etcd's cluster ID), kept
//! durably by every member, carried in every peer handshake, join and snapshot, so that a node
//! of one cluster can never be captured by another or take a snapshot of another's state.
//!
//! Invariant: a cluster id is never zero (zero would be indistinguishable from "none").

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of one cluster, made at founding and never changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClusterId(pub u64);

impl ClusterId {
    /// A fresh, random, nonzero id, for a node that founds a cluster. Seeded from the OS
    /// (through the standard library's randomly keyed hasher), the time and the process id,
    /// so two clusters founded on one machine in the same instant still differ.
    pub fn random() -> ClusterId {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(now);
        hasher.write_u32(std::process::id());
        ClusterId(hasher.finish().max(1))
    }

    /// A cluster id derived from `seed` (simulations, tests): the same seed, the same id.
    pub fn from_seed(seed: u64) -> ClusterId {
        ClusterId(util::SplitMix64::new(seed).next_u64().max(1))
    }
}

impl fmt::Display for ClusterId {
    /// Sixteen lowercase hex digits, as logs, the API and the CLI show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a text is not a cluster id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a cluster id (1 to 16 hex digits, not all zero)")]
pub struct ClusterIdParseError(pub String);

impl FromStr for ClusterId {
    type Err = ClusterIdParseError;

    fn from_str(text: &str) -> Result<ClusterId, ClusterIdParseError> {
        let bad = || ClusterIdParseError(text.chars().take(40).collect());
        if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        match u64::from_str_radix(text, 16) {
            Ok(0) | Err(_) => Err(bad()),
            Ok(id) => Ok(ClusterId(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_prints_as_hex_and_parses_back() {
        let id = ClusterId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<ClusterId>(), Ok(id));
        for bad in ["", "0", "xyz", "00000000000000000", "+1"] {
            assert!(bad.parse::<ClusterId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn random_ids_are_nonzero_and_differ_and_seeded_ids_repeat() {
        let a = ClusterId::random();
        let b = ClusterId::random();
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
        assert_eq!(ClusterId::from_seed(7), ClusterId::from_seed(7));
        assert_ne!(ClusterId::from_seed(7), ClusterId::from_seed(8));
        // Simulations name their clusters by seed: the id of a seed never changes.
        assert_eq!(ClusterId::from_seed(0), ClusterId(0xe220_a839_7b1d_cdaf));
    }
}
