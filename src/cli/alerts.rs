//! `dingrec alerts`: the outbox and its delivery; `dingrec alerts test NAME`: one test message.

use std::time::Duration;

use chrono::TimeDelta;

use super::TableOrJson;
use crate::alerts::deliver::{self, Delivery};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::domain::AlertEvent;
use crate::domain::alert::{Alert, Facts};
use crate::exit::{CmdResult, EXIT_FAILURE, EXIT_INVALID, EXIT_OK, Failure};
use crate::output::table;
use crate::store::Store;

pub async fn list(settings: &Settings, since: Duration, format: TableOrJson) -> CmdResult {
    let now = SystemClock.now();
    let since = TimeDelta::from_std(since)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let store = Store::open_for_reading(&settings.database).await?;
    let rows = store.alerts_since(since).await?;
    store.close().await;
    match format {
        TableOrJson::Json => println!("{}", serde_json::to_string_pretty(&rows).unwrap_or_default()),
        TableOrJson::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.created_at.clone(),
                        r.event.to_string(),
                        r.policy_name.clone().unwrap_or_else(|| "-".into()),
                        r.destination.clone(),
                        r.state.to_string(),
                        r.attempts.to_string(),
                        r.sent_at.clone().unwrap_or_else(|| "-".into()),
                        r.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "ID",
                        "CREATED",
                        "EVENT",
                        "POLICY",
                        "DESTINATION",
                        "STATE",
                        "TRIES",
                        "SENT",
                        "LAST ERROR"
                    ],
                    &cells
                )
            );
        }
    }
    Ok(EXIT_OK)
}

/// Send one test message through the same code the daemon delivers alerts with.
pub async fn test(settings: &Settings, name: &str) -> CmdResult {
    let Some(dest) = settings.alerts.destinations.get(name) else {
        let known: Vec<&str> = settings.alerts.destinations.keys().map(String::as_str).collect();
        return Err(Failure::new(
            EXIT_INVALID,
            format!(
                "no alert destination named '{name}' in config.yaml (alerts.destinations: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    settings
        .alerts
        .check_secrets()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))?;
    let now = SystemClock.now();
    let alert = Alert {
        id: now.timestamp_millis(),
        created_at: now,
        event: AlertEvent::Test,
        facts: Facts {
            text: Some(format!(
                "A test message from dingrec on {}: alerts to '{name}' arrive here.",
                crate::instance::hostname()
            )),
            ..Facts::default()
        },
    };
    let http = deliver::http_client().map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let batch = format!("dingrec-test-{}", now.timestamp_millis());
    match deliver::send(&http, dest, &batch, std::slice::from_ref(&alert)).await {
        Delivery::Delivered => {
            println!("delivered a test message to '{name}'");
            Ok(EXIT_OK)
        }
        Delivery::Retry { error, .. } | Delivery::Refused { error } | Delivery::Unreachable { error } => {
            Err(Failure::new(
                EXIT_FAILURE,
                format!("the test message to '{name}' was not delivered: {error}"),
            ))
        }
    }
}
