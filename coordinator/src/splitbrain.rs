//! Split-brain detection: two or more nodes reporting themselves master of the same VIP (the
//! failure unicast VRRP setups are known for, when the peers stop hearing each other).
//!
//! The [`Detector`] is fed every instance state the agents report and answers on the same call:
//! two masters are a candidate as soon as the second master's report arrives. A candidate is
//! raised only if the same masters still claim the VIP one advert interval later ([`grace`]): a
//! preemption or a make-before-break handover has two masters for a few milliseconds. Only
//! nodes with a live session count: the caller forgets a node whose session ends
//! ([`Detector::forget_node`]), so a dead master's last report never makes its successor a
//! second master. When the operator enables resolution, [`Detector::losers`] picks who steps
//! down: the lower effective priority, on a tie the lower address (the node VRRP itself would
//! make backup, RFC 5798 section 6.4.3), then the name, so the choice is deterministic.
//!
//! Guarantees: a split brain is reported over only if it was raised, once per raise, and the
//! caller publishes both in the order the detector decided them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::sla::vip_key;

/// One node's claim to be master of a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub node: String,
    pub instance: String,
    pub vrid: u32,
    pub priority: u32,
    /// The node's address, when known (tie-break).
    pub address: Option<IpAddr>,
    /// The instance's advert interval, when the node said it.
    pub advert_interval: Option<Duration>,
}

/// A VIP with more than one master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBrain {
    pub vip: String,
    pub masters: Vec<Claim>,
    pub detected_ms: u64,
}

/// What an observation changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A candidate: a new set of two or more masters of a VIP. To be raised with
    /// [`Detector::raise`] if it lasts its [`grace`].
    Detected(SplitBrain),
    /// A raised split brain is over: the VIP has at most one master again.
    Resolved { vip: String, at_ms: u64 },
}

/// Masters per VIP and the split brains in progress.
#[derive(Debug, Default)]
pub struct Detector {
    /// VIP → its claims, one per node, in the order of the nodes' names. A VIP has one master
    /// nearly always, so a list of exactly the claims is kept rather than a map per VIP.
    masters: BTreeMap<String, Vec<Claim>>,
    /// Node → the VIPs it claims in `masters`, sorted: a report costs the node's VIPs, not the
    /// fleet's.
    claimed: HashMap<String, Box<[String]>>,
    active: BTreeMap<String, Active>,
}

/// A VIP with two or more masters now.
#[derive(Debug)]
struct Active {
    split: SplitBrain,
    /// These masters were raised.
    raised: bool,
    /// A raise of this VIP is out and not yet followed by its end (the masters may have
    /// changed since).
    announced: bool,
}

/// One instance as a node reported it.
#[derive(Debug, Clone)]
pub struct InstanceReport<'a> {
    pub instance: &'a str,
    pub vrid: u32,
    pub master: bool,
    pub priority: u32,
    pub vips: &'a [String],
    pub advert_interval: Option<Duration>,
}

/// How long `split` must last to be raised: one advert interval of its instance (the longest of
/// its masters'; `interval` says it for claims that do not), at least `floor`; an interval no one
/// knows counts as the VRRP default, 1 s.
pub fn grace(
    split: &SplitBrain,
    interval: impl Fn(&Claim) -> Option<Duration>,
    floor: Duration,
) -> Duration {
    split
        .masters
        .iter()
        .map(|claim| {
            claim
                .advert_interval
                .or_else(|| interval(claim))
                .unwrap_or(DEFAULT_ADVERT_INTERVAL)
        })
        .max()
        .unwrap_or(DEFAULT_ADVERT_INTERVAL)
        .max(floor)
}

/// The advert interval of RFC 5798 section 5.2.7 (and keepalived's): 1 s.
const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_secs(1);

impl Detector {
    /// Replaces everything `node` claims with what `instances` say (a full snapshot) and returns
    /// what changed.
    pub fn observe_node(
        &mut self,
        node: &str,
        address: Option<IpAddr>,
        instances: &[InstanceReport<'_>],
        now_ms: u64,
    ) -> Vec<Finding> {
        let mut touched = self.claimed.remove(node).unwrap_or_default().into_vec();
        for vip in &touched {
            if let Some(claims) = self.masters.get_mut(vip) {
                claims.retain(|claim| claim.node != node);
            }
        }
        let mut claiming = Vec::new();
        for report in instances.iter().filter(|r| r.master) {
            for vip in report.vips {
                let vip = vip_key(vip);
                let claim = Claim {
                    node: node.to_owned(),
                    instance: report.instance.to_owned(),
                    vrid: report.vrid,
                    priority: report.priority,
                    address,
                    advert_interval: report.advert_interval,
                };
                let claims = self.masters.entry(vip.clone()).or_default();
                // The node's later claim of the same VIP replaces its earlier one.
                match claims.binary_search_by(|c| c.node.as_str().cmp(node)) {
                    Ok(at) => claims[at] = claim,
                    Err(at) => {
                        claims.reserve_exact(1);
                        claims.insert(at, claim);
                    }
                }
                claiming.push(vip.clone());
                touched.push(vip);
            }
        }
        claiming.sort_unstable();
        claiming.dedup();
        touched.sort_unstable();
        touched.dedup();
        if !claiming.is_empty() {
            self.claimed
                .insert(node.to_owned(), claiming.into_boxed_slice());
        }
        let mut findings = Vec::new();
        for vip in touched {
            let claims = self.masters.get(&vip).filter(|claims| claims.len() >= 2);
            if let Some(claims) = claims {
                let known = self.active.get(&vip).map(|a| &a.split.masters);
                if !known.is_some_and(|known| known.iter().eq(claims.iter())) {
                    let masters: Vec<Claim> = claims.clone();
                    let split = SplitBrain {
                        vip: vip.clone(),
                        masters,
                        detected_ms: now_ms,
                    };
                    let announced = self.active.get(&vip).is_some_and(|a| a.announced);
                    self.active.insert(
                        vip,
                        Active {
                            split: split.clone(),
                            raised: false,
                            announced,
                        },
                    );
                    findings.push(Finding::Detected(split));
                }
            } else {
                if self.masters.get(&vip).is_some_and(Vec::is_empty) {
                    self.masters.remove(&vip);
                }
                if let Some(ended) = self.active.remove(&vip)
                    && ended.announced
                {
                    findings.push(Finding::Resolved { vip, at_ms: now_ms });
                }
            }
        }
        findings
    }

    /// Forgets everything `node` claims (its session ended) and returns what changed.
    pub fn forget_node(&mut self, node: &str, now_ms: u64) -> Vec<Finding> {
        self.observe_node(node, None, &[], now_ms)
    }

    /// Raises the candidate `masters` of `vip` once its grace is over: the split brain, if those
    /// masters still claim the VIP and were not raised yet.
    pub fn raise(&mut self, vip: &str, masters: &[Claim]) -> Option<SplitBrain> {
        let active = self.active.get_mut(vip)?;
        if active.raised || active.split.masters != masters {
            return None;
        }
        active.raised = true;
        active.announced = true;
        Some(active.split.clone())
    }

    /// Whether `masters` still claim `vip` and were raised (before acting on a raise).
    pub fn is_raised(&self, vip: &str, masters: &[Claim]) -> bool {
        self.active
            .get(vip)
            .is_some_and(|a| a.raised && a.split.masters == masters)
    }

    /// The split brains in progress (candidates included).
    pub fn active(&self) -> impl Iterator<Item = &SplitBrain> {
        self.active.values().map(|a| &a.split)
    }

    /// Who should step down in `split`: everyone but the winner (highest priority, then
    /// highest address, then highest name).
    pub fn losers(split: &SplitBrain) -> Vec<&Claim> {
        let winner = split
            .masters
            .iter()
            .max_by(|a, b| (a.priority, a.address, &a.node).cmp(&(b.priority, b.address, &b.node)));
        split
            .masters
            .iter()
            .filter(|c| Some(*c) != winner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vips(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn master<'a>(vips: &'a [String], priority: u32) -> InstanceReport<'a> {
        InstanceReport {
            instance: "web",
            vrid: 51,
            master: true,
            priority,
            vips,
            advert_interval: None,
        }
    }

    #[test]
    fn two_masters_are_detected_on_the_second_report_and_cleared_when_one_yields() {
        let held = vips(&["198.51.100.10/24"]);
        let none: Vec<String> = Vec::new();
        let mut detector = Detector::default();
        let a = Some("198.51.100.1".parse().expect("ip"));
        let b = Some("198.51.100.2".parse().expect("ip"));
        assert!(
            detector
                .observe_node("lb-1", a, &[master(&held, 150)], 10)
                .is_empty()
        );
        // A repeated report of one master is no split brain.
        assert!(
            detector
                .observe_node("lb-1", a, &[master(&held, 150)], 11)
                .is_empty()
        );

        let findings = detector.observe_node("lb-2", b, &[master(&held, 100)], 12);
        let [Finding::Detected(split)] = findings.as_slice() else {
            panic!("expected one detection, got {findings:?}");
        };
        assert_eq!(split.vip, "198.51.100.10");
        assert_eq!(split.detected_ms, 12);
        assert_eq!(split.masters.len(), 2);
        let losers = Detector::losers(split);
        assert_eq!(losers.len(), 1);
        assert_eq!(losers[0].node, "lb-2", "lower priority steps down");
        // Reported again unchanged: not detected twice.
        assert!(
            detector
                .observe_node("lb-2", b, &[master(&held, 100)], 13)
                .is_empty()
        );
        assert_eq!(detector.active().count(), 1);
        // Its grace is over: raised, once.
        let split = split.clone();
        assert_eq!(
            detector.raise(&split.vip, &split.masters),
            Some(split.clone())
        );
        assert!(detector.is_raised(&split.vip, &split.masters));
        assert_eq!(detector.raise(&split.vip, &split.masters), None);

        // lb-2 becomes backup.
        let backup = InstanceReport {
            master: false,
            vips: &none,
            ..master(&held, 100)
        };
        let findings = detector.observe_node("lb-2", b, &[backup], 20);
        assert_eq!(
            findings,
            vec![Finding::Resolved {
                vip: "198.51.100.10".into(),
                at_ms: 20
            }]
        );
        assert_eq!(detector.active().count(), 0);
    }

    #[test]
    fn a_tie_demotes_the_lower_address() {
        let split = SplitBrain {
            vip: "198.51.100.10".into(),
            masters: vec![
                Claim {
                    node: "lb-b".into(),
                    instance: "web".into(),
                    vrid: 51,
                    priority: 100,
                    address: Some("198.51.100.9".parse().expect("ip")),
                    advert_interval: None,
                },
                Claim {
                    node: "lb-a".into(),
                    instance: "web".into(),
                    vrid: 51,
                    priority: 100,
                    address: Some("198.51.100.20".parse().expect("ip")),
                    advert_interval: None,
                },
            ],
            detected_ms: 0,
        };
        let losers = Detector::losers(&split);
        assert_eq!(losers.len(), 1);
        assert_eq!(losers[0].node, "lb-b");
    }

    #[test]
    fn a_node_dropping_its_claim_on_one_vip_keeps_the_others() {
        let both = vips(&["198.51.100.10/24", "198.51.100.11/24"]);
        let one = vips(&["198.51.100.11/24"]);
        let mut detector = Detector::default();
        detector.observe_node("lb-1", None, &[master(&both, 150)], 1);
        let findings = detector.observe_node("lb-2", None, &[master(&both, 100)], 2);
        assert_eq!(findings.len(), 2);
        for finding in findings {
            let Finding::Detected(split) = finding else {
                panic!("{finding:?}");
            };
            assert!(detector.raise(&split.vip, &split.masters).is_some());
        }
        let findings = detector.observe_node("lb-2", None, &[master(&one, 100)], 3);
        assert_eq!(
            findings,
            vec![Finding::Resolved {
                vip: "198.51.100.10".into(),
                at_ms: 3
            }]
        );
        assert_eq!(detector.active().count(), 1);
    }

    #[test]
    fn two_masters_gone_within_the_grace_are_never_raised_nor_reported_over() {
        let held = vips(&["198.51.100.10/24"]);
        let none: Vec<String> = Vec::new();
        let mut detector = Detector::default();
        detector.observe_node("lb-1", None, &[master(&held, 150)], 1);
        let findings = detector.observe_node("lb-2", None, &[master(&held, 100)], 2);
        let [Finding::Detected(split)] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        let split = split.clone();
        // lb-2 hears lb-1 and steps back before the grace is over: nothing to report.
        let backup = InstanceReport {
            master: false,
            vips: &none,
            ..master(&held, 100)
        };
        assert!(detector.observe_node("lb-2", None, &[backup], 3).is_empty());
        assert_eq!(detector.raise(&split.vip, &split.masters), None);
        assert!(!detector.is_raised(&split.vip, &split.masters));
        // Two masters again: a new candidate, whose own grace starts now.
        let findings = detector.observe_node("lb-2", None, &[master(&held, 100)], 4);
        assert!(matches!(findings.as_slice(), [Finding::Detected(s)] if s.detected_ms == 4));
    }

    #[test]
    fn a_node_whose_session_ended_claims_nothing() {
        let held = vips(&["198.51.100.10/24"]);
        let mut detector = Detector::default();
        detector.observe_node("lb-1", None, &[master(&held, 150)], 1);
        // lb-1 dies; lb-2, its backup, takes over: the only master.
        assert!(detector.forget_node("lb-1", 2).is_empty());
        assert!(
            detector
                .observe_node("lb-2", None, &[master(&held, 100)], 3)
                .is_empty()
        );
        assert_eq!(detector.active().count(), 0);

        // A raised split brain whose master dies is over.
        let findings = detector.observe_node("lb-1", None, &[master(&held, 150)], 4);
        let [Finding::Detected(split)] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        let split = split.clone();
        assert!(detector.raise(&split.vip, &split.masters).is_some());
        assert_eq!(
            detector.forget_node("lb-1", 5),
            vec![Finding::Resolved {
                vip: "198.51.100.10".into(),
                at_ms: 5
            }]
        );
    }

    #[test]
    fn a_changed_set_of_masters_is_raised_again_and_reported_over_once() {
        let held = vips(&["198.51.100.10/24"]);
        let mut detector = Detector::default();
        detector.observe_node("lb-1", None, &[master(&held, 150)], 1);
        let findings = detector.observe_node("lb-2", None, &[master(&held, 100)], 2);
        let [Finding::Detected(first)] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        let first = first.clone();
        assert!(detector.raise(&first.vip, &first.masters).is_some());
        // A third master joins: a new candidate; the first raise can no longer be acted on.
        let findings = detector.observe_node("lb-3", None, &[master(&held, 90)], 3);
        let [Finding::Detected(second)] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        assert!(!detector.is_raised(&first.vip, &first.masters));
        assert_eq!(second.masters.len(), 3);
        // It ends before its grace is over; the first raise is still out: over, once.
        detector.forget_node("lb-3", 4);
        assert_eq!(detector.forget_node("lb-2", 5).len(), 1);
        assert!(detector.forget_node("lb-1", 6).is_empty());
    }

    #[test]
    fn the_grace_is_the_longest_advert_interval_of_the_masters_with_a_floor() {
        let held = vips(&["198.51.100.10/24"]);
        let mut detector = Detector::default();
        let mut slow = master(&held, 150);
        slow.advert_interval = Some(Duration::from_millis(3_000));
        detector.observe_node("lb-1", None, &[slow], 1);
        let findings = detector.observe_node("lb-2", None, &[master(&held, 100)], 2);
        let [Finding::Detected(split)] = findings.as_slice() else {
            panic!("{findings:?}");
        };
        let floor = Duration::from_millis(100);
        let from_config =
            |claim: &Claim| (claim.node == "lb-2").then_some(Duration::from_millis(200));
        assert_eq!(grace(split, from_config, floor), Duration::from_secs(3));
        let fast = SplitBrain {
            masters: split
                .masters
                .iter()
                .map(|c| Claim {
                    advert_interval: Some(Duration::from_millis(10)),
                    ..c.clone()
                })
                .collect(),
            ..split.clone()
        };
        assert_eq!(grace(&fast, from_config, floor), floor);
        // Known to no one: the VRRP default.
        assert_eq!(grace(split, |_| None, floor), Duration::from_secs(3));
        let unknown = SplitBrain {
            masters: split
                .masters
                .iter()
                .map(|c| Claim {
                    advert_interval: None,
                    ..c.clone()
                })
                .collect(),
            ..split.clone()
        };
        assert_eq!(grace(&unknown, |_| None, floor), Duration::from_secs(1));
        assert_eq!(
            grace(&unknown, from_config, floor),
            Duration::from_secs(1),
            "lb-1's interval is not known: the default"
        );
    }
}
