//! Every metric the filter defines, in one place.
//!
//! The metrics of [`Metric`] are defined once per VM. In Envoy statistics they appear with the
//! `wasmcustom.` prefix, e.g. `wasmcustom.credential_filter_requests_total`.
//!
//! The usage metrics (`USAGE_*`) carry labels through tagged names
//! (`<base>;caller=...;model=...`, see [`crate::usage::labels`]) and are defined per label set when a
//! request first needs it; only their base names live here.

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
/// Counter: token requests started (oauth2).
pub const TOKEN_REFRESH_ATTEMPTS_TOTAL: &str = "credential_filter_token_refresh_attempts_total";
/// Counter: token requests that returned a token (oauth2).
pub const TOKEN_REFRESH_SUCCESS_TOTAL: &str = "credential_filter_token_refresh_success_total";
/// Counter: token requests the host refused to start.
pub const TOKEN_REFRESH_FAILURES_DISPATCH_TOTAL: &str =
    "credential_filter_token_refresh_failures_dispatch_total";
/// Counter: token requests without an answer within the timeout.
pub const TOKEN_REFRESH_FAILURES_TIMEOUT_TOTAL: &str =
    "credential_filter_token_refresh_failures_timeout_total";
/// Counter: token requests that could not reach the endpoint.
pub const TOKEN_REFRESH_FAILURES_UNREACHABLE_TOTAL: &str =
    "credential_filter_token_refresh_failures_unreachable_total";
/// Counter: non-2xx answers without an OAuth2 error body.
pub const TOKEN_REFRESH_FAILURES_HTTP_STATUS_TOTAL: &str =
    "credential_filter_token_refresh_failures_http_status_total";
/// Counter: answers that are not the expected JSON.
pub const TOKEN_REFRESH_FAILURES_MALFORMED_TOTAL: &str =
    "credential_filter_token_refresh_failures_malformed_total";
/// Counter: 2xx answers without `access_token`.
pub const TOKEN_REFRESH_FAILURES_MISSING_FIELD_TOTAL: &str =
    "credential_filter_token_refresh_failures_missing_field_total";
/// Counter: `invalid_grant` answers (refreshing stops).
pub const TOKEN_REFRESH_FAILURES_INVALID_GRANT_TOTAL: &str =
    "credential_filter_token_refresh_failures_invalid_grant_total";
/// Counter: other OAuth2 error answers.
pub const TOKEN_REFRESH_FAILURES_OAUTH_ERROR_TOTAL: &str =
    "credential_filter_token_refresh_failures_oauth_error_total";
/// Counter: tokens dropped after an upstream 401.
pub const TOKEN_INVALIDATED_TOTAL: &str = "credential_filter_token_invalidated_total";
/// Gauge: seconds until the current token expires (0 without one).
pub const TOKEN_SECONDS_TO_EXPIRY: &str = "credential_filter_token_seconds_to_expiry";
/// Gauge: 1 while refreshing is stopped (after `invalid_grant`), else 0.
pub const TOKEN_REFRESH_DISABLED: &str = "credential_filter_token_refresh_disabled";
/// Counter: requests paused to wait for a token.
pub const REQUESTS_HELD_TOTAL: &str = "credential_filter_requests_held_total";
/// Counter: requests that got no token (waited too long, or none could come).
pub const REQUESTS_FAILED_NO_TOKEN_TOTAL: &str = "credential_filter_requests_failed_no_token_total";

/// Counter, tagged `caller`, `model`, `type` (`input`, `output`, `cache_read`, `cache_creation`):
/// tokens used.
pub const USAGE_TOKENS_TOTAL: &str = "credential_filter_usage_tokens_total";
/// Counter, tagged `caller`, `model`, `status_class` (`1xx` to `5xx`): observed requests.
pub const USAGE_REQUESTS_TOTAL: &str = "credential_filter_usage_requests_total";
/// Counter, untagged: successful responses whose usage could not be read.
pub const USAGE_UNPARSED_TOTAL: &str = "credential_filter_usage_unparsed_total";
/// Histogram, tagged `model`: milliseconds from the request to the response headers.
pub const USAGE_TIME_TO_FIRST_BYTE_MILLISECONDS: &str =
    "credential_filter_usage_time_to_first_byte_milliseconds";

/// Every usage metric base name with its kind.
pub const USAGE_METRICS: [(&str, MetricKind); 4] = [
    (USAGE_TOKENS_TOTAL, MetricKind::Counter),
    (USAGE_REQUESTS_TOTAL, MetricKind::Counter),
    (USAGE_UNPARSED_TOTAL, MetricKind::Counter),
    (USAGE_TIME_TO_FIRST_BYTE_MILLISECONDS, MetricKind::Histogram),
];

/// The label keys of the tagged usage metrics, in the order names carry them.
pub const USAGE_LABEL_KEYS: [&str; 4] = ["caller", "model", "type", "status_class"];

/// The kind of a metric, as the host understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonically increasing count.
    Counter,
    /// A value that is set, not added to.
    Gauge,
    /// A distribution of recorded samples.
    Histogram,
}

/// A metric of the filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// [`TOKEN_REFRESH_ATTEMPTS_TOTAL`].
    TokenRefreshAttempts,
    /// [`TOKEN_REFRESH_SUCCESS_TOTAL`].
    TokenRefreshSuccess,
    /// [`TOKEN_REFRESH_FAILURES_DISPATCH_TOTAL`].
    RefreshFailedDispatch,
    /// [`TOKEN_REFRESH_FAILURES_TIMEOUT_TOTAL`].
    RefreshFailedTimeout,
    /// [`TOKEN_REFRESH_FAILURES_UNREACHABLE_TOTAL`].
    RefreshFailedUnreachable,
    /// [`TOKEN_REFRESH_FAILURES_HTTP_STATUS_TOTAL`].
    RefreshFailedHttpStatus,
    /// [`TOKEN_REFRESH_FAILURES_MALFORMED_TOTAL`].
    RefreshFailedMalformed,
    /// [`TOKEN_REFRESH_FAILURES_MISSING_FIELD_TOTAL`].
    RefreshFailedMissingField,
    /// [`TOKEN_REFRESH_FAILURES_INVALID_GRANT_TOTAL`].
    RefreshFailedInvalidGrant,
    /// [`TOKEN_REFRESH_FAILURES_OAUTH_ERROR_TOTAL`].
    RefreshFailedOAuthError,
    /// [`TOKEN_INVALIDATED_TOTAL`].
    TokenInvalidated,
    /// [`TOKEN_SECONDS_TO_EXPIRY`].
    TokenSecondsToExpiry,
    /// [`TOKEN_REFRESH_DISABLED`].
    TokenRefreshDisabled,
    /// [`REQUESTS_HELD_TOTAL`].
    RequestsHeld,
    /// [`REQUESTS_FAILED_NO_TOKEN_TOTAL`].
    RequestsFailedNoToken,
}

impl Metric {
    /// Every metric, in definition order; `index()` is the position here.
    pub const ALL: [Metric; 21] = [
        Metric::Requests,
        Metric::CredentialInjected,
        Metric::AccessDenied,
        Metric::CredentialUnavailable,
        Metric::RulesApplied,
        Metric::CredentialAvailable,
        Metric::TokenRefreshAttempts,
        Metric::TokenRefreshSuccess,
        Metric::RefreshFailedDispatch,
        Metric::RefreshFailedTimeout,
        Metric::RefreshFailedUnreachable,
        Metric::RefreshFailedHttpStatus,
        Metric::RefreshFailedMalformed,
        Metric::RefreshFailedMissingField,
        Metric::RefreshFailedInvalidGrant,
        Metric::RefreshFailedOAuthError,
        Metric::TokenInvalidated,
        Metric::TokenSecondsToExpiry,
        Metric::TokenRefreshDisabled,
        Metric::RequestsHeld,
        Metric::RequestsFailedNoToken,
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
            Self::TokenRefreshAttempts => TOKEN_REFRESH_ATTEMPTS_TOTAL,
            Self::TokenRefreshSuccess => TOKEN_REFRESH_SUCCESS_TOTAL,
            Self::RefreshFailedDispatch => TOKEN_REFRESH_FAILURES_DISPATCH_TOTAL,
            Self::RefreshFailedTimeout => TOKEN_REFRESH_FAILURES_TIMEOUT_TOTAL,
            Self::RefreshFailedUnreachable => TOKEN_REFRESH_FAILURES_UNREACHABLE_TOTAL,
            Self::RefreshFailedHttpStatus => TOKEN_REFRESH_FAILURES_HTTP_STATUS_TOTAL,
            Self::RefreshFailedMalformed => TOKEN_REFRESH_FAILURES_MALFORMED_TOTAL,
            Self::RefreshFailedMissingField => TOKEN_REFRESH_FAILURES_MISSING_FIELD_TOTAL,
            Self::RefreshFailedInvalidGrant => TOKEN_REFRESH_FAILURES_INVALID_GRANT_TOTAL,
            Self::RefreshFailedOAuthError => TOKEN_REFRESH_FAILURES_OAUTH_ERROR_TOTAL,
            Self::TokenInvalidated => TOKEN_INVALIDATED_TOTAL,
            Self::TokenSecondsToExpiry => TOKEN_SECONDS_TO_EXPIRY,
            Self::TokenRefreshDisabled => TOKEN_REFRESH_DISABLED,
            Self::RequestsHeld => REQUESTS_HELD_TOTAL,
            Self::RequestsFailedNoToken => REQUESTS_FAILED_NO_TOKEN_TOTAL,
        }
    }

    /// Whether the metric is a counter or a gauge.
    pub fn kind(self) -> MetricKind {
        match self {
            Self::CredentialAvailable | Self::TokenSecondsToExpiry | Self::TokenRefreshDisabled => {
                MetricKind::Gauge
            }
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
        assert_eq!(Metric::TokenSecondsToExpiry.kind(), MetricKind::Gauge);
        for (name, kind) in USAGE_METRICS {
            assert!(
                name.strip_prefix("credential_filter_")
                    .is_some_and(|rest| rest.starts_with("usage_"))
            );
            assert_eq!(
                name.ends_with("_total"),
                kind == MetricKind::Counter,
                "{name}"
            );
            assert!(Metric::ALL.iter().all(|metric| metric.name() != name));
        }
        for metric in Metric::ALL {
            let counter = metric.name().ends_with("_total");
            assert_eq!(
                counter,
                metric.kind() == MetricKind::Counter,
                "{}",
                metric.name()
            );
        }
    }
}
