//! `[instance.vmac]`, `[[instance.route]]`, `[[instance.rule]]` and strict mode: parsed into typed
//! values, round-tripped through the canonical form, and every mistake named with its key path.

use std::net::IpAddr;

use hav_proto::config::{
    MAIN_TABLE, NodeConfig, Prefix, RouteKind, VirtualRoute, VirtualRule, Vmac, parse_node_config,
};
use hav_vrrp::{Family, VrId};

const ORIGIN: &str = "node.toml";

fn config(node_extra: &str, instance: &str) -> String {
    format!(
        "[node]\nname = \"n1\"\n{node_extra}\n\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\n{instance}\n"
    )
}

fn parsed(node_extra: &str, instance: &str) -> NodeConfig {
    let text = config(node_extra, instance);
    let config = parse_node_config(&text, ORIGIN).unwrap_or_else(|errors| panic!("{errors}"));
    let again = parse_node_config(&config.to_toml(), "canonical")
        .unwrap_or_else(|errors| panic!("canonical form refused: {errors}\n{}", config.to_toml()));
    assert_eq!(again, config, "round trip through {}", config.to_toml());
    config
}

fn refused(node_extra: &str, instance: &str) -> String {
    match parse_node_config(&config(node_extra, instance), ORIGIN) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(errors) => errors.lines().join("\n"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("address")
}

#[test]
fn a_vmac_takes_keepalived_s_default_name_and_carries_the_vips_without_a_dev() {
    let config = parsed(
        "",
        "vips = [\"198.51.100.100/24\", { address = \"198.51.100.101\", dev = \"eth1\" }]\n[instance.vmac]\n",
    );
    let instance = &config.instances[0];
    assert_eq!(
        instance.vmac,
        Some(Vmac {
            name: "vrrp.51".into(),
            xmit_base: false
        })
    );
    assert_eq!(instance.vips[0].dev, "vrrp.51");
    assert_eq!(instance.vips[1].dev, "eth1", "an explicit dev stays");
    let vrid = VrId::new(51).expect("vrid");
    assert_eq!(Vmac::mac(Family::V4, vrid), [0, 0, 0x5e, 0, 1, 51]);
    assert_eq!(Vmac::mac(Family::V6, vrid), [0, 0, 0x5e, 0, 2, 51]);
}

#[test]
fn vmac_mistakes_are_named() {
    let errors = refused(
        "",
        "vips = [\"198.51.100.100/24\"]\n[instance.vmac]\nname = \"eth0\"\n",
    );
    assert!(
        errors.contains("instance[0].vmac.name: \"eth0\" is the instance's own interface"),
        "{errors}"
    );
    let errors = refused("", "vips = [\"2001:db8::1/64\"]\n[instance.vmac]\n");
    assert!(
        errors.contains(
            "instance[0].vmac.xmit_base: an IPv6 instance with a vmac needs xmit_base = true"
        ),
        "{errors}"
    );
    let errors = refused(
        "",
        "connection_drain = \"1m\"\nvips = [\"198.51.100.100/24\"]\n[instance.vmac]\n",
    );
    assert!(
        errors.contains("instance[0].connection_drain: not with [instance.vmac]"),
        "{errors}"
    );
    let errors = refused(
        "",
        "vips = [\"198.51.100.100/24\"]\n[instance.vmac]\nname = \"a/b\"\n",
    );
    assert!(errors.contains("instance[0].vmac.name"), "{errors}");
}

#[test]
fn a_macvlan_name_belongs_to_one_instance() {
    let text = "[node]\nname = \"n1\"\n\n[[instance]]\nname = \"A\"\ninterface = \"eth0\"\nvrid = 51\nvips = [\"198.51.100.1/24\"]\n[instance.vmac]\n\n[[instance]]\nname = \"B\"\ninterface = \"eth1\"\nvrid = 51\nvips = [\"203.0.113.1/24\"]\n[instance.vmac]\n\n[[instance]]\nname = \"C\"\ninterface = \"eth2\"\nvrid = 52\nvips = [\"192.0.2.1/24\"]\n[instance.vmac]\nname = \"eth0\"\n";
    let errors = parse_node_config(text, ORIGIN)
        .expect_err("refused")
        .lines()
        .join("\n");
    assert!(
        errors.contains("instance[1].vmac.name: macvlan \"vrrp.51\" is already instance[0]'s"),
        "{errors}"
    );
    assert!(
        errors.contains("instance[2].vmac.name: \"eth0\" is the interface of instance[0]"),
        "{errors}"
    );
}

#[test]
fn routes_and_rules_parse_with_their_defaults() {
    let config = parsed(
        "",
        r#"vips = ["198.51.100.100/24"]
[[instance.route]]
to = "203.0.113.0/24"
via = "198.51.100.1"
dev = "eth0"
table = 100
metric = 5
src = "198.51.100.100"
[[instance.route]]
to = "default"
type = "blackhole"
table = 101
[[instance.rule]]
from = "198.51.100.10"
table = 100
priority = 1000
[[instance.rule]]
to = "203.0.113.0/25"
fwmark = 7
table = 101
"#,
    );
    let instance = &config.instances[0];
    assert_eq!(
        instance.routes,
        vec![
            VirtualRoute {
                to: Prefix {
                    address: ip("203.0.113.0"),
                    len: 24
                },
                kind: RouteKind::Unicast,
                via: Some(ip("198.51.100.1")),
                dev: Some("eth0".into()),
                src: Some(ip("198.51.100.100")),
                table: 100,
                metric: Some(5),
            },
            VirtualRoute {
                to: Prefix {
                    address: ip("0.0.0.0"),
                    len: 0
                },
                kind: RouteKind::Blackhole,
                via: None,
                dev: None,
                src: None,
                table: 101,
                metric: None,
            }
        ]
    );
    assert_eq!(
        instance.rules[0],
        VirtualRule {
            family: Family::V4,
            from: Some(Prefix {
                address: ip("198.51.100.10"),
                len: 32
            }),
            to: None,
            table: 100,
            priority: Some(1000),
            fwmark: None,
            iif: None,
            oif: None,
        }
    );
    assert_eq!(instance.rules[1].fwmark, Some(7));
    let plain = parsed(
        "",
        "vips = [\"198.51.100.100/24\"]\n[[instance.route]]\nto = \"203.0.113.0/24\"\ndev = \"eth0\"\n",
    );
    assert_eq!(plain.instances[0].routes[0].table, MAIN_TABLE);
}

#[test]
fn route_and_rule_mistakes_are_named_all_at_once() {
    let errors = refused(
        "",
        r#"vips = ["198.51.100.100/24"]
[[instance.route]]
to = "203.0.113.1/24"
via = "198.51.100.1"
[[instance.route]]
to = "203.0.113.0/24"
[[instance.route]]
to = "2001:db8::/64"
dev = "eth0"
[[instance.route]]
to = "203.0.113.0/24"
type = "blackhole"
via = "198.51.100.1"
[[instance.route]]
to = "203.0.113.0/24"
type = "nat"
table = 0
[[instance.rule]]
from = "198.51.100.0/24"
[[instance.rule]]
from = "198.51.100.0/24"
table = 100
fwmark = -1
"#,
    );
    for expected in [
        "instance[0].route[0].to: 203.0.113.1/24 has host bits set; the prefix is 203.0.113.0/24",
        "instance[0].route[1]: missing; a unicast route needs `via`, `dev` or both",
        "instance[0].route[2].to: 2001:db8::/64 is IPv6 but the instance is IPv4",
        "instance[0].route[3].via: a blackhole route forwards nowhere",
        "instance[0].route[4].type: \"nat\" is not a route type",
        "instance[0].route[4].table: expected a routing table 1..=4294967295",
        "instance[0].rule[0].table: missing",
        "instance[0].rule[1].fwmark: expected 0..=4294967295, got -1",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in\n{errors}");
    }
}

#[test]
fn strict_mode_refuses_what_rfc_5798_does_not_have() {
    let errors = refused(
        "strict = true",
        r#"version = 2
vips = ["198.51.100.100/24"]
unicast_peers = ["198.51.100.12"]
auth_pass = "secret"
preempt_delay = "5s"
accept = true
"#,
    );
    for expected in [
        "instance[0].unicast_peers: RFC 5798 sends adverts to the multicast group only (strict mode",
        "instance[0].auth_pass: RFC 5798 has no authentication",
        "instance[0].preempt_delay: RFC 5798 has no preempt delay",
        "instance[0].accept: RFC 3768 (version 2) has no Accept_Mode",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in\n{errors}");
    }
    let errors = refused("strict = true", "vips = [\"2001:db8::1/64\"]\n");
    assert!(
        errors.contains("instance[0].vips: RFC 5798 section 5.2.9: the first IPv6 virtual address must be link-local"),
        "{errors}"
    );
}

#[test]
fn strict_mode_accepts_vip_traffic_only_as_owner_unless_told_and_can_be_left_per_instance() {
    let config = parsed("strict = true", "vips = [\"198.51.100.100/24\"]\n");
    assert!(config.node.strict);
    assert!(config.instances[0].strict);
    assert!(!config.instances[0].accept, "RFC 5798's default");
    let owner = parsed(
        "strict = true",
        "version = 2\npriority = 255\nvips = [\"198.51.100.100/24\"]\n",
    );
    assert!(owner.instances[0].accept);
    let told = parsed(
        "strict = true",
        "accept = true\nvips = [\"198.51.100.100/24\"]\n",
    );
    assert!(told.instances[0].accept);
    let left = parsed(
        "strict = true",
        "strict = false\nunicast_peers = [\"198.51.100.12\"]\nvips = [\"198.51.100.100/24\"]\n",
    );
    assert!(!left.instances[0].strict);
    let v6 = parsed(
        "",
        "strict = true\nvips = [\"fe80::51/64\", \"2001:db8::51/64\"]\n",
    );
    assert!(v6.instances[0].strict);
}
