//! `access_tokens`: the access token, sealed, shared by every daemon on this database and kept
//! across restarts (`docs/database.md`). The store keeps bytes; sealing is the client's.

use chrono::{DateTime, Utc};

use super::Sqlite;
use crate::domain::SealedToken;
use crate::domain::time::{fmt_utc, parse_utc};
use crate::store::FetchTurn;
use crate::store::{Result, StoreError};

impl Sqlite {
    pub async fn token_fetch_turn(&self, _app: &str) -> Result<Option<FetchTurn>> {
        Ok(None)
    }

    pub async fn shared_token(&self, app: &str) -> Result<Option<SealedToken>> {
        let row: Option<(Vec<u8>, String, String)> =
            sqlx::query_as("SELECT sealed, expires_at, refresh_at FROM access_tokens WHERE app = ?")
                .bind(app)
                .fetch_optional(self.pool())
                .await?;
        let Some((sealed, expires_at, refresh_at)) = row else {
            return Ok(None);
        };
        let time = |s: &str| parse_utc(s).map_err(|e| StoreError::Data(format!("access_tokens.{app}: {e}")));
        Ok(Some(SealedToken {
            sealed,
            expires_at: time(&expires_at)?,
            refresh_at: time(&refresh_at)?,
        }))
    }

    pub async fn share_token(&self, app: &str, token: &SealedToken, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO access_tokens (app, sealed, expires_at, refresh_at, fetched_by, fetched_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (app) DO UPDATE SET sealed = excluded.sealed, expires_at = excluded.expires_at, \
             refresh_at = excluded.refresh_at, fetched_by = excluded.fetched_by, fetched_at = excluded.fetched_at",
        )
        .bind(app)
        .bind(&token.sealed)
        .bind(fmt_utc(token.expires_at))
        .bind(fmt_utc(token.refresh_at))
        .bind(crate::instance::this())
        .bind(fmt_utc(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn forget_token(&self, app: &str, sealed: &[u8]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM access_tokens WHERE app = ? AND sealed = ?")
            .bind(app)
            .bind(sealed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n > 0)
    }
}
