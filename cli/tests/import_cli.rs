//! `havctl import-keepalived`: configs written per node, unconverted items on stderr,
//! failure exit status with file:line for broken input.

use std::path::PathBuf;
use std::process::Command;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_havctl"));
    command.arg("import-keepalived");
    command
}

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/keepalived")
        .join(path)
}

#[test]
fn writes_one_config_per_node_and_lists_what_it_left_out() {
    let out = std::env::temp_dir().join(format!("hav-import-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{e}"));
    let output = binary()
        .arg("--out-dir")
        .arg(&out)
        .arg(example("haproxy-http-check/node-a.conf"))
        .arg(example("haproxy-http-check/node-b.conf"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("node-a.conf:41:9: not converted: 198.51.100.81/24"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pair: VRID 81 IPv4: lb-a (151), lb-b (150)"),
        "{stderr}"
    );
    for node in ["lb-a", "lb-b"] {
        let text = std::fs::read_to_string(out.join(format!("{node}.toml")))
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        hav_proto::config::parse_node_config(&text, node).unwrap_or_else(|e| panic!("{e}"));
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn broken_input_fails_naming_file_and_line() {
    let file = std::env::temp_dir().join(format!("hav-import-cli-bad-{}.conf", std::process::id()));
    std::fs::write(&file, "vrrp_instance VI_1 {\n interface eth0\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let output = binary()
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:1:20: this block is never closed",
            file.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    let bash = Command::new(env!("CARGO_BIN_EXE_havctl"))
        .args(["completions", "bash"])
        .output()
        .expect("havctl runs");
    assert!(bash.status.success());
    let script = String::from_utf8_lossy(&bash.stdout);
    for sub in ["push-config", "import-keepalived", "rollback", "certs"] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    let dir = std::env::temp_dir().join(format!("hav-man-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_havctl"))
        .args(["man", "--dir"])
        .arg(&dir)
        .output()
        .expect("havctl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let main = std::fs::read_to_string(dir.join("havctl.1")).expect("havctl.1");
    assert!(main.contains(".TH havctl"), "{main}");
    assert!(dir.join("havctl-import-keepalived.1").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
