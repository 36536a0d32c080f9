//! PostgreSQL twin of `store/tokens.rs`: the sealed access token every daemon shares.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;

use super::{Pg, ms};
use crate::domain::SealedToken;
use crate::store::Result;

/// How long a daemon waits for another's token fetch (a fetch takes at most
/// `dingtalk.request_timeout`, up to a minute) before it fetches its own.
const TURN_WAIT: Duration = Duration::from_secs(65);
const TURN_POLL: Duration = Duration::from_millis(50);

/// A session advisory lock on the fetch of one app's token, held on a connection of its own.
pub struct FetchTurn {
    conn: Option<PoolConnection<sqlx::Postgres>>,
    key: String,
}

impl std::fmt::Debug for FetchTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchTurn")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl FetchTurn {
    pub async fn release(mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(&self.key)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // The connection may still hold the lock: closed, it cannot.
            drop(conn.detach());
        }
    }
}

impl Drop for FetchTurn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

impl Pg {
    /// Take the fetch turn of `app`'s token: `None` when another daemon held it for longer
    /// than [`TURN_WAIT`].
    pub async fn token_fetch_turn(&self, app: &str) -> crate::store::Result<Option<crate::store::FetchTurn>> {
        let key = format!("dingrec access token {app}");
        let mut conn = self.pool.acquire().await?;
        let until = tokio::time::Instant::now() + TURN_WAIT;
        loop {
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
                .bind(&key)
                .fetch_one(&mut *conn)
                .await?;
            if got {
                return Ok(Some(crate::store::FetchTurn::new(FetchTurn {
                    conn: Some(conn),
                    key,
                })));
            }
            if tokio::time::Instant::now() >= until {
                return Ok(None);
            }
            tokio::time::sleep(TURN_POLL).await;
        }
    }

    pub async fn shared_token(&self, app: &str) -> Result<Option<SealedToken>> {
        let row: Option<(Vec<u8>, DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("SELECT sealed, expires_at, refresh_at FROM access_tokens WHERE app = $1")
                .bind(app)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(sealed, expires_at, refresh_at)| SealedToken {
            sealed,
            expires_at,
            refresh_at,
        }))
    }

    pub async fn share_token(&self, app: &str, token: &SealedToken, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO access_tokens (app, sealed, expires_at, refresh_at, fetched_by, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at, \
             refresh_at = excluded.refresh_at, fetched_by = excluded.fetched_by, fetched_at = excluded.fetched_at",
        )
        .bind(app)
        .bind(&token.sealed)
        .bind(ms(token.expires_at))
        .bind(ms(token.refresh_at))
        .bind(crate::instance::this())
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn forget_token(&self, app: &str, sealed: &[u8]) -> Result<bool> {
        let n = sqlx::query("DELETE FROM access_tokens WHERE app = $1 AND sealed = $2")
            .bind(app)
            .bind(sealed)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
