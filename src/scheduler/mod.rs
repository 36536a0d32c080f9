//! The scheduler: the planner writes occurrence rows ahead of time; the dispatcher fires them.
//!
//! [`Scheduler::run_until_stopped`] is one loop: it sleeps until the earliest due time (or a
//! wake-up from the writer, or a tick that bounds the sleep, or shutdown), then plans what needs
//! planning, settles what passed its window, and dispatches what is due. It never scans all
//! policies: every question it asks on a tick is an indexed range query.

pub mod auto_record;
pub mod check_first;
pub mod checker;
pub mod dispatcher;
pub mod events;
pub mod health;
pub mod pacing;
pub mod planner;
pub mod quota;
pub mod stream_health;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::checker::CheckRunner;
use self::dispatcher::{Dispatcher, Writer};
use self::health::Health;
use crate::clock::SharedClock;
use crate::domain::OccurrenceState;
use crate::domain::schedule::CronCache;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::store::Store;
use crate::store::{FinalEvent, PolicyPlan};

/// While calls or checks are in flight, the longest the loop sleeps without looking around
/// (leases to renew, sweeps); housekeeping runs at most once per tick.
pub const TICK: Duration = Duration::from_secs(1);

/// With nothing in flight, the longest the loop sleeps: it wakes sooner for the next due start or
/// check, the next planning or sweep ([`Store::housekeeping_marks`]), a commit, an apply or a
/// write of another process to the database (`Store::watch_policies`), and a signal. This bound
/// covers what none of those tells: the wall clock set forward.
pub const IDLE: Duration = Duration::from_secs(60);

/// How long before the next due time the access token is made ready.
pub const TOKEN_AHEAD: Duration = Duration::from_secs(3);

/// How many policies one planning transaction covers.
const PLAN_BATCH: i64 = 1_000;

/// How long before a due instant the loop wakes, to meet it by yielding rather than on a timer.
const DUE_EARLY: Duration = Duration::from_millis(2);

pub struct Scheduler {
    pub dispatcher: Arc<Dispatcher>,
    checker: CheckRunner,
    settings: auto_record::SettingsRunner,
    writer: Option<Writer>,
    store: Store,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    notifier: Notifier,
    horizon: Duration,
    tick: Duration,
    /// When planning or the sweep next has work, as the last housekeeping read it.
    next_mark: Option<chrono::DateTime<chrono::Utc>>,
    cron_cache: CronCache,
    /// Occurrences older than this are pruned daily (`retention.attempts`).
    retention: Option<Duration>,
    /// When this daemon last renewed its leases (real time, the injected clock's time).
    renewed: Option<(tokio::time::Instant, chrono::DateTime<chrono::Utc>)>,
    /// PostgreSQL: when another daemon's first lease runs out (unless renewed).
    next_take_over: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

/// Log a final failure loudly and count it.
pub fn report_final(metrics: &Metrics, ev: &FinalEvent) {
    metrics.occurrence(ev.state);
    error!(
        policy = %ev.policy_name,
        conference_id = ev.conference_id.as_deref().unwrap_or("-"),
        occurrence = ev.occurrence_id,
        state = %ev.state,
        last_code = ev.last_code.as_deref().unwrap_or("-"),
        due_at = %ev.due_at,
        "recording could not be started: occurrence {}",
        ev.state
    );
}

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dispatcher: Arc<Dispatcher>,
        writer: Writer,
        store: Store,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        notifier: Notifier,
        horizon: Duration,
    ) -> Self {
        let tick = notifier.watchdog_interval().map_or(TICK, |w| w.min(TICK));
        Self {
            checker: CheckRunner::new(dispatcher.clone()),
            settings: auto_record::SettingsRunner::new(dispatcher.clone()),
            dispatcher,
            writer: Some(writer),
            store,
            clock,
            metrics,
            health,
            notifier,
            horizon,
            tick,
            next_mark: None,
            cron_cache: CronCache::default(),
            retention: None,
            renewed: None,
            next_take_over: None,
        }
    }

    /// Prune occurrences (and their attempts) older than `keep`, daily.
    pub fn with_retention(mut self, keep: Duration) -> Self {
        self.retention = Some(keep);
        self
    }

    async fn prune(&self) {
        let Some(keep) = self.retention else { return };
        let Some(before) = crate::domain::time::sub(self.clock.now(), keep) else {
            return;
        };
        match self.store.prune_before(before).await {
            Ok(0) => {}
            Ok(n) => {
                info!(occurrences = n, before = %crate::domain::time::fmt_utc(before), "pruned old occurrences")
            }
            Err(e) => warn!(error = %e, "cannot prune old occurrences"),
        }
    }

    /// At start: close interrupted attempts, resume, catch up or mark missed.
    pub async fn recover(&self) -> crate::store::Result<()> {
        let rec = self.store.recover(self.clock.now()).await?;
        self.report_recovery(&rec, "recovered from an earlier stop");
        Ok(())
    }

    fn report_recovery(&self, rec: &crate::store::Recovery, what: &'static str) {
        if rec.interrupted_attempts > 0 || rec.resumed > 0 || rec.caught_up > 0 || rec.interrupted_checks > 0
        {
            warn!(
                interrupted_attempts = rec.interrupted_attempts,
                checked_before_starting_again = rec.settling,
                interrupted_checks = rec.interrupted_checks,
                resumed = rec.resumed,
                caught_up = rec.caught_up,
                "{what}"
            );
        }
        for ev in &rec.finals {
            report_final(&self.metrics, ev);
        }
    }

    /// Write occurrence rows for every policy that needs them. Returns rows written.
    pub async fn plan(&mut self) -> crate::store::Result<u64> {
        let mut written = 0;
        loop {
            let now = self.clock.now();
            let until = crate::domain::time::add(now, self.horizon)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            let candidates = self.store.plan_candidates(until, PLAN_BATCH).await?;
            if candidates.is_empty() {
                break;
            }
            let mut plans: Vec<PolicyPlan> = Vec::with_capacity(candidates.len());
            let mut missed = Vec::new();
            for cand in &candidates {
                match cand.record.to_policy() {
                    Ok(p) => {
                        let out = planner::plan_policy(
                            cand.policy_id,
                            &p,
                            cand.planned_until,
                            now,
                            self.horizon,
                            &mut self.cron_cache,
                        );
                        if out.skipped_backlog > 0 {
                            warn!(
                                policy = %p.name,
                                skipped = out.skipped_backlog,
                                "firings passed while dingrec was down, older than the latest 100 recorded as missed; counted here only"
                            );
                        }
                        for r in out
                            .plan
                            .rows
                            .iter()
                            .filter(|r| r.state == OccurrenceState::Missed)
                        {
                            missed.push(FinalEvent {
                                occurrence_id: 0,
                                policy_name: p.name.to_string(),
                                conference_id: None,
                                state: OccurrenceState::Missed,
                                last_code: None,
                                due_at: crate::domain::time::fmt_utc(r.due_at),
                            });
                        }
                        plans.push(out.plan);
                    }
                    Err(e) => {
                        error!(policy = %cand.record.name, error = %e, "policy in the database is invalid; not planned");
                        plans.push(PolicyPlan {
                            policy_id: cand.policy_id,
                            policy_name: cand.record.name.clone(),
                            rows: Vec::new(),
                            planned_until: planner::far_future(),
                        });
                    }
                }
            }
            let wrote = self.store.write_plans(&plans, now).await?;
            if wrote > 0 {
                self.dispatcher
                    .settings_stale
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            written += wrote;
            for ev in &missed {
                report_final(&self.metrics, ev);
            }
            if (candidates.len() as i64) < PLAN_BATCH {
                break;
            }
        }
        Ok(written)
    }

    /// Planning, the leases of calls in flight, and the sweep of passed windows.
    pub async fn housekeeping(&mut self) -> crate::store::Result<()> {
        self.plan().await?;
        // Every third of the lease, on real time or on the injected clock, whichever moved it
        // first (`lease_until` follows the injected clock: a test's clock that jumps a day
        // renews at the next tick).
        let renew_every = self.store.lease() / 3;
        if self.renewed.is_none_or(|(real, clock)| {
            real.elapsed() >= renew_every
                || (self.clock.now() - clock)
                    .to_std()
                    .is_ok_and(|d| d >= renew_every)
        }) {
            self.store.renew_leases(self.clock.now()).await?;
            self.renewed = Some((tokio::time::Instant::now(), self.clock.now()));
        }
        self.take_over(true).await?;
        for ev in self.store.sweep(self.clock.now()).await? {
            report_final(&self.metrics, &ev);
        }
        let marks = self.store.housekeeping_marks().await?;
        // A policy is planned once its `planned_until` falls inside the horizon.
        let plan = marks.first_planned_until.map(|t| {
            crate::domain::time::sub(t, self.horizon).map_or(chrono::DateTime::<chrono::Utc>::MIN_UTC, |t| {
                t + chrono::TimeDelta::milliseconds(1)
            })
        });
        self.next_mark = plan.into_iter().chain(marks.first_window_end).min();
        Ok(())
    }

    /// The longest the loop may sleep now: a tick while anything is in flight, and always on
    /// PostgreSQL (another daemon's claims carry no notification, and a daemon that dies with
    /// them is taken over as its first lease runs out); otherwise until the next planning or
    /// sweep (never less than a tick: housekeeping runs at most once per tick), the watchdog's
    /// next ping, or [`IDLE`].
    fn longest_sleep(&self, since_watchdog: Duration) -> Duration {
        let busy =
            self.dispatcher.in_flight() > 0 || self.checker.in_flight() > 0 || self.settings.in_flight() > 0;
        if busy || self.store.engine() == crate::config::DatabaseEngine::Postgres {
            return self.tick;
        }
        let mut longest = self.clock.idle_wake(IDLE);
        if let Some(mark) = self.next_mark {
            let until = (mark - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            longest = longest.min(until.max(self.tick));
        }
        if let Some(every) = self.notifier.watchdog_interval() {
            longest = longest.min(every.saturating_sub(since_watchdog).max(self.tick));
        }
        longest
    }

    /// Several daemons on PostgreSQL: take over the calls of one that died as soon as its first
    /// lease runs out (each tick, and at that moment: the loop wakes for it), not up to a tick
    /// later. Under SQLite's lock the start-up recovery did that for all. `every_tick`: look
    /// whatever the time (another daemon may have claimed since the last look).
    async fn take_over(&mut self, every_tick: bool) -> crate::store::Result<()> {
        if self.store.engine() != crate::config::DatabaseEngine::Postgres {
            return Ok(());
        }
        if !every_tick && self.next_take_over.is_none_or(|t| self.clock.now() <= t) {
            return Ok(());
        }
        let rec = self.store.take_over_expired(self.clock.now()).await?;
        self.report_recovery(&rec, "took over the calls of a dingrec whose leases ran out");
        self.next_take_over = self.store.next_foreign_lease_end().await?;
        Ok(())
    }

    async fn refresh_gauges(&self) {
        if let Ok(n) = self.store.enabled_policy_count().await {
            self.metrics.policies_enabled(n);
        }
        if let Ok(t) = self.store.next_due_at().await {
            self.metrics
                .next_due(t.map(|t| t.timestamp_millis() as f64 / 1000.0));
        }
    }

    /// The daemon loop, until `cancel`. Then: stop claiming, let calls in flight finish within
    /// `drain`, flush their outcomes. An error when the loop stopped because the dispatcher
    /// failed (a worker panicked): the daemon must exit non-zero.
    pub async fn run_until_stopped(
        mut self,
        cancel: CancellationToken,
        drain: Duration,
    ) -> Result<(), String> {
        let notify = self.dispatcher.notify.clone();
        let mut last_watchdog = tokio::time::Instant::now();
        let mut last_gauges = tokio::time::Instant::now() - Duration::from_secs(60);
        let mut db_backoff = Duration::from_millis(100);
        let mut last_prune: Option<tokio::time::Instant> = None;
        // Housekeeping (planning, the sweep) once per tick of real time, or sooner when the
        // injected clock moved a tick (the same in production; a test's manual clock).
        let mut last_housekeeping: Option<(tokio::time::Instant, chrono::DateTime<chrono::Utc>)> = None;
        let tick_delta = chrono::TimeDelta::from_std(self.tick).unwrap_or(chrono::TimeDelta::seconds(1));
        // Woken by a notification (a commit, an apply, another process's write) since the last
        // housekeeping: it is owed within a tick, however idle the loop.
        let mut owed = false;
        loop {
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(24 * 3600)) {
                self.prune().await;
                last_prune = Some(tokio::time::Instant::now());
            }
            self.health.beat();
            if let Some(every) = self.notifier.watchdog_interval()
                && last_watchdog.elapsed() >= every
            {
                self.notifier.watchdog();
                last_watchdog = tokio::time::Instant::now();
            }
            if cancel.is_cancelled() || self.dispatcher.fatal().is_some() {
                break;
            }
            // Planning and sweeping once per tick, even in a burst; dispatching every pass.
            let now = self.clock.now();
            let wished = self.health.take_housekeeping_wish();
            let housekeeping_due = wished
                || last_housekeeping.is_none_or(|(real, clock)| {
                    real.elapsed() >= self.tick || now - clock >= tick_delta || now < clock
                });
            let step = if housekeeping_due {
                owed = false;
                last_housekeeping = Some((tokio::time::Instant::now(), now));
                match self.housekeeping().await {
                    Ok(()) => self.dispatcher.dispatch_due().await,
                    Err(e) => Err(e),
                }
            } else {
                match self.take_over(false).await {
                    Ok(()) => self.dispatcher.dispatch_due().await,
                    Err(e) => Err(e),
                }
            };
            if let Err(why) = self.checker.reap().and_then(|()| self.settings.reap()) {
                error!(error = %why, "stopping: a check failed inside dingrec");
                self.dispatcher.set_fatal(why);
                break;
            }
            // Checks only when no start is due or queued: starts go first.
            let step = match step {
                Ok(0) => self.checker.run_due().await.map(|_| 0),
                other => other,
            };
            // The auto-record settings (docs/auto-record.md): calls of their own, in tasks beside
            // the starts; a read that failed is tried at the next pass.
            if step.is_ok()
                && let Err(e) = self.settings.run_due().await
            {
                warn!(error = %e, "cannot read the auto-record settings; trying again");
            }
            self.health
                .settings(self.settings.next_at(), self.settings.in_flight());
            if housekeeping_due && step.is_ok() {
                self.health.planned(now);
            }
            let wake = match step {
                Ok(started) => {
                    db_backoff = Duration::from_millis(100);
                    self.health.db_recovered("scheduler");
                    // With no free worker, the due start waits for one to free up (the outcome
                    // writer wakes the loop after every batch) or the tick, not a busy loop.
                    let room = started == 0 && self.dispatcher.has_room();
                    let mut due = None;
                    let mut check = None;
                    if room {
                        if let Ok(Some(next)) = self.store.next_due_at().await {
                            let wait = (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
                            if wait <= TOKEN_AHEAD {
                                self.dispatcher.warm_token(next);
                            }
                            due = Some(wait);
                        }
                        if let Ok(Some(next)) = self.store.next_check_at().await {
                            check = Some((next - self.clock.now()).to_std().unwrap_or(Duration::ZERO));
                        }
                        if let Some(next) = self.settings.next_at() {
                            let wait = (next - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
                            check = Some(check.map_or(wait, |c| c.min(wait)));
                        }
                    }
                    wake::wake_up(wake::Pass {
                        longest: if owed {
                            self.tick
                        } else {
                            self.longest_sleep(last_watchdog.elapsed())
                        },
                        started: started > 0,
                        room,
                        due,
                        check,
                        take_over: self.next_take_over.map(|t| t - self.clock.now()),
                    })
                }
                Err(e) => {
                    error!(error = %e, "scheduler: database error; trying again");
                    self.health.db_failed("scheduler", e.to_string());
                    let wake = wake::wake_up(wake::Pass {
                        longest: db_backoff,
                        started: false,
                        room: false,
                        due: None,
                        check: None,
                        take_over: self.next_take_over.map(|t| t - self.clock.now()),
                    });
                    db_backoff = (db_backoff * 2).min(Duration::from_secs(2));
                    wake
                }
            };
            let (sleep_for, until_due) = (wake.after, wake.at_due);
            self.health.sleeping(sleep_for);
            if last_gauges.elapsed() >= Duration::from_secs(5) {
                self.refresh_gauges().await;
                last_gauges = tokio::time::Instant::now();
            }
            if until_due {
                // A timer fires on a millisecond tick, rounded up, and its thread wakes later
                // still (1-2 ms late in all): the loop wakes DUE_EARLY before a due instant and
                // yields until it. (On the monotonic clock: an injected clock cannot hold it.)
                let at = tokio::time::Instant::now() + sleep_for;
                let timer = tokio::select! {
                    () = tokio::time::sleep(sleep_for.saturating_sub(DUE_EARLY)) => true,
                    () = notify.notified() => {
                        owed = true;
                        false
                    }
                    () = cancel.cancelled() => false,
                };
                while timer && tokio::time::Instant::now() < at {
                    tokio::task::yield_now().await;
                }
            } else if sleep_for > Duration::ZERO {
                tokio::select! {
                    () = tokio::time::sleep(sleep_for) => {}
                    () = notify.notified() => owed = true,
                    () = cancel.cancelled() => {}
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
        let in_flight = self.dispatcher.in_flight();
        info!(
            in_flight,
            "stopping: no new attempts; waiting for calls in flight"
        );
        // The calls in flight are still this daemon's: it renews their leases while it waits,
        // or another daemon would take over (and repeat) a call that is about to succeed.
        let renewing = tokio::spawn(renew_while_draining(self.store.clone(), self.clock.clone()));
        if !self.dispatcher.drain(drain).await {
            warn!(
                in_flight = self.dispatcher.in_flight(),
                "calls still in flight at the shutdown bound; they will be recorded as interrupted at the next start"
            );
        }
        if let Err(why) = self.checker.drain(drain).await {
            self.dispatcher.set_fatal(why);
        }
        self.settings.drain(drain).await;
        renewing.abort();
        self.finish().await;
        self.dispatcher.fatal().map_or(Ok(()), Err)
    }

    /// Flush every outcome the writer holds, then stop it.
    pub async fn finish(&mut self) {
        if let Some(w) = self.writer.take() {
            w.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), w.task).await;
        }
    }
}

/// Renew this process's leases every third of the lease until aborted (the drain at shutdown).
async fn renew_while_draining(store: crate::store::Store, clock: SharedClock) {
    let every = store.lease() / 3;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = store.renew_leases(clock.now()).await {
            warn!(error = %e, "cannot renew the leases of the calls still in flight");
        }
    }
}
