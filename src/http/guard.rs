//! What every answer of the listener passes through: HTTP basic authentication (`http.auth`;
//! `/healthz` stays open for probes) and the security headers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};

/// The one user `http.auth.basic` names.
#[derive(Clone)]
pub struct Basic {
    /// `user:password`, as the `Authorization` header carries it once decoded.
    expected: Arc<SecretString>,
}

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Basic([REDACTED])")
    }
}

impl Basic {
    pub fn new(user: &str, password: &SecretString) -> Basic {
        Basic {
            expected: Arc::new(SecretString::from(format!("{user}:{}", password.expose_secret()))),
        }
    }

    /// Does `headers` carry this user's credentials? Compared in constant time.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .filter(|v| v.len() <= 1024)
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v.trim()).ok())
        else {
            return false;
        };
        constant_time_eq(&given, self.expected.expose_secret().as_bytes())
    }
}

/// Equal bytes, in a time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i % b.len().max(1)).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Paths anyone may read: the liveness probe.
const OPEN: &[&str] = &["/healthz"];

/// Refuses a request without the credentials, when `http.auth` is set.
pub async fn authenticate(State(auth): State<Option<Basic>>, req: Request, next: Next) -> Response {
    match &auth {
        Some(basic) if !OPEN.contains(&req.uri().path()) && !basic.admits(req.headers()) => (
            StatusCode::UNAUTHORIZED,
            [(
                header::WWW_AUTHENTICATE,
                "Basic realm=\"dingrec\", charset=\"UTF-8\"",
            )],
            "authentication required\n",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

/// The CSP: this origin only, no inline script or style, never framed.
pub const CSP: &str =
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// Adds the security headers to every answer.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn only_the_exact_user_and_password_are_admitted() {
        let b = Basic::new("ops", &SecretString::from("correct horse battery".to_owned()));
        let enc = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(b.admits(&with(&enc("ops:correct horse battery"))));
        assert!(!b.admits(&with(&enc("ops:correct horse batter"))));
        assert!(!b.admits(&with(&enc("ops:correct horse battery "))));
        assert!(!b.admits(&with(&enc("Ops:correct horse battery"))));
        assert!(!b.admits(&with(&enc(""))));
        assert!(!b.admits(&with("Basic !!!")));
        assert!(!b.admits(&with("Bearer abc")));
        assert!(!b.admits(&HeaderMap::new()));
        assert_eq!(format!("{b:?}"), "Basic([REDACTED])");
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
