//! The `host-harness` binary's one-shot subcommands, run as a user runs them: `validate`, `dry-run`, `wasi-run`;
//! and the README's commands on the files in `examples/`, as written.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const TOKEN: &str = "sk-ant-oat01-cli-token";

/// The `host-harness` binary of this build (`target/<profile>/host-harness`, next to the test's `deps/`).
fn harness() -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let binary = profile_dir.join("host-harness");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p host-harness-cli`",
        binary.display()
    );
    Command::new(binary)
}

fn config_file(dir: &tempfile::TempDir, name: &str, json: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, json).unwrap();
    path
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

const GOOD: &str =
    r#"{"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic"}"#;

#[test]
fn validate_accepts_a_good_configuration_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "good.json", GOOD);
    let (code, stdout, stderr) = run(harness()
        .args(["validate", "--filter", env!("FILTER_WASM"), "--config"])
        .arg(&config));
    assert_eq!(code, 0, "stdout: {stdout} stderr: {stderr}");
    assert!(stdout.contains("accepted"), "{stdout}");
}

#[test]
fn validate_uses_the_workspace_filter_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "good.json", GOOD);
    let (code, _, stderr) = run(harness().arg("validate").arg("--config").arg(&config));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn validate_prints_the_filters_own_error_in_one_line_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "bad.json",
        r#"{"credential": {"source": {"env": "T"}}, "request_rules": [{"set": {"name": "x y", "value": "1"}}]}"#,
    );
    let (code, stdout, stderr) = run(harness()
        .args(["validate", "--filter", env!("FILTER_WASM"), "--config"])
        .arg(&config));
    assert_eq!(code, 1, "stdout: {stdout} stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("request_rules[0].set.name"), "{stderr}");
}

#[test]
fn validate_exits_one_for_an_unreadable_configuration() {
    let (code, _, stderr) = run(harness().args([
        "validate",
        "--filter",
        env!("FILTER_WASM"),
        "--config",
        "/nonexistent/plugin.json",
    ]));
    assert_eq!(code, 1);
    assert!(stderr.contains("/nonexistent/plugin.json"), "{stderr}");
}

#[test]
fn dry_run_prints_the_upstream_request_with_the_credential_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "good.json", GOOD);
    let env = format!("ANTHROPIC_OAUTH_TOKEN={TOKEN}");
    let (code, stdout, stderr) = run(harness()
        .args([
            "dry-run",
            "--filter",
            env!("FILTER_WASM"),
            "--env",
            &env,
            "--method",
            "POST",
            "--path",
            "/v1/messages",
        ])
        .args([
            "--authority",
            "ai",
            "-H",
            "x-api-key: client-key",
            "-H",
            "anthropic-beta: tools-2024",
        ])
        .arg("--config")
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains(TOKEN), "{stdout}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["action"], "continue");
    assert_eq!(out["local_response"], Value::Null);
    let headers: Vec<(String, String)> =
        serde_json::from_value(out["request_headers"].clone()).unwrap();
    let get = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get(":method"), ["POST"]);
    assert_eq!(get(":path"), ["/v1/messages"]);
    assert_eq!(get(":authority"), ["ai"]);
    assert_eq!(get("authorization"), ["[REDACTED]"]);
    assert!(get("x-api-key").is_empty());
    assert_eq!(get("anthropic-beta"), ["tools-2024,oauth-2025-04-20"]);
}

#[test]
fn dry_run_shows_secrets_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        "key.json",
        r#"{"credential": {"header": "x-goog-api-key", "source": {"env": "K"}}}"#,
    );
    let base = |show: bool| {
        let mut command = harness();
        command
            .args([
                "dry-run",
                "--filter",
                env!("FILTER_WASM"),
                "--env",
                "K=goog-secret",
                "--config",
            ])
            .arg(&config);
        if show {
            command.arg("--show-secrets");
        }
        run(&mut command)
    };
    let (code, hidden, _) = base(false);
    assert_eq!(code, 0);
    assert!(
        !hidden.contains("goog-secret") && hidden.contains("[REDACTED]"),
        "the configured credential header is redacted: {hidden}"
    );
    let (code, shown, _) = base(true);
    assert_eq!(code, 0);
    assert!(shown.contains("goog-secret"), "{shown}");
}

#[test]
fn dry_run_reports_a_local_response() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "good.json", GOOD);
    let (code, stdout, stderr) = run(harness()
        .args(["dry-run", "--filter", env!("FILTER_WASM"), "--config"])
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["action"], "local_response");
    assert_eq!(out["local_response"]["status"], 503);
    let body: Value =
        serde_json::from_str(out["local_response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "credential_unavailable");
}

#[test]
fn dry_run_exits_two_with_one_line_when_nothing_can_run() {
    let dir = tempfile::tempdir().unwrap();
    let good = config_file(&dir, "good.json", GOOD);
    let bad = config_file(&dir, "bad.json", r#"{"credential": {}}"#);
    let not_wasm = config_file(&dir, "not.wasm", "this is not a wasm module");
    let cases: [(&[&str], &PathBuf, &str); 3] = [
        (
            &["--filter", env!("FILTER_WASM")],
            &bad,
            "credential.source",
        ),
        (&["--filter", not_wasm.to_str().unwrap()], &good, "not.wasm"),
        (
            &["--filter", "/nonexistent/filter.wasm"],
            &good,
            "/nonexistent/filter.wasm",
        ),
    ];
    for (filter_args, config, expected) in cases {
        let (code, stdout, stderr) = run(harness()
            .arg("dry-run")
            .args(filter_args)
            .arg("--config")
            .arg(config));
        assert_eq!(code, 2, "{filter_args:?}: {stdout} {stderr}");
        assert!(stdout.is_empty());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
}

#[test]
fn wasi_run_refuses_a_module_that_is_not_a_command() {
    let (code, _, stderr) = run(harness().args(["wasi-run", env!("FILTER_WASM")]));
    assert_eq!(code, 2);
    assert!(stderr.contains("_start"), "{stderr}");
}

/// The repository's `examples/` folder, whose files the README's commands name.
fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("examples")
}

#[test]
fn every_example_plugin_configuration_is_accepted_by_validate() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        seen += 1;
        // As the README writes it: `host-harness validate --config examples/<file>.json`.
        let (code, stdout, stderr) = run(harness()
            .args(["validate", "--filter", env!("FILTER_WASM"), "--config"])
            .arg(&path));
        assert_eq!(code, 0, "{}: {stdout} {stderr}", path.display());
    }
    assert!(seen >= 2, "examples/ holds {seen} plugin configurations");
}

#[test]
fn the_readmes_dry_run_of_the_api_key_example_sends_the_key_and_drops_the_clients_bearer() {
    let config = examples_dir().join("plugin-api-key.json");
    let (code, stdout, stderr) = run(harness()
        .args(["dry-run", "--filter", env!("FILTER_WASM"), "--config"])
        .arg(&config)
        .args([
            "--env",
            "ANTHROPIC_API_KEY=x",
            "--method",
            "POST",
            "--path",
            "/v1/messages",
            "-H",
            "authorization: Bearer client-token",
        ]));
    assert_eq!(code, 0, "{stderr}");
    let out: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(out["action"], "continue", "{out}");
    let headers: Vec<(String, String)> =
        serde_json::from_value(out["request_headers"].clone()).unwrap();
    let values = |name: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(values("x-api-key"), ["[REDACTED]"]);
    assert!(values("authorization").is_empty(), "{out}");
    assert_eq!(values("anthropic-version"), ["2023-06-01"]);
    // An API key gets no OAuth beta flag.
    assert!(
        values("anthropic-beta")
            .iter()
            .all(|v| !v.contains("oauth")),
        "{out}"
    );
}

#[test]
fn the_local_proxy_example_loads_and_points_at_its_plugin_configuration() {
    let overrides = host_harness_cli::proxy::config::Overrides {
        filter: Some(PathBuf::from(env!("FILTER_WASM"))),
        ..Default::default()
    };
    let config = host_harness_cli::proxy::config::ProxyConfig::load(
        Some(&examples_dir().join("proxy-local.toml")),
        &overrides,
        |key| (key == "ANTHROPIC_API_KEY").then(|| "local-test-key".to_owned()),
    )
    .unwrap();
    assert_eq!(config.upstream.to_string(), "http://127.0.0.1:9000");
    assert_eq!(
        config.plugin_config,
        std::fs::read(examples_dir().join("plugin-api-key.json")).unwrap()
    );
    assert_eq!(config.default_credential, None);
    assert!(config.vm_env.contains_key("ANTHROPIC_API_KEY"));
}
