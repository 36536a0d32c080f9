//! `alerts`: the destinations, the routing of events to them, and their checks.

#[allow(unused_imports)]
use super::*;

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
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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

    pub(super) fn resolve_secrets(&mut self, credentials_dir: &Option<PathBuf>) -> Result<(), ConfigError> {
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
