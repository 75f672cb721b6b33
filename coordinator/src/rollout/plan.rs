//! The rollout planner: in which waves nodes go into maintenance.
//!
//! Guarantees (checked by property tests): every node appears exactly once; a wave never holds
//! two nodes of the same pair (group), so every pair keeps a serving node; a wave never holds more
//! than `max_parallel` nodes; the first `canary` nodes go alone, one wave each, before anything
//! else; nodes of one group keep their declared order; the plan is deterministic.

use std::collections::{BTreeSet, VecDeque};

/// Why a rollout cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error("--max-parallel must be at least 1")]
    ZeroParallel,
    #[error("node `{0}` is in more than one group")]
    NodeInTwoGroups(String),
    #[error("nothing to roll out")]
    Empty,
}

/// Nodes grouped in the pairs (or larger groups) that must never be down together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub nodes: Vec<String>,
}

/// Waves of nodes: each wave's nodes are drained, updated and undrained together; the next
/// wave starts when the whole wave is done.
pub fn plan(
    groups: &[Group],
    max_parallel: usize,
    canary: usize,
) -> Result<Vec<Vec<String>>, PlanError> {
    if max_parallel == 0 {
        return Err(PlanError::ZeroParallel);
    }
    let mut seen = BTreeSet::new();
    for node in groups.iter().flat_map(|g| &g.nodes) {
        if !seen.insert(node.as_str()) {
            return Err(PlanError::NodeInTwoGroups(node.clone()));
        }
    }
    if seen.is_empty() {
        return Err(PlanError::Empty);
    }
    // One queue per group, in group order; waves take the head of up to `max_parallel` queues,
    // the longest queues first so that big groups do not end up alone at the end.
    let mut queues: Vec<VecDeque<String>> = groups
        .iter()
        .filter(|g| !g.nodes.is_empty())
        .map(|g| g.nodes.iter().cloned().collect())
        .collect();
    let mut waves = Vec::new();
    for _ in 0..canary {
        let Some(queue) = longest(&mut queues) else {
            break;
        };
        if let Some(node) = queue.pop_front() {
            waves.push(vec![node]);
        }
    }
    loop {
        queues.retain(|q| !q.is_empty());
        if queues.is_empty() {
            break;
        }
        let mut order: Vec<usize> = (0..queues.len()).collect();
        // Stable: equal lengths keep group order.
        order.sort_by_key(|&i| std::cmp::Reverse(queues[i].len()));
        let wave: Vec<String> = order
            .into_iter()
            .take(max_parallel)
            .filter_map(|i| queues[i].pop_front())
            .collect();
        waves.push(wave);
    }
    Ok(waves)
}

fn longest(queues: &mut [VecDeque<String>]) -> Option<&mut VecDeque<String>> {
    let mut best: Option<usize> = None;
    for (i, queue) in queues.iter().enumerate() {
        if !queue.is_empty() && best.is_none_or(|b| queue.len() > queues[b].len()) {
            best = Some(i);
        }
    }
    best.map(move |i| &mut queues[i])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn pairs(n: usize) -> Vec<Group> {
        (0..n)
            .map(|i| Group {
                name: format!("g{i}"),
                nodes: vec![format!("lb-{i}a"), format!("lb-{i}b")],
            })
            .collect()
    }

    #[test]
    fn three_pairs_two_at_a_time() {
        let waves = plan(&pairs(3), 2, 0).expect("plan");
        assert_eq!(
            waves,
            vec![
                vec!["lb-0a", "lb-1a"],
                vec!["lb-2a", "lb-0b"],
                vec!["lb-1b", "lb-2b"],
            ]
        );
    }

    #[test]
    fn a_canary_goes_alone_first() {
        let waves = plan(&pairs(3), 3, 1).expect("plan");
        assert_eq!(waves[0], vec!["lb-0a"]);
        assert_eq!(waves[1], vec!["lb-1a", "lb-2a", "lb-0b"]);
        assert_eq!(waves[2], vec!["lb-1b", "lb-2b"]);
    }

    #[test]
    fn refuses_what_cannot_be_planned() {
        assert_eq!(plan(&pairs(1), 0, 0), Err(PlanError::ZeroParallel));
        assert_eq!(plan(&[], 1, 0), Err(PlanError::Empty));
        let mut twice = pairs(2);
        twice[1].nodes[0] = "lb-0a".into();
        assert_eq!(
            plan(&twice, 1, 0),
            Err(PlanError::NodeInTwoGroups("lb-0a".into()))
        );
    }

    fn groups_strategy() -> impl Strategy<Value = Vec<Group>> {
        prop::collection::vec(1usize..4, 1..8).prop_map(|sizes| {
            sizes
                .into_iter()
                .enumerate()
                .map(|(g, size)| Group {
                    name: format!("g{g}"),
                    nodes: (0..size).map(|n| format!("n{g}-{n}")).collect(),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_both_nodes_of_a_pair_and_every_node_once(
            groups in groups_strategy(),
            max_parallel in 1usize..6,
            canary in 0usize..4,
        ) {
            let waves = plan(&groups, max_parallel, canary).expect("plan");
            let group_of: BTreeMap<&str, &str> = groups
                .iter()
                .flat_map(|g| g.nodes.iter().map(move |n| (n.as_str(), g.name.as_str())))
                .collect();
            let mut seen = BTreeSet::new();
            for (i, wave) in waves.iter().enumerate() {
                prop_assert!(!wave.is_empty());
                prop_assert!(wave.len() <= max_parallel);
                if i < canary {
                    prop_assert_eq!(wave.len(), 1, "canary waves are single nodes");
                }
                let mut groups_in_wave = BTreeSet::new();
                for node in wave {
                    prop_assert!(seen.insert(node.clone()), "{} twice", node);
                    prop_assert!(groups_in_wave.insert(group_of[node.as_str()]),
                        "two nodes of group {} in one wave", group_of[node.as_str()]);
                }
            }
            prop_assert_eq!(seen.len(), group_of.len());
            // Group order is kept.
            for group in &groups {
                let positions: Vec<usize> = group.nodes.iter()
                    .map(|n| waves.iter().position(|w| w.contains(n)).expect("planned"))
                    .collect();
                prop_assert!(positions.windows(2).all(|p| p[0] < p[1]));
            }
            prop_assert_eq!(plan(&groups, max_parallel, canary).expect("plan"), waves);
        }
    }
}
