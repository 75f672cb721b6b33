//! What the agent tells the world besides its hooks, with real agents on a LAN: keepalived's
//! notify FIFO (a reader in this process on one node, `notify_fifo_script` on the other), SMTP
//! alerts to a real SMTP server (aiosmtpd), and `max_auto_priority` after the agents were
//! stopped (SIGSTOP) for a few advert intervals. Needs root and Debian's `python3-aiosmtpd`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::WAIT;
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, find_instance};
use hav_tests::netns::Presence;
use hav_tests::smtp::SmtpSink;
use hav_tests::topology::Pair;
use nix::sys::signal::Signal;

/// Two instances in sync group G1 (VIPs .1 and .2), each node's priority for both; `extra`
/// goes right after `[node]`'s own keys, so it may add `[node]` keys and tables.
fn grouped(pair: &Pair, node: &str, priority: u8, extra: String) -> AgentConfig {
    let iface = &pair.node(node).expect("node").iface;
    let mut vi_2 = InstanceSpec::new(iface, 52, priority, &["198.51.100.2/24"]);
    vi_2.name = "VI_2".into();
    let mut config = AgentConfig::new(
        node,
        vec![
            InstanceSpec::new(iface, 51, priority, &[&format!("{}/24", pair.vip4)]),
            vi_2,
        ],
    );
    config.extra =
        format!("{extra}\n[[sync_group]]\nname = \"G1\"\ninstances = [\"VI_1\", \"VI_2\"]\n");
    config
}

/// Reads `fifo` line by line in a thread; the lines arrive on the channel.
fn read_fifo(fifo: &Path) -> mpsc::Receiver<String> {
    // The agent holds the FIFO open for reading and writing, so this open never waits.
    let file = std::fs::File::open(fifo).unwrap_or_else(|e| panic!("{}: {e}", fifo.display()));
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    received
}

/// Collects lines until `last` arrived.
fn lines_until(received: &mpsc::Receiver<String>, last: &str) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    let mut lines = Vec::new();
    while !lines.iter().any(|line| line == last) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("no {last:?} on the FIFO; got {lines:#?}"),
        }
    }
    lines
}

/// Every line of `name`'s, in order.
fn of<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    let quoted = format!("\"{name}\"");
    (lines.iter())
        .filter(|line| line.contains(&quoted))
        .map(String::as_str)
        .collect()
}

#[test]
fn a_failover_writes_keepalived_s_fifo_lines_in_order_for_instances_and_the_group() {
    let pair = Pair::new().expect("pair");
    let a_dir = Agent::dir_of(&pair.lab, "a");
    let b_dir = Agent::dir_of(&pair.lab, "b");
    let (a_fifo, a_out) = (a_dir.join("notify.fifo"), a_dir.join("reader.out"));
    let b_fifo = b_dir.join("notify.fifo");
    // a: a reader program (keepalived's notify_fifo_script) copies the FIFO to a file; `sh -c`
    // gets the FIFO's path, appended by the agent, as $0.
    let a_config = grouped(
        &pair,
        "a",
        150,
        format!(
            "notify_fifo = {:?}\nnotify_fifo_script = [\"/bin/sh\", \"-c\", \"exec cat \\\"$0\\\" >> {}\"]\n",
            a_fifo.display().to_string(),
            a_out.display()
        ),
    );
    // b: read by this test; its SMTP relay is down (nothing listens): the alert fails, is
    // counted, and changes nothing else.
    let b_config = grouped(
        &pair,
        "b",
        100,
        format!(
            "notify_fifo = {:?}\n[node.smtp]\nserver = \"{}:2526\"\nconnect_timeout = \"1s\"\nfrom = \"hav@example.net\"\nto = [\"ops@example.net\"]\nalert = true\n",
            b_fifo.display().to_string(),
            pair.client.ipv4
        ),
    );
    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    a.wait_state("VI_2", "Master", WAIT).expect("a master");
    a.wait_state("VI_1", "Master", WAIT).expect("a master");
    let mut b = Agent::start(&pair.lab, "b", &b_config).expect("start b");
    for name in ["VI_1", "VI_2"] {
        b.wait_status(&format!("{name} backup of a"), WAIT, |status| {
            find_instance(status, name)
                .is_some_and(|s| s["state"] == "Backup" && !s["master"].is_null())
        })
        .expect("b backup of a");
    }
    // Attached after b wrote its first lines: they waited in the FIFO.
    let b_lines = read_fifo(&b_fifo);

    let stop = Instant::now();
    a.terminate().expect("SIGTERM a");
    pair.lab
        .wait_address("b", IpAddr::V4(pair.vip4), Presence::Present, WAIT)
        .expect("b takes over");
    let lines = lines_until(&b_lines, "GROUP \"G1\" MASTER 0");
    eprintln!(
        "b's FIFO {:?} after the stop:\n{}",
        stop.elapsed(),
        lines.join("\n")
    );
    for (name, expected) in [
        (
            "VI_1",
            [
                "INSTANCE \"VI_1\" BACKUP 100",
                "INSTANCE \"VI_1\" MASTER 100",
            ],
        ),
        (
            "VI_2",
            [
                "INSTANCE \"VI_2\" BACKUP 100",
                "INSTANCE \"VI_2\" MASTER 100",
            ],
        ),
        ("G1", ["GROUP \"G1\" BACKUP 0", "GROUP \"G1\" MASTER 0"]),
    ] {
        assert_eq!(of(&lines, name), expected, "{lines:#?}");
    }
    let first_master = lines.iter().position(|line| line.contains(" MASTER "));
    let last_backup = lines.iter().rposition(|line| line.contains(" BACKUP "));
    assert!(last_backup < first_master, "{lines:#?}");

    // a stopped cleanly; its reader program got every line, the STOP ones last.
    let exit = a.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 0", "{}", a.log());
    let out = std::fs::read_to_string(&a_out).expect("the reader's copy");
    let a_lines: Vec<String> = out.lines().map(str::to_owned).collect();
    for (name, kind) in [("VI_1", "INSTANCE"), ("VI_2", "INSTANCE"), ("G1", "GROUP")] {
        let priority = if kind == "GROUP" { 0 } else { 150 };
        let states: Vec<&str> = (of(&a_lines, name).iter())
            .map(|line| line.split(' ').nth(2).unwrap_or_default())
            .collect();
        assert_eq!(states, ["BACKUP", "MASTER", "STOP"], "{out}");
        assert!(
            of(&a_lines, name)
                .iter()
                .all(|line| line.starts_with(&format!("{kind} \"{name}\" "))
                    && line.ends_with(&format!(" {priority}"))),
            "{out}"
        );
    }

    // b's relay is down: counted, logged, and b is master all the same.
    b.wait_status("the failed alerts counted", WAIT, |status| {
        status["counters"]["smtp_alerts_failed"].as_u64() >= Some(3)
    })
    .expect("failed alerts counted");
    b.wait_log("SMTP alert not sent", WAIT).expect("logged");
    b.wait_state("VI_1", "Master", WAIT)
        .expect("b still master");
}

#[test]
fn a_failover_mails_the_recipients_through_a_real_smtp_server() {
    let pair = Pair::new().expect("pair");
    let relay = SocketAddr::new(IpAddr::V4(pair.client.ipv4), 2525);
    let sink = SmtpSink::start(&pair.lab, "client", relay, WAIT).expect("aiosmtpd");
    let config = |node: &str, priority: u8| {
        let mut config = AgentConfig::new(node, vec![common::instance(&pair, node, priority)]);
        // Its own smtp_alert (the node's default is off); written with the instance's raw lines.
        config.instances[0].track.push("smtp_alert = true".into());
        config.extra = format!(
            "[node.smtp]\nserver = \"{relay}\"\nconnect_timeout = \"2s\"\nhelo_name = \"{node}.example.net\"\n\
             from = \"hav-{node}@example.net\"\nto = [\"ops@example.net\", \"noc@example.net\"]\n"
        );
        config
    };
    let mut a = Agent::start(&pair.lab, "a", &config("a", 150)).expect("start a");
    a.wait_state("VI_1", "Master", WAIT).expect("a master");
    sink.wait_message(WAIT, |text| {
        text.contains("Subject: [a] VRRP Instance VI_1 - Entering MASTER state")
    })
    .expect("a's mail");
    let mut b = Agent::start(&pair.lab, "b", &config("b", 100)).expect("start b");
    b.wait_state("VI_1", "Backup", WAIT).expect("b backup");

    let kill = Instant::now();
    a.kill().expect("SIGKILL a");
    b.wait_state("VI_1", "Master", WAIT).expect("b takes over");
    let mail = sink
        .wait_message(WAIT, |text| {
            text.contains("Subject: [b] VRRP Instance VI_1 - Entering MASTER state")
        })
        .expect("b's mail");
    eprintln!("mail {:?} after the kill:\n{mail}", kill.elapsed());
    for header in [
        "X-MailFrom: hav-b@example.net",
        "X-RcptTo: ops@example.net, noc@example.net",
        "From: hav-b@example.net",
        "To: ops@example.net, noc@example.net",
        "X-Mailer: hav-agent",
    ] {
        assert!(
            mail.lines().any(|line| line == header),
            "{header:?} in\n{mail}"
        );
    }
    let body = mail
        .split_once("\n\n")
        .map(|(_, body)| body)
        .unwrap_or_default();
    assert!(
        body.starts_with(
            "=> VRRP Instance is now owning VRRP VIPs <=\n\nnode: b\ninstance: VI_1\n\
             state: BACKUP -> MASTER\npriority: 100\ncause: "
        ),
        "{body}"
    );
    // Every change of b was mailed, in order: the start as backup, then the takeover.
    let subjects: Vec<String> = (sink.messages().iter())
        .filter_map(|text| {
            text.lines()
                .find(|line| line.starts_with("Subject: [b]"))
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        subjects,
        [
            "Subject: [b] VRRP Instance VI_1 - Entering BACKUP state",
            "Subject: [b] VRRP Instance VI_1 - Entering MASTER state"
        ]
    );
    // The sink has a mail once its DATA ends, before its reply; b counts the mail at the reply.
    let status = b
        .wait_status("both alerts counted as sent", WAIT, |status| {
            status["counters"]["smtp_alerts_sent"].as_u64() >= Some(2)
        })
        .expect("both alerts counted");
    assert_eq!(status["counters"]["smtp_alerts_sent"], 2, "{status}");
    assert_eq!(status["counters"]["smtp_alerts_failed"], 0, "{status}");
}

/// `(policy, rt_priority)` of `pid` from `/proc/PID/stat` (fields 41 and 40).
fn scheduling(pid: u32) -> (u32, u32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // After the command name (which may hold spaces), fields start at 3 (state).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |number: usize| fields[number - 3].parse::<u32>().expect("number");
    (field(41), field(40))
}

const SCHED_OTHER: u32 = 0;
const SCHED_RR: u32 = 2;

#[test]
fn a_starved_agent_raises_itself_to_sched_rr_within_max_auto_priority_and_only_with_the_key() {
    let pair = Pair::new().expect("pair");
    let a_fifo = Agent::dir_of(&pair.lab, "a").join("notify.fifo");
    let mut a_config = AgentConfig::new("a", vec![common::instance(&pair, "a", 150)]);
    // A FIFO nobody reads as well: it never stalls the agent.
    a_config.extra = format!(
        "max_auto_priority = 10\nnotify_fifo = {:?}\n",
        a_fifo.display().to_string()
    );
    let b_config = AgentConfig::new("b", vec![common::instance(&pair, "b", 100)]);
    let mut a = Agent::start(&pair.lab, "a", &a_config).expect("start a");
    a.wait_state("VI_1", "Master", WAIT).expect("a master");
    let mut b = Agent::start(&pair.lab, "b", &b_config).expect("start b");
    b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    assert_eq!(scheduling(a.pid()), (SCHED_OTHER, 0));

    // Both frozen for ten advert intervals (100 ms): each wakes a second late.
    for agent in [&a, &b] {
        agent.signal(Signal::SIGSTOP).expect("SIGSTOP");
    }
    std::thread::sleep(Duration::from_secs(1));
    for agent in [&a, &b] {
        agent.signal(Signal::SIGCONT).expect("SIGCONT");
    }
    let log = a.wait_log("now SCHED_RR", WAIT).expect("a raises itself");
    let (policy, priority) = scheduling(a.pid());
    assert_eq!(policy, SCHED_RR, "{log}");
    assert!((1..=10).contains(&priority), "rt_priority {priority}");
    // No thread above the maximum (a thread started after the raise runs SCHED_OTHER: the
    // policy is reset on fork).
    for task in std::fs::read_dir(format!("/proc/{}/task", a.pid())).expect("tasks") {
        let tid: u32 = task
            .expect("task")
            .file_name()
            .to_string_lossy()
            .parse()
            .expect("tid");
        let (policy, priority) = scheduling(tid);
        assert!(
            policy == SCHED_OTHER || (policy == SCHED_RR && priority <= 10),
            "thread {tid}: {policy} {priority}"
        );
    }
    // b runs again (its status answers) and never touched its scheduling.
    b.status().expect("b answers");
    assert_eq!(scheduling(b.pid()), (SCHED_OTHER, 0), "{}", b.log());
    assert!(!b.log().contains("SCHED_RR"));
    // a's loop runs with a FIFO nobody reads.
    a.status().expect("a answers");
    a.wait_state("VI_1", "Master", WAIT)
        .expect("a master again");
}
