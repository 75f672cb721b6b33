//! Which alerts are active, and what to tell the receivers when that changes (pure: no clock,
//! no I/O; times come in as Unix milliseconds).
//!
//! Guarantees: an alert fires once while its condition holds and resolves once when it ends
//! (a repeated "raised" or "cleared" tells nobody anything new); a VIP without a holder fires
//! only after it stayed so for the hold time, so a failover's milliseconds never page anyone;
//! a one-shot alert (a rollout that failed) carries an end time of its own.

use std::collections::{BTreeMap, BTreeSet};

/// One alert as Alertmanager describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Labels, `alertname` and `severity` among them (sorted: the fingerprint hashes them).
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_unix_ms: u64,
    /// `Some` once resolved, or for a one-shot alert, when it lapses.
    pub ends_unix_ms: Option<u64>,
    pub resolved: bool,
}

impl Alert {
    fn new(
        name: &str,
        severity: &str,
        labels: &[(&str, &str)],
        summary: String,
        now: u64,
    ) -> Alert {
        let mut all: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.insert("alertname".into(), name.into());
        all.insert("severity".into(), severity.into());
        Alert {
            labels: all,
            annotations: BTreeMap::from([("summary".to_owned(), summary)]),
            starts_unix_ms: now,
            ends_unix_ms: None,
            resolved: false,
        }
    }

    /// A stable key of its labels.
    pub fn key(&self) -> String {
        self.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How long a one-shot alert stays firing.
pub const ONE_SHOT: u64 = 3_600_000;

/// The active alerts and the VIPs seen without a holder.
#[derive(Debug, Default)]
pub struct Rules {
    active: BTreeMap<String, Alert>,
    unheld_since: BTreeMap<String, u64>,
    one_shots: BTreeSet<String>,
}

impl Rules {
    fn fire(&mut self, alert: Alert) -> Option<Alert> {
        let key = alert.key();
        if self.active.contains_key(&key) {
            return None;
        }
        self.active.insert(key, alert.clone());
        Some(alert)
    }

    fn resolve(&mut self, labels: &[(&str, &str)], name: &str, now: u64) -> Option<Alert> {
        let probe = Alert::new(name, "", labels, String::new(), now);
        let key = self
            .active
            .keys()
            .find(|key| same_identity(key, &probe))
            .cloned()?;
        let mut alert = self.active.remove(&key)?;
        alert.resolved = true;
        alert.ends_unix_ms = Some(now);
        Some(alert)
    }

    /// A node's lease ran out (`down`) or it connected again.
    pub fn node(&mut self, node: &str, down: bool, now: u64) -> Option<Alert> {
        if down {
            self.fire(Alert::new(
                "HavNodeDown",
                "critical",
                &[("node", node)],
                format!("node {node} is gone: its session ended and its lease ran out"),
                now,
            ))
        } else {
            self.resolve(&[("node", node)], "HavNodeDown", now)
        }
    }

    /// Two or more masters of one VIP, or no longer.
    pub fn split_brain(
        &mut self,
        vip: &str,
        masters: &[String],
        over: bool,
        now: u64,
    ) -> Option<Alert> {
        if over {
            self.resolve(&[("vip", vip)], "HavSplitBrain", now)
        } else {
            self.fire(Alert::new(
                "HavSplitBrain",
                "critical",
                &[("vip", vip)],
                format!("{vip} has several masters: {}", masters.join(", ")),
                now,
            ))
        }
    }

    /// A rollout job ended failed (told once).
    pub fn rollout_failed(&mut self, job: u64, error: &str, now: u64) -> Option<Alert> {
        let id = job.to_string();
        if !self.one_shots.insert(format!("rollout:{id}")) {
            return None;
        }
        let mut alert = Alert::new(
            "HavRolloutFailed",
            "warning",
            &[("job", &id)],
            format!("rollout {id} failed: {error}"),
            now,
        );
        alert.ends_unix_ms = Some(now + ONE_SHOT);
        Some(alert)
    }

    /// The fleet's VIPs and the ones some live node holds: fires for a VIP unheld for `hold_ms`,
    /// resolves for one held again.
    pub fn holders(
        &mut self,
        vips: &BTreeSet<String>,
        held: &BTreeSet<String>,
        hold_ms: u64,
        now: u64,
    ) -> Vec<Alert> {
        let mut out = Vec::new();
        self.unheld_since.retain(|vip, _| vips.contains(vip));
        for vip in vips {
            if held.contains(vip) {
                self.unheld_since.remove(vip);
                out.extend(self.resolve(&[("vip", vip)], "HavVipWithoutHolder", now));
                continue;
            }
            let since = *self.unheld_since.entry(vip.clone()).or_insert(now);
            if now.saturating_sub(since) >= hold_ms {
                out.extend(self.fire(Alert::new(
                    "HavVipWithoutHolder",
                    "critical",
                    &[("vip", vip)],
                    format!("no node holds {vip} (for {} ms)", now - since),
                    since,
                )));
            }
        }
        // VIPs no longer in the fleet stop being alerts.
        let gone: Vec<String> = (self.active.values())
            .filter(|a| {
                a.labels
                    .get("alertname")
                    .is_some_and(|n| n == "HavVipWithoutHolder")
            })
            .filter_map(|a| a.labels.get("vip").cloned())
            .filter(|vip| !vips.contains(vip))
            .collect();
        for vip in gone {
            out.extend(self.resolve(&[("vip", &vip)], "HavVipWithoutHolder", now));
        }
        out
    }

    /// A certificate expiring within the warning period (`days_left` ≤ the period), or not.
    pub fn certificate(&mut self, which: &str, days_left: Option<i64>, now: u64) -> Option<Alert> {
        match days_left {
            Some(days) => self.fire(Alert::new(
                "HavCertificateExpiring",
                if days <= 7 { "critical" } else { "warning" },
                &[("certificate", which)],
                format!("certificate {which} expires in {days} day(s)"),
                now,
            )),
            None => self.resolve(&[("certificate", which)], "HavCertificateExpiring", now),
        }
    }

    /// Forgets everything (this coordinator stopped leading: the next leader alerts).
    pub fn clear(&mut self) {
        *self = Rules::default();
    }
}

/// Whether `key` names the same alert as `probe` (alertname and identifying labels; severity
/// may differ).
fn same_identity(key: &str, probe: &Alert) -> bool {
    probe
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "severity")
        .all(|(k, v)| key.split(',').any(|pair| pair == format!("{k}={v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_node_fires_once_and_resolves_once() {
        let mut rules = Rules::default();
        let fired = rules.node("p1a", true, 1_000).expect("fires");
        assert_eq!(fired.labels["alertname"], "HavNodeDown");
        assert_eq!(fired.labels["node"], "p1a");
        assert!(rules.node("p1a", true, 2_000).is_none(), "already firing");
        let resolved = rules.node("p1a", false, 3_000).expect("resolves");
        assert!(resolved.resolved);
        assert_eq!(
            (resolved.starts_unix_ms, resolved.ends_unix_ms),
            (1_000, Some(3_000))
        );
        assert!(
            rules.node("p1a", false, 4_000).is_none(),
            "nothing to resolve"
        );
    }

    #[test]
    fn a_vip_without_holder_fires_only_after_the_hold_time() {
        let mut rules = Rules::default();
        let vips = set(&["198.51.100.10", "198.51.100.11"]);
        let held = set(&["198.51.100.10"]);
        assert!(rules.holders(&vips, &held, 5_000, 0).is_empty());
        assert!(
            rules.holders(&vips, &held, 5_000, 4_999).is_empty(),
            "a failover's gap"
        );
        let fired = rules.holders(&vips, &held, 5_000, 5_000);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].labels["vip"], "198.51.100.11");
        assert_eq!(fired[0].starts_unix_ms, 0, "since it was first seen unheld");
        assert!(rules.holders(&vips, &held, 5_000, 6_000).is_empty());
        let resolved = rules.holders(&vips, &vips, 5_000, 7_000);
        assert_eq!(resolved.len(), 1);
        assert!(resolved[0].resolved);
        // Held again in between: the hold time starts over.
        assert!(rules.holders(&vips, &held, 5_000, 8_000).is_empty());
        assert!(rules.holders(&vips, &vips, 5_000, 9_000).is_empty());
        assert!(rules.holders(&vips, &held, 5_000, 12_999).is_empty());
    }

    #[test]
    fn split_brains_rollouts_and_certificates() {
        let mut rules = Rules::default();
        let masters = vec!["a".to_owned(), "b".to_owned()];
        assert!(
            rules
                .split_brain("198.51.100.10", &masters, false, 1)
                .is_some()
        );
        assert!(
            rules
                .split_brain("198.51.100.10", &masters, false, 2)
                .is_none()
        );
        assert!(
            rules
                .split_brain("198.51.100.10", &[], true, 3)
                .is_some_and(|a| a.resolved)
        );
        let failed = rules.rollout_failed(7, "p1a: exit 1", 10).expect("told");
        assert_eq!(failed.ends_unix_ms, Some(10 + ONE_SHOT));
        assert!(rules.rollout_failed(7, "p1a: exit 1", 11).is_none(), "once");
        let soon = rules
            .certificate("coordinator", Some(3), 20)
            .expect("fires");
        assert_eq!(soon.labels["severity"], "critical");
        assert!(
            rules
                .certificate("coordinator", None, 30)
                .is_some_and(|a| a.resolved)
        );
    }
}
