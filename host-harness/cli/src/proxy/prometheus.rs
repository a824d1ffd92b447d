//! Prometheus metrics: the proxy's own and every metric the filter defined.
//!
//! The proxy's metrics are atomics shared by all workers; the hot path only bumps pre-created handles
//! (no label lookups, no locks except the histogram's short one). The filter's metrics are read from the
//! harness at scrape time by a collector, so they are never copied on the request path.

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

use host_harness::metrics::{HISTOGRAM_BUCKET_BOUNDS, MetricSnapshot, MetricValue};

/// Reads the filter's metrics, across all its VMs, at scrape time.
pub type MetricSource = Arc<dyn Fn() -> Vec<MetricSnapshot> + Send + Sync>;

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
    client_errors: Counter,
    open_connections: Gauge,
    connections_rejected: Counter,
}

impl ProxyMetrics {
    /// Registers the proxy's metrics and a collector for the filter's.
    pub fn new(filter: MetricSource) -> Self {
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
        let client_errors = errors.get_or_create_owned(&vec![("kind", "client_error")]);
        registry.register(
            "proxy_errors",
            "Requests the proxy answered itself, by reason",
            errors,
        );

        let open_connections = Gauge::default();
        registry.register(
            "proxy_open_connections",
            "Client connections open now, idle keep-alive ones included",
            open_connections.clone(),
        );
        let connections_rejected = Counter::default();
        registry.register(
            "proxy_connections_rejected",
            "Client connections closed on accept because max_connections were open",
            connections_rejected.clone(),
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
            client_errors,
            open_connections,
            connections_rejected,
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

    /// A request failed by the client's fault: a malformed or stalled body (400, 408), or a client that
    /// left mid-upload (499). Kept apart from the upstream's failures, which page someone.
    pub fn count_client_error(&self) {
        self.client_errors.inc();
    }

    /// A client connection was admitted.
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// An admitted client connection ended.
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// A client connection was closed on accept: `max_connections` were open.
    pub fn count_connection_rejected(&self) {
        self.connections_rejected.inc();
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
struct FilterMetrics {
    filter: MetricSource,
}

impl std::fmt::Debug for FilterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FilterMetrics")
    }
}

impl Collector for FilterMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in group_families((self.filter)()) {
            let (help, metric_type) = match family.kind {
                Kind::Counter => ("Counter defined by the filter", MetricType::Counter),
                Kind::Gauge => ("Gauge defined by the filter", MetricType::Gauge),
                Kind::Histogram => ("Histogram defined by the filter", MetricType::Histogram),
            };
            let mut family_encoder =
                encoder.encode_descriptor(&family.name, help, None, metric_type)?;
            match family.samples.as_slice() {
                // A lone sample without labels is written bare (`name 1`), as before tagged names.
                [(labels, value)] if labels.is_empty() => encode_value(value, family_encoder)?,
                samples => {
                    for (labels, value) in samples {
                        encode_value(value, family_encoder.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes one sample's value.
fn encode_value(value: &MetricValue, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
    match value {
        MetricValue::Counter(value) => ConstCounter::new(*value).encode(encoder),
        MetricValue::Gauge(level) => {
            ConstGauge::new(i64::try_from(*level).unwrap_or(i64::MAX)).encode(encoder)
        }
        MetricValue::Histogram(histogram) => {
            let bounds = HISTOGRAM_BUCKET_BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY));
            ConstHistogram {
                buckets: bounds.zip(histogram.buckets.iter().copied()).collect(),
                count: histogram.count,
                sum: histogram.sum as f64,
            }
            .encode(encoder)
        }
    }
}

/// A family's metric type; every sample of a family has the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn of(value: &MetricValue) -> Self {
        match value {
            MetricValue::Counter(_) => Self::Counter,
            MetricValue::Gauge(_) => Self::Gauge,
            MetricValue::Histogram(_) => Self::Histogram,
        }
    }
}

/// Label pairs of one sample, in the order the filter wrote them.
type SampleLabels = Vec<(String, String)>;

/// One exposition family: a name, a type, and a sample per label set.
#[derive(Debug)]
struct FilterFamily {
    name: String,
    kind: Kind,
    samples: Vec<(SampleLabels, MetricValue)>,
}

/// Groups the filter's metrics into families by base name, in first-seen order. A sample whose type
/// differs from its family's, or whose label set the family already has, is left out (a family must
/// have one type, and a sample one value).
fn group_families(metrics: Vec<MetricSnapshot>) -> Vec<FilterFamily> {
    let mut families: Vec<FilterFamily> = Vec::new();
    for metric in metrics {
        let kind = Kind::of(&metric.value);
        let (base, labels) = split_tagged_name(&metric.name);
        // The exposition adds `_total` to counters itself; a name that has it already keeps it once.
        let name = match kind {
            Kind::Counter => base.strip_suffix("_total").unwrap_or(&base).to_owned(),
            Kind::Gauge | Kind::Histogram => base,
        };
        match families.iter_mut().find(|family| family.name == name) {
            Some(family) => {
                if family.kind == kind && family.samples.iter().all(|(seen, _)| *seen != labels) {
                    family.samples.push((labels, metric.value));
                }
            }
            None => families.push(FilterFamily {
                name,
                kind,
                samples: vec![(labels, metric.value)],
            }),
        }
    }
    families
}

/// Splits a tagged metric name `<base>;<key>=<value>;...` into its sanitised base and its labels. A
/// name that does not follow the convention (a part without `=`, a key outside `[a-z_]+` or reserved,
/// a repeated key, a value with `=`, `"`, `\` or a control byte, an empty base) is no tagged name: it
/// is sanitised whole, as any other name, and has no labels.
pub fn split_tagged_name(raw: &str) -> (String, SampleLabels) {
    if let Some((base, tags)) = raw.split_once(';')
        && !base.is_empty()
        && let Some(labels) = parse_tags(tags)
    {
        return (metric_name(base), labels);
    }
    (metric_name(raw), Vec::new())
}

fn parse_tags(tags: &str) -> Option<SampleLabels> {
    let mut labels: SampleLabels = Vec::new();
    for part in tags.split(';') {
        let (key, value) = part.split_once('=')?;
        let key_ok = !key.is_empty()
            && key.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_')
            && !key.starts_with("__")
            // Reserved by the exposition for histogram buckets and summary quantiles.
            && key != "le"
            && key != "quantile";
        let value_ok = !value
            .bytes()
            .any(|byte| matches!(byte, b'=' | b'"' | b'\\') || byte.is_ascii_control());
        if !key_ok || !value_ok || labels.iter().any(|(seen, _)| seen == key) {
            return None;
        }
        labels.push((key.to_owned(), value.to_owned()));
    }
    Some(labels)
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
    use host_harness::metrics::Histogram as FilterHistogram;

    /// A source reporting exactly `metrics`, as the plugin's registry would.
    fn defined(metrics: &[(&str, MetricValue)]) -> MetricSource {
        let snapshots: Vec<MetricSnapshot> = metrics
            .iter()
            .map(|(name, value)| MetricSnapshot {
                name: (*name).to_owned(),
                value: value.clone(),
            })
            .collect();
        Arc::new(move || snapshots.clone())
    }

    /// A histogram holding `samples`, bucketed as the library buckets them.
    fn histogram(samples: &[u64]) -> MetricValue {
        let mut buckets = vec![0; HISTOGRAM_BUCKET_BOUNDS.len() + 1];
        for sample in samples {
            let index = HISTOGRAM_BUCKET_BOUNDS
                .iter()
                .position(|bound| *sample as f64 <= *bound)
                .unwrap_or(HISTOGRAM_BUCKET_BOUNDS.len());
            buckets[index] += 1;
        }
        MetricValue::Histogram(FilterHistogram {
            buckets,
            count: samples.len() as u64,
            sum: samples.iter().sum(),
        })
    }

    #[test]
    fn exposition_has_proxy_and_filter_metrics() {
        let metrics = ProxyMetrics::new(defined(&[
            (
                "credential_filter_credential_available",
                MetricValue::Gauge(1),
            ),
            ("filter.requests", MetricValue::Counter(7)),
            ("filter_latency_ms", histogram(&[1, 1, 5])),
        ]));
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

    fn exposition(metrics: &[(&str, MetricValue)]) -> String {
        ProxyMetrics::new(defined(metrics)).encode().unwrap()
    }

    fn lines_of<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|line| line.starts_with(family) || line.contains(&format!(" {family} ")))
            .collect()
    }

    #[test]
    fn tagged_names_render_as_one_family_with_labels() {
        let text = exposition(&[
            (
                "credential_filter_usage_tokens_total;caller=alice@example.com;model=claude-x;type=input",
                MetricValue::Counter(12),
            ),
            (
                "credential_filter_usage_tokens_total;caller=tag:ci,tag:server;model=claude-x;type=output",
                MetricValue::Counter(5),
            ),
            (
                "credential_filter_usage_unparsed_total",
                MetricValue::Counter(1),
            ),
        ]);
        assert_eq!(
            lines_of(&text, "credential_filter_usage_tokens"),
            [
                "# HELP credential_filter_usage_tokens Counter defined by the filter",
                "# TYPE credential_filter_usage_tokens counter",
                "credential_filter_usage_tokens_total{caller=\"alice@example.com\",model=\"claude-x\",type=\"input\"} 12",
                "credential_filter_usage_tokens_total{caller=\"tag:ci,tag:server\",model=\"claude-x\",type=\"output\"} 5",
            ],
            "{text}"
        );
        // An untagged counter is written bare, as before.
        assert!(
            text.contains("\ncredential_filter_usage_unparsed_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn tagged_histograms_keep_their_labels_on_every_series() {
        let text = exposition(&[(
            "credential_filter_usage_time_to_first_byte_milliseconds;model=claude-x",
            histogram(&[100, 250]),
        )]);
        let family = "credential_filter_usage_time_to_first_byte_milliseconds";
        assert!(
            text.contains(&format!("# TYPE {family} histogram")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{family}_sum{{model=\"claude-x\"}} 350.0")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{family}_bucket{{le=\"+Inf\",model=\"claude-x\"}} 2"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_family_keeps_one_type_and_one_value_per_label_set() {
        let text = exposition(&[
            ("m;kind=a", MetricValue::Counter(1)),
            ("m;kind=b", MetricValue::Gauge(9)),
            ("m;kind=a", MetricValue::Counter(2)),
            ("m_total;kind=c", MetricValue::Counter(3)),
        ]);
        assert_eq!(
            lines_of(&text, "m"),
            [
                "# HELP m Counter defined by the filter",
                "# TYPE m counter",
                "m_total{kind=\"a\"} 1",
                "m_total{kind=\"c\"} 3",
            ],
            "{text}"
        );
    }

    #[test]
    fn names_outside_the_tag_convention_are_sanitised_whole() {
        let cases = [
            ("a;b", "a_b"),
            ("x;Key=v", "x_Key_v"),
            ("x;k=1;k=2", "x_k_1_k_2"),
            (";k=v", "_k_v"),
            ("x;le=1", "x_le_1"),
            ("x;k=a=b", "x_k_a_b"),
            // A value trying to close the label and open another stays inside the name.
            ("m;caller=x\",evil=\"1", "m_caller_x__evil__1"),
            ("m;caller=back\\slash", "m_caller_back_slash"),
            ("m;caller=new\nline", "m_caller_new_line"),
        ];
        for (raw, sanitised) in cases {
            assert_eq!(
                split_tagged_name(raw),
                (sanitised.to_owned(), Vec::new()),
                "{raw}"
            );
        }
        assert_eq!(
            split_tagged_name("a.b;caller=Zoë Example;model="),
            (
                "a_b".to_owned(),
                vec![
                    ("caller".to_owned(), "Zoë Example".to_owned()),
                    ("model".to_owned(), String::new()),
                ]
            )
        );
        let text = exposition(&[("m;caller=x\",evil=\"1", MetricValue::Gauge(4))]);
        assert!(text.contains("\nm_caller_x__evil__1 4\n"), "{text}");
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(metric_name("a.b-c"), "a_b_c");
        assert_eq!(metric_name("9lives"), "_9lives");
    }
}
