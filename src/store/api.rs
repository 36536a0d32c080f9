//! The store's operations, each written once: every one hands its arguments to the engine the
//! store was opened on ([`backend!`]). An operation one engine lacks does not compile. The rows and
//! values they take and give are in `types.rs`; the SQL of each is in `sqlite/` and `postgres/`,
//! in the file of the same name.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::types::*;
use super::{Result, Store, backend};
use crate::domain::alert::Facts;
use crate::domain::quota::{Calls, Month, Observed};
use crate::domain::verify::CheckNext;
use crate::domain::{AlertEvent, CheckOutcome, OccurrenceState, SealedToken};

/// One process's turn to fetch `app`'s token while other daemons on the same database wait for
/// it and then take the token it kept ([`Store::token_fetch_turn`]). Release it once the token is
/// kept; dropped unreleased (a task cancelled), it closes its connection, which ends the turn.
#[derive(Debug)]
pub struct FetchTurn {
    inner: Option<super::postgres::FetchTurn>,
}

impl FetchTurn {
    pub(crate) fn new(turn: super::postgres::FetchTurn) -> FetchTurn {
        FetchTurn { inner: Some(turn) }
    }

    pub async fn release(mut self) {
        if let Some(t) = self.inner.take() {
            t.release().await;
        }
    }
}

impl Store {
    /// Hold claims for `lease` from now on (`scheduler.lease`).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.ctx_mut().lease = lease;
        self
    }

    pub fn lease(&self) -> Duration {
        self.ctx().lease
    }

    /// Use this store's days in `tz` (`dingtalk.quota_timezone`).
    pub fn with_quota_timezone(mut self, tz: chrono_tz::Tz) -> Self {
        self.ctx_mut().quota_tz = tz;
        self
    }

    pub fn quota_timezone(&self) -> chrono_tz::Tz {
        self.ctx().quota_tz
    }

    /// Until `cancel`, notify `wake` whenever another process applies policies (PostgreSQL:
    /// `LISTEN`). On SQLite, the first of `wake` (the scheduler) after any write to the file,
    /// this process's own included (inotify): `dingrec apply`, `trigger` or `policies` beside
    /// an idle daemon wake it at once.
    pub async fn watch_policies(
        &self,
        wake: &[std::sync::Arc<tokio::sync::Notify>],
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        backend!(self, db => db.watch_policies(wake, cancel).await)
    }

    /// Readiness: does a write commit (and, on SQLite, may this process write the file)?
    pub async fn probe_writable(&self) -> Result<()> {
        backend!(self, db => db.probe_writable().await)
    }

    /// This database's own mark for the names of its alert messages (a robot's `msgUuid`, a
    /// webhook's `webhook-id`): 8 hex digits drawn once and kept in `meta`, so that two databases
    /// (staging and production) sending to one receiver never name two messages alike, and a
    /// receiver that drops repeats drops only real ones.
    pub async fn alert_prefix(&self) -> Result<String> {
        let drawn = i64::from(rand::random::<u32>());
        let value = backend!(self, db => db.alert_prefix(drawn).await)?;
        Ok(format!("{:08x}", value & 0xffff_ffff))
    }

    // policies

    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        backend!(self, db => db.list_policies().await)
    }

    /// Up to `limit` enabled policies with an id above `after`, by id: the forecast reads the
    /// policies a page at a time, never all at once.
    pub async fn enabled_policies_after(&self, after: i64, limit: i64) -> Result<Vec<StoredPolicy>> {
        backend!(self, db => db.enabled_policies_after(after, limit).await)
    }

    pub async fn policy_by_name(&self, name: &str) -> Result<Option<StoredPolicy>> {
        backend!(self, db => db.policy_by_name(name).await)
    }

    /// The enabled `match` policies, by name (docs/events.md).
    pub async fn match_policies(&self) -> Result<Vec<StoredPolicy>> {
        backend!(self, db => db.match_policies().await)
    }

    /// Write an event with what was decided about it, and for a match the meeting's occurrence,
    /// in one transaction: an eventId seen before writes nothing; a meeting that already has its
    /// occurrence makes the event a `duplicate`.
    pub async fn record_event(&self, e: &NewEvent) -> Result<EventRecorded> {
        backend!(self, db => db.record_event(e).await)
    }

    /// A meeting closed (its `conference_closed` event): the next watch check of its occurrences
    /// is made now. How many were brought forward.
    pub async fn meeting_closed(&self, conference_id: &str, now: DateTime<Utc>) -> Result<u64> {
        backend!(self, db => db.meeting_closed(conference_id, now).await)
    }

    /// Events received since `since`, newest first (`dingrec events`).
    pub async fn events_since(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<EventRow>> {
        backend!(self, db => db.events_since(since, limit).await)
    }

    /// What `apply` would change, without writing.
    pub async fn plan_policies(&self, new: &[PolicyRecord], prune: Prune<'_>) -> Result<Vec<Change>> {
        let existing = self.list_policies().await?;
        let existing = existing.into_iter().map(|p| (p.record.name.clone(), p)).collect();
        Ok(diff(&existing, new, prune))
    }

    /// Write `new` in one transaction: every policy lands or none. Unchanged policies are not
    /// touched (no `updated_at` churn). Changed or disabled policies lose their future
    /// not-yet-started occurrences (`cancelled`) and are planned again by the daemon.
    pub async fn apply_policies(
        &self,
        new: &[PolicyRecord],
        prune: Prune<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        backend!(self, db => db.apply_policies(new, prune, now).await)
    }

    // occurrences

    /// Enabled policies whose rows reach less far than `until`.
    pub async fn plan_candidates(&self, until: DateTime<Utc>, limit: i64) -> Result<Vec<PlanCandidate>> {
        backend!(self, db => db.plan_candidates(until, limit).await)
    }

    /// Write planned rows (never duplicating: unique per policy and due time; a cancelled row at
    /// the same time comes back) and move each policy's `planned_until`, in one transaction.
    pub async fn write_plans(&self, plans: &[PolicyPlan], now: DateTime<Utc>) -> Result<u64> {
        backend!(self, db => db.write_plans(plans, now).await)
    }

    /// The earliest instant at which an occurrence wants an attempt.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        backend!(self, db => db.next_due_at().await)
    }

    /// When planning and the sweep next have work, as the database holds it now: the earliest
    /// `planned_until` of an enabled policy (`MIN_UTC` for one never planned) and the earliest
    /// window end of an occurrence still waiting. The loop sleeps until then (docs/operations.md,
    /// "An idle daemon").
    pub async fn housekeeping_marks(&self) -> Result<HousekeepingMarks> {
        backend!(self, db => db.housekeeping_marks().await)
    }

    /// Claim up to `limit` due occurrences, earliest first (with `retries_first`, due retries
    /// before everything else), and write each one's attempt intent row, all in one transaction.
    /// Nothing is claimed whose window has passed. Returns the tickets and the due times of the
    /// first attempts among them, once the claim committed.
    /// The first `read_back` claimed attempts are read back inside the claim's transaction
    /// ([`Claim::loaded`]): the first calls of a burst do not wait for a second query.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        retries_first: bool,
        read_back: usize,
    ) -> Result<Claim> {
        backend!(self, db => db.claim(now, limit, None, retries_first, read_back).await)
    }

    /// Claim one occurrence by id if it is due (`dingrec trigger`), and read it back.
    pub async fn claim_occurrence(&self, id: i64, now: DateTime<Utc>) -> Result<Option<Claimed>> {
        backend!(self, db => db.claim(now, 1, Some(id), false, 1).await)?
            .loaded
            .pop()
            .map(|(_, c)| c)
            .transpose()
    }

    /// What the calls of claimed attempts need, by attempt id, in the tickets' order. A row that
    /// cannot be decoded fails alone; an attempt whose rows are gone is left out. (dingrec's own
    /// writes never cause either: the schema's CHECKs hold the columns, and nothing deletes a
    /// running occurrence or a policy. Only an outside edit of the file can.)
    pub async fn load_claimed(&self, tickets: &[Ticket]) -> Result<Vec<(i64, Result<Claimed>)>> {
        backend!(self, db => db.load_claimed(tickets).await)
    }

    /// Write attempt outcomes and occurrence states, many in one transaction.
    pub async fn complete(&self, done: &[Completion], now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.complete(done, now).await)
    }

    /// At start: close attempts left without an outcome as `interrupted`, let the occurrences they
    /// belonged to continue, and settle what came due while the daemon was down: per policy only
    /// the latest past-due occurrence whose window is still open fires (`catch_up`); the others
    /// are `missed`.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery> {
        backend!(self, db => db.recover(now).await)
    }

    /// Occurrences whose window passed before they could be attempted become `missed`; ones
    /// waiting for a retry past their window become `expired`. Returns them for logging.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<FinalEvent>> {
        backend!(self, db => db.sweep(now).await)
    }

    /// A manual occurrence (`dingrec trigger`), due now.
    pub async fn insert_manual(
        &self,
        policy_id: i64,
        policy_name: &str,
        now: DateTime<Utc>,
        window_ends_at: DateTime<Utc>,
        conference_id: Option<&str>,
    ) -> Result<i64> {
        backend!(self, db => db.insert_manual(policy_id, policy_name, now, window_ends_at, conference_id).await)
    }

    /// Withdraw one live occurrence (`dingrec trigger` stopped by Ctrl-C): it becomes `cancelled`;
    /// an attempt of it still without an outcome is closed as interrupted with `why`.
    pub async fn cancel_occurrence(&self, id: i64, why: &str, now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.cancel_occurrence(id, why, now).await)
    }

    /// An occurrence's state and last code, if it exists.
    pub async fn occurrence_state(&self, id: i64) -> Result<Option<(OccurrenceState, Option<String>)>> {
        backend!(self, db => db.occurrence_state(id).await)
    }

    /// Live occurrences by state, for `/readyz`.
    pub async fn live_counts(&self) -> Result<Vec<(OccurrenceState, i64)>> {
        backend!(self, db => db.live_counts().await)
    }

    /// Occurrences due at or after `since` that reached a final state, by state.
    pub async fn final_counts(&self, since: DateTime<Utc>) -> Result<Vec<(OccurrenceState, i64)>> {
        backend!(self, db => db.final_counts(since).await)
    }

    /// Changes whenever an enabled policy is added, edited, disabled or removed (by any process):
    /// the quota task makes its forecast again only then, not every few minutes.
    pub async fn policies_fingerprint(&self) -> Result<String> {
        backend!(self, db => db.policies_fingerprint().await)
    }

    pub async fn enabled_policy_count(&self) -> Result<i64> {
        backend!(self, db => db.enabled_policy_count().await)
    }

    pub async fn last_success_at(&self) -> Result<Option<DateTime<Utc>>> {
        backend!(self, db => db.last_success_at().await)
    }

    /// Drop occurrences (and their attempts and checks) that ended before `before`, and the
    /// alerts raised before it that are no longer pending.
    pub async fn prune_before(&self, before: DateTime<Utc>) -> Result<u64> {
        backend!(self, db => db.prune_before(before).await)
    }

    // checks

    /// Claim up to `limit` due checks: their intent rows are written and their occurrences' next
    /// check cleared (one in flight at a time), in one transaction.
    pub async fn claim_checks(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueCheck>> {
        backend!(self, db => db.claim_checks(now, limit).await)
    }

    /// Is any check due later or in flight? (One statement: a claim moves a check from one to
    /// the other in one commit.)
    pub async fn checks_pending(&self) -> Result<bool> {
        backend!(self, db => db.checks_pending().await)
    }

    /// When the next check is due, if any is pending.
    pub async fn next_check_at(&self) -> Result<Option<DateTime<Utc>>> {
        backend!(self, db => db.next_check_at().await)
    }

    /// Record a check's outcome and take the occurrence's next step, in one transaction.
    pub async fn complete_check(
        &self,
        c: &DueCheck,
        result: &CheckResult,
        outcome: CheckOutcome,
        next: CheckNext,
        now: DateTime<Utc>,
    ) -> Result<CheckEffect> {
        let write = crate::domain::verify::check_write(
            c.kind,
            outcome,
            next,
            c.state,
            c.policy_enabled,
            c.restart_window_ms,
            now,
        );
        backend!(self, db => db.complete_check(c, result, outcome, &write, now).await)
    }

    // auto-record (docs/auto-record.md)

    /// The enabled scheduled-meeting policies with `auto_record` on, each with its last settings
    /// call and its next scheduled occurrence after `now`.
    pub async fn auto_record_policies(&self, now: DateTime<Utc>) -> Result<Vec<AutoRecordPolicy>> {
        backend!(self, db => db.auto_record_policies(now).await)
    }

    /// Take a policy's settings call: only if its last call is still the one read at `seen_at`
    /// (another daemon has not taken it meanwhile). The call is `pending` until finished.
    pub async fn claim_auto_record(
        &self,
        policy_id: i64,
        seen_at: Option<DateTime<Utc>>,
        for_setting: &str,
        occurrence_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        backend!(self, db => db.claim_auto_record(policy_id, seen_at, for_setting, occurrence_id, now).await)
    }

    /// A settings call's answer: its row in `checks`, the policy's last result, the calls
    /// counted, in one transaction.
    pub async fn finish_auto_record(
        &self,
        policy_id: i64,
        for_setting: &str,
        result: crate::domain::auto_record::SetResult,
        check: &AutoCheck<'_>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        backend!(self, db => db.finish_auto_record(policy_id, for_setting, result, check, now).await)
    }

    /// An `auto_record` policy's due-time check, written whole; returns the policy's misses in a
    /// row when this check changed them (0 after `auto_recorded`; an occurrence's first miss adds
    /// one, its later attempts' misses nothing).
    pub async fn record_auto_check(&self, check: &AutoCheck<'_>, now: DateTime<Utc>) -> Result<Option<i64>> {
        backend!(self, db => db.record_auto_check(check, now).await)
    }

    // history

    /// One row per occurrence, its attempts as one JSON array of objects keyed like
    /// [`AttemptRow`] (a quarter of the rows a join would move).
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        backend!(self, db => db.history(f).await)
    }

    // leases

    /// This daemon runs from `now` (`instances`): `dingrec status` and `/readyz` list it while it
    /// renews its leases.
    pub async fn register_instance(&self, now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.register_instance(now).await)
    }

    /// This daemon stopped cleanly at `now`.
    pub async fn instance_stopped(&self, now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.instance_stopped(now).await)
    }

    /// The processes seen since `since`, newest first, with what each holds now.
    pub async fn instances(&self, since: DateTime<Utc>) -> Result<Vec<InstanceRow>> {
        backend!(self, db => db.instances(since).await)
    }

    /// Move this process's heartbeat to `now`, and its leases on attempts and checks without an
    /// outcome to `now` + the lease; how many rows it holds.
    pub async fn renew_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        backend!(self, db => db.renew_leases(now).await)
    }

    /// When the first lease of another process's attempt or check runs out (if it is not
    /// renewed before): the moment to take it over, if that process is gone. Only several daemons
    /// on PostgreSQL have one.
    pub async fn next_foreign_lease_end(&self) -> Result<Option<DateTime<Utc>>> {
        backend!(self, db => db.next_foreign_lease_end().await)
    }

    /// Take over the attempts and checks of other processes whose lease ran out before `now`:
    /// closed as `interrupted`, their occurrences carried on (see [`Store::recover`]). Rows written
    /// before leases existed (no `lease_until`) are left to the start-up recovery.
    pub async fn take_over_expired(&self, now: DateTime<Utc>) -> Result<Recovery> {
        backend!(self, db => db.take_over_expired(now).await)
    }

    // alerts

    /// Route events as config.yaml says: `destinations` when a policy names none, only `events`.
    /// With no destination at all, nothing is written (the row goes: no alerts).
    pub async fn set_alert_routing(
        &self,
        default: &[String],
        events: &[AlertEvent],
        any_destination: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        backend!(self, db => db.set_alert_routing(default, events, any_destination, now).await)
    }

    /// Raise an alert that no state change writes (`auth_broken`, `quota`, `test`): one row per
    /// destination, routed like the others (`destinations`: explicit ones, else the default).
    pub async fn raise_alert(
        &self,
        event: AlertEvent,
        destinations: Option<&[String]>,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        backend!(self, db => db.raise_alert(event, destinations, facts, now).await)
    }

    /// Pending alerts due at `now`, oldest first (at most `limit`).
    pub async fn alerts_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        backend!(self, db => db.alerts_due(now, limit).await)
    }

    /// The alerts of one robot message (a batch being sent again).
    pub async fn alert_batch(&self, batch: &str) -> Result<Vec<AlertRow>> {
        backend!(self, db => db.alert_batch(batch).await)
    }

    /// Before a send: the alerts go out together as `batch`, one more attempt each. Committed
    /// before the call, so that a crash mid-send sends the same message (same `msgUuid`) again.
    pub async fn start_alert_send(&self, ids: &[i64], batch: &str) -> Result<()> {
        backend!(self, db => db.start_alert_send(ids, batch).await)
    }

    /// After a send: delivered (`Ok`), tried again at `retry_at`, or given up.
    pub async fn finish_alert_send(&self, ids: &[i64], end: AlertEnd<'_>, now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.finish_alert_send(ids, end, now).await)
    }

    /// Alerts created at or after `since`, newest first.
    pub async fn alerts_since(&self, since: DateTime<Utc>) -> Result<Vec<AlertRow>> {
        backend!(self, db => db.alerts_since(since).await)
    }

    /// Alerts not delivered: every one still pending, and those that gave up since `since`;
    /// newest first, at most `limit`.
    pub async fn alerts_undelivered(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        backend!(self, db => db.alerts_undelivered(since, limit).await)
    }

    pub async fn alerts_pending(&self) -> Result<PendingStats> {
        backend!(self, db => db.alerts_pending().await)
    }

    // usage

    /// Count calls that belong to no attempt or check (token fetches), at `at`.
    pub async fn add_usage(&self, calls: &Calls, at: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.add_usage(calls, at).await)
    }

    /// The calls counted in `month`; with `history`, also what the month's attempts say about a
    /// firing's cost (a read of the month's attempts: for forecasts, not for every poll).
    pub async fn usage(&self, month: &Month, history: bool) -> Result<Usage> {
        let rows = backend!(self, db => db.month_calls(month).await)?;
        let events = rows
            .iter()
            .filter(|(api, _)| api == crate::domain::quota::STREAM_EVENT)
            .map(|(_, n)| u64::try_from(*n).unwrap_or(0))
            .sum();
        let by_api = crate::domain::quota::tally(rows);
        let observed = if history {
            // Occurrences of this month that made a call: the retry rate's denominator.
            let started = backend!(self, db => db.month_started(month).await)?;
            Observed::of(&by_api, started)
        } else {
            Observed::default()
        };
        Ok(Usage {
            by_api,
            observed,
            events,
        })
    }

    /// Record that `event` was said in `month`; `false` when it already was.
    pub async fn quota_event_once(&self, month: &Month, event: &str, now: DateTime<Utc>) -> Result<bool> {
        backend!(self, db => db.quota_event_once(month, event, now).await)
    }

    /// Attempts DingTalk refused this month because the quota ran out.
    pub async fn refused_for_quota(&self, month: &Month) -> Result<u64> {
        backend!(self, db => db.refused_for_quota(month).await)
    }

    // tokens

    /// One daemon per SQLite database: no turn to wait for.
    pub async fn token_fetch_turn(&self, app: &str) -> Result<Option<FetchTurn>> {
        backend!(self, db => db.token_fetch_turn(app).await)
    }

    /// The token kept for `app`, if any (fresh or not: the caller decides).
    pub async fn shared_token(&self, app: &str) -> Result<Option<SealedToken>> {
        backend!(self, db => db.shared_token(app).await)
    }

    /// Keep `token` for `app`, fetched by this process at `now`, in place of the one before.
    pub async fn share_token(&self, app: &str, token: &SealedToken, now: DateTime<Utc>) -> Result<()> {
        backend!(self, db => db.share_token(app, token, now).await)
    }

    /// Drop `app`'s token if it is still `sealed` (DingTalk refused it); a newer one stays.
    pub async fn forget_token(&self, app: &str, sealed: &[u8]) -> Result<bool> {
        backend!(self, db => db.forget_token(app, sealed).await)
    }

    // slots

    pub async fn take_send_slots(&self, app: &str, n: u32, period: Duration) -> Result<Option<Duration>> {
        backend!(self, db => db.take_send_slots(app, n, period).await)
    }

    pub fn shares_rate_limit(&self) -> bool {
        backend!(self, db => db.shares_rate_limit())
    }
}
