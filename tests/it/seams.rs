//! Where two documented things meet (RELIABILITY.md, "Seams"): `apply` beside the daemon's own
//! policy folder, secrets from the environment beside the config file, versions beside read-only
//! commands. Each test here failed before its fix.

use std::path::Path;
use std::time::Duration;

use crate::support::daemon::{Daemon, cli, write_config};
use crate::support::{HANG, fake, wall};
use dingrec::fake::Scenario;

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `dingrec policies --format json` as (name, enabled, source).
fn policies(config: &Path) -> Vec<(String, bool, String)> {
    let v = json(
        &cli(config, &["policies", "--format", "json"])
            .output()
            .expect("policies"),
    );
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_owned(),
                p["enabled"].as_bool().unwrap_or_default(),
                p["source"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `dingrec --config <config> <args>`, which must exit `code`; its stderr.
fn exits(config: &Path, args: &[&str], code: i32) -> String {
    let out = cli(config, args).output().expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    err
}

fn enabled(config: &Path, name: &str) -> Option<bool> {
    policies(config)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, e, _)| e)
}

fn entry(name: &str) -> String {
    let at = (wall() + chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!("  - name: {name}\n    conference_id: conf-{name}\n    host_union_id: host-1\n    at: \"{at}\"\n")
}

async fn until(what: &str, daemon: &Daemon, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {HANG:?}\n{}",
            daemon.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The README's workflow: `dingrec apply team.yaml`, then the daemon with the default config
/// (`policies.paths` a folder, `prune: true`) and that folder empty. The applied policy stays
/// enabled; the daemon prunes only what came from its own folder; a folder emptied under it
/// changes nothing and raises `policy_files_empty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_policy_survives_the_daemons_own_folder_and_an_emptied_folder_changes_nothing() {
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    // An alert destination, so that the alert has a row (delivery to a closed port fails: fine).
    std::fs::write(dir.path().join("hook_secret"), "s3cret\n").expect("secret");
    let config = write_config(
        dir.path(),
        &f.base_url(),
        &format!(
            "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: http://127.0.0.1:9/hook\n      secret_file: {}\n  default: [pager]\n",
            dir.path().join("hook_secret").display()
        ),
    );
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    exits(&config, &["apply", &team.to_string_lossy()], 0);

    let daemon = Daemon::spawn(&config, &[]);
    daemon.wait_http(HANG).await;
    let ps = policies(&config);
    assert_eq!(ps.len(), 1);
    assert!(
        ps[0].1,
        "the applied policy is disabled at start:\n{}",
        daemon.stderr()
    );
    assert!(
        ps[0].2.starts_with(&team.to_string_lossy().into_owned()),
        "`policies` names the file that owns it: {ps:?}"
    );

    // A policy of the daemon's own folder is applied on SIGHUP, beside the other.
    let folder = dir.path().join("policies");
    std::fs::write(folder.join("f.yaml"), format!("policies:\n{}", entry("weekly"))).expect("f");
    daemon.signal("HUP");
    until("the folder's policy applied", &daemon, || {
        enabled(&config, "weekly") == Some(true)
    })
    .await;

    // The folder emptied (a failed mount, a wiped deploy): nothing changes, an ERROR and an alert.
    std::fs::remove_file(folder.join("f.yaml")).expect("rm");
    daemon.signal("HUP");
    until("the refusal logged", &daemon, || {
        daemon.stderr().contains("hold no policy")
    })
    .await;
    assert!(daemon.stderr().contains("ERROR"), "{}", daemon.stderr());
    assert_eq!(
        enabled(&config, "weekly"),
        Some(true),
        "an empty folder disabled its policy"
    );
    assert_eq!(enabled(&config, "board"), Some(true));
    let alerts = json(
        &cli(&config, &["alerts", "--format", "json"])
            .output()
            .expect("alerts"),
    );
    assert!(
        alerts
            .as_array()
            .expect("array")
            .iter()
            .any(|a| a["event"] == "policy_files_empty"),
        "no policy_files_empty alert: {alerts}"
    );
    let (_, ready) = daemon.get("/readyz").await.expect("readyz");
    assert!(
        ready.contains("hold no policy"),
        "/readyz shows the refusal: {ready}"
    );

    // Another policy in the folder: the folder's old one is pruned (it is the daemon's), the
    // applied one is not.
    std::fs::write(folder.join("g.yaml"), format!("policies:\n{}", entry("daily"))).expect("g");
    daemon.signal("HUP");
    until("the folder's old policy pruned", &daemon, || {
        enabled(&config, "weekly") == Some(false)
    })
    .await;
    assert_eq!(enabled(&config, "daily"), Some(true));
    assert_eq!(
        enabled(&config, "board"),
        Some(true),
        "the daemon pruned a policy it does not own"
    );
}

/// `apply --prune` of files with no policy at all is refused unless `--allow-empty`; `plan`
/// names the source of what a prune would disable.
#[test]
fn apply_prune_of_no_policy_needs_allow_empty_and_plan_names_what_it_would_disable() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    let team = team.to_string_lossy().into_owned();
    assert_eq!(
        cli(&config, &["apply", &team])
            .output()
            .expect("apply")
            .status
            .code(),
        Some(0)
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("dir");
    let empty = empty.to_string_lossy().into_owned();
    let plan = cli(&config, &["plan", "--prune", &empty]).output().expect("plan");
    assert_eq!(plan.status.code(), Some(3));
    let text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        text.contains("- board (disabled") && text.contains(&format!("from {team}:")),
        "{text}"
    );

    let refused = cli(&config, &["apply", "--prune", &empty])
        .output()
        .expect("apply");
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--allow-empty"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        enabled(&config, "board"),
        Some(true),
        "a refused apply changed something"
    );

    let allowed = cli(&config, &["apply", "--prune", "--allow-empty", &empty])
        .output()
        .expect("apply");
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert_eq!(enabled(&config, "board"), Some(false));
}

/// The database one migration behind this binary (`Older`), or migrated by a newer dingrec
/// (`Newer`: a version this binary does not know recorded as applied).
#[derive(Clone, Copy, PartialEq)]
enum Schema {
    Older,
    Newer,
}

async fn database_at(config: &Path, schema: Schema) {
    let settings = dingrec::config::Settings::load(Some(config)).expect("settings");
    let store = dingrec::store::Store::open_unmigrated(&settings.database)
        .await
        .expect("open");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(if crate::support::engine::postgres() {
        "migrations-postgres"
    } else {
        "migrations"
    });
    let all = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    let last = all.iter().map(|m| m.version).max().expect("some");
    let keep: Vec<sqlx::migrate::Migration> = all
        .iter()
        .filter(|m| schema == Schema::Newer || m.version < last)
        .cloned()
        .collect();
    let migrator = sqlx::migrate::Migrator::with_migrations(keep);
    let future = |checksum: &str| {
        sqlx::AssertSqlSafe(format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99991231000001, 'from a newer dingrec', TRUE, {checksum}, 1)"
        ))
    };
    match store.postgres_pool() {
        Some(pool) => {
            migrator.run(pool).await.expect("migrate");
            if schema == Schema::Newer {
                sqlx::query(future("'\\x00'::bytea"))
                    .execute(pool)
                    .await
                    .expect("future");
            }
        }
        None => {
            migrator
                .run(store.sqlite_pool().expect("SQLite"))
                .await
                .expect("migrate");
            if schema == Schema::Newer {
                sqlx::query(future("x'00'"))
                    .execute(store.sqlite_pool().expect("SQLite"))
                    .await
                    .expect("future");
            }
        }
    }
    store.close().await;
}

fn migrations_recorded(config: &Path) -> String {
    // The bookkeeping itself, read without dingrec: SQLite's file or PostgreSQL's table.
    let dir = config.parent().expect("dir");
    match crate::support::engine::url_beside(&dir.join("dingrec.db")) {
        Some(url) => {
            let o = std::process::Command::new("psql")
                .args([
                    "--no-psqlrc",
                    "-X",
                    "-A",
                    "-t",
                    "-c",
                    "SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations",
                    &url,
                ])
                .output()
                .expect("psql");
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
        None => {
            let o = std::process::Command::new("sqlite3")
                .arg(dir.join("dingrec.db"))
                .arg("SELECT group_concat(version) FROM _sqlx_migrations")
                .output()
                .expect("sqlite3");
            String::from_utf8_lossy(&o.stdout).into_owned()
        }
    }
}

/// An upgraded binary beside a database the old one still runs on: the read-only commands read
/// nothing, write nothing and say to migrate (exit 65); `dingrec migrate` moves it on. A database
/// a newer dingrec migrated: every command, `run` included, says "upgrade dingrec" and exits 65,
/// which the unit's `RestartPreventExitStatus=` lists, so systemd does not restart it in a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_never_crash_loop_and_read_only_commands_never_migrate() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    database_at(&config, Schema::Older).await;
    let before = migrations_recorded(&config);
    for cmd in [
        &["history"][..],
        &["policies"],
        &["next"],
        &["quota"],
        &["status"],
        &["alerts"],
    ] {
        let err = exits(&config, cmd, 65);
        assert!(
            err.contains("the database is at schema") && err.contains("dingrec migrate"),
            "{cmd:?}: {err}"
        );
        assert_eq!(
            migrations_recorded(&config),
            before,
            "{cmd:?} migrated the database"
        );
    }
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    // `apply` does not migrate an existing database either.
    exits(&config, &["apply", &team.to_string_lossy()], 65);
    assert_eq!(migrations_recorded(&config), before);

    exits(&config, &["migrate"], 0);
    exits(&config, &["history"], 0);

    // Newer than this binary.
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "http://127.0.0.1:9", "");
    database_at(&config, Schema::Newer).await;
    for cmd in [
        &["history"][..],
        &["migrate"],
        &["apply", &team.to_string_lossy()],
        &["run"],
    ] {
        let err = exits(&config, cmd, 65);
        assert!(
            err.contains("this dingrec knows") && err.contains("upgrade dingrec"),
            "{cmd:?}: {err}"
        );
        assert!(
            !err.contains("VersionMissing") && !err.contains("was previously applied"),
            "{err}"
        );
    }
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/dingrec.service"))
        .expect("unit");
    let prevent = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .expect("RestartPreventExitStatus=");
    let codes: Vec<&str> = prevent.split_whitespace().collect();
    assert!(codes.contains(&"65") && codes.contains(&"78"), "{prevent}");
}

/// A migration outside sqlx's transaction (the rebuilds of `occurrences`) committed, and dingrec
/// stopped before sqlx recorded it: the next start finishes the job, by recording it (the
/// verification rebuild, which could not run twice) or by running it again (the events rebuild,
/// written to), and nothing of what the database held is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_between_the_rebuild_and_its_record_is_finished_at_the_next_start() {
    if !crate::support::engine::sqlite_only("the rebuild is SQLite's") {
        return;
    }
    let all = sqlx::migrate::Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .await
        .expect("migrations");
    let rebuilds: Vec<_> = all.iter().filter(|m| m.no_tx).cloned().collect();
    assert!(rebuilds.len() >= 2, "the verification and the events rebuilds");
    for rebuild in rebuilds {
        let dir = tempfile::tempdir().expect("tmp");
        let config = write_config(dir.path(), "http://127.0.0.1:9", "");
        let settings = dingrec::config::Settings::load(Some(&config)).expect("settings");
        let store = dingrec::store::Store::open_unmigrated(&settings.database)
            .await
            .expect("open");
        let pool = store.sqlite_pool().expect("SQLite");
        let before: Vec<_> = all
            .iter()
            .filter(|m| m.version < rebuild.version)
            .cloned()
            .collect();
        sqlx::migrate::Migrator::with_migrations(before)
            .run(pool)
            .await
            .expect("earlier migrations");
        sqlx::query(
            "INSERT INTO policies (name, conference_id, host_union_id, layout, small_window_position, at, timezone, \
             start_offset_ms, window_ms, retry, skip_dates, enabled, source, created_at, updated_at) VALUES \
             ('board', 'c1', 'h1', 'speech', 'relative_right', '2030-01-01T00:00:00Z', 'UTC', 0, 60000, '{}', '[]', 1, 'x:1', \
             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')",
        )
        .execute(pool)
        .await
        .expect("a policy");
        sqlx::query(
            "INSERT INTO occurrences (policy_id, policy_name, due_at, window_ends_at, created_at, updated_at) \
             VALUES (1, 'board', '2030-01-01T00:00:00.000Z', '2030-01-01T00:01:00.000Z', 'x', 'x')",
        )
        .execute(pool)
        .await
        .expect("an occurrence");
        sqlx::query("INSERT INTO attempts (occurrence_id, attempt_no, started_at) VALUES (1, 1, 'x')")
            .execute(pool)
            .await
            .expect("an attempt");
        // The body alone, as sqlx runs it, without the record.
        let mut conn = pool.acquire().await.expect("conn");
        sqlx::raw_sql(rebuild.sql.clone())
            .execute(&mut *conn)
            .await
            .expect("the body");
        drop(conn);
        store.close().await;

        exits(&config, &["migrate"], 0);
        exits(&config, &["policies"], 0);
        assert_eq!(enabled(&config, "board"), Some(true), "after {}", rebuild.version);
        let db = dir.path().join("dingrec.db");
        let counts = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(
                "SELECT (SELECT COUNT(*) FROM occurrences) || ' ' || (SELECT COUNT(*) FROM attempts); \
                 PRAGMA foreign_key_check; PRAGMA integrity_check;",
            )
            .output()
            .expect("sqlite3");
        assert_eq!(
            String::from_utf8_lossy(&counts.stdout),
            "1 1\nok\n",
            "after {}: {}",
            rebuild.version,
            String::from_utf8_lossy(&counts.stderr)
        );
    }
}

/// A throwaway PostgreSQL that takes TLS only (`scripts/pg start-tls`), stopped when dropped.
struct TlsCluster {
    dir: tempfile::TempDir,
    url: String,
}

impl TlsCluster {
    fn start() -> TlsCluster {
        let dir = tempfile::tempdir().expect("tmp");
        let out = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg"))
            .arg("start-tls")
            .arg(dir.path())
            .output()
            .expect("scripts/pg");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        TlsCluster { dir, url }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pg"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// The URL the docs recommend (`sslmode=verify-full`) works against a server whose certificate
/// a CA of the operator's signs (`sslrootcert`); that server refuses plaintext, so dingrec spoke
/// TLS; a certificate from another CA is refused.
#[test]
fn postgresql_over_tls_verifies_the_server_named_in_the_url() {
    if crate::support::engine::postgres() {
        eprintln!("skipped on the PostgreSQL pass: the test runs its own TLS cluster, once");
        return;
    }
    let cluster = TlsCluster::start();
    let dir = tempfile::tempdir().expect("tmp");
    let team = dir.path().join("team.yaml");
    std::fs::write(&team, format!("policies:\n{}", entry("board"))).expect("team");
    let team = team.to_string_lossy().into_owned();
    let config_for = |url: &str| {
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            format!("database:\n  url: \"{url}\"\ndefaults:\n  timezone: UTC\n"),
        )
        .expect("config");
        path
    };

    let config = config_for(&cluster.url);
    exits(&config, &["apply", &team], 0);
    assert_eq!(enabled(&config, "board"), Some(true));

    let plain = config_for(&cluster.url.replace("sslmode=verify-full", "sslmode=disable"));
    // The server refuses plaintext (else the test would prove nothing).
    exits(&plain, &["policies"], 1);

    let other = dir.path().join("other-ca");
    crate::support::tls::self_signed(
        &other.with_extension("crt"),
        &other.with_extension("key"),
        "/CN=another CA",
        None,
    );
    let ca = cluster
        .url
        .rsplit_once("sslrootcert=")
        .map(|(_, ca)| ca.to_owned())
        .expect("ca");
    let wrong = config_for(
        &cluster
            .url
            .replace(&ca, &other.with_extension("crt").to_string_lossy()),
    );
    // A server certificate of another CA is not trusted.
    let err = exits(&wrong, &["policies"], 1);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

/// 50 codes DingTalk never documented make one `other` series, not 50; a code or a message as
/// long as a page is stored cut to its documented size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_make_one_metric_series_and_long_ones_are_stored_capped() {
    use crate::support::app::{TestApp, at_in};
    use crate::support::{live, step};
    let long = format!("c{}", "x".repeat(300));
    let mut meetings: Vec<dingrec::fake::MeetingSpec> = (0..50)
        .map(|i| {
            let mut s = step(
                &format!("undocumented{:08x}", (i as u32).wrapping_mul(2_654_435_761)),
                1,
            );
            s.status = Some(400);
            live(&format!("rnd-{i:02}"), vec![s])
        })
        .collect();
    let mut s = step(&long, 1);
    s.status = Some(400);
    meetings.push(live("long", vec![s]));
    let app = TestApp::start(
        Scenario {
            meetings,
            ..Scenario::default()
        },
        |c| {
            let at = at_in(c, 500);
            let mut y = String::from("policies:\n");
            for i in 0..50 {
                y.push_str(&format!(
                    "  - name: rnd-{i:02}\n    conference_id: rnd-{i:02}\n    host_union_id: host-1\n    at: \"{at}\"\n"
                ));
            }
            y.push_str(&format!("  - name: long\n    conference_id: long\n    host_union_id: host-1\n    at: \"{at}\"\n"));
            y
        },
    )
    .await;
    let rows = app.wait_final(51, HANG).await;
    assert!(
        rows.iter()
            .all(|o| o.state == dingrec::domain::OccurrenceState::Failed),
        "{rows:#?}"
    );
    let metrics = app.metrics().await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("dingrec_attempts_total{"))
        .collect();
    assert_eq!(series.len(), 1, "{series:#?}");
    assert!(
        series[0].contains("code=\"other\"") && series[0].ends_with(" 51"),
        "{series:#?}"
    );
    let stored = TestApp::occurrence(&rows, "long").attempts[0]
        .code
        .clone()
        .unwrap_or_default();
    assert_eq!(
        stored.chars().count(),
        dingrec::domain::outcome::MAX_CODE_CHARS,
        "{stored}"
    );
    assert!(long.starts_with(stored.trim_end_matches('…')));
}

/// The p50 of the first attempts' lateness (sent − due, ms) of the policies named `prefix…`.
fn first_call_p50(db: &Path, prefix: &str) -> f64 {
    let rows = crate::support::sqlite(
        db,
        &format!(
            "SELECT (julianday(a.sent_at) - julianday(o.due_at)) * 86400000 FROM attempts a \
             JOIN occurrences o ON o.id = a.occurrence_id WHERE a.attempt_no = 1 AND o.policy_name LIKE '{prefix}%'"
        ),
    );
    let mut ms: Vec<f64> = rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(!ms.is_empty(), "no first attempts of {prefix}");
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// The HTTP surface holds during a burst: 300 connections that send half a request and 50
/// clients calling /readyz in a loop, beside 300 meetings due at once. Every meeting starts once,
/// the first calls are as prompt as in the same burst without them (within 2×, with a 50 ms
/// floor for this machine's noise), /healthz answers throughout, the half-open connections are
/// closed (by the header timeout, or to make room at the connection cap), and SIGTERM stops the
/// daemon within its bound with the clients still at it.
///
/// It compares two timings, so it runs alone: `scripts/test` runs it after the suite
/// (`--ignored`), where no other test's load falls on one burst and not the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "compares two bursts' timings: scripts/test runs it alone"]
async fn a_probe_flood_and_half_open_connections_during_a_burst_hold_nothing_up() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const N: usize = 300;
    let f = fake(Scenario {
        unknown_conferences: dingrec::fake::UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let t1 = wall() + chrono::Duration::seconds(6);
    let t2 = t1 + chrono::Duration::seconds(10);
    crate::support::daemon::write_policies(
        dir.path(),
        "burst.yaml",
        &(crate::support::oneoff_entries("base", N, t1, "")
            + &crate::support::oneoff_entries("flood", N, t2, "")),
    );
    let config = write_config(
        dir.path(),
        &f.base_url(),
        "scheduler:\n  shutdown_timeout: 5s\nhttp:\n  listen: 127.0.0.1:0\n  header_timeout: 2s\n",
    );
    // (write_config's own `http:` comes first; this one is the same key again, so take it out.)
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replacen("http:\n  listen: 127.0.0.1:0\npolicies:", "policies:", 1),
    )
    .expect("config");
    let mut daemon = Daemon::spawn(&config, &[]);
    daemon.wait_http(HANG).await;
    let addr = daemon.http().await;
    let db = dir.path().join("dingrec.db");
    let started = |prefix: &str| {
        crate::support::sqlite(
            &db,
            &format!(
                "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded' AND policy_name LIKE '{prefix}%'"
            ),
        )
    };
    until("the quiet burst", &daemon, || started("base") == N.to_string()).await;

    // /healthz, every 100 ms, from now to the end.
    let (stop, stop_health) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (health_ok, health_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let health = {
        let (stop, ok, failed) = (stop_health.clone(), health_ok.clone(), health_failed.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("client");
            while !stop.load(Ordering::Relaxed) {
                match client.get(format!("http://{addr}/healthz")).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // 300 half requests, held open.
    let mut half_open = Vec::new();
    for _ in 0..N {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: dingrec\r\n").await;
            half_open.push(s);
        }
    }
    assert_eq!(half_open.len(), N);
    // 50 clients calling /readyz in a loop.
    let probes = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let (stop, probes) = (stop.clone(), probes.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(r) = client.get(format!("http://{addr}/readyz")).send().await {
                        let _ = r.bytes().await;
                        probes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    until("the burst under the flood", &daemon, || {
        started("flood") == N.to_string()
    })
    .await;
    // Every meeting once.
    let calls = crate::support::sqlite(
        &db,
        "SELECT COUNT(*), COUNT(DISTINCT occurrence_id) FROM attempts WHERE code = '200'",
    );
    assert_eq!(calls, format!("{}|{}", 2 * N, 2 * N));
    let (quiet, flooded) = (first_call_p50(&db, "base"), first_call_p50(&db, "flood"));
    assert!(
        flooded <= 2.0 * quiet + 50.0,
        "first calls' lateness p50: {flooded:.1} ms under the flood, {quiet:.1} ms without"
    );
    assert!(
        probes.load(Ordering::Relaxed) > 50,
        "the probe clients got nowhere"
    );

    // Each half-open connection is closed by the daemon: EOF (or a reset, or a 408) on read.
    for mut s in half_open {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a half-open connection was kept past the header timeout"
        );
    }

    stop_health.store(true, Ordering::Relaxed);
    let _ = health.await;
    // SIGTERM with the probe clients still calling: the daemon stops within its bounds.
    daemon.signal("TERM");
    let code = daemon.wait(Duration::from_secs(5 + 5 + 10)).await;
    assert_eq!(code, Some(0), "{}", daemon.stderr());
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    assert_eq!(
        health_failed.load(Ordering::Relaxed),
        0,
        "/healthz failed while the daemon served ({} answered)",
        health_ok.load(Ordering::Relaxed)
    );
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The database, its WAL and SHM, the lock file and the folders dingrec makes are the service's
/// alone (0600, 0700) under the loosest umask; a command run as another user than the
/// database's owner says so and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_private_whatever_the_umask_and_another_user_is_told_not_given_files() {
    if !crate::support::engine::sqlite_only("file modes are SQLite's") {
        return;
    }
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &f.base_url(), "");
    let state = dir.path().join("state/deeper");
    let db = state.join("dingrec.db");
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        &format!("path: {}", dir.path().join("dingrec.db").display()),
        &format!("path: {}", db.display()),
    );
    std::fs::write(&config, text).expect("config");
    crate::support::daemon::write_policies(dir.path(), "a.yaml", &entry("board"));
    // `dingrec run` under umask 000, as a careless shell would start it.
    let stderr = std::fs::File::create(dir.path().join("run.log")).expect("log");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} run --config {}",
            env!("CARGO_BIN_EXE_dingrec"),
            config.display()
        ))
        .env_remove("DINGREC_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .stderr(stderr)
        .spawn()
        .expect("run");
    let log = dir.path().join("run.log");
    let deadline = tokio::time::Instant::now() + HANG;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("dingrec is running")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (p, want) in [
        (dir.path().join("state"), 0o700),
        (state.clone(), 0o700),
        (db.clone(), 0o600),
        (state.join("dingrec.db-wal"), 0o600),
        (state.join("dingrec.db-shm"), 0o600),
        (state.join("dingrec.db.lock"), 0o600),
    ] {
        assert_eq!(mode(&p), want, "{} is {:o}", p.display(), mode(&p));
    }
    let _ = child.kill();
    let _ = child.wait();

    if !crate::support::is_root("giving the database to another user (chown)") {
        return;
    }
    let before: Vec<_> = std::fs::read_dir(&state)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    for name in &before {
        std::os::unix::fs::chown(state.join(name), Some(4242), Some(4242)).expect("chown");
    }
    for cmd in [
        &["history"][..],
        &["apply", &dir.path().join("policies").to_string_lossy()],
    ] {
        let err = exits(&config, cmd, 1);
        assert!(
            err.contains("belongs to uid 4242") && err.contains("runs as uid 0"),
            "{err}"
        );
    }
    let after: Vec<_> = std::fs::read_dir(&state)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(before.len(), after.len(), "files appeared: {after:?}");
}

/// Two databases never name two alert messages alike (a receiver that drops repeated
/// `webhook-id`s, or DingTalk dropping a repeated `msgUuid`, would drop the other's); one
/// database keeps its mark across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_database_marks_its_alert_messages_with_its_own_prefix() {
    // One config per database (on PostgreSQL each config names a schema of its own).
    let open = |config: &Path| {
        let settings = dingrec::config::Settings::load(Some(config)).expect("settings");
        async move {
            dingrec::store::Store::open(&settings.database)
                .await
                .expect("store")
        }
    };
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("tmp"),
        tempfile::tempdir().expect("tmp"),
    );
    let a = write_config(dir_a.path(), "http://127.0.0.1:9", "");
    let b = write_config(dir_b.path(), "http://127.0.0.1:9", "");
    let (a, b) = (a.as_path(), b.as_path());
    let first = open(a).await;
    let mark = first.alert_prefix().await.expect("prefix");
    assert_eq!(first.alert_prefix().await.expect("prefix"), mark);
    first.close().await;
    let again = open(a).await;
    assert_eq!(
        again.alert_prefix().await.expect("prefix"),
        mark,
        "kept across a restart"
    );
    let other = open(b).await;
    assert_ne!(other.alert_prefix().await.expect("prefix"), mark);
}

/// The fake DingTalk (a token for anyone, an admin API) never listens beyond this machine.
#[test]
fn the_fake_refuses_to_listen_beyond_loopback() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9478"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dingrec"))
            .args(["fake-dingtalk", "--listen", addr])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{addr}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a loopback address"),
            "{addr}"
        );
    }
}

/// systemd's notify socket stops being read (a wedged manager, a full queue): the daemon's
/// datagrams to it would block. The scheduler and HTTP go on: a meeting due after the queue
/// filled is started, and /healthz answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_socket_nobody_reads_stalls_neither_http_nor_scheduling() {
    let f = fake(Scenario {
        unknown_conferences: dingrec::fake::UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), &f.base_url(), "");
    let sock_path = dir.path().join("notify.sock");
    // Bound, never read.
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind");
    crate::support::daemon::write_policies(
        dir.path(),
        "a.yaml",
        &crate::support::oneoff_entries("late", 1, wall() + chrono::Duration::seconds(8), ""),
    );
    // A watchdog every 10 ms fills the socket's queue within a few seconds.
    let daemon = Daemon::spawn(
        &config,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().expect("utf8")),
            ("WATCHDOG_USEC", "20000"),
        ],
    );
    let db = dir.path().join("dingrec.db");
    until("the meeting due after the queue filled started", &daemon, || {
        crate::support::sqlite(
            &db,
            "SELECT state FROM occurrences WHERE policy_name = 'late00000'",
        ) == "succeeded"
    })
    .await;
    assert_eq!(daemon.get("/healthz").await.map(|r| r.0), Some(200));
    // The queue was full: as many datagrams wait in it as the kernel queues for a socket.
    let limit: usize = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10);
    sock.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    let mut waiting = 0;
    while sock.recv(&mut buf).is_ok() {
        waiting += 1;
    }
    assert!(
        waiting > limit,
        "only {waiting} datagrams waited (the queue takes {limit}): it never filled"
    );
}

/// One policy cannot spend the month, nor crowd out the others: a meeting that never goes live,
/// retried for its whole (12-hour) window at the fastest the bounds allow, makes at most
/// `maximum_attempts` (1,000) calls; twenty other policies due during its retries start on time,
/// once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_retrying_its_whole_window_is_bounded_and_delays_no_other() {
    use crate::support::app::{TestApp, parse_t};
    use chrono::TimeDelta;
    use dingrec::clock::ManualClock;
    let t0 = parse_t("2030-01-07T08:00:00Z");
    let clock = ManualClock::new(t0).with_seed(7);
    let mut meetings = vec![dingrec::fake::MeetingSpec {
        host_union_id: Some("host-1".into()),
        state: Some(dingrec::fake::MeetingState::NotStarted),
        ..dingrec::fake::MeetingSpec::live("never")
    }];
    meetings.extend((0..20).map(|i| crate::support::live(&format!("other-{i:02}"), vec![])));
    let rfc = |t: chrono::DateTime<chrono::Utc>| dingrec::domain::time::fmt_utc(t);
    let app = TestApp::start_with(
        Scenario {
            meetings,
            ..Scenario::default()
        },
        std::sync::Arc::new(clock.clone()),
        |_| {},
        |_| {
            let mut y = format!(
                "policies:\n  - name: storm\n    conference_id: never\n    host_union_id: host-1\n    at: \"{}\"\n    window: 12h\n    verify: false\n    retry: {{ initial_interval: 1s, backoff_coefficient: 1.0, maximum_interval: 1s, maximum_attempts: 1000 }}\n",
                rfc(t0 + TimeDelta::seconds(30))
            );
            for i in 0..20 {
                y.push_str(&format!(
                    "  - name: other-{i:02}\n    conference_id: other-{i:02}\n    host_union_id: host-1\n    at: \"{}\"\n    verify: false\n",
                    rfc(t0 + TimeDelta::seconds(31) + TimeDelta::seconds(25 * i))
                ));
            }
            y
        },
    )
    .await;
    let rows = app.drive_until_final(&clock, TimeDelta::minutes(1), 21).await;
    let storm = TestApp::occurrence(&rows, "storm");
    assert_eq!(
        storm.state,
        dingrec::domain::OccurrenceState::Expired,
        "{storm:#?}"
    );
    assert_eq!(storm.attempts.len(), 1000, "bounded by maximum_attempts");
    let calls = app
        .fake
        .requests()
        .iter()
        .filter(|r| r.id.as_deref() == Some("never") && r.method == "POST")
        .count();
    assert_eq!(calls, 1000, "the fake saw each attempt once");
    for i in 0..20 {
        let o = TestApp::occurrence(&rows, &format!("other-{i:02}"));
        assert_eq!(o.state, dingrec::domain::OccurrenceState::Succeeded, "{o:#?}");
        assert_eq!(o.attempts.len(), 1);
        assert_eq!(
            o.attempts[0].started_at,
            o.due_at,
            "other-{i:02} waited behind the storm's retries; the clock's first steps: {:?}",
            clock.steps().iter().take(40).map(|t| rfc(*t)).collect::<Vec<_>>()
        );
    }
}
