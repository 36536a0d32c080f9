//! The access token as the database keeps it: sealed (AES-256-GCM) under a key derived (HKDF-SHA256)
//! from the app secret, so that a daemon that restarts, or another daemon on the same database,
//! uses the token already fetched instead of fetching (and paying for) its own, while the database
//! alone (a backup, a copy sent with a bug report) gives nobody a usable token.
//!
//! The sealed bytes are a random 12-byte nonce followed by the ciphertext and its tag; the app's
//! name (`app_key`, or `corp_id/suite_key`) is the associated data, so a token sealed for one app
//! never opens as another's. A new app secret derives another key: old rows simply do not open,
//! and the next fetch replaces them.

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

    /// `token`, sealed; `None` only if the system's random source failed.
    pub fn seal(&self, token: &SecretString) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut sealed = token.expose_secret().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.app.as_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.append(&mut sealed);
        Some(out)
    }

    /// The token in `sealed`, or `None` if it was sealed under another secret or for another app,
    /// or was altered.
    pub fn open(&self, sealed: &[u8]) -> Option<SecretString> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(self.app.as_bytes()), &mut body)
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

    #[test]
    fn a_sealed_token_opens_only_with_the_same_app_and_secret() {
        let token = SecretString::from("tok-7f3a".to_owned());
        let sealer = Sealer::new(&internal("ding-app", "s3cret"));
        let sealed = sealer.seal(&token).expect("sealed");
        // The database never holds the token itself.
        assert!(
            !sealed.windows(8).any(|w| w == b"tok-7f3a"),
            "the token is not in the sealed bytes"
        );
        assert_eq!(
            sealer.open(&sealed).map(|t| t.expose_secret().to_owned()),
            Some("tok-7f3a".to_owned())
        );
        // The same app after a restart (a new sealer from the same credentials) opens it.
        let again = Sealer::new(&internal("ding-app", "s3cret"));
        assert!(again.open(&sealed).is_some());
        // A rotated secret, another app, altered or truncated bytes: nothing opens.
        assert!(
            Sealer::new(&internal("ding-app", "rotated"))
                .open(&sealed)
                .is_none()
        );
        assert!(
            Sealer::new(&internal("other-app", "s3cret"))
                .open(&sealed)
                .is_none()
        );
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(sealer.open(&altered).is_none());
        assert!(sealer.open(&sealed[..5]).is_none());
        // Two seals of one token differ (a fresh nonce each time).
        assert_ne!(sealer.seal(&token), Some(sealed));
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
