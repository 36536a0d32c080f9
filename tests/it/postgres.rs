//! The PostgreSQL engine against a throwaway cluster (`scripts/pg`, which `scripts/test` starts
//! and stops; `TEST_POSTGRES_URL` names it).

use std::collections::BTreeMap;

use dingrec::domain::{
    AlertEvent, AlertState, AttemptOutcome, CheckKind, CheckOutcome, OccurrenceState, Trigger,
};
use dingrec::store::Store;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

/// The cluster's URL; the PostgreSQL tests cannot pass without one.
fn cluster() -> PgConnectOptions {
    let url = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set: run scripts/test, which starts a throwaway PostgreSQL \
             (scripts/pg; apt-get install postgresql), or set it to a postgres:// URL whose user may create databases"
        )
    });
    url.parse().expect("TEST_POSTGRES_URL is a postgres:// URL")
}

/// A new, empty database on the cluster, for one test.
async fn fresh_database(name: &str) -> PgConnectOptions {
    let base = cluster();
    let mut admin = PgConnection::connect_with(&base)
        .await
        .expect("connect to the cluster");
    // One statement each: neither may run inside the transaction a multi-statement query makes.
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("create the test database");
    }
    admin.close().await.expect("close");
    base.database(name)
}

type Columns = BTreeMap<String, Vec<String>>;

/// Tables and views of a migrated SQLite database, with their columns in order.
async fn sqlite_columns() -> Columns {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = dingrec::config::DatabaseSettings {
        path: dir.path().join("d.db"),
        ..dingrec::config::DatabaseSettings::default()
    };
    let store = Store::open(&settings).await.expect("sqlite");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c \
         WHERE m.type IN ('table', 'view') AND m.name NOT LIKE '\\_sqlx%' ESCAPE '\\' \
         AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY m.name, c.cid",
    )
    .fetch_all(store.sqlite_pool().expect("SQLite"))
    .await
    .expect("sqlite columns");
    store.close().await;
    group(rows)
}

fn group(rows: Vec<(String, String)>) -> Columns {
    let mut out = Columns::new();
    for (table, column) in rows {
        out.entry(table).or_default().push(column);
    }
    out
}

/// The PostgreSQL schema is SQLite's: every table and view with the same columns in the same
/// order (and `send_slots`), and the same state names in its CHECK constraints as the code's enums; migrating twice
/// (a second daemon starting) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_schema_has_the_sqlite_tables_columns_and_state_names() {
    let options = fresh_database("schema_parity").await;
    let pool = dingrec::store::postgres::open(options.clone(), 2)
        .await
        .expect("migrated");
    pool.close().await;
    let pool = dingrec::store::postgres::open(options, 2)
        .await
        .expect("migrated again");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name NOT LIKE '\\_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .expect("pg columns");
    let mut pg = group(rows);
    // PostgreSQL's one table of its own: the send slots its daemons share (one SQLite daemon
    // keeps its rate limit in memory).
    assert_eq!(
        pg.remove("send_slots"),
        Some(vec!["app".to_owned(), "next_at".to_owned()]),
        "send_slots"
    );
    let sqlite = sqlite_columns().await;
    assert_eq!(
        pg.keys().collect::<Vec<_>>(),
        sqlite.keys().collect::<Vec<_>>(),
        "the same tables and views"
    );
    for (table, columns) in &sqlite {
        assert_eq!(pg.get(table), Some(columns), "the columns of {table}");
    }

    for (table, column, names) in [
        ("occurrences", "state", OccurrenceState::NAMES),
        ("occurrences", "trigger", Trigger::NAMES),
        ("attempts", "outcome", AttemptOutcome::NAMES),
        ("checks", "kind", CheckKind::NAMES),
        ("checks", "outcome", CheckOutcome::NAMES),
        ("alerts", "event", AlertEvent::NAMES),
        ("alerts", "state", AlertState::NAMES),
    ] {
        let defs: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c'",
        )
        .bind(table)
        .fetch_all(&pool)
        .await
        .expect("constraints");
        let def = defs
            .iter()
            .find(|d| d.contains(&format!("({column} = ANY")))
            .unwrap_or_else(|| panic!("no CHECK on {table}.{column}: {defs:?}"));
        let mut allowed: Vec<&str> = def.split('\'').skip(1).step_by(2).collect();
        allowed.sort_unstable();
        let mut want = names.to_vec();
        want.sort_unstable();
        assert_eq!(allowed, want, "{table}.{column}: {def}");
    }
    // The policies' row rules, SQLite's too: the window outlasts the offset; a policy names one
    // meeting and one schedule, or has a match rule and neither.
    let defs: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'policies'::regclass AND contype = 'c'",
    )
    .fetch_all(&pool)
    .await
    .expect("constraints");
    for wanted in ["(window_ms > start_offset_ms)", "match_rule IS NULL"] {
        assert!(
            defs.iter().any(|d| d.contains(wanted)),
            "no CHECK with {wanted}: {defs:?}"
        );
    }
    pool.close().await;
}

/// The alert outbox is the schema's own on PostgreSQL too: the transaction that makes an
/// occurrence final (or finds a recording stopped) writes its alerts, once, to the policy's
/// destinations, and a month's spent quota raises none per occurrence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgresql_alert_outbox_writes_each_alert_once_to_the_policys_destinations() {
    let options = fresh_database("alert_outbox").await;
    let pool = dingrec::store::postgres::open(options, 2)
        .await
        .expect("migrated");
    sqlx::raw_sql(
        "INSERT INTO alert_routing (id, destinations, events, updated_at) VALUES \
           (1, '[\"ops\"]', '[\"failed\", \"expired\", \"missed\", \"not_recording\", \"paused\", \"recording_stopped\"]', now()); \
         INSERT INTO policies (id, name, conference_id, host_union_id, layout, small_window_position, at, timezone, \
           start_offset_ms, window_ms, retry, source, created_at, updated_at, alert) VALUES \
           (1, 'board', 'conf', 'host', 'grid', 'relative_right', '2030-01-07T08:00:00Z', 'UTC', 0, 1800000, '{}', 'f', now(), now(), NULL), \
           (2, 'allhands', 'conf2', 'host', 'grid', 'relative_right', '2030-01-07T08:00:00Z', 'UTC', 0, 1800000, '{}', 'f', now(), now(), '[\"hr\", \"ops\"]'); \
         INSERT INTO occurrences (id, policy_id, policy_name, due_at, window_ends_at, state, created_at, updated_at) VALUES \
           (1, 1, 'board', '2030-01-07T08:00:00Z', '2030-01-07T08:30:00Z', 'running', now(), now()), \
           (2, 2, 'allhands', '2030-01-07T08:00:00Z', '2030-01-07T08:30:00Z', 'running', now(), now()), \
           (3, 1, 'board', '2030-01-06T08:00:00Z', '2030-01-06T08:30:00Z', 'missed', now(), now()), \
           (4, 1, 'board', '2030-01-05T08:00:00Z', '2030-01-05T08:30:00Z', 'running', now(), now()), \
           (5, 1, 'board', '2030-01-04T08:00:00Z', '2030-01-04T08:30:00Z', 'verifying', now(), now()); \
         INSERT INTO attempts (occurrence_id, attempt_no, started_at, code, message, outcome) VALUES \
           (1, 1, now(), 'roomClosed', 'the meeting ended', 'fail');",
    )
    .execute(&pool)
    .await
    .expect("rows");
    let step = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::raw_sql(sql).execute(&pool).await.expect(sql) }
    };
    step("UPDATE occurrences SET state = 'failed', last_code = 'roomClosed' WHERE id = 1").await;
    step("UPDATE occurrences SET state = 'failed' WHERE id = 2").await;
    // The quota's one monthly alert covers this one.
    step("UPDATE occurrences SET state = 'failed', last_code = 'Forbidden.AccessDenied.ApiCountLimitForOrg' WHERE id = 4").await;
    // Not recording after a start: said once, however often it happens.
    for _ in 0..2 {
        step("UPDATE occurrences SET state = 'retry_wait' WHERE id = 5").await;
        step("UPDATE occurrences SET state = 'verifying' WHERE id = 5").await;
    }
    // A watch finds the recording paused twice in a row (one alert), then stopped.
    step(
        "INSERT INTO checks (id, occurrence_id, kind, at) VALUES (1, 5, 'watch', now()), (2, 5, 'watch', now()), (3, 5, 'watch', now())",
    )
    .await;
    step("UPDATE checks SET outcome = 'paused' WHERE id = 1").await;
    step("UPDATE checks SET outcome = 'paused' WHERE id = 2").await;
    step("UPDATE checks SET outcome = 'stopped', message = 'host ended it' WHERE id = 3").await;

    let alerts: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT occurrence_id, event, destination, \
         COALESCE(payload ->> 'message', '') || '|' || COALESCE(payload ->> 'check', '') || '|' || COALESCE(payload ->> 'check_message', '') \
         FROM alerts ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("alerts");
    let s = |v: &str| v.to_owned();
    assert_eq!(
        alerts,
        [
            (3, s("missed"), s("ops"), s("||")),
            (1, s("failed"), s("ops"), s("the meeting ended||")),
            (2, s("failed"), s("hr"), s("||")),
            (2, s("failed"), s("ops"), s("||")),
            (5, s("not_recording"), s("ops"), s("||")),
            (5, s("paused"), s("ops"), s("|paused|")),
            (5, s("recording_stopped"), s("ops"), s("|stopped|host ended it")),
        ]
    );
    pool.close().await;
}
