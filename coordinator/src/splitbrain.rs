//! Split-brain detection: two or more nodes reporting themselves master of the same VIP (the
//! failure unicast VRRP setups are known for, when the peers stop hearing each other).
//!
//! The [`Detector`] is fed every instance state the agents report and answers on the same call,
//! so a split brain is raised as soon as the second master's report arrives (well within one
//! advert interval of both being reported), and cleared when at most one master remains. When
//! the operator enables resolution, [`Detector::loser`] picks who steps down: the lower
//! effective priority, on a tie the lower address (the node VRRP itself would make backup,
//! RFC 5798 section 6.4.3), then the name, so the choice is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

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
    /// A new split brain (or one whose set of masters changed).
    Detected(SplitBrain),
    /// The VIP has at most one master again.
    Resolved { vip: String, at_ms: u64 },
}

/// Masters per VIP and the split brains in progress.
#[derive(Debug, Default)]
pub struct Detector {
    /// VIP → node → claim.
    masters: BTreeMap<String, BTreeMap<String, Claim>>,
    active: BTreeMap<String, SplitBrain>,
}

/// One instance as a node reported it.
#[derive(Debug, Clone)]
pub struct InstanceReport<'a> {
    pub instance: &'a str,
    pub vrid: u32,
    pub master: bool,
    pub priority: u32,
    pub vips: &'a [String],
}

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
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for (vip, claims) in &mut self.masters {
            if claims.remove(node).is_some() {
                touched.insert(vip.clone());
            }
        }
        for report in instances.iter().filter(|r| r.master) {
            for vip in report.vips {
                let vip = vip_key(vip);
                let claim = Claim {
                    node: node.to_owned(),
                    instance: report.instance.to_owned(),
                    vrid: report.vrid,
                    priority: report.priority,
                    address,
                };
                self.masters
                    .entry(vip.clone())
                    .or_default()
                    .insert(node.to_owned(), claim);
                touched.insert(vip);
            }
        }
        let mut findings = Vec::new();
        for vip in touched {
            let claims = self.masters.get(&vip);
            let masters: Vec<Claim> = claims
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default();
            if masters.len() >= 2 {
                let known = self.active.get(&vip).map(|s| &s.masters);
                if known != Some(&masters) {
                    let split = SplitBrain {
                        vip: vip.clone(),
                        masters,
                        detected_ms: now_ms,
                    };
                    self.active.insert(vip, split.clone());
                    findings.push(Finding::Detected(split));
                }
            } else if self.active.remove(&vip).is_some() {
                findings.push(Finding::Resolved { vip, at_ms: now_ms });
            }
        }
        self.masters.retain(|_, claims| !claims.is_empty());
        findings
    }

    /// The split brains in progress.
    pub fn active(&self) -> impl Iterator<Item = &SplitBrain> {
        self.active.values()
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
        // Reported again unchanged: not raised twice.
        assert!(
            detector
                .observe_node("lb-2", b, &[master(&held, 100)], 13)
                .is_empty()
        );
        assert_eq!(detector.active().count(), 1);

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
                },
                Claim {
                    node: "lb-a".into(),
                    instance: "web".into(),
                    vrid: 51,
                    priority: 100,
                    address: Some("198.51.100.20".parse().expect("ip")),
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
}
