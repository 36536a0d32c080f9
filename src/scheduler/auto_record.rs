//! DingTalk's own auto-recording, set ahead (docs/auto-record.md). Two independent mechanisms,
//! each checked:
//!
//! - [`SettingsTask`] makes the setting (UpdateScheduleConfSettings) on every scheduled-meeting
//!   policy with `auto_record`, when it is applied or changed and again `auto_record_refresh`
//!   before each occurrence (DingTalk cannot be asked for it, so a setting someone turned off is
//!   restored by making it again). Each call is a row in `checks` (`kind = settings`); a refusal
//!   raises `auto_record_refused` and the policy falls back to StartCloudRecord alone.
//! - [`super::check_first`], at the due time: is DingTalk's recording already running? Then no
//!   StartCloudRecord is sent (`auto_recorded`); live and not recording, StartCloudRecord follows
//!   (`auto_record_missed`, an alert after two in a row).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::dispatcher::Dispatcher;
use crate::dingtalk::client::AutoRecordRequest;
use crate::dingtalk::error::counted;
use crate::domain::auto_record::{self, AutoRecord, Due, SetResult};
use crate::domain::outcome::{RetryClass, codes};
use crate::domain::quota::Api;
use crate::domain::{AlertEvent, CheckKind, CheckOutcome};
use crate::store::{AutoCheck, AutoRecordPolicy, CheckResult};

/// The settings task looks at the policies at least this often.
const TICK: Duration = Duration::from_secs(15);

fn ms(started: tokio::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
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
                super::check_first::raise(
                    &d.store,
                    &d.clock,
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
