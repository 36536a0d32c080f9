//! The command line (SPEC §1): clap definitions and the subcommand dispatch.
//!
//! Exit codes: 0 ok, 1 failure, 2 usage or invalid input, 3 `plan` found changes, 78 (`EX_CONFIG`)
//! when `run` cannot start because its config is invalid. Data goes to stdout, diagnostics to
//! stderr.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use clap::{Parser, Subcommand, ValueEnum};

use crate::clock::{Clock, SystemClock};
use crate::config::{self, Settings};
use crate::domain::time::fmt_utc;
use crate::output::{csv, table};
use crate::policy_file::{self, Diagnostic, SourcedPolicy};
use crate::scheduler::planner::firings_between;
use crate::store::Store;
use crate::store::history::HistoryFilter;
use crate::store::occurrences::state;
use crate::store::policies::{Change, PolicyRecord};

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_INVALID: i32 = 2;
pub const EXIT_CHANGES: i32 = 3;
pub const EXIT_CONFIG: i32 = 78;

const ABOUT: &str = "Makes sure DingTalk video meetings get recorded.";
const LONG_ABOUT: &str = "\
Makes sure DingTalk video meetings get recorded.

Ops teams write recording policies in YAML (which meeting, which host, which layout, when).
dingrec keeps them in SQLite, calls DingTalk's StartCloudRecord at each meeting's start time,
retries with backoff until the recording runs or there is no point any more, and writes every
attempt and its error code to SQLite for audit.

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
    /// The audit log: occurrences with their attempts.
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
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(state::ALL))]
        state: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: HistoryFormat,
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
        /// Address to listen on (loopback).
        #[arg(long, default_value = "127.0.0.1:9478")]
        listen: std::net::SocketAddr,
        /// A scenario file (YAML): meetings, scripted answers, throttling, token lifetime.
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 30m, 12h, 7d)"))
}

/// A command's failure: what to print and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        Failure::new(EXIT_FAILURE, e.to_string())
    }
}

type CmdResult = Result<i32, Failure>;

/// Load settings for a command; an invalid config is invalid input (exit 2; `run` uses 78).
pub fn load_settings(explicit: Option<&Path>, invalid_code: i32) -> Result<Settings, Failure> {
    let file = config::locate(explicit);
    if let Some(f) = &file
        && explicit.is_some()
        && !f.exists()
    {
        return Err(Failure::new(
            invalid_code,
            format!("config file {} does not exist", f.display()),
        ));
    }
    Settings::load(file.as_deref()).map_err(|e| Failure::new(invalid_code, format!("invalid config: {e}")))
}

/// Run the parsed command line; returns the exit code.
pub async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Run => crate::app::run_command(cli.config.as_deref()).await,
        Command::Demo { database } => crate::demo::run(database).await,
        other => {
            let settings = match load_settings(cli.config.as_deref(), EXIT_INVALID) {
                Ok(s) => s,
                Err(f) => return report(Err(f)),
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

fn report(result: CmdResult) -> i32 {
    match result {
        Ok(code) => code,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("dingrec: {}", f.message);
            }
            f.code
        }
    }
}

async fn run_command(cmd: Command, settings: &Settings) -> CmdResult {
    let clock = SystemClock;
    match cmd {
        Command::Run | Command::Demo { .. } => Ok(EXIT_OK), // handled by dispatch
        Command::Validate { paths } => {
            let paths = if paths.is_empty() {
                settings.policies.paths.clone()
            } else {
                paths
            };
            validate(&paths, settings)
        }
        Command::Plan { paths, prune } => plan(&paths, prune, settings).await,
        Command::Apply { paths, prune } => apply(&paths, prune, settings, &clock).await,
        Command::Policies { format } => policies(settings, format).await,
        Command::Next {
            policy,
            limit,
            within,
            format,
        } => next(settings, &clock, policy.as_deref(), limit, within, format).await,
        Command::History {
            policy,
            conference,
            since,
            state,
            format,
        } => {
            let now = clock.now();
            let filter = HistoryFilter {
                policy,
                conference,
                since: since.map(|d| now - TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)),
                state,
                until: None,
            };
            history(settings, &filter, format).await
        }
        Command::FakeDingtalk { listen, scenario } => fake_dingtalk(listen, scenario.as_deref()).await,
        Command::Trigger {
            policy,
            conference_id,
        } => trigger(settings, &policy, conference_id.as_deref()).await,
        Command::Migrate => {
            let store = Store::open_unmigrated(&settings.database).await?;
            store.migrate().await?;
            println!("database {} is up to date", store.path().display());
            store.close().await;
            Ok(EXIT_OK)
        }
    }
}

async fn fake_dingtalk(listen: std::net::SocketAddr, scenario: Option<&Path>) -> CmdResult {
    let scenario = match scenario {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("cannot read {}: {e}", p.display())))?;
            crate::fake::Scenario::from_yaml(&text)
                .map_err(|e| Failure::new(EXIT_INVALID, format!("{}: {e}", p.display())))?
        }
        None => crate::fake::Scenario::default(),
    };
    let fake = crate::fake::FakeDingTalk::start(listen, scenario)
        .await
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot listen on {listen}: {e}")))?;
    eprintln!(
        "fake DingTalk listening on {} (admin API under /_fake/; Ctrl-C stops)",
        fake.base_url()
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(EXIT_OK)
}

async fn trigger(settings: &Settings, name: &str, conference_id: Option<&str>) -> CmdResult {
    use std::sync::Arc;
    if let Some(c) = conference_id {
        crate::domain::ConferenceId::parse(c)
            .map_err(|e| Failure::new(EXIT_INVALID, format!("--conference-id: {e}")))?;
    }
    let credentials = settings
        .credentials()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))?;
    let store = Store::open(&settings.database).await?;
    let Some(stored) = store.policy_by_name(name).await? else {
        return Err(Failure::new(
            EXIT_INVALID,
            format!("no policy named '{name}' in the database"),
        ));
    };
    let policy = stored.record.to_policy()?;
    let clock: crate::clock::SharedClock = Arc::new(SystemClock);
    let now = clock.now();
    let window_ends = now + TimeDelta::from_std(policy.window).unwrap_or(TimeDelta::MAX);
    let id = store
        .insert_manual(stored.id, name, now, window_ends, conference_id)
        .await?;
    eprintln!(
        "manual occurrence {id} of '{name}': starting the recording (until {})",
        fmt_utc(window_ends)
    );
    let metrics = crate::metrics::Metrics::new();
    let client = Arc::new(
        crate::dingtalk::DingTalkClient::new(
            &settings.dingtalk,
            Some(credentials),
            Some(metrics.clone()),
            clock.clone(),
        )
        .map_err(|e| Failure::new(EXIT_FAILURE, e))?,
    );
    let health = Arc::new(crate::scheduler::health::Health::new(crate::scheduler::TICK));
    let (dispatcher, _writer) = crate::scheduler::dispatcher::Dispatcher::new(
        store.clone(),
        client,
        clock.clone(),
        metrics,
        crate::domain::Classification::with_overrides(settings.dingtalk.classification.clone()),
        health,
        0,
        1,
    );
    // Run the attempts here; a running daemon may take one of them instead (claims are atomic).
    let state = loop {
        let (state, _) = store
            .occurrence_state(id)
            .await?
            .unwrap_or_else(|| ("cancelled".into(), None));
        if !state::LIVE.contains(&state.as_str()) {
            break state;
        }
        match store.claim_occurrence(id, clock.now()).await? {
            Some(c) => {
                let done = dispatcher.attempt(&c).await;
                store.complete(std::slice::from_ref(&done), clock.now()).await?;
            }
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let rows = store
        .history(&HistoryFilter {
            policy: Some(name.to_owned()),
            ..HistoryFilter::default()
        })
        .await?;
    let mine: Vec<_> = rows.into_iter().filter(|o| o.id == id).collect();
    print!("{}", render_history(&mine, false));
    store.close().await;
    if state == "succeeded" {
        Ok(EXIT_OK)
    } else {
        Err(Failure::new(
            EXIT_FAILURE,
            format!("the recording could not be started: occurrence {state}"),
        ))
    }
}

/// Print every diagnostic to stderr.
pub fn print_diagnostics(ds: &[Diagnostic]) {
    for d in ds {
        eprint!("{d}");
    }
    let files: std::collections::BTreeSet<&Path> = ds.iter().map(|d| d.file.as_path()).collect();
    eprintln!(
        "{} error{} in {} file{}",
        ds.len(),
        if ds.len() == 1 { "" } else { "s" },
        files.len(),
        if files.len() == 1 { "" } else { "s" }
    );
}

fn load_policies(paths: &[PathBuf], settings: &Settings) -> Result<Vec<SourcedPolicy>, Failure> {
    let defaults = settings
        .defaults
        .typed()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))?;
    policy_file::load_paths(paths, &defaults).map_err(|ds| {
        print_diagnostics(&ds);
        Failure::new(EXIT_INVALID, "")
    })
}

fn records(ps: &[SourcedPolicy]) -> Vec<PolicyRecord> {
    ps.iter()
        .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
        .collect()
}

fn validate(paths: &[PathBuf], settings: &Settings) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    let files = policy_file::expand_paths(paths).map(|f| f.len()).unwrap_or(0);
    println!(
        "ok: {} polic{} in {} file{}",
        ps.len(),
        if ps.len() == 1 { "y" } else { "ies" },
        files,
        if files == 1 { "" } else { "s" }
    );
    Ok(EXIT_OK)
}

fn print_changes(changes: &[Change]) {
    for c in changes {
        match c {
            Change::Added { name } => println!("+ {name} (new)"),
            Change::Removed { name } => {
                println!("- {name} (disabled: in none of the files, --prune)")
            }
            Change::Changed { name, fields } => {
                println!("~ {name}");
                for f in fields {
                    println!("    {}: {} -> {}", f.field, f.old, f.new);
                }
            }
        }
    }
}

fn summary(changes: &[Change]) -> String {
    let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
    format!(
        "{} to add, {} to change, {} to disable",
        count(|c| matches!(c, Change::Added { .. })),
        count(|c| matches!(c, Change::Changed { .. })),
        count(|c| matches!(c, Change::Removed { .. }))
    )
}

async fn plan(paths: &[PathBuf], prune: bool, settings: &Settings) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    let recs = records(&ps);
    // Planning never creates a database: a missing one is an empty one.
    let changes = if settings.database.path.exists() {
        let store = Store::open_for_reading(&settings.database).await?;
        let c = store.plan_policies(&recs, prune).await?;
        store.close().await;
        c
    } else {
        recs.iter()
            .map(|r| Change::Added { name: r.name.clone() })
            .collect()
    };
    if changes.is_empty() {
        println!("No changes: the database matches the files.");
        return Ok(EXIT_OK);
    }
    print_changes(&changes);
    println!("Plan: {}.", summary(&changes));
    Ok(EXIT_CHANGES)
}

async fn apply(paths: &[PathBuf], prune: bool, settings: &Settings, clock: &dyn Clock) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    let store = Store::open(&settings.database).await?;
    let changes = store.apply_policies(&records(&ps), prune, clock.now()).await?;
    store.close().await;
    if changes.is_empty() {
        println!("No changes: the database already matches the files.");
    } else {
        print_changes(&changes);
        println!("Applied: {}.", summary(&changes).replace("to ", ""));
    }
    Ok(EXIT_OK)
}

async fn policies(settings: &Settings, format: TableOrJson) -> CmdResult {
    let store = Store::open_for_reading(&settings.database).await?;
    let ps = store.list_policies().await?;
    store.close().await;
    match format {
        TableOrJson::Json => println!("{}", serde_json::to_string_pretty(&ps).unwrap_or_default()),
        TableOrJson::Table => {
            let rows: Vec<Vec<String>> = ps
                .iter()
                .map(|p| {
                    let r = &p.record;
                    vec![
                        r.name.clone(),
                        if r.enabled { "yes".into() } else { "no".into() },
                        r.cron
                            .clone()
                            .or_else(|| r.at.as_ref().map(|a| format!("at {a}")))
                            .unwrap_or_default(),
                        r.timezone.clone(),
                        r.conference_id
                            .clone()
                            .or_else(|| r.schedule_conference_id.as_ref().map(|s| format!("schedule:{s}")))
                            .unwrap_or_default(),
                        r.host_union_id.clone(),
                        r.layout.clone(),
                        r.source.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NAME", "ENABLED", "SCHEDULE", "TIMEZONE", "MEETING", "HOST", "LAYOUT", "SOURCE"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(EXIT_OK)
}

async fn next(
    settings: &Settings,
    clock: &dyn Clock,
    only: Option<&str>,
    limit: usize,
    within: Duration,
    format: TableOrJson,
) -> CmdResult {
    let store = Store::open_for_reading(&settings.database).await?;
    let stored = match only {
        Some(name) => match store.policy_by_name(name).await? {
            Some(p) => vec![p],
            None => {
                return Err(Failure::new(
                    EXIT_INVALID,
                    format!("no policy named '{name}' in the database"),
                ));
            }
        },
        None => store.list_policies().await?,
    };
    store.close().await;
    let now = clock.now();
    let until = now + TimeDelta::from_std(within).unwrap_or(TimeDelta::MAX);
    let mut cache = crate::domain::schedule::CronCache::default();
    let mut firings = Vec::new();
    for sp in stored.iter().filter(|p| p.record.enabled) {
        let p = sp.record.to_policy()?;
        // A firing is upcoming while its due time is ahead: look back one offset for meetings
        // that started but whose first attempt is still to come.
        let after = now - TimeDelta::from_std(p.start_offset).unwrap_or_default();
        for f in firings_between(&p, after, until, limit, &mut cache) {
            if f.due_at > now && f.due_at <= until {
                firings.push((f.due_at, p.name.to_string(), p.timezone));
            }
        }
    }
    firings.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    firings.truncate(limit);
    match format {
        TableOrJson::Json => {
            let items: Vec<serde_json::Value> = firings
                .iter()
                .map(|(due, name, zone)| {
                    serde_json::json!({
                        "policy": name,
                        "due_at": fmt_utc(*due),
                        "local": due.with_timezone(&zone.tz()).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                        "timezone": zone.name(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
        }
        TableOrJson::Table => {
            let rows: Vec<Vec<String>> = firings
                .iter()
                .map(|(due, name, zone)| {
                    vec![
                        fmt_utc(*due),
                        due.with_timezone(&zone.tz())
                            .format("%Y-%m-%d %H:%M:%S %Z")
                            .to_string(),
                        zone.name().to_owned(),
                        name.clone(),
                    ]
                })
                .collect();
            print!("{}", table(&["DUE (UTC)", "LOCAL", "TIMEZONE", "POLICY"], &rows));
        }
    }
    Ok(EXIT_OK)
}

async fn history(settings: &Settings, filter: &HistoryFilter, format: HistoryFormat) -> CmdResult {
    let store = Store::open_for_reading(&settings.database).await?;
    let occurrences = store.history(filter).await?;
    store.close().await;
    if format == HistoryFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&occurrences).unwrap_or_default()
        );
        return Ok(EXIT_OK);
    }
    print!("{}", render_history(&occurrences, format == HistoryFormat::Csv));
    Ok(EXIT_OK)
}

/// One row per attempt (an occurrence with no attempt gets one row of its own). Written straight
/// into one buffer: a week of a large company's audit log is a hundred thousand lines.
pub fn render_history(occurrences: &[crate::store::history::OccurrenceRow], as_csv: bool) -> String {
    const HEADERS: [&str; 13] = [
        "DUE_AT",
        "POLICY",
        "STATE",
        "TRIGGER",
        "ATTEMPT",
        "STARTED_AT",
        "MS",
        "HTTP",
        "CODE",
        "OUTCOME",
        "CONFERENCE",
        "REQUEST_ID",
        "MESSAGE",
    ];
    fn opt<T: ToString>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_else(|| "-".into())
    }
    let mut rows: Vec<[String; 13]> = Vec::with_capacity(occurrences.len() * 2);
    for o in occurrences {
        let base = |cells: [String; 9]| {
            let [a, b, c, d, e, f, g, h, i] = cells;
            [
                o.due_at.clone(),
                o.policy.clone(),
                o.state.clone(),
                o.trigger.clone(),
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                i,
            ]
        };
        if o.attempts.is_empty() {
            let dash = || "-".to_owned();
            rows.push(base([
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                opt(&o.conference_id),
                dash(),
                dash(),
            ]));
        }
        for a in &o.attempts {
            let msg = a.message.clone().unwrap_or_default();
            let msg = if as_csv {
                msg
            } else {
                msg.chars().take(60).collect()
            };
            rows.push(base([
                a.attempt_no.to_string(),
                a.started_at.clone(),
                opt(&a.duration_ms),
                opt(&a.http_status),
                opt(&a.code),
                opt(&a.outcome),
                opt(&a.conference_id),
                opt(&a.request_id),
                msg,
            ]));
        }
    }
    if as_csv {
        let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
        return csv(&HEADERS, &rows);
    }
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::with_capacity(rows.len() * 160);
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(c);
            let pad = widths[i].saturating_sub(c.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        let trimmed = out[start..].trim_end().len();
        out.truncate(start + trimmed);
        out.push('\n');
    };
    line(&mut HEADERS.iter().copied());
    let dashes: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut dashes.iter().map(String::as_str));
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}
