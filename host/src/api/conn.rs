//! Accepting the API's connections, so that idle and slow clients cannot exhaust it.
//!
//! - At most `api.max_connections` connections are open (a semaphore of permits, one per
//!   connection). At the cap, the connection idle the longest — no request in progress: it has
//!   sent no complete request head since its accept or its last response — is closed to admit
//!   the new one; when every open connection has a request in progress, the new one is closed.
//!   Idle sockets therefore cannot lock legitimate clients out: a client that sends its request
//!   at once is served.
//! - hyper's HTTP/1 `header_read_timeout` (`api.header_timeout_s`, with a tokio timer) closes a
//!   connection that has not sent a whole request head in time, counted from its accept or its
//!   previous response: slow-header clients and idle keep-alive connections are dropped.
//! - hyper's read buffer is bounded ([`MAX_BUF`]).
//! - The process's open-file limit is raised (to its hard limit) when the cap needs it, else
//!   the cap is lowered to fit.
//!
//! Whole-request timeout, request concurrency and body size are tower layers on the router
//! ([`super::router`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt as _;

use super::state::NetStats;

/// hyper's per-connection read buffer (request head and body chunks): 64 KiB.
pub const MAX_BUF: usize = 64 * 1024;

/// File descriptors kept free beside the API's connections (enclave sockets, job files, logs).
const FD_RESERVE: u64 = 256;

/// One open connection.
struct Slot {
    /// Requests in progress (0 or 1 with HTTP/1).
    busy: AtomicUsize,
    /// When it last became idle (nanoseconds since the table's epoch).
    idle_since: AtomicU64,
    /// Told to close it.
    evict: Notify,
}

/// The open connections.
struct Table {
    epoch: Instant,
    next: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Table {
    fn new() -> Self {
        Table {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self) -> (u64, Arc<Slot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now()),
            evict: Notify::new(),
        });
        self.lock().insert(id, slot.clone());
        (id, slot)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the connection idle the longest to close (and forgets it); false when every open
    /// connection has a request in progress.
    fn evict_idlest(&self) -> bool {
        let mut g = self.lock();
        let idlest = g
            .iter()
            .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, s)| s.idle_since.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match idlest.and_then(|id| g.remove(&id)) {
            Some(slot) => {
                slot.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Marks a connection busy while a request is in progress.
struct Busy {
    slot: Arc<Slot>,
    table: Arc<Table>,
}

impl Busy {
    fn new(slot: Arc<Slot>, table: Arc<Table>) -> Self {
        slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy { slot, table }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.slot
            .idle_since
            .store(self.table.now(), Ordering::Relaxed);
        self.slot.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection cap the open-file limit allows: raises the soft limit toward the hard one
/// when `wanted` connections and [`FD_RESERVE`] do not fit, else lowers the cap (with a warning).
pub(super) fn fit_fd_limit(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    let need = wanted as u64 + FD_RESERVE;
    if lim.rlim_cur < need {
        let raised = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    let room = lim.rlim_cur.saturating_sub(FD_RESERVE).max(1) as usize;
    if room < wanted {
        tracing::warn!(
            "api.max_connections = {wanted} does not fit the open-file limit ({}): using {room}",
            lim.rlim_cur
        );
    }
    wanted.min(room)
}

/// What [`accept_loop`] needs.
pub(super) struct ConnOptions {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// Accepts connections on `listener` and serves `app` on each, forever.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    opts: ConnOptions,
    stats: Arc<NetStats>,
) {
    let permits = Arc::new(Semaphore::new(opts.max_connections));
    let table = Arc::new(Table::new());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .max_buf_size(MAX_BUF)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors (or a connection reset before its accept): make room
                // and retry shortly rather than spin.
                tracing::debug!("accepting an API connection: {e}");
                table.evict_idlest();
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !table.evict_idlest() {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                stats.evicted.fetch_add(1, Ordering::Relaxed);
                // The evicted connection's task ends at once and returns its permit.
                match tokio::time::timeout(Duration::from_secs(1), permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (id, slot) = table.insert();
        let (table, app, http, stats) = (table.clone(), app.clone(), http.clone(), stats.clone());
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let svc = {
                let (slot, table) = (slot.clone(), table.clone());
                hyper::service::service_fn(move |req: Request<Incoming>| {
                    let busy = Busy::new(slot.clone(), table.clone());
                    let app = app.clone();
                    async move {
                        let res = app.oneshot(req).await;
                        drop(busy);
                        res
                    }
                })
            };
            let conn = http.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!("API connection: {e}");
                    }
                }
                () = slot.evict.notified() => {}
            }
            table.remove(id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idlest_connection_is_evicted_and_busy_ones_never() {
        let t = Arc::new(Table::new());
        let (a, sa) = t.insert();
        std::thread::sleep(Duration::from_millis(2));
        let (b, sb) = t.insert();
        let busy_a = Busy::new(sa.clone(), t.clone());
        // a is busy: b goes.
        assert!(t.evict_idlest());
        assert!(!t.lock().contains_key(&b));
        // Only a busy one left: nothing goes.
        assert!(!t.evict_idlest());
        drop(busy_a);
        assert!(t.evict_idlest());
        assert!(!t.lock().contains_key(&a));
        // The evicted connections were told (the notification is kept for their task).
        for s in [sa, sb] {
            let waited = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(1), s.evict.notified()).await
                });
            assert!(waited.is_ok());
        }
    }
}
