//! Meetings dingrec finds by itself: `dingrec run` with `dingtalk.stream.enabled` against the
//! fake's Stream gateway. A matched `conference_created` event makes one occurrence, started by
//! the meeting's creator; everything else is recorded and ignored; an event delivered again
//! (after an acknowledgement, after a kill -9) or to several daemons makes nothing more.

use std::path::{Path, PathBuf};

use dingrec::fake::{EventSpec, FakeDingTalk, Scenario};

use crate::support::daemon::{Daemon, cli, write_config, write_policies};
use crate::support::{HANG, engine, fake, sqlite, wait_for};

const BOARD: &str = "  - name: board-meetings
    match:
      creators: [union-creator]
      title: \"董事会|Board\"
    host_union_id: creator
    window: 20m
    verify: false
";

/// A config with Stream mode on (the test's config names the fake as the API host).
fn stream_config(dir: &Path, base_url: &str) -> PathBuf {
    let cfg = write_config(dir, base_url, "");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let with_stream = text.replace(
        "  rate_limit: 0\n",
        "  rate_limit: 0\n  stream:\n    enabled: true\n    keepalive: 2s\n",
    );
    assert_ne!(text, with_stream, "the config's dingtalk section");
    std::fs::write(&cfg, with_stream).expect("config");
    cfg
}

fn acks(f: &FakeDingTalk, event_id: &str) -> Vec<String> {
    f.stream()
        .acks()
        .into_iter()
        .filter(|a| a.event_id.as_deref() == Some(event_id))
        .map(|a| a.status)
        .collect()
}

async fn acknowledged(f: &FakeDingTalk, event_id: &str, times: usize) {
    wait_for("the event's acknowledgements", HANG, || {
        acks(f, event_id).len() >= times
    })
    .await;
    assert!(
        acks(f, event_id).iter().all(|s| s == "SUCCESS"),
        "{:?}",
        acks(f, event_id)
    );
}

/// QueryOrgConferenceList calls the fake has answered.
fn catch_up_calls(f: &FakeDingTalk) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.path == "/v1.0/conference/orgConferences")
        .count()
}

/// Until `n` catch-ups have listed the meetings in progress: a meeting the test creates after
/// that is found by its event, not by a catch-up racing it.
async fn caught_up(f: &FakeDingTalk, n: usize) {
    wait_for("the catch-ups on connect", HANG, || catch_up_calls(f) >= n).await;
}

fn board(conference_id: &str, event_id: &str) -> EventSpec {
    EventSpec {
        event_id: Some(event_id.into()),
        title: Some("Q4 董事会".into()),
        creator_id: Some("union-creator".into()),
        ..EventSpec::created(conference_id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matched_meeting_is_recorded_once_by_its_creator_and_every_event_is_kept() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(dir.path(), "board.yaml", BOARD);
    let cfg = stream_config(dir.path(), &f.base_url());
    let db = dir.path().join("dingrec.db");
    let mut d = Daemon::spawn(&cfg, &[]);
    wait_for("the daemon's Stream connection", HANG, || {
        f.stream().connections() == 1
    })
    .await;
    caught_up(&f, 1).await;

    f.push_event(&board("board-1", "evt-board-1"));
    let standup = f.push_event(&EventSpec {
        title: Some("standup".into()),
        creator_id: Some("someone".into()),
        ..EventSpec::created("standup-1")
    });
    let closed = f.push_event(&EventSpec {
        change_scene: Some("conference_closed".into()),
        ..EventSpec::created("board-1")
    });
    acknowledged(&f, "evt-board-1", 1).await;
    acknowledged(&f, &standup, 1).await;
    acknowledged(&f, &closed, 1).await;
    if tokio::time::timeout(HANG, async {
        while f.starts_for("board-1") != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .is_err()
    {
        panic!(
            "no recording of board-1: {}\n{}",
            sqlite(
                &db,
                "SELECT id, state, due_at, next_attempt_at, window_ends_at, conference_id FROM occurrences"
            ),
            d.stderr()
        );
    }
    let start = f
        .start_requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some("board-1"))
        .expect("the start");
    assert_eq!(
        start.union_id.as_deref(),
        Some("union-creator"),
        "the creator starts it"
    );
    assert_eq!(f.starts_for("standup"), 0, "no policy wants the standup");
    assert_eq!(
        sqlite(
            &db,
            "SELECT outcome || ' ' || COALESCE(conference_id, '') FROM events ORDER BY id"
        ),
        "matched board-1\nignored standup-1\nignored board-1"
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT o.trigger || ' ' || o.host_union_id || ' ' || (e.occurrence_id = o.id) \
             FROM occurrences o JOIN events e ON e.event_id = 'evt-board-1'"
        ),
        if engine::postgres() {
            "event union-creator true"
        } else {
            "event union-creator 1"
        }
    );
    wait_for("the occurrence succeeded", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences") == "succeeded"
    })
    .await;
    assert_eq!(
        sqlite(&db, "SELECT host_union_id FROM audit_log"),
        "union-creator",
        "the audit log names who started it"
    );
    // The metrics count what came of each event.
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    for line in [
        "dingrec_stream_events_total{event_type=\"meeting_status_change\",outcome=\"matched\"} 1",
        "dingrec_stream_events_total{event_type=\"meeting_status_change\",outcome=\"ignored\"} 2",
        "dingrec_stream_connected 1",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    // `history` shows the event that made the occurrence.
    let out = cli(&cfg, &["history", "--format", "json"])
        .output()
        .expect("history");
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(h[0]["event"]["event_id"], "evt-board-1", "{h}");
    assert_eq!(h[0]["event"]["event_type"], "meeting_status_change", "{h}");
    let out = cli(&cfg, &["history"]).output().expect("history");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("event:meeting_status_change") && table.contains("found by evt-board-1"),
        "{table}"
    );

    // DingTalk may send an event again after its acknowledgement: nothing more happens.
    f.push_event(&board("board-1", "evt-board-1"));
    acknowledged(&f, "evt-board-1", 2).await;
    // Another event for the same meeting (another eventId): kept, a duplicate.
    f.push_event(&board("board-1", "evt-board-1-again"));
    acknowledged(&f, "evt-board-1-again", 1).await;

    // A kill -9 after the commit: the event sent again to the next daemon changes nothing.
    d.signal("KILL");
    let _ = d.wait(HANG).await;
    let d2 = Daemon::spawn(&cfg, &[]);
    wait_for("the new daemon's Stream connection", HANG, || {
        f.stream().connections() == 1 && f.stream().opens() >= 2
    })
    .await;
    f.push_event(&board("board-1", "evt-board-1"));
    acknowledged(&f, "evt-board-1", 3).await;
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM occurrences"),
        "1",
        "one occurrence per meeting"
    );
    assert_eq!(f.starts_for("board-1"), 1, "recorded once");
    assert_eq!(
        sqlite(
            &db,
            "SELECT outcome FROM events WHERE event_id = 'evt-board-1-again'"
        ),
        "duplicate"
    );
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM events"),
        "4",
        "one row per eventId"
    );

    // `dingrec events` lists them, newest first.
    let out = cli(&cfg, &["events", "--since", "1h"]).output().expect("events");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("board-meetings") && text.contains("duplicate"),
        "{text}"
    );
    let json = cli(&cfg, &["events", "--format", "json"])
        .output()
        .expect("events");
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(rows.as_array().map(Vec::len), Some(4));
    drop(d2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_without_stream_mode_says_so() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(dir.path(), "board.yaml", BOARD);
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let out = cli(&cfg, &["validate"]).output().expect("validate");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("dingtalk.stream.enabled"),
        "a match policy without Stream mode never fires: {err}"
    );
}

/// DingTalk gives an event to one connection; in the worst case every daemon receives it: one
/// row, one occurrence, one start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_receiving_the_same_event_record_its_meeting_once() {
    if !engine::postgres() {
        eprintln!("skipped on SQLite: several daemons share one database only on PostgreSQL");
        return;
    }
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(dir.path(), "board.yaml", BOARD);
    let cfg = stream_config(dir.path(), &f.base_url());
    let db = dir.path().join("dingrec.db");
    let ds = Daemon::spawn_ready(&cfg, 3).await;
    wait_for("three Stream connections", HANG, || f.stream().connections() == 3).await;
    caught_up(&f, 3).await;
    f.push_event(&EventSpec {
        to_all: true,
        ..board("board-3", "evt-board-3")
    });
    acknowledged(&f, "evt-board-3", 3).await;
    wait_for("the recording", HANG, || f.starts_for("board-3") == 1).await;
    wait_for("the occurrence succeeded", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences") == "succeeded"
    })
    .await;
    assert_eq!(sqlite(&db, "SELECT COUNT(*) FROM events"), "1");
    assert_eq!(sqlite(&db, "SELECT COUNT(*) FROM occurrences"), "1");
    assert_eq!(f.starts_for("board-3"), 1);
    drop(ds);
}

/// Stream mode down longer than `dingtalk.stream.alert_after`: `/readyz` says so and answers
/// 503, the metrics show it, `stream_down` reaches the ops robot once; back up: ready again,
/// `stream_recovered`, a reconnect counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_down_too_long_is_not_ready_alerts_once_and_recovers() {
    let f = fake(Scenario {
        robots: vec![dingrec::fake::RobotSpec {
            access_token: "robot-token".into(),
            ..dingrec::fake::RobotSpec::default()
        }],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("robot_token"), "robot-token\n").expect("token");
    let cfg = stream_config(dir.path(), &f.base_url());
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "    keepalive: 2s\n",
        "    keepalive: 2s\n    alert_after: 2s\n    reconnect_max: 1s\n",
    );
    let text = format!(
        "{text}alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n      url: {}/robot/send\n      access_token_file: {}\n  default: [ops]\n",
        f.base_url(),
        dir.path().join("robot_token").display()
    );
    std::fs::write(&cfg, text).expect("config");
    let d = Daemon::spawn(&cfg, &[]);
    wait_for("the daemon's Stream connection", HANG, || {
        f.stream().connections() == 1
    })
    .await;
    let readyz = || async {
        let (code, body) = d.get("/readyz").await.expect("readyz");
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).expect("json"),
        )
    };
    let until = |what: &'static str, want: fn(u16, &serde_json::Value) -> bool| {
        let readyz = &readyz;
        let d = &d;
        async move {
            let limit = tokio::time::Instant::now() + HANG;
            loop {
                let (code, body) = readyz().await;
                if want(code, &body) {
                    return body;
                }
                assert!(
                    tokio::time::Instant::now() < limit,
                    "{what}: {code} {body}\n{}",
                    d.stderr()
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    let up = until("connected", |c, b| {
        c == 200 && b["stream"]["state"] == "connected"
    })
    .await;
    assert!(up["stream"]["connected_since"].is_string(), "{up}");

    // DingTalk drops the connection and refuses every new one.
    f.stream().refuse_opens(u32::MAX);
    f.stream().disconnect(std::time::Duration::ZERO);
    let down = until("down too long", |c, b| {
        c == 503 && b["stream"]["down_too_long"] == true
    })
    .await;
    assert_eq!(down["stream"]["state"], "down", "{down}");
    assert!(down["stream"]["down_since"].is_string(), "{down}");
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("dingrec_stream_connected 0"), "{metrics}");
    wait_for("the stream_down message", HANG, || {
        f.robot_messages()
            .iter()
            .any(|m| m.text.contains("Stream mode down"))
    })
    .await;

    f.stream().refuse_opens(0);
    let back = until("connected again", |c, b| {
        c == 200 && b["stream"]["state"] == "connected"
    })
    .await;
    assert!(back["stream"]["reconnects"].as_u64() >= Some(1), "{back}");
    wait_for("the stream_recovered message", HANG, || {
        f.robot_messages()
            .iter()
            .any(|m| m.text.contains("Stream mode back"))
    })
    .await;
    let downs = f
        .robot_messages()
        .iter()
        .filter(|m| m.text.contains("Stream mode down"))
        .count();
    assert_eq!(downs, 1, "one stream_down per outage");
    let (_, metrics) = d.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("dingrec_stream_connected 1"), "{metrics}");
    assert!(
        !metrics.contains("dingrec_stream_reconnects_total 0"),
        "{metrics}"
    );
}

/// A meeting created while the connection was down (its event lost) is found by the catch-up on
/// reconnect and recorded; a second catch-up and the late event itself add nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_created_while_the_stream_was_down_is_recorded_after_the_catch_up() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(dir.path(), "board.yaml", BOARD);
    let cfg = stream_config(dir.path(), &f.base_url());
    let db = dir.path().join("dingrec.db");
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "    keepalive: 2s\n",
        "    keepalive: 2s\n    reconnect_max: 1s\n",
    );
    std::fs::write(&cfg, text).expect("config");
    let d = Daemon::spawn(&cfg, &[]);
    wait_for("the daemon's Stream connection", HANG, || {
        f.stream().connections() == 1
    })
    .await;
    let opens = f.stream().opens();

    f.stream().refuse_opens(u32::MAX);
    f.stream().disconnect(std::time::Duration::ZERO);
    wait_for("the connection gone", HANG, || f.stream().connections() == 0).await;
    f.create_meeting("board-late", "Q4 董事会", "union-creator");
    f.create_meeting("standup-late", "standup", "someone");
    assert_eq!(f.starts_for("board-late"), 0);

    f.stream().refuse_opens(0);
    wait_for("the meeting recorded after the catch-up", HANG, || {
        f.starts_for("board-late") == 1
    })
    .await;
    assert!(f.stream().opens() > opens);
    let start = f
        .start_requests()
        .into_iter()
        .find(|r| r.id.as_deref() == Some("board-late"))
        .expect("the start");
    assert_eq!(start.union_id.as_deref(), Some("union-creator"));
    let rows = sqlite(&db, "SELECT trigger, conference_id FROM occurrences ORDER BY id");
    assert_eq!(rows, "catch_up|board-late", "{}", d.stderr());
    let out = cli(&cfg, &["history", "--format", "json"])
        .output()
        .expect("history");
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(h[0]["event"]["event_id"], "catch_up:board-late", "{h}");

    // Connected again: a second catch-up finds the occurrence; the late event is a duplicate.
    let opened = f.stream().opens();
    f.stream().disconnect(std::time::Duration::ZERO);
    wait_for("a new connection", HANG, || f.stream().opens() > opened).await;
    let late = f.push_event(&board("board-late", "evt-board-late"));
    acknowledged(&f, &late, 1).await;
    caught_up(&f, 3).await;
    let events = sqlite(
        &db,
        "SELECT event_type, conference_id, outcome FROM events ORDER BY id",
    );
    assert_eq!(
        events,
        "catch_up|board-late|matched\nmeeting_status_change|board-late|duplicate",
        "{}",
        d.stderr()
    );
    assert_eq!(f.starts_for("board-late"), 1, "recorded once");
    assert_eq!(f.starts_for("standup-late"), 0, "no policy wants the standup");
}

/// Retention prunes events with the attempts: an old event goes, a recent one stays, and so does
/// an old one whose occurrence is still live.
#[tokio::test]
async fn old_events_are_pruned_with_the_attempts_but_not_a_live_occurrences() {
    use dingrec::store::{EventDecision, NewEvent};
    let app = crate::support::app::TestApp::build_with(
        Scenario::default(),
        std::sync::Arc::new(dingrec::clock::SystemClock),
        |_| {},
        |_| format!("policies:\n{BOARD}"),
    )
    .await;
    let now = crate::support::wall();
    let old = now - chrono::TimeDelta::days(400);
    let policy_id = engine::count(&app.store, "SELECT id FROM policies").await;
    let event = |id: &str, at, decision| NewEvent {
        event_id: id.into(),
        message_id: format!("m-{id}"),
        event_type: "meeting_status_change".into(),
        change_scene: Some("conference_created".into()),
        conference_id: Some(format!("conf-{id}")),
        received_at: at,
        born_at: Some(at),
        payload: "{}".into(),
        instance: "test".into(),
        decision,
        counted: false,
    };
    let ignored = || EventDecision::Ignored("no enabled match policy wants its meeting".into());
    for e in [
        event("old-ignored", old, ignored()),
        event("new-ignored", now, ignored()),
        event(
            "old-live",
            old,
            EventDecision::Matched {
                policy_id,
                policy_name: "board-meetings".into(),
                conference_id: "conf-old-live".into(),
                // Due long ago and still scheduled: its event stays while it lives.
                due_at: old,
                window_ends_at: now + chrono::TimeDelta::minutes(20),
                meeting_at: old,
                host_union_id: Some("union-creator".into()),
                trigger: dingrec::domain::Trigger::Event,
            },
        ),
    ] {
        app.store.record_event(&e).await.expect("recorded");
    }
    app.store
        .prune_before(now - chrono::TimeDelta::days(365))
        .await
        .expect("pruned");
    let left = engine::rows(&app.store, "SELECT event_id FROM events ORDER BY event_id").await;
    let left: Vec<&str> = left.iter().map(|r| r[0].as_str().expect("id")).collect();
    assert_eq!(left, ["new-ignored", "old-live"]);
}

/// Every event received counts against the events' own quota (a redelivery too, the catch-up
/// not), `dingrec quota` shows it beside the calls, and 80 % then 90 % of
/// `dingtalk.monthly_event_quota` each raise one `quota` alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_count_against_their_own_quota_with_alerts_at_80_and_90_percent() {
    let f = fake(Scenario {
        robots: vec![dingrec::fake::RobotSpec {
            access_token: "robot-token".into(),
            ..dingrec::fake::RobotSpec::default()
        }],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(dir.path(), "board.yaml", BOARD);
    std::fs::write(dir.path().join("robot_token"), "robot-token\n").expect("token");
    let cfg = stream_config(dir.path(), &f.base_url());
    let text = std::fs::read_to_string(&cfg).expect("config").replace(
        "  rate_limit: 0\n",
        // The calls' budget off: the events' own is said all the same.
        "  rate_limit: 0\n  monthly_quota: 0\n  monthly_event_quota: 10\n",
    );
    let text = format!(
        "{text}alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n      url: {}/robot/send\n      access_token_file: {}\n  default: [ops]\n",
        f.base_url(),
        dir.path().join("robot_token").display()
    );
    std::fs::write(&cfg, text).expect("config");
    let db = dir.path().join("dingrec.db");
    let d = Daemon::spawn(&cfg, &[]);
    wait_for("the daemon's Stream connection", HANG, || {
        f.stream().connections() == 1
    })
    .await;
    caught_up(&f, 1).await;
    let quota_messages = || {
        f.robot_messages()
            .into_iter()
            .filter(|m| m.text.contains("DingTalk events of"))
            .count()
    };
    // A meeting the catch-up finds is not an event.
    f.create_meeting("board-found", "董事会", "union-creator");
    let opened = f.stream().opens();
    f.stream().disconnect(std::time::Duration::ZERO);
    wait_for("a new connection", HANG, || f.stream().opens() > opened).await;
    caught_up(&f, 2).await;
    wait_for("the found meeting recorded", HANG, || {
        f.starts_for("board-found") == 1
    })
    .await;

    for i in 0..7 {
        let id = f.push_event(&EventSpec {
            title: Some("standup".into()),
            ..EventSpec::created(&format!("standup-{i}"))
        });
        acknowledged(&f, &id, 1).await;
    }
    f.push_event(&board("board-1", "evt-twice"));
    acknowledged(&f, "evt-twice", 1).await;
    wait_for("the 80 % message", HANG, || quota_messages() == 1).await;
    assert!(
        f.robot_messages()
            .iter()
            .any(|m| m.text.contains("8 of the 10 DingTalk events")),
        "{:?}",
        f.robot_messages()
    );
    // Delivered again: DingTalk pushed it twice, and counts both.
    f.push_event(&board("board-1", "evt-twice"));
    acknowledged(&f, "evt-twice", 2).await;
    assert_eq!(
        sqlite(&db, "SELECT SUM(calls) FROM api_usage WHERE api = 'stream_event'"),
        "9",
        "seven events, one twice; not the catch-up's meeting"
    );
    wait_for("the 90 % message", HANG, || quota_messages() == 2).await;
    assert!(
        f.robot_messages()
            .iter()
            .any(|m| m.text.contains("9 of the 10 DingTalk events")),
        "{:?}",
        f.robot_messages()
    );
    let out = cli(&cfg, &["quota", "--format", "json"]).output().expect("quota");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["events"], serde_json::json!({"used": 9, "limit": 10}), "{v}");
    let out = cli(&cfg, &["quota"]).output().expect("quota");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("events:   9 of 10 (90 %)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(quota_messages(), 2, "each said once");
    drop(d);
}

/// A `conference_closed` event ends the meeting's watch: the next watch check (an hour away) is
/// made at once, sees the meeting ended, and the watch is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_event_ends_the_meetings_watch_at_once() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "board.yaml",
        &BOARD.replace("    verify: false\n", "    verify: { after: 1s, watch: 1h }\n"),
    );
    let cfg = stream_config(dir.path(), &f.base_url());
    let db = dir.path().join("dingrec.db");
    let d = Daemon::spawn(&cfg, &[]);
    wait_for("the daemon's Stream connection", HANG, || {
        f.stream().connections() == 1
    })
    .await;
    caught_up(&f, 1).await;
    f.push_event(&board("board-w", "evt-board-w"));
    wait_for("the recording confirmed and watched", HANG, || {
        sqlite(
            &db,
            "SELECT state || ' ' || COALESCE(next_check_kind, '') FROM occurrences",
        ) == "succeeded watch"
    })
    .await;

    assert!(f.recording("board-w", dingrec::fake::RecordingAction::End));
    let closed = f.push_event(&EventSpec {
        change_scene: Some("conference_closed".into()),
        ..EventSpec::created("board-w")
    });
    acknowledged(&f, &closed, 1).await;
    wait_for("the watch ended by its check", HANG, || {
        sqlite(
            &db,
            "SELECT outcome FROM checks WHERE kind = 'watch' ORDER BY id DESC LIMIT 1",
        ) == "meeting_ended"
    })
    .await;
    assert_eq!(
        sqlite(&db, "SELECT COALESCE(next_check_kind, 'none') FROM occurrences"),
        "none",
        "{}",
        d.stderr()
    );
}
