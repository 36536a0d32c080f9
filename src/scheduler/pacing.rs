//! Send pacing: DingTalk's per-app rate limit (`dingtalk.rate_limit`) kept by a pacing limiter
//! that spaces calls one period apart, and by a hard guard that counts the sends of any second
//! ([`SendWindow`]); on PostgreSQL the daemons sharing a database share the app's slots.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::{info, warn};

use crate::store::Store;

/// The pacing limiter: one call per period, the [`SendWindow`]'s stretched second divided by the
/// rate. The same pace as the window's: a faster limiter would let a backlog of sends build up
/// at the window, ahead of a retry that comes due (a due retry must wait behind at most one
/// second of first attempts), and a fixed millisecond of slack would halve a rate of 1,000/s. At
/// high rates it lets 20 ms of calls catch up at once, since a timer wakes a millisecond late and
/// would otherwise lose a tenth of the rate; the window keeps every second at or below the limit.
pub fn rate_limiter(per_second: u32) -> Option<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(per_second)?;
    let period = WINDOW / n.get();
    let burst = NonZeroU32::new(per_second / 50).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period).map(|q| RateLimiter::direct(q.allow_burst(burst)))
}

/// A hard guard behind the pacing limiter: at most `limit` StartCloudRecord sends in any second
/// (the second stretched by 30 ms), measured at the moment of sending. The limiter paces claims in
/// due order; this makes sure a delayed task cannot bunch sends together. DingTalk counts a call
/// when it arrives, and a call can reach it later than the next one: the 30 ms let any call be up
/// to 30 ms later than its successors (seen on a loaded 2-core CI machine: 10 ms was not enough)
/// at the cost of 3 % of the rate.
/// On PostgreSQL, where other daemons send for the same app, every send first takes a slot that
/// all of them share ([`SharedSlots`]).
pub struct SendWindow {
    limit: usize,
    sent: std::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    /// Waiters take their turn first come, first served (tokio's mutex is fair): a worker that
    /// waits for room is not overtaken by one that arrives when room frees up, so sends leave in
    /// the order the pacing handed them out (a CI run saw one start overtaken by 43 others).
    /// The turn holds the shared slots taken and not used yet, in order.
    turn: tokio::sync::Mutex<std::collections::VecDeque<tokio::time::Instant>>,
    shared: Option<SharedSlots>,
}

const WINDOW: Duration = Duration::from_millis(1_030);

/// The send slots of one app that the daemons on one PostgreSQL database share
/// (`send_slots`): slots are one period (the window's second divided by the limit) apart on the
/// server's clock, and each daemon sends only in the slots it took, so the limit holds for all of
/// them together as it holds for one. A daemon takes 20 ms of slots at a time (one at low rates);
/// a slot that passed unused by more than [`LATE`] is dropped (the daemon was idle, and another
/// may send then). The 30 ms of [`WINDOW`] cover a send up to [`LATE`] behind its slot, and the
/// machines' different round trips to the database.
struct SharedSlots {
    store: Store,
    app: String,
    period: Duration,
    block: u32,
    /// The database could not be asked: this daemon keeps the limit on its own meanwhile.
    failing: std::sync::atomic::AtomicBool,
}

/// How late a shared slot may still be used.
const LATE: Duration = Duration::from_millis(20);

impl SharedSlots {
    /// Wait for this process's next slot (taking more from the database when none is left).
    async fn wait(&self, slots: &mut std::collections::VecDeque<tokio::time::Instant>) {
        let now = tokio::time::Instant::now();
        while slots.front().is_some_and(|t| now > *t + LATE) {
            slots.pop_front();
        }
        if slots.is_empty() {
            match self
                .store
                .take_send_slots(&self.app, self.block, self.period)
                .await
            {
                Ok(Some(wait)) => {
                    if self.failing.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        info!(
                            "send slots are taken from the database again: dingtalk.rate_limit holds for every daemon"
                        );
                    }
                    let first = tokio::time::Instant::now() + wait;
                    slots.extend((0..self.block).map(|i| first + self.period * i));
                }
                Ok(None) => {}
                Err(e) => {
                    if !self.failing.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        warn!(error = %e, "cannot take a send slot from the database: until it answers, this daemon keeps dingtalk.rate_limit on its own (several daemons may send more together)");
                    }
                }
            }
        }
        if let Some(t) = slots.pop_front() {
            tokio::time::sleep_until(t).await;
        }
    }
}

impl SendWindow {
    pub fn new(limit: u32) -> Option<Self> {
        (limit > 0).then(|| Self {
            limit: limit as usize,
            sent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            turn: tokio::sync::Mutex::new(std::collections::VecDeque::new()),
            shared: None,
        })
    }

    /// Share the limit with the other daemons on `store`'s database, for `app`, when there can
    /// be any (PostgreSQL).
    pub(crate) fn shared_through(mut self, store: &Store, app: Option<String>) -> Self {
        if store.shares_rate_limit() {
            let limit = u32::try_from(self.limit).unwrap_or(u32::MAX);
            self.shared = Some(SharedSlots {
                store: store.clone(),
                app: app.unwrap_or_default(),
                period: WINDOW / limit,
                block: (limit / 50).max(1),
                failing: std::sync::atomic::AtomicBool::new(false),
            });
        }
        self
    }

    /// Wait until one more send fits in the window, and count it.
    pub async fn acquire(&self) {
        let mut turn = self.turn.lock().await;
        if let Some(shared) = &self.shared {
            shared.wait(&mut turn).await;
        }
        loop {
            let wait = {
                let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
                let now = tokio::time::Instant::now();
                while sent.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                    sent.pop_front();
                }
                if sent.len() < self.limit {
                    sent.push_back(now);
                    return;
                }
                sent.front()
                    .map(|t| WINDOW.saturating_sub(now.duration_since(*t)))
            };
            tokio::time::sleep(wait.unwrap_or(Duration::from_millis(1))).await;
        }
    }
}
