//! systemd's notify protocol (sd_notify): `READY=1`, `RELOADING=1` with `MONOTONIC_USEC`,
//! `STOPPING=1`, `WATCHDOG=1`, `STATUS=…`. A no-op without `$NOTIFY_SOCKET`.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Messages waiting for the sender thread; more than this and new ones are dropped (a reader
/// that stopped reading would not take them anyway).
const QUEUE: usize = 16;

/// One message for systemd, and who waits to hear it went (`STOPPING=1`).
struct Message {
    text: String,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Talks to systemd when it is listening. Sends happen on a thread of their own: a datagram to a
/// `NOTIFY_SOCKET` whose reader stopped reading blocks, and it must block nothing else (HTTP,
/// the scheduler loop). The async side only queues, and drops what does not fit.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: Option<std::sync::mpsc::SyncSender<Message>>,
    watchdog: Option<Duration>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("text", &self.text)
            .finish_non_exhaustive()
    }
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
        let queue = enabled.then(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("sd-notify".into())
                .spawn(move || {
                    for m in rx {
                        if let Err(e) = sd_notify::notify(false, &[NotifyState::Custom(&m.text)]) {
                            debug!(error = %e, "sd_notify failed");
                        }
                        if let Some(sent) = m.sent {
                            let _ = sent.send(());
                        }
                    }
                });
            spawned.ok().map(|_| tx)
        });
        Self {
            queue: queue.flatten(),
            watchdog,
        }
    }

    pub fn disabled() -> Self {
        Self {
            queue: None,
            watchdog: None,
        }
    }

    /// How often to send `WATCHDOG=1`: half the watchdog period.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    fn queue(&self, states: &[NotifyState], sent: Option<tokio::sync::oneshot::Sender<()>>) {
        let Some(q) = &self.queue else { return };
        let text = states
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        if q.try_send(Message { text, sent }).is_err() {
            debug!("sd_notify: systemd is not reading; message dropped");
        }
    }

    fn send(&self, states: &[NotifyState]) {
        self.queue(states, None);
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

    /// `STOPPING=1`, waited for (at most a second) so that it leaves before the process ends.
    pub async fn stopping(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue(
            &[NotifyState::Stopping, NotifyState::Status("stopping")],
            Some(tx),
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}
