//! Checker tasks: one per checked upstream, driving the state machine with real probes and
//! publishing the result in the upstream's health cell. A task ends when its upstream is no
//! longer used by any table, or when checking stops after too many failures.
use super::probe;
use super::state::{Machine, Timings};
use super::Status;
use crate::clock::unix_ms;
use crate::config::Gateway;
use crate::state::{DataPlane, Shared};
use crate::upstream::Upstream;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How soon a check that could not run (no file descriptor) is tried again.
const LOCAL_RETRY: Duration = Duration::from_millis(500);

/// Starts checking every checked upstream that has no checker running (new ones, and those
/// whose checking had stopped: a reload or a new registration starts them again).
pub fn spawn_fresh(shared: &Arc<Shared>, gateway: &Gateway) {
    shared.upstreams.take_fresh();
    spawn_for(&shared.dp, &shared.upstreams.all(), gateway);
}

/// Starts checking each of `upstreams` that is checked and has no checker running (the L4
/// listeners keep their own upstreams, apart from the routing table's set).
pub fn spawn_for(dp: &Arc<DataPlane>, upstreams: &[Arc<Upstream>], gateway: &Gateway) {
    for u in upstreams {
        if probe::of(u).is_some() && u.health.try_start_checking() {
            let timings = Timings::from(gateway);
            tokio::spawn(run(Arc::downgrade(u), Arc::downgrade(dp), timings));
        }
    }
}

async fn run(weak: Weak<Upstream>, shared: Weak<DataPlane>, mut timings: Timings) {
    let mut machine = match weak.upgrade() {
        Some(u) => Machine::resume(u.status()),
        None => return,
    };
    loop {
        let Some(u) = weak.upgrade() else { return };
        let Some(probe) = probe::of(&u) else {
            return;
        };
        if let Some(sh) = shared.upgrade() {
            timings = Timings::from(&sh.table.load().gateway);
        }
        let result = match probe::check(&u, probe, timings.timeout).await {
            Err(probe::CheckError::Local(reason)) => {
                // Not the backend's fault: the state machine does not see it, and the check
                // is tried again soon rather than after a whole interval.
                crate::fdlimit::count(crate::fdlimit::Site::HealthCheck);
                log::warn!(
                    "health check {}{} could not run: {reason}; retrying, status stays {}",
                    u.label,
                    probe,
                    u.status().as_str()
                );
                drop(u);
                tokio::time::sleep(timings.interval.min(LOCAL_RETRY)).await;
                continue;
            }
            Err(probe::CheckError::Failed(reason)) => Err(reason),
            Ok(rt) => Ok(rt),
        };
        let now = unix_ms();
        match &result {
            Ok(rt) => u.health.record_check(now, Some(rt.as_micros() as u64)),
            Err(reason) => {
                u.health.record_check(now, None);
                log::warn!(
                    "health check {}{} failed ({}/{}): {reason}",
                    u.label,
                    probe,
                    machine.failures + 1,
                    timings.fall
                );
            }
        }
        let transition = machine.record(result.is_ok(), &timings);
        u.health.set_failures(machine.failures);
        u.health.count_check(result.is_ok());
        if let Some(t) = transition {
            u.health.set_status_at(t.to, now);
            if t.to == Status::Up && u.outlier.reset() {
                // As Envoy's successful_active_health_check_uneject_host (default on): an
                // address that came back UP is not kept out by an ejection from its outage.
                log::info!(
                    "outlier: {} back in service: its health check turned UP",
                    u.label
                );
            }
            match t.to {
                Status::Down => log::error!(
                    "{} is DOWN after {} failed checks",
                    u.label,
                    machine.failures
                ),
                _ => log::info!("{} is {} (was {})", u.label, t.to.as_str(), t.from.as_str()),
            }
        }
        let Some(delay) = machine.next_delay(&timings) else {
            log::warn!(
                "{}: {} consecutive failed checks, checking stops until a reload or re-registration",
                u.label, machine.failures
            );
            u.health.set_stopped(true);
            u.health.stop_checking();
            return;
        };
        drop(u);
        tokio::time::sleep(delay).await;
    }
}
