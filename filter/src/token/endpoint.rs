//! Talking to the token endpoint: the request the filter sends and what its answer means.
//!
//! Requests follow RFC 6749 (section 6 for `refresh_token`, 4.4 for
//! `client_credentials`, 2.3.1 for client authentication); answers are
//! classified into a typed [`IssuedToken`] or a [`RefreshFailure`] whose
//! [`FailureReason`] feeds one metric each. Nothing here ever formats a token.

use std::env::VarError;
use std::fmt::Write as _;
use std::time::Duration;

use super::config::{BodyFormat, ClientAuth, Grant, OAuth2Config, SecretSource, ValueSource};
use crate::credential::{CredentialError, env_value};
use crate::json::{self, Duplicates, ObjectWriter, Value};
use crate::secret::Secret;

/// The client's identity and secrets, read once at configure time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`, for confidential clients.
    pub client_secret: Option<Secret>,
    /// The configured refresh token (refresh_token grant).
    pub refresh_token: Option<Secret>,
}

impl Client {
    /// Reads the client id, secret and initial refresh token from the configuration and environment.
    ///
    /// # Errors
    /// A [`CredentialError`] naming the variable when one is missing, empty, not UTF-8 or unusable.
    pub fn resolve<F>(config: &OAuth2Config, env: F) -> Result<Self, CredentialError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        let read = |name: &str| env_value(name, &env);
        let client_id = match &config.client_id {
            ValueSource::Inline(id) => id.clone(),
            ValueSource::Env(name) => read(name)?,
        };
        let client_secret = config
            .client_secret
            .as_deref()
            .map(|name| read(name).map(Secret::new))
            .transpose()?;
        let refresh_token = match &config.grant {
            Grant::RefreshToken {
                initial: SecretSource::Inline(token),
            } => Some(token.clone()),
            Grant::RefreshToken {
                initial: SecretSource::Env(name),
            } => Some(Secret::new(read(name)?)),
            Grant::ClientCredentials => None,
        };
        Ok(Self {
            client_id,
            client_secret,
            refresh_token,
        })
    }
}

/// One token request, ready for `dispatch_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The cluster to call.
    pub cluster: String,
    /// Headers, pseudo-headers first; none of them carries a secret.
    pub headers: Vec<(&'static str, String)>,
    /// `authorization: Basic ...` when the client authenticates that way.
    pub authorization: Option<Secret>,
    /// The request body (it carries the refresh token or client secret).
    pub body: Secret,
    /// How long the host waits for the answer.
    pub timeout: Duration,
}

/// Builds the request for one attempt; `refresh_token` is the newest one (refresh_token grant).
pub fn build_request(
    config: &OAuth2Config,
    client: &Client,
    refresh_token: Option<&Secret>,
) -> TokenRequest {
    let mut params: Vec<(&str, &str)> = vec![("grant_type", config.grant.name())];
    if let Some(token) = refresh_token {
        params.push(("refresh_token", token.expose()));
    }
    let scope = config.scopes.join(" ");
    if !scope.is_empty() {
        params.push(("scope", &scope));
    }
    let mut authorization = None;
    match (&client.client_secret, config.client_auth) {
        (Some(secret), ClientAuth::Basic) => {
            // RFC 6749 2.3.1: both parts are form-encoded before base64.
            let pair = format!(
                "{}:{}",
                form_encode(&client.client_id),
                form_encode(secret.expose())
            );
            authorization = Some(Secret::new(format!("Basic {}", base64(pair.as_bytes()))));
        }
        (Some(secret), ClientAuth::Body) => {
            params.push(("client_id", &client.client_id));
            params.push(("client_secret", secret.expose()));
        }
        (None, _) => params.push(("client_id", &client.client_id)),
    }
    for (name, value) in &config.extra_params {
        params.push((name, value));
    }
    let (content_type, body) = match config.body_format {
        BodyFormat::Form => (
            "application/x-www-form-urlencoded",
            params
                .iter()
                .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
                .collect::<Vec<_>>()
                .join("&"),
        ),
        BodyFormat::Json => {
            let mut object = ObjectWriter::new();
            for (name, value) in &params {
                object.string(name, value);
            }
            ("application/json", object.finish())
        }
    };
    TokenRequest {
        cluster: config.endpoint.cluster.clone(),
        headers: vec![
            (":method", "POST".to_owned()),
            (":path", config.endpoint.path.clone()),
            (":authority", config.endpoint.authority.clone()),
            ("content-type", content_type.to_owned()),
            ("accept", "application/json".to_owned()),
        ],
        authorization,
        body: Secret::new(body),
        timeout: config.request_timeout,
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol =
        |index: u32| char::from(ALPHABET.get((index & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b0 = u32::from(chunk.first().copied().unwrap_or(0));
        let b1 = u32::from(chunk.get(1).copied().unwrap_or(0));
        let b2 = u32::from(chunk.get(2).copied().unwrap_or(0));
        let triple = (b0 << 16) | (b1 << 8) | b2;
        out.push(symbol(triple >> 18));
        out.push(symbol(triple >> 12));
        out.push(if chunk.len() > 1 {
            symbol(triple >> 6)
        } else {
            '='
        });
        out.push(if chunk.len() > 2 { symbol(triple) } else { '=' });
    }
    out
}

/// What came back from the host for one token request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// No response: the call failed or timed out (proxy-wasm reports both as zero headers).
    NoResponse {
        /// Whether the request timeout had passed when the host reported the failure.
        timed_out: bool,
    },
    /// A response.
    Response {
        /// `:status` (0 when missing or invalid).
        status: u16,
        /// The body.
        body: Vec<u8>,
    },
}

/// A token the endpoint issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    /// The access token.
    pub access_token: Secret,
    /// Its lifetime, when the endpoint said.
    pub expires_in: Option<Duration>,
    /// A new refresh token, when the endpoint rotated it.
    pub refresh_token: Option<Secret>,
}

/// Why an attempt failed; each reason has its own failure counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The host refused to start the call (unknown cluster, bad headers).
    Dispatch,
    /// No answer within `request_timeout`.
    Timeout,
    /// The call failed before a response (connection refused, reset).
    Unreachable,
    /// A non-2xx status without an OAuth2 error body.
    HttpStatus,
    /// A body that is not the JSON object it should be.
    Malformed,
    /// A 2xx JSON answer without `access_token`.
    MissingField,
    /// OAuth2 `invalid_grant`: the refresh token is spent, revoked or expired. Refreshing stops.
    InvalidGrant,
    /// Another OAuth2 error (`invalid_client`, `invalid_scope`, ...).
    OAuthError,
}

impl FailureReason {
    /// Every reason, in metric order.
    pub const ALL: [FailureReason; 8] = [
        Self::Dispatch,
        Self::Timeout,
        Self::Unreachable,
        Self::HttpStatus,
        Self::Malformed,
        Self::MissingField,
        Self::InvalidGrant,
        Self::OAuthError,
    ];

    /// The reason named `name` (see [`FailureReason::name`]), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "dispatch" => Self::Dispatch,
            "timeout" => Self::Timeout,
            "unreachable" => Self::Unreachable,
            "http_status" => Self::HttpStatus,
            "malformed" => Self::Malformed,
            "missing_field" => Self::MissingField,
            "invalid_grant" => Self::InvalidGrant,
            "oauth_error" => Self::OAuthError,
            _ => return None,
        })
    }

    /// The reason's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Dispatch => "dispatch",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::HttpStatus => "http_status",
            Self::Malformed => "malformed",
            Self::MissingField => "missing_field",
            Self::InvalidGrant => "invalid_grant",
            Self::OAuthError => "oauth_error",
        }
    }
}

/// A failed attempt: the reason and a description safe to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshFailure {
    /// Why.
    pub reason: FailureReason,
    /// What happened, in words; never contains a token.
    pub detail: String,
}

impl RefreshFailure {
    /// A failure with a fixed description.
    pub fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Longest server-provided text quoted in a log line.
const MAX_QUOTED: usize = 160;

/// Classifies the answer of the token endpoint. `secrets` are removed from any server text quoted in
/// the failure (an endpoint might echo what it was sent).
///
/// # Errors
/// A [`RefreshFailure`] for every answer that yields no usable token.
pub fn parse_response(
    outcome: &CallOutcome,
    secrets: &[&Secret],
) -> Result<IssuedToken, RefreshFailure> {
    let (status, body) = match outcome {
        CallOutcome::NoResponse { timed_out: true } => {
            return Err(RefreshFailure::new(
                FailureReason::Timeout,
                "no answer within the request timeout",
            ));
        }
        CallOutcome::NoResponse { timed_out: false } => {
            return Err(RefreshFailure::new(
                FailureReason::Unreachable,
                "the token endpoint could not be reached (connection refused or reset)",
            ));
        }
        CallOutcome::Response { status, body } => (*status, body),
    };
    let json = match json::parse(body, Duplicates::KeepLast) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let oauth_error = json.as_ref().and_then(|map| match map.get("error") {
        Some(Value::String(code)) => Some((
            code.as_str(),
            map.get("error_description").and_then(Value::as_str),
        )),
        _ => None,
    });
    let has_token = json
        .as_ref()
        .is_some_and(|map| map.contains_key("access_token"));
    if let Some((code, description)) = oauth_error.filter(|_| !has_token) {
        let reason = if code == "invalid_grant" {
            FailureReason::InvalidGrant
        } else {
            FailureReason::OAuthError
        };
        let mut detail = format!("HTTP {status}, error {}", quote(code, secrets));
        if let Some(description) = description {
            let _ = write!(detail, ": {}", quote(description, secrets));
        }
        return Err(RefreshFailure::new(reason, detail));
    }
    if !(200..300).contains(&status) {
        return Err(RefreshFailure::new(
            FailureReason::HttpStatus,
            format!("HTTP {status} without an OAuth2 error body"),
        ));
    }
    let Some(map) = json else {
        return Err(RefreshFailure::new(
            FailureReason::Malformed,
            format!("HTTP {status} with a body that is not a JSON object"),
        ));
    };
    let access_token = match map.get("access_token") {
        None => {
            return Err(RefreshFailure::new(
                FailureReason::MissingField,
                format!("HTTP {status} without access_token"),
            ));
        }
        Some(Value::String(token)) if usable_token(token) => Secret::new(token.as_str()),
        Some(_) => {
            return Err(RefreshFailure::new(
                FailureReason::Malformed,
                "access_token is not a non-empty string of printable characters",
            ));
        }
    };
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) => {
            Some(positive_seconds(number.seconds_below(LONGEST_EXPIRY))?)
        }
        Some(Value::String(text)) => Some(positive_seconds(json::seconds_below(
            text.trim(),
            LONGEST_EXPIRY,
        ))?),
        Some(_) => return Err(bad_expiry()),
    };
    let refresh_token = match map.get("refresh_token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) if usable_token(token) => Some(Secret::new(token.as_str())),
        Some(_) => {
            return Err(RefreshFailure::new(
                FailureReason::Malformed,
                "refresh_token is not a non-empty string of printable characters",
            ));
        }
    };
    Ok(IssuedToken {
        access_token,
        expires_in,
        refresh_token,
    })
}

fn bad_expiry() -> RefreshFailure {
    RefreshFailure::new(
        FailureReason::Malformed,
        "expires_in is not a positive number of seconds",
    )
}

/// `expires_in` at or beyond this many seconds is not believed.
const LONGEST_EXPIRY: u64 = 10_000_000_000;

fn positive_seconds(value: Option<Duration>) -> Result<Duration, RefreshFailure> {
    match value {
        Some(seconds) if seconds >= Duration::from_secs(1) => Ok(seconds),
        _ => Err(bad_expiry()),
    }
}

/// Tokens go into header values: printable ASCII only.
fn usable_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|byte| (0x21..=0x7e).contains(&byte))
}

/// Server text made safe for a log line: secrets removed, control characters escaped, length capped.
fn quote(text: &str, secrets: &[&Secret]) -> String {
    let mut cleaned = text.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            cleaned = replace_all(&cleaned, secret.expose(), crate::secret::REDACTED);
        }
    }
    let mut out = String::new();
    for character in cleaned.chars() {
        if out.len() >= MAX_QUOTED {
            out.push_str("...");
            break;
        }
        if character.is_control() || json::hides_or_reorders(character) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(character));
        } else {
            out.push(character);
        }
    }
    let mut quoted = String::with_capacity(out.len() + 2);
    json::write_string(&mut quoted, &out);
    quoted
}

/// `text` with every occurrence of `needle` (not empty) replaced by `with`, left to right, as
/// `str::replace` does. Written out because `str::replace` brings in the standard substring search,
/// about 2.5 kilobytes of binary, for one short text per failed token request.
fn replace_all(text: &str, needle: &str, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(character) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix(needle) {
            out.push_str(with);
            rest = after;
        } else {
            out.push(character);
            rest = rest.get(character.len_utf8()..).unwrap_or_default();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::json::from_serde;
    use serde_json::{Value, json};

    fn config(extra: Value) -> OAuth2Config {
        let mut value = json!({
            "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/token"},
            "grant_type": "refresh_token",
            "client_id": "client 1",
            "refresh_token": {"env": "RT"}
        });
        for (key, field) in extra.as_object().unwrap() {
            if field.is_null() {
                value.as_object_mut().unwrap().remove(key);
            } else {
                value[key] = field.clone();
            }
        }
        crate::token::config::parse(&from_serde(&value)).unwrap()
    }

    fn env(name: &str) -> Result<String, VarError> {
        match name {
            "RT" => Ok(" rt-0\n".into()),
            "SECRET" => Ok("s3cr&t".into()),
            "EMPTY" => Ok("  ".into()),
            _ => Err(VarError::NotPresent),
        }
    }

    fn response(status: u16, body: Value) -> CallOutcome {
        CallOutcome::Response {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn refresh_request_is_a_form_post_with_the_newest_token() {
        let config = config(
            json!({"scopes": ["user:inference", "org"], "extra_params": {"audience": "a b"}}),
        );
        let client = Client::resolve(&config, env).unwrap();
        assert_eq!(client.refresh_token, Some(Secret::new("rt-0")));
        let request = build_request(&config, &client, Some(&Secret::new("rt-9/x")));
        assert_eq!(request.cluster, "oauth");
        assert_eq!(
            request.headers,
            vec![
                (":method", "POST".to_owned()),
                (":path", "/token".to_owned()),
                (":authority", "auth.example.com".to_owned()),
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned()
                ),
                ("accept", "application/json".to_owned()),
            ]
        );
        assert_eq!(request.authorization, None);
        assert_eq!(
            request.body.expose(),
            "grant_type=refresh_token&refresh_token=rt-9%2Fx&scope=user%3Ainference+org&client_id=client+1&audience=a+b"
        );
        assert!(!format!("{request:?}").contains("rt-9"));
    }

    #[test]
    fn client_credentials_with_basic_or_body_auth_and_json_bodies() {
        let mut cc = config(
            json!({"grant_type": "client_credentials", "client_secret": {"env": "SECRET"}, "refresh_token": null}),
        );
        if let Grant::RefreshToken { .. } = cc.grant {
            panic!("grant not switched");
        }
        let client = Client::resolve(&cc, env).unwrap();
        assert_eq!(client.refresh_token, None);
        let request = build_request(&cc, &client, None);
        assert_eq!(request.body.expose(), "grant_type=client_credentials");
        // base64("client+1:s3cr%26t")
        assert_eq!(
            request.authorization.as_ref().unwrap().expose(),
            format!("Basic {}", base64(b"client+1:s3cr%26t"))
        );
        cc.client_auth = ClientAuth::Body;
        cc.body_format = BodyFormat::Json;
        let request = build_request(&cc, &client, None);
        let body: Value = serde_json::from_str(request.body.expose()).unwrap();
        assert_eq!(
            body,
            json!({"grant_type": "client_credentials", "client_id": "client 1", "client_secret": "s3cr&t"})
        );
        assert_eq!(request.headers[3].1, "application/json");
    }

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn missing_or_empty_environment_names_the_variable() {
        let mut bad = config(json!({}));
        bad.grant = Grant::RefreshToken {
            initial: SecretSource::Env("NOPE".into()),
        };
        assert_eq!(
            Client::resolve(&bad, env),
            Err(CredentialError::EnvMissing {
                name: "NOPE".into()
            })
        );
        bad.grant = Grant::RefreshToken {
            initial: SecretSource::Env("EMPTY".into()),
        };
        assert_eq!(
            Client::resolve(&bad, env),
            Err(CredentialError::EnvEmpty {
                name: "EMPTY".into()
            })
        );
    }

    #[test]
    fn successful_answers_parse_with_optional_fields() {
        let issued = parse_response(
            &response(200, json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"})),
            &[],
        )
        .unwrap();
        assert_eq!(issued.access_token, Secret::new("at-1"));
        assert_eq!(issued.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(issued.refresh_token, Some(Secret::new("rt-1")));
        let issued = parse_response(
            &response(201, json!({"access_token": "at-2", "expires_in": "60"})),
            &[],
        )
        .unwrap();
        assert_eq!(issued.expires_in, Some(Duration::from_secs(60)));
        assert_eq!(issued.refresh_token, None);
        let issued = parse_response(&response(200, json!({"access_token": "at-3"})), &[]).unwrap();
        assert_eq!(issued.expires_in, None);
        let expiry = |expires_in: Value| {
            parse_response(
                &response(200, json!({"access_token": "a", "expires_in": expires_in})),
                &[],
            )
            .map(|issued| issued.expires_in)
            .map_err(|failure| failure.reason)
        };
        assert_eq!(expiry(json!(1.5)), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(
            expiry(json!(" 90.25 ")),
            Ok(Some(Duration::from_millis(90_250)))
        );
        assert_eq!(expiry(json!(3.6e3)), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(
            expiry(json!(9_999_999_999u64)),
            Ok(Some(Duration::from_secs(9_999_999_999)))
        );
        for bad in [
            json!(0.5),
            json!(-60),
            json!(10_000_000_000u64),
            json!("NaN"),
            json!(true),
        ] {
            assert_eq!(expiry(bad), Err(FailureReason::Malformed));
        }
    }

    #[test]
    fn reasons_read_back_from_their_names() {
        for reason in FailureReason::ALL {
            assert_eq!(FailureReason::from_name(reason.name()), Some(reason));
        }
        assert_eq!(FailureReason::from_name("Timeout"), None);
    }

    #[test]
    fn every_failure_has_its_reason() {
        let reason = |outcome: CallOutcome| parse_response(&outcome, &[]).unwrap_err().reason;
        assert_eq!(
            reason(CallOutcome::NoResponse { timed_out: true }),
            FailureReason::Timeout
        );
        assert_eq!(
            reason(CallOutcome::NoResponse { timed_out: false }),
            FailureReason::Unreachable
        );
        assert_eq!(
            reason(response(503, json!("busy"))),
            FailureReason::HttpStatus
        );
        assert_eq!(
            reason(CallOutcome::Response {
                status: 200,
                body: b"<html>".to_vec()
            }),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(200, json!({"token_type": "Bearer"}))),
            FailureReason::MissingField
        );
        assert_eq!(
            reason(response(200, json!({"access_token": 5}))),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(200, json!({"access_token": "a b"}))),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(200, json!({"access_token": "a", "expires_in": 0}))),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(
                200,
                json!({"access_token": "a", "expires_in": "soon"})
            )),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(
                200,
                json!({"access_token": "a", "refresh_token": ""})
            )),
            FailureReason::Malformed
        );
        assert_eq!(
            reason(response(400, json!({"error": "invalid_grant"}))),
            FailureReason::InvalidGrant
        );
        assert_eq!(
            reason(response(200, json!({"error": "invalid_grant"}))),
            FailureReason::InvalidGrant
        );
        assert_eq!(
            reason(response(401, json!({"error": "invalid_client"}))),
            FailureReason::OAuthError
        );
    }

    #[test]
    fn secrets_are_replaced_as_str_replace_does() {
        for (text, needle) in [
            ("", "ab"),
            ("ab", "ab"),
            ("xabyabz", "ab"),
            ("aaaa", "aa"),
            ("aaa", "aa"),
            ("éabé", "abé"),
            ("ab", "abc"),
            ("zzabab", "bab"),
        ] {
            assert_eq!(
                replace_all(text, needle, "[REDACTED]"),
                text.replace(needle, "[REDACTED]"),
                "{text} {needle}"
            );
        }
    }

    #[test]
    fn quoted_server_text_never_carries_a_secret() {
        let secret = Secret::new("rt-secret-123");
        let failure = parse_response(
            &response(400, json!({"error": "invalid_grant", "error_description": "refresh token rt-secret-123 was already used\n"})),
            &[&secret],
        )
        .unwrap_err();
        assert!(
            !failure.detail.contains("rt-secret-123"),
            "{}",
            failure.detail
        );
        assert!(failure.detail.contains("[REDACTED]"), "{}", failure.detail);
        assert!(failure.detail.contains("\\\\u{a}"), "{}", failure.detail);
        let long = "x".repeat(1000);
        let failure = parse_response(&response(400, json!({"error": long})), &[]).unwrap_err();
        assert!(failure.detail.len() < 220, "{}", failure.detail.len());
    }

    #[test]
    fn quoted_server_text_cannot_hide_or_reorder_words() {
        let text =
            "ok\u{202e}desrever\u{202c} \u{200b}hidden\u{feff}\u{61c}\u{2029}\u{e0041} caf\u{e9}";
        let failure = parse_response(&response(400, json!({"error": text})), &[]).unwrap_err();
        for escaped in [
            "\\u{202e}",
            "\\u{202c}",
            "\\u{200b}",
            "\\u{feff}",
            "\\u{61c}",
            "\\u{2029}",
            "\\u{e0041}",
        ] {
            assert!(failure.detail.contains(escaped), "{}", failure.detail);
        }
        assert!(failure.detail.contains("caf\u{e9}"), "{}", failure.detail);
    }
}
