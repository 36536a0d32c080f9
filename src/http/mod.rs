//! `/healthz`, `/readyz` and `/metrics` (`docs/operations.md`). Liveness never depends on DingTalk or the
//! database; readiness is true (503 when the database cannot be written or the scheduler loop is
//! stuck). Requests here are not logged.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::dingtalk::token::TokenStatus;
use crate::domain::OccurrenceState;
use crate::domain::time::fmt_utc;
use crate::metrics::Metrics;
use crate::scheduler::health::Health;
use crate::store::Store;
use crate::store::leases::Liveness;

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
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, axum::Json(json!({"status": "ok"})))
}

/// The readiness report and whether it is ready.
pub async fn readiness(s: &HttpState) -> (bool, Value) {
    let probe = tokio::time::timeout(Duration::from_secs(2), s.store.probe_writable()).await;
    let db_error = match probe {
        Ok(Ok(())) => s.health.db_error().filter(|_| !s.health.db_ok()),
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("the database did not answer within 2 s".into()),
    };
    let stuck = s.health.loop_stuck();
    let ready = db_error.is_none() && !stuck;
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
    let alerts = tokio::time::timeout(timeout, s.store.alerts_pending())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|a| {
            let now = s.clock.now();
            json!({
                "pending": a.pending,
                "oldest_pending_at": a.oldest_created_at.map(fmt_utc),
                "oldest_pending_age_ms": a.oldest_created_at.map(|t| (now - t).num_milliseconds().max(0)),
            })
        });
    let now = s.clock.now();
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
    let token = match &*s.token.borrow() {
        TokenStatus::Valid { expires_at } => {
            json!({"valid": true, "expires_at": fmt_utc(*expires_at)})
        }
        TokenStatus::Error { code } => json!({"valid": false, "last_error": code}),
        TokenStatus::None => json!({"valid": false}),
    };
    let body = json!({
        "status": if ready { "ok" } else { "unavailable" },
        "instance": crate::instance::this(),
        "engine": s.store.engine().as_str(),
        "instances": instances,
        "database": if db_error.is_none() { "ok" } else { "error" },
        "database_error": db_error,
        "scheduler": {
            "heartbeat_age_ms": s.health.heartbeat_age().as_millis() as u64,
            "stuck": stuck,
        },
        "token": token,
        "policies": policies,
        "next_due_at": next_due.map(fmt_utc),
        "occurrences": occurrences,
        "last_success_at": last_success.map(fmt_utc),
        "last_reload_error": s.health.reload_error(),
        "alerts": alerts,
        "quota": s.quota.view().map(|v| json!({
            "month": v.month.label,
            "used": v.used,
            "limit": v.limit,
            "forecast": v.forecast,
            "optional_calls_stopped": s.quota.optional_stopped(),
        })),
    });
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
