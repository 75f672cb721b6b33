//! The keepalived.conf inputs of the import tests are configs real keepalived accepts:
//! `keepalived -t` (config test mode) exits 0 on each, run by
//! deploy/examples/keepalived/check-with-keepalived.sh in throw-away namespaces.
//! Needs root and keepalived; without them the test says so and passes without checking.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn keepalived_accepts_every_example() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/keepalived/check-with-keepalived.sh");
    let root = running_as_root();
    let keepalived = Command::new("keepalived").arg("--version").output().is_ok();
    if !root || !keepalived {
        eprintln!("SKIPPED: needs root (have: {root}) and keepalived (have: {keepalived})");
        return;
    }
    let output = Command::new(&script)
        .output()
        .unwrap_or_else(|error| panic!("{}: {error}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "keepalived -t refused an example:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.starts_with("ok "))
            .count(),
        14,
        "{stdout}"
    );
}

/// Whether this process runs as root, read from /proc (no extra dependency for one call).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}
