//! PostgreSQL twin of `store/alerts.rs`: the outbox. Several daemons send from it; a due alert
//! is taken by one of them (its `next_attempt_at` moved past the send, under a row lock), so
//! none is sent twice by two daemons, and one whose sender died is sent again later.

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::{Pg, data, int, ms, opt_text_time, text_time};
use crate::domain::AlertEvent;
use crate::domain::alert::Facts;
use crate::store::Result;
use crate::store::types::{AlertEnd, AlertRow, PendingStats};

/// How long a daemon holds the alerts it took for a send before another daemon may take them.
const SEND_HOLD: TimeDelta = TimeDelta::minutes(2);

const COLUMNS: &str = "id, created_at, event, policy_name, occurrence_id, destination, state, attempts, \
     last_error, sent_at, next_attempt_at, batch, payload::text AS payload";

fn alert_row(r: &PgRow) -> Result<AlertRow> {
    let text = |c: &str| -> Result<String> { Ok(r.try_get::<String, _>(c)?) };
    Ok(AlertRow {
        id: r.try_get("id")?,
        created_at: text_time(r, "created_at")?,
        event: text("event")?.parse().map_err(|e| data("alerts.event", e))?,
        policy_name: r.try_get("policy_name")?,
        occurrence_id: r.try_get("occurrence_id")?,
        destination: text("destination")?,
        state: text("state")?.parse().map_err(|e| data("alerts.state", e))?,
        attempts: int(r, "attempts")?,
        last_error: r.try_get("last_error")?,
        sent_at: opt_text_time(r, "sent_at")?,
        next_attempt_at: opt_text_time(r, "next_attempt_at")?,
        batch: r.try_get("batch")?,
        payload: serde_json::from_str(&text("payload")?).map_err(|e| data("alerts.payload", e))?,
    })
}

impl Pg {
    pub async fn set_alert_routing(
        &self,
        default: &[String],
        events: &[AlertEvent],
        any_destination: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if any_destination {
            sqlx::query(
                "INSERT INTO alert_routing (id, destinations, events, updated_at) VALUES (1, $1::jsonb, $2::jsonb, $3) \
                 ON CONFLICT (id) DO UPDATE SET destinations = excluded.destinations, events = excluded.events, \
                 updated_at = excluded.updated_at",
            )
            .bind(serde_json::to_string(default).unwrap_or_else(|_| "[]".into()))
            .bind(serde_json::to_string(events).unwrap_or_else(|_| "[]".into()))
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        } else {
            sqlx::query("DELETE FROM alert_routing")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn raise_alert(
        &self,
        event: AlertEvent,
        destinations: Option<&[String]>,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let payload = serde_json::to_string(facts).map_err(|e| data("alert", e))?;
        let explicit = destinations.map(|d| serde_json::to_string(d).unwrap_or_else(|_| "[]".into()));
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "INSERT INTO alerts (created_at, event, policy_name, destination, payload, next_attempt_at) \
             SELECT $1, $2, $3, d.value, $4::jsonb, $1 \
             FROM alert_routing r CROSS JOIN LATERAL jsonb_array_elements_text(COALESCE($5::jsonb, r.destinations)) AS d (value) \
             WHERE $5::jsonb IS NOT NULL OR r.events ? $2",
        )
        .bind(ms(now))
        .bind(event.as_str())
        .bind(&facts.policy)
        .bind(&payload)
        .bind(&explicit)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    /// Due alerts, oldest first, taken for this daemon's send ([`SEND_HOLD`]).
    pub async fn alerts_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        let now = ms(now);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH due AS (SELECT id, next_attempt_at AS was FROM alerts WHERE state = 'pending' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
             taken AS (UPDATE alerts a SET next_attempt_at = $3 FROM due WHERE a.id = due.id RETURNING a.id, due.was) \
             SELECT {COLUMNS}, taken.was FROM alerts JOIN taken USING (id) ORDER BY taken.was, id"
        )))
        .bind(now)
        .bind(limit)
        .bind(now + SEND_HOLD)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let mut row = alert_row(r)?;
                row.next_attempt_at = opt_text_time(r, "was")?;
                Ok(row)
            })
            .collect()
    }

    pub async fn alert_batch(&self, batch: &str) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE batch = $1 AND state = 'pending' ORDER BY id"
        )))
        .bind(batch)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_row).collect()
    }

    pub async fn start_alert_send(&self, ids: &[i64], batch: &str) -> Result<()> {
        sqlx::query(
            "UPDATE alerts SET batch = $1, attempts = attempts + 1 WHERE id = ANY($2) AND state = 'pending'",
        )
        .bind(batch)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn finish_alert_send(&self, ids: &[i64], end: AlertEnd<'_>, now: DateTime<Utc>) -> Result<()> {
        let q = match end {
            AlertEnd::Sent => sqlx::query(
                "UPDATE alerts SET state = 'sent', sent_at = $2, next_attempt_at = NULL, last_error = NULL \
                 WHERE id = ANY($1)",
            )
            .bind(ids)
            .bind(ms(now)),
            AlertEnd::Retry { error, at } => {
                sqlx::query("UPDATE alerts SET last_error = $2, next_attempt_at = $3 WHERE id = ANY($1)")
                    .bind(ids)
                    .bind(error)
                    .bind(ms(at))
            }
            AlertEnd::Failed { error } => sqlx::query(
                "UPDATE alerts SET state = 'failed', last_error = $2, next_attempt_at = NULL WHERE id = ANY($1)",
            )
            .bind(ids)
            .bind(error),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    pub async fn alerts_since(&self, since: DateTime<Utc>) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM alerts WHERE created_at >= $1 ORDER BY id DESC"
        )))
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_row).collect()
    }

    pub async fn alerts_undelivered(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM alerts WHERE state = 'pending' \
             UNION ALL SELECT {COLUMNS} FROM alerts WHERE state = 'failed' AND created_at >= $1) u \
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(ms(since))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alert_row).collect()
    }

    pub async fn alerts_pending(&self) -> Result<PendingStats> {
        let (pending, oldest_created_at): (i64, Option<DateTime<Utc>>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM alerts WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        Ok(PendingStats {
            pending,
            oldest_created_at,
        })
    }
}
