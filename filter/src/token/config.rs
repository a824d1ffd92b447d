//! The `oauth2` credential source: its JSON shape and validation.
//!
//! Read with the configuration's own helpers ([`crate::config::read`]), like
//! every other section: every error names the field and none quotes a value,
//! so a refresh token written into the wrong field never reaches a log line.

use std::time::Duration;

use crate::json::{Map, Value};

use crate::config::read;
use crate::config::{
    ConfigError, ConfigErrorKind, authority_text, env_name_problem, header_value, path_text,
};
use crate::secret::Secret;

/// The path of the source object in the configuration.
pub const PATH: &str = "credential.source.oauth2";

/// Fields the `oauth2` object accepts, for the unknown-field error.
const FIELDS: &[&str] = &[
    "token_endpoint",
    "grant_type",
    "client_id",
    "client_secret",
    "refresh_token",
    "client_auth",
    "body_format",
    "scopes",
    "extra_params",
    "refresh_before_expiry",
    "request_timeout",
    "max_request_wait",
    "backoff",
    "default_expires_in",
    "refresh_on_unauthorized",
    "shared_key",
];

/// Form parameters the filter sets itself; `extra_params` may not override them.
const RESERVED_PARAMS: &[&str] = &[
    "grant_type",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
];

/// The validated `oauth2` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuth2Config {
    /// Where tokens come from.
    pub endpoint: TokenEndpoint,
    /// Which OAuth2 grant obtains them.
    pub grant: Grant,
    /// The client identifier.
    pub client_id: ValueSource,
    /// The client secret, when the client is confidential.
    pub client_secret: Option<String>,
    /// How the client authenticates when it has a secret.
    pub client_auth: ClientAuth,
    /// How the token request body is encoded.
    pub body_format: BodyFormat,
    /// Scopes requested (sent space-separated as `scope`), possibly none.
    pub scopes: Vec<String>,
    /// Further parameters sent with every token request, in order.
    pub extra_params: Vec<(String, String)>,
    /// How long before expiry a token is refreshed (at most half its lifetime).
    pub refresh_before_expiry: Duration,
    /// Timeout of one token request.
    pub request_timeout: Duration,
    /// How long a request may wait for a token before it is answered 503.
    pub max_request_wait: Duration,
    /// Delays between failed attempts.
    pub backoff: BackoffConfig,
    /// Lifetime assumed when the endpoint sends no `expires_in`.
    pub default_expires_in: Duration,
    /// Whether an upstream 401 invalidates the token and triggers a refresh.
    pub refresh_on_unauthorized: bool,
    /// Names the shared-data entries of this credential.
    pub shared_key: String,
}

/// The token endpoint, as an `http_call` target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpoint {
    /// Host cluster (Envoy cluster name) the call goes to.
    pub cluster: String,
    /// `:authority` of the call (the endpoint's host name).
    pub authority: String,
    /// `:path` of the call.
    pub path: String,
}

/// The OAuth2 grant used to obtain access tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// RFC 6749 section 6: a refresh token, rotated when the endpoint issues a new one.
    RefreshToken {
        /// Where the initial refresh token comes from.
        initial: SecretSource,
    },
    /// RFC 6749 section 4.4: the client's own credentials.
    ClientCredentials,
}

impl Grant {
    /// The `grant_type` parameter.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RefreshToken { .. } => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// A non-secret value written inline or read from the VM environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueSource {
    /// Written into the configuration.
    Inline(String),
    /// Read once, at configure time, from this environment variable.
    Env(String),
}

/// A secret written inline or read from the VM environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// Written into the configuration.
    Inline(Secret),
    /// Read once, at configure time, from this environment variable.
    Env(String),
}

/// Where the client secret goes (RFC 6749 section 2.3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// `authorization: Basic base64(client_id:client_secret)`.
    #[default]
    Basic,
    /// `client_id` and `client_secret` as body parameters.
    Body,
}

/// How the token request body is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`, as RFC 6749 specifies.
    #[default]
    Form,
    /// `application/json`, for endpoints that take JSON (Anthropic's does).
    Json,
}

/// Jittered exponential backoff between failed attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

/// Defaults, also quoted by the specification.
pub mod defaults {
    use std::time::Duration;

    /// `refresh_before_expiry`.
    pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
    /// `request_timeout`.
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// `max_request_wait`.
    pub const MAX_REQUEST_WAIT: Duration = Duration::from_secs(10);
    /// `backoff.initial`.
    pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
    /// `backoff.max`.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
    /// `default_expires_in`.
    pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);
}

#[inline(never)]
fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::from(ConfigErrorKind::Invalid {
        path: field_path(field),
        reason: reason.into(),
    })
}

/// A required field of the `oauth2` object that is not there.
#[cold]
#[inline(never)]
fn missing(field: &str, hint: &'static str) -> ConfigError {
    ConfigError::from(ConfigErrorKind::Missing {
        path: field_path(field),
        hint,
    })
}

#[inline(never)]
fn field_path(field: &str) -> String {
    if field.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}.{field}")
    }
}

/// Validates the value of `credential.source.oauth2`.
///
/// # Errors
/// A [`ConfigError`] naming the first wrong field; secrets are never quoted.
#[inline(never)]
pub fn parse(value: &Value) -> Result<OAuth2Config, ConfigError> {
    let map = read::object(
        PATH,
        value,
        "an object such as {\"token_endpoint\": {...}, \"grant_type\": \"refresh_token\", ...}",
        FIELDS,
    )?;
    let endpoint = token_endpoint(map.get("token_endpoint"))?;
    let grant_type = required_string(
        map,
        "grant_type",
        "\"refresh_token\" or \"client_credentials\"",
    )?;
    let client_id = value_source(map, "client_id")?;
    let client_secret = match map.get("client_secret") {
        None => None,
        Some(Value::Object(inner)) if inner.len() == 1 && inner.contains_key("env") => {
            Some(env_name("client_secret.env", inner.get("env"))?)
        }
        Some(_) => {
            return Err(invalid(
                "client_secret",
                "must be {\"env\": \"NAME\"}: a client secret is read from the VM environment only",
            ));
        }
    };
    let grant = match grant_type.as_str() {
        "refresh_token" => Grant::RefreshToken {
            initial: secret_source(map.get("refresh_token"))?,
        },
        "client_credentials" => {
            if map.contains_key("refresh_token") {
                return Err(invalid(
                    "refresh_token",
                    "is only used with grant_type \"refresh_token\"",
                ));
            }
            if client_secret.is_none() {
                return Err(missing(
                    "client_secret",
                    "the client_credentials grant needs {\"env\": \"NAME\"}",
                ));
            }
            Grant::ClientCredentials
        }
        _ => {
            return Err(invalid(
                "grant_type",
                "unknown grant; expected \"refresh_token\" or \"client_credentials\"",
            ));
        }
    };
    let client_auth = map
        .get("client_auth")
        .map(|value| {
            read::variant(
                &field_path("client_auth"),
                value,
                &[("basic", ClientAuth::Basic), ("body", ClientAuth::Body)],
            )
        })
        .transpose()?
        .unwrap_or_default();
    if map.contains_key("client_auth") && client_secret.is_none() {
        return Err(invalid(
            "client_auth",
            "has no effect without a client_secret",
        ));
    }
    let body_format = map
        .get("body_format")
        .map(|value| {
            read::variant(
                &field_path("body_format"),
                value,
                &[("form", BodyFormat::Form), ("json", BodyFormat::Json)],
            )
        })
        .transpose()?
        .unwrap_or_default();
    let refresh_before_expiry = duration_field(
        map,
        "refresh_before_expiry",
        "refresh_before_expiry",
        defaults::REFRESH_BEFORE_EXPIRY,
        Duration::ZERO,
        Duration::from_secs(24 * 3600),
    )?;
    let request_timeout = duration_field(
        map,
        "request_timeout",
        "request_timeout",
        defaults::REQUEST_TIMEOUT,
        Duration::from_millis(100),
        Duration::from_secs(60),
    )?;
    let max_request_wait = duration_field(
        map,
        "max_request_wait",
        "max_request_wait",
        defaults::MAX_REQUEST_WAIT,
        Duration::from_millis(100),
        Duration::from_secs(300),
    )?;
    let default_expires_in = duration_field(
        map,
        "default_expires_in",
        "default_expires_in",
        defaults::DEFAULT_EXPIRES_IN,
        Duration::from_secs(1),
        Duration::from_secs(365 * 24 * 3600),
    )?;
    let backoff = backoff(map.get("backoff"))?;
    let refresh_on_unauthorized = map
        .get("refresh_on_unauthorized")
        .map(|value| read::boolean(&field_path("refresh_on_unauthorized"), value))
        .transpose()?
        .unwrap_or(false);
    let shared_key = match optional_string(map, "shared_key")? {
        None => endpoint.cluster.clone(),
        Some(key) => {
            let valid = !key.is_empty()
                && key.len() <= 128
                && key
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(&byte));
            if !valid {
                return Err(invalid(
                    "shared_key",
                    "must be 1 to 128 letters, digits, '-', '_', '.' or ':'",
                ));
            }
            key
        }
    };
    Ok(OAuth2Config {
        endpoint,
        grant,
        client_id,
        client_secret,
        client_auth,
        body_format,
        scopes: scopes(map.get("scopes"))?,
        extra_params: extra_params(map.get("extra_params"))?,
        refresh_before_expiry,
        request_timeout,
        max_request_wait,
        backoff,
        default_expires_in,
        refresh_on_unauthorized,
        shared_key,
    })
}

fn required_string(map: &Map, field: &str, expected: &'static str) -> Result<String, ConfigError> {
    match map.get(field) {
        None => Err(missing(field, expected)),
        Some(value) => read::string(&field_path(field), value, expected).map(str::to_owned),
    }
}

#[inline(never)]
fn optional_string(map: &Map, field: &str) -> Result<Option<String>, ConfigError> {
    map.get(field)
        .map(|value| read::string(&field_path(field), value, "a string").map(str::to_owned))
        .transpose()
}

fn token_endpoint(value: Option<&Value>) -> Result<TokenEndpoint, ConfigError> {
    const HINT: &str =
        "{\"cluster\": \"oauth\", \"authority\": \"auth.example.com\", \"path\": \"/oauth/token\"}";
    let Some(value) = value else {
        return Err(missing("token_endpoint", HINT));
    };
    let map = read::object(
        &field_path("token_endpoint"),
        value,
        &format!("an object such as {HINT}"),
        &["cluster", "authority", "path"],
    )?;
    let text = |field: &str| -> Result<String, ConfigError> {
        let path = field_path(&format!("token_endpoint.{field}"));
        match map.get(field) {
            Some(value) => read::string(&path, value, "a string").map(str::to_owned),
            None => Err(missing(&format!("token_endpoint.{field}"), HINT)),
        }
    };
    let cluster = text("cluster")?;
    if cluster.is_empty()
        || cluster
            .bytes()
            .any(|byte| byte.is_ascii_control() || byte == b' ')
    {
        return Err(invalid(
            "token_endpoint.cluster",
            "is not a valid cluster name",
        ));
    }
    let authority = authority_text(&field_path("token_endpoint.authority"), &text("authority")?)?;
    let path = text("path")?;
    path_text(&field_path("token_endpoint.path"), &path)?;
    Ok(TokenEndpoint {
        cluster,
        authority,
        path,
    })
}

#[inline(never)]
fn env_name(field: &str, value: Option<&Value>) -> Result<String, ConfigError> {
    match value {
        Some(Value::String(name)) => match env_name_problem(name) {
            None => Ok(name.clone()),
            Some(reason) => Err(invalid(field, reason)),
        },
        _ => Err(invalid(
            field,
            "must be the name of an environment variable",
        )),
    }
}

fn value_source(map: &Map, field: &str) -> Result<ValueSource, ConfigError> {
    match map.get(field) {
        None => Err(missing(field, "a string, or {\"env\": \"NAME\"}")),
        Some(Value::String(text)) => {
            if text.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
            header_value(&field_path(field), text.trim())?;
            Ok(ValueSource::Inline(text.trim().to_owned()))
        }
        Some(Value::Object(inner)) if inner.len() == 1 && inner.contains_key("env") => Ok(
            ValueSource::Env(env_name(&format!("{field}.env"), inner.get("env"))?),
        ),
        Some(_) => Err(invalid(field, "must be a string, or {\"env\": \"NAME\"}")),
    }
}

#[inline(never)]
fn secret_source(value: Option<&Value>) -> Result<SecretSource, ConfigError> {
    const HINT: &str = "{\"env\": \"NAME\"} or {\"inline\": \"TOKEN\"}";
    let Some(value) = value else {
        return Err(missing(
            "refresh_token",
            "the refresh_token grant needs {\"env\": \"NAME\"} or {\"inline\": \"TOKEN\"}",
        ));
    };
    let Value::Object(inner) = value else {
        return Err(invalid("refresh_token", format!("must be {HINT}")));
    };
    let mut entries = inner.iter();
    match (entries.next(), entries.next()) {
        (Some((kind, setting)), None) if kind == "env" => Ok(SecretSource::Env(env_name(
            "refresh_token.env",
            Some(setting),
        )?)),
        (Some((kind, setting)), None) if kind == "inline" => {
            let Value::String(token) = setting else {
                return Err(invalid("refresh_token.inline", "must be a string"));
            };
            if token.trim().is_empty() {
                return Err(invalid("refresh_token.inline", "must not be empty"));
            }
            header_value(&field_path("refresh_token.inline"), token.trim())?;
            Ok(SecretSource::Inline(Secret::new(token.trim())))
        }
        _ => Err(invalid(
            "refresh_token",
            format!("must have exactly one key: {HINT}"),
        )),
    }
}

#[inline(never)]
fn scopes(value: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut scopes: Vec<String> = Vec::new();
    for (index, scope) in read::strings(&field_path("scopes"), value, "a list of strings")?
        .into_iter()
        .enumerate()
    {
        let field = format!("scopes[{index}]");
        // RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        let valid = !scope.is_empty()
            && scope.bytes().all(|byte| {
                byte == 0x21 || (0x23..=0x5b).contains(&byte) || (0x5d..=0x7e).contains(&byte)
            });
        if !valid {
            return Err(invalid(
                &field,
                "is not a valid scope (no spaces, quotes or backslashes)",
            ));
        }
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    Ok(scopes)
}

#[inline(never)]
fn extra_params(value: Option<&Value>) -> Result<Vec<(String, String)>, ConfigError> {
    let map = match value {
        None => return Ok(Vec::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(invalid(
                "extra_params",
                "must be an object of string values, e.g. {\"audience\": \"api\"}",
            ));
        }
    };
    let mut params = Vec::new();
    for (name, value) in map.iter() {
        let field = format!("extra_params.{name}");
        if name.is_empty() {
            return Err(invalid(
                "extra_params",
                "a parameter name must not be empty",
            ));
        }
        if RESERVED_PARAMS.contains(&name.as_str()) {
            return Err(invalid(
                &field,
                "is set by the filter itself and cannot be given here",
            ));
        }
        let text = read::string(&field_path(&field), value, "a string")?;
        params.push((name.clone(), text.to_owned()));
    }
    Ok(params)
}

#[inline(never)]
fn backoff(value: Option<&Value>) -> Result<BackoffConfig, ConfigError> {
    let map = match value {
        None => {
            return Ok(BackoffConfig {
                initial: defaults::BACKOFF_INITIAL,
                max: defaults::BACKOFF_MAX,
            });
        }
        Some(value) => read::object(
            &field_path("backoff"),
            value,
            "an object such as {\"initial\": \"1s\", \"max\": \"5m\"}",
            &["initial", "max"],
        )?,
    };
    let initial = duration_field(
        map,
        "initial",
        "backoff.initial",
        defaults::BACKOFF_INITIAL,
        Duration::from_millis(100),
        Duration::from_secs(3600),
    )?;
    let max = duration_field(
        map,
        "max",
        "backoff.max",
        defaults::BACKOFF_MAX.max(initial),
        Duration::from_millis(100),
        Duration::from_secs(24 * 3600),
    )?;
    if max < initial {
        return Err(invalid(
            "backoff.max",
            "must not be shorter than backoff.initial",
        ));
    }
    Ok(BackoffConfig { initial, max })
}

/// The duration at `key` of `map`, named `field` (its path under `oauth2`) in errors.
#[inline(never)]
fn duration_field(
    map: &Map,
    key: &str,
    field: &str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let Some(value) = map.get(key) else {
        return Ok(default);
    };
    let duration = parse_duration(value).ok_or_else(|| {
        invalid(
            field,
            "must be a duration such as \"500ms\", \"30s\", \"5m\", \"1h\" or a number of seconds",
        )
    })?;
    if duration < min || duration > max {
        return Err(invalid(
            field,
            format!("must be between {} and {}", show(min), show(max)),
        ));
    }
    Ok(duration)
}

/// Renders a duration in the configuration's own syntax.
pub fn show(duration: Duration) -> String {
    // Configured durations are far below u64 milliseconds; u64 keeps 128-bit formatting out.
    let millis = super::millis(duration);
    if millis.is_multiple_of(3_600_000) && millis > 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis.is_multiple_of(60_000) && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Parses a duration in the workspace's one grammar (the `durations` crate, shared with the proxy's
/// TOML): `"250ms"`, `"30s"`, `"1.5s"`, `"5m"`, `"1h"`, `"30"` (seconds), or a JSON number of seconds.
pub fn parse_duration(value: &Value) -> Option<Duration> {
    match value {
        Value::Number(number) => durations::parse_seconds(number.literal()).ok(),
        Value::String(text) => durations::parse(text).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::{Value, json};

    fn parse(value: &Value) -> Result<OAuth2Config, ConfigError> {
        super::parse(&crate::json::from_serde(value))
    }

    fn parse_duration(value: &Value) -> Option<Duration> {
        super::parse_duration(&crate::json::from_serde(value))
    }

    fn minimal() -> Value {
        json!({
            "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/oauth/token"},
            "grant_type": "refresh_token",
            "client_id": "client-1",
            "refresh_token": {"env": "REFRESH"}
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut config = minimal();
        config[field] = value;
        config
    }

    fn error(value: Value) -> String {
        parse(&value).unwrap_err().to_string()
    }

    #[test]
    fn minimal_refresh_token_config_gets_defaults() {
        let config = parse(&minimal()).unwrap();
        assert_eq!(config.endpoint.cluster, "oauth");
        assert_eq!(config.endpoint.authority, "auth.example.com");
        assert_eq!(
            config.grant,
            Grant::RefreshToken {
                initial: SecretSource::Env("REFRESH".into())
            }
        );
        assert_eq!(config.client_id, ValueSource::Inline("client-1".into()));
        assert_eq!(config.client_secret, None);
        assert_eq!(config.refresh_before_expiry, Duration::from_secs(300));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.max_request_wait, Duration::from_secs(10));
        assert_eq!(config.backoff.initial, Duration::from_secs(1));
        assert_eq!(config.backoff.max, Duration::from_secs(300));
        assert!(!config.refresh_on_unauthorized);
        assert_eq!(config.shared_key, "oauth");
        assert_eq!(config.body_format, BodyFormat::Form);
    }

    #[test]
    fn client_credentials_needs_a_secret_from_the_environment() {
        let mut config = minimal();
        config["grant_type"] = json!("client_credentials");
        config.as_object_mut().unwrap().remove("refresh_token");
        assert!(
            error(config.clone())
                .starts_with("credential.source.oauth2.client_secret: is required")
        );
        config["client_secret"] = json!({"env": "SECRET"});
        config["client_id"] = json!({"env": "CLIENT"});
        config["client_auth"] = json!("body");
        let parsed = parse(&config).unwrap();
        assert_eq!(parsed.grant, Grant::ClientCredentials);
        assert_eq!(parsed.client_secret.as_deref(), Some("SECRET"));
        assert_eq!(parsed.client_id, ValueSource::Env("CLIENT".into()));
        assert_eq!(parsed.client_auth, ClientAuth::Body);
        config["client_secret"] = json!("inline-secret-value");
        let message = error(config);
        assert!(
            message.contains("client_secret: must be {\"env\""),
            "{message}"
        );
        assert!(!message.contains("inline-secret-value"));
    }

    #[test]
    fn errors_name_the_field_and_never_quote_a_refresh_token() {
        let message = error(with("refresh_token", json!("rt-secret-value")));
        assert!(
            message.starts_with("credential.source.oauth2.refresh_token:"),
            "{message}"
        );
        assert!(!message.contains("rt-secret-value"));
        let message = error(with(
            "refresh_token",
            json!({"inline": "rt\nsecret", "env": "X"}),
        ));
        assert!(!message.contains("secret"), "{message}");
        let message = error(with("refresh_token", json!({"inline": "rt-a\nx"})));
        assert!(message.contains("line feed"), "{message}");
        assert!(!message.contains("rt-a"), "{message}");
        assert_eq!(
            error(with("tokn_endpoint", json!({})))
                .split(',')
                .next()
                .unwrap(),
            "credential.source.oauth2.tokn_endpoint: unknown field `tokn_endpoint`"
        );
        assert_eq!(
            error(with("grant_type", json!("sk-ant-ort01-pasted"))),
            "credential.source.oauth2.grant_type: unknown grant; expected \"refresh_token\" or \"client_credentials\""
        );
        assert_eq!(
            error(with("refresh_token", json!({"env": "sk-ant-ort01-pasted"}))),
            "credential.source.oauth2.refresh_token.env: is not an environment variable name (ASCII letters, digits and '_', not starting with a digit)"
        );
        assert!(
            error(with(
                "token_endpoint",
                json!({"cluster": "c", "authority": "a"})
            ))
            .starts_with("credential.source.oauth2.token_endpoint.path: is required")
        );
        assert!(
            error(with(
                "token_endpoint",
                json!({"cluster": "c", "authority": "a", "path": "token"})
            ))
            .starts_with("credential.source.oauth2.token_endpoint.path:")
        );
    }

    #[test]
    fn durations_accept_units_and_numbers_within_bounds() {
        for (text, millis) in [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("7", 7000),
            ("1.5s", 1500),
            ("0.5m", 30_000),
        ] {
            assert_eq!(
                parse_duration(&json!(text)),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration(&json!(1.5)),
            Some(Duration::from_millis(1500))
        );
        for bad in [
            json!("-1s"),
            json!("1.0005s"),
            json!("5 s"),
            json!("s"),
            json!(""),
            json!(-1),
            json!(true),
            json!("9999999999999h"),
        ] {
            assert_eq!(parse_duration(&bad), None, "{bad}");
        }
        let message = error(with("request_timeout", json!("2m")));
        assert_eq!(
            message,
            "credential.source.oauth2.request_timeout: must be between 100ms and 1m"
        );
        let message = error(with("backoff", json!({"initial": "10s", "max": "1s"})));
        assert_eq!(
            message,
            "credential.source.oauth2.backoff.max: must not be shorter than backoff.initial"
        );
        let message = error(with("backoff", json!({"initial": "fast"})));
        assert!(
            message.starts_with("credential.source.oauth2.backoff.initial:"),
            "{message}"
        );
        assert_eq!(show(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn scopes_and_extra_params_are_checked() {
        let config = parse(&with("scopes", json!(["a", "b:c", "a"]))).unwrap();
        assert_eq!(config.scopes, vec!["a", "b:c"]);
        assert!(
            error(with("scopes", json!(["a b"])))
                .starts_with("credential.source.oauth2.scopes[0]:")
        );
        let config = parse(&with("extra_params", json!({"audience": "api"}))).unwrap();
        assert_eq!(
            config.extra_params,
            vec![("audience".to_owned(), "api".to_owned())]
        );
        assert!(
            error(with("extra_params", json!({"grant_type": "x"}))).starts_with(
                "credential.source.oauth2.extra_params.grant_type: is set by the filter"
            )
        );
        assert!(
            error(with("shared_key", json!("a b")))
                .starts_with("credential.source.oauth2.shared_key:")
        );
        assert!(
            error(with("client_auth", json!("basic")))
                .contains("has no effect without a client_secret")
        );
    }
}
