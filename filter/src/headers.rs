//! A small ordered header-list model.
//!
//! Names are stored lower-case (HTTP/2 and Envoy require it; HTTP/1 names are
//! case-insensitive) and values are raw bytes, so a client sending non-UTF-8
//! values can never make the filter panic. The order of entries and repeated
//! names are kept: `append` really adds a second line.
//!
//! [`diff`] turns "before" and "after" lists into the minimal per-name edits a
//! host must apply, so the glue touches only the headers that changed.

/// An ordered list of header entries `(lower-case name, value bytes)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Vec<(String, Vec<u8>)>,
}

/// One change to apply to a host header map, per header name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Remove every value of the header.
    Remove {
        /// Lower-case header name.
        name: String,
    },
    /// Replace every value of the header with these values, in order.
    Replace {
        /// Lower-case header name.
        name: String,
        /// The new values; never empty.
        values: Vec<Vec<u8>>,
    },
}

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from host pairs, lower-casing the names.
    pub fn from_pairs<N, V, I>(pairs: I) -> Self
    where
        N: Into<String>,
        V: Into<Vec<u8>>,
        I: IntoIterator<Item = (N, V)>,
    {
        let entries = pairs
            .into_iter()
            .map(|(name, value)| {
                let mut name: String = name.into();
                name.make_ascii_lowercase();
                (name, value.into())
            })
            .collect();
        Self { entries }
    }

    /// Number of entries (header lines).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.entries
            .iter()
            .filter(move |(entry, _)| entry.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        self.get_all(name).next()
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: &str) -> bool {
        self.get_all(name).next().is_some()
    }

    /// How many values `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Replaces every value of `name` with `value`, keeping the position of the
    /// first existing line (or appending when absent).
    pub fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self
            .entries
            .iter()
            .position(|(entry, _)| entry.eq_ignore_ascii_case(name))
        {
            Some(first) => {
                let mut index = 0;
                self.entries.retain(|(entry, _)| {
                    let keep = index <= first || !entry.eq_ignore_ascii_case(name);
                    index += 1;
                    keep
                });
                if let Some(entry) = self.entries.get_mut(first) {
                    entry.1 = value;
                }
            }
            None => self.entries.push((name.to_ascii_lowercase(), value)),
        }
    }

    /// Adds one more line for `name`, after any existing ones.
    pub fn append(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.entries.push((name.to_ascii_lowercase(), value.into()));
    }

    /// Removes every value of `name`; returns whether anything was removed.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|(entry, _)| !entry.eq_ignore_ascii_case(name));
        self.entries.len() != before
    }

    /// Moves every value of `from` to `to`, replacing any existing `to` values.
    /// Returns false, changing nothing, when `from` is absent.
    pub fn rename(&mut self, from: &str, to: &str) -> bool {
        if !self.contains(from) {
            return false;
        }
        if !from.eq_ignore_ascii_case(to) {
            self.remove(to);
            let to = to.to_ascii_lowercase();
            for (entry, _) in &mut self.entries {
                if entry.eq_ignore_ascii_case(from) {
                    entry.clone_from(&to);
                }
            }
        }
        true
    }

    /// The entries as owned pairs.
    pub fn into_pairs(self) -> Vec<(String, Vec<u8>)> {
        self.entries
    }

    /// Names in order of first appearance, each once.
    fn distinct_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (name, _) in &self.entries {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }
}

/// The per-name edits that turn `before` into `after`, ignoring the relative
/// order of different names (which carries no meaning in HTTP).
pub fn diff(before: &HeaderList, after: &HeaderList) -> Vec<HeaderEdit> {
    let mut edits = Vec::new();
    for name in before.distinct_names() {
        if !after.contains(name) {
            edits.push(HeaderEdit::Remove {
                name: name.to_owned(),
            });
        }
    }
    for name in after.distinct_names() {
        if !before.get_all(name).eq(after.get_all(name)) {
            edits.push(HeaderEdit::Replace {
                name: name.to_owned(),
                values: after.get_all(name).map(<[u8]>::to_vec).collect(),
            });
        }
    }
    edits
}

/// Test shorthand: a header list from text pairs.
#[cfg(test)]
pub(crate) fn test_list(pairs: &[(&str, &str)]) -> HeaderList {
    HeaderList::from_pairs(
        pairs
            .iter()
            .map(|(name, value)| (*name, value.as_bytes().to_vec())),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::headers::test_list as list;

    #[test]
    fn names_are_lower_cased_on_the_way_in() {
        let headers = list(&[("X-Team", "ml")]);
        assert_eq!(headers.first("x-team"), Some(&b"ml"[..]));
        assert_eq!(headers.first("X-TEAM"), Some(&b"ml"[..]));
        assert_eq!(headers.iter().next().unwrap().0, "x-team");
    }

    #[test]
    fn set_replaces_all_values_in_place_of_the_first() {
        let mut headers = list(&[("a", "1"), ("b", "x"), ("b", "y"), ("c", "3")]);
        headers.set("b", "z");
        assert_eq!(headers, list(&[("a", "1"), ("b", "z"), ("c", "3")]));
        headers.set("d", "4");
        assert_eq!(headers.first("d"), Some(&b"4"[..]));
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn append_keeps_existing_values() {
        let mut headers = list(&[("accept", "a")]);
        headers.append("Accept", "b");
        assert_eq!(
            headers.get_all("accept").collect::<Vec<_>>(),
            vec![b"a", b"b"]
        );
        assert_eq!(headers.count("accept"), 2);
    }

    #[test]
    fn remove_reports_whether_anything_went() {
        let mut headers = list(&[("a", "1"), ("a", "2"), ("b", "3")]);
        assert!(headers.remove("A"));
        assert!(!headers.remove("a"));
        assert_eq!(headers, list(&[("b", "3")]));
    }

    #[test]
    fn rename_moves_every_value_and_replaces_the_target() {
        let mut headers = list(&[("old", "1"), ("new", "x"), ("old", "2")]);
        assert!(headers.rename("old", "new"));
        assert_eq!(headers, list(&[("new", "1"), ("new", "2")]));
        assert!(!headers.rename("missing", "other"));
        assert!(headers.rename("new", "NEW"));
        assert_eq!(headers.count("new"), 2);
    }

    #[test]
    fn non_utf8_values_are_kept_as_bytes() {
        let headers = HeaderList::from_pairs(vec![("x-bin", vec![0xff, 0xfe])]);
        assert_eq!(headers.first("x-bin"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn diff_reports_only_changed_names() {
        let before = list(&[
            (":path", "/a"),
            ("keep", "1"),
            ("gone", "x"),
            ("multi", "1"),
        ]);
        let after = list(&[
            (":path", "/b"),
            ("keep", "1"),
            ("multi", "1"),
            ("multi", "2"),
            ("new", "n"),
        ]);
        let edits = diff(&before, &after);
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Remove {
                    name: "gone".into()
                },
                HeaderEdit::Replace {
                    name: ":path".into(),
                    values: vec![b"/b".to_vec()]
                },
                HeaderEdit::Replace {
                    name: "multi".into(),
                    values: vec![b"1".to_vec(), b"2".to_vec()]
                },
                HeaderEdit::Replace {
                    name: "new".into(),
                    values: vec![b"n".to_vec()]
                },
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn diff_ignores_reordering_between_names() {
        let before = list(&[("a", "1"), ("b", "2")]);
        let after = list(&[("b", "2"), ("a", "1")]);
        assert!(diff(&before, &after).is_empty());
    }
}
