//! TLS sessions between agents and the coordinator: a reconnecting agent resumes its session
//! (no certificate exchange, no signature), a rotated certificate starts a full handshake, and a
//! resumed session never outlives the certificate it began with.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::transport::{self, ClientTlsCache, ClientTlsFiles};
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::{AgentMessage, Hello, PROTOCOL_VERSION};
use havctl::certs::{IssueRequest, Kind};
use rustls::HandshakeKind;
use rustls::pki_types::ServerName;
use support::{Pki, TIMEOUT};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS server with the coordinator's own server config, which writes one byte on each
/// connection (so that the client reads the session ticket sent before it) and then waits for
/// the client to close.
async fn serve(pki: &Pki) -> SocketAddr {
    let config = hav_coordinator::tls::server_config(&pki.server_files()).expect("server config");
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = tls.write_all(b"x").await;
                let _ = tls.flush().await;
                let mut rest = Vec::new();
                let _ = tls.read_to_end(&mut rest).await;
            });
        }
    });
    address
}

/// One connection with the cache's config; how its handshake went.
async fn handshake(cache: &mut ClientTlsCache, address: SocketAddr) -> HandshakeKind {
    let config = cache.get().expect("client config");
    let tcp = TcpStream::connect(address).await.expect("connect");
    let server = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(TIMEOUT, TlsConnector::from(config).connect(server, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.expect("the server's byte");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let _ = tls.shutdown().await;
    kind
}

fn agent_files(pki: &Pki, request: IssueRequest) -> ClientTlsFiles {
    let written = pki.issue(request);
    ClientTlsFiles {
        ca: pki.ca(),
        cert: written.cert,
        key: written.key,
    }
}

#[tokio::test]
async fn a_reconnect_resumes_the_session_until_a_certificate_file_changes() {
    let pki = Pki::new();
    let address = serve(&pki).await;
    let files = agent_files(&pki, IssueRequest::new(Kind::Agent, "lb-1", 30));
    let mut cache = ClientTlsCache::new(files);

    assert_eq!(handshake(&mut cache, address).await, HandshakeKind::Full);
    assert_eq!(handshake(&mut cache, address).await, HandshakeKind::Resumed);
    assert_eq!(handshake(&mut cache, address).await, HandshakeKind::Resumed);

    // A rotated certificate (same files, new contents) is presented in full, then resumed.
    pki.issue(IssueRequest::new(Kind::Agent, "lb-1", 60));
    assert_eq!(handshake(&mut cache, address).await, HandshakeKind::Full);
    assert_eq!(handshake(&mut cache, address).await, HandshakeKind::Resumed);
}

/// Opens an agent stream with the cache's config; the coordinator's first answer.
async fn agent_session(cache: &mut ClientTlsCache, coordinator: &str) -> Result<(), tonic::Status> {
    let channel = transport::connect(coordinator, cache.get().expect("config"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let hello = AgentMessage {
        body: Some(AgentBody::Hello(Hello {
            software_version: "test".into(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: Vec::new(),
            node_name: "lb-1".into(),
            config_version: 0,
        })),
    };
    let (out, rx) = tokio::sync::mpsc::channel(4);
    out.try_send(hello).expect("room for the Hello");
    let mut inbound = AgentServiceClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    inbound.message().await?;
    Ok(())
}

#[tokio::test]
async fn a_resumed_session_does_not_outlive_the_certificate_it_began_with() {
    let pki = Pki::new();
    let data = tempfile::tempdir().expect("data dir");
    let coordinator = support::start(&pki, data.path()).await;
    let address = coordinator.local_addr.to_string();
    let mut request = IssueRequest::new(Kind::Agent, "lb-1", 30);
    let expires = OffsetDateTime::now_utc() + Duration::from_secs(3);
    request.not_after = expires;
    let mut cache = ClientTlsCache::new(agent_files(&pki, request));

    tokio::time::timeout(TIMEOUT, agent_session(&mut cache, &address))
        .await
        .expect("in time")
        .expect("welcomed while the certificate is valid");

    // Past the certificate's end, the client still holds a session ticket the server would
    // resume; the coordinator refuses the identity anyway.
    let wait = (expires - OffsetDateTime::now_utc()).unsigned_abs() + Duration::from_millis(1100);
    tokio::time::sleep(wait).await;
    let refused = tokio::time::timeout(TIMEOUT, agent_session(&mut cache, &address))
        .await
        .expect("in time")
        .expect_err("an expired certificate gets no session");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("not valid now"),
        "{}",
        refused.message()
    );
    coordinator.shutdown().await.expect("shutdown");
}

/// A client's session tickets live in its config: the same files give the same config.
#[test]
fn the_same_files_give_the_same_client_config() {
    let pki = Pki::new();
    let mut cache = ClientTlsCache::new(agent_files(
        &pki,
        IssueRequest::new(Kind::Agent, "lb-1", 30),
    ));
    let first = cache.get().expect("config");
    assert!(Arc::ptr_eq(&first, &cache.get().expect("config")));
}
