//! One proxy test's set-up in one sentence: a loopback upstream, the standalone proxy in front of it, and
//! a client through the proxy.
//!
//! ```no_run
//! # use integration_tests::scenario::{Scene, Scenario};
//! # use integration_tests::upstream::{Reply, Upstream};
//! # use integration_tests::client::HttpRequest;
//! let Scene { upstream, proxy } = Scenario::new()
//!     .upstream(Upstream::builder().route("/stuck", Reply::Never))
//!     .token("sk-ant-oat01-test")
//!     .config("request_timeout = \"300ms\"")
//!     .start()?;
//! let response = proxy.send(HttpRequest::get("/v1/models"))?;
//! let seen = upstream.wait_for_requests(1, std::time::Duration::from_secs(5))?;
//! # anyhow::Ok(())
//! ```
//!
//! Tests whose upstream is not an [`Upstream`] (a closed port, a raw socket) use
//! [`proxy`](crate::proxy_support::proxy) directly.

use crate::proxy_support::{ProxyBuilder, RunningProxy, proxy};
use crate::upstream::{Upstream, UpstreamBuilder};

/// What to start: an upstream (an echo unless told otherwise) and the proxy forwarding to it.
#[derive(Debug)]
pub struct Scenario {
    upstream: UpstreamBuilder,
    base_path: String,
    proxy: ProxyBuilder,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    /// An echoing upstream behind [`proxy`]: the workspace's filter, its embedded default configuration,
    /// and no credential.
    pub fn new() -> Self {
        Self {
            upstream: Upstream::builder(),
            base_path: String::new(),
            proxy: proxy(),
        }
    }

    /// The upstream to start instead of the echo.
    pub fn upstream(mut self, upstream: UpstreamBuilder) -> Self {
        self.upstream = upstream;
        self
    }

    /// A path the proxy's upstream URL ends in, which prefixes every forwarded request.
    pub fn upstream_path(mut self, path: &str) -> Self {
        path.clone_into(&mut self.base_path);
        self
    }

    /// The proxy's credential, as [`ProxyBuilder::token`].
    pub fn token(self, token: &str) -> Self {
        self.proxy(|proxy| proxy.token(token))
    }

    /// Lines of the proxy's TOML configuration, as [`ProxyBuilder::config`].
    pub fn config(self, toml: &str) -> Self {
        self.proxy(|proxy| proxy.config(toml))
    }

    /// The filter's configuration (JSON), as [`ProxyBuilder::plugin_config`].
    pub fn plugin_config(self, json: &str) -> Self {
        self.proxy(|proxy| proxy.plugin_config(json))
    }

    /// Any other proxy setting (workers, clusters, environment, another filter).
    pub fn proxy(mut self, configure: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> Self {
        self.proxy = configure(self.proxy);
        self
    }

    /// Starts the upstream, then the proxy pointed at it, and waits until the proxy is configured.
    ///
    /// # Errors
    /// Either fails to start, as [`UpstreamBuilder::start`] and [`ProxyBuilder::start`].
    pub fn start(self) -> anyhow::Result<Scene> {
        let upstream = self.upstream.start()?;
        let proxy = self
            .proxy
            .upstream(&upstream.url(&self.base_path))
            .start()?;
        Ok(Scene { proxy, upstream })
    }
}

/// A started [`Scenario`]. The proxy is declared first so it stops (and drains) before the upstream
/// goes away. Bind both fields when taking it apart (`upstream: _upstream` if unused): a field left to
/// `..` or `_` is dropped at once, and an upstream with it.
#[derive(Debug)]
pub struct Scene {
    /// The proxy under test; its [`RunningProxy::send`] is the client.
    pub proxy: RunningProxy,
    /// The upstream behind it, recording every request it receives.
    pub upstream: Upstream,
}
