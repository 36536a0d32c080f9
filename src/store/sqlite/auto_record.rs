//! DingTalk's own auto-recording (docs/auto-record.md): the policies that have it, their last
//! settings call, and the rows of `checks` its calls leave.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Sqlite;
use super::occurrences::opt_time;
use crate::domain::auto_record::SetResult;
use crate::domain::time::fmt_utc;
use crate::store::Result;
use crate::store::types::*;

const AUTO_RECORD_POLICIES: &str = "SELECT p.id, p.name, p.schedule_conference_id, p.layout, p.auto_record, p.alert, \
     p.auto_record_for, p.auto_record_at, p.auto_record_result, p.auto_record_occurrence, n.id AS next_id, n.due_at AS next_due \
     FROM policies p INDEXED BY policies_auto_record \
     LEFT JOIN occurrences n ON n.id = (SELECT o.id FROM occurrences o INDEXED BY occurrences_by_policy \
       WHERE o.policy_id = p.id AND o.state = 'scheduled' AND o.due_at > ?1 ORDER BY o.due_at LIMIT 1) \
     WHERE p.auto_record IS NOT NULL AND p.enabled = 1 AND p.schedule_conference_id IS NOT NULL ORDER BY p.id";

/// A due-time check's effect on the policy's misses in a row: `auto_recorded` ends the run, an
/// occurrence's first due-time check finding `auto_record_missed` adds one (its later attempts'
/// checks do not, nor a miss after the setting had recorded it: someone stopped that recording).
const AUTO_MISSES: &str = "UPDATE policies SET auto_record_misses = CASE WHEN ?1 = 'auto_record_missed' \
     THEN auto_record_misses + 1 ELSE 0 END \
     WHERE id = (SELECT policy_id FROM occurrences WHERE id = ?2) AND (?1 = 'auto_recorded' OR (?1 = 'auto_record_missed' \
       AND (SELECT COUNT(*) FROM checks WHERE occurrence_id = ?2 \
         AND outcome IN ('auto_record_missed', 'auto_recorded')) = 1)) \
     RETURNING auto_record_misses";

const INSERT_CHECK: &str = "INSERT INTO checks (occurrence_id, kind, at, duration_ms, http_status, code, message, \
     request_id, meeting_status, cloud_record_status, owner_union_id, outcome) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

impl Sqlite {
    pub async fn auto_record_policies(&self, now: DateTime<Utc>) -> Result<Vec<AutoRecordPolicy>> {
        let rows = sqlx::query(AUTO_RECORD_POLICIES)
            .bind(fmt_utc(now))
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                AutoRecordRow {
                    policy_id: r.try_get("id")?,
                    policy_name: r.try_get("name")?,
                    schedule_conference_id: r.try_get("schedule_conference_id")?,
                    layout: r.try_get("layout")?,
                    auto_record: r.try_get("auto_record")?,
                    alert: r.try_get("alert")?,
                    last_for: r.try_get("auto_record_for")?,
                    last_at: opt_time(r, "auto_record_at")?,
                    last_result: r.try_get("auto_record_result")?,
                    last_occurrence: r.try_get("auto_record_occurrence")?,
                    next_id: r.try_get("next_id")?,
                    next_due: opt_time(r, "next_due")?,
                }
                .policy()
            })
            .collect()
    }

    pub async fn claim_auto_record(
        &self,
        policy_id: i64,
        seen_at: Option<DateTime<Utc>>,
        for_setting: &str,
        occurrence_id: i64,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE policies SET auto_record_for = ?, auto_record_at = ?, auto_record_result = 'pending', \
             auto_record_code = NULL, auto_record_occurrence = ? WHERE id = ? AND auto_record_at IS ?",
        )
        .bind(for_setting)
        .bind(fmt_utc(now))
        .bind(occurrence_id)
        .bind(policy_id)
        .bind(seen_at.map(fmt_utc))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn finish_auto_record(
        &self,
        policy_id: i64,
        for_setting: &str,
        result: SetResult,
        check: &AutoCheck<'_>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        insert_check(&mut tx, check).await?;
        sqlx::query(
            "UPDATE policies SET auto_record_result = ?, auto_record_code = ? \
             WHERE id = ? AND auto_record_for = ? AND auto_record_result = 'pending'",
        )
        .bind(result.as_str())
        .bind(&check.result.code)
        .bind(policy_id)
        .bind(for_setting)
        .execute(&mut *tx)
        .await?;
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &check.result.calls).await?;
        tx.commit().await
    }

    pub async fn record_auto_check(&self, check: &AutoCheck<'_>, now: DateTime<Utc>) -> Result<Option<i64>> {
        let mut tx = self.begin_write().await?;
        insert_check(&mut tx, check).await?;
        let misses: Option<i64> = sqlx::query_scalar(AUTO_MISSES)
            .bind(check.outcome.as_str())
            .bind(check.occurrence_id)
            .fetch_optional(&mut *tx)
            .await?;
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &check.result.calls).await?;
        tx.commit().await?;
        Ok(misses)
    }
}

async fn insert_check(tx: &mut super::WriteTx, c: &AutoCheck<'_>) -> Result<()> {
    let r = c.result;
    sqlx::query(INSERT_CHECK)
        .bind(c.occurrence_id)
        .bind(c.kind.as_str())
        .bind(fmt_utc(c.at))
        .bind(r.duration_ms)
        .bind(r.http_status)
        .bind(&r.code)
        .bind(&r.message)
        .bind(&r.request_id)
        .bind(r.meeting_status)
        .bind(r.cloud_record_status)
        .bind(&r.owner_union_id)
        .bind(c.outcome.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
