//! Client addresses, as the login limits count them: which address a request comes from (the TCP
//! peer, or what trusted proxies say in `X-Forwarded-For` or RFC 7239 `Forwarded`), and the key it
//! is counted under (an IPv4 address, or the /64 of an IPv6 one). Pure functions over header
//! values; the HTTP layer reads the headers.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// A block of addresses in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare address is the
/// block of that one address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not an address, or not `address/length`.
    #[error("{0:?} is not an address or a CIDR block such as 10.0.0.0/8 or 2001:db8::/32")]
    Syntax(String),
    /// A prefix longer than the address.
    #[error("{0:?}: the prefix length must be at most 32 for IPv4, 128 for IPv6")]
    Prefix(String),
    /// Bits set after the prefix: most likely a typo.
    #[error("{given:?} has bits set after its prefix; the block is {block}")]
    HostBits {
        /// As written.
        given: String,
        /// The block it would be.
        block: String,
    },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax(text.to_owned());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| syntax())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) if prefix.bytes().all(|byte| byte.is_ascii_digit()) && !prefix.is_empty() => {
                prefix.parse::<u8>().ok().filter(|prefix| *prefix <= bits).ok_or(CidrError::Prefix(text.to_owned()))?
            }
            Some(_) => return Err(syntax()),
        };
        let block = Self { network: mask(network, prefix), prefix };
        if block.network != network {
            return Err(CidrError::HostBits { given: text.to_owned(), block: block.to_string() });
        }
        Ok(block)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    /// True when `address` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        address.is_ipv4() == self.network.is_ipv4() && mask(address, self.prefix) == self.network
    }
}

/// `address` with every bit after the first `prefix` cleared.
fn mask(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4).checked_shr(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(bits.checked_shl(32 - u32::from(prefix)).unwrap_or(0).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6).checked_shr(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(bits.checked_shl(128 - u32::from(prefix)).unwrap_or(0).into())
        }
    }
}

/// The key a client address is counted under: the IPv4 address itself (an IPv4-mapped IPv6
/// address is IPv4), or the /64 of an IPv6 address, since one subscriber usually holds a whole
/// /64 and picks any address in it.
pub fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{}/64", Ipv6Addr::from(u128::from(v6) >> 64 << 64)),
    }
}

/// The address of the client of a request that came from `peer` (the TCP peer) with the
/// `X-Forwarded-For` header values `forwarded_for` and the `Forwarded` (RFC 7239) header values
/// `forwarded`, when the proxies in `trusted` are trusted to say it.
///
/// A peer that is not a trusted proxy is the client: its headers are not read. From a trusted
/// proxy, a header is read from its right end, each proxy having appended the address it saw:
/// the first address that is not a trusted proxy is the client (an address left of it could be
/// anything the client sent); when every one is trusted, the left-most. When both headers are
/// present they must name the same client (a proxy that maintains one passes the other on as the
/// client sent it). A header that cannot be read that far (a malformed element, an `unknown` or
/// obfuscated node, a `Forwarded` element without `for`) makes the peer the client.
pub fn client_address(peer: IpAddr, forwarded_for: &[&str], forwarded: &[&str], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|block| block.contains(address));
    if !is_trusted(peer) {
        return peer;
    }
    let from_header = |values: &[&str], node: fn(&str) -> Option<IpAddr>| -> Option<Option<IpAddr>> {
        if values.is_empty() {
            return Some(None);
        }
        let elements: Vec<&str> = values.iter().flat_map(|value| split_outside_quotes(value, ',')).collect();
        let mut leftmost = None;
        for element in elements.iter().rev() {
            let address = node(element.trim())?;
            if !is_trusted(address) {
                return Some(Some(address));
            }
            leftmost = Some(address);
        }
        Some(leftmost)
    };
    match (from_header(forwarded_for, forwarded_for_node), from_header(forwarded, forwarded_node)) {
        (Some(Some(one)), Some(Some(other))) if one != other => peer,
        (Some(Some(client)), Some(_)) | (Some(None), Some(Some(client))) => client,
        _ => peer,
    }
}

/// An element of `X-Forwarded-For`: an address, possibly with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn forwarded_for_node(element: &str) -> Option<IpAddr> {
    node_address(element)
}

/// The `for=` of an element of `Forwarded` (RFC 7239 §4, §6): a token or a quoted string, an
/// address with an optional port, IPv6 in brackets.
fn forwarded_node(element: &str) -> Option<IpAddr> {
    let mut found = None;
    for pair in split_outside_quotes(element, ';') {
        let (name, value) = pair.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("for") {
            if found.is_some() {
                return None;
            }
            found = Some(unquote(value.trim())?);
        }
    }
    node_address(&found?)
}

/// A node as an address: `a.b.c.d`, `a.b.c.d:port`, a bare IPv6 address, `[v6]` or `[v6]:port`.
fn node_address(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return address.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(address) = node.parse::<IpAddr>() {
        return Some(address);
    }
    let (address, port) = node.rsplit_once(':')?;
    let address: IpAddr = address.parse().ok().filter(IpAddr::is_ipv4)?;
    is_port(port).then_some(address)
}

fn is_port(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_digit()) && text.parse::<u16>().is_ok()
}

/// A token, or a quoted string with its backslash escapes undone.
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return (!value.is_empty() && !value.contains(['"', '\\'])).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut text = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => text.push(chars.next()?),
            '"' => return None,
            c => text.push(c),
        }
    }
    Some(text)
}

/// `text` split at each `separator` that is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (index, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..index]);
                start = index + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn cidr_blocks_parse_and_contain() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("10.0.0.0/8", &["10.0.0.1", "10.255.255.255", "::ffff:10.1.2.3"], &["11.0.0.0", "::a00:1"]),
            ("192.0.2.7", &["192.0.2.7"], &["192.0.2.8"]),
            ("0.0.0.0/0", &["1.2.3.4", "255.255.255.255"], &["::1"]),
            ("2001:db8::/32", &["2001:db8::1", "2001:db8:ffff::"], &["2001:db9::", "10.0.0.1"]),
            ("::1", &["::1"], &["::2", "127.0.0.1"]),
            ("::/0", &["::1", "2001:db8::1"], &["127.0.0.1"]),
        ];
        for (text, inside, outside) in cases {
            let block: Cidr = text.parse().unwrap_or_else(|error| panic!("{text}: {error}"));
            for address in *inside {
                assert!(block.contains(ip(address)), "{address} in {text}");
            }
            for address in *outside {
                assert!(!block.contains(ip(address)), "{address} not in {text}");
            }
        }
        assert_eq!("192.0.2.7".parse::<Cidr>().expect("valid").to_string(), "192.0.2.7/32");
        for (bad, rule) in [
            ("10.0.0.1/8", "the block is 10.0.0.0/8"),
            ("10.0.0.0/33", "at most 32"),
            ("2001:db8::/129", "at most 32 for IPv4, 128"),
            ("10.0.0.0/", "not an address"),
            ("10.0.0.0/+8", "not an address"),
            ("10.0.0.0/8/8", "not an address"),
            ("example.com", "not an address"),
            ("", "not an address"),
        ] {
            let refused = bad.parse::<Cidr>().expect_err(bad).to_string();
            assert!(refused.contains(rule), "{bad}: {refused}");
        }
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        for (address, key) in [
            ("198.51.100.7", "198.51.100.7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::1", "::/64"),
        ] {
            assert_eq!(address_key(ip(address)), key, "{address}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_address_from_a_trusted_proxy() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "2001:db8:ff::/48"].iter().map(|b| b.parse().expect("block")).collect();
        let proxy = "10.0.0.5";
        // (peer, X-Forwarded-For values, Forwarded values, client)
        let cases: &[(&str, &[&str], &[&str], &str)] = &[
            // No proxy trusted for this peer: headers are not read.
            ("192.0.2.1", &["203.0.113.9"], &[], "192.0.2.1"),
            ("192.0.2.1", &[], &["for=203.0.113.9"], "192.0.2.1"),
            // A trusted proxy without headers is the client.
            (proxy, &[], &[], proxy),
            // The right-most untrusted address; what the client wrote left of it is ignored.
            (proxy, &["203.0.113.9"], &[], "203.0.113.9"),
            (proxy, &["1.1.1.1, 203.0.113.9"], &[], "203.0.113.9"),
            (proxy, &["garbage, 203.0.113.9, 10.0.0.7"], &[], "203.0.113.9"),
            (proxy, &["1.1.1.1", "203.0.113.9, 10.0.0.7"], &[], "203.0.113.9"),
            (proxy, &["203.0.113.9:4711"], &[], "203.0.113.9"),
            (proxy, &["[2001:db8:1::7]:4711"], &[], "2001:db8:1::7"),
            (proxy, &["2001:db8:1::7, 2001:db8:ff::1"], &[], "2001:db8:1::7"),
            // Every hop trusted: the left-most.
            (proxy, &["10.0.0.9, 10.0.0.7"], &[], "10.0.0.9"),
            // RFC 7239.
            (proxy, &[], &["for=203.0.113.9;proto=https"], "203.0.113.9"),
            (proxy, &[], &["for=1.1.1.1, For=\"203.0.113.9:80\";by=10.0.0.5"], "203.0.113.9"),
            (proxy, &[], &["for=\"[2001:db8:1::7]:4711\""], "2001:db8:1::7"),
            (proxy, &[], &["for=\"x,y\", for=203.0.113.9"], "203.0.113.9"),
            // Both headers: they must agree.
            (proxy, &["203.0.113.9"], &["for=203.0.113.9"], "203.0.113.9"),
            (proxy, &["203.0.113.9"], &["for=198.51.100.1"], proxy),
            // What cannot be read falls back to the peer, never to a guess.
            (proxy, &["not-an-address"], &[], proxy),
            (proxy, &["203.0.113.9, "], &[], proxy),
            (proxy, &["203.0.113.9, 10.0.0.7:99999"], &[], proxy),
            (proxy, &["[2001:db8:1::7"], &[], proxy),
            (proxy, &[], &["for=unknown"], proxy),
            (proxy, &[], &["for=_hidden"], proxy),
            (proxy, &[], &["proto=https"], proxy),
            (proxy, &[], &["for=203.0.113.9;for=203.0.113.8"], proxy),
            (proxy, &[], &["for=\"203.0.113.9"], proxy),
            (proxy, &["203.0.113.9"], &["for=unknown"], proxy),
        ];
        for (peer, forwarded_for, forwarded, client) in cases {
            assert_eq!(
                client_address(ip(peer), forwarded_for, forwarded, &trusted),
                ip(client),
                "{peer} {forwarded_for:?} {forwarded:?}"
            );
        }
        assert_eq!(client_address(ip(proxy), &["203.0.113.9"], &[], &[]), ip(proxy), "nothing trusted by default");
    }
}
