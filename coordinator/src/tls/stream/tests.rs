//! The stream against a real rustls client over loopback TCP, with certificates made here.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream as ClientStream;

use super::{MAX_BUFFERED, TlsStream, accept};

/// Safety net for awaiting an event; never a synchronisation device.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Certs {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

impl Certs {
    fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let key: PrivateKeyDer<'static> = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
            (cert.der().clone(), key)
        };
        Certs {
            ca: ca_cert.der().clone(),
            server: leaf("coordinator.test"),
            client: leaf("agent.test"),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    /// As the coordinator's: TLS 1.3 only, a client certificate required.
    fn server(&self) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots(), provider.clone())
            .build()
            .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.0.clone()], self.server.1.clone_key())
            .unwrap();
        Arc::new(config)
    }

    fn client(&self, with_certificate: bool) -> TlsConnector {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(self.roots());
        let config = if with_certificate {
            builder
                .with_client_auth_cert(vec![self.client.0.clone()], self.client.1.clone_key())
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// A listener and a TCP connection to it, both ends.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(address), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// A server stream after a successful handshake with a client holding a certificate.
async fn connected(certs: &Certs) -> (ClientStream<TcpStream>, TlsStream) {
    let (client_tcp, server_tcp) = tcp_pair().await;
    let name = ServerName::try_from("coordinator.test").unwrap();
    let (client, server) = tokio::join!(
        certs.client(true).connect(name, client_tcp),
        accept(server_tcp, certs.server())
    );
    let server = server.map_err(|(e, _)| e).unwrap();
    (client.unwrap(), server)
}

fn holds_no_buffer(stream: &TlsStream) -> bool {
    stream.received.capacity() == 0
        && stream.outgoing.capacity() == 0
        && stream.plaintext.capacity() == 0
}

/// Writes `data` at `from` and reads as many bytes at `to`, both at once (a large write
/// completes only while it is read); what `to` read.
async fn pass(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    let write = async {
        from.write_all(data).await?;
        from.flush().await
    };
    let read = async {
        let mut got = vec![0; data.len()];
        to.read_exact(&mut got).await.map(|_| got)
    };
    let (written, read) = tokio::time::timeout(TIMEOUT, async { tokio::join!(write, read) })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
    written?;
    read
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn data_crosses_both_ways_and_an_idle_stream_holds_no_buffer() {
    let certs = Certs::new();
    let (mut client, mut server) = connected(&certs).await;
    let leaf = server.peer_certificates().and_then(|chain| chain.first());
    assert_eq!(
        leaf,
        Some(&certs.client.0),
        "the client's certificate is the peer's"
    );
    assert!(holds_no_buffer(&server), "after the handshake");

    // One byte, a record and a bit, and many records.
    for (len, seed) in [(1, 1), (0x4000 + 1, 2), (150_000, 3)] {
        let sent = pattern(len, seed);
        let received = pass(&mut client, &mut server, &sent).await.unwrap();
        assert!(received == sent, "{len} bytes from the client");

        let reply = pattern(len, seed + 100);
        let received = pass(&mut server, &mut client, &reply).await.unwrap();
        assert!(received == reply, "{len} bytes from the server");
        assert!(holds_no_buffer(&server), "idle after {len} bytes each way");
    }
}

#[tokio::test]
async fn slices_written_together_arrive_in_order() {
    let certs = Certs::new();
    let (mut client, mut server) = connected(&certs).await;
    let head = pattern(9, 7);
    let body = pattern(70_000, 8);
    let slices = [
        std::io::IoSlice::new(&head),
        std::io::IoSlice::new(&[]),
        std::io::IoSlice::new(&body),
    ];
    let mut expected = head.clone();
    expected.extend_from_slice(&body);
    let (written, received) = tokio::join!(
        async {
            // A vectored write takes what it can; the rest goes as the caller retries.
            let mut total = server.write_vectored(&slices).await?;
            assert!(
                total > head.len(),
                "the head and some of the body in one write"
            );
            server.write_all(&expected[total..]).await?;
            total = expected.len();
            server.flush().await.map(|()| total)
        },
        async {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).await.map(|_| got)
        }
    );
    assert_eq!(written.unwrap(), expected.len());
    assert!(received.unwrap() == expected);
}

#[tokio::test]
async fn a_key_update_the_client_asks_for_is_answered() {
    let certs = Certs::new();
    let (mut client, mut server) = connected(&certs).await;
    for round in 0..3u8 {
        // The client's KeyUpdate asks the server to update its sending keys too.
        client.get_mut().1.refresh_traffic_keys().unwrap();
        let sent = pattern(1000, round);
        let got = pass(&mut client, &mut server, &sent).await.unwrap();
        assert!(got == sent);
        let back = pass(&mut server, &mut client, &sent).await.unwrap();
        assert!(
            back == sent,
            "round {round}: the server's data after its own key update"
        );
    }
}

#[tokio::test]
async fn close_notify_ends_each_side_cleanly() {
    let certs = Certs::new();
    let (mut client, mut server) = connected(&certs).await;
    client.write_all(b"last words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(TIMEOUT, server.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, b"last words");

    server.write_all(b"goodbye").await.unwrap();
    server.shutdown().await.unwrap();
    let mut all = Vec::new();
    // A close without close_notify would be an UnexpectedEof error here.
    tokio::time::timeout(TIMEOUT, client.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all, b"goodbye");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_with_the_alert() {
    let certs = Certs::new();
    let (client_tcp, server_tcp) = tcp_pair().await;
    let name = ServerName::try_from("coordinator.test").unwrap();
    let client = async {
        // TLS 1.3: the client's handshake ends before the server has judged it, so the
        // refusal reaches it on its first read.
        let mut stream = certs.client(false).connect(name, client_tcp).await?;
        let mut byte = [0u8; 1];
        stream.read(&mut byte).await.map(|_| ())
    };
    let (client, server) = tokio::join!(client, accept(server_tcp, certs.server()));
    let Err((error, _tcp)) = server else {
        panic!("a client without a certificate was accepted");
    };
    let reason = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(reason, Some(&rustls::Error::NoCertificatesPresented));
    let client = client.unwrap_err().to_string();
    assert!(client.contains("CertificateRequired"), "{client}");
}

#[tokio::test]
async fn plaintext_is_refused_as_not_tls() {
    let certs = Certs::new();
    let (mut client_tcp, server_tcp) = tcp_pair().await;
    client_tcp
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let Err((error, _tcp)) = accept(server_tcp, certs.server()).await else {
        panic!("plaintext was accepted as TLS");
    };
    let reason = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(reason, Some(rustls::Error::InvalidMessage(_))),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_hello_claiming_16_mib_is_refused() {
    let certs = Certs::new();
    let (mut client_tcp, server_tcp) = tcp_pair().await;
    // Handshake records of 16 KiB each, the first starting a ClientHello that claims 16 MiB.
    let mut records = Vec::new();
    for i in 0..(MAX_BUFFERED / 0x4000 + 2) {
        records.extend_from_slice(&[22, 3, 3, 0x40, 0x00]);
        let mut payload = vec![0u8; 0x4000];
        if i == 0 {
            payload[..4].copy_from_slice(&[1, 0xff, 0xff, 0xff]);
        }
        records.extend_from_slice(&payload);
    }
    let writer = tokio::spawn(async move {
        // The server may refuse before all of it is read; the write's outcome does not matter.
        let _ = client_tcp.write_all(&records).await;
        client_tcp
    });
    let refused = tokio::time::timeout(TIMEOUT, accept(server_tcp, certs.server()))
        .await
        .unwrap();
    assert!(refused.is_err(), "a 16 MiB ClientHello was accepted");
    drop(refused);
    drop(writer.await.unwrap());
}
