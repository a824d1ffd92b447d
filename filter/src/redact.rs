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
    let mut out = String::with_capacity(shown.len());
    for byte in shown {
        push_escaped(&mut out, *byte);
    }
    if shown.len() < value.len() {
        out.push_str(&format!("...({} bytes)", value.len()));
    }
    out
}

/// One byte as `<[u8]>::escape_ascii` shows it. Written out because the standard escape goes through
/// the formatting machinery, which costs more binary than this match.
fn push_escaped(out: &mut String, byte: u8) {
    let escaped = match byte {
        b'\t' => "\\t",
        b'\r' => "\\r",
        b'\n' => "\\n",
        b'\\' => "\\\\",
        b'\'' => "\\'",
        b'"' => "\\\"",
        0x20..=0x7e => {
            out.push(char::from(byte));
            return;
        }
        _ => {
            out.push_str("\\x");
            for nibble in [byte >> 4, byte & 0xf] {
                out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            }
            return;
        }
    };
    out.push_str(escaped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_escaped_as_the_standard_library_does() {
        for byte in 0..=u8::MAX {
            let mut out = String::new();
            push_escaped(&mut out, byte);
            assert_eq!(out, [byte].escape_ascii().to_string(), "{byte}");
        }
    }

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
