//! One backend address as the data plane sees it: its health cell, its idle connection pool,
//! its resolved addresses and its counters. Shared by every pool and table that names it.
pub(crate) mod dns;
pub(crate) mod h2pool;
pub(crate) mod pool;
pub mod protocol;
pub mod set;

use crate::config::address::Address;
use crate::health::{HealthCell, Status};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Requests using this address right now.
    pub in_flight: AtomicU64,
}

#[derive(Debug)]
pub struct Upstream {
    pub address: Address,
    pub label: Box<str>,
    /// None: not actively checked, and so always taken as UP (HAProxy's server without
    /// `check`).
    pub health_endpoint: Option<String>,
    /// Checked with a bare TCP connect (L4 targets, which have no HTTP endpoint).
    pub tcp_check: bool,
    pub health: HealthCell,
    /// Passive health: what real requests saw (SPEC §11 `[outlier]`).
    pub outlier: crate::resilience::outlier::Outlier,
    pub idle: pool::IdlePool,
    pub dns: dns::Resolved,
    pub stats: UpstreamStats,
    /// Connections are TLS, verified as this says (`tls = true`, `protocol = "h2"`).
    pub tls: Option<std::sync::Arc<crate::tls::client::BackendTls>>,
    /// HTTP/1.1 (the idle pool above) or HTTP/2 (`h2`).
    pub protocol: protocol::Protocol,
    /// The multiplexed connections of an HTTP/2 backend.
    pub h2: h2pool::H2Pool,
}

impl Upstream {
    pub fn new(address: Address, health_endpoint: Option<String>) -> Self {
        let initial = if health_endpoint.is_some() {
            Status::Unknown
        } else {
            Status::Up
        };
        let label = address.to_string().into_boxed_str();
        let health = HealthCell::new(Status::Unknown);
        if initial == Status::Up {
            health.set_status_at(Status::Up, crate::clock::unix_ms());
        }
        Upstream {
            dns: dns::Resolved::new(&address),
            address,
            label,
            health_endpoint,
            tcp_check: false,
            health,
            outlier: Default::default(),
            idle: pool::IdlePool::new(),
            stats: UpstreamStats::default(),
            tls: None,
            protocol: protocol::Protocol::Http1,
            h2: h2pool::H2Pool::default(),
        }
    }

    /// An L4 target: checked by TCP connect when `tcp_check`, else always UP.
    pub fn l4(address: Address, tcp_check: bool) -> Self {
        let mut u = Upstream::new(address, None);
        if tcp_check {
            u.tcp_check = true;
            u.health = HealthCell::new(Status::Unknown);
        }
        u
    }

    #[inline]
    pub fn status(&self) -> Status {
        self.health.status()
    }

    /// UP by its active checks and not ejected by its passive ones: takes a full share of
    /// traffic. (An ejected address whose time is up waits for its one probe; it does not
    /// count as in service until the probe succeeds.)
    #[inline]
    pub fn in_service(&self) -> bool {
        self.status() == Status::Up && self.outlier.in_service()
    }

    pub fn count_request(&self) {
        self.stats.requests.fetch_add(1, Relaxed);
    }
}
