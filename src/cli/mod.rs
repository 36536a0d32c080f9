//! The command line (`docs/operations.md` lists the commands and exit codes): clap's definitions
//! and the dispatch to one module per command. Data goes to stdout, diagnostics to stderr.

mod alerts;
mod events;
mod fake;
mod history;
mod next;
mod policies;
mod quota;
mod status;
mod trigger;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Settings;
use crate::domain::OccurrenceState;
use crate::exit::{CmdResult, EXIT_INVALID, EXIT_OK, Failure, report};
use crate::store::Store;

const ABOUT: &str = "Makes sure DingTalk video meetings get recorded.";
const LONG_ABOUT: &str = "\
Makes sure DingTalk video meetings get recorded.

Ops teams write recording policies in YAML (which meeting, which host, which layout, when).
dingrec keeps them in SQLite, calls DingTalk's StartCloudRecord at each meeting's start time,
retries with backoff until the recording runs or there is no point any more, checks that it
really records (and, with `verify.watch`, keeps recording: a stopped recording is started again),
and writes every attempt, every check and its error code to SQLite for audit.

First steps:
  dingrec demo                      a tour against the bundled fake DingTalk (no credentials)
  dingrec validate policies.d/      check policy files; errors as file:line:column
  dingrec plan policies.d/          what apply would change (exit 3 if anything)
  dingrec apply policies.d/         write the policies; a running daemon picks them up within 2 s
  dingrec history --since 7d --state failed
                                    what could not be recorded last week, and why";

#[derive(Debug, Parser)]
#[command(name = "dingrec", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Daemon settings (YAML). Default: $DINGREC_CONFIG, else ./config.yaml, else
    /// /etc/dingrec/config.yaml, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HistoryFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: plan occurrences, start recordings, serve /healthz, /readyz and /metrics.
    ///
    /// Applies the policy files of `policies.paths` at start and on SIGHUP; stops cleanly on
    /// SIGTERM/SIGINT; speaks systemd's notify protocol when NOTIFY_SOCKET is set.
    Run,
    /// Check the config and policy files or folders of *.yaml; print every problem as
    /// file:line:column. Writes nothing. Without PATH: the config's `policies.paths`.
    Validate {
        /// Policy files, or folders of *.yaml / *.yml.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show what `apply` would change in the database, field by field. Exit 0: no change; 3: changes.
    Plan {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Also show policies that are in the database but in none of the files (apply would disable them).
        #[arg(long)]
        prune: bool,
    },
    /// Validate, then write the policies to the database in one transaction (all or nothing).
    Apply {
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Disable policies that are in the database but in none of the files.
        #[arg(long)]
        prune: bool,
        /// With --prune: go ahead even when the files hold no policy at all (every enabled
        /// policy is disabled). Without it such an apply is refused (exit 2): an empty folder is
        /// more often a failed mount or a wiped deploy than an intent.
        #[arg(long, requires = "prune")]
        allow_empty: bool,
    },
    /// List the policies in the database.
    Policies {
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// Upcoming firings, computed from the policies' schedules (not only the planned rows).
    Next {
        /// Only this policy.
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// At most this many firings.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Look this far ahead (humantime: 30m, 12h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
        within: Duration,
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// The audit log: occurrences with their attempts and their checks (`check:start`,
    /// `check:watch`, `check:video` rows in the table; `checks` in JSON).
    History {
        #[arg(long, value_name = "NAME")]
        policy: Option<String>,
        /// A conferenceId (the one used for the attempt).
        #[arg(long, value_name = "ID")]
        conference: Option<String>,
        /// Only occurrences due within this long before now (humantime: 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        since: Option<Duration>,
        /// Only occurrences in this state.
        #[arg(long, value_parser = parse_state)]
        state: Option<OccurrenceState>,
        #[arg(long, value_enum, default_value = "table")]
        format: HistoryFormat,
    },
    /// Alerts and their delivery (newest first): what was told to whom, and whether it arrived.
    /// `dingrec alerts test NAME` sends a test message to one destination of config.yaml.
    Alerts {
        #[command(subcommand)]
        action: Option<AlertsAction>,
        /// Only alerts raised within this long before now (humantime: 24h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
        since: Duration,
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// The meeting events DingTalk pushed over Stream mode (newest first) and what came of each:
    /// `matched` (an occurrence), `ignored`, `duplicate`, `invalid`. See docs/events.md.
    Events {
        /// Only events received within this long before now (humantime: 24h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
        since: Duration,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// DingTalk's monthly API quota: calls used this month by API, the limit, and the forecast
    /// to the month's end (the planned firings' expected calls). See docs/quota.md.
    Quota {
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// The dingrec daemons on this database in the last 24 h: `live` (renewing its leases),
    /// `stopped` (cleanly), or `gone` (its lease ran out: killed, crashed, or its machine is
    /// down), with the attempts and checks each holds (claimed, no outcome yet).
    Status {
        #[arg(long, value_enum, default_value = "table")]
        format: TableOrJson,
    },
    /// Start recording now for one policy: a manual occurrence, logged like any other. Retries
    /// as the policy says, until the recording runs or the policy's window passes.
    Trigger {
        /// The policy's name.
        policy: String,
        /// Record this meeting instead of the policy's (e.g. today's live meeting).
        #[arg(long, value_name = "ID")]
        conference_id: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// A self-contained tour: the bundled fake DingTalk on loopback, sample policies due seconds
    /// from now, the daemon until they are done, then the audit log. No credentials, no network.
    Demo {
        /// Keep the demo's database in this file (default: a temporary file, removed at the end).
        #[arg(long, value_name = "FILE")]
        database: Option<PathBuf>,
    },
    /// Serve the fake DingTalk API (for local trials and tests). See README "The fake DingTalk".
    FakeDingtalk {
        /// Address to listen on: a loopback address only (the fake gives a token to anyone and
        /// has an admin API that rewrites its answers).
        #[arg(long, default_value = "127.0.0.1:9478", value_parser = parse_loopback)]
        listen: std::net::SocketAddr,
        /// A scenario file (YAML): meetings, scripted answers, throttling, token lifetime.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Send a test message to destination NAME (of `alerts.destinations`) the way the daemon
    /// sends alerts. Exit 0 only when it was delivered; otherwise what the destination answered
    /// (a robot's errcode) and what it means.
    Test {
        #[arg(value_name = "NAME")]
        name: String,
    },
}

fn parse_loopback(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s
        .parse()
        .map_err(|e| format!("{e} (write it like 127.0.0.1:9478)"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{} is not a loopback address: the fake DingTalk gives a token to anyone and its admin API \
             rewrites its answers, so it listens on 127.0.0.1 or [::1] only",
            addr.ip()
        ));
    }
    Ok(addr)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 30m, 12h, 7d)"))
}

fn parse_state(s: &str) -> Result<OccurrenceState, String> {
    s.parse().map_err(|_| {
        format!(
            "unknown state '{s}' (one of: {})",
            OccurrenceState::NAMES.join(", ")
        )
    })
}

/// Run the parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run => crate::app::run_command(cli.config.as_deref()).await,
        Command::Demo { database } => crate::demo::run(database).await,
        other => {
            // An invalid config is invalid input here (exit 2); `run` says 78.
            let settings = match crate::config::load_settings(cli.config.as_deref()) {
                Ok((s, _)) => s,
                Err(e) => return report(Err(Failure::new(EXIT_INVALID, format!("invalid config: {e}")))),
            };
            crate::telemetry::init(&crate::config::LogSettings {
                level: "warn".into(),
                ..settings.log.clone()
            });
            run_command(other, &settings).await
        }
    };
    report(result)
}

async fn run_command(cmd: Command, settings: &Settings) -> CmdResult {
    match cmd {
        Command::Run | Command::Demo { .. } => Ok(EXIT_OK), // handled by dispatch
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                settings.policies.paths.clone()
            } else {
                paths
            };
            policies::validate(&paths, settings)
        }
        Command::Plan { paths, prune } => policies::plan(&paths, prune, settings).await,
        Command::Apply {
            paths,
            prune,
            allow_empty,
        } => policies::apply(&paths, prune, allow_empty, settings).await,
        Command::Policies { format } => policies::list(settings, format).await,
        Command::Next {
            policy,
            limit,
            within,
            format,
        } => next::run(settings, policy.as_deref(), limit, within, format).await,
        Command::History {
            policy,
            conference,
            since,
            state,
            format,
        } => history::run(settings, policy, conference, since, state, format).await,
        Command::FakeDingtalk { listen, scenario } => fake::run(listen, scenario.as_deref()).await,
        Command::Alerts {
            action: Some(AlertsAction::Test { name }),
            ..
        } => alerts::test(settings, &name).await,
        Command::Alerts {
            action: None,
            since,
            format,
        } => alerts::list(settings, since, format).await,
        Command::Quota { format } => quota::run(settings, format).await,
        Command::Events { since, limit, format } => events::list(settings, since, limit, format).await,
        Command::Status { format } => status::run(settings, format).await,
        Command::Trigger {
            policy,
            conference_id,
        } => trigger::run(settings, &policy, conference_id.as_deref()).await,
        Command::Migrate => {
            let store = Store::open_unmigrated(&settings.database).await?;
            store.migrate().await?;
            println!("database {} is up to date", store.path().display());
            store.close().await;
            Ok(EXIT_OK)
        }
    }
}

/// A policy named on the command line that is not in the database.
fn no_such_policy(name: &str) -> Failure {
    Failure::new(EXIT_INVALID, format!("no policy named '{name}' in the database"))
}
