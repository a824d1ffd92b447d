//! WASI as a proxy-wasm guest sees it: configured environment, captured stdio, no files, no sleeping.

use host_harness::{LogLevel, LogSource, Plugin};

use crate::support::{StartVm, module_with, said};

const WASI_IMPORTS: &str = r#"
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
"#;

#[test]
fn the_environment_holds_configured_variables_and_named_host_variables_only() {
    // Safety of the test: PATH exists in any test environment; the key below is unique to this test.
    let wat = module_with(
        WASI_IMPORTS,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $environ_sizes_get (i32.const 1032) (i32.const 1036)))
             (call $say_num (i32.load (i32.const 1032)))
             (drop (call $environ_get (i32.const 4096) (i32.const 8192)))
             (call $say (i32.const 8192) (i32.load (i32.const 1036)))
             (i32.const 1))"#,
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let mut vm = Plugin::builder()
        .module_bytes(wat)
        .env("ANTHROPIC_OAUTH_TOKEN", "sk-test")
        .host_env_keys(["PATH", "HOST_HARNESS_SURELY_UNSET_VARIABLE"])
        .start();
    let expected = format!("ANTHROPIC_OAUTH_TOKEN=sk-test\0PATH={path}\0");
    assert_eq!(said(&mut vm), ["0", "2", expected.as_str()]);
}

#[test]
fn stdout_and_stderr_lines_become_log_records() {
    let wat = module_with(
        WASI_IMPORTS,
        r#"(data (i32.const 0) "to stdout\npartial ")
           (data (i32.const 32) "line\n")
           (data (i32.const 48) "to stderr\n")
           (func $write (param $fd i32) (param $ptr i32) (param $len i32)
             (i32.store (i32.const 512) (local.get $ptr))
             (i32.store (i32.const 516) (local.get $len))
             (call $say_num (call $fd_write (local.get $fd) (i32.const 512) (i32.const 1) (i32.const 520)))
             (call $say_num (i32.load (i32.const 520))))
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $write (i32.const 1) (i32.const 0) (i32.const 18))
             (call $write (i32.const 1) (i32.const 32) (i32.const 5))
             (call $write (i32.const 2) (i32.const 48) (i32.const 10))
             (call $write (i32.const 7) (i32.const 48) (i32.const 10))
             (i32.const 1))"#,
    );
    let vm = Plugin::builder().module_bytes(wat).start();
    let records: Vec<(LogLevel, LogSource, String)> = vm
        .logs()
        .into_iter()
        .map(|record| (record.level, record.source, record.message))
        .collect();
    let output: Vec<_> = records
        .iter()
        .filter(|(_, source, _)| *source != LogSource::ProxyLog)
        .cloned()
        .collect();
    assert_eq!(
        output,
        [
            (LogLevel::Info, LogSource::Stdout, "to stdout".to_owned()),
            (LogLevel::Info, LogSource::Stdout, "partial line".to_owned()),
            (LogLevel::Error, LogSource::Stderr, "to stderr".to_owned()),
        ]
    );
    let statuses: Vec<&str> = records
        .iter()
        .filter(|(_, source, _)| *source == LogSource::ProxyLog)
        .map(|(_, _, m)| m.as_str())
        .collect();
    assert_eq!(
        statuses,
        ["0", "18", "0", "5", "0", "10", "8", "10"],
        "fd 7 is EBADF and writes nothing"
    );
}

#[test]
fn descriptor_calls_answer_without_files_and_sleeping_returns_at_once() {
    let wat = module_with(
        WASI_IMPORTS,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $fd_read (i32.const 0) (i32.const 512) (i32.const 0) (i32.const 520)))
             (call $say_num (i32.load (i32.const 520)))
             (i32.store (i32.const 520) (i32.const 7))
             (call $say_num (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 520)))
             (call $say_num (i32.load (i32.const 520)))
             (call $say_num (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 520)))
             (call $say_num (call $fd_prestat_get (i32.const 3) (i32.const 520)))
             (call $say_num (call $random_get (i32.const 600) (i32.const 16)))
             (call $say_num (call $fd_write (i32.const 1) (i32.const 200000) (i32.const 1) (i32.const 520)))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    assert_eq!(
        said(&mut vm),
        ["0", "0", "0", "0", "8", "8", "0", "21"],
        "EOF, poll_oneoff returns at once with no event (as Envoy), BADF, BADF, random works, EFAULT"
    );
}

#[test]
fn an_iovec_table_longer_than_iov_max_is_refused_before_it_is_read() {
    // 1025 entries at a pointer far outside memory: EINVAL (the count), not EFAULT (the table).
    let wat = module_with(
        WASI_IMPORTS,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $fd_write (i32.const 1) (i32.const 2000000) (i32.const 1025) (i32.const 520)))
             (call $say_num (call $fd_write (i32.const 1) (i32.const 2000000) (i32.const 1024) (i32.const 520)))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    assert_eq!(
        said(&mut vm),
        ["28", "21"],
        "EINVAL past IOV_MAX, EFAULT within it"
    );
}

#[test]
fn wasi_unstable_imports_answer_as_the_preview_1_functions() {
    // AssemblyScript's proxy-runtime imports WASI under its pre-snapshot name; Envoy answers it there too.
    let wat = module_with(
        r#"(import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
           (import "wasi_unstable" "proc_exit" (func $proc_exit (param i32)))"#,
        r#"(data (i32.const 0) "from wasi_unstable\n")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (i32.store (i32.const 512) (i32.const 0))
             (i32.store (i32.const 516) (i32.const 19))
             (call $say_num (call $fd_write (i32.const 1) (i32.const 512) (i32.const 1) (i32.const 520)))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    let records = vm.take_logs();
    assert!(
        records
            .iter()
            .any(|record| record.source == LogSource::Stdout
                && record.message == "from wasi_unstable"),
        "{records:?}"
    );
}

#[test]
fn the_remaining_preview_1_calls_answer_as_envoy_without_files_sockets_or_signals() {
    let wat = module_with(
        r#"(import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
           (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
           (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $fd_fdstat_set_flags (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
           (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
           (import "wasi_snapshot_preview1" "proc_raise" (func $proc_raise (param i32) (result i32)))
           (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (i32.store (i32.const 1032) (i32.const 7))
             (i32.store (i32.const 1036) (i32.const 7))
             (call $say_num (call $args_sizes_get (i32.const 1032) (i32.const 1036)))
             (call $say_num (i32.add (i32.load (i32.const 1032)) (i32.load (i32.const 1036))))
             (call $say_num (call $args_get (i32.const 1032) (i32.const 1036)))
             (call $say_num (call $clock_res_get (i32.const 1) (i32.const 1040)))
             (call $say_num64 (i64.load (i32.const 1040)))
             (call $say_num (call $clock_time_get (i32.const 2) (i64.const 1) (i32.const 1040)))
             (call $say_num (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 200000)))
             (call $say_num (call $sched_yield))
             (call $say_num (call $fd_fdstat_set_flags (i32.const 1) (i32.const 4)))
             (call $say_num (call $fd_prestat_dir_name (i32.const 1) (i32.const 1040) (i32.const 8)))
             (call $say_num (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 1040)))
             (call $say_num (call $fd_close (i32.const 9)))
             (call $say_num (call $random_get (i32.const 0) (i32.const 65537)))
             (call $say_num (call $random_get (i32.const 131070) (i32.const 4)))
             (call $say_num (call $proc_raise (i32.const 9)))
             (call $say_num (call $sock_recv (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    assert_eq!(
        said(&mut vm),
        [
            "0", "0", "0", "0", "1", "58", "21", "0", "8", "54", "70", "8", "28", "21", "58", "52"
        ],
        "no arguments; 1 ns resolution; CPU-time clocks ENOTSUP and a bad pointer EFAULT; sched_yield \
         returns; stdio flags EBADF, not a directory, not seekable; unknown fd EBADF; random_get over \
         64 KiB EINVAL and past memory EFAULT; signals ENOTSUP; sockets ENOSYS"
    );
}

#[test]
fn the_monotonic_clock_on_the_system_clock_never_goes_back() {
    let wat = module_with(
        r#"(import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 1032)))
             (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 1040)))
             (call $say_num (i64.ge_u (i64.load (i32.const 1040)) (i64.load (i32.const 1032))))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    assert_eq!(said(&mut vm), ["1"]);
}

#[test]
fn a_name_outside_preview_1_is_refused_naming_the_import() {
    let wat = module_with(
        r#"(import "wasi_snapshot_preview1" "sock_open" (func $sock_open (param i32 i32 i32) (result i32)))"#,
        "",
    );
    let error = Plugin::builder().module_bytes(wat).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "module imports wasi_snapshot_preview1.sock_open, which this host does not provide"
    );
}

#[test]
fn wasi_unstable_modules_may_import_any_preview_1_name() {
    let wat = module_with(
        r#"(import "wasi_unstable" "sched_yield" (func $sched_yield (result i32)))
           (import "wasi_unstable" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $sched_yield))
             (call $say_num (call $sock_shutdown (i32.const 3) (i32.const 0)))
             (i32.const 1))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    assert_eq!(said(&mut vm), ["0", "52"]);
}
