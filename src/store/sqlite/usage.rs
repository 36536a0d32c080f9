//! `api_usage` and `quota_events` (`docs/quota.md`): the calls DingTalk counted against the
//! monthly quota, per day of the quota's time zone and API, and what was said once a month.

use chrono::{DateTime, Utc};

use super::Sqlite;
use crate::domain::quota::{Calls, Month};
use crate::domain::time::fmt_utc;
use crate::store::Result;

/// A month's calls by API (the month's label, `2026-12`): a range of the primary key.
pub(crate) const MONTH_CALLS: &str = "SELECT api, SUM(calls) FROM api_usage \
     WHERE day >= ?1 || '-01' AND day <= ?1 || '-31' GROUP BY api";

/// Attempts DingTalk refused because the quota ran out, in a month (its UTC bounds), through a
/// small partial index (the code is spelled out so that the index applies).
pub(crate) const QUOTA_REFUSED: &str = "SELECT COUNT(*) FROM attempts INDEXED BY attempts_quota_refused \
     WHERE code = 'Forbidden.AccessDenied.ApiCountLimitForOrg' AND started_at >= ?1 AND started_at < ?2";

/// Adds `calls` made on `day` (one statement per API that has calls).
pub(crate) async fn add_calls(conn: &mut sqlx::SqliteConnection, day: &str, calls: &Calls) -> Result<()> {
    for (api, n) in calls.iter() {
        sqlx::query(
            "INSERT INTO api_usage (day, api, calls) VALUES (?1, ?2, ?3) \
             ON CONFLICT (day, api) DO UPDATE SET calls = calls + excluded.calls",
        )
        .bind(day)
        .bind(api.as_str())
        .bind(i64::from(n))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Sqlite {
    pub async fn add_usage(&self, calls: &Calls, at: DateTime<Utc>) -> Result<()> {
        if calls.total() == 0 {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        add_calls(&mut tx, &self.ctx.usage_day(at), calls).await?;
        tx.commit().await
    }

    pub async fn month_calls(&self, month: &Month) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(MONTH_CALLS)
            .bind(&month.label)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn month_started(&self, month: &Month) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(DISTINCT occurrence_id) FROM attempts \
             WHERE started_at >= ?1 AND started_at < ?2 AND sent_at IS NOT NULL",
        )
        .bind(fmt_utc(month.start))
        .bind(fmt_utc(month.end))
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn quota_event_once(&self, month: &Month, event: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("INSERT OR IGNORE INTO quota_events (month, event, at) VALUES (?, ?, ?)")
            .bind(&month.label)
            .bind(event)
            .bind(fmt_utc(now))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }

    pub async fn refused_for_quota(&self, month: &Month) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(QUOTA_REFUSED)
            .bind(fmt_utc(month.start))
            .bind(fmt_utc(month.end))
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
