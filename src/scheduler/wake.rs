//! When the scheduler loop wakes next: the arithmetic of one pass's sleep, apart from the loop
//! so that each case can be tested. (A commit, a notification or a signal wakes the loop sooner;
//! this is the latest it sleeps.)

use std::time::Duration;

use chrono::TimeDelta;

/// What one pass of the loop knows when it goes to sleep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pass {
    /// The longest sleep: the tick, or after a database error the back-off.
    pub longest: Duration,
    /// The pass started calls: more may be due at once, so look again without sleeping.
    pub started: bool,
    /// A worker is free (a due start would be taken at once). Without room, the due times do
    /// not matter: the loop waits for a worker (the outcome writer wakes it) or the tick.
    pub room: bool,
    /// How long until the next attempt is due (zero when due already).
    pub due: Option<Duration>,
    /// How long until the next check is due (zero when due already).
    pub check: Option<Duration>,
    /// How long until the first lease of another daemon ends (negative: ended already).
    pub take_over: Option<TimeDelta>,
}

/// How long the loop sleeps, and whether it must end at a due instant (met to the millisecond:
/// the loop wakes a little early and yields until it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wake {
    pub after: Duration,
    pub at_due: bool,
}

/// A start due but not claimable (its window just closed; the sweep takes it), or a check due
/// now: looked at again this soon, not in a busy loop.
const SOON: Duration = Duration::from_millis(1);

/// A lease that ended and is still there is being taken over by another daemon: looked at again
/// this soon.
const TAKEN_OVER_AGAIN: Duration = Duration::from_millis(50);

pub(crate) fn wake_up(p: Pass) -> Wake {
    let mut w = Wake {
        after: p.longest,
        at_due: false,
    };
    if p.started {
        w.after = Duration::ZERO;
    } else if p.room {
        match p.due {
            Some(d) if d.is_zero() => w.after = w.after.min(SOON),
            Some(d) if d < w.after => {
                w.after = d;
                w.at_due = true;
            }
            _ => {}
        }
        if let Some(c) = p.check.map(|c| c.max(SOON))
            && c < w.after
        {
            // A check is not held to the millisecond.
            w.after = c;
            w.at_due = false;
        }
    }
    // Just after the lease ends (a lease is held until its instant).
    if let Some(t) = p.take_over {
        let wait = t.to_std().map_or(TAKEN_OVER_AGAIN, |d| d + SOON);
        if wait < w.after {
            w.after = wait;
            w.at_due = false;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);

    fn idle() -> Pass {
        Pass {
            longest: TICK,
            started: false,
            room: true,
            due: None,
            check: None,
            take_over: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn with_nothing_due_the_loop_sleeps_its_tick() {
        assert_eq!(
            wake_up(idle()),
            Wake {
                after: TICK,
                at_due: false
            }
        );
        let later = Pass {
            due: Some(ms(5000)),
            check: Some(ms(3000)),
            ..idle()
        };
        assert_eq!(wake_up(later).after, TICK, "nothing sleeps past the tick");
    }

    #[test]
    fn a_start_due_within_the_tick_is_met_at_its_instant_and_a_check_is_not() {
        let start = Pass {
            due: Some(ms(250)),
            ..idle()
        };
        assert_eq!(
            wake_up(start),
            Wake {
                after: ms(250),
                at_due: true
            }
        );
        let check_first = Pass {
            due: Some(ms(250)),
            check: Some(ms(100)),
            ..idle()
        };
        assert_eq!(
            wake_up(check_first),
            Wake {
                after: ms(100),
                at_due: false
            }
        );
        let start_first = Pass {
            due: Some(ms(100)),
            check: Some(ms(250)),
            ..idle()
        };
        assert_eq!(wake_up(start_first).after, ms(100));
        assert!(wake_up(start_first).at_due);
    }

    #[test]
    fn what_is_due_already_is_looked_at_soon_not_in_a_busy_loop() {
        let due = Pass {
            due: Some(Duration::ZERO),
            ..idle()
        };
        assert_eq!(wake_up(due).after, SOON);
        assert!(!wake_up(due).at_due);
        let check = Pass {
            check: Some(Duration::ZERO),
            ..idle()
        };
        assert_eq!(wake_up(check).after, SOON);
    }

    #[test]
    fn started_calls_look_again_at_once_and_a_full_pool_waits_for_a_worker() {
        let started = Pass {
            started: true,
            due: Some(ms(500)),
            ..idle()
        };
        assert_eq!(wake_up(started).after, Duration::ZERO);
        let full = Pass {
            room: false,
            due: Some(Duration::ZERO),
            check: Some(Duration::ZERO),
            ..idle()
        };
        assert_eq!(
            wake_up(full),
            Wake {
                after: TICK,
                at_due: false
            },
            "woken by the outcome writer, or the tick"
        );
    }

    #[test]
    fn another_daemons_lease_is_taken_over_just_after_it_ends() {
        let lease = Pass {
            due: Some(ms(900)),
            take_over: Some(TimeDelta::milliseconds(300)),
            ..idle()
        };
        assert_eq!(
            wake_up(lease),
            Wake {
                after: ms(301),
                at_due: false
            }
        );
        let ended = Pass {
            take_over: Some(TimeDelta::milliseconds(-5)),
            ..idle()
        };
        assert_eq!(wake_up(ended).after, TAKEN_OVER_AGAIN);
        let after_error = Pass {
            longest: ms(400),
            room: false,
            take_over: Some(TimeDelta::seconds(3)),
            ..idle()
        };
        assert_eq!(wake_up(after_error).after, ms(400), "the back-off, when sooner");
    }
}
