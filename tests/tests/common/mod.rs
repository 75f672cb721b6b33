//! Scenario helpers shared by the `agent_*` test binaries: a pair of hav-agents on one LAN with a
//! client, started in a known state, and takeover measurement from the client's side.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, find_instance, start_httpd};
use hav_tests::netns::{NsProcess, Presence};
use hav_tests::probe::{self, FailoverReport, ProbeConfig, Prober};
use hav_tests::topology::{Lab, Pair};

/// Safety-net timeout of every wait (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(10);

/// Two hav-agents `a` (priority 150, master) and `b` (100, backup) on [`Pair`]'s LAN, each
/// with a test httpd answering its name, and a client.
pub struct Duo {
    pub pair: Pair,
    pub a: Agent,
    pub b: Agent,
    pub a_config: AgentConfig,
    pub b_config: AgentConfig,
    pub vip: IpAddr,
    _httpd: Vec<NsProcess>,
}

impl Duo {
    pub fn lab(&self) -> &Lab {
        &self.pair.lab
    }

    /// Starts a prober on the client towards the VIP's port 8080.
    pub fn prober(&self) -> Prober {
        prober(&self.pair.lab, self.vip)
    }

    /// Starts a prober and waits until `node` answered it (the state before a fault).
    pub fn prober_on(&self, node: &str) -> Prober {
        let prober = self.prober();
        prober
            .wait_for_reply(node, Instant::now(), WAIT)
            .unwrap_or_else(|e| panic!("client reaches {node} before the fault: {e}"));
        prober
    }

    pub fn agent(&mut self, node: &str) -> &mut Agent {
        match node {
            "a" => &mut self.a,
            _ => &mut self.b,
        }
    }
}

/// A single-instance config for `node` on the pair's LAN: v3, 100 ms, VIP 198.51.100.1/24.
pub fn instance(pair: &Pair, node: &str, priority: u8) -> InstanceSpec {
    let iface = &pair.node(node).expect("node of the pair").iface;
    InstanceSpec::new(iface, 51, priority, &[&format!("{}/24", pair.vip4)])
}

/// Starts the pair: `a` first until it is master and holds the VIP, then `b` until it is
/// backup; the client reaches `a` through the VIP. `configure` adjusts each node's config.
pub fn start_duo(
    vip_of: impl Fn(&Pair) -> IpAddr,
    configure: impl Fn(&Pair, &str, &mut AgentConfig),
) -> Duo {
    let pair = Pair::new().expect("pair topology");
    let vip = vip_of(&pair);
    let httpd = vec![
        start_httpd(&pair.lab, "a").expect("httpd a"),
        start_httpd(&pair.lab, "b").expect("httpd b"),
    ];
    let mut a_config = AgentConfig::new("a", vec![instance(&pair, "a", 150)]);
    configure(&pair, "a", &mut a_config);
    let mut b_config = AgentConfig::new("b", vec![instance(&pair, "b", 100)]);
    configure(&pair, "b", &mut b_config);

    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .unwrap_or_else(|e| panic!("VIP on a: {e}\n{}", a.log()));
    for i in &a_config.instances {
        a.wait_state(&i.name, "Master", WAIT).expect("a master");
    }
    let mut b = Agent::start(&pair.lab, "b", &b_config).expect("start b");
    // Backup, and a's advert heard (b knows its master), so a fault below is a's alone.
    for i in &b_config.instances {
        b.wait_status(&format!("{} backup of a", i.name), WAIT, |status| {
            find_instance(status, &i.name)
                .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
        })
        .expect("b backup of a");
    }
    assert!(
        !pair
            .lab
            .addresses("b", &pair.b.iface)
            .expect("list b")
            .contains(&vip),
        "the backup holds the VIP too"
    );
    let duo = Duo {
        pair,
        a,
        b,
        a_config,
        b_config,
        vip,
        _httpd: httpd,
    };
    let prober = duo.prober();
    prober
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a through the VIP");
    drop(prober);
    duo
}

/// IPv4 VIP of the pair.
pub fn vip4(pair: &Pair) -> IpAddr {
    IpAddr::V4(pair.vip4)
}

pub fn prober(lab: &Lab, vip: IpAddr) -> Prober {
    Prober::start(
        lab.host("client").expect("client host"),
        ProbeConfig::new(SocketAddr::new(vip, 8080)),
    )
    .expect("prober")
}

/// What one takeover looked like.
#[derive(Debug)]
pub struct Takeover {
    /// From the fault to the VIP appearing on the new holder (netlink event).
    pub vip_moved: Duration,
    pub client: FailoverReport,
}

/// After a fault at `fault`: waits for the VIP on `new_holder` and the client reaching it, stops
/// the prober (attempts in flight complete) and analyses the client's view.
pub fn takeover(
    lab: &Lab,
    prober: Prober,
    vip: IpAddr,
    fault: Instant,
    new_holder: &str,
) -> Takeover {
    lab.wait_address(new_holder, vip, Presence::Present, WAIT)
        .unwrap_or_else(|e| panic!("VIP {vip} on {new_holder}: {e}"));
    let vip_moved = fault.elapsed();
    prober
        .wait_for_reply(new_holder, fault, WAIT)
        .unwrap_or_else(|e| panic!("client reaches {new_holder} through {vip}: {e}"));
    let samples = prober.stop();
    Takeover {
        vip_moved,
        client: probe::analyse(&samples, fault, new_holder),
    }
}

/// Prints a figure line that the test report collects (`cargo nextest run --no-capture`).
pub fn figure(test: &str, takeover: &Takeover) {
    eprintln!(
        "FIGURE {test}: VIP moved after {:.1} ms; client outage {}; failed probes {} of {} (probe every 5 ms); old-holder replies {}",
        takeover.vip_moved.as_secs_f64() * 1000.0,
        takeover
            .client
            .outage
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into()),
        takeover.client.failed_probes,
        takeover.client.probes_in_window,
        takeover.client.old_holder_replies,
    );
}

/// Asserts that `vip` is not on `host` now.
pub fn assert_vip_absent(lab: &Lab, host: &str, iface: &str, vip: IpAddr) {
    let addresses = lab.addresses(host, iface).expect("list addresses");
    assert!(
        !addresses.contains(&vip),
        "{vip} still on {host}: {addresses:?}"
    );
}

/// Asserts that `vip` does not appear on `host` for `window` (the netlink wait must time out).
pub fn assert_vip_stays_away(lab: &Lab, host: &str, vip: IpAddr, window: Duration) {
    match lab.wait_address(host, vip, Presence::Present, window) {
        Err(hav_tests::netns::NetnsError::Timeout { .. }) => {}
        Ok(()) => panic!("{vip} appeared on {host} within {window:?}"),
        Err(e) => panic!("watching {vip} on {host}: {e}"),
    }
}

/// A counter of an instance status entry (absent = 0).
pub fn counter(instance: &serde_json::Value, name: &str) -> u64 {
    instance["counters"][name].as_u64().unwrap_or(0)
}
