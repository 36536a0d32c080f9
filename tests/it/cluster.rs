//! Several daemons on one PostgreSQL database (docs/database.md, "PostgreSQL"): what they share so
//! that together they behave as one daemon. PostgreSQL only: on SQLite a second daemon refuses to
//! start (`daemon::`).

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta};
use dingrec::fake::{Scenario, UnknownConferences};

use crate::support::daemon::{Daemon, apply_dir, write_config, write_policies};
use crate::support::{HANG, engine, fake, oneoff_entries, sqlite, wall};

/// On SQLite these tests have nothing to run: one daemon per database.
fn postgres_only() -> bool {
    if !engine::postgres() {
        eprintln!("skipped on SQLite: several daemons share one database only on PostgreSQL");
        return false;
    }
    true
}

/// Wait until `sql` on the test's database reads `want`.
async fn wait_for_sql(what: &str, db: &std::path::Path, sql: &str, want: &str) {
    crate::support::wait_for(what, HANG, || sqlite(db, sql) == want).await;
}

/// `dingtalk.rate_limit` is DingTalk's limit per app: two daemons sending 400 meetings due at once
/// keep it together, as one daemon would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_keep_one_rate_limit_of_20_calls_in_any_second_for_400_meetings() {
    if !postgres_only() {
        return;
    }
    let f = fake(Scenario {
        unknown_conferences: UnknownConferences::Live,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "scheduler:\n  max_in_flight: 32\n");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("rate_limit: 0", "rate_limit: 20")).expect("config");
    let db = dir.path().join("dingrec.db");
    let _ds = Daemon::spawn_ready(&cfg, 2).await;
    let n = 400;
    write_policies(
        dir.path(),
        "burst.yaml",
        &oneoff_entries("rl", n, wall() + TimeDelta::seconds(2), "    window: 10m\n"),
    );
    apply_dir(&cfg, dir.path());
    wait_for_sql(
        "every meeting started",
        &db,
        "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'",
        &n.to_string(),
    )
    .await;
    assert_eq!(f.start_requests().len(), n, "one call per meeting");
    // The moments each daemon sent (its own record, on one machine's clock): dingrec's promise is
    // about its sends; arrivals at a loaded fake can bunch by the fake's own scheduling.
    let sends: Vec<(i64, String)> = sqlite(
        &db,
        "SELECT (EXTRACT(EPOCH FROM sent_at) * 1000)::bigint, instance FROM attempts \
         WHERE sent_at IS NOT NULL ORDER BY sent_at",
    )
    .lines()
    .filter_map(|l| l.split_once('|'))
    .map(|(t, i)| (t.parse().expect("ms"), i.to_owned()))
    .collect();
    assert_eq!(sends.len(), n);
    let senders: BTreeSet<&str> = sends.iter().map(|(_, i)| i.as_str()).collect();
    assert_eq!(senders.len(), 2, "both daemons sent: {senders:?}");
    for (i, (t, _)) in sends.iter().enumerate() {
        let in_window = sends[i..].iter().take_while(|(u, _)| *u < t + 1000).count();
        assert!(
            in_window <= 20,
            "{in_window} calls sent in the second from {t} by two daemons"
        );
    }
}

/// Three daemons that need a token at the same moment fetch one (each fetch counts against the
/// monthly quota): one fetches while the others wait, then they take the token it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_needing_a_token_at_once_fetch_one() {
    if !postgres_only() {
        return;
    }
    let f = fake(Scenario {
        unknown_conferences: UnknownConferences::Live,
        // A slow token endpoint: without taking turns, every daemon would fetch its own.
        delay: Some(Duration::from_millis(300)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let db = dir.path().join("dingrec.db");
    let _ds = Daemon::spawn_ready(&cfg, 3).await;
    write_policies(
        dir.path(),
        "one.yaml",
        &oneoff_entries("tk", 30, wall() + TimeDelta::seconds(2), "    window: 10m\n"),
    );
    apply_dir(&cfg, dir.path());
    wait_for_sql(
        "every meeting started",
        &db,
        "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'",
        "30",
    )
    .await;
    let instances = sqlite(&db, "SELECT COUNT(DISTINCT instance) FROM attempts");
    assert_eq!(
        f.token_calls(),
        1,
        "tokens fetched by {instances} daemons that sent starts"
    );
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM access_tokens"),
        "1",
        "the token is kept for the others"
    );
}

/// A daemon stopped by SIGTERM while its call is in flight waits for the answer
/// (`shutdown_timeout`) and keeps renewing the call's lease meanwhile: the other daemon does not
/// take the call over and start the meeting a second time, however long the answer takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_daemon_keeps_the_lease_of_its_call_in_flight() {
    if !postgres_only() {
        return;
    }
    let f = fake(Scenario {
        // Answered after 8 s: longer than the 5 s lease, shorter than the drain.
        meetings: vec![crate::support::live(
            "slow-conf",
            vec![dingrec::fake::Step {
                answer: "ok".into(),
                status: None,
                times: 1,
                delay: Some(Duration::from_secs(8)),
            }],
        )],
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &f.base_url(),
        "scheduler:\n  lease: 5s\n  shutdown_timeout: 15s\n",
    );
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("request_timeout: 3s", "request_timeout: 20s")).expect("config");
    let db = dir.path().join("dingrec.db");
    let mut ds = Daemon::spawn_ready(&cfg, 2).await;
    write_policies(
        dir.path(),
        "slow.yaml",
        &format!(
            "  - name: slow\n    conference_id: slow-conf\n    host_union_id: host-1\n    at: \"{}\"\n    window: 10m\n",
            (wall() + TimeDelta::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true)
        ),
    );
    apply_dir(&cfg, dir.path());
    let until = tokio::time::Instant::now() + HANG;
    while f.start_requests().is_empty() {
        assert!(tokio::time::Instant::now() < until, "no call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = sqlite(&db, "SELECT instance FROM attempts");
    let (i, _) = ds
        .iter()
        .enumerate()
        .find(|(_, d)| holder.ends_with(&format!(":{}", d.child.id())))
        .unwrap_or_else(|| panic!("the call's daemon ({holder}) is one of the two"));
    ds[i].signal("TERM");
    assert_eq!(ds[i].wait(HANG).await, Some(0), "a clean stop after the answer");
    assert_eq!(
        sqlite(
            &db,
            "SELECT state || '|' || (SELECT group_concat(outcome || ':' || instance) FROM attempts) FROM occurrences"
        ),
        format!("succeeded|success:{holder}"),
        "the stopping daemon recorded its own call's answer"
    );
    // The call's lease ran out 5 s into the 8 s wait had it not been renewed, and the other
    // daemon, which takes over when a lease runs out, would have closed the call and called again.
    assert_eq!(f.start_requests().len(), 1, "the meeting was started once");
}

/// `dingrec apply` on PostgreSQL wakes every daemon (`NOTIFY dingrec_policies`, which each
/// daemon's store `LISTEN`s on): two watching stores, as two daemons hold, are both woken by an
/// apply through a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_wakes_every_daemon_listening_on_the_database() {
    if !postgres_only() {
        return;
    }
    let settings = dingrec::config::DatabaseSettings {
        path: dingrec::config::DEFAULT_DATABASE_PATH.into(),
        url: engine::fresh_url().await,
        ..dingrec::config::DatabaseSettings::default()
    };
    let applier = dingrec::store::Store::open(&settings).await.expect("store");
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut woken = Vec::new();
    for _ in 0..2 {
        let store = dingrec::store::Store::open(&settings).await.expect("store");
        let wake = std::sync::Arc::new(tokio::sync::Notify::new());
        let (w, c) = (wake.clone(), cancel.clone());
        tokio::spawn(async move { store.watch_policies(&[w], &c).await });
        woken.push(wake);
    }
    // A watcher that is not listening yet misses a notification: apply a new policy every 200 ms
    // until both were woken (a wake is kept until it is awaited).
    let clock = dingrec::clock::SystemClock;
    let mut n = 0;
    for wake in &woken {
        let until = tokio::time::Instant::now() + HANG;
        loop {
            let entries = oneoff_entries(&format!("w{n}"), 1, wall() + TimeDelta::days(1), "");
            n += 1;
            crate::support::app::apply_with(
                &applier,
                &clock,
                &format!("policies:\n{entries}"),
                Default::default(),
            )
            .await;
            if tokio::time::timeout(Duration::from_millis(200), wake.notified())
                .await
                .is_ok()
            {
                break;
            }
            assert!(tokio::time::Instant::now() < until, "a daemon was never woken");
        }
    }
    cancel.cancel();
}

/// `auto_record` on several daemons: each policy's setting is made by one of them (the policy's
/// last call is claimed), and DingTalk's own recording, set once, records every meeting with no
/// StartCloudRecord from any daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_make_each_auto_record_setting_once() {
    if !postgres_only() {
        return;
    }
    let n = 12;
    let schedules = (0..n)
        .map(|i| dingrec::fake::ScheduleSpec {
            schedule_conference_id: format!("sched-{i}"),
            conference_id: format!("conf-{i}"),
            host_union_id: Some("host-1".into()),
            live_after: Some(Duration::from_secs(12)),
            ..dingrec::fake::ScheduleSpec::default()
        })
        .collect();
    let f = fake(Scenario {
        schedules,
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let db = dir.path().join("dingrec.db");
    let _ds = Daemon::spawn_ready(&cfg, 3).await;
    let at = (wall() + TimeDelta::seconds(6)).to_rfc3339_opts(SecondsFormat::Millis, true);
    let entries: String = (0..n)
        .map(|i| {
            format!(
                "  - name: board-{i}\n    schedule_conference_id: sched-{i}\n    host_union_id: host-1\n    \
                 at: \"{at}\"\n    window: 10m\n    verify: false\n    auto_record: true\n    \
                 retry: {{ initial_interval: 1s, maximum_interval: 2s }}\n"
            )
        })
        .collect();
    write_policies(dir.path(), "board.yaml", &entries);
    apply_dir(&cfg, dir.path());
    wait_for_sql(
        "every meeting recorded",
        &db,
        "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'",
        &n.to_string(),
    )
    .await;
    let puts: Vec<String> = f
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .filter_map(|r| r.id)
        .collect();
    let distinct: BTreeSet<&String> = puts.iter().collect();
    assert_eq!(
        (puts.len(), distinct.len()),
        (n, n),
        "one setting per policy among three daemons: {puts:?}"
    );
    assert_eq!(
        sqlite(
            &db,
            "SELECT COUNT(*) FROM checks WHERE kind = 'settings' AND outcome = 'set'"
        ),
        n.to_string()
    );
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM checks WHERE outcome = 'auto_recorded'"),
        n.to_string(),
        "every meeting recorded by DingTalk's own setting"
    );
    assert!(f.start_requests().is_empty(), "no StartCloudRecord");
}
