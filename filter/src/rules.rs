//! The header rule engine for requests and responses.
//!
//! A rule is an optional condition (`when`) and exactly one action. Rules run
//! in configuration order and each sees the changes of the ones before it, so
//! a request rule that rewrites `:path` changes what later `path_prefix`
//! conditions match. Which headers a rule may touch is checked at configure
//! time (see `config`), so applying a rule cannot fail.

use std::fmt;

use crate::headers::{HeaderEdit, HeaderList, Rewrite, same_bytes};

/// The request pseudo-header holding the path (with query).
pub const PATH: &str = ":path";
/// The request pseudo-header holding the method.
pub const METHOD: &str = ":method";
/// The request pseudo-header holding the authority (host and optional port).
pub const AUTHORITY: &str = ":authority";
/// The HTTP/1 form of the authority, kept in step when present.
pub const HOST: &str = "host";

/// One validated rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Conditions that must all hold for the action to run.
    pub when: Conditions,
    /// What the rule does.
    pub action: Action,
}

/// Conditions of a rule; an empty set always holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// The request path must start with this (byte-wise, query included).
    pub path_prefix: Option<String>,
    /// The request method must be one of these (case-sensitive); empty means any.
    pub methods: Vec<String>,
    /// The request authority must match.
    pub authority: Option<AuthorityMatch>,
    /// Header conditions, all of which must hold.
    pub headers: Vec<HeaderCondition>,
}

/// An authority condition, compared ASCII case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityMatch {
    /// Lower-case authority as configured.
    pub value: String,
    /// Whether the configured value names a port; without one any port matches.
    pub with_port: bool,
}

/// A condition on one header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderCondition {
    /// The header has at least one value.
    Present(String),
    /// The header has no value.
    Absent(String),
    /// One of the header's values equals this exactly.
    Equals(String, Vec<u8>),
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Replace every value of the header with one value.
    Set {
        /// Lower-case header name.
        name: String,
        /// New value.
        value: String,
    },
    /// Add one more line for the header, keeping existing ones.
    Append {
        /// Lower-case header name.
        name: String,
        /// Added value.
        value: String,
    },
    /// Set the header only when it is absent.
    SetIfAbsent {
        /// Lower-case header name.
        name: String,
        /// Value used when absent.
        value: String,
    },
    /// Remove every value of the header.
    Remove {
        /// Lower-case header name.
        name: String,
    },
    /// Move the values of `from` to `to`, replacing existing `to` values.
    Rename {
        /// Lower-case source name.
        from: String,
        /// Lower-case target name.
        to: String,
    },
    /// Replace a leading `from` of `:path` with `to` (request rules only).
    RewritePathPrefix {
        /// The prefix to replace.
        from: String,
        /// Its replacement.
        to: String,
    },
    /// Replace `:authority` (and `host`, when present) (request rules only).
    SetAuthority {
        /// The new authority.
        value: String,
    },
}

/// The request attributes response rules match on: the request as the client sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestSummary {
    /// `:method`, if present.
    pub method: Option<Vec<u8>>,
    /// `:path`, if present.
    pub path: Option<Vec<u8>>,
    /// `:authority` (or `host`), if present.
    pub authority: Option<Vec<u8>>,
}

impl RequestSummary {
    /// Captures method, path and authority from request headers.
    pub fn from_request(headers: &HeaderList<'_>) -> Self {
        Self {
            method: headers.first(METHOD).map(<[u8]>::to_vec),
            path: headers.first(PATH).map(<[u8]>::to_vec),
            authority: authority_of(headers).map(<[u8]>::to_vec),
        }
    }
}

fn authority_of<'h>(headers: &'h HeaderList<'_>) -> Option<&'h [u8]> {
    headers.first(AUTHORITY).or_else(|| headers.first(HOST))
}

/// The indices of the rules that changed something, in ascending order.
///
/// Every request runs the rules, so the first 64 indices are bits and take no
/// allocation; later ones go to a list.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AppliedRules {
    /// Bit `i` is rule `i`, for rules below 64.
    first: u64,
    /// Indices from 64 on.
    rest: Vec<usize>,
}

impl AppliedRules {
    /// Records rule `index`, which is above every index recorded so far.
    fn push(&mut self, index: usize) {
        match u32::try_from(index) {
            Ok(bit) if bit < u64::BITS => self.first |= 1 << bit,
            _ => self.rest.push(index),
        }
    }

    /// How many rules applied.
    pub fn len(&self) -> usize {
        self.first.count_ones() as usize + self.rest.len()
    }

    /// Whether no rule applied.
    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.rest.is_empty()
    }

    /// The indices, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..u64::BITS as usize)
            .filter(|bit| self.first & (1 << bit) != 0)
            .chain(self.rest.iter().copied())
    }
}

/// Written as the list of indices, as logs show it.
impl fmt::Debug for AppliedRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
impl PartialEq<Vec<usize>> for AppliedRules {
    fn eq(&self, other: &Vec<usize>) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

/// Runs request rules over request headers; returns the indices of the rules
/// that changed something.
pub fn apply_request_rules<'a>(rules: &'a [Rule], headers: &mut Rewrite<'_, 'a>) -> AppliedRules {
    let mut applied = AppliedRules::default();
    for (index, rule) in rules.iter().enumerate() {
        if rule.when.holds(&Request::Headers(headers), headers) && rule.action.apply(headers) {
            applied.push(index);
        }
    }
    applied
}

/// Runs response rules over response headers, matching request conditions
/// against `request`; returns the indices of the rules that changed something.
pub fn apply_response_rules<'a>(
    rules: &'a [Rule],
    headers: &mut Rewrite<'_, 'a>,
    request: &RequestSummary,
) -> AppliedRules {
    let mut applied = AppliedRules::default();
    for (index, rule) in rules.iter().enumerate() {
        if rule.when.holds(&Request::Summary(request), headers) && rule.action.apply(headers) {
            applied.push(index);
        }
    }
    applied
}

/// Response rules for a response that is not read: each rule whose request
/// conditions hold is handed to `apply` as its edit of the host's map, in
/// order; returns how many applied. Only for rules none of which reads the
/// response ([`Rule::reads_response`]); a rule that would is skipped.
pub fn unread_response_rule_edits<'a>(
    rules: &'a [Rule],
    request: &RequestSummary,
    mut apply: impl FnMut(HeaderEdit<'a>),
) -> usize {
    let nothing = HeaderList::new();
    let mut applied = 0;
    for rule in rules {
        if let Some(edit) = rule.action.unread_edit()
            && rule.when.headers.is_empty()
            && rule.when.holds(&Request::Summary(request), &nothing)
        {
            apply(edit);
            applied += 1;
        }
    }
    applied
}

impl Rule {
    /// Whether the rule needs the headers it rewrites: a header condition, or
    /// an action whose effect depends on what is there (only `set` and
    /// `append` do not).
    pub fn reads_response(&self) -> bool {
        !self.when.headers.is_empty() || self.action.unread_edit().is_none()
    }
}

/// Where request conditions look: the request headers themselves (request
/// rules, which see earlier rules' changes) or the client's request as it was
/// sent (response rules). Looked up only when a condition asks.
enum Request<'r> {
    Headers(&'r HeaderList<'r>),
    Summary(&'r RequestSummary),
}

impl Request<'_> {
    fn method(&self) -> Option<&[u8]> {
        match self {
            Self::Headers(headers) => headers.first(METHOD),
            Self::Summary(summary) => summary.method.as_deref(),
        }
    }

    fn path(&self) -> Option<&[u8]> {
        match self {
            Self::Headers(headers) => headers.first(PATH),
            Self::Summary(summary) => summary.path.as_deref(),
        }
    }

    fn authority(&self) -> Option<&[u8]> {
        match self {
            Self::Headers(headers) => authority_of(headers),
            Self::Summary(summary) => summary.authority.as_deref(),
        }
    }
}

impl Conditions {
    fn holds(&self, request: &Request<'_>, headers: &HeaderList<'_>) -> bool {
        let path_ok = self.path_prefix.as_ref().is_none_or(|prefix| {
            request.path().is_some_and(|path| {
                path.get(..prefix.len())
                    .is_some_and(|start| same_bytes(start, prefix.as_bytes()))
            })
        });
        let method_ok = || {
            self.methods.is_empty()
                || request
                    .method()
                    .is_some_and(|method| self.methods.iter().any(|m| m.as_bytes() == method))
        };
        let authority_ok = || {
            self.authority.as_ref().is_none_or(|authority| {
                request
                    .authority()
                    .is_some_and(|value| authority.matches(value))
            })
        };
        path_ok
            && method_ok()
            && authority_ok()
            && self
                .headers
                .iter()
                .all(|condition| condition.holds(headers))
    }

    /// Whether a condition looks at the request's method, path or authority.
    pub fn reads_request(&self) -> bool {
        self.path_prefix.is_some() || !self.methods.is_empty() || self.authority.is_some()
    }
}

impl AuthorityMatch {
    fn matches(&self, authority: &[u8]) -> bool {
        let compared = if self.with_port {
            authority
        } else {
            strip_port(authority)
        };
        compared.eq_ignore_ascii_case(self.value.as_bytes())
    }
}

/// The host part of an authority: `[::1]:80` → `[::1]`, `a.b:443` → `a.b`.
fn strip_port(authority: &[u8]) -> &[u8] {
    let host_end = if authority.starts_with(b"[") {
        authority
            .iter()
            .position(|byte| *byte == b']')
            .map_or(authority.len(), |end| end + 1)
    } else {
        authority
            .iter()
            .position(|byte| *byte == b':')
            .unwrap_or(authority.len())
    };
    authority.get(..host_end).unwrap_or(authority)
}

impl HeaderCondition {
    fn holds(&self, headers: &HeaderList<'_>) -> bool {
        match self {
            Self::Present(name) => headers.contains(name),
            Self::Absent(name) => !headers.contains(name),
            Self::Equals(name, value) => headers.get_all(name).any(|v| v == value.as_slice()),
        }
    }
}

impl Action {
    /// Applies the action; returns whether it changed anything it was meant to.
    /// Names and values are borrowed from the rule, never copied.
    fn apply<'a>(&'a self, headers: &mut Rewrite<'_, 'a>) -> bool {
        match self {
            Self::Set { name, value } => {
                headers.set(name, value.as_str());
                true
            }
            Self::Append { name, value } => {
                headers.append(name, value.as_str());
                true
            }
            Self::SetIfAbsent { name, value } => {
                if headers.contains(name) {
                    false
                } else {
                    headers.set(name, value.as_str());
                    true
                }
            }
            Self::Remove { name } => headers.remove(name),
            Self::Rename { from, to } => headers.rename(from, to),
            Self::RewritePathPrefix { from, to } => {
                let Some(rest) = headers
                    .first(PATH)
                    .and_then(|path| path.strip_prefix(from.as_bytes()))
                else {
                    return false;
                };
                let mut path = Vec::with_capacity(to.len() + rest.len());
                path.extend_from_slice(to.as_bytes());
                path.extend_from_slice(rest);
                headers.set(PATH, path);
                true
            }
            Self::SetAuthority { value } => {
                headers.set(AUTHORITY, value.as_str());
                if headers.contains(HOST) {
                    headers.set(HOST, value.as_str());
                }
                true
            }
        }
    }

    /// The action as an edit of a host map it does not need to read: `set` and
    /// `append` only.
    fn unread_edit(&self) -> Option<HeaderEdit<'_>> {
        match self {
            Self::Set { name, value } => Some(HeaderEdit::Set(name, value.as_bytes())),
            Self::Append { name, value } => Some(HeaderEdit::Add(name, value.as_bytes())),
            _ => None,
        }
    }

    /// The header names the action may write (set, add, remove or rename).
    pub fn written_names(&self) -> [Option<&str>; 2] {
        match self {
            Self::Set { name, .. }
            | Self::Append { name, .. }
            | Self::SetIfAbsent { name, .. }
            | Self::Remove { name } => [Some(name), None],
            Self::Rename { from, to } => [Some(from), Some(to)],
            Self::RewritePathPrefix { .. } => [Some(PATH), None],
            Self::SetAuthority { .. } => [Some(AUTHORITY), Some(HOST)],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::headers::test_list as list;

    fn request() -> HeaderList<'static> {
        list(&[
            (":method", "POST"),
            (":path", "/anthropic/v1/messages?beta=true"),
            (":authority", "AI.internal:8443"),
            ("x-team", "ml"),
        ])
    }

    fn rule(when: Conditions, action: Action) -> Rule {
        Rule { when, action }
    }

    fn set(name: &str, value: &str) -> Action {
        Action::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn unconditional_actions() {
        let mut headers = request();
        let rules = vec![
            rule(Conditions::default(), set("x-a", "1")),
            rule(
                Conditions::default(),
                Action::Append {
                    name: "x-team".into(),
                    value: "infra".into(),
                },
            ),
            rule(
                Conditions::default(),
                Action::SetIfAbsent {
                    name: "x-a".into(),
                    value: "2".into(),
                },
            ),
            rule(
                Conditions::default(),
                Action::Remove {
                    name: "x-missing".into(),
                },
            ),
            rule(
                Conditions::default(),
                Action::Rename {
                    from: "x-team".into(),
                    to: "x-group".into(),
                },
            ),
        ];
        assert_eq!(
            apply_request_rules(&rules, &mut Rewrite::new(&mut headers, &mut |_| {})),
            vec![0, 1, 4]
        );
        assert_eq!(headers.first("x-a"), Some(&b"1"[..]));
        assert!(!headers.contains("x-team"));
        assert_eq!(
            headers.get_all("x-group").collect::<Vec<_>>(),
            vec![&b"ml"[..], &b"infra"[..]]
        );
    }

    #[test]
    fn every_condition_must_hold() {
        let when = Conditions {
            path_prefix: Some("/anthropic/".into()),
            methods: vec!["GET".into(), "POST".into()],
            authority: Some(AuthorityMatch {
                value: "ai.internal".into(),
                with_port: false,
            }),
            headers: vec![
                HeaderCondition::Present("x-team".into()),
                HeaderCondition::Equals("x-team".into(), b"ml".to_vec()),
                HeaderCondition::Absent("x-debug".into()),
            ],
        };
        let mut headers = request();
        assert_eq!(
            apply_request_rules(
                &[rule(when.clone(), set("x-hit", "1"))],
                &mut Rewrite::new(&mut headers, &mut |_| {})
            ),
            vec![0]
        );

        for broken in [
            Conditions {
                path_prefix: Some("/v1/".into()),
                ..when.clone()
            },
            Conditions {
                methods: vec!["GET".into()],
                ..when.clone()
            },
            Conditions {
                methods: vec!["post".into()],
                ..when.clone()
            },
            Conditions {
                authority: Some(AuthorityMatch {
                    value: "ai.internal:443".into(),
                    with_port: true,
                }),
                ..when.clone()
            },
            Conditions {
                headers: vec![HeaderCondition::Equals("x-team".into(), b"ML".to_vec())],
                ..when.clone()
            },
            Conditions {
                headers: vec![HeaderCondition::Absent("x-team".into())],
                ..when.clone()
            },
        ] {
            let mut headers = request();
            let rules = [rule(broken.clone(), set("x-hit", "1"))];
            assert!(
                apply_request_rules(&rules, &mut Rewrite::new(&mut headers, &mut |_| {}))
                    .is_empty(),
                "{broken:?}"
            );
            assert!(!headers.contains("x-hit"));
        }
    }

    #[test]
    fn authority_with_port_and_ipv6() {
        let exact = AuthorityMatch {
            value: "ai.internal:8443".into(),
            with_port: true,
        };
        assert!(exact.matches(b"AI.internal:8443"));
        assert!(!exact.matches(b"ai.internal"));
        let host = AuthorityMatch {
            value: "[::1]".into(),
            with_port: false,
        };
        assert!(host.matches(b"[::1]:8080"));
        assert!(host.matches(b"[::1]"));
        assert!(!host.matches(b"[::2]:8080"));
    }

    #[test]
    fn path_rewrite_is_seen_by_later_rules() {
        let rules = vec![
            rule(
                Conditions::default(),
                Action::RewritePathPrefix {
                    from: "/anthropic/".into(),
                    to: "/".into(),
                },
            ),
            rule(
                Conditions {
                    path_prefix: Some("/v1/messages".into()),
                    ..Conditions::default()
                },
                set("x-messages", "1"),
            ),
            rule(
                Conditions::default(),
                Action::RewritePathPrefix {
                    from: "/nope/".into(),
                    to: "/".into(),
                },
            ),
        ];
        let mut headers = request();
        assert_eq!(
            apply_request_rules(&rules, &mut Rewrite::new(&mut headers, &mut |_| {})),
            vec![0, 1]
        );
        assert_eq!(headers.first(":path"), Some(&b"/v1/messages?beta=true"[..]));
    }

    #[test]
    fn set_authority_keeps_host_in_step() {
        let mut headers = list(&[(":authority", "a"), ("host", "a")]);
        let rules = [rule(
            Conditions::default(),
            Action::SetAuthority {
                value: "api.anthropic.com".into(),
            },
        )];
        assert_eq!(
            apply_request_rules(&rules, &mut Rewrite::new(&mut headers, &mut |_| {})),
            vec![0]
        );
        assert_eq!(headers.first(":authority"), Some(&b"api.anthropic.com"[..]));
        assert_eq!(headers.first("host"), Some(&b"api.anthropic.com"[..]));
    }

    #[test]
    fn response_rules_match_the_client_request() {
        let summary = RequestSummary::from_request(&request());
        let rules = vec![
            rule(
                Conditions {
                    path_prefix: Some("/anthropic/".into()),
                    ..Conditions::default()
                },
                set("x-route", "anthropic"),
            ),
            rule(
                Conditions {
                    methods: vec!["GET".into()],
                    ..Conditions::default()
                },
                set("x-get", "1"),
            ),
            rule(
                Conditions {
                    headers: vec![HeaderCondition::Present("server".into())],
                    ..Conditions::default()
                },
                Action::Remove {
                    name: "server".into(),
                },
            ),
        ];
        let mut headers = list(&[(":status", "200"), ("server", "upstream")]);
        assert_eq!(
            apply_response_rules(
                &rules,
                &mut Rewrite::new(&mut headers, &mut |_| {}),
                &summary
            ),
            vec![0, 2]
        );
        assert_eq!(
            headers,
            list(&[(":status", "200"), ("x-route", "anthropic")])
        );
    }

    #[test]
    fn applied_rules_keep_every_index_in_order() {
        let mut applied = AppliedRules::default();
        assert!(applied.is_empty());
        for index in [0, 5, 63, 64, 200] {
            applied.push(index);
        }
        assert_eq!(applied.len(), 5);
        assert!(!applied.is_empty());
        assert_eq!(applied, vec![0, 5, 63, 64, 200]);
        assert_eq!(format!("{applied:?}"), "[0, 5, 63, 64, 200]");
    }

    #[test]
    fn missing_pseudo_headers_fail_request_conditions() {
        let when = Conditions {
            path_prefix: Some("/".into()),
            ..Conditions::default()
        };
        let mut headers = list(&[("x", "1")]);
        assert!(
            apply_request_rules(
                &[rule(when, set("y", "1"))],
                &mut Rewrite::new(&mut headers, &mut |_| {})
            )
            .is_empty()
        );
        let authority = Conditions {
            authority: Some(AuthorityMatch {
                value: "a".into(),
                with_port: false,
            }),
            ..Conditions::default()
        };
        let mut headers = list(&[("host", "A:80")]);
        assert_eq!(
            apply_request_rules(
                &[rule(authority, set("y", "1"))],
                &mut Rewrite::new(&mut headers, &mut |_| {})
            ),
            vec![0]
        );
    }
}
