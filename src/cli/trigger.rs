//! `dingrec trigger POLICY`: a manual occurrence, started now, with the daemon's own parts
//! ([`AttemptEngine`]): the same client, classification, retries and audit rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;

use super::no_such_policy;
use crate::app::AttemptEngine;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Settings;
use crate::domain::time::fmt_utc;
use crate::domain::{ConferenceId, OccurrenceState};
use crate::exit::{CmdResult, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, Failure};
use crate::output::render_history;
use crate::store::HistoryFilter;
use crate::store::Store;

pub async fn run(settings: &Settings, name: &str, conference_id: Option<&str>) -> CmdResult {
    if let Some(c) = conference_id {
        ConferenceId::parse(c).map_err(|e| Failure::new(EXIT_INVALID, format!("--conference-id: {e}")))?;
    }
    let credentials = settings
        .credentials()
        .map_err(|e| Failure::new(EXIT_INVALID, format!("invalid config: {e}")))?;
    let quota = super::quota::quota_settings(settings)?;
    let store = Store::open_current(&settings.database)
        .await?
        .with_quota_timezone(quota.timezone)
        .with_lease(settings.scheduler.lease);
    let stored = store
        .policy_by_name(name)
        .await?
        .ok_or_else(|| no_such_policy(name))?;
    let policy = stored.record.to_policy()?;
    let clock: SharedClock = Arc::new(SystemClock);
    let now = clock.now();
    let window_ends = TimeDelta::from_std(policy.window)
        .ok()
        .and_then(|w| now.checked_add_signed(w))
        .ok_or_else(|| Failure::new(EXIT_INVALID, format!("policy '{name}': window is out of range")))?;
    let id = store
        .insert_manual(stored.id, name, now, window_ends, conference_id)
        .await?;
    eprintln!(
        "manual occurrence {id} of '{name}': starting the recording (until {})",
        fmt_utc(window_ends)
    );
    let engine = AttemptEngine::build(
        settings,
        credentials,
        &store,
        clock.clone(),
        crate::scheduler::TICK,
        (0, 1),
    )
    .map_err(|e| Failure::new(EXIT_FAILURE, e.to_string()))?;
    // Run the attempts here; a running daemon may take one of them instead (claims are atomic).
    // Ctrl-C stops it: an attempt in flight is closed as interrupted and the occurrence cancelled.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let state = loop {
        let now = clock.now();
        if now >= window_ends {
            // Past the window, whatever is left is settled here (no daemon may be running).
            store.sweep(now).await?;
        }
        let state = store
            .occurrence_state(id)
            .await?
            .map_or(OccurrenceState::Cancelled, |(s, _)| s);
        if !state.is_live() {
            break state;
        }
        let step = async {
            match store.claim_occurrence(id, clock.now()).await? {
                Some(c) => {
                    let done = engine.dispatcher.attempt(&c).await;
                    store.complete(std::slice::from_ref(&done), clock.now()).await?;
                }
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            Ok::<(), crate::store::StoreError>(())
        };
        tokio::select! {
            r = step => r?,
            _ = &mut ctrl_c => {
                store.cancel_occurrence(id, "stopped by Ctrl-C during `dingrec trigger`", clock.now()).await?;
                eprintln!("stopped: occurrence {id} cancelled");
                store.close().await;
                return Ok(EXIT_INTERRUPTED);
            }
        }
    };
    engine.writer.stop.cancel();
    let rows = store
        .history(&HistoryFilter {
            policy: Some(name.to_owned()),
            ..HistoryFilter::default()
        })
        .await?;
    let mine: Vec<_> = rows.into_iter().filter(|o| o.id == id).collect();
    print!("{}", render_history(&mine, false));
    store.close().await;
    match state {
        OccurrenceState::Succeeded => Ok(EXIT_OK),
        other => Err(Failure::new(
            EXIT_FAILURE,
            format!("the recording could not be started: occurrence {other}"),
        )),
    }
}
