//! Errors of the host library, and the trap a guest callback can end in.
//!
//! Two channels are kept apart on purpose. A condition the guest can handle is a status code returned from
//! the host call (see `abi`). Everything else (a bad pointer, a phase violation, a guest panic, a deadline)
//! traps the callback; the trap reaches the embedder as a [`GuestTrap`] naming the callback, the context and,
//! when a host call caused it, that host call.

use std::fmt;
use std::path::PathBuf;

use crate::logs::{LogLevel, LogRecord};

/// Everything the host library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    ReadModule {
        /// The path given.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Neither `module_file` nor `module_bytes` was given.
    #[error("no module given: call module_file or module_bytes on the plugin builder")]
    NoModule,
    /// The wasm engine could not be configured.
    #[error("cannot set up the wasm engine: {0}")]
    Engine(String),
    /// The compiled-module cache could not be set up (only with the `cache` feature).
    #[error("cannot set up the compiled-module cache in {path}: {reason}")]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The module is not valid WebAssembly or does not compile.
    #[error("module does not compile: {0}")]
    Compile(String),
    /// The module declares a proxy-wasm ABI version this host does not run.
    #[error(
        "module declares proxy-wasm ABI {0}; this host runs ABI 0.2.1 (and the compatible 0.2.0)"
    )]
    UnsupportedAbi(String),
    /// The module exports no proxy-wasm ABI marker at all.
    #[error(
        "module exports no proxy-wasm ABI marker (expected the export proxy_abi_version_0_2_1)"
    )]
    MissingAbiMarker,
    /// A required export is missing, or an export has the wrong type.
    #[error("module export {name}: {problem}")]
    BadExport {
        /// The export's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The module imports a function this host does not provide.
    #[error("module imports {module}.{name}, which this host does not provide")]
    UnknownImport {
        /// The import module (`env`, `wasi_snapshot_preview1`, ...).
        module: String,
        /// The imported name.
        name: String,
    },
    /// Instantiation failed for another reason (memory limits, a trapping start function, ...).
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    /// A plugin setting is invalid.
    #[error("invalid plugin setting {setting}: {reason}")]
    Config {
        /// The builder setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A guest callback trapped.
    #[error(transparent)]
    Trap(#[from] GuestTrap),
    /// `proxy_on_vm_start` returned false.
    #[error(
        "the plugin rejected its VM configuration (proxy_on_vm_start returned false){}",
        last_complaint(logs)
    )]
    VmStartRejected {
        /// What the VM logged during start-up, for the plugin's own explanation.
        logs: Vec<LogRecord>,
    },
    /// `proxy_on_configure` returned false.
    #[error(
        "the plugin rejected its configuration (proxy_on_configure returned false){}",
        last_complaint(logs)
    )]
    ConfigureRejected {
        /// What the VM logged during start-up, for the plugin's own explanation.
        logs: Vec<LogRecord>,
    },
    /// The stream id is not a stream of this VM (never created, or already finished).
    #[error("stream {0} is not an active stream of this VM")]
    UnknownStream(u32),
    /// A stream step came out of order (for example request headers twice).
    #[error("stream {id}: {step} {reason}")]
    StreamOrder {
        /// The stream.
        id: u32,
        /// The step attempted.
        step: &'static str,
        /// Why it is out of order.
        reason: &'static str,
    },
    /// No http call with this token is waiting for a response (unknown, answered, or timed out).
    #[error("no http call with token {0} is waiting for a response")]
    UnknownHttpCall(u32),
    /// The VM was shut down with `Vm::shutdown`.
    #[error("the VM is shut down")]
    VmShutDown,
    /// The operation needs a manual clock but the plugin runs on the system clock.
    #[error("{0} needs a manual clock; build the plugin with .clock(ManualClock::new())")]
    NotManualClock(&'static str),
}

/// The most severe recent log line, appended to a start-up rejection so the plugin's own reason shows.
fn last_complaint(logs: &[LogRecord]) -> String {
    let worst = logs
        .iter()
        .rev()
        .filter(|record| record.level >= LogLevel::Warn)
        .max_by_key(|record| record.level);
    match worst.or(logs.last()) {
        Some(record) => format!(": {}", record.message),
        None => String::new(),
    }
}

/// What ended a guest callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrapCause {
    /// A host call refused the guest's arguments (bad pointer, oversized map, wrong phase, ...).
    HostCall {
        /// The host call's ABI name.
        call: &'static str,
    },
    /// The guest itself trapped (a Rust panic ends in `unreachable`).
    Guest,
    /// The callback ran past the plugin's deadline and was interrupted.
    Deadline,
    /// The guest tried to grow its memory past the plugin's limit.
    MemoryLimit,
    /// The guest called WASI `proc_exit`.
    Exit(i32),
}

/// A guest callback that trapped: the VM that ran it is failed from then on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct GuestTrap {
    /// The callback that was running (for example `proxy_on_request_headers`).
    pub callback: &'static str,
    /// The context it ran for.
    pub context_id: u32,
    /// What caused the trap.
    pub cause: TrapCause,
    /// A one-line description, with the guest's last stderr line when it printed one (a panic message).
    pub message: String,
}

impl fmt::Display for GuestTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (context {}) trapped: {}",
            self.callback, self.context_id, self.message
        )
    }
}

/// A trap raised by a host call: carried inside the wasmtime error until the callback returns.
#[derive(Debug, thiserror::Error)]
#[error("{call} (context {context_id}): {reason}")]
pub(crate) struct HostCallTrap {
    pub(crate) call: &'static str,
    pub(crate) context_id: u32,
    pub(crate) reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogSource;

    #[test]
    fn a_rejected_configuration_names_the_plugins_own_complaint() {
        let logs = vec![
            LogRecord {
                level: LogLevel::Info,
                message: "starting".into(),
                source: LogSource::ProxyLog,
            },
            LogRecord {
                level: LogLevel::Error,
                message: "config: field `rules` is missing".into(),
                source: LogSource::ProxyLog,
            },
        ];
        let error = HarnessError::ConfigureRejected { logs };
        assert!(
            error
                .to_string()
                .ends_with(": config: field `rules` is missing"),
            "{error}"
        );
    }
}
