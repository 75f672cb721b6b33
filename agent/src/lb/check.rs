//! Real-server health checks with keepalived's timing: TCP_CHECK, HTTP_GET, SSL_GET and
//! MISC_CHECK.
//!
//! Guarantees: a server starts healthy (keepalived's default) and its first check runs at once;
//! every `delay_loop` one check runs, a failed try is retried `retry` times `delay_before_retry`
//! apart and the server fails only when every try failed, so a dead server leaves within
//! `delay_loop + retry × (delay_before_retry + connect_timeout)`; one successful check heals it.
//! Each try is bounded by `connect_timeout` as a whole. Only changes are reported, each with its
//! reason; a failure is never a panic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hav_proto::config::{CheckKind, RealServerCheck};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ServerKey;
use crate::track::exec;
use crate::track::probe;

/// A change of a real server's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub server: ServerKey,
    pub healthy: bool,
    /// Why it failed (empty when healthy).
    pub reason: String,
}

/// A running checker; stopped when dropped.
#[derive(Debug)]
pub struct Checker {
    task: JoinHandle<()>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Checker {
    /// Starts checking `server` every `delay_loop`, reporting changes to `reports`.
    pub fn spawn(
        server: ServerKey,
        check: RealServerCheck,
        delay_loop: Duration,
        reports: mpsc::Sender<CheckReport>,
    ) -> Self {
        let task = tokio::spawn(run(server, check, delay_loop, reports));
        Self { task }
    }
}

async fn run(
    server: ServerKey,
    check: RealServerCheck,
    delay_loop: Duration,
    reports: mpsc::Sender<CheckReport>,
) {
    let mut attempt = Attempt::new(&check.kind);
    let mut healthy = true;
    loop {
        let mut result = attempt.once(check.connect_timeout).await;
        let mut retries = check.retry;
        while result.is_err() && retries > 0 {
            tokio::time::sleep(check.delay_before_retry).await;
            retries -= 1;
            result = attempt.once(check.connect_timeout).await;
        }
        let now_healthy = result.is_ok();
        if now_healthy != healthy {
            healthy = now_healthy;
            let report = CheckReport {
                server: server.clone(),
                healthy,
                reason: result.err().unwrap_or_default(),
            };
            if reports.send(report).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(delay_loop).await;
    }
}

/// One kind of try, with what it keeps between tries (the TLS config).
struct Attempt {
    kind: CheckKind,
    tls: Option<Arc<ClientConfig>>,
}

impl Attempt {
    fn new(kind: &CheckKind) -> Self {
        Self {
            kind: kind.clone(),
            tls: None,
        }
    }

    /// One try, bounded by `timeout`.
    async fn once(&mut self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.try_once(timeout)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {timeout:?}")),
        }
    }

    async fn try_once(&mut self, timeout: Duration) -> Result<(), String> {
        match self.kind.clone() {
            CheckKind::Tcp { connect } => tcp(connect).await.map(drop),
            CheckKind::Http {
                connect,
                tls,
                path,
                virtualhost,
                status_code,
                digest,
                ca_file,
                server_name,
            } => {
                let host = virtualhost
                    .clone()
                    .unwrap_or_else(|| connect.ip().to_string());
                let request = probe::check_request(&path, &host)?;
                let stream = tcp(connect).await?;
                let read_body = digest.is_some();
                let (status, body) = if tls {
                    let config = match &self.tls {
                        Some(config) => config.clone(),
                        None => {
                            let file = ca_file.clone();
                            let loaded = tokio::task::spawn_blocking(move || {
                                probe::tls_client_config(file.as_deref())
                            })
                            .await
                            .map_err(|error| format!("loading the TLS trust anchors: {error}"))??;
                            self.tls = Some(loaded.clone());
                            loaded
                        }
                    };
                    let name = match server_name {
                        Some(name) => name,
                        None => match &virtualhost {
                            Some(host) => ServerName::try_from(host.clone())
                                .map_err(|_| format!("{host:?} is not a TLS server name"))?,
                            None => ServerName::IpAddress(connect.ip().into()),
                        },
                    };
                    let stream = probe::handshake(config, name, stream).await?;
                    probe::get_once(stream, request, read_body).await?
                } else {
                    probe::get_once(stream, request, read_body).await?
                };
                if !status_code.contains(&status.as_u16()) {
                    return Err(format!(
                        "status {}, expected one of {status_code:?}",
                        status.as_u16()
                    ));
                }
                if let (Some(expected), Some(body)) = (digest, body) {
                    let actual = sha256_hex(&body);
                    if actual != expected {
                        return Err(format!("body digest {actual}, expected {expected}"));
                    }
                }
                Ok(())
            }
            CheckKind::Misc { command } => {
                let mut program = tokio::process::Command::new(&command.program);
                program.args(&command.args);
                let outcome = exec::run(program, timeout).await;
                if outcome.succeeded() {
                    Ok(())
                } else {
                    Err(format!("{}: {outcome}", command.program.display()))
                }
            }
        }
    }
}

async fn tcp(address: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect to {address}: {error}"))
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn key() -> ServerKey {
        ServerKey {
            service: "web".into(),
            address: "127.0.0.1".parse::<IpAddr>().expect("address"),
            port: None,
        }
    }

    fn check(kind: CheckKind, retry: u32) -> RealServerCheck {
        RealServerCheck {
            kind,
            connect_timeout: Duration::from_millis(500),
            retry,
            delay_before_retry: Duration::from_millis(20),
        }
    }

    #[test]
    fn the_digest_is_lower_case_hex_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_fails_after_every_retry_and_a_listener_heals_it() {
        // Bound first, then closed: nothing listens on the port while the checks run.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let (tx, mut rx) = mpsc::channel(4);
        let started = tokio::time::Instant::now();
        let _checker = Checker::spawn(
            key(),
            check(CheckKind::Tcp { connect: address }, 2),
            Duration::from_millis(50),
            tx,
        );
        let down = rx.recv().await.expect("a report");
        assert!(!down.healthy);
        assert!(down.reason.contains("connect to"), "{}", down.reason);
        // Two retries 20 ms apart.
        assert!(started.elapsed() >= Duration::from_millis(40));
        let _listener = TcpListener::bind(address).await.expect("bind again");
        let up = rx.recv().await.expect("a report");
        assert!(up.healthy, "{up:?}");
    }

    #[tokio::test]
    async fn an_http_check_compares_the_status_and_the_body_digest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        let http = |digest: Option<String>, status: u16| CheckKind::Http {
            connect: address,
            tls: false,
            path: "/health".into(),
            virtualhost: None,
            status_code: vec![status],
            digest,
            ca_file: None,
            server_name: None,
        };
        let mut good = Attempt::new(&http(Some(sha256_hex(b"ok")), 200));
        good.once(Duration::from_secs(2)).await.expect("healthy");
        let mut wrong_body = Attempt::new(&http(Some(sha256_hex(b"no")), 200));
        let error = wrong_body
            .once(Duration::from_secs(2))
            .await
            .expect_err("digest");
        assert!(error.contains("body digest"), "{error}");
        let mut wrong_status = Attempt::new(&http(None, 204));
        let error = wrong_status
            .once(Duration::from_secs(2))
            .await
            .expect_err("status");
        assert!(error.contains("status 200"), "{error}");
    }
}
