//! Presence: whether what a node last reported is still believed, as a lease.
//!
//! A node with an open session is `Connected` and its reports are its state. When the session
//! ends the node is `Disconnected`: its last report is still believed (a network blip or an agent
//! restart must not flap DNS), but only until the lease runs out, `ttl` after the session ended.
//! A node that has not reconnected by then is `Unknown`: nothing it said counts any more. A
//! coordinator that starts gives every node it knows from before a lease of its own (long
//! enough for every live agent to reconnect, see [`hav_proto::v1::AGENT_RECONNECT_MAX`]).
//!
//! Guarantees: only the end of a node's current session starts its lease (the end of a session
//! a newer one replaced is not the node's); a lease ends exactly once, reported by
//! [`Leases::expire`]. Pure: time comes in as arguments.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// A node's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// A session is open.
    Connected { session: u64 },
    /// No session since `since_ms`; the last report is believed until `until`.
    Disconnected { since_ms: u64, until: Instant },
    /// No session since `since_ms` (0: not while this coordinator ran) and the lease ran out:
    /// the last report is not believed.
    Unknown { since_ms: u64 },
}

impl Presence {
    /// Whether the node's last report is believed (for availability and DNS).
    pub fn believed(&self) -> bool {
        !matches!(self, Presence::Unknown { .. })
    }
}

/// Every node's presence.
#[derive(Debug)]
pub struct Leases {
    nodes: BTreeMap<String, Presence>,
    /// The running leases by deadline: the next one is found without visiting every node.
    deadlines: BTreeSet<(Instant, String)>,
    ttl: Duration,
}

impl Leases {
    /// No node known; a session that ends leaves its node believed for `ttl`.
    pub fn new(ttl: Duration) -> Leases {
        Leases {
            nodes: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            ttl,
        }
    }

    /// Sets the presence of `node`, keeping `deadlines` in step.
    fn set(&mut self, node: &str, presence: Presence) {
        if let Some(Presence::Disconnected { until, .. }) = self.nodes.get(node) {
            self.deadlines.remove(&(*until, node.to_owned()));
        }
        if let Presence::Disconnected { until, .. } = presence {
            self.deadlines.insert((until, node.to_owned()));
        }
        self.nodes.insert(node.to_owned(), presence);
    }

    /// A node known from before this coordinator started, believed until `until` unless it
    /// connects first.
    pub fn restore(&mut self, node: &str, now_ms: u64, until: Instant) {
        if !self.nodes.contains_key(node) {
            self.set(
                node,
                Presence::Disconnected {
                    since_ms: now_ms,
                    until,
                },
            );
        }
    }

    /// `session` of `node` opened (it replaces any older one).
    pub fn connected(&mut self, node: &str, session: u64) {
        self.set(node, Presence::Connected { session });
    }

    /// `session` of `node` ended at `now_ms` (`now`): its lease starts if it was the node's
    /// current session. Returns whether it was.
    pub fn disconnected(&mut self, node: &str, session: u64, now_ms: u64, now: Instant) -> bool {
        if !self.is_current(node, session) {
            return false;
        }
        self.set(
            node,
            Presence::Disconnected {
                since_ms: now_ms,
                until: now + self.ttl,
            },
        );
        true
    }

    /// Whether `session` is the open session of `node`.
    pub fn is_current(&self, node: &str, session: u64) -> bool {
        self.nodes.get(node) == Some(&Presence::Connected { session })
    }

    /// The nodes connected now, with their sessions.
    pub fn sessions(&self) -> impl Iterator<Item = (&str, u64)> {
        self.nodes
            .iter()
            .filter_map(|(node, presence)| match presence {
                Presence::Connected { session } => Some((node.as_str(), *session)),
                _ => None,
            })
    }

    /// When the next lease runs out.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.first().map(|(until, _)| *until)
    }

    /// Ends every lease that ran out by `now`; returns those nodes and when their sessions ended.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, u64)> {
        let mut expired = Vec::new();
        while let Some((until, node)) = self.deadlines.first().cloned()
            && until <= now
        {
            self.deadlines.pop_first();
            if let Some(Presence::Disconnected { since_ms, .. }) = self.nodes.get(&node).copied() {
                self.nodes
                    .insert(node.clone(), Presence::Unknown { since_ms });
                expired.push((node, since_ms));
            }
        }
        expired.sort();
        expired
    }

    /// The presence of `node`; one never heard of is unknown.
    pub fn get(&self, node: &str) -> Presence {
        self.nodes
            .get(node)
            .copied()
            .unwrap_or(Presence::Unknown { since_ms: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn a_session_that_ends_is_believed_for_the_ttl_then_unknown() {
        let start = Instant::now();
        let mut leases = Leases::new(TTL);
        leases.connected("lb-1", 1);
        assert_eq!(leases.get("lb-1"), Presence::Connected { session: 1 });
        assert_eq!(leases.next_expiry(), None);

        assert!(leases.disconnected("lb-1", 1, 1_000, start));
        assert!(leases.get("lb-1").believed());
        assert_eq!(leases.next_expiry(), Some(start + TTL));
        assert!(
            leases
                .expire(start + TTL - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(leases.expire(start + TTL), vec![("lb-1".to_owned(), 1_000)]);
        assert_eq!(leases.get("lb-1"), Presence::Unknown { since_ms: 1_000 });
        assert!(!leases.get("lb-1").believed());
        // Once only.
        assert!(leases.expire(start + 2 * TTL).is_empty());
        assert_eq!(leases.next_expiry(), None);
    }

    #[test]
    fn reconnecting_within_the_ttl_keeps_the_node_and_a_replaced_session_ends_nothing() {
        let start = Instant::now();
        let mut leases = Leases::new(TTL);
        leases.connected("lb-1", 1);
        assert!(leases.disconnected("lb-1", 1, 1_000, start));
        leases.connected("lb-1", 2);
        assert!(leases.expire(start + TTL).is_empty());
        assert!(leases.is_current("lb-1", 2));
        // Session 3 replaces session 2 before 2's end is seen: that end is not the node's.
        leases.connected("lb-1", 3);
        assert!(!leases.disconnected("lb-1", 2, 2_000, start));
        assert_eq!(leases.get("lb-1"), Presence::Connected { session: 3 });
        assert_eq!(leases.sessions().collect::<Vec<_>>(), vec![("lb-1", 3)]);
    }

    #[test]
    fn nodes_known_from_before_a_start_get_a_lease_and_strangers_are_unknown() {
        let start = Instant::now();
        let mut leases = Leases::new(TTL);
        leases.connected("lb-2", 7);
        leases.restore("lb-1", 5_000, start + 3 * TTL);
        // A node already connected keeps its session.
        leases.restore("lb-2", 5_000, start + 3 * TTL);
        assert!(leases.is_current("lb-2", 7));
        assert!(leases.get("lb-1").believed());
        assert_eq!(leases.next_expiry(), Some(start + 3 * TTL));
        assert_eq!(
            leases.expire(start + 3 * TTL),
            vec![("lb-1".to_owned(), 5_000)]
        );
        assert_eq!(leases.get("lb-9"), Presence::Unknown { since_ms: 0 });
    }

    #[test]
    fn leases_run_out_in_deadline_order_and_a_reconnect_cancels_one() {
        let start = Instant::now();
        let mut leases = Leases::new(TTL);
        for (n, node) in ["lb-1", "lb-2", "lb-3"].into_iter().enumerate() {
            leases.connected(node, 1);
            let at = start + Duration::from_secs(n as u64);
            assert!(leases.disconnected(node, 1, 1_000 + n as u64, at));
        }
        assert_eq!(leases.next_expiry(), Some(start + TTL));
        // lb-1 is back: the next lease to run out is lb-2's.
        leases.connected("lb-1", 2);
        assert_eq!(
            leases.next_expiry(),
            Some(start + TTL + Duration::from_secs(1))
        );
        assert!(leases.expire(start + TTL).is_empty());
        assert_eq!(
            leases.expire(start + TTL + Duration::from_secs(2)),
            [("lb-2".to_owned(), 1_001), ("lb-3".to_owned(), 1_002)]
        );
        assert_eq!(leases.next_expiry(), None);
        assert_eq!(leases.get("lb-3"), Presence::Unknown { since_ms: 1_002 });
        assert_eq!(leases.get("lb-1"), Presence::Connected { session: 2 });
    }
}
