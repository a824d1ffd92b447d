//! The SDK's helper methods of `HttpContext` that the filter never calls, overridden so they cost
//! nothing.
//!
//! The SDK keeps each HTTP context as a `Box<dyn HttpContext>`, and a trait object's table holds
//! every method of the trait: the 54 host-call helpers (`get_http_request_header`,
//! `set_http_response_trailers_bytes`, ...) would be compiled for [`super::stream::FilterStream`]
//! with the SDK's wrappers behind them, about 5 KB of the module, though the filter reaches the host
//! through [`super::abi`] and `proxy_wasm::hostcalls` only. Overridden here, each is one call to a
//! shared trap: if a later change ever called one, the VM would stop at once rather than act on a
//! value the filter never meant to read.

/// Stops the VM: a helper the filter does not use was called.
#[cold]
#[inline(never)]
pub(super) fn unused_sdk_helper() -> ! {
    core::arch::wasm32::unreachable()
}

/// Overrides the listed `HttpContext` helpers (argument types only) with [`unused_sdk_helper`].
macro_rules! unused_http_helpers {
    ($(fn $name:ident($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        $(
            fn $name(&self, $(_: $arg),*) $(-> $ret)? {
                super::unused::unused_sdk_helper()
            }
        )*
    };
}

pub(super) use unused_http_helpers;
