//! HTTP calls to DingTalk on reqwest (rustls, ring provider), with connect and total timeouts
//! from config, no redirects, compact JSON bodies holding only the set fields.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::clock::SharedClock;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::error::{DingTalkError, RawResponse, TransportKind, counted, parse};
use super::seal::Sealer;
use super::token::{Token, TokenCache, TokenShelf, TokenStatus};
use crate::config::{Credentials, DingTalkSettings};
use crate::domain::SealedToken;
use crate::domain::quota::Api;
use crate::metrics::Metrics;

/// Path segments keep only RFC 3986 unreserved characters; everything else is escaped, so an id
/// with `/`, `?`, `#` or a space stays one segment (the SDK sends such ids raw and breaks).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Response bodies larger than this are cut (an error page cannot eat memory).
const MAX_BODY: usize = 64 * 1024;

pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";

/// The Stream mode open call's path.
pub const STREAM_OPEN_PATH: &str = "/v1.0/gateway/connections/open";

/// Where a Stream connection goes, and its ticket (valid 90 s, for one connection; a secret:
/// never logged, never in `Debug`).
pub struct StreamTicket {
    pub endpoint: String,
    pub ticket: SecretString,
}

impl std::fmt::Debug for StreamTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTicket")
            .field("endpoint", &self.endpoint)
            .field("ticket", &"[REDACTED]")
            .finish()
    }
}

/// StartCloudRecord's body. Field order is the SDK's (alphabetical); unset fields are left out.
#[derive(Debug, Clone, Serialize)]
pub struct StartBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'a str>,
    #[serde(rename = "smallWindowPosition", skip_serializing_if = "Option::is_none")]
    pub small_window_position: Option<&'a str>,
    #[serde(rename = "unionId")]
    pub union_id: &'a str,
}

/// A StartCloudRecord call.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    pub conference_id: &'a str,
    pub union_id: &'a str,
    /// `mode`: grid | speech | full_screen.
    pub layout: Option<&'a str>,
    pub small_window_position: Option<&'a str>,
}

/// An UpdateScheduleConfSettings call that sets (or clears) the scheduled meeting's own
/// auto-recording (docs/auto-record.md).
#[derive(Debug, Clone)]
pub struct AutoRecordRequest<'a> {
    pub schedule_conference_id: &'a str,
    /// The series' creator: DingTalk refuses anyone else (`creatorUidError`).
    pub creator_union_id: &'a str,
    /// `recordAutoStart`: 1 on, 0 off.
    pub on: bool,
    /// `recordAutoStartType`: 0 host, 1 co-host, 2 anyone.
    pub start_type: i32,
    /// `mode`: the policy's layout.
    pub layout: &'a str,
}

/// UpdateScheduleConfSettings' answer: `success` true when the setting was made (the fake answers
/// with it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsAnswer {
    pub success: bool,
}

/// The body the official SDK sends, keys in its order (it sorts them).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SettingsBody<'a> {
    creator_union_id: &'a str,
    schedule_conf_setting_model: SettingModel<'a>,
    schedule_conference_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SettingModel<'a> {
    mozi_conf_open_record_setting: OpenRecordSetting<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenRecordSetting<'a> {
    mode: &'a str,
    record_auto_start: i32,
    record_auto_start_type: i32,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOk {
    pub status: u16,
    pub request_id: Option<String>,
}

/// Meetings in progress a page of QueryOrgConferenceList asks for (DingTalk's largest page).
pub const ORG_PAGE: u32 = 50;

/// A page of QueryOrgConferenceList.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgConferencePage {
    #[serde(default)]
    pub on_going_conf_list: Vec<OrgConference>,
    #[serde(default)]
    pub next_token: Option<String>,
    #[serde(default)]
    pub has_more: bool,
}

/// A meeting in progress, the fields dingrec uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgConference {
    pub conference_id: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub creator_id: Option<String>,
    /// 2: in progress (the list is of meetings in progress: absent counts as 2).
    #[serde(default)]
    pub status: Option<i64>,
    /// Unix ms.
    #[serde(default)]
    pub start_time: Option<i64>,
}

/// One meeting of a scheduled meeting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConferenceItem {
    pub conference_id: String,
    #[serde(default)]
    pub title: Option<String>,
    /// 0 not started, 1 ended, 2 in progress.
    #[serde(default)]
    pub status: i64,
    #[serde(default)]
    pub start_time: Option<i64>,
}

/// A meeting's info (`confInfo`), the fields dingrec uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfInfo {
    pub conference_id: String,
    #[serde(default)]
    pub status: i64,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub creator_id: Option<String>,
    #[serde(default)]
    pub schedule_conference_id: Option<String>,
    #[serde(default)]
    pub cloud_record_status: Option<i64>,
    /// Whose recording it is (empty when none runs).
    #[serde(default)]
    pub cloud_record_owner_union_id: Option<String>,
}

/// One video of a meeting (`QueryCloudRecordVideo`'s `videoList` item), the fields dingrec keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Video {
    #[serde(default)]
    pub record_id: String,
    /// Milliseconds.
    #[serde(default)]
    pub duration: i64,
    /// Bytes.
    #[serde(default)]
    pub file_size: i64,
}

/// The client. Cheap to share (`Arc`).
pub struct DingTalkClient {
    http: reqwest::Client,
    base: String,
    credentials: Option<Credentials>,
    token_margin: Duration,
    tokens: TokenCache,
    metrics: Option<Arc<Metrics>>,
    clock: SharedClock,
    /// Token fetches DingTalk counted and the database has not yet (see [`Self::take_token_calls`]).
    token_calls: std::sync::atomic::AtomicU32,
    /// Writes a counted token fetch at once (the daemon's `api_usage`); `false` when it could
    /// not, and the fetch waits in `token_calls`.
    token_counter: std::sync::OnceLock<TokenCounter>,
    /// Where the token is shared with other processes, and the key it is sealed with (see
    /// [`Self::share_tokens_with`]).
    shelf: std::sync::OnceLock<(Arc<dyn TokenShelf>, Sealer)>,
}

/// See [`DingTalkClient::count_tokens_with`].
pub type TokenCounter =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync>;

impl std::fmt::Debug for DingTalkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn transport(e: &reqwest::Error) -> DingTalkError {
    // The whole chain, deduplicated: the useful words are at its end ("invalid peer
    // certificate", "connection reset"). It may hold the URL, never a token (a header).
    let mut parts: Vec<String> = Vec::new();
    for err in chain(e) {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let message = parts.join(": ");
    let kind = if e.is_timeout() {
        TransportKind::Timeout
    } else if is_tls(e) {
        TransportKind::Tls
    } else if e.is_connect() {
        TransportKind::Connect
    } else {
        TransportKind::ConnectionLost
    };
    DingTalkError::Transport { kind, message }
}

/// Every error in a chain, io::Error's inner errors included (its `source()` skips them).
fn chain<'a>(e: &'a (dyn std::error::Error + 'static)) -> Vec<&'a (dyn std::error::Error + 'static)> {
    let mut out = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        out.push(err);
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    out
}

/// Is a rustls error anywhere in the chain?
fn is_tls(e: &reqwest::Error) -> bool {
    chain(e)
        .iter()
        .any(|err| err.downcast_ref::<rustls::Error>().is_some())
}

impl DingTalkClient {
    pub fn new(
        settings: &DingTalkSettings,
        credentials: Option<Credentials>,
        metrics: Option<Arc<Metrics>>,
        clock: SharedClock,
    ) -> Result<Self, String> {
        // reqwest is built without a default crypto provider; ring is the one compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dingrec/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(512)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: settings.base_url.trim_end_matches('/').to_owned(),
            credentials,
            token_margin: settings.token_refresh_margin,
            tokens: TokenCache::default(),
            metrics,
            clock,
            token_calls: std::sync::atomic::AtomicU32::new(0),
            token_counter: std::sync::OnceLock::new(),
            shelf: std::sync::OnceLock::new(),
        })
    }

    /// Count each token fetch DingTalk counts with `f`, before the token is used: a token
    /// belongs to no attempt or check, and a crash right after the fetch must not lose it.
    pub fn count_tokens_with(&self, f: TokenCounter) {
        let _ = self.token_counter.set(f);
    }

    /// Keep the token on `shelf` (sealed under a key derived from the app secret) and take it from
    /// there while it is fresh: a restarted daemon, or another daemon on the same database, uses
    /// the token already fetched instead of paying for another. Nothing without credentials.
    pub fn share_tokens_with(&self, shelf: Arc<dyn TokenShelf>) {
        if let Some(creds) = &self.credentials {
            let _ = self.shelf.set((shelf, Sealer::new(creds)));
        }
    }

    /// The app's name in the database (its token's and send slots' row); `None` without
    /// credentials.
    pub fn app_name(&self) -> Option<String> {
        self.credentials.as_ref().map(Credentials::app_name)
    }

    /// Count a call in the metrics if DingTalk counts it; returns whether it does.
    fn tally<T>(&self, api: Api, r: &Result<T, DingTalkError>) -> bool {
        let counts = counted(r);
        if counts && let Some(m) = &self.metrics {
            m.dingtalk_call(api);
        }
        counts
    }

    /// Token fetches counted since the last call: the daemon adds them to `api_usage` (a token
    /// belongs to no attempt or check).
    pub fn take_token_calls(&self) -> u32 {
        self.token_calls.swap(0, std::sync::atomic::Ordering::SeqCst)
    }

    /// Give back token fetches that could not be written (counted at the next try).
    pub fn untake_token_calls(&self, n: u32) {
        self.token_calls.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// A read-only view of the token's state, for `/readyz` (which never calls DingTalk).
    pub fn token_status(&self) -> tokio::sync::watch::Receiver<TokenStatus> {
        self.tokens.status()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn start_path(conference_id: &str) -> String {
        format!(
            "/v1.0/conference/videoConferences/{}/cloudRecords/start",
            utf8_percent_encode(conference_id, SEGMENT)
        )
    }

    fn observe(&self, started: Instant) {
        if let Some(m) = &self.metrics {
            m.request_duration(started.elapsed().as_secs_f64());
        }
    }

    /// Send a request; read at most `MAX_BODY` of the answer.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<RawResponse, DingTalkError> {
        let started = Instant::now();
        let result = async {
            let mut resp = req.send().await.map_err(|e| transport(&e))?;
            let status = resp.status().as_u16();
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let header_request_id = header("x-acs-request-id");
            let location = header(LOCATION.as_str());
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
                let room = MAX_BODY.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_BODY {
                    break;
                }
            }
            Ok(RawResponse {
                status,
                header_request_id,
                location,
                body,
            })
        }
        .await;
        self.observe(started);
        result
    }

    fn post_json(&self, path: &str, body: &impl Serialize) -> reqwest::RequestBuilder {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.http
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(bytes)
    }

    fn with_token(
        req: reqwest::RequestBuilder,
        token: &SecretString,
    ) -> Result<reqwest::RequestBuilder, DingTalkError> {
        let mut v = HeaderValue::from_str(token.expose_secret()).map_err(|_| DingTalkError::BadToken)?;
        v.set_sensitive(true);
        Ok(req.header(TOKEN_HEADER, v))
    }

    /// Fetch a token (the token call itself, no caching).
    async fn fetch_token(&self) -> Result<Token, DingTalkError> {
        let creds = self.credentials.as_ref().ok_or_else(|| DingTalkError::Api {
            status: 0,
            code: "missingCredentials".into(),
            message: "no app credentials configured (dingtalk.app_key and the app secret)".into(),
            request_id: None,
        })?;
        let req = match creds {
            Credentials::Internal { app_key, app_secret } => {
                let mut body = Map::new();
                body.insert("appKey".into(), Value::String(app_key.clone()));
                body.insert(
                    "appSecret".into(),
                    Value::String(app_secret.expose_secret().to_owned()),
                );
                self.post_json("/v1.0/oauth2/accessToken", &body)
            }
            Credentials::ThirdParty {
                corp_id,
                suite_key,
                suite_secret,
                suite_ticket,
            } => {
                let mut body = Map::new();
                body.insert("authCorpId".into(), Value::String(corp_id.clone()));
                body.insert("suiteKey".into(), Value::String(suite_key.clone()));
                body.insert(
                    "suiteSecret".into(),
                    Value::String(suite_secret.expose_secret().to_owned()),
                );
                body.insert(
                    "suiteTicket".into(),
                    Value::String(suite_ticket.expose_secret().to_owned()),
                );
                self.post_json("/v1.0/oauth2/corpAccessToken", &body)
            }
        };
        let result = async {
            let raw = self.send(req).await?;
            let (m, request_id) = parse(&raw)?;
            let token = m
                .get("accessToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty());
            let expire_in = m.get("expireIn").and_then(Value::as_u64);
            match (token, expire_in) {
                (Some(t), Some(secs)) => {
                    // DingTalk says 7,200 s; a day at most, so that no answer can overflow the clock.
                    let life = Duration::from_secs(secs.clamp(1, 24 * 3600));
                    let margin = self.token_margin.min(life / 2);
                    let now = Instant::now();
                    let wall = self.clock.now();
                    let wall_after = |d: Duration| wall + TimeDelta::from_std(d).unwrap_or_default();
                    Ok(Token {
                        value: SecretString::from(t.to_owned()),
                        expires: now + life,
                        expires_at: wall_after(life),
                        refresh_at: now + life - margin,
                        refresh_at_wall: wall_after(life - margin),
                    })
                }
                _ => Err(DingTalkError::InvalidResponse {
                    status: raw.status,
                    reason: "token answer without accessToken/expireIn".into(),
                    request_id,
                }),
            }
        }
        .await;
        if let Some(m) = &self.metrics {
            m.token_refresh(result.is_ok());
        }
        if self.tally(Api::Token, &result) {
            let written = match self.token_counter.get() {
                Some(count) => count().await,
                None => false,
            };
            if !written {
                self.token_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        result
    }

    /// Open a Stream mode connection (`POST /v1.0/gateway/connections/open`, docs/dingtalk.md "Stream
    /// mode"): the body the official Stream SDKs send, with the app's key and secret and one
    /// subscription to every event. Not a counted call. An internal app's credentials only.
    pub async fn open_stream(&self, local_ip: &str) -> Result<StreamTicket, DingTalkError> {
        let Some(Credentials::Internal { app_key, app_secret }) = &self.credentials else {
            return Err(DingTalkError::Api {
                status: 0,
                code: "missingCredentials".into(),
                message: "Stream mode needs an internal app's dingtalk.app_key and app secret".into(),
                request_id: None,
            });
        };
        let body = serde_json::json!({
            "clientId": app_key,
            "clientSecret": app_secret.expose_secret(),
            "subscriptions": [{"type": "EVENT", "topic": "*"}],
            "ua": concat!("dingrec/", env!("CARGO_PKG_VERSION")),
            "localIp": local_ip,
        });
        let raw = self.send(self.post_json(STREAM_OPEN_PATH, &body)).await?;
        let (m, request_id) = parse(&raw)?;
        let field = |k: &str| m.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
        match (field("endpoint"), field("ticket")) {
            (Some(endpoint), Some(ticket)) => Ok(StreamTicket {
                endpoint: endpoint.chars().take(2048).collect(),
                ticket: SecretString::from(ticket.to_owned()),
            }),
            _ => Err(DingTalkError::InvalidResponse {
                status: raw.status,
                reason: "connection answer without endpoint/ticket".into(),
                request_id,
            }),
        }
    }

    /// The clock the client reads (a test's manual clock, or the system's).
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The API host's base URL (`dingtalk.base_url`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A valid token: cached, or fetched (one fetch at a time).
    pub async fn token(&self) -> Result<SecretString, DingTalkError> {
        self.tokens
            .get(self.clock.now(), || self.shared_or_fetched())
            .await
            .map(|t| t.value)
            .map_err(|e| DingTalkError::Token(Box::new(e)))
    }

    /// The shelf's token while it is fresh, else a fetched one, put on the shelf. Processes that
    /// share the shelf take turns to fetch: one that waited for another's turn takes the token
    /// that one kept.
    async fn shared_or_fetched(&self) -> Result<Token, DingTalkError> {
        let Some((shelf, sealer)) = self.shelf.get() else {
            return self.fetch_token().await;
        };
        if let Some(t) = self.kept_token(shelf.as_ref(), sealer).await {
            return Ok(t);
        }
        let turn = match shelf.fetch_turn(sealer.app()).await {
            Ok(turn) => turn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take a turn to fetch the access token; fetching one");
                None
            }
        };
        let kept = match &turn {
            Some(_) => self.kept_token(shelf.as_ref(), sealer).await,
            None => None,
        };
        let fetched = match kept {
            Some(t) => Ok(t),
            None => self.fetch_and_keep(shelf.as_ref(), sealer).await,
        };
        if let Some(turn) = turn {
            let _ = turn.release().await;
        }
        fetched
    }

    /// The shelf's token, if it is fresh and opens under this app's secret.
    async fn kept_token(&self, shelf: &dyn TokenShelf, sealer: &Sealer) -> Option<Token> {
        let wall = self.clock.now();
        let kept = match shelf.load(sealer.app()).await {
            Ok(Some(kept)) if wall < kept.refresh_at => kept,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the shared access token; fetching one");
                return None;
            }
        };
        // Sealed under another app secret (rotated) or altered: fetched and replaced.
        let value = sealer.open(&kept.sealed, kept.expires_at, kept.refresh_at)?;
        tracing::debug!(expires_at = %kept.expires_at, "access token taken from the database");
        // As far ahead as a fetched token can be (a day): a row cannot overflow the clock.
        let ahead = |t: DateTime<Utc>| {
            (t - wall)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(24 * 3600))
        };
        let now = Instant::now();
        Some(Token {
            value,
            expires: now + ahead(kept.expires_at),
            expires_at: kept.expires_at,
            refresh_at: now + ahead(kept.refresh_at),
            refresh_at_wall: kept.refresh_at,
        })
    }

    /// Fetch a token and put it on the shelf.
    async fn fetch_and_keep(&self, shelf: &dyn TokenShelf, sealer: &Sealer) -> Result<Token, DingTalkError> {
        let wall = self.clock.now();
        let token = self.fetch_token().await?;
        let shared = sealer
            .seal(&token.value, token.expires_at, token.refresh_at_wall)
            .map(|sealed| SealedToken {
                sealed,
                expires_at: token.expires_at,
                refresh_at: token.refresh_at_wall,
            });
        let kept = match &shared {
            Some(s) => shelf.save(sealer.app(), s, wall).await,
            None => Err("the system's random source failed".to_owned()),
        };
        if let Err(e) = kept {
            tracing::warn!(error = %e, "cannot share the access token through the database; other daemons fetch their own");
        }
        Ok(token)
    }

    /// Drop the cached token if it is `used` (after `InvalidAuthentication`), here and on the
    /// shelf (unless another process has put a newer one there).
    pub async fn invalidate_token(&self, used: &SecretString) {
        self.tokens.invalidate(used).await;
        let Some((shelf, sealer)) = self.shelf.get() else {
            return;
        };
        if let Ok(Some(kept)) = shelf.load(sealer.app()).await
            && sealer
                .open(&kept.sealed, kept.expires_at, kept.refresh_at)
                .is_some_and(|t| t.expose_secret() == used.expose_secret())
            && let Err(e) = shelf.forget(sealer.app(), &kept.sealed).await
        {
            tracing::warn!(error = %e, "cannot drop the refused access token from the database");
        }
    }

    /// StartCloudRecord with `token`. Success only on 2xx with `"code":"200"`.
    pub async fn start_cloud_record_with(
        &self,
        token: &SecretString,
        r: &StartRequest<'_>,
    ) -> Result<CallOk, DingTalkError> {
        let body = StartBody {
            mode: r.layout,
            small_window_position: r.small_window_position,
            union_id: r.union_id,
        };
        let req = Self::with_token(self.post_json(&Self::start_path(r.conference_id), &body), token)?;
        let result = async { expect_code_200(&self.send(req).await?) }.await;
        self.tally(Api::StartCloudRecord, &result);
        result
    }

    /// StopCloudRecord with `token`.
    pub async fn stop_cloud_record_with(
        &self,
        token: &SecretString,
        conference_id: &str,
        union_id: &str,
    ) -> Result<CallOk, DingTalkError> {
        let path = format!(
            "/v1.0/conference/videoConferences/{}/cloudRecords/stop",
            utf8_percent_encode(conference_id, SEGMENT)
        );
        let mut body = Map::new();
        body.insert("unionId".into(), Value::String(union_id.to_owned()));
        let req = Self::with_token(self.post_json(&path, &body), token)?;
        let result = async { expect_code_200(&self.send(req).await?) }.await;
        self.tally(Api::StopCloudRecord, &result);
        result
    }

    /// UpdateScheduleConfSettings with `token`: the scheduled meeting's own auto-recording.
    /// Success on 2xx whose answer says so ([`SettingsAnswer`]).
    pub async fn update_schedule_settings_with(
        &self,
        token: &SecretString,
        r: &AutoRecordRequest<'_>,
    ) -> Result<CallOk, DingTalkError> {
        let body = SettingsBody {
            creator_union_id: r.creator_union_id,
            schedule_conf_setting_model: SettingModel {
                mozi_conf_open_record_setting: OpenRecordSetting {
                    mode: r.layout,
                    record_auto_start: i32::from(r.on),
                    record_auto_start_type: r.start_type,
                },
            },
            schedule_conference_id: r.schedule_conference_id,
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let put = self
            .http
            .put(self.url("/v1.0/conference/scheduleConferences/settings"))
            .header(CONTENT_TYPE, "application/json")
            .body(bytes);
        let req = Self::with_token(put, token)?;
        let result = async {
            let raw = self.send(req).await?;
            let (m, request_id) = parse(&raw)?;
            match serde_json::from_value::<SettingsAnswer>(Value::Object(m)) {
                Ok(SettingsAnswer { success: true }) => Ok(CallOk {
                    status: raw.status,
                    request_id,
                }),
                _ => Err(DingTalkError::InvalidResponse {
                    status: raw.status,
                    reason: format!(
                        "HTTP {} that does not say the setting was made: {}",
                        raw.status,
                        super::error::snippet(&raw.body)
                    ),
                    request_id,
                }),
            }
        }
        .await;
        self.tally(Api::ScheduleSettings, &result);
        result
    }

    /// A meeting's info, with `token`.
    pub async fn conference_info_with(
        &self,
        token: &SecretString,
        conference_id: &str,
    ) -> Result<ConfInfo, DingTalkError> {
        let path = format!(
            "/v1.0/conference/videoConferences/{}",
            utf8_percent_encode(conference_id, SEGMENT)
        );
        self.get(Api::ConferenceInfo, &path, token, "confInfo").await
    }

    /// A meeting's videos (QueryCloudRecordVideo) for the host `union_id`; DingTalk answers 400
    /// `cloudRecordNotFound` when no recording was made.
    pub async fn cloud_record_videos_with(
        &self,
        token: &SecretString,
        conference_id: &str,
        union_id: &str,
    ) -> Result<Vec<Video>, DingTalkError> {
        let path = format!(
            "/v1.0/conference/videoConferences/{}/cloudRecords/getVideos?unionId={}",
            utf8_percent_encode(conference_id, SEGMENT),
            utf8_percent_encode(union_id, SEGMENT)
        );
        self.get(Api::CloudRecordVideos, &path, token, "videoList").await
    }

    /// The meetings of a scheduled meeting (DingTalk returns the latest one).
    pub async fn schedule_conference_list_with(
        &self,
        token: &SecretString,
        schedule_conference_id: &str,
    ) -> Result<Vec<ConferenceItem>, DingTalkError> {
        let path = format!(
            "/v1.0/conference/videoConferences/scheduleConferences/{}?maxResults=20&nextToken=0",
            utf8_percent_encode(schedule_conference_id, SEGMENT)
        );
        self.get(Api::ScheduleConference, &path, token, "conferenceList")
            .await
    }

    /// One page of the organisation's meetings in progress (QueryOrgConferenceList), from
    /// `next_token` (empty: the first page).
    pub async fn org_conferences_with(
        &self,
        token: &SecretString,
        next_token: &str,
    ) -> Result<OrgConferencePage, DingTalkError> {
        let path = format!(
            "/v1.0/conference/orgConferences?maxResults={ORG_PAGE}&nextToken={}",
            utf8_percent_encode(next_token, SEGMENT)
        );
        let req = Self::with_token(self.http.get(self.url(&path)), token)?;
        let result = async {
            let raw = self.send(req).await?;
            let (m, request_id) = parse(&raw)?;
            serde_json::from_value(Value::Object(m)).map_err(|e| DingTalkError::InvalidResponse {
                status: raw.status,
                reason: format!("an unreadable list of meetings in progress: {e}"),
                request_id,
            })
        }
        .await;
        self.tally(Api::OrgConferences, &result);
        result
    }

    /// A look-up: GET `path`, the answer's field `key`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        api: Api,
        path: &str,
        token: &SecretString,
        key: &str,
    ) -> Result<T, DingTalkError> {
        let req = Self::with_token(self.http.get(self.url(path)), token)?;
        let result = async { field(&self.send(req).await?, key) }.await;
        self.tally(api, &result);
        result
    }

    /// The live (`status == 2`) conferenceId of a scheduled meeting, if one is live.
    pub async fn resolve_live_with(
        &self,
        token: &SecretString,
        schedule_conference_id: &str,
    ) -> Result<Option<String>, DingTalkError> {
        let list = self
            .schedule_conference_list_with(token, schedule_conference_id)
            .await?;
        Ok(list.into_iter().find(|c| c.status == 2).map(|c| c.conference_id))
    }
}

/// A lookup's answer: the JSON field `key` of a successful answer, as `T`.
fn field<T: serde::de::DeserializeOwned>(raw: &RawResponse, key: &str) -> Result<T, DingTalkError> {
    let (m, request_id) = parse(raw)?;
    m.get(key)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| DingTalkError::InvalidResponse {
            status: raw.status,
            reason: format!("answer without a valid {key}"),
            request_id,
        })
}

/// StartCloudRecord/StopCloudRecord success: 2xx and `"code":"200"`; anything else is an error.
fn expect_code_200(raw: &RawResponse) -> Result<CallOk, DingTalkError> {
    let (m, request_id) = parse(raw)?;
    let code = m.get("code").or_else(|| m.get("Code")).and_then(|v| {
        v.as_str()
            .map(str::to_owned)
            .or_else(|| v.as_i64().map(|n| n.to_string()))
    });
    match code.as_deref() {
        Some("200") => Ok(CallOk {
            status: raw.status,
            request_id,
        }),
        _ => Err(DingTalkError::InvalidResponse {
            status: raw.status,
            reason: format!(
                "HTTP {} without \"code\":\"200\": {}",
                raw.status,
                super::error::snippet(&raw.body)
            ),
            request_id,
        }),
    }
}
