//! Resolution of backend names at connect time, through a short-lived cache: a pod that comes
//! back with a new IP is found within the TTL, and a lookup is not made per request.
use crate::config::address::Address;
use arc_swap::ArcSwapOption;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resolved name is trusted.
pub const TTL: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Entry {
    at: Instant,
    addrs: Vec<SocketAddr>,
}

#[derive(Debug)]
pub struct Resolved {
    /// Set for IP literals: never looked up.
    fixed: Option<SocketAddr>,
    cache: ArcSwapOption<Entry>,
    /// The last lookup error, so that a failing name is logged once per change.
    last_error: std::sync::Mutex<Option<String>>,
}

impl Resolved {
    pub fn new(a: &Address) -> Self {
        Resolved {
            fixed: a.ip().map(|ip| SocketAddr::new(ip, a.port)),
            cache: ArcSwapOption::empty(),
            last_error: std::sync::Mutex::new(None),
        }
    }

    /// The socket addresses to try for `a`, from the cache or a fresh lookup.
    pub async fn addrs(&self, a: &Address) -> std::io::Result<Vec<SocketAddr>> {
        if let Some(s) = self.fixed {
            return Ok(vec![s]);
        }
        if let Some(e) = self.cache.load().as_ref() {
            if e.at.elapsed() < TTL {
                return Ok(e.addrs.clone());
            }
        }
        let result = tokio::net::lookup_host((a.host.as_str(), a.port))
            .await
            .map(|it| it.collect::<Vec<_>>());
        let result = match result {
            Ok(v) if v.is_empty() => Err(std::io::Error::other("name resolved to no address")),
            other => other,
        };
        self.note(a, &result);
        let addrs = result?;
        self.cache.store(Some(Arc::new(Entry {
            at: Instant::now(),
            addrs: addrs.clone(),
        })));
        Ok(addrs)
    }

    fn note(&self, a: &Address, result: &std::io::Result<Vec<SocketAddr>>) {
        let now = result.as_ref().err().map(|e| e.to_string());
        let Ok(mut last) = self.last_error.lock() else {
            return;
        };
        if *last != now {
            match &now {
                Some(e) => log::warn!("cannot resolve {a}: {e}"),
                None if last.is_some() => log::info!("{a} resolves again"),
                None => {}
            }
            *last = now;
        }
    }
}
