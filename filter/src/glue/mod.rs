//! The proxy-wasm glue: the only module that talks to the host.
//!
//! The root context validates the configuration, resolves the credential and
//! defines the metrics; each HTTP context fetches headers (as bytes, so
//! non-UTF-8 values are fine), asks [`crate::engine`] what to do and carries
//! the decision out. Trailers lose the credential and stripped headers too.
//! Request bodies are never looked at; with usage accounting on, the response
//! bodies of generations are read as they pass (see [`usage`]), never held or
//! changed.
//!
//! With the `oauth2` source the root context also owns the VM's
//! [`TokenManager`]: it ticks it, starts its token requests (only the root
//! context starts them, so an answer never depends on a request that may have
//! gone away), and carries out its commands. A request without a token is
//! paused and remembered; when a token arrives (or the wait ends) the root
//! switches to that request's context with `proxy_set_effective_context`,
//! finishes its pipeline and resumes it (or answers it), then switches back.
//! While a request is held its body and trailer callbacks return `Pause`, so
//! the host cannot send it on without a credential.
//!
//! # Layout
//! - `root`: the root context: configuration, the token manager's commands, held requests.
//! - `stream`: the HTTP context of one request: its callbacks and what it shares with the root.
//! - `effects`: carrying a decision out on the host: metrics, header edits, local answers.
//! - `usage`: the host side of usage accounting.
//! - `unused`: the SDK's `HttpContext` helpers the filter never calls, overridden to cost nothing.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, Status};

use crate::by_context::ByContext;
use crate::config::FilterConfig;
use crate::credential::Credential;
use crate::token::endpoint::TokenRequest;
use crate::token::manager::{DispatchError, Host, SetError, TokenManager, Write};

use crate::sys::abi;
mod effects;
mod root;
mod stream;
mod unused;
mod usage;

use abi::now_ms;
use root::FilterRoot;
use stream::StreamShared;

/// Registers the root context with the SDK; called once from `_initialize`.
pub fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| {
        Box::new(FilterRoot {
            context_id,
            ..FilterRoot::default()
        })
    });
}

/// What every HTTP context of a configured root shares.
struct Configured {
    config: FilterConfig,
    /// Where the credential comes from: one source, never both.
    source: Source,
    /// Usage accounting, when on.
    usage: Option<usage::UsageState>,
}

/// The configured credential at run time.
enum Source {
    /// An `env` or `inline` credential, resolved once at configure time.
    Static(Credential),
    /// `oauth2`: tokens fetched and refreshed by this VM's token manager.
    OAuth2(Rc<Tokens>),
    /// The source could not be resolved (logged at configure time); requests follow
    /// `on_missing_credential`.
    Unavailable,
}

impl Configured {
    /// The static credential, if that is the source.
    fn credential(&self) -> Option<&Credential> {
        match &self.source {
            Source::Static(credential) => Some(credential),
            Source::OAuth2(_) | Source::Unavailable => None,
        }
    }

    /// The token state, if the source is `oauth2` and its client could be set up.
    fn tokens(&self) -> Option<&Rc<Tokens>> {
        match &self.source {
            Source::OAuth2(tokens) => Some(tokens),
            Source::Static(_) | Source::Unavailable => None,
        }
    }
}

/// The `oauth2` source's run-time state in this VM.
struct Tokens {
    manager: RefCell<TokenManager>,
    /// Requests paused for a token, by context id.
    held: RefCell<ByContext<Rc<StreamShared>>>,
    root_id: u32,
}

/// The shared-data and http-call host calls the token manager needs.
struct HostPort;

impl Host for HostPort {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError> {
        // A cas no stored value can have: Envoy (and the harness) insert an absent key whatever the
        // cas, and refuse to overwrite a present one unless the cas matches.
        let cas = match write {
            Write::IfAbsent => u32::MAX,
            Write::IfCas(cas) => cas,
        };
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }

    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, DispatchError> {
        let mut headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Some(authorization) = &request.authorization {
            headers.push(("authorization", authorization.expose()));
        }
        hostcalls::dispatch_http_call(
            &request.cluster,
            headers,
            Some(request.body.expose().as_bytes()),
            Vec::new(),
            request.timeout,
        )
        .map_err(|status| match status {
            Status::BadArgument => DispatchError::BadArgument,
            Status::InternalFailure => DispatchError::InternalFailure,
            _ => DispatchError::Unexpected,
        })
    }
}

/// 64 random bits: WASI `random_get`, with the clock mixed in (through SplitMix64's finaliser) so two
/// VMs differ even on a host whose random source is weak or fails.
fn random_u64() -> u64 {
    let mut mixed = abi::random_u64().unwrap_or(0) ^ abi::now_nanos();
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^ (mixed >> 31)
}
