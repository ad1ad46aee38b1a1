//! Command-line parsing (SPEC §1): `switchyard [-c PATH]`, `check`, `route`, `demo`. Hand-rolled
//! because the grammar is four commands and two flags.
use std::path::PathBuf;

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
    Help,
    Version,
}

pub const USAGE: &str = "usage:
  switchyard [-c PATH]                       run with the config file (default ./config.toml)
  switchyard check [-c PATH]                 validate the config and print a summary
  switchyard route [-c PATH] METHOD PATH [-H 'Name: value']...
                                             explain which rule and backend a request gets
  switchyard demo [--listen ADDR] [--admin ADDR]
                                             start built-in echo backends and the balancer
environment: RUST_LOG sets the log level (default info)
signals: SIGHUP reloads the config file; SIGTERM/SIGINT drain and exit 0";

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut config = PathBuf::from("config.toml");
    let mut positional = Vec::new();
    let mut headers = Vec::new();
    let mut listen = "127.0.0.1:8080".to_string();
    let mut admin = "127.0.0.1:9901".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match a.as_str() {
            "-c" | "--config" => config = PathBuf::from(value(a)?),
            "-H" | "--header" => {
                let h = value(a)?;
                let (n, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("-H {h:?}: expected 'Name: value'"))?;
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
            "--listen" => listen = value(a)?,
            "--admin" => admin = value(a)?,
            "-h" | "--help" | "help" if positional.is_empty() => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            _ => positional.push(a.clone()),
        }
    }
    let mut p = positional.into_iter();
    let cmd = match p.next().as_deref() {
        None => Command::Run { config },
        Some("check") => Command::Check { config },
        Some("demo") => Command::Demo { listen, admin },
        Some("route") => {
            let method = p.next().ok_or("route needs METHOD and PATH")?;
            let path = p.next().ok_or("route needs METHOD and PATH")?;
            Command::Route {
                config,
                method: method.to_ascii_uppercase(),
                path,
                headers,
            }
        }
        Some(other) => return Err(format!("unknown command {other:?}")),
    };
    if let Some(extra) = p.next() {
        return Err(format!("unexpected argument {extra:?}"));
    }
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(
            parse(&[]).unwrap(),
            Command::Run {
                config: "config.toml".into()
            }
        );
        assert_eq!(
            parse(&args("-c x.toml")).unwrap(),
            Command::Run {
                config: "x.toml".into()
            }
        );
        assert_eq!(
            parse(&args("check -c y")).unwrap(),
            Command::Check { config: "y".into() }
        );
        assert_eq!(
            parse(&[
                "route".into(),
                "get".into(),
                "/a".into(),
                "-H".into(),
                "X-Guild-Id: 42".into()
            ])
            .unwrap(),
            Command::Route {
                config: "config.toml".into(),
                method: "GET".into(),
                path: "/a".into(),
                headers: vec![("X-Guild-Id".into(), "42".into())]
            }
        );
        assert!(parse(&args("route GET")).is_err());
        assert!(parse(&args("frobnicate")).is_err());
        assert!(parse(&args("-x")).is_err());
    }
}
