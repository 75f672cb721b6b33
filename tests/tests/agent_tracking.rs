//! Health tracking with real hav-agents: a tracked process killed, a tracked interface down, a
//! check script failing. The master (priority 250) must give up at once, not when the backup
//! (200) stops hearing it: the takeover must come well under the backup's master-down interval
//! (v3, 1 s adverts: 3.22 s; skew time 219 ms). Needs root.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Duo, WAIT, assert_vip_absent, figure, start_duo, takeover, vip4};
use hav_tests::agent::AgentConfig;
use hav_tests::netns::{NsProcess, Presence, SpawnSpec};
use hav_tests::probe::Prober;
use hav_tests::topology::{Lab, Pair};

const ADVERT: Duration = Duration::from_secs(1);

/// The pair with a = 250, b = 200, 1 s adverts; `a_extra` adds tracking to a.
fn tracked_duo(a_extra: impl Fn(&Pair, &mut AgentConfig)) -> Duo {
    start_duo(vip4, |pair, node, config| {
        let instance = &mut config.instances[0];
        instance.advert_interval = ADVERT;
        instance.priority = if node == "a" { 250 } else { 200 };
        if node == "a" {
            a_extra(pair, config);
        }
    })
}

fn master_down(duo: &Duo) -> Duration {
    duo.b_config.instances[0].master_down_interval(200)
}

/// The master gave up through its tracker: the VIP moved well before a silent master would have
/// been noticed, a is in Fault (weight 0) or Backup, and it released the VIP.
fn assert_prompt_resignation(
    duo: &mut Duo,
    prober: Prober,
    fault: Instant,
    label: &str,
    a_state: &str,
) {
    let vip = duo.vip;
    let moved = takeover(duo.lab(), prober, vip, fault, "b");
    figure(label, &moved);
    let limit = master_down(duo) / 2;
    assert!(
        moved.vip_moved < limit,
        "{label}: takeover after {:?}, not well under the master-down interval {:?}",
        moved.vip_moved,
        master_down(duo)
    );
    duo.a.wait_state("VI_1", a_state, WAIT).expect("a gave up");
    duo.lab()
        .wait_address("a", vip, Presence::Absent, WAIT)
        .expect("a released the VIP");
    duo.b.wait_state("VI_1", "Master", WAIT).expect("b master");
}

/// A copy of /bin/sleep with a command name unique to this run, started in `host`.
fn start_worker(lab: &Lab, host: &str, comm: &str) -> NsProcess {
    let path: PathBuf = lab.log_dir().join(comm);
    if !path.exists() {
        std::fs::copy("/bin/sleep", &path).expect("copy /bin/sleep");
    }
    lab.spawn(host, SpawnSpec::new(comm, path).arg("600"))
        .expect("start worker")
}

fn worker_comm(lab: &Lab) -> String {
    format!("wk{}", lab.prefix())
}

#[test]
fn killed_tracked_process_with_weight_zero_faults_the_master_at_once() {
    let worker = std::cell::RefCell::new(None);
    let mut duo = tracked_duo(|pair, config| {
        let name = worker_comm(&pair.lab);
        // Running before a starts, so that a starts healthy.
        *worker.borrow_mut() = Some(start_worker(&pair.lab, "a", &name));
        config.extra =
            format!("[[process]]\nname = \"worker\"\nprocess = \"{name}\"\nweight = 0\n\n");
        config.instances[0].track = vec!["track_process = [\"worker\"]".into()];
    });
    let mut worker = worker.into_inner().expect("worker started");
    let comm = worker_comm(duo.lab());

    let prober = duo.prober_on("a");
    let fault = Instant::now();
    worker.kill().expect("kill the worker");
    assert_prompt_resignation(
        &mut duo,
        prober,
        fault,
        "tracked process killed (weight 0)",
        "Fault",
    );
    let a = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a["effective_priority"], 250, "{a}");

    // The process comes back: a recovers and, preempting, takes the VIP back.
    let _worker = start_worker(duo.lab(), "a", &comm);
    duo.lab()
        .wait_address("a", duo.vip, Presence::Present, WAIT)
        .expect("a takes the VIP back");
    duo.a.wait_state("VI_1", "Master", WAIT).expect("a master");
    duo.prober_on("a");
}

#[test]
fn tracked_process_weight_below_the_peer_resigns_at_once_with_unicast_priorities() {
    let worker = std::cell::RefCell::new(None);
    let configure = |pair: &Pair, node: &str, config: &mut AgentConfig| {
        let instance = &mut config.instances[0];
        instance.advert_interval = ADVERT;
        let (own, peer, peer_priority) = if node == "a" {
            (250, pair.b.ipv4, 200)
        } else {
            (200, pair.a.ipv4, 250)
        };
        instance.priority = own;
        instance.unicast_peers = vec![(IpAddr::V4(peer), Some(peer_priority))];
        if node == "a" {
            let name = worker_comm(&pair.lab);
            *worker.borrow_mut() = Some(start_worker(&pair.lab, "a", &name));
            config.extra = format!("[[process]]\nname = \"worker\"\nprocess = \"{name}\"\n\n");
            config.instances[0].track =
                vec!["track_process = [{ name = \"worker\", weight = -100 }]".into()];
        }
    };
    let mut duo = start_duo(vip4, configure);
    let mut worker = worker.into_inner().expect("worker started");
    let a = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a["effective_priority"], 250, "{a}");

    let prober = duo.prober_on("a");
    let fault = Instant::now();
    worker.kill().expect("kill the worker");
    assert_prompt_resignation(
        &mut duo,
        prober,
        fault,
        "tracked process killed (weight -100, unicast peer priority known)",
        "Backup",
    );
    let a = duo.a.instance("VI_1").expect("a status");
    assert_eq!(a["effective_priority"], 150, "{a}");
}

#[test]
fn tracked_interface_down_faults_the_master_at_once() {
    // A veth pair inside a (no dummy driver in every kernel): a tracks one end; taking the
    // other end down removes its carrier.
    let mut duo = tracked_duo(|pair, config| {
        let link = pair.lab.prefix().name("trk").expect("fits");
        let peer = pair.lab.prefix().name("trp").expect("fits");
        let a = pair.lab.host("a").expect("host a");
        a.ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer])
            .expect("veth pair");
        a.ip(&["link", "set", &link, "up"]).expect("link up");
        a.ip(&["link", "set", &peer, "up"]).expect("peer up");
        config.instances[0].track = vec![format!(
            "track_interface = [{{ name = \"{link}\", weight = 0 }}]"
        )];
    });
    let peer = duo.lab().prefix().name("trp").expect("fits");
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    duo.lab()
        .host("a")
        .expect("host a")
        .ip(&["link", "set", &peer, "down"])
        .expect("carrier off");
    assert_prompt_resignation(&mut duo, prober, fault, "tracked interface down", "Fault");

    duo.lab()
        .host("a")
        .expect("host a")
        .ip(&["link", "set", &peer, "up"])
        .expect("carrier on");
    duo.lab()
        .wait_address("a", duo.vip, Presence::Present, WAIT)
        .expect("a takes the VIP back");
    duo.prober_on("a");
}

#[test]
fn failing_check_script_faults_the_master_at_once() {
    let mut duo = tracked_duo(|pair, config| {
        let flag = pair.lab.log_dir().join("healthy");
        std::fs::create_dir_all(pair.lab.log_dir()).expect("log dir");
        std::fs::write(&flag, "ok").expect("flag file");
        config.extra = format!(
            "[[script]]\nname = \"chk\"\nprogram = \"/usr/bin/test\"\nargs = [\"-e\", \"{}\"]\ninterval = \"100ms\"\nfall = 1\nrise = 1\n\n",
            flag.display()
        );
        config.instances[0].track = vec!["track_script = [\"chk\"]".into()];
    });
    let flag = duo.lab().log_dir().join("healthy");
    let prober = duo.prober_on("a");
    let fault = Instant::now();
    std::fs::remove_file(&flag).expect("remove flag");
    assert_prompt_resignation(&mut duo, prober, fault, "check script failing", "Fault");
    assert_vip_absent(duo.lab(), "a", &duo.pair.a.iface, duo.vip);

    std::fs::write(&flag, "ok").expect("flag file");
    duo.lab()
        .wait_address("a", duo.vip, Presence::Present, WAIT)
        .expect("a takes the VIP back");
    duo.prober_on("a");
}
