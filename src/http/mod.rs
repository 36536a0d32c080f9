//! `/healthz`, `/readyz` and `/metrics` (`docs/operations.md`), and the status page with its JSON
//! (`/`, `/occurrences`, `/api/v1/…`). Liveness never depends on DingTalk or the
//! database; readiness is true (503 when the database cannot be written, the scheduler loop is
//! stuck or Stream mode has been down longer than `dingtalk.stream.alert_after`). Requests here are
//! not logged. Nothing here changes state: every route is GET (and HEAD).

pub mod guard;
pub mod page;
pub mod serve;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::dingtalk::token::TokenStatus;
use crate::domain::OccurrenceState;
use crate::domain::time::fmt_utc;
use crate::metrics::Metrics;
use crate::scheduler::health::Health;
use crate::store::Liveness;
use crate::store::Store;

/// What the handlers read.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// The access token's state, as the DingTalk client publishes it.
    pub token: tokio::sync::watch::Receiver<TokenStatus>,
    /// For the age of the oldest pending alert.
    pub clock: crate::clock::SharedClock,
    /// The month's quota, as the quota task last saw it.
    pub quota: Arc<crate::scheduler::quota::QuotaState>,
    /// The database's part of `/readyz`, read at most once a second whoever asks.
    pub ready: Arc<ReadyCache>,
    /// Stream mode's connection (`stream`).
    pub stream: crate::scheduler::stream_health::StreamView,
    /// `http.auth`: every path but `/healthz` needs it when set.
    pub auth: Option<guard::Basic>,
}

pub fn router(state: HttpState) -> Router {
    let auth = state.auth.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/", get(summary_page))
        .route("/occurrences", get(list_page))
        .route("/occurrences/{id}", get(detail_page))
        .route("/api/v1/", get(api_index))
        .route("/api/v1/summary", get(summary_json))
        .route("/api/v1/occurrences", get(list_json))
        .route("/api/v1/occurrences/{id}", get(detail_json))
        .route(
            "/assets/style.css",
            get(|| asset("text/css; charset=utf-8", page::STYLE)),
        )
        .route(
            "/assets/refresh.js",
            get(|| asset("text/javascript; charset=utf-8", page::REFRESH)),
        )
        .route("/assets/icon.svg", get(|| asset("image/svg+xml", page::ICON)))
        .route("/favicon.ico", get(|| asset("image/svg+xml", page::ICON)))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(auth, guard::authenticate))
        .layer(middleware::from_fn(guard::headers))
        .with_state(state)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// What `/api/v1/` offers (docs/operations.md "Its JSON").
async fn api_index() -> Response {
    axum::Json(json!({
        "summary": "/api/v1/summary",
        "occurrences": "/api/v1/occurrences?policy=&state=&since=&until=&page=",
        "occurrence": "/api/v1/occurrences/{id}",
        "docs": "docs/operations.md#its-json",
    }))
    .into_response()
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

impl status::Problem {
    fn status(&self) -> (StatusCode, &str) {
        match self {
            status::Problem::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            status::Problem::NotFound(m) => (StatusCode::NOT_FOUND, m),
            status::Problem::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }

    fn page(&self, s: &HttpState) -> Response {
        let (code, text) = self.status();
        let title = code.canonical_reason().unwrap_or("Error");
        (code, page::problem(title, text, &fmt_utc(s.clock.now()))).into_response()
    }

    fn json(&self) -> Response {
        let (code, text) = self.status();
        (code, axum::Json(json!({ "error": text }))).into_response()
    }
}

/// `Server-Timing`: the database's reads and the rendering, in ms (the benchmark reads it).
fn timed(mut res: Response, read: std::time::Duration, render: std::time::Duration) -> Response {
    let value = format!(
        "db;dur={:.1}, render;dur={:.1}",
        read.as_secs_f64() * 1e3,
        render.as_secs_f64() * 1e3
    );
    if let Ok(v) = header::HeaderValue::from_str(&value) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

async fn summary_page(State(s): State<HttpState>) -> Response {
    let t = std::time::Instant::now();
    match status::summary(&s).await {
        Ok(sum) => {
            let read = t.elapsed();
            let page = page::summary(&sum).into_response();
            timed(page, read, t.elapsed() - read)
        }
        Err(p) => p.page(&s),
    }
}

async fn summary_json(State(s): State<HttpState>) -> Response {
    let t = std::time::Instant::now();
    match status::summary(&s).await {
        Ok(sum) => {
            let read = t.elapsed();
            let body = axum::Json(sum).into_response();
            timed(body, read, t.elapsed() - read)
        }
        Err(p) => p.json(),
    }
}

/// The query string's filters; a malformed one is a 400 naming what is wrong.
type ListParams = Result<Query<status::ListQuery>, axum::extract::rejection::QueryRejection>;

fn list_query(q: ListParams) -> Result<status::ListQuery, status::Problem> {
    q.map(|Query(q)| q)
        .map_err(|e| status::Problem::BadRequest(e.body_text()))
}

async fn list_page(State(s): State<HttpState>, q: ListParams) -> Response {
    let list = match list_query(q) {
        Ok(q) => status::list(&s, q).await,
        Err(p) => Err(p),
    };
    match list {
        Ok(l) => page::list(&l, &fmt_utc(s.clock.now())).into_response(),
        Err(p) => p.page(&s),
    }
}

async fn list_json(State(s): State<HttpState>, q: ListParams) -> Response {
    let list = match list_query(q) {
        Ok(q) => status::list(&s, q).await,
        Err(p) => Err(p),
    };
    match list {
        Ok(l) => axum::Json(json!({
            "page": l.page,
            "next_page": l.next_page,
            "occurrences": l.full,
        }))
        .into_response(),
        Err(p) => p.json(),
    }
}

async fn detail_page(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    match status::detail(&s, &id).await {
        Ok(d) => page::detail(&d, &fmt_utc(s.clock.now())).into_response(),
        Err(p) => p.page(&s),
    }
}

async fn detail_json(State(s): State<HttpState>, Path(id): Path<String>) -> Response {
    match status::detail(&s, &id).await {
        Ok(d) => axum::Json(json!({
            "occurrence": d.occurrence,
            "timeline": d.timeline,
        }))
        .into_response(),
        Err(p) => p.json(),
    }
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

/// How old the database's part of `/readyz` may be before a request asks for a new one (in the
/// background: the request answers with what there is), and how old before a request waits for
/// the new one. One refresh runs at a time, so any number of callers cost the database at most
/// one probe write a second, and a request never writes.
const READY_FRESH: Duration = Duration::from_secs(1);
const READY_STALE: Duration = Duration::from_secs(10);

/// The database's part of the readiness report, as last read.
#[derive(Clone)]
struct DbReport {
    at: tokio::time::Instant,
    error: Option<String>,
    body: serde_json::Map<String, Value>,
}

/// The last [`DbReport`], and the one refresh that may run.
#[derive(Default)]
pub struct ReadyCache {
    latest: std::sync::Mutex<Option<DbReport>>,
    refresh: tokio::sync::Mutex<()>,
}

impl ReadyCache {
    fn latest(&self) -> Option<DbReport> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Read the database's part anew, unless another refresh did while this one waited its turn.
    async fn refresh(&self, s: &HttpState, fresher_than: Duration) -> Option<DbReport> {
        let _turn = self.refresh.lock().await;
        if let Some(r) = self.latest().filter(|r| r.at.elapsed() < fresher_than) {
            return Some(r);
        }
        let report = database_report(s).await;
        if let Ok(mut l) = self.latest.lock() {
            *l = Some(report.clone());
        }
        Some(report)
    }
}

/// What `/readyz` says of the database: the probe write, and the counts it reads.
async fn database_report(s: &HttpState) -> DbReport {
    let probe = tokio::time::timeout(Duration::from_secs(2), s.store.probe_writable()).await;
    let error = match probe {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the database did not answer within 2 s".into()),
    };
    // The rest is best effort: a broken database must not break the report.
    let timeout = Duration::from_secs(1);
    let policies = tokio::time::timeout(timeout, s.store.enabled_policy_count())
        .await
        .ok()
        .and_then(Result::ok);
    let next_due = tokio::time::timeout(timeout, s.store.next_due_at())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let counts = tokio::time::timeout(timeout, s.store.live_counts())
        .await
        .ok()
        .and_then(Result::ok);
    let last_success = tokio::time::timeout(timeout, s.store.last_success_at())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let now = s.clock.now();
    let alerts = tokio::time::timeout(timeout, s.store.alerts_pending())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|a| {
            json!({
                "pending": a.pending,
                "oldest_pending_at": a.oldest_created_at.map(fmt_utc),
                "oldest_pending_age_ms": a.oldest_created_at.map(|t| (now - t).num_milliseconds().max(0)),
            })
        });
    let instances = tokio::time::timeout(
        timeout,
        s.store
            .instances(crate::domain::time::sub(now, Duration::from_secs(24 * 3600)).unwrap_or(now)),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|rows| {
        rows.iter()
            .filter(|i| i.liveness(now) == Liveness::Live)
            .map(|i| {
                json!({
                    "instance": i.instance,
                    "version": i.version,
                    "started_at": fmt_utc(i.started_at),
                    "seen_at": fmt_utc(i.seen_at),
                    "attempts_in_flight": i.attempts,
                    "checks_in_flight": i.checks,
                })
            })
            .collect::<Vec<_>>()
    });
    let mut occurrences = serde_json::Map::new();
    for st in OccurrenceState::LIVE {
        occurrences.insert(st.to_string(), json!(0));
    }
    for (st, n) in counts.unwrap_or_default() {
        occurrences.insert(st.to_string(), json!(n));
    }
    let body = json!({
        "instances": instances,
        "policies": policies,
        "next_due_at": next_due.map(fmt_utc),
        "occurrences": occurrences,
        "last_success_at": last_success.map(fmt_utc),
        "alerts": alerts,
    });
    DbReport {
        at: tokio::time::Instant::now(),
        error,
        body: match body {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
    }
}

/// The readiness report and whether it is ready: the database's part as [`ReadyCache`] keeps
/// it, the rest (the loop's heartbeat, the token, the quota, the last reload) as it is now.
pub async fn readiness(s: &HttpState) -> (bool, Value) {
    let cached = s.ready.latest();
    let db = match cached {
        Some(r) if r.at.elapsed() < READY_FRESH => Some(r),
        Some(r) if r.at.elapsed() < READY_STALE => {
            // Only when no refresh is under way: a loop of callers starts one, not one each.
            let idle = s.ready.refresh.try_lock().is_ok();
            if idle {
                let (cache, state) = (s.ready.clone(), s.clone());
                tokio::spawn(async move { cache.refresh(&state, READY_FRESH).await });
            }
            Some(r)
        }
        _ => s.ready.refresh(s, READY_FRESH).await,
    };
    let db = db.unwrap_or_else(|| DbReport {
        at: tokio::time::Instant::now(),
        error: Some("not read yet".into()),
        body: serde_json::Map::new(),
    });
    let db_error = db
        .error
        .clone()
        .or_else(|| s.health.db_error().filter(|_| !s.health.db_ok()));
    let stuck = s.health.loop_stuck();
    let (stream_ok, stream) = s.stream.report(s.clock.now());
    let ready = db_error.is_none() && !stuck && stream_ok;
    let token = match &*s.token.borrow() {
        TokenStatus::Valid { expires_at } => {
            json!({"valid": true, "expires_at": fmt_utc(*expires_at)})
        }
        TokenStatus::Error { code } => json!({"valid": false, "last_error": code}),
        TokenStatus::None => json!({"valid": false}),
    };
    let mut body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "instance": crate::instance::this(),
        "engine": s.store.engine().as_str(),
        "database": if db_error.is_none() { "ok" } else { "error" },
        "database_error": db_error,
        "database_read_ms_ago": db.at.elapsed().as_millis() as u64,
        "scheduler": {
            "heartbeat_age_ms": s.health.heartbeat_age().as_millis() as u64,
            "stuck": stuck,
        },
        "token": token,
        "stream": stream,
        "last_reload_error": s.health.reload_error(),
        "quota": s.quota.view().map(|v| json!({
            "month": v.month.label,
            "used": v.used,
            "limit": v.limit,
            "forecast": v.forecast,
            "optional_calls_stopped": s.quota.optional_stopped(),
            "events_used": v.events,
            "event_limit": v.event_limit,
        })),
    });
    if let Value::Object(m) = &mut body {
        m.extend(db.body);
    }
    (ready, body)
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let (ready, body) = readiness(&s).await;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(s): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.render(),
    )
        .into_response()
}
