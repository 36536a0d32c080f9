//! What the fake DingTalk should do: meetings, scheduled meetings, scripted answers, throttling,
//! token lifetime. Read from a YAML file (`--scenario`) or posted to the admin API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How to answer StartCloudRecord for a conferenceId the fake does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownConferences {
    /// DingTalk's answer: 400 `paramsError`.
    #[default]
    ParamsError,
    /// Treat it as a live meeting hosted by whoever asks (benchmarks).
    Live,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `ok`; a DingTalk error code (`systemError`, `roomClosed`, …); or a fault: `hang` (never
    /// answer), `drop` (close without answering), `reset` (TCP RST), `trickle` (1 byte/s),
    /// `partial` (half a body, then close), `html` (200 with an HTML page), `json_array`
    /// (200 with `[1,2]`), `x5` (the IP-ban page), `empty_502`.
    pub answer: String,
    /// The HTTP status for an error code (default: DingTalk's for that code).
    #[serde(default)]
    pub status: Option<u16>,
    /// How many calls get this answer.
    #[serde(default = "one")]
    pub times: u32,
    /// Wait this long before answering.
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingState {
    NotStarted,
    Live,
    Ended,
}

/// A meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeetingSpec {
    pub conference_id: String,
    /// Only this unionId may start recording (none: anyone).
    #[serde(default)]
    pub host_union_id: Option<String>,
    /// The state at load time (default `live`, or `not_started` when `live_after` is set).
    #[serde(default)]
    pub state: Option<MeetingState>,
    /// Goes live this long after the scenario is loaded.
    #[serde(default, with = "humantime_serde")]
    pub live_after: Option<Duration>,
    /// Ends this long after the scenario is loaded.
    #[serde(default, with = "humantime_serde")]
    pub ends_after: Option<Duration>,
    /// Answers to StartCloudRecord, in order, before the meeting's own logic.
    #[serde(default)]
    pub script: Vec<Step>,
    /// Accepted starts (200) that do not record: `once` (the first) or `always`.
    #[serde(default)]
    pub silent: Option<Silent>,
    /// A participant pauses the recording this long after load (if it runs then).
    #[serde(default, with = "humantime_serde")]
    pub pause_after: Option<Duration>,
    /// A participant stops the recording this long after load (if it runs then).
    #[serde(default, with = "humantime_serde")]
    pub stop_after: Option<Duration>,
    /// Someone other than the host already records the meeting (their unionId).
    #[serde(default)]
    pub recording_owner: Option<String>,
    /// A meeting that recorded has a video afterwards (default true).
    #[serde(default = "yes")]
    pub video: bool,
    /// Answers to QueryConferenceInfo, in order, before the meeting's own (`systemError`,
    /// `hang`, …).
    #[serde(default)]
    pub info_script: Vec<Step>,
}

fn yes() -> bool {
    true
}

impl MeetingSpec {
    /// A live meeting anyone may record, with nothing scripted.
    pub fn live(conference_id: &str) -> Self {
        Self {
            conference_id: conference_id.to_owned(),
            host_union_id: None,
            state: None,
            live_after: None,
            ends_after: None,
            script: Vec::new(),
            silent: None,
            pause_after: None,
            stop_after: None,
            recording_owner: None,
            video: true,
            info_script: Vec::new(),
        }
    }
}

/// Which accepted starts silently do not record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Silent {
    Once,
    Always,
}

/// A live change to a meeting's recording (`POST /_fake/recording?conference_id=…&action=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingAction {
    /// A participant pauses the recording.
    Pause,
    /// A participant resumes it.
    Resume,
    /// A participant stops it.
    Stop,
    /// The meeting ends now.
    End,
    /// The next accepted start does not record.
    SilentOnce,
    /// No accepted start records.
    SilentAlways,
    /// The meeting will have no video.
    NoVideo,
    /// Someone turns the scheduled meeting's auto-record setting off in DingTalk.
    AutoRecordOff,
}

impl RecordingAction {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

/// A scheduled (recurring) meeting whose live meeting appears at a set time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub schedule_conference_id: String,
    /// The meeting it turns into (also listed in `meetings` implicitly).
    pub conference_id: String,
    #[serde(default)]
    pub host_union_id: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub live_after: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub ends_after: Option<Duration>,
    #[serde(default)]
    pub script: Vec<Step>,
    /// The series' creator, the only `creatorUnionId` UpdateScheduleConfSettings accepts
    /// (default `host_union_id`; neither: any).
    #[serde(default)]
    pub creator_union_id: Option<String>,
    /// The auto-record setting is accepted but silently does not start the recording.
    #[serde(default)]
    pub auto_record_fails: bool,
    /// Answers to UpdateScheduleConfSettings, in order, before the fake's own logic
    /// (`noPermission`, `systemError`, `hang`, …).
    #[serde(default)]
    pub settings_script: Vec<Step>,
}

/// A whole scenario. Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Token lifetime (`expireIn`); DingTalk's is 7200 s.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Option<Duration>,
    /// Require these credentials (none: any appKey/appSecret gets a token).
    pub app_key: Option<String>,
    pub app_secret: Option<String>,
    pub unknown_conferences: UnknownConferences,
    /// Answer `Forbidden.AccessDenied.QpsLimitForAppkeyAndApi` above this many StartCloudRecord
    /// calls per second.
    pub throttle_above: Option<u32>,
    /// Wait this long before every answer.
    #[serde(with = "humantime_serde")]
    pub delay: Option<Duration>,
    /// Answers for every meeting (after a meeting's own script).
    pub default_script: Vec<Step>,
    pub meetings: Vec<MeetingSpec>,
    pub schedules: Vec<ScheduleSpec>,
    /// Custom group robots (`POST /robot/send`) the fake accepts messages for.
    pub robots: Vec<super::robot::RobotSpec>,
    /// The organisation's API calls a month (a month of `Asia/Shanghai`, by the fake's clock);
    /// past it every call answers 403 `Forbidden.AccessDenied.ApiCountLimitForOrg`.
    pub monthly_quota: Option<u64>,
}

impl Scenario {
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }
}
