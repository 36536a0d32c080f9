//! The status page (docs/operations.md "The status page"): `dingrec run` against the
//! fake during a burst with failures, read over HTTP (its HTML and JSON, its headers, its
//! authentication) and in a real browser (Debian's Chromium, headless, over the DevTools
//! protocol: `support/browser.rs`).

use std::path::PathBuf;
use std::time::Duration;

use dingrec::fake::{EventSpec, FakeDingTalk, MeetingSpec, Scenario};
use serde_json::Value;

use crate::support::browser::{self, Browser};
use crate::support::daemon::{Daemon, cli, write_config, write_policies};
use crate::support::{HANG, fake, live, oneoff_entries, sqlite, step, wait_for, wall};

/// A title in Chinese, and one that would run script if it reached the page unescaped.
pub const CHINESE: &str = "Q4 董事会 · 季度审计";
pub const HOSTILE: &str = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>";

/// The burst: `ok` meetings that record, one whose host is wrong (failed,
/// `recordStartPermissionError`), one that never goes live inside its window (expired), two
/// meetings found by events (a Chinese title, a hostile one), and an alert webhook that refuses
/// every connection (its alerts stay undelivered).
pub struct Burst {
    pub fake: FakeDingTalk,
    /// The database, config and policies; removed with the burst.
    pub _dir: tempfile::TempDir,
    pub db: PathBuf,
    pub daemon: Daemon,
    pub total: usize,
}

pub const BOARD: &str = "  - name: board-meetings
    match:
      creators: [union-creator]
    host_union_id: creator
    window: 20m
    verify: false
";

/// The browser test's user and password (`http.auth`, on loopback too).
pub const USER: &str = "auditor";
pub const PASSWORD: &str = "correct horse battery staple";

pub async fn burst(ok: usize, due_in: Duration, auth: bool) -> Burst {
    let mut meetings: Vec<MeetingSpec> = (0..ok)
        .map(|i| live(&format!("rec-conf-{i:05}"), vec![]))
        .collect();
    meetings.push(live(
        "perm-conf-00000",
        vec![step("recordStartPermissionError", 1)],
    ));
    meetings.push(live("late-conf-00000", vec![step("systemError", 1000)]));
    let fake = fake(Scenario {
        meetings,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let at = wall() + chrono::TimeDelta::from_std(due_in).expect("due");
    let mut entries = oneoff_entries("rec", ok, at, "");
    entries.push_str(&oneoff_entries("perm", 1, at, ""));
    entries.push_str(&oneoff_entries(
        "late",
        1,
        at,
        "    window: 4s\n    retry: { initial_interval: 1s, maximum_interval: 1s }\n",
    ));
    entries.push_str(BOARD);
    write_policies(dir.path(), "burst.yaml", &entries);
    std::fs::write(
        dir.path().join("hook_secret"),
        "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=\n",
    )
    .expect("secret");
    let alerts = format!(
        "alerts:\n  destinations:\n    ops-hook:\n      type: webhook\n      url: http://127.0.0.1:9/hook\n      secret_file: {}\n  default: [ops-hook]\n",
        dir.path().join("hook_secret").display()
    );
    let cfg = write_config(dir.path(), &fake.base_url(), &alerts);
    let mut text = std::fs::read_to_string(&cfg).expect("config").replace(
        "  rate_limit: 0\n",
        "  rate_limit: 0\n  stream:\n    enabled: true\n    keepalive: 2s\n",
    );
    if auth {
        let pw = dir.path().join("http_password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).expect("password");
        text = text.replace(
            "  listen: 127.0.0.1:0\n",
            &format!(
                "  listen: 127.0.0.1:0\n  auth:\n    basic:\n      user: {USER}\n      password_file: {}\n",
                pw.display()
            ),
        );
    }
    std::fs::write(&cfg, text).expect("config");
    let db = dir.path().join("dingrec.db");
    let daemon = Daemon::spawn(&cfg, &[]);
    let connected = tokio::time::timeout(HANG, async {
        while fake.stream().connections() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    if connected.await.is_err() {
        panic!(
            "the daemon never connected to the Stream gateway:\n{}",
            daemon.stderr()
        );
    }
    Burst {
        fake,
        db,
        daemon,
        _dir: dir,
        total: ok + 2,
    }
}

impl Burst {
    /// The two meetings found by events, pushed now.
    pub fn push_titles(&mut self) {
        self.total += 2;
        for (conf, title) in [("zh-board-1", CHINESE), ("evil-board-1", HOSTILE)] {
            self.fake.push_event(&EventSpec {
                event_id: Some(format!("evt-{conf}")),
                title: Some(title.into()),
                creator_id: Some("union-creator".into()),
                ..EventSpec::created(conf)
            });
        }
    }

    /// Occurrences in `state`, as the database holds them.
    pub fn count(&self, state: &str) -> i64 {
        sqlite(
            &self.db,
            &format!("SELECT COUNT(*) FROM occurrences WHERE state = '{state}'"),
        )
        .parse()
        .expect("a count")
    }

    /// Until every occurrence of the burst and both event meetings are final.
    pub async fn settle(&self) {
        let total = self.total;
        wait_for("every occurrence final", HANG, || {
            let done: usize = sqlite(
                &self.db,
                "SELECT COUNT(*) FROM occurrences WHERE state IN ('succeeded', 'failed', 'expired', 'missed')",
            )
            .parse()
            .unwrap_or(0);
            done >= total
        })
        .await;
    }

    pub fn id_of(&self, policy: &str) -> i64 {
        sqlite(
            &self.db,
            &format!("SELECT id FROM occurrences WHERE policy_name = '{policy}' ORDER BY id LIMIT 1"),
        )
        .parse()
        .expect("an occurrence id")
    }

    pub fn id_of_conference(&self, conf: &str) -> i64 {
        sqlite(
            &self.db,
            &format!("SELECT id FROM occurrences WHERE conference_id = '{conf}' ORDER BY id LIMIT 1"),
        )
        .parse()
        .expect("an occurrence id")
    }
}

/// GET `path` with optional basic credentials: status, headers, body.
pub async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    auth: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut req = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10));
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_json_show_what_the_database_holds_escaped_and_read_only() {
    let mut b = burst(24, Duration::from_secs(2), false).await;
    let addr = b.daemon.http().await;
    b.settle().await;
    // The meetings found by events come last: the newest recorded.
    b.push_titles();
    b.settle().await;
    // The alerts of the failed and expired meetings are raised (and never delivered).
    if tokio::time::timeout(HANG, async {
        // Both raised; the first tried and refused (the destination then waits out its backoff).
        while sqlite(
            &b.db,
            "SELECT CASE WHEN COUNT(*) >= 2 AND COUNT(last_error) >= 1 THEN 1 ELSE 0 END FROM alerts",
        ) != "1"
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .is_err()
    {
        panic!(
            "no undelivered alerts: {}\n{}",
            sqlite(&b.db, "SELECT * FROM alerts"),
            b.daemon.stderr()
        );
    }

    // The JSON twin: counts as the database holds them.
    let (status, _, body) = get(addr, "/api/v1/summary", None).await;
    assert_eq!(status, 200, "{body}");
    let sum = json(&body);
    for state in ["succeeded", "failed", "expired"] {
        assert_eq!(sum["last_7_days"][state], b.count(state), "{state}: {body}");
    }
    assert_eq!(
        sum["last_7_days"]["succeeded"], 26,
        "24 one-offs and two event meetings"
    );
    let attention: Vec<&Value> = sum["attention"]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .collect();
    let perm = attention
        .iter()
        .find(|r| r["policy"] == "perm00000")
        .unwrap_or_else(|| panic!("the failed meeting needs attention: {body}"));
    assert_eq!(perm["code"], "recordStartPermissionError");
    assert!(
        perm["advice"].as_str().expect("advice").contains("host_union_id"),
        "{perm}"
    );
    assert_eq!(perm["alerts"][0]["destination"], "ops-hook", "{perm}");
    assert!(
        attention
            .iter()
            .any(|r| r["policy"] == "late00000" && r["state"] == "expired"),
        "{body}"
    );
    assert!(
        !sum["alerts"].as_array().expect("alerts").is_empty(),
        "undelivered alerts: {body}"
    );

    // The page: the same counts, the failed meeting with its code and advice, both titles as text.
    let (status, headers, html) = get(addr, "/", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.starts_with("default-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert!(html.len() <= 100 * 1024, "{} bytes", html.len());
    let succeeded = format!(
        "data-state=\"succeeded\"><span class=\"n\">{}</span>",
        b.count("succeeded")
    );
    assert!(html.contains(&succeeded), "{html}");
    assert!(
        html.contains("recordStartPermissionError") && html.contains("the host_union_id is not the meeting"),
        "{html}"
    );
    assert!(html.contains(CHINESE), "{html}");
    assert!(
        html.contains("&lt;img src=x onerror=&quot;window.__pwned=1&quot;&gt;&lt;script&gt;"),
        "{html}"
    );
    assert!(
        !html.contains("<img src=x") && !html.contains("<script>window"),
        "{html}"
    );
    assert!(
        !html.contains("<style") && !html.contains(" style=") && !html.contains("<script>"),
        "nothing inline: {html}"
    );

    // One meeting's timeline, in HTML and JSON.
    let perm_id = b.id_of("perm00000");
    let (status, _, page) = get(addr, &format!("/occurrences/{perm_id}"), None).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("attempt 1: fail") && page.contains("recordStartPermissionError"),
        "{page}"
    );
    assert!(page.contains("failed alert to ops-hook"), "{page}");
    let (status, _, body) = get(addr, &format!("/api/v1/occurrences/{perm_id}"), None).await;
    assert_eq!(status, 200);
    let d = json(&body);
    assert_eq!(d["occurrence"]["state"], "failed");
    let kinds: Vec<&str> = d["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds.first(), Some(&"attempt"), "{body}");
    assert!(kinds.contains(&"alert"), "{body}");
    let evil = b.id_of_conference("evil-board-1");
    let (_, _, body) = get(addr, &format!("/api/v1/occurrences/{evil}"), None).await;
    assert_eq!(
        json(&body)["occurrence"]["event"]["title"],
        HOSTILE,
        "the JSON keeps the title as DingTalk sent it"
    );

    // Filters and pages.
    let (status, _, body) = get(addr, "/api/v1/occurrences?state=succeeded&since=1h", None).await;
    assert_eq!(status, 200);
    let l = json(&body);
    assert_eq!(l["occurrences"].as_array().expect("rows").len(), 26);
    assert_eq!(l["next_page"], Value::Null);
    let (_, _, body) = get(addr, "/api/v1/occurrences?policy=perm00000", None).await;
    assert_eq!(json(&body)["occurrences"].as_array().expect("rows").len(), 1);
    let (status, _, html) = get(addr, "/occurrences?state=failed&since=7d", None).await;
    assert_eq!(status, 200);
    assert!(html.contains("perm00000") && !html.contains("rec00001"), "{html}");
    for (path, says) in [
        ("/api/v1/occurrences?state=done", "state: 'done' is not one of"),
        (
            "/api/v1/occurrences?since=yesterday",
            "since: 'yesterday' is neither",
        ),
        ("/api/v1/occurrences?page=0", "page: a number from 1 to 1000"),
        ("/api/v1/occurrences?color=red", "unknown field `color`"),
    ] {
        let (status, _, body) = get(addr, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, _, _) = get(addr, "/occurrences/999999", None).await;
    assert_eq!(status, 404);
    let (status, _, body) = get(addr, "/occurrences/%3Cscript%3E", None).await;
    assert_eq!(status, 404);
    assert!(
        body.contains("&lt;script&gt;") && !body.contains("<script>"),
        "{body}"
    );

    // Nothing but GET.
    let client = reqwest::Client::new();
    for path in ["/", "/api/v1/summary", "/occurrences/1", "/readyz"] {
        let resp = client
            .post(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 405, "POST {path}");
        let resp = client
            .delete(format!("http://{addr}{path}"))
            .send()
            .await
            .expect("answer");
        assert_eq!(resp.status().as_u16(), 405, "DELETE {path}");
    }
    // The page's files.
    for (path, kind) in [
        ("/assets/style.css", "text/css"),
        ("/assets/refresh.js", "text/javascript"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let (status, headers, _) = get(addr, path, None).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            headers["content-type"].to_str().unwrap_or("").starts_with(kind),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_page_at_a_hundred_rows_and_each_page_stays_small() {
    let b = burst(230, Duration::from_secs(2), false).await;
    let addr = b.daemon.http().await;
    b.settle().await;
    let mut seen = std::collections::BTreeSet::new();
    let mut page = 1;
    loop {
        let (status, _, html) = get(addr, &format!("/occurrences?page={page}"), None).await;
        assert_eq!(status, 200);
        assert!(html.len() <= 100 * 1024, "page {page}: {} bytes", html.len());
        let (_, _, body) = get(addr, &format!("/api/v1/occurrences?page={page}"), None).await;
        let l = json(&body);
        let rows = l["occurrences"].as_array().expect("rows");
        assert!(rows.len() <= 100);
        for r in rows {
            assert!(seen.insert(r["id"].as_i64().expect("id")), "a row on two pages");
            assert!(
                html.contains(&format!("data-occurrence=\"{}\"", r["id"])),
                "page {page} shows row {}",
                r["id"]
            );
        }
        match l["next_page"].as_i64() {
            Some(n) => {
                assert_eq!(rows.len(), 100, "a full page before the next");
                assert!(html.contains(&format!("page={n}")), "a link to page {n}");
                page = n;
            }
            None => break,
        }
    }
    assert_eq!(seen.len(), 232, "every occurrence, once");
    assert_eq!(page, 3);
    let (_, _, html) = get(addr, "/", None).await;
    assert!(html.len() <= 100 * 1024, "{} bytes", html.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_everything_but_healthz_and_a_reachable_listener_needs_it() {
    let fake = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    // Reachable from other machines without auth: refused, naming the key.
    let open = write_config(dir.path(), &fake.base_url(), "");
    let text = std::fs::read_to_string(&open).expect("config");
    std::fs::write(&open, text.replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0")).expect("config");
    let out = cli(&open, &["validate"]).output().expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("http.listen: 0.0.0.0:0 is reachable from other machines: set http.auth.basic"),
        "{err}"
    );

    // A password written into config.yaml: refused with its line.
    let written = dir.path().join("written.yaml");
    std::fs::write(
        &written,
        "http:\n  listen: 127.0.0.1:0\n  auth:\n    basic:\n      user: auditor\n      password: hunter2hunter2\n",
    )
    .expect("config");
    let out = cli(&written, &["validate"]).output().expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":6:7: http.auth.basic.password: secrets are not read from the config file"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // With auth, from a password file.
    std::fs::write(dir.path().join("http_password"), "correct horse battery staple\n").expect("pw");
    let guarded = write_config(dir.path(), &fake.base_url(), "");
    let text = std::fs::read_to_string(&guarded).expect("config");
    std::fs::write(
        &guarded,
        text.replace(
            "  listen: 127.0.0.1:0\n",
            &format!(
                "  listen: 0.0.0.0:0\n  auth:\n    basic:\n      user: auditor\n      password_file: {}\n",
                dir.path().join("http_password").display()
            ),
        ),
    )
    .expect("config");
    let d = Daemon::spawn(&guarded, &[]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http().await.port()));
    let good = Some(("auditor", "correct horse battery staple"));
    let (status, _, _) = get(addr, "/healthz", None).await;
    assert_eq!(status, 200, "probes need no password");
    for path in [
        "/",
        "/api/v1/summary",
        "/occurrences",
        "/readyz",
        "/metrics",
        "/assets/style.css",
    ] {
        let (status, headers, body) = get(addr, path, None).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(
            headers["www-authenticate"],
            "Basic realm=\"dingrec\", charset=\"UTF-8\""
        );
        assert_eq!(headers["x-frame-options"], "DENY", "headers on a refusal too");
        assert!(!body.contains("dingrec is"), "{body}");
        let (status, _, _) = get(addr, path, Some(("auditor", "wrong"))).await;
        assert_eq!(status, 401, "{path} with a wrong password");
        let (status, _, _) = get(addr, path, good).await;
        assert!(status == 200 || status == 503, "{path}: {status}");
    }
    let log = d.stderr();
    assert!(
        !log.contains("correct horse"),
        "the password is never logged:\n{log}"
    );
    drop(d);

    // The same password from the environment, and from systemd's credentials directory.
    for (env, value) in [
        ("DINGREC_HTTP__AUTH__BASIC__PASSWORD", "from the environment 1"),
        ("CREDENTIALS_DIRECTORY", "creds"),
    ] {
        let text = std::fs::read_to_string(&guarded).expect("config");
        let no_file = dir.path().join("nofile.yaml");
        std::fs::write(
            &no_file,
            text.replace(
                &format!(
                    "      password_file: {}\n",
                    dir.path().join("http_password").display()
                ),
                "",
            ),
        )
        .expect("config");
        let (value, expected) = if env == "CREDENTIALS_DIRECTORY" {
            let creds = dir.path().join(value);
            std::fs::create_dir_all(&creds).expect("creds");
            std::fs::write(creds.join("http_password"), "from credentials 12\n").expect("pw");
            (creds.display().to_string(), "from credentials 12")
        } else {
            (value.to_owned(), value)
        };
        let d = Daemon::spawn(&no_file, &[(env, &value)]);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http().await.port()));
        let (status, _, _) = get(addr, "/api/v1/summary", Some(("auditor", expected))).await;
        assert_eq!(status, 200, "{env}");
        let (status, _, _) = get(addr, "/api/v1/summary", None).await;
        assert_eq!(status, 401, "{env}");
        drop(d);
    }
}

/// Where the test's screenshots go (CI keeps `target/screenshots/`).
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

/// A condition on the page, as JavaScript: the count shown for `state`.
fn count_shown(state: &str, n: i64) -> String {
    format!("(document.querySelector('.count[data-state=\"{state}\"] .n') || {{}}).textContent === '{n}'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_page_follows_a_burst_with_failures_escapes_titles_and_reads_on_a_phone() {
    let Some(binary) = browser::find() else {
        return;
    };
    let mut b = burst(60, Duration::from_secs(8), true).await;
    let addr = b.daemon.http().await;
    let mut web = Browser::launch(&binary).await;
    web.viewport(1280, 800, false).await;

    // With the password (the HTTP test shows the refusals without it).
    web.basic_auth(USER, PASSWORD).await;

    // Opened during the burst: the page made then, and what it shows once it refreshed on its own.
    web.open(&format!("http://{addr}/")).await;
    let first = web
        .eval("document.getElementById('main').dataset.generatedAt")
        .await;
    assert!(first.is_string(), "{first}");
    web.screenshot(&screenshots().join("status-during-burst-1280.png"))
        .await;
    wait_for("the burst's starts", HANG, || b.fake.starts_for("rec") == 60).await;
    b.push_titles();
    b.settle().await;
    for state in ["succeeded", "failed", "expired", "missed"] {
        let n = b.count(state);
        web.wait_until(
            &format!("the page's {state} count to be the database's ({n})"),
            &count_shown(state, n),
            HANG,
        )
        .await;
    }
    assert_eq!(b.count("succeeded"), 62);
    let now = web
        .eval("document.getElementById('main').dataset.generatedAt")
        .await;
    assert_ne!(now, first, "the counts came by the page's own refresh");
    // The alerts to the refusing webhook are raised by now (they follow the final states).
    web.wait_until(
        "the undelivered alerts",
        "document.querySelectorAll('#alerts tbody tr').length >= 2",
        HANG,
    )
    .await;

    // The failed meeting: its code and what to do.
    let perm = web
        .eval(
            "(() => { const r = [...document.querySelectorAll('#attention tbody tr')].find(r => r.innerText.includes('perm00000'));
                      return r ? [r.querySelector('code').innerText, r.querySelector('.advice').innerText, r.innerText] : null; })()",
        )
        .await;
    assert_eq!(perm[0], "recordStartPermissionError", "{perm}");
    assert!(
        perm[1]
            .as_str()
            .unwrap_or("")
            .starts_with("the host_union_id is not the meeting's host"),
        "{perm}"
    );
    assert!(
        perm[2].as_str().unwrap_or("").contains("failed → ops-hook"),
        "the alert sent: {perm}"
    );

    // The Chinese title, rendered; the hostile one shown as text, and nothing of it ran.
    let recorded = web.eval("document.getElementById('recorded').innerText").await;
    let recorded = recorded.as_str().unwrap_or("");
    assert!(recorded.contains(CHINESE), "{recorded}");
    assert!(
        recorded.contains(HOSTILE),
        "the hostile title as text: {recorded}"
    );
    let width = web
        .eval("[...document.querySelectorAll('#recorded .title')].find(t => t.innerText.includes('董事会')).getBoundingClientRect().width")
        .await;
    assert!(
        width.as_f64().unwrap_or(0.0) > 80.0,
        "the title takes room: {width}"
    );
    assert_eq!(
        web.eval("typeof window.__pwned").await,
        "undefined",
        "no script of the title ran"
    );
    assert_eq!(
        web.eval("document.querySelectorAll('img, main script').length")
            .await,
        0,
        "no element came from a title"
    );
    web.screenshot(&screenshots().join("status-1280.png")).await;
    if std::env::var("TEST_README_SCREENSHOT").is_ok_and(|v| v == "1") {
        web.screenshot_window(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/images/status-page.png"))
            .await;
    }

    // One meeting's timeline.
    let id = b.id_of("perm00000");
    web.open(&format!("http://{addr}/occurrences/{id}")).await;
    let items = web
        .eval("[...document.querySelectorAll('.timeline li')].map(li => li.dataset.kind)")
        .await;
    assert_eq!(items[0], "attempt", "{items}");
    assert!(
        items.as_array().is_some_and(|a| a.iter().any(|k| k == "alert")),
        "{items}"
    );
    web.screenshot(&screenshots().join("occurrence-1280.png")).await;

    // A phone: nothing wider than the screen, the counts and the failure still there.
    web.viewport(390, 844, true).await;
    web.open(&format!("http://{addr}/")).await;
    let widths = web
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        .await;
    assert_eq!(widths[0], widths[1], "no sideways scrolling at 390 px: {widths}");
    assert_eq!(widths[1], 390);
    web.wait_until(
        "the counts on a phone",
        &count_shown("failed", b.count("failed")),
        HANG,
    )
    .await;
    let card = web
        .eval("document.querySelector('.count[data-state=\"failed\"]').getBoundingClientRect().right")
        .await;
    assert!(card.as_f64().unwrap_or(999.0) <= 390.0, "{card}");
    web.screenshot(&screenshots().join("status-390.png")).await;
    web.open(&format!("http://{addr}/occurrences?state=failed&since=7d"))
        .await;
    let widths = web
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        .await;
    assert_eq!(widths[0], widths[1], "the list at 390 px: {widths}");
    web.screenshot(&screenshots().join("occurrences-390.png")).await;

    assert!(
        web.problems().is_empty(),
        "the browser reported: {:#?}",
        web.problems()
    );
}

/// The page's URLs the README and docs/ name (`http://127.0.0.1:9477/…`, and the paths in
/// backquotes), each fetched from a running daemon.
fn documented_paths() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![std::fs::read_to_string(root.join("README.md")).expect("README")];
    for e in std::fs::read_dir(root.join("docs")).expect("docs") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "md") {
            texts.push(std::fs::read_to_string(p).expect("doc"));
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    let end = |c: char| c.is_whitespace() || matches!(c, '`' | '\'' | '"' | ')' | '|');
    for text in &texts {
        for (i, _) in text.match_indices("http://127.0.0.1:9477/") {
            let rest = &text[i + "http://127.0.0.1:9477".len()..];
            paths.insert(rest[..rest.find(end).unwrap_or(rest.len())].to_owned());
        }
        for prefix in ["`/api/v1/", "`/occurrences"] {
            for (i, _) in text.match_indices(prefix) {
                let rest = &text[i + 1..];
                paths.insert(rest[..rest.find(end).unwrap_or(rest.len())].to_owned());
            }
        }
    }
    paths.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_page_url_and_the_auth_example_in_the_docs_work_as_written() {
    let b = burst(3, Duration::from_secs(1), false).await;
    let addr = b.daemon.http().await;
    b.settle().await;
    let id = b.id_of("perm00000").to_string();
    let paths = documented_paths();
    for must in [
        "/",
        "/api/v1/summary",
        "/api/v1/occurrences/{id}",
        "/occurrences?state=failed&since=7d",
    ] {
        assert!(paths.iter().any(|p| p == must), "the docs name {must}: {paths:?}");
    }
    for path in paths.iter().filter(|p| !p.contains('…')) {
        let path = path.replace("{id}", &id);
        let (status, headers, body) = get(addr, &path, None).await;
        assert!(
            status == 200 || (path == "/readyz" && status == 503),
            "{path}: {status} {body}"
        );
        if path.starts_with("/api/") {
            assert!(
                headers["content-type"]
                    .to_str()
                    .unwrap_or("")
                    .starts_with("application/json"),
                "{path}"
            );
            json(&body);
        }
    }
    drop(b);

    // docs/operations.md's `http:` example, its password file made as the docs say.
    let ops = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"))
        .expect("operations.md");
    let start = ops.find("```yaml\nhttp:\n").expect("the http.auth example") + "```yaml\n".len();
    let example = &ops[start..start + ops[start..].find("```").expect("its end")];
    let fake = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let pw = dir.path().join("http_password");
    let make = ops
        .split("```sh\n")
        .find(|b| b.contains("/etc/dingrec/http_password") && b.contains("openssl rand"))
        .and_then(|b| b.split("```").next())
        .expect("the password's commands");
    let script = make
        .replace("sudo ", "")
        .replace("/etc/dingrec/http_password", &pw.display().to_string());
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = std::fs::read_to_string(&pw)
        .expect("password")
        .trim_end()
        .to_owned();
    assert!(password.len() >= 12, "{password:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&pw).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let cfg = write_config(dir.path(), &fake.base_url(), "");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let http = example
        .replace("/etc/dingrec/http_password", &pw.display().to_string())
        .replace("0.0.0.0:9477", "0.0.0.0:0");
    std::fs::write(&cfg, text.replace("http:\n  listen: 127.0.0.1:0\n", &http)).expect("config");
    let out = cli(&cfg, &["validate"]).output().expect("validate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::spawn(&cfg, &[]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.http().await.port()));
    assert_eq!(get(addr, "/api/v1/summary", None).await.0, 401);
    assert_eq!(
        get(addr, "/api/v1/summary", Some(("auditor", &password))).await.0,
        200
    );
    assert_eq!(get(addr, "/healthz", None).await.0, 200);
}
