//! Prometheus metrics: the proxy's own and every metric the filter defined.
//!
//! The proxy's metrics are atomics shared by all workers; the hot path only bumps pre-created handles
//! (no label lookups, no locks except the histogram's short one). The filter's metrics are read from the
//! harness at scrape time by a collector, so they are never copied on the request path.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::filter::{FilterFactory, FilterMetricValue};

/// Upper bounds (seconds) of the upstream latency histogram buckets.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Label set for per-class and per-kind counters.
type Labels = Vec<(&'static str, &'static str)>;

/// The proxy's metrics, shared by all workers.
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    responses_by_class: [Counter; 6],
    upstream_latency: Histogram,
    in_flight: Gauge,
    rejected_overload: Counter,
    upstream_timeouts: Counter,
    upstream_unreachable: Counter,
    filter_failures: Counter,
    identity_unavailable: Counter,
    identity_unknown: Counter,
}

impl ProxyMetrics {
    /// Registers the proxy's metrics and a collector for the filter's.
    pub fn new(filter: Arc<dyn FilterFactory>) -> Self {
        let mut registry = Registry::default();

        let responses: Family<Labels, Counter> = Family::default();
        let responses_by_class = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"]
            .map(|class| responses.get_or_create_owned(&vec![("class", class)]));
        registry.register(
            "proxy_requests",
            "Requests answered, by status class",
            responses,
        );

        let upstream_latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "proxy_upstream_latency_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );

        let in_flight = Gauge::default();
        registry.register(
            "proxy_in_flight_requests",
            "Requests being processed, streaming responses included",
            in_flight.clone(),
        );

        let errors: Family<Labels, Counter> = Family::default();
        let rejected_overload = errors.get_or_create_owned(&vec![("kind", "overload")]);
        let upstream_timeouts = errors.get_or_create_owned(&vec![("kind", "upstream_timeout")]);
        let upstream_unreachable =
            errors.get_or_create_owned(&vec![("kind", "upstream_unreachable")]);
        let filter_failures = errors.get_or_create_owned(&vec![("kind", "filter_failure")]);
        let identity_unavailable =
            errors.get_or_create_owned(&vec![("kind", "identity_unavailable")]);
        let identity_unknown = errors.get_or_create_owned(&vec![("kind", "identity_unknown")]);
        registry.register(
            "proxy_errors",
            "Requests the proxy answered itself, by reason",
            errors,
        );

        registry.register_collector(Box::new(FilterMetrics { filter }));
        Self {
            registry,
            responses_by_class,
            upstream_latency,
            in_flight,
            rejected_overload,
            upstream_timeouts,
            upstream_unreachable,
            filter_failures,
            identity_unavailable,
            identity_unknown,
        }
    }

    /// Counts a finished request by its status class.
    pub fn count_response(&self, status: u16) {
        let index = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        if let Some(counter) = self.responses_by_class.get(index) {
            counter.inc();
        }
    }

    /// Records the time the upstream took to answer with headers.
    pub fn observe_upstream_latency(&self, latency: Duration) {
        self.upstream_latency.observe(latency.as_secs_f64());
    }

    /// A request started.
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request finished (its response fully sent or abandoned).
    pub fn request_finished(&self) {
        self.in_flight.dec();
    }

    /// Requests being processed now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.get()
    }

    /// A request got 503 for overload.
    pub fn count_overload(&self) {
        self.rejected_overload.inc();
    }

    /// A request got 504 for an upstream timeout.
    pub fn count_upstream_timeout(&self) {
        self.upstream_timeouts.inc();
    }

    /// A request got 502 for an unreachable or failing upstream.
    pub fn count_upstream_unreachable(&self) {
        self.upstream_unreachable.inc();
    }

    /// A request failed because the filter trapped.
    pub fn count_filter_failure(&self) {
        self.filter_failures.inc();
    }

    /// A request got 503 because the caller's identity lookup failed.
    pub fn count_identity_unavailable(&self) {
        self.identity_unavailable.inc();
    }

    /// A request got 403 because tailscaled does not know the caller.
    pub fn count_identity_unknown(&self) {
        self.identity_unknown.inc();
    }

    /// The whole exposition in the OpenMetrics text format (which Prometheus scrapes).
    ///
    /// # Errors
    /// Formatting failed (only on a broken metric).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the filter's metrics from the harness on each scrape.
#[derive(Debug)]
struct FilterMetrics {
    filter: Arc<dyn FilterFactory>,
}

impl Collector for FilterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut seen = BTreeSet::new();
        for metric in self.filter.metrics() {
            let name = metric_name(&metric.name);
            if !seen.insert(name.clone()) {
                continue;
            }
            match metric.value {
                FilterMetricValue::Counter(value) => {
                    // The exposition adds `_total` to counters itself; a filter name that has it already
                    // keeps it once.
                    let name = name.strip_suffix("_total").unwrap_or(&name);
                    let counter = ConstCounter::new(value);
                    let metric_encoder = encoder.encode_descriptor(
                        name,
                        "Counter defined by the filter",
                        None,
                        counter.metric_type(),
                    )?;
                    counter.encode(metric_encoder)?;
                }
                FilterMetricValue::Gauge(value) => {
                    let gauge = ConstGauge::new(value);
                    let metric_encoder = encoder.encode_descriptor(
                        &name,
                        "Gauge defined by the filter",
                        None,
                        gauge.metric_type(),
                    )?;
                    gauge.encode(metric_encoder)?;
                }
                FilterMetricValue::Histogram {
                    buckets,
                    count,
                    sum,
                } => {
                    let histogram = ConstHistogram {
                        buckets,
                        count,
                        sum,
                    };
                    let metric_encoder = encoder.encode_descriptor(
                        &name,
                        "Histogram defined by the filter",
                        None,
                        histogram.metric_type(),
                    )?;
                    histogram.encode(metric_encoder)?;
                }
            }
        }
        Ok(())
    }
}

/// A histogram's state read at scrape time.
struct ConstHistogram {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A valid Prometheus metric name: characters outside `[a-zA-Z0-9_:]` become `_`, and a leading digit gets
/// a `_` in front.
pub fn metric_name(raw: &str) -> String {
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::proxy::filter::{FilterFault, FilterMetric, WorkerFilter};

    #[derive(Debug)]
    struct FixedMetrics;

    impl FilterFactory for FixedMetrics {
        fn create(&self, _worker: usize) -> Result<Box<dyn WorkerFilter>, FilterFault> {
            Err(FilterFault("not used".into()))
        }

        fn metrics(&self) -> Vec<FilterMetric> {
            vec![
                FilterMetric {
                    name: "credential_filter_credential_available".into(),
                    value: FilterMetricValue::Gauge(1),
                },
                FilterMetric {
                    name: "filter.requests".into(),
                    value: FilterMetricValue::Counter(7),
                },
                FilterMetric {
                    name: "filter_latency_ms".into(),
                    value: FilterMetricValue::Histogram {
                        buckets: vec![(1.0, 2), (f64::INFINITY, 1)],
                        count: 3,
                        sum: 7.0,
                    },
                },
            ]
        }
    }

    #[test]
    fn exposition_has_proxy_and_filter_metrics() {
        let metrics = ProxyMetrics::new(Arc::new(FixedMetrics));
        metrics.count_response(204);
        metrics.count_response(503);
        metrics.observe_upstream_latency(Duration::from_millis(3));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("proxy_requests_total{class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_requests_total{class=\"5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("proxy_upstream_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("credential_filter_credential_available 1"),
            "{text}"
        );
        assert!(text.contains("filter_requests_total 7"), "{text}");
        assert!(
            text.contains("filter_latency_ms_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(metric_name("a.b-c"), "a_b_c");
        assert_eq!(metric_name("9lives"), "_9lives");
    }
}
