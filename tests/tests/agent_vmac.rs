//! keepalived's `use_vmac`, `virtual_routes` and `virtual_rules` on two real hav-agents with a
//! client on their LAN: the VIP answers from the virtual router MAC (RFC 5798 section 7.3), a
//! failover moves that MAC (the client's neighbour entry never changes), the master's route and
//! policy rule follow the role and a reload, a base link replaced under a backup gets its macvlan back, and
//! nothing is left after a stop, nor after a crash and a restart without those keys. Needs root;
//! run with `cargo nextest run -p hav-tests`.

mod common;

use std::time::Instant;

use common::{WAIT, start_duo, vip4};
use hav_tests::agent::{AgentConfig, find_instance};
use hav_tests::topology::Lab;

/// The macvlan of VRID 51 (keepalived's default name) and its MAC.
const VMAC: &str = "vrrp.51";
const VIRTUAL_MAC: &str = "00:00:5e:00:01:33";
const TABLE: &str = "100";
const ROUTED: &str = "203.0.113.0/24";
const OTHER_ROUTED: &str = "192.0.2.0/24";

fn ip(lab: &Lab, host: &str, args: &[&str]) -> String {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let out = lab.exec(host, &argv).expect("ip runs");
    assert!(out.success(), "ip {args:?} in {host}: {}", out.stderr);
    out.stdout
}

/// The output of `argv` in `host`, which must succeed.
fn run(lab: &Lab, host: &str, argv: &[&str]) -> String {
    let out = lab.exec(host, argv).expect("runs");
    assert!(out.success(), "{argv:?} in {host}: {}", out.stderr);
    out.stdout
}

/// `ip -o link show` of the macvlan, `None` when it does not exist.
fn vmac_of(lab: &Lab, host: &str) -> Option<String> {
    let out = lab
        .exec(host, &["ip", "-o", "link", "show", "dev", VMAC])
        .ok()?;
    out.success().then_some(out.stdout)
}

fn has_route(lab: &Lab, host: &str) -> bool {
    // A table with no route left does not exist: `ip` says so and fails.
    let out = (lab.exec(host, &["ip", "-4", "route", "show", "table", TABLE])).expect("ip runs");
    out.stdout.contains(ROUTED)
}

fn has_rule(lab: &Lab, host: &str) -> bool {
    ip(lab, host, &["-4", "rule", "show"]).contains(&format!("lookup {TABLE}"))
}

fn client_neighbour(lab: &Lab, vip: &str) -> String {
    ip(lab, "client", &["neigh", "show", vip])
}

/// The vmac, a route in table 100 via the client and a rule sending the VIP's traffic there.
fn with_vmac_and_routing(config: &mut AgentConfig) {
    config.instances[0].track.extend([
        "[instance.vmac]".to_owned(),
        format!("[[instance.route]]\nto = \"{ROUTED}\"\nvia = \"198.51.100.100\"\ntable = {TABLE}"),
        format!("[[instance.rule]]\nfrom = \"198.51.100.1\"\ntable = {TABLE}\npriority = 1000"),
    ]);
}

#[test]
fn the_vip_answers_from_the_virtual_mac_which_moves_with_routes_and_rules_and_is_cleaned_up() {
    let mut duo = start_duo(vip4, |_, _, config| with_vmac_and_routing(config));
    let vip = duo.vip.to_string();
    let lab = duo.lab();

    // The master: VIP on the macvlan (whose MAC is the virtual one), route and rule present.
    let a_vmac = vmac_of(lab, "a").expect("a has its macvlan");
    assert!(a_vmac.contains(VIRTUAL_MAC), "{a_vmac}");
    assert!(lab.addresses("a", VMAC).expect("list").contains(&duo.vip));
    assert!(has_route(lab, "a") && has_rule(lab, "a"));
    // The backup: the macvlan is there (it hears the adverts on it), with nothing on it.
    let b_vmac = vmac_of(lab, "b").expect("b has its macvlan");
    assert!(b_vmac.contains(VIRTUAL_MAC), "{b_vmac}");
    assert!(lab.addresses("b", VMAC).expect("list").is_empty());
    assert!(!has_route(lab, "b") && !has_rule(lab, "b"));
    // The backup's socket joined the VRRP group on its macvlan; the IGMP reports that would have
    // taught the switch the virtual MAC at b's port were dropped on the way out.
    let quiet = run(
        lab,
        "b",
        &["nft", "list", "chain", "inet", "hav", "vmac_quiet"],
    );
    assert!(
        quiet.contains("\"vrrp.51\"")
            && quiet.contains("counter packets ")
            && !quiet.contains("counter packets 0 "),
        "{quiet}"
    );
    // The client reached the VIP (start_duo made sure): it resolved it to the virtual MAC.
    let before = client_neighbour(lab, &vip);
    assert!(before.contains(VIRTUAL_MAC), "client: {before}");

    // A reload on the master replaces its route at once.
    let mut rerouted = duo.a_config.clone();
    for line in &mut rerouted.instances[0].track {
        *line = line.replace(ROUTED, OTHER_ROUTED);
    }
    duo.a.write_config(&rerouted).expect("new route");
    duo.a.reload().expect("SIGHUP a");
    duo.a
        .wait_log("VI_1: routes and rules follow the new config", WAIT)
        .expect("a reloads its routes");
    let table = ip(duo.lab(), "a", &["-4", "route", "show", "table", TABLE]);
    assert!(
        table.contains(OTHER_ROUTED) && !table.contains(ROUTED),
        "{table}"
    );

    // The backup's link is replaced: its macvlan comes back on the new link, and it is a
    // backup of a again.
    let b_iface = duo.pair.b.iface.clone();
    let lab = duo.lab();
    lab.delete_link("b", &b_iface).expect("delete b's link");
    lab.recreate_link("b", &b_iface).expect("recreate b's link");
    duo.b
        .wait_log(&format!("link {VMAC} is back"), WAIT)
        .expect("b binds to a new macvlan");
    duo.b
        .wait_status("b backup of a on the new link", WAIT, |status| {
            find_instance(status, "VI_1")
                .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
        })
        .expect("b backup again");
    assert!(vmac_of(duo.lab(), "b").is_some_and(|link| link.contains(VIRTUAL_MAC)));

    // a stops: b takes over with the same MAC; the client's entry never changed.
    let prober = duo.prober_on("a");
    let stop = Instant::now();
    duo.a.terminate().expect("SIGTERM a");
    prober
        .wait_for_reply("b", stop, WAIT)
        .expect("the client reaches b through the VIP");
    drop(prober);
    duo.a.wait_exit(WAIT).expect("a exits");
    let lab = duo.lab();
    let after = client_neighbour(lab, &vip);
    assert!(
        after.contains(VIRTUAL_MAC),
        "client after the failover: {after}"
    );
    assert!(
        has_route(lab, "b") && has_rule(lab, "b"),
        "b took the routing over"
    );
    assert!(lab.addresses("b", VMAC).expect("list").contains(&duo.vip));
    // The stopped agent left nothing: no macvlan, no route, no rule.
    assert_eq!(vmac_of(lab, "a"), None, "a's macvlan outlived its stop");
    assert!(!has_route(lab, "a") && !has_rule(lab, "a"));
    let out = (lab.exec("a", &["ip", "-4", "route", "show", "table", "all"])).expect("ip runs");
    assert!(!out.stdout.contains(OTHER_ROUTED), "{}", out.stdout);

    // b crashes holding all of it; restarted on a config without those keys, it removes them
    // before anything else.
    duo.b.kill().expect("SIGKILL b");
    assert!(vmac_of(duo.lab(), "b").is_some() && has_route(duo.lab(), "b"));
    let mut plain = duo.b_config.clone();
    plain.instances[0].track.clear();
    duo.b.write_config(&plain).expect("config without vmac");
    duo.b.restart(&duo.pair.lab).expect("restart b");
    duo.b
        .wait_log(
            "removed routes, rules and virtual MAC interfaces a previous run left behind",
            WAIT,
        )
        .expect("b cleans up at start");
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    let lab = duo.lab();
    assert_eq!(vmac_of(lab, "b"), None, "the crashed run's macvlan is gone");
    assert!(!has_route(lab, "b") && !has_rule(lab, "b"));
    assert!(
        lab.addresses("b", &duo.pair.b.iface)
            .expect("list")
            .contains(&duo.vip),
        "without a vmac the VIP is on the interface"
    );
}

#[test]
fn an_ipv6_vip_answers_from_the_ipv6_virtual_mac_with_adverts_from_the_base() {
    let mut duo = start_duo(
        |pair| std::net::IpAddr::V6(pair.vip6),
        |pair, _, config| {
            config.instances[0].vips = vec![format!("{}/64", pair.vip6)];
            config.instances[0]
                .track
                .push("[instance.vmac]\nxmit_base = true".to_owned());
        },
    );
    let lab = duo.lab();
    let a_vmac = lab
        .exec("a", &["ip", "-o", "link", "show", "dev", "vrrp6.51"])
        .expect("ip runs");
    assert!(
        a_vmac.stdout.contains("00:00:5e:00:02:33"),
        "{}",
        a_vmac.stdout
    );
    // The VIP alone: no link-local address of the virtual MAC on either node's macvlan.
    assert_eq!(lab.addresses("a", "vrrp6.51").expect("list"), vec![duo.vip]);
    assert!(lab.addresses("b", "vrrp6.51").expect("list").is_empty());
    let neighbour = client_neighbour(lab, &duo.vip.to_string());
    assert!(
        neighbour.contains("00:00:5e:00:02:33"),
        "client: {neighbour}"
    );

    // a stops: b serves, also once a has let go of its VIP (and said so to the LAN).
    let prober = duo.prober_on("a");
    let stop = Instant::now();
    duo.a.terminate().expect("SIGTERM a");
    prober
        .wait_for_reply("b", stop, WAIT)
        .expect("the client reaches b through the VIP");
    duo.a.wait_exit(WAIT).expect("a exits");
    let exited = Instant::now();
    prober
        .wait_for_reply("b", exited, std::time::Duration::from_secs(1))
        .expect("the client still reaches b once a let go");
}
