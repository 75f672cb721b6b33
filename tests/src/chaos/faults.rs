//! Injecting and clearing each fault kind on one node.
//!
//! Everything acts inside the node's own namespace or on the run's own files: the switch port of
//! the node's veth, the veth itself, the daemon's processes, the node's tracked process, an
//! nftables table named `<prefix>_chaos` in the node's namespace, the node's state-directory
//! tmpfs, its config file. Clearing undoes what injecting did; what the daemon must do by
//! itself afterwards (take the VIP back, keep running) is for the invariants to judge. Checks
//! that belong to one fault (a SIGTERM exits 0, an invalid config is refused) are recorded as
//! findings.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::ChaosError;
use super::cluster::{BACKUP_PRIORITY, Daemon, MASTER_PRIORITY, Node, Pair};
use super::observe::Observers;
use super::schedule::{FaultKind, Side};
use crate::netns::{NsProcess, SpawnSpec};
use crate::topology::Lab;

/// Percentage of VRRP packets the advert-loss fault drops, in and out.
pub const ADVERT_LOSS_PERCENT: u32 = 20;
/// How long a daemon gets to log the outcome of a reload, or to exit after SIGTERM.
const DAEMON_RESPONSE: Duration = Duration::from_secs(10);
/// The priority of the node's own VIP in the sighup-valid fault (below the peer's 100).
const LOWERED_PRIORITY: u8 = 50;
/// The priority of the peer's VIP in the state-dir-full fault (above the peer's 150).
const RAISED_PRIORITY: u8 = 200;
/// The state-directory fill stops here even if the file system never says it is full.
const FILL_LIMIT: usize = 64 << 20;

/// What a fault needs from the run.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub lab: &'a Lab,
    pub observers: &'a Observers,
    pub stop: &'a AtomicBool,
}

/// What one fault found, besides what the invariants judge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultLog {
    /// A check of this fault failed (an invariant violation).
    pub findings: Vec<String>,
    /// The harness could not do its part (not the daemon's fault, still a failed run).
    pub harness: Vec<String>,
    /// Worth knowing, not wrong.
    pub notes: Vec<String>,
}

/// What an injected fault leaves for its clearing.
#[derive(Debug, Default)]
pub struct Injected {
    hogs: Vec<NsProcess>,
}

/// Injects `kind` on node `side` of `pair`.
pub fn inject(
    ctx: Ctx<'_>,
    pair: &mut Pair,
    side: Side,
    kind: FaultKind,
    log: &mut FaultLog,
) -> Result<Injected, ChaosError> {
    let recorder = ctx.observers.recorder();
    let node = pair.node(side);
    let host = node.label.clone();
    match kind {
        FaultKind::LinkFlap => ctx.lab.link_down(&host, &node.iface)?,
        FaultKind::InterfaceRecreate => ctx.lab.delete_link(&host, &node.iface)?,
        FaultKind::Kill => node.kill(recorder)?,
        FaultKind::StopCont => node.signal(Signal::SIGSTOP)?,
        FaultKind::TermRestart => {
            let exit = node.terminate(recorder, DAEMON_RESPONSE)?;
            if exit != "exit 0" {
                log.findings
                    .push(format!("{host}: SIGTERM ended the daemon with `{exit}`"));
            }
        }
        FaultKind::TrackedProcess => {
            node.tracked.kill()?;
            if let Daemon::Keepalived(ka) = &node.daemon {
                write_file(&ka.track_file, "1\n")?;
            }
        }
        FaultKind::AdvertLoss => {
            let rules = advert_loss_rules(ctx.lab)?;
            let out = ctx
                .lab
                .exec(&host, &["nft", "-f", &rules.display().to_string()])?;
            if !out.success() {
                return Err(ChaosError::Setup(format!(
                    "nft -f {} in {host}: {}",
                    rules.display(),
                    out.stderr.trim()
                )));
            }
        }
        FaultKind::CpuHog => {
            return Ok(Injected {
                hogs: hog(ctx.lab, &host)?,
            });
        }
        FaultKind::StateDirFull => fill_and_reload(ctx, node, log)?,
        FaultKind::CorruptJournal => {
            node.kill(recorder)?;
            if let Daemon::Hav(hav) = &node.daemon {
                let journal = hav.state_dir.join("vips.journal");
                write_file(&journal, "{\"version\": 1, \"vips\": [\u{1}\u{ff}garbage")?;
            }
        }
        FaultKind::ReloadValid => {
            let slot = side.slot();
            reload_with(
                ctx,
                node,
                log,
                |config| {
                    config.instances[slot].priority = LOWERED_PRIORITY;
                },
                |config| config.instances[slot].priority = LOWERED_PRIORITY,
            )?;
        }
        FaultKind::ReloadInvalid => reload_invalid(ctx, node, log)?,
        FaultKind::StraySignals => {
            node.signal(Signal::SIGUSR1)?;
            node.signal(Signal::SIGUSR2)?;
        }
    }
    Ok(Injected::default())
}

/// Clears `kind` on node `side` of `pair`. Returns when the fault counts as cleared if that is
/// later than the call: a restarted daemon is back once it says it started (hav: `hav-agent
/// started`, after it removed the VIPs a previous run left; keepalived: `Startup complete`, after
/// it removed its configured VIPs), not when its process was spawned.
pub fn clear(
    ctx: Ctx<'_>,
    pair: &mut Pair,
    side: Side,
    kind: FaultKind,
    injected: Injected,
    log: &mut FaultLog,
) -> Result<Option<Instant>, ChaosError> {
    let node = pair.node(side);
    let host = node.label.clone();
    match kind {
        FaultKind::LinkFlap => ctx.lab.link_up(&host, &node.iface)?,
        FaultKind::InterfaceRecreate => ctx.lab.recreate_link(&host, &node.iface)?,
        FaultKind::Kill | FaultKind::TermRestart => {
            let offset = node.start(ctx.lab, ctx.observers)?;
            return Ok(wait_started(ctx, node, offset, log));
        }
        FaultKind::StopCont => node.signal(Signal::SIGCONT)?,
        FaultKind::TrackedProcess => {
            node.tracked.start(ctx.lab, &host)?;
            if let Daemon::Keepalived(ka) = &node.daemon {
                write_file(&ka.track_file, "0\n")?;
            }
        }
        FaultKind::AdvertLoss => {
            let table = table_name(ctx.lab);
            let out = ctx
                .lab
                .exec(&host, &["nft", "delete", "table", "inet", &table])?;
            if !out.success() {
                return Err(ChaosError::Setup(format!(
                    "nft delete table inet {table} in {host}: {}",
                    out.stderr.trim()
                )));
            }
        }
        FaultKind::CpuHog => {
            for mut hog in injected.hogs {
                hog.kill()?;
            }
        }
        FaultKind::StateDirFull => {
            if let Daemon::Hav(hav) = &node.daemon {
                let fill = hav.state_dir.join("fill");
                fs::remove_file(&fill)
                    .map_err(|e| ChaosError::io(format!("remove {}", fill.display()), e))?;
            }
            reload_with(ctx, node, log, |_| {}, |_| {})?;
        }
        FaultKind::CorruptJournal => {
            let offset = node.start(ctx.lab, ctx.observers)?;
            let started = wait_started(ctx, node, offset, log);
            match node.wait_log(
                ctx.observers.recorder(),
                0,
                &["VIP journal was corrupt", "journal unreadable"],
                DAEMON_RESPONSE,
            ) {
                Some(line) => log.notes.push(format!("{host}: {}", trim_line(&line))),
                None => log.findings.push(format!(
                    "{host}: the restarted agent did not report the corrupt journal"
                )),
            }
            return Ok(started);
        }
        FaultKind::ReloadValid => reload_with(ctx, node, log, |_| {}, |_| {})?,
        FaultKind::ReloadInvalid => {
            // The running config never changed; the file gets its valid text back.
            if let Daemon::Hav(hav) = &node.daemon {
                hav.agent.write_config(&hav.config)?;
            }
        }
        FaultKind::StraySignals => {}
    }
    Ok(None)
}

/// Waits until a restarted daemon logs that it started; when it was seen, or `None` (and a
/// finding) if it did not within [`DAEMON_RESPONSE`].
fn wait_started(ctx: Ctx<'_>, node: &mut Node, offset: u64, log: &mut FaultLog) -> Option<Instant> {
    let needle = match node.daemon {
        Daemon::Hav(_) => "hav-agent started",
        Daemon::Keepalived(_) => "Startup complete",
    };
    match node.wait_log(ctx.observers.recorder(), offset, &[needle], DAEMON_RESPONSE) {
        Some(_) => Some(Instant::now()),
        None => {
            log.findings.push(format!(
                "{}: the restarted daemon did not log `{needle}` within {DAEMON_RESPONSE:?}",
                node.label
            ));
            None
        }
    }
}

/// Ends what a fault may have left on `node` when clearing it failed or never ran (a repair
/// calls this before restarting the daemon). Every step is idempotent; errors are ignored.
pub fn restore(ctx: Ctx<'_>, node: &mut Node) {
    let host = node.label.clone();
    if ctx.lab.addresses(&host, &node.iface).is_err() {
        let _ = ctx.lab.recreate_link(&host, &node.iface);
    }
    let _ = ctx.lab.link_up(&host, &node.iface);
    let _ = ctx.lab.exec(
        &host,
        &["nft", "delete", "table", "inet", &table_name(ctx.lab)],
    );
    let _ = node.signal(Signal::SIGCONT);
    match &node.daemon {
        Daemon::Hav(hav) => {
            let _ = fs::remove_file(hav.state_dir.join("fill"));
            let _ = hav.agent.write_config(&hav.config);
        }
        Daemon::Keepalived(ka) => {
            let _ = write_file(&ka.track_file, "0\n");
        }
    }
    if node.tracked.is_stopped() {
        let _ = node.tracked.start(ctx.lab, &host);
    }
}

/// Busy loops, two per core, in `host` (the CPU is shared: they starve every namespace).
pub fn hog(lab: &Lab, host: &str) -> Result<Vec<NsProcess>, ChaosError> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..cores * 2)
        .map(|i| {
            lab.spawn(
                host,
                SpawnSpec::new(format!("cpu-hog-{i}"), "/bin/sh")
                    .args(["-c", "while :; do :; done"]),
            )
            .map_err(ChaosError::from)
        })
        .collect()
}

fn table_name(lab: &Lab) -> String {
    format!("{}_chaos", lab.prefix())
}

/// The advert-loss ruleset (written once per run into the log directory).
fn advert_loss_rules(lab: &Lab) -> Result<std::path::PathBuf, ChaosError> {
    let path = lab.log_dir().join("advert-loss.nft");
    let drop_rule =
        format!("ip protocol vrrp numgen random mod 100 < {ADVERT_LOSS_PERCENT} counter drop");
    let text = format!(
        "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    {drop_rule}\n  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    {drop_rule}\n  }}\n}}\n",
        table = table_name(lab)
    );
    write_file(&path, &text)?;
    Ok(path)
}

fn write_file(path: &Path, text: &str) -> Result<(), ChaosError> {
    fs::write(path, text).map_err(|e| ChaosError::io(format!("write {}", path.display()), e))
}

fn trim_line(line: &str) -> String {
    line.chars().take(240).collect()
}

/// Writes the node's config changed by `hav_change` / `keepalived_change` (identity: the
/// original) and sends SIGHUP; for hav, waits for the agent to log the outcome and records a
/// finding unless the reload was applied.
fn reload_with(
    ctx: Ctx<'_>,
    node: &mut Node,
    log: &mut FaultLog,
    hav_change: impl FnOnce(&mut crate::agent::AgentConfig),
    keepalived_change: impl FnOnce(&mut crate::keepalived::KeepalivedConfig),
) -> Result<(), ChaosError> {
    let host = node.label.clone();
    let offset = node.log_len();
    match &node.daemon {
        Daemon::Hav(hav) => {
            let mut config = hav.config.clone();
            hav_change(&mut config);
            hav.agent.write_config(&config)?;
            hav.agent.reload()?;
        }
        Daemon::Keepalived(ka) => {
            let mut config = ka.config.clone();
            keepalived_change(&mut config);
            if let Some(k) = ka.running.as_ref() {
                k.reload(&config)?;
            }
            return Ok(());
        }
    }
    match node.wait_log(
        ctx.observers.recorder(),
        offset,
        &["config reloaded", "config unchanged", "reload refused"],
        DAEMON_RESPONSE,
    ) {
        Some(line) if line.contains("reload refused") => log.findings.push(format!(
            "{host}: a valid reload was refused: {}",
            trim_line(&line)
        )),
        Some(_) => {}
        None => log.findings.push(format!(
            "{host}: no reload outcome logged within {DAEMON_RESPONSE:?}"
        )),
    }
    Ok(())
}

/// sighup-invalid: a config with a priority out of range; the agent must refuse it.
fn reload_invalid(ctx: Ctx<'_>, node: &mut Node, log: &mut FaultLog) -> Result<(), ChaosError> {
    let host = node.label.clone();
    let offset = node.log_len();
    let Daemon::Hav(hav) = &node.daemon else {
        return Ok(());
    };
    let dir = hav
        .agent
        .config_path()
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let text = hav
        .config
        .render(&dir)
        .replace(&format!("priority = {MASTER_PRIORITY}"), "priority = 300");
    hav.agent.write_config_text(&text)?;
    hav.agent.reload()?;
    match node.wait_log(
        ctx.observers.recorder(),
        offset,
        &["reload refused", "config reloaded", "config unchanged"],
        DAEMON_RESPONSE,
    ) {
        Some(line) if line.contains("reload refused") => {}
        Some(line) => log.findings.push(format!(
            "{host}: an invalid config was not refused: {}",
            trim_line(&line)
        )),
        None => log.findings.push(format!(
            "{host}: no reload outcome logged within {DAEMON_RESPONSE:?} of an invalid config"
        )),
    }
    Ok(())
}

/// state-dir-full: fills the state tmpfs, then asks the node (SIGHUP) to take over its peer's
/// VIP (priority 200), a takeover that by design writes nothing. Refusing the reload for want
/// of space is fine; exiting or disturbing the clients is not.
fn fill_and_reload(ctx: Ctx<'_>, node: &mut Node, log: &mut FaultLog) -> Result<(), ChaosError> {
    let host = node.label.clone();
    let peer_slot = node.side.other().slot();
    let Daemon::Hav(hav) = &node.daemon else {
        return Ok(());
    };
    let fill = hav.state_dir.join("fill");
    let mut file = fs::File::create(&fill)
        .map_err(|e| ChaosError::io(format!("create {}", fill.display()), e))?;
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(ChaosError::io(format!("fill {}", fill.display()), e)),
        }
        if written >= FILL_LIMIT {
            log.harness.push(format!(
                "{host}: the state directory took {FILL_LIMIT} bytes without filling up"
            ));
            break;
        }
    }
    drop(file);
    let offset = node.log_len();
    let Daemon::Hav(hav) = &node.daemon else {
        return Ok(());
    };
    let mut config = hav.config.clone();
    config.instances[peer_slot].priority = RAISED_PRIORITY;
    const { assert!(RAISED_PRIORITY > MASTER_PRIORITY && BACKUP_PRIORITY < MASTER_PRIORITY) };
    hav.agent.write_config(&config)?;
    hav.agent.reload()?;
    match node.wait_log(
        ctx.observers.recorder(),
        offset,
        &["config reloaded", "reload refused", "config unchanged"],
        DAEMON_RESPONSE,
    ) {
        Some(line) => log.notes.push(format!(
            "{host}: reload with a full state directory: {}",
            trim_line(&line)
        )),
        None => log.findings.push(format!(
            "{host}: no reload outcome logged within {DAEMON_RESPONSE:?} with a full state directory"
        )),
    }
    Ok(())
}
