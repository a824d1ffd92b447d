//! The host side of usage accounting: what the pure [`crate::usage`] core needs from the host, and
//! what it asks the host to do.
//!
//! A stream of an observed request carries an [`Observation`]: started in `on_http_request_headers`,
//! told the response status, content type, encoding and time to first byte in
//! `on_http_response_headers`, shown every response body chunk in `on_http_response_body` (which
//! always continues: the bytes are copied out for reading, never held, delayed or changed), and turned
//! into a record in `on_log`: one `info` line and the metric updates, each metric defined the first time
//! its label set occurs in this VM. With usage off none of this exists and nothing is read.

use hashbrown::HashMap;
use std::cell::RefCell;

use log::{Level, debug, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MetricType};

use super::abi::{self, HostStatus};
use super::{HostPort, now_ms, stream};
use crate::access::CallerFacts;
use crate::config::FilterConfig;
use crate::headers::{HeaderList, same_bytes};
use crate::metrics::{MetricKind, USAGE_UNPARSED_TOTAL};
use crate::token::manager::{Host, SetError, Write};
use crate::usage::UsageConfig;
use crate::usage::admission::{Admission, CALLERS_KEY, MODELS_KEY, SharedStore};
use crate::usage::caller;
use crate::usage::labels::{UNKNOWN, sanitize};
use crate::usage::observe::{Observation, ResponseStart, observes};
use crate::usage::record::{LineWriter, UsageRecord, UsageSeries};

/// Most usage metrics one VM defines. The caps bound the label sets; this keeps a host with a limit
/// on metrics (the harness allows 10,000 per plugin) from ever being asked for more.
const MAX_USAGE_METRICS: usize = 8_192;

/// A VM's usage accounting state, shared by its streams through the configured root state.
pub(super) struct UsageState {
    config: UsageConfig,
    callers: RefCell<Admission>,
    models: RefCell<Admission>,
    /// Host ids of the usage metrics this VM has defined, by tagged name: each name is defined once,
    /// whichever label pair first needs it.
    metric_ids: RefCell<HashMap<String, u32>>,
    /// The place in `series_ids` of each label pair, by [`pair_key`]: a request finds its ids without
    /// formatting a tagged name. Keyed by one string, as `metric_ids` is, rather than by caller then
    /// model: one map type is one copy of the hash table's code in the module.
    series_places: RefCell<HashMap<String, u32>>,
    /// The ids of each label pair, by [`UsageSeries::index`]; one entry per pair in `series_places`.
    series_ids: RefCell<Vec<SeriesIds>>,
    /// The usage line's buffer, kept from request to request rather than allocated for each, with the
    /// time of the second last written.
    line: RefCell<LineWriter>,
    /// The last label pair and its place in `series_ids`, in front of `series_places`: requests of one
    /// caller and model in a row, the usual case, find their ids by two comparisons instead of a
    /// hashed look-up.
    recent: RefCell<Option<RecentPair>>,
}

/// The label pair whose ids [`UsageState::recent`] holds.
struct RecentPair {
    caller: String,
    model: String,
    /// Where `series_ids` holds the pair's ids.
    place: usize,
}

/// The map key of the label pair `caller`, `model`: the two labels with a `\n` between them, a byte
/// no sanitised label holds, so two pairs never share a key.
fn pair_key(caller: &str, model: &str) -> String {
    let mut key = String::with_capacity(caller.len() + 1 + model.len());
    key.push_str(caller);
    key.push('\n');
    key.push_str(model);
    key
}

/// The host ids of one caller and model label pair's series; `None` until first needed.
type SeriesIds = [Option<u32>; UsageSeries::COUNT];

impl UsageState {
    /// The state for a configuration with usage on; defines the unlabelled unparsed counter, so it
    /// reads 0 until something goes wrong.
    pub(super) fn new(config: UsageConfig) -> Self {
        let state = Self {
            config,
            callers: RefCell::new(Admission::new(CALLERS_KEY, config.max_callers)),
            models: RefCell::new(Admission::new(MODELS_KEY, config.max_models)),
            metric_ids: RefCell::new(HashMap::new()),
            series_places: RefCell::new(HashMap::new()),
            series_ids: RefCell::new(Vec::new()),
            line: RefCell::new(LineWriter::new()),
            recent: RefCell::new(None),
        };
        state.metric_id(USAGE_UNPARSED_TOTAL, MetricKind::Counter);
        state
    }

    /// The host id of the metric `name`, defined now if this VM has not yet.
    fn metric_id(&self, name: &str, kind: MetricKind) -> Option<u32> {
        let mut ids = self.metric_ids.borrow_mut();
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        if ids.len() >= MAX_USAGE_METRICS {
            debug!("usage metric {name} not defined: this VM holds {MAX_USAGE_METRICS} already");
            return None;
        }
        let host_kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(host_kind, name) {
            Ok(id) => {
                ids.insert(name.to_owned(), id);
                Some(id)
            }
            Err(status) => {
                warn!("cannot define metric {name}: {status:?}");
                None
            }
        }
    }

    /// The place in `series_ids` of the label pair `caller`, `model`, taken now if the pair is new.
    fn place_of(&self, caller: &str, model: &str) -> usize {
        let key = pair_key(caller, model);
        let mut places = self.series_places.borrow_mut();
        if let Some(&place) = places.get(key.as_str()) {
            return place as usize;
        }
        let mut all_ids = self.series_ids.borrow_mut();
        let place = all_ids.len();
        // One place per label pair, so far below `u32::MAX`: the caps bound the pairs.
        places.insert(key, u32::try_from(place).unwrap_or(u32::MAX));
        all_ids.push([None; UsageSeries::COUNT]);
        place
    }

    /// Adds the record's samples to the series of the label pair `caller`, `model`, defining each
    /// series the first time this VM sees it.
    fn apply(&self, record: &UsageRecord, caller: &str, model: &str) {
        let mut recent = self.recent.borrow_mut();
        let is_recent = recent.as_ref().is_some_and(|recent| {
            same_bytes(recent.caller.as_bytes(), caller.as_bytes())
                && same_bytes(recent.model.as_bytes(), model.as_bytes())
        });
        if !is_recent {
            let place = self.place_of(caller, model);
            // The buffers of the pair before are reused: no allocation unless a label is longer.
            let pair = recent.get_or_insert_with(|| RecentPair {
                caller: String::new(),
                model: String::new(),
                place,
            });
            pair.caller.clear();
            pair.caller.push_str(caller);
            pair.model.clear();
            pair.model.push_str(model);
            pair.place = place;
        }
        let Some(RecentPair { place, .. }) = recent.as_ref() else {
            return;
        };
        let mut all_ids = self.series_ids.borrow_mut();
        let Some(ids) = all_ids.get_mut(*place) else {
            return;
        };
        record.for_each_sample(|series, value| {
            let Some(slot) = ids.get_mut(series.index()) else {
                return;
            };
            let id = match *slot {
                Some(id) => id,
                None => match self.define_series(series, caller, model) {
                    Some(id) => *slot.insert(id),
                    None => return,
                },
            };
            // Straight to the host: the SDK's wrappers are a call more per sample.
            let sent = match series.kind() {
                MetricKind::Counter => {
                    abi::increment_metric(id, i64::try_from(value).unwrap_or(i64::MAX))
                }
                MetricKind::Gauge | MetricKind::Histogram => abi::record_metric(id, value),
            };
            if let Err(status) = sent {
                refused_update(series, status);
            }
        });
    }

    /// The host id of the series `series` of the label pair `caller`, `model`, defined now: once per
    /// series and VM, so out of line.
    #[cold]
    #[inline(never)]
    fn define_series(&self, series: UsageSeries, caller: &str, model: &str) -> Option<u32> {
        self.metric_id(&series.name(caller, model), series.kind())
    }
}

/// Logs a usage metric update the host refused, whatever the status, as the filter's own metrics
/// do. Out of line: it runs only when the host refuses.
#[cold]
#[inline(never)]
fn refused_update(series: UsageSeries, status: HostStatus) {
    debug!("cannot update usage metric {series:?}: {status}");
}

/// Starts observing a request, when usage is on and the request is a generation.
pub(super) fn start(
    config: &FilterConfig,
    usage: Option<&UsageState>,
    request: &HeaderList<'_>,
    facts: Option<&CallerFacts>,
    context_id: u32,
) -> Option<Box<Observation>> {
    usage?;
    if !observes(request.first(":path").unwrap_or_default()) {
        return None;
    }
    let caller = caller::resolve(config.access.as_ref(), request, facts, |path| {
        stream::property(path, context_id)
    });
    Some(Box::new(Observation::start(
        now_ms(),
        caller.as_deref(),
        request.first("x-request-id"),
    )))
}

/// The response headers arrived: status, framing, encoding, time to first byte. A map that could
/// not be read has none of them; the response then counts as one without a status.
pub(super) fn response_headers(
    observation: &mut Observation,
    usage: &UsageState,
    start: ResponseStart<'_>,
    end_of_stream: bool,
) {
    observation.response_headers(now_ms(), start, end_of_stream, &usage.config);
}

/// A response body chunk of `size` bytes passed; it is read, never changed.
///
/// The chunk is copied into the VM (one host call, one allocation, one copy: the SDK takes the
/// host's block as the `Vec`) only while the parser still reads; a body that is not read, or whose
/// parser has stopped, costs no host call. The end of the body is passed on either way.
pub(super) fn response_body(observation: &mut Observation, size: usize, end_of_stream: bool) {
    let chunk = if size > 0 && observation.reading_body() {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    } else {
        None
    };
    if chunk.is_some() || end_of_stream {
        observation.response_body(chunk.as_deref().unwrap_or_default(), end_of_stream);
    }
}

/// The stream is over: the usage line and the metric updates.
pub(super) fn finish(observation: Box<Observation>, usage: &UsageState) {
    let record = observation.finish(now_ms());
    let mut store = HostPort;
    let caller = record.caller.as_deref().map(sanitize);
    let model = record.model.as_deref().map(sanitize);
    // An absent caller or model is `unknown`, which is clean and never takes a place under a cap.
    let caller_label = caller.as_deref().map_or(UNKNOWN, |caller| {
        usage.callers.borrow_mut().label(&mut store, caller)
    });
    let model_label = model.as_deref().map_or(UNKNOWN, |model| {
        usage.models.borrow_mut().label(&mut store, model)
    });
    usage.apply(&record, caller_label, model_label);
    if let Some(reason) = record.unparsed {
        debug!(
            "response usage not read (status {}): {reason}",
            record.status
        );
    }
    // What `log_enabled!` would ask the SDK's logger, which enables exactly the levels up to the
    // maximum: asked directly, without two calls through the `log` crate (the static maximum is a
    // constant, folded away unless a build caps it).
    if Level::Info <= log::STATIC_MAX_LEVEL && Level::Info <= log::max_level() {
        // Straight to the host: through `info!` the finished line would be formatted into a copy.
        let mut writer = usage.line.borrow_mut();
        let line = writer.write(&record);
        if abi::log(LogLevel::Info, line).is_err() {
            // A refusal is the SDK's to handle, as it always was (it aborts the VM on a status
            // other than Ok): the line goes to its wrapper, as text, which repeats the call.
            let sent = std::str::from_utf8(line).map(|text| hostcalls::log(LogLevel::Info, text));
            if let Ok(Err(status)) = sent {
                debug!("the usage line was not logged: {status:?}");
            }
        }
    }
}

/// The same shared-data calls the token state uses.
impl SharedStore for HostPort {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        Host::get(self, key)
    }

    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError> {
        Host::set(self, key, value, write)
    }
}
