//! The monthly quota (`docs/quota.md`): this month's use from `api_usage`, the forecast to the
//! month's end from the policies' schedules, the budget that stops optional calls, and the
//! once-a-month `quota` alerts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::planner::firings_between;
use crate::clock::SharedClock;
use crate::config::Quota;
use crate::dingtalk::DingTalkClient;
use crate::domain::alert::Facts;
use crate::domain::quota::{Api, Calls, Month, Observed, firing_cost, month_of, token_fetches};
use crate::domain::schedule::CronCache;
use crate::domain::{AlertEvent, Policy};
use crate::metrics::Metrics;
use crate::store::Store;

/// How many firings of one policy a forecast looks at: a policy that fires every minute has
/// 44,640 in a month.
const MAX_FIRINGS: usize = 50_000;

/// What the month looks like: used, forecast, limit.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaView {
    pub month: Month,
    /// 0: unlimited.
    pub limit: u32,
    pub by_api: BTreeMap<Api, u64>,
    pub used: u64,
    /// Used plus what the planned firings until the month's end are expected to cost.
    pub forecast: u64,
    /// Events DingTalk pushed this month, and their own limit (0: unlimited).
    pub events: u64,
    pub event_limit: u32,
}

impl QuotaView {
    fn ratio(&self, n: u64) -> f64 {
        if self.limit == 0 {
            0.0
        } else {
            n as f64 / f64::from(self.limit)
        }
    }

    pub fn used_ratio(&self) -> f64 {
        self.ratio(self.used)
    }

    pub fn forecast_ratio(&self) -> f64 {
        self.ratio(self.forecast)
    }

    /// Events used, as a share of their limit (0 without one).
    pub fn events_ratio(&self) -> f64 {
        if self.event_limit == 0 {
            0.0
        } else {
            self.events as f64 / f64::from(self.event_limit)
        }
    }

    /// `dingrec quota --format json`'s object.
    pub fn to_json(&self) -> serde_json::Value {
        let by_api: serde_json::Map<String, serde_json::Value> = Api::ALL
            .iter()
            .map(|a| {
                (
                    a.as_str().to_owned(),
                    json!(self.by_api.get(a).copied().unwrap_or(0)),
                )
            })
            .collect();
        json!({
            "month": self.month.label,
            "limit": self.limit,
            "used": self.used,
            "by_api": by_api,
            "forecast": self.forecast,
            "forecast_ratio": (self.forecast_ratio() * 1000.0).round() / 1000.0,
            "events": {"used": self.events, "limit": self.event_limit},
        })
    }
}

/// A forecast summed policy by policy: the planned calls, and the distinct instants they are
/// due at (for the token fetches they need; a thousand policies due at 09:00 are one instant).
#[derive(Default)]
pub struct Forecast {
    calls: f64,
    dues: std::collections::BTreeSet<DateTime<Utc>>,
    cache: CronCache,
}

impl Forecast {
    /// Add what `p` is expected to cost from `from` to `until`: each firing (as `dingrec next`
    /// computes them) at [`firing_cost`].
    pub fn add(&mut self, p: &Policy, from: DateTime<Utc>, until: DateTime<Utc>, observed: &Observed) {
        if !p.enabled {
            return;
        }
        let cost = firing_cost(p, observed.retry_rate());
        for f in firings_between(p, from, until, MAX_FIRINGS, &mut self.cache) {
            if f.due_at > from && f.due_at < until {
                self.calls += cost;
                self.dues.insert(f.due_at);
            }
        }
    }

    /// The planned calls plus the token fetches they need.
    pub fn total(&self, token_life: Duration) -> u64 {
        let dues: Vec<DateTime<Utc>> = self.dues.iter().copied().collect();
        self.calls.round() as u64 + token_fetches(&dues, token_life)
    }
}

/// The calls `policies` are expected to cost from `from` to `until` ([`Forecast`]).
pub fn planned_cost(
    policies: &[Policy],
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    observed: &Observed,
    token_life: Duration,
) -> u64 {
    let mut forecast = Forecast::default();
    for p in policies {
        forecast.add(p, from, until, observed);
    }
    forecast.total(token_life)
}

/// How many policies the forecast reads and sums at a time.
const FORECAST_PAGE: i64 = 1_000;

/// The calls the database's enabled policies are expected to cost from `from` to `until`, read
/// a page at a time and summed on a blocking thread: the forecast never holds every policy
/// (100,000 decoded at once were 400 MB), and the daemon's calls never wait behind a month of
/// firings.
pub async fn stored_planned_cost(
    store: &Store,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    observed: Observed,
    token_life: Duration,
) -> crate::store::Result<u64> {
    let mut forecast = Forecast::default();
    let mut after = 0;
    loop {
        let page = store.enabled_policies_after(after, FORECAST_PAGE).await?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        forecast = tokio::task::spawn_blocking(move || {
            // A row that cannot be read is left out: the planner reports it.
            for p in page.iter().filter_map(|p| p.record.to_policy().ok()) {
                forecast.add(&p, from, until, &observed);
            }
            forecast
        })
        .await
        .map_err(|e| crate::store::StoreError::Data(format!("the forecast failed: {e}")))?;
    }
    Ok(forecast.total(token_life))
}

/// How long a token serves: DingTalk's 2 h less the refresh margin.
pub fn token_life(margin: Duration) -> Duration {
    Duration::from_secs(7200)
        .saturating_sub(margin)
        .max(Duration::from_secs(60))
}

/// This month's view at `now`: used from the database and, with `forecast`, the forecast from
/// the enabled policies ([`stored_planned_cost`]); without it, the forecast is the use alone.
pub async fn view(
    store: &Store,
    forecast: bool,
    quota: &Quota,
    token_life: Duration,
    now: DateTime<Utc>,
) -> crate::store::Result<QuotaView> {
    let month = month_of(now, quota.timezone)
        .ok_or_else(|| crate::store::StoreError::Data("the quota's month is outside the calendar".into()))?;
    let usage = store.usage(&month, forecast).await?;
    let used = usage.used();
    let planned = if forecast {
        stored_planned_cost(store, now, month.end, usage.observed, token_life).await?
    } else {
        0
    };
    let forecast = used + planned;
    Ok(QuotaView {
        month,
        limit: quota.limit,
        by_api: usage.by_api,
        used,
        forecast,
        events: usage.events,
        event_limit: quota.event_limit,
    })
}

/// The enabled policies of the database, as the forecast needs them (a row that cannot be read
/// is left out: the planner reports it).
pub async fn stored_policies(store: &Store) -> crate::store::Result<Vec<Policy>> {
    Ok(store
        .list_policies()
        .await?
        .iter()
        .filter(|p| p.record.enabled)
        .filter_map(|p| p.record.to_policy().ok())
        .collect())
}

/// The quota as the daemon's tasks see it.
#[derive(Debug, Default)]
pub struct QuotaState {
    /// Above `1 - quota_reserve` of the quota: watch checks and video look-ups are not made.
    optional_stopped: AtomicBool,
    view: std::sync::Mutex<Option<QuotaView>>,
}

impl QuotaState {
    pub fn optional_stopped(&self) -> bool {
        self.optional_stopped.load(Ordering::SeqCst)
    }

    /// The latest view (`None` before the first).
    pub fn view(&self) -> Option<QuotaView> {
        self.view.lock().ok().and_then(|v| v.clone())
    }
}

/// The use is read (and token fetches written) after this daemon's writes commit, at most every
/// `POLL`, and at least every `IDLE` (calls of other daemons on PostgreSQL). The forecast is made
/// again after an apply or reload of this daemon, when the enabled policies changed (looked at
/// every [`FORECAST_EVERY`]: `dingrec apply` of another process), and at least every [`DRIFT`]
/// (the retry rate it observes moves slowly). Between forecasts the forecast stands: the planned
/// calls move from "planned" to "used" (see `round`).
const POLL: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(60);
const FORECAST_EVERY: Duration = Duration::from_secs(300);
const DRIFT: Duration = Duration::from_secs(6 * 3600);
/// How soon a forecast that failed is made again.
const FORECAST_RETRY: Duration = Duration::from_secs(30);

/// The daemon's quota task.
pub struct QuotaWatch {
    pub store: Store,
    pub client: Arc<DingTalkClient>,
    pub metrics: Arc<Metrics>,
    pub clock: SharedClock,
    pub quota: Quota,
    pub token_life: Duration,
    pub state: Arc<QuotaState>,
    /// Woken by an apply or reload: the forecast is made again.
    pub replan: Arc<tokio::sync::Notify>,
    /// What was said this month already (`quota_events`, read through): no write every poll.
    pub said: std::sync::Mutex<std::collections::BTreeSet<(String, &'static str)>>,
}

impl QuotaWatch {
    /// Until `cancel`; an error (the database failed for good) ends the daemon.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> Result<(), String> {
        let mut forecast_at: Option<tokio::time::Instant> = None;
        let mut looked_at: Option<tokio::time::Instant> = None;
        let mut fingerprint: Option<String> = None;
        let mut last_forecast = 0;
        let mut commits = self.store.commits();
        loop {
            let started = tokio::time::Instant::now();
            let mut replan = forecast_at.is_none_or(|t| t.elapsed() >= DRIFT);
            if !replan && looked_at.is_none_or(|t| t.elapsed() >= FORECAST_EVERY) {
                looked_at = Some(started);
                match self.store.policies_fingerprint().await {
                    Ok(now) => replan = fingerprint.as_ref() != Some(&now),
                    Err(e) => {
                        warn!(error = %e, "quota: cannot tell whether the policies changed; making the forecast again")
                    }
                }
                replan |= fingerprint.is_none();
            }
            if replan {
                // Read before the forecast: a change while it runs is seen at the next look.
                fingerprint = self.store.policies_fingerprint().await.ok();
                looked_at = Some(started);
            }
            let result = self.round(replan, &mut last_forecast).await;
            if replan {
                // A failed forecast is made again after FORECAST_RETRY, not at every poll (a full
                // disk fails the budget's writes while the forecast's reads go on).
                let now = tokio::time::Instant::now();
                forecast_at = Some(match result {
                    Ok(()) => now,
                    Err(_) => now.checked_sub(DRIFT - FORECAST_RETRY).unwrap_or(now),
                });
            }
            if let Err(e) = result {
                warn!(error = %e, "quota: cannot read or write this month's use or the forecast; trying again");
            }
            // At most one round per POLL; then a commit of this daemon, an apply, the next look
            // at the policies, or IDLE.
            let until_look = looked_at.map_or(Duration::ZERO, |t| FORECAST_EVERY.saturating_sub(t.elapsed()));
            let idle = self.clock.idle_wake(IDLE).min(until_look.max(POLL));
            let replanned = tokio::select! {
                () = cancel.cancelled() => {
                    let _ = self.flush_tokens().await;
                    return Ok(());
                }
                () = tokio::time::sleep_until(started + POLL) => false,
                () = self.replan.notified() => true,
            };
            if replanned {
                // An apply or reload: the forecast at once.
                forecast_at = None;
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    // Token fetches counted since the last round are written before the end.
                    let _ = self.flush_tokens().await;
                    return Ok(());
                }
                () = tokio::time::sleep_until(started + idle) => {}
                Ok(()) = commits.changed() => {}
                () = self.replan.notified() => forecast_at = None,
            }
        }
    }

    /// Say `event` once in `month`: `true` the first time (across restarts).
    async fn once(
        &self,
        month: &Month,
        event: &'static str,
        now: DateTime<Utc>,
    ) -> crate::store::Result<bool> {
        let key = (month.label.clone(), event);
        if self.said.lock().is_ok_and(|s| s.contains(&key)) {
            return Ok(false);
        }
        let first = self.store.quota_event_once(month, event, now).await?;
        if let Ok(mut s) = self.said.lock() {
            s.insert(key);
        }
        Ok(first)
    }

    /// Whether `event` was said in `month` (as far as this process knows).
    fn said(&self, month: &Month, event: &'static str) -> bool {
        self.said
            .lock()
            .is_ok_and(|s| s.contains(&(month.label.clone(), event)))
    }

    async fn flush_tokens(&self) -> crate::store::Result<()> {
        let n = self.client.take_token_calls();
        if n == 0 {
            return Ok(());
        }
        let mut calls = Calls::default();
        calls.add(Api::Token, n);
        let r = self.store.add_usage(&calls, self.clock.now()).await;
        if r.is_err() {
            // Counted next round.
            self.client.untake_token_calls(n);
        }
        r
    }

    async fn round(&self, replan: bool, last_forecast: &mut u64) -> crate::store::Result<()> {
        self.flush_tokens().await?;
        let now = self.clock.now();
        let same_month = self
            .state
            .view()
            .is_some_and(|p| month_of(now, self.quota.timezone).is_some_and(|m| m == p.month));
        let full = replan || !same_month;
        let mut v = view(&self.store, full, &self.quota, self.token_life, now).await?;
        if full {
            *last_forecast = v.forecast;
        } else {
            // Between forecasts the planned calls move from "planned" to "used": the forecast
            // stands, unless more was used than it planned.
            v.forecast = (*last_forecast).max(v.used);
        }
        self.metrics.quota(v.used_ratio(), v.forecast_ratio());
        // The view first: whoever sees the budget's decision (`/readyz`) sees the use behind it.
        if let Ok(mut slot) = self.state.view.lock() {
            *slot = Some(v.clone());
        }
        // The events' quota is its own: said even with the calls' budget off.
        self.event_budget(&v, now).await?;
        self.budget(&v, now).await
    }

    /// The budget and the once-a-month alerts.
    async fn budget(&self, v: &QuotaView, now: DateTime<Utc>) -> crate::store::Result<()> {
        if v.limit == 0 {
            self.state.optional_stopped.store(false, Ordering::SeqCst);
            return Ok(());
        }
        let limit = f64::from(v.limit);
        let over_reserve = v.used as f64 >= limit * (1.0 - self.quota.reserve);
        let was = self.state.optional_stopped.swap(over_reserve, Ordering::SeqCst);
        if over_reserve && !was && self.once(&v.month, "reserve", now).await? {
            warn!(
                used = v.used,
                limit = v.limit,
                reserve = self.quota.reserve,
                "DingTalk's monthly quota is nearly spent: watch checks and video look-ups stop until the month ends; starts and start checks go on"
            );
        }
        let pct = |r: f64| (r * 100.0).round();
        if v.forecast_ratio() >= 0.8 && self.once(&v.month, "forecast_80", now).await? {
            self.alert(
                v,
                now,
                format!(
                    "the forecast for {} is {} of the {} DingTalk API calls a month ({} %): {} used so far. Look at `dingrec quota` and the policies' retries and watch intervals",
                    v.month.label,
                    v.forecast,
                    v.limit,
                    pct(v.forecast_ratio()),
                    v.used
                ),
            )
            .await?;
        }
        if v.used_ratio() >= 0.9 && self.once(&v.month, "used_90", now).await? {
            self.alert(
                v,
                now,
                format!(
                    "{} of the {} DingTalk API calls of {} are used ({} %): watch checks and video look-ups stop above {} %; at the limit every call, starts included, is refused until the month ends",
                    v.used,
                    v.limit,
                    v.month.label,
                    pct(v.used_ratio()),
                    pct(1.0 - self.quota.reserve)
                ),
            )
            .await?;
        }
        if self.said(&v.month, "exhausted") {
            return Ok(());
        }
        let refused = self.store.refused_for_quota(&v.month).await?;
        if refused > 0 && self.once(&v.month, "exhausted", now).await? {
            self.alert(
                v,
                now,
                format!(
                    "DingTalk refuses every call until {} ends (Forbidden.AccessDenied.ApiCountLimitForOrg): the organisation's monthly API quota is spent. Recordings cannot start; {refused} attempt(s) refused so far. Start them by hand, or raise the organisation's quota",
                    v.month.label
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// The events' own quota: an alert at 80 % and at 90 % used, each once a month. DingTalk
    /// stops pushing past the limit; the catch-up on reconnect still finds meetings in progress.
    async fn event_budget(&self, v: &QuotaView, now: DateTime<Utc>) -> crate::store::Result<()> {
        if v.event_limit == 0 {
            return Ok(());
        }
        for (share, said) in [(0.9, "events_90"), (0.8, "events_80")] {
            if v.events_ratio() < share {
                continue;
            }
            if self.once(&v.month, said, now).await? {
                self.alert(
                    v,
                    now,
                    format!(
                        "{} of the {} DingTalk events of {} are used ({} %): past the limit DingTalk pushes no more meeting events this month, and meetings nobody declared are found only by the catch-up when the Stream connection reconnects. Look at `dingrec events` and the app's other event subscriptions",
                        v.events,
                        v.event_limit,
                        v.month.label,
                        (v.events_ratio() * 100.0).round()
                    ),
                )
                .await?;
            }
            // 90 % said: 80 % need not be said too.
            break;
        }
        Ok(())
    }

    async fn alert(&self, v: &QuotaView, now: DateTime<Utc>, text: String) -> crate::store::Result<()> {
        error!(month = %v.month.label, used = v.used, forecast = v.forecast, limit = v.limit, "{text}");
        let facts = Facts {
            text: Some(text),
            ..Facts::default()
        };
        self.store
            .raise_alert(AlertEvent::Quota, None, &facts, now)
            .await?;
        Ok(())
    }
}
