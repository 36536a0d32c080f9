//! PostgreSQL twin of `store/history.rs`: occurrences with their attempts and checks.

use sqlx::Row as _;

use super::{Pg, int, ms, opt_text_time, text_time};
use crate::store::types::{HistoryFilter, OccurrenceRow};
use crate::store::{Result, StoreError};

/// An instant inside a JSON object, as SQLite's text shows it (`fmt_utc`).
fn utc(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

impl Pg {
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        let mut sql = format!(
            "SELECT o.id, o.policy_name, o.due_at, o.window_ends_at, o.conference_id, o.state, o.trigger, \
             o.attempt_count, o.last_code, o.verified_at, o.restart_of, \
             (SELECT COALESCE(jsonb_agg(jsonb_build_object('kind', c.kind, 'at', {c_at}, 'duration_ms', c.duration_ms, \
                'http_status', c.http_status, 'code', c.code, 'message', c.message, 'meeting_status', c.meeting_status, \
                'cloud_record_status', c.cloud_record_status, 'owner_union_id', c.owner_union_id, \
                'video_duration_ms', c.video_duration_ms, 'video_file_size', c.video_file_size, 'outcome', c.outcome) \
                ORDER BY c.id), '[]')::text FROM checks c WHERE c.occurrence_id = o.id) AS checks, \
             (SELECT COALESCE(jsonb_agg(jsonb_build_object('attempt_no', a.attempt_no, 'instance', a.instance, \
                'started_at', {a_started}, 'finished_at', {a_finished}, 'duration_ms', a.duration_ms, \
                'conference_id', a.conference_id, 'http_status', a.http_status, 'code', a.code, 'message', a.message, \
                'request_id', a.request_id, 'outcome', a.outcome, 'next_attempt_at', {a_next}) \
                ORDER BY a.attempt_no), '[]')::text FROM attempts a WHERE a.occurrence_id = o.id) AS attempts, \
             (SELECT jsonb_build_object('event_id', e.event_id, 'event_type', e.event_type, \
                'received_at', {e_received}, 'born_at', {e_born}, 'instance', e.instance)::text \
              FROM events e WHERE e.occurrence_id = o.id AND e.outcome = 'matched' ORDER BY e.id LIMIT 1) AS event \
             FROM occurrences o WHERE true",
            c_at = utc("c.at"),
            a_started = utc("a.started_at"),
            a_finished = utc("a.finished_at"),
            a_next = utc("a.next_attempt_at"),
            e_received = utc("e.received_at"),
            e_born = utc("e.born_at"),
        );
        // Only fixed fragments are appended; every value is bound, numbered in order.
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if f.policy.is_some() {
            sql.push_str(&format!(" AND o.policy_name = {}", param()));
        }
        if f.conference.is_some() {
            let p = param();
            sql.push_str(&format!(
                " AND (o.conference_id = {p} OR o.id IN (SELECT occurrence_id FROM attempts WHERE conference_id = {p}))"
            ));
        }
        if f.since.is_some() {
            sql.push_str(&format!(" AND o.due_at >= {}", param()));
        }
        if f.state.is_some() {
            sql.push_str(&format!(" AND o.state = {}", param()));
        }
        if f.until.is_some() {
            sql.push_str(&format!(" AND o.due_at <= {}", param()));
        }
        sql.push_str(" ORDER BY o.due_at, o.id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(p) = &f.policy {
            q = q.bind(p);
        }
        if let Some(c) = &f.conference {
            q = q.bind(c);
        }
        if let Some(s) = f.since {
            q = q.bind(ms(s));
        }
        if let Some(s) = &f.state {
            q = q.bind(s);
        }
        if let Some(u) = f.until {
            q = q.bind(ms(u));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let attempts: &str = r.try_get("attempts")?;
                let checks: &str = r.try_get("checks")?;
                let event: Option<&str> = r.try_get("event")?;
                Ok(OccurrenceRow {
                    id,
                    policy: r.try_get("policy_name")?,
                    due_at: text_time(r, "due_at")?,
                    window_ends_at: text_time(r, "window_ends_at")?,
                    conference_id: r.try_get("conference_id")?,
                    state: r.try_get("state")?,
                    trigger: r.try_get("trigger")?,
                    attempt_count: int(r, "attempt_count")?,
                    last_code: r.try_get("last_code")?,
                    attempts: serde_json::from_str(attempts)
                        .map_err(|e| StoreError::Data(format!("attempts of occurrence {id}: {e}")))?,
                    verified_at: opt_text_time(r, "verified_at")?,
                    restart_of: r.try_get("restart_of")?,
                    checks: serde_json::from_str(checks)
                        .map_err(|e| StoreError::Data(format!("checks of occurrence {id}: {e}")))?,
                    event: event
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| StoreError::Data(format!("the event of occurrence {id}: {e}")))?,
                })
            })
            .collect()
    }
}
