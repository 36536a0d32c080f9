//! DingTalk's own auto-recording, set ahead (docs/auto-record.md). Two independent mechanisms,
//! each checked:
//!
//! - [`SettingsTask`] makes the setting (UpdateScheduleConfSettings) on every scheduled-meeting
//!   policy with `auto_record`, when it is applied or changed and again `auto_record_refresh`
//!   before each occurrence (DingTalk cannot be asked for it, so a setting someone turned off is
//!   restored by making it again). Each call is a row in `checks` (`kind = settings`); a refusal
//!   raises `auto_record_refused` and the policy falls back to StartCloudRecord alone.
//! - [`check_first`], at the due time: is DingTalk's recording already running? Then no
//!   StartCloudRecord is sent (`auto_recorded`); live and not recording, StartCloudRecord follows
//!   (`auto_record_missed`, an alert after two in a row).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::dispatcher::Dispatcher;
use crate::dingtalk::client::AutoRecordRequest;
use crate::dingtalk::error::counted;
use crate::domain::alert::Facts;
use crate::domain::auto_record::{self, AutoRecord, Due, SetResult};
use crate::domain::outcome::{RetryClass, codes};
use crate::domain::quota::Api;
use crate::domain::{AlertEvent, CheckKind, CheckOutcome};
use crate::store::{AutoCheck, AutoRecordPolicy, CheckResult, Claimed};

/// The settings task looks at the policies at least this often.
const TICK: Duration = Duration::from_secs(15);
/// Misses in a row that raise `auto_record_missed`.
const MISSES_ALERTED: i64 = 2;

fn ms(started: tokio::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
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
    d: &Dispatcher,
    c: &Claimed,
    token: &SecretString,
    conference_id: &str,
) -> CheckFirst {
    d.pace_other_call().await;
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
                raise(d, AlertEvent::AutoRecordMissed, &c.policy_name, None, text).await;
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
async fn raise(d: &Dispatcher, event: AlertEvent, policy: &str, conference: Option<&str>, text: String) {
    let destinations = match d.store.policy_by_name(policy).await {
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
    if let Err(e) = d
        .store
        .raise_alert(event, destinations.as_deref(), &facts, d.clock.now())
        .await
    {
        error!(policy, error = %e, event = event.as_str(), "cannot raise the alert");
    }
}

/// Makes the auto-record setting when it is due (see the module's text).
pub struct SettingsTask {
    pub dispatcher: Arc<Dispatcher>,
}

impl SettingsTask {
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> Result<(), String> {
        loop {
            let wait = match self.round().await {
                Ok(wait) => wait,
                Err(e) => {
                    warn!(error = %e, "the auto-record settings could not be read; trying again");
                    TICK
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = self.dispatcher.planned.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One look at the policies: make every setting that is due; how long until the next may be.
    async fn round(&self) -> crate::store::Result<Duration> {
        let d = &self.dispatcher;
        let now = d.clock.now();
        let mut wait = TICK;
        for p in d.store.auto_record_policies(now).await? {
            let Ok(setting) = AutoRecord::from_json(&p.auto_record) else {
                continue;
            };
            // A call is kept with the occurrence it prepares: none planned, none made.
            if let Some(why) = auto_record::due(&setting, &p.auto_record, p.last.as_ref(), p.next, now)
                && p.next.is_some()
            {
                self.set(&p, &setting, why).await?;
            }
            // Wake when the next occurrence's refresh window opens.
            if let Some((_, due)) = p.next {
                let opens = due - chrono::TimeDelta::from_std(setting.refresh).unwrap_or_default();
                if let Ok(w) = (opens - now).to_std() {
                    wait = wait.min(w + Duration::from_millis(1));
                }
            }
        }
        Ok(wait)
    }

    async fn set(&self, p: &AutoRecordPolicy, setting: &AutoRecord, why: Due) -> crate::store::Result<()> {
        let d = &self.dispatcher;
        let Some((occurrence_id, due_at)) = p.next else {
            return Ok(());
        };
        let now = d.clock.now();
        if !d
            .store
            .claim_auto_record(
                p.policy_id,
                p.last.as_ref().map(|l| l.at),
                &p.auto_record,
                occurrence_id,
                now,
            )
            .await?
        {
            return Ok(()); // another daemon took it
        }
        let (result, outcome, r) = self.call(p, setting).await;
        let check = AutoCheck {
            occurrence_id,
            kind: CheckKind::Settings,
            at: now,
            outcome,
            result: &r,
        };
        d.store
            .finish_auto_record(p.policy_id, &p.auto_record, result, &check, d.clock.now())
            .await?;
        let code = r.code.as_deref().unwrap_or("-");
        match result {
            SetResult::Set => info!(
                policy = p.policy_name,
                schedule_conference_id = p.schedule_conference_id,
                why = ?why,
                next_due = %fmt(due_at),
                "DingTalk's auto-record setting made"
            ),
            SetResult::Refused => {
                error!(
                    policy = p.policy_name,
                    schedule_conference_id = p.schedule_conference_id,
                    code,
                    "DingTalk refused the auto-record setting; StartCloudRecord alone records this policy"
                );
                let text = format!(
                    "policy {}: DingTalk refused the auto-record setting of scheduled meeting {} ({code}: {}); \
                     dingrec starts its recordings itself with StartCloudRecord, and makes the setting again \
                     before the next meeting.",
                    p.policy_name,
                    p.schedule_conference_id,
                    r.message.as_deref().unwrap_or("-")
                );
                raise(
                    d,
                    AlertEvent::AutoRecordRefused,
                    &p.policy_name,
                    Some(&p.schedule_conference_id),
                    text,
                )
                .await;
            }
            SetResult::Error | SetResult::Pending => warn!(
                policy = p.policy_name,
                code,
                error = r.message.as_deref().unwrap_or("-"),
                "the auto-record setting could not be made; trying again in a minute"
            ),
        }
        Ok(())
    }

    /// The settings call: token, pacing, UpdateScheduleConfSettings.
    async fn call(
        &self,
        p: &AutoRecordPolicy,
        setting: &AutoRecord,
    ) -> (SetResult, CheckOutcome, CheckResult) {
        let d = &self.dispatcher;
        let started = tokio::time::Instant::now();
        let mut r = CheckResult::default();
        let answer = async {
            let token = d.client.token().await?;
            d.pace_other_call().await;
            let req = AutoRecordRequest {
                schedule_conference_id: &p.schedule_conference_id,
                creator_union_id: setting.creator_union_id.as_str(),
                on: true,
                start_type: setting.when.start_type(),
                layout: &p.layout,
            };
            let answer = d.client.update_schedule_settings_with(&token, &req).await;
            if let Err(e) = &answer
                && e.code() == codes::INVALID_AUTHENTICATION
            {
                d.client.invalidate_token(&token).await;
            }
            answer
        }
        .await;
        r.duration_ms = ms(started);
        if counted(&answer) {
            r.calls.add(Api::ScheduleSettings, 1);
        }
        match answer {
            Ok(ok) => {
                r.http_status = ok.status;
                r.code = Some(codes::SUCCESS.into());
                r.request_id = ok.request_id;
                (SetResult::Set, CheckOutcome::Set, r)
            }
            Err(e) => {
                r.http_status = e.http_status();
                r.code = Some(e.code().to_owned());
                r.message = Some(e.to_string());
                r.request_id = e.request_id().map(str::to_owned);
                match d.classification.classify(e.code(), e.http_status()) {
                    RetryClass::Fail => (SetResult::Refused, CheckOutcome::Refused, r),
                    _ => (SetResult::Error, CheckOutcome::Error, r),
                }
            }
        }
    }
}

fn fmt(t: DateTime<Utc>) -> String {
    crate::domain::time::fmt_utc(t)
}
