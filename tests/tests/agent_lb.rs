//! Load balancing with keepalived's `virtual_server` semantics on nftables, seen from a client in
//! its own namespace, behind two real hav-agents: the share of connections each real server gets
//! per scheduler (rr equal, wrr by weight, sh stable per source) over TCP and UDP; a real server
//! killed leaves the rotation within `delay_loop + retry × delay_before_retry` and comes back
//! when it heals, established connections untouched; a reload that changes weights applies on
//! the master and keeps DR's flow maps; the backup checks too (its status shows the dead server)
//! and serves the same real servers when the master dies; NAT and DR. Needs root and nft;
//! `cargo build -p hav-agent` first.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hav_tests::lb::{LbLab, Mode, REAL_PORT, Reply, read_name, shares};

/// How long the status may take to show a change.
const WAIT_STATUS: Duration = Duration::from_secs(5);

fn rs(index: usize) -> String {
    LbLab::server_address(index).to_string()
}

/// A `[[virtual_server]]` on the VIP with `servers` real servers (weights as given).
fn service(
    name: &str,
    vip: &str,
    port_line: &str,
    extra: &str,
    weights: &[u32],
    check: &str,
) -> String {
    let mut text = format!(
        "\n[[virtual_server]]\nname = \"{name}\"\naddress = \"{vip}\"\n{port_line}\ndelay_loop = \"1s\"\n{extra}\n"
    );
    for (index, weight) in weights.iter().enumerate() {
        text.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\nweight = {weight}\n{check}\n",
            rs(index)
        ));
    }
    text
}

const TCP_CHECK: &str = "[virtual_server.real_server.check]\nkind = \"tcp\"\nconnect_timeout = \"500ms\"\nretry = 1\ndelay_before_retry = \"300ms\"";

fn count_of(shares: &std::collections::BTreeMap<String, usize>, server: &str) -> usize {
    shares.get(server).copied().unwrap_or(0)
}

fn assert_share(
    test: &str,
    replies: &[Result<Reply, String>],
    expected: &[(&str, f64)],
    tolerance: f64,
) {
    let failures = replies.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failures,
        0,
        "{test}: failed requests: {:?}",
        replies.iter().find(|r| r.is_err())
    );
    let counts = shares(replies);
    let total = replies.len() as f64;
    let mut line = Vec::new();
    for (server, share) in expected {
        let got = count_of(&counts, server) as f64 / total;
        line.push(format!("{server} {:.1}%", got * 100.0));
        assert!(
            (got - share).abs() <= tolerance,
            "{test}: {server} got {:.3} of {total} connections, expected {share:.3}: {counts:?}",
            got
        );
    }
    eprintln!(
        "figure: {test}: {} ({} requests)",
        line.join(", "),
        replies.len()
    );
}

#[test]
fn nat_shares_connections_rr_equally_wrr_by_weight_sh_by_source_over_tcp_and_udp() {
    let vip = "203.0.113.1";
    let real = format!("port = {REAL_PORT}");
    let mut services = String::new();
    services += &service(
        "rr",
        vip,
        "port = 80",
        "lb_algo = \"rr\"",
        &[1, 1, 1],
        TCP_CHECK,
    );
    services += &service(
        "wrr",
        vip,
        "port = 81",
        "lb_algo = \"wrr\"",
        &[1, 2, 3],
        "[virtual_server.real_server.check]\nkind = \"http\"\npath = \"/\"\nstatus_code = [200]",
    );
    services += &service(
        "sh",
        vip,
        "port = 82",
        "lb_algo = \"sh\"",
        &[1, 1, 1],
        "[virtual_server.real_server.check]\nkind = \"misc\"\nprogram = [\"/bin/true\"]",
    );
    services += &service(
        "dns",
        vip,
        "port = 53",
        "lb_algo = \"rr\"\nprotocol = \"udp\"",
        &[1, 1, 1],
        "",
    );
    // Every real server listens on REAL_PORT: name it in each entry.
    let services = services.replace("\nweight", &format!("\n{real}\nweight"));
    let lab = LbLab::start(Mode::Nat, 3, &services).expect("lab");

    let rr = lab.connect(80, None, 300).expect("client");
    assert_share(
        "nat rr tcp",
        &rr,
        &[("rs1", 1.0 / 3.0), ("rs2", 1.0 / 3.0), ("rs3", 1.0 / 3.0)],
        0.02,
    );
    let wrr = lab.connect(81, None, 600).expect("client");
    assert_share(
        "nat wrr 1:2:3 tcp",
        &wrr,
        &[("rs1", 1.0 / 6.0), ("rs2", 2.0 / 6.0), ("rs3", 3.0 / 6.0)],
        0.02,
    );
    let udp = lab.ask_udp(53, 150).expect("client");
    assert_share(
        "nat rr udp",
        &udp,
        &[("rs1", 1.0 / 3.0), ("rs2", 1.0 / 3.0), ("rs3", 1.0 / 3.0)],
        0.03,
    );

    let sources = lab.client_sources(12).expect("client addresses");
    let mut used = BTreeSet::new();
    for source in &sources {
        let replies = lab.connect(82, Some(*source), 4).expect("client");
        let servers: BTreeSet<String> = replies
            .iter()
            .map(|r| r.as_ref().map(|r| r.server.clone()).expect("sh reply"))
            .collect();
        assert_eq!(servers.len(), 1, "source {source} reached {servers:?}");
        used.extend(servers);
    }
    eprintln!(
        "figure: nat sh: 12 sources x 4 connections, each source on one server, {} servers used",
        used.len()
    );
    assert!(used.len() >= 2, "12 sources all hashed to {used:?}");
}

#[test]
fn nat_real_server_death_leaves_rotation_within_its_bound_heals_back_and_the_backup_serves_after_a_crash()
 {
    let services = service(
        "web",
        "203.0.113.1",
        "port = 80",
        "lb_algo = \"rr\"",
        &[1, 1, 1],
        TCP_CHECK,
    )
    .replace("\nweight", &format!("\nport = {REAL_PORT}\nweight"));
    let mut lab = LbLab::start(Mode::Nat, 3, &services).expect("lab");
    let bound = Duration::from_secs(1) + Duration::from_millis(300);

    // One established connection to each real server, held across the change.
    let held = hold_connections(&lab, 3);
    let killed = Instant::now();
    lab.kill_server("rs2").expect("kill rs2");
    let (removal, streak) = lab.settle(80, 30, killed, Duration::from_secs(10));
    eprintln!(
        "figure: nat rr: rs2 killed, out of rotation after {removal:?} (bound delay_loop + retry x delay_before_retry = {bound:?})"
    );
    assert!(
        removal <= bound + Duration::from_millis(500),
        "removal took {removal:?}"
    );
    assert!(streak.iter().all(|r| r.server != "rs2"));
    // The backup checks too, so a new master starts from the current set.
    let key = format!("real_server:web {}:{REAL_PORT}", rs(1));
    lab.b
        .wait_status("rs2 down on the backup", WAIT_STATUS, |status| {
            status["trackers"][&key]
                .as_str()
                .is_some_and(|health| health.starts_with("down"))
        })
        .unwrap_or_else(|e| panic!("the backup sees rs2 down: {e}"));
    let answered = finish_held(held);
    assert!(
        answered.iter().any(|s| s == "rs1") && answered.iter().any(|s| s == "rs3"),
        "connections to the living servers were disturbed by the change: {answered:?}"
    );

    let healed = Instant::now();
    lab.heal_server("rs2").expect("restart rs2");
    loop {
        let reply = lab.connect(80, None, 3).expect("client");
        if shares(&reply).contains_key("rs2") {
            break;
        }
        assert!(
            healed.elapsed() < Duration::from_secs(5),
            "rs2 never came back"
        );
    }
    eprintln!(
        "figure: nat rr: rs2 healed, back in rotation after {:?} (delay_loop 1s)",
        healed.elapsed()
    );
    // The backup's own check readmits rs2 in its own time (delay_loop): the new master starts
    // from the set the backup checked, so the crash waits until that set holds rs2 again.
    lab.b
        .wait_status("rs2 up on the backup", WAIT_STATUS, |status| {
            status["trackers"][&key].as_str() == Some("up")
        })
        .unwrap_or_else(|e| panic!("the backup sees rs2 up: {e}"));

    assert!(
        lab.tables("b").expect("nft").is_empty(),
        "the backup programs nothing"
    );
    let crashed = Instant::now();
    lab.node_dies("a").expect("a dies");
    let (outage, _) = lab.settle(80, 6, crashed, Duration::from_secs(10));
    lab.b
        .wait_state("VI_1", "Master", Duration::from_secs(5))
        .expect("b master");
    assert!(
        lab.tables("b").expect("nft").contains("lb_vs0"),
        "b balances"
    );
    let after = lab.connect(80, None, 30).expect("client");
    eprintln!(
        "figure: nat rr: master died (SIGKILL, links down), backup serves after {outage:?} (master-down 361 ms)"
    );
    assert!(
        outage < Duration::from_secs(2),
        "backup served only after {outage:?}"
    );
    assert_share(
        "nat rr after failover",
        &after,
        &[("rs1", 1.0 / 3.0), ("rs2", 1.0 / 3.0), ("rs3", 1.0 / 3.0)],
        0.01,
    );
}

#[test]
fn dr_sends_packets_unchanged_to_real_servers_that_answer_directly_and_the_backup_takes_over() {
    let vip = "198.51.100.1";
    let mut services = service(
        "web",
        vip,
        "port = 80",
        "lb_algo = \"rr\"\nlb_kind = \"dr\"",
        &[1, 1],
        TCP_CHECK,
    );
    services += &service(
        "web-udp",
        vip,
        "port = 80",
        "lb_algo = \"wrr\"\nlb_kind = \"dr\"\nprotocol = \"udp\"",
        &[1, 3],
        "",
    );
    let mut lab = LbLab::start(Mode::Dr, 2, &services).expect("lab");
    let rr = lab.connect(80, None, 200).expect("client");
    assert_share("dr rr tcp", &rr, &[("rs1", 0.5), ("rs2", 0.5)], 0.02);
    let udp = lab.ask_udp(80, 200).expect("client");
    assert_share(
        "dr wrr 1:3 udp",
        &udp,
        &[("rs1", 0.25), ("rs2", 0.75)],
        0.03,
    );

    // A reload that changes only weights rewrites only the pick chains, on the master alone,
    // and keeps the flow maps: a connection held to rs1 still reaches rs1 after rs1's weight
    // went to 0 (a re-scheduled packet would reach rs2, which knows no such connection).
    let held = hold_connections(&lab, 2);
    let mut reweighted = service(
        "web",
        vip,
        "port = 80",
        "lb_algo = \"rr\"\nlb_kind = \"dr\"",
        &[0, 1],
        TCP_CHECK,
    );
    reweighted += &service(
        "web-udp",
        vip,
        "port = 80",
        "lb_algo = \"wrr\"\nlb_kind = \"dr\"\nprotocol = \"udp\"",
        &[1, 1],
        "",
    );
    lab.reconfigure(&reweighted).expect("reload");
    let reloaded = Instant::now();
    loop {
        let udp = lab.ask_udp(80, 40).expect("client");
        let rs1 = shares(&udp).get("rs1").copied().unwrap_or(0);
        if (17..=23).contains(&rs1) {
            break;
        }
        assert!(
            reloaded.elapsed() < Duration::from_secs(5),
            "weights 1:1 not applied: {:?}",
            shares(&udp)
        );
    }
    let mut answered = finish_held(held);
    answered.sort();
    assert_eq!(answered, ["rs1", "rs2"], "held DR flows were re-scheduled");
    let udp = lab.ask_udp(80, 200).expect("client");
    assert_share(
        "dr wrr 1:1 udp after reload",
        &udp,
        &[("rs1", 0.5), ("rs2", 0.5)],
        0.03,
    );

    // Back to the first weights before a real server dies.
    lab.reconfigure(&services).expect("reload");
    let restored = Instant::now();
    while !shares(&lab.connect(80, None, 4).expect("client")).contains_key("rs1") {
        assert!(restored.elapsed() < Duration::from_secs(5), "rs1 not back");
    }

    let killed = Instant::now();
    lab.kill_server("rs1").expect("kill rs1");
    let (removal, _) = lab.settle(80, 20, killed, Duration::from_secs(10));
    eprintln!("figure: dr rr: rs1 killed, out of rotation after {removal:?} (bound 1.3 s)");
    assert!(
        removal <= Duration::from_millis(1800),
        "removal took {removal:?}"
    );
    lab.heal_server("rs1").expect("heal rs1");

    assert!(
        lab.tables("b").expect("nft").is_empty(),
        "the backup programs nothing"
    );
    let crashed = Instant::now();
    lab.node_dies("a").expect("a dies");
    let (outage, _) = lab.settle(80, 6, crashed, Duration::from_secs(10));
    assert!(
        lab.tables("b").expect("nft").contains("fwd ip to"),
        "b balances"
    );
    eprintln!("figure: dr rr: master died (SIGKILL, links down), backup serves after {outage:?}");
    assert!(
        outage < Duration::from_secs(2),
        "backup served only after {outage:?}"
    );
    lab.b
        .wait_state("VI_1", "Master", Duration::from_secs(5))
        .expect("b master");
}

/// Connections established from the client, not yet asked anything.
struct Held {
    go: std::sync::mpsc::Sender<()>,
    replies: std::thread::JoinHandle<Result<Vec<String>, hav_tests::netns::NetnsError>>,
}

/// `count` connections to the VIP's port 80, established now and asked later ([`finish_held`]).
fn hold_connections(lab: &LbLab, count: usize) -> Held {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let target = std::net::SocketAddr::new(lab.vip, 80);
    let client = lab.lab.host("client").expect("client");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let replies = client
        .in_thread(move || {
            let streams: Vec<_> = (0..count)
                .map(|_| std::net::TcpStream::connect(target).expect("held connection"))
                .collect();
            let _ = ready_tx.send(());
            let _ = wait.recv();
            Ok(streams
                .into_iter()
                .filter_map(|stream| read_name(stream).ok())
                .collect::<Vec<String>>())
        })
        .expect("thread");
    ready_rx.recv().expect("held connections open");
    Held { go, replies }
}

/// Asks every held connection; the names of the servers that answered.
fn finish_held(held: Held) -> Vec<String> {
    let _ = held.go.send(());
    held.replies.join().expect("join").expect("held replies")
}
