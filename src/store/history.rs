//! Audit reads: occurrences with their attempts (`dingrec history`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use super::{Result, Store};
use crate::domain::time::fmt_utc;

/// Filters of `dingrec history` (SPEC §1).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub policy: Option<String>,
    pub conference: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub state: Option<String>,
    /// Only occurrences due at or before this instant (the past); `None` = all.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub attempt_no: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub conference_id: Option<String>,
    pub http_status: Option<i64>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OccurrenceRow {
    pub id: i64,
    pub policy: String,
    pub due_at: String,
    pub window_ends_at: String,
    pub conference_id: Option<String>,
    pub state: String,
    pub trigger: String,
    pub attempt_count: i64,
    pub last_code: Option<String>,
    pub attempts: Vec<AttemptRow>,
}

impl Store {
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        let mut sql = String::from(
            "SELECT o.id, o.policy_name, o.due_at, o.window_ends_at, o.conference_id AS occ_conf, o.state, o.trigger, \
             o.attempt_count, o.last_code, a.attempt_no, a.started_at, a.finished_at, a.duration_ms, \
             a.conference_id AS att_conf, a.http_status, a.code, a.message, a.request_id, a.outcome, \
             a.next_attempt_at FROM occurrences o LEFT JOIN attempts a ON a.occurrence_id = o.id WHERE 1 = 1",
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
        sql.push_str(" ORDER BY o.due_at, o.id, a.attempt_no");
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
        let mut out: Vec<OccurrenceRow> = Vec::new();
        for r in &rows {
            let id: i64 = r.get("id");
            if out.last().is_none_or(|o| o.id != id) {
                out.push(OccurrenceRow {
                    id,
                    policy: r.get("policy_name"),
                    due_at: r.get("due_at"),
                    window_ends_at: r.get("window_ends_at"),
                    conference_id: r.get("occ_conf"),
                    state: r.get("state"),
                    trigger: r.get("trigger"),
                    attempt_count: r.get("attempt_count"),
                    last_code: r.get("last_code"),
                    attempts: Vec::new(),
                });
            }
            if let Some(no) = r.get::<Option<i64>, _>("attempt_no")
                && let Some(o) = out.last_mut()
            {
                o.attempts.push(AttemptRow {
                    attempt_no: no,
                    started_at: r.get("started_at"),
                    finished_at: r.get("finished_at"),
                    duration_ms: r.get("duration_ms"),
                    conference_id: r.get("att_conf"),
                    http_status: r.get("http_status"),
                    code: r.get("code"),
                    message: r.get("message"),
                    request_id: r.get("request_id"),
                    outcome: r.get("outcome"),
                    next_attempt_at: r.get("next_attempt_at"),
                });
            }
        }
        Ok(out)
    }
}
