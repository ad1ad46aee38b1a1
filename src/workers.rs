//! Per-core event loops (`workers` ≥ 2, or 0 on a machine with several cores): one OS thread
//! per worker, each with its own tokio current-thread runtime, its own epoll and timer wheel,
//! and its own SO_REUSEPORT listening socket, so that the kernel spreads new connections over
//! the workers and a connection's whole life (accept, client socket, backend socket from this
//! worker's share of the idle pool) stays on one thread — nginx's and HAProxy's model, without
//! work stealing, cross-thread wakeups or the multi-thread scheduler's atomics per task switch.
//!
//! Worker 0 is the calling thread's runtime, which also runs the control plane, the admin
//! listener and the `[[tcp]]` listeners; `Workers` owns the other N-1 threads.
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::runtime::Handle;

/// How many data-plane event loops share the idle pools (1 unless per-core workers run).
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's worker number; 0 on every thread that is not a per-core worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The runtimes of workers 1..N, for listeners started after the server (`[[tcp]]` ones
/// added by a reload); set once by the command line's `serve`.
static EXTRA: std::sync::OnceLock<Vec<Handle>> = std::sync::OnceLock::new();

/// Records the per-core workers' runtimes for [`extra`].
pub fn publish(handles: &[Handle]) {
    let _ = EXTRA.set(handles.to_vec());
}

/// The per-core workers beyond worker 0 (none unless `serve` started some).
pub fn extra() -> &'static [Handle] {
    EXTRA.get().map_or(&[], Vec::as_slice)
}

/// The number of workers whose connections share an address's idle pool.
pub fn count() -> usize {
    COUNT.load(Relaxed)
}

/// The worker this thread runs (0 outside per-core workers).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// The number of event loops `workers` asks for: 0 is one per core.
pub fn resolve(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The worker threads beyond the calling one; stopped and joined on drop.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `total - 1` worker threads (worker 0 is the caller's runtime) and records
    /// `total` for the idle pools, which must be built after this.
    pub fn start(total: usize) -> std::io::Result<Workers> {
        let total = total.max(1);
        COUNT.store(total, Relaxed);
        Self::threads(total)
    }

    /// The threads alone (unit tests: the pools' worker count is the process's).
    fn threads(total: usize) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 1..total {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("switchyard-w{i}"))
                    .spawn(move || {
                        INDEX.with(|c| c.set(i));
                        let _ = rt.block_on(stopped);
                    })?,
            );
        }
        Ok(w)
    }

    /// The runtimes of workers 1..N, to spawn their accept loops on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for s in self.stops.drain(..) {
            let _ = s.send(());
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_run_on_their_own_threads_and_stop() {
        let w = Workers::threads(3).unwrap();
        assert_eq!(w.handles().len(), 2);
        let seen: Vec<usize> = w
            .handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move { tx.send(current()).unwrap() });
                rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()
            })
            .collect();
        assert_eq!(seen, vec![1, 2]);
        assert_eq!(current(), 0);
        drop(w);
    }

    #[test]
    fn zero_is_one_per_core() {
        assert!(resolve(0) >= 1);
        assert_eq!(resolve(3), 3);
    }
}
