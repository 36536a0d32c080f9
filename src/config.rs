//! The settings tree (`docs/configuration.md` lists every key) and its one load function.
//!
//! Layers, later wins: compiled-in defaults, then the YAML file, then `DINGREC_…` environment
//! variables (`__` for nesting: `DINGREC_DINGTALK__APP_KEY`). Unknown keys are errors. Durations are
//! humantime strings (`30s`, `15m`; note that humantime reads `M` as months). Secrets are read from
//! a file, then `$CREDENTIALS_DIRECTORY`, then the environment, and are typed so that they never
//! print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment2::Figment;
use figment2::providers::{Env, Serialized};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::outcome::RetryClass;
use crate::domain::{AlertEvent, Layout, PolicyDefaults, RetryPolicy, Verify, WindowPosition, Zone};

/// Everything `dingrec` reads from config.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub dingtalk: DingTalkSettings,
    pub http: HttpSettings,
    pub policies: PolicySources,
    pub defaults: DefaultSettings,
    pub scheduler: SchedulerSettings,
    pub retention: RetentionSettings,
    pub log: LogSettings,
    pub alerts: AlertSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Full,
    Normal,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// SQLite file, created if missing (WAL mode). Unused with `url`.
    pub path: PathBuf,
    /// `postgres://user@host[:port]/dbname[?sslmode=…]`: PostgreSQL instead of the SQLite file, for
    /// several daemons on one database (`docs/database.md`). Empty: SQLite at `path`. Never holds
    /// the password (`password_file`).
    pub url: String,
    /// File holding the PostgreSQL password; else `$CREDENTIALS_DIRECTORY/database_password`; else
    /// `DINGREC_DATABASE__PASSWORD`; else none (peer or certificate authentication).
    pub password_file: PathBuf,
    #[serde(skip_serializing)]
    pub password: Option<SecretString>,
    /// PostgreSQL connections this process keeps at most (1 to 64).
    pub max_connections: u32,
    /// How long a writer waits for a lock held by another process (SQLite `busy_timeout`).
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// `full` (default): every committed attempt survives a power cut. `normal` is faster but
    /// may lose the last commits on power loss. See README "Design notes".
    pub synchronous: Synchronous,
}

/// Where the SQLite database is when the configuration names none.
pub const DEFAULT_DATABASE_PATH: &str = "/var/lib/dingrec/dingrec.db";

/// Bounds of `database.max_connections`.
pub const MAX_DATABASE_CONNECTIONS: u32 = 64;

/// Which engine a configuration selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseEngine {
    Sqlite,
    Postgres,
}

impl DatabaseEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseEngine::Sqlite => "sqlite",
            DatabaseEngine::Postgres => "postgres",
        }
    }
}

impl DatabaseSettings {
    pub fn engine(&self) -> DatabaseEngine {
        if self.url.is_empty() {
            DatabaseEngine::Sqlite
        } else {
            DatabaseEngine::Postgres
        }
    }

    /// Where the database is, for messages: the SQLite file, or the URL (which holds no password).
    pub fn location(&self) -> String {
        match self.engine() {
            DatabaseEngine::Sqlite => self.path.display().to_string(),
            DatabaseEngine::Postgres => self.url.clone(),
        }
    }

    /// `url`'s checks: a PostgreSQL URL without a password, and no `path` beside it.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 || self.max_connections > MAX_DATABASE_CONNECTIONS {
            return Err(ConfigError::Invalid(format!(
                "database.max_connections must be between 1 and {MAX_DATABASE_CONNECTIONS} (it is {})",
                self.max_connections
            )));
        }
        if self.url.is_empty() {
            return Ok(());
        }
        let bad = |why: &str| ConfigError::Invalid(format!("database.url: {why}"));
        if self.path != Path::new(DEFAULT_DATABASE_PATH) {
            return Err(bad(
                "database.url (PostgreSQL) and database.path (SQLite) exclude each other: keep one",
            ));
        }
        let parsed = reqwest::Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(bad("must begin with postgres:// (SQLite is database.path)"));
        }
        if parsed.password().is_some()
            || parsed
                .query_pairs()
                .any(|(k, _)| k.eq_ignore_ascii_case("password"))
        {
            return Err(bad(
                "holds a password: the URL is logged and shown; put the password in database.password_file or $CREDENTIALS_DIRECTORY/database_password",
            ));
        }
        let options = self.postgres_options()?;
        let host = options.get_host();
        let local = options.get_socket().is_some()
            || host.starts_with('/')
            || host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        use sqlx::postgres::PgSslMode;
        if !local
            && !matches!(
                options.get_ssl_mode(),
                PgSslMode::VerifyFull | PgSslMode::VerifyCa
            )
        {
            return Err(bad(&format!(
                "the server {host} is not on this machine, and sslmode is {} (`prefer` when not given): \
                 add sslmode=verify-full (or verify-ca) to the URL, with sslrootcert=FILE when the \
                 server's certificate is signed by a CA of your own; anything less sends the password \
                 in clear or to whoever answers",
                ssl_mode_name(options.get_ssl_mode())
            )));
        }
        Ok(())
    }

    /// The PostgreSQL connection options: the URL's, with the password resolved apart, and
    /// bounds on what the server may hold: a statement runs at most a minute, a transaction left
    /// idle is ended after a minute, and the server probes an idle connection's peer (TCP
    /// keepalives) so a vanished daemon's connection and locks go within a minute or two.
    pub fn postgres_options(&self) -> Result<sqlx::postgres::PgConnectOptions, ConfigError> {
        let options: sqlx::postgres::PgConnectOptions = self
            .url
            .parse()
            .map_err(|e: sqlx::Error| ConfigError::Invalid(format!("database.url: {e}")))?;
        let options = options.options([
            ("statement_timeout", "60s"),
            ("idle_in_transaction_session_timeout", "60s"),
            ("tcp_keepalives_idle", "30"),
            ("tcp_keepalives_interval", "10"),
            ("tcp_keepalives_count", "3"),
        ]);
        Ok(match &self.password {
            Some(p) => options.password(p.expose_secret()),
            None => options,
        })
    }
}

fn ssl_mode_name(mode: sqlx::postgres::PgSslMode) -> &'static str {
    use sqlx::postgres::PgSslMode;
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

impl PartialEq for DatabaseSettings {
    fn eq(&self, other: &Self) -> bool {
        same_secret(&self.password, &other.password)
            && serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("path", &self.path)
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("max_connections", &self.max_connections)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_DATABASE_PATH),
            url: String::new(),
            password_file: PathBuf::new(),
            password: None,
            max_connections: 5,
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Full,
        }
    }
}

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
    /// Where DingTalk's month begins.
    pub quota_timezone: String,
    /// The share of the quota kept for starts and start checks: above `1 - quota_reserve` of it,
    /// watch checks and video look-ups stop. A fraction: 0.1 is 10 %.
    pub quota_reserve: f64,
}

/// Two optional secrets are the same value (compared without printing them).
fn same_secret(a: &Option<SecretString>, b: &Option<SecretString>) -> bool {
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
            .field("quota_timezone", &self.quota_timezone)
            .field("quota_reserve", &self.quota_reserve)
            .finish()
    }
}

/// The quota's settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// 0: unlimited.
    pub limit: u32,
    pub timezone: chrono_tz::Tz,
    pub reserve: f64,
}

/// A month of 10 million calls is far above any DingTalk edition; more is a typo.
const MAX_MONTHLY_QUOTA: u32 = 10_000_000;

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
            quota_timezone: "Asia/Shanghai".into(),
            quota_reserve: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Health and metrics; loopback by default.
    pub listen: SocketAddr,
    /// A client must send its whole request header within this long, else its connection is
    /// closed (a slow or stalled client holds nothing for longer).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Connections open at once. At the cap, the oldest connection that has not sent a complete
    /// request (else the oldest idle one) is closed to make room for a new one.
    pub max_connections: usize,
}

/// The most HTTP connections `http.max_connections` may allow.
pub const MAX_HTTP_CONNECTIONS: usize = 4096;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySources {
    /// Applied at start and on SIGHUP; empty = the database only.
    pub paths: Vec<PathBuf>,
    /// With `paths`, disable policies that are in none of the files (like `apply --prune`).
    pub prune: bool,
}

impl Default for PolicySources {
    fn default() -> Self {
        Self {
            paths: vec![PathBuf::from("/etc/dingrec/policies.d")],
            prune: true,
        }
    }
}

/// Policy fields that can be set once for all policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultSettings {
    pub timezone: String,
    pub layout: String,
    pub small_window_position: String,
    #[serde(with = "humantime_serde")]
    pub start_offset: Duration,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub retry: RetryPolicy,
    /// `verify` for every policy: the settings, or `false` (off).
    #[serde(with = "verify_switch")]
    pub verify: Option<Verify>,
}

/// `defaults.verify`: `false`, `true` (the built-in settings), or the settings.
mod verify_switch {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::domain::Verify;

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Switch(bool),
        Settings(Verify),
    }

    pub fn serialize<S: Serializer>(v: &Option<Verify>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => Repr::Settings(*v).serialize(s),
            None => Repr::Switch(false).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Verify>, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Switch(false) => None,
            Repr::Switch(true) => Some(Verify::default()),
            Repr::Settings(v) => Some(v),
        })
    }
}

impl Default for DefaultSettings {
    fn default() -> Self {
        Self {
            timezone: "Asia/Shanghai".into(),
            layout: "speech".into(),
            small_window_position: "relative_right".into(),
            start_offset: Duration::ZERO,
            window: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            verify: Some(Verify::default()),
        }
    }
}

impl DefaultSettings {
    pub fn typed(&self) -> Result<PolicyDefaults, ConfigError> {
        let field = |key: &str, msg: String| ConfigError::Invalid(format!("defaults.{key}: {msg}"));
        Ok(PolicyDefaults {
            timezone: Zone::parse(&self.timezone).map_err(|e| field("timezone", e.message))?,
            layout: Layout::parse(&self.layout).map_err(|e| field("layout", e.message))?,
            small_window_position: WindowPosition::parse(&self.small_window_position)
                .map_err(|e| field("small_window_position", e.message))?,
            start_offset: self.start_offset,
            window: {
                crate::domain::policy::check_timing(self.start_offset, self.window)
                    .map_err(|(key, e)| field(key, e.message))?;
                self.window
            },
            retry: {
                self.retry
                    .check()
                    .map_err(|e| ConfigError::Invalid(format!("defaults.{}", e)))?;
                self.retry
            },
            verify: {
                if let Some(v) = &self.verify {
                    v.check()
                        .map_err(|e| ConfigError::Invalid(format!("defaults.{}", e)))?;
                }
                self.verify
            },
            // `Settings::policy_defaults` adds `alerts.destinations`.
            alert_destinations: Default::default(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// StartCloudRecord calls in flight at once.
    pub max_in_flight: usize,
    /// On SIGTERM, how long in-flight calls may take to finish before the daemon exits anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How far ahead occurrences are written as rows (at least 24 h; the next one always).
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// How long a claimed attempt or check stays this daemon's without being renewed; renewed a
    /// third of it before, while the call is in flight (`docs/database.md`, leases).
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

/// `scheduler.lease`'s bounds: renewed every third of it, a lease shorter than 5 s would be
/// lost to a slow disk; one longer than 10 min would leave a dead daemon's meetings waiting past
/// most windows.
pub const MIN_LEASE: Duration = Duration::from_secs(5);
pub const MAX_LEASE: Duration = Duration::from_secs(600);
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            shutdown_timeout: Duration::from_secs(15),
            horizon: Duration::from_secs(24 * 3600),
            lease: DEFAULT_LEASE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Older occurrences and their attempts are pruned daily.
    #[serde(with = "humantime_serde")]
    pub attempts: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            attempts: Duration::from_secs(400 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, `dingrec=debug,info`.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `alerts`: where dingrec sends word of what went wrong (docs/alerts.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// By name: a DingTalk group robot or a webhook.
    pub destinations: BTreeMap<String, Destination>,
    /// Where alerts go when a policy names none (`alert:` in the policy).
    pub default: Vec<String>,
    /// The events that are sent at all.
    pub events: Vec<AlertEvent>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            destinations: BTreeMap::new(),
            default: Vec::new(),
            events: AlertEvent::ALL
                .iter()
                .copied()
                .filter(|e| *e != AlertEvent::Test)
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationType {
    /// A DingTalk group's custom robot (`POST /robot/send?access_token=…`).
    DingtalkRobot,
    /// A JSON POST signed as Standard Webhooks does.
    Webhook,
}

/// The robot's endpoint when `url` is not set.
pub const ROBOT_URL: &str = "https://oapi.dingtalk.com/robot/send";

/// Most `at_mobiles` one robot destination may name.
pub const MAX_AT_MOBILES: usize = 20;

/// One alert destination. Its secrets are read from files (or `$CREDENTIALS_DIRECTORY/<name>_token`
/// and `<name>_secret`) and never print.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(rename = "type")]
    pub kind: DestinationType,
    /// The robot's endpoint (default [`ROBOT_URL`]) or the webhook's URL; https, or http to
    /// loopback only.
    #[serde(default)]
    pub url: String,
    /// The robot's `access_token`.
    #[serde(default)]
    pub access_token_file: PathBuf,
    #[serde(skip)]
    pub access_token: Option<SecretString>,
    /// The robot's `SEC…` signing secret (optional), or the webhook's secret (required).
    #[serde(default)]
    pub secret_file: PathBuf,
    #[serde(skip)]
    pub secret: Option<SecretString>,
    /// The robot @-mentions these phone numbers in every alert.
    #[serde(default)]
    pub at_mobiles: Vec<String>,
}

impl Destination {
    /// The URL to post to: `url`, or the robot's default.
    pub fn endpoint(&self) -> &str {
        match (self.kind, self.url.is_empty()) {
            (DestinationType::DingtalkRobot, true) => ROBOT_URL,
            _ => &self.url,
        }
    }
}

impl PartialEq for Destination {
    fn eq(&self, other: &Self) -> bool {
        let secret = |a: &Option<SecretString>, b: &Option<SecretString>| {
            a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
        };
        secret(&self.access_token, &other.access_token)
            && secret(&self.secret, &other.secret)
            && serde_json::to_value(self).ok() == serde_json::to_value(other).ok()
    }
}

impl fmt::Debug for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<SecretString>| if s.is_some() { "[REDACTED]" } else { "None" };
        f.debug_struct("Destination")
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("access_token_file", &self.access_token_file)
            .field("access_token", &redact(&self.access_token))
            .field("secret_file", &self.secret_file)
            .field("secret", &redact(&self.secret))
            .field("at_mobiles", &self.at_mobiles)
            .finish()
    }
}

impl AlertSettings {
    /// Names, URLs, secrets and routes that serde cannot check.
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: String, why: String| ConfigError::Invalid(format!("{key}: {why}"));
        for (name, d) in &self.destinations {
            let key = format!("alerts.destinations.{name}");
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    key,
                    "a destination name is 1 to 64 letters, digits, '-' or '_'".into(),
                ));
            }
            check_url(&format!("{key}.url"), d.endpoint())?;
            match d.kind {
                DestinationType::DingtalkRobot => {
                    if d.at_mobiles.len() > MAX_AT_MOBILES {
                        return Err(bad(
                            format!("{key}.at_mobiles"),
                            format!("{} numbers; at most {MAX_AT_MOBILES}", d.at_mobiles.len()),
                        ));
                    }
                    if let Some((i, m)) = d.at_mobiles.iter().enumerate().find(|(_, m)| {
                        m.is_empty()
                            || m.len() > 20
                            || !m.chars().all(|c| c.is_ascii_digit() || c == '+' || c == '-')
                    }) {
                        return Err(bad(
                            format!("{key}.at_mobiles[{i}]"),
                            format!("'{m}' is not a phone number (digits, '+' and '-')"),
                        ));
                    }
                }
                DestinationType::Webhook => {
                    if d.url.is_empty() {
                        return Err(bad(format!("{key}.url"), "a webhook needs its url".into()));
                    }
                    if !d.access_token_file.as_os_str().is_empty() || !d.at_mobiles.is_empty() {
                        return Err(bad(
                            key,
                            "access_token_file and at_mobiles are for dingtalk_robot destinations".into(),
                        ));
                    }
                }
            }
        }
        for (i, name) in self.default.iter().enumerate() {
            if !self.destinations.contains_key(name) {
                let hint = crate::domain::did_you_mean(name, self.destinations.keys().map(String::as_str))
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                return Err(bad(
                    format!("alerts.default[{i}]"),
                    format!("'{name}' is not one of alerts.destinations{hint}"),
                ));
            }
        }
        Ok(())
    }

    /// The secrets each destination needs, for what sends alerts (the daemon, `alerts test`):
    /// other commands run outside the unit, without `$CREDENTIALS_DIRECTORY`, and need none.
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        for (name, d) in &self.destinations {
            let missing = match d.kind {
                DestinationType::DingtalkRobot if d.access_token.is_none() => Some(format!(
                    "the robot's access token is missing: set access_token_file, or put it in $CREDENTIALS_DIRECTORY/{name}_token"
                )),
                DestinationType::Webhook if d.secret.is_none() => Some(format!(
                    "the webhook's signing secret is missing: set secret_file, or put it in $CREDENTIALS_DIRECTORY/{name}_secret"
                )),
                // The Standard Webhooks form: `whsec_` and the key in base64. A key that does not
                // decode would sign with the text itself, which no receiver checks against.
                DestinationType::Webhook
                    if d.secret.as_ref().is_some_and(|s| {
                        s.expose_secret().strip_prefix("whsec_").is_some_and(|b| {
                            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).is_err()
                        })
                    }) =>
                {
                    Some(
                        "the webhook's secret begins with whsec_ but the rest is not base64 (the Standard \
                         Webhooks form is whsec_ and the key in base64): copy it again whole"
                            .to_owned(),
                    )
                }
                _ => None,
            };
            if let Some(why) = missing {
                return Err(ConfigError::Invalid(format!("alerts.destinations.{name}: {why}")));
            }
        }
        Ok(())
    }

    fn resolve_secrets(&mut self, credentials_dir: &Option<PathBuf>) -> Result<(), ConfigError> {
        for (name, d) in &mut self.destinations {
            if d.kind == DestinationType::DingtalkRobot {
                d.access_token = read_secret(
                    &d.access_token_file,
                    credentials_dir,
                    &format!("{name}_token"),
                    None,
                )?;
            }
            d.secret = read_secret(&d.secret_file, credentials_dir, &format!("{name}_secret"), None)?;
        }
        Ok(())
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
}

/// Which config file to read: `--config`, else `$DINGREC_CONFIG`, else `./config.yaml`, else
/// `/etc/dingrec/config.yaml`; `None` when there is none (built-in defaults then).
pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os("DINGREC_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    ["config.yaml", "/etc/dingrec/config.yaml"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The keys whose value differs between `old` and `new`, by their dotted name
/// (`dingtalk.rate_limit`); a secret is named when it changed, never shown.
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null), out);
                }
            }
            _ if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let (a, b) = (serde_json::to_value(old), serde_json::to_value(new));
    if let (Ok(a), Ok(b)) = (a, b) {
        walk("", &a, &b, &mut out);
    }
    let secrets = [
        (
            "dingtalk.app_secret",
            &old.dingtalk.app_secret,
            &new.dingtalk.app_secret,
        ),
        (
            "dingtalk.suite_secret",
            &old.dingtalk.suite_secret,
            &new.dingtalk.suite_secret,
        ),
        (
            "dingtalk.suite_ticket",
            &old.dingtalk.suite_ticket,
            &new.dingtalk.suite_ticket,
        ),
    ];
    let same = |a: &Option<SecretString>, b: &Option<SecretString>| {
        a.as_ref().map(ExposeSecret::expose_secret) == b.as_ref().map(ExposeSecret::expose_secret)
    };
    for (name, a, b) in secrets {
        if !same(a, b) {
            out.push(name.to_owned());
        }
    }
    for (name, a) in &old.alerts.destinations {
        if let Some(b) = new.alerts.destinations.get(name) {
            if !same(&a.access_token, &b.access_token) {
                out.push(format!("alerts.destinations.{name}.access_token"));
            }
            if !same(&a.secret, &b.secret) {
                out.push(format!("alerts.destinations.{name}.secret"));
            }
        }
    }
    out
}

/// The settings a command runs with: the file [`locate`] finds (a file named with `--config` must
/// exist), loaded with [`Settings::load`]. Returns the file's path too, for reloads.
pub fn load_settings(explicit: Option<&Path>) -> Result<(Settings, Option<PathBuf>), ConfigError> {
    let file = locate(explicit);
    if let Some(f) = &file
        && explicit.is_some()
        && !f.exists()
    {
        return Err(ConfigError::Missing(f.clone()));
    }
    Ok((Settings::load(file.as_deref())?, file))
}

impl Settings {
    /// Load defaults, then `file` (if any), then the environment (`DINGREC_…`, `__` for nesting);
    /// resolve secrets; validate. An error names the key and where its value came from: the file,
    /// or the environment variable by its full name.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            // An empty or comment-only file means "all defaults".
            if text
                .lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            {
                let value: serde_json::Value = serde_saphyr::from_str(&text)
                    .map_err(|e| ConfigError::Load(format!("{}: {}", path.display(), e.render())))?;
                refuse_written_secrets(path, &text, &value)?;
                figment = figment.merge(Serialized::defaults(value));
            }
        }
        // `DINGREC_CONFIG` names the file and is not a key. Secrets are read raw by
        // `resolve_secrets`: figment would take `123456` for a number and `"a b"` for `a b`.
        let mut ignored = vec!["CONFIG"];
        ignored.extend(SECRET_KEYS.iter().map(|(key, _)| *key));
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&ignored));
        let mut settings: Settings = figment.extract().map_err(|e| {
            let msg: Vec<String> = e.into_iter().map(|err| describe(&err, file)).collect();
            ConfigError::Load(msg.join("\n"))
        })?;
        settings.resolve_secrets(&std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from))?;
        settings.validate()?;
        Ok(settings)
    }

    fn resolve_secrets(&mut self, credentials_dir: &Option<PathBuf>) -> Result<(), ConfigError> {
        let d = &mut self.dingtalk;
        d.app_secret = read_secret(
            &d.app_secret_file,
            credentials_dir,
            "app_secret",
            d.app_secret
                .take()
                .or_else(|| secret_from_env("dingtalk.app_secret")),
        )?;
        d.suite_secret = read_secret(
            &d.suite_secret_file,
            credentials_dir,
            "suite_secret",
            d.suite_secret
                .take()
                .or_else(|| secret_from_env("dingtalk.suite_secret")),
        )?;
        d.suite_ticket = read_secret(
            &d.suite_ticket_file,
            credentials_dir,
            "suite_ticket",
            d.suite_ticket
                .take()
                .or_else(|| secret_from_env("dingtalk.suite_ticket")),
        )?;
        let db = &mut self.database;
        db.password = read_secret(
            &db.password_file,
            credentials_dir,
            "database_password",
            db.password
                .take()
                .or_else(|| secret_from_env("database.password")),
        )?;
        self.alerts.resolve_secrets(credentials_dir)
    }

    /// The policy defaults (`defaults`), with the alert destinations a policy may name.
    pub fn policy_defaults(&self) -> Result<PolicyDefaults, ConfigError> {
        let mut d = self.defaults.typed()?;
        d.alert_destinations = self.alerts.destinations.keys().cloned().collect();
        Ok(d)
    }

    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_base_url(&self.dingtalk.base_url)?;
        self.database.validate()?;
        self.alerts.validate()?;
        self.defaults.typed()?;
        if self.dingtalk.request_timeout.is_zero() || self.dingtalk.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "dingtalk.connect_timeout and dingtalk.request_timeout must be more than 0".into(),
            ));
        }
        self.dingtalk.quota()?;
        if self.http.header_timeout.is_zero() || self.http.header_timeout > Duration::from_secs(300) {
            return Err(ConfigError::Invalid(
                "http.header_timeout must be more than 0 and at most 5m".into(),
            ));
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.http.max_connections) {
            return Err(ConfigError::Invalid(format!(
                "http.max_connections must be between 1 and {MAX_HTTP_CONNECTIONS} (it is {})",
                self.http.max_connections
            )));
        }
        if self.scheduler.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.max_in_flight must be at least 1".into(),
            ));
        }
        if self.scheduler.horizon < Duration::from_secs(24 * 3600) {
            return Err(ConfigError::Invalid(
                "scheduler.horizon must be at least 24h".into(),
            ));
        }
        if !(MIN_LEASE..=MAX_LEASE).contains(&self.scheduler.lease) {
            return Err(ConfigError::Invalid(format!(
                "scheduler.lease must be between {} and {} (it is {})",
                humantime::format_duration(MIN_LEASE),
                humantime::format_duration(MAX_LEASE),
                humantime::format_duration(self.scheduler.lease)
            )));
        }
        Ok(())
    }

    /// The credentials the token call needs, or what is missing.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let d = &self.dingtalk;
        let missing = |what: &str| {
            ConfigError::Invalid(format!(
                "dingtalk: {what} is not set (see the 'dingtalk' keys in config.yaml)"
            ))
        };
        match d.app_type {
            AppType::Internal => {
                if d.app_key.is_empty() {
                    return Err(missing("app_key"));
                }
                Ok(Credentials::Internal {
                    app_key: d.app_key.clone(),
                    app_secret: d.app_secret.clone().ok_or_else(|| missing("the app secret"))?,
                })
            }
            AppType::ThirdParty => {
                if d.corp_id.is_empty() {
                    return Err(missing("corp_id"));
                }
                if d.suite_key.is_empty() {
                    return Err(missing("suite_key"));
                }
                Ok(Credentials::ThirdParty {
                    corp_id: d.corp_id.clone(),
                    suite_key: d.suite_key.clone(),
                    suite_secret: d
                        .suite_secret
                        .clone()
                        .ok_or_else(|| missing("the suite secret"))?,
                    suite_ticket: d
                        .suite_ticket
                        .clone()
                        .ok_or_else(|| missing("the suite ticket"))?,
                })
            }
        }
    }
}

/// Environment variables that set keys start with this (`DINGREC_DINGTALK__APP_KEY`).
const ENV_PREFIX: &str = "DINGREC_";

/// One extraction error in words: `config key 'dingtalk.rate_limit': invalid type … (from the
/// environment: DINGREC_DINGTALK__RATE_LIMIT)`.
fn describe(err: &figment2::Error, file: Option<&Path>) -> String {
    let mut path = err.path.clone();
    if let figment2::error::Kind::UnknownField(name, _) = &err.kind
        && path.last() != Some(name)
    {
        path.push(name.clone());
    }
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let source = if from_env {
        format!(
            " (from the environment: {ENV_PREFIX}{})",
            path.iter()
                .map(|p| p.to_ascii_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        )
    } else {
        file.map(|p| format!(" (in {})", p.display())).unwrap_or_default()
    };
    if err.path.is_empty() {
        format!("config: {}{source}", err.kind)
    } else {
        format!("config key '{}': {}{source}", err.path.join("."), err.kind)
    }
}

/// The token call's inputs. `Debug` shows no secret.
#[derive(Clone)]
pub enum Credentials {
    Internal {
        app_key: String,
        app_secret: SecretString,
    },
    ThirdParty {
        corp_id: String,
        suite_key: String,
        suite_secret: SecretString,
        suite_ticket: SecretString,
    },
}

impl Credentials {
    /// The app's name in the database: the row its access token and its send slots are kept
    /// under (`app_key`, or `corp_id/suite_key` for a third-party app).
    pub fn app_name(&self) -> String {
        match self {
            Credentials::Internal { app_key, .. } => app_key.clone(),
            Credentials::ThirdParty {
                corp_id, suite_key, ..
            } => format!("{corp_id}/{suite_key}"),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Internal { app_key, .. } => f
                .debug_struct("Internal")
                .field("app_key", app_key)
                .field("app_secret", &"[REDACTED]")
                .finish(),
            Credentials::ThirdParty {
                corp_id, suite_key, ..
            } => f
                .debug_struct("ThirdParty")
                .field("corp_id", corp_id)
                .field("suite_key", suite_key)
                .field("suite_secret", &"[REDACTED]")
                .field("suite_ticket", &"[REDACTED]")
                .finish(),
        }
    }
}

/// The secret keys (dotted) that are never read from config.yaml, and the secure ways to give
/// each: a file, a systemd credential, the environment.
const SECRET_KEYS: [(&str, &str); 4] = [
    (
        "dingtalk.app_secret",
        "dingtalk.app_secret_file, $CREDENTIALS_DIRECTORY/app_secret",
    ),
    (
        "dingtalk.suite_secret",
        "dingtalk.suite_secret_file, $CREDENTIALS_DIRECTORY/suite_secret",
    ),
    (
        "dingtalk.suite_ticket",
        "dingtalk.suite_ticket_file, $CREDENTIALS_DIRECTORY/suite_ticket",
    ),
    (
        "database.password",
        "database.password_file, $CREDENTIALS_DIRECTORY/database_password",
    ),
];

/// The environment variable of a secret key (`dingtalk.app_secret` →
/// `DINGREC_DINGTALK__APP_SECRET`).
fn secret_env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// A secret from its environment variable, exactly as written: digits stay digits, quotes and
/// spaces are part of it.
fn secret_from_env(key: &str) -> Option<SecretString> {
    std::env::var(secret_env_name(key)).ok().map(SecretString::from)
}

/// A secret written into config.yaml is refused, naming its line and the secure ways: the file
/// is world-readable more often than not, and goes into backups and version control.
fn refuse_written_secrets(path: &Path, text: &str, value: &serde_json::Value) -> Result<(), ConfigError> {
    for (key, ways) in SECRET_KEYS {
        let Some((section, field)) = key.split_once('.') else {
            continue;
        };
        if value.get(section).and_then(|s| s.get(field)).is_none() {
            continue;
        }
        // The key's line: the first `field:` after the section's own line.
        let lines: Vec<&str> = text.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                l.trim_end()
                    .strip_prefix(section)
                    .is_some_and(|r| r.trim_start().starts_with(':'))
            })
            .unwrap_or(0);
        let (line, column) = lines
            .iter()
            .enumerate()
            .skip(start)
            .find_map(|(i, l)| {
                let t = l.trim_start();
                let rest = t.strip_prefix(field)?;
                rest.trim_start()
                    .starts_with(':')
                    .then(|| (i + 1, l.len() - t.len() + 1))
            })
            .unwrap_or((1, 1));
        return Err(ConfigError::Invalid(format!(
            "{}:{line}:{column}: {key}: secrets are not read from the config file; use {ways} or \
             the environment variable {} (see docs/configuration.md#secrets)",
            path.display(),
            secret_env_name(key)
        )));
    }
    Ok(())
}

fn read_secret(
    file: &Path,
    credentials_dir: &Option<PathBuf>,
    name: &str,
    from_env: Option<SecretString>,
) -> Result<Option<SecretString>, ConfigError> {
    let read = |path: &Path| -> Result<SecretString, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned()))
    };
    if !file.as_os_str().is_empty() {
        return read(file).map(Some);
    }
    if let Some(dir) = credentials_dir {
        let p = dir.join(name);
        if p.exists() {
            return read(&p).map(Some);
        }
    }
    Ok(from_env.filter(|s| !s.expose_secret().is_empty()))
}

/// HTTPS always; plain HTTP only to a loopback address (the fake DingTalk, tests, the demo).
pub fn check_base_url(url: &str) -> Result<(), ConfigError> {
    check_url("dingtalk.base_url", url)
}

/// `key`'s URL: https, or plain http to a loopback address only.
fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::Invalid(format!("{key} '{url}': {why}"));
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(bad(
                    "plain http:// is allowed only to a loopback address; use https://",
                ))
            }
        }
        other => Err(bad(&format!("unsupported scheme '{other}'"))),
    }
}

#[cfg(test)]
// figment's `Jail` takes closures returning figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    use figment2::Jail;

    /// Run `f` in a jail: a fresh working folder and an environment restored afterwards.
    fn jailed(f: impl FnOnce(&mut Jail) -> Result<(), figment2::Error>) {
        Jail::expect_with(f);
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        jailed(|jail| {
            jail.create_file(
                "config.yaml",
                "dingtalk:\n  app_key: from-file\n  rate_limit: 5\nhttp:\n  listen: 127.0.0.1:9999\n",
            )?;
            jail.set_env("DINGREC_DINGTALK__APP_KEY", "from-env");
            jail.set_env("DINGREC_CONFIG", "ignored");
            let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
            assert_eq!(s.dingtalk.app_key, "from-env");
            assert_eq!(s.dingtalk.rate_limit, 5);
            assert_eq!(s.http.listen.port(), 9999);
            assert_eq!(
                s.dingtalk.request_timeout,
                Duration::from_secs(10),
                "default kept"
            );
            assert_eq!(s.defaults.window, Duration::from_secs(1800));
            Ok(())
        });
    }

    #[test]
    fn defaults_verify_is_off_or_fields_over_the_built_in_ones() {
        jailed(|jail| {
            jail.create_file("off.yaml", "defaults:\n  verify: false\n")?;
            let s = Settings::load(Some(Path::new("off.yaml"))).expect("loads");
            assert_eq!(s.defaults.verify, None);
            assert_eq!(s.defaults.typed().expect("valid").verify, None);
            jail.create_file("watch.yaml", "defaults:\n  verify: { watch: 1m }\n")?;
            let s = Settings::load(Some(Path::new("watch.yaml"))).expect("loads");
            assert_eq!(
                s.defaults.verify,
                Some(Verify {
                    watch: Duration::from_secs(60),
                    ..Verify::default()
                })
            );
            jail.create_file("bad.yaml", "defaults:\n  verify: { after: 0s }\n")?;
            let err = Settings::load(Some(Path::new("bad.yaml")))
                .expect_err("after 0s")
                .to_string();
            assert!(err.contains("defaults.verify.after"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn nested_environment_keys_reach_deep_settings() {
        jailed(|jail| {
            jail.set_env("DINGREC_DEFAULTS__RETRY__MAXIMUM_ATTEMPTS", "7");
            jail.set_env("DINGREC_SCHEDULER__SHUTDOWN_TIMEOUT", "3s");
            let s = Settings::load(None).expect("loads");
            assert_eq!(s.defaults.retry.maximum_attempts, 7);
            assert_eq!(s.scheduler.shutdown_timeout, Duration::from_secs(3));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        jailed(|jail| {
            jail.create_file("config.yaml", "dingtalk:\n  rate_limt: 5\n")?;
            let err = Settings::load(Some(Path::new("config.yaml"))).expect_err("unknown key");
            let msg = err.to_string();
            assert!(msg.contains("rate_limt"), "{msg}");
            assert!(msg.contains("dingtalk"), "{msg}");
            assert!(msg.contains("config.yaml"), "{msg}");
            Ok(())
        });
        jailed(|jail| {
            jail.set_env("DINGREC_HTTP__LISTN", "x");
            let err = Settings::load(None).expect_err("unknown env key");
            let msg = err.to_string();
            assert!(
                msg.contains("(from the environment: DINGREC_HTTP__LISTN)"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_the_variable() {
        jailed(|jail| {
            jail.create_file("config.yaml", "defaults:\n  timezone: Asia/Shangai\n")?;
            let err = Settings::load(Some(Path::new("config.yaml"))).expect_err("bad zone");
            assert!(err.to_string().contains("defaults.timezone"), "{err}");
            jail.create_file("c2.yaml", "dingtalk:\n  request_timeout: soon\n")?;
            let err = Settings::load(Some(Path::new("c2.yaml"))).expect_err("bad duration");
            assert!(err.to_string().contains("dingtalk.request_timeout"), "{err}");
            for lease in ["1s", "1h"] {
                jail.create_file("c3.yaml", &format!("scheduler:\n  lease: {lease}\n"))?;
                let err = Settings::load(Some(Path::new("c3.yaml"))).expect_err("lease out of bounds");
                assert_eq!(
                    err.to_string().lines().last(),
                    Some(format!("scheduler.lease must be between 5s and 10m (it is {lease})").as_str()),
                    "{err}"
                );
            }
            jail.set_env("DINGREC_DINGTALK__RATE_LIMIT", "lots");
            let err = Settings::load(None).expect_err("bad number");
            let msg = err.to_string();
            assert!(msg.contains("dingtalk.rate_limit"), "{msg}");
            assert!(
                msg.contains("(from the environment: DINGREC_DINGTALK__RATE_LIMIT)"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn built_in_policy_defaults_match_the_settings_defaults() {
        assert_eq!(
            DefaultSettings::default().typed().expect("valid"),
            PolicyDefaults::default()
        );
    }

    #[test]
    fn alert_destinations_read_their_secrets_from_files_or_credentials_and_never_print_them() {
        jailed(|jail| {
            let dir = jail.directory().to_owned();
            jail.create_file("robot_token", "TOKEN-CANARY\n")?;
            jail.create_dir("creds")?;
            jail.create_file("creds/ops_secret", "SEC-CANARY\n")?;
            jail.create_file("creds/pager_secret", "whsec_Zm9v\n")?;
            jail.create_file(
                "config.yaml",
                &format!(
                    "alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n      access_token_file: {}/robot_token\n    pager:\n      type: webhook\n      url: http://127.0.0.1:9/hook\n  default: [ops]\n",
                    dir.display()
                ),
            )?;
            jail.set_env("CREDENTIALS_DIRECTORY", dir.join("creds").display());
            let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
            let ops = &s.alerts.destinations["ops"];
            assert_eq!(ops.endpoint(), ROBOT_URL);
            assert_eq!(
                ops.access_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned())
                    .as_deref(),
                Some("TOKEN-CANARY")
            );
            assert_eq!(
                ops.secret
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned())
                    .as_deref(),
                Some("SEC-CANARY")
            );
            assert_eq!(s.alerts.events.len(), 10, "every event but `test` by default");
            let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap_or_default());
            assert!(!shown.contains("CANARY") && !shown.contains("Zm9v"), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn a_destination_without_its_secret_loads_for_commands_and_is_refused_for_sending() {
        for (yaml, says) in [
            (
                "alerts:\n  destinations:\n    ops:\n      type: dingtalk_robot\n",
                "alerts.destinations.ops: the robot's access token is missing",
            ),
            (
                "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: https://example.com/h\n",
                "alerts.destinations.pager: the webhook's signing secret is missing",
            ),
        ] {
            jailed(|jail| {
                jail.create_file("config.yaml", yaml)?;
                let s = Settings::load(Some(Path::new("config.yaml"))).expect(yaml);
                let e = s.alerts.check_secrets().expect_err(yaml).to_string();
                assert!(e.contains(says), "{yaml}: {e}");
                Ok(())
            });
        }
    }

    #[test]
    fn bad_alert_settings_name_the_key() {
        let base = "dingtalk:\n  app_key: k\n";
        for (yaml, says) in [
            (
                "alerts:\n  destinations:\n    pager:\n      type: webhook\n      url: http://example.com/h\n",
                "alerts.destinations.pager.url 'http://example.com/h': plain http:// is allowed only to a loopback address",
            ),
            (
                "alerts:\n  default: [ops]\n",
                "alerts.default[0]: 'ops' is not one of alerts.destinations",
            ),
            ("alerts:\n  events: [failed, exploded]\n", "alerts.events"),
            (
                "alerts:\n  destinations:\n    ops:\n      type: pager_duty\n",
                "alerts.destinations.ops",
            ),
        ] {
            jailed(|jail| {
                jail.create_file("config.yaml", &format!("{base}{yaml}"))?;
                let e = Settings::load(Some(Path::new("config.yaml")))
                    .expect_err(yaml)
                    .to_string();
                assert!(e.contains(says), "{yaml}: {e}");
                Ok(())
            });
        }
    }

    #[test]
    fn changed_keys_are_named_and_secrets_are_not_shown() {
        let old = Settings::default();
        let mut new = old.clone();
        assert_eq!(old, new);
        assert!(changed_keys(&old, &new).is_empty());
        new.dingtalk.rate_limit = 5;
        new.dingtalk.token_refresh_margin = Duration::from_secs(1);
        new.dingtalk
            .classification
            .insert("recordStartError".into(), RetryClass::Fail);
        new.dingtalk.app_secret = Some(SecretString::from("CANARY-new".to_owned()));
        assert_ne!(old, new);
        let keys = changed_keys(&old, &new);
        assert_eq!(
            keys,
            vec![
                "dingtalk.classification.recordStartError",
                "dingtalk.rate_limit",
                "dingtalk.token_refresh_margin",
                "dingtalk.app_secret"
            ]
        );
        assert!(!format!("{keys:?}").contains("CANARY"));
    }

    #[test]
    fn secrets_from_the_environment_arrive_exactly_as_written() {
        for secret in [
            "123456",
            "0012",
            "true",
            "\"quoted\"",
            "with spaces ",
            "[1, 2]",
            "a: b",
        ] {
            jailed(|jail| {
                jail.set_env("DINGREC_DINGTALK__APP_SECRET", secret);
                jail.set_env("DINGREC_DINGTALK__SUITE_SECRET", secret);
                jail.set_env("DINGREC_DATABASE__PASSWORD", secret);
                let s = Settings::load(None).expect("loads");
                let exposed = |v: &Option<SecretString>| v.as_ref().map(|v| v.expose_secret().to_owned());
                assert_eq!(exposed(&s.dingtalk.app_secret).as_deref(), Some(secret));
                assert_eq!(exposed(&s.dingtalk.suite_secret).as_deref(), Some(secret));
                assert_eq!(exposed(&s.database.password).as_deref(), Some(secret));
                Ok(())
            });
        }
    }

    #[test]
    fn a_secret_written_into_the_config_file_is_refused_at_its_line() {
        for (yaml, key, line) in [
            (
                "dingtalk:\n  app_key: k\n  app_secret: hunter2\n",
                "dingtalk.app_secret",
                "3:3",
            ),
            (
                "# c\ndatabase:\n  path: /tmp/x.db\n  password: hunter2\n",
                "database.password",
                "4:3",
            ),
            ("dingtalk:\n  suite_ticket: t\n", "dingtalk.suite_ticket", "2:3"),
        ] {
            jailed(|jail| {
                jail.create_file("config.yaml", yaml)?;
                let e = Settings::load(Some(Path::new("config.yaml"))).expect_err("refused");
                let text = e.to_string();
                assert!(text.starts_with(&format!("config.yaml:{line}: {key}:")), "{text}");
                assert!(
                    text.contains("_file") && text.contains("CREDENTIALS_DIRECTORY"),
                    "{text}"
                );
                assert!(text.contains("DINGREC_"), "{text}");
                assert!(!text.contains("hunter2"), "{text}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_postgres_url_to_another_machine_must_verify_its_certificate() {
        let check = |url: &str| {
            let d = DatabaseSettings {
                url: url.to_owned(),
                ..DatabaseSettings::default()
            };
            d.validate().map_err(|e| e.to_string())
        };
        for ok in [
            "postgres://dingrec@db.example.com/dingrec?sslmode=verify-full",
            "postgres://dingrec@db.example.com/dingrec?sslmode=verify-ca&sslrootcert=/etc/ca.pem",
            "postgres://dingrec@localhost/dingrec",
            "postgres://dingrec@127.0.0.1:5433/dingrec?sslmode=disable",
            "postgres://dingrec@[::1]/dingrec",
            "postgres://dingrec@localhost/dingrec?host=/run/postgresql",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, mode) in [
            ("postgres://dingrec@db.example.com/dingrec", "prefer"),
            (
                "postgres://dingrec@db.example.com/dingrec?sslmode=require",
                "require",
            ),
            ("postgres://dingrec@10.1.2.3/dingrec?sslmode=disable", "disable"),
        ] {
            let e = check(bad).expect_err(bad);
            assert!(
                e.starts_with("database.url:") && e.contains(&format!("sslmode is {mode}")),
                "{e}"
            );
            assert!(e.contains("verify-full"), "{e}");
        }
    }

    #[test]
    fn a_whsec_webhook_secret_must_be_base64() {
        let with = |secret: &str| {
            let mut s = Settings::default();
            s.alerts.destinations.insert(
                "pager".into(),
                Destination {
                    kind: DestinationType::Webhook,
                    url: "https://alerts.example.com/dingrec".into(),
                    access_token_file: PathBuf::new(),
                    access_token: None,
                    secret_file: PathBuf::new(),
                    secret: Some(SecretString::from(secret.to_owned())),
                    at_mobiles: vec![],
                },
            );
            s.alerts.check_secrets().map_err(|e| e.to_string())
        };
        assert_eq!(with("whsec_c2VjcmV0"), Ok(()));
        assert_eq!(with("any string at all"), Ok(()));
        let e = with("whsec_not base64!").expect_err("refused");
        assert!(
            e.starts_with("alerts.destinations.pager:") && e.contains("base64"),
            "{e}"
        );
        assert!(!e.contains("not base64!"), "the secret is not shown: {e}");
    }

    #[test]
    fn plain_http_is_only_for_loopback() {
        assert!(check_base_url("https://api.dingtalk.com").is_ok());
        assert!(check_base_url("http://127.0.0.1:8080").is_ok());
        assert!(check_base_url("http://localhost:8080").is_ok());
        assert!(check_base_url("http://[::1]:8080").is_ok());
        assert!(check_base_url("http://api.dingtalk.com").is_err());
        assert!(check_base_url("http://10.0.0.1").is_err());
        assert!(check_base_url("ftp://x").is_err());
    }

    #[test]
    fn a_postgres_url_takes_its_password_from_credentials_and_never_prints_it() {
        jailed(|jail| {
            let dir = jail.directory().to_owned();
            jail.create_dir("creds")?;
            jail.create_file("creds/database_password", "CANARY-db-password\n")?;
            jail.create_file(
                "config.yaml",
                "database:\n  url: postgres://dingrec@db.example.com:5432/dingrec?sslmode=verify-full\n",
            )?;
            jail.set_env("CREDENTIALS_DIRECTORY", dir.join("creds").display());
            let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
            assert_eq!(s.database.engine(), DatabaseEngine::Postgres);
            let options = s.database.postgres_options().expect("options");
            assert_eq!(options.get_host(), "db.example.com");
            assert_eq!(options.get_database(), Some("dingrec"));
            // (Not `options`: sqlx's own Debug shows the password; dingrec never prints it.)
            let shown = format!("{s:?} {}", serde_json::to_string(&s).unwrap_or_default());
            assert!(!shown.contains("CANARY"), "{shown}");
            assert_eq!(
                s.database
                    .password
                    .as_ref()
                    .map(|p| p.expose_secret().to_owned())
                    .as_deref(),
                Some("CANARY-db-password")
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_database_url_is_refused_naming_the_key_and_why() {
        let with = |url: &str, path: Option<&str>| {
            let mut s = Settings::default();
            s.database.url = url.to_owned();
            if let Some(p) = path {
                s.database.path = p.into();
            }
            s.validate().err().map(|e| e.to_string())
        };
        assert_eq!(
            with("postgres://dingrec@db/dingrec?sslmode=verify-full", None),
            None
        );
        let password = with("postgres://dingrec:CANARY@db/dingrec", None).expect("refused");
        assert!(
            password.contains("database.url") && password.contains("password_file"),
            "{password}"
        );
        assert!(!password.contains("CANARY"), "{password}");
        let both = with("postgres://dingrec@db/dingrec", Some("/tmp/d.db")).expect("refused");
        assert!(both.contains("database.path"), "{both}");
        let scheme = with("mysql://db/dingrec", None).expect("refused");
        assert!(scheme.contains("postgres://"), "{scheme}");
        let mut s = Settings::default();
        s.database.max_connections = 0;
        assert!(
            s.validate()
                .is_err_and(|e| e.to_string().contains("database.max_connections"))
        );
    }

    #[test]
    fn secrets_come_from_a_file_first_and_never_print() {
        jailed(|jail| {
            jail.create_file("secret", "CANARY-file-secret\n")?;
            jail.create_file(
                "config.yaml",
                "dingtalk:\n  app_key: k\n  app_secret_file: secret\n",
            )?;
            jail.set_env("DINGREC_DINGTALK__APP_SECRET", "CANARY-env-secret");
            let s = Settings::load(Some(Path::new("config.yaml"))).expect("loads");
            let creds = s.credentials().expect("complete");
            match &creds {
                Credentials::Internal { app_secret, .. } => {
                    assert_eq!(app_secret.expose_secret(), "CANARY-file-secret")
                }
                other => panic!("unexpected {other:?}"),
            }
            let printed = format!("{s:?} {creds:?}");
            assert!(!printed.contains("CANARY"), "{printed}");
            Ok(())
        });
    }

    #[test]
    fn the_environment_secret_is_the_last_resort() {
        jailed(|jail| {
            jail.set_env("DINGREC_DINGTALK__APP_KEY", "k");
            jail.set_env("DINGREC_DINGTALK__APP_SECRET", "CANARY-env-secret");
            let s = Settings::load(None).expect("loads");
            assert!(format!("{:?}", s.dingtalk).contains("[REDACTED]"));
            assert!(!format!("{:?}", s.dingtalk).contains("CANARY"));
            assert!(s.credentials().is_ok());
            Ok(())
        });
        jailed(|jail| {
            jail.set_env("DINGREC_DINGTALK__APP_KEY", "k");
            let none = Settings::load(None).expect("loads");
            assert!(
                none.credentials()
                    .expect_err("missing")
                    .to_string()
                    .contains("secret")
            );
            Ok(())
        });
    }
}

#[cfg(test)]
mod repo_config {
    use super::*;

    fn keys(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, child) in m {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push(path.clone());
                if path != "defaults.retry" && path != "defaults.verify" && path != "dingtalk.classification"
                {
                    keys(&path, child, out);
                }
            }
        }
    }

    #[test]
    fn the_repository_config_loads_and_documents_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.yaml");
        let text = std::fs::read_to_string(&path).expect("config.yaml");
        let loaded = Settings::load(Some(&path)).expect("loads");
        let defaults = Settings::default();
        assert_eq!(
            serde_json::to_value(&loaded).expect("json"),
            serde_json::to_value(&defaults).expect("json"),
            "config.yaml shows the built-in defaults"
        );
        let mut all = Vec::new();
        keys("", &serde_json::to_value(&defaults).expect("json"), &mut all);
        let lines: Vec<&str> = text.lines().collect();
        for key in all {
            let leaf = key.rsplit('.').next().unwrap_or(&key);
            let i = lines
                .iter()
                .position(|l| l.trim_start().starts_with(&format!("{leaf}:")))
                .unwrap_or_else(|| panic!("config.yaml does not show '{key}'"));
            let section = lines[i].trim_end().ends_with(':');
            let commented = lines[i].contains('#') || (i > 0 && lines[i - 1].trim_start().starts_with('#'));
            assert!(
                section || commented,
                "config.yaml shows '{key}' without a comment"
            );
        }
        for secret in ["app_secret_file", "suite_secret_file", "suite_ticket_file"] {
            assert!(text.contains(secret));
        }
    }
}
