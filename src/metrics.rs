//! Prometheus metrics (`docs/operations.md`), recorded through handles on one recorder that the app owns
//! (no global recorder, so several apps in one test process stay apart). Histograms have explicit
//! buckets. Meeting ids, union ids and messages never become labels.

use std::sync::Arc;

use metrics::{Key, Label, Metadata, Recorder as _};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::domain::{AttemptOutcome, CheckKind, CheckOutcome, OccurrenceState};

pub const ATTEMPTS_TOTAL: &str = "dingrec_attempts_total";
pub const OCCURRENCES_TOTAL: &str = "dingrec_occurrences_total";
pub const FIRE_LATENESS: &str = "dingrec_fire_lateness_seconds";
pub const REQUEST_DURATION: &str = "dingrec_dingtalk_request_duration_seconds";
pub const POLICIES_ENABLED: &str = "dingrec_policies_enabled";
pub const NEXT_DUE: &str = "dingrec_next_due_timestamp_seconds";
pub const TOKEN_REFRESHES: &str = "dingrec_token_refreshes_total";
pub const LAST_SUCCESS: &str = "dingrec_last_success_timestamp_seconds";
pub const RELOADS_TOTAL: &str = "dingrec_reloads_total";
pub const BUILD_INFO: &str = "dingrec_build_info";
pub const CHECKS_TOTAL: &str = "dingrec_checks_total";
pub const ALERTS_TOTAL: &str = "dingrec_alerts_total";
pub const ALERTS_PENDING: &str = "dingrec_alerts_pending";
pub const DINGTALK_CALLS: &str = "dingrec_dingtalk_calls_total";
pub const QUOTA_USED: &str = "dingrec_quota_used_ratio";
pub const QUOTA_FORECAST: &str = "dingrec_quota_forecast_ratio";
pub const STREAM_CONNECTED: &str = "dingrec_stream_connected";
pub const STREAM_EVENTS: &str = "dingrec_stream_events_total";
pub const STREAM_RECONNECTS: &str = "dingrec_stream_reconnects_total";

const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The app's metrics.
pub struct Metrics {
    recorder: PrometheusRecorder,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

static META: std::sync::LazyLock<Metadata<'static>> =
    std::sync::LazyLock::new(|| Metadata::new(module_path!(), metrics::Level::INFO, None));

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    Key::from_parts(
        name,
        labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect::<Vec<_>>(),
    )
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(FIRE_LATENESS.into()),
                LATENESS_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(REQUEST_DURATION.into()),
                    DURATION_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let m = Arc::new(Self {
            recorder: builder.build_recorder(),
        });
        m.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
        for result in ["ok", "error"] {
            m.recorder
                .register_counter(&key(RELOADS_TOTAL, &[("result", result)]), &META)
                .absolute(0);
            m.recorder
                .register_counter(&key(TOKEN_REFRESHES, &[("result", result)]), &META)
                .absolute(0);
        }
        // Present from the start, so that an alert rule on a rate sees the first one.
        for s in OccurrenceState::ALL
            .iter()
            .filter(|s| **s == OccurrenceState::Succeeded || s.is_final_failure())
        {
            m.recorder
                .register_counter(&key(OCCURRENCES_TOTAL, &[("state", s.as_str())]), &META)
                .absolute(0);
        }
        m
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        self.recorder.register_gauge(&key(name, labels), &META).set(v);
    }

    fn count(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.recorder
            .register_counter(&key(name, labels), &META)
            .increment(1);
    }

    /// A check of a recording and what it found.
    pub fn check(&self, kind: CheckKind, outcome: CheckOutcome) {
        self.count(
            CHECKS_TOTAL,
            &[("kind", kind.as_str()), ("outcome", outcome.as_str())],
        );
    }

    /// Alerts to `destination` that were sent, will be tried again, or failed for good.
    pub fn alerts(&self, destination: &str, result: &str, n: usize) {
        self.recorder
            .register_counter(
                &key(ALERTS_TOTAL, &[("destination", destination), ("result", result)]),
                &META,
            )
            .increment(n as u64);
    }

    /// Alerts not delivered yet.
    pub fn alerts_pending(&self, n: i64) {
        self.gauge(ALERTS_PENDING, &[], n as f64);
    }

    pub fn attempt(&self, outcome: AttemptOutcome, code: &str) {
        let code = crate::domain::outcome::metric_code(code);
        self.count(ATTEMPTS_TOTAL, &[("outcome", outcome.as_str()), ("code", code)]);
    }

    /// An occurrence reached `state`.
    pub fn occurrence(&self, state: OccurrenceState) {
        self.count(OCCURRENCES_TOTAL, &[("state", state.as_str())]);
    }

    pub fn fire_lateness(&self, seconds: f64) {
        self.recorder
            .register_histogram(&key(FIRE_LATENESS, &[]), &META)
            .record(seconds.max(0.0));
    }

    pub fn request_duration(&self, seconds: f64) {
        self.recorder
            .register_histogram(&key(REQUEST_DURATION, &[]), &META)
            .record(seconds);
    }

    pub fn policies_enabled(&self, n: i64) {
        self.gauge(POLICIES_ENABLED, &[], n as f64);
    }

    pub fn next_due(&self, unix_seconds: Option<f64>) {
        self.gauge(NEXT_DUE, &[], unix_seconds.unwrap_or(0.0));
    }

    pub fn last_success(&self, unix_seconds: f64) {
        self.gauge(LAST_SUCCESS, &[], unix_seconds);
    }

    /// A call DingTalk counts against the monthly quota.
    pub fn dingtalk_call(&self, api: crate::domain::quota::Api) {
        self.count(DINGTALK_CALLS, &[("api", api.as_str())]);
    }

    /// The month's quota: used and forecast, as shares of the limit (0 without a limit).
    pub fn quota(&self, used: f64, forecast: f64) {
        self.gauge(QUOTA_USED, &[], used);
        self.gauge(QUOTA_FORECAST, &[], forecast);
    }

    /// Stream mode: connected or not, and the connections opened after the first.
    pub fn stream(&self, connected: bool, reconnects: u64) {
        self.gauge(STREAM_CONNECTED, &[], if connected { 1.0 } else { 0.0 });
        self.recorder
            .register_counter(&key(STREAM_RECONNECTS, &[]), &META)
            .absolute(reconnects);
    }

    /// An event received and what came of it. `event_type` is one of a fixed few (the caller
    /// names any other `other`: a label never grows with outside input).
    pub fn stream_event(&self, event_type: &'static str, outcome: &str) {
        self.count(STREAM_EVENTS, &[("event_type", event_type), ("outcome", outcome)]);
    }

    pub fn token_refresh(&self, ok: bool) {
        self.count(TOKEN_REFRESHES, &[("result", if ok { "ok" } else { "error" })]);
    }

    pub fn reload(&self, ok: bool) {
        self.count(RELOADS_TOTAL, &[("result", if ok { "ok" } else { "error" })]);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let handle = self.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}
