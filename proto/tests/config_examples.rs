//! The example configs shipped in deploy/examples load, and survive a canonical round trip.

use std::path::PathBuf;

use hav_proto::config::{NodeConfig, load_node_config_with_env, parse_node_config};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

fn load(name: &str) -> NodeConfig {
    match load_node_config_with_env(&example(name), []) {
        Ok(config) => config,
        Err(errors) => panic!("{name} does not load:\n{errors}"),
    }
}

#[test]
fn all_examples_load_and_round_trip() {
    for name in [
        "node-a.toml",
        "node-b.toml",
        "active-active-a.toml",
        "active-active-b.toml",
        "reference.toml",
    ] {
        let config = load(name);
        let text = config.to_toml();
        let again = parse_node_config(&text, "canonical").unwrap_or_else(|errors| {
            panic!("canonical form of {name} does not parse:\n{errors}\n{text}")
        });
        assert_eq!(again, config, "{name}");
        assert_eq!(
            again.to_toml(),
            text,
            "{name}: canonical form is not stable"
        );
    }
}

#[test]
#[ignore = "prints the canonical form for a human to read"]
fn print_canonical_reference() {
    println!("{}", load("reference.toml").to_toml());
}
