//! Loading from files: read errors, explicit environments, and telling unchanged instances apart
//! across a reload.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hav_proto::config::{load_node_config_with_env, parse_node_config};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(key, value)| (key.into(), value.into()))
        .collect()
}

#[test]
fn missing_file_is_a_read_error() {
    let path = Path::new("/nonexistent/hav/node.toml");
    let errors = load_node_config_with_env(path, []).expect_err("no such file");
    assert_eq!(
        errors.lines(),
        [
            "/nonexistent/hav/node.toml: cannot read the file: No such file or directory (os error 2)"
        ]
    );
}

#[test]
fn explicit_environment_overrides_and_ignores_the_rest() {
    let vars = env(&[
        ("HAV_NODE__NAME", "proxy-z"),
        ("HAV_NODE__STATUS_SOCKET", "/run/hav/z.sock"),
        ("HAV_LOG", "debug"),
        ("PATH", "/usr/bin"),
    ]);
    let config = load_node_config_with_env(&example("squid-active-passive/node-a.toml"), vars)
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.node.name, "proxy-z");
    assert_eq!(
        config.node.status_socket,
        Some(PathBuf::from("/run/hav/z.sock"))
    );
}

#[test]
fn fingerprints_tell_changed_instances_apart() {
    let before = load_node_config_with_env(&example("squid-active-active/node-a.toml"), [])
        .unwrap_or_else(|errors| panic!("{errors}"));
    let text = std::fs::read_to_string(example("squid-active-active/node-a.toml"))
        .expect("example is readable");

    // VI_2's priority changes; VI_1 stays as it was.
    let changed = text.replacen("vrid = 62\npriority = 100", "vrid = 62\npriority = 110", 1);
    let after = parse_node_config(&changed, "reload").unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        before.instance_fingerprint("VI_1"),
        after.instance_fingerprint("VI_1")
    );
    assert_ne!(
        before.instance_fingerprint("VI_2"),
        after.instance_fingerprint("VI_2")
    );

    // A probe both track changes: both instances change.
    let probe_changed = text.replacen("fall = 3", "fall = 4", 1);
    let after =
        parse_node_config(&probe_changed, "reload").unwrap_or_else(|errors| panic!("{errors}"));
    assert_ne!(
        before.instance_fingerprint("VI_1"),
        after.instance_fingerprint("VI_1")
    );
    assert_ne!(
        before.instance_fingerprint("VI_2"),
        after.instance_fingerprint("VI_2")
    );

    // Only the node name changes: no instance changes.
    let renamed = text.replacen("name = \"edge-a\"", "name = \"edge-c\"", 1);
    let after = parse_node_config(&renamed, "reload").unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(
        before.instance_fingerprint("VI_1"),
        after.instance_fingerprint("VI_1")
    );
    assert_eq!(
        before.instance_fingerprint("VI_2"),
        after.instance_fingerprint("VI_2")
    );
    assert_eq!(after.instance_fingerprint("VI_3"), None);
}
