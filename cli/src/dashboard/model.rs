//! The dashboard's picture of the fleet, built only from what the coordinator reports: node
//! statuses (`ListNodes`) and fleet events (`WatchEvents`). Plain data, no IO, no clock (times
//! come in as arguments), so every rendering is a unit test.
//!
//! Everything kept is bounded: the timeline holds the last [`TIMELINE_CAPACITY`] entries, the
//! rollouts the last [`ROLLOUTS_KEPT`] jobs, the remembered VIPs at most [`INSTANCES_REMEMBERED`]
//! instances, the open split brains at most [`SPLIT_BRAINS_KEPT`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use hav_proto::v1::{
    FleetEvent, NodeStatus, RolloutJob, SplitBrain, VrrpState, event, fleet_event,
};
use serde_json::{Value, json};

/// Timeline entries kept (older ones fall off).
pub const TIMELINE_CAPACITY: usize = 500;
/// Rollout jobs kept (the highest ids).
pub const ROLLOUTS_KEPT: usize = 16;
/// Instances whose VIPs are remembered while nobody holds them.
pub const INSTANCES_REMEMBERED: usize = 4096;
/// Open split brains kept.
pub const SPLIT_BRAINS_KEPT: usize = 1024;
/// A failover's trace is looked for this long on either side of its transition.
pub const TRACE_WINDOW_MS: u64 = 30_000;

/// The group of an instance: fleet files name instances `<group>-vip<i>`
/// (`hav_proto::fleet`); any other instance is a group of its own.
pub fn group_of(instance: &str) -> &str {
    match instance.rsplit_once("-vip") {
        Some((group, index))
            if !group.is_empty()
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit()) =>
        {
            group
        }
        _ => instance,
    }
}

/// `master`, `backup`, … for a VRRP state number.
pub fn state_label(state: i32) -> String {
    crate::commands::state_name(state)
}

/// A `--trace-url` template: an `http(s)://` URL in which `{node}`, `{instance}`, `{vrid}`,
/// `{unix_ms}`, `{start_ms}`, `{end_ms}`, `{start_us}` and `{end_us}` are replaced (values
/// percent-encoded); other braces (JSON in a query, say) are kept as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceTemplate {
    text: String,
}

/// The placeholders a [`TraceTemplate`] knows.
pub const TRACE_PLACEHOLDERS: [&str; 8] = [
    "node", "instance", "vrid", "unix_ms", "start_ms", "end_ms", "start_us", "end_us",
];

impl TraceTemplate {
    /// Parses a template: an `http://` or `https://` URL whose `{word}` placeholders are all
    /// known.
    pub fn parse(text: &str) -> Result<TraceTemplate, String> {
        if !(text.starts_with("http://") || text.starts_with("https://")) {
            return Err(format!("`{text}`: expected an http:// or https:// URL"));
        }
        for word in placeholders(text) {
            if !TRACE_PLACEHOLDERS.contains(&word) {
                return Err(format!(
                    "`{{{word}}}` is not a placeholder; known: {}",
                    TRACE_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ));
            }
        }
        Ok(TraceTemplate {
            text: text.to_owned(),
        })
    }

    /// The URL of the trace of `instance`'s transition on `node` at `unix_ms`.
    pub fn render(&self, node: &str, instance: &str, vrid: u32, unix_ms: u64) -> String {
        let start = unix_ms.saturating_sub(TRACE_WINDOW_MS);
        let end = unix_ms.saturating_add(TRACE_WINDOW_MS);
        let value = |word: &str| -> Option<String> {
            Some(match word {
                "node" => percent_encode(node),
                "instance" => percent_encode(instance),
                "vrid" => vrid.to_string(),
                "unix_ms" => unix_ms.to_string(),
                "start_ms" => start.to_string(),
                "end_ms" => end.to_string(),
                "start_us" => start.saturating_mul(1000).to_string(),
                "end_us" => end.saturating_mul(1000).to_string(),
                _ => return None,
            })
        };
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}').map(|close| (&after[..close], close)) {
                Some((word, close)) if is_word(word) && value(word).is_some() => {
                    out.push_str(&value(word).unwrap_or_default());
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

fn is_word(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// The `{word}`s of a template.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|piece| {
        let word = piece.split_once('}')?.0;
        is_word(word).then_some(word)
    })
}

/// RFC 3986 percent-encoding of everything but the unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The coordinator link as the dashboard sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub connected: bool,
    pub since_unix_ms: u64,
    /// Why it is down (empty while up).
    pub error: String,
}

/// What an event changed.
#[derive(Debug, Default)]
pub struct Applied {
    /// A new timeline entry.
    pub timeline: Option<Value>,
    /// A rollout job's new state.
    pub rollout: Option<Value>,
    /// The alarms changed: the status should be published again.
    pub status_changed: bool,
    /// Node state changed: the statuses should be fetched again soon.
    pub refresh: bool,
}

/// The whole picture.
#[derive(Debug)]
pub struct FleetModel {
    nodes: Vec<NodeStatus>,
    /// Instance → every VIP it was seen holding (so a VIP nobody holds is still listed).
    vips: BTreeMap<String, BTreeSet<String>>,
    /// VIP → the open split brain over it.
    split_brains: BTreeMap<String, SplitBrain>,
    timeline: VecDeque<Value>,
    rollouts: BTreeMap<u64, Value>,
    link: Link,
    trace: Option<TraceTemplate>,
    /// Who we are and whom we ask (shown in the header).
    about: Value,
}

impl FleetModel {
    pub fn new(about: Value, trace: Option<TraceTemplate>) -> FleetModel {
        FleetModel {
            nodes: Vec::new(),
            vips: BTreeMap::new(),
            split_brains: BTreeMap::new(),
            timeline: VecDeque::new(),
            rollouts: BTreeMap::new(),
            link: Link::default(),
            trace,
            about,
        }
    }

    /// Replaces the node statuses (a `ListNodes` answer).
    pub fn set_nodes(&mut self, nodes: Vec<NodeStatus>) {
        for node in &nodes {
            for instance in node.snapshot.iter().flat_map(|s| &s.instances) {
                if instance.vips_held.is_empty() {
                    continue;
                }
                if !self.vips.contains_key(&instance.name)
                    && self.vips.len() >= INSTANCES_REMEMBERED
                {
                    continue;
                }
                self.vips
                    .entry(instance.name.clone())
                    .or_default()
                    .extend(instance.vips_held.iter().cloned());
            }
        }
        self.nodes = nodes;
    }

    /// Sets the link state; whether it changed.
    pub fn set_link(&mut self, connected: bool, error: String, unix_ms: u64) -> bool {
        if self.link.connected == connected && self.link.error == error {
            return false;
        }
        let since = if self.link.connected == connected && self.link.since_unix_ms != 0 {
            self.link.since_unix_ms
        } else {
            unix_ms
        };
        self.link = Link {
            connected,
            since_unix_ms: since,
            error,
        };
        true
    }

    pub fn link_json(&self) -> Value {
        json!({
            "connected": self.link.connected,
            "since_unix_ms": self.link.since_unix_ms,
            "error": self.link.error,
        })
    }

    /// Takes one fleet event in.
    pub fn apply(&mut self, event: &FleetEvent) -> Applied {
        let mut applied = Applied::default();
        let entry = |kind: &str, text: String| {
            let mut value = json!({ "unix_ms": event.unix_ms, "node": event.node });
            value["kind"] = json!(kind);
            value["text"] = json!(text);
            value
        };
        match &event.kind {
            Some(fleet_event::Kind::Presence(presence)) => {
                applied.refresh = true;
                let text = if presence.connected {
                    "control link up"
                } else {
                    "control link down"
                };
                applied.timeline = Some(entry("presence", text.into()));
            }
            Some(fleet_event::Kind::Lagged(missed)) => {
                applied.refresh = true;
                applied.timeline = Some(entry(
                    "lagged",
                    format!(
                        "this dashboard missed {missed} events \
                         (the coordinator's queue for it overflowed)"
                    ),
                ));
            }
            Some(fleet_event::Kind::Agent(agent)) => match &agent.kind {
                Some(event::Kind::Transition(transition)) => {
                    applied.refresh = true;
                    applied.timeline = Some(self.transition_entry(event, transition));
                }
                Some(event::Kind::Tracker(tracker)) => {
                    applied.refresh = true;
                    let mut text = format!(
                        "tracker {} {} (priority {:+})",
                        tracker.tracker,
                        if tracker.up { "up" } else { "down" },
                        tracker.priority_delta
                    );
                    if !tracker.detail.is_empty() {
                        text.push_str(&format!(": {}", tracker.detail));
                    }
                    applied.timeline = Some(entry("tracker", text));
                }
                // Counters and command output are not timeline material.
                Some(event::Kind::Counters(_) | event::Kind::ExecOutput(_)) | None => {}
            },
            Some(fleet_event::Kind::SplitBrain(split)) => {
                let was_open = self.split_brains.remove(&split.vip).is_some();
                if !split.resolved && self.split_brains.len() < SPLIT_BRAINS_KEPT {
                    self.split_brains.insert(split.vip.clone(), split.clone());
                }
                // The coordinator also reports the end of a candidate that never outlived its
                // grace period; only the end of one we showed is news.
                if !split.resolved || was_open {
                    applied.status_changed = true;
                    let line = crate::orchestrate::split_brain_line(split);
                    let mut value = entry("split-brain", line);
                    value["resolved"] = json!(split.resolved);
                    applied.timeline = Some(value);
                }
            }
            Some(fleet_event::Kind::Rollout(job)) => {
                // Its steps drain and undrain nodes.
                applied.refresh = true;
                let value = rollout_json(job);
                let previous = self.rollouts.insert(job.id, value.clone());
                if previous.as_ref().map(|p| &p["status"]) != Some(&value["status"]) {
                    applied.timeline = Some(entry("rollout", crate::orchestrate::job_summary(job)));
                }
                while self.rollouts.len() > ROLLOUTS_KEPT {
                    self.rollouts.pop_first();
                }
                applied.rollout = Some(value);
            }
            None => {}
        }
        if let Some(entry) = &applied.timeline {
            if self.timeline.len() >= TIMELINE_CAPACITY {
                self.timeline.pop_front();
            }
            self.timeline.push_back(entry.clone());
        }
        applied
    }

    fn transition_entry(&self, event: &FleetEvent, t: &hav_proto::v1::Transition) -> Value {
        let (from, to) = (state_label(t.from), state_label(t.to));
        let master = VrrpState::Master as i32;
        let failover = t.from == master || t.to == master;
        let vrid = self.vrid_of(&event.node, &t.instance);
        let trace_url = match (&self.trace, failover) {
            (Some(template), true) => {
                Value::String(template.render(&event.node, &t.instance, vrid, event.unix_ms))
            }
            _ => Value::Null,
        };
        json!({
            "unix_ms": event.unix_ms,
            "node": event.node,
            "kind": "transition",
            "text": format!("{}: {from} → {to}", t.instance),
            "instance": t.instance,
            "group": group_of(&t.instance),
            "vrid": vrid,
            "from": from,
            "to": to,
            "cause": t.cause,
            "failover": failover,
            "trace_url": trace_url,
        })
    }

    fn vrid_of(&self, node: &str, instance: &str) -> u32 {
        let instances = |n: &NodeStatus| {
            n.snapshot
                .iter()
                .flat_map(|s| &s.instances)
                .filter(|i| i.name == instance)
                .map(|i| i.vrid)
                .collect::<Vec<_>>()
        };
        // The node's own view first, then any member's (the VRID is the same on every member).
        (self.nodes.iter().filter(|n| n.name == node))
            .chain(self.nodes.iter())
            .flat_map(instances)
            .next()
            .unwrap_or(0)
    }

    /// The status: nodes, groups with their VIPs and holders, alarms.
    pub fn status_json(&self) -> Value {
        let groups = self.groups();
        let alarms = self.alarms(&groups);
        let node_groups = |name: &str| -> Vec<&str> {
            groups
                .iter()
                .filter(|g| g.nodes.contains(name))
                .map(|g| g.name.as_str())
                .collect()
        };
        let nodes: Vec<Value> = (self.nodes.iter())
            .map(|node| {
                let mut value = crate::commands::node_json(node);
                value["groups"] = json!(node_groups(&node.name));
                value
            })
            .collect();
        json!({
            "nodes": nodes,
            "groups": groups.iter().map(Group::json).collect::<Vec<_>>(),
            "alarms": alarms,
        })
    }

    fn groups(&self) -> Vec<Group> {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for node in &self.nodes {
            let instances = node.snapshot.iter().flat_map(|s| &s.instances);
            let mut any = false;
            for instance in instances {
                any = true;
                let name = group_of(&instance.name).to_owned();
                let group = groups
                    .entry(name.clone())
                    .or_insert_with(|| Group::new(name));
                group.nodes.insert(node.name.clone());
                let vips = self.vips.get(&instance.name);
                let entry = group
                    .instances
                    .entry(instance.name.clone())
                    .or_insert_with(|| InstanceView {
                        name: instance.name.clone(),
                        vrid: instance.vrid,
                        vips: vips.cloned().unwrap_or_default(),
                        members: Vec::new(),
                    });
                entry.vips.extend(instance.vips_held.iter().cloned());
                entry.members.push(Member {
                    node: node.name.clone(),
                    connected: node.connected,
                    state: state_label(instance.state),
                    effective_priority: instance.effective_priority,
                    configured_priority: instance.configured_priority,
                    priority_override: instance.priority_override,
                    holds: !instance.vips_held.is_empty(),
                });
            }
            if !any {
                let group = groups
                    .entry(String::new())
                    .or_insert_with(|| Group::new(String::new()));
                group.nodes.insert(node.name.clone());
            }
        }
        let mut groups: Vec<Group> = groups.into_values().collect();
        // Nodes without instances (no config yet) come last.
        groups.sort_by_key(|g| g.name.is_empty());
        groups
    }

    fn alarms(&self, groups: &[Group]) -> Vec<Value> {
        let mut alarms = Vec::new();
        for split in self.split_brains.values() {
            alarms.push(json!({
                "kind": "split-brain",
                "severity": "critical",
                "subject": split.vip,
                "text": crate::orchestrate::split_brain_line(split),
            }));
        }
        for group in groups {
            for instance in group.instances.values() {
                let holders = instance.holders();
                let someone_reports = instance.members.iter().any(|m| m.connected);
                if holders.is_empty() && someone_reports && !instance.vips.is_empty() {
                    alarms.push(json!({
                        "kind": "no-holder",
                        "severity": "critical",
                        "subject": instance.name,
                        "text": format!(
                            "{} ({}): no connected node holds it",
                            instance.name,
                            join(&instance.vips)
                        ),
                    }));
                }
            }
        }
        for node in &self.nodes {
            if node.snapshot.as_ref().is_some_and(|s| s.drained) {
                alarms.push(json!({
                    "kind": "draining",
                    "severity": "warning",
                    "subject": node.name,
                    "text": format!("{} is drained: its peers hold its VIPs", node.name),
                }));
            }
            if !node.connected {
                alarms.push(json!({
                    "kind": "disconnected",
                    "severity": "warning",
                    "subject": node.name,
                    "text": format!(
                        "{}: no control link (VRRP goes on without the coordinator)",
                        node.name
                    ),
                }));
            }
        }
        alarms
    }

    /// The timeline, oldest first.
    pub fn timeline_json(&self) -> Value {
        Value::Array(self.timeline.iter().cloned().collect())
    }

    /// The rollouts seen, newest first.
    pub fn rollouts_json(&self) -> Value {
        Value::Array(self.rollouts.values().rev().cloned().collect())
    }

    pub fn about_json(&self) -> &Value {
        &self.about
    }

    /// Everything at once: what a page gets when it connects (and again after it lagged).
    pub fn snapshot_json(&self) -> Value {
        json!({
            "about": self.about,
            "link": self.link_json(),
            "status": self.status_json(),
            "timeline": self.timeline_json(),
            "rollouts": self.rollouts_json(),
        })
    }
}

/// A rollout job with its progress.
pub fn rollout_json(job: &RolloutJob) -> Value {
    let mut value = crate::orchestrate::job_json(job);
    let done = job.nodes.iter().filter(|n| n.step == "done").count();
    value["done"] = json!(done);
    value["total"] = json!(job.nodes.len());
    value["created_unix_ms"] = json!(job.created_unix_ms);
    value
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// One group (a fleet file's `[[group]]`: a pair or more of nodes and their VIPs).
#[derive(Debug)]
struct Group {
    name: String,
    nodes: BTreeSet<String>,
    instances: BTreeMap<String, InstanceView>,
}

#[derive(Debug)]
struct InstanceView {
    name: String,
    vrid: u32,
    vips: BTreeSet<String>,
    members: Vec<Member>,
}

#[derive(Debug)]
struct Member {
    node: String,
    connected: bool,
    state: String,
    effective_priority: u32,
    configured_priority: u32,
    priority_override: Option<u32>,
    holds: bool,
}

impl Group {
    fn new(name: String) -> Group {
        Group {
            name,
            nodes: BTreeSet::new(),
            instances: BTreeMap::new(),
        }
    }

    fn json(&self) -> Value {
        let mut instances: Vec<&InstanceView> = self.instances.values().collect();
        instances.sort_by(|a, b| (a.vrid, &a.name).cmp(&(b.vrid, &b.name)));
        json!({
            "name": self.name,
            "nodes": self.nodes,
            "instances": instances.iter().map(|i| i.json()).collect::<Vec<_>>(),
        })
    }
}

impl InstanceView {
    /// The connected masters that hold the VIPs.
    fn holders(&self) -> Vec<&str> {
        (self.members.iter())
            .filter(|m| m.connected && m.holds && m.state == "master")
            .map(|m| m.node.as_str())
            .collect()
    }

    /// Nodes whose last report (before their link went) had them holding the VIPs.
    fn stale_holders(&self) -> Vec<&str> {
        (self.members.iter())
            .filter(|m| !m.connected && m.holds)
            .map(|m| m.node.as_str())
            .collect()
    }

    fn json(&self) -> Value {
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by(|a, b| a.node.cmp(&b.node));
        json!({
            "instance": self.name,
            "vrid": self.vrid,
            "vips": self.vips,
            "holders": self.holders(),
            "stale_holders": self.stale_holders(),
            "members": members.iter().map(|m| json!({
                "node": m.node,
                "connected": m.connected,
                "state": m.state,
                "effective_priority": m.effective_priority,
                "configured_priority": m.configured_priority,
                "priority_override": m.priority_override,
                "holds": m.holds,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hav_proto::v1::{
        Event, InstanceState, NodePresence, Presence, RolloutNode, StateSnapshot, Transition,
    };

    fn node(name: &str, connected: bool, state: VrrpState, vips: &[&str]) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            connected,
            snapshot: Some(StateSnapshot {
                config_version: 3,
                instances: vec![InstanceState {
                    name: "alpha-vip0".into(),
                    vrid: 10,
                    state: state as i32,
                    effective_priority: 100,
                    configured_priority: 100,
                    vips_held: vips.iter().map(|v| (*v).to_owned()).collect(),
                    ..InstanceState::default()
                }],
                ..StateSnapshot::default()
            }),
            ..NodeStatus::default()
        }
    }

    fn transition(node: &str, from: VrrpState, to: VrrpState, unix_ms: u64) -> FleetEvent {
        FleetEvent {
            node: node.into(),
            unix_ms,
            kind: Some(fleet_event::Kind::Agent(Event {
                unix_ms,
                kind: Some(event::Kind::Transition(Transition {
                    instance: "alpha-vip0".into(),
                    from: from as i32,
                    to: to as i32,
                    cause: "master-down timer".into(),
                })),
            })),
        }
    }

    fn model() -> FleetModel {
        FleetModel::new(json!({}), None)
    }

    #[test]
    fn instances_named_by_a_fleet_file_fall_into_their_group() {
        assert_eq!(group_of("alpha-vip0"), "alpha");
        assert_eq!(group_of("edge-west-vip12"), "edge-west");
        assert_eq!(group_of("VI_1"), "VI_1");
        assert_eq!(group_of("-vip3"), "-vip3");
        assert_eq!(group_of("alpha-vipx"), "alpha-vipx");
    }

    #[test]
    fn the_holder_is_the_connected_master_holding_the_vips() {
        let mut model = model();
        model.set_nodes(vec![
            node("a1", true, VrrpState::Master, &["198.51.100.100/24"]),
            node("a2", true, VrrpState::Backup, &[]),
        ]);
        let status = model.status_json();
        let instance = &status["groups"][0]["instances"][0];
        assert_eq!(status["groups"][0]["name"], "alpha");
        assert_eq!(status["groups"][0]["nodes"], json!(["a1", "a2"]));
        assert_eq!(instance["holders"], json!(["a1"]));
        assert_eq!(instance["vips"], json!(["198.51.100.100/24"]));
        assert_eq!(instance["members"][1]["state"], "backup");
        assert_eq!(status["nodes"][0]["groups"], json!(["alpha"]));
        assert_eq!(status["alarms"], json!([]));
    }

    #[test]
    fn a_vip_nobody_holds_is_still_listed_and_raises_an_alarm() {
        let mut model = model();
        model.set_nodes(vec![
            node("a1", true, VrrpState::Master, &["198.51.100.100/24"]),
            node("a2", true, VrrpState::Backup, &[]),
        ]);
        model.set_nodes(vec![
            node("a1", false, VrrpState::Master, &["198.51.100.100/24"]),
            node("a2", true, VrrpState::Backup, &[]),
        ]);
        let status = model.status_json();
        let instance = &status["groups"][0]["instances"][0];
        assert_eq!(instance["holders"], json!([]));
        assert_eq!(instance["stale_holders"], json!(["a1"]));
        let kinds: Vec<&str> = (status["alarms"].as_array().into_iter().flatten())
            .filter_map(|a| a["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["no-holder", "disconnected"]);
    }

    #[test]
    fn a_failover_enters_the_timeline_with_its_cause_and_trace_link() {
        let template = TraceTemplate::parse(
            "http://jaeger:16686/search?service=hav-agent&tags={\"hav.node\":\"{node}\"}\
             &start={start_us}&end={end_us}&vrid={vrid}",
        )
        .expect("a valid template");
        let mut model = FleetModel::new(json!({}), Some(template));
        model.set_nodes(vec![node("a2", true, VrrpState::Backup, &[])]);
        let applied = model.apply(&transition(
            "a2",
            VrrpState::Backup,
            VrrpState::Master,
            1_700_000_000_000,
        ));
        assert!(applied.refresh);
        let entry = applied.timeline.expect("a timeline entry");
        assert_eq!(entry["text"], "alpha-vip0: backup → master");
        assert_eq!(entry["cause"], "master-down timer");
        assert_eq!(entry["failover"], true);
        assert_eq!(
            entry["trace_url"],
            "http://jaeger:16686/search?service=hav-agent&tags={\"hav.node\":\"a2\"}\
             &start=1699999970000000&end=1700000030000000&vrid=10"
        );
        assert_eq!(model.timeline_json().as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn a_template_with_an_unknown_placeholder_or_scheme_is_refused() {
        let unknown = TraceTemplate::parse("https://t/{trace_id}").expect_err("unknown");
        assert!(unknown.contains("{trace_id}"), "{unknown}");
        assert!(TraceTemplate::parse("javascript:alert(1)").is_err());
        let values = TraceTemplate::parse("https://t/{node}?q={\"a\":1}").expect("valid");
        assert_eq!(
            values.render("a b", "i", 1, 0),
            "https://t/a%20b?q={\"a\":1}"
        );
    }

    #[test]
    fn the_timeline_and_the_rollouts_stay_bounded() {
        let mut model = model();
        for i in 0..(TIMELINE_CAPACITY as u64 + 10) {
            model.apply(&FleetEvent {
                node: "a1".into(),
                unix_ms: i,
                kind: Some(fleet_event::Kind::Presence(Presence {
                    connected: true,
                    state: NodePresence::Connected as i32,
                })),
            });
        }
        let timeline = model.timeline_json();
        assert_eq!(timeline.as_array().map(Vec::len), Some(TIMELINE_CAPACITY));
        assert_eq!(timeline[0]["unix_ms"], 10);
        for id in 0..(ROLLOUTS_KEPT as u64 + 4) {
            model.apply(&FleetEvent {
                kind: Some(fleet_event::Kind::Rollout(RolloutJob {
                    id,
                    status: "running".into(),
                    nodes: vec![RolloutNode {
                        node: "a1".into(),
                        step: "done".into(),
                        ..RolloutNode::default()
                    }],
                    ..RolloutJob::default()
                })),
                ..FleetEvent::default()
            });
        }
        let rollouts = model.rollouts_json();
        assert_eq!(rollouts.as_array().map(Vec::len), Some(ROLLOUTS_KEPT));
        assert_eq!(rollouts[0]["id"], ROLLOUTS_KEPT as u64 + 3);
        assert_eq!(rollouts[0]["done"], 1);
        assert_eq!(rollouts[0]["total"], 1);
    }

    #[test]
    fn a_split_brain_is_an_alarm_until_resolved() {
        let mut model = model();
        let split = |resolved| FleetEvent {
            kind: Some(fleet_event::Kind::SplitBrain(SplitBrain {
                vip: "198.51.100.100".into(),
                vrid: 10,
                masters: vec!["a1".into(), "a2".into()],
                resolved,
                action: String::new(),
            })),
            ..FleetEvent::default()
        };
        // The end of a candidate never raised is not news.
        assert!(model.apply(&split(true)).timeline.is_none());
        assert!(model.apply(&split(false)).status_changed);
        assert_eq!(model.status_json()["alarms"][0]["kind"], "split-brain");
        let over = model.apply(&split(true));
        assert_eq!(over.timeline.expect("an entry")["resolved"], true);
        assert_eq!(model.status_json()["alarms"], json!([]));
    }

    #[test]
    fn the_link_keeps_its_since_while_it_stays_down() {
        let mut model = model();
        assert!(model.set_link(false, "refused".into(), 5));
        assert!(!model.set_link(false, "refused".into(), 9));
        assert!(model.set_link(false, "timeout".into(), 12));
        assert_eq!(model.link_json()["since_unix_ms"], 5);
        assert!(model.set_link(true, String::new(), 20));
        assert_eq!(model.link_json()["since_unix_ms"], 20);
    }
}
