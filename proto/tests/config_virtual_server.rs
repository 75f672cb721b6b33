//! `[[virtual_server]]`: keepalived's virtual_server keys are parsed into typed values with
//! keepalived's defaults, round-trip through the canonical form, and every mistake is named with
//! its key path.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hav_proto::config::{
    CheckKind, LbAlgo, LbKind, LbProtocol, NodeConfig, SorryServer, VirtualPorts, parse_node_config,
};

const ORIGIN: &str = "node.toml";

fn base(servers: &str) -> String {
    format!(
        r#"
[node]
name = "lb1"

[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 1
vips = ["198.51.100.10/24", "198.51.100.11/24"]

[[instance]]
name = "VI_6"
interface = "eth0"
vrid = 2
vips = ["2001:db8::10/64"]
{servers}
"#
    )
}

fn parsed(servers: &str) -> NodeConfig {
    parse_node_config(&base(servers), ORIGIN).unwrap_or_else(|errors| panic!("{errors}"))
}

fn refused(servers: &str) -> String {
    match parse_node_config(&base(servers), ORIGIN) {
        Ok(config) => panic!("accepted {servers} as {config:?}"),
        Err(errors) => errors.lines().join("\n"),
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

#[test]
fn a_minimal_virtual_server_gets_keepalived_defaults_and_its_vips_instance() {
    let config = parsed(
        r#"
[[virtual_server]]
name = "web"
address = "198.51.100.10"
port = 80

[[virtual_server.real_server]]
address = "198.51.100.21"
[virtual_server.real_server.check]
kind = "tcp"
"#,
    );
    let server = &config.virtual_servers[0];
    assert_eq!(server.instance, "VI_1");
    assert_eq!(server.ports, VirtualPorts::Single(80));
    assert_eq!(server.protocol, LbProtocol::Tcp);
    assert_eq!(server.lb_algo, LbAlgo::Rr);
    assert_eq!(server.lb_kind, LbKind::Nat);
    assert_eq!(server.delay_loop, Duration::from_secs(60));
    assert_eq!((server.quorum, server.hysteresis), (1, 0));
    let real = &server.real_servers[0];
    assert_eq!(
        (real.address, real.port, real.weight),
        (ip("198.51.100.21"), None, 1)
    );
    let check = real.check.as_ref().expect("a check");
    assert_eq!(
        check.kind,
        CheckKind::Tcp {
            connect: SocketAddr::new(ip("198.51.100.21"), 80)
        }
    );
    assert_eq!(check.connect_timeout, Duration::from_secs(5));
    assert_eq!(check.retry, 1);
    assert_eq!(check.delay_before_retry, Duration::from_secs(1));
}

#[test]
fn every_key_round_trips_through_the_canonical_form() {
    let config = parsed(
        r#"
[[virtual_server]]
name = "web"
address = "198.51.100.10"
port = 80
protocol = "tcp"
lb_algo = "wrr"
lb_kind = "nat"
delay_loop = "2s"
quorum = 3
hysteresis = 1
quorum_up = ["/usr/local/bin/lb-up", "web"]
quorum_down = ["/usr/local/bin/lb-down", "web"]
sorry_server = "198.51.100.99:8080"

[[virtual_server.real_server]]
address = "198.51.100.21"
port = 8080
weight = 3
inhibit_on_failure = true
[virtual_server.real_server.check]
kind = "http"
path = "/health"
virtualhost = "www.example.org"
status_code = [200, 204]
digest = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
connect_timeout = "500ms"
nb_get_retry = 2
delay_before_retry = "200ms"

[[virtual_server.real_server]]
address = "198.51.100.22"
port = 8443
[virtual_server.real_server.check]
kind = "https"
server_name = "www.example.org"
ca_file = "/etc/hav/ca.pem"

[[virtual_server.real_server]]
address = "198.51.100.23"
port = 8080
[virtual_server.real_server.check]
kind = "misc"
program = ["/usr/local/bin/check", "198.51.100.23"]

[[virtual_server]]
name = "dns"
address = "198.51.100.11"
ports = [5353, 53]
protocol = "udp"
lb_algo = "sh"
lb_kind = "dr"
flow_timeout = "30s"
sorry_server = "198.51.100.98"

[[virtual_server.real_server]]
address = "198.51.100.31"
[virtual_server.real_server.check]
kind = "tcp"
connect_port = 53

[[virtual_server]]
name = "web6"
address = "2001:db8::10"
port = 443
lb_algo = "fo"
sorry_server = "[2001:db8::99]:443"

[[virtual_server.real_server]]
address = "2001:db8::21"
"#,
    );
    let web = &config.virtual_servers[0];
    assert_eq!(
        web.sorry_server,
        Some(SorryServer {
            address: ip("198.51.100.99"),
            port: Some(8080)
        })
    );
    let CheckKind::Http { digest, tls, .. } =
        &web.real_servers[0].check.as_ref().expect("check").kind
    else {
        panic!("an http check")
    };
    assert!(!tls);
    assert_eq!(
        digest.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(web.real_servers[0].check.as_ref().map(|c| c.retry), Some(2));
    let dns = &config.virtual_servers[1];
    assert_eq!(dns.ports, VirtualPorts::Group(vec![53, 5353]));
    assert_eq!(
        (dns.lb_kind, dns.lb_algo, dns.protocol),
        (LbKind::Dr, LbAlgo::Sh, LbProtocol::Udp)
    );
    assert_eq!(config.virtual_servers[2].instance, "VI_6");

    let text = config.to_toml();
    let again =
        parse_node_config(&text, "canonical").unwrap_or_else(|errors| panic!("{errors}\n{text}"));
    assert_eq!(again, config);
    assert_eq!(again.to_toml(), text);
}

#[test]
fn mistakes_are_named_with_their_key_paths() {
    let errors = refused(
        r#"
[[virtual_server]]
name = "bad one"
address = "198.51.100.77"
port = 80
ports = [81, 82]
protocol = "sctp"
lb_algo = "lc"
lb_kind = "tun"
delay_loop = "0s"
sorry_server = "2001:db8::99"

[[virtual_server.real_server]]
address = "2001:db8::21"
weight = 70000
[virtual_server.real_server.check]
kind = "tcp"
path = "/x"

[[virtual_server]]
name = "dr"
address = "198.51.100.10"
port = 80
lb_kind = "dr"
instance = "VI_6"

[[virtual_server.real_server]]
address = "198.51.100.21"
port = 8080
[virtual_server.real_server.check]
kind = "misc"

[[virtual_server]]
name = "dr"
address = "198.51.100.10"
ports = [80, 80]
"#,
    );
    for expected in [
        "virtual_server[0].name",
        "virtual_server[0].ports: give either `port` or `ports`",
        "virtual_server[0].protocol",
        "virtual_server[0].lb_algo: \"lc\" is not available: nftables has no per-server connection counts",
        "virtual_server[0].lb_kind: \"tun\"",
        "virtual_server[0].delay_loop",
        "virtual_server[0].sorry_server: 2001:db8::99 is IPv6",
        "virtual_server[0].instance: missing; 198.51.100.77 is no instance's virtual address",
        "virtual_server[0].real_server[0].address: 2001:db8::21 is IPv6",
        "virtual_server[0].real_server[0].weight: expected 0..=65535",
        "virtual_server[0].real_server[0].check.path: `path` belongs to kind = \"http\" or \"https\" checks",
        "virtual_server[1].instance: 198.51.100.10 is a virtual address of instance \"VI_1\", not of \"VI_6\"",
        "virtual_server[1].real_server[0].port: direct routing sends the packet unchanged",
        "virtual_server[1].real_server[0].check.program",
        "virtual_server[2].name: virtual_server name \"dr\" is already used by virtual_server[1]",
        "virtual_server[2].ports[1]: port 80 is listed twice",
        "virtual_server[2].real_server",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    assert!(
        errors.lines().all(|line| line.starts_with("node.toml: ")),
        "{errors}"
    );
}

#[test]
fn a_port_group_keeps_the_clients_port_and_its_checks_name_one() {
    let errors = refused(
        r#"
[[virtual_server]]
name = "group"
address = "198.51.100.10"
ports = [80, 443]

[[virtual_server.real_server]]
address = "198.51.100.21"
port = 8080
[[virtual_server.real_server]]
address = "198.51.100.22"
[virtual_server.real_server.check]
kind = "tcp"

[[virtual_server]]
name = "same"
address = "198.51.100.10"
port = 443
"#,
    );
    for expected in [
        "virtual_server[0].real_server[0].port: a port group keeps the client's port",
        "virtual_server[0].real_server[1].check.connect_port: missing; expected the port to check",
        "virtual_server[1].address: 198.51.100.10 tcp port 443 is already served by virtual_server[0]",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}
