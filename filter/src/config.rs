//! Configuration: the JSON shape, its validation, and the validated
//! [`FilterConfig`] the rest of the filter works from.
//!
//! Parsing happens in two passes over one JSON tree, every section (the
//! `oauth2` source included) read with the same helpers ([`read`]). The first
//! pass reads each object into a raw struct, rejecting unknown fields and wrong
//! types with the path of the offending field. A validation pass then checks
//! header names and values, rule targets and access ranges, producing a
//! [`FilterConfig`] in which every header name is lower-case and every rule is
//! known to be safe.
//!
//! No error quotes a value it could not use (only its JSON kind), so a token
//! pasted into the wrong field can never be echoed in a log line.
//!
//! Configuration code runs once per configure, never per request, so it is shaped for a small
//! binary: functions (here, in [`read`] and in the `oauth2` reader) are kept out of line where the
//! binary then holds one copy instead of inlined ones, and left to the compiler where inlining
//! measured smaller.

pub(crate) mod read;

use crate::json::{self, ErrorKind, Map, Quoted, Value};

use crate::access::{AccessPolicy, Cidr, IdentityRule, IdentitySource, PropertyPath, Requirement};
use crate::credential::{
    CredentialConfig, CredentialSource, DEFAULT_HEADER, DEFAULT_PREFIX, forbidden_value_char,
};
use crate::preset::Preset;
use crate::rules::{Action, AuthorityMatch, Conditions, HeaderCondition, Rule};
use crate::secret::Secret;
use crate::usage::{DEFAULT_MAX_CALLERS, DEFAULT_MAX_EVENT_BYTES, DEFAULT_MAX_MODELS, UsageConfig};

/// Headers the proxy itself manages; rules and strip lists may not touch them.
pub const MANAGED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// The validated filter configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    /// Which header carries the credential, and where the token comes from.
    pub credential: CredentialConfig,
    /// Every request header removed before anything else happens: the
    /// credential header, `strip_request_headers` and the preset's own list.
    pub stripped_request_headers: Vec<String>,
    /// The upstream preset, if any.
    pub preset: Option<Preset>,
    /// Rules run over request headers, in order.
    pub request_rules: Vec<Rule>,
    /// Rules run over response headers, in order.
    pub response_rules: Vec<Rule>,
    /// Who may use the filter, if restricted.
    pub access: Option<AccessPolicy>,
    /// What to do when no credential is available.
    pub on_missing_credential: MissingCredential,
    /// Every request header the request pipeline may change: the stripped
    /// headers (the credential header among them), those written by request
    /// rules and by the preset. Their count is the room a request's list is
    /// read with, so the pipeline's additions never grow it.
    pub request_header_names: Vec<String>,
    /// Every response header the response pipeline may change: the credential
    /// header and those written by response rules.
    pub response_header_names: Vec<String>,
    /// Whether a response rule tests the request's method, path or authority,
    /// so the client's request must be kept until the response arrives.
    pub response_rules_read_request: bool,
    /// Whether a response rule needs the response headers (see
    /// [`Rule::reads_response`]); when none does, responses are rewritten
    /// without reading them.
    pub response_rules_read_response: bool,
    /// Whether the credential is a bearer token ([`CredentialConfig::is_bearer`]), worked out once
    /// rather than per request.
    pub credential_is_bearer: bool,
    /// Token usage accounting; `None` when it is off.
    pub usage: Option<UsageConfig>,
}

/// What to do with a request when no credential is available.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingCredential {
    /// Answer 503 locally (the default).
    #[default]
    Deny,
    /// Forward without a credential (client credentials are still stripped).
    Forward,
}

impl FilterConfig {
    /// Whether requests need the `source.address` property.
    pub fn needs_source_address(&self) -> bool {
        self.access
            .as_ref()
            .is_some_and(AccessPolicy::needs_source_address)
    }
}

/// A configuration that cannot be used. Display starts with the field path.
///
/// Boxed: an error travels back through every reader and check, and moving one pointer at each
/// step takes less code than moving the whole error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(Box<ConfigErrorKind>);

impl ConfigError {
    /// What is wrong, by value.
    #[must_use]
    pub fn into_kind(self) -> ConfigErrorKind {
        *self.0
    }
}

impl From<ConfigErrorKind> for ConfigError {
    #[cold]
    #[inline(never)]
    fn from(kind: ConfigErrorKind) -> Self {
        Self(Box::new(kind))
    }
}

/// What makes a configuration unusable. Display starts with the field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The plugin configuration is absent or blank.
    #[error(
        "plugin configuration is empty: expected a JSON object with at least a \"credential\" field"
    )]
    Empty,
    /// The configuration is not well-formed JSON.
    #[error("configuration is not valid JSON at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// The JSON is well-formed but a field has the wrong shape or is unknown.
    #[error("{path}: {message}")]
    Shape {
        /// Path of the field, e.g. `request_rules[2].when`.
        path: String,
        /// What is wrong; never the value as written.
        message: String,
    },
    /// A required field is missing.
    #[error("{path}: is required ({hint})")]
    Missing {
        /// Path of the missing field.
        path: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// A header name is not a valid lower-case-able HTTP token.
    #[error("{path}: {} is not a valid header name{hint}", Quoted(.name))]
    InvalidHeaderName {
        /// Path of the field.
        path: String,
        /// The name as written.
        name: String,
        /// Extra advice, possibly empty.
        hint: &'static str,
    },
    /// A header value contains a character that cannot appear on the wire.
    #[error("{path}: the value contains {what}, which is not allowed in a header value")]
    InvalidHeaderValue {
        /// Path of the field.
        path: String,
        /// The offending kind of character.
        what: &'static str,
    },
    /// A rule or list names a header it may not touch.
    #[error("{path}: {} {why}", Quoted(.name))]
    ForbiddenHeader {
        /// Path of the field.
        path: String,
        /// The header name.
        name: String,
        /// Why it may not be touched.
        why: &'static str,
    },
    /// Any other invalid value.
    #[error("{path}: {reason}")]
    Invalid {
        /// Path of the field.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A required field that is not there.
#[cold]
#[inline(never)]
fn missing(path: &str, hint: &'static str) -> ConfigError {
    ConfigError::from(ConfigErrorKind::Missing {
        path: path.to_owned(),
        hint,
    })
}

/// A header that a list or rule may not name.
#[cold]
#[inline(never)]
fn forbidden(path: &str, name: &str, why: &'static str) -> ConfigError {
    ConfigError::from(ConfigErrorKind::ForbiddenHeader {
        path: path.to_owned(),
        name: name.to_owned(),
        why,
    })
}

/// Parses and validates a plugin configuration.
///
/// # Errors
/// A [`ConfigError`] naming the first field that is wrong.
#[inline(never)]
pub fn parse(bytes: &[u8]) -> Result<FilterConfig, ConfigError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(ConfigError::from(ConfigErrorKind::Empty));
    }
    if trimmed.first() != Some(&b'{') {
        return Err(invalid(
            "configuration",
            "must be a JSON object, e.g. {\"credential\": {\"source\": {\"env\": \"NAME\"}}}",
        ));
    }
    let value = read::document(bytes).map_err(|error| json_error(&error))?;
    let raw = RawConfig::read(&value)?;
    // Freed before validation allocates the configuration that stays, which then reuses the
    // tree's memory: the heap requests allocate from is left as it was when each raw section was
    // consumed by its check (measured: about 2k instructions per request and response otherwise).
    drop(value);
    validate(&raw)
}

/// An error from the JSON reader, which states where it is and never quotes a string: a syntax
/// error, or a key named twice in one object.
fn json_error(error: &json::Error) -> ConfigError {
    let (line, column) = (error.line, error.column);
    if let ErrorKind::Duplicate(_) = error.kind {
        return ConfigError::from(ConfigErrorKind::Shape {
            path: "configuration".into(),
            message: format!("{} (line {line}, column {column})", error.kind),
        });
    }
    ConfigError::from(ConfigErrorKind::Syntax {
        line,
        column,
        message: error.kind.to_string(),
    })
}

// ---------------------------------------------------------------------------
// Raw JSON shape: each section read, type-checked and checked for unknown fields, before any
// value is validated.
// ---------------------------------------------------------------------------

#[derive(Default)]
struct RawConfig {
    credential: Option<RawCredential>,
    strip_request_headers: Vec<String>,
    preset: Option<Preset>,
    request_rules: Vec<RawRule>,
    response_rules: Vec<RawRule>,
    access: Option<RawAccess>,
    on_missing_credential: MissingCredential,
    usage: Option<RawUsage>,
}

impl RawConfig {
    fn read(value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            "",
            value,
            "a JSON object with the filter configuration",
            &[
                "credential",
                "strip_request_headers",
                "preset",
                "request_rules",
                "response_rules",
                "access",
                "on_missing_credential",
                "usage",
            ],
        )?;
        // Each field is assigned into one value, so an error anywhere drops that one value
        // instead of every field read so far.
        let mut raw = Self::default();
        if let Some(value) = map.get("credential") {
            raw.credential = Some(RawCredential::read("credential", value)?);
        }
        if let Some(value) = map.get("strip_request_headers") {
            raw.strip_request_headers =
                read::strings("strip_request_headers", value, "a list of header names")?;
        }
        if let Some(value) = map.get("preset") {
            raw.preset = Some(read::variant(
                "preset",
                value,
                &[("anthropic", Preset::Anthropic)],
            )?);
        }
        for (field, rules) in [
            ("request_rules", &mut raw.request_rules),
            ("response_rules", &mut raw.response_rules),
        ] {
            if let Some(value) = map.get(field) {
                *rules = read_rules(field, value)?;
            }
        }
        if let Some(value) = map.get("access") {
            raw.access = Some(RawAccess::read("access", value)?);
        }
        if let Some(value) = map.get("on_missing_credential") {
            raw.on_missing_credential = read::variant(
                "on_missing_credential",
                value,
                &[
                    ("deny", MissingCredential::Deny),
                    ("forward", MissingCredential::Forward),
                ],
            )?;
        }
        if let Some(value) = map.get("usage") {
            raw.usage = Some(RawUsage::read("usage", value)?);
        }
        Ok(raw)
    }
}

/// The list of rules at `field`.
#[inline(never)]
fn read_rules(field: &str, value: &Value) -> Result<Vec<RawRule>, ConfigError> {
    let mut rules = Vec::new();
    for (index, rule) in read::list(field, value, "a list of rules")?
        .iter()
        .enumerate()
    {
        rules.push(RawRule::read(&read::item(field, index), rule)?);
    }
    Ok(rules)
}

#[derive(Clone, Copy, Default)]
struct RawUsage {
    enabled: Option<bool>,
    max_callers: Option<u64>,
    max_models: Option<u64>,
    max_event_bytes: Option<u64>,
}

impl RawUsage {
    #[inline(never)]
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "an object such as {\"enabled\": true, \"max_callers\": 64, \"max_models\": 16, \"max_event_bytes\": 65536}",
            &["enabled", "max_callers", "max_models", "max_event_bytes"],
        )?;
        let number = |field: &str| {
            map.get(field)
                .map(|value| read::whole(&read::join(path, field), value))
                .transpose()
        };
        Ok(Self {
            enabled: map
                .get("enabled")
                .map(|value| read::boolean(&read::join(path, "enabled"), value))
                .transpose()?,
            max_callers: number("max_callers")?,
            max_models: number("max_models")?,
            max_event_bytes: number("max_event_bytes")?,
        })
    }
}

struct RawCredential {
    header: Option<String>,
    prefix: Option<String>,
    // Kept as JSON and read by `credential_source`, whose errors never quote what was written.
    source: Option<Value>,
}

impl RawCredential {
    #[inline(never)]
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "an object such as {\"source\": {\"env\": \"NAME\"}}",
            &["header", "prefix", "source"],
        )?;
        Ok(Self {
            header: optional_string(path, map, "header")?,
            prefix: optional_string(path, map, "prefix")?,
            source: map.get("source").cloned(),
        })
    }
}

/// The string at `path.field`, if given.
#[inline(never)]
fn optional_string(path: &str, map: &Map, field: &str) -> Result<Option<String>, ConfigError> {
    map.get(field)
        .map(|value| read::string(&read::join(path, field), value, "a string").map(str::to_owned))
        .transpose()
}

/// The string at `path.field`, which must be given.
#[inline(never)]
fn required_string(path: &str, map: &Map, field: &str) -> Result<String, ConfigError> {
    optional_string(path, map, field)?
        .ok_or_else(|| read::shape(path, format!("missing field `{field}`")))
}

#[derive(Default)]
struct RawRule {
    when: Option<RawWhen>,
    set: Option<RawNameValue>,
    append: Option<RawNameValue>,
    set_if_absent: Option<RawNameValue>,
    remove: Option<String>,
    rename: Option<RawFromTo>,
    rewrite_path_prefix: Option<RawFromTo>,
    set_authority: Option<String>,
}

/// `{"name": ..., "value": ...}`.
struct RawNameValue {
    name: String,
    value: String,
}

/// `{"from": ..., "to": ...}`.
struct RawFromTo {
    from: String,
    to: String,
}

impl RawRule {
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "a rule object such as {\"set\": {\"name\": \"x-team\", \"value\": \"ml\"}}",
            &[
                "when",
                "set",
                "append",
                "set_if_absent",
                "remove",
                "rename",
                "rewrite_path_prefix",
                "set_authority",
            ],
        )?;
        let name_value = |field: &str| -> Result<Option<RawNameValue>, ConfigError> {
            let Some(value) = map.get(field) else {
                return Ok(None);
            };
            let path = read::join(path, field);
            let inner = read::object(
                &path,
                value,
                "an object such as {\"name\": \"x-team\", \"value\": \"ml\"}",
                &["name", "value"],
            )?;
            Ok(Some(RawNameValue {
                name: required_string(&path, inner, "name")?,
                value: required_string(&path, inner, "value")?,
            }))
        };
        let from_to = |field: &str| -> Result<Option<RawFromTo>, ConfigError> {
            let Some(value) = map.get(field) else {
                return Ok(None);
            };
            let path = read::join(path, field);
            let inner = read::object(
                &path,
                value,
                "an object such as {\"from\": \"...\", \"to\": \"...\"}",
                &["from", "to"],
            )?;
            Ok(Some(RawFromTo {
                from: required_string(&path, inner, "from")?,
                to: required_string(&path, inner, "to")?,
            }))
        };
        let single =
            |field: &str, key: &str, expected: &str| -> Result<Option<String>, ConfigError> {
                let Some(value) = map.get(field) else {
                    return Ok(None);
                };
                let path = read::join(path, field);
                let inner = read::object(&path, value, expected, &[key])?;
                required_string(&path, inner, key).map(Some)
            };
        let mut raw = Self::default();
        if let Some(value) = map.get("when") {
            raw.when = Some(RawWhen::read(&read::join(path, "when"), value)?);
        }
        raw.set = name_value("set")?;
        raw.append = name_value("append")?;
        raw.set_if_absent = name_value("set_if_absent")?;
        raw.remove = single(
            "remove",
            "name",
            "an object such as {\"name\": \"x-debug\"}",
        )?;
        raw.rename = from_to("rename")?;
        raw.rewrite_path_prefix = from_to("rewrite_path_prefix")?;
        raw.set_authority = single(
            "set_authority",
            "value",
            "an object such as {\"value\": \"...\"}",
        )?;
        Ok(raw)
    }
}

#[derive(Default)]
struct RawWhen {
    path_prefix: Option<String>,
    method: Vec<String>,
    authority: Option<String>,
    header: Vec<RawHeaderCondition>,
}

impl RawWhen {
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "an object of conditions (path_prefix, method, authority, header)",
            &["path_prefix", "method", "authority", "header"],
        )?;
        let mut raw = Self::default();
        if let Some(value) = map.get("method") {
            raw.method = read::one_or_many(
                &read::join(path, "method"),
                value,
                "a method such as \"POST\" or a list of methods",
                Value::is_string,
                |path, value| {
                    read::string(path, value, "a method such as \"POST\"").map(str::to_owned)
                },
            )?;
        }
        if let Some(value) = map.get("header") {
            raw.header = read::one_or_many(
                &read::join(path, "header"),
                value,
                "a header condition object or a list of them",
                Value::is_object,
                RawHeaderCondition::read,
            )?;
        }
        raw.path_prefix = optional_string(path, map, "path_prefix")?;
        raw.authority = optional_string(path, map, "authority")?;
        Ok(raw)
    }
}

struct RawHeaderCondition {
    name: String,
    present: Option<bool>,
    value: Option<String>,
}

impl RawHeaderCondition {
    #[inline(never)]
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "a header condition such as {\"name\": \"x-team\", \"present\": true}",
            &["name", "present", "value"],
        )?;
        Ok(Self {
            name: required_string(path, map, "name")?,
            present: map
                .get("present")
                .map(|value| read::boolean(&read::join(path, "present"), value))
                .transpose()?,
            value: optional_string(path, map, "value")?,
        })
    }
}

#[derive(Default)]
struct RawAccess {
    identity: Option<RawIdentity>,
    source_cidrs: Option<Vec<String>>,
    require: Requirement,
}

impl RawAccess {
    #[inline(never)]
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "an object with identity, source_cidrs and/or require",
            &["identity", "source_cidrs", "require"],
        )?;
        let mut raw = Self::default();
        if let Some(value) = map.get("identity") {
            raw.identity = Some(RawIdentity::read(&read::join(path, "identity"), value)?);
        }
        if let Some(value) = map.get("source_cidrs") {
            raw.source_cidrs = Some(read::strings(
                &read::join(path, "source_cidrs"),
                value,
                "a list of ranges such as \"100.64.0.0/10\"",
            )?);
        }
        if let Some(value) = map.get("require") {
            raw.require = read::variant(
                &read::join(path, "require"),
                value,
                &[("all", Requirement::All), ("any", Requirement::Any)],
            )?;
        }
        Ok(raw)
    }
}

#[derive(Default)]
struct RawIdentity {
    property: Option<String>,
    header: Option<String>,
    trusted: Option<bool>,
    allow: Vec<String>,
}

impl RawIdentity {
    fn read(path: &str, value: &Value) -> Result<Self, ConfigError> {
        let map = read::object(
            path,
            value,
            "an object such as {\"property\": \"caller.id\", \"allow\": [\"alice@example.com\"]}",
            &["property", "header", "trusted", "allow"],
        )?;
        let mut raw = Self {
            property: optional_string(path, map, "property")?,
            ..Self::default()
        };
        raw.header = optional_string(path, map, "header")?;
        if let Some(value) = map.get("trusted") {
            raw.trusted = Some(read::boolean(&read::join(path, "trusted"), value)?);
        }
        match map.get("allow") {
            Some(value) => {
                raw.allow =
                    read::strings(&read::join(path, "allow"), value, "a list of identities")?;
            }
            None => return Err(read::shape(path, "missing field `allow`".into())),
        }
        Ok(raw)
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

const CREDENTIAL_HINT: &str =
    "for example {\"credential\": {\"source\": {\"env\": \"ANTHROPIC_OAUTH_TOKEN\"}}}";
const SOURCE_HINT: &str = "use {\"env\": \"NAME\"}, {\"inline\": \"TOKEN\"} or {\"oauth2\": {...}}";
const ACTIONS: &str =
    "set, append, set_if_absent, remove, rename, rewrite_path_prefix, set_authority";
const TOKEN_HINT: &str = " (use letters, digits and !#$%&'*+-.^_`|~)";
const PSEUDO_HINT: &str = " (pseudo-headers cannot be named here: use path_prefix, method, authority, rewrite_path_prefix or set_authority)";

/// A [`ConfigErrorKind::Invalid`] at `path`; one constructor keeps the two copies out of every caller.
#[cold]
#[inline(never)]
fn invalid(path: &str, reason: &str) -> ConfigError {
    ConfigError::from(ConfigErrorKind::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    })
}

// Borrowed, so an error drops what was read once, in `parse`, instead of at each check that fails.
#[inline(never)]
fn validate(raw: &RawConfig) -> Result<FilterConfig, ConfigError> {
    let raw_credential = raw
        .credential
        .as_ref()
        .ok_or_else(|| missing("credential", CREDENTIAL_HINT))?;
    let credential = validate_credential(raw_credential)?;
    let preset = raw.preset;

    let mut stripped = vec![credential.header.clone()];
    for (index, name) in raw.strip_request_headers.iter().enumerate() {
        let path = read::item("strip_request_headers", index);
        let name = header_name(&path, name)?;
        if let Some(why) = managed(&name) {
            return Err(ConfigError::from(ConfigErrorKind::ForbiddenHeader {
                path,
                name,
                why,
            }));
        }
        if !stripped.contains(&name) {
            stripped.push(name);
        }
    }
    for name in preset.map_or(&[][..], Preset::stripped_request_headers) {
        if !stripped.iter().any(|existing| existing == name) {
            stripped.push((*name).to_owned());
        }
    }

    let request_rules = validate_rules(
        "request_rules",
        &raw.request_rules,
        &Scope {
            kind: RuleKind::Request,
            credential_header: &credential.header,
            stripped: &stripped,
        },
    )?;
    let response_rules = validate_rules(
        "response_rules",
        &raw.response_rules,
        &Scope {
            kind: RuleKind::Response,
            credential_header: &credential.header,
            stripped: &[],
        },
    )?;

    let access = raw
        .access
        .as_ref()
        .map(|access| validate_access(access, &credential.header))
        .transpose()?;

    let mut request_header_names = stripped.clone();
    add_written_names(&mut request_header_names, &request_rules);
    for name in preset.map_or(&[][..], Preset::written_request_headers) {
        add_name(&mut request_header_names, name);
    }
    let mut response_header_names = vec![credential.header.clone()];
    add_written_names(&mut response_header_names, &response_rules);
    let response_rules_read_request = response_rules.iter().any(|rule| rule.when.reads_request());
    let response_rules_read_response = response_rules.iter().any(Rule::reads_response);
    let usage = validate_usage(raw.usage, preset)?;

    Ok(FilterConfig {
        credential_is_bearer: credential.is_bearer(),
        credential,
        stripped_request_headers: stripped,
        preset,
        request_rules,
        response_rules,
        access,
        on_missing_credential: raw.on_missing_credential,
        request_header_names,
        response_header_names,
        response_rules_read_request,
        response_rules_read_response,
        usage,
    })
}

/// The `usage` section: on by default with the Anthropic preset, off otherwise; the limits in range.
fn validate_usage(
    raw: Option<RawUsage>,
    preset: Option<Preset>,
) -> Result<Option<UsageConfig>, ConfigError> {
    let raw = raw.unwrap_or_default();
    let limit = |field: &str, value: Option<u64>, default: usize, min: u64, max: u64| {
        let Some(value) = value else {
            return Ok(default);
        };
        if !(min..=max).contains(&value) {
            return Err(invalid(
                &read::join("usage", field),
                &format!("must be a whole number from {min} to {max}"),
            ));
        }
        usize::try_from(value).map_err(|_| {
            invalid(
                &read::join("usage", field),
                "is too large for this platform",
            )
        })
    };
    let config = UsageConfig {
        max_callers: limit(
            "max_callers",
            raw.max_callers,
            DEFAULT_MAX_CALLERS,
            1,
            1_000,
        )?,
        max_models: limit("max_models", raw.max_models, DEFAULT_MAX_MODELS, 1, 100)?,
        max_event_bytes: limit(
            "max_event_bytes",
            raw.max_event_bytes,
            DEFAULT_MAX_EVENT_BYTES,
            1_024,
            1_048_576,
        )?,
    };
    let enabled = raw
        .enabled
        .unwrap_or(matches!(preset, Some(Preset::Anthropic)));
    Ok(enabled.then_some(config))
}

/// Adds every header name the rules may write, in rule order.
#[inline(never)]
fn add_written_names(names: &mut Vec<String>, rules: &[Rule]) {
    for rule in rules {
        for name in rule.action.written_names().into_iter().flatten() {
            add_name(names, name);
        }
    }
}

/// Adds `name` unless `names` has it already.
#[inline(never)]
fn add_name(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|known| known == name) {
        names.push(name.to_owned());
    }
}

fn validate_credential(raw: &RawCredential) -> Result<CredentialConfig, ConfigError> {
    let header = match &raw.header {
        Some(name) => header_name("credential.header", name)?,
        None => DEFAULT_HEADER.to_owned(),
    };
    if let Some(why) = managed(&header) {
        return Err(forbidden("credential.header", &header, why));
    }
    let prefix = match &raw.prefix {
        Some(prefix) => {
            header_value("credential.prefix", prefix)?;
            prefix.clone()
        }
        // A bare API-key header must not get a "Bearer " it did not ask for.
        None if header == DEFAULT_HEADER || header == "proxy-authorization" => {
            DEFAULT_PREFIX.to_owned()
        }
        None => String::new(),
    };
    let source = raw
        .source
        .as_ref()
        .ok_or_else(|| missing("credential.source", SOURCE_HINT))?;
    Ok(CredentialConfig {
        header,
        prefix,
        source: credential_source(source)?,
    })
}

fn credential_source(value: &Value) -> Result<CredentialSource, ConfigError> {
    const PATH: &str = "credential.source";
    let Value::Object(map) = value else {
        return Err(invalid(
            PATH,
            &format!("must be an object with exactly one key: {SOURCE_HINT}"),
        ));
    };
    let mut entries = map.iter();
    let (Some((kind, setting)), None) = (entries.next(), entries.next()) else {
        let keys = json::quoted_list(map.keys().map(String::as_str));
        return Err(invalid(
            PATH,
            &format!("must have exactly one key, found {keys}: {SOURCE_HINT}"),
        ));
    };
    match kind.as_str() {
        "inline" => {
            let path = "credential.source.inline";
            let Value::String(token) = setting else {
                return Err(invalid(path, "must be a string"));
            };
            if token.trim().is_empty() {
                return Err(invalid(path, "must not be empty"));
            }
            header_value(path, token.trim())?;
            Ok(CredentialSource::Inline(Secret::new(token.trim())))
        }
        "env" => {
            let path = "credential.source.env";
            let Value::String(name) = setting else {
                return Err(invalid(path, "must be the name of an environment variable"));
            };
            if let Some(reason) = env_name_problem(name) {
                return Err(invalid(path, reason));
            }
            Ok(CredentialSource::Env(name.clone()))
        }
        "oauth2" => Ok(CredentialSource::OAuth2(Box::new(
            crate::token::config::parse(setting)?,
        ))),
        other => Err(invalid(
            PATH,
            &format!(
                "unknown source {}; expected one of \"env\", \"inline\", \"oauth2\"",
                Quoted(other)
            ),
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Request,
    Response,
}

/// What a rule may touch, depending on where it runs.
struct Scope<'a> {
    kind: RuleKind,
    credential_header: &'a str,
    stripped: &'a [String],
}

impl Scope<'_> {
    /// Checks that an action may write to `name`.
    fn writable(&self, path: &str, name: &str) -> Result<(), ConfigError> {
        let why = if name == self.credential_header {
            Some("is the credential header, which no rule may touch")
        } else if self.stripped.iter().any(|stripped| stripped == name) {
            Some("is stripped from every request, so no rule may touch it")
        } else {
            managed(name)
        };
        match why {
            Some(why) => Err(forbidden(path, name, why)),
            None => Ok(()),
        }
    }

    /// Checks that a condition may test `name`.
    fn testable(&self, path: &str, name: &str) -> Result<(), ConfigError> {
        let removed =
            name == self.credential_header || self.stripped.iter().any(|stripped| stripped == name);
        if removed {
            let why = match self.kind {
                RuleKind::Request => {
                    "is removed from every request before rules run, so a condition on it can never see the client's value"
                }
                RuleKind::Response => {
                    "is the credential header, which is removed from every response before rules run"
                }
            };
            return Err(forbidden(path, name, why));
        }
        Ok(())
    }
}

#[inline(never)]
fn validate_rules(
    field: &str,
    rules: &[RawRule],
    scope: &Scope<'_>,
) -> Result<Vec<Rule>, ConfigError> {
    // Rules are borrowed, so an error drops the raw list once here rather than the rest of a
    // rule at each of the checks that can fail.
    let mut valid = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        valid.push(validate_rule(&read::item(field, index), rule, scope)?);
    }
    Ok(valid)
}

fn validate_rule(path: &str, raw: &RawRule, scope: &Scope<'_>) -> Result<Rule, ConfigError> {
    let given: Vec<&str> = [
        ("set", raw.set.is_some()),
        ("append", raw.append.is_some()),
        ("set_if_absent", raw.set_if_absent.is_some()),
        ("remove", raw.remove.is_some()),
        ("rename", raw.rename.is_some()),
        ("rewrite_path_prefix", raw.rewrite_path_prefix.is_some()),
        ("set_authority", raw.set_authority.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    if given.is_empty() {
        return Err(no_action(path));
    }
    if given.len() > 1 {
        return Err(invalid(
            path,
            &format!(
                "more than one action ({}): give exactly one per rule",
                given.join(", ")
            ),
        ));
    }

    let name_value = |field: &str, raw: &RawNameValue| -> Result<(String, String), ConfigError> {
        let field_path = read::join(path, field);
        let name = writable_name(&read::join(&field_path, "name"), &raw.name, scope)?;
        header_value(&read::join(&field_path, "value"), &raw.value)?;
        Ok((name, raw.value.clone()))
    };
    let action = if let Some(raw) = &raw.set {
        let (name, value) = name_value("set", raw)?;
        Action::Set { name, value }
    } else if let Some(raw) = &raw.append {
        let (name, value) = name_value("append", raw)?;
        Action::Append { name, value }
    } else if let Some(raw) = &raw.set_if_absent {
        let (name, value) = name_value("set_if_absent", raw)?;
        Action::SetIfAbsent { name, value }
    } else if let Some(raw) = &raw.remove {
        let name = writable_name(&read::join(path, "remove.name"), raw, scope)?;
        Action::Remove { name }
    } else if let Some(raw) = &raw.rename {
        let from = writable_name(&read::join(path, "rename.from"), &raw.from, scope)?;
        let to = writable_name(&read::join(path, "rename.to"), &raw.to, scope)?;
        Action::Rename { from, to }
    } else if let Some(raw) = &raw.rewrite_path_prefix {
        request_only(path, "rewrite_path_prefix", scope)?;
        path_text(&read::join(path, "rewrite_path_prefix.from"), &raw.from)?;
        path_text(&read::join(path, "rewrite_path_prefix.to"), &raw.to)?;
        Action::RewritePathPrefix {
            from: raw.from.clone(),
            to: raw.to.clone(),
        }
    } else if let Some(raw) = &raw.set_authority {
        request_only(path, "set_authority", scope)?;
        let value = authority_text(&read::join(path, "set_authority.value"), raw)?;
        Action::SetAuthority { value }
    } else {
        // Unreachable: exactly one action was counted above.
        return Err(no_action(path));
    };

    let when = match &raw.when {
        Some(when) => validate_when(&read::join(path, "when"), when, scope)?,
        None => Conditions::default(),
    };
    Ok(Rule { when, action })
}

/// A rule without an action.
#[cold]
#[inline(never)]
fn no_action(path: &str) -> ConfigError {
    invalid(path, &format!("no action: give exactly one of {ACTIONS}"))
}

/// The header name at `path`, lower-cased, which the rule's scope allows it to write.
#[inline(never)]
fn writable_name(path: &str, raw: &str, scope: &Scope<'_>) -> Result<String, ConfigError> {
    let name = header_name(path, raw)?;
    scope.writable(path, &name)?;
    Ok(name)
}

#[inline(never)]
fn request_only(path: &str, action: &str, scope: &Scope<'_>) -> Result<(), ConfigError> {
    if scope.kind == RuleKind::Response {
        return Err(invalid(
            &read::join(path, action),
            "is only allowed in request_rules",
        ));
    }
    Ok(())
}

fn validate_when(path: &str, raw: &RawWhen, scope: &Scope<'_>) -> Result<Conditions, ConfigError> {
    let path_prefix = raw
        .path_prefix
        .as_ref()
        .map(|prefix| path_text(&read::join(path, "path_prefix"), prefix).map(|()| prefix.clone()))
        .transpose()?;
    let mut methods = Vec::new();
    for (index, method) in raw.method.iter().enumerate() {
        if !is_token(method) {
            return Err(invalid(
                &read::item(&read::join(path, "method"), index),
                &format!("{} is not a valid HTTP method", Quoted(method)),
            ));
        }
        methods.push(method.clone());
    }
    let authority = raw
        .authority
        .as_ref()
        .map(|authority| {
            let value = authority_text(&read::join(path, "authority"), authority)?;
            let with_port = match value.strip_prefix('[') {
                // Bytes, not `str::contains`: the substring search costs the binary more than it saves.
                Some(rest) => rest.as_bytes().windows(2).any(|pair| pair == b"]:"),
                None => value.contains(':'),
            };
            Ok::<_, ConfigError>(AuthorityMatch { value, with_port })
        })
        .transpose()?;
    let mut headers = Vec::new();
    for (index, condition) in raw.header.iter().enumerate() {
        let condition_path = read::item(&read::join(path, "header"), index);
        let name_path = read::join(&condition_path, "name");
        let name = header_name(&name_path, &condition.name)?;
        scope.testable(&name_path, &name)?;
        headers.push(match (condition.present, &condition.value) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &condition_path,
                    "give either \"present\" or \"value\", not both",
                ));
            }
            (Some(false), None) => HeaderCondition::Absent(name),
            (Some(true) | None, None) => HeaderCondition::Present(name),
            (None, Some(value)) => {
                header_value(&read::join(&condition_path, "value"), value)?;
                HeaderCondition::Equals(name, value.as_bytes().to_vec())
            }
        });
    }
    Ok(Conditions {
        path_prefix,
        methods,
        authority,
        headers,
    })
}

fn validate_access(raw: &RawAccess, credential_header: &str) -> Result<AccessPolicy, ConfigError> {
    if raw.identity.is_none() && raw.source_cidrs.is_none() {
        return Err(invalid(
            "access",
            "configure \"identity\", \"source_cidrs\", or both",
        ));
    }
    let identity = raw
        .identity
        .as_ref()
        .map(|identity| {
            let source = identity_source(identity, credential_header)?;
            if identity.allow.is_empty() {
                return Err(invalid("access.identity.allow", "must list at least one identity"));
            }
            let mut allow = Vec::new();
            for (index, entry) in identity.allow.iter().enumerate() {
                let path = read::item("access.identity.allow", index);
                let trimmed = entry.trim();
                if trimmed.is_empty() {
                    return Err(invalid(&path, "must not be empty"));
                }
                if trimmed.contains(',') {
                    return Err(invalid(&path, "must not contain ',': identities are split on commas, so it could never match; list each identity on its own"));
                }
                header_value(&path, trimmed)?;
                allow.push(trimmed.to_owned());
            }
            Ok(IdentityRule { source, allow })
        })
        .transpose()?;
    let source_ranges = raw
        .source_cidrs
        .as_ref()
        .map(|cidrs| {
            if cidrs.is_empty() {
                return Err(invalid(
                    "access.source_cidrs",
                    "must list at least one range, e.g. \"100.64.0.0/10\"",
                ));
            }
            let mut ranges = Vec::new();
            for (index, text) in cidrs.iter().enumerate() {
                ranges.push(Cidr::parse(text.trim()).map_err(|error| {
                    invalid(
                        &read::item("access.source_cidrs", index),
                        &format!("{}: {error}", Quoted(text)),
                    )
                })?);
            }
            Ok(ranges)
        })
        .transpose()?;
    Ok(AccessPolicy {
        identity,
        source_ranges,
        require: raw.require,
    })
}

/// Why a header alone cannot name the caller, and what to use instead.
const UNTRUSTED_HEADER: &str = "any client can send a header, so it cannot identify the caller on its own: use {\"property\": \"caller.id\"} (host-harness serve with an [identity] mode) or {\"property\": \"source.principal\"} (Envoy or Istio with mTLS), or add \"trusted\": true only when a front proxy removes this header from every request and sets it itself";

/// The one identity source of `access.identity`: a property, or a header declared trusted.
fn identity_source(
    identity: &RawIdentity,
    credential_header: &str,
) -> Result<IdentitySource, ConfigError> {
    match (&identity.property, &identity.header) {
        (None, None) => Err(invalid(
            "access.identity",
            "give exactly one source: {\"property\": \"caller.id\"} or {\"header\": \"...\", \"trusted\": true}",
        )),
        (Some(_), Some(_)) => Err(invalid(
            "access.identity",
            "give exactly one source, \"property\" or \"header\", not both",
        )),
        (Some(property), None) => {
            if identity.trusted.is_some() {
                return Err(invalid(
                    "access.identity.trusted",
                    "applies to \"header\" only: a property is set by the host, never by the client",
                ));
            }
            PropertyPath::parse(property)
                .map(IdentitySource::Property)
                .map_err(|error| {
                    invalid(
                        "access.identity.property",
                        &format!("{} {error}", Quoted(property)),
                    )
                })
        }
        (None, Some(header)) => {
            let name = header_name("access.identity.header", header)?;
            if name == credential_header {
                return Err(ConfigError::from(ConfigErrorKind::ForbiddenHeader {
                    path: "access.identity.header".into(),
                    name,
                    why: "is the credential header and cannot carry a caller identity",
                }));
            }
            if identity.trusted != Some(true) {
                return Err(invalid(
                    "access.identity.header",
                    &format!("{}: {UNTRUSTED_HEADER}", Quoted(&name)),
                ));
            }
            Ok(IdentitySource::TrustedHeader(name))
        }
    }
}

// ---------------------------------------------------------------------------
// Field checks
// ---------------------------------------------------------------------------

/// Whether `text` is a non-empty HTTP token (RFC 9110 `tchar`s).
#[inline(never)]
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Validates a header name and returns it lower-cased.
#[inline(never)]
fn header_name(path: &str, name: &str) -> Result<String, ConfigError> {
    if is_token(name) {
        return Ok(name.to_ascii_lowercase());
    }
    Err(ConfigError::from(ConfigErrorKind::InvalidHeaderName {
        path: path.into(),
        name: name.into(),
        hint: if name.starts_with(':') {
            PSEUDO_HINT
        } else {
            TOKEN_HINT
        },
    }))
}

/// Longest environment variable name accepted: a longer "name" is more likely a pasted token.
const ENV_NAME_MAX: usize = 64;

/// Why `name` is not an environment variable name (ASCII letters, digits and `_`, not starting with a
/// digit, at most [`ENV_NAME_MAX`] long), or `None` when it is one. The reason never quotes the
/// name: a token pasted where a name belongs must not reach the logs.
#[inline(never)]
pub(crate) fn env_name_problem(name: &str) -> Option<&'static str> {
    let identifier = name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > ENV_NAME_MAX {
        Some(
            "is too long for an environment variable name (at most 64 characters); is it the token itself?",
        )
    } else if !identifier || name.starts_with(|first: char| first.is_ascii_digit()) {
        Some(
            "is not an environment variable name (ASCII letters, digits and '_', not starting with a digit)",
        )
    } else {
        None
    }
}

#[inline(never)]
pub(crate) fn header_value(path: &str, value: &str) -> Result<(), ConfigError> {
    match forbidden_value_char(value) {
        Some(what) => Err(ConfigError::from(ConfigErrorKind::InvalidHeaderValue {
            path: path.into(),
            what,
        })),
        None => Ok(()),
    }
}

#[inline(never)]
fn managed(name: &str) -> Option<&'static str> {
    MANAGED_HEADERS
        .contains(&name)
        .then_some("is managed by the proxy itself and cannot be configured here")
}

/// A path or path prefix: starts with `/`, no whitespace or control characters.
#[inline(never)]
pub(crate) fn path_text(path: &str, text: &str) -> Result<(), ConfigError> {
    if !text.starts_with('/') {
        return Err(invalid(
            path,
            &format!("{} must start with \"/\"", Quoted(text)),
        ));
    }
    if text
        .bytes()
        .any(|byte| byte.is_ascii_control() || byte == b' ')
    {
        return Err(invalid(
            path,
            &format!(
                "{} contains whitespace or a control character",
                Quoted(text)
            ),
        ));
    }
    Ok(())
}

/// An authority `host[:port]`, returned lower-cased.
#[inline(never)]
pub(crate) fn authority_text(path: &str, text: &str) -> Result<String, ConfigError> {
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&byte));
    if valid {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(invalid(
            path,
            &format!(
                "{} is not a valid authority (host or host:port)",
                Quoted(text)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn error_of(json: &str) -> String {
        parse(json.as_bytes()).unwrap_err().to_string()
    }

    fn env_credential() -> &'static str {
        r#""credential": {"source": {"env": "TOKEN"}}"#
    }

    fn with(extra: &str) -> String {
        format!("{{{}, {extra}}}", env_credential())
    }

    #[test]
    fn minimal_config_uses_bearer_authorization() {
        let config = parse(format!("{{{}}}", env_credential()).as_bytes()).unwrap();
        assert_eq!(config.credential.header, "authorization");
        assert_eq!(config.credential.prefix, "Bearer ");
        assert_eq!(
            config.credential.source,
            CredentialSource::Env("TOKEN".into())
        );
        assert_eq!(config.stripped_request_headers, vec!["authorization"]);
        assert_eq!(config.on_missing_credential, MissingCredential::Deny);
        assert!(config.preset.is_none() && config.access.is_none());
    }

    #[test]
    fn api_key_header_defaults_to_no_prefix() {
        let config = parse(
            br#"{"credential": {"header": "X-Api-Key", "source": {"inline": "sk-ant-api03-x"}}, "preset": "anthropic"}"#,
        )
        .unwrap();
        assert_eq!(config.credential.header, "x-api-key");
        assert_eq!(config.credential.prefix, "");
        assert_eq!(config.stripped_request_headers, vec!["x-api-key"]);
        assert_eq!(config.preset, Some(Preset::Anthropic));
    }

    #[test]
    fn strip_list_is_lower_cased_and_deduplicated_with_preset() {
        let config = parse(
            with(r#""strip_request_headers": ["X-Api-Key", "cookie", "cookie"], "preset": "anthropic""#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            config.stripped_request_headers,
            vec!["authorization", "x-api-key", "cookie"]
        );
    }

    #[test]
    fn empty_and_blank_configs_name_what_is_missing() {
        assert_eq!(parse(b""), Err(ConfigError::from(ConfigErrorKind::Empty)));
        assert_eq!(
            parse(b" \n"),
            Err(ConfigError::from(ConfigErrorKind::Empty))
        );
        assert!(error_of("{}").starts_with("credential: is required"));
        assert!(error_of(r#"{"credential": {}}"#).starts_with("credential.source: is required"));
    }

    #[test]
    fn invalid_json_says_where() {
        let message = error_of("{\n  \"credential\": {\n    \"source\": {\"env\": \"T\"\n  }\n");
        assert!(
            message.starts_with("configuration is not valid JSON at line"),
            "{message}"
        );
        let message = error_of(r#"{"credential": {"source": {"env": "T"}}} trailing"#);
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn a_field_given_twice_is_rejected() {
        let message = error_of(
            r#"{"credential": {"source": {"env": "A"}, "source": {"inline": "sk-ant-x"}}}"#,
        );
        assert!(
            message.starts_with("configuration: duplicate field `source` (line 1,"),
            "{message}"
        );
        assert!(!message.contains("sk-ant"), "{message}");
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_path() {
        let message = error_of(&with(
            r#""request_rules": [{"set": {"name": "a", "value": "b"}}, {"when": {"paht_prefix": "/"}, "remove": {"name": "x"}}]"#,
        ));
        assert!(message.starts_with("request_rules[1].when"), "{message}");
        assert!(message.contains("unknown field `paht_prefix`"), "{message}");
        let message = error_of(r#"{"credential": {"source": {"env": "T"}, "token": "x"}}"#);
        assert!(message.starts_with("credential"), "{message}");
        assert!(message.contains("unknown field `token`"), "{message}");
        let message = error_of(&with(r#""extra": 1"#));
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let message = error_of(&with(r#""strip_request_headers": "x-api-key""#));
        assert!(message.starts_with("strip_request_headers:"), "{message}");
        let message = error_of(&with(r#""preset": "openai""#));
        assert!(
            message.starts_with("preset:") && message.contains("anthropic"),
            "{message}"
        );
        let message = error_of(&with(r#""on_missing_credential": "allow""#));
        assert!(message.starts_with("on_missing_credential:"), "{message}");
    }

    #[test]
    fn source_errors_never_echo_a_token() {
        for json in [
            r#"{"credential": {"source": "sk-ant-oat01-leak"}}"#,
            r#"{"credential": {"source": {"inline": ["sk-ant-oat01-leak"]}}}"#,
            r#"{"credential": {"source": {"inline": "sk-ant-oat01-leak\r\nx: y"}}}"#,
            r#"{"credential": {"source": {"inline": "sk-ant-oat01-leak", "env": "X"}}}"#,
        ] {
            let message = error_of(json);
            assert!(message.starts_with("credential.source"), "{message}");
            assert!(!message.contains("leak"), "{message}");
        }
    }

    #[test]
    fn oauth2_source_errors_name_the_nested_field() {
        let message =
            error_of(r#"{"credential": {"source": {"oauth2": {"token_url": "https://x"}}}}"#);
        assert!(
            message.starts_with("credential.source.oauth2.token_url: unknown field `token_url`"),
            "{message}"
        );
        let config = parse(
            br#"{"credential": {"source": {"oauth2": {
                "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/token"},
                "grant_type": "refresh_token", "client_id": "c", "refresh_token": {"env": "RT"}}}}}"#,
        )
        .unwrap();
        assert!(matches!(
            config.credential.source,
            CredentialSource::OAuth2(_)
        ));
        let message = error_of(r#"{"credential": {"source": {"file": "/x"}}}"#);
        assert!(message.contains("unknown source \"file\""), "{message}");
    }

    #[test]
    fn inline_and_env_source_checks() {
        assert!(
            error_of(r#"{"credential": {"source": {"inline": " "}}}"#)
                .contains("must not be empty")
        );
        assert!(
            error_of(r#"{"credential": {"source": {"env": "A=B"}}}"#)
                .starts_with("credential.source.env:")
        );
        assert!(
            error_of(r#"{"credential": {"source": {"env": ""}}}"#)
                .starts_with("credential.source.env:")
        );
    }

    #[test]
    fn a_token_pasted_in_the_wrong_place_is_never_echoed() {
        let token = "sk-ant-oat01-PASTEDbyMISTAKE";
        for config in [
            format!(r#"{{"credential": "{token}"}}"#),
            format!(r#"{{"credential": {{"header": "x", "source": {{"env": "{token}"}}}}}}"#),
            format!(
                r#"{{"credential": {{"source": {{"env": "{}"}}}}}}"#,
                "ANTHROPICOAUTHTOKEN".repeat(4)
            ),
            with(&format!(r#""preset": "{token}""#)),
            with(&format!(r#""on_missing_credential": "{token}""#)),
            with(&format!(
                r#""request_rules": [{{"set": {{"name": "x", "value": {{"a": "{token}"}}}}}}]"#
            )),
        ] {
            let message = error_of(&config);
            assert!(!message.contains("PASTED"), "{message}");
            assert!(!message.contains("OAUTHTOKENANTHROPIC"), "{message}");
            assert!(message.contains(':'), "names the field: {message}");
        }
        assert!(
            error_of(&format!(r#"{{"credential": "{token}"}}"#))
                .starts_with("credential: invalid type: string, expected an object")
        );
        assert!(
            error_of(&with(&format!(r#""preset": "{token}""#)))
                .contains("unknown variant, expected `anthropic`")
        );
    }

    #[test]
    fn quoted_values_never_reach_a_message() {
        // What serde used to quote (strings with quotes, escapes and backticks) is reported by kind.
        for (written, marker) in [
            (r#""a \"b\" c""#, "b\\"),
            (r#""x`, y`""#, "x`, y"),
            (r#""unterminated\"""#, "unterminated"),
        ] {
            let message = error_of(&format!(r#"{{"credential": {written}}}"#));
            assert!(
                message.starts_with("credential: invalid type: string"),
                "{message}"
            );
            assert!(!message.contains(marker), "{message}");
            for field in ["preset", "on_missing_credential", "usage"] {
                let message = error_of(&with(&format!(r#""{field}": {written}"#)));
                assert!(message.starts_with(field), "{message}");
                assert!(!message.contains(marker), "{message}");
            }
        }
    }

    #[test]
    fn usage_is_on_with_the_anthropic_preset_and_validated() {
        let defaults = UsageConfig {
            max_callers: 64,
            max_models: 16,
            max_event_bytes: 65_536,
        };
        assert_eq!(
            parse(with(r#""preset": "anthropic""#).as_bytes())
                .unwrap()
                .usage,
            Some(defaults)
        );
        let plain = format!("{{{}}}", env_credential());
        assert_eq!(parse(plain.as_bytes()).unwrap().usage, None);
        assert_eq!(
            parse(with(r#""usage": {"enabled": true, "max_callers": 2, "max_models": 3, "max_event_bytes": 1024}"#).as_bytes())
                .unwrap()
                .usage,
            Some(UsageConfig {
                max_callers: 2,
                max_models: 3,
                max_event_bytes: 1024
            })
        );
        assert_eq!(
            parse(with(r#""preset": "anthropic", "usage": {"enabled": false}"#).as_bytes())
                .unwrap()
                .usage,
            None
        );
        assert_eq!(
            parse(with(r#""usage": {}"#).as_bytes()).unwrap().usage,
            None
        );
        let cases = [
            (
                r#""usage": {"enabled": true, "max_callers": 0}"#,
                "usage.max_callers: must be a whole number from 1 to 1000",
            ),
            (
                r#""usage": {"max_models": 101}"#,
                "usage.max_models: must be a whole number from 1 to 100",
            ),
            (
                r#""usage": {"max_event_bytes": 10}"#,
                "usage.max_event_bytes: must be a whole number from 1024 to 1048576",
            ),
            (r#""usage": {"max_callers": -1}"#, "usage.max_callers:"),
            (r#""usage": {"enabled": "yes"}"#, "usage.enabled:"),
            (
                r#""usage": {"max_caller": 5}"#,
                "usage.max_caller: unknown field `max_caller`",
            ),
            (r#""usage": true"#, "usage: invalid type"),
        ];
        for (usage, expected) in cases {
            let message = error_of(&with(usage));
            assert!(
                message.starts_with(expected),
                "{message}\nexpected: {expected}"
            );
        }
    }

    #[test]
    fn env_names_are_identifiers() {
        for name in ["ANTHROPIC_OAUTH_TOKEN", "token_2", "_T"] {
            assert!(env_name_problem(name).is_none(), "{name}");
        }
        for name in [
            "",
            "A=B",
            "sk-ant-oat01-x",
            "2FA",
            " T",
            "T\n",
            &"T".repeat(65),
        ] {
            assert!(env_name_problem(name).is_some(), "{name:?}");
        }
    }

    #[test]
    fn inline_tokens_are_trimmed_before_their_characters_are_checked() {
        let config = parse(br#"{"credential": {"source": {"inline": "tok\n"}}}"#).unwrap();
        assert_eq!(
            config.credential.source,
            CredentialSource::Inline(Secret::new("tok"))
        );
        assert!(
            error_of(r#"{"credential": {"source": {"inline": "t\nk"}}}"#).contains("line feed")
        );
    }

    #[test]
    fn header_names_must_be_tokens_and_are_lower_cased() {
        let message = error_of(&with(
            r#""request_rules": [{}, {}, {"set": {"name": "x y", "value": "v"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0]: no action"),
            "{message}"
        );
        let message = error_of(&with(
            r#""request_rules": [{"set": {"name": "x y", "value": "v"}}]"#,
        ));
        assert_eq!(
            message,
            "request_rules[0].set.name: \"x y\" is not a valid header name (use letters, digits and !#$%&'*+-.^_`|~)"
        );
        let config = parse(
            with(r#""request_rules": [{"set": {"name": "X-Team", "value": "ml"}}]"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            config.request_rules[0].action,
            Action::Set {
                name: "x-team".into(),
                value: "ml".into()
            }
        );
        assert!(
            error_of(r#"{"credential": {"header": "", "source": {"env": "T"}}}"#)
                .starts_with("credential.header:")
        );
    }

    #[test]
    fn header_values_reject_cr_lf_nul() {
        for value in ["a\\rb", "a\\nb", "a\\u0000b"] {
            let message = error_of(&with(&format!(
                r#""request_rules": [{{"append": {{"name": "x", "value": "{value}"}}}}]"#
            )));
            assert!(
                message.starts_with("request_rules[0].append.value: the value contains"),
                "{message}"
            );
        }
        assert!(
            error_of(r#"{"credential": {"prefix": "Bearer\n", "source": {"env": "T"}}}"#)
                .starts_with("credential.prefix:")
        );
    }

    #[test]
    fn rules_may_not_touch_credential_stripped_pseudo_or_managed_headers() {
        let cases = [
            (
                r#"{"set": {"name": "Authorization", "value": "x"}}"#,
                "request_rules[0].set.name: \"authorization\" is the credential header",
            ),
            (
                r#"{"remove": {"name": "x-api-key"}}"#,
                "request_rules[0].remove.name: \"x-api-key\" is stripped",
            ),
            (
                r#"{"rename": {"from": "x-a", "to": "x-api-key"}}"#,
                "request_rules[0].rename.to: \"x-api-key\" is stripped",
            ),
            (
                r#"{"set": {"name": ":path", "value": "/"}}"#,
                "request_rules[0].set.name: \":path\" is not a valid header name (pseudo-headers",
            ),
            (
                r#"{"set": {"name": "content-length", "value": "1"}}"#,
                "request_rules[0].set.name: \"content-length\" is managed",
            ),
            (
                r#"{"when": {"header": {"name": "authorization"}}, "set": {"name": "x", "value": "1"}}"#,
                "request_rules[0].when.header[0].name: \"authorization\" is removed",
            ),
        ];
        for (rule, expected) in cases {
            let message = error_of(&with(&format!(
                r#""preset": "anthropic", "request_rules": [{rule}]"#
            )));
            assert!(
                message.starts_with(expected),
                "{message}\nexpected: {expected}"
            );
        }
        let message = error_of(&with(
            r#""response_rules": [{"set": {"name": "authorization", "value": "x"}}]"#,
        ));
        assert!(
            message.starts_with(
                "response_rules[0].set.name: \"authorization\" is the credential header"
            ),
            "{message}"
        );
        let message = error_of(&with(
            r#""response_rules": [{"rewrite_path_prefix": {"from": "/a", "to": "/"}}]"#,
        ));
        assert!(
            message.starts_with(
                "response_rules[0].rewrite_path_prefix: is only allowed in request_rules"
            ),
            "{message}"
        );
        let message = error_of(&with(r#""strip_request_headers": ["host"]"#));
        assert!(
            message.starts_with("strip_request_headers[0]: \"host\" is managed"),
            "{message}"
        );
    }

    #[test]
    fn rule_needs_exactly_one_action() {
        let message = error_of(&with(
            r#""request_rules": [{"set": {"name": "a", "value": "1"}, "remove": {"name": "b"}}]"#,
        ));
        assert_eq!(
            message,
            "request_rules[0]: more than one action (set, remove): give exactly one per rule"
        );
    }

    #[test]
    fn full_rule_shapes_parse() {
        let config = parse(
            with(
                r#""request_rules": [
                    {"when": {"path_prefix": "/v1/", "method": "POST", "authority": "AI.internal",
                              "header": {"name": "x-team", "present": true}},
                     "set": {"name": "x-routed", "value": "1"}},
                    {"when": {"method": ["GET", "HEAD"], "header": [{"name": "x-a", "value": "1"}, {"name": "x-b", "present": false}]},
                     "append": {"name": "x-multi", "value": "2"}},
                    {"set_if_absent": {"name": "x-c", "value": "3"}},
                    {"rename": {"from": "x-old", "to": "x-new"}},
                    {"rewrite_path_prefix": {"from": "/anthropic/", "to": "/"}},
                    {"set_authority": {"value": "api.anthropic.com"}}
                ],
                "response_rules": [{"when": {"path_prefix": "/v1/"}, "remove": {"name": "server"}}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(config.request_rules.len(), 6);
        let first = &config.request_rules[0].when;
        assert_eq!(first.methods, vec!["POST"]);
        assert_eq!(
            first.authority,
            Some(AuthorityMatch {
                value: "ai.internal".into(),
                with_port: false
            })
        );
        assert_eq!(
            first.headers,
            vec![HeaderCondition::Present("x-team".into())]
        );
        let second = &config.request_rules[1].when;
        assert_eq!(second.methods, vec!["GET", "HEAD"]);
        assert_eq!(
            second.headers,
            vec![
                HeaderCondition::Equals("x-a".into(), b"1".to_vec()),
                HeaderCondition::Absent("x-b".into())
            ]
        );
        assert_eq!(config.response_rules.len(), 1);
    }

    #[test]
    fn condition_field_errors() {
        let message = error_of(&with(
            r#""request_rules": [{"when": {"path_prefix": "v1"}, "remove": {"name": "x"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0].when.path_prefix:"),
            "{message}"
        );
        let message = error_of(&with(
            r#""request_rules": [{"when": {"method": ["GET", "BAD METHOD"]}, "remove": {"name": "x"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0].when.method[1]:"),
            "{message}"
        );
        let message = error_of(&with(
            r#""request_rules": [{"when": {"header": {"name": "x", "present": true, "value": "1"}}, "remove": {"name": "y"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0].when.header[0]: give either"),
            "{message}"
        );
        let message = error_of(&with(
            r#""request_rules": [{"when": {"method": 5}, "remove": {"name": "y"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0].when.method:"),
            "{message}"
        );
        let message = error_of(&with(
            r#""request_rules": [{"set_authority": {"value": "a b"}}]"#,
        ));
        assert!(
            message.starts_with("request_rules[0].set_authority.value:"),
            "{message}"
        );
        let config = parse(with(r#""request_rules": [{"when": {"authority": "[::1]:8080"}, "remove": {"name": "y"}}]"#).as_bytes()).unwrap();
        assert!(
            config.request_rules[0]
                .when
                .authority
                .as_ref()
                .unwrap()
                .with_port
        );
    }

    /// A small deterministic generator, so the robustness test needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    #[test]
    fn mutated_configurations_are_accepted_or_rejected_never_panic() {
        let seeds = [
            with(r#""preset": "anthropic", "request_rules": [{"when": {"path_prefix": "/v1/", "method": ["POST"], "header": {"name": "x", "value": "1"}}, "append": {"name": "x-a", "value": "b"}}], "access": {"source_cidrs": ["10.0.0.0/8", "::1"], "require": "any"}"#),
            r#"{"credential": {"header": "x-api-key", "prefix": "", "source": {"inline": "k"}}, "response_rules": [{"rename": {"from": "a", "to": "b"}}]}"#.to_owned(),
        ];
        let alphabet = br#"{}[]":,.0123456789abcdefxyz/\ -_@%:"#;
        let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for round in 0..4000 {
            let mut bytes = seeds[round % seeds.len()].clone().into_bytes();
            for _ in 0..=random.below(4) {
                let at = random.below(bytes.len());
                match random.below(3) {
                    0 => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, alphabet[random.below(alphabet.len())]),
                    _ => bytes[at] = (random.next() & 0xff) as u8,
                }
            }
            if let Ok(config) = parse(&bytes) {
                accepted += 1;
                assert!(!config.credential.header.is_empty());
            }
        }
        assert!(
            accepted > 0,
            "no mutation survived; the test would prove nothing"
        );
    }

    #[test]
    fn every_json_example_in_the_spec_is_valid() {
        let spec = include_str!("../../specs/filter.md");
        let mut checked = 0;
        for block in spec.split("```json\n").skip(1) {
            let block = block.split("```").next().unwrap().trim();
            let config = if block.contains("\"credential\"") {
                block.to_owned()
            } else if block.starts_with('{') {
                with(&format!(r#""request_rules": [{block}]"#))
            } else {
                with(block)
            };
            if let Err(error) = parse(config.as_bytes()) {
                panic!("spec example does not parse: {error}\n{block}");
            }
            checked += 1;
        }
        assert!(checked >= 6, "only {checked} examples found");
    }

    #[test]
    fn access_policy_parses_and_validates() {
        let config = parse(
            with(r#""access": {"identity": {"property": "caller.id", "allow": [" Alice@example.com ", "tag:ci"]},
                               "source_cidrs": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"], "require": "any"}"#)
            .as_bytes(),
        )
        .unwrap();
        let access = config.access.as_ref().unwrap();
        let identity = access.identity.as_ref().unwrap();
        assert_eq!(
            identity.source,
            IdentitySource::Property(PropertyPath::parse("caller.id").unwrap())
        );
        assert_eq!(identity.allow, vec!["Alice@example.com", "tag:ci"]);
        assert_eq!(access.require, Requirement::Any);
        assert!(config.needs_source_address());

        let config = parse(
            with(r#""access": {"identity": {"header": "X-User", "trusted": true, "allow": ["alice@example.com"]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            config.access.unwrap().identity.unwrap().source,
            IdentitySource::TrustedHeader("x-user".into())
        );

        let cases = [
            (r#""access": {}"#, "access: configure"),
            (
                r#""access": {"identity": {"property": "caller.id", "allow": []}}"#,
                "access.identity.allow: must list",
            ),
            (
                r#""access": {"identity": {"property": "caller.id", "allow": ["tag:ci,tag:server"]}}"#,
                "access.identity.allow[0]: must not contain ','",
            ),
            (
                r#""access": {"identity": {"allow": ["a"]}}"#,
                "access.identity: give exactly one source",
            ),
            (
                r#""access": {"identity": {"property": "caller.id", "header": "x-user", "trusted": true, "allow": ["a"]}}"#,
                "access.identity: give exactly one source, \"property\" or \"header\", not both",
            ),
            (
                r#""access": {"identity": {"header": "tailscale-user-login", "allow": ["a"]}}"#,
                "access.identity.header: \"tailscale-user-login\": any client can send a header, so it cannot identify the caller on its own: use {\"property\": \"caller.id\"}",
            ),
            (
                r#""access": {"identity": {"header": "x-user", "trusted": false, "allow": ["a"]}}"#,
                "access.identity.header: \"x-user\": any client can send a header",
            ),
            (
                r#""access": {"identity": {"property": "caller.id", "trusted": true, "allow": ["a"]}}"#,
                "access.identity.trusted: applies to \"header\" only",
            ),
            (
                r#""access": {"identity": {"property": "caller..id", "allow": ["a"]}}"#,
                "access.identity.property: \"caller..id\" is not a property path",
            ),
            (
                r#""access": {"identity": {"property": "request.headers.x-user", "allow": ["a"]}}"#,
                "access.identity.property: \"request.headers.x-user\" names a property the host fills from the request",
            ),
            (
                r#""access": {"identity": {"property": "caller.id", "trusted": "yes", "allow": ["a"]}}"#,
                "access.identity.trusted:",
            ),
            (
                r#""access": {"identity": {"property": "caller.id", "allow": ["a"], "header_name": "x"}}"#,
                "access.identity.header_name: unknown field",
            ),
            (
                r#""access": {"source_cidrs": []}"#,
                "access.source_cidrs: must list",
            ),
            (
                r#""access": {"source_cidrs": ["10.0.0.0/8", "10.0.0.1/8"]}"#,
                "access.source_cidrs[1]: \"10.0.0.1/8\": host bits",
            ),
            (
                r#""access": {"source_cidrs": ["banana"]}"#,
                "access.source_cidrs[0]: \"banana\": \"banana\" is not an IP address",
            ),
            (
                r#""access": {"identity": {"header": "authorization", "trusted": true, "allow": ["a"]}}"#,
                "access.identity.header: \"authorization\" is the credential header",
            ),
            (
                r#""access": {"source_cidrs": ["10.0.0.0/8"], "require": "most"}"#,
                "access.require:",
            ),
        ];
        for (access, expected) in cases {
            let message = error_of(&with(access));
            assert!(
                message.starts_with(expected),
                "{message}\nexpected: {expected}"
            );
        }
    }
}
