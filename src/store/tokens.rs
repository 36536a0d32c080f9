//! `access_tokens`: the access token, sealed, shared by every daemon on this database and kept
//! across restarts (`docs/database.md`). The store keeps bytes; sealing is the client's.

use chrono::{DateTime, Utc};

use super::{Result, Store, StoreError};
use crate::domain::SealedToken;
use crate::domain::time::{fmt_utc, parse_utc};

/// One process's turn to fetch `app`'s token while other daemons on the same database wait for
/// it and then take the token it kept ([`Store::token_fetch_turn`]). Release it once the token is
/// kept; dropped unreleased (a task cancelled), it closes its connection, which ends the turn.
#[derive(Debug)]
pub struct FetchTurn {
    inner: Option<super::postgres::FetchTurn>,
}

impl FetchTurn {
    pub async fn release(mut self) {
        if let Some(t) = self.inner.take() {
            t.release().await;
        }
    }
}

impl Store {
    /// Wait (a bounded time) for this process's turn to fetch `app`'s access token among the
    /// daemons sharing this database, so that daemons that start together fetch one token, not
    /// one each. `None` on SQLite (one daemon), or when the turn did not come in time (fetch anyway).
    pub async fn token_fetch_turn(&self, app: &str) -> Result<Option<FetchTurn>> {
        let Some(pg) = self.postgres() else {
            return Ok(None);
        };
        Ok(pg
            .token_fetch_turn(app)
            .await?
            .map(|t| FetchTurn { inner: Some(t) }))
    }

    /// The token kept for `app`, if any (fresh or not: the caller decides).
    pub async fn shared_token(&self, app: &str) -> Result<Option<SealedToken>> {
        if let Some(pg) = self.postgres() {
            return pg.shared_token(app).await;
        }
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

    /// Keep `token` for `app`, fetched by this process at `now`, in place of the one before.
    pub async fn share_token(&self, app: &str, token: &SealedToken, now: DateTime<Utc>) -> Result<()> {
        if let Some(pg) = self.postgres() {
            return pg.share_token(app, token, now).await;
        }
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

    /// Drop `app`'s token if it is still `sealed` (DingTalk refused it); a newer one stays.
    pub async fn forget_token(&self, app: &str, sealed: &[u8]) -> Result<bool> {
        if let Some(pg) = self.postgres() {
            return pg.forget_token(app, sealed).await;
        }
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
