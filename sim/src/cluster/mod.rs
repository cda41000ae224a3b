//! Deterministic simulation of RaftKV clusters: the real node (driver, log store over the
//! WAL, peer transport, the server's key-value state machine) on turmoil's simulated network
//! and clock, each WAL on a crashable simulated disk, all randomness from one seed.
//!
//! One module per job: [`net`] puts the transport on turmoil's TCP; [`disk`] is a node's
//! storage that outlives crashes; [`host`] starts a node as turmoil host software;
//! [`workload`] is the clients that record a history; [`faults`] is the fault schedule as
//! data; [`control`] carries out membership changes and transfers; [`monitor`] checks Raft's
//! safety properties while the run goes; [`run`] puts a run together and checks its end;
//! [`scenarios`] names the runs the tests and the runner use.

pub mod control;
pub mod disk;
pub mod faults;
pub mod host;
pub mod monitor;
pub mod net;
pub mod run;
pub mod scenarios;
pub mod workload;

pub use faults::{Fault, Schedule, Timed};
pub use run::{RunReport, Scenario, SnapshotCounts, run, run_seed};
