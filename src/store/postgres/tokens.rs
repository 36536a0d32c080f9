//! PostgreSQL twin of `store/tokens.rs`: the sealed access token every daemon shares.

use chrono::{DateTime, Utc};

use super::{Pg, ms};
use crate::domain::SealedToken;
use crate::store::Result;

impl Pg<'_> {
    pub async fn shared_token(&self, app: &str) -> Result<Option<SealedToken>> {
        let row: Option<(Vec<u8>, DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as("SELECT sealed, expires_at, refresh_at FROM access_tokens WHERE app = $1")
                .bind(app)
                .fetch_optional(self.pool)
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
        .execute(self.pool)
        .await?;
        Ok(())
    }

    pub async fn forget_token(&self, app: &str, sealed: &[u8]) -> Result<bool> {
        let n = sqlx::query("DELETE FROM access_tokens WHERE app = $1 AND sealed = $2")
            .bind(app)
            .bind(sealed)
            .execute(self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}
