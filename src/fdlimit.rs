//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard limit at start (many
//! systems still hand out 1024 or 256), and EMFILE/ENFILE recognised as what they are — this
//! process or host running out of descriptors, never a sign that a backend is down. Such
//! errors are counted here, process-wide, for `/metrics`.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Descriptors per proxied connection: the client's and the backend's.
const PER_CONNECTION: u64 = 2;
/// Listeners, the admin API's connections, health checks, the store, logging.
const MARGIN: u64 = 512;

/// What to do about the descriptor limit.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set (None: leave it).
    pub raise_to: Option<u64>,
    /// The limit in force afterwards, and a warning when it is too low for `max_connections`.
    pub effective: u64,
    pub warning: Option<String>,
}

/// Pure: the soft limit goes up to the hard one; a warning when the result cannot hold
/// `max_connections` proxied connections.
pub fn plan(soft: u64, hard: u64, max_connections: usize) -> Plan {
    let raise_to = (hard > soft).then_some(hard);
    let effective = hard.max(soft);
    let needed = (max_connections as u64)
        .saturating_mul(PER_CONNECTION)
        .saturating_add(MARGIN);
    let warning = (effective < needed).then(|| {
        format!(
            "the file descriptor limit is {effective} (hard limit {hard}), below the {needed} that \
             server.max_connections = {max_connections} can need ({PER_CONNECTION} per connection + {MARGIN}): \
             raise it (ulimit -n, LimitNOFILE=, the container's nofile ulimit) or lower max_connections"
        )
    });
    Plan {
        raise_to,
        effective,
        warning,
    }
}

/// Raises the soft limit to the hard limit and logs a warning when it is still too low.
pub fn raise(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        log::warn!("cannot read RLIMIT_NOFILE");
        return;
    };
    let p = plan(soft, hard, max_connections);
    if let Some(to) = p.raise_to {
        match setrlimit(Resource::RLIMIT_NOFILE, to, hard) {
            Ok(()) => log::info!("file descriptor limit raised from {soft} to {to}"),
            Err(e) => log::warn!("cannot raise the file descriptor limit from {soft} to {to}: {e}"),
        }
    }
    if let Some(w) = p.warning {
        log::warn!("{w}");
    }
}

/// EMFILE (this process) or ENFILE (the whole system): out of descriptors.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == nix::libc::EMFILE || n == nix::libc::ENFILE)
}

/// Where descriptor exhaustion was met, for the `where` label.
#[derive(Debug, Clone, Copy)]
pub enum Site {
    HealthCheck = 0,
    Connect = 1,
    Accept = 2,
}

pub const SITES: [&str; 3] = ["health_check", "connect", "accept"];

static COUNTS: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// Counts one exhaustion error at `site`.
pub fn count(site: Site) {
    COUNTS[site as usize].fetch_add(1, Relaxed);
}

/// (site, count) for every site.
pub fn snapshot() -> Vec<(&'static str, u64)> {
    SITES
        .iter()
        .zip(&COUNTS)
        .map(|(s, c)| (*s, c.load(Relaxed)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raises_soft_to_hard_and_warns_when_short() {
        let p = plan(256, 20_000, 10_000);
        assert_eq!(p.raise_to, Some(20_000));
        assert!(p.warning.unwrap().contains("20512"));
        let p = plan(1_048_576, 1_048_576, 10_000);
        assert_eq!((p.raise_to, p.warning), (None, None));
        let p = plan(1024, 1024, 100);
        assert_eq!((p.raise_to, p.effective, p.warning), (None, 1024, None));
        assert!(plan(64, 64, 100).warning.is_some());
        assert_eq!(
            plan(0, u64::MAX, usize::MAX).raise_to,
            Some(u64::MAX),
            "no overflow"
        );
    }

    #[test]
    fn exhaustion_is_recognised() {
        assert!(is_exhaustion(&std::io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(is_exhaustion(&std::io::Error::from_raw_os_error(
            nix::libc::ENFILE
        )));
        assert!(!is_exhaustion(&std::io::Error::from_raw_os_error(
            nix::libc::ECONNREFUSED
        )));
        assert!(!is_exhaustion(&std::io::Error::other("x")));
    }
}
