//! PostgreSQL twin of `store/usage.rs`: the calls DingTalk counted, per day and API.

use chrono::{DateTime, Utc};

use super::{Pg, Tx, ms};
use crate::domain::quota::{Calls, Month};
use crate::store::Result;

/// Adds `calls` made on `day` (`YYYY-MM-DD` of the quota's zone).
pub(super) async fn add_calls(tx: &mut Tx, day: &str, calls: &Calls) -> Result<()> {
    for (api, n) in calls.iter() {
        sqlx::query(
            "INSERT INTO api_usage (day, api, calls) VALUES ($1::date, $2, $3) \
             ON CONFLICT (day, api) DO UPDATE SET calls = api_usage.calls + excluded.calls",
        )
        .bind(day)
        .bind(api.as_str())
        .bind(i64::from(n))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Pg {
    pub async fn add_usage(&self, calls: &Calls, at: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin().await?;
        add_calls(&mut tx, &self.ctx.usage_day(at), calls).await?;
        tx.commit().await
    }

    pub async fn month_calls(&self, month: &Month) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT api, SUM(calls)::bigint FROM api_usage \
             WHERE day >= ($1 || '-01')::date AND day < ($1 || '-01')::date + interval '1 month' GROUP BY api",
        )
        .bind(&month.label)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn month_started(&self, month: &Month) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(DISTINCT occurrence_id) FROM attempts \
             WHERE started_at >= $1 AND started_at < $2 AND sent_at IS NOT NULL",
        )
        .bind(ms(month.start))
        .bind(ms(month.end))
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn quota_event_once(&self, month: &Month, event: &str, now: DateTime<Utc>) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO quota_events (month, event, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&month.label)
        .bind(event)
        .bind(ms(now))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn refused_for_quota(&self, month: &Month) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM attempts \
             WHERE code = 'Forbidden.AccessDenied.ApiCountLimitForOrg' AND started_at >= $1 AND started_at < $2",
        )
        .bind(ms(month.start))
        .bind(ms(month.end))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
