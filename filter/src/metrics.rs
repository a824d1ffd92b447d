//! Every metric the filter defines, in one place.
//!
//! Metrics are defined once per VM. In Envoy statistics they appear with the
//! `wasmcustom.` prefix, e.g. `wasmcustom.credential_filter_requests_total`.

/// Counter: requests seen by the filter.
pub const REQUESTS_TOTAL: &str = "credential_filter_requests_total";
/// Counter: requests forwarded with the credential injected.
pub const CREDENTIAL_INJECTED_TOTAL: &str = "credential_filter_credential_injected_total";
/// Counter: requests refused by the access policy (local 403).
pub const ACCESS_DENIED_TOTAL: &str = "credential_filter_access_denied_total";
/// Counter: requests that found no usable credential (503, or forwarded bare).
pub const CREDENTIAL_UNAVAILABLE_TOTAL: &str = "credential_filter_credential_unavailable_total";
/// Counter: header rules that changed a request or response.
pub const RULES_APPLIED_TOTAL: &str = "credential_filter_rules_applied_total";
/// Gauge: 1 while this VM holds a usable credential, else 0.
pub const CREDENTIAL_AVAILABLE: &str = "credential_filter_credential_available";

/// The kind of a metric, as the host understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that is set, not added to.
    Gauge,
}

/// A metric of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// [`REQUESTS_TOTAL`].
    Requests,
    /// [`CREDENTIAL_INJECTED_TOTAL`].
    CredentialInjected,
    /// [`ACCESS_DENIED_TOTAL`].
    AccessDenied,
    /// [`CREDENTIAL_UNAVAILABLE_TOTAL`].
    CredentialUnavailable,
    /// [`RULES_APPLIED_TOTAL`].
    RulesApplied,
    /// [`CREDENTIAL_AVAILABLE`].
    CredentialAvailable,
}

impl Metric {
    /// Every metric, in definition order; `index()` is the position here.
    pub const ALL: [Metric; 6] = [
        Metric::Requests,
        Metric::CredentialInjected,
        Metric::AccessDenied,
        Metric::CredentialUnavailable,
        Metric::RulesApplied,
        Metric::CredentialAvailable,
    ];

    /// The metric name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Requests => REQUESTS_TOTAL,
            Self::CredentialInjected => CREDENTIAL_INJECTED_TOTAL,
            Self::AccessDenied => ACCESS_DENIED_TOTAL,
            Self::CredentialUnavailable => CREDENTIAL_UNAVAILABLE_TOTAL,
            Self::RulesApplied => RULES_APPLIED_TOTAL,
            Self::CredentialAvailable => CREDENTIAL_AVAILABLE,
        }
    }

    /// Whether the metric is a counter or a gauge.
    pub fn kind(self) -> MetricKind {
        match self {
            Self::CredentialAvailable => MetricKind::Gauge,
            _ => MetricKind::Counter,
        }
    }

    /// Position in [`Metric::ALL`], for id tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_indexed_in_order() {
        for (position, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric.index(), position);
            assert!(metric.name().starts_with("credential_filter_"));
            let same = Metric::ALL
                .iter()
                .filter(|other| other.name() == metric.name())
                .count();
            assert_eq!(same, 1, "{}", metric.name());
        }
        assert_eq!(Metric::CredentialAvailable.kind(), MetricKind::Gauge);
        assert_eq!(Metric::Requests.kind(), MetricKind::Counter);
    }
}
