//! Every kind of config problem is reported with the origin, the key path and the reason, and
//! all problems of a config are reported together.

use hav_proto::config::{ConfigErrors, Problem, parse_node_config};

const ORIGIN: &str = "node.toml";

/// Parses `text`, which must be refused, and returns the error lines.
fn refused(text: &str) -> Vec<String> {
    match parse_node_config(text, ORIGIN) {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(errors) => errors.lines(),
    }
}

fn errors_of(text: &str) -> ConfigErrors {
    parse_node_config(text, ORIGIN).expect_err("the config must be refused")
}

/// A valid base to which each test adds one mistake.
fn with_instance(instance_body: &str) -> String {
    format!(
        r#"
[node]
name = "n1"

[[script]]
name = "chk"
program = "/bin/true"

[[instance]]
name = "VI_1"
interface = "eth0"
vrid = 1
vips = ["198.51.100.1/24"]

[[instance]]
name = "VI_2"
interface = "eth0"
{instance_body}
"#
    )
}

#[test]
fn the_base_is_valid() {
    let text = with_instance("vrid = 2\nvips = [\"198.51.100.2/24\"]");
    parse_node_config(&text, ORIGIN).unwrap_or_else(|errors| panic!("{errors}"));
}

#[test]
fn syntax_error_names_line_and_column() {
    assert_eq!(
        refused("[node]\nname = \"n1\"\nvrid = = 3\n"),
        ["node.toml: line 3, column 8: extra `=`, expected nothing"]
    );
}

#[test]
fn unknown_keys_are_all_reported_with_their_paths() {
    let text = with_instance(
        "vrid = 2\nvips = [\"198.51.100.2/24\"]\npriorty = 5\n[instance.garp]\nrepeat = 1",
    );
    let text = text.replace("[node]\n", "[node]\ncolour = \"red\"\n");
    assert_eq!(
        refused(&text),
        [
            "node.toml: instance[1].garp.repeat: unknown key `repeat`; expected one of `master_repeat`, `master_delay`, `master_refresh`, `interval`",
            "node.toml: instance[1].priorty: unknown key `priorty`; expected one of `name`, `interface`, `vrid`, `version`, `priority`, `advert_interval`, `preempt`, `preempt_delay`, `connection_drain`, `accept`, `checksum`, `source_address`, `unicast_peers`, `auth_pass`, `vips`, `track_interface`, `track_script`, `track_process`, `track_file`, `track_probe`, `notify`, `notify_master`, `notify_backup`, `notify_fault`, `notify_stop`, `smtp_alert`, `garp`, `strict`, `vmac`, `route`, `rule`",
            "node.toml: node.colour: unknown key `colour`; expected one of `name`, `state_dir`, `status_socket`, `handover_port`, `strict`, `notify_fifo`, `notify_fifo_script`, `max_auto_priority`, `smtp`",
        ]
    );
}

#[test]
fn wrong_types_are_reported_and_do_not_hide_other_problems() {
    let text = with_instance(
        "vrid = \"two\"\nvips = [\"198.51.100.2/24\", 7]\npreempt = \"yes\"\npriority = 0",
    );
    assert_eq!(
        refused(&text),
        [
            "node.toml: instance[1].preempt: invalid type: string \"yes\"; expected a boolean",
            "node.toml: instance[1].vips[1]: invalid type: integer `7`; expected a string or a table",
            "node.toml: instance[1].vrid: invalid type: string \"two\"; expected an integer",
            "node.toml: instance[1].priority: priority 0 is reserved for a master that resigns; expected 1..=255",
        ]
    );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        refused("[[instance]]\nvips = [\"198.51.100.1\"]\n"),
        [
            "node.toml: node: missing; expected a [node] table with at least `name`",
            "node.toml: instance[0].name: missing; expected an instance name",
            "node.toml: instance[0].interface: missing; expected an interface name",
            "node.toml: instance[0].vrid: missing; expected a virtual router id 1..=255",
        ]
    );
    assert_eq!(
        refused(&with_instance("vrid = 2")),
        [
            "node.toml: instance[1].vips: missing; expected at least one virtual address, such as \"198.51.100.100/24\""
        ]
    );
}

#[test]
fn duplicate_instance_name() {
    let text = with_instance("vrid = 2\nvips = [\"198.51.100.2/24\"]")
        .replace("name = \"VI_2\"", "name = \"VI_1\"");
    assert_eq!(
        refused(&text),
        ["node.toml: instance[1].name: instance name \"VI_1\" is already used by instance[0]"]
    );
}

#[test]
fn same_vrid_on_same_interface_and_family() {
    assert_eq!(
        refused(&with_instance("vrid = 1\nvips = [\"198.51.100.2/24\"]")),
        [
            "node.toml: instance[1].vrid: vrid 1 on eth0 for IPv4 is already used by instance[0] (\"VI_1\")"
        ]
    );
    // Another family or another interface may reuse it.
    let v6 = with_instance("vrid = 1\nvips = [\"2001:db8::1/64\"]");
    assert!(parse_node_config(&v6, ORIGIN).is_ok());
}

#[test]
fn vrid_and_priority_ranges() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 256\npriority = 300\nvips = [\"198.51.100.2/24\"]"
        )),
        [
            "node.toml: instance[1].vrid: expected a virtual router id 1..=255, got 256",
            "node.toml: instance[1].priority: expected 1..=255, got 300",
        ]
    );
}

#[test]
fn undefined_references() {
    let text = with_instance(
        "vrid = 2\nvips = [\"198.51.100.2/24\"]\ntrack_script = [\"chk\", \"nope\"]\ntrack_process = [{ name = \"squid\", weight = -10 }]\ntrack_probe = [\"web\"]\ntrack_file = [\"maint\"]\n[[sync_group]]\nname = \"G\"\ninstances = [\"VI_1\", \"VI_9\"]",
    );
    assert_eq!(
        refused(&text),
        [
            "node.toml: instance[1].track_script[1]: no [[script]] named \"nope\"",
            "node.toml: instance[1].track_process[0].name: no [[process]] named \"squid\"",
            "node.toml: instance[1].track_file[0]: no [[track_file]] named \"maint\"",
            "node.toml: instance[1].track_probe[0]: no [[probe]] named \"web\"",
            "node.toml: sync_group[0].instances[1]: no [[instance]] named \"VI_9\"",
        ]
    );
}

#[test]
fn vip_family_must_match_and_ipv6_needs_v3() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\", \"2001:db8::2/64\"]"
        )),
        [
            "node.toml: instance[1].vips[1]: 2001:db8::2 is IPv6 but the instance is IPv4 (set by instance[1].vips[0]); one instance holds one family"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nversion = 2\nvips = [\"2001:db8::2/64\"]"
        )),
        [
            "node.toml: instance[1].vips[0]: 2001:db8::2 is IPv6, which needs version = 3 (this instance has version = 2)"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"2001:db8::2/64\"]\nsource_address = \"198.51.100.9\"\nunicast_peers = [\"198.51.100.10\"]"
        )),
        [
            "node.toml: instance[1].source_address: 198.51.100.9 is IPv4 but the instance's virtual addresses are IPv6",
            "node.toml: instance[1].unicast_peers[0]: 198.51.100.10 is IPv4 but the instance's virtual addresses are IPv6",
        ]
    );
}

#[test]
fn bad_vip_values() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.300/24\", \"198.51.100.3/33\", { address = \"198.51.100.4/24\", prefix = 24 }, { address = \"198.51.100.5\", label = \"eth1:x\" }]"
        )),
        [
            "node.toml: instance[1].vips[0]: \"198.51.100.300/24\" is not an address; expected an address with an optional prefix length, such as \"198.51.100.100/24\" or \"2001:db8::100/64\"",
            "node.toml: instance[1].vips[1]: \"198.51.100.3/33\" has a bad prefix length; expected 0..=32",
            "node.toml: instance[1].vips[2].prefix: the prefix length is given both in `address` and in `prefix`",
            "node.toml: instance[1].vips[3].label: label \"eth1:x\" must begin with the interface name \"eth0\" and be at most 15 bytes",
        ]
    );
}

#[test]
fn vip_given_twice() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\", \"198.51.100.1/32\"]"
        )),
        [
            "node.toml: instance[1].vips[1]: 198.51.100.1 is already a virtual address at instance[0].vips[0]"
        ]
    );
}

#[test]
fn auth_only_on_v2_and_at_most_8_bytes() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\nauth_pass = \"secret\""
        )),
        [
            "node.toml: instance[1].auth_pass: VRRPv3 has no authentication; remove auth_pass or set version = 2"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nversion = 2\nvips = [\"198.51.100.2/24\"]\nauth_pass = \"123456789\""
        )),
        ["node.toml: instance[1].auth_pass: expected 1 to 8 bytes, got 9"]
    );
}

#[test]
fn advert_interval_must_fit_the_version() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nversion = 2\nvips = [\"198.51.100.2/24\"]\nadvert_interval = \"1500ms\""
        )),
        [
            "node.toml: instance[1].advert_interval: 1500ms cannot be sent; VRRPv2 carries whole seconds: expected 1s..=255s"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nversion = 2\nvips = [\"198.51.100.2/24\"]\nadvert_interval = \"256s\""
        )),
        [
            "node.toml: instance[1].advert_interval: 256s cannot be sent; VRRPv2 carries whole seconds: expected 1s..=255s"
        ]
    );
    for (interval, shown) in [("41s", "41s"), ("15ms", "15ms"), ("0s", "0s")] {
        assert_eq!(
            refused(&with_instance(&format!(
                "vrid = 2\nvips = [\"198.51.100.2/24\"]\nadvert_interval = \"{interval}\""
            ))),
            [format!(
                "node.toml: instance[1].advert_interval: {shown} cannot be sent; VRRPv3 carries centiseconds: expected 10ms..=40950ms in steps of 10ms"
            )]
        );
    }
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\nadvert_interval = 1"
        )),
        ["node.toml: instance[1].advert_interval: invalid type: integer `1`; expected a string"]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\nadvert_interval = \"1\""
        )),
        [
            "node.toml: instance[1].advert_interval: \"1\" has a number without a unit; expected a duration such as \"1s\", \"100ms\", \"1.5s\" or \"1m30s\""
        ]
    );
}

#[test]
fn checksum_only_for_v3_ipv4() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nversion = 2\nvips = [\"198.51.100.2/24\"]\nchecksum = \"rfc9568\""
        )),
        [
            "node.toml: instance[1].checksum: the checksum choice applies to VRRPv3 over IPv4 only; remove it here"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"2001:db8::2/64\"]\nchecksum = \"rfc9568\""
        )),
        [
            "node.toml: instance[1].checksum: the checksum choice applies to VRRPv3 over IPv4 only; remove it here"
        ]
    );
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\nchecksum = \"none\""
        )),
        [
            "node.toml: instance[1].checksum: expected \"pseudo-header\" or \"rfc9568\", got \"none\""
        ]
    );
}

#[test]
fn sync_group_member_in_two_groups() {
    let text = format!(
        "{}\n[[sync_group]]\nname = \"A\"\ninstances = [\"VI_1\"]\n[[sync_group]]\nname = \"B\"\ninstances = [\"VI_2\", \"VI_1\"]",
        with_instance("vrid = 2\nvips = [\"198.51.100.2/24\"]")
    );
    assert_eq!(
        refused(&text),
        [
            "node.toml: sync_group[1].instances[1]: instance \"VI_1\" is already in sync group \"A\" (sync_group[0])"
        ]
    );
}

#[test]
fn track_weights_and_unicast_peers() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\ntrack_script = [{ name = \"chk\", weight = 254 }]\nsource_address = \"198.51.100.20\"\nunicast_peers = [\"198.51.100.21\", { address = \"198.51.100.21\", priority = 0 }, \"198.51.100.21\", \"198.51.100.20\", \"0.0.0.0\", \"224.0.0.18\"]"
        )),
        [
            "node.toml: instance[1].unicast_peers[1].priority: expected 1..=255, got 0",
            "node.toml: instance[1].unicast_peers[2]: 198.51.100.21 is already listed at instance[1].unicast_peers[0]",
            "node.toml: instance[1].unicast_peers[3]: 198.51.100.20 is this node's own source_address",
            "node.toml: instance[1].unicast_peers[4]: 0.0.0.0 is not the unicast address of a peer",
            "node.toml: instance[1].unicast_peers[5]: 224.0.0.18 is not the unicast address of a peer",
            "node.toml: instance[1].track_script[0].weight: expected a weight -253..=253 (0 means fault on failure), got 254",
        ]
    );
}

#[test]
fn definitions_are_checked() {
    let text = r#"
[node]
name = "n 1"
state_dir = "var/lib/hav"

[[script]]
name = "chk"
program = "check.sh"
interval = "0s"
fall = 0

[[process]]
name = "p"

[[process]]
name = "p2"
process = "squid"
pid_file = "/run/squid.pid"

[[track_file]]
name = "f"
path = "/etc/f"
weight = -300

[[probe]]
name = "tcp"
kind = "tcp"
address = "127.0.0.1"
url = "http://x/"

[[probe]]
name = "web"
kind = "http"
url = "ftp://x/"
expect_status = [200, 700]
proxy = "localhost:3128"

[[probe]]
name = "web"
kind = "udp"
"#;
    assert_eq!(
        refused(text),
        [
            "node.toml: node.name: \"n 1\" is not a name; expected 1 to 64 of A-Z a-z 0-9 _ - .",
            "node.toml: node.state_dir: expected an absolute path, got \"var/lib/hav\"",
            "node.toml: script[0].program: expected an absolute path, got \"check.sh\"",
            "node.toml: script[0].interval: expected a duration above zero",
            "node.toml: script[0].fall: expected 1..=1000000, got 0",
            "node.toml: process[0].process: missing; expected `process` (a command name) or `pid_file`",
            "node.toml: process[1].pid_file: give either `process` or `pid_file`, not both",
            "node.toml: track_file[0].weight: expected a weight -253..=253 (0 means fault on failure), got -300",
            "node.toml: probe[0].url: `url` belongs to kind = \"http\" probes",
            "node.toml: probe[0].port: missing; expected a port 1..=65535",
            "node.toml: probe[1].url: expected an http:// or https:// URL with a host, got \"ftp://x/\": the scheme must be http:// or https://",
            "node.toml: probe[1].expect_status[1]: expected an HTTP status 100..=599, got 700",
            "node.toml: probe[1].proxy: expected an IP address and port such as \"127.0.0.1:3128\", got \"localhost:3128\"",
            "node.toml: probe[2].kind: expected \"tcp\" or \"http\", got \"udp\"",
            "node.toml: probe[2].name: probe name \"web\" is already used by probe[1]",
        ]
    );
}

#[test]
fn tls_options_of_probes_are_checked_and_belong_to_https_urls() {
    let text = r#"
[node]
name = "n1"

[[probe]]
name = "plain"
kind = "http"
url = "http://198.51.100.7/health"
ca_file = "/etc/hav/probe-ca.pem"
server_name = "web.example"

[[probe]]
name = "tls"
kind = "https"
url = "https://198.51.100.7/health"

[[probe]]
name = "tls_bad"
kind = "http"
url = "https://198.51.100.7:8443/health"
ca_file = "probe-ca.pem"
server_name = "not a name"

[[probe]]
name = "port"
kind = "tcp"
address = "127.0.0.1"
port = 443
server_name = "web.example"

[[probe]]
name = "no_host"
kind = "http"
url = "https://:8443/"

[[probe]]
name = "bad_port"
kind = "http"
url = "https://web.example:65536/"
"#;
    assert_eq!(
        refused(text),
        [
            "node.toml: probe[0].ca_file: `ca_file` belongs to https:// URLs",
            "node.toml: probe[0].server_name: `server_name` belongs to https:// URLs",
            "node.toml: probe[1].kind: expected \"tcp\" or \"http\", got \"https\"",
            "node.toml: probe[2].ca_file: expected an absolute path, got \"probe-ca.pem\"",
            "node.toml: probe[2].server_name: expected a DNS name or an IP address, got \"not a name\"",
            "node.toml: probe[3].server_name: `server_name` belongs to kind = \"http\" probes",
            "node.toml: probe[4].url: expected an http:// or https:// URL with a host, got \"https://:8443/\": the URL has no host",
            "node.toml: probe[5].url: expected an http:// or https:// URL with a host, got \"https://web.example:65536/\": port \"65536\" is not 1..=65535",
        ]
    );
}

#[test]
fn https_probes_take_a_ca_file_and_a_server_name() {
    let text = r#"
[node]
name = "n1"

[[probe]]
name = "tls"
kind = "http"
url = "https://198.51.100.7:8443/health"
ca_file = "/etc/hav/probe-ca.pem"
server_name = "web.example"
proxy = "127.0.0.1:3128"

[[probe]]
name = "system_roots"
kind = "http"
url = "https://web.example/"
"#;
    let config = parse_node_config(text, ORIGIN).unwrap_or_else(|errors| panic!("{errors}"));
    let hav_proto::config::ProbeKind::Http {
        url,
        ca_file,
        server_name,
        proxy,
        ..
    } = &config.probes[0].kind
    else {
        panic!("an http probe: {:?}", config.probes[0]);
    };
    assert!(url.is_tls());
    assert_eq!(url.port(), 8443);
    assert_eq!(
        ca_file.as_deref(),
        Some(std::path::Path::new("/etc/hav/probe-ca.pem"))
    );
    assert_eq!(
        server_name.as_ref().map(|name| name.to_str().into_owned()),
        Some("web.example".to_owned())
    );
    assert_eq!(
        proxy.map(|proxy| proxy.to_string()),
        Some("127.0.0.1:3128".into())
    );
    let hav_proto::config::ProbeKind::Http {
        ca_file,
        server_name,
        ..
    } = &config.probes[1].kind
    else {
        panic!("an http probe: {:?}", config.probes[1]);
    };
    assert_eq!((ca_file, server_name), (&None, &None));
}

#[test]
fn notify_programs_are_argv_arrays_with_absolute_paths() {
    assert_eq!(
        refused(&with_instance(
            "vrid = 2\nvips = [\"198.51.100.2/24\"]\nnotify_master = []\nnotify_fault = [\"notify.sh\", \"fault\"]\nnotify = \"/bin/notify master\""
        )),
        [
            "node.toml: instance[1].notify: invalid type: string \"/bin/notify master\"; expected an array",
            "node.toml: instance[1].notify_master: expected the program and its arguments, such as [\"/usr/local/sbin/notify\", \"master\"]",
            "node.toml: instance[1].notify_fault[0]: expected an absolute path, got \"notify.sh\"",
        ]
    );
}

#[test]
fn errors_carry_their_kind() {
    let errors = errors_of(&with_instance(
        "vrid = 1\nvips = [\"198.51.100.2/24\"]\nauth_pass = \"x\"\nbogus = 1",
    ));
    let kinds: Vec<_> = errors
        .errors()
        .iter()
        .map(|error| std::mem::discriminant(&error.problem))
        .collect();
    assert_eq!(
        kinds,
        [
            std::mem::discriminant(&Problem::Schema(String::new())),
            std::mem::discriminant(&Problem::Conflict(String::new())),
            std::mem::discriminant(&Problem::Duplicate(String::new())),
        ]
    );
    assert_eq!(errors.to_string(), errors.lines().join("\n"));
}

#[test]
fn notify_fifo_smtp_and_realtime_settings_are_checked_each_with_its_path() {
    let text = with_instance("vrid = 2\nvips = [\"198.51.100.2/24\"]").replace(
        "[node]\n",
        "[node]\nnotify_fifo = \"run/notify.fifo\"\nmax_auto_priority = 100\n",
    ) + "[node.smtp]\nserver = \"mail example\"\nconnect_timeout = \"0s\"\n\
         from = \"hav\"\nto = [\"ops@example.net\", \"x@y>\\r\\nDATA\"]\n";
    let refused = refused(&text);
    for expected in [
        "node.toml: node.notify_fifo: expected an absolute path",
        "node.toml: node.max_auto_priority: 100 is not a realtime priority; expected 1 to 99",
        "node.toml: node.smtp.server: \"mail example\" is not an SMTP server",
        "node.toml: node.smtp.connect_timeout: expected a duration above zero",
        "node.toml: node.smtp.from: \"hav\" is not a mail address",
        "node.toml: node.smtp.to[1]: ",
    ] {
        assert!(
            refused.iter().any(|line| line.starts_with(expected)),
            "{expected:?} not in {refused:#?}"
        );
    }
    assert_eq!(refused.len(), 6, "{refused:#?}");
}

#[test]
fn a_fifo_script_needs_the_fifo_and_mail_needs_a_recipient() {
    let text = with_instance("vrid = 2\nvips = [\"198.51.100.2/24\"]").replace(
        "[node]\n",
        "[node]\nnotify_fifo_script = [\"/usr/local/sbin/reader\"]\n",
    ) + "[node.smtp]\nserver = \"198.51.100.25\"\nfrom = \"hav@example.net\"\n";
    assert_eq!(
        refused(&text),
        [
            "node.toml: node.notify_fifo: missing; expected the FIFO's path: notify_fifo_script reads it",
            "node.toml: node.smtp.to: missing; expected at least one recipient, such as [\"ops@example.net\"]",
        ]
    );
}
