//! The fleet config: one TOML file that expands into every node's config, plus the rollout
//! groups ("pairs") whose members must never be changed at the same time.
//!
//! ```toml
//! [defaults]            # merged under every node's table
//! [defaults.instance.web]
//! vrid = 51
//!
//! [nodes.lb-1]          # one table per node: its overrides
//! instance.web.priority = 150
//! [nodes.lb-2]
//! instance.web.priority = 100
//!
//! [pairs.web]           # applied one node at a time, in this order
//! nodes = ["lb-1", "lb-2"]
//! ```
//!
//! Expansion is a deep merge (tables merge key by key, anything else in the node table replaces
//! the default) producing each node's canonical TOML text; that text is then checked by the node
//! schema (`hav_proto::config`) like any node file. This module knows nothing of that schema, so
//! the two evolve independently. Errors name the file, the key path and what was expected.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A fleet file after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Node name → canonical TOML of its config.
    pub nodes: BTreeMap<String, String>,
    /// Rollout groups, sorted by name; a node is in at most one.
    pub groups: Vec<RolloutGroup>,
}

/// Nodes that are changed one after the other, stopping at the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutGroup {
    pub name: String,
    pub nodes: Vec<String>,
}

/// Why a fleet file was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {key}: {reason}")]
pub struct FleetError {
    pub file: String,
    /// Dotted key path, e.g. `pairs.web.nodes[1]`; `(file)` for a syntax error.
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    #[serde(default)]
    defaults: toml::Table,
    nodes: BTreeMap<String, toml::Table>,
    #[serde(default)]
    pairs: BTreeMap<String, RawPair>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    nodes: Vec<String>,
}

/// Parses and expands a fleet file. `file` is used in error messages only.
pub fn expand(file: &str, text: &str) -> Result<FleetConfig, FleetError> {
    let error = |key: String, reason: String| FleetError {
        file: file.to_owned(),
        key,
        reason,
    };
    let raw: RawFleet = toml::from_str(text)
        .map_err(|e| error("(file)".into(), e.to_string().trim().replace('\n', " ")))?;
    if raw.nodes.is_empty() {
        return Err(error(
            "nodes".into(),
            "at least one [nodes.<name>] table is required".into(),
        ));
    }
    let mut nodes = BTreeMap::new();
    for (name, overrides) in raw.nodes {
        if !crate::identity::valid_name(&name) {
            return Err(error(
                format!("nodes.{name}"),
                "node names are 1-63 characters of a-z, 0-9, '-', '_', '.'".into(),
            ));
        }
        let mut merged = raw.defaults.clone();
        deep_merge(&mut merged, overrides);
        let text =
            toml::to_string(&merged).map_err(|e| error(format!("nodes.{name}"), e.to_string()))?;
        nodes.insert(name, text);
    }
    let mut grouped = BTreeSet::new();
    let mut groups = Vec::new();
    for (name, pair) in raw.pairs {
        if pair.nodes.is_empty() {
            return Err(error(
                format!("pairs.{name}.nodes"),
                "must name at least one node".into(),
            ));
        }
        for (i, node) in pair.nodes.iter().enumerate() {
            let key = format!("pairs.{name}.nodes[{i}]");
            if !nodes.contains_key(node) {
                return Err(error(
                    key,
                    format!("node `{node}` is not defined under [nodes]"),
                ));
            }
            if !grouped.insert(node.clone()) {
                return Err(error(
                    key,
                    format!("node `{node}` is already in another pair"),
                ));
            }
        }
        groups.push(RolloutGroup {
            name,
            nodes: pair.nodes,
        });
    }
    Ok(FleetConfig { nodes, groups })
}

/// Merges `overrides` into `base`: tables recursively, anything else replaced.
fn deep_merge(base: &mut toml::Table, overrides: toml::Table) {
    for (key, value) in overrides {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(table)) => {
                deep_merge(base_table, table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[defaults.instance.web]
vrid = 51
priority = 100
vips = ["198.51.100.10/24"]

[nodes.lb-1]
instance.web.priority = 150

[nodes.lb-2]

[pairs.web]
nodes = ["lb-1", "lb-2"]
"#;

    #[test]
    fn expands_defaults_under_each_node() {
        let fleet = expand("fleet.toml", FLEET).expect("valid fleet");
        let lb1: toml::Table = toml::from_str(&fleet.nodes["lb-1"]).expect("toml");
        let lb2: toml::Table = toml::from_str(&fleet.nodes["lb-2"]).expect("toml");
        assert_eq!(lb1["instance"]["web"]["priority"].as_integer(), Some(150));
        assert_eq!(lb1["instance"]["web"]["vrid"].as_integer(), Some(51));
        assert_eq!(lb2["instance"]["web"]["priority"].as_integer(), Some(100));
        assert_eq!(
            fleet.groups,
            vec![RolloutGroup {
                name: "web".into(),
                nodes: vec!["lb-1".into(), "lb-2".into()]
            }]
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let unknown = FLEET.replace(
            "nodes = [\"lb-1\", \"lb-2\"]",
            "nodes = [\"lb-1\", \"lb-3\"]",
        );
        let error = expand("fleet.toml", &unknown).expect_err("unknown node");
        assert_eq!(
            error.to_string(),
            "fleet.toml: pairs.web.nodes[1]: node `lb-3` is not defined under [nodes]"
        );
        let twice = format!("{FLEET}\n[pairs.other]\nnodes = [\"lb-2\"]\n");
        let error = expand("fleet.toml", &twice).expect_err("node in two pairs");
        // Pairs are checked in name order: `other` claims lb-2 first.
        assert_eq!(error.key, "pairs.web.nodes[1]");
        assert!(error.reason.contains("already in another pair"));
        let typo = format!("{FLEET}\n[nodez.lb-3]\n");
        let error = expand("f.toml", &typo).expect_err("unknown top-level key");
        assert!(error.reason.contains("nodez"), "{error}");
    }
}
