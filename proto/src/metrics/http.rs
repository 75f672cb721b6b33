//! A minimal HTTP/1.1 server for `GET /metrics`, plain or over TLS: one response per
//! connection, then close.
//!
//! Bounded in every direction: a TLS handshake and a request head of at most 8 KiB read within
//! 5 s, at most 16 connections at once; anything but `GET /metrics` (or `HEAD`) gets 404 or 405.
//! The render function runs once per scrape, never across an await. With TLS, a connection that
//! does not complete the handshake (plain HTTP, an unknown client certificate) gets nothing.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::text::Format;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 16;

/// Stops the server when dropped.
#[derive(Debug)]
pub struct ServerGuard {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServerGuard {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `address` and serves what `render` returns (the exposition in the format the scraper
/// asked for, see [`Format::negotiate`]) from a task of the current runtime.
pub fn serve<F>(
    address: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    render: F,
) -> io::Result<ServerGuard>
where
    F: Fn(Format) -> String + Send + Sync + 'static,
{
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let local_addr = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let render = Arc::new(render);
    let acceptor = tls.map(TlsAcceptor::from);
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "metrics accept failed");
                    continue;
                }
            };
            let render = render.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let result = match acceptor {
                    None => respond(stream, render.as_ref()).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(READ_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => respond(stream, render.as_ref()).await,
                            Ok(Err(error)) => Err(error),
                            Err(_) => Ok(()),
                        }
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, "metrics client went away");
                }
                drop(permit);
            });
        }
    });
    Ok(ServerGuard { local_addr, task })
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    render: &(dyn Fn(Format) -> String + Send + Sync),
) -> io::Result<()> {
    let (head, accept) = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return reply(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                b"bad request\n",
                true,
            )
            .await;
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => return Ok(()),
    };
    let mut words = head.split(' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let format = Format::negotiate(accept.as_deref());
            let body = render(format);
            reply(
                &mut stream,
                "200 OK",
                format.content_type(),
                body.as_bytes(),
                method == "GET",
            )
            .await
        }
        ("GET" | "HEAD", _) => {
            reply(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"try /metrics\n",
                method == "GET",
            )
            .await
        }
        _ => {
            reply(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                b"GET only\n",
                true,
            )
            .await
        }
    }
}

/// The request line and the `Accept` header, once the whole head (up to the blank line)
/// arrived; `None` if it is too long or not HTTP.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> io::Result<Option<(String, Option<String>)>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let mut lines = text.lines();
    let line = lines.next().unwrap_or_default().trim_end();
    if !line.ends_with("HTTP/1.1") && !line.ends_with("HTTP/1.0") {
        return Ok(None);
    }
    let accept = lines
        .take_while(|header| !header.trim().is_empty())
        .filter_map(|header| header.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, value)| value.trim().to_owned());
    Ok(Some((line.to_owned(), accept)))
}

async fn reply<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    async fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_what_render_returns_and_refuses_the_rest() {
        let scrapes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = scrapes.clone();
        let server = serve(
            "127.0.0.1:0".parse().expect("literal"),
            None,
            move |format| {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                format!("scrapes {n} {format:?}\n")
            },
        )
        .expect("bind");
        let address = server.local_addr();
        let ok = get(address, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nscrapes 1 Text\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        let open = get(
            address,
            "GET /metrics HTTP/1.1\r\nHost: x\r\naccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .await;
        assert!(open.ends_with("\r\n\r\nscrapes 2 OpenMetrics\n"), "{open}");
        assert!(
            open.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
            "{open}"
        );
        let head = get(address, "HEAD /metrics HTTP/1.0\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
        assert!(
            get(address, "GET / HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            get(address, "DELETE /metrics HTTP/1.1\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 405")
        );
        assert!(
            get(address, "\x00\x01\r\n\r\n")
                .await
                .starts_with("HTTP/1.1 400")
        );
    }
}
