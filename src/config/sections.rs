//! The smaller sections: `http`, `policies`, `defaults`, `scheduler`, `retention`, `log`.

#[allow(unused_imports)]
use super::*;

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
    /// Who may read the status page, its JSON and `/readyz`/`/metrics` (`/healthz` stays open):
    /// required when `listen` is not a loopback address.
    pub auth: Option<HttpAuth>,
}

/// `http.auth`: one way to authenticate, HTTP basic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    pub basic: BasicAuth,
}

/// `http.auth.basic`: one user and its password, from `password_file`, else
/// `$CREDENTIALS_DIRECTORY/http_password`, else `DINGREC_HTTP__AUTH__BASIC__PASSWORD`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub user: String,
    #[serde(default)]
    pub password_file: PathBuf,
    #[serde(skip)]
    pub password: Option<SecretString>,
}

impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        self.user == other.user
            && self.password_file == other.password_file
            && self.password.as_ref().map(ExposeSecret::expose_secret)
                == other.password.as_ref().map(ExposeSecret::expose_secret)
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

impl HttpSettings {
    /// `listen` and `auth` together: a listener other machines can reach needs a password; a
    /// user name is one token (`:` would end it on the wire).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.header_timeout.is_zero() || self.header_timeout > Duration::from_secs(300) {
            return Err(ConfigError::Invalid(
                "http.header_timeout must be more than 0 and at most 5m".into(),
            ));
        }
        if !(1..=MAX_HTTP_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::Invalid(format!(
                "http.max_connections must be between 1 and {MAX_HTTP_CONNECTIONS} (it is {})",
                self.max_connections
            )));
        }
        match &self.auth {
            None if !self.listen.ip().is_loopback() => Err(ConfigError::Invalid(format!(
                "http.listen: {} is reachable from other machines: set http.auth.basic (user, \
                 password_file) so that the status page and its JSON need a password, or listen \
                 on 127.0.0.1 (see docs/operations.md#authentication)",
                self.listen
            ))),
            Some(HttpAuth { basic }) => {
                let user = &basic.user;
                if user.is_empty()
                    || user.len() > 64
                    || user.contains(':')
                    || user.chars().any(char::is_control)
                {
                    return Err(ConfigError::Invalid(
                        "http.auth.basic.user: 1 to 64 bytes, without ':' or control characters".into(),
                    ));
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The password the daemon needs when `auth` is set (other commands serve no HTTP).
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        match &self.auth {
            Some(HttpAuth { basic }) if basic.password.is_none() => Err(ConfigError::Invalid(
                "http.auth.basic: the password is missing: set password_file, or put it in \
                 $CREDENTIALS_DIRECTORY/http_password, or in DINGREC_HTTP__AUTH__BASIC__PASSWORD"
                    .into(),
            )),
            Some(HttpAuth { basic })
                if basic
                    .password
                    .as_ref()
                    .is_some_and(|p| p.expose_secret().len() < 12) =>
            {
                Err(ConfigError::Invalid(
                    "http.auth.basic: the password is shorter than 12 characters".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn resolve_secrets(&mut self, credentials_dir: &Option<PathBuf>) -> Result<(), ConfigError> {
        if let Some(HttpAuth { basic }) = &mut self.auth {
            basic.password = read_secret(
                &basic.password_file,
                credentials_dir,
                "http_password",
                secret_from_env("http.auth.basic.password"),
            )?;
        }
        Ok(())
    }
}

/// The most HTTP connections `http.max_connections` may allow.
pub const MAX_HTTP_CONNECTIONS: usize = 4096;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9477)),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            auth: None,
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
    /// `auto_record` for every scheduled-meeting policy: `false`, `true` (`when: host`) or
    /// `{when: host | cohost | anyone}`.
    #[serde(with = "auto_record_switch")]
    pub auto_record: Option<crate::domain::auto_record::When>,
    /// How long before each occurrence the auto-record setting is made again.
    #[serde(with = "humantime_serde")]
    pub auto_record_refresh: Duration,
}

/// `defaults.auto_record`: `false`, `true` (`when: host`), or `{when: ...}`.
mod auto_record_switch {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::domain::auto_record::When;

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fields {
        when: When,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Switch(bool),
        Fields(Fields),
    }

    pub fn serialize<S: Serializer>(v: &Option<When>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(when) => Repr::Fields(Fields { when: *when }).serialize(s),
            None => Repr::Switch(false).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<When>, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Switch(false) => None,
            Repr::Switch(true) => Some(When::Host),
            Repr::Fields(f) => Some(f.when),
        })
    }
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
            auto_record: None,
            auto_record_refresh: crate::domain::auto_record::DEFAULT_REFRESH,
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
            auto_record: self.auto_record,
            auto_record_refresh: {
                crate::domain::auto_record::AutoRecord::check_refresh(self.auto_record_refresh)
                    .map_err(|e| field("auto_record_refresh", e.message))?;
                self.auto_record_refresh
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
