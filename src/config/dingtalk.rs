//! `dingtalk`: the app, its credentials, the API's limits and the monthly quota.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppType {
    Internal,
    ThirdParty,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DingTalkSettings {
    pub base_url: String,
    pub app_type: AppType,
    pub app_key: String,
    /// File holding the app secret; else `$CREDENTIALS_DIRECTORY/app_secret`; else `app_secret`
    /// (set it with `DINGREC_DINGTALK__APP_SECRET`, never in the file).
    pub app_secret_file: PathBuf,
    #[serde(skip_serializing)]
    pub app_secret: Option<SecretString>,
    pub corp_id: String,
    pub suite_key: String,
    pub suite_secret_file: PathBuf,
    #[serde(skip_serializing)]
    pub suite_secret: Option<SecretString>,
    pub suite_ticket_file: PathBuf,
    #[serde(skip_serializing)]
    pub suite_ticket: Option<SecretString>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// StartCloudRecord calls per second, all policies together; 0 turns the limit off.
    pub rate_limit: u32,
    /// Refresh a token this long before DingTalk says it expires.
    #[serde(with = "humantime_serde")]
    pub token_refresh_margin: Duration,
    /// Overrides of the retry class of a code: `{ recordStartError: fail }`.
    pub classification: BTreeMap<String, RetryClass>,
    /// The organisation's API calls a month (DingTalk's standard edition: 5,000); 0: unlimited.
    pub monthly_quota: u32,
    /// The events DingTalk pushes to the app a month (webhook and Stream together; standard
    /// edition: 3,000), a quota of their own; 0: unlimited.
    pub monthly_event_quota: u32,
    /// Where DingTalk's month begins.
    pub quota_timezone: String,
    /// The share of the quota kept for starts and start checks: above `1 - quota_reserve` of it,
    /// watch checks and video look-ups stop. A fraction: 0.1 is 10 %.
    pub quota_reserve: f64,
    /// Stream mode: DingTalk's meeting events (docs/events.md).
    pub stream: StreamConfig,
}

/// `dingtalk.stream`: the connection on which DingTalk pushes meeting events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// Open the connection (`match` policies need it).
    pub enabled: bool,
    /// The longest wait between reconnection attempts (jittered backoff from 1 s).
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Down this long: `/readyz` says not ready and the `stream_down` alert is raised.
    #[serde(with = "humantime_serde")]
    pub alert_after: Duration,
    /// A WebSocket ping this often; nothing heard for two periods means the socket is dead.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            reconnect_max: Duration::from_secs(60),
            alert_after: Duration::from_secs(300),
            keepalive: Duration::from_secs(30),
        }
    }
}

impl StreamConfig {
    pub(super) fn validate(&self, app_type: AppType) -> Result<(), ConfigError> {
        let between = |key: &str, v: Duration, lo: Duration, hi: Duration| {
            if v < lo || v > hi {
                Err(ConfigError::Invalid(format!(
                    "dingtalk.stream.{key} must be from {} to {} (it is {})",
                    humantime::format_duration(lo),
                    humantime::format_duration(hi),
                    humantime::format_duration(v)
                )))
            } else {
                Ok(())
            }
        };
        between(
            "reconnect_max",
            self.reconnect_max,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )?;
        between(
            "alert_after",
            self.alert_after,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?;
        between(
            "keepalive",
            self.keepalive,
            Duration::from_secs(1),
            Duration::from_secs(600),
        )?;
        if self.enabled && app_type != AppType::Internal {
            return Err(ConfigError::Invalid(
                "dingtalk.stream.enabled needs an internal app (dingtalk.app_type: internal): Stream mode opens with the app's key and secret".into(),
            ));
        }
        Ok(())
    }
}

/// Two optional secrets are the same value (compared without printing them).
pub(super) fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
    a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
}

/// Secrets compare by value (a changed secret file is a changed setting), without printing them.
impl PartialEq for DingTalkSettings {
    fn eq(&self, other: &Self) -> bool {
        let secret = same_secret;
        secret(&self.app_secret, &other.app_secret)
            && secret(&self.suite_secret, &other.suite_secret)
            && secret(&self.suite_ticket, &other.suite_ticket)
            && serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

impl fmt::Debug for DingTalkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<SecretString>| if s.is_some() { "[REDACTED]" } else { "None" };
        f.debug_struct("DingTalkSettings")
            .field("base_url", &self.base_url)
            .field("app_type", &self.app_type)
            .field("app_key", &self.app_key)
            .field("app_secret_file", &self.app_secret_file)
            .field("app_secret", &redact(&self.app_secret))
            .field("corp_id", &self.corp_id)
            .field("suite_key", &self.suite_key)
            .field("suite_secret_file", &self.suite_secret_file)
            .field("suite_secret", &redact(&self.suite_secret))
            .field("suite_ticket_file", &self.suite_ticket_file)
            .field("suite_ticket", &redact(&self.suite_ticket))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("rate_limit", &self.rate_limit)
            .field("token_refresh_margin", &self.token_refresh_margin)
            .field("classification", &self.classification)
            .field("monthly_quota", &self.monthly_quota)
            .field("monthly_event_quota", &self.monthly_event_quota)
            .field("quota_timezone", &self.quota_timezone)
            .field("quota_reserve", &self.quota_reserve)
            .field("stream", &self.stream)
            .finish()
    }
}

/// The quota's settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// 0: unlimited.
    pub limit: u32,
    /// Pushed events a month; 0: unlimited.
    pub event_limit: u32,
    pub timezone: chrono_tz::Tz,
    pub reserve: f64,
}

/// A month of 10 million calls is far above any DingTalk edition; more is a typo.
pub(super) const MAX_MONTHLY_QUOTA: u32 = 10_000_000;

impl DingTalkSettings {
    /// `monthly_quota`, `quota_timezone` and `quota_reserve`, checked.
    pub fn quota(&self) -> Result<Quota, ConfigError> {
        let bad = |key: &str, why: String| ConfigError::Invalid(format!("dingtalk.{key}: {why}"));
        if self.monthly_quota > MAX_MONTHLY_QUOTA {
            return Err(bad(
                "monthly_quota",
                format!(
                    "{} is more than {MAX_MONTHLY_QUOTA} (0 turns the budget off)",
                    self.monthly_quota
                ),
            ));
        }
        if self.monthly_event_quota > MAX_MONTHLY_QUOTA {
            return Err(bad(
                "monthly_event_quota",
                format!(
                    "{} is more than {MAX_MONTHLY_QUOTA} (0 turns the event budget off)",
                    self.monthly_event_quota
                ),
            ));
        }
        if !(0.0..=0.5).contains(&self.quota_reserve) {
            return Err(bad(
                "quota_reserve",
                format!(
                    "{} is not a fraction from 0 to 0.5 (0.1 keeps 10 % for starts)",
                    self.quota_reserve
                ),
            ));
        }
        let timezone = crate::domain::Zone::parse(&self.quota_timezone)
            .map_err(|e| bad("quota_timezone", e.message))?
            .tz();
        Ok(Quota {
            limit: self.monthly_quota,
            event_limit: self.monthly_event_quota,
            timezone,
            reserve: self.quota_reserve,
        })
    }
}

impl Default for DingTalkSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.dingtalk.com".into(),
            app_type: AppType::Internal,
            app_key: String::new(),
            app_secret_file: PathBuf::new(),
            app_secret: None,
            corp_id: String::new(),
            suite_key: String::new(),
            suite_secret_file: PathBuf::new(),
            suite_secret: None,
            suite_ticket_file: PathBuf::new(),
            suite_ticket: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            rate_limit: 20,
            token_refresh_margin: Duration::from_secs(200),
            classification: BTreeMap::new(),
            monthly_quota: 5000,
            monthly_event_quota: 3000,
            quota_timezone: "Asia/Shanghai".into(),
            quota_reserve: 0.1,
            stream: StreamConfig::default(),
        }
    }
}
