//! Process tracker: up while at least `min_procs` matching processes run (by name or command
//! line), or while the process named by a pid file runs.
//!
//! Guarantees:
//! - A death is seen as an event: every matching process is held by a pidfd (`pidfd_open(2)`),
//!   which becomes readable when the process exits; tokio waits on it. No `pgrep`, no polling, and
//!   no proc connector, so it works in any network namespace or container.
//! - A pid is checked again after its pidfd is opened, so a pid reused between the `/proc` scan
//!   and the open is not mistaken for the process we want; zombies do not count as running.
//! - Start detection for a pid file is an event too: inotify on the file's directory.
//! - Start detection by name or command line is the one periodic part: `/proc` is rescanned every
//!   `rescan_interval` while fewer than `min_procs` processes match (and once right after a death
//!   that leaves too few, after reporting it). While enough processes run, nothing is polled.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::dirwatch::FileWatch;
use super::{Health, Reporter, TrackError};

/// Which processes to track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessMatch {
    /// The process name (`Name:` in `/proc/PID/status`, which the kernel cuts to 15 bytes) or the
    /// file name of `argv[0]` equals this.
    Name(String),
    /// The whole command line (`argv`, `argv[0]` as the process wrote it) equals this.
    Cmdline(Vec<String>),
    /// The process whose pid this file holds (decimal, surrounding whitespace allowed).
    PidFile(PathBuf),
}

/// Configuration of a process tracker.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub target: ProcessMatch,
    /// Up while at least this many matching processes run (at least 1; ignored for a pid file).
    pub min_procs: usize,
    /// How often `/proc` is rescanned while too few processes match (name/command line only).
    pub rescan_interval: Duration,
}

impl ProcessSpec {
    /// One process needed, rescanned every second while missing.
    pub fn new(target: ProcessMatch) -> Self {
        Self {
            target,
            min_procs: 1,
            rescan_interval: Duration::from_secs(1),
        }
    }
}

pub(crate) enum ProcessTracker {
    Scan {
        target: ProcessMatch,
        min_procs: usize,
        rescan_interval: Duration,
    },
    PidFile {
        path: PathBuf,
        watch: FileWatch,
    },
}

impl ProcessSpec {
    /// What the spec must be to run, without looking at the host.
    pub fn validate(&self) -> Result<(), String> {
        let reason = match &self.target {
            ProcessMatch::PidFile(_) => return Ok(()),
            ProcessMatch::Name(name) if name.is_empty() => "empty process name",
            ProcessMatch::Cmdline(argv) if argv.is_empty() => "empty command line",
            _ if self.min_procs == 0 => "min_procs must be at least 1",
            _ if self.rescan_interval.is_zero() => "rescan_interval must be positive",
            _ => return Ok(()),
        };
        Err(reason.to_owned())
    }
}

impl ProcessTracker {
    pub(crate) fn new(spec: ProcessSpec, reporter: &Reporter) -> Result<Self, TrackError> {
        spec.validate().map_err(|reason| TrackError::InvalidSpec {
            name: reporter.name().to_owned(),
            reason,
        })?;
        match spec.target {
            ProcessMatch::PidFile(path) => {
                let watch = FileWatch::new(&path).map_err(|source| TrackError::Watch {
                    name: reporter.name().to_owned(),
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(ProcessTracker::PidFile { path, watch })
            }
            target => Ok(ProcessTracker::Scan {
                target,
                min_procs: spec.min_procs,
                rescan_interval: spec.rescan_interval,
            }),
        }
    }

    pub(crate) async fn run(self, mut reporter: Reporter) {
        match self {
            ProcessTracker::Scan {
                target,
                min_procs,
                rescan_interval,
            } => track_matching(&target, min_procs, rescan_interval, &mut reporter).await,
            ProcessTracker::PidFile { path, watch } => {
                track_pid_file(&path, watch, &mut reporter).await;
            }
        }
    }
}

type Exit = Pin<Box<dyn Future<Output = i32> + Send>>;

async fn track_matching(
    target: &ProcessMatch,
    min_procs: usize,
    rescan_interval: Duration,
    reporter: &mut Reporter,
) {
    let mut running: HashSet<i32> = HashSet::new();
    let mut exits: FuturesUnordered<Exit> = FuturesUnordered::new();
    let health = |count: usize| {
        if count >= min_procs {
            Health::Up
        } else {
            Health::down(format!("{count} of {min_procs} processes running"))
        }
    };
    scan(target, &mut running, &mut exits).await;
    loop {
        if reporter.report(health(running.len())).await.is_err() {
            return;
        }
        if running.len() >= min_procs {
            // `running` is not empty (min_procs >= 1), so neither is `exits`.
            if let Some(pid) = exits.next().await {
                tracing::debug!(tracker = %reporter.name(), pid, "tracked process exited");
                running.remove(&pid);
            }
            if running.len() < min_procs {
                // Report the death before rescanning, so that the scan does not delay it; a
                // replacement already running is reported at the top of the loop.
                if reporter.report(health(running.len())).await.is_err() {
                    return;
                }
                scan(target, &mut running, &mut exits).await;
            }
        } else {
            tokio::select! {
                Some(pid) = exits.next(), if !exits.is_empty() => {
                    running.remove(&pid);
                }
                () = tokio::time::sleep(rescan_interval) => {
                    scan(target, &mut running, &mut exits).await;
                }
            }
        }
    }
}

/// Adds every matching, not yet tracked, live process to `running` with a future for its exit.
/// The `/proc` walk runs on the blocking pool, off the runtime's threads.
async fn scan(
    target: &ProcessMatch,
    running: &mut HashSet<i32>,
    exits: &mut FuturesUnordered<Exit>,
) {
    let (wanted, known) = (target.clone(), running.clone());
    let found = match tokio::task::spawn_blocking(move || find_new(&wanted, &known)).await {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(%error, "/proc scan failed");
            return;
        }
    };
    for (pid, fd) in found {
        match PidFd::register(fd) {
            Ok(pidfd) => {
                running.insert(pid);
                exits.push(Box::pin(async move {
                    pidfd.exited().await;
                    pid
                }));
            }
            Err(error) => tracing::warn!(pid, %error, "cannot poll pidfd"),
        }
    }
}

/// Matching live processes not in `known`, each with a pidfd opened on it.
fn find_new(target: &ProcessMatch, known: &HashSet<i32>) -> Vec<(i32, OwnedFd)> {
    let entries = match std::fs::read_dir("/proc") {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%error, "cannot list /proc");
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if known.contains(&pid) || !matches(target, pid) {
            continue;
        }
        let Ok(fd) = pidfd_open(pid) else {
            continue; // Gone already.
        };
        // The pid may have been reused between the check and the open: check the process the
        // pidfd now refers to.
        if matches(target, pid) {
            found.push((pid, fd));
        }
    }
    found
}

/// Whether live process `pid` matches (false if it is gone, a zombie, or unreadable).
fn matches(target: &ProcessMatch, pid: i32) -> bool {
    let Some(stat) = ProcStat::read(pid) else {
        return false;
    };
    if stat.is_dead() {
        return false;
    }
    match target {
        ProcessMatch::Name(name) => {
            comm_matches(&stat.comm, name)
                || read_cmdline(pid).is_some_and(|argv| {
                    argv.first().is_some_and(|argv0| {
                        Path::new(argv0)
                            .file_name()
                            .is_some_and(|base| base == name.as_str())
                    })
                })
        }
        ProcessMatch::Cmdline(expected) => read_cmdline(pid).is_some_and(|argv| argv == *expected),
        ProcessMatch::PidFile(_) => false,
    }
}

/// The kernel keeps the first 15 bytes of a process name.
const COMM_MAX: usize = 15;

fn comm_matches(comm: &str, name: &str) -> bool {
    let name = name.as_bytes();
    comm.as_bytes() == &name[..name.len().min(COMM_MAX)]
}

fn read_cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let raw = raw.strip_suffix(b"\0").unwrap_or(&raw);
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|b| *b == 0)
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
}

/// The fields of `/proc/PID/stat` we use.
struct ProcStat {
    comm: String,
    state: char,
}

impl ProcStat {
    fn read(pid: i32) -> Option<Self> {
        let raw = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&String::from_utf8_lossy(&raw))
    }

    /// `PID (COMM) STATE ...`; COMM may itself hold spaces and parentheses, so it ends at the
    /// last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let state = stat.get(close + 1..)?.trim_start().chars().next()?;
        Some(Self { comm, state })
    }

    fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

async fn track_pid_file(path: &Path, mut watch: FileWatch, reporter: &mut Reporter) {
    loop {
        let process = open_pid_file(path);
        let health = match &process {
            Ok((pid, _)) => {
                tracing::debug!(tracker = %reporter.name(), pid, "tracking process from pid file");
                Health::Up
            }
            Err(reason) => Health::down(reason.clone()),
        };
        if reporter.report(health).await.is_err() {
            return;
        }
        let changed = match process {
            Ok((pid, pidfd)) => {
                tokio::select! {
                    () = pidfd.exited() => {
                        let reason = format!("process {pid} from {} exited", path.display());
                        if reporter.report(Health::down(reason)).await.is_err() {
                            return;
                        }
                        watch.changed().await
                    }
                    changed = watch.changed() => changed,
                }
            }
            Err(_) => watch.changed().await,
        };
        if let Err(error) = changed {
            let reason = format!("inotify failed, no longer watching: {error}");
            let _ = reporter.report(Health::down(reason)).await;
            return;
        }
    }
}

/// Reads the pid file and opens the process, or says why not.
fn open_pid_file(path: &Path) -> Result<(i32, PidFd), String> {
    let content =
        std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let pid = std::str::from_utf8(&content)
        .ok()
        .map(str::trim)
        .and_then(|text| text.parse::<i32>().ok())
        .filter(|pid| *pid > 0)
        .ok_or_else(|| format!("{} does not hold a pid", path.display()))?;
    let pidfd = PidFd::open(pid)
        .map_err(|error| format!("process {pid} from {}: {error}", path.display()))?;
    if ProcStat::read(pid).is_none_or(|stat| stat.is_dead()) {
        return Err(format!(
            "process {pid} from {} is not running",
            path.display()
        ));
    }
    Ok((pid, pidfd))
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1; it does not
    // touch our memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A pidfd, which polls readable once its process has exited.
struct PidFd(AsyncFd<OwnedFdRaw>);

impl PidFd {
    fn open(pid: i32) -> io::Result<Self> {
        Self::register(pidfd_open(pid)?)
    }

    fn register(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: `OwnedFdRaw` owns the descriptor, keeps it open for as long as the `AsyncFd`
        // lives and always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(OwnedFdRaw(fd), Interest::READABLE) }?;
        Ok(Self(fd))
    }

    /// Completes when the process has exited (or, should polling fail, at once: a tracker that
    /// reports a live process as dead is safer than one that never notices a death).
    async fn exited(&self) {
        if let Err(error) = self.0.readable().await {
            tracing::warn!(%error, "polling pidfd failed");
        }
    }
}

struct OwnedFdRaw(OwnedFd);

impl AsRawFd for OwnedFdRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_odd_process_names() {
        let stat = ProcStat::parse("42 (my (odd) name) S 1 42 42 0 -1").expect("well formed");
        assert_eq!(stat.comm, "my (odd) name");
        assert_eq!(stat.state, 'S');
        assert!(
            ProcStat::parse("42 (x) Z 1")
                .expect("well formed")
                .is_dead()
        );
        assert!(ProcStat::parse("garbage").is_none());
        assert!(ProcStat::parse("1 (x)").is_none());
    }

    #[test]
    fn long_names_match_the_truncated_comm() {
        assert!(comm_matches("haproxy", "haproxy"));
        assert!(!comm_matches("haproxy", "haprox"));
        assert!(comm_matches("a-very-long-dae", "a-very-long-daemon-name"));
        assert!(!comm_matches("a-very-long-dae", "a-very-long-dxxmon-name"));
    }
}
