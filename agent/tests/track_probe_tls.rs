//! HTTPS probes against a real rustls server on 127.0.0.1 with certificates made here by rcgen:
//! the status decides, the certificate must chain to `ca_file` and be valid for the server name
//! (the override is sent as SNI, an IP address host sends none), a `CONNECT` proxy tunnels the
//! TLS end to end, and a server that never answers costs one timeout.

mod track_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hav_agent::track::{self, Health, HttpSpec, ProbeSchedule, TrackSpec, TrackerHandle};
use hav_proto::config::ProbeUrl;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use track_support::{TempDir, down_reason, next_health};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A CA and what it signed, with the CA certificate written as a PEM file.
struct Pki {
    _dir: TempDir,
    ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: TempDir, name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca_file = dir.join(&format!("{name}.pem"));
        std::fs::write(&ca_file, cert.pem()).expect("write the CA file");
        Self {
            _dir: dir,
            ca_file,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for these names and addresses, and its key.
    fn server(&self, sans: Vec<SanType>) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (
            cert.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("a DNS name"))
}

/// What the TLS server saw of one request.
#[derive(Debug)]
struct Seen {
    /// The SNI the client sent.
    sni: Option<String>,
    head: String,
}

/// A TLS server answering each request with the status in `status`.
struct TlsServer {
    address: SocketAddr,
    status: Arc<AtomicU16>,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl TlsServer {
    async fn start(cert: (CertificateDer<'static>, PrivateKeyDer<'static>)) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.0], cert.1)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
        let address = listener.local_addr().expect("local address");
        let status = Arc::new(AtomicU16::new(200));
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let answer = status.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let answer = answer.clone();
                let seen_tx = seen_tx.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to see.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_owned);
                    let head = read_head(&mut tls).await;
                    let code = answer.load(Ordering::SeqCst);
                    let response = format!(
                        "HTTP/1.1 {code} Whatever\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                    let _ = seen_tx.send(Seen { sni, head });
                });
            }
        });
        Self {
            address,
            status,
            seen,
        }
    }

    async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(track_support::SAFETY_NET, self.seen.recv())
            .await
            .expect("a request within the safety net")
            .expect("the server runs")
    }
}

/// The request head, up to the blank line.
async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn fast() -> ProbeSchedule {
    ProbeSchedule {
        interval: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        ..ProbeSchedule::default()
    }
}

fn spec(url: &str, ca_file: &Path) -> HttpSpec {
    HttpSpec {
        url: url.parse::<ProbeUrl>().expect("a valid probe URL"),
        expected_status: vec![200],
        proxy: None,
        ca_file: Some(ca_file.to_owned()),
        server_name: None,
        schedule: fast(),
    }
}

fn start(spec: HttpSpec) -> (TrackerHandle, mpsc::Receiver<track::TrackEvent>) {
    let (tx, rx) = mpsc::channel(16);
    let handle = track::spawn("probe:tls", TrackSpec::Http(spec), tx).expect("spawn");
    (handle, rx)
}

#[tokio::test]
async fn https_probe_is_up_on_the_expected_status_and_down_on_another() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    let mut server = TlsServer::start(pki.server(vec![SanType::IpAddress(LOCALHOST)])).await;
    let port = server.address.port();
    let (_tracker, mut events) = start(spec(
        &format!("https://127.0.0.1:{port}/health?deep=1"),
        &pki.ca_file,
    ));

    assert_eq!(next_health(&mut events).await, Health::Up);
    let seen = server.next_seen().await;
    // An IP address host: the certificate's IP SAN is checked and no SNI is sent (RFC 6066).
    assert_eq!(seen.sni, None, "{seen:?}");
    assert!(
        seen.head.starts_with("GET /health?deep=1 HTTP/1.1\r\n"),
        "{seen:?}"
    );
    assert!(
        seen.head
            .contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{seen:?}"
    );

    server.status.store(503, Ordering::SeqCst);
    let down = next_health(&mut events).await;
    assert!(
        down_reason(&down).contains("status 503, expected one of [200]"),
        "{down:?}"
    );
    server.status.store(200, Ordering::SeqCst);
    assert_eq!(next_health(&mut events).await, Health::Up);
}

#[tokio::test]
async fn https_probe_is_down_on_a_certificate_from_another_ca() {
    let trusted = Pki::new(TempDir::new(), "trusted-ca");
    let other = Pki::new(TempDir::new(), "other-ca");
    let server = TlsServer::start(other.server(vec![SanType::IpAddress(LOCALHOST)])).await;
    let (_tracker, mut events) = start(spec(
        &format!("https://127.0.0.1:{}/", server.address.port()),
        &trusted.ca_file,
    ));

    let down = next_health(&mut events).await;
    let reason = down_reason(&down);
    assert!(
        reason.contains("TLS handshake with 127.0.0.1") && reason.contains("UnknownIssuer"),
        "{down:?}"
    );
}

#[tokio::test]
async fn https_probe_is_down_on_a_certificate_for_another_name() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    let server = TlsServer::start(pki.server(vec![dns("web.example")])).await;
    let port = server.address.port();
    // The URL's IP address is not in the certificate.
    let (_by_address, mut by_address) =
        start(spec(&format!("https://127.0.0.1:{port}/"), &pki.ca_file));
    // Nor is the configured name.
    let mut wrong_name = spec(&format!("https://127.0.0.1:{port}/"), &pki.ca_file);
    wrong_name.server_name = Some(ServerName::try_from("other.example").expect("name"));
    let (_by_name, mut by_name) = start(wrong_name);

    for (events, name) in [
        (&mut by_address, "127.0.0.1"),
        (&mut by_name, "other.example"),
    ] {
        let down = next_health(events).await;
        let reason = down_reason(&down);
        assert!(
            reason.contains(&format!("TLS handshake with {name}"))
                && reason.contains("not valid for name"),
            "{down:?}"
        );
    }
}

#[tokio::test]
async fn https_probe_checks_and_sends_the_server_name_override() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    let mut server = TlsServer::start(pki.server(vec![dns("web.example")])).await;
    let port = server.address.port();
    let mut spec = spec(&format!("https://127.0.0.1:{port}/"), &pki.ca_file);
    spec.server_name = Some(ServerName::try_from("web.example").expect("name"));
    let (_tracker, mut events) = start(spec);

    assert_eq!(next_health(&mut events).await, Health::Up);
    let seen = server.next_seen().await;
    assert_eq!(seen.sni.as_deref(), Some("web.example"), "{seen:?}");
    // The Host header still names the URL's authority.
    assert!(
        seen.head
            .contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{seen:?}"
    );
}

/// A forward proxy that answers `CONNECT` with 200 (or `refuse` with 403) and then relays bytes
/// to `origin`, whatever host the request named (so `.invalid` names work). Reports each
/// request head.
async fn connect_proxy(
    origin: SocketAddr,
    refuse: bool,
) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let (heads_tx, heads) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let heads_tx = heads_tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut client).await;
                let is_connect = head.starts_with("CONNECT ");
                let _ = heads_tx.send(head);
                if refuse || !is_connect {
                    let _ = client
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let Ok(mut upstream) = TcpStream::connect(origin).await else {
                    let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (address, heads)
}

#[tokio::test]
async fn https_probe_through_a_forward_proxy_tunnels_with_connect() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    let mut server = TlsServer::start(pki.server(vec![dns("origin.invalid")])).await;
    let port = server.address.port();
    let (proxy, mut heads) = connect_proxy(server.address, false).await;
    // `.invalid` never resolves (RFC 6761): only the proxy may look at the origin.
    let mut through = spec(
        &format!("https://origin.invalid:{port}/check"),
        &pki.ca_file,
    );
    through.proxy = Some(proxy);
    let (_tracker, mut events) = start(through);

    assert_eq!(next_health(&mut events).await, Health::Up);
    let head = heads.recv().await.expect("a CONNECT");
    assert!(
        head.starts_with(&format!("CONNECT origin.invalid:{port} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: origin.invalid:{port}\r\n")),
        "{head}"
    );
    // Inside the tunnel: TLS with the origin's name, then an origin-form request.
    let seen = server.next_seen().await;
    assert_eq!(seen.sni.as_deref(), Some("origin.invalid"), "{seen:?}");
    assert!(seen.head.starts_with("GET /check HTTP/1.1\r\n"), "{seen:?}");
}

#[tokio::test]
async fn https_probe_is_down_when_the_proxy_refuses_the_tunnel() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    let server = TlsServer::start(pki.server(vec![dns("origin.invalid")])).await;
    let (proxy, _heads) = connect_proxy(server.address, true).await;
    let mut through = spec("https://origin.invalid/", &pki.ca_file);
    through.proxy = Some(proxy);
    let (_tracker, mut events) = start(through);

    let down = next_health(&mut events).await;
    assert!(
        down_reason(&down).contains(&format!(
            "proxy {proxy} refused CONNECT origin.invalid:443: status 403"
        )),
        "{down:?}"
    );
}

#[tokio::test]
async fn https_probe_to_a_silent_server_or_proxy_ends_at_its_timeout() {
    let pki = Pki::new(TempDir::new(), "probe-ca");
    // Accepts connections and never says a word: no ServerHello, no CONNECT answer.
    let silent = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let silent_address = silent.local_addr().expect("local address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(300);
    let schedule = ProbeSchedule {
        interval: Duration::from_secs(30),
        timeout,
        ..ProbeSchedule::default()
    };
    let mut direct = spec(
        &format!("https://127.0.0.1:{}/", silent_address.port()),
        &pki.ca_file,
    );
    direct.schedule = schedule.clone();
    let mut proxied = spec("https://origin.invalid/", &pki.ca_file);
    proxied.proxy = Some(silent_address);
    proxied.schedule = schedule;

    for probe in [direct, proxied] {
        let started = Instant::now();
        let (_tracker, mut events) = start(probe);
        let down = next_health(&mut events).await;
        let took = started.elapsed();
        assert!(
            down_reason(&down).contains("timed out after 300ms"),
            "{down:?}"
        );
        // The first check runs at once; its result is due one timeout later. The upper bound
        // only has to tell "bounded" from "hangs until the next interval (30 s)".
        assert!(
            took >= timeout && took < Duration::from_secs(10),
            "reported after {took:?}"
        );
    }
}

#[tokio::test]
async fn https_probe_with_an_unreadable_ca_file_is_down_with_the_reason() {
    let dir = TempDir::new();
    let missing = dir.join("missing-ca.pem");
    let (_tracker, mut events) = start(spec("https://127.0.0.1:1/", &missing));

    let down = next_health(&mut events).await;
    let reason = down_reason(&down);
    assert!(
        reason.starts_with("ca_file: ") && reason.contains("missing-ca.pem"),
        "{down:?}"
    );
}
