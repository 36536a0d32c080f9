//! Stream mode: dingrec's client (src/dingtalk/stream.rs) against the fake's gateway
//! (src/fake/stream.rs): the open call, the ticket, pings, acknowledgements only once the daemon
//! answers, redelivery, `disconnect`, half-open sockets, refused opens.

use std::sync::Arc;
use std::time::Duration;

use dingrec::dingtalk::stream::{Ack, Delivery, StreamClient, StreamSettings, StreamState, StreamStatus};
use dingrec::fake::{EventSpec, FakeDingTalk, Scenario};
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::{client, dingtalk_settings, internal_credentials, wait_for};

const KEY: &str = "dingstreamkey";
const SECRET: &str = "stream-secret-value";
const LIMIT: Duration = Duration::from_secs(20);

/// The fields the official Stream SDKs send to open a connection, and their ping answer's
/// (tests/fixtures/stream_protocol.json; tests/sdk holds the Python SDK to the same file).
fn protocol() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stream_protocol.json"
    ))
    .expect("tests/fixtures/stream_protocol.json");
    serde_json::from_str(&text).expect("JSON")
}

struct Running {
    fake: FakeDingTalk,
    events: mpsc::Receiver<Delivery>,
    status: watch::Receiver<StreamStatus>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the Stream client stops when told")
            .expect("task");
    }

    async fn next(&mut self) -> Delivery {
        tokio::time::timeout(LIMIT, self.events.recv())
            .await
            .expect("an event within the limit")
            .expect("the client is running")
    }

    fn state(&self) -> StreamState {
        self.status.borrow().state
    }
}

async fn running(settings: StreamSettings) -> Running {
    let fake = FakeDingTalk::start(
        "127.0.0.1:0".parse().expect("addr"),
        Scenario {
            app_key: Some(KEY.into()),
            app_secret: Some(SECRET.into()),
            ..Scenario::default()
        },
    )
    .await
    .expect("fake");
    let api = Arc::new(client(
        &dingtalk_settings(&fake.base_url()),
        Some(internal_credentials(KEY, SECRET)),
    ));
    let stream = StreamClient::new(api, settings);
    let status = stream.status();
    let (tx, events) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(stream.run(tx, cancel.clone()));
    Running {
        fake,
        events,
        status,
        cancel,
        task,
    }
}

fn quick() -> StreamSettings {
    StreamSettings {
        reconnect_min: Duration::from_millis(100),
        reconnect_max: Duration::from_millis(400),
        keepalive: Duration::from_millis(500),
        ack_timeout: Duration::from_secs(5),
        drain: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(2),
    }
}

async fn connected(r: &Running) {
    wait_for("a Stream connection", LIMIT, || {
        r.fake.stream().connections() == 1 && r.state() == StreamState::Connected
    })
    .await;
}

fn acks_of(fake: &FakeDingTalk, event_id: &str) -> Vec<String> {
    fake.stream()
        .acks()
        .into_iter()
        .filter(|a| a.event_id.as_deref() == Some(event_id))
        .map(|a| a.status)
        .collect()
}

#[tokio::test]
async fn an_event_is_acknowledged_only_once_the_daemon_has_committed_it() {
    let mut r = running(quick()).await;
    connected(&r).await;
    let event_id = r.fake.push_event(&EventSpec {
        title: Some("董事会 Board".into()),
        creator_id: Some("union-creator".into()),
        ..EventSpec::created("conf-1")
    });
    let d = r.next().await;
    assert_eq!(d.event.event_id, event_id);
    assert_eq!(d.event.event_type, "meeting_status_change");
    assert!(d.event.born_at.is_some());
    let data: Value = serde_json::from_str(&d.event.data).expect("the event's data is JSON");
    assert_eq!(data["changeScene"], "conference_created");
    assert_eq!(data["openConfModel"]["conferenceId"], "conf-1");
    assert_eq!(data["openConfModel"]["title"], "董事会 Board");
    assert_eq!(data["openConfModel"]["creatorId"], "union-creator");
    // A ping answered after the event was handed over proves the connection is served; the
    // event itself is not answered while the daemon holds it.
    r.fake.stream().ping();
    wait_for("the ping's answer", LIMIT, || {
        r.fake.stream().acks().iter().any(|a| a.status == "PONG")
    })
    .await;
    assert!(
        acks_of(&r.fake, &event_id).is_empty(),
        "acknowledged before it was committed"
    );
    assert_eq!(r.fake.stream().unacked(), 1);
    d.ack(Ack::Success);
    wait_for("the acknowledgement", LIMIT, || {
        !acks_of(&r.fake, &event_id).is_empty()
    })
    .await;
    assert_eq!(acks_of(&r.fake, &event_id), ["SUCCESS"]);
    assert_eq!(r.fake.stream().unacked(), 0);
    assert!(r.status.borrow().last_event_at.is_some());
    r.stop().await;
}

#[tokio::test]
async fn an_event_not_stored_is_answered_later_and_comes_again() {
    let mut r = running(quick()).await;
    r.fake.stream().set_redeliver_after(Duration::from_millis(200));
    connected(&r).await;
    let event_id = r.fake.push_event(&EventSpec::created("conf-2"));
    let first = r.next().await;
    first.ack(Ack::Later);
    // Unanswered (dropped) counts as LATER too.
    let second = r.next().await;
    assert_eq!(second.event.event_id, event_id);
    drop(second);
    let third = r.next().await;
    assert_eq!(third.event.event_id, event_id);
    third.ack(Ack::Success);
    wait_for("the success", LIMIT, || acks_of(&r.fake, &event_id).len() == 3).await;
    assert_eq!(acks_of(&r.fake, &event_id), ["LATER", "LATER", "SUCCESS"]);
    let messages: std::collections::HashSet<String> = r
        .fake
        .stream()
        .deliveries()
        .into_iter()
        .filter(|d| d.event_id.as_deref() == Some(&event_id))
        .map(|d| d.message_id)
        .collect();
    assert_eq!(messages.len(), 3, "each delivery its own messageId, one eventId");
    assert_eq!(r.fake.stream().unacked(), 0);
    r.stop().await;
}

#[tokio::test]
async fn a_disconnect_gets_a_new_connection_before_the_old_one_closes() {
    let mut r = running(quick()).await;
    connected(&r).await;
    r.fake.stream().disconnect(Duration::from_secs(3));
    wait_for("a second connection beside the first", LIMIT, || {
        r.fake.stream().connections() == 2
    })
    .await;
    assert_eq!(r.fake.stream().opens(), 2);
    wait_for("the old connection closed", LIMIT, || {
        r.fake.stream().connections() == 1
    })
    .await;
    assert_eq!(r.state(), StreamState::Connected);
    assert_eq!(r.status.borrow().reconnects, 1);
    // Events still arrive, on the new connection.
    let event_id = r.fake.push_event(&EventSpec::created("conf-3"));
    let d = r.next().await;
    assert_eq!(d.event.event_id, event_id);
    d.ack(Ack::Success);
    wait_for("the acknowledgement", LIMIT, || {
        acks_of(&r.fake, &event_id) == ["SUCCESS"]
    })
    .await;
    r.stop().await;
}

#[tokio::test]
async fn a_half_open_socket_is_noticed_and_replaced() {
    let r = running(quick()).await;
    connected(&r).await;
    r.fake.stream().set_blackhole(true);
    wait_for("the silent connection given up", LIMIT, || {
        r.state() == StreamState::Down
    })
    .await;
    let down = r.status.borrow().clone();
    assert!(down.down_since.is_some());
    assert!(
        down.last_error
            .as_deref()
            .is_some_and(|e| e.contains("half-open")),
        "{down:?}"
    );
    r.fake.stream().set_blackhole(false);
    wait_for("a new connection", LIMIT, || {
        r.state() == StreamState::Connected && r.fake.stream().connections() >= 1
    })
    .await;
    assert!(r.fake.stream().opens() >= 2);
    assert!(r.status.borrow().down_since.is_none());
    r.stop().await;
}

#[tokio::test]
async fn a_refused_open_is_retried_with_backoff_until_it_connects() {
    let fake_refusals = 3;
    let r = running(quick()).await;
    // The first open may already be on its way: refuse the next three, whichever they are.
    r.fake.stream().refuse_opens(fake_refusals);
    wait_for("a connection after the refusals", LIMIT, || {
        r.state() == StreamState::Connected && r.fake.stream().opens() > u64::from(fake_refusals)
    })
    .await;
    assert_eq!(r.fake.stream().connections(), 1);
    assert!(r.status.borrow().last_error.is_none());
    // Each retry waited at least half of reconnect_min (the jitter's floor): no hammering.
    let opens: Vec<i64> = r
        .fake
        .requests()
        .into_iter()
        .filter(|q| q.path == "/v1.0/gateway/connections/open")
        .map(|q| q.at_ms)
        .collect();
    let refused = &opens[opens.len() - 1 - fake_refusals as usize..];
    for pair in refused.windows(2) {
        assert!(
            pair[1] - pair[0] >= 50,
            "retried after {} ms: {opens:?}",
            pair[1] - pair[0]
        );
    }
    r.stop().await;
}

#[tokio::test]
async fn a_ticket_opens_one_connection_and_a_wrong_secret_none() {
    let fake = FakeDingTalk::start(
        "127.0.0.1:0".parse().expect("addr"),
        Scenario {
            app_key: Some(KEY.into()),
            app_secret: Some(SECRET.into()),
            ..Scenario::default()
        },
    )
    .await
    .expect("fake");
    let settings = dingtalk_settings(&fake.base_url());
    let wrong = client(&settings, Some(internal_credentials(KEY, "not-the-secret")));
    let refused = wrong.open_stream("127.0.0.1").await.expect_err("a wrong secret");
    assert!(
        refused.to_string().contains("invalidClientIdOrSecret"),
        "{refused}"
    );

    let api = client(&settings, Some(internal_credentials(KEY, SECRET)));
    let ticket = api.open_stream("127.0.0.1").await.expect("a ticket");
    use secrecy::ExposeSecret as _;
    let url =
        dingrec::dingtalk::stream::connect_url(&ticket.endpoint, ticket.ticket.expose_secret()).expect("url");
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the ticket opens a connection");
    let again = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(again.is_err(), "a ticket is good for one connection");
    drop(ws);
    // Neither the secret nor the ticket is in the fake's request log.
    let log = serde_json::to_string(&fake.requests()).expect("json");
    assert!(!log.contains(SECRET) && !log.contains(ticket.ticket.expose_secret()));
}

#[tokio::test]
async fn dingrecs_open_request_and_ping_answer_are_the_official_sdks() {
    let r = running(quick()).await;
    connected(&r).await;
    let expected = protocol();
    let bodies = r.fake.stream().open_bodies();
    let body = bodies
        .first()
        .expect("an open call")
        .as_object()
        .expect("an object");
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want: Vec<&str> = expected["open_fields"]
        .as_array()
        .expect("open_fields")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    assert_eq!(body["clientId"], KEY);
    assert_eq!(body["subscriptions"], expected["event_subscriptions"]);
    assert_eq!(
        body["localIp"], "127.0.0.1",
        "the address that reaches the API host"
    );
    let open = r
        .fake
        .requests()
        .into_iter()
        .find(|q| q.path == expected["open_path"].as_str().unwrap_or_default())
        .expect("the open call at the SDK's path");
    assert_eq!(open.method, "POST");

    r.fake.stream().ping();
    wait_for("the ping's answer", LIMIT, || {
        r.fake.stream().acks().iter().any(|a| a.status == "PONG")
    })
    .await;
    let pong = r
        .fake
        .stream()
        .acks()
        .into_iter()
        .find(|a| a.status == "PONG")
        .expect("pong");
    let pong: Value = serde_json::from_str(&pong.raw).expect("JSON");
    let mut pong_keys: Vec<String> = pong.as_object().expect("object").keys().cloned().collect();
    pong_keys.sort_unstable();
    let mut want: Vec<String> = expected["ping_answer_fields"]
        .as_array()
        .expect("ping_answer_fields")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    want.sort_unstable();
    assert_eq!(pong_keys, want);
    assert_eq!(pong["code"], 200);
    assert_eq!(pong["headers"]["contentType"], "application/json");
    r.stop().await;
}
