//! In-process probes, no fork: a TCP connect and an HTTP/1.1 GET, optionally through a forward
//! proxy, run every `interval` and debounced by rise/fall.
//!
//! Guarantees: each check is bounded by `timeout` (name resolution, connect, request and status
//! line together); a check never reads more than [`MAX_STATUS_LINE`] bytes of a response; any
//! answer we cannot parse is a failure with its reason, never a panic.
//!
//! The HTTP client is a few dozen lines written here rather than a crate: a health check needs
//! only a request line, `Host`, `Connection: close` and the response's status code. Through a
//! proxy it sends the absolute URL in the request line (`GET http://origin/path HTTP/1.1`), as
//! any client of a forward proxy such as Squid does, and the proxy resolves the origin. Only
//! `http://` URLs are supported (no TLS).

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use super::rise_fall::{InitialHealth, RiseFall};
use super::{Health, Reporter, TrackError};

/// Longest status line (with what arrives with it) read from a server.
pub const MAX_STATUS_LINE: usize = 8 * 1024;

/// When and how often a probe runs and how its results are debounced.
#[derive(Debug, Clone)]
pub struct ProbeSchedule {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub initial: InitialHealth,
}

impl Default for ProbeSchedule {
    /// Every 2 s with a 1 s timeout; rise 1, fall 1; the first result decides.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
            initial: InitialHealth::FirstResult,
        }
    }
}

/// A TCP connect probe: up when `host:port` accepts a connection.
#[derive(Debug, Clone)]
pub struct TcpSpec {
    /// An IP address or a name (resolved at every check).
    pub host: String,
    pub port: u16,
    pub schedule: ProbeSchedule,
}

/// An HTTP GET probe: up when the status code is one of `expected_status`.
#[derive(Debug, Clone)]
pub struct HttpSpec {
    /// `http://host[:port][/path]`; the host may be a name, an IPv4 address or `[IPv6]`.
    pub url: String,
    /// Accepted status codes; empty means `[200]`.
    pub expected_status: Vec<u16>,
    /// Send the request to this forward proxy, `host:port` or `http://host:port`.
    pub proxy: Option<String>,
    pub schedule: ProbeSchedule,
}

pub(crate) struct ProbeTracker {
    check: Check,
    schedule: ProbeSchedule,
}

enum Check {
    Tcp { host: String, port: u16 },
    Http(HttpCheck),
}

struct HttpCheck {
    /// Where the connection goes: the origin, or the proxy.
    connect: Authority,
    request: Vec<u8>,
    expected_status: Vec<u16>,
}

impl ProbeTracker {
    pub(crate) fn tcp(spec: TcpSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        validate(&spec.schedule, reporter)?;
        Ok(Self {
            check: Check::Tcp {
                host: spec.host,
                port: spec.port,
            },
            schedule: spec.schedule,
        })
    }

    pub(crate) fn http(spec: HttpSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        validate(&spec.schedule, reporter)?;
        let invalid = |reason: String| TrackError::InvalidSpec {
            name: reporter.name().to_owned(),
            reason,
        };
        let url = HttpUrl::parse(&spec.url)
            .map_err(|reason| invalid(format!("url {:?}: {reason}", spec.url)))?;
        let proxy = spec
            .proxy
            .as_deref()
            .map(|proxy| {
                let bare = proxy
                    .strip_prefix("http://")
                    .unwrap_or(proxy)
                    .trim_end_matches('/');
                Authority::parse(bare, 80)
                    .map_err(|reason| invalid(format!("proxy {proxy:?}: {reason}")))
            })
            .transpose()?;
        let expected_status = if spec.expected_status.is_empty() {
            vec![200]
        } else {
            spec.expected_status
        };
        let request = url.request(proxy.is_some());
        Ok(Self {
            check: Check::Http(HttpCheck {
                connect: proxy.unwrap_or(url.authority),
                request,
                expected_status,
            }),
            schedule: spec.schedule,
        })
    }

    pub(crate) async fn run(mut self, mut reporter: Reporter) {
        let mut checker = RiseFall::new(
            self.schedule.rise,
            self.schedule.fall,
            self.schedule.initial,
        );
        let mut last_failure = String::from("not yet checked");
        if let Some(up) = checker.is_up()
            && reporter.report(health(up, &last_failure)).await.is_err()
        {
            return;
        }
        let mut ticks = tokio::time::interval(self.schedule.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = match tokio::time::timeout(self.schedule.timeout, self.check.run()).await {
                Ok(result) => result,
                Err(_) => Err(format!("timed out after {:?}", self.schedule.timeout)),
            };
            if let Err(reason) = &result {
                tracing::debug!(tracker = %reporter.name(), %reason, "probe failed");
                last_failure.clone_from(reason);
            }
            let up = checker.record(result.is_ok());
            if reporter.report(health(up, &last_failure)).await.is_err() {
                return;
            }
        }
    }
}

fn validate(schedule: &ProbeSchedule, reporter: &Reporter) -> Result<(), TrackError> {
    let reason = if schedule.interval.is_zero() {
        "interval must be positive"
    } else if schedule.timeout.is_zero() {
        "timeout must be positive"
    } else {
        return Ok(());
    };
    Err(TrackError::InvalidSpec {
        name: reporter.name().to_owned(),
        reason: reason.to_owned(),
    })
}

fn health(up: bool, last_failure: &str) -> Health {
    if up {
        Health::Up
    } else {
        Health::down(last_failure)
    }
}

impl Check {
    async fn run(&mut self) -> Result<(), String> {
        match self {
            Check::Tcp { host, port } => connect(host, *port).await.map(drop),
            Check::Http(http) => http.run().await,
        }
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port))
        .await
        .map_err(|error| format!("connect to {host} port {port}: {error}"))
}

impl HttpCheck {
    async fn run(&self) -> Result<(), String> {
        let Authority { host, port } = &self.connect;
        let mut stream = connect(host, *port).await?;
        stream
            .write_all(&self.request)
            .await
            .map_err(|error| format!("sending request: {error}"))?;
        let status = read_status(&mut stream).await?;
        if self.expected_status.contains(&status) {
            Ok(())
        } else {
            Err(format!(
                "status {status}, expected one of {:?}",
                self.expected_status
            ))
        }
    }
}

/// Reads up to the end of the status line and returns the status code.
async fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buffer = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(end) = buffer.windows(2).position(|pair| pair == b"\r\n") {
            return parse_status_line(&buffer[..end]);
        }
        if buffer.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| format!("reading response: {error}"))?;
        if read == 0 {
            return if buffer.is_empty() {
                Err("connection closed without a response".to_owned())
            } else {
                parse_status_line(&buffer)
            };
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let malformed = || {
        format!(
            "malformed status line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(64)])
        )
    };
    let line = std::str::from_utf8(line).map_err(|_| malformed())?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(malformed)?;
    if !version.starts_with("HTTP/1.") {
        return Err(malformed());
    }
    let code = parts.next().ok_or_else(malformed)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    code.parse().map_err(|_| malformed())
}

/// Host and port to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Authority {
    /// A name or an address, without brackets.
    host: String,
    port: u16,
}

impl Authority {
    /// `host`, `host:port`, `[v6]` or `[v6]:port`.
    fn parse(text: &str, default_port: u16) -> Result<Self, String> {
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("unclosed [")?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or("junk after ]")?),
            };
            (host, port)
        } else {
            match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        if host.is_empty() {
            return Err("empty host".to_owned());
        }
        if host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"/?#@".contains(&b))
        {
            return Err(format!("bad host {host:?}"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port.parse().map_err(|_| format!("bad port {port:?}"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Authority {
    /// The `Host` header form: the port only when it is not 80.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != 80 {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// A parsed `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpUrl {
    authority: Authority,
    /// Starts with `/`; includes any query.
    path: String,
}

impl HttpUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("only http:// URLs are supported")?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        let path = path.split('#').next().unwrap_or("/").to_owned();
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err("path holds whitespace or control characters".to_owned());
        }
        Ok(Self {
            authority: Authority::parse(authority, 80)?,
            path,
        })
    }

    /// The request bytes; through a proxy the request line carries the absolute URL.
    fn request(&self, through_proxy: bool) -> Vec<u8> {
        let target = if through_proxy {
            format!("http://{}{}", self.authority, self.path)
        } else {
            self.path.clone()
        };
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hav-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.authority
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_authority_and_path() {
        let url = HttpUrl::parse("http://198.51.100.7:8080/health?deep=1#x").expect("valid");
        assert_eq!(
            url.authority,
            Authority {
                host: "198.51.100.7".into(),
                port: 8080
            }
        );
        assert_eq!(url.path, "/health?deep=1");
        let url = HttpUrl::parse("http://[2001:db8::1]").expect("valid");
        assert_eq!(
            url.authority,
            Authority {
                host: "2001:db8::1".into(),
                port: 80
            }
        );
        assert_eq!(url.path, "/");
        assert_eq!(url.authority.to_string(), "[2001:db8::1]");
        let url = HttpUrl::parse("http://origin.example?x").expect("valid");
        assert_eq!(url.path, "/?x");
        for bad in [
            "https://a/",
            "http://",
            "http://a:99999/",
            "http://a b/",
            "http://[::1/",
            "http://a/b c",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_origin_form_direct_and_absolute_form_through_a_proxy() {
        let url = HttpUrl::parse("http://origin.example:8080/check").expect("valid");
        let direct = String::from_utf8(url.request(false)).expect("ascii");
        assert!(direct.starts_with("GET /check HTTP/1.1\r\nHost: origin.example:8080\r\n"));
        assert!(direct.contains("\r\nConnection: close\r\n") && direct.ends_with("\r\n\r\n"));
        let proxied = String::from_utf8(url.request(true)).expect("ascii");
        assert!(proxied.starts_with("GET http://origin.example:8080/check HTTP/1.1\r\n"));
    }

    #[test]
    fn status_lines_parse_strictly() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        for bad in [
            &b""[..],
            b"HTTP/2 200 OK",
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 abc",
            b"SSH-2.0-OpenSSH",
            b"\xff\xff",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
    }
}
