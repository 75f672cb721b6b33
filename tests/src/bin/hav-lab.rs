//! `hav-lab`: the one-command demonstration. Builds a proxy pair in network namespaces (two
//! nodes running hav-agent and an HTTP server standing in for the proxy, and a client), then
//! breaks things the way production does and shows what a client probing the VIP every 5 ms saw.
//! Everything is torn down at the end, on error, and on Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hav_tests::bench::sibling_binary;
use hav_tests::netns::{NsProcess, Presence, SpawnSpec};
use hav_tests::probe::{self, ProbeConfig, Prober};
use hav_tests::topology::{LinkEnd, Pair};

const HTTP_PORT: u16 = 8080;
const SETTLE: Duration = Duration::from_secs(10);

fn main() {
    watch_interrupts();
    match run(&INTERRUPTED) {
        Ok(()) => println!("\nlab torn down: every namespace, link and process is gone."),
        Err(error) => {
            eprintln!("\nhav-lab: {error:#}");
            eprintln!("lab torn down.");
            std::process::exit(1);
        }
    }
}

/// Ctrl-C and SIGTERM set a flag the steps check, so the lab is torn down by its owner's Drop
/// rather than left behind by an abrupt exit. A handler, not a blocked mask: children inherit a
/// blocked mask, and the agents must see their SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn watch_interrupts() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(error) = unsafe { sigaction(signal, &action) } {
            eprintln!("hav-lab: cannot catch {signal}: {error}");
        }
    }
}

struct Node {
    agent: NsProcess,
    proxy: NsProcess,
}

fn run(interrupted: &AtomicBool) -> anyhow::Result<()> {
    let agent_bin = sibling_binary("hav-agent").context("build first: cargo build --workspace")?;
    let httpd_bin = sibling_binary("hav-test-httpd").context("build first")?;
    let check = |step: &str| -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted during {step}");
        }
        Ok(())
    };

    banner("1. A proxy pair in network namespaces");
    let pair = Pair::new().context("creating namespaces (run as root)")?;
    let vip = IpAddr::V4(pair.vip4);
    let prefix = pair.lab.prefix().as_str().to_owned();
    println!(
        "   namespaces {prefix}-*: proxy-a 198.51.100.11, proxy-b 198.51.100.12, client 198.51.100.100"
    );
    println!("   VIP {vip}; VRRPv3, adverts every 100 ms; proxy-a priority 150, proxy-b 100");
    println!("   each node tracks its proxy process (weight 0: no proxy, no VIP)");
    let dir = pair.lab.log_dir().to_path_buf();
    for name in ["proxy-a", "proxy-b"] {
        std::fs::create_dir_all(dir.join(name))?;
    }
    let mut nodes = Vec::new();
    for (name, attachment, priority, peer) in [
        ("proxy-a", &pair.a, 150, &pair.b),
        ("proxy-b", &pair.b, 100, &pair.a),
    ] {
        let config = write_config(&dir, name, &attachment.iface, priority, peer.ipv4, vip)?;
        let proxy = start_proxy(&pair, &attachment.host, name, &httpd_bin, &dir)?;
        let agent = pair.lab.spawn(
            &attachment.host,
            SpawnSpec::new(format!("{name}-agent"), &agent_bin)
                .args(["--config", &config.display().to_string()])
                .env("RUST_LOG", "info"),
        )?;
        nodes.push(Node { agent, proxy });
    }
    pair.lab
        .wait_address("a", vip, Presence::Present, SETTLE)
        .context("proxy-a never took the VIP")?;
    println!("   proxy-a is master and holds {vip}:");
    for node in ["proxy-a", "proxy-b"] {
        print_status(&agent_bin, &dir, node);
    }
    check("start-up")?;

    let target = SocketAddr::new(vip, HTTP_PORT);
    let prober = Prober::start(pair.lab.host("client")?, ProbeConfig::new(target))?;
    prober
        .wait_for_reply("proxy-a", Instant::now(), SETTLE)
        .context("the client never reached proxy-a through the VIP")?;
    println!("   client → http://{target}/ answered by proxy-a");

    let mut results = Vec::new();

    banner("2. The proxy process on the master dies");
    let fault = Instant::now();
    nodes[0].proxy.kill()?;
    pair.lab.wait_address("b", vip, Presence::Present, SETTLE)?;
    let report = wait_report(&prober, fault, "proxy-b")?;
    println!("   proxy-a resigned at once (priority 0); proxy-b took the VIP after its skew time");
    results.push(("proxy process killed on master", report));
    check("proxy death")?;

    banner("3. The proxy comes back: proxy-a preempts (make-before-break)");
    let (host_a, iface_a) = (pair.a.host.clone(), pair.a.iface.clone());
    nodes[0].proxy = start_proxy(&pair, &host_a, "proxy-a", &httpd_bin, &dir)?;
    let fault = Instant::now();
    pair.lab.wait_address("a", vip, Presence::Present, SETTLE)?;
    let report = wait_report(&prober, fault, "proxy-a")?;
    results.push(("failback when the proxy returns", report));
    check("failback")?;

    banner("4. The master's network link is cut");
    let fault = Instant::now();
    pair.lab
        .set_link(&host_a, &iface_a, LinkEnd::Switch, false)?;
    pair.lab.wait_address("b", vip, Presence::Present, SETTLE)?;
    let report = wait_report(&prober, fault, "proxy-b")?;
    println!("   proxy-b heard no advert for 3 × 100 ms + skew and took over");
    results.push(("master link cut", report));
    pair.lab
        .set_link(&host_a, &iface_a, LinkEnd::Switch, true)?;
    pair.lab.wait_address("a", vip, Presence::Present, SETTLE)?;
    prober.wait_for_reply("proxy-a", Instant::now(), SETTLE)?;
    check("link cut")?;

    banner("5. Planned maintenance: the master's agent is stopped (SIGTERM)");
    let fault = Instant::now();
    nodes[0]
        .agent
        .signal(nix::sys::signal::Signal::SIGTERM)
        .context("SIGTERM")?;
    pair.lab.wait_address("b", vip, Presence::Present, SETTLE)?;
    let report = wait_report(&prober, fault, "proxy-b")?;
    println!("   proxy-a kept answering until proxy-b was heard as master, then released the VIP");
    results.push(("graceful stop of the master", report));
    let _ = nodes[0].agent.wait_timeout(SETTLE);

    banner("What the client saw");
    println!(
        "   {:<34} {:>16} {:>14}  (probe every 5 ms)",
        "event", "new holder after", "failed probes"
    );
    for (event, report) in &results {
        let outage = report
            .outage
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "never".into());
        println!("   {event:<34} {outage:>16} {:>14}", report.failed_probes);
    }
    println!("\n   logs: {}", dir.display());
    drop(prober);
    Ok(())
}

fn wait_report(
    prober: &Prober,
    fault: Instant,
    new_holder: &str,
) -> anyhow::Result<probe::FailoverReport> {
    prober
        .wait_for_reply(new_holder, fault, SETTLE)
        .with_context(|| format!("the client never reached {new_holder}"))?;
    let samples = prober.samples();
    let report = probe::analyse(&samples, fault, new_holder);
    if std::env::var_os("HAV_LAB_DEBUG").is_some() {
        for s in samples.iter().filter(|s| s.done >= fault).take(40) {
            eprintln!(
                "     sent +{:>4} ms done +{:>4} ms {:?}",
                s.sent.saturating_duration_since(fault).as_millis(),
                s.done.saturating_duration_since(fault).as_millis(),
                s.outcome
            );
        }
    }
    println!(
        "   client: first reply from {new_holder} after {} ms, {} failed probe(s)",
        report.outage.map_or(0, |d| d.as_millis()),
        report.failed_probes
    );
    Ok(report)
}

fn write_config(
    dir: &Path,
    name: &str,
    iface: &str,
    priority: u8,
    peer: std::net::Ipv4Addr,
    vip: IpAddr,
) -> anyhow::Result<PathBuf> {
    let state = dir.join(name);
    let path = dir.join(format!("{name}.toml"));
    let peer_priority = if priority == 150 { 100 } else { 150 };
    std::fs::write(
        &path,
        format!(
            r#"[node]
name = "{name}"
state_dir = "{state}"

[[process]]
name = "proxy"
pid_file = "{pid_file}"
weight = 0

[[instance]]
name = "proxy-vip"
interface = "{iface}"
vrid = 51
priority = {priority}
advert_interval = "100ms"
unicast_peers = [{{ address = "{peer}", priority = {peer_priority} }}]
vips = ["{vip}/24"]
track_process = ["proxy"]
"#,
            state = state.display(),
            pid_file = pid_file(dir, name).display()
        ),
    )?;
    Ok(path)
}

/// Network namespaces share one PID space, so a process name would match the other node's proxy
/// too: each node tracks its own proxy through a pid file, as a packaged proxy writes one.
fn pid_file(dir: &Path, node: &str) -> PathBuf {
    dir.join(node).join("proxy.pid")
}

fn start_proxy(
    pair: &Pair,
    host: &str,
    node: &str,
    httpd: &Path,
    dir: &Path,
) -> anyhow::Result<NsProcess> {
    let proxy = pair.lab.spawn(
        host,
        SpawnSpec::new(format!("{node}-proxy"), httpd).args([
            "--node",
            node,
            "--listen",
            &format!("0.0.0.0:{HTTP_PORT}"),
        ]),
    )?;
    let path = pid_file(dir, node);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", proxy.pid()))?;
    std::fs::rename(&tmp, &path)?;
    Ok(proxy)
}

fn print_status(agent_bin: &Path, dir: &Path, node: &str) {
    let socket = dir.join(node).join("hav-agent.sock");
    // Just after start-up the socket may not answer yet; a second try a moment later is enough
    // for a display (nothing waits on it).
    for _ in 0..20 {
        if let Ok(out) = std::process::Command::new(agent_bin)
            .args(["status", "--socket"])
            .arg(&socket)
            .output()
            && out.status.success()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                println!("     {line}");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn banner(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(70usize.saturating_sub(title.len()))
    );
}
