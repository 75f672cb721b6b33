//! `[telemetry]`: off by default, every key checked with its path, and the canonical form keeps
//! what was set.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hav_proto::config::{SamplingRatio, Telemetry, parse_node_config};

const ORIGIN: &str = "node.toml";
const NODE: &str = "[node]\nname = \"n1\"\n";

fn refused(telemetry: &str) -> Vec<String> {
    let text = format!("{NODE}[telemetry]\n{telemetry}");
    match parse_node_config(&text, ORIGIN) {
        Ok(config) => panic!("accepted:\n{text}\nas {:?}", config.telemetry),
        Err(errors) => errors.lines(),
    }
}

fn accepted(telemetry: &str) -> Telemetry {
    let text = format!("{NODE}[telemetry]\n{telemetry}");
    parse_node_config(&text, ORIGIN)
        .unwrap_or_else(|errors| panic!("{errors}"))
        .telemetry
}

#[test]
fn absent_table_means_everything_off() {
    let config = parse_node_config(NODE, ORIGIN).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.telemetry, Telemetry::default());
    assert!(config.telemetry.is_default());
    assert_eq!(config.telemetry.metrics_listen, None);
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.sampling_ratio, SamplingRatio::ALWAYS);
    assert!(!config.to_toml().contains("telemetry"));
}

#[test]
fn every_key_is_read() {
    let telemetry = accepted(
        r#"metrics_listen = "[::1]:9712"
otlp_endpoint = "https://collector.example:4317"
sampling_ratio = 0.25
resource = { "deployment.environment" = "prod", "service.namespace" = "edge" }
"#,
    );
    assert_eq!(
        telemetry.metrics_listen,
        Some("[::1]:9712".parse::<SocketAddr>().expect("an address"))
    );
    let endpoint = telemetry.otlp_endpoint.expect("set");
    assert_eq!(endpoint.as_str(), "https://collector.example:4317");
    assert!(endpoint.is_tls());
    assert_eq!(telemetry.sampling_ratio.get(), 0.25);
    assert_eq!(
        telemetry.resource,
        BTreeMap::from([
            ("deployment.environment".into(), "prod".into()),
            ("service.namespace".into(), "edge".into())
        ])
    );
}

#[test]
fn an_integer_ratio_is_a_ratio() {
    assert_eq!(accepted("sampling_ratio = 1\n").sampling_ratio.get(), 1.0);
    assert_eq!(accepted("sampling_ratio = 0\n").sampling_ratio.get(), 0.0);
}

#[test]
fn bad_values_are_all_reported_with_their_paths() {
    let lines = refused(
        r#"metrics_listen = "localhost"
otlp_endpoint = "127.0.0.1:4317"
sampling_ratio = 1.5
resource = { "" = "x", "ok" = "fine" }
"#,
    );
    assert_eq!(
        lines,
        [
            "node.toml: telemetry.metrics_listen: \"localhost\" is not an address with a port, such as \"127.0.0.1:9712\" or \"[::1]:9712\"",
            "node.toml: telemetry.otlp_endpoint: \"127.0.0.1:4317\" is not a collector URL; expected http://HOST:PORT or https://HOST:PORT, such as \"http://127.0.0.1:4317\"",
            "node.toml: telemetry.sampling_ratio: 1.5 is not a ratio; expected 0.0 to 1.0",
            "node.toml: telemetry.resource.: \"\" is not an attribute name; expected 1 to 255 characters without spaces",
        ]
    );
}

#[test]
fn port_zero_unknown_keys_and_wrong_types_are_refused() {
    assert_eq!(
        refused("metrics_listen = \"127.0.0.1:0\"\n"),
        [
            "node.toml: telemetry.metrics_listen: \"127.0.0.1:0\" has port 0; scrapers need a fixed port"
        ]
    );
    let lines = refused("metrics_port = 9712\n");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("node.toml: telemetry.metrics_port: "),
        "{lines:?}"
    );
    let lines = refused("resource = { \"deployment.environment\" = 3 }\n");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("node.toml: telemetry.resource.deployment.environment: "),
        "{lines:?}"
    );
    let lines = refused("sampling_ratio = -0.1\n");
    assert_eq!(
        lines,
        ["node.toml: telemetry.sampling_ratio: -0.1 is not a ratio; expected 0.0 to 1.0"]
    );
}

#[test]
fn canonical_form_keeps_the_table() {
    let text = format!(
        "{NODE}[telemetry]\nmetrics_listen = \"127.0.0.1:9712\"\nresource = {{ \"deployment.environment\" = \"prod\" }}\n"
    );
    let config = parse_node_config(&text, ORIGIN).unwrap_or_else(|errors| panic!("{errors}"));
    let canonical = config.to_toml();
    assert!(canonical.contains("[telemetry]"), "{canonical}");
    assert!(canonical.contains("sampling_ratio = 1.0"), "{canonical}");
    let again =
        parse_node_config(&canonical, "canonical").unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(again, config);
}
