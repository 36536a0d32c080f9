//! DingTalk's Stream mode (docs/dingtalk.md "Stream mode"): an outbound WebSocket on which
//! DingTalk pushes events, so that no public endpoint is needed.
//!
//! [`StreamClient::run`] opens a connection (`POST /v1.0/gateway/connections/open` with the app's
//! key and secret), connects to the endpoint it names with its one-use ticket, and then answers
//! every frame as the protocol says: a SYSTEM `ping` is echoed; an EVENT is handed to the daemon
//! as a [`Delivery`] and acknowledged `SUCCESS` only once the daemon says its outcome is committed
//! (`LATER` when it could not be, when nobody answers within `ack_timeout`, or when the daemon's
//! queue is full: DingTalk sends it again); a SYSTEM `disconnect` opens a new connection at once
//! while the old one keeps serving until DingTalk closes it. A connection that says nothing, not
//! even a pong to our ping, for two `keepalive` periods is half-open and is replaced. Failed opens
//! and lost connections are retried with jittered exponential backoff from `reconnect_min` to
//! `reconnect_max`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{SinkExt as _, StreamExt as _};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use super::DingTalkClient;

/// The largest frame or message accepted from DingTalk (an event is a few KiB).
pub const MAX_FRAME: usize = 1024 * 1024;

/// How a connection is kept and replaced.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The first retry's delay (jittered: half to all of it), doubling per failure.
    pub reconnect_min: Duration,
    /// The longest delay between retries (`dingtalk.stream.reconnect_max`).
    pub reconnect_max: Duration,
    /// A WebSocket ping this often; nothing heard for two periods means the socket is dead.
    pub keepalive: Duration,
    /// How long the daemon has to commit an event before it is answered `LATER`.
    pub ack_timeout: Duration,
    /// How long an old connection keeps serving after DingTalk's `disconnect`.
    pub drain: Duration,
    /// The open call's and the WebSocket handshake's bound.
    pub connect_timeout: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            keepalive: Duration::from_secs(30),
            ack_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the connection stands (`/readyz` `stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Off,
    Connecting,
    Connected,
    Down,
}

/// The connection's state as the daemon reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub state: StreamState,
    pub connected_since: Option<DateTime<Utc>>,
    /// Since when it has been down (the `stream_down` alert's clock).
    pub down_since: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    /// Connections opened after the first.
    pub reconnects: u64,
    pub last_error: Option<String>,
}

impl StreamStatus {
    pub fn off() -> Self {
        Self {
            state: StreamState::Off,
            connected_since: None,
            down_since: None,
            last_event_at: None,
            reconnects: 0,
            last_error: None,
        }
    }

    /// Down (not connecting for the first time, not connected) for longer than `bound` at `now`:
    /// the `stream_down` alert and `/readyz`'s verdict.
    pub fn down_longer_than(&self, now: DateTime<Utc>, bound: Duration) -> bool {
        self.state == StreamState::Down
            && self
                .down_since
                .is_some_and(|since| (now - since).to_std().is_ok_and(|d| d > bound))
    }
}

/// One event pushed by DingTalk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub message_id: String,
    pub event_id: String,
    pub event_type: String,
    pub born_at: Option<DateTime<Utc>>,
    pub corp_id: Option<String>,
    /// The event's own JSON document, as DingTalk sent it (a string inside the frame).
    pub data: String,
}

/// What DingTalk is told about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Its outcome is committed: do not send it again.
    Success,
    /// It could not be stored: send it again later.
    Later,
}

impl Ack {
    fn as_str(self) -> &'static str {
        match self {
            Ack::Success => "SUCCESS",
            Ack::Later => "LATER",
        }
    }
}

/// An event handed to the daemon; answer it with [`Delivery::ack`] once its outcome is committed.
/// Dropped unanswered, it is acknowledged `LATER`.
#[derive(Debug)]
pub struct Delivery {
    pub event: StreamEvent,
    reply: oneshot::Sender<Ack>,
}

impl Delivery {
    pub fn ack(self, ack: Ack) {
        let _ = self.reply.send(ack);
    }
}

/// A frame from DingTalk, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Ping {
        message_id: String,
        data: String,
    },
    Disconnect {
        reason: String,
    },
    Event(StreamEvent),
    /// A CALLBACK (robot messages, cards): not subscribed to; answered "not implemented".
    Callback {
        message_id: String,
    },
    /// A SYSTEM frame of another topic, or another type.
    Other {
        kind: String,
        topic: String,
    },
}

/// A header's value as text: DingTalk sends some as numbers.
fn header(headers: &Map<String, Value>, key: &str) -> Option<String> {
    match headers.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Read one text frame.
pub fn parse_frame(text: &str) -> Result<Inbound, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let empty = Map::new();
    let headers = v.get("headers").and_then(Value::as_object).unwrap_or(&empty);
    let data = match v.get("data") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let topic = header(headers, "topic").unwrap_or_default();
    let message_id = header(headers, "messageId").ok_or("a frame without headers.messageId")?;
    Ok(match (kind.as_str(), topic.as_str()) {
        ("SYSTEM", "ping") => Inbound::Ping { message_id, data },
        ("SYSTEM", "disconnect") => Inbound::Disconnect {
            reason: serde_json::from_str::<Value>(&data)
                .ok()
                .and_then(|d| d.get("reason").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
        },
        ("EVENT", _) => {
            let event_id = header(headers, "eventId").ok_or("an EVENT frame without headers.eventId")?;
            let born_at = header(headers, "eventBornTime")
                .and_then(|ms| ms.parse::<i64>().ok())
                .and_then(DateTime::from_timestamp_millis);
            Inbound::Event(StreamEvent {
                message_id,
                event_id,
                event_type: header(headers, "eventType").unwrap_or_default(),
                born_at,
                corp_id: header(headers, "eventCorpId"),
                data,
            })
        }
        ("CALLBACK", _) => Inbound::Callback { message_id },
        _ => Inbound::Other { kind, topic },
    })
}

/// The answer to a frame: code, the echoed `messageId`, and `data` (a JSON document as a string).
fn answer(code: u16, message_id: &str, message: &str, data: &str) -> String {
    json!({
        "code": code,
        "headers": {"messageId": message_id, "contentType": "application/json"},
        "message": message,
        "data": data,
    })
    .to_string()
}

/// The protocol's acknowledgement of an EVENT frame.
pub fn ack_frame(message_id: &str, ack: Ack) -> String {
    answer(
        200,
        message_id,
        "OK",
        &json!({"status": ack.as_str()}).to_string(),
    )
}

/// The answer to a SYSTEM `ping`: its data echoed.
pub fn pong_frame(message_id: &str, data: &str) -> String {
    answer(200, message_id, "OK", data)
}

/// The delay before retry number `failures` (1 is the first): `min` doubling up to `max`, then a
/// uniform draw between half and all of it (`unit` in [0, 1)), so that daemons restarted together
/// do not reconnect together.
pub fn backoff(failures: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let base = min.saturating_mul(1u32 << doublings).min(max).max(min.min(max));
    base.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// The endpoint to connect to, with its ticket. DingTalk's answer names a `wss://` endpoint; a
/// plaintext `ws://` one is accepted only on loopback (the fake), so the ticket never crosses a
/// network in clear.
pub fn connect_url(endpoint: &str, ticket: &str) -> Result<url::Url, String> {
    let mut url = url::Url::parse(endpoint).map_err(|e| format!("the Stream endpoint is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "wss" => {}
        "ws" if loopback => {}
        other => {
            return Err(format!(
                "refusing the Stream endpoint's scheme '{other}' (wss, or ws on loopback only)"
            ));
        }
    }
    url.query_pairs_mut().append_pair("ticket", ticket);
    Ok(url)
}

/// The local address this host uses to reach the API host (the open call's `localIp`), found
/// without sending anything (a UDP socket's connect); empty when it cannot be told.
async fn local_ip(base_url: &str) -> String {
    let Some((host, port)) = url::Url::parse(base_url).ok().and_then(|u| {
        Some((
            u.host_str()?.trim_matches(['[', ']']).to_owned(),
            u.port_or_known_default()?,
        ))
    }) else {
        return String::new();
    };
    let found = async {
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()?
            .next()?;
        let any = if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sock = tokio::net::UdpSocket::bind(any).await.ok()?;
        sock.connect(addr).await.ok()?;
        Some(sock.local_addr().ok()?.ip().to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), found)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    Closed(String),
    HalfOpen,
    Failed(String),
    Drained,
    Cancelled,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed(why) | End::Failed(why) => f.write_str(why),
            End::HalfOpen => f.write_str("nothing heard for two keepalive periods (half-open)"),
            End::Drained => f.write_str("closed after DingTalk's disconnect"),
            End::Cancelled => f.write_str("stopped"),
        }
    }
}

/// Keeps one Stream connection open and hands its events to the daemon.
pub struct StreamClient {
    api: Arc<DingTalkClient>,
    settings: StreamSettings,
    status: Arc<watch::Sender<StreamStatus>>,
}

impl StreamClient {
    pub fn new(api: Arc<DingTalkClient>, settings: StreamSettings) -> Self {
        Self {
            api,
            settings,
            status: Arc::new(watch::Sender::new(StreamStatus::off())),
        }
    }

    /// The connection's state, kept current.
    pub fn status(&self) -> watch::Receiver<StreamStatus> {
        self.status.subscribe()
    }

    /// Open, serve and reopen connections until `cancel`; events go to `events`.
    pub async fn run(self, events: mpsc::Sender<Delivery>, cancel: CancellationToken) {
        let mut failures: u32 = 0;
        let mut opened: u64 = 0;
        self.status.send_modify(|s| s.state = StreamState::Connecting);
        while !cancel.is_cancelled() {
            let error = match self.connect().await {
                Ok(ws) => {
                    opened += 1;
                    let now = self.api.clock().now();
                    let since = Instant::now();
                    self.status.send_modify(|s| {
                        s.state = StreamState::Connected;
                        s.connected_since = Some(now);
                        s.down_since = None;
                        s.reconnects = opened - 1;
                        s.last_error = None;
                    });
                    tracing::info!(reconnects = opened - 1, "Stream mode connected");
                    let (replace_tx, replace_rx) = oneshot::channel();
                    let mut conn = tokio::spawn(serve(
                        ws,
                        events.clone(),
                        self.settings.clone(),
                        self.status.clone(),
                        self.api.clock().clone(),
                        replace_tx,
                        cancel.clone(),
                    ));
                    let ended = tokio::select! {
                        replace = replace_rx => match replace {
                            // DingTalk said `disconnect`: a new connection now, while the old
                            // one drains on its own.
                            Ok(()) => None,
                            Err(_) => Some(conn.await),
                        },
                        end = &mut conn => Some(end),
                    };
                    let Some(end) = ended else {
                        failures = 0;
                        continue;
                    };
                    let end = end.unwrap_or_else(|e| End::Failed(format!("the connection task failed: {e}")));
                    if matches!(end, End::Cancelled) {
                        break;
                    }
                    // A connection that served a while resets the backoff.
                    if since.elapsed() >= Duration::from_secs(60) {
                        failures = 0;
                    }
                    end.to_string()
                }
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let now = self.api.clock().now();
            self.status.send_modify(|s| {
                s.state = StreamState::Down;
                s.connected_since = None;
                s.down_since.get_or_insert(now);
                s.last_error = Some(error.clone());
            });
            let delay = backoff(
                failures,
                self.settings.reconnect_min,
                self.settings.reconnect_max,
                rand::random::<f64>(),
            );
            tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "Stream mode connection lost");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = cancel.cancelled() => break,
            }
        }
        self.status.send_modify(|s| {
            s.state = StreamState::Off;
            s.connected_since = None;
        });
    }

    /// Open a connection and complete the WebSocket handshake, within `connect_timeout` each.
    async fn connect(&self) -> Result<Socket, String> {
        let ip = local_ip(self.api.base_url()).await;
        let ticket = tokio::time::timeout(self.settings.connect_timeout, self.api.open_stream(&ip))
            .await
            .map_err(|_| "the open call timed out".to_owned())?
            .map_err(|e| format!("the open call failed: {e}"))?;
        let url = connect_url(&ticket.endpoint, ticket.ticket.expose_secret())?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_FRAME))
            .max_frame_size(Some(MAX_FRAME));
        let handshake =
            tokio_tungstenite::connect_async_tls_with_config(url.as_str(), Some(config), true, None);
        let (ws, _) = tokio::time::timeout(self.settings.connect_timeout, handshake)
            .await
            .map_err(|_| "the WebSocket handshake timed out".to_owned())?
            // The error can quote the URL, which holds the ticket: name the endpoint instead.
            .map_err(|e| {
                let e = e.to_string().replace(ticket.ticket.expose_secret(), "[REDACTED]");
                format!("cannot connect to {}: {e}", ticket.endpoint)
            })?;
        Ok(ws)
    }
}

/// Serve one connection until it ends. `replace` is fired on DingTalk's `disconnect`.
async fn serve(
    mut ws: Socket,
    events: mpsc::Sender<Delivery>,
    settings: StreamSettings,
    status: Arc<watch::Sender<StreamStatus>>,
    clock: crate::clock::SharedClock,
    replace: oneshot::Sender<()>,
    cancel: CancellationToken,
) -> End {
    let (out_tx, mut out_rx) = mpsc::channel::<String>(256);
    let mut replace = Some(replace);
    let mut keepalive = tokio::time::interval_at(Instant::now() + settings.keepalive, settings.keepalive);
    let mut heard = true;
    let mut drain_until: Option<Instant> = None;
    let write_bound = settings.keepalive.max(Duration::from_secs(1));
    loop {
        let outgoing = tokio::select! {
            msg = ws.next() => {
                heard = true;
                match msg {
                    None => return End::Closed("closed by DingTalk".into()),
                    Some(Err(e)) => return End::Failed(e.to_string()),
                    Some(Ok(Message::Close(_))) => return End::Closed("closed by DingTalk".into()),
                    Some(Ok(Message::Text(text))) => match parse_frame(text.as_str()) {
                        Ok(Inbound::Ping { message_id, data }) => Message::text(pong_frame(&message_id, &data)),
                        Ok(Inbound::Disconnect { reason }) => {
                            tracing::info!(reason = %reason, "DingTalk asked for a new Stream connection");
                            if let Some(r) = replace.take() {
                                let _ = r.send(());
                            }
                            drain_until = Some(Instant::now() + settings.drain);
                            continue;
                        }
                        Ok(Inbound::Event(event)) => {
                            let now = clock.now();
                            status.send_modify(|s| s.last_event_at = Some(now));
                            match hand_over(event, &events, &out_tx, settings.ack_timeout) {
                                Some(later) => Message::text(later),
                                None => continue,
                            }
                        }
                        Ok(Inbound::Callback { message_id }) => {
                            Message::text(answer(404, &message_id, "not subscribed", "{}"))
                        }
                        Ok(Inbound::Other { kind, topic }) => {
                            tracing::debug!(kind = %kind, topic = %topic, "Stream frame ignored");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable Stream frame ignored");
                            continue;
                        }
                    },
                    // Pings are answered by the WebSocket layer; pongs only prove life.
                    Some(Ok(_)) => continue,
                }
            }
            Some(frame) = out_rx.recv() => Message::text(frame),
            _ = keepalive.tick() => {
                if !heard {
                    return End::HalfOpen;
                }
                heard = false;
                Message::Ping(Vec::new().into())
            }
            () = async { if let Some(t) = drain_until { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return End::Drained;
            }
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                return End::Cancelled;
            }
        };
        match tokio::time::timeout(write_bound, ws.send(outgoing)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return End::Failed(e.to_string()),
            Err(_) => return End::HalfOpen,
        }
    }
}

/// Give an event to the daemon and answer it once the daemon has; `Some(frame)`: answer `LATER`
/// now (the daemon's queue is full or gone).
fn hand_over(
    event: StreamEvent,
    events: &mpsc::Sender<Delivery>,
    out: &mpsc::Sender<String>,
    ack_timeout: Duration,
) -> Option<String> {
    let message_id = event.message_id.clone();
    let (reply, answered) = oneshot::channel();
    if events.try_send(Delivery { event, reply }).is_err() {
        return Some(ack_frame(&message_id, Ack::Later));
    }
    let out = out.clone();
    tokio::spawn(async move {
        let ack = match tokio::time::timeout(ack_timeout, answered).await {
            Ok(Ok(ack)) => ack,
            _ => Ack::Later,
        };
        // The connection may be gone: DingTalk then sends the event again.
        let _ = out.send(ack_frame(&message_id, ack)).await;
    });
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_is_read_with_string_or_number_headers() {
        let frame = r#"{"specVersion":"1.0","type":"EVENT","headers":{"topic":"*","messageId":"m-1","contentType":"application/json","time":1765000000000,"eventType":"meeting_status_change","eventId":"e-1","eventBornTime":"1765000000123","eventCorpId":"ding1","eventUnifiedAppId":"app"},"data":"{\"changeScene\":\"conference_created\"}"}"#;
        let Ok(Inbound::Event(e)) = parse_frame(frame) else {
            panic!("not an event: {:?}", parse_frame(frame));
        };
        assert_eq!(e.message_id, "m-1");
        assert_eq!(e.event_id, "e-1");
        assert_eq!(e.event_type, "meeting_status_change");
        assert_eq!(e.born_at.map(|t| t.timestamp_millis()), Some(1_765_000_000_123));
        assert_eq!(e.corp_id.as_deref(), Some("ding1"));
        assert_eq!(e.data, r#"{"changeScene":"conference_created"}"#);
    }

    #[test]
    fn system_frames_and_bad_frames() {
        let ping =
            r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"p-1"},"data":"{\"opaque\":\"x\"}"}"#;
        assert_eq!(
            parse_frame(ping),
            Ok(Inbound::Ping {
                message_id: "p-1".into(),
                data: r#"{"opaque":"x"}"#.into()
            })
        );
        let bye = r#"{"type":"SYSTEM","headers":{"topic":"disconnect","messageId":"d-1"},"data":"{\"reason\":\"upgrade\"}"}"#;
        assert_eq!(
            parse_frame(bye),
            Ok(Inbound::Disconnect {
                reason: "upgrade".into()
            })
        );
        assert!(parse_frame("{").is_err());
        assert!(parse_frame(r#"{"type":"EVENT","headers":{"messageId":"m"}}"#).is_err());
        assert!(parse_frame(r#"{"type":"EVENT","headers":{}}"#).is_err());
    }

    #[test]
    fn answers_are_the_protocols() {
        let ack: Value = serde_json::from_str(&ack_frame("m-1", Ack::Success)).unwrap_or_default();
        assert_eq!(ack["code"], 200);
        assert_eq!(ack["headers"]["messageId"], "m-1");
        assert_eq!(ack["headers"]["contentType"], "application/json");
        assert_eq!(ack["data"], r#"{"status":"SUCCESS"}"#);
        let later: Value = serde_json::from_str(&ack_frame("m-2", Ack::Later)).unwrap_or_default();
        assert_eq!(later["data"], r#"{"status":"LATER"}"#);
        let pong: Value = serde_json::from_str(&pong_frame("p-1", r#"{"opaque":"x"}"#)).unwrap_or_default();
        assert_eq!(pong["data"], r#"{"opaque":"x"}"#);
        assert_eq!(pong["headers"]["messageId"], "p-1");
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(1, min, max, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(1, min, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(3, min, max, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(10, min, max, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(u32::MAX, min, max, 1.0), max);
    }

    #[test]
    fn the_ticket_goes_only_over_tls_or_loopback() {
        let u = connect_url("wss://wss-open-connection.dingtalk.com:443/connect", "a b+c");
        assert_eq!(
            u.map(|u| u.to_string()),
            Ok("wss://wss-open-connection.dingtalk.com/connect?ticket=a+b%2Bc".into())
        );
        assert!(connect_url("ws://127.0.0.1:9/connect", "t").is_ok());
        assert!(connect_url("ws://[::1]:9/connect", "t").is_ok());
        let refused = connect_url("ws://stream.example.com/connect", "t");
        assert!(refused.is_err_and(|e| e.contains("'ws'")));
        assert!(connect_url("http://127.0.0.1/connect", "t").is_err());
    }

    #[test]
    fn a_ticket_is_never_in_debug() {
        let t = super::super::client::StreamTicket {
            endpoint: "wss://x/connect".into(),
            ticket: secrecy::SecretString::from("tkt-secret".to_owned()),
        };
        assert!(!format!("{t:?}").contains("tkt-secret"));
    }
}
