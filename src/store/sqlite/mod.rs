//! SQLite, for one daemon on one machine: WAL mode, `synchronous=FULL` by default,
//! `busy_timeout`, foreign keys on. Every writing transaction starts with `BEGIN IMMEDIATE`, so a
//! busy database waits (up to `busy_timeout`) instead of failing half-way, and takes this
//! process's write turn first. SQL and row mapping only: the operations' fronts are in
//! `store/api.rs`, their PostgreSQL twins in `store/postgres/`, file for file.

mod alerts;
mod auto_record;
mod checks;
mod events;
mod history;

/// The statements behind the status page on SQLite (`http/status.rs` tests that each searches
/// an index): `history` for a filter, the final counts, the undelivered alerts.
pub mod status_sql {
    pub use super::alerts::ALERTS_UNDELIVERED;
    pub use super::history::history_sql as history;
    pub use super::occurrences::FINAL_COUNTS;
}
mod leases;
mod occurrences;
mod policies;
mod slots;
mod tokens;
mod usage;
mod watch;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row};

use super::{Ctx, Result, StoreError};
use crate::config::{DatabaseSettings, Synchronous};
use crate::domain::time::fmt_utc;

/// A SQLite store: its pool, its write turn and the settings both engines keep.
#[derive(Clone)]
pub(crate) struct Sqlite {
    pub(crate) pool: SqlitePool,
    pub(crate) ctx: Ctx,
    /// One writer at a time inside this process, queued fairly. Without it writers meet at
    /// SQLite's lock, whose busy handler waits by sleeping in steps of up to 100 ms; with it they
    /// take turns at once. (Other processes, like `dingrec apply`, still meet the busy handler.)
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Sqlite {
    /// Open for writing (created with its folder if missing), after checking that the file
    /// belongs to this user and is not damaged; no migration.
    pub(crate) async fn open(settings: &DatabaseSettings) -> Result<Sqlite> {
        // Before anything opens the file (a page check that closed the last connection would
        // checkpoint and remove the service's WAL).
        check_owner(&settings.path)?;
        check_not_corrupt(&settings.path).await?;
        Self::connect(settings, Access::Write).await
    }

    /// Open read-only (`query_only`): a file that does not exist is an error, never created.
    pub(crate) async fn open_for_reading(settings: &DatabaseSettings) -> Result<Sqlite> {
        if !settings.path.exists() {
            return Err(StoreError::Missing(settings.path.clone()));
        }
        check_owner(&settings.path)?;
        Self::connect(settings, Access::Read).await
    }

    async fn connect(settings: &DatabaseSettings, access: Access) -> Result<Sqlite> {
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
        Ok(Sqlite {
            pool,
            ctx: Ctx::new(path),
            write_lock: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Begin a write transaction in this process's turn.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx> {
        let turn = self.write_lock.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx {
            tx,
            _turn: turn,
            committed: self.ctx.committed.clone(),
        })
    }

    /// `lease_until` of a claim or renewal at `now`.
    fn lease_until(&self, now: DateTime<Utc>) -> String {
        fmt_utc(self.ctx.lease_end(now))
    }

    /// The versions of this binary's migrations, sorted.
    pub(crate) fn known_migrations(&self) -> Vec<i64> {
        let mut v: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        v.sort_unstable();
        v
    }

    /// The versions this database applied, sorted (none before its first migration).
    pub(crate) async fn applied_migrations(&self) -> Result<Vec<i64>> {
        let has: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(self.pool())
        .await?;
        if has == 0 {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(self.pool())
                .await?,
        )
    }

    pub(crate) async fn migrate(&self) -> Result<()> {
        finish_interrupted_rebuild(self.pool()).await?;
        MIGRATOR.run(self.pool()).await?;
        Ok(())
    }

    /// One daemon per SQLite database, which reads the policies every tick: nothing to watch.
    pub(crate) async fn watch_policies(
        &self,
        wake: &[std::sync::Arc<tokio::sync::Notify>],
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        match wake.first() {
            Some(scheduler) => watch::writes(&self.ctx.path, scheduler, cancel).await,
            None => cancel.cancelled().await,
        }
    }

    /// Readiness: may this process write the file, and does a write commit? The first question
    /// is `access(2)`, asked afresh each time: SQLite's open descriptors keep working after the
    /// file is made read-only or immutable, so only the kernel's current answer tells. (Opening and
    /// closing the file here would be wrong: closing any descriptor of a file drops every POSIX
    /// lock this process holds on it, SQLite's included.) The commit goes through the pool, so a
    /// full disk shows there.
    pub(crate) async fn probe_writable(&self) -> Result<()> {
        writable(&self.ctx.path).map_err(|e| StoreError::Open {
            path: self.ctx.path.clone(),
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

    /// `meta.alert_prefix`, set to `drawn` if it has no value yet.
    pub(crate) async fn alert_prefix(&self, drawn: i64) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO meta (key, value) VALUES ('alert_prefix', ?) ON CONFLICT (key) DO NOTHING")
            .bind(drawn)
            .execute(&mut *tx)
            .await?;
        let v = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'alert_prefix'")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) holding the process's write turn until it ends.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    committed: crate::store::Commits,
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
        crate::store::committed(&self.committed);
        Ok(())
    }

    pub async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The verification migration, which runs outside sqlx's transaction (`-- no-transaction`: it
/// rebuilds `occurrences` with foreign keys off), and its sign of completion. Its body commits on
/// its own; a daemon stopped between that COMMIT and sqlx's record would run it again and fail
/// (its tables exist) or lose the columns it added. The other rebuild outside a transaction (the
/// events migration) is written to run again instead; every other migration runs in one
/// transaction with its record.
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

/// Test support: `sql`'s plan reads no table whole and uses `index` (a name, or words such as
/// `INTEGER PRIMARY KEY`). A co-routine's rows (a subquery's few), a `json_each` batch, a covering
/// index and a partial index (it holds only the rows its WHERE names) are not a table.
#[cfg(test)]
pub(crate) async fn assert_searches(pool: &sqlx::SqlitePool, what: &str, sql: &str, index: &str) {
    use sqlx::Row;
    let partial: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND sql LIKE '% WHERE %'")
            .fetch_all(pool)
            .await
            .expect("indexes");
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String, _>("detail").expect("detail"))
        .collect();
    for step in &plan {
        let Some(scanned) = step.strip_prefix("SCAN ") else {
            continue;
        };
        let co_routine = plan.contains(&format!("CO-ROUTINE {scanned}"));
        let partial_index = partial
            .iter()
            .any(|i| step.ends_with(&format!("USING INDEX {i}")));
        let fine = co_routine
            || partial_index
            || scanned.starts_with('j')
            || step.contains("json_each")
            || step.contains("COVERING INDEX")
            || step == "SCAN CONSTANT ROW";
        assert!(fine, "{what} scans a table: {plan:#?}");
    }
    assert!(
        plan.iter()
            .any(|p| p.split_whitespace().any(|w| w == index) || (index.contains(' ') && p.contains(index))),
        "{what} does not use {index}: {plan:#?}"
    );
}

#[cfg(test)]
mod hot_statements {
    use super::assert_searches;

    use super::checks::{CLAIM_CHECKS, LOAD_CHECKS, NEXT_CHECK};
    use super::occurrences::*;
    use super::policies::{CANCEL_FUTURE, CANCEL_UNFINISHED};
    use super::usage::{MONTH_CALLS, QUOTA_REFUSED};
    use crate::store::Store;

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
            ("housekeeping marks", HOUSEKEEPING_MARKS, "occurrences_window"),
            ("last success", LAST_SUCCESS, "attempts_succeeded"),
            ("plan candidates", PLAN_CANDIDATES, "policies_to_plan"),
            ("cancel future", CANCEL_FUTURE, "occurrences_by_policy"),
            ("cancel unfinished", CANCEL_UNFINISHED, "occurrences_by_policy"),
            ("plan insert", PLAN_INSERT_MANY, "occurrences_by_meeting"),
            ("planned until", PLANNED_UNTIL_MANY, "INTEGER PRIMARY KEY"),
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
        let pool = store.sqlite_pool().expect("SQLite");
        for (what, sql, index) in statements {
            assert_searches(pool, what, sql, index).await;
        }
        store.close().await;
    }
}
