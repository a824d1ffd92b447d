//! `host-harness serve` against hostile clients and upstreams, over raw sockets: the bytes a well-behaved
//! HTTP library would never send (a bad chunk size, two `Host` headers, a stalled upload, a response
//! framed twice), and what the proxy must answer so that no client can exhaust it, mislead its
//! operators, or read the credential.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_tests::client::HttpRequest;
use integration_tests::proxy_support::{RunningProxy, labelled_value, proxy, serve_process};
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{Reply, Upstream};
use integration_tests::wait;

const TOKEN: &str = "sk-ant-oat01-hardening-token";
const WAIT: Duration = Duration::from_secs(10);

// ---- raw client --------------------------------------------------------------------------------

/// A connection to `addr` that has written `bytes`, with reads bounded by [`WAIT`].
fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// A response as read off the wire: status line, header lines, and what followed them.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.rest).unwrap_or(serde_json::Value::Null)
    }
}

/// Reads one response head, and the body when it is sized by `content-length`.
fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let read = stream.read(&mut chunk).expect("reading a response head");
        assert!(
            read > 0,
            "connection closed before a response head; got {:?}",
            String::from_utf8_lossy(&buffer)
        );
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut rest = buffer[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok());
    if let Some(length) = length {
        while rest.len() < length {
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).expect("reading a sized body");
            assert!(read > 0, "connection closed inside a sized body");
            rest.extend_from_slice(&chunk[..read]);
        }
    }
    RawResponse {
        status,
        headers,
        rest,
    }
}

/// Reads until the peer closes; `None` when it keeps the connection open past `timeout`.
fn read_to_close(stream: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Some(all),
            Ok(read) => all.extend_from_slice(&chunk[..read]),
            // A reset is a close too.
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return Some(all),
            Err(_) => return None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn metrics(proxy: &RunningProxy) -> String {
    proxy.admin("/metrics").unwrap().body_text()
}

fn errors_of_kind(proxy: &RunningProxy, kind: &str) -> f64 {
    labelled_value(&metrics(proxy), "proxy_errors_total", &[("kind", kind)]).unwrap_or(0.0)
}

fn requests_of_class(proxy: &RunningProxy, class: &str) -> f64 {
    labelled_value(&metrics(proxy), "proxy_requests_total", &[("class", class)]).unwrap_or(0.0)
}

fn assert_api_error(response: &RawResponse, status: u16, error_type: &str) {
    assert_eq!(
        response.status,
        status,
        "{response:?} {}",
        String::from_utf8_lossy(&response.rest)
    );
    let body = response.json();
    assert_eq!(body["type"], "error", "{response:?}");
    assert_eq!(body["error"]["type"], error_type, "{response:?}");
}

// ---- raw upstream ------------------------------------------------------------------------------

/// A loopback upstream that answers every request head with fixed bytes, for responses no HTTP library
/// would produce (framed twice, a chunk size that overflows, a `101` nobody asked for). It never reads a
/// request body, counts the connections it accepts, and keeps each open for the next request.
struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start(reply: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (Arc::clone(&accepted), Arc::clone(&heads));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = find(&buffer, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                            buffer.drain(..end + 4);
                            seen.lock().unwrap().push(head);
                            if stream.write_all(reply).is_err() {
                                return;
                            }
                        }
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                });
            }
        });
        Self {
            addr,
            accepted,
            heads,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> usize {
        self.heads.lock().unwrap().len()
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: proxy.test\r\n\r\n").into_bytes()
}

// ---- 1. connections and memory -----------------------------------------------------------------

#[test]
fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .token(TOKEN)
        .config("max_connections = 3")
        .start()
        .unwrap();
    // Three idle connections that never send a byte hold every place.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(proxy.addr()).unwrap())
        .collect();
    wait::until("three open connections", WAIT, || {
        proxy.metric("proxy_open_connections").ok() == Some(3.0)
    })
    .unwrap();
    let mut refused = raw(proxy.addr(), &get("/v1/models"));
    let answer = read_to_close(&mut refused, WAIT).expect("the fourth connection was kept open");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        proxy.metric("proxy_connections_rejected_total").unwrap(),
        1.0
    );
    // A freed place is usable again.
    drop(held);
    wait::until("the held connections to close", WAIT, || {
        proxy.metric("proxy_open_connections").ok() == Some(0.0)
    })
    .unwrap();
    assert_eq!(
        proxy.send(HttpRequest::get("/v1/models")).unwrap().status,
        200
    );
}

// ---- 2. anthropic-beta is linear and capped ----------------------------------------------------

#[test]
fn a_huge_anthropic_beta_header_is_capped_and_keeps_the_oauth_flag() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    // 10,000 distinct flags in 59 KB, under the header limit: quadratic in the old merge (tenths of a
    // second of a worker's only thread per request).
    let flags: Vec<String> = (0..10_000).map(|n| format!("f{n}")).collect();
    let response = proxy
        .send(HttpRequest::post("/v1/messages").header("anthropic-beta", &flags.join(",")))
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    let sent = seen[0].header_values("anthropic-beta");
    assert_eq!(sent.len(), 1, "one merged line");
    let kept: Vec<&str> = sent[0].split(',').collect();
    assert!(kept.len() <= 65, "{} flags forwarded", kept.len());
    assert_eq!(
        kept[..3],
        ["f0", "f1", "f2"],
        "the client's first flags are kept"
    );
    assert!(kept.contains(&"oauth-2025-04-20"), "{sent:?}");
}

// ---- 3. body read deadline, closing after early answers ---------------------------------------

#[test]
fn a_stalled_upload_gets_408_and_frees_its_slot() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .config("max_concurrency = 1\nqueue = 0\nrequest_body_timeout = \"300ms\"")
        .config("request_timeout = \"5s\"")
        .start()
        .unwrap();
    let mut stalled = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 100\r\n\r\n0123456789",
    );
    let response = read_response(&mut stalled);
    assert_api_error(&response, 408, "timeout_error");
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        read_to_close(&mut stalled, WAIT).is_some(),
        "kept open after 408"
    );
    wait::until("the slot to be free", WAIT, || {
        proxy.metric("proxy_in_flight_requests").ok() == Some(0.0)
    })
    .unwrap();
    assert_eq!(errors_of_kind(&proxy, "client_error"), 1.0);
    assert_eq!(errors_of_kind(&proxy, "upstream_timeout"), 0.0);
}

#[test]
fn an_answer_before_the_upload_ended_closes_the_connection() {
    let upstream = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let proxy = proxy()
        .upstream(&upstream.url())
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 100000\r\n\r\n0123456789",
    );
    let response = read_response(&mut client);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        read_to_close(&mut client, Duration::from_secs(5)).is_some(),
        "the connection stayed open with its upload unread"
    );
}

#[test]
fn a_504_closes_the_connection_of_an_unfinished_upload() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .config("request_timeout = \"300ms\"")
        .start()
        .unwrap();
    let mut client = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 100000\r\n\r\n0123456789",
    );
    let response = read_response(&mut client);
    assert_api_error(&response, 504, "timeout_error");
    assert!(
        read_to_close(&mut client, Duration::from_secs(5)).is_some(),
        "the connection stayed open after 504"
    );
    wait::until("the request to end", WAIT, || {
        proxy.metric("proxy_in_flight_requests").ok() == Some(0.0)
    })
    .unwrap();
}

// ---- 4. client faults are client errors --------------------------------------------------------

#[test]
fn a_malformed_chunk_from_the_client_is_a_400_counted_as_a_client_error() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    );
    let response = read_response(&mut client);
    assert_api_error(&response, 400, "invalid_request_error");
    wait::until("the request to be counted", WAIT, || {
        requests_of_class(&proxy, "4xx") == 1.0
    })
    .unwrap();
    assert_eq!(errors_of_kind(&proxy, "client_error"), 1.0);
    assert_eq!(errors_of_kind(&proxy, "upstream_unreachable"), 0.0);
}

#[test]
fn a_client_that_leaves_mid_upload_is_a_499_counted_as_a_client_error() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .start()
        .unwrap();
    let client = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 100\r\n\r\n0123456789",
    );
    wait::until("the request to start", WAIT, || {
        proxy.metric("proxy_in_flight_requests").ok() == Some(1.0)
    })
    .unwrap();
    drop(client);
    wait::until("the request to be counted as 4xx", WAIT, || {
        requests_of_class(&proxy, "4xx") == 1.0
    })
    .unwrap();
    assert_eq!(errors_of_kind(&proxy, "client_error"), 1.0);
    assert_eq!(errors_of_kind(&proxy, "upstream_unreachable"), 0.0);
    assert_eq!(requests_of_class(&proxy, "5xx"), 0.0);
}

// ---- 5. secrets never printed on bad input -----------------------------------------------------

/// The `host-harness` binary of this build.
fn harness() -> Command {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("host-harness");
    assert!(binary.exists(), "{} is missing", binary.display());
    let mut command = Command::new(binary);
    command
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_OAUTH_TOKEN");
    command
}

#[test]
fn bad_input_is_refused_in_one_line_that_never_holds_the_secret() {
    const SECRET: &str = "sk-ant-oat01-SECRET-value";
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, format!("{SECRET}\nsecond line\n")).unwrap();
    let env_file = dir.path().join("env.toml");
    std::fs::write(&env_file, format!("[env]\n\"K={SECRET}\" = \"x\"\n")).unwrap();
    let cluster_file = dir.path().join("cluster.toml");
    std::fs::write(
        &cluster_file,
        format!("[clusters]\nauth = \"user:{SECRET}@auth.example.com\"\n"),
    )
    .unwrap();
    let filter = env!("FILTER_WASM");
    let token_path = token_file.to_str().unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "--env without =",
            vec!["--env".into(), format!("tok-{SECRET}")],
        ),
        (
            "--host-env with a value",
            vec!["--host-env".into(), format!("A={SECRET}")],
        ),
        (
            "upstream with user info and no scheme",
            vec![
                "--upstream".into(),
                format!("user:{SECRET}@api.example.com"),
            ],
        ),
        (
            "cluster with user info and no scheme",
            vec!["--config".into(), cluster_file.to_str().unwrap().into()],
        ),
        (
            "[env] key holding a value",
            vec!["--config".into(), env_file.to_str().unwrap().into()],
        ),
        (
            "--filter at a token file",
            vec!["--filter".into(), token_path.into()],
        ),
    ];
    let mut failures = Vec::new();
    for (case, args) in cases {
        let mut command = harness();
        command.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]);
        if !args.iter().any(|arg| arg == "--filter") {
            command.args(["--filter", filter]);
        }
        let output = command.args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.code() != Some(2) {
            failures.push(format!(
                "{case}: exit {:?}, stderr {stderr:?}",
                output.status.code()
            ));
        }
        if stderr.contains("SECRET") || stdout.contains("SECRET") {
            failures.push(format!("{case}: printed the secret: {stderr:?} {stdout:?}"));
        }
        if stderr.trim_end().lines().count() != 1 {
            failures.push(format!("{case}: not one line: {stderr:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- 6. protocol edges -------------------------------------------------------------------------

#[test]
fn proxy_authorization_from_the_client_is_not_forwarded() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    let response = proxy
        .send(HttpRequest::get("/v1/models").header("proxy-authorization", "Basic c2VjcmV0"))
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert!(
        seen[0].header("proxy-authorization").is_none(),
        "{:?}",
        seen[0].headers
    );
}

#[test]
fn trace_is_refused_with_405_and_never_reaches_the_upstream() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    let mut client = raw(
        proxy.addr(),
        b"TRACE /v1/models HTTP/1.1\r\nhost: proxy.test\r\n\r\n",
    );
    let response = read_response(&mut client);
    assert_api_error(&response, 405, "invalid_request_error");
    assert!(!String::from_utf8_lossy(&response.rest).contains(TOKEN));
    // The next request on the connection is served, and only it reaches the upstream.
    client.write_all(&get("/v1/models")).unwrap();
    assert_eq!(read_response(&mut client).status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
}

#[test]
fn two_host_headers_are_a_400() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    let mut client = raw(
        proxy.addr(),
        b"GET /v1/models HTTP/1.1\r\nhost: a.test\r\nhost: b.test\r\n\r\n",
    );
    assert_api_error(&read_response(&mut client), 400, "invalid_request_error");
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn options_asterisk_is_a_client_error_not_a_500() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new().token(TOKEN).start().unwrap();
    let mut client = raw(
        proxy.addr(),
        b"OPTIONS * HTTP/1.1\r\nhost: proxy.test\r\n\r\n",
    );
    assert_api_error(&read_response(&mut client), 400, "invalid_request_error");
    assert_eq!(errors_of_kind(&proxy, "filter_failure"), 0.0);
}

#[test]
fn a_response_framed_twice_is_sent_chunked_and_its_connection_not_reused() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n",
    );
    let proxy = proxy()
        .upstream(&upstream.url())
        .token(TOKEN)
        .workers(1)
        .start()
        .unwrap();
    for _ in 0..2 {
        let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), "0123456789");
        assert!(
            response.header("content-length").is_none(),
            "{:?}",
            response.headers
        );
    }
    assert_eq!(upstream.requests(), 2);
    assert_eq!(
        upstream.accepted.load(Ordering::SeqCst),
        2,
        "the connection that sent both framings was pooled again"
    );
}

#[test]
fn a_chunk_size_overflow_from_the_upstream_is_a_502() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
    );
    let proxy = proxy()
        .upstream(&upstream.url())
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(proxy.addr(), &get("/v1/models"));
    assert_api_error(&read_response(&mut client), 502, "api_error");
}

#[test]
fn a_101_to_a_plain_request_is_a_502() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: evil\r\n\r\n",
    );
    let proxy = proxy()
        .upstream(&upstream.url())
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(proxy.addr(), &get("/v1/models"));
    assert_api_error(&read_response(&mut client), 502, "api_error");
}

#[test]
fn response_trailers_reach_a_client_that_accepts_them() {
    let upstream = RawUpstream::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n2\r\nok\r\n0\r\nx-checksum: abc\r\n\r\n",
    );
    let proxy = proxy()
        .upstream(&upstream.url())
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(
        proxy.addr(),
        b"GET /v1/models HTTP/1.1\r\nhost: proxy.test\r\nte: trailers\r\nconnection: close\r\n\r\n",
    );
    let all = read_to_close(&mut client, WAIT).expect("the response to end");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap()..];
    assert!(body.contains("x-checksum: abc"), "{text}");
}

// ---- fail in ways clients understand -----------------------------------------------------------

#[test]
fn without_a_credential_the_503_tells_clients_not_to_retry() {
    let Scene { upstream, proxy } = Scenario::new().start().unwrap();
    let response = proxy.send(HttpRequest::post("/v1/messages")).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("x-should-retry"), Some("false"));
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn overload_tells_clients_to_retry_after_a_second() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .config("max_concurrency = 1\nqueue = 0")
        .start()
        .unwrap();
    let _held = raw(proxy.addr(), &get("/v1/models"));
    upstream.wait_for_requests(1, WAIT).unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(response.header("x-should-retry"), Some("true"));
}

#[test]
fn the_proxys_own_errors_follow_the_api_shape_and_carry_the_access_logs_request_id() {
    let mut serve = serve_process()
        .args(&[
            "--upstream",
            "http://127.0.0.1:9",
            "--env",
            &format!("ANTHROPIC_OAUTH_TOKEN={TOKEN}"),
        ])
        .start()
        .unwrap();
    let mut client = raw(serve.addr(), &get("/v1/models"));
    let response = read_response(&mut client);
    assert_eq!(response.status, 502);
    let body = String::from_utf8_lossy(&response.rest).into_owned();
    assert!(
        body.starts_with(r#"{"type":"error","error":{"type":"api_error","message":"#),
        "{body}"
    );
    let request_id = response
        .header("request-id")
        .expect("a request-id header")
        .to_owned();
    assert_eq!(response.json()["request_id"], request_id.as_str(), "{body}");
    let logged = serve
        .wait_for_lines(1, WAIT, |record| record["target"] == "access")
        .unwrap();
    assert_eq!(logged[0]["request_id"], request_id.as_str());
    assert_eq!(logged[0]["status"], 502);
}

#[test]
fn client_addresses_reach_the_upstream_only_when_configured() {
    let quiet = Scenario::new().token(TOKEN).start().unwrap();
    quiet
        .proxy
        .send(HttpRequest::get("/v1/models").header("x-forwarded-for", "100.64.0.7"))
        .unwrap();
    let seen = quiet.upstream.wait_for_requests(1, WAIT).unwrap();
    assert!(
        seen[0].header("x-forwarded-for").is_none(),
        "{:?}",
        seen[0].headers
    );

    let telling = Scenario::new()
        .token(TOKEN)
        .config("forward_client_address = true")
        .start()
        .unwrap();
    telling.proxy.send(HttpRequest::get("/v1/models")).unwrap();
    let seen = telling.upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[test]
fn a_stream_longer_than_five_seconds_finishes_across_a_shutdown_by_default() {
    let Scene {
        upstream,
        mut proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().route(
            "/v1/messages",
            Reply::sse_numbered(7, Duration::from_secs(1)),
        ))
        .token(TOKEN)
        .start()
        .unwrap();
    let mut client = raw(
        proxy.addr(),
        b"POST /v1/messages HTTP/1.1\r\nhost: proxy.test\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
    );
    let head = read_response(&mut client);
    assert_eq!(head.status, 200);
    upstream.wait_for_requests(1, WAIT).unwrap();
    let started = Instant::now();
    proxy.begin_shutdown();
    let all = read_to_close(&mut client, Duration::from_secs(20)).expect("the stream to end");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&head.rest),
        String::from_utf8_lossy(&all)
    );
    assert!(
        text.contains(r#"data: {"n":7}"#),
        "cut after {:?}: {text}",
        started.elapsed()
    );
    assert!(
        text.ends_with("0\r\n\r\n"),
        "not a complete chunked body: {text}"
    );
    proxy.stop().unwrap();
}
