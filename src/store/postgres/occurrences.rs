//! PostgreSQL twin of `store/occurrences.rs`: the queue of due occurrences and their attempts.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::policies::POLICY_COLUMNS;
use super::{FINAL_COLUMNS, Pg, Tx, data, final_event, int, ms};
use crate::domain::outcome::codes;
use crate::domain::policy::{Layout, WindowPosition};
use crate::domain::quota::Api;
use crate::domain::time::fmt_utc;
use crate::domain::{OccurrenceState, Trigger};
use crate::store::types::{
    Claim, Claimed, Completion, FinalEvent, HousekeepingMarks, Meeting, OutcomeRow, PlanCandidate,
    PolicyPlan, Recovery, Shared, Ticket,
};
use crate::store::{Result, StoreError};

/// A planned row; not when its meeting already has an occurrence (`$8` the meeting's start).
const PLAN_INSERT: &str = "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, state, next_attempt_at, \
    trigger, meeting_at, created_at, updated_at) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $9 WHERE NOT EXISTS ( \
    SELECT 1 FROM occurrences WHERE policy_id = $1 AND meeting_at = $8 AND state <> 'cancelled' AND due_at <> $3) \
    ON CONFLICT (policy_id, due_at) WHERE event_conference_id IS NULL DO UPDATE SET state = excluded.state, \
    window_ends_at = excluded.window_ends_at, next_attempt_at = excluded.next_attempt_at, \
    trigger = excluded.trigger, meeting_at = excluded.meeting_at, updated_at = excluded.updated_at \
    WHERE occurrences.state = 'cancelled'";

const STARTED_MEETING_COVERED: &str = "SELECT EXISTS (SELECT 1 FROM occurrences \
     WHERE policy_id = $1 AND state <> 'cancelled' AND due_at < $2 AND window_ends_at > $3)";

/// Due occurrences, earliest first, locked for this claim; rows another daemon is claiming are
/// skipped, not waited for.
const CLAIM_SELECT: &str = "SELECT id, due_at, attempt_count FROM occurrences \
     WHERE state IN ('scheduled', 'retry_wait') AND next_attempt_at <= $1 AND window_ends_at > $1 \
     AND NOT (id = ANY($3)) AND ($4::bigint IS NULL OR id = $4) \
     ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED";

const CLAIM_RETRIES_SELECT: &str = "SELECT id FROM occurrences \
     WHERE state = 'retry_wait' AND next_attempt_at <= $1 AND window_ends_at > $1 \
     ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED";

const LOAD_CLAIMED: &str = "SELECT a.id AS attempt_id, a.attempt_no, o.id, o.policy_name, o.due_at, o.window_ends_at, \
     o.trigger, o.conference_id AS occ_conf, o.throttled_count, o.uncalled_count, o.last_code, p.conference_id AS pol_conf, \
     p.schedule_conference_id, COALESCE(o.host_union_id, p.host_union_id) AS host_union_id, p.layout, p.small_window_position, p.retry::text AS retry, p.enabled, \
     p.verify::text AS verify, \
     p.auto_record IS NOT NULL AND COALESCE(p.auto_record_result, 'refused') <> 'refused' \
       AND o.trigger IN ('schedule', 'catch_up') AS auto_first \
     FROM unnest($1::bigint[]) WITH ORDINALITY AS j (id, ord) JOIN attempts a ON a.id = j.id \
     JOIN occurrences o ON o.id = a.occurrence_id JOIN policies p ON p.id = o.policy_id ORDER BY j.ord";

fn claimed_from_row(r: &PgRow, shared: &mut Shared) -> Result<Claimed> {
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
        attempt_no: int(r, "attempt_no")?,
        policy_name: policy_name.into(),
        due_at: r.try_get("due_at")?,
        window_ends_at: r.try_get("window_ends_at")?,
        trigger: r.try_get("trigger")?,
        meeting,
        host_union_id: shared.host(r.try_get("host_union_id")?),
        layout: Layout::parse(r.try_get("layout")?).map_err(|e| data("layout", e))?,
        small_window_position: WindowPosition::parse(r.try_get("small_window_position")?)
            .map_err(|e| data("small_window_position", e))?,
        retry: shared.retry(r.try_get("retry")?, policy_name),
        throttled_count: int(r, "throttled_count")?,
        uncalled_count: int(r, "uncalled_count")?,
        previous_was_reauth: r.try_get::<Option<&str>, _>("last_code")?
            == Some(codes::INVALID_AUTHENTICATION),
        policy_enabled: r.try_get("enabled")?,
        verify: crate::store::verify_column(r.try_get("verify")?).map_err(|e| data("verify", e))?,
        auto_record_first: r.try_get("auto_first")?,
    })
}

async fn load_claimed<'e, E>(on: E, tickets: &[Ticket]) -> Result<Vec<(i64, Result<Claimed>)>>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let ids: Vec<i64> = tickets.iter().map(|t| t.attempt_id).collect();
    let mut rows = sqlx::query(LOAD_CLAIMED).bind(ids).fetch(on);
    let mut shared = Shared::default();
    let mut out = Vec::with_capacity(tickets.len());
    while let Some(r) = rows.try_next().await? {
        if let Ok(id) = r.try_get("attempt_id") {
            out.push((id, claimed_from_row(&r, &mut shared)));
        }
    }
    Ok(out)
}

/// An occurrence due now (`manual`, `restart`), at the next free millisecond of its policy.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_due_now(
    tx: &mut Tx,
    policy_id: i64,
    policy_name: &str,
    now: DateTime<Utc>,
    window_ends_at: DateTime<Utc>,
    conference_id: Option<&str>,
    trigger: Trigger,
    restart_of: Option<i64>,
) -> Result<i64> {
    let now = ms(now);
    let mut due = now;
    for _ in 0..1_000 {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, conference_id, state, \
             next_attempt_at, trigger, restart_of, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'scheduled', $3, $6, $7, $8, $8) \
             ON CONFLICT (policy_id, due_at) WHERE event_conference_id IS NULL DO NOTHING RETURNING id",
        )
        .bind(policy_id)
        .bind(policy_name)
        .bind(due)
        .bind(ms(window_ends_at))
        .bind(conference_id)
        .bind(trigger)
        .bind(restart_of)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(id) = id {
            return Ok(id);
        }
        due += chrono::TimeDelta::milliseconds(1);
    }
    Err(StoreError::Data(format!(
        "policy '{policy_name}' has an occurrence due at every millisecond from {} on",
        fmt_utc(now)
    )))
}

/// Which attempts and checks a recovery closes: all without an outcome (`None`), or these.
pub(super) struct Held {
    pub attempts: Vec<i64>,
    pub occurrences: Vec<i64>,
    pub checks: Vec<i64>,
}

/// `store::occurrences::close_interrupted`, for the attempts and checks `held` (all when `None`).
pub(super) async fn close_interrupted(
    pg: &Pg,
    tx: &mut Tx,
    now: DateTime<Utc>,
    held: Option<&Held>,
) -> Result<Recovery> {
    let mut rec = Recovery::default();
    let attempts = held.map(|h| h.attempts.clone());
    let occurrences = held.map(|h| h.occurrences.clone());
    let checks = held.map(|h| h.checks.clone());
    let (starts, lookups): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(p.schedule_conference_id) FROM attempts a \
         JOIN occurrences o ON o.id = a.occurrence_id JOIN policies p ON p.id = o.policy_id WHERE a.outcome IS NULL \
         AND ($1::bigint[] IS NULL OR a.id = ANY($1))",
    )
    .bind(&attempts)
    .fetch_one(&mut **tx)
    .await?;
    let (infos, videos): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE kind <> 'video'), COUNT(*) FILTER (WHERE kind = 'video') \
         FROM checks WHERE outcome IS NULL AND ($1::bigint[] IS NULL OR id = ANY($1))",
    )
    .bind(&checks)
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
    super::usage::add_calls(tx, &pg.ctx.usage_day(now), &calls).await?;
    rec.interrupted_attempts = sqlx::query(
        "UPDATE attempts SET outcome = 'interrupted', code = 'interrupted', http_status = COALESCE(http_status, 0), \
         message = 'dingrec stopped before this attempt had an outcome', finished_at = $1 WHERE outcome IS NULL \
         AND ($2::bigint[] IS NULL OR id = ANY($2))",
    )
    .bind(now)
    .bind(&attempts)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    rec.settling = sqlx::query(
        "UPDATE occurrences o SET state = 'verifying', next_check_at = $1, next_check_kind = 'start', \
         check_count = GREATEST(0, (p.verify ->> 'checks')::integer - 1), \
         check_failures = 0, last_code = 'interrupted', updated_at = $1 \
         FROM policies p WHERE p.id = o.policy_id AND o.state = 'running' AND p.verify IS NOT NULL \
         AND ($2::bigint[] IS NULL OR o.id = ANY($2))",
    )
    .bind(now)
    .bind(&occurrences)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    rec.interrupted_checks = recover_checks(tx, now, checks.as_deref()).await?;
    rec.resumed = sqlx::query(
        "UPDATE occurrences SET state = 'retry_wait', next_attempt_at = $1, last_code = 'interrupted', updated_at = $1 \
         WHERE state = 'running' AND window_ends_at > $1 AND ($2::bigint[] IS NULL OR id = ANY($2))",
    )
    .bind(now)
    .bind(&occurrences)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE occurrences SET state = 'expired', next_attempt_at = NULL, updated_at = $1 \
         WHERE state = 'running' AND window_ends_at <= $1 AND ($2::bigint[] IS NULL OR id = ANY($2)) \
         RETURNING {FINAL_COLUMNS}"
    )))
    .bind(now)
    .bind(&occurrences)
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        rec.finals.push(final_event(r)?);
    }
    Ok(rec)
}

/// Run an `UPDATE` that moves occurrences to a final state as of `$1`, and return them.
async fn settle(tx: &mut Tx, update: &'static str, now: DateTime<Utc>) -> Result<Vec<FinalEvent>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{update} RETURNING {FINAL_COLUMNS}")))
        .bind(now)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(final_event).collect()
}

/// `store::checks::recover_checks`: checks without an outcome (all, or `only`) closed as
/// `error` and made again now.
async fn recover_checks(tx: &mut Tx, now: DateTime<Utc>, only: Option<&[i64]>) -> Result<u64> {
    sqlx::query(
        "UPDATE occurrences SET next_check_at = $1, next_check_kind = ( \
           SELECT c.kind FROM checks c WHERE c.occurrence_id = occurrences.id AND c.outcome IS NULL ORDER BY c.id DESC LIMIT 1) \
         WHERE id IN (SELECT occurrence_id FROM checks WHERE outcome IS NULL \
           AND ($2::bigint[] IS NULL OR id = ANY($2)))",
    )
    .bind(ms(now))
    .bind(only)
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query(
        "UPDATE checks SET outcome = 'error', code = 'interrupted', http_status = 0, \
         message = 'dingrec stopped before this check had an outcome; checked again' WHERE outcome IS NULL \
         AND ($1::bigint[] IS NULL OR id = ANY($1))",
    )
    .bind(only)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// `scheduled` → `missed`, `retry_wait` → `expired`, for rows whose window has passed.
async fn sweep_in(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<FinalEvent>> {
    settle(
        tx,
        "UPDATE occurrences SET state = CASE state WHEN 'scheduled' THEN 'missed' ELSE 'expired' END, \
         next_attempt_at = NULL, updated_at = $1 \
         WHERE state IN ('scheduled', 'retry_wait') AND window_ends_at <= $1",
        now,
    )
    .await
}

impl Pg {
    pub async fn plan_candidates(&self, until: DateTime<Utc>, limit: i64) -> Result<Vec<PlanCandidate>> {
        let sql = format!(
            "SELECT id, {POLICY_COLUMNS}, planned_until FROM policies \
             WHERE enabled AND (planned_until IS NULL OR planned_until < $1) \
             ORDER BY planned_until NULLS FIRST LIMIT $2"
        );
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(until))
            .bind(limit)
            .fetch(&self.pool);
        let mut out = Vec::new();
        while let Some(r) = rows.try_next().await? {
            out.push(PlanCandidate {
                policy_id: r.try_get("id")?,
                record: super::policies::record(&r)?,
                planned_until: r.try_get("planned_until")?,
            });
        }
        Ok(out)
    }

    pub async fn write_plans(&self, plans: &[PolicyPlan], now: DateTime<Utc>) -> Result<u64> {
        let now = ms(now);
        let mut written = 0;
        let mut tx = self.begin().await?;
        for plan in plans {
            // Daemons planning the same policy at once write it one after the other.
            sqlx::query("SELECT 1 FROM policies WHERE id = $1 FOR UPDATE")
                .bind(plan.policy_id)
                .execute(&mut *tx)
                .await?;
            for row in &plan.rows {
                let due = ms(row.due_at);
                if row.state == OccurrenceState::Scheduled && row.start <= now {
                    let covered: bool = sqlx::query_scalar(STARTED_MEETING_COVERED)
                        .bind(plan.policy_id)
                        .bind(ms(row.window_ends_at))
                        .bind(ms(row.start))
                        .fetch_one(&mut *tx)
                        .await?;
                    if covered {
                        continue;
                    }
                }
                let res = sqlx::query(PLAN_INSERT)
                    .bind(plan.policy_id)
                    .bind(&plan.policy_name)
                    .bind(due)
                    .bind(ms(row.window_ends_at))
                    .bind(row.state)
                    .bind((row.state == OccurrenceState::Scheduled).then_some(due))
                    .bind(row.trigger)
                    .bind(ms(row.start))
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                written += res.rows_affected();
            }
            sqlx::query("UPDATE policies SET planned_until = $1 WHERE id = $2")
                .bind(ms(plan.planned_until))
                .bind(plan.policy_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    pub async fn housekeeping_marks(&self) -> Result<HousekeepingMarks> {
        let (plan, never, window_end): (Option<DateTime<Utc>>, bool, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT (SELECT MIN(planned_until) FROM policies WHERE enabled), \
             EXISTS (SELECT 1 FROM policies WHERE enabled AND planned_until IS NULL), \
             (SELECT MIN(window_ends_at) FROM occurrences WHERE state IN ('scheduled', 'retry_wait'))",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(HousekeepingMarks {
            first_planned_until: if never {
                Some(DateTime::<Utc>::MIN_UTC)
            } else {
                plan
            },
            first_window_end: window_end,
        })
    }

    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM occurrences WHERE state IN ('scheduled', 'retry_wait')",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        only: Option<i64>,
        retries_first: bool,
        read_back: usize,
    ) -> Result<Claim> {
        let now = ms(now);
        let mut tx = self.begin().await?;
        let mut ids: Vec<i64> = Vec::new();
        let mut first_due = Vec::new();
        if retries_first && only.is_none() {
            ids = sqlx::query_scalar(CLAIM_RETRIES_SELECT)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
        }
        let retry_count = ids.len();
        let room = limit - ids.len() as i64;
        if room > 0 {
            let rows = sqlx::query(CLAIM_SELECT)
                .bind(now)
                .bind(room)
                .bind(&ids)
                .bind(only)
                .fetch_all(&mut *tx)
                .await?;
            for r in &rows {
                if r.try_get::<i32, _>("attempt_count")? == 0 {
                    first_due.push(r.try_get("due_at")?);
                }
                ids.push(r.try_get("id")?);
            }
        }
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Claim::default());
        }
        sqlx::query(
            "UPDATE occurrences SET state = 'running', attempt_count = attempt_count + 1, next_attempt_at = NULL, \
             updated_at = $1 WHERE id = ANY($2)",
        )
        .bind(now)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let written: Vec<(i64, i64)> = sqlx::query_as(
            "INSERT INTO attempts (occurrence_id, attempt_no, started_at, conference_id, instance, lease_until) \
             SELECT o.id, o.attempt_count, $1, COALESCE(o.conference_id, p.conference_id), $2, $3 \
             FROM unnest($4::bigint[]) WITH ORDINALITY AS j (id, ord) JOIN occurrences o ON o.id = j.id \
             JOIN policies p ON p.id = o.policy_id ORDER BY j.ord RETURNING occurrence_id, id",
        )
        .bind(now)
        .bind(crate::instance::this())
        .bind(self.lease_until(now))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let attempt_of: std::collections::HashMap<i64, i64> = written.into_iter().collect();
        let tickets = ids
            .iter()
            .map(|&occurrence_id| {
                attempt_of
                    .get(&occurrence_id)
                    .map(|&attempt_id| Ticket {
                        occurrence_id,
                        attempt_id,
                    })
                    .ok_or_else(|| {
                        StoreError::Data(format!(
                            "claimed occurrence {occurrence_id} but wrote no attempt row"
                        ))
                    })
            })
            .collect::<Result<Vec<Ticket>>>()?;
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
        load_claimed(&self.pool, tickets).await
    }

    pub async fn complete(&self, done: &[Completion], now: DateTime<Utc>) -> Result<()> {
        let rows: Vec<OutcomeRow<'_>> = done.iter().map(OutcomeRow::from).collect();
        let batch = serde_json::to_string(&rows).map_err(|e| data("outcome batch", e))?;
        let mut tx = self.begin().await?;
        // An occurrence moves only with the attempt this batch closes: an attempt that a lease's
        // take-over closed already (its daemon seemed dead and was only slow) changes nothing,
        // even if another daemon is attempting the occurrence again by now.
        sqlx::query(
            "WITH j AS (SELECT * FROM jsonb_to_recordset($2::jsonb) AS j (attempt_id bigint, occurrence_id bigint, \
               finished_at timestamptz, duration_ms bigint, conference_id text, http_status integer, code text, \
               message text, request_id text, outcome text, next_attempt_at timestamptz, state text, throttled integer, \
               uncalled integer, sent_at timestamptz, next_check_at timestamptz, settle boolean)), \
             done AS (UPDATE attempts a SET finished_at = j.finished_at, duration_ms = j.duration_ms, \
               conference_id = COALESCE(j.conference_id, a.conference_id), http_status = j.http_status, code = j.code, \
               message = j.message, request_id = j.request_id, outcome = j.outcome, \
               next_attempt_at = j.next_attempt_at, sent_at = j.sent_at \
               FROM j WHERE a.id = j.attempt_id AND a.outcome IS NULL RETURNING a.id) \
             UPDATE occurrences o SET \
             state = CASE WHEN j.state = 'retry_wait' AND NOT p.enabled THEN 'cancelled' ELSE j.state END, \
             next_attempt_at = CASE WHEN j.state = 'retry_wait' AND NOT p.enabled THEN NULL ELSE j.next_attempt_at END, \
             last_code = j.code, conference_id = COALESCE(j.conference_id, o.conference_id), \
             throttled_count = o.throttled_count + j.throttled, uncalled_count = o.uncalled_count + j.uncalled, \
             next_check_at = j.next_check_at, \
             next_check_kind = CASE WHEN j.next_check_at IS NULL THEN NULL ELSE 'start' END, \
             check_count = CASE WHEN j.settle THEN GREATEST(0, (p.verify ->> 'checks')::integer - 1) ELSE 0 END, \
             check_failures = 0, updated_at = $1 \
             FROM j JOIN done ON done.id = j.attempt_id, policies p \
             WHERE o.id = j.occurrence_id AND p.id = o.policy_id AND o.state = 'running'",
        )
        .bind(ms(now))
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        let mut calls = crate::domain::quota::Calls::default();
        for d in done {
            calls.merge(&d.calls);
        }
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &calls).await?;
        tx.commit().await
    }

    /// At start. SQLite's recovery closes every attempt without an outcome (its lock says no
    /// other process runs); here other daemons may hold some, so only those whose lease ran out
    /// and those of an earlier process of this name are closed ([`Pg::take_over`]), then the
    /// catch-up and the sweep as on SQLite.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<Recovery> {
        let mut rec = self.take_over(now, true).await?;
        let now = ms(now);
        let mut tx = self.begin().await?;
        rec.caught_up = sqlx::query(
            "UPDATE occurrences SET trigger = 'catch_up', updated_at = $1 WHERE id IN ( \
               SELECT o.id FROM occurrences o WHERE o.state = 'scheduled' AND o.due_at <= $1 AND o.window_ends_at > $1 \
               AND o.trigger = 'schedule' AND NOT EXISTS (SELECT 1 FROM occurrences n WHERE n.policy_id = o.policy_id \
                 AND n.state = 'scheduled' AND n.due_at > o.due_at AND n.due_at <= $1))",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let older = settle(
            &mut tx,
            "UPDATE occurrences SET state = 'missed', next_attempt_at = NULL, updated_at = $1 WHERE state = 'scheduled' \
             AND due_at <= $1 AND EXISTS (SELECT 1 FROM occurrences n WHERE n.policy_id = occurrences.policy_id \
               AND n.state = 'scheduled' AND n.due_at > occurrences.due_at AND n.due_at <= $1)",
            now,
        )
        .await?;
        rec.finals.extend(older);
        rec.finals.extend(sweep_in(&mut tx, now).await?);
        // Alerts whose send was started and then held (`alerts_due`) by a process that stopped
        // mid-send go again now: the same batch is the same message id, which the robot shows once.
        sqlx::query(
            "UPDATE alerts SET next_attempt_at = $1 WHERE state = 'pending' AND batch IS NOT NULL \
             AND last_error IS NULL AND next_attempt_at > $1",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rec)
    }

    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Vec<FinalEvent>> {
        let now = ms(now);
        let any: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM occurrences WHERE state IN ('scheduled', 'retry_wait') AND window_ends_at <= $1)",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        if !any {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let out = sweep_in(&mut tx, now).await?;
        tx.commit().await?;
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
        let mut tx = self.begin().await?;
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
        let now = ms(now);
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE attempts SET outcome = 'interrupted', code = 'interrupted', http_status = COALESCE(http_status, 0), \
             message = $1, finished_at = $2 WHERE occurrence_id = $3 AND outcome IS NULL",
        )
        .bind(why)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, last_code = 'interrupted', \
             updated_at = $1 WHERE id = $2 AND state IN ('scheduled', 'running', 'retry_wait')",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn occurrence_state(&self, id: i64) -> Result<Option<(OccurrenceState, Option<String>)>> {
        Ok(
            sqlx::query_as("SELECT state, last_code FROM occurrences WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn live_counts(&self) -> Result<Vec<(OccurrenceState, i64)>> {
        Ok(sqlx::query_as(
            "SELECT state, COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait', 'verifying') \
             GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn final_counts(&self, since: DateTime<Utc>) -> Result<Vec<(OccurrenceState, i64)>> {
        Ok(sqlx::query_as(
            "SELECT state, COUNT(*) FROM occurrences \
             WHERE state IN ('succeeded', 'failed', 'expired', 'missed', 'cancelled') AND due_at >= $1 GROUP BY state",
        )
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn policies_fingerprint(&self) -> Result<String> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*)::text || '/' || COALESCE(MAX(updated_at)::text, '') || '/' || COALESCE(SUM(id), 0)::text \
             FROM policies WHERE enabled",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn enabled_policy_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM policies WHERE enabled")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn last_success_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(finished_at) FROM attempts WHERE outcome = 'success'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn prune_before(&self, before: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "DELETE FROM occurrences WHERE due_at < $1 AND state NOT IN ('scheduled', 'running', 'retry_wait', 'verifying')",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM alerts WHERE created_at < $1 AND state <> 'pending'")
            .bind(before)
            .execute(&mut *tx)
            .await?;
        // Events go with the attempts (an event whose occurrence is still live stays).
        sqlx::query(
            "DELETE FROM events WHERE received_at < $1 AND (occurrence_id IS NULL \
             OR occurrence_id NOT IN (SELECT id FROM occurrences WHERE due_at >= $1 \
             OR state IN ('scheduled', 'running', 'retry_wait', 'verifying')))",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }
}
