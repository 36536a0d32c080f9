//! The `events` table: each event DingTalk pushed, written with the occurrence it makes in one
//! transaction (docs/events.md).

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::Sqlite;
use super::occurrences::{opt_time, time};
use crate::domain::EventOutcome;
use crate::domain::time::fmt_utc;
use crate::store::Result;
use crate::store::types::*;

const SELECT_MATCH_POLICIES: &str = "SELECT id, name, conference_id, schedule_conference_id, host_union_id, layout, \
     small_window_position, cron, at, timezone, start_offset_ms, window_ms, retry, verify, alert, skip_dates, \
     enabled, source, match_rule, auto_record, created_at, updated_at FROM policies \
     WHERE enabled = 1 AND match_rule IS NOT NULL ORDER BY name";

impl Sqlite {
    /// The enabled `match` policies, by name (the first that wants a meeting gets it).
    pub async fn match_policies(&self) -> Result<Vec<StoredPolicy>> {
        let rows = sqlx::query(SELECT_MATCH_POLICIES).fetch_all(self.pool()).await?;
        rows.iter().map(super::policies::stored).collect()
    }

    /// A meeting closed: its occurrences' next watch check is made now (it sees the meeting
    /// ended and goes on to the video, or ends). How many were brought forward.
    pub async fn meeting_closed(&self, conference_id: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE occurrences SET next_check_at = ?2 \
             WHERE conference_id = ?1 AND next_check_kind = 'watch' AND next_check_at > ?2",
        )
        .bind(conference_id)
        .bind(fmt_utc(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    pub async fn record_event(&self, e: &NewEvent) -> Result<EventRecorded> {
        let mut tx = self.begin_write().await?;
        if e.counted {
            sqlx::query(
                "INSERT INTO api_usage (day, api, calls) VALUES (?, 'stream_event', 1) \
                 ON CONFLICT (day, api) DO UPDATE SET calls = calls + 1",
            )
            .bind(self.ctx.usage_day(e.received_at))
            .execute(&mut *tx)
            .await?;
        }
        let (outcome, reason, policy_id) = e.first_outcome();
        let row: Option<i64> = sqlx::query_scalar(
            "INSERT INTO events (event_id, message_id, event_type, change_scene, conference_id, received_at, born_at, \
             payload, outcome, reason, policy_id, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (event_id) DO NOTHING RETURNING id",
        )
        .bind(&e.event_id)
        .bind(&e.message_id)
        .bind(&e.event_type)
        .bind(&e.change_scene)
        .bind(&e.conference_id)
        .bind(fmt_utc(e.received_at))
        .bind(e.born_at.map(fmt_utc))
        .bind(&e.payload)
        .bind(outcome.as_str())
        .bind(reason)
        .bind(policy_id)
        .bind(&e.instance)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            // Delivered again: nothing more but its count.
            tx.commit().await?;
            return Ok(EventRecorded::Again);
        };
        let EventDecision::Matched {
            policy_id,
            policy_name,
            conference_id,
            due_at,
            window_ends_at,
            meeting_at,
            host_union_id,
            trigger,
        } = &e.decision
        else {
            tx.commit().await?;
            return Ok(EventRecorded::Stored {
                outcome,
                occurrence_id: None,
            });
        };
        let now = fmt_utc(e.received_at);
        let made: Option<i64> = sqlx::query_scalar(
            "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, conference_id, state, \
             next_attempt_at, trigger, meeting_at, host_union_id, event_conference_id, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'scheduled', ?3, ?9, ?6, ?7, ?5, ?8, ?8) \
             ON CONFLICT (event_conference_id) DO NOTHING RETURNING id",
        )
        .bind(policy_id)
        .bind(policy_name)
        .bind(fmt_utc(*due_at))
        .bind(fmt_utc(*window_ends_at))
        .bind(conference_id)
        .bind(fmt_utc(*meeting_at))
        .bind(host_union_id)
        .bind(&now)
        .bind(trigger.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        // The catch-up keeps no row for a meeting that has its occurrence already: it looks at
        // every meeting in progress on every reconnect.
        if made.is_none() && *trigger == crate::domain::Trigger::CatchUp {
            tx.rollback().await?;
            return Ok(EventRecorded::Again);
        }
        let (outcome, occurrence_id) = match made {
            Some(id) => {
                sqlx::query("UPDATE events SET occurrence_id = ? WHERE id = ?")
                    .bind(id)
                    .bind(row)
                    .execute(&mut *tx)
                    .await?;
                (EventOutcome::Matched, id)
            }
            None => {
                let existing =
                    sqlx::query("SELECT id, policy_name FROM occurrences WHERE event_conference_id = ?")
                        .bind(conference_id)
                        .fetch_one(&mut *tx)
                        .await?;
                let id: i64 = existing.try_get("id")?;
                let name: String = existing.try_get("policy_name")?;
                sqlx::query("UPDATE events SET outcome = ?, reason = ?, occurrence_id = ? WHERE id = ?")
                    .bind(EventOutcome::Duplicate.as_str())
                    .bind(duplicate_reason(id, &name))
                    .bind(id)
                    .bind(row)
                    .execute(&mut *tx)
                    .await?;
                (EventOutcome::Duplicate, id)
            }
        };
        tx.commit().await?;
        Ok(EventRecorded::Stored {
            outcome,
            occurrence_id: Some(occurrence_id),
        })
    }

    /// Events received at or after `since`, newest first, at most `limit`.
    pub async fn events_since(&self, since: DateTime<Utc>, limit: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT e.id, e.event_id, e.event_type, e.change_scene, e.conference_id, e.received_at, e.born_at, \
             e.outcome, e.reason, p.name AS policy_name, e.occurrence_id, e.instance \
             FROM events e LEFT JOIN policies p ON p.id = e.policy_id \
             WHERE e.received_at >= ? ORDER BY e.received_at DESC, e.id DESC LIMIT ?",
        )
        .bind(fmt_utc(since))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    id: r.try_get("id")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    change_scene: r.try_get("change_scene")?,
                    conference_id: r.try_get("conference_id")?,
                    received_at: time(r, "received_at")?,
                    born_at: opt_time(r, "born_at")?,
                    outcome: r.try_get("outcome")?,
                    reason: r.try_get("reason")?,
                    policy_name: r.try_get("policy_name")?,
                    occurrence_id: r.try_get("occurrence_id")?,
                    instance: r.try_get("instance")?,
                })
            })
            .collect()
    }
}
