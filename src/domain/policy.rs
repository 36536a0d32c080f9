//! A recording policy, in types that cannot hold an invalid value.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use super::ids::{ConferenceId, ScheduleConferenceId, UnionId};
use super::invalid::{Invalid, did_you_mean};
use super::retry::RetryPolicy;
use super::schedule::{Schedule, Zone};
use super::verify::Verify;

/// A policy's unique name: letters, digits, `-` and `_`; 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct PolicyName(String);

impl PolicyName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        if s.is_empty() || s.len() > 64 {
            return Err(Invalid::new(format!(
                "policy name must be 1 to 64 characters, got {}",
                s.chars().count()
            )));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(Invalid::new(format!(
                "policy name may hold letters, digits, '-' and '_' only, found {c:?}"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which meeting a policy records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A known meeting.
    Conference(ConferenceId),
    /// A scheduled meeting; the live `conferenceId` is looked up at fire time.
    Scheduled(ScheduleConferenceId),
    /// Meetings DingTalk's events report, by rule (`match`; its schedule is [`Schedule::OnEvent`]).
    Match(super::matching::MatchRule),
}

/// `host_union_id: creator`: a `match` policy's meetings are started by whoever created them.
pub const HOST_CREATOR: &str = "creator";

macro_rules! api_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [&'static str] = &[$($text),+];

            /// The value as DingTalk's API (and the policy file) spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(Invalid::new(format!(
                        "unknown {} '{}' (expected one of: {})",
                        $what,
                        other,
                        Self::ALL.join(", ")
                    ))
                    .with_hint(did_you_mean(other, Self::ALL.iter().copied()))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

api_enum!(
    /// The recording layout (the API's `mode`).
    Layout, "layout", {
        Grid => "grid",
        Speech => "speech",
        FullScreen => "full_screen",
    }
);

api_enum!(
    /// Where the small window sits (the API's `smallWindowPosition`).
    WindowPosition, "small_window_position", {
        RelativeRight => "relative_right",
        FloatRight => "float_right",
        FloatBottom => "float_bottom",
    }
);

/// A validated recording policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: PolicyName,
    pub target: Target,
    pub host_union_id: UnionId,
    pub schedule: Schedule,
    pub timezone: Zone,
    pub layout: Layout,
    pub small_window_position: WindowPosition,
    /// Fire this long after the meeting's start.
    pub start_offset: Duration,
    /// Keep trying until the meeting's start + window.
    pub window: Duration,
    /// Local dates on which no occurrence is made.
    pub skip_dates: BTreeSet<NaiveDate>,
    pub retry: RetryPolicy,
    /// How the recording is checked (`None`: `verify: false`).
    pub verify: Option<Verify>,
    /// Where its alerts go: destination names of `alerts.destinations` (`None`: `alerts.default`).
    pub alert: Option<Vec<String>>,
    /// DingTalk's own auto-recording, set ahead (scheduled meetings only; `None`: off).
    pub auto_record: Option<super::auto_record::AutoRecord>,
    pub enabled: bool,
}

/// The longest `window` (and so `start_offset`) a policy may have: a year is plenty, and every
/// instant computed from it stays far inside the calendar.
pub const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// Checks `start_offset` and `window` against each other and [`MAX_WINDOW`]; the error names
/// the field at fault.
pub fn check_timing(start_offset: Duration, window: Duration) -> Result<(), (&'static str, Invalid)> {
    let show = |d: Duration| humantime::format_duration(d).to_string();
    if window > MAX_WINDOW {
        return Err((
            "window",
            Invalid::new(format!("window ({}) must be at most 366 days", show(window))),
        ));
    }
    if window <= start_offset {
        return Err((
            if start_offset > MAX_WINDOW {
                "start_offset"
            } else {
                "window"
            },
            Invalid::new(format!(
                "window ({}) must be longer than start_offset ({}): the window starts at the meeting's start and the first attempt is at start + start_offset",
                show(window),
                show(start_offset)
            )),
        ));
    }
    Ok(())
}

/// Policy fields set once for all policies (`defaults` in config.yaml), checked and typed. A
/// policy file's entry overrides them field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDefaults {
    pub timezone: Zone,
    pub layout: Layout,
    pub small_window_position: WindowPosition,
    pub start_offset: Duration,
    pub window: Duration,
    pub retry: RetryPolicy,
    pub verify: Option<Verify>,
    /// `auto_record` for the scheduled policies (`None`: off): who joining starts it.
    pub auto_record: Option<super::auto_record::When>,
    /// `auto_record_refresh`: how long before each occurrence the setting is made again.
    pub auto_record_refresh: Duration,
    /// The destination names a policy's `alert:` may use (`alerts.destinations`).
    pub alert_destinations: BTreeSet<String>,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        Self {
            timezone: Zone::from(chrono_tz::Asia::Shanghai),
            layout: Layout::Speech,
            small_window_position: WindowPosition::RelativeRight,
            start_offset: Duration::ZERO,
            window: Duration::from_secs(30 * 60),
            retry: RetryPolicy::default(),
            verify: Some(Verify::default()),
            auto_record: None,
            auto_record_refresh: super::auto_record::DEFAULT_REFRESH,
            alert_destinations: BTreeSet::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_letters_digits_dash_underscore_only() {
        assert!(PolicyName::parse("weekly-all_hands-01").is_ok());
        assert!(PolicyName::parse("").is_err());
        assert!(PolicyName::parse(&"a".repeat(65)).is_err());
        assert!(PolicyName::parse("x'; DROP TABLE policies;--").is_err());
    }

    #[test]
    fn enums_suggest_the_near_miss() {
        let err = Layout::parse("speach").expect_err("invalid");
        assert_eq!(err.hint.as_deref(), Some("did you mean 'speech'?"));
        assert_eq!(Layout::parse("full_screen"), Ok(Layout::FullScreen));
        assert!(
            WindowPosition::parse("nowhere")
                .expect_err("invalid")
                .hint
                .is_none()
        );
    }

    #[test]
    fn ids_reject_whitespace_and_controls() {
        assert!(ConferenceId::parse("61289f392xxx").is_ok());
        assert!(ConferenceId::parse("a b").is_err());
        assert!(UnionId::parse("x\u{0}y").is_err());
        assert!(ConferenceId::parse("a/b?c#d").is_ok());
    }
}
