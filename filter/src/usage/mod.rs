//! Token usage per caller and model, read from Messages API responses as they pass.
//!
//! The filter observes generations (`/v1/messages`): it reads the response body chunk by chunk as the
//! host hands it over, never holding, delaying or changing a byte, and extracts the model, the four
//! token counts and the stop reason, from JSON and from event streams, plain or gzip/deflate encoded.
//! At the end of the stream it writes one `usage {...}` log line and adds to the usage metrics, which
//! carry their labels in tagged names. Distinct callers and models are capped across all VMs, the rest
//! counted as `other`. `specs/filter.md` ("Usage") describes the behaviour.
//!
//! Everything here is pure: time comes in as milliseconds, shared data through
//! [`admission::SharedStore`]; the glue carries out the host calls.
//!
//! # Layout
//! - [`parse`]: incremental, memory-bounded readers of one response body (JSON and SSE, gzip/deflate).
//! - [`observe`]: which requests are observed; one observed request from arrival to record.
//! - [`record`]: the usage record, its log line and the metric updates it accounts for.
//! - [`caller`]: who a request is attributed to.
//! - [`labels`]: label values and tagged metric names.
//! - [`admission`]: the caps on distinct callers and models, shared by every VM.

pub mod admission;
pub mod caller;
pub mod labels;
pub mod observe;
pub mod parse;
pub mod record;

/// Default cap on distinct callers.
pub const DEFAULT_MAX_CALLERS: usize = 64;
/// Default cap on distinct models.
pub const DEFAULT_MAX_MODELS: usize = 16;
/// Default largest data of a kept event, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 65_536;

/// The validated `usage` section; present in [`crate::config::FilterConfig`] only when usage is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageConfig {
    /// Distinct callers counted under their own label; the rest are `other`.
    pub max_callers: usize,
    /// Distinct models counted under their own label; the rest are `other`.
    pub max_models: usize,
    /// Largest data of a kept event (`message_start`, `message_delta`) read, in bytes.
    pub max_event_bytes: usize,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            max_callers: DEFAULT_MAX_CALLERS,
            max_models: DEFAULT_MAX_MODELS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}
