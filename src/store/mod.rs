//! The only place with SQL. SQLite through sqlx, WAL mode, `synchronous=FULL` by default,
//! `busy_timeout`, foreign keys on. Every writing transaction starts with `BEGIN IMMEDIATE`, so a
//! busy database waits (up to `busy_timeout`) instead of failing half-way.

pub mod alerts;
pub mod checks;
pub mod history;
pub mod leases;
pub mod lock;
pub mod occurrences;
pub mod policies;
pub mod postgres;
pub mod slots;
pub mod tokens;
pub mod usage;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use crate::config::{DatabaseSettings, Synchronous};

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
/// Its methods are the same on both; each runs its engine's SQL (PostgreSQL's in [`postgres`]).
#[derive(Clone, Debug)]
pub struct Store {
    engine: Engine,
    /// The SQLite file, or the PostgreSQL URL (which holds no password).
    path: PathBuf,
    /// One writer at a time inside this process, queued fairly. Without it writers meet at
    /// SQLite's lock, whose busy handler waits by sleeping in steps of up to 100 ms; with it they
    /// take turns at once. (Other processes, like `dingrec apply`, still meet the busy handler.)
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Where DingTalk's month begins: `api_usage.day` is a day of this zone.
    quota_tz: chrono_tz::Tz,
    /// How long a claimed attempt or check is held without being renewed (`scheduler.lease`).
    lease: Duration,
    /// Told after every write this process commits (see [`Store::commits`]).
    committed: std::sync::Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
enum Engine {
    Sqlite(SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The engine's name only: a pool's Debug may show its connect options, a password among them.
impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Sqlite(_) => "sqlite",
            Engine::Postgres(_) => "postgres",
        })
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) holding the process's write turn until it ends.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    committed: std::sync::Arc<tokio::sync::Notify>,
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::SqliteConnection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl WriteTx {
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        self.committed.notify_one();
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// `policies.verify`: JSON settings, or NULL for `verify: false`.
pub(crate) fn verify_column(v: Option<&str>) -> std::result::Result<Option<crate::domain::Verify>, String> {
    v.map(|s| serde_json::from_str(s).map_err(|e: serde_json::Error| e.to_string()))
        .transpose()
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The one migration that runs outside sqlx's transaction (`-- no-transaction`: it rebuilds
/// `occurrences` with foreign keys off) and its sign of completion. Its body commits on its own;
/// a daemon stopped between that COMMIT and sqlx's record would run it again and fail (its tables
/// exist) or lose the columns it added. Every other migration runs in one transaction with its
/// record.
const NO_TX_MIGRATION: i64 = 20261203000001;

/// Record the no-transaction migration as applied when its body committed but its record did not
/// (the body's last table, `checks`, exists), so that sqlx does not run it a second time.
async fn finish_interrupted_rebuild(pool: &SqlitePool) -> Result<()> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations') \
           AND (SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'checks')",
    )
    .fetch_one(pool)
    .await?;
    if pending == 0 {
        return Ok(());
    }
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE version = ?")
        .bind(NO_TX_MIGRATION)
        .fetch_one(pool)
        .await?;
    let Some(m) = MIGRATOR.iter().find(|m| m.version == NO_TX_MIGRATION) else {
        return Ok(());
    };
    if recorded == 0 {
        tracing::warn!(
            version = NO_TX_MIGRATION,
            "the verification migration committed but was not recorded (dingrec stopped in between): recording it"
        );
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?, ?, TRUE, ?, -1)",
        )
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// A folder and the folders above it that are missing, 0700 (the service's alone).
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The SQLite file 0600 before SQLite opens it: created empty if missing (an empty file is an
/// empty database), tightened if it is looser (SQLite gives its WAL and SHM the file's mode).
fn private_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if !db.exists() {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)?;
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let p = PathBuf::from(name);
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// A command run as another user than the database's owner (root beside the service's user)
/// would leave a WAL or SHM file the service cannot open, or a database it cannot write: refused,
/// naming the owner. The folder's owner counts when the file does not exist yet.
fn check_owner(db: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::metadata(db) {
        Ok(m) => m,
        Err(_) => {
            let dir = db.parent().filter(|d| !d.as_os_str().is_empty());
            match dir.map_or_else(|| std::fs::metadata("."), std::fs::metadata) {
                // A shared folder with the sticky bit (/tmp) is everyone's: no one owns its files.
                Ok(m) if m.mode() & 0o1000 == 0 => m,
                _ => return Ok(()),
            }
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() == me {
        return Ok(());
    }
    Err(StoreError::Owner {
        path: db.to_owned(),
        owner: meta.uid(),
        me,
    })
}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// The daemon, `apply`, `migrate`, `trigger`: created (with its folder) if missing.
    Write,
    /// `history`, `policies`, `next`, `plan`: never created, never written (`query_only`).
    Read,
}

fn connect_options(path: &Path, settings: &DatabaseSettings, access: Access) -> SqliteConnectOptions {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(access == Access::Write)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match settings.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(settings.busy_timeout)
        .foreign_keys(true)
        .pragma("cache_size", "-512")
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1));
    match access {
        Access::Write => options,
        Access::Read => options.pragma("query_only", "1"),
    }
}

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

    /// Open for the read-only commands (`history`, `policies`, `next`, `plan`): no page check
    /// (it reads the whole file: about a second per 400 MB) and no migration; a damaged page
    /// still shows as an error when a query reaches it.
    /// A SQLite file that does not exist is an error ("nothing was applied yet"), never created.
    /// PostgreSQL's database is the server's: opened and migrated, read empty before any apply.
    pub async fn open_for_reading(settings: &DatabaseSettings) -> Result<Store> {
        let store = if settings.engine() == crate::config::Engine::Postgres {
            Self::open_unmigrated(settings).await?
        } else {
            if !settings.path.exists() {
                return Err(StoreError::Missing(settings.path.clone()));
            }
            check_owner(&settings.path)?;
            Self::connect(settings, Access::Read).await?
        };
        match store.schema().await? {
            Schema::Current => Ok(store),
            Schema::Empty => {
                store.close().await;
                Err(StoreError::Missing(store.path.clone()))
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

    /// The versions of this binary's migrations, sorted.
    fn known_migrations(&self) -> Vec<i64> {
        let migrator = match &self.engine {
            Engine::Sqlite(_) => &MIGRATOR,
            Engine::Postgres(_) => &postgres::MIGRATOR,
        };
        let mut v: Vec<i64> = migrator.iter().map(|m| m.version).collect();
        v.sort_unstable();
        v
    }

    /// Where this database's schema stands against this binary's migrations; reads only.
    pub async fn schema(&self) -> Result<Schema> {
        let applied: Vec<i64> = match &self.engine {
            Engine::Sqlite(pool) => {
                let has: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_one(pool)
                .await?;
                if has == 0 {
                    Vec::new()
                } else {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                        .fetch_all(pool)
                        .await?
                }
            }
            Engine::Postgres(pool) => {
                let has: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?;
                if has {
                    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                        .fetch_all(pool)
                        .await?
                } else {
                    Vec::new()
                }
            }
        };
        Ok(Schema::of(&applied, &self.known_migrations()))
    }

    /// Open without running migrations (the caller runs them, e.g. `dingrec migrate`).
    pub async fn open_unmigrated(settings: &DatabaseSettings) -> Result<Store> {
        if settings.engine() == crate::config::Engine::Postgres {
            let options = settings.postgres_options().map_err(|e| StoreError::Open {
                path: PathBuf::from(&settings.url),
                source: sqlx::Error::Configuration(e.to_string().into()),
            })?;
            let pool = postgres::connect(options, settings.max_connections)
                .await
                .map_err(|source| StoreError::Open {
                    path: PathBuf::from(&settings.url),
                    source,
                })?;
            return Ok(Self::with_engine(
                Engine::Postgres(pool),
                PathBuf::from(&settings.url),
            ));
        }
        // Before anything opens the file (a page check that closed the last connection would
        // checkpoint and remove the service's WAL).
        check_owner(&settings.path)?;
        check_not_corrupt(&settings.path).await?;
        Self::connect(settings, Access::Write).await
    }

    async fn connect(settings: &DatabaseSettings, access: Access) -> Result<Store> {
        let path = settings.path.clone();
        let io = |e: std::io::Error| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        };
        if access == Access::Write {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.exists()
            {
                private_dir(dir).map_err(io)?;
            }
            private_files(&path).map_err(io)?;
        }
        let options = connect_options(&path, settings, access);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(1)
            .acquire_timeout(settings.busy_timeout + Duration::from_secs(5))
            // A COMMIT that fails (SQLITE_FULL on a full disk) leaves the connection inside its
            // transaction, and every later BEGIN on it would fail: such a connection is closed
            // (which rolls back) instead of going back to the pool.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .connect_with(options)
            .await
            .map_err(|source| classify_open_error(&path, source))?;
        Ok(Self::with_engine(Engine::Sqlite(pool), path))
    }

    fn with_engine(engine: Engine, path: PathBuf) -> Store {
        Store {
            engine,
            path,
            write_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            quota_tz: chrono_tz::Asia::Shanghai,
            lease: crate::config::DEFAULT_LEASE,
            committed: std::sync::Arc::new(tokio::sync::Notify::new()),
        }
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
        match &self.engine {
            Engine::Sqlite(pool) => {
                finish_interrupted_rebuild(pool).await?;
                MIGRATOR.run(pool).await?
            }
            Engine::Postgres(pool) => postgres::MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// Until `cancel`, notify `wake` whenever another process applies policies (PostgreSQL:
    /// `LISTEN`). On SQLite, where one daemon runs and planning reads the policies every tick,
    /// this only waits for `cancel`.
    pub async fn watch_policies(
        &self,
        wake: &[std::sync::Arc<tokio::sync::Notify>],
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        match &self.engine {
            Engine::Postgres(pool) => postgres::watch_policies(pool, wake, cancel).await,
            Engine::Sqlite(_) => cancel.cancelled().await,
        }
    }

    /// `sqlite` or `postgres` (`/readyz`, `dingrec status`).
    pub fn engine(&self) -> crate::config::Engine {
        match self.engine {
            Engine::Sqlite(_) => crate::config::Engine::Sqlite,
            Engine::Postgres(_) => crate::config::Engine::Postgres,
        }
    }

    /// The PostgreSQL side of this store's methods, when it is one: every public method asks
    /// first and hands over to [`postgres::Pg`], so the SQLite code below it runs on SQLite only.
    pub(crate) fn postgres(&self) -> Option<postgres::Pg<'_>> {
        match &self.engine {
            Engine::Postgres(pool) => Some(postgres::Pg { pool, store: self }),
            Engine::Sqlite(_) => None,
        }
    }

    /// The PostgreSQL pool, when the store is one (tests that read the database directly).
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.engine {
            Engine::Postgres(pool) => Some(pool),
            Engine::Sqlite(_) => None,
        }
    }

    /// The SQLite pool. Only the SQLite side of the methods reaches this (each hands a PostgreSQL
    /// store to [`Store::postgres`] first), and tests that read a SQLite file directly.
    pub fn pool(&self) -> &SqlitePool {
        match &self.engine {
            Engine::Sqlite(pool) => pool,
            Engine::Postgres(_) => unreachable!("a PostgreSQL store's method ran its SQLite statements"),
        }
    }

    /// Begin a write transaction in this process's turn.
    pub async fn begin_write(&self) -> Result<WriteTx> {
        let pool = self.pool();
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx {
            tx,
            _turn: turn,
            committed: self.committed.clone(),
        })
    }

    /// Notified after a write of this process commits (a permit is kept when nobody waits): the
    /// alert sender waits on it instead of polling, since the schema's triggers write alerts in
    /// the transactions that make occurrences final. Writes of other processes (`dingrec
    /// trigger`, other daemons) are not seen here; the sender's slow poll finds those.
    pub fn commits(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.committed.clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Readiness: may this process write the file, and does a write commit? The first question
    /// is `access(2)`, asked afresh each time: SQLite's open descriptors keep working after the
    /// file is made read-only or immutable, so only the kernel's current answer tells. (Opening and
    /// closing the file here would be wrong: closing any descriptor of a file drops every POSIX
    /// lock this process holds on it, SQLite's included.) The commit goes through the pool, so a
    /// full disk shows there.
    pub async fn probe_writable(&self) -> Result<()> {
        if let Some(pg) = self.postgres() {
            return pg.probe_writable().await;
        }
        writable(&self.path).map_err(|e| StoreError::Open {
            path: self.path.clone(),
            source: sqlx::Error::Io(e),
        })?;
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('ready_probe', 1) \
             ON CONFLICT (key) DO UPDATE SET value = value + 1",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// This database's own mark for the names of its alert messages (a robot's `msgUuid`, a
    /// webhook's `webhook-id`): 8 hex digits drawn once and kept in `meta`, so that two databases
    /// (staging and production) sending to one receiver never name two messages alike, and a
    /// receiver that drops repeats drops only real ones.
    pub async fn alert_prefix(&self) -> Result<String> {
        let drawn = i64::from(rand::random::<u32>());
        let value: i64 = match &self.engine {
            Engine::Sqlite(_) => {
                let mut tx = self.begin_write().await?;
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('alert_prefix', ?) ON CONFLICT (key) DO NOTHING",
                )
                .bind(drawn)
                .execute(&mut *tx)
                .await?;
                let v = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'alert_prefix'")
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                v
            }
            Engine::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO meta (key, value) VALUES ('alert_prefix', $1) ON CONFLICT (key) DO NOTHING",
                )
                .bind(drawn)
                .execute(pool)
                .await?;
                sqlx::query_scalar("SELECT value FROM meta WHERE key = 'alert_prefix'")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(format!("{:08x}", value & 0xffff_ffff))
    }

    pub async fn close(&self) {
        match &self.engine {
            Engine::Sqlite(pool) => pool.close().await,
            Engine::Postgres(pool) => pool.close().await,
        }
    }
}

/// `access(path, W_OK)`: the kernel's answer, immutable files and read-only mounts included.
fn writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the database path holds a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2) only reads it.
    let rc = unsafe { libc::access(c.as_ptr(), libc::W_OK) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn classify_open_error(path: &Path, source: sqlx::Error) -> StoreError {
    let text = source.to_string();
    if text.contains("malformed") || text.contains("not a database") || text.contains("corrupt") {
        StoreError::Corrupt {
            path: path.to_owned(),
            detail: text,
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            source,
        }
    }
}

/// Before anything writes to an existing file: open it read-only and let SQLite check its pages.
/// A damaged file is reported and left byte-for-byte as it was.
async fn check_not_corrupt(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let is_empty = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(false);
    if is_empty {
        return Ok(());
    }
    // Read-only, unless a WAL file is left from a crash: then a reader needs to write the shared
    // memory index, and closing it folds the WAL into the file, which is recovery, not damage.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?
        .filename(path)
        .read_only(!Path::new(&wal).exists())
        .create_if_missing(false);
    let mut conn = opts.connect().await.map_err(|e| classify_open_error(path, e))?;
    let rows = sqlx::query("PRAGMA quick_check(3)")
        .fetch_all(&mut conn)
        .await
        .map_err(|e| classify_open_error(path, e))?;
    let _ = conn.close().await;
    let verdict: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(|e| classify_open_error(path, e))?;
    if verdict.len() == 1 && verdict[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_owned(),
            detail: verdict.join("; "),
        })
    }
}

#[cfg(test)]
mod hot_statements {
    use sqlx::Row;

    use super::Store;
    use super::checks::{CLAIM_CHECKS, LOAD_CHECKS, NEXT_CHECK};
    use super::occurrences::*;
    use super::policies::{CANCEL_FUTURE, CANCEL_UNFINISHED};
    use super::usage::{MONTH_CALLS, QUOTA_REFUSED};

    /// The statements dingrec runs on every tick, every claim, every apply or every readiness
    /// probe search an index: none reads a whole table (a json_each batch aside).
    #[tokio::test]
    async fn every_hot_statement_searches_an_index() {
        let dir = tempfile::tempdir().expect("tmp");
        let settings = crate::config::DatabaseSettings {
            path: dir.path().join("d.db"),
            ..crate::config::DatabaseSettings::default()
        };
        let store = Store::open(&settings).await.expect("store");
        let history_by_policy =
            "SELECT o.id FROM occurrences o WHERE 1 = 1 AND o.policy_name = ? ORDER BY o.due_at, o.id";
        // Each with the index it must use, where a wrong one would still "search" but read every
        // row of a state (a policy's cancel by state alone reads all future rows of all policies).
        let statements = [
            ("claim", CLAIM_SELECT, "occurrences_next_due"),
            ("claim retries", CLAIM_RETRIES_SELECT, "occurrences_retry_due"),
            ("read back", LOAD_CLAIMED, "INTEGER PRIMARY KEY"),
            ("next due", NEXT_DUE, "occurrences_next_due"),
            ("sweep check", SWEEP_ANY, "occurrences_window"),
            ("last success", LAST_SUCCESS, "attempts_succeeded"),
            ("plan candidates", PLAN_CANDIDATES, "policies_to_plan"),
            ("cancel future", CANCEL_FUTURE, "occurrences_by_policy"),
            ("cancel unfinished", CANCEL_UNFINISHED, "occurrences_by_policy"),
            ("plan insert", PLAN_INSERT, "occurrences_by_meeting"),
            ("claim checks", CLAIM_CHECKS, "occurrences_next_check"),
            ("next check", NEXT_CHECK, "occurrences_next_check"),
            ("read checks back", LOAD_CHECKS, "INTEGER PRIMARY KEY"),
            (
                "started meeting covered",
                STARTED_MEETING_COVERED,
                "occurrences_by_policy",
            ),
            (
                "history --policy",
                history_by_policy,
                "occurrences_by_policy_name",
            ),
            ("month's calls", MONTH_CALLS, "PRIMARY KEY"),
            ("quota refusals", QUOTA_REFUSED, "attempts_quota_refused"),
        ];
        for (what, sql, index) in statements {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                .fetch_all(store.pool())
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let plan: Vec<String> = rows
                .iter()
                .map(|r| r.try_get::<String, _>("detail").expect("detail"))
                .collect();
            for step in &plan {
                let scans_a_table = step.starts_with("SCAN ")
                    && !step.starts_with("SCAN j")
                    && !step.contains("json_each")
                    && !step.contains("COVERING INDEX")
                    && step != "SCAN CONSTANT ROW";
                assert!(!scans_a_table, "{what} scans a table: {plan:#?}");
            }
            assert!(
                plan.iter().any(|p| p.split_whitespace().any(|w| w == index)
                    || (index.contains(' ') && p.contains(index))),
                "{what} does not use {index}: {plan:#?}"
            );
        }
        store.close().await;
    }
}
