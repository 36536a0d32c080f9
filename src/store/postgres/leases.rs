//! PostgreSQL twin of `store/leases.rs`: instances, lease renewal, and the take-over of leases
//! that ran out (here, unlike under SQLite's lock, the everyday way a dead daemon's calls end).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::occurrences::{Held, close_interrupted};
use super::{Pg, ms};
use crate::store::Result;
use crate::store::types::InstanceRow;
use crate::store::types::Recovery;

impl Pg {
    pub async fn register_instance(&self, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "INSERT INTO instances (instance, version, started_at, seen_at, lease_ms) VALUES ($1, $2, $3, $3, $4) \
             ON CONFLICT (instance) DO UPDATE SET version = excluded.version, started_at = excluded.started_at, \
             seen_at = excluded.seen_at, lease_ms = excluded.lease_ms, stopped_at = NULL",
        )
        .bind(crate::instance::this())
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(ms(now))
        .bind(i64::try_from(self.ctx.lease.as_millis()).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn instance_stopped(&self, now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE instances SET stopped_at = $1, seen_at = $1 WHERE instance = $2")
            .bind(ms(now))
            .bind(crate::instance::this())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn instances(&self, since: DateTime<Utc>) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query(
            "SELECT i.instance, i.version, i.started_at, i.seen_at, i.lease_ms, i.stopped_at, \
             (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL AND instance = i.instance) AS attempts, \
             (SELECT COUNT(*) FROM checks WHERE outcome IS NULL AND instance = i.instance) AS checks \
             FROM instances i WHERE i.seen_at >= $1 ORDER BY i.started_at DESC, i.instance",
        )
        .bind(ms(since))
        .fetch_all(&self.pool)
        .await?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    instance: r.try_get("instance")?,
                    version: r.try_get("version")?,
                    started_at: r.try_get("started_at")?,
                    seen_at: r.try_get("seen_at")?,
                    lease: Duration::from_millis(count(r.try_get("lease_ms")?)),
                    stopped_at: r.try_get("stopped_at")?,
                    attempts: count(r.try_get("attempts")?),
                    checks: count(r.try_get("checks")?),
                })
            })
            .collect()
    }

    pub async fn renew_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        let me = crate::instance::this();
        let until = self.lease_until(now);
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE instances SET seen_at = $1 WHERE instance = $2")
            .bind(ms(now))
            .bind(me)
            .execute(&mut *tx)
            .await?;
        let mut n = 0;
        for sql in [
            "UPDATE attempts SET lease_until = $1 WHERE outcome IS NULL AND instance = $2",
            "UPDATE checks SET lease_until = $1 WHERE outcome IS NULL AND instance = $2",
        ] {
            n += sqlx::query(sql)
                .bind(until)
                .bind(me)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn next_foreign_lease_end(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(t) FROM (\
               SELECT MIN(lease_until) AS t FROM attempts WHERE outcome IS NULL AND instance IS DISTINCT FROM $1 \
               UNION ALL \
               SELECT MIN(lease_until) FROM checks WHERE outcome IS NULL AND instance IS DISTINCT FROM $1) l",
        )
        .bind(crate::instance::this())
        .fetch_one(&self.pool)
        .await?)
    }

    /// Other daemons' attempts and checks whose lease ran out, locked (a daemon taking over at
    /// the same time skips them) and closed as `interrupted`; their occurrences carry on.
    pub async fn take_over_expired(&self, now: DateTime<Utc>) -> Result<Recovery> {
        self.take_over(now, false).await
    }

    /// [`Pg::take_over_expired`]; with `mine`, also what this instance's name holds whatever its
    /// lease: at start-up that is an earlier process of the same name (a restarted container's
    /// pid is 1 again), and nobody renews it any more.
    pub(super) async fn take_over(&self, now: DateTime<Utc>, mine: bool) -> Result<Recovery> {
        let now = ms(now);
        let me = crate::instance::this();
        let mut tx = self.begin().await?;
        let attempts: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, occurrence_id FROM attempts \
             WHERE outcome IS NULL AND ((lease_until < $1 AND instance IS DISTINCT FROM $2) OR ($3 AND instance = $2)) \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(me)
        .bind(mine)
        .fetch_all(&mut *tx)
        .await?;
        let checks: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM checks WHERE outcome IS NULL \
             AND ((lease_until < $1 AND instance IS DISTINCT FROM $2) OR ($3 AND instance = $2)) FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(me)
        .bind(mine)
        .fetch_all(&mut *tx)
        .await?;
        if attempts.is_empty() && checks.is_empty() {
            tx.rollback().await?;
            return Ok(Recovery::default());
        }
        let held = Held {
            attempts: attempts.iter().map(|a| a.0).collect(),
            occurrences: attempts.iter().map(|a| a.1).collect(),
            checks,
        };
        let rec = close_interrupted(self, &mut tx, now, Some(&held)).await?;
        tx.commit().await?;
        Ok(rec)
    }
}
