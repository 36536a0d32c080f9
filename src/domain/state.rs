//! The lifecycle words of the audit log, as types: an occurrence's state, what made it, and an
//! attempt's outcome. Each is stored as its TEXT name (`docs/database.md` lists them; the schema's
//! CHECK constraints hold the same lists), and code outside this module names them only through
//! these enums, matched exhaustively, so adding a state is one edit here plus a migration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Declares a unit enum stored as snake_case TEXT, with `ALL`, `as_str`, `Display` and `FromStr`.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
        #[serde(rename_all = "snake_case")]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in lifecycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The TEXT stored in the database and shown to people.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The TEXT names of [`Self::ALL`] (for clap's possible values).
            pub const NAMES: &'static [&'static str] = &[$($text),+];
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownName { what: $what, name: other.to_owned() }),
                }
            }
        }
    };
}

/// A stored name that is none of the enum's values (an outside edit, or a newer dingrec).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{name}'")]
pub struct UnknownName {
    pub what: &'static str,
    pub name: String,
}

text_enum!(
    /// Where an occurrence is in its life (`occurrences.state`).
    OccurrenceState, "occurrence state", {
        /// Planned; waiting for its due time.
        Scheduled => "scheduled",
        /// Claimed: an attempt's intent row is written and its call is queued or in flight.
        Running => "running",
        /// The last attempt can be retried; `next_attempt_at` says when.
        RetryWait => "retry_wait",
        /// DingTalk accepted StartCloudRecord; checks that the recording runs are pending
        /// (`next_check_at` says when). Only with `verify` on.
        Verifying => "verifying",
        /// The recording runs: confirmed by a check (`verified_at`), or, with `verify: false`,
        /// DingTalk accepted StartCloudRecord.
        Succeeded => "succeeded",
        /// DingTalk answered with a code that retrying cannot fix.
        Failed => "failed",
        /// The window or `maximum_attempts` ran out before the recording started.
        Expired => "expired",
        /// Its window passed before dingrec could make an attempt (the daemon was down).
        Missed => "missed",
        /// Withdrawn before it ran: its policy changed or was disabled.
        Cancelled => "cancelled",
    }
);

impl OccurrenceState {
    /// States that will still see attempts.
    pub const LIVE: &'static [OccurrenceState] = &[
        OccurrenceState::Scheduled,
        OccurrenceState::Running,
        OccurrenceState::RetryWait,
        OccurrenceState::Verifying,
    ];

    /// Will this occurrence still see attempts (or the checks that may lead to one)?
    pub const fn is_live(self) -> bool {
        match self {
            OccurrenceState::Scheduled
            | OccurrenceState::Running
            | OccurrenceState::RetryWait
            | OccurrenceState::Verifying => true,
            OccurrenceState::Succeeded
            | OccurrenceState::Failed
            | OccurrenceState::Expired
            | OccurrenceState::Missed
            | OccurrenceState::Cancelled => false,
        }
    }

    /// A final state a person must hear about (logged at ERROR, counted, alerted).
    pub const fn is_final_failure(self) -> bool {
        match self {
            OccurrenceState::Failed | OccurrenceState::Expired | OccurrenceState::Missed => true,
            OccurrenceState::Scheduled
            | OccurrenceState::Running
            | OccurrenceState::RetryWait
            | OccurrenceState::Verifying
            | OccurrenceState::Succeeded
            | OccurrenceState::Cancelled => false,
        }
    }
}

text_enum!(
    /// What made an occurrence (`occurrences.trigger`).
    Trigger, "trigger", {
        /// Its policy's schedule, at its due time.
        Schedule => "schedule",
        /// Its due time passed while dingrec was down and its window was still open at start.
        CatchUp => "catch_up",
        /// `dingrec trigger`.
        Manual => "manual",
        /// A watch check found the recording of a succeeded occurrence stopped while the meeting
        /// was in progress (`verify.restart`): a new occurrence, due at once.
        Restart => "restart",
        /// DingTalk's `conference_created` event for a meeting a `match` policy wants.
        Event => "event",
    }
);

text_enum!(
    /// What came of an event DingTalk pushed (`events.outcome`).
    EventOutcome, "event outcome", {
        /// An enabled `match` policy wants its meeting: an occurrence was made.
        Matched => "matched",
        /// No enabled `match` policy wants it (or it is not an event dingrec acts on).
        Ignored => "ignored",
        /// A policy wants its meeting, which already has its occurrence (another event, a
        /// catch-up, another daemon).
        Duplicate => "duplicate",
        /// Unreadable, or missing what it needs (a meeting id, the creator for `host: creator`).
        Invalid => "invalid",
    }
);

text_enum!(
    /// What a check asked (`checks.kind`).
    CheckKind, "check kind", {
        /// After StartCloudRecord answered 200 (or after a crash left a call's outcome unknown):
        /// does the recording run?
        Start => "start",
        /// While the meeting is in progress (`verify.watch`): does it still run?
        Watch => "watch",
        /// After the meeting (`verify.video`): is there a video?
        Video => "video",
        /// UpdateScheduleConfSettings: DingTalk's own auto-recording set on a scheduled meeting
        /// (`auto_record`, docs/auto-record.md).
        Settings => "settings",
    }
);

text_enum!(
    /// What a check found (`checks.outcome`; NULL while its call is in flight).
    CheckOutcome, "check outcome", {
        /// `cloudRecordStatus` 1: recording.
        Recording => "recording",
        /// `cloudRecordStatus` 0: not recording.
        NotRecording => "not_recording",
        /// `cloudRecordStatus` 2: paused by a participant.
        Paused => "paused",
        /// `cloudRecordStatus` 3: the recording ended while the meeting goes on.
        Stopped => "stopped",
        /// The meeting is over (`status` 1, `roomClosed`, `roomNotFound`).
        MeetingEnded => "meeting_ended",
        /// QueryCloudRecordVideo listed the meeting's videos.
        VideoFound => "video_found",
        /// QueryCloudRecordVideo answered `cloudRecordNotFound`.
        NoVideo => "no_video",
        /// The check could not be made (timeout, 5xx, throttled, dingrec stopped): tried again.
        Error => "error",
        /// A settings call: DingTalk accepted the auto-record setting.
        Set => "set",
        /// A settings call: DingTalk refused it (`creatorUidError`, `noPermission`, ...).
        Refused => "refused",
        /// The due-time check of an `auto_record` policy: DingTalk's own auto-recording runs,
        /// no StartCloudRecord is sent.
        AutoRecorded => "auto_recorded",
        /// The due-time check: the meeting is live and not recording; StartCloudRecord follows.
        AutoRecordMissed => "auto_record_missed",
    }
);

text_enum!(
    /// What one attempt came to (`attempts.outcome`; NULL while its call is in flight).
    AttemptOutcome, "attempt outcome", {
        /// DingTalk accepted the start.
        Success => "success",
        /// Failed in a way worth another attempt.
        Retry => "retry",
        /// Failed for good (the occurrence is `failed` or `expired`).
        Fail => "fail",
        /// dingrec stopped (or could not read the attempt back) before it had an outcome.
        Interrupted => "interrupted",
    }
);

text_enum!(
    /// What an alert is about (`alerts.event`, config.yaml's `alerts.events`). The migration's
    /// triggers write the occurrence and check events; `auth_broken`, `quota`, `policy_files_empty` and the `stream_*` ones come from code.
    AlertEvent, "alert event", {
        /// An occurrence failed for good (a code that no retry can fix).
        Failed => "failed",
        /// An occurrence's window passed before the recording could be started.
        Expired => "expired",
        /// A start passed while dingrec was not running, and its window too.
        Missed => "missed",
        /// The start checks did not see the recording run after a 200.
        NotRecording => "not_recording",
        /// A watch check saw the recording paused.
        Paused => "paused",
        /// A watch check saw the recording stopped while the meeting goes on.
        RecordingStopped => "recording_stopped",
        /// The meeting ended and left no video.
        NoVideo => "no_video",
        /// DingTalk refuses dingrec's credentials: no call can be made.
        AuthBroken => "auth_broken",
        /// The organisation's monthly API quota is running out, or spent.
        Quota => "quota",
        /// The policy files the daemon reads (`policies.paths`) held no policy at all while the
        /// database holds enabled policies from them: nothing was changed.
        PolicyFilesEmpty => "policy_files_empty",
        /// Stream mode has been down longer than `dingtalk.stream.alert_after`: meetings nobody
        /// declared are not found until it is back (the catch-up then finds those in progress).
        StreamDown => "stream_down",
        /// Stream mode is connected again after a `stream_down`.
        StreamRecovered => "stream_recovered",
        /// DingTalk refused a policy's auto-record setting; the policy falls back to
        /// StartCloudRecord alone.
        AutoRecordRefused => "auto_record_refused",
        /// The auto-record setting did not start the recording twice in a row (StartCloudRecord did).
        AutoRecordMissed => "auto_record_missed",
        /// `dingrec alerts test`: a message that checks the way to a destination.
        Test => "test",
    }
);

text_enum!(
    /// Where an alert's delivery stands (`alerts.state`).
    AlertState, "alert state", {
        /// Not delivered yet: the sender tries (again) at `next_attempt_at`.
        Pending => "pending",
        /// The destination accepted it.
        Sent => "sent",
        /// Given up: refused for good, or not delivered within 24 hours.
        Failed => "failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text() {
        for s in OccurrenceState::ALL {
            assert_eq!(s.as_str().parse::<OccurrenceState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>(), Ok(*t));
        }
        for o in AttemptOutcome::ALL {
            assert_eq!(o.as_str().parse::<AttemptOutcome>(), Ok(*o));
        }
        for k in CheckKind::ALL {
            assert_eq!(k.as_str().parse::<CheckKind>(), Ok(*k));
        }
        for o in CheckOutcome::ALL {
            assert_eq!(o.as_str().parse::<CheckOutcome>(), Ok(*o));
        }
        for e in AlertEvent::ALL {
            assert_eq!(e.as_str().parse::<AlertEvent>(), Ok(*e));
        }
        for a in AlertState::ALL {
            assert_eq!(a.as_str().parse::<AlertState>(), Ok(*a));
        }
        assert_eq!(OccurrenceState::NAMES.len(), OccurrenceState::ALL.len());
        assert!("Succeeded".parse::<OccurrenceState>().is_err());
    }

    #[test]
    fn live_states_are_exactly_the_non_final_ones() {
        for s in OccurrenceState::ALL {
            assert_eq!(OccurrenceState::LIVE.contains(s), s.is_live(), "{s}");
            assert!(!(s.is_live() && s.is_final_failure()), "{s}");
        }
    }
}
