//! Builds the product filter (as it ships: `scripts/build-filter.sh`) and the probe filter for `wasm32-wasip1`
//! before the integration tests compile, so every test run loads the `.wasm` of the sources as they are now,
//! never a stale artifact.
//!
//! The nested cargo uses its own target directory (`target/wasm`): the outer build holds the lock on the
//! main one. The artifact paths reach the tests as `FILTER_WASM` and `PROBE_WASM` (compile-time env).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest_dir.parent().map(PathBuf::from).unwrap_or_default();
    for watched in [
        "filter/src",
        "filter/Cargo.toml",
        "tests/probe-filter/src",
        "tests/probe-filter/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "scripts/build-filter.sh",
        "scripts/link-filter.sh",
    ] {
        println!(
            "cargo::rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let target_dir = workspace.join("target").join("wasm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The product filter as it ships: cargo's build with its own linker step, one script for every consumer.
    let mut filter = Command::new("bash");
    filter
        .current_dir(&workspace)
        .arg(workspace.join("scripts").join("build-filter.sh"))
        .args(["--quiet", "--target-dir"])
        .arg(&target_dir);
    run(filter, "the filter (scripts/build-filter.sh)");
    let mut probe = Command::new(cargo);
    probe
        .current_dir(&workspace)
        .args([
            "build",
            "--target",
            "wasm32-wasip1",
            "--profile",
            "wasm-release",
            "-p",
            "probe-filter",
            "--target-dir",
        ])
        .arg(&target_dir);
    run(probe, "the probe filter");
    println!(
        "cargo::rustc-env=FILTER_WASM={}",
        target_dir.join("filter.wasm").display()
    );
    println!(
        "cargo::rustc-env=PROBE_WASM={}",
        target_dir
            .join("wasm32-wasip1")
            .join("wasm-release")
            .join("probe_filter.wasm")
            .display()
    );
}

/// Runs one nested build without the outer build's settings, exiting with a message when it fails.
fn run(mut build: Command, what: &str) {
    // The outer build's flags and target belong to the host build, not to this nested wasm build.
    for inherited in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_LLVM_COV",
    ] {
        build.env_remove(inherited);
    }
    match build.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!(
                "building {what} failed ({s}); is the wasm32-wasip1 target installed? (rustup target add wasm32-wasip1)"
            );
            std::process::exit(1);
        }
        Err(err) => {
            eprintln!("could not run the build of {what}: {err}");
            std::process::exit(1);
        }
    }
}
