//! `host-harness dry-run`: runs one request through the filter and prints, as one JSON object, what the
//! upstream would receive or the local response the client would get.
//!
//! Credential values are printed as `[REDACTED]` unless `--show-secrets` is given: the output of a dry run
//! ends up in CI logs and bug reports.

use std::process::ExitCode;

use clap::Args;
use host_harness::{Action, Headers};
use serde_json::{Value, json};

use super::{FilterArgs, parse_header};

/// What replaces a credential value in the output.
const REDACTED: &str = "[REDACTED]";

/// Header names whose values are credentials whatever the filter's configuration says.
const ALWAYS_SENSITIVE: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Arguments of `dry-run`.
#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// The filter and its configuration.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// The request path (with query).
    #[arg(long, default_value = "/")]
    pub path: String,
    /// The request authority (Host).
    #[arg(long, default_value = "localhost")]
    pub authority: String,
    /// A request header 'name: value'; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Print credential values instead of [REDACTED].
    #[arg(long)]
    pub show_secrets: bool,
}

/// Runs the request and prints the outcome; exit 2 with one line when the filter could not be loaded.
pub fn run(args: &DryRunArgs) -> ExitCode {
    match outcome(args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{}", super::one_line(&message));
            ExitCode::from(2)
        }
    }
}

/// Builds the JSON outcome, or the one-line reason the filter could not run.
fn outcome(args: &DryRunArgs) -> Result<Value, String> {
    let (config, mut vm) = args.filter.start_vm().map_err(|err| err.to_string())?;
    let sensitive = sensitive_headers(&config);
    let redact = |headers: &Headers| header_pairs(headers, &sensitive, args.show_secrets);

    let mut request = Headers::new();
    request.add(":method", &args.method);
    request.add(":path", &args.path);
    request.add(":authority", &args.authority);
    request.add(":scheme", "http");
    for (name, value) in &args.headers {
        if name.starts_with(':') {
            request.replace(name, value);
        } else {
            request.add(name, value);
        }
    }

    let mut stream = vm.stream().map_err(|err| err.to_string())?;
    let action = stream
        .request_headers(request, true)
        .map_err(|err| format!("the filter failed: {err}"))?;
    let result = if let Some(local) = stream.local_response() {
        json!({
            "action": "local_response",
            "request_headers": [],
            "local_response": {
                "status": local.status,
                "headers": redact(&local.headers),
                "body": String::from_utf8_lossy(&local.body),
            },
        })
    } else {
        let forwarded = stream
            .upstream_request_headers()
            .map_err(|err| err.to_string())?;
        json!({
            "action": match action { Action::Continue => "continue", Action::Pause => "pause" },
            "request_headers": redact(forwarded),
            "local_response": Value::Null,
        })
    };
    // Ending the stream runs on_done/on_log like a proxy would; a failure there is still worth reporting.
    stream
        .finish()
        .map_err(|err| format!("the filter failed at the end of the stream: {err}"))?;
    Ok(result)
}

/// The credential header named by the plugin configuration (`credential.header`), plus the usual ones.
fn sensitive_headers(config: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = ALWAYS_SENSITIVE
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    let configured = serde_json::from_slice::<Value>(config)
        .ok()
        .and_then(|root| {
            root.get("credential")?
                .get("header")?
                .as_str()
                .map(str::to_ascii_lowercase)
        });
    if let Some(name) = configured.filter(|name| !names.contains(name)) {
        names.push(name);
    }
    names
}

/// Headers as `[[name, value], ...]`, credential values redacted unless asked otherwise.
fn header_pairs(headers: &Headers, sensitive: &[String], show_secrets: bool) -> Value {
    headers
        .iter()
        .map(|(name, value)| {
            let name = String::from_utf8_lossy(name);
            let hide = !show_secrets && sensitive.iter().any(|s| s.eq_ignore_ascii_case(&name));
            let value = if hide {
                REDACTED.into()
            } else {
                String::from_utf8_lossy(value)
            };
            json!([name, value])
        })
        .collect()
}
