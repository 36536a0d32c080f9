use super::*;

fn raw(status: u16, body: &str, header: Option<&str>) -> RawResponse {
    RawResponse {
        status,
        header_request_id: header.map(str::to_owned),
        location: None,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn body_request_id_wins_over_the_header() {
    let e = parse(&raw(
        400,
        r#"{"code":"roomClosed","requestid":"B","message":"m"}"#,
        Some("H"),
    ))
    .expect_err("error");
    assert_eq!(e.request_id(), Some("B"));
    let e = parse(&raw(400, r#"{"code":"roomClosed","message":"m"}"#, Some("H"))).expect_err("error");
    assert_eq!(e.request_id(), Some("H"));
}

#[test]
fn numeric_codes_are_read_as_text() {
    let (m, _) = parse(&raw(200, r#"{"code":200}"#, None)).expect("ok");
    assert_eq!(m.get("code").and_then(|v| v.as_i64()), Some(200));
    let e = parse(&raw(500, r#"{"code":500,"message":"x"}"#, None)).expect_err("error");
    assert_eq!(e.code(), "500");
}

#[test]
fn snippets_are_bounded() {
    let long = "x".repeat(10_000);
    let e = parse(&raw(502, &long, None)).expect_err("error");
    let shown = e.to_string();
    assert!(shown.chars().count() < SNIPPET_CHARS + 100, "{}", shown.len());
}

#[test]
fn a_2xx_with_an_error_code_is_an_error() {
    let e = parse(&raw(200, r#"{"code":"systemError","message":"busy"}"#, None)).expect_err("error");
    assert_eq!(e.code(), "systemError");
    assert_eq!(e.http_status(), 200);
}

#[test]
fn an_error_without_a_code_keeps_its_status() {
    let e = parse(&raw(503, r#"{"oops":true}"#, None)).expect_err("error");
    assert_eq!(e.code(), "invalid_response");
    assert_eq!(e.http_status(), 503);
}

#[test]
fn dingtalks_code_message_and_request_id_are_capped_before_anyone_keeps_them() {
    let body = format!(
        r#"{{"code":"{}","message":"{}","requestid":"{}"}}"#,
        "c".repeat(5_000),
        "会".repeat(100_000),
        "r".repeat(5_000)
    );
    let Err(DingTalkError::Api {
        code,
        message,
        request_id,
        ..
    }) = parse(&raw(400, &body, None))
    else {
        panic!("an API error")
    };
    assert_eq!(code.chars().count(), MAX_CODE_CHARS);
    assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
    assert_eq!(request_id.map(|r| r.chars().count()), Some(MAX_CODE_CHARS));
}
