//! PostgreSQL, for several daemons on one database (`docs/database.md`): its schema
//! (`migrations-postgres`: the same tables, columns, views and state names as SQLite's, in
//! PostgreSQL's types) and its side of every store operation (`store/api.rs`), one file per file
//! of `store/sqlite/` and one method per method, so that each query reads beside its twin. SQL and
//! row mapping only.
//!
//! What differs, and why:
//! - Claims lock the rows they take (`FOR UPDATE SKIP LOCKED`): daemons claiming at once take
//!   different rows and never wait for each other. Ids come from the identity columns
//!   (`RETURNING`), since other daemons insert too.
//! - Times are `timestamptz`, bound and read as `DateTime<Utc>` cut to the millisecond (what
//!   SQLite's text keeps), and shown as SQLite shows them ([`fmt_utc`]).
//! - Batches go in as arrays (`unnest … WITH ORDINALITY`) or JSON records
//!   (`jsonb_to_recordset`) instead of SQLite's `json_each`.
//! - There is no process-wide write turn: PostgreSQL's row locks order the writers.

mod alerts;
mod auto_record;
mod checks;
mod events;
mod history;
mod leases;
mod occurrences;
mod policies;

mod slots;
mod tokens;
mod usage;

pub(crate) use tokens::FetchTurn;

use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{Ctx, Result, StoreError};
use crate::config::DatabaseSettings;
use crate::domain::time::fmt_utc;
use crate::store::types::FinalEvent;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// The channel `dingrec apply` notifies (`NOTIFY dingrec_policies`) and every daemon listens on.
pub const POLICIES_CHANNEL: &str = "dingrec_policies";

/// Connect to `options` (no migration).
pub async fn connect(options: PgConnectOptions, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
}

/// Connect to `options` and bring its schema up to date (a transaction per migration, under
/// PostgreSQL's advisory lock: daemons starting together migrate once).
pub async fn open(options: PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    let pool = connect(options, max_connections).await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// A PostgreSQL store: its pool and the settings both engines keep.
#[derive(Clone)]
pub(crate) struct Pg {
    pub(crate) pool: PgPool,
    pub(crate) ctx: Ctx,
}

impl Pg {
    /// Connect to `database.url` (no migration).
    pub(crate) async fn open(settings: &DatabaseSettings) -> Result<Pg> {
        let url = std::path::PathBuf::from(&settings.url);
        let options = settings.postgres_options().map_err(|e| StoreError::Open {
            path: url.clone(),
            source: sqlx::Error::Configuration(e.to_string().into()),
        })?;
        let pool = connect(options, settings.max_connections)
            .await
            .map_err(|source| StoreError::Open {
                path: url.clone(),
                source,
            })?;
        Ok(Pg {
            pool,
            ctx: Ctx::new(url),
        })
    }

    /// The versions of this binary's migrations, sorted.
    pub(crate) fn known_migrations(&self) -> Vec<i64> {
        let mut v: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        v.sort_unstable();
        v
    }

    /// The versions this database applied, sorted (none before its first migration).
    pub(crate) async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let has: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await?;
        if !has {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// A transaction per migration, under PostgreSQL's advisory lock: daemons starting together
    /// migrate once.
    pub(crate) async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Readiness: a write commits.
    pub async fn probe_writable(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', 1) \
             ON CONFLICT (key) DO UPDATE SET value = meta.value + 1",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `meta.alert_prefix`, set to `drawn` if it has no value yet.
    pub(crate) async fn alert_prefix(&self, drawn: i64) -> Result<i64> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('alert_prefix', $1) ON CONFLICT (key) DO NOTHING")
            .bind(drawn)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM meta WHERE key = 'alert_prefix'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A transaction; committing it tells [`Store::commits`].
    async fn begin(&self) -> Result<Tx> {
        Ok(Tx {
            tx: self.pool.begin().await?,
            committed: self.ctx.committed.clone(),
        })
    }

    /// `lease_until` of a claim or renewal at `now`.
    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        ms(self.ctx.lease_end(now))
    }
}

/// A PostgreSQL transaction that tells the store's commit watchers when it commits.
struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    committed: crate::store::Commits,
}

impl std::ops::Deref for Tx {
    type Target = sqlx::PgConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Tx {
    async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        crate::store::committed(&self.committed);
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// An instant as SQLite keeps it: to the millisecond, and not before the year 1 (PostgreSQL's
/// `timestamptz` ends in 4713 BC, chrono's long before: "since the beginning" is the year 1).
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    const YEAR_1: i64 = -62_135_596_800;
    t.trunc_subsecs(3)
        .max(DateTime::from_timestamp(YEAR_1, 0).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// A `timestamptz` column as SQLite's text shows it.
fn text_time(r: &PgRow, col: &str) -> Result<String> {
    Ok(fmt_utc(r.try_get::<DateTime<Utc>, _>(col)?))
}

fn opt_text_time(r: &PgRow, col: &str) -> Result<Option<String>> {
    Ok(r.try_get::<Option<DateTime<Utc>>, _>(col)?.map(fmt_utc))
}

/// An `integer` column as the `i64` the store's types hold.
fn int(r: &PgRow, col: &str) -> Result<i64> {
    Ok(i64::from(r.try_get::<i32, _>(col)?))
}

fn data(col: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Data(format!("{col}: {e}"))
}

/// What an `UPDATE … RETURNING` of occurrences that reached a final state returns.
const FINAL_COLUMNS: &str = "id, policy_name, conference_id, state, last_code, due_at";

fn final_event(r: &PgRow) -> Result<FinalEvent> {
    Ok(FinalEvent {
        occurrence_id: r.try_get("id")?,
        policy_name: r.try_get("policy_name")?,
        conference_id: r.try_get("conference_id")?,
        state: r.try_get("state")?,
        last_code: r.try_get("last_code")?,
        due_at: text_time(r, "due_at")?,
    })
}
