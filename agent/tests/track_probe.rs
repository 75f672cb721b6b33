//! TCP and HTTP probes against real sockets on 127.0.0.1, including the forward-proxy form
//! (the HTTPS probes are in `track_probe_tls.rs`).

mod track_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hav_agent::track::{self, Health, HttpSpec, ProbeSchedule, TcpSpec, TrackSpec};
use hav_proto::config::ProbeUrl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use track_support::{down_reason, next_health};

fn probe_url(text: &str) -> ProbeUrl {
    text.parse().expect("a valid probe URL")
}

fn fast() -> ProbeSchedule {
    ProbeSchedule {
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
        ..ProbeSchedule::default()
    }
}

#[tokio::test]
async fn tcp_probe_follows_a_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let spec = TcpSpec {
        host: "127.0.0.1".to_owned(),
        port,
        schedule: fast(),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("tcp", TrackSpec::Tcp(spec), tx).expect("spawn");

    assert_eq!(next_health(&mut rx).await, Health::Up);
    drop(listener);
    let down = next_health(&mut rx).await;
    assert!(down_reason(&down).contains("refused"), "{down:?}");
    let _listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    assert_eq!(next_health(&mut rx).await, Health::Up);
}

/// One request as the server saw it: the request head.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.expect("read request") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).expect("ASCII request")
}

/// Answers every connection with `status` (read at answer time) and reports each request head.
async fn serve(
    listener: TcpListener,
    status: Arc<AtomicU16>,
    heads: mpsc::UnboundedSender<String>,
) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let head = read_head(&mut stream).await;
        let code = status.load(Ordering::SeqCst);
        let response =
            format!("HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = stream.write_all(response.as_bytes()).await;
        if heads.send(head).is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn http_probe_checks_the_status_code() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let status = Arc::new(AtomicU16::new(200));
    let (heads_tx, mut heads) = mpsc::unbounded_channel();
    tokio::spawn(serve(listener, status.clone(), heads_tx));
    let spec = HttpSpec {
        url: probe_url(&format!("http://127.0.0.1:{port}/health?deep=1")),
        expected_status: vec![200, 204],
        proxy: None,
        ca_file: None,
        server_name: None,
        schedule: fast(),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("http", TrackSpec::Http(spec), tx).expect("spawn");

    assert_eq!(next_health(&mut rx).await, Health::Up);
    let head = heads.recv().await.expect("a request");
    assert!(
        head.starts_with("GET /health?deep=1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");

    status.store(503, Ordering::SeqCst);
    let down = next_health(&mut rx).await;
    assert!(down_reason(&down).contains("status 503"), "{down:?}");
    status.store(204, Ordering::SeqCst);
    assert_eq!(next_health(&mut rx).await, Health::Up);
}

#[tokio::test]
async fn http_probe_through_a_forward_proxy_sends_the_absolute_url() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_port = proxy.local_addr().expect("local addr").port();
    let (heads_tx, mut heads) = mpsc::unbounded_channel();
    tokio::spawn(serve(proxy, Arc::new(AtomicU16::new(200)), heads_tx));
    // `.invalid` never resolves (RFC 6761): only the proxy may look at the origin.
    let spec = HttpSpec {
        url: probe_url("http://origin.invalid:8080/check"),
        expected_status: Vec::new(),
        proxy: Some(SocketAddr::from(([127, 0, 0, 1], proxy_port))),
        ca_file: None,
        server_name: None,
        schedule: fast(),
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("squid", TrackSpec::Http(spec), tx).expect("spawn");

    assert_eq!(next_health(&mut rx).await, Health::Up);
    let head = heads.recv().await.expect("a request");
    assert!(
        head.starts_with("GET http://origin.invalid:8080/check HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nHost: origin.invalid:8080\r\n"), "{head}");
}

#[tokio::test]
async fn http_probe_rejects_garbage_and_silence() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let (silent_tx, mut silent) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // First connection: not HTTP at all. Later ones: accepted, never answered.
        let (mut stream, _) = listener.accept().await.expect("accept");
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        drop(stream);
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = silent_tx.send(());
        }
    });
    let spec = HttpSpec {
        url: probe_url(&format!("http://127.0.0.1:{port}/")),
        expected_status: Vec::new(),
        proxy: None,
        ca_file: None,
        server_name: None,
        schedule: ProbeSchedule {
            timeout: Duration::from_millis(200),
            ..fast()
        },
    };
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("http", TrackSpec::Http(spec), tx).expect("spawn");

    let down = next_health(&mut rx).await;
    assert!(
        down_reason(&down).contains("malformed status line"),
        "{down:?}"
    );
    // The later, silent connections time out; the health stays down without a new event, so
    // check the server saw them and that the tracker is still running.
    silent.recv().await.expect("a silent connection");
    silent.recv().await.expect("another silent connection");
    assert!(rx.try_recv().is_err(), "no change while still down");
}

#[tokio::test]
async fn zero_intervals_and_timeouts_are_start_errors() {
    for schedule in [
        ProbeSchedule {
            interval: Duration::ZERO,
            ..fast()
        },
        ProbeSchedule {
            timeout: Duration::ZERO,
            ..fast()
        },
    ] {
        let spec = HttpSpec {
            url: probe_url("https://127.0.0.1/"),
            expected_status: Vec::new(),
            proxy: None,
            ca_file: None,
            server_name: None,
            schedule: schedule.clone(),
        };
        let (tx, _rx) = mpsc::channel(16);
        assert!(
            track::spawn("bad", TrackSpec::Http(spec), tx).is_err(),
            "{schedule:?}"
        );
    }
}
