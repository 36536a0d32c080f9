//! What the scheduler tells `/readyz` and the watchdog: its heartbeat and the database's state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Shared between the scheduler loop, the writer and the HTTP handlers.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    /// Milliseconds since `started` of the loop's last beat.
    beat_ms: AtomicU64,
    /// How often the loop beats at least while busy.
    pub period: Duration,
    /// How long the loop said it would sleep after its last beat, in milliseconds.
    asleep_ms: AtomicU64,
    /// Database errors by who saw them (`scheduler`, `writer`): one's success must not hide the
    /// other's failure.
    db_errors: Mutex<std::collections::BTreeMap<&'static str, String>>,
    reload_error: Mutex<Option<String>>,
    /// The injected clock's instant at the start of the loop's last housekeeping (planning,
    /// the sweep) whose pass has completed: what a driver of a manual clock waits for before it
    /// moves time on, so that no firing is planned late (as a catch-up) because time ran ahead.
    planned_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// Set to have the next pass do its housekeeping whatever the time since the last one.
    housekeeping_wanted: std::sync::atomic::AtomicBool,
    /// The auto-record settings: when one may next be due, and how many calls are in flight.
    settings_next: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    settings_in_flight: std::sync::atomic::AtomicUsize,
}

impl Health {
    pub fn new(period: Duration) -> Self {
        Self {
            started: Instant::now(),
            beat_ms: AtomicU64::new(0),
            period,
            asleep_ms: AtomicU64::new(0),
            db_errors: Mutex::new(std::collections::BTreeMap::new()),
            reload_error: Mutex::new(None),
            planned_at: Mutex::new(None),
            housekeeping_wanted: std::sync::atomic::AtomicBool::new(false),
            settings_next: Mutex::new(None),
            settings_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The clock's instant of the last completed pass with housekeeping.
    pub fn planned_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.planned_at.lock().ok().and_then(|p| *p)
    }

    pub(crate) fn planned(&self, at: chrono::DateTime<chrono::Utc>) {
        if let Ok(mut p) = self.planned_at.lock() {
            *p = Some(at);
        }
    }

    pub(crate) fn settings(&self, next: Option<chrono::DateTime<chrono::Utc>>, in_flight: usize) {
        if let Ok(mut n) = self.settings_next.lock() {
            *n = next;
        }
        self.settings_in_flight.store(in_flight, Ordering::Release);
    }

    /// When an auto-record setting may next be due, as the loop last computed it; how many of
    /// their calls are in flight (a test driving an injected clock waits for them, and stops
    /// the clock at that instant).
    pub fn settings_state(&self) -> (Option<chrono::DateTime<chrono::Utc>>, usize) {
        (
            self.settings_next.lock().ok().and_then(|n| *n),
            self.settings_in_flight.load(Ordering::Acquire),
        )
    }

    /// Ask the loop to plan at its next pass (then wake it).
    pub fn want_housekeeping(&self) {
        self.housekeeping_wanted.store(true, Ordering::Release);
    }

    pub(crate) fn take_housekeeping_wish(&self) -> bool {
        self.housekeeping_wanted.swap(false, Ordering::AcqRel)
    }

    pub fn beat(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the loop last beat.
    pub fn heartbeat_age(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.beat_ms.load(Ordering::Relaxed)))
    }

    /// The loop goes to sleep for `d` (an idle loop sleeps up to a minute: not stuck).
    pub fn sleeping(&self, d: Duration) {
        self.asleep_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The loop is stuck when it has not beaten for 3 periods after the sleep it announced.
    pub fn loop_stuck(&self) -> bool {
        let asleep = Duration::from_millis(self.asleep_ms.load(Ordering::Relaxed));
        self.heartbeat_age() > self.period * 3 + asleep
    }

    pub fn db_failed(&self, source: &'static str, error: String) {
        if let Ok(mut g) = self.db_errors.lock() {
            g.insert(source, error);
        }
    }

    pub fn db_recovered(&self, source: &'static str) {
        if let Ok(mut g) = self.db_errors.lock() {
            g.remove(source);
        }
    }

    pub fn db_ok(&self) -> bool {
        self.db_errors.lock().map(|g| g.is_empty()).unwrap_or(false)
    }

    pub fn db_error(&self) -> Option<String> {
        self.db_errors
            .lock()
            .ok()
            .and_then(|g| g.iter().next().map(|(k, v)| format!("{k}: {v}")))
    }

    pub fn set_reload_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.reload_error.lock() {
            *g = e;
        }
    }

    pub fn reload_error(&self) -> Option<String> {
        self.reload_error.lock().ok().and_then(|g| g.clone())
    }
}
