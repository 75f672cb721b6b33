//! Process tracker against real processes: death seen through pidfd (latency printed), start
//! seen by rescanning (name) or inotify (pid file), `min_procs`, command-line matching, and the
//! same inside a fresh network namespace.

mod track_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hav_agent::track::{self, Health, ProcessMatch, ProcessSpec, TrackSpec};
use tokio::sync::mpsc;
use track_support::{TempDir, down_reason, next_health, unique};

/// A copy of `sleep` under a name no other process on the host has.
fn unique_sleep(dir: &TempDir) -> (String, PathBuf) {
    let name = unique("hsl");
    let path = dir.join(&name);
    std::fs::copy(which_sleep(), &path).expect("copy sleep");
    (name, path)
}

fn which_sleep() -> &'static Path {
    ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("a sleep binary")
}

/// Kills and reaps the child on drop, so a failing test leaves nothing behind.
struct Proc(Child);

impl Proc {
    fn start(path: &Path, args: &[&str]) -> Self {
        Self(Command::new(path).args(args).spawn().expect("spawn"))
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }

    /// SIGKILL, not reaped yet: the tracker must not wait for the reap.
    fn kill(&self) -> Instant {
        let killed = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::SIGKILL,
        )
        .expect("kill");
        killed
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn by_name(name: &str) -> ProcessSpec {
    ProcessSpec {
        rescan_interval: Duration::from_millis(20),
        ..ProcessSpec::new(ProcessMatch::Name(name.to_owned()))
    }
}

/// With a rescan interval far beyond the safety net, only the pidfd can report the death.
fn never_rescan(name: &str) -> ProcessSpec {
    ProcessSpec {
        rescan_interval: Duration::from_secs(100_000),
        ..ProcessSpec::new(ProcessMatch::Name(name.to_owned()))
    }
}

#[tokio::test]
async fn death_by_name_is_an_event() {
    let dir = TempDir::new();
    let (name, path) = unique_sleep(&dir);
    let process = Proc::start(&path, &["1000"]);
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker =
        track::spawn("proc", TrackSpec::Process(never_rescan(&name)), tx).expect("spawn");
    assert_eq!(next_health(&mut rx).await, Health::Up);

    let killed = process.kill();
    let down = next_health(&mut rx).await;
    let latency = killed.elapsed();
    println!("process death (by name) reported {latency:?} after SIGKILL");
    assert_eq!(down_reason(&down), "0 of 1 processes running");
}

#[tokio::test]
async fn start_by_name_is_found_by_rescanning() {
    let dir = TempDir::new();
    let (name, path) = unique_sleep(&dir);
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("proc", TrackSpec::Process(by_name(&name)), tx).expect("spawn");

    let none = next_health(&mut rx).await;
    assert_eq!(down_reason(&none), "0 of 1 processes running");
    let process = Proc::start(&path, &["1000"]);
    assert_eq!(next_health(&mut rx).await, Health::Up);
    process.kill();
    assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
    drop(process);
    let _again = Proc::start(&path, &["1000"]);
    assert_eq!(next_health(&mut rx).await, Health::Up);
}

#[tokio::test]
async fn min_procs_counts_matching_processes() {
    let dir = TempDir::new();
    let (name, path) = unique_sleep(&dir);
    let spec = ProcessSpec {
        min_procs: 2,
        ..by_name(&name)
    };
    let (tx, mut rx) = mpsc::channel(16);
    let first = Proc::start(&path, &["1000"]);
    let _tracker = track::spawn("procs", TrackSpec::Process(spec), tx).expect("spawn");

    let one = next_health(&mut rx).await;
    assert_eq!(down_reason(&one), "1 of 2 processes running");
    let second = Proc::start(&path, &["1000"]);
    assert_eq!(next_health(&mut rx).await, Health::Up);
    second.kill();
    let down = next_health(&mut rx).await;
    assert_eq!(down_reason(&down), "1 of 2 processes running");
    drop(first);
}

#[tokio::test]
async fn command_line_must_match_exactly() {
    let dir = TempDir::new();
    let (_, path) = unique_sleep(&dir);
    let argv = vec![path.display().to_string(), "1001".to_owned()];
    let spec = ProcessSpec {
        rescan_interval: Duration::from_millis(20),
        ..ProcessSpec::new(ProcessMatch::Cmdline(argv))
    };
    let (tx, mut rx) = mpsc::channel(16);
    // Same program, other argument: no match.
    let _other = Proc::start(&path, &["1000"]);
    let _tracker = track::spawn("cmd", TrackSpec::Process(spec), tx).expect("spawn");
    assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
    let wanted = Proc::start(&path, &["1001"]);
    assert_eq!(next_health(&mut rx).await, Health::Up);
    wanted.kill();
    assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
}

/// Writes the pid file atomically, as daemons should.
fn write_pid_file(path: &Path, content: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content).expect("write pid file");
    std::fs::rename(&temporary, path).expect("rename pid file");
}

#[tokio::test]
async fn pid_file_start_and_death_are_events() {
    let dir = TempDir::new();
    let (_, path) = unique_sleep(&dir);
    let pid_file = dir.join("daemon.pid");
    let spec = ProcessSpec::new(ProcessMatch::PidFile(pid_file.clone()));
    let (tx, mut rx) = mpsc::channel(16);
    let _tracker = track::spawn("pidfile", TrackSpec::Process(spec), tx).expect("spawn");

    let missing = next_health(&mut rx).await;
    assert!(down_reason(&missing).contains("cannot read"), "{missing:?}");

    let process = Proc::start(&path, &["1000"]);
    write_pid_file(&pid_file, &format!("{}\n", process.pid()));
    assert_eq!(next_health(&mut rx).await, Health::Up);

    let killed = process.kill();
    let down = next_health(&mut rx).await;
    println!(
        "process death (pid file) reported {:?} after SIGKILL",
        killed.elapsed()
    );
    assert!(down_reason(&down).contains("exited"), "{down:?}");
    drop(process);

    // Garbage keeps it down (no event); a live pid written in place brings it up.
    write_pid_file(&pid_file, "not a pid");
    let restarted = Proc::start(&path, &["1000"]);
    std::fs::write(&pid_file, restarted.pid().to_string()).expect("write in place");
    assert_eq!(next_health(&mut rx).await, Health::Up);
}

/// pidfd needs no proc connector, so tracking works inside a network namespace (a container).
#[test]
fn death_is_seen_inside_a_network_namespace() {
    let outcome = std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (needs root)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let dir = TempDir::new();
            let (name, path) = unique_sleep(&dir);
            let process = Proc::start(&path, &["1000"]);
            let (tx, mut rx) = mpsc::channel(16);
            let _tracker =
                track::spawn("netns", TrackSpec::Process(never_rescan(&name)), tx).expect("spawn");
            assert_eq!(next_health(&mut rx).await, Health::Up);
            let killed = process.kill();
            assert!(matches!(next_health(&mut rx).await, Health::Down { .. }));
            println!(
                "process death (in a netns) reported {:?} after SIGKILL",
                killed.elapsed()
            );
        });
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
