//! Secrets: read from a file, `$CREDENTIALS_DIRECTORY` or the environment, never from
//! config.yaml, and typed so that they never print.

#[allow(unused_imports)]
use super::*;

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
pub(super) const SECRET_KEYS: [(&str, &str); 5] = [
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
    (
        "http.auth.basic.password",
        "http.auth.basic.password_file, $CREDENTIALS_DIRECTORY/http_password",
    ),
];

/// The environment variable of a secret key (`dingtalk.app_secret` →
/// `DINGREC_DINGTALK__APP_SECRET`).
pub(super) fn secret_env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_ascii_uppercase())
}

/// A secret from its environment variable, exactly as written: digits stay digits, quotes and
/// spaces are part of it.
pub(super) fn secret_from_env(key: &str) -> Option<SecretString> {
    std::env::var(secret_env_name(key)).ok().map(SecretString::from)
}

/// A secret written into config.yaml is refused, naming its line and the secure ways: the file
/// is world-readable more often than not, and goes into backups and version control.
pub(super) fn refuse_written_secrets(
    path: &Path,
    text: &str,
    value: &serde_json::Value,
) -> Result<(), ConfigError> {
    for (key, ways) in SECRET_KEYS {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.iter().try_fold(value, |v, part| v.get(part)).is_none() {
            continue;
        }
        // The key's line: each part's `name:` line after the one before it.
        let lines: Vec<&str> = text.lines().collect();
        let mut at = (0, 1);
        for part in &parts {
            if let Some((i, column)) = lines.iter().enumerate().skip(at.0).find_map(|(i, l)| {
                let t = l.trim_start().trim_start_matches("- ");
                let rest = t.strip_prefix(part)?;
                rest.trim_start()
                    .starts_with(':')
                    .then(|| (i, l.len() - t.len() + 1))
            }) {
                at = (i, column);
            }
        }
        let (line, column) = (at.0 + 1, at.1);
        return Err(ConfigError::Invalid(format!(
            "{}:{line}:{column}: {key}: secrets are not read from the config file; use {ways} or \
             the environment variable {} (see docs/configuration.md#secrets)",
            path.display(),
            secret_env_name(key)
        )));
    }
    Ok(())
}

pub(super) fn read_secret(
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
