//! Harness benchmark: the per-request cost of the product filter through the harness next to the same logic
//! called natively, and a VM's cold start (compiling) next to its warm start (compiled-module cache).
//!
//! Run with `cargo bench -p integration-tests --bench harness` (or `make bench`). Figures are printed, never
//! asserted: wall-clock time on a shared machine drifts, so the two sides of each comparison are measured
//! interleaved, batch by batch, in the same run, and the ratio is the figure to read.
//!
//! Knobs for profiling runs (under `valgrind --tool=callgrind`, say), all optional environment variables:
//! `BENCH_BATCHES` and `BENCH_PER_BATCH` (default 30 and 2000), `BENCH_FILTER_WASM` (another build of the
//! filter, to compare two builds with one benchmark binary), `BENCH_ONLY=harness`, `usage-off` or `native`
//! (measure one of the three only, so a profile holds nothing else), `BENCH_VM_START=0` (skip the VM start figures),
//! `BENCH_CACHE_DIR` (compile the measured plugin through this module cache: a profiled run then skips
//! compiling, and the cached module's symbols name the guest's compiled functions).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use filter::config::FilterConfig;
use filter::credential::Credential;
use filter::engine::{RequestDecision, handle_request, handle_response, unread_response_edits};
use filter::headers::{HeaderEdit, HeaderList};
use host_harness::{HarnessError, Headers, LogLevel, Plugin, Vm};

/// The flagship configuration, with a rule on each side so the rule engine is on the measured path.
/// Usage accounting is on, as the Anthropic preset has it by default.
const CONFIG: &str = r#"{"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic",
  "request_rules": [{"when": {"path_prefix": "/v1/"}, "set": {"name": "x-team", "value": "ml"}}],
  "response_rules": [{"set": {"name": "x-served-by", "value": "ai-proxy"}}]}"#;
/// The same with usage accounting off: the credential, rules and preset alone.
const CONFIG_USAGE_OFF: &str = r#"{"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic",
  "request_rules": [{"when": {"path_prefix": "/v1/"}, "set": {"name": "x-team", "value": "ml"}}],
  "response_rules": [{"set": {"name": "x-served-by", "value": "ai-proxy"}}],
  "usage": {"enabled": false}}"#;
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

/// How much to measure; the defaults are the benchmark as documented, the environment can narrow it.
struct Knobs {
    batches: usize,
    per_batch: u32,
    wasm: PathBuf,
    harness: bool,
    usage_off: bool,
    native: bool,
    vm_start: bool,
    cache_dir: Option<PathBuf>,
}

impl Knobs {
    fn from_env() -> Self {
        let only = std::env::var("BENCH_ONLY").unwrap_or_default();
        Self {
            batches: env_number("BENCH_BATCHES").unwrap_or(30),
            per_batch: env_number("BENCH_PER_BATCH").unwrap_or(2_000),
            wasm: std::env::var_os("BENCH_FILTER_WASM")
                .map_or_else(|| PathBuf::from(env!("FILTER_WASM")), PathBuf::from),
            harness: only.is_empty() || only == "harness",
            usage_off: only.is_empty() || only == "usage-off",
            native: only.is_empty() || only == "native",
            vm_start: std::env::var("BENCH_VM_START").map_or(true, |value| value != "0"),
            cache_dir: std::env::var_os("BENCH_CACHE_DIR").map(PathBuf::from),
        }
    }
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    match value.parse() {
        Ok(number) => Some(number),
        Err(_) => exit(&format!("{name}={value}: not a number")),
    }
}

fn main() -> Result<(), HarnessError> {
    let knobs = Knobs::from_env();
    if let Some(cache) = std::env::var_os(START_ONCE) {
        println!("{}", start_time(&knobs.wasm, Path::new(&cache))?);
        return Ok(());
    }
    let (batches, per_batch) = (knobs.batches, knobs.per_batch);
    let wasm = knobs.wasm.as_path();
    println!(
        "filter: {} ({} bytes)",
        wasm.display(),
        std::fs::metadata(wasm).map(|m| m.len()).unwrap_or(0)
    );

    // Info, as a proxy runs in production: at debug level the filter also formats a line per request.
    let start = |config: &str| -> Result<Vm, HarnessError> {
        let mut builder = Plugin::builder()
            .module_file(wasm)
            .plugin_config(config)
            .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
            .log_level(LogLevel::Info);
        if let Some(dir) = &knobs.cache_dir {
            builder = builder.cache_dir(dir);
        }
        builder.build()?.start_vm()
    };
    let mut vm = start(CONFIG)?;
    let mut vm_usage_off = start(CONFIG_USAGE_OFF)?;
    let (config, credential) = native_filter();
    let request: Headers = REQUEST.into();
    let response: Headers = RESPONSE.into();

    // Interleave harness and native batches so drift hits both sides alike.
    let mut harness_ns = Vec::with_capacity(batches);
    let mut usage_off_ns = Vec::with_capacity(batches);
    let mut native_ns = Vec::with_capacity(batches);
    for _ in 0..batches {
        if knobs.harness {
            harness_ns.push(per_iteration(per_batch, || {
                harness_round_trip(&mut vm, &request, &response)
            })?);
        }
        if knobs.usage_off {
            usage_off_ns.push(per_iteration(per_batch, || {
                harness_round_trip(&mut vm_usage_off, &request, &response)
            })?);
        }
        if knobs.native {
            native_ns.push(per_iteration(per_batch, || {
                native_round_trip(&config, &credential);
                Ok(())
            })?);
        }
    }
    let harness = median(&mut harness_ns);
    let usage_off = median(&mut usage_off_ns);
    let native = median(&mut native_ns);
    println!();
    println!("request + response header round trip (median of {batches} batches of {per_batch}):");
    println!(
        "  through the harness (filter.wasm)   {:>9.2} µs",
        harness / 1000.0
    );
    println!(
        "  the same with usage accounting off  {:>9.2} µs",
        usage_off / 1000.0
    );
    println!(
        "  usage off, logic called natively    {:>9.2} µs",
        native / 1000.0
    );
    println!(
        "  usage off: harness / native         {:>9.1}×",
        usage_off / native
    );

    if !knobs.vm_start {
        return Ok(());
    }
    // Each start runs in a fresh process, so the in-process module memo cannot help: cold compiles and fills
    // the on-disk cache, warm finds the compiled module there, as a restarted proxy would.
    let cache = tempfile_dir()?;
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..5 {
        let round_cache = cache.join(format!("round-{round}"));
        cold.push(start_in_child(wasm, &round_cache)?);
        warm.push(start_in_child(wasm, &round_cache)?);
    }
    let cold = median(&mut cold);
    let warm = median(&mut warm);
    println!();
    println!("VM start in a new process (build plugin + start one VM, median of 5):");
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

/// The filter's parsed configuration (usage off: the native side has no host to count with) and
/// credential, as its glue holds them after `on_configure`.
fn native_filter() -> (FilterConfig, Credential) {
    let config = filter::config::parse(CONFIG_USAGE_OFF.as_bytes())
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

/// The same pipeline the glue runs, without the ABI: build the request's header list from owned pairs
/// (as the host hands them over), decide and rewrite it, handing each edit to where the host would
/// get it, rewrite the response.
fn native_round_trip(config: &FilterConfig, credential: &Credential) {
    let mut request = HeaderList::from_pairs(
        REQUEST
            .iter()
            .map(|(n, v)| (String::from(*n), v.as_bytes().to_vec())),
    );
    let decision = handle_request(config, Some(credential), &mut request, None, &mut edit);
    let RequestDecision::Forward(forward) = decision else {
        exit("the benchmark request was not forwarded");
    };
    let summary = forward.request.unwrap_or_default();
    if !config.response_rules_read_response {
        // Below debug level the glue rewrites such a response without reading it.
        black_box(unread_response_edits(config, &summary, |edit| {
            black_box(edit);
        }));
        return;
    }
    let mut response = HeaderList::from_pairs(
        RESPONSE
            .iter()
            .map(|(n, v)| (String::from(*n), v.as_bytes().to_vec())),
    );
    black_box(handle_response(config, &mut response, &summary, &mut edit));
}

/// Where the glue hands an edit to the host: here, only kept from being optimised away.
fn edit(edit: HeaderEdit<'_>) {
    black_box(edit);
}

/// Nanoseconds per call of `step`, over one batch.
fn per_iteration(
    per_batch: u32,
    mut step: impl FnMut() -> Result<(), HarnessError>,
) -> Result<f64, HarnessError> {
    let started = Instant::now();
    for _ in 0..per_batch {
        step()?;
    }
    Ok(started.elapsed().as_nanos() as f64 / f64::from(per_batch))
}

/// Set in a child process: measure one VM start with this cache directory, print nanoseconds, exit.
const START_ONCE: &str = "BENCH_START_ONCE";

/// Runs this benchmark binary as a child that measures one start with `cache`; returns its nanoseconds.
fn start_in_child(wasm: &Path, cache: &Path) -> Result<f64, HarnessError> {
    let failed = |reason: String| HarnessError::Config {
        setting: "cache_dir",
        reason,
    };
    let exe = std::env::current_exe().map_err(|err| failed(err.to_string()))?;
    let output = std::process::Command::new(exe)
        .env(START_ONCE, cache)
        .env("BENCH_FILTER_WASM", wasm)
        .output()
        .map_err(|err| failed(err.to_string()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .last()
        .and_then(|line| line.trim().parse::<f64>().ok())
        .ok_or_else(|| {
            failed(format!(
                "the start-time child printed {text:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        })
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
