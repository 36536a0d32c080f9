//! Planner: policies → occurrence rows, for at least the next 24 h and always the next one.
//!
//! Each policy keeps `planned_until`: every meeting start at or before it has its row. A policy is
//! planned again only when that mark falls inside the horizon, so 100k weekly policies cost
//! nothing between their weekly passes.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::schedule::CronCache;
use crate::domain::time::{add, sub};
use crate::domain::{OccurrenceState, Policy, Trigger};
use crate::store::{NewOccurrence, PolicyPlan};

/// "Planned for ever": one-off policies after their one start.
pub fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_214_400, 0).unwrap_or(DateTime::<Utc>::MAX_UTC) // 9999-12-31
}

/// At most this many firings missed while dingrec was down become `missed` rows, per policy
/// (the latest); older ones are counted in the log.
pub const MAX_MISSED_ROWS: usize = 100;

/// How far back the missed firings are counted (a per-minute cron down for two months).
const MAX_BACKLOG_SEARCH: usize = 100_000;

/// At most this many rows per policy per pass (a per-second cron would want 86,400 a day).
pub const MAX_ROWS_PER_PASS: usize = 1_000;

/// One firing of a policy: the meeting's start, when to fire, when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firing {
    pub start: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
}

impl Firing {
    /// `None` when the due time or the window's end would fall outside the calendar (validation
    /// bounds the durations and dates, so only an outside edit of the database can get here).
    fn of(p: &Policy, start: DateTime<Utc>) -> Option<Self> {
        Some(Self {
            start,
            due_at: add(start, p.start_offset)?,
            window_ends_at: add(start, p.window)?,
        })
    }
}

fn skipped(p: &Policy, start: DateTime<Utc>) -> bool {
    !p.skip_dates.is_empty()
        && p.skip_dates
            .contains(&start.with_timezone(&p.timezone.tz()).date_naive())
}

/// The last instant of `t`'s local day: searching forward from here skips the rest of a skipped
/// date in one step, however many candidates it holds (`* * * * *` has 1,440 a day).
fn end_of_local_day(p: &Policy, t: DateTime<Utc>) -> DateTime<Utc> {
    let next_day = t
        .with_timezone(&p.timezone.tz())
        .date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|midnight| p.timezone.resolve_local(midnight));
    match next_day {
        Some(m) if m > t => m - TimeDelta::milliseconds(1),
        _ => t,
    }
}

/// The first instant of `t`'s local day, for searching backwards past a skipped date.
fn start_of_local_day(p: &Policy, t: DateTime<Utc>) -> DateTime<Utc> {
    let midnight = t
        .with_timezone(&p.timezone.tz())
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|m| p.timezone.resolve_local(m));
    match midnight {
        Some(m) if m <= t => m,
        _ => t,
    }
}

/// How many candidates a search looks at: each skipped date costs one, whatever the schedule.
fn search_bound(p: &Policy, wanted: usize) -> usize {
    wanted.saturating_add(p.skip_dates.len()).saturating_add(2)
}

/// Firings whose meeting starts in `(after, until]`, skip dates left out, at most `limit`.
pub fn firings_between(
    p: &Policy,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
    cache: &mut CronCache,
) -> Vec<Firing> {
    firings_and_next(p, after, until, limit, cache).0
}

/// [`firings_between`], and the first firing after `until` when the search met it on its way
/// (it stops at the first start past `until`: when that start is not skipped, it is
/// [`next_firing_after`]`(until)`, found without a second search).
fn firings_and_next(
    p: &Policy,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
    cache: &mut CronCache,
) -> (Vec<Firing>, Option<Firing>) {
    let mut out = Vec::new();
    let mut cursor = after;
    for _ in 0..search_bound(p, limit) {
        if out.len() >= limit {
            break;
        }
        match p.schedule.next_start_after(p.timezone, cursor, cache) {
            Some(t) if t <= until => {
                if skipped(p, t) {
                    cursor = end_of_local_day(p, t);
                } else {
                    out.extend(Firing::of(p, t));
                    cursor = t;
                }
            }
            Some(t) if !skipped(p, t) => return (out, Firing::of(p, t)),
            _ => break,
        }
    }
    (out, None)
}

/// The first firing whose meeting starts after `after`.
pub fn next_firing_after(p: &Policy, after: DateTime<Utc>, cache: &mut CronCache) -> Option<Firing> {
    let mut cursor = after;
    for _ in 0..search_bound(p, 1) {
        let t = p.schedule.next_start_after(p.timezone, cursor, cache)?;
        if !skipped(p, t) {
            return Firing::of(p, t);
        }
        cursor = end_of_local_day(p, t);
    }
    None
}

/// The latest firing whose meeting started in `(after, at_or_before]`.
fn last_firing_in(
    p: &Policy,
    after: DateTime<Utc>,
    at_or_before: DateTime<Utc>,
    cache: &mut CronCache,
) -> Option<Firing> {
    let mut upper = at_or_before;
    for _ in 0..search_bound(p, 1) {
        let t = p
            .schedule
            .last_start_in(p.timezone, after + TimeDelta::milliseconds(1), upper, cache)?;
        if !skipped(p, t) {
            return Firing::of(p, t);
        }
        upper = start_of_local_day(p, t) - TimeDelta::milliseconds(1);
    }
    None
}

/// The planner's decision for one policy.
#[derive(Debug, Clone)]
pub struct Planned {
    pub plan: PolicyPlan,
    /// Firings that passed while nothing was planning them (daemon down) and that are neither
    /// caught up nor recorded as `missed` rows (`docs/policies.md`, "When dingrec was down").
    pub skipped_backlog: usize,
}

/// Plan one policy. `planned_until = None` means never planned: then a meeting that started
/// within the last window is still caught up.
pub fn plan_policy(
    policy_id: i64,
    p: &Policy,
    planned_until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    horizon: Duration,
    cache: &mut CronCache,
) -> Planned {
    let horizon_end = add(now, horizon).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let from = planned_until.unwrap_or_else(|| sub(now, p.window).unwrap_or(DateTime::<Utc>::MIN_UTC));
    let mut rows = Vec::new();
    let mut skipped_backlog = 0;

    if from < now
        && let Some(latest) = last_firing_in(p, from, now, cache)
    {
        // Firings between the last plan and the latest one passed while nothing planned them
        // (dingrec was down longer than its horizon). They are not fired late; the latest
        // MAX_MISSED_ROWS of them become `missed` rows, the older ones a count in the log. (A
        // policy never planned before missed nothing: it did not exist yet.)
        if planned_until.is_some() {
            let backlog = firings_between(
                p,
                from,
                latest.start - TimeDelta::milliseconds(1),
                MAX_BACKLOG_SEARCH,
                cache,
            );
            let older = backlog.len().saturating_sub(MAX_MISSED_ROWS);
            skipped_backlog = older;
            rows.extend(backlog[older..].iter().map(|f| NewOccurrence {
                start: f.start,
                due_at: f.due_at,
                window_ends_at: f.window_ends_at,
                state: OccurrenceState::Missed,
                trigger: Trigger::Schedule,
            }));
        }
        let (state, trigger) = if latest.window_ends_at <= now {
            (OccurrenceState::Missed, Trigger::Schedule)
        } else if latest.due_at <= now {
            (OccurrenceState::Scheduled, Trigger::CatchUp)
        } else {
            (OccurrenceState::Scheduled, Trigger::Schedule)
        };
        rows.push(NewOccurrence {
            start: latest.start,
            due_at: latest.due_at,
            window_ends_at: latest.window_ends_at,
            state,
            trigger,
        });
    }

    let future_from = from.max(now);
    let (future, beyond) = firings_and_next(p, future_from, horizon_end, MAX_ROWS_PER_PASS, cache);
    let planned_until = if future.len() >= MAX_ROWS_PER_PASS {
        future.last().map_or(horizon_end, |f| f.start)
    } else {
        let last = future.last().map_or(future_from, |f| f.start).max(horizon_end);
        let next = match beyond {
            Some(f) if last == horizon_end => Some(f),
            _ => next_firing_after(p, last, cache),
        };
        match next {
            Some(next) if future.is_empty() && rows.iter().all(|r| r.state != OccurrenceState::Scheduled) => {
                // Always the next one, however far.
                rows.push(NewOccurrence {
                    start: next.start,
                    due_at: next.due_at,
                    window_ends_at: next.window_ends_at,
                    state: OccurrenceState::Scheduled,
                    trigger: Trigger::Schedule,
                });
                next.start
            }
            Some(next) => next.start - TimeDelta::milliseconds(1),
            // A one-off whose start has passed: planned for good. A cron always has a next
            // firing (validation refuses one that never fires); should a search still come back
            // empty, look again in a day rather than never.
            None => match p.schedule {
                crate::domain::Schedule::At(_) | crate::domain::Schedule::OnEvent => far_future(),
                crate::domain::Schedule::Cron(_) => {
                    add(now, Duration::from_secs(24 * 3600)).unwrap_or_else(far_future)
                }
            },
        }
    };
    rows.extend(future.iter().map(|f| NewOccurrence {
        start: f.start,
        due_at: f.due_at,
        window_ends_at: f.window_ends_at,
        state: OccurrenceState::Scheduled,
        trigger: Trigger::Schedule,
    }));
    Planned {
        plan: PolicyPlan {
            policy_id,
            policy_name: p.name.as_str().to_owned(),
            rows,
            planned_until,
        },
        skipped_backlog,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PolicyDefaults;
    use crate::policy_file::parse_str;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            "policies:\n  - name: p\n    conference_id: c\n    host_union_id: h\n    timezone: UTC\n{extra}"
        );
        parse_str(std::path::Path::new("t.yaml"), &text, &PolicyDefaults::default())
            .expect("valid")
            .remove(0)
            .policy
    }

    fn utc(s: &str) -> DateTime<Utc> {
        crate::domain::time::parse_utc(s).expect("valid")
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_daily_cron_gets_the_next_24_hours_and_marks_how_far() {
        let p = policy("    cron: \"0 9 * * *\"\n    window: 20m\n    start_offset: 30s\n");
        let mut cache = CronCache::default();
        let now = utc("2026-11-26T08:00:00Z");
        let out = plan_policy(1, &p, Some(now), now, DAY, &mut cache);
        assert_eq!(out.plan.rows.len(), 1);
        assert_eq!(out.plan.rows[0].due_at, utc("2026-11-26T09:00:30Z"));
        assert_eq!(out.plan.rows[0].window_ends_at, utc("2026-11-26T09:20:00Z"));
        // The next start (tomorrow 09:00) is beyond the horizon: planned up to just before it.
        assert_eq!(out.plan.planned_until, utc("2026-11-27T08:59:59.999Z"));
    }

    #[test]
    fn skipped_dates_are_passed_by_date_not_by_candidate() {
        // 1,440 candidates a day: two skipped days are 2,880 candidates, found in a few steps.
        let p = policy("    cron: \"* * * * *\"\n    window: 1m\n    skip_dates: [2026-11-26, 2026-11-27]\n");
        let mut cache = CronCache::default();
        let now = utc("2026-11-26T00:00:00Z");
        let out = plan_policy(1, &p, Some(now), now, DAY, &mut cache);
        assert!(
            out.plan.planned_until < far_future(),
            "{:?}",
            out.plan.planned_until
        );
        let first = out
            .plan
            .rows
            .first()
            .expect("the next firing, after the skipped days");
        assert_eq!(first.due_at, utc("2026-11-28T00:00:00Z"));
        let next = next_firing_after(&p, now, &mut cache).expect("found");
        assert_eq!(next.start, utc("2026-11-28T00:00:00Z"));
        let back = last_firing_in(
            &p,
            utc("2026-11-25T00:00:00Z"),
            utc("2026-11-27T23:59:00Z"),
            &mut cache,
        )
        .expect("found");
        assert_eq!(back.start, utc("2026-11-25T23:59:00Z"));
    }

    #[test]
    fn a_weekly_cron_always_has_its_next_occurrence() {
        let p = policy("    cron: \"0 9 * * MON\"\n");
        let mut cache = CronCache::default();
        let now = utc("2026-11-26T08:00:00Z"); // a Thursday
        let out = plan_policy(1, &p, Some(now), now, DAY, &mut cache);
        assert_eq!(out.plan.rows.len(), 1);
        assert_eq!(out.plan.rows[0].due_at, utc("2026-11-30T09:00:00Z"));
        assert_eq!(out.plan.planned_until, utc("2026-11-30T09:00:00Z"));
    }

    #[test]
    fn skip_dates_are_local_dates() {
        let p = policy("    cron: \"0 9 * * *\"\n    skip_dates: [2026-11-26]\n");
        let mut cache = CronCache::default();
        let now = utc("2026-11-26T00:00:00Z");
        let out = plan_policy(1, &p, Some(now), now, DAY * 2, &mut cache);
        let dues: Vec<_> = out.plan.rows.iter().map(|r| r.due_at).collect();
        assert_eq!(dues, vec![utc("2026-11-27T09:00:00Z")]);
    }

    #[test]
    fn down_for_three_weeks_catches_up_the_latest_only() {
        let p = policy("    cron: \"0 9 * * MON\"\n    window: 30m\n");
        let mut cache = CronCache::default();
        let planned_until = utc("2026-11-02T00:00:00Z");
        // Back up Monday 2026-11-23 at 09:10, inside that meeting's window.
        let now = utc("2026-11-23T09:10:00Z");
        let out = plan_policy(1, &p, Some(planned_until), now, DAY, &mut cache);
        assert_eq!(out.skipped_backlog, 0, "nothing beyond the missed rows");
        let summary: Vec<_> = out
            .plan
            .rows
            .iter()
            .map(|r| (r.due_at, r.state, r.trigger))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    utc("2026-11-02T09:00:00Z"),
                    OccurrenceState::Missed,
                    Trigger::Schedule
                ),
                (
                    utc("2026-11-09T09:00:00Z"),
                    OccurrenceState::Missed,
                    Trigger::Schedule
                ),
                (
                    utc("2026-11-16T09:00:00Z"),
                    OccurrenceState::Missed,
                    Trigger::Schedule
                ),
                (
                    utc("2026-11-23T09:00:00Z"),
                    OccurrenceState::Scheduled,
                    Trigger::CatchUp
                ),
            ],
            "the 2nd, 9th and 16th recorded as missed, the latest caught up"
        );
        // Back up after the window: recorded as missed, not fired.
        let now = utc("2026-11-23T10:00:00Z");
        let out = plan_policy(1, &p, Some(planned_until), now, DAY, &mut cache);
        assert_eq!(out.plan.rows[0].state, OccurrenceState::Missed);
        assert_eq!(
            out.plan.rows.last().map(|r| r.due_at),
            Some(utc("2026-11-30T09:00:00Z")),
            "and the next one is planned"
        );
    }

    #[test]
    fn a_long_outage_records_the_latest_hundred_missed_firings_and_counts_the_rest() {
        let p = policy("    cron: \"0 * * * *\"\n    window: 30m\n");
        let mut cache = CronCache::default();
        let planned_until = utc("2026-11-01T00:00:00Z");
        let now = utc("2026-11-11T00:10:00Z"); // ten days of hourly firings
        let out = plan_policy(1, &p, Some(planned_until), now, DAY, &mut cache);
        let missed = out
            .plan
            .rows
            .iter()
            .filter(|r| r.state == OccurrenceState::Missed)
            .count();
        assert_eq!(missed, MAX_MISSED_ROWS);
        assert_eq!(out.skipped_backlog, 10 * 24 - 1 - MAX_MISSED_ROWS);
        assert!(
            out.plan
                .rows
                .iter()
                .any(|r| r.due_at == utc("2026-11-10T23:00:00Z") && r.state == OccurrenceState::Missed)
        );
    }

    #[test]
    fn a_one_off_is_planned_once_then_never_again() {
        let p = policy("    at: 2026-12-01T09:00:00\n");
        let mut cache = CronCache::default();
        let now = utc("2026-11-26T08:00:00Z");
        let out = plan_policy(1, &p, None, now, DAY, &mut cache);
        assert_eq!(out.plan.rows.len(), 1);
        assert_eq!(out.plan.rows[0].due_at, utc("2026-12-01T09:00:00Z"));
        assert_eq!(out.plan.planned_until, utc("2026-12-01T09:00:00Z"));
        let again = plan_policy(
            1,
            &p,
            Some(out.plan.planned_until),
            utc("2026-12-01T08:00:00Z"),
            DAY,
            &mut cache,
        );
        assert!(again.plan.rows.is_empty());
        assert_eq!(again.plan.planned_until, far_future());
    }

    #[test]
    fn a_meeting_already_running_when_first_planned_is_caught_up() {
        let p = policy("    at: 2026-11-26T07:50:00\n    window: 30m\n");
        let mut cache = CronCache::default();
        let out = plan_policy(1, &p, None, utc("2026-11-26T08:00:00Z"), DAY, &mut cache);
        assert_eq!(out.plan.rows.len(), 1);
        assert_eq!(out.plan.rows[0].trigger, Trigger::CatchUp);
    }
}
