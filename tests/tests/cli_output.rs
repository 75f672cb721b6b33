//! What havctl prints, the real binary against a real hav-coordinator process on loopback (no
//! agents): `-o json` is exactly one JSON document on every command that prints; a dry run shows
//! only what a push changes; waves are numbered alike in tables and JSON; a month with no data
//! says so; a malformed `--month` is an argument error; a certificate from another CA is refused
//! with the same clear sentence every time; `havctl watch` prints the end of a split brain only
//! after its raise, with millisecond times (fake agents report over the real agent protocol). Needs `havctl` and `hav-coordinator` built
//! (`cargo build -p havctl -p hav-coordinator`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::{
    AgentMessage, Event, Hello, InstanceState, PROTOCOL_VERSION, StateSnapshot, Transition,
    VrrpState, event,
};
use hav_tests::bench::sibling_binary;
use hav_tests::coordinator::{CoordinatorProcess, Error};
use serde_json::Value;
use tokio::sync::mpsc;

/// A coordinator on loopback and havctl pointed at it.
struct Lab {
    coordinator: CoordinatorProcess,
    address: String,
}

impl Lab {
    fn start() -> Result<Lab, Error> {
        Lab::start_with(|_| Ok(Vec::new()))
    }

    /// A coordinator started with the arguments `args` makes in its directory.
    fn start_with(
        args: impl FnOnce(&CoordinatorProcess) -> Result<Vec<String>, Error>,
    ) -> Result<Lab, Error> {
        let mut coordinator = CoordinatorProcess::new()?;
        coordinator.args = args(&coordinator)?;
        let address = coordinator.start()?.to_string();
        Ok(Lab {
            coordinator,
            address,
        })
    }

    /// havctl as operator olga.
    fn havctl(&self, args: &[&str]) -> Result<Output, Error> {
        let certs = self.coordinator.certs();
        self.havctl_with(
            &certs.join("operator-olga.pem"),
            &certs.join("operator-olga.key"),
            args,
        )
    }

    /// havctl with the given certificate and key (and this fleet's CA), no context file and no
    /// other `HAVCTL_*` variables.
    fn havctl_with(&self, cert: &Path, key: &Path, args: &[&str]) -> Result<Output, Error> {
        let ca = self.coordinator.certs().join("ca.pem");
        let mut command = Command::new(sibling_binary("havctl")?);
        for var in [
            "HAVCTL_COORDINATOR",
            "HAVCTL_CERT",
            "HAVCTL_KEY",
            "HAVCTL_CA",
            "HAVCTL_CONTEXT",
        ] {
            command.env_remove(var);
        }
        // The address by variable: a `--coordinator` in `args` overrides it.
        command
            .env("HAV_CONFIG", "/nonexistent/hav-test/havctl.toml")
            .env("HAVCTL_COORDINATOR", &self.address)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--ca")
            .arg(ca)
            .args(args);
        Ok(command.output()?)
    }

    /// Writes a file in the coordinator's directory; its path.
    fn write(&self, name: &str, text: &str) -> Result<String, Error> {
        let path = self.coordinator.dir().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Stdout of a successful run.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "havctl failed: {}{}",
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// The whole stdout as exactly one JSON document (serde_json refuses anything after it).
fn document(output: &Output) -> Value {
    let text = stdout(output);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{text}\nstderr: {}",
            stderr(output)
        )
    })
}

/// The one error line of a failed run.
fn fails(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "havctl unexpectedly succeeded: {}",
        stdout(output)
    );
    let text = stderr(output);
    assert_eq!(text.lines().count(), 1, "one error line expected: {text}");
    text
}

fn node_config(name: &str, priority: u8, extra_node_keys: &str) -> String {
    format!(
        r#"[node]
name = "{name}"
{extra_node_keys}
[[instance]]
name = "web-vip0"
interface = "eth0"
vrid = 10
priority = {priority}
source_address = "198.51.100.11"
unicast_peers = [{{ address = "198.51.100.12", priority = 140 }}]
vips = ["198.51.100.100/24"]
"#
    )
}

/// A TSIG key as `tsig-keygen` writes it.
const DNS_KEY: &str = "key \"hav-update\" {\n\talgorithm hmac-sha256;\n\t\
                       secret \"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\";\n};\n";

/// Two groups with DNS names (so that `dns show` has two records), no agent running.
const FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
first_vrid = 10
vips = ["198.51.100.100/24", "198.51.100.101/24"]
dns_name = "web.example.test"
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"

[[group]]
name = "api"
interface = "eth0"
first_vrid = 20
vips = ["198.51.100.110/24"]
dns_name = "api.example.test"
[[group.node]]
name = "lb-3"
address = "198.51.100.13"
[[group.node]]
name = "lb-4"
address = "198.51.100.14"
"#;

#[test]
fn a_dry_run_shows_only_what_a_push_changes() -> Result<(), Error> {
    let lab = Lab::start()?;
    // A new node: its whole pushed config, but nothing an agent keeps from its local file.
    let local_keys = "state_dir = \"/srv/hav\"\nstatus_socket = \"/run/hav/lb-1.sock\"\n";
    let lb1 = lab.write("lb-1.toml", &node_config("lb-1", 150, local_keys))?;
    let added = ok(lab.havctl(&["push-config", &lb1, "--dry-run"])?);
    assert!(added.contains("lb-1: added, dry_run"), "{added}");
    assert!(added.contains("+ name = \"lb-1\""), "{added}");
    assert!(added.contains("+ priority = 150"), "{added}");
    for local in ["state_dir", "status_socket", "/var/lib/hav"] {
        assert!(!added.contains(local), "{local} shown as pushed:\n{added}");
    }
    ok(lab.havctl(&["push-config", &lb1])?);

    // The same config with other local sections changes nothing a push sets.
    let moved = lab.coordinator.dir().join("moved");
    std::fs::create_dir_all(&moved)?;
    let moved = moved.join("lb-1.toml").display().to_string();
    std::fs::write(&moved, node_config("lb-1", 150, ""))?;
    let same = ok(lab.havctl(&["push-config", &moved, "--dry-run"])?);
    assert!(same.contains("lb-1: unchanged, dry_run"), "{same}");

    // A change shows that change only.
    std::fs::write(&moved, node_config("lb-1", 160, ""))?;
    let changed = ok(lab.havctl(&["push-config", &moved, "--dry-run"])?);
    assert!(changed.contains("lb-1: changed, dry_run"), "{changed}");
    let diff: Vec<&str> = (changed.lines())
        .filter_map(|line| line.strip_prefix("    "))
        .collect();
    assert_eq!(diff, ["- priority = 150", "+ priority = 160"], "{changed}");
    Ok(())
}

#[test]
fn every_command_that_prints_prints_one_json_document() -> Result<(), Error> {
    // A DNS server that is not there: `dns show` still has a record (with its error) per group.
    let lab = Lab::start_with(|coordinator| {
        let key = coordinator.dir().join("update.key");
        std::fs::write(&key, DNS_KEY)?;
        Ok([
            "--dns-server",
            "127.0.0.1:9",
            "--dns-zone",
            "example.test",
            "--dns-key",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([key.display().to_string()])
        .collect())
    })?;

    let fleet = lab.write("fleet.toml", FLEET)?;
    let lb1 = lab.write("lb-1.toml", &node_config("lb-1", 150, ""))?;
    let broken = lab.write("lb-9.toml", "[instance\n")?;

    let dry =
        document(&lab.havctl(&["push-config", "--fleet", &fleet, "--dry-run", "-o", "json"])?);
    assert_eq!(dry["version"], 0);
    assert_eq!(dry["nodes"].as_array().map(Vec::len), Some(4), "{dry}");
    assert_eq!(dry["nodes"][0]["outcome"], "dry_run");
    let pushed = document(&lab.havctl(&["push-config", "--fleet", &fleet, "-o", "json"])?);
    assert_eq!(pushed["version"], 1, "{pushed}");
    assert_eq!(pushed["nodes"][0]["outcome"], "offline", "{pushed}");

    let valid = document(&lab.havctl(&["validate", &lb1, "-o", "json"])?);
    assert_eq!(valid["ok"], true, "{valid}");
    // A refusal is the answer (one document) and an error (exit status, one line).
    let refused = lab.havctl(&["validate", &broken, "-o", "json"])?;
    fails(&refused);
    let refused = document(&refused);
    assert_eq!(refused["ok"], false, "{refused}");
    assert_eq!(refused["errors"][0]["node"], "lb-9", "{refused}");

    let history = document(&lab.havctl(&["history", "-o", "json"])?);
    assert_eq!(history["versions"][0]["version"], 1, "{history}");
    let status = document(&lab.havctl(&["status", "-o", "json"])?);
    assert_eq!(status.as_array().map(Vec::len), Some(4), "{status}");

    ok(lab.havctl(&["push-config", &lb1])?);
    let rollback = document(&lab.havctl(&["rollback", "1", "-o", "json"])?);
    assert_eq!(rollback["version"], 3, "{rollback}");

    let dns = document(&lab.havctl(&["dns", "show", "-o", "json"])?);
    let records = dns["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{dns}");
    assert!(
        records
            .iter()
            .all(|r| !r["error"].as_str().unwrap_or_default().is_empty()),
        "{dns}"
    );

    let sla = document(&lab.havctl(&["sla", "-o", "json"])?);
    assert_eq!(sla["groups"].as_array().map(Vec::len), Some(2), "{sla}");

    // A drain the coordinator refuses (the node is not connected) is its answer and an error.
    for command in [&["drain", "lb-1"][..], &["undrain", "lb-1"][..]] {
        let out = lab.havctl(&[command, &["-o", "json"]].concat())?;
        let error = fails(&out);
        assert!(
            error.contains("refused") && !error.contains("config"),
            "{error}"
        );
        let answer = document(&out);
        assert_eq!(answer["node"], "lb-1", "{answer}");
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["action"], command[0], "{answer}");
        // The table form prints nothing but the error.
        let out = lab.havctl(command)?;
        fails(&out);
        assert_eq!(stdout(&out), "", "{command:?}");
    }

    // The keepalived importer, a local command.
    let keepalived = lab.write(
        "keepalived.conf",
        "vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  \
         priority 150\n  virtual_ipaddress {\n    198.51.100.100/24\n  }\n}\n\
         vrrp_script chk { script \"pidof haproxy\" }\nglobal_defs { enable_script_security }\n",
    )?;
    let import = lab.havctl(&["import-keepalived", &keepalived, "-o", "json"])?;
    assert!(import.status.success(), "{}", stderr(&import));
    assert!(
        stderr(&import).is_empty(),
        "json goes to stdout only: {}",
        stderr(&import)
    );
    let import = document(&import);
    assert_eq!(
        import["nodes"].as_array().map(Vec::len),
        Some(1),
        "{import}"
    );
    assert!(
        import["nodes"][0]["toml"]
            .as_str()
            .unwrap_or_default()
            .contains("vrid = 51"),
        "{import}"
    );

    // Rolling maintenance over agents that are not there: the job exists and fails at once.
    let job =
        document(&lab.havctl(&["maintenance", "rollout", "--all", "--detach", "-o", "json"])?);
    let id = job["id"].to_string();
    let abort = document(&lab.havctl(&["maintenance", "abort", &id, "-o", "json"])?);
    assert_eq!(abort["job"].to_string(), id, "{abort}");
    Ok(())
}

#[test]
fn waves_are_numbered_from_one_in_tables_and_json() -> Result<(), Error> {
    let lab = Lab::start()?;
    let fleet = lab.write("fleet.toml", FLEET)?;
    ok(lab.havctl(&["push-config", "--fleet", &fleet])?);
    let job =
        document(&lab.havctl(&["maintenance", "rollout", "--all", "--detach", "-o", "json"])?);
    let id = job["id"].to_string();
    let json = document(&lab.havctl(&["maintenance", "status", &id, "-o", "json"])?);
    let table = ok(lab.havctl(&["maintenance", "status", &id])?);
    let nodes = json["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 4, "{json}");
    for node in &nodes {
        let name = node["node"].as_str().unwrap_or_default();
        let wave = node["wave"].as_u64().unwrap_or_default();
        assert!(wave >= 1, "waves count from 1: {json}");
        let line = (table.lines())
            .find(|line| line.split_whitespace().nth(2) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{table}"));
        assert!(
            line.trim_start().starts_with(&format!("wave {wave:>2} ")),
            "table and json disagree on {name}'s wave ({wave}): {line}"
        );
    }
    let waves = json["waves"].as_u64().unwrap_or_default();
    assert_eq!(
        nodes.iter().filter_map(|n| n["wave"].as_u64()).max(),
        Some(waves),
        "the last wave is numbered like the count of waves: {json}"
    );
    Ok(())
}

#[test]
fn a_month_without_data_says_so_and_a_malformed_month_names_the_flag() -> Result<(), Error> {
    let lab = Lab::start()?;
    let fleet = lab.write("fleet.toml", FLEET)?;
    ok(lab.havctl(&["push-config", "--fleet", &fleet])?);

    let json = document(&lab.havctl(&["sla", "--month", "2026-11", "-o", "json"])?);
    assert_eq!(json["month"], "2026-11");
    let groups = json["groups"].as_array().cloned().unwrap_or_default();
    assert_eq!(groups.len(), 2, "{json}");
    for group in &groups {
        assert_eq!(group["availability_percent"], Value::Null, "{json}");
        assert_eq!(group["no_data"], true, "{json}");
    }
    let table = ok(lab.havctl(&["sla", "--month", "2026-11"])?);
    assert!(table.contains("no data for 2026-11"), "{table}");
    assert!(!table.contains("100.0000"), "{table}");

    for month in ["2026-13", "2026-1", "november", "2026-00"] {
        let out = lab.havctl(&["sla", "--month", month])?;
        assert!(!out.status.success(), "--month {month} accepted");
        let error = stderr(&out);
        assert!(
            error.contains("--month") && error.contains("YYYY-MM"),
            "--month {month}: {error}"
        );
        assert!(!error.contains("invalid config"), "{error}");
    }

    let plaintext = fails(&lab.havctl(&["--coordinator", "http://127.0.0.1:7400", "status"])?);
    assert!(
        plaintext.contains("--coordinator") && plaintext.contains("only mTLS"),
        "{plaintext}"
    );
    assert!(!plaintext.contains("cannot reach"), "{plaintext}");
    // Syntax errors are said as such, never as a coordinator out of reach.
    for address in ["2001:db8::1:7400", "bad host:7400"] {
        let error = fails(&lab.havctl(&["--coordinator", address, "status"])?);
        assert!(
            error.contains("--coordinator") && error.contains("expected host:port"),
            "{address}: {error}"
        );
        assert!(!error.contains("cannot reach"), "{address}: {error}");
    }
    // So is a file of ours that cannot be read: nothing was dialled.
    let missing = Path::new("/nonexistent/operator.pem");
    let unreadable = fails(&lab.havctl_with(missing, missing, &["status"])?);
    assert!(
        unreadable.contains("cannot read certificate from /nonexistent/operator.pem")
            && !unreadable.contains("cannot reach"),
        "{unreadable}"
    );
    Ok(())
}

#[test]
fn a_certificate_from_another_ca_is_refused_with_the_same_clear_reason_every_time()
-> Result<(), Error> {
    let lab = Lab::start()?;
    let foreign = tempfile::tempdir()?;
    let havctl = sibling_binary("havctl")?;
    // One CA named like ours (the signature check fails) and one named otherwise (unknown CA).
    for (dir, ca_name) in [
        ("same-name", "hav fleet CA"),
        ("other-name", "someone else's CA"),
    ] {
        let dir: PathBuf = foreign.path().join(dir);
        let d = dir.display().to_string();
        for args in [
            vec!["certs", "init", "--dir", &d, "--name", ca_name],
            vec![
                "certs", "issue", "--dir", &d, "--kind", "operator", "--name", "olga", "--role",
                "operator",
            ],
        ] {
            let out = Command::new(&havctl).args(&args).output()?;
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        }
        let (cert, key) = (dir.join("operator-olga.pem"), dir.join("operator-olga.key"));
        for run in 0..8 {
            for command in [&["status"][..], &["watch"][..]] {
                let error = fails(&lab.havctl_with(&cert, &key, command)?);
                assert!(
                    error.contains("refused our client certificate")
                        && error.contains("not signed by the fleet CA"),
                    "{ca_name}, run {run}, {command:?}: {error}"
                );
            }
        }
    }
    // Our own certificate still works.
    ok(lab.havctl(&["status"])?);
    Ok(())
}

/// A fake agent: its session with the coordinator, reporting what the test says.
struct FakeAgent {
    to_coordinator: mpsc::Sender<AgentMessage>,
    // Kept open: the session lasts as long as the response stream.
    _from_coordinator: tonic::Streaming<hav_proto::v1::CoordinatorMessage>,
}

impl FakeAgent {
    async fn connect(coordinator: &CoordinatorProcess, node: &str) -> Result<FakeAgent, Error> {
        let (to_coordinator, outbound) = mpsc::channel::<AgentMessage>(16);
        to_coordinator
            .send(message(AgentBody::Hello(Hello {
                software_version: "test-agent".into(),
                protocol_version: PROTOCOL_VERSION,
                capabilities: Vec::new(),
                node_name: node.into(),
                config_version: 0,
            })))
            .await?;
        let stream = futures::stream::unfold(outbound, |mut rx| async move {
            rx.recv().await.map(|m| (m, rx))
        });
        let channel = coordinator.channel(&format!("agent-{node}")).await?;
        let mut from_coordinator = AgentServiceClient::new(channel)
            .connect(stream)
            .await?
            .into_inner();
        // The Welcome: the session is registered.
        tokio::time::timeout(WAIT, from_coordinator.message()).await??;
        Ok(FakeAgent {
            to_coordinator,
            _from_coordinator: from_coordinator,
        })
    }

    /// Reports instance `web` (VRID 51, VIP 198.51.100.10) as master holding the VIP, or backup.
    async fn report(&self, master: bool) -> Result<(), Error> {
        let (state, vips_held) = if master {
            (VrrpState::Master, vec!["198.51.100.10/24".into()])
        } else {
            (VrrpState::Backup, Vec::new())
        };
        let snapshot = StateSnapshot {
            instances: vec![InstanceState {
                name: "web".into(),
                vrid: 51,
                state: state as i32,
                effective_priority: 100,
                configured_priority: 100,
                vips_held,
                interface: "eth0".into(),
                advert_interval_ms: 100,
                ..InstanceState::default()
            }],
            unix_ms: 1,
            ..StateSnapshot::default()
        };
        self.to_coordinator
            .send(message(AgentBody::Snapshot(snapshot)))
            .await?;
        Ok(())
    }

    /// A transition event stamped `unix_ms` with `cause`: a marker a watch prints.
    async fn mark(&self, unix_ms: u64, cause: &str) -> Result<(), Error> {
        let transition = Transition {
            instance: "web".into(),
            from: VrrpState::Backup as i32,
            to: VrrpState::Backup as i32,
            cause: cause.into(),
        };
        self.to_coordinator
            .send(message(AgentBody::Event(Event {
                unix_ms,
                kind: Some(event::Kind::Transition(transition)),
            })))
            .await?;
        Ok(())
    }
}

fn message(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

/// Safety net of a wait (never reached when things work).
const WAIT: Duration = Duration::from_secs(20);

/// A running `havctl watch` and the lines it printed so far.
struct Watch {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(lab: &Lab) -> Result<Watch, Error> {
        let certs = lab.coordinator.certs();
        let mut command = Command::new(sibling_binary("havctl")?);
        command
            .env("HAV_CONFIG", "/nonexistent/hav-test/havctl.toml")
            .env_remove("HAVCTL_CONTEXT")
            .arg("--coordinator")
            .arg(&lab.address)
            .arg("--ca")
            .arg(certs.join("ca.pem"))
            .arg("--cert")
            .arg(certs.join("operator-olga.pem"))
            .arg("--key")
            .arg(certs.join("operator-olga.key"))
            .arg("watch")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
        Ok(Watch { child, lines })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits until a printed line contains `needle`.
    async fn wait_for(&self, needle: &str) -> Result<(), Error> {
        let deadline = Instant::now() + WAIT;
        while !self.lines().iter().any(|l| l.contains(needle)) {
            if Instant::now() > deadline {
                return Err(format!("watch never printed {needle:?}: {:?}", self.lines()).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until this watch is subscribed: `agent` sends markers until one is printed.
    async fn subscribed(&self, agent: &FakeAgent, name: &str) -> Result<(), Error> {
        let deadline = Instant::now() + WAIT;
        loop {
            agent.mark(MARK_MS, name).await?;
            if self.wait_for_within(name, Duration::from_millis(200)).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("watch {name} never subscribed: {:?}", self.lines()).into());
            }
        }
    }

    async fn wait_for_within(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's stamp of the markers (the coordinator stamps events as it receives them).
const MARK_MS: u64 = 1_793_688_777_300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_the_end_of_a_split_brain_only_after_its_raise_with_millisecond_times()
-> Result<(), Error> {
    let lab = Lab::start_with(|coordinator| {
        coordinator.issue(&["--kind", "agent", "--name", "lb-2"])?;
        Ok(Vec::new())
    })?;
    let lb1 = FakeAgent::connect(&lab.coordinator, "lb-1").await?;
    let lb2 = FakeAgent::connect(&lab.coordinator, "lb-2").await?;
    lb1.report(false).await?;
    lb2.report(false).await?;

    let before = Watch::start(&lab)?;
    before.subscribed(&lb1, "before subscribed").await?;
    // Both masters of one VIP past the grace: a split brain raised.
    lb1.report(true).await?;
    lb2.report(true).await?;
    before.wait_for("SPLIT BRAIN: 198.51.100.10").await?;

    let after = Watch::start(&lab)?;
    after.subscribed(&lb1, "after subscribed").await?;
    lb2.report(false).await?;
    before.wait_for("split brain over: 198.51.100.10").await?;
    // The watch started after the raise has seen the end by the time it prints this marker.
    lb1.mark(MARK_MS, "after the end").await?;
    after.wait_for("after the end").await?;
    let late = after.lines();
    assert!(
        !late.iter().any(|l| l.contains("split brain over")),
        "an end without its raise was printed: {late:?}"
    );

    for line in before.lines().iter().chain(&late) {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        let fraction = stamp
            .strip_suffix('Z')
            .and_then(|s| s.rsplit_once('.'))
            .map(|(_, fraction)| fraction);
        assert!(
            fraction.is_some_and(|f| f.len() == 3 && f.bytes().all(|b| b.is_ascii_digit())),
            "not a millisecond RFC 3339 time: {line}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_a_rollout_line_only_when_it_reads_differently() -> Result<(), Error> {
    let lab = Lab::start()?;
    let fleet = lab.write("fleet.toml", FLEET)?;
    ok(lab.havctl(&["push-config", "--fleet", &fleet])?);
    // lb-1 only marks the watch; the job fails at its first node (lb-3, not connected), after
    // the coordinator has published it several times (pending, draining, failed, ended).
    let lb1 = FakeAgent::connect(&lab.coordinator, "lb-1").await?;
    lb1.report(false).await?;
    let watch = Watch::start(&lab)?;
    watch.subscribed(&lb1, "watch subscribed").await?;
    let job =
        document(&lab.havctl(&["maintenance", "rollout", "--all", "--detach", "-o", "json"])?);
    assert_eq!(job["waves"], 4, "{job}");
    watch.wait_for("rollout job 1 failed").await?;
    // Published after the job ended: every update of the job was printed (or not) before it.
    lb1.mark(MARK_MS, "after the job").await?;
    watch.wait_for("after the job").await?;
    let rollout: Vec<String> = (watch.lines().iter())
        .filter_map(|line| line.split_once(" rollout job "))
        .map(|(_, what)| what.to_owned())
        .collect();
    assert!(rollout.len() >= 2, "{rollout:?}");
    let mut distinct = rollout.clone();
    distinct.dedup();
    assert_eq!(distinct, rollout, "a rollout line repeated");
    Ok(())
}
