//! Who is calling: the caller identity the proxy resolves from a source the client cannot write, and the
//! identity headers it removes from every request before the filter sees it.
//!
//! Three modes (`[identity] mode`):
//! - `none` (the default): nothing is trusted; identity headers are removed and no `caller.*` property
//!   exists.
//! - `whois`: tailscaled's LocalAPI says who the TCP peer is ([`super::whois`]); the answer is kept per
//!   connection for `whois_cache_ttl`. A failed lookup refuses the request, it is never forwarded as
//!   someone else, and a failure is never cached.
//! - `trusted_proxy`: the login and name headers are read, then removed, only when the TCP peer is inside
//!   `trusted_proxies` (a front proxy such as `tailscale serve` on loopback that strips and sets them);
//!   from any other peer they are removed unread.
//!
//! The resolved [`Caller`] reaches the filter as the stream properties `caller.id`, `caller.login`,
//! `caller.display_name`, `caller.node`, `caller.tags` and `caller.source`, and the upstream only with
//! `forward_headers`.

use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::str::FromStr;
use std::time::{Duration, Instant};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::config::{ConfigError, DurationText};

/// Identity headers removed from every client request unless configured otherwise: those `tailscale
/// serve` sets or deletes before proxying.
pub const DEFAULT_IDENTITY_HEADERS: [&str; 6] = [
    "tailscale-user-login",
    "tailscale-user-name",
    "tailscale-user-profile-pic",
    "tailscale-app-capabilities",
    "tailscale-funnel-request",
    "tailscale-headers-info",
];

/// tailscaled's LocalAPI socket on Linux.
pub const DEFAULT_WHOIS_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";

/// Longest one WhoIs lookup may take by default.
const DEFAULT_WHOIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection's WhoIs answer is reused by default.
const DEFAULT_WHOIS_CACHE_TTL: Duration = Duration::from_secs(60);

/// The header a trusted front proxy puts the caller's login name in, by default.
const DEFAULT_LOGIN_HEADER: &str = "tailscale-user-login";

/// The header a trusted front proxy puts the caller's display name in, by default.
const DEFAULT_NAME_HEADER: &str = "tailscale-user-name";

/// Where the caller identity comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityMode {
    /// No source is trusted.
    None,
    /// tailscaled's LocalAPI WhoIs for the TCP peer.
    Whois,
    /// Headers set by a front proxy inside `trusted_proxies`.
    TrustedProxy,
}

impl IdentityMode {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Whois => "whois",
            Self::TrustedProxy => "trusted_proxy",
        }
    }
}

impl FromStr for IdentityMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" => Ok(Self::None),
            "whois" => Ok(Self::Whois),
            "trusted_proxy" => Ok(Self::TrustedProxy),
            _ => Err("expected none, whois or trusted_proxy".to_owned()),
        }
    }
}

/// An IP network written `ADDR/LEN` (or a bare address, one host).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the network; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, unmap(ip)) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| "expected an IP address or ADDR/LEN, e.g. 127.0.0.1/32".to_owned())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
        };
        let cidr = Self { network, prefix };
        let masked = cidr.network_address();
        if masked != network {
            return Err(format!(
                "host bits are set (the network is {masked}/{prefix})"
            ));
        }
        Ok(cidr)
    }
}

impl Cidr {
    fn network_address(&self) -> IpAddr {
        match self.network {
            IpAddr::V4(network) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(network) & mask).into())
            }
            IpAddr::V6(network) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(network) & mask).into())
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack listener's view of an IPv4 peer) as its IPv4 address.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The `[identity]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    mode: Option<String>,
    headers: Option<Vec<String>>,
    whois_socket: Option<PathBuf>,
    whois_timeout: Option<DurationText>,
    whois_cache_ttl: Option<DurationText>,
    trusted_proxies: Option<Vec<String>>,
    login_header: Option<String>,
    name_header: Option<String>,
    forward_headers: Option<bool>,
}

/// The identity flags: `--identity`, `--whois-socket`, `--trusted-proxy` (repeatable).
#[derive(Debug, Default, Clone)]
pub struct IdentityOverrides {
    /// `--identity none|whois|trusted_proxy`.
    pub mode: Option<String>,
    /// `--whois-socket PATH`.
    pub whois_socket: Option<PathBuf>,
    /// `--trusted-proxy CIDR`, repeatable; replaces the file's `trusted_proxies` when given.
    pub trusted_proxies: Vec<String>,
}

/// The identity setting, resolved and checked.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Where the caller identity comes from.
    pub mode: IdentityMode,
    /// Headers removed from every client request: the configured list plus the login and name headers.
    pub headers: Vec<HeaderName>,
    /// tailscaled's LocalAPI socket (mode `whois`).
    pub whois_socket: PathBuf,
    /// Longest one WhoIs lookup may take (mode `whois`).
    pub whois_timeout: Duration,
    /// How long a connection reuses its WhoIs answer; zero asks for every request (mode `whois`).
    pub whois_cache_ttl: Duration,
    /// Peers whose login and name headers are believed (mode `trusted_proxy`).
    pub trusted_proxies: Vec<Cidr>,
    /// Header carrying the caller's login name: read from a trusted proxy, sent upstream with
    /// `forward_headers`.
    pub login_header: HeaderName,
    /// Header carrying the caller's display name, likewise.
    pub name_header: HeaderName,
    /// Send the resolved identity upstream in `login_header` and `name_header`.
    pub forward_headers: bool,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        let login_header = HeaderName::from_static(DEFAULT_LOGIN_HEADER);
        let name_header = HeaderName::from_static(DEFAULT_NAME_HEADER);
        Self {
            mode: IdentityMode::None,
            headers: DEFAULT_IDENTITY_HEADERS
                .iter()
                .map(|name| HeaderName::from_static(name))
                .collect(),
            whois_socket: PathBuf::from(DEFAULT_WHOIS_SOCKET),
            whois_timeout: DEFAULT_WHOIS_TIMEOUT,
            whois_cache_ttl: DEFAULT_WHOIS_CACHE_TTL,
            trusted_proxies: Vec::new(),
            login_header,
            name_header,
            forward_headers: false,
        }
    }
}

fn header_name(field: &str, text: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| ConfigError::invalid(field, text, "not a valid HTTP header name"))
}

impl IdentityConfig {
    /// Resolves the `[identity]` table and the identity flags (flags win); relative paths in the file
    /// are taken relative to `base_dir`.
    ///
    /// # Errors
    /// A value that cannot be used, naming its field or flag (`identity.mode`, `--trusted-proxy`, ...).
    pub fn resolve(
        file: Option<IdentityFile>,
        overrides: &IdentityOverrides,
        base_dir: &std::path::Path,
    ) -> Result<Self, ConfigError> {
        let file = file.unwrap_or_default();
        let defaults = Self::default();
        let mode = match (&overrides.mode, &file.mode) {
            (Some(flag), _) => flag
                .parse()
                .map_err(|reason| ConfigError::invalid("--identity", flag, reason))?,
            (None, Some(field)) => field
                .parse()
                .map_err(|reason| ConfigError::invalid("identity.mode", field, reason))?,
            (None, None) => IdentityMode::None,
        };
        let login_header = match &file.login_header {
            Some(text) => header_name("identity.login_header", text)?,
            None => defaults.login_header,
        };
        let name_header = match &file.name_header {
            Some(text) => header_name("identity.name_header", text)?,
            None => defaults.name_header,
        };
        let mut headers = match &file.headers {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(index, text)| header_name(&format!("identity.headers[{index}]"), text))
                .collect::<Result<Vec<_>, _>>()?,
            None => defaults.headers,
        };
        // The headers the proxy believes from a trusted peer must never pass from anyone else.
        for name in [&login_header, &name_header] {
            if !headers.contains(name) {
                headers.push(name.clone());
            }
        }
        let whois_socket = match (&overrides.whois_socket, &file.whois_socket) {
            (Some(flag), _) => flag.clone(),
            (None, Some(field)) => base_dir.join(field),
            (None, None) => defaults.whois_socket,
        };
        let whois_timeout = match &file.whois_timeout {
            Some(text) => text.resolve("identity.whois_timeout")?,
            None => defaults.whois_timeout,
        };
        if whois_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "identity.whois_timeout",
                "0",
                "must be more than zero",
            ));
        }
        let whois_cache_ttl = match &file.whois_cache_ttl {
            Some(text) => text.resolve("identity.whois_cache_ttl")?,
            None => defaults.whois_cache_ttl,
        };
        let trusted_proxies = if overrides.trusted_proxies.is_empty() {
            parse_cidrs(
                file.trusted_proxies.as_deref().unwrap_or_default(),
                |index| format!("identity.trusted_proxies[{index}]"),
            )?
        } else {
            parse_cidrs(&overrides.trusted_proxies, |_| "--trusted-proxy".to_owned())?
        };
        if mode == IdentityMode::TrustedProxy && trusted_proxies.is_empty() {
            return Err(ConfigError::invalid(
                "identity.trusted_proxies",
                "[]",
                "mode trusted_proxy needs at least one CIDR (e.g. 127.0.0.1/32 for tailscale serve on loopback)",
            ));
        }
        Ok(Self {
            mode,
            headers,
            whois_socket,
            whois_timeout,
            whois_cache_ttl,
            trusted_proxies,
            login_header,
            name_header,
            forward_headers: file.forward_headers.unwrap_or(false),
        })
    }

    /// Whether a connection from `peer` may set the login and name headers.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.mode == IdentityMode::TrustedProxy
            && self.trusted_proxies.iter().any(|cidr| cidr.contains(peer))
    }
}

fn parse_cidrs(list: &[String], field: impl Fn(usize) -> String) -> Result<Vec<Cidr>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(index, text)| {
            text.trim()
                .parse()
                .map_err(|reason| ConfigError::invalid(&field(index), text, reason))
        })
        .collect()
}

/// How a caller's identity was learned (`caller.source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerSource {
    /// tailscaled's WhoIs.
    Whois,
    /// A trusted front proxy's headers.
    TrustedProxy,
}

impl CallerSource {
    /// The property value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whois => "whois",
            Self::TrustedProxy => "trusted_proxy",
        }
    }
}

/// Who sent a request, as the filter sees it in the `caller.*` properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `caller.id`: the login name, or a tagged node's tags joined with `,`.
    pub id: String,
    /// `caller.login`: the user's login name; `None` for a tagged node.
    pub login: Option<String>,
    /// `caller.display_name`: the user's display name, when known.
    pub display_name: Option<String>,
    /// `caller.node`: the node's name without the trailing dot, when known.
    pub node: Option<String>,
    /// `caller.tags`: the node's ACL tags joined with `,`, when it has any.
    pub tags: Option<String>,
    /// `caller.source`.
    pub source: CallerSource,
}

impl Caller {
    /// The stream properties (dotted path, value) this caller sets; absent fields set none.
    pub fn properties(&self) -> Vec<(&'static str, &str)> {
        let mut properties = vec![
            ("caller.id", self.id.as_str()),
            ("caller.source", self.source.as_str()),
        ];
        let optional = [
            ("caller.login", &self.login),
            ("caller.display_name", &self.display_name),
            ("caller.node", &self.node),
            ("caller.tags", &self.tags),
        ];
        for (path, value) in optional {
            if let Some(value) = value {
                properties.push((path, value.as_str()));
            }
        }
        properties
    }
}

/// Identity state of one client connection: its peer, whether it is a trusted proxy, and its cached
/// WhoIs answer.
#[derive(Debug)]
pub struct ConnectionIdentity {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The peer is inside `trusted_proxies` (mode `trusted_proxy`).
    pub trusted: bool,
    cached: RefCell<Option<(Rc<Caller>, Instant)>>,
}

impl ConnectionIdentity {
    /// The identity state of a new connection from `peer`.
    pub fn new(config: &IdentityConfig, peer: SocketAddr) -> Self {
        // tailscaled unmaps IPv4-mapped addresses itself; asking with the plain form reads better in its logs.
        let peer = SocketAddr::new(unmap(peer.ip()), peer.port());
        Self {
            peer,
            trusted: config.trusts(peer.ip()),
            cached: RefCell::new(None),
        }
    }

    /// The cached WhoIs answer while it is younger than `ttl`.
    fn fresh(&self, ttl: Duration) -> Option<Rc<Caller>> {
        let cached = self.cached.borrow();
        cached
            .as_ref()
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(caller, _)| Rc::clone(caller))
    }
}

/// Why a request is refused instead of forwarded without a known caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityRefusal {
    /// tailscaled could not say who the peer is (unreachable, slow, failing, or a bad answer).
    #[error("caller identity lookup failed: {0}")]
    Unavailable(String),
    /// tailscaled does not know the peer: it is not on the tailnet.
    #[error("the caller is not a known tailnet peer")]
    Unknown,
}

/// Removes every identity header from a client request and resolves the caller by the configured mode.
///
/// # Errors
/// Mode `whois` only: the lookup failed, or the peer is unknown.
pub async fn resolve(
    config: &IdentityConfig,
    connection: &ConnectionIdentity,
    headers: &mut HeaderMap,
) -> Result<Option<Rc<Caller>>, IdentityRefusal> {
    let from_proxy = if connection.trusted {
        caller_from_headers(config, headers)
    } else {
        None
    };
    strip(&config.headers, headers);
    match config.mode {
        IdentityMode::None => Ok(None),
        IdentityMode::TrustedProxy => Ok(from_proxy.map(Rc::new)),
        IdentityMode::Whois => {
            if let Some(caller) = connection.fresh(config.whois_cache_ttl) {
                return Ok(Some(caller));
            }
            let caller = Rc::new(
                super::whois::lookup(&config.whois_socket, connection.peer, config.whois_timeout)
                    .await?,
            );
            if !config.whois_cache_ttl.is_zero() {
                *connection.cached.borrow_mut() = Some((Rc::clone(&caller), Instant::now()));
            }
            Ok(Some(caller))
        }
    }
}

/// Removes every value of every header in `names`, also under a spelling with `_` for `-` (some
/// servers treat `tailscale_user_login` as `tailscale-user-login`). Names in a `HeaderMap` are already
/// lower case, so every case variant is covered.
pub fn strip(names: &[HeaderName], headers: &mut HeaderMap) {
    for name in names {
        headers.remove(name);
    }
    if headers.keys().any(|name| name.as_str().contains('_')) {
        let aliases: Vec<HeaderName> = headers
            .keys()
            .filter(|name| {
                let text = name.as_str();
                text.contains('_')
                    && names.iter().any(|wanted| {
                        wanted.as_str().len() == text.len()
                            && wanted
                                .as_str()
                                .bytes()
                                .zip(text.bytes())
                                .all(|(want, got)| want == got || (want == b'-' && got == b'_'))
                    })
            })
            .cloned()
            .collect();
        for name in aliases {
            headers.remove(name);
        }
    }
}

/// The caller a trusted front proxy named: the login header (exactly once, non-empty) and the name
/// header; `None` without a usable login.
fn caller_from_headers(config: &IdentityConfig, headers: &HeaderMap) -> Option<Caller> {
    let login = single_value(headers, &config.login_header)?;
    if login.is_empty() {
        return None;
    }
    let display_name = single_value(headers, &config.name_header).filter(|name| !name.is_empty());
    Some(Caller {
        id: login.clone(),
        login: Some(login),
        display_name,
        node: None,
        tags: None,
        source: CallerSource::TrustedProxy,
    })
}

/// The one value of `name`, decoded; `None` when absent, repeated (a front proxy sets it once, so a
/// second value means something upstream of it is wrong) or not text.
fn single_value(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        tracing::warn!(header = %name, "identity header sent more than once by a trusted proxy; ignored");
        return None;
    }
    let text = value.to_str().ok()?.trim();
    Some(decode_q_words(text).unwrap_or_else(|| text.to_owned()))
}

/// Decodes a value made of RFC 2047 `=?utf-8?q?...?=` words (how `tailscale serve` sends non-ASCII
/// names); `None` when the value is not such words, so it is used as it is.
fn decode_q_words(text: &str) -> Option<String> {
    if !text.starts_with("=?") {
        return None;
    }
    let mut bytes = Vec::new();
    for word in text.split_ascii_whitespace() {
        let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
        let mut parts = inner.splitn(3, '?');
        let charset = parts.next()?;
        let encoding = parts.next()?;
        let encoded = parts.next()?;
        if !charset.eq_ignore_ascii_case("utf-8") || !encoding.eq_ignore_ascii_case("q") {
            return None;
        }
        let mut rest = encoded.bytes();
        while let Some(byte) = rest.next() {
            match byte {
                b'_' => bytes.push(b' '),
                b'=' => {
                    let high = (rest.next()? as char).to_digit(16)?;
                    let low = (rest.next()? as char).to_digit(16)?;
                    bytes.push(u8::try_from(high * 16 + low).ok()?);
                }
                other => bytes.push(other),
            }
        }
    }
    String::from_utf8(bytes).ok()
}

/// Encodes a value for an HTTP header as `tailscale serve` does: ASCII as it is, anything else as one
/// RFC 2047 `=?utf-8?q?...?=` word.
fn encode_q_word(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let mut out = String::from("=?utf-8?q?");
    for byte in text.bytes() {
        match byte {
            b' ' => out.push('_'),
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'*' | b'+' | b'-' | b'/' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("={byte:02X}")),
        }
    }
    out.push_str("?=");
    out
}

/// With `forward_headers`, sets the caller's login and display name on the upstream request (a tagged
/// node has neither, as with `tailscale serve`); replaces whatever the filter left there.
pub fn forward(config: &IdentityConfig, caller: Option<&Caller>, headers: &mut HeaderMap) {
    if !config.forward_headers {
        return;
    }
    headers.remove(&config.login_header);
    headers.remove(&config.name_header);
    let Some(caller) = caller else { return };
    let pairs = [
        (&config.login_header, &caller.login),
        (&config.name_header, &caller.display_name),
    ];
    for (name, value) in pairs {
        if let Some(value) = value
            && let Ok(value) = HeaderValue::from_str(&encode_q_word(value))
        {
            headers.insert(name.clone(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_match_their_network_only() {
        assert!(cidr("127.0.0.1/32").contains("127.0.0.1".parse().unwrap()));
        assert!(!cidr("127.0.0.1/32").contains("127.0.0.2".parse().unwrap()));
        assert!(cidr("10.0.0.0/8").contains("10.200.3.4".parse().unwrap()));
        assert!(!cidr("10.0.0.0/8").contains("127.0.0.1".parse().unwrap()));
        assert!(cidr("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(cidr("fd7a:115c:a1e0::/48").contains("fd7a:115c:a1e0::5".parse().unwrap()));
        assert!(!cidr("::1/128").contains("127.0.0.1".parse().unwrap()));
        // A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d.
        assert!(cidr("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("0 to 32")
        );
        assert!("localhost".parse::<Cidr>().is_err());
        assert!("10.0.0.0/".parse::<Cidr>().is_err());
    }

    fn resolve_with(file: &str, overrides: &IdentityOverrides) -> Result<IdentityConfig, String> {
        let file: IdentityFile = toml::from_str(file).map_err(|err| err.to_string())?;
        IdentityConfig::resolve(Some(file), overrides, std::path::Path::new("/etc/proxy"))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn defaults_strip_the_tailscale_headers_and_trust_nobody() {
        let config = resolve_with("", &IdentityOverrides::default()).unwrap();
        assert_eq!(config.mode, IdentityMode::None);
        let names: Vec<&str> = config.headers.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, DEFAULT_IDENTITY_HEADERS);
        assert_eq!(config.whois_timeout, Duration::from_secs(2));
        assert_eq!(config.whois_cache_ttl, Duration::from_secs(60));
        assert!(!config.trusts("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_login_and_name_headers_are_always_stripped() {
        let config = resolve_with(
            r#"headers = ["x-extra"]
               login_header = "X-Auth-User""#,
            &IdentityOverrides::default(),
        )
        .unwrap();
        let names: Vec<&str> = config.headers.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-extra", "x-auth-user", "tailscale-user-name"]);
    }

    #[test]
    fn flags_override_the_table() {
        let overrides = IdentityOverrides {
            mode: Some("trusted_proxy".into()),
            whois_socket: Some("/run/ts.sock".into()),
            trusted_proxies: vec!["10.0.0.0/8".into()],
        };
        let config = resolve_with(
            r#"mode = "whois"
               whois_socket = "ts.sock"
               trusted_proxies = ["127.0.0.1/32"]"#,
            &overrides,
        )
        .unwrap();
        assert_eq!(config.mode, IdentityMode::TrustedProxy);
        assert_eq!(config.whois_socket, PathBuf::from("/run/ts.sock"));
        assert!(config.trusts("10.1.2.3".parse().unwrap()));
        assert!(!config.trusts("127.0.0.1".parse().unwrap()));
        let file_only =
            resolve_with(r#"whois_socket = "ts.sock""#, &IdentityOverrides::default()).unwrap();
        assert_eq!(file_only.whois_socket, PathBuf::from("/etc/proxy/ts.sock"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let none = IdentityOverrides::default();
        let cases = [
            (r#"mode = "tailnet""#, "invalid identity.mode \"tailnet\""),
            (r#"mode = "trusted_proxy""#, "identity.trusted_proxies"),
            (
                r#"trusted_proxies = ["10.0.0.1/8"]"#,
                "invalid identity.trusted_proxies[0] \"10.0.0.1/8\"",
            ),
            (r#"headers = ["bad header"]"#, "identity.headers[0]"),
            (r#"whois_timeout = "0s""#, "identity.whois_timeout"),
            (r#"whois_timeout = "3 days""#, "identity.whois_timeout"),
            (r#"cache = "1s""#, "unknown field `cache`"),
        ];
        for (file, wanted) in cases {
            let err = resolve_with(file, &none).unwrap_err();
            assert!(err.contains(wanted), "{file}: {err}");
        }
        let flag = IdentityOverrides {
            mode: Some("whoami".into()),
            ..IdentityOverrides::default()
        };
        assert!(
            resolve_with("", &flag)
                .unwrap_err()
                .starts_with("invalid --identity \"whoami\"")
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn stripping_removes_every_value_and_underscore_spellings() {
        let config = IdentityConfig::default();
        let mut map = headers(&[
            ("Tailscale-User-Login", "alice@example.com"),
            ("TAILSCALE-USER-LOGIN", "bob@example.com"),
            ("tailscale_user_login", "carol@example.com"),
            ("tailscale-user-name", "Alice"),
            ("caller.id", "alice@example.com"),
            ("tailscale-user-loginx", "kept"),
            ("x_other", "kept"),
        ]);
        strip(&config.headers, &mut map);
        let mut left: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["caller.id", "tailscale-user-loginx", "x_other"]);
    }

    #[test]
    fn a_trusted_proxys_headers_become_the_caller() {
        let config = resolve_with(
            r#"mode = "trusted_proxy"
               trusted_proxies = ["127.0.0.1/32"]"#,
            &IdentityOverrides::default(),
        )
        .unwrap();
        let map = headers(&[
            ("tailscale-user-login", " alice@example.com "),
            ("tailscale-user-name", "=?utf-8?q?Zo=C3=AB_Example?="),
        ]);
        let caller = caller_from_headers(&config, &map).unwrap();
        assert_eq!(caller.id, "alice@example.com");
        assert_eq!(caller.display_name.as_deref(), Some("Zoë Example"));
        assert_eq!(caller.source, CallerSource::TrustedProxy);
        let twice = headers(&[
            ("tailscale-user-login", "alice@example.com"),
            ("tailscale-user-login", "bob@example.com"),
        ]);
        assert_eq!(caller_from_headers(&config, &twice), None);
        assert_eq!(
            caller_from_headers(&config, &headers(&[("tailscale-user-login", "")])),
            None
        );
    }

    #[test]
    fn forwarding_sets_login_and_name_and_encodes_non_ascii() {
        let mut config = IdentityConfig::default();
        let caller = Caller {
            id: "zoe@example.com".into(),
            login: Some("zoe@example.com".into()),
            display_name: Some("Zoë Example".into()),
            node: None,
            tags: None,
            source: CallerSource::Whois,
        };
        let mut map = headers(&[("tailscale-user-login", "from-the-filter")]);
        forward(&config, Some(&caller), &mut map);
        assert_eq!(map["tailscale-user-login"], "from-the-filter");
        config.forward_headers = true;
        forward(&config, Some(&caller), &mut map);
        assert_eq!(map["tailscale-user-login"], "zoe@example.com");
        assert_eq!(map["tailscale-user-name"], "=?utf-8?q?Zo=C3=AB_Example?=");
        assert_eq!(
            decode_q_words("=?utf-8?q?Zo=C3=AB_Example?=").as_deref(),
            Some("Zoë Example")
        );
        forward(&config, None, &mut map);
        assert!(map.is_empty());
    }

    #[test]
    fn properties_leave_absent_fields_out() {
        let tagged = Caller {
            id: "tag:ci,tag:server".into(),
            login: None,
            display_name: None,
            node: Some("runner.tail1234.ts.net".into()),
            tags: Some("tag:ci,tag:server".into()),
            source: CallerSource::Whois,
        };
        assert_eq!(
            tagged.properties(),
            [
                ("caller.id", "tag:ci,tag:server"),
                ("caller.source", "whois"),
                ("caller.node", "runner.tail1234.ts.net"),
                ("caller.tags", "tag:ci,tag:server"),
            ]
        );
    }
}
