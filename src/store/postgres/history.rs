//! PostgreSQL twin of `sqlite/history.rs`: occurrences with their attempts, checks, event and
//! alerts.

use sqlx::Row as _;

use super::{Pg, int, ms, opt_text_time, text_time};
use crate::store::Result;
use crate::store::types::{HistoryFilter, HistoryJson, OccurrenceRow};

/// An instant inside a JSON object, as SQLite's text shows it (`fmt_utc`).
fn utc(col: &str) -> String {
    format!("to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// The filter's conditions on `o`, numbered from `$1` in the order [`bind`] binds them.
fn conditions(f: &HistoryFilter) -> String {
    // Only fixed fragments are appended; every value is bound, numbered in order.
    let mut sql = String::new();
    let mut n = 0;
    let mut param = || {
        n += 1;
        format!("${n}")
    };
    if f.id.is_some() {
        sql.push_str(&format!(" AND o.id = {}", param()));
    }
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
    if !f.states.is_empty() {
        let marks: Vec<String> = f.states.iter().map(|_| param()).collect();
        sql.push_str(&format!(" AND o.state IN ({})", marks.join(", ")));
    }
    if f.until.is_some() {
        sql.push_str(&format!(" AND o.due_at <= {}", param()));
    }
    if f.checks_pending {
        sql.push_str(" AND o.next_check_at IS NOT NULL");
    }
    if f.unconfirmed {
        sql.push_str(&format!(
            " AND o.verified_at IS NULL AND o.next_check_at IS NULL AND o.id IN \
             (SELECT occurrence_id FROM checks WHERE outcome = 'error' AND at >= {})",
            param()
        ));
    }
    if f.page.is_some() {
        sql.push_str(&format!(
            " ORDER BY {{order}} LIMIT {} OFFSET {}",
            param(),
            param()
        ));
    }
    sql
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    f: &'q HistoryFilter,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    if let Some(id) = f.id {
        q = q.bind(id);
    }
    if let Some(p) = &f.policy {
        q = q.bind(p);
    }
    if let Some(c) = &f.conference {
        q = q.bind(c);
    }
    if let Some(s) = f.since {
        q = q.bind(ms(s));
    }
    for s in &f.states {
        q = q.bind(s);
    }
    if let Some(u) = f.until {
        q = q.bind(ms(u));
    }
    if f.unconfirmed {
        q = q.bind(ms(f.since.unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)));
    }
    if let Some(p) = f.page {
        q = q.bind(p.limit).bind(p.offset);
    }
    q
}

impl Pg {
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        let order = if f.newest_first {
            "o.due_at DESC, o.id DESC"
        } else {
            "o.due_at, o.id"
        };
        let filter = conditions(f).replace("{order}", order);
        // A page picks its ids first, from the indexes alone: the JSON of each row's attempts and
        // checks is built for the rows shown, not for every row the filter matches.
        let rows_wanted = match f.page {
            Some(_) => format!(" AND o.id IN (SELECT o.id FROM occurrences o WHERE true{filter})"),
            None => filter,
        };
        let sql = format!(
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
                'received_at', {e_received}, 'born_at', {e_born}, 'instance', e.instance, \
                'title', COALESCE(e.payload #>> '{{openConfModel,title}}', e.payload ->> 'title'))::text \
              FROM events e WHERE e.occurrence_id = o.id AND e.outcome = 'matched' ORDER BY e.id LIMIT 1) AS event, \
             (SELECT COALESCE(jsonb_agg(jsonb_build_object('event', l.event, 'destination', l.destination, \
                'created_at', {l_created}, 'state', l.state, 'attempts', l.attempts, 'sent_at', {l_sent}, \
                'last_error', l.last_error) ORDER BY l.id), '[]')::text \
              FROM alerts l WHERE l.occurrence_id = o.id) AS alerts \
             FROM occurrences o WHERE true{rows_wanted} ORDER BY {order}",
            c_at = utc("c.at"),
            a_started = utc("a.started_at"),
            a_finished = utc("a.finished_at"),
            a_next = utc("a.next_attempt_at"),
            e_received = utc("e.received_at"),
            e_born = utc("e.born_at"),
            l_created = utc("l.created_at"),
            l_sent = utc("l.sent_at"),
        );
        let rows = bind(sqlx::query(sqlx::AssertSqlSafe(sql)), f)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                let (attempts, checks, event, alerts) = HistoryJson {
                    attempts: r.try_get("attempts")?,
                    checks: r.try_get("checks")?,
                    event: r.try_get("event")?,
                    alerts: r.try_get("alerts")?,
                }
                .parse(id)?;
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
                    attempts,
                    verified_at: opt_text_time(r, "verified_at")?,
                    restart_of: r.try_get("restart_of")?,
                    checks,
                    event,
                    alerts,
                })
            })
            .collect()
    }
}
