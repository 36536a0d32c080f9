//! Sending one message to one destination: a DingTalk group robot (signed URL, `errcode` answers)
//! or a Standard Webhooks POST. The answer is sorted into delivered, try again, or give up.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use secrecy::ExposeSecret;

use crate::config::{Destination, DestinationType};

use super::message::{Alert, robot_markdown, webhook_json};

/// How a send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    /// Try again later; `slow_down` when the robot said it gets too many messages (`410100`).
    Retry {
        error: String,
        slow_down: bool,
    },
    /// The destination refused for good (a bad token, a dissolved group, a webhook's 4xx).
    Refused {
        error: String,
    },
    /// No answer came (no connection, a timeout): tried again later like `Retry`, and the
    /// destination is left alone for the rest of the round, with a backoff of its own.
    Unreachable {
        error: String,
    },
}

/// The most of an answer that is read: a robot's JSON is a few dozen bytes; whatever a webhook
/// sends past this is not read (and never stored: errors keep 200 characters of it).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// What a robot's `errcode` means (docs/dingtalk.md), for errors and `dingrec alerts test`.
pub fn robot_errcode_meaning(code: i64) -> &'static str {
    match code {
        0 => "ok",
        410100 => "sending too fast: the robot takes 20 messages a minute and is muted for 10 minutes",
        310000 => {
            "security check failed: wrong secret_file, a clock more than an hour off, or a keyword or IP rule of the robot"
        }
        400101 => "no such access_token: check access_token_file",
        400102 => "the robot is disabled in its group",
        400013 => "the group was dissolved",
        -1 => "DingTalk is busy",
        _ => "unknown error code",
    }
}

/// The robot's signature: base64(HMAC-SHA256(key = secret, `timestamp + "\n" + secret`)), not yet
/// URL-encoded (the URL builder does that).
pub fn robot_sign(secret: &str, timestamp_ms: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    BASE64.encode(tag.as_ref())
}

/// The Standard Webhooks signature header: `v1,` + base64(HMAC-SHA256(`id.timestamp.body`)). A
/// secret written `whsec_<base64>` (the specification's form) is the decoded bytes; any other
/// secret is its own bytes.
pub fn webhook_sign(secret: &str, id: &str, timestamp_s: i64, body: &str) -> String {
    let key_bytes = secret
        .strip_prefix("whsec_")
        .and_then(|b| BASE64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp_s}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(tag.as_ref()))
}

/// The HTTP client for alerts: timeouts, no redirects (a redirect could carry the token away).
pub fn http_client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("dingrec/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Wall-clock milliseconds for signatures: DingTalk and webhook receivers compare them with their
/// own clocks, so the injected clock (which tests move) must not be used.
#[allow(clippy::disallowed_methods)]
fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Send `alerts` to a robot as one markdown message with `msgUuid` `batch`.
pub async fn to_robot(http: &reqwest::Client, d: &Destination, batch: &str, alerts: &[Alert]) -> Delivery {
    let Some(token) = &d.access_token else {
        return Delivery::Refused {
            error: "the robot's access token is not configured".into(),
        };
    };
    let (title, text) = robot_markdown(alerts, &d.at_mobiles);
    let body = serde_json::json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
        "at": {"atMobiles": d.at_mobiles, "isAtAll": false},
        "msgUuid": batch,
    });
    let mut url = match reqwest::Url::parse(d.endpoint()) {
        Ok(u) => u,
        Err(e) => {
            return Delivery::Refused {
                error: format!("bad url: {e}"),
            };
        }
    };
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("access_token", token.expose_secret());
        if let Some(secret) = &d.secret {
            let ts = wall_ms();
            q.append_pair("timestamp", &ts.to_string());
            q.append_pair("sign", &robot_sign(secret.expose_secret(), ts));
        }
    }
    let (status, text) = match post(http.post(url).body(body.to_string())).await {
        Ok(answer) => answer,
        Err(retry) => return retry,
    };
    if status != 200 {
        let error = format!("HTTP {status}: {}", excerpt(&text));
        return if status >= 500 || status == 408 || status == 429 {
            Delivery::Retry {
                error,
                slow_down: status == 429,
            }
        } else {
            Delivery::Refused { error }
        };
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    let Ok(a) = serde_json::from_str::<Answer>(&text) else {
        return Delivery::Retry {
            error: format!("not the robot's answer: {}", excerpt(&text)),
            slow_down: false,
        };
    };
    let error = format!(
        "errcode {} ({}): {}",
        a.errcode,
        robot_errcode_meaning(a.errcode),
        excerpt(&a.errmsg)
    );
    match a.errcode {
        0 => Delivery::Delivered,
        400101 | 400102 | 400013 => Delivery::Refused { error },
        410100 => Delivery::Retry {
            error,
            slow_down: true,
        },
        // 310000 (a wrong secret, a skewed clock) and -1 (busy) may pass: retried for 24 hours.
        _ => Delivery::Retry {
            error,
            slow_down: false,
        },
    }
}

/// POST one alert to a webhook, signed, as `webhook-id` `id` (the same on every retry).
pub async fn to_webhook(http: &reqwest::Client, d: &Destination, alert: &Alert, id: &str) -> Delivery {
    let Some(secret) = &d.secret else {
        return Delivery::Refused {
            error: "the webhook's secret is not configured".into(),
        };
    };
    let body = webhook_json(alert, id).to_string();
    let ts = wall_ms() / 1000;
    let signature = webhook_sign(secret.expose_secret(), id, ts, &body);
    let req = http
        .post(d.endpoint())
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body);
    let (status, text) = match post(req).await {
        Ok(answer) => answer,
        Err(retry) => return retry,
    };
    if (200..300).contains(&status) {
        return Delivery::Delivered;
    }
    let error = format!("HTTP {status}: {}", excerpt(&text));
    if (400..500).contains(&status) && status != 408 && status != 429 {
        Delivery::Refused { error }
    } else {
        Delivery::Retry {
            error,
            slow_down: status == 429,
        }
    }
}

/// Send a JSON POST; its status and body, or a retry when it never got an answer. reqwest's
/// error text carries the URL, and a robot's URL carries its token: the error leaves it out.
async fn post(req: reqwest::RequestBuilder) -> Result<(u16, String), Delivery> {
    let mut resp = req
        .header("content-type", "application/json")
        .send()
        .await
        .map_err(|e| Delivery::Unreachable {
            error: transport_error(e),
        })?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_ANSWER_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk[..chunk.len().min(MAX_ANSWER_BYTES - body.len())])
            }
            Ok(None) => break,
            Err(e) => {
                return Err(Delivery::Unreachable {
                    error: transport_error(e),
                });
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Send to whichever kind `d` is: a robot gets all of `alerts` in one message (`msgUuid`
/// `batch`), a webhook one POST each (all must arrive; `webhook-id` `batch`, or `batch.N` for the
/// N-th of several).
pub async fn send(http: &reqwest::Client, d: &Destination, batch: &str, alerts: &[Alert]) -> Delivery {
    match d.kind {
        DestinationType::DingtalkRobot => to_robot(http, d, batch, alerts).await,
        DestinationType::Webhook => {
            for (i, a) in alerts.iter().enumerate() {
                let id = if alerts.len() == 1 {
                    batch.to_owned()
                } else {
                    format!("{batch}.{i}")
                };
                let r = to_webhook(http, d, a, &id).await;
                if r != Delivery::Delivered {
                    return r;
                }
            }
            Delivery::Delivered
        }
    }
}

fn transport_error(e: reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    // Without the URL: a robot's carries its access token.
    let e = e.without_url();
    format!("{what}: {e}")
}

fn excerpt(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    t.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_robot_signature_matches_the_known_answer() {
        let sign = robot_sign("SEC0123456789abcdef", 1_700_000_000_000);
        assert_eq!(sign, "TSZbRFUuvaSQaRKUpF970OPCb2/LcQAP3wOvwZIzBZk=");
        let mut url = reqwest::Url::parse("https://oapi.dingtalk.com/robot/send").expect("url");
        url.query_pairs_mut().append_pair("sign", &sign);
        assert!(
            url.as_str()
                .ends_with("sign=TSZbRFUuvaSQaRKUpF970OPCb2%2FLcQAP3wOvwZIzBZk%3D"),
            "{url}"
        );
    }

    #[test]
    fn a_whsec_secret_is_its_decoded_bytes() {
        let raw = webhook_sign("key", "id", 1, "{}");
        let encoded = webhook_sign(&format!("whsec_{}", BASE64.encode("key")), "id", 1, "{}");
        assert_eq!(raw, encoded);
        assert!(raw.starts_with("v1,"));
    }
}
