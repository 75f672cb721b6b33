//! The coordinator's side of mTLS: a TLS 1.3 server config that demands a client certificate
//! signed by the fleet CA, an accept loop that only hands fully verified connections to gRPC, and
//! a watcher that reloads certificate, key and CA from disk without a restart: when the files
//! change, and at once when asked (the daemon asks on SIGHUP).
//!
//! Guarantees: a connection reaches a service only after a successful handshake with a verified
//! client certificate; a handshake failure (plaintext, no certificate, wrong CA, expired) is logged
//! with the peer address and a reason and never stops the accept loop; a refused client is sent
//! the TLS alert saying why and then an orderly close, never a reset that could destroy the alert
//! before the client reads it; a reload that fails keeps the previous config.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hav_proto::identity::CertifiedIdentity;
use hav_proto::transport::{TransportError, load_certs, load_key, root_store};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use tokio::io::ReadBuf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use self::stream::TlsStream;

mod stream;

/// A TLS handshake must finish within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused client has to read our alert and close its side.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Where the coordinator's certificate, key and the fleet CA live.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Builds the server config from the files.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TransportError> {
    let provider = hav_proto::transport::fleet_crypto();
    let roots = Arc::new(root_store(&files.ca)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| TransportError::Tls(rustls::Error::General(e.to_string())))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_certs(&files.cert, "certificate")?,
            load_key(&files.key)?,
        )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    // This side's order picks the suite, so any client (a browser, grpcurl) gets the cheapest.
    config.ignore_client_order = true;
    // Stateless resumption: a reconnecting agent presents its ticket and skips the certificate
    // exchange and signatures, whatever the number of agents (the ticket keys rotate every 6 h
    // and live in this config: a certificate reload starts new ones). The client certificate
    // was verified when the ticket was issued; it travels in the ticket.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// Reloads the server config whenever one of the files changes (checked every `interval` by
/// modification time and size, which also catches an atomic rename over the file), and at once
/// when asked through the returned [`TlsReloader`] (SIGHUP). Returns the receiver the accept loop
/// reads for each new connection.
pub fn watch_files(
    files: ServerTlsFiles,
    initial: Arc<ServerConfig>,
    interval: Duration,
) -> (watch::Receiver<Arc<ServerConfig>>, TlsReloader) {
    let (tx, rx) = watch::channel(initial);
    let (requests, mut requested) = mpsc::channel::<oneshot::Sender<Result<(), TransportError>>>(4);
    // Taken now, not in the task: a change between here and the task's first poll must count.
    let mut seen = fingerprint(&files);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Once every reloader is gone, only the files are watched.
        let mut asked = true;
        loop {
            let reply = tokio::select! {
                _ = ticker.tick() => None,
                request = requested.recv(), if asked => match request {
                    Some(reply) => Some(reply),
                    None => {
                        asked = false;
                        continue;
                    }
                },
            };
            if tx.is_closed() {
                return;
            }
            let now = fingerprint(&files);
            let Some(reply) = reply else {
                if now == seen {
                    continue;
                }
                match server_config(&files) {
                    Ok(config) => {
                        seen = now;
                        tracing::info!(cert = %files.cert.display(), "TLS certificates reloaded (files changed)");
                        tx.send_replace(config);
                    }
                    // Half-written files are common during a rotation: keep the old config and
                    // retry on the next tick (`seen` is not updated).
                    Err(e) => {
                        tracing::warn!("TLS reload failed, keeping previous certificates: {e}")
                    }
                }
                continue;
            };
            // Asked: read the files whether or not they look changed, and say how it went.
            let result = server_config(&files).map(|config| {
                seen = now;
                tx.send_replace(config);
            });
            let _ = reply.send(result);
        }
    });
    (rx, TlsReloader { requests })
}

/// Asks the watcher of [`watch_files`] to read the certificate files now.
#[derive(Debug, Clone)]
pub struct TlsReloader {
    requests: mpsc::Sender<oneshot::Sender<Result<(), TransportError>>>,
}

impl TlsReloader {
    /// Reads certificate, key and CA again and serves them to the next connection; on an error
    /// the certificates in force stay. Connections already open keep theirs.
    pub async fn reload(&self) -> Result<(), TlsReloadError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .await
            .map_err(|_| TlsReloadError::WatcherGone)?;
        answer
            .await
            .map_err(|_| TlsReloadError::WatcherGone)?
            .map_err(TlsReloadError::Files)
    }
}

/// Why a reload asked for left the certificates as they were.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsReloadError {
    #[error("{0}")]
    Files(#[source] TransportError),
    #[error("the certificate watcher has stopped")]
    WatcherGone,
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

fn fingerprint(files: &ServerTlsFiles) -> Fingerprint {
    [&files.cert, &files.key, &files.ca]
        .iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// An accepted mTLS connection with its [`Peer`], which every request on it gets; the TLS state
/// is on the heap.
///
/// The gRPC server moves the stream it is given into a chain of nested futures (its connection
/// task, HTTP/2's codec) that live as long as the connection, and a moved-from value still takes
/// its room in the future that held it: a stream kept by value (over a kilobyte of TLS state) is
/// paid for twice per connection, a boxed one once.
pub struct TlsConnection(Box<Accepted>);

struct Accepted {
    stream: TlsStream,
    peer: Peer,
}

/// What a connection's handshake established about its client, in the extensions of every
/// request on it: where it connects from and the identity its verified certificate carries.
#[derive(Debug, Clone)]
pub struct Peer {
    pub remote: SocketAddr,
    /// `None` if the client presented no certificate (the TLS config demands one).
    pub identity: Option<Arc<CertifiedIdentity>>,
}

impl Peer {
    /// The peer of a request served here, if it came over a connection accepted here.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Peer> {
        request.extensions().get::<Peer>()
    }
}

impl tokio::io::AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0.stream).poll_shutdown(cx)
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.0.peer.clone()
    }
}

/// Accepts TCP connections and yields only those whose TLS handshake succeeded. Each handshake
/// runs in its own task, so a slow or hostile client cannot hold up the others.
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
) -> ReceiverStream<Result<TlsConnection, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let config = config.borrow().clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = stream::accept(tcp, config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                    Ok(Ok(stream)) => {
                        // The identity is read once per connection; its validity period is
                        // checked again on every call (`auth::peer_identity`).
                        let identity = stream
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| Arc::new(CertifiedIdentity::from_cert_der(leaf)));
                        let connection = TlsConnection(Box::new(Accepted {
                            stream,
                            peer: Peer {
                                remote: peer,
                                identity,
                            },
                        }));
                        let _ = tx.send(Ok(connection)).await;
                    }
                    Ok(Err((e, tcp))) => {
                        log_refused(peer, &e);
                        close_refused(tcp).await;
                    }
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out; connection dropped"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Closes a refused connection in order: the alert was written when the handshake failed; now
/// our side ends (FIN) and what the client still sends is read and dropped until it closes too
/// (at most [`REFUSAL_LINGER`]). Closing a socket with unread data would reset it, and a client
/// that had written meanwhile would then see "connection reset" or "broken pipe" instead of the
/// alert.
async fn close_refused(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
}

fn log_refused(peer: SocketAddr, error: &std::io::Error) {
    use rustls::{CertificateError, Error as E};
    let tls = error.get_ref().and_then(|e| e.downcast_ref::<E>());
    let reason = match tls {
        Some(E::InvalidMessage(_)) => {
            "the client did not speak TLS (plaintext?); hav requires mTLS".to_string()
        }
        Some(E::NoCertificatesPresented) => {
            "the client presented no certificate; hav requires a client certificate".into()
        }
        Some(E::InvalidCertificate(CertificateError::Expired))
        | Some(E::InvalidCertificate(CertificateError::ExpiredContext { .. })) => {
            "the client certificate has expired".into()
        }
        Some(E::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "the client certificate is not signed by the fleet CA".into(),
        Some(other) => format!("TLS error: {other}"),
        None => format!("{error}"),
    };
    tracing::warn!(%peer, "connection refused: {reason}");
}
