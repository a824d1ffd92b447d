//! An ordered multi-map of HTTP header (or trailer) fields, as a proxy holds them.
//!
//! Names are stored lower-case, as Envoy stores them, so lookups are case-insensitive; values are bytes, since
//! HTTP allows values that are not UTF-8. `Debug` output redacts credential-bearing headers.

use std::fmt;

/// Header names whose values never appear in `Debug` output.
const REDACTED_NAMES: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
];

/// One field as stored: lower-case name, raw value.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

/// Ordered header fields; a name may repeat.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<Field>,
}

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of fields (repeated names count once per field).
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of `name`.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        let name = name.as_ref();
        self.fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The first value of `name` as UTF-8 text, if it is present and valid UTF-8.
    pub fn get_str(&self, name: impl AsRef<[u8]>) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: impl AsRef<[u8]>) -> bool {
        self.get(name).is_some()
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(key, value)| (key.as_slice(), value.as_slice()))
    }

    /// Appends a field, keeping any existing values of the name.
    pub fn add(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.fields
            .push((name.as_ref().to_ascii_lowercase(), value.as_ref().to_vec()));
    }

    /// Sets `name` to one value: the first field keeps its position, later ones go.
    pub fn replace(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let name = name.as_ref();
        match self
            .fields
            .iter()
            .position(|(key, _)| key.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                if let Some(field) = self.fields.get_mut(first) {
                    field.1 = value.as_ref().to_vec();
                }
                let mut index = 0;
                self.fields.retain(|(key, _)| {
                    let keep = index <= first || !key.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
            }
            None => self.add(name, value),
        }
    }

    /// Removes every field named `name`; removing an absent name is not an error.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        let name = name.as_ref();
        self.fields
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.fields.clear();
    }

    /// The fields as owned pairs.
    pub fn into_vec(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.fields
    }

    /// The fields as text pairs, with invalid UTF-8 replaced; handy in assertions.
    pub fn to_string_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(key, value)| {
                (
                    String::from_utf8_lossy(key).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect()
    }

    pub(crate) fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Builds a map from fields already in host order, lower-casing names.
    pub(crate) fn from_fields(mut fields: Vec<Field>) -> Self {
        for (key, _) in &mut fields {
            key.make_ascii_lowercase();
        }
        Self { fields }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_list();
        for (key, value) in &self.fields {
            let key_text = String::from_utf8_lossy(key);
            if REDACTED_NAMES
                .iter()
                .any(|redacted| key.eq_ignore_ascii_case(redacted.as_bytes()))
            {
                map.entry(&(key_text, "[REDACTED]"));
            } else {
                map.entry(&(key_text, String::from_utf8_lossy(value)));
            }
        }
        map.finish()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (key, value) in iter {
            headers.add(key, value);
        }
        headers
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(fields: [(K, V); N]) -> Self {
        fields.into_iter().collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> From<Vec<(K, V)>> for Headers {
    fn from(fields: Vec<(K, V)>) -> Self {
        fields.into_iter().collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> From<&[(K, V)]> for Headers {
    fn from(fields: &[(K, V)]) -> Self {
        fields
            .iter()
            .map(|(key, value)| (key.as_ref(), value.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_names_are_stored_lower_case() {
        let headers = Headers::from([("Content-Type", "text/plain")]);
        assert_eq!(headers.get("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(
            headers.iter().next().map(|(key, _)| key),
            Some(&b"content-type"[..])
        );
    }

    #[test]
    fn replace_keeps_the_first_position_and_drops_repeats() {
        let mut headers = Headers::from([("a", "1"), ("b", "2"), ("a", "3")]);
        headers.replace("A", "9");
        assert_eq!(
            headers.to_string_pairs(),
            vec![("a".into(), "9".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let headers = Headers::from([
            ("Authorization", "Bearer secret-token"),
            ("x-api-key", "k"),
            ("accept", "*/*"),
        ]);
        let printed = format!("{headers:?}");
        assert!(!printed.contains("secret-token"));
        assert!(!printed.contains("\"k\""));
        assert!(printed.contains("*/*"));
    }
}
