//! The rows and values of the store's operations, the same on both engines: neither engine
//! defines a type the other reads. Each engine maps its rows into these (`sqlite/`, `postgres/`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::{Result, StoreError};
use crate::domain::alert::{Alert, Facts};
use crate::domain::auto_record::AutoRecord;
use crate::domain::matching::MatchRule;
use crate::domain::policy::{Layout, ScheduleConferenceId, WindowPosition};
use crate::domain::quota::{Api, Observed};
use crate::domain::schedule::{At, CronExpr};
use crate::domain::time::{fmt_utc, parse_utc};
use crate::domain::{
    AlertEvent, AlertState, AttemptOutcome, CheckKind, CheckOutcome, ConferenceId, OccurrenceState, Policy,
    PolicyName, RetryPolicy, Schedule, Target, Trigger, UnionId, Verify, Zone,
};

// ---- Policies (`policies`) ----

/// A policy in its database form (the columns of `docs/database.md`, as text and integers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyRecord {
    pub name: String,
    pub conference_id: Option<String>,
    pub schedule_conference_id: Option<String>,
    pub host_union_id: String,
    pub layout: String,
    pub small_window_position: String,
    pub cron: Option<String>,
    pub at: Option<String>,
    pub timezone: String,
    pub start_offset_ms: i64,
    pub window_ms: i64,
    pub retry: String,
    /// JSON, or `None` for `verify: false`.
    pub verify: Option<String>,
    /// JSON array of destination names, or `None` for `alerts.default`.
    pub alert: Option<String>,
    pub skip_dates: String,
    pub enabled: bool,
    pub source: String,
    /// A `match` policy's rule as JSON (`None` for the others).
    pub match_rule: Option<String>,
    /// `auto_record` as JSON ([`AutoRecord`]; `None`: off).
    pub auto_record: Option<String>,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PolicyRecord {
    pub fn from_policy(p: &Policy, source: &str) -> Self {
        let (conference_id, schedule_conference_id, match_rule) = match &p.target {
            Target::Conference(c) => (Some(c.as_str().to_owned()), None, None),
            Target::Scheduled(s) => (None, Some(s.as_str().to_owned()), None),
            Target::Match(rule) => (None, None, Some(rule.to_json())),
        };
        let (cron, at) = match &p.schedule {
            Schedule::Cron(c) => (Some(c.as_str().to_owned()), None),
            Schedule::At(a) => (None, Some(a.to_text())),
            Schedule::OnEvent => (None, None),
        };
        let skip: Vec<String> = p.skip_dates.iter().map(|d| d.to_string()).collect();
        Self {
            name: p.name.as_str().to_owned(),
            conference_id,
            schedule_conference_id,
            host_union_id: p.host_union_id.as_str().to_owned(),
            layout: p.layout.as_str().to_owned(),
            small_window_position: p.small_window_position.as_str().to_owned(),
            cron,
            at,
            timezone: p.timezone.name().to_owned(),
            start_offset_ms: ms(p.start_offset),
            window_ms: ms(p.window),
            retry: serde_json::to_string(&p.retry).unwrap_or_else(|_| "{}".into()),
            verify: p
                .verify
                .map(|v| serde_json::to_string(&v).unwrap_or_else(|_| "{}".into())),
            alert: p
                .alert
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_else(|_| "[]".into())),
            skip_dates: serde_json::to_string(&skip).unwrap_or_else(|_| "[]".into()),
            enabled: p.enabled,
            source: source.to_owned(),
            match_rule,
            auto_record: p.auto_record.as_ref().map(AutoRecord::to_json),
        }
    }

    /// Back to the domain type; a row that does not validate is reported, not trusted.
    pub fn to_policy(&self) -> Result<Policy> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Data(format!("policy '{}': {what}: {e}", self.name))
        };
        let target = match (&self.conference_id, &self.schedule_conference_id) {
            (None, None) if let Some(rule) = &self.match_rule => {
                Target::Match(MatchRule::from_json(rule).map_err(|e| bad("match_rule", &e))?)
            }
            (Some(c), None) => {
                Target::Conference(ConferenceId::parse(c).map_err(|e| bad("conference_id", &e))?)
            }
            (None, Some(s)) => Target::Scheduled(
                ScheduleConferenceId::parse(s).map_err(|e| bad("schedule_conference_id", &e))?,
            ),
            _ => {
                return Err(bad(
                    "target",
                    &"exactly one of conference_id/schedule_conference_id",
                ));
            }
        };
        let schedule = match (&self.cron, &self.at) {
            (None, None) if self.match_rule.is_some() => Schedule::OnEvent,
            (Some(c), None) => Schedule::Cron(CronExpr::from_stored(c)),
            (None, Some(a)) => Schedule::At(At::parse(a).map_err(|e| bad("at", &e))?),
            _ => return Err(bad("schedule", &"exactly one of cron/at")),
        };
        let skip: Vec<String> = serde_json::from_str(&self.skip_dates).map_err(|e| bad("skip_dates", &e))?;
        let skip_dates = skip
            .iter()
            .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|e| bad("skip_dates", &e)))
            .collect::<Result<BTreeSet<_>>>()?;
        let retry: RetryPolicy = serde_json::from_str(&self.retry).map_err(|e| bad("retry", &e))?;
        let verify = super::verify_column(self.verify.as_deref()).map_err(|e| bad("verify", &e))?;
        let alert = self
            .alert
            .as_deref()
            .map(serde_json::from_str::<Vec<String>>)
            .transpose()
            .map_err(|e| bad("alert", &e))?;
        let dur = |v: i64| std::time::Duration::from_millis(u64::try_from(v).unwrap_or(0));
        Ok(Policy {
            name: PolicyName::parse(&self.name).map_err(|e| bad("name", &e))?,
            target,
            host_union_id: UnionId::parse(&self.host_union_id).map_err(|e| bad("host_union_id", &e))?,
            schedule,
            timezone: Zone::parse(&self.timezone).map_err(|e| bad("timezone", &e))?,
            layout: Layout::parse(&self.layout).map_err(|e| bad("layout", &e))?,
            small_window_position: WindowPosition::parse(&self.small_window_position)
                .map_err(|e| bad("small_window_position", &e))?,
            start_offset: dur(self.start_offset_ms),
            window: dur(self.window_ms),
            skip_dates,
            retry,
            verify,
            alert,
            auto_record: self
                .auto_record
                .as_deref()
                .map(AutoRecord::from_json)
                .transpose()
                .map_err(|e| bad("auto_record", &e))?,
            enabled: self.enabled,
        })
    }

    /// The fields `plan` compares and shows, in display form.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        vec![
            ("conference_id", opt(&self.conference_id)),
            ("match", opt(&self.match_rule)),
            ("schedule_conference_id", opt(&self.schedule_conference_id)),
            ("host_union_id", self.host_union_id.clone()),
            ("cron", opt(&self.cron)),
            ("at", opt(&self.at)),
            ("timezone", self.timezone.clone()),
            ("layout", self.layout.clone()),
            ("small_window_position", self.small_window_position.clone()),
            ("start_offset_ms", self.start_offset_ms.to_string()),
            ("window_ms", self.window_ms.to_string()),
            ("retry", self.retry.clone()),
            ("verify", self.verify.clone().unwrap_or_else(|| "false".into())),
            ("alert", self.alert.clone().unwrap_or_else(|| "default".into())),
            ("skip_dates", self.skip_dates.clone()),
            (
                "auto_record",
                self.auto_record.clone().unwrap_or_else(|| "false".into()),
            ),
            ("enabled", self.enabled.to_string()),
            ("source", self.source.clone()),
        ]
    }
}

/// A policy row with its bookkeeping.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPolicy {
    pub id: i64,
    #[serde(flatten)]
    pub record: PolicyRecord,
    pub created_at: String,
    pub updated_at: String,
}

/// One field that `apply` would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    pub field: &'static str,
    pub old: String,
    pub new: String,
}

/// What `apply` would do to one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Added {
        name: String,
    },
    Changed {
        name: String,
        fields: Vec<FieldChange>,
    },
    /// In the database, in none of the files, and within the prune's reach: disabled.
    Removed {
        name: String,
        /// Where the policy came from (`file:line`), so a person sees whose policy goes.
        source: String,
    },
}

/// Which policies an apply may disable because they are in none of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune<'a> {
    /// None: policies missing from the files stay as they are.
    Off,
    /// `dingrec apply --prune`: every enabled policy in none of the files.
    All,
    /// The daemon's `policies.prune`: only policies whose `source` lies in one of these paths
    /// (its own `policies.paths`); a policy applied from elsewhere is not the daemon's to disable.
    Within(&'a [PathBuf]),
}

impl Prune<'_> {
    /// May this prune disable a policy that came from `source` (`file:line`)?
    pub fn reaches(&self, source: &str) -> bool {
        match self {
            Prune::Off => false,
            Prune::All => true,
            Prune::Within(paths) => source_within(source, paths),
        }
    }
}

/// Does the file of `source` (`file:line`) lie in one of `paths` (a file itself, or a folder
/// above it)? Paths are compared whole component by component, made absolute against the
/// working directory first (policy files record absolute sources).
pub fn source_within(source: &str, paths: &[PathBuf]) -> bool {
    let file = source.rsplit_once(':').map_or(source, |(f, _)| f);
    let file = std::path::absolute(file).unwrap_or_else(|_| PathBuf::from(file));
    paths.iter().any(|p| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        file == p || file.starts_with(&p)
    })
}

impl Change {
    pub fn name(&self) -> &str {
        match self {
            Change::Added { name } | Change::Changed { name, .. } | Change::Removed { name, .. } => name,
        }
    }
}

pub(crate) fn diff(
    existing: &HashMap<String, StoredPolicy>,
    new: &[PolicyRecord],
    prune: Prune<'_>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for rec in new {
        match existing.get(&rec.name) {
            None => changes.push(Change::Added {
                name: rec.name.clone(),
            }),
            Some(old) => {
                let fields: Vec<FieldChange> = old
                    .record
                    .fields()
                    .into_iter()
                    .zip(rec.fields())
                    .filter(|((_, a), (_, b))| a != b)
                    .map(|((field, old), (_, new))| FieldChange { field, old, new })
                    .collect();
                if !fields.is_empty() {
                    changes.push(Change::Changed {
                        name: rec.name.clone(),
                        fields,
                    });
                }
            }
        }
    }
    if prune != Prune::Off {
        let named: BTreeSet<&str> = new.iter().map(|r| r.name.as_str()).collect();
        let mut gone: Vec<&StoredPolicy> = existing
            .values()
            .filter(|p| {
                p.record.enabled && !named.contains(p.record.name.as_str()) && prune.reaches(&p.record.source)
            })
            .collect();
        gone.sort_by(|a, b| a.record.name.cmp(&b.record.name));
        changes.extend(gone.into_iter().map(|p| Change::Removed {
            name: p.record.name.clone(),
            source: p.record.source.clone(),
        }));
    }
    changes
}

/// Which of a policy's occurrences an `apply` cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// A changed policy's occurrences that have not started and are not due yet: planned again
    /// from the new settings.
    Future,
    /// A disabled or pruned policy's unfinished occurrences (waiting, due, or waiting for a retry).
    Unfinished,
}

/// What `apply` writes for one change: the decision both engines carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyWrite<'a> {
    Insert(&'a PolicyRecord),
    /// Its columns from `record`; with `replan`, planned again (`planned_until` cleared): a field
    /// that shapes occurrences changed, not only where the policy comes from or where its alerts go.
    Update {
        record: &'a PolicyRecord,
        replan: bool,
        cancel: Option<(i64, Cancel)>,
    },
    /// Disabled (pruned: in none of the files) and planned again when enabled.
    Disable {
        name: &'a str,
        cancel: Option<(i64, Cancel)>,
    },
}

impl PolicyWrite<'_> {
    /// The occurrences to cancel after the write: the policy's id and which.
    pub fn cancel(&self) -> Option<(i64, Cancel)> {
        match self {
            PolicyWrite::Insert(_) => None,
            PolicyWrite::Update { cancel, .. } | PolicyWrite::Disable { cancel, .. } => *cancel,
        }
    }
}

/// The writes of `changes` (from [`diff`] of `existing` and `new`), in their order.
pub fn policy_writes<'a>(
    existing: &HashMap<String, StoredPolicy>,
    new: &'a [PolicyRecord],
    changes: &'a [Change],
) -> Vec<PolicyWrite<'a>> {
    let by_name: HashMap<&str, &PolicyRecord> = new.iter().map(|r| (r.name.as_str(), r)).collect();
    let id = |name: &str| existing.get(name).map(|p| p.id);
    changes
        .iter()
        .filter_map(|change| match change {
            Change::Added { name } => by_name.get(name.as_str()).map(|r| PolicyWrite::Insert(r)),
            Change::Changed { name, fields } => by_name.get(name.as_str()).map(|r| {
                let replan = fields.iter().any(|f| !matches!(f.field, "source" | "alert"));
                let cancel = match id(name) {
                    Some(id) if !r.enabled => Some((id, Cancel::Unfinished)),
                    Some(id) if replan => Some((id, Cancel::Future)),
                    _ => None,
                };
                PolicyWrite::Update {
                    record: r,
                    replan,
                    cancel,
                }
            }),
            Change::Removed { name, .. } => Some(PolicyWrite::Disable {
                name,
                cancel: id(name).map(|id| (id, Cancel::Unfinished)),
            }),
        })
        .collect()
}

// ---- Occurrences and attempts (`occurrences`, `attempts`) ----

/// A policy that needs occurrence rows written.
#[derive(Debug, Clone)]
pub struct PlanCandidate {
    pub policy_id: i64,
    pub record: PolicyRecord,
    /// '' when never planned.
    pub planned_until: Option<DateTime<Utc>>,
}

/// One occurrence row to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOccurrence {
    /// The meeting's start (`meeting_at`; due_at − start_offset).
    pub start: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    /// `Scheduled`, or `Missed` when its window had passed before it was planned.
    pub state: OccurrenceState,
    /// `Schedule` or `CatchUp`.
    pub trigger: Trigger,
}

/// The planner's output for one policy.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    pub policy_id: i64,
    pub policy_name: String,
    pub rows: Vec<NewOccurrence>,
    pub planned_until: DateTime<Utc>,
}

/// A claimed attempt as the dispatcher's queue holds it: the two ids and nothing more. The claim
/// commits the decision to fire; what the call needs is read back ([`Store::load_claimed`]) a
/// worker's handful at a time, so a burst of 100,000 meetings queues 1.6 MB, not 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub occurrence_id: i64,
    pub attempt_id: i64,
}

/// What one committed claim took.
#[derive(Debug, Default)]
pub struct Claim {
    pub tickets: Vec<Ticket>,
    /// The due times of the claimed first attempts (for the fire-lateness histogram).
    pub first_due: Vec<DateTime<Utc>>,
    /// How many of the first tickets are due retries, claimed first (`retries_first`).
    pub retries: usize,
    /// The first tickets' attempts read back inside the claim's transaction (`read_back` of
    /// them), as [`Store::load_claimed`] reads them.
    pub loaded: Vec<(i64, Result<Claimed>)>,
}

/// A claimed attempt with what its call needs, read just before the call.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub occurrence_id: i64,
    pub attempt_id: i64,
    /// This attempt's number (attempts made, this one included).
    pub attempt_no: i64,
    pub policy_name: Box<str>,
    pub due_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    pub trigger: Trigger,
    pub meeting: Meeting,
    /// Shared with the other attempts read with it for the same host.
    pub host_union_id: Arc<str>,
    pub layout: Layout,
    pub small_window_position: WindowPosition,
    /// Shared with the other attempts read with it that have the same settings.
    pub retry: Arc<RetryPolicy>,
    pub throttled_count: i64,
    /// Attempts of this occurrence that ended without a call (they do not count either).
    pub uncalled_count: i64,
    /// The previous attempt ended in `InvalidAuthentication` (one re-auth retry is free).
    pub previous_was_reauth: bool,
    /// Its policy is still enabled (an apply may have disabled it since the claim).
    pub policy_enabled: bool,
    /// How its recording is checked (`None`: `verify: false`).
    pub verify: Option<Verify>,
    /// `auto_record` is on, DingTalk has not refused the setting and this is the meeting's own
    /// start (`schedule`, `catch_up`; not a `restart` after a participant stopped the recording,
    /// nor a `manual` one): check whether DingTalk's own recording runs before sending
    /// StartCloudRecord (docs/auto-record.md).
    pub auto_record_first: bool,
}

impl Claimed {
    pub fn ticket(&self) -> Ticket {
        Ticket {
            occurrence_id: self.occurrence_id,
            attempt_id: self.attempt_id,
        }
    }
}

/// Which meeting an attempt records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meeting {
    /// A known conference id: the occurrence's own (manual override, or resolved earlier), else
    /// the policy's.
    Conference(Box<str>),
    /// A scheduled meeting whose live conference is looked up at call time.
    Schedule(Box<str>),
    /// The policy names no meeting (the schema's CHECK makes this unreachable).
    Missing,
}

/// An attempt's result and the occurrence's next step, written together.
#[derive(Debug, Clone)]
pub struct Completion {
    pub attempt_id: i64,
    pub occurrence_id: i64,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub conference_id: Option<String>,
    pub http_status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    pub outcome: AttemptOutcome,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The occurrence's new state.
    pub state: OccurrenceState,
    pub throttled: bool,
    /// A call went out (or may have): false for an attempt closed before it was sent.
    pub called: bool,
    /// When StartCloudRecord was sent (`attempts.sent_at`); `None` when it was not, or unknown.
    pub sent_at: Option<DateTime<Utc>>,
    /// With the state `verifying`: when the first start check is due.
    pub next_check_at: Option<DateTime<Utc>>,
    /// The answer left open whether a recording runs: one check decides (recording: succeeded;
    /// not: the retry at `next_attempt_at`).
    pub settle: bool,
    /// The calls DingTalk counted (`api_usage`), written with the outcome.
    pub calls: crate::domain::quota::Calls,
}

/// One outcome of a batch, as the JSON object [`Store::complete`] hands either engine (named keys: the
/// SQL reads them by name, so a field added here cannot shift another).
#[derive(Serialize)]
pub(crate) struct OutcomeRow<'a> {
    attempt_id: i64,
    occurrence_id: i64,
    finished_at: String,
    duration_ms: i64,
    conference_id: Option<&'a str>,
    http_status: u16,
    code: &'a str,
    message: &'a str,
    request_id: Option<&'a str>,
    outcome: AttemptOutcome,
    next_attempt_at: Option<String>,
    state: OccurrenceState,
    throttled: i64,
    uncalled: i64,
    sent_at: Option<String>,
    next_check_at: Option<String>,
    settle: bool,
}

impl<'a> From<&'a Completion> for OutcomeRow<'a> {
    fn from(c: &'a Completion) -> Self {
        Self {
            attempt_id: c.attempt_id,
            occurrence_id: c.occurrence_id,
            finished_at: fmt_utc(c.finished_at),
            duration_ms: c.duration_ms,
            conference_id: c.conference_id.as_deref(),
            http_status: c.http_status,
            code: &c.code,
            message: &c.message,
            request_id: c.request_id.as_deref(),
            outcome: c.outcome,
            next_attempt_at: c.next_attempt_at.map(fmt_utc),
            state: c.state,
            throttled: i64::from(c.throttled),
            uncalled: i64::from(!c.called),
            sent_at: c.sent_at.map(fmt_utc),
            next_check_at: c.next_check_at.map(fmt_utc),
            settle: c.settle,
        }
    }
}

/// An occurrence that reached a final failure state outside the dispatcher (sweeps, recovery).
#[derive(Debug, Clone, Serialize)]
pub struct FinalEvent {
    pub occurrence_id: i64,
    pub policy_name: String,
    pub conference_id: Option<String>,
    pub state: OccurrenceState,
    pub last_code: Option<String>,
    pub due_at: String,
}

/// What start-up recovery did.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub interrupted_attempts: u64,
    /// Occurrences whose interrupted call may have started the recording: a check first.
    pub settling: u64,
    /// Checks in flight at the stop, redone.
    pub interrupted_checks: u64,
    pub resumed: u64,
    pub caught_up: u64,
    pub finals: Vec<FinalEvent>,
}

/// What the rows of one read share: many policies name the same host and the same retry
/// settings, and the attempts read together point at one copy of each.
#[derive(Default)]
pub(crate) struct Shared {
    hosts: std::collections::HashMap<Box<str>, Arc<str>>,
    retries: std::collections::HashMap<Box<str>, Arc<RetryPolicy>>,
}

impl Shared {
    pub(crate) fn host(&mut self, s: &str) -> Arc<str> {
        if let Some(h) = self.hosts.get(s) {
            return h.clone();
        }
        let h: Arc<str> = s.into();
        self.hosts.insert(s.into(), h.clone());
        h
    }

    /// Written by `apply` from a validated policy; should a row ever hold another shape (an
    /// older or newer dingrec), the attempt still goes out, with the default retry.
    pub(crate) fn retry(&mut self, s: &str, policy: &str) -> Arc<RetryPolicy> {
        if let Some(r) = self.retries.get(s) {
            return r.clone();
        }
        let r = Arc::new(serde_json::from_str(s).unwrap_or_else(|e| {
            tracing::warn!(policy, error = %e, "unreadable retry settings; using the defaults");
            RetryPolicy::default()
        }));
        self.retries.insert(s.into(), r.clone());
        r
    }
}

// ---- Checks (`checks`) ----

/// A claimed check with what its call and its decision need.
#[derive(Debug, Clone)]
pub struct DueCheck {
    pub check_id: i64,
    pub kind: CheckKind,
    pub occurrence_id: i64,
    pub policy_id: i64,
    pub policy_name: Box<str>,
    pub state: OccurrenceState,
    /// The meeting: the occurrence's (the conference called), else the policy's.
    pub conference_id: Option<Box<str>>,
    pub host_union_id: Arc<str>,
    pub due_at: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    /// `None` when the policy no longer verifies (`verify: false` applied since): no check is made.
    pub verify: Option<Verify>,
    pub retry: RetryPolicy,
    pub check_count: u32,
    pub check_failures: u32,
    /// Another StartCloudRecord would still be within `maximum_attempts`.
    pub attempts_left: bool,
    pub policy_enabled: bool,
    /// The policy's window after its offset: a `restart` occurrence's window.
    pub restart_window_ms: i64,
}

/// An enabled policy with `auto_record` on, as the auto-record task reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoRecordPolicy {
    pub policy_id: i64,
    pub policy_name: String,
    pub schedule_conference_id: String,
    pub layout: String,
    /// The setting as JSON ([`AutoRecord`]), compared with the last call's.
    pub auto_record: String,
    /// The policy's own alert destinations (`None`: the default).
    pub alert: Option<Vec<String>>,
    /// Its last settings call, if any.
    pub last: Option<crate::domain::auto_record::SettingState>,
    /// Its next scheduled occurrence (id, due time) after now: the row a settings call is kept
    /// with in `checks`.
    pub next: Option<(i64, DateTime<Utc>)>,
}

/// An `auto_record` policy's columns as either engine reads them (its times already parsed):
/// [`AutoRecordRow::policy`] makes the policy from them, the same way for both.
pub(crate) struct AutoRecordRow {
    pub policy_id: i64,
    pub policy_name: String,
    pub schedule_conference_id: String,
    pub layout: String,
    pub auto_record: String,
    pub alert: Option<String>,
    pub last_for: Option<String>,
    pub last_at: Option<DateTime<Utc>>,
    pub last_result: Option<String>,
    pub last_occurrence: Option<i64>,
    pub next_id: Option<i64>,
    pub next_due: Option<DateTime<Utc>>,
}

impl AutoRecordRow {
    pub(crate) fn policy(self) -> Result<AutoRecordPolicy> {
        use crate::domain::auto_record::{AutoRecord, SetResult, SettingState};
        let last = match (self.last_for, self.last_at, self.last_result) {
            (Some(for_setting), Some(at), Some(result)) => Some(SettingState {
                for_setting,
                occurrence_id: self.last_occurrence,
                at,
                result: SetResult::parse(&result)
                    .ok_or_else(|| StoreError::Data(format!("auto_record_result '{result}'")))?,
            }),
            _ => None,
        };
        Ok(AutoRecordPolicy {
            policy_id: self.policy_id,
            policy_name: self.policy_name,
            schedule_conference_id: self.schedule_conference_id,
            layout: self.layout,
            // As apply wrote it (PostgreSQL's jsonb comes back in its own spacing).
            auto_record: AutoRecord::from_json(&self.auto_record)
                .map(|a| a.to_json())
                .unwrap_or(self.auto_record),
            alert: self
                .alert
                .map(|a| serde_json::from_str(&a))
                .transpose()
                .map_err(|e| StoreError::Data(format!("alert: {e}")))?,
            last,
            next: self.next_id.zip(self.next_due),
        })
    }
}

/// A row of `checks` written whole, after its call: a settings call (`kind = settings`) or an
/// `auto_record` policy's due-time check (`kind = start`, `auto_recorded` / `auto_record_missed`).
#[derive(Debug, Clone)]
pub struct AutoCheck<'a> {
    pub occurrence_id: i64,
    pub kind: CheckKind,
    pub at: DateTime<Utc>,
    pub outcome: CheckOutcome,
    pub result: &'a CheckResult,
}

/// A check's result and the occurrence's next step, written together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckResult {
    pub duration_ms: i64,
    pub http_status: u16,
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub meeting_status: Option<i64>,
    pub cloud_record_status: Option<i64>,
    pub owner_union_id: Option<String>,
    /// JSON array of the videos found.
    pub videos: Option<String>,
    pub video_duration_ms: Option<i64>,
    pub video_file_size: Option<i64>,
    /// The calls DingTalk counted (`api_usage`), written with the outcome.
    #[serde(skip)]
    pub calls: crate::domain::quota::Calls,
}

/// What [`Store::complete_check`] did to the occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckEffect {
    /// Nothing changed state (checked again later, or nothing more to do).
    None,
    /// The occurrence reached this state.
    State(OccurrenceState),
    /// A `restart` occurrence was made (its id).
    Restarted(i64),
}

/// An occurrence that reached a final state through a check, for the log and the metrics.
pub fn final_event(c: &DueCheck, state: OccurrenceState) -> FinalEvent {
    FinalEvent {
        occurrence_id: c.occurrence_id,
        policy_name: c.policy_name.to_string(),
        conference_id: c.conference_id.as_deref().map(str::to_owned),
        state,
        last_code: Some(crate::domain::outcome::codes::NOT_RECORDING.to_owned()),
        due_at: fmt_utc(c.due_at),
    }
}

// ---- History (`dingrec history`) ----

/// Filters of `dingrec history` and the status page (`docs/operations.md`).
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// One occurrence.
    pub id: Option<i64>,
    pub policy: Option<String>,
    pub conference: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// Occurrences in any of these states; empty = all.
    pub states: Vec<OccurrenceState>,
    /// Only occurrences due at or before this instant (the past); `None` = all.
    pub until: Option<DateTime<Utc>>,
    /// Only occurrences with a check still to come (a succeeded one: its recording is watched).
    pub checks_pending: bool,
    /// Only succeeded occurrences whose recording no check confirmed because the checks failed
    /// (a start check ended in `error` at or after `since`, or ever without it).
    pub unconfirmed: bool,
    /// Newest due first (the status page) instead of oldest first (`history`).
    pub newest_first: bool,
    /// At most this many rows, after skipping `offset` (the status page's pages).
    pub page: Option<PageOf>,
}

/// A page of rows: `limit` after `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageOf {
    pub limit: i64,
    pub offset: i64,
}

/// One attempt as `history` reads it (from a JSON object with the same keys).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRow {
    pub attempt_no: i64,
    /// The dingrec process that made it (`hostname:pid`); `None` before this was recorded.
    pub instance: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub conference_id: Option<String>,
    pub http_status: Option<i64>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    /// `None` while its call is in flight.
    pub outcome: Option<AttemptOutcome>,
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OccurrenceRow {
    pub id: i64,
    pub policy: String,
    pub due_at: String,
    pub window_ends_at: String,
    pub conference_id: Option<String>,
    pub state: OccurrenceState,
    pub trigger: Trigger,
    pub attempt_count: i64,
    pub last_code: Option<String>,
    pub attempts: Vec<AttemptRow>,
    /// When a check confirmed the recording (`None`: not confirmed, or verify off).
    pub verified_at: Option<String>,
    /// For a `restart` occurrence: the one whose recording stopped.
    pub restart_of: Option<i64>,
    /// Its checks, oldest first.
    pub checks: Vec<CheckRow>,
    /// For an `event` or `catch_up` occurrence of a `match` policy: the event that made it.
    pub event: Option<EventRef>,
    /// The alerts raised about it, oldest first.
    pub alerts: Vec<AlertRef>,
}

/// An occurrence's parts that both engines read as JSON text, parsed in one place.
pub(crate) struct HistoryJson<'a> {
    pub attempts: &'a str,
    pub checks: &'a str,
    pub event: Option<&'a str>,
    pub alerts: &'a str,
}

/// An occurrence's attempts, checks, event and alerts.
pub(crate) type HistoryParts = (Vec<AttemptRow>, Vec<CheckRow>, Option<EventRef>, Vec<AlertRef>);

impl HistoryJson<'_> {
    /// Each part parsed, a broken one named with its occurrence.
    pub(crate) fn parse(&self, id: i64) -> Result<HistoryParts> {
        let bad =
            |what: &str, e: serde_json::Error| StoreError::Data(format!("{what} of occurrence {id}: {e}"));
        Ok((
            serde_json::from_str(self.attempts).map_err(|e| bad("attempts", e))?,
            serde_json::from_str(self.checks).map_err(|e| bad("checks", e))?,
            self.event
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| bad("the event", e))?,
            serde_json::from_str(self.alerts).map_err(|e| bad("alerts", e))?,
        ))
    }
}

/// An alert about an occurrence, as `history` and the status page show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRef {
    pub event: AlertEvent,
    pub destination: String,
    pub created_at: String,
    pub state: AlertState,
    pub attempts: i64,
    pub sent_at: Option<String>,
    pub last_error: Option<String>,
}

/// The event that made an occurrence, as `history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRef {
    pub event_id: String,
    /// The meeting's title as the event (or the catch-up's list) gave it.
    pub title: Option<String>,
    pub event_type: String,
    pub received_at: String,
    pub born_at: Option<String>,
    pub instance: Option<String>,
}

/// One check, as `history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRow {
    pub kind: CheckKind,
    pub at: String,
    pub duration_ms: Option<i64>,
    pub http_status: Option<i64>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub meeting_status: Option<i64>,
    pub cloud_record_status: Option<i64>,
    pub owner_union_id: Option<String>,
    pub video_duration_ms: Option<i64>,
    pub video_file_size: Option<i64>,
    /// `None` while its call is in flight.
    pub outcome: Option<CheckOutcome>,
}

// ---- Instances and leases (`instances`) ----

/// A dingrec process that ran on this database (`instances`), and what it holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    /// `hostname:pid`.
    pub instance: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat (a clean stop's time, once stopped).
    pub seen_at: DateTime<Utc>,
    /// Its `scheduler.lease`.
    pub lease: Duration,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Attempts and checks it claimed that have no outcome yet.
    pub attempts: u64,
    pub checks: u64,
}

/// Where a process is, by its row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Renewing its leases.
    Live,
    /// Stopped cleanly.
    Stopped,
    /// Its heartbeat is older than its lease: killed, crashed, or its machine is down.
    Gone,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Live => "live",
            Liveness::Stopped => "stopped",
            Liveness::Gone => "gone",
        }
    }
}

impl InstanceRow {
    pub fn liveness(&self, now: DateTime<Utc>) -> Liveness {
        if self.stopped_at.is_some() {
            Liveness::Stopped
        } else if crate::domain::time::add(self.seen_at, self.lease).is_some_and(|until| until > now) {
            Liveness::Live
        } else {
            Liveness::Gone
        }
    }
}

// ---- Alerts (`alerts`) ----

/// One row of `alerts`, for the sender and `dingrec alerts`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub created_at: String,
    pub event: AlertEvent,
    pub policy_name: Option<String>,
    pub occurrence_id: Option<i64>,
    pub destination: String,
    pub state: AlertState,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<String>,
    pub next_attempt_at: Option<String>,
    pub batch: Option<String>,
    pub payload: serde_json::Value,
}

impl AlertRow {
    /// The alert as the message code reads it.
    pub fn alert(&self) -> Result<Alert> {
        Ok(Alert {
            id: self.id,
            created_at: parse_utc(&self.created_at).map_err(|e| StoreError::Data(e.to_string()))?,
            event: self.event,
            facts: serde_json::from_value::<Facts>(self.payload.clone())
                .map_err(|e| StoreError::Data(format!("alerts.payload: {e}")))?,
        })
    }
}

/// Pending alerts and the age of the oldest (for `/readyz` and the metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PendingStats {
    pub pending: i64,
    pub oldest_created_at: Option<DateTime<Utc>>,
}

/// How a send of some alerts ended, for [`Store::finish_alert_send`].
#[derive(Debug, Clone, Copy)]
pub enum AlertEnd<'a> {
    Sent,
    Retry { error: &'a str, at: DateTime<Utc> },
    Failed { error: &'a str },
}

/// How long the sender keeps trying an alert.
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::hours(24);

// ---- Usage (`api_usage`) ----

/// A month's use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub by_api: BTreeMap<Api, u64>,
    pub observed: Observed,
    /// Events DingTalk pushed (`api_usage.api = 'stream_event'`): a quota of their own.
    pub events: u64,
}

impl Usage {
    pub fn used(&self) -> u64 {
        self.by_api.values().sum()
    }
}

// ---- Events (`events`) ----

/// The most of an event's data the `events` table keeps.
pub const MAX_EVENT_PAYLOAD: usize = 16 * 1024;

/// An event's data as stored: itself when it is JSON within [`MAX_EVENT_PAYLOAD`], else
/// `{"truncated": "<its start>"}` or `{"unreadable": "<its start>"}` (the column holds JSON).
pub fn event_payload(data: &str) -> String {
    let start = |s: &str| -> String {
        let mut end = s.len().min(MAX_EVENT_PAYLOAD - 64);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    };
    match serde_json::from_str::<serde_json::Value>(data) {
        Ok(_) if data.len() <= MAX_EVENT_PAYLOAD => data.to_owned(),
        Ok(_) => serde_json::json!({ "truncated": start(data) }).to_string(),
        Err(_) => serde_json::json!({ "unreadable": start(data) }).to_string(),
    }
}

/// What dingrec decided about an event, to be written with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDecision {
    /// Make the meeting's occurrence (one per meeting: a meeting that has one already makes the
    /// event a `duplicate`).
    Matched {
        policy_id: i64,
        policy_name: String,
        conference_id: String,
        due_at: DateTime<Utc>,
        window_ends_at: DateTime<Utc>,
        meeting_at: DateTime<Utc>,
        /// The occurrence's own host (`host_union_id: creator`); `None`: the policy's.
        host_union_id: Option<String>,
        /// `event`, or `catch_up` for a meeting the catch-up found in progress.
        trigger: crate::domain::Trigger,
    },
    Ignored(String),
    Invalid(String),
}

/// An event as received, with what dingrec decided.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: String,
    pub message_id: String,
    pub event_type: String,
    pub change_scene: Option<String>,
    pub conference_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub born_at: Option<DateTime<Utc>>,
    /// [`event_payload`] of its data.
    pub payload: String,
    pub instance: String,
    pub decision: EventDecision,
    /// Pushed by DingTalk (not made up by the catch-up): counted in `api_usage` as
    /// `stream_event`, in the same transaction, delivered again or not.
    pub counted: bool,
}

impl NewEvent {
    /// The outcome and reason written at first (a match may still turn out a duplicate).
    pub(crate) fn first_outcome(&self) -> (crate::domain::EventOutcome, Option<&str>, Option<i64>) {
        use crate::domain::EventOutcome as O;
        match &self.decision {
            EventDecision::Matched { policy_id, .. } => (O::Matched, None, Some(*policy_id)),
            EventDecision::Ignored(why) => (O::Ignored, Some(why), None),
            EventDecision::Invalid(why) => (O::Invalid, Some(why), None),
        }
    }
}

/// What writing an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventRecorded {
    /// Its eventId was recorded before (DingTalk sent it again): nothing written.
    Again,
    Stored {
        outcome: crate::domain::EventOutcome,
        occurrence_id: Option<i64>,
    },
}

/// The reason a matched event is a duplicate.
pub(crate) fn duplicate_reason(occurrence_id: i64, policy_name: &str) -> String {
    format!("its meeting already has occurrence {occurrence_id} (policy {policy_name})")
}

/// One row of `events`, for `dingrec events` and `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRow {
    pub id: i64,
    pub event_id: String,
    pub event_type: String,
    pub change_scene: Option<String>,
    pub conference_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub born_at: Option<DateTime<Utc>>,
    pub outcome: String,
    pub reason: Option<String>,
    pub policy_name: Option<String>,
    pub occurrence_id: Option<i64>,
    pub instance: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, cron: &str, source: &str, enabled: bool) -> PolicyRecord {
        PolicyRecord {
            name: name.into(),
            conference_id: Some("c".into()),
            schedule_conference_id: None,
            host_union_id: "h".into(),
            layout: "grid".into(),
            small_window_position: "right_top".into(),
            cron: Some(cron.into()),
            at: None,
            timezone: "UTC".into(),
            start_offset_ms: 0,
            window_ms: 60_000,
            retry: "{}".into(),
            verify: None,
            alert: None,
            skip_dates: "[]".into(),
            enabled,
            source: source.into(),
            match_rule: None,
            auto_record: None,
        }
    }

    fn stored(id: i64, r: PolicyRecord) -> (String, StoredPolicy) {
        (
            r.name.clone(),
            StoredPolicy {
                id,
                record: r,
                created_at: String::new(),
                updated_at: String::new(),
            },
        )
    }

    #[test]
    fn an_apply_cancels_what_its_change_makes_stale_and_nothing_else() {
        let existing: HashMap<String, StoredPolicy> = [
            stored(1, record("moved", "0 9 * * *", "/a.yaml:1", true)),
            stored(2, record("retimed", "0 9 * * *", "/a.yaml:5", true)),
            stored(3, record("off", "0 9 * * *", "/a.yaml:9", true)),
            stored(4, record("gone", "0 9 * * *", "/a.yaml:13", true)),
        ]
        .into_iter()
        .collect();
        let new = [
            record("moved", "0 9 * * *", "/b.yaml:1", true),
            record("retimed", "0 10 * * *", "/a.yaml:5", true),
            record("off", "0 9 * * *", "/a.yaml:9", false),
            record("added", "0 9 * * *", "/a.yaml:17", true),
        ];
        let changes = diff(&existing, &new, Prune::All);
        let writes = policy_writes(&existing, &new, &changes);
        let by_name = |n: &str| {
            writes
                .iter()
                .find(|w| match w {
                    PolicyWrite::Insert(r) | PolicyWrite::Update { record: r, .. } => r.name == n,
                    PolicyWrite::Disable { name, .. } => *name == n,
                })
                .unwrap_or_else(|| panic!("no write for {n}: {writes:?}"))
        };
        assert!(
            matches!(
                by_name("moved"),
                PolicyWrite::Update {
                    replan: false,
                    cancel: None,
                    ..
                }
            ),
            "a new source alone keeps the plan"
        );
        assert!(matches!(
            by_name("retimed"),
            PolicyWrite::Update {
                replan: true,
                cancel: Some((2, Cancel::Future)),
                ..
            }
        ));
        assert!(matches!(
            by_name("off"),
            PolicyWrite::Update {
                cancel: Some((3, Cancel::Unfinished)),
                ..
            }
        ));
        assert!(matches!(
            by_name("gone"),
            PolicyWrite::Disable {
                cancel: Some((4, Cancel::Unfinished)),
                ..
            }
        ));
        assert!(matches!(by_name("added"), PolicyWrite::Insert(_)));
        assert_eq!(writes.len(), 5);
    }
}

/// What [`crate::store::Store::housekeeping_marks`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HousekeepingMarks {
    /// The earliest `planned_until` of an enabled policy; `MIN_UTC` when one was never planned.
    pub first_planned_until: Option<DateTime<Utc>>,
    /// The earliest `window_ends_at` of a `scheduled` or `retry_wait` occurrence.
    pub first_window_end: Option<DateTime<Utc>>,
}
