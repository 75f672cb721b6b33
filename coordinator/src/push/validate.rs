//! From a proposal to a [`ValidatedPush`]: each node config parsed once with the node schema (the
//! code the agent loads it with), or a fleet file expanded once; what the expansion decided per
//! group is kept as [`GroupLayout`]s. Every problem is reported at once, one per node or fleet
//! error.

use std::collections::{BTreeMap, BTreeSet};

use hav_proto::config::NodeConfig;
use hav_proto::v1::ValidationError;

use crate::error::ControlError;
use crate::store::GroupLayout;

/// A push as it came in, before anything was checked.
#[derive(Debug, Clone)]
pub enum Proposed {
    /// A fleet file (`hav_proto::fleet`): the whole intent, expanded into every node's config.
    Fleet { name: String, text: String },
    /// Node configs (node, TOML text), merged into the latest version, and rollout groups
    /// (empty: keep the latest's).
    Nodes {
        configs: Vec<(String, String)>,
        groups: Vec<(String, Vec<String>)>,
    },
}

/// A push that passed validation, as [`validate`] returns it.
#[derive(Debug, Clone)]
pub struct ValidatedPush {
    /// The configs this push sets, by node.
    pub nodes: BTreeMap<String, ValidatedNode>,
    /// True for a fleet file: its nodes replace every node config. Otherwise they are merged
    /// into the latest version's.
    pub whole_fleet: bool,
    /// Rollout groups (name → members in order); `None`: keep the latest version's.
    pub groups: Option<BTreeMap<String, Vec<String>>>,
    /// What a fleet file's expansion laid out per group, by group name; `None` for node configs
    /// (the latest version's stay).
    pub layouts: Option<Vec<GroupLayout>>,
}

/// One node's config, validated, and its canonical text: what the coordinator stores, diffs and
/// sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedNode {
    pub config: NodeConfig,
    pub text: String,
}

impl ValidatedNode {
    fn new(config: NodeConfig) -> ValidatedNode {
        let text = config.to_toml();
        ValidatedNode { config, text }
    }
}

/// Checks `proposed`; on refusal, every problem found.
pub fn validate(proposed: Proposed) -> Result<ValidatedPush, Vec<ValidationError>> {
    match proposed {
        Proposed::Fleet { name, text } => expand_fleet(&name, &text),
        Proposed::Nodes { configs, groups } => {
            let mut nodes = BTreeMap::new();
            let mut errors = Vec::new();
            for (node, text) in configs {
                match validate_node(&node, &text) {
                    Ok(validated) => {
                        nodes.insert(node, validated);
                    }
                    Err(message) => errors.push(ValidationError { node, message }),
                }
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            Ok(ValidatedPush {
                nodes,
                whole_fleet: false,
                groups: (!groups.is_empty()).then(|| groups.into_iter().collect()),
                layouts: None,
            })
        }
    }
}

/// A config text for `node`: the node schema, and `[node] name` equal to `node`. The error lists
/// every problem, `origin: key.path: reason`, separated by `; `.
fn validate_node(node: &str, text: &str) -> Result<ValidatedNode, String> {
    if !hav_proto::identity::valid_name(node) {
        return Err(format!("`{node}` is not a valid node name"));
    }
    let config = hav_proto::config::parse_node_config(text, &format!("config of {node}"))
        .map_err(|errors| errors.lines().join("; "))?;
    if config.node.name != node {
        return Err(format!(
            "config of {node}: node.name: is {:?}; a node's config must name the node itself",
            config.node.name
        ));
    }
    Ok(ValidatedNode::new(config))
}

/// Expands and validates a fleet file (`hav_proto::fleet`); `name` names it in errors.
fn expand_fleet(name: &str, text: &str) -> Result<ValidatedPush, Vec<ValidationError>> {
    let name = if name.is_empty() { "fleet" } else { name };
    let fleet = hav_proto::fleet::expand(name, text).map_err(|errors| {
        (errors.0.into_iter())
            .map(|error| ValidationError {
                node: error.node.clone().unwrap_or_default(),
                message: error.to_string(),
            })
            .collect::<Vec<_>>()
    })?;
    let groups: BTreeMap<String, Vec<String>> = (fleet.groups.iter())
        .map(|group| (group.name.clone(), group.nodes.clone()))
        .collect();
    let mut layouts: Vec<GroupLayout> = (fleet.layout.iter())
        .map(|group| GroupLayout {
            name: group.name.clone(),
            dns_name: group.dns_name.clone(),
            vips: group.vips.iter().map(|vip| vip.address).collect(),
            nodes: groups.get(&group.name).cloned().unwrap_or_default(),
        })
        .collect();
    layouts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ValidatedPush {
        nodes: (fleet.nodes.into_iter())
            .map(|(node, config)| (node, ValidatedNode::new(config)))
            .collect(),
        whole_fleet: true,
        groups: Some(groups),
        layouts: Some(layouts),
    })
}

/// Every member of a rollout group must have a config, and be in one group only.
pub fn check_groups(
    groups: &BTreeMap<String, Vec<String>>,
    nodes: &BTreeMap<String, String>,
) -> Result<(), ControlError> {
    let mut seen = BTreeSet::new();
    for (name, members) in groups {
        for node in members {
            if !nodes.contains_key(node) {
                return Err(ControlError::InvalidConfig(format!(
                    "rollout group `{name}` names `{node}`, which has no config"
                )));
            }
            if !seen.insert(node) {
                return Err(ControlError::InvalidConfig(format!(
                    "`{node}` is in more than one rollout group"
                )));
            }
        }
    }
    Ok(())
}

/// A refused push as one error: a line per problem, `node: message` (the message alone when it
/// names the node already).
pub fn refusal(errors: &[ValidationError]) -> ControlError {
    let lines: Vec<String> = (errors.iter())
        .map(|e| {
            if e.node.is_empty() || e.message.contains(&e.node) {
                e.message.clone()
            } else {
                format!("{}: {}", e.node, e.message)
            }
        })
        .collect();
    ControlError::InvalidConfig(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.100/24", "198.51.100.101/24"]
dns_name = "web.example.test"
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"

[[group]]
name = "api"
interface = "eth0"
vips = ["198.51.100.110/24"]
[[group.node]]
name = "lb-3"
address = "198.51.100.13"
[[group.node]]
name = "lb-4"
address = "198.51.100.14"
"#;

    fn node_toml(node: &str) -> String {
        format!(
            "[node]\nname = \"{node}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
             vrid = 10\nvips = [\"198.51.100.100/24\"]\n"
        )
    }

    #[test]
    fn a_fleet_is_expanded_once_into_typed_configs_their_text_groups_and_layouts() {
        let fleet = Proposed::Fleet {
            name: "fleet.toml".into(),
            text: FLEET.into(),
        };
        let push = validate(fleet).expect("valid");
        assert!(push.whole_fleet);
        let lb1 = &push.nodes["lb-1"];
        assert_eq!(lb1.text, lb1.config.to_toml());
        let instance = lb1.config.instance("web-vip0").expect("instance");
        assert_eq!(instance.priority.get(), 150);
        let groups = push.groups.expect("groups");
        assert_eq!(groups["web"], ["lb-1", "lb-2"]);
        let layouts = push.layouts.expect("layouts");
        // By group name, whatever the file's order.
        let names: Vec<&str> = layouts.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert_eq!(layouts[1].dns_name.as_deref(), Some("web.example.test"));
        assert_eq!(layouts[1].vips.len(), 2);
        assert_eq!(layouts[1].nodes, ["lb-1", "lb-2"]);
    }

    #[test]
    fn node_configs_are_canonical_and_must_name_their_node() {
        let text = node_toml("lb-1");
        let proposed = Proposed::Nodes {
            configs: vec![("lb-1".into(), text.clone())],
            groups: Vec::new(),
        };
        let push = validate(proposed).expect("valid");
        let canonical = hav_proto::config::parse_node_config(&text, "test")
            .expect("valid")
            .to_toml();
        assert_eq!(push.nodes["lb-1"].text, canonical);
        assert!(!push.whole_fleet && push.groups.is_none() && push.layouts.is_none());

        let proposed = Proposed::Nodes {
            configs: vec![
                ("lb-2".into(), text),
                ("Bad Name".into(), node_toml("x")),
                ("lb-3".into(), "[instance\n".into()),
            ],
            groups: Vec::new(),
        };
        let errors = validate(proposed).expect_err("refused");
        let messages: Vec<(&str, &str)> = (errors.iter())
            .map(|e| (e.node.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            messages[..2],
            [
                (
                    "lb-2",
                    "config of lb-2: node.name: is \"lb-1\"; a node's config must name the node \
                     itself"
                ),
                ("Bad Name", "`Bad Name` is not a valid node name"),
            ]
        );
        assert!(
            messages[2]
                .1
                .starts_with("config of lb-3: line 1, column 10:"),
            "{messages:?}"
        );
    }

    #[test]
    fn a_refusal_names_each_node_once() {
        let errors = [
            ValidationError {
                node: "lb-1".into(),
                message: "config of lb-1: instance[0].vrid: out of range".into(),
            },
            ValidationError {
                node: "lb-2".into(),
                message: "`x` is wrong".into(),
            },
        ];
        assert_eq!(
            refusal(&errors).to_string(),
            "invalid config: config of lb-1: instance[0].vrid: out of range\nlb-2: `x` is wrong"
        );
    }
}
