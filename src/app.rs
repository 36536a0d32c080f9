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

use crate::cli::{EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, Failure};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::dingtalk::DingTalkClient;
use crate::domain::outcome::Classification;
use crate::http::{HttpState, router};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::policy_file;
use crate::scheduler::Scheduler;
use crate::scheduler::dispatcher::Dispatcher;
use crate::scheduler::health::Health;
use crate::store::Store;
use crate::store::policies::PolicyRecord;

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
        let store = Store::open(&settings.database).await?;
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
        let tick = notifier
            .watchdog_interval()
            .map_or(crate::scheduler::TICK, |w| w.min(crate::scheduler::TICK));
        let health = Arc::new(Health::new(tick));
        let (dispatcher, writer) = Dispatcher::new(
            store.clone(),
            client.clone(),
            clock.clone(),
            metrics.clone(),
            Classification::with_overrides(settings.dingtalk.classification.clone()),
            health.clone(),
            settings.dingtalk.rate_limit,
            settings.scheduler.max_in_flight,
        );
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
        };
        app.apply_policy_files(&app.settings).await;
        Ok(app)
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
        let defaults = match settings.defaults.typed() {
            Ok(d) => d,
            Err(e) => {
                self.reload_failed(e.to_string());
                return false;
            }
        };
        match policy_file::load_paths(&settings.policies.paths, &defaults) {
            Ok(ps) => {
                let recs: Vec<PolicyRecord> = ps
                    .iter()
                    .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
                    .collect();
                match self
                    .store
                    .apply_policies(&recs, settings.policies.prune, self.clock.now())
                    .await
                {
                    Ok(changes) => {
                        for c in &changes {
                            let what = match c {
                                crate::store::policies::Change::Added { .. } => "added".to_owned(),
                                crate::store::policies::Change::Removed { .. } => {
                                    "disabled (in no file)".to_owned()
                                }
                                crate::store::policies::Change::Changed { fields, .. } => format!(
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
                for (what, changed) in [
                    ("database", new.database.path != self.settings.database.path),
                    ("http.listen", new.http.listen != self.settings.http.listen),
                    (
                        "dingtalk",
                        format!("{:?}", new.dingtalk) != format!("{:?}", self.settings.dingtalk),
                    ),
                    (
                        "scheduler",
                        format!("{:?}", new.scheduler) != format!("{:?}", self.settings.scheduler),
                    ),
                ] {
                    if changed {
                        warn!(
                            setting = what,
                            "this setting changed; it takes effect at the next restart"
                        );
                    }
                }
                let ok = self.apply_policy_files(&new).await;
                if ok {
                    self.settings.policies = new.policies;
                    self.settings.defaults = new.defaults;
                }
                ok
            }
        };
        self.metrics.reload(ok);
        if ok {
            info!("reloaded");
        }
        self.notifier.ready("reloaded");
    }

    /// Serve HTTP and run the scheduler until `cancel`; reload on every message of `reload`.
    pub async fn run_until_stopped(mut self, cancel: CancellationToken, mut reload: mpsc::Receiver<()>) {
        let state = HttpState {
            store: self.store.clone(),
            health: self.health.clone(),
            metrics: self.metrics.clone(),
            client: self.client.clone(),
        };
        let http_cancel = CancellationToken::new();
        let addr = self.http_addr();
        let (Some(listener), Some(scheduler)) = (self.listener.take(), self.scheduler.take()) else {
            error!("run_until_stopped called twice");
            return;
        };
        let http_stop = http_cancel.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(listener, router(state))
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await;
            if let Err(e) = served {
                error!(error = %e, "HTTP server stopped");
            }
        });
        let drain = self.settings.scheduler.shutdown_timeout;
        let scheduler_cancel = cancel.child_token();
        let mut loop_task = tokio::spawn(scheduler.run_until_stopped(scheduler_cancel, drain));
        self.health.beat();
        self.notifier.ready("running");
        info!(http = %addr, "dingrec is running");
        let mut loop_done = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(()) = reload.recv() => self.reload().await,
                _ = &mut loop_task => {
                    loop_done = true;
                    error!("the scheduler loop ended unexpectedly");
                    break;
                }
            }
        }
        self.notifier.stopping();
        info!("stopping");
        if !loop_done {
            let _ = loop_task.await;
        }
        http_cancel.cancel();
        let _ = http.await;
        self.store.close().await;
        info!("stopped");
    }
}

/// `dingrec run`: the daemon with real signals.
pub async fn run_command(config: Option<&Path>) -> Result<i32, Failure> {
    let config_path = crate::config::locate(config);
    let settings = crate::cli::load_settings(config, EXIT_CONFIG)?;
    crate::telemetry::init(&settings.log);
    let notifier = Notifier::from_env();
    let app = match App::build(settings, config_path, Arc::new(SystemClock), notifier).await {
        Ok(app) => app,
        Err(BuildError::Config(e)) => {
            return Err(Failure::new(EXIT_CONFIG, format!("invalid config: {e}")));
        }
        Err(e) => return Err(Failure::new(EXIT_FAILURE, e.to_string())),
    };
    let cancel = CancellationToken::new();
    let (reload_tx, reload_rx) = mpsc::channel(4);
    spawn_signal_handlers(cancel.clone(), reload_tx).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    app.run_until_stopped(cancel, reload_rx).await;
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
