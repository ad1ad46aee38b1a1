//! `[[tcp]]`: L4 listeners as written and as validated. Kept apart from `validate` so that the
//! L4 keys, their defaults and their checks live in one place; it needs only the shared
//! checker and value types, not the rest of the config.
use super::address::Address;
use super::check::Checker;
use super::value::{List, Secs, Val};
use serde::Deserialize;
use std::collections::HashSet;
use std::time::Duration;

/// Idle time after which an L4 connection is closed when `idle_timeout` is not given. Longer
/// than `[server] idle_timeout`: L4 clients (databases, brokers) keep quiet pooled connections
/// open for long stretches, as HAProxy's usual `timeout tunnel 1h` allows.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub listen: Val<String>,
    pub targets: List,
    pub balance: Option<Val<String>>,
    pub health_check: Option<Val<String>>,
    pub idle_timeout: Option<Val<Secs>>,
    pub send_proxy: Option<Val<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    /// A stable hash of the client IP picks the first target.
    SourceHash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::SourceHash => "source_hash",
        }
    }
}

/// The PROXY protocol version sent to targets before the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// One validated `[[tcp]]` listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Tcp {
    pub listen: Address,
    pub targets: Vec<Address>,
    pub balance: Balance,
    /// `health_check = "tcp"`: targets are probed with a TCP connect.
    pub health_check: bool,
    pub idle_timeout: Duration,
    pub send_proxy: Option<ProxyVersion>,
}

/// Checks every `[[tcp]]` table; `others` are the HTTP and admin listen addresses, which a
/// `[[tcp]]` listener may not take.
pub(super) fn validate(c: &mut Checker<'_>, raw: &[RawTcp], others: [&Address; 2]) -> Vec<Tcp> {
    let mut out = Vec::new();
    let mut listens: HashSet<Address> = HashSet::new();
    for (i, t) in raw.iter().enumerate() {
        let key = format!("tcp[{i}]");
        let listen = c.address(&t.listen, &format!("{key}.listen"), true);
        if let Some(l) = &listen {
            let taken = others.contains(&l) || !listens.insert(l.clone());
            if taken && l.port != 0 {
                c.problem(
                    Some(&t.listen.span),
                    &format!("{key}.listen"),
                    format!("{l} is already used by another listener"),
                );
            }
        }
        let mut targets: Vec<Address> = Vec::new();
        for (j, v) in t.targets.0.iter().enumerate() {
            let k = format!("{key}.targets[{j}]");
            if let Some(a) = c.address(v, &k, false) {
                if targets.contains(&a) {
                    c.problem(Some(&v.span), &k, format!("duplicate target {a}"));
                } else {
                    targets.push(a);
                }
            }
        }
        if t.targets.0.is_empty() {
            c.problem(
                Some(&t.listen.span),
                &format!("{key}.targets"),
                "needs at least one host:port".into(),
            );
        }
        let balance = match &t.balance {
            None => Balance::RoundRobin,
            Some(v) => match v.value.trim() {
                "round_robin" => Balance::RoundRobin,
                "source_hash" => Balance::SourceHash,
                other => {
                    c.problem(
                        Some(&v.span),
                        &format!("{key}.balance"),
                        format!("{other:?}: expected round_robin or source_hash"),
                    );
                    Balance::RoundRobin
                }
            },
        };
        let health_check = match &t.health_check {
            None => false,
            Some(v) => match v.value.trim() {
                "tcp" => true,
                "none" => false,
                other => {
                    c.problem(
                        Some(&v.span),
                        &format!("{key}.health_check"),
                        format!("{other:?}: expected tcp or none"),
                    );
                    false
                }
            },
        };
        let send_proxy = match &t.send_proxy {
            None => None,
            Some(v) => match v.value.trim() {
                "v1" => Some(ProxyVersion::V1),
                "v2" => Some(ProxyVersion::V2),
                other => {
                    c.problem(
                        Some(&v.span),
                        &format!("{key}.send_proxy"),
                        format!("{other:?}: expected v1 or v2"),
                    );
                    None
                }
            },
        };
        let idle_timeout = c.positive(
            &t.idle_timeout,
            &format!("{key}.idle_timeout"),
            DEFAULT_IDLE,
        );
        if let Some(listen) = listen {
            out.push(Tcp {
                listen,
                targets,
                balance,
                health_check,
                idle_timeout,
                send_proxy,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Config};

    fn parse_ok(src: &str) -> Config {
        match parse(src, "t.toml", Box::new(|_| None)) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_keys() {
        let c = parse_ok("[[tcp]]\nlisten = \"0.0.0.0:5433\"\ntargets = [\"127.0.0.1:5432\"]\n\n[[tcp]]\nlisten = \"0.0.0.0:6380\"\ntargets = \"redis-1:6379, redis-2:6379\"\nbalance = \"source_hash\"\nhealth_check = \"tcp\"\nidle_timeout = 0.5\nsend_proxy = \"v2\"\n");
        assert_eq!(c.tcp.len(), 2);
        assert_eq!(c.tcp[0].balance, Balance::RoundRobin);
        assert!(!c.tcp[0].health_check);
        assert_eq!(c.tcp[0].idle_timeout, DEFAULT_IDLE);
        assert_eq!(c.tcp[0].send_proxy, None);
        assert_eq!(c.tcp[1].targets.len(), 2);
        assert_eq!(c.tcp[1].balance, Balance::SourceHash);
        assert!(c.tcp[1].health_check);
        assert_eq!(c.tcp[1].idle_timeout, Duration::from_millis(500));
        assert_eq!(c.tcp[1].send_proxy, Some(ProxyVersion::V2));
    }

    #[test]
    fn every_problem_is_reported() {
        let e = parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[tcp]]\nlisten = \"127.0.0.1:8080\"\ntargets = [\"a:1\", \"a:1\", \"nope\"]\nbalance = \"random\"\nhealth_check = \"http\"\nidle_timeout = 0\nsend_proxy = \"v3\"\ncolour = 1\n", "t.toml", Box::new(|_| None)).unwrap_err();
        // An unknown key stops at the parse stage; the rest is checked without it.
        assert!(e.to_string().contains("colour"), "{e}");
        let e = parse("[server]\nlisten = \"127.0.0.1:8080\"\n[[tcp]]\nlisten = \"127.0.0.1:8080\"\ntargets = [\"a:1\", \"a:1\", \"nope\"]\nbalance = \"random\"\nhealth_check = \"http\"\nidle_timeout = 0\nsend_proxy = \"v3\"\n[[tcp]]\nlisten = \"127.0.0.1:9\"\ntargets = []\n", "t.toml", Box::new(|_| None)).unwrap_err().to_string();
        for want in [
            "t.toml:4: tcp[0].listen",
            "t.toml:5: tcp[0].targets[1]: duplicate",
            "tcp[0].targets[2]",
            "t.toml:6: tcp[0].balance",
            "t.toml:7: tcp[0].health_check",
            "t.toml:8: tcp[0].idle_timeout",
            "t.toml:9: tcp[0].send_proxy",
            "tcp[1].targets: needs at least one",
        ] {
            assert!(e.contains(want), "{want} missing in\n{e}");
        }
    }

    #[test]
    fn ephemeral_ports_may_repeat() {
        let c = parse_ok("[[tcp]]\nlisten = \"127.0.0.1:0\"\ntargets = [\"127.0.0.1:1\"]\n[[tcp]]\nlisten = \"127.0.0.1:0\"\ntargets = [\"127.0.0.1:2\"]\n");
        assert_eq!(c.tcp.len(), 2);
    }
}
