//! The host-call trace: every host call a VM's guest made (proxy-wasm and WASI), in order, with its
//! arguments and the status it got, for tests that want to see exactly how a filter talks to its host.
//!
//! Tracing is off unless the plugin ([`crate::PluginBuilder::trace_host_calls`]) or the VM
//! ([`crate::Vm::trace_host_calls`]) turns it on; off, a host call costs one branch on a flag in the VM's
//! state. Every host function is linked through `link`, which records the call's name, the effective
//! context and the status; the bounds-checked memory module adds each guest byte range it reads as an
//! argument, and the few host functions that decode an enumerated argument (a map or buffer type) add it
//! by name.
//!
//! Header, property and shared-data values, bodies, log messages and every other byte range the guest
//! hands over or gets back are recorded as their length only: a filter's credentials pass through them,
//! and a trace ends up in test output and CI logs. Names the guest passes (header names, property paths,
//! shared-data keys, metric and queue names) are recorded as text, truncated to [`MAX_TEXT_BYTES`].
//! The trace holds at most [`MAX_RECORDS`] records between two takes; calls past that are counted, not kept.
//!
//! Records are in the order calls returned: a call the guest's allocator makes while the host hands data
//! back comes before the call it serves. A VM's records survive a reload of its instance.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use wasmtime::{Caller, Linker, WasmRet, WasmTy};

use crate::abi::Status;
use crate::state::HostState;

/// The most records a trace keeps between two takes; later calls only count as dropped.
pub const MAX_RECORDS: usize = 10_000;

/// The most bytes of a name kept in a record; longer names are cut at a character boundary.
pub const MAX_TEXT_BYTES: usize = 256;

/// One host call the guest made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCallRecord {
    /// The import's name (`proxy_get_header_map_value`, `fd_write`, ...).
    pub name: &'static str,
    /// The context the call acted for (the effective context when it was made).
    pub context_id: u32,
    /// The arguments as the host read them (see [`HostCallArg`]).
    pub args: Vec<HostCallArg>,
    /// How many bytes the host handed back to the guest, for calls that return data.
    pub returned_bytes: Option<usize>,
    /// What the call answered.
    pub status: HostCallStatus,
}

/// One argument of a recorded host call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCallArg {
    /// An integer passed as is (WASI arguments: descriptors, clock ids, guest pointers).
    Int(i64),
    /// A number the host reads by name (a context id, a tick period).
    Number {
        /// The argument's name.
        name: &'static str,
        /// Its value.
        value: i64,
    },
    /// An enumerated value decoded to its name (a header map type, a buffer type).
    Kind {
        /// The argument's name.
        name: &'static str,
        /// The value's name.
        value: &'static str,
    },
    /// A name the guest passed (header name, property path, key), read from guest memory as text.
    Text {
        /// The argument's name.
        name: &'static str,
        /// The text, lossily decoded and cut to [`MAX_TEXT_BYTES`].
        value: String,
    },
    /// Bytes the guest passed whose content is not recorded (values, bodies, messages): their length.
    Bytes {
        /// The argument's name.
        name: &'static str,
        /// How many bytes.
        len: usize,
    },
}

/// What a recorded host call answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCallStatus {
    /// A proxy-wasm status.
    Status(Status),
    /// A proxy-wasm status code outside [`Status`] (never returned by this host; kept for completeness).
    Code(u32),
    /// A WASI errno (0 is success).
    Errno(i32),
    /// The call returned nothing (it has no result).
    Returned,
    /// The call trapped (or stopped the guest, as `proc_exit` does), with the trap's message.
    Trap(String),
}

impl fmt::Display for HostCallArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCallArg::Int(value) => write!(f, "{value}"),
            HostCallArg::Number { name, value } => write!(f, "{name}={value}"),
            HostCallArg::Kind { name, value } => write!(f, "{name}={value}"),
            HostCallArg::Text { name, value } => write!(f, "{name}={value:?}"),
            HostCallArg::Bytes { name, len } => write!(f, "{name}=<{len} bytes>"),
        }
    }
}

impl fmt::Display for HostCallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostCallStatus::Status(status) => write!(f, "{status:?}"),
            HostCallStatus::Code(code) => write!(f, "status {code}"),
            HostCallStatus::Errno(errno) => match errno_name(*errno) {
                Some(name) => write!(f, "{name}"),
                None => write!(f, "errno {errno}"),
            },
            HostCallStatus::Returned => write!(f, "returned"),
            HostCallStatus::Trap(message) => write!(f, "trap: {message}"),
        }
    }
}

/// Reads like `proxy_get_header_map_value(map=request_headers, key="authorization") -> Ok (returned 23 bytes)`.
impl fmt::Display for HostCallRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        for (index, arg) in self.args.iter().enumerate() {
            if index > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{arg}")?;
        }
        write!(f, ") -> {}", self.status)?;
        if let Some(len) = self.returned_bytes {
            write!(f, " (returned {len} bytes)")?;
        }
        Ok(())
    }
}

/// The names of the WASI errno values this host returns.
fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        0 => "SUCCESS",
        8 => "EBADF",
        21 => "EFAULT",
        28 => "EINVAL",
        29 => "EIO",
        52 => "ENOSYS",
        54 => "ENOTDIR",
        58 => "ENOTSUP",
        61 => "EOVERFLOW",
        70 => "ESPIPE",
        _ => return None,
    })
}

/// Names whose content a record shows as text: everything else the guest passes is recorded by length.
const TEXT_ARGS: [&str; 9] = [
    "key",
    "name",
    "path",
    "function name",
    "upstream name",
    "service name",
    "method name",
    "vm id",
    "status code details",
];

/// The argument the memory module read for `what`: text for names, a length for anything else.
pub(crate) fn guest_bytes_arg(what: &'static str, bytes: &[u8]) -> HostCallArg {
    if !TEXT_ARGS.contains(&what) {
        return HostCallArg::Bytes {
            name: what,
            len: bytes.len(),
        };
    }
    let kept = bytes.get(..MAX_TEXT_BYTES).unwrap_or(bytes);
    let mut value = String::from_utf8_lossy(kept).into_owned();
    if what == "path" {
        // Property paths arrive as NUL-separated segments; a dotted path reads as the docs write them.
        value = value.replace('\0', ".");
    }
    HostCallArg::Text { name: what, value }
}

/// An enumerated argument: its name from `names` (indexed by the ABI value), or the number when unknown.
pub(crate) fn enum_arg(name: &'static str, value: u32, names: &[&'static str]) -> HostCallArg {
    usize::try_from(value)
        .ok()
        .and_then(|index| names.get(index))
        .map_or(
            HostCallArg::Number {
                name,
                value: i64::from(value),
            },
            |value| HostCallArg::Kind { name, value },
        )
}

/// A numeric argument shown by name.
pub(crate) fn number_arg(name: &'static str, value: impl Into<i64>) -> HostCallArg {
    HostCallArg::Number {
        name,
        value: value.into(),
    }
}

/// The records kept so far and how many were dropped, shared by every instance a VM has had.
#[derive(Default)]
struct Buffer {
    records: Vec<HostCallRecord>,
    dropped: u64,
}

/// A VM's trace buffer: one per VM, cloned into each instance's state so records survive a reload.
#[derive(Clone, Default)]
pub(crate) struct TraceBuffer(Arc<Mutex<Buffer>>);

impl TraceBuffer {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A record is plain data: a panic mid-push leaves nothing half-written worth refusing.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, record: HostCallRecord) {
        let mut buffer = self.lock();
        if buffer.records.len() < MAX_RECORDS {
            buffer.records.push(record);
        } else {
            buffer.dropped = buffer.dropped.saturating_add(1);
        }
    }

    /// A copy of the records kept since the last take.
    pub(crate) fn snapshot(&self) -> Vec<HostCallRecord> {
        self.lock().records.clone()
    }

    /// The records kept since the last take, removing them and resetting the dropped count.
    pub(crate) fn take(&self) -> Vec<HostCallRecord> {
        let mut buffer = self.lock();
        buffer.dropped = 0;
        std::mem::take(&mut buffer.records)
    }

    /// How many calls were not kept since the last take because the trace was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// The trace part of one instance's host state.
#[derive(Default)]
pub(crate) struct Tracer {
    /// Whether host calls are recorded; the only thing a host call looks at when tracing is off.
    pub(crate) enabled: bool,
    buffer: TraceBuffer,
    /// Calls in progress: more than one when the guest's allocator makes a host call of its own.
    in_flight: Vec<HostCallRecord>,
}

impl Tracer {
    /// A tracer writing to the VM's `buffer`.
    pub(crate) fn new(enabled: bool, buffer: TraceBuffer) -> Self {
        Self {
            enabled,
            buffer,
            in_flight: Vec::new(),
        }
    }

    fn begin(&mut self, name: &'static str, context_id: u32, args: Vec<HostCallArg>) {
        self.in_flight.push(HostCallRecord {
            name,
            context_id,
            args,
            returned_bytes: None,
            status: HostCallStatus::Returned,
        });
    }

    fn finish(&mut self, status: HostCallStatus) {
        if let Some(mut record) = self.in_flight.pop() {
            record.status = status;
            self.buffer.push(record);
        }
    }

    /// Adds an argument to the call in progress (nothing when tracing is off).
    pub(crate) fn arg(&mut self, arg: impl FnOnce() -> HostCallArg) {
        if let Some(record) = self.in_flight.last_mut() {
            record.args.push(arg());
        }
    }

    /// Notes how many bytes the call in progress hands back to the guest.
    pub(crate) fn returned(&mut self, len: usize) {
        if let Some(record) = self.in_flight.last_mut() {
            record.returned_bytes = Some(len);
        }
    }
}

/// A host function's result type, as the trace shows it.
pub(crate) trait TracedResult {
    /// The status the guest receives.
    fn status(&self) -> HostCallStatus;
}

/// proxy-wasm host functions answer a status code.
impl TracedResult for u32 {
    fn status(&self) -> HostCallStatus {
        Status::from_code(*self).map_or(HostCallStatus::Code(*self), HostCallStatus::Status)
    }
}

/// WASI functions answer an errno.
impl TracedResult for i32 {
    fn status(&self) -> HostCallStatus {
        HostCallStatus::Errno(*self)
    }
}

impl TracedResult for () {
    fn status(&self) -> HostCallStatus {
        HostCallStatus::Returned
    }
}

/// An argument type of a host function, as the trace shows it when the host decodes nothing of it.
pub(crate) trait TracedArg: Copy {
    /// The argument as an integer.
    fn value(self) -> i64;
}

impl TracedArg for i32 {
    fn value(self) -> i64 {
        i64::from(self)
    }
}

impl TracedArg for u32 {
    fn value(self) -> i64 {
        i64::from(self)
    }
}

impl TracedArg for i64 {
    fn value(self) -> i64 {
        self
    }
}

impl TracedArg for u64 {
    fn value(self) -> i64 {
        // Shown as the same bits; only WASI arguments are shown raw, and none of them is a u64.
        i64::from_ne_bytes(self.to_ne_bytes())
    }
}

/// A host function of any arity, linked with tracing around it.
pub(crate) trait HostFn<Args, R> {
    /// Defines the function as `module`.`name` in `linker`.
    fn link_as(
        self,
        linker: &mut Linker<HostState>,
        module: &str,
        name: &'static str,
    ) -> wasmtime::Result<()>;
}

/// Links a host function, recording each call when the instance traces host calls. proxy-wasm functions
/// have their arguments recorded as the memory module decodes them (pointers mean nothing to a reader);
/// WASI functions, whose arguments are mostly descriptors and clock ids, have them recorded as integers.
pub(crate) fn link<Args, R>(
    linker: &mut Linker<HostState>,
    module: &str,
    name: &'static str,
    f: impl HostFn<Args, R>,
) -> wasmtime::Result<()> {
    f.link_as(linker, module, name)
}

/// Starts the record of a call.
fn begin(caller: &mut Caller<'_, HostState>, name: &'static str, raw: bool, args: &[i64]) {
    let state = caller.data_mut();
    let context_id = state.contexts.effective;
    let args = if raw {
        args.iter().copied().map(HostCallArg::Int).collect()
    } else {
        Vec::new()
    };
    state.trace.begin(name, context_id, args);
}

/// Ends the record of a call with its outcome.
fn finish<R: TracedResult>(caller: &mut Caller<'_, HostState>, result: &wasmtime::Result<R>) {
    let status = match result {
        Ok(value) => value.status(),
        Err(error) => HostCallStatus::Trap(error.to_string()),
    };
    caller.data_mut().trace.finish(status);
}

macro_rules! host_fn {
    ($($arg:ident: $ty:ident),*) => {
        impl<F, R, $($ty),*> HostFn<($($ty,)*), R> for F
        where
            F: Fn(&mut Caller<'_, HostState>, $($ty),*) -> wasmtime::Result<R> + Send + Sync + 'static,
            R: TracedResult + 'static,
            wasmtime::Result<R>: WasmRet,
            $($ty: WasmTy + TracedArg + 'static,)*
        {
            fn link_as(
                self,
                linker: &mut Linker<HostState>,
                module: &str,
                name: &'static str,
            ) -> wasmtime::Result<()> {
                let raw = module != crate::abi::ENV;
                linker.func_wrap(
                    module,
                    name,
                    move |mut caller: Caller<'_, HostState>, $($arg: $ty),*| -> wasmtime::Result<R> {
                        if !caller.data().trace.enabled {
                            return self(&mut caller, $($arg),*);
                        }
                        begin(&mut caller, name, raw, &[$($arg.value()),*]);
                        let result = self(&mut caller, $($arg),*);
                        finish(&mut caller, &result);
                        result
                    },
                )?;
                Ok(())
            }
        }
    };
}

host_fn!();
host_fn!(a: A);
host_fn!(a: A, b: B);
host_fn!(a: A, b: B, c: C);
host_fn!(a: A, b: B, c: C, d: D);
host_fn!(a: A, b: B, c: C, d: D, e: E);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H, i: I);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H, i: I, j: J);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H, i: I, j: J, k: K);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H, i: I, j: J, k: K, l: L);
host_fn!(a: A, b: B, c: C, d: D, e: E, g: G, h: H, i: I, j: J, k: K, l: L, m: M);
