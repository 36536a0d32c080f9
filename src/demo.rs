//! `dingrec demo`: a self-contained tour. Starts the bundled fake DingTalk on a free loopback
//! port, writes a temporary database and sample policies whose meetings start seconds from now,
//! runs the daemon until every occurrence is final, prints the audit log. No credentials, no
//! network beyond 127.0.0.1.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::{Clock, SharedClock, SystemClock};
use crate::config::{LogSettings, Settings};
use crate::domain::OccurrenceState;
use crate::exit::{EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Failure};
use crate::fake::{FakeDingTalk, MeetingSpec, MeetingState, Scenario, ScheduleSpec, Step};
use crate::notify::Notifier;
use crate::store::HistoryFilter;

/// How long the demo may take at most.
const DEADLINE: Duration = Duration::from_secs(50);

fn meeting(id: &str, state: MeetingState, script: Vec<Step>) -> MeetingSpec {
    MeetingSpec {
        host_union_id: Some("demo-host-union-id".into()),
        state: Some(state),
        script,
        ..MeetingSpec::live(id)
    }
}

fn scenario() -> Scenario {
    Scenario {
        meetings: vec![
            meeting("conf-board-meeting", MeetingState::Live, vec![]),
            meeting("conf-all-hands", MeetingState::Live, vec![]),
            meeting(
                "conf-training-flaky",
                MeetingState::Live,
                vec![Step {
                    answer: "systemError".into(),
                    status: None,
                    times: 2,
                    delay: None,
                }],
            ),
            meeting("conf-already-ended", MeetingState::Ended, vec![]),
            // A participant stops the recording 8 s in; the watch finds it and dingrec starts
            // it again; the meeting ends at 25 s.
            MeetingSpec {
                stop_after: Some(Duration::from_secs(8)),
                ends_after: Some(Duration::from_secs(25)),
                ..meeting("conf-quarterly-review", MeetingState::Live, vec![])
            },
        ],
        schedules: vec![ScheduleSpec {
            schedule_conference_id: "sched-weekly-sync".into(),
            conference_id: "conf-weekly-sync-live".into(),
            host_union_id: Some("demo-host-union-id".into()),
            live_after: Some(Duration::from_secs(6)),
            ends_after: None,
            script: vec![],
            ..ScheduleSpec::default()
        }],
        robots: vec![crate::fake::RobotSpec {
            access_token: DEMO_ROBOT_TOKEN.into(),
            secret: Some(DEMO_ROBOT_SECRET.into()),
            ..crate::fake::RobotSpec::default()
        }],
        ..Scenario::default()
    }
}

/// The meeting nobody declared: created mid-tour, found by its `conference_created` event.
const FOUND_MEETING: &str = "conf-created-mid-tour";
/// When it is created, after the daemon started.
const FOUND_AFTER: Duration = Duration::from_secs(5);

/// The ops group's robot on the fake (made-up credentials: nothing here is real).
const DEMO_ROBOT_TOKEN: &str = "demo-robot-access-token";
const DEMO_ROBOT_SECRET: &str = "SECdemo-robot-signing-secret";

fn policies_yaml(clock: &dyn Clock) -> String {
    let at = |secs: i64| {
        (clock.now() + TimeDelta::seconds(secs))
            .with_timezone(
                &chrono::FixedOffset::east_opt(8 * 3600)
                    .unwrap_or(chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!())),
            )
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    };
    format!(
        r#"# Written by `dingrec demo`: meetings that start a few seconds from now.
policies:
  - name: board-meeting            # succeeds at once
    conference_id: conf-board-meeting
    host_union_id: demo-host-union-id
    at: "{a}"
    layout: speech
  - name: all-hands                # succeeds at once
    conference_id: conf-all-hands
    host_union_id: demo-host-union-id
    at: "{a}"
    layout: grid
    small_window_position: float_right
  - name: training-flaky           # DingTalk answers systemError twice, then the recording starts
    conference_id: conf-training-flaky
    host_union_id: demo-host-union-id
    at: "{b}"
    retry: {{ initial_interval: 1s, maximum_interval: 2s }}
  - name: already-ended            # the meeting is over: roomClosed, no retry
    conference_id: conf-already-ended
    host_union_id: demo-host-union-id
    at: "{b}"
  - name: quarterly-review         # a participant stops the recording: the watch sees it, dingrec restarts it
    conference_id: conf-quarterly-review
    host_union_id: demo-host-union-id
    at: "{a}"
    verify: {{ watch: 10s, video: true }}
  - name: weekly-sync              # a scheduled meeting that goes live a few seconds late: DingTalk's own
    schedule_conference_id: sched-weekly-sync  # auto-recording, set ahead, starts it; dingrec checks and confirms
    host_union_id: demo-host-union-id
    at: "{b}"
    retry: {{ initial_interval: 1s, maximum_interval: 2s }}
    auto_record: true
  - name: board-by-title           # no id: any meeting whose title says board, found by DingTalk's event
    match:
      title: "董事会|[Bb]oard"
    host_union_id: creator
    window: 20m
"#,
        a = at(2),
        b = at(3),
    )
}

pub async fn run(keep_database: Option<std::path::PathBuf>) -> Result<i32, Failure> {
    crate::telemetry::init(&LogSettings {
        level: "info".into(),
        ..LogSettings::default()
    });
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(EXIT_FAILURE, format!("demo: {what}: {e}"));
    let clock: SharedClock = Arc::new(SystemClock);
    let fake = FakeDingTalk::start(([127, 0, 0, 1], 0).into(), scenario())
        .await
        .map_err(|e| fail("cannot start the fake DingTalk", &e))?;
    let dir = tempfile::tempdir().map_err(|e| fail("cannot make a temporary folder", &e))?;
    let policies = dir.path().join("policies.d");
    std::fs::create_dir_all(&policies).map_err(|e| fail("cannot write policies", &e))?;
    std::fs::write(policies.join("demo.yaml"), policies_yaml(clock.as_ref()))
        .map_err(|e| fail("cannot write policies", &e))?;

    let mut settings = Settings::default();
    settings.database.path = match keep_database {
        Some(p) => {
            if p.exists() {
                return Err(Failure::new(
                    EXIT_INVALID,
                    format!("demo: {} exists; name a new file", p.display()),
                ));
            }
            p
        }
        None => dir.path().join("dingrec.db"),
    };
    settings.dingtalk.base_url = fake.base_url();
    settings.dingtalk.app_key = "demo-app-key".into();
    settings.dingtalk.app_secret = Some(SecretString::from("demo-app-secret".to_owned()));
    settings.http.listen = ([127, 0, 0, 1], 0).into();
    settings.policies.paths = vec![policies.clone()];
    settings.defaults.timezone = "Asia/Shanghai".into();
    // Every start is checked (the default), two seconds after DingTalk accepted it.
    settings.defaults.verify = Some(crate::domain::Verify {
        after: Duration::from_secs(2),
        ..crate::domain::Verify::default()
    });
    // Failures go to the ops team's DingTalk group, through its robot (on the fake).
    settings.alerts.destinations.insert(
        "ops-group".into(),
        crate::config::Destination {
            kind: crate::config::DestinationType::DingtalkRobot,
            url: format!("{}/robot/send", fake.base_url()),
            access_token_file: Default::default(),
            access_token: Some(SecretString::from(DEMO_ROBOT_TOKEN.to_owned())),
            secret_file: Default::default(),
            secret: Some(SecretString::from(DEMO_ROBOT_SECRET.to_owned())),
            at_mobiles: vec![],
        },
    );
    settings.alerts.default = vec!["ops-group".into()];
    // DingTalk's meeting events, over Stream mode (the fake's gateway).
    settings.dingtalk.stream.enabled = true;

    println!(
        "dingrec demo: fake DingTalk at {}, database {}",
        fake.base_url(),
        settings.database.path.display()
    );
    println!(
        "Six meetings start in 2-3 seconds, each start checked 2 s later; a participant stops one recording and\n\
         dingrec starts it again; 5 s in, someone creates a board meeting nobody declared, and DingTalk's event\n\
         finds it. Watch the log below (about 30 s); the audit log follows.\n"
    );

    let db = settings.database.clone();
    let app = App::build(settings, None, clock.clone(), Notifier::disabled())
        .await
        .map_err(|e| fail("cannot start", &e))?;
    println!(
        "The status page, while the demo runs: http://{}/\n",
        app.http_addr()
    );
    let store = app.store.clone();
    let cancel = CancellationToken::new();
    let (_reload_tx, reload_rx) = mpsc::channel(1);
    let running = tokio::spawn(app.run_until_stopped(cancel.clone(), reload_rx));

    let started = tokio::time::Instant::now();
    let mut finished = false;
    let mut created = false;
    while started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !created && started.elapsed() >= FOUND_AFTER && fake.stream().connections() > 0 {
            created = true;
            let event_id = fake.push_event(&crate::fake::EventSpec {
                title: Some("Q4 董事会 (board meeting, created just now)".into()),
                creator_id: Some("demo-host-union-id".into()),
                ..crate::fake::EventSpec::created(FOUND_MEETING)
            });
            println!(
                "\n>>> someone creates \"Q4 董事会\" ({FOUND_MEETING}); DingTalk pushes its event {event_id}\n"
            );
        }
        let rows = store
            .history(&HistoryFilter::default())
            .await
            .map_err(|e| fail("database", &e))?;
        let checks_pending = store.checks_pending().await.map_err(|e| fail("database", &e))?;
        let alerts = store.alerts_pending().await.map_err(|e| fail("database", &e))?;
        if rows.len() >= 8
            && rows.iter().all(|o| !o.state.is_live())
            && !checks_pending
            && alerts.pending == 0
        {
            finished = true;
            break;
        }
    }
    cancel.cancel();
    match running.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return Err(fail("the daemon failed", &why)),
        Err(e) => return Err(fail("the daemon failed", &e)),
    }

    let store = crate::store::Store::open(&db)
        .await
        .map_err(|e| fail("database", &e))?;
    let rows = store
        .history(&HistoryFilter::default())
        .await
        .map_err(|e| fail("database", &e))?;
    store.close().await;
    println!("\nAudit log (dingrec history):\n");
    print!("{}", crate::output::render_history(&rows, false));
    let count = |s: OccurrenceState| rows.iter().filter(|o| o.state == s).count();
    println!(
        "\n{} occurrences: {} succeeded ({} confirmed recording by a check), {} failed, {} expired, {} missed; {} restarted after a participant stopped the recording; {} found by DingTalk's event; {} recorded by DingTalk's own auto-record setting, which dingrec set ahead and checked. DingTalk (the fake) saw {} StartCloudRecord calls and {} checks.",
        rows.len(),
        count(OccurrenceState::Succeeded),
        rows.iter().filter(|o| o.verified_at.is_some()).count(),
        count(OccurrenceState::Failed),
        count(OccurrenceState::Expired),
        count(OccurrenceState::Missed),
        rows.iter()
            .filter(|o| o.trigger == crate::domain::Trigger::Restart)
            .count(),
        rows.iter()
            .filter(|o| o.trigger == crate::domain::Trigger::Event)
            .count(),
        rows.iter()
            .filter(|o| o
                .checks
                .iter()
                .any(|c| c.outcome == Some(crate::domain::CheckOutcome::AutoRecorded)))
            .count(),
        fake.start_requests().len(),
        fake.info_calls() + fake.video_calls()
    );
    let messages = fake.robot_messages();
    let shown: Vec<_> = messages
        .iter()
        .filter(|m| m.errcode == 0 && !m.duplicate)
        .collect();
    println!(
        "\nThe ops group's DingTalk chat got {} alert message(s) from dingrec's robot:",
        shown.len()
    );
    for m in shown {
        println!("\n  ┌ {}", m.title);
        for line in m.text.lines() {
            println!("  │ {line}");
        }
    }
    println!();
    if !finished {
        return Err(Failure::new(
            EXIT_FAILURE,
            "demo: not every occurrence was final in time",
        ));
    }
    println!("Every recording that could start did; the one that could not says why (roomClosed).");
    Ok(EXIT_OK)
}
