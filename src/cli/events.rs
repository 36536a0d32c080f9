//! `dingrec events`: the meeting events DingTalk pushed and what came of each (docs/events.md).

use std::time::Duration;

use chrono::TimeDelta;

use super::TableOrJson;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::time::fmt_utc;
use crate::exit::{CmdResult, EXIT_OK};
use crate::output::table;
use crate::store::Store;

pub async fn list(settings: &Settings, since: Duration, limit: usize, format: TableOrJson) -> CmdResult {
    let now = SystemClock.now();
    let since = TimeDelta::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let store = Store::open_for_reading(&settings.database).await?;
    let rows = store
        .events_since(since, i64::try_from(limit).unwrap_or(i64::MAX))
        .await?;
    store.close().await;
    match format {
        TableOrJson::Json => println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        TableOrJson::Table => {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        fmt_utc(r.received_at),
                        r.event_type.clone(),
                        dash(&r.change_scene),
                        dash(&r.conference_id),
                        r.outcome.clone(),
                        dash(&r.policy_name),
                        r.occurrence_id.map_or_else(|| "-".into(), |o| o.to_string()),
                        r.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "RECEIVED",
                        "TYPE",
                        "SCENE",
                        "CONFERENCE",
                        "OUTCOME",
                        "POLICY",
                        "OCCURRENCE",
                        "WHY"
                    ],
                    &cells
                )
            );
        }
    }
    Ok(EXIT_OK)
}
