//! In-process probes, no fork: a TCP connect, and an HTTP/1.1 GET over TCP or TLS, directly or
//! through a forward proxy, run every `interval` and debounced by rise/fall.
//!
//! Guarantees: each check is bounded by `timeout` as a whole (name resolution, connect, proxy
//! tunnel, TLS handshake, request and response head); a check reads the response head only,
//! never more than [`MAX_RESPONSE_HEAD`] bytes, and never the body; any failure, a certificate
//! that does not verify included, is a `Down` with its reason, never a panic.
//!
//! HTTP is hyper's HTTP/1.1 client on a fresh connection per check (`Connection: close`); TLS is
//! rustls with ring. Through a proxy an `http://` URL is sent in absolute form
//! (`GET http://origin/path HTTP/1.1`), as any client of a forward proxy such as Squid does, and
//! the proxy resolves the origin; an `https://` URL goes through a `CONNECT host:port` tunnel with
//! TLS inside it, end to end with the origin. The origin's certificate must chain to the
//! certificates of `ca_file`, or else to the system's trust store, and be valid for `server_name`,
//! or else for the URL's host (a DNS name is also sent as SNI; an IP address host sends no SNI
//! and needs an IP address SAN). The trust anchors are read when the first check needs them and
//! read again at each check until they load.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hav_proto::config::{ProbeUrl, UrlHost};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_rustls::TlsConnector;

use super::rise_fall::{InitialHealth, RiseFall};
use super::{Health, Reporter, TrackError};
use hav_proto::errors::chain;

/// Most bytes of a response read: its status line and headers (hyper's read buffer; hyper
/// refuses less than 8 KiB). The body is never read.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;
const _: () = assert!(MAX_RESPONSE_HEAD >= 8192, "hyper panics below 8 KiB");

/// Most headers accepted in a response head.
const MAX_RESPONSE_HEADERS: usize = 64;

const PRODUCT: &str = concat!("hav-agent/", env!("CARGO_PKG_VERSION"));

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

impl ProbeSchedule {
    /// What a schedule must be to run: positive interval and timeout.
    pub fn validate(&self) -> Result<(), String> {
        if self.interval.is_zero() {
            Err("interval must be positive".to_owned())
        } else if self.timeout.is_zero() {
            Err("timeout must be positive".to_owned())
        } else {
            Ok(())
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
    pub url: ProbeUrl,
    /// Accepted status codes; empty means `[200]`.
    pub expected_status: Vec<u16>,
    /// Send the request through this forward proxy.
    pub proxy: Option<SocketAddr>,
    /// `https://` only: trust the CA certificates of this PEM file instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// `https://` only: the name the certificate must be valid for, instead of the URL's host.
    pub server_name: Option<ServerName<'static>>,
    pub schedule: ProbeSchedule,
}

impl HttpSpec {
    /// What the spec must be to run, without looking at the host.
    pub fn validate(&self) -> Result<(), String> {
        self.schedule.validate()?;
        get_request(&self.url, self.proxy.is_some())?;
        if self.url.is_tls() {
            self.tls_server_name()?;
        }
        Ok(())
    }

    /// Whether the TLS trust anchors of an `https://` probe load on this host; the reason if not.
    /// A probe whose anchors do not load starts, and is down with this reason until they do.
    pub fn tls_problem(&self) -> Option<String> {
        if !self.url.is_tls() {
            return None;
        }
        tls_client_config(self.ca_file.as_deref()).err()
    }

    fn tls_server_name(&self) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => self.url.default_server_name(),
        }
    }
}

pub(crate) struct ProbeTracker {
    check: Check,
    schedule: ProbeSchedule,
}

enum Check {
    Tcp { host: String, port: u16 },
    Http(Box<HttpCheck>),
}

struct HttpCheck {
    url: ProbeUrl,
    proxy: Option<SocketAddr>,
    expected_status: Vec<u16>,
    /// `Some` for `https://` URLs.
    tls: Option<TlsCheck>,
}

struct TlsCheck {
    ca_file: Option<PathBuf>,
    server_name: ServerName<'static>,
    /// Built at the first check that loads the trust anchors.
    config: Option<Arc<ClientConfig>>,
}

impl ProbeTracker {
    pub(crate) fn tcp(spec: TcpSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        spec.schedule
            .validate()
            .map_err(|reason| invalid(reporter, reason))?;
        Ok(Self {
            check: Check::Tcp {
                host: spec.host,
                port: spec.port,
            },
            schedule: spec.schedule,
        })
    }

    pub(crate) fn http(spec: HttpSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        spec.validate()
            .map_err(|reason| invalid(reporter, reason))?;
        let tls = if spec.url.is_tls() {
            Some(TlsCheck {
                server_name: spec
                    .tls_server_name()
                    .map_err(|reason| invalid(reporter, reason))?,
                ca_file: spec.ca_file,
                config: None,
            })
        } else {
            None
        };
        let expected_status = if spec.expected_status.is_empty() {
            vec![200]
        } else {
            spec.expected_status
        };
        Ok(Self {
            check: Check::Http(Box::new(HttpCheck {
                url: spec.url,
                proxy: spec.proxy,
                expected_status,
                tls,
            })),
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

fn invalid(reporter: &Reporter, reason: String) -> TrackError {
    TrackError::InvalidSpec {
        name: reporter.name().to_owned(),
        reason,
    }
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
    async fn run(&mut self) -> Result<(), String> {
        let tls = match &mut self.tls {
            Some(tls) => Some((tls.config().await?, tls.server_name.clone())),
            None => None,
        };
        let tcp = match self.proxy {
            Some(proxy) => TcpStream::connect(proxy)
                .await
                .map_err(|error| format!("connect to proxy {proxy}: {error}"))?,
            None => match self.url.host() {
                UrlHost::Name(name) => connect(name, self.url.port()).await?,
                UrlHost::Ip(address) => connect(&address.to_string(), self.url.port()).await?,
            },
        };
        let request = get_request(&self.url, self.proxy.is_some())?;
        let status = match (tls, self.proxy) {
            (None, _) => send(tcp, request).await?,
            (Some((config, name)), None) => {
                send(handshake(config, name, tcp).await?, request).await?
            }
            (Some((config, name)), Some(proxy)) => {
                let tunnel = tunnel(tcp, &self.url, proxy).await?;
                send(handshake(config, name, tunnel).await?, request).await?
            }
        };
        if self.expected_status.contains(&status.as_u16()) {
            Ok(())
        } else {
            Err(format!(
                "status {}, expected one of {:?}",
                status.as_u16(),
                self.expected_status
            ))
        }
    }
}

impl TlsCheck {
    /// The client config, loading the trust anchors if no check has yet.
    async fn config(&mut self) -> Result<Arc<ClientConfig>, String> {
        if let Some(config) = &self.config {
            return Ok(config.clone());
        }
        let ca_file = self.ca_file.clone();
        // Reading the system store is a few hundred small files: off the runtime's thread.
        let loaded = tokio::task::spawn_blocking(move || tls_client_config(ca_file.as_deref()))
            .await
            .map_err(|error| format!("loading the TLS trust anchors: {error}"))??;
        self.config = Some(loaded.clone());
        Ok(loaded)
    }
}

/// The TLS client config of an `https://` probe: TLS 1.2 or 1.3 with ring, ALPN `http/1.1`,
/// no client certificate, trusting the certificates of `ca_file` or else the system's store.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_file {
        Some(path) => {
            hav_proto::transport::root_store(path).map_err(|error| format!("ca_file: {error}"))?
        }
        None => system_roots()?,
    };
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS set-up: {error}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The system's trust store (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the distribution's bundle, on
/// Debian `/etc/ssl/certs` from the ca-certificates package).
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no CA certificate in the system's trust store ({}); install ca-certificates or set ca_file",
            if errors.is_empty() {
                "it is empty".to_owned()
            } else {
                errors.join("; ")
            }
        ));
    }
    Ok(roots)
}

/// The GET of `url`: origin form, or absolute form for a plain `http://` URL through a proxy.
fn get_request(url: &ProbeUrl, through_proxy: bool) -> Result<Request<Empty<Bytes>>, String> {
    let target = if through_proxy && !url.is_tls() {
        url.absolute()
    } else {
        url.target().to_owned()
    };
    Request::get(target)
        .header(HOST, url.host_header())
        .header(USER_AGENT, PRODUCT)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|error| format!("cannot make a request of {url}: {error}"))
}

fn http1() -> hyper::client::conn::http1::Builder {
    let mut builder = hyper::client::conn::http1::Builder::new();
    builder
        .title_case_headers(true)
        .max_buf_size(MAX_RESPONSE_HEAD)
        .max_headers(MAX_RESPONSE_HEADERS);
    builder
}

/// Sends `request` on `io` and returns the status of the response, leaving its body unread.
async fn send<T>(io: T, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| http_failure(&error))?;
    let response = drive(connection, async {
        sender
            .send_request(request)
            .await
            .map_err(|error| http_failure(&error))
    })
    .await?;
    Ok(response.status())
}

/// Most bytes of a response body a real-server check reads to compare its digest.
pub const MAX_CHECKED_BODY: usize = 1024 * 1024;

/// Sends `request` on `io` and returns the status of the response and, with `read_body`, its
/// body (at most [`MAX_CHECKED_BODY`] bytes; a longer one is a failure).
pub(crate) async fn get_once<T>(
    io: T,
    request: Request<Empty<Bytes>>,
    read_body: bool,
) -> Result<(StatusCode, Option<Bytes>), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt as _;
    let (mut sender, connection) = http1()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|error| http_failure(&error))?;
    drive(connection, async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| http_failure(&error))?;
        let status = response.status();
        if !read_body {
            return Ok((status, None));
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_CHECKED_BODY)
            .collect()
            .await
            .map_err(|error| format!("reading the body: {error}"))?
            .to_bytes();
        Ok((status, Some(body)))
    })
    .await
}

/// A GET request for a real-server check: origin form, `Host: host`, `Connection: close`.
pub(crate) fn check_request(path: &str, host: &str) -> Result<Request<Empty<Bytes>>, String> {
    Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, PRODUCT)
        .header(ACCEPT, "*/*")
        .header(CONNECTION, "close")
        .body(Empty::new())
        .map_err(|error| format!("cannot make a request of {host}{path}: {error}"))
}

/// Opens a `CONNECT` tunnel to the URL's host and port through the proxy on `tcp`.
async fn tunnel(
    tcp: TcpStream,
    url: &ProbeUrl,
    proxy: SocketAddr,
) -> Result<TokioIo<hyper::upgrade::Upgraded>, String> {
    let authority = url.connect_authority();
    let request = Request::connect(authority.as_str())
        .header(HOST, authority.as_str())
        .header(USER_AGENT, PRODUCT)
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("cannot make a CONNECT request for {authority}: {error}"))?;
    let (mut sender, connection) = http1()
        .handshake(TokioIo::new(tcp))
        .await
        .map_err(|error| http_failure(&error))?;
    let upgraded = drive(connection.with_upgrades(), async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("proxy {proxy}: {}", http_failure(&error)))?;
        if !response.status().is_success() {
            return Err(format!(
                "proxy {proxy} refused CONNECT {authority}: status {}",
                response.status().as_u16()
            ));
        }
        hyper::upgrade::on(response)
            .await
            .map_err(|error| format!("proxy {proxy}: tunnel to {authority}: {}", chain(&error)))
    })
    .await?;
    Ok(TokioIo::new(upgraded))
}

pub(crate) async fn handshake<T>(
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
    io: T,
) -> Result<tokio_rustls::client::TlsStream<T>, String>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let name = server_name.to_str().into_owned();
    TlsConnector::from(config)
        .connect(server_name, io)
        .await
        .map_err(|error| format!("TLS handshake with {name}: {}", chain(&error)))
}

/// Runs `work` while polling the connection that serves it. The connection ending first (the
/// peer closed, or the connection was handed to an upgrade) leaves `work` to finish or fail on
/// its own; a connection error is the check's failure.
async fn drive<T, C>(
    connection: C,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    tokio::pin!(work);
    tokio::select! {
        biased;
        done = &mut work => done,
        ended = &mut connection => match ended {
            Ok(()) => work.await,
            Err(error) => Err(http_failure(&error)),
        },
    }
}

/// A hyper error as a reason; a response that is not HTTP says so in the words operators search.
fn http_failure(error: &hyper::Error) -> String {
    if error.is_parse() || error.is_parse_status() {
        format!("malformed status line or headers: {}", chain(error))
    } else {
        chain(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> ProbeUrl {
        text.parse().expect("a valid probe URL")
    }

    #[test]
    fn requests_are_origin_form_direct_and_absolute_form_through_a_proxy() {
        let plain = url("http://origin.example:8080/check?x=1");
        let direct = get_request(&plain, false).expect("request");
        assert_eq!(direct.uri(), "/check?x=1");
        assert_eq!(direct.headers()[HOST], "origin.example:8080");
        assert_eq!(direct.headers()[CONNECTION], "close");
        let proxied = get_request(&plain, true).expect("request");
        assert_eq!(proxied.uri(), "http://origin.example:8080/check?x=1");
        // Inside a CONNECT tunnel the origin sees an ordinary request.
        let tls = url("https://[2001:db8::1]/health");
        let tunnelled = get_request(&tls, true).expect("request");
        assert_eq!(tunnelled.uri(), "/health");
        assert_eq!(tunnelled.headers()[HOST], "[2001:db8::1]");
    }

    #[test]
    fn every_target_the_config_accepts_makes_a_request() {
        for byte in 0x21u8..=0x7e {
            let c = char::from(byte);
            for text in [
                format!("http://a.example/p{c}q"),
                format!("http://a.example/p?q{c}r"),
                format!("https://[::1]:8443/{c}"),
            ] {
                let Ok(parsed) = ProbeUrl::parse(&text) else {
                    continue;
                };
                for proxy in [false, true] {
                    assert!(
                        get_request(&parsed, proxy).is_ok(),
                        "{text} (proxy {proxy}) passed the config but makes no request"
                    );
                }
            }
        }
    }

    #[test]
    fn the_server_name_is_the_override_or_the_url_host() {
        let spec = |text: &str, server_name: Option<&str>| HttpSpec {
            url: url(text),
            expected_status: Vec::new(),
            proxy: None,
            ca_file: None,
            server_name: server_name
                .map(|name| ServerName::try_from(name.to_owned()).expect("a valid server name")),
            schedule: ProbeSchedule::default(),
        };
        let name = |spec: HttpSpec| {
            spec.tls_server_name()
                .map(|name| name.to_str().into_owned())
        };
        assert_eq!(
            name(spec("https://web.example/", None)),
            Ok("web.example".into())
        );
        assert_eq!(
            name(spec("https://198.51.100.7/", None)),
            Ok("198.51.100.7".into())
        );
        assert_eq!(
            name(spec("https://198.51.100.7/", Some("web.example"))),
            Ok("web.example".into())
        );
        assert!(matches!(
            spec("https://198.51.100.7/", None).tls_server_name(),
            Ok(ServerName::IpAddress(_))
        ));
    }

    #[test]
    fn a_missing_ca_file_is_a_reason_not_a_panic() {
        let reason = tls_client_config(Some(Path::new("/nonexistent/hav-probe-ca.pem")))
            .expect_err("no such file");
        assert!(reason.starts_with("ca_file: "), "{reason}");
        assert!(reason.contains("/nonexistent/hav-probe-ca.pem"), "{reason}");
    }
}
