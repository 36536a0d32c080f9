//! The fake's HTTP/1.1 server: keep-alive connections, DingTalk's routes, the admin API, faults.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::scenario::{MeetingSpec, RecordingAction, Scenario};
use super::state::{Reply, State, new_request_id, unix_ms};
use super::stream::{EventSpec, Gateway};
use crate::domain::quota::Api;

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const MAX_LOG: usize = 2_000_000;

/// One request the fake received.
#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    /// Unix time in milliseconds when it arrived.
    pub at_ms: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// For meeting calls: the (decoded) conferenceId or scheduleConferenceId.
    pub id: Option<String>,
    pub union_id: Option<String>,
    pub mode: Option<String>,
    pub small_window_position: Option<String>,
    pub token: Option<String>,
    pub body: String,
    /// The status answered (0: no answer, a fault).
    pub status: u16,
    pub code: Option<String>,
}

impl LoggedRequest {
    pub fn is_start(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/cloudRecords/start")
    }
}

struct Shared {
    state: Mutex<State>,
    log: Mutex<Vec<LoggedRequest>>,
    stream: Arc<Gateway>,
    addr: SocketAddr,
}

/// A running fake DingTalk.
pub struct FakeDingTalk {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDingTalk {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

impl FakeDingTalk {
    /// Bind `listen` (port 0 for any free port) and serve until dropped or stopped.
    pub async fn start(listen: SocketAddr, scenario: Scenario) -> std::io::Result<Self> {
        Self::start_with_clock(listen, scenario, Arc::new(crate::clock::SystemClock)).await
    }

    /// As [`FakeDingTalk::start`], with meeting times and token lifetimes on `clock` (a test's
    /// manual clock: tokens expire and meetings go live as the test moves time).
    pub async fn start_with_clock(
        listen: SocketAddr,
        scenario: Scenario,
        clock: crate::clock::SharedClock,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(scenario, clock)),
            log: Mutex::new(Vec::new()),
            stream: Arc::new(Gateway::default()),
            addr,
        });
        let cancel = CancellationToken::new();
        tokio::spawn(shared.stream.clone().redeliver_loop(cancel.clone()));
        let task = tokio::spawn(accept_loop(listener, shared.clone(), cancel.clone()));
        Ok(Self {
            addr,
            shared,
            cancel,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How many requests the fake has logged (cheap: no copy of the log).
    pub fn request_count(&self) -> usize {
        self.shared.log.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// How many StartCloudRecord calls for a conference id starting with `prefix` the fake has
    /// logged (no copy of the log).
    pub fn starts_for(&self, prefix: &str) -> usize {
        self.shared
            .log
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|r| r.is_start() && r.id.as_deref().is_some_and(|id| id.starts_with(prefix)))
                    .count()
            })
            .unwrap_or(0)
    }

    pub fn start_requests(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(LoggedRequest::is_start)
            .collect()
    }

    /// The Stream mode gateway: push events, disconnect, look at the acknowledgements.
    pub fn stream(&self) -> &Gateway {
        &self.shared.stream
    }

    /// Push a `meeting_status_change` event to a connected Stream client; its eventId. A
    /// `conference_created` event for a meeting the fake does not know makes it: live, hosted by
    /// the event's creator.
    pub fn push_event(&self, spec: &EventSpec) -> String {
        push_event(&self.shared, spec)
    }

    /// A meeting created and live, its event lost (created while no Stream connection was
    /// there to receive it, and never sent again): only QueryOrgConferenceList shows it.
    pub fn create_meeting(&self, conference_id: &str, title: &str, creator: &str) {
        self.with_state(|s| s.meeting_created(conference_id, Some(creator), Some(title)));
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut st)
    }

    pub fn load(&self, scenario: Scenario) {
        self.with_state(|s| s.load(scenario));
    }

    pub fn add_meeting(&self, m: MeetingSpec) {
        self.with_state(|s| s.add_meeting(m, None));
    }

    pub fn expire_tokens(&self) {
        self.with_state(State::expire_tokens);
    }

    /// Whether the next StartCloudRecord takes effect but is never answered: the caller is left
    /// between its intent and the outcome (to crash it there).
    pub fn hang_next_start(&self, on: bool) {
        self.with_state(|s| s.hang_next_start = on);
    }

    /// StartCloudRecord calls left hanging by [`FakeDingTalk::hang_next_start`] so far.
    pub fn hung_starts(&self) -> u64 {
        self.with_state(|s| s.hung_starts)
    }

    pub fn token_outage(&self, d: Duration) {
        self.with_state(|s| s.token_outage(d));
    }

    /// Change a meeting's recording now (false: no such meeting).
    pub fn recording(&self, conference_id: &str, action: RecordingAction) -> bool {
        self.with_state(|s| s.recording(conference_id, action))
    }

    /// A meeting's recording as the fake's clock has it now: (a recording ran at some point,
    /// DingTalk's own auto-record setting started it); `None`: no such meeting.
    pub fn recorded(&self, conference_id: &str) -> Option<(bool, bool)> {
        self.with_state(|s| s.recorded(conference_id))
    }

    /// Every message the robots got (accepted or not), in order.
    pub fn robot_messages(&self) -> Vec<super::RobotMessage> {
        self.with_state(|s| s.robots.messages.clone())
    }

    /// QueryConferenceInfo calls seen.
    pub fn info_calls(&self) -> u64 {
        self.with_state(|s| s.info_calls)
    }

    /// QueryCloudRecordVideo calls seen.
    pub fn video_calls(&self) -> u64 {
        self.with_state(|s| s.video_calls)
    }

    pub fn token_calls(&self) -> u64 {
        self.with_state(|s| s.token_calls)
    }

    /// The calls counted against the monthly quota the way DingTalk counts them, per API, all
    /// months together.
    pub fn usage(&self) -> std::collections::BTreeMap<Api, u64> {
        self.with_state(|s| s.usage.clone())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = cancel.cancelled() => return,
        };
        match accepted {
            Ok((sock, _)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(connection(sock, shared.clone(), cancel.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    token: Option<String>,
    close: bool,
    /// `Sec-WebSocket-Key` of a WebSocket upgrade.
    ws_key: Option<String>,
    body: Vec<u8>,
}

/// Read one request; `Ok(None)` at a clean end of the connection.
async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Request>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = req.method.unwrap_or("GET").to_owned();
                let target = req.path.unwrap_or("/").to_owned();
                let mut len = 0usize;
                let mut token = None;
                let mut close = false;
                let mut ws_key = None;
                for h in req.headers.iter() {
                    let v = String::from_utf8_lossy(h.value).to_string();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    } else if h.name.eq_ignore_ascii_case("x-acs-dingtalk-access-token") {
                        token = Some(v);
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        close = v.eq_ignore_ascii_case("close");
                    } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
                        ws_key = Some(v.trim().to_owned());
                    }
                }
                if len > MAX_BODY {
                    return Err(std::io::Error::other("body too large"));
                }
                while buf.len() < head_len + len {
                    let mut tmp = [0u8; 8192];
                    let n = sock.read(&mut tmp).await?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf.extend_from_slice(&tmp[..n]);
                }
                let body = buf[head_len..head_len + len].to_vec();
                buf.drain(..head_len + len);
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), q.to_owned()),
                    None => (target, String::new()),
                };
                return Ok(Some(Request {
                    method,
                    path,
                    query,
                    token,
                    close,
                    ws_key,
                    body,
                }));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(std::io::Error::other("head too large"));
                }
                let mut tmp = [0u8; 8192];
                let n = sock.read(&mut tmp).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
    }
}

async fn connection(mut sock: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = Vec::new();
    loop {
        let req = tokio::select! {
            r = read_request(&mut sock, &mut buf) => r,
            () = cancel.cancelled() => return,
        };
        let Ok(Some(req)) = req else { return };
        if req.method == "GET" && req.path == "/connect" {
            return stream_connect(sock, req, &shared, cancel).await;
        }
        let close = req.close;
        let request_id = new_request_id();
        let (reply, delay, mut entry) = route(&shared, &req, &request_id);
        entry.status = match &reply {
            Reply::Json { status, .. } | Reply::Raw { status, .. } | Reply::Trickle { status, .. } => *status,
            _ => 0,
        };
        if let Reply::Json { body, .. } = &reply {
            entry.code = body.get("code").and_then(Value::as_str).map(str::to_owned);
        }
        // Logged when it arrives, before any scripted delay.
        if let Ok(mut log) = shared.log.lock()
            && log.len() < MAX_LOG
        {
            log.push(entry);
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let keep = match send(&mut sock, reply, &request_id, &cancel).await {
            Ok(keep) => keep,
            Err(_) => return,
        };
        if close || !keep {
            let _ = sock.shutdown().await;
            return;
        }
    }
}

fn push_event(shared: &Shared, spec: &EventSpec) -> String {
    let now_ms = {
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if spec.data.is_none()
            && spec
                .change_scene
                .as_deref()
                .is_none_or(|s| s == "conference_created")
        {
            st.meeting_created(
                &spec.conference_id,
                spec.creator_id.as_deref(),
                spec.title.as_deref(),
            );
        }
        st.now().timestamp_millis()
    };
    shared.stream.push(spec, now_ms)
}

/// `GET /connect?ticket=`: a WebSocket upgrade with a valid ticket becomes a Stream connection.
async fn stream_connect(mut sock: TcpStream, req: Request, shared: &Shared, cancel: CancellationToken) {
    let ticket = query_param(&req.query, "ticket").unwrap_or_default();
    let refusal = match &req.ws_key {
        None => Some((400, "not a WebSocket upgrade")),
        Some(_) if !shared.stream.take_ticket(&ticket) => Some((403, "invalid or used ticket")),
        Some(_) => None,
    };
    if let Ok(mut log) = shared.log.lock()
        && log.len() < MAX_LOG
    {
        // The ticket is a credential: not logged.
        log.push(LoggedRequest {
            at_ms: unix_ms(),
            method: req.method.clone(),
            path: req.path.clone(),
            query: String::new(),
            id: None,
            union_id: None,
            mode: None,
            small_window_position: None,
            token: None,
            body: String::new(),
            status: refusal.map_or(101, |(s, _)| s),
            code: None,
        });
    }
    match (refusal, req.ws_key) {
        (None, Some(key)) => shared.stream.serve(sock, &key, cancel).await,
        (refused, _) => {
            let (status, why) = refused.unwrap_or((400, "not a WebSocket upgrade"));
            let body = json!({"code": "invalidTicket", "message": why}).to_string();
            let mut out = head(
                status,
                "application/json;charset=utf-8",
                body.len(),
                &new_request_id(),
            )
            .into_bytes();
            out.extend_from_slice(body.as_bytes());
            let _ = sock.write_all(&out).await;
            let _ = sock.shutdown().await;
        }
    }
}

fn head(status: u16, content_type: &str, len: usize, request_id: &str) -> String {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    };
    let trace: u128 = rand::random();
    format!(
        "HTTP/1.1 {status} {reason}\r\nServer: DingTalk/1.0.0\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: keep-alive\r\nx-acs-request-id: {request_id}\r\nx-acs-trace-id: {trace:032x}\r\n\r\n"
    )
}

/// Write the reply; `Ok(false)` when the connection must close afterwards.
async fn send(
    sock: &mut TcpStream,
    reply: Reply,
    request_id: &str,
    cancel: &CancellationToken,
) -> std::io::Result<bool> {
    match reply {
        Reply::Json { status, body } => {
            let b = body.to_string();
            let mut out = head(status, "application/json;charset=utf-8", b.len(), request_id).into_bytes();
            out.extend_from_slice(b.as_bytes());
            sock.write_all(&out).await?;
            Ok(true)
        }
        Reply::Raw {
            status,
            content_type,
            body,
        } => {
            let mut out = head(status, content_type, body.len(), request_id).into_bytes();
            out.extend_from_slice(&body);
            sock.write_all(&out).await?;
            Ok(true)
        }
        Reply::Hang => {
            // Never answer; wait for the client to give up (or the fake to stop).
            let mut tmp = [0u8; 1024];
            loop {
                tokio::select! {
                    r = sock.read(&mut tmp) => if matches!(r, Ok(0) | Err(_)) { return Ok(false) },
                    () = cancel.cancelled() => return Ok(false),
                }
            }
        }
        Reply::Drop => Ok(false),
        Reply::Reset => {
            // SO_LINGER 0: close() sends a RST. A zero linger does not block.
            #[allow(deprecated)]
            let _ = sock.set_linger(Some(Duration::ZERO));
            Ok(false)
        }
        Reply::Trickle { status, body } => {
            let b = body.to_string();
            let mut out = head(status, "application/json;charset=utf-8", b.len(), request_id).into_bytes();
            out.extend_from_slice(b.as_bytes());
            for byte in out {
                sock.write_all(&[byte]).await?;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => return Ok(false),
                }
            }
            Ok(true)
        }
        Reply::Partial => {
            let mut out = head(200, "application/json;charset=utf-8", 100, request_id).into_bytes();
            out.extend_from_slice(b"{\"code\":\"2");
            sock.write_all(&out).await?;
            Ok(false)
        }
    }
}

/// The body as logged: secrets in token calls are replaced.
fn redacted_body(json: &Value, raw: &[u8]) -> String {
    match json {
        Value::Object(m)
            if ["appSecret", "suiteSecret", "clientSecret"]
                .iter()
                .any(|k| m.contains_key(*k)) =>
        {
            let mut m = m.clone();
            for k in ["appSecret", "suiteSecret", "suiteTicket", "clientSecret"] {
                if m.contains_key(k) {
                    m.insert(k.into(), Value::String("[REDACTED]".into()));
                }
            }
            Value::Object(m).to_string()
        }
        _ => String::from_utf8_lossy(raw).chars().take(2000).collect(),
    }
}

/// A query parameter's decoded value.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn decode(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

fn route(shared: &Shared, req: &Request, request_id: &str) -> (Reply, Option<Duration>, LoggedRequest) {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let field = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut entry = LoggedRequest {
        at_ms: unix_ms(),
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        id: None,
        union_id: field("unionId"),
        mode: field("mode"),
        small_window_position: field("smallWindowPosition"),
        token: req.token.clone(),
        body: redacted_body(&body, &req.body),
        status: 0,
        code: None,
    };
    if let Some(admin) = req.path.strip_prefix("/_fake/") {
        return (self::admin(shared, admin, req), None, entry);
    }
    let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let delay = st.global_delay();
    let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let api = api_of(req.method.as_str(), &segs);
    if api.is_some()
        && let Some(refused) = st.over_quota(request_id)
    {
        return (refused, delay, entry);
    }
    // A start or look-up scripted with its own delay.
    let mut own_delay = None;
    let reply = match (req.method.as_str(), segs.as_slice()) {
        ("POST", ["robot", "send"]) => {
            let query: std::collections::HashMap<String, String> = req
                .query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), decode(v)))
                .collect();
            // The log keeps neither the robot's token nor the signature.
            entry.query = String::new();
            let now = st.now();
            let (body, delay) = st.robots.send(now, &query, &body);
            return (Reply::Json { status: 200, body }, delay, entry);
        }
        ("POST", ["v1.0", "oauth2", "accessToken"]) => st.token(false, &body, request_id),
        ("POST", ["v1.0", "oauth2", "corpAccessToken"]) => st.token(true, &body, request_id),
        ("POST", ["v1.0", "gateway", "connections", "open"]) => {
            let s = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default();
            if !st.credentials_ok(s("clientId"), s("clientSecret")) {
                super::state::error("invalidClientIdOrSecret", Some(400), request_id)
            } else {
                let endpoint = format!("ws://{}/connect", shared.addr);
                match shared.stream.open(&body, endpoint) {
                    Some(answer) => Reply::Json {
                        status: 200,
                        body: answer,
                    },
                    None => super::state::error("systemError", Some(500), request_id),
                }
            }
        }
        ("PUT", ["v1.0", "conference", "scheduleConferences", "settings"]) => {
            match st.check_token(req.token.as_deref(), request_id) {
                Some(refused) => refused,
                None => {
                    entry.id = body
                        .get("scheduleConferenceId")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let (r, d) = st.update_schedule_settings(&body, request_id);
                    own_delay = d;
                    r
                }
            }
        }
        ("GET", ["v1.0", "conference", "scheduleConferences", "settings"]) => {
            match st.check_token(req.token.as_deref(), request_id) {
                Some(refused) => refused,
                None => st.schedule_settings(
                    &query_param(&req.query, "scheduleConferenceId").unwrap_or_default(),
                    request_id,
                ),
            }
        }
        ("GET", ["v1.0", "conference", "orgConferences"]) => {
            match st.check_token(req.token.as_deref(), request_id) {
                Some(refused) => refused,
                None => st.org_conferences(
                    query_param(&req.query, "maxResults").as_deref(),
                    query_param(&req.query, "nextToken").as_deref(),
                    request_id,
                ),
            }
        }
        (m, ["v1.0", "conference", "videoConferences", rest @ ..]) => {
            // The conference called is logged whether or not the token is accepted.
            entry.id = match rest {
                ["scheduleConferences", id] | [id, ..] => Some(decode(id)),
                [] => None,
            };
            if let Some(refused) = st.check_token(req.token.as_deref(), request_id) {
                refused
            } else {
                match (m, rest) {
                    ("POST", [id, "cloudRecords", "start"]) => {
                        let id = decode(id);
                        entry.id = Some(id.clone());
                        let (r, d) = st.start(&id, &body, request_id);
                        own_delay = d;
                        r
                    }
                    ("POST", [id, "cloudRecords", "stop"]) => {
                        let id = decode(id);
                        entry.id = Some(id.clone());
                        st.stop(&id, request_id)
                    }
                    ("GET", ["scheduleConferences", id]) => {
                        let id = decode(id);
                        entry.id = Some(id.clone());
                        st.schedule(&id, request_id)
                    }
                    ("GET", [id]) => {
                        let id = decode(id);
                        entry.id = Some(id.clone());
                        let (r, d) = st.info(&id, request_id);
                        own_delay = d;
                        r
                    }
                    ("GET", [id, "cloudRecords", "getVideos"]) => {
                        let id = decode(id);
                        entry.id = Some(id.clone());
                        let union_id = query_param(&req.query, "unionId").unwrap_or_default();
                        st.videos(&id, &union_id, request_id)
                    }
                    _ => not_found(request_id),
                }
            }
        }
        _ => not_found(request_id),
    };
    if let Some(api) = api {
        st.count_call(api, &reply);
    }
    (reply, own_delay.or(delay), entry)
}

/// The DingTalk API a request calls (`None`: the robot, or no API).
fn api_of(method: &str, segs: &[&str]) -> Option<Api> {
    Some(match (method, segs) {
        ("POST", ["v1.0", "oauth2", "accessToken" | "corpAccessToken"]) => Api::Token,
        (
            "POST",
            [
                "v1.0",
                "conference",
                "videoConferences",
                _,
                "cloudRecords",
                "start",
            ],
        ) => Api::StartCloudRecord,
        (
            "POST",
            [
                "v1.0",
                "conference",
                "videoConferences",
                _,
                "cloudRecords",
                "stop",
            ],
        ) => Api::StopCloudRecord,
        ("GET", ["v1.0", "conference", "videoConferences", "scheduleConferences", _]) => {
            Api::ScheduleConference
        }
        (
            "GET",
            [
                "v1.0",
                "conference",
                "videoConferences",
                _,
                "cloudRecords",
                "getVideos",
            ],
        ) => Api::CloudRecordVideos,
        ("GET", ["v1.0", "conference", "videoConferences", _]) => Api::ConferenceInfo,
        ("GET", ["v1.0", "conference", "orgConferences"]) => Api::OrgConferences,
        ("PUT" | "GET", ["v1.0", "conference", "scheduleConferences", "settings"]) => Api::ScheduleSettings,
        _ => return None,
    })
}

fn not_found(request_id: &str) -> Reply {
    Reply::Json {
        status: 404,
        body: json!({"code": "InvalidAction.NotFound", "requestid": request_id, "message": "Specified api is not found, please check your url and method."}),
    }
}

fn admin(shared: &Shared, what: &str, req: &Request) -> Reply {
    let ok = |body: Value| Reply::Json { status: 200, body };
    let bad = |msg: String| Reply::Json {
        status: 400,
        body: json!({ "error": msg }),
    };
    let text = String::from_utf8_lossy(&req.body).to_string();
    match (req.method.as_str(), what) {
        ("GET", "requests") => {
            let log = shared.log.lock().map(|l| l.clone()).unwrap_or_default();
            ok(serde_json::to_value(log).unwrap_or(Value::Null))
        }
        ("GET", "usage") => {
            // The calls counted against the monthly quota, per API (as DingTalk counts them).
            let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            let usage: serde_json::Map<String, Value> = st
                .usage
                .iter()
                .map(|(api, n)| (api.as_str().to_owned(), json!(n)))
                .collect();
            ok(Value::Object(usage))
        }
        ("GET", "robot/messages") => {
            let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            ok(serde_json::to_value(&st.robots.messages).unwrap_or(Value::Null))
        }
        ("GET", "starts") => {
            // StartCloudRecord arrivals only, compact: what a benchmark measures lateness by.
            let starts: Vec<Value> = shared
                .log
                .lock()
                .map(|l| {
                    l.iter()
                        .filter(|r| r.is_start())
                        .map(|r| json!({"id": r.id, "at_ms": r.at_ms, "code": r.code}))
                        .collect()
                })
                .unwrap_or_default();
            ok(Value::Array(starts))
        }
        ("DELETE", "requests") => {
            if let Ok(mut l) = shared.log.lock() {
                l.clear();
            }
            ok(json!({"cleared": true}))
        }
        ("POST", "scenario") => match Scenario::from_yaml(&text) {
            Ok(s) => {
                shared.state.lock().unwrap_or_else(|e| e.into_inner()).load(s);
                ok(json!({"loaded": true}))
            }
            Err(e) => bad(e),
        },
        ("POST", "meetings") => match serde_saphyr::from_str::<MeetingSpec>(&text) {
            Ok(m) => {
                shared
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add_meeting(m, None);
                ok(json!({"added": true}))
            }
            Err(e) => bad(e.to_string()),
        },
        ("POST", "expire-tokens") => {
            shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .expire_tokens();
            ok(json!({"tokens_expired": true}))
        }
        ("POST", "token-outage") => {
            let secs: f64 = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("seconds="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(30.0);
            shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .token_outage(Duration::from_secs_f64(secs.max(0.0)));
            ok(json!({"token_outage_seconds": secs}))
        }
        ("POST", "events") => match serde_json::from_slice::<EventSpec>(&req.body) {
            Ok(spec) => {
                let event_id = push_event(shared, &spec);
                ok(json!({"event_id": event_id}))
            }
            Err(e) => bad(format!("an event: {e}")),
        },
        ("GET", "stream") => ok(shared.stream.summary()),
        ("POST", "stream/ping") => {
            shared.stream.ping();
            ok(json!({"pinged": shared.stream.connections()}))
        }
        ("POST", "stream/disconnect") => {
            let ms = query_param(&req.query, "after_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            shared.stream.disconnect(Duration::from_millis(ms));
            ok(json!({"disconnecting": shared.stream.connections(), "close_after_ms": ms}))
        }
        ("POST", "stream/blackhole") => {
            let on = query_param(&req.query, "on").is_none_or(|v| v != "false");
            shared.stream.set_blackhole(on);
            ok(json!({"blackhole": on}))
        }
        ("POST", "stream/refuse-opens") => {
            let n = query_param(&req.query, "count")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            shared.stream.refuse_opens(n);
            ok(json!({"refuse_opens": n}))
        }
        ("POST", "stream/redeliver-after") => {
            let ms = query_param(&req.query, "ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60_000);
            shared.stream.set_redeliver_after(Duration::from_millis(ms));
            ok(json!({"redeliver_after_ms": ms}))
        }
        ("GET", "stats") => {
            let st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            ok(
                json!({"token_calls": st.token_calls, "start_calls": st.start_calls,
                "info_calls": st.info_calls, "video_calls": st.video_calls}),
            )
        }
        ("POST", "recording") => {
            let conf = query_param(&req.query, "conference_id").unwrap_or_default();
            let action = query_param(&req.query, "action").unwrap_or_default();
            match RecordingAction::parse(&action) {
                Some(a)
                    if shared
                        .state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .recording(&conf, a) =>
                {
                    ok(json!({"conference_id": conf, "action": action}))
                }
                Some(_) => bad(format!("no meeting '{conf}'")),
                None => bad(format!(
                    "unknown action '{action}': pause, resume, stop, end, silent_once, silent_always, no_video"
                )),
            }
        }
        _ => Reply::Json {
            status: 404,
            body: json!({"error": "unknown admin call", "calls": ["GET requests", "DELETE requests", "GET usage", "POST scenario", "POST meetings", "POST expire-tokens", "POST token-outage?seconds=N", "GET stats", "POST recording?conference_id=ID&action=pause|resume|stop|end|silent_once|silent_always|no_video", "POST events", "GET stream", "POST stream/ping", "POST stream/disconnect?after_ms=N", "POST stream/blackhole?on=true|false", "POST stream/refuse-opens?count=N", "POST stream/redeliver-after?ms=N"]}),
        },
    }
}
