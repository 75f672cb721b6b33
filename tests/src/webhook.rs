//! A webhook receiver in a lab host, in the test process: it accepts POSTs on loopback in that
//! host's namespace, answers each with the next status of a script (then 200), and hands every
//! JSON body, with the status it got, to the test.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use crate::netns::{Namespace, NetnsError};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: serde_json::Value,
    /// The status it was answered with.
    pub status: u16,
}

/// The running receiver; its thread ends with the test process (it blocks in `accept`).
#[derive(Debug)]
pub struct Receiver {
    pub address: SocketAddr,
    received: mpsc::Receiver<Received>,
}

impl Receiver {
    /// Listens on `127.0.0.1:0` in `host`; the first requests get `statuses` in order.
    pub fn start(host: &Namespace, statuses: Vec<u16>) -> Result<Receiver, NetnsError> {
        let (address_tx, address_rx) = mpsc::channel();
        let (tx, received) = mpsc::channel();
        host.in_thread(move || {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(|e| NetnsError::io("bind the webhook receiver", e))?;
            let _ = address_tx.send(
                listener
                    .local_addr()
                    .map_err(|e| NetnsError::io("local address", e))?,
            );
            let mut statuses = statuses.into_iter();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((path, body)) = read_request(&mut stream) else {
                    continue;
                };
                let status = statuses.next().unwrap_or(200);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                if tx.send(Received { path, body, status }).is_err() {
                    break;
                }
            }
            Ok(())
        })?;
        let address = address_rx
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| NetnsError::Timeout {
                what: "the webhook receiver to listen".into(),
                timeout: Duration::from_secs(5),
            })?;
        Ok(Receiver { address, received })
    }

    /// The next request, waiting up to `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Received> {
        self.received.recv_timeout(timeout).ok()
    }

    /// Waits for a request whose alerts include one with `alertname` and `status`
    /// (`firing`/`resolved`), skipping others; all requests seen on the way are returned too.
    pub fn wait_alert(
        &self,
        alertname: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<(Received, Vec<Received>), Vec<Received>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(request) = self.next(left) else {
                return Err(seen);
            };
            let matches = request.body["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|a| a["labels"]["alertname"] == alertname && a["status"] == status)
            });
            if matches {
                return Ok((request, seen));
            }
            seen.push(request);
        }
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}
