//! The config file: loading (with `${VAR}` expansion), the validated model the rest of
//! switchyard uses, and error reports that name the key and the line of every problem.
pub mod address;
pub(crate) mod check;
pub(crate) mod expand;
pub(crate) mod hosts;
pub(crate) mod keys;
pub(crate) mod listeners;
pub mod model;
pub mod resilience;
pub(crate) mod schema;
pub mod tcp;
pub mod tls;
pub(crate) mod validate;
pub(crate) mod value;

use check::line_of;
pub use check::Problem;
pub use model::*;
use std::fmt;
use std::path::Path;

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(l) => write!(f, "{}:{}: {}: {}", self.file, l, p.key, p.message)?,
                None => write!(f, "{}: {}: {}", self.file, p.key, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        problems: vec![Problem {
            line: None,
            key: "file".into(),
            message: format!("cannot read: {e}"),
        }],
    })?;
    parse(&src, &name, Box::new(|k| std::env::var(k).ok()))
}

/// Parses and validates config text; `env` supplies `${VAR}` values.
pub fn parse(src: &str, file: &str, env: value::EnvLookup) -> Result<Config, ConfigError> {
    let error = |problems| ConfigError {
        file: file.to_string(),
        problems,
    };
    let toml_problem = |text: &str, e: &toml::de::Error| Problem {
        line: e.span().map(|s| line_of(text, s.start)),
        key: key_from_toml_error(text, e),
        message: e.message().trim().to_string(),
    };
    // Unknown keys first, all of them; then, with them blanked out, the rest of the file is
    // still checked so that one run of `check` lists every problem.
    let unknown = keys::unknown_keys(src).map_err(|e| error(vec![toml_problem(src, &e)]))?;
    let mut problems: Vec<Problem> = unknown.iter().map(|u| u.problem.clone()).collect();
    let Some(cleaned) = keys::without(src, &unknown) else {
        return Err(error(problems));
    };
    let raw: Result<schema::RawConfig, toml::de::Error> =
        value::with_env(env, || toml::from_str(&cleaned));
    match raw {
        Err(e) => {
            problems.push(toml_problem(&cleaned, &e));
            problems.sort_by_key(|p| p.line);
            Err(error(problems))
        }
        Ok(raw) => match validate::validate(raw, &cleaned) {
            Ok(cfg) if problems.is_empty() => Ok(cfg),
            Ok(_) => Err(error(problems)),
            Err(more) => {
                problems.extend(more);
                problems.sort_by_key(|p| p.line);
                Err(error(problems))
            }
        },
    }
}

/// The key a toml error is about: the `key =` at the start of the error's line, if any.
fn key_from_toml_error(src: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "file".into();
    };
    if let Some(path) = keys::path_at(src, span.start) {
        return path;
    }
    let start = src[..span.start.min(src.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = src[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) if !k.trim().is_empty() => k.trim().to_string(),
        _ => line.trim().to_string(),
    }
}
