//! The access token: cached until DingTalk's `expireIn` minus a margin, one refresh in flight at a
//! time (callers that need a token while one is being fetched wait for that one), dropped on
//! `InvalidAuthentication`. A failed refresh is remembered for a second so that a token endpoint
//! that is down is not hammered by every waiting call.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use super::error::DingTalkError;
use crate::domain::SealedToken;

/// How long a failed token call is remembered.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(1);

/// Where the token is kept between processes: the database (`access_tokens`). Errors are words
/// for the log: a shelf that cannot be read only means fetching a token of one's own.
pub trait TokenShelf: Send + Sync {
    /// The token kept for `app`.
    fn load<'a>(&'a self, app: &'a str) -> ShelfFuture<'a, Option<SealedToken>>;
    /// Keep `token` for `app` (fetched at `now`), replacing the one before.
    fn save<'a>(&'a self, app: &'a str, token: &'a SealedToken, now: DateTime<Utc>) -> ShelfFuture<'a, ()>;
    /// Drop `app`'s token if it is still `sealed`.
    fn forget<'a>(&'a self, app: &'a str, sealed: &'a [u8]) -> ShelfFuture<'a, ()>;
    /// Wait for this process's turn to fetch `app`'s token among the processes that share the
    /// shelf, so that processes needing a token at once fetch one. `None`: no one to wait for, or
    /// the turn did not come in time.
    fn fetch_turn<'a>(&'a self, app: &'a str) -> ShelfFuture<'a, Option<Box<dyn ShelfTurn>>>;
}

/// A turn to fetch the token ([`TokenShelf::fetch_turn`]), held until released.
pub trait ShelfTurn: Send {
    fn release(self: Box<Self>) -> ShelfFuture<'static, ()>;
}

pub type ShelfFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, String>> + Send + 'a>>;

#[derive(Clone)]
pub struct Token {
    pub value: SecretString,
    /// When DingTalk said it expires (monotonic).
    pub expires: Instant,
    /// The same, as wall time (for `/readyz`).
    pub expires_at: DateTime<Utc>,
    /// When to fetch a new one.
    pub refresh_at: Instant,
    /// The same, as wall time: a token is fresh while both clocks say so (the monotonic one
    /// cannot be fooled by a wall clock set back; the wall one follows an injected clock).
    pub refresh_at_wall: DateTime<Utc>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The token's state for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStatus {
    None,
    Valid { expires_at: DateTime<Utc> },
    Error { code: String },
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    last_error: Option<(DingTalkError, Instant)>,
}

pub struct TokenCache {
    /// Held across the fetch: this is what makes the refresh single-flight.
    state: Mutex<State>,
    /// The status, published for `/readyz`, which reads it without waiting for a fetch.
    status: watch::Sender<TokenStatus>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            status: watch::Sender::new(TokenStatus::None),
        }
    }
}

impl TokenCache {
    /// A valid token, fetching one with `fetch` if needed.
    pub async fn get<F, Fut>(&self, wall: DateTime<Utc>, fetch: F) -> Result<Token, DingTalkError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Token, DingTalkError>>,
    {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        if let Some(t) = &st.token
            && now < t.refresh_at
            && wall < t.refresh_at_wall
        {
            return Ok(t.clone());
        }
        if let Some((err, at)) = &st.last_error
            && now.duration_since(*at) < NEGATIVE_CACHE
        {
            // A refresh failed a moment ago: do not ask again yet, but a token that has not
            // expired still works.
            return match &st.token {
                Some(t) if now < t.expires => Ok(t.clone()),
                _ => Err(err.clone()),
            };
        }
        match fetch().await {
            Ok(t) => {
                if matches!(*self.status.borrow(), TokenStatus::Error { .. }) {
                    tracing::info!("access token fetched again; recordings can start");
                }
                st.token = Some(t.clone());
                st.last_error = None;
                self.set_status(TokenStatus::Valid {
                    expires_at: t.expires_at,
                });
                Ok(t)
            }
            Err(e) => {
                // An old token that has not expired yet is still better than none.
                if let Some(t) = st.token.clone()
                    && now < t.expires
                {
                    st.last_error = Some((e, now));
                    return Ok(t);
                }
                st.token = None;
                st.last_error = Some((e.clone(), now));
                let status = TokenStatus::Error {
                    code: e.code().to_owned(),
                };
                // Once per change, not per attempt: a person must act (the attempts go on
                // quietly, and /readyz shows the code until a token comes).
                if *self.status.borrow() != status {
                    tracing::error!(
                        code = e.code(),
                        error = %e,
                        "cannot get an access token from DingTalk: recordings cannot start until this is fixed (check dingtalk.app_key and the app secret, then reload)"
                    );
                }
                self.set_status(status);
                Err(e)
            }
        }
    }

    /// Drop the cached token if it is `used` (DingTalk said it is invalid).
    pub async fn invalidate(&self, used: &SecretString) {
        let mut st = self.state.lock().await;
        if st
            .token
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == used.expose_secret())
        {
            st.token = None;
            st.last_error = None;
        }
    }

    fn set_status(&self, s: TokenStatus) {
        self.status.send_replace(s);
    }

    /// A receiver that always holds the latest status.
    pub fn status(&self) -> watch::Receiver<TokenStatus> {
        self.status.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(value: &str, refresh_in: Duration, expires_in: Duration) -> Token {
        let now = Instant::now();
        Token {
            value: SecretString::from(value.to_owned()),
            expires: now + expires_in,
            expires_at: DateTime::<Utc>::MIN_UTC,
            refresh_at: now + refresh_in,
            refresh_at_wall: DateTime::<Utc>::MAX_UTC,
        }
    }

    fn refused() -> DingTalkError {
        DingTalkError::Api {
            status: 503,
            code: "systemError".into(),
            message: "token endpoint down".into(),
            request_id: None,
        }
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_using_the_old_token_until_it_really_expires() {
        let cache = TokenCache::default();
        // A token inside its refresh margin: due for a refresh, valid for another minute.
        let first = cache
            .get(DateTime::<Utc>::MIN_UTC, || async {
                Ok(token("old", Duration::ZERO, Duration::from_secs(60)))
            })
            .await
            .expect("first");
        assert_eq!(first.value.expose_secret(), "old");
        // The refresh fails: the old token is still handed out, now and right after (within the
        // failure's negative cache), and /readyz still sees a valid token.
        for _ in 0..3 {
            let t = cache
                .get(DateTime::<Utc>::MIN_UTC, || async { Err(refused()) })
                .await
                .expect("old token");
            assert_eq!(t.value.expose_secret(), "old");
        }
        assert!(matches!(*cache.status().borrow(), TokenStatus::Valid { .. }));
    }

    #[tokio::test]
    async fn without_a_valid_token_a_failed_refresh_is_an_error_and_is_not_repeated_at_once() {
        let cache = TokenCache::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        for _ in 0..3 {
            let r = cache
                .get(DateTime::<Utc>::MIN_UTC, || async {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Err(refused())
                })
                .await;
            assert!(r.is_err());
        }
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one call per second"
        );
        assert!(matches!(*cache.status().borrow(), TokenStatus::Error { .. }));
    }
}
