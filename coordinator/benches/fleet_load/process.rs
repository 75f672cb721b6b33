//! The coordinators under test as separate processes (so that their RSS and CPU are their own),
//! on redb or sharing an etcd prefix, the file-descriptor limit all processes need, and the /proc
//! sampler of a set of processes.
//!
//! Guarantees: a child is killed when its [`Coordinator`] is dropped, whatever happened; CPU
//! figures are exact deltas of utime+stime over a phase, summed over the sampled processes; RSS
//! peaks are of the sum, sampled every 50 ms.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hav_coordinator::tls::ServerTlsFiles;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, SysconfVar, sysconf};
use tokio::task::JoinHandle;

/// Raises RLIMIT_NOFILE (soft and hard) to at least `wanted`; children inherit it.
pub fn raise_fd_limit(wanted: u64) -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= wanted {
        return Ok(soft);
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let limit = wanted.min(nr_open.max(hard));
    // Raising the hard limit needs CAP_SYS_RESOURCE; without it, go as far as the hard limit.
    if setrlimit(Resource::RLIMIT_NOFILE, limit, limit.max(hard)).is_err() {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        return Ok(hard);
    }
    Ok(limit)
}

/// Where a coordinator keeps its state.
#[derive(Debug, Clone)]
pub enum StoreArgs {
    /// Its own redb file under its data directory.
    Redb,
    /// An etcd cluster shared with other coordinators (the default prefix), under `name`.
    Etcd {
        endpoints: Vec<String>,
        name: String,
        leader_ttl: Duration,
    },
}

/// A running `hav-coordinator` child process.
pub struct Coordinator {
    child: Child,
    /// Its `--name` (on etcd), else "coordinator".
    pub name: String,
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl Coordinator {
    /// Starts `binary` on a free loopback port with a fresh data directory `data` and the store
    /// `store`, its standard error going to `log`.
    pub fn start(
        binary: &Path,
        tls: &ServerTlsFiles,
        data: &Path,
        store: &StoreArgs,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        // Bind-and-release picks a free port; the coordinator binds it a moment later.
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binary);
        let name = match store {
            StoreArgs::Redb => "coordinator".to_owned(),
            StoreArgs::Etcd {
                endpoints,
                name,
                leader_ttl,
            } => {
                command
                    .arg("--etcd")
                    .arg(endpoints.join(","))
                    .arg("--name")
                    .arg(name)
                    .arg("--leader-ttl")
                    .arg(format!("{}s", leader_ttl.as_secs().max(1)));
                name.clone()
            }
        };
        let child = command
            .arg("--listen")
            .arg(address.to_string())
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .arg("--ca")
            .arg(&tls.ca)
            .arg("--data")
            .arg(data)
            .env(
                "RUST_LOG",
                std::env::var("HAV_LOAD_COORDINATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Coordinator {
            child,
            name,
            address,
            log,
        })
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Whether the child has exited (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGINT (the coordinator's clean shutdown), then SIGKILL after `grace`; nothing for a
    /// child already reaped (its pid may be another process's by now).
    pub async fn stop(mut self, grace: Duration) -> Duration {
        let started = Instant::now();
        if self.exited().is_some() {
            return Duration::ZERO;
        }
        let _ = kill(self.pid(), Signal::SIGINT);
        while started.elapsed() < grace {
            if self.exited().is_some() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        started.elapsed()
    }

    /// SIGKILL (a crash: nothing is handed over or flushed), then reaps the child.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub at: Instant,
    /// utime + stime in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`self` for this process).
pub fn read_proc(pid: Option<Pid>) -> anyhow::Result<Reading> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".into(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        // `after` starts at field 3 (state).
        Ok(fields.get(n - 3).context("short stat")?.parse()?)
    };
    let cpu_ticks = field(14)? + field(15)?;
    let status = std::fs::read_to_string(format!("{dir}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Ok(Reading {
        at: Instant::now(),
        cpu_ticks,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    })
}

/// The sum of [`read_proc`] over `pids` (an empty set reads as zero).
pub fn read_procs(pids: &[Pid]) -> anyhow::Result<Reading> {
    let mut sum = Reading {
        at: Instant::now(),
        cpu_ticks: 0,
        rss_kib: 0,
        hwm_kib: 0,
    };
    for &pid in pids {
        let reading = read_proc(Some(pid))?;
        sum.cpu_ticks += reading.cpu_ticks;
        sum.rss_kib += reading.rss_kib;
        sum.hwm_kib += reading.hwm_kib;
        sum.at = reading.at;
    }
    Ok(sum)
}

/// The children of this process whose command name is `comm` (e.g. the etcd members).
pub fn children_named(comm: &str) -> Vec<Pid> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1;
            // After the name: state, then the parent's pid.
            let parent = rest.split_whitespace().nth(1)?;
            (name == comm && parent == me).then(|| Pid::from_raw(pid))
        })
        .collect()
}

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// Samples the summed RSS of a set of processes in the background, keeping the peak since the
/// last reset. Sampling stops when one of them is gone: a sampler covers processes that live
/// through its phases.
pub struct Sampler {
    pids: Vec<Pid>,
    peak_rss_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Sampler {
    pub fn start(pids: Vec<Pid>) -> Sampler {
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_rss_kib.clone();
        let sampled = pids.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            loop {
                ticker.tick().await;
                match read_procs(&sampled) {
                    Ok(reading) => {
                        peak.fetch_max(reading.rss_kib, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
        Sampler {
            pids,
            peak_rss_kib,
            task,
        }
    }

    /// Starts a phase: the peak restarts from the current RSS.
    pub fn begin(&self) -> anyhow::Result<Reading> {
        let reading = read_procs(&self.pids)?;
        self.peak_rss_kib.store(reading.rss_kib, Ordering::Relaxed);
        Ok(reading)
    }

    /// Ends a phase begun at `start`.
    pub fn end(&self, start: Reading) -> anyhow::Result<Usage> {
        let end = read_procs(&self.pids)?;
        let wall = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
        let cpu_seconds = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / clock_ticks();
        Ok(Usage {
            cpu_percent: 100.0 * cpu_seconds / wall,
            cpu_seconds,
            rss_kib: end.rss_kib,
            peak_rss_kib: self.peak_rss_kib.load(Ordering::Relaxed).max(end.rss_kib),
            hwm_kib: end.hwm_kib,
        })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A process's resource use over one phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// CPU time over wall time (100 = one core busy).
    pub cpu_percent: f64,
    pub cpu_seconds: f64,
    /// VmRSS at the end of the phase.
    pub rss_kib: u64,
    /// Highest VmRSS sampled during the phase.
    pub peak_rss_kib: u64,
    /// VmHWM (the kernel's peak RSS since start) at the end of the phase, summed.
    pub hwm_kib: u64,
}
