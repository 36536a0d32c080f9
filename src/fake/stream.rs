//! The fake's Stream mode gateway (docs/dingtalk.md "Stream mode"): the open call checks the
//! app's key and secret and hands out a ticket (one connection, 90 s); `GET /connect?ticket=`
//! upgrades to a WebSocket; events are pushed to one open connection chosen at random and sent
//! again after `redeliver_after` until acknowledged; `disconnect` says so and closes 10 s later; a
//! black hole stops reading and writing (a half-open socket). Every acknowledgement is recorded,
//! in the protocol's form (`{"status": "SUCCESS" | "LATER"}`) or the Python SDK's (the event's data
//! echoed), and every answer to a ping.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

use super::state::unix_ms;

const TICKET_LIFE: Duration = Duration::from_secs(90);
/// Events kept for redelivery at most (the oldest is forgotten: DingTalk does not keep them long).
const MAX_PENDING: usize = 100_000;
const MAX_LOG: usize = 1_000_000;

/// An event to push (`POST /_fake/events`): a `meeting_status_change` unless told otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    /// The same id twice is a duplicate delivery of one event.
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub event_type: Option<String>,
    /// `conference_created` (default) or `conference_closed`.
    #[serde(default)]
    pub change_scene: Option<String>,
    #[serde(default)]
    pub conference_id: String,
    #[serde(default)]
    pub schedule_conference_id: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    /// The creator's unionId.
    #[serde(default)]
    pub creator_id: Option<String>,
    #[serde(default)]
    pub start_time_ms: Option<i64>,
    /// The whole `data` document instead of one built from the fields above.
    #[serde(default)]
    pub data: Option<Value>,
    /// To every open connection at once (DingTalk gives an event to one; the worst case of
    /// several daemons each receiving it).
    #[serde(default)]
    pub to_all: bool,
}

impl EventSpec {
    /// A `conference_created` event for a meeting.
    pub fn created(conference_id: &str) -> Self {
        Self {
            conference_id: conference_id.to_owned(),
            ..Self::default()
        }
    }

    fn data(&self, now_ms: i64) -> Value {
        if let Some(d) = &self.data {
            return d.clone();
        }
        let scene = self.change_scene.as_deref().unwrap_or("conference_created");
        let mut conf = json!({
            "conferenceId": self.conference_id,
            "bizScene": "",
            "bizType": "0",
            "status": if scene == "conference_closed" { 1 } else { 2 },
            "startTime": self.start_time_ms.unwrap_or(now_ms),
            "confDuration": 0,
            "activeNum": 1,
            "attendNum": 1,
            "invitedNum": 1,
        });
        let fields = [
            ("title", &self.title),
            ("creatorId", &self.creator_id),
            ("scheduleConferenceId", &self.schedule_conference_id),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                conf[k] = json!(v);
            }
        }
        json!({"changeScene": scene, "statusSeqNum": 1, "openConfModel": conf})
    }
}

/// An answer a client sent.
#[derive(Debug, Clone, Serialize)]
pub struct StreamAck {
    pub at_ms: i64,
    pub connection: u64,
    pub message_id: String,
    /// The event acknowledged (none for a ping's answer).
    pub event_id: Option<String>,
    pub code: i64,
    /// `SUCCESS` / `LATER` (the protocol's form), `ECHO` (the Python SDK's: the event's data
    /// echoed, taken as a success), `PONG` (a ping's answer echoing its data), or `INVALID`.
    pub status: String,
    /// The answer as sent.
    pub raw: String,
}

/// A frame the fake sent.
#[derive(Debug, Clone, Serialize)]
pub struct StreamDelivery {
    pub at_ms: i64,
    pub connection: u64,
    pub message_id: String,
    pub event_id: Option<String>,
    pub topic: String,
}

enum Out {
    Frame(String),
    /// `disconnect`, then close after the delay.
    Disconnect(Duration),
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
}

struct Pending {
    data: String,
    event_type: String,
    born_ms: i64,
    last_sent: Option<Instant>,
}

/// The gateway's state (inside the fake's shared state).
pub struct Gateway {
    inner: Mutex<Inner>,
}

struct Inner {
    tickets: HashMap<String, Instant>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    pending: BTreeMap<String, Pending>,
    /// messageId → eventId of every event frame sent.
    sent: HashMap<String, String>,
    pings: HashMap<String, String>,
    acks: Vec<StreamAck>,
    deliveries: Vec<StreamDelivery>,
    opens: u64,
    refuse_opens: u32,
    redeliver_after: Duration,
    blackhole: bool,
    /// The body of every open call, the secret replaced.
    open_bodies: Vec<Value>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                tickets: HashMap::new(),
                conns: BTreeMap::new(),
                next_conn: 1,
                pending: BTreeMap::new(),
                sent: HashMap::new(),
                pings: HashMap::new(),
                acks: Vec::new(),
                deliveries: Vec::new(),
                opens: 0,
                refuse_opens: 0,
                redeliver_after: Duration::from_secs(60),
                blackhole: false,
                open_bodies: Vec::new(),
            }),
        }
    }
}

fn new_id(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{n:016x}")
}

impl Gateway {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `POST /v1.0/gateway/connections/open` once the credentials are checked: a ticket, or
    /// `None` when the fake is told to refuse this open.
    pub fn open(&self, body: &Value, endpoint: String) -> Option<Value> {
        let mut g = self.lock();
        g.opens += 1;
        let mut logged = body.clone();
        if logged.get("clientSecret").is_some() {
            logged["clientSecret"] = json!("[REDACTED]");
        }
        if g.open_bodies.len() < 1000 {
            g.open_bodies.push(logged);
        }
        if g.refuse_opens > 0 {
            g.refuse_opens -= 1;
            return None;
        }
        let now = Instant::now();
        g.tickets.retain(|_, at| now.duration_since(*at) < TICKET_LIFE);
        let ticket = new_id("tkt-");
        g.tickets.insert(ticket.clone(), now);
        Some(json!({"endpoint": endpoint, "ticket": ticket}))
    }

    /// Take a ticket (each opens one connection, within 90 s).
    pub fn take_ticket(&self, ticket: &str) -> bool {
        let mut g = self.lock();
        g.tickets
            .remove(ticket)
            .is_some_and(|at| at.elapsed() < TICKET_LIFE)
    }

    /// Push an event now, to one connection chosen at random (kept and sent again until
    /// acknowledged). Returns its eventId.
    /// Push an event born at `now_ms` (the fake's clock: a test's injected one, or the wall's).
    pub fn push(&self, spec: &EventSpec, now_ms: i64) -> String {
        let event_id = spec.event_id.clone().unwrap_or_else(|| new_id("evt-"));
        let mut g = self.lock();
        if g.pending.len() >= MAX_PENDING
            && let Some(oldest) = g.pending.keys().next().cloned()
        {
            g.pending.remove(&oldest);
        }
        g.pending.insert(
            event_id.clone(),
            Pending {
                data: spec.data(now_ms).to_string(),
                event_type: spec
                    .event_type
                    .clone()
                    .unwrap_or_else(|| "meeting_status_change".into()),
                born_ms: now_ms,
                last_sent: None,
            },
        );
        if spec.to_all {
            let conns: Vec<u64> = g.conns.keys().copied().collect();
            for conn in conns {
                g.deliver(conn, &event_id);
            }
        } else {
            g.send_event(&event_id);
        }
        event_id
    }

    /// Send again what is due: never sent (no connection then), or unacknowledged for
    /// `redeliver_after`.
    fn redeliver(&self) {
        let mut g = self.lock();
        if g.conns.is_empty() || g.blackhole {
            return;
        }
        let after = g.redeliver_after;
        let due: Vec<String> = g
            .pending
            .iter()
            .filter(|(_, p)| p.last_sent.is_none_or(|t| t.elapsed() >= after))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            g.send_event(&id);
        }
    }

    /// A SYSTEM ping to every connection now.
    pub fn ping(&self) {
        let mut g = self.lock();
        let ids: Vec<u64> = g.conns.keys().copied().collect();
        for conn in ids {
            let message_id = new_id("ping-");
            let opaque = new_id("");
            let data = json!({"opaque": opaque}).to_string();
            let frame = frame("SYSTEM", "ping", &message_id, &data, &[]);
            g.pings.insert(message_id.clone(), data);
            g.send_to(conn, &message_id, None, "ping", frame);
        }
    }

    /// `disconnect` to every connection, each closed `after` later.
    pub fn disconnect(&self, after: Duration) {
        let g = self.lock();
        for c in g.conns.values() {
            let _ = c.tx.send(Out::Disconnect(after));
        }
    }

    pub fn set_blackhole(&self, on: bool) {
        self.lock().blackhole = on;
    }

    pub fn refuse_opens(&self, n: u32) {
        self.lock().refuse_opens = n;
    }

    pub fn set_redeliver_after(&self, d: Duration) {
        self.lock().redeliver_after = d;
    }

    pub fn acks(&self) -> Vec<StreamAck> {
        self.lock().acks.clone()
    }

    pub fn deliveries(&self) -> Vec<StreamDelivery> {
        self.lock().deliveries.clone()
    }

    pub fn open_bodies(&self) -> Vec<Value> {
        self.lock().open_bodies.clone()
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn opens(&self) -> u64 {
        self.lock().opens
    }

    /// Events not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn summary(&self) -> Value {
        let g = self.lock();
        json!({"connections": g.conns.len(), "opens": g.opens, "unacked": g.pending.len(),
               "acks": g.acks, "deliveries": g.deliveries.len(), "open_bodies": g.open_bodies})
    }

    /// Keep redelivering until `cancel`.
    pub async fn redeliver_loop(self: std::sync::Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => self.redeliver(),
                () = cancel.cancelled() => return,
            }
        }
    }

    /// Serve an upgraded connection (`key`: the client's Sec-WebSocket-Key) until it closes.
    pub async fn serve(&self, mut sock: TcpStream, key: &str, cancel: CancellationToken) {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20));
        let mut ws =
            tokio_tungstenite::WebSocketStream::from_raw_socket(sock, Role::Server, Some(config)).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = {
            let mut g = self.lock();
            let id = g.next_conn;
            g.next_conn += 1;
            g.conns.insert(id, Conn { tx });
            id
        };
        let mut close_at: Option<tokio::time::Instant> = None;
        loop {
            if self.lock().blackhole {
                // Neither read nor write: the client sees a socket that says nothing.
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = cancel.cancelled() => break,
                }
            }
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => self.record_answer(id, t.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                out = rx.recv() => match out {
                    Some(Out::Frame(f)) => {
                        if ws.send(Message::text(f)).await.is_err() {
                            break;
                        }
                    }
                    Some(Out::Disconnect(after)) => {
                        let data = json!({"reason": "the gateway restarts"}).to_string();
                        let f = frame("SYSTEM", "disconnect", &new_id("sys-"), &data, &[]);
                        if ws.send(Message::text(f)).await.is_err() {
                            break;
                        }
                        close_at = Some(tokio::time::Instant::now() + after);
                    }
                    None => break,
                },
                () = async { if let Some(t) = close_at { tokio::time::sleep_until(t).await } else { std::future::pending().await } } => {
                    let _ = ws.close(None).await;
                    break;
                }
                () = cancel.cancelled() => break,
            }
        }
        self.lock().conns.remove(&id);
    }

    fn record_answer(&self, conn: u64, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let message_id = v["headers"]["messageId"].as_str().unwrap_or_default().to_owned();
        let code = v["code"].as_i64().unwrap_or(0);
        let data = v["data"].as_str().unwrap_or_default();
        let mut g = self.lock();
        let event_id = g.sent.get(&message_id).cloned();
        // Echoes are compared as JSON: the Python SDK parses the data and writes it again.
        let answered: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        let same = |sent: &str| serde_json::from_str::<Value>(sent).is_ok_and(|v| v == answered);
        let status = if let Some(ping) = g.pings.remove(&message_id) {
            if same(&ping) { "PONG" } else { "INVALID" }.to_owned()
        } else if let Some(event_id) = &event_id {
            let protocol = answered.get("status").and_then(Value::as_str).map(str::to_owned);
            let echoed = g.pending.get(event_id).is_some_and(|p| same(&p.data));
            let status = match protocol {
                Some(s) if s == "SUCCESS" || s == "LATER" => s,
                _ if echoed => "ECHO".to_owned(),
                _ => "INVALID".to_owned(),
            };
            if code == 200 && (status == "SUCCESS" || status == "ECHO") {
                g.pending.remove(event_id);
            }
            status
        } else {
            "INVALID".to_owned()
        };
        if g.acks.len() < MAX_LOG {
            g.acks.push(StreamAck {
                at_ms: unix_ms(),
                connection: conn,
                message_id,
                event_id,
                code,
                status,
                raw: text.chars().take(4096).collect(),
            });
        }
    }
}

impl Inner {
    /// Send a pending event to a connection chosen at random (none open: it waits).
    fn send_event(&mut self, event_id: &str) {
        if self.conns.is_empty() || self.blackhole {
            return;
        }
        let pick = rand::rng().random_range(0..self.conns.len());
        let Some(conn) = self.conns.keys().nth(pick).copied() else {
            return;
        };
        self.deliver(conn, event_id);
    }

    /// Send a pending event to one connection, as a new message.
    fn deliver(&mut self, conn: u64, event_id: &str) {
        let Some(p) = self.pending.get(event_id) else {
            return;
        };
        let message_id = new_id("msg-");
        let born = p.born_ms.to_string();
        let headers = [
            ("eventType", p.event_type.as_str()),
            ("eventId", event_id),
            ("eventBornTime", born.as_str()),
            ("eventCorpId", "dingfakecorp"),
            ("eventUnifiedAppId", "fake-app"),
        ];
        let f = frame("EVENT", "*", &message_id, &p.data, &headers);
        if let Some(p) = self.pending.get_mut(event_id) {
            p.last_sent = Some(Instant::now());
        }
        if self.sent.len() < MAX_LOG {
            self.sent.insert(message_id.clone(), event_id.to_owned());
        }
        self.send_to(conn, &message_id, Some(event_id.to_owned()), "*", f);
    }

    fn send_to(&mut self, conn: u64, message_id: &str, event_id: Option<String>, topic: &str, frame: String) {
        if let Some(c) = self.conns.get(&conn) {
            let _ = c.tx.send(Out::Frame(frame));
        }
        if self.deliveries.len() < MAX_LOG {
            self.deliveries.push(StreamDelivery {
                at_ms: unix_ms(),
                connection: conn,
                message_id: message_id.to_owned(),
                event_id,
                topic: topic.to_owned(),
            });
        }
    }
}

/// A frame as DingTalk sends it (header values as strings, `data` a JSON document in a string).
fn frame(kind: &str, topic: &str, message_id: &str, data: &str, extra: &[(&str, &str)]) -> String {
    let mut headers = json!({
        "topic": topic,
        "messageId": message_id,
        "contentType": "application/json",
        "time": unix_ms().to_string(),
    });
    for (k, v) in extra {
        headers[*k] = json!(v);
    }
    json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": data}).to_string()
}
