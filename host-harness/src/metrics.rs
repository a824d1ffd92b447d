//! Custom metrics a plugin defines, shared by all VMs of the plugin as Envoy's stats are.
//!
//! Envoy keys a stat by name, so a counter defined by every worker's VM is one counter. The same holds
//! here: a definition returns the id of the existing metric of that name and kind. Semantics follow Envoy:
//! recording on a counter adds, recording on a gauge sets, recording on a histogram adds a sample; a counter
//! only goes up (by at least 1); a histogram has no single value to read. Like Envoy, an id carries its
//! kind in the two low bits, and the answer for an id nobody defined depends on those bits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// The kind of a metric, as `proxy_define_metric` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only goes up (`COUNTER`, 0).
    Counter,
    /// Goes up and down (`GAUGE`, 1).
    Gauge,
    /// A distribution of samples (`HISTOGRAM`, 2).
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_abi(value: u32) -> Option<Self> {
        match value {
            0 => Some(MetricKind::Counter),
            1 => Some(MetricKind::Gauge),
            2 => Some(MetricKind::Histogram),
            _ => None,
        }
    }
}

/// Upper bounds of the histogram buckets: Envoy's default bucket bounds.
pub const HISTOGRAM_BUCKET_BOUNDS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// The state of a histogram: bucket counts (cumulative counts are the embedder's to compute), count and sum.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Samples per bucket: `buckets[i]` counts samples at most `HISTOGRAM_BUCKET_BOUNDS[i]` and above the
    /// previous bound; the last entry counts samples above every bound.
    pub buckets: Vec<u64>,
    /// Number of samples.
    pub count: u64,
    /// Sum of all samples (saturating).
    pub sum: u64,
}

impl Histogram {
    fn record(&mut self, sample: u64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; HISTOGRAM_BUCKET_BOUNDS.len() + 1];
        }
        // Samples are integers; comparing as f64 loses nothing below 2^53, far beyond any bound here.
        let index = HISTOGRAM_BUCKET_BOUNDS
            .iter()
            .position(|bound| (sample as f64) <= *bound)
            .unwrap_or(HISTOGRAM_BUCKET_BOUNDS.len());
        if let Some(bucket) = self.buckets.get_mut(index) {
            *bucket = bucket.saturating_add(1);
        }
        self.count = self.count.saturating_add(1);
        self.sum = self.sum.saturating_add(sample);
    }
}

/// The value of a metric at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's current value.
    Gauge(u64),
    /// A histogram's samples.
    Histogram(Histogram),
}

impl MetricValue {
    /// The counter or gauge value; `None` for a histogram.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetricValue::Counter(value) | MetricValue::Gauge(value) => Some(*value),
            MetricValue::Histogram(_) => None,
        }
    }
}

/// One metric in a [`MetricsRegistry::snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricSnapshot {
    /// The name the plugin gave it.
    pub name: String,
    /// Its current value.
    pub value: MetricValue,
}

/// Why a metric operation from the guest failed; each maps to the status Envoy returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricError {
    /// No metric has this id.
    NotFound,
    /// The operation does not apply to this kind (or would decrease a counter).
    BadArgument,
}

/// The metrics of one plugin; cheap to clone, shared by every VM of the plugin.
#[derive(Clone, Debug, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Metrics>>,
}

#[derive(Debug, Default)]
struct Metrics {
    by_name: HashMap<(String, MetricKind), u32>,
    /// Every metric, in definition order.
    entries: Vec<(String, MetricValue)>,
    /// Per kind, in id order, the index of each metric in `entries`.
    by_kind: [Vec<usize>; 3],
}

/// Most metrics one registry holds: a plugin defining names without end cannot grow the host without end.
pub const MAX_METRICS: usize = 10_000;

/// How many low bits of an id hold the kind.
const KIND_BITS: u32 = 2;

impl MetricKind {
    fn code(self) -> u32 {
        match self {
            MetricKind::Counter => 0,
            MetricKind::Gauge => 1,
            MetricKind::Histogram => 2,
        }
    }
}

/// The kind bits of an id: `None` for the fourth value, which no kind uses.
fn kind_of(id: u32) -> Option<MetricKind> {
    MetricKind::from_abi(id & ((1 << KIND_BITS) - 1))
}

impl MetricsRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Metrics> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every metric defined so far, in definition order.
    pub fn snapshot(&self) -> Vec<MetricSnapshot> {
        self.lock()
            .entries
            .iter()
            .map(|(name, value)| MetricSnapshot {
                name: name.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// The value of the metric named `name` (the first defined, should several kinds share a name).
    pub fn get(&self, name: &str) -> Option<MetricValue> {
        self.lock()
            .entries
            .iter()
            .find(|(entry_name, _)| entry_name == name)
            .map(|(_, value)| value.clone())
    }

    /// Defines (or finds) the metric `name` of `kind` and returns its id (ids start at 1).
    /// `None` once the registry holds [`MAX_METRICS`] metrics.
    pub(crate) fn define(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut metrics = self.lock();
        let key = (name.to_owned(), kind);
        if let Some(id) = metrics.by_name.get(&key) {
            return Some(*id);
        }
        if metrics.entries.len() >= MAX_METRICS {
            return None;
        }
        let value = match kind {
            MetricKind::Counter => MetricValue::Counter(0),
            MetricKind::Gauge => MetricValue::Gauge(0),
            MetricKind::Histogram => MetricValue::Histogram(Histogram::default()),
        };
        let index = metrics.entries.len();
        metrics.entries.push((name.to_owned(), value));
        let kind_list = &mut metrics.by_kind[kind.code() as usize];
        let position = u32::try_from(kind_list.len()).unwrap_or(u32::MAX >> KIND_BITS);
        kind_list.push(index);
        let id = (position << KIND_BITS) | kind.code();
        metrics.by_name.insert(key, id);
        Some(id)
    }

    /// Runs `f` on the metric `id`, or reports it missing.
    fn with_entry<R>(
        &self,
        id: u32,
        f: impl FnOnce(&mut MetricValue) -> Result<R, MetricError>,
    ) -> Result<R, MetricError> {
        let mut metrics = self.lock();
        let kind = kind_of(id).ok_or(MetricError::NotFound)?;
        let position = usize::try_from(id >> KIND_BITS).map_err(|_| MetricError::NotFound)?;
        let index = *metrics.by_kind[kind.code() as usize]
            .get(position)
            .ok_or(MetricError::NotFound)?;
        let (_, value) = metrics
            .entries
            .get_mut(index)
            .ok_or(MetricError::NotFound)?;
        f(value)
    }

    /// Envoy: counters go up by a positive delta only, gauges both ways; any other kind is BAD_ARGUMENT
    /// whether or not the id exists.
    pub(crate) fn increment(&self, id: u32, delta: i64) -> Result<(), MetricError> {
        if !matches!(kind_of(id), Some(MetricKind::Counter | MetricKind::Gauge)) {
            return Err(MetricError::BadArgument);
        }
        self.with_entry(id, |value| match value {
            MetricValue::Counter(total) => {
                let delta = u64::try_from(delta)
                    .ok()
                    .filter(|delta| *delta > 0)
                    .ok_or(MetricError::BadArgument)?;
                *total = total.saturating_add(delta);
                Ok(())
            }
            MetricValue::Gauge(current) => {
                *current = if delta >= 0 {
                    current.saturating_add(delta.unsigned_abs())
                } else {
                    current.saturating_sub(delta.unsigned_abs())
                };
                Ok(())
            }
            MetricValue::Histogram(_) => Err(MetricError::BadArgument),
        })
    }

    /// Envoy: counters add, gauges take the value, histograms sample it; an unknown id is NOT_FOUND.
    pub(crate) fn record(&self, id: u32, sample: u64) -> Result<(), MetricError> {
        self.with_entry(id, |value| {
            match value {
                MetricValue::Counter(total) => *total = total.saturating_add(sample),
                MetricValue::Gauge(current) => *current = sample,
                MetricValue::Histogram(histogram) => histogram.record(sample),
            }
            Ok(())
        })
    }

    /// Envoy: counters and gauges have a value; any other kind is BAD_ARGUMENT whether or not it exists.
    pub(crate) fn value(&self, id: u32) -> Result<u64, MetricError> {
        if !matches!(kind_of(id), Some(MetricKind::Counter | MetricKind::Gauge)) {
            return Err(MetricError::BadArgument);
        }
        self.with_entry(id, |value| value.as_u64().ok_or(MetricError::BadArgument))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defining_a_name_twice_returns_the_same_metric() {
        let registry = MetricsRegistry::new();
        let first = registry
            .define(MetricKind::Counter, "requests")
            .unwrap_or(u32::MAX);
        let second = registry
            .define(MetricKind::Counter, "requests")
            .unwrap_or(u32::MAX);
        assert_eq!(first, second);
        assert_eq!(registry.snapshot().len(), 1);
    }

    #[test]
    fn counters_refuse_to_go_down_and_histograms_have_no_value() {
        let registry = MetricsRegistry::new();
        let counter = registry
            .define(MetricKind::Counter, "c")
            .unwrap_or(u32::MAX);
        assert_eq!(
            registry.increment(counter, -1),
            Err(MetricError::BadArgument)
        );
        registry.record(counter, 5).ok();
        assert_eq!(registry.value(counter), Ok(5));
        let histogram = registry
            .define(MetricKind::Histogram, "h")
            .unwrap_or(u32::MAX);
        registry.record(histogram, 7).ok();
        assert_eq!(registry.value(histogram), Err(MetricError::BadArgument));
        assert_eq!(
            registry.value(99),
            Err(MetricError::BadArgument),
            "kind bits 3: no such kind"
        );
        assert_eq!(
            registry.value(96),
            Err(MetricError::NotFound),
            "kind bits 0: an unknown counter"
        );
        assert_eq!(
            registry.increment(counter, 0),
            Err(MetricError::BadArgument),
            "a counter goes up by 1 or more"
        );
        assert!(matches!(
            registry.get("h"),
            Some(MetricValue::Histogram(Histogram {
                count: 1,
                sum: 7,
                ..
            }))
        ));
    }

    #[test]
    fn gauges_move_both_ways_and_record_sets_them() {
        let registry = MetricsRegistry::new();
        let gauge = registry.define(MetricKind::Gauge, "g").unwrap_or(u32::MAX);
        registry.increment(gauge, 5).ok();
        registry.increment(gauge, -2).ok();
        assert_eq!(registry.value(gauge), Ok(3));
        registry.record(gauge, 10).ok();
        assert_eq!(registry.get("g"), Some(MetricValue::Gauge(10)));
    }
}
