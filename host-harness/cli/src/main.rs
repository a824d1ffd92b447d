//! `host-harness`: runs proxy-wasm filters outside a proxy (validate, dry-run), as a standalone reverse
//! proxy (serve), and runs WASI command modules (wasi-run, the cargo runner for `wasm32-wasip1` tests).
//!
//! The binary only parses arguments and maps results to exit codes; the work lives in this package's library
//! (`proxy`, `wasi_command`) and in the `host-harness` library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// The proxy allocates and frees small buffers on every request; mimalloc does that in a fraction of the
/// instructions glibc's allocator needs, across all worker threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command line of `host-harness`.
#[derive(Debug, Parser)]
#[command(
    name = "host-harness",
    version,
    about = "A proxy-wasm host on wasmtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 when the filter accepts the configuration; otherwise exit 1 with the filter's own error.
    Validate(cli::validate::ValidateArgs),
    /// Run one request through the filter and print the outcome as JSON.
    DryRun(cli::dry_run::DryRunArgs),
    /// Run the filter as a standalone streaming reverse proxy (see specs/proxy.md).
    Serve(Box<host_harness_cli::proxy::cli::ServeArgs>),
    /// Run a WASI preview 1 command module (e.g. a test binary built for wasm32-wasip1) and exit with its code.
    WasiRun {
        /// The `.wasm` command module.
        module: PathBuf,
        /// Arguments passed to the module after its name.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// mimalloc's settings for a long-running `serve`: its arenas commit memory as it is used rather than all
/// at once, so what compiling the filter used and freed (about 55 MiB) does not stay resident in an idle
/// proxy. Measured with `make bench`: 52 MiB instead of 108 MiB at rest, and no more CPU per request. (A
/// shorter purge delay saves 12 MiB more at rest but costs up to twice the CPU per request at low
/// concurrency.)
const ALLOCATOR_SETTINGS: [(&str, &str); 1] = [("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// mimalloc reads its settings from the environment before `main` runs, so `serve` executes itself again,
/// once, with [`ALLOCATOR_SETTINGS`] added, unless the operator set them (theirs are kept). Returns only
/// when that is not needed or not possible (the binary replaced on disk, say): the process then runs on.
fn exec_with_allocator_settings() {
    use std::os::unix::process::CommandExt;
    if ALLOCATOR_SETTINGS
        .iter()
        .any(|(name, _)| std::env::var_os(name).is_some())
    {
        return;
    }
    let Ok(binary) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let name = args.next().unwrap_or_default();
    let error = std::process::Command::new(binary)
        .arg0(name)
        .args(args)
        .envs(ALLOCATOR_SETTINGS)
        .exec();
    eprintln!("host-harness serve: running with the allocator's default settings ({error})");
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "serve")
    {
        exec_with_allocator_settings();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => cli::validate::run(&args),
        Command::DryRun(args) => cli::dry_run::run(&args),
        Command::Serve(args) => host_harness_cli::proxy::cli::serve_main(*args),
        Command::WasiRun { module, args } => wasi_run(&module, args),
    }
}

/// Runs a WASI command; its exit code becomes ours (clamped to what a process can return).
fn wasi_run(module: &std::path::Path, args: Vec<String>) -> ExitCode {
    let mut argv = vec![module.display().to_string()];
    argv.extend(args);
    match host_harness_cli::wasi_command::run(module, &argv) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            eprintln!("host-harness wasi-run: {err}");
            ExitCode::from(2)
        }
    }
}
