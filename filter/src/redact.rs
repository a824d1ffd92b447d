//! Rendering headers for debug logs without leaking secrets.

use crate::headers::HeaderList;
use crate::secret::REDACTED;

/// Headers whose values are always hidden in logs.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Longest value shown in logs; longer ones are cut, so one header cannot flood a log line.
const MAX_SHOWN_VALUE: usize = 128;

/// Whether values of `name` must be hidden; `credential_header` is the configured one.
pub fn is_sensitive(name: &str, credential_header: &str) -> bool {
    same_name(name, credential_header)
        || SENSITIVE_HEADERS
            .iter()
            .any(|sensitive| same_name(name, sensitive))
}

/// Case-insensitive name comparison, out of line: the loop above is unrolled, and inlined it
/// repeated the comparison once per listed header in a path only debug logging takes.
#[inline(never)]
fn same_name(name: &str, other: &str) -> bool {
    name.eq_ignore_ascii_case(other)
}

/// Renders headers as `name: value` pairs with sensitive values replaced by `[REDACTED]`.
pub fn render_headers(headers: &HeaderList<'_>, credential_header: &str) -> String {
    let mut out = String::from("{");
    for (index, (name, value)) in headers.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        out.push_str(&name);
        out.push_str(": ");
        if is_sensitive(&name, credential_header) {
            out.push_str(REDACTED);
        } else {
            out.push_str(&render_value(value));
        }
    }
    out.push('}');
    out
}

/// Shows a value as escaped text: non-UTF-8 bytes as `\xNN`, controls escaped, long values cut.
fn render_value(value: &[u8]) -> String {
    let shown = value.get(..MAX_SHOWN_VALUE).unwrap_or(value);
    let mut out: String = shown.escape_ascii().to_string();
    if shown.len() < value.len() {
        out.push_str(&format!("...({} bytes)", value.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_values_are_redacted_and_others_escaped() {
        let headers = HeaderList::from_pairs(vec![
            ("authorization", b"Bearer secret-1".to_vec()),
            ("x-custom-key", b"secret-2".to_vec()),
            ("Cookie", b"session=secret-3".to_vec()),
            ("x-bin", vec![b'a', 0xff, b'\n']),
        ]);
        let rendered = render_headers(&headers, "x-custom-key");
        assert!(!rendered.contains("secret"), "{rendered}");
        assert_eq!(
            rendered,
            "{authorization: [REDACTED], x-custom-key: [REDACTED], cookie: [REDACTED], x-bin: a\\xff\\n}"
        );
    }

    #[test]
    fn long_values_are_cut() {
        let headers = HeaderList::from_pairs(vec![("x", vec![b'a'; 1000])]);
        let rendered = render_headers(&headers, "authorization");
        assert!(rendered.ends_with("...(1000 bytes)}"), "{rendered}");
        assert!(rendered.len() < 200);
    }

    #[test]
    fn sensitivity_is_case_insensitive() {
        assert!(is_sensitive("Set-Cookie", "authorization"));
        assert!(is_sensitive("X-Token", "x-token"));
        assert!(!is_sensitive("x-team", "authorization"));
    }
}
