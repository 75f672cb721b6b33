//! `havctl import-keepalived` run as an operator runs it, on the classic keepalived + LVS setups
//! of deploy/examples/keepalived: every node config it writes passes `hav-agent --check` (the
//! validation and host checks the daemon runs before it starts), a pair also gets a fleet file
//! the fleet expansion accepts, a configuration flattened onto one line converts to the same
//! config as its multi-line form, and an output directory is created before anything is
//! converted. Runs on the host without root: `--check` only reads the host's links.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hav_proto::config::{CheckKind, LbAlgo, LbKind, NodeConfig, parse_node_config};
use hav_tests::bench::sibling_binary;

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/keepalived")
        .join(path)
}

fn run(binary: &str, args: &[&OsStr]) -> Output {
    let path = sibling_binary(binary).unwrap_or_else(|error| {
        panic!("{error}: build it first (cargo build --bins -p hav-agent -p havctl -p hav-tests)")
    });
    Command::new(path)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("{binary}: {error}"))
}

/// `havctl import-keepalived --out-dir OUT FILES...`.
fn import(out: &Path, files: &[PathBuf]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("import-keepalived"),
        OsStr::new("--out-dir"),
        out.as_os_str(),
    ];
    args.extend(files.iter().map(|file| file.as_os_str()));
    run("havctl", &args)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The node config written for `node`, after `hav-agent --check` accepted it.
fn checked(out: &Path, node: &str) -> NodeConfig {
    let path = out.join(format!("{node}.toml"));
    let check = run("hav-agent", &[OsStr::new("--check"), path.as_os_str()]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && report.contains(&format!("ok: node {node}")),
        "hav-agent --check {}:\n{report}{}",
        path.display(),
        stderr(&check)
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    parse_node_config(&text, node).unwrap_or_else(|errors| panic!("{errors}"))
}

fn fleet_nodes(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("fleet.toml"))
        .unwrap_or_else(|e| panic!("fleet.toml: {e}"));
    let fleet = hav_proto::fleet::expand("fleet.toml", &text)
        .unwrap_or_else(|errors| panic!("{errors}\n{text}"));
    fleet.nodes.keys().cloned().collect()
}

#[test]
fn the_lvs_direct_routing_pair_runs_in_hav_agent_with_its_real_servers_and_a_fleet_file() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A directory that does not exist yet, two levels down.
    let out = scratch.path().join("converted/lvs-dr");
    let output = import(
        &out,
        &[example("lvs-dr/node-a.conf"), example("lvs-dr/node-b.conf")],
    );
    let messages = stderr(&output);
    assert!(output.status.success(), "{messages}");
    assert!(
        messages.contains("lvs-dr/node-a.conf:37:5: not converted: persistence_timeout 50"),
        "{messages}"
    );
    assert!(!messages.contains("schema does not exist"), "{messages}");
    for node in ["lvs-a", "lvs-b"] {
        let config = checked(&out, node);
        let [service] = config.virtual_servers.as_slice() else {
            panic!("{node}: {:?}", config.virtual_servers);
        };
        assert_eq!((service.lb_algo, service.lb_kind), (LbAlgo::Rr, LbKind::Dr));
        assert_eq!(service.instance, "VI_WEB");
        let checks: Vec<String> = (service.real_servers.iter())
            .map(
                |server| match server.check.as_ref().map(|check| &check.kind) {
                    Some(CheckKind::Tcp { connect }) => connect.to_string(),
                    other => panic!("{node}: {other:?}"),
                },
            )
            .collect();
        assert_eq!(checks, ["198.51.100.21:80", "198.51.100.22:80"]);
    }
    assert_eq!(fleet_nodes(&out), ["lvs-a", "lvs-b"]);
}

#[test]
fn the_lvs_nat_pair_with_http_checks_runs_in_hav_agent() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = scratch.path().join("nat");
    let output = import(
        &out,
        &[
            example("lvs-nat-http/node-a.conf"),
            example("lvs-nat-http/node-b.conf"),
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    for node in ["nat-a", "nat-b"] {
        let config = checked(&out, node);
        assert_eq!(config.sync_groups.len(), 1, "{node}");
        let [service] = config.virtual_servers.as_slice() else {
            panic!("{node}: {:?}", config.virtual_servers);
        };
        assert_eq!(
            (service.lb_algo, service.lb_kind, service.quorum),
            (LbAlgo::Wrr, LbKind::Nat, 2)
        );
        assert_eq!(service.instance, "VI_PUBLIC");
        let weights: Vec<(u32, Option<u16>)> = (service.real_servers.iter())
            .map(|server| (server.weight, server.port))
            .collect();
        assert_eq!(weights, [(3, Some(8080)), (1, Some(8080))]);
        for server in &service.real_servers {
            match server
                .check
                .as_ref()
                .map(|check| (&check.kind, check.retry))
            {
                Some((
                    CheckKind::Http {
                        path,
                        status_code,
                        tls: false,
                        ..
                    },
                    3,
                )) => assert_eq!(
                    (path.as_str(), status_code.as_slice()),
                    ("/health", &[200][..])
                ),
                other => panic!("{node}: {other:?}"),
            }
        }
    }
    assert_eq!(fleet_nodes(&out), ["nat-a", "nat-b"]);
}

#[test]
fn a_config_flattened_onto_one_line_converts_like_its_multi_line_form() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let original = example("lvs-dr/node-a.conf");
    let text = std::fs::read_to_string(&original).unwrap_or_else(|e| panic!("{e}"));
    // As posts and wikis show it: comments gone, every statement on one line.
    let flat: Vec<&str> = (text.lines())
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('!'))
        .collect();
    let flat_file = scratch.path().join("one-line.conf");
    std::fs::write(&flat_file, flat.join(" ")).unwrap_or_else(|e| panic!("{e}"));

    let one_line = scratch.path().join("one-line");
    let output = import(&one_line, std::slice::from_ref(&flat_file));
    let messages = stderr(&output);
    assert!(output.status.success(), "{messages}");
    // What is left out is still named, at its column on the one line.
    assert!(
        messages.contains("one-line.conf:1:") && messages.contains("persistence_timeout 50"),
        "{messages}"
    );
    let multi_line = scratch.path().join("multi-line");
    let output = import(&multi_line, &[original]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(checked(&one_line, "lvs-a"), checked(&multi_line, "lvs-a"));
}

#[test]
fn an_output_directory_that_cannot_be_made_fails_before_anything_is_converted() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = scratch.path().join("a-file");
    std::fs::write(&file, "").unwrap_or_else(|e| panic!("{e}"));
    // The input is broken too: the directory is the first thing that fails.
    let broken = scratch.path().join("broken.conf");
    std::fs::write(&broken, "vrrp_instance VI_1 {\n").unwrap_or_else(|e| panic!("{e}"));
    let output = import(&file.join("out"), &[broken]);
    let messages = stderr(&output);
    assert!(!output.status.success());
    assert!(messages.contains("a-file/out"), "{messages}");
    assert!(!messages.contains("never closed"), "{messages}");
}

#[test]
fn every_example_pair_converts_into_configs_hav_agent_accepts() {
    let scratch = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for setup in [
        "squid-active-passive",
        "squid-active-active",
        "nginx-sync-group",
        "haproxy-http-check",
        "lvs-dr",
        "lvs-nat-http",
        "gateway-vmac",
    ] {
        let out = scratch.path().join(setup);
        let files = [
            example(&format!("{setup}/node-a.conf")),
            example(&format!("{setup}/node-b.conf")),
        ];
        let output = import(&out, &files);
        assert!(output.status.success(), "{setup}: {}", stderr(&output));
        let mut nodes: Vec<String> = std::fs::read_dir(&out)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".toml")
                    .filter(|node| *node != "fleet")
                    .map(str::to_owned)
            })
            .collect();
        nodes.sort();
        assert_eq!(nodes.len(), 2, "{setup}: {nodes:?}");
        for node in &nodes {
            checked(&out, node);
        }
    }
}
