//! The `policies` table: the row form of a policy, diffs for `plan`, one-transaction `apply`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::Sqlite;
use crate::domain::time::fmt_utc;
use crate::store::Result;
use crate::store::types::*;

impl PolicyRecord {
    /// A row of `policies` (any query that selects its columns by name).
    pub(crate) fn from_row(r: &SqliteRow) -> Result<Self> {
        Ok(Self {
            name: r.try_get("name")?,
            conference_id: r.try_get("conference_id")?,
            schedule_conference_id: r.try_get("schedule_conference_id")?,
            host_union_id: r.try_get("host_union_id")?,
            layout: r.try_get("layout")?,
            small_window_position: r.try_get("small_window_position")?,
            cron: r.try_get("cron")?,
            at: r.try_get("at")?,
            timezone: r.try_get("timezone")?,
            start_offset_ms: r.try_get("start_offset_ms")?,
            window_ms: r.try_get("window_ms")?,
            retry: r.try_get("retry")?,
            verify: r.try_get("verify")?,
            alert: r.try_get("alert")?,
            skip_dates: r.try_get("skip_dates")?,
            enabled: r.try_get::<i64, _>("enabled")? != 0,
            source: r.try_get("source")?,
            match_rule: r.try_get("match_rule")?,
            auto_record: r.try_get("auto_record")?,
        })
    }
}

const SELECT_POLICY: &str = "SELECT id, name, conference_id, schedule_conference_id, host_union_id, layout, \
     small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, skip_dates, \
     enabled, source, match_rule, auto_record, created_at, updated_at FROM policies";

pub(super) fn stored(r: &SqliteRow) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        id: r.try_get("id")?,
        record: PolicyRecord::from_row(r)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

impl Sqlite {
    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_POLICY} ORDER BY name")))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(stored).collect()
    }

    pub async fn enabled_policies_after(&self, after: i64, limit: i64) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT_POLICY} WHERE enabled = 1 AND id > ? ORDER BY id LIMIT ?"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(stored).collect()
    }

    pub async fn policy_by_name(&self, name: &str) -> Result<Option<StoredPolicy>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = ?")))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(stored).transpose()
    }

    pub async fn apply_policies(
        &self,
        new: &[PolicyRecord],
        prune: Prune<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        let now_s = fmt_utc(now);
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(SELECT_POLICY.to_owned()))
            .fetch_all(&mut *tx)
            .await?;
        let existing: HashMap<String, StoredPolicy> = rows
            .iter()
            .map(|r| stored(r).map(|p| (p.record.name.clone(), p)))
            .collect::<Result<_>>()?;
        let changes = diff(&existing, new, prune);
        if changes.is_empty() {
            tx.rollback().await?;
            return Ok(changes);
        }
        for write in policy_writes(&existing, new, &changes) {
            match write {
                PolicyWrite::Insert(r) => {
                    let q = sqlx::query(
                        "INSERT INTO policies (name, conference_id, schedule_conference_id, host_union_id, layout, \
                         small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, \
                         skip_dates, enabled, source, match_rule, auto_record, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&r.name);
                    bind_fields(q, r)
                        .bind(&now_s)
                        .bind(&now_s)
                        .execute(&mut *tx)
                        .await?;
                }
                PolicyWrite::Update {
                    record: r, replan, ..
                } => {
                    let q = sqlx::query(
                        "UPDATE policies SET conference_id = ?, schedule_conference_id = ?, host_union_id = ?, \
                         layout = ?, small_window_position = ?, cron = ?, at = ?, timezone = ?, \
                         start_offset_ms = ?, window_ms = ?, retry = ?, verify = ?, alert = ?, skip_dates = ?, enabled = ?, \
                         source = ?, match_rule = ?, auto_record = ?, \
                         updated_at = ?, planned_until = CASE WHEN ? THEN '' ELSE planned_until END \
                         WHERE name = ?",
                    );
                    bind_fields(q, r)
                        .bind(&now_s)
                        .bind(replan)
                        .bind(&r.name)
                        .execute(&mut *tx)
                        .await?;
                }
                PolicyWrite::Disable { name, .. } => {
                    sqlx::query(
                        "UPDATE policies SET enabled = 0, updated_at = ?, planned_until = '' WHERE name = ?",
                    )
                    .bind(&now_s)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some((id, which)) = write.cancel() {
                cancel(&mut tx, id, which, &now_s).await?;
            }
        }
        tx.commit().await?;
        Ok(changes)
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Bind the columns `conference_id` … `source`, `match_rule`, `auto_record`, in table order (INSERT and UPDATE
/// share them).
fn bind_fields<'q>(q: Query<'q>, r: &'q PolicyRecord) -> Query<'q> {
    q.bind(&r.conference_id)
        .bind(&r.schedule_conference_id)
        .bind(&r.host_union_id)
        .bind(&r.layout)
        .bind(&r.small_window_position)
        .bind(&r.cron)
        .bind(&r.at)
        .bind(&r.timezone)
        .bind(r.start_offset_ms)
        .bind(r.window_ms)
        .bind(&r.retry)
        .bind(&r.verify)
        .bind(&r.alert)
        .bind(&r.skip_dates)
        .bind(r.enabled)
        .bind(&r.source)
        .bind(&r.match_rule)
        .bind(&r.auto_record)
}

/// A changed policy's occurrences that have not started and are not due yet (`?2` the policy's
/// id, `?1` now): planned again from the new settings.
pub(crate) const CANCEL_FUTURE: &str = "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?1 \
     WHERE policy_id = ?2 AND state = 'scheduled' AND due_at > ?1";

/// A disabled (or pruned) policy's unfinished occurrences: waiting, due or waiting for a retry.
/// No new attempt starts for them; an attempt already claimed is not sent, and a call already in
/// flight may finish (its outcome is recorded; a retry it would ask for becomes `cancelled`).
pub(crate) const CANCEL_UNFINISHED: &str = "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, updated_at = ?1 \
     WHERE policy_id = ?2 AND state IN ('scheduled', 'retry_wait')";

async fn cancel(conn: &mut sqlx::SqliteConnection, policy_id: i64, which: Cancel, now: &str) -> Result<()> {
    let sql = match which {
        Cancel::Future => CANCEL_FUTURE,
        Cancel::Unfinished => CANCEL_UNFINISHED,
    };
    sqlx::query(sql)
        .bind(now)
        .bind(policy_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
