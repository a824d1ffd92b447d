//! A loopback stand-in for tailscaled's LocalAPI WhoIs on a unix socket, so `serve`'s identity lookup
//! can be tested without a tailnet.
//!
//! It speaks what the real daemon speaks (tailscale/tailscale `ipn/localapi/localapi.go`, the `whois`
//! handler, and `client/tailscale/apitype` `WhoIsResponse`):
//! - `GET /localapi/v0/whois?addr=IP:PORT` (or a bare `IP`) over HTTP/1.1 on a unix socket; the `Host`
//!   must be `local-tailscaled.sock` (what tailscale's own client sends) or empty, and a request with
//!   `Referer` or `Origin` is refused with `403 invalid localapi request`, as the daemon does.
//! - a known peer: `200`, `content-type: application/json`, a tab-indented JSON object with `Node`
//!   (`ID`, `StableID`, `Name` with a trailing dot, `User`, `Key`, `Addresses`, `AllowedIPs`, `Tags`,
//!   `Hostinfo`, ...), `UserProfile` (`ID`, `LoginName`, `DisplayName`, `ProfilePicURL` when set) and
//!   `CapMap`. A tagged node answers as control describes it: `Tags` set, and the shared
//!   `tagged-devices` user profile (`LoginName` `tagged-devices`, `DisplayName` `Tagged Devices`).
//! - errors as plain text with a trailing newline (Go's `http.Error`): a missing `addr` → `400 missing
//!   'addr' parameter`, an unparsable one → `400 invalid 'addr' parameter`, an unknown peer → `404 no
//!   match for IP:port`; a path outside the API → `404 page not found`.
//!
//! Peers are matched by IP (the port is ignored, as for tailnet addresses) unless registered with an
//! exact `IP:PORT`. Each test configures its own peers, delays and failures, and can count lookups to
//! assert caching. The socket lives in a fresh temporary directory; dropping the stand-in (or
//! [`WhoIs::stop`]) removes it, which is how a test makes tailscaled "down".
//!
//! ```no_run
//! # use integration_tests::whois::{PeerNode, WhoIs};
//! let whois = WhoIs::builder()
//!     .peer("127.0.0.1".parse()?, PeerNode::user("alice@example.com", "Alice Example", "laptop"))
//!     .start()?;
//! // ... configure the proxy with whois_socket = whois.socket_path() ...
//! whois.wait_for_lookups(1, std::time::Duration::from_secs(5))?;
//! # anyhow::Ok(())
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::oneshot;

/// The `Host` tailscale's LocalAPI client sends (`apitype.LocalAPIHost`).
pub const LOCAL_API_HOST: &str = "local-tailscaled.sock";

/// The login name control gives the user profile of every tagged node.
pub const TAGGED_DEVICES_LOGIN: &str = "tagged-devices";

/// The version the stand-in reports in `Tailscale-Version`.
const VERSION: &str = "1.88.3-t0000000000-g0000000000";

/// The capability version the stand-in reports in `Tailscale-Cap`.
const CAPABILITY_VERSION: u32 = 125;

/// The user id of the shared `tagged-devices` profile in the stand-in's tailnet.
const TAGGED_DEVICES_USER_ID: i64 = 55_000_000;

/// Node and user ids are handed out from here, so every peer in a test is distinct.
static NEXT_ID: AtomicI64 = AtomicI64::new(10_001);

/// A user profile as `tailcfg.UserProfile` serialises it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    /// `ID`: the user id.
    #[serde(rename = "ID")]
    pub id: i64,
    /// `LoginName`, e.g. `alice@example.com`; `tagged-devices` for a tagged node.
    pub login_name: String,
    /// `DisplayName`, e.g. `Alice Example`.
    pub display_name: String,
    /// `ProfilePicURL`, left out when empty (Go's `omitzero`).
    #[serde(rename = "ProfilePicURL", skip_serializing_if = "String::is_empty")]
    pub profile_pic_url: String,
}

/// One peer the stand-in knows: the node and the user profile the answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNode {
    /// `Node.ID`.
    pub id: i64,
    /// `Node.StableID`, e.g. `nX7kQ2CNTRL`.
    pub stable_id: String,
    /// `Node.Name`: the MagicDNS FQDN with its trailing dot, e.g. `laptop.tail1234.ts.net.`.
    pub name: String,
    /// `Node.Tags`: ACL tags in the order control sends them; empty for a user's node.
    pub tags: Vec<String>,
    /// `Node.Addresses`: the node's tailnet addresses as prefixes.
    pub addresses: Vec<String>,
    /// The user profile; for a tagged node the shared `tagged-devices` profile.
    pub user: UserProfile,
    /// `CapMap` of the answer (peer capabilities); `null` when `None`.
    pub cap_map: Option<serde_json::Value>,
}

impl PeerNode {
    /// The tailnet's MagicDNS suffix used for node names.
    pub const TAILNET: &'static str = "tail1234.ts.net";

    /// A node owned by a user: no tags, the user's own profile, name `<host>.tail1234.ts.net.`.
    pub fn user(login_name: &str, display_name: &str, host: &str) -> Self {
        let user_id = next_id();
        Self::with_profile(
            host,
            Vec::new(),
            UserProfile {
                id: user_id,
                login_name: login_name.to_owned(),
                display_name: display_name.to_owned(),
                profile_pic_url: String::new(),
            },
        )
    }

    /// A tagged node (a server or CI runner): `tags` in this order, the `tagged-devices` profile.
    pub fn tagged(tags: &[&str], host: &str) -> Self {
        Self::with_profile(
            host,
            tags.iter().map(|tag| (*tag).to_owned()).collect(),
            UserProfile {
                id: TAGGED_DEVICES_USER_ID,
                login_name: TAGGED_DEVICES_LOGIN.to_owned(),
                display_name: "Tagged Devices".to_owned(),
                profile_pic_url: String::new(),
            },
        )
    }

    /// Sets the user's `ProfilePicURL`.
    pub fn with_profile_pic(mut self, url: &str) -> Self {
        self.user.profile_pic_url = url.to_owned();
        self
    }

    /// Sets the answer's `CapMap` (e.g. `{"example.com/cap/llm": [{"models": ["*"]}]}`).
    pub fn with_cap_map(mut self, cap_map: serde_json::Value) -> Self {
        self.cap_map = Some(cap_map);
        self
    }

    /// `Node.Name` without its trailing dot.
    pub fn fqdn(&self) -> &str {
        self.name.trim_end_matches('.')
    }

    fn with_profile(host: &str, tags: Vec<String>, user: UserProfile) -> Self {
        let id = next_id();
        let low = u8::try_from(id % 250).unwrap_or(0) + 1;
        Self {
            id,
            stable_id: format!("n{id:X}CNTRL"),
            name: format!("{host}.{}.", Self::TAILNET),
            tags,
            addresses: vec![
                format!("100.101.{}.{low}/32", (id / 250) % 250),
                format!("fd7a:115c:a1e0::{id:x}/128"),
            ],
            user,
            cap_map: None,
        }
    }

    /// The answer body, as `json.MarshalIndent(res, "", "\t")` writes `apitype.WhoIsResponse`.
    fn response_json(&self) -> Vec<u8> {
        let node = WireNode {
            id: self.id,
            stable_id: &self.stable_id,
            name: &self.name,
            user: self.user.id,
            key: format!("nodekey:{:064x}", self.id),
            key_expiry: "2027-06-01T00:00:00Z",
            machine: format!("mkey:{:064x}", self.id + 1),
            disco_key: format!("discokey:{:064x}", self.id + 2),
            addresses: &self.addresses,
            allowed_ips: &self.addresses,
            home_derp: 1,
            hostinfo: WireHostinfo {
                os: "linux",
                hostname: self.name.split('.').next().unwrap_or_default(),
            },
            created: "2026-01-15T09:30:00Z",
            cap: CAPABILITY_VERSION,
            tags: &self.tags,
            online: true,
            machine_authorized: true,
            computed_name: self.name.split('.').next().unwrap_or_default(),
            computed_name_with_host: self.name.split('.').next().unwrap_or_default(),
        };
        let response = WireWhoIs {
            node,
            user_profile: &self.user,
            cap_map: self.cap_map.as_ref(),
        };
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
        // Serialising owned strings and numbers into a Vec cannot fail.
        let _ = response.serialize(&mut serializer);
        out
    }
}

fn next_id() -> i64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

#[derive(Serialize)]
struct WireWhoIs<'a> {
    #[serde(rename = "Node")]
    node: WireNode<'a>,
    #[serde(rename = "UserProfile")]
    user_profile: &'a UserProfile,
    #[serde(rename = "CapMap")]
    cap_map: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireNode<'a> {
    #[serde(rename = "ID")]
    id: i64,
    #[serde(rename = "StableID")]
    stable_id: &'a str,
    name: &'a str,
    user: i64,
    key: String,
    key_expiry: &'a str,
    machine: String,
    disco_key: String,
    addresses: &'a [String],
    #[serde(rename = "AllowedIPs")]
    allowed_ips: &'a [String],
    #[serde(rename = "HomeDERP")]
    home_derp: u32,
    hostinfo: WireHostinfo<'a>,
    created: &'a str,
    cap: u32,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    tags: &'a [String],
    online: bool,
    machine_authorized: bool,
    computed_name: &'a str,
    computed_name_with_host: &'a str,
}

#[derive(Serialize)]
struct WireHostinfo<'a> {
    #[serde(rename = "OS")]
    os: &'a str,
    #[serde(rename = "Hostname")]
    hostname: &'a str,
}

/// What the stand-in does with one WhoIs request (before looking the peer up).
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Look the peer up and answer as tailscaled does (200, or 404 for an unknown peer).
    Answer,
    /// Wait, then answer as [`Outcome::Answer`] (a slow daemon).
    AnswerAfter(Duration),
    /// Answer this status with this plain-text body (e.g. `500`, or `403 whois access denied`).
    Status(u16, String),
    /// `200 application/json` with a body that is not a WhoIs answer.
    Malformed,
    /// `200` with a JSON answer padded with whitespace to `bytes` bytes (an oversized answer).
    Oversized(usize),
    /// Read the request and never answer (until the stand-in stops).
    Hang,
    /// Close the connection without an answer.
    Close,
}

/// One request the stand-in received.
#[derive(Clone, Debug)]
pub struct WhoIsRequest {
    /// Request method.
    pub method: String,
    /// Path and query as sent.
    pub path: String,
    /// The decoded `addr` query parameter, if any.
    pub addr: Option<String>,
    /// Every header in arrival order, names lower case.
    pub headers: Vec<(String, String)>,
}

impl WhoIsRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header_list::first_value(&self.headers, name)
    }
}

/// Builds a [`WhoIs`] stand-in.
#[derive(Debug, Default)]
pub struct WhoIsBuilder {
    by_ip: HashMap<IpAddr, PeerNode>,
    by_addr: HashMap<SocketAddr, PeerNode>,
    default_outcome: Option<Outcome>,
}

impl WhoIsBuilder {
    /// Answers lookups of `ip` (any port) with `node`.
    pub fn peer(mut self, ip: IpAddr, node: PeerNode) -> Self {
        self.by_ip.insert(ip, node);
        self
    }

    /// Answers lookups of exactly `addr` with `node` (a connection tailscaled proxied, known by IP:port).
    pub fn peer_at(mut self, addr: SocketAddr, node: PeerNode) -> Self {
        self.by_addr.insert(addr, node);
        self
    }

    /// What every request gets when nothing is planned (default [`Outcome::Answer`]).
    pub fn default_outcome(mut self, outcome: Outcome) -> Self {
        self.default_outcome = Some(outcome);
        self
    }

    /// Binds a unix socket in a fresh temporary directory and serves on a background thread.
    ///
    /// # Errors
    /// When the directory, socket or runtime cannot be created.
    pub fn start(self) -> anyhow::Result<WhoIs> {
        let dir = tempfile::Builder::new()
            .prefix("tailscaled-")
            .tempdir()
            .context("creating the stand-in's socket directory")?;
        let socket_path = dir.path().join("tailscaled.sock");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating the stand-in's runtime")?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::UnixListener::bind(&socket_path)
                .with_context(|| format!("binding {}", socket_path.display()))?
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                by_ip: self.by_ip,
                by_addr: self.by_addr,
                default_outcome: self.default_outcome.unwrap_or(Outcome::Answer),
                plan: VecDeque::new(),
                requests: Vec::new(),
                lookups: 0,
            }),
            changed: Condvar::new(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("whois-stand-in".to_owned())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, serving, stop_rx));
                drop(runtime);
            })
            .context("spawning the stand-in's thread")?;
        Ok(WhoIs {
            socket_path,
            dir: Some(dir),
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

struct State {
    by_ip: HashMap<IpAddr, PeerNode>,
    by_addr: HashMap<SocketAddr, PeerNode>,
    default_outcome: Outcome,
    plan: VecDeque<Outcome>,
    requests: Vec<WhoIsRequest>,
    lookups: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running stand-in; dropping it stops serving and removes the socket and its directory.
pub struct WhoIs {
    socket_path: PathBuf,
    dir: Option<tempfile::TempDir>,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for WhoIs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhoIs")
            .field("socket_path", &self.socket_path)
            .finish_non_exhaustive()
    }
}

impl WhoIs {
    /// A builder with no peers (every lookup answers `404 no match for IP:port`).
    pub fn builder() -> WhoIsBuilder {
        WhoIsBuilder::default()
    }

    /// The unix socket path to configure as `whois_socket`.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Adds or replaces the node answered for `ip` (any port) while serving.
    pub fn set_peer(&self, ip: IpAddr, node: PeerNode) {
        self.shared.lock().by_ip.insert(ip, node);
    }

    /// Forgets `ip`: later lookups of it answer 404.
    pub fn remove_peer(&self, ip: IpAddr) {
        self.shared.lock().by_ip.remove(&ip);
    }

    /// Plans the outcome of the next request not yet planned; later requests get the default.
    pub fn plan(&self, outcome: Outcome) {
        self.shared.lock().plan.push_back(outcome);
    }

    /// Sets what requests get when nothing is planned.
    pub fn set_default_outcome(&self, outcome: Outcome) {
        self.shared.lock().default_outcome = outcome;
    }

    /// How many WhoIs requests (`/localapi/v0/whois`) arrived so far, whatever their outcome.
    pub fn lookups(&self) -> usize {
        self.shared.lock().lookups
    }

    /// Every request received so far (any path), in order.
    pub fn requests(&self) -> Vec<WhoIsRequest> {
        self.shared.lock().requests.clone()
    }

    /// Blocks until at least `count` WhoIs requests have arrived.
    ///
    /// # Errors
    /// When `timeout` passes first; the message says how many arrived.
    pub fn wait_for_lookups(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| state.lookups < count)
            .unwrap_or_else(PoisonError::into_inner);
        if state.lookups < count {
            anyhow::bail!(
                "whois stand-in: {} of {count} expected lookups arrived within {timeout:?}",
                state.lookups
            );
        }
        Ok(())
    }

    /// Stops serving and removes the socket, as when tailscaled is down; connections then fail.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only when the accept loop already ended.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

impl Drop for WhoIs {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| serve(Arc::clone(&shared), request));
                    // A client that hangs up, or an outcome that closes the connection, is not a fixture failure.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

/// Why a connection is closed without an answer ([`Outcome::Close`]).
#[derive(Debug)]
struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("closed without an answer, as planned")
    }
}

impl std::error::Error for Closed {}

type Answer = Response<Full<Bytes>>;

async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Result<Answer, Closed> {
    let (parts, body) = request.into_parts();
    // The daemon reads no body for whois; drain it so the connection stays usable.
    let _ = body.collect().await;
    let query = parts.uri.query().unwrap_or_default();
    let addr = query_value(query, "addr");
    let recorded = WhoIsRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        addr: addr.clone(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let is_whois = parts.uri.path() == "/localapi/v0/whois";
    let outcome = {
        let mut state = shared.lock();
        state.requests.push(recorded.clone());
        let outcome = if is_whois {
            state.lookups += 1;
            state
                .plan
                .pop_front()
                .unwrap_or_else(|| state.default_outcome.clone())
        } else {
            Outcome::Answer
        };
        drop(state);
        shared.changed.notify_all();
        outcome
    };

    // The daemon's checks on every LocalAPI request come before the handler.
    let host = recorded.header("host").unwrap_or_default();
    if recorded.header("referer").is_some()
        || recorded.header("origin").is_some()
        || !(host.is_empty() || host == LOCAL_API_HOST)
    {
        return Ok(plain_error(403, "invalid localapi request"));
    }
    if !is_whois {
        return Ok(plain_error(404, "404 page not found"));
    }

    match outcome {
        Outcome::Answer => Ok(answer(&shared, addr.as_deref())),
        Outcome::AnswerAfter(delay) => {
            tokio::time::sleep(delay).await;
            Ok(answer(&shared, addr.as_deref()))
        }
        Outcome::Status(status, body) => Ok(plain_error(status, &body)),
        Outcome::Malformed => Ok(json_answer(b"{\"Node\": \"not a node\"".to_vec())),
        Outcome::Oversized(bytes) => {
            let mut body = match lookup(&shared, addr.as_deref()) {
                Ok(node) => node.response_json(),
                Err(_) => b"{}".to_vec(),
            };
            let pad = bytes.saturating_sub(body.len());
            body.splice(1..1, std::iter::repeat_n(b' ', pad));
            Ok(json_answer(body))
        }
        Outcome::Hang => std::future::pending().await,
        Outcome::Close => Err(Closed),
    }
}

/// Looks `addr` up as the daemon does; `Err` is the daemon's error status and message.
fn lookup(shared: &Shared, addr: Option<&str>) -> Result<PeerNode, (u16, &'static str)> {
    let Some(addr) = addr.filter(|addr| !addr.is_empty()) else {
        return Err((400, "missing 'addr' parameter"));
    };
    let state = shared.lock();
    if let Some(key) = addr.strip_prefix("nodekey:") {
        if key.len() != 64 || !key.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err((400, "invalid nodekey in 'addr' parameter"));
        }
        let wanted = format!("nodekey:{key}");
        return state
            .by_ip
            .values()
            .chain(state.by_addr.values())
            .find(|node| format!("nodekey:{:064x}", node.id) == wanted)
            .cloned()
            .ok_or((404, "no match for IP:port"));
    }
    let (ip, port) = match addr.parse::<IpAddr>() {
        Ok(ip) => (ip, 0),
        Err(_) => match addr.parse::<SocketAddr>() {
            Ok(socket) => (socket.ip(), socket.port()),
            Err(_) => return Err((400, "invalid 'addr' parameter")),
        },
    };
    // tailscaled unmaps IPv4-mapped IPv6 addresses before looking them up.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    state
        .by_ip
        .get(&ip)
        .or_else(|| state.by_addr.get(&SocketAddr::new(ip, port)))
        .cloned()
        .ok_or((404, "no match for IP:port"))
}

fn answer(shared: &Shared, addr: Option<&str>) -> Answer {
    match lookup(shared, addr) {
        Ok(node) => json_answer(node.response_json()),
        Err((status, message)) => plain_error(status, message),
    }
}

/// The headers the daemon sets on every LocalAPI answer.
fn daemon_headers(response: &mut Answer) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("tailscale-version", VERSION.to_owned()),
        ("tailscale-cap", CAPABILITY_VERSION.to_string()),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; script-src 'none'; script-src-elem 'none'; script-src-attr 'none'".to_owned(),
        ),
        ("x-frame-options", "DENY".to_owned()),
        ("x-content-type-options", "nosniff".to_owned()),
    ] {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

fn json_answer(body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    daemon_headers(&mut response);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// An error as Go's `http.Error` writes it: plain text, `nosniff`, the message and a newline.
fn plain_error(status: u16, message: &str) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    daemon_headers(&mut response);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The first value of `name` in a query string, percent-decoded (Go's `FormValue`).
fn query_value(query: &str, name: &str) -> Option<String> {
    crate::upstream::parse_form(query.as_bytes())
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Sends one raw HTTP/1.1 request over the socket and returns (status, content-type, body).
    fn get(whois: &WhoIs, target: &str, host: &str) -> (u16, String, String) {
        use std::io::{Read, Write};
        let mut stream = std::os::unix::net::UnixStream::connect(whois.socket_path()).unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        (status, content_type, body.to_owned())
    }

    #[test]
    fn user_node_answers_with_the_daemons_field_names() {
        let node = PeerNode::user("alice@example.com", "Alice Example", "laptop");
        let whois = WhoIs::builder()
            .peer("127.0.0.1".parse().unwrap(), node.clone())
            .start()
            .unwrap();
        let (status, content_type, body) = get(
            &whois,
            "/localapi/v0/whois?addr=127.0.0.1%3A51234",
            LOCAL_API_HOST,
        );
        assert_eq!((status, content_type.as_str()), (200, "application/json"));
        assert!(body.starts_with("{\n\t\"Node\": {"), "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["Node"]["Name"], "laptop.tail1234.ts.net.");
        assert_eq!(json["Node"]["ID"], node.id);
        assert_eq!(json["Node"]["User"], json["UserProfile"]["ID"]);
        assert!(json["Node"].get("Tags").is_none());
        assert_eq!(json["UserProfile"]["LoginName"], "alice@example.com");
        assert_eq!(json["UserProfile"]["DisplayName"], "Alice Example");
        assert!(json["UserProfile"].get("ProfilePicURL").is_none());
        assert!(json["CapMap"].is_null());
        assert_eq!(whois.lookups(), 1);
        assert_eq!(whois.requests()[0].addr.as_deref(), Some("127.0.0.1:51234"));
    }

    #[test]
    fn tagged_node_has_tags_and_the_tagged_devices_profile() {
        let whois = WhoIs::builder()
            .peer(
                "127.0.0.1".parse().unwrap(),
                PeerNode::tagged(&["tag:ci", "tag:server"], "runner"),
            )
            .start()
            .unwrap();
        let (status, _, body) = get(
            &whois,
            "/localapi/v0/whois?addr=127.0.0.1:9",
            LOCAL_API_HOST,
        );
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            json["Node"]["Tags"],
            serde_json::json!(["tag:ci", "tag:server"])
        );
        assert_eq!(json["UserProfile"]["LoginName"], TAGGED_DEVICES_LOGIN);
        assert_eq!(json["UserProfile"]["DisplayName"], "Tagged Devices");
    }

    #[test]
    fn errors_are_plain_text_as_the_daemon_writes_them() {
        let whois = WhoIs::builder().start().unwrap();
        let cases = [
            (
                "/localapi/v0/whois?addr=127.0.0.1:1",
                LOCAL_API_HOST,
                404,
                "no match for IP:port\n",
            ),
            (
                "/localapi/v0/whois?addr=not-an-ip",
                LOCAL_API_HOST,
                400,
                "invalid 'addr' parameter\n",
            ),
            (
                "/localapi/v0/whois",
                LOCAL_API_HOST,
                400,
                "missing 'addr' parameter\n",
            ),
            (
                "/localapi/v0/whois?addr=127.0.0.1:1",
                "evil.example",
                403,
                "invalid localapi request\n",
            ),
            (
                "/localapi/v0/nope",
                LOCAL_API_HOST,
                404,
                "404 page not found\n",
            ),
        ];
        for (target, host, want_status, want_body) in cases {
            let (status, content_type, body) = get(&whois, target, host);
            assert_eq!(
                (status, body.as_str()),
                (want_status, want_body),
                "{target}"
            );
            assert_eq!(content_type, "text/plain; charset=utf-8");
        }
    }

    #[test]
    fn planned_outcomes_apply_in_order_then_the_default() {
        let whois = WhoIs::builder()
            .peer(
                "127.0.0.1".parse().unwrap(),
                PeerNode::user("bob@example.com", "Bob", "pc"),
            )
            .start()
            .unwrap();
        whois.plan(Outcome::Status(500, "boom".to_owned()));
        let target = "/localapi/v0/whois?addr=127.0.0.1:2";
        assert_eq!(get(&whois, target, LOCAL_API_HOST).0, 500);
        assert_eq!(get(&whois, target, LOCAL_API_HOST).0, 200);
        assert_eq!(whois.lookups(), 2);
    }
}
