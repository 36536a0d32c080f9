//! The `policies` table: the row form of a policy, diffs for `plan`, one-transaction `apply`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Result, Store, StoreError};
use crate::domain::policy::ScheduleConferenceId;
use crate::domain::schedule::{At, CronExpr};
use crate::domain::time::fmt_utc;
use crate::domain::{
    ConferenceId, Layout, Policy, PolicyName, RetryPolicy, Schedule, Target, UnionId, WindowPosition, Zone,
};

/// A policy in its database form (the columns of `docs/database.md`, as text and integers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    pub name: String,
    pub conference_id: Option<String>,
    pub schedule_conference_id: Option<String>,
    pub host_union_id: String,
    pub layout: String,
    pub small_window_position: String,
    pub cron: Option<String>,
    pub at: Option<String>,
    pub timezone: String,
    pub start_offset_ms: i64,
    pub window_ms: i64,
    pub retry: String,
    /// JSON, or `None` for `verify: false`.
    pub verify: Option<String>,
    /// JSON array of destination names, or `None` for `alerts.default`.
    pub alert: Option<String>,
    pub skip_dates: String,
    pub enabled: bool,
    pub source: String,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PolicyRecord {
    pub fn from_policy(p: &Policy, source: &str) -> Self {
        let (conference_id, schedule_conference_id) = match &p.target {
            Target::Conference(c) => (Some(c.as_str().to_owned()), None),
            Target::Scheduled(s) => (None, Some(s.as_str().to_owned())),
        };
        let (cron, at) = match &p.schedule {
            Schedule::Cron(c) => (Some(c.as_str().to_owned()), None),
            Schedule::At(a) => (None, Some(a.to_text())),
        };
        let skip: Vec<String> = p.skip_dates.iter().map(|d| d.to_string()).collect();
        Self {
            name: p.name.as_str().to_owned(),
            conference_id,
            schedule_conference_id,
            host_union_id: p.host_union_id.as_str().to_owned(),
            layout: p.layout.as_str().to_owned(),
            small_window_position: p.small_window_position.as_str().to_owned(),
            cron,
            at,
            timezone: p.timezone.name().to_owned(),
            start_offset_ms: ms(p.start_offset),
            window_ms: ms(p.window),
            retry: serde_json::to_string(&p.retry).unwrap_or_else(|_| "{}".into()),
            verify: p
                .verify
                .map(|v| serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())),
            alert: p
                .alert
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into())),
            skip_dates: serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into()),
            enabled: p.enabled,
            source: source.to_owned(),
        }
    }

    /// Back to the domain type; a row that does not validate is reported, not trusted.
    pub fn to_policy(&self) -> Result<Policy> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Data(format!("policy '{}': {what}: {e}", self.name))
        };
        let target = match (&self.conference_id, &self.schedule_conference_id) {
            (Some(c), None) => {
                Target::Conference(ConferenceId::parse(c).map_err(|e| bad("conference_id", &e))?)
            }
            (None, Some(s)) => Target::Scheduled(
                ScheduleConferenceId::parse(s).map_err(|e| bad("schedule_conference_id", &e))?,
            ),
            _ => {
                return Err(bad(
                    "target",
                    &"exactly one of conference_id/schedule_conference_id",
                ));
            }
        };
        let schedule = match (&self.cron, &self.at) {
            (Some(c), None) => Schedule::Cron(CronExpr::from_stored(c)),
            (None, Some(a)) => Schedule::At(At::parse(a).map_err(|e| bad("at", &e))?),
            _ => return Err(bad("schedule", &"exactly one of cron/at")),
        };
        let skip: Vec<String> = serde_json::from_str(&self.skip_dates).map_err(|e| bad("skip_dates", &e))?;
        let skip_dates = skip
            .iter()
            .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| bad("skip_dates", &e)))
            .collect::<Result<BTreeSet<_>>>()?;
        let retry: RetryPolicy = serde_json::from_str(&self.retry).map_err(|e| bad("retry", &e))?;
        let verify = super::verify_column(self.verify.as_deref()).map_err(|e| bad("verify", &e))?;
        let alert = self
            .alert
            .as_deref()
            .map(serde_json::from_str::<Vec<String>>)
            .transpose()
            .map_err(|e| bad("alert", &e))?;
        let dur = |v: i64| std::time::Duration::from_millis(u64::try_from(v).unwrap_or(0));
        Ok(Policy {
            name: PolicyName::parse(&self.name).map_err(|e| bad("name", &e))?,
            target,
            host_union_id: UnionId::parse(&self.host_union_id).map_err(|e| bad("host_union_id", &e))?,
            schedule,
            timezone: Zone::parse(&self.timezone).map_err(|e| bad("timezone", &e))?,
            layout: Layout::parse(&self.layout).map_err(|e| bad("layout", &e))?,
            small_window_position: WindowPosition::parse(&self.small_window_position)
                .map_err(|e| bad("small_window_position", &e))?,
            start_offset: dur(self.start_offset_ms),
            window: dur(self.window_ms),
            skip_dates,
            retry,
            verify,
            alert,
            enabled: self.enabled,
        })
    }

    /// The fields `plan` compares and shows, in display form.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        vec![
            ("conference_id", opt(&self.conference_id)),
            ("schedule_conference_id", opt(&self.schedule_conference_id)),
            ("host_union_id", self.host_union_id.clone()),
            ("cron", opt(&self.cron)),
            ("at", opt(&self.at)),
            ("timezone", self.timezone.clone()),
            ("layout", self.layout.clone()),
            ("small_window_position", self.small_window_position.clone()),
            ("start_offset_ms", self.start_offset_ms.to_string()),
            ("window_ms", self.window_ms.to_string()),
            ("retry", self.retry.clone()),
            ("verify", self.verify.clone().unwrap_or_else(|| "false".into())),
            ("alert", self.alert.clone().unwrap_or_else(|| "default".into())),
            ("skip_dates", self.skip_dates.clone()),
            ("enabled", self.enabled.to_string()),
            ("source", self.source.clone()),
        ]
    }

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
        })
    }
}

/// A policy row with its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    pub id: i64,
    #[serde(flatten)]
    pub record: PolicyRecord,
    pub created_at: String,
    pub updated_at: String,
}

/// One field that `apply` would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: String,
    pub new: String,
}

/// What `apply` would do to one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Added {
        name: String,
    },
    Changed {
        name: String,
        fields: Vec<FieldChange>,
    },
    /// In the database, in none of the files, and within the prune's reach: disabled.
    Removed {
        name: String,
        /// Where the policy came from (`file:line`), so a person sees whose policy goes.
        source: String,
    },
}

/// Which policies an apply may disable because they are in none of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune<'a> {
    /// None: policies missing from the files stay as they are.
    Off,
    /// `dingrec apply --prune`: every enabled policy in none of the files.
    All,
    /// The daemon's `policies.prune`: only policies whose `source` lies in one of these paths
    /// (its own `policies.paths`); a policy applied from elsewhere is not the daemon's to disable.
    Within(&'a [PathBuf]),
}

impl Prune<'_> {
    /// May this prune disable a policy that came from `source` (`file:line`)?
    pub fn reaches(&self, source: &str) -> bool {
        match self {
            Prune::Off => false,
            Prune::All => true,
            Prune::Within(paths) => source_within(source, paths),
        }
    }
}

/// Does the file of `source` (`file:line`) lie in one of `paths` (a file itself, or a folder
/// above it)? Paths are compared whole component by component, made absolute against the
/// working directory first (policy files record absolute sources).
pub fn source_within(source: &str, paths: &[PathBuf]) -> bool {
    let file = source.rsplit_once(':').map_or(source, |(f, _)| f);
    let file = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
    paths.iter().any(|p| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        file == p || file.starts_with(&p)
    })
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Added { name } | Change::Changed { name, .. } | Change::Removed { name, .. } => name,
        }
    }
}

const SELECT_POLICY: &str = "SELECT id, name, conference_id, schedule_conference_id, host_union_id, layout, \
     small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, skip_dates, \
     enabled, source, created_at, updated_at FROM policies";

fn stored(r: &SqliteRow) -> Result<StoredPolicy> {
    Ok(StoredPolicy {
        id: r.try_get("id")?,
        record: PolicyRecord::from_row(r)?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

pub(crate) fn diff(
    existing: &HashMap<String, StoredPolicy>,
    new: &[PolicyRecord],
    prune: Prune<'_>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for rec in new {
        match existing.get(&rec.name) {
            None => changes.push(Change::Added {
                name: rec.name.clone(),
            }),
            Some(old) => {
                let fields: Vec<FieldChange> = old
                    .record
                    .fields()
                    .into_iter()
                    .zip(rec.fields())
                    .filter(|((_, a), (_, b))| a != b)
                    .map(|((field, old), (_, new))| FieldChange { field, old, new })
                    .collect();
                if !fields.is_empty() {
                    changes.push(Change::Changed {
                        name: rec.name.clone(),
                        fields,
                    });
                }
            }
        }
    }
    if prune != Prune::Off {
        let named: BTreeSet<&str> = new.iter().map(|r| r.name.as_str()).collect();
        let mut gone: Vec<&StoredPolicy> = existing
            .values()
            .filter(|p| {
                p.record.enabled && !named.contains(p.record.name.as_str()) && prune.reaches(&p.record.source)
            })
            .collect();
        gone.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        changes.extend(gone.into_iter().map(|p| Change::Removed {
            name: p.record.name.clone(),
            source: p.record.source.clone(),
        }));
    }
    changes
}

impl Store {
    pub async fn list_policies(&self) -> Result<Vec<StoredPolicy>> {
        if let Some(pg) = self.postgres() {
            return pg.list_policies().await;
        }
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_POLICY} ORDER BY name")))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(stored).collect()
    }

    /// Up to `limit` enabled policies with an id above `after`, by id: the forecast reads the
    /// policies a page at a time, never all at once.
    pub async fn enabled_policies_after(&self, after: i64, limit: i64) -> Result<Vec<StoredPolicy>> {
        if let Some(pg) = self.postgres() {
            return pg.enabled_policies_after(after, limit).await;
        }
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
        if let Some(pg) = self.postgres() {
            return pg.policy_by_name(name).await;
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT_POLICY} WHERE name = ?")))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(stored).transpose()
    }

    /// What `apply` would change, without writing.
    pub async fn plan_policies(&self, new: &[PolicyRecord], prune: Prune<'_>) -> Result<Vec<Change>> {
        let existing = self.list_policies().await?;
        let existing = existing.into_iter().map(|p| (p.record.name.clone(), p)).collect();
        Ok(diff(&existing, new, prune))
    }

    /// Write `new` in one transaction: every policy lands or none. Unchanged policies are not
    /// touched (no `updated_at` churn). Changed or disabled policies lose their future
    /// not-yet-started occurrences (`cancelled`) and are planned again by the daemon.
    pub async fn apply_policies(
        &self,
        new: &[PolicyRecord],
        prune: Prune<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Change>> {
        if let Some(pg) = self.postgres() {
            return pg.apply_policies(new, prune, now).await;
        }
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
        let by_name: HashMap<&str, &PolicyRecord> = new.iter().map(|r| (r.name.as_str(), r)).collect();
        for change in &changes {
            match change {
                Change::Added { name } => {
                    let r = by_name[name.as_str()];
                    let q = sqlx::query(
                        "INSERT INTO policies (name, conference_id, schedule_conference_id, host_union_id, layout, \
                         small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, \
                         skip_dates, enabled, source, created_at, updated_at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    )
                    .bind(&r.name);
                    bind_fields(q, r)
                        .bind(&now_s)
                        .bind(&now_s)
                        .execute(&mut *tx)
                        .await?;
                }
                Change::Changed { name, fields } => {
                    let r = by_name[name.as_str()];
                    let id = existing.get(name).map(|p| p.id);
                    // Where a policy comes from and where its alerts go do not change its occurrences.
                    let replan = fields.iter().any(|f| !matches!(f.field, "source" | "alert"));
                    let q = sqlx::query(
                        "UPDATE policies SET conference_id = ?, schedule_conference_id = ?, host_union_id = ?, \
                         layout = ?, small_window_position = ?, cron = ?, at = ?, timezone = ?, \
                         start_offset_ms = ?, window_ms = ?, retry = ?, verify = ?, alert = ?, skip_dates = ?, enabled = ?, \
                         source = ?, \
                         updated_at = ?, planned_until = CASE WHEN ? THEN '' ELSE planned_until END \
                         WHERE name = ?",
                    );
                    bind_fields(q, r)
                        .bind(&now_s)
                        .bind(replan)
                        .bind(name)
                        .execute(&mut *tx)
                        .await?;
                    match id {
                        Some(id) if !r.enabled => cancel(&mut tx, id, CANCEL_UNFINISHED, &now_s).await?,
                        Some(id) if replan => cancel(&mut tx, id, CANCEL_FUTURE, &now_s).await?,
                        _ => {}
                    }
                }
                Change::Removed { name, .. } => {
                    sqlx::query(
                        "UPDATE policies SET enabled = 0, updated_at = ?, planned_until = '' WHERE name = ?",
                    )
                    .bind(&now_s)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                    if let Some(p) = existing.get(name) {
                        cancel(&mut tx, p.id, CANCEL_UNFINISHED, &now_s).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        Ok(changes)
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// Bind the columns `conference_id` … `source`, in table order (INSERT and UPDATE share them).
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

async fn cancel(
    conn: &mut sqlx::SqliteConnection,
    policy_id: i64,
    sql: &'static str,
    now: &str,
) -> Result<()> {
    sqlx::query(sql)
        .bind(now)
        .bind(policy_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
