//! The only place with SQL: one [`Store`] in front, two engines behind it.
//!
//! - `api.rs`: every operation the rest of dingrec calls, each written once and handed to the
//!   engine the store was opened on (an exhaustive `match`: an operation one engine lacks does
//!   not compile).
//! - `types.rs`: the rows and values both engines read and write.
//! - `sqlite/` and `postgres/`, file for file (`alerts`, `checks`, `history`, `leases`,
//!   `occurrences`, `policies`, `slots`, `tokens`, `usage`): each engine's SQL and row mapping,
//!   nothing else. The decisions both take (which state follows a check, which a stopped call) are
//!   pure functions in `domain`, which both call.
//!
//! SQLite: WAL mode, `synchronous=FULL` by default, `busy_timeout`, foreign keys on, every
//! writing transaction `BEGIN IMMEDIATE`. PostgreSQL: several daemons on one database, claims with
//! `FOR UPDATE SKIP LOCKED` (`docs/database.md`).

mod api;
pub mod lock;
pub mod postgres;
mod sqlite;
pub mod types;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use api::FetchTurn;
#[cfg(test)]
pub(crate) use sqlite::assert_searches;
/// The SQL of the status page's reads on SQLite, for the test that each searches an index.
pub use sqlite::status_sql;
pub use types::*;

use crate::config::DatabaseSettings;

/// A database problem, in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error(
        "database {path} is damaged ({detail}); it was left as it is. Restore it from a backup, or move it aside to start with an empty one"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database holds an invalid value: {0}")]
    Data(String),
    #[error(
        "database {0} does not exist: nothing was applied yet (`dingrec apply` or `dingrec run` creates it), or --config names another database"
    )]
    Missing(PathBuf),
    #[error("another dingrec is running on {database}; this one changes nothing and stops")]
    InUse { database: PathBuf },
    #[error(
        "database {path} belongs to uid {owner} (the service's user), and this command runs as uid {me}: \
         run it as that user (sudo -u '#{owner}' dingrec …, or with systemd-run -p DynamicUser=yes \
         -p StateDirectory=dingrec for a DynamicUser unit), so that no file appears that the service \
         cannot write"
    )]
    Owner { path: PathBuf, owner: u32, me: u32 },
    /// The database's schema is not the one this binary was built for.
    #[error("{0}")]
    Schema(SchemaMismatch),
}

/// A database whose migrations differ from this binary's: newer (a newer dingrec migrated it:
/// upgrade this one) or older (run `dingrec migrate`, which the daemon does when it starts).
/// Schemas are named by their newest migration's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    pub database: i64,
    pub known: i64,
    pub newer: bool,
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (db, known) = (self.database, self.known);
        if self.newer {
            write!(
                f,
                "the database is at schema {db}, this dingrec knows {known}: upgrade dingrec \
                 (a newer dingrec migrated the database; this one changes nothing)"
            )
        } else {
            write!(
                f,
                "the database is at schema {db}, this dingrec knows {known}: run `dingrec migrate` \
                 (`dingrec run` does it when it starts) before this command"
            )
        }
    }
}

/// Where a database's schema stands against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schema {
    /// No migration applied: a new, empty database.
    Empty,
    /// Every migration this binary knows, and no other.
    Current,
    Mismatch(SchemaMismatch),
}

impl Schema {
    /// Compare the versions a database applied with the ones a binary knows (both sorted).
    pub fn of(applied: &[i64], known: &[i64]) -> Schema {
        let Some(&db) = applied.iter().max() else {
            return Schema::Empty;
        };
        let top = known.iter().max().copied().unwrap_or(0);
        let unknown = applied.iter().any(|v| !known.contains(v));
        if unknown {
            return Schema::Mismatch(SchemaMismatch {
                database: db,
                known: top,
                newer: true,
            });
        }
        if known.iter().any(|v| !applied.contains(v)) {
            return Schema::Mismatch(SchemaMismatch {
                database: db,
                known: top,
                newer: false,
            });
        }
        Schema::Current
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The database handle: a small pool over one SQLite file, or over PostgreSQL (`database.url`).
/// Its operations (`api.rs`) are the same on both.
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
}

/// What both engines keep beside their pool.
/// The commit counter behind [`Store::commits`].
pub(crate) type Commits = std::sync::Arc<tokio::sync::watch::Sender<u64>>;

/// Tell [`Store::commits`]'s receivers that a write committed.
pub(crate) fn committed(c: &Commits) {
    c.send_modify(|n| *n = n.wrapping_add(1));
}

#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The SQLite file, or the PostgreSQL URL (which holds no password).
    path: PathBuf,
    /// Where DingTalk's month begins: `api_usage.day` is a day of this zone.
    quota_tz: chrono_tz::Tz,
    /// How long a claimed attempt or check is held without being renewed (`scheduler.lease`).
    lease: Duration,
    /// Counts every write this process commits (see [`Store::commits`]).
    committed: Commits,
}

impl Ctx {
    fn new(path: PathBuf) -> Ctx {
        Ctx {
            path,
            quota_tz: chrono_tz::Asia::Shanghai,
            lease: crate::config::DEFAULT_LEASE,
            committed: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    /// `api_usage.day` for a call at `at`.
    fn usage_day(&self, at: DateTime<Utc>) -> String {
        crate::domain::quota::day_of(at, self.quota_tz)
    }

    /// The end of a lease taken or renewed at `now`.
    fn lease_end(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        crate::domain::time::add(now, self.lease).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The engine a store was opened on: the one place that chooses.
#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Pg),
}

/// The engine's name only: a pool's Debug may show its connect options, a password among them.
impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        })
    }
}

/// `backend!(self, db => expr)`: `expr` on whichever engine the store was opened on.
macro_rules! backend {
    ($store:expr, $db:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($db) => $body,
            $crate::store::Backend::Postgres($db) => $body,
        }
    };
}
pub(crate) use backend;

impl Store {
    /// Open (creating if missing) and migrate, after checking an existing file is not damaged
    /// (`PRAGMA quick_check`, read-only: a damaged file is never written to). For whatever writes.
    /// With `database.url`: connect to PostgreSQL and migrate it.
    pub async fn open(settings: &DatabaseSettings) -> Result<Store> {
        let store = Self::open_unmigrated(settings).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Open for the writing commands that do not migrate (`apply`, `trigger`): a new database
    /// gets its schema, an existing one must be at this binary's (only `dingrec migrate` and
    /// `dingrec run` move a schema on, so an upgraded binary never migrates the database under a
    /// daemon still running the old one).
    pub async fn open_current(settings: &DatabaseSettings) -> Result<Store> {
        let store = Self::open_unmigrated(settings).await?;
        match store.schema().await? {
            Schema::Empty => store.migrate().await?,
            Schema::Current => {}
            Schema::Mismatch(m) => {
                store.close().await;
                return Err(StoreError::Schema(m));
            }
        }
        Ok(store)
    }

    /// Open for the read-only commands (`history`, `policies`, `next`, `plan`): never created,
    /// never migrated, never written. SQLite: no page check (it reads the whole file: about a
    /// second per 400 MB; a damaged page still shows as an error when a query reaches it), and a
    /// file that does not exist is an error ("nothing was applied yet"). PostgreSQL: a database
    /// without dingrec's schema is the same error.
    pub async fn open_for_reading(settings: &DatabaseSettings) -> Result<Store> {
        let store = if settings.engine() == crate::config::DatabaseEngine::Postgres {
            Self::open_unmigrated(settings).await?
        } else {
            Store {
                backend: Backend::Sqlite(sqlite::Sqlite::open_for_reading(settings).await?),
            }
        };
        match store.schema().await? {
            Schema::Current => Ok(store),
            Schema::Empty => {
                store.close().await;
                Err(StoreError::Missing(store.path().to_owned()))
            }
            Schema::Mismatch(m) => {
                store.close().await;
                Err(StoreError::Schema(m))
            }
        }
    }

    /// As [`Store::open_for_reading`], with `None` where nothing was applied yet (no SQLite
    /// file, or a PostgreSQL database without dingrec's schema): `plan` reads that as empty.
    pub async fn open_if_applied(settings: &DatabaseSettings) -> Result<Option<Store>> {
        match Self::open_for_reading(settings).await {
            Ok(store) => Ok(Some(store)),
            Err(StoreError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Open without running migrations (the caller runs them, e.g. `dingrec migrate`).
    pub async fn open_unmigrated(settings: &DatabaseSettings) -> Result<Store> {
        let backend = if settings.engine() == crate::config::DatabaseEngine::Postgres {
            Backend::Postgres(postgres::Pg::open(settings).await?)
        } else {
            Backend::Sqlite(sqlite::Sqlite::open(settings).await?)
        };
        Ok(Store { backend })
    }

    /// Where this database's schema stands against this binary's migrations; reads only.
    pub async fn schema(&self) -> Result<Schema> {
        let (applied, known) = backend!(self, db => (db.applied_migrations().await?, db.known_migrations()));
        Ok(Schema::of(&applied, &known))
    }

    /// Bring the schema to this binary's (`dingrec migrate`, `dingrec run`, a new database). A
    /// database a newer dingrec migrated is refused with [`StoreError::Schema`] before anything
    /// is written.
    pub async fn migrate(&self) -> Result<()> {
        if let Schema::Mismatch(m) = self.schema().await?
            && m.newer
        {
            return Err(StoreError::Schema(m));
        }
        backend!(self, db => db.migrate().await)
    }

    /// `sqlite` or `postgres` (`/readyz`, `dingrec status`).
    pub fn engine(&self) -> crate::config::DatabaseEngine {
        match self.backend {
            Backend::Sqlite(_) => crate::config::DatabaseEngine::Sqlite,
            Backend::Postgres(_) => crate::config::DatabaseEngine::Postgres,
        }
    }

    fn ctx(&self) -> &Ctx {
        backend!(self, db => &db.ctx)
    }

    fn ctx_mut(&mut self) -> &mut Ctx {
        match &mut self.backend {
            Backend::Sqlite(db) => &mut db.ctx,
            Backend::Postgres(db) => &mut db.ctx,
        }
    }

    /// The PostgreSQL pool, when the store is one (tests that read the database directly).
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Postgres(db) => Some(&db.pool),
            Backend::Sqlite(_) => None,
        }
    }

    /// The SQLite pool, when the store is one (tests that read the database directly).
    pub fn sqlite_pool(&self) -> Option<&sqlx::SqlitePool> {
        match &self.backend {
            Backend::Sqlite(db) => Some(&db.pool),
            Backend::Postgres(_) => None,
        }
    }

    /// Changes after every write of this process commits (each receiver sees each change, and
    /// one made while it was busy): the alert sender and the quota task wait on it instead of
    /// polling, since the schema's triggers write alerts in the transactions that make
    /// occurrences final. Writes of other processes (`dingrec trigger`, other daemons) are not
    /// seen here; their slow look finds those.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ctx().committed.subscribe()
    }

    /// The SQLite file, or the PostgreSQL URL (without its password).
    pub fn path(&self) -> &Path {
        &self.ctx().path
    }

    pub async fn close(&self) {
        backend!(self, db => db.pool.close().await)
    }
}

/// `policies.verify`: JSON settings, or NULL for `verify: false`.
pub(crate) fn verify_column(v: Option<&str>) -> std::result::Result<Option<crate::domain::Verify>, String> {
    v.map(|s| serde_json::from_str(s).map_err(|e: serde_json::Error| e.to_string()))
        .transpose()
}
