//! Planned hand-overs that break no connection, with real agents in namespaces and a real
//! client: long-lived TCP connections (a byte each way every 20 ms) opened through the master
//! survive its graceful stop and a preempt failback; the old master serves them silently while
//! the new master passes their packets on, and lets go of the VIP once the last one ends. A
//! killed old master stops the forwarding within a master-down interval. Needs root.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{WAIT, instance};
use hav_tests::agent::{Agent, AgentConfig, ECHO_PORT, find_instance, start_echo_httpd};
use hav_tests::netns::{NetnsError, NsProcess, Presence};
use hav_tests::topology::{Lab, Pair};

const DRAIN: Duration = Duration::from_secs(20);
const BEAT: Duration = Duration::from_millis(20);

/// `a` (150) master and `b` (100) backup with a connection drain, each with an echo service.
struct Setup {
    pair: Pair,
    a: Agent,
    b: Agent,
    a_config: AgentConfig,
    vip: IpAddr,
    _servers: Vec<NsProcess>,
}

fn setup() -> Setup {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    let servers = vec![
        start_echo_httpd(&pair.lab, "a").expect("echo a"),
        start_echo_httpd(&pair.lab, "b").expect("echo b"),
    ];
    let config = |node: &str, priority: u8| {
        let mut spec = instance(&pair, node, priority);
        spec.connection_drain = Some(DRAIN);
        AgentConfig::new(node, vec![spec])
    };
    let a_config = config("a", 150);
    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    a.wait_state("VI_1", "Master", WAIT).expect("a master");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    let mut b = Agent::start(&pair.lab, "b", &config("b", 100)).expect("start b");
    b.wait_status("b backup of a", WAIT, |status| {
        find_instance(status, "VI_1")
            .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
    })
    .expect("b backup of a");
    // b arms its forwarding toward the master it hears, ahead of any takeover.
    wait_until("b armed toward a", || forwarding(&pair.lab, "b"));
    Setup {
        pair,
        a,
        b,
        a_config,
        vip,
        _servers: servers,
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `host` passes unowned flows on (its `ip hav` table holds a `dup` rule).
fn forwarding(lab: &Lab, host: &str) -> bool {
    lab.exec(host, &["nft", "list", "table", "ip", "hav"])
        .is_ok_and(|out| out.success() && out.stdout.contains("dup to"))
}

/// Long-lived connections from the client, each greeted by the node that accepted it, then
/// echoing one counter byte every [`BEAT`].
struct Flows {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<FlowReport, NetnsError>>>,
}

#[derive(Debug, Default)]
struct FlowReport {
    /// Connections by the node that greeted them.
    greeted: BTreeMap<String, usize>,
    /// Connections that failed (reset, timed out, or echoed the wrong byte), with the first
    /// error of each.
    broken: Vec<String>,
    rounds: u64,
}

impl Flows {
    fn open(lab: &Lab, vip: IpAddr, count: usize) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let (opened_tx, opened_rx) = std::sync::mpsc::channel();
        let thread = {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            lab.host("client")
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
    fn run_rounds(&self, n: u64) {
        let target = self.rounds.load(Ordering::Relaxed) + n;
        wait_until("rounds of bytes", || {
            self.rounds.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops, closes every connection, and reports.
    fn close(mut self) -> FlowReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("client thread")
            .expect("client flows")
    }
}

fn read_line(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while byte[0] != b'\n' {
        stream.read_exact(&mut byte)?;
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim().to_owned())
}

/// Which node greets a new connection through the VIP.
fn greeter(lab: &Lab, vip: IpAddr) -> String {
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

#[test]
fn connections_through_a_master_survive_its_graceful_stop_and_it_lets_go_after_the_last() {
    let mut s = setup();
    let flows = Flows::open(&s.pair.lab, s.vip, 200);
    flows.run_rounds(5);

    s.a.terminate().expect("SIGTERM a");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    s.a.wait_log("serving its connections until they end", WAIT)
        .expect("a parks its VIP");
    // New connections go to the new master, while a still holds the VIP (silently).
    assert_eq!(greeter(&s.pair.lab, s.vip), "b");
    assert!(
        s.pair
            .lab
            .addresses("a", &s.pair.a.iface)
            .expect("a's addresses")
            .contains(&s.vip),
        "a keeps the VIP for its connections"
    );
    // A second of traffic through the hand-over.
    flows.run_rounds(50);
    let report = flows.close();
    eprintln!("graceful stop: {report:?}");
    assert_eq!(report.greeted.get("a"), Some(&200), "{report:?}");
    assert!(
        report.broken.is_empty(),
        "connections broke: {:?}",
        report.broken
    );

    // The last connection closed: a lets go within a second and exits.
    let closed = Instant::now();
    s.pair
        .lab
        .wait_address("a", s.vip, Presence::Absent, Duration::from_secs(3))
        .expect("a lets go of the VIP");
    let let_go = closed.elapsed();
    eprintln!(
        "old master let go {} ms after the last connection closed",
        let_go.as_millis()
    );
    assert!(let_go < Duration::from_secs(1), "{let_go:?}");
    assert_eq!(
        s.a.wait_exit(WAIT).expect("a exits"),
        "exit 0",
        "{}",
        s.a.log()
    );
    assert!(s.a.log().contains("no connection left"), "{}", s.a.log());
    // b forwards nothing any more: the old master told it so.
    wait_until("b's forwarding removed", || !forwarding(&s.pair.lab, "b"));
}

#[test]
fn connections_survive_a_preempt_failback_both_ways() {
    let mut s = setup();
    // a steps down: lower priority by reload, so it resigns at once to b.
    let through_a = Flows::open(&s.pair.lab, s.vip, 50);
    let mut lower = s.a_config.clone();
    lower.instances[0].priority = 50;
    s.a.write_config(&lower).expect("config");
    s.a.reload().expect("SIGHUP");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    through_a.run_rounds(25);
    let through_b = Flows::open(&s.pair.lab, s.vip, 50);
    // a's priority back: it preempts b; b keeps serving what it accepted.
    s.a.write_config(&s.a_config).expect("config");
    s.a.reload().expect("SIGHUP");
    s.a.wait_state("VI_1", "Master", WAIT).expect("a preempts");
    through_a.run_rounds(25);
    through_b.run_rounds(25);
    let (first, second) = (through_a.close(), through_b.close());
    eprintln!("failback: {first:?} {second:?}");
    assert_eq!(first.greeted.get("a"), Some(&50), "{first:?}");
    assert_eq!(second.greeted.get("b"), Some(&50), "{second:?}");
    assert!(first.broken.is_empty(), "through a: {:?}", first.broken);
    assert!(second.broken.is_empty(), "through b: {:?}", second.broken);
    // b lets go once its connections are gone.
    s.pair
        .lab
        .wait_address("b", s.vip, Presence::Absent, Duration::from_secs(3))
        .expect("b lets go");
}

#[test]
fn a_killed_old_master_ends_the_forwarding_within_a_master_down_interval() {
    let mut s = setup();
    let flows = Flows::open(&s.pair.lab, s.vip, 20);
    s.a.terminate().expect("SIGTERM a");
    s.b.wait_state("VI_1", "Master", WAIT)
        .expect("b takes over");
    s.a.wait_log("serving its connections until they end", WAIT)
        .expect("a parks its VIP");
    flows.run_rounds(5);
    assert!(forwarding(&s.pair.lab, "b"), "b forwards during the drain");
    let killed = Instant::now();
    s.a.kill().expect("kill a");
    wait_until("b stops forwarding", || !forwarding(&s.pair.lab, "b"));
    let stopped = killed.elapsed();
    eprintln!(
        "forwarding ended {} ms after the old master died",
        stopped.as_millis()
    );
    // Beacons every 100 ms, three missed plus one interval; an nft run on top.
    assert!(stopped < Duration::from_millis(800), "{stopped:?}");
    // From then on the new master answers those flows itself (with resets), as without a drain.
    flows.run_rounds(5);
    let report = flows.close();
    assert_eq!(report.broken.len(), 20, "{report:?}");
    assert_eq!(greeter(&s.pair.lab, s.vip), "b");
}
