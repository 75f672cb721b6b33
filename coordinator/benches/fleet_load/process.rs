//! The coordinator under test as a separate process (so that its RSS and CPU are its own), the
//! file-descriptor limit both processes need, and the /proc sampler.
//!
//! Guarantees: the child is killed when [`Coordinator`] is dropped, whatever happened; CPU figures
//! are exact deltas of utime+stime over a phase, RSS peaks are sampled every 50 ms.

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

/// A running `hav-coordinator` child process.
pub struct Coordinator {
    child: Child,
    pub address: SocketAddr,
    pub log: PathBuf,
}

impl Coordinator {
    /// Starts `binary` on a free loopback port with a fresh data directory under `run_dir`,
    /// its standard error going to `log`.
    pub fn start(
        binary: &Path,
        tls: &ServerTlsFiles,
        run_dir: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        // Bind-and-release picks a free port; the coordinator binds it a moment later.
        let address = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(binary)
            .arg("--listen")
            .arg(address.to_string())
            .arg("--cert")
            .arg(&tls.cert)
            .arg("--key")
            .arg(&tls.key)
            .arg("--ca")
            .arg(&tls.ca)
            .arg("--data")
            .arg(run_dir.join("data"))
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

    /// SIGINT (the coordinator's clean shutdown), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) -> Duration {
        let started = Instant::now();
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

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// Samples a process's RSS in the background, keeping the peak since the last reset.
pub struct Sampler {
    pid: Option<Pid>,
    peak_rss_kib: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Sampler {
    pub fn start(pid: Option<Pid>) -> Sampler {
        let peak_rss_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_rss_kib.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(50));
            loop {
                ticker.tick().await;
                match read_proc(pid) {
                    Ok(reading) => {
                        peak.fetch_max(reading.rss_kib, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        });
        Sampler {
            pid,
            peak_rss_kib,
            task,
        }
    }

    /// Starts a phase: the peak restarts from the current RSS.
    pub fn begin(&self) -> anyhow::Result<Reading> {
        let reading = read_proc(self.pid)?;
        self.peak_rss_kib.store(reading.rss_kib, Ordering::Relaxed);
        Ok(reading)
    }

    /// Ends a phase begun at `start`.
    pub fn end(&self, start: Reading) -> anyhow::Result<Usage> {
        let end = read_proc(self.pid)?;
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
    /// VmHWM (the kernel's peak RSS since start) at the end of the phase.
    pub hwm_kib: u64,
}
