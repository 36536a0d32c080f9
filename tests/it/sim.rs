//! A seeded simulation of the scheduler under the things ops teams do every day.
//!
//! One seed is one history of operations, drawn from a seeded RNG: policies added, edited
//! (`start_offset`, `window`, layout, schedule), disabled, enabled again and pruned; time passing
//! in random steps on the injected clock; clean restarts; a second daemon started by mistake;
//! `dingrec trigger`'s manual occurrences. Each meeting of the fake DingTalk answers a script drawn
//! from the same seed (success, final errors, retryable errors, throttling, a bad token). The real
//! daemon runs all of it: planner, dispatcher, store on a real SQLite file, retry logic, the HTTP
//! client against the fake on loopback.
//!
//! Time only moves between operations and only when nothing is in flight, so a history's outcome
//! depends on the seed, not on the machine's speed. After every operation the invariants are
//! checked against the database, the fake's request log and a small model of what was applied:
//!
//! 1. no attempt after an attempt of the same occurrence succeeded;
//! 2. no call for a policy after the apply that disabled or pruned it committed;
//! 3. no attempt claimed before its occurrence's due time or after its window;
//! 4. once its window has passed, every occurrence is final; nothing is `running` at rest, and
//!    every attempt has an outcome;
//! 5. every call the fake saw has its attempt row;
//! 6. every one-off firing of a policy enabled and unchanged since before it came due has its row;
//! 7. the daemon never ends by itself.
//!
//! `SIM_SEEDS=N` runs N seeds (default 200), `SIM_SEED=S` replays one. A failure prints the seed and
//! the shortest history it could shrink to (dropping operations while it still fails).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use dingrec::app::App;
use dingrec::clock::{Clock, ManualClock};
use dingrec::domain::PolicyDefaults;
use dingrec::domain::time::fmt_utc;
use dingrec::fake::{MeetingSpec, Scenario, Step};
use dingrec::notify::Notifier;
use dingrec::store::policies::PolicyRecord;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::app::{TestApp, parse_t};
use crate::support::{live, sqlite};

const T0: &str = "2030-01-07T08:00:00Z";
const POLICY_SLOTS: usize = 6;
const OPS: usize = 14;

/// One policy as the simulation's model knows it.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    /// `at: …` (a one-off, in minutes after T0) or `cron: …`.
    at_min: Option<i64>,
    cron: Option<&'static str>,
    start_offset_s: i64,
    window_min: i64,
    layout: &'static str,
    enabled: bool,
}

impl Spec {
    fn yaml(&self, slot: usize) -> String {
        let when = match (self.at_min, self.cron) {
            (Some(m), _) => format!("    at: \"{}\"\n", fmt_utc(parse_t(T0) + TimeDelta::minutes(m))),
            (None, Some(c)) => format!("    cron: \"{c}\"\n"),
            (None, None) => unreachable!("a spec has a schedule"),
        };
        format!(
            "  - name: p{slot}\n    conference_id: conf-{slot}\n    host_union_id: host-1\n{when}    timezone: UTC\n    start_offset: {}s\n    window: {}m\n    layout: {}\n    enabled: {}\n    retry: {{ initial_interval: 20s, maximum_interval: 2m, maximum_attempts: 6 }}\n",
            self.start_offset_s, self.window_min, self.layout, self.enabled
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
}

fn random_spec(rng: &mut StdRng) -> Spec {
    let one_off = rng.random_bool(0.6);
    Spec {
        at_min: one_off.then(|| rng.random_range(1..120)),
        cron: (!one_off).then(|| ["*/20 * * * *", "0 * * * *", "30 8-10 * * *"][rng.random_range(0..3)]),
        start_offset_s: [0, 0, 30, 90][rng.random_range(0..4)],
        window_min: [5, 10, 30][rng.random_range(0..3)],
        layout: ["speech", "grid"][rng.random_range(0..2)],
        enabled: true,
    }
}

fn history(seed: u64) -> (Vec<Vec<Step>>, Vec<Op>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let answers = [
        "ok",
        "systemError",
        "recordStartError",
        "roomClosed",
        "recordStartPermissionError",
        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
        "InvalidAuthentication",
        "timeout_free_502",
    ];
    let scripts = (0..POLICY_SLOTS)
        .map(|_| {
            (0..rng.random_range(0..3))
                .map(|_| {
                    let a = answers[rng.random_range(0..answers.len())];
                    Step {
                        answer: if a == "timeout_free_502" { "empty_502" } else { a }.into(),
                        status: None,
                        times: rng.random_range(1..3),
                        delay: None,
                    }
                })
                .collect()
        })
        .collect();
    let mut model: BTreeMap<usize, Spec> = BTreeMap::new();
    let mut ops = Vec::with_capacity(OPS);
    for _ in 0..OPS {
        let slot = rng.random_range(0..POLICY_SLOTS);
        let op = match rng.random_range(0..100) {
            0..35 => Op::Advance {
                secs: [20, 60, 300, 900, 1800][rng.random_range(0..5)],
            },
            35..75 => {
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
            75..85 => Op::Restart,
            85..92 => Op::SecondDaemon,
            _ => Op::Trigger { slot },
        };
        ops.push(op);
    }
    (scripts, ops)
}

/// The simulation's view of what should hold.
struct World {
    app: TestApp,
    clock: ManualClock,
    model: BTreeMap<usize, Spec>,
    /// Conference → calls the fake had seen when the apply that disabled or pruned it committed.
    silenced: BTreeMap<String, usize>,
    /// Slot → when its current spec was applied (for invariant 6).
    applied_at: BTreeMap<usize, DateTime<Utc>>,
}

type Check = Result<(), String>;

impl World {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn db(&self) -> std::path::PathBuf {
        self.app.settings.database.path.clone()
    }

    /// Wait until the daemon is at rest at the clock's time: every enabled policy planned,
    /// nothing in flight, nothing due, nothing waiting past its window.
    async fn settle(&self) -> Check {
        let until = tokio::time::Instant::now() + crate::support::HANG;
        let now = fmt_utc(self.now());
        let horizon = fmt_utc(self.now() + TimeDelta::hours(24));
        loop {
            if !self.app.alive() {
                return Err("7: the daemon ended by itself".into());
            }
            let busy = sqlite(
                &self.db(),
                &format!(
                    "SELECT (SELECT COUNT(*) FROM occurrences WHERE state = 'running') \
                     + (SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'retry_wait') \
                        AND (next_attempt_at <= '{now}' OR window_ends_at <= '{now}')) \
                     + (SELECT COUNT(*) FROM attempts WHERE outcome IS NULL) \
                     + (SELECT COUNT(*) FROM policies WHERE enabled = 1 AND planned_until < '{horizon}')"
                ),
            );
            if busy == "0" {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                return Err(format!(
                    "4: not at rest at {now}: {busy} rows in flight, due or past their window"
                ));
            }
            self.app.wake();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
    }

    async fn apply_model(&mut self) -> Check {
        let yaml: String = std::iter::once("policies:\n".to_owned())
            .chain(self.model.iter().map(|(slot, s)| s.yaml(*slot)))
            .collect();
        let records: Vec<PolicyRecord> = if self.model.is_empty() {
            Vec::new()
        } else {
            dingrec::policy_file::parse_str(
                std::path::Path::new("sim.yaml"),
                &yaml,
                &PolicyDefaults::default(),
            )
            .map_err(|e| format!("the simulation wrote a bad file: {e:?}"))?
            .iter()
            .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
            .collect()
        };
        self.app
            .store
            .apply_policies(&records, true, self.now())
            .await
            .map_err(|e| format!("apply: {e}"))?;
        Ok(())
    }

    async fn run(&mut self, op: &Op) -> Check {
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
                    self.applied_at.insert(*slot, self.now());
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
                let target = self.now() + TimeDelta::seconds(*secs);
                loop {
                    self.settle().await?;
                    let next = self.app.store.next_due_at().await.map_err(|e| e.to_string())?;
                    let now = self.now();
                    if now >= target {
                        break;
                    }
                    // The next thing due, or the next minute (window ends and plans fall on their
                    // own times), whichever comes first, never beyond the target.
                    let step = next
                        .filter(|t| *t > now)
                        .unwrap_or(target)
                        .min(now + TimeDelta::seconds(60))
                        .min(target);
                    self.clock.set(step);
                    self.app.wake();
                }
            }
            Op::Restart => {
                if !self.app.stop().await {
                    return Err("7: the daemon had ended before it was told to stop".into());
                }
                self.app.run().await;
            }
            Op::SecondDaemon => {
                match App::build(
                    self.app.settings.clone(),
                    None,
                    Arc::new(self.clock.clone()),
                    Notifier::disabled(),
                )
                .await
                {
                    Ok(_) => return Err("a second daemon started on the same database".into()),
                    Err(e) if e.to_string().contains("another dingrec is running") => {}
                    Err(e) => return Err(format!("the second daemon failed otherwise: {e}")),
                }
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
        self.settle().await?;
        self.check().await
    }

    async fn check(&self) -> Check {
        let db = self.db();
        let q = |sql: &str| sqlite(&db, sql);
        if q(
            "SELECT COUNT(*) FROM attempts a JOIN attempts s ON s.occurrence_id = a.occurrence_id \
              AND s.outcome = 'success' AND a.attempt_no > s.attempt_no",
        ) != "0"
        {
            return Err("1: an attempt after a success".into());
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
        let early_or_late = q(
            "SELECT COUNT(*) FROM attempts a JOIN occurrences o ON o.id = a.occurrence_id \
             WHERE a.started_at < o.due_at OR a.started_at >= o.window_ends_at",
        );
        if early_or_late != "0" {
            return Err(format!(
                "3: {early_or_late} attempts claimed before their due time or after their window"
            ));
        }
        let now = fmt_utc(self.now());
        let stuck = q(&format!(
            "SELECT COUNT(*) FROM occurrences WHERE state IN ('scheduled', 'running', 'retry_wait') AND window_ends_at <= '{now}'"
        ));
        if stuck != "0" || q("SELECT COUNT(*) FROM attempts WHERE outcome IS NULL") != "0" {
            return Err(format!(
                "4: {stuck} occurrences live past their window, or an attempt without outcome"
            ));
        }
        let starts = self.app.fake.start_requests();
        let mut by_conf: BTreeMap<String, usize> = BTreeMap::new();
        for r in &starts {
            *by_conf.entry(r.id.clone().unwrap_or_default()).or_default() += 1;
        }
        for (conf, n) in by_conf {
            let rows: usize = q(&format!(
                "SELECT COUNT(*) FROM attempts WHERE conference_id = '{conf}'"
            ))
            .parse()
            .unwrap_or(0);
            if rows < n {
                return Err(format!("5: {conf} got {n} calls but has {rows} attempt rows"));
            }
        }
        for (slot, applied) in &self.applied_at {
            let Some(s) = self.model.get(slot).filter(|s| s.enabled) else {
                continue;
            };
            let Some(m) = s.at_min else { continue };
            let start = parse_t(T0) + TimeDelta::minutes(m);
            let due = start + TimeDelta::seconds(s.start_offset_s);
            if due > *applied && due <= self.now() {
                let rows = q(&format!(
                    "SELECT COUNT(*) FROM occurrences WHERE policy_name = 'p{slot}' AND due_at = '{}'",
                    fmt_utc(due)
                ));
                if rows != "1" {
                    return Err(format!(
                        "6: p{slot}'s firing due {} has {rows} rows",
                        fmt_utc(due)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Run one history; the number of the operation that broke an invariant, and why.
async fn play(scripts: &[Vec<Step>], ops: &[Op]) -> Result<(), (usize, String)> {
    let clock = ManualClock::new(parse_t(T0));
    let meetings: Vec<MeetingSpec> = scripts
        .iter()
        .enumerate()
        .map(|(slot, script)| live(&format!("conf-{slot}"), script.clone()))
        .collect();
    let app = TestApp::start_with(
        Scenario {
            meetings,
            ..Scenario::default()
        },
        Arc::new(clock.clone()),
        |s| s.defaults.timezone = "UTC".into(),
        |_| String::new(),
    )
    .await;
    let mut world = World {
        app,
        clock,
        model: BTreeMap::new(),
        silenced: BTreeMap::new(),
        applied_at: BTreeMap::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        world.run(op).await.map_err(|e| (i, e))?;
    }
    world.app.stop().await;
    Ok(())
}

/// Drop operations one at a time while the history still fails: the shortest it can find.
async fn shrink(scripts: &[Vec<Step>], mut ops: Vec<Op>) -> (Vec<Op>, String) {
    let mut why = match play(scripts, &ops).await {
        Err((_, e)) => e,
        Ok(()) => return (ops, "passed when replayed".into()),
    };
    let mut i = 0;
    while i < ops.len() {
        let mut shorter = ops.clone();
        shorter.remove(i);
        match play(scripts, &shorter).await {
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
    (0..n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_of_daily_operations_keep_every_promise() {
    let seeds = seeds();
    let mut failed = BTreeSet::new();
    // A few histories at a time: each is one daemon on its own database and fake.
    for chunk in seeds.chunks(4) {
        let runs = chunk.iter().map(|seed| async move {
            let (scripts, ops) = history(*seed);
            (*seed, play(&scripts, &ops).await)
        });
        for (seed, result) in futures_util::future::join_all(runs).await {
            if let Err((at, why)) = result {
                let (scripts, ops) = history(seed);
                let (short, why_short) = shrink(&scripts, ops.clone()).await;
                eprintln!(
                    "seed {seed} failed at operation {at}: {why}\n  replay: SIM_SEED={seed} cargo test --test it random_histories\n  \
                     meeting scripts: {scripts:?}\n  shortest history ({} of {} operations, {why_short}):\n{}",
                    short.len(),
                    ops.len(),
                    short.iter().map(|o| format!("    {o:?}\n")).collect::<String>()
                );
                failed.insert(seed);
            }
        }
    }
    eprintln!(
        "simulation: {} seeds, {} operations each, {} failed",
        seeds.len(),
        OPS,
        failed.len()
    );
    assert!(failed.is_empty(), "seeds that broke a promise: {failed:?}");
}
