//! PostgreSQL twin of `store/sqlite/auto_record.rs`: the policies with DingTalk's own
//! auto-recording, their last settings call, and the rows of `checks` its calls leave.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::{Pg, Tx, ms};
use crate::domain::auto_record::SetResult;
use crate::store::Result;
use crate::store::types::{AutoCheck, AutoRecordPolicy, AutoRecordRow};

const AUTO_RECORD_POLICIES: &str = "SELECT p.id, p.name, p.schedule_conference_id, p.layout, p.auto_record::text AS auto_record, \
     p.alert::text AS alert, p.auto_record_for, p.auto_record_at, p.auto_record_result, p.auto_record_occurrence, n.id AS next_id, n.due_at AS next_due \
     FROM policies p \
     LEFT JOIN LATERAL (SELECT o.id, o.due_at FROM occurrences o \
       WHERE o.policy_id = p.id AND o.state = 'scheduled' AND o.due_at > $1 ORDER BY o.due_at LIMIT 1) n ON true \
     WHERE p.auto_record IS NOT NULL AND p.enabled AND p.schedule_conference_id IS NOT NULL ORDER BY p.id";

/// As SQLite's: `auto_recorded` ends the run of misses, an occurrence's first
/// `auto_record_missed` adds one.
const AUTO_MISSES: &str = "UPDATE policies SET auto_record_misses = CASE WHEN $1 = 'auto_record_missed' \
     THEN auto_record_misses + 1 ELSE 0 END \
     WHERE id = (SELECT policy_id FROM occurrences WHERE id = $2) AND ($1 = 'auto_recorded' OR ($1 = 'auto_record_missed' \
       AND (SELECT COUNT(*) FROM checks WHERE occurrence_id = $2 \
         AND outcome IN ('auto_record_missed', 'auto_recorded')) = 1)) \
     RETURNING auto_record_misses";

const INSERT_CHECK: &str = "INSERT INTO checks (occurrence_id, kind, at, duration_ms, http_status, code, message, \
     request_id, meeting_status, cloud_record_status, owner_union_id, outcome) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

impl Pg {
    pub async fn auto_record_policies(&self, now: DateTime<Utc>) -> Result<Vec<AutoRecordPolicy>> {
        let rows = sqlx::query(AUTO_RECORD_POLICIES)
            .bind(now)
            .fetch_all(&self.pool)
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
                    last_at: r.try_get("auto_record_at")?,
                    last_result: r.try_get("auto_record_result")?,
                    last_occurrence: r.try_get("auto_record_occurrence")?,
                    next_id: r.try_get("next_id")?,
                    next_due: r.try_get("next_due")?,
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
        let n = sqlx::query(
            "UPDATE policies SET auto_record_for = $1, auto_record_at = $2, auto_record_result = 'pending', \
             auto_record_code = NULL, auto_record_occurrence = $5 WHERE id = $3 AND auto_record_at IS NOT DISTINCT FROM $4",
        )
        .bind(for_setting)
        .bind(ms(now))
        .bind(policy_id)
        .bind(seen_at)
        .bind(occurrence_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
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
        let mut tx = self.begin().await?;
        insert_check(&mut tx, check).await?;
        sqlx::query(
            "UPDATE policies SET auto_record_result = $1, auto_record_code = $2 \
             WHERE id = $3 AND auto_record_for = $4 AND auto_record_result = 'pending'",
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
        let mut tx = self.begin().await?;
        insert_check(&mut tx, check).await?;
        let misses: Option<i32> = sqlx::query_scalar(AUTO_MISSES)
            .bind(check.outcome.as_str())
            .bind(check.occurrence_id)
            .fetch_optional(&mut *tx)
            .await?;
        super::usage::add_calls(&mut tx, &self.ctx.usage_day(now), &check.result.calls).await?;
        tx.commit().await?;
        Ok(misses.map(i64::from))
    }
}

async fn insert_check(tx: &mut Tx, c: &AutoCheck<'_>) -> Result<()> {
    let r = c.result;
    sqlx::query(INSERT_CHECK)
        .bind(c.occurrence_id)
        .bind(c.kind.as_str())
        .bind(ms(c.at))
        .bind(r.duration_ms)
        .bind(i32::from(r.http_status))
        .bind(&r.code)
        .bind(&r.message)
        .bind(&r.request_id)
        .bind(r.meeting_status.and_then(|v| i32::try_from(v).ok()))
        .bind(r.cloud_record_status.and_then(|v| i32::try_from(v).ok()))
        .bind(&r.owner_union_id)
        .bind(c.outcome.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
