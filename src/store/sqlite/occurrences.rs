//! The `occurrences` and `attempts` tables as the scheduler's queue. A due occurrence is a row,
//! claimed atomically together with its attempt's intent row; the outcome completes both in one
//! transaction.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::Sqlite;
use crate::domain::outcome::codes;
use crate::domain::policy::{Layout, WindowPosition};
use crate::domain::quota::Api;
use crate::domain::time::{fmt_utc, parse_utc};
use crate::domain::{OccurrenceState, Trigger};
use crate::store::types::*;
use crate::store::{Result, StoreError};

pub(super) fn time(r: &SqliteRow, col: &str) -> Result<DateTime<Utc>> {
    let s: &str = r.try_get(col)?;
    parse_utc(s).map_err(|e| StoreError::Data(format!("{col} '{s}': {e}")))
}

pub(super) fn opt_time(r: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    let s: Option<&str> = r.try_get(col)?;
    s.map(|s| parse_utc(s).map_err(|e| StoreError::Data(format!("{col} '{s}': {e}"))))
        .transpose()
}

/// One row of [`PLAN_INSERT_MANY`]'s JSON array.
fn plan_row(plan: &PolicyPlan, row: &NewOccurrence, due: String) -> serde_json::Value {
    let next_attempt = (row.state == OccurrenceState::Scheduled).then(|| due.clone());
    serde_json::json!([
        plan.policy_id,
        plan.policy_name,
        due,
        fmt_utc(row.window_ends_at),
        row.state.as_str(),
        next_attempt,
        row.trigger.as_str(),
        fmt_utc(row.start),
    ])
}

/// One planned row each; not when its meeting already has an occurrence (the meeting start,
/// `meeting_at`, is the array's eighth). `?1` a JSON array of
/// `[policy_id, policy_name, due_at, window_ends_at, state, next_attempt_at, trigger, meeting_at]`,
/// `?2` the time of writing. A cancelled row at the same due time comes back. One statement per
/// batch instead of one per row: planning 100k policies at start-up was bound by those round
/// trips, not by SQLite (BENCHMARKS.md, "Idle").
pub(crate) const PLAN_INSERT_MANY: &str = "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, state, \
    next_attempt_at, trigger, meeting_at, created_at, updated_at) \
    SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5, \
    j.value ->> 6, j.value ->> 7, ?2, ?2 FROM json_each(?1) AS j WHERE NOT EXISTS ( \
    SELECT 1 FROM occurrences AS o INDEXED BY occurrences_by_meeting \
    WHERE o.policy_id = j.value ->> 0 AND o.meeting_at = j.value ->> 7 AND o.state != 'cancelled' \
    AND o.due_at != j.value ->> 2) \
    ON CONFLICT (policy_id, due_at) WHERE event_conference_id IS NULL DO UPDATE SET state = excluded.state, \
    window_ends_at = excluded.window_ends_at, next_attempt_at = excluded.next_attempt_at, \
    trigger = excluded.trigger, meeting_at = excluded.meeting_at, updated_at = excluded.updated_at \
    WHERE occurrences.state = 'cancelled'";

/// Each policy's new `planned_until`: `?1` a JSON array of `[id, planned_until]`.
pub(crate) const PLANNED_UNTIL_MANY: &str = "UPDATE policies SET planned_until = j.value ->> 1 \
    FROM json_each(?1) AS j WHERE policies.id = j.value ->> 0";

/// Rows and policies per statement of [`PLAN_INSERT_MANY`] and [`PLANNED_UNTIL_MANY`].
const PLAN_CHUNK: usize = 2_000;

/// Whether an occurrence (not cancelled) overlaps a started meeting's window.
pub(crate) const STARTED_MEETING_COVERED: &str = "SELECT EXISTS (SELECT 1 FROM occurrences INDEXED BY occurrences_by_policy \
     WHERE policy_id = ? AND state != 'cancelled' AND due_at < ? AND window_ends_at > ?)";

/// One row of [`LOAD_CLAIMED`], decoded. A cell of the wrong type or shape fails this row alone.
fn claimed_from_row(r: &SqliteRow, shared: &mut Shared) -> Result<Claimed> {
    let data = |col: &str, e: String| StoreError::Data(format!("{col}: {e}"));
    let text =
        |col: &str| -> Result<Option<Box<str>>> { Ok(r.try_get::<Option<&str>, _>(col)?.map(Box::from)) };
    let meeting = match (
        text("occ_conf")?,
        text("pol_conf")?,
        text("schedule_conference_id")?,
    ) {
        (Some(id), _, _) | (None, Some(id), _) => Meeting::Conference(id),
        (None, None, Some(sched)) => Meeting::Schedule(sched),
        (None, None, None) => Meeting::Missing,
    };
    let policy_name: &str = r.try_get("policy_name")?;
    Ok(Claimed {
        occurrence_id: r.try_get("id")?,
        attempt_id: r.try_get("attempt_id")?,
        attempt_no: r.try_get("attempt_no")?,
        policy_name: policy_name.into(),
        due_at: time(r, "due_at")?,
        window_ends_at: time(r, "window_ends_at")?,
        trigger: r.try_get("trigger")?,
        meeting,
        host_union_id: shared.host(r.try_get("host_union_id")?),
        layout: Layout::parse(r.try_get("layout")?).map_err(|e| data("layout", e.to_string()))?,
        small_window_position: WindowPosition::parse(r.try_get("small_window_position")?)
            .map_err(|e| data("small_window_position", e.to_string()))?,
        retry: shared.retry(r.try_get("retry")?, policy_name),
        throttled_count: r.try_get("throttled_count")?,
        uncalled_count: r.try_get("uncalled_count")?,
        previous_was_reauth: r.try_get::<Option<&str>, _>("last_code")?
            == Some(codes::INVALID_AUTHENTICATION),
        policy_enabled: r.try_get::<i64, _>("enabled")? != 0,
        verify: crate::store::verify_column(r.try_get("verify")?).map_err(|e| data("verify", e))?,
        auto_record_first: r.try_get::<i64, _>("auto_first")? != 0,
    })
}

/// An occurrence due now (`manual`, `restart`): should the policy already have one due at this
/// very millisecond (a scheduled one, or another trigger), the next free millisecond.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn insert_due_now(
    tx: &mut super::WriteTx,
    policy_id: i64,
    policy_name: &str,
    now: DateTime<Utc>,
    window_ends_at: DateTime<Utc>,
    conference_id: Option<&str>,
    trigger: Trigger,
    restart_of: Option<i64>,
) -> Result<i64> {
    let now_s = fmt_utc(now);
    let mut due = now;
    for _ in 0..1_000 {
        let due_s = fmt_utc(due);
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, conference_id, state, \
             next_attempt_at, trigger, restart_of, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, 'scheduled', ?, ?, ?, ?, ?) \
             ON CONFLICT (policy_id, due_at) WHERE event_conference_id IS NULL DO NOTHING RETURNING id",
        )
        .bind(policy_id)
        .bind(policy_name)
        .bind(&due_s)
        .bind(fmt_utc(window_ends_at))
        .bind(conference_id)
        .bind(&due_s)
        .bind(trigger)
        .bind(restart_of)
        .bind(&now_s)
        .bind(&now_s)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = id {
            return Ok(id);
        }
        due += chrono::TimeDelta::milliseconds(1);
    }
    Err(StoreError::Data(format!(
        "policy '{policy_name}' has an occurrence due at every millisecond from {now_s} on"
    )))
}

/// Due occurrences, earliest first: the claim reads their ids (and, for the fire-lateness
/// metric, due time and attempts so far) and nothing else.
pub(crate) const CLAIM_SELECT: &str = "SELECT o.id, o.due_at, o.attempt_count \
     FROM occurrences o INDEXED BY occurrences_next_due \
     WHERE o.state IN ('scheduled', 'retry_wait') AND o.next_attempt_at <= ? AND o.window_ends_at > ? \
     ORDER BY o.next_attempt_at, o.id LIMIT ?";

/// Due retries only, earliest first (claimed first under a rate limit).
pub(crate) const CLAIM_RETRIES_SELECT: &str = "SELECT o.id, o.due_at, o.attempt_count \
     FROM occurrences o INDEXED BY occurrences_retry_due \
     WHERE o.state = 'retry_wait' AND o.next_attempt_at <= ? AND o.window_ends_at > ? \
     ORDER BY o.next_attempt_at, o.id LIMIT ?";

/// Enabled policies whose rows reach less far than `?1`, the least planned first.
pub(crate) const PLAN_CANDIDATES: &str = "SELECT id, name, conference_id, schedule_conference_id, host_union_id, layout, \
     small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, skip_dates, enabled, \
     source, match_rule, auto_record, planned_until FROM policies WHERE enabled = 1 AND planned_until < ? ORDER BY planned_until LIMIT ?";

/// The earliest instant an occurrence wants an attempt.
pub(crate) const NEXT_DUE: &str = "SELECT MIN(next_attempt_at) AS t FROM occurrences INDEXED BY occurrences_next_due \
     WHERE state IN ('scheduled', 'retry_wait')";

/// [`HousekeepingMarks`]: `''` (never planned) is the least `planned_until`.
pub(crate) const HOUSEKEEPING_MARKS: &str = "SELECT \
     (SELECT MIN(planned_until) FROM policies INDEXED BY policies_to_plan WHERE enabled = 1) AS plan, \
     (SELECT MIN(window_ends_at) FROM occurrences INDEXED BY occurrences_window \
      WHERE state IN ('scheduled', 'retry_wait')) AS window_end";

/// Is any waiting occurrence past its window? (Asked every tick before the sweep writes.)
pub(crate) const SWEEP_ANY: &str = "SELECT EXISTS (SELECT 1 FROM occurrences INDEXED BY occurrences_window \
     WHERE state IN ('scheduled', 'retry_wait') AND window_ends_at <= ?)";

/// When the last recording was started (`/readyz`, the gauge at start).
pub(crate) const LAST_SUCCESS: &str = "SELECT MAX(finished_at) AS t FROM attempts WHERE outcome = 'success'";

/// Claimed attempts (a JSON array of attempt ids) with what their calls need, in array order.
pub(crate) const LOAD_CLAIMED: &str = "SELECT a.id AS attempt_id, a.attempt_no, o.id, o.policy_name, o.due_at, o.window_ends_at, \
     o.trigger, o.conference_id AS occ_conf, o.throttled_count, o.uncalled_count, o.last_code, p.conference_id AS pol_conf, \
     p.schedule_conference_id, COALESCE(o.host_union_id, p.host_union_id) AS host_union_id, p.layout, p.small_window_position, p.retry, p.enabled, p.verify, \
     p.auto_record IS NOT NULL AND COALESCE(p.auto_record_result, 'refused') != 'refused' \
       AND o.trigger IN ('schedule', 'catch_up') AS auto_first \
     FROM json_each(?) AS j CROSS JOIN attempts a ON a.id = j.value JOIN occurrences o ON o.id = a.occurrence_id \
     JOIN policies p ON p.id = o.policy_id ORDER BY j.key";

/// [`LOAD_CLAIMED`] on a pool or inside a claim's transaction.
async fn load_claimed<'e, E>(on: E, tickets: &[Ticket]) -> Result<Vec<(i64, Result<Claimed>)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let ids: Vec<i64> = tickets.iter().map(|t| t.attempt_id).collect();
    let ids_json = serde_json::to_string(&ids).map_err(|e| StoreError::Data(format!("claimed ids: {e}")))?;
    let mut rows = sqlx::query(LOAD_CLAIMED).bind(ids_json).fetch(on);
    let mut shared = Shared::default();
    let mut out = Vec::with_capacity(tickets.len());
    while let Some(r) = rows.try_next().await? {
        // A row whose attempt id itself cannot be read cannot be matched to its ticket: that
        // attempt is treated as not read back.
        if let Ok(id) = r.try_get("attempt_id") {
            out.push((id, claimed_from_row(&r, &mut shared)));
        }
    }
    Ok(out)
}

pub const FINAL_COUNTS: &str = "SELECT state, COUNT(*) FROM occurrences INDEXED BY occurrences_by_state \
     WHERE state IN ('succeeded', 'failed', 'expired', 'missed', 'cancelled') AND due_at >= ? GROUP BY state";

impl Sqlite {
    pub async fn plan_candidates(&self, until: DateTime<Utc>, limit: i64) -> Result<Vec<PlanCandidate>> {
        let mut rows = sqlx::query(PLAN_CANDIDATES)
            .bind(fmt_utc(until))
            .bind(limit)
            .fetch(self.pool());
        // Streamed (see `claim`): a planning pass never holds its raw rows.
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            let pu: String = r.try_get("planned_until")?;
            out.push(PlanCandidate {
                policy_id: r.try_get("id")?,
                record: PolicyRecord::from_row(&r)?,
                planned_until: if pu.is_empty() {
                    None
                } else {
                    Some(parse_utc(&pu).map_err(|e| StoreError::Data(format!("planned_until '{pu}': {e}")))?)
                },
            });
        }
        Ok(out)
    }

    pub async fn write_plans(&self, plans: &[PolicyPlan], now: DateTime<Utc>) -> Result<u64> {
        let now_s = fmt_utc(now);
        let mut written = 0;
        let mut tx = self.begin_write().await?;
        let mut rows = Vec::new();
        for plan in plans {
            for row in &plan.rows {
                let due = fmt_utc(row.due_at);
                // A meeting that has started and has an occurrence is not fired again when its
                // policy was edited while the meeting's window was open and a new cron or zone
                // moved its start: the meeting, the conference in that open window, is started
                // once. (The same start is caught by the insert below, at any time.) A plan's
                // rows are in time order, so these, which start first, are asked about before
                // any later row of their policy is written.
                if row.state == OccurrenceState::Scheduled && row.start <= now {
                    let covered: i64 = sqlx::query(STARTED_MEETING_COVERED)
                        .bind(plan.policy_id)
                        .bind(fmt_utc(row.window_ends_at))
                        .bind(fmt_utc(row.start))
                        .fetch_one(&mut *tx)
                        .await?
                        .try_get(0)?;
                    if covered != 0 {
                        continue;
                    }
                    // Written now, so that the next started meeting of the policy sees it.
                    let one = serde_json::json!([plan_row(plan, row, due)]).to_string();
                    written += sqlx::query(PLAN_INSERT_MANY)
                        .bind(one)
                        .bind(&now_s)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    continue;
                }
                // Never two occurrences for one meeting: not when an edit moved its due time
                // (a new start_offset), not when the clock was set back before a meeting already
                // fired. A cancelled row at the same due time comes back.
                rows.push(plan_row(plan, row, due));
            }
        }
        for chunk in rows.chunks(PLAN_CHUNK) {
            written += sqlx::query(PLAN_INSERT_MANY)
                .bind(serde_json::Value::from(chunk).to_string())
                .bind(&now_s)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        for chunk in plans.chunks(PLAN_CHUNK) {
            let marks: Vec<serde_json::Value> = chunk
                .iter()
                .map(|p| serde_json::json!([p.policy_id, fmt_utc(p.planned_until)]))
                .collect();
            sqlx::query(PLANNED_UNTIL_MANY)
                .bind(serde_json::Value::from(marks).to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    pub async fn housekeeping_marks(&self) -> Result<HousekeepingMarks> {
        let row = sqlx::query(HOUSEKEEPING_MARKS).fetch_one(self.pool()).await?;
        let plan: Option<&str> = row.try_get("plan")?;
        Ok(HousekeepingMarks {
            first_planned_until: match plan {
                None => None,
                Some("") => Some(DateTime::<Utc>::MIN_UTC),
                Some(_) => opt_time(&row, "plan")?,
            },
            first_window_end: opt_time(&row, "window_end")?,
        })
    }

    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(NEXT_DUE).fetch_one(self.pool()).await?;
        opt_time(&row, "t")
    }

    /// Set-based: one read, one UPDATE, one `MAX(id)` and one INSERT … SELECT per batch, whatever
    /// its size.
    pub(crate) async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        only: Option<i64>,
        retries_first: bool,
        read_back: usize,
    ) -> Result<Claim> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::new();
        let mut first_due = Vec::new();
        if retries_first {
            let mut rows = sqlx::query(CLAIM_RETRIES_SELECT)
                .bind(&now_s)
                .bind(&now_s)
                .bind(limit)
                .fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                ids.push(r.try_get::<i64, _>("id")?);
            }
        }
        let retry_count = ids.len();
        let retries: std::collections::HashSet<i64> = ids.iter().copied().collect();
        let sql = match only {
            None => CLAIM_SELECT.to_owned(),
            Some(_) => CLAIM_SELECT.replace("ORDER BY", "AND o.id = ? ORDER BY"),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&now_s).bind(&now_s);
        if let Some(id) = only {
            q = q.bind(id);
        }
        if (ids.len() as i64) < limit {
            // Streamed: sqlx hands rows over through a small bounded channel. (The retries taken
            // above come again here; they are skipped.)
            let mut rows = q.bind(limit).fetch(&mut *tx);
            while let Some(r) = rows.try_next().await? {
                if ids.len() as i64 >= limit {
                    break;
                }
                let id = r.try_get::<i64, _>("id")?;
                if retries.contains(&id) {
                    continue;
                }
                if r.try_get::<i64, _>("attempt_count")? == 0 {
                    first_due.push(time(&r, "due_at")?);
                }
                ids.push(id);
            }
        }
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Claim::default());
        }
        let ids_json =
            serde_json::to_string(&ids).map_err(|e| StoreError::Data(format!("claim batch: {e}")))?;
        sqlx::query(
            "UPDATE occurrences SET state = 'running', attempt_count = attempt_count + 1, next_attempt_at = NULL, \
             updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(&now_s)
        .bind(&ids_json)
        .execute(&mut *tx)
        .await?;
        // The attempt ids are the ones SQLite would pick (largest + 1, in order), set here so
        // that nothing has to come back: this transaction is the only writer.
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM attempts")
            .fetch_one(&mut *tx)
            .await?;
        let written = sqlx::query(
            "INSERT INTO attempts (id, occurrence_id, attempt_no, started_at, conference_id, instance, lease_until) \
             SELECT ? + 1 + j.key, o.id, o.attempt_count, ?, COALESCE(o.conference_id, p.conference_id), ?, ? \
             FROM json_each(?) AS j CROSS JOIN occurrences o ON o.id = j.value JOIN policies p ON p.id = o.policy_id",
        )
        .bind(last)
        .bind(&now_s)
        .bind(crate::instance::this())
        .bind(self.lease_until(now))
        .bind(&ids_json)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if written != ids.len() as u64 {
            return Err(StoreError::Data(format!(
                "claimed {} occurrences but wrote {written} attempt rows",
                ids.len()
            )));
        }
        let tickets: Vec<Ticket> = ids
            .into_iter()
            .zip(last + 1..)
            .map(|(occurrence_id, attempt_id)| Ticket {
                occurrence_id,
                attempt_id,
            })
            .collect();
        let loaded = if read_back > 0 {
            load_claimed(&mut *tx, &tickets[..read_back.min(tickets.len())]).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(Claim {
            tickets,
            first_due,
            retries: retry_count,
            loaded,
        })
    }

    pub async fn load_claimed(&self, tickets: &[Ticket]) -> Result<Vec<(i64, Result<Claimed>)>> {
        load_claimed(self.pool(), tickets).await
    }

    pub async fn complete(&self, done: &[Completion], now: DateTime<Utc>) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let now_s = fmt_utc(now);
        // Set-based, like the claim: the batch goes in as one JSON array of objects with named
        // keys, and each table is updated by one statement, however many attempts the batch holds.
        let rows: Vec<OutcomeRow<'_>> = done.iter().map(OutcomeRow::from).collect();
        let batch =
            serde_json::to_string(&rows).map_err(|e| StoreError::Data(format!("outcome batch: {e}")))?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE attempts SET finished_at = j.value ->> '$.finished_at', duration_ms = j.value ->> '$.duration_ms', \
             conference_id = COALESCE(j.value ->> '$.conference_id', attempts.conference_id), \
             http_status = j.value ->> '$.http_status', code = j.value ->> '$.code', message = j.value ->> '$.message', \
             request_id = j.value ->> '$.request_id', outcome = j.value ->> '$.outcome', \
             next_attempt_at = j.value ->> '$.next_attempt_at', sent_at = j.value ->> '$.sent_at' \
             FROM json_each(?) AS j WHERE attempts.id = j.value ->> '$.attempt_id' AND attempts.outcome IS NULL",
        )
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE occurrences NOT INDEXED SET \
             state = CASE WHEN j.value ->> '$.state' = 'retry_wait' \
               AND (SELECT enabled FROM policies WHERE id = occurrences.policy_id) = 0 THEN 'cancelled' \
               ELSE j.value ->> '$.state' END, \
             next_attempt_at = CASE WHEN j.value ->> '$.state' = 'retry_wait' \
               AND (SELECT enabled FROM policies WHERE id = occurrences.policy_id) = 0 THEN NULL \
               ELSE j.value ->> '$.next_attempt_at' END, \
             last_code = j.value ->> '$.code', conference_id = COALESCE(j.value ->> '$.conference_id', occurrences.conference_id), \
             throttled_count = throttled_count + (j.value ->> '$.throttled'), \
             uncalled_count = uncalled_count + (j.value ->> '$.uncalled'), \
             next_check_at = j.value ->> '$.next_check_at', \
             next_check_kind = CASE WHEN j.value ->> '$.next_check_at' IS NULL THEN NULL ELSE 'start' END, \
             check_count = CASE WHEN j.value ->> '$.settle' THEN \
               MAX(0, (SELECT verify ->> '$.checks' FROM policies WHERE id = occurrences.policy_id) - 1) ELSE 0 END, \
             check_failures = 0, updated_at = ? \
             FROM json_each(?) AS j WHERE occurrences.id = j.value ->> '$.occurrence_id' AND occurrences.state = 'running'",
        )
        .bind(&now_s)
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        let mut calls = crate::domain::quota::Calls::default();
        for d in done {
            calls.merge(&d.calls);
        }
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &calls).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        let mut rec = close_interrupted(&mut tx, &self.ctx.usage_day(now), &now_s, None).await?;
        // Past-due, never-attempted rows: the latest per policy with an open window catches up.
        rec.caught_up = sqlx::query(
            "UPDATE occurrences SET trigger = 'catch_up', updated_at = ? WHERE id IN ( \
               SELECT o.id FROM occurrences o WHERE o.state = 'scheduled' AND o.due_at <= ? AND o.window_ends_at > ? \
               AND o.trigger = 'schedule' AND NOT EXISTS (SELECT 1 FROM occurrences n WHERE n.policy_id = o.policy_id \
                 AND n.state = 'scheduled' AND n.due_at > o.due_at AND n.due_at <= ?))",
        )
        .bind(&now_s)
        .bind(&now_s)
        .bind(&now_s)
        .bind(&now_s)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Older past-due rows of a policy that has a later one due: `missed`.
        let older = settle(
            &mut tx,
            "UPDATE occurrences SET state = 'missed', next_attempt_at = NULL, updated_at = ?1 WHERE state = 'scheduled' \
             AND due_at <= ?1 AND EXISTS (SELECT 1 FROM occurrences n WHERE n.policy_id = occurrences.policy_id \
               AND n.state = 'scheduled' AND n.due_at > occurrences.due_at AND n.due_at <= ?1)",
            &now_s,
        )
        .await?;
        rec.finals.extend(older);
        rec.finals.extend(sweep_in(&mut tx, &now_s).await?);
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<FinalEvent>> {
        let now_s = fmt_utc(now);
        // Read first: an idle daemon should not take the write lock every tick.
        let any: i64 = sqlx::query(SWEEP_ANY)
            .bind(&now_s)
            .fetch_one(self.pool())
            .await?
            .try_get(0)?;
        if any == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let out = sweep_in(&mut tx, &now_s).await?;
        if out.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(out)
    }

    pub async fn insert_manual(
        &self,
        policy_id: i64,
        policy_name: &str,
        now: DateTime<Utc>,
        window_ends_at: DateTime<Utc>,
        conference_id: Option<&str>,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = insert_due_now(
            &mut tx,
            policy_id,
            policy_name,
            now,
            window_ends_at,
            conference_id,
            Trigger::Manual,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn cancel_occurrence(&self, id: i64, why: &str, now: DateTime<Utc>) -> Result<()> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE attempts SET outcome = 'interrupted', code = 'interrupted', http_status = COALESCE(http_status, 0), \
             message = ?, finished_at = ? WHERE occurrence_id = ? AND outcome IS NULL",
        )
        .bind(why)
        .bind(&now_s)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, last_code = 'interrupted', \
             updated_at = ? WHERE id = ? AND state IN ('scheduled', 'running', 'retry_wait')",
        )
        .bind(&now_s)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn occurrence_state(&self, id: i64) -> Result<Option<(OccurrenceState, Option<String>)>> {
        let row = sqlx::query("SELECT state, last_code FROM occurrences WHERE id = ?")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn live_counts(&self) -> Result<Vec<(OccurrenceState, i64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait', 'verifying') GROUP BY state",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn final_counts(&self, since: DateTime<Utc>) -> Result<Vec<(OccurrenceState, i64)>> {
        let rows = sqlx::query(FINAL_COUNTS)
            .bind(fmt_utc(since))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn policies_fingerprint(&self) -> Result<String> {
        let (n, last, ids): (i64, String, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(MAX(updated_at), ''), COALESCE(SUM(id), 0) FROM policies WHERE enabled = 1",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(format!("{n}/{last}/{ids}"))
    }

    pub async fn enabled_policy_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM policies WHERE enabled = 1")
            .fetch_one(self.pool())
            .await?
            .try_get(0)?)
    }

    pub async fn last_success_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(LAST_SUCCESS).fetch_one(self.pool()).await?;
        opt_time(&row, "t")
    }

    pub async fn prune_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "DELETE FROM occurrences WHERE due_at < ? AND state NOT IN ('scheduled', 'running', 'retry_wait', 'verifying')",
        )
        .bind(fmt_utc(before))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM alerts WHERE created_at < ? AND state != 'pending'")
            .bind(fmt_utc(before))
            .execute(&mut *tx)
            .await?;
        // Events go with the attempts (an event whose occurrence is still live stays).
        sqlx::query(
            "DELETE FROM events WHERE received_at < ?1 AND (occurrence_id IS NULL \
             OR occurrence_id NOT IN (SELECT id FROM occurrences WHERE due_at >= ?1 \
             OR state IN ('scheduled', 'running', 'retry_wait', 'verifying')))",
        )
        .bind(fmt_utc(before))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}

fn final_event(r: &SqliteRow) -> Result<FinalEvent> {
    Ok(FinalEvent {
        occurrence_id: r.try_get("id")?,
        policy_name: r.try_get("policy_name")?,
        conference_id: r.try_get("conference_id")?,
        state: r.try_get("state")?,
        last_code: r.try_get("last_code")?,
        due_at: r.try_get("due_at")?,
    })
}

/// `running` occurrences (all, or those in the JSON array `only`) whose window has passed: `expired`.
async fn expire_running(
    conn: &mut sqlx::SqliteConnection,
    now_s: &str,
    only: Option<&str>,
) -> Result<Vec<FinalEvent>> {
    let rows = sqlx::query(
        "UPDATE occurrences SET state = 'expired', next_attempt_at = NULL, updated_at = ?1 \
         WHERE state = 'running' AND window_ends_at <= ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2))) \
         RETURNING id, policy_name, conference_id, state, last_code, due_at",
    )
    .bind(now_s)
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(final_event).collect()
}

/// Which attempts and checks a recovery closes: all those without an outcome (`None`: at start,
/// under the single-instance lock), or only these (JSON arrays of ids: leases that ran out).
pub(crate) struct Held {
    pub attempts: String,
    pub occurrences: String,
    pub checks: String,
}

/// Close attempts and checks left without an outcome as `interrupted` (all, or the `held` ones),
/// count the calls DingTalk may have counted, and let their occurrences carry on: a check first
/// where the call may have started the recording, else a retry now, else `expired`.
pub(crate) async fn close_interrupted(
    tx: &mut super::WriteTx,
    day: &str,
    now_s: &str,
    held: Option<&Held>,
) -> Result<Recovery> {
    let mut rec = Recovery::default();
    let attempts = held.map(|h| h.attempts.as_str());
    let occurrences = held.map(|h| h.occurrences.as_str());
    let checks = held.map(|h| h.checks.as_str());
    // The quota: DingTalk may have counted an interrupted call; it is counted here (a call
    // claimed but not yet sent at a crash is counted too: the count errs high, never low).
    let (starts, lookups): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(p.schedule_conference_id) FROM attempts a INDEXED BY attempts_open \
         JOIN occurrences o ON o.id = a.occurrence_id JOIN policies p ON p.id = o.policy_id WHERE a.outcome IS NULL \
         AND (?1 IS NULL OR a.id IN (SELECT value FROM json_each(?1)))",
    )
    .bind(attempts)
    .fetch_one(&mut **tx)
    .await?;
    let (infos, videos): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE kind <> 'video'), COUNT(*) FILTER (WHERE kind = 'video') \
         FROM checks INDEXED BY checks_open WHERE outcome IS NULL \
         AND (?1 IS NULL OR id IN (SELECT value FROM json_each(?1)))",
    )
    .bind(checks)
    .fetch_one(&mut **tx)
    .await?;
    let mut calls = crate::domain::quota::Calls::default();
    for (api, n) in [
        (Api::StartCloudRecord, starts),
        (Api::ScheduleConference, lookups),
        (Api::ConferenceInfo, infos),
        (Api::CloudRecordVideos, videos),
    ] {
        calls.add(api, u32::try_from(n).unwrap_or(u32::MAX));
    }
    super::usage::add_calls(tx, day, &calls).await?;
    rec.interrupted_attempts = sqlx::query(
        "UPDATE attempts SET outcome = 'interrupted', code = 'interrupted', http_status = COALESCE(http_status, 0), \
         message = 'dingrec stopped before this attempt had an outcome', finished_at = ?1 WHERE outcome IS NULL \
         AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))",
    )
    .bind(now_s)
    .bind(attempts)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // A call may have gone out and started the recording: with verify on, one check settles
    // it before any new StartCloudRecord (recording: succeeded; not: started again).
    rec.settling = sqlx::query(
        "UPDATE occurrences SET state = 'verifying', next_check_at = ?1, next_check_kind = 'start', \
         check_count = MAX(0, (SELECT verify ->> '$.checks' FROM policies WHERE id = occurrences.policy_id) - 1), \
         check_failures = 0, last_code = 'interrupted', updated_at = ?1 \
         WHERE state = 'running' AND (SELECT verify FROM policies WHERE id = occurrences.policy_id) IS NOT NULL \
         AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))",
    )
    .bind(now_s)
    .bind(occurrences)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    rec.interrupted_checks = Sqlite::recover_checks(tx, now_s, checks).await?;
    rec.resumed = sqlx::query(
        "UPDATE occurrences SET state = 'retry_wait', next_attempt_at = ?1, last_code = 'interrupted', updated_at = ?1 \
         WHERE state = 'running' AND window_ends_at > ?1 AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2)))",
    )
    .bind(now_s)
    .bind(occurrences)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    rec.finals.extend(expire_running(tx, now_s, occurrences).await?);
    Ok(rec)
}

/// `scheduled` → `missed`, `retry_wait` → `expired`, for rows whose window has passed. The
/// condition repeats the partial index's own, so SQLite reads only those rows.
async fn sweep_in(conn: &mut sqlx::SqliteConnection, now_s: &str) -> Result<Vec<FinalEvent>> {
    settle(
        conn,
        "UPDATE occurrences INDEXED BY occurrences_window \
         SET state = CASE state WHEN 'scheduled' THEN 'missed' ELSE 'expired' END, \
         next_attempt_at = NULL, updated_at = ?1 \
         WHERE state IN ('scheduled', 'retry_wait') AND window_ends_at <= ?1",
        now_s,
    )
    .await
}

/// Run an `UPDATE` that moves occurrences to a final state as of `now_s` (`?1`), and return them.
async fn settle(
    conn: &mut sqlx::SqliteConnection,
    update: &'static str,
    now_s: &str,
) -> Result<Vec<FinalEvent>> {
    let sql = format!("{update} RETURNING id, policy_name, conference_id, state, last_code, due_at");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_s)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(final_event).collect()
}

#[cfg(test)]
mod meeting_at_migration {
    use sqlx::Connection;

    /// Rows written before `meeting_at` existed get it from the policy's offset, to the millisecond;
    /// manual rows keep NULL.
    #[tokio::test]
    async fn old_rows_get_their_meeting_start_from_the_policy_offset() {
        let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("db");
        for sql in [
            include_str!("../../../migrations/20261126000001_initial.sql"),
            include_str!("../../../migrations/20261202000001_audit_indexes.sql"),
            include_str!("../../../migrations/20261202000002_uncalled_attempts.sql"),
        ] {
            sqlx::raw_sql(sql)
                .execute(&mut db)
                .await
                .expect("earlier migrations");
        }
        sqlx::raw_sql(
            "INSERT INTO policies (id, name, conference_id, host_union_id, layout, small_window_position, at, \
             timezone, start_offset_ms, window_ms, retry, source, created_at, updated_at) VALUES \
             (1, 'p', 'c', 'h', 'grid', 'relative_right', '2030-01-07T08:00:00Z', 'UTC', 90500, 1800000, '{}', 'f', 'x', 'x'); \
             INSERT INTO occurrences (id, policy_id, policy_name, due_at, window_ends_at, trigger, created_at, updated_at) VALUES \
             (1, 1, 'p', '2030-01-07T08:01:30.500Z', '2030-01-07T08:30:00.000Z', 'schedule', 'x', 'x'), \
             (2, 1, 'p', '2030-01-01T00:00:30.250Z', '2030-01-01T00:30:00.000Z', 'catch_up', 'x', 'x'), \
             (3, 1, 'p', '2030-01-07T09:00:00.000Z', '2030-01-07T09:30:00.000Z', 'manual', 'x', 'x');",
        )
        .execute(&mut db)
        .await
        .expect("rows");
        sqlx::raw_sql(include_str!(
            "../../../migrations/20261202000003_meeting_start.sql"
        ))
        .execute(&mut db)
        .await
        .expect("the migration");
        let got: Vec<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, meeting_at FROM occurrences ORDER BY id")
                .fetch_all(&mut db)
                .await
                .expect("read");
        assert_eq!(
            got,
            [
                (1, Some("2030-01-07T08:00:00.000Z".to_owned())),
                (2, Some("2029-12-31T23:58:59.750Z".to_owned())),
                (3, None),
            ]
        );
    }
}

#[cfg(test)]
mod claims {
    use crate::store::Store;

    /// A claim that reads back reads the first `read_back` of the attempts it wrote, in the
    /// tickets' order, inside its own transaction; the rest are tickets only.
    #[tokio::test]
    async fn a_claim_reads_back_the_first_attempts_it_wrote() {
        let dir = tempfile::tempdir().expect("tmp");
        let settings = crate::config::DatabaseSettings {
            path: dir.path().join("d.db"),
            ..crate::config::DatabaseSettings::default()
        };
        let store = Store::open(&settings).await.expect("store");
        sqlx::raw_sql(
            "INSERT INTO policies (id, name, conference_id, host_union_id, layout, small_window_position, at, \
             timezone, start_offset_ms, window_ms, retry, source, created_at, updated_at) VALUES \
             (1, 'p', 'conf', 'host', 'grid', 'relative_right', '2030-01-07T08:00:00Z', 'UTC', 0, 1800000, '{}', 'f', 'x', 'x'); \
             INSERT INTO occurrences (id, policy_id, policy_name, due_at, window_ends_at, next_attempt_at, created_at, updated_at) VALUES \
             (7, 1, 'p', '2030-01-07T08:00:00.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:00.000Z', 'x', 'x'), \
             (8, 1, 'p', '2030-01-07T08:00:01.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:01.000Z', 'x', 'x'), \
             (9, 1, 'p', '2030-01-07T08:00:02.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:02.000Z', 'x', 'x');",
        )
        .execute(store.sqlite_pool().expect("SQLite"))
        .await
        .expect("rows");
        let now = crate::domain::time::parse_utc("2030-01-07T08:00:05Z").expect("now");
        let claim = store.claim_due(now, 10, false, 2).await.expect("claim");
        let occurrences: Vec<i64> = claim.tickets.iter().map(|t| t.occurrence_id).collect();
        assert_eq!(occurrences, [7, 8, 9], "due order");
        let loaded: Vec<(i64, i64, i64)> = claim
            .loaded
            .iter()
            .map(|(id, c)| {
                let c = c.as_ref().expect("decoded");
                (*id, c.attempt_id, c.occurrence_id)
            })
            .collect();
        let want: Vec<(i64, i64, i64)> = claim.tickets[..2]
            .iter()
            .map(|t| (t.attempt_id, t.attempt_id, t.occurrence_id))
            .collect();
        assert_eq!(loaded, want, "the first two, as the tickets name them");
        let intents: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attempts WHERE outcome IS NULL AND started_at = '2030-01-07T08:00:05.000Z'",
        )
        .fetch_one(store.sqlite_pool().expect("SQLite"))
        .await
        .expect("count");
        assert_eq!(intents, 3, "every claimed attempt has its intent row");
        // Nothing more is due: a second claim takes nothing and reads nothing.
        let again = store.claim_due(now, 10, false, 2).await.expect("claim");
        assert!(again.tickets.is_empty() && again.loaded.is_empty());
        store.close().await;
    }
}
