//! Tests of the loopback fixtures themselves, over real sockets: everyone's end-to-end tests rely on them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use crate::client::{self, HttpRequest};
use crate::upstream::{FixedReply, Reply, TokenEndpoint, TokenOutcome, Upstream};

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn echo_records_and_returns_repeated_headers_and_body() {
    let upstream = Upstream::echo().unwrap();
    let request = HttpRequest::post("/v1/messages?beta=true")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .body("hello");
    let response = client::send(upstream.addr(), request, TIMEOUT).unwrap();
    assert_eq!(response.status, 200);
    let echoed = response.json().unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/v1/messages?beta=true");
    assert_eq!(
        echoed["headers"]["x-multi"],
        serde_json::json!(["one", "two"])
    );
    assert_eq!(echoed["body"], "hello");

    let seen = upstream.wait_for_requests(1, TIMEOUT).unwrap();
    assert_eq!(seen[0].header_values("X-Multi"), vec!["one", "two"]);
    assert_eq!(seen[0].path_only(), "/v1/messages");
    assert_eq!(seen[0].body_text(), "hello");
}

#[test]
fn routes_pick_replies_by_path_and_can_change_while_serving() {
    let upstream = Upstream::builder()
        .route(
            "/fixed",
            Reply::Fixed(
                FixedReply::new(418)
                    .header("x-a", "1")
                    .header("x-a", "2")
                    .body("teapot"),
            ),
        )
        .fallback(Reply::text(404, "nothing here"))
        .start()
        .unwrap();
    let fixed = client::send(upstream.addr(), HttpRequest::get("/fixed?q=1"), TIMEOUT).unwrap();
    assert_eq!((fixed.status, fixed.body_text().as_str()), (418, "teapot"));
    assert_eq!(fixed.header_values("x-a"), vec!["1", "2"]);
    assert_eq!(
        client::send(upstream.addr(), HttpRequest::get("/other"), TIMEOUT)
            .unwrap()
            .status,
        404
    );

    upstream.set_route(
        "/other",
        Reply::handler(|request| FixedReply::new(200).body(format!("saw {}", request.method))),
    );
    let handled =
        client::send(upstream.addr(), HttpRequest::new("PUT", "/other"), TIMEOUT).unwrap();
    assert_eq!(handled.body_text(), "saw PUT");
    assert_eq!(upstream.request_count(), 3);
}

#[test]
fn sse_events_arrive_one_by_one_before_the_stream_ends() {
    let interval = Duration::from_millis(150);
    let upstream = Upstream::builder()
        .fallback(Reply::sse_numbered(3, interval))
        .start()
        .unwrap();
    let response = client::send(upstream.addr(), HttpRequest::get("/stream"), TIMEOUT).unwrap();
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        response.body_text(),
        "event: message\ndata: {\"n\":1}\n\nevent: message\ndata: {\"n\":2}\n\nevent: message\ndata: {\"n\":3}\n\n"
    );
    assert_eq!(response.chunks.len(), 3, "each event is its own chunk");
    let first = response.chunks.first().unwrap().at;
    // Two intervals separate the first event from the end; the first must not have waited for them.
    assert!(response.finished_at.duration_since(first) >= interval * 2 - Duration::from_millis(20));
}

#[test]
fn delayed_reply_outlasts_a_shorter_client_timeout() {
    let upstream = Upstream::builder()
        .fallback(Reply::delayed(
            Duration::from_secs(30),
            Reply::text(200, "late"),
        ))
        .start()
        .unwrap();
    let err = client::send(
        upstream.addr(),
        HttpRequest::get("/slow"),
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("no complete response"),
        "{err:#}"
    );
    assert_eq!(
        upstream.request_count(),
        1,
        "the request was read before the wait"
    );
}

#[test]
fn dropping_an_upstream_with_a_held_request_does_not_hang() {
    let upstream = Upstream::builder().fallback(Reply::Never).start().unwrap();
    let addr = upstream.addr();
    let waiter = std::thread::spawn(move || {
        client::send(addr, HttpRequest::get("/held"), Duration::from_secs(10))
    });
    upstream.wait_for_requests(1, TIMEOUT).unwrap();
    drop(upstream);
    let outcome = waiter.join().unwrap();
    assert!(
        outcome.is_err(),
        "a held request ends with an error once the upstream is gone"
    );
}

#[test]
fn token_endpoint_issues_numbered_tokens_after_planned_failures() {
    let tokens = TokenEndpoint::new().with_expires_in(120);
    let upstream = Upstream::builder()
        .route("/oauth/token", Reply::Token(tokens.clone()))
        .start()
        .unwrap();
    tokens.fail_next(1, 503, "temporarily_unavailable");
    let form = "grant_type=refresh_token&refresh_token=rt%2B0&client_id=a+b";
    let post = || {
        HttpRequest::post("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
    };

    let failed = client::send(upstream.addr(), post(), TIMEOUT).unwrap();
    assert_eq!(failed.status, 503);
    assert_eq!(failed.json().unwrap()["error"], "temporarily_unavailable");

    let issued = client::send(upstream.addr(), post(), TIMEOUT).unwrap();
    assert_eq!(issued.status, 200);
    let body = issued.json().unwrap();
    assert_eq!(body["access_token"], TokenEndpoint::access_token(1));
    assert_eq!(body["refresh_token"], TokenEndpoint::refresh_token(1));
    assert_eq!(body["expires_in"], 120);
    assert_eq!(tokens.issued(), 1);

    let forms = tokens.forms();
    assert_eq!(forms.len(), 2);
    assert_eq!(
        forms[1],
        vec![
            ("grant_type".into(), "refresh_token".into()),
            ("refresh_token".into(), "rt+0".into()),
            ("client_id".into(), "a b".into())
        ]
    );
}

#[test]
fn token_endpoint_can_stall_and_omit_the_refresh_token() {
    let tokens = TokenEndpoint::new().without_refresh_token();
    tokens.plan(TokenOutcome::IssueAfter(Duration::from_secs(30)));
    let upstream = Upstream::builder()
        .route("/token", Reply::Token(tokens.clone()))
        .start()
        .unwrap();
    assert!(
        client::send(
            upstream.addr(),
            HttpRequest::post("/token"),
            Duration::from_millis(200)
        )
        .is_err()
    );
    let issued = client::send(upstream.addr(), HttpRequest::post("/token"), TIMEOUT)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(issued["access_token"], TokenEndpoint::access_token(1));
    assert!(issued.get("refresh_token").is_none());
}

#[test]
fn waiting_for_more_requests_than_arrive_fails_with_a_count() {
    let upstream = Upstream::echo().unwrap();
    let err = upstream
        .wait_for_requests(1, Duration::from_millis(50))
        .unwrap_err()
        .to_string();
    assert!(err.contains("0 of 1"), "{err}");
}

#[tokio::test]
async fn async_tests_use_the_same_fixtures() {
    let upstream = Upstream::echo().unwrap();
    let response = client::send_async(upstream.addr(), HttpRequest::get("/async"), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests_async(1, TIMEOUT).await.unwrap();
    assert_eq!(seen[0].path, "/async");
}
