//! The scheduler end to end: the real app, the fake DingTalk, a real SQLite file, real HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use dingrec::clock::{Clock, ManualClock, SystemClock};
use dingrec::domain::{AttemptOutcome, OccurrenceState, Trigger};
use dingrec::fake::{MeetingSpec, MeetingState, Scenario, ScheduleSpec};

use crate::support::app::{TestApp, apply, at_in, parse_t};
use crate::support::{HANG, engine, live, policy, sqlite, step};

fn scenario(meetings: Vec<MeetingSpec>) -> Scenario {
    Scenario {
        meetings,
        ..Scenario::default()
    }
}

/// The app on a manual clock at 2030-01-07T08:00:00Z; `policies` gets the clock to place them.
async fn on_manual_clock(
    meetings: Vec<MeetingSpec>,
    policies: impl FnOnce(&dyn Clock) -> String,
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(parse_t("2030-01-07T08:00:00Z"));
    let app = TestApp::start_with(scenario(meetings), Arc::new(clock.clone()), |_| {}, policies).await;
    (app, clock)
}

const FAST_RETRY: &str = "    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 10 }\n";

#[tokio::test]
async fn a_one_off_policy_due_in_a_second_starts_exactly_once_with_its_settings() {
    let app = TestApp::start(scenario(vec![live("conf-1", vec![])]), |c| {
        format!(
            "policies:\n{}",
            policy(
                "board",
                "conf-1",
                &at_in(c, 1000),
                "    layout: grid\n    small_window_position: float_bottom\n"
            )
        )
    })
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = TestApp::occurrence(&rows, "board");
    assert_eq!(o.state, OccurrenceState::Succeeded);
    assert_eq!(o.attempts.len(), 1);
    let a = &o.attempts[0];
    assert_eq!(a.code.as_deref(), Some("200"));
    assert_eq!(a.http_status, Some(200));
    assert_eq!(a.outcome, Some(AttemptOutcome::Success));
    assert!(a.request_id.as_deref().is_some_and(|r| r.len() == 36), "{a:?}");
    assert!(parse_t(&a.started_at) >= parse_t(&o.due_at), "never early");
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].id.as_deref(), Some("conf-1"));
    assert_eq!(starts[0].union_id.as_deref(), Some("host-1"));
    assert_eq!(starts[0].mode.as_deref(), Some("grid"));
    assert_eq!(starts[0].small_window_position.as_deref(), Some("float_bottom"));
}

#[tokio::test]
async fn system_error_twice_then_success_retries_within_the_backoff_bounds() {
    let (app, clock) = on_manual_clock(vec![live("conf-1", vec![step("systemError", 2)])], |c| {
        format!("policies:\n{}", policy("p", "conf-1", &at_in(c, 300), FAST_RETRY))
    })
    .await;
    let rows = app
        .drive_until_final(&clock, TimeDelta::milliseconds(100), 1)
        .await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded);
    let codes: Vec<_> = o
        .attempts
        .iter()
        .map(|a| a.code.clone().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["systemError", "systemError", "200"]);
    for (i, pair) in o.attempts.windows(2).enumerate() {
        let (prev, next) = (&pair[0], &pair[1]);
        let finished = parse_t(prev.finished_at.as_deref().expect("finished"));
        let planned = parse_t(prev.next_attempt_at.as_deref().expect("next_attempt_at"));
        // FAST_RETRY: 1 s at first, at most 1 s (the shortest the bounds allow).
        let cap = TimeDelta::seconds(1).min(TimeDelta::milliseconds(1000 * 2_i64.pow(i as u32)));
        assert!(
            planned >= finished && planned <= finished + cap,
            "attempt {}: wait beyond its cap {cap}",
            i + 1
        );
        assert!(
            parse_t(&next.started_at) >= planned,
            "never before the planned time"
        );
    }
}

#[tokio::test]
async fn final_errors_fail_at_once_without_retry() {
    let app = TestApp::start(
        scenario(vec![
            MeetingSpec {
                state: Some(MeetingState::Ended),
                ..live("closed", vec![])
            },
            MeetingSpec {
                host_union_id: Some("somebody-else".into()),
                ..live("not-host", vec![])
            },
        ]),
        |c| {
            let at = at_in(c, 300);
            format!(
                "policies:\n{}{}{}",
                policy("room-closed", "closed", &at, FAST_RETRY),
                policy("permission", "not-host", &at, FAST_RETRY),
                policy("params", "unknown-conference", &at, FAST_RETRY),
            )
        },
    )
    .await;
    let rows = app.wait_final(3, HANG).await;
    for (policy, code) in [
        ("room-closed", "roomClosed"),
        ("permission", "recordStartPermissionError"),
        ("params", "paramsError"),
    ] {
        let o = TestApp::occurrence(&rows, policy);
        assert_eq!(o.state, OccurrenceState::Failed, "{policy}");
        assert_eq!(o.attempts.len(), 1, "{policy}: no retry");
        assert_eq!(o.attempts[0].code.as_deref(), Some(code));
        assert_eq!(o.attempts[0].outcome, Some(AttemptOutcome::Fail));
    }
    assert_eq!(app.fake.start_requests().len(), 3);
}

#[tokio::test]
async fn retries_stop_at_maximum_attempts_or_the_window_whichever_is_first() {
    let (app, clock) = on_manual_clock(
        vec![
            live("always-busy-1", vec![step("systemError", 1000)]),
            live("always-busy-2", vec![step("systemError", 1000)]),
        ],
        |c| {
            let at = at_in(c, 300);
            format!(
                "policies:\n{}{}",
                policy(
                    "by-attempts",
                    "always-busy-1",
                    &at,
                    "    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 4 }\n"
                ),
                policy(
                    "by-window",
                    "always-busy-2",
                    &at,
                    "    window: 10s\n    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 1000 }\n"
                ),
            )
        },
    )
    .await;
    let rows = app
        .drive_until_final(&clock, TimeDelta::milliseconds(100), 2)
        .await;
    let by_attempts = TestApp::occurrence(&rows, "by-attempts");
    assert_eq!(by_attempts.state, OccurrenceState::Expired);
    assert_eq!(by_attempts.attempts.len(), 4);
    let by_window = TestApp::occurrence(&rows, "by-window");
    assert_eq!(by_window.state, OccurrenceState::Expired);
    // At most 1 s between attempts, from 0.3 s to the window's end at 10.3 s: at least ten.
    assert!(by_window.attempts.len() >= 10, "{}", by_window.attempts.len());
    let window_end = parse_t(&by_window.window_ends_at);
    for a in &by_window.attempts {
        assert!(
            parse_t(&a.started_at) <= window_end,
            "an attempt after the window"
        );
    }
    assert_eq!(
        by_window.attempts.last().and_then(|a| a.outcome),
        Some(AttemptOutcome::Fail)
    );
}

#[tokio::test]
async fn throttled_attempts_wait_a_second_and_do_not_use_up_attempts() {
    let (app, clock) = on_manual_clock(
        vec![live(
            "conf-1",
            vec![step("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", 2)],
        )],
        |c| {
            format!(
                "policies:\n{}",
                policy(
                    "p",
                    "conf-1",
                    &at_in(c, 300),
                    "    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 1 }\n"
                )
            )
        },
    )
    .await;
    let rows = app
        .drive_until_final(&clock, TimeDelta::milliseconds(100), 1)
        .await;
    let o = &rows[0];
    assert_eq!(
        o.state,
        OccurrenceState::Succeeded,
        "throttled attempts must not count against maximum_attempts: 1"
    );
    assert_eq!(o.attempts.len(), 3);
    for pair in o.attempts.windows(2) {
        let gap = parse_t(&pair[1].started_at) - parse_t(pair[0].finished_at.as_deref().expect("finished"));
        assert!(gap >= TimeDelta::seconds(1), "retried after {gap}");
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_retried() {
    let app = TestApp::start(
        scenario(vec![live("conf-1", vec![]), live("conf-2", vec![])]),
        |c| {
            format!(
                "policies:\n{}{}",
                policy("first", "conf-1", &at_in(c, 200), FAST_RETRY),
                policy("second", "conf-2", &at_in(c, 1500), FAST_RETRY)
            )
        },
    )
    .await;
    // After the first recording started, DingTalk forgets every token.
    let until = tokio::time::Instant::now() + HANG;
    while app.fake.start_requests().is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.fake.expire_tokens();
    let rows = app.wait_final(2, HANG).await;
    let second = TestApp::occurrence(&rows, "second");
    assert_eq!(second.state, OccurrenceState::Succeeded);
    let codes: Vec<_> = second
        .attempts
        .iter()
        .map(|a| a.code.clone().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["InvalidAuthentication", "200"]);
    assert_eq!(app.fake.token_calls(), 2, "exactly one refresh");
}

#[tokio::test]
async fn a_scheduled_meeting_is_resolved_once_it_goes_live() {
    let app = TestApp::start(
        Scenario {
            schedules: vec![ScheduleSpec {
                schedule_conference_id: "sched-1".into(),
                conference_id: "live-conf-9".into(),
                host_union_id: Some("host-1".into()),
                live_after: Some(Duration::from_millis(3300)),
                ends_after: None,
                script: vec![],
                ..ScheduleSpec::default()
            }],
            ..Scenario::default()
        },
        |c| {
            format!(
                "policies:\n  - name: weekly\n    schedule_conference_id: sched-1\n    host_union_id: host-1\n    at: \"{}\"\n    retry: {{ initial_interval: 1s, maximum_interval: 1s }}\n",
                at_in(c, 300)
            )
        },
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded);
    let (last, before) = o.attempts.split_last().expect("attempts");
    assert!(!before.is_empty());
    assert!(
        before
            .iter()
            .all(|a| a.code.as_deref() == Some("meetingNotLive") && a.outcome == Some(AttemptOutcome::Retry))
    );
    assert_eq!(last.code.as_deref(), Some("200"));
    assert_eq!(last.conference_id.as_deref(), Some("live-conf-9"));
    assert_eq!(o.conference_id.as_deref(), Some("live-conf-9"));
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 1, "StartCloudRecord only once the meeting is live");
    assert_eq!(starts[0].id.as_deref(), Some("live-conf-9"));
}

#[tokio::test]
async fn a_burst_larger_than_the_workers_is_claimed_without_waiting_for_them_and_each_call_carries_its_own_policy()
 {
    // 300 meetings at one instant, 4 workers: the claims (the decision to fire) do not wait
    // for a worker, and each call, read back from the database in the workers' small batches,
    // carries its own policy's host and layout.
    const LAYOUTS: [&str; 3] = ["grid", "speech", "full_screen"];
    let app = TestApp::start_with(
        Scenario {
            unknown_conferences: dingrec::fake::UnknownConferences::Live,
            ..Scenario::default()
        },
        Arc::new(SystemClock),
        |s| {
            s.dingtalk.rate_limit = 0;
            s.scheduler.max_in_flight = 4;
        },
        |c| {
            let at = at_in(c, 1500);
            let mut y = String::from("policies:\n");
            for i in 0..300 {
                y.push_str(&format!(
                    "  - name: p{i:03}\n    conference_id: conf-{i:03}\n    host_union_id: host-{i:03}\n    \
                     at: \"{at}\"\n    layout: {}\n",
                    LAYOUTS[i % 3]
                ));
            }
            y
        },
    )
    .await;
    let rows = app.wait_final(300, HANG).await;
    assert!(
        rows.iter()
            .all(|o| o.state == OccurrenceState::Succeeded && o.attempts.len() == 1)
    );
    // Claims of 8 (one read-back, two worker pools), 32, 128 and the remaining 132: four steps at
    // most (two in the same millisecond show as one), never one per worker's call (75).
    let claimed: std::collections::BTreeSet<&str> =
        rows.iter().map(|o| o.attempts[0].started_at.as_str()).collect();
    assert!(
        claimed.len() <= 4,
        "300 claimed in at most four steps: {claimed:?}"
    );
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 300, "each meeting called once");
    let mut seen = std::collections::BTreeSet::new();
    for r in &starts {
        let id = r.id.as_deref().unwrap_or_default();
        let i: usize = id.trim_start_matches("conf-").parse().expect("conf-NNN");
        assert!(seen.insert(i), "{id} called twice");
        assert_eq!(
            r.union_id.as_deref(),
            Some(format!("host-{i:03}").as_str()),
            "{id}"
        );
        assert_eq!(r.mode.as_deref(), Some(LAYOUTS[i % 3]), "{id}");
    }
}

#[tokio::test]
async fn a_claimed_attempt_that_cannot_be_read_back_fails_alone_and_is_not_reclaimed_at_once() {
    let app = TestApp::start(
        Scenario {
            unknown_conferences: dingrec::fake::UnknownConferences::Live,
            ..Scenario::default()
        },
        |c| {
            let at = at_in(c, 3000);
            (0..3).fold(String::from("policies:\n"), |y, i| {
                y + &policy(&format!("p{i}"), &format!("conf-{i}"), &at, "")
            })
        },
    )
    .await;
    if !engine::sqlite_only(
        "a time column holding text is a SQLite file's damage; PostgreSQL's types refuse it",
    ) {
        return;
    }
    let db = app.settings.database.path.clone();
    let poll = |sql: &'static str, want: &'static str| {
        let db = db.clone();
        async move {
            let until = tokio::time::Instant::now() + HANG;
            while sqlite(&db, sql) != want {
                assert!(tokio::time::Instant::now() < until, "{sql} never gave {want}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    poll("SELECT COUNT(*) FROM occurrences WHERE state = 'scheduled'", "3").await;
    // An outside edit the schema does not catch: p1's window end is no longer a time.
    sqlite(
        &db,
        "UPDATE occurrences SET window_ends_at = 'not a time' WHERE policy_name = 'p1'",
    );
    poll(
        "SELECT COUNT(*) FROM occurrences o JOIN attempts a ON a.occurrence_id = o.id \
         WHERE (o.state = 'succeeded') OR (o.policy_name = 'p1' AND a.outcome IS NOT NULL)",
        "3",
    )
    .await;
    let mut called: Vec<String> = app
        .fake
        .start_requests()
        .into_iter()
        .filter_map(|r| r.id)
        .collect();
    called.sort();
    assert_eq!(
        called,
        ["conf-0", "conf-2"],
        "the others went out; p1 was not sent"
    );
    let p1 = sqlite(
        &db,
        "SELECT a.outcome, o.state, a.message, \
         CAST(ROUND((julianday(o.next_attempt_at) - julianday(a.finished_at)) * 86400) AS INTEGER) \
         FROM occurrences o JOIN attempts a ON a.occurrence_id = o.id WHERE o.policy_name = 'p1'",
    );
    let cols: Vec<&str> = p1.split('|').collect();
    assert_eq!(cols[..2], ["interrupted", "retry_wait"], "{p1}");
    assert!(
        cols[2].starts_with("dingrec could not read this claimed attempt back (")
            && cols[2].contains("window_ends_at 'not a time'"),
        "{p1}"
    );
    assert_eq!(cols[3], "5", "claimed again after a pause, not in a loop: {p1}");
}

#[tokio::test]
async fn two_hundred_meetings_at_once_respect_the_rate_limit_in_due_order() {
    let app = TestApp::start_with(
        Scenario {
            unknown_conferences: dingrec::fake::UnknownConferences::Live,
            ..Scenario::default()
        },
        Arc::new(SystemClock),
        |s| s.dingtalk.rate_limit = 20,
        |c| {
            let base = c.now() + TimeDelta::milliseconds(1500);
            let mut y = String::from("policies:\n");
            for i in 0..200 {
                let at =
                    (base + TimeDelta::milliseconds(i)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                y.push_str(&policy(&format!("p{i:03}"), &format!("conf-{i:03}"), &at, ""));
            }
            y
        },
    )
    .await;
    let rows = app.wait_final(200, HANG).await;
    assert!(rows.iter().all(|o| o.state == OccurrenceState::Succeeded));
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 200);
    // The limit is dingrec's promise about its sends; arrivals at the fake can bunch by the
    // fake's own scheduling on a loaded machine (the benchmark measures them on a quiet one).
    let times = app.send_times().await;
    assert_eq!(times.len(), 200);
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(in_window <= 20, "{in_window} calls sent in the second from {t}");
    }
    // Due order is the order dingrec sends in; at the fake, two calls 50 ms apart can still
    // arrive swapped when the machine is loaded.
    let ids: Vec<String> = app.sends().await.into_iter().map(|(_, id)| id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "sent in due order");
}

#[tokio::test]
async fn under_a_rate_limit_a_due_retry_is_not_held_back_by_the_rest_of_the_burst() {
    // rate_limit 5 and 40 meetings due at once: 8 s of first attempts. conf-000 answers
    // systemError once; its retry comes due a second later, while 30-odd first attempts still wait.
    let rate = 5;
    let app = TestApp::start_with(
        Scenario {
            unknown_conferences: dingrec::fake::UnknownConferences::Live,
            meetings: vec![live("conf-000", vec![step("systemError", 1)])],
            ..Scenario::default()
        },
        Arc::new(SystemClock),
        |s| s.dingtalk.rate_limit = rate,
        |c| {
            let at = (c.now() + TimeDelta::milliseconds(1500))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let retry = "    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 5 }\n";
            let mut y = String::from("policies:\n");
            for i in 0..40 {
                y.push_str(&policy(&format!("p{i:03}"), &format!("conf-{i:03}"), &at, retry));
            }
            y
        },
    )
    .await;
    let rows = app.wait_final(40, HANG).await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "{rows:#?}"
    );
    let first = TestApp::occurrence(&rows, "p000");
    let retry_due = first.attempts[0]
        .next_attempt_at
        .as_deref()
        .map(parse_t)
        .expect("the retry's due time")
        .timestamp_millis();
    // Counted in the order dingrec sent (what it controls; arrivals at a loaded fake can swap).
    let sends = app.sends().await;
    let retry_at = sends
        .iter()
        .filter(|(_, id)| id == "conf-000")
        .nth(1)
        .expect("the retry's call")
        .0;
    let first_attempts_ahead = sends
        .iter()
        .filter(|(t, id)| id != "conf-000" && *t > retry_due && *t < retry_at)
        .count();
    // At most one second of first attempts: those sent before the next claim took the retry
    // (claims wait until half the second claimed ahead is free), then it goes before everything
    // queued. Never the rest of the burst (39 before retries were claimed first).
    assert!(
        first_attempts_ahead <= rate as usize,
        "the retry waited behind {first_attempts_ahead} first attempts (one second is {rate})"
    );
    let times = app.send_times().await;
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|u| **u < t + 1000).count();
        assert!(
            in_window <= rate as usize,
            "{in_window} calls sent in the second from {t}"
        );
    }
}

#[tokio::test]
async fn down_across_a_due_time_catches_up_inside_the_window_and_misses_after_it() {
    let t0 = parse_t("2030-01-07T08:00:00Z");
    let clock = ManualClock::new(t0);
    let mut app = TestApp::start_with(
        scenario(vec![live("conf-a", vec![]), live("conf-b", vec![])]),
        Arc::new(clock.clone()),
        |_| {},
        |_| {
            format!(
                "policies:\n{}{}",
                policy("inside", "conf-a", "2030-01-07T08:10:00Z", "    window: 30m\n"),
                policy("after", "conf-b", "2030-01-07T08:05:00Z", "    window: 5m\n")
            )
        },
    )
    .await;
    // Planned while up, then down before either is due.
    let until = tokio::time::Instant::now() + HANG;
    while app.history().await.len() < 2 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
    assert!(app.fake.start_requests().is_empty());
    // Back up at 08:15: 'inside' is within its window, 'after' is not.
    clock.set(t0 + TimeDelta::minutes(15));
    app.run().await;
    let rows = app.wait_final(2, HANG).await;
    let inside = TestApp::occurrence(&rows, "inside");
    assert_eq!(
        (inside.state, inside.trigger),
        (OccurrenceState::Succeeded, Trigger::CatchUp)
    );
    let after = TestApp::occurrence(&rows, "after");
    assert_eq!(after.state, OccurrenceState::Missed);
    assert!(after.attempts.is_empty(), "never fired late");
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].id.as_deref(), Some("conf-a"));
}

#[tokio::test]
async fn a_weekly_policy_down_for_three_weeks_gets_one_catch_up_at_most() {
    // Monday 2030-01-07 09:00 UTC is the first firing.
    let t0 = parse_t("2030-01-07T08:00:00Z");
    let clock = ManualClock::new(t0);
    let mut app = TestApp::start_with(
        scenario(vec![live("conf-w", vec![])]),
        Arc::new(clock.clone()),
        |_| {},
        |_| "policies:\n  - name: weekly\n    conference_id: conf-w\n    host_union_id: host-1\n    cron: \"0 9 * * MON\"\n    window: 30m\n".into(),
    )
    .await;
    let until = tokio::time::Instant::now() + HANG;
    while app.history().await.is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.stop().await;
    // Down until Monday 2030-01-28 09:10: three Mondays later, inside that day's window.
    clock.set(parse_t("2030-01-28T09:10:00Z"));
    app.run().await;
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let rows = app.history().await;
        if rows.iter().any(|o| o.state == OccurrenceState::Succeeded) || tokio::time::Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = app.history().await;
    let fired: Vec<_> = rows.iter().filter(|o| !o.attempts.is_empty()).collect();
    assert_eq!(fired.len(), 1, "one catch-up, no backlog: {rows:#?}");
    assert_eq!(fired[0].due_at, "2030-01-28T09:00:00.000Z");
    assert_eq!(fired[0].trigger, Trigger::CatchUp);
    assert_eq!(app.fake.start_requests().len(), 1);
    // The first Monday (planned before the stop) and the ones in between (never planned) are
    // recorded as missed, none replayed.
    for due in [
        "2030-01-07T09:00:00.000Z",
        "2030-01-14T09:00:00.000Z",
        "2030-01-21T09:00:00.000Z",
    ] {
        assert!(
            rows.iter()
                .any(|o| o.due_at == due && o.state == OccurrenceState::Missed),
            "{due} missed: {rows:#?}"
        );
    }
}

#[tokio::test]
async fn a_policy_applied_while_running_is_planned_without_a_restart() {
    let app = TestApp::start(scenario(vec![]), |_| String::new()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let clock = SystemClock;
    let until = tokio::time::Instant::now() + HANG;
    apply(
        &app.store,
        &clock,
        &format!(
            "policies:\n{}",
            policy("late-addition", "conf-x", &at_in(&clock, 3_600_000), "")
        ),
    )
    .await;
    loop {
        if !app.history().await.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "never planned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_disabled_policy_loses_its_future_occurrences() {
    let app = TestApp::start(scenario(vec![]), |c| {
        format!(
            "policies:\n{}{}",
            policy("keep", "c1", &at_in(c, 3_600_000), ""),
            policy("drop", "c2", &at_in(c, 3_600_000), "")
        )
    })
    .await;
    let until = tokio::time::Instant::now() + HANG;
    while app.history().await.len() < 2 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clock = SystemClock;
    let keep_only = {
        let ps = dingrec::policy_file::parse_str(
            std::path::Path::new("t.yaml"),
            &format!(
                "policies:\n{}",
                policy("keep", "c1", &at_in(&clock, 3_600_000), "")
            ),
            &dingrec::domain::PolicyDefaults::default(),
        )
        .expect("valid");
        ps.iter()
            .map(|p| dingrec::store::PolicyRecord::from_policy(&p.policy, &p.source))
            .collect::<Vec<_>>()
    };
    app.store
        .apply_policies(&keep_only, dingrec::store::Prune::All, clock.now())
        .await
        .expect("apply --prune");
    let rows = app.history().await;
    assert_eq!(
        TestApp::occurrence(&rows, "drop").state,
        OccurrenceState::Cancelled
    );
}

#[tokio::test]
async fn the_fake_throttles_above_its_limit() {
    let f = dingrec::fake::FakeDingTalk::start(
        ([127, 0, 0, 1], 0).into(),
        Scenario {
            throttle_above: Some(5),
            unknown_conferences: dingrec::fake::UnknownConferences::Live,
            ..Scenario::default()
        },
    )
    .await
    .expect("fake");
    let c = crate::support::client(
        &crate::support::dingtalk_settings(&f.base_url()),
        Some(crate::support::internal_credentials("k", "s")),
    );
    let token = c.token().await.expect("token");
    let mut codes = Vec::new();
    for i in 0..8 {
        let id = format!("m{i}");
        let r = c
            .start_cloud_record_with(
                &token,
                &dingrec::dingtalk::StartRequest {
                    conference_id: &id,
                    union_id: "u",
                    layout: None,
                    small_window_position: None,
                },
            )
            .await;
        codes.push(
            r.err()
                .map(|e| e.code().to_owned())
                .unwrap_or_else(|| "200".into()),
        );
    }
    assert_eq!(&codes[..5], ["200"; 5]);
    assert!(
        codes[5..]
            .iter()
            .all(|c| c == "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn the_last_success_gauge_is_there_after_a_restart_before_any_new_success() {
    let mut app = TestApp::start(scenario(vec![live("conf-1", vec![])]), |c| {
        format!("policies:\n{}", policy("p", "conf-1", &at_in(c, 300), ""))
    })
    .await;
    let rows = app.wait_final(1, HANG).await;
    let finished = rows[0].attempts[0].finished_at.clone().expect("finished");
    app.stop().await;
    app.run().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = reqwest::get(format!("http://{}/metrics", app.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    let value: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dingrec_last_success_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no last-success gauge after the restart:\n{metrics}"))
        .trim()
        .parse()
        .expect("a number");
    let expected = parse_t(&finished).timestamp_millis() as f64 / 1000.0;
    assert!((value - expected).abs() < 0.002, "{value} vs {expected}");
}

async fn get(app: &TestApp, path: &str) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://{}{path}", app.http))
        .await
        .expect("http")
        .text()
        .await
        .expect("body")
}

fn lateness_count(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("dingrec_fire_lateness_seconds_count "))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test]
async fn a_claim_that_fails_to_commit_is_not_counted_in_the_fire_lateness() {
    // A trigger makes every claim's INSERT of attempt rows fail, so every claim rolls back.
    let app = TestApp::start(scenario(vec![live("conf-1", vec![])]), |_| String::new()).await;
    engine::exec(
        &app.store,
        "CREATE TRIGGER no_attempts BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'injected claim failure'); END",
        "CREATE FUNCTION no_attempts() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           RAISE EXCEPTION 'injected claim failure'; END $$; \
         CREATE TRIGGER no_attempts BEFORE INSERT ON attempts FOR EACH ROW EXECUTE FUNCTION no_attempts()",
    )
    .await;
    apply(
        &app.store,
        &SystemClock,
        &format!(
            "policies:\n{}",
            policy("p", "conf-1", &at_in(&SystemClock, 0), "")
        ),
    )
    .await;
    // The scheduler tries, and fails, to claim it again and again.
    let until = tokio::time::Instant::now() + HANG;
    while !get(&app, "/readyz").await.contains("injected claim failure") {
        assert!(tokio::time::Instant::now() < until, "no failed claim seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lateness_count(&get(&app, "/metrics").await),
        0,
        "failed claims were counted"
    );
    engine::exec(
        &app.store,
        "DROP TRIGGER no_attempts",
        "DROP TRIGGER no_attempts ON attempts",
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded);
    assert_eq!(
        lateness_count(&get(&app, "/metrics").await),
        1,
        "one first attempt, counted once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_window_passed_in_the_queue_expires_without_a_call() {
    // One worker; two meetings due at once. The first call is held by the fake while the clock
    // passes both windows: the second attempt, queued, must not be sent.
    let hold = dingrec::fake::Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_secs(2)),
    };
    let clock = ManualClock::new(parse_t("2030-01-07T08:00:00Z"));
    let app = TestApp::start_with(
        scenario(vec![live("conf-a", vec![hold]), live("conf-b", vec![])]),
        Arc::new(clock.clone()),
        |s| {
            s.scheduler.max_in_flight = 1;
            s.dingtalk.request_timeout = Duration::from_secs(20);
        },
        |c| {
            let at = at_in(c, 100);
            format!(
                "policies:\n{}{}",
                policy("a", "conf-a", &at, "    window: 5m\n"),
                policy("b", "conf-b", &at, "    window: 5m\n")
            )
        },
    )
    .await;
    clock.set(parse_t("2030-01-07T08:00:01Z"));
    let until = tokio::time::Instant::now() + HANG;
    while app.fake.start_requests().is_empty() {
        assert!(tokio::time::Instant::now() < until, "no first call");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A burst's first claim is one read-back (two rows here: the worker pool is one); wait for
    // both rows' claim: the test is about a claimed attempt whose window passes.
    loop {
        let claimed = engine::count(&app.store, "SELECT COUNT(*) FROM attempts").await;
        if claimed == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the second attempt was never claimed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    clock.set(parse_t("2030-01-07T08:10:00Z"));
    let rows = app.wait_final(2, HANG).await;
    let starts = app.fake.start_requests();
    assert_eq!(starts.len(), 1, "only the call that was in flight: {starts:?}");
    let sent = starts[0].id.clone().expect("id");
    let other = rows
        .iter()
        .find(|o| {
            o.conference_id.as_deref() != Some(sent.as_str())
                && o.attempts.len() == 1
                && o.attempts[0].http_status == Some(0)
        })
        .unwrap_or_else(|| panic!("the queued one: {rows:#?}"));
    assert_eq!(other.state, OccurrenceState::Expired);
    assert_eq!(other.attempts[0].code.as_deref(), Some("window_passed"));
    assert_eq!(other.attempts[0].outcome, Some(AttemptOutcome::Fail));
    let unsent = engine::count(
        &app.store,
        "SELECT COUNT(*) FROM audit_log WHERE code = 'window_passed' AND sent_at IS NULL AND lateness_ms IS NULL",
    )
    .await;
    assert_eq!(unsent, 1, "no call: no send time, no lateness");
}

#[tokio::test]
async fn a_disabled_or_pruned_policy_stops_retrying_at_once_and_its_occurrence_is_cancelled() {
    for how in ["enabled: false", "pruned"] {
        let (app, clock) = on_manual_clock(vec![live("busy", vec![step("systemError", 1000)])], |c| {
            format!(
                "policies:\n{}",
                policy("flaky", "busy", &at_in(c, 100), FAST_RETRY)
            )
        })
        .await;
        // Due, tried, waiting for a retry.
        clock.set(parse_t("2030-01-07T08:00:01Z"));
        let until = tokio::time::Instant::now() + HANG;
        while app
            .history()
            .await
            .first()
            .is_none_or(|o| o.state != OccurrenceState::RetryWait)
        {
            assert!(tokio::time::Instant::now() < until, "{how}: no retry_wait");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let calls = app.fake.start_requests().len();
        let yaml = match how {
            "pruned" => "policies:\n".to_owned(),
            _ => format!(
                "policies:\n{}",
                policy(
                    "flaky",
                    "busy",
                    "2030-01-07T08:00:00.100Z",
                    &format!("{FAST_RETRY}    enabled: false\n")
                )
            ),
        };
        let records: Vec<_> = if yaml.trim() == "policies:" {
            Vec::new()
        } else {
            dingrec::policy_file::parse_str(
                std::path::Path::new("t.yaml"),
                &yaml,
                &dingrec::domain::PolicyDefaults {
                    timezone: dingrec::domain::Zone::parse("UTC").expect("zone"),
                    ..dingrec::domain::PolicyDefaults::default()
                },
            )
            .expect("valid")
            .iter()
            .map(|p| dingrec::store::PolicyRecord::from_policy(&p.policy, &p.source))
            .collect()
        };
        app.store
            .apply_policies(&records, dingrec::store::Prune::All, clock.now())
            .await
            .expect("apply");
        let rows = app.history().await;
        assert_eq!(rows[0].state, OccurrenceState::Cancelled, "{how}");
        assert_eq!(
            app.store.next_due_at().await.expect("next"),
            None,
            "{how}: nothing left due"
        );
        // Time passes well beyond every retry; the scheduler runs; DingTalk hears nothing more.
        clock.set(parse_t("2030-01-07T08:20:00Z"));
        let rows = app.drive_until_final(&clock, TimeDelta::minutes(1), 1).await;
        assert_eq!(rows[0].state, OccurrenceState::Cancelled, "{how}");
        assert_eq!(
            app.fake.start_requests().len(),
            calls,
            "{how}: called after the apply"
        );
    }
}

#[tokio::test]
async fn maximum_attempts_counts_calls_made_the_reauth_retry_included() {
    let (app, clock) = on_manual_clock(
        vec![live("conf-1", vec![step("InvalidAuthentication", 1)])],
        |c| {
            format!(
                "policies:\n{}",
                policy(
                    "p",
                    "conf-1",
                    &at_in(c, 100),
                    "    retry: { maximum_attempts: 1 }\n"
                )
            )
        },
    )
    .await;
    let rows = app
        .drive_until_final(&clock, TimeDelta::milliseconds(100), 1)
        .await;
    assert_eq!(rows[0].state, OccurrenceState::Expired, "{rows:#?}");
    assert_eq!(
        app.fake.start_requests().len(),
        1,
        "maximum_attempts: 1 is one call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_closed_before_its_call_does_not_use_up_maximum_attempts() {
    // One worker; two meetings due at once; the first call is held while the daemon stops, so the
    // second attempt is closed without a call. After the restart it still gets its one call.
    let hold = dingrec::fake::Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_millis(1500)),
    };
    let clock = ManualClock::new(parse_t("2030-01-07T08:00:00Z"));
    let mut app = TestApp::start_with(
        scenario(vec![
            live("conf-a", vec![hold.clone()]),
            live("conf-b", vec![hold]),
        ]),
        Arc::new(clock.clone()),
        |s| {
            s.scheduler.max_in_flight = 1;
            s.dingtalk.request_timeout = Duration::from_secs(20);
        },
        |c| {
            let at = at_in(c, 100);
            let one = "    retry: { maximum_attempts: 1 }\n";
            format!(
                "policies:\n{}{}",
                policy("a", "conf-a", &at, one),
                policy("b", "conf-b", &at, one)
            )
        },
    )
    .await;
    clock.set(parse_t("2030-01-07T08:00:01Z"));
    let until = tokio::time::Instant::now() + HANG;
    // The first call held at the fake, the second attempt claimed (its intent row written).
    while app.fake.start_requests().is_empty()
        || app
            .history()
            .await
            .iter()
            .map(|o| o.attempts.len())
            .sum::<usize>()
            < 2
    {
        assert!(tokio::time::Instant::now() < until, "no first call");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.stop().await;
    let rows = app.history().await;
    let unsent = rows
        .iter()
        .find(|o| o.state == OccurrenceState::RetryWait)
        .unwrap_or_else(|| panic!("one closed without a call: {rows:#?}"));
    assert_eq!(unsent.attempts[0].outcome, Some(AttemptOutcome::Interrupted));
    app.run().await;
    let rows = app
        .drive_until_final(&clock, TimeDelta::milliseconds(100), 2)
        .await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "{rows:#?}"
    );
    assert_eq!(app.fake.start_requests().len(), 2);
}

/// The board meeting at 08:00:30 (window 30 min), started and succeeded; the clock at 08:00:30.
async fn board_meeting_started() -> (TestApp, ManualClock) {
    let (app, clock) = on_manual_clock(vec![live("conf-1", vec![])], |_| {
        format!(
            "policies:\n{}",
            policy("board", "conf-1", "2030-01-07T08:00:30Z", "    window: 30m\n")
        )
    })
    .await;
    let rows = app.drive_until_final(&clock, TimeDelta::seconds(10), 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded);
    (app, clock)
}

/// Apply the board policy with `extra` keys, wait until the daemon planned it again, and drive
/// whatever it would fire.
async fn edit_board(app: &TestApp, clock: &ManualClock, extra: &str) {
    apply(
        &app.store,
        clock,
        &format!(
            "policies:\n{}",
            policy("board", "conf-1", "2030-01-07T08:00:30Z", extra)
        ),
    )
    .await;
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let planned = engine::count(
            &app.store,
            "SELECT COUNT(*) FROM policies WHERE name = 'board' AND CAST(planned_until AS TEXT) <> ''",
        )
        .await;
        if planned == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "never planned again");
        app.wake();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.drive_until_final(clock, TimeDelta::seconds(10), 1).await;
}

/// One occurrence (cancelled ones aside) and one call.
async fn started_once(app: &TestApp) {
    let rows = app.history().await;
    assert_eq!(
        rows.iter()
            .filter(|o| o.state != OccurrenceState::Cancelled)
            .count(),
        1,
        "{rows:#?}"
    );
    assert_eq!(app.fake.start_requests().len(), 1, "the meeting was started once");
}

#[tokio::test]
async fn editing_a_policy_while_its_meeting_is_open_does_not_start_the_meeting_again() {
    let (app, clock) = board_meeting_started().await;
    // Five minutes into the meeting, ops add an offset: same meeting, whether its new due time
    // has passed (a catch-up) or lies ahead (08:10:30).
    clock.set(parse_t("2030-01-07T08:05:00Z"));
    for edit in [
        "    window: 30m\n    start_offset: 2m\n",
        "    window: 30m\n    start_offset: 10m\n",
        "    window: 30m\n    start_offset: 1m\n    layout: grid\n",
    ] {
        edit_board(&app, &clock, edit).await;
    }
    started_once(&app).await;
}

#[tokio::test]
async fn an_edit_after_the_clock_was_set_back_does_not_start_a_meeting_again() {
    // Found by the simulation (seed 187): the meeting fired, NTP set the clock back to before its
    // start, and an edit of start_offset planned it again as a future meeting.
    let (app, clock) = board_meeting_started().await;
    clock.set(parse_t("2030-01-07T08:00:00Z"));
    edit_board(&app, &clock, "    window: 30m\n    start_offset: 1m\n").await;
    clock.set(parse_t("2030-01-07T08:05:00Z"));
    app.drive_until_final(&clock, TimeDelta::seconds(10), 1).await;
    started_once(&app).await;
}

#[tokio::test]
async fn two_triggers_in_the_same_millisecond_make_two_manual_occurrences() {
    // Found by the simulation (seed 237): the second insert hit the unique (policy, due time).
    let clock = ManualClock::new(parse_t("2030-01-07T08:00:00Z"));
    let app = TestApp::start_with(
        scenario(vec![live("conf-1", vec![])]),
        Arc::new(clock.clone()),
        |_| {},
        |_| format!("policies:\n{}", policy("p", "conf-1", "2030-01-07T09:00:00Z", "")),
    )
    .await;
    let stored = app.store.policy_by_name("p").await.expect("db").expect("policy");
    let now = clock.now();
    let end = now + TimeDelta::minutes(30);
    let a = app
        .store
        .insert_manual(stored.id, "p", now, end, None)
        .await
        .expect("first");
    let b = app
        .store
        .insert_manual(stored.id, "p", now, end, None)
        .await
        .expect("second");
    assert_ne!(a, b);
}

#[tokio::test]
async fn the_audit_log_measures_lateness_from_the_call_not_the_claim() {
    let (app, clock) = on_manual_clock(vec![live("conf-1", vec![])], |_| {
        format!(
            "policies:\n{}",
            policy("board", "conf-1", "2030-01-07T08:00:30Z", "    window: 30m\n")
        )
    })
    .await;
    app.drive_until_final(&clock, TimeDelta::seconds(10), 1).await;
    let row = engine::rows(
        &app.store,
        "SELECT started_at, sent_at, lateness_ms, due_at FROM audit_log WHERE policy_name = 'board'",
    )
    .await;
    let text = |i: usize| row[0][i].as_str().map(str::to_owned);
    let (started, due) = (text(0).expect("started_at"), text(3).expect("due_at"));
    let (sent, lateness) = (text(1), row[0][2].as_i64());
    let sent = sent.expect("a call was sent: sent_at is set");
    assert!(sent >= started, "sent {sent} before the intent row {started}");
    let expected = (parse_t(&sent) - parse_t(&due)).num_milliseconds();
    assert_eq!(lateness, Some(expected), "lateness is sent_at − due_at");
}

#[tokio::test]
async fn the_access_token_is_fetched_before_the_due_time_not_by_the_first_call() {
    // 08:00:00 now; the meeting is due at 08:00:02, within TOKEN_AHEAD: the daemon fetches the
    // token while the clock stands still, before anything is due.
    let (app, clock) = on_manual_clock(vec![live("conf-1", vec![])], |_| {
        format!(
            "policies:\n{}",
            policy("board", "conf-1", "2030-01-07T08:00:02Z", "")
        )
    })
    .await;
    let deadline = std::time::Instant::now() + HANG;
    while app.fake.token_calls() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no token fetched ahead of the due time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.fake.starts_for("conf-1"), 0, "nothing is due yet");
    app.drive_until_final(&clock, TimeDelta::seconds(1), 1).await;
    assert_eq!(app.fake.starts_for("conf-1"), 1);
    assert_eq!(
        app.fake.token_calls(),
        1,
        "the start used the token fetched ahead"
    );
}
