//! `dingrec validate`, `plan`, `apply` and `policies`: policy files into the database, and back.

use std::path::{Path, PathBuf};

use super::TableOrJson;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::exit::{CmdResult, EXIT_CHANGES, EXIT_INVALID, EXIT_OK, Failure};
use crate::output::table;
use crate::policy_file::{self, Diagnostic, SourcedPolicy};
use crate::store::Store;
use crate::store::{Change, PolicyRecord, Prune};

/// Print every diagnostic to stderr, then a count.
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
        .policy_defaults()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))?;
    let ps = policy_file::load_paths(paths, &defaults).map_err(|ds| {
        print_diagnostics(&ds);
        Failure::new(EXIT_INVALID, "")
    })?;
    if let Some(warning) = match_without_stream(&ps, settings) {
        eprintln!("warning: {warning}");
    }
    Ok(ps)
}

/// `match` policies fire only on DingTalk's events: without Stream mode they never do.
pub fn match_without_stream(ps: &[SourcedPolicy], settings: &Settings) -> Option<String> {
    let names: Vec<&str> = ps
        .iter()
        .filter(|p| p.policy.enabled && matches!(p.policy.target, crate::domain::Target::Match(_)))
        .map(|p| p.policy.name.as_str())
        .collect();
    (!names.is_empty() && !settings.dingtalk.stream.enabled).then(|| {
        format!(
            "{} never fire{}: they wait for DingTalk's meeting events and dingtalk.stream.enabled is false (docs/events.md)",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" }
        )
    })
}

fn records(ps: &[SourcedPolicy]) -> Vec<PolicyRecord> {
    ps.iter()
        .map(|p| PolicyRecord::from_policy(&p.policy, &p.source))
        .collect()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub fn validate(paths: &[PathBuf], settings: &Settings) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    let files = policy_file::expand_paths(paths).map(|f| f.len()).unwrap_or(0);
    println!(
        "ok: {} in {}",
        plural(ps.len(), "policy", "policies"),
        plural(files, "file", "files")
    );
    Ok(EXIT_OK)
}

fn print_changes(changes: &[Change]) {
    for c in changes {
        match c {
            Change::Added { name } => println!("+ {name} (new)"),
            Change::Removed { name, source } => {
                println!("- {name} (disabled: in none of the files, --prune; from {source})")
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

pub async fn plan(paths: &[PathBuf], prune: bool, settings: &Settings) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    let recs = records(&ps);
    // Planning never creates a database: a missing one is an empty one.
    let changes = if let Some(store) = Store::open_if_applied(&settings.database).await? {
        let c = store.plan_policies(&recs, prune_scope(prune)).await?;
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
    let policies: Vec<crate::domain::Policy> = ps.iter().map(|p| p.policy.clone()).collect();
    for line in super::quota::plan_cost(settings, &policies, prune).await? {
        println!("{line}");
    }
    Ok(EXIT_CHANGES)
}

/// `apply --prune` reaches every policy (SPEC: "in none of the files"); the daemon's own prune
/// reaches only its `policies.paths` (app.rs).
fn prune_scope(prune: bool) -> Prune<'static> {
    if prune { Prune::All } else { Prune::Off }
}

pub async fn apply(paths: &[PathBuf], prune: bool, allow_empty: bool, settings: &Settings) -> CmdResult {
    let ps = load_policies(paths, settings)?;
    if prune && ps.is_empty() && !allow_empty {
        return Err(Failure::new(
            EXIT_INVALID,
            format!(
                "refusing to apply --prune: {} hold no policy, so every enabled policy would be disabled \
                 (a failed mount or a wiped folder looks the same); add --allow-empty if that is the intent",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let store = Store::open_current(&settings.database).await?;
    let changes = store
        .apply_policies(&records(&ps), prune_scope(prune), SystemClock.now())
        .await?;
    store.close().await;
    if changes.is_empty() {
        println!("No changes: the database already matches the files.");
    } else {
        print_changes(&changes);
        println!("Applied: {}.", summary(&changes).replace("to ", ""));
    }
    Ok(EXIT_OK)
}

/// `dingrec policies`
pub async fn list(settings: &Settings, format: TableOrJson) -> CmdResult {
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
                            .or_else(|| r.match_rule.as_ref().map(|_| "on event".to_owned()))
                            .unwrap_or_default(),
                        r.timezone.clone(),
                        r.conference_id
                            .clone()
                            .or_else(|| r.schedule_conference_id.as_ref().map(|s| format!("schedule:{s}")))
                            .or_else(|| {
                                r.match_rule.as_deref().map(|m| {
                                    crate::domain::matching::MatchRule::from_json(m)
                                        .map(|rule| format!("match {}", rule.describe()))
                                        .unwrap_or_else(|_| format!("match {m}"))
                                })
                            })
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
