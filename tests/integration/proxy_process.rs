//! `host-harness serve` as an operator runs it: the real binary as a child process, stopped with SIGTERM
//! while a stream is in flight, and refusing bad configuration with one line and a non-zero exit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::upstream::{Reply, Upstream};
use integration_tests::wait;

const TOKEN: &str = "sk-ant-oat01-proxy-process";

/// `target/debug/host-harness`: the binary next to this test binary's `deps/` directory.
fn harness_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("host-harness");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p host-harness-cli` (make test does)",
        binary.display()
    );
    binary
}

fn serve() -> Command {
    let mut command = Command::new(harness_binary());
    command
        .arg("serve")
        .env_remove("RUST_LOG")
        .env_remove("ANTHROPIC_OAUTH_TOKEN");
    command
}

/// A running `serve` child, killed on drop if the test did not stop it.
struct ServeProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl ServeProcess {
    fn start(upstream: &Upstream) -> Self {
        Self::with_drain_timeout(upstream, "10s")
    }

    fn with_drain_timeout(upstream: &Upstream, drain_timeout: &str) -> Self {
        let mut child = serve()
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--workers",
                "2",
            ])
            .args([
                "--upstream",
                &upstream.url(""),
                "--filter",
                env!("FILTER_WASM"),
            ])
            .args([
                "--env",
                &format!("ANTHROPIC_OAUTH_TOKEN={TOKEN}"),
                "--drain-timeout",
                drain_timeout,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = wait::line(&lines, "proxy ready", Duration::from_secs(60)).unwrap();
        let record: serde_json::Value = serde_json::from_str(&ready).unwrap();
        let addr = record["listen"].as_str().unwrap().parse().unwrap();
        let admin = record["admin_listen"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            lines,
            addr,
            admin,
        }
    }

    /// Starts a streaming request, waits until the upstream has it, then sends SIGTERM; the handle
    /// yields the client's result.
    fn terminate_during_a_stream(
        &self,
        upstream: &Upstream,
    ) -> std::thread::JoinHandle<anyhow::Result<client::HttpResponse>> {
        let addr = self.addr;
        let stream = std::thread::spawn(move || {
            client::send(
                addr,
                HttpRequest::post("/v1/messages").body("{}"),
                Duration::from_secs(30),
            )
        });
        upstream
            .wait_for_requests(1, Duration::from_secs(10))
            .unwrap();
        self.terminate();
        stream
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_lets_the_stream_in_flight_finish_then_exits_zero() {
    let upstream = Upstream::builder()
        .route(
            "/v1/messages",
            Reply::sse_numbered(6, Duration::from_millis(200)),
        )
        .start()
        .unwrap();
    let mut proxy = ServeProcess::start(&upstream);
    assert_eq!(
        client::send(
            proxy.admin,
            HttpRequest::get("/readyz"),
            Duration::from_secs(5)
        )
        .unwrap()
        .status,
        200
    );

    let stream = proxy.terminate_during_a_stream(&upstream);
    wait::line(&proxy.lines, "draining", Duration::from_secs(10)).unwrap();

    let response = stream.join().unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.body_text().contains("\"n\":6"),
        "the stream was cut: {}",
        response.body_text()
    );

    let status = proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // The request was logged when it ended, without any header value.
    let access = wait::line(
        &proxy.lines,
        "\"target\":\"access\"",
        Duration::from_secs(5),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(record["status"], 200);
    assert_eq!(record["path"], "/v1/messages");
    assert!(!access.contains(TOKEN));
}

#[test]
fn a_stream_still_running_at_the_drain_timeout_is_logged_as_cut_by_it() {
    let upstream = Upstream::builder()
        .route(
            "/v1/messages",
            Reply::sse_numbered(50, Duration::from_millis(100)),
        )
        .start()
        .unwrap();
    let mut proxy = ServeProcess::with_drain_timeout(&upstream, "300ms");
    let stream = proxy.terminate_during_a_stream(&upstream);
    let status = proxy.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(stream.join().unwrap().is_err(), "the stream was not cut");
    let access = wait::line(
        &proxy.lines,
        "\"target\":\"access\"",
        Duration::from_secs(5),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(
        record["aborted"], "the drain timeout passed before the response ended",
        "{access}"
    );
}

#[test]
fn a_complete_sized_response_is_logged_as_served_not_aborted() {
    let upstream = Upstream::builder()
        .route(
            "/v1/messages",
            Reply::json(200, &serde_json::json!({"id": "msg_1"})),
        )
        .start()
        .unwrap();
    let proxy = ServeProcess::start(&upstream);
    let response = client::send(
        proxy.addr,
        HttpRequest::get("/v1/messages"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.body_text().contains("msg_1"));

    let access = wait::line(
        &proxy.lines,
        "\"target\":\"access\"",
        Duration::from_secs(10),
    )
    .unwrap();
    let record: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(record["message"], "request", "{access}");
    assert_eq!(record["level"], "INFO", "{access}");
    assert!(record.get("aborted").is_none(), "{access}");
}

/// Runs `serve` with arguments that must be refused; returns (exit code, stderr).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let output = serve().args(args).stdin(Stdio::null()).output().unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn assert_one_line(stderr: &str, expected: &[&str]) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    for part in expected {
        assert!(stderr.contains(part), "{part:?} missing from: {stderr}");
    }
}

#[test]
fn bad_configuration_is_refused_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nlisten_port = 8080\n").unwrap();
    let (code, stderr) = refused(&[
        "--config",
        config.to_str().unwrap(),
        "--filter",
        env!("FILTER_WASM"),
    ]);
    assert_eq!(code, Some(2));
    assert_one_line(&stderr, &["proxy.toml", "line 2", "listen_port"]);

    let (code, stderr) = refused(&["--listen", "localhost", "--filter", env!("FILTER_WASM")]);
    assert_eq!(code, Some(2));
    assert_one_line(&stderr, &["--listen", "localhost"]);

    let (code, stderr) = refused(&[
        "--config",
        dir.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(2));
    assert_one_line(&stderr, &["missing.toml"]);

    let plugin = dir.path().join("plugin.json");
    std::fs::write(&plugin, r#"{"credential": {"source": {"inline": ""}}}"#).unwrap();
    let (code, stderr) = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--filter",
        env!("FILTER_WASM"),
        "--plugin-config",
        plugin.to_str().unwrap(),
        "--env",
        "SECRET=sk-ant-never-printed",
    ]);
    assert_eq!(code, Some(2));
    assert_one_line(&stderr, &["credential.source.inline"]);
    assert!(!stderr.contains("sk-ant-never-printed"));
}
