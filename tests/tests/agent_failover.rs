//! Failover between two real hav-agent processes on a bridged LAN, seen from a client: link cut,
//! crash (SIGKILL) and restart with and without preemption, graceful stop (SIGTERM), failback
//! with preempt / nopreempt / preempt_delay. Every test asserts who holds the VIP and that the
//! client reaches that node through it. v3, 100 ms adverts: a backup of priority 100 takes over
//! after its master-down interval of 361 ms. Needs root; run with `cargo nextest run -p hav-tests`.

mod common;

use std::time::{Duration, Instant};

use common::{
    WAIT, assert_vip_absent, assert_vip_stays_away, counter, figure, start_duo, takeover, vip4,
};
use hav_tests::netns::Presence;

#[test]
fn master_link_cut_moves_the_vip_and_heals_back_to_the_better_node() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let (vip, a_iface) = (duo.vip, duo.pair.a.iface.clone());
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.lab().link_down("a", &a_iface).expect("cut a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure("link cut a -> b", &moved);
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    assert_eq!(moved.client.before.as_deref(), Some("a"));

    // The link comes back: two masters hear each other; the lower one (b) yields.
    let prober = duo.prober_on("b");
    let heal = Instant::now();
    duo.lab().link_up("a", &a_iface).expect("restore a");
    duo.lab()
        .wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b releases the VIP");
    duo.b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    let a = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a["state"], "Master", "{a}");
    let back = takeover(duo.lab(), prober, vip, heal, "a");
    figure("link restored, b -> a", &back);
    // a announces the VIP again when it hears b as a second master; without that the client
    // keeps b's MAC until its ARP entry goes stale (seconds).
    let outage = back.client.outage.expect("a answered");
    assert!(
        outage < Duration::from_secs(1),
        "client outage after the heal: {outage:?}"
    );
}

#[test]
fn master_crash_backup_takes_over_restart_cleans_and_preempts() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.a.kill().expect("SIGKILL a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure("SIGKILL a -> b", &moved);
    // A crashed agent cannot remove its VIP: it is still on a.
    assert!(
        duo.lab()
            .addresses("a", &duo.pair.a.iface)
            .expect("list")
            .contains(&vip),
        "the killed agent's VIP vanished by itself"
    );

    // Restart: the journal removes the stale VIP before anything else; with preemption the
    // better node then takes the VIP back.
    let prober = duo.prober_on("b");
    let restart = Instant::now();
    duo.a.restart(&duo.pair.lab).expect("restart a");
    duo.a
        .wait_log("removed VIPs a previous run left behind", WAIT)
        .expect("a cleans its stale VIP at start");
    duo.a
        .wait_state("VI_1", "Master", WAIT)
        .expect("a master again");
    duo.lab()
        .wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b releases");
    duo.b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
    let back = takeover(duo.lab(), prober, vip, restart, "a");
    figure("restart a with preempt, b -> a", &back);
}

#[test]
fn master_crash_restart_without_preempt_does_not_steal_back() {
    let mut duo = start_duo(vip4, |_, _, config| {
        config.instances[0].preempt = false;
    });
    let vip = duo.vip;
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.a.kill().expect("SIGKILL a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure("SIGKILL a -> b (nopreempt)", &moved);

    let prober = duo.prober_on("b");
    duo.a.restart(&duo.pair.lab).expect("restart a");
    duo.a
        .wait_log("removed VIPs a previous run left behind", WAIT)
        .expect("a cleans its stale VIP at start");
    let a = duo.a.wait_state("VI_1", "Backup", WAIT).expect("a backup");
    assert_vip_absent(duo.lab(), "a", &duo.pair.a.iface, vip);
    // Three master-down intervals of a's: long enough to take over if it were going to.
    let master_down = duo.a_config.instances[0].master_down_interval(150);
    assert_vip_stays_away(duo.lab(), "a", vip, master_down * 3);
    let a_later = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a_later["state"], "Backup", "{a_later}");
    assert!(
        counter(&a_later, "rcvd_advertisements") > counter(&a, "rcvd_advertisements"),
        "a heard b's adverts meanwhile: {a} then {a_later}"
    );
    let b = duo.b.instance("VI_1").expect("b status");
    assert_eq!(b["state"], "Master", "{b}");
    let samples = prober.stop();
    assert!(
        samples.iter().filter_map(|s| s.node()).all(|n| n == "b"),
        "only b answers while a (nopreempt) is back"
    );
    assert!(samples.iter().any(|s| s.node() == Some("b")));
}

#[test]
fn master_sigterm_hands_over_before_releasing() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.a.terminate().expect("SIGTERM a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure("SIGTERM a -> b", &moved);
    let exit = duo.a.wait_exit(WAIT).expect("a exits");
    assert_eq!(exit, "exit 0", "{}", duo.a.log());
    assert_vip_absent(duo.lab(), "a", &duo.pair.a.iface, vip);
    let b = duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
    assert!(counter(&b, "rcvd_priority_zero") >= 1, "{b}");
    // Priority 0 makes b take over after its skew time (61 ms), far below the master-down
    // interval (361 ms); the margin absorbs CI jitter.
    assert!(
        moved.vip_moved < Duration::from_millis(300),
        "takeover after SIGTERM took {:?}",
        moved.vip_moved
    );
    // Make-before-break: a keeps the VIP until b is heard; at most a handful of 5 ms probes
    // may fail while the client's ARP entry moves.
    assert!(
        moved.client.failed_probes <= 4,
        "{} probes failed: {:?}",
        moved.client.failed_probes,
        moved.client
    );
}

#[test]
fn failback_with_preempt_after_graceful_stop_and_restart() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    duo.a.terminate().expect("SIGTERM a");
    duo.lab()
        .wait_address("b", vip, Presence::Present, WAIT)
        .expect("b takes over");
    duo.a.wait_exit(WAIT).expect("a exits");

    let prober = duo.prober_on("b");
    let restart = Instant::now();
    duo.a.restart(&duo.pair.lab).expect("restart a");
    let back = takeover(duo.lab(), prober, vip, restart, "a");
    figure("failback with preempt, b -> a", &back);
    duo.lab()
        .wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b releases");
    duo.b.wait_state("VI_1", "Backup", WAIT).expect("b backup");
}

#[test]
fn preempt_delay_holds_the_failback_until_it_has_passed() {
    const DELAY: Duration = Duration::from_millis(1500);
    let mut duo = start_duo(vip4, |_, node, config| {
        if node == "a" {
            config.instances[0].preempt_delay = DELAY;
        }
    });
    let vip = duo.vip;
    duo.a.terminate().expect("SIGTERM a");
    duo.lab()
        .wait_address("b", vip, Presence::Present, WAIT)
        .expect("b takes over");
    duo.a.wait_exit(WAIT).expect("a exits");

    let restart = Instant::now();
    duo.a.restart(&duo.pair.lab).expect("restart a");
    duo.a
        .wait_state("VI_1", "Backup", WAIT)
        .expect("a backup first");
    duo.lab()
        .wait_address("a", vip, Presence::Present, WAIT)
        .expect("a takes the VIP back after the delay");
    let waited = restart.elapsed();
    eprintln!(
        "FIGURE preempt_delay {DELAY:?}: failback {:.1} ms after the restart",
        waited.as_secs_f64() * 1000.0
    );
    // The delay counts from a's start-up, which is after `restart`: never earlier than that.
    assert!(
        waited >= DELAY,
        "failback after {waited:?}, before the delay"
    );
    duo.lab()
        .wait_address("b", vip, Presence::Absent, WAIT)
        .expect("b releases");
    let prober = duo.prober();
    prober
        .wait_for_reply("a", Instant::now(), WAIT)
        .expect("client reaches a");
}

#[test]
fn no_failback_without_preempt_after_graceful_stop_and_restart() {
    let mut duo = start_duo(vip4, |_, _, config| {
        config.instances[0].preempt = false;
    });
    let vip = duo.vip;
    duo.a.terminate().expect("SIGTERM a");
    duo.lab()
        .wait_address("b", vip, Presence::Present, WAIT)
        .expect("b takes over");
    duo.a.wait_exit(WAIT).expect("a exits");

    duo.a.restart(&duo.pair.lab).expect("restart a");
    duo.a.wait_state("VI_1", "Backup", WAIT).expect("a backup");
    let master_down = duo.a_config.instances[0].master_down_interval(150);
    assert_vip_stays_away(duo.lab(), "a", vip, master_down * 3);
    let prober = duo.prober();
    prober
        .wait_for_reply("b", Instant::now(), WAIT)
        .expect("client still reaches b");
    let b = duo.b.instance("VI_1").expect("b status");
    assert_eq!(b["state"], "Master", "{b}");
}

/// How often the thread `pid` (an agent's main thread, which runs its loop) went to sleep.
fn sleeps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).expect("status");
    (status.lines())
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("a count of voluntary switches")
}

/// A backup hearing its settled master sleeps through the repeats: its kernel holds them, and
/// the backup's loop wakes about once per master-down interval (361 ms) instead of at each
/// advert (100 ms), still counting every advert; when the master dies it takes over as before.
#[test]
fn a_backup_sleeps_through_its_masters_repeats_and_still_takes_over() {
    let mut duo = start_duo(vip4, |_, _, _| {});
    let vip = duo.vip;
    let pid = duo.b.pid();
    let before = duo.b.instance("VI_1").expect("b status");
    let (slept, started) = (sleeps(pid), Instant::now());
    // An observation window of idle operation, not a synchronisation.
    std::thread::sleep(Duration::from_secs(3));
    let (woken, elapsed) = (sleeps(pid) - slept, started.elapsed());
    let after = duo.b.instance("VI_1").expect("b status");
    let adverts = counter(&after, "rcvd_advertisements") - counter(&before, "rcvd_advertisements");
    let expected = elapsed.as_millis() / 100;
    eprintln!(
        "FIGURE backup over {elapsed:?}: {adverts} adverts counted, the loop woke {woken} times"
    );
    assert!(
        u128::from(adverts) + 4 >= expected,
        "{adverts} adverts counted in {elapsed:?}: the held ones must count too"
    );
    assert!(
        u128::from(woken) * 2 < expected,
        "the loop woke {woken} times for {expected} adverts: the repeats woke the backup"
    );

    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.a.kill().expect("SIGKILL a");
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure("SIGKILL a -> b, repeats held", &moved);
    // Master-down interval 361 ms, counted from the last advert heard, held or not.
    assert!(
        moved.vip_moved < Duration::from_millis(361 + 250),
        "the VIP moved after {:?}",
        moved.vip_moved
    );
}
