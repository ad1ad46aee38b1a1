//! The switchyard binary: sets up logging and hands the command line to `cli::main`, which
//! parses it and runs the library. No logic lives here.
use std::process::ExitCode;

// mimalloc: the allocations HTTP/2 streams cannot avoid cost a third of glibc's (Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    switchyard::cli::main()
}
