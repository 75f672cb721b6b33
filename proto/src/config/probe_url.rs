//! The URL an HTTP probe fetches, parsed once when the config is validated.
//!
//! Guarantees: a [`ProbeUrl`] has the scheme `http` or `https`, a host (a name, an IPv4 address
//! or a bracketed IPv6 address), a port 1..=65535 (80 or 443 when not written) and a request
//! target of printable ASCII that any HTTP/1.1 client sends as it is; its text is kept as
//! written, so the canonical config round-trips.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rustls::pki_types::{DnsName, ServerName};

/// Longest request target (path and query) accepted.
pub const MAX_TARGET_LEN: usize = 4096;

/// A validated `http://` or `https://` probe URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeUrl {
    text: String,
    scheme: Scheme,
    host: UrlHost,
    port: u16,
    target: String,
}

/// The scheme of a [`ProbeUrl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// The host of a [`ProbeUrl`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UrlHost {
    /// A DNS name (resolved at every check, or by the proxy).
    Name(String),
    Ip(IpAddr),
}

impl Scheme {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for UrlHost {
    /// A name as written, an IPv4 address, or an IPv6 address in brackets (the URL form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlHost::Name(name) => f.write_str(name),
            UrlHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            UrlHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

impl ProbeUrl {
    /// Parses `http[s]://host[:port][/path][?query][#fragment]`; the fragment is dropped, as a
    /// client never sends it. The error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err("the scheme must be http:// or https://".to_owned());
        };
        let (authority, target) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (host, port) = parse_authority(authority, scheme.default_port())?;
        let target = target.split('#').next().unwrap_or_default();
        let target = match target.as_bytes().first() {
            None => "/".to_owned(),
            Some(b'?') => format!("/{target}"),
            Some(_) => target.to_owned(),
        };
        if let Some(bad) = target.chars().find(|c| !target_char(*c)) {
            return Err(format!(
                "the path holds {bad:?}; percent-encode spaces, quotes, <, >, ` and non-ASCII characters"
            ));
        }
        if target.len() > MAX_TARGET_LEN {
            return Err(format!(
                "the path and query are longer than {MAX_TARGET_LEN} bytes"
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            scheme,
            host,
            port,
            target,
        })
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Whether the probe speaks TLS to the origin.
    pub fn is_tls(&self) -> bool {
        self.scheme == Scheme::Https
    }

    pub fn host(&self) -> &UrlHost {
        &self.host
    }

    /// The port, 80 or 443 when the URL gives none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The origin-form request target: starts with `/`, holds any query, never a fragment.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `host[:port]` as the `Host` header carries it: the port only when not the scheme's default.
    pub fn host_header(&self) -> String {
        if self.port == self.scheme.default_port() {
            self.host.to_string()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `host:port` with the port always given: the target of a proxy `CONNECT`.
    pub fn connect_authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The name a server certificate must be valid for when the config gives none: the host,
    /// as a DNS name (also sent as SNI) or as an IP address (no SNI; an IP address SAN).
    pub fn default_server_name(&self) -> Result<ServerName<'static>, String> {
        match &self.host {
            UrlHost::Ip(address) => Ok(ServerName::IpAddress((*address).into())),
            UrlHost::Name(name) => DnsName::try_from(name.as_str())
                .map(|name| ServerName::DnsName(name.to_owned()))
                .map_err(|_| format!("host {name:?} is not a name a certificate can be valid for")),
        }
    }

    /// The absolute form (`http://host[:port]/path?query`) a forward proxy is sent.
    pub fn absolute(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(),
            self.target
        )
    }
}

impl FromStr for ProbeUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for ProbeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; no user information.
fn parse_authority(text: &str, default_port: u16) -> Result<(UrlHost, u16), String> {
    if text.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    if text.contains('@') {
        return Err("user information (`user@`) is not supported in a probe URL".to_owned());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 host must be closed by `]`")?;
        let address: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the IPv6 host"))?,
            ),
        };
        (UrlHost::Ip(IpAddr::V6(address)), port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        if host.is_empty() {
            return Err("the URL has no host".to_owned());
        }
        let host = match host.parse::<Ipv4Addr>() {
            Ok(v4) => UrlHost::Ip(IpAddr::V4(v4)),
            Err(_) => UrlHost::Name(dns_name(host)?),
        };
        (host, port)
    };
    let port = match port {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(|| format!("port {port:?} is not 1..=65535"))?,
    };
    Ok((host, port))
}

/// Letters, digits, `-` and `_` in non-empty labels separated by dots, at most 253 bytes.
fn dns_name(host: &str) -> Result<String, String> {
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(host.to_owned())
    } else {
        Err(format!(
            "{host:?} is not a host name or an IP address (IPv6 goes in brackets)"
        ))
    }
}

/// What a request target may hold unencoded: printable ASCII without `"`, `<`, `>` and `` ` ``.
fn target_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '`')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_scheme_host_port_and_target() {
        let url = ProbeUrl::parse("http://198.51.100.7:8080/health?deep=1#x").expect("valid");
        assert_eq!(url.scheme(), Scheme::Http);
        assert_eq!(
            url.host(),
            &UrlHost::Ip("198.51.100.7".parse().expect("ip"))
        );
        assert_eq!(url.port(), 8080);
        assert_eq!(url.target(), "/health?deep=1");
        assert_eq!(url.host_header(), "198.51.100.7:8080");
        assert_eq!(url.as_str(), "http://198.51.100.7:8080/health?deep=1#x");

        let url = ProbeUrl::parse("https://[2001:db8::1]").expect("valid");
        assert!(url.is_tls());
        assert_eq!(url.port(), 443);
        assert_eq!(url.target(), "/");
        assert_eq!(url.host_header(), "[2001:db8::1]");
        assert_eq!(url.connect_authority(), "[2001:db8::1]:443");

        let url = ProbeUrl::parse("http://origin.example?x").expect("valid");
        assert_eq!(url.target(), "/?x");
        assert_eq!(url.host(), &UrlHost::Name("origin.example".into()));
        assert_eq!(url.absolute(), "http://origin.example/?x");

        let url = ProbeUrl::parse("https://web.example:8443/a").expect("valid");
        assert_eq!(url.absolute(), "https://web.example:8443/a");
        assert_eq!(url.connect_authority(), "web.example:8443");
    }

    #[test]
    fn malformed_urls_are_refused_with_a_reason() {
        for (bad, reason) in [
            ("ftp://a/", "scheme"),
            ("HTTP://a/", "scheme"),
            ("http://", "no host"),
            ("https:///path", "no host"),
            ("http://a:99999/", "port"),
            ("http://a:0/", "port"),
            ("http://a:/", "port"),
            ("http://a b/", "not a host name"),
            ("http://a..b/", "not a host name"),
            ("http://user@a/", "user information"),
            ("http://[::1/", "closed"),
            ("http://[fe80::1%25eth0]/", "not an IPv6 address"),
            ("http://[::1]x/", "after the IPv6 host"),
            ("http://a/b c", "percent-encode"),
            ("http://a/<script>", "percent-encode"),
            ("http://a/\u{e9}", "percent-encode"),
        ] {
            let error = ProbeUrl::parse(bad).expect_err(bad);
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }
}
