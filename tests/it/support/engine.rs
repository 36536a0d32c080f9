//! Which database engine the integration tests run on. `TEST_ENGINE=postgres` runs them on the
//! PostgreSQL cluster `TEST_POSTGRES_URL` names (`scripts/test` starts one and runs the suite's
//! engine-neutral modules a second time so), each test in a schema of its own; else on a SQLite
//! file in the test's folder. One suite, two engines: a matrix, not a copy.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection as _;

/// The tests run on PostgreSQL.
pub fn postgres() -> bool {
    std::env::var("TEST_ENGINE").is_ok_and(|e| e == "postgres")
}

/// The throwaway cluster's URL; the PostgreSQL tests cannot pass without one.
pub fn cluster_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set: run scripts/test, which starts a throwaway PostgreSQL \
             (scripts/pg; apt-get install postgresql), or set it to a postgres:// URL whose user may create databases"
        )
    })
}

/// A `database.url` for one test: the cluster, in a new empty schema (cheaper than a database,
/// and as separate: every table, view, function and migration record lives in it).
pub async fn fresh_url() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = cluster_url();
    let schema = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test cluster");
    // With SQLite's `group_concat` and `julianday`, which the tests' SQL (an operator's SQL)
    // uses: one query text reads both engines.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         CREATE FUNCTION {schema}.gc_step(acc text, v text, sep text) RETURNS text LANGUAGE sql IMMUTABLE AS \
           $$ SELECT CASE WHEN v IS NULL THEN acc WHEN acc IS NULL THEN v ELSE acc || sep || v END $$; \
         CREATE FUNCTION {schema}.gc_step(acc text, v text) RETURNS text LANGUAGE sql IMMUTABLE AS \
           $$ SELECT {schema}.gc_step(acc, v, ',') $$; \
         CREATE AGGREGATE {schema}.group_concat(text) (SFUNC = {schema}.gc_step, STYPE = text); \
         CREATE AGGREGATE {schema}.group_concat(text, text) (SFUNC = {schema}.gc_step, STYPE = text); \
         CREATE FUNCTION {schema}.julianday(t timestamptz) RETURNS double precision LANGUAGE sql IMMUTABLE AS \
           $$ SELECT extract(epoch FROM t) / 86400.0 + 2440587.5 $$"
    )))
    .execute(&mut admin)
    .await
    .expect("a schema for the test");
    admin.close().await.expect("close");
    let sep = if base.contains('?') { '&' } else { '?' };
    // libpq's spelling, which sqlx reads too: `psql` can open the same URL.
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// [`fresh_url`] from synchronous code (on a thread of its own: the caller may be inside a runtime).
pub fn fresh_url_blocking() -> String {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fresh_url())
    })
    .join()
    .expect("fresh_url")
}

/// The `database:` lines of a config file for a test in `dir`. On PostgreSQL the URL is kept
/// in `dir/database_url` too, where [`url_beside`] finds it.
pub fn database_yaml(dir: &std::path::Path) -> String {
    if postgres() {
        let url = fresh_url_blocking();
        std::fs::write(dir.join("database_url"), &url).expect("keep the URL");
        format!("database:\n  url: \"{url}\"\n")
    } else {
        format!("database:\n  path: {}\n", dir.join("dingrec.db").display())
    }
}

/// A test that only SQLite can run (its fault needs SQLite's text columns, or its shell): on
/// PostgreSQL it says so and is skipped.
pub fn sqlite_only(why: &str) -> bool {
    if postgres() {
        eprintln!("skipped on PostgreSQL: {why}");
        return false;
    }
    true
}

/// One value of a row read by [`rows`]: JSON, with instants written as SQLite keeps them.
fn cell(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => match chrono::DateTime::parse_from_rfc3339(&s) {
            Ok(t) => serde_json::Value::String(dingrec::domain::time::fmt_utc(t.with_timezone(&chrono::Utc))),
            Err(_) => serde_json::Value::String(s),
        },
        other => other,
    }
}

/// The rows of `sql` (SQL both engines read alike) on the store's database, each a list of JSON
/// values; instants come as `2030-01-07T08:00:00.000Z` on both.
pub async fn rows(store: &dingrec::store::Store, sql: &str) -> Vec<Vec<serde_json::Value>> {
    use sqlx::Row as _;
    if let Some(pool) = store.postgres_pool() {
        let out = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        return out
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        let json = |v: Option<serde_json::Value>| v.unwrap_or(serde_json::Value::Null);
                        if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                            json(v.map(Into::into))
                        } else if let Ok(v) = r.try_get::<Option<i32>, _>(i) {
                            json(v.map(Into::into))
                        } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                            json(v.map(Into::into))
                        } else if let Ok(v) = r.try_get::<Option<bool>, _>(i) {
                            json(v.map(|b| i64::from(b).into()))
                        } else if let Ok(v) = r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i) {
                            json(v.map(|t| dingrec::domain::time::fmt_utc(t).into()))
                        } else {
                            let v: Option<String> =
                                r.try_get(i).unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"));
                            json(v.map(Into::into))
                        }
                    })
                    .collect()
            })
            .collect();
    }
    let out = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(store.sqlite_pool().expect("SQLite"))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    if let Ok(v) = r.try_get::<Option<i64>, _>(i) {
                        v.map_or(serde_json::Value::Null, Into::into)
                    } else if let Ok(v) = r.try_get::<Option<f64>, _>(i) {
                        v.map_or(serde_json::Value::Null, Into::into)
                    } else {
                        let v: Option<String> =
                            r.try_get(i).unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"));
                        cell(v.map_or(serde_json::Value::Null, Into::into))
                    }
                })
                .collect()
        })
        .collect()
}

/// The one integer `sql` reads (a `COUNT(*)`, say), on either engine.
pub async fn count(store: &dingrec::store::Store, sql: &str) -> i64 {
    rows(store, sql).await[0][0]
        .as_i64()
        .unwrap_or_else(|| panic!("{sql}: not an integer"))
}

/// Run `sqlite` on SQLite or `postgres` on PostgreSQL (an outside edit or a fault, where the two
/// engines need different words for it).
pub async fn exec(store: &dingrec::store::Store, sqlite: &str, postgres: &str) {
    match store.postgres_pool() {
        Some(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(postgres.to_owned()))
            .execute(pool)
            .await
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{postgres}: {e}")),
        None => sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite.to_owned()))
            .execute(store.sqlite_pool().expect("SQLite"))
            .await
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{sqlite}: {e}")),
    }
}

/// The PostgreSQL URL a test in the folder of `db` runs on, if it runs on PostgreSQL.
pub fn url_beside(db: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(db.parent()?.join("database_url")).ok()
}
