//! What the status page shows (`GET /`, `/occurrences`, and their JSON under `/api/v1/`), read
//! from the database and the daemon's own state. Rendering is `page.rs`'s; this module only
//! gathers, and every list it reads is bounded.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::HttpState;
use crate::domain::time::{add, fmt_utc, parse_utc, sub};
use crate::domain::{AlertEvent, OccurrenceState};
use crate::store::{AlertRef, AlertRow, HistoryFilter, OccurrenceRow, PageOf};

/// Rows a table of the summary shows; its "all …" link leads to the full list.
pub const SUMMARY_ROWS: i64 = 20;
/// Rows a page of `/occurrences` shows.
pub const PAGE_ROWS: i64 = 100;
/// The last page `/occurrences` serves (100,000 rows deep: narrow the filter instead).
pub const MAX_PAGE: i64 = 1000;
/// How far back "needs attention" and the final counts look.
pub const ATTENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far ahead "next" looks.
pub const NEXT: Duration = Duration::from_secs(24 * 3600);
/// Each read's bound: a slow database makes a page that says so, not a request that hangs.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest title, message or error shown (characters); the audit log keeps them whole.
const MAX_SHOWN: usize = 200;

/// Why a page could not be made.
#[derive(Debug)]
pub enum Problem {
    /// A query parameter is wrong: 400, naming it.
    BadRequest(String),
    NotFound(String),
    /// The database did not answer (or answered an error): 503.
    Unavailable(String),
}

type Result<T> = std::result::Result<T, Problem>;

async fn read<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(READ_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Problem::Unavailable(format!("reading {what}: {e}"))),
        Err(_) => Err(Problem::Unavailable(format!(
            "reading {what}: the database did not answer within {} s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

/// `text` cut to [`MAX_SHOWN`] characters for display.
pub fn shown(text: &str) -> String {
    crate::domain::outcome::capped(text, MAX_SHOWN)
}

/// One occurrence as a table row shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: i64,
    pub policy: String,
    /// The meeting's title, when DingTalk gave one (an event or the catch-up's list).
    pub title: Option<String>,
    pub state: OccurrenceState,
    /// A succeeded occurrence whose recording is still checked (`verify.watch`).
    pub watched: bool,
    /// Succeeded, but no check could confirm the recording.
    pub unconfirmed: bool,
    pub trigger: crate::domain::Trigger,
    pub due_at: String,
    pub conference_id: Option<String>,
    pub attempts: i64,
    pub code: Option<String>,
    /// The last attempt's (or failing check's) message from DingTalk.
    pub message: Option<String>,
    /// When the next attempt is due (retrying).
    pub next_attempt_at: Option<String>,
    pub verified_at: Option<String>,
    /// What a person can do about it (needs attention only).
    pub advice: Option<&'static str>,
    pub alerts: Vec<AlertRef>,
}

impl Item {
    pub fn from_row(o: &OccurrenceRow) -> Item {
        let last_attempt = o.attempts.last();
        let last_check = o.checks.last();
        let unconfirmed = o.state == OccurrenceState::Succeeded
            && o.verified_at.is_none()
            && last_check.is_some_and(|c| c.outcome == Some(crate::domain::CheckOutcome::Error));
        let watched = o.state == OccurrenceState::Succeeded && o.checks.iter().any(|c| c.outcome.is_none());
        let (code, message) = if unconfirmed {
            (
                last_check.and_then(|c| c.code.clone()),
                last_check.and_then(|c| c.message.clone()),
            )
        } else {
            (o.last_code.clone(), last_attempt.and_then(|a| a.message.clone()))
        };
        let event = match o.state {
            OccurrenceState::Failed => Some(AlertEvent::Failed),
            OccurrenceState::Expired => Some(AlertEvent::Expired),
            OccurrenceState::Missed => Some(AlertEvent::Missed),
            _ if unconfirmed => Some(AlertEvent::NotRecording),
            _ => None,
        };
        Item {
            id: o.id,
            policy: o.policy.clone(),
            title: o.event.as_ref().and_then(|e| e.title.as_deref()).map(shown),
            state: o.state,
            watched,
            unconfirmed,
            trigger: o.trigger,
            due_at: o.due_at.clone(),
            conference_id: o.conference_id.clone(),
            attempts: o.attempt_count,
            advice: event.map(|e| crate::alerts::message::advice(e, code.as_deref())),
            code,
            message: message.as_deref().filter(|m| !m.is_empty()).map(shown),
            next_attempt_at: last_attempt.and_then(|a| a.next_attempt_at.clone()),
            verified_at: o.verified_at.clone(),
            alerts: o.alerts.clone(),
        }
    }
}

/// A table of the summary: its first rows, and whether there are more.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub rows: Vec<Item>,
    pub more: bool,
}

impl Table {
    fn of(mut rows: Vec<OccurrenceRow>, limit: i64) -> Table {
        let more = rows.len() as i64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        Table {
            rows: rows.iter().map(Item::from_row).collect(),
            more,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertItem {
    pub id: i64,
    pub created_at: String,
    pub event: AlertEvent,
    pub policy: Option<String>,
    pub occurrence_id: Option<i64>,
    pub destination: String,
    pub state: crate::domain::AlertState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
}

impl AlertItem {
    fn from_row(a: &AlertRow) -> AlertItem {
        AlertItem {
            id: a.id,
            created_at: a.created_at.clone(),
            event: a.event,
            policy: a.policy_name.clone(),
            occurrence_id: a.occurrence_id,
            destination: a.destination.clone(),
            state: a.state,
            attempts: a.attempts,
            last_error: a.last_error.as_deref().map(shown),
            next_attempt_at: a.next_attempt_at.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct QuotaItem {
    pub month: String,
    pub used: u64,
    pub forecast: u64,
    /// 0: unlimited.
    pub limit: u32,
    pub events: u64,
    pub event_limit: u32,
    pub optional_calls_stopped: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DaemonItem {
    pub instance: String,
    pub state: &'static str,
    pub version: String,
    pub started_at: String,
    pub seen_at: String,
    pub attempts_in_flight: u64,
    pub checks_in_flight: u64,
}

/// Everything `GET /` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub generated_at: String,
    pub ready: bool,
    /// Occurrences in each live state now, and in each final state due in the last 7 days.
    pub live: BTreeMap<OccurrenceState, i64>,
    pub last_7_days: BTreeMap<OccurrenceState, i64>,
    /// Running, retrying, verifying, and succeeded ones still watched.
    pub now: Table,
    /// Scheduled within 24 h, soonest first.
    pub next: Table,
    /// Failed, expired, missed or not confirmed, due in the last 7 days, newest first.
    pub attention: Table,
    /// Recorded in the last 24 h, newest first.
    pub recorded: Table,
    /// Alerts pending, and alerts that gave up in the last 7 days.
    pub alerts: Vec<AlertItem>,
    pub alerts_more: bool,
    pub quota: Option<QuotaItem>,
    pub daemons: Vec<DaemonItem>,
    pub stream: Value,
}

fn page(limit: i64) -> Option<PageOf> {
    Some(PageOf {
        limit: limit + 1,
        offset: 0,
    })
}

/// The summary's reads of occurrences: what [`summary`] runs, and what the index test checks.
pub struct SummaryFilters {
    pub running: HistoryFilter,
    pub watched: HistoryFilter,
    pub next: HistoryFilter,
    pub failed: HistoryFilter,
    pub unconfirmed: HistoryFilter,
    pub recorded: HistoryFilter,
}

impl SummaryFilters {
    pub fn at(now: DateTime<Utc>) -> SummaryFilters {
        let week_ago = sub(now, ATTENTION).unwrap_or(now);
        let newest = |states: Vec<OccurrenceState>, since: Option<DateTime<Utc>>| HistoryFilter {
            states,
            since,
            newest_first: true,
            page: page(SUMMARY_ROWS),
            ..HistoryFilter::default()
        };
        SummaryFilters {
            running: newest(
                vec![
                    OccurrenceState::Running,
                    OccurrenceState::RetryWait,
                    OccurrenceState::Verifying,
                ],
                None,
            ),
            watched: HistoryFilter {
                checks_pending: true,
                ..newest(vec![OccurrenceState::Succeeded], None)
            },
            next: HistoryFilter {
                until: Some(add(now, NEXT).unwrap_or(now)),
                newest_first: false,
                ..newest(vec![OccurrenceState::Scheduled], Some(now))
            },
            failed: newest(
                vec![
                    OccurrenceState::Failed,
                    OccurrenceState::Expired,
                    OccurrenceState::Missed,
                ],
                Some(week_ago),
            ),
            unconfirmed: HistoryFilter {
                unconfirmed: true,
                ..newest(vec![OccurrenceState::Succeeded], Some(week_ago))
            },
            recorded: newest(
                vec![OccurrenceState::Succeeded],
                Some(sub(now, NEXT).unwrap_or(now)),
            ),
        }
    }

    pub fn all(&self) -> [(&'static str, &HistoryFilter); 6] {
        [
            ("now", &self.running),
            ("watched", &self.watched),
            ("next", &self.next),
            ("attention", &self.failed),
            ("unconfirmed", &self.unconfirmed),
            ("recorded", &self.recorded),
        ]
    }
}

/// Read the summary: the database's parts at once, each bounded.
pub async fn summary(s: &HttpState) -> Result<Summary> {
    let now = s.clock.now();
    let week_ago = sub(now, ATTENTION).unwrap_or(now);
    let store = &s.store;
    let SummaryFilters {
        running,
        watched,
        next,
        failed,
        unconfirmed,
        recorded,
    } = SummaryFilters::at(now);
    let (live, finals, running, watched, next, failed, unconfirmed, recorded, alerts, instances) = tokio::join!(
        read("the live counts", store.live_counts()),
        read("the final counts", store.final_counts(week_ago)),
        read("the occurrences running", store.history(&running)),
        read("the recordings watched", store.history(&watched)),
        read("the next occurrences", store.history(&next)),
        read("the occurrences that failed", store.history(&failed)),
        read("the recordings not confirmed", store.history(&unconfirmed)),
        read("the recordings made", store.history(&recorded)),
        read("the alerts", store.alerts_undelivered(week_ago, SUMMARY_ROWS + 1)),
        read("the daemons", store.instances(sub(now, NEXT).unwrap_or(now))),
    );
    let mut now_rows = running?;
    now_rows.extend(watched?);
    now_rows.sort_by(|a, b| b.due_at.cmp(&a.due_at).then(b.id.cmp(&a.id)));
    let mut attention = failed?;
    attention.extend(unconfirmed?);
    attention.sort_by(|a, b| b.due_at.cmp(&a.due_at).then(b.id.cmp(&a.id)));
    let mut alerts = alerts?;
    let alerts_more = alerts.len() as i64 > SUMMARY_ROWS;
    alerts.truncate(SUMMARY_ROWS as usize);
    let mut live_counts: BTreeMap<OccurrenceState, i64> =
        OccurrenceState::LIVE.iter().map(|s| (*s, 0)).collect();
    live_counts.extend(live?);
    let mut final_counts: BTreeMap<OccurrenceState, i64> = OccurrenceState::ALL
        .iter()
        .filter(|s| !s.is_live())
        .map(|s| (*s, 0))
        .collect();
    final_counts.extend(finals?);
    let (ready, _) = super::readiness(s).await;
    let (_, stream) = s.stream.report(now);
    Ok(Summary {
        generated_at: fmt_utc(now),
        ready,
        live: live_counts,
        last_7_days: final_counts,
        now: Table::of(now_rows, SUMMARY_ROWS),
        next: Table::of(next?, SUMMARY_ROWS),
        attention: Table::of(attention, SUMMARY_ROWS),
        recorded: Table::of(recorded?, SUMMARY_ROWS),
        alerts: alerts.iter().map(AlertItem::from_row).collect(),
        alerts_more,
        quota: s.quota.view().map(|v| QuotaItem {
            month: v.month.label.clone(),
            used: v.used,
            forecast: v.forecast,
            limit: v.limit,
            events: v.events,
            event_limit: v.event_limit,
            optional_calls_stopped: s.quota.optional_stopped(),
        }),
        daemons: instances?
            .iter()
            .map(|i| DaemonItem {
                instance: i.instance.clone(),
                state: i.liveness(now).as_str(),
                version: i.version.clone(),
                started_at: fmt_utc(i.started_at),
                seen_at: fmt_utc(i.seen_at),
                attempts_in_flight: i.attempts,
                checks_in_flight: i.checks,
            })
            .collect(),
        stream,
    })
}

/// `/occurrences`' filters, as the query string gives them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub policy: Option<String>,
    pub state: Option<String>,
    /// A duration back from now (`7d`, `36h`) or an instant (RFC 3339).
    pub since: Option<String>,
    pub until: Option<String>,
    pub page: Option<String>,
}

/// The filters read and checked.
#[derive(Debug, Clone)]
pub struct List {
    pub query: ListQuery,
    pub page: i64,
    pub rows: Vec<Item>,
    pub full: Vec<OccurrenceRow>,
    pub next_page: Option<i64>,
}

/// An instant from a query parameter: an RFC 3339 instant, or a duration back from `now`.
fn instant(key: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    if let Ok(t) = parse_utc(text) {
        return Ok(t);
    }
    let back = humantime::parse_duration(text).map_err(|_| {
        Problem::BadRequest(format!(
            "{key}: '{}' is neither a duration back from now (7d, 36h) nor an RFC 3339 instant",
            shown(text)
        ))
    })?;
    Ok(sub(now, back).unwrap_or(DateTime::<Utc>::MIN_UTC))
}

/// Read one page of `/occurrences`.
pub async fn list(s: &HttpState, q: ListQuery) -> Result<List> {
    let now = s.clock.now();
    let blank = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let state = match blank(&q.state) {
        None => None,
        Some(name) => Some(name.parse::<OccurrenceState>().map_err(|_| {
            Problem::BadRequest(format!(
                "state: '{}' is not one of {}",
                shown(&name),
                OccurrenceState::NAMES.join(", ")
            ))
        })?),
    };
    let policy = blank(&q.policy);
    if let Some(p) = &policy
        && p.chars().count() > 64
    {
        return Err(Problem::BadRequest(
            "policy: a policy name is at most 64 characters".into(),
        ));
    }
    let since = blank(&q.since).map(|t| instant("since", &t, now)).transpose()?;
    let until = blank(&q.until).map(|t| instant("until", &t, now)).transpose()?;
    let page = match blank(&q.page) {
        None => 1,
        Some(p) => p
            .parse::<i64>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| Problem::BadRequest(format!("page: a number from 1 to {MAX_PAGE}")))?,
    };
    let filter = HistoryFilter {
        policy,
        states: state.into_iter().collect(),
        since,
        until,
        newest_first: true,
        page: Some(PageOf {
            limit: PAGE_ROWS + 1,
            offset: (page - 1) * PAGE_ROWS,
        }),
        ..HistoryFilter::default()
    };
    let mut full = read("the occurrences", s.store.history(&filter)).await?;
    let next_page = (full.len() as i64 > PAGE_ROWS).then_some(page + 1);
    full.truncate(PAGE_ROWS as usize);
    Ok(List {
        query: q,
        page,
        rows: full.iter().map(Item::from_row).collect(),
        full,
        next_page,
    })
}

/// One entry of an occurrence's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Moment {
    pub at: String,
    /// `attempt`, `check`, `event` or `alert`.
    pub kind: &'static str,
    /// What happened, in words.
    pub what: String,
    pub code: Option<String>,
    pub message: Option<String>,
}

/// One occurrence, with its timeline in time order.
#[derive(Debug, Clone, Serialize)]
pub struct Detail {
    pub item: Item,
    pub occurrence: OccurrenceRow,
    pub timeline: Vec<Moment>,
}

pub async fn detail(s: &HttpState, id: &str) -> Result<Detail> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| Problem::NotFound(format!("no occurrence '{}'", shown(id))))?;
    let filter = HistoryFilter {
        id: Some(id),
        ..HistoryFilter::default()
    };
    let o = read("the occurrence", s.store.history(&filter))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Problem::NotFound(format!("no occurrence {id}")))?;
    Ok(Detail {
        item: Item::from_row(&o),
        timeline: timeline(&o),
        occurrence: o,
    })
}

/// Attempts, checks, the event and the alerts of `o`, in time order (the attempts' order on a tie).
pub fn timeline(o: &OccurrenceRow) -> Vec<Moment> {
    let mut out = Vec::new();
    if let Some(e) = &o.event {
        out.push(Moment {
            at: e.received_at.clone(),
            kind: "event",
            what: format!(
                "{} received{}",
                e.event_type,
                e.title
                    .as_deref()
                    .map(|t| format!(": {}", shown(t)))
                    .unwrap_or_default()
            ),
            code: None,
            message: None,
        });
    }
    for a in &o.attempts {
        let outcome = a.outcome.map(|x| x.as_str()).unwrap_or("in flight");
        out.push(Moment {
            at: a.started_at.clone(),
            kind: "attempt",
            what: format!(
                "attempt {}: {outcome}{}",
                a.attempt_no,
                a.http_status.map(|h| format!(" (HTTP {h})")).unwrap_or_default()
            ),
            code: a.code.clone(),
            message: a.message.as_deref().map(shown),
        });
    }
    for c in &o.checks {
        out.push(Moment {
            at: c.at.clone(),
            kind: "check",
            what: format!(
                "{} check: {}",
                c.kind.as_str(),
                c.outcome.map(|x| x.as_str()).unwrap_or("in flight")
            ),
            code: c.code.clone(),
            message: c.message.as_deref().map(shown),
        });
    }
    for a in &o.alerts {
        out.push(Moment {
            at: a.created_at.clone(),
            kind: "alert",
            what: format!(
                "{} alert to {}: {} after {} attempt(s){}",
                a.event.as_str(),
                a.destination,
                a.state.as_str(),
                a.attempts,
                a.sent_at
                    .as_deref()
                    .map(|t| format!(", sent {t}"))
                    .unwrap_or_default()
            ),
            code: None,
            message: a.last_error.as_deref().map(shown),
        });
    }
    // A stable sort: on a tie, the order above (event, attempts, checks, alerts).
    out.sort_by(|a, b| a.at.cmp(&b.at));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, assert_searches, status_sql};

    /// Every read of the status page searches an index, each the one it should: none reads a
    /// table whole, however many rows the database holds.
    #[tokio::test]
    async fn every_read_of_the_page_searches_an_index() {
        let dir = tempfile::tempdir().expect("tmp");
        let settings = crate::config::DatabaseSettings {
            path: dir.path().join("d.db"),
            ..crate::config::DatabaseSettings::default()
        };
        let store = Store::open(&settings).await.expect("store");
        let now = crate::domain::time::parse_utc("2026-12-07T09:00:00Z").expect("an instant");
        let filters = SummaryFilters::at(now);
        let list = HistoryFilter {
            policy: Some("p".into()),
            states: vec![OccurrenceState::Failed],
            since: Some(now),
            newest_first: true,
            page: Some(PageOf {
                limit: 101,
                offset: 100,
            }),
            ..HistoryFilter::default()
        };
        let one = HistoryFilter {
            id: Some(1),
            ..HistoryFilter::default()
        };
        let mut statements: Vec<(&str, String, &str)> = filters
            .all()
            .into_iter()
            .map(|(what, f)| {
                let index = match what {
                    "watched" => "occurrences_next_check",
                    "unconfirmed" => "checks_unconfirmed",
                    _ => "occurrences_by_state",
                };
                (what, status_sql::history(f), index)
            })
            .collect();
        statements.push((
            "list by policy",
            status_sql::history(&list),
            "occurrences_by_policy_name",
        ));
        statements.push(("one occurrence", status_sql::history(&one), "INTEGER PRIMARY KEY"));
        statements.push((
            "final counts",
            status_sql::FINAL_COUNTS.to_owned(),
            "occurrences_by_state",
        ));
        statements.push((
            "alerts undelivered",
            status_sql::ALERTS_UNDELIVERED.to_owned(),
            "alerts_failed",
        ));
        let pool = store.sqlite_pool().expect("SQLite");
        for (what, sql, index) in &statements {
            assert_searches(pool, what, sql, index).await;
        }
        store.close().await;
    }
}
