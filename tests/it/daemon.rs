//! `dingrec run` as ops run it: signals, systemd notify, /healthz, /readyz, /metrics, the demo,
//! and the secret that must never show.

use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use dingrec::fake::{MeetingSpec, MeetingState, Scenario, Step};

use crate::support::daemon::{Daemon, apply_dir, apply_path, cli, write_config, write_policies};
use crate::support::{HANG, engine, fake, live, policy, sqlite, step, wait_for};

/// Retries a second apart: these tests watch retries happen in real time.
const FAST_RETRY: &str = "    retry: { initial_interval: 1s, maximum_interval: 1s }\n";

#[allow(clippy::disallowed_methods)]
fn at_in(ms: i64) -> String {
    (Utc::now() + TimeDelta::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_call_records_its_outcome_and_exits_0_without_new_attempts() {
    let slow = Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_millis(1500)),
    };
    let f = fake(Scenario {
        meetings: vec![live("slow-conf", vec![slow]), live("later-conf", vec![])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &format!(
            "{}{}",
            policy("slow", "slow-conf", &at_in(1000), FAST_RETRY),
            policy("later", "later-conf", &at_in(4000), FAST_RETRY)
        ),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "log:\n  format: json\n");
    let mut d = Daemon::spawn(&cfg, &[]);
    wait_for("the slow call", HANG, || !f.start_requests().is_empty()).await;
    d.signal("TERM");
    assert_eq!(d.wait(HANG).await, Some(0), "{}", d.stderr());
    let db = dir.path().join("dingrec.db");
    assert_eq!(
        sqlite(
            &db,
            "SELECT code || ' ' || outcome FROM audit_log WHERE policy_name = 'slow'"
        ),
        "200 success"
    );
    assert_eq!(
        sqlite(&db, "SELECT state FROM occurrences WHERE policy_name = 'slow'"),
        "succeeded"
    );
    assert_eq!(f.start_requests().len(), 1, "no attempt after the signal");
    assert_eq!(sqlite(&db, "SELECT COUNT(*) FROM attempts"), "1");
    // log.format: json: one JSON object per line, the attempt's line with its stable fields.
    let logs = d.stderr();
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let attempt = events
        .iter()
        .find(|e| e["message"] == "recording started")
        .expect("the attempt's line");
    assert_eq!(attempt["policy"], "slow");
    assert_eq!(attempt["conference_id"], "slow-conf");
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["code"], "200");
    assert!(
        attempt["duration_ms"].as_i64().is_some_and(|ms| ms >= 1000),
        "{attempt}"
    );
    assert_eq!(attempt["level"], "INFO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_claimed_attempts_not_yet_sent_as_interrupted_without_calling() {
    // One worker, two meetings due together: one call is in flight, the other attempt is claimed
    // and queued. SIGTERM lets the call finish and closes the queued one without a call.
    let slow = || Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_millis(1500)),
    };
    let f = fake(Scenario {
        meetings: vec![live("conf-a", vec![slow()]), live("conf-b", vec![slow()])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let at = at_in(1000);
    write_policies(
        dir.path(),
        "p.yaml",
        &format!(
            "{}{}",
            policy("a", "conf-a", &at, FAST_RETRY),
            policy("b", "conf-b", &at, FAST_RETRY)
        ),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "scheduler:\n  max_in_flight: 1\n");
    let mut d = Daemon::spawn(&cfg, &[]);
    wait_for("the first call", HANG, || !f.start_requests().is_empty()).await;
    let db = dir.path().join("dingrec.db");
    // A burst's first claim takes one worker pool (here one), the next claim the rest: wait for
    // it, while the first call is still in flight (1.5 s).
    wait_for("both claimed", HANG, || {
        sqlite(&db, "SELECT COUNT(*) FROM attempts") == "2"
    })
    .await;
    assert_eq!(f.start_requests().len(), 1, "the second is claimed, not sent");
    d.signal("TERM");
    assert_eq!(d.wait(HANG).await, Some(0), "{}", d.stderr());
    assert_eq!(f.start_requests().len(), 1, "the queued attempt was never sent");
    assert_eq!(
        sqlite(
            &db,
            "SELECT group_concat(r, ' | ') FROM (SELECT o.state || ':' || a.outcome || ':' || a.message AS r \
             FROM occurrences o JOIN attempts a ON a.occurrence_id = o.id ORDER BY r) AS t"
        ),
        "retry_wait:interrupted:dingrec stopped before sending this attempt; no call was made | succeeded:success:"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_schedules_a_new_policy_and_keeps_the_old_ones_when_a_file_is_broken() {
    let f = fake(Scenario {
        unknown_conferences: dingrec::fake::UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "a.yaml",
        &policy("first", "c1", &at_in(3_600_000), FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let d = Daemon::spawn(&cfg, &[]);
    d.wait_http(HANG).await;
    let db = dir.path().join("dingrec.db");

    write_policies(
        dir.path(),
        "b.yaml",
        &policy("second", "c2", &at_in(2500), FAST_RETRY),
    );
    d.signal("HUP");
    wait_for("the new policy's occurrence", HANG, || {
        sqlite(
            &db,
            "SELECT COUNT(*) FROM occurrences WHERE policy_name = 'second'",
        ) == "1"
    })
    .await;

    // A broken file: logged with its location, shown by /readyz, the old policies keep firing.
    write_policies(
        dir.path(),
        "c.yaml",
        "  - name: third\n    conference_id: c3\n    host_union_id: h\n    at: 2030-01-01T00:00:00\n    layout: tiles\n",
    );
    d.signal("HUP");
    wait_for("the located error in the log", HANG, || {
        d.stderr().contains("c.yaml:6:13")
    })
    .await;
    let (code, body) = d.get("/readyz").await.expect("readyz");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(code, 200, "a bad file does not make the daemon unready: {body}");
    assert!(
        v["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("c.yaml:6:13")),
        "{body}"
    );
    let fired = tokio::time::Instant::now() + HANG;
    while sqlite(&db, "SELECT state FROM occurrences WHERE policy_name = 'second'") != "succeeded" {
        assert!(
            tokio::time::Instant::now() < fired,
            "the old policies stopped firing:\n{}\n{}",
            sqlite(&db, "SELECT * FROM occurrences"),
            d.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM policies WHERE name = 'third'"),
        "0"
    );
    let metrics = d.get("/metrics").await.expect("metrics").1;
    assert!(
        metrics.contains("dingrec_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dingrec_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind");
    let mut d = Daemon::spawn(
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    async fn recv(sock: &tokio::net::UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(HANG, sock.recv(&mut buf))
            .await
            .expect("a notify message before the deadline")
            .expect("a notify message");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let first = recv(&sock).await;
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    // READY=1 only once the listener answers.
    let health = d.get("/healthz").await.expect("HTTP answers at READY=1");
    assert_eq!(health, (200, "{\"status\":\"ok\"}".to_owned()));
    let mut watchdogs = 0;
    while watchdogs < 2 {
        if recv(&sock).await.lines().any(|l| l == "WATCHDOG=1") {
            watchdogs += 1;
        }
    }
    d.signal("HUP");
    let mut seen = Vec::new();
    while !seen.iter().any(|m: &String| m.lines().any(|l| l == "READY=1")) {
        let m = recv(&sock).await;
        if !m.contains("WATCHDOG=1") {
            seen.push(m);
        }
    }
    let reloading = seen
        .iter()
        .find(|m| m.lines().any(|l| l == "RELOADING=1"))
        .expect("RELOADING=1 before READY=1");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    d.signal("TERM");
    let mut stopping = false;
    while !stopping {
        stopping = recv(&sock).await.lines().any(|l| l == "STOPPING=1");
    }
    assert_eq!(d.wait(HANG).await, Some(0));
}

/// Makes a file immutable (even for root) while alive.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(p: &std::path::Path) -> Immutable {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(p)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(st.success(), "chattr +i needs root and an ext4-like file system");
        Immutable(p.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_every_field_and_turns_503_when_the_database_cannot_be_written() {
    let f = fake(Scenario {
        meetings: vec![live(
            "c1",
            vec![Step {
                answer: "systemError".into(),
                status: None,
                times: 1,
                delay: None,
            }],
        )],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "a.yaml",
        &format!(
            "{}{}",
            policy("now", "c1", &at_in(500), FAST_RETRY),
            policy("later", "c2", &at_in(3_600_000), FAST_RETRY)
        ),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let d = Daemon::spawn(&cfg, &[]);
    d.wait_http(HANG).await;
    let db = dir.path().join("dingrec.db");
    wait_for("the first recording", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences WHERE policy_name = 'now'") == "succeeded"
    })
    .await;
    let (code, body) = d.get("/readyz").await.expect("readyz");
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    for field in [
        "status",
        "database",
        "scheduler",
        "token",
        "policies",
        "next_due_at",
        "occurrences",
        "last_success_at",
    ] {
        assert!(v.get(field).is_some(), "/readyz lacks {field}: {body}");
    }
    assert_eq!(v["status"], "ok");
    assert_eq!(v["database"], "ok");
    // Which process answers, and on which engine: `hostname:pid`, as its attempts record it.
    let instance = v["instance"].as_str().expect("instance").to_owned();
    assert!(
        instance.ends_with(&format!(":{}", d.child.id())),
        "{instance} is not this daemon"
    );
    assert_eq!(
        v["engine"],
        if engine::postgres() { "postgres" } else { "sqlite" }
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT DISTINCT instance FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE o.policy_name = 'now'"
        ),
        instance
    );
    assert!(
        v["scheduler"]["heartbeat_age_ms"]
            .as_u64()
            .is_some_and(|ms| ms < 3000),
        "{body}"
    );
    assert_eq!(v["token"]["valid"], true);
    assert!(v["token"]["expires_at"].as_str().is_some());
    assert_eq!(v["policies"], 2);
    assert!(v["next_due_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(v["occurrences"]["scheduled"], 1);
    assert!(v["last_success_at"].as_str().is_some());

    let metrics = d.get("/metrics").await.expect("metrics").1;
    for m in [
        "dingrec_attempts_total{outcome=\"success\",code=\"200\"} 1",
        "dingrec_attempts_total{outcome=\"retry\",code=\"systemError\"} 1",
        "dingrec_occurrences_total{state=\"succeeded\"} 1",
        "dingrec_fire_lateness_seconds_bucket{le=",
        "dingrec_dingtalk_request_duration_seconds_bucket{le=",
        "dingrec_policies_enabled 2",
        "dingrec_next_due_timestamp_seconds ",
        "dingrec_token_refreshes_total{result=\"ok\"} 1",
        "dingrec_last_success_timestamp_seconds ",
        "dingrec_reloads_total{result=\"ok\"} 0",
        "dingrec_build_info{version=\"",
    ] {
        assert!(metrics.contains(m), "/metrics lacks {m}:\n{metrics}");
    }
    assert!(
        !metrics.contains("c1") && !metrics.contains("host-1"),
        "ids never become labels"
    );

    // The database refuses writes: an immutable SQLite file, or PostgreSQL refusing them.
    let wait_503 = || async {
        let until = tokio::time::Instant::now() + HANG;
        loop {
            let (code, body) = d.get("/readyz").await.expect("readyz");
            if code == 503 {
                let v: serde_json::Value = serde_json::from_str(&body).expect("json");
                assert_eq!(v["database"], "error", "{body}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "still {code} with an immutable database: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            d.get("/healthz").await.map(|r| r.0),
            Some(200),
            "liveness never depends on the database"
        );
    };
    if engine::postgres() {
        let refuse = "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
            RAISE EXCEPTION 'writes refused'; END $$; \
            CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON meta FOR EACH ROW EXECUTE FUNCTION refuse()";
        sqlite(&db, refuse);
        wait_503().await;
        sqlite(&db, "DROP TRIGGER refuse ON meta");
    } else if crate::support::is_root("making the database file immutable (chattr +i)") {
        let _frozen = Immutable::set(&db);
        wait_503().await;
    }
    // Back once the file is writable again (the database's part of /readyz is read at most once
    // a second, whoever asks).
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let (code, body) = d.get("/readyz").await.expect("readyz");
        if code == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "not back: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_shows_every_case_and_exits_0() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dingrec"))
        .arg("demo")
        .env_remove("DINGREC_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("demo");
    // Its output line by line, as it comes: the status page's address comes first.
    let (lines, seen) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut head = Vec::new();
    let url = loop {
        let line = seen
            .recv_timeout(crate::support::HANG)
            .unwrap_or_else(|_| panic!("the demo never named its status page: {head:?}"));
        head.push(line.clone());
        if let Some(url) = line.strip_prefix("The status page, while the demo runs: ") {
            break url.trim().to_owned();
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let page = reqwest::get(&url).await.expect("the demo's status page answers");
    assert_eq!(page.status().as_u16(), 200, "{url}");
    let html = page.text().await.expect("its page");
    assert!(html.contains("<title>Status · dingrec</title>"), "{html}");
    let out = tokio::task::spawn_blocking(move || {
        let out = child.wait_with_output().expect("demo");
        reader.join().expect("reader");
        out
    })
    .await
    .expect("join");
    head.extend(seen.try_iter());
    let out = std::process::Output {
        stdout: (head.join("\n") + "\n").into_bytes(),
        ..out
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |policy: &str, needle: &str| text.lines().any(|l| l.contains(policy) && l.contains(needle));
    assert!(line("board-meeting", "succeeded"), "{text}");
    assert!(
        line("training-flaky", "systemError") && line("training-flaky", "success"),
        "retried: {text}"
    );
    assert!(
        line("already-ended", "roomClosed") && line("already-ended", "failed"),
        "failed: {text}"
    );
    assert!(
        line("weekly-sync", "meetingNotLive") && line("weekly-sync", "conf-weekly-sync-live"),
        "resolved: {text}"
    );
    // Six policies, one restart (the quarterly review's recording was stopped by a participant,
    // found by the watch, and started again) and one meeting nobody declared, found by its event.
    assert!(
        text.contains("8 occurrences: 7 succeeded (7 confirmed recording by a check), 1 failed"),
        "{text}"
    );
    assert!(text.contains("1 found by DingTalk's event"), "{text}");
    // The scheduled meeting: DingTalk's own setting, made ahead, recorded it; dingrec checked
    // first and sent no StartCloudRecord for it, then confirmed it.
    assert!(
        line("weekly-sync", "check:settings") && line("weekly-sync", "set"),
        "the setting made: {text}"
    );
    assert!(
        line("weekly-sync", "auto_recorded") && line("weekly-sync", "recording"),
        "recorded by the setting, confirmed: {text}"
    );
    assert!(
        text.contains("1 recorded by DingTalk's own auto-record setting"),
        "{text}"
    );
    assert!(
        text.lines()
            .filter(|l| l.contains("weekly-sync") && l.contains(" success "))
            .all(|l| l.contains("auto_recorded")),
        "no StartCloudRecord for it: {text}"
    );
    assert!(
        line("board-by-title", "event:meeting_status_change")
            && line("board-by-title", "conf-created-mid-tour")
            && line("board-by-title", "recording"),
        "the meeting found by its event, recorded and confirmed: {text}"
    );
    assert!(
        text.contains("1 restarted after a participant stopped the recording"),
        "{text}"
    );
    // The ops group heard of the failure and of the stopped recording, through its robot.
    assert!(text.contains("The ops group's DingTalk chat got"), "{text}");
    assert!(
        line("│ #### already-ended", "recording could not be started"),
        "the failure's alert: {text}"
    );
    assert!(line("│ - last code:", "roomClosed"), "{text}");
    assert!(
        line("│ #### quarterly-review", "recording stopped during the meeting"),
        "the stop's alert: {text}"
    );
    assert!(
        line("quarterly-review", "check:watch") && line("quarterly-review", "stopped"),
        "the watch saw it stopped: {text}"
    );
    assert!(line("quarterly-review", "video_found"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_and_the_tokens_appear_nowhere_after_every_error_path_at_trace_level() {
    const CANARY: &str = "CANARY-SECRET-7f3a9c1e";
    let scenario = |secret: &str| Scenario {
        app_key: Some("test-app-key".into()),
        app_secret: Some(secret.into()),
        meetings: vec![
            live(
                "busy",
                vec![
                    step("systemError", 1),
                    step("hang", 1),
                    step("reset", 1),
                    step("html", 1),
                    step("x5", 1),
                    step("json_array", 1),
                    step("partial", 1),
                ],
            ),
            MeetingSpec {
                state: Some(MeetingState::Ended),
                ..live("closed", vec![])
            },
            live("fine", vec![]),
        ],
        ..Scenario::default()
    };
    // Phase 1: DingTalk refuses the secret (invalidClientIdOrSecret), then the token endpoint is down.
    let f = fake(scenario("some-other-secret")).await;
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("app_secret"), format!("{CANARY}\n")).expect("secret");
    let retry =
        "    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 60 }\n    window: 1m\n";
    write_policies(
        dir.path(),
        "p.yaml",
        &format!(
            "{}{retry}{}{retry}{}{retry}",
            policy("busy", "busy", &at_in(300), FAST_RETRY)
                .replace("    retry: { initial_interval: 1s, maximum_interval: 1s }\n", ""),
            policy("closed", "closed", &at_in(300), FAST_RETRY)
                .replace("    retry: { initial_interval: 1s, maximum_interval: 1s }\n", ""),
            policy("fine", "fine", &at_in(300), FAST_RETRY)
                .replace("    retry: { initial_interval: 1s, maximum_interval: 1s }\n", ""),
        ),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "log:\n  level: trace\n");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace("request_timeout: 3s", "request_timeout: 1s"),
    )
    .expect("cfg");
    let mut d = Daemon::spawn(&cfg, &[]);
    d.wait_http(HANG).await;
    let db = dir.path().join("dingrec.db");
    wait_for("refused token calls", HANG, || {
        sqlite(
            &db,
            "SELECT COUNT(*) FROM attempts WHERE code = 'invalidClientIdOrSecret'",
        ) != "0"
    })
    .await;
    f.token_outage(Duration::from_millis(700));
    f.load(scenario(CANARY));
    // Phase 2: tokens flow; every fault on the way; a token expiry in the middle.
    wait_for("a recording", HANG, || {
        sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'") != "0"
    })
    .await;
    f.expire_tokens();
    wait_for("every occurrence final", HANG, || {
        sqlite(
            &db,
            "SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait')",
        ) == "0"
    })
    .await;
    let readyz = d.get("/readyz").await.expect("readyz").1;
    let metrics = d.get("/metrics").await.expect("metrics").1;
    d.signal("TERM");
    assert_eq!(d.wait(HANG).await, Some(0));

    let codes = sqlite(&db, "SELECT group_concat(DISTINCT code) FROM attempts");
    for code in [
        "invalidClientIdOrSecret",
        "systemError",
        "timeout",
        "connection_lost",
        "invalid_response",
        "ip_throttled",
        "roomClosed",
        "200",
    ] {
        assert!(
            codes.contains(code),
            "the run should exercise {code}; saw {codes}"
        );
    }
    let mut canaries = vec![CANARY.to_owned()];
    canaries.extend(
        f.requests()
            .into_iter()
            .filter_map(|r| r.token)
            .collect::<std::collections::BTreeSet<_>>(),
    );
    assert!(canaries.len() >= 2, "tokens were issued and used");
    let dump = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(".dump")
        .output()
        .expect("dump");
    let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
    let logs = d.stderr();
    assert!(logs.contains("TRACE"), "ran at TRACE level");
    for c in &canaries {
        assert!(!logs.contains(c.as_str()), "a secret in the logs: {c}");
        assert!(!dump.contains(c.as_str()), "a secret in the database: {c}");
        assert!(!readyz.contains(c.as_str()), "a secret in /readyz");
        assert!(!metrics.contains(c.as_str()), "a secret in /metrics");
    }
}

/// The access token outlives the process: a restarted daemon takes the one it kept in the database
/// (sealed: the token itself is not there) instead of paying for another fetch, and one that
/// DingTalk refuses is dropped there too and replaced by the next fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_uses_the_token_it_kept_and_a_refused_one_is_replaced() {
    let f = fake(Scenario {
        meetings: vec![
            live("conf-a", vec![]),
            live("conf-b", vec![]),
            live("conf-c", vec![]),
        ],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let db = dir.path().join("dingrec.db");
    let mut policies = String::new();
    let mut run = |name: &str| {
        policies.push_str(&policy(name, &format!("conf-{name}"), &at_in(300), FAST_RETRY));
        write_policies(dir.path(), "p.yaml", &policies);
        let (name, cfg, db) = (name.to_owned(), cfg.clone(), db.clone());
        async move {
            let mut d = Daemon::spawn(&cfg, &[]);
            wait_for(&format!("{name} recorded"), HANG, || {
                sqlite(
                    &db,
                    &format!("SELECT state FROM occurrences WHERE policy_name = '{name}'"),
                ) == "succeeded"
            })
            .await;
            d.signal("TERM");
            assert_eq!(d.wait(HANG).await, Some(0));
            d.child.id()
        }
    };
    let first = run("a").await;
    assert_eq!(f.token_calls(), 1);
    let host = dingrec::instance::hostname();
    let kept = || {
        sqlite(
            &db,
            "SELECT fetched_by || ' ' || length(sealed) FROM access_tokens",
        )
    };
    let tokens = || {
        f.start_requests()
            .into_iter()
            .filter_map(|r| r.token)
            .collect::<Vec<_>>()
    };
    // Nonce, the token, the tag: the fake's tokens are 32 characters.
    assert_eq!(kept(), format!("{host}:{first} {}", 12 + 32 + 16));

    run("b").await;
    assert_eq!(f.token_calls(), 1, "the restarted daemon took the kept token");
    let used = tokens();
    assert_eq!(used.len(), 2);
    assert_eq!(used[0], used[1], "both starts carried the same token");
    assert_eq!(
        sqlite(&db, "SELECT SUM(calls) FROM api_usage WHERE api = 'token'"),
        "1",
        "one fetch was paid for"
    );

    // DingTalk no longer takes the kept token (expired early, or the app secret was reset).
    f.expire_tokens();
    let third = run("c").await;
    assert_eq!(f.token_calls(), 2, "one new fetch");
    assert_eq!(
        kept(),
        format!("{host}:{third} {}", 12 + 32 + 16),
        "the new token replaced the refused one"
    );
    assert_ne!(tokens().last(), used.last());
    assert_eq!(
        sqlite(&db, "SELECT SUM(calls) FROM api_usage WHERE api = 'token'"),
        "2"
    );
}

/// A call in flight stays this daemon's: its lease (`scheduler.lease`, here 5 s) is renewed while
/// DingTalk takes its time, well past the lease the claim wrote, and the row names the holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_keeps_its_lease_and_status_shows_who_holds_it_live_gone_or_stopped() {
    let f = fake(Scenario {
        meetings: vec![live("conf-slow", vec![step("hang", 1)])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &policy("slow", "conf-slow", &at_in(300), FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "scheduler:\n  lease: 5s\n");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace("request_timeout: 3s", "request_timeout: 60s"),
    )
    .expect("cfg");
    let db = dir.path().join("dingrec.db");
    let mut d = Daemon::spawn(&cfg, &[]);
    // Renewed at least twice: the lease reaches 5 s past the claim plus two renewal periods.
    wait_for("the lease of the hanging call renewed", HANG, || {
        sqlite(
            &db,
            "SELECT COUNT(*) FROM attempts WHERE outcome IS NULL \
             AND (julianday(lease_until) - julianday(started_at)) * 86400 > 8",
        ) == "1"
    })
    .await;
    assert_eq!(f.start_requests().len(), 1, "one call, still unanswered");
    let me = format!("{}:{}", dingrec::instance::hostname(), d.child.id());
    assert_eq!(sqlite(&db, "SELECT instance FROM attempts"), me);
    // `/readyz` and `dingrec status` name the live daemon and what it holds.
    let readyz: serde_json::Value =
        serde_json::from_str(&d.get("/readyz").await.expect("readyz").1).expect("json");
    let live = &readyz["instances"];
    assert_eq!(live.as_array().map(Vec::len), Some(1), "{readyz}");
    assert_eq!(live[0]["instance"], me.as_str());
    assert_eq!(live[0]["attempts_in_flight"], 1);
    let status = |cfg: &std::path::Path| {
        let out = cli(cfg, &["status", "--format", "json"])
            .output()
            .expect("status");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .map(|i| {
                (
                    i["instance"].as_str().unwrap_or_default().to_owned(),
                    i["state"].as_str().unwrap_or_default().to_owned(),
                    i["attempts_in_flight"].as_u64().unwrap_or(99),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(status(&cfg), [(me.clone(), "live".to_owned(), 1)]);
    // Killed: it stops renewing; once its lease ran out it is gone, still holding its attempt
    // (under SQLite the next daemon's start closes it).
    d.signal("KILL");
    d.wait(HANG).await;
    wait_for("the killed daemon gone", HANG, || {
        status(&cfg) == [(me.clone(), "gone".to_owned(), 1)]
    })
    .await;
    let mut again = Daemon::spawn(&cfg, &[]);
    wait_for("the meeting recorded by the next daemon", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences") == "succeeded"
    })
    .await;
    let next = format!("{}:{}", dingrec::instance::hostname(), again.child.id());
    assert_eq!(
        status(&cfg),
        [
            (next.clone(), "live".to_owned(), 0),
            (me.clone(), "gone".to_owned(), 0)
        ],
        "the new daemon closed the killed one's attempt at its start"
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT group_concat(r, ' ') FROM (SELECT outcome || '@' || instance AS r FROM attempts ORDER BY id) AS t"
        ),
        format!("interrupted@{me} success@{next}")
    );
    again.signal("TERM");
    assert_eq!(again.wait(HANG).await, Some(0));
    assert_eq!(
        status(&cfg),
        [(next, "stopped".to_owned(), 0), (me, "gone".to_owned(), 0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_intent_and_outcome_the_attempt_is_interrupted_and_the_occurrence_finishes() {
    let f = fake(Scenario {
        meetings: vec![
            live("conf-done", vec![]),
            live("conf-slow", vec![step("hang", 1)]),
        ],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &format!(
            "{}{}",
            policy("done", "conf-done", &at_in(300), FAST_RETRY),
            policy("slow", "conf-slow", &at_in(1000), FAST_RETRY)
        ),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .expect("cfg")
            .replace("request_timeout: 3s", "request_timeout: 30s"),
    )
    .expect("cfg");
    let db = dir.path().join("dingrec.db");
    let mut d = Daemon::spawn(&cfg, &[]);
    wait_for("the hanging call", HANG, || {
        f.start_requests()
            .iter()
            .any(|r| r.id.as_deref() == Some("conf-slow"))
    })
    .await;
    wait_for("the first recording committed", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences WHERE policy_name = 'done'") == "succeeded"
    })
    .await;
    d.signal("KILL");
    d.wait(HANG).await;
    assert_eq!(
        sqlite(
            &db,
            "SELECT COUNT(*) FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE o.policy_name = 'slow' AND a.outcome IS NULL"
        ),
        "1",
        "the intent row was written before the call"
    );
    let killed = d.child.id();
    let again = Daemon::spawn(&cfg, &[]);
    wait_for("the occurrence to finish", HANG, || {
        sqlite(&db, "SELECT state FROM occurrences WHERE policy_name = 'slow'") == "succeeded"
    })
    .await;
    // Each attempt names the process that made it: the killed daemon's, then the new one's.
    let host = dingrec::instance::hostname();
    assert_eq!(
        sqlite(
            &db,
            "SELECT group_concat(code || ':' || outcome || ':' || instance, ' ') FROM (SELECT a.code, a.outcome, a.instance FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id WHERE o.policy_name = 'slow' ORDER BY a.attempt_no) AS t"
        ),
        format!(
            "interrupted:interrupted:{host}:{killed} 200:success:{host}:{}",
            again.child.id()
        )
    );
    let done_starts = f
        .start_requests()
        .iter()
        .filter(|r| r.id.as_deref() == Some("conf-done"))
        .count();
    assert_eq!(done_starts, 1, "a succeeded occurrence is never started again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_starts_a_recording_now_and_history_shows_it_in_every_format() {
    let f = fake(Scenario {
        meetings: vec![
            live("conf-m", vec![step("systemError", 1)]),
            live("today-conf", vec![]),
        ],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &policy("adhoc", "conf-m", "2031-01-01T09:00:00Z", FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let run = |args: &[&str]| cli(&cfg, args).output().expect("runs");
    apply_dir(&cfg, dir.path());
    let t = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || cli(&cfg, &["trigger", "adhoc"]).output().expect("trigger")
    })
    .await
    .expect("join");
    assert_eq!(t.status.code(), Some(0), "{}", String::from_utf8_lossy(&t.stderr));
    let out = String::from_utf8_lossy(&t.stdout);
    assert!(
        out.contains("manual") && out.contains("systemError") && out.contains("success"),
        "{out}"
    );
    let t = run(&["trigger", "adhoc", "--conference-id", "today-conf"]);
    assert_eq!(t.status.code(), Some(0), "{}", String::from_utf8_lossy(&t.stderr));
    let starts: Vec<_> = f.start_requests().into_iter().filter_map(|r| r.id).collect();
    assert_eq!(starts, ["conf-m", "conf-m", "today-conf"]);
    assert_eq!(run(&["trigger", "nobody"]).status.code(), Some(2));

    let json = run(&["history", "--policy", "adhoc", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    let occ = v.as_array().expect("array");
    assert_eq!(occ.len(), 2);
    assert!(
        occ.iter()
            .all(|o| o["trigger"] == "manual" && o["state"] == "succeeded")
    );
    assert_eq!(occ[0]["attempts"].as_array().map(Vec::len), Some(2));
    let csv =
        String::from_utf8_lossy(&run(&["history", "--conference", "today-conf", "--format", "csv"]).stdout)
            .into_owned();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one attempt: {csv}");
    assert!(lines[0].starts_with("DUE_AT,POLICY,STATE"));
    assert!(lines[1].contains(",today-conf,"));
    let failed =
        String::from_utf8_lossy(&run(&["history", "--since", "1h", "--state", "failed"]).stdout).into_owned();
    assert_eq!(failed.lines().count(), 2, "only the header: {failed}");
    let table = String::from_utf8_lossy(&run(&["history", "--since", "1h"]).stdout).into_owned();
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_database_refuses_before_touching_anything() {
    if !engine::sqlite_only("a second daemon on PostgreSQL is welcome: the multi-daemon tests") {
        return;
    }
    // The first daemon has a call in flight (the fake holds it) when the second one starts.
    let hold = Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_secs(8)),
    };
    let f = fake(Scenario {
        meetings: vec![live("held-conf", vec![hold])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &policy("held", "held-conf", &at_in(500), FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let mut first = Daemon::spawn(&cfg, &[("DINGREC_DINGTALK__REQUEST_TIMEOUT", "30s")]);
    wait_for("the first daemon's call", HANG, || !f.start_requests().is_empty()).await;
    let db = dir.path().join("dingrec.db");
    let before = sqlite(&db, "SELECT COUNT(*) || ':' || COUNT(outcome) FROM attempts");
    assert_eq!(before, "1:0", "one attempt, its call in flight");

    let mut second = Daemon::spawn(&cfg, &[]);
    assert_eq!(second.wait(HANG).await, Some(1), "{}", second.stderr());
    assert!(
        second.stderr().contains("another dingrec is running on"),
        "{}",
        second.stderr()
    );
    // It changed nothing: the first daemon's attempt was not closed as interrupted.
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'"),
        "0"
    );
    let until = tokio::time::Instant::now() + HANG;
    while sqlite(&db, "SELECT state FROM occurrences") != "succeeded" {
        assert!(
            tokio::time::Instant::now() < until,
            "the first daemon's outcome: {}\n{}",
            sqlite(&db, "SELECT * FROM audit_log"),
            first.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.start_requests().len(), 1, "the meeting was started once");
    first.signal("TERM");
    assert_eq!(first.wait(HANG).await, Some(0));
    // Once the first one is gone, a daemon starts on the same file.
    let third = Daemon::spawn(&cfg, &[]);
    third.wait_http(HANG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_stops_on_ctrl_c_and_cancels_its_occurrence() {
    let f = fake(Scenario {
        meetings: vec![live("hangs", vec![step("hang", 1)])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &policy("adhoc", "hangs", "2031-01-01T09:00:00Z", FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    apply_dir(&cfg, dir.path());
    let mut child = cli(&cfg, &["trigger", "adhoc"])
        .env("DINGREC_DINGTALK__REQUEST_TIMEOUT", "60s")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("trigger");
    wait_for("the trigger's call", HANG, || !f.start_requests().is_empty()).await;
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let until = tokio::time::Instant::now() + HANG;
    let code = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.code();
        }
        assert!(tokio::time::Instant::now() < until, "trigger ignored Ctrl-C");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(130));
    let db = dir.path().join("dingrec.db");
    assert_eq!(
        sqlite(
            &db,
            "SELECT o.state || ' ' || a.outcome FROM occurrences o JOIN attempts a ON a.occurrence_id = o.id"
        ),
        "cancelled interrupted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_ends_with_its_window() {
    let f = fake(Scenario {
        meetings: vec![live("busy", vec![step("systemError", 1000)])],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        "  - name: short\n    conference_id: busy\n    host_union_id: host-1\n    at: \"2031-01-01T09:00:00Z\"\n    window: 2s\n    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 1000 }\n",
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    apply_dir(&cfg, dir.path());
    let out =
        tokio::task::spawn_blocking(move || cli(&cfg, &["trigger", "short"]).output().expect("trigger"))
            .await
            .expect("join");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("occurrence expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_app_secret_is_one_error_line_and_shows_in_readyz_while_attempts_retry_quietly() {
    let f = fake(Scenario {
        app_secret: Some("the-right-secret".into()),
        unknown_conferences: dingrec::fake::UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    write_policies(
        dir.path(),
        "p.yaml",
        &policy("board", "c1", &at_in(200), FAST_RETRY),
    );
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let d = Daemon::spawn(&cfg, &[]);
    let db = dir.path().join("dingrec.db");
    wait_for("several refused attempts", HANG, || {
        sqlite(
            &db,
            "SELECT CASE WHEN COUNT(*) >= 4 THEN 1 ELSE 0 END FROM attempts WHERE code = 'invalidClientIdOrSecret'",
        ) == "1"
    })
    .await;
    let (_, body) = d.get("/readyz").await.expect("readyz");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["token"]["valid"], false, "{body}");
    assert_eq!(v["token"]["last_error"], "invalidClientIdOrSecret", "{body}");
    let log = d.stderr();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("invalidClientIdOrSecret"))
        .count();
    assert_eq!(errors, 1, "one ERROR line, not one per attempt:\n{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("WARN") && l.contains("invalidClientIdOrSecret")),
        "attempts retry quietly:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_worker_busy_the_loop_waits_instead_of_polling_the_database() {
    // Two workers, twelve meetings due at once, every call held 1 s by the fake, a rate limit:
    // for about six seconds every worker is busy and more is due.
    let slow = Step {
        answer: "ok".into(),
        status: None,
        times: 1,
        delay: Some(Duration::from_secs(1)),
    };
    let meetings: Vec<_> = (0..12)
        .map(|i| live(&format!("m{i}"), vec![slow.clone()]))
        .collect();
    let f = fake(Scenario {
        meetings,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let at = at_in(1500);
    let policies: String = (0..12)
        .map(|i| policy(&format!("p{i}"), &format!("m{i}"), &at, FAST_RETRY))
        .collect();
    write_policies(dir.path(), "p.yaml", &policies);
    let cfg = write_config(
        dir.path(),
        &f.base_url(),
        "scheduler:\n  max_in_flight: 2\nlog:\n  level: sqlx=trace,info\n",
    );
    let d = Daemon::spawn(&cfg, &[("DINGREC_DINGTALK__RATE_LIMIT", "20")]);
    let db = dir.path().join("dingrec.db");
    wait_for("all twelve recorded", HANG, || {
        sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'") == "12"
    })
    .await;
    let log = d.stderr();
    let asks = log.lines().filter(|l| l.contains("MIN(next_attempt_at)")).count();
    assert!(
        asks > 0,
        "the statement log is on:\n{}",
        &log[..log.len().min(2000)]
    );
    // A wake per finished call and per tick is a few dozen questions; polling every millisecond
    // through six busy seconds would be thousands.
    assert!(asks < 300, "the loop asked for the next due time {asks} times");
}

/// An idle daemon sleeps up to a minute (docs/operations.md, "An idle daemon"), yet a policy
/// applied beside it by another process (SQLite: its write to the file, seen through inotify;
/// PostgreSQL: `NOTIFY`) is planned at once and started at its time, not a minute late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::disallowed_methods)]
async fn an_idle_daemon_starts_a_policy_applied_beside_it_on_time() {
    let f = fake(Scenario {
        unknown_conferences: dingrec::fake::UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let d = Daemon::spawn(&cfg, &[]);
    // Serving, its first pass done: nothing to plan, so it sleeps until something tells it.
    wait_for_ready(&d).await;
    let team = dir.path().join("team.yaml");
    let due = Utc::now() + TimeDelta::seconds(5);
    std::fs::write(
        &team,
        format!(
            "policies:\n{}",
            policy(
                "applied",
                "conf-applied",
                &due.to_rfc3339_opts(SecondsFormat::Millis, true),
                FAST_RETRY
            )
        ),
    )
    .expect("team.yaml");
    apply_path(&cfg, &team);
    wait_for("the applied policy's start", HANG, || {
        !f.start_requests().is_empty()
    })
    .await;
    let start = f.start_requests().remove(0);
    assert_eq!(start.id.as_deref(), Some("conf-applied"));
    let late = start.at_ms - due.timestamp_millis();
    assert!(
        (0..2_000).contains(&late),
        "the start arrived {late} ms after its due time (an idle daemon that missed the apply wakes a minute later): {}",
        d.stderr()
    );
}

async fn wait_for_ready(d: &Daemon) {
    let until = tokio::time::Instant::now() + HANG;
    while !matches!(d.get("/readyz").await, Some((200, _))) {
        assert!(tokio::time::Instant::now() < until, "never ready: {}", d.stderr());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
