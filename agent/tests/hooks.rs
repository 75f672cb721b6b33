//! Notify hooks with real programs: keepalived arguments and HAV_* variables, per-state then
//! generic programs, strict order under rapid changes, and a hanging hook killed at the timeout
//! without holding up the caller or reordering what follows.

mod track_support;

use std::time::{Duration, Instant};

use hav_agent::hooks::{HookConfig, HookKind, HookQueue, HookState, StateChange};
use hav_agent::track::{Program, RunAs};
use hav_vrrp::Priority;
use track_support::{TempDir, await_exit};

/// A hook that appends one line describing its arguments and environment to `log`.
fn logger(dir: &TempDir, label: &str, log: &std::path::Path) -> Program {
    let body = format!(
        "#!/bin/sh\necho \"{label} args=[$*] name=$HAV_NAME kind=$HAV_KIND old=$HAV_OLD_STATE \
         new=$HAV_NEW_STATE prio=$HAV_PRIORITY cause=$HAV_CAUSE\" >> {log}\n",
        log = log.display()
    );
    Program::new(
        dir.script(&format!("{label}.sh"), &body),
        Vec::<String>::new(),
    )
}

fn change(old: HookState, new: HookState, priority: u8, cause: &str) -> StateChange {
    StateChange {
        kind: HookKind::Instance,
        name: "VI_1".to_owned(),
        old,
        new,
        priority: Priority(priority),
        cause: cause.to_owned(),
    }
}

#[tokio::test]
async fn rapid_changes_run_in_order_with_keepalived_arguments() {
    let dir = TempDir::new();
    let log = dir.join("log");
    let mut master = logger(&dir, "master", &log);
    master.args = vec!["--flag".to_owned()];
    let config = HookConfig {
        notify: vec![logger(&dir, "notify", &log)],
        notify_master: vec![master],
        notify_backup: vec![logger(&dir, "backup", &log)],
        notify_fault: vec![logger(&dir, "fault", &log)],
        notify_stop: vec![logger(&dir, "stop", &log)],
        timeout: Duration::from_secs(10),
    };
    let queue = HookQueue::spawn(config).expect("spawn");

    let cycle = [HookState::Backup, HookState::Master, HookState::Fault];
    let mut changes = Vec::new();
    let mut old = HookState::Init;
    for step in 0..30u8 {
        let new = cycle[usize::from(step) % cycle.len()];
        changes.push(change(old, new, 100 + step, &format!("step {step}")));
        old = new;
    }
    changes.push(change(old, HookState::Stop, 0, "shutdown"));
    let started = Instant::now();
    for change in &changes {
        queue.notify(change.clone());
    }
    println!(
        "queued {} changes in {:?}",
        changes.len(),
        started.elapsed()
    );
    queue.close().await;
    println!("ran {} hooks in {:?}", changes.len() * 2, started.elapsed());

    let mut expected = String::new();
    for change in &changes {
        let (label, extra) = match change.new {
            HookState::Master => ("master", "--flag"),
            HookState::Backup => ("backup", ""),
            HookState::Fault => ("fault", ""),
            _ => ("stop", ""),
        };
        let environment = format!(
            "name=VI_1 kind=INSTANCE old={} new={} prio={} cause={}",
            change.old, change.new, change.priority, change.cause
        );
        expected += &format!("{label} args=[{extra}] {environment}\n");
        expected += &format!(
            "notify args=[INSTANCE VI_1 {} {}] {environment}\n",
            change.new, change.priority
        );
    }
    let written = std::fs::read_to_string(&log).expect("log");
    assert_eq!(written, expected);
}

#[tokio::test]
async fn a_hanging_hook_is_killed_and_the_queue_goes_on() {
    let dir = TempDir::new();
    let log = dir.join("log");
    let fifo = dir.fifo("pid");
    let hang = format!(
        "#!/bin/sh\necho fault-start >> {log}\nsleep 1000 &\necho \"$$ $!\" > {fifo}\nwait\necho fault-end >> {log}\n",
        log = log.display(),
        fifo = fifo.display()
    );
    let timeout = Duration::from_millis(300);
    let config = HookConfig {
        notify: vec![logger(&dir, "notify", &log)],
        notify_fault: vec![Program::new(
            dir.script("hang.sh", &hang),
            Vec::<String>::new(),
        )],
        timeout,
        ..HookConfig::default()
    };
    let queue = HookQueue::spawn(config).expect("spawn");

    let started = Instant::now();
    queue.notify(change(HookState::Init, HookState::Master, 150, "preempt"));
    queue.notify(change(
        HookState::Master,
        HookState::Fault,
        150,
        "link down",
    ));
    queue.notify(change(HookState::Fault, HookState::Backup, 100, "link up"));
    let returned = started.elapsed();
    // The caller was not held up by the hanging hook: it is still running now.
    let pids = track_support::read_fifo(&fifo).await;
    queue.close().await;
    let finished = started.elapsed();
    println!(
        "notify returned after {returned:?}; all hooks done after {finished:?} (timeout {timeout:?})"
    );
    assert!(
        finished >= timeout,
        "the hanging hook ran until its timeout"
    );

    let written = std::fs::read_to_string(&log).expect("log");
    let labels: Vec<&str> = written
        .lines()
        .map(|line| line.split(" prio").next().unwrap_or(line))
        .collect();
    assert_eq!(
        labels,
        [
            "notify args=[INSTANCE VI_1 MASTER 150] name=VI_1 kind=INSTANCE old=INIT new=MASTER",
            "fault-start",
            "notify args=[INSTANCE VI_1 FAULT 150] name=VI_1 kind=INSTANCE old=MASTER new=FAULT",
            "notify args=[INSTANCE VI_1 BACKUP 100] name=VI_1 kind=INSTANCE old=FAULT new=BACKUP",
        ]
    );
    for pid in pids.split_whitespace() {
        await_exit(pid.parse().expect("pid")).await;
    }
}

#[tokio::test]
async fn group_hooks_run_as_another_user() {
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd lookup")
        .expect("user nobody exists");
    let dir = TempDir::new();
    let fifo = dir.fifo("out");
    let body = format!("#!/bin/sh\necho \"$(id -u) $*\" > {}\n", fifo.display());
    let program = Program::new(dir.script("g.sh", &body), Vec::<String>::new()).run_as(RunAs {
        user: "nobody".to_owned(),
        group: None,
    });
    let config = HookConfig {
        notify: vec![program],
        ..HookConfig::default()
    };
    let queue = HookQueue::spawn(config).expect("spawn");
    queue.notify(StateChange {
        kind: HookKind::Group,
        name: "VG_1".to_owned(),
        old: HookState::Backup,
        new: HookState::Master,
        priority: Priority(200),
        cause: "sync group".to_owned(),
    });
    let out = track_support::read_fifo(&fifo).await;
    assert_eq!(out, format!("{} GROUP VG_1 MASTER 200\n", nobody.uid));
    queue.close().await;
}
