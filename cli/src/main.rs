//! `kvcli`: the RaftKV command-line client. All logic lives in [`cli::command`]; this file
//! only hands it the process's arguments and turns its outcome into the exit code.

fn main() -> std::process::ExitCode {
    cli::command::main()
}
