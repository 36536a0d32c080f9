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

mod alerts;
mod database;
mod dingtalk;
mod reload;
mod secrets;
mod sections;

pub use alerts::*;
pub use database::*;
pub use dingtalk::*;
pub use reload::*;
pub use secrets::*;
pub use sections::*;

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
        self.http.resolve_secrets(credentials_dir)?;
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
        self.dingtalk.stream.validate(self.dingtalk.app_type)?;
        self.http.validate()?;
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
mod tests;

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
