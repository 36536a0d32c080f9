//! Making sure it records (`docs/policies.md`, "Verification"): the `verify` settings and the
//! decision after each check. Pure functions, like [`super::retry`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::retry::RetryPolicy;
use super::state::{CheckKind, CheckOutcome, OccurrenceState};

/// How an occurrence's recording is checked. `verify: false` in a policy is `None` where a
/// policy holds an `Option<Verify>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// The first check, this long after StartCloudRecord answered 200.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// At most this many checks of one start: at `after`, `2×after`, `4×after`, …
    pub checks: u32,
    /// While the meeting is in progress, check again this often (zero: never).
    #[serde(with = "humantime_serde")]
    pub watch: Duration,
    /// A recording found not running while the meeting is live: start it again.
    pub restart: bool,
    /// Once the meeting has ended, look up its video.
    pub video: bool,
}

impl Default for Verify {
    fn default() -> Self {
        Self {
            after: Duration::from_secs(15),
            checks: 3,
            watch: Duration::ZERO,
            restart: true,
            video: false,
        }
    }
}

/// The shortest `after`.
pub const MIN_AFTER: Duration = Duration::from_secs(1);
/// The longest `after`.
pub const MAX_AFTER: Duration = Duration::from_secs(3600);
/// The most checks of one start.
pub const MAX_CHECKS: u32 = 10;
/// The shortest `watch` (each watch check is a DingTalk call that counts against the monthly
/// quota: once a minute for a month is 43,000).
pub const MIN_WATCH: Duration = Duration::from_secs(10);
/// The longest `watch`, and the longest span of a start's checks.
pub const MAX_WATCH: Duration = Duration::from_secs(24 * 3600);

/// Why a [`Verify`] was refused; [`VerifyError::field`] names the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("verify.after must be from 1s to 1h")]
    After,
    #[error("verify.checks must be from 1 to 10")]
    Checks,
    #[error("verify.checks: the last check (after × 2^(checks−1)) must come within 24h of the start")]
    Span,
    #[error("verify.watch must be 0s (off) or from 10s to 24h (every watch check is a DingTalk call)")]
    Watch,
}

impl VerifyError {
    pub const fn field(self) -> &'static str {
        match self {
            VerifyError::After => "after",
            VerifyError::Checks | VerifyError::Span => "checks",
            VerifyError::Watch => "watch",
        }
    }
}

impl Verify {
    /// The values lie within their bounds.
    pub fn check(&self) -> Result<(), VerifyError> {
        if !(MIN_AFTER..=MAX_AFTER).contains(&self.after) {
            return Err(VerifyError::After);
        }
        if !(1..=MAX_CHECKS).contains(&self.checks) {
            return Err(VerifyError::Checks);
        }
        if self.check_at(self.checks - 1) > MAX_WATCH {
            return Err(VerifyError::Span);
        }
        if !(self.watch.is_zero() || (MIN_WATCH..=MAX_WATCH).contains(&self.watch)) {
            return Err(VerifyError::Watch);
        }
        Ok(())
    }

    /// When check `i` (0-based) of a start comes, after the start's 200: `after × 2^i`.
    pub fn check_at(&self, i: u32) -> Duration {
        self.after.saturating_mul(1u32.checked_shl(i).unwrap_or(u32::MAX))
    }

    /// The wait from check `made − 1` to check `made` of a start (`made` ≥ 1), or from the 200 to
    /// the first check (`made` = 0).
    pub fn wait_before(&self, made: u32) -> Duration {
        match made {
            0 => self.after,
            n => self.check_at(n).saturating_sub(self.check_at(n - 1)),
        }
    }
}

/// What a check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// QueryConferenceInfo answered: `confInfo.status` (0 not started, 1 ended, 2 in progress),
    /// `cloudRecordStatus` (0 not recording, 1 recording, 2 paused, 3 ended).
    Info { meeting_status: i64, record_status: i64 },
    /// The meeting is gone (`roomClosed`, `roomNotFound`).
    MeetingGone,
    /// QueryCloudRecordVideo listed this many videos.
    Videos(usize),
    /// QueryCloudRecordVideo answered `cloudRecordNotFound`.
    NoVideo,
    /// The check could not be made (timeout, 5xx, throttled, a token problem).
    Failed,
}

/// What the occurrence does after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckNext {
    /// Check again (`kind`) at the instant; the occurrence stays as it is.
    Again(CheckKind, DateTime<Utc>),
    /// The recording runs: `succeeded` (with `verified_at`), then the next check, if any.
    Confirmed(Option<(CheckKind, DateTime<Utc>)>),
    /// Not recording after the start's last check: `retry_wait`, a new StartCloudRecord now.
    StartAgain,
    /// Not recording, and no attempt or window left: `expired`, `notRecording`.
    Expired,
    /// Start checks that could never be made, and the window is over: `succeeded` as DingTalk
    /// said, without `verified_at`.
    Unconfirmed,
    /// The recording stopped while the meeting is live and `restart` is on: a `restart`
    /// occurrence, due now. This one's watch ends.
    Restart,
    /// Nothing more to check.
    Done,
}

/// What the decision needs to know about the occurrence.
#[derive(Debug, Clone, Copy)]
pub struct CheckContext {
    pub now: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    /// Start checks of the current start made before this one (not counting failed ones).
    pub made: u32,
    /// Checks that failed in a row before this one.
    pub failed_in_a_row: u32,
    /// Another StartCloudRecord may count against `maximum_attempts`.
    pub attempts_left: bool,
}

fn at(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    super::time::add(now, d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// After the meeting is seen ended: the video look-up (after `after`, so DingTalk has time to
/// list the video), or nothing.
fn after_the_meeting(v: &Verify, now: DateTime<Utc>) -> Option<(CheckKind, DateTime<Utc>)> {
    v.video.then(|| (CheckKind::Video, at(now, v.after)))
}

/// While the meeting is live, the next watch check, if watching.
fn next_watch(v: &Verify, now: DateTime<Utc>) -> Option<(CheckKind, DateTime<Utc>)> {
    (!v.watch.is_zero()).then(|| (CheckKind::Watch, at(now, v.watch)))
}

/// Decide a check's outcome and the occurrence's next step. `u` in `[0, 1)` draws the jitter of
/// a failed check's backoff.
pub fn decide_check(
    kind: CheckKind,
    v: &Verify,
    retry: &RetryPolicy,
    seen: &Seen,
    ctx: CheckContext,
    u: f64,
) -> (CheckOutcome, CheckNext) {
    let ended = matches!(
        seen,
        Seen::MeetingGone
            | Seen::Info {
                meeting_status: 1,
                ..
            }
    );
    let outcome = match seen {
        Seen::Failed => CheckOutcome::Error,
        Seen::Videos(_) => CheckOutcome::VideoFound,
        Seen::NoVideo => CheckOutcome::NoVideo,
        _ if ended => CheckOutcome::MeetingEnded,
        Seen::Info { record_status: 1, .. } => CheckOutcome::Recording,
        Seen::Info { record_status: 2, .. } => CheckOutcome::Paused,
        Seen::Info { record_status: 3, .. } => CheckOutcome::Stopped,
        _ => CheckOutcome::NotRecording,
    };
    if outcome == CheckOutcome::Error {
        // Not "not recording": the same check again after the policy's backoff, within bounds.
        let n = ctx.failed_in_a_row.saturating_add(1);
        let next = at(ctx.now, retry.backoff(n, u).max(super::retry::THROTTLE_WAIT));
        return match kind {
            CheckKind::Start if next <= ctx.window_ends_at => (outcome, CheckNext::Again(kind, next)),
            CheckKind::Start => (outcome, CheckNext::Unconfirmed),
            CheckKind::Watch | CheckKind::Video if n < retry.maximum_attempts => {
                (outcome, CheckNext::Again(kind, next))
            }
            CheckKind::Watch | CheckKind::Video | CheckKind::Settings => (outcome, CheckNext::Done),
        };
    }
    let next = match kind {
        CheckKind::Start => match (outcome, seen) {
            (CheckOutcome::Recording | CheckOutcome::Paused, _) => {
                CheckNext::Confirmed(next_watch(v, ctx.now))
            }
            // Over before the check: it recorded if DingTalk says a recording ended.
            (
                CheckOutcome::MeetingEnded,
                Seen::Info {
                    record_status: 1..=3, ..
                },
            ) => CheckNext::Confirmed(after_the_meeting(v, ctx.now)),
            (CheckOutcome::MeetingEnded, _) => CheckNext::Expired,
            _ if ctx.made + 1 < v.checks => CheckNext::Again(kind, at(ctx.now, v.wait_before(ctx.made + 1))),
            _ if ctx.attempts_left && ctx.now < ctx.window_ends_at => CheckNext::StartAgain,
            _ => CheckNext::Expired,
        },
        CheckKind::Watch => match (outcome, seen) {
            (CheckOutcome::MeetingEnded, _) => {
                after_the_meeting(v, ctx.now).map_or(CheckNext::Done, |(k, t)| CheckNext::Again(k, t))
            }
            (
                CheckOutcome::NotRecording | CheckOutcome::Stopped,
                Seen::Info {
                    meeting_status: 2, ..
                },
            ) if v.restart => CheckNext::Restart,
            _ => CheckNext::Again(kind, at(ctx.now, v.watch)),
        },
        CheckKind::Video | CheckKind::Settings => CheckNext::Done,
    };
    (outcome, next)
}

/// What a check's result writes to its occurrence: the one decision both engines carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckWrite {
    pub step: CheckStep,
    /// A start check that was made (not failed): it counts towards the start's `checks`.
    pub counts: bool,
    /// The check failed (`error`): one more failure in a row.
    pub failed: bool,
}

/// The occurrence's next step after a check, as it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStep {
    /// The occurrence stays as it is; the next check (`kind`) at the instant.
    Again(CheckKind, DateTime<Utc>),
    /// `verifying` → `succeeded` (`verified`: a check confirmed the recording), then the next
    /// check, if any.
    Succeeded {
        verified: bool,
        then: Option<(CheckKind, DateTime<Utc>)>,
    },
    /// `verifying` → this state: `retry_wait` (a new StartCloudRecord now) or, when the policy
    /// was disabled meanwhile, `cancelled`.
    StartAgain(OccurrenceState),
    /// `verifying` → `expired` (`notRecording`).
    Expired,
    /// A `restart` occurrence due now, whose window ends at the instant.
    Restart(DateTime<Utc>),
    /// Nothing changes: a watch that ended, a video found or not, or a step that no longer
    /// applies (the occurrence moved on, or its policy was disabled).
    Nothing,
}

/// What a check of `kind` with `outcome`, deciding `next`, writes to an occurrence in `state` at
/// `now`. Only a `verifying` occurrence moves on by a start check; a restart is made only for an
/// enabled policy, with the policy's window after its offset (`restart_window_ms`).
pub fn check_write(
    kind: CheckKind,
    outcome: CheckOutcome,
    next: CheckNext,
    state: OccurrenceState,
    policy_enabled: bool,
    restart_window_ms: i64,
    now: DateTime<Utc>,
) -> CheckWrite {
    let failed = outcome == CheckOutcome::Error;
    let verifying = state == OccurrenceState::Verifying;
    let step = match next {
        CheckNext::Again(kind, at) => CheckStep::Again(kind, at),
        CheckNext::Confirmed(then) if verifying => CheckStep::Succeeded { verified: true, then },
        CheckNext::Unconfirmed if verifying => CheckStep::Succeeded {
            verified: false,
            then: None,
        },
        CheckNext::StartAgain if verifying => CheckStep::StartAgain(if policy_enabled {
            OccurrenceState::RetryWait
        } else {
            OccurrenceState::Cancelled
        }),
        CheckNext::Expired if verifying => CheckStep::Expired,
        CheckNext::Restart if policy_enabled => {
            let window = chrono::TimeDelta::milliseconds(restart_window_ms.max(1));
            CheckStep::Restart(now.checked_add_signed(window).unwrap_or(DateTime::<Utc>::MAX_UTC))
        }
        CheckNext::Done
        | CheckNext::Confirmed(_)
        | CheckNext::Unconfirmed
        | CheckNext::StartAgain
        | CheckNext::Expired
        | CheckNext::Restart => CheckStep::Nothing,
    };
    CheckWrite {
        step,
        counts: kind == CheckKind::Start && !failed,
        failed,
    }
}

#[cfg(test)]
mod tests {

    mod check_write {
        use super::super::*;
        use crate::domain::time::parse_utc;

        fn t(s: &str) -> DateTime<Utc> {
            parse_utc(s).expect("time")
        }

        #[test]
        fn only_a_verifying_occurrence_moves_on_by_a_start_check() {
            let now = t("2026-12-07T08:00:00Z");
            for (next, step) in [
                (
                    CheckNext::Confirmed(None),
                    CheckStep::Succeeded {
                        verified: true,
                        then: None,
                    },
                ),
                (
                    CheckNext::Unconfirmed,
                    CheckStep::Succeeded {
                        verified: false,
                        then: None,
                    },
                ),
                (
                    CheckNext::StartAgain,
                    CheckStep::StartAgain(OccurrenceState::RetryWait),
                ),
                (CheckNext::Expired, CheckStep::Expired),
            ] {
                let w = check_write(
                    CheckKind::Start,
                    CheckOutcome::Recording,
                    next,
                    OccurrenceState::Verifying,
                    true,
                    0,
                    now,
                );
                assert_eq!(w.step, step, "{next:?}");
                let moved_on = check_write(
                    CheckKind::Start,
                    CheckOutcome::Recording,
                    next,
                    OccurrenceState::Expired,
                    true,
                    0,
                    now,
                );
                assert_eq!(
                    moved_on.step,
                    CheckStep::Nothing,
                    "{next:?} after the occurrence moved on"
                );
            }
        }

        #[test]
        fn a_disabled_policy_is_cancelled_not_started_again_and_never_restarted() {
            let now = t("2026-12-07T08:00:00Z");
            let w = check_write(
                CheckKind::Start,
                CheckOutcome::NotRecording,
                CheckNext::StartAgain,
                OccurrenceState::Verifying,
                false,
                0,
                now,
            );
            assert_eq!(w.step, CheckStep::StartAgain(OccurrenceState::Cancelled));
            let w = check_write(
                CheckKind::Watch,
                CheckOutcome::Stopped,
                CheckNext::Restart,
                OccurrenceState::Succeeded,
                false,
                60_000,
                now,
            );
            assert_eq!(w.step, CheckStep::Nothing);
        }

        #[test]
        fn a_restart_gets_the_policy_window_after_its_offset_and_at_least_a_millisecond() {
            let now = t("2026-12-07T08:00:00Z");
            let w = check_write(
                CheckKind::Watch,
                CheckOutcome::Stopped,
                CheckNext::Restart,
                OccurrenceState::Succeeded,
                true,
                600_000,
                now,
            );
            assert_eq!(w.step, CheckStep::Restart(t("2026-12-07T08:10:00Z")));
            let w = check_write(
                CheckKind::Watch,
                CheckOutcome::Stopped,
                CheckNext::Restart,
                OccurrenceState::Succeeded,
                true,
                -5,
                now,
            );
            assert_eq!(w.step, CheckStep::Restart(t("2026-12-07T08:00:00.001Z")));
        }

        #[test]
        fn only_a_start_check_that_was_made_counts() {
            let now = t("2026-12-07T08:00:00Z");
            let again = CheckNext::Again(CheckKind::Start, now);
            let made = check_write(
                CheckKind::Start,
                CheckOutcome::NotRecording,
                again,
                OccurrenceState::Verifying,
                true,
                0,
                now,
            );
            assert_eq!((made.counts, made.failed), (true, false));
            let failed = check_write(
                CheckKind::Start,
                CheckOutcome::Error,
                again,
                OccurrenceState::Verifying,
                true,
                0,
                now,
            );
            assert_eq!((failed.counts, failed.failed), (false, true));
            let watch = check_write(
                CheckKind::Watch,
                CheckOutcome::Recording,
                again,
                OccurrenceState::Succeeded,
                true,
                0,
                now,
            );
            assert_eq!((watch.counts, watch.failed), (false, false));
            assert_eq!(watch.step, CheckStep::Again(CheckKind::Start, now));
        }
    }
    use chrono::TimeDelta;

    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
    }

    fn ctx(made: u32) -> CheckContext {
        CheckContext {
            now: now(),
            window_ends_at: now() + TimeDelta::minutes(30),
            made,
            failed_in_a_row: 0,
            attempts_left: true,
        }
    }

    fn info(meeting_status: i64, record_status: i64) -> Seen {
        Seen::Info {
            meeting_status,
            record_status,
        }
    }

    fn start(v: &Verify, seen: &Seen, c: CheckContext) -> (CheckOutcome, CheckNext) {
        decide_check(CheckKind::Start, v, &RetryPolicy::default(), seen, c, 0.5)
    }

    #[test]
    fn checks_come_at_after_twice_after_four_times_after() {
        let v = Verify::default();
        let offsets: Vec<u64> = (0..4).map(|i| v.check_at(i).as_secs()).collect();
        assert_eq!(offsets, vec![15, 30, 60, 120]);
        let waits: Vec<u64> = (0..4).map(|m| v.wait_before(m).as_secs()).collect();
        assert_eq!(waits, vec![15, 15, 30, 60]);
    }

    #[test]
    fn bounds_name_their_field() {
        let bad = |f: fn(&mut Verify)| {
            let mut v = Verify::default();
            f(&mut v);
            v.check().map_err(VerifyError::field)
        };
        assert_eq!(bad(|_| {}), Ok(()));
        assert_eq!(bad(|v| v.after = Duration::ZERO), Err("after"));
        assert_eq!(bad(|v| v.checks = 0), Err("checks"));
        assert_eq!(bad(|v| v.checks = 11), Err("checks"));
        assert_eq!(
            bad(|v| {
                v.after = Duration::from_secs(3600);
                v.checks = 10;
            }),
            Err("checks"),
            "an hour × 2^9 is three weeks"
        );
        assert_eq!(bad(|v| v.watch = Duration::from_secs(5)), Err("watch"));
        assert_eq!(bad(|v| v.watch = Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn recording_at_a_start_check_confirms_and_starts_the_watch_if_any() {
        let v = Verify::default();
        assert_eq!(
            start(&v, &info(2, 1), ctx(0)),
            (CheckOutcome::Recording, CheckNext::Confirmed(None))
        );
        let w = Verify {
            watch: Duration::from_secs(60),
            ..v
        };
        assert_eq!(
            start(&w, &info(2, 1), ctx(2)),
            (
                CheckOutcome::Recording,
                CheckNext::Confirmed(Some((CheckKind::Watch, now() + TimeDelta::seconds(60))))
            )
        );
    }

    #[test]
    fn not_recording_checks_again_then_starts_again_then_expires() {
        let v = Verify::default();
        assert_eq!(
            start(&v, &info(2, 0), ctx(0)),
            (
                CheckOutcome::NotRecording,
                CheckNext::Again(CheckKind::Start, now() + TimeDelta::seconds(15))
            )
        );
        assert_eq!(
            start(&v, &info(2, 0), ctx(1)).1,
            CheckNext::Again(CheckKind::Start, now() + TimeDelta::seconds(30))
        );
        assert_eq!(start(&v, &info(2, 0), ctx(2)).1, CheckNext::StartAgain);
        let out = CheckContext {
            attempts_left: false,
            ..ctx(2)
        };
        assert_eq!(
            start(&v, &info(2, 3), out),
            (CheckOutcome::Stopped, CheckNext::Expired)
        );
        let late = CheckContext {
            window_ends_at: now(),
            ..ctx(2)
        };
        assert_eq!(start(&v, &info(2, 0), late).1, CheckNext::Expired);
    }

    #[test]
    fn a_check_that_fails_is_tried_again_and_never_counts_as_not_recording() {
        let v = Verify::default();
        let (o, next) = start(&v, &Seen::Failed, ctx(2));
        assert_eq!(o, CheckOutcome::Error);
        assert!(matches!(next, CheckNext::Again(CheckKind::Start, t) if t > now()));
        let late = CheckContext {
            window_ends_at: now(),
            ..ctx(2)
        };
        assert_eq!(start(&v, &Seen::Failed, late).1, CheckNext::Unconfirmed);
        let r = RetryPolicy {
            maximum_attempts: 3,
            ..RetryPolicy::default()
        };
        let watch = |n| {
            decide_check(
                CheckKind::Watch,
                &v,
                &r,
                &Seen::Failed,
                CheckContext {
                    failed_in_a_row: n,
                    ..ctx(0)
                },
                0.0,
            )
            .1
        };
        assert!(matches!(watch(1), CheckNext::Again(CheckKind::Watch, _)));
        assert_eq!(
            watch(2),
            CheckNext::Done,
            "gives up after maximum_attempts in a row"
        );
    }

    #[test]
    fn a_meeting_over_before_its_first_check_is_confirmed_only_if_it_recorded() {
        let v = Verify {
            video: true,
            ..Verify::default()
        };
        assert_eq!(
            start(&v, &info(1, 3), ctx(0)),
            (
                CheckOutcome::MeetingEnded,
                CheckNext::Confirmed(Some((CheckKind::Video, now() + TimeDelta::seconds(15))))
            )
        );
        assert_eq!(start(&v, &info(1, 0), ctx(0)).1, CheckNext::Expired);
        assert_eq!(start(&v, &Seen::MeetingGone, ctx(0)).1, CheckNext::Expired);
    }

    #[test]
    fn the_watch_restarts_a_stopped_recording_only_while_the_meeting_is_live() {
        let v = Verify {
            watch: Duration::from_secs(60),
            ..Verify::default()
        };
        let watch = |v: &Verify, seen: &Seen| {
            decide_check(CheckKind::Watch, v, &RetryPolicy::default(), seen, ctx(0), 0.5)
        };
        let again = CheckNext::Again(CheckKind::Watch, now() + TimeDelta::seconds(60));
        assert_eq!(watch(&v, &info(2, 1)), (CheckOutcome::Recording, again));
        assert_eq!(
            watch(&v, &info(2, 2)),
            (CheckOutcome::Paused, again),
            "paused: no restart"
        );
        assert_eq!(
            watch(&v, &info(2, 3)),
            (CheckOutcome::Stopped, CheckNext::Restart)
        );
        assert_eq!(
            watch(&v, &info(2, 0)),
            (CheckOutcome::NotRecording, CheckNext::Restart)
        );
        let no_restart = Verify { restart: false, ..v };
        assert_eq!(watch(&no_restart, &info(2, 3)), (CheckOutcome::Stopped, again));
        assert_eq!(
            watch(&v, &info(1, 3)),
            (CheckOutcome::MeetingEnded, CheckNext::Done)
        );
        let with_video = Verify { video: true, ..v };
        assert_eq!(
            watch(&with_video, &Seen::MeetingGone),
            (
                CheckOutcome::MeetingEnded,
                CheckNext::Again(CheckKind::Video, now() + TimeDelta::seconds(15))
            )
        );
    }

    #[test]
    fn the_video_check_is_the_last() {
        let v = Verify::default();
        let video =
            |seen: &Seen| decide_check(CheckKind::Video, &v, &RetryPolicy::default(), seen, ctx(0), 0.5);
        assert_eq!(
            video(&Seen::Videos(2)),
            (CheckOutcome::VideoFound, CheckNext::Done)
        );
        assert_eq!(video(&Seen::NoVideo), (CheckOutcome::NoVideo, CheckNext::Done));
    }
}
