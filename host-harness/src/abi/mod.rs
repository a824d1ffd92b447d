//! The proxy-wasm ABI v0.2.1 as this host provides it: one declarative table of every host function, in
//! the spec's order, with its area, whether it is implemented, and the statuses it may return.
//!
//! Every host function (WASI's too) is linked through `crate::trace::link`, the one place a call passes
//! through on its way in and out, which records it when the VM traces host calls.
//!
//! The table drives linking: `add_to_linker` hands each name to its area's `add_to_linker`, so a name in
//! the table without a host function (or the reverse) fails loudly. It also backs the table in
//! `specs/host-harness.md` and lets tools such as `host-harness validate` say what a module's imports are.
//!
//! Layout (one file per area):
//! - `memory`: bounds-checked guest memory, the only place guest pointers are followed
//! - `status`: the status codes a guest can be handed
//! - `codec`: header-map and property-path encodings
//! - `context`, `log`, `time`, `buffers`, `headers`, `stream_control`, `http_calls`, `grpc`,
//!   `shared_data`, `queues`, `metrics`, `properties`, `foreign`: the host functions of each area

mod buffers;
mod codec;
mod context;
mod foreign;
mod grpc;
mod headers;
mod http_calls;
mod log;
pub(crate) mod memory;
mod metrics;
mod properties;
mod queues;
mod shared_data;
mod status;
mod stream_control;
mod time;

pub use status::Status;

use wasmtime::Linker;

use crate::state::HostState;

/// The import module of every proxy-wasm host function.
pub(crate) const ENV: &str = "env";

/// The ABI area a host function belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Area {
    /// Context lifecycle.
    Context,
    /// Logging.
    Log,
    /// Clocks and timers.
    Time,
    /// Buffers (bodies, configuration, call responses).
    Buffers,
    /// Header and trailer maps.
    Headers,
    /// Continue, close, local responses.
    StreamControl,
    /// Http calls.
    HttpCalls,
    /// gRPC calls and streams.
    Grpc,
    /// Shared key-value data.
    SharedData,
    /// Shared queues.
    Queues,
    /// Metrics.
    Metrics,
    /// Properties.
    Properties,
    /// Foreign functions.
    Foreign,
}

/// Whether a host function does what the spec describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Implemented,
    /// Linked and safe to call, but the feature is absent: it returns a fixed spec status.
    Refused,
}

/// One host function of the ABI.
#[derive(Clone, Copy, Debug)]
pub struct HostImport {
    /// The import name in module `env`.
    pub name: &'static str,
    /// Its area.
    pub area: Area,
    /// Whether it is implemented.
    pub support: Support,
    /// Every status it may return (a trap is not a status).
    pub statuses: &'static [Status],
}

use Area as A;
use Status as S;
use Support::{Implemented as Yes, Refused as No};

const fn import(
    name: &'static str,
    area: Area,
    support: Support,
    statuses: &'static [Status],
) -> HostImport {
    HostImport {
        name,
        area,
        support,
        statuses,
    }
}

/// Every host function of ABI v0.2.1, in the spec's order.
pub const HOST_IMPORTS: [HostImport; 39] = [
    import("proxy_done", A::Context, Yes, &[S::Ok]),
    import(
        "proxy_set_effective_context",
        A::Context,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import("proxy_log", A::Log, Yes, &[S::Ok, S::BadArgument]),
    import("proxy_get_log_level", A::Log, Yes, &[S::Ok]),
    import("proxy_get_current_time_nanoseconds", A::Time, Yes, &[S::Ok]),
    import("proxy_set_tick_period_milliseconds", A::Time, Yes, &[S::Ok]),
    import(
        "proxy_set_buffer_bytes",
        A::Buffers,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_get_buffer_bytes",
        A::Buffers,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_get_buffer_status",
        A::Buffers,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_get_header_map_size",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_get_header_map_pairs",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_set_header_map_pairs",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_get_header_map_value",
        A::Headers,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_add_header_map_value",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_replace_header_map_value",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_remove_header_map_value",
        A::Headers,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_continue_stream",
        A::StreamControl,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_close_stream",
        A::StreamControl,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import("proxy_get_status", A::HttpCalls, Yes, &[S::Ok]),
    import("proxy_send_local_response", A::StreamControl, Yes, &[S::Ok]),
    import(
        "proxy_http_call",
        A::HttpCalls,
        Yes,
        &[S::Ok, S::BadArgument, S::InternalFailure],
    ),
    import(
        "proxy_grpc_call",
        A::Grpc,
        No,
        &[S::ParseFailure, S::InternalFailure],
    ),
    import(
        "proxy_grpc_stream",
        A::Grpc,
        No,
        &[S::ParseFailure, S::InternalFailure],
    ),
    import("proxy_grpc_send", A::Grpc, No, &[S::NotFound]),
    import("proxy_grpc_cancel", A::Grpc, No, &[S::NotFound]),
    import("proxy_grpc_close", A::Grpc, No, &[S::NotFound]),
    import(
        "proxy_set_shared_data",
        A::SharedData,
        Yes,
        &[S::Ok, S::CasMismatch],
    ),
    import(
        "proxy_get_shared_data",
        A::SharedData,
        Yes,
        &[S::Ok, S::NotFound],
    ),
    import("proxy_register_shared_queue", A::Queues, Yes, &[S::Ok]),
    import(
        "proxy_resolve_shared_queue",
        A::Queues,
        Yes,
        &[S::Ok, S::NotFound],
    ),
    import(
        "proxy_enqueue_shared_queue",
        A::Queues,
        Yes,
        &[S::Ok, S::NotFound],
    ),
    import(
        "proxy_dequeue_shared_queue",
        A::Queues,
        Yes,
        &[S::Ok, S::NotFound, S::Empty],
    ),
    import(
        "proxy_define_metric",
        A::Metrics,
        Yes,
        &[S::Ok, S::BadArgument],
    ),
    import(
        "proxy_record_metric",
        A::Metrics,
        Yes,
        &[S::Ok, S::NotFound],
    ),
    import(
        "proxy_increment_metric",
        A::Metrics,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_get_metric",
        A::Metrics,
        Yes,
        &[S::Ok, S::NotFound, S::BadArgument],
    ),
    import(
        "proxy_get_property",
        A::Properties,
        Yes,
        &[S::Ok, S::NotFound],
    ),
    import("proxy_set_property", A::Properties, Yes, &[S::Ok]),
    import(
        "proxy_call_foreign_function",
        A::Foreign,
        Yes,
        &[S::Ok, S::NotFound, S::InternalFailure],
    ),
];

/// The table entry for an `env` import name.
pub fn host_import(name: &str) -> Option<&'static HostImport> {
    HOST_IMPORTS.iter().find(|import| import.name == name)
}

/// Links every host function of the table, each through its area.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for import in &HOST_IMPORTS {
        let linked = match import.area {
            Area::Context => context::add_to_linker(linker, import.name)?,
            Area::Log => log::add_to_linker(linker, import.name)?,
            Area::Time => time::add_to_linker(linker, import.name)?,
            Area::Buffers => buffers::add_to_linker(linker, import.name)?,
            Area::Headers => headers::add_to_linker(linker, import.name)?,
            Area::StreamControl => stream_control::add_to_linker(linker, import.name)?,
            Area::HttpCalls => http_calls::add_to_linker(linker, import.name)?,
            Area::Grpc => grpc::add_to_linker(linker, import.name)?,
            Area::SharedData => shared_data::add_to_linker(linker, import.name)?,
            Area::Queues => queues::add_to_linker(linker, import.name)?,
            Area::Metrics => metrics::add_to_linker(linker, import.name)?,
            Area::Properties => properties::add_to_linker(linker, import.name)?,
            Area::Foreign => foreign::add_to_linker(linker, import.name)?,
        };
        if !linked {
            return Err(wasmtime::Error::msg(format!(
                "the import table puts {} in area {:?}, which has no host function of that name",
                import.name, import.area
            )));
        }
    }
    Ok(())
}
