//! How results are written down: one line of printable ASCII per host call, identical for identical host
//! behaviour, so two hosts can be compared by plain string equality.
//!
//! Statuses render as their spec names (`not_found`, `cas_mismatch`, ...), values as `ok <value>`: bytes as
//! a quoted string when printable ASCII, otherwise as `0x<hex>`; an absent value as `none`.

use proxy_wasm::types::Status;

/// The spec name of a status.
pub fn status_name(status: Status) -> &'static str {
    status_code_name(status as u32)
}

/// The spec name of a raw status code; codes outside the spec render as `unknown_status`.
pub fn status_code_name(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1 => "not_found",
        2 => "bad_argument",
        3 => "serialization_failure",
        4 => "parse_failure",
        5 => "bad_expression",
        6 => "invalid_memory_access",
        7 => "empty",
        8 => "cas_mismatch",
        9 => "result_mismatch",
        10 => "internal_failure",
        11 => "broken_connection",
        12 => "unimplemented",
        _ => "unknown_status",
    }
}

/// Renders bytes: `"text"` (with `\"` and `\\` escaped) when every byte is printable ASCII, else `0x<hex>`.
pub fn bytes(value: &[u8]) -> String {
    if value.iter().all(|byte| (0x20..0x7f).contains(byte)) {
        let mut out = String::with_capacity(value.len() + 2);
        out.push('"');
        for &byte in value {
            if byte == b'"' || byte == b'\\' {
                out.push('\\');
            }
            out.push(char::from(byte));
        }
        out.push('"');
        out
    } else {
        let mut out = String::with_capacity(2 + value.len() * 2);
        out.push_str("0x");
        for byte in value {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

/// Renders an optional value: [`bytes`] or `none`.
pub fn optional_bytes(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "none".to_owned(), bytes)
}

/// Renders header pairs as `[name: value, ...]` with each part rendered by [`bytes`].
pub fn pairs(pairs: &[(String, Vec<u8>)]) -> String {
    let rendered: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{}: {}", bytes(name.as_bytes()), bytes(value)))
        .collect();
    format!("[{}]", rendered.join(", "))
}

/// `ok` followed by a rendered value.
pub fn ok_with(value: &str) -> String {
    format!("ok {value}")
}

/// The result of a call that returns nothing.
pub fn unit(result: Result<(), Status>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(status) => status_name(status).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn printable_bytes_render_quoted_and_escaped() {
        assert_eq!(bytes(b"a \"b\" \\c"), r#""a \"b\" \\c""#);
        assert_eq!(bytes(b""), r#""""#);
    }

    #[test]
    fn other_bytes_render_as_hex() {
        assert_eq!(bytes(&[0x01, 0xff, b'a']), "0x01ff61");
        assert_eq!(bytes("é".as_bytes()), "0xc3a9");
        assert_eq!(bytes(b"line\n"), "0x6c696e650a");
    }

    #[test]
    fn statuses_render_by_spec_name() {
        assert_eq!(status_name(Status::CasMismatch), "cas_mismatch");
        assert_eq!(unit(Err(Status::NotFound)), "not_found");
        assert_eq!(unit(Ok(())), "ok");
        assert_eq!(status_code_name(12), "unimplemented");
        assert_eq!(status_code_name(99), "unknown_status");
    }

    #[test]
    fn pairs_and_optional_values_render() {
        assert_eq!(
            pairs(&[("a".into(), b"1".to_vec()), ("b".into(), vec![0])]),
            r#"["a": "1", "b": 0x00]"#
        );
        assert_eq!(optional_bytes(None), "none");
        assert_eq!(optional_bytes(Some(b"x")), r#""x""#);
    }
}
