//! The reliability suite (RELIABILITY.md): crashes, faults, bad days, bad input. Every test runs the
//! real binary or the real library against the fake DingTalk on loopback and a real SQLite file,
//! and ends by itself. `RELIABILITY_ROUNDS` sets the kill -9 rounds (default 20).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, TimeDelta, Utc};
use dingrec::clock::{Clock, ManualClock};
use dingrec::domain::{AttemptOutcome, OccurrenceState};
use dingrec::fake::{FakeDingTalk, MeetingSpec, Scenario, UnknownConferences};

use crate::support::app::{TestApp, parse_t};
use crate::support::daemon::{Daemon, write_config};
use crate::support::{HANG, engine, fake, live, oneoff_entries, refusing_addr, sqlite, step, wait_for, wall};

fn rfc(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn oneoffs(dir: &std::path::Path, prefix: &str, n: usize, at: chrono::DateTime<Utc>, extra: &str) {
    crate::support::daemon::write_policies(
        dir,
        &format!("{prefix}.yaml"),
        &oneoff_entries(prefix, n, at, extra),
    );
}

/// Per conference: StartCloudRecord calls the fake received.
fn starts_by_conference(f: &FakeDingTalk) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in f.start_requests() {
        *m.entry(r.id.unwrap_or_default()).or_default() += 1;
    }
    m
}

/// Per conference: attempt rows that may have sent a StartCloudRecord.
fn attempts_by_conference(db: &std::path::Path) -> BTreeMap<String, usize> {
    sqlite(db, "SELECT p.conference_id, COUNT(a.id) FROM occurrences o JOIN policies p ON p.id = o.policy_id JOIN attempts a ON a.occurrence_id = o.id GROUP BY p.id, p.conference_id")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(c, n)| (c.to_owned(), n.parse().unwrap_or(0)))
        .collect()
}

/// The kill loops' rounds: `RELIABILITY_ROUNDS`, 20 by default.
fn rounds() -> usize {
    std::env::var("RELIABILITY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// After a kill: no succeeded occurrence was attempted again, and every StartCloudRecord the fake
/// received has its attempt row (the intent is written before the call).
fn no_start_after_success_and_no_call_without_its_row(round: usize, f: &FakeDingTalk, db: &std::path::Path) {
    assert_eq!(
        sqlite(
            db,
            "SELECT COUNT(*) FROM attempts a JOIN attempts s ON s.occurrence_id = a.occurrence_id AND s.outcome = 'success' AND a.attempt_no > s.attempt_no"
        ),
        "0",
        "round {round}: attempts after a success"
    );
    let rows = attempts_by_conference(db);
    for (conf, n) in &starts_by_conference(f) {
        assert!(
            rows.get(conf).copied().unwrap_or(0) >= *n,
            "round {round}: {conf} got {n} calls, has {:?} rows",
            rows.get(conf)
        );
    }
}

// 1 and 2: kill -9 during a burst, restart; audit reads all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_bursts_loses_nothing_and_never_starts_twice() {
    let rounds = rounds();
    let f = fake(Scenario {
        unknown_conferences: UnknownConferences::Live,
        delay: Some(Duration::from_millis(60)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &f.base_url(),
        // A short lease: on PostgreSQL the next daemon takes the killed one's calls over once
        // their leases ran out (on SQLite its start closes them at once).
        "scheduler:\n  max_in_flight: 128\n  shutdown_timeout: 5s\n  lease: 5s\n",
    );
    let db = dir.path().join("dingrec.db");

    // Audit reads during writes: sqlite3 -readonly (or psql) in a loop, with a busy timeout.
    let stop = Arc::new(AtomicBool::new(false));
    // Reads begin once the first daemon has created and migrated the database: a file being
    // created has no audit log yet, and that says nothing about reads during writes.
    let schema_ready = Arc::new(AtomicBool::new(false));
    let (reads, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let why = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let (stop, ready, reads, failed, why, db) = (
            stop.clone(),
            schema_ready.clone(),
            reads.clone(),
            failed.clone(),
            why.clone(),
            db.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if ready.load(Ordering::Relaxed) {
                    let audit = "SELECT COUNT(*), MAX(started_at) FROM audit_log;";
                    let out = match engine::url_beside(&db) {
                        Some(url) => std::process::Command::new("psql")
                            .args([
                                "--no-psqlrc",
                                "-X",
                                "-v",
                                "ON_ERROR_STOP=1",
                                "-A",
                                "-t",
                                "-c",
                                audit,
                                &url,
                            ])
                            .output(),
                        None => std::process::Command::new("sqlite3")
                            .args(["-readonly", "-bail", "-cmd", ".timeout 5000"])
                            .arg(&db)
                            .arg(audit)
                            .output(),
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    let error = match out {
                        Ok(o) if o.status.success() => None,
                        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = error {
                        failed.fetch_add(1, Ordering::Relaxed);
                        why.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        })
    };

    let n = 2_000;
    for round in 0..rounds {
        // The same work every round: the policy files of rounds settled before the last kill are
        // removed (with `policies.prune` their policies are disabled; their rows stay), so each
        // start and reload parses at most two rounds' files.
        if round >= 2 {
            let old = dir.path().join(format!("policies/r{:02}x.yaml", round - 2));
            std::fs::remove_file(&old).expect("remove an old round's file");
        }
        let mut d = Daemon::spawn(&cfg, &[]);
        d.wait_http(HANG).await;
        schema_ready.store(true, Ordering::Relaxed);
        // The previous round's interrupted occurrences are caught up first.
        wait_for("the earlier rounds' occurrences final", HANG, || {
            sqlite(
                &db,
                "SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait')",
            ) == "0"
        })
        .await;
        // This round's burst arrives by reload, so it cannot begin before the watching does.
        let prefix = format!("r{round:02}x");
        oneoffs(
            dir.path(),
            &prefix,
            n,
            wall() + TimeDelta::milliseconds(1500),
            "    window: 10m\n",
        );
        d.signal("HUP");
        // Kill once the fake has seen a random 1 to n/2 of this round's calls.
        let conf = format!("{prefix}-conf-");
        let want = 1 + (rand_u64() % (n as u64 / 2)) as usize;
        let until = tokio::time::Instant::now() + HANG;
        while f.starts_for(&conf) < want {
            assert!(tokio::time::Instant::now() < until, "round {round}: no burst");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        d.signal("KILL");
        d.wait(HANG).await;
        let done = sqlite(
            &db,
            &format!(
                "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded' AND policy_name LIKE '{prefix}%'"
            ),
        );
        assert!(
            done.parse::<usize>().is_ok_and(|k| k < n),
            "round {round}: the kill came after the burst ({done} of {n} done)"
        );
        if !engine::postgres() {
            assert_eq!(sqlite(&db, "PRAGMA integrity_check"), "ok", "round {round}");
        }
        no_start_after_success_and_no_call_without_its_row(round, &f, &db);
    }
    // The last restart settles everything.
    let last = Daemon::spawn(&cfg, &[]);
    last.wait_http(HANG).await;
    wait_for("every attempt and occurrence settled", HANG, || {
        sqlite(
            &db,
            "SELECT (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL) + (SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait'))",
        ) == "0"
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state != 'succeeded'"),
        "0"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} of {} audit reads failed: {:?}",
        failed.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        why.lock().unwrap_or_else(|p| p.into_inner())
    );
    assert!(reads.load(Ordering::Relaxed) > 10);
    eprintln!(
        "kill -9: {rounds} rounds, {} occurrences, {} attempts ({} interrupted), {} audit reads, 0 failed",
        sqlite(&db, "SELECT COUNT(*) FROM occurrences"),
        sqlite(&db, "SELECT COUNT(*) FROM attempts"),
        sqlite(&db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'"),
        reads.load(Ordering::Relaxed)
    );
}

// 4 of the verification issue: kill -9 while StartCloudRecord calls are in flight; with verify on,
// the restarted daemon settles each interrupted attempt with a check, so no meeting that was in
// fact recording is started twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_burst_with_verify_starts_no_meeting_twice() {
    let n = 400;
    let prefix = "kv";
    let f = fake(Scenario {
        // Real meetings, which record when started (unknown ones do not).
        meetings: (0..n)
            .map(|i| live(&format!("{prefix}-conf-{i:05}"), vec![]))
            .collect(),
        delay: Some(Duration::from_millis(60)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &f.base_url(),
        "scheduler:\n  max_in_flight: 64\n  shutdown_timeout: 5s\n",
    );
    let db = dir.path().join("dingrec.db");
    oneoffs(
        dir.path(),
        prefix,
        n,
        wall() + TimeDelta::milliseconds(3000),
        "    window: 10m\n    verify: { after: 1s, checks: 1 }\n",
    );
    let mut d = Daemon::spawn(&cfg, &[]);
    d.wait_http(HANG).await;
    let conf = format!("{prefix}-conf-");
    let want = 1 + (rand_u64() % (n as u64 / 2)) as usize;
    let until = tokio::time::Instant::now() + HANG;
    while f.starts_for(&conf) < want {
        assert!(tokio::time::Instant::now() < until, "no burst");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.signal("KILL");
    d.wait(HANG).await;
    let last = Daemon::spawn(&cfg, &[]);
    last.wait_http(HANG).await;
    wait_for("every occurrence confirmed", HANG, || {
        sqlite(
            &db,
            "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded' AND verified_at IS NOT NULL",
        ) == n.to_string()
    })
    .await;
    let starts = starts_by_conference(&f);
    let twice: Vec<_> = starts.iter().filter(|(_, k)| **k > 1).collect();
    assert!(twice.is_empty(), "meetings started twice: {twice:?}");
    assert_eq!(starts.len(), n, "every meeting started once");
    let interrupted = sqlite(&db, "SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'");
    assert_ne!(interrupted, "0", "the kill interrupted calls in flight");
    eprintln!("kill -9 with verify: {interrupted} interrupted attempts, settled by checks, 0 second starts");
}

// Several daemons (docs/database.md): three on one PostgreSQL, one of them SIGKILLed at random in
// each round's burst and started again (a new pid: a new instance). The others take the killed one's calls over once
// its leases ran out; with verify on, each call it may have sent is settled by a check first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_one_killed_each_round_start_every_meeting_once() {
    if !engine::postgres() {
        eprintln!("skipped on SQLite: one daemon per database (a second one refuses to start)");
        return;
    }
    let rounds = rounds();
    let lease = Duration::from_secs(5);
    let f = fake(Scenario {
        delay: Some(Duration::from_millis(60)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(
        dir.path(),
        &f.base_url(),
        "scheduler:\n  max_in_flight: 64\n  shutdown_timeout: 5s\n  lease: 5s\n",
    );
    let db = dir.path().join("dingrec.db");
    let mut daemons = Daemon::spawn_ready(&cfg, 3).await;
    let instance_of = |d: &Daemon| {
        let pid = d.child.id();
        let name = sqlite(
            &db,
            &format!("SELECT instance FROM instances WHERE instance LIKE '%:{pid}'"),
        );
        assert!(!name.is_empty(), "daemon {pid} has its instances row");
        name
    };
    let n = 300;
    // (instance, when it was killed)
    let mut killed: Vec<(String, chrono::DateTime<Utc>)> = Vec::new();
    for round in 0..rounds {
        let prefix = format!("k{round:02}x");
        for i in 0..n {
            f.add_meeting(live(&format!("{prefix}-conf-{i:05}"), vec![]));
        }
        oneoffs(
            dir.path(),
            &prefix,
            n,
            wall() + TimeDelta::milliseconds(1500),
            "    window: 10m\n    verify: { after: 1s, checks: 1 }\n",
        );
        crate::support::daemon::apply_dir(&cfg, dir.path());
        let conf = format!("{prefix}-conf-");
        let want = 1 + (rand_u64() % (n as u64 / 2)) as usize;
        let until = tokio::time::Instant::now() + HANG;
        while f.starts_for(&conf) < want {
            assert!(tokio::time::Instant::now() < until, "round {round}: no burst");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let victim = (rand_u64() % 3) as usize;
        let name = instance_of(&daemons[victim]);
        let at = wall();
        daemons[victim].signal("KILL");
        daemons[victim].wait(HANG).await;
        killed.push((name, at));
        no_start_after_success_and_no_call_without_its_row(round, &f, &db);
        daemons[victim] = Daemon::spawn(&cfg, &[]);
        daemons[victim].wait_http(HANG).await;
    }
    let total = rounds * n;
    wait_for("every occurrence confirmed and every attempt closed", HANG, || {
        sqlite(
            &db,
            "SELECT (SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded' AND verified_at IS NOT NULL), \
             (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL) + (SELECT COUNT(*) FROM checks WHERE outcome IS NULL)",
        ) == format!("{total}|0")
    })
    .await;
    // Every meeting started once: by one daemon, never again by another that took it over.
    let starts = starts_by_conference(&f);
    let twice: Vec<_> = starts.iter().filter(|(_, k)| **k > 1).collect();
    assert!(twice.is_empty(), "meetings started twice: {twice:?}");
    assert_eq!(starts.len(), total, "every meeting started");
    assert_eq!(
        sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state != 'succeeded'"),
        "0"
    );
    // One daemon at a time held an occurrence: each attempt began after the one before it ended.
    assert_eq!(
        sqlite(
            &db,
            "SELECT COUNT(*) FROM attempts a JOIN attempts b ON b.occurrence_id = a.occurrence_id \
             AND b.attempt_no > a.attempt_no WHERE b.started_at < a.finished_at"
        ),
        "0",
        "attempts of one occurrence overlapped"
    );
    // What each killed daemon held was taken over within its lease and a second.
    let (mut taken, mut worst) = (0, 0);
    for (name, at) in &killed {
        let row = sqlite(
            &db,
            &format!(
                "SELECT COUNT(*), COALESCE((EXTRACT(EPOCH FROM MAX(finished_at)) * 1000)::bigint, 0) \
                 FROM attempts WHERE instance = '{name}' AND outcome = 'interrupted'"
            ),
        );
        let (k, last) = row.split_once('|').expect("count|ms");
        let (k, last): (usize, i64) = (k.parse().expect("count"), last.parse().expect("ms"));
        taken += k;
        if k > 0 {
            let after = last - at.timestamp_millis();
            worst = worst.max(after);
            assert!(
                after <= (lease + Duration::from_secs(1)).as_millis() as i64,
                "{name}, killed at {at}: its last call was taken over {after} ms later"
            );
        }
    }
    assert!(taken > 0, "the kills interrupted calls in flight");
    eprintln!(
        "three daemons, {rounds} kills: {total} meetings started once, {taken} interrupted calls taken over \
         (the last {worst} ms after its kill at worst; lease {} ms), {} attempts",
        lease.as_millis(),
        sqlite(&db, "SELECT COUNT(*) FROM attempts")
    );
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(st.success(), "mounting a tmpfs needs root (CI runs as root)");
        Tmpfs(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

// 3: the disk fills during a burst, then frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_no_call_without_its_intent_row_and_the_daemon_resumes() {
    if !engine::sqlite_only("the full disk is the SQLite file's; PostgreSQL's disk is its server's") {
        return;
    }
    let f = fake(Scenario {
        unknown_conferences: UnknownConferences::Live,
        delay: Some(Duration::from_millis(20)),
        ..Scenario::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tmp");
    let mnt = dir.path().join("small");
    if !crate::support::is_root("mounting a small tmpfs to fill") {
        return;
    }
    let _fs = Tmpfs::mount(&mnt, "16m");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    let db = mnt.join("dingrec.db");
    let text = std::fs::read_to_string(&cfg).expect("cfg").replace(
        &dir.path().join("dingrec.db").display().to_string(),
        &db.display().to_string(),
    );
    std::fs::write(&cfg, text).expect("cfg");
    oneoffs(
        dir.path(),
        "full",
        2_000,
        wall() + TimeDelta::milliseconds(4000),
        "    window: 10m\n    retry: { initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 100 }\n",
    );
    let d = Daemon::spawn(&cfg, &[]);
    d.wait_http(HANG).await;
    wait_for("planning", HANG, || {
        sqlite(&db, "SELECT COUNT(*) FROM occurrences") == "2000"
    })
    .await;
    // Fill the disk just before the burst.
    let filler = mnt.join("filler");
    let mut chunk = vec![0u8; 64 * 1024];
    chunk
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i % 251) as u8);
    {
        use std::io::Write as _;
        let mut fh = std::fs::File::create(&filler).expect("filler");
        while fh.write_all(&chunk).is_ok() {}
        let mut small = vec![1u8; 512];
        while fh.write_all(&small).is_ok() {}
        small.truncate(1);
        while fh.write_all(&small).is_ok() {}
        let _ = fh.sync_all();
    }
    let unready_by = tokio::time::Instant::now() + HANG;
    while !matches!(d.get("/readyz").await, Some((503, _))) {
        assert!(
            tokio::time::Instant::now() < unready_by,
            "/readyz never turned 503 while the disk was full"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        d.get("/healthz").await.map(|r| r.0),
        Some(200),
        "the daemon did not exit"
    );
    std::fs::remove_file(&filler).expect("free the space");
    let resumed = tokio::time::Instant::now() + HANG;
    while sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state = 'succeeded'") == "0" {
        if tokio::time::Instant::now() > resumed {
            let log = d.stderr();
            let tail: String = log
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!(
                "no progress after space returned: {}\n{tail}",
                sqlite(&db, "SELECT state, COUNT(*) FROM occurrences GROUP BY state")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let until = tokio::time::Instant::now() + HANG;
    while sqlite(&db, "SELECT COUNT(*) FROM occurrences WHERE state != 'succeeded'") != "0" {
        assert!(
            tokio::time::Instant::now() < until,
            "not every occurrence succeeded: {}\n{}",
            sqlite(
                &db,
                "SELECT state, last_code, COUNT(*) FROM occurrences GROUP BY 1, 2"
            ),
            d.stderr().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sqlite(&db, "PRAGMA integrity_check"), "ok");
    let starts = starts_by_conference(&f);
    let rows = attempts_by_conference(&db);
    for (conf, n) in &starts {
        assert!(
            rows.get(conf).copied().unwrap_or(0) >= *n,
            "{conf}: {n} calls without intent rows"
        );
    }
    // Ready again (the database's part of /readyz is read at most once a second).
    let until = tokio::time::Instant::now() + HANG;
    while d.get("/readyz").await.expect("readyz").0 != 200 {
        assert!(
            tokio::time::Instant::now() < until,
            "not ready again after the disk freed up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// 4: a corrupt database at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_refused_clearly_and_left_byte_identical() {
    if !engine::sqlite_only("a damaged file is SQLite's; PostgreSQL checks its own pages") {
        return;
    }
    let f = fake(Scenario::default()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = write_config(dir.path(), &f.base_url(), "");
    oneoffs(dir.path(), "c", 300, wall() + TimeDelta::days(3), "");
    let apply = std::process::Command::new(env!("CARGO_BIN_EXE_dingrec"))
        .arg("--config")
        .arg(&cfg)
        .arg("apply")
        .arg(dir.path().join("policies"))
        .output()
        .expect("apply");
    assert!(apply.status.success());
    let db = dir.path().join("dingrec.db");
    let mut bytes = std::fs::read(&db).expect("db");
    assert!(bytes.len() > 4 * 4096, "several pages");
    for b in &mut bytes[3 * 4096..3 * 4096 + 64] {
        *b ^= 0xA5;
    }
    std::fs::write(&db, &bytes).expect("corrupt");
    let mut d = Daemon::spawn(&cfg, &[]);
    let code = d.wait(HANG).await;
    assert_eq!(code, Some(1), "{}", d.stderr());
    let err = d.stderr();
    assert!(
        err.contains("is damaged") && err.contains("left as it is"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    assert_eq!(std::fs::read(&db).expect("db"), bytes, "byte-identical");
}

// 5: DingTalk's bad days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_ends_within_the_timeout_with_its_own_code_and_health_stays_fast() {
    let mut meetings: Vec<MeetingSpec> = (0..=8)
        .map(|k| live(&format!("burst-{k}"), vec![step("systemError", k)]))
        .collect();
    for fault in [
        "hang",
        "trickle",
        "partial",
        "reset",
        "html",
        "json_array",
        "x5",
        "empty_502",
        "drop",
    ] {
        meetings.push(live(&format!("fault-{fault}"), vec![step(fault, 1)]));
    }
    let names: Vec<String> = meetings.iter().map(|m| m.conference_id.clone()).collect();
    let timeout_ms = 1_000i64;
    let app = TestApp::start_with(
        Scenario {
            meetings,
            ..Scenario::default()
        },
        Arc::new(dingrec::clock::SystemClock),
        |s| s.dingtalk.request_timeout = Duration::from_millis(timeout_ms as u64),
        |c| {
            let at = rfc(c.now() + TimeDelta::milliseconds(500));
            let mut y = String::from("policies:\n");
            for n in &names {
                y.push_str(&format!("  - name: {n}\n    conference_id: {n}\n    host_union_id: host-1\n    at: \"{at}\"\n    retry: {{ initial_interval: 1s, maximum_interval: 1s, maximum_attempts: 30 }}\n"));
            }
            y
        },
    )
    .await;
    // Liveness all along: /healthz answers while every call misbehaves.
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let prober = {
        let (stop, answered, failed, addr) = (stop.clone(), answered.clone(), failed.clone(), app.http);
        tokio::spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = c
                    .get(format!("http://{addr}/healthz"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let rows = app.wait_final(names.len(), HANG).await;
    stop.store(true, Ordering::Relaxed);
    let _ = prober.await;
    let expected: &[(&str, &str)] = &[
        ("fault-hang", "timeout"),
        ("fault-trickle", "timeout"),
        ("fault-partial", "connection_lost"),
        ("fault-reset", "connection_lost"),
        ("fault-drop", "connection_lost"),
        ("fault-html", "invalid_response"),
        ("fault-json_array", "invalid_response"),
        ("fault-empty_502", "invalid_response"),
        ("fault-x5", "ip_throttled"),
    ];
    for o in &rows {
        assert_eq!(
            o.state,
            OccurrenceState::Succeeded,
            "{}: retried until it worked",
            o.policy
        );
        for a in &o.attempts {
            let ms = a.duration_ms.expect("duration");
            // The call's own timeout ends it (a hang would run on): the slack only absorbs a
            // loaded machine.
            assert!(
                ms <= 2 * timeout_ms + 5_000,
                "{} attempt {} took {ms} ms",
                o.policy,
                a.attempt_no
            );
        }
        if let Some(k) = o.policy.strip_prefix("burst-") {
            let k: usize = k.parse().expect("k");
            assert_eq!(o.attempts.len(), k + 1, "{}", o.policy);
            assert!(
                o.attempts[..k]
                    .iter()
                    .all(|a| a.code.as_deref() == Some("systemError")
                        && a.http_status == Some(500)
                        && a.outcome == Some(AttemptOutcome::Retry))
            );
        }
    }
    for (policy, code) in expected {
        let o = TestApp::occurrence(&rows, policy);
        assert_eq!(o.attempts[0].code.as_deref(), Some(*code), "{policy}");
        assert_eq!(o.attempts[0].outcome, Some(AttemptOutcome::Retry), "{policy}");
        assert_eq!(
            o.attempts.last().and_then(|a| a.code.clone()).as_deref(),
            Some("200"),
            "{policy}"
        );
    }
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "/healthz did not answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_a_connect_error_and_retried() {
    let (_held, closed) = refusing_addr();
    let app = TestApp::start_with(
        Scenario::default(),
        Arc::new(dingrec::clock::SystemClock),
        move |s| s.dingtalk.base_url = format!("http://{closed}"),
        |c| format!("policies:\n  - name: nobody-home\n    conference_id: x\n    host_union_id: h\n    at: \"{}\"\n    window: 3s\n    retry: {{ initial_interval: 1s, maximum_interval: 1s }}\n", rfc(c.now() + TimeDelta::milliseconds(300))),
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    let o = &rows[0];
    assert_eq!(o.state, OccurrenceState::Expired);
    assert!(o.attempts.len() >= 2);
    // The last one may be the window's end reached before it could be sent (`window_passed`,
    // no call): a retry drawn close to the end of a 3 s window on a busy machine.
    let called = match o.attempts.last().and_then(|a| a.code.as_deref()) {
        Some("window_passed") => &o.attempts[..o.attempts.len() - 1],
        _ => &o.attempts[..],
    };
    assert!(
        called
            .iter()
            .all(|a| a.code.as_deref() == Some("connect_error") && a.http_status == Some(0)),
        "{:?}",
        o.attempts
    );
}

// 6: token storms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_storms_refresh_once_per_expiry_and_an_outage_only_delays() {
    let app = TestApp::start_with(
        Scenario {
            unknown_conferences: UnknownConferences::Live,
            token_ttl: Some(Duration::from_secs(2)),
            ..Scenario::default()
        },
        Arc::new(dingrec::clock::SystemClock),
        |_| {},
        |c| {
            let mut y = String::from("policies:\n");
            let r = "    window: 2m\n    retry: { initial_interval: 1s, maximum_interval: 4s, maximum_attempts: 100 }\n";
            for (batch, ms) in [("a", 500), ("b", 3_300)] {
                for i in 0..50 {
                    y.push_str(&format!("  - name: {batch}{i:02}\n    conference_id: {batch}-{i:02}\n    host_union_id: h\n    at: \"{}\"\n{r}", rfc(c.now() + TimeDelta::milliseconds(ms))));
                }
            }
            y
        },
    )
    .await;
    wait_succeeded(&app, 50).await;
    assert_eq!(app.fake.token_calls(), 1, "50 calls, one token");
    wait_succeeded(&app, 100).await;
    assert_eq!(
        app.fake.token_calls(),
        2,
        "the second 50 came after the expiry: exactly one refresh"
    );

    // The token endpoint is down for 30 s while the token runs out.
    app.fake.token_outage(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let clock = dingrec::clock::SystemClock;
    crate::support::app::apply(
        &app.store,
        &clock,
        &{
            let mut y = String::from("policies:\n");
            for i in 0..20 {
                y.push_str(&format!("  - name: c{i:02}\n    conference_id: c-{i:02}\n    host_union_id: h\n    at: \"{}\"\n    window: 2m\n    retry: {{ initial_interval: 1s, maximum_interval: 4s, maximum_attempts: 100 }}\n", rfc(clock.now() + TimeDelta::milliseconds(500))));
            }
            y
        },
    )
    .await;
    let rows = app.wait_final(120, HANG).await;
    assert!(
        rows.iter().all(|o| o.state == OccurrenceState::Succeeded),
        "no occurrence failed because of the token"
    );
    let token_attempts: Vec<_> = rows
        .iter()
        .flat_map(|o| o.attempts.iter())
        .filter(|a| {
            a.message
                .as_deref()
                .is_some_and(|m| m.contains("cannot get an access token"))
        })
        .collect();
    assert!(!token_attempts.is_empty(), "token errors recorded as such");
    assert!(
        token_attempts
            .iter()
            .all(|a| a.outcome == Some(AttemptOutcome::Retry) && a.http_status == Some(503))
    );
}

async fn wait_succeeded(app: &TestApp, n: usize) {
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let ok = app
            .history()
            .await
            .iter()
            .filter(|o| o.state == OccurrenceState::Succeeded)
            .count();
        if ok >= n {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{ok} of {n} succeeded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// 7: wall-clock jumps and a DST change, on the injected clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_jumps_and_dst_never_fire_twice_and_settle_what_they_skipped() {
    // 2026-03-29 00:00 UTC: Berlin springs forward at 01:00 UTC (02:00 CET → 03:00 CEST).
    let t0 = parse_t("2026-03-29T00:00:00Z");
    let clock = ManualClock::new(t0);
    let app = TestApp::start_with(
        Scenario {
            unknown_conferences: UnknownConferences::Live,
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        |_| {},
        |_| {
            "policies:\n  - name: catch\n    conference_id: catch\n    host_union_id: h\n    at: 2026-03-29T00:30:00Z\n    window: 2h\n  - name: miss\n    conference_id: miss\n    host_union_id: h\n    at: 2026-03-29T00:10:00Z\n    window: 20m\n  - name: dst\n    conference_id: dst\n    host_union_id: h\n    cron: \"30 2 * * *\"\n    timezone: Europe/Berlin\n    window: 30m\n".into()
        },
    )
    .await;
    let until = tokio::time::Instant::now() + HANG;
    while app.history().await.len() < 3 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // +1 h: 'catch' is in its window, 'miss' is past it, 'dst' (02:30 does not exist: 03:00 CEST = 01:00 UTC) is due.
    clock.set(t0 + TimeDelta::hours(1));
    let until = tokio::time::Instant::now() + HANG;
    loop {
        let rows = app.history().await;
        let done = |p: &str, s: OccurrenceState| rows.iter().any(|o| o.policy == p && o.state == s);
        if done("catch", OccurrenceState::Succeeded)
            && done("miss", OccurrenceState::Missed)
            && done("dst", OccurrenceState::Succeeded)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = app.history().await;
    let dst = rows.iter().find(|o| o.policy == "dst").expect("dst");
    assert_eq!(dst.due_at, "2026-03-29T01:00:00.000Z", "the gap fires at its end");
    assert!(
        TestApp::occurrence(&rows, "miss").attempts.is_empty(),
        "never fired late"
    );
    // −1 h, then forward again: nothing fires twice.
    clock.set(t0);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    clock.set(t0 + TimeDelta::hours(1) + TimeDelta::minutes(5));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let starts = starts_by_conference(&app.fake);
    assert_eq!(starts.get("catch"), Some(&1));
    assert_eq!(starts.get("dst"), Some(&1));
    assert_eq!(starts.get("miss"), None);
    let rows = app.history().await;
    assert_eq!(
        rows.iter()
            .filter(|o| o.policy == "dst" && !o.attempts.is_empty())
            .count(),
        1
    );
}

// 10: TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_https_server_is_refused_with_a_certificate_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    crate::support::tls::self_signed(&cert, &key, "/CN=localhost", Some("IP:127.0.0.1,DNS:localhost"));
    let addr = crate::support::tls::serve_once(&cert, &key).await;
    let app = TestApp::start_with(
        Scenario::default(),
        Arc::new(dingrec::clock::SystemClock),
        move |s| s.dingtalk.base_url = format!("https://{addr}"),
        |c| format!("policies:\n  - name: tls\n    conference_id: x\n    host_union_id: h\n    at: \"{}\"\n    retry: {{ maximum_attempts: 1 }}\n", rfc(c.now() + TimeDelta::milliseconds(300))),
    )
    .await;
    let rows = app.wait_final(1, HANG).await;
    let a = &rows[0].attempts[0];
    assert_eq!(a.code.as_deref(), Some("tls_error"), "{a:?}");
    assert!(
        a.message.as_deref().is_some_and(|m| m.contains("certificate")),
        "{a:?}"
    );
    // And plain http:// to anything but loopback is refused at config load.
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        "dingtalk:\n  base_url: http://api.dingtalk.com\n  app_key: k\n",
    )
    .expect("cfg");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dingrec"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("DINGREC_DINGTALK__APP_SECRET", "s")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plain http:// is allowed only to a loopback address")
    );
}

// 8 (the database half): strings round-trip byte-exact through SQLite.
mod round_trip {
    use proptest::prelude::*;

    use dingrec::config::DatabaseSettings;
    use dingrec::domain::PolicyDefaults;
    use dingrec::policy_file::parse_str;
    use dingrec::store::PolicyRecord;
    use dingrec::store::Store;

    fn policy() -> impl Strategy<Value = (String, String, String, String)> {
        (
            "[A-Za-z0-9_-]{1,64}",
            "[!-~\u{a1}-\u{2fff}\u{1f300}-\u{1f5ff}]{1,30}",
            "[!-~\u{4e00}-\u{4fff}]{1,40}",
            proptest::sample::select(vec!["grid", "speech", "full_screen"]),
        )
            .prop_filter("ids hold no whitespace or control characters", |(_, c, h, _)| {
                !(c.chars().chain(h.chars())).any(|ch| ch.is_whitespace() || ch.is_control())
            })
            .prop_map(|(n, c, h, l)| (n, c, h, l.to_owned()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn policies_round_trip_byte_exact_through_sqlite(ps in proptest::collection::btree_map("[A-Za-z0-9_-]{1,64}", policy(), 1..30)) {
            let mut yaml = String::from("policies:\n");
            for (name, (_, conf, host, layout)) in &ps {
                let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
                yaml.push_str(&format!(
                    "  - name: {}\n    conference_id: {}\n    host_union_id: {}\n    layout: {layout}\n    cron: \"0 9 * * MON\"\n",
                    q(name), q(conf), q(host)
                ));
            }
            let parsed = parse_str(std::path::Path::new("p.yaml"), &yaml, &PolicyDefaults::default())
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let records: Vec<PolicyRecord> = parsed.iter().map(|p| PolicyRecord::from_policy(&p.policy, &p.source)).collect();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let back = rt.block_on(async {
                let dir = tempfile::tempdir().expect("tmp");
                let store = Store::open(&DatabaseSettings { path: dir.path().join("d.db"), ..DatabaseSettings::default() }).await.expect("store");
                store.apply_policies(&records, dingrec::store::Prune::Off, chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("t")).await.expect("apply");
                let back = store.list_policies().await.expect("list");
                store.close().await;
                back
            });
            prop_assert_eq!(back.len(), records.len());
            for rec in &records {
                let got = back.iter().find(|b| b.record.name == rec.name).expect("stored");
                prop_assert_eq!(&got.record, rec);
                prop_assert_eq!(got.record.to_policy().expect("valid"), parsed.iter().find(|p| p.policy.name.as_str() == rec.name).expect("parsed").policy.clone());
            }
        }
    }
}
