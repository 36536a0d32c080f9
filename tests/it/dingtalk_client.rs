//! The client against the fake DingTalk: tokens, timeouts, redirects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dingrec::dingtalk::client::StartRequest;
use dingrec::fake::{FakeDingTalk, Scenario};

use crate::support::replay::{Replay, Scripted};
use crate::support::{client, dingtalk_settings, internal_credentials, live, refusing_addr, step};

async fn fake(scenario: Scenario) -> FakeDingTalk {
    FakeDingTalk::start("127.0.0.1:0".parse().expect("addr"), scenario)
        .await
        .expect("fake")
}

fn start(conference_id: &str) -> StartRequest<'_> {
    StartRequest {
        conference_id,
        union_id: "host-1",
        layout: Some("speech"),
        small_window_position: Some("relative_right"),
    }
}

#[tokio::test]
async fn a_thousand_concurrent_callers_cause_exactly_one_token_request() {
    let f = fake(Scenario::default()).await;
    let c = Arc::new(client(
        &dingtalk_settings(&f.base_url()),
        Some(internal_credentials("k", "s")),
    ));
    let calls = (0..1_000).map(|_| {
        let c = c.clone();
        tokio::spawn(async move { c.token().await.map(|_| ()) })
    });
    for r in futures_util::future::join_all(calls).await {
        r.expect("task").expect("token");
    }
    assert_eq!(f.token_calls(), 1);
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires_and_not_earlier() {
    let f = fake(Scenario {
        token_ttl: Some(Duration::from_secs(2)),
        ..Scenario::default()
    })
    .await;
    let c = client(
        &dingtalk_settings(&f.base_url()),
        Some(internal_credentials("k", "s")),
    );
    c.token().await.expect("token");
    c.token().await.expect("token");
    assert_eq!(f.token_calls(), 1, "cached");
    // Refreshed at half its life at the latest (the margin is min(configured, life / 2)).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    c.token().await.expect("token");
    assert_eq!(f.token_calls(), 2, "refreshed");
}

#[tokio::test]
async fn an_expired_token_is_answered_with_invalid_authentication_and_can_be_dropped() {
    let f = fake(Scenario {
        meetings: vec![live("m1", vec![])],
        ..Scenario::default()
    })
    .await;
    let c = client(
        &dingtalk_settings(&f.base_url()),
        Some(internal_credentials("k", "s")),
    );
    let t1 = c.token().await.expect("token");
    f.expire_tokens();
    let err = c
        .start_cloud_record_with(&t1, &start("m1"))
        .await
        .expect_err("expired");
    assert_eq!(err.code(), "InvalidAuthentication");
    c.invalidate_token(&t1).await;
    let t2 = c.token().await.expect("new token");
    assert_eq!(f.token_calls(), 2);
    c.start_cloud_record_with(&t2, &start("m1"))
        .await
        .expect("started with the new token");
}

async fn times_out(answer: &str) {
    let f = fake(Scenario {
        meetings: vec![live("m1", vec![step(answer, 1)])],
        ..Scenario::default()
    })
    .await;
    let mut settings = dingtalk_settings(&f.base_url());
    settings.request_timeout = Duration::from_millis(800);
    let c = client(&settings, Some(internal_credentials("k", "s")));
    let token = c.token().await.expect("token");
    let started = Instant::now();
    let err = c
        .start_cloud_record_with(&token, &start("m1"))
        .await
        .expect_err("times out");
    let took = started.elapsed();
    assert_eq!(err.code(), "timeout", "{answer}: {err}");
    assert_eq!(err.http_status(), 0);
    // The client gave up by itself (a `timeout`, not the server closing), and not before its
    // timeout; how much later is the machine's business.
    assert!(took >= Duration::from_millis(700), "{answer}: {took:?}");
}

#[tokio::test]
async fn a_server_that_never_answers_ends_at_the_timeout() {
    times_out("hang").await;
}

#[tokio::test]
async fn a_one_byte_per_second_answer_ends_at_the_timeout() {
    times_out("trickle").await;
}

#[tokio::test]
async fn broken_connections_have_their_own_codes() {
    let f = fake(Scenario {
        meetings: vec![live(
            "m1",
            vec![step("reset", 1), step("partial", 1), step("drop", 1)],
        )],
        ..Scenario::default()
    })
    .await;
    let c = client(
        &dingtalk_settings(&f.base_url()),
        Some(internal_credentials("k", "s")),
    );
    let token = c.token().await.expect("token");
    for _ in 0..3 {
        let err = c
            .start_cloud_record_with(&token, &start("m1"))
            .await
            .expect_err("broken");
        assert_eq!(err.code(), "connection_lost", "{err}");
        assert_eq!(err.http_status(), 0);
    }
    c.start_cloud_record_with(&token, &start("m1"))
        .await
        .expect("then fine");
    // Nobody listening: a connect error.
    let (_held, closed) = refusing_addr();
    let c = client(
        &dingtalk_settings(&format!("http://{closed}")),
        Some(internal_credentials("k", "s")),
    );
    let err = c.token().await.expect_err("refused");
    assert_eq!(err.code(), "connect_error");
}

#[tokio::test]
async fn redirects_are_not_followed_and_the_token_never_goes_to_another_host() {
    // The other host: 127.0.0.2 is loopback too, but a different host for the client.
    let other = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
    let other_addr = other.local_addr().expect("addr");
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hits2 = hits.clone();
    tokio::spawn(async move {
        while let Ok((_s, _)) = other.accept().await {
            hits2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    for status in [301u16, 302, 307, 308] {
        let first = Replay::start(Scripted {
            status,
            headers: vec![("Location".into(), format!("http://{other_addr}/steal"))],
            body: Vec::new(),
            delay: Duration::ZERO,
        })
        .await;
        let c = client(&dingtalk_settings(&first.base_url()), None);
        let token = secrecy::SecretString::from("tok-CANARY".to_owned());
        let err = c
            .start_cloud_record_with(&token, &start("m1"))
            .await
            .expect_err("not followed");
        assert_eq!(err.code(), "invalid_response");
        assert_eq!(err.http_status(), status);
        assert!(err.to_string().contains("not followed"), "{err}");
        assert_eq!(first.requests().len(), 1);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing reached the other host"
    );
}

/// QueryOrgConferenceList a page at a time, as the catch-up reads it: 120 meetings in progress in
/// three pages of at most 50, each once, the ended one not among them, the request the SDK's
/// (`maxResults`, `nextToken`).
#[tokio::test]
async fn the_meetings_in_progress_are_read_page_by_page_each_once() {
    let mut meetings: Vec<_> = (0..120).map(|i| live(&format!("m-{i:03}"), vec![])).collect();
    meetings.push(dingrec::fake::MeetingSpec {
        state: Some(dingrec::fake::MeetingState::Ended),
        ..live("m-ended", vec![])
    });
    let f = fake(Scenario {
        meetings,
        ..Scenario::default()
    })
    .await;
    let c = client(
        &dingtalk_settings(&f.base_url()),
        Some(internal_credentials("k", "s")),
    );
    let token = c.token().await.expect("token");
    let (mut seen, mut next, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let page = c.org_conferences_with(&token, &next).await.expect("page");
        pages += 1;
        assert!(page.on_going_conf_list.len() <= 50);
        seen.extend(page.on_going_conf_list.into_iter().map(|m| m.conference_id));
        match page.next_token.filter(|t| page.has_more && !t.is_empty()) {
            Some(t) => next = t,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let unique: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!((seen.len(), unique.len()), (120, 120));
    assert!(!unique.contains("m-ended"));
    let asked: Vec<String> = f
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1.0/conference/orgConferences")
        .map(|r| r.query)
        .collect();
    assert_eq!(asked[0], "maxResults=50&nextToken=");
    assert!(asked[1].starts_with("maxResults=50&nextToken=m-"), "{asked:?}");
}
