//! The real `havctl` binary against a real coordinator over mTLS: the operator's commands, their
//! output, and their one-line errors.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use hav_coordinator::tls::ServerTlsFiles;
use hav_coordinator::{CoordinatorConfig, RunningCoordinator};

fn havctl(args: &[&str]) -> Output {
    havctl_with_config(args, Path::new("/nonexistent/hav-test/havctl.toml"))
}

/// havctl with its context file at `config` and no `HAVCTL_*` variables.
fn havctl_with_config(args: &[&str], config: &Path) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_havctl"));
    for var in [
        "HAVCTL_COORDINATOR",
        "HAVCTL_CERT",
        "HAVCTL_KEY",
        "HAVCTL_CA",
        "HAVCTL_CONTEXT",
    ] {
        command.env_remove(var);
    }
    command.env("HAV_CONFIG", config);
    command.args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "havctl failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// The single error line of a failed run.
fn fails(output: Output) -> String {
    assert!(!output.status.success(), "havctl unexpectedly succeeded");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    stderr
}

async fn coordinator(dir: &Path) -> RunningCoordinator {
    let files = ServerTlsFiles {
        cert: dir.join("coordinator-coord.pem"),
        key: dir.join("coordinator-coord.key"),
        ca: dir.join("ca.pem"),
    };
    hav_coordinator::start(CoordinatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        files,
        dir.join("data"),
    ))
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    ok(havctl(&["certs", "init", "--dir", d]));
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    ok(havctl(&[
        "certs",
        "issue",
        "--dir",
        d,
        "--kind",
        "coordinator",
        "--name",
        "coord",
    ]));
    let issued = ok(havctl(&[
        "certs", "issue", "--dir", d, "--kind", "operator", "--name", "olga", "--role", "operator",
    ]));
    assert!(
        issued.contains("hav://operator/olga?role=operator"),
        "{issued}"
    );
    ok(havctl(&[
        "certs", "issue", "--dir", d, "--kind", "operator", "--name", "vera",
    ]));
    let refused = fails(havctl(&[
        "certs", "issue", "--dir", d, "--kind", "agent", "--name", "lb-1", "--role", "operator",
    ]));
    assert!(
        refused.contains("--role is only for operator certificates"),
        "{refused}"
    );

    let running = coordinator(dir.path()).await;
    let address = running.local_addr.to_string();
    let ca = format!("{d}/ca.pem");
    let as_user = |user: &str, args: &[&str]| {
        let cert = format!("{d}/operator-{user}.pem");
        let key = format!("{d}/operator-{user}.key");
        let mut all = vec![
            "--coordinator",
            address.as_str(),
            "--cert",
            cert.as_str(),
            "--key",
            key.as_str(),
            "--ca",
            ca.as_str(),
        ];
        all.extend_from_slice(args);
        let all: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        havctl(&refs)
    };

    let config = dir.path().join("lb-1.toml");
    std::fs::write(&config, LB1).unwrap();
    let config = config.to_str().unwrap();
    let dry = ok(as_user("vera", &["push-config", config, "--dry-run"]));
    assert!(dry.contains("lb-1: added, dry_run"), "{dry}");
    assert!(dry.contains("+ vrid = 10"), "{dry}");

    let denied = fails(as_user("vera", &["push-config", config]));
    assert!(
        denied.contains("viewer vera may not push config"),
        "{denied}"
    );

    let pushed = ok(as_user(
        "olga",
        &["push-config", config, "--comment", "first"],
    ));
    assert!(pushed.contains("config version 1"), "{pushed}");
    assert!(pushed.contains("lb-1: added, offline"), "{pushed}");

    let status = ok(as_user("vera", &["status", "-o", "json"]));
    let nodes: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(nodes[0]["name"], "lb-1");
    assert_eq!(nodes[0]["connected"], false);
    assert_eq!(nodes[0]["desired_config_version"], 1);

    let history = ok(as_user("vera", &["history", "-o", "json"]));
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(history["versions"][0]["author"], "olga");

    let broken = dir.path().join("lb-2.toml");
    std::fs::write(&broken, "[instance\n").unwrap();
    let invalid = fails(as_user("vera", &["validate", broken.to_str().unwrap()]));
    assert!(
        invalid.starts_with("havctl: config rejected: config of lb-2: line 1, column 10:"),
        "{invalid}"
    );

    let fleet = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        FLEET.replace("198.51.100.12\"", "198.51.100.12\"\nversion = 2"),
    )
    .unwrap();
    let fleet = fleet.to_str().unwrap();
    let bad_pair = fails(as_user("vera", &["validate", "--fleet", fleet]));
    assert!(
        bad_pair.contains(
            "group web: node lb-2: web-vip0.version: peers of instance web-vip0 disagree"
        ),
        "{bad_pair}"
    );
    std::fs::write(fleet, FLEET).unwrap();
    let planned = ok(as_user(
        "olga",
        &["push-config", "--fleet", fleet, "--dry-run"],
    ));
    // The canonical expansion of lb-1 equals the file pushed before: nothing to change.
    assert!(planned.contains("lb-1: unchanged, dry_run"), "{planned}");
    assert!(planned.contains("lb-2: added, dry_run"), "{planned}");

    let missing = fails(havctl(&["--coordinator", &address, "status"]));
    assert!(
        missing.contains("missing --ca (or $HAVCTL_CA)"),
        "{missing}"
    );
    let plaintext = fails(havctl(&[
        "--coordinator",
        "http://127.0.0.1:7400",
        "status",
    ]));
    assert!(
        plaintext.contains("havctl speaks only mTLS, not http://"),
        "{plaintext}"
    );

    // One context command, then every command works without flags, from any directory.
    let contexts = dir.path().join("config").join("havctl.toml");
    let with_context = |args: &[&str]| havctl_with_config(args, &contexts);
    let saved = ok(with_context(&[
        "config",
        "set-context",
        "lab",
        "--coordinator",
        &address,
        "--ca",
        &ca,
        "--cert",
        &format!("{d}/operator-vera.pem"),
        "--key",
        &format!("{d}/operator-vera.key"),
    ]));
    assert!(
        saved.contains("context lab saved") && saved.contains("(current)"),
        "{saved}"
    );
    let status = ok(with_context(&["status", "-o", "json"]));
    let nodes: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(nodes[0]["name"], "lb-1");
    assert_eq!(
        ok(with_context(&["config", "current-context"])).trim(),
        "lab"
    );
    let unknown = fails(with_context(&["--context", "prod", "status"]));
    assert!(
        unknown.contains("no context \"prod\" (known: lab)"),
        "{unknown}"
    );

    running.shutdown().await.unwrap();
    let down = fails(as_user("vera", &["status"]));
    assert!(
        down.contains("connection refused: is hav-coordinator running"),
        "{down}"
    );
}

/// The fleet below expands lb-1 into exactly this file (canonical form aside).
const LB1: &str = r#"[node]
name = "lb-1"

[[instance]]
name = "web-vip0"
interface = "eth0"
vrid = 10
priority = 150
source_address = "198.51.100.11"
unicast_peers = [{ address = "198.51.100.12", priority = 140 }]
vips = ["198.51.100.100/24"]
"#;

const FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
first_vrid = 10
vips = ["198.51.100.100/24"]
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"
"#;
