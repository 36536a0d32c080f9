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
    let t0 = std::time::Instant::now();
    let store = Store::open_for_reading(&settings.database).await?;
    let t1 = t0.elapsed();
    let occurrences = store.history(&filter).await?;
    let t2 = t0.elapsed();
    store.close().await;
    let t3 = t0.elapsed();
    match format {
        HistoryFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&occurrences).unwrap_or_default()
        ),
        HistoryFormat::Table => print!("{}", render_history(&occurrences, false)),
        HistoryFormat::Csv => print!("{}", render_history(&occurrences, true)),
    }
    eprintln!("open {t1:?} read {t2:?} close {t3:?} print {:?}", t0.elapsed());
    Ok(EXIT_OK)
}
