//! The switchyard binary: sets up logging and hands the command line to `cli::main`, which
//! parses it and runs the library. No logic lives here.
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    switchyard::cli::main()
}
