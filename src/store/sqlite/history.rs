//! Audit reads: occurrences with their attempts, checks, event and alerts (`dingrec history`, the
//! status page).

use sqlx::Row;

use super::Sqlite;
use crate::domain::time::fmt_utc;
use crate::store::Result;
use crate::store::types::*;

/// The filter's conditions on `o`, each value bound in the order [`bind`] binds them.
fn conditions(f: &HistoryFilter) -> String {
    // Only fixed fragments are appended; every value is bound.
    let mut sql = String::new();
    if f.id.is_some() {
        sql.push_str(" AND o.id = ?");
    }
    if f.policy.is_some() {
        sql.push_str(" AND o.policy_name = ?");
    }
    if f.conference.is_some() {
        sql.push_str(" AND (o.conference_id = ? OR o.id IN (SELECT occurrence_id FROM attempts WHERE conference_id = ?))");
    }
    if f.since.is_some() {
        sql.push_str(" AND o.due_at >= ?");
    }
    if !f.states.is_empty() {
        let marks = vec!["?"; f.states.len()].join(", ");
        sql.push_str(&format!(" AND o.state IN ({marks})"));
    }
    if f.until.is_some() {
        sql.push_str(" AND o.due_at <= ?");
    }
    if f.checks_pending {
        sql.push_str(" AND o.next_check_at IS NOT NULL");
    }
    if f.unconfirmed {
        // From the few start checks that failed (a partial index), not the many successes.
        sql.push_str(
            " AND o.verified_at IS NULL AND o.next_check_at IS NULL AND o.id IN \
             (SELECT occurrence_id FROM checks INDEXED BY checks_unconfirmed WHERE outcome = 'error' AND at >= ?)",
        );
    }
    sql
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
    f: &'q HistoryFilter,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments> {
    if let Some(id) = f.id {
        q = q.bind(id);
    }
    if let Some(p) = &f.policy {
        q = q.bind(p);
    }
    if let Some(c) = &f.conference {
        q = q.bind(c).bind(c);
    }
    if let Some(s) = f.since {
        q = q.bind(fmt_utc(s));
    }
    for s in &f.states {
        q = q.bind(s);
    }
    if let Some(u) = f.until {
        q = q.bind(fmt_utc(u));
    }
    if f.unconfirmed {
        q = q.bind(f.since.map(fmt_utc).unwrap_or_default());
    }
    q
}

/// The statement `history` runs for `f` (its values bound as [`bind`] binds them, then a page's
/// limit and offset): public for the test that every read of the status page searches an index.
pub fn history_sql(f: &HistoryFilter) -> String {
    let order = if f.newest_first {
        "o.due_at DESC, o.id DESC"
    } else {
        "o.due_at, o.id"
    };
    let filter = conditions(f);
    // The few rows with a check to come, from their partial index (SQLite would otherwise read
    // every succeeded row by state).
    let hint = if f.checks_pending {
        " INDEXED BY occurrences_next_check"
    } else {
        ""
    };
    let outer_hint = if f.page.is_none() { hint } else { "" };
    // A page picks its ids first, from the indexes alone: the JSON of each row's attempts and
    // checks is built for the rows shown, not for every row the filter matches.
    let rows_wanted = match f.page {
        Some(_) => format!(
            " AND o.id IN (SELECT o.id FROM occurrences o{hint} WHERE 1 = 1{filter} ORDER BY {order} LIMIT ? OFFSET ?)"
        ),
        None => filter,
    };
    format!(
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
                'born_at', e.born_at, 'instance', e.instance, \
                'title', COALESCE(json_extract(e.payload, '$.openConfModel.title'), json_extract(e.payload, '$.title'))) \
              FROM events e WHERE e.occurrence_id = o.id AND e.outcome = 'matched' ORDER BY e.id LIMIT 1) AS event, \
             (SELECT json_group_array(json_object('event', l.event, 'destination', l.destination, 'created_at', l.created_at, \
                'state', l.state, 'attempts', l.attempts, 'sent_at', l.sent_at, 'last_error', l.last_error)) \
              FROM (SELECT * FROM alerts INDEXED BY alerts_by_occurrence WHERE occurrence_id = o.id ORDER BY id) l) AS alerts \
             FROM occurrences o{outer_hint} WHERE 1 = 1{rows_wanted} ORDER BY {order}"
    )
}

impl Sqlite {
    pub async fn history(&self, f: &HistoryFilter) -> Result<Vec<OccurrenceRow>> {
        let mut q = bind(sqlx::query(sqlx::AssertSqlSafe(history_sql(f))), f);
        if let Some(p) = f.page {
            q = q.bind(p.limit).bind(p.offset);
        }
        let rows = q.fetch_all(self.pool()).await?;
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
                    due_at: r.try_get("due_at")?,
                    window_ends_at: r.try_get("window_ends_at")?,
                    conference_id: r.try_get("conference_id")?,
                    state: r.try_get("state")?,
                    trigger: r.try_get("trigger")?,
                    attempt_count: r.try_get("attempt_count")?,
                    last_code: r.try_get("last_code")?,
                    attempts,
                    verified_at: r.try_get("verified_at")?,
                    restart_of: r.try_get("restart_of")?,
                    checks,
                    event,
                    alerts,
                })
            })
            .collect()
    }
}
