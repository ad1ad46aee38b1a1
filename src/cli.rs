//! The command line (SPEC §1) through clap's derive: `switchyard [-c PATH]`, `check`, `route`,
//! `demo`; and the dispatch from a parsed command to the library (config check, route
//! explanation, the server, the demo) with its exit code. `main.rs` only sets up logging.
use crate::{config, routing};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

/// The config file when no `-c` is given.
pub const DEFAULT_CONFIG: &str = "config.toml";

/// The usage lines, the same as the README's command table. clap would derive
/// `switchyard [OPTIONS] [COMMAND]`; the explicit form says which flag goes with which command.
const USAGE: &str = "switchyard [-c PATH]
       switchyard check [-c PATH]
       switchyard route [-c PATH] METHOD PATH [-H 'Name: value']...
       switchyard demo [--listen ADDR] [--admin ADDR]
       switchyard --help | --version";

const AFTER_HELP: &str =
    "Environment: RUST_LOG sets the log level (default info; the HTTP access log goes to access_log_path).
Signals: SIGHUP reloads the config file; SIGTERM/SIGINT drain and exit 0.
Exit codes: 0 ok, 1 a bad config or a failure at run time, 2 a usage error.";

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "A load balancer and API gateway: path routes, sharding by key, round robin over healthy targets",
    override_usage = USAGE,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The config file [default: ./config.toml]
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Validate the config; print a summary, or exit 1 listing every problem as file:line: key: message
    #[command(override_usage = "switchyard check [-c PATH]")]
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Explain the rule, why (host group, rewrites), the shard key/hash/ordinal and the candidate order, without sending anything
    #[command(override_usage = "switchyard route [-c PATH] METHOD PATH [-H 'Name: value']...")]
    Route {
        #[command(flatten)]
        config: ConfigArg,
        /// The request method (any case)
        #[arg(value_name = "METHOD")]
        method: String,
        /// The request target: a path, with an optional query string
        #[arg(value_name = "PATH")]
        path: String,
        /// A request header, e.g. -H 'Host: api.example.com' or -H 'X-Guild-Id: 42' (repeatable)
        #[arg(short = 'H', long = "header", value_name = "'Name: value'", value_parser = header)]
        headers: Vec<(String, String)>,
    },
    /// Start built-in echo backends and the balancer on loopback; print curl commands to try
    #[command(override_usage = "switchyard demo [--listen ADDR] [--admin ADDR]")]
    Demo {
        /// The data (HTTP) listener
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: String,
        /// The admin listener (health, metrics, status page, registration)
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9901")]
        admin: String,
    },
}

/// What the command line asks for, after defaults are applied.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
    },
    Check {
        config: PathBuf,
    },
    Route {
        config: PathBuf,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
    },
    Demo {
        listen: String,
        admin: String,
    },
}

fn header(s: &str) -> Result<(String, String), String> {
    let (n, v) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected 'Name: value'"))?;
    let n = n.trim();
    if n.is_empty() {
        return Err(format!("{s:?}: the header name is empty"));
    }
    Ok((n.to_string(), v.trim().to_string()))
}

/// Parses a full argument list (program name first). Err carries clap's message: a usage
/// error, or the text of `--help` / `--version` (see `clap::Error::use_stderr`).
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    let top = cli.config.config;
    // `switchyard -c x check` and `switchyard check -c x` mean the same; the flag after the
    // command wins when both are given.
    let pick = |c: ConfigArg| {
        c.config
            .or_else(|| top.clone())
            .unwrap_or_else(|| DEFAULT_CONFIG.into())
    };
    Ok(match cli.command {
        None => Command::Run {
            config: pick(ConfigArg { config: None }),
        },
        Some(Sub::Check { config }) => Command::Check {
            config: pick(config),
        },
        Some(Sub::Route {
            config,
            method,
            path,
            headers,
        }) => Command::Route {
            config: pick(config),
            method: method.to_ascii_uppercase(),
            path,
            headers,
        },
        Some(Sub::Demo { listen, admin }) => {
            if top.is_some() {
                return Err(usage_error(
                    "-c does not apply to demo: the demo builds its own config",
                ));
            }
            Command::Demo { listen, admin }
        }
    })
}

fn usage_error(msg: &str) -> clap::Error {
    use clap::CommandFactory;
    Cli::command().error(clap::error::ErrorKind::ArgumentConflict, msg)
}

/// The help text of the top level (`None`) or of one subcommand, as `--help` prints it.
pub fn help(sub: Option<&str>) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match sub {
        None => cmd.render_help().to_string(),
        Some(name) => match cmd.find_subcommand_mut(name) {
            Some(c) => c.render_help().to_string(),
            None => String::new(),
        },
    }
}

/// The names of the subcommands, in the order `--help` lists them.
pub fn subcommands() -> Vec<String> {
    use clap::CommandFactory;
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect()
}

/// The binary's whole life: parse, run, exit code (0 ok, 1 failure, 2 usage error).
pub fn main() -> ExitCode {
    match parse(std::env::args_os()) {
        Ok(cmd) => run(cmd),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// Runs one parsed command.
pub fn run(cmd: Command) -> ExitCode {
    match cmd {
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
                let set = crate::upstream::set::UpstreamSet::default();
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
            serve(workers, |extra| async move {
                crate::server::run(cfg, Some(config), &extra).await
            })
        }
        Command::Demo { listen, admin } => {
            // Checked before the runtime starts, so a busy port is one clear line naming the
            // flag that moves it, not a log record from deep inside the server.
            if let Err(e) = crate::demo::check_ports(&listen, &admin) {
                eprintln!("switchyard demo: {e}");
                return ExitCode::FAILURE;
            }
            // One event loop: the demo's echo backends and the balancer share it.
            serve(
                1,
                |_| async move { crate::demo::run(&listen, &admin).await },
            )
        }
    }
}

fn serve<F, Fut>(workers: usize, fut: F) -> ExitCode
where
    F: FnOnce(Vec<tokio::runtime::Handle>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    // One event loop per worker, as HAProxy's `nbthread` or nginx's worker processes: this
    // thread's current-thread runtime is worker 0 (and the control plane); each further
    // worker is a thread with a runtime and listening sockets of its own (`workers.rs`). The
    // multi-threaded scheduler would add work stealing, cross-thread wakeups and atomics on
    // every task switch.
    let n = crate::workers::resolve(workers);
    let extra = match crate::workers::Workers::start(n) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("switchyard: cannot start the worker threads: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::workers::publish(extra.handles());
    let r = rt.block_on(fut(extra.handles().to_vec()));
    // The drain is over: the workers' remaining tasks (none but their stopped accept loops)
    // go with their runtimes.
    drop(extra);
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, clap::Error> {
        parse(std::iter::once("switchyard").chain(s.split_whitespace()))
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            p("").unwrap(),
            Command::Run {
                config: "config.toml".into()
            }
        );
        assert_eq!(
            p("-c x.toml").unwrap(),
            Command::Run {
                config: "x.toml".into()
            }
        );
        assert_eq!(
            p("--config x.toml").unwrap(),
            Command::Run {
                config: "x.toml".into()
            }
        );
        assert_eq!(
            p("check -c y").unwrap(),
            Command::Check { config: "y".into() }
        );
        assert_eq!(
            p("-c y check").unwrap(),
            Command::Check { config: "y".into() }
        );
        assert_eq!(
            p("-c y check -c z").unwrap(),
            Command::Check { config: "z".into() }
        );
        assert_eq!(
            parse([
                "switchyard",
                "route",
                "get",
                "/a",
                "-H",
                "X-Guild-Id: 42",
                "--header",
                "Host:a.example"
            ])
            .unwrap(),
            Command::Route {
                config: "config.toml".into(),
                method: "GET".into(),
                path: "/a".into(),
                headers: vec![
                    ("X-Guild-Id".into(), "42".into()),
                    ("Host".into(), "a.example".into())
                ]
            }
        );
        assert_eq!(
            p("demo").unwrap(),
            Command::Demo {
                listen: "127.0.0.1:8080".into(),
                admin: "127.0.0.1:9901".into()
            }
        );
        assert_eq!(
            p("demo --listen 127.0.0.1:1 --admin 127.0.0.1:2").unwrap(),
            Command::Demo {
                listen: "127.0.0.1:1".into(),
                admin: "127.0.0.1:2".into()
            }
        );
    }

    #[test]
    fn usage_errors_are_errors_and_help_is_not() {
        for bad in [
            "route GET",
            "frobnicate",
            "-x",
            "route GET /a -H nocolon",
            "route GET /a -H :empty",
            "check extra",
            "demo -c x",
            "-c x demo",
            "-c",
        ] {
            let e = p(bad).expect_err(bad);
            assert!(e.use_stderr(), "{bad}: {e}");
        }
        for ok in [
            "--help",
            "-h",
            "help",
            "check --help",
            "help route",
            "--version",
            "-V",
        ] {
            let e = p(ok).expect_err(ok);
            assert!(!e.use_stderr(), "{ok}: {e}");
        }
    }

    #[test]
    fn every_subcommand_has_help_with_its_usage_line() {
        let top = help(None);
        for sub in subcommands() {
            let h = help(Some(&sub));
            let usage = h
                .lines()
                .find_map(|l| l.strip_prefix("Usage: "))
                .unwrap_or_else(|| panic!("{sub}: no usage line in\n{h}"));
            assert!(usage.starts_with(&format!("switchyard {sub}")), "{usage}");
            assert!(
                top.contains(usage),
                "{usage} missing from the top-level usage"
            );
        }
        assert!(top.contains("--version"), "{top}");
    }
}
