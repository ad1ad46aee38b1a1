//! `[outlier]`, `[retry]`, holding (`hold_timeout`, `hold_max`) and the access-log keys of
//! `[server]` (SPEC §11, §12): as written, as validated, and their checks, in one place.
use super::check::Checker;
use super::model::Config;
use super::schema::RawConfig;
use super::value::{List, Secs, Val};
use crate::observe::access_log::{AccessLogConfig, Format};
pub use crate::resilience::hold::{Hold, HoldOverride};
use crate::resilience::outlier::OutlierConfig;
use crate::resilience::policy::{On, OnSet, RetryConfig};
use std::time::Duration;

/// Longest hold a config may ask for: a request held longer is a client that has given up.
const MAX_HOLD: Duration = Duration::from_secs(3600);
const MAX_HOLD_WAITERS: u32 = 100_000;
/// Bodies kept for replay are held in memory per request in flight.
const MAX_RETRY_BODY: u64 = 16 << 20;
const MAX_ATTEMPTS: u32 = 10;

fn bounded(c: &mut Checker<'_>, v: &Option<Val<u32>>, key: &str, lo: u32, hi: u32) -> Option<u32> {
    let v = v.as_ref()?;
    if !(lo..=hi).contains(&v.value) {
        c.problem(Some(&v.span), key, format!("must be between {lo} and {hi}"));
        return None;
    }
    Some(v.value)
}

/// Checks a pool's (or the server's) hold keys; `prefix` is e.g. `backends[2]`.
pub(super) fn hold(
    c: &mut Checker<'_>,
    timeout: &Option<Val<Secs>>,
    max: &Option<Val<u32>>,
    prefix: &str,
) -> HoldOverride {
    let timeout = timeout.as_ref().and_then(|v| {
        if v.value.0 > MAX_HOLD {
            c.problem(
                Some(&v.span),
                &format!("{prefix}.hold_timeout"),
                format!("at most {} seconds", MAX_HOLD.as_secs()),
            );
            None
        } else {
            Some(v.value.0)
        }
    });
    let max = bounded(c, max, &format!("{prefix}.hold_max"), 0, MAX_HOLD_WAITERS);
    HoldOverride { timeout, max }
}

/// Checks a registration's hold fields (the same bounds as the config's), for `registry`.
pub fn registration_hold(timeout: Option<f64>, max: Option<u64>) -> Result<HoldOverride, String> {
    let timeout = match timeout {
        None => None,
        Some(t) if t.is_finite() && (0.0..=MAX_HOLD.as_secs_f64()).contains(&t) => {
            Some(Duration::from_secs_f64(t))
        }
        Some(_) => {
            return Err(format!(
                "hold_timeout must be between 0 and {} seconds",
                MAX_HOLD.as_secs()
            ))
        }
    };
    let max = match max {
        None => None,
        Some(m) if m <= u64::from(MAX_HOLD_WAITERS) => Some(m as u32),
        Some(_) => return Err(format!("hold_max must be at most {MAX_HOLD_WAITERS}")),
    };
    Ok(HoldOverride { timeout, max })
}

pub(super) fn validate(c: &mut Checker<'_>, raw: &RawConfig, cfg: &mut Config) {
    if let Some(o) = &raw.outlier {
        let d = OutlierConfig::default();
        cfg.outlier = OutlierConfig {
            consecutive_failures: o
                .consecutive_failures
                .as_ref()
                .map_or(d.consecutive_failures, |v| v.value),
            consecutive_5xx: o
                .consecutive_5xx
                .as_ref()
                .map_or(d.consecutive_5xx, |v| v.value),
            base_ejection_time: c.positive(
                &o.base_ejection_time,
                "outlier.base_ejection_time",
                d.base_ejection_time,
            ),
            max_ejection_percent: bounded(
                c,
                &o.max_ejection_percent,
                "outlier.max_ejection_percent",
                0,
                100,
            )
            .unwrap_or(d.max_ejection_percent),
        };
    }
    if let Some(r) = &raw.retry {
        let d = RetryConfig::default();
        let on = match &r.on {
            None => d.on,
            Some(List(items)) => {
                let mut list = Vec::new();
                for v in items {
                    match On::parse(v.value.trim()) {
                        Some(o) => list.push(o),
                        None => c.problem(
                            Some(&v.span),
                            "retry.on",
                            format!("{:?} is not one of {}", v.value, On::NAMES),
                        ),
                    }
                }
                OnSet::of(&list)
            }
        };
        cfg.retry = RetryConfig {
            attempts: bounded(c, &r.attempts, "retry.attempts", 1, MAX_ATTEMPTS)
                .unwrap_or(d.attempts),
            on,
            budget_percent: bounded(c, &r.budget_percent, "retry.budget_percent", 0, 100)
                .unwrap_or(d.budget_percent),
            min_retries_per_second: bounded(
                c,
                &r.min_retries_per_second,
                "retry.min_retries_per_second",
                0,
                100_000,
            )
            .unwrap_or(d.min_retries_per_second),
            max_retry_body: match &r.max_retry_body {
                None => d.max_retry_body,
                Some(v) if v.value > MAX_RETRY_BODY => {
                    c.problem(
                        Some(&v.span),
                        "retry.max_retry_body",
                        format!("at most {MAX_RETRY_BODY} bytes"),
                    );
                    d.max_retry_body
                }
                Some(v) => v.value,
            },
            probe_timeout: d.probe_timeout,
        };
    }
    if let Some(s) = &raw.server {
        cfg.server.hold = hold(c, &s.hold_timeout, &s.hold_max, "server").over(Hold::default());
        let d = AccessLogConfig::default();
        let format = match &s.access_log_format {
            None => d.format,
            Some(v) => match v.value.trim() {
                "text" => Format::Text,
                "json" => Format::Json,
                other => {
                    c.problem(
                        Some(&v.span),
                        "server.access_log_format",
                        format!("{other:?} is not \"text\" or \"json\""),
                    );
                    d.format
                }
            },
        };
        let path = match &s.access_log_path {
            None => d.path,
            Some(v) if v.value.trim().is_empty() || v.value.contains('\0') => {
                c.problem(
                    Some(&v.span),
                    "server.access_log_path",
                    "must be \"-\" (stdout) or a file path".into(),
                );
                d.path
            }
            Some(v) => v.value.trim().to_string(),
        };
        cfg.server.access_log_format = format;
        cfg.server.access_log_path = path;
        cfg.server.access_log_query = s.access_log_query.as_ref().is_some_and(|v| v.value);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn load(src: &str) -> Result<crate::config::Config, String> {
        parse(src, "t.toml", Box::new(|_| None)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_those_of_the_spec() {
        let c = load("").unwrap();
        assert_eq!(c.outlier.consecutive_failures, 5);
        assert_eq!(c.outlier.consecutive_5xx, 0);
        assert_eq!(c.outlier.base_ejection_time.as_secs(), 30);
        assert_eq!(c.outlier.max_ejection_percent, 50);
        assert_eq!(c.retry, crate::resilience::policy::RetryConfig::default());
        assert_eq!(c.server.hold.timeout.as_secs(), 0);
        assert_eq!(c.server.hold.max, 100);
        assert_eq!(c.server.access_log_path, "-");
        assert!(!c.server.access_log_query);
    }

    #[test]
    fn every_key_is_read() {
        let c = load(
            "[server]\nhold_timeout = 2.5\nhold_max = 7\naccess_log_format = \"json\"\n\
             access_log_path = \"/tmp/a.log\"\naccess_log_query = true\n\
             [outlier]\nconsecutive_failures = 2\nconsecutive_5xx = 3\nbase_ejection_time = 0.5\n\
             max_ejection_percent = 100\n\
             [retry]\nattempts = 3\non = [\"timeout\", \"504\"]\nbudget_percent = 0\n\
             min_retries_per_second = 0\nmax_retry_body = 10\n\
             [[backends]]\nname = \"b\"\naddresses = [\"127.0.0.1:1\"]\nhold_timeout = 9\n\
             [[shards]]\nname = \"g\"\npath = \"/g/*\"\nkey = \"path:1\"\naddresses = [\"127.0.0.1:2\"]\nhold_max = 0\n",
        )
        .unwrap();
        assert_eq!(c.server.hold.timeout.as_millis(), 2500);
        assert_eq!(c.server.hold.max, 7);
        assert_eq!(
            c.server.access_log_format,
            crate::observe::access_log::Format::Json
        );
        assert_eq!(c.outlier.base_ejection_time.as_millis(), 500);
        assert_eq!(c.retry.attempts, 3);
        use crate::resilience::policy::On;
        assert!(c.retry.on.contains(On::Timeout) && !c.retry.on.contains(On::Reset));
        assert_eq!(c.retry.max_retry_body, 10);
        let h = c.backends[0].hold.over(c.server.hold);
        assert_eq!((h.timeout.as_secs(), h.max), (9, 7));
        let h = c.shards[0].hold.over(c.server.hold);
        assert_eq!((h.timeout.as_millis(), h.max), (2500, 0));
    }

    #[test]
    fn bad_values_name_key_and_line() {
        let e = load(
            "[retry]\nattempts = 0\non = [\"5xx\"]\nbudget_percent = 101\nmax_retry_body = 999999999\n\
             [outlier]\nmax_ejection_percent = 150\nbase_ejection_time = 0\n\
             [server]\nhold_timeout = 99999\nhold_max = 1000000\naccess_log_format = \"xml\"\n\
             access_log_path = \"\"\n",
        )
        .unwrap_err();
        for needle in [
            "t.toml:2: retry.attempts",
            "t.toml:3: retry.on: \"5xx\" is not one of",
            "t.toml:4: retry.budget_percent",
            "t.toml:5: retry.max_retry_body",
            "t.toml:7: outlier.max_ejection_percent",
            "t.toml:8: outlier.base_ejection_time",
            "t.toml:10: server.hold_timeout",
            "t.toml:11: server.hold_max",
            "t.toml:12: server.access_log_format",
            "t.toml:13: server.access_log_path",
        ] {
            assert!(e.contains(needle), "{needle} missing in\n{e}");
        }
        let e = load("[outlier]\nconsecutive_fialures = 1\n").unwrap_err();
        assert!(e.contains("outlier.consecutive_fialures"), "{e}");
    }

    #[test]
    fn registration_hold_bounds() {
        use super::registration_hold;
        assert!(registration_hold(Some(1.5), Some(3)).is_ok());
        assert!(registration_hold(Some(-1.0), None).is_err());
        assert!(registration_hold(Some(f64::NAN), None).is_err());
        assert!(registration_hold(Some(1e9), None).is_err());
        assert!(registration_hold(None, Some(1 << 40)).is_err());
    }
}
