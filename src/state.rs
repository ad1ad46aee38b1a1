//! The state of a running switchyard, split by plane. `DataPlane` is what requests read (the
//! table, counters, open connections, the drain signal), lock-free; `Shared` is what the
//! control plane owns (config, registry, rate limiter, store, upstream set, the `[[tcp]]`
//! listener set) and holds the data plane by `Arc`. The proxy only ever sees a `DataPlane`.
use crate::config::Config;
use crate::control::Control;
use crate::registry::store::Store;
use crate::routing::Table;
use crate::upstream::set::UpstreamSet;
use arc_swap::{ArcSwap, ArcSwapOption};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// What the data plane reads. Written by the control plane (a table swap, a TLS apply) or
/// counted by requests; never locked.
pub struct DataPlane {
    pub table: ArcSwap<Table>,
    pub metrics: crate::metrics::Metrics,
    /// Set once on SIGTERM/SIGINT: listeners stop, `/ready` answers 503, connections close
    /// after their current request.
    pub shutdown: watch::Sender<bool>,
    pub open_connections: AtomicU64,
    /// The drain's completion channel (mini-redis's `shutdown_complete`): every open data
    /// connection's `ConnGuard` holds this sender; the drain drops it here and waits until the
    /// receiver sees the last one gone. None once the drain has begun.
    done: ArcSwapOption<mpsc::Sender<()>>,
    /// Certificates, the HTTPS server config, handshake counts, ACME challenges.
    pub tls: crate::tls::TlsRuntime,
    /// HTTP/2 connection, stream and flood counts.
    pub h2: crate::proxy::h2::H2Stats,
    /// Failed API-key checks per source address (atomics only).
    pub auth_failures: crate::proxy::auth_limit::AuthLimiter,
    /// switchyard's own listeners and this host's addresses: a backend that resolves to one
    /// of them is refused (registration) and never connected to (a forwarding loop).
    pub own_listeners: ArcSwap<crate::registry::self_target::OwnListeners>,
    /// The access log's writer (SPEC §12); None while `access_log = false`. Replaced when a
    /// reload changes `access_log_path`, reopened on SIGHUP.
    pub access_log: ArcSwapOption<crate::observe::access_log::AccessLog>,
}

impl DataPlane {
    /// A data plane serving `table`, and the receiving end of its completion channel.
    pub fn new(table: Table) -> (Arc<Self>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        let dp = DataPlane {
            table: ArcSwap::from_pointee(table),
            metrics: crate::metrics::Metrics::default(),
            shutdown: watch::channel(false).0,
            open_connections: AtomicU64::new(0),
            done: ArcSwapOption::from_pointee(tx),
            tls: crate::tls::TlsRuntime::default(),
            h2: Default::default(),
            auth_failures: crate::proxy::auth_limit::AuthLimiter::new(),
            own_listeners: ArcSwap::from_pointee(Default::default()),
            access_log: Default::default(),
        };
        (Arc::new(dp), rx)
    }

    pub fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Signals the drain and gives up the completion sender: from here on only the
    /// connections already holding a clone keep the channel open.
    pub fn begin_drain(&self) {
        self.shutdown.send_replace(true);
        self.done.store(None);
    }

    pub fn open(&self) -> u64 {
        self.open_connections.load(Relaxed)
    }
}

/// What the control plane owns, and the data plane it feeds.
pub struct Shared {
    pub dp: Arc<DataPlane>,
    /// The config the current table was built from, for readers that do not take the control
    /// lock (admin prechecks). Stored only under that lock, together with `Control::config`,
    /// which is what every table change and registration decision reads.
    pub config: ArcSwap<Config>,
    /// Config, registrations and the rate limiter: one lock serializes every table change.
    pub control: tokio::sync::Mutex<Control>,
    pub store: Arc<dyn Store>,
    /// The registry has been loaded from the store (always, for the file store; after the
    /// first full load, for etcd). Until then tables are built not ready.
    pub loaded: AtomicBool,
    /// The last store write succeeded.
    pub store_synced: AtomicBool,
    pub metrics_reload_failures: AtomicU64,
    pub registrations: crate::registry::Counts,
    /// The `[[tcp]]` listeners, bound at start and re-applied by `control::reload`.
    pub l4: crate::proxy::l4::L4Listeners,
    /// The `[[tcp]]` listeners (local address) and their targets, for `/health` and
    /// `/metrics`; written by the L4 listener set on start and reload.
    pub l4_view: ArcSwap<Vec<(String, Vec<Arc<crate::upstream::Upstream>>)>>,
    /// The data, admin and HTTPS listeners, bound once at start; with the `[[tcp]]` ones they
    /// make `DataPlane::own_listeners`.
    pub bound: Mutex<Vec<crate::registry::self_target::Listener>>,
    pub upstreams: UpstreamSet,
    pub started: Instant,
    /// Taken by the drain, which waits on it.
    completion: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Shared {
    pub fn new(
        table: Table,
        control: Control,
        store: Arc<dyn Store>,
        loaded: bool,
        upstreams: UpstreamSet,
    ) -> Arc<Self> {
        let (dp, completion) = DataPlane::new(table);
        Arc::new(Shared {
            dp,
            config: ArcSwap::new(control.config.clone()),
            control: tokio::sync::Mutex::new(control),
            store,
            loaded: AtomicBool::new(loaded),
            store_synced: AtomicBool::new(true),
            metrics_reload_failures: AtomicU64::new(0),
            registrations: crate::registry::Counts::default(),
            l4: Default::default(),
            l4_view: ArcSwap::from_pointee(Vec::new()),
            bound: Mutex::new(Vec::new()),
            upstreams,
            started: Instant::now(),
            completion: Mutex::new(Some(completion)),
        })
    }

    /// Every upstream: the HTTP table's and the L4 listeners' (for metrics and the status page).
    pub fn all_upstreams(&self) -> Vec<Arc<crate::upstream::Upstream>> {
        let mut all = self.upstreams.all();
        for (_, targets) in self.l4_view.load().iter() {
            for u in targets {
                if !all.iter().any(|x| Arc::ptr_eq(x, u)) {
                    all.push(u.clone());
                }
            }
        }
        all
    }

    /// Begins the drain and waits until every data connection has closed, or `limit`; the
    /// number still open when it gave up.
    pub async fn drain(&self, limit: std::time::Duration) -> u64 {
        self.dp.begin_drain();
        let rx = self
            .completion
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut rx) = rx {
            // Nothing is ever sent: recv() returns None once the last sender is dropped.
            let _ = tokio::time::timeout(limit, rx.recv()).await;
        }
        self.dp.open()
    }
}

/// Counts a data connection as open, and keeps the drain waiting, for as long as it lives.
pub struct ConnGuard {
    dp: Arc<DataPlane>,
    _done: Arc<mpsc::Sender<()>>,
}

impl ConnGuard {
    /// None once the drain has begun: the connection is then closed unserved, exactly as if it
    /// had arrived after the listener stopped (the drain would not wait for it).
    pub fn new(dp: Arc<DataPlane>) -> Option<Self> {
        let done = dp.done.load_full()?;
        dp.open_connections.fetch_add(1, Relaxed);
        Some(ConnGuard { dp, _done: done })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.dp.open_connections.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shared() -> Arc<Shared> {
        let cfg = Arc::new(crate::config::parse("", "t", Box::new(|_| None)).unwrap());
        let upstreams = UpstreamSet::default();
        let table = crate::routing::build::build(&cfg, &[], &upstreams);
        let store = Arc::new(crate::registry::store::file::FileStore::new(
            std::env::temp_dir().join("switchyard-state-test-unused.json"),
        ));
        Shared::new(table, Control::new(vec![], cfg), store, true, upstreams)
    }

    #[tokio::test]
    async fn drain_returns_when_the_last_connection_closes() {
        let s = shared();
        let a = ConnGuard::new(s.dp.clone()).unwrap();
        let b = ConnGuard::new(s.dp.clone()).unwrap();
        let closer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(b);
        });
        let t = Instant::now();
        let left = s.drain(Duration::from_secs(10)).await;
        assert_eq!(left, 0);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(100),
            "returned early: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "waited for the limit: {took:?}"
        );
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn drain_gives_up_at_its_limit_and_refuses_new_guards() {
        let s = shared();
        let held = ConnGuard::new(s.dp.clone()).unwrap();
        let left = s.drain(Duration::from_millis(50)).await;
        assert_eq!(left, 1);
        assert!(s.dp.draining());
        assert!(ConnGuard::new(s.dp.clone()).is_none());
        drop(held);
        assert_eq!(s.dp.open(), 0);
    }
}
