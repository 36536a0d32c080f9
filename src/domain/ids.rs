//! DingTalk's opaque ids, each its own type: a meeting's, a series', a user's.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::invalid::Invalid;

/// Shared rules for DingTalk's opaque ids: non-empty, at most 128 bytes, no whitespace or
/// control characters. Anything else is sent percent-encoded in the path.
fn check_id(kind: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::new(format!("{kind} must not be empty")));
    }
    if s.len() > 128 {
        return Err(Invalid::new(format!("{kind} is longer than 128 bytes")));
    }
    if let Some(c) = s.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(Invalid::new(format!(
            "{kind} must not contain whitespace or control characters, found {c:?}"
        )));
    }
    Ok(())
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                check_id($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl $name {
            pub fn parse(s: &str) -> Result<Self, Invalid> {
                check_id($kind, s)?;
                Ok(Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_newtype!(
    /// A live meeting's `conferenceId`.
    ConferenceId,
    "conference_id"
);
id_newtype!(
    /// A scheduled (recurring) meeting's `scheduleConferenceId`.
    ScheduleConferenceId,
    "schedule_conference_id"
);
id_newtype!(
    /// A user's `unionId` (the host's, for StartCloudRecord).
    UnionId,
    "host_union_id"
);
