//! Http calls: validation, tokens, mock clusters on the manual clock, the embedder backend, timeouts,
//! and a stream paused on a call and resumed (or answered) from the response.

use std::time::Duration;

use host_harness::{
    Action, FailedCalls, HarnessError, HttpCallFailure, HttpCallResponse, MockCluster, MockReply,
    Plugin, StreamEvent,
};

use crate::support::{StartVm, get, module, said, send_request_headers};

/// A filter that, on request headers, calls cluster "auth" with `headers` and pauses, remembering which
/// stream made the call; on the response it logs root id, token, counts, status and body, then resumes that
/// stream, or answers it with 401 when the call failed.
fn calling_filter(headers: &[(&str, &str)], timeout_ms: u32) -> String {
    let mut encoded = Vec::new();
    encoded.extend_from_slice(&u32::try_from(headers.len()).unwrap().to_le_bytes());
    for (key, value) in headers {
        encoded.extend_from_slice(&u32::try_from(key.len()).unwrap().to_le_bytes());
        encoded.extend_from_slice(&u32::try_from(value.len()).unwrap().to_le_bytes());
    }
    for (key, value) in headers {
        encoded.extend_from_slice(key.as_bytes());
        encoded.push(0);
        encoded.extend_from_slice(value.as_bytes());
        encoded.push(0);
    }
    let escaped: String = encoded.iter().map(|byte| format!("\\{byte:02x}")).collect();
    format!(
        r#"
      (data (i32.const 0) "{escaped}")
      (data (i32.const 600) "auth")
      (data (i32.const 620) "unknown-cluster")
      (data (i32.const 640) "ping")
      (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
        (call $say_num (call $proxy_http_call (i32.const 600) (i32.const 4) (i32.const 0) (i32.const {len})
          (i32.const 640) (i32.const 4) (i32.const 0) (i32.const 0) (i32.const {timeout_ms}) (i32.const 1040)))
        (call $say_num (i32.load (i32.const 1040)))
        (i32.store (i32.add (i32.const 1100) (i32.mul (i32.load (i32.const 1040)) (i32.const 4))) (local.get $id))
        (i32.const 1))
      (func (export "proxy_on_http_call_response") (param $root i32) (param $token i32) (param $headers i32) (param $body i32) (param $trailers i32)
        (call $say_num (local.get $root))
        (call $say_num (local.get $token))
        (call $say_num (local.get $headers))
        (call $say_num (local.get $body))
        (drop (call $proxy_get_status (i32.const 1044) (i32.const 1024) (i32.const 1028)))
        (call $say_num (i32.load (i32.const 1044)))
        (call $say_returned)
        (drop (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (local.get $body) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (drop (call $proxy_set_effective_context (i32.load (i32.add (i32.const 1100) (i32.mul (local.get $token) (i32.const 4))))))
        (if (local.get $headers)
          (then (drop (call $proxy_continue_stream (i32.const 0))))
          (else (drop (call $proxy_send_local_response (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1))))))
    "#,
        len = encoded.len()
    )
}

const GOOD_HEADERS: [(&str, &str); 3] = [
    (":method", "POST"),
    (":path", "/token"),
    (":authority", "auth.test"),
];

fn start(filter: &str, cluster: MockCluster) -> host_harness::Vm {
    start_as(filter, cluster, FailedCalls::Empty)
}

fn start_as(filter: &str, cluster: MockCluster, failed_calls: FailedCalls) -> host_harness::Vm {
    Plugin::builder()
        .module_bytes(module(filter))
        .clock(host_harness::ManualClock::new())
        .cluster("auth", cluster)
        .failed_calls(failed_calls)
        .start()
}

/// The filter answered the stream with 401 after its call failed, and the embedder is told.
fn assert_answered_401(vm: &mut host_harness::Vm, id: host_harness::StreamId) {
    let local = vm
        .stream_state(id)
        .and_then(|state| state.local_response().cloned());
    assert_eq!(local.map(|local| local.status), Some(401));
    assert_eq!(vm.take_stream_events(), [StreamEvent::LocalResponse(id)]);
}

#[test]
fn a_response_after_a_virtual_delay_resumes_the_paused_stream() {
    let auth = MockCluster::new(|request| {
        assert_eq!(request.body, b"ping");
        MockReply::respond(
            HttpCallResponse::new(200)
                .header("content-type", "text/plain")
                .body("tok"),
        )
        .after(Duration::from_millis(30))
    });
    let mut vm = start(&calling_filter(&GOOD_HEADERS, 1000), auth.clone());
    let id = {
        let mut stream = vm.stream().unwrap();
        assert_eq!(
            stream.request_headers(get("/"), true).unwrap(),
            Action::Pause
        );
        stream.id()
    };
    assert_eq!(said(&mut vm), ["0", "1"]);
    assert_eq!(auth.request_count(), 1);
    assert_eq!(auth.requests()[0].headers.get_str(":path"), Some("/token"));
    assert_eq!(auth.requests()[0].timeout, Some(Duration::from_secs(1)));

    vm.advance(Duration::from_millis(29)).unwrap();
    assert!(vm.stream_state(id).unwrap().is_request_paused());
    vm.advance(Duration::from_millis(1)).unwrap();
    // Root context 1, token 1, two headers, three body bytes; proxy_get_status is 0 and empty for a response.
    assert_eq!(said(&mut vm), ["1", "1", "2", "3", "0", "", "tok"]);
    assert!(!vm.stream_state(id).unwrap().is_request_paused());
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(id)]);
}

#[test]
fn a_call_that_never_answers_fails_at_its_timeout_without_headers() {
    let mut vm = start(&calling_filter(&GOOD_HEADERS, 500), MockCluster::silent());
    let id = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(id, get("/").into(), true).unwrap();
    said(&mut vm);
    vm.advance(Duration::from_millis(499)).unwrap();
    assert!(said(&mut vm).is_empty());
    vm.advance(Duration::from_millis(1)).unwrap();
    assert_eq!(said(&mut vm), ["1", "1", "0", "0", "11", "timeout", ""]);
    assert_answered_401(&mut vm, id);
}

#[test]
fn with_envoy_replies_a_timeout_arrives_as_envoys_made_up_504() {
    let mut vm = start_as(
        &calling_filter(&GOOD_HEADERS, 500),
        MockCluster::silent(),
        FailedCalls::EnvoyReplies,
    );
    let id = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(id, get("/").into(), true).unwrap();
    said(&mut vm);
    vm.advance(Duration::from_millis(500)).unwrap();
    assert_eq!(
        said(&mut vm),
        ["1", "1", "3", "24", "0", "", "upstream request timeout"]
    );
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(id)]);
}

#[test]
fn a_reset_arrives_without_headers_and_the_filter_can_answer_the_stream() {
    let reset = MockCluster::new(|_| MockReply::reset().after(Duration::from_millis(5)));
    let mut vm = start(&calling_filter(&GOOD_HEADERS, 0), reset);
    let id = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(id, get("/").into(), true).unwrap();
    said(&mut vm);
    vm.advance(Duration::from_millis(5)).unwrap();
    // No headers, no body; proxy_get_status says BROKEN_CONNECTION, "reset", as Envoy does.
    assert_eq!(said(&mut vm), ["1", "1", "0", "0", "11", "reset", ""]);
    assert_answered_401(&mut vm, id);
}

#[test]
fn with_envoy_replies_a_connection_failure_arrives_as_envoys_made_up_503() {
    let refused = MockCluster::new(|_| MockReply::Fail {
        failure: HttpCallFailure::ConnectionFailure,
        after: Duration::ZERO,
    });
    let mut vm = start_as(
        &calling_filter(&GOOD_HEADERS, 100),
        refused,
        FailedCalls::EnvoyReplies,
    );
    send_request_headers(&mut vm);
    said(&mut vm);
    vm.advance(Duration::ZERO).unwrap();
    let body = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure";
    assert_eq!(
        said(&mut vm)[2..],
        ["3", &body.len().to_string(), "0", "", body]
    );
}

#[test]
fn a_response_later_than_the_timeout_is_a_timeout() {
    let late = MockCluster::new(|_| {
        MockReply::respond(HttpCallResponse::new(200)).after(Duration::from_secs(5))
    });
    let mut vm = start(&calling_filter(&GOOD_HEADERS, 100), late);
    send_request_headers(&mut vm);
    said(&mut vm);
    vm.advance(Duration::from_secs(10)).unwrap();
    let said = said(&mut vm);
    assert_eq!(said[5], "timeout");
    assert_eq!(vm.http_calls_in_flight(), 0);
}

#[test]
fn missing_pseudo_headers_or_an_unknown_cluster_are_bad_arguments() {
    for headers in [
        &[(":method", "POST"), (":path", "/token")][..],
        &[(":method", "POST"), (":authority", "a")][..],
        &[(":path", "/token"), (":authority", "a")][..],
    ] {
        let mut vm = start(&calling_filter(headers, 100), MockCluster::silent());
        send_request_headers(&mut vm);
        assert_eq!(said(&mut vm)[0], "2", "headers {headers:?}");
        assert_eq!(vm.http_calls_in_flight(), 0);
    }
    let unknown = calling_filter(&GOOD_HEADERS, 100).replace(
        "(i32.const 600) (i32.const 4) (i32.const 0)",
        "(i32.const 620) (i32.const 15) (i32.const 0)",
    );
    let mut vm = start(&unknown, MockCluster::silent());
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm)[0], "2");
}

#[test]
fn the_embedder_performs_calls_and_hands_back_the_outcome() {
    let mut vm = Plugin::builder()
        .module_bytes(module(&calling_filter(&GOOD_HEADERS, 2000)))
        .clock(host_harness::ManualClock::new())
        .embedder_cluster("auth")
        .start();
    let first = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(first, get("/").into(), true).unwrap();
    let second = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(second, get("/").into(), true).unwrap();
    said(&mut vm);
    let pending = vm.take_pending_http_calls();
    assert_eq!(pending.len(), 2);
    assert_ne!(pending[0].token, pending[1].token, "tokens are unique");
    assert_eq!(pending[0].request.cluster, "auth");
    assert!(vm.take_pending_http_calls().is_empty());
    assert_eq!(
        vm.next_due_nanos(),
        Some(host_harness::ManualClock::DEFAULT_START_NANOS + 2_000_000_000)
    );

    vm.deliver_http_call_response(pending[1].token, Ok(HttpCallResponse::new(204)))
        .unwrap();
    assert_eq!(
        said(&mut vm)[..3],
        ["1", &pending[1].token.to_string(), "1"]
    );
    vm.deliver_http_call_response(pending[0].token, Err(HttpCallFailure::Reset))
        .unwrap();
    assert_eq!(said(&mut vm)[5], "reset");
    let late = vm.deliver_http_call_response(pending[0].token, Ok(HttpCallResponse::new(200)));
    assert!(matches!(late, Err(HarnessError::UnknownHttpCall(_))));
    let events = vm.take_stream_events();
    assert_eq!(
        events,
        [
            StreamEvent::RequestResumed(second),
            StreamEvent::LocalResponse(first)
        ]
    );
}

#[test]
fn an_embedder_call_not_answered_in_time_times_out_on_the_vms_clock() {
    let mut vm = Plugin::builder()
        .module_bytes(module(&calling_filter(&GOOD_HEADERS, 50)))
        .clock(host_harness::ManualClock::new())
        .embedder_cluster("auth")
        .start();
    send_request_headers(&mut vm);
    let token = vm.take_pending_http_calls()[0].token;
    vm.advance(Duration::from_millis(50)).unwrap();
    assert!(
        matches!(vm.deliver_http_call_response(token, Ok(HttpCallResponse::new(200))), Err(HarnessError::UnknownHttpCall(t)) if t == token)
    );
}
