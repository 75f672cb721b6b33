//! Golden tests of the state machine, one per RFC branch (holo-style: input events → expected
//! outputs, in virtual time). Outputs are summarised one line per action.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hav_vrrp::engine::{
    Action, ChangedField, Engine, EngineConfig, EngineConfigError, Peer, Peers, Preempt,
    RouterConfig, RouterConfigError, RouterId, State, SyncGroupConfig, TrackEffect,
};
use hav_vrrp::sim::{INTERFACE, node_address, router, vip};
use hav_vrrp::wire::{self, Advertisement, RecvMeta};
use hav_vrrp::{AdvertInterval, Auth, Counter, Family, Priority, Version, VrId};

const V4: Family = Family::V4;

struct Harness {
    engine: Engine,
    epoch: Instant,
    now: Instant,
    config: EngineConfig,
    names: HashMap<RouterId, String>,
}

#[allow(clippy::disallowed_methods)] // The origin of virtual time, read once.
fn epoch() -> Instant {
    Instant::now()
}

impl Harness {
    fn new(config: EngineConfig) -> Self {
        let engine = Engine::new(config.clone()).expect("valid test config");
        let names = engine
            .status()
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect();
        let epoch = epoch();
        Self {
            engine,
            epoch,
            now: epoch,
            config,
            names,
        }
    }

    fn one(config: RouterConfig) -> Self {
        Self::new(EngineConfig {
            routers: vec![config],
            sync_groups: vec![],
        })
    }

    fn ms(&self) -> f64 {
        (self.now - self.epoch).as_secs_f64() * 1000.0
    }

    fn start(&mut self) -> Vec<String> {
        self.engine.start(self.now);
        self.drain()
    }

    /// Jumps to the next wake-up and handles it.
    fn next(&mut self) -> Vec<String> {
        let at = self.engine.poll_timeout().expect("a timer is set");
        self.now = self.now.max(at);
        self.engine.handle_timeout(self.now);
        self.drain()
    }

    /// Advances to `ms` after the epoch, handling every wake-up on the way.
    fn run_to(&mut self, ms: u64) -> Vec<String> {
        let until = self.epoch + Duration::from_millis(ms);
        let mut out = Vec::new();
        while let Some(at) = self.engine.poll_timeout().filter(|at| *at <= until) {
            self.now = self.now.max(at);
            self.engine.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }

    fn recv_from(&mut self, src: IpAddr, advert: Advertisement) -> Vec<String> {
        let dst = hav_vrrp::engine::multicast_address(hav_vrrp::sim::family_of(src));
        let payload = advert.to_bytes(src, dst, Default::default());
        self.recv_raw(src, dst, &payload)
    }

    fn recv_raw(&mut self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<String> {
        let meta = RecvMeta {
            src,
            dst,
            hop_limit: 255,
        };
        self.engine
            .handle_packet(self.now, INTERFACE, &meta, payload);
        self.drain()
    }

    fn recv(&mut self, from_node: u8, priority: u8) -> Vec<String> {
        let router = &self.config.routers[0];
        let advert = advert_like(router, priority);
        self.recv_from(node_address(router.family, from_node), advert)
    }

    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(action) = self.engine.poll_action() {
            out.push(self.summary(&action));
        }
        out
    }

    fn summary(&self, action: &Action) -> String {
        let name = |id: &RouterId| {
            self.names
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_string())
        };
        match action {
            Action::Transmit {
                router,
                dst,
                payload,
            } => {
                let src = self
                    .config
                    .routers
                    .iter()
                    .find(|r| r.name == name(router))
                    .map(|r| r.primary_address);
                let src = src.expect("known router");
                let advert = wire::decode(
                    &RecvMeta {
                        src,
                        dst: *dst,
                        hop_limit: 255,
                    },
                    payload,
                )
                .expect("decodes")
                .advert;
                format!(
                    "{} sends priority {} to {dst}",
                    name(router),
                    advert.priority
                )
            }
            Action::AddVips {
                router,
                vips,
                accept,
            } => format!("{} adds {vips:?} accept={accept}", name(router)),
            Action::RemoveVips {
                router,
                vips,
                successor: None,
            } => format!("{} removes {vips:?}", name(router)),
            Action::RemoveVips {
                router,
                vips,
                successor: Some(successor),
            } => format!("{} hands {vips:?} over to {successor}", name(router)),
            Action::Announce { router, vips } => format!("{} announces {vips:?}", name(router)),
            Action::StateChanged {
                router,
                from,
                to,
                priority,
                cause,
            } => {
                format!(
                    "{}: {from} -> {to} at priority {priority} ({cause})",
                    name(router)
                )
            }
            Action::SyncGroupChanged {
                group,
                from,
                to,
                cause,
            } => format!("group {group}: {from} -> {to} ({cause})"),
            other => format!("{other:?}"),
        }
    }

    fn state(&self, name: &str) -> State {
        self.status(name).state
    }

    fn status(&self, name: &str) -> hav_vrrp::engine::RouterStatus {
        self.engine
            .status()
            .into_iter()
            .find(|s| s.name == name)
            .expect("router exists")
    }

    fn id(&self, name: &str) -> RouterId {
        self.engine.router_id(name).expect("router exists")
    }
}

fn advert_like(router: &RouterConfig, priority: u8) -> Advertisement {
    Advertisement {
        version: router.version,
        vrid: router.vrid,
        priority: Priority(priority),
        interval: router.advert_interval,
        addresses: router.vips.clone(),
        auth: router.auth,
    }
}

/// v3 over IPv4, 1 s interval, our address 198.51.100.10.
fn vr(priority: u8) -> RouterConfig {
    router("vr", 1, Version::V3, V4, 0, priority, 100)
}

fn announces(name: &str, vrid: u8, count: usize) -> Vec<String> {
    vec![format!("{name} announces [{}]", vip(V4, vrid)); count]
}

fn concat(parts: &[&[String]]) -> Vec<String> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

fn s(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

/// A master: started, master-down timer expired.
fn master(config: RouterConfig) -> Harness {
    let mut h = Harness::one(config);
    h.start();
    h.next();
    assert_eq!(h.state("vr"), State::Master);
    h
}

// --- RFC 5798 section 6.4.1: Initialize -----------------------------------------------------

#[test]
fn startup_goes_backup_then_master_after_master_down_interval() {
    let mut h = Harness::one(vr(100));
    assert_eq!(
        h.start(),
        s(&["vr: Initialize -> Backup at priority 100 (startup)"])
    );
    // Master_Down_Interval = 3 × 1 s + (256 − 100) × 1 s / 256 = 3609.375 ms.
    let out = h.next();
    assert_eq!(h.ms(), 3609.375);
    let want = concat(&[
        &s(&[
            "vr: Backup -> Master at priority 100 (master-down timer expired (no advert heard for 3609 ms))",
            "vr adds [203.0.113.1] accept=false",
        ]),
        &announces("vr", 1, 5),
        // Hosts are told before the old master hears us and lets go.
        &s(&["vr sends priority 100 to 224.0.0.18"]),
    ]);
    assert_eq!(out, want);
    assert_eq!(h.next(), s(&["vr sends priority 100 to 224.0.0.18"]));
    assert_eq!(h.ms(), 4609.375);
    let status = h.status("vr");
    assert!(status.holds_vips);
    assert_eq!(status.counters.get(Counter::MasterTransitions), 1);
    assert_eq!(status.counters.get(Counter::SentAdvertisements), 2);
}

#[test]
fn owner_starts_as_master() {
    let mut h = Harness::one(vr(255));
    let want = concat(&[
        &s(&[
            "vr: Initialize -> Master at priority 255 (startup as address owner (priority 255))",
            "vr adds [203.0.113.1] accept=false",
        ]),
        &announces("vr", 1, 5),
        // Hosts are told before the old master hears us and lets go.
        &s(&["vr sends priority 255 to 224.0.0.18"]),
    ]);
    assert_eq!(h.start(), want);
}

#[test]
fn an_adopting_router_starts_as_master_and_a_better_peer_still_takes_over() {
    let mut h = Harness::one(vr(100));
    let id = h.id("vr");
    h.engine.adopt(id);
    let want = concat(&[
        &s(&[
            "vr: Initialize -> Master at priority 100 (startup holding the VIPs found on the interface (adopted))",
            "vr adds [203.0.113.1] accept=false",
        ]),
        &announces("vr", 1, 5),
        &s(&["vr sends priority 100 to 224.0.0.18"]),
    ]);
    assert_eq!(h.start(), want);
    // Adopting is a way to start, not a priority: a better master wins as over any master.
    let out = h.recv(1, 150);
    assert!(
        out.iter().any(|line| line
            == "vr: Master -> Backup at priority 100 (higher priority advert from 198.51.100.11 (priority 150))"),
        "{out:?}"
    );
}

#[test]
fn a_fault_outranks_adopting_and_adopting_after_start_changes_nothing() {
    let mut h = Harness::one(vr(100));
    let id = h.id("vr");
    h.engine.adopt(id);
    h.engine.set_tracker(h.now, id, "squid", TrackEffect::Fault);
    h.drain();
    let out = h.start();
    assert_eq!(h.state("vr"), State::Fault, "{out:?}");
    assert!(!out.iter().any(|line| line.contains(" adds ")), "{out:?}");

    let mut late = Harness::one(vr(100));
    let id = late.id("vr");
    late.start();
    late.engine.adopt(id);
    assert_eq!(late.drain(), Vec::<String>::new());
    assert_eq!(late.state("vr"), State::Backup);
}

// --- RFC 5798 section 6.4.2: Backup ---------------------------------------------------------

#[test]
fn backup_adopts_the_masters_interval_v3() {
    let mut h = Harness::one(vr(100));
    h.start();
    let mut advert = advert_like(&h.config.routers[0], 150);
    advert.interval = AdvertInterval::from_centis(50).expect("valid");
    assert_eq!(
        h.recv_from(node_address(V4, 1), advert),
        Vec::<String>::new()
    );
    // 3 × 500 ms + 156 × 500 ms / 256 = 1804.6875 ms (skew kept in whole microseconds).
    let out = h.next();
    assert_eq!(h.ms(), 1804.687);
    assert_eq!(
        out[0],
        "vr: Backup -> Master at priority 100 (master-down timer expired (no advert from 198.51.100.11 for 1804 ms))"
    );
}

#[test]
fn backup_takes_over_after_skew_time_on_priority_zero() {
    let mut h = Harness::one(vr(100));
    h.start();
    h.recv(1, 150);
    h.now += Duration::from_millis(500);
    assert_eq!(h.recv(1, 0), Vec::<String>::new());
    let out = h.next();
    // Skew_Time = 156 × 1 s / 256 = 609.375 ms.
    assert_eq!(h.ms(), 500.0 + 609.375);
    assert_eq!(
        out[0],
        "vr: Backup -> Master at priority 100 (priority-0 advert from 198.51.100.11: master resigned, skew time passed)"
    );
    assert_eq!(h.status("vr").counters.get(Counter::RcvdPriorityZero), 1);
}

/// Feeds a lower-priority advert every second until `until_ms`; returns when we became master.
fn lower_master_until(h: &mut Harness, until_ms: u64) -> Option<f64> {
    let mut became = None;
    for second in 0..=until_ms / 1000 {
        let out = h.run_to(second * 1000);
        if became.is_none() && out.iter().any(|l| l.contains("-> Master")) {
            let since = h.status("vr").since.expect("started");
            became = Some((since - h.epoch).as_secs_f64() * 1000.0);
        }
        if h.state("vr") == State::Backup {
            h.recv(1, 50);
        }
    }
    became
}

#[test]
fn backup_preempts_a_lower_priority_master() {
    let mut h = Harness::one(vr(100));
    h.start();
    let became = lower_master_until(&mut h, 10_000);
    // The lower master's adverts are discarded, so the master-down timer set at start-up runs out.
    assert_eq!(became, Some(3609.375));
    assert_eq!(
        h.status("vr").last_cause.map(|c| c.to_string()).as_deref(),
        Some("preempt: our priority 100 > master's 50 (198.51.100.11)")
    );
}

#[test]
fn backup_without_preempt_stays_backup() {
    let mut config = vr(100);
    config.preempt = Preempt::Off;
    let mut h = Harness::one(config);
    h.start();
    assert_eq!(lower_master_until(&mut h, 20_000), None);
    assert_eq!(
        h.status("vr").master.map(|m| m.priority),
        Some(Priority(50))
    );
}

#[test]
fn preempt_delay_holds_back_preemption() {
    let mut config = vr(100);
    config.preempt = Preempt::On {
        delay: Duration::from_secs(10),
    };
    let mut h = Harness::one(config);
    h.start();
    let became = lower_master_until(&mut h, 30_000).expect("preempts eventually");
    // Adverts are obeyed until the delay ends at 10 s (the last at 9 s); the master-down
    // interval runs from there.
    assert_eq!(became, 9_000.0 + 3609.375);
}

#[test]
fn owner_preempts_even_with_preempt_off() {
    let mut config = vr(255);
    config.preempt = Preempt::Off;
    let mut h = Harness::one(config);
    h.start();
    h.recv(1, 255);
    // Equal priority from a higher address: the owner yields once, then preempts lower ones.
    assert_eq!(h.state("vr"), State::Backup);
    // 3 s + skew 1/256 s (3906 µs, skew kept in whole microseconds).
    let became = lower_master_until(&mut h, 10_000).map(|ms| (ms * 1000.0).round());
    assert_eq!(became, Some(3_003_906.0));
}

// --- RFC 5798 section 6.4.3: Master ---------------------------------------------------------

#[test]
fn master_yields_to_a_higher_priority() {
    let mut h = master(vr(100));
    // Our advert once more as we step down: a winner that lost the first hears that hosts may
    // have our MAC, and announces its VIPs again.
    assert_eq!(
        h.recv(1, 150),
        s(&[
            "vr sends priority 100 to 224.0.0.18",
            "vr hands [203.0.113.1] over to 198.51.100.11",
            "vr: Master -> Backup at priority 100 (higher priority advert from 198.51.100.11 (priority 150))",
        ])
    );
    // The announce schedule is cancelled: nothing but the master-down timer remains.
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_micros(3_609_375))
    );
}

#[test]
fn master_yields_to_equal_priority_from_a_higher_address() {
    let mut h = master(vr(100));
    assert_eq!(
        h.recv(1, 100),
        s(&[
            "vr sends priority 100 to 224.0.0.18",
            "vr hands [203.0.113.1] over to 198.51.100.11",
            "vr: Master -> Backup at priority 100 (equal priority advert from higher address 198.51.100.11 (priority 100))",
        ])
    );
}

#[test]
fn master_keeps_its_role_against_equal_priority_from_a_lower_address() {
    let mut h = master(router("vr", 1, Version::V3, V4, 2, 100, 100));
    // The other master loses and goes to Backup; we answer and announce again, since it may
    // have pulled clients' ARP caches to itself while it thought it was master.
    let mut expected = vec!["vr sends priority 100 to 224.0.0.18"];
    expected.extend(["vr announces [203.0.113.1]"; 5]);
    assert_eq!(h.recv(1, 100), s(&expected));
    assert_eq!(h.state("vr"), State::Master);
}

#[test]
fn master_answers_a_lower_priority_at_once() {
    let mut h = master(vr(100));
    let mut expected = vec!["vr sends priority 100 to 224.0.0.18"];
    expected.extend(["vr announces [203.0.113.1]"; 5]);
    assert_eq!(h.recv(1, 50), s(&expected));
    assert_eq!(
        h.engine.poll_timeout(),
        Some(h.now + Duration::from_secs(1)).min(h.engine.poll_timeout())
    );
}

#[test]
fn master_announces_again_one_interval_after_hearing_another_master() {
    let mut h = master(vr(100));
    let heard_at = h.ms();
    h.recv(1, 50);
    // The next wake-up sends the advert and the second burst, one interval (1 s) later.
    let mut later = h.next();
    later.sort();
    assert_eq!(h.ms() - heard_at, 1000.0);
    let mut expected = vec!["vr sends priority 100 to 224.0.0.18"];
    expected.extend(["vr announces [203.0.113.1]"; 5]);
    expected.sort();
    assert_eq!(later, s(&expected));
    // Once more past the hosts' neighbour lock time (1.5 s after hearing it), then no more:
    // the interval after that is an advert alone.
    assert_eq!(h.next(), announces("vr", 1, 5));
    assert_eq!(h.ms() - heard_at, 1500.0);
    assert_eq!(h.next(), s(&["vr sends priority 100 to 224.0.0.18"]));
    assert_eq!(h.ms() - heard_at, 2000.0);
}

#[test]
fn at_fast_adverts_the_last_announcement_still_waits_out_the_neighbour_lock_time() {
    let mut config = vr(100);
    config.advert_interval = AdvertInterval::from_centis(10).expect("100 ms");
    config.version = Version::V3;
    let mut h = master(config);
    let heard_at = h.ms();
    h.recv(1, 50);
    // Bursts at once and one interval (100 ms) later, both inside a host's 1 s lock time of the
    // other master's own announcement; the last one comes after it.
    let bursts: Vec<f64> = (0..40)
        .filter_map(|_| {
            let out = h.next();
            out.iter()
                .any(|l| l.contains("announces"))
                .then(|| h.ms() - heard_at)
        })
        .collect();
    assert_eq!(bursts, [100.0, 1500.0]);
}

#[test]
fn master_answers_a_priority_zero_advert() {
    let mut h = master(vr(100));
    assert_eq!(h.recv(1, 0), s(&["vr sends priority 100 to 224.0.0.18"]));
}

// --- Receive checks (RFC 5798 / RFC 3768 section 7.1) ---------------------------------------

#[test]
fn v2_interval_mismatch_is_dropped_and_counted() {
    let mut h = Harness::one(router("vr", 1, Version::V2, V4, 0, 100, 100));
    h.start();
    let mut advert = advert_like(&h.config.routers[0], 0);
    advert.interval = AdvertInterval::from_secs(2).expect("valid");
    h.recv_from(node_address(V4, 1), advert);
    let counters = h.status("vr").counters;
    assert_eq!(counters.get(Counter::AdvIntervalErrors), 1);
    assert_eq!(counters.get(Counter::RcvdAdvertisements), 0);
    // Dropped: the priority 0 did not shorten the master-down timer (3 s + 156/256 s).
    h.next();
    assert_eq!(h.ms(), 3609.375);
}

#[test]
fn v2_authentication_mismatches_are_dropped_and_counted() {
    let mut config = router("vr", 1, Version::V2, V4, 0, 100, 100);
    config.auth = Auth::SimpleText(*b"secret\0\0");
    let mut h = Harness::one(config);
    h.start();
    let mut advert = advert_like(&h.config.routers[0], 150);
    advert.auth = Auth::SimpleText(*b"wrong\0\0\0");
    h.recv_from(node_address(V4, 1), advert.clone());
    advert.auth = Auth::None;
    h.recv_from(node_address(V4, 1), advert.clone());
    advert.auth = Auth::SimpleText(*b"secret\0\0");
    h.recv_from(node_address(V4, 1), advert);
    let counters = h.status("vr").counters;
    assert_eq!(counters.get(Counter::AuthFailures), 1);
    assert_eq!(counters.get(Counter::AuthTypeMismatch), 1);
    assert_eq!(counters.get(Counter::RcvdAdvertisements), 1);
}

#[test]
fn unicast_adverts_from_strangers_are_dropped_and_counted() {
    let mut config = vr(100);
    config.peers = Peers::Unicast(vec![Peer {
        address: node_address(V4, 1),
        priority: None,
    }]);
    let mut h = Harness::one(config);
    h.start();
    h.recv(2, 0);
    h.recv(1, 150);
    let counters = h.status("vr").counters;
    assert_eq!(counters.get(Counter::UnicastSourceNotPeer), 1);
    assert_eq!(counters.get(Counter::RcvdAdvertisements), 1);
    // Unicast: our adverts go to each peer.
    let out = h.run_to(10_000);
    assert!(
        out.contains(&"vr sends priority 100 to 198.51.100.11".to_string()),
        "{out:?}"
    );
}

#[test]
fn address_list_mismatch_is_counted_but_not_fatal() {
    let mut h = master(vr(100));
    let mut advert = advert_like(&h.config.routers[0], 150);
    advert.addresses.push(vip(V4, 99));
    let out = h.recv_from(node_address(V4, 1), advert);
    assert_eq!(h.state("vr"), State::Backup, "{out:?}");
    assert_eq!(h.status("vr").counters.get(Counter::AddressListErrors), 1);
}

#[test]
fn in_strict_mode_an_address_list_mismatch_is_dropped() {
    let mut h = master(RouterConfig {
        strict: true,
        ..vr(100)
    });
    let mut advert = advert_like(&h.config.routers[0], 150);
    advert.addresses.push(vip(V4, 99));
    let out = h.recv_from(node_address(V4, 1), advert);
    assert_eq!(h.state("vr"), State::Master, "{out:?}");
    let counters = h.status("vr").counters;
    assert_eq!(counters.get(Counter::AddressListErrors), 1);
    assert_eq!(counters.get(Counter::RcvdAdvertisements), 0);
    // The same advert with our addresses is heard.
    let advert = advert_like(&h.config.routers[0], 150);
    h.recv_from(node_address(V4, 1), advert);
    assert_eq!(h.state("vr"), State::Backup);
}

#[test]
fn router_wide_errors_and_own_adverts() {
    let mut h = master(vr(100));
    let other_vrid = Advertisement {
        vrid: VrId::new(7).expect("valid"),
        ..advert_like(&h.config.routers[0], 150)
    };
    assert!(h.recv_from(node_address(V4, 1), other_vrid).is_empty());
    let v2 = Advertisement {
        version: Version::V2,
        ..advert_like(&h.config.routers[0], 150)
    };
    assert!(h.recv_from(node_address(V4, 1), v2).is_empty());
    let src = node_address(V4, 1);
    let dst = hav_vrrp::engine::multicast_address(V4);
    let mut corrupt = advert_like(&h.config.routers[0], 150).to_bytes(src, dst, Default::default());
    corrupt[6] ^= 0xff;
    assert!(h.recv_raw(src, dst, &corrupt).is_empty());
    // Our own advert looped back: ignored.
    assert!(h.recv(0, 200).is_empty());
    assert_eq!(h.engine.counters().get(Counter::VrIdErrors), 1);
    assert_eq!(h.engine.counters().get(Counter::VersionErrors), 1);
    assert_eq!(h.engine.counters().get(Counter::ChecksumErrors), 1);
    assert_eq!(h.state("vr"), State::Master);
    assert_eq!(h.status("vr").counters.get(Counter::RcvdAdvertisements), 0);
}

// --- Trackers, Fault, override --------------------------------------------------------------

#[test]
fn tracker_fault_takes_a_master_down_at_once_and_recovery_goes_backup() {
    let mut h = master(vr(100));
    let id = h.id("vr");
    h.engine.set_tracker(h.now, id, "squid", TrackEffect::Fault);
    assert_eq!(
        h.drain(),
        s(&[
            "vr sends priority 0 to 224.0.0.18",
            "vr removes [203.0.113.1]",
            "vr: Master -> Fault at priority 100 (tracker squid failed)",
        ])
    );
    assert_eq!(h.engine.poll_timeout(), None);
    h.engine
        .set_tracker(h.now, id, "squid", TrackEffect::Adjust(0));
    assert_eq!(
        h.drain(),
        s(&["vr: Fault -> Backup at priority 100 (tracker squid recovered: no fault left)"])
    );
}

#[test]
fn tracker_weights_are_clamped_and_do_not_touch_the_owner() {
    let mut h = Harness::new(EngineConfig {
        routers: vec![vr(100), router("owner", 2, Version::V3, V4, 0, 255, 100)],
        sync_groups: vec![],
    });
    h.start();
    let (vr_id, owner_id) = (h.id("vr"), h.id("owner"));
    h.engine
        .set_tracker(h.now, vr_id, "a", TrackEffect::Adjust(-60));
    h.engine
        .set_tracker(h.now, vr_id, "b", TrackEffect::Adjust(-60));
    assert_eq!(h.status("vr").effective_priority, Priority(1));
    h.engine
        .set_tracker(h.now, vr_id, "b", TrackEffect::Adjust(500));
    assert_eq!(h.status("vr").effective_priority, Priority(254));
    h.engine
        .set_tracker(h.now, owner_id, "a", TrackEffect::Adjust(-100));
    assert_eq!(h.status("owner").effective_priority, Priority(255));
    h.engine
        .set_priority_override(h.now, vr_id, Some(Priority(7)));
    assert_eq!(h.status("vr").effective_priority, Priority(7));
    h.engine.set_priority_override(h.now, vr_id, None);
    assert_eq!(h.status("vr").effective_priority, Priority(254));
}

fn unicast_master_with_peer_priority(peer_priority: u8) -> Harness {
    let mut config = vr(150);
    config.peers = Peers::Unicast(vec![Peer {
        address: node_address(V4, 1),
        priority: Some(Priority(peer_priority)),
    }]);
    let mut h = master(config);
    h.drain();
    h
}

#[test]
fn master_below_a_known_peer_resigns_at_once_and_keeps_vips_until_the_peer_advertises() {
    let mut h = unicast_master_with_peer_priority(120);
    let id = h.id("vr");
    h.engine
        .set_tracker(h.now, id, "squid", TrackEffect::Adjust(-50));
    assert_eq!(
        h.drain(),
        s(&[
            "vr sends priority 0 to 198.51.100.11",
            "vr: Master -> Backup at priority 100 (priority 100 fell below peer 198.51.100.11 (120): resigning)",
        ])
    );
    assert!(h.status("vr").holds_vips, "make-before-break");
    h.now += Duration::from_millis(700);
    assert_eq!(
        h.recv(1, 120),
        s(&["vr hands [203.0.113.1] over to 198.51.100.11"])
    );
    assert_eq!(h.state("vr"), State::Backup);
}

#[test]
fn a_resigned_master_whose_peer_stays_silent_takes_back_the_role_without_dropping_vips() {
    let mut h = unicast_master_with_peer_priority(120);
    let id = h.id("vr");
    h.engine
        .set_tracker(h.now, id, "squid", TrackEffect::Adjust(-50));
    h.drain();
    let out = h.run_to(20_000);
    assert!(
        out.iter()
            .all(|l| !l.contains("removes") && !l.contains("adds")),
        "{out:?}"
    );
    assert_eq!(h.state("vr"), State::Master);
    assert!(h.status("vr").holds_vips);
    // No resign loop: the priority did not change again.
    assert_eq!(
        out.iter().filter(|l| l.contains("->")).count(),
        1,
        "{out:?}"
    );
}

#[test]
fn a_master_that_only_drops_below_no_known_peer_stays() {
    let mut h = unicast_master_with_peer_priority(90);
    let id = h.id("vr");
    h.engine
        .set_tracker(h.now, id, "squid", TrackEffect::Adjust(-50));
    assert!(h.drain().is_empty());
    assert_eq!(h.state("vr"), State::Master);
}

// --- Shutdown (make-before-break) -----------------------------------------------------------

#[test]
fn shutdown_keeps_vips_until_a_successor_advertises() {
    let mut h = master(vr(100));
    h.drain();
    h.engine.shutdown(h.now);
    assert_eq!(
        h.drain(),
        s(&[
            "vr sends priority 0 to 224.0.0.18",
            "vr: Master -> Initialize at priority 100 (shutdown)"
        ])
    );
    assert!(!h.engine.is_stopped());
    h.now += Duration::from_millis(600);
    assert_eq!(
        h.recv(1, 90),
        s(&["vr hands [203.0.113.1] over to 198.51.100.11"])
    );
    assert!(h.engine.is_stopped());
    assert_eq!(h.engine.poll_timeout(), None);
}

#[test]
fn shutdown_without_a_successor_releases_after_a_master_down_interval() {
    let mut h = master(vr(100));
    h.drain();
    let start = h.ms();
    h.engine.shutdown(h.now);
    h.drain();
    let mut out = Vec::new();
    while !h.engine.is_stopped() {
        out.extend(h.next());
    }
    // The resignation is repeated each interval until the master-down interval passes.
    assert_eq!(
        out,
        s(&[
            "vr sends priority 0 to 224.0.0.18",
            "vr sends priority 0 to 224.0.0.18",
            "vr sends priority 0 to 224.0.0.18",
            "vr removes [203.0.113.1]",
        ])
    );
    assert_eq!(h.ms() - start, 3609.375);
    assert_eq!(h.status("vr").counters.get(Counter::SentPriorityZero), 4);
}

#[test]
fn shutdown_of_a_backup_is_immediate() {
    let mut h = Harness::one(vr(100));
    h.start();
    h.engine.shutdown(h.now);
    assert_eq!(
        h.drain(),
        s(&["vr: Backup -> Initialize at priority 100 (shutdown)"])
    );
    assert!(h.engine.is_stopped());
}

// --- Announce schedule ----------------------------------------------------------------------

#[test]
fn announce_schedule_runs_while_master_and_stops_on_leaving() {
    let mut config = vr(100);
    config.announce.refresh = Some(Duration::from_secs(60));
    let mut h = master(config);
    let became = h.ms();
    let out = h.run_to(((became + 5000.0) as u64) + 1);
    assert_eq!(
        out.iter().filter(|l| l.contains("announces")).count(),
        5,
        "second burst at +5 s"
    );
    let out = h.run_to(((became + 65_000.0) as u64) + 1);
    assert_eq!(
        out.iter().filter(|l| l.contains("announces")).count(),
        1,
        "refresh at +65 s"
    );
    h.recv(1, 200);
    // Until the master-down interval would make us master again: no announcements.
    let out = h.run_to(((became + 65_000.0 + 3_000.0) as u64) + 1);
    assert!(out.is_empty(), "{out:?}");
}

// --- Sync groups ----------------------------------------------------------------------------

fn group_of_two() -> Harness {
    let a = router("a", 1, Version::V3, V4, 0, 150, 100);
    let b = router("b", 2, Version::V3, V4, 0, 100, 100);
    let group = SyncGroupConfig {
        name: "g".into(),
        members: vec!["a".into(), "b".into()],
    };
    Harness::new(EngineConfig {
        routers: vec![a, b],
        sync_groups: vec![group],
    })
}

#[test]
fn sync_group_members_follow_a_master() {
    let mut h = group_of_two();
    h.start();
    let out = h.next();
    // a's shorter skew fires first; b follows at once.
    assert_eq!(
        out[0],
        "a: Backup -> Master at priority 150 (master-down timer expired (no advert heard for 3414 ms))"
    );
    assert!(
        out.contains(
            &"b: Backup -> Master at priority 100 (sync group g: member a went to Master)"
                .to_string()
        ),
        "{out:?}"
    );
    assert_eq!(
        out.last().map(String::as_str),
        Some("group g: Backup -> Master (sync group g: member a went to Master)")
    );
    assert_eq!(h.state("b"), State::Master);
}

#[test]
fn sync_group_members_follow_a_member_that_loses_mastership() {
    let mut h = group_of_two();
    h.start();
    h.next();
    let a = h.config.routers[0].clone();
    let out = h.recv_from(node_address(V4, 1), advert_like(&a, 200));
    assert_eq!(
        out,
        s(&[
            "a sends priority 150 to 224.0.0.18",
            "a hands [203.0.113.1] over to 198.51.100.11",
            "a: Master -> Backup at priority 150 (higher priority advert from 198.51.100.11 (priority 200))",
            "b sends priority 0 to 224.0.0.18",
            "b: Master -> Backup at priority 100 (sync group g: member a went to Backup)",
            "group g: Master -> Backup (sync group g: member a went to Backup)",
        ])
    );
}

#[test]
fn sync_group_fault_holds_every_member() {
    let mut h = group_of_two();
    h.start();
    h.next();
    let a = h.id("a");
    h.engine.set_tracker(h.now, a, "link", TrackEffect::Fault);
    let out = h.drain();
    assert!(
        out.contains(&"a: Master -> Fault at priority 150 (tracker link failed)".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(
            &"b: Master -> Fault at priority 100 (sync group g: member a went to Fault)"
                .to_string()
        ),
        "{out:?}"
    );
    assert_eq!(h.state("b"), State::Fault);
    h.engine
        .set_tracker(h.now, a, "link", TrackEffect::Adjust(0));
    assert_eq!(
        h.drain(),
        s(&[
            "a: Fault -> Backup at priority 150 (tracker link recovered: no fault left)",
            "b: Fault -> Backup at priority 100 (sync group g: no member is faulty any more)",
            "group g: Fault -> Backup (sync group g: no member is faulty any more)",
        ])
    );
}

// --- Reconfigure ----------------------------------------------------------------------------

#[test]
fn reconfigure_changes_vips_of_a_master_in_place() {
    let mut h = master(vr(100));
    h.drain();
    let mut config = h.config.clone();
    config.routers[0].vips = vec![vip(V4, 2)];
    config.routers[0].priority = Priority(110);
    let report = h.engine.reconfigure(h.now, config).expect("valid");
    assert_eq!(report.changed.len(), 1);
    assert_eq!(
        report.changed[0].fields,
        [ChangedField::Priority, ChangedField::Vips]
    );
    let want = concat(&[
        &s(&[
            "vr removes [203.0.113.1]",
            "vr adds [203.0.113.2] accept=false",
        ]),
        &announces("vr", 2, 5),
    ]);
    assert_eq!(h.drain(), want);
    assert_eq!(h.state("vr"), State::Master);
    assert_eq!(h.status("vr").effective_priority, Priority(110));
}

#[test]
fn reconfigure_replaces_adds_and_removes_routers() {
    let other = router("other", 5, Version::V3, V4, 0, 100, 100);
    let mut h = Harness::new(EngineConfig {
        routers: vec![vr(100), other],
        sync_groups: vec![],
    });
    h.start();
    h.next();
    h.drain();
    let (vr_id, other_id) = (h.id("vr"), h.id("other"));
    let mut moved = vr(100);
    moved.vrid = VrId::new(9).expect("valid");
    let added = router("new", 6, Version::V3, V4, 0, 100, 100);
    let config = EngineConfig {
        routers: vec![moved, added],
        sync_groups: vec![],
    };
    // The harness names transmitters from its config: keep the removed router known.
    h.config.routers.extend(config.routers.iter().cloned());
    let report = h.engine.reconfigure(h.now, config).expect("valid");
    assert_eq!(report.removed, ["other"]);
    assert_eq!(report.added, ["new"]);
    assert_eq!(report.changed[0].fields, [ChangedField::Identity]);
    assert_eq!(
        h.engine.router_id("vr"),
        Some(vr_id),
        "ids are stable by name"
    );
    assert_ne!(h.engine.router_id("new"), Some(other_id));
    h.names
        .extend(h.engine.status().into_iter().map(|s| (s.id, s.name)));
    let out = h.drain();
    assert!(
        out.contains(&"vr removes [203.0.113.1]".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(&"vr: Master -> Initialize at priority 100 (reconfigured)".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(&"vr: Initialize -> Backup at priority 100 (reconfigured)".to_string()),
        "{out:?}"
    );
    assert!(
        out.contains(&"new: Initialize -> Backup at priority 100 (startup)".to_string()),
        "{out:?}"
    );
}

#[test]
fn reconfigure_with_the_same_config_is_silent() {
    let mut h = master(vr(100));
    h.drain();
    let report = h
        .engine
        .reconfigure(h.now, h.config.clone())
        .expect("valid");
    assert!(report.is_empty());
    assert_eq!(report.unchanged, ["vr"]);
    assert!(h.drain().is_empty());
}

// --- Configuration ---------------------------------------------------------------------------

#[test]
fn invalid_configurations_are_rejected_with_the_reason() {
    let check = |config: RouterConfig| {
        Engine::new(EngineConfig {
            routers: vec![config],
            sync_groups: vec![],
        })
        .err()
    };
    let router_error = |reason| {
        Some(EngineConfigError::Router {
            router: "vr".into(),
            reason,
        })
    };
    let mut bad = vr(100);
    bad.priority = Priority(0);
    assert_eq!(check(bad), router_error(RouterConfigError::ZeroPriority));
    let mut bad = router("vr", 1, Version::V2, V4, 0, 100, 100);
    bad.advert_interval = AdvertInterval::from_centis(150).expect("valid");
    assert!(matches!(
        check(bad),
        Some(EngineConfigError::Router {
            reason: RouterConfigError::IntervalDoesNotFit { .. },
            ..
        })
    ));
    let mut bad = vr(100);
    bad.vips.push(vip(Family::V6, 1));
    assert!(matches!(
        check(bad),
        Some(EngineConfigError::Router {
            reason: RouterConfigError::WrongFamily { .. },
            ..
        })
    ));
    let mut bad = vr(100);
    bad.auth = Auth::SimpleText([1; 8]);
    assert_eq!(check(bad), router_error(RouterConfigError::AuthWithV3));
    let twice = EngineConfig {
        routers: vec![vr(100), vr(100)],
        sync_groups: vec![],
    };
    assert!(matches!(
        Engine::new(twice),
        Err(EngineConfigError::DuplicateRouter { .. })
    ));
    let mut other = vr(100);
    other.name = "other".into();
    let same_vrid = EngineConfig {
        routers: vec![vr(100), other],
        sync_groups: vec![],
    };
    assert!(matches!(
        Engine::new(same_vrid),
        Err(EngineConfigError::DuplicateVrid { .. })
    ));
    let group = SyncGroupConfig {
        name: "g".into(),
        members: vec!["nope".into()],
    };
    let unknown = EngineConfig {
        routers: vec![vr(100)],
        sync_groups: vec![group],
    };
    let error = Engine::new(unknown).err().map(|e| e.to_string());
    assert_eq!(
        error.as_deref(),
        Some("sync group \"g\": member \"nope\" is not a configured router")
    );
}

#[test]
fn a_removed_master_hands_over_like_a_shutdown() {
    let other = router("other", 5, Version::V3, V4, 0, 100, 100);
    let mut h = Harness::new(EngineConfig {
        routers: vec![vr(100), other.clone()],
        sync_groups: vec![],
    });
    h.start();
    h.next();
    h.drain();
    let report = h.engine.reconfigure(
        h.now,
        EngineConfig {
            routers: vec![vr(100)],
            sync_groups: vec![],
        },
    );
    assert_eq!(report.expect("valid").removed, ["other"]);
    assert_eq!(
        h.drain(),
        s(&[
            "other sends priority 0 to 224.0.0.18",
            "other: Master -> Initialize at priority 100 (removed from the configuration)",
        ])
    );
    assert_eq!(h.engine.router_id("other"), None);
    assert!(h.engine.holds_any_vips());
    // The successor's advert for VRID 5 ends the hand-over.
    let out = h.recv_from(node_address(V4, 1), advert_like(&other, 100));
    assert_eq!(out, s(&["other hands [203.0.113.5] over to 198.51.100.11"]));
    assert_eq!(h.engine.counters().get(Counter::VrIdErrors), 0);
}

#[test]
fn reconfiguring_a_group_away_releases_its_held_members() {
    let mut h = group_of_two();
    h.start();
    let a = h.id("a");
    h.engine.set_tracker(h.now, a, "link", TrackEffect::Fault);
    h.drain();
    assert_eq!(h.state("b"), State::Fault);
    let mut config = h.config.clone();
    config.sync_groups.clear();
    let report = h.engine.reconfigure(h.now, config).expect("valid");
    assert!(report.sync_groups_changed);
    assert_eq!(
        h.drain(),
        s(&["b: Fault -> Backup at priority 100 (reconfigured)"])
    );
    assert_eq!(h.state("a"), State::Fault);
}

#[test]
fn reconfigure_accept_mode_re_adds_the_held_vips() {
    let mut h = master(vr(100));
    h.drain();
    let mut config = h.config.clone();
    config.routers[0].accept = true;
    config.routers[0].vips.push(vip(V4, 7));
    let report = h.engine.reconfigure(h.now, config).expect("valid");
    assert_eq!(
        report.changed[0].fields,
        [ChangedField::Accept, ChangedField::Vips]
    );
    let want = concat(&[
        &s(&[
            "vr adds [203.0.113.1] accept=true",
            "vr adds [203.0.113.7] accept=true",
        ]),
        &vec![format!("vr announces [{}]", vip(V4, 7)); 5],
    ]);
    assert_eq!(h.drain(), want);
}

#[test]
fn a_vip_removed_while_handing_over_is_released_at_once() {
    let mut h = unicast_master_with_peer_priority(120);
    let id = h.id("vr");
    h.engine
        .set_tracker(h.now, id, "squid", TrackEffect::Adjust(-50));
    h.drain();
    let mut config = h.config.clone();
    config.routers[0].vips = vec![vip(V4, 2)];
    h.engine.reconfigure(h.now, config).expect("valid");
    assert_eq!(h.drain(), s(&["vr removes [203.0.113.1]"]));
    assert!(!h.status("vr").holds_vips);
    // The hand-over then ends without anything left to remove.
    assert!(h.run_to(3_000).iter().all(|l| !l.contains("removes")));
}

#[test]
fn a_member_stays_in_fault_while_another_member_is_faulty() {
    let mut h = group_of_two();
    h.start();
    let (a, b) = (h.id("a"), h.id("b"));
    h.engine.set_tracker(h.now, a, "link", TrackEffect::Fault);
    h.engine.set_tracker(h.now, b, "link", TrackEffect::Fault);
    h.drain();
    h.engine
        .set_tracker(h.now, a, "link", TrackEffect::Adjust(0));
    assert!(h.drain().is_empty(), "a is still held by b's fault");
    assert_eq!(h.state("a"), State::Fault);
    h.engine
        .set_tracker(h.now, b, "link", TrackEffect::Adjust(0));
    let out = h.drain();
    assert_eq!(
        (h.state("a"), h.state("b")),
        (State::Backup, State::Backup),
        "{out:?}"
    );
}

#[test]
fn v3_over_ipv6_advertises_to_ff02_12_and_yields_to_a_higher_address() {
    let mut h = master(router("vr", 1, Version::V3, Family::V6, 0, 100, 100));
    assert_eq!(h.next(), s(&["vr sends priority 100 to ff02::12"]));
    let out = h.recv(1, 100);
    assert_eq!(
        out,
        s(&[
            "vr sends priority 100 to ff02::12",
            "vr hands [2001:db8:ff::1] over to 2001:db8::b",
            "vr: Master -> Backup at priority 100 (equal priority advert from higher address 2001:db8::b (priority 100))",
        ])
    );
}

// --- The engine's revision: observers compare routers only when it moved ----------------------

#[test]
fn the_revision_moves_with_every_change_of_a_brief_and_never_on_a_known_masters_advert() {
    let mut h = Harness::one(vr(100));
    h.start();
    h.recv(2, 150);
    let heard = h.engine.revision();
    let brief = h.engine.briefs().next().expect("one router");
    // The same master again, many times: nothing an observer shows changed.
    for _ in 0..10 {
        h.recv(2, 150);
        assert_eq!(h.engine.revision(), heard);
    }
    assert_eq!(h.engine.briefs().next(), Some(brief));
    // Another priority from the master changes the master known.
    h.recv(2, 160);
    let moved = h.engine.revision();
    assert_ne!(moved, heard);
    // The master falls silent: the takeover changes state and VIPs.
    h.next();
    assert_eq!(h.state("vr"), State::Master);
    assert_ne!(h.engine.revision(), moved);
    // As master, its own advert timer firing changes nothing shown.
    let master = h.engine.revision();
    h.next();
    h.next();
    assert_eq!(h.engine.revision(), master);
}

// --- Repeats the host may hold back ---------------------------------------------------------

#[test]
fn a_masters_advert_is_steady_once_repeated_until_anything_changes() {
    let mut h = Harness::one(vr(100));
    h.start();
    h.recv(1, 200);
    assert_eq!(h.state("vr"), State::Backup);
    assert!(
        h.engine.steady_repeat().is_none(),
        "heard once: not yet known to repeat"
    );
    h.recv(1, 200);
    let steady = h.engine.steady_repeat().expect("a repeat makes it steady");
    assert_eq!(steady.meta.src, node_address(V4, 1));
    assert_eq!(steady.interface, INTERFACE);
    let key = steady.key;
    let payload = steady.payload.to_vec();
    h.run_to(1500);
    h.recv(1, 200);
    assert_eq!(h.engine.steady_repeat().map(|s| s.key), Some(key));
    assert_eq!(
        h.engine.steady_repeat().map(|s| s.payload.to_vec()),
        Some(payload)
    );

    // Our own priority changes: the repeat might now be judged otherwise.
    let id = h.id("vr");
    h.engine
        .set_priority_override(h.now, id, Some(Priority(150)));
    assert!(h.engine.steady_repeat().is_none());
    h.recv(1, 200);
    h.recv(1, 200);
    let again = h
        .engine
        .steady_repeat()
        .expect("steady again after two repeats");
    assert_ne!(again.key, key);

    // The master changes its priority: another advert, not steady until repeated.
    h.recv(1, 180);
    assert!(h.engine.steady_repeat().is_none());
}

#[test]
fn a_master_never_has_a_steady_advert() {
    let mut h = master(vr(100));
    for _ in 0..3 {
        h.recv(1, 50);
        assert!(h.engine.steady_repeat().is_none());
    }
    assert_eq!(h.state("vr"), State::Master);
}
