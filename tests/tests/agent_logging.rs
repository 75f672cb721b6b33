//! How a real hav-agent logs: text without colour codes when stderr is not a terminal, JSON one
//! object per line, and journald's native protocol under systemd (detected from `JOURNAL_STREAM`
//! naming stderr, or asked for with `--log-format journald`) with syslog priorities and the
//! events' fields. journald is a socket this test binds, mounted at
//! `/run/systemd/journal/socket` in the agent's private mount namespace ([`FakeJournal`]); the
//! host's journal is never written to. `hav-agent --check` marks its errors with journald's
//! `<3>` stream prefix under systemd. Needs root.

mod common;

use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::WAIT;
use hav_tests::agent::{Agent, AgentConfig, InstanceSpec, agent_binary};
use hav_tests::journal::{FakeJournal, JournalEntry};
use hav_tests::netns::{Presence, SpawnSpec};
use hav_tests::topology::Pair;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `a` alone on the pair's LAN with `VI_1` at priority 150: master after its master-down interval.
fn single(pair: &Pair) -> AgentConfig {
    vi_1(pair, "a", &pair.a.iface, 150)
}

/// Node `name` running `VI_1` (VRID 51, the pair's IPv4 VIP) on `iface` at `priority`.
fn vi_1(pair: &Pair, name: &str, iface: &str, priority: u8) -> AgentConfig {
    AgentConfig::new(
        name,
        vec![InstanceSpec::new(
            iface,
            51,
            priority,
            &[&format!("{}/24", pair.vip4)],
        )],
    )
}

fn vip(pair: &Pair) -> IpAddr {
    IpAddr::V4(pair.vip4)
}

/// Leaves an unreadable VIP journal in `a`'s state directory: the agent logs an ERROR
/// (`VIP journal was corrupt`) and a WARN at start, and runs on.
fn corrupt_vip_journal(pair: &Pair) {
    let state = pair.lab.log_dir().join("agent-a/state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("vips.journal"), "{not a journal").expect("corrupt journal");
}

/// The `device:inode` of the file the agent's stderr will be, as systemd puts it in
/// `JOURNAL_STREAM` for the stream it connects to the journal.
fn journal_stream_of(log: &Path) -> String {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("create the log file");
    let metadata = std::fs::metadata(log).expect("stat the log file");
    format!("{}:{}", metadata.dev(), metadata.ino())
}

fn log_path(pair: &Pair, spec: &SpawnSpec) -> std::path::PathBuf {
    pair.lab.log_dir().join(format!("{}.log", spec.name))
}

/// `a` started by hand on [`single`]'s config at `log_level`, outside the journal, its stdin
/// closed; the caller says where its output goes.
fn agent_command(pair: &Pair, log_level: &str) -> Command {
    let dir = pair.lab.log_dir().join("agent-a");
    std::fs::create_dir_all(&dir).expect("agent dir");
    let config = dir.join("agent.toml");
    std::fs::write(&config, single(pair).render(&dir)).expect("config");
    let namespace = pair.lab.host("a").expect("host a").name().to_owned();
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &namespace])
        .arg(agent_binary().expect("hav-agent"))
        .arg("--config")
        .arg(&config)
        .args(["--log-level", log_level])
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null());
    command
}

#[test]
fn text_on_a_pipe_carries_no_escape_codes() {
    let pair = Pair::new().expect("pair");
    let mut agent = agent_command(&pair, "info,hav_agent=debug")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hav-agent");
    let mut stderr = agent.stderr.take().expect("stderr pipe");
    let reader = std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = stderr.read_to_end(&mut output);
        output
    });
    let held = pair
        .lab
        .wait_address("a", vip(&pair), Presence::Present, WAIT);
    let pid = Pid::from_raw(i32::try_from(agent.id()).expect("pid"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    // The agent exits within its master-down interval; `ip netns exec` became the agent.
    let status = agent.wait().expect("wait");
    let output = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&output);
    held.unwrap_or_else(|e| panic!("VIP on a: {e}\n{text}"));
    assert!(status.success(), "{status}\n{text}");
    assert!(
        text.contains("Backup -> Master") && text.contains("hav-agent stopped"),
        "{text}"
    );
    assert!(
        text.contains("DEBUG") && text.contains("instance=VI_1"),
        "fields in the text: {text}"
    );
    let escape = output.iter().position(|&b| b == 0x1b);
    assert_eq!(
        escape, None,
        "an ANSI escape in the piped log at byte {escape:?}:\n{text}"
    );
}

#[test]
fn json_is_one_object_per_line_with_level_and_fields() {
    let pair = Pair::new().expect("pair");
    let mut agent = Agent::start_with(&pair.lab, "a", &single(&pair), |spec| {
        spec.args(["--log-format", "json"])
    })
    .expect("start a");
    agent.wait_state("VI_1", "Master", WAIT).expect("a master");
    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    let log = agent.log();
    assert_eq!(exit, "exit 0", "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object()),
        "{log}"
    );
    let transition = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Backup -> Master"))
        })
        .unwrap_or_else(|| panic!("no transition: {log}"));
    assert_eq!(transition["level"], "INFO", "{transition}");
    assert_eq!(transition["fields"]["instance"], "VI_1", "{transition}");
    assert_eq!(transition["fields"]["to"], "Master", "{transition}");
    assert_eq!(transition["fields"]["priority"], "150", "{transition}");
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "RUST_LOG applies: {log}"
    );
}

#[test]
fn under_systemd_events_go_to_journald_with_their_priority_and_fields() {
    let pair = Pair::new().expect("pair");
    let journal = FakeJournal::bind(pair.lab.log_dir()).expect("fake journal");
    corrupt_vip_journal(&pair);
    let mut stderr_log = None;
    let mut agent = Agent::start_with(&pair.lab, "a", &single(&pair), |spec| {
        let log = log_path(&pair, &spec);
        let stream = journal_stream_of(&log);
        stderr_log = Some(log);
        journal.wrap(spec.env("JOURNAL_STREAM", stream))
    })
    .expect("start a");
    let started = journal
        .wait_for("for the transition to Master", WAIT, |entry| {
            entry.message().contains("Backup -> Master")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 0", "{}", agent.log());
    let entries: Vec<JournalEntry> = started
        .into_iter()
        .chain(journal.drain().expect("drain"))
        .collect();
    let find = |needle: &str| {
        entries
            .iter()
            .find(|e| e.message().contains(needle))
            .unwrap_or_else(|| panic!("no entry `{needle}` in {entries:#?}"))
    };

    let corrupt = find("VIP journal was corrupt");
    assert_eq!(corrupt.priority(), Some(3), "ERROR is err: {corrupt:?}");
    assert!(
        corrupt
            .get("KEPT_AS")
            .is_some_and(|p| p.ends_with("vips.journal.corrupt")),
        "{corrupt:?}"
    );
    assert!(corrupt.get("REASON").is_some(), "{corrupt:?}");
    let unreadable = find("VIP journal unreadable");
    assert_eq!(unreadable.priority(), Some(4), "WARN is warning");

    let transition = find("Backup -> Master");
    assert_eq!(
        transition.priority(),
        Some(6),
        "INFO is info: {transition:?}"
    );
    assert_eq!(transition.get("INSTANCE"), Some("VI_1"), "{transition:?}");
    assert_eq!(transition.get("FROM"), Some("Backup"));
    assert_eq!(transition.get("TO"), Some("Master"));
    assert_eq!(
        transition.get("F_PRIORITY"),
        Some("150"),
        "the VRRP priority never takes journald's PRIORITY"
    );
    assert_eq!(transition.count("PRIORITY"), 1);
    assert_eq!(transition.get("SYSLOG_IDENTIFIER"), Some("hav-agent"));
    assert!(
        transition
            .get("TARGET")
            .is_some_and(|t| t.starts_with("hav_agent")),
        "{transition:?}"
    );
    assert!(transition.get("CODE_FILE").is_some() && transition.get("CODE_LINE").is_some());
    assert_eq!(find("hav-agent stopped").priority(), Some(6));
    assert!(
        entries.iter().any(|e| e.priority() == Some(7)),
        "DEBUG is debug (RUST_LOG has hav_agent=debug)"
    );

    let stderr = std::fs::read_to_string(stderr_log.expect("log path")).expect("stderr log");
    assert!(
        !stderr.contains("Backup -> Master"),
        "events went to the journal only, not to stderr as well: {stderr}"
    );
}

#[test]
fn an_explicit_journald_format_sends_only_what_the_log_level_lets_through() {
    let pair = Pair::new().expect("pair");
    let journal = FakeJournal::bind(pair.lab.log_dir()).expect("fake journal");
    corrupt_vip_journal(&pair);
    let mut agent = Agent::start_with(&pair.lab, "a", &single(&pair), |spec| {
        journal.wrap(
            spec.args(["--log-format", "journald", "--log-level", "warn"])
                .env("JOURNAL_STREAM", ""),
        )
    })
    .expect("start a");
    pair.lab
        .wait_address("a", vip(&pair), Presence::Present, WAIT)
        .unwrap_or_else(|e| panic!("VIP on a: {e}\n{}", agent.log()));
    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 0", "{}", agent.log());
    let entries = journal.drain().expect("drain");
    assert!(
        entries
            .iter()
            .any(|e| e.message().contains("VIP journal was corrupt") && e.priority() == Some(3)),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| matches!(e.priority(), Some(0..=4))),
        "--log-level warn (over RUST_LOG's debug) lets nothing below warning through: {entries:#?}"
    );
}

#[test]
fn a_refused_config_is_an_error_entry_in_the_journal() {
    let pair = Pair::new().expect("pair");
    let journal = FakeJournal::bind(pair.lab.log_dir()).expect("fake journal");
    let mut config = single(&pair);
    config.extra = "no_such_key = 1\n".into();
    let mut agent = Agent::start_with(&pair.lab, "a", &config, |spec| {
        journal.wrap(spec.args(["--log-format", "journald"]))
    })
    .expect("start a");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 1", "{}", agent.log());
    let entries = journal.drain().expect("drain");
    let refused = entries
        .iter()
        .find(|e| e.message().contains("no_such_key"))
        .unwrap_or_else(|| panic!("the refusal is not in the journal: {entries:#?}"));
    assert_eq!(refused.priority(), Some(3), "{refused:?}");
}

#[test]
fn a_journal_stream_that_is_not_stderr_leaves_text_on_stderr() {
    let pair = Pair::new().expect("pair");
    let journal = FakeJournal::bind(pair.lab.log_dir()).expect("fake journal");
    // Inherited from a unit whose stderr was the journal, then redirected to a file.
    let mut agent = Agent::start_with(&pair.lab, "a", &single(&pair), |spec| {
        journal.wrap(spec.env("JOURNAL_STREAM", "1:1"))
    })
    .expect("start a");
    agent.wait_state("VI_1", "Master", WAIT).expect("a master");
    agent.terminate().expect("SIGTERM");
    let exit = agent.wait_exit(WAIT).expect("a exits");
    let log = agent.log();
    assert_eq!(exit, "exit 0", "{log}");
    assert!(log.contains("Backup -> Master"), "{log}");
    assert!(!log.contains('\u{1b}'), "no colour in a file: {log}");
    assert_eq!(
        journal.drain().expect("drain"),
        vec![],
        "nothing was sent to journald"
    );
}

#[test]
fn check_errors_under_systemd_carry_the_err_level_prefix() {
    let dir = std::env::temp_dir().join(format!("hav-check-journal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let config = dir.join("agent.toml");
    std::fs::write(&config, "[node]\nname = \"a\"\nno_such_key = 1\n").expect("config");
    let run = |under_systemd: bool| {
        let log = dir.join("stderr.log");
        let _ = std::fs::remove_file(&log);
        let stream = under_systemd.then(|| journal_stream_of(&log));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("stderr file");
        let mut command = Command::new(agent_binary().expect("hav-agent"));
        command
            .arg("--check")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .env_remove("JOURNAL_STREAM");
        if let Some(stream) = stream {
            command.env("JOURNAL_STREAM", stream);
        }
        let status = command.status().expect("hav-agent --check");
        assert!(!status.success());
        std::fs::read_to_string(&log).expect("stderr")
    };
    let journal = run(true);
    let plain = run(false);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(plain.contains("no_such_key"), "{plain}");
    assert!(
        !plain.contains("<3>"),
        "a terminal or file gets plain lines: {plain}"
    );
    assert!(
        !journal.is_empty() && journal.lines().all(|line| line.starts_with("<3>")),
        "every line an error in the journal: {journal}"
    );
}

/// An output that stops taking lines (a pipe nobody reads, a stalled journald or log shipper)
/// costs log lines, never adverts: `a` logs at trace into a one-page pipe the test holds and
/// never reads; its backup `b` goes on hearing it, never takes over, and `a` still stops cleanly.
#[test]
fn a_stalled_log_output_never_stops_the_adverts() {
    use std::os::fd::AsFd;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};

    let pair = Pair::new().expect("pair");
    let (unread, output) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    const PIPE_SIZE: usize = 4096;
    fcntl(output.as_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32)).expect("one-page pipe");
    // Killed with its namespace when the pair goes, whatever the test's outcome.
    let mut a = agent_command(&pair, "trace")
        .stdout(Stdio::from(output.try_clone().expect("dup")))
        .stderr(Stdio::from(output))
        .spawn()
        .expect("start hav-agent");
    let pid = Pid::from_raw(i32::try_from(a.id()).expect("pid"));
    pair.lab
        .wait_address("a", vip(&pair), Presence::Present, WAIT)
        .expect("VIP on a");
    let backup = vi_1(&pair, "b", &pair.b.iface, 100);
    let mut b = Agent::start(&pair.lab, "b", &backup).expect("start b");
    let heard = |instance: &serde_json::Value| instance["counters"]["rcvd_advertisements"].as_u64();
    let first = b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    // The pipe is full by now: everything `a` logs from here on has nowhere to go.
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&unread),
            libc::FIONREAD,
            &mut queued,
        )
    };
    assert_eq!(rc, 0, "FIONREAD");
    assert!(
        usize::try_from(queued).unwrap_or(0) + 512 >= PIPE_SIZE,
        "the pipe should be full at trace level: {queued} bytes in it"
    );
    // Twenty more adverts (two seconds): a blocked log write would stop them within one.
    let from = heard(&first).expect("counter");
    let later = b
        .wait_status("20 more adverts from a", WAIT * 2, |status| {
            hav_tests::agent::find_instance(status, "VI_1")
                .and_then(heard)
                .is_some_and(|n| n >= from + 20)
        })
        .expect("a advertising with its output stalled");
    let instance = hav_tests::agent::find_instance(&later, "VI_1").expect("VI_1");
    assert_eq!(instance["state"], "Backup", "{instance}");
    assert_eq!(
        instance["counters"]["master_transitions"], 0,
        "b never took over: {instance}"
    );
    // A graceful stop still completes: the last lines wait for the output only so long.
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = a.wait().expect("wait a");
    assert!(
        status.success(),
        "a's exit with its output stalled: {status}"
    );
    b.wait_state("VI_1", "Master", WAIT).expect("b takes over");
    drop(unread);
}
