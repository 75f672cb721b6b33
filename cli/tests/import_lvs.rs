//! keepalived `virtual_server` blocks of every shape convert into configs the schema accepts:
//! whatever mix of schedulers, methods, ports, families, sorry servers, real servers and checks
//! (valid or not for hav), the importer leaves out or maps what hav refuses, so the result is
//! never a config the agent would reject; and each service is either converted or reported
//! whole with what hav does instead, never dropped.

use std::path::Path;

use havctl::import::{ImportError, import_keepalived_text};
use proptest::prelude::*;

const INSTANCE: &str = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n \
                        virtual_ipaddress {\n 192.0.2.100/24\n }\n}\n\
                        vrrp_instance VI_6 {\n interface eth0\n virtual_router_id 52\n \
                        virtual_ipaddress {\n 2001:db8::100/64\n }\n}\n";

const SERVICE: &[&str] = &[
    "192.0.2.100 80",
    "192.0.2.200 80",
    "2001:db8::100 80",
    "fwmark 3",
    "192.0.2.100 0",
];

const SERVICE_ITEMS: &[&str] = &[
    "lb_kind DR",
    "lb_kind NAT",
    "lb_kind TUN",
    "lb_algo wlc",
    "lb_algo sh",
    "lb_algo fo",
    "lb_algo mh",
    "protocol UDP",
    "protocol SCTP",
    "delay_loop 0",
    "delay_loop 2.5",
    "quorum 3",
    "quorum -1",
    "hysteresis 1",
    "sorry_server 192.0.2.99 8080",
    "sorry_server 192.0.2.99",
    "sorry_server 2001:db8::99 80",
    "quorum_up /usr/local/bin/up",
    "quorum_down \"relative arg\"",
    "virtualhost www.example.org",
    "persistence_timeout 30",
    "connect_timeout 0",
    "retry 200",
    "inhibit_on_failure",
    "ha_suspend",
];

const SERVERS: &[&str] = &[
    "192.0.2.21 80",
    "192.0.2.21 8080",
    "192.0.2.22",
    "2001:db8::21 80",
    "192.0.2.23 0",
];

const SERVER_ITEMS: &[&str] = &[
    "weight 0",
    "weight 70000",
    "weight 5",
    "inhibit_on_failure off",
    "virtualhost a.example",
    "notify_up /bin/x",
    "delay_loop 3",
    "connect_timeout 2",
];

const CHECKERS: &[&str] = &[
    "TCP_CHECK",
    "HTTP_GET",
    "SSL_GET",
    "MISC_CHECK",
    "SMTP_CHECK",
];

const CHECK_ITEMS: &[&str] = &[
    "connect_ip 192.0.2.50",
    "connect_ip 2001:db8::5",
    "connect_port 0",
    "connect_port 9000",
    "connect_timeout 0",
    "retry 3",
    "nb_get_retry 101",
    "delay_before_retry 0",
    "misc_path /usr/local/bin/check",
    "misc_path \"relative arg\"",
    "misc_timeout 5",
    "url { path /x status_code 200-299 }",
    "url { path bad digest abc }",
    "url { status_code 99 }",
    "virtualhost \"bad host\"",
    "warmup 3",
];

fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(pool)
}

fn items(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::collection::vec(pick(pool), 0..4).prop_map(|items| items.join("\n"))
}

fn real_server() -> impl Strategy<Value = String> {
    (
        pick(SERVERS),
        items(SERVER_ITEMS),
        proptest::option::of((pick(CHECKERS), items(CHECK_ITEMS))),
    )
        .prop_map(|(server, items, check)| {
            let check = check
                .map(|(checker, items)| format!("{checker} {{\n{items}\n}}"))
                .unwrap_or_default();
            format!("real_server {server} {{\n{items}\n{check}\n}}")
        })
}

fn virtual_server() -> impl Strategy<Value = String> {
    (
        pick(SERVICE),
        items(SERVICE_ITEMS),
        proptest::collection::vec(real_server(), 0..4),
    )
        .prop_map(|(service, items, servers)| {
            format!(
                "virtual_server {service} {{\n{items}\n{}\n}}\n",
                servers.join("\n")
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_virtual_server_converts_into_a_config_hav_accepts(
        services in proptest::collection::vec(virtual_server(), 1..4),
        one_line in any::<bool>(),
    ) {
        let mut text = format!("{INSTANCE}{}", services.concat());
        if one_line {
            text = text.replace('\n', " ");
        }
        match import_keepalived_text(&text, Path::new("keepalived.conf")) {
            Ok(node) => {
                let again = hav_proto::config::parse_node_config(&node.toml, "again");
                prop_assert!(again.is_ok(), "{}", node.toml);
                let left_out: Vec<&str> = node
                    .not_converted()
                    .filter(|finding| finding.item.starts_with("virtual_server "))
                    .map(|finding| finding.reason.as_str())
                    .collect();
                prop_assert_eq!(
                    node.config.virtual_servers.len() + left_out.len(),
                    services.len(),
                    "{}",
                    node.toml
                );
                for reason in left_out {
                    prop_assert!(!reason.contains("no load balancing"), "{}", reason);
                }
            }
            Err(ImportError::Rejected { errors, toml, .. }) => {
                prop_assert!(false, "refused:\n{errors}\n{toml}\nfrom:\n{text}");
            }
            Err(other) => prop_assert!(false, "{other}\n{text}"),
        }
    }
}
