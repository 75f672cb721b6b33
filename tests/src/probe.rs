//! A client that polls a VIP over HTTP from inside a namespace, and the outage analysis.
//!
//! [`Prober::start`] runs a thread that has joined the client namespace; every `interval` it
//! starts a new, independent attempt (connect with a short timeout, `GET /`, read the node name
//! that `hav-test-httpd` returns), so a hung attempt never delays the next one and the outage is
//! resolved to about one interval. Every attempt is recorded as a [`Sample`] with
//! `std::time::Instant`s (CLOCK_MONOTONIC), comparable with instants taken by the test itself.
//!
//! [`ProbeStream`] does the same for many targets at once for as long as a soak runs: it keeps
//! nothing and hands every sample, numbered per target in start order, to a sink.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::netns::{Namespace, NetnsError};

/// How the prober polls.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    pub target: SocketAddr,
    /// Time between the starts of two attempts.
    pub interval: Duration,
    pub connect_timeout: Duration,
    /// Time allowed from connected to the complete reply.
    pub reply_timeout: Duration,
}

impl ProbeConfig {
    /// 5 ms between attempts, 100 ms connect timeout, 200 ms reply timeout.
    pub fn new(target: SocketAddr) -> Self {
        ProbeConfig {
            target,
            interval: Duration::from_millis(5),
            connect_timeout: Duration::from_millis(100),
            reply_timeout: Duration::from_millis(200),
        }
    }
}

/// Why one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeError {
    ConnectTimeout,
    Refused,
    Unreachable,
    Reset,
    ReplyTimeout,
    /// A reply that is not `HTTP/1.x 200` with a body.
    BadReply,
    Io(io::ErrorKind),
}

/// One attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub sent: Instant,
    pub done: Instant,
    /// The answering node's name, or why there was no answer.
    pub outcome: Result<String, ProbeError>,
}

impl Sample {
    pub fn node(&self) -> Option<&str> {
        self.outcome.as_deref().ok()
    }
}

#[derive(Debug, Default)]
struct Shared {
    samples: Mutex<Vec<Sample>>,
    recorded: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Sample>> {
        // A poisoned lock only means a panic elsewhere; the samples are still valid.
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running prober; stopped on drop.
#[derive(Debug)]
pub struct Prober {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

impl Prober {
    /// Starts probing `config.target` from inside `client`.
    pub fn start(client: &Namespace, config: ProbeConfig) -> Result<Prober, NetnsError> {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            let name = client.name().to_owned();
            client.in_thread(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| NetnsError::Io {
                        what: format!("prober runtime in {name}"),
                        source: e,
                    })?;
                runtime.block_on(probe_loop(config, shared, stop));
                Ok(())
            })?
        };
        Ok(Prober {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// A copy of the samples so far, in completion order.
    pub fn samples(&self) -> Vec<Sample> {
        self.shared.lock().clone()
    }

    /// Waits until an attempt completed after `after` got a reply from `node`; returns it.
    pub fn wait_for_reply(
        &self,
        node: &str,
        after: Instant,
        timeout: Duration,
    ) -> Result<Sample, NetnsError> {
        let deadline = Instant::now() + timeout;
        let mut samples = self.shared.lock();
        let mut checked = 0;
        loop {
            if let Some(found) = samples[checked..]
                .iter()
                .find(|s| s.done >= after && s.node() == Some(node))
            {
                return Ok(found.clone());
            }
            checked = samples.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetnsError::Timeout {
                    what: format!("a probe reply from {node}"),
                    timeout,
                });
            }
            samples = self
                .shared
                .recorded
                .wait_timeout(samples, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stops starting attempts, lets those in flight finish (at most connect + reply timeout),
    /// and returns all samples.
    pub fn stop(mut self) -> Vec<Sample> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One attempt of a [`ProbeStream`]: which target, its place in that target's start order
/// (0, 1, 2, ... with no gaps), and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSample {
    pub target: usize,
    pub seq: u64,
    pub sample: Sample,
}

/// Where a [`ProbeStream`] hands its samples, on the prober's thread, in completion order.
pub type SampleSink = Arc<dyn Fn(StreamSample) + Send + Sync>;

/// Probes several targets from one client namespace, each every `interval` with a new
/// connection, keeping no samples (a soak runs for hours); stopped on drop. All targets share
/// one thread and one tick, so their attempts start together.
pub struct ProbeStream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), NetnsError>>>,
}

impl std::fmt::Debug for ProbeStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeStream").finish_non_exhaustive()
    }
}

impl ProbeStream {
    /// Starts probing every target of `targets` (one [`ProbeConfig`] each; the first one's
    /// `interval` paces them all) from inside `client`.
    pub fn start(
        client: &Namespace,
        targets: Vec<ProbeConfig>,
        sink: SampleSink,
    ) -> Result<ProbeStream, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let interval = targets
            .first()
            .map_or(Duration::from_millis(5), |t| t.interval);
        let thread = {
            let stop = stop.clone();
            let name = client.name().to_owned();
            client.in_thread(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| NetnsError::Io {
                        what: format!("prober runtime in {name}"),
                        source: e,
                    })?;
                runtime.block_on(stream_loop(targets, interval, sink, stop));
                Ok(())
            })?
        };
        Ok(ProbeStream {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops starting attempts and waits for those in flight (at most connect + reply timeout).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProbeStream {
    fn drop(&mut self) {
        self.halt();
    }
}

async fn stream_loop(
    targets: Vec<ProbeConfig>,
    interval: Duration,
    sink: SampleSink,
    stop: Arc<AtomicBool>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        while in_flight.try_join_next().is_some() {}
        for (target, config) in targets.iter().enumerate() {
            let (config, sink) = (*config, sink.clone());
            in_flight.spawn(async move {
                let sent = Instant::now();
                let outcome = attempt(&config).await;
                sink(StreamSample {
                    target,
                    seq,
                    sample: Sample {
                        sent,
                        done: Instant::now(),
                        outcome,
                    },
                });
            });
        }
        seq += 1;
    }
    while in_flight.join_next().await.is_some() {}
}

async fn probe_loop(config: ProbeConfig, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        ticks.tick().await;
        // Reap finished attempts so the set stays small.
        while in_flight.try_join_next().is_some() {}
        let shared = shared.clone();
        // Spawned on this (namespace-joined) thread's current-thread runtime, so the socket
        // below is created in the client namespace.
        in_flight.spawn(async move {
            let sent = Instant::now();
            let outcome = attempt(&config).await;
            let sample = Sample {
                sent,
                done: Instant::now(),
                outcome,
            };
            shared.lock().push(sample);
            shared.recorded.notify_all();
        });
    }
    // Attempts in flight end within their timeouts; their outcomes belong to the record
    // (a probe sent just before the takeover that times out afterwards is a failed probe).
    while in_flight.join_next().await.is_some() {}
}

async fn attempt(config: &ProbeConfig) -> Result<String, ProbeError> {
    let socket = match config.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(classify)?;
    let mut stream = tokio::time::timeout(config.connect_timeout, socket.connect(config.target))
        .await
        .map_err(|_| ProbeError::ConnectTimeout)?
        .map_err(classify)?;
    let exchange = async {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
            .await?;
        let mut reply = Vec::with_capacity(256);
        stream.read_to_end(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    };
    let reply = tokio::time::timeout(config.reply_timeout, exchange)
        .await
        .map_err(|_| ProbeError::ReplyTimeout)?
        .map_err(classify)?;
    parse_reply(&reply).ok_or(ProbeError::BadReply)
}

/// The body of an `HTTP/1.x 200` reply, trimmed.
fn parse_reply(reply: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(reply).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") || parts.next()? != "200" {
        return None;
    }
    let node = body.trim();
    (!node.is_empty()).then(|| node.to_owned())
}

fn classify(e: io::Error) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ProbeError::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => ProbeError::Unreachable,
        Some(libc::ECONNRESET | libc::EPIPE) => ProbeError::Reset,
        _ => ProbeError::Io(e.kind()),
    }
}

/// Converts an [`Instant`] into CLOCK_MONOTONIC nanoseconds, the clock every process on the
/// host shares (std's `Instant` is CLOCK_MONOTONIC on Linux, but opaque), so instants can be
/// compared with timestamps that another process (an agent's log, a notify hook) reports.
pub fn monotonic_ns(instant: Instant) -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let reference = Instant::now();
    // SAFETY: a valid timespec out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let now_ns = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec).unwrap_or(0);
    if instant >= reference {
        now_ns.saturating_add(u64::try_from((instant - reference).as_nanos()).unwrap_or(u64::MAX))
    } else {
        now_ns.saturating_sub(u64::try_from((reference - instant).as_nanos()).unwrap_or(u64::MAX))
    }
}

/// What a failover looked like from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverReport {
    /// The node that answered the last successful attempt completed before the fault.
    pub before: Option<String>,
    /// The node expected to answer after the failover.
    pub new_holder: String,
    /// From the fault to the completion of the first reply from `new_holder`; `None` if it
    /// never answered.
    pub outage: Option<Duration>,
    /// Failed attempts completed after the fault and started before that first good reply.
    pub failed_probes: usize,
    /// Replies from the previous holder completed after the fault (e.g. a killed daemon that
    /// left its VIP in place while the client's ARP entry still pointed at it).
    pub old_holder_replies: usize,
    /// Attempts started between the fault and the first good reply.
    pub probes_in_window: usize,
}

/// How long before a fault an attempt may have begun and still count as in flight at the fault:
/// one probe interval at the default cadence.
pub const IN_FLIGHT_AT_FAULT: Duration = Duration::from_millis(5);

/// Analyses `samples` around a fault that happened at `fault`.
pub fn analyse(samples: &[Sample], fault: Instant, new_holder: &str) -> FailoverReport {
    let before = samples
        .iter()
        .filter(|s| s.done < fault && s.outcome.is_ok())
        .max_by_key(|s| s.done)
        .and_then(|s| s.node().map(str::to_owned));
    let first_good = samples
        .iter()
        .filter(|s| s.done >= fault && s.node() == Some(new_holder))
        .min_by_key(|s| s.done);
    let window_end = first_good.map(|s| s.sent);
    // An attempt begun well before the fault belongs to the state before it (e.g. one still timing
    // out from an earlier disturbance); one begun within a probe interval of it was in flight.
    let begun = fault.checked_sub(IN_FLIGHT_AT_FAULT).unwrap_or(fault);
    let in_window = |s: &&Sample| {
        s.done >= fault && s.sent >= begun && window_end.is_none_or(|end| s.sent < end)
    };
    FailoverReport {
        before: before.clone(),
        new_holder: new_holder.to_owned(),
        outage: first_good.map(|s| s.done.saturating_duration_since(fault)),
        failed_probes: samples
            .iter()
            .filter(in_window)
            .filter(|s| s.outcome.is_err())
            .count(),
        old_holder_replies: samples
            .iter()
            .filter(|s| s.done >= fault && before.is_some() && s.node() == before.as_deref())
            .filter(|_| before.as_deref() != Some(new_holder))
            .count(),
        probes_in_window: samples
            .iter()
            .filter(|s| s.sent >= fault && window_end.is_none_or(|end| s.sent < end))
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: Instant, sent_ms: u64, done_ms: u64, node: Option<&str>) -> Sample {
        Sample {
            sent: base + Duration::from_millis(sent_ms),
            done: base + Duration::from_millis(done_ms),
            outcome: node.map(str::to_owned).ok_or(ProbeError::ConnectTimeout),
        }
    }

    #[test]
    fn outage_runs_from_fault_to_first_reply_of_new_holder() {
        let t = Instant::now();
        let samples = vec![
            sample(t, 0, 1, Some("a")),
            sample(t, 5, 6, Some("a")),
            sample(t, 10, 110, None),
            sample(t, 15, 115, None),
            sample(t, 20, 21, Some("a")), // the old holder still answers once
            sample(t, 120, 122, Some("b")),
            sample(t, 125, 126, Some("b")),
        ];
        let report = analyse(&samples, t + Duration::from_millis(8), "b");
        assert_eq!(report.before.as_deref(), Some("a"));
        assert_eq!(report.outage, Some(Duration::from_millis(114)));
        assert_eq!(report.failed_probes, 2);
        assert_eq!(report.old_holder_replies, 1);
        assert_eq!(report.probes_in_window, 3);
    }

    #[test]
    fn no_reply_from_new_holder_means_no_outage_figure() {
        let t = Instant::now();
        let samples = vec![sample(t, 0, 1, Some("a")), sample(t, 5, 105, None)];
        let report = analyse(&samples, t + Duration::from_millis(2), "b");
        assert_eq!(report.outage, None);
        assert_eq!(report.failed_probes, 1);
    }

    #[test]
    fn monotonic_ns_orders_like_instants() {
        let earlier = Instant::now();
        let later = earlier + Duration::from_millis(3);
        let (a, b) = (monotonic_ns(earlier), monotonic_ns(later));
        // Two clock reads lie between the conversions; allow a millisecond of slack.
        assert!(b > a && (b - a).abs_diff(3_000_000) < 1_000_000, "{a} {b}");
    }

    #[test]
    fn replies_parse_only_when_status_is_200_with_a_body() {
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\na\n").as_deref(),
            Some("a")
        );
        assert_eq!(parse_reply(b"HTTP/1.1 503 Busy\r\n\r\na\n"), None);
        assert_eq!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(parse_reply(b"garbage"), None);
        assert_eq!(parse_reply(&[0xff, 0xfe]), None);
    }
}
