//! The daemon: wiring of store, scheduler, DingTalk client, HTTP, signals and systemd.
//!
//! `App::build(settings, clock)` opens the database (migrations), recovers from an earlier stop,
//! applies the policy files, binds the HTTP listener; `run_until_stopped` runs until the
//! cancellation token fires, reloading on each message of its reload channel.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Credentials, Settings};
use crate::dingtalk::DingTalkClient;
use crate::dingtalk::token::{ShelfFuture, ShelfTurn, TokenShelf};
use crate::domain::AlertEvent;
use crate::domain::SealedToken;
use crate::domain::alert::Facts;
use crate::domain::outcome::Classification;
use crate::exit::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Failure};
use crate::http::{HttpState, router};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy_file;
use crate::scheduler::Scheduler;
use crate::scheduler::dispatcher::{Dispatcher, Writer};
use crate::scheduler::health::Health;
use crate::store::Store;
use crate::store::lock::InstanceLock;
use crate::store::{PolicyRecord, Prune, source_within};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What makes attempts: the DingTalk client, the metrics, the health board and the dispatcher
/// with its outcome writer. The daemon and `dingrec trigger` build it the same way.
pub struct AttemptEngine {
    pub client: Arc<DingTalkClient>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub dispatcher: Arc<Dispatcher>,
    pub writer: Writer,
}

impl AttemptEngine {
    /// `tick` is the scheduler loop's period (for the health board's "stuck" check);
    /// `rate_limit` and `max_in_flight` bound the calls.
    pub fn build(
        settings: &Settings,
        credentials: Credentials,
        store: &Store,
        clock: SharedClock,
        tick: std::time::Duration,
        (rate_limit, max_in_flight): (u32, usize),
    ) -> Result<AttemptEngine, BuildError> {
        let metrics = Metrics::new();
        let client = Arc::new(
            DingTalkClient::new(
                &settings.dingtalk,
                Some(credentials),
                Some(metrics.clone()),
                clock.clone(),
            )
            .map_err(BuildError::Config)?,
        );
        let counter_store = store.clone();
        let counter_clock = clock.clone();
        client.count_tokens_with(Arc::new(move || {
            let (store, clock) = (counter_store.clone(), counter_clock.clone());
            Box::pin(async move {
                let calls = crate::domain::quota::Calls::one(crate::domain::quota::Api::Token);
                store.add_usage(&calls, clock.now()).await.is_ok()
            })
        }));
        client.share_tokens_with(Arc::new(store.clone()));
        let health = Arc::new(Health::new(tick));
        let (dispatcher, writer) = Dispatcher::new(
            store.clone(),
            client.clone(),
            clock,
            metrics.clone(),
            Classification::with_overrides(settings.dingtalk.classification.clone()),
            health.clone(),
            rate_limit,
            max_in_flight,
        );
        Ok(AttemptEngine {
            client,
            metrics,
            health,
            dispatcher,
            writer,
        })
    }
}

/// The daemon keeps its access token in the database (`access_tokens`), sealed by the client.
impl TokenShelf for Store {
    fn load<'a>(&'a self, app: &'a str) -> ShelfFuture<'a, Option<SealedToken>> {
        Box::pin(async move { self.shared_token(app).await.map_err(|e| e.to_string()) })
    }

    fn save<'a>(
        &'a self,
        app: &'a str,
        token: &'a SealedToken,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ShelfFuture<'a, ()> {
        Box::pin(async move { self.share_token(app, token, now).await.map_err(|e| e.to_string()) })
    }

    fn forget<'a>(&'a self, app: &'a str, sealed: &'a [u8]) -> ShelfFuture<'a, ()> {
        Box::pin(async move {
            self.forget_token(app, sealed)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    fn fetch_turn<'a>(&'a self, app: &'a str) -> ShelfFuture<'a, Option<Box<dyn ShelfTurn>>> {
        Box::pin(async move {
            self.token_fetch_turn(app)
                .await
                .map(|t| t.map(|t| Box::new(t) as Box<dyn ShelfTurn>))
                .map_err(|e| e.to_string())
        })
    }
}

impl ShelfTurn for crate::store::FetchTurn {
    fn release(self: Box<Self>) -> ShelfFuture<'static, ()> {
        Box::pin(async move {
            (*self).release().await;
            Ok(())
        })
    }
}

pub struct App {
    pub settings: Settings,
    pub config_path: Option<PathBuf>,
    pub store: Store,
    pub client: Arc<DingTalkClient>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub notifier: Notifier,
    pub clock: SharedClock,
    /// Taken by `run_until_stopped`.
    listener: Option<TcpListener>,
    scheduler: Option<Scheduler>,
    /// Held for the daemon's life: no second daemon on the same SQLite file. (On PostgreSQL
    /// several daemons share the database: leases and row locks keep them apart.)
    _instance_lock: Option<InstanceLock>,
    /// Tells the quota task that the policies changed: forecast again.
    replan: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Build everything; nothing runs yet except the writer task.
    pub async fn build(
        settings: Settings,
        config_path: Option<PathBuf>,
        clock: SharedClock,
        notifier: Notifier,
    ) -> Result<App, BuildError> {
        let credentials = settings
            .credentials()
            .map_err(|e| BuildError::Config(e.to_string()))?;
        settings
            .alerts
            .check_secrets()
            .and_then(|()| settings.http.check_secrets())
            .map_err(|e| BuildError::Config(e.to_string()))?;
        // Before anything touches the database: one daemon per file.
        let instance_lock = match settings.database.engine() {
            // Its wait (up to a second) blocks: off the runtime's workers.
            crate::config::DatabaseEngine::Sqlite => {
                let path = settings.database.path.clone();
                let taken = tokio::task::spawn_blocking(move || InstanceLock::acquire(&path))
                    .await
                    .map_err(|e| BuildError::Config(format!("the instance lock's task failed: {e}")))?;
                Some(taken?)
            }
            crate::config::DatabaseEngine::Postgres => None,
        };
        let quota = settings
            .dingtalk
            .quota()
            .map_err(|e| BuildError::Config(e.to_string()))?;
        let store = Store::open(&settings.database)
            .await?
            .with_quota_timezone(quota.timezone)
            .with_lease(settings.scheduler.lease);
        let alerts = &settings.alerts;
        store
            .set_alert_routing(
                &alerts.default,
                &alerts.events,
                !alerts.destinations.is_empty(),
                clock.now(),
            )
            .await?;
        let tick = notifier
            .watchdog_interval()
            .map_or(crate::scheduler::TICK, |w| w.min(crate::scheduler::TICK));
        let AttemptEngine {
            client,
            metrics,
            health,
            dispatcher,
            writer,
        } = AttemptEngine::build(
            &settings,
            credentials,
            &store,
            clock.clone(),
            tick,
            (settings.dingtalk.rate_limit, settings.scheduler.max_in_flight),
        )?;
        let scheduler = Scheduler::new(
            dispatcher,
            writer,
            store.clone(),
            clock.clone(),
            metrics.clone(),
            health.clone(),
            notifier.clone(),
            settings.scheduler.horizon,
        )
        .with_retention(settings.retention.attempts);
        scheduler.recover().await?;
        store.register_instance(clock.now()).await?;
        // The "nothing recorded in 24 h" alert needs the gauge from the first scrape on, not
        // only after the next success.
        if let Some(t) = store.last_success_at().await? {
            metrics.last_success(t.timestamp_millis() as f64 / 1000.0);
        }
        let listener =
            TcpListener::bind(settings.http.listen)
                .await
                .map_err(|source| BuildError::Listen {
                    addr: settings.http.listen,
                    source,
                })?;
        let app = App {
            settings,
            config_path,
            store,
            client,
            metrics,
            health,
            notifier,
            clock,
            listener: Some(listener),
            scheduler: Some(scheduler),
            _instance_lock: instance_lock,
            replan: Arc::new(tokio::sync::Notify::new()),
        };
        app.apply_policy_files(&app.settings).await;
        Ok(app)
    }

    /// Wakes the scheduler loop at once instead of at its next tick (tests that move a manual
    /// clock use it).
    pub fn waker(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.scheduler.as_ref().map(|s| s.dispatcher.notify.clone())
    }

    /// The loop's health board: tests that drive a manual clock ask it whether the loop has
    /// planned at the clock's current instant ([`Health::planned_at`]).
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(self.settings.http.listen)
    }

    /// Apply the files of `policies.paths` (if any). Problems are logged with their location and
    /// shown by `/readyz`; the database's policies stay as they were.
    async fn apply_policy_files(&self, settings: &Settings) -> bool {
        if settings.policies.paths.is_empty() {
            return true;
        }
        let defaults = match settings.policy_defaults() {
            Ok(d) => d,
            Err(e) => {
                self.reload_failed(e.to_string());
                return false;
            }
        };
        let paths = &settings.policies.paths;
        // Reading and parsing files (up to 10 MiB each) blocks: off the runtime's workers.
        let loaded = {
            let paths = paths.clone();
            tokio::task::spawn_blocking(move || policy_file::load_paths(&paths, &defaults))
                .await
                .unwrap_or_else(|e| {
                    Err(vec![policy_file::Diagnostic::file_level(
                        std::path::Path::new("policies.paths"),
                        format!("the parsing task failed: {e}"),
                    )])
                })
        };
        match loaded {
            Ok(ps) => {
                let recs: Vec<PolicyRecord> = ps
                    .iter()
                    .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
                    .collect();
                if recs.is_empty() && self.refuse_empty_files(paths).await {
                    return false;
                }
                let prune = if settings.policies.prune {
                    Prune::Within(paths)
                } else {
                    Prune::Off
                };
                match self.store.apply_policies(&recs, prune, self.clock.now()).await {
                    Ok(changes) => {
                        for c in &changes {
                            let what = match c {
                                crate::store::Change::Added { .. } => "added".to_owned(),
                                crate::store::Change::Removed { source, .. } => {
                                    format!("disabled (in no file; was in {source})")
                                }
                                crate::store::Change::Changed { fields, .. } => format!(
                                    "changed: {}",
                                    fields.iter().map(|f| f.field).collect::<Vec<_>>().join(", ")
                                ),
                            };
                            info!(policy = c.name(), change = %what, "policy applied");
                        }
                        info!(
                            policies = recs.len(),
                            changes = changes.len(),
                            "policy files applied"
                        );
                        self.health.set_reload_error(None);
                        true
                    }
                    Err(e) => {
                        self.reload_failed(format!("cannot write policies: {e}"));
                        false
                    }
                }
            }
            Err(diags) => {
                for d in &diags {
                    error!(file = %d.file.display(), line = d.line, column = d.column, "{}", d.headline());
                }
                let first = diags.first().map(|d| d.headline()).unwrap_or_default();
                self.reload_failed(format!(
                    "{} problem(s) in policy files; first: {first}",
                    diags.len()
                ));
                false
            }
        }
    }

    /// Files that hold no policy at all while the database holds enabled policies from them: a
    /// mount that failed, a deploy that wiped the folder. Nothing is changed; the error is logged,
    /// shown by `/readyz` and raised as the `policy_files_empty` alert. True when refused.
    async fn refuse_empty_files(&self, paths: &[PathBuf]) -> bool {
        let held: Vec<String> = match self.store.list_policies().await {
            Ok(ps) => ps
                .into_iter()
                .filter(|p| p.record.enabled && source_within(&p.record.source, paths))
                .map(|p| p.record.name)
                .collect(),
            Err(e) => {
                self.reload_failed(format!("cannot read the policies: {e}"));
                return true;
            }
        };
        if held.is_empty() {
            return false;
        }
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        let text = format!(
            "the policy files ({}) hold no policy, but {} enabled polic{} came from them ({}{}); \
             nothing was changed: check the mount or the deploy",
            shown.join(", "),
            held.len(),
            if held.len() == 1 { "y" } else { "ies" },
            held.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if held.len() > 5 { ", …" } else { "" }
        );
        self.reload_failed(text.clone());
        let facts = Facts {
            text: Some(text),
            ..Facts::default()
        };
        if let Err(e) = self
            .store
            .raise_alert(AlertEvent::PolicyFilesEmpty, None, &facts, self.clock.now())
            .await
        {
            error!(error = %e, "cannot raise the policy_files_empty alert");
        }
        true
    }

    fn reload_failed(&self, message: String) {
        error!(error = %message, "policies not applied; the previous ones stay in force");
        self.health.set_reload_error(Some(message));
    }

    /// SIGHUP: read config.yaml and the policy files again; keep the old ones on any error.
    async fn reload(&mut self) {
        self.notifier.reloading();
        let ok = match Settings::load(self.config_path.as_deref()) {
            Err(e) => {
                self.reload_failed(format!("config: {e}"));
                false
            }
            Ok(new) => {
                // `policies.*` and `defaults.*` apply now; every other key at the next start.
                if new != self.settings {
                    for key in crate::config::changed_keys(&self.settings, &new) {
                        if !(key.starts_with("policies.") || key.starts_with("defaults.")) {
                            warn!(setting = %key, "this setting changed; it takes effect at the next restart");
                        }
                    }
                }
                // Alert destinations are the running sender's until the next start: policies may
                // name only those.
                let new = Settings {
                    alerts: self.settings.alerts.clone(),
                    ..new
                };
                let ok = self.apply_policy_files(&new).await;
                if ok {
                    self.settings.policies = new.policies;
                    self.settings.defaults = new.defaults;
                }
                ok
            }
        };
        self.metrics.reload(ok);
        self.replan.notify_one();
        if ok {
            info!("reloaded");
        }
        self.notifier.ready("reloaded");
    }

    /// Serve HTTP and run the scheduler until `cancel`; reload on every message of `reload`.
    /// An error when the scheduler loop or the HTTP server ended by itself (a panic included):
    /// the process must then exit non-zero, so that systemd restarts it.
    pub async fn run_until_stopped(
        mut self,
        cancel: CancellationToken,
        mut reload: mpsc::Receiver<()>,
    ) -> Result<(), String> {
        // Before the listener is taken: the address it is bound to (port 0 picks one).
        let addr = self.http_addr();
        let (Some(listener), Some(scheduler)) = (self.listener.take(), self.scheduler.take()) else {
            return Err("run_until_stopped called twice".into());
        };
        // Stream mode (`dingtalk.stream.enabled`): the connection, the events it hands over
        // turned into occurrences, and its health (`/readyz`, the metrics, `stream_down`).
        let stream_cancel = cancel.child_token();
        let stream_settings = &self.settings.dingtalk.stream;
        let mut stream_view = crate::scheduler::stream_health::StreamView::off();
        let stream = stream_settings.enabled.then(|| {
            let settings = crate::dingtalk::stream::StreamSettings {
                reconnect_max: stream_settings.reconnect_max,
                keepalive: stream_settings.keepalive,
                connect_timeout: self.settings.dingtalk.connect_timeout
                    + self.settings.dingtalk.request_timeout,
                ..Default::default()
            };
            let client = crate::dingtalk::stream::StreamClient::new(self.client.clone(), settings);
            stream_view = crate::scheduler::stream_health::StreamView {
                status: Some(client.status()),
                alert_after: stream_settings.alert_after,
            };
            let handler = crate::scheduler::events::EventHandler {
                store: self.store.clone(),
                client: self.client.clone(),
                clock: self.clock.clone(),
                metrics: self.metrics.clone(),
                wake: scheduler.dispatcher.notify.clone(),
            };
            let health = crate::scheduler::stream_health::StreamHealth {
                status: client.status(),
                alert_after: stream_settings.alert_after,
                store: self.store.clone(),
                clock: self.clock.clone(),
                metrics: self.metrics.clone(),
            };
            (client, handler, health)
        });
        let quota_state = scheduler.dispatcher.quota.clone();
        let state = HttpState {
            store: self.store.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            token: self.client.token_status(),
            clock: self.clock.clone(),
            quota: quota_state.clone(),
            ready: Default::default(),
            stream: stream_view,
            auth: self.settings.http.auth.as_ref().and_then(|a| {
                a.basic
                    .password
                    .as_ref()
                    .map(|p| crate::http::guard::Basic::new(&a.basic.user, p))
            }),
        };
        let http_cancel = CancellationToken::new();
        let http_stop = http_cancel.clone();
        let limits = crate::http::serve::Limits {
            header_timeout: self.settings.http.header_timeout,
            max_connections: self.settings.http.max_connections,
        };
        let mut http = tokio::spawn(async move {
            crate::http::serve::serve(listener, router(state), limits, http_stop).await;
            Ok::<(), std::io::Error>(())
        });
        let drain = self.settings.scheduler.shutdown_timeout;
        let scheduler_cancel = cancel.child_token();
        let wake = [scheduler.dispatcher.notify.clone(), self.replan.clone()];
        let mut loop_task = tokio::spawn(scheduler.run_until_stopped(scheduler_cancel, drain));
        let sender = crate::alerts::sender::Sender::new(
            &self.settings.alerts,
            self.store.clone(),
            self.clock.clone(),
            self.metrics.clone(),
            self.client.token_status(),
        )?;
        let quota = crate::scheduler::quota::QuotaWatch {
            store: self.store.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            quota: self.settings.dingtalk.quota().map_err(|e| e.to_string())?,
            token_life: crate::scheduler::quota::token_life(self.settings.dingtalk.token_refresh_margin),
            state: quota_state,
            replan: self.replan.clone(),
            said: Default::default(),
        };
        let events = async move {
            if let Some((client, handler, health)) = stream {
                let (tx, rx) = mpsc::channel(256);
                let status = client.status();
                let (c, h) = (stream_cancel.clone(), stream_cancel.clone());
                // The health task's error (an alert not written) ends the daemon at once.
                tokio::try_join!(
                    async move {
                        client.run(tx, c).await;
                        Ok(())
                    },
                    async move {
                        handler.run(rx, status, h).await;
                        Ok(())
                    },
                    health.run_until_stopped(stream_cancel)
                )?;
            }
            Ok::<(), String>(())
        };
        // The alert sender and the quota task: either one failing ends the daemon.
        let (alerts_cancel, quota_cancel) = (cancel.child_token(), cancel.child_token());
        let (store, watch_cancel) = (self.store.clone(), cancel.child_token());
        let mut alert_task = tokio::spawn(async move {
            let watch = async {
                store.watch_policies(&wake, &watch_cancel).await;
                Ok::<(), String>(())
            };
            tokio::try_join!(
                sender.run_until_stopped(alerts_cancel),
                quota.run_until_stopped(quota_cancel),
                watch,
                events
            )
            .map(|_| ())
        });
        let mut alerts_done = false;
        self.health.beat();
        info!(http = %addr, "dingrec is running");
        self.notifier.ready("scheduler started");
        let mut failure: Option<String> = None;
        let mut loop_done = false;
        let mut http_done = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(()) = reload.recv() => self.reload().await,
                ended = &mut loop_task => {
                    loop_done = true;
                    failure = Some(match ended {
                        Ok(Ok(())) => "the scheduler loop ended unexpectedly".to_owned(),
                        Ok(Err(why)) => format!("the scheduler stopped: {why}"),
                        Err(e) => format!("the scheduler loop failed: {e}"),
                    });
                    break;
                }
                ended = &mut alert_task => {
                    alerts_done = true;
                    failure = Some(match ended {
                        Ok(Ok(())) => "the alert sender or the quota task ended unexpectedly".to_owned(),
                        Ok(Err(why)) => format!("the alert sender or the quota task stopped: {why}"),
                        Err(e) => format!("the alert sender or the quota task failed: {e}"),
                    });
                    break;
                }
                ended = &mut http => {
                    http_done = true;
                    failure = Some(match ended {
                        Ok(Ok(())) => "the HTTP server ended unexpectedly".to_owned(),
                        Ok(Err(e)) => format!("the HTTP server failed: {e}"),
                        Err(e) => format!("the HTTP server failed: {e}"),
                    });
                    break;
                }
            }
        }
        if let Some(why) = &failure {
            error!(error = %why, "stopping after a failure");
            cancel.cancel();
        }
        self.notifier.stopping().await;
        info!("stopping");
        if !loop_done {
            match loop_task.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    failure.get_or_insert(format!("the scheduler stopped: {why}"));
                }
                Err(e) => {
                    failure.get_or_insert(format!("the scheduler loop failed: {e}"));
                }
            }
        }
        if !alerts_done {
            match alert_task.await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => {
                    failure.get_or_insert(format!("the alert sender or the quota task stopped: {why}"));
                }
                Err(e) => {
                    failure.get_or_insert(format!("the alert sender or the quota task failed: {e}"));
                }
            }
        }
        http_cancel.cancel();
        if !http_done {
            let _ = http.await;
        }
        if let Err(e) = self.store.instance_stopped(self.clock.now()).await {
            warn!(error = %e, "cannot record this daemon's stop in the database; `dingrec status` shows it gone once its lease runs out");
        }
        self.store.close().await;
        info!("stopped");
        failure.map_or(Ok(()), Err)
    }
}

/// `dingrec run`: the daemon with real signals. Exit 0 only when it was told to stop.
pub async fn run_command(config: Option<&Path>) -> Result<i32, Failure> {
    let (settings, config_path) = crate::config::load_settings(config)
        .map_err(|e| Failure::new(EXIT_CONFIG, format!("invalid config: {e}")))?;
    crate::telemetry::init(&settings.log);
    let notifier = Notifier::from_env();
    let app = match App::build(settings, config_path, Arc::new(SystemClock), notifier).await {
        Ok(app) => app,
        Err(BuildError::Config(e)) => {
            return Err(Failure::new(EXIT_CONFIG, format!("invalid config: {e}")));
        }
        Err(BuildError::Store(e)) => return Err(Failure::from(e)),
        Err(e) => return Err(Failure::new(EXIT_FAILURE, e.to_string())),
    };
    let cancel = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    spawn_signal_handlers(cancel.clone(), reload_tx).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    app.run_until_stopped(cancel, reload_rx)
        .await
        .map_err(|why| Failure::new(EXIT_FAILURE, why))?;
    Ok(EXIT_OK)
}

/// SIGTERM/SIGINT cancel; SIGHUP asks for a reload.
pub fn spawn_signal_handlers(cancel: CancellationToken, reload: mpsc::Sender<()>) -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("cannot handle SIGINT: {e}"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM"); cancel.cancel(); }
                _ = int.recv() => { info!("SIGINT"); cancel.cancel(); }
                _ = hup.recv() => { info!("SIGHUP: reloading"); let _ = reload.try_send(()); }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::domain::time::{fmt_utc, parse_utc};
    use crate::domain::{AttemptOutcome, OccurrenceState, PolicyDefaults};
    use crate::fake::{FakeDingTalk, Scenario};
    use crate::scheduler::dispatcher::PANIC_IN_ATTEMPT_OF;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_inside_an_attempt_stops_the_daemon_non_zero_and_leaves_nothing_running() {
        let fake = FakeDingTalk::start(([127, 0, 0, 1], 0).into(), Scenario::default())
            .await
            .expect("fake");
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = Settings::default();
        s.database.path = dir.path().join("d.db");
        s.dingtalk.base_url = fake.base_url();
        s.dingtalk.app_key = "k".into();
        s.dingtalk.app_secret = Some(secrecy::SecretString::from("s".to_owned()));
        s.dingtalk.rate_limit = 0;
        s.http.listen = ([127, 0, 0, 1], 0).into();
        let t0 = parse_utc("2030-01-07T08:00:00Z").expect("time");
        let clock = ManualClock::new(t0);
        let store = Store::open(&s.database).await.expect("store");
        let name = "board-panics-in-its-attempt";
        let yaml = format!(
            "policies:\n  - name: {name}\n    conference_id: c1\n    host_union_id: h1\n    at: \"{}\"\n",
            fmt_utc(t0 + TimeDelta::seconds(1))
        );
        let parsed =
            policy_file::parse_str(Path::new("p.yaml"), &yaml, &PolicyDefaults::default()).expect("policies");
        let records: Vec<PolicyRecord> = parsed
            .iter()
            .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
            .collect();
        store
            .apply_policies(&records, crate::store::Prune::Off, t0)
            .await
            .expect("apply");
        *PANIC_IN_ATTEMPT_OF.lock().expect("lock") = Some(name.to_owned());
        clock.set(t0 + TimeDelta::seconds(2));
        let app = App::build(s, None, Arc::new(clock.clone()), Notifier::disabled())
            .await
            .expect("app");
        let (_reload, rx) = mpsc::channel(1);
        let ended = tokio::time::timeout(
            Duration::from_secs(120),
            app.run_until_stopped(CancellationToken::new(), rx),
        )
        .await
        .expect("the daemon stops by itself");
        let why = ended.expect_err("a panic is a failure: run exits non-zero");
        assert!(why.contains("an attempt failed inside dingrec"), "{why}");
        let (state, outcome): (OccurrenceState, AttemptOutcome) = sqlx::query_as(
            "SELECT o.state, a.outcome FROM occurrences o JOIN attempts a ON a.occurrence_id = o.id",
        )
        .fetch_one(store.sqlite_pool().expect("SQLite"))
        .await
        .expect("rows");
        assert_eq!(
            (state, outcome),
            (OccurrenceState::RetryWait, AttemptOutcome::Interrupted),
            "closed, never left running; retried at the next start"
        );
        assert!(clock.now() > t0);
    }
}
