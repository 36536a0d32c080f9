//! What DingTalk's answer means: one table from code to retry class (`docs/dingtalk.md`, "What each answer means"). The table is
//! data; `dingtalk.classification` in config.yaml overrides any entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// dingrec's own codes, for answers that carry none of DingTalk's.
pub mod codes {
    pub const SUCCESS: &str = "200";
    pub const TIMEOUT: &str = "timeout";
    pub const CONNECT_ERROR: &str = "connect_error";
    pub const INVALID_RESPONSE: &str = "invalid_response";
    pub const MEETING_NOT_LIVE: &str = "meetingNotLive";
    pub const INTERRUPTED: &str = super::super::state::AttemptOutcome::Interrupted.as_str();
    /// DingTalk's IP ban page (`"source":"x5","punish":"deny"`), which carries no error code.
    pub const IP_THROTTLED: &str = "ip_throttled";
    pub const INVALID_AUTHENTICATION: &str = "InvalidAuthentication";
    /// The occurrence's window ended while the attempt waited to be sent: no call was made.
    pub const WINDOW_PASSED: &str = "window_passed";
    /// StartCloudRecord: "record is already started", or "conference is not started".
    pub const RECORD_START_ERROR: &str = "recordStartError";
    /// Checks found no recording after DingTalk accepted StartCloudRecord.
    pub const NOT_RECORDING: &str = "notRecording";
    /// QueryCloudRecordVideo: no recording was made.
    pub const CLOUD_RECORD_NOT_FOUND: &str = "cloudRecordNotFound";
    /// QueryConferenceInfo: the meeting is gone.
    pub const ROOM_NOT_FOUND: &str = "roomNotFound";
    pub const ROOM_CLOSED: &str = "roomClosed";
    /// The organisation's monthly API quota is spent: every call is refused until the month ends.
    pub const QUOTA_EXHAUSTED: &str = "Forbidden.AccessDenied.ApiCountLimitForOrg";
    /// A watch check or video look-up not made: the month's quota is inside its reserve.
    pub const QUOTA_RESERVE: &str = "quota_reserve";
    /// An `auto_record` policy's attempt that found DingTalk's own auto-recording running: no
    /// StartCloudRecord was sent (docs/auto-record.md).
    pub const AUTO_RECORDED: &str = "auto_recorded";
}

/// The longest DingTalk `code` kept (characters; DingTalk's longest known is 46): a longer one
/// is cut before it is stored, logged or classified.
pub const MAX_CODE_CHARS: usize = 64;
/// The longest DingTalk `message` (and request id: [`MAX_CODE_CHARS`]) kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 512;

/// `text` cut to at most `max` characters (the cut one ends in `…`), on a character boundary.
pub fn capped(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) if text.chars().count() > max => format!("{}…", &text[..i]),
        _ => text.to_owned(),
    }
}

/// The codes a metric label may take: the ones the classification table, dingrec's own codes
/// and the docs know. Any other code DingTalk sends is counted as `other` (its text is in the
/// attempt's row and the log), so no answer can make a new time series.
const KNOWN_CODES: &[&str] = &[
    codes::SUCCESS,
    codes::TIMEOUT,
    codes::CONNECT_ERROR,
    "connection_lost",
    "tls_error",
    codes::INVALID_RESPONSE,
    codes::MEETING_NOT_LIVE,
    codes::INTERRUPTED,
    codes::IP_THROTTLED,
    codes::INVALID_AUTHENTICATION,
    codes::WINDOW_PASSED,
    codes::RECORD_START_ERROR,
    codes::NOT_RECORDING,
    codes::CLOUD_RECORD_NOT_FOUND,
    codes::ROOM_NOT_FOUND,
    codes::ROOM_CLOSED,
    codes::QUOTA_EXHAUSTED,
    codes::QUOTA_RESERVE,
    codes::AUTO_RECORDED,
    "recordStartPermissionError",
    "creatorUidError",
    "noPermission",
    "paramsError",
    "systemError",
    "Forbidden.AccessDenied.AccessTokenPermissionDenied",
    "Forbidden.AccessDenied.QpsLimitForApi",
    "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
    "AuthenticationFailed.MissingParameter",
    "invalidClientIdOrSecret",
    "invalidSuiteKey",
    "invalidSuiteTicket",
];

/// `code` as a metric label: itself when known, else `other`.
pub fn metric_code(code: &str) -> &str {
    KNOWN_CODES
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("other")
}

/// What to do after an attempt with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryClass {
    /// The recording runs.
    Success,
    /// Retrying cannot help: the occurrence fails at once.
    Fail,
    /// Retry with backoff; counts against `maximum_attempts`.
    Retry,
    /// Over DingTalk's rate: wait at least 1 s; does not count against `maximum_attempts`.
    Throttle,
    /// The token is bad: drop it, fetch a new one, retry at once (once).
    Reauth,
}

/// The classification table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classification {
    overrides: BTreeMap<String, RetryClass>,
}

impl Classification {
    pub fn with_overrides(overrides: BTreeMap<String, RetryClass>) -> Self {
        Self { overrides }
    }

    /// The built-in class of a code, before overrides.
    pub fn builtin(code: &str, http_status: u16) -> RetryClass {
        match code {
            "200" => RetryClass::Success,
            "roomClosed"
            | "recordStartPermissionError"
            | "paramsError"
            | "Forbidden.AccessDenied.AccessTokenPermissionDenied"
            | codes::QUOTA_EXHAUSTED
            | "AuthenticationFailed.MissingParameter" => RetryClass::Fail,
            "recordStartError" | "systemError" => RetryClass::Retry,
            codes::TIMEOUT | codes::CONNECT_ERROR | codes::INVALID_RESPONSE => RetryClass::Retry,
            codes::MEETING_NOT_LIVE | codes::INTERRUPTED => RetryClass::Retry,
            codes::IP_THROTTLED => RetryClass::Throttle,
            codes::INVALID_AUTHENTICATION => RetryClass::Reauth,
            // Token calls: bad credentials may be fixed by a reload within the window; retry with
            // backoff (each try is one attempt row, rate-limited, and logged at ERROR).
            "invalidClientIdOrSecret" | "invalidSuiteKey" | "invalidSuiteTicket" => RetryClass::Retry,
            c if c.starts_with("Forbidden.AccessDenied.QpsLimitFor") => RetryClass::Throttle,
            _ if http_status >= 500 || http_status == 0 => RetryClass::Retry,
            _ => RetryClass::Fail,
        }
    }

    pub fn classify(&self, code: &str, http_status: u16) -> RetryClass {
        self.overrides
            .get(code)
            .copied()
            .unwrap_or_else(|| Self::builtin(code, http_status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_follows_the_documented_classes() {
        let t = Classification::default();
        assert_eq!(t.classify("200", 200), RetryClass::Success);
        for c in [
            "roomClosed",
            "recordStartPermissionError",
            "paramsError",
            "Forbidden.AccessDenied.AccessTokenPermissionDenied",
            "Forbidden.AccessDenied.ApiCountLimitForOrg",
        ] {
            assert_eq!(t.classify(c, 400), RetryClass::Fail, "{c}");
        }
        for c in [
            "recordStartError",
            "systemError",
            "timeout",
            "connect_error",
            "invalid_response",
            "meetingNotLive",
        ] {
            assert_eq!(t.classify(c, 500), RetryClass::Retry, "{c}");
        }
        assert_eq!(
            t.classify("Forbidden.AccessDenied.QpsLimitForApi", 403),
            RetryClass::Throttle
        );
        assert_eq!(
            t.classify("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", 403),
            RetryClass::Throttle
        );
        assert_eq!(t.classify("InvalidAuthentication", 401), RetryClass::Reauth);
        assert_eq!(t.classify("somethingNew", 503), RetryClass::Retry);
        assert_eq!(t.classify("somethingNew", 400), RetryClass::Fail);
    }

    #[test]
    fn metric_labels_take_the_known_codes_and_other() {
        assert_eq!(metric_code("recordStartError"), "recordStartError");
        assert_eq!(metric_code("200"), "200");
        assert_eq!(
            metric_code("Forbidden.AccessDenied.QpsLimitForApi"),
            "Forbidden.AccessDenied.QpsLimitForApi"
        );
        assert_eq!(metric_code("x7f3a9"), "other");
        assert_eq!(metric_code(""), "other");
    }

    #[test]
    fn long_text_is_capped_on_a_character_boundary() {
        assert_eq!(capped("abc", 3), "abc");
        assert_eq!(capped("abcd", 3), "ab…");
        assert_eq!(capped("会议会议", 3), "会议…");
        assert_eq!(
            capped(&"x".repeat(10_000), MAX_MESSAGE_CHARS).chars().count(),
            MAX_MESSAGE_CHARS
        );
    }

    #[test]
    fn overrides_win() {
        let t = Classification::with_overrides(BTreeMap::from([(
            "recordStartError".to_owned(),
            RetryClass::Fail,
        )]));
        assert_eq!(t.classify("recordStartError", 404), RetryClass::Fail);
        assert_eq!(t.classify("systemError", 500), RetryClass::Retry);
    }
}
