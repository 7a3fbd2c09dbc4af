//! Keeps a listener's connections within bounds, so that clients that never
//! finish (or idle forever) cost neither descriptors nor service: at most
//! `max` open at once, counted until their sockets are dropped (a new one
//! evicts the oldest idle one, or waits while all are busy), none waiting
//! for its first request headers past 10 s, none idle between requests past a minute.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A connection with no request yet is closed after this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in progress is closed after this.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Only a connection idle this long may be evicted for a new one, so a
/// burst of real clients does not evict itself before its requests are
/// read; short, so a flood of silent ones is cycled through quickly.
pub const EVICT_AFTER: Duration = Duration::from_millis(250);
/// How long to wait for a closing connection's task to drop its socket
/// (its end wakes the waiter sooner).
const CLOSING_WAIT: Duration = Duration::from_millis(10);
/// How often the timeouts are enforced.
const SWEEP_EVERY: Duration = Duration::from_millis(500);

/// The connections of one listener.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    max: usize,
    state: Mutex<Table>,
    /// Woken whenever a connection closes or goes idle.
    freed: tokio::sync::Notify,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
}

struct Entry {
    /// When it opened, or when its last request ended.
    since: Instant,
    /// Requests whose answer has not been sent in full.
    busy: usize,
    /// Requests it has made, to tell a slow first request from an idle keep-alive.
    served: u64,
    close: CancellationToken,
}

/// One accepted connection; dropping it frees its place.
pub struct Admitted {
    connections: Connections,
    id: u64,
    /// Cancelled when the connection must be closed (evicted or timed out).
    pub close: CancellationToken,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.table().open.remove(&self.id);
        self.connections.inner.freed.notify_waiters();
    }
}

impl Connections {
    /// At most `max` connections; runs the timeout sweeper until `shutdown`.
    pub fn new(max: usize, shutdown: CancellationToken) -> Connections {
        let connections = Connections {
            inner: Arc::new(Inner {
                max: max.max(1),
                state: Mutex::new(Table::default()),
                freed: tokio::sync::Notify::new(),
            }),
        };
        let sweeper = connections.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => sweeper.close_expired(Instant::now()),
                }
            }
        });
        connections
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic under the lock leaves whole entries: nothing to repair.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.table().open.len()
    }

    /// Admits a new connection when the listener has room. When it is full,
    /// evicts the connection idle longest (at least [`EVICT_AFTER`]) and
    /// answers `Err` with how long to wait: until the evicted one has closed
    /// (a connection counts until its socket is dropped, so the cap bounds
    /// descriptors), or until one may be evicted (`None`: all are busy).
    pub fn admit(&self) -> Result<Admitted, Option<Duration>> {
        let mut table = self.table();
        if table.open.len() >= self.inner.max {
            if table.open.values().any(|e| e.close.is_cancelled()) {
                return Err(Some(CLOSING_WAIT));
            }
            let now = Instant::now();
            let (since, close) = table
                .open
                .values()
                .filter(|e| e.busy == 0)
                .min_by_key(|e| e.since)
                .map(|e| (e.since, e.close.clone()))
                .ok_or(None)?;
            let evictable_in = (since + EVICT_AFTER).saturating_duration_since(now);
            if evictable_in.is_zero() {
                close.cancel();
                return Err(Some(CLOSING_WAIT));
            }
            return Err(Some(evictable_in));
        }
        table.next_id += 1;
        let id = table.next_id;
        let close = CancellationToken::new();
        table.open.insert(
            id,
            Entry {
                since: Instant::now(),
                busy: 0,
                served: 0,
                close: close.clone(),
            },
        );
        Ok(Admitted {
            connections: self.clone(),
            id,
            close,
        })
    }

    /// Admits a new connection, waiting while none can be evicted (new
    /// clients wait in the kernel's backlog meanwhile, costing no descriptor).
    pub async fn admit_when_free(&self) -> Admitted {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.admit() {
                Ok(admitted) => return admitted,
                // Idle connections become evictable with time, without a wake-up.
                Err(Some(wait)) => {
                    let _ = tokio::time::timeout(wait, freed).await;
                }
                Err(None) => freed.await,
            }
        }
    }

    /// Closes connections past [`HEADER_TIMEOUT`] or [`IDLE_TIMEOUT`]; each
    /// leaves the table when its task has dropped it.
    fn close_expired(&self, now: Instant) {
        for e in self.table().open.values() {
            let limit = if e.served == 0 {
                HEADER_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            if e.busy == 0 && now.duration_since(e.since) >= limit {
                e.close.cancel();
            }
        }
    }

    /// Marks a request of connection `id` begun; the guard ends it.
    fn begin(&self, id: u64) -> RequestGuard {
        if let Some(entry) = self.table().open.get_mut(&id) {
            entry.busy += 1;
            entry.served += 1;
        }
        RequestGuard {
            connections: self.clone(),
            id,
        }
    }
}

impl Admitted {
    /// Wraps a response body so the connection counts as busy until it is sent.
    pub fn track(&self) -> RequestGuard {
        self.connections.begin(self.id)
    }
}

/// A request in progress; dropped when its answer has been sent (or abandoned).
pub struct RequestGuard {
    connections: Connections,
    id: u64,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.connections.table().open.get_mut(&self.id) {
            entry.busy = entry.busy.saturating_sub(1);
            entry.since = Instant::now();
        }
        self.connections.inner.freed.notify_waiters();
    }
}

/// A response body that holds its request's guard until it is done.
pub struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl GuardedBody {
    pub fn new(inner: Body, guard: RequestGuard) -> GuardedBody {
        GuardedBody { inner, _guard: guard }
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_listener_evicts_the_oldest_idle_connection_and_never_a_busy_one() {
        let connections = Connections::new(2, CancellationToken::new());
        let first = connections.admit().expect("admitted");
        tokio::time::advance(Duration::from_millis(10)).await;
        let second = connections.admit().expect("admitted");
        assert_eq!(
            connections.admit().err(),
            Some(Some(EVICT_AFTER - Duration::from_millis(10))),
            "no connection idle long enough to evict: the first may go in 240 ms"
        );
        tokio::time::advance(EVICT_AFTER).await;
        let busy = second.track();
        assert_eq!(
            connections.admit().err(),
            Some(Some(CLOSING_WAIT)),
            "the idle first is evicted, and counts until it has closed"
        );
        assert!(first.close.is_cancelled());
        assert!(!second.close.is_cancelled());
        assert_eq!(
            connections.admit().err(),
            Some(Some(CLOSING_WAIT)),
            "no second eviction meanwhile"
        );
        assert_eq!(connections.open(), 2);
        drop(first);
        let third = connections.admit().expect("admitted once the first has closed");
        let _busy_too = third.track();
        assert_eq!(
            connections.admit().err(),
            Some(None),
            "both open connections are busy"
        );
        drop(busy);
        assert_eq!(connections.open(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_close_after_10s_and_idle_keep_alives_after_a_minute() {
        let connections = Connections::new(10, CancellationToken::new());
        let silent = connections.admit().expect("admitted");
        let kept = connections.admit().expect("admitted");
        drop(kept.track());
        tokio::time::sleep(HEADER_TIMEOUT + SWEEP_EVERY).await;
        assert!(silent.close.is_cancelled());
        assert!(!kept.close.is_cancelled());
        drop(silent);
        assert_eq!(connections.open(), 1);
        tokio::time::sleep(IDLE_TIMEOUT - HEADER_TIMEOUT).await;
        assert!(kept.close.is_cancelled());
        drop(kept);
        assert_eq!(connections.open(), 0);
    }
}
