//! Who a request is attributed to.
//!
//! The same caller the access policy checks, when the policy has an identity source: the property it
//! reads, or the single value of the header the operator declared trusted. Without one, the first
//! present of the properties `caller.id` (set by `host-harness serve` from the tailnet) and
//! `source.principal` (Envoy's mTLS peer). Never a header the operator has not declared trusted: a
//! client could write it.

use crate::access::{
    AccessPolicy, CallerFacts, DEFAULT_CALLER_PROPERTIES, IdentitySource, identity_source,
};
use crate::headers::HeaderList;

/// The caller identity of a request, `None` when no source names one. `facts` are what the access
/// check already fetched (so a property is not read twice); `property` reads a host property by its
/// dotted path.
pub fn resolve(
    access: Option<&AccessPolicy>,
    request: &HeaderList<'_>,
    facts: Option<&CallerFacts>,
    mut property: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let present = |value: &Vec<u8>| !value.trim_ascii().is_empty();
    match identity_source(access) {
        Some(IdentitySource::Property(path)) => facts
            .and_then(|facts| facts.identity_property.clone())
            .or_else(|| property(path.as_str()))
            .filter(present),
        Some(IdentitySource::TrustedHeader(name)) => {
            let mut values = request.get_all(name);
            match (values.next(), values.next()) {
                (Some(value), None) => Some(value.to_vec()).filter(present),
                // Absent, or sent twice: the policy refuses it, and it names no one.
                _ => None,
            }
        }
        None => DEFAULT_CALLER_PROPERTIES
            .iter()
            .find_map(|path| property(path).filter(present)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::parse;
    use crate::headers::test_list as list;

    fn access(identity: &str) -> Option<AccessPolicy> {
        let json = format!(
            r#"{{"credential": {{"source": {{"env": "T"}}}}, "access": {{"identity": {identity}}}}}"#
        );
        parse(json.as_bytes()).unwrap().access
    }

    fn properties(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<Vec<u8>> {
        let pairs: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(path, value)| ((*path).to_owned(), value.as_bytes().to_vec()))
            .collect();
        move |path| {
            pairs
                .iter()
                .find(|(name, _)| *name == path)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn without_an_identity_source_caller_id_then_source_principal() {
        let request = list(&[("x-caller", "mallory")]);
        let both = properties(&[
            ("caller.id", "alice@example.com"),
            ("source.principal", "spiffe://a"),
        ]);
        assert_eq!(
            resolve(None, &request, None, both).unwrap(),
            b"alice@example.com"
        );
        let principal = properties(&[("caller.id", " "), ("source.principal", "spiffe://a")]);
        assert_eq!(
            resolve(None, &request, None, principal).unwrap(),
            b"spiffe://a"
        );
        assert_eq!(resolve(None, &request, None, properties(&[])), None);
    }

    #[test]
    fn the_access_policy_source_wins() {
        let policy = access(r#"{"property": "caller.id", "allow": ["alice@example.com"]}"#);
        let request = list(&[]);
        let facts = CallerFacts {
            source_address: None,
            identity_property: Some(b"tag:ci,tag:server".to_vec()),
        };
        let never = |_: &str| -> Option<Vec<u8>> { panic!("fetched again") };
        assert_eq!(
            resolve(policy.as_ref(), &request, Some(&facts), never).unwrap(),
            b"tag:ci,tag:server"
        );
        let fetched = properties(&[("caller.id", "bob@example.com")]);
        assert_eq!(
            resolve(policy.as_ref(), &request, None, fetched).unwrap(),
            b"bob@example.com"
        );

        let header = access(r#"{"header": "x-caller", "trusted": true, "allow": ["alice"]}"#);
        let fallback = properties(&[("caller.id", "not-this")]);
        assert_eq!(
            resolve(
                header.as_ref(),
                &list(&[("x-caller", "alice")]),
                None,
                fallback
            )
            .unwrap(),
            b"alice"
        );
        let twice = list(&[("x-caller", "alice"), ("x-caller", "bob")]);
        assert_eq!(
            resolve(header.as_ref(), &twice, None, properties(&[])),
            None
        );
        assert_eq!(
            resolve(header.as_ref(), &list(&[]), None, properties(&[])),
            None
        );
    }
}
