//! DingTalk's own auto-recording, set ahead (docs/auto-record.md). Two independent mechanisms,
//! each checked:
//!
//! - [`SettingsRunner`] makes the setting (UpdateScheduleConfSettings) on every scheduled-meeting
//!   policy with `auto_record`, when it is applied or changed and again `auto_record_refresh`
//!   before each occurrence (DingTalk cannot be asked for it, so a setting someone turned off is
//!   restored by making it again). Each call is a row in `checks` (`kind = settings`); a refusal
//!   raises `auto_record_refused` and the policy falls back to StartCloudRecord alone.
//! - [`super::check_first`], at the due time: is DingTalk's recording already running? Then no
//!   StartCloudRecord is sent (`auto_recorded`); live and not recording, StartCloudRecord follows
//!   (`auto_record_missed`, an alert after two in a row).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::dispatcher::Dispatcher;
use crate::dingtalk::client::AutoRecordRequest;
use crate::dingtalk::error::counted;
use crate::domain::auto_record::{self, AutoRecord, Due, SetResult};
use crate::domain::outcome::{RetryClass, codes};
use crate::domain::quota::Api;
use crate::domain::{AlertEvent, CheckKind, CheckOutcome};
use crate::store::{AutoCheck, AutoRecordPolicy, CheckResult};

fn ms(started: tokio::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// Makes the auto-record settings when they are due (see the module's text), each call in a task
/// of its own; the scheduler loop drives it on its clock, so that it follows an injected one.
pub struct SettingsRunner {
    dispatcher: Arc<Dispatcher>,
    tasks: JoinSet<()>,
    /// When a setting may next be due (`None`: only after a new plan).
    next: Option<DateTime<Utc>>,
    looked: bool,
}

impl std::fmt::Debug for SettingsRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettingsRunner")
            .field("in_flight", &self.tasks.len())
            .field("next", &self.next)
            .finish()
    }
}

impl SettingsRunner {
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            dispatcher,
            tasks: JoinSet::new(),
            next: None,
            looked: false,
        }
    }

    /// When a setting may next be due, for the loop's wake-up (`None`: after a new plan only).
    pub fn next_at(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Start the settings calls that are due now. Reads the policies only when the planner wrote
    /// new rows since the last look, or when the instant computed then has come.
    pub async fn run_due(&mut self) -> crate::store::Result<usize> {
        let d = &self.dispatcher;
        let stale = d.settings_stale.swap(false, std::sync::atomic::Ordering::AcqRel);
        let now = d.clock.now();
        if !stale && self.looked && self.next.is_none_or(|t| t > now) {
            return Ok(0);
        }
        let policies = match d.store.auto_record_policies(now).await {
            Ok(p) => p,
            Err(e) => {
                // Looked at again at the next pass.
                d.settings_stale.store(true, std::sync::atomic::Ordering::Release);
                return Err(e);
            }
        };
        self.looked = true;
        let retry = TimeDelta::from_std(auto_record::RETRY_AFTER).unwrap_or(TimeDelta::MAX);
        let mut next: Option<DateTime<Utc>> = None;
        let mut started = 0;
        for p in policies {
            let setting = match AutoRecord::from_json(&p.auto_record) {
                Ok(s) => s,
                Err(e) => {
                    error!(policy = p.policy_name, error = %e, "the policy's auto_record in the database is unreadable; apply the policy again");
                    continue;
                }
            };
            let mut look = auto_record::next_look(&setting, p.last.as_ref(), p.next, now);
            // A call is kept with the occurrence it prepares: none planned, none made.
            if let Some(why) = auto_record::due(&setting, &p.auto_record, p.last.as_ref(), p.next, now)
                && p.next.is_some()
            {
                // Should it fail, it is made again a minute from now.
                look = look.into_iter().chain(now.checked_add_signed(retry)).min();
                let d = d.clone();
                self.tasks.spawn(async move {
                    if let Err(e) = set(&d, &p, &setting, why).await {
                        error!(policy = p.policy_name, error = %e, "cannot write the auto-record setting's call; made again in a minute");
                    }
                });
                started += 1;
            }
            next = next.into_iter().chain(look).min();
        }
        self.next = next;
        Ok(started)
    }

    /// Collect finished calls; `Err` when one panicked (a bug: the daemon must stop).
    pub fn reap(&mut self) -> Result<(), String> {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                return Err(format!(
                    "an auto-record setting's call failed inside dingrec: {e}"
                ));
            }
        }
        Ok(())
    }

    /// At shutdown: wait up to `bound` for calls in flight (a call cut short stays `pending` and
    /// is made again a minute after the next start).
    pub async fn drain(&mut self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
    }
}

async fn set(
    d: &Dispatcher,
    p: &AutoRecordPolicy,
    setting: &AutoRecord,
    why: Due,
) -> crate::store::Result<()> {
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
    let (result, outcome, r) = call(d, p, setting).await;
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
    d: &Dispatcher,
    p: &AutoRecordPolicy,
    setting: &AutoRecord,
) -> (SetResult, CheckOutcome, CheckResult) {
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

fn fmt(t: DateTime<Utc>) -> String {
    crate::domain::time::fmt_utc(t)
}
