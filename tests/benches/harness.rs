//! Harness benchmark: the per-request cost of the product filter through the harness next to the same logic
//! called natively, and a VM's cold start (compiling) next to its warm start (compiled-module cache).
//!
//! Run with `cargo bench -p integration-tests --bench harness` (or `make bench`). Figures are printed, never
//! asserted: wall-clock time on a shared machine drifts, so the two sides of each comparison are measured
//! interleaved, batch by batch, in the same run, and the ratio is the figure to read.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use filter::config::FilterConfig;
use filter::credential::Credential;
use filter::engine::{RequestDecision, handle_request, handle_response};
use filter::headers::HeaderList;
use host_harness::{HarnessError, Headers, LogLevel, Plugin, Vm};

/// The flagship configuration, with a rule on each side so the rule engine is on the measured path.
const CONFIG: &str = r#"{"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic",
  "request_rules": [{"when": {"path_prefix": "/v1/"}, "set": {"name": "x-team", "value": "ml"}}],
  "response_rules": [{"set": {"name": "x-served-by", "value": "ai-proxy"}}]}"#;
const TOKEN: &str = "sk-ant-oat01-benchmark-token";

/// A request as a client such as an SDK sends it.
const REQUEST: [(&str, &str); 9] = [
    (":method", "POST"),
    (":path", "/v1/messages"),
    (":authority", "ai"),
    (":scheme", "http"),
    ("content-type", "application/json"),
    ("user-agent", "anthropic-sdk/0.40"),
    ("anthropic-beta", "tools-2024-04-04"),
    ("x-api-key", "client-key"),
    ("accept", "application/json"),
];
const RESPONSE: [(&str, &str); 4] = [
    (":status", "200"),
    ("content-type", "application/json"),
    ("request-id", "req_0123456789"),
    ("server", "upstream"),
];

const BATCHES: usize = 30;
const PER_BATCH: u32 = 2_000;

fn main() -> Result<(), HarnessError> {
    let wasm = Path::new(env!("FILTER_WASM"));
    println!(
        "filter: {} ({} bytes)",
        wasm.display(),
        std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0)
    );

    // Info, as a proxy runs in production: at debug level the filter also formats a line per request.
    let plugin = Plugin::builder()
        .module_file(wasm)
        .plugin_config(CONFIG)
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
        .log_level(LogLevel::Info)
        .build()?;
    let mut vm = plugin.start_vm()?;
    let (config, credential) = native_filter();
    let request: Headers = REQUEST.into();
    let response: Headers = RESPONSE.into();

    // Interleave harness and native batches so drift hits both sides alike.
    let mut harness_ns = Vec::with_capacity(BATCHES);
    let mut native_ns = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        harness_ns.push(per_iteration(|| {
            harness_round_trip(&mut vm, &request, &response)
        })?);
        native_ns.push(per_iteration(|| {
            native_round_trip(&config, &credential);
            Ok(())
        })?);
    }
    let harness = median(&mut harness_ns);
    let native = median(&mut native_ns);
    println!();
    println!("request + response header round trip (median of {BATCHES} batches of {PER_BATCH}):");
    println!(
        "  through the harness (filter.wasm)   {:>9.2} µs",
        harness / 1000.0
    );
    println!(
        "  same logic called natively          {:>9.2} µs",
        native / 1000.0
    );
    println!(
        "  harness / native                    {:>9.1}×",
        harness / native
    );

    let cache = tempfile_dir()?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..5 {
        let round_cache = cache.join(format!("round-{round}"));
        cold.push(start_time(wasm, &round_cache)?);
        warm.push(start_time(wasm, &round_cache)?);
    }
    let cold = median(&mut cold);
    let warm = median(&mut warm);
    println!();
    println!("VM start (build plugin + start one VM, median of 5):");
    println!(
        "  cold (compiles, fills the cache)    {:>9.1} ms",
        cold / 1e6
    );
    println!(
        "  warm (compiled module from cache)   {:>9.1} ms",
        warm / 1e6
    );
    println!(
        "  cold / warm                         {:>9.1}×",
        cold / warm
    );
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

/// One request through the filter: headers in, response headers back, stream ended (on_log, on_done, delete).
fn harness_round_trip(
    vm: &mut Vm,
    request: &Headers,
    response: &Headers,
) -> Result<(), HarnessError> {
    let mut stream = vm.stream()?;
    stream.request_headers(request.clone(), false)?;
    stream.response_headers(response.clone(), false)?;
    black_box(stream.downstream_response_headers()?);
    stream.finish()
}

/// The filter's parsed configuration and credential, as its glue holds them after `on_configure`.
fn native_filter() -> (FilterConfig, Credential) {
    let config = filter::config::parse(CONFIG.as_bytes())
        .unwrap_or_else(|err| exit(&format!("benchmark config: {err}")));
    let credential = filter::credential::resolve(&config.credential, |name| {
        if name == "ANTHROPIC_OAUTH_TOKEN" {
            Ok(TOKEN.to_owned())
        } else {
            Err(std::env::VarError::NotPresent)
        }
    })
    .unwrap_or_else(|err| exit(&format!("benchmark credential: {err}")));
    (config, credential)
}

/// The same pipeline the glue runs, without the ABI: build the header lists, decide, rewrite the response.
fn native_round_trip(config: &FilterConfig, credential: &Credential) {
    let request = HeaderList::from_pairs(REQUEST.iter().map(|(n, v)| (*n, v.as_bytes())));
    let decision = handle_request(config, Some(credential), &request, None);
    let RequestDecision::Forward(forward) = decision else {
        exit("the benchmark request was not forwarded");
    };
    let response = HeaderList::from_pairs(RESPONSE.iter().map(|(n, v)| (*n, v.as_bytes())));
    black_box(handle_response(config, &response, &forward.request));
}

/// Nanoseconds per call of `step`, over one batch.
fn per_iteration(mut step: impl FnMut() -> Result<(), HarnessError>) -> Result<f64, HarnessError> {
    let started = Instant::now();
    for _ in 0..PER_BATCH {
        step()?;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(PER_BATCH))
}

/// Nanoseconds to build a plugin with an on-disk cache and start one VM.
fn start_time(wasm: &Path, cache: &Path) -> Result<f64, HarnessError> {
    let started = Instant::now();
    let plugin = Plugin::builder()
        .module_file(wasm)
        .plugin_config(CONFIG)
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
        .cache_dir(cache)
        .build()?;
    black_box(plugin.start_vm()?);
    Ok(Duration::as_nanos(&started.elapsed()) as f64)
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn tempfile_dir() -> Result<std::path::PathBuf, HarnessError> {
    let dir = std::env::temp_dir().join(format!("harness-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|err| HarnessError::Config {
        setting: "cache_dir",
        reason: err.to_string(),
    })?;
    Ok(dir)
}

fn exit(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1)
}
