//! A real BIND 9 authoritative server inside a lab host: `named -g` in the foreground on one
//! address and port 53 of that host's namespace, one zone that accepts RFC 2136 updates signed
//! with a key made by `tsig-keygen`, its files in the lab's log dir. It stops with its
//! [`NsProcess`] (killed on drop), so it goes with the lab.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::fleet::{Error, wait_file_count};
use crate::netns::{NsProcess, SpawnSpec};
use crate::topology::Lab;

/// The zone every lab name lives in.
pub const ZONE: &str = "example.test.";
/// The TSIG key's name.
pub const KEY_NAME: &str = "hav-update";

/// `named` serving [`ZONE`] on `address:53` in one lab host.
pub struct DnsServer {
    pub address: SocketAddr,
    /// The key file (a BIND `key` statement) hav-coordinator signs its updates with.
    pub key_file: PathBuf,
    host: String,
    _named: NsProcess,
}

impl DnsServer {
    /// Starts named in `host` on `address` port 53 and waits until it reports running.
    pub fn start(lab: &Lab, host: &str, address: IpAddr) -> Result<DnsServer, Error> {
        // A missing named would only show as a start-up timeout below: say so at once.
        Command::new("named")
            .arg("-v")
            .output()
            .map_err(|e| format!("named (is bind9 installed? scripts/setup-host.sh): {e}"))?;
        let dir = lab.log_dir().join("dns");
        std::fs::create_dir_all(&dir)?;
        let key = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", KEY_NAME])
            .output()
            .map_err(|e| format!("tsig-keygen (is bind9 installed?): {e}"))?;
        if !key.status.success() {
            return Err(format!("tsig-keygen: {}", String::from_utf8_lossy(&key.stderr)).into());
        }
        let key_text = String::from_utf8(key.stdout)?;
        let key_file = dir.join("update.key");
        std::fs::write(&key_file, &key_text)?;
        let d = dir.display();
        let zone_name = ZONE.trim_end_matches('.');
        let conf = format!(
            r#"{key_text}
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    listen-on port 53 {{ {address}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
zone "{zone_name}" {{
    type primary;
    file "{d}/zone.db";
    allow-update {{ key "{KEY_NAME}"; }};
}};
"#
        );
        let conf_path = dir.join("named.conf");
        std::fs::write(&conf_path, conf)?;
        let zone = format!(
            "$TTL 60\n@ IN SOA ns.{ZONE} admin.{ZONE} 1 60 60 600 60\n@ IN NS ns.{ZONE}\n\
             ns IN A {address}\n"
        );
        std::fs::write(dir.join("zone.db"), zone)?;
        let named = lab.spawn(
            host,
            SpawnSpec::new("named", "named").args([
                "-g".to_owned(),
                "-c".to_owned(),
                conf_path.display().to_string(),
            ]),
        )?;
        // named logs "running" once the zone is loaded and its sockets are bound.
        wait_file_count(named.log_path(), "running", 1, Duration::from_secs(20))?;
        Ok(DnsServer {
            address: SocketAddr::new(address, 53),
            key_file,
            host: host.to_owned(),
            _named: named,
        })
    }

    /// `dig +short name type` run in `from` (a real resolver, independent of hav): the answers,
    /// sorted.
    pub fn dig(
        &self,
        lab: &Lab,
        from: &str,
        name: &str,
        record_type: &str,
    ) -> Result<Vec<String>, Error> {
        let server = format!("@{}", self.address.ip());
        let out = lab.exec(
            from,
            &[
                "dig",
                &server,
                "+short",
                "+norec",
                "+time=1",
                "+tries=2",
                name,
                record_type,
            ],
        )?;
        if !out.success() {
            return Err(format!("dig {name}: {}{}", out.stdout, out.stderr).into());
        }
        let mut answers: Vec<String> = out
            .stdout
            .lines()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect();
        answers.sort();
        Ok(answers)
    }

    /// The lab host named runs in.
    pub fn host(&self) -> &str {
        &self.host
    }
}
