//! Caller access policy: an identity allow-list and source-address ranges.
//!
//! The identity header is expected to be set by a trusted front proxy (for
//! example `tailscale-user-login` from Tailscale Serve); the source address
//! is the downstream peer the host reports as the `source.address` property.
//! With `require: all` (the default) every configured check must pass; with
//! `require: any` one passing check is enough.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::headers::HeaderList;

/// A validated access policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The identity allow-list, when configured.
    pub identity: Option<IdentityRule>,
    /// Allowed source ranges, when configured (never empty).
    pub source_ranges: Option<Vec<Cidr>>,
    /// How the configured checks combine.
    pub require: Requirement,
}

/// Allow callers whose identity header holds one of the listed identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRule {
    /// Lower-case name of the header carrying the caller identity.
    pub header: String,
    /// Allowed identities, compared ASCII case-insensitively.
    pub allow: Vec<String>,
}

/// How the configured checks combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Requirement {
    /// Every configured check must pass.
    #[default]
    All,
    /// At least one configured check must pass.
    Any,
}

/// An IP network: address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a CIDR string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    Address(String),
    /// The prefix length is not a number within the family's range.
    #[error("prefix length {given:?} is not a number from 0 to {max}")]
    PrefixLength {
        /// The prefix length as written.
        given: String,
        /// The largest length for this address family.
        max: u8,
    },
    /// Bits are set after the prefix, which usually means a typo.
    #[error("host bits are set after the prefix; did you mean {suggestion}?")]
    HostBits {
        /// The network with host bits cleared.
        suggestion: String,
    },
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd7a:115c:a1e0::/48`, or a bare address (a single host).
    ///
    /// # Errors
    /// A [`CidrError`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Self, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| CidrError::Address(address.to_owned()))?;
        let max = match network {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let prefix_len = match prefix {
            None => max,
            Some(given) => match given.parse::<u8>() {
                Ok(length) if length <= max && !given.starts_with('+') => length,
                _ => {
                    return Err(CidrError::PrefixLength {
                        given: given.to_owned(),
                        max,
                    });
                }
            },
        };
        let masked = mask(network, prefix_len);
        if masked != network {
            return Err(CidrError::HostBits {
                suggestion: format!("{masked}/{prefix_len}"),
            });
        }
        Ok(Self {
            network,
            prefix_len,
        })
    }

    /// Whether `address` lies inside this network. IPv4-mapped IPv6
    /// addresses (`::ffff:10.0.0.1`) match IPv4 networks.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        let same_family = matches!(
            (self.network, address),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && mask(address, self.prefix_len) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

fn mask(address: IpAddr, prefix_len: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

/// Parses the forms hosts use for `source.address`: `1.2.3.4:5678`,
/// `[::1]:5678`, bare `1.2.3.4` or `::1`, `[::1]`, and `fe80::1%eth0`.
/// Anything else (a Unix socket path, garbage) is `None`.
pub fn parse_source_address(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim();
    if let Ok(socket) = text.parse::<SocketAddr>() {
        return Some(socket.ip());
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map_or(text, |(inside, _)| inside);
    let without_zone = bare.split_once('%').map_or(bare, |(address, _)| address);
    without_zone.parse().ok()
}

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The identity header is absent.
    IdentityMissing,
    /// The identity header appears more than once, so it cannot be trusted.
    IdentityAmbiguous,
    /// The identity is not on the allow list.
    IdentityNotAllowed,
    /// The host did not report a usable source address.
    SourceUnknown,
    /// The source address is outside every allowed range.
    SourceNotAllowed,
}

impl DenyReason {
    /// A short explanation, safe to send to the caller.
    pub fn message(self) -> &'static str {
        match self {
            Self::IdentityMissing => "the request carries no caller identity",
            Self::IdentityAmbiguous => "the request carries more than one caller identity",
            Self::IdentityNotAllowed => "the caller identity is not allowed to use this upstream",
            Self::SourceUnknown => "the source address of the request is unknown",
            Self::SourceNotAllowed => "the source address of the request is not allowed",
        }
    }
}

impl AccessPolicy {
    /// Whether the check needs the `source.address` property.
    pub fn needs_source_address(&self) -> bool {
        self.source_ranges.is_some()
    }

    /// Checks a request. `source` is the parsed `source.address`, if any.
    ///
    /// # Errors
    /// The reason of the first failing check when the request is refused.
    pub fn check(
        &self,
        headers: &HeaderList<'_>,
        source: Option<IpAddr>,
    ) -> Result<(), DenyReason> {
        let identity = self.identity.as_ref().map(|rule| rule.check(headers));
        let source = self
            .source_ranges
            .as_ref()
            .map(|ranges| check_source(ranges, source));
        let results = [identity, source].into_iter().flatten();
        match self.require {
            Requirement::All => results.collect(),
            Requirement::Any => {
                let mut first_failure = None;
                for result in results {
                    match result {
                        Ok(()) => return Ok(()),
                        Err(reason) => {
                            first_failure.get_or_insert(reason);
                        }
                    }
                }
                first_failure.map_or(Ok(()), Err)
            }
        }
    }
}

impl IdentityRule {
    fn check(&self, headers: &HeaderList<'_>) -> Result<(), DenyReason> {
        let mut values = headers.get_all(&self.header);
        let value = values.next().ok_or(DenyReason::IdentityMissing)?;
        if values.next().is_some() {
            return Err(DenyReason::IdentityAmbiguous);
        }
        let value = value.trim_ascii();
        if self
            .allow
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(value))
        {
            Ok(())
        } else {
            Err(DenyReason::IdentityNotAllowed)
        }
    }
}

fn check_source(ranges: &[Cidr], source: Option<IpAddr>) -> Result<(), DenyReason> {
    let address = source.ok_or(DenyReason::SourceUnknown)?;
    if ranges.iter().any(|range| range.contains(address)) {
        Ok(())
    } else {
        Err(DenyReason::SourceNotAllowed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::headers::test_list as list;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn policy(identity: bool, ranges: &[&str], require: Requirement) -> AccessPolicy {
        AccessPolicy {
            identity: identity.then(|| IdentityRule {
                header: "tailscale-user-login".into(),
                allow: vec!["alice@example.com".into(), "bob@example.com".into()],
            }),
            source_ranges: (!ranges.is_empty())
                .then(|| ranges.iter().map(|r| Cidr::parse(r).unwrap()).collect()),
            require,
        }
    }

    #[test]
    fn ipv4_cidr_matching() {
        let cidr = Cidr::parse("100.64.0.0/10").unwrap();
        assert!(cidr.contains(ip("100.64.0.1")));
        assert!(cidr.contains(ip("100.127.255.255")));
        assert!(!cidr.contains(ip("100.128.0.0")));
        assert!(!cidr.contains(ip("::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("10.1.2.3").unwrap().contains(ip("10.1.2.3")));
        assert!(!Cidr::parse("10.1.2.3").unwrap().contains(ip("10.1.2.4")));
    }

    #[test]
    fn ipv6_cidr_matching_and_mapped_ipv4() {
        let cidr = Cidr::parse("fd7a:115c:a1e0::/48").unwrap();
        assert!(cidr.contains(ip("fd7a:115c:a1e0:ab12::1")));
        assert!(!cidr.contains(ip("fd7a:115c:a1e1::1")));
        assert!(!cidr.contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(
            Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("::ffff:10.1.2.3"))
        );
        assert!(Cidr::parse("::1/128").unwrap().contains(ip("::1")));
    }

    #[test]
    fn cidr_errors_name_the_problem() {
        assert_eq!(
            Cidr::parse("10.0.0.0/33"),
            Err(CidrError::PrefixLength {
                given: "33".into(),
                max: 32
            })
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/x"),
            Err(CidrError::PrefixLength {
                given: "x".into(),
                max: 32
            })
        );
        assert_eq!(
            Cidr::parse("10.0.0.0/+8"),
            Err(CidrError::PrefixLength {
                given: "+8".into(),
                max: 32
            })
        );
        assert_eq!(
            Cidr::parse("10.0.0/8"),
            Err(CidrError::Address("10.0.0".into()))
        );
        assert_eq!(
            Cidr::parse("10.1.2.3/8").unwrap_err().to_string(),
            "host bits are set after the prefix; did you mean 10.0.0.0/8?"
        );
        assert!(Cidr::parse("fd7a::/129").is_err());
    }

    #[test]
    fn source_address_forms() {
        assert_eq!(parse_source_address(b"1.2.3.4:5678"), Some(ip("1.2.3.4")));
        assert_eq!(parse_source_address(b"[::1]:5678"), Some(ip("::1")));
        assert_eq!(parse_source_address(b"1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(parse_source_address(b"::1"), Some(ip("::1")));
        assert_eq!(parse_source_address(b"[fd7a::1]"), Some(ip("fd7a::1")));
        assert_eq!(parse_source_address(b"fe80::1%eth0"), Some(ip("fe80::1")));
        assert_eq!(
            parse_source_address(b"[fe80::1%eth0]:80"),
            Some(ip("fe80::1"))
        );
        assert_eq!(parse_source_address(b"/var/run/envoy.sock"), None);
        assert_eq!(parse_source_address(b""), None);
        assert_eq!(parse_source_address(&[0xff, 0x00]), None);
    }

    #[test]
    fn identity_allow_list() {
        let policy = policy(true, &[], Requirement::All);
        assert_eq!(
            policy.check(
                &list(&[("tailscale-user-login", "Alice@Example.com")]),
                None
            ),
            Ok(())
        );
        assert_eq!(
            policy.check(&list(&[("tailscale-user-login", "eve@example.com")]), None),
            Err(DenyReason::IdentityNotAllowed)
        );
        assert_eq!(
            policy.check(&list(&[]), None),
            Err(DenyReason::IdentityMissing)
        );
        assert_eq!(
            policy.check(
                &list(&[
                    ("tailscale-user-login", "alice@example.com"),
                    ("tailscale-user-login", "eve@example.com")
                ]),
                None
            ),
            Err(DenyReason::IdentityAmbiguous)
        );
    }

    #[test]
    fn require_all_needs_every_check() {
        let policy = policy(true, &["100.64.0.0/10"], Requirement::All);
        let alice = list(&[("tailscale-user-login", "alice@example.com")]);
        assert_eq!(policy.check(&alice, Some(ip("100.100.1.1"))), Ok(()));
        assert_eq!(
            policy.check(&alice, Some(ip("192.168.1.1"))),
            Err(DenyReason::SourceNotAllowed)
        );
        assert_eq!(policy.check(&alice, None), Err(DenyReason::SourceUnknown));
        assert_eq!(
            policy.check(&list(&[]), Some(ip("100.100.1.1"))),
            Err(DenyReason::IdentityMissing)
        );
    }

    #[test]
    fn require_any_needs_one_check() {
        let policy = policy(true, &["127.0.0.0/8", "::1"], Requirement::Any);
        let alice = list(&[("tailscale-user-login", "alice@example.com")]);
        assert_eq!(policy.check(&alice, Some(ip("192.168.1.1"))), Ok(()));
        assert_eq!(policy.check(&list(&[]), Some(ip("::1"))), Ok(()));
        assert_eq!(
            policy.check(&list(&[]), Some(ip("192.168.1.1"))),
            Err(DenyReason::IdentityMissing)
        );
        assert!(policy.needs_source_address());
    }
}
