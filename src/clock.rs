//! The wall clock, injected.
//!
//! Everything that decides what is due, or when to retry, asks a [`Clock`] for the time instead of
//! calling `Utc::now()` (clippy's `disallowed-methods` keeps it that way). Production uses
//! [`SystemClock`]; tests use [`ManualClock`] and move time explicitly instead of sleeping.
//!
//! The clock is also where the scheduler's chance comes from (the retries' jitter): a
//! [`ManualClock`] given a seed draws every number from it, keyed by what it is for (an
//! occurrence's n-th attempt, a check), so a seeded test replays exactly, whatever order its
//! calls finish in.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// A source of "now" in UTC.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// A number in `[0, 1)` for the random choice named by `key` (see [`chance_key`]); random
    /// unless the clock was seeded.
    fn chance(&self, key: u64) -> f64 {
        let _ = key;
        rand::random::<f64>()
    }

    /// The longest a task with nothing due may sleep without looking at this clock, given what
    /// it would choose (`idle`). The system clock moves by itself and a task sleeps until its
    /// next due instant or a notification; a [`ManualClock`] jumps when a test sets it, and the
    /// test need not wake anyone: tasks look at it at least every [`MANUAL_LOOK`].
    fn idle_wake(&self, idle: std::time::Duration) -> std::time::Duration {
        idle
    }
}

/// How often a task with nothing due looks at a [`ManualClock`].
pub const MANUAL_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// The key of a random choice: what it is for (`b'a'` an attempt's backoff, `b'c'` a check's)
/// and the row and number it belongs to.
pub fn chance_key(kind: u8, id: i64, n: i64) -> u64 {
    splitmix(splitmix(u64::from(kind) ^ (id as u64).rotate_left(8)) ^ (n as u64))
}

/// SplitMix64's step: a well-mixed 64-bit value from any 64-bit input.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
    seed: Option<u64>,
    /// Every instant it was set to, in order (the first [`MAX_STEPS`]): how a failing seeded
    /// test's time went.
    steps: Arc<Mutex<Vec<DateTime<Utc>>>>,
}

/// The most steps a [`ManualClock`] remembers.
const MAX_STEPS: usize = 100_000;

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            seed: None,
            steps: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The instants it was set to, in order.
    pub fn steps(&self) -> Vec<DateTime<Utc>> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// This clock, drawing every chance from `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
        if let Ok(mut steps) = self.steps.lock()
            && steps.len() < MAX_STEPS
        {
            steps.push(to);
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn chance(&self, key: u64) -> f64 {
        match self.seed {
            // The top 53 bits as a fraction: uniform in [0, 1).
            Some(seed) => (splitmix(seed ^ key) >> 11) as f64 / (1u64 << 53) as f64,
            None => rand::random::<f64>(),
        }
    }

    fn idle_wake(&self, idle: std::time::Duration) -> std::time::Duration {
        idle.min(MANUAL_LOOK)
    }
}
