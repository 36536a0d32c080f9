//! `dingrec history`: the audit log, as a table, JSON or CSV.

use std::time::Duration;

use chrono::TimeDelta;

use super::HistoryFormat;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::OccurrenceState;
use crate::exit::{CmdResult, EXIT_OK};
use crate::output::render_history;
use crate::store::HistoryFilter;
use crate::store::Store;

pub async fn run(
    settings: &Settings,
    policy: Option<String>,
    conference: Option<String>,
    since: Option<Duration>,
    state: Option<OccurrenceState>,
    format: HistoryFormat,
) -> CmdResult {
    let now = SystemClock.now();
    let filter = HistoryFilter {
        policy,
        conference,
        since: since.map(|d| {
            TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
        }),
        states: state.into_iter().collect(),
        ..HistoryFilter::default()
    };
    let store = Store::open_for_reading(&settings.database).await?;
    let occurrences = store.history(&filter).await?;
    store.close().await;
    match format {
        HistoryFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&occurrences).unwrap_or_default()
        ),
        HistoryFormat::Table => print!("{}", render_history(&occurrences, false)),
        HistoryFormat::Csv => print!("{}", render_history(&occurrences, true)),
    }
    Ok(EXIT_OK)
}
