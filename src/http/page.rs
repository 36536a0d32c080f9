//! The status page's HTML (docs/operations.md "The status page"), rendered on the server with
//! maud: every value spliced in is escaped (titles, codes and messages come from DingTalk); there
//! is no inline script or style, so the CSP can forbid both. `refresh.js` and `style.css` are
//! files beside it, compiled in.

use maud::{DOCTYPE, Markup, html};

use super::status::{AlertItem, Detail, Item, List, ListQuery, PAGE_ROWS, Summary, Table};
use crate::domain::OccurrenceState;

pub const STYLE: &str = include_str!("assets/style.css");
pub const REFRESH: &str = include_str!("assets/refresh.js");
pub const ICON: &str = include_str!("assets/icon.svg");

/// The page around `body`; `refresh`: the script reloads `main` every 5 s.
fn layout(title: &str, generated_at: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · dingrec" }
                link rel="icon" type="image/svg+xml" href="/assets/icon.svg";
                link rel="stylesheet" href="/assets/style.css";
                @if refresh {
                    script src="/assets/refresh.js" defer {}
                }
            }
            body data-refresh=[refresh.then_some("5000")] {
                header {
                    a.brand href="/" { "dingrec" }
                    nav {
                        a href="/" { "Summary" }
                        a href="/occurrences" { "Occurrences" }
                    }
                    span.updated {
                        "updated " time #updated datetime=(generated_at) { (short_time(generated_at)) }
                        span #stale hidden { " · not updated: the daemon did not answer" }
                    }
                }
                main #main data-generated-at=(generated_at) { (body) }
            }
        }
    }
}

/// `2026-12-07T09:00:00.000Z` as `2026-12-07 09:00:00Z`.
fn short_time(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    match t.find('.') {
        Some(dot) if t.ends_with('Z') => format!("{}Z", &t[..dot]),
        _ => t,
    }
}

fn state_label(state: OccurrenceState) -> &'static str {
    state.as_str()
}

fn count_card(state: OccurrenceState, n: i64, since: Option<&str>) -> Markup {
    let href = match since {
        Some(s) => format!("/occurrences?state={}&since={s}", state.as_str()),
        None => format!("/occurrences?state={}", state.as_str()),
    };
    html! {
        a.count href=(href) data-state=(state.as_str()) {
            span.n { (n) }
            span.label { (state_label(state)) }
        }
    }
}

fn meeting(i: &Item) -> Markup {
    html! {
        a href=(format!("/occurrences/{}", i.id)) { (i.policy) }
        @if let Some(t) = &i.title {
            span.title lang="zh" { (t) }
        }
    }
}

fn state_cell(i: &Item) -> Markup {
    let label = if i.unconfirmed {
        "not confirmed"
    } else if i.watched {
        "watched"
    } else {
        state_label(i.state)
    };
    html! { span.state data-state=(i.state.as_str()) { (label) } }
}

fn code_cell(i: &Item) -> Markup {
    html! {
        @if let Some(c) = &i.code { code { (c) } }
        @if let Some(m) = &i.message { span.message { (m) } }
    }
}

fn alerts_cell(i: &Item) -> Markup {
    html! {
        @if i.alerts.is_empty() { span.none { "none" } }
        @for a in &i.alerts {
            span.alert data-state=(a.state.as_str()) {
                (a.event.as_str()) " → " (a.destination) ": " (a.state.as_str())
            }
        }
    }
}

/// A table of occurrences; `attention` adds what to do and the alerts.
fn items(rows: &[Item], attention: bool, empty: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { (empty) }
        } @else {
            div.scroll {
                table.cards {
                    thead { tr {
                        th { "due (UTC)" } th { "meeting" } th { "state" } th { "attempts" } th { "code" }
                        @if attention { th { "what to do" } th { "alerts" } }
                    } }
                    tbody {
                        @for i in rows {
                            tr data-occurrence=(i.id) {
                                td.time data-label="due" { (short_time(&i.due_at)) }
                                td.meeting { (meeting(i)) }
                                td data-label="state" { (state_cell(i)) }
                                td.num data-label="attempts" { (i.attempts) }
                                td data-label="code" { (code_cell(i)) }
                                @if attention {
                                    td.advice data-label="what to do" { (i.advice.unwrap_or("")) }
                                    td data-label="alerts" { (alerts_cell(i)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn table(t: &Table, attention: bool, empty: &str, all: &str) -> Markup {
    html! {
        (items(&t.rows, attention, empty))
        @if t.more { p.more { a href=(all) { "all of them →" } } }
    }
}

fn alert_rows(alerts: &[AlertItem], more: bool) -> Markup {
    html! {
        @if alerts.is_empty() {
            p.empty { "Every alert was delivered." }
        } @else {
            div.scroll { table.cards {
                thead { tr { th { "raised (UTC)" } th { "event" } th { "policy" } th { "destination" } th { "state" } th { "attempts" } th { "last error" } } }
                tbody { @for a in alerts {
                    tr {
                        td.time data-label="raised" { (short_time(&a.created_at)) }
                        td data-label="event" { (a.event.as_str()) }
                        td data-label="policy" {
                            @match (a.occurrence_id, &a.policy) {
                                (Some(id), Some(p)) => a href=(format!("/occurrences/{id}")) { (p) },
                                (_, Some(p)) => (p),
                                _ => "—",
                            }
                        }
                        td data-label="destination" { (a.destination) }
                        td data-label="state" { span.state data-state=(a.state.as_str()) { (a.state.as_str()) } }
                        td.num data-label="attempts" { (a.attempts) }
                        td data-label="last error" { @if let Some(e) = &a.last_error { span.message { (e) } } }
                    }
                } }
            } }
            @if more { p.more { "More alerts are waiting: see `dingrec alerts`." } }
        }
    }
}

fn quota(s: &Summary) -> Markup {
    html! {
        @match &s.quota {
            None => p.empty { "Not counted yet." },
            Some(q) => {
                p { "Month " (q.month) ": " strong { (q.used) } " calls used, " (q.forecast) " forecast"
                    @if q.limit > 0 { ", of " (q.limit) "." } @else { "; no limit set." } }
                @if q.limit > 0 {
                    div.bar {
                        label { "used " meter min="0" max=(q.limit) low=(u64::from(q.limit) * 8 / 10) high=(u64::from(q.limit) * 9 / 10) optimum="0" value=(q.used) { (q.used) } }
                        label { "forecast " meter min="0" max=(q.limit) low=(u64::from(q.limit) * 8 / 10) high=(u64::from(q.limit) * 9 / 10) optimum="0" value=(q.forecast.min(u64::from(q.limit))) { (q.forecast) } }
                    }
                }
                @if q.event_limit > 0 || q.events > 0 {
                    p { "Events this month: " (q.events) @if q.event_limit > 0 { " of " (q.event_limit) } "." }
                }
                @if q.optional_calls_stopped {
                    p.warn { "Checks and look-ups are stopped to keep the reserve for StartCloudRecord." }
                }
            }
        }
    }
}

fn stream(v: &serde_json::Value) -> Markup {
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    html! {
        p {
            "State: " strong { (field("state").unwrap_or_else(|| "off".into())) }
            @if let Some(t) = field("connected_since") { ", connected since " (short_time(&t)) }
            @if let Some(t) = field("down_since") { ", down since " (short_time(&t)) }
            @if let Some(t) = field("last_event_at") { "; last event " (short_time(&t)) }
            "."
        }
        @if let Some(e) = field("last_error") { p.warn { "Last error: " (super::status::shown(&e)) } }
    }
}

pub fn summary(s: &Summary) -> Markup {
    let finals = [
        OccurrenceState::Succeeded,
        OccurrenceState::Failed,
        OccurrenceState::Expired,
        OccurrenceState::Missed,
        OccurrenceState::Cancelled,
    ];
    let body = html! {
        @if !s.ready {
            p.banner { "The daemon is not ready: see " a href="/readyz" { "/readyz" } "." }
        }
        section #counts {
            h2 { "Now" }
            div.counts { @for st in OccurrenceState::LIVE { (count_card(*st, s.live.get(st).copied().unwrap_or(0), None)) } }
            h2 { "Last 7 days" }
            div.counts { @for st in finals { (count_card(st, s.last_7_days.get(&st).copied().unwrap_or(0), Some("7d"))) } }
        }
        section #now {
            h2 { "Recording now" }
            (table(&s.now, false, "Nothing is being started or checked now.", "/occurrences?state=running"))
        }
        section #attention {
            h2 { "Needs attention (7 days)" }
            (table(&s.attention, true, "Nothing failed, expired, was missed or went unconfirmed in the last 7 days.", "/occurrences?state=failed&since=7d"))
        }
        section #next {
            h2 { "Next 24 hours" }
            (table(&s.next, false, "Nothing is due in the next 24 hours.", "/occurrences?state=scheduled"))
        }
        section #recorded {
            h2 { "Recorded in the last 24 hours" }
            (table(&s.recorded, false, "Nothing was recorded in the last 24 hours.", "/occurrences?state=succeeded&since=24h"))
        }
        section #alerts {
            h2 { "Alerts not delivered" }
            (alert_rows(&s.alerts, s.alerts_more))
        }
        div.pair {
            section #quota { h2 { "Quota" } (quota(s)) }
            section #stream { h2 { "Stream" } (stream(&s.stream)) }
        }
        section #daemons {
            h2 { "Daemons" }
            @if s.daemons.is_empty() { p.empty { "No daemon ran on this database in the last 24 hours." } }
            @else {
                div.scroll { table.cards {
                    thead { tr { th { "instance" } th { "state" } th { "version" } th { "started (UTC)" } th { "seen (UTC)" } th { "attempts" } th { "checks" } } }
                    tbody { @for d in &s.daemons {
                        tr {
                            td.meeting { (d.instance) }
                            td data-label="state" { (d.state) }
                            td data-label="version" { (d.version) }
                            td.time data-label="started" { (short_time(&d.started_at)) }
                            td.time data-label="seen" { (short_time(&d.seen_at)) }
                            td.num data-label="attempts" { (d.attempts_in_flight) }
                            td.num data-label="checks" { (d.checks_in_flight) }
                        }
                    } }
                } }
            }
        }
    };
    layout("Status", &s.generated_at, true, body)
}

/// The query string of `q` with `page` set, for the pager's links.
fn page_link(q: &ListQuery, page: i64) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [
        ("policy", &q.policy),
        ("state", &q.state),
        ("since", &q.since),
        ("until", &q.until),
    ] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            out.append_pair(k, v);
        }
    }
    out.append_pair("page", &page.to_string());
    format!("/occurrences?{}", out.finish())
}

pub fn list(l: &List, generated_at: &str) -> Markup {
    let q = &l.query;
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let body = html! {
        h2 { "Occurrences" }
        form.filters method="get" action="/occurrences" {
            label { "policy " input name="policy" value=(value(&q.policy)) maxlength="64"; }
            label { "state "
                select name="state" {
                    option value="" { "any" }
                    @for st in OccurrenceState::ALL {
                        option value=(st.as_str()) selected[q.state.as_deref() == Some(st.as_str())] { (st.as_str()) }
                    }
                }
            }
            label { "since " input name="since" value=(value(&q.since)) placeholder="7d" maxlength="40"; }
            label { "until " input name="until" value=(value(&q.until)) placeholder="2026-12-07T00:00:00Z" maxlength="40"; }
            button type="submit" { "Show" }
        }
        (items(&l.rows, true, "No occurrence matches."))
        nav.pager {
            @if l.page > 1 { a rel="prev" href=(page_link(q, l.page - 1)) { "← newer" } }
            span { "page " (l.page) " · " (PAGE_ROWS) " a page" }
            @if let Some(n) = l.next_page { a rel="next" href=(page_link(q, n)) { "older →" } }
        }
    };
    layout("Occurrences", generated_at, true, body)
}

pub fn detail(d: &Detail, generated_at: &str) -> Markup {
    let i = &d.item;
    let o = &d.occurrence;
    let body = html! {
        h2 { "Occurrence " (i.id) " · " (i.policy) }
        @if let Some(t) = &i.title { p.title lang="zh" { (t) } }
        dl.facts {
            dt { "state" } dd { (state_cell(i)) }
            dt { "due (UTC)" } dd { (short_time(&i.due_at)) }
            dt { "window ends (UTC)" } dd { (short_time(&o.window_ends_at)) }
            dt { "trigger" } dd { (i.trigger.as_str()) }
            dt { "meeting" } dd { (i.conference_id.as_deref().unwrap_or("—")) }
            dt { "attempts" } dd { (i.attempts) }
            dt { "confirmed" } dd { (i.verified_at.as_deref().map(short_time).unwrap_or_else(|| "no".into())) }
            @if let Some(c) = &i.code { dt { "code" } dd { code { (c) } } }
            @if let Some(a) = i.advice { dt { "what to do" } dd.advice { (a) } }
        }
        h3 { "Timeline" }
        @if d.timeline.is_empty() { p.empty { "Nothing happened yet." } }
        @else {
            ol.timeline {
                @for m in &d.timeline {
                    li data-kind=(m.kind) {
                        time { (short_time(&m.at)) }
                        span.kind { (m.kind) }
                        span.what { (m.what) }
                        @if let Some(c) = &m.code { code { (c) } }
                        @if let Some(msg) = &m.message { span.message { (msg) } }
                    }
                }
            }
        }
        p { a href=(format!("/api/v1/occurrences/{}", i.id)) { "as JSON" } }
    };
    layout(
        &format!("Occurrence {}", i.id),
        generated_at,
        i.state.is_live() || i.watched,
        body,
    )
}

/// A page that says what went wrong (its text escaped like the rest).
pub fn problem(title: &str, text: &str, generated_at: &str) -> Markup {
    layout(
        title,
        generated_at,
        false,
        html! { h2 { (title) } p.banner { (text) } p { a href="/" { "back to the summary" } } },
    )
}
