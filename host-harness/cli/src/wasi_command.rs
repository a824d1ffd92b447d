//! Runs a WASI preview 1 command module (a `_start` export), such as a test binary built for `wasm32-wasip1`.
//!
//! This is what lets `cargo test --target wasm32-wasip1` run the filter's pure unit tests inside wasmtime:
//! `host-harness wasi-run` is the cargo runner for that target. The guest sees the host's stdio and
//! arguments, no environment and no filesystem, so the tests behave as they would inside a proxy's VM.

use std::path::{Path, PathBuf};

use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

/// Why a WASI command could not be run to completion.
#[derive(Debug, thiserror::Error)]
pub enum WasiCommandError {
    /// The module file could not be read.
    #[error("cannot read wasm module {path}: {source}")]
    Read {
        /// The module's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The module did not compile, link or instantiate.
    #[error("cannot load wasm module {path}: {message}")]
    Load {
        /// The module's path.
        path: PathBuf,
        /// What wasmtime reported.
        message: String,
    },
    /// The module exports no `_start` function, so it is not a WASI command.
    #[error("wasm module {path} exports no `_start` function (not a WASI command)")]
    NotACommand {
        /// The module's path.
        path: PathBuf,
    },
    /// The module trapped while running.
    #[error("wasm module {path} trapped: {message}")]
    Trap {
        /// The module's path.
        path: PathBuf,
        /// The trap message with its wasm backtrace.
        message: String,
    },
}

/// Runs `module` as a WASI command with `args` (the program name first) and returns its exit code.
///
/// # Errors
/// Returns [`WasiCommandError`] when the module cannot be read, loaded or started, or when it traps.
pub fn run(module: &Path, args: &[String]) -> Result<i32, WasiCommandError> {
    let load_error = |err: wasmtime::Error| WasiCommandError::Load {
        path: module.to_path_buf(),
        message: format!("{err:#}"),
    };
    let bytes = std::fs::read(module).map_err(|source| WasiCommandError::Read {
        path: module.to_path_buf(),
        source,
    })?;
    let engine = Engine::default();
    let compiled = Module::new(&engine, &bytes).map_err(load_error)?;
    // Checked before linking: a proxy-wasm filter imports host calls this runner does not provide, and
    // "not a command" is the useful thing to say about it.
    if compiled.get_export("_start").is_none() {
        return Err(WasiCommandError::NotACommand {
            path: module.to_path_buf(),
        });
    }
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |ctx| ctx).map_err(load_error)?;
    let wasi = WasiCtxBuilder::new().inherit_stdio().args(args).build_p1();
    let mut store = Store::new(&engine, wasi);
    let instance = linker
        .instantiate(&mut store, &compiled)
        .map_err(load_error)?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|_| WasiCommandError::NotACommand {
            path: module.to_path_buf(),
        })?;
    match start.call(&mut store, ()) {
        Ok(()) => Ok(0),
        Err(err) => match err.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(WasiCommandError::Trap {
                path: module.to_path_buf(),
                message: format!("{err:?}"),
            }),
        },
    }
}
