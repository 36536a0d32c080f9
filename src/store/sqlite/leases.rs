//! Leases (`docs/database.md`): an attempt or check without an outcome belongs to the process that
//! claimed it (`instance`) until `lease_until`. That process renews its leases while its calls are
//! in flight; a lease that ran out belongs to a process that died, and another one takes its
//! attempts and checks over: closed as `interrupted`, their occurrences carried on inside their
//! windows. Under SQLite's single-instance lock, the start-up recovery closes every open row at
//! once; several daemons on one database wait for the leases instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::Sqlite;
use super::occurrences::{Held, close_interrupted};
use crate::domain::time::{fmt_utc, parse_utc};
use crate::store::types::*;
use crate::store::{Result, StoreError};

impl Sqlite {
    pub async fn register_instance(&self, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO instances (instance, version, started_at, seen_at, lease_ms) VALUES (?1, ?2, ?3, ?3, ?4) \
             ON CONFLICT (instance) DO UPDATE SET version = excluded.version, started_at = excluded.started_at, \
             seen_at = excluded.seen_at, lease_ms = excluded.lease_ms, stopped_at = NULL",
        )
        .bind(crate::instance::this())
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(fmt_utc(now))
        .bind(i64::try_from(self.ctx.lease.as_millis()).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub async fn instance_stopped(&self, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE instances SET stopped_at = ?1, seen_at = ?1 WHERE instance = ?2")
            .bind(fmt_utc(now))
            .bind(crate::instance::this())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn instances(&self, since: DateTime<Utc>) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query(
            "SELECT i.instance, i.version, i.started_at, i.seen_at, i.lease_ms, i.stopped_at, \
             (SELECT COUNT(*) FROM attempts INDEXED BY attempts_open WHERE outcome IS NULL AND instance = i.instance) AS attempts, \
             (SELECT COUNT(*) FROM checks INDEXED BY checks_open WHERE outcome IS NULL AND instance = i.instance) AS checks \
             FROM instances i WHERE i.seen_at >= ?1 ORDER BY i.started_at DESC, i.instance",
        )
        .bind(fmt_utc(since))
        .fetch_all(self.pool())
        .await?;
        let time = |s: &str| parse_utc(s).map_err(|e| StoreError::Data(format!("instances: {e}")));
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        rows.iter()
            .map(|r| {
                let stopped: Option<&str> = r.try_get("stopped_at")?;
                Ok(InstanceRow {
                    instance: r.try_get("instance")?,
                    version: r.try_get("version")?,
                    started_at: time(r.try_get("started_at")?)?,
                    seen_at: time(r.try_get("seen_at")?)?,
                    lease: Duration::from_millis(count(r.try_get("lease_ms")?)),
                    stopped_at: stopped.map(time).transpose()?,
                    attempts: count(r.try_get("attempts")?),
                    checks: count(r.try_get("checks")?),
                })
            })
            .collect()
    }

    pub async fn renew_leases(&self, now: DateTime<Utc>) -> Result<u64> {
        let me = crate::instance::this();
        let until = self.lease_until(now);
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE instances SET seen_at = ?1 WHERE instance = ?2")
            .bind(fmt_utc(now))
            .bind(me)
            .execute(&mut *tx)
            .await?;
        let mut n = 0;
        for sql in [
            "UPDATE attempts INDEXED BY attempts_open SET lease_until = ?1 WHERE outcome IS NULL AND instance = ?2",
            "UPDATE checks INDEXED BY checks_open SET lease_until = ?1 WHERE outcome IS NULL AND instance = ?2",
        ] {
            n += sqlx::query(sql)
                .bind(&until)
                .bind(me)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    pub async fn next_foreign_lease_end(&self) -> Result<Option<DateTime<Utc>>> {
        // SQLite: one daemon holds the database, and its start closed whatever others held.
        Ok(None)
    }

    pub async fn take_over_expired(&self, now: DateTime<Utc>) -> Result<Recovery> {
        let now_s = fmt_utc(now);
        let me = crate::instance::this();
        let mut tx = self.begin_write().await?;
        let attempts: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, occurrence_id FROM attempts INDEXED BY attempts_open \
             WHERE outcome IS NULL AND lease_until < ?1 AND instance IS NOT ?2",
        )
        .bind(&now_s)
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        let checks: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM checks INDEXED BY checks_open WHERE outcome IS NULL AND lease_until < ?1 AND instance IS NOT ?2",
        )
        .bind(&now_s)
        .bind(me)
        .fetch_all(&mut *tx)
        .await?;
        if attempts.is_empty() && checks.is_empty() {
            tx.rollback().await?;
            return Ok(Recovery::default());
        }
        let json = |ids: Vec<i64>| {
            serde_json::to_string(&ids).map_err(|e| StoreError::Data(format!("lease ids: {e}")))
        };
        let held = Held {
            attempts: json(attempts.iter().map(|a| a.0).collect())?,
            occurrences: json(attempts.iter().map(|a| a.1).collect())?,
            checks: json(checks)?,
        };
        let rec = close_interrupted(&mut tx, &self.ctx.usage_day(now), &now_s, Some(&held)).await?;
        tx.commit().await?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::domain::AttemptOutcome;
    use crate::domain::outcome::codes;
    use crate::domain::time::parse_utc;
    use crate::store::Store;

    async fn rows<T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin>(
        store: &Store,
        sql: &'static str,
    ) -> Vec<T> {
        sqlx::query_as(sql)
            .fetch_all(store.sqlite_pool().expect("SQLite"))
            .await
            .expect(sql)
    }

    /// Another process's attempts and checks are taken over only once their lease ran out; this
    /// process's own never (it renews them), and a renewal moves only this process's leases.
    #[tokio::test]
    async fn only_leases_that_ran_out_in_other_processes_are_taken_over() {
        let dir = tempfile::tempdir().expect("tmp");
        let settings = crate::config::DatabaseSettings {
            path: dir.path().join("d.db"),
            ..crate::config::DatabaseSettings::default()
        };
        let store = Store::open(&settings)
            .await
            .expect("store")
            .with_lease(Duration::from_secs(30));
        sqlx::raw_sql(
            "INSERT INTO policies (id, name, conference_id, host_union_id, layout, small_window_position, at, \
             timezone, start_offset_ms, window_ms, retry, source, created_at, updated_at) VALUES \
             (1, 'p', 'conf', 'host', 'grid', 'relative_right', '2030-01-07T08:00:00Z', 'UTC', 0, 1800000, '{}', 'f', 'x', 'x'); \
             INSERT INTO occurrences (id, policy_id, policy_name, due_at, window_ends_at, next_attempt_at, created_at, updated_at) VALUES \
             (7, 1, 'p', '2030-01-07T08:00:00.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:00.000Z', 'x', 'x'), \
             (8, 1, 'p', '2030-01-07T08:00:01.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:01.000Z', 'x', 'x'), \
             (9, 1, 'p', '2030-01-07T08:00:02.000Z', '2030-01-07T08:30:00.000Z', '2030-01-07T08:00:02.000Z', 'x', 'x'); \
             INSERT INTO occurrences (id, policy_id, policy_name, due_at, window_ends_at, state, created_at, updated_at) VALUES \
             (10, 1, 'p', '2030-01-07T07:00:00.000Z', '2030-01-07T07:30:00.000Z', 'verifying', 'x', 'x'); \
             INSERT INTO checks (id, occurrence_id, kind, at, instance, lease_until) VALUES \
             (1, 10, 'watch', '2030-01-07T08:00:00.000Z', 'dead-host:1', '2030-01-07T08:00:30.000Z');",
        )
        .execute(store.sqlite_pool().expect("SQLite"))
        .await
        .expect("rows");
        let at = |s: &str| parse_utc(s).expect("time");
        let claim = store
            .claim_due(at("2030-01-07T08:00:05Z"), 10, false, 0)
            .await
            .expect("claim");
        assert_eq!(claim.tickets.len(), 3);
        // Occurrences 7 and 8 were claimed by a process that has since died; 8's lease was renewed
        // just before.
        sqlx::raw_sql(
            "UPDATE attempts SET instance = 'dead-host:1' WHERE occurrence_id IN (7, 8); \
             UPDATE attempts SET lease_until = '2030-01-07T08:01:00.000Z' WHERE occurrence_id = 8;",
        )
        .execute(store.sqlite_pool().expect("SQLite"))
        .await
        .expect("dead");
        let leases = || {
            rows::<(i64, String)>(
                &store,
                "SELECT occurrence_id, lease_until FROM attempts ORDER BY occurrence_id",
            )
        };
        assert_eq!(
            leases().await,
            [
                (7, "2030-01-07T08:00:35.000Z".to_owned()),
                (8, "2030-01-07T08:01:00.000Z".to_owned()),
                (9, "2030-01-07T08:00:35.000Z".to_owned()),
            ],
            "a claim holds for the lease"
        );
        assert_eq!(
            store
                .renew_leases(at("2030-01-07T08:00:20Z"))
                .await
                .expect("renew"),
            1
        );
        assert_eq!(
            leases().await,
            [
                (7, "2030-01-07T08:00:35.000Z".to_owned()),
                (8, "2030-01-07T08:01:00.000Z".to_owned()),
                (9, "2030-01-07T08:00:50.000Z".to_owned()),
            ],
            "only this process's lease moved"
        );
        let states = || {
            rows::<(i64, String, Option<String>)>(
                &store,
                "SELECT o.id, o.state || '/' || COALESCE(o.next_attempt_at, '-'), \
                 (SELECT a.outcome FROM attempts a WHERE a.occurrence_id = o.id) FROM occurrences o ORDER BY o.id",
            )
        };

        // 08:00:40: only 7's lease (and the dead process's check) ran out.
        let taken = store
            .take_over_expired(at("2030-01-07T08:00:40Z"))
            .await
            .expect("take over");
        assert_eq!(
            (
                taken.interrupted_attempts,
                taken.resumed,
                taken.interrupted_checks
            ),
            (1, 1, 1)
        );
        assert_eq!(
            states().await,
            [
                (
                    7,
                    "retry_wait/2030-01-07T08:00:40.000Z".to_owned(),
                    Some(AttemptOutcome::Interrupted.to_string())
                ),
                (8, "running/-".to_owned(), None),
                (9, "running/-".to_owned(), None),
                (10, "verifying/-".to_owned(), None),
            ]
        );
        assert_eq!(
            rows::<(String, String, String)>(
                &store,
                "SELECT c.outcome, c.code, o.next_check_kind || ' ' || o.next_check_at FROM checks c \
                 JOIN occurrences o ON o.id = c.occurrence_id",
            )
            .await,
            [(
                "error".to_owned(),
                codes::INTERRUPTED.to_owned(),
                "watch 2030-01-07T08:00:40.000Z".to_owned()
            )],
            "the check is made again at once"
        );
        // The interrupted call may have reached DingTalk: it is counted.
        assert_eq!(
            rows::<(i64,)>(
                &store,
                "SELECT calls FROM api_usage WHERE api = 'start_cloud_record'"
            )
            .await,
            [(1,)]
        );

        // 08:01:10: 8's lease ran out too; this process's own (9, not renewed since 08:00:20)
        // is never taken from it.
        let taken = store
            .take_over_expired(at("2030-01-07T08:01:10Z"))
            .await
            .expect("take over");
        assert_eq!((taken.interrupted_attempts, taken.resumed), (1, 1));
        let now = states().await;
        assert_eq!(now[1].1, "retry_wait/2030-01-07T08:01:10.000Z");
        assert_eq!(now[2], (9, "running/-".to_owned(), None));
        // Nothing more to take.
        let taken = store
            .take_over_expired(at("2030-01-07T08:02:00Z"))
            .await
            .expect("take over");
        assert_eq!(taken.interrupted_attempts + taken.interrupted_checks, 0);
        store.close().await;
    }
}
