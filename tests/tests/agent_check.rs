//! `hav-agent --check` accepts exactly what the daemon starts with. Every example config under
//! deploy/examples (its interfaces, state dir and files moved into a lab host) and a set of
//! broken ones go through both `hav-agent --check` and a real start-up with `$NOTIFY_SOCKET`
//! set, in the same network namespace: check ok ⇔ the daemon sends `READY=1`; check error ⇔ the
//! daemon exits non-zero naming every reason check named. What the host lacks (a script
//! program, a notify program, a CA file) is a warning, not an error, and does not stop start-up.
//! Needs root.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hav_tests::agent::{Agent, Startup, check_config};
use hav_tests::topology::{Lab, LanSpec};

/// Safety net of a start-up or a stop (never reached when things work).
const WAIT: Duration = Duration::from_secs(20);

const HOST: &str = "n";

/// One host `n` on two LANs: `e0` (198.51.100.11, .12, .21, .22: every source address the
/// examples use) and `e1` (203.0.113.11).
struct Bench {
    lab: Lab,
    e0: String,
    e1: String,
}

impl Bench {
    fn new() -> Bench {
        let mut lab = Lab::new().expect("lab");
        lab.add_lan("e0", LanSpec::PRIMARY).expect("LAN e0");
        lab.add_lan("e1", LanSpec::SECONDARY).expect("LAN e1");
        lab.add_host(HOST).expect("host");
        let e0 = lab.attach(HOST, "e0", 11).expect("attach e0").iface;
        let e1 = lab.attach(HOST, "e1", 11).expect("attach e1").iface;
        for octet in [12, 21, 22] {
            let address = format!("{}/24", LanSpec::PRIMARY.ipv4(octet));
            lab.host(HOST)
                .expect("host")
                .ip(&["addr", "add", &address, "dev", &e0])
                .expect("extra address");
        }
        Bench { lab, e0, e1 }
    }

    fn dir(&self) -> PathBuf {
        Agent::dir_of(&self.lab, HOST)
    }

    /// `text` made to run in the lab host: `eth0`/`eth1` become its interfaces; the state dir,
    /// status socket, notify FIFO and track file go under the agent's directory, per case.
    fn adapt(&self, case: &str, text: &str) -> String {
        let dir = self.dir();
        let mut out = String::new();
        for line in text.lines() {
            let key = line.split('=').next().unwrap_or_default().trim();
            if key == "state_dir" || key == "status_socket" {
                continue;
            }
            if key == "notify_fifo" {
                out.push_str(&format!(
                    "notify_fifo = {:?}\n",
                    dir.join(format!("notify-{case}.fifo"))
                        .display()
                        .to_string()
                ));
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line.trim() == "[node]" {
                out.push_str(&format!(
                    "state_dir = {:?}\nstatus_socket = {:?}\n",
                    dir.join(format!("state-{case}")).display().to_string(),
                    dir.join(format!("status-{case}.sock"))
                        .display()
                        .to_string(),
                ));
            }
        }
        let mut out = out
            .replace("eth0", &self.e0)
            .replace("eth1", &self.e1)
            .replace(
                "/etc/hav/maintenance",
                &dir.join("maintenance").display().to_string(),
            );
        // The reference runs its script as `proxy`, which not every host has.
        if nix::unistd::User::from_name("proxy")
            .ok()
            .flatten()
            .is_none()
        {
            out = out
                .replace("user = \"proxy\"", "user = \"nobody\"")
                .replace("group = \"proxy\"", "group = \"nogroup\"");
        }
        out
    }

    /// Runs `text` through `hav-agent --check` and a real start-up and asserts that they agree.
    /// `Ok(check's report)` when both accept it, `Err(check's error lines)` when both refuse it.
    fn agree(&self, case: &str, text: &str) -> Result<String, Vec<String>> {
        let dir = self.dir();
        fs::create_dir_all(&dir).expect("agent dir");
        let path = dir.join("agent.toml");
        fs::write(&path, text).expect("write the config");
        let check = check_config(&self.lab, HOST, &path).expect("run hav-agent --check");
        let startup = Agent::start_until_ready(&self.lab, HOST, text, WAIT)
            .unwrap_or_else(|e| panic!("{case}: start-up neither ready nor over: {e}"));
        match (check.success(), startup) {
            (true, Startup::Ready(mut agent)) => {
                agent.terminate().expect("SIGTERM");
                let exit = agent.wait_exit(WAIT).expect("the agent stops");
                assert_eq!(exit, "exit 0", "{case}: stop\n{}", agent.log());
                assert!(
                    check
                        .stdout
                        .starts_with(&format!("{}: ok: ", path.display())),
                    "{case}: {}",
                    check.stdout
                );
                Ok(check.stdout)
            }
            (false, Startup::Exited { exit, log }) => {
                assert_ne!(exit, "exit 0", "{case}: refused but exited 0\n{log}");
                let lines: Vec<String> = check.stderr.lines().map(str::to_owned).collect();
                assert!(!lines.is_empty(), "{case}: check failed silently");
                // Word for word: a schema error as its own line, a refusal of the plan after
                // the program's name.
                for line in &lines {
                    let said = |logged: &str| {
                        logged == line || logged.strip_prefix("hav-agent: ") == Some(line)
                    };
                    assert!(
                        log.lines().any(said),
                        "{case}: check said\n  {line}\nstart-up did not:\n{log}"
                    );
                }
                Err(lines)
            }
            (true, Startup::Exited { exit, log }) => panic!(
                "{case}: check accepted it ({}) but start-up failed ({exit}):\n{log}",
                check.stdout
            ),
            (false, Startup::Ready(agent)) => panic!(
                "{case}: check refused it ({}) but the daemon started:\n{}",
                check.stderr,
                agent.log()
            ),
        }
    }
}

/// Every `*.toml` under deploy/examples (recursively), leaving out the keepalived inputs.
fn examples() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name != "keepalived") {
                    walk(&path, found);
                }
            } else if path
                .extension()
                .is_some_and(|extension| extension == "toml")
            {
                found.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut found = Vec::new();
    walk(&root, &mut found);
    found.sort();
    found
}

#[test]
fn every_example_config_passes_check_and_starts_the_daemon() {
    let bench = Bench::new();
    let examples = examples();
    assert!(examples.len() >= 9, "examples: {examples:?}");
    for example in examples {
        let case = example
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples"))
            .unwrap_or(&example)
            .display()
            .to_string()
            .replace(['/', '.'], "-");
        let text = fs::read_to_string(&example).expect("read the example");
        let report = bench
            .agree(&case, &bench.adapt(&case, &text))
            .unwrap_or_else(|errors| panic!("{case}: refused: {errors:?}"));
        eprintln!("{report}");
    }
}

/// A valid node with one instance on `e0`; `extra` adds definitions and `track` its tracking.
fn node(bench: &Bench, case: &str, extra: &str, track: &str) -> String {
    bench.adapt(
        case,
        &format!(
            "[node]\nname = \"n\"\n\n{extra}\n[[instance]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvrid = 51\nvips = [\"198.51.100.100/24\"]\n{track}\n"
        ),
    )
}

#[test]
fn broken_configs_are_refused_by_check_and_start_up_with_the_same_reason() {
    let bench = Bench::new();
    let https = "[[probe]]\nname = \"web\"\nkind = \"http\"\n";
    let own_address = LanSpec::PRIMARY.ipv4(11);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bad-url",
            node(
                &bench,
                "bad-url",
                &format!("{https}url = \"http://web.example:0/health\"\n"),
                "track_probe = [\"web\"]",
            ),
            "probe[0].url: expected an http:// or https:// URL with a host, got \"http://web.example:0/health\": port \"0\" is not 1..=65535",
        ),
        (
            "no-scheme",
            node(
                &bench,
                "no-scheme",
                &format!("{https}url = \"web.example/health\"\n"),
                "track_probe = [\"web\"]",
            ),
            "the scheme must be http:// or https://",
        ),
        (
            "https-host-needs-server-name",
            node(
                &bench,
                "https-host-needs-server-name",
                &format!("{https}url = \"https://origin-.example/health\"\n"),
                "track_probe = [\"web\"]",
            ),
            "probe[0].url: host \"origin-.example\" is not a name a certificate can be valid for; set server_name",
        ),
        (
            "https-relative-ca-file",
            node(
                &bench,
                "https-relative-ca-file",
                &format!("{https}url = \"https://198.51.100.80/\"\nca_file = \"probe-ca.pem\"\n"),
                "track_probe = [\"web\"]",
            ),
            "probe[0].ca_file: expected an absolute path, got \"probe-ca.pem\"",
        ),
        (
            "tls-option-on-http",
            node(
                &bench,
                "tls-option-on-http",
                &format!("{https}url = \"http://198.51.100.80/\"\nserver_name = \"web.example\"\n"),
                "track_probe = [\"web\"]",
            ),
            "probe[0].server_name: `server_name` belongs to https:// URLs",
        ),
        (
            "unknown-key",
            node(
                &bench,
                "unknown-key",
                &format!("{https}url = \"https://198.51.100.80/\"\nsni = \"web.example\"\n"),
                "track_probe = [\"web\"]",
            ),
            "probe[0].sni: unknown key `sni`",
        ),
        (
            "smtp-recipient",
            node(
                &bench,
                "smtp-recipient",
                "max_auto_priority = 10\n[node.smtp]\nserver = \"198.51.100.25\"\nfrom = \"hav@example.net\"\nto = [\"ops\"]\n",
                "",
            ),
            "node.smtp.to[0]: \"ops\" is not a mail address",
        ),
        (
            "unresolved-tracker",
            node(&bench, "unresolved-tracker", "", "track_probe = [\"web\"]"),
            "instance[0].track_probe[0]: no [[probe]] named \"web\"",
        ),
        (
            // Refused by the engine, with the address the host gives the instance: the same in
            // check and start-up on this host.
            "peer-is-self",
            node(
                &bench,
                "peer-is-self",
                "",
                &format!("unicast_peers = [\"{own_address}\"]"),
            ),
            "engine refused the config: router \"VI_1\": peer 198.51.100.11 is our own primary address",
        ),
        (
            "strict-unicast",
            node(
                &bench,
                "strict-unicast",
                "strict = true",
                "unicast_peers = [\"198.51.100.12\"]",
            ),
            "instance[0].unicast_peers: RFC 5798 sends adverts to the multicast group only (strict mode",
        ),
        (
            "strict-auth",
            node(
                &bench,
                "strict-auth",
                "",
                "strict = true\nversion = 2\nauth_pass = \"secret\"",
            ),
            "instance[0].auth_pass: RFC 5798 has no authentication",
        ),
        (
            "route-host-bits",
            node(
                &bench,
                "route-host-bits",
                "",
                "[[instance.route]]\nto = \"203.0.113.1/24\"\ndev = \"eth0\"",
            ),
            "instance[0].route[0].to: 203.0.113.1/24 has host bits set",
        ),
        (
            "vmac-ipv6-without-xmit-base",
            bench.adapt(
                "vmac-ipv6-without-xmit-base",
                "[node]\nname = \"n\"\n\n[[instance]]\nname = \"VI_6\"\ninterface = \"eth0\"\nvrid = 51\nvips = [\"2001:db8::51/64\"]\n[instance.vmac]\n",
            ),
            "instance[0].vmac.xmit_base: an IPv6 instance with a vmac needs xmit_base = true",
        ),
        (
            "toml-syntax",
            format!("{}\n[[instance]\n", node(&bench, "toml-syntax", "", "")),
            "line ",
        ),
    ];
    for (case, text, expected) in &cases {
        let errors = match bench.agree(case, text) {
            Ok(report) => panic!("{case}: accepted: {report}\n{text}"),
            Err(errors) => errors,
        };
        assert!(
            errors.iter().any(|line| line.contains(expected)),
            "{case}: expected {expected:?} in {errors:?}"
        );
    }
}

#[test]
fn what_the_host_lacks_is_a_warning_and_the_daemon_starts() {
    let bench = Bench::new();
    let missing = bench.dir().join("missing-probe-ca.pem");
    let text = node(
        &bench,
        "host-lacks",
        &format!(
            "notify_fifo = \"/run/hav/notify.fifo\"\nnotify_fifo_script = [\"/nonexistent/hav-fifo-reader\"]\n\n[[probe]]\nname = \"web\"\nkind = \"http\"\nurl = \"https://origin.invalid/health\"\nserver_name = \"origin.example\"\nca_file = {:?}\nproxy = \"127.0.0.1:3128\"\n\n[[script]]\nname = \"chk\"\nprogram = \"/nonexistent/hav-check\"\n",
            missing.display().to_string()
        ),
        "track_probe = [{ name = \"web\", weight = -10 }]\ntrack_script = [{ name = \"chk\", weight = -10 }]\nnotify_master = [\"/nonexistent/hav-notify\"]",
    );
    let report = bench
        .agree("host-lacks", &text)
        .unwrap_or_else(|errors| panic!("refused: {errors:?}"));
    for warning in [
        format!(
            "warning: instance VI_1: probe:web: ca_file: cannot read CA certificate from {}",
            missing.display()
        ),
        "warning: instance VI_1: script:chk: program /nonexistent/hav-check".to_owned(),
        "warning: instance VI_1: notify_master: program /nonexistent/hav-notify".to_owned(),
        "warning: node: notify_fifo_script: program /nonexistent/hav-fifo-reader".to_owned(),
    ] {
        assert!(report.contains(&warning), "{warning:?} not in\n{report}");
    }
}
