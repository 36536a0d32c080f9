//! Making sure it records: checks after the start, the watch, the video, the settle after an
//! answer that leaves it open (docs/policies.md, "Verification"). End to end against the fake,
//! with the real scheduler, on a manual clock: time moves only between calls and checks.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use dingrec::clock::{Clock, ManualClock};
use dingrec::domain::{CheckKind, CheckOutcome, OccurrenceState, Trigger};
use dingrec::fake::{MeetingSpec, RecordingAction, Scenario, Silent};
use dingrec::store::OccurrenceRow;

use crate::support::app::{TestApp, parse_t};
use crate::support::{HANG, engine, live, policy, step};

/// A policy due at 08:00:30 with `verify` and `more` keys as given.
fn verified(name: &str, conf: &str, verify: &str, more: &str) -> String {
    policy(
        name,
        conf,
        "2030-01-07T08:00:30Z",
        &format!(
            "    window: 30m\n    verify: {verify}\n    retry: {{ initial_interval: 5s, maximum_interval: 20s, maximum_attempts: 5 }}\n{more}"
        ),
    )
}

const T0: &str = "2030-01-07T08:00:00Z";

async fn on_clock(meetings: Vec<MeetingSpec>, policies: String) -> (TestApp, ManualClock) {
    on_clock_with(meetings, policies, |_| {}).await
}

async fn on_clock_with(
    meetings: Vec<MeetingSpec>,
    policies: String,
    tweak: impl FnOnce(&mut dingrec::config::Settings),
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(parse_t(T0));
    let app = TestApp::start_with(
        Scenario {
            meetings,
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        tweak,
        move |_| format!("policies:\n{policies}"),
    )
    .await;
    (app, clock)
}

fn outcomes(o: &OccurrenceRow) -> Vec<(CheckKind, Option<CheckOutcome>)> {
    o.checks.iter().map(|c| (c.kind, c.outcome)).collect()
}

const STEP: TimeDelta = TimeDelta::seconds(5);

/// The one-meeting case: `board` on `conf-1` with `verify`, driven until final.
async fn board_until_final(meeting: MeetingSpec, verify: &str) -> (TestApp, OccurrenceRow) {
    let (app, clock) = on_clock(vec![meeting], verified("board", "conf-1", verify, "")).await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    let o = TestApp::occurrence(&rows, "board").clone();
    (app, o)
}

#[tokio::test]
async fn a_start_that_silently_does_not_record_is_started_again_and_then_confirmed() {
    let meeting = MeetingSpec {
        silent: Some(Silent::Once),
        ..live("conf-1", vec![])
    };
    let (app, o) = board_until_final(meeting, "{ after: 10s, checks: 2 }").await;
    let o = &o;
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert!(o.verified_at.is_some(), "confirmed by a check");
    assert_eq!(
        o.attempts.len(),
        2,
        "a second StartCloudRecord after the checks found nothing"
    );
    assert!(o.attempts.iter().all(|a| a.code.as_deref() == Some("200")));
    assert_eq!(
        outcomes(o),
        vec![
            (CheckKind::Start, Some(CheckOutcome::NotRecording)),
            (CheckKind::Start, Some(CheckOutcome::NotRecording)),
            (CheckKind::Start, Some(CheckOutcome::Recording)),
        ]
    );
    assert_eq!(app.fake.starts_for("conf-1"), 2);
    // The checks came at after and 2×after of the first start: 08:00:40 and 08:00:50.
    assert_eq!(parse_t(&o.checks[0].at), parse_t("2030-01-07T08:00:40Z"));
    assert_eq!(parse_t(&o.checks[1].at), parse_t("2030-01-07T08:00:50Z"));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"dingrec_checks_total{kind="start",outcome="not_recording"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_meeting_that_never_records_expires_with_not_recording() {
    let meeting = MeetingSpec {
        silent: Some(Silent::Always),
        ..live("conf-1", vec![])
    };
    let (app, o) = board_until_final(meeting, "{ after: 10s, checks: 1 }").await;
    let o = &o;
    assert_eq!(o.state, OccurrenceState::Expired, "{o:#?}");
    assert_eq!(o.last_code.as_deref(), Some("notRecording"));
    assert_eq!(o.attempts.len(), 5, "maximum_attempts starts, each checked once");
    assert_eq!(app.fake.starts_for("conf-1"), 5);
    assert_eq!(o.checks.len(), 5);
    assert!(o.verified_at.is_none());
    // The README's sixth audit query lists it.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme.find("-- 6. ").expect("query 6");
    let query = &readme[start..start + readme[start..].find(';').expect("end of query 6")];
    let listed: Vec<(String, String, Option<String>)> = engine::rows(
        &app.store,
        &format!("SELECT policy_name, state, last_check FROM ({query}) AS q"),
    )
    .await
    .iter()
    .map(|r| {
        let text = |i: usize| r[i].as_str().map(str::to_owned);
        (text(0).expect("policy"), text(1).expect("state"), text(2))
    })
    .collect();
    assert_eq!(
        listed,
        vec![(
            "board".to_owned(),
            "expired".to_owned(),
            Some("not_recording".to_owned())
        )]
    );
}

#[tokio::test]
async fn a_check_that_fails_is_tried_again_and_is_not_a_reason_to_start_again() {
    // One check never answered (the request timeout ends it), one answered 500.
    let meeting = MeetingSpec {
        info_script: vec![step("hang", 1), step("systemError", 1)],
        ..live("conf-1", vec![])
    };
    let (_app, o) = board_until_final(meeting, "{ after: 10s, checks: 1 }").await;
    let o = &o;
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert_eq!(o.attempts.len(), 1, "no second start");
    assert_eq!(
        outcomes(o),
        vec![
            (CheckKind::Start, Some(CheckOutcome::Error)),
            (CheckKind::Start, Some(CheckOutcome::Error)),
            (CheckKind::Start, Some(CheckOutcome::Recording)),
        ]
    );
    assert_eq!(o.checks[0].code.as_deref(), Some("timeout"));
    assert_eq!(o.checks[1].code.as_deref(), Some("systemError"));
}

#[tokio::test]
async fn a_recording_someone_else_started_counts_and_says_whose_it_is() {
    // Someone records already: DingTalk refuses our start (recordStartError); a check settles
    // it before any retry.
    let meeting = MeetingSpec {
        recording_owner: Some("someone-else".into()),
        ..live("conf-1", vec![])
    };
    let (app, clock) = on_clock(vec![meeting], verified("board", "conf-1", "{ after: 10s }", "")).await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    let o = TestApp::occurrence(&rows, "board");
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert_eq!(
        o.attempts.len(),
        1,
        "no retry of recordStartError: the check found it recording"
    );
    assert_eq!(o.attempts[0].code.as_deref(), Some("recordStartError"));
    assert_eq!(o.checks.len(), 1);
    assert_eq!(o.checks[0].outcome, Some(CheckOutcome::Recording));
    assert_eq!(o.checks[0].owner_union_id.as_deref(), Some("someone-else"));
    let owner_is_not_host = engine::count(&app.store, "SELECT owner_is_not_host FROM check_log").await;
    assert_eq!(owner_is_not_host, 1);
}

#[tokio::test]
async fn a_recording_stopped_mid_meeting_is_restarted_and_the_watch_ends_with_the_meeting() {
    let meeting = MeetingSpec {
        stop_after: Some(Duration::from_secs(5 * 60)),
        ends_after: Some(Duration::from_secs(15 * 60)),
        ..live("conf-1", vec![])
    };
    let (app, clock) = on_clock(
        vec![meeting],
        verified("board", "conf-1", "{ after: 10s, watch: 1m, video: true }", ""),
    )
    .await;
    let rows = app.drive_until_settled(&clock, TimeDelta::seconds(30), 2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let first = &rows[0];
    let restart = &rows[1];
    assert_eq!(first.state, OccurrenceState::Succeeded);
    assert_eq!(
        first.checks.last().map(|c| (c.kind, c.outcome)),
        Some((CheckKind::Watch, Some(CheckOutcome::Stopped))),
        "the watch found it stopped, and its watch ended there"
    );
    assert_eq!(restart.trigger, Trigger::Restart);
    assert_eq!(restart.restart_of, Some(first.id));
    assert_eq!(restart.state, OccurrenceState::Succeeded);
    assert!(restart.verified_at.is_some());
    assert_eq!(app.fake.starts_for("conf-1"), 2, "started again once");
    // The restart's own watch saw the meeting end, then looked up the video.
    let tail: Vec<_> = outcomes(restart).into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        vec![
            (CheckKind::Video, Some(CheckOutcome::VideoFound)),
            (CheckKind::Watch, Some(CheckOutcome::MeetingEnded)),
        ]
    );
    let video = restart.checks.last().expect("video check");
    assert_eq!(video.video_duration_ms, Some(1_800_000));
    assert_eq!(app.fake.video_calls(), 1);
}

#[tokio::test]
async fn a_paused_recording_is_reported_not_restarted_and_a_missing_video_is_no_video() {
    let meeting = MeetingSpec {
        pause_after: Some(Duration::from_secs(3 * 60)),
        ends_after: Some(Duration::from_secs(6 * 60)),
        video: false,
        ..live("conf-1", vec![])
    };
    let (app, clock) = on_clock(
        vec![meeting],
        verified("board", "conf-1", "{ after: 10s, watch: 1m, video: true }", ""),
    )
    .await;
    let rows = app.drive_until_settled(&clock, TimeDelta::seconds(30), 1).await;
    assert_eq!(rows.len(), 1, "no restart for a pause: {rows:#?}");
    let o = &rows[0];
    let seen = outcomes(o);
    assert!(
        seen.contains(&(CheckKind::Watch, Some(CheckOutcome::Paused))),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&(CheckKind::Video, Some(CheckOutcome::NoVideo)))
    );
    assert_eq!(app.fake.starts_for("conf-1"), 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"dingrec_checks_total{kind="watch",outcome="paused"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_crash_after_the_start_was_sent_is_settled_by_a_check_not_a_second_start() {
    let (mut app, clock) = on_clock(
        vec![live("conf-1", vec![])],
        verified("board", "conf-1", "{ after: 10s }", ""),
    )
    .await;
    // The call takes effect at DingTalk and is never answered; the daemon dies waiting.
    app.fake.hang_next_start(true);
    clock.set(parse_t("2030-01-07T08:00:30Z"));
    app.wake();
    let deadline = tokio::time::Instant::now() + HANG;
    while app.fake.hung_starts() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the start never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(app.crash().await);
    app.run().await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    let o = TestApp::occurrence(&rows, "board");
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert_eq!(app.fake.starts_for("conf-1"), 1, "no second StartCloudRecord");
    assert_eq!(o.attempts.len(), 1);
    assert_eq!(o.attempts[0].code.as_deref(), Some("interrupted"));
    assert_eq!(
        outcomes(o),
        vec![(CheckKind::Start, Some(CheckOutcome::Recording))]
    );
}

#[tokio::test]
async fn a_crash_between_a_checks_intent_and_its_outcome_redoes_the_check() {
    let meeting = MeetingSpec {
        info_script: vec![step("hang", 1)],
        ..live("conf-1", vec![])
    };
    // The hung check must still be in flight when the daemon dies: no request timeout first.
    let (mut app, clock) = on_clock_with(
        vec![meeting],
        verified("board", "conf-1", "{ after: 10s }", ""),
        |s| s.dingtalk.request_timeout = HANG,
    )
    .await;
    clock.set(parse_t("2030-01-07T08:00:30Z"));
    app.wake();
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let open = engine::count(&app.store, "SELECT COUNT(*) FROM checks WHERE outcome IS NULL").await;
        if open == 1 && app.fake.info_calls() == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no check in flight");
        if app
            .store
            .next_check_at()
            .await
            .expect("next")
            .is_some_and(|t| t > clock.now())
        {
            clock.set(clock.now() + TimeDelta::seconds(10));
            app.wake();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(app.crash().await);
    app.run().await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    let o = TestApp::occurrence(&rows, "board");
    assert_eq!(o.state, OccurrenceState::Succeeded, "{o:#?}");
    assert_eq!(
        outcomes(o),
        vec![
            (CheckKind::Start, Some(CheckOutcome::Error)),
            (CheckKind::Start, Some(CheckOutcome::Recording)),
        ],
        "the check in flight is closed as an error and made again"
    );
    assert_eq!(o.checks[0].code.as_deref(), Some("interrupted"));
    assert_eq!(app.fake.starts_for("conf-1"), 1);
}

#[tokio::test]
async fn the_fake_admin_api_stops_a_recording_live() {
    let (app, clock) = on_clock(
        vec![live("conf-1", vec![])],
        verified("board", "conf-1", "{ after: 10s, watch: 1m, restart: false }", ""),
    )
    .await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded);
    let url = format!(
        "{}/_fake/recording?conference_id=conf-1&action=stop",
        app.fake.base_url()
    );
    let resp = reqwest::Client::new().post(&url).send().await.expect("admin");
    assert_eq!(resp.status(), 200);
    let bad = reqwest::Client::new()
        .post(url.replace("action=stop", "action=explode"))
        .send()
        .await
        .expect("admin");
    assert_eq!(bad.status(), 400);
    assert!(app.fake.recording("conf-1", RecordingAction::End));
    let rows = app.drive_until_settled(&clock, TimeDelta::seconds(30), 1).await;
    assert_eq!(rows.len(), 1, "restart: false starts nothing");
    let seen = outcomes(&rows[0]);
    assert!(
        seen.contains(&(CheckKind::Watch, Some(CheckOutcome::MeetingEnded))),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_rate_limit_every_start_goes_before_any_check_and_no_second_holds_more_than_the_limit() {
    // 200 meetings due at once, rate_limit 20: ten seconds of starts. Each start's check comes
    // due a second after it, while later starts still wait: the checks must wait for them.
    const N: usize = 200;
    let app = TestApp::start_with(
        Scenario {
            meetings: (0..N).map(|i| live(&format!("conf-{i}"), vec![])).collect(),
            ..Scenario::default()
        },
        Arc::new(dingrec::clock::SystemClock),
        |s| s.dingtalk.rate_limit = 20,
        |c| {
            let at = (c.now() + TimeDelta::milliseconds(1500))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut y = String::from("policies:\n");
            for i in 0..N {
                y.push_str(&format!(
                    "  - name: m{i}\n    conference_id: conf-{i}\n    host_union_id: host-1\n    at: \"{at}\"\n    verify: {{ after: 1s, checks: 1 }}\n"
                ));
            }
            y
        },
    )
    .await;
    let rows = app.wait_final(N, HANG).await;
    let unconfirmed: Vec<_> = rows
        .iter()
        .filter(|o| !(o.state == OccurrenceState::Succeeded && o.verified_at.is_some()))
        .collect();
    assert!(
        unconfirmed.is_empty(),
        "every one started and confirmed: {unconfirmed:#?}"
    );
    let calls: Vec<_> = app
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/conference/"))
        .collect();
    let starts: Vec<i64> = calls.iter().filter(|r| r.is_start()).map(|r| r.at_ms).collect();
    let checks: Vec<i64> = calls
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.at_ms)
        .collect();
    assert_eq!((starts.len(), checks.len()), (N, N));
    let last_start = starts.iter().max().copied().unwrap_or_default();
    let first_check = checks.iter().min().copied().unwrap_or_default();
    assert!(
        last_start <= first_check,
        "a check arrived {} ms before the last start",
        last_start - first_check
    );
    // Starts and checks together: never more than 20 in any second at the fake.
    let mut all: Vec<i64> = calls.iter().map(|r| r.at_ms).collect();
    all.sort_unstable();
    let most = all
        .iter()
        .enumerate()
        .map(|(i, t)| all[i..].iter().take_while(|u| **u < t + 1000).count())
        .max()
        .unwrap_or(0);
    assert!(most <= 20, "{most} calls in one second");
}

#[tokio::test]
async fn disabling_a_watched_policy_ends_its_watch_without_another_call() {
    let verify = "{ after: 10s, watch: 1m }";
    let (app, clock) = on_clock(
        vec![live("conf-1", vec![])],
        verified("board", "conf-1", verify, ""),
    )
    .await;
    let rows = app.drive_until_final(&clock, STEP, 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded);
    let calls = app.fake.info_calls();
    crate::support::app::apply(
        &app.store,
        &clock,
        &format!(
            "policies:\n{}",
            verified("board", "conf-1", verify, "    enabled: false\n")
        ),
    )
    .await;
    let rows = app.drive_until_settled(&clock, TimeDelta::seconds(30), 1).await;
    let last = rows[0].checks.last().expect("the watch's last check");
    assert_eq!(
        (last.kind, last.outcome, last.code.as_deref()),
        (
            CheckKind::Watch,
            Some(CheckOutcome::Error),
            Some("policy_disabled")
        )
    );
    assert_eq!(app.fake.info_calls(), calls, "no call after the disable");
}
