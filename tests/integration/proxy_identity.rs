//! `host-harness serve` end to end, the caller identity: identity headers a client sends never reach the
//! filter or the upstream; WhoIs (through the tailscaled stand-in) and trusted front proxies resolve the
//! caller; the filter's access policy matches the `caller.id` property; failures refuse and count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::client::HttpRequest;
use integration_tests::proxy_support::proxy;
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{RecordedRequest, Upstream};
use integration_tests::wait;
use integration_tests::whois::{Outcome, PeerNode, WhoIs};
use serde_json::json;

const TOKEN: &str = "sk-ant-oat01-identity-e2e-token";
const WAIT: Duration = Duration::from_secs(10);
const LOGIN: &str = "tailscale-user-login";

/// The embedded default's credential with an access policy on the `caller.id` property.
fn allow_only(allowed: &[&str]) -> String {
    json!({
        "credential": {"header": "authorization", "prefix": "Bearer ", "source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "preset": "anthropic",
        "access": {"identity": {"property": "caller.id", "allow": allowed}},
    })
    .to_string()
}

/// The `[identity]` table for WhoIs through `whois`, plus `extra` lines.
fn whois_table(whois: &WhoIs, extra: &str) -> String {
    let socket = whois.socket_path().display().to_string();
    format!("[identity]\nmode = \"whois\"\nwhois_socket = {socket:?}\n{extra}")
}

fn alice() -> PeerNode {
    PeerNode::user("alice@example.com", "Alice Example", "laptop")
}

fn localhost() -> std::net::IpAddr {
    std::net::IpAddr::from([127, 0, 0, 1])
}

/// A proxy with one worker in front of an echoing upstream.
fn start(plugin_config: Option<&str>, toml: &str) -> Scene {
    let mut scenario = Scenario::new()
        .token(TOKEN)
        .config(toml)
        .proxy(|proxy| proxy.workers(1));
    if let Some(json) = plugin_config {
        scenario = scenario.plugin_config(json);
    }
    scenario.start().unwrap()
}

/// The probe filter reading every `caller.*` property and handing the results to an echoing upstream
/// as `x-probe-1` .. `x-probe-6`.
fn probe_properties(toml: &str) -> Scene {
    let ops: Vec<serde_json::Value> = PROPERTIES
        .iter()
        .map(|name| json!({"op": "get_property", "path": ["caller", name]}))
        .chain([json!({"op": "emit_results", "map": "request_headers"})])
        .collect();
    Scenario::new()
        .plugin_config(&json!({ "on_request_headers": ops }).to_string())
        .config(toml)
        .proxy(|proxy| proxy.filter(env!("PROBE_WASM")).workers(1))
        .start()
        .unwrap()
}

const PROPERTIES: [&str; 6] = ["id", "login", "display_name", "node", "tags", "source"];

/// What the probe read for each `caller.*` property: `Some(value)` or `None` when absent.
fn properties_seen(request: &RecordedRequest) -> Vec<(&'static str, Option<String>)> {
    PROPERTIES
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let line = request
                .header(&format!("x-probe-{}", index + 1))
                .unwrap_or_default();
            let (_, result) = line.split_once(": ").unwrap_or_default();
            // The probe renders text as `ok "..."`, other bytes as `ok 0x<hex>`, an absent one as `none`.
            let value = if let Some(text) = result.strip_prefix("ok \"") {
                text.strip_suffix('"').map(str::to_owned)
            } else if let Some(hex) = result.strip_prefix("ok 0x") {
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .filter_map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
                    .collect();
                String::from_utf8(bytes).ok()
            } else {
                None
            };
            assert!(
                value.is_some() || result == "none" || result == "not_found",
                "caller.{name}: {line}"
            );
            (*name, value)
        })
        .collect()
}

fn present(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, Option<String>)> {
    PROPERTIES
        .iter()
        .map(|name| {
            let value = pairs
                .iter()
                .find(|(wanted, _)| wanted == name)
                .map(|(_, value)| (*value).to_owned());
            (*name, value)
        })
        .collect()
}

/// One response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    body: Vec<u8>,
}

impl RawResponse {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "status {}: body is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A keep-alive HTTP/1.1 connection written byte by byte, so header spellings reach the proxy exactly as
/// written (a client library would normalise them) and several requests share one TCP connection.
struct RawConnection {
    reader: BufReader<TcpStream>,
}

impl RawConnection {
    fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// `GET /v1/models` with `header_lines` (each `Name: value` as it goes on the wire).
    fn get(&mut self, header_lines: &[&str]) -> RawResponse {
        let mut head = String::from("GET /v1/models HTTP/1.1\r\nHost: proxy.internal\r\n");
        for line in header_lines {
            head.push_str(line);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.reader.get_mut().write_all(head.as_bytes()).unwrap();
        self.read_response()
    }

    fn read_response(&mut self) -> RawResponse {
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size_line = String::new();
                self.reader.read_line(&mut size_line).unwrap();
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap();
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            body.resize(length.unwrap_or(0), 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        RawResponse { status, body }
    }
}

/// Spellings of a forged login a client might try: case variants, whitespace around the value, the
/// `_` spelling, and the property name as a header.
const FORGED_LOGINS: [&[&str]; 6] = [
    &["tailscale-user-login: alice@example.com"],
    &["Tailscale-User-Login: alice@example.com"],
    &["TAILSCALE-USER-LOGIN:\talice@example.com "],
    &[
        "tailscale-user-login: alice@example.com",
        "Tailscale-User-Login: ALICE@EXAMPLE.COM",
    ],
    &["Tailscale_User_Login: alice@example.com"],
    &[
        "caller.id: alice@example.com",
        "Caller-Id: alice@example.com",
    ],
];

#[test]
fn identity_headers_from_a_client_never_reach_the_upstream_by_default() {
    let Scene { upstream, proxy } = start(None, "");
    let mut connection = RawConnection::open(proxy.addr());
    for forged in FORGED_LOGINS {
        let mut lines = forged.to_vec();
        lines.push("tailscale-user-name: Alice Example");
        lines.push("Tailscale-User-Profile-Pic: https://example.com/a.png");
        lines.push("tailscale-app-capabilities: {}");
        let response = connection.get(&lines);
        assert_eq!(response.status, 200, "{forged:?}");
    }
    let seen = upstream
        .wait_for_requests(FORGED_LOGINS.len(), WAIT)
        .unwrap();
    for request in &seen {
        for (name, value) in &request.headers {
            assert!(
                !name.starts_with("tailscale"),
                "{name}: {value} reached the upstream"
            );
        }
    }
    // A header named like the property is only a header: it passes, and is never the property.
    assert_eq!(
        seen.last().unwrap().header("caller.id"),
        Some("alice@example.com")
    );
}

#[test]
fn a_forged_login_does_not_pass_an_identity_allow_list_by_default() {
    let Scene { upstream, proxy } = start(Some(&allow_only(&["alice@example.com"])), "");
    let mut connection = RawConnection::open(proxy.addr());
    for forged in FORGED_LOGINS {
        let response = connection.get(forged);
        assert_eq!(response.status, 403, "{forged:?}");
        assert_eq!(
            response.json()["error"]["message"],
            "the request carries no caller identity",
            "{forged:?}"
        );
    }
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn no_caller_property_exists_without_an_identity_source() {
    let Scene { upstream, proxy } = probe_properties("");
    let response = proxy
        .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(properties_seen(&seen[0]), present(&[]));
}

#[test]
fn whois_gives_a_users_node_its_login_and_the_allow_list_passes_it() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = start(
        Some(&allow_only(&["alice@example.com"])),
        &whois_table(&whois, ""),
    );
    // Even the forged header of someone else changes nothing: the peer is Alice's laptop.
    let response = proxy
        .send(HttpRequest::get("/v1/models").header(LOGIN, "mallory@example.com"))
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen[0].header(LOGIN), None);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    let asked = whois.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].method, "GET");
    assert!(
        asked[0]
            .path
            .starts_with("/localapi/v0/whois?addr=127.0.0.1%3A"),
        "{}",
        asked[0].path
    );
    assert_eq!(asked[0].header("host"), Some("local-tailscaled.sock"));
}

#[test]
fn whois_sets_every_caller_property_for_a_users_node() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = probe_properties(&whois_table(&whois, ""));
    assert_eq!(
        proxy.send(HttpRequest::get("/v1/models")).unwrap().status,
        200
    );
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(
        properties_seen(&seen[0]),
        present(&[
            ("id", "alice@example.com"),
            ("login", "alice@example.com"),
            ("display_name", "Alice Example"),
            ("node", "laptop.tail1234.ts.net"),
            ("source", "whois"),
        ])
    );
}

#[test]
fn whois_identifies_a_tagged_node_by_its_tags() {
    let whois = WhoIs::builder()
        .peer(
            localhost(),
            PeerNode::tagged(&["tag:ci", "tag:server"], "runner"),
        )
        .start()
        .unwrap();
    let Scene { upstream, proxy } = probe_properties(&whois_table(&whois, ""));
    assert_eq!(
        proxy.send(HttpRequest::get("/v1/models")).unwrap().status,
        200
    );
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(
        properties_seen(&seen[0]),
        present(&[
            ("id", "tag:ci,tag:server"),
            ("node", "runner.tail1234.ts.net"),
            ("tags", "tag:ci,tag:server"),
            ("source", "whois"),
        ])
    );
    drop(proxy);

    // The access policy allows a tagged node by one of its tags, and refuses it by a user's login.
    let Scene {
        upstream,
        proxy: by_tag,
    } = start(Some(&allow_only(&["tag:ci"])), &whois_table(&whois, ""));
    assert_eq!(
        by_tag.send(HttpRequest::get("/v1/models")).unwrap().status,
        200
    );
    assert_eq!(upstream.request_count(), 1);
    let Scene {
        upstream,
        proxy: by_login,
    } = start(
        Some(&allow_only(&["alice@example.com"])),
        &whois_table(&whois, ""),
    );
    assert_eq!(
        by_login
            .send(HttpRequest::get("/v1/models"))
            .unwrap()
            .status,
        403
    );
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn whois_refuses_a_peer_tailscaled_does_not_know() {
    let whois = WhoIs::builder().start().unwrap();
    let Scene { upstream, proxy } = start(None, &whois_table(&whois, ""));
    let response = proxy
        .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
        .unwrap();
    assert_eq!(response.status, 403);
    let body = response.json().unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(
        body["error"]["message"],
        "the caller is not a known tailnet peer"
    );
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(
        proxy
            .metric(r#"proxy_errors_total{kind="identity_unknown"}"#)
            .unwrap(),
        1.0
    );
}

#[test]
fn whois_with_tailscaled_down_refuses_with_503_and_counts() {
    let mut whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let table = whois_table(&whois, "");
    whois.stop();
    let Scene { upstream, proxy } = start(None, &table);
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json().unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(
        body["error"]["message"],
        "caller identity lookup failed: tailscaled unreachable"
    );
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(
        proxy
            .metric(r#"proxy_errors_total{kind="identity_unavailable"}"#)
            .unwrap(),
        1.0
    );
}

#[test]
fn whois_failures_of_every_kind_refuse_and_are_never_cached() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = start(None, &whois_table(&whois, ""));
    let failures = [
        (
            Outcome::Status(500, "internal error".into()),
            "tailscaled answered 500",
        ),
        (
            Outcome::Status(403, "whois access denied".into()),
            "tailscaled answered 403",
        ),
        (Outcome::Malformed, "malformed answer from tailscaled"),
        (
            Outcome::Oversized(300 * 1024),
            "answer from tailscaled too large",
        ),
        (Outcome::Close, "tailscaled connection failed"),
    ];
    let mut connection = RawConnection::open(proxy.addr());
    for (outcome, cause) in &failures {
        whois.plan(outcome.clone());
        let response = connection.get(&[]);
        assert_eq!(response.status, 503, "{outcome:?}");
        assert_eq!(
            response.json()["error"]["message"],
            format!("caller identity lookup failed: {cause}"),
            "{outcome:?}"
        );
    }
    // The same connection asks again after every failure, and the next answer serves it.
    assert_eq!(connection.get(&[]).status, 200);
    assert_eq!(whois.lookups(), failures.len() + 1);
    assert_eq!(upstream.request_count(), 1);
    assert_eq!(
        proxy
            .metric(r#"proxy_errors_total{kind="identity_unavailable"}"#)
            .unwrap(),
        failures.len() as f64
    );
}

#[test]
fn whois_slower_than_its_timeout_refuses_with_503() {
    let whois = WhoIs::builder()
        .peer(localhost(), alice())
        .default_outcome(Outcome::Hang)
        .start()
        .unwrap();
    let Scene { upstream, proxy } = start(None, &whois_table(&whois, "whois_timeout = \"300ms\""));
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 503);
    assert_eq!(
        response.json().unwrap()["error"]["message"],
        "caller identity lookup failed: tailscaled did not answer within 300ms"
    );
    assert_eq!(upstream.request_count(), 0);
    assert_eq!(
        proxy
            .metric(r#"proxy_errors_total{kind="identity_unavailable"}"#)
            .unwrap(),
        1.0
    );
}

#[test]
fn whois_is_asked_once_per_connection_within_the_cache_ttl() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = start(None, &whois_table(&whois, ""));
    let mut first = RawConnection::open(proxy.addr());
    for _ in 0..3 {
        assert_eq!(first.get(&[]).status, 200);
    }
    assert_eq!(whois.lookups(), 1);
    // A new connection is a new peer address: it is asked about again.
    let mut second = RawConnection::open(proxy.addr());
    assert_eq!(second.get(&[]).status, 200);
    assert_eq!(first.get(&[]).status, 200);
    assert_eq!(whois.lookups(), 2);
    assert_eq!(upstream.request_count(), 5);
}

#[test]
fn whois_is_asked_again_when_the_cached_answer_expires() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = start(
        Some(&allow_only(&["alice@example.com"])),
        &whois_table(&whois, "whois_cache_ttl = \"200ms\""),
    );
    let mut connection = RawConnection::open(proxy.addr());
    assert_eq!(connection.get(&[]).status, 200);
    assert_eq!(whois.lookups(), 1);
    // The node changes hands; once the answer is older than the ttl, the connection learns it.
    whois.set_peer(
        localhost(),
        PeerNode::user("bob@example.com", "Bob", "laptop"),
    );
    let mut statuses = Vec::new();
    wait::until("a second whois lookup", WAIT, || {
        statuses.push(connection.get(&[]).status);
        whois.lookups() >= 2
    })
    .unwrap();
    assert_eq!(statuses.last(), Some(&403), "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1]
            .iter()
            .all(|status| *status == 200),
        "{statuses:?}"
    );
    assert_eq!(upstream.request_count(), statuses.len());
}

/// `[identity]` for a trusted front proxy at `cidr`, plus `extra` lines.
fn trusted_table(cidr: &str, extra: &str) -> String {
    format!("[identity]\nmode = \"trusted_proxy\"\ntrusted_proxies = [\"{cidr}\"]\n{extra}")
}

#[test]
fn trusted_proxy_headers_from_a_trusted_peer_become_the_caller() {
    let Scene { upstream, proxy } = probe_properties(&trusted_table("127.0.0.1/32", ""));
    let response = proxy
        .send(
            HttpRequest::get("/v1/models")
                .header(LOGIN, "alice@example.com")
                .header("tailscale-user-name", "=?utf-8?q?Alice_Exampl=C3=A9?="),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(
        properties_seen(&seen[0]),
        present(&[
            ("id", "alice@example.com"),
            ("login", "alice@example.com"),
            ("display_name", "Alice Examplé"),
            ("source", "trusted_proxy"),
        ])
    );
    // Read, then removed: forward_headers is off.
    assert_eq!(seen[0].header(LOGIN), None);
    assert_eq!(seen[0].header("tailscale-user-name"), None);

    let Scene {
        upstream,
        proxy: allowed,
    } = start(
        Some(&allow_only(&["alice@example.com"])),
        &trusted_table("127.0.0.1/32", ""),
    );
    let allowed_status = allowed
        .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
        .unwrap()
        .status;
    assert_eq!(allowed_status, 200);
    // Without the header a trusted peer's request carries no identity; the policy decides.
    let anonymous = allowed.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(anonymous.status, 403);
    assert_eq!(upstream.request_count(), 1);
}

#[test]
fn trusted_proxy_headers_from_an_untrusted_peer_are_removed() {
    let Scene { upstream, proxy } = start(
        Some(&allow_only(&["alice@example.com"])),
        &trusted_table("10.0.0.0/8", ""),
    );
    let mut connection = RawConnection::open(proxy.addr());
    for forged in FORGED_LOGINS {
        let response = connection.get(forged);
        assert_eq!(response.status, 403, "{forged:?}");
    }
    assert_eq!(upstream.request_count(), 0);

    let Scene {
        upstream,
        proxy: probe,
    } = probe_properties(&trusted_table("10.0.0.0/8", ""));
    let response = probe
        .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(properties_seen(&seen[0]), present(&[]));
    assert_eq!(seen[0].header(LOGIN), None);
}

#[test]
fn forward_headers_sends_the_resolved_identity_upstream_only_when_on() {
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let Scene { upstream, proxy } = start(None, &whois_table(&whois, "forward_headers = true"));
    let response = proxy
        .send(
            HttpRequest::get("/v1/models")
                .header(LOGIN, "mallory@example.com")
                .header("tailscale-user-name", "Mallory"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen[0].header_values(LOGIN), ["alice@example.com"]);
    assert_eq!(
        seen[0].header_values("tailscale-user-name"),
        ["Alice Example"]
    );
    drop(proxy);

    // A tagged node has no user: nothing is forwarded for it, as with `tailscale serve`.
    whois.set_peer(localhost(), PeerNode::tagged(&["tag:ci"], "runner"));
    let Scene {
        upstream,
        proxy: tagged,
    } = start(None, &whois_table(&whois, "forward_headers = true"));
    assert_eq!(
        tagged
            .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
            .unwrap()
            .status,
        200
    );
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen[0].header(LOGIN), None);

    // Through a trusted front proxy, forwarding is the proxy's own setting too.
    let Scene {
        upstream,
        proxy: trusted,
    } = start(
        None,
        &trusted_table("127.0.0.1/32", "forward_headers = true"),
    );
    assert_eq!(
        trusted
            .send(HttpRequest::get("/v1/models").header(LOGIN, "alice@example.com"))
            .unwrap()
            .status,
        200
    );
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert_eq!(seen[0].header_values(LOGIN), ["alice@example.com"]);
}

#[test]
fn identity_settings_the_proxy_cannot_use_name_their_field() {
    let cases = [
        ("[identity]\nmode = \"tailnet\"", "identity.mode"),
        (
            "[identity]\nmode = \"trusted_proxy\"",
            "identity.trusted_proxies",
        ),
        (
            "[identity]\nmode = \"trusted_proxy\"\ntrusted_proxies = [\"10.0.0.1/8\"]",
            "identity.trusted_proxies[0]",
        ),
        (
            "[identity]\nwhois_timeout = \"0s\"",
            "identity.whois_timeout",
        ),
    ];
    for (toml, field) in cases {
        let err = proxy().config(toml).start().unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains(field), "{toml}: {message}");
    }
}

/// Kills the `serve` child when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_flags_select_whois_and_the_access_log_names_the_caller() {
    // `target/<profile>/host-harness`, next to this test binary's `deps/` directory.
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("host-harness");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p host-harness-cli`",
        binary.display()
    );
    let whois = WhoIs::builder().peer(localhost(), alice()).start().unwrap();
    let upstream = Upstream::echo().unwrap();
    let mut child = Command::new(binary)
        .arg("serve")
        .env_remove("RUST_LOG")
        .env_remove("ANTHROPIC_OAUTH_TOKEN")
        .env_remove("ANTHROPIC_API_KEY")
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--workers", "1", "--upstream", &upstream.url("")])
        .args(["--filter", env!("FILTER_WASM")])
        .args(["--env", &format!("ANTHROPIC_OAUTH_TOKEN={TOKEN}")])
        .args(["--identity", "whois", "--whois-socket"])
        .arg(whois.socket_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _child = KillOnDrop(child);
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let ready = wait::line(&lines, "proxy ready", Duration::from_secs(60)).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let addr: SocketAddr = ready["listen"].as_str().unwrap().parse().unwrap();

    let response = integration_tests::client::send(
        addr,
        HttpRequest::get("/v1/models").header(LOGIN, "mallory@example.com"),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let access = wait::line(&lines, "\"target\":\"access\"", WAIT).unwrap();
    let record: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(record["caller"], "alice@example.com", "{access}");
    // Header values are never logged, forged or not.
    assert!(!access.contains("mallory"), "{access}");
    assert_eq!(whois.lookups(), 1);
}
