//! Alerts (docs/alerts.md): the outbox written with the state change, a DingTalk group robot on
//! the fake (signature, errcodes, 20 a minute, msgUuid), a webhook checked by Python's hmac, the
//! CLI's `alerts test`, a crash mid-send, and no secret anywhere it should not be.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use dingrec::clock::{Clock, ManualClock, SystemClock};
use dingrec::config::{Destination, DestinationType, Settings};
use dingrec::domain::{AlertEvent, AlertState, OccurrenceState};
use dingrec::fake::{FakeDingTalk, RobotMessage, RobotSpec, Scenario};
use dingrec::store::AlertRow;
use secrecy::SecretString;

use crate::support::app::{TestApp, parse_t};
use crate::support::daemon::{Daemon, cli, write_config, write_policies};
use crate::support::{HANG, live, sqlite, step};

const T0: &str = "2030-01-07T08:00:00Z";
const TOKEN: &str = "robot-token-7f3a";
const SECRET: &str = "SECrobot-secret-91bd";

fn robot(script: Vec<i64>, delay: Option<Duration>) -> RobotSpec {
    RobotSpec {
        access_token: TOKEN.into(),
        secret: Some(SECRET.into()),
        script,
        delay,
    }
}

/// Settings with one robot destination `ops` on the fake, the default route.
fn with_robot(secret: &str) -> impl FnOnce(&mut Settings) {
    let secret = secret.to_owned();
    move |s: &mut Settings| {
        let url = format!("{}/robot/send", s.dingtalk.base_url);
        s.alerts.destinations.insert(
            "ops".into(),
            Destination {
                kind: DestinationType::DingtalkRobot,
                url,
                access_token_file: Default::default(),
                access_token: Some(SecretString::from(TOKEN.to_owned())),
                secret_file: Default::default(),
                secret: Some(SecretString::from(secret)),
                at_mobiles: vec!["13800000000".into()],
            },
        );
        s.alerts.default = vec!["ops".into()];
    }
}

/// `n` policies due at 08:00:30 on meetings that refuse: the host is not theirs.
fn refused_policies(n: usize) -> String {
    let mut y = String::from("policies:\n");
    for i in 0..n {
        y.push_str(&format!(
            "  - name: board-{i:02}\n    conference_id: conf-{i:02}\n    host_union_id: host-1\n    at: \"2030-01-07T08:00:30Z\"\n    window: 30m\n"
        ));
    }
    y
}

fn refusing_meetings(n: usize) -> Vec<dingrec::fake::MeetingSpec> {
    (0..n)
        .map(|i| {
            live(
                &format!("conf-{i:02}"),
                vec![step("recordStartPermissionError", 1)],
            )
        })
        .collect()
}

async fn start(
    n: usize,
    robots: Vec<RobotSpec>,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, ManualClock) {
    let scenario = Scenario {
        meetings: refusing_meetings(n),
        robots,
        ..Scenario::default()
    };
    start_scenario(scenario, tweak, refused_policies(n)).await
}

/// The daemon at 08:00 on a manual clock, against `scenario`, with `policies` applied.
async fn start_scenario(
    scenario: Scenario,
    tweak: impl FnOnce(&mut Settings),
    policies: String,
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(parse_t(T0));
    let app = TestApp::start_with(scenario, Arc::new(clock.clone()), tweak, move |_| policies).await;
    (app, clock)
}

async fn alerts(app: &TestApp) -> Vec<AlertRow> {
    app.store
        .alerts_since(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        .await
        .expect("alerts")
}

/// Wait until `done` holds for the alerts table.
async fn wait_alerts(app: &TestApp, what: &str, done: impl Fn(&[AlertRow]) -> bool) -> Vec<AlertRow> {
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let rows = alerts(app).await;
        if done(&rows) {
            return rows;
        }
        assert!(tokio::time::Instant::now() < until, "{what}: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the group shows: accepted messages, repeats dropped.
fn shown(messages: &[RobotMessage]) -> Vec<&RobotMessage> {
    messages
        .iter()
        .filter(|m| m.errcode == 0 && !m.duplicate)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_meeting_is_one_signed_robot_message_naming_policy_code_and_what_to_do() {
    let (app, clock) = start(1, vec![robot(vec![], None)], with_robot(SECRET)).await;
    let rows = app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Failed);
    let sent = wait_alerts(&app, "the alert is delivered", |r| {
        r.len() == 1 && r[0].state == AlertState::Sent
    })
    .await;
    assert_eq!(sent[0].event, AlertEvent::Failed);
    assert_eq!(sent[0].destination, "ops");
    assert_eq!(sent[0].policy_name.as_deref(), Some("board-00"));
    let messages = app.fake.robot_messages();
    // The fake checked the signature: a bad one is errcode 310000.
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert_eq!(m.errcode, 0);
    assert_eq!(m.at_mobiles, vec!["13800000000".to_owned()]);
    for want in [
        "board-00",
        "conf-00",
        "2030-01-07 08:00:30 UTC",
        "recordStartPermissionError",
        "the host_union_id is not the meeting's host",
        "- attempts: 1",
        "@13800000000",
    ] {
        assert!(m.text.contains(want), "{want:?} not in:\n{}", m.text);
    }
    assert!(
        app.metrics()
            .await
            .contains("dingrec_alerts_total{destination=\"ops\",result=\"sent\"} 1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_failures_at_once_are_a_few_messages_naming_all_fifty() {
    let (app, clock) = start(50, vec![robot(vec![], None)], with_robot(SECRET)).await;
    let rows = app.drive_until_final(&clock, TimeDelta::seconds(5), 50).await;
    assert!(rows.iter().all(|o| o.state == OccurrenceState::Failed));
    wait_alerts(&app, "all fifty delivered", |r| {
        r.len() == 50 && r.iter().all(|a| a.state == AlertState::Sent)
    })
    .await;
    let messages = app.fake.robot_messages();
    let shown = shown(&messages);
    assert_eq!(
        shown.len(),
        messages.len(),
        "every message accepted: {messages:#?}"
    );
    // 25 to a message; the alerts may straddle two of the sender's rounds.
    assert!(shown.len() <= 4, "{} messages for 50 alerts", shown.len());
    for i in 0..50 {
        let name = format!("board-{i:02}:");
        assert_eq!(
            shown.iter().filter(|m| m.text.contains(&name)).count(),
            1,
            "{name} in exactly one message"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_that_says_slow_down_gets_the_message_after_its_mute() {
    let (app, clock) = start(1, vec![robot(vec![410100], None)], with_robot(SECRET)).await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    let waiting = wait_alerts(&app, "the first send answered 410100", |r| {
        r.len() == 1 && r[0].attempts == 1 && r[0].last_error.is_some()
    })
    .await;
    assert_eq!(waiting[0].state, AlertState::Pending);
    assert!(
        waiting[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("410100")),
        "{waiting:#?}"
    );
    // Not dropped, not hammered: nothing more until the robot's 10 minutes are over.
    clock.set(clock.now() + TimeDelta::minutes(9));
    // (The clock moved; nothing was written: the sender looks at its idle poll.)
    tokio::time::sleep(dingrec::alerts::sender::IDLE_POLL + dingrec::alerts::sender::POLL * 2).await;
    assert_eq!(app.fake.robot_messages().len(), 1);
    clock.set(clock.now() + TimeDelta::minutes(2));
    let sent = wait_alerts(&app, "delivered after the mute", |r| {
        r[0].state == AlertState::Sent
    })
    .await;
    assert_eq!(sent[0].attempts, 2);
    let codes: Vec<i64> = app.fake.robot_messages().iter().map(|m| m.errcode).collect();
    assert_eq!(codes, vec![410100, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_retried_with_backoff_and_says_why() {
    let (app, clock) = start(1, vec![robot(vec![], None)], with_robot("SECwrong")).await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    wait_alerts(&app, "first try refused", |r| {
        r.len() == 1 && r[0].attempts == 1 && r[0].last_error.is_some()
    })
    .await;
    clock.set(clock.now() + TimeDelta::seconds(11));
    let rows = wait_alerts(&app, "tried again", |r| {
        r[0].attempts == 2 && r[0].last_error.is_some()
    })
    .await;
    assert_eq!(rows[0].state, AlertState::Pending);
    let err = rows[0].last_error.clone().unwrap_or_default();
    assert!(
        err.contains("errcode 310000") && err.contains("security check failed"),
        "{err}"
    );
    assert!(app.fake.robot_messages().iter().all(|m| m.errcode == 310000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_send_sends_the_same_message_again_and_the_group_sees_it_once() {
    let (mut app, clock) = start(
        1,
        vec![robot(vec![], Some(Duration::from_secs(2)))],
        with_robot(SECRET),
    )
    .await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    // The robot took the message and holds its answer: the daemon dies waiting for it.
    let until = tokio::time::Instant::now() + HANG;
    while app.fake.robot_messages().is_empty() {
        assert!(tokio::time::Instant::now() < until, "no message sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(app.crash().await);
    let before = alerts(&app).await;
    assert_eq!(before[0].state, AlertState::Pending);
    app.run().await;
    wait_alerts(&app, "delivered after the restart", |r| {
        r[0].state == AlertState::Sent
    })
    .await;
    let messages = app.fake.robot_messages();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert_eq!(messages[0].msg_uuid, messages[1].msg_uuid);
    assert!(messages[0].msg_uuid.is_some());
    assert!(messages[1].duplicate);
    assert_eq!(shown(&messages).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_routes_its_alerts_to_its_own_destination() {
    let clock = ManualClock::new(parse_t(T0));
    let app = TestApp::start_with(
        Scenario {
            meetings: refusing_meetings(2),
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        |s| {
            with_robot(SECRET)(s);
            let mut other = s.alerts.destinations["ops"].clone();
            other.at_mobiles.clear();
            s.alerts.destinations.insert("board-group".into(), other);
            // `missed` is not sent: only failures.
            s.alerts.events = vec![AlertEvent::Failed];
        },
        |_| {
            refused_policies(2).replace(
                "  - name: board-01\n",
                "  - name: board-01\n    alert: [board-group]\n",
            )
        },
    )
    .await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 2).await;
    let rows = wait_alerts(&app, "both delivered", |r| {
        r.len() == 2 && r.iter().all(|a| a.state == AlertState::Sent)
    })
    .await;
    let dest = |p: &str| {
        rows.iter()
            .find(|a| a.policy_name.as_deref() == Some(p))
            .map(|a| a.destination.clone())
    };
    assert_eq!(dest("board-00").as_deref(), Some("ops"));
    assert_eq!(dest("board-01").as_deref(), Some("board-group"));
}

/// A Python receiver: one POST, its Standard Webhooks signature checked with Python's own hmac.
const PY_RECEIVER: &str = r#"
import base64, hashlib, hmac, http.server, json, sys
secret = base64.b64decode(sys.argv[1].removeprefix("whsec_"))
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"])).decode()
        msg_id, ts = self.headers["webhook-id"], self.headers["webhook-timestamp"]
        want = base64.b64encode(hmac.new(secret, f"{msg_id}.{ts}.{body}".encode(), hashlib.sha256).digest()).decode()
        sigs = [s.split(",", 1)[1] for s in self.headers["webhook-signature"].split(" ")]
        ok = any(hmac.compare_digest(want, s) for s in sigs)
        self.send_response(200 if ok else 401)
        self.end_headers()
        print(("verified" if ok else "bad-signature"), msg_id, json.loads(body)["event"], json.loads(body)["policy"], flush=True)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.handle_request()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_signature_verifies_with_pythons_hmac() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut py = Command::new("python3")
        .args(["-c", PY_RECEIVER, secret])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut out = BufReader::new(py.stdout.take().expect("stdout")).lines();
    let port: u16 = out
        .next()
        .and_then(Result::ok)
        .and_then(|l| l.trim().parse().ok())
        .expect("the receiver's port");
    let clock = ManualClock::new(parse_t(T0));
    let app = TestApp::start_with(
        Scenario {
            meetings: refusing_meetings(1),
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        move |s| {
            s.alerts.destinations.insert(
                "pager".into(),
                Destination {
                    kind: DestinationType::Webhook,
                    url: format!("http://127.0.0.1:{port}/dingrec"),
                    access_token_file: Default::default(),
                    access_token: None,
                    secret_file: Default::default(),
                    secret: Some(SecretString::from(secret.to_owned())),
                    at_mobiles: vec![],
                },
            );
            s.alerts.default = vec!["pager".into()];
        },
        |_| refused_policies(1),
    )
    .await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    let rows = wait_alerts(&app, "the webhook answered", |r| {
        r.len() == 1 && r[0].state != AlertState::Pending
    })
    .await;
    let line = tokio::task::spawn_blocking(move || out.next().and_then(Result::ok))
        .await
        .expect("reader")
        .expect("the receiver's verdict");
    let _ = py.wait();
    // The webhook-id: the database's own mark and the alert's id (unique across databases).
    let batch = rows[0].batch.clone().expect("sent as a batch");
    let mark = batch
        .strip_prefix("dingrec-")
        .and_then(|b| b.strip_suffix(&format!("-alert-{}", rows[0].id)))
        .expect("dingrec-<mark>-alert-<id>");
    assert!(
        mark.len() == 8 && mark.chars().all(|c| c.is_ascii_hexdigit()),
        "{batch}"
    );
    assert_eq!(line, format!("verified {batch} failed board-00"));
    assert_eq!(rows[0].state, AlertState::Sent);
}

/// Config lines for a robot destination whose secrets live in files under `dir`.
fn robot_config(dir: &std::path::Path, url: &str, secret: &str) -> String {
    std::fs::write(dir.join("robot_token"), format!("{TOKEN}\n")).expect("token");
    std::fs::write(dir.join("robot_secret"), format!("{secret}\n")).expect("secret");
    format!(
        "alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n      url: {url}/robot/send\n      access_token_file: {}\n      secret_file: {}\n  default: [ops]\n",
        dir.join("robot_token").display(),
        dir.join("robot_secret").display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_test_exits_zero_only_when_delivered_and_names_the_robots_errcode() {
    let fake = FakeDingTalk::start(
        ([127, 0, 0, 1], 0).into(),
        Scenario {
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
    )
    .await
    .expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let good = write_config(
        dir.path(),
        &fake.base_url(),
        &robot_config(dir.path(), &fake.base_url(), SECRET),
    );
    let out = cli(&good, &["alerts", "test", "ops"])
        .output()
        .expect("alerts test");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("delivered"));
    let m = fake.robot_messages();
    assert_eq!((m.len(), m[0].errcode), (1, 0));
    assert!(m[0].text.contains("test message"), "{}", m[0].text);

    let wrong = write_config(
        dir.path(),
        &fake.base_url(),
        &robot_config(dir.path(), &fake.base_url(), "SECwrong"),
    );
    let out = cli(&wrong, &["alerts", "test", "ops"])
        .output()
        .expect("alerts test");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("310000") && err.contains("security check failed"),
        "{err}"
    );
    assert!(!err.contains(TOKEN) && !err.contains("SECwrong"), "{err}");

    let out = cli(&wrong, &["alerts", "test", "nope"])
        .output()
        .expect("alerts test");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no alert destination named 'nope'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_robot_token_or_secret_in_logs_database_or_metrics() {
    let fake = FakeDingTalk::start(
        ([127, 0, 0, 1], 0).into(),
        Scenario {
            meetings: refusing_meetings(1),
            // The first answer is refused (an error is logged), the second delivers.
            robots: vec![robot(vec![-1], None)],
            ..Scenario::default()
        },
    )
    .await
    .expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!(
        "log:\n  level: debug\n{}",
        robot_config(dir.path(), &fake.base_url(), SECRET)
    );
    let config = write_config(dir.path(), &fake.base_url(), &extra);
    let at = (SystemClock.now() + TimeDelta::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    write_policies(
        dir.path(),
        "p.yaml",
        &format!(
            "  - name: board-00\n    conference_id: conf-00\n    host_union_id: host-1\n    at: \"{at}\"\n"
        ),
    );
    let mut d = Daemon::spawn(&config, &[]);
    d.wait_http(HANG).await;
    let db = dir.path().join("dingrec.db");
    let until = tokio::time::Instant::now() + HANG + HANG;
    loop {
        if sqlite(&db, "SELECT state FROM alerts").trim() == AlertState::Sent.as_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "not delivered: {}",
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    let (_, ready) = d.get("/readyz").await.expect("readyz");
    d.signal("TERM");
    d.wait(HANG).await;
    let logs = d.stderr();
    // `dingrec alerts` lists it, with its delivery.
    let out = cli(&config, &["alerts", "--format", "json"])
        .output()
        .expect("alerts");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(listed[0]["event"], "failed");
    assert_eq!(listed[0]["destination"], "ops");
    assert_eq!(listed[0]["state"], "sent");
    assert_eq!(listed[0]["attempts"], 2);
    let table = cli(&config, &["alerts"]).output().expect("alerts");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("DESTINATION") && table.contains("board-00"),
        "{table}"
    );
    assert!(logs.contains("alert not delivered; will try again"), "{logs}");
    assert!(logs.contains("alert delivered"), "{logs}");
    let mut stored = Vec::new();
    for f in ["dingrec.db", "dingrec.db-wal"] {
        if let Ok(b) = std::fs::read(dir.path().join(f)) {
            stored.extend(b);
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    for secret in [TOKEN, SECRET] {
        for (place, text) in [
            ("logs", &logs),
            ("metrics", &metrics),
            ("readyz", &ready),
            ("dingrec alerts", &table.to_string()),
        ] {
            assert!(!text.contains(secret), "{secret} in {place}");
        }
        assert!(!stored.contains(secret), "{secret} in the database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_never_records_is_told_once_while_it_retries_and_once_when_it_expires() {
    let (app, clock) = start_scenario(
        Scenario {
            meetings: vec![dingrec::fake::MeetingSpec {
                silent: Some(dingrec::fake::Silent::Always),
                ..live("conf-00", vec![])
            }],
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
        with_robot(SECRET),
        refused_policies(1).replace(
            "    window: 30m\n",
            "    window: 30m\n    verify: { after: 10s, checks: 1 }\n    retry: { initial_interval: 5s, maximum_interval: 20s, maximum_attempts: 5 }\n",
        ),
    )
    .await;
    let rows = app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Expired);
    assert_eq!(rows[0].attempts.len(), 5);
    let alerts = wait_alerts(&app, "both delivered", |r| {
        r.len() == 2 && r.iter().all(|a| a.state == AlertState::Sent)
    })
    .await;
    let mut events: Vec<AlertEvent> = alerts.iter().map(|a| a.event).collect();
    events.sort();
    assert_eq!(events, vec![AlertEvent::Expired, AlertEvent::NotRecording]);
    let texts: String = app.fake.robot_messages().iter().map(|m| m.text.clone()).collect();
    assert!(texts.contains("notRecording"), "{texts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_one_auth_broken_alert() {
    let clock = ManualClock::new(parse_t(T0));
    let app = TestApp::start_with(
        Scenario {
            meetings: refusing_meetings(1),
            app_secret: Some("the-right-secret".into()),
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        with_robot(SECRET),
        |_| refused_policies(1),
    )
    .await;
    clock.set(parse_t("2030-01-07T08:00:31Z"));
    app.wake();
    let rows = wait_alerts(&app, "auth_broken delivered", |r| {
        r.iter()
            .any(|a| a.event == AlertEvent::AuthBroken && a.state == AlertState::Sent)
    })
    .await;
    // The attempts go on failing (each a token call): still one alert.
    for s in 1..4 {
        clock.set(parse_t("2030-01-07T08:00:31Z") + TimeDelta::seconds(30 * s));
        app.wake();
        tokio::time::sleep(dingrec::alerts::sender::POLL * 2).await;
    }
    let rows2 = alerts(&app).await;
    assert_eq!(
        rows2.iter().filter(|a| a.event == AlertEvent::AuthBroken).count(),
        1,
        "{rows:#?}"
    );
    let m = app.fake.robot_messages();
    assert!(m[0].text.contains("invalidClientIdOrSecret"), "{}", m[0].text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_is_told_once_and_a_meeting_without_video_is_told() {
    let (app, clock) = start_scenario(
        Scenario {
            meetings: vec![dingrec::fake::MeetingSpec {
                pause_after: Some(Duration::from_secs(60)),
                ends_after: Some(Duration::from_secs(600)),
                video: false,
                ..live("conf-00", vec![])
            }],
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
        with_robot(SECRET),
        refused_policies(1).replace(
            "    window: 30m\n",
            "    window: 30m\n    verify: { after: 10s, watch: 1m, video: true }\n",
        ),
    )
    .await;
    let rows = app.drive_until_settled(&clock, TimeDelta::seconds(5), 1).await;
    assert_eq!(rows[0].state, OccurrenceState::Succeeded);
    let paused_checks = rows[0]
        .checks
        .iter()
        .filter(|c| c.outcome == Some(dingrec::domain::CheckOutcome::Paused))
        .count();
    assert!(
        paused_checks >= 3,
        "the watch saw the pause several times: {rows:#?}"
    );
    let alerts = wait_alerts(&app, "delivered", |r| {
        r.len() == 2 && r.iter().all(|a| a.state == AlertState::Sent)
    })
    .await;
    let mut events: Vec<AlertEvent> = alerts.iter().map(|a| a.event).collect();
    events.sort();
    assert_eq!(events, vec![AlertEvent::Paused, AlertEvent::NoVideo]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_missed_while_down_is_told() {
    // Planned while up at 08:00, down across 08:00:30, back at 08:10: the 5-minute window is over.
    let clock = ManualClock::new(parse_t(T0));
    let mut app = TestApp::start_with(
        Scenario {
            robots: vec![robot(vec![], None)],
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        with_robot(SECRET),
        |_| refused_policies(1).replace("    window: 30m\n", "    window: 5m\n"),
    )
    .await;
    let until = tokio::time::Instant::now() + HANG;
    while app.history().await.is_empty() {
        assert!(tokio::time::Instant::now() < until, "never planned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(app.stop().await);
    clock.set(parse_t("2030-01-07T08:10:00Z"));
    app.run().await;
    let rows = app.wait_final(1, HANG).await;
    assert_eq!(rows[0].state, OccurrenceState::Missed);
    let alerts = wait_alerts(&app, "delivered", |r| {
        r.len() == 1 && r[0].state == AlertState::Sent
    })
    .await;
    assert_eq!(alerts[0].event, AlertEvent::Missed);
    let m = app.fake.robot_messages();
    assert!(
        m[0].text.contains("start missed while dingrec was down"),
        "{}",
        m[0].text
    );
}

/// A webhook that takes the connection and never answers, named before the robot (destinations
/// were sent in name order): the robot's message arrives while the webhook's request still hangs,
/// within 5 s of the failure; the webhook is tried again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_never_answers_holds_up_no_robot() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::AsyncReadExt;
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hang_addr = hang.local_addr().expect("addr");
    let (asked, hung_up) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let server = {
        let (asked, hung_up) = (asked.clone(), hung_up.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = hang.accept().await {
                let (asked, hung_up) = (asked.clone(), hung_up.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // Read the request, answer nothing; note when the client gives up.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        asked.store(true, Ordering::SeqCst);
                    }
                    hung_up.store(true, Ordering::SeqCst);
                });
            }
        })
    };
    let (app, clock) = start(1, vec![robot(vec![], None)], move |s: &mut Settings| {
        with_robot(SECRET)(s);
        s.alerts.destinations.insert(
            "a-hook".into(),
            Destination {
                kind: DestinationType::Webhook,
                url: format!("http://{hang_addr}/hook"),
                access_token_file: Default::default(),
                access_token: None,
                secret_file: Default::default(),
                secret: Some(SecretString::from("whsec_c2VjcmV0".to_owned())),
                at_mobiles: vec![],
            },
        );
        s.alerts.default = vec!["a-hook".into(), "ops".into()];
    })
    .await;
    app.drive_until_final(&clock, TimeDelta::seconds(5), 1).await;
    let failed_at = std::time::Instant::now();
    let until = tokio::time::Instant::now() + HANG;
    while app.fake.robot_messages().is_empty() {
        assert!(
            tokio::time::Instant::now() < until,
            "the robot never got its message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = failed_at.elapsed();
    // The two go at once: the webhook's request may reach its server just after the robot's.
    while !asked.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < until,
            "the webhook was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !hung_up.load(Ordering::SeqCst),
        "the robot's message waited until the webhook's request gave up"
    );
    assert!(
        took <= Duration::from_secs(5),
        "the robot's message came {took:?} after the failure"
    );
    // The webhook's alert is not lost: it waits for its next try.
    let rows = wait_alerts(&app, "the webhook's alert retried", |rows| {
        rows.iter()
            .any(|r| r.destination == "a-hook" && r.state == AlertState::Pending && r.attempts >= 1)
    })
    .await;
    assert!(
        rows.iter()
            .any(|r| r.destination == "ops" && r.state == AlertState::Sent)
    );
    server.abort();
}
