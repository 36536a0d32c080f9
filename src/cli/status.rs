//! `dingrec status`: the daemons on this database and what each holds.

use std::time::Duration;

use super::TableOrJson;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::time::{fmt_utc, sub};
use crate::exit::{CmdResult, EXIT_OK};
use crate::output::table;
use crate::store::Store;

/// How far back stopped and gone daemons are shown.
const SHOWN: Duration = Duration::from_secs(24 * 3600);

pub async fn run(settings: &Settings, format: TableOrJson) -> CmdResult {
    let store = Store::open_for_reading(&settings.database).await?;
    let now = SystemClock.now();
    let rows = store.instances(sub(now, SHOWN).unwrap_or(now)).await?;
    store.close().await;
    match format {
        TableOrJson::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|i| {
                    serde_json::json!({
                        "instance": i.instance,
                        "state": i.liveness(now).as_str(),
                        "version": i.version,
                        "started_at": fmt_utc(i.started_at),
                        "seen_at": fmt_utc(i.seen_at),
                        "stopped_at": i.stopped_at.map(fmt_utc),
                        "lease_ms": u64::try_from(i.lease.as_millis()).unwrap_or(u64::MAX),
                        "attempts_in_flight": i.attempts,
                        "checks_in_flight": i.checks,
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&items).unwrap_or_default());
        }
        TableOrJson::Table => {
            if rows.is_empty() {
                println!("no dingrec daemon ran on this database in the last 24 h");
                return Ok(EXIT_OK);
            }
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|i| {
                    vec![
                        i.instance.clone(),
                        i.liveness(now).as_str().to_owned(),
                        fmt_utc(i.started_at),
                        format!("{} s ago", (now - i.seen_at).num_seconds().max(0)),
                        i.attempts.to_string(),
                        i.checks.to_string(),
                        i.version.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "INSTANCE",
                        "STATE",
                        "STARTED (UTC)",
                        "SEEN",
                        "ATTEMPTS",
                        "CHECKS",
                        "VERSION"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(EXIT_OK)
}
