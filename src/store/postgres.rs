//! PostgreSQL, for several daemons on one database (`docs/database.md`): its schema
//! (`migrations-postgres`, the same tables, columns, views and state names as SQLite's, in
//! PostgreSQL's types) and its connection. The store's queries are SQLite's so far; this module is
//! where their PostgreSQL twins go, one query beside the other.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::Result;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Connect to `options` and bring its schema up to date (a transaction per migration, under
/// PostgreSQL's advisory lock: daemons starting together migrate once).
pub async fn open(options: PgConnectOptions, max_connections: u32) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
