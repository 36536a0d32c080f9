//! The real App in-process, against the fake DingTalk, with a fresh SQLite file.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use dingrec::app::App;
use dingrec::clock::{Clock, ManualClock, SharedClock, SystemClock};
use dingrec::config::Settings;
use dingrec::domain::OccurrenceState;
use dingrec::domain::PolicyDefaults;
use dingrec::fake::{FakeDingTalk, Scenario};
use dingrec::notify::Notifier;
use dingrec::policy_file::parse_str;
use dingrec::store::Store;
use dingrec::store::history::{HistoryFilter, OccurrenceRow};
use dingrec::store::policies::PolicyRecord;
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
    cancel: CancellationToken,
    waker: Option<Arc<tokio::sync::Notify>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _reload: mpsc::Sender<()>,
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
    s
}

/// Write policies (YAML text) to the database, as `dingrec apply` does.
pub async fn apply(store: &Store, clock: &dyn Clock, yaml: &str) {
    let ps = parse_str(
        std::path::Path::new("test.yaml"),
        yaml,
        &PolicyDefaults {
            timezone: dingrec::domain::Zone::parse("UTC").expect("zone"),
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
        .apply_policies(&recs, false, clock.now())
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
        let fake = FakeDingTalk::start(([127, 0, 0, 1], 0).into(), scenario)
            .await
            .expect("fake");
        let dir = tempfile::tempdir().expect("tmp");
        let mut settings = settings_for(&fake, dir.path());
        tweak(&mut settings);
        let store = Store::open(&settings.database).await.expect("store");
        let yaml = policies(clock.as_ref());
        if !yaml.trim().is_empty() {
            apply(&store, clock.as_ref(), &yaml).await;
        }
        let mut app = TestApp {
            fake,
            store,
            settings,
            dir,
            http: ([127, 0, 0, 1], 0).into(),
            clock,
            cancel: CancellationToken::new(),
            waker: None,
            task: None,
            _reload: mpsc::channel(1).0,
        };
        app.run().await;
        app
    }

    /// (Re)start the daemon on the same database.
    pub async fn run(&mut self) {
        let app = App::build(
            self.settings.clone(),
            None,
            self.clock.clone(),
            Notifier::disabled(),
        )
        .await
        .expect("app builds");
        self.http = app.http_addr();
        self.waker = app.waker();
        self.cancel = CancellationToken::new();
        let cancel = self.cancel.clone();
        let (tx, rx) = mpsc::channel(1);
        self._reload = tx;
        self.task = Some(tokio::spawn(async move {
            if let Err(why) = app.run_until_stopped(cancel, rx).await {
                panic!("the daemon failed: {why}");
            }
        }));
    }

    /// Stop the daemon the clean way (SIGTERM's path) and wait for it; false when it had
    /// already ended by itself, or failed.
    pub async fn stop(&mut self) -> bool {
        let alive = self.alive();
        self.cancel.cancel();
        let ended = match self.task.take() {
            Some(t) => matches!(tokio::time::timeout(HANG, t).await, Ok(Ok(()))),
            None => true,
        };
        alive && ended
    }

    /// The daemon is still running (it has not ended or failed on its own).
    pub fn alive(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Wake the scheduler now (after the test moved a manual clock).
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            w.notify_one();
        }
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
    /// move the clock to the next due time (at most `step` ahead) and wake the scheduler; until
    /// `n` occurrences are final. Time passes only between attempts, so what happens depends on
    /// the schedule and the answers alone, never on how fast this machine is.
    pub async fn drive_until_final(
        &self,
        clock: &ManualClock,
        step: TimeDelta,
        n: usize,
    ) -> Vec<OccurrenceRow> {
        let until = tokio::time::Instant::now() + HANG;
        loop {
            assert!(
                tokio::time::Instant::now() < until,
                "not final: {:#?}",
                self.history().await
            );
            let rows = self.history().await;
            if rows.len() >= n && rows.iter().all(|o| !o.state.is_live()) {
                return rows;
            }
            let running = rows.iter().any(|o| o.state == OccurrenceState::Running);
            let next = self.store.next_due_at().await.expect("next due");
            let now = clock.now();
            if running || next.is_some_and(|t| t <= now) {
                // Something is in flight or due: let the daemon get on with it.
                if let Some(w) = &self.waker {
                    w.notify_one();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let to = next.map_or(now + step, |t| t.min(now + step));
            clock.set(to);
            if let Some(w) = &self.waker {
                w.notify_one();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
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
