//! WASI preview 1 for proxy-wasm guests.
//!
//! Like Envoy, the guest sees only the environment the plugin configures (`environment_variables`, plus
//! `host_env_keys` copied from the host when the plugin is built), no arguments, no files, and clocks that
//! follow the plugin's clock. Its stdout and stderr become log records of the VM (stdout at `Info`, stderr at
//! `Error`) unless the plugin asks to inherit the host's.
//!
//! Everything links through `wasmtime_wasi::p1`, then the calls that touch file descriptors are served by
//! the host directly. wasmtime-wasi's synchronous adapter runs those on a tokio runtime with `block_on`,
//! which panics when the embedder calls the guest from inside its own runtime (as the standalone proxy's
//! workers do); a guest's panic message, written to stderr, would then take the worker down. A proxy-wasm
//! guest has only stdin, stdout and stderr, so the host answers these calls itself, as Envoy does: writes to
//! stdout/stderr are captured, stdin is empty, every other descriptor is EBADF, sleeping (`poll_oneoff`)
//! returns at once with no event.
//!
//! Modules built by older toolchains (AssemblyScript's `proxy-runtime`) import WASI as `wasi_unstable`;
//! as Envoy does, the same functions answer under that name.

use std::io::Write;

use wasmtime::{Caller, Linker};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::abi::memory::HostCall;
use crate::clock::{Clock, WasiMonotonicClock, WasiWallClock};
use crate::logs::LogSource;
use crate::plugin::PluginShared;
use crate::state::HostState;

/// The WASI import module.
pub(crate) const WASI: &str = "wasi_snapshot_preview1";
/// The pre-snapshot name of the same module, still imported by older toolchains.
pub(crate) const WASI_UNSTABLE: &str = "wasi_unstable";

/// WASI errno values this host returns.
mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const NOTDIR: i32 = 54;
    pub const NOTSUP: i32 = 58;
    pub const SPIPE: i32 = 70;
}

/// WASI's `filetype::character_device`, what stdio descriptors are.
const CHARACTER_DEVICE: u8 = 2;
/// WASI rights `fd_read` and `fd_write`.
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;

/// The WASI context of one VM instance.
pub(crate) fn context_for(plugin: &PluginShared) -> WasiP1Ctx {
    // No stdio streams here: `fd_write` below captures stdout and stderr itself.
    let mut builder = WasiCtxBuilder::new();
    for (key, value) in &plugin.settings.env {
        builder.env(key, value);
    }
    builder.wall_clock(WasiWallClock(plugin.clock.clone()));
    if let Clock::Manual(manual) = &plugin.clock {
        builder.monotonic_clock(WasiMonotonicClock(manual.clone()));
    }
    builder.build_p1()
}

/// Links WASI preview 1, with descriptor calls served by the host (see the module docs).
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p1::add_to_linker_sync(linker, |state: &mut HostState| &mut state.wasi)?;
    linker.allow_shadowing(true);
    linker.func_wrap(WASI, "fd_write", fd_write)?;
    linker.func_wrap(WASI, "fd_read", fd_read)?;
    linker.func_wrap(WASI, "fd_fdstat_get", fd_fdstat_get)?;
    linker.func_wrap(WASI, "fd_filestat_get", fd_filestat_get)?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    linker.func_wrap(
        WASI,
        "fd_pread",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |_: Caller<'_, HostState>, fd: i32, _: i64, _: i32, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    linker.func_wrap(
        WASI,
        "fd_advise",
        |_: Caller<'_, HostState>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, errno::SPIPE),
    )?;
    linker.func_wrap(WASI, "fd_close", |_: Caller<'_, HostState>, fd: i32| {
        on_fd(fd, errno::SUCCESS)
    })?;
    linker.func_wrap(WASI, "fd_datasync", |_: Caller<'_, HostState>, fd: i32| {
        on_fd(fd, errno::INVAL)
    })?;
    linker.func_wrap(WASI, "fd_sync", |_: Caller<'_, HostState>, fd: i32| {
        on_fd(fd, errno::INVAL)
    })?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_size",
        |_: Caller<'_, HostState>, fd: i32, _: i64| on_fd(fd, errno::NOTSUP),
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_times",
        |_: Caller<'_, HostState>, fd: i32, _: i64, _: i64, _: i32| on_fd(fd, errno::NOTSUP),
    )?;
    linker.func_wrap(
        WASI,
        "fd_readdir",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i64, _: i32| {
            on_fd(fd, errno::NOTDIR)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_renumber",
        |_: Caller<'_, HostState>, fd: i32, _: i32| on_fd(fd, errno::NOTSUP),
    )?;
    linker.func_wrap(WASI, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_set_times",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| {
            on_dir(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_link",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            on_dir(fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_open",
        |_: Caller<'_, HostState>,
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
    linker.func_wrap(
        WASI,
        "path_readlink",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_remove_directory",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_rename",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |_: Caller<'_, HostState>, _: i32, _: i32, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.func_wrap(
        WASI,
        "path_unlink_file",
        |_: Caller<'_, HostState>, fd: i32, _: i32, _: i32| on_dir(fd),
    )?;
    linker.allow_shadowing(false);
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
    mut caller: Caller<'_, HostState>,
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
    let mut call = HostCall::new(&mut caller, "fd_write");
    let limit = call.state_ref().plugin.limits.max_guest_buffer_bytes;
    let Some(bytes) = gather(&mut call, iovs, iovs_len, limit) else {
        return Ok(errno::FAULT);
    };
    let Ok(nwritten) = u32::try_from(nwritten) else {
        return Ok(errno::FAULT);
    };
    let Ok(written) = u32::try_from(bytes.len()) else {
        return Ok(errno::INVAL);
    };
    if !call.try_write(nwritten, &written.to_le_bytes()) {
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
    mut caller: Caller<'_, HostState>,
    _subscriptions: i32,
    _events: i32,
    _count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    let mut call = HostCall::new(&mut caller, "poll_oneoff");
    let written = u32::try_from(nevents).is_ok_and(|ptr| call.try_write(ptr, &0u32.to_le_bytes()));
    Ok(if written {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

/// stdin is empty: reads return end of file.
fn fd_read(
    mut caller: Caller<'_, HostState>,
    fd: i32,
    _iovs: i32,
    _iovs_len: i32,
    nread: i32,
) -> wasmtime::Result<i32> {
    if fd != 0 {
        return Ok(errno::BADF);
    }
    let mut call = HostCall::new(&mut caller, "fd_read");
    let written = u32::try_from(nread).is_ok_and(|ptr| call.try_write(ptr, &0u32.to_le_bytes()));
    Ok(if written {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

/// stdio descriptors are character devices: stdin readable, stdout and stderr writable.
fn fd_fdstat_get(mut caller: Caller<'_, HostState>, fd: i32, stat: i32) -> wasmtime::Result<i32> {
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
    let mut call = HostCall::new(&mut caller, "fd_fdstat_get");
    let written = u32::try_from(stat).is_ok_and(|ptr| call.try_write(ptr, &fdstat));
    Ok(if written {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}

/// stdio descriptors are character devices of size 0.
fn fd_filestat_get(mut caller: Caller<'_, HostState>, fd: i32, buf: i32) -> wasmtime::Result<i32> {
    if !is_stdio(fd) {
        return Ok(errno::BADF);
    }
    let mut filestat = [0u8; 64];
    filestat[16] = CHARACTER_DEVICE;
    let mut call = HostCall::new(&mut caller, "fd_filestat_get");
    let written = u32::try_from(buf).is_ok_and(|ptr| call.try_write(ptr, &filestat));
    Ok(if written {
        errno::SUCCESS
    } else {
        errno::FAULT
    })
}
