use super::*;

const FLEET: &str = r#"
[[group]]
name = "web"
segment = "lan"
interface = "eth0"
vips = ["198.51.100.100/24", "198.51.100.101/24"]
first_vrid = 10
dns_name = "web.example.net"
advert_interval = "1s"
[group.track]
script = [{ name = "chk", weight = -60 }]
[[group.script]]
name = "chk"
program = "/bin/true"
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"

[[group]]
name = "api"
segment = "lan"
interface = "eth0"
vips = ["198.51.100.110/24"]
transport = "multicast"
[[group.node]]
name = "lb-3"
address = "198.51.100.13"
[[group.node]]
name = "lb-4"
address = "198.51.100.14"
"#;

fn expand_ok(text: &str) -> FleetConfig {
    match expand("fleet.toml", text) {
        Ok(fleet) => fleet,
        Err(errors) => panic!("expected a valid fleet:\n{errors}"),
    }
}

fn errors_of(text: &str) -> Vec<FleetError> {
    expand("fleet.toml", text).expect_err("expected refusal").0
}

#[test]
fn expands_each_vip_into_an_instance_with_balanced_masters() {
    let fleet = expand_ok(FLEET);
    let lb1 = config::parse_node_config(&fleet.nodes["lb-1"].to_toml(), "lb-1").expect("valid");
    let lb2 = config::parse_node_config(&fleet.nodes["lb-2"].to_toml(), "lb-2").expect("valid");
    let prio = |c: &NodeConfig, name: &str| c.instance(name).expect("instance").priority.get();
    assert_eq!((prio(&lb1, "web-vip0"), prio(&lb2, "web-vip0")), (150, 140));
    assert_eq!((prio(&lb1, "web-vip1"), prio(&lb2, "web-vip1")), (140, 150));
    let web0 = lb1.instance("web-vip0").expect("instance");
    assert_eq!(web0.vrid.get(), 10);
    assert_eq!(lb1.instance("web-vip1").expect("instance").vrid.get(), 11);
    let config::Transport::Unicast(peers) = &web0.transport else {
        panic!("unicast expected")
    };
    assert_eq!(peers[0].address.to_string(), "198.51.100.12");
    assert_eq!(peers[0].priority.map(|p| p.get()), Some(140));
    assert_eq!(web0.track.len(), 1, "{:?}", web0.track);
    assert_eq!(lb1.scripts[0].name, "chk");
    // The multicast group gets the lowest VRID free on the segment (10 and 11 are taken).
    let lb3 = config::parse_node_config(&fleet.nodes["lb-3"].to_toml(), "lb-3").expect("valid");
    let api = lb3.instance("api-vip0").expect("instance");
    assert_eq!(api.vrid.get(), 1);
    assert_eq!(api.transport, config::Transport::Multicast);
    assert_eq!(
        fleet.groups,
        vec![
            RolloutGroup {
                name: "web".into(),
                nodes: vec!["lb-1".into(), "lb-2".into()]
            },
            RolloutGroup {
                name: "api".into(),
                nodes: vec!["lb-3".into(), "lb-4".into()]
            },
        ]
    );
    assert_eq!(fleet.layout[0].dns_name.as_deref(), Some("web.example.net"));
    assert_eq!(fleet.layout[0].vips[1].master, "lb-2");
    // Deterministic.
    assert_eq!(expand_ok(FLEET), fleet);
}

#[test]
fn priorities_rotate_so_each_node_masters_its_share() {
    for count in 2..=MAX_GROUP_NODES {
        for v in 0..count * 2 {
            let priorities: Vec<u8> = (0..count).map(|n| priority(v, n, count)).collect();
            let distinct: BTreeSet<u8> = priorities.iter().copied().collect();
            assert_eq!(distinct.len(), count, "{priorities:?}");
            assert_eq!(priorities[v % count], MASTER_PRIORITY);
            assert!(priorities.iter().all(|p| *p >= 10));
        }
    }
}

#[test]
fn a_vrid_collision_on_one_segment_is_refused() {
    let text = FLEET.replace("transport = \"multicast\"", "first_vrid = 11");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].group.as_deref(), Some("api"));
    assert_eq!(errors[0].key, "group[1].vips[0]");
    assert!(
        errors[0]
            .reason
            .contains("VRID 11 collides on segment \"lan\" with group web")
    );
    // Another segment: no collision.
    let apart = text.replacen(
        "segment = \"lan\"\ninterface = \"eth0\"\nvips = [\"198.51.100.110/24\"]",
        "segment = \"other\"\ninterface = \"eth0\"\nvips = [\"198.51.100.110/24\"]",
        1,
    );
    expand_ok(&apart);
}

#[test]
fn a_vip_in_two_groups_is_refused() {
    let text = FLEET.replace("198.51.100.110/24", "198.51.100.101/24");
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|e| e.group.as_deref() == Some("api")
            && e.key == "group[1].vips[0]"
            && e.reason.contains("also a VIP of group web")),
        "{errors:?}"
    );
}

#[test]
fn a_node_in_two_groups_on_one_vrid_is_refused() {
    let text = FLEET
        .replace("transport = \"multicast\"", "first_vrid = 10")
        .replacen("segment = \"lan\"", "segment = \"a\"", 1)
        .replace("name = \"lb-3\"", "name = \"lb-1\"");
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|e| e.node.as_deref() == Some("lb-1")
            && e.group.as_deref() == Some("api")
            && e.reason.contains("also in group web with VRID 10 on eth0")),
        "{errors:?}"
    );
}

#[test]
fn peers_disagreeing_on_interval_version_or_auth_are_refused() {
    let text = FLEET.replace(
        "name = \"lb-2\"\naddress = \"198.51.100.12\"",
        "name = \"lb-2\"\naddress = \"198.51.100.12\"\nadvert_interval = \"2s\"",
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "one per instance: {errors:?}");
    assert_eq!(errors[0].node.as_deref(), Some("lb-2"));
    assert_eq!(errors[0].key, "web-vip0.advert_interval");
    assert!(
        errors[0]
            .reason
            .contains("peers of instance web-vip0 disagree")
    );
}

#[test]
fn a_group_that_cannot_elect_is_refused() {
    let text = FLEET.replace(
        "[[group.node]]\nname = \"lb-4\"\naddress = \"198.51.100.14\"\n",
        "",
    );
    let errors = errors_of(&text);
    assert_eq!(errors[0].group.as_deref(), Some("api"));
    assert!(
        errors[0].reason.contains("at least two nodes"),
        "{errors:?}"
    );
}

#[test]
fn an_unreachable_tracking_reference_is_refused() {
    let text = FLEET.replace("name = \"chk\", weight", "name = \"chk_gone\", weight");
    let errors = errors_of(&text);
    assert_eq!(errors[0].key, "group[0].track.script[0]");
    assert!(errors[0].reason.contains("\"chk_gone\""), "{errors:?}");
}

#[test]
fn node_schema_errors_name_group_node_and_key() {
    let text = FLEET.replace("program = \"/bin/true\"", "program = \"true\"");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "one per node of the group: {errors:?}");
    assert_eq!(
        errors[0].to_string(),
        "fleet.toml: group web: node lb-1: script[0].program: expected an absolute path, got \"true\""
    );
}

#[test]
fn syntax_and_unknown_keys_are_refused() {
    let errors = errors_of("[[group]]\nname = \"x\"\nvipz = []\n");
    assert_eq!(errors[0].key, "(file)");
    assert!(errors[0].reason.contains("vipz"), "{errors:?}");
}

#[test]
fn the_commented_example_expands() {
    let fleet = expand_ok(include_str!("../../../deploy/fleet/fleet.toml"));
    assert_eq!(fleet.nodes.len(), 4);
    let api = &fleet.layout[1];
    assert_eq!(
        api.vips
            .iter()
            .map(|v| (v.vrid, v.master.as_str()))
            .collect::<Vec<_>>(),
        vec![(1, "proxy-c"), (1, "proxy-d")],
        "IPv4 and IPv6 have separate VRID spaces"
    );
}

fn example(name: &str) -> FleetConfig {
    let path = format!(
        "{}/../deploy/fleet/examples/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match expand(&path, &text) {
        Ok(fleet) => fleet,
        Err(errors) => panic!("{errors}"),
    }
}

fn names(values: &[config::Track]) -> Vec<String> {
    let mut names: Vec<String> = values.iter().map(|t| format!("{:?}", t.target)).collect();
    names.sort();
    names
}

/// The nginx pair: three VIPs as one sync group (one master for all), the LAN VIP on its own
/// interface with its label, GARP settings and trackers.
#[test]
fn a_sync_group_pair_with_per_vip_interfaces_labels_and_trackers_expands() {
    let fleet = example("nginx-sync-group");
    let web_a = &fleet.nodes["web-a"];
    let web_b = &fleet.nodes["web-b"];
    for v in 0..3 {
        let name = format!("web-vip{v}");
        let prio = |c: &NodeConfig| c.instance(&name).expect("instance").priority.get();
        assert_eq!(
            (prio(web_a), prio(web_b)),
            (150, 140),
            "{name}: one master for all"
        );
    }
    assert!(fleet.layout[0].vips.iter().all(|v| v.master == "web-a"));
    let group = &web_a.sync_groups[0];
    assert_eq!(group.name, "web");
    assert_eq!(group.instances, ["web-vip0", "web-vip1", "web-vip2"]);
    assert!(group.notify.master.is_some() && group.notify.fault.is_some());
    let lan = web_a.instance("web-vip2").expect("LAN instance");
    assert_eq!(lan.interface, "eth1");
    assert_eq!(lan.vips[0].label.as_deref(), Some("eth1:gw"));
    assert_eq!(lan.vips[0].dev, "eth1");
    assert_eq!(
        lan.garp.master_refresh,
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(
        lan.source_address, None,
        "the agent picks its address on eth1"
    );
    let wan = web_a.instance("web-vip0").expect("WAN instance");
    assert_eq!(wan.interface, "eth0");
    assert_eq!(
        names(&wan.track).len(),
        3,
        "eth1, nginx, the probe: {:?}",
        wan.track
    );
    assert_eq!(
        names(&lan.track).len(),
        2,
        "eth0 and nginx only: {:?}",
        lan.track
    );
    assert!(
        lan.track
            .iter()
            .all(|t| !format!("{:?}", t.target).contains("nginx_local"))
    );
}

/// The squid pair: every tracker kind and the state hooks on the instance.
#[test]
fn every_tracker_kind_and_the_hooks_reach_the_instances() {
    let fleet = example("squid-active-passive");
    let proxy = fleet.nodes["proxy-b"]
        .instance("proxy-vip0")
        .expect("instance");
    assert_eq!(names(&proxy.track).len(), 5, "{:?}", proxy.track);
    assert!(proxy.notify.master.is_some() && proxy.notify.backup.is_some());
    assert!(proxy.notify.fault.is_some() && proxy.notify.any.is_none());
    assert_eq!(proxy.preempt_delay, std::time::Duration::from_secs(30));
    let edge = example("squid-active-active");
    let vip1 = edge.nodes["edge-a"]
        .instance("edge-vip1")
        .expect("instance");
    assert_eq!(vip1.garp.master_repeat, 3);
    assert!(vip1.notify.any.is_some());
    assert_eq!(
        edge.layout[0].vips[1].master, "edge-b",
        "active-active: spread"
    );
    let lb = example("haproxy-http-probe");
    let instance = lb.nodes["lb-a"].instance("lb-vip0").expect("instance");
    assert_eq!(
        instance.garp.master_delay,
        std::time::Duration::from_secs(1)
    );
}

/// A node's own trackers add to the group's; its own hooks replace the group's.
#[test]
fn a_node_adds_trackers_and_overrides_hooks() {
    let text = FLEET
        .replacen(
            "advert_interval = \"1s\"\n",
            "advert_interval = \"1s\"\nnotify_master = [\"/bin/echo\", \"group\"]\n",
            1,
        )
        .replacen(
            "[[group.node]]\nname = \"lb-1\"\naddress = \"198.51.100.11\"\n",
            "[[group.node]]\nname = \"lb-1\"\naddress = \"198.51.100.11\"\n\
             notify_master = [\"/bin/echo\", \"lb-1\"]\n[group.node.track]\ninterface = [\"eth1\"]\n",
            1,
        );
    let fleet = expand_ok(&text);
    let own = fleet.nodes["lb-1"].instance("web-vip0").expect("instance");
    let other = fleet.nodes["lb-2"].instance("web-vip0").expect("instance");
    assert_eq!(own.track.len(), other.track.len() + 1);
    let args = |i: &config::Instance| i.notify.master.as_ref().map(|c| c.args.clone());
    assert_eq!(args(own), Some(vec!["lb-1".to_owned()]));
    assert_eq!(args(other), Some(vec!["group".to_owned()]));
}

#[test]
fn bad_vip_tables_and_sync_group_keys_are_refused_with_their_key() {
    let text = FLEET.replace(
        "vips = [\"198.51.100.100/24\", \"198.51.100.101/24\"]",
        "vips = [\"198.51.100.100/24\", { address = \"198.51.100.101/24\", colour = \"red\" }]",
    );
    let errors = errors_of(&text);
    assert_eq!(errors[0].key, "group[0].vips[1]", "{errors:?}");
    assert!(errors[0].reason.contains("colour"), "{errors:?}");
    let text = FLEET.replace(
        "vips = [\"198.51.100.100/24\", \"198.51.100.101/24\"]",
        "vips = [\"198.51.100.100/24\", { address = \"198.51.100.101/24\", interface = \"eth1\" }]",
    );
    let errors = errors_of(&text);
    assert_eq!(errors[0].key, "group[0].vips[1].interface", "{errors:?}");
    assert!(errors[0].reason.contains("multicast"), "{errors:?}");
    let text = FLEET.replace(
        "[group.track]",
        "[group.sync_group]\ninstances = [\"x\"]\n[group.track]",
    );
    let errors = errors_of(&text);
    assert_eq!(errors[0].key, "group[0].sync_group.instances", "{errors:?}");
}

/// A VIP's virtual MAC, routes and rules, and the group's strict mode, reach its instance.
#[test]
fn a_vip_carries_its_virtual_mac_routes_and_rules_and_the_group_strict_mode() {
    let text = FLEET
        .replace(
            "vips = [\"198.51.100.100/24\", \"198.51.100.101/24\"]",
            "vips = [\"198.51.100.100/24\", { address = \"198.51.100.101/24\", \
             vmac = { xmit_base = true }, \
             route = [{ to = \"203.0.113.0/24\", via = \"198.51.100.1\" }], \
             rule = [{ from = \"198.51.100.101\", table = 100 }] }]\nstrict = true\ntransport = \"multicast\"",
        )
        .replace("[group.track]\nscript = [{ name = \"chk\", weight = -60 }]\n", "");
    let fleet = expand_ok(&text);
    let vip1 = fleet.nodes["lb-1"].instance("web-vip1").expect("instance");
    assert!(vip1.vmac.is_some());
    assert_eq!((vip1.routes.len(), vip1.rules.len()), (1, 1));
    assert!(vip1.strict);
    let vip0 = fleet.nodes["lb-1"].instance("web-vip0").expect("instance");
    assert!(vip0.vmac.is_none() && vip0.routes.is_empty() && vip0.strict);
}
