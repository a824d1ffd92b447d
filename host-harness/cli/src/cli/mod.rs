//! The one-shot subcommands: `validate` and `dry-run`.
//!
//! Both load a filter with a plugin configuration exactly as a proxy would (same start-up sequence, same
//! environment handling), so their verdict is the verdict Envoy would reach.
//!
//! Layout:
//! - `validate`: does the filter accept this configuration?
//! - `dry_run`: what would one request look like after the filter?

pub mod dry_run;
pub mod validate;

use std::path::PathBuf;

use clap::Args;
use host_harness::{HarnessError, LogLevel, Plugin, Vm};
use host_harness_cli::proxy::config::default_filter_path;

/// The filter and its configuration, shared by `validate` and `dry-run`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// The proxy-wasm module (default: the workspace's filter build).
    #[arg(long, value_name = "PATH")]
    pub filter: Option<PathBuf>,
    /// The plugin configuration file (JSON for the product filter), passed verbatim like Envoy's StringValue.
    #[arg(long, value_name = "PATH")]
    pub config: PathBuf,
    /// A variable of the VM's environment (like Envoy's `vm_config.environment_variables`); repeatable.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// The root id (Envoy's `root_id`; SDKs such as AssemblyScript's pick their root context by it).
    #[arg(long, value_name = "ID")]
    pub root_id: Option<String>,
    /// The VM id (Envoy's `vm_config.vm_id`), which scopes shared data and queues.
    #[arg(long, value_name = "ID")]
    pub vm_id: Option<String>,
    /// The VM configuration file (Envoy's `vm_config.configuration`), passed verbatim.
    #[arg(long, value_name = "PATH")]
    pub vm_config: Option<PathBuf>,
}

/// Why a filter could not be loaded with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration file could not be read.
    #[error("cannot read configuration {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The filter refused the configuration; the message is the filter's own.
    #[error("the filter rejected {path}: {message}")]
    Rejected {
        /// The configuration file.
        path: PathBuf,
        /// The filter's own explanation (its most severe log line during start-up).
        message: String,
    },
    /// The module could not be loaded or started.
    #[error("cannot load filter {path}: {source}")]
    Module {
        /// The module file.
        path: PathBuf,
        /// What the harness reported.
        source: HarnessError,
    },
}

impl FilterArgs {
    /// The module path, defaulting to the workspace's filter build.
    pub fn filter_path(&self) -> PathBuf {
        self.filter.clone().unwrap_or_else(default_filter_path)
    }

    /// Reads the configuration, builds the plugin and starts one VM (so `on_configure` has run).
    ///
    /// # Errors
    /// [`LoadError`] when the configuration is unreadable, the module does not load, or the filter rejects
    /// the configuration.
    pub fn start_vm(&self) -> Result<(Vec<u8>, Vm), LoadError> {
        let config = std::fs::read(&self.config).map_err(|source| LoadError::ReadConfig {
            path: self.config.clone(),
            source,
        })?;
        let module = self.filter_path();
        let module_error = |source| LoadError::Module {
            path: module.clone(),
            source,
        };
        let mut builder = Plugin::builder()
            .module_file(&module)
            .plugin_config(&config);
        if let Some(root_id) = &self.root_id {
            builder = builder.root_id(root_id.clone());
        }
        if let Some(vm_id) = &self.vm_id {
            builder = builder.vm_id(vm_id.clone());
        }
        if let Some(path) = &self.vm_config {
            let vm_config = std::fs::read(path).map_err(|source| LoadError::ReadConfig {
                path: path.clone(),
                source,
            })?;
            builder = builder.vm_config(vm_config);
        }
        for (key, value) in &self.env {
            builder = builder.env(key.clone(), value.clone());
        }
        let plugin = builder.build().map_err(module_error)?;
        match plugin.start_vm() {
            Ok(vm) => Ok((config, vm)),
            Err(HarnessError::ConfigureRejected { logs }) => Err(LoadError::Rejected {
                path: self.config.clone(),
                message: filter_complaint(&logs),
            }),
            Err(other) => Err(module_error(other)),
        }
    }
}

/// The filter's own explanation of a rejected configuration: its most severe log line, latest first.
fn filter_complaint(logs: &[host_harness::LogRecord]) -> String {
    logs.iter()
        .rev()
        .filter(|record| record.level >= LogLevel::Warn)
        .max_by_key(|record| record.level)
        .or(logs.last())
        .map_or_else(
            || "the filter's on_configure returned false and logged nothing".to_owned(),
            |record| record.message.clone(),
        )
}

/// An error as one line: multi-line messages (a WAT parse error quotes source) are joined, so scripts can
/// rely on one line per failure.
pub fn one_line(error: &dyn std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Parses `K=V` (the value may contain `=`; the key may not be empty).
fn parse_env_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected K=V, got {raw:?}")),
    }
}

/// Parses `name: value` as given to `-H`.
fn parse_header(raw: &str) -> Result<(String, String), String> {
    // A leading ':' belongs to a pseudo-header name, so the separator is the first ':' after it.
    let search_from = usize::from(raw.starts_with(':'));
    let separator = raw
        .get(search_from..)
        .and_then(|rest| rest.find(':'))
        .map(|at| at + search_from)
        .ok_or_else(|| format!("expected 'name: value', got {raw:?}"))?;
    let (name, value) = raw.split_at(separator);
    let value = value.get(1..).unwrap_or_default().trim_start();
    if name.trim().is_empty() {
        return Err(format!("header {raw:?} has no name"));
    }
    Ok((name.trim().to_ascii_lowercase(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn env_pairs_keep_equals_signs_in_values() {
        assert_eq!(parse_env_pair("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env_pair("=x").is_err());
        assert!(parse_env_pair("novalue").is_err());
    }

    #[test]
    fn headers_split_at_the_first_colon_after_a_pseudo_prefix() {
        assert_eq!(
            parse_header("X-Team: ml").unwrap(),
            ("x-team".into(), "ml".into())
        );
        assert_eq!(
            parse_header(":authority: ai:8080").unwrap(),
            (":authority".into(), "ai:8080".into())
        );
        assert_eq!(
            parse_header("x-empty:").unwrap(),
            ("x-empty".into(), String::new())
        );
        assert!(parse_header("no separator").is_err());
        assert!(parse_header(": value").is_err());
    }
}
