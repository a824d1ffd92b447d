//! Caller access policy: an identity allow-list and source-address ranges.
//!
//! The caller identity comes from a source the client cannot write: a host
//! property ([`IdentitySource::Property`], e.g. `caller.id` that
//! `host-harness serve` sets from tailscaled's WhoIs, or `source.principal`
//! that Envoy and Istio set from the mTLS peer), or a header the operator
//! declared trusted because a front proxy removes and sets it
//! ([`IdentitySource::TrustedHeader`]). The source address is the downstream
//! peer the host reports as the `source.address` property. With `require:
//! all` (the default) every configured check must pass; with `require: any`
//! one passing check is enough.
//!
//! Nothing here calls the host: the glue fetches the properties the policy
//! names ([`AccessPolicy::identity_property`],
//! [`AccessPolicy::needs_source_address`]) into [`CallerFacts`] and hands them
//! to [`AccessPolicy::check`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::headers::HeaderList;
use crate::json::Quoted;

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

/// Allow callers whose identity, read from [`IdentityRule::source`], is on the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRule {
    /// Where the caller identity is read.
    pub source: IdentitySource,
    /// Allowed identities, compared ASCII case-insensitively.
    pub allow: Vec<String>,
}

/// Where a request's caller identity is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// A host property the client cannot write (`caller.id`, `source.principal`).
    Property(PropertyPath),
    /// A request header (lower-case name) that a front proxy removes and sets on every request, as
    /// the operator declared with `"trusted": true`.
    TrustedHeader(String),
}

/// A host property path: dot-separated names such as `caller.id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyPath(String);

/// Why a property path was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PropertyPathError {
    /// Empty, an empty segment, or a character outside `[A-Za-z0-9_-]` in a segment.
    #[error(
        "is not a property path (dot-separated names of letters, digits, '_' and '-', such as \"caller.id\")"
    )]
    Syntax,
    /// A property the host fills from the request, which the client writes.
    #[error(
        "names a property the host fills from the request itself, which the client writes: use a property set from the connection, such as \"caller.id\" or \"source.principal\""
    )]
    ClientWritten,
}

/// Property roots the host fills from what the client sent (Envoy's request attributes and
/// everything derived from them).
const CLIENT_WRITTEN_ROOTS: &[&str] = &["request"];

impl PropertyPath {
    /// Parses a dotted path such as `caller.id` or `source.principal`.
    ///
    /// # Errors
    /// [`PropertyPathError::Syntax`] for a malformed path, [`PropertyPathError::ClientWritten`]
    /// for a property under `request.` (headers, path, user agent: all sent by the client).
    pub fn parse(text: &str) -> Result<Self, PropertyPathError> {
        let well_formed = text.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        });
        if !well_formed {
            return Err(PropertyPathError::Syntax);
        }
        let root = text.split('.').next().unwrap_or_default();
        if CLIENT_WRITTEN_ROOTS.contains(&root) {
            return Err(PropertyPathError::ClientWritten);
        }
        Ok(Self(text.to_owned()))
    }

    /// The path's segments, as `proxy_get_property` takes them (`["caller", "id"]`).
    pub fn segments(&self) -> Vec<&str> {
        property_segments(&self.0)
    }

    /// The dotted form, as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PropertyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the host reported about a request's caller, fetched by the glue only when the policy
/// needs it (the values are the raw property bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallerFacts {
    /// The `source.address` property, when `source_cidrs` is configured and the host had it.
    pub source_address: Option<Vec<u8>>,
    /// The identity property ([`AccessPolicy::identity_property`]), when the host had it.
    pub identity_property: Option<Vec<u8>>,
}

/// The identity source the access policy reads, if it has an identity check.
///
/// Usage accounting attributes a request to the same caller the policy checked: when this is
/// `Some`, read the caller from it (the property's value, or the trusted header's single value);
/// when `None`, fall back to the first present of the `caller.id` and `source.principal`
/// properties ([`DEFAULT_CALLER_PROPERTIES`]).
pub fn identity_source(policy: Option<&AccessPolicy>) -> Option<&IdentitySource> {
    policy
        .and_then(|policy| policy.identity.as_ref())
        .map(|rule| &rule.source)
}

/// The segments of a dotted property path (`caller.id` is `["caller", "id"]`), as
/// `proxy_get_property` takes them. Split byte by byte: the paths are short and read on every observed
/// request, where a `char` pattern's search costs more than the split itself.
pub fn property_segments(path: &str) -> Vec<&str> {
    let mut segments = Vec::with_capacity(4);
    let mut rest = path;
    while let Some(at) = rest.bytes().position(|byte| byte == b'.')
        && let Some((segment, dot_and_rest)) = rest.split_at_checked(at)
    {
        segments.push(segment);
        rest = dot_and_rest.get(1..).unwrap_or_default();
    }
    segments.push(rest);
    segments
}

/// The properties that name the caller when the access policy has no identity source, in order:
/// `host-harness serve`'s resolved caller, then Envoy's mTLS peer.
pub const DEFAULT_CALLER_PROPERTIES: [&str; 2] = ["caller.id", "source.principal"];

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
    #[error("{} is not an IP address", Quoted(.0))]
    Address(String),
    /// The prefix length is not a number within the family's range.
    #[error("prefix length {} is not a number from 0 to {max}", Quoted(.given))]
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
        let network = parse_ip(address).ok_or_else(|| CidrError::Address(address.to_owned()))?;
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
            let mut suggestion = show_ip(masked);
            suggestion.push('/');
            push_digits(&mut suggestion, u32::from(prefix_len), 10);
            return Err(CidrError::HostBits { suggestion });
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
        write!(f, "{}/{}", show_ip(self.network), self.prefix_len)
    }
}

/// An address as the standard library prints it (RFC 5952 for IPv6: lower-case hex, the first
/// longest run of two or more zero groups as `::`, an IPv4-mapped address as `::ffff:a.b.c.d`).
/// Written out because only configuration errors print an address, and the standard formatter
/// costs the binary about two kilobytes.
fn show_ip(address: IpAddr) -> String {
    let mut out = String::new();
    let v6 = match address {
        IpAddr::V4(v4) => {
            push_dotted(&mut out, v4);
            return out;
        }
        IpAddr::V6(v6) => v6,
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        out.push_str("::ffff:");
        push_dotted(&mut out, v4);
        return out;
    }
    push_groups(&mut out, &v6.segments());
    out
}

/// `a.b.c.d`.
#[inline(never)]
fn push_dotted(out: &mut String, address: Ipv4Addr) {
    for (index, octet) in address.octets().into_iter().enumerate() {
        if index > 0 {
            out.push('.');
        }
        push_digits(out, u32::from(octet), 10);
    }
}

/// `value` in `radix`, without leading zeros.
#[inline(never)]
fn push_digits(out: &mut String, value: u32, radix: u32) {
    let mut divisor = 1;
    while value / divisor >= radix {
        divisor *= radix;
    }
    while divisor > 0 {
        out.push(char::from_digit(value / divisor % radix, radix).unwrap_or('0'));
        divisor /= radix;
    }
}

/// IPv6 groups, the first longest run of two or more zero groups as `::`.
fn push_groups(out: &mut String, segments: &[u16]) {
    let mut longest = (segments.len(), 0);
    let mut run_start = 0;
    for (index, segment) in segments.iter().enumerate() {
        if *segment != 0 {
            run_start = index + 1;
        } else if index + 1 - run_start > longest.1 {
            longest = (run_start, index + 1 - run_start);
        }
    }
    let (gap, gap_len) = if longest.1 > 1 {
        longest
    } else {
        (segments.len(), 0)
    };
    let mut index = 0;
    while let Some(segment) = segments.get(index) {
        if index == gap {
            out.push_str("::");
            index += gap_len;
            continue;
        }
        if index > 0 && index != gap + gap_len {
            out.push(':');
        }
        push_digits(out, u32::from(*segment), 16);
        index += 1;
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
    // `[v6]:port` needs no case of its own: unbracketing below yields the same address.
    if let Some((host, port)) = text.split_once(':')
        && let (Some(v4), Some(_)) = (parse_v4(host.as_bytes()), port_number(port.as_bytes()))
    {
        return Some(IpAddr::V4(v4));
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map_or(text, |(inside, _)| inside);
    let without_zone = bare.split_once('%').map_or(bare, |(address, _)| address);
    parse_ip(without_zone)
}

// Address text, accepting exactly what the standard library's `FromStr` for `IpAddr` and
// `SocketAddrV4` accepts. Written out because its generic parser costs the module about four
// kilobytes; the tests compare the two over a generated corpus.

/// An IPv4 address in dotted-quad form or an IPv6 address in an RFC 4291 section 2.2 form.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.as_bytes();
    match parse_v4(text) {
        Some(v4) => Some(IpAddr::V4(v4)),
        None => parse_v6(text).map(IpAddr::V6),
    }
}

/// Exactly four decimal parts from 0 to 255; a part of more than one digit may not start with `0`.
fn parse_v4(text: &[u8]) -> Option<Ipv4Addr> {
    let (mut bits, mut parts) = (0, 0);
    for part in text.split(|byte| *byte == b'.') {
        parts += 1;
        if parts > 4 || part.len() > 3 || (part.len() > 1 && part.starts_with(b"0")) {
            return None;
        }
        let octet = u8::try_from(number(part, 10)?).ok()?;
        bits = bits << 8 | u32::from(octet);
    }
    (parts == 4).then(|| Ipv4Addr::from(bits))
}

/// Eight groups, or fewer with one `::` standing for at least one zero group; the last 32 bits
/// may be written as dotted IPv4, but not before a `::`.
fn parse_v6(text: &[u8]) -> Option<Ipv6Addr> {
    let bits = match text.windows(2).position(|pair| pair == b"::") {
        None => {
            let (bits, count) = v6_groups(text, true)?;
            (count == 8).then_some(bits)?
        }
        Some(at) => {
            let (head, head_count) = v6_groups(text.get(..at)?, false)?;
            let (tail, tail_count) = v6_groups(text.get(at + 2..)?, true)?;
            let gap = 8u32
                .checked_sub(head_count + tail_count)
                .filter(|gap| *gap > 0)?;
            head.checked_shl(16 * (gap + tail_count)).unwrap_or(0) | tail
        }
    };
    Some(Ipv6Addr::from(bits))
}

/// `:`-separated groups of one to four hex digits, the last optionally dotted IPv4 (two groups)
/// when `v4_last`, as a right-aligned number and a group count of at most eight. Empty text is
/// no groups.
fn v6_groups(text: &[u8], v4_last: bool) -> Option<(u128, u32)> {
    let (mut bits, mut count) = (0u128, 0);
    if text.is_empty() {
        return Some((bits, count));
    }
    let mut v4_seen = false;
    for piece in text.split(|byte| *byte == b':') {
        let (value, width) = if v4_seen {
            return None;
        } else if v4_last && piece.contains(&b'.') {
            v4_seen = true;
            (u32::from(parse_v4(piece)?), 2)
        } else if piece.len() <= 4 {
            (number(piece, 16)?, 1)
        } else {
            return None;
        };
        count += width;
        if count > 8 {
            return None;
        }
        bits = bits << (16 * width) | u128::from(value);
    }
    Some((bits, count))
}

/// A port: decimal digits (leading zeros allowed) worth at most 65535.
fn port_number(text: &[u8]) -> Option<u16> {
    u16::try_from(number(text, 10)?).ok()
}

/// The value of one or more digits in `radix`; `None` for no digits, another byte, or overflow.
fn number(digits: &[u8], radix: u32) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |value, byte| {
        value
            .checked_mul(radix)?
            .checked_add(char::from(*byte).to_digit(radix)?)
    })
}

/// Why a caller was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The identity property or trusted header is absent or empty.
    IdentityMissing,
    /// The trusted identity header appears more than once, so it cannot be trusted.
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

    /// The property the identity check reads, when its source is a property: the glue fetches it
    /// into [`CallerFacts::identity_property`]. Nothing is fetched otherwise.
    pub fn identity_property(&self) -> Option<&PropertyPath> {
        match self.identity.as_ref().map(|rule| &rule.source) {
            Some(IdentitySource::Property(path)) => Some(path),
            _ => None,
        }
    }

    /// Checks a request against the headers as the client sent them and what the host reported.
    ///
    /// # Errors
    /// The reason of the first failing check when the request is refused.
    pub fn check(
        &self,
        headers: &HeaderList<'_>,
        facts: Option<&CallerFacts>,
    ) -> Result<(), DenyReason> {
        let identity = self
            .identity
            .as_ref()
            .map(|rule| rule.check(headers, facts));
        let source = self.source_ranges.as_ref().map(|ranges| {
            let address = facts
                .and_then(|facts| facts.source_address.as_deref())
                .and_then(parse_source_address);
            check_source(ranges, address)
        });
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
    fn check(
        &self,
        headers: &HeaderList<'_>,
        facts: Option<&CallerFacts>,
    ) -> Result<(), DenyReason> {
        let value = match &self.source {
            IdentitySource::Property(_) => facts
                .and_then(|facts| facts.identity_property.as_deref())
                .ok_or(DenyReason::IdentityMissing)?,
            IdentitySource::TrustedHeader(name) => {
                let mut values = headers.get_all(name);
                let value = values.next().ok_or(DenyReason::IdentityMissing)?;
                if values.next().is_some() {
                    return Err(DenyReason::IdentityAmbiguous);
                }
                value
            }
        };
        identity_allowed(value, &self.allow)
    }
}

/// The allow-list match: `value` is split on `,`, each part trimmed (ASCII whitespace); the check
/// passes when a part equals an allowed entry ASCII case-insensitively. A tagged node whose
/// identity is `tag:ci,tag:server` thus passes an allow list holding `tag:ci`. A value with no
/// non-blank part carries no identity.
///
/// # Errors
/// [`DenyReason::IdentityMissing`] for a blank value, [`DenyReason::IdentityNotAllowed`] when no
/// part is allowed.
pub fn identity_allowed(value: &[u8], allow: &[String]) -> Result<(), DenyReason> {
    let mut parts = value
        .split(|byte| *byte == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|part| !part.is_empty())
        .peekable();
    if parts.peek().is_none() {
        return Err(DenyReason::IdentityMissing);
    }
    let allowed = parts.any(|part| {
        allow
            .iter()
            .any(|entry| entry.as_bytes().eq_ignore_ascii_case(part))
    });
    if allowed {
        Ok(())
    } else {
        Err(DenyReason::IdentityNotAllowed)
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

    #[test]
    fn addresses_print_as_the_standard_library_prints_them() {
        let fixed = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "::",
            "::1",
            "1::",
            "1:0:0:2::3",
            "1::2:0:0:3",
            "1:0:1:0:1:0:1:0",
            "0:1:0:0:1:0:0:1",
            "fd7a:115c:a1e0::",
            "2001:db8:0:0:1:0:0:1",
            "2001:db8::ffff:0:1",
            "::ffff:10.0.0.0",
            "::ffff:0.0.0.0",
            "::10.0.0.1",
            "::ffff:0:1",
            "1:2:3:4:5:6:7:8",
            "abcd:ef01:2345:6789:abcd:ef01:2345:6789",
            "0:0:1::",
            "1:2:3:4:5:6:7:0",
        ];
        for text in fixed {
            let address = ip(text);
            assert_eq!(show_ip(address), address.to_string(), "{text}");
        }
        // Every pattern of zero and non-zero groups, with values of every width.
        for pattern in 0u32..256 {
            let mut segments = [0u16; 8];
            for (index, segment) in segments.iter_mut().enumerate() {
                if pattern & (1 << index) != 0 {
                    *segment = [0x1, 0x2a, 0x3bc, 0xdef0, 0xffff][(index + pattern as usize) % 5];
                }
            }
            let address = IpAddr::V6(Ipv6Addr::from(segments));
            assert_eq!(show_ip(address), address.to_string(), "{segments:?}");
        }
        assert_eq!(
            Cidr::parse("10.1.0.0/8").unwrap_err().to_string(),
            "host bits are set after the prefix; did you mean 10.0.0.0/8?"
        );
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.1/120").unwrap_err().to_string(),
            "host bits are set after the prefix; did you mean ::ffff:10.0.0.0/120?"
        );
        assert_eq!(Cidr::parse("fd7a::/16").unwrap().to_string(), "fd7a::/16");
    }

    fn facts(source: Option<&str>, identity: Option<&str>) -> CallerFacts {
        CallerFacts {
            source_address: source.map(|text| text.as_bytes().to_vec()),
            identity_property: identity.map(|text| text.as_bytes().to_vec()),
        }
    }

    fn allow(entries: &[&str]) -> Vec<String> {
        entries.iter().map(|entry| (*entry).to_owned()).collect()
    }

    fn property_policy(ranges: &[&str], require: Requirement) -> AccessPolicy {
        AccessPolicy {
            identity: Some(IdentityRule {
                source: IdentitySource::Property(PropertyPath::parse("caller.id").unwrap()),
                allow: allow(&["alice@example.com", "bob@example.com", "tag:ci"]),
            }),
            source_ranges: (!ranges.is_empty())
                .then(|| ranges.iter().map(|r| Cidr::parse(r).unwrap()).collect()),
            require,
        }
    }

    fn header_policy() -> AccessPolicy {
        AccessPolicy {
            identity: Some(IdentityRule {
                source: IdentitySource::TrustedHeader("x-user".into()),
                allow: allow(&["alice@example.com"]),
            }),
            source_ranges: None,
            require: Requirement::All,
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

    /// `parse_source_address` as it was written with the standard library's parsers.
    fn std_source_address(raw: &[u8]) -> Option<IpAddr> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        if let Ok(socket) = text.parse::<std::net::SocketAddr>() {
            return Some(socket.ip());
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|rest| rest.split_once(']'))
            .map_or(text, |(inside, _)| inside);
        let without_zone = bare.split_once('%').map_or(bare, |(address, _)| address);
        without_zone.parse().ok()
    }

    /// A fixed-seed generator, so a failure names a string that reproduces.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize % bound
        }

        fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
            choices[self.below(choices.len())]
        }
    }

    /// Hand-picked edges, then address-shaped strings built from near-valid parts, then random
    /// strings over the characters addresses are written with.
    fn address_corpus() -> Vec<String> {
        let mut corpus: Vec<String> = [
            "",
            " ",
            ".",
            ":",
            "::",
            ":::",
            "::::",
            "[]",
            "[::]",
            "[::]:",
            "[::]:0",
            "%",
            "%eth0",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.0",
            "1.2.3.256",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3.00",
            "0.0.0.00",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.0004",
            "1.2.3.1000",
            "+1.2.3.4",
            "1.2.3.-4",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:65535",
            "1.2.3.4:65536",
            "1.2.3.4:00080",
            "1.2.3.4:000000000000000080",
            "1.2.3.4:+80",
            "1.2.3.4:-1",
            "1.2.3.4:99999999999",
            "1.2.3.4:80:80",
            "1.2.3.4%eth0",
            "1.2.3.4%eth0:80",
            "[1.2.3.4]",
            "[1.2.3.4]:80",
            "100.64.1.2:54321",
            "::1",
            "1::",
            "1::2::3",
            "1:::2",
            ":1::",
            "::1:",
            ":1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::8",
            "1:2:3::5:6:7:8",
            "12345::",
            "::12345",
            "0000:0000:0000:0000:0000:0000:0000:0000",
            "00000::",
            "FD7A:115C:A1E0::",
            "fd7a:115c:a1e0::",
            "fd7a:115c:a1e0::/48",
            "::ffff:1.2.3.4",
            "::FFFF:1.2.3.4",
            "::1.2.3.4",
            "1.2.3.4::",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1:2:3:4:5:1.2.3.4",
            "::1:2:3:4:5:1.2.3.4",
            "::1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "::1.2.3.4:5",
            "::1.2.3.04",
            "::1.2.3.256",
            "::1.2.3",
            "::1.2.3.4.5",
            "1.2.3.4:5::",
            "::ffff:1.2.3.4%eth0",
            "[::ffff:1.2.3.4]:80",
            "[fd7a:115c:a1e0::1]:443",
            "[fd7a:115c:a1e0::1]",
            "[fe80::1%eth0]:80",
            "[fe80::1%1]:80",
            "[fe80::1%4294967295]:80",
            "[fe80::1%4294967296]:80",
            "fe80::1%eth0",
            "fe80::1%",
            "[fe80::1]:65536",
            "[fe80::1]:",
            "[fe80::1]x",
            "[fe80::1",
            "fe80::1]",
            "[[::1]]:80",
            "::1:80",
            "g::",
            "::g",
            "1:2:3:4:5:6:7:g",
            "\u{a0}::1",
            "::1\u{2003}",
            "１.2.3.4",
            "::١",
            "é::",
            "\t1.2.3.4\n",
            "1.2.3.4\0",
            "/var/run/envoy.sock",
            "unix:/tmp/socket",
        ]
        .map(String::from)
        .to_vec();
        let mut rng = Lcg(0x1a2b_3c4d);
        let groups = [
            "0", "1", "ab", "ABC", "ffff", "FFFF", "0000", "12345", "", "g", " 1",
        ];
        let octets = [
            "0", "1", "9", "10", "99", "199", "255", "256", "00", "01", "999", "", "1000",
        ];
        for _ in 0..20_000 {
            let mut text = String::new();
            let count = rng.below(10);
            let gap = rng.below(count + 2);
            for index in 0..count {
                if index == gap || (index == count / 2 && rng.below(8) == 0) {
                    text.push_str("::");
                } else if index > 0 {
                    text.push(':');
                }
                text.push_str(rng.pick(&groups));
            }
            if gap == count && rng.below(2) == 0 {
                text.push_str("::");
            }
            if rng.below(3) == 0 {
                if !text.is_empty() && !text.ends_with(':') {
                    text.push(':');
                }
                let parts = 3 + rng.below(3);
                for index in 0..parts {
                    if index > 0 {
                        text.push('.');
                    }
                    text.push_str(rng.pick(&octets));
                }
            }
            corpus.push(text);
        }
        let valid_octets = ["0", "7", "10", "64", "100", "249", "250", "255"];
        for _ in 0..10_000 {
            let parts = if rng.below(4) == 0 {
                3 + rng.below(3)
            } else {
                4
            };
            let mut text = String::new();
            for index in 0..parts {
                if index > 0 {
                    text.push('.');
                }
                let choices: &[&str] = if rng.below(8) == 0 {
                    &octets
                } else {
                    &valid_octets
                };
                text.push_str(rng.pick(choices));
            }
            corpus.push(text);
        }
        let alphabet: Vec<char> = "0123456789abcdefABCDEF:.[]%".chars().collect();
        for _ in 0..20_000 {
            let length = rng.below(46);
            corpus.push(
                (0..length)
                    .map(|_| alphabet[rng.below(alphabet.len())])
                    .collect(),
            );
        }
        corpus
    }

    #[test]
    fn addresses_parse_exactly_as_the_standard_library_parses_them() {
        let mut accepted = [0; 2];
        for text in address_corpus() {
            let ours = parse_ip(&text);
            assert_eq!(ours, text.parse::<IpAddr>().ok(), "{text:?}");
            assert_eq!(
                parse_v4(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok(),
                "{text:?}"
            );
            assert_eq!(
                parse_v6(text.as_bytes()),
                text.parse::<Ipv6Addr>().ok(),
                "{text:?}"
            );
            match ours {
                Some(IpAddr::V4(_)) => accepted[0] += 1,
                Some(IpAddr::V6(_)) => accepted[1] += 1,
                None => {}
            }
        }
        // The corpus must exercise acceptance as well as refusal.
        assert!(accepted.iter().all(|count| *count > 1_000), "{accepted:?}");
    }

    #[test]
    fn source_addresses_parse_as_the_standard_library_parses_them() {
        let mut rng = Lcg(0x5eed);
        let before = ["", "[", " ", "\t"];
        let after = [
            "",
            "]",
            ":80",
            "]:80",
            "]:65535",
            "]:65536",
            ":65536",
            ":0080",
            ":",
            "%eth0",
            "%eth0]:80",
            "%1]:80",
            "%]:80",
            "]x",
            " ",
            ":80 ",
            ":+80",
        ];
        for address in address_corpus() {
            let text = format!("{}{address}{}", rng.pick(&before), rng.pick(&after));
            for candidate in [&address, &text] {
                assert_eq!(
                    parse_source_address(candidate.as_bytes()),
                    std_source_address(candidate.as_bytes()),
                    "{candidate:?}"
                );
            }
        }
    }

    #[test]
    fn property_paths_parse_and_split() {
        let path = PropertyPath::parse("caller.id").unwrap();
        assert_eq!(path.segments(), vec!["caller", "id"]);
        assert_eq!(property_segments("a.b.c"), vec!["a", "b", "c"]);
        assert_eq!(property_segments("plain"), vec!["plain"]);
        assert_eq!(property_segments("a..b."), vec!["a", "", "b", ""]);
        assert_eq!(path.to_string(), "caller.id");
        assert_eq!(
            PropertyPath::parse("source.principal").unwrap().segments(),
            vec!["source", "principal"]
        );
        assert_eq!(
            PropertyPath::parse("connection.uri_san_peer_certificate")
                .unwrap()
                .as_str(),
            "connection.uri_san_peer_certificate"
        );
        for bad in [
            "",
            ".",
            "caller.",
            ".id",
            "caller..id",
            "caller id",
            "caller.id\n",
            "caller/id",
        ] {
            assert_eq!(
                PropertyPath::parse(bad),
                Err(PropertyPathError::Syntax),
                "{bad:?}"
            );
        }
        for client in ["request.headers.x-user", "request.useragent", "request"] {
            assert_eq!(
                PropertyPath::parse(client),
                Err(PropertyPathError::ClientWritten),
                "{client:?}"
            );
        }
    }

    #[test]
    fn allow_matching_splits_trims_and_ignores_ascii_case() {
        let list = allow(&["alice@example.com", "tag:ci"]);
        for passing in [
            &b"alice@example.com"[..],
            b"ALICE@EXAMPLE.COM",
            b" \talice@example.com ",
            b"tag:ci",
            b"tag:ci,tag:server",
            b"tag:server, TAG:CI",
            b",,tag:ci,",
        ] {
            assert_eq!(identity_allowed(passing, &list), Ok(()), "{passing:?}");
        }
        for refused in [
            &b"eve@example.com"[..],
            b"tag:server",
            b"alice@example.com.evil",
            b"alice@example.co",
            b"tag:ci2",
            b"alice@example.com;tag:ci",
            b"alice",
        ] {
            assert_eq!(
                identity_allowed(refused, &list),
                Err(DenyReason::IdentityNotAllowed),
                "{refused:?}"
            );
        }
        for blank in [&b""[..], b" ", b",", b" , \t"] {
            assert_eq!(
                identity_allowed(blank, &list),
                Err(DenyReason::IdentityMissing),
                "{blank:?}"
            );
        }
        // Non-ASCII bytes compare exactly; they never panic.
        assert_eq!(
            identity_allowed(&[0xff, b',', 0xc3], &list),
            Err(DenyReason::IdentityNotAllowed)
        );
    }

    #[test]
    fn property_identity_is_read_from_the_facts_never_from_headers() {
        let policy = property_policy(&[], Requirement::All);
        assert_eq!(
            policy.identity_property().map(PropertyPath::as_str),
            Some("caller.id")
        );
        assert!(!policy.needs_source_address());
        let alice = facts(None, Some("alice@example.com"));
        assert_eq!(policy.check(&list(&[]), Some(&alice)), Ok(()));
        let ci = facts(None, Some("tag:ci,tag:server"));
        assert_eq!(policy.check(&list(&[]), Some(&ci)), Ok(()));
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(None, Some("eve@example.com")))),
            Err(DenyReason::IdentityNotAllowed)
        );
        // A client header named like the property, or like Tailscale's identity header, is not
        // a source: without the property the caller has no identity.
        let forged = list(&[
            ("caller.id", "alice@example.com"),
            ("caller-id", "alice@example.com"),
            ("tailscale-user-login", "alice@example.com"),
        ]);
        assert_eq!(
            policy.check(&forged, Some(&facts(None, None))),
            Err(DenyReason::IdentityMissing)
        );
        assert_eq!(
            policy.check(&forged, None),
            Err(DenyReason::IdentityMissing)
        );
        assert_eq!(
            policy.check(&forged, Some(&facts(None, Some("eve@example.com")))),
            Err(DenyReason::IdentityNotAllowed)
        );
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(None, Some("")))),
            Err(DenyReason::IdentityMissing)
        );
    }

    #[test]
    fn trusted_header_identity() {
        let policy = header_policy();
        assert_eq!(policy.identity_property(), None);
        assert_eq!(
            policy.check(&list(&[("X-User", " Alice@Example.com")]), None),
            Ok(())
        );
        assert_eq!(
            policy.check(&list(&[("x-user", "eve@example.com")]), None),
            Err(DenyReason::IdentityNotAllowed)
        );
        assert_eq!(
            policy.check(&list(&[]), None),
            Err(DenyReason::IdentityMissing)
        );
        assert_eq!(
            policy.check(
                &list(&[
                    ("x-user", "alice@example.com"),
                    ("x-user", "eve@example.com")
                ]),
                None
            ),
            Err(DenyReason::IdentityAmbiguous)
        );
        // The property is not this policy's source.
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(None, Some("alice@example.com")))),
            Err(DenyReason::IdentityMissing)
        );
    }

    #[test]
    fn identity_source_tells_usage_where_the_caller_is() {
        assert_eq!(identity_source(None), None);
        let sources = AccessPolicy {
            identity: None,
            source_ranges: Some(vec![Cidr::parse("10.0.0.0/8").unwrap()]),
            require: Requirement::All,
        };
        assert_eq!(identity_source(Some(&sources)), None);
        assert!(matches!(
            identity_source(Some(&property_policy(&[], Requirement::All))),
            Some(IdentitySource::Property(path)) if path.as_str() == "caller.id"
        ));
        assert_eq!(
            identity_source(Some(&header_policy())),
            Some(&IdentitySource::TrustedHeader("x-user".into()))
        );
        assert_eq!(DEFAULT_CALLER_PROPERTIES, ["caller.id", "source.principal"]);
    }

    #[test]
    fn require_all_needs_every_check() {
        let policy = property_policy(&["100.64.0.0/10"], Requirement::All);
        let inside = facts(Some("100.100.1.1:5555"), Some("alice@example.com"));
        assert_eq!(policy.check(&list(&[]), Some(&inside)), Ok(()));
        assert_eq!(
            policy.check(
                &list(&[]),
                Some(&facts(Some("192.168.1.1:1"), Some("alice@example.com")))
            ),
            Err(DenyReason::SourceNotAllowed)
        );
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(None, Some("alice@example.com")))),
            Err(DenyReason::SourceUnknown)
        );
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(Some("100.100.1.1:1"), None))),
            Err(DenyReason::IdentityMissing)
        );
    }

    #[test]
    fn require_any_needs_one_check() {
        let policy = property_policy(&["127.0.0.0/8", "::1"], Requirement::Any);
        assert_eq!(
            policy.check(
                &list(&[]),
                Some(&facts(Some("192.168.1.1:1"), Some("alice@example.com")))
            ),
            Ok(())
        );
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(Some("[::1]:80"), None))),
            Ok(())
        );
        assert_eq!(
            policy.check(&list(&[]), Some(&facts(Some("192.168.1.1:1"), None))),
            Err(DenyReason::IdentityMissing)
        );
        assert!(policy.needs_source_address());
    }
}
