//! Shared helpers for the integration tests.

pub mod app;
pub mod browser;
pub mod daemon;
pub mod engine;
pub mod replay;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dingrec::clock::SystemClock;
use dingrec::config::{Credentials, DingTalkSettings};
use dingrec::dingtalk::DingTalkClient;

/// A deadline that only catches a hang: tests wait for conditions, never for a speed. Speed is the
/// benchmark's business (BENCHMARKS.md).
pub const HANG: Duration = Duration::from_secs(120);

/// One policy of a policy file: `name` records conference `conf` of host `host-1`, one meeting
/// at `at`; `more` is further keys, each a line indented four spaces (`"    window: 30m\n"`).
pub fn policy(name: &str, conf: &str, at: &str, more: &str) -> String {
    format!(
        "  - name: {name}\n    conference_id: {conf}\n    host_union_id: host-1\n    at: \"{at}\"\n{more}"
    )
}

/// Wait until `f` holds, looking every 20 ms; a test failure naming `what` after `limit` (a hang:
/// tests wait for conditions, never for a speed).
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + limit;
    while !f() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The wall clock, for tests of the real binary (which reads it too).
#[allow(clippy::disallowed_methods)]
pub fn wall() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

/// The fake DingTalk on a loopback port of its own.
pub async fn fake(s: dingrec::fake::Scenario) -> dingrec::fake::FakeDingTalk {
    dingrec::fake::FakeDingTalk::start(([127, 0, 0, 1], 0).into(), s)
        .await
        .expect("fake")
}

/// The entries of `n` one-off policies `prefix00000`… on meetings `prefix-conf-00000`… (host
/// `host-1`), due at `at`, each followed by `extra`.
pub fn oneoff_entries(prefix: &str, n: usize, at: chrono::DateTime<chrono::Utc>, extra: &str) -> String {
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    (0..n)
        .map(|i| {
            format!(
                "  - name: {prefix}{i:05}\n    conference_id: {prefix}-conf-{i:05}\n    host_union_id: host-1\n    at: \"{at}\"\n{extra}"
            )
        })
        .collect()
}

/// Whether this process runs as root; when not, says which test part is skipped and why.
pub fn is_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: {what} needs root (CI runs as root)");
    }
    root
}

pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dingtalk")
}

pub fn fixture(name: &str) -> serde_json::Value {
    let p = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("fixture JSON")
}

pub fn dingtalk_settings(base_url: &str) -> DingTalkSettings {
    DingTalkSettings {
        base_url: base_url.to_owned(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        ..DingTalkSettings::default()
    }
}

pub fn internal_credentials(key: &str, secret: &str) -> Credentials {
    Credentials::Internal {
        app_key: key.to_owned(),
        app_secret: secrecy::SecretString::from(secret.to_owned()),
    }
}

pub fn client(settings: &DingTalkSettings, creds: Option<Credentials>) -> DingTalkClient {
    DingTalkClient::new(settings, creds, None, Arc::new(SystemClock)).expect("client")
}

/// A live meeting hosted by `host-1`, answering `script` first.
pub fn live(id: &str, script: Vec<dingrec::fake::Step>) -> dingrec::fake::MeetingSpec {
    dingrec::fake::MeetingSpec {
        host_union_id: Some("host-1".into()),
        state: Some(dingrec::fake::MeetingState::Live),
        script,
        ..dingrec::fake::MeetingSpec::live(id)
    }
}

/// A scripted answer, `times` times.
pub fn step(answer: &str, times: u32) -> dingrec::fake::Step {
    dingrec::fake::Step {
        answer: answer.into(),
        status: None,
        times,
        delay: None,
    }
}

/// Ask a test's database with its engine's shell, as an operator would: `sqlite3` on the file
/// `db` (waiting up to 5 s for a lock), or `psql` when the test runs on PostgreSQL (its URL is
/// kept beside `db`, [`engine::database_yaml`]). Rows one per line, columns joined by `|`, as
/// `sqlite3` prints them; trimmed.
pub fn sqlite(db: &std::path::Path, sql: &str) -> String {
    let out = match engine::url_beside(db) {
        Some(url) => std::process::Command::new("psql")
            .args(["--no-psqlrc", "-X", "-A", "-t", "-F", "|", "-c", sql, &url])
            .output()
            .expect("psql is installed (see .ci/run)"),
        None => std::process::Command::new("sqlite3")
            .args(["-cmd", ".timeout 5000"])
            .arg(db)
            .arg(sql)
            .output()
            .expect("sqlite3 is installed (see .ci/run)"),
    };
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loopback address where nobody listens, held for as long as the returned socket lives:
/// bound but not listening, so a connection is refused and no other test can take the port
/// (a listener dropped right away frees its port for the next test that binds one).
pub fn refusing_addr() -> (tokio::net::TcpSocket, std::net::SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    (socket, addr)
}

/// Alerts go to the fake's robot `robot-token` ([`ops_robots`]), as destination `ops`, the
/// default route.
pub fn ops_robot(s: &mut dingrec::config::Settings) {
    let url = format!("{}/robot/send", s.dingtalk.base_url);
    s.alerts.destinations.insert(
        "ops".into(),
        dingrec::config::Destination {
            kind: dingrec::config::DestinationType::DingtalkRobot,
            url,
            access_token_file: Default::default(),
            access_token: Some(secrecy::SecretString::from("robot-token".to_owned())),
            secret_file: Default::default(),
            secret: None,
            at_mobiles: vec![],
        },
    );
    s.alerts.default = vec!["ops".into()];
}

/// The fake's robot that [`ops_robot`] sends to.
pub fn ops_robots() -> Vec<dingrec::fake::RobotSpec> {
    vec![dingrec::fake::RobotSpec {
        access_token: "robot-token".into(),
        ..dingrec::fake::RobotSpec::default()
    }]
}
