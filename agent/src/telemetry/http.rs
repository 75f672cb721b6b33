//! `GET /metrics` for the agent: the shared server of [`hav_proto::metrics::http`] rendering the
//! agent's [`Registry`]. The registry lock is held only while rendering, never across an await.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub use hav_proto::metrics::http::ServerGuard;

use super::metrics::Registry;

/// Binds `address` and serves `registry` (over TLS with `tls`) from a task of the current
/// runtime.
pub fn serve(
    address: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    registry: Arc<Mutex<Registry>>,
) -> io::Result<ServerGuard> {
    hav_proto::metrics::http::serve(address, tls, move |format| {
        // A poisoned lock only means a panic elsewhere mid-update; the values are still plain
        // numbers, so serve them.
        match registry.lock() {
            Ok(registry) => registry.render(format),
            Err(poisoned) => poisoned.into_inner().render(format),
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let server = serve("127.0.0.1:0".parse().expect("literal"), None, registry).expect("bind");
        let address = server.local_addr();
        let ok = get(address, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\r\n\r\n# HELP hav_build_info"), "{ok}");
        let missing = get(address, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post = get(address, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        let garbage = get(address, "\x00\x01\x02\r\n\r\n").await;
        assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    }
}
