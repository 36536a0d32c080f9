//! Checks that a recording runs (`docs/policies.md`, "Verification"): after a start, while the meeting is live (`watch`),
//! and the video after it. A check is claimed like an attempt (its intent row first), made through
//! the same rate limit as starts but only when no start is due or queued (starts go first), and
//! its outcome is written with the occurrence's next step in one transaction.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::dispatcher::Dispatcher;
use crate::dingtalk::DingTalkError;
use crate::dingtalk::error::counted;
use crate::domain::outcome::codes;
use crate::domain::quota::Api;
use crate::domain::verify::{CheckContext, CheckNext, Seen, decide_check};
use crate::domain::{CheckKind, CheckOutcome, OccurrenceState};
use crate::store::{CheckEffect, CheckResult, DueCheck, final_event};

/// Checks in flight at once without a rate limit.
const MAX_CHECKS_IN_FLIGHT: usize = 16;

/// Claims due checks and runs them as tasks; a task that panics fails the daemon.
pub struct CheckRunner {
    dispatcher: Arc<Dispatcher>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for CheckRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckRunner")
            .field("in_flight", &self.tasks.len())
            .finish()
    }
}

impl CheckRunner {
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            dispatcher,
            tasks: JoinSet::new(),
        }
    }

    /// Checks running now.
    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// How many checks may be in flight: a quarter second of sends under a rate limit.
    fn room(&self) -> usize {
        let most = self
            .dispatcher
            .rate()
            .map_or(MAX_CHECKS_IN_FLIGHT, |r| (r as usize / 4).max(1));
        most.saturating_sub(self.tasks.len())
    }

    /// Claim and start the checks that are due, unless a start is due or queued. Returns how
    /// many started.
    pub async fn run_due(&mut self) -> crate::store::Result<usize> {
        let d = &self.dispatcher;
        let room = self.room();
        if room == 0 || !d.starts_idle() {
            return Ok(0);
        }
        let now = d.clock.now();
        if d.store.next_due_at().await?.is_some_and(|t| t <= now) {
            return Ok(0);
        }
        if d.store.next_check_at().await?.is_none_or(|t| t > now) {
            return Ok(0);
        }
        let due = d.store.claim_checks(now, room as i64).await?;
        let n = due.len();
        for c in due {
            let d = d.clone();
            self.tasks.spawn(async move { check(&d, c).await });
        }
        Ok(n)
    }

    /// Collect finished checks; `Err` when one panicked (a bug: the daemon must stop).
    pub fn reap(&mut self) -> Result<(), String> {
        while let Some(done) = self.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                return Err(format!("a check failed inside dingrec: {e}"));
            }
        }
        Ok(())
    }

    /// At shutdown: wait up to `bound` for checks in flight (the rest are redone at the next
    /// start: their rows have no outcome).
    pub async fn drain(&mut self, bound: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(Err(e))) if e.is_panic() => {
                    return Err(format!("a check failed inside dingrec: {e}"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        self.tasks.abort_all();
        Ok(())
    }
}

/// What the call found, and the row's fields.
async fn seen_from(kind: CheckKind, d: &Dispatcher, c: &DueCheck) -> (Seen, CheckResult) {
    {
        let started = tokio::time::Instant::now();
        let mut r = CheckResult::default();
        let Some(conf) = c.conference_id.as_deref() else {
            r.code = Some("paramsError".into());
            r.message = Some("the occurrence names no meeting".into());
            return (Seen::Failed, r);
        };
        d.pace_other_call().await;
        let token = match d.client.token().await {
            Ok(t) => t,
            Err(e) => return (Seen::Failed, failed(r, &e, started)),
        };
        let result = match kind {
            CheckKind::Start | CheckKind::Watch => {
                let info = d.client.conference_info_with(&token, conf).await;
                if counted(&info) {
                    r.calls.add(Api::ConferenceInfo, 1);
                }
                info.map(|info| {
                    r.meeting_status = Some(info.status);
                    r.cloud_record_status = info.cloud_record_status;
                    r.owner_union_id = info.cloud_record_owner_union_id.filter(|o| !o.is_empty());
                    Seen::Info {
                        meeting_status: info.status,
                        record_status: info.cloud_record_status.unwrap_or(0),
                    }
                })
            }
            // Settings calls are the auto-record task's, never claimed as a check.
            CheckKind::Settings => Ok(Seen::Failed),
            CheckKind::Video => {
                let videos = d
                    .client
                    .cloud_record_videos_with(&token, conf, &c.host_union_id)
                    .await;
                if counted(&videos) {
                    r.calls.add(Api::CloudRecordVideos, 1);
                }
                videos.map(|videos| {
                    r.video_duration_ms = Some(videos.iter().map(|v| v.duration).sum());
                    r.video_file_size = Some(videos.iter().map(|v| v.file_size).sum());
                    r.videos = serde_json::to_string(&videos).ok();
                    Seen::Videos(videos.len())
                })
            }
        };
        match result {
            Ok(seen) => {
                r.http_status = 200;
                r.code = Some(codes::SUCCESS.into());
                r.duration_ms = ms(started);
                (seen, r)
            }
            Err(e) => {
                if e.code() == codes::INVALID_AUTHENTICATION {
                    d.client.invalidate_token(&token).await;
                }
                let seen = match e.code() {
                    codes::ROOM_NOT_FOUND | codes::ROOM_CLOSED if kind != CheckKind::Video => {
                        Seen::MeetingGone
                    }
                    codes::CLOUD_RECORD_NOT_FOUND if kind == CheckKind::Video => Seen::NoVideo,
                    _ => Seen::Failed,
                };
                (seen, failed(r, &e, started))
            }
        }
    }
}

fn ms(started: tokio::time::Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

/// A check closed without a call: dingrec's own code and why.
fn no_call(code: &str, why: &str) -> CheckResult {
    CheckResult {
        code: Some(code.to_owned()),
        message: Some(why.to_owned()),
        ..CheckResult::default()
    }
}

fn failed(mut r: CheckResult, e: &DingTalkError, started: tokio::time::Instant) -> CheckResult {
    r.http_status = e.http_status();
    r.code = Some(e.code().to_owned());
    r.message = Some(e.to_string());
    r.request_id = e.request_id().map(str::to_owned);
    r.duration_ms = ms(started);
    r
}

/// One check: the call, the decision, the write (tried again until it commits: the check's row
/// stays open meanwhile, and a restart would redo it).
async fn check(d: &Dispatcher, c: DueCheck) {
    let (outcome, next, result) = match c.verify {
        // A disabled or pruned policy's watch and video end without a call (its start checks
        // still settle the start DingTalk accepted).
        Some(_) if !c.policy_enabled && c.kind != CheckKind::Start => (
            CheckOutcome::Error,
            CheckNext::Done,
            no_call("policy_disabled", "the policy was disabled; no more checks"),
        ),
        // The month's quota is inside its reserve: the optional calls stop (the quota task said
        // so once); the start DingTalk accepted was confirmed before any watch.
        Some(_) if c.kind != CheckKind::Start && d.quota.optional_stopped() => (
            CheckOutcome::Error,
            CheckNext::Done,
            no_call(
                codes::QUOTA_RESERVE,
                "not made: DingTalk's monthly quota is inside its reserve (dingtalk.quota_reserve); no more watch checks or video look-ups this month",
            ),
        ),
        Some(v) => {
            let (seen, result) = seen_from(c.kind, d, &c).await;
            let ctx = CheckContext {
                now: d.clock.now(),
                window_ends_at: c.window_ends_at,
                made: c.check_count,
                failed_in_a_row: c.check_failures,
                attempts_left: c.attempts_left,
            };
            let u = d.clock.chance(crate::clock::chance_key(b'c', c.check_id, 0));
            let (outcome, next) = decide_check(c.kind, &v, &c.retry, &seen, ctx, u);
            (outcome, next, result)
        }
        // `verify: false` applied since: no call; a start DingTalk accepted is `succeeded`.
        None => (
            CheckOutcome::Error,
            CheckNext::Unconfirmed,
            no_call(
                "verify_off",
                "verify was turned off for this policy; no check was made",
            ),
        ),
    };
    d.metrics.check(c.kind, outcome);
    let mut wait = Duration::from_millis(100);
    let effect = loop {
        match d
            .store
            .complete_check(&c, &result, outcome, next, d.clock.now())
            .await
        {
            Ok(effect) => break effect,
            Err(e) => {
                error!(occurrence = c.occurrence_id, check = c.check_id, error = %e, "cannot record a check's outcome; trying again");
                d.health.db_failed("checker", e.to_string());
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    };
    d.health.db_recovered("checker");
    report(d, &c, outcome, &result, &effect);
    // The loop may be asleep until its next due time; this check may have made one sooner.
    d.notify.notify_one();
}

/// The log lines and metrics a person reads.
fn report(d: &Dispatcher, c: &DueCheck, outcome: CheckOutcome, r: &CheckResult, effect: &CheckEffect) {
    let conf = c.conference_id.as_deref().unwrap_or("-");
    let policy = &*c.policy_name;
    let occ = c.occurrence_id;
    let kind = c.kind.as_str();
    let code = r.code.as_deref().unwrap_or("-");
    let owner = r.owner_union_id.as_deref();
    let not_host = owner.is_some_and(|o| o != &*c.host_union_id);
    match effect {
        CheckEffect::State(OccurrenceState::Succeeded) => {
            d.metrics.occurrence(OccurrenceState::Succeeded);
            if outcome == CheckOutcome::Error {
                warn!(
                    policy,
                    conference_id = conf,
                    occurrence = occ,
                    code,
                    "recording not confirmed: the checks could not be made before the window ended; DingTalk had accepted the start"
                );
            } else if not_host {
                warn!(
                    policy,
                    conference_id = conf,
                    occurrence = occ,
                    owner = owner.unwrap_or("-"),
                    "recording confirmed, but it is someone else's: started by another user than the policy's host"
                );
            } else {
                info!(
                    policy,
                    conference_id = conf,
                    occurrence = occ,
                    outcome = outcome.as_str(),
                    "recording confirmed"
                );
            }
        }
        CheckEffect::State(OccurrenceState::RetryWait) => warn!(
            policy,
            conference_id = conf,
            occurrence = occ,
            "DingTalk accepted the start but no recording runs; starting it again"
        ),
        CheckEffect::State(state) if state.is_final_failure() => {
            super::report_final(&d.metrics, &final_event(c, *state));
        }
        CheckEffect::Restarted(id) => error!(
            policy,
            conference_id = conf,
            occurrence = occ,
            restart = id,
            outcome = outcome.as_str(),
            "the recording stopped while the meeting is in progress; starting it again"
        ),
        CheckEffect::State(_) | CheckEffect::None => match outcome {
            CheckOutcome::Paused if c.kind == CheckKind::Watch => error!(
                policy,
                conference_id = conf,
                occurrence = occ,
                "the recording is paused while the meeting is in progress"
            ),
            CheckOutcome::Stopped | CheckOutcome::NotRecording if c.kind == CheckKind::Watch => error!(
                policy,
                conference_id = conf,
                occurrence = occ,
                outcome = outcome.as_str(),
                "the recording stopped while the meeting is in progress (restart is off)"
            ),
            CheckOutcome::NoVideo => error!(
                policy,
                conference_id = conf,
                occurrence = occ,
                "the meeting has no video: DingTalk answered cloudRecordNotFound"
            ),
            CheckOutcome::VideoFound => info!(
                policy,
                conference_id = conf,
                occurrence = occ,
                duration_ms = r.video_duration_ms.unwrap_or(0),
                file_size = r.video_file_size.unwrap_or(0),
                "the meeting's video is there"
            ),
            CheckOutcome::MeetingEnded => info!(
                policy,
                conference_id = conf,
                occurrence = occ,
                "the meeting ended; watch over"
            ),
            CheckOutcome::Error if code == codes::QUOTA_RESERVE => {}
            CheckOutcome::Error => warn!(
                policy,
                conference_id = conf,
                occurrence = occ,
                kind,
                code,
                error = r.message.as_deref().unwrap_or("-"),
                "a check could not be made; trying again"
            ),
            CheckOutcome::NotRecording | CheckOutcome::Stopped => info!(
                policy,
                conference_id = conf,
                occurrence = occ,
                kind,
                outcome = outcome.as_str(),
                "not recording yet; checking again"
            ),
            CheckOutcome::Recording
            | CheckOutcome::Paused
            | CheckOutcome::Set
            | CheckOutcome::Refused
            | CheckOutcome::AutoRecorded
            | CheckOutcome::AutoRecordMissed => {}
        },
    }
}
