//! Audit reads: occurrences with their attempts (`dingrec history`).

use sqlx::Row;

use super::Sqlite;
use crate::domain::time::fmt_utc;
use crate::store::Result;
use crate::store::types::*;

impl Sqlite {
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        let mut sql = String::from(
            "SELECT o.id, o.policy_name, o.due_at, o.window_ends_at, o.conference_id, o.state, o.trigger, \
             o.attempt_count, o.last_code, \
             o.verified_at, o.restart_of, \
             (SELECT json_group_array(json_object('kind', c.kind, 'at', c.at, 'duration_ms', c.duration_ms, \
                'http_status', c.http_status, 'code', c.code, 'message', c.message, 'meeting_status', c.meeting_status, \
                'cloud_record_status', c.cloud_record_status, 'owner_union_id', c.owner_union_id, \
                'video_duration_ms', c.video_duration_ms, 'video_file_size', c.video_file_size, 'outcome', c.outcome)) \
              FROM (SELECT * FROM checks WHERE occurrence_id = o.id ORDER BY id) c) AS checks, \
             (SELECT json_group_array(json_object('attempt_no', a.attempt_no, 'instance', a.instance, 'started_at', a.started_at, \
                'finished_at', a.finished_at, 'duration_ms', a.duration_ms, 'conference_id', a.conference_id, \
                'http_status', a.http_status, 'code', a.code, 'message', a.message, 'request_id', a.request_id, \
                'outcome', a.outcome, 'next_attempt_at', a.next_attempt_at)) \
              FROM (SELECT * FROM attempts WHERE occurrence_id = o.id ORDER BY attempt_no) a) AS attempts, \
             (SELECT json_object('event_id', e.event_id, 'event_type', e.event_type, 'received_at', e.received_at, \
                'born_at', e.born_at, 'instance', e.instance) \
              FROM events e WHERE e.occurrence_id = o.id AND e.outcome = 'matched' ORDER BY e.id LIMIT 1) AS event \
             FROM occurrences o WHERE 1 = 1",
        );
        // Only fixed fragments are appended; every value is bound.
        if f.policy.is_some() {
            sql.push_str(" AND o.policy_name = ?");
        }
        if f.conference.is_some() {
            sql.push_str(
                " AND (o.conference_id = ? OR o.id IN (SELECT occurrence_id FROM attempts WHERE conference_id = ?))",
            );
        }
        if f.since.is_some() {
            sql.push_str(" AND o.due_at >= ?");
        }
        if f.state.is_some() {
            sql.push_str(" AND o.state = ?");
        }
        if f.until.is_some() {
            sql.push_str(" AND o.due_at <= ?");
        }
        sql.push_str(" ORDER BY o.due_at, o.id");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(p) = &f.policy {
            q = q.bind(p);
        }
        if let Some(c) = &f.conference {
            q = q.bind(c).bind(c);
        }
        if let Some(s) = f.since {
            q = q.bind(fmt_utc(s));
        }
        if let Some(s) = &f.state {
            q = q.bind(s);
        }
        if let Some(u) = f.until {
            q = q.bind(fmt_utc(u));
        }
        let rows = q.fetch_all(self.pool()).await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let attempts: &str = r.try_get("attempts")?;
                let checks: &str = r.try_get("checks")?;
                let event: Option<&str> = r.try_get("event")?;
                Ok(OccurrenceRow {
                    id,
                    policy: r.try_get("policy_name")?,
                    due_at: r.try_get("due_at")?,
                    window_ends_at: r.try_get("window_ends_at")?,
                    conference_id: r.try_get("conference_id")?,
                    state: r.try_get("state")?,
                    trigger: r.try_get("trigger")?,
                    attempt_count: r.try_get("attempt_count")?,
                    last_code: r.try_get("last_code")?,
                    attempts: serde_json::from_str(attempts)
                        .map_err(|e| super::StoreError::Data(format!("attempts of occurrence {id}: {e}")))?,
                    verified_at: r.try_get("verified_at")?,
                    restart_of: r.try_get("restart_of")?,
                    checks: serde_json::from_str(checks)
                        .map_err(|e| super::StoreError::Data(format!("checks of occurrence {id}: {e}")))?,
                    event: event
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| super::StoreError::Data(format!("the event of occurrence {id}: {e}")))?,
                })
            })
            .collect()
    }
}
