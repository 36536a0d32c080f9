//! systemd's notify protocol (sd_notify): `READY=1`, `RELOADING=1` with `MONOTONIC_USEC`,
//! `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`. A no-op without `$NOTIFY_SOCKET`.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Talks to systemd when it is listening.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Read `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (for this process) once.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        // As sd_watchdog_enabled(3): WATCHDOG_USEC, and WATCHDOG_PID unset or ours.
        let usec = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = match usec {
            Some(u) if enabled && for_us && u > 0 => Some(Duration::from_micros(u)),
            _ => None,
        };
        Self { enabled, watchdog }
    }

    pub fn disabled() -> Self {
        Self {
            enabled: false,
            watchdog: None,
        }
    }

    /// How often to send `WATCHDOG=1`: half the watchdog period.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled
            && let Err(e) = sd_notify::notify(false, states)
        {
            debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(t) => self.send(&[NotifyState::Reloading, t]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
