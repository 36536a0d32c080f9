//! DingTalk's own auto-recording, set ahead (docs/auto-record.md): the real App against the fake,
//! whose scheduled meetings start their own recording as they go live when the setting is on
//! (or, by scenario, silently do not). The setting is made on apply and again before each
//! meeting; at the due time dingrec checks first and sends StartCloudRecord only when nothing
//! records; a refusal and two misses in a row are alerted.

use std::sync::Arc;
use std::time::Duration;

use dingrec::clock::SystemClock;
use dingrec::domain::{CheckKind, CheckOutcome, OccurrenceState};
use dingrec::fake::{FakeDingTalk, LoggedRequest, RecordingAction, Scenario, ScheduleSpec, Step};
use serde_json::Value;

use crate::support::app::{TestApp, apply, at_in};
use crate::support::{HANG, engine, ops_robot, ops_robots, wait_for};

const SCHED: &str = "sched-board";
const CONF: &str = "conf-board-live";

fn schedule(live_after: Duration) -> ScheduleSpec {
    ScheduleSpec {
        schedule_conference_id: SCHED.into(),
        conference_id: CONF.into(),
        host_union_id: Some("host-1".into()),
        creator_union_id: Some("creator-1".into()),
        live_after: Some(live_after),
        ..ScheduleSpec::default()
    }
}

fn scenario(s: ScheduleSpec) -> Scenario {
    Scenario {
        schedules: vec![s],
        robots: ops_robots(),
        ..Scenario::default()
    }
}

/// The daemon with alerts to the fake's robot.
async fn start(s: ScheduleSpec, policies: impl FnOnce(&dyn dingrec::clock::Clock) -> String) -> TestApp {
    TestApp::start_with(scenario(s), Arc::new(SystemClock), ops_robot, policies).await
}

/// The robot messages whose text holds `needle`.
fn robot_says(f: &FakeDingTalk, needle: &str) -> Vec<String> {
    f.robot_messages()
        .into_iter()
        .map(|m| m.text)
        .filter(|t| t.contains(needle))
        .collect()
}

/// A scheduled-meeting policy with `auto_record` on, due `in_ms` from now.
fn policy(at: &str, more: &str) -> String {
    format!(
        "policies:\n  - name: board\n    schedule_conference_id: {SCHED}\n    host_union_id: host-1\n    at: \"{at}\"\n    \
         layout: grid\n    retry: {{ initial_interval: 1s, maximum_interval: 1s }}\n    auto_record: true\n    \
         creator_union_id: creator-1\n{more}"
    )
}

fn settings_calls(f: &FakeDingTalk) -> Vec<LoggedRequest> {
    f.requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == "/v1.0/conference/scheduleConferences/settings")
        .collect()
}

async fn wait_settings_calls(f: &FakeDingTalk, n: usize) {
    wait_for(&format!("{n} settings call(s)"), HANG, || {
        settings_calls(f).iter().filter(|r| r.status != 0).count() >= n
    })
    .await;
}

#[tokio::test]
async fn the_setting_made_ahead_records_and_no_start_is_sent() {
    let app = start(schedule(Duration::from_millis(2500)), |c| {
        policy(&at_in(c, 1000), "")
    })
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert!(
        app.fake.start_requests().is_empty(),
        "no StartCloudRecord: DingTalk's own recording runs"
    );
    let last = o.attempts.last().expect("attempts");
    assert_eq!(last.code.as_deref(), Some("auto_recorded"));
    assert_eq!(last.conference_id.as_deref(), Some(CONF));
    // The setting: the official SDK's body, the creator as creatorUnionId, the policy's layout,
    // made before the meeting went live (it went live after the due time: the attempts before
    // it waited for it).
    let calls = settings_calls(&app.fake);
    assert_eq!(calls.len(), 1, "one settings call: {calls:#?}");
    let body: Value = serde_json::from_str(&calls[0].body).expect("json");
    assert_eq!(
        body,
        serde_json::json!({
            "creatorUnionId": "creator-1",
            "scheduleConfSettingModel": {"moziConfOpenRecordSetting": {
                "mode": "grid", "recordAutoStart": 1, "recordAutoStartType": 0}},
            "scheduleConferenceId": SCHED,
        })
    );
    // Both calls are rows in `checks`: the setting (`set`) and the due-time check.
    let kinds: Vec<(CheckKind, Option<CheckOutcome>)> =
        o.checks.iter().map(|c| (c.kind, c.outcome)).collect();
    assert!(
        kinds.contains(&(CheckKind::Settings, Some(CheckOutcome::Set))),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(CheckKind::Start, Some(CheckOutcome::AutoRecorded))),
        "{kinds:?}"
    );
    // And the quota counts the setting.
    let used = engine::rows(
        &app.store,
        "SELECT api, calls FROM api_usage WHERE api = 'schedule_settings'",
    )
    .await;
    assert_eq!(used.len(), 1, "{used:?}");
    assert_eq!(used[0][1], Value::from(1));
}

#[tokio::test]
async fn a_setting_that_silently_fails_is_covered_by_start_cloud_record_and_two_in_a_row_are_alerted() {
    let failing = ScheduleSpec {
        auto_record_fails: true,
        ..schedule(Duration::from_millis(2000))
    };
    let mut app = start(failing.clone(), |c| policy(&at_in(c, 2500), "")).await;
    let rows = app.wait_final(1, HANG).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded, "{rows:#?}");
    assert_eq!(app.fake.start_requests().len(), 1, "dingrec started it");
    let outcomes = |rows: &[dingrec::store::OccurrenceRow]| -> Vec<CheckOutcome> {
        rows.iter()
            .flat_map(|o| o.checks.iter().filter_map(|c| c.outcome))
            .filter(|o| *o == CheckOutcome::AutoRecordMissed)
            .collect()
    };
    assert_eq!(outcomes(&rows).len(), 1);
    let missed_alerts = |app: &TestApp| {
        let store = app.store.clone();
        async move {
            engine::count(
                &store,
                "SELECT COUNT(*) FROM alerts WHERE event = 'auto_record_missed'",
            )
            .await
        }
    };
    assert_eq!(missed_alerts(&app).await, 0, "one miss is not alerted");

    // The next meeting of the series (a new scenario, the policy moved to it): missed again.
    app.stop().await;
    app.fake.load(scenario(ScheduleSpec {
        conference_id: "conf-board-next".into(),
        ..failing
    }));
    let at = at_in(app.clock.as_ref(), 2500);
    apply(&app.store, app.clock.as_ref(), &policy(&at, "")).await;
    app.run().await;
    let rows = app.wait_final(2, HANG).await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "{rows:#?}"
    );
    assert_eq!(app.fake.start_requests().len(), 2);
    assert_eq!(
        settings_calls(&app.fake).len(),
        2,
        "made again for the next meeting"
    );
    assert_eq!(outcomes(&rows).len(), 2);
    assert_eq!(missed_alerts(&app).await, 1, "the second miss in a row is");
    wait_for("the robot's message", HANG, || {
        !robot_says(&app.fake, "auto-recording did not start").is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_refused_setting_is_alerted_with_its_code_and_start_cloud_record_records_alone() {
    let app = start(
        ScheduleSpec {
            creator_union_id: Some("someone-else".into()),
            ..schedule(Duration::from_millis(1500))
        },
        |c| policy(&at_in(c, 2500), ""),
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    let refused: Vec<_> = o
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Settings)
        .collect();
    assert_eq!(refused.len(), 1, "{:#?}", o.checks);
    assert_eq!(refused[0].outcome, Some(CheckOutcome::Refused));
    assert_eq!(refused[0].code.as_deref(), Some("creatorUidError"));
    // No check first: the policy is back to StartCloudRecord alone.
    assert!(
        !o.checks.iter().any(|c| matches!(
            c.outcome,
            Some(CheckOutcome::AutoRecorded | CheckOutcome::AutoRecordMissed)
        )),
        "{:#?}",
        o.checks
    );
    assert_eq!(o.attempts.last().and_then(|a| a.code.as_deref()), Some("200"));
    assert_eq!(app.fake.start_requests().len(), 1);
    let alerts = engine::rows(
        &app.store,
        "SELECT payload ->> 'text' FROM alerts WHERE event = 'auto_record_refused'",
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let text = alerts[0][0].to_string();
    assert!(text.contains("creatorUidError") && text.contains(SCHED), "{text}");
    wait_for("the robot's message", HANG, || {
        robot_says(&app.fake, "creatorUidError")
            .iter()
            .any(|t| t.contains("creator_union_id"))
    })
    .await;
}

#[tokio::test]
async fn a_setting_turned_off_in_dingtalk_is_made_again_before_the_meeting() {
    // The meeting is due in 5 s with the setting made again 3 s before it; someone turns the
    // setting off after dingrec made it at apply time. Without the refresh DingTalk would not
    // record and dingrec would have to start it.
    let app = start(schedule(Duration::from_millis(5500)), |c| {
        policy(&at_in(c, 5000), "    auto_record_refresh: 3s\n")
    })
    .await;
    wait_settings_calls(&app.fake, 1).await;
    assert!(app.fake.recording(CONF, RecordingAction::AutoRecordOff));
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    let calls = settings_calls(&app.fake);
    assert_eq!(
        calls.len(),
        2,
        "made at apply and again before the meeting: {calls:#?}"
    );
    assert!(
        app.fake.start_requests().is_empty(),
        "the restored setting recorded"
    );
    assert_eq!(
        o.attempts.last().and_then(|a| a.code.as_deref()),
        Some("auto_recorded")
    );
}

#[tokio::test]
async fn a_settings_call_that_fails_at_dingtalk_is_made_again_and_the_meeting_is_recorded_either_way() {
    // systemError once: not a refusal, made again after a minute; meanwhile the meeting (due
    // in 2 s) is checked first and started by dingrec, as nothing says the setting is on.
    let app = start(
        ScheduleSpec {
            settings_script: vec![Step {
                answer: "systemError".into(),
                status: None,
                times: 1,
                delay: None,
            }],
            ..schedule(Duration::from_millis(1000))
        },
        |c| policy(&at_in(c, 2000), ""),
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    let settings: Vec<_> = o
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Settings)
        .map(|c| (c.outcome, c.code.clone()))
        .collect();
    assert_eq!(
        settings,
        vec![(Some(CheckOutcome::Error), Some("systemError".to_owned()))]
    );
    assert_eq!(app.fake.start_requests().len(), 1, "dingrec recorded it");
    assert_eq!(
        engine::count(
            &app.store,
            "SELECT COUNT(*) FROM alerts WHERE event = 'auto_record_refused'"
        )
        .await,
        0,
        "a 5xx is not a refusal"
    );
}

#[tokio::test]
async fn a_restart_after_someone_stopped_the_recording_sends_start_cloud_record_at_once_and_counts_no_miss() {
    let app = start(schedule(Duration::from_millis(2000)), |c| {
        policy(
            &at_in(c, 1000),
            "    verify: { after: 1s, checks: 1, watch: 10s, restart: true }\n",
        )
    })
    .await;
    wait_for("DingTalk's own recording found at the due time", HANG, || {
        app.fake.recorded(CONF).is_some_and(|(_, auto)| auto)
    })
    .await;
    // Found at the due time and confirmed by the start check.
    let found = || async {
        engine::count(
            &app.store,
            "SELECT COUNT(*) FROM checks WHERE outcome IN ('auto_recorded', 'recording')",
        )
        .await
    };
    let until = tokio::time::Instant::now() + HANG;
    while found().await < 2 {
        assert!(tokio::time::Instant::now() < until, "not found and confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A participant stops it: the watch sees it and dingrec starts it again itself.
    assert!(app.fake.recording(CONF, RecordingAction::Stop));
    wait_for("the restart's StartCloudRecord", HANG, || {
        app.fake.start_requests().len() == 1
    })
    .await;
    let rows = app.wait_final(2, HANG).await;
    let restart = rows
        .iter()
        .find(|o| o.trigger == dingrec::domain::Trigger::Restart)
        .expect("a restart occurrence");
    assert_eq!(restart.state, OccurrenceState::Succeeded, "{restart:#?}");
    assert!(
        !restart.checks.iter().any(|c| matches!(
            c.outcome,
            Some(CheckOutcome::AutoRecorded | CheckOutcome::AutoRecordMissed)
        )),
        "no check first on a restart: {:#?}",
        restart.checks
    );
    assert_eq!(
        engine::count(&app.store, "SELECT auto_record_misses FROM policies").await,
        0,
        "a stopped recording is not the setting's miss"
    );
}

#[tokio::test]
async fn a_recording_the_setting_started_and_someone_stopped_before_the_check_counts_no_miss() {
    let app = start(schedule(Duration::from_millis(2000)), |c| {
        policy(&at_in(c, 1000), "    verify: { after: 5s, checks: 1 }\n")
    })
    .await;
    let found = || async {
        engine::count(
            &app.store,
            "SELECT COUNT(*) FROM checks WHERE outcome = 'auto_recorded'",
        )
        .await
    };
    let until = tokio::time::Instant::now() + HANG;
    while found().await == 0 {
        assert!(tokio::time::Instant::now() < until, "no auto_recorded check");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopped before the start check (5 s later): that check sees it stopped, and the start is
    // made again, checked first again (not recording now), by dingrec.
    assert!(app.fake.recording(CONF, RecordingAction::Stop));
    let rows = app.wait_final(1, HANG).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded, "{rows:#?}");
    assert_eq!(app.fake.start_requests().len(), 1);
    assert_eq!(
        engine::count(&app.store, "SELECT auto_record_misses FROM policies").await,
        0,
        "the setting had recorded it: someone stopped it, not a miss"
    );
}
