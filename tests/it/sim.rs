//! A seeded simulation of the scheduler under the things ops teams do every day.
//!
//! One seed is one history of operations, drawn from a seeded RNG: policies added, edited
//! (`start_offset`, `window`, layout, schedule, zone), disabled, enabled again and pruned; SIGHUP
//! reloads of a policy file, some of them broken; time passing in random steps on the injected
//! clock, and jumping back; clean restarts; crashes (the daemon's runtime dropped where it stands,
//! some while a call is in flight, between its intent row and its outcome) with time passing while
//! it is down; a second daemon started by mistake; `dingrec trigger`'s manual occurrences. A third
//! of the seeds start an hour before a DST change in Berlin (spring forward or fall back). Each
//! meeting of the fake DingTalk answers a script drawn from the same seed (success, final errors,
//! retryable errors, throttling, a bad token, a call that never answers), some go live late, and
//! tokens expire every 15 minutes of the injected clock. Policies verify the recording (the
//! checks: off, start checks, a watch with restarts and the video look-up) against meetings whose
//! starts silently do not record, whose recordings a participant pauses or stops, that end, that
//! leave no video, and whose meeting-info answers fail or hang. Meetings nobody declared are
//! created too, found by DingTalk's events over Stream mode (a `match` policy wants the ones titled
//! Board): events delivered twice, a Stream outage while a meeting is created (the catch-up on
//! reconnect must find it), a crash right after an event arrives (its acknowledgement lost, the
//! event sent again). A scheduled meeting has DingTalk's own auto-record setting, made by dingrec
//! ahead (`auto_record`): sometimes refused, sometimes silently not working, sometimes turned off
//! by someone between dingrec's refreshes. The real daemon runs all of it: planner,
//! dispatcher, store on a real SQLite file, retry logic, the HTTP client against the fake.
//!
//! Time only moves between operations and only when nothing is in flight, so a history's outcome
//! depends on the seed, not on the machine's speed (a crash in flight and a timeout are the two
//! places where the machine's speed can still choose between two valid outcomes). After every
//! operation the invariants are checked against the database, the fake's request log and a small
//! model of what was applied:
//!
//! 1. no attempt after an attempt of the same occurrence succeeded, unless a check found it not
//!    recording; never two occurrences (other than cancelled, manual or restart ones) for the same
//!    policy and meeting start; a restart only of a succeeded occurrence of its policy, once;
//! 2. no call for a policy after the apply that disabled or pruned it committed;
//! 3. no attempt claimed before its occurrence's due time or after its window;
//! 4. once its window has passed, every occurrence is final; nothing is `running` at rest, every
//!    attempt and every check has an outcome, and every `verifying` occurrence has its check pending;
//! 5. every call the fake saw has its attempt row;
//! 6. every firing of a policy (one-off or cron, by an independent model of the schedule and its
//!    DST rules) whose meeting starts after the policy was last applied (after the latest time
//!    the clock had shown then), and is due by now, has its row, not cancelled;
//! 7. the daemon never ends by itself; a broken policy file changes nothing;
//! 8. a meeting the `match` policy wants has exactly one occurrence made by its event or the
//!    catch-up, whatever was delivered twice or lost; no StartCloudRecord for a meeting it does not
//!    want; every event acknowledged `SUCCESS` has its row;
//! 9. the scheduled meeting whose recording DingTalk's own setting started gets no
//!    StartCloudRecord, and its occurrence never succeeds without a recording (dingrec never
//!    trusts the setting: a meeting the setting did not record is started by dingrec).
//!
//! `SIM_SEEDS=N` runs N seeds (default 200; `SIM_FROM=K` starts at seed K), `SIM_SEED=S` replays
//! one (`SIM_TRACE=1` with `--nocapture` prints each operation, and a failure before shrinking it): every chance of the daemon is drawn from the seed too (through the seeded clock). A
//! failure prints the seed, the clock's steps and the shortest history it could shrink to
//! (dropping operations while it still fails).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Timelike, Utc};
use dingrec::app::App;
use dingrec::clock::{Clock, ManualClock};
use dingrec::domain::PolicyDefaults;
use dingrec::domain::time::fmt_utc;
use dingrec::fake::{EventSpec, MeetingSpec, Scenario, Silent, Step};
use dingrec::notify::Notifier;
use dingrec::store::PolicyRecord;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::app::{TestApp, parse_t};
use crate::support::{live, sqlite};

/// Where a history starts: a Monday morning, an hour before Berlin springs forward (01:00Z), and
/// an hour before its repeated hour (00:00Z to 02:00Z) in the autumn.
const STARTS: [&str; 3] = [
    "2030-01-07T08:00:00Z",
    "2030-03-31T00:00:00Z",
    "2030-10-26T23:30:00Z",
];
const POLICY_SLOTS: usize = 6;
const OPS: usize = 16;
/// Operations with meetings nobody declared, put between the others.
const EVENT_OPS: usize = 3;
/// The scheduled meeting with DingTalk's own auto-record setting every history has.
const AUTO_CONF: &str = "conf-auto";
/// The `match` policy every history has: meetings titled Board, started by their creator.
const MATCH_POLICY: &str = "  - name: found-board\n    match: { title: Board }\n    host_union_id: creator\n    timezone: UTC\n    window: 10m\n    verify: false\n";
/// The fake's token lifetime: several refreshes per history.
const TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(900);
/// Short, so that a call that never answers costs little real time.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(400);

/// One policy as the simulation's model knows it.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    /// `at: …` (a one-off, in minutes after the history's start) or `cron: …`.
    at_min: Option<i64>,
    cron: Option<&'static str>,
    zone: &'static str,
    start_offset_s: i64,
    window_min: i64,
    layout: &'static str,
    /// The policy's `verify` (YAML): off, start checks, a watch with restarts and the video.
    verify: &'static str,
    enabled: bool,
}

const VERIFY: [&str; 4] = [
    "false",
    "{ after: 20s, checks: 2 }",
    "{ after: 20s, watch: 2m, video: true }",
    "{ after: 30s, checks: 1, watch: 5m, restart: false }",
];

impl Spec {
    fn yaml(&self, slot: usize, t0: DateTime<Utc>) -> String {
        let when = match (self.at_min, self.cron) {
            (Some(m), _) => format!("    at: \"{}\"\n", fmt_utc(t0 + TimeDelta::minutes(m))),
            (None, Some(c)) => format!("    cron: \"{c}\"\n"),
            (None, None) => unreachable!("a spec has a schedule"),
        };
        format!(
            "  - name: p{slot}\n    conference_id: conf-{slot}\n    host_union_id: host-1\n{when}    timezone: {}\n    start_offset: {}s\n    window: {}m\n    layout: {}\n    enabled: {}\n    verify: {}\n    retry: {{ initial_interval: 20s, maximum_interval: 2m, maximum_attempts: 6 }}\n",
            self.zone, self.start_offset_s, self.window_min, self.layout, self.enabled, self.verify
        )
    }
}

/// One operation, with its random parts drawn when the history is made.
#[derive(Debug, Clone)]
enum Op {
    /// Apply the model with this slot set to this spec (`None`: pruned).
    Apply { slot: usize, spec: Option<Spec> },
    /// Move the clock this many seconds, stepping through everything due on the way.
    Advance { secs: i64 },
    /// Stop the daemon the clean way and start it again.
    Restart,
    /// A second `dingrec run` on the same database: it must refuse.
    SecondDaemon,
    /// `dingrec trigger` on this slot's policy (if it is enabled).
    Trigger { slot: usize },
    /// Kill the daemon (while a call is in flight, when one comes within `within` seconds of
    /// clock), leave it down for `down` seconds, start it again.
    Crash { mid_call: bool, within: i64, down: i64 },
    /// Write the model's policy file (`broken`: with a mistake in it) and reload.
    Reload { broken: Option<Broken> },
    /// Set the clock back this many seconds (an NTP correction, a VM restored).
    ClockBack { secs: i64 },
    /// A meeting created, its event pushed (`twice`: delivered a second time, as DingTalk may);
    /// `wanted`: titled Board, which the `match` policy wants.
    Event { wanted: bool, twice: bool },
    /// The Stream connection down (opens refused) while a meeting is created, its event lost;
    /// then up again: the catch-up finds it.
    Outage { wanted: bool },
    /// An event pushed and the daemon killed at once (committed or not, its acknowledgement may
    /// be lost); started again, DingTalk sends it again.
    EventCrash,
    /// Someone turns the scheduled meeting's auto-record setting off in DingTalk.
    SettingOff,
}

/// The history's scheduled meeting with `auto_record`: when it is due and goes live (minutes
/// after the start), whether DingTalk refuses the setting (another creator) or accepts it and
/// silently does not record.
#[derive(Debug, Clone, Copy)]
struct AutoSpec {
    at_min: i64,
    live_min: u64,
    refused: bool,
    fails: bool,
}

impl AutoSpec {
    fn yaml(&self, t0: DateTime<Utc>) -> String {
        format!(
            "  - name: auto-board\n    schedule_conference_id: sched-auto\n    host_union_id: host-1\n    at: \"{}\"\n    \
             timezone: UTC\n    window: 30m\n    verify: {{ after: 20s, checks: 2 }}\n    auto_record: true\n    \
             auto_record_refresh: 10m\n    retry: {{ initial_interval: 20s, maximum_interval: 2m, maximum_attempts: 6 }}\n",
            fmt_utc(t0 + TimeDelta::minutes(self.at_min))
        )
    }

    fn schedule(&self) -> dingrec::fake::ScheduleSpec {
        dingrec::fake::ScheduleSpec {
            schedule_conference_id: "sched-auto".into(),
            conference_id: AUTO_CONF.into(),
            host_union_id: Some("host-1".into()),
            creator_union_id: Some(if self.refused { "someone-else" } else { "host-1" }.into()),
            live_after: Some(std::time::Duration::from_secs(60 * self.live_min)),
            auto_record_fails: self.fails,
            ..dingrec::fake::ScheduleSpec::default()
        }
    }
}

/// Ways to break a policy file.
#[derive(Debug, Clone, Copy)]
enum Broken {
    Syntax,
    HugeWindow,
    UnknownKey,
}

const CRONS: [&str; 5] = [
    "*/20 * * * *",
    "0 * * * *",
    "30 8-10 * * *",
    "0,30 1-3 * * *",
    "30 2 * * *",
];

fn random_spec(rng: &mut StdRng) -> Spec {
    let one_off = rng.random_bool(0.5);
    Spec {
        at_min: one_off.then(|| rng.random_range(1..150)),
        cron: (!one_off).then(|| CRONS[rng.random_range(0..CRONS.len())]),
        zone: ["UTC", "Europe/Berlin"][rng.random_range(0..2)],
        start_offset_s: [0, 0, 30, 90][rng.random_range(0..4)],
        window_min: [5, 10, 30][rng.random_range(0..3)],
        layout: ["speech", "grid"][rng.random_range(0..2)],
        verify: VERIFY[rng.random_range(0..VERIFY.len())],
        enabled: true,
    }
}

/// One seed's history: where it starts, each meeting (its script, and whether it goes live late),
/// and the operations.
struct History {
    /// The seed: it draws the operations and the meetings here, and every chance of the daemon
    /// (the retries' jitter) through the clock.
    seed: u64,
    t0: DateTime<Utc>,
    meetings: Vec<MeetingSpec>,
    auto: AutoSpec,
    ops: Vec<Op>,
}

fn history(seed: u64) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = parse_t(STARTS[rng.random_range(0..STARTS.len())]);
    let answers = [
        "ok",
        "systemError",
        "recordStartError",
        "roomClosed",
        "recordStartPermissionError",
        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
        "InvalidAuthentication",
        "empty_502",
        "hang",
    ];
    let meetings = (0..POLICY_SLOTS)
        .map(|slot| {
            let script = (0..rng.random_range(0..3))
                .map(|_| Step {
                    answer: answers[rng.random_range(0..answers.len())].into(),
                    status: None,
                    times: rng.random_range(1..3),
                    delay: None,
                })
                .collect();
            let mut m = live(&format!("conf-{slot}"), script);
            // Some meetings go live late: "not started" until then.
            if rng.random_bool(0.25) {
                m.state = None;
                m.live_after = Some(std::time::Duration::from_secs(60 * rng.random_range(5..90)));
            }
            // What checks are for: starts that silently do not record, participants who pause or
            // stop the recording, meetings that end, videos that are missing, checks that fail.
            let minutes = |rng: &mut StdRng, lo: u64, hi: u64| {
                Some(std::time::Duration::from_secs(60 * rng.random_range(lo..hi)))
            };
            m.silent = match rng.random_range(0..20) {
                0..3 => Some(Silent::Once),
                3 => Some(Silent::Always),
                _ => None,
            };
            if rng.random_bool(0.15) {
                m.stop_after = minutes(&mut rng, 5, 90);
            }
            if rng.random_bool(0.1) {
                m.pause_after = minutes(&mut rng, 5, 90);
            }
            if rng.random_bool(0.3) {
                m.ends_after = minutes(&mut rng, 30, 180);
            }
            m.video = rng.random_bool(0.8);
            if rng.random_bool(0.1) {
                m.info_script = vec![Step {
                    answer: [
                        "systemError",
                        "hang",
                        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                    ][rng.random_range(0..3)]
                    .into(),
                    status: None,
                    times: 1,
                    delay: None,
                }];
            }
            m
        })
        .collect();
    let mut model: BTreeMap<usize, Spec> = BTreeMap::new();
    let mut ops = Vec::with_capacity(OPS);
    for _ in 0..OPS {
        let slot = rng.random_range(0..POLICY_SLOTS);
        let op = match rng.random_range(0..100) {
            0..32 => Op::Advance {
                secs: [20, 60, 300, 900, 1800][rng.random_range(0..5)],
            },
            32..66 => {
                let spec = match model.get(&slot).cloned() {
                    None => Some(random_spec(&mut rng)),
                    Some(mut s) => match rng.random_range(0..6) {
                        0 => None,
                        1 => Some(Spec {
                            enabled: !s.enabled,
                            ..s
                        }),
                        2 => {
                            s.start_offset_s = [0, 30, 90][rng.random_range(0..3)];
                            Some(s)
                        }
                        3 => {
                            s.window_min = [5, 10, 30][rng.random_range(0..3)];
                            Some(s)
                        }
                        4 => {
                            s.layout = if s.layout == "grid" { "speech" } else { "grid" };
                            Some(s)
                        }
                        _ => Some(random_spec(&mut rng)),
                    },
                };
                match &spec {
                    Some(s) => model.insert(slot, s.clone()),
                    None => model.remove(&slot),
                };
                Op::Apply { slot, spec }
            }
            66..72 => Op::Restart,
            72..80 => Op::Crash {
                mid_call: rng.random_bool(0.7),
                within: [300, 1800][rng.random_range(0..2)],
                down: [0, 60, 600, 1800][rng.random_range(0..4)],
            },
            80..86 => Op::Reload {
                broken: [
                    None,
                    Some(Broken::Syntax),
                    Some(Broken::HugeWindow),
                    Some(Broken::UnknownKey),
                ][rng.random_range(0..4)],
            },
            86..90 => Op::ClockBack {
                secs: [30, 300, 1200][rng.random_range(0..3)],
            },
            90..93 => Op::SecondDaemon,
            _ => Op::Trigger { slot },
        };
        ops.push(op);
    }
    // Meetings nobody declared, from a stream of their own (the operations above stay what the
    // seed drew before events existed), put between them.
    let mut erng = StdRng::seed_from_u64(seed ^ 0x00E7_E7E7_E7E7_E7E7);
    for _ in 0..EVENT_OPS {
        let op = match erng.random_range(0..10) {
            0..5 => Op::Event {
                wanted: erng.random_bool(0.6),
                twice: erng.random_bool(0.3),
            },
            5..8 => Op::Outage {
                wanted: erng.random_bool(0.7),
            },
            _ => Op::EventCrash,
        };
        let at = erng.random_range(0..=ops.len());
        ops.insert(at, op);
    }
    // The auto-record meeting, from a stream of its own too.
    let mut arng = StdRng::seed_from_u64(seed ^ 0x0A07_0A07_0A07_0A07);
    let auto = AutoSpec {
        at_min: arng.random_range(5..120),
        live_min: arng.random_range(0..130),
        refused: arng.random_bool(0.15),
        fails: arng.random_bool(0.2),
    };
    for _ in 0..arng.random_range(0..2) {
        let at = arng.random_range(0..=ops.len());
        ops.insert(at, Op::SettingOff);
    }
    History {
        seed,
        t0,
        meetings,
        auto,
        ops,
    }
}

/// The meeting starts of `cron` in `zone` in `(from, to]`, computed independently of dingrec's
/// schedule code, for the crons the simulation writes (minute and hour fields; zones with whole-
/// hour offsets). The DST rules: a fixed hour that does not exist fires at the end of the gap, one
/// that happens twice fires at the first; a wildcard hour keeps its interval in real time.
fn model_starts(cron: &str, zone: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let minutes: Vec<u32> = match fields[0] {
        "*/20" => vec![0, 20, 40],
        f => f.split(',').map(|m| m.parse().expect("minute")).collect(),
    };
    let mut out = BTreeSet::new();
    if fields[1] == "*" {
        let mut t = from
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .expect("whole minute");
        while t <= to {
            if t > from && minutes.contains(&t.minute()) {
                out.insert(t);
            }
            t += TimeDelta::minutes(1);
        }
    } else {
        let hours: Vec<u32> = match fields[1].split_once('-') {
            Some((a, b)) => (a.parse().expect("hour")..=b.parse().expect("hour")).collect(),
            None => fields[1].split(',').map(|h| h.parse().expect("hour")).collect(),
        };
        let first: NaiveDate = (from - TimeDelta::days(1)).date_naive();
        for day in first
            .iter_days()
            .take_while(|d| *d <= (to + TimeDelta::days(1)).date_naive())
        {
            for h in &hours {
                for m in &minutes {
                    let mut local = day.and_hms_opt(*h, *m, 0).expect("local time");
                    let t = loop {
                        match tz.from_local_datetime(&local) {
                            chrono::LocalResult::Single(t) => break t,
                            chrono::LocalResult::Ambiguous(first, _) => break first,
                            chrono::LocalResult::None => local += TimeDelta::minutes(1),
                        }
                    }
                    .with_timezone(&Utc);
                    if t > from && t <= to {
                        out.insert(t);
                    }
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The simulation's view of what should hold.
struct World {
    app: TestApp,
    clock: ManualClock,
    t0: DateTime<Utc>,
    model: BTreeMap<usize, Spec>,
    /// Conference → calls the fake had seen when the apply that disabled or pruned it committed.
    silenced: BTreeMap<String, usize>,
    /// Slot → the latest time the clock had shown when its current spec was applied (for
    /// invariant 6: a meeting that started before may have fired under the old spec).
    applied_at: BTreeMap<usize, DateTime<Utc>>,
    /// The latest time the clock has shown (it can be set back).
    high_water: DateTime<Utc>,
    /// The policy file the daemon reads at start and on reload.
    policy_file: std::path::PathBuf,
    /// Meetings nobody declared, made so far: (conference id, wanted by the `match` policy).
    found: Vec<(String, bool)>,
    auto: AutoSpec,
}

type Check = Result<(), String>;

impl World {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The database as [`sqlite`] finds it: the SQLite file, or on PostgreSQL the test's folder,
    /// where the URL is kept beside it.
    fn db(&self) -> std::path::PathBuf {
        self.app.dir.path().join("dingrec.db")
    }

    /// Ask the database with the `sqlite3` shell, off the runtime's threads (the fakes share
    /// them: a blocked thread would slow every history's DingTalk).
    async fn q(&self, sql: &str) -> String {
        let (db, sql) = (self.db(), sql.to_owned());
        tokio::task::spawn_blocking(move || sqlite(&db, &sql))
            .await
            .expect("sqlite3 ran")
    }

    /// Wait until the daemon is at rest at the clock's time: every enabled policy planned,
    /// nothing in flight, nothing due, nothing waiting past its window. With `hung`: or until
    /// the fake has left more than that many calls hanging (true then).
    async fn settle(&self, hung: Option<u64>) -> Result<bool, String> {
        let until = tokio::time::Instant::now() + crate::support::HANG;
        let now = fmt_utc(self.now());
        let horizon = fmt_utc(self.now() + TimeDelta::hours(24));
        loop {
            if !self.app.alive() {
                return Err("7: the daemon ended by itself".into());
            }
            if hung.is_some_and(|h| self.app.fake.hung_starts() > h) {
                return Ok(true);
            }
            let busy = self
                .q(&format!(
                    "SELECT (SELECT COUNT(*) FROM occurrences WHERE state = 'running') \
                 + (SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'retry_wait') \
                    AND (next_attempt_at <= '{now}' OR window_ends_at <= '{now}')) \
                 + (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL) \
                 + (SELECT COUNT(*) FROM checks WHERE outcome IS NULL) \
                 + (SELECT COUNT(*) FROM occurrences WHERE next_check_at <= '{now}') \
                 + (SELECT COUNT(*) FROM policies WHERE enabled AND planned_until < '{horizon}')"
                ))
                .await;
            // The auto-record settings: a call in flight, or one due at this instant.
            let (settings_next, settings_running) = self.app.settings_state();
            let settings_busy = settings_running > 0 || settings_next.is_some_and(|t| t <= self.now());
            if busy == "0" && !settings_busy {
                return Ok(false);
            }
            if tokio::time::Instant::now() > until {
                let which = self
                    .q(&format!(
                        "SELECT 'occurrence ' || id || ' of ' || policy_name || ': ' || state || ', next attempt ' \
                     || COALESCE(CAST(next_attempt_at AS TEXT), '-') || ', window ends ' || window_ends_at || ', next check ' \
                     || COALESCE(CAST(next_check_at AS TEXT), '-') FROM occurrences WHERE state = 'running' \
                     OR (state IN ('scheduled', 'retry_wait') AND (next_attempt_at <= '{now}' OR window_ends_at <= '{now}')) \
                     OR next_check_at <= '{now}' \
                     UNION ALL SELECT 'attempt ' || id || ' of occurrence ' || occurrence_id || ' without outcome, started ' \
                     || started_at FROM attempts WHERE outcome IS NULL \
                     UNION ALL SELECT 'check ' || id || ' (' || kind || ') of occurrence ' || occurrence_id || ' without outcome, claimed at ' \
                     || at || ' by ' || COALESCE(instance, '-') || ', lease until ' || COALESCE(lease_until, '-') \
                     FROM checks WHERE outcome IS NULL \
                     UNION ALL SELECT 'policy ' || name || ' planned until ' || planned_until FROM policies \
                     WHERE enabled AND planned_until < '{horizon}'"
                    ))
                    .await;
                return Err(format!(
                    "4: not at rest at {now}: {busy} rows in flight, due or past their window:\n{which}\n  {}\n  the fake's last requests (real time ms ago, method path id status code): {}",
                    self.app.loop_state(),
                    self.last_requests(8)
                ));
            }
            self.app.wake();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }

    /// The fake's last `n` requests, newest last, for a failure's message (how long ago each
    /// arrived is real time, as the fake logs it).
    #[allow(clippy::disallowed_methods)]
    fn last_requests(&self, n: usize) -> String {
        let now = chrono::Utc::now().timestamp_millis();
        let log = self.app.fake.requests();
        log.iter()
            .skip(log.len().saturating_sub(n))
            .map(|r| {
                format!(
                    "[{} {} {} {} {} {}]",
                    now - r.at_ms,
                    r.method,
                    r.path,
                    r.id.as_deref().unwrap_or("-"),
                    r.status,
                    r.code.as_deref().unwrap_or("-")
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Move the clock `secs`, stepping through everything due on the way. With `hung`: stop as
    /// soon as the fake leaves a call hanging (true then).
    async fn advance(&self, secs: i64, hung: Option<u64>) -> Result<bool, String> {
        let target = self.now() + TimeDelta::seconds(secs);
        loop {
            if self.settle(hung).await? {
                return Ok(true);
            }
            let next = [
                self.app.store.next_due_at().await.map_err(|e| e.to_string())?,
                self.app.store.next_check_at().await.map_err(|e| e.to_string())?,
                self.app.settings_state().0,
            ]
            .into_iter()
            .flatten()
            .min();
            let now = self.now();
            if now >= target {
                return Ok(false);
            }
            // The next thing due, never beyond the target. (A window's end passes within a jump:
            // the daemon closes the row when it sees the new time, which invariant 4 checks.)
            let step = next.filter(|t| *t > now).unwrap_or(target).min(target);
            self.clock.set(step);
            self.app.wake();
        }
    }

    fn model_yaml(&self) -> String {
        std::iter::once("policies:\n".to_owned())
            .chain(std::iter::once(MATCH_POLICY.to_owned()))
            .chain(std::iter::once(self.auto.yaml(self.t0)))
            .chain(self.model.iter().map(|(slot, s)| s.yaml(*slot, self.t0)))
            .collect()
    }

    /// A new meeting nobody declared: its conference id and eventId.
    fn new_meeting(&mut self, wanted: bool) -> (String, String) {
        let k = self.found.len();
        let conf = format!("ev-{k}");
        self.found.push((conf.clone(), wanted));
        (conf, format!("evt-{k}"))
    }

    fn event_spec(conf: &str, event_id: &str, wanted: bool) -> EventSpec {
        EventSpec {
            event_id: Some(event_id.into()),
            title: Some(if wanted { "Board" } else { "standup" }.into()),
            creator_id: Some("union-creator".into()),
            ..EventSpec::created(conf)
        }
    }

    /// Until `event_id` has `n` acknowledgements, the last `SUCCESS`.
    async fn acknowledged(&self, event_id: &str, n: usize) -> Check {
        let until = tokio::time::Instant::now() + crate::support::HANG;
        loop {
            let acks: Vec<String> = self
                .app
                .fake
                .stream()
                .acks()
                .into_iter()
                .filter(|a| a.event_id.as_deref() == Some(event_id))
                .map(|a| a.status)
                .collect();
            if acks.len() >= n && acks.last().is_some_and(|s| s == "SUCCESS") {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                return Err(format!("8: {event_id} not acknowledged {n} times: {acks:?}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// QueryOrgConferenceList calls the fake has answered: one per catch-up page.
    fn catch_ups(&self) -> usize {
        self.app
            .fake
            .requests()
            .iter()
            .filter(|r| r.path == "/v1.0/conference/orgConferences" && r.status == 200)
            .count()
    }

    /// Until `what` holds, polling the fake (real time, bounded).
    async fn until(&self, what: &str, mut f: impl FnMut(&Self) -> bool) -> Check {
        let until = tokio::time::Instant::now() + crate::support::HANG;
        while !f(self) {
            if tokio::time::Instant::now() > until {
                return Err(format!("8: timed out waiting for {what}"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// `dingrec apply --prune` of the model, written to the policy file too (what the daemon
    /// reads when it starts).
    async fn apply_model(&mut self) -> Check {
        let yaml = self.model_yaml();
        std::fs::write(&self.policy_file, &yaml).map_err(|e| e.to_string())?;
        let parsed = dingrec::policy_file::parse_str(&self.policy_file, &yaml, &PolicyDefaults::default())
            .map_err(|e| format!("the simulation wrote a bad file: {e:?}"))?;
        let records: Vec<PolicyRecord> = parsed
            .iter()
            .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
            .collect();
        self.app
            .store
            .apply_policies(&records, dingrec::store::Prune::All, self.now())
            .await
            .map_err(|e| format!("apply: {e}"))?;
        Ok(())
    }

    async fn run(&mut self, op: &Op) -> Check {
        self.high_water = self.high_water.max(self.now());
        match op {
            Op::Apply { slot, spec } => {
                let conf = format!("conf-{slot}");
                match spec {
                    Some(s) => {
                        self.model.insert(*slot, s.clone());
                    }
                    None => {
                        self.model.remove(slot);
                    }
                }
                self.apply_model().await?;
                if spec.as_ref().is_some_and(|s| s.enabled) {
                    self.silenced.remove(&conf);
                    self.applied_at.insert(*slot, self.high_water);
                } else {
                    self.silenced
                        .insert(conf.clone(), self.app.fake.starts_for(&conf));
                    self.applied_at.remove(slot);
                }
                // The running daemon notices an apply within its tick: a second of its clock.
                self.clock.set(self.now() + TimeDelta::seconds(1));
                self.app.wake();
            }
            Op::Advance { secs } => {
                self.advance(*secs, None).await?;
            }
            Op::Restart => {
                if !self.app.stop().await {
                    return Err("7: the daemon had ended before it was told to stop".into());
                }
                self.app.run().await;
            }
            Op::Crash {
                mid_call,
                within,
                down,
            } => {
                if *mid_call {
                    let hung = self.app.fake.hung_starts();
                    self.app.fake.hang_next_start(true);
                    self.advance(*within, Some(hung)).await?;
                    self.app.fake.hang_next_start(false);
                }
                if !self.app.crash().await {
                    return Err("7: the daemon had ended before it was killed".into());
                }
                self.clock.set(self.now() + TimeDelta::seconds(*down));
                self.app.run().await;
            }
            Op::Reload { broken } => {
                let policies =
                    "SELECT group_concat(name || ':' || enabled || ':' || updated_at, ',') FROM policies";
                let before = self.q(policies).await;
                let mut yaml = self.model_yaml();
                let extra = "  - name: extra\n    conference_id: conf-x\n    host_union_id: host-1\n    at: \"2031-01-01T00:00:00Z\"\n";
                match broken {
                    None => {}
                    Some(Broken::Syntax) => yaml.push_str("  - name: [unclosed\n"),
                    Some(Broken::HugeWindow) => yaml.push_str(&format!("{extra}    window: 300000y\n")),
                    Some(Broken::UnknownKey) => yaml.push_str(&format!("{extra}    windw: 5m\n")),
                }
                if self.model.is_empty() && broken.is_some() {
                    yaml = yaml.replace("policies: []\n", "policies:\n");
                }
                std::fs::write(&self.policy_file, &yaml).map_err(|e| e.to_string())?;
                let applied = self.app.reload().await;
                if applied != broken.is_none() {
                    return Err(format!(
                        "7: reload of a {broken:?} policy file: applied = {applied}"
                    ));
                }
                let after = self.q(policies).await;
                if after != before {
                    return Err(format!(
                        "7: the reload of the {broken:?} file changed the policies: {before} -> {after}"
                    ));
                }
                // A broken file stays on disk; a restart must keep the database's policies too.
            }
            Op::ClockBack { secs } => {
                self.clock.set(self.now() - TimeDelta::seconds(*secs));
                self.app.wake();
            }
            Op::SecondDaemon if crate::support::engine::postgres() => {
                // Welcome on PostgreSQL, and another process (its instance is its pid): the
                // cluster tests and the three-daemon kill loop run several daemons there.
            }
            Op::SecondDaemon => {
                // Its own thread and runtime, as a second process has (the lock's wait for a
                // release blocks its thread).
                let (settings, clock) = (self.app.settings.clone(), self.clock.clone());
                let second = tokio::task::spawn_blocking(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async move {
                        App::build(settings, None, Arc::new(clock), Notifier::disabled())
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    })
                })
                .await
                .map_err(|e| e.to_string())?;
                match second {
                    Ok(()) => return Err("a second daemon started on the same database".into()),
                    Err(e) if e.contains("another dingrec is running") => {}
                    Err(e) => return Err(format!("the second daemon failed otherwise: {e}")),
                }
            }
            Op::Event { wanted, twice } => {
                let (conf, event_id) = self.new_meeting(*wanted);
                let spec = Self::event_spec(&conf, &event_id, *wanted);
                self.app.fake.push_event(&spec);
                self.acknowledged(&event_id, 1).await?;
                if *twice {
                    self.app.fake.push_event(&spec);
                    self.acknowledged(&event_id, 2).await?;
                }
            }
            Op::Outage { wanted } => {
                let stream = self.app.fake.stream();
                stream.refuse_opens(u32::MAX);
                // A connection whose open was granted just before the refusals (the daemon had
                // only started) arrives after this first cut: cut again until none is left.
                self.until("the Stream connection gone", |w| {
                    let stream = w.app.fake.stream();
                    stream.disconnect(std::time::Duration::ZERO);
                    stream.connections() == 0
                })
                .await?;
                let (conf, _) = self.new_meeting(*wanted);
                let title = if *wanted { "Board" } else { "standup" };
                self.app.fake.create_meeting(&conf, title, "union-creator");
                let before = self.catch_ups();
                self.app.fake.stream().refuse_opens(0);
                self.until("the catch-up after the outage", |w| w.catch_ups() > before)
                    .await?;
                if *wanted {
                    let until = tokio::time::Instant::now() + crate::support::HANG;
                    let found = format!("SELECT COUNT(*) FROM occurrences WHERE conference_id = '{conf}'");
                    while self.q(&found).await == "0" {
                        if tokio::time::Instant::now() > until {
                            return Err(format!("8: the catch-up did not find {conf}"));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                }
            }
            Op::SettingOff => {
                self.app
                    .fake
                    .recording(AUTO_CONF, dingrec::fake::RecordingAction::AutoRecordOff);
            }
            Op::EventCrash => {
                let (conf, event_id) = self.new_meeting(true);
                self.app
                    .fake
                    .push_event(&Self::event_spec(&conf, &event_id, true));
                if !self.app.crash().await {
                    return Err("7: the daemon had ended before it was killed".into());
                }
                self.app.run().await;
                self.acknowledged(&event_id, 1).await?;
            }
            Op::Trigger { slot } => {
                if let Some(s) = self.model.get(slot).filter(|s| s.enabled) {
                    let name = format!("p{slot}");
                    let stored = self
                        .app
                        .store
                        .policy_by_name(&name)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or("the model's policy is not in the database")?;
                    let now = self.now();
                    self.app
                        .store
                        .insert_manual(
                            stored.id,
                            &name,
                            now,
                            now + TimeDelta::minutes(s.window_min),
                            None,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    self.app.wake();
                }
            }
        }
        self.settle(None).await?;
        self.check().await
    }

    async fn check(&self) -> Check {
        if self
            .q(
                "SELECT COUNT(*) FROM attempts a JOIN attempts s ON s.occurrence_id = a.occurrence_id \
              AND s.outcome = 'success' AND a.attempt_no > s.attempt_no \
              WHERE NOT EXISTS (SELECT 1 FROM checks c WHERE c.occurrence_id = a.occurrence_id \
                AND c.kind = 'start' AND c.outcome IN ('not_recording', 'stopped'))",
            )
            .await
            != "0"
        {
            return Err("1: an attempt after a success that no check found not recording".into());
        }
        let restarted = self
            .q(
                "SELECT COUNT(*) FROM occurrences r LEFT JOIN occurrences o ON o.id = r.restart_of \
                 WHERE r.trigger = 'restart' AND (o.id IS NULL OR o.state != 'succeeded' OR o.policy_id != r.policy_id \
                   OR (SELECT COUNT(*) FROM occurrences x WHERE x.restart_of = r.restart_of) > 1)",
            )
            .await;
        if restarted != "0" {
            return Err(format!(
                "1: {restarted} restarts not of one succeeded occurrence of their policy, or twice"
            ));
        }
        let twice = self.q(
            "SELECT group_concat(policy_name || ' ' || meeting_at, ', ') FROM (SELECT policy_name, meeting_at \
             FROM occurrences WHERE trigger NOT IN ('manual', 'restart') AND state != 'cancelled' \
             GROUP BY policy_id, policy_name, meeting_at, COALESCE(event_conference_id, '') HAVING COUNT(*) > 1) AS twice",
        ).await;
        if !twice.is_empty() {
            return Err(format!("1: two occurrences for the same meeting: {twice}"));
        }
        for (conf, calls) in &self.silenced {
            let now = self.app.fake.starts_for(conf);
            if now != *calls {
                return Err(format!(
                    "2: {conf} was called {} times after its policy was disabled",
                    now - calls
                ));
            }
        }
        let early_or_late = self
            .q(
                "SELECT COUNT(*) FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id \
             WHERE a.started_at < o.due_at OR a.started_at >= o.window_ends_at",
            )
            .await;
        if early_or_late != "0" {
            return Err(format!(
                "3: {early_or_late} attempts claimed before their due time or after their window"
            ));
        }
        let now = fmt_utc(self.now());
        let stuck = self.q(&format!(
            "SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait') AND window_ends_at <= '{now}'"
        )).await;
        if stuck != "0"
            || self
                .q("SELECT COUNT(*) FROM attempts WHERE outcome IS NULL")
                .await
                != "0"
        {
            return Err(format!(
                "4: {stuck} occurrences live past their window, or an attempt without outcome"
            ));
        }
        let unchecked = self
            .q(
                "SELECT (SELECT COUNT(*) FROM occurrences WHERE state = 'verifying' AND next_check_at IS NULL) \
                 + (SELECT COUNT(*) FROM checks WHERE outcome IS NULL)",
            )
            .await;
        if unchecked != "0" {
            return Err(format!(
                "4: {unchecked} verifying occurrences with no check pending, or checks without outcome at rest"
            ));
        }
        let starts = self.app.fake.start_requests();
        let mut by_conf: BTreeMap<String, usize> = BTreeMap::new();
        for r in &starts {
            let Some(id) = &r.id else {
                return Err(format!("5: a StartCloudRecord without a conference id: {r:?}"));
            };
            *by_conf.entry(id.clone()).or_default() += 1;
        }
        // The scheduled meeting's attempts by policy: one cut short by a kill has no conference
        // (the meeting is looked up in the call; the row is closed as interrupted without it).
        let rows: BTreeMap<String, usize> = self
            .q(&format!(
                "SELECT conference_id || ' ' || COUNT(*) FROM attempts GROUP BY conference_id \
                 HAVING conference_id <> '{AUTO_CONF}' UNION ALL SELECT '{AUTO_CONF} ' || COUNT(*) FROM attempts a JOIN occurrences o \
                 ON o.id = a.occurrence_id WHERE o.policy_name = 'auto-board'"
            ))
            .await
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(c, n)| (c.to_owned(), n.parse().unwrap_or(0)))
            .collect();
        for (conf, n) in by_conf {
            let rows = rows.get(&conf).copied().unwrap_or(0);
            if rows < n {
                return Err(format!("5: {conf} got {n} calls but has {rows} attempt rows"));
            }
        }
        let planned: BTreeSet<String> = crate::support::engine::rows(
            &self.app.store,
            "SELECT policy_name, due_at FROM occurrences WHERE state != 'cancelled'",
        )
        .await
        .iter()
        .map(|r| format!("{} {}", r[0].as_str().unwrap_or(""), r[1].as_str().unwrap_or("")))
        .collect();
        for (slot, applied) in &self.applied_at {
            let Some(s) = self.model.get(slot).filter(|s| s.enabled) else {
                continue;
            };
            let offset = TimeDelta::seconds(s.start_offset_s);
            let starts = match (s.at_min, s.cron) {
                (Some(m), _) => {
                    let start = self.t0 + TimeDelta::minutes(m);
                    if start > *applied { vec![start] } else { vec![] }
                }
                (None, Some(cron)) => model_starts(cron, s.zone, *applied, self.now()),
                (None, None) => vec![],
            };
            for start in starts {
                let due = start + offset;
                if due > self.now() {
                    continue;
                }
                let rows = usize::from(planned.contains(&format!("p{slot} {}", fmt_utc(due))));
                if rows != 1 {
                    return Err(format!(
                        "6: p{slot}'s firing for the meeting at {} (due {}) has {rows} rows",
                        fmt_utc(start),
                        fmt_utc(due)
                    ));
                }
            }
        }
        self.check_found().await?;
        self.check_auto().await
    }

    /// Invariant 9: DingTalk's own auto-recording and dingrec's check of it.
    async fn check_auto(&self) -> Check {
        let Some((recorded, auto)) = self.app.fake.recorded(AUTO_CONF) else {
            return Err(format!("9: the fake lost {AUTO_CONF}"));
        };
        let starts = self.app.fake.starts_for(AUTO_CONF);
        if auto && starts != 0 {
            return Err(format!(
                "9: DingTalk's own setting recorded {AUTO_CONF} and dingrec sent {starts} StartCloudRecord"
            ));
        }
        let succeeded = self
            .q("SELECT COUNT(*) FROM occurrences WHERE policy_name = 'auto-board' AND state = 'succeeded'")
            .await;
        if succeeded != "0" && !recorded {
            return Err(format!("9: auto-board succeeded and {AUTO_CONF} never recorded"));
        }
        Ok(())
    }

    /// Invariant 8: meetings nobody declared.
    async fn check_found(&self) -> Check {
        let made: BTreeMap<String, usize> = self
            .q("SELECT conference_id || ' ' || COUNT(*) FROM occurrences \
                 WHERE trigger IN ('event', 'catch_up') GROUP BY conference_id")
            .await
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(c, n)| (c.to_owned(), n.parse().unwrap_or(0)))
            .collect();
        for (conf, wanted) in &self.found {
            let n = made.get(conf).copied().unwrap_or(0);
            if *wanted && n != 1 {
                return Err(format!("8: {conf}, wanted, has {n} occurrences"));
            }
            if !*wanted && (n != 0 || self.app.fake.starts_for(conf) != 0) {
                return Err(format!(
                    "8: {conf}, wanted by no policy, has {n} occurrences and {} starts",
                    self.app.fake.starts_for(conf)
                ));
            }
        }
        for ack in self.app.fake.stream().acks() {
            let Some(id) = ack.event_id.filter(|_| ack.status == "SUCCESS") else {
                continue;
            };
            let rows = self
                .q(&format!("SELECT COUNT(*) FROM events WHERE event_id = '{id}'"))
                .await;
            if rows != "1" {
                return Err(format!("8: {id} was acknowledged and has {rows} rows"));
            }
        }
        Ok(())
    }
}

const SIM_CONFIG: &str = "database:\n  path: {db}\ndingtalk:\n  base_url: {url}\n  app_key: test-app-key\n  app_secret_file: {secret}\n  rate_limit: 0\n  request_timeout: 400ms\n  stream:\n    enabled: true\n    reconnect_max: 1s\nhttp:\n  listen: 127.0.0.1:0\npolicies:\n  paths: [{policies}]\n  prune: true\ndefaults:\n  timezone: UTC\n";

/// Run one history; the number of the operation that broke an invariant, and why, with the
/// instants the clock was set to (the history replays with the same seed: every chance is drawn
/// from it).
async fn play(h: &History, ops: &[Op]) -> Result<(), (usize, String)> {
    let clock = ManualClock::new(h.t0).with_seed(h.seed);
    play_on(h, ops, clock.clone()).await.map_err(|(at, why)| {
        let steps: Vec<String> = clock.steps().iter().map(|t| fmt_utc(*t)).collect();
        (
            at,
            format!("{why}\n  clock steps ({}): {}", steps.len(), steps.join(" ")),
        )
    })
}

async fn play_on(h: &History, ops: &[Op], clock: ManualClock) -> Result<(), (usize, String)> {
    let mut app = TestApp::build_with(
        Scenario {
            meetings: h.meetings.clone(),
            schedules: vec![h.auto.schedule()],
            token_ttl: Some(TOKEN_TTL),
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        |s| {
            s.defaults.timezone = "UTC".into();
            s.defaults.verify = Some(dingrec::domain::Verify::default());
            s.dingtalk.request_timeout = REQUEST_TIMEOUT;
            s.policies.prune = true;
            s.dingtalk.stream.enabled = true;
            s.dingtalk.stream.reconnect_max = std::time::Duration::from_secs(1);
        },
        |_| String::new(),
    )
    .await;
    let dir = app.dir.path().to_owned();
    let policy_file = dir.join("policies.yaml");
    let secret = dir.join("app_secret");
    std::fs::write(&policy_file, "policies: []\n").expect("policy file");
    std::fs::write(&secret, "test-app-secret\n").expect("secret");
    let config = dir.join("config.yaml");
    let database = if app.settings.database.url.is_empty() {
        format!("path: {}", app.settings.database.path.display())
    } else {
        format!("url: \"{}\"", app.settings.database.url)
    };
    std::fs::write(
        &config,
        SIM_CONFIG
            .replace("path: {db}", &database)
            .replace("{url}", &app.fake.base_url())
            .replace("{secret}", &secret.display().to_string())
            .replace("{policies}", &policy_file.display().to_string()),
    )
    .expect("config");
    app.settings.policies.paths = vec![policy_file.clone()];
    app.config_path = Some(config);
    app.run().await;
    let mut world = World {
        app,
        clock,
        t0: h.t0,
        model: BTreeMap::new(),
        silenced: BTreeMap::new(),
        applied_at: BTreeMap::new(),
        high_water: h.t0,
        policy_file,
        found: Vec::new(),
        auto: h.auto,
    };
    // An event not acknowledged (its daemon killed) is sent again soon.
    world
        .app
        .fake
        .stream()
        .set_redeliver_after(std::time::Duration::from_millis(300));
    world.apply_model().await.map_err(|e| (0, e))?;
    for (i, op) in ops.iter().enumerate() {
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("TRACE op {i}: {op:?}");
        }
        let t = std::time::Instant::now();
        world.run(op).await.map_err(|e| (i, e))?;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "TRACE {:?} {}",
                t.elapsed().as_millis(),
                format!("{op:?}").split([' ', '{']).next().unwrap_or("")
            );
        }
    }
    // What the history exercised, for the run's summary (checks by outcome, restarts).
    let seen = world
        .q(
            "SELECT outcome || ' ' || COUNT(*) FROM checks GROUP BY outcome UNION ALL \
            SELECT 'restart ' || COUNT(*) FROM occurrences WHERE trigger = 'restart'",
        )
        .await;
    if let Ok(mut tally) = TALLY.lock() {
        for (k, n) in seen.lines().filter_map(|l| l.rsplit_once(' ')) {
            *tally.entry(k.to_owned()).or_default() += n.parse::<u64>().unwrap_or(0);
        }
    }
    world.app.stop().await;
    Ok(())
}

/// Checks by outcome and restarts, over every history of the run.
static TALLY: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// Drop operations one at a time while the history still fails: the shortest it can find.
async fn shrink(h: &History) -> (Vec<Op>, String) {
    let mut ops = h.ops.clone();
    let mut why = match play(h, &ops).await {
        Err((_, e)) => e,
        Ok(()) => return (ops, "passed when replayed".into()),
    };
    let mut i = 0;
    while i < ops.len() {
        let mut shorter = ops.clone();
        shorter.remove(i);
        match play(h, &shorter).await {
            Err((_, e)) => {
                ops = shorter;
                why = e;
            }
            Ok(()) => i += 1,
        }
    }
    (ops, why)
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![s];
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // `SIM_FROM=K` starts at seed K: a long run in chunks, each with its own verdict.
    let from: u64 = std::env::var("SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (from..from.saturating_add(n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_of_daily_operations_keep_every_promise() {
    let seeds = seeds();
    let mut failed = BTreeSet::new();
    // Eight histories at a time (each is one daemon on its own database and fake; most of a
    // history's time is spent waiting, not computing).
    let mut runs = futures_util::stream::iter(seeds.iter().copied())
        .map(|seed| async move {
            let h = history(seed);
            (seed, play(&h, &h.ops).await)
        })
        .buffer_unordered(
            std::env::var("SIM_PAR")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(8),
        );
    while let Some((seed, result)) = runs.next().await {
        if let Err((at, why)) = result {
            if std::env::var("SIM_TRACE").is_ok() {
                eprintln!("TRACE seed {seed} failed at operation {at}: {why}");
            }
            let h = history(seed);
            let (short, why_short) = shrink(&h).await;
            eprintln!(
                "seed {seed} failed at operation {at}: {why}\n  replay: SIM_SEED={seed} cargo test --test it random_histories\n  \
                 starts {}; meetings: {:?}\n  shortest history ({} of {} operations, {why_short}):\n{}",
                fmt_utc(h.t0),
                h.meetings,
                short.len(),
                h.ops.len(),
                short.iter().map(|o| format!("    {o:?}\n")).collect::<String>()
            );
            failed.insert(seed);
        }
    }
    let tally = TALLY.lock().map(|t| t.clone()).unwrap_or_default();
    eprintln!(
        "simulation: {} seeds, {} operations each, {} failed; checks and restarts seen: {tally:?}",
        seeds.len(),
        OPS,
        failed.len()
    );
    assert!(failed.is_empty(), "seeds that broke a promise: {failed:?}");
    if seeds.len() >= 100 {
        // The histories must exercise verification and the auto-record setting (made, refused;
        // recording found, missed), or they prove nothing about them.
        for what in [
            "recording",
            "not_recording",
            "stopped",
            "meeting_ended",
            "error",
            "restart",
            "set",
            "refused",
            "auto_recorded",
            "auto_record_missed",
        ] {
            assert!(
                tally.get(what).is_some_and(|n| *n > 0),
                "no history saw '{what}': {tally:?}"
            );
        }
    }
}

#[test]
fn the_cron_model_follows_the_dst_rules() {
    let t = parse_t;
    // Spring forward in Berlin (2030-03-31, 02:00 → 03:00 local, at 01:00Z): 01:00, 01:30, then
    // 02:00, 02:30 and 03:00 are one instant (01:00Z after the gap), then 03:30.
    let spring = model_starts(
        "0,30 1-3 * * *",
        "Europe/Berlin",
        t("2030-03-30T23:00:00Z"),
        t("2030-03-31T03:00:00Z"),
    );
    assert_eq!(
        spring.iter().map(|t| fmt_utc(*t)).collect::<Vec<_>>(),
        [
            "2030-03-31T00:00:00.000Z",
            "2030-03-31T00:30:00.000Z",
            "2030-03-31T01:00:00.000Z",
            "2030-03-31T01:30:00.000Z"
        ]
    );
    // Fall back (2030-10-27, 03:00 → 02:00 local, at 01:00Z): a fixed 02:30 fires once (the
    // first pass), a wildcard hour every 20 minutes of real time through both passes.
    let fall_fixed = model_starts(
        "30 2 * * *",
        "Europe/Berlin",
        t("2030-10-26T22:00:00Z"),
        t("2030-10-27T03:00:00Z"),
    );
    assert_eq!(fall_fixed, [t("2030-10-27T00:30:00Z")]);
    let fall_any = model_starts(
        "*/20 * * * *",
        "Europe/Berlin",
        t("2030-10-27T00:00:00Z"),
        t("2030-10-27T02:00:00Z"),
    );
    assert_eq!(fall_any.len(), 6);
}
