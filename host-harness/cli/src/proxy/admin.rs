//! The admin listener: `/healthz`, `/readyz` and `/metrics`, outside the concurrency limit.
//!
//! It runs on the runtime that called [`crate::proxy::run`], apart from the workers, so it keeps answering
//! while the workers are saturated or draining.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::product::{DefaultCredential, ReadinessGate};
use super::worker::ProxyState;

/// Admin connections open at once; more are closed on accept, so slow clients cannot pile up.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// Time an admin client gets to send a request head.
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the proxy should receive traffic, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Filter configured on every worker and the readiness metric at its minimum.
    Ready,
    /// Not ready; the reason is shown on `/readyz`.
    NotReady(NotReady),
}

/// Why the proxy is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Shutting down: load balancers should stop sending traffic.
    Draining,
    /// A worker has not configured its filter yet.
    NotConfigured,
    /// The readiness metric is below its minimum (by default: the filter has no usable credential).
    Unavailable,
    /// The filter has not defined the readiness metric.
    Unreported,
}

impl NotReady {
    /// The text `/readyz` shows; the metric's two reasons are settings.
    pub fn reason<'a>(&self, gate: &'a ReadinessGate) -> &'a str {
        match self {
            Self::Draining => "draining",
            Self::NotConfigured => "filter not configured yet",
            Self::Unavailable => &gate.unavailable_reason,
            Self::Unreported => &gate.unreported_reason,
        }
    }
}

/// Readiness from the shared state and the configured filter metric.
pub fn readiness(shared: &ProxyState) -> Readiness {
    if shared.draining.load(Ordering::Acquire) {
        return Readiness::NotReady(NotReady::Draining);
    }
    if !shared.configured.load(Ordering::Acquire) {
        return Readiness::NotReady(NotReady::NotConfigured);
    }
    let gate = &shared.config.readiness;
    let Some(metric) = gate.metric.as_deref() else {
        return Readiness::Ready;
    };
    match shared.plugin.metric(metric) {
        Some(value) if value.as_u64().is_some_and(|value| value >= gate.minimum) => {
            Readiness::Ready
        }
        Some(_) => Readiness::NotReady(NotReady::Unavailable),
        None => Readiness::NotReady(NotReady::Unreported),
    }
}

/// The embedded default's variables as `/readyz` names them: `A or B`, `A, B or C`.
fn candidate_variables(candidates: &[DefaultCredential]) -> String {
    let names: Vec<&str> = candidates
        .iter()
        .map(|candidate| candidate.env_var.as_str())
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((only, _)) => (*only).to_owned(),
        None => String::new(),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers one admin request.
pub fn respond(shared: &ProxyState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        // With the embedded default, say which credential is in use (or wanted), never its value.
        "/readyz" => match (readiness(shared), &shared.config.default_credential) {
            (Readiness::Ready, None) => text(StatusCode::OK, "ready\n"),
            (Readiness::Ready, Some(credential)) => {
                text(StatusCode::OK, format!("ready: credential {credential}\n"))
            }
            (Readiness::NotReady(NotReady::Unavailable), Some(_)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "not ready: {} (set {})\n",
                    NotReady::Unavailable.reason(&shared.config.readiness),
                    candidate_variables(&shared.config.default_credentials)
                ),
            ),
            (Readiness::NotReady(why), _) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", why.reason(&shared.config.readiness)),
            ),
        },
        "/metrics" => match shared.metrics.encode() {
            Ok(exposition) => {
                let mut response = text(StatusCode::OK, exposition);
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz or /metrics\n",
        ),
    }
}

/// Serves admin connections until the future is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<ProxyState>) {
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT);
    let http = Arc::new(http);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!("admin connection refused: {MAX_ADMIN_CONNECTIONS} already open");
            continue;
        };
        let shared = Arc::clone(&shared);
        let http = Arc::clone(&http);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&shared, request.method(), request.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(err) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(variables: &[&str]) -> String {
        let candidates: Vec<DefaultCredential> = variables
            .iter()
            .map(|variable| DefaultCredential {
                env_var: (*variable).to_owned(),
                header: "h".to_owned(),
                plugin_config: String::new(),
            })
            .collect();
        candidate_variables(&candidates)
    }

    #[test]
    fn the_readiness_hint_names_every_candidate_variable() {
        assert_eq!(named(&[]), "");
        assert_eq!(named(&["A"]), "A");
        assert_eq!(named(&["A", "B"]), "A or B");
        assert_eq!(named(&["A", "B", "C"]), "A, B or C");
    }
}
