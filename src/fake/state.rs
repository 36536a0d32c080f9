//! The fake's model of DingTalk: tokens, meetings, scheduled meetings, scripts, throttling.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng as _;
use serde_json::{Value, json};

use super::scenario::{MeetingState, RecordingAction, Scenario, Silent, Step, UnknownConferences};
use crate::clock::SharedClock;

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Json {
        status: u16,
        body: Value,
    },
    Raw {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// Faults.
    Hang,
    Drop,
    Reset,
    Trickle {
        status: u16,
        body: Value,
    },
    Partial,
}

#[derive(Debug, Clone)]
struct Meeting {
    host: Option<String>,
    initial: MeetingState,
    live_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// `cloudRecordStatus`: 0 not recording, 1 recording, 2 paused, 3 ended.
    record_status: i64,
    record_owner: Option<String>,
    /// A recording ran at some point (so there is a video, unless `video` is false).
    recorded: bool,
    video: bool,
    /// Accepted starts left that do not record.
    silent_left: u32,
    pause_at: Option<DateTime<Utc>>,
    stop_at: Option<DateTime<Utc>>,
    script: VecDeque<Step>,
    info_script: VecDeque<Step>,
    schedule_id: Option<String>,
    start_time_ms: i64,
    /// The title (`Meeting` unless an event created it with one).
    title: Option<String>,
    /// The scheduled meeting's auto-record setting, as UpdateScheduleConfSettings left it.
    auto_record: Option<AutoSetting>,
    /// The setting was looked at when the meeting went live (it acts once, as the host joins).
    auto_started: bool,
    /// And it started the recording.
    auto_recorded: bool,
}

/// A scheduled meeting's auto-record setting.
#[derive(Debug, Clone, Copy)]
struct AutoSetting {
    /// False: accepted, and silently does not start (`auto_record_fails`).
    works: bool,
    set_at: DateTime<Utc>,
}

/// What the fake knows of a scheduled meeting besides its meeting.
#[derive(Debug, Clone, Default)]
struct ScheduleMeta {
    conference_id: String,
    creator: Option<String>,
    auto_record_fails: bool,
    settings_script: VecDeque<Step>,
}

impl Meeting {
    /// Apply what happened by `now`: a pause or stop that came due (to a running recording),
    /// the meeting's end (which ends its recording).
    fn advance(&mut self, now: DateTime<Utc>) {
        // DingTalk's own auto-recording: set before the meeting went live, it starts the
        // recording as the host joins (the fake's "goes live"), once.
        if !self.auto_started
            && let Some(live) = self.live_at
            && now >= live
        {
            self.auto_started = true;
            if let Some(a) = self.auto_record
                && a.works
                && a.set_at <= live
                && self.record_status == 0
                && self.ends_at.is_none_or(|t| t > live)
            {
                self.record_status = 1;
                self.recorded = true;
                self.auto_recorded = true;
                self.record_owner = self.host.clone();
            }
        }
        if self.pause_at.is_some_and(|t| now >= t) {
            self.pause_at = None;
            if self.record_status == 1 {
                self.record_status = 2;
            }
        }
        if self.stop_at.is_some_and(|t| now >= t) {
            self.stop_at = None;
            if matches!(self.record_status, 1 | 2) {
                self.record_status = 3;
            }
        }
        if self.state(now) == MeetingState::Ended && matches!(self.record_status, 1 | 2) {
            self.record_status = 3;
        }
    }

    /// Is a recording running (or paused) at `now`?
    fn recording_at(&mut self, now: DateTime<Utc>) -> bool {
        self.advance(now);
        matches!(self.record_status, 1 | 2)
    }

    fn state(&self, now: DateTime<Utc>) -> MeetingState {
        if self.ends_at.is_some_and(|t| now >= t) {
            return MeetingState::Ended;
        }
        match self.live_at {
            Some(t) if now >= t => MeetingState::Live,
            Some(_) => MeetingState::NotStarted,
            None => self.initial,
        }
    }
}

/// Meeting times and token lifetimes follow `clock` (the wall clock, or a test's manual clock, so
/// that a token expires and a meeting goes live as the test's time passes); throttling counts real
/// seconds, as DingTalk's per-second limits do.
pub struct State {
    pub scenario: Scenario,
    clock: SharedClock,
    token_ttl: Duration,
    internal_token: Option<(String, DateTime<Utc>)>,
    tokens: HashMap<String, DateTime<Utc>>,
    meetings: HashMap<String, Meeting>,
    schedules: HashMap<String, ScheduleMeta>,
    default_script: VecDeque<Step>,
    recent_starts: VecDeque<Instant>,
    token_outage_until: Option<DateTime<Utc>>,
    pub token_calls: u64,
    pub start_calls: u64,
    /// QueryConferenceInfo and QueryCloudRecordVideo calls.
    pub info_calls: u64,
    pub video_calls: u64,
    /// The next StartCloudRecord takes effect but is never answered (the caller dies waiting).
    pub hang_next_start: bool,
    /// StartCloudRecord calls left hanging so far.
    pub hung_starts: u64,
    pub robots: super::robot::Robots,
    /// Calls counted against the monthly quota, per API, all months together.
    pub usage: std::collections::BTreeMap<crate::domain::quota::Api, u64>,
    /// This month (`2026-12`) and its calls, for `scenario.monthly_quota`.
    month: (String, u64),
}

fn status_for(code: &str) -> u16 {
    match code {
        "recordStartError" | "recordStartPermissionError" => 404,
        "systemError" => 500,
        c if c.starts_with("Forbidden.") => 403,
        _ => 400,
    }
}

fn message_for(code: &str) -> &'static str {
    match code {
        "roomClosed" => "the meeting has ended",
        "paramsError" => "error:conferenceId is invalid",
        "recordStartError" => "recordStartError:record is already started",
        "recordStartPermissionError" => "permissionError:only the host can start cloud record",
        "systemError" => "systemError:internal error",
        "InvalidAuthentication" => "不合法的access_token",
        "AuthenticationFailed.MissingParameter" => "缺少参数：x-acs-dingtalk-access-token",
        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi" => "应用调用该接口的频率超过限制",
        "Forbidden.AccessDenied.QpsLimitForApi" => "该接口的调用频率超过限制",
        "invalidClientIdOrSecret" => "无效的clientId或者clientSecret",
        QUOTA_EXHAUSTED => "the monthly call quota of the organisation is used up",
        _ => "error",
    }
}

/// DingTalk's error body.
pub fn error(code: &str, status: Option<u16>, request_id: &str) -> Reply {
    error_msg(code, status, request_id, message_for(code))
}

fn error_msg(code: &str, status: Option<u16>, request_id: &str, message: &str) -> Reply {
    Reply::Json {
        status: status.unwrap_or_else(|| status_for(code)),
        body: json!({ "code": code, "requestid": request_id, "message": message }),
    }
}

fn ok() -> Reply {
    Reply::Json {
        status: 200,
        body: json!({ "code": "200" }),
    }
}

/// A scripted step as a reply (`None`: "ok", go on with the normal logic).
fn scripted(step: &Step, request_id: &str) -> Option<Reply> {
    Some(match step.answer.as_str() {
        "ok" => return None,
        "hang" => Reply::Hang,
        "drop" => Reply::Drop,
        "reset" => Reply::Reset,
        "partial" => Reply::Partial,
        "trickle" => Reply::Trickle {
            status: 200,
            body: json!({ "code": "200" }),
        },
        "html" => Reply::Raw {
            status: step.status.unwrap_or(200),
            content_type: "text/html",
            body: b"<html><head><title>Access denied</title></head><body><h1>Too many requests from your IP</h1></body></html>".to_vec(),
        },
        "json_array" => Reply::Raw {
            status: step.status.unwrap_or(200),
            content_type: "application/json",
            body: b"[1,2]".to_vec(),
        },
        "x5" => Reply::Json {
            status: step.status.unwrap_or(200),
            body: json!({"status": 1111, "wait": 5, "source": "x5", "punish": "deny", "uuid": request_id}),
        },
        "empty_502" => Reply::Raw {
            status: 502,
            content_type: "text/html",
            body: Vec::new(),
        },
        code => error(code, step.status, request_id),
    })
}

/// Take the head of a script, counting down its `times` (a step with `times: 0` is skipped).
fn pop(script: &mut VecDeque<Step>) -> Option<Step> {
    while script.front().is_some_and(|s| s.times == 0) {
        script.pop_front();
    }
    let head = script.front_mut()?;
    let step = head.clone();
    if head.times <= 1 {
        script.pop_front();
    } else {
        head.times -= 1;
    }
    Some(step)
}

pub fn new_request_id() -> String {
    let mut rng = rand::rng();
    let v: u128 = rng.random();
    let h = format!("{v:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn new_token() -> String {
    let v: u128 = rand::rng().random();
    format!("{v:032x}")
}

impl State {
    pub fn new(scenario: Scenario, clock: SharedClock) -> Self {
        let mut s = Self {
            scenario: Scenario::default(),
            clock,
            token_ttl: Duration::from_secs(7200),
            internal_token: None,
            tokens: HashMap::new(),
            meetings: HashMap::new(),
            schedules: HashMap::new(),
            default_script: VecDeque::new(),
            recent_starts: VecDeque::new(),
            token_outage_until: None,
            token_calls: 0,
            start_calls: 0,
            info_calls: 0,
            video_calls: 0,
            hang_next_start: false,
            hung_starts: 0,
            robots: super::robot::Robots::default(),
            usage: std::collections::BTreeMap::new(),
            month: (String::new(), 0),
        };
        s.load(scenario);
        s
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Replace the scenario (tokens stay valid).
    pub fn load(&mut self, scenario: Scenario) {
        self.token_ttl = scenario.token_ttl.unwrap_or(Duration::from_secs(7200));
        self.meetings.clear();
        self.schedules.clear();
        self.default_script = scenario.default_script.iter().cloned().collect();
        self.robots.load(&scenario.robots);
        for m in &scenario.meetings {
            self.add_meeting(m.clone(), None);
        }
        for s in &scenario.schedules {
            self.schedules.insert(
                s.schedule_conference_id.clone(),
                ScheduleMeta {
                    conference_id: s.conference_id.clone(),
                    creator: s.creator_union_id.clone().or_else(|| s.host_union_id.clone()),
                    auto_record_fails: s.auto_record_fails,
                    settings_script: s.settings_script.iter().cloned().collect(),
                },
            );
            self.add_meeting(
                super::scenario::MeetingSpec {
                    host_union_id: s.host_union_id.clone(),
                    live_after: s.live_after,
                    ends_after: s.ends_after,
                    script: s.script.clone(),
                    ..super::scenario::MeetingSpec::live(&s.conference_id)
                },
                Some(s.schedule_conference_id.clone()),
            );
        }
        self.scenario = scenario;
    }

    /// `d` after the fake's now.
    fn after(&self, d: Duration) -> DateTime<Utc> {
        let now = self.clock.now();
        TimeDelta::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// A `conference_created` event's meeting, live now and hosted by its creator, unless the
    /// scenario has it already.
    pub fn meeting_created(&mut self, conference_id: &str, creator: Option<&str>, title: Option<&str>) {
        if conference_id.is_empty() || self.meetings.contains_key(conference_id) {
            return;
        }
        let spec = super::scenario::MeetingSpec {
            host_union_id: creator.map(str::to_owned),
            state: Some(MeetingState::Live),
            ..super::scenario::MeetingSpec::live(conference_id)
        };
        self.add_meeting(spec, None);
        if let Some(m) = self.meetings.get_mut(conference_id) {
            m.title = title.map(str::to_owned);
        }
    }

    /// `GET /v1.0/conference/orgConferences?maxResults=&nextToken=` (QueryOrgConferenceList): the
    /// meetings in progress, by conferenceId, a page at a time (`nextToken` is the last id of the
    /// page before; at most 50 a page, as DingTalk).
    pub fn org_conferences(
        &mut self,
        max_results: Option<&str>,
        next_token: Option<&str>,
        request_id: &str,
    ) -> Reply {
        let max = match max_results.map(str::parse::<usize>) {
            None => 20,
            Some(Ok(n)) if (1..=50).contains(&n) => n,
            Some(_) => return error_msg("paramError", Some(400), request_id, "maxResults must be 1 to 50"),
        };
        let now = self.clock.now();
        let after = next_token.filter(|t| !t.is_empty() && *t != "0");
        let mut ids: Vec<&String> = self
            .meetings
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        let mut live = ids.into_iter().filter_map(|id| {
            let m = self.meetings.get_mut(&id)?;
            m.advance(now);
            (m.state(now) == MeetingState::Live).then(|| {
                json!({
                    "conferenceId": id,
                    "title": m.title.clone().unwrap_or_else(|| "Meeting".into()),
                    "roomCode": "",
                    "status": 2,
                    "startTime": m.start_time_ms,
                    "endTime": 0,
                    "creatorId": m.host.clone().unwrap_or_default(),
                    "creatorNick": "",
                    "bizType": "",
                })
            })
        });
        let page: Vec<Value> = live.by_ref().take(max).collect();
        let has_more = live.next().is_some();
        let next = page
            .last()
            .filter(|_| has_more)
            .and_then(|m| m["conferenceId"].as_str())
            .unwrap_or_default()
            .to_owned();
        Reply::Json {
            status: 200,
            body: json!({
                "onGoingConfList": page,
                "nextToken": next,
                "hasMore": has_more,
                "totalCount": page.len(),
            }),
        }
    }

    pub fn add_meeting(&mut self, m: super::scenario::MeetingSpec, schedule_id: Option<String>) {
        let initial = m.state.unwrap_or(if m.live_after.is_some() {
            MeetingState::NotStarted
        } else {
            MeetingState::Live
        });
        self.meetings.insert(
            m.conference_id.clone(),
            Meeting {
                host: m.host_union_id,
                initial,
                live_at: m.live_after.map(|d| self.after(d)),
                ends_at: m.ends_after.map(|d| self.after(d)),
                record_status: if m.recording_owner.is_some() { 1 } else { 0 },
                recorded: m.recording_owner.is_some(),
                record_owner: m.recording_owner,
                video: m.video,
                silent_left: match m.silent {
                    None => 0,
                    Some(Silent::Once) => 1,
                    Some(Silent::Always) => u32::MAX,
                },
                pause_at: m.pause_after.map(|d| self.after(d)),
                stop_at: m.stop_after.map(|d| self.after(d)),
                script: m.script.into_iter().collect(),
                info_script: m.info_script.into_iter().collect(),
                schedule_id,
                start_time_ms: self.clock.now().timestamp_millis(),
                title: None,
                auto_record: None,
                auto_started: false,
                auto_recorded: false,
            },
        );
    }

    pub fn expire_tokens(&mut self) {
        self.tokens.clear();
        self.internal_token = None;
    }

    pub fn token_outage(&mut self, d: Duration) {
        self.token_outage_until = Some(self.after(d));
    }

    fn issue(&mut self, token: String) -> Reply {
        let expires = self.after(self.token_ttl);
        self.tokens.insert(token.clone(), expires);
        Reply::Json {
            status: 200,
            body: json!({ "expireIn": self.token_ttl.as_secs(), "accessToken": token }),
        }
    }

    /// `POST /v1.0/oauth2/accessToken` and `corpAccessToken`.
    pub fn token(&mut self, corp: bool, body: &Value, request_id: &str) -> Reply {
        self.token_calls += 1;
        let now = self.clock.now();
        if self.token_outage_until.is_some_and(|t| now < t) {
            return Reply::Raw {
                status: 503,
                content_type: "text/html",
                body: b"<html><body>503 Service Unavailable</body></html>".to_vec(),
            };
        }
        let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        if corp {
            if s("suiteKey").is_empty() || s("authCorpId").is_empty() {
                return error_msg("invalidSuiteKey", Some(400), request_id, "suitekey不合法");
            }
            // A corp token is new on every request.
            return self.issue(new_token());
        }
        if !self.credentials_ok(s("appKey"), s("appSecret")) {
            return error("invalidClientIdOrSecret", Some(400), request_id);
        }
        // The same token until it expires; asking again extends it.
        let token = match &self.internal_token {
            Some((t, exp)) if now < *exp && self.tokens.contains_key(t) => t.clone(),
            _ => new_token(),
        };
        self.internal_token = Some((token.clone(), self.after(self.token_ttl)));
        self.issue(token)
    }

    /// Are these the app's key and secret (any non-empty key when the scenario names none)?
    pub fn credentials_ok(&self, key: &str, secret: &str) -> bool {
        let key_ok = self.scenario.app_key.as_deref().is_none_or(|k| k == key);
        let secret_ok = self.scenario.app_secret.as_deref().is_none_or(|k| k == secret);
        !key.is_empty() && key_ok && secret_ok
    }

    /// Check the token header; `Some(reply)` when it is refused.
    pub fn check_token(&self, token: Option<&str>, request_id: &str) -> Option<Reply> {
        match token {
            None => Some(error(
                "AuthenticationFailed.MissingParameter",
                Some(400),
                request_id,
            )),
            Some(t) => match self.tokens.get(t) {
                Some(exp) if self.clock.now() < *exp => None,
                _ => Some(error("InvalidAuthentication", Some(400), request_id)),
            },
        }
    }

    /// `POST …/cloudRecords/start`.
    pub fn start(
        &mut self,
        conference_id: &str,
        body: &Value,
        request_id: &str,
    ) -> (Reply, Option<Duration>) {
        let answered = self.answer_start(conference_id, body, request_id);
        if std::mem::take(&mut self.hang_next_start) {
            self.hung_starts += 1;
            return (Reply::Hang, None);
        }
        answered
    }

    fn answer_start(
        &mut self,
        conference_id: &str,
        body: &Value,
        request_id: &str,
    ) -> (Reply, Option<Duration>) {
        self.start_calls += 1;
        let now = Instant::now();
        if let Some(limit) = self.scenario.throttle_above {
            while self
                .recent_starts
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                self.recent_starts.pop_front();
            }
            if self.recent_starts.len() >= limit as usize {
                return (
                    error(
                        "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                        Some(403),
                        request_id,
                    ),
                    None,
                );
            }
            self.recent_starts.push_back(now);
        }
        let union_id = body.get("unionId").and_then(Value::as_str).unwrap_or_default();
        if union_id.is_empty() {
            return (
                error_msg("paramsError", Some(400), request_id, "error:unionId is invalid"),
                None,
            );
        }
        let default_step = pop(&mut self.default_script);
        let Some(m) = self.meetings.get_mut(conference_id) else {
            if let Some(step) = &default_step
                && let Some(r) = scripted(step, request_id)
            {
                return (r, step.delay);
            }
            return match self.scenario.unknown_conferences {
                UnknownConferences::Live => (ok(), default_step.and_then(|s| s.delay)),
                UnknownConferences::ParamsError => (error("paramsError", Some(400), request_id), None),
            };
        };
        let step = pop(&mut m.script).or(default_step);
        let delay = step.as_ref().and_then(|s| s.delay);
        if let Some(step) = &step
            && let Some(r) = scripted(step, request_id)
        {
            return (r, delay);
        }
        let now = self.clock.now();
        m.advance(now);
        let reply = match m.state(now) {
            MeetingState::Ended => error("roomClosed", Some(400), request_id),
            MeetingState::NotStarted => error_msg(
                "recordStartError",
                Some(404),
                request_id,
                "recordStartError:conference is not started",
            ),
            MeetingState::Live => {
                if m.host.as_deref().is_some_and(|h| h != union_id) {
                    error("recordStartPermissionError", Some(404), request_id)
                } else if matches!(m.record_status, 1 | 2) {
                    error("recordStartError", Some(404), request_id)
                } else if m.silent_left > 0 {
                    // Accepted, and nothing records: what a check is for.
                    m.silent_left -= 1;
                    ok()
                } else {
                    m.record_status = 1;
                    m.record_owner = Some(union_id.to_owned());
                    m.recorded = true;
                    ok()
                }
            }
        };
        (reply, delay)
    }

    /// `POST …/cloudRecords/stop`.
    pub fn stop(&mut self, conference_id: &str, request_id: &str) -> Reply {
        let now = self.clock.now();
        let Some(m) = self.meetings.get_mut(conference_id) else {
            return error("paramsError", Some(400), request_id);
        };
        if m.recording_at(now) {
            m.record_status = 3;
            ok()
        } else {
            error_msg(
                "recordStopError",
                Some(404),
                request_id,
                "recordStopError:record is not started",
            )
        }
    }

    fn status_code(st: MeetingState) -> i64 {
        match st {
            MeetingState::NotStarted => 0,
            MeetingState::Ended => 1,
            MeetingState::Live => 2,
        }
    }

    /// `GET /v1.0/conference/videoConferences/{id}` (QueryConferenceInfo).
    pub fn info(&mut self, conference_id: &str, request_id: &str) -> (Reply, Option<Duration>) {
        self.info_calls += 1;
        let now = self.clock.now();
        let Some(m) = self.meetings.get_mut(conference_id) else {
            return (
                error_msg(
                    "roomNotFound",
                    Some(404),
                    request_id,
                    "roomNotFound:conference not found",
                ),
                None,
            );
        };
        if let Some(step) = pop(&mut m.info_script)
            && let Some(r) = scripted(&step, request_id)
        {
            return (r, step.delay);
        }
        m.advance(now);
        let reply = Reply::Json {
            status: 200,
            body: json!({"confInfo": {
                "conferenceId": conference_id,
                "title": m.title.clone().unwrap_or_else(|| "Meeting".into()),
                "status": Self::status_code(m.state(now)),
                "creatorId": m.host.clone().unwrap_or_default(),
                "startTime": m.start_time_ms,
                "endTime": 0,
                "scheduleConferenceId": m.schedule_id.clone().unwrap_or_default(),
                "cloudRecordStatus": m.record_status,
                "cloudRecordOwnerUnionId": m.record_owner.clone().filter(|_| m.record_status != 0).unwrap_or_default(),
            }}),
        };
        (reply, None)
    }

    /// `GET …/{id}/cloudRecords/getVideos?unionId=` (QueryCloudRecordVideo).
    pub fn videos(&mut self, conference_id: &str, union_id: &str, request_id: &str) -> Reply {
        self.video_calls += 1;
        let now = self.clock.now();
        let Some(m) = self.meetings.get_mut(conference_id) else {
            return error_msg(
                "roomNotFound",
                Some(404),
                request_id,
                "roomNotFound:conference not found",
            );
        };
        m.advance(now);
        let owner = m.record_owner.as_deref().or(m.host.as_deref());
        if !(m.recorded && m.video) || owner.is_some_and(|o| o != union_id) {
            return error_msg(
                "cloudRecordNotFound",
                Some(400),
                request_id,
                "cloudRecordNotFound:no cloud record found",
            );
        }
        Reply::Json {
            status: 200,
            body: json!({"videoList": [{
                "recordId": format!("rec-{conference_id}"),
                "unionId": union_id,
                "startTime": m.start_time_ms,
                "endTime": unix_ms(),
                "recordType": 0,
                "duration": 1_800_000,
                "fileSize": 104_857_600,
                "mediaId": "media-1",
                "regionId": "cn-hangzhou"
            }]}),
        }
    }

    /// (a recording ran, the auto-record setting started it), as of now.
    pub fn recorded(&mut self, conference_id: &str) -> Option<(bool, bool)> {
        let now = self.clock.now();
        let m = self.meetings.get_mut(conference_id)?;
        m.advance(now);
        Some((m.recorded, m.auto_recorded))
    }

    /// A live change to a meeting's recording (the admin API, tests).
    pub fn recording(&mut self, conference_id: &str, action: RecordingAction) -> bool {
        let now = self.clock.now();
        let Some(m) = self.meetings.get_mut(conference_id) else {
            return false;
        };
        m.advance(now);
        match action {
            RecordingAction::Pause if m.record_status == 1 => m.record_status = 2,
            RecordingAction::Resume if m.record_status == 2 => m.record_status = 1,
            RecordingAction::Stop if matches!(m.record_status, 1 | 2) => m.record_status = 3,
            RecordingAction::End => {
                m.ends_at = Some(now);
                m.advance(now);
            }
            RecordingAction::SilentOnce => m.silent_left = m.silent_left.saturating_add(1),
            RecordingAction::SilentAlways => m.silent_left = u32::MAX,
            RecordingAction::NoVideo => m.video = false,
            RecordingAction::AutoRecordOff => m.auto_record = None,
            RecordingAction::Pause | RecordingAction::Resume | RecordingAction::Stop => {}
        }
        true
    }

    /// `GET /v1.0/conference/videoConferences/scheduleConferences/{id}`.
    pub fn schedule(&self, schedule_id: &str, request_id: &str) -> Reply {
        let Some(conf) = self.schedules.get(schedule_id).map(|s| &s.conference_id) else {
            return error("paramsError", Some(400), request_id);
        };
        let Some(m) = self.meetings.get(conf) else {
            return error("paramsError", Some(400), request_id);
        };
        Reply::Json {
            status: 200,
            body: json!({
                "conferenceList": [{
                    "conferenceId": conf,
                    "title": "Scheduled meeting",
                    "roomCode": "123456789",
                    "status": Self::status_code(m.state(self.clock.now())),
                    "startTime": m.start_time_ms,
                    "endTime": 0
                }],
                "nextToken": "1",
                "totalCount": 1
            }),
        }
    }

    /// `PUT /v1.0/conference/scheduleConferences/settings` (UpdateScheduleConfSettings): the
    /// auto-record block is kept on the scheduled meeting's meeting; other blocks are accepted
    /// and ignored.
    pub fn update_schedule_settings(&mut self, body: &Value, request_id: &str) -> (Reply, Option<Duration>) {
        let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
        let now = self.clock.now();
        let Some(meta) = self.schedules.get_mut(s("scheduleConferenceId")) else {
            return (
                error_msg(
                    "scheduleConferenceIdError",
                    Some(400),
                    request_id,
                    "scheduleConferenceIdError:schedule conference not found",
                ),
                None,
            );
        };
        if let Some(step) = pop(&mut meta.settings_script)
            && let Some(r) = scripted(&step, request_id)
        {
            return (r, step.delay);
        }
        if meta.creator.as_deref().is_some_and(|c| c != s("creatorUnionId")) {
            return (
                error_msg(
                    "creatorUidError",
                    Some(400),
                    request_id,
                    "creatorUidError:the operator is not the creator of the schedule conference",
                ),
                None,
            );
        }
        let block = &body["scheduleConfSettingModel"]["moziConfOpenRecordSetting"];
        let on = block.get("recordAutoStart").and_then(Value::as_i64);
        let works = !meta.auto_record_fails;
        if let Some(m) = self.meetings.get_mut(&meta.conference_id) {
            m.advance(now);
            match on {
                Some(1) => {
                    m.auto_record = Some(AutoSetting { works, set_at: now });
                }
                Some(0) => m.auto_record = None,
                _ => {}
            }
        }
        (
            Reply::Json {
                status: 200,
                body: serde_json::to_value(crate::dingtalk::client::SettingsAnswer { success: true })
                    .unwrap_or_default(),
            },
            None,
        )
    }

    /// `GET /v1.0/conference/scheduleConferences/settings?scheduleConferenceId=`
    /// (QueryScheduleConfSettings): as DingTalk, without the auto-record block.
    pub fn schedule_settings(&self, schedule_id: &str, request_id: &str) -> Reply {
        let Some(meta) = self.schedules.get(schedule_id) else {
            return error("scheduleConferenceIdError", Some(400), request_id);
        };
        Reply::Json {
            status: 200,
            body: json!({"scheduleConfSettingModel": {
                "hostUnionId": meta.creator.clone().unwrap_or_default(),
                "cohostUnionIds": [],
                "lockRoom": 0,
                "muteOnJoin": 0,
                "screenShareForbidden": 0,
            }}),
        }
    }

    pub fn global_delay(&self) -> Option<Duration> {
        self.scenario.delay
    }

    /// The month's calls, reset when the month (of `Asia/Shanghai`, where DingTalk's month
    /// begins) changes.
    fn month_calls(&mut self) -> &mut u64 {
        let month = self
            .now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m")
            .to_string();
        if self.month.0 != month {
            self.month = (month, 0);
        }
        &mut self.month.1
    }

    /// DingTalk's answer once the month's quota is spent.
    pub fn over_quota(&mut self, request_id: &str) -> Option<Reply> {
        let limit = self.scenario.monthly_quota?;
        (*self.month_calls() >= limit).then(|| error(QUOTA_EXHAUSTED, None, request_id))
    }

    /// Count a call as DingTalk does: every answered call, or one that took effect though its
    /// answer never left (a hung start), except refusals for the rate limits and the quota.
    pub fn count_call(&mut self, api: crate::domain::quota::Api, reply: &Reply) {
        let counted = match reply {
            Reply::Json { body, .. } | Reply::Trickle { body, .. } => {
                let code = body.get("code").and_then(Value::as_str).unwrap_or("");
                // The IP ban's page (`"punish":"deny"`) carries no code.
                !code.starts_with("Forbidden.AccessDenied.QpsLimitFor")
                    && code != QUOTA_EXHAUSTED
                    && body.get("punish").is_none()
            }
            Reply::Raw { .. } => true,
            Reply::Hang => true,
            Reply::Drop | Reply::Reset | Reply::Partial => false,
        };
        if counted {
            *self.usage.entry(api).or_default() += 1;
            *self.month_calls() += 1;
        }
    }
}

const QUOTA_EXHAUSTED: &str = crate::domain::outcome::codes::QUOTA_EXHAUSTED;

/// The fake's own wall clock, in epoch milliseconds (DingTalk's time unit); the fake is a stand-in
/// for another machine, so it does not share dingrec's injected clock.
#[allow(clippy::disallowed_methods)]
pub(crate) fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
