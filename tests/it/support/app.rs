//! The real App in-process, against the fake DingTalk, with a fresh SQLite file.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use dingrec::app::App;
use dingrec::clock::{Clock, ManualClock, SharedClock, SystemClock};
use dingrec::config::Settings;
use dingrec::domain::PolicyDefaults;
use dingrec::fake::{FakeDingTalk, Scenario};
use dingrec::notify::Notifier;
use dingrec::policy_file::parse_str;
use dingrec::store::PolicyRecord;
use dingrec::store::Store;
use dingrec::store::{HistoryFilter, OccurrenceRow};
use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::HANG;

pub struct TestApp {
    pub fake: FakeDingTalk,
    pub store: Store,
    pub settings: Settings,
    /// Holds the database; removed when the test ends.
    #[allow(dead_code)]
    pub dir: tempfile::TempDir,
    pub http: std::net::SocketAddr,
    pub clock: SharedClock,
    /// The config file the daemon re-reads on a reload (`None`: settings made in code).
    pub config_path: Option<std::path::PathBuf>,
    cancel: CancellationToken,
    waker: Option<Arc<tokio::sync::Notify>>,
    /// The running daemon's health board (its `planned_at`), for the manual-clock drivers.
    health: Option<Arc<dingrec::scheduler::health::Health>>,
    daemon: Option<Daemon>,
    reload: mpsc::Sender<()>,
}

/// The daemon on a runtime of its own, on its own thread, as a process has: dropping that runtime
/// ends every task of the daemon at once, wherever it was (a crash), and nothing else.
struct Daemon {
    thread: std::thread::JoinHandle<()>,
    /// Sending (or dropping) it crashes the daemon.
    crash: Option<tokio::sync::oneshot::Sender<()>>,
    /// `Some(result)` when it ended (told to stop, failed), `None` when it crashed.
    ended: tokio::sync::oneshot::Receiver<Option<Result<(), String>>>,
}

/// An instant `ms` from now, as RFC 3339 (for `at:`).
pub fn at_in(clock: &dyn Clock, ms: i64) -> String {
    (clock.now() + TimeDelta::milliseconds(ms)).to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn settings_for(fake: &FakeDingTalk, dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.database.path = dir.join("dingrec.db");
    s.dingtalk.base_url = fake.base_url();
    s.dingtalk.app_key = "test-app-key".into();
    s.dingtalk.app_secret = Some(SecretString::from("test-app-secret".to_owned()));
    s.dingtalk.rate_limit = 0;
    s.dingtalk.request_timeout = Duration::from_secs(2);
    s.http.listen = ([127, 0, 0, 1], 0).into();
    s.policies.paths = vec![];
    s.defaults.timezone = "UTC".into();
    s.defaults.verify = None;
    s
}

/// Write policies (YAML text) to the database, as `dingrec apply` does.
pub async fn apply(store: &Store, clock: &dyn Clock, yaml: &str) {
    apply_with(store, clock, yaml, Default::default()).await
}

/// As [`apply`], with the alert destinations that policies may name.
pub async fn apply_with(
    store: &Store,
    clock: &dyn Clock,
    yaml: &str,
    alert_destinations: std::collections::BTreeSet<String>,
) {
    let ps = parse_str(
        std::path::Path::new("test.yaml"),
        yaml,
        // Verification off unless a test's policy asks for it (`verify: {...}`): the tests of
        // starts look at the start, and a check 15 s later would only slow them down.
        &PolicyDefaults {
            timezone: dingrec::domain::Zone::parse("UTC").expect("zone"),
            verify: None,
            alert_destinations,
            ..PolicyDefaults::default()
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "bad test policies: {}",
            e.iter().map(|d| d.to_string()).collect::<String>()
        )
    });
    let recs: Vec<PolicyRecord> = ps
        .iter()
        .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
        .collect();
    store
        .apply_policies(&recs, dingrec::store::Prune::Off, clock.now())
        .await
        .expect("apply");
}

impl TestApp {
    pub async fn start(scenario: Scenario, policies: impl FnOnce(&dyn Clock) -> String) -> TestApp {
        Self::start_with(scenario, Arc::new(SystemClock), |_| {}, policies).await
    }

    pub async fn start_with(
        scenario: Scenario,
        clock: SharedClock,
        tweak: impl FnOnce(&mut Settings),
        policies: impl FnOnce(&dyn Clock) -> String,
    ) -> TestApp {
        let mut app = Self::build_with(scenario, clock, tweak, policies).await;
        app.run().await;
        app
    }

    /// As [`TestApp::start_with`], with the daemon not started yet ([`TestApp::run`] starts it).
    pub async fn build_with(
        scenario: Scenario,
        clock: SharedClock,
        tweak: impl FnOnce(&mut Settings),
        policies: impl FnOnce(&dyn Clock) -> String,
    ) -> TestApp {
        let fake = FakeDingTalk::start_with_clock(([127, 0, 0, 1], 0).into(), scenario, clock.clone())
            .await
            .expect("fake");
        let dir = tempfile::tempdir().expect("tmp");
        let mut settings = settings_for(&fake, dir.path());
        if crate::support::engine::postgres() {
            settings.database.path = dingrec::config::DEFAULT_DATABASE_PATH.into();
            settings.database.url = crate::support::engine::fresh_url().await;
            std::fs::write(dir.path().join("database_url"), &settings.database.url).expect("keep the URL");
        }
        tweak(&mut settings);
        let store = Store::open(&settings.database).await.expect("store");
        let yaml = policies(clock.as_ref());
        if !yaml.trim().is_empty() {
            let names = settings.alerts.destinations.keys().cloned().collect();
            apply_with(&store, clock.as_ref(), &yaml, names).await;
        }
        TestApp {
            fake,
            store,
            settings,
            dir,
            http: ([127, 0, 0, 1], 0).into(),
            clock,
            config_path: None,
            cancel: CancellationToken::new(),
            waker: None,
            health: None,
            daemon: None,
            reload: mpsc::channel(1).0,
        }
    }

    /// (Re)start the daemon on the same database.
    pub async fn run(&mut self) {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (crash_tx, crash_rx) = tokio::sync::oneshot::channel::<()>();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let (reload_tx, reload_rx) = mpsc::channel(1);
        let settings = self.settings.clone();
        let config_path = self.config_path.clone();
        let clock = self.clock.clone();
        self.cancel = CancellationToken::new();
        let cancel = self.cancel.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the daemon's runtime");
            let ended = rt.block_on(async move {
                let app = match App::build(settings, config_path, clock, Notifier::disabled()).await {
                    Ok(app) => app,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return None;
                    }
                };
                let _ = ready_tx.send(Ok((app.http_addr(), app.waker(), app.health())));
                tokio::select! {
                    ended = app.run_until_stopped(cancel, reload_rx) => Some(ended),
                    _ = crash_rx => None,
                }
            });
            // A crash: every task still running is dropped where it stands.
            rt.shutdown_timeout(Duration::from_secs(10));
            let _ = ended_tx.send(ended);
        });
        let (http, waker, health) = ready_rx
            .await
            .expect("the daemon's thread answers")
            .unwrap_or_else(|e| panic!("app builds: {e}"));
        self.http = http;
        self.waker = waker;
        self.health = Some(health);
        self.reload = reload_tx;
        self.daemon = Some(Daemon {
            thread,
            crash: Some(crash_tx),
            ended: ended_rx,
        });
    }

    /// Stop the daemon the clean way (SIGTERM's path) and wait for it; false when it had
    /// already ended by itself, or failed.
    pub async fn stop(&mut self) -> bool {
        let alive = self.alive();
        self.cancel.cancel();
        let Some(d) = self.daemon.take() else {
            return true;
        };
        let clean = match tokio::time::timeout(HANG, d.ended).await {
            Ok(Ok(Some(Ok(())))) => true,
            Ok(Ok(Some(Err(why)))) => {
                eprintln!("the daemon failed: {why}");
                false
            }
            other => panic!("the daemon did not stop: {other:?}"),
        };
        drop(d.crash);
        let _ = d.thread.join();
        alive && clean
    }

    /// Kill the daemon where it stands, as `kill -9` does: no drain, no outcome written for what
    /// is in flight. False when it had already ended by itself.
    pub async fn crash(&mut self) -> bool {
        let alive = self.alive();
        let Some(mut d) = self.daemon.take() else {
            return false;
        };
        if let Some(c) = d.crash.take() {
            let _ = c.send(());
        }
        tokio::time::timeout(HANG, d.ended)
            .await
            .expect("the runtime shuts down")
            .ok();
        let _ = d.thread.join();
        alive
    }

    /// Reload (SIGHUP's path) and wait until the daemon has done it; whether it applied.
    pub async fn reload(&self) -> bool {
        let count = |text: &str, result: &str| -> u64 {
            text.lines()
                .find(|l| {
                    l.starts_with("dingrec_reloads_total") && l.contains(&format!("result=\"{result}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let before = self.metrics().await;
        let (ok0, err0) = (count(&before, "ok"), count(&before, "error"));
        self.reload.send(()).await.expect("the daemon takes reloads");
        let until = tokio::time::Instant::now() + HANG;
        loop {
            let now = self.metrics().await;
            if count(&now, "ok") > ok0 {
                return true;
            }
            if count(&now, "error") > err0 {
                return false;
            }
            assert!(tokio::time::Instant::now() < until, "the reload never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `GET path`'s body.
    async fn get(&self, path: &str) -> String {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.http))
            .timeout(HANG)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("{path} body: {e}"))
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await
    }

    /// `GET /readyz`'s body.
    pub async fn readyz(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/readyz").await).expect("readyz body")
    }

    /// The daemon is still running (it has not ended or failed on its own).
    pub fn alive(&self) -> bool {
        self.daemon.as_ref().is_some_and(|d| !d.thread.is_finished())
    }

    /// Wake the scheduler now (after the test moved a manual clock).
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.notify_one();
        }
    }

    /// When each StartCloudRecord left dingrec (`attempts.sent_at`), in ms, in order.
    pub async fn send_times(&self) -> Vec<i64> {
        self.sends().await.iter().map(|(t, _)| *t).collect()
    }

    /// Every call dingrec sent, in the order it sent them: (`sent_at` in ms, conference id).
    pub async fn sends(&self) -> Vec<(i64, String)> {
        let sent = crate::support::engine::rows(
            &self.store,
            "SELECT sent_at, conference_id FROM attempts WHERE sent_at IS NOT NULL ORDER BY sent_at, id",
        )
        .await;
        sent.into_iter()
            .map(|r| {
                let t = r[0].as_str().expect("sent_at");
                (
                    parse_t(t).timestamp_millis(),
                    r[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub async fn history(&self) -> Vec<OccurrenceRow> {
        self.store
            .history(&HistoryFilter::default())
            .await
            .expect("history")
    }

    /// Wait until at least `n` occurrences exist and all of them are final.
    pub async fn wait_final(&self, n: usize, limit: Duration) -> Vec<OccurrenceRow> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let rows = self.history().await;
            let done = rows.len() >= n && rows.iter().all(|o| !o.state.is_live());
            if done {
                return rows;
            }
            if tokio::time::Instant::now() > until {
                panic!("not final within {limit:?}: {rows:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// With a manual clock: whenever nothing is in flight and nothing is due at the clock's time,
    /// move the clock to the next due time (of an attempt or a check) (at most `step` ahead) and wake the scheduler; until
    /// `n` occurrences are final. Time passes only between attempts, so what happens depends on
    /// the schedule and the answers alone, never on how fast this machine is.
    pub async fn drive_until_final(
        &self,
        clock: &ManualClock,
        step: TimeDelta,
        n: usize,
    ) -> Vec<OccurrenceRow> {
        self.drive_until(clock, step, n, false).await
    }

    /// As [`TestApp::drive_until_final`], and until no check is pending either (a succeeded
    /// occurrence may still be watched, or its video looked up).
    pub async fn drive_until_settled(
        &self,
        clock: &ManualClock,
        step: TimeDelta,
        n: usize,
    ) -> Vec<OccurrenceRow> {
        self.drive_until(clock, step, n, true).await
    }

    async fn drive_until(
        &self,
        clock: &ManualClock,
        step: TimeDelta,
        n: usize,
        no_checks_pending: bool,
    ) -> Vec<OccurrenceRow> {
        // A hang is no progress, not a slow machine: the bound starts again each time the clock
        // moves on (a test driving a thousand attempts may take minutes under load).
        let mut until = tokio::time::Instant::now() + HANG;
        loop {
            assert!(
                tokio::time::Instant::now() < until,
                "no progress for {HANG:?} at {}: {:#?}",
                clock.now(),
                self.history().await
            );
            // Whether the loop has planned at the clock's instant, read before the database: the
            // loop marks it after its pass committed, so the reading below includes that plan.
            // (Read after, a plan committing in between would be missed: the clock would move on
            // past rows it never saw.)
            let planned_now = self
                .health
                .as_ref()
                .is_none_or(|h| h.planned_at() == Some(clock.now()));
            // One statement, one snapshot: a claim moves an attempt from "due" to "running", a
            // check from "due" to "open", in one commit; read apart, a claim between two reads
            // would look like nothing in flight and nothing due, and the clock would move on.
            let at_rest = crate::support::engine::rows(
                &self.store,
                "SELECT (SELECT COUNT(*) FROM checks WHERE outcome IS NULL) \
                   + (SELECT COUNT(*) FROM occurrences WHERE state = 'running'), \
                 (SELECT COUNT(*) FROM occurrences WHERE next_check_at IS NOT NULL), \
                 (SELECT MIN(next_attempt_at) FROM occurrences WHERE state IN ('scheduled', 'retry_wait')), \
                 (SELECT MIN(next_check_at) FROM occurrences WHERE next_check_at IS NOT NULL)",
            )
            .await;
            let [in_flight, due_checks, next_due, next_check] = &at_rest[0][..] else {
                panic!("at rest? {at_rest:?}")
            };
            let (in_flight, due_checks) = (
                in_flight.as_i64().expect("count"),
                due_checks.as_i64().expect("count"),
            );
            let (next_due, next_check) = (
                next_due.as_str().map(str::to_owned),
                next_check.as_str().map(str::to_owned),
            );
            let checks_pending = no_checks_pending && in_flight + due_checks > 0;
            let rows = self.history().await;
            if rows.len() >= n && rows.iter().all(|o| !o.state.is_live()) && !checks_pending && in_flight == 0
            {
                return rows;
            }
            let running = in_flight > 0;
            let next = [next_due, next_check]
                .into_iter()
                .flatten()
                .map(|t| parse_t(&t))
                .min();
            let now = clock.now();
            if running || next.is_some_and(|t| t <= now) {
                // Something is in flight or due: let the daemon get on with it.
                if let Some(w) = &self.waker {
                    w.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            // Nothing in flight or due: before time moves on, the loop must have planned (and
            // swept) at this instant; else a firing due in between would be planned late, as a
            // catch-up, or a window would close unswept, depending on this machine's speed.
            if let Some(h) = &self.health
                && !planned_now
            {
                h.want_housekeeping();
                if let Some(w) = &self.waker {
                    w.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            let to = next.map_or(now + step, |t| t.min(now + step));
            clock.set(to);
            until = tokio::time::Instant::now() + HANG;
            if let Some(w) = &self.waker {
                w.notify_one();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The auto-record settings as the running loop last saw them: when one may next be due,
    /// how many calls are in flight.
    pub fn settings_state(&self) -> (Option<DateTime<Utc>>, usize) {
        self.health.as_ref().map_or((None, 0), |h| h.settings_state())
    }

    /// What the running daemon's loop says of itself: when it last beat and planned, its
    /// database and reload errors (for a failure's message: a stuck loop from an idle one).
    pub fn loop_state(&self) -> String {
        match &self.health {
            None => "no daemon running".into(),
            Some(h) => format!(
                "loop last beat {:?} ago, planned at {:?}, database error {:?}, reload error {:?}",
                h.heartbeat_age(),
                h.planned_at().map(dingrec::domain::time::fmt_utc),
                h.db_error(),
                h.reload_error()
            ),
        }
    }

    pub fn occurrence<'a>(rows: &'a [OccurrenceRow], policy: &str) -> &'a OccurrenceRow {
        rows.iter()
            .find(|o| o.policy == policy)
            .unwrap_or_else(|| panic!("no occurrence of {policy}"))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn parse_t(s: &str) -> DateTime<Utc> {
    dingrec::domain::time::parse_utc(s).expect("time")
}
