//! `[coordinator]`: validated like the rest of the node config, and round-trips.

use hav_proto::config::parse_node_config;

const GOOD: &str = r#"
[node]
name = "lb-1"
[coordinator]
address = "198.51.100.1:7400"
ca = "/etc/hav/ca.pem"
cert = "/etc/hav/agent.pem"
key = "/etc/hav/agent.key"
"#;

#[test]
fn a_coordinator_table_is_parsed_and_round_trips() {
    let config = parse_node_config(GOOD, "agent.toml").expect("valid");
    let link = config.coordinator.as_ref().expect("coordinator");
    assert_eq!(link.addresses, ["198.51.100.1:7400"]);
    assert_eq!(link.key.display().to_string(), "/etc/hav/agent.key");
    let canonical = config.to_toml();
    assert!(
        canonical.contains("address = \"198.51.100.1:7400\""),
        "one coordinator keeps the one-string form:\n{canonical}"
    );
    let again = parse_node_config(&canonical, "canonical").expect("canonical parses");
    assert_eq!(again, config);
    let without = parse_node_config("[node]\nname = \"lb-1\"\n", "agent.toml").expect("valid");
    assert_eq!(without.coordinator, None, "optional: the agent runs alone");
}

#[test]
fn a_bad_coordinator_table_names_each_key() {
    let bad = GOOD
        .replace("198.51.100.1:7400", "198.51.100.1")
        .replace("\"/etc/hav/ca.pem\"", "\"ca.pem\"")
        .replace(
            "key = \"/etc/hav/agent.key\"\n",
            "kee = \"/etc/hav/agent.key\"\n",
        );
    let errors = parse_node_config(&bad, "agent.toml").expect_err("refused");
    let lines = errors.lines().join("\n");
    for expected in [
        "agent.toml: coordinator.address: ",
        "\"198.51.100.1\" is not host:port",
        "agent.toml: coordinator.ca: ",
        "expected an absolute path",
        "agent.toml: coordinator.kee: ",
    ] {
        assert!(lines.contains(expected), "{expected:?} in:\n{lines}");
    }
}

#[test]
fn several_coordinators_are_listed_in_order_and_round_trip() {
    let several = GOOD.replace(
        "address = \"198.51.100.1:7400\"",
        "address = [\"198.51.100.1:7400\", \"https://coord-b.example:7400\", \"[2001:db8::3]:7400\"]",
    );
    let config = parse_node_config(&several, "agent.toml").expect("valid");
    let link = config.coordinator.as_ref().expect("coordinator");
    assert_eq!(
        link.addresses,
        [
            "198.51.100.1:7400",
            "https://coord-b.example:7400",
            "[2001:db8::3]:7400"
        ]
    );
    let again = parse_node_config(&config.to_toml(), "canonical").expect("canonical parses");
    assert_eq!(again, config);
}

#[test]
fn each_bad_coordinator_of_a_list_is_named_and_an_empty_list_refused() {
    let bad = GOOD.replace(
        "address = \"198.51.100.1:7400\"",
        "address = [\"198.51.100.1:7400\", \"coord-b\"]",
    );
    let lines = parse_node_config(&bad, "agent.toml")
        .expect_err("refused")
        .lines()
        .join("\n");
    assert!(
        lines.contains("agent.toml: coordinator.address[1]: ")
            && lines.contains("\"coord-b\" is not host:port"),
        "{lines}"
    );
    let empty = GOOD.replace("address = \"198.51.100.1:7400\"", "address = []");
    let lines = parse_node_config(&empty, "agent.toml")
        .expect_err("refused")
        .lines()
        .join("\n");
    assert!(
        lines.contains("agent.toml: coordinator.address: ") && lines.contains("at least one"),
        "{lines}"
    );
}
