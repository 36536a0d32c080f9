//! The `checks` table (`docs/database.md`): claimed like attempts (the intent row, `outcome` NULL, before the
//! call; the outcome and the occurrence's next step after it, in one transaction), so a check in
//! flight at a crash is redone at the next start, not lost.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Sqlite;
use super::occurrences::insert_due_now;
use crate::domain::time::{fmt_utc, parse_utc};
use crate::domain::verify::{CheckStep, CheckWrite};
use crate::domain::{CheckKind, CheckOutcome, OccurrenceState, RetryPolicy, Trigger};
use crate::store::types::*;
use crate::store::{Result, StoreError, verify_column};

/// Occurrences whose next check is due, earliest first.
pub(crate) const CLAIM_CHECKS: &str = "INSERT INTO checks (occurrence_id, kind, at, instance, lease_until) \
     SELECT id, next_check_kind, ?1, ?3, ?4 FROM occurrences INDEXED BY occurrences_next_check \
     WHERE next_check_at <= ?1 AND next_check_kind IS NOT NULL ORDER BY next_check_at, id LIMIT ?2 \
     RETURNING id";

/// The earliest due check.
pub(crate) const NEXT_CHECK: &str = "SELECT MIN(next_check_at) FROM occurrences INDEXED BY occurrences_next_check \
     WHERE next_check_at IS NOT NULL";

pub(crate) const LOAD_CHECKS: &str = "SELECT c.id AS check_id, c.kind, o.id, o.policy_id, o.policy_name, o.state, \
     COALESCE(o.conference_id, p.conference_id) AS conference_id, o.due_at, o.window_ends_at, o.check_count, \
     o.check_failures, o.attempt_count - o.throttled_count - o.uncalled_count AS counted, COALESCE(o.host_union_id, p.host_union_id) AS host_union_id, p.retry, \
     p.verify, p.enabled, p.window_ms - p.start_offset_ms AS restart_window_ms \
     FROM json_each(?) AS j CROSS JOIN checks c ON c.id = j.value JOIN occurrences o ON o.id = c.occurrence_id \
     JOIN policies p ON p.id = o.policy_id ORDER BY j.key";

fn bad(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Data(format!("{col}: {e}"))
}

impl Sqlite {
    pub async fn claim_checks(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DueCheck>> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = sqlx::query_scalar(CLAIM_CHECKS)
            .bind(&now_s)
            .bind(limit)
            .bind(crate::instance::this())
            .bind(self.lease_until(now))
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(&ids).map_err(|e| bad("check ids", e))?;
        sqlx::query(
            "UPDATE occurrences SET next_check_at = NULL, next_check_kind = NULL \
             WHERE id IN (SELECT occurrence_id FROM checks WHERE id IN (SELECT value FROM json_each(?)))",
        )
        .bind(&list)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(LOAD_CHECKS).bind(&list).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let time = |col: &str| -> Result<DateTime<Utc>> {
                let s: &str = r.try_get(col)?;
                parse_utc(s).map_err(|e| bad(col, e))
            };
            let retry: &str = r.try_get("retry")?;
            let retry: RetryPolicy = serde_json::from_str(retry).unwrap_or_default();
            let counted: i64 = r.try_get("counted")?;
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
                due_at: time("due_at")?,
                window_ends_at: time("window_ends_at")?,
                verify: verify_column(r.try_get("verify")?).map_err(|e| bad("verify", e))?,
                retry,
                check_count: u32::try_from(r.try_get::<i64, _>("check_count")?).unwrap_or(0),
                check_failures: u32::try_from(r.try_get::<i64, _>("check_failures")?).unwrap_or(0),
                attempts_left: counted < i64::from(retry.maximum_attempts),
                policy_enabled: r.try_get::<i64, _>("enabled")? != 0,
                restart_window_ms: r.try_get("restart_window_ms")?,
            });
        }
        Ok(out)
    }

    pub async fn checks_pending(&self) -> Result<bool> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM checks INDEXED BY checks_open WHERE outcome IS NULL) \
             OR EXISTS (SELECT 1 FROM occurrences INDEXED BY occurrences_next_check WHERE next_check_at IS NOT NULL)",
        )
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn next_check_at(&self) -> Result<Option<DateTime<Utc>>> {
        let t: Option<String> = sqlx::query_scalar(NEXT_CHECK).fetch_one(self.pool()).await?;
        t.map(|s| parse_utc(&s).map_err(|e| bad("next_check_at", e)))
            .transpose()
    }

    pub async fn complete_check(
        &self,
        c: &DueCheck,
        result: &CheckResult,
        outcome: CheckOutcome,
        write: &CheckWrite,
        now: DateTime<Utc>,
    ) -> Result<CheckEffect> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE checks SET duration_ms = ?, http_status = ?, code = ?, message = ?, request_id = ?, \
             meeting_status = ?, cloud_record_status = ?, owner_union_id = ?, videos = ?, video_duration_ms = ?, \
             video_file_size = ?, outcome = ? WHERE id = ? AND outcome IS NULL",
        )
        .bind(result.duration_ms)
        .bind(result.http_status)
        .bind(&result.code)
        .bind(&result.message)
        .bind(&result.request_id)
        .bind(result.meeting_status)
        .bind(result.cloud_record_status)
        .bind(&result.owner_union_id)
        .bind(&result.videos)
        .bind(result.video_duration_ms)
        .bind(result.video_file_size)
        .bind(outcome)
        .bind(c.check_id)
        .execute(&mut *tx)
        .await?;
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &result.calls).await?;
        let counts = i64::from(write.counts);
        let set_next = |t: Option<(CheckKind, DateTime<Utc>)>| (t.map(|x| fmt_utc(x.1)), t.map(|x| x.0));
        let effect = match write.step {
            CheckStep::Again(kind, at) => {
                let (at, kind) = set_next(Some((kind, at)));
                sqlx::query(
                    "UPDATE occurrences SET next_check_at = ?, next_check_kind = ?, \
                     check_count = check_count + ?, check_failures = CASE WHEN ? THEN check_failures + 1 ELSE 0 END, \
                     updated_at = ? WHERE id = ?",
                )
                .bind(at)
                .bind(kind)
                .bind(counts)
                .bind(write.failed)
                .bind(&now_s)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::None
            }
            CheckStep::Succeeded { verified, then } => {
                let (at, kind) = set_next(then);
                sqlx::query(
                    "UPDATE occurrences SET state = 'succeeded', verified_at = ?, next_check_at = ?, next_check_kind = ?, next_attempt_at = NULL, \
                     check_count = check_count + ?, check_failures = 0, updated_at = ? WHERE id = ? AND state = 'verifying'",
                )
                .bind(verified.then_some(&now_s))
                .bind(at)
                .bind(kind)
                .bind(counts)
                .bind(&now_s)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::State(OccurrenceState::Succeeded)
            }
            CheckStep::StartAgain(state) => {
                // After a 200 the retry is now; after an answer that was settled by this check, the
                // retry that answer asked for (its backoff), and its code stays the last one.
                sqlx::query(
                    "UPDATE occurrences SET state = ?1, \
                     next_attempt_at = CASE WHEN ?2 THEN MAX(?3, COALESCE(next_attempt_at, ?3)) END, \
                     last_code = CASE WHEN next_attempt_at IS NULL THEN ?4 ELSE last_code END, \
                     check_count = check_count + ?5, check_failures = 0, updated_at = ?3 \
                     WHERE id = ?6 AND state = 'verifying'",
                )
                .bind(state)
                .bind(state == OccurrenceState::RetryWait)
                .bind(&now_s)
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
                     last_code = CASE WHEN next_attempt_at IS NULL THEN ?1 ELSE last_code END, next_attempt_at = NULL, \
                     check_count = check_count + ?2, updated_at = ?3 WHERE id = ?4 AND state = 'verifying'",
                )
                .bind(crate::domain::outcome::codes::NOT_RECORDING)
                .bind(counts)
                .bind(&now_s)
                .bind(c.occurrence_id)
                .execute(&mut *tx)
                .await?;
                CheckEffect::State(OccurrenceState::Expired)
            }
            CheckStep::Restart(ends) => CheckEffect::Restarted(
                insert_due_now(
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

    /// Checks left without an outcome (all at start, or those in the JSON array `only`) are
    /// closed as `error` and made again now.
    pub(crate) async fn recover_checks(
        tx: &mut super::WriteTx,
        now_s: &str,
        only: Option<&str>,
    ) -> Result<u64> {
        sqlx::query(
            "UPDATE occurrences SET next_check_at = ?1, next_check_kind = ( \
               SELECT c.kind FROM checks c WHERE c.occurrence_id = occurrences.id AND c.outcome IS NULL ORDER BY c.id DESC LIMIT 1) \
             WHERE id IN (SELECT occurrence_id FROM checks INDEXED BY checks_open WHERE outcome IS NULL \
               AND (?2 IS NULL OR id IN (SELECT value FROM json_each(?2))))",
        )
        .bind(now_s)
        .bind(only)
        .execute(&mut **tx)
        .await?;
        Ok(sqlx::query(
            "UPDATE checks SET outcome = 'error', code = 'interrupted', http_status = 0, \
             message = 'dingrec stopped before this check had an outcome; checked again' WHERE outcome IS NULL \
             AND (?1 IS NULL OR id IN (SELECT value FROM json_each(?1)))",
        )
        .bind(only)
        .execute(&mut **tx)
        .await?
        .rows_affected())
    }
}
