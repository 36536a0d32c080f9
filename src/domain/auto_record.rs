//! DingTalk's own auto-recording of a scheduled meeting, set ahead by dingrec (`auto_record`,
//! docs/auto-record.md): the setting, and when it is due to be set again. Pure, like
//! [`super::verify`].

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::ids::UnionId;
use super::invalid::{Invalid, did_you_mean};

/// Who joining starts DingTalk's recording (`recordAutoStartType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// The creator joins as host (0).
    Host,
    /// Others join as co-host (1).
    Cohost,
    /// Anyone joins (2).
    Anyone,
}

impl When {
    pub const ALL: &'static [&'static str] = &["host", "cohost", "anyone"];

    pub fn parse(s: &str) -> Result<Self, Invalid> {
        match s {
            "host" => Ok(Self::Host),
            "cohost" => Ok(Self::Cohost),
            "anyone" => Ok(Self::Anyone),
            other => Err(Invalid::new(format!(
                "unknown auto_record.when '{other}' (expected one of: {})",
                Self::ALL.join(", ")
            ))
            .with_hint(did_you_mean(other, Self::ALL.iter().copied()))),
        }
    }

    /// DingTalk's `recordAutoStartType`.
    pub fn start_type(self) -> i32 {
        match self {
            Self::Host => 0,
            Self::Cohost => 1,
            Self::Anyone => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL[self.start_type() as usize]
    }
}

/// How long before an occurrence's due time the setting is made again by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// The longest `auto_record_refresh`: a week ahead is the most that helps.
pub const MAX_REFRESH: Duration = Duration::from_secs(7 * 24 * 3600);
/// A settings call that failed at transport or with a 5xx is made again after this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// A policy's `auto_record`: set DingTalk's setting ahead, check first at the due time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoRecord {
    pub when: When,
    /// The scheduled meeting's creator (`creatorUnionId`; DingTalk refuses anyone else).
    pub creator_union_id: UnionId,
    /// Set again this long before each occurrence's due time.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
}

impl AutoRecord {
    pub fn check_refresh(refresh: Duration) -> Result<(), Invalid> {
        if refresh.is_zero() || refresh > MAX_REFRESH {
            return Err(Invalid::new(format!(
                "auto_record_refresh ({}) must be more than 0s and at most 7 days",
                humantime::format_duration(refresh)
            )));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// The last settings call of a policy, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingState {
    /// The setting (JSON of [`AutoRecord`]) that call was made for.
    pub for_setting: String,
    /// The occurrence it was made ahead of.
    pub occurrence_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub result: SetResult,
}

/// How the last settings call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetResult {
    /// Claimed, its answer not written yet (or dingrec stopped during the call).
    Pending,
    Set,
    Refused,
    /// Transport, 5xx, throttled: made again after [`RETRY_AFTER`].
    Error,
}

impl SetResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Set => "set",
            Self::Refused => "refused",
            Self::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "set" => Self::Set,
            "refused" => Self::Refused,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

/// Why a settings call is due now, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Never made for this setting: the policy was applied or changed.
    Changed,
    /// The next occurrence is within `refresh` and the setting was not made since it came so near.
    Refresh,
    /// The last call failed at transport, or dingrec stopped during it.
    Retry,
}

/// Whether `setting` should be made now. `next` is the policy's next scheduled occurrence (id,
/// due time; none planned: only a change is acted on). Each occurrence gets its own call inside
/// its `refresh` window, even when the last one (for the occurrence before, or at apply time) is
/// recent: someone may have turned the setting off since. A refusal is not retried before the
/// next refresh: DingTalk said no, and asking again every minute would only spend the quota.
pub fn due(
    setting: &AutoRecord,
    json: &str,
    last: Option<&SettingState>,
    next: Option<(i64, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Option<Due> {
    let Some(last) = last.filter(|l| l.for_setting == json) else {
        return Some(Due::Changed);
    };
    let retry_after = TimeDelta::from_std(RETRY_AFTER).unwrap_or(TimeDelta::MAX);
    if matches!(last.result, SetResult::Pending | SetResult::Error) && now - last.at >= retry_after {
        return Some(Due::Retry);
    }
    let (id, due_at) = next?;
    let refresh = TimeDelta::from_std(setting.refresh).unwrap_or(TimeDelta::MAX);
    let window_opens = due_at
        .checked_sub_signed(refresh)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let made_for_it = last.occurrence_id == Some(id) && last.at >= window_opens;
    (due_at > now && window_opens <= now && !made_for_it).then_some(Due::Refresh)
}

/// When `due` may next say yes for this policy, if later than `now`: its next occurrence's
/// refresh window opening, or the retry of a call that failed or was cut short. (A change comes
/// with a new plan, which the caller hears of.)
pub fn next_look(
    setting: &AutoRecord,
    last: Option<&SettingState>,
    next: Option<(i64, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let refresh = TimeDelta::from_std(setting.refresh).unwrap_or(TimeDelta::MAX);
    let opens = next.and_then(|(_, due)| due.checked_sub_signed(refresh));
    let retry = last
        .filter(|l| matches!(l.result, SetResult::Pending | SetResult::Error))
        .and_then(|l| {
            l.at.checked_add_signed(TimeDelta::from_std(RETRY_AFTER).unwrap_or(TimeDelta::MAX))
        });
    [opens, retry].into_iter().flatten().filter(|t| *t > now).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn setting() -> AutoRecord {
        AutoRecord {
            when: When::Host,
            creator_union_id: UnionId::parse("creator").expect("id"),
            refresh: DEFAULT_REFRESH,
        }
    }

    fn last(json: &str, at: &str, result: SetResult) -> SettingState {
        SettingState {
            for_setting: json.into(),
            occurrence_id: Some(1),
            at: t(at),
            result,
        }
    }

    #[test]
    fn a_new_or_changed_setting_is_made_at_once() {
        let s = setting();
        let j = s.to_json();
        let now = t("2026-12-07T08:00:00Z");
        assert_eq!(due(&s, &j, None, None, now), Some(Due::Changed));
        let old = last("{\"when\":\"anyone\"}", "2026-12-07T07:59:00Z", SetResult::Set);
        assert_eq!(due(&s, &j, Some(&old), None, now), Some(Due::Changed));
    }

    #[test]
    fn it_is_made_again_once_when_the_next_occurrence_comes_within_refresh() {
        let s = setting();
        let j = s.to_json();
        let next = Some((1, t("2026-12-07T10:00:00Z")));
        let set_early = last(&j, "2026-12-07T07:00:00Z", SetResult::Set);
        // Two hours ahead: not yet; one hour ahead: now; once made: not again.
        assert_eq!(
            due(&s, &j, Some(&set_early), next, t("2026-12-07T08:00:00Z")),
            None
        );
        assert_eq!(
            due(&s, &j, Some(&set_early), next, t("2026-12-07T09:00:00Z")),
            Some(Due::Refresh)
        );
        let refreshed = last(&j, "2026-12-07T09:00:01Z", SetResult::Set);
        assert_eq!(
            due(&s, &j, Some(&refreshed), next, t("2026-12-07T09:30:00Z")),
            None
        );
        // A refusal waits for the next refresh too.
        let refused = last(&j, "2026-12-07T09:00:01Z", SetResult::Refused);
        assert_eq!(due(&s, &j, Some(&refused), next, t("2026-12-07T09:30:00Z")), None);
        // The next occurrence, 30 minutes later, gets its own call though the last is recent.
        let following = Some((2, t("2026-12-07T10:30:00Z")));
        assert_eq!(
            due(&s, &j, Some(&refreshed), following, t("2026-12-07T10:00:01Z")),
            Some(Due::Refresh)
        );
    }

    #[test]
    fn a_failed_or_interrupted_call_is_made_again_after_a_minute() {
        let s = setting();
        let j = s.to_json();
        for r in [SetResult::Error, SetResult::Pending] {
            let l = last(&j, "2026-12-07T08:00:00Z", r);
            assert_eq!(due(&s, &j, Some(&l), None, t("2026-12-07T08:00:59Z")), None);
            assert_eq!(
                due(&s, &j, Some(&l), None, t("2026-12-07T08:01:00Z")),
                Some(Due::Retry)
            );
        }
    }

    #[test]
    fn the_next_look_is_the_window_opening_or_the_retry_whichever_comes_first() {
        let s = setting();
        let j = s.to_json();
        let next = Some((1, t("2026-12-07T10:00:00Z")));
        let now = t("2026-12-07T08:00:00Z");
        assert_eq!(next_look(&s, None, next, now), Some(t("2026-12-07T09:00:00Z")));
        let failed = last(&j, "2026-12-07T07:59:30Z", SetResult::Error);
        assert_eq!(
            next_look(&s, Some(&failed), next, now),
            Some(t("2026-12-07T08:00:30Z"))
        );
        // Inside the window already, nothing failed: only a new plan can make one due.
        let set = last(&j, "2026-12-07T09:00:01Z", SetResult::Set);
        assert_eq!(next_look(&s, Some(&set), next, t("2026-12-07T09:10:00Z")), None);
    }

    #[test]
    fn when_maps_to_dingtalks_start_type() {
        assert_eq!(When::parse("host").map(When::start_type), Ok(0));
        assert_eq!(When::parse("cohost").map(When::start_type), Ok(1));
        assert_eq!(When::parse("anyone").map(When::start_type), Ok(2));
        assert!(When::parse("hots").expect_err("bad").hint.is_some());
        assert_eq!(When::Anyone.as_str(), "anyone");
    }
}
