//! `kvcli`: the RaftKV command-line client. All logic lives in [`cli::command`]; this file
//! only hands it the process's arguments and turns its outcome into the exit code.

/// The allocator: mimalloc rather than glibc's, for the load generator's sake (measured
/// A/B beside a node, 64 clients putting over gRPC: 12 µs of client CPU per put against
/// 13-15; see the node's binary for the whole figure).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::command::main()
}
