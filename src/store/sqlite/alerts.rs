//! Table `alerts`, the outbox (docs/alerts.md). The migration's triggers write a row
//! per destination in the same transaction as the state change; this module routes (table
//! `alert_routing`), hands due rows to the sender, and records each delivery.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Sqlite;
use crate::domain::AlertEvent;
use crate::domain::alert::Facts;
use crate::domain::time::{fmt_utc, parse_utc};
use crate::store::types::*;
use crate::store::{Result, StoreError};

impl AlertRow {
    fn from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Self> {
        let text = |c: &str| -> Result<String> { Ok(r.try_get::<String, _>(c)?) };
        let bad = |c: &str, e: &dyn std::fmt::Display| StoreError::Data(format!("alerts.{c}: {e}"));
        Ok(Self {
            id: r.try_get("id")?,
            created_at: text("created_at")?,
            event: text("event")?.parse().map_err(|e| bad("event", &e))?,
            policy_name: r.try_get("policy_name")?,
            occurrence_id: r.try_get("occurrence_id")?,
            destination: text("destination")?,
            state: text("state")?.parse().map_err(|e| bad("state", &e))?,
            attempts: r.try_get("attempts")?,
            last_error: r.try_get("last_error")?,
            sent_at: r.try_get("sent_at")?,
            next_attempt_at: r.try_get("next_attempt_at")?,
            batch: r.try_get("batch")?,
            payload: serde_json::from_str(&text("payload")?).map_err(|e| bad("payload", &e))?,
        })
    }
}

const SELECT: &str = "SELECT id, created_at, event, policy_name, occurrence_id, destination, state, attempts, \
     last_error, sent_at, next_attempt_at, batch, payload FROM alerts";

pub const ALERTS_UNDELIVERED: &str = "SELECT * FROM (SELECT id, created_at, event, policy_name, occurrence_id, \
     destination, state, attempts, last_error, sent_at, next_attempt_at, batch, payload FROM alerts INDEXED BY alerts_pending \
     WHERE state = 'pending' UNION ALL SELECT id, created_at, event, policy_name, occurrence_id, destination, state, \
     attempts, last_error, sent_at, next_attempt_at, batch, payload FROM alerts INDEXED BY alerts_failed \
     WHERE state = 'failed' AND created_at >= ?) ORDER BY id DESC LIMIT ?";

impl Sqlite {
    pub async fn set_alert_routing(
        &self,
        default: &[String],
        events: &[AlertEvent],
        any_destination: bool,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if any_destination {
            sqlx::query(
                "INSERT INTO alert_routing (id, destinations, events, updated_at) VALUES (1, ?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET destinations = ?1, events = ?2, updated_at = ?3",
            )
            .bind(serde_json::to_string(default).unwrap_or_else(|_| "[]".into()))
            .bind(serde_json::to_string(events).unwrap_or_else(|_| "[]".into()))
            .bind(fmt_utc(now))
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query("DELETE FROM alert_routing").execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    pub async fn raise_alert(
        &self,
        event: AlertEvent,
        destinations: Option<&[String]>,
        facts: &Facts,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let payload = serde_json::to_string(facts).map_err(|e| StoreError::Data(e.to_string()))?;
        let now_s = fmt_utc(now);
        let explicit = destinations.map(|d| serde_json::to_string(d).unwrap_or_else(|_| "[]".into()));
        let n = sqlx::query(
            "INSERT INTO alerts (created_at, event, policy_name, destination, payload, next_attempt_at) \
             SELECT ?1, ?2, ?3, d.value, ?4, ?1 \
             FROM alert_routing r JOIN json_each(COALESCE(?5, r.destinations)) d \
             WHERE ?5 IS NOT NULL OR ?2 IN (SELECT value FROM json_each(r.events))",
        )
        .bind(&now_s)
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

    pub async fn alerts_due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        let q = format!(
            "{SELECT} WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(fmt_utc(now))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(AlertRow::from_row).collect()
    }

    pub async fn alert_batch(&self, batch: &str) -> Result<Vec<AlertRow>> {
        let q = format!("{SELECT} WHERE batch = ? AND state = 'pending' ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(batch)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(AlertRow::from_row).collect()
    }

    pub async fn start_alert_send(&self, ids: &[i64], batch: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for id in ids {
            sqlx::query(
                "UPDATE alerts SET batch = ?, attempts = attempts + 1 WHERE id = ? AND state = 'pending'",
            )
            .bind(batch)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    pub async fn finish_alert_send(&self, ids: &[i64], end: AlertEnd<'_>, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now_s = fmt_utc(now);
        for id in ids {
            let q = match end {
                AlertEnd::Sent => sqlx::query(
                    "UPDATE alerts SET state = 'sent', sent_at = ?1, next_attempt_at = NULL, last_error = NULL \
                     WHERE id = ?2",
                )
                .bind(&now_s),
                AlertEnd::Retry { error, at } => {
                    sqlx::query("UPDATE alerts SET last_error = ?1, next_attempt_at = ?2 WHERE id = ?3")
                        .bind(error)
                        .bind(fmt_utc(at))
                }
                AlertEnd::Failed { error } => sqlx::query(
                    "UPDATE alerts SET state = 'failed', last_error = ?1, next_attempt_at = NULL WHERE id = ?2",
                )
                .bind(error),
            };
            q.bind(id).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    pub async fn alerts_since(&self, since: DateTime<Utc>) -> Result<Vec<AlertRow>> {
        let q = format!("{SELECT} WHERE created_at >= ? ORDER BY id DESC");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(fmt_utc(since))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(AlertRow::from_row).collect()
    }

    pub async fn alerts_undelivered(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(ALERTS_UNDELIVERED)
            .bind(fmt_utc(since))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(AlertRow::from_row).collect()
    }

    pub async fn alerts_pending(&self) -> Result<PendingStats> {
        let (pending, oldest): (i64, Option<String>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM alerts WHERE state = 'pending'")
                .fetch_one(self.pool())
                .await?;
        Ok(PendingStats {
            pending,
            oldest_created_at: oldest.as_deref().and_then(|t| parse_utc(t).ok()),
        })
    }
}
