//! The daemon's alert sender: delivers the outbox's pending rows, a robot's several alerts as one
//! message within its 20 a minute, with backoff for up to 24 hours; raises `auth_broken` when
//! DingTalk refuses the credentials.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::deliver::{self, Delivery};
use crate::clock::SharedClock;
use crate::config::{AlertSettings, Destination, DestinationType};
use crate::dingtalk::token::TokenStatus;
use crate::domain::alert::Facts;
use crate::domain::{AlertEvent, AlertState};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::{AlertEnd, AlertRow, GIVE_UP_AFTER};

/// The sender looks for due alerts after a write of this daemon commits (alerts are written by the
/// transactions that make occurrences final), at most every `POLL`; while alerts wait for a retry,
/// at least every `IDLE_POLL`; with none waiting, at least every `NOTHING_PENDING` (alerts written
/// by other processes: other daemons on PostgreSQL).
pub const POLL: Duration = Duration::from_millis(500);
pub const IDLE_POLL: Duration = Duration::from_secs(2);
pub const NOTHING_PENDING: Duration = Duration::from_secs(60);
/// A robot takes 20 messages a minute (docs/dingtalk.md); over it, it is muted for 10 minutes.
pub const ROBOT_PER_MINUTE: usize = 20;
/// The minute, stretched by a second against clock and network jitter.
const ROBOT_WINDOW: TimeDelta = TimeDelta::seconds(61);
/// Most alerts in one robot message (a phone screen's worth, far below DingTalk's 20,000
/// characters).
pub const MAX_PER_MESSAGE: usize = 25;
/// First retry after 10 s, doubling, at most 10 min apart.
const FIRST_RETRY: TimeDelta = TimeDelta::seconds(10);
const MAX_RETRY: TimeDelta = TimeDelta::minutes(10);
/// After `410100`, a robot is left alone for the 10 minutes DingTalk mutes it.
const SLOW_DOWN: TimeDelta = TimeDelta::minutes(10);

/// `dingrec_alerts_total`'s result for a send that will be tried again (beside `sent` and
/// `failed`, the alert states).
const RETRIED: &str = "retried";

/// The token codes that mean the credentials are wrong (not a network problem).
const AUTH_CODES: &[&str] = &["invalidClientIdOrSecret", "invalidSuiteKey", "invalidSuiteTicket"];

/// What the sender keeps of one destination between rounds.
#[derive(Default)]
struct DestState {
    /// A robot's messages of the last minute (it takes 20).
    sent: VecDeque<DateTime<Utc>>,
    /// Left alone until then: a robot that said "too fast", a destination that did not answer.
    paused_until: Option<DateTime<Utc>>,
    /// Rounds in a row in which it did not answer (its own backoff).
    unreachable: i64,
}

impl DestState {
    /// Whether one more message may go now (for a robot, within its 20 a minute).
    fn may_send(&mut self, now: DateTime<Utc>, robot: bool) -> bool {
        while self.sent.front().is_some_and(|t| now - *t >= ROBOT_WINDOW) {
            self.sent.pop_front();
        }
        self.paused_until.is_none_or(|p| now >= p) && (!robot || self.sent.len() < ROBOT_PER_MINUTE)
    }
}

/// One round's instant, the database's mark for message names, and the stop.
struct Round<'a> {
    now: DateTime<Utc>,
    prefix: &'a str,
    cancel: &'a CancellationToken,
}

/// What every destination's delivery shares: read-only during a round.
struct Shared {
    store: Store,
    clock: SharedClock,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
}

pub struct Sender {
    shared: Shared,
    /// The database's mark in message names ([`Store::alert_prefix`]), read when it starts.
    prefix: String,
    destinations: BTreeMap<String, Destination>,
    token: watch::Receiver<TokenStatus>,
    states: HashMap<String, DestState>,
}

/// When to try again after `attempts` tries.
pub fn backoff(attempts: i64) -> TimeDelta {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    FIRST_RETRY
        .checked_mul(1 << doublings.min(16))
        .unwrap_or(MAX_RETRY)
        .min(MAX_RETRY)
}

impl Sender {
    pub fn new(
        settings: &AlertSettings,
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        token: watch::Receiver<TokenStatus>,
    ) -> Result<Self, String> {
        Ok(Self {
            shared: Shared {
                store,
                clock,
                http: deliver::http_client()?,
                metrics,
            },
            destinations: settings.destinations.clone(),
            prefix: String::new(),
            token,
            states: HashMap::new(),
        })
    }

    /// Deliver until `cancel`; an error (the database failed) ends the daemon.
    pub async fn run_until_stopped(mut self, cancel: CancellationToken) -> Result<(), String> {
        let mut last_auth: Option<String> = None;
        let mut commits = self.shared.store.commits();
        self.prefix = self
            .shared
            .store
            .alert_prefix()
            .await
            .map_err(|e| format!("alerts: {e}"))?;
        loop {
            let started = tokio::time::Instant::now();
            let status = self.token.borrow_and_update().clone();
            self.auth_broken(&status, &mut last_auth).await?;
            self.round(&cancel).await.map_err(|e| format!("alerts: {e}"))?;
            let stats = self
                .shared
                .store
                .alerts_pending()
                .await
                .map_err(|e| e.to_string())?;
            self.shared.metrics.alerts_pending(stats.pending);
            let idle = if stats.pending == 0 {
                self.shared.clock.idle_wake(NOTHING_PENDING)
            } else {
                IDLE_POLL
            };
            // At most one round per POLL, however many writes commit (a burst commits thousands).
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(started + POLL) => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(started + idle) => {}
                Ok(()) = commits.changed() => {}
                _ = self.token.changed() => {}
            }
        }
    }

    /// Raise `auth_broken` once when the token call starts failing with a credentials code.
    async fn auth_broken(&self, status: &TokenStatus, last: &mut Option<String>) -> Result<(), String> {
        match status {
            TokenStatus::Error { code } if AUTH_CODES.contains(&code.as_str()) => {
                if last.as_deref() == Some(code) {
                    return Ok(());
                }
                *last = Some(code.clone());
                let facts = Facts {
                    last_code: Some(code.clone()),
                    text: Some(format!(
                        "DingTalk refuses the app's credentials ({code}): no recording can start until this is fixed"
                    )),
                    ..Facts::default()
                };
                self.shared
                    .store
                    .raise_alert(AlertEvent::AuthBroken, None, &facts, self.shared.clock.now())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            TokenStatus::Valid { .. } => *last = None,
            _ => {}
        }
        Ok(())
    }

    /// One pass over the due alerts: every destination at once, each in its own order, so that
    /// one that does not answer holds up none of the others.
    async fn round(&mut self, cancel: &CancellationToken) -> crate::store::Result<()> {
        let now = self.shared.clock.now();
        let due = self.shared.store.alerts_due(now, 1000).await?;
        let mut by_dest: BTreeMap<String, Vec<AlertRow>> = BTreeMap::new();
        for row in due {
            by_dest.entry(row.destination.clone()).or_default().push(row);
        }
        let shared = &self.shared;
        let round = Round {
            now,
            prefix: &self.prefix,
            cancel,
        };
        let round = &round;
        let work: Vec<_> = by_dest
            .into_iter()
            .map(|(name, rows)| {
                let dest = self.destinations.get(&name).cloned();
                let mut state = self.states.remove(&name).unwrap_or_default();
                async move {
                    let r = shared.deliver(&name, dest, rows, &mut state, round).await;
                    (name, state, r)
                }
            })
            .collect();
        let mut result = Ok(());
        for (name, state, r) in futures_util::future::join_all(work).await {
            self.states.insert(name, state);
            result = result.and(r);
        }
        result
    }
}

impl Shared {
    /// Deliver one destination's due alerts, batch after batch; stop at the first that finds it
    /// unreachable (its own backoff then keeps it out of the next rounds for a while).
    async fn deliver(
        &self,
        name: &str,
        dest: Option<Destination>,
        rows: Vec<AlertRow>,
        state: &mut DestState,
        round: &Round<'_>,
    ) -> crate::store::Result<()> {
        let (now, prefix, cancel) = (round.now, round.prefix, round.cancel);
        let Some(dest) = dest else {
            let error = format!("destination '{name}' is not in config.yaml's alerts.destinations");
            return self
                .finish(name, &rows, &Delivery::Refused { error }, state)
                .await;
        };
        let (expired, rows): (Vec<AlertRow>, Vec<AlertRow>) = rows.into_iter().partition(|r| {
            crate::domain::time::parse_utc(&r.created_at).is_ok_and(|c| now - c >= GIVE_UP_AFTER)
        });
        for r in &expired {
            let error = format!(
                "not delivered within 24 hours; last error: {}",
                r.last_error.as_deref().unwrap_or("none")
            );
            self.finish(name, std::slice::from_ref(r), &Delivery::Refused { error }, state)
                .await?;
        }
        let robot = dest.kind == DestinationType::DingtalkRobot;
        for (batch, rows) in batches(&dest, rows, prefix) {
            if cancel.is_cancelled() || !state.may_send(now, robot) {
                break;
            }
            let delivery = self.send(&dest, &batch, &rows, state, robot).await?;
            let rows: Vec<AlertRow> = rows
                .iter()
                .map(|r| AlertRow {
                    attempts: r.attempts + 1,
                    ..r.clone()
                })
                .collect();
            self.finish(name, &rows, &delivery, state).await?;
            if matches!(delivery, Delivery::Unreachable { .. }) {
                break;
            }
        }
        Ok(())
    }

    async fn send(
        &self,
        dest: &Destination,
        batch: &str,
        rows: &[AlertRow],
        state: &mut DestState,
        robot: bool,
    ) -> crate::store::Result<Delivery> {
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let alerts = rows
            .iter()
            .map(AlertRow::alert)
            .collect::<crate::store::Result<Vec<_>>>()?;
        // The batch is committed before the call: after a crash the same message goes again.
        self.store.start_alert_send(&ids, batch).await?;
        if robot {
            state.sent.push_back(self.clock.now());
        }
        Ok(deliver::send(&self.http, dest, batch, &alerts).await)
    }

    /// Record how a send ended, log it and count it.
    async fn finish(
        &self,
        name: &str,
        rows: &[AlertRow],
        delivery: &Delivery,
        state: &mut DestState,
    ) -> crate::store::Result<()> {
        let now = self.clock.now();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let policies: Vec<&str> = rows.iter().filter_map(|r| r.policy_name.as_deref()).collect();
        let tries = rows.iter().map(|r| r.attempts).max().unwrap_or(1);
        match delivery {
            Delivery::Delivered => {
                state.unreachable = 0;
                self.store.finish_alert_send(&ids, AlertEnd::Sent, now).await?;
                self.metrics.alerts(name, AlertState::Sent.as_str(), ids.len());
                tracing::info!(destination = name, alerts = ids.len(), policies = ?policies, "alert delivered");
            }
            Delivery::Retry { error, slow_down } => {
                state.unreachable = 0;
                let mut at = now + backoff(tries);
                if *slow_down {
                    state.paused_until = Some(now + SLOW_DOWN);
                    at = at.max(now + SLOW_DOWN);
                }
                self.retry_later(name, &ids, error, at).await?;
            }
            Delivery::Unreachable { error } => {
                state.unreachable += 1;
                let at = now + backoff(tries.max(state.unreachable));
                state.paused_until = Some(now + backoff(state.unreachable));
                self.retry_later(name, &ids, error, at).await?;
            }
            Delivery::Refused { error } => {
                state.unreachable = 0;
                self.store
                    .finish_alert_send(&ids, AlertEnd::Failed { error }, now)
                    .await?;
                self.metrics.alerts(name, AlertState::Failed.as_str(), ids.len());
                tracing::error!(destination = name, alerts = ids.len(), policies = ?policies, error = %error, "alert could not be delivered; given up");
            }
        }
        Ok(())
    }

    async fn retry_later(
        &self,
        name: &str,
        ids: &[i64],
        error: &str,
        at: DateTime<Utc>,
    ) -> crate::store::Result<()> {
        let now = self.clock.now();
        self.store
            .finish_alert_send(ids, AlertEnd::Retry { error, at }, now)
            .await?;
        self.metrics.alerts(name, RETRIED, ids.len());
        tracing::warn!(destination = name, alerts = ids.len(), error = %error, next_try_at = %crate::domain::time::fmt_utc(at), "alert not delivered; will try again");
        Ok(())
    }
}

/// The messages to send to `dest`: alerts already sent together once go together again (same
/// batch, same `msgUuid`); new ones to a robot are grouped up to [`MAX_PER_MESSAGE`], to a
/// webhook one each. A batch is named after the database ([`Store::alert_prefix`]) and its first
/// alert, which belongs to no other.
fn batches(dest: &Destination, rows: Vec<AlertRow>, prefix: &str) -> Vec<(String, Vec<AlertRow>)> {
    let mut out: Vec<(String, Vec<AlertRow>)> = Vec::new();
    let mut fresh: Vec<AlertRow> = Vec::new();
    for r in rows {
        match &r.batch {
            Some(b) => match out.iter_mut().find(|(name, _)| name == b) {
                Some((_, v)) => v.push(r),
                None => out.push((b.clone(), vec![r])),
            },
            None => fresh.push(r),
        }
    }
    let size = match dest.kind {
        DestinationType::DingtalkRobot => MAX_PER_MESSAGE,
        DestinationType::Webhook => 1,
    };
    for chunk in fresh.chunks(size) {
        out.push((format!("dingrec-{prefix}-alert-{}", chunk[0].id), chunk.to_vec()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_ten_seconds_to_ten_minutes() {
        assert_eq!(backoff(1), TimeDelta::seconds(10));
        assert_eq!(backoff(2), TimeDelta::seconds(20));
        assert_eq!(backoff(7), TimeDelta::minutes(10));
        assert_eq!(backoff(1000), TimeDelta::minutes(10));
        assert_eq!(backoff(0), TimeDelta::seconds(10));
    }

    #[test]
    fn a_robot_takes_twenty_messages_a_minute() {
        let t0 = crate::domain::time::parse_utc("2026-12-07T01:00:00Z").expect("t");
        let mut r = DestState::default();
        for i in 0..ROBOT_PER_MINUTE {
            assert!(r.may_send(t0, true), "{i}");
            r.sent.push_back(t0);
        }
        assert!(!r.may_send(t0 + TimeDelta::seconds(60), true));
        assert!(
            r.may_send(t0 + TimeDelta::seconds(60), false),
            "a webhook has no such limit"
        );
        assert!(r.may_send(t0 + ROBOT_WINDOW, true));
    }
}
