//! `kvcli`: the RaftKV command-line client. All logic lives in [`cli::command`]; this file
//! only hands it the process's arguments and turns its outcome into the exit code.

fn main() -> std::process::ExitCode {
    cli::command::main()
}

/// mimalloc, as in the node (api/src/bin/raftkv.rs): `kvcli bench` shares the machine's cores
/// with the node it measures, and every microsecond it spends is one the node does not get.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
