//! RFC 5798 `Accept_Mode` with a real hav-agent: a master (priority 150, not the address owner)
//! with `accept = false` drops what a client sends to its VIP while ARP for the VIP and traffic
//! to its own address still work; with accept mode on the VIP serves. hav's nftables table
//! outlives a SIGKILL, is removed by the restart, follows a reload that turns accept mode off,
//! and is gone after a clean stop. Where `nft` is missing, a config with `accept = false` is
//! refused by `--check`, at start and on reload, and one with accept mode on runs. Needs root
//! and nftables; run with `cargo nextest run -p hav-tests`.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use common::{WAIT, instance};
use hav_tests::agent::{Agent, AgentConfig, agent_binary, start_httpd};
use hav_tests::netns::{NsProcess, Presence};
use hav_tests::topology::{Lab, Pair};

/// How long a connect to a filtered VIP is given: an answering node replies within a
/// millisecond on the lab's LAN, so silence this long means the SYN was dropped.
const SILENCE: Duration = Duration::from_millis(700);
/// What the agent logs once its accept-mode filter holds the VIP.
const BLOCKED: &str = "accept mode filter: blocked";

/// Node `a` alone (priority 150) as master of the pair's IPv4 VIP, with its httpd.
struct Master {
    pair: Pair,
    agent: Agent,
    config: AgentConfig,
    vip: IpAddr,
    _httpd: NsProcess,
}

fn start_master(accept: Option<bool>) -> Master {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    let httpd = start_httpd(&pair.lab, "a").expect("httpd a");
    let mut spec = instance(&pair, "a", 150);
    spec.accept = accept;
    let config = AgentConfig::new("a", vec![spec]);
    let mut agent = Agent::start(&pair.lab, "a", &config).expect("start a");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .unwrap_or_else(|e| panic!("VIP on a: {e}\n{}", agent.log()));
    agent.wait_state("VI_1", "Master", WAIT).expect("a master");
    if accept == Some(false) {
        agent.wait_log(BLOCKED, WAIT).expect("a filters its VIP");
    }
    Master {
        pair,
        agent,
        config,
        vip,
        _httpd: httpd,
    }
}

impl Master {
    fn lab(&self) -> &Lab {
        &self.pair.lab
    }

    fn own_address(&self) -> IpAddr {
        IpAddr::V4(self.pair.a.ipv4)
    }

    fn with_accept(&self, accept: bool) -> AgentConfig {
        let mut config = self.config.clone();
        config.instances[0].accept = Some(accept);
        config
    }
}

/// A TCP connect from the client to port 8080 of `addr`.
fn connect(lab: &Lab, addr: IpAddr) -> io::Result<()> {
    let target = SocketAddr::new(addr, 8080);
    let thread = lab
        .host("client")
        .expect("client host")
        .in_thread(move || Ok(TcpStream::connect_timeout(&target, SILENCE).map(drop)))
        .expect("client thread");
    thread.join().expect("client thread").expect("client")
}

fn assert_connects(lab: &Lab, addr: IpAddr) {
    connect(lab, addr).unwrap_or_else(|e| panic!("client connect to {addr}: {e}"));
}

fn assert_dropped(lab: &Lab, addr: IpAddr) {
    let error = connect(lab, addr).expect_err("client connected to a filtered VIP");
    assert_eq!(
        error.kind(),
        io::ErrorKind::TimedOut,
        "{addr}: dropped, not refused: {error}"
    );
}

fn ping(lab: &Lab, addr: IpAddr) -> bool {
    let wait = SILENCE.as_secs_f64().to_string();
    let target = addr.to_string();
    lab.exec("client", &["ping", "-n", "-c", "1", "-W", &wait, &target])
        .expect("run ping")
        .success()
}

/// The nftables tables in `host`'s namespace, one `table <family> <name>` per line.
fn tables(lab: &Lab, host: &str) -> Vec<String> {
    let out = lab
        .exec(host, &["nft", "list", "tables"])
        .expect("run nft (apt-get install nftables)");
    assert!(out.success(), "nft list tables: {}", out.stderr);
    out.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn master_without_accept_mode_drops_vip_traffic_while_arp_and_its_own_address_work() {
    let master = start_master(Some(false));
    let (lab, vip) = (master.lab(), master.vip);
    assert_dropped(lab, vip);
    assert!(!ping(lab, vip), "ping to the VIP answered");
    // Its own address answers: the filter holds the VIP alone.
    assert_connects(lab, master.own_address());
    assert!(ping(lab, master.own_address()), "ping to a's address");
    // ARP is not IP: the client resolved the VIP to a's MAC before its SYN was dropped.
    let mac = lab
        .host("a")
        .expect("host a")
        .ip(&["-br", "link", "show", &master.pair.a.iface])
        .expect("a's link");
    let mac = mac
        .split_whitespace()
        .nth(2)
        .expect("MAC column")
        .to_owned();
    let neighbour = lab
        .host("client")
        .expect("client")
        .ip(&["neigh", "show", &vip.to_string()])
        .expect("client neighbours");
    assert!(
        neighbour.contains(&format!("lladdr {mac}")),
        "client's ARP entry for {vip}: {neighbour:?}, a's MAC {mac}"
    );
    let table = lab
        .exec(
            "a",
            &["nft", "list", "set", "inet", "hav", "vips_no_accept_v4"],
        )
        .expect("nft list set");
    assert!(table.stdout.contains(&vip.to_string()), "{}", table.stdout);
}

#[test]
fn master_with_accept_mode_serves_the_vip_and_needs_no_table() {
    let master = start_master(Some(true));
    assert_connects(master.lab(), master.vip);
    assert!(ping(master.lab(), master.vip), "ping to the VIP");
    assert_eq!(tables(master.lab(), "a"), Vec::<String>::new());
}

#[test]
fn killed_agents_table_goes_at_restart_follows_a_reload_and_a_clean_stop_leaves_none() {
    let mut master = start_master(Some(false));
    let vip = master.vip;
    master.agent.kill().expect("SIGKILL a");
    // A crashed agent removes nothing: its table (and VIP) stay and still drop the client.
    assert_eq!(tables(master.lab(), "a"), ["table inet hav"]);
    assert_dropped(master.lab(), vip);

    // Restarted with accept mode on: the stale table goes before anything else.
    master
        .agent
        .write_config(&master.with_accept(true))
        .expect("config");
    master.agent.restart(&master.pair.lab).expect("restart a");
    master
        .agent
        .wait_log(
            "removed the nftables table a previous run left behind",
            WAIT,
        )
        .expect("a removes its stale table at start");
    master
        .agent
        .wait_state("VI_1", "Master", WAIT)
        .expect("a master again");
    master
        .lab()
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    assert_eq!(tables(master.lab(), "a"), Vec::<String>::new());
    assert_connects(master.lab(), vip);

    // A reload turns accept mode off on the running master: the held VIP is filtered.
    master
        .agent
        .write_config(&master.with_accept(false))
        .expect("config");
    master.agent.reload().expect("SIGHUP a");
    master
        .agent
        .wait_log(BLOCKED, WAIT)
        .expect("a filters its VIP after the reload");
    assert_dropped(master.lab(), vip);

    // A clean stop releases the VIP and removes the table.
    master.agent.terminate().expect("SIGTERM a");
    let exit = master.agent.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 0", "{}", master.agent.log());
    assert_eq!(tables(master.lab(), "a"), Vec::<String>::new());
    master
        .lab()
        .wait_address("a", vip, Presence::Absent, WAIT)
        .expect("VIP released");
}

#[test]
fn accept_mode_off_is_refused_where_nft_is_missing() {
    let pair = Pair::new().expect("pair topology");
    let vip = IpAddr::V4(pair.vip4);
    let _httpd = start_httpd(&pair.lab, "a").expect("httpd a");
    // A PATH with `ip` (for `ip netns exec`) and no `nft`.
    let bin = pair.lab.log_dir().join("bin-without-nft");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(which("ip"), bin.join("ip")).expect("link ip");
    let path = bin.display().to_string();
    let config = |accept: bool| {
        let mut spec = instance(&pair, "a", 150);
        spec.accept = Some(accept);
        AgentConfig::new("a", vec![spec])
    };

    // The config check: accept = false is refused, accept = true passes without nft.
    let dir = pair.lab.log_dir().join("check");
    std::fs::create_dir_all(&dir).expect("check dir");
    let check = |accept: bool| {
        let file = dir.join(format!("accept-{accept}.toml"));
        std::fs::write(&file, config(accept).render(&dir)).expect("config");
        std::process::Command::new(agent_binary().expect("hav-agent binary"))
            .arg("--check")
            .arg(&file)
            .env("PATH", &path)
            .output()
            .expect("run hav-agent --check")
    };
    let out = check(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--check passed without nft");
    assert!(
        stderr.contains("instance VI_1: accept = false needs nftables")
            && stderr.contains("`nft` program (nftables) was not found"),
        "{stderr}"
    );
    let out = check(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The daemon refuses to start: it exits before opening a socket or adding the VIP.
    let mut agent =
        Agent::start_with_env(&pair.lab, "a", &config(false), &[("PATH", &path)]).expect("start a");
    assert_eq!(agent.wait_exit(WAIT).expect("a exits"), "exit 1");
    assert!(
        agent.log().contains("accept = false needs nftables"),
        "{}",
        agent.log()
    );
    assert!(
        !pair
            .lab
            .addresses("a", &pair.a.iface)
            .expect("list")
            .contains(&vip),
        "the refused agent added its VIP"
    );

    // Accept mode on runs without nft; a reload to accept = false is refused and changes nothing.
    agent.write_config(&config(true)).expect("config");
    agent.restart(&pair.lab).expect("restart a");
    agent.wait_state("VI_1", "Master", WAIT).expect("a master");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("VIP on a");
    agent.write_config(&config(false)).expect("config");
    agent.reload().expect("SIGHUP a");
    let log = agent
        .wait_log("reload refused; the running config stays", WAIT)
        .expect("reload refused");
    assert!(log.contains("accept = false needs nftables"), "{log}");
    assert_connects(&pair.lab, vip);
}

/// The absolute path of `program` on the test's own PATH.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}
