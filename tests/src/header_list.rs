//! Lookups in a header list kept as `(name, value)` pairs in order, shared by the client's responses and
//! the upstream's recorded requests so both answer a header query the same way.

/// The first value of header `name` (case-insensitive) in `headers`, if any.
pub(crate) fn first_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Every value of header `name` (case-insensitive) in `headers`, in order.
pub(crate) fn all_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .collect()
}
