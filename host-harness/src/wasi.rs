//! WASI preview 1 for proxy-wasm guests, served by the host itself.
//!
//! Like Envoy, the guest sees only the environment the plugin configures (`environment_variables`, plus
//! `host_env_keys` copied from the host when the plugin is built), no arguments, no files, and clocks that
//! follow the plugin's clock. Its stdout and stderr become log records of the VM (stdout at `Info`, stderr at
//! `Error`) unless the plugin asks to inherit the host's.
//!
//! A proxy-wasm guest has only stdin, stdout and stderr, so the host answers every call itself, as Envoy
//! does, and never blocks: writes to stdout/stderr are captured, stdin is empty, every other descriptor is
//! EBADF, path calls find no directory, sleeping (`poll_oneoff`) and yielding return at once with no event,
//! and `proc_exit` stops the guest with a [`GuestExit`] the VM reports as an exit. Every function of
//! `wasi_snapshot_preview1` is defined, so any module a WASI toolchain builds links; what a proxy-wasm guest
//! has no use for (sockets, signals) answers ENOSYS or ENOTSUP. Guest memory is only touched through
//! [`HostCall`], and a bad guest pointer is EFAULT, as WASI specifies, rather than a trap.
//!
//! Modules built by older toolchains (AssemblyScript's `proxy-runtime`) import WASI as `wasi_unstable`;
//! as Envoy does, the same functions answer under that name.

use std::io::Write;
use std::time::Instant;

use wasmtime::{Caller, Linker};

use crate::abi::memory::HostCall;
use crate::clock::{Clock, duration_nanos};
use crate::logs::LogSource;
use crate::state::HostState;
use crate::trace::link;

/// The WASI import module.
pub(crate) const WASI: &str = "wasi_snapshot_preview1";
/// The pre-snapshot name of the same module, still imported by older toolchains.
pub(crate) const WASI_UNSTABLE: &str = "wasi_unstable";

/// Every function of `wasi_snapshot_preview1`: a module may import any of them.
const FUNCTIONS: [&str; 46] = [
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// WASI errno values this host returns.
mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const IO: i32 = 29;
    pub const NOSYS: i32 = 52;
    pub const NOTDIR: i32 = 54;
    pub const NOTSUP: i32 = 58;
    pub const OVERFLOW: i32 = 61;
    pub const SPIPE: i32 = 70;
}

/// WASI clock ids the host serves; the process and thread CPU-time clocks are ENOTSUP, as in Envoy.
const CLOCK_REALTIME: i32 = 0;
const CLOCK_MONOTONIC: i32 = 1;

/// The most bytes one `random_get` fills; Envoy refuses larger requests with EINVAL too.
const MAX_RANDOM_BYTES: u32 = 64 * 1024;
/// Most iovec entries one `fd_write` takes (POSIX `IOV_MAX` on Linux, and wasi-libc's): past it the call
/// is `EINVAL` before the host copies a table sized by the guest.
const MAX_IOVS: u32 = 1024;

/// WASI's `filetype::character_device`, what stdio descriptors are.
const CHARACTER_DEVICE: u8 = 2;
/// WASI rights `fd_read` and `fd_write`.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// The WASI state of one VM instance.
pub(crate) struct WasiState {
    /// When the instance was created: the origin of the monotonic clock on the system clock.
    started: Instant,
}

impl WasiState {
    /// The state of a new instance.
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

/// The guest called `proc_exit`: the call never returns, the guest stops with this code.
#[derive(Debug, thiserror::Error)]
#[error("the guest called proc_exit({0})")]
pub(crate) struct GuestExit(pub(crate) i32);

/// Whether `name` is a function of WASI preview 1 (under either module name).
pub(crate) fn provides(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

/// Links WASI preview 1 under both module names (see the module docs).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link(
        linker,
        WASI,
        "args_get",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32| Ok(errno::SUCCESS),
    )?;
    link(linker, WASI, "args_sizes_get", args_sizes_get)?;
    link(linker, WASI, "environ_get", environ_get)?;
    link(linker, WASI, "environ_sizes_get", environ_sizes_get)?;
    link(linker, WASI, "clock_res_get", clock_res_get)?;
    link(linker, WASI, "clock_time_get", clock_time_get)?;
    link(
        linker,
        WASI,
        "fd_advise",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    link(
        linker,
        WASI,
        "fd_allocate",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64, _: i64| on_fd(fd, errno::NOTSUP),
    )?;
    link(
        linker,
        WASI,
        "fd_close",
        |_: &mut Caller<'_, HostState>, fd: i32| on_fd(fd, errno::SUCCESS),
    )?;
    link(
        linker,
        WASI,
        "fd_datasync",
        |_: &mut Caller<'_, HostState>, fd: i32| on_fd(fd, errno::INVAL),
    )?;
    link(linker, WASI, "fd_fdstat_get", fd_fdstat_get)?;
    // Stdio descriptors are not files whose flags can change, and there are no others.
    link(
        linker,
        WASI,
        "fd_fdstat_set_flags",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32| Ok(errno::BADF),
    )?;
    link(
        linker,
        WASI,
        "fd_fdstat_set_rights",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64, _: i64| on_fd(fd, errno::NOTSUP),
    )?;
    link(linker, WASI, "fd_filestat_get", fd_filestat_get)?;
    link(
        linker,
        WASI,
        "fd_filestat_set_size",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64| on_fd(fd, errno::NOTSUP),
    )?;
    link(
        linker,
        WASI,
        "fd_filestat_set_times",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, errno::NOTSUP),
    )?;
    link(
        linker,
        WASI,
        "fd_pread",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| {
            on_fd(fd, errno::SPIPE)
        },
    )?;
    // No descriptor is a preopened directory.
    link(
        linker,
        WASI,
        "fd_prestat_get",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32| Ok(errno::BADF),
    )?;
    link(
        linker,
        WASI,
        "fd_prestat_dir_name",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "fd_pwrite",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| {
            on_fd(fd, errno::SPIPE)
        },
    )?;
    link(linker, WASI, "fd_read", fd_read)?;
    link(
        linker,
        WASI,
        "fd_readdir",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| {
            on_fd(fd, errno::NOTDIR)
        },
    )?;
    link(
        linker,
        WASI,
        "fd_renumber",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32| on_fd(fd, errno::NOTSUP),
    )?;
    link(
        linker,
        WASI,
        "fd_seek",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i64, _: i32, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    link(
        linker,
        WASI,
        "fd_sync",
        |_: &mut Caller<'_, HostState>, fd: i32| on_fd(fd, errno::INVAL),
    )?;
    link(
        linker,
        WASI,
        "fd_tell",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    link(linker, WASI, "fd_write", fd_write)?;
    link(
        linker,
        WASI,
        "path_create_directory",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_filestat_get",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_filestat_set_times",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| {
            on_dir(fd)
        },
    )?;
    link(
        linker,
        WASI,
        "path_link",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            on_dir(fd)
        },
    )?;
    link(
        linker,
        WASI,
        "path_open",
        |_: &mut Caller<'_, HostState>,
         fd: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i64,
         _: i64,
         _: i32,
         _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_readlink",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_remove_directory",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_rename",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_symlink",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(
        linker,
        WASI,
        "path_unlink_file",
        |_: &mut Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    link(linker, WASI, "poll_oneoff", poll_oneoff)?;
    link(
        linker,
        WASI,
        "proc_exit",
        |_: &mut Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(GuestExit(code)))
        },
    )?;
    link(
        linker,
        WASI,
        "proc_raise",
        |_: &mut Caller<'_, HostState>, _: i32| Ok(errno::NOTSUP),
    )?;
    // One guest per VM and nothing to yield to: the call returns at once, as in Envoy.
    link(
        linker,
        WASI,
        "sched_yield",
        |_: &mut Caller<'_, HostState>| Ok(errno::SUCCESS),
    )?;
    link(linker, WASI, "random_get", random_get)?;
    // A proxy-wasm guest talks to the network only through the proxy-wasm ABI.
    link(
        linker,
        WASI,
        "sock_accept",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32, _: i32| Ok(errno::NOSYS),
    )?;
    link(
        linker,
        WASI,
        "sock_recv",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            Ok(errno::NOSYS)
        },
    )?;
    link(
        linker,
        WASI,
        "sock_send",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32, _: i32, _: i32, _: i32| Ok(errno::NOSYS),
    )?;
    link(
        linker,
        WASI,
        "sock_shutdown",
        |_: &mut Caller<'_, HostState>, _: i32, _: i32| Ok(errno::NOSYS),
    )?;
    linker.alias_module(WASI, WASI_UNSTABLE)?;
    Ok(())
}

/// Whether `fd` is stdin, stdout or stderr: the only descriptors a proxy-wasm guest has.
fn is_stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// `on_stdio` for the stdio descriptors, EBADF for any other.
fn on_fd(fd: i32, on_stdio: i32) -> wasmtime::Result<i32> {
    Ok(if is_stdio(fd) { on_stdio } else { errno::BADF })
}

/// A path call relative to `fd`: stdio descriptors are not directories, and there are no others.
fn on_dir(fd: i32) -> wasmtime::Result<i32> {
    on_fd(fd, errno::NOTDIR)
}

/// SUCCESS when every write landed in guest memory, EFAULT otherwise.
fn written(ok: bool) -> wasmtime::Result<i32> {
    Ok(if ok { errno::SUCCESS } else { errno::FAULT })
}

/// Writes a little-endian u32 at a guest pointer given as a WASI argument; `false` when it is out of bounds.
fn put_u32(call: &mut HostCall<'_, '_>, ptr: i32, value: u32) -> bool {
    u32::try_from(ptr).is_ok_and(|ptr| call.try_write(ptr, &value.to_le_bytes()))
}

/// No arguments: a count of 0 and an empty buffer.
fn args_sizes_get(
    caller: &mut Caller<'_, HostState>,
    argc: i32,
    buf_size: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(caller, "args_sizes_get");
    written(put_u32(&mut call, argc, 0) && put_u32(&mut call, buf_size, 0))
}

/// The plugin's environment as WASI lays it out: `KEY=VALUE\0` for each variable, in configured order.
fn environment(call: &HostCall<'_, '_>) -> Vec<Vec<u8>> {
    call.state_ref()
        .plugin
        .settings
        .env
        .iter()
        .map(|(key, value)| format!("{key}={value}\0").into_bytes())
        .collect()
}

/// The number of variables and the bytes their `KEY=VALUE\0` strings take.
fn environ_sizes_get(
    caller: &mut Caller<'_, HostState>,
    count: i32,
    buf_size: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(caller, "environ_sizes_get");
    let entries = environment(&call);
    let size = entries.iter().map(Vec::len).sum::<usize>();
    let (Ok(entry_count), Ok(size)) = (u32::try_from(entries.len()), u32::try_from(size)) else {
        return Ok(errno::OVERFLOW);
    };
    written(put_u32(&mut call, count, entry_count) && put_u32(&mut call, buf_size, size))
}

/// The variables' strings, one after another at `buf`, and a pointer to each at `environ`.
fn environ_get(
    caller: &mut Caller<'_, HostState>,
    environ: i32,
    buf: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(caller, "environ_get");
    let (Ok(environ), Ok(buf)) = (u32::try_from(environ), u32::try_from(buf)) else {
        return Ok(errno::FAULT);
    };
    let entries = environment(&call);
    let mut pointers = Vec::with_capacity(entries.len().saturating_mul(4));
    let mut strings = Vec::new();
    for entry in &entries {
        let Some(at) = u32::try_from(strings.len())
            .ok()
            .and_then(|offset| buf.checked_add(offset))
        else {
            return Ok(errno::FAULT);
        };
        pointers.extend_from_slice(&at.to_le_bytes());
        strings.extend_from_slice(entry);
    }
    written(call.try_write(environ, &pointers) && call.try_write(buf, &strings))
}

/// Both clocks tick in nanoseconds.
fn clock_res_get(
    caller: &mut Caller<'_, HostState>,
    id: i32,
    resolution: i32,
) -> wasmtime::Result<i32> {
    if id != CLOCK_REALTIME && id != CLOCK_MONOTONIC {
        return Ok(errno::NOTSUP);
    }
    let mut call = HostCall::new(caller, "clock_res_get");
    written(u32::try_from(resolution).is_ok_and(|ptr| call.try_write(ptr, &1u64.to_le_bytes())))
}

/// The realtime clock is the plugin's clock; the monotonic clock follows a manual clock too, so that
/// `Instant::now()` in the guest moves with virtual time, and on the system clock counts from the
/// instance's creation.
fn clock_time_get(
    caller: &mut Caller<'_, HostState>,
    id: i32,
    _precision: i64,
    time: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(caller, "clock_time_get");
    let state = call.state_ref();
    let now = match (id, &state.plugin.clock) {
        (CLOCK_REALTIME, clock) => clock.now_nanos(),
        (CLOCK_MONOTONIC, Clock::Manual(manual)) => manual.now_nanos(),
        (CLOCK_MONOTONIC, Clock::System) => duration_nanos(state.wasi.started.elapsed()),
        _ => return Ok(errno::NOTSUP),
    };
    written(u32::try_from(time).is_ok_and(|ptr| call.try_write(ptr, &now.to_le_bytes())))
}

/// Fills the buffer from the operating system's random source.
fn random_get(caller: &mut Caller<'_, HostState>, buf: i32, len: i32) -> wasmtime::Result<i32> {
    let (Ok(buf), Ok(len)) = (u32::try_from(buf), u32::try_from(len)) else {
        return Ok(errno::FAULT);
    };
    if len > MAX_RANDOM_BYTES {
        return Ok(errno::INVAL);
    }
    let mut call = HostCall::new(caller, "random_get");
    Ok(
        match call.try_fill(buf, len, |bytes| getrandom::fill(bytes).is_ok()) {
            Some(true) => errno::SUCCESS,
            Some(false) => errno::IO,
            None => errno::FAULT,
        },
    )
}

/// Gathers the bytes of an iovec array, or `None` when any part lies outside guest memory.
fn gather(call: &mut HostCall<'_, '_>, iovs: i32, iovs_len: i32, limit: usize) -> Option<Vec<u8>> {
    let iovs = u32::try_from(iovs).ok()?;
    let count = u32::try_from(iovs_len).ok()?;
    let table = call.try_read(iovs, count.checked_mul(8)?)?;
    let mut gathered = Vec::new();
    for entry in table.chunks_exact(8) {
        let (ptr, len) = entry.split_at(4);
        let ptr = u32::from_le_bytes(ptr.try_into().ok()?);
        let len = u32::from_le_bytes(len.try_into().ok()?);
        if gathered.len().saturating_add(usize::try_from(len).ok()?) > limit {
            return None;
        }
        gathered.extend_from_slice(&call.try_read(ptr, len)?);
    }
    Some(gathered)
}

/// Writes to stdout/stderr become log lines (or go to the host's streams when inherited).
fn fd_write(
    caller: &mut Caller<'_, HostState>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let source = match fd {
        1 => LogSource::Stdout,
        2 => LogSource::Stderr,
        _ => return Ok(errno::BADF),
    };
    if u32::try_from(iovs_len).is_ok_and(|count| count > MAX_IOVS) {
        return Ok(errno::INVAL);
    }
    let mut call = HostCall::new(caller, "fd_write");
    let limit = call.state_ref().plugin.limits.max_guest_buffer_bytes;
    let Some(bytes) = gather(&mut call, iovs, iovs_len, limit) else {
        return Ok(errno::FAULT);
    };
    let Ok(written) = u32::try_from(bytes.len()) else {
        return Ok(errno::INVAL);
    };
    if !put_u32(&mut call, nwritten, written) {
        return Ok(errno::FAULT);
    }
    let state = call.state();
    if state.plugin.inherit_stdio {
        // The host's own stdio failing is no concern of the guest's.
        let _ = match source {
            LogSource::Stderr => std::io::stderr().write_all(&bytes),
            _ => std::io::stdout().write_all(&bytes),
        };
    } else {
        state.log.write_output(source, &bytes);
    }
    Ok(errno::SUCCESS)
}

/// Sleeping and waiting: as in Envoy, success with no event, at once. A host must never block a worker
/// for a guest, and the Go runtime throws (its panics turn into "panic during panic") when the call
/// fails, so every Go filter that sleeps, yields or panics needs this answer.
fn poll_oneoff(
    caller: &mut Caller<'_, HostState>,
    _subscriptions: i32,
    _events: i32,
    _count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(caller, "poll_oneoff");
    written(put_u32(&mut call, nevents, 0))
}

/// stdin is empty: reads return end of file.
fn fd_read(
    caller: &mut Caller<'_, HostState>,
    fd: i32,
    _iovs: i32,
    _iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    if fd != 0 {
        return Ok(errno::BADF);
    }
    let mut call = HostCall::new(caller, "fd_read");
    written(put_u32(&mut call, nread, 0))
}

/// stdio descriptors are character devices: stdin readable, stdout and stderr writable.
fn fd_fdstat_get(caller: &mut Caller<'_, HostState>, fd: i32, stat: i32) -> wasmtime::Result<i32> {
    if !is_stdio(fd) {
        return Ok(errno::BADF);
    }
    let rights = if fd == 0 {
        RIGHT_FD_READ
    } else {
        RIGHT_FD_WRITE
    };
    let mut fdstat = [0u8; 24];
    fdstat[0] = CHARACTER_DEVICE;
    fdstat[8..16].copy_from_slice(&rights.to_le_bytes());
    let mut call = HostCall::new(caller, "fd_fdstat_get");
    written(u32::try_from(stat).is_ok_and(|ptr| call.try_write(ptr, &fdstat)))
}

/// stdio descriptors are character devices of size 0.
fn fd_filestat_get(caller: &mut Caller<'_, HostState>, fd: i32, buf: i32) -> wasmtime::Result<i32> {
    if !is_stdio(fd) {
        return Ok(errno::BADF);
    }
    let mut filestat = [0u8; 64];
    filestat[16] = CHARACTER_DEVICE;
    let mut call = HostCall::new(caller, "fd_filestat_get");
    written(u32::try_from(buf).is_ok_and(|ptr| call.try_write(ptr, &filestat)))
}
