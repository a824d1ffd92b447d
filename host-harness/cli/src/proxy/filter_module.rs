//! The configured filter module, compiled once into the library's [`Plugin`]: every worker starts its VM
//! from it, clusters are served by the proxy (the library's embedder backend), the clock is the system's.
//!
//! The VMs apply the failure policy themselves (fail closed, then reload after a backoff, as Envoy's
//! `FAIL_RELOAD`): a trapped filter turns into a 503 local response for its streams, which reaches the
//! proxy like any local response.

use super::config::ProxyConfig;
use host_harness::HarnessError;
use host_harness::logs::LogLevel;
use host_harness::plugin::{FailurePolicy, Plugin};

/// Compiles the configured module with the plugin configuration, VM environment and clusters.
///
/// # Errors
/// The module cannot be read, does not compile, or is not a proxy-wasm module this host runs.
pub fn load(config: &ProxyConfig) -> Result<Plugin, HarnessError> {
    let mut builder = Plugin::builder()
        .module_file(&config.filter)
        .plugin_config(&config.plugin_config)
        .root_id(config.root_id.clone())
        .vm_id(config.vm_id.clone())
        .vm_config(&config.vm_config)
        .name(config.plugin_name.clone())
        .log_level(guest_log_level())
        .failure_policy(FailurePolicy::FailReload);
    for (key, value) in &config.vm_env {
        builder = builder.env(key.clone(), value.expose());
    }
    for cluster in config.clusters.keys() {
        builder = builder.embedder_cluster(cluster.clone());
    }
    builder.build()
}

/// The level reported to the guest: what the proxy's logs would show, so a filter never formats debug
/// lines that are then thrown away (that costs more than the rest of a request). Errors are always kept:
/// they carry the filter's own reason when it rejects its configuration.
fn guest_log_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}
