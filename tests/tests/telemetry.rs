//! Telemetry of real `hav-agent` processes in network namespaces: the Prometheus metrics an
//! agent serves as it becomes master and backup, and the failover traces two agents export to
//! an OTLP/gRPC collector running in this test (a link cut, then a graceful stop).
//!
//! Needs root (namespaces) and a built agent: `cargo build -p hav-agent` first.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hav_tests::netns::{NsProcess, Presence, SpawnSpec};
use hav_tests::otlp::{AnyValue, Collector, Exported};
use hav_tests::topology::{Attachment, Lab, LinkEnd, Pair};
use nix::sys::signal::Signal;

/// Safety net for every awaited event.
const WAIT: Duration = Duration::from_secs(10);
const METRICS_PORT: u16 = 9712;
const OTLP_PORT: u16 = 4317;
const INSTANCE: &str = "proxy-vip";

fn agent_binary() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/hav-agent
    let exe = std::env::current_exe().expect("own path");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("hav-agent");
    assert!(
        binary.exists(),
        "{} missing: run `cargo build -p hav-agent` first",
        binary.display()
    );
    binary
}

struct AgentSpec<'a> {
    name: &'a str,
    attachment: &'a Attachment,
    peer: &'a Attachment,
    priority: u8,
    vip: IpAddr,
    otlp: Option<SocketAddr>,
}

fn start_agent(lab: &Lab, spec: &AgentSpec<'_>) -> NsProcess {
    let dir = lab.log_dir().join(spec.name);
    std::fs::create_dir_all(&dir).expect("state dir");
    std::fs::write(dir.join("weight"), "5\n").expect("weight file");
    let otlp = spec
        .otlp
        .map(|address| format!("otlp_endpoint = \"http://{address}\"\n"))
        .unwrap_or_default();
    let config = format!(
        r#"[node]
name = "{name}"
state_dir = "{dir}"

[telemetry]
metrics_listen = "127.0.0.1:{METRICS_PORT}"
{otlp}resource = {{ "deployment.environment" = "test" }}

[[track_file]]
name = "weight"
path = "{dir}/weight"
weight = 1

[[instance]]
name = "{INSTANCE}"
interface = "{iface}"
vrid = 51
priority = {priority}
advert_interval = "100ms"
unicast_peers = ["{peer}"]
vips = ["{vip}/24"]
track_file = ["weight"]
"#,
        name = spec.name,
        dir = dir.display(),
        iface = spec.attachment.iface,
        priority = spec.priority,
        peer = spec.peer.ipv4,
        vip = spec.vip,
    );
    let path = lab.log_dir().join(format!("{}.toml", spec.name));
    std::fs::write(&path, config).expect("config");
    // A log of its own per start.
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    lab.spawn(
        &spec.attachment.host,
        SpawnSpec::new(format!("{}-agent-{start}", spec.name), agent_binary())
            .args(["--config", &path.display().to_string()])
            .env("RUST_LOG", "info"),
    )
    .expect("agent starts")
}

// --- Metrics ------------------------------------------------------------------------------------

/// GET /metrics on the host's loopback, parsed into series → value.
fn scrape(lab: &Lab, host: &str) -> BTreeMap<String, f64> {
    try_scrape(lab, host).expect("scrape")
}

/// [`scrape`], or the error of a connection that failed (an agent not listening yet).
fn try_scrape(lab: &Lab, host: &str) -> std::io::Result<BTreeMap<String, f64>> {
    let (head, body) = get_metrics(lab, host, "")?;
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Ok(parse_exposition(&body))
}

/// GET /metrics with `extra` header lines: the response head and body.
fn get_metrics(lab: &Lab, host: &str, extra: &str) -> std::io::Result<(String, String)> {
    let request = format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
    let response = lab
        .host(host)
        .expect("host")
        .in_thread(move || {
            Ok((|| -> std::io::Result<String> {
                let mut stream = TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
                stream.set_read_timeout(Some(WAIT))?;
                stream.write_all(request.as_bytes())?;
                let mut response = String::new();
                stream.read_to_string(&mut response)?;
                Ok(response)
            })())
        })
        .expect("thread")
        .join()
        .expect("no panic")
        .expect("in namespace")?;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    Ok((head.to_owned(), body.to_owned()))
}

fn parse_exposition(body: &str) -> BTreeMap<String, f64> {
    let mut series = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("`series value`");
        let value = match value {
            "+Inf" => f64::INFINITY,
            value => value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            series.insert(name.to_owned(), value).is_none(),
            "duplicate {name}"
        );
    }
    series
}

fn get(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from:\n{metrics:#?}"))
}

/// Scrapes `host` until `series` satisfies `wanted`. Metrics can only be polled; the interval
/// is short and the deadline is the safety net.
fn await_metric(lab: &Lab, host: &str, series: &str, wanted: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = try_scrape(lab, host);
        if let Ok(metrics) = &metrics
            && metrics.get(series).copied().is_some_and(&wanted)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} on {host} never as wanted:\n{metrics:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(state: &str) -> String {
    format!("hav_vrrp_state{{instance=\"{INSTANCE}\",state=\"{state}\"}}")
}

fn per_instance(name: &str) -> String {
    format!("{name}{{instance=\"{INSTANCE}\"}}")
}

#[test]
fn metrics_follow_an_agent_into_mastership_and_out() {
    let pair = Pair::new().expect("topology");
    let vip = IpAddr::V4(pair.vip4);
    let mut a = start_agent(
        &pair.lab,
        &AgentSpec {
            name: "a",
            attachment: &pair.a,
            peer: &pair.b,
            priority: 150,
            vip,
            otlp: None,
        },
    );
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .unwrap_or_else(|error| panic!("a never took the VIP: {error}\n{}", a.log()));

    // The registry follows the loop's status a moment after the VIP is up.
    await_metric(&pair.lab, "a", &state("master"), |v| v == 1.0);
    let first = scrape(&pair.lab, "a");
    assert_eq!(get(&first, &state("master")), 1.0);
    assert_eq!(get(&first, &state("backup")), 0.0);
    assert_eq!(get(&first, &per_instance("hav_vrrp_priority")), 150.0);
    // The tracked file holds 5, weight 1.
    assert_eq!(
        get(&first, &per_instance("hav_vrrp_effective_priority")),
        155.0
    );
    assert_eq!(
        get(&first, "hav_tracker_status{tracker=\"file:weight\"}"),
        5.0
    );
    assert_eq!(get(&first, &per_instance("hav_vrrp_holds_vips")), 1.0);
    assert_eq!(
        get(
            &first,
            &format!(
                "hav_vrrp_transitions_total{{instance=\"{INSTANCE}\",to=\"backup\",cause=\"startup\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        get(
            &first,
            &format!(
                "hav_vrrp_transitions_total{{instance=\"{INSTANCE}\",to=\"master\",cause=\"master-down\"}}"
            )
        ),
        1.0
    );
    assert_eq!(
        get(&first, &per_instance("hav_vrrp_master_transitions_total")),
        1.0
    );
    // A first election (no master ever heard) is not a failover.
    assert!(
        !first
            .keys()
            .any(|k| k.starts_with("hav_failover_duration_seconds")),
        "{first:#?}"
    );
    assert!(
        get(
            &first,
            "hav_vrrp_router_errors_total{counter=\"checksum_errors\"}"
        ) == 0.0
    );
    assert!(
        first
            .keys()
            .any(|k| k.starts_with("hav_build_info{version=\""))
    );
    assert!(get(&first, "hav_process_start_time_seconds") > 1.7e9);
    let sent = get(&first, &per_instance("hav_vrrp_sent_advertisements_total"));
    assert!(sent >= 1.0, "{sent}");

    // A peer with a higher priority appears: a hears it and steps down.
    let mut b = start_agent(
        &pair.lab,
        &AgentSpec {
            name: "b",
            attachment: &pair.b,
            peer: &pair.a,
            priority: 200,
            vip,
            otlp: None,
        },
    );
    pair.lab
        .wait_address("a", vip, Presence::Absent, WAIT)
        .unwrap_or_else(|error| panic!("a kept the VIP: {error}\n{}\n{}", a.log(), b.log()));
    await_metric(&pair.lab, "a", &state("backup"), |v| v == 1.0);
    let second = scrape(&pair.lab, "a");
    assert_eq!(get(&second, &state("master")), 0.0);
    assert_eq!(get(&second, &state("backup")), 1.0);
    assert_eq!(get(&second, &per_instance("hav_vrrp_holds_vips")), 0.0);
    assert_eq!(
        get(
            &second,
            &format!(
                "hav_vrrp_transitions_total{{instance=\"{INSTANCE}\",to=\"backup\",cause=\"higher-priority\"}}"
            )
        ),
        1.0
    );
    assert!(get(&second, &per_instance("hav_vrrp_rcvd_advertisements_total")) >= 1.0);
    assert!(get(&second, &per_instance("hav_vrrp_sent_advertisements_total")) > sent);
    assert_eq!(
        get(&second, &per_instance("hav_vrrp_address_list_errors_total")),
        0.0
    );
    await_metric(&pair.lab, "b", &state("master"), |v| v == 1.0);
    let b_metrics = scrape(&pair.lab, "b");
    // b replaced a master it heard: a failover, measured from a's last advert that b heard.
    let series = |suffix: &str| {
        format!(
            "hav_failover_duration_seconds_{suffix}{{instance=\"{INSTANCE}\",cause=\"preempt\"}}"
        )
    };
    assert_eq!(get(&b_metrics, &series("count")), 1.0);
    let failover = get(&b_metrics, &series("sum"));
    assert!((0.0..5.0).contains(&failover), "failover took {failover} s");
    println!("preemption: hav_failover_duration_seconds on b = {failover:.3} s");
    assert_eq!(
        get(
            &b_metrics,
            &format!(
                "hav_vrrp_transitions_total{{instance=\"{INSTANCE}\",to=\"master\",cause=\"preempt\"}}"
            )
        ),
        1.0
    );
    b.terminate(WAIT).expect("b stops");
    a.terminate(WAIT).expect("a stops");
}

// --- Traces -------------------------------------------------------------------------------------

/// A collector listening in one namespace of the lab; it stops with the test process.
fn collector_in(lab: &Lab, host: &str, address: SocketAddr) -> Collector {
    // Bound on a thread inside the namespace: the socket stays there.
    let listener = lab
        .host(host)
        .expect("host")
        .in_thread(move || Ok(std::net::TcpListener::bind(address)))
        .expect("thread")
        .join()
        .expect("no panic")
        .expect("in namespace")
        .expect("collector binds");
    Collector::serve(listener)
}

fn links_to(from: &Exported, to: &Exported) -> bool {
    from.span
        .links
        .iter()
        .any(|link| link.trace_id == to.span.trace_id && link.span_id == to.span.span_id)
}

#[test]
fn failover_traces_reach_an_otlp_collector_and_link_both_nodes() {
    let pair = Pair::new().expect("topology");
    let vip = IpAddr::V4(pair.vip4);
    let collector_address = SocketAddr::new(IpAddr::V4(pair.client.ipv4), OTLP_PORT);
    let mut collector = collector_in(&pair.lab, &pair.client.host, collector_address);
    let a_spec = AgentSpec {
        name: "a",
        attachment: &pair.a,
        peer: &pair.b,
        priority: 150,
        vip,
        otlp: Some(collector_address),
    };
    let mut a = start_agent(&pair.lab, &a_spec);
    pair.lab
        .wait_address("a", vip, Presence::Present, WAIT)
        .unwrap_or_else(|error| panic!("a never took the VIP: {error}\n{}", a.log()));
    let mut b = start_agent(
        &pair.lab,
        &AgentSpec {
            name: "b",
            attachment: &pair.b,
            peer: &pair.a,
            priority: 100,
            vip,
            otlp: Some(collector_address),
        },
    );
    await_metric(
        &pair.lab,
        "b",
        &per_instance("hav_vrrp_rcvd_advertisements_total"),
        |v| v >= 3.0,
    );
    let b_metrics = scrape(&pair.lab, "b");
    assert_eq!(
        get(&b_metrics, &state("backup")),
        1.0,
        "b hears a and stays backup"
    );
    // a's own start-up: master-down with no master ever heard.
    let startup = collector.wait_for("a's start-up failover", |s| {
        s.host == "a" && s.span.name == "vrrp.failover"
    });
    assert_eq!(startup.string("vrrp.cause"), "master-down");
    assert_eq!(startup.string("vrrp.old_master"), "0.0.0.0");

    // 1. The master's link is cut: b takes over after the master-down interval.
    pair.lab
        .set_link(&pair.a.host, &pair.a.iface, LinkEnd::Switch, false)
        .expect("cut a");
    pair.lab
        .wait_address("b", vip, Presence::Present, WAIT)
        .unwrap_or_else(|error| panic!("b never took the VIP: {error}\n{}", b.log()));
    let failover = collector.wait_for("b's failover", |s| {
        s.host == "b" && s.span.name == "vrrp.failover" && s.string("vrrp.cause") == "master-down"
    });
    assert_eq!(
        failover.span.parent_span_id,
        Vec::<u8>::new(),
        "a root span"
    );
    assert_eq!(failover.string("hav.node"), "b");
    assert_eq!(failover.string("hav.instance"), INSTANCE);
    assert_eq!(failover.int("vrrp.vrid"), 51);
    assert_eq!(failover.string("vrrp.from_state"), "Backup");
    assert_eq!(failover.string("vrrp.to_state"), "Master");
    assert_eq!(failover.int("vrrp.priority"), 105);
    assert_eq!(failover.string("vrrp.old_master"), pair.a.ipv4.to_string());
    assert_eq!(failover.string("vrrp.new_master"), pair.b.ipv4.to_string());
    match failover.attribute("hav.vips") {
        Some(AnyValue::ArrayValue(array)) => assert_eq!(array.values.len(), 1),
        other => panic!("hav.vips is {other:?}"),
    }
    // Children are exported in the same batch as the root, or just after it.
    let children = {
        let root = failover.clone();
        collector.wait_for("b's announce span", |s| {
            s.span.trace_id == root.span.trace_id && s.span.name == "announce"
        });
        collector.children(&failover)
    };
    let names: Vec<&str> = children.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["announce", "vips.add", "vrrp.detect", "vrrp.election"]
    );
    let detect = &children["vrrp.detect"];
    assert_eq!(detect.string("vrrp.cause"), "master-down");
    assert_eq!(detect.string("vrrp.master"), pair.a.ipv4.to_string());
    let election = &children["vrrp.election"];
    assert_eq!(election.string("vrrp.to_state"), "Master");
    let vips_add = &children["vips.add"];
    let announce = &children["announce"];
    assert_eq!(announce.string("hav.announce.kind"), "garp");
    // Timing: detection (≥ 3 adverts missed) starts the trace; from the timer firing to the
    // first GARP well under a second; the root covers its children.
    let silent = detect.duration();
    assert!(
        silent >= Duration::from_millis(300),
        "detection lasted {silent:?}"
    );
    let to_announce = Duration::from_nanos(
        announce
            .span
            .end_time_unix_nano
            .saturating_sub(detect.span.end_time_unix_nano),
    );
    assert!(
        to_announce < Duration::from_secs(1),
        "detection to announce {to_announce:?}"
    );
    assert!(failover.duration() >= vips_add.duration());
    assert!(failover.span.start_time_unix_nano <= detect.span.start_time_unix_nano);
    assert!(failover.span.end_time_unix_nano >= announce.span.end_time_unix_nano);
    assert!(vips_add.span.start_time_unix_nano >= election.span.start_time_unix_nano);
    // The failover histogram names this trace as its exemplar, when asked for OpenMetrics.
    let (head, body) = get_metrics(
        &pair.lab,
        "b",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .expect("OpenMetrics scrape");
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let trace_hex: String = failover
        .span
        .trace_id
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let exemplar = body
        .lines()
        .find(|line| {
            line.starts_with("hav_failover_duration_seconds_bucket{")
                && line.contains("cause=\"master-down\"")
                && line.contains(" # {trace_id=")
        })
        .unwrap_or_else(|| panic!("no exemplar on the failover histogram:\n{body}"));
    assert!(
        exemplar.contains(&format!("{{trace_id=\"{trace_hex}\"}}")),
        "the exemplar is not b's failover trace {trace_hex}: {exemplar}"
    );
    println!(
        "link cut: detection {silent:?}, detection to announce {to_announce:?}, vips.add {:?}, failover span {:?}",
        vips_add.duration(),
        failover.duration()
    );

    // 2. The link comes back: a (higher priority) preempts; b steps down.
    pair.lab
        .set_link(&pair.a.host, &pair.a.iface, LinkEnd::Switch, true)
        .expect("restore a");
    pair.lab
        .wait_address("b", vip, Presence::Absent, WAIT)
        .unwrap_or_else(|error| panic!("b kept the VIP: {error}\n{}", b.log()));

    // 3. a stops gracefully: priority 0, b takes over at once, a releases when it hears b.
    a.signal(Signal::SIGTERM).expect("SIGTERM");
    pair.lab
        .wait_address("b", vip, Presence::Present, WAIT)
        .unwrap_or_else(|error| panic!("b never took over: {error}\n{}", b.log()));
    let takeover = collector.wait_for("b's takeover after a's resignation", |s| {
        s.host == "b"
            && s.span.name == "vrrp.failover"
            && s.string("vrrp.cause") == "master-resigned"
    });
    let resign = collector.wait_for("a's resignation", |s| {
        s.host == "a" && s.span.name == "vrrp.resign" && s.string("vrrp.cause") == "shutdown"
    });
    assert_eq!(resign.string("vrrp.old_master"), pair.a.ipv4.to_string());
    assert_eq!(
        resign.string("vrrp.new_master"),
        pair.b.ipv4.to_string(),
        "{resign:#?}\n{}",
        a.log()
    );
    assert_eq!(resign.string("vrrp.to_state"), "Initialize");
    assert_eq!(
        resign.string("hav.handover.key"),
        takeover.string("hav.handover.key")
    );
    assert!(
        links_to(&takeover, &resign),
        "b's failover links to a's resign span"
    );
    assert!(
        links_to(&resign, &takeover),
        "a's resign span links to b's failover"
    );
    let same_trace = takeover.span.trace_id == resign.span.trace_id;
    let detect = collector.wait_for("b's detection", |s| {
        s.span.trace_id == takeover.span.trace_id
            && s.span.parent_span_id == takeover.span.span_id
            && s.span.name == "vrrp.detect"
    });
    assert_eq!(detect.string("vrrp.cause"), "master-resigned");
    // Skew time of priority 105 at 100 ms: (256 - 105) / 256 × 100 ms ≈ 59 ms.
    let skew = detect.duration();
    assert!(
        skew < Duration::from_millis(500),
        "priority-0 to election {skew:?}"
    );
    let exit = a.wait_timeout(WAIT).expect("wait").expect("a exits");
    assert!(exit.success(), "a exited with {exit:?}\n{}", a.log());
    println!(
        "graceful stop: same trace id: {same_trace}, detection (skew) {skew:?}, b's failover span {:?}, a's resign span {:?}",
        takeover.duration(),
        resign.duration()
    );

    // 4. The same handover twice within a second: a starts again and takes the VIP back; its
    // tracked weight drops below b's twice, with a preempting back in between. Same VIP, same
    // two nodes, same cause: a trace of its own each time on both nodes, still one trace for
    // both sides.
    let mut a = start_agent(&pair.lab, &a_spec);
    pair.lab
        .wait_address("b", vip, Presence::Absent, WAIT)
        .unwrap_or_else(|error| panic!("b kept the VIP: {error}\n{}", b.log()));
    let weight = pair.lab.log_dir().join("a").join("weight");
    let mut handovers: Vec<(Exported, Exported)> = Vec::new();
    for round in 0..2 {
        std::fs::write(&weight, "-100\n").expect("weight down");
        pair.lab
            .wait_address("b", vip, Presence::Present, WAIT)
            .unwrap_or_else(|error| panic!("b never took over: {error}\n{}", b.log()));
        let seen: Vec<Vec<u8>> = handovers
            .iter()
            .map(|(t, _)| t.span.span_id.clone())
            .collect();
        let taken = collector.wait_for("b's takeover from a resigning", |s| {
            s.host == "b"
                && s.span.name == "vrrp.failover"
                && s.string("vrrp.cause") == "master-resigned"
                && s.span.span_id != takeover.span.span_id
                && !seen.contains(&s.span.span_id)
        });
        let seen: Vec<Vec<u8>> = handovers
            .iter()
            .map(|(_, r)| r.span.span_id.clone())
            .collect();
        let resigned = collector.wait_for("a's resignation", |s| {
            s.host == "a"
                && s.span.name == "vrrp.resign"
                && s.string("vrrp.cause") == "resign"
                && !seen.contains(&s.span.span_id)
        });
        assert!(links_to(&taken, &resigned) && links_to(&resigned, &taken));
        handovers.push((taken, resigned));
        if round == 0 {
            std::fs::write(&weight, "5\n").expect("weight up");
            pair.lab
                .wait_address("b", vip, Presence::Absent, WAIT)
                .unwrap_or_else(|error| panic!("a never took back: {error}\n{}", b.log()));
        }
    }
    let [(first_b, first_a), (second_b, second_a)] = [&handovers[0], &handovers[1]];
    assert_ne!(
        first_b.span.trace_id, second_b.span.trace_id,
        "b: two traces"
    );
    assert_ne!(
        first_a.span.trace_id, second_a.span.trace_id,
        "a: two traces"
    );
    let gap = Duration::from_nanos(
        second_b
            .span
            .start_time_unix_nano
            .saturating_sub(first_b.span.start_time_unix_nano),
    );
    println!(
        "the same handover again {gap:?} later: its own trace on both nodes; one trace for both sides: {} and {}",
        first_b.span.trace_id == first_a.span.trace_id,
        second_b.span.trace_id == second_a.span.trace_id
    );
    a.terminate(WAIT).expect("a stops");
    b.terminate(WAIT).expect("b stops");
}

/// `[telemetry.metrics_tls]` with a client CA: a scraper with a certificate from that CA gets the
/// metrics over HTTPS; one without a certificate, or speaking plain HTTP, gets nothing.
#[test]
fn metrics_over_tls_answer_only_a_scraper_with_a_certificate() {
    let pair = Pair::new().expect("topology");
    let certs = pair.lab.log_dir().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let dir = certs.display().to_string();
    for args in [
        vec!["certs", "init", "--dir", &dir],
        vec![
            "certs",
            "issue",
            "--dir",
            &dir,
            "--kind",
            "coordinator",
            "--name",
            "metrics",
            "--san",
            "127.0.0.1",
        ],
        vec![
            "certs", "issue", "--dir", &dir, "--kind", "operator", "--name", "prom", "--role",
            "viewer",
        ],
    ] {
        hav_tests::fleet::havctl_local(&args).expect("havctl certs");
    }
    let file = |name: &str| certs.join(name).display().to_string();
    let config = format!(
        "[node]\nname = \"a\"\nstate_dir = {state:?}\n\n[telemetry]\nmetrics_listen = \"127.0.0.1:{METRICS_PORT}\"\n\
         metrics_tls = {{ cert = {cert:?}, key = {key:?}, client_ca = {ca:?} }}\n",
        state = pair.lab.log_dir().join("a-state").display().to_string(),
        cert = file("coordinator-metrics.pem"),
        key = file("coordinator-metrics.key"),
        ca = file("ca.pem"),
    );
    let path = pair.lab.log_dir().join("a.toml");
    std::fs::write(&path, config).expect("config");
    let mut agent = pair
        .lab
        .spawn(
            "a",
            SpawnSpec::new("a-agent-tls", agent_binary())
                .args(["--config", &path.display().to_string()])
                .env("RUST_LOG", "info"),
        )
        .expect("agent starts");
    let url = format!("https://127.0.0.1:{METRICS_PORT}/metrics");
    let ca = file("ca.pem");
    let (cert, key) = (file("operator-prom.pem"), file("operator-prom.key"));
    let scrape = |extra: &[&str]| {
        let mut argv = vec!["curl", "-sS", "--max-time", "5", "--cacert", &ca];
        argv.extend_from_slice(extra);
        argv.push(&url);
        pair.lab.exec("a", &argv).expect("curl runs")
    };
    // The agent logs where it serves once it does.
    let deadline = Instant::now() + WAIT;
    while !agent.log().contains("serving metrics on https://") {
        assert!(agent.is_running(), "agent exited: {}", agent.log());
        assert!(
            Instant::now() < deadline,
            "no metrics server: {}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let with_cert = scrape(&["--cert", &cert, "--key", &key]);
    assert!(with_cert.success(), "{}", with_cert.stderr);
    assert!(
        with_cert.stdout.contains("hav_build_info{version="),
        "{}",
        with_cert.stdout
    );
    let without = scrape(&[]);
    assert!(!without.success(), "served without a client certificate");
    let plain = pair
        .lab
        .exec(
            "a",
            &[
                "curl",
                "-sS",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{METRICS_PORT}/metrics"),
            ],
        )
        .expect("curl runs");
    assert!(!plain.success(), "served plain HTTP: {}", plain.stdout);
    agent.kill().expect("stop");
}
