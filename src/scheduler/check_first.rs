//! The first step of an `auto_record` policy at its due time (docs/auto-record.md): is DingTalk's
//! own recording already running? Then no StartCloudRecord is sent (`auto_recorded`); live and
//! not recording, StartCloudRecord follows (`auto_record_missed`, an alert at the second meeting
//! in a row). The dispatcher calls it once the live meeting is known.

use std::future::Future;

use secrecy::SecretString;
use tracing::{error, info, warn};

use crate::clock::SharedClock;
use crate::dingtalk::DingTalkClient;
use crate::dingtalk::error::counted;
use crate::domain::alert::Facts;
use crate::domain::outcome::codes;
use crate::domain::quota::Api;
use crate::domain::{AlertEvent, CheckKind, CheckOutcome};
use crate::store::{AutoCheck, CheckResult, Claimed, Store};

/// Misses in a row that raise `auto_record_missed`.
const MISSES_ALERTED: i64 = 2;

fn ms(started: tokio::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// What the check needs: the store, the client, the clock.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub client: &'a DingTalkClient,
    pub clock: &'a SharedClock,
}

/// What the due-time check found.
pub enum CheckFirst {
    /// DingTalk's own recording runs: no StartCloudRecord (the info call's request id).
    Recording(Option<String>),
    /// Not recording (or not known): StartCloudRecord as usual.
    Start,
}

/// An `auto_record` policy's first step at the due time, once the live meeting is known: is its
/// recording already running? The check's row is written whatever it found; a failed look-up
/// leaves the start to StartCloudRecord (a second start of a running recording is answered
/// `recordStartError` and settled by a check, never counted as a failure).
pub async fn check_first(
    d: Ctx<'_>,
    pace: impl Future<Output = ()>,
    c: &Claimed,
    token: &SecretString,
    conference_id: &str,
) -> CheckFirst {
    pace.await;
    let started = tokio::time::Instant::now();
    let at = d.clock.now();
    let info = d.client.conference_info_with(token, conference_id).await;
    let mut r = CheckResult {
        duration_ms: ms(started),
        ..CheckResult::default()
    };
    if counted(&info) {
        r.calls.add(Api::ConferenceInfo, 1);
    }
    let (outcome, found) = match &info {
        Ok(i) => {
            r.http_status = 200;
            r.code = Some(codes::SUCCESS.into());
            r.meeting_status = Some(i.status);
            r.cloud_record_status = i.cloud_record_status;
            r.owner_union_id = i.cloud_record_owner_union_id.clone().filter(|o| !o.is_empty());
            if i.cloud_record_status == Some(1) {
                (CheckOutcome::AutoRecorded, CheckFirst::Recording(None))
            } else {
                r.message =
                    Some("DingTalk's auto-recording is not running; dingrec starts the recording".into());
                (CheckOutcome::AutoRecordMissed, CheckFirst::Start)
            }
        }
        Err(e) => {
            if e.code() == codes::INVALID_AUTHENTICATION {
                d.client.invalidate_token(token).await;
            }
            r.http_status = e.http_status();
            r.code = Some(e.code().to_owned());
            r.message = Some(e.to_string());
            r.request_id = e.request_id().map(str::to_owned);
            (CheckOutcome::Error, CheckFirst::Start)
        }
    };
    let check = AutoCheck {
        occurrence_id: c.occurrence_id,
        kind: CheckKind::Start,
        at,
        outcome,
        result: &r,
    };
    let misses = match d.store.record_auto_check(&check, d.clock.now()).await {
        Ok(n) => n,
        Err(e) => {
            // The attempt's own row still says what happened (`auto_recorded` or the start).
            error!(policy = %c.policy_name, occurrence = c.occurrence_id, error = %e,
                "cannot write the auto-record check");
            None
        }
    };
    match outcome {
        CheckOutcome::AutoRecorded => info!(
            policy = %c.policy_name,
            conference_id,
            occurrence = c.occurrence_id,
            "DingTalk's auto-recording runs; no StartCloudRecord sent"
        ),
        CheckOutcome::AutoRecordMissed => {
            warn!(
                policy = %c.policy_name,
                conference_id,
                occurrence = c.occurrence_id,
                misses = misses.unwrap_or(0),
                "DingTalk's auto-recording did not start the recording; starting it"
            );
            if misses == Some(MISSES_ALERTED) {
                let text = format!(
                    "policy {}: DingTalk's auto-recording did not start the recording of meeting {conference_id} \
                     {MISSES_ALERTED} times in a row; dingrec started it each time with StartCloudRecord.",
                    c.policy_name
                );
                raise(
                    d.store,
                    d.clock,
                    AlertEvent::AutoRecordMissed,
                    &c.policy_name,
                    None,
                    text,
                )
                .await;
            }
        }
        _ => warn!(
            policy = %c.policy_name,
            conference_id,
            occurrence = c.occurrence_id,
            code = r.code.as_deref().unwrap_or("-"),
            "cannot tell whether DingTalk's auto-recording runs; starting the recording"
        ),
    }
    if let (CheckFirst::Recording(_), Ok(_)) = (&found, &info) {
        return CheckFirst::Recording(r.request_id);
    }
    found
}

/// An alert of a policy, to its own destinations (or the default routing).
pub async fn raise(
    store: &Store,
    clock: &SharedClock,
    event: AlertEvent,
    policy: &str,
    conference: Option<&str>,
    text: String,
) {
    let destinations = match store.policy_by_name(policy).await {
        Ok(Some(p)) => p
            .record
            .alert
            .as_deref()
            .and_then(|a| serde_json::from_str::<Vec<String>>(a).ok()),
        _ => None,
    };
    let facts = Facts {
        policy: Some(policy.to_owned()),
        schedule_conference_id: conference.map(str::to_owned),
        text: Some(text),
        ..Facts::default()
    };
    if let Err(e) = store
        .raise_alert(event, destinations.as_deref(), &facts, clock.now())
        .await
    {
        error!(policy, error = %e, event = event.as_str(), "cannot raise the alert");
    }
}
