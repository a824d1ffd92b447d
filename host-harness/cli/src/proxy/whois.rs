//! tailscaled's LocalAPI WhoIs, asked over its unix socket: who is the TCP peer `IP:PORT`?
//!
//! One request per lookup on a fresh connection: `GET /localapi/v0/whois?addr=IP%3APORT` with `Host:
//! local-tailscaled.sock` (the daemon refuses other hosts). A `200` answer is a JSON `WhoIsResponse`;
//! only `Node.Name`, `Node.Tags`, `UserProfile.LoginName` and `UserProfile.DisplayName` are read. A
//! `404` means the peer is not on the tailnet; anything else, a slow daemon, an answer over
//! [`MAX_ANSWER_BYTES`] or one that does not parse means the identity is unavailable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;

use super::identity::{Caller, CallerSource, IdentityRefusal};

/// Largest WhoIs answer read; real ones are a few kilobytes (more with a large `CapMap`).
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The login name of the user profile control gives every tagged node.
const TAGGED_DEVICES_LOGIN: &str = "tagged-devices";

/// The `Host` tailscaled's LocalAPI accepts.
const LOCAL_API_HOST: &str = "local-tailscaled.sock";

/// The parts of `apitype.WhoIsResponse` the proxy uses.
#[derive(Debug, Deserialize)]
struct WhoIsAnswer {
    #[serde(rename = "Node")]
    node: WireNode,
    #[serde(rename = "UserProfile")]
    user_profile: WireUserProfile,
}

#[derive(Debug, Deserialize)]
struct WireNode {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Tags", default)]
    tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct WireUserProfile {
    #[serde(rename = "LoginName", default)]
    login_name: String,
    #[serde(rename = "DisplayName", default)]
    display_name: String,
}

/// Asks tailscaled at `socket` who `peer` is, within `timeout`.
///
/// # Errors
/// [`IdentityRefusal::Unknown`] when tailscaled answers 404; [`IdentityRefusal::Unavailable`] with a
/// short cause for everything else that is not a usable answer. Details go to the log, not the cause.
pub async fn lookup(
    socket: &Path,
    peer: SocketAddr,
    timeout: Duration,
) -> Result<Caller, IdentityRefusal> {
    let (status, body) = match tokio::time::timeout(timeout, ask(socket, peer)).await {
        Err(_) => {
            tracing::warn!(socket = %socket.display(), timeout_ms = timeout.as_millis() as u64, "whois lookup timed out");
            return Err(IdentityRefusal::Unavailable(format!(
                "tailscaled did not answer within {}",
                short_duration(timeout)
            )));
        }
        Ok(Err(failure)) => {
            tracing::warn!(socket = %socket.display(), error = %failure.detail, "whois lookup failed");
            return Err(IdentityRefusal::Unavailable(failure.cause.to_owned()));
        }
        Ok(Ok(answer)) => answer,
    };
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(IdentityRefusal::Unknown),
        other => {
            tracing::warn!(
                status = other.as_u16(),
                "whois lookup refused by tailscaled"
            );
            return Err(IdentityRefusal::Unavailable(format!(
                "tailscaled answered {}",
                other.as_u16()
            )));
        }
    }
    parse_answer(&body).ok_or_else(|| {
        tracing::warn!(
            bytes = body.len(),
            "whois answer is not a usable WhoIsResponse"
        );
        IdentityRefusal::Unavailable("malformed answer from tailscaled".to_owned())
    })
}

/// A lookup that went wrong: a short cause for the client, the detail for the log.
struct AskFailure {
    cause: &'static str,
    detail: String,
}

impl AskFailure {
    fn new(cause: &'static str, detail: impl std::fmt::Display) -> Self {
        Self {
            cause,
            detail: detail.to_string(),
        }
    }
}

/// One request and its whole answer (bounded), on a connection of its own.
async fn ask(socket: &Path, peer: SocketAddr) -> Result<(StatusCode, Bytes), AskFailure> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|err| AskFailure::new("tailscaled unreachable", err))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| AskFailure::new("tailscaled unreachable", err))?;
    let request = Request::get(format!(
        "/localapi/v0/whois?addr={}",
        query_escape(&peer.to_string())
    ))
    .header(http::header::HOST, LOCAL_API_HOST)
    .body(Empty::<Bytes>::new())
    .map_err(|err| AskFailure::new("internal error", err))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| AskFailure::new("tailscaled connection failed", err))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    AskFailure::new("answer from tailscaled too large", err)
                } else {
                    AskFailure::new("tailscaled connection failed", err)
                }
            })?
            .to_bytes();
        Ok((status, body))
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut connection = std::pin::pin!(connection);
    // The connection future moves the bytes; drive it until the exchange has its answer.
    tokio::select! {
        biased;
        answer = &mut exchange => answer,
        ended = &mut connection => match ended {
            Err(err) => Err(AskFailure::new("tailscaled connection failed", err)),
            // Closed cleanly: the exchange has what there is to have.
            Ok(()) => exchange.await,
        },
    }
}

/// The caller a WhoIs answer describes: a tagged node by its tags, a user's node by its user.
fn parse_answer(body: &[u8]) -> Option<Caller> {
    let answer: WhoIsAnswer = serde_json::from_slice(body).ok()?;
    let node = Some(answer.node.name.trim_end_matches('.').to_owned()).filter(|n| !n.is_empty());
    let tags = answer.node.tags.unwrap_or_default();
    if !tags.is_empty() {
        let joined = tags.join(",");
        return Some(Caller {
            id: joined.clone(),
            login: None,
            display_name: None,
            node,
            tags: Some(joined),
            source: CallerSource::Whois,
        });
    }
    let login = answer.user_profile.login_name;
    // The profile every tagged node shares is nobody's identity: without tags the answer is broken.
    if login.is_empty() || login == TAGGED_DEVICES_LOGIN {
        return None;
    }
    let display_name = Some(answer.user_profile.display_name).filter(|name| !name.is_empty());
    Some(Caller {
        id: login.clone(),
        login: Some(login),
        display_name,
        node,
        tags: None,
        source: CallerSource::Whois,
    })
}

/// `2s` for whole seconds, `300ms` otherwise, as the proxy's other timeout messages say it.
fn short_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Percent-encodes a query value the way Go's `url.QueryEscape` does for an address.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn a_user_node_is_its_user() {
        let body = br#"{"Node": {"ID": 1, "Name": "laptop.tail1234.ts.net.", "User": 7, "Addresses": ["100.64.0.1/32"]},
            "UserProfile": {"ID": 7, "LoginName": "alice@example.com", "DisplayName": "Alice Example"},
            "CapMap": null}"#;
        let caller = parse_answer(body).unwrap();
        assert_eq!(caller.id, "alice@example.com");
        assert_eq!(caller.login.as_deref(), Some("alice@example.com"));
        assert_eq!(caller.display_name.as_deref(), Some("Alice Example"));
        assert_eq!(caller.node.as_deref(), Some("laptop.tail1234.ts.net"));
        assert_eq!(caller.tags, None);
    }

    #[test]
    fn a_tagged_node_is_its_tags_in_order() {
        let body = br#"{"Node": {"Name": "ci.tail1234.ts.net.", "Tags": ["tag:server", "tag:ci"]},
            "UserProfile": {"ID": 9, "LoginName": "tagged-devices", "DisplayName": "Tagged Devices"}}"#;
        let caller = parse_answer(body).unwrap();
        assert_eq!(caller.id, "tag:server,tag:ci");
        assert_eq!(caller.login, None);
        assert_eq!(caller.display_name, None);
        assert_eq!(caller.tags.as_deref(), Some("tag:server,tag:ci"));
    }

    #[test]
    fn answers_without_a_node_profile_or_login_are_malformed() {
        assert!(parse_answer(b"{}").is_none());
        assert!(parse_answer(br#"{"Node": null, "UserProfile": {"LoginName": "a"}}"#).is_none());
        assert!(
            parse_answer(br#"{"Node": {"Name": "x."}, "UserProfile": {"LoginName": ""}}"#)
                .is_none()
        );
        assert!(parse_answer(b"not json").is_none());
        let untagged_tagged_devices = br#"{"Node": {"Name": "x.", "Tags": []},
            "UserProfile": {"LoginName": "tagged-devices", "DisplayName": "Tagged Devices"}}"#;
        assert!(parse_answer(untagged_tagged_devices).is_none());
    }

    #[test]
    fn timeouts_read_as_the_proxys_other_timeouts() {
        assert_eq!(short_duration(Duration::from_secs(2)), "2s");
        assert_eq!(short_duration(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn addresses_are_query_escaped() {
        assert_eq!(query_escape("100.64.0.1:41234"), "100.64.0.1%3A41234");
        assert_eq!(query_escape("[fd7a::1]:80"), "%5Bfd7a%3A%3A1%5D%3A80");
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable() {
        let err = lookup(
            Path::new("/nonexistent/tailscaled.sock"),
            "127.0.0.1:1".parse().unwrap(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            IdentityRefusal::Unavailable("tailscaled unreachable".into())
        );
    }
}
