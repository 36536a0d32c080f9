//! PostgreSQL twin of `store/checks.rs`: checks claimed like attempts.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{Pg, data, int, ms};
use crate::domain::verify::{CheckStep, CheckWrite};
use crate::domain::{CheckKind, CheckOutcome, OccurrenceState, RetryPolicy, Trigger};
use crate::store::Result;
use crate::store::types::{CheckEffect, CheckResult, DueCheck};

/// Occurrences whose next check is due, earliest first, locked for this claim (others skipped).
const CLAIM_CHECKS: &str = "INSERT INTO checks (occurrence_id, kind, at, instance, lease_until) \
     SELECT id, next_check_kind, $1, $3, $4 FROM ( \
       SELECT id, next_check_kind FROM occurrences WHERE next_check_at <= $1 AND next_check_kind IS NOT NULL \
       ORDER BY next_check_at, id LIMIT $2 FOR UPDATE SKIP LOCKED) AS due \
     RETURNING id";

const LOAD_CHECKS: &str = "SELECT c.id AS check_id, c.kind, o.id, o.policy_id, o.policy_name, o.state, \
     COALESCE(o.conference_id, p.conference_id) AS conference_id, o.due_at, o.window_ends_at, o.check_count, \
     o.check_failures, o.attempt_count - o.throttled_count - o.uncalled_count AS counted, COALESCE(o.host_union_id, p.host_union_id) AS host_union_id, \
     p.retry::text AS retry, p.verify::text AS verify, p.enabled, p.window_ms - p.start_offset_ms AS restart_window_ms \
     FROM unnest($1::bigint[]) WITH ORDINALITY AS j (id, ord) JOIN checks c ON c.id = j.id \
     JOIN occurrences o ON o.id = c.occurrence_id JOIN policies p ON p.id = o.policy_id ORDER BY j.ord";

impl Pg {
    pub async fn claim_checks(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueCheck>> {
        let now = ms(now);
        let mut tx = self.begin().await?;
        let ids: Vec<i64> = sqlx::query_scalar(CLAIM_CHECKS)
            .bind(now)
            .bind(limit)
            .bind(crate::instance::this())
            .bind(self.lease_until(now))
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        sqlx::query(
            "UPDATE occurrences SET next_check_at = NULL, next_check_kind = NULL \
             WHERE id IN (SELECT occurrence_id FROM checks WHERE id = ANY($1))",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(LOAD_CHECKS).bind(&ids).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let retry: &str = r.try_get("retry")?;
            let retry: RetryPolicy = serde_json::from_str(retry).unwrap_or_default();
            let counted = int(r, "counted")?;
            let host: &str = r.try_get("host_union_id")?;
            let conf: Option<&str> = r.try_get("conference_id")?;
            let name: &str = r.try_get("policy_name")?;
            out.push(DueCheck {
                check_id: r.try_get("check_id")?,
                kind: r.try_get("kind")?,
                occurrence_id: r.try_get("id")?,
                policy_id: r.try_get("policy_id")?,
                policy_name: name.into(),
                state: r.try_get("state")?,
                conference_id: conf.map(Box::from),
                host_union_id: host.into(),
                due_at: r.try_get("due_at")?,
                window_ends_at: r.try_get("window_ends_at")?,
                verify: crate::store::verify_column(r.try_get("verify")?).map_err(|e| data("verify", e))?,
                retry,
                check_count: u32::try_from(r.try_get::<i32, _>("check_count")?).unwrap_or(0),
                check_failures: u32::try_from(r.try_get::<i32, _>("check_failures")?).unwrap_or(0),
                attempts_left: counted < i64::from(retry.maximum_attempts),
                policy_enabled: r.try_get("enabled")?,
                restart_window_ms: r.try_get("restart_window_ms")?,
            });
        }
        Ok(out)
    }

    pub async fn checks_pending(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM checks WHERE outcome IS NULL) \
             OR EXISTS (SELECT 1 FROM occurrences WHERE next_check_at IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn next_check_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT MIN(next_check_at) FROM occurrences WHERE next_check_at IS NOT NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn complete_check(
        &self,
        c: &DueCheck,
        result: &CheckResult,
        outcome: CheckOutcome,
        write: &CheckWrite,
        now: DateTime<Utc>,
    ) -> Result<CheckEffect> {
        let now = ms(now);
        let mut tx = self.begin().await?;
        sqlx::query(
            "UPDATE checks SET duration_ms = $1, http_status = $2, code = $3, message = $4, request_id = $5, \
             meeting_status = $6, cloud_record_status = $7, owner_union_id = $8, videos = $9::jsonb, \
             video_duration_ms = $10, video_file_size = $11, outcome = $12 WHERE id = $13 AND outcome IS NULL",
        )
        .bind(result.duration_ms)
        .bind(i32::from(result.http_status))
        .bind(&result.code)
        .bind(&result.message)
        .bind(&result.request_id)
        .bind(result.meeting_status.and_then(|v| i32::try_from(v).ok()))
        .bind(result.cloud_record_status.and_then(|v| i32::try_from(v).ok()))
        .bind(&result.owner_union_id)
        .bind(&result.videos)
        .bind(result.video_duration_ms)
        .bind(result.video_file_size)
        .bind(outcome)
        .bind(c.check_id)
        .execute(&mut *tx)
        .await?;
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &result.calls).await?;
        let counts = i32::from(write.counts);
        let set_next = |t: Option<(CheckKind, DateTime<Utc>)>| (t.map(|x| ms(x.1)), t.map(|x| x.0));
        let effect = match write.step {
            CheckStep::Again(kind, at) => {
                let (at, kind) = set_next(Some((kind, at)));
                sqlx::query(
                    "UPDATE occurrences SET next_check_at = $1, next_check_kind = $2, \
                     check_count = check_count + $3, check_failures = CASE WHEN $4 THEN check_failures + 1 ELSE 0 END, \
                     updated_at = $5 WHERE id = $6",
                )
                .bind(at)
                .bind(kind)
                .bind(counts)
                .bind(write.failed)
                .bind(now)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::None
            }
            CheckStep::Succeeded { verified, then } => {
                let (at, kind) = set_next(then);
                sqlx::query(
                    "UPDATE occurrences SET state = 'succeeded', verified_at = $1, next_check_at = $2, next_check_kind = $3, \
                     next_attempt_at = NULL, check_count = check_count + $4, check_failures = 0, updated_at = $5 \
                     WHERE id = $6 AND state = 'verifying'",
                )
                .bind(verified.then_some(now))
                .bind(at)
                .bind(kind)
                .bind(counts)
                .bind(now)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::State(OccurrenceState::Succeeded)
            }
            CheckStep::StartAgain(state) => {
                sqlx::query(
                    "UPDATE occurrences SET state = $1, \
                     next_attempt_at = CASE WHEN $2 THEN GREATEST($3, COALESCE(next_attempt_at, $3)) END, \
                     last_code = CASE WHEN next_attempt_at IS NULL THEN $4 ELSE last_code END, \
                     check_count = check_count + $5, check_failures = 0, updated_at = $3 \
                     WHERE id = $6 AND state = 'verifying'",
                )
                .bind(state)
                .bind(state == OccurrenceState::RetryWait)
                .bind(now)
                .bind(crate::domain::outcome::codes::NOT_RECORDING)
                .bind(counts)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::State(state)
            }
            CheckStep::Expired => {
                sqlx::query(
                    "UPDATE occurrences SET state = 'expired', \
                     last_code = CASE WHEN next_attempt_at IS NULL THEN $1 ELSE last_code END, next_attempt_at = NULL, \
                     check_count = check_count + $2, updated_at = $3 WHERE id = $4 AND state = 'verifying'",
                )
                .bind(crate::domain::outcome::codes::NOT_RECORDING)
                .bind(counts)
                .bind(now)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::State(OccurrenceState::Expired)
            }
            CheckStep::Restart(ends) => CheckEffect::Restarted(
                super::occurrences::insert_due_now(
                    &mut tx,
                    c.policy_id,
                    &c.policy_name,
                    now,
                    ends,
                    c.conference_id.as_deref(),
                    Trigger::Restart,
                    Some(c.occurrence_id),
                )
                .await?,
            ),
            CheckStep::Nothing => CheckEffect::None,
        };
        tx.commit().await?;
        Ok(effect)
    }
}
