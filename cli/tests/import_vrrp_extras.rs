//! keepalived's `use_vmac`, `vmac_xmit_base`, `virtual_routes`, `virtual_rules`, `vrrp_strict`
//! and `strict_mode` convert into hav's keys; what hav does not take is a finding, and the result
//! is always a config the agent accepts.

use std::path::Path;

use hav_proto::config::{Prefix, RouteKind, Vmac};
use havctl::import::{FindingKind, ImportedNode, import_keepalived_text};
use proptest::prelude::*;

fn import(text: &str) -> ImportedNode {
    import_keepalived_text(text, Path::new("keepalived.conf"))
        .unwrap_or_else(|error| panic!("{error}\n{text}"))
}

fn instance(body: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n interface eth0\n virtual_router_id 51\n priority 100\n \
         virtual_ipaddress {{\n 198.51.100.1/24\n }}\n{body}\n}}\n"
    )
}

fn not_converted<'a>(node: &'a ImportedNode, item: &str) -> Vec<&'a str> {
    (node.findings.iter())
        .filter(|finding| {
            finding.kind == FindingKind::NotConverted && finding.item.starts_with(item)
        })
        .map(|finding| finding.reason.as_str())
        .collect()
}

#[test]
fn use_vmac_routes_and_rules_become_hav_keys() {
    let node = import(&instance(
        " use_vmac vrrp51\n vmac_xmit_base\n virtual_routes {\n  203.0.113.0/24 via 198.51.100.254 dev eth0 table 100 metric 5\n  src 198.51.100.1 to 192.0.2.0/24 via 198.51.100.254\n  blackhole 198.18.0.0/15\n }\n virtual_rules {\n  from 198.51.100.1 table 100 priority 1000\n  from all fwmark 0x10 lookup main\n }",
    ));
    let instance = &node.config.instances[0];
    assert_eq!(
        instance.vmac,
        Some(Vmac {
            name: "vrrp51".into(),
            xmit_base: true
        })
    );
    assert_eq!(instance.vips[0].dev, "vrrp51");
    assert_eq!(instance.routes.len(), 3, "{}", node.toml);
    assert_eq!(instance.routes[0].table, 100);
    assert_eq!(instance.routes[0].metric, Some(5));
    assert_eq!(
        instance.routes[1].src,
        Some("198.51.100.1".parse().expect("literal"))
    );
    assert_eq!(instance.routes[2].kind, RouteKind::Blackhole);
    assert_eq!(
        instance.routes[2].to,
        Prefix {
            address: "198.18.0.0".parse().expect("literal"),
            len: 15
        }
    );
    assert_eq!(instance.rules.len(), 2);
    assert_eq!(instance.rules[0].priority, Some(1000));
    assert_eq!(instance.rules[1].fwmark, Some(0x10));
    assert_eq!(instance.rules[1].table, 254);
    assert!(
        !node
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::NotConverted),
        "{:?}",
        node.findings
    );
}

#[test]
fn routes_and_rules_hav_does_not_take_are_findings_and_the_rest_converts() {
    let node = import(&instance(
        " use_vmac\n virtual_routes {\n  203.0.113.0/24 via 198.51.100.254 table custom\n  203.0.113.1/24 dev eth0\n  203.0.113.0/24 dev eth0 scope link\n  2001:db8::/64 dev eth0\n  192.0.2.0/24 dev eth0\n }\n virtual_rules {\n  from 198.51.100.1 goto 100\n  from 198.51.100.2 fwmark 0x1/0xff table 7\n  to 192.0.2.0/24 table 7\n }",
    ));
    let instance = &node.config.instances[0];
    assert_eq!(
        instance.vmac.as_ref().map(|v| v.name.as_str()),
        Some("vrrp.51")
    );
    assert_eq!(instance.routes.len(), 1, "{}", node.toml);
    assert_eq!(instance.rules.len(), 1, "{}", node.toml);
    let routes = not_converted(&node, "203.0.113");
    assert_eq!(routes.len(), 3, "{:?}", node.findings);
    assert!(routes[0].contains("not names from rt_tables"), "{routes:?}");
    assert!(
        not_converted(&node, "vrrp_instance")
            .iter()
            .any(|reason| reason.contains("route to 2001:db8::/64")),
        "{:?}",
        node.findings
    );
    assert_eq!(not_converted(&node, "from").len(), 2, "{:?}", node.findings);
}

#[test]
fn strict_mode_converts_where_the_instance_meets_it() {
    let node = import(&format!(
        "global_defs {{\n vrrp_strict\n}}\n{}vrrp_instance VI_2 {{\n interface eth0\n virtual_router_id 52\n unicast_peer {{\n  198.51.100.12\n }}\n virtual_ipaddress {{\n 198.51.100.2/24\n }}\n}}\nvrrp_instance VI_3 {{\n interface eth0\n virtual_router_id 53\n strict_mode off\n unicast_peer {{\n  198.51.100.12\n }}\n virtual_ipaddress {{\n 198.51.100.3/24\n }}\n}}\n",
        instance("")
    ));
    let strict: Vec<bool> = node.config.instances.iter().map(|i| i.strict).collect();
    assert_eq!(strict, [true, false, false], "{}", node.toml);
    assert!(
        !node.config.instances[0].accept,
        "RFC 5798's default in strict mode"
    );
    assert!(
        not_converted(&node, "vrrp_instance VI_2")
            .iter()
            .any(|reason| reason
                .contains("strict mode is not carried over: this instance has unicast peers")),
        "{:?}",
        node.findings
    );
}

#[test]
fn an_ipv6_vmac_sends_from_the_base_interface() {
    let node = import(
        "vrrp_instance VI_6 {\n interface eth0\n virtual_router_id 61\n use_vmac\n virtual_ipaddress {\n 2001:db8::1/64\n }\n}\n",
    );
    assert_eq!(
        node.config.instances[0].vmac,
        Some(Vmac {
            name: "vrrp6.61".into(),
            xmit_base: true
        })
    );
}

#[test]
fn a_second_instance_on_the_same_default_macvlan_name_keeps_its_vips_on_the_interface() {
    let node = import(&format!(
        "{}vrrp_instance VI_2 {{\n interface eth1\n virtual_router_id 51\n use_vmac\n virtual_ipaddress {{\n 203.0.113.1/24\n }}\n}}\n",
        instance(" use_vmac")
    ));
    let vmacs: Vec<Option<&str>> = (node.config.instances.iter())
        .map(|instance| instance.vmac.as_ref().map(|vmac| vmac.name.as_str()))
        .collect();
    assert_eq!(vmacs, [Some("vrrp.51"), None]);
    assert!(
        not_converted(&node, "vrrp_instance VI_2")
            .iter()
            .any(|reason| reason.contains("\"vrrp.51\" is already VI_1's")),
        "{:?}",
        node.findings
    );
}

const ROUTES: &[&str] = &[
    "203.0.113.0/24 via 198.51.100.254",
    "203.0.113.0/24 via 198.51.100.254",
    "blackhole 203.0.113.0/25 table 5",
    "unreachable default table 6",
    "192.0.2.7 dev eth1 src 198.51.100.1",
    "2001:db8::/64 via 2001:db8::1",
    "203.0.113.0/24 via 2001:db8::1",
    "blackhole 203.0.113.0/24 dev eth0",
    "10.0.0.0/8 metric -1 dev eth0",
    "10.0.0.0/8",
    "via 198.51.100.254",
    "10.0.0.0/8 dev a/b",
    "10.0.0.0/8 table 0 dev eth0",
];

const RULES: &[&str] = &[
    "from 198.51.100.1 table 100",
    "from 198.51.100.1 table 100",
    "to 192.0.2.0/24 table 0",
    "from all table 5",
    "from 2001:db8::1 table 5",
    "from 198.51.100.1 to 2001:db8::/64 table 5",
    "iif eth0 oif eth1 priority 7 table 9",
    "fwmark 4294967296 table 9",
    "from 198.51.100.1",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_mix_converts_into_a_config_the_agent_accepts(
        routes in proptest::sample::subsequence(ROUTES, 0..ROUTES.len()),
        rules in proptest::sample::subsequence(RULES, 0..RULES.len()),
        v6 in any::<bool>(),
        vmac in any::<bool>(),
        strict in any::<bool>(),
    ) {
        let vip = if v6 { "fe80::1/64" } else { "198.51.100.1/24" };
        let text = format!(
            "global_defs {{\n{}}}\nvrrp_instance VI_1 {{\n interface eth0\n virtual_router_id 51\n{} virtual_ipaddress {{\n {vip}\n }}\n virtual_routes {{\n{}\n }}\n virtual_rules {{\n{}\n }}\n}}\n",
            if strict { " vrrp_strict\n" } else { "" },
            if vmac { " use_vmac\n" } else { "" },
            routes.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"),
            rules.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"),
        );
        let imported = import_keepalived_text(&text, Path::new("keepalived.conf"));
        prop_assert!(imported.is_ok(), "{:?}\n{}", imported.err().map(|e| e.to_string()), text);
    }
}
