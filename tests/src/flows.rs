//! Long-lived TCP connections from a lab's client to the echo service of `hav-test-httpd`
//! ([`crate::agent::start_echo_httpd`]): each greeted by the node that accepted it, then echoing
//! one counter byte every [`BEAT`], so that a connection broken by a hand-over shows as an
//! error or a wrong byte.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::ECHO_PORT;
use crate::netns::NetnsError;
use crate::topology::Lab;

/// How often each connection echoes a byte.
pub const BEAT: Duration = Duration::from_millis(20);

/// The lab host the connections come from.
pub const CLIENT: &str = "client";

/// Safety net of every wait here.
const WAIT: Duration = Duration::from_secs(10);

/// Long-lived connections from the client, each greeted by the node that accepted it, then
/// echoing one counter byte every [`BEAT`].
pub struct Flows {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<FlowReport, NetnsError>>>,
}

#[derive(Debug, Default)]
pub struct FlowReport {
    /// Connections by the node that greeted them.
    pub greeted: BTreeMap<String, usize>,
    /// Connections that failed (reset, timed out, or echoed the wrong byte), with the first
    /// error of each.
    pub broken: Vec<String>,
    pub rounds: u64,
}

impl Flows {
    pub fn open(lab: &Lab, vip: IpAddr, count: usize) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            lab.host(CLIENT)
                .expect("client")
                .in_thread(move || {
                    let mut report = FlowReport::default();
                    let mut streams = Vec::new();
                    for _ in 0..count {
                        let mut stream =
                            TcpStream::connect_timeout(&SocketAddr::new(vip, ECHO_PORT), WAIT)
                                .map_err(|e| NetnsError::io("connect", e))?;
                        stream.set_nodelay(true).ok();
                        stream.set_read_timeout(Some(Duration::from_secs(2))).ok();
                        let node =
                            read_line(&mut stream).map_err(|e| NetnsError::io("greeting", e))?;
                        *report.greeted.entry(node).or_default() += 1;
                        streams.push(Some(stream));
                    }
                    let _ = opened_tx.send(());
                    let mut counter: u8 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        counter = counter.wrapping_add(1);
                        for slot in &mut streams {
                            let Some(stream) = slot else { continue };
                            let mut back = [0u8; 1];
                            let result = stream
                                .write_all(&[counter])
                                .and_then(|()| stream.read_exact(&mut back));
                            let failure = match result {
                                Err(e) => Some(e.to_string()),
                                Ok(()) if back[0] != counter => {
                                    Some(format!("echoed {} for {counter}", back[0]))
                                }
                                Ok(()) => None,
                            };
                            if let Some(failure) = failure {
                                report.broken.push(failure);
                                *slot = None;
                            }
                        }
                        rounds.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(BEAT.saturating_sub(started.elapsed()));
                    }
                    report.rounds = rounds.load(Ordering::Relaxed);
                    Ok(report)
                })
                .expect("client thread")
        };
        opened_rx
            .recv_timeout(WAIT * 3)
            .expect("connections opened");
        Flows {
            stop,
            rounds,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more rounds went through every connection.
    pub fn run_rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        wait_until("rounds of bytes", || {
            self.rounds.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops, closes every connection, and reports.
    pub fn close(mut self) -> FlowReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("client thread")
            .expect("client flows")
    }
}

pub fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte)?;
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim().to_owned())
}

/// Which node greets a new connection through the VIP.
/// Which node greets a new connection to `vip` within `timeout`; `None` when nobody does.
pub fn try_greeter(lab: &Lab, vip: IpAddr, timeout: Duration) -> Option<String> {
    let thread = lab
        .host("client")
        .ok()?
        .in_thread(move || {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::new(vip, ECHO_PORT), timeout)
                .map_err(|e| NetnsError::io("connect", e))?;
            stream.set_read_timeout(Some(timeout)).ok();
            read_line(&mut stream).map_err(|e| NetnsError::io("greeting", e))
        })
        .ok()?;
    thread.join().ok()?.ok()
}

pub fn greeter(lab: &Lab, vip: IpAddr) -> String {
    let thread = lab
        .host("client")
        .expect("client")
        .in_thread(move || {
            let mut stream = TcpStream::connect_timeout(&SocketAddr::new(vip, ECHO_PORT), WAIT)
                .map_err(|e| NetnsError::io("connect", e))?;
            stream.set_read_timeout(Some(WAIT)).ok();
            read_line(&mut stream).map_err(|e| NetnsError::io("greeting", e))
        })
        .expect("client thread");
    thread.join().expect("joined").expect("a new connection")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
