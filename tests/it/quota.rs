//! DingTalk's monthly quota (docs/quota.md): every counted call in `api_usage`, equal to what the
//! fake (counting as DingTalk does) saw; the month in `Asia/Shanghai`; the reserve; one alert
//! when the quota runs out; the forecast against a month that really happens; `plan`'s cost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use dingrec::clock::{Clock, ManualClock};
use dingrec::config::Settings;
use dingrec::domain::OccurrenceState;
use dingrec::domain::quota::{Api, Calls, month_of};
use dingrec::fake::{Scenario, ScheduleSpec};
use dingrec::scheduler::quota::{planned_cost, stored_policies, token_life, view};

use crate::support::app::{TestApp, parse_t};
use crate::support::daemon::{cli, write_config};
use crate::support::{HANG, engine, live, policy, step};

const WINDOW_AND_RETRY: &str =
    "    window: 30m\n    retry: { initial_interval: 5s, maximum_interval: 20s, maximum_attempts: 5 }\n";

const STEP: TimeDelta = TimeDelta::seconds(5);

async fn on_clock(
    t0: &str,
    scenario: Scenario,
    tweak: impl FnOnce(&mut Settings),
    policies: String,
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(parse_t(t0));
    let app = TestApp::start_with(scenario, Arc::new(clock.clone()), tweak, move |_| {
        format!("policies:\n{policies}")
    })
    .await;
    (app, clock)
}

/// The `quota` alerts raised so far: their text.
async fn quota_alerts(app: &TestApp) -> Vec<String> {
    engine::rows(
        &app.store,
        "SELECT payload ->> 'text' FROM alerts WHERE event = 'quota' ORDER BY id",
    )
    .await
    .into_iter()
    .map(|r| r[0].as_str().expect("text").to_owned())
    .collect()
}

/// `api_usage`, all days together, by API.
async fn counted(app: &TestApp) -> BTreeMap<String, u64> {
    engine::rows(
        &app.store,
        "SELECT api, CAST(SUM(calls) AS BIGINT) FROM api_usage GROUP BY api",
    )
    .await
    .into_iter()
    .map(|r| {
        let n = r[1].as_u64().expect("count");
        (r[0].as_str().expect("api").to_owned(), n)
    })
    .collect()
}

fn fake_counted(app: &TestApp) -> BTreeMap<String, u64> {
    app.fake
        .usage()
        .into_iter()
        .map(|(a, n)| (a.as_str().to_owned(), n))
        .collect()
}

#[tokio::test]
async fn the_count_is_what_dingtalk_counted_through_retries_throttling_and_token_expiry() {
    let scenario = Scenario {
        meetings: vec![
            live("conf-retry", vec![step("systemError", 1)]),
            live(
                "conf-throttled",
                vec![step("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", 2)],
            ),
            live("conf-expired", vec![]),
        ],
        schedules: vec![ScheduleSpec {
            schedule_conference_id: "sched-1".into(),
            conference_id: "conf-sched".into(),
            host_union_id: None,
            live_after: None,
            ends_after: None,
            script: vec![],
            ..ScheduleSpec::default()
        }],
        ..Scenario::default()
    };
    let verify = "    verify: { after: 10s, checks: 2 }\n";
    let mut policies = policy(
        "retry",
        "conf-retry",
        "2030-01-07T08:00:30Z",
        &[WINDOW_AND_RETRY, verify].concat(),
    );
    policies.push_str(&policy(
        "throttled",
        "conf-throttled",
        "2030-01-07T08:00:30Z",
        &[WINDOW_AND_RETRY, ""].concat(),
    ));
    policies.push_str(
        "  - name: scheduled\n    schedule_conference_id: sched-1\n    host_union_id: host-1\n    at: \"2030-01-07T08:00:30Z\"\n    window: 30m\n",
    );
    let (mut app, clock) = on_clock("2030-01-07T08:00:00Z", scenario, |_| {}, policies).await;
    let rows = app.drive_until_settled(&clock, STEP, 3).await;
    assert_eq!(rows.len(), 3);
    // The token runs out before the next meeting: its first call is refused (and counted), a
    // new token is fetched (counted), and the start is made again.
    app.fake.expire_tokens();
    crate::support::app::apply(
        &app.store,
        &clock,
        &format!(
            "policies:\n{}",
            policy(
                "expired",
                "conf-expired",
                "2030-01-07T08:10:00Z",
                &[WINDOW_AND_RETRY, verify].concat()
            )
        ),
    )
    .await;
    app.wake();
    let rows = app.drive_until_settled(&clock, STEP, 4).await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "{rows:#?}"
    );
    assert!(app.stop().await, "clean stop");
    let ours = counted(&app).await;
    let theirs = fake_counted(&app);
    assert_eq!(ours, theirs, "dingrec's count is DingTalk's");
    // Every API that was called is there, and the throttled calls are not.
    assert_eq!(
        theirs.get("start_cloud_record"),
        Some(&6),
        "retry 2 + throttled 1 + expired 2 + scheduled 1: {theirs:?}"
    );
    assert_eq!(theirs.get("schedule_conference"), Some(&1));
    assert!(theirs.get("token").is_some_and(|n| *n >= 2), "{theirs:?}");
    assert!(
        theirs.get("conference_info").is_some_and(|n| *n >= 2),
        "{theirs:?}"
    );
    let throttled = app
        .fake
        .start_requests()
        .iter()
        .filter(|r| {
            r.code
                .as_deref()
                .is_some_and(|c| c.starts_with("Forbidden.AccessDenied.QpsLimit"))
        })
        .count();
    assert_eq!(
        throttled, 2,
        "the throttled calls were made, and left out of both counts"
    );
}

#[tokio::test]
async fn a_crash_between_a_call_and_its_outcome_leaves_the_count_right() {
    let (mut app, clock) = on_clock(
        "2030-01-07T08:00:00Z",
        Scenario {
            meetings: vec![live("conf-1", vec![])],
            ..Scenario::default()
        },
        |_| {},
        policy(
            "board",
            "conf-1",
            "2030-01-07T08:00:30Z",
            &[WINDOW_AND_RETRY, "    verify: { after: 10s, checks: 2 }\n"].concat(),
        ),
    )
    .await;
    app.fake.hang_next_start(true);
    clock.set(parse_t("2030-01-07T08:00:30Z"));
    app.wake();
    let until = tokio::time::Instant::now() + HANG;
    while app.fake.hung_starts() == 0 {
        assert!(
            tokio::time::Instant::now() < until,
            "the start never reached the fake"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // DingTalk took the call (and counted it); dingrec dies before it hears back.
    assert!(app.crash().await);
    app.fake.hang_next_start(false);
    app.run().await;
    let rows = app.drive_until_settled(&clock, STEP, 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded, "{rows:#?}");
    assert!(app.stop().await);
    assert_eq!(counted(&app).await, fake_counted(&app));
    assert_eq!(
        fake_counted(&app).get("start_cloud_record"),
        Some(&1),
        "the settle check saw the recording: no second start"
    );
}

#[tokio::test]
async fn the_month_turns_at_midnight_in_shanghai() {
    // 16:00 UTC on the last day of January is midnight of 1 February in Asia/Shanghai.
    let mut policies = policy(
        "january",
        "conf-1",
        "2030-01-31T15:59:50Z",
        &[WINDOW_AND_RETRY, ""].concat(),
    );
    policies.push_str(&policy(
        "february",
        "conf-2",
        "2030-01-31T16:00:10Z",
        &[WINDOW_AND_RETRY, ""].concat(),
    ));
    let (mut app, clock) = on_clock(
        "2030-01-31T15:59:40Z",
        Scenario {
            meetings: vec![live("conf-1", vec![]), live("conf-2", vec![])],
            // DingTalk's limit is the month's too: the second month starts from zero.
            monthly_quota: Some(2),
            ..Scenario::default()
        },
        |s| s.dingtalk.monthly_quota = 2,
        policies,
    )
    .await;
    let rows = app.drive_until_final(&clock, STEP, 2).await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "{rows:#?}"
    );
    assert!(app.stop().await);
    let days: Vec<(String, String, i64)> = engine::rows(
        &app.store,
        "SELECT CAST(day AS TEXT), api, calls FROM api_usage ORDER BY day, api",
    )
    .await
    .into_iter()
    .map(|r| {
        let text = |i: usize| r[i].as_str().expect("text").to_owned();
        (text(0), text(1), r[2].as_i64().expect("calls"))
    })
    .collect();
    let starts: Vec<&str> = days
        .iter()
        .filter(|(_, api, _)| api == "start_cloud_record")
        .map(|(d, _, _)| d.as_str())
        .collect();
    assert_eq!(starts, vec!["2030-01-31", "2030-02-01"], "{days:?}");
    let tz = chrono_tz::Asia::Shanghai;
    let feb = month_of(parse_t("2030-01-31T16:00:00Z"), tz).expect("month");
    assert_eq!(feb.label, "2030-02");
    let usage = app.store.usage(&feb, false).await.expect("usage");
    assert_eq!(usage.by_api.get(&Api::StartCloudRecord), Some(&1));
}

#[tokio::test]
async fn inside_the_reserve_watch_checks_stop_and_starts_go_on() {
    let (mut app, clock) = on_clock(
        "2030-01-07T08:00:00Z",
        Scenario {
            meetings: vec![live("conf-1", vec![])],
            ..Scenario::default()
        },
        |s| {
            s.dingtalk.monthly_quota = 100;
            s.dingtalk.quota_reserve = 0.1;
        },
        policy(
            "board",
            "conf-1",
            "2030-01-07T08:00:30Z",
            &[
                WINDOW_AND_RETRY,
                "    verify: { after: 10s, checks: 2, watch: 1m, video: true }\n",
            ]
            .concat(),
        ),
    )
    .await;
    // 95 of 100 calls spent this month (in this test's month, by the manual clock).
    let mut spent = Calls::default();
    spent.add(Api::StartCloudRecord, 95);
    app.store.add_usage(&spent, clock.now()).await.expect("spent");
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let ready = app.readyz().await;
        if ready["quota"]["optional_calls_stopped"] == serde_json::json!(true) {
            assert_eq!(ready["quota"]["used"], serde_json::json!(95));
            assert_eq!(ready["quota"]["limit"], serde_json::json!(100));
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the budget never stopped optional calls: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = app.drive_until_settled(&clock, STEP, 1).await;
    let o = &rows[0];
    assert_eq!(
        o.state,
        OccurrenceState::Succeeded,
        "the start and its check went on: {o:#?}"
    );
    assert_eq!(app.fake.start_requests().len(), 1);
    assert_eq!(app.fake.info_calls(), 1, "the start check only: no watch check");
    assert_eq!(app.fake.video_calls(), 0, "no video look-up");
    let watch = o
        .checks
        .iter()
        .find(|c| c.kind == dingrec::domain::CheckKind::Watch)
        .expect("the watch check's row");
    assert_eq!(watch.code.as_deref(), Some("quota_reserve"), "{watch:#?}");
    let metrics = app.metrics().await;
    assert!(metrics.contains("dingrec_quota_used_ratio 0.9"), "{metrics}");
    assert!(
        metrics.contains("dingrec_dingtalk_calls_total{api=\"start_cloud_record\"} 1"),
        "{metrics}"
    );
    assert!(app.stop().await);
}

#[tokio::test]
async fn a_spent_quota_fails_the_meetings_with_its_code_and_raises_one_alert() {
    let mut policies = String::new();
    for i in 0..3 {
        policies.push_str(&policy(
            &format!("board-{i}"),
            &format!("conf-{i}"),
            "2030-01-07T08:00:30Z",
            &[WINDOW_AND_RETRY, ""].concat(),
        ));
    }
    let (mut app, clock) = on_clock(
        "2030-01-07T08:00:00Z",
        Scenario {
            meetings: (0..3).map(|i| live(&format!("conf-{i}"), vec![])).collect(),
            monthly_quota: Some(0),
            robots: crate::support::ops_robots(),
            ..Scenario::default()
        },
        crate::support::ops_robot,
        policies,
    )
    .await;
    let rows = app.drive_until_final(&clock, STEP, 3).await;
    for o in &rows {
        assert_eq!(o.state, OccurrenceState::Failed, "{o:#?}");
        assert_eq!(
            o.last_code.as_deref(),
            Some("Forbidden.AccessDenied.ApiCountLimitForOrg")
        );
    }
    let until = tokio::time::Instant::now() + HANG;
    let messages = loop {
        let m = app.fake.robot_messages();
        if !m.is_empty() {
            break m;
        }
        assert!(tokio::time::Instant::now() < until, "no quota alert arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let raised: Vec<(String,)> = engine::rows(&app.store, "SELECT event FROM alerts ORDER BY id")
        .await
        .into_iter()
        .map(|r| (r[0].as_str().expect("event").to_owned(),))
        .collect();
    assert_eq!(
        raised,
        vec![("quota".to_owned(),)],
        "one alert for the month, none per meeting"
    );
    let text = serde_json::to_string(&messages[0]).expect("message");
    assert!(text.contains("ApiCountLimitForOrg"), "{text}");
    assert!(app.stop().await);
    // A restart in the same month does not say it again.
    app.run().await;
    assert!(app.stop().await);
    let n = engine::count(&app.store, "SELECT COUNT(*) FROM alerts").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn the_forecast_passing_80_and_the_use_passing_90_percent_are_each_said_once() {
    // A daily meeting with a watch every minute: about 63 calls a day, far more than the month's
    // 100 leave room for.
    let (mut app, clock) = on_clock(
        "2030-01-07T08:00:00Z",
        Scenario {
            robots: crate::support::ops_robots(),
            ..Scenario::default()
        },
        |s| {
            crate::support::ops_robot(s);
            s.dingtalk.monthly_quota = 1000;
        },
        "  - name: daily\n    conference_id: conf-1\n    host_union_id: host-1\n    cron: \"0 9 * * *\"\n    verify: { after: 15s, checks: 2, watch: 1m }\n".to_owned(),
    )
    .await;
    let until = tokio::time::Instant::now() + HANG;
    while quota_alerts(&app).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "no forecast alert: {}",
            app.readyz().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = quota_alerts(&app).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].starts_with("the forecast for 2030-01 is "), "{first:?}");
    // 910 of 1,000 used: the second alert, once.
    let mut spent = Calls::default();
    spent.add(Api::ConferenceInfo, 910);
    app.store.add_usage(&spent, clock.now()).await.expect("spent");
    while quota_alerts(&app).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "no use alert: {}",
            app.readyz().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let both = quota_alerts(&app).await;
    assert!(
        both[1].starts_with("910 of the 1000 DingTalk API calls of 2030-01 are used (91 %)"),
        "{both:?}"
    );
    let metrics = app.metrics().await;
    assert!(metrics.contains("dingrec_quota_used_ratio 0.91"), "{metrics}");
    assert!(metrics.contains("dingrec_quota_forecast_ratio "), "{metrics}");
    // Neither is said again, after a restart either.
    assert!(app.stop().await);
    app.run().await;
    let ready_until = tokio::time::Instant::now() + HANG;
    while app.readyz().await["quota"].is_null() {
        assert!(tokio::time::Instant::now() < ready_until, "no quota in /readyz");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.stop().await);
    assert_eq!(quota_alerts(&app).await.len(), 2);
}

#[tokio::test]
async fn the_forecast_on_the_first_of_the_month_is_what_the_month_then_used() {
    // A daily 09:00 (Asia/Shanghai) meeting with a start check, through all of March 2030.
    let t0 = "2030-02-28T16:00:00Z";
    let policy = "  - name: daily\n    conference_id: conf-1\n    host_union_id: host-1\n    cron: \"0 9 * * *\"\n    timezone: Asia/Shanghai\n    window: 30m\n    verify: { after: 15s, checks: 2 }\n".to_owned();
    let (mut app, clock) = on_clock(
        t0,
        Scenario {
            meetings: vec![live("conf-1", vec![])],
            ..Scenario::default()
        },
        |_| {},
        policy,
    )
    .await;
    let quota = app.settings.dingtalk.quota().expect("quota");
    let life = token_life(app.settings.dingtalk.token_refresh_margin);
    let at_start = view(&app.store, true, &quota, life, clock.now())
        .await
        .expect("forecast");
    assert_eq!(at_start.month.label, "2030-03");
    for day in 0..31 {
        let due = parse_t(t0) + TimeDelta::hours(9) + TimeDelta::days(day);
        clock.set(due);
        app.wake();
        succeeded_on(&app, &clock, due).await;
    }
    assert!(app.stop().await);
    let at_end = view(&app.store, false, &quota, life, parse_t("2030-03-31T15:59:00Z"))
        .await
        .expect("used");
    assert_eq!(at_end.month.label, "2030-03");
    let (forecast, used) = (at_start.forecast as f64, at_end.used as f64);
    assert!(used >= 31.0 * 2.0, "a start and a check a day: {at_end:?}");
    assert!(
        (forecast - used).abs() <= used * 0.1,
        "forecast {forecast} on the 1st, {used} used: {at_end:?}"
    );
}

/// Drive the clock (5 s at a time, while nothing is in flight) until the occurrence due at `due`
/// has succeeded and its checks are done.
async fn succeeded_on(app: &TestApp, clock: &ManualClock, due: chrono::DateTime<chrono::Utc>) {
    let due_s = dingrec::domain::time::fmt_utc(due);
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let row = engine::rows(
            &app.store,
            &format!(
                "SELECT (SELECT state FROM occurrences WHERE due_at = '{due_s}' AND next_check_at IS NULL), \
                 (SELECT COUNT(*) FROM checks WHERE outcome IS NULL) + (SELECT COUNT(*) FROM occurrences WHERE state = 'running')"
            ),
        )
        .await;
        let (state, busy) = (
            row[0][0].as_str().map(str::to_owned),
            row[0][1].as_i64().expect("busy"),
        );
        if state.as_deref() == Some("succeeded") {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "{due_s}: {state:?}");
        if busy == 0 {
            clock.set(clock.now() + STEP);
        }
        app.wake();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn plan_shows_what_a_weekly_policy_and_a_watch_cost_a_month() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let cost_of = |target: &str, verify: &str| -> i64 {
        let files = tempfile::tempdir().expect("tmp");
        std::fs::write(
            files.path().join("weekly.yaml"),
            format!(
                "policies:\n  - name: weekly\n    {target}\n    host_union_id: host-1\n    cron: \"0 9 * * 1\"\n    verify: {verify}\n"
            ),
        )
        .expect("write");
        let out = cli(&config, &["plan", files.path().to_str().expect("utf-8")])
            .output()
            .expect("plan");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(3), "changes: {stdout}");
        let line = stdout
            .lines()
            .find(|l| l.starts_with("DingTalk calls per month: "))
            .unwrap_or_else(|| panic!("no cost line: {stdout}"));
        assert!(line.ends_with("of 5000)"), "{line}");
        line["DingTalk calls per month: ".len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let cost = |verify: &str| cost_of("conference_id: conf-1", verify);
    let weekly = cost("false");
    // Four or five Mondays in 30 days; each a start and a token fetch (a week apart, the token
    // has long run out).
    assert!([8, 10].contains(&weekly), "{weekly}");
    let watched = cost("{ after: 15s, checks: 2, watch: 1m }");
    // Plus a start check and 60 watch checks over the hour each meeting is assumed to last.
    let firings = weekly / 2;
    assert_eq!(watched - weekly, firings * 61, "{weekly} → {watched}");
    // A scheduled meeting adds its look-up; `auto_record` the setting made before each meeting
    // and the check before the start (the start itself is kept: it is the fallback).
    let scheduled = cost_of("schedule_conference_id: sched-1", "false");
    assert_eq!(scheduled - weekly, firings, "{weekly} → {scheduled}");
    let auto = cost_of("schedule_conference_id: sched-1\n    auto_record: true", "false");
    assert_eq!(auto - scheduled, firings * 2, "{scheduled} → {auto}");
}

#[test]
fn dingrec_quota_shows_the_month_in_json_and_as_a_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    // Before anything was applied there is nothing to read: said, not created (on PostgreSQL:
    // the server's database is given no schema by a read).
    let out = cli(&config, &["quota"]).output().expect("quota");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was applied yet"));
    assert!(!dir.path().join("dingrec.db").exists());
    crate::support::daemon::write_policies(
        dir.path(),
        "daily.yaml",
        "  - name: daily\n    conference_id: conf-1\n    host_union_id: host-1\n    cron: \"0 9 * * *\"\n",
    );
    crate::support::daemon::apply_dir(&config, dir.path());
    let out = cli(&config, &["quota", "--format", "json"])
        .output()
        .expect("quota");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["limit"], serde_json::json!(5000));
    assert_eq!(v["used"], serde_json::json!(0));
    let keys: Vec<&str> = v["by_api"]
        .as_object()
        .expect("by_api")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "cloud_record_videos",
            "conference_info",
            "org_conferences",
            "schedule_conference",
            "schedule_settings",
            "start_cloud_record",
            "stop_cloud_record",
            "token"
        ]
    );
    let month = v["month"].as_str().expect("month");
    assert_eq!(month.len(), 7, "{month}");
    // The daily meeting's firings left this month (none after 09:00 on its last day): a start
    // and a token fetch each.
    let forecast = v["forecast"].as_u64().expect("forecast");
    assert!(forecast <= 62 && forecast.is_multiple_of(2), "{v}");
    let ratio = v["forecast_ratio"].as_f64().expect("ratio");
    assert!((ratio - forecast as f64 / 5000.0).abs() < 0.001, "{v}");
    let out = cli(&config, &["quota"]).output().expect("quota");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with(&format!(
            "DingTalk API calls in {month} (Asia/Shanghai): limit 5000 calls"
        )),
        "{table}"
    );
    assert!(table.contains("start_cloud_record   0"), "{table}");
    assert!(table.contains(&format!("forecast: {forecast} (")), "{table}");
}

#[tokio::test]
async fn the_forecast_read_a_page_at_a_time_counts_every_policy_once() {
    // 2,500 policies: more than two of the forecast's pages (it never holds every policy at
    // once). Read a page at a time, the forecast is what the same policies read at once cost;
    // 500 instants, each shared by policies on different pages, need their tokens once.
    let base = parse_t("2030-03-03T00:00:00Z");
    let policies: String = (0..2500)
        .map(|i| {
            let at = base + TimeDelta::hours(i64::from(i % 500));
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            policy(
                &format!("p{i:04}"),
                &format!("conf-{i}"),
                &at,
                &[WINDOW_AND_RETRY, ""].concat(),
            )
        })
        .collect();
    let (mut app, clock) = on_clock("2030-03-02T00:00:00Z", Scenario::default(), |_| {}, policies).await;
    let quota = app.settings.dingtalk.quota().expect("quota");
    let life = token_life(app.settings.dingtalk.token_refresh_margin);
    let now = clock.now();
    let paged = view(&app.store, true, &quota, life, now).await.expect("forecast");
    let all = stored_policies(&app.store).await.expect("policies");
    assert_eq!(all.len(), 2500);
    let month = month_of(now, quota.timezone).expect("month");
    let observed = app.store.usage(&month, true).await.expect("usage").observed;
    let at_once = planned_cost(&all, now, month.end, &observed, life);
    assert!(
        at_once >= 2500,
        "each one-off costs its start at least: {at_once}"
    );
    assert_eq!(paged.forecast, paged.used + at_once);
    assert!(app.stop().await);
}
