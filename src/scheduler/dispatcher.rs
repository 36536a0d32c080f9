//! Dispatcher: due occurrence → attempt → DingTalk → outcome.
//!
//! [`Dispatcher::dispatch_due`] is one step: claim due occurrences (earliest first) together with
//! their attempts' intent rows in one transaction, and queue them for the workers. Claiming is
//! the decision to fire and does not wait for an HTTP slot: from idle, a first claim of one
//! read-back (two worker pools), read back inside its own transaction, lets the first calls of a
//! burst leave at its commit; the next claims, each four times the last, take the rest of 10,000 meetings at 09:00:00 within a fraction of a second, served by at most
//! `max_in_flight` workers. With a rate limit, one worker pool (a quarter second of sends at high
//! rates, never more than one second) is claimed ahead, one transaction per claim, due retries
//! first; the workers take turns to take the next attempt and wait for the limiter, so sends leave
//! in claim order, one period apart.
//! The queue holds only the claimed attempts' ids; workers read what the calls need back from
//! the database ahead of need, `2 × max_in_flight` attempts per read, one read at a time.
//! Each call's outcome goes to one writer task that commits outcomes in batches (many attempts
//! per fsync) and wakes the loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use governor::DefaultDirectRateLimiter;
use tokio::sync::{Notify, Semaphore, mpsc};
use tracing::{error, info, warn};

use super::health::Health;
use super::pacing::{SendWindow, rate_limiter};
use crate::clock::SharedClock;
use crate::dingtalk::client::StartRequest;
use crate::dingtalk::error::counted;
use crate::dingtalk::{DingTalkClient, DingTalkError};
use crate::domain::outcome::{Classification, RetryClass, codes};
use crate::domain::quota::{Api, Calls};
use crate::domain::retry::{AttemptContext, Next, decide};
use crate::domain::time::fmt_utc;
use crate::domain::{AttemptOutcome, OccurrenceState};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::{Claimed, Completion, Meeting, Ticket};

/// Most rows one claim takes.
const CLAIM_BATCH: usize = 10_000;
/// Most claimed attempts waiting for a worker (16 bytes each).
const MAX_QUEUE: usize = 200_000;
/// Most outcomes one writer transaction commits.
const WRITE_BATCH: usize = 1024;

const STOPPED: &str = "dingrec stopped before sending this attempt; no call was made";
const DISABLED: &str = "the policy was disabled before this attempt was sent; no call was made";
/// How long an attempt that could not be read back waits before it is claimed again.
const READ_BACK_RETRY: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Claimed attempts not yet sent, earliest due first.
#[derive(Default)]
struct Queue {
    /// Claimed, not yet read back.
    tickets: std::collections::VecDeque<Ticket>,
    /// Read back, waiting for a worker.
    ready: std::collections::VecDeque<Claimed>,
    /// Taken from `tickets` by a read-back in progress, not yet in `ready`: still queued (a claim
    /// that did not count them would claim more than its share ahead).
    reading: usize,
}

/// Everything an attempt needs.
pub struct Dispatcher {
    pub store: Store,
    pub client: Arc<DingTalkClient>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub classification: Classification,
    pub health: Arc<Health>,
    pub notify: Arc<Notify>,
    /// The monthly quota's budget, kept by the quota task.
    pub quota: Arc<super::quota::QuotaState>,
    /// Set when the planner wrote occurrences: the auto-record settings are looked at again.
    pub settings_stale: std::sync::atomic::AtomicBool,
    limiter: Option<DefaultDirectRateLimiter>,
    window: Option<SendWindow>,
    /// Claimed attempts waiting for a worker, earliest due first.
    queue: std::sync::Mutex<Queue>,
    /// Held by the one worker reading the next attempts back from the database.
    loading: tokio::sync::Mutex<()>,
    /// Under a rate limit, held by the worker whose turn it is to take the next attempt.
    pace: tokio::sync::Mutex<()>,
    /// Attempts taken by a worker whose outcome is not handed to the writer yet.
    sending: std::sync::atomic::AtomicUsize,
    /// How many rows the last claim took (0: nothing was due).
    last_claim: std::sync::atomic::AtomicUsize,
    /// Set by [`Dispatcher::drain`]: attempts read back after it are not sent.
    stopping: std::sync::atomic::AtomicBool,
    inflight: Arc<Semaphore>,
    max_in_flight: usize,
    /// `dingtalk.rate_limit` (0: none).
    rate: u32,
    writer: mpsc::UnboundedSender<Completion>,
    /// Set when a worker panicked: the daemon must stop and exit non-zero.
    fatal: std::sync::Mutex<Option<String>>,
    /// The due time the access token was last made ready for ([`Dispatcher::warm_token`]).
    warmed_for: std::sync::Mutex<Option<DateTime<Utc>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// The writer task's handle: cancel `stop`, then await `task` to flush every outcome received.
pub struct Writer {
    pub task: tokio::task::JoinHandle<()>,
    pub stop: tokio_util::sync::CancellationToken,
}

impl Dispatcher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        client: Arc<DingTalkClient>,
        clock: SharedClock,
        metrics: Arc<Metrics>,
        classification: Classification,
        health: Arc<Health>,
        rate_limit: u32,
        max_in_flight: usize,
    ) -> (Arc<Self>, Writer) {
        let (tx, rx) = mpsc::unbounded_channel();
        let notify = Arc::new(Notify::new());
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(write_loop(
            rx,
            store.clone(),
            clock.clone(),
            health.clone(),
            notify.clone(),
            stop.clone(),
        ));
        let window = SendWindow::new(rate_limit).map(|w| w.shared_through(&store, client.app_name()));
        let d = Arc::new(Self {
            store,
            client,
            clock,
            metrics,
            classification,
            health,
            notify,
            quota: Arc::default(),
            settings_stale: std::sync::atomic::AtomicBool::new(true),
            limiter: rate_limiter(rate_limit),
            rate: rate_limit,
            window,
            queue: std::sync::Mutex::new(Queue::default()),
            loading: tokio::sync::Mutex::new(()),
            pace: tokio::sync::Mutex::new(()),
            sending: std::sync::atomic::AtomicUsize::new(0),
            last_claim: std::sync::atomic::AtomicUsize::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
            inflight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            writer: tx,
            fatal: std::sync::Mutex::new(None),
            warmed_for: std::sync::Mutex::new(None),
        });
        (d, Writer { task: writer, stop })
    }

    /// Make the access token ready before `due` (the loop calls this when the next due time is
    /// within [`TOKEN_AHEAD`]), once per due time, so that the first call of a burst does not
    /// wait for a token round trip. Costs nothing when the cached token is still good: the
    /// cache only fetches when the token is missing or due for refresh, as the first call would.
    pub fn warm_token(&self, due: DateTime<Utc>) {
        let Ok(mut warmed) = self.warmed_for.lock() else {
            return;
        };
        if *warmed == Some(due) {
            return;
        }
        *warmed = Some(due);
        let client = self.client.clone();
        // A failure is the token cache's to report (once, with /readyz); the attempt that needs
        // the token tries again.
        tokio::spawn(async move {
            let _ = client.token().await;
        });
    }

    /// Wait for a turn of the rate limit (and the send window) for a call that is not a start:
    /// checks share DingTalk's rate with starts.
    pub async fn pace_other_call(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        if let Some(w) = &self.window {
            w.acquire().await;
        }
    }

    /// No claimed start waits for a worker, for the rate limiter or for its answer.
    pub fn starts_idle(&self) -> bool {
        self.queued() == 0 && self.sending.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Under a rate limit, how many other calls may be claimed at once (a quarter second of
    /// sends); without one, `None`.
    pub fn rate(&self) -> Option<u32> {
        (self.rate > 0).then_some(self.rate)
    }

    fn queued(&self) -> usize {
        self.queue
            .lock()
            .map(|q| q.tickets.len() + q.ready.len() + q.reading)
            .unwrap_or(0)
    }

    fn pop_ready(&self) -> Option<Claimed> {
        self.queue.lock().ok().and_then(|mut q| q.ready.pop_front())
    }

    /// The next attempt to send, in due order. Under a rate limit, the workers take turns (a fair
    /// lock): each takes the next attempt, waits for its period of the limiter and lets the next
    /// worker on, so sends leave in the order they were claimed, one period apart.
    async fn next_paced(&self) -> Option<Claimed> {
        let Some(limiter) = &self.limiter else {
            return self.next().await;
        };
        let _turn = self.pace.lock().await;
        // Counted before it leaves the queue, so that a start is always either queued or sending.
        self.sending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(c) = self.next().await else {
            self.sending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            return None;
        };
        limiter.until_ready().await;
        Some(c)
    }

    /// The next attempt to send. Attempts are read back from the database ahead of need: when
    /// fewer than `max_in_flight` are ready and no other worker is reading, this one reads the
    /// next `2 × max_in_flight` before its own call, so the others rarely wait on a read.
    async fn next(&self) -> Option<Claimed> {
        loop {
            let (c, low) = match self.queue.lock() {
                Ok(mut q) => {
                    let c = q.ready.pop_front();
                    (c, q.ready.len() < self.max_in_flight && !q.tickets.is_empty())
                }
                Err(_) => return None,
            };
            if low && let Ok(_loading) = self.loading.try_lock() {
                self.load_next().await;
            }
            if c.is_some() {
                return c;
            }
            let _loading = self.loading.lock().await;
            if let Some(c) = self.pop_ready() {
                return Some(c);
            }
            if !self.load_next().await {
                return None;
            }
        }
    }

    /// Read the next tickets back (the caller holds `loading`). False when none was queued.
    async fn load_next(&self) -> bool {
        let tickets: Vec<Ticket> = match self.queue.lock() {
            Ok(mut q) => {
                let n = q.tickets.len().min(self.read_back_size());
                q.reading += n;
                q.tickets.drain(..n).collect()
            }
            Err(_) => return false,
        };
        if tickets.is_empty() {
            return false;
        }
        let reading = tickets.len();
        let read = self.store.load_claimed(&tickets).await;
        let ready = self.sort_read_back(tickets, read);
        if let Ok(mut q) = self.queue.lock() {
            q.reading -= reading;
            q.ready.extend(ready);
        }
        true
    }

    /// Claimed attempts as read back: those to send, in the tickets' order. The others are closed
    /// without a call: their policy was disabled since, dingrec is stopping, or their rows could
    /// not be read (retried after a pause, so that a lasting fault does not claim in a loop).
    fn sort_read_back(
        &self,
        tickets: Vec<Ticket>,
        read: crate::store::Result<Vec<(i64, crate::store::Result<Claimed>)>>,
    ) -> Vec<Claimed> {
        let (loaded, failure) = match read {
            Ok(loaded) => (loaded, None),
            Err(e) => {
                error!(error = %e, attempts = tickets.len(), "cannot read claimed attempts back; they will be retried");
                (Vec::new(), Some(e.to_string()))
            }
        };
        let stopping = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.now();
        let later = now + READ_BACK_RETRY;
        let not_read =
            |why: &str| format!("dingrec could not read this claimed attempt back ({why}); no call was made");
        let mut loaded = loaded.into_iter().peekable();
        let mut ready = Vec::with_capacity(tickets.len());
        for t in tickets {
            match loaded.next_if(|(id, _)| *id == t.attempt_id) {
                Some((_, Ok(c))) if !c.policy_enabled => self.unsent(t, DISABLED, now),
                Some((_, Ok(c))) if !stopping => ready.push(c),
                Some((_, Ok(_))) => self.unsent(t, STOPPED, now),
                Some((_, Err(e))) => {
                    error!(attempt = t.attempt_id, occurrence = t.occurrence_id, error = %e, "cannot decode a claimed attempt");
                    self.unsent(t, &not_read(&e.to_string()), later);
                }
                None => self.unsent(
                    t,
                    &not_read(failure.as_deref().unwrap_or("its rows are gone")),
                    later,
                ),
            }
        }
        ready
    }

    /// Close a claimed attempt that was not sent as `interrupted`; its occurrence is due again at
    /// `retry_at`.
    fn unsent(&self, t: Ticket, message: &str, retry_at: DateTime<Utc>) {
        let _ = self
            .writer
            .send(self.interrupted(t, message.into(), retry_at, false));
    }

    /// An attempt closed as `interrupted` (`called`: whether its call may have gone out); its
    /// occurrence waits for another attempt at `retry_at`.
    fn interrupted(&self, t: Ticket, message: String, retry_at: DateTime<Utc>, called: bool) -> Completion {
        Completion {
            attempt_id: t.attempt_id,
            occurrence_id: t.occurrence_id,
            finished_at: self.clock.now(),
            duration_ms: 0,
            conference_id: None,
            http_status: 0,
            code: codes::INTERRUPTED.into(),
            message,
            request_id: None,
            outcome: AttemptOutcome::Interrupted,
            next_attempt_at: Some(retry_at),
            state: OccurrenceState::RetryWait,
            throttled: false,
            called,
            sent_at: None,
            next_check_at: None,
            settle: false,
            calls: Calls::default(),
        }
    }

    /// An attempt's worker panicked (a bug): its row is closed as `interrupted` (the occurrence
    /// goes on, never left `running`), and the dispatcher is marked failed, so the daemon stops
    /// with a non-zero exit and systemd restarts it.
    fn panicked(&self, c: &Claimed, panic: &(dyn std::any::Any + Send)) -> Completion {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        error!(policy = %c.policy_name, occurrence = c.occurrence_id, attempt = c.attempt_no, error = %why, "an attempt failed inside dingrec");
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert_with(|| format!("an attempt failed inside dingrec: {why}"));
        }
        self.notify.notify_one();
        self.interrupted(
            c.ticket(),
            format!("dingrec failed while making this attempt ({why}); the call may have been sent"),
            self.clock.now(),
            true,
        )
    }

    /// Another task of the scheduler failed (a check panicked): the daemon must stop, non-zero.
    pub fn set_fatal(&self, why: String) {
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(why);
        }
        self.notify.notify_one();
    }

    /// Why the dispatcher cannot go on, if it cannot.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// Can a claim take anything now? With a rate limit, claims wait for a free worker; without,
    /// for room in the queue.
    pub fn has_room(&self) -> bool {
        if self.limiter.is_some() {
            self.paced_room() > 0
        } else {
            self.queued() < MAX_QUEUE
        }
    }

    /// Under a rate limit: how many attempts may be claimed and not finished at once: one worker
    /// pool, or a quarter second of sends at high rates (so that a claim's commit never leaves the
    /// workers without work), never more than one second of sends (what a due retry waits behind,
    /// besides calls already leaving).
    fn ahead(&self) -> usize {
        let rate = self.rate as usize;
        self.max_in_flight.max(rate / 4).min(rate).max(1)
    }

    /// Under a rate limit, how many to claim now: nothing until half of [`Self::ahead`] is free
    /// (or nothing is in flight), so that claims are few and larger, not one transaction per send.
    fn paced_room(&self) -> usize {
        let in_flight = self.queued() + self.sending.load(std::sync::atomic::Ordering::SeqCst);
        let ahead = self.ahead();
        let room = ahead.saturating_sub(in_flight);
        if in_flight == 0 || room * 2 >= ahead {
            room
        } else {
            0
        }
    }

    /// Attempts claimed and not finished: queued or in a call.
    pub fn in_flight(&self) -> usize {
        self.queued() + (self.max_in_flight - self.inflight.available_permits())
    }

    /// Start workers (up to `max_in_flight`) while attempts are queued.
    fn ensure_workers(self: &Arc<Self>) {
        while self.queued() > 0 {
            let Ok(permit) = self.inflight.clone().try_acquire_owned() else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                while let Some(c) = me.next_paced().await {
                    let done = match std::panic::AssertUnwindSafe(me.attempt(&c)).catch_unwind().await {
                        Ok(done) => done,
                        Err(panic) => me.panicked(&c, panic.as_ref()),
                    };
                    let _ = me.writer.send(done);
                    if me.limiter.is_some() {
                        me.sending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                me.notify.notify_one();
            });
        }
    }

    /// Stop: attempts claimed but not sent are closed as `interrupted` (no call was made) and
    /// their occurrences wait for the next start; then wait for calls in flight, at most `bound`.
    /// Returns whether every call finished.
    pub async fn drain(&self, bound: Duration) -> bool {
        self.stopping.store(true, std::sync::atomic::Ordering::SeqCst);
        let unsent: Vec<Ticket> = self
            .queue
            .lock()
            .map(|mut q| {
                let ready: Vec<Ticket> = q.ready.drain(..).map(|c| c.ticket()).collect();
                ready.into_iter().chain(q.tickets.drain(..)).collect()
            })
            .unwrap_or_default();
        let now = self.clock.now();
        for t in unsent {
            self.unsent(t, STOPPED, now);
        }
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        tokio::time::timeout(bound, self.inflight.acquire_many(all))
            .await
            .is_ok()
    }

    /// One step: claim what is due and queue it for the workers. Returns how many were claimed.
    pub async fn dispatch_due(self: &Arc<Self>) -> crate::store::Result<usize> {
        self.ensure_workers();
        let room = MAX_QUEUE.saturating_sub(self.queued()).min(CLAIM_BATCH);
        if room == 0 {
            return Ok(0);
        }
        let mut want = room;
        if self.limiter.is_none() {
            // First calls first: a burst's first claim takes one read-back (two worker pools),
            // so that its first calls leave after a small commit; each next claim four times the
            // last (2, 8, 32, 128 pools, …), each commit small next to the calls already queued,
            // up to CLAIM_BATCH. A pass that claims nothing starts over.
            let last = self.last_claim.load(std::sync::atomic::Ordering::SeqCst);
            want = want.min((4 * last).max(self.read_back_size()));
        }
        if self.limiter.is_some() {
            // Paced: claims keep at most one second of sends (or one worker pool) claimed and not
            // finished, in one transaction each; the workers space the sends. A retry that comes
            // due is claimed first, so it waits behind at most one second of first attempts.
            let room = self.paced_room();
            if room == 0 {
                return Ok(0);
            }
            match self.store.next_due_at().await? {
                Some(t) if t <= self.clock.now() => {}
                _ => return Ok(0),
            }
            want = room;
        }
        let now = self.clock.now();
        // From idle, the claim reads its first attempts back itself, in its transaction: the
        // first calls of a burst leave right after its commit, without a second query.
        let idle = self
            .queue
            .lock()
            .is_ok_and(|q| q.tickets.is_empty() && q.ready.is_empty() && q.reading == 0);
        let read_back = if idle { self.read_back_size() } else { 0 };
        let claim = self
            .store
            .claim_due(now, want as i64, self.limiter.is_some(), read_back)
            .await?;
        // Counted once the claim committed: a claim that failed is tried again, not counted twice.
        for due_at in &claim.first_due {
            let late = (now - *due_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            self.metrics.fire_lateness(late);
        }
        let mut claimed = claim.tickets;
        let n = claimed.len();
        self.last_claim.store(n, std::sync::atomic::Ordering::SeqCst);
        if read_back > 0 {
            // The queue was empty (only this loop adds to it): the claim's order, due retries
            // first, is the queue's.
            let rest = claimed.split_off(read_back.min(n));
            let ready = self.sort_read_back(claimed, Ok(claim.loaded));
            if let Ok(mut q) = self.queue.lock() {
                q.ready.extend(ready);
                q.tickets.extend(rest);
            }
        } else if claim.retries > 0 {
            // Due retries go before the first attempts already queued: a retry waits behind the
            // sends in progress, not behind what was claimed before it came due. (Under the
            // loading lock, so that no read-back in progress lands ahead of them; what was read
            // back already is read again after them.)
            let _loading = self.loading.lock().await;
            let rest = claimed.split_off(claim.retries);
            if let Ok(mut q) = self.queue.lock() {
                let ready: Vec<Ticket> = q.ready.drain(..).map(|c| c.ticket()).collect();
                let queued: Vec<Ticket> = q.tickets.drain(..).collect();
                q.tickets = claimed
                    .into_iter()
                    .chain(ready)
                    .chain(queued)
                    .chain(rest)
                    .collect();
            }
        } else if let Ok(mut q) = self.queue.lock() {
            if q.tickets.is_empty() {
                // Takes the claim's buffer as it is: a 10,000-row burst is not copied.
                q.tickets = claimed.into();
            } else {
                q.tickets.extend(claimed);
            }
        }
        self.ensure_workers();
        Ok(n)
    }

    /// How many attempts one read-back reads: two worker pools, so that the workers rarely wait
    /// for the next read.
    fn read_back_size(&self) -> usize {
        2 * self.max_in_flight
    }

    /// One attempt: resolve the meeting if needed, call StartCloudRecord, decide what's next.
    pub async fn attempt(&self, c: &Claimed) -> Completion {
        #[cfg(test)]
        if PANIC_IN_ATTEMPT_OF
            .lock()
            .is_ok_and(|p| p.as_deref() == Some(&*c.policy_name))
        {
            panic!("injected by a test");
        }
        let started = tokio::time::Instant::now();
        let Call {
            result,
            conference_id,
            sent_at,
            calls,
            auto_recorded,
        } = self.call(c).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now = self.clock.now();
        let (code, http_status, message, request_id) = match &result {
            Ok(ok) if auto_recorded => (
                codes::AUTO_RECORDED.to_owned(),
                ok.0,
                "DingTalk's own auto-recording runs; no StartCloudRecord was sent".to_owned(),
                ok.1.clone(),
            ),
            Ok(ok) => (codes::SUCCESS.to_owned(), ok.0, String::new(), ok.1.clone()),
            Err(e) => (
                e.code().to_owned(),
                e.http_status(),
                e.to_string(),
                e.request_id().map(str::to_owned),
            ),
        };
        let class = if auto_recorded {
            RetryClass::Success
        } else {
            self.classification.classify(&code, http_status)
        };
        let called = code != codes::WINDOW_PASSED;
        let token_error = matches!(&result, Err(e) if e.is_token_error());
        // Calls made, throttled ones left out (an attempt closed before its call is not one).
        let counted = u32::try_from(
            c.attempt_no
                .saturating_sub(c.throttled_count)
                .saturating_sub(c.uncalled_count),
        )
        .unwrap_or(u32::MAX);
        let ctx = AttemptContext {
            now,
            window_ends_at: c.window_ends_at,
            counted_attempts: counted,
            previous_was_reauth: c.previous_was_reauth,
        };
        let u = self
            .clock
            .chance(crate::clock::chance_key(b'a', c.occurrence_id, c.attempt_no));
        let (outcome, next) = decide(class, &c.retry, ctx, u);
        // With verify on, a 200 is "accepted": checks follow, the first after `verify.after`.
        // An answer that leaves open whether a recording runs (the call may have taken effect
        // though it timed out or lost its connection; DingTalk says a recording is already
        // started) is settled by one check, now, before the retry it asks for: recording, and
        // there is no second start.
        let settle = c.verify.is_some()
            && matches!(next, Next::RetryAt(_))
            && matches!(
                code.as_str(),
                codes::RECORD_START_ERROR | codes::TIMEOUT | crate::dingtalk::error::CONNECTION_LOST
            );
        let next_check_at = match (next, &c.verify) {
            (Next::Succeeded, Some(v)) => crate::domain::time::add(now, v.after),
            _ if settle => Some(now),
            _ => None,
        };
        let (state, next_at) = match next {
            Next::RetryAt(t) if settle => (OccurrenceState::Verifying, Some(t)),
            Next::Succeeded if next_check_at.is_some() => (OccurrenceState::Verifying, None),
            Next::Succeeded => (OccurrenceState::Succeeded, None),
            Next::Failed => (OccurrenceState::Failed, None),
            Next::Expired => (OccurrenceState::Expired, None),
            Next::RetryAt(t) => (OccurrenceState::RetryWait, Some(t)),
        };
        self.log_attempt(
            c,
            &conference_id,
            &code,
            http_status,
            duration_ms,
            outcome,
            state,
            next_at,
            now,
            &message,
            token_error,
        );
        self.metrics.attempt(outcome, &code);
        if !state.is_live() {
            self.metrics.occurrence(state);
        }
        if matches!(state, OccurrenceState::Succeeded | OccurrenceState::Verifying) {
            self.metrics.last_success(now.timestamp_millis() as f64 / 1000.0);
        }
        Completion {
            attempt_id: c.attempt_id,
            occurrence_id: c.occurrence_id,
            finished_at: now,
            duration_ms,
            conference_id,
            http_status,
            code,
            message,
            request_id,
            outcome,
            next_attempt_at: next_at,
            state,
            throttled: class == RetryClass::Throttle,
            called,
            sent_at,
            next_check_at,
            settle,
            calls,
        }
    }

    /// `window_passed` when the occurrence's window has ended: an attempt that waited in the
    /// queue or for the rate limiter past it is not sent.
    fn window_open(&self, c: &Claimed) -> Result<(), DingTalkError> {
        if self.clock.now() < c.window_ends_at {
            return Ok(());
        }
        Err(DingTalkError::Api {
            status: 0,
            code: codes::WINDOW_PASSED.into(),
            message: "the window ended before this attempt could be sent; no call was made".into(),
            request_id: None,
        })
    }

    /// The HTTP part: token, meeting resolution, StartCloudRecord.
    async fn call(&self, c: &Claimed) -> Call {
        let failed = |e: DingTalkError, conference_id: Option<String>, calls: Calls| Call {
            result: Err(e),
            conference_id,
            sent_at: None,
            calls,
            auto_recorded: false,
        };
        if let Err(e) = self.window_open(c) {
            return failed(e, None, Calls::default());
        }
        let token = match self.client.token().await {
            Ok(t) => t,
            Err(e) => return failed(e, None, Calls::default()),
        };
        let mut calls = Calls::default();
        let conference_id = match &c.meeting {
            Meeting::Conference(id) => id.to_string(),
            Meeting::Schedule(sched) => {
                let found = self.client.resolve_live_with(&token, sched).await;
                if counted(&found) {
                    calls.add(Api::ScheduleConference, 1);
                }
                match found {
                    Ok(Some(id)) => id,
                    Ok(None) => {
                        let e = DingTalkError::NotLive {
                            schedule_conference_id: sched.to_string(),
                        };
                        return failed(e, None, calls);
                    }
                    Err(e) => {
                        if e.code() == codes::INVALID_AUTHENTICATION {
                            self.client.invalidate_token(&token).await;
                        }
                        return failed(e, None, calls);
                    }
                }
            }
            Meeting::Missing => {
                let e = DingTalkError::Api {
                    status: 0,
                    code: "paramsError".into(),
                    message: "the policy names no meeting".into(),
                    request_id: None,
                };
                return failed(e, None, calls);
            }
        };
        let ctx = super::check_first::Ctx {
            store: &self.store,
            client: &self.client,
            clock: &self.clock,
        };
        if c.auto_record_first
            && let super::check_first::CheckFirst::Recording(request_id) =
                super::check_first::check_first(ctx, self.pace_other_call(), c, &token, &conference_id).await
        {
            return Call {
                result: Ok((200, request_id)),
                conference_id: Some(conference_id),
                sent_at: None,
                calls,
                auto_recorded: true,
            };
        }
        let req = StartRequest {
            conference_id: &conference_id,
            union_id: &c.host_union_id,
            layout: Some(c.layout.as_str()),
            small_window_position: Some(c.small_window_position.as_str()),
        };
        if let Some(w) = &self.window {
            w.acquire().await;
        }
        if let Err(e) = self.window_open(c) {
            return failed(e, Some(conference_id), calls);
        }
        let sent_at = self.clock.now();
        let result = self.client.start_cloud_record_with(&token, &req).await;
        if counted(&result) {
            calls.add(Api::StartCloudRecord, 1);
        }
        if let Err(e) = &result
            && e.code() == codes::INVALID_AUTHENTICATION
        {
            self.client.invalidate_token(&token).await;
        }
        Call {
            result: result.map(|ok| (ok.status, ok.request_id)),
            conference_id: Some(conference_id),
            sent_at: Some(sent_at),
            calls,
            auto_recorded: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn log_attempt(
        &self,
        c: &Claimed,
        conference_id: &Option<String>,
        code: &str,
        http_status: u16,
        duration_ms: i64,
        outcome: AttemptOutcome,
        state: OccurrenceState,
        next_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        message: &str,
        token_error: bool,
    ) {
        let conf = match (conference_id, &c.meeting) {
            (Some(id), _) => id.as_str(),
            (None, Meeting::Conference(id) | Meeting::Schedule(id)) => id,
            (None, Meeting::Missing) => "-",
        };
        let next_in = next_at.map(|t| (t - now).num_milliseconds());
        let outcome = outcome.as_str();
        match state {
            OccurrenceState::Succeeded => info!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, trigger = %c.trigger, "recording started"
            ),
            OccurrenceState::Verifying if code != codes::SUCCESS => warn!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, error = message,
                "attempt failed in a way that may have started the recording; checking before the next start"
            ),
            OccurrenceState::Verifying => info!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, trigger = %c.trigger,
                "recording started (DingTalk accepted); checking that it runs"
            ),
            // No token: logged at ERROR once by the token cache; each attempt quietly.
            OccurrenceState::RetryWait if token_error => tracing::debug!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, next_attempt_in_ms = next_in.unwrap_or(0), error = message,
                "attempt failed for want of an access token; will retry"
            ),
            OccurrenceState::RetryWait | OccurrenceState::Scheduled | OccurrenceState::Running => warn!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, next_attempt_in_ms = next_in.unwrap_or(0), error = message,
                "attempt failed; will retry"
            ),
            OccurrenceState::Failed
            | OccurrenceState::Expired
            | OccurrenceState::Missed
            | OccurrenceState::Cancelled => error!(
                policy = %c.policy_name, conference_id = conf, occurrence = c.occurrence_id, attempt = c.attempt_no,
                code, http_status, duration_ms, outcome, state = state.as_str(), last_code = code, error = message,
                due_at = %fmt_utc(c.due_at), "recording could not be started: occurrence {state}"
            ),
        }
    }
}

/// What one attempt's calls came to.
struct Call {
    /// StartCloudRecord's HTTP status and request id, or why there is none.
    result: Result<(u16, Option<String>), DingTalkError>,
    /// The meeting called (a scheduled meeting's live one, once looked up).
    conference_id: Option<String>,
    /// When StartCloudRecord was sent (after the token, the meeting look-up and the rate limiter);
    /// `None` when it was not.
    sent_at: Option<DateTime<Utc>>,
    /// The calls DingTalk counted against the monthly quota (the token's aside).
    calls: Calls,
    /// The due-time check of an `auto_record` policy found DingTalk's own recording running: no
    /// StartCloudRecord was sent.
    auto_recorded: bool,
}

/// Tests only: an attempt of the policy by this name panics, standing for a bug inside an attempt
/// (no input can make one panic).
#[cfg(test)]
pub(crate) static PANIC_IN_ATTEMPT_OF: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The single writer: commits outcomes in batches; on a database error keeps the batch and
/// tries again (the disk may fill and empty), marking the database unhealthy meanwhile.
async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Completion>,
    store: Store,
    clock: SharedClock,
    health: Arc<Health>,
    notify: Arc<Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            c = rx.recv() => c,
            () = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.complete(&batch, clock.now()).await {
                Ok(()) => {
                    health.db_recovered("writer");
                    break;
                }
                Err(e) => {
                    error!(error = %e, pending = batch.len(), "cannot record attempt outcomes; retrying");
                    health.db_failed("writer", e.to_string());
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        batch.clear();
        notify.notify_one();
    }
}
