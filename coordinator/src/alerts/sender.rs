//! Delivery of alert payloads to webhook receivers: one task per receiver, in order, each POST
//! retried with backoff.
//!
//! Guarantees: a receiver that is down or slow never delays the coordinator (the queue is
//! bounded; when full, the payload is dropped and said in the log); every attempt is bounded
//! by a timeout; a payload is retried until a 2xx answer or [`ATTEMPTS`] attempts, 0.5 s, 1 s,
//! 2 s and 4 s apart.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Attempts per payload.
pub const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const QUEUE: usize = 256;

/// A receiver's URL, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    host: String,
    port: u16,
    path: String,
    tls: bool,
}

impl Webhook {
    /// `http://host[:port][/path]` or `https://…`.
    pub fn parse(url: &str) -> Result<Webhook, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!("{url}: expected http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url}: bad port `{port}`"))?;
                (host, port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Webhook {
            url: url.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            tls,
        })
    }
}

/// The queue of one receiver.
#[derive(Debug, Clone)]
pub struct Sender {
    queue: mpsc::Sender<Bytes>,
    url: String,
}

impl Sender {
    /// Starts the receiver's delivery task.
    pub fn spawn(hook: Webhook) -> Sender {
        let (queue, mut payloads) = mpsc::channel::<Bytes>(QUEUE);
        let url = hook.url.clone();
        let tls = hook.tls.then(client_tls);
        tokio::spawn(async move {
            while let Some(body) = payloads.recv().await {
                deliver(&hook, tls.clone(), body).await;
            }
        });
        Sender { queue, url }
    }

    /// Queues `body` for delivery; never waits.
    pub fn send(&self, body: Bytes) {
        if self.queue.try_send(body).is_err() {
            tracing::warn!(url = %self.url, "alert receiver too slow: an alert was dropped");
        }
    }
}

async fn deliver(hook: &Webhook, tls: Option<Arc<rustls::ClientConfig>>, body: Bytes) {
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        match tokio::time::timeout(ATTEMPT_TIMEOUT, post(hook, tls.clone(), body.clone())).await {
            Ok(Ok(status)) if (200..300).contains(&status) => {
                tracing::debug!(url = %hook.url, status, attempt, "alert delivered");
                return;
            }
            Ok(Ok(status)) => {
                tracing::warn!(url = %hook.url, status, attempt, "alert receiver refused");
            }
            Ok(Err(error)) => {
                tracing::warn!(url = %hook.url, %error, attempt, "alert not delivered")
            }
            Err(_) => tracing::warn!(url = %hook.url, attempt, "alert receiver timed out"),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::error!(url = %hook.url, attempts = ATTEMPTS, "alert given up");
}

fn client_tls() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(config) => Arc::new(config),
        // The ring provider supports its own defaults; unreachable in practice.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

/// One POST; the answer's status code.
async fn post(
    hook: &Webhook,
    tls: Option<Arc<rustls::ClientConfig>>,
    body: Bytes,
) -> Result<u16, String> {
    let stream = TcpStream::connect((hook.host.as_str(), hook.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", hook.host, hook.port))?;
    let authority = if hook.host.contains(':') {
        format!("[{}]:{}", hook.host, hook.port)
    } else {
        format!("{}:{}", hook.host, hook.port)
    };
    let request = hyper::Request::post(hook.path.as_str())
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("hav-coordinator/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    match tls {
        None => send(TokioIo::new(stream), request).await,
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from(hook.host.clone())
                .map_err(|e| format!("{}: {e}", hook.host))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(TokioIo::new(stream), request).await
        }
    }
}

async fn send<S>(io: TokioIo<S>, request: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    // Read the answer to its end, so the receiver sees a clean exchange.
    let _ = response.into_body().collect().await;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let hook = Webhook::parse("http://198.51.100.5:9093/api/hav").expect("valid");
        assert_eq!(
            (hook.host.as_str(), hook.port, hook.path.as_str(), hook.tls),
            ("198.51.100.5", 9093, "/api/hav", false)
        );
        let hook = Webhook::parse("https://alerts.example.test").expect("valid");
        assert_eq!((hook.port, hook.path.as_str(), hook.tls), (443, "/", true));
        let hook = Webhook::parse("http://[2001:db8::5]:8080/x").expect("valid");
        assert_eq!((hook.host.as_str(), hook.port), ("2001:db8::5", 8080));
        assert!(Webhook::parse("ftp://x").is_err());
        assert!(Webhook::parse("http://:80/").is_err());
        assert!(Webhook::parse("http://x:http/").is_err());
    }
}
