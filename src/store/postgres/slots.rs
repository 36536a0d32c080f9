//! The send slots every daemon on this database shares (`send_slots`): `dingtalk.rate_limit` is
//! DingTalk's limit per app, not per daemon.

use std::time::Duration;

use super::Pg;
use crate::store::Result;

/// Slots further ahead than this are a clock that went back (or a row written by hand), not a
/// queue of sends: the next taker starts again from now.
const MAX_AHEAD: Duration = Duration::from_secs(60);

impl Pg {
    /// Take the next `n` send slots of `app`, `period` apart: how long from now until the first.
    /// The row is locked for the statement only; the transaction does not wait for a disk flush
    /// (a slot lost in a server crash is only a slot handed out again).
    pub async fn take_send_slots(&self, app: &str, n: u32, period: Duration) -> Result<Option<Duration>> {
        let period_us = i64::try_from(period.as_micros()).unwrap_or(i64::MAX);
        let ahead_us = i64::try_from(MAX_AHEAD.as_micros()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        // `first` is the first free slot, or now when it has passed (or is absurdly far ahead).
        let wait_us: f64 = sqlx::query_scalar(
            "WITH clock AS (SELECT clock_timestamp() AS t), \
             taken AS ( \
               INSERT INTO send_slots AS s (app, next_at) \
               SELECT $1, clock.t + make_interval(secs => ($2::bigint * $3::bigint / 1e6)::float8) FROM clock \
               ON CONFLICT (app) DO UPDATE SET next_at = \
                 (CASE WHEN s.next_at < (SELECT t FROM clock) \
                         OR s.next_at > (SELECT t FROM clock) + make_interval(secs => ($4::bigint / 1e6)::float8) \
                       THEN (SELECT t FROM clock) ELSE s.next_at END) \
                 + make_interval(secs => ($2::bigint * $3::bigint / 1e6)::float8) \
               RETURNING next_at) \
             SELECT EXTRACT(EPOCH FROM (taken.next_at - clock.t))::float8 * 1e6 - $2::float8 * $3::float8 \
             FROM taken, clock",
        )
        .bind(app)
        .bind(i64::from(n))
        .bind(period_us)
        .bind(ahead_us)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Duration::from_micros(wait_us.max(0.0) as u64)))
    }

    /// Every daemon on this database sends for the same app through it.
    pub fn shares_rate_limit(&self) -> bool {
        true
    }
}
