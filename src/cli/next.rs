//! `dingrec next`: upcoming firings, computed from the policies' schedules.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::{TableOrJson, no_such_policy};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::Zone;
use crate::domain::schedule::CronCache;
use crate::domain::time::fmt_utc;
use crate::exit::{CmdResult, EXIT_OK};
use crate::output::table;
use crate::scheduler::planner::firings_between;
use crate::store::Store;

pub async fn run(
    settings: &Settings,
    only: Option<&str>,
    limit: usize,
    within: Duration,
    format: TableOrJson,
) -> CmdResult {
    let store = Store::open_for_reading(&settings.database).await?;
    let stored = match only {
        Some(name) => vec![
            store
                .policy_by_name(name)
                .await?
                .ok_or_else(|| no_such_policy(name))?,
        ],
        None => store.list_policies().await?,
    };
    store.close().await;
    let now = SystemClock.now();
    let until = TimeDelta::from_std(within)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut cache = CronCache::default();
    let mut firings: Vec<(DateTime<Utc>, String, Zone)> = Vec::new();
    // `match` policies fire on DingTalk's events, not at times: listed after the timed firings.
    let mut on_event: Vec<(String, Zone, String)> = Vec::new();
    for sp in stored.iter().filter(|p| p.record.enabled) {
        let p = sp.record.to_policy()?;
        if let crate::domain::Target::Match(rule) = &p.target {
            on_event.push((p.name.to_string(), p.timezone, rule.describe()));
            continue;
        }
        // A firing is upcoming while its due time is ahead: look back one offset for meetings
        // that started but whose first attempt is still to come.
        let after = TimeDelta::from_std(p.start_offset)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(now);
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
                .chain(on_event.iter().map(|(name, zone, rule)| {
                    serde_json::json!({
                        "policy": name,
                        "due_at": null,
                        "on_event": true,
                        "match": rule,
                        "timezone": zone.name(),
                    })
                }))
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
                .chain(on_event.iter().map(|(name, zone, rule)| {
                    vec![
                        "on event".to_owned(),
                        rule.clone(),
                        zone.name().to_owned(),
                        name.clone(),
                    ]
                }))
                .collect();
            print!("{}", table(&["DUE (UTC)", "LOCAL", "TIMEZONE", "POLICY"], &rows));
        }
    }
    Ok(EXIT_OK)
}
