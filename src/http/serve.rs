//! The HTTP listener: HTTP/1.1 over hyper with the bounds anything reachable over a network needs
//! (docs/operations.md "HTTP"): a client must send its whole request header within
//! `http.header_timeout`; at most `http.max_connections` connections are open at once; at a stop,
//! requests in flight get [`SHUTDOWN_GRACE`] and then their connections are closed.
//!
//! At the cap a new connection is not turned away: the oldest connection that has not sent a
//! complete request yet (a client trickling its header, or one that opened and went quiet) is
//! closed to make room, else the oldest idle keep-alive connection; only when every connection is
//! in the middle of a request is the new one closed. A flood of half-open connections therefore
//! cannot lock health checks out, whatever its size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long requests in flight may take to finish once the daemon stops.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The listener's bounds (`http.header_timeout`, `http.max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Where a connection stands, for choosing which one to close at the cap.
const FRESH: u8 = 0; // no complete request yet
const BUSY: u8 = 1; // serving a request
const IDLE: u8 = 2; // between requests (keep-alive)

struct Conn {
    state: Arc<AtomicU8>,
    close: CancellationToken,
}

/// The open connections, by the order they were accepted.
#[derive(Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Conn>>,
}

impl Registry {
    fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Close the connection that matters least: the oldest fresh one, else the oldest idle one.
    /// False when every connection is serving a request.
    fn evict(&self) -> bool {
        let Ok(mut conns) = self.conns.lock() else {
            return false;
        };
        let pick = |wanted: u8| {
            conns
                .iter()
                .find(|(_, c)| c.state.load(Ordering::Acquire) == wanted)
                .map(|(id, _)| *id)
        };
        match pick(FRESH).or_else(|| pick(IDLE)) {
            Some(id) => {
                if let Some(c) = conns.remove(&id) {
                    c.close.cancel();
                }
                true
            }
            None => false,
        }
    }

    fn insert(&self, id: u64, conn: Conn) {
        if let Ok(mut c) = self.conns.lock() {
            c.insert(id, conn);
        }
    }

    fn remove(&self, id: u64) {
        if let Ok(mut c) = self.conns.lock() {
            c.remove(&id);
        }
    }
}

/// Serve `router` on `listener` until `stop`; then let requests in flight finish for
/// [`SHUTDOWN_GRACE`] and close every connection. Errors of single connections are theirs alone.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, stop: CancellationToken) {
    let registry = Arc::new(Registry::default());
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections as they end, so the set stays as small as the registry.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a moment instead of spinning.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if registry.len() >= limits.max_connections && !registry.evict() {
            drop(stream);
            continue;
        }
        next_id += 1;
        let id = next_id;
        let state = Arc::new(AtomicU8::new(FRESH));
        let close = stop.child_token();
        registry.insert(
            id,
            Conn {
                state: state.clone(),
                close: close.clone(),
            },
        );
        let router = router.clone();
        let registry = registry.clone();
        let stopping = stop.clone();
        tasks.spawn(async move {
            connection(stream, router, limits, state, close, stopping).await;
            registry.remove(id);
        });
    }
    // Stopping: connections were told (their tokens are children of `stop`); wait for them.
    let drained = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: Limits,
    state: Arc<AtomicU8>,
    close: CancellationToken,
    stopping: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let router = router.clone();
        let state = state.clone();
        async move {
            state.store(BUSY, Ordering::Release);
            let answer = tower::ServiceExt::oneshot(router, req).await;
            state.store(IDLE, Ordering::Release);
            answer
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = close.cancelled() => {
            if stopping.is_cancelled() {
                // A stop: finish what is in flight, for a bounded time.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await;
            }
            // Evicted at the cap: dropped, which closes the socket.
        }
    }
}
