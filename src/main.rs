//! The switchyard binary: parses the command line, sets up logging and the runtime, and hands
//! over to the library. No logic lives here.
use std::process::ExitCode;
use switchyard::cli::{self, Command};
use switchyard::{config, routing};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match cli::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("switchyard {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                println!("{}: ok\n{}", config.display(), cfg.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                eprintln!("{} problem(s) found", e.problems.len());
                ExitCode::FAILURE
            }
        },
        Command::Route {
            config,
            method,
            path,
            headers,
        } => match config::load(&config) {
            Ok(cfg) => {
                let set = switchyard::upstream::set::UpstreamSet::default();
                let table = routing::build::build(&cfg, &[], &set);
                print!(
                    "{}",
                    routing::explain::explain(&table, &method, &path, &headers)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let workers = cfg.server.workers;
            serve(workers, switchyard::server::run(cfg, Some(config)))
        }
        Command::Demo { listen, admin } => {
            serve(
                0,
                async move { switchyard::demo::run(&listen, &admin).await },
            )
        }
    }
}

fn serve(workers: usize, fut: impl std::future::Future<Output = std::io::Result<()>>) -> ExitCode {
    // One worker is one event loop on this thread, as HAProxy's `nbthread 1` or one nginx
    // worker: the multi-threaded scheduler would add a second thread, cross-thread wakeups and
    // atomics on every task switch for nothing.
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    b.enable_all();
    if workers > 1 {
        b.worker_threads(workers);
    }
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
