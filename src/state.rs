//! The state shared by the data plane and the control plane: the current routing table, the
//! upstream set, and the lifecycle flags. The data plane only reads it.
use crate::config::Config;
use crate::control::Control;
use crate::registry::store::Store;
use crate::routing::Table;
use crate::upstream::set::UpstreamSet;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

pub struct Shared {
    pub table: ArcSwap<Table>,
    /// The config the current table was built from.
    pub config: ArcSwap<Config>,
    /// Registrations and the rate limiter: one lock serializes every table change.
    pub control: tokio::sync::Mutex<Control>,
    pub store: Arc<dyn Store>,
    /// The registry has been loaded from the store (always, for the file store; after the
    /// first full load, for etcd). Until then tables are built not ready.
    pub loaded: AtomicBool,
    /// The last store write succeeded.
    pub store_synced: AtomicBool,
    pub metrics_reload_failures: AtomicU64,
    pub registrations: crate::registry::Counts,
    /// The `[[tcp]]` listeners (local address) and their targets, for `/health` and
    /// `/metrics`; written by the L4 listener set on start and reload.
    pub l4_view: ArcSwap<Vec<(String, Vec<Arc<crate::upstream::Upstream>>)>>,
    pub upstreams: UpstreamSet,
    /// Set once on SIGTERM/SIGINT: listeners stop, `/ready` answers 503, connections close
    /// after their current request.
    pub shutdown: watch::Sender<bool>,
    pub open_connections: AtomicU64,
    pub started: Instant,
    pub metrics: crate::metrics::Metrics,
    /// Certificates, the HTTPS server config, handshake counts, ACME challenges.
    pub tls: crate::tls::TlsRuntime,
    /// HTTP/2 connection, stream and flood counts.
    pub h2: crate::proxy::h2::H2Stats,
    /// Failed API-key checks per source address (data plane, atomics only).
    pub auth_failures: crate::proxy::auth_limit::AuthLimiter,
    /// switchyard's own listeners and this host's addresses: a backend that resolves to one
    /// of them is refused (registration) and never connected to (a forwarding loop).
    pub own_listeners: ArcSwap<crate::registry::self_target::OwnListeners>,
    /// The access log's writer (SPEC §12); None while `access_log = false`. Replaced when a
    /// reload changes `access_log_path`, reopened on SIGHUP.
    pub access_log: arc_swap::ArcSwapOption<crate::observe::access_log::AccessLog>,
}

impl Shared {
    pub fn new(
        table: Table,
        config: Config,
        control: Control,
        store: Arc<dyn Store>,
        loaded: bool,
        upstreams: UpstreamSet,
    ) -> Arc<Self> {
        Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            config: ArcSwap::from_pointee(config),
            control: tokio::sync::Mutex::new(control),
            store,
            loaded: AtomicBool::new(loaded),
            store_synced: AtomicBool::new(true),
            metrics_reload_failures: AtomicU64::new(0),
            registrations: crate::registry::Counts::default(),
            l4_view: ArcSwap::from_pointee(Vec::new()),
            upstreams,
            shutdown: watch::channel(false).0,
            open_connections: AtomicU64::new(0),
            started: Instant::now(),
            metrics: crate::metrics::Metrics::default(),
            tls: crate::tls::TlsRuntime::default(),
            h2: Default::default(),
            auth_failures: crate::proxy::auth_limit::AuthLimiter::new(),
            own_listeners: ArcSwap::from_pointee(Default::default()),
            access_log: Default::default(),
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

    pub fn draining(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn begin_drain(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn open(&self) -> u64 {
        self.open_connections.load(Relaxed)
    }
}

/// Counts a connection as open for as long as it lives.
pub struct ConnGuard(Arc<Shared>);

impl ConnGuard {
    pub fn new(s: Arc<Shared>) -> Self {
        s.open_connections.fetch_add(1, Relaxed);
        ConnGuard(s)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Relaxed);
    }
}
