//! Backoff maths and the decision after each attempt (`docs/policies.md`, "Retries"). Pure functions: the
//! random draw comes in as a number in `[0, 1)` so tests can pin it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::outcome::RetryClass;
use super::state::AttemptOutcome;

/// How an occurrence retries. Every field can be set in `defaults.retry` and per policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    #[serde(with = "humantime_serde")]
    pub maximum_interval: Duration,
    /// Attempts that count (throttled ones do not), the first included.
    pub maximum_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_secs(2),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(60),
            maximum_attempts: 30,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait after the `n`-th counted attempt (1-based):
    /// `initial_interval × backoff_coefficient^(n-1)`, capped at `maximum_interval`.
    pub fn cap(&self, n: u32) -> Duration {
        let exp = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exp);
        let max = self.maximum_interval.as_secs_f64();
        if !secs.is_finite() || secs >= max {
            self.maximum_interval
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// Full jitter: a wait drawn uniformly from `[0, cap(n)]`, with `u` in `[0, 1)`.
    pub fn backoff(&self, n: u32, u: f64) -> Duration {
        self.cap(n).mul_f64(u.clamp(0.0, 1.0))
    }

    /// Checks the values make sense and lie within their bounds; the error names the field.
    pub fn check(&self) -> Result<(), RetryError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.maximum_attempts) {
            return Err(RetryError::MaximumAttempts);
        }
        if !(self.backoff_coefficient.is_finite()
            && (1.0..=MAX_COEFFICIENT).contains(&self.backoff_coefficient))
        {
            return Err(RetryError::BackoffCoefficient);
        }
        if self.initial_interval > MAX_INTERVAL {
            return Err(RetryError::InitialInterval);
        }
        if self.initial_interval < MIN_INTERVAL {
            return Err(RetryError::InitialIntervalShort);
        }
        if self.maximum_interval > MAX_INTERVAL {
            return Err(RetryError::MaximumInterval);
        }
        if self.maximum_interval < self.initial_interval {
            return Err(RetryError::IntervalOrder);
        }
        Ok(())
    }
}

/// The most attempts one occurrence may make: a thousand calls are a fifth of a small
/// organisation's month (5,000), so no single occurrence can spend it.
pub const MAX_ATTEMPTS: u32 = 1_000;
/// The largest backoff coefficient.
pub const MAX_COEFFICIENT: f64 = 100.0;
/// The longest wait between two attempts.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The shortest `initial_interval`: retries of one meeting never come faster than about one a
/// second on average (a wait is drawn from zero to the interval), whatever a policy says.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Why a [`RetryPolicy`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    #[error("retry.maximum_attempts must be from 1 to 1000")]
    MaximumAttempts,
    #[error("retry.backoff_coefficient must be a number from 1.0 to 100")]
    BackoffCoefficient,
    #[error("retry.initial_interval must be at most 1 day")]
    InitialInterval,
    #[error(
        "retry.initial_interval must be at least 1s (retries of one meeting faster than that only spend DingTalk's quota)"
    )]
    InitialIntervalShort,
    #[error("retry.maximum_interval must be at most 1 day")]
    MaximumInterval,
    #[error("retry.maximum_interval must not be shorter than retry.initial_interval")]
    IntervalOrder,
}

impl RetryError {
    /// The field the error is about, as the policy file spells it under `retry`.
    pub const fn field(self) -> &'static str {
        match self {
            RetryError::MaximumAttempts => "maximum_attempts",
            RetryError::BackoffCoefficient => "backoff_coefficient",
            RetryError::InitialInterval | RetryError::InitialIntervalShort => "initial_interval",
            RetryError::MaximumInterval | RetryError::IntervalOrder => "maximum_interval",
        }
    }
}

/// How long a throttled call waits at least before it is tried again (DingTalk: "wait 1 s").
pub const THROTTLE_WAIT: Duration = Duration::from_secs(1);

/// Where the occurrence goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Succeeded,
    Failed,
    /// Out of attempts or out of window.
    Expired,
    RetryAt(DateTime<Utc>),
}

/// What the decision needs to know about the occurrence.
#[derive(Debug, Clone, Copy)]
pub struct AttemptContext {
    pub now: DateTime<Utc>,
    pub window_ends_at: DateTime<Utc>,
    /// Counted attempts including the one just made.
    pub counted_attempts: u32,
    /// Whether the previous attempt already asked for a fresh token.
    pub previous_was_reauth: bool,
}

/// Decide the attempt's outcome and the occurrence's next step.
pub fn decide(class: RetryClass, retry: &RetryPolicy, ctx: AttemptContext, u: f64) -> (AttemptOutcome, Next) {
    let wait = match class {
        RetryClass::Success => return (AttemptOutcome::Success, Next::Succeeded),
        RetryClass::Fail => return (AttemptOutcome::Fail, Next::Failed),
        RetryClass::Throttle => THROTTLE_WAIT + Duration::from_millis(500).mul_f64(u.clamp(0.0, 1.0)),
        // One free retry with a fresh token, but never beyond maximum_attempts.
        RetryClass::Reauth if !ctx.previous_was_reauth && ctx.counted_attempts < retry.maximum_attempts => {
            Duration::ZERO
        }
        RetryClass::Reauth | RetryClass::Retry => {
            if ctx.counted_attempts >= retry.maximum_attempts {
                return (AttemptOutcome::Fail, Next::Expired);
            }
            retry.backoff(ctx.counted_attempts, u)
        }
    };
    match super::time::add(ctx.now, wait) {
        Some(at) if at <= ctx.window_ends_at => (AttemptOutcome::Retry, Next::RetryAt(at)),
        _ => (AttemptOutcome::Fail, Next::Expired),
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_interval: Duration::from_secs(2),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(60),
            maximum_attempts: 5,
        }
    }

    fn ctx(counted: u32) -> AttemptContext {
        let now = DateTime::from_timestamp(1_800_000_000, 0).expect("valid");
        AttemptContext {
            now,
            window_ends_at: now + TimeDelta::minutes(30),
            counted_attempts: counted,
            previous_was_reauth: false,
        }
    }

    #[test]
    fn caps_grow_geometrically_up_to_the_maximum() {
        let p = policy();
        let caps: Vec<u64> = (1..=8).map(|n| p.cap(n).as_secs()).collect();
        assert_eq!(caps, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_cap() {
        let p = policy();
        assert_eq!(p.backoff(3, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(4));
        assert!(p.backoff(3, 0.999_999) <= Duration::from_secs(8));
        assert_eq!(p.backoff(3, 7.0), Duration::from_secs(8), "u is clamped");
    }

    #[test]
    fn success_and_fail_are_final() {
        assert_eq!(
            decide(RetryClass::Success, &policy(), ctx(1), 0.5),
            (AttemptOutcome::Success, Next::Succeeded)
        );
        assert_eq!(
            decide(RetryClass::Fail, &policy(), ctx(1), 0.5),
            (AttemptOutcome::Fail, Next::Failed)
        );
    }

    #[test]
    fn retries_wait_a_jittered_backoff() {
        let c = ctx(2);
        let (o, next) = decide(RetryClass::Retry, &policy(), c, 0.5);
        assert_eq!(o, AttemptOutcome::Retry);
        assert_eq!(next, Next::RetryAt(c.now + TimeDelta::seconds(2)));
    }

    #[test]
    fn retries_stop_at_maximum_attempts() {
        assert_eq!(
            decide(RetryClass::Retry, &policy(), ctx(5), 0.5),
            (AttemptOutcome::Fail, Next::Expired)
        );
    }

    #[test]
    fn retries_never_go_past_the_window() {
        let mut c = ctx(1);
        c.window_ends_at = c.now + TimeDelta::milliseconds(500);
        assert_eq!(
            decide(RetryClass::Retry, &policy(), c, 0.9),
            (AttemptOutcome::Fail, Next::Expired)
        );
    }

    #[test]
    fn throttles_wait_at_least_a_second_and_ignore_the_attempt_budget() {
        let c = ctx(5);
        let (o, next) = decide(RetryClass::Throttle, &policy(), c, 0.0);
        assert_eq!(o, AttemptOutcome::Retry);
        assert_eq!(next, Next::RetryAt(c.now + TimeDelta::seconds(1)));
    }

    #[test]
    fn a_wait_beyond_the_calendar_expires_instead_of_panicking() {
        // Only an outside edit of the database can hold such settings: validation bounds them.
        let huge = RetryPolicy {
            initial_interval: Duration::from_secs(u64::MAX / 4),
            maximum_interval: Duration::from_secs(u64::MAX / 4),
            ..policy()
        };
        assert_eq!(
            decide(RetryClass::Retry, &huge, ctx(1), 0.9),
            (AttemptOutcome::Fail, Next::Expired)
        );
    }

    #[test]
    fn the_reauth_retry_stays_within_maximum_attempts() {
        let one = RetryPolicy {
            maximum_attempts: 1,
            ..policy()
        };
        assert_eq!(
            decide(RetryClass::Reauth, &one, ctx(1), 0.5),
            (AttemptOutcome::Fail, Next::Expired)
        );
    }

    #[test]
    fn reauth_retries_at_once_but_only_once() {
        let c = ctx(1);
        assert_eq!(
            decide(RetryClass::Reauth, &policy(), c, 0.9),
            (AttemptOutcome::Retry, Next::RetryAt(c.now))
        );
        let again = AttemptContext {
            previous_was_reauth: true,
            ..c
        };
        let (_, next) = decide(RetryClass::Reauth, &policy(), again, 0.5);
        assert_eq!(
            next,
            Next::RetryAt(c.now + TimeDelta::seconds(1)),
            "second time: normal backoff"
        );
    }

    #[test]
    fn checks_name_the_bad_field() {
        let mut p = policy();
        p.maximum_attempts = 0;
        assert_eq!(p.check().expect_err("bad").field(), "maximum_attempts");
        let mut p = policy();
        p.backoff_coefficient = 0.5;
        assert_eq!(p.check().expect_err("bad").field(), "backoff_coefficient");
        let mut p = policy();
        p.maximum_interval = Duration::from_secs(1);
        let e = p.check().expect_err("bad");
        assert_eq!(e.field(), "maximum_interval");
        assert!(e.to_string().contains("initial_interval"), "{e}");
        let mut p = policy();
        p.initial_interval = Duration::from_secs(10_000_000 * 365 * 86_400);
        p.maximum_interval = p.initial_interval;
        assert_eq!(p.check().expect_err("bad").field(), "initial_interval");
        let mut p = policy();
        p.maximum_attempts = u32::MAX;
        assert_eq!(p.check().expect_err("bad").field(), "maximum_attempts");
    }
}
