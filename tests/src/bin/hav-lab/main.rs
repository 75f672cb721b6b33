//! `hav-lab`: the one-command demonstration. Brings up, in network namespaces, a hav-coordinator,
//! two proxy pairs (hav-agent plus an HTTP server standing in for the proxy on each node), a
//! client and an authoritative DNS server (BIND); pushes one fleet config; shows the fleet's
//! status and DNS; then kills a master, lets it come back and drains a node, printing what a
//! client probing the VIP every 5 ms saw and each failover's trace as the agents exported it.
//! Everything is torn down at the end, on error, and on Ctrl-C.
//!
//! `hav-lab --ha` shows the control plane made highly available instead ([`ha`]).

mod ha;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use hav_tests::dns::DnsServer;
use hav_tests::fleet::{CLIENT_HOST, CLIENT_OCTET, FleetLab};
use hav_tests::netns::NsProcess;
use hav_tests::otlp::{AnyValue, Collector, Exported};
use hav_tests::probe::{self, ProbeConfig, Prober};
use hav_tests::topology::{LanSpec, LinkEnd};

const HTTP_PORT: u16 = 8080;
const OTLP_PORT: u16 = 4317;
const SETTLE: Duration = Duration::from_secs(10);
/// The four proxy nodes and their LAN octets: pair "web" and pair "api".
const NODES: [(&str, u8); 4] = [("web1", 11), ("web2", 12), ("api1", 13), ("api2", 14)];
/// The VIP the client probes: the first of pair "web", mastered by web1.
const PROBED_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
/// Its VRID (`first_vrid` of group web).
const PROBED_VRID: i64 = 10;

fn main() {
    let ha = match std::env::args().skip(1).collect::<Vec<_>>().as_slice() {
        [] => false,
        [flag] if flag == "--ha" => true,
        other => {
            eprintln!(
                "hav-lab: unexpected arguments {other:?}\nusage: hav-lab [--ha]\n  \
                 --ha  three coordinators on a three-member etcd; the leader killed mid-drain"
            );
            std::process::exit(2);
        }
    };
    hav_tests::interrupt::watch("hav-lab");
    let started = Instant::now();
    match run(&hav_tests::interrupt::INTERRUPTED, ha) {
        Ok(()) => println!(
            "\nlab torn down: every namespace, link and process is gone ({} s in all).",
            started.elapsed().as_secs()
        ),
        Err(error) => {
            eprintln!("\nhav-lab: {error:#}");
            eprintln!("lab torn down: every namespace, link and process is gone.");
            std::process::exit(1);
        }
    }
}

/// The fleet helper's boxed errors, into anyhow with what was being done.
trait Doing<T> {
    fn doing(self, what: &str) -> anyhow::Result<T>;
}

impl<T> Doing<T> for Result<T, hav_tests::fleet::Error> {
    fn doing(self, what: &str) -> anyhow::Result<T> {
        self.map_err(|error| anyhow!(error).context(what.to_owned()))
    }
}

/// One measured event for the final table.
struct Measured {
    event: &'static str,
    report: probe::FailoverReport,
    /// The longest time without any answer around the event.
    silence: Duration,
}

/// Creates the lab, runs the demonstration in it and, when a step failed (not on Ctrl-C), keeps
/// the processes' logs and says where; the lab itself is removed when `fleet` drops.
fn run(interrupted: &AtomicBool, ha: bool) -> anyhow::Result<()> {
    if ha {
        banner("1. The lab: namespaces, certificates, etcd");
    } else {
        banner("1. The lab: namespaces, certificates, DNS, trace collector");
    }
    explain("each box is a network namespace on one LAN 198.51.100.0/24 (a bridge):");
    let mut fleet =
        FleetLab::new(&NODES).doing("creating namespaces and certificates (run as root)")?;
    let result = if ha {
        ha::demonstrate(&mut fleet, interrupted)
    } else {
        demonstrate(&mut fleet, interrupted)
    };
    if result.is_err() && !interrupted.load(Ordering::SeqCst) {
        fleet.lab.keep_logs();
        let logs = fleet.lab.log_dir().display().to_string();
        return result.with_context(|| format!("logs kept in {logs}"));
    }
    result
}

fn demonstrate(fleet: &mut FleetLab, interrupted: &AtomicBool) -> anyhow::Result<()> {
    let check = |step: &str| -> anyhow::Result<()> {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted (Ctrl-C or SIGTERM) during {step}");
        }
        Ok(())
    };
    let client_ip = LanSpec::PRIMARY.ipv4(CLIENT_OCTET);
    let prefix = fleet.lab.prefix().as_str().to_owned();
    println!("     coord   198.51.100.1    hav-coordinator (mTLS gRPC :7400), havctl runs here");
    for (name, octet) in NODES {
        println!(
            "     {name:<7} 198.51.100.{octet:<4} hav-agent + an HTTP server on :{HTTP_PORT} (the \"proxy\")"
        );
    }
    println!(
        "     client  {client_ip}   probes the VIP over HTTP; runs BIND (DNS) and the trace collector"
    );
    explain(&format!(
        "namespaces are named {prefix}-*; certificates made with `havctl certs`"
    ));
    let dns = DnsServer::start(&fleet.lab, CLIENT_HOST, IpAddr::V4(client_ip))
        .doing("starting BIND (named) in the client namespace")?;
    explain(&format!(
        "BIND serves zone {} on {}; the coordinator may update it (TSIG key)",
        hav_tests::dns::ZONE,
        dns.address
    ));
    let otlp = SocketAddr::new(IpAddr::V4(client_ip), OTLP_PORT);
    let mut collector = collector_in(fleet, otlp)?;
    explain(&format!(
        "an OTLP/gRPC trace collector listens on {otlp} (inside this program)"
    ));
    let mut proxies: BTreeMap<&str, NsProcess> = BTreeMap::new();
    for (name, _) in NODES {
        let httpd = hav_tests::agent::start_httpd(&fleet.lab, name)
            .with_context(|| format!("starting the HTTP server on {name}"))?;
        proxies.insert(name, httpd);
    }
    check("set-up")?;

    banner("2. Start the coordinator and four agents that know nothing yet");
    fleet.coordinator_args = vec![
        "--otlp-endpoint".into(),
        format!("http://{otlp}"),
        "--dns-server".into(),
        dns.address.to_string(),
        "--dns-zone".into(),
        hav_tests::dns::ZONE.into(),
        "--dns-key".into(),
        dns.key_file.display().to_string(),
        "--dns-ttl".into(),
        "5".into(),
    ];
    fleet.agent_extra = format!("[telemetry]\notlp_endpoint = \"http://{otlp}\"\n");
    fleet
        .start_coordinator()
        .doing("starting hav-coordinator")?;
    for (name, _) in NODES {
        fleet
            .start_agent(name)
            .doing(&format!("starting hav-agent on {name}"))?;
    }
    for (name, _) in NODES {
        fleet
            .wait_link_up(name, 1)
            .doing(&format!("{name} connecting to the coordinator"))?;
    }
    explain("each agent's local file has only [node], [coordinator] (address + its certificate)");
    explain("and [telemetry]; all four are connected to the coordinator over mTLS:");
    havctl_show(fleet, &["status"])?;
    check("start-up")?;

    banner("3. Push the fleet config: two pairs, four VIPs, two DNS names");
    let fleet_text = fleet_config(fleet);
    let path = fleet
        .write("fleet.toml", &fleet_text)
        .doing("writing fleet.toml")?;
    explain("fleet.toml is intent; the coordinator expands it into one node config per node:");
    for line in fleet_text.lines().filter(|l| !l.is_empty()) {
        println!("     │ {line}");
    }
    explain(
        "$ havctl push-config --fleet fleet.toml   (validated as a whole, then one node at a time)",
    );
    let out = fleet
        .havctl(&["push-config", "--fleet", &path, "--comment", "lab bring-up"])
        .doing("havctl push-config")?;
    // The per-node diffs (lines of `+`/`-`) are long; the status below shows their effect.
    indent(
        &out.stdout
            .lines()
            .filter(|line| !line.trim_start().starts_with(['+', '-']))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    explain("(havctl also printed each node's expanded config as a diff, left out here)");
    if !out.success() {
        bail!("push-config failed: {}", out.stderr);
    }
    for (host, vip) in [
        ("web1", "198.51.100.100"),
        ("web2", "198.51.100.101"),
        ("api1", "198.51.100.110"),
        ("api2", "198.51.100.111"),
    ] {
        let vip: IpAddr = vip.parse().context("a literal address")?;
        fleet
            .wait_vip(host, vip, true)
            .doing(&format!("{host} taking {vip}"))?;
    }
    check("push")?;

    banner("4. Status: who is master of what, and what the DNS says");
    explain(
        "$ havctl status   (each VIP has its own VRRP instance; each node masters one per pair)",
    );
    // The first node configured may hold both VIPs of its pair until its peer preempts.
    for (host, peer, vip) in [
        ("web1", "web2", "198.51.100.100"),
        ("web2", "web1", "198.51.100.101"),
        ("api1", "api2", "198.51.100.110"),
        ("api2", "api1", "198.51.100.111"),
    ] {
        let vip: IpAddr = vip.parse().context("a literal address")?;
        fleet
            .wait_vip(peer, vip, false)
            .doing(&format!("{peer} releasing {vip} to {host}"))?;
    }
    wait_status_settled(fleet, &BALANCED)?;
    havctl_show(fleet, &["status"])?;
    explain("$ havctl dns show   (the coordinator publishes the VIPs held, by RFC 2136 updates)");
    wait_dns(fleet, &dns, "web.example.test", 2)?;
    wait_dns(fleet, &dns, "api.example.test", 2)?;
    havctl_show(fleet, &["dns", "show"])?;
    for name in ["web.example.test", "api.example.test"] {
        let answers = dns.dig(&fleet.lab, CLIENT_HOST, name, "A").doing("dig")?;
        println!(
            "   $ dig +short {name}   (from the client)  →  {}",
            answers.join(" ")
        );
    }
    check("status")?;

    let target = SocketAddr::new(IpAddr::V4(PROBED_VIP), HTTP_PORT);
    let prober = Prober::start(
        fleet.lab.host(CLIENT_HOST).context("client host")?,
        ProbeConfig::new(target),
    )?;
    prober
        .wait_for_reply("web1", Instant::now(), SETTLE)
        .context("the client never reached web1 through the VIP")?;
    explain(&format!(
        "the client now sends GET http://{target}/ every 5 ms; web1 answers"
    ));
    let mut results: Vec<Measured> = Vec::new();

    banner("5. Kill a master: web1 drops off the network (as if it lost power)");
    explain("web1's link is cut: it loses carrier and stops (Fault); web2 hears no advert for");
    explain("3 × 100 ms (+ skew) and takes 198.51.100.100");
    let (fault, fault_wall) = (Instant::now(), SystemTime::now());
    let iface = fleet.nodes["web1"].1.clone();
    fleet.lab.set_link("web1", &iface, LinkEnd::Switch, false)?;
    fleet
        .wait_vip("web2", IpAddr::V4(PROBED_VIP), true)
        .doing("web2 taking the VIP")?;
    results.push(wait_report(
        &prober,
        fault,
        "master killed (link cut)",
        "web2",
    )?);
    explain("the failover trace web2 exported (offsets from the first span; durations right):");
    print_trace(&mut collector, "web2", "vrrp.failover", fault_wall, None)?;
    let answers = dns
        .dig(&fleet.lab, CLIENT_HOST, "web.example.test", "A")
        .doing("dig")?;
    println!(
        "   $ dig +short web.example.test  →  {}   (web2 holds both VIPs: the name stays whole)",
        answers.join(" ")
    );
    check("master kill")?;

    banner("6. web1 comes back and takes its VIP again (preemption)");
    explain("the link returns: web1 leaves Fault, hears web2 at a lower priority (140 < 150) and");
    explain("preempts it; web2 resigns when it hears web1's advert");
    let (fault, fault_wall) = (Instant::now(), SystemTime::now());
    fleet.lab.set_link("web1", &iface, LinkEnd::Switch, true)?;
    fleet
        .wait_vip("web2", IpAddr::V4(PROBED_VIP), false)
        .doing("web2 releasing the VIP")?;
    results.push(wait_report(
        &prober,
        fault,
        "master back (failback)",
        "web1",
    )?);
    explain("the handover's trace: web1's takeover (preempt) and web2's resignation:");
    print_trace(
        &mut collector,
        "web1",
        "vrrp.failover",
        fault_wall,
        Some("vrrp.resign"),
    )?;
    // The drain below is planned from the coordinator's view: wait until it has web1 back.
    wait_status_settled(fleet, &BALANCED)?;
    check("failback")?;

    banner("7. Drain web1 for maintenance (make-before-break)");
    explain("$ havctl drain web1   (web2 takes web1's VIPs first, then web1 lets them go)");
    let (fault, fault_wall) = (Instant::now(), SystemTime::now());
    let out = fleet
        .havctl(&["drain", "web1", "--reason", "lab: kernel update"])
        .doing("havctl drain")?;
    indent(&out.stdout);
    if !out.success() {
        bail!("drain failed: {}{}", out.stdout, out.stderr);
    }
    fleet
        .wait_vip("web1", IpAddr::V4(PROBED_VIP), false)
        .doing("web1 releasing the VIP")?;
    results.push(wait_report(&prober, fault, "drain web1 (planned)", "web2")?);
    explain("both sides of the handover in one trace: web2's takeover and web1's resignation:");
    print_trace(
        &mut collector,
        "web2",
        "vrrp.failover",
        fault_wall,
        Some("vrrp.resign"),
    )?;
    let drained = [
        BALANCED[1],
        ("web2", BALANCED[0].1),
        BALANCED[2],
        BALANCED[3],
    ];
    wait_status_settled(fleet, &drained)?;
    havctl_show(fleet, &["status"])?;
    explain(
        "web1 is drained (priority 1 everywhere); web2 holds both web VIPs at its takeover priority",
    );
    check("drain")?;

    banner("8. Undrain web1: it takes its share back");
    explain("$ havctl undrain web1");
    let fault = Instant::now();
    let out = fleet.havctl(&["undrain", "web1"]).doing("havctl undrain")?;
    indent(&out.stdout);
    if !out.success() {
        bail!("undrain failed: {}{}", out.stdout, out.stderr);
    }
    fleet
        .wait_vip("web1", IpAddr::V4(PROBED_VIP), true)
        .doing("web1 taking its VIP back")?;
    results.push(wait_report(&prober, fault, "undrain web1", "web1")?);

    banner("What the client saw");
    println!(
        "   {:<28} {:>14} {:>14} {:>14}",
        "event", "client outage", "failed probes", "new holder at"
    );
    for Measured {
        event,
        report,
        silence,
    } in &results
    {
        let switch = report
            .outage
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_else(|| "never".into());
        println!(
            "   {event:<28} {:>14} {:>14} {switch:>14}",
            format!("{} ms", silence.as_millis()),
            report.failed_probes
        );
    }
    explain("client outage: the longest time without any answer (probing every 5 ms, so ~5 ms");
    explain("means none was missed); new holder at: when the node that took over first answered");
    drop(prober);
    drop(proxies);
    Ok(())
}

/// Two groups on one LAN: web (web1, web2) and api (api1, api2), two VIPs each, one DNS name
/// each, adverts every 100 ms.
fn fleet_config(fleet: &FleetLab) -> String {
    let iface = &fleet.nodes["web1"].1;
    let mut text = String::from(
        "# Two proxy pairs. VIP i of a group is mastered by node i (priority 150, peer 140).\n",
    );
    for (group, vips, vrid, nodes) in [
        (
            "web",
            ["198.51.100.100", "198.51.100.101"],
            10,
            ["web1", "web2"],
        ),
        (
            "api",
            ["198.51.100.110", "198.51.100.111"],
            20,
            ["api1", "api2"],
        ),
    ] {
        text.push_str(&format!(
            "[[group]]\nname = \"{group}\"\ninterface = \"{iface}\"\n\
             vips = [\"{}/24\", \"{}/24\"]\nfirst_vrid = {vrid}\n\
             dns_name = \"{group}.example.test\"\nadvert_interval = \"100ms\"\n\
             connection_drain = \"30s\"\n",
            vips[0], vips[1]
        ));
        for node in nodes {
            let octet = fleet.nodes[node].0;
            text.push_str(&format!(
                "[[group.node]]\nname = \"{node}\"\naddress = \"{}\"\n",
                LanSpec::PRIMARY.ipv4(octet)
            ));
        }
        text.push('\n');
    }
    text
}

/// A collector bound inside the client's namespace, so the agents reach it over the LAN.
fn collector_in(fleet: &FleetLab, address: SocketAddr) -> anyhow::Result<Collector> {
    let listener = fleet
        .lab
        .host(CLIENT_HOST)?
        .in_thread(move || Ok(std::net::TcpListener::bind(address)))?
        .join()
        .map_err(|_| anyhow!("the collector's bind thread panicked"))??
        .with_context(|| format!("binding the collector on {address}"))?;
    Ok(Collector::serve(listener))
}

/// Runs havctl (as an operator) in the coordinator's namespace and prints its output indented.
fn havctl_show(fleet: &FleetLab, args: &[&str]) -> anyhow::Result<()> {
    let out = fleet.havctl(args).doing("havctl")?;
    if !out.success() {
        bail!("havctl {}: {}{}", args.join(" "), out.stdout, out.stderr);
    }
    indent(&out.stdout);
    Ok(())
}

/// The balanced layout: VIP i of a pair on node i.
const BALANCED: [(&str, &str); 4] = [
    ("web1", "198.51.100.100/24"),
    ("web2", "198.51.100.101/24"),
    ("api1", "198.51.100.110/24"),
    ("api2", "198.51.100.111/24"),
];

/// Waits until the coordinator's view shows every node connected and exactly `layout`: each VIP
/// held by one master, on the node named. Agents publish their state asynchronously, and a
/// drain is planned from this view, so it must be current before one.
fn wait_status_settled(fleet: &FleetLab, layout: &[(&str, &str)]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let status = fleet.status().doing("havctl status")?;
        let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut connected = true;
        for node in status.as_array().into_iter().flatten() {
            let name = node["name"].as_str().unwrap_or_default().to_owned();
            connected &= node["connected"].as_bool() == Some(true);
            for instance in node["instances"].as_array().into_iter().flatten() {
                if instance["state"].as_str() == Some("master") {
                    for vip in instance["vips_held"].as_array().into_iter().flatten() {
                        let vip = vip.as_str().unwrap_or_default().to_owned();
                        held.entry(vip).or_default().push(name.clone());
                    }
                }
            }
        }
        let settled = connected
            && held.len() == layout.len()
            && layout
                .iter()
                .all(|(node, vip)| held.get(*vip).is_some_and(|on| on == &[node.to_string()]));
        if settled {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the coordinator never saw the layout {layout:?}; it sees {held:?}");
        }
        // The status is polled: the coordinator offers a viewer no wait for "settled".
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `dig name` from the client answers `count` addresses.
fn wait_dns(fleet: &FleetLab, dns: &DnsServer, name: &str, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let answers = dns.dig(&fleet.lab, CLIENT_HOST, name, "A").doing("dig")?;
        if answers.len() >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the DNS never listed {count} addresses for {name}: {answers:?}");
        }
        // The DNS server has no change notification to await; poll it.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `new_holder` answers the client, prints what the client saw since `fault` and
/// returns it as the row `event` of the final table.
fn wait_report(
    prober: &Prober,
    fault: Instant,
    event: &'static str,
    new_holder: &str,
) -> anyhow::Result<Measured> {
    prober
        .wait_for_reply(new_holder, fault, SETTLE)
        .with_context(|| format!("the client never reached {new_holder}"))?;
    let samples = prober.samples();
    let report = probe::analyse(&samples, fault, new_holder);
    let silence = longest_silence(&samples, fault, report.outage);
    println!(
        "   ⇒ client: answers from {new_holder} {} ms after the event; longest time without any \
         answer {} ms; {} failed probe(s)",
        report.outage.map_or(0, |d| d.as_millis()),
        silence.as_millis(),
        report.failed_probes
    );
    Ok(Measured {
        event,
        report,
        silence,
    })
}

/// The longest time the client went without a successful answer (from any node) between its
/// last answer before `fault` and the new holder's first answer: the outage a user felt.
fn longest_silence(
    samples: &[probe::Sample],
    fault: Instant,
    switch: Option<Duration>,
) -> Duration {
    let Some(end) = switch.map(|d| fault + d) else {
        return Duration::ZERO;
    };
    let mut answers: Vec<Instant> = samples
        .iter()
        .filter(|s| s.outcome.is_ok() && s.done <= end)
        .map(|s| s.done)
        .collect();
    answers.sort();
    let start = answers.iter().rposition(|done| *done < fault).unwrap_or(0);
    answers[start..]
        .windows(2)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default()
}

/// Waits for `host`'s root span `root_name` (`vrrp.failover` or `vrrp.resign`) of the probed VIP
/// that ended after `since` and, if `other_side` names the peer's root, for that one too; then
/// prints every span of the trace (both nodes' sides) as a tree.
fn print_trace(
    collector: &mut Collector,
    host: &str,
    root_name: &str,
    since: SystemTime,
    other_side: Option<&str>,
) -> anyhow::Result<()> {
    let since_ns = u64::try_from(
        since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(0);
    let Some(root) = collector.try_wait_for(SETTLE, |s| {
        s.host == host
            && s.span.name == root_name
            && s.span.end_time_unix_nano >= since_ns
            && matches!(
                s.attribute("vrrp.vrid"),
                Some(AnyValue::IntValue(PROBED_VRID))
            )
    }) else {
        println!("     (no trace arrived within {} s)", SETTLE.as_secs());
        return Ok(());
    };
    let trace_id = root.span.trace_id.clone();
    // A takeover's announce span closes last; wait for it so the tree is whole.
    if root_name == "vrrp.failover" {
        let _ = collector.try_wait_for(Duration::from_secs(2), |s| {
            s.span.trace_id == trace_id
                && s.span.name == "announce"
                && s.span.end_time_unix_nano >= since_ns
        });
    }
    if let Some(other) = other_side {
        let _ = collector.try_wait_for(Duration::from_secs(3), |s| {
            s.span.trace_id == trace_id
                && s.span.name == other
                && s.span.end_time_unix_nano >= since_ns
        });
    }
    collector.collect_pending();
    let spans: Vec<&Exported> = collector
        .seen()
        .iter()
        // Only this event's spans.
        .filter(|s| s.span.trace_id == trace_id && s.span.end_time_unix_nano >= since_ns)
        .collect();
    let origin = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let ids: Vec<&[u8]> = spans.iter().map(|s| s.span.span_id.as_slice()).collect();
    let mut roots: Vec<&Exported> = spans
        .iter()
        .copied()
        .filter(|s| !ids.contains(&s.span.parent_span_id.as_slice()))
        .collect();
    roots.sort_by_key(|s| s.span.start_time_unix_nano);
    println!(
        "     trace {}",
        root.span
            .trace_id
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    for span in roots {
        print_span(&spans, span, origin, 0);
    }
    Ok(())
}

fn print_span(spans: &[&Exported], span: &Exported, origin: u64, depth: usize) {
    let offset = span.span.start_time_unix_nano.saturating_sub(origin) as f64 / 1e6;
    let duration = span.duration().as_secs_f64() * 1e3;
    let mut notes = Vec::new();
    if depth == 0 {
        notes.push(format!("on {}", span.host));
    }
    for key in ["vrrp.cause", "hav.vips", "hav.announce.kind"] {
        if let Some(AnyValue::StringValue(value)) = span.attribute(key) {
            notes.push(format!("{}={value}", key.rsplit('.').next().unwrap_or(key)));
        }
    }
    let name = format!("{}{}", "  ".repeat(depth), span.span.name);
    let line = format!(
        "     +{offset:>7.1} ms  {name:<22} {duration:>8.1} ms  {}",
        notes.join(" ")
    );
    println!("{}", line.trim_end());
    let mut children: Vec<&&Exported> = spans.iter().filter(|s| s.is_child_of(span)).collect();
    children.sort_by_key(|s| s.span.start_time_unix_nano);
    for child in children {
        print_span(spans, child, origin, depth + 1);
    }
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("     {line}");
    }
}

fn explain(text: &str) {
    println!("   {text}");
}

fn banner(title: &str) {
    println!(
        "\n── {title} {}",
        "─".repeat(90usize.saturating_sub(title.chars().count()))
    );
}
