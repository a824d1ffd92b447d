//! Reading the configuration's JSON tree, the one way every section is parsed.
//!
//! Each helper takes the path of the value it reads, so every error starts with that path. No helper
//! ever formats the value it was given, only its JSON kind: a token pasted into the wrong field can
//! never reach a log line. Unknown fields are rejected with their own path, as
//! `parent.field: unknown field ...`.

use super::{ConfigError, ConfigErrorKind};
use crate::json::{self, Duplicates, Map, Value};

/// Parses a JSON document into a [`Value`], refusing an object that names a key twice: most
/// readers keep the last silently, and a second `source` must not quietly win over the first.
///
/// # Errors
/// The reader's error: a syntax error, or a duplicate key, with its position.
pub(crate) fn document(bytes: &[u8]) -> Result<Value, json::Error> {
    json::parse(bytes, Duplicates::Refuse)
}

/// `path.field`, or `field` at the top level.
#[inline(never)]
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// `path[index]`.
#[inline(never)]
pub(crate) fn item(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A shape error at `path`; the top level is called `configuration`.
#[inline(never)]
pub(crate) fn shape(path: &str, message: String) -> ConfigError {
    ConfigError::from(ConfigErrorKind::Shape {
        path: if path.is_empty() {
            "configuration".to_owned()
        } else {
            path.to_owned()
        },
        message,
    })
}

/// The JSON kind of `value`, the only thing a type error says about what was written.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `invalid type: string, expected ...`.
#[inline(never)]
pub(crate) fn wrong_type(path: &str, value: &Value, expected: &str) -> ConfigError {
    shape(
        path,
        format!("invalid type: {}, expected {expected}", kind(value)),
    )
}

/// `` `a` ``, `` `a` or `b` `` or `` one of `a`, `b`, `c` ``.
#[inline(never)]
fn one_of(names: &[&str]) -> String {
    let count = names.len();
    let mut out = String::new();
    if count > 2 {
        out.push_str("one of ");
    }
    for (index, name) in names.iter().enumerate() {
        if index > 0 {
            out.push_str(if count == 2 { " or " } else { ", " });
        }
        out.push('`');
        out.push_str(name);
        out.push('`');
    }
    out
}

/// An object whose every key is one of `fields`.
///
/// # Errors
/// A type error naming `expected`, or an unknown field at its own path.
#[inline(never)]
pub(crate) fn object<'v>(
    path: &str,
    value: &'v Value,
    expected: &str,
    fields: &[&str],
) -> Result<&'v Map, ConfigError> {
    let Value::Object(map) = value else {
        return Err(wrong_type(path, value, expected));
    };
    if let Some(unknown) = map.keys().find(|key| !fields.contains(&key.as_str())) {
        return Err(shape(
            &join(path, unknown),
            format!("unknown field `{unknown}`, expected {}", one_of(fields)),
        ));
    }
    Ok(map)
}

/// A string.
///
/// # Errors
/// A type error naming `expected`.
pub(crate) fn string<'v>(
    path: &str,
    value: &'v Value,
    expected: &str,
) -> Result<&'v str, ConfigError> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(wrong_type(path, other, expected)),
    }
}

/// `true` or `false`.
///
/// # Errors
/// A type error.
pub(crate) fn boolean(path: &str, value: &Value) -> Result<bool, ConfigError> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        other => Err(wrong_type(path, other, "true or false")),
    }
}

/// A non-negative whole number.
///
/// # Errors
/// A type error, also for negative and fractional numbers.
pub(crate) fn whole(path: &str, value: &Value) -> Result<u64, ConfigError> {
    match value.as_u64() {
        Some(number) => Ok(number),
        None => Err(wrong_type(path, value, "a whole number")),
    }
}

/// An array.
///
/// # Errors
/// A type error naming `expected`.
pub(crate) fn list<'v>(
    path: &str,
    value: &'v Value,
    expected: &str,
) -> Result<&'v [Value], ConfigError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(wrong_type(path, other, expected)),
    }
}

/// An array of strings.
///
/// # Errors
/// A type error at the list or at the item that is not a string.
#[inline(never)]
pub(crate) fn strings(
    path: &str,
    value: &Value,
    expected: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut texts = Vec::new();
    for (index, entry) in list(path, value, expected)?.iter().enumerate() {
        texts.push(string(&item(path, index), entry, "a string")?.to_owned());
    }
    Ok(texts)
}

/// One of a fixed set of names, as its typed value. An unknown name is never quoted back.
///
/// # Errors
/// A type error, or `unknown variant, expected ...`.
pub(crate) fn variant<T: Copy>(
    path: &str,
    value: &Value,
    variants: &[(&str, T)],
) -> Result<T, ConfigError> {
    let index = variant_index(path, value, &mut variants.iter().map(|(name, _)| *name))?;
    variants
        .get(index)
        .map(|(_, typed)| *typed)
        .ok_or_else(|| shape(path, "unknown variant".to_owned()))
}

/// The position of `value` among `names`: the one body behind every [`variant`].
#[inline(never)]
fn variant_index(
    path: &str,
    value: &Value,
    names: &mut dyn Iterator<Item = &str>,
) -> Result<usize, ConfigError> {
    let names: Vec<&str> = names.collect();
    let Value::String(text) = value else {
        return Err(wrong_type(
            path,
            value,
            &format!("a string, {}", one_of(&names)),
        ));
    };
    names.iter().position(|name| name == text).ok_or_else(|| {
        shape(
            path,
            format!("unknown variant, expected {}", one_of(&names)),
        )
    })
}

/// One item, or a list of items, each read by `read` at its own path (`path[index]` in a list,
/// `path[0]` for a lone item, so a condition is named the same way in both spellings).
///
/// # Errors
/// A type error naming `expected`, or the first item's error.
#[inline(never)]
pub(crate) fn one_or_many<T>(
    path: &str,
    value: &Value,
    expected: &str,
    is_item: fn(&Value) -> bool,
    read: impl Fn(&str, &Value) -> Result<T, ConfigError>,
) -> Result<Vec<T>, ConfigError> {
    match value {
        Value::Array(items) => {
            let mut read_items = Vec::new();
            for (index, entry) in items.iter().enumerate() {
                read_items.push(read(&item(path, index), entry)?);
            }
            Ok(read_items)
        }
        single if is_item(single) => Ok(vec![read(&item(path, 0), single)?]),
        other => Err(wrong_type(path, other, expected)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::json::test_json as json;

    #[test]
    fn type_and_variant_errors_name_the_kind_never_the_value() {
        let pasted = json!("sk-ant-oat01-PASTED");
        let message = object("credential", &pasted, "an object", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "credential: invalid type: string, expected an object"
        );
        let message = variant("preset", &pasted, &[("anthropic", ())])
            .unwrap_err()
            .to_string();
        assert_eq!(message, "preset: unknown variant, expected `anthropic`");
        let message = whole("usage.max_callers", &json!(-1))
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "usage.max_callers: invalid type: number, expected a whole number"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert_eq!(
            document(br#"{"a": [1, -2, 1.5, null, true, {"b": "c"}]}"#).unwrap(),
            json!({"a": [1, -2, 1.5, null, true, {"b": "c"}]})
        );
        let error = document(br#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(
            error.to_string().starts_with("duplicate field `b`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_fields_carry_their_own_path() {
        let message = object("usage", &json!({"max_caller": 5}), "", &["a", "b", "c"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "usage.max_caller: unknown field `max_caller`, expected one of `a`, `b`, `c`"
        );
        let message = variant("x", &json!("z"), &[("a", 1), ("b", 2)])
            .unwrap_err()
            .to_string();
        assert_eq!(message, "x: unknown variant, expected `a` or `b`");
    }
}
