//! A real BIND 9 authoritative server for tests: `named -g` in the foreground on 127.0.0.1 and a
//! free port, one zone `example.test.` that accepts updates signed with a key made by
//! `tsig-keygen`, all in a temp dir; killed on drop.

// Each test binary uses part of this helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const ZONE: &str = "example.test.";
pub const KEY_NAME: &str = "hav-update";

pub struct Bind {
    pub address: SocketAddr,
    /// The key statement, as tsig-keygen printed it.
    pub key_text: String,
    pub key_file: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Bind {
    pub fn start() -> Bind {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .expect("tsig-keygen runs (bind9 installed)");
        assert!(key.status.success(), "tsig-keygen failed");
        let key_text = String::from_utf8(key.stdout).expect("utf-8 key");
        let key_file = dir.path().join("update.key");
        std::fs::write(&key_file, &key_text).expect("write key");
        // Port 0 cannot be given to named: take a free UDP port and release it (named binds UDP
        // and TCP on it; a collision makes the start-up wait below fail loudly).
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("free port")
            .port();
        let d = dir.path().display();
        let conf = format!(
            r#"{key_text}
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "example.test" {{
    type primary;
    file "{d}/example.test.zone";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"#
        );
        std::fs::write(dir.path().join("named.conf"), conf).expect("write conf");
        let zone = "$TTL 60\n@ IN SOA ns.example.test. admin.example.test. 1 60 60 600 60\n\
                    @ IN NS ns.example.test.\nns IN A 127.0.0.1\n";
        std::fs::write(dir.path().join("example.test.zone"), zone).expect("write zone");
        let mut child = Command::new("named")
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("named starts (bind9 installed)");
        let stderr = child.stderr.take().expect("piped stderr");
        // Wait for named to say it is running (it logs "running" once the zone is loaded and
        // the sockets are bound); the timeout is a safety net only.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                log.push_str(&line);
                log.push('\n');
                if line.ends_with("running") {
                    let _ = tx.send(Ok(()));
                }
            }
            let _ = tx.send(Err(log));
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(log)) => panic!("named exited before running:\n{log}"),
            Err(_) => panic!("named did not report running within 30 s"),
        }
        Bind {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            key_text,
            key_file,
            child,
            _dir: dir,
        }
    }

    /// The addresses `dig` (a real resolver, independent of hav) gets for `name`.
    pub fn dig(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for record_type in ["A", "AAAA"] {
            let output = Command::new("dig")
                .arg(format!("@{}", self.address.ip()))
                .args(["-p", &self.address.port().to_string(), "+short", "+norec"])
                .args([name, record_type])
                .output()
                .expect("dig runs (bind9-dnsutils installed)");
            assert!(output.status.success(), "dig failed");
            out.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
        out.sort();
        out
    }

    /// Changes the zone behind hav's back with `nsupdate` (signed with the same key).
    pub fn nsupdate(&self, commands: &str) {
        let script = format!(
            "server {} {}\nzone {ZONE}\n{commands}\nsend\n",
            self.address.ip(),
            self.address.port()
        );
        let mut child = Command::new("nsupdate")
            .arg("-k")
            .arg(&self.key_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsupdate runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let output = child.wait_with_output().expect("nsupdate ends");
        assert!(
            output.status.success(),
            "nsupdate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
