//! PostgreSQL twin of `store/policies.rs`: `apply` in one transaction, and the daemons told.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row as _;
use sqlx::postgres::PgRow;

use super::{POLICIES_CHANNEL, Pg, Tx, ms, text_time};
use crate::store::Result;
use crate::store::types::{
    Cancel, Change, PolicyRecord, PolicyWrite, Prune, StoredPolicy, diff, policy_writes,
};

/// The columns of a policy row that [`record`] reads.
pub(super) const POLICY_COLUMNS: &str = "name, conference_id, schedule_conference_id, host_union_id, layout, \
     small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry::text AS retry, verify::text AS verify, \
     alert::text AS alert, skip_dates::text AS skip_dates, enabled, source, match_rule::text AS match_rule, \
     auto_record::text AS auto_record";

/// A `jsonb` column as `apply` wrote it: PostgreSQL keeps JSON in its own form (spaces, keys
/// reordered), so the text is read back into its type and written as SQLite keeps it, or `plan`
/// would see every policy changed.
fn json_as_written<T: serde::Serialize + serde::de::DeserializeOwned>(text: String) -> String {
    serde_json::from_str::<T>(&text)
        .ok()
        .and_then(|v| serde_json::to_string(&v).ok())
        .unwrap_or(text)
}

/// A policy row ([`POLICY_COLUMNS`]) in its database form.
pub(super) fn record(r: &PgRow) -> Result<PolicyRecord> {
    let verify: Option<String> = r.try_get("verify")?;
    let alert: Option<String> = r.try_get("alert")?;
    let match_rule: Option<String> = r.try_get("match_rule")?;
    let auto_record: Option<String> = r.try_get("auto_record")?;
    Ok(PolicyRecord {
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
        retry: json_as_written::<crate::domain::RetryPolicy>(r.try_get("retry")?),
        verify: verify.map(json_as_written::<crate::domain::Verify>),
        alert: alert.map(json_as_written::<Vec<String>>),
        skip_dates: json_as_written::<Vec<String>>(r.try_get("skip_dates")?),
        enabled: r.try_get("enabled")?,
        source: r.try_get("source")?,
        match_rule: match_rule.map(|text| {
            crate::domain::matching::MatchRule::from_json(&text)
                .map(|rule| rule.to_json())
                .unwrap_or(text)
        }),
        auto_record: auto_record.map(json_as_written::<crate::domain::auto_record::AutoRecord>),
    })
}

pub(super) fn select_policy() -> String {
    format!("SELECT id, {POLICY_COLUMNS}, created_at, updated_at FROM policies")
}

pub(super) fn stored(r: &PgRow) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        id: r.try_get("id")?,
        record: record(r)?,
        created_at: text_time(r, "created_at")?,
        updated_at: text_time(r, "updated_at")?,
    })
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Bind the columns `conference_id` … `source`, `match_rule`, `auto_record`, in table order
/// (`$2` … `$19`).
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

/// A changed policy's occurrences that have not started and are not due yet (`$2` the policy's
/// id, `$1` now): planned again from the new settings.
const CANCEL_FUTURE: &str = "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, updated_at = $1 \
     WHERE policy_id = $2 AND state = 'scheduled' AND due_at > $1";

/// A disabled (or pruned) policy's unfinished occurrences (SQLite's twin says why).
const CANCEL_UNFINISHED: &str = "UPDATE occurrences SET state = 'cancelled', next_attempt_at = NULL, updated_at = $1 \
     WHERE policy_id = $2 AND state IN ('scheduled', 'retry_wait')";

async fn cancel(tx: &mut Tx, policy_id: i64, which: Cancel, now: DateTime<Utc>) -> Result<()> {
    let sql = match which {
        Cancel::Future => CANCEL_FUTURE,
        Cancel::Unfinished => CANCEL_UNFINISHED,
    };
    sqlx::query(sql)
        .bind(now)
        .bind(policy_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Pg {
    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{} ORDER BY name", select_policy())))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored).collect()
    }

    pub async fn enabled_policies_after(&self, after: i64, limit: i64) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} WHERE enabled AND id > $1 ORDER BY id LIMIT $2",
            select_policy()
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored).collect()
    }

    pub async fn policy_by_name(&self, name: &str) -> Result<Option<StoredPolicy>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{} WHERE name = $1",
            select_policy()
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stored).transpose()
    }

    /// As on SQLite; applies run one at a time (an advisory lock), and every daemon listening
    /// on [`POLICIES_CHANNEL`] hears of a change when it commits.
    pub async fn apply_policies(
        &self,
        new: &[PolicyRecord],
        prune: Prune<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        let now = ms(now);
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('dingrec apply'))")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(select_policy()))
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
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13::jsonb, $14::jsonb, \
                         $15::jsonb, $16, $17, $18::jsonb, $19::jsonb, $20, $20)",
                    )
                    .bind(&r.name);
                    bind_fields(q, r).bind(now).execute(&mut *tx).await?;
                }
                PolicyWrite::Update {
                    record: r, replan, ..
                } => {
                    let q = sqlx::query(
                        "UPDATE policies SET conference_id = $2, schedule_conference_id = $3, host_union_id = $4, \
                         layout = $5, small_window_position = $6, cron = $7, at = $8, timezone = $9, \
                         start_offset_ms = $10, window_ms = $11, retry = $12::jsonb, verify = $13::jsonb, \
                         alert = $14::jsonb, skip_dates = $15::jsonb, enabled = $16, source = $17, \
                         match_rule = $18::jsonb, auto_record = $19::jsonb, \
                         updated_at = $20, planned_until = CASE WHEN $21 THEN NULL ELSE planned_until END \
                         WHERE name = $1",
                    )
                    .bind(&r.name);
                    bind_fields(q, r).bind(now).bind(replan).execute(&mut *tx).await?;
                }
                PolicyWrite::Disable { name, .. } => {
                    sqlx::query(
                        "UPDATE policies SET enabled = false, updated_at = $1, planned_until = NULL WHERE name = $2",
                    )
                    .bind(now)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            if let Some((id, which)) = write.cancel() {
                cancel(&mut tx, id, which, now).await?;
            }
        }
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(POLICIES_CHANNEL)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changes)
    }
}

/// Until `cancel`: every `apply` another process commits (`NOTIFY` on [`POLICIES_CHANNEL`])
/// notifies `wake`. A lost connection is opened again; meanwhile the daemons' planning, which
/// reads the policies every tick, still sees the change.
impl Pg {
    /// Until `cancel`, notify `wake` whenever another process applies policies (`LISTEN`).
    pub(crate) async fn watch_policies(
        &self,
        wake: &[std::sync::Arc<tokio::sync::Notify>],
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        let pool = &self.pool;
        const AGAIN: std::time::Duration = std::time::Duration::from_secs(2);
        loop {
            let listening = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(POLICIES_CHANNEL).await?;
                loop {
                    listener.recv().await?;
                    for w in wake {
                        w.notify_one();
                    }
                }
            };
            let ended: std::result::Result<(), sqlx::Error> = tokio::select! {
                () = cancel.cancelled() => return,
                r = listening => r,
            };
            if let Err(e) = ended {
                tracing::warn!(error = %e, "cannot listen for policy changes; planning still reads them every tick");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(AGAIN) => {}
            }
        }
    }
}
