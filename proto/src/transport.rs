//! The client side of the hav mTLS transport, shared by `hav-agent` and `havctl`: loading the
//! fleet CA and a client certificate, dialling the coordinator over TLS 1.3 with that certificate,
//! checking that the server really is a hav coordinator, and turning a failed connection into one
//! clear sentence.
//!
//! Guarantees: no connection is made without TLS; the server must present a certificate signed by
//! the fleet CA, valid for the host name dialled, carrying a `hav://coordinator/…` identity; a
//! connection is handed to gRPC only once the coordinator has accepted our certificate, so a
//! refused certificate always fails the dial with the coordinator's reason (its TLS alert).

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::identity::Identity;

/// How long to wait for TCP + TLS before giving up on one attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The three PEM files a client needs.
#[derive(Debug, Clone)]
pub struct ClientTlsFiles {
    /// The fleet CA certificate.
    pub ca: PathBuf,
    /// This client's certificate (chain).
    pub cert: PathBuf,
    /// This client's private key.
    pub key: PathBuf,
}

/// Why a client could not reach the coordinator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("coordinator address `{0}` is not host:port or https://host:port")]
    Address(String),
    #[error("the server at {address} is not a hav coordinator: {reason}")]
    NotCoordinator { address: String, reason: String },
    #[error(
        "the coordinator closed the connection after the TLS handshake without a reason: it \
         may have refused our client certificate (check --cert and --key and that they come \
         from this fleet's CA) or be shutting down"
    )]
    ClosedAfterHandshake,
    #[error("{}", explain(.0.as_ref()))]
    Connect(Box<dyn StdError + Send + Sync>),
}

/// The cryptography of the fleet's links (agent, havctl and coordinator alike): ring's, with
/// TLS 1.3's AES-128-GCM/SHA-256 suite preferred. Every suite ring offers stays acceptable;
/// the order only picks, between two hav ends, the suite whose hash (SHA-256) costs least per
/// handshake, and AES-128 is as safe here as AES-256 (128-bit keys are the fleet's level
/// throughout: P-256 certificates, X25519 key exchange).
pub fn fleet_crypto() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite::{TLS13_AES_128_GCM_SHA256, TLS13_CHACHA20_POLY1305_SHA256};
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort: ring's order stays for the rest.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            TLS13_AES_128_GCM_SHA256 => 0,
            TLS13_CHACHA20_POLY1305_SHA256 => 1,
            _ => 2,
        });
    Arc::new(provider)
}

/// Loads the CA, certificate and key and builds a TLS 1.3 client config that presents the
/// certificate and trusts only the fleet CA.
pub fn client_config(files: &ClientTlsFiles) -> Result<Arc<ClientConfig>, TransportError> {
    let roots = root_store(&files.ca)?;
    let chain = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    let mut config = ClientConfig::builder_with_provider(fleet_crypto())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client config reused from one connection to the next while its files stay the same, so
/// that a reconnect resumes the TLS session (the server checks no certificate and signs
/// nothing); a file that changed (a rotated certificate) builds a new one.
pub struct ClientTlsCache {
    files: ClientTlsFiles,
    current: Option<(Vec<Vec<u8>>, Arc<ClientConfig>)>,
}

impl ClientTlsCache {
    pub fn new(files: ClientTlsFiles) -> ClientTlsCache {
        ClientTlsCache {
            files,
            current: None,
        }
    }

    /// The config for the next connection, built from the files as they are now.
    pub fn get(&mut self) -> Result<Arc<ClientConfig>, TransportError> {
        let files = [&self.files.ca, &self.files.cert, &self.files.key];
        let contents: Option<Vec<Vec<u8>>> = files.iter().map(|f| std::fs::read(f).ok()).collect();
        if let (Some(contents), Some((built_from, config))) = (&contents, &self.current)
            && contents == built_from
        {
            return Ok(config.clone());
        }
        let config = client_config(&self.files)?;
        self.current = contents.map(|contents| (contents, config.clone()));
        Ok(config)
    }
}

/// Reads every certificate in a PEM file (at least one).
pub fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem_error = |reason: String| TransportError::Pem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads one private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TransportError::Pem {
        what: "private key",
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A root store holding the fleet CA certificate(s) in `path`.
pub fn root_store(path: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TransportError::Pem {
            what: "CA certificate",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Dials the coordinator at `address` (`host:port` or `https://host:port`) and returns a
/// connected channel. Fails with a [`TransportError::Connect`] whose text says what went wrong and
/// what to do.
pub async fn connect(address: &str, tls: Arc<ClientConfig>) -> Result<Channel, TransportError> {
    let (endpoint, server_name, authority) = endpoint(address)?;
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        let authority = authority.clone();
        async move { dial(&authority, server_name, tls).await }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| TransportError::Connect(Box::new(e)))
}

/// Checks, without dialling, that `address` is one [`connect`] accepts: `host:port` or
/// `https://host:port`, the host a DNS name or an IP address (IPv6 in brackets).
pub fn check_address(address: &str) -> Result<(), TransportError> {
    endpoint(address).map(|_| ())
}

/// Parses the address into a tonic endpoint (which sees plain `http://`: TLS happens in our
/// connector), the TLS server name and the `host:port` to dial.
fn endpoint(address: &str) -> Result<(Endpoint, ServerName<'static>, String), TransportError> {
    let bad = || TransportError::Address(address.to_owned());
    let authority = address
        .strip_prefix("https://")
        .unwrap_or(address)
        .trim_end_matches('/');
    if authority.contains("://") || authority.contains('/') {
        return Err(bad());
    }
    let uri: Uri = format!("http://{authority}").parse().map_err(|_| bad())?;
    let host = uri.host().ok_or_else(bad)?;
    uri.port_u16().ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned()).map_err(|_| bad())?;
    // The server is asked to keep no dynamic HPACK table for the headers it sends us
    // (SETTINGS_HEADER_TABLE_SIZE 0): a coordinator would keep one per agent connection for as
    // long as it lasts, and the few response headers of a long-lived stream gain nothing from it.
    let endpoint = Endpoint::from(uri)
        .http2_header_table_size(0)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    Ok((endpoint, server_name, authority.to_owned()))
}

async fn dial(
    authority: &str,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
) -> Result<TokioIo<BufReader<tokio_rustls::client::TlsStream<TcpStream>>>, TransportError> {
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| TransportError::Connect(Box::new(e)))?;
    tcp.set_nodelay(true).ok();
    let stream = TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| TransportError::Connect(Box::new(e)))?;
    let not_coordinator = |reason: String| TransportError::NotCoordinator {
        address: authority.to_owned(),
        reason,
    };
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| not_coordinator("it presented no certificate".into()))?;
    match Identity::from_cert_der(leaf) {
        Ok(Identity::Coordinator { .. }) => {}
        Ok(other) => {
            return Err(not_coordinator(format!(
                "its certificate identifies {other}"
            )));
        }
        Err(e) => return Err(not_coordinator(e.to_string())),
    }
    await_verdict(stream).await.map(TokioIo::new)
}

/// Waits for the coordinator's verdict on our certificate before anything is written.
///
/// In TLS 1.3 the client's handshake is over before the server has checked the client's
/// certificate; a server that refuses it sends an alert afterwards. Had we written meanwhile
/// (the HTTP/2 preface), the server would close a socket with unread data, which resets the
/// connection, and the alert would race the reset: "broken pipe", "connection closed" or the
/// alert, from run to run. The coordinator, an HTTP/2 server, speaks first (its SETTINGS frame)
/// once it has accepted us, so its first bytes are the verdict: data (kept for gRPC to read), an
/// alert (the error, explained by [`explain`]) or an end without one.
async fn await_verdict<S>(stream: S) -> Result<BufReader<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    match tokio::time::timeout(CONNECT_TIMEOUT, stream.fill_buf()).await {
        Ok(Ok([])) => Err(TransportError::ClosedAfterHandshake),
        Ok(Ok(_)) => Ok(stream),
        Ok(Err(e)) => Err(TransportError::Connect(Box::new(e))),
        Err(elapsed) => Err(TransportError::Connect(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            elapsed,
        )))),
    }
}

/// One sentence saying why a connection or call failed and what to do, found by walking the error
/// chain for the TLS or socket error underneath.
pub fn explain(err: &(dyn StdError + 'static)) -> String {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    let mut innermost = err.to_string();
    while let Some(e) = current {
        if let Some(tls) = as_rustls(e) {
            return explain_tls(tls);
        }
        if let Some(transport) = e.downcast_ref::<TransportError>()
            && !matches!(transport, TransportError::Connect(_))
        {
            return transport.to_string();
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return "connection refused: is hav-coordinator running and listening at \
                            this address (--coordinator / HAV_COORDINATOR)?"
                        .into();
                }
                std::io::ErrorKind::TimedOut => {
                    return "timed out reaching the coordinator: check the address and firewall"
                        .into();
                }
                _ => {}
            }
        }
        innermost = e.to_string();
        current = e.source();
    }
    // h2 keeps only the text of an IO error, so a TLS alert may arrive as text alone.
    if let Some(alert) = innermost
        .split("received fatal alert: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(alert_from_name)
    {
        return explain_tls(&rustls::Error::AlertReceived(alert));
    }
    innermost
}

fn alert_from_name(name: &str) -> Option<AlertDescription> {
    let name = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    [
        AlertDescription::CertificateExpired,
        AlertDescription::UnknownCA,
        AlertDescription::CertificateRequired,
        AlertDescription::BadCertificate,
        AlertDescription::UnsupportedCertificate,
        AlertDescription::CertificateUnknown,
        AlertDescription::DecryptError,
        AlertDescription::AccessDenied,
        AlertDescription::CertificateRevoked,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)
}

/// One sentence for a failed call: the coordinator's own message for a refusal it decided, or the
/// explained transport failure underneath.
pub fn explain_status(status: &tonic::Status) -> String {
    if std::error::Error::source(status).is_some() {
        return explain(status);
    }
    let message = match status.message() {
        "" => format!("{:?}", status.code()),
        message => message.to_owned(),
    };
    match status.code() {
        tonic::Code::PermissionDenied => format!("refused by the coordinator: {message}"),
        tonic::Code::Unauthenticated => format!("not authenticated by the coordinator: {message}"),
        tonic::Code::InvalidArgument => format!("the coordinator rejected the request: {message}"),
        tonic::Code::FailedPrecondition => format!("the coordinator refused: {message}"),
        tonic::Code::NotFound => format!("not found: {message}"),
        _ => format!("the coordinator could not do it: {message}"),
    }
}

fn as_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

fn explain_tls(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::AlertReceived(AlertDescription::CertificateExpired) => {
            "the coordinator refused our client certificate: it has expired (issue a new one \
             with `havctl certs issue`)"
                .into()
        }
        // A foreign CA with the same name as ours makes the signature check fail: DecryptError.
        E::AlertReceived(AlertDescription::UnknownCA | AlertDescription::DecryptError) => {
            "the coordinator refused our client certificate: it is not signed by the fleet CA \
             the coordinator trusts (use a certificate from `havctl certs issue` of this fleet)"
                .into()
        }
        E::AlertReceived(AlertDescription::CertificateRequired) => {
            "the coordinator requires a client certificate: pass --cert and --key".into()
        }
        E::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown,
        ) => format!(
            "the coordinator refused our client certificate ({err}): check --cert, --key and \
             that they come from this fleet's CA"
        ),
        E::AlertReceived(AlertDescription::CertificateRevoked) => {
            "the coordinator refused our client certificate: it has been revoked".into()
        }
        E::AlertReceived(AlertDescription::AccessDenied) => {
            "the coordinator refused our identity: the certificate lacks a valid hav:// name".into()
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the coordinator's certificate has expired: renew it with `havctl certs issue --kind \
             coordinator`"
            .into(),
        E::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "the coordinator's certificate is not signed by our fleet CA (--ca / HAV_CA): wrong \
             CA file or wrong coordinator"
                .into()
        }
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the coordinator's certificate does not name the host we dialled: issue it with \
              --san for that name or address"
            .into(),
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_prefers_aes_128_and_drops_no_suite() {
        let fleet = fleet_crypto();
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            fleet.cipher_suites.first().map(|s| s.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
        let names = |suites: &[rustls::SupportedCipherSuite]| {
            let mut names: Vec<_> = suites.iter().map(|s| format!("{:?}", s.suite())).collect();
            names.sort();
            names
        };
        assert_eq!(names(&fleet.cipher_suites), names(&ring.cipher_suites));
    }

    #[test]
    fn accepts_host_port_forms() {
        for (address, host) in [
            ("127.0.0.1:7400", "127.0.0.1"),
            ("https://coord.example:7400", "coord.example"),
            ("https://[::1]:7400/", "::1"),
        ] {
            let (_, name, _) = endpoint(address).expect("valid address");
            assert_eq!(name.to_str(), host);
        }
    }

    #[test]
    fn rejects_other_forms() {
        for address in ["http://x:1", "x", "https://x:1/path", "x:notaport"] {
            assert!(endpoint(address).is_err(), "{address} accepted");
        }
    }
}
