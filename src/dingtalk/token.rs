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

/// How long a failed token call is remembered.
pub const NEGATIVE_CACHE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Token {
    pub value: SecretString,
    /// When DingTalk said it expires (monotonic).
    pub expires: Instant,
    /// The same, as wall time (for `/readyz`).
    pub expires_at: DateTime<Utc>,
    /// When to fetch a new one.
    pub refresh_at: Instant,
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
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Token, DingTalkError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Token, DingTalkError>>,
    {
        let mut st = self.state.lock().await;
        let now = Instant::now();
        if let Some(t) = &st.token
            && now < t.refresh_at
        {
            return Ok(t.clone());
        }
        if let Some((err, at)) = &st.last_error
            && now.duration_since(*at) < NEGATIVE_CACHE
        {
            return Err(err.clone());
        }
        match fetch().await {
            Ok(t) => {
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
                self.set_status(TokenStatus::Error {
                    code: e.code().to_owned(),
                });
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
