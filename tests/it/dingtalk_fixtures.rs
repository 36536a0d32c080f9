//! Every fixture the official SDK recorded: dingrec's request matches the SDK's (method, path,
//! query, token header, JSON body), and every scripted response parses into the right outcome.

use std::time::Duration;

use dingrec::config::Credentials;
use dingrec::dingtalk::DingTalkError;
use dingrec::dingtalk::client::{AutoRecordRequest, StartRequest};
use dingrec::domain::outcome::{Classification, RetryClass};
use secrecy::SecretString;
use serde_json::Value;

use crate::support::replay::{Replay, Scripted};
use crate::support::{client, dingtalk_settings, fixture};

const REQUEST_ID: &str = "6F3C2E9A-7B1D-7E44-9A0C-2F1E3D4C5B6A";

fn scripted(f: &Value) -> Scripted {
    let r = &f["response"];
    Scripted {
        status: r["status"].as_u64().expect("status") as u16,
        headers: r["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect(),
        body: r["body"].as_str().unwrap_or_default().as_bytes().to_vec(),
        delay: Duration::from_secs_f64(r["delay_s"].as_f64().unwrap_or(0.0)),
    }
}

#[derive(Debug)]
enum Call {
    Start { conference_id: String },
    Stop,
    Token,
    CorpToken,
    ConfInfo,
    ScheduleList,
    Settings,
}

/// The outcome as the audit log sees it.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: String,
    status: u16,
    request_id: Option<String>,
    class: RetryClass,
}

fn outcome_of(r: Result<(u16, Option<String>), DingTalkError>) -> Outcome {
    let t = Classification::default();
    match r {
        Ok((status, request_id)) => Outcome {
            code: "200".into(),
            status,
            request_id,
            class: RetryClass::Success,
        },
        Err(e) => Outcome {
            code: e.code().to_owned(),
            status: e.http_status(),
            request_id: e.request_id().map(str::to_owned),
            class: t.classify(e.code(), e.http_status()),
        },
    }
}

async fn run(name: &str, call: Call, timeout: Duration) -> (Replay, Value, Outcome) {
    let f = fixture(name);
    let server = Replay::start(scripted(&f)).await;
    let mut settings = dingtalk_settings(&server.base_url());
    settings.request_timeout = timeout;
    let req = &f["request"];
    let body: Value = serde_json::from_str(req["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    let token = req["headers"]["x-acs-dingtalk-access-token"]
        .as_str()
        .unwrap_or("d27c05a1b2c3d4e5f60718293a4b5c6d");
    let token = SecretString::from(token.to_owned());
    let creds = match &call {
        Call::CorpToken => Credentials::ThirdParty {
            corp_id: body["authCorpId"].as_str().unwrap_or_default().into(),
            suite_key: body["suiteKey"].as_str().unwrap_or_default().into(),
            suite_secret: SecretString::from(body["suiteSecret"].as_str().unwrap_or_default().to_owned()),
            suite_ticket: SecretString::from(body["suiteTicket"].as_str().unwrap_or_default().to_owned()),
        },
        _ => crate::support::internal_credentials(
            body["appKey"].as_str().unwrap_or("k"),
            body["appSecret"].as_str().unwrap_or("s"),
        ),
    };
    let c = client(&settings, Some(creds));
    let result: Result<(u16, Option<String>), DingTalkError> = match &call {
        Call::Start { conference_id } => c
            .start_cloud_record_with(
                &token,
                &StartRequest {
                    conference_id,
                    union_id: body["unionId"].as_str().unwrap_or_default(),
                    layout: body["mode"].as_str(),
                    small_window_position: body["smallWindowPosition"].as_str(),
                },
            )
            .await
            .map(|ok| (ok.status, ok.request_id)),
        Call::Stop => c
            .stop_cloud_record_with(
                &token,
                "61289f392a6b4c1f8e0d7c6b5a493827",
                body["unionId"].as_str().unwrap_or_default(),
            )
            .await
            .map(|ok| (ok.status, ok.request_id)),
        Call::Token | Call::CorpToken => c.token().await.map(|_| (200, Some(REQUEST_ID.to_owned()))),
        Call::ConfInfo => c
            .conference_info_with(&token, "61289f392a6b4c1f8e0d7c6b5a493827")
            .await
            .map(|info| {
                assert_eq!(info.conference_id, "61289f392a6b4c1f8e0d7c6b5a493827");
                assert_eq!(info.status, 0);
                assert_eq!(info.creator_id.as_deref(), Some("WFBkgxxxCreator"));
                (200, Some(REQUEST_ID.to_owned()))
            }),
        Call::ScheduleList => c
            .schedule_conference_list_with(&token, "5f1a2b3c4d5e6f708192a3b4c5d6e7f8")
            .await
            .map(|list| {
                assert_eq!(list.len(), 1);
                assert_eq!(list[0].conference_id, "61289f392a6b4c1f8e0d7c6b5a493827");
                assert_eq!(list[0].status, 0);
                (200, Some(REQUEST_ID.to_owned()))
            }),
        Call::Settings => {
            let rec = &body["scheduleConfSettingModel"]["moziConfOpenRecordSetting"];
            c.update_schedule_settings_with(
                &token,
                &AutoRecordRequest {
                    schedule_conference_id: body["scheduleConferenceId"].as_str().unwrap_or_default(),
                    creator_union_id: body["creatorUnionId"].as_str().unwrap_or_default(),
                    on: rec["recordAutoStart"] == 1,
                    start_type: rec["recordAutoStartType"]
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .unwrap_or(-1),
                    layout: rec["mode"].as_str().unwrap_or_default(),
                },
            )
            .await
            .map(|ok| (ok.status, ok.request_id))
        }
    };
    (server, f, outcome_of(result))
}

/// dingrec's first request equals the SDK's in method, path, query, token header and body.
fn assert_same_request(server: &Replay, f: &Value) {
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "exactly one request, redirects not followed");
    let ours = &seen[0];
    let sdk = &f["request"];
    assert_eq!(ours.method, sdk["method"].as_str().expect("method"));
    assert_eq!(ours.path, sdk["path"].as_str().expect("path"));
    assert_eq!(ours.query, sdk["query"].as_str().expect("query"));
    assert_eq!(
        ours.header("x-acs-dingtalk-access-token"),
        sdk["headers"]["x-acs-dingtalk-access-token"].as_str(),
        "token header, verbatim"
    );
    assert_eq!(
        String::from_utf8_lossy(&ours.body),
        sdk["body"].as_str().expect("body"),
        "compact JSON, same keys in the same order"
    );
    assert_eq!(ours.header("accept"), Some("application/json"));
    if ours.method == "POST" {
        assert!(
            ours.header("content-type")
                .is_some_and(|v| v.starts_with("application/json"))
        );
    }
}

fn expect(code: &str, status: u16, request_id: Option<&str>, class: RetryClass) -> Outcome {
    Outcome {
        code: code.into(),
        status,
        request_id: request_id.map(str::to_owned),
        class,
    }
}

const CONF: &str = "61289f392a6b4c1f8e0d7c6b5a493827";
const T: Duration = Duration::from_secs(2);

#[tokio::test]
async fn start_requests_match_the_sdk_and_every_response_shape_parses() {
    use RetryClass::*;
    let rid = Some(REQUEST_ID);
    let cases: &[(&str, Outcome)] = &[
        ("start_cloud_record_ok", expect("200", 200, rid, Success)),
        ("start_cloud_record_minimal_ok", expect("200", 200, rid, Success)),
        (
            "start_cloud_record_200_extra_fields",
            expect("200", 200, rid, Success),
        ),
        (
            "start_cloud_record_token_with_quote_chars",
            expect("200", 200, rid, Success),
        ),
        (
            "start_cloud_record_200_non_json",
            expect("invalid_response", 200, None, Retry),
        ),
        (
            "start_cloud_record_204",
            expect("invalid_response", 204, rid, Retry),
        ),
        (
            "start_cloud_record_302_redirect",
            expect("invalid_response", 302, None, Retry),
        ),
        (
            "start_cloud_record_307_redirect",
            expect("invalid_response", 307, None, Retry),
        ),
        (
            "start_cloud_record_500_autoretry_runtime",
            expect("systemError", 500, rid, Retry),
        ),
        (
            "start_cloud_record_500_config_retry_options",
            expect("systemError", 500, rid, Retry),
        ),
        (
            "start_cloud_record_err_500_systemError",
            expect("systemError", 500, rid, Retry),
        ),
        (
            "start_cloud_record_err_400_InvalidAuthentication",
            expect("InvalidAuthentication", 400, rid, Reauth),
        ),
        (
            "start_cloud_record_err_401_InvalidAuthentication",
            expect("InvalidAuthentication", 401, rid, Reauth),
        ),
        (
            "start_cloud_record_err_400_paramsError",
            expect("paramsError", 400, rid, Fail),
        ),
        (
            "start_cloud_record_err_400_roomClosed",
            expect("roomClosed", 400, rid, Fail),
        ),
        (
            "start_cloud_record_err_403_AccessTokenPermissionDenied",
            expect(
                "Forbidden.AccessDenied.AccessTokenPermissionDenied",
                403,
                rid,
                Fail,
            ),
        ),
        (
            "start_cloud_record_err_403_QpsLimitForApi",
            expect("Forbidden.AccessDenied.QpsLimitForApi", 403, rid, Throttle),
        ),
        (
            "start_cloud_record_err_403_QpsLimitForAppkeyAndApi",
            expect(
                "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi",
                403,
                rid,
                Throttle,
            ),
        ),
        (
            "start_cloud_record_err_404_recordStartError",
            expect("recordStartError", 404, rid, Retry),
        ),
        (
            "start_cloud_record_err_404_recordStartPermissionError",
            expect("recordStartPermissionError", 404, rid, Fail),
        ),
        (
            "start_cloud_record_err_500_json_array",
            expect("invalid_response", 500, rid, Retry),
        ),
        (
            "start_cloud_record_err_502_empty",
            expect("invalid_response", 502, None, Retry),
        ),
        (
            "start_cloud_record_err_502_html",
            expect("invalid_response", 502, None, Retry),
        ),
        (
            "start_cloud_record_err_504_gateway_timeout_empty",
            expect("invalid_response", 504, None, Retry),
        ),
        (
            "start_cloud_record_err_camelcase_requestId",
            expect("roomClosed", 400, rid, Fail),
        ),
        (
            "start_cloud_record_err_requestid_only_in_header",
            expect("roomClosed", 400, rid, Fail),
        ),
        (
            "start_cloud_record_err_uppercase_keys",
            expect("roomClosed", 400, rid, Fail),
        ),
        (
            "start_cloud_record_ip_throttle_x5_page",
            expect("ip_throttled", 200, None, Throttle),
        ),
    ];
    let runs = cases.iter().map(|(name, want)| async move {
        let (server, f, got) = run(
            name,
            Call::Start {
                conference_id: CONF.into(),
            },
            T,
        )
        .await;
        assert_same_request(&server, &f);
        assert_eq!(&got, want, "{name}");
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test]
async fn slow_answers_end_at_the_configured_timeout() {
    let names = [
        "start_cloud_record_slow_autoretry_runtime",
        "start_cloud_record_slow_config_read_timeout_1500ms",
        "start_cloud_record_slow_config_retry_options",
        "start_cloud_record_slow_default_timeout",
        "start_cloud_record_slow_runtime_read_timeout_1500ms",
    ];
    let runs = names.iter().map(|name| async move {
        let (server, f, got) = run(
            name,
            Call::Start {
                conference_id: CONF.into(),
            },
            Duration::from_millis(700),
        )
        .await;
        assert_same_request(&server, &f);
        // `timeout`: the client's own limit ended the call, not the (slower) scripted answer.
        assert_eq!(got, expect("timeout", 0, None, RetryClass::Retry), "{name}");
    });
    futures_util::future::join_all(runs).await;
}

#[tokio::test]
async fn path_segments_are_percent_encoded_unlike_the_sdk() {
    let (server, _f, got) = run(
        "start_cloud_record_confid_special_chars",
        Call::Start {
            conference_id: "a b/c?d".into(),
        },
        T,
    )
    .await;
    assert_eq!(got.code, "200");
    let seen = server.requests();
    // The SDK sent `/videoConferences/a%20b/c?d`: a different path and a query. dingrec keeps the
    // id one segment.
    assert_eq!(
        seen[0].path,
        "/v1.0/conference/videoConferences/a%20b%2Fc%3Fd/cloudRecords/start"
    );
    assert_eq!(seen[0].query, "");
}

#[tokio::test]
async fn stop_and_lookups_match_the_sdk() {
    for (name, call) in [
        ("stop_cloud_record_ok", Call::Stop),
        ("query_conference_info_ok", Call::ConfInfo),
        ("query_schedule_conference_info_ok", Call::ScheduleList),
    ] {
        let (server, f, got) = run(name, call, T).await;
        assert_same_request(&server, &f);
        assert_eq!(got.code, "200", "{name}");
    }
}

#[tokio::test]
async fn auto_record_settings_match_the_sdk_and_refusals_name_their_code() {
    for (name, code, status) in [
        ("update_schedule_conf_settings_ok", "200", 200),
        ("update_schedule_conf_settings_anyone_grid", "200", 200),
        (
            "update_schedule_conf_settings_err_400_creatorUidError",
            "creatorUidError",
            400,
        ),
        (
            "update_schedule_conf_settings_err_403_noPermission",
            "noPermission",
            403,
        ),
    ] {
        let (server, f, got) = run(name, Call::Settings, T).await;
        assert_same_request(&server, &f);
        assert_eq!(server.requests()[0].method, "PUT", "{name}");
        assert_eq!(
            server.requests()[0].header("content-type"),
            Some("application/json"),
            "{name}"
        );
        assert_eq!((got.code.as_str(), got.status), (code, status), "{name}");
        assert_eq!(got.request_id.as_deref(), Some(REQUEST_ID), "{name}");
    }
}

#[tokio::test]
async fn token_requests_match_the_sdk() {
    for (name, call) in [
        ("oauth2_get_access_token_ok", Call::Token),
        ("oauth2_get_corp_access_token_ok", Call::CorpToken),
    ] {
        let (server, f, got) = run(name, call, T).await;
        assert_same_request(&server, &f);
        assert_eq!(got.code, "200", "{name}");
    }
}

#[tokio::test]
async fn bad_credentials_name_the_code_and_never_the_secret() {
    for (name, call, code) in [
        (
            "oauth2_get_access_token_err_400_invalidClientIdOrSecret",
            Call::Token,
            "invalidClientIdOrSecret",
        ),
        (
            "oauth2_get_corp_access_token_err_400_invalidSuiteKey",
            Call::CorpToken,
            "invalidSuiteKey",
        ),
    ] {
        let f = fixture(name);
        let server = Replay::start(scripted(&f)).await;
        let settings = dingtalk_settings(&server.base_url());
        let body: Value = serde_json::from_str(f["request"]["body"].as_str().expect("body")).expect("json");
        let secret = body["appSecret"]
            .as_str()
            .or(body["suiteSecret"].as_str())
            .expect("secret")
            .to_owned();
        let creds = match call {
            Call::CorpToken => Credentials::ThirdParty {
                corp_id: body["authCorpId"].as_str().unwrap_or_default().into(),
                suite_key: body["suiteKey"].as_str().unwrap_or_default().into(),
                suite_secret: SecretString::from(secret.clone()),
                suite_ticket: SecretString::from("TestSuiteTicket".to_owned()),
            },
            _ => crate::support::internal_credentials(body["appKey"].as_str().unwrap_or_default(), &secret),
        };
        let c = client(&settings, Some(creds));
        let err = c.token().await.expect_err("bad credentials");
        assert_eq!(err.code(), code);
        assert_eq!(err.http_status(), 400);
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(code), "{shown}");
        assert!(!shown.contains(&secret), "the secret leaked: {shown}");
        assert_same_request(&server, &f);
    }
}
