//! The access token as the database keeps it: sealed (AES-256-GCM) under a key derived (HKDF-SHA256)
//! from the app secret, so that a daemon that restarts, or another daemon on the same database,
//! uses the token already fetched instead of fetching (and paying for) its own, while the database
//! alone (a backup, a copy sent with a bug report) gives nobody a usable token.
//!
//! The sealed bytes are a random 12-byte nonce followed by the ciphertext and its tag; the app's
//! name (`app_key`, or `corp_id/suite_key`) and the row's `expires_at` and `refresh_at` (to the
//! millisecond, as the database keeps them) are the associated data, so a token sealed for one app
//! never opens as another's, and a row whose times were edited (a dead token made to look alive)
//! does not open at all. A new app secret derives another key: old rows simply do not open,
//! and the next fetch replaces them.

use chrono::{DateTime, Utc};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

use crate::config::Credentials;

/// Tells the key apart from any other key derived from the same secret.
const SALT: &[u8] = b"dingrec access token v1";

/// Seals and opens this app's token.
pub struct Sealer {
    app: String,
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// The sealer for `credentials`: keyed by the app secret (the suite secret for a third-party
    /// app), named after the app.
    pub fn new(credentials: &Credentials) -> Sealer {
        let app = credentials.app_name();
        let secret = match credentials {
            Credentials::Internal { app_secret, .. } => app_secret,
            Credentials::ThirdParty { suite_secret, .. } => suite_secret,
        };
        let prk = Salt::new(HKDF_SHA256, SALT).extract(secret.expose_secret().as_bytes());
        let key = {
            let info = [app.as_bytes()];
            // AES-256 asks HKDF for 32 bytes, far below its limit of 255 blocks: this cannot fail.
            let okm = prk
                .expand(&info, &AES_256_GCM)
                .expect("HKDF-SHA256 yields 32 bytes for an AES-256 key");
            LessSafeKey::new(UnboundKey::from(okm))
        };
        Sealer {
            app,
            key,
            rng: SystemRandom::new(),
        }
    }

    /// The app's name: the row the token is kept under.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// What the seal binds besides the token: the app and the row's two instants.
    fn aad(&self, expires_at: DateTime<Utc>, refresh_at: DateTime<Utc>) -> Vec<u8> {
        format!(
            "{}\n{}\n{}",
            self.app,
            expires_at.timestamp_millis(),
            refresh_at.timestamp_millis()
        )
        .into_bytes()
    }

    /// `token`, sealed with the row's instants; `None` only if the system's random source failed.
    pub fn seal(
        &self,
        token: &SecretString,
        expires_at: DateTime<Utc>,
        refresh_at: DateTime<Utc>,
    ) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = token.expose_secret().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(expires_at, refresh_at)),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Some(out)
    }

    /// The token in `sealed`, or `None` if it was sealed under another secret, for another app or
    /// with other instants, or was altered.
    pub fn open(
        &self,
        sealed: &[u8],
        expires_at: DateTime<Utc>,
        refresh_at: DateTime<Utc>,
    ) -> Option<SecretString> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.aad(expires_at, refresh_at)), &mut body)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(SecretString::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal(key: &str, secret: &str) -> Credentials {
        Credentials::Internal {
            app_key: key.into(),
            app_secret: SecretString::from(secret.to_owned()),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        crate::domain::time::parse_utc(s).expect("time")
    }

    #[test]
    fn a_row_edited_to_extend_a_dead_token_does_not_open() {
        let token = SecretString::from("tok-7f3a".to_owned());
        let sealer = Sealer::new(&internal("ding-app", "s3cret"));
        let (exp, refresh) = (at("2026-12-07T03:00:00.123Z"), at("2026-12-07T02:56:40.123Z"));
        let sealed = sealer.seal(&token, exp, refresh).expect("sealed");
        assert!(sealer.open(&sealed, exp, refresh).is_some());
        let later = at("2026-12-08T03:00:00.123Z");
        assert!(
            sealer.open(&sealed, later, refresh).is_none(),
            "expires_at moved on"
        );
        assert!(sealer.open(&sealed, exp, later).is_none(), "refresh_at moved on");
    }

    #[test]
    fn a_sealed_token_opens_only_with_the_same_app_and_secret() {
        let token = SecretString::from("tok-7f3a".to_owned());
        let sealer = Sealer::new(&internal("ding-app", "s3cret"));
        let (e, r) = (at("2026-12-07T03:00:00Z"), at("2026-12-07T02:56:40Z"));
        let sealed = sealer.seal(&token, e, r).expect("sealed");
        // The database never holds the token itself.
        assert!(
            !sealed.windows(8).any(|w| w == b"tok-7f3a"),
            "the token is not in the sealed bytes"
        );
        assert_eq!(
            sealer.open(&sealed, e, r).map(|t| t.expose_secret().to_owned()),
            Some("tok-7f3a".to_owned())
        );
        // The same app after a restart (a new sealer from the same credentials) opens it.
        let again = Sealer::new(&internal("ding-app", "s3cret"));
        assert!(again.open(&sealed, e, r).is_some());
        // A rotated secret, another app, altered or truncated bytes: nothing opens.
        assert!(
            Sealer::new(&internal("ding-app", "rotated"))
                .open(&sealed, e, r)
                .is_none()
        );
        assert!(
            Sealer::new(&internal("other-app", "s3cret"))
                .open(&sealed, e, r)
                .is_none()
        );
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(sealer.open(&altered, e, r).is_none());
        assert!(sealer.open(&sealed[..5], e, r).is_none());
        // Two seals of one token differ (a fresh nonce each time).
        assert_ne!(sealer.seal(&token, e, r), Some(sealed));
    }

    #[test]
    fn a_third_party_app_is_named_by_corp_and_suite() {
        let creds = Credentials::ThirdParty {
            corp_id: "ding-corp".into(),
            suite_key: "suite".into(),
            suite_secret: SecretString::from("x".to_owned()),
            suite_ticket: SecretString::from("t".to_owned()),
        };
        let sealer = Sealer::new(&creds);
        assert_eq!(sealer.app(), "ding-corp/suite");
        assert!(!format!("{sealer:?}").contains('x'));
    }
}
