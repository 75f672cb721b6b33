//! The example configs shipped in deploy/examples load, and survive a canonical round trip.
//! Every `*.toml` under deploy/examples is checked (recursively); `keepalived/` holds
//! keepalived.conf inputs of the importer and is skipped.

use std::path::{Path, PathBuf};

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

/// Every `*.toml` under `dir`, sorted, leaving out the `keepalived` directory.
fn toml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|error| panic!("{}: {error}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
            .path();
        if path.is_dir() {
            if path.file_name().is_some_and(|name| name != "keepalived") {
                toml_files(&path, found);
            }
        } else if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            found.push(path);
        }
    }
    found.sort();
}

#[test]
fn all_examples_load_and_round_trip() {
    let mut files = Vec::new();
    toml_files(&example(""), &mut files);
    let names: Vec<String> = (files.iter())
        .filter_map(|path| path.strip_prefix(example("")).ok())
        .map(|path| path.display().to_string())
        .collect();
    // The classic setups, each a pair, and the reference; a missing one is a test failure.
    for expected in [
        "reference.toml",
        "squid-active-passive/node-a.toml",
        "squid-active-passive/node-b.toml",
        "squid-active-active/node-a.toml",
        "squid-active-active/node-b.toml",
        "nginx-sync-group/node-a.toml",
        "nginx-sync-group/node-b.toml",
        "haproxy-http-probe/node-a.toml",
        "haproxy-http-probe/node-b.toml",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} not in {names:?}"
        );
    }
    for name in names {
        let config = load(&name);
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
