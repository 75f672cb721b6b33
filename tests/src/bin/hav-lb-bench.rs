//! Load-balancer benchmark: in one run, new TCP connections per second and connect latency
//! (p50, p99) from a client through hav's balancer (the VIP, NAT or DR) and straight to one real
//! server (NAT: routed through the same balancer node without translation; DR: on the same LAN),
//! then the time from a real server's death to its removal from rotation against the configured
//! bound `delay_loop + retry × delay_before_retry`.
//!
//! Needs root, iproute2 and nft; builds its own namespaces and removes them. Example:
//! `hav-lb-bench --mode nat --connections 5000 --threads 2 --reps 3`

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hav_tests::lb::{LbLab, Mode, REAL_PORT, tcp_ask};
use hav_tests::netns;

#[derive(Debug, Parser)]
#[command(about = "hav load balancer: connection rate and latency vs direct, removal time")]
struct Args {
    /// `nat` or `dr`.
    #[arg(long, default_value = "nat")]
    mode: String,
    /// Connections per measurement (split over the threads).
    #[arg(long, default_value_t = 4000)]
    connections: usize,
    /// Client threads, each connecting one connection at a time.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Real-server deaths measured.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The check's `delay_loop` in milliseconds.
    #[arg(long, default_value_t = 1000)]
    delay_loop_ms: u64,
    /// The check's `retry`.
    #[arg(long, default_value_t = 1)]
    retry: u32,
    /// The check's `delay_before_retry` in milliseconds.
    #[arg(long, default_value_t = 300)]
    delay_before_retry_ms: u64,
}

/// What one measurement found.
struct Rate {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    netns::sweep_stale().context("removing namespaces a crashed run left")?;
    let mode = match args.mode.as_str() {
        "nat" => Mode::Nat,
        "dr" => Mode::Dr,
        other => anyhow::bail!("--mode {other}: expected nat or dr"),
    };
    let kind = if mode == Mode::Dr {
        "lb_kind = \"dr\""
    } else {
        ""
    };
    let vip = if mode == Mode::Dr {
        "198.51.100.1"
    } else {
        "203.0.113.1"
    };
    let mut services = format!(
        "\n[[virtual_server]]\nname = \"web\"\naddress = \"{vip}\"\nport = 80\nlb_algo = \"rr\"\n{kind}\ndelay_loop = \"{}ms\"\n",
        args.delay_loop_ms
    );
    for index in 0..3 {
        let port = if mode == Mode::Nat {
            format!("port = {REAL_PORT}\n")
        } else {
            String::new()
        };
        services.push_str(&format!(
            "[[virtual_server.real_server]]\naddress = \"{}\"\n{port}[virtual_server.real_server.check]\nkind = \"tcp\"\nconnect_timeout = \"500ms\"\nretry = {}\ndelay_before_retry = \"{}ms\"\n",
            LbLab::server_address(index),
            args.retry,
            args.delay_before_retry_ms
        ));
    }
    let mut lab = LbLab::start(mode, 3, &services).context("starting the lab")?;
    let direct_port = match mode {
        Mode::Nat => {
            // The client reaches the real servers' LAN through the master, as a plain router.
            lab.lab.host("client")?.ip(&[
                "route",
                "add",
                "198.51.100.0/24",
                "via",
                "203.0.113.1",
            ])?;
            REAL_PORT
        }
        Mode::Dr => 80,
    };
    let direct_target = SocketAddr::new(IpAddr::V4(LbLab::server_address(0)), direct_port);
    // Warm both paths (ARP, routes) before measuring.
    measure(&lab, direct_target, 50, 1)?;
    measure(&lab, SocketAddr::new(lab.vip, 80), 50, 1)?;
    let direct = measure(&lab, direct_target, args.connections, args.threads)?;
    let balanced = measure(
        &lab,
        SocketAddr::new(lab.vip, 80),
        args.connections,
        args.threads,
    )?;
    println!(
        "hav load balancer ({}), {} connections, {} client thread(s), connect + request + reply + close",
        args.mode, args.connections, args.threads
    );
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>8}",
        "path", "conn/s", "p50 connect", "p99 connect", "failed"
    );
    for (name, rate) in [
        (format!("direct to {direct_target}"), &direct),
        (format!("through VIP {}:80", lab.vip), &balanced),
    ] {
        println!(
            "{name:<28} {:>12.0} {:>12?} {:>12?} {:>8}",
            rate.per_second, rate.p50, rate.p99, rate.failed
        );
    }
    println!(
        "balancer cost: {:+.1}% conn/s, {:+?} p99 connect",
        (balanced.per_second / direct.per_second - 1.0) * 100.0,
        balanced.p99.saturating_sub(direct.p99)
    );

    let bound = Duration::from_millis(args.delay_loop_ms)
        + Duration::from_millis(args.delay_before_retry_ms) * args.retry;
    println!(
        "\nreal server death to removal (bound delay_loop + retry x delay_before_retry = {bound:?})"
    );
    let mut removals = Vec::new();
    for rep in 0..args.reps {
        let killed = Instant::now();
        lab.kill_server("rs2")?;
        let (removal, _) = lab.settle(80, 30, killed, Duration::from_secs(30));
        println!("  rep {}: {removal:?}", rep + 1);
        removals.push(removal);
        lab.heal_server("rs2")?;
        // Back in rotation before the next death.
        let healed = Instant::now();
        while !lab
            .connect(80, None, 3)?
            .iter()
            .flatten()
            .any(|reply| reply.server == "rs2")
        {
            anyhow::ensure!(
                healed.elapsed() < Duration::from_secs(30),
                "rs2 did not come back"
            );
        }
    }
    removals.sort();
    if let (Some(best), Some(worst)) = (removals.first(), removals.last()) {
        println!(
            "  min {best:?}, max {worst:?}: {}",
            if *worst <= bound {
                "within the bound"
            } else {
                "OVER the bound"
            }
        );
    }
    Ok(())
}

/// `count` connections to `target` from the client over `threads` threads.
fn measure(lab: &LbLab, target: SocketAddr, count: usize, threads: usize) -> anyhow::Result<Rate> {
    let client = lab.lab.host("client")?;
    let per_thread = count.div_ceil(threads.max(1));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..threads.max(1) {
        handles.push(client.in_thread(move || {
            Ok((0..per_thread)
                .map(|_| tcp_ask(target, None))
                .collect::<Vec<_>>())
        })?);
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for handle in handles {
        let replies = handle
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
        for reply in replies {
            match reply {
                Ok(reply) => latencies.push(reply.connect),
                Err(_) => failed += 1,
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Rate {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        failed,
    })
}
