//! Stream mode's health (docs/events.md "When the connection is down"): the `dingrec_stream_*`
//! gauges kept current, the `stream_down` alert once the connection has been down longer than
//! `dingtalk.stream.alert_after`, and `stream_recovered` when it is back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::clock::SharedClock;
use crate::dingtalk::stream::{StreamState, StreamStatus};
use crate::domain::AlertEvent;
use crate::domain::alert::Facts;
use crate::domain::time::fmt_utc;
use crate::metrics::Metrics;
use crate::store::Store;

/// While the connection is down and not yet said, the task looks at the clock this often at
/// most (the alert's resolution); otherwise it waits for the state to change, looking at least
/// every `IDLE`.
const TICK: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(60);

/// Watches the connection's state.
pub struct StreamHealth {
    pub status: watch::Receiver<StreamStatus>,
    pub alert_after: Duration,
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
}

/// What the state asks of the alerts, given whether `stream_down` was raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    Nothing,
    Down,
    Recovered,
}

/// Down too long and not said yet: `Down`; connected after saying so: `Recovered`.
pub fn what_to_say(
    s: &StreamStatus,
    raised: bool,
    now: chrono::DateTime<chrono::Utc>,
    after: Duration,
) -> Say {
    if !raised && s.down_longer_than(now, after) {
        Say::Down
    } else if raised && s.state == StreamState::Connected {
        Say::Recovered
    } else {
        Say::Nothing
    }
}

/// What `/readyz` reads of the connection.
#[derive(Clone)]
pub struct StreamView {
    /// `None`: Stream mode is off.
    pub status: Option<watch::Receiver<StreamStatus>>,
    pub alert_after: Duration,
}

impl StreamView {
    pub fn off() -> Self {
        Self {
            status: None,
            alert_after: Duration::ZERO,
        }
    }

    /// `/readyz`'s `stream`, and whether it lets the daemon be ready (not when it has been down
    /// longer than `alert_after`).
    pub fn report(&self, now: chrono::DateTime<chrono::Utc>) -> (bool, serde_json::Value) {
        let Some(status) = &self.status else {
            return (true, serde_json::json!({"state": StreamState::Off}));
        };
        let s = status.borrow().clone();
        let down = s.down_longer_than(now, self.alert_after);
        let body = serde_json::json!({
            "state": s.state,
            "connected_since": s.connected_since.map(fmt_utc),
            "down_since": s.down_since.map(fmt_utc),
            "last_event_at": s.last_event_at.map(fmt_utc),
            "reconnects": s.reconnects,
            "last_error": s.last_error,
            "down_too_long": down,
        });
        (!down, body)
    }
}

impl StreamHealth {
    /// Until `cancel`; an error (the alert could not be written) ends the daemon.
    pub async fn run_until_stopped(mut self, cancel: CancellationToken) -> Result<(), String> {
        let mut raised = false;
        loop {
            let s = self.status.borrow_and_update().clone();
            self.metrics
                .stream(s.state == StreamState::Connected, s.reconnects);
            match what_to_say(&s, raised, self.clock.now(), self.alert_after) {
                Say::Down => {
                    let since = s.down_since.map(fmt_utc).unwrap_or_default();
                    let why = s.last_error.clone().unwrap_or_default();
                    error!(since = %since, error = %why, "Stream mode has been down longer than dingtalk.stream.alert_after");
                    let text = format!(
                        "dingrec {} has had no Stream connection since {since} ({why}): meetings nobody declared are not found until it is back",
                        crate::instance::this()
                    );
                    self.raise(AlertEvent::StreamDown, text).await?;
                    raised = true;
                }
                Say::Recovered => {
                    info!("Stream mode is connected again");
                    let text = format!(
                        "dingrec {} is connected again since {}",
                        crate::instance::this(),
                        s.connected_since.map(fmt_utc).unwrap_or_default()
                    );
                    self.raise(AlertEvent::StreamRecovered, text).await?;
                    raised = false;
                }
                Say::Nothing => {}
            }
            // Until the down time passes `alert_after` (to the tick), or a change.
            let wait = match s.down_since.filter(|_| !raised && s.state == StreamState::Down) {
                Some(since) => chrono::TimeDelta::from_std(self.alert_after)
                    .ok()
                    .and_then(|after| since.checked_add_signed(after))
                    .map_or(TICK, |at| (at - self.clock.now()).to_std().unwrap_or(TICK))
                    .clamp(TICK, IDLE),
                None => IDLE,
            };
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                changed = self.status.changed() => if changed.is_err() { return Ok(()) },
                () = tokio::time::sleep(self.clock.idle_wake(wait)) => {}
            }
        }
    }

    async fn raise(&self, event: AlertEvent, text: String) -> Result<(), String> {
        let facts = Facts {
            text: Some(text),
            ..Facts::default()
        };
        self.store
            .raise_alert(event, None, &facts, self.clock.now())
            .await
            .map(|_| ())
            .map_err(|e| format!("cannot raise the {event} alert: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    #[test]
    fn down_is_said_once_after_the_bound_and_recovery_only_after_it() {
        let after = Duration::from_secs(300);
        let mut s = StreamStatus::off();
        s.state = StreamState::Connecting;
        assert_eq!(
            what_to_say(&s, false, at(10_000), after),
            Say::Nothing,
            "first connection under way"
        );
        s.state = StreamState::Down;
        s.down_since = Some(at(0));
        assert_eq!(
            what_to_say(&s, false, at(300), after),
            Say::Nothing,
            "not longer than the bound yet"
        );
        assert_eq!(what_to_say(&s, false, at(301), after), Say::Down);
        assert_eq!(what_to_say(&s, true, at(900), after), Say::Nothing, "said once");
        s.state = StreamState::Connected;
        s.down_since = None;
        s.connected_since = Some(at(901));
        assert_eq!(what_to_say(&s, true, at(901), after), Say::Recovered);
        assert_eq!(
            what_to_say(&s, false, at(902), after),
            Say::Nothing,
            "a short outage says nothing"
        );
    }
}
