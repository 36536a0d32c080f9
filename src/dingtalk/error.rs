//! DingTalk's answers, parsed from every shape seen (`docs/dingtalk.md`): a JSON object with
//! `code`/`Code`, `message`/`Message`, `requestid`/`RequestId` in any order; the
//! `x-acs-request-id` header; non-JSON and empty bodies (status kept, with a bounded snippet);
//! a 2xx that is not a success; the IP-ban page; redirects (never followed); transport failures.

use serde_json::{Map, Value};

use crate::domain::outcome::{MAX_CODE_CHARS, MAX_MESSAGE_CHARS, capped, codes};

/// How much of a non-JSON body is kept for the audit log.
pub const SNIPPET_CHARS: usize = 200;

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// No answer within `request_timeout` (or the connection within `connect_timeout`).
    Timeout,
    /// Could not connect (refused, unreachable, DNS, TLS handshake).
    Connect,
    /// The connection broke after the request was sent (reset, closed mid-body).
    ConnectionLost,
    /// TLS failed: an untrusted or invalid certificate, a handshake error.
    Tls,
}

/// One error type for every DingTalk call. Keeps what the retry decision and the audit row need.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DingTalkError {
    /// DingTalk answered with its error format.
    #[error("DingTalk answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// An answer that is not DingTalk's format, or not a success although 2xx.
    #[error("unexpected answer (HTTP {status}): {reason}")]
    InvalidResponse {
        status: u16,
        reason: String,
        request_id: Option<String>,
    },
    /// The IP-ban page (`"source":"x5","punish":"deny"`): too many calls from this address.
    #[error("DingTalk throttles this IP address (HTTP {status}); wait {wait_s} s")]
    IpThrottled {
        status: u16,
        wait_s: u64,
        request_id: Option<String>,
    },
    #[error("{}: {message}", match kind { TransportKind::Timeout => "timed out", TransportKind::Connect => "cannot connect", TransportKind::ConnectionLost => "connection lost", TransportKind::Tls => "TLS failed" })]
    Transport { kind: TransportKind, message: String },
    /// The access token could not be had; `0` is the token call's own error.
    #[error("cannot get an access token: {0}")]
    Token(Box<DingTalkError>),
    /// No meeting of a scheduled meeting is live yet (dingrec's own `meetingNotLive`).
    #[error("no meeting of scheduled meeting {schedule_conference_id} is live yet")]
    NotLive { schedule_conference_id: String },
    /// The token is not a valid header value (never printed).
    #[error("the access token holds characters that cannot be sent in a header")]
    BadToken,
}

/// A dingrec code for transport failures past the connect.
pub const CONNECTION_LOST: &str = "connection_lost";
/// A dingrec code for TLS failures (certificate not trusted, handshake).
pub const TLS_ERROR: &str = "tls_error";

impl DingTalkError {
    /// The code for `attempts.code`: DingTalk's, or dingrec's own.
    pub fn code(&self) -> &str {
        match self {
            DingTalkError::Api { code, .. } => code,
            DingTalkError::InvalidResponse { .. } | DingTalkError::BadToken => codes::INVALID_RESPONSE,
            DingTalkError::IpThrottled { .. } => codes::IP_THROTTLED,
            DingTalkError::Transport { kind, .. } => match kind {
                TransportKind::Timeout => codes::TIMEOUT,
                TransportKind::Connect => codes::CONNECT_ERROR,
                TransportKind::ConnectionLost => CONNECTION_LOST,
                TransportKind::Tls => TLS_ERROR,
            },
            DingTalkError::Token(inner) => inner.code(),
            DingTalkError::NotLive { .. } => codes::MEETING_NOT_LIVE,
        }
    }

    /// The HTTP status, 0 when there was no response.
    pub fn http_status(&self) -> u16 {
        match self {
            DingTalkError::Api { status, .. }
            | DingTalkError::InvalidResponse { status, .. }
            | DingTalkError::IpThrottled { status, .. } => *status,
            DingTalkError::Transport { .. } | DingTalkError::BadToken => 0,
            // The list call answered 200; the meeting is just not live.
            DingTalkError::NotLive { .. } => 200,
            DingTalkError::Token(inner) => inner.http_status(),
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            DingTalkError::Api { request_id, .. }
            | DingTalkError::InvalidResponse { request_id, .. }
            | DingTalkError::IpThrottled { request_id, .. } => request_id.as_deref(),
            DingTalkError::Token(inner) => inner.request_id(),
            _ => None,
        }
    }

    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            DingTalkError::Transport { kind, .. } => Some(*kind),
            DingTalkError::Token(inner) => inner.transport_kind(),
            _ => None,
        }
    }

    pub fn is_token_error(&self) -> bool {
        matches!(self, DingTalkError::Token(_))
    }

    /// Whether DingTalk counts this failed call against the organisation's monthly quota: every
    /// answered call does, except refusals for its rate limits (the QPS codes, the IP ban) and
    /// for the quota itself; a call never answered (or never made: no token) does not.
    pub fn counted(&self) -> bool {
        match self {
            // Status 0: dingrec's own refusal (`window_passed`), no call was made.
            DingTalkError::Api { status: 0, .. } => false,
            DingTalkError::Api { code, .. } => {
                !code.starts_with("Forbidden.AccessDenied.QpsLimitFor") && code != codes::QUOTA_EXHAUSTED
            }
            DingTalkError::InvalidResponse { .. } | DingTalkError::NotLive { .. } => true,
            DingTalkError::IpThrottled { .. }
            | DingTalkError::Transport { .. }
            | DingTalkError::Token(_)
            | DingTalkError::BadToken => false,
        }
    }
}

/// Whether DingTalk counts a call with this result against the monthly quota.
pub fn counted<T>(r: &Result<T, DingTalkError>) -> bool {
    r.as_ref().err().is_none_or(DingTalkError::counted)
}

/// A raw HTTP answer: what the parser needs.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// `x-acs-request-id`.
    pub header_request_id: Option<String>,
    /// `Location`, for redirects.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// A string (or number) field of an answer, cut to `max` characters: DingTalk's code, message
/// and request id are stored, logged and shown, so none may be as long as the answer.
fn get_capped(m: &Map<String, Value>, keys: &[&str], max: usize) -> Option<String> {
    keys.iter().find_map(|k| match m.get(*k) {
        Some(Value::String(s)) => Some(capped(s, max)),
        Some(Value::Number(n)) => Some(capped(&n.to_string(), max)),
        _ => None,
    })
}

fn get_str(m: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    get_capped(m, keys, MAX_CODE_CHARS)
}

fn get_message(m: &Map<String, Value>) -> Option<String> {
    get_capped(m, &["message", "Message"], MAX_MESSAGE_CHARS)
}

/// A bounded, printable piece of a body.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(SNIPPET_CHARS).collect();
    if text.chars().count() > SNIPPET_CHARS {
        s.push('…');
    }
    s
}

/// Parse an answer into its JSON object (for a 2xx) or the error it means. Whether a 2xx object is
/// a success is the caller's call (StartCloudRecord needs `"code":"200"`; the token call
/// `accessToken`).
pub fn parse(raw: &RawResponse) -> Result<(Map<String, Value>, Option<String>), DingTalkError> {
    let status = raw.status;
    let json: Option<Value> = serde_json::from_slice(&raw.body).ok();
    let object = match json {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    };
    let body_request_id = object
        .as_ref()
        .and_then(|m| get_str(m, &["requestid", "RequestId", "requestId", "request_id"]));
    let request_id = body_request_id.or_else(|| {
        raw.header_request_id
            .as_deref()
            .map(|r| capped(r, MAX_CODE_CHARS))
    });

    if (300..400).contains(&status) {
        return Err(DingTalkError::InvalidResponse {
            status,
            reason: format!(
                "redirect to {} not followed",
                raw.location
                    .as_deref()
                    .map(|l| snippet(l.as_bytes()))
                    .unwrap_or_else(|| "nowhere".into())
            ),
            request_id,
        });
    }
    let Some(m) = object else {
        let what = if raw.body.is_empty() {
            "empty body".to_owned()
        } else if serde_json::from_slice::<Value>(&raw.body).is_ok() {
            format!("JSON that is not an object: {}", snippet(&raw.body))
        } else {
            format!("not JSON: {}", snippet(&raw.body))
        };
        return Err(DingTalkError::InvalidResponse {
            status,
            reason: what,
            request_id,
        });
    };
    if m.get("punish").is_some() || m.get("source").and_then(Value::as_str) == Some("x5") {
        let wait_s = m.get("wait").and_then(Value::as_u64).unwrap_or(5);
        return Err(DingTalkError::IpThrottled {
            status,
            wait_s,
            request_id,
        });
    }
    let code = get_str(&m, &["code", "Code"]);
    if !(200..300).contains(&status) {
        return Err(match code {
            Some(code) => DingTalkError::Api {
                status,
                message: get_message(&m).unwrap_or_default(),
                code,
                request_id,
            },
            None => DingTalkError::InvalidResponse {
                status,
                reason: format!("error without a code: {}", snippet(&raw.body)),
                request_id,
            },
        });
    }
    // A 2xx that carries an error code is an error (the gateway's format, whatever the status).
    if let Some(c) = &code
        && c != "200"
        && m.get("message").or_else(|| m.get("Message")).is_some()
    {
        return Err(DingTalkError::Api {
            status,
            message: get_message(&m).unwrap_or_default(),
            code: c.clone(),
            request_id,
        });
    }
    Ok((m, request_id))
}

#[cfg(test)]
mod tests;
