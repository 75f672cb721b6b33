//! keepalived as a reference VRRP peer: config generation and a runner inside a namespace.
//!
//! Each [`Keepalived`] gets its own directory (config, pid files, notify FIFO, track files), and
//! runs `keepalived --vrrp --dont-fork --log-console --log-detail --no-syslog` with explicit pid
//! files, so instances in different namespaces share no state (no /run/keepalived, no syslog).
//! State changes are read from the instance's `vrrp_notify_fifo` by a thread and can be awaited
//! ([`Keepalived::wait_state`]); nothing polls.
//!
//! keepalived 2.2.7 has no switch for the VRRPv3 IPv4 checksum form: it always includes the
//! pseudo-header (RFC 5798 §5.2.8); `old_unicast_checksum` only selects the pre-1.3.6 form for
//! unicast peers. GARP timing is global: `vrrp_garp_master_delay` (s, default 5),
//! `vrrp_garp_master_repeat` (default 5), `vrrp_garp_interval` (s, between packets).

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::netns::{Namespace, NetnsError, NsProcess, SpawnSpec};

/// Path of the keepalived binary (Debian package).
pub const KEEPALIVED: &str = "/usr/sbin/keepalived";

/// Names a program to run instead of [`KEEPALIVED`], with the same arguments: another build,
/// or a wrapper that runs keepalived under a profiler (`scripts/bench-instructions.sh`).
pub const KEEPALIVED_BIN_ENV: &str = "HAV_KEEPALIVED_BIN";

/// The keepalived program to start: [`KEEPALIVED_BIN_ENV`] if set, else [`KEEPALIVED`].
pub fn keepalived_program() -> PathBuf {
    std::env::var_os(KEEPALIVED_BIN_ENV).map_or_else(|| PathBuf::from(KEEPALIVED), PathBuf::from)
}

/// Errors of the keepalived runner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeepalivedError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "keepalived in {namespace}: instance {instance} did not reach {state:?} within {timeout:?} (last: {last:?}); log {log}"
    )]
    StateTimeout {
        namespace: String,
        instance: String,
        state: VrrpState,
        timeout: Duration,
        last: Option<VrrpState>,
        log: String,
    },
    #[error("keepalived in {namespace} exited: {exit}; log {log}")]
    Exited {
        namespace: String,
        exit: String,
        log: String,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> KeepalivedError {
    let what = what.into();
    move |source| KeepalivedError::Io { what, source }
}

/// How a backup treats a higher-priority router coming up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preempt {
    Preempt,
    NoPreempt,
    /// `preempt_delay` (seconds, keepalived accepts fractions).
    Delay(Duration),
}

/// A `vrrp_script` used as `track_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackScript {
    pub name: String,
    /// The command line (keepalived splits it on spaces; use absolute paths).
    pub script: String,
    pub interval: Duration,
    pub fall: u32,
    pub rise: u32,
    /// 0 = the instance goes to FAULT when the script fails.
    pub weight: i32,
}

/// A `track_file`: a non-zero value in the file (with weight 0) puts the instance in FAULT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFile {
    pub name: String,
    pub path: PathBuf,
    pub weight: i32,
}

/// A `vrrp_track_process` matched by process name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackProcess {
    pub name: String,
    pub process: String,
    pub weight: i32,
}

/// Unicast mode: source address and peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unicast {
    pub source: IpAddr,
    pub peers: Vec<IpAddr>,
}

/// One `vrrp_instance`. All VIPs must be of one family (a keepalived rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    /// 2 or 3.
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub interface: String,
    /// VIPs with their prefix lengths.
    pub vips: Vec<(IpAddr, u8)>,
    /// `None` = multicast.
    pub unicast: Option<Unicast>,
    pub preempt: Preempt,
    pub track_scripts: Vec<TrackScript>,
    pub track_files: Vec<TrackFile>,
    pub track_processes: Vec<TrackProcess>,
    /// `old_unicast_checksum` (pre-1.3.6 VRRPv3 unicast checksum).
    pub old_unicast_checksum: bool,
}

impl VrrpInstance {
    /// An instance `VI_1` with preemption, multicast, no tracking.
    pub fn new(
        version: u8,
        vrid: u8,
        priority: u8,
        advert_interval: Duration,
        interface: &str,
        vips: Vec<(IpAddr, u8)>,
    ) -> Self {
        VrrpInstance {
            name: "VI_1".into(),
            version,
            vrid,
            priority,
            advert_interval,
            interface: interface.to_owned(),
            vips,
            unicast: None,
            preempt: Preempt::Preempt,
            track_scripts: Vec::new(),
            track_files: Vec::new(),
            track_processes: Vec::new(),
            old_unicast_checksum: false,
        }
    }
}

/// Global GARP settings (`vrrp_garp_*`); `None` keeps keepalived's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Garp {
    pub master_delay: Option<Duration>,
    pub master_repeat: Option<u32>,
    pub interval: Option<Duration>,
}

/// A whole keepalived.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepalivedConfig {
    pub router_id: String,
    pub instances: Vec<VrrpInstance>,
    pub garp: Garp,
}

impl KeepalivedConfig {
    /// Renders keepalived.conf; `notify_fifo` is where state changes are written.
    pub fn render(&self, notify_fifo: &Path) -> String {
        let mut out = String::new();
        // `writeln!` into a String cannot fail; the results are ignored below for that reason.
        let _ = writeln!(out, "global_defs {{");
        let _ = writeln!(out, "    router_id {}", self.router_id);
        let _ = writeln!(out, "    vrrp_notify_fifo {}", notify_fifo.display());
        let _ = writeln!(out, "    script_user root");
        let _ = writeln!(out, "    enable_script_security");
        if let Some(delay) = self.garp.master_delay {
            let _ = writeln!(out, "    vrrp_garp_master_delay {}", delay.as_secs());
        }
        if let Some(repeat) = self.garp.master_repeat {
            let _ = writeln!(out, "    vrrp_garp_master_repeat {repeat}");
        }
        if let Some(interval) = self.garp.interval {
            let _ = writeln!(out, "    vrrp_garp_interval {}", seconds(interval));
        }
        let _ = writeln!(out, "}}");
        for instance in &self.instances {
            for script in &instance.track_scripts {
                let _ = writeln!(out, "vrrp_script {} {{", script.name);
                let _ = writeln!(out, "    script \"{}\"", script.script);
                let _ = writeln!(out, "    interval {}", seconds(script.interval));
                let _ = writeln!(out, "    timeout {}", seconds(script.interval).max(1.0));
                let _ = writeln!(out, "    fall {}", script.fall);
                let _ = writeln!(out, "    rise {}", script.rise);
                let _ = writeln!(out, "    weight {}", script.weight);
                let _ = writeln!(out, "}}");
            }
            for file in &instance.track_files {
                let _ = writeln!(out, "track_file {} {{", file.name);
                let _ = writeln!(out, "    file \"{}\"", file.path.display());
                let _ = writeln!(out, "    weight {}", file.weight);
                let _ = writeln!(out, "    init_file 0 overwrite");
                let _ = writeln!(out, "}}");
            }
            for process in &instance.track_processes {
                let _ = writeln!(out, "vrrp_track_process {} {{", process.name);
                let _ = writeln!(out, "    process {}", process.process);
                let _ = writeln!(out, "    weight {}", process.weight);
                let _ = writeln!(out, "}}");
            }
            render_instance(&mut out, instance);
        }
        out
    }
}

fn render_instance(out: &mut String, instance: &VrrpInstance) {
    let _ = writeln!(out, "vrrp_instance {} {{", instance.name);
    let _ = writeln!(out, "    state BACKUP");
    let _ = writeln!(out, "    interface {}", instance.interface);
    let _ = writeln!(out, "    version {}", instance.version);
    let _ = writeln!(out, "    virtual_router_id {}", instance.vrid);
    let _ = writeln!(out, "    priority {}", instance.priority);
    let _ = writeln!(out, "    advert_int {}", seconds(instance.advert_interval));
    match instance.preempt {
        Preempt::Preempt => {}
        Preempt::NoPreempt => {
            let _ = writeln!(out, "    nopreempt");
        }
        Preempt::Delay(delay) => {
            let _ = writeln!(out, "    preempt_delay {}", seconds(delay));
        }
    }
    if let Some(unicast) = &instance.unicast {
        let _ = writeln!(out, "    unicast_src_ip {}", unicast.source);
        let _ = writeln!(out, "    unicast_peer {{");
        for peer in &unicast.peers {
            let _ = writeln!(out, "        {peer}");
        }
        let _ = writeln!(out, "    }}");
        if instance.old_unicast_checksum {
            let _ = writeln!(out, "    old_unicast_checksum");
        }
    }
    let _ = writeln!(out, "    virtual_ipaddress {{");
    for (vip, len) in &instance.vips {
        let _ = writeln!(out, "        {vip}/{len} dev {}", instance.interface);
    }
    let _ = writeln!(out, "    }}");
    for (block, names) in [
        (
            "track_script",
            instance
                .track_scripts
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>(),
        ),
        (
            "track_file",
            instance.track_files.iter().map(|f| &f.name).collect(),
        ),
        (
            "track_process",
            instance.track_processes.iter().map(|p| &p.name).collect(),
        ),
    ] {
        if names.is_empty() {
            continue;
        }
        let _ = writeln!(out, "    {block} {{");
        for name in names {
            let _ = writeln!(out, "        {name}");
        }
        let _ = writeln!(out, "    }}");
    }
    let _ = writeln!(out, "}}");
}

/// keepalived's advert_int and friends take seconds with fractions.
fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A VRRP instance state as keepalived reports it on its notify FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VrrpState {
    Backup,
    Master,
    Fault,
    Stop,
    Deleted,
}

impl VrrpState {
    fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "BACKUP" => VrrpState::Backup,
            "MASTER" => VrrpState::Master,
            "FAULT" => VrrpState::Fault,
            "STOP" => VrrpState::Stop,
            "DELETED" => VrrpState::Deleted,
            _ => return None,
        })
    }
}

/// One line of the notify FIFO: `INSTANCE "VI_1" MASTER 150`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub at: Instant,
    pub instance: String,
    pub state: VrrpState,
}

fn parse_fifo_line(line: &str, at: Instant) -> Option<StateChange> {
    let mut words = line.split_whitespace();
    if words.next()? != "INSTANCE" {
        return None;
    }
    let instance = words.next()?.trim_matches('"').to_owned();
    let state = VrrpState::parse(words.next()?)?;
    Some(StateChange {
        at,
        instance,
        state,
    })
}

#[derive(Debug, Default)]
struct History {
    changes: Mutex<Vec<StateChange>>,
    changed: Condvar,
}

impl History {
    fn lock(&self) -> MutexGuard<'_, Vec<StateChange>> {
        self.changes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A keepalived running in a namespace; killed on drop.
#[derive(Debug)]
pub struct Keepalived {
    process: NsProcess,
    dir: PathBuf,
    history: Arc<History>,
    fifo_writer: File,
    reader: Option<JoinHandle<()>>,
}

impl Keepalived {
    /// Writes `<dir>/keepalived.conf` and starts keepalived in `ns`. `dir` must be private to
    /// this instance (it holds pid files and the notify FIFO).
    pub fn start(
        ns: &Namespace,
        dir: &Path,
        config: &KeepalivedConfig,
    ) -> Result<Keepalived, KeepalivedError> {
        fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
        let fifo = dir.join("notify.fifo");
        let _ = fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
            |e| KeepalivedError::Io {
                what: format!("mkfifo {}", fifo.display()),
                source: e.into(),
            },
        )?;
        // Read-write: the open does not block and reads never see EOF between writers.
        let fifo_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .map_err(io_error(format!("open {}", fifo.display())))?;
        let fifo_writer = fifo_file.try_clone().map_err(io_error("dup notify fifo"))?;
        let history = Arc::new(History::default());
        let reader = {
            let history = history.clone();
            std::thread::Builder::new()
                .name("keepalived-fifo".into())
                .spawn(move || read_fifo(fifo_file, &history))
                .map_err(io_error("spawn fifo reader"))?
        };

        let conf = dir.join("keepalived.conf");
        fs::write(&conf, config.render(&fifo))
            .map_err(io_error(format!("write {}", conf.display())))?;
        let spec = SpawnSpec::new(
            format!("keepalived-{}", config.router_id),
            keepalived_program(),
        )
        .args([
            "--vrrp".to_owned(),
            "--dont-fork".to_owned(),
            "--log-console".to_owned(),
            "--log-detail".to_owned(),
            "--no-syslog".to_owned(),
            format!("--use-file={}", conf.display()),
            format!("--pid={}", dir.join("keepalived.pid").display()),
            format!("--vrrp_pid={}", dir.join("vrrp.pid").display()),
        ]);
        let process = ns.spawn(spec)?;
        Ok(Keepalived {
            process,
            dir: dir.to_owned(),
            history,
            fifo_writer,
            reader: Some(reader),
        })
    }

    /// Waits until `instance`'s latest reported state is `state`.
    pub fn wait_state(
        &mut self,
        instance: &str,
        state: VrrpState,
        timeout: Duration,
    ) -> Result<StateChange, KeepalivedError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let changes = self.history.lock();
                let last = changes.iter().rev().find(|c| c.instance == instance);
                if let Some(last) = last.filter(|c| c.state == state) {
                    return Ok(last.clone());
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    let last = last.map(|c| c.state);
                    drop(changes);
                    return Err(KeepalivedError::StateTimeout {
                        namespace: self.process.namespace().to_owned(),
                        instance: instance.to_owned(),
                        state,
                        timeout,
                        last,
                        log: self.process.log_path().display().to_string(),
                    });
                }
                // Wake at least every 100 ms to notice keepalived exiting.
                let _ = self
                    .history
                    .changed
                    .wait_timeout(changes, left.min(Duration::from_millis(100)));
            }
            if !self.process.is_running() {
                return Err(KeepalivedError::Exited {
                    namespace: self.process.namespace().to_owned(),
                    exit: self.process.describe_exit(),
                    log: self.process.log(),
                });
            }
        }
    }

    /// The latest state `instance` reported on the notify FIFO, if any.
    pub fn last_state(&self, instance: &str) -> Option<VrrpState> {
        self.history
            .lock()
            .iter()
            .rev()
            .find(|c| c.instance == instance)
            .map(|c| c.state)
    }

    /// Rewrites keepalived.conf with `config` and sends SIGHUP (keepalived reloads it).
    pub fn reload(&self, config: &KeepalivedConfig) -> Result<(), KeepalivedError> {
        let conf = self.dir.join("keepalived.conf");
        fs::write(&conf, config.render(&self.dir.join("notify.fifo")))
            .map_err(io_error(format!("write {}", conf.display())))?;
        self.process.signal(Signal::SIGHUP)?;
        Ok(())
    }

    /// Sends `signal` to the parent and each of its children (the VRRP process and script
    /// runners), e.g. SIGSTOP/SIGCONT to freeze the whole daemon.
    pub fn signal_all(&self, signal: Signal) -> Result<(), KeepalivedError> {
        self.process.signal(signal)?;
        for child in children_of(self.process.pid()) {
            if let Ok(pid) = i32::try_from(child) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
        }
        Ok(())
    }

    /// All state changes seen so far.
    pub fn history(&self) -> Vec<StateChange> {
        self.history.lock().clone()
    }

    /// The parent process.
    pub fn process(&mut self) -> &mut NsProcess {
        &mut self.process
    }

    /// The parent's pid followed by its children's (the VRRP child, script runners).
    pub fn pids(&self) -> Vec<u32> {
        let parent = self.process.pid();
        let mut pids = vec![parent];
        pids.extend(children_of(parent));
        pids
    }

    /// A crash of the whole daemon: the parent is stopped first (so it neither respawns the
    /// VRRP child nor lets it shut down cleanly), then every process gets SIGKILL. VIPs stay
    /// where they were, as after a real crash.
    pub fn crash(&mut self) -> Result<(), KeepalivedError> {
        let parent = self.process.pid();
        self.process.signal(Signal::SIGSTOP)?;
        for child in children_of(parent) {
            if let Ok(pid) = i32::try_from(child) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        self.process.kill()?;
        Ok(())
    }

    /// Graceful stop: SIGTERM (keepalived sends priority-0 adverts and removes its VIPs).
    pub fn stop(&mut self, grace: Duration) -> Result<(), KeepalivedError> {
        self.process.terminate(grace)?;
        Ok(())
    }

    /// The instance's private directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ = self.process.kill();
        // Wake the reader with a line it recognises as the end.
        let _ = self.fifo_writer.write_all(b"HAV-TESTS-QUIT\n");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn read_fifo(fifo: File, history: &History) {
    for line in BufReader::new(fifo).lines() {
        let Ok(line) = line else { return };
        if line == "HAV-TESTS-QUIT" {
            return;
        }
        if let Some(change) = parse_fifo_line(&line, Instant::now()) {
            history.lock().push(change);
            history.changed.notify_all();
        }
    }
}

/// Direct children of `parent`, from `/proc/*/stat`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); field 4 is the parent pid.
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// keepalived on the pair's `a` (priority 150) and `b` (100): VRRPv3 at 100 ms, VRID 51,
/// `vip/prefix`. Returns once `a` is master holding the VIP and `b` is its backup.
pub fn start_pair(
    pair: &crate::topology::Pair,
    vip: IpAddr,
    prefix: u8,
    timeout: Duration,
) -> Result<(Keepalived, Keepalived), KeepalivedError> {
    let start = |node: &str, priority: u8| -> Result<Keepalived, KeepalivedError> {
        let config = KeepalivedConfig {
            router_id: node.to_owned(),
            instances: vec![VrrpInstance::new(
                3,
                51,
                priority,
                Duration::from_millis(100),
                &pair.node(node)?.iface,
                vec![(vip, prefix)],
            )],
            garp: Default::default(),
        };
        Keepalived::start(
            pair.lab.host(node)?,
            &pair.lab.log_dir().join(format!("keepalived-{node}")),
            &config,
        )
    };
    let mut a = start("a", 150)?;
    a.wait_state("VI_1", VrrpState::Master, timeout)?;
    let mut b = start("b", 100)?;
    b.wait_state("VI_1", VrrpState::Backup, timeout)?;
    pair.lab
        .wait_address("a", vip, crate::netns::Presence::Present, timeout)?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn fifo_lines_parse() {
        let now = Instant::now();
        let change = parse_fifo_line("INSTANCE \"VI_1\" MASTER 150", now).expect("valid line");
        assert_eq!(change.instance, "VI_1");
        assert_eq!(change.state, VrrpState::Master);
        assert!(parse_fifo_line("GROUP \"G\" MASTER", now).is_none());
        assert!(parse_fifo_line("INSTANCE \"VI_1\" WEIRD 1", now).is_none());
        assert!(parse_fifo_line("", now).is_none());
    }

    #[test]
    fn config_renders_instance_tracking_and_unicast() {
        let vip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let mut instance = VrrpInstance::new(
            3,
            51,
            150,
            Duration::from_millis(20),
            "hx-lan",
            vec![(vip, 24)],
        );
        instance.preempt = Preempt::Delay(Duration::from_millis(1500));
        instance.unicast = Some(Unicast {
            source: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11)),
            peers: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 12))],
        });
        instance.track_files.push(TrackFile {
            name: "proxy".into(),
            path: "/tmp/x".into(),
            weight: 0,
        });
        let config = KeepalivedConfig {
            router_id: "a".into(),
            instances: vec![instance],
            garp: Garp {
                master_delay: Some(Duration::from_secs(1)),
                ..Garp::default()
            },
        };
        let text = config.render(Path::new("/tmp/fifo"));
        for expected in [
            "vrrp_notify_fifo /tmp/fifo",
            "vrrp_garp_master_delay 1",
            "advert_int 0.02",
            "version 3",
            "preempt_delay 1.5",
            "unicast_src_ip 198.51.100.11",
            "198.51.100.1/24 dev hx-lan",
            "track_file proxy {",
            "    track_file {\n        proxy\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
