//! The access token as daemons share it through the database: sealed bytes (never the token
//! itself) and the two instants that say whether it is still worth using.

use chrono::{DateTime, Utc};

#[derive(Clone, PartialEq, Eq)]
pub struct SealedToken {
    /// Nonce, ciphertext and tag (`dingtalk::seal`).
    pub sealed: Vec<u8>,
    /// When DingTalk said it expires.
    pub expires_at: DateTime<Utc>,
    /// When the next token should be fetched (the refresh margin before `expires_at`).
    pub refresh_at: DateTime<Utc>,
}

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedToken")
            .field("sealed", &format_args!("[{} bytes]", self.sealed.len()))
            .field("expires_at", &self.expires_at)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}
