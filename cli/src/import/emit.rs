//! A draft as hav node config TOML: only the keys keepalived set (or whose keepalived default
//! differs from hav's), each table headed by the keepalived file and line it came from, and the
//! findings as comments at the top.

use super::draft::{Draft, InstanceDraft, NOTIFY_KEYS, TrackKind, VirtualServerDraft};
use super::parser::Location;
use super::{Finding, FindingKind};

impl Draft {
    /// The draft as a hav node config in TOML, findings first as comments.
    pub(crate) fn to_toml(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# hav node config converted from {} by havctl import-keepalived.\n",
            self.source.display()
        ));
        let not_converted: Vec<&Finding> = (self.findings.iter())
            .filter(|finding| finding.kind == FindingKind::NotConverted)
            .collect();
        let notes: Vec<&Finding> = (self.findings.iter())
            .filter(|finding| finding.kind == FindingKind::Note)
            .collect();
        for (title, list) in [("Not converted", not_converted), ("Notes", notes)] {
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("#\n# {title}:\n"));
            for finding in list {
                let line = format!("{}: {}: {}", finding.location, finding.item, finding.reason);
                out.push_str(&format!("#   {}\n", line.replace('\n', " ")));
            }
        }
        out.push('\n');
        let mut section = Section::new(&mut out, "[node]", None);
        section.entry("name", Value::Str(self.node_name.clone()));
        let alerts = &self.node_alerts;
        section.string("notify_fifo", alerts.notify_fifo.as_deref());
        if let Some(argv) = &alerts.notify_fifo_script {
            section.entry("notify_fifo_script", strings(argv));
        }
        section.int("max_auto_priority", alerts.max_auto_priority);
        if let Some(smtp) = &alerts.smtp {
            let mut section = Section::new(&mut out, "[node.smtp]", None);
            section.entry("server", Value::Str(smtp.server.clone()));
            section.duration("connect_timeout", smtp.connect_timeout_ms);
            section.string("helo_name", smtp.helo_name.as_deref());
            section.entry("from", Value::Str(smtp.from.clone()));
            section.entry("to", strings(&smtp.to));
            if let Some(alert) = smtp.alert {
                section.entry("alert", Value::Bool(alert));
            }
        }
        for script in &self.scripts {
            let mut section = Section::new(&mut out, "[[script]]", Some(&script.location));
            section.entry("name", Value::Str(script.name.clone()));
            section.entry("program", Value::Str(script.argv[0].clone()));
            if script.argv.len() > 1 {
                section.entry("args", strings(&script.argv[1..]));
            }
            section.duration("interval", script.interval_ms);
            section.duration("timeout", script.timeout_ms);
            section.int("fall", script.fall);
            section.int("rise", script.rise);
            section.int("weight", Some(script.weight).filter(|w| *w != 0));
            section.string("user", script.user.as_deref());
            section.string("group", script.group.as_deref());
        }
        for process in &self.processes {
            let mut section = Section::new(&mut out, "[[process]]", Some(&process.location));
            section.entry("name", Value::Str(process.name.clone()));
            section.entry("process", Value::Str(process.process.clone()));
            section.int("min_procs", process.min_procs);
            section.int("weight", Some(process.weight).filter(|w| *w != 0));
        }
        for probe in &self.probes {
            let mut section = Section::new(&mut out, "[[probe]]", Some(&probe.location));
            section.entry("name", Value::Str(probe.name.clone()));
            section.entry("kind", Value::Str("tcp".into()));
            section.entry("address", Value::Str(probe.address.to_string()));
            section.entry("port", Value::Int(i64::from(probe.port)));
            section.duration("interval", probe.interval_ms);
            section.duration("timeout", probe.timeout_ms);
            section.int("fall", probe.fall);
            section.int("rise", probe.rise);
            section.int("weight", Some(probe.weight).filter(|w| *w != 0));
        }
        for file in &self.track_files {
            let mut section = Section::new(&mut out, "[[track_file]]", Some(&file.location));
            section.entry("name", Value::Str(file.name.clone()));
            section.entry("path", Value::Str(file.path.clone()));
            section.int("weight", file.weight);
        }
        for instance in &self.instances {
            instance.write(&mut out);
        }
        for group in &self.sync_groups {
            let mut section = Section::new(&mut out, "[[sync_group]]", Some(&group.location));
            section.entry("name", Value::Str(group.name.clone()));
            section.entry("instances", strings(&group.instances));
            section.notify(&group.notify);
            if let Some(alert) = group.smtp_alert {
                section.entry("smtp_alert", Value::Bool(alert));
            }
        }
        for service in &self.virtual_servers {
            service.write(&mut out);
        }
        out
    }
}

impl VirtualServerDraft {
    fn write(&self, out: &mut String) {
        let mut section = Section::new(out, "[[virtual_server]]", Some(&self.location));
        section.entry("name", Value::Str(self.name.clone()));
        section.entry("address", Value::Str(self.address.to_string()));
        section.entry("port", Value::Int(i64::from(self.port)));
        section.string("protocol", self.protocol);
        section.string("instance", self.instance.as_deref());
        section.string("lb_algo", self.lb_algo);
        section.string("lb_kind", self.lb_kind);
        section.duration("delay_loop", self.delay_loop_ms);
        section.int("quorum", self.quorum);
        section.int("hysteresis", self.hysteresis);
        if let Some(argv) = &self.quorum_up {
            section.entry("quorum_up", strings(argv));
        }
        if let Some(argv) = &self.quorum_down {
            section.entry("quorum_down", strings(argv));
        }
        section.string("sorry_server", self.sorry_server.as_deref());
        for server in &self.real_servers {
            let mut section = Section::new(
                out,
                "[[virtual_server.real_server]]",
                Some(&server.location),
            );
            section.entry("address", Value::Str(server.address.to_string()));
            section.int("port", server.port.map(i64::from));
            section.int("weight", server.weight);
            if server.inhibit_on_failure {
                section.entry("inhibit_on_failure", Value::Bool(true));
            }
            let Some(check) = &server.check else {
                continue;
            };
            let mut section = Section::new(out, "[virtual_server.real_server.check]", None);
            section.entry("kind", Value::Str(check.kind.to_owned()));
            section.string(
                "connect_ip",
                check.connect_ip.map(|ip| ip.to_string()).as_deref(),
            );
            section.int("connect_port", check.connect_port.map(i64::from));
            section.duration("connect_timeout", check.connect_timeout_ms);
            section.int("retry", check.retry);
            section.duration("delay_before_retry", check.delay_before_retry_ms);
            section.string("path", check.path.as_deref());
            section.string("virtualhost", check.virtualhost.as_deref());
            if !check.status_code.is_empty() {
                let codes = check.status_code.iter().map(|code| Value::Int(*code));
                section.entry("status_code", Value::Array(codes.collect()));
            }
            if let Some(argv) = &check.program {
                section.entry("program", strings(argv));
            }
        }
    }
}

impl InstanceDraft {
    fn write(&self, out: &mut String) {
        let mut section = Section::new(out, "[[instance]]", Some(&self.location));
        section.entry("name", Value::Str(self.name.clone()));
        section.string("interface", self.interface.as_deref());
        section.int("vrid", self.vrid);
        section.entry("version", Value::Int(self.version));
        section.entry("priority", Value::Int(self.priority));
        section.duration("advert_interval", self.advert_interval_ms);
        if let Some(preempt) = self.preempt {
            section.entry("preempt", Value::Bool(preempt));
        }
        section.duration("preempt_delay", self.preempt_delay_ms);
        if let Some(accept) = self.accept {
            section.entry("accept", Value::Bool(accept));
        }
        if self.extras.strict {
            section.entry("strict", Value::Bool(true));
        }
        if self.rfc9568_checksum && self.version == 3 && !self.is_v6() {
            section.entry("checksum", Value::Str("rfc9568".into()));
        }
        section.string("source_address", self.source_address.as_deref());
        if !self.peers.is_empty() {
            let peers = self
                .peers
                .iter()
                .map(|peer| match peer.priority {
                    None => Value::Str(peer.address.clone()),
                    Some(priority) => Value::Inline(vec![
                        ("address", Value::Str(peer.address.clone())),
                        ("priority", Value::Int(priority)),
                    ]),
                })
                .collect();
            section.entry("unicast_peers", Value::Array(peers));
        }
        section.string("auth_pass", self.auth_pass.as_deref());
        let vips = self
            .vips
            .iter()
            .map(|vip| {
                if vip.dev.is_none() && vip.label.is_none() {
                    Value::Str(match vip.prefix {
                        Some(prefix) => format!("{}/{prefix}", vip.address),
                        None => vip.address.to_string(),
                    })
                } else {
                    let mut fields = vec![("address", Value::Str(vip.address.to_string()))];
                    if let Some(prefix) = vip.prefix {
                        fields.push(("prefix", Value::Int(i64::from(prefix))));
                    }
                    if let Some(dev) = &vip.dev {
                        fields.push(("dev", Value::Str(dev.clone())));
                    }
                    if let Some(label) = &vip.label {
                        fields.push(("label", Value::Str(label.clone())));
                    }
                    Value::Inline(fields)
                }
            })
            .collect();
        section.entry("vips", Value::Array(vips));
        for kind in [
            TrackKind::Interface,
            TrackKind::Script,
            TrackKind::Process,
            TrackKind::File,
            TrackKind::Probe,
        ] {
            let refs: Vec<Value> = self
                .tracks
                .iter()
                .filter(|track| track.kind == kind)
                .map(|track| match track.weight {
                    None => Value::Str(track.name.clone()),
                    Some(weight) => Value::Inline(vec![
                        ("name", Value::Str(track.name.clone())),
                        ("weight", Value::Int(weight)),
                    ]),
                })
                .collect();
            if !refs.is_empty() {
                section.entry(kind.key(), Value::Array(refs));
            }
        }
        section.notify(&self.notify);
        if let Some(alert) = self.smtp_alert {
            section.entry("smtp_alert", Value::Bool(alert));
        }
        if !self.garp.is_empty() {
            let interval = if self.is_v6() {
                self.garp.gna_interval_ms
            } else {
                self.garp.garp_interval_ms
            };
            let mut garp = Section::new(out, "[instance.garp]", None);
            garp.int("master_repeat", self.garp.master_repeat);
            garp.duration("master_delay", self.garp.master_delay_ms);
            garp.duration("master_refresh", self.garp.master_refresh_ms);
            garp.duration("interval", interval);
        }
        self.write_extras(out);
    }

    /// `[instance.vmac]`, `[[instance.route]]`, `[[instance.rule]]`.
    fn write_extras(&self, out: &mut String) {
        if let Some(vmac) = &self.extras.vmac {
            let mut section = Section::new(out, "[instance.vmac]", None);
            section.string("name", vmac.name.as_deref());
            if vmac.xmit_base {
                section.entry("xmit_base", Value::Bool(true));
            }
        }
        for route in &self.extras.routes {
            let mut section = Section::new(out, "[[instance.route]]", None);
            section.entry("to", Value::Str(route.to.clone()));
            section.string("type", route.kind);
            section.string("via", route.via.map(|via| via.to_string()).as_deref());
            section.string("dev", route.dev.as_deref());
            section.string("src", route.src.map(|src| src.to_string()).as_deref());
            section.int("table", route.table);
            section.int("metric", route.metric);
        }
        for rule in &self.extras.rules {
            let mut section = Section::new(out, "[[instance.rule]]", None);
            section.string("from", rule.from.as_deref());
            section.string("to", rule.to.as_deref());
            section.int("table", Some(rule.table));
            section.int("priority", rule.priority);
            section.int("fwmark", rule.fwmark);
            section.string("iif", rule.iif.as_deref());
            section.string("oif", rule.oif.as_deref());
        }
    }
}

/// A TOML value written inline.
enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Value>),
    Inline(Vec<(&'static str, Value)>),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Str(text) => toml::Value::String(text.clone()).to_string(),
            Value::Int(number) => number.to_string(),
            Value::Bool(flag) => flag.to_string(),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(Value::render).collect();
                format!("[{}]", items.join(", "))
            }
            Value::Inline(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(key, value)| format!("{key} = {}", value.render()))
                    .collect();
                format!("{{ {} }}", fields.join(", "))
            }
        }
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::Str).collect())
}

/// Writes one TOML table header and its entries.
struct Section<'a> {
    out: &'a mut String,
}

impl<'a> Section<'a> {
    fn new(out: &'a mut String, header: &str, from: Option<&Location>) -> Self {
        if !out.ends_with("\n\n") {
            out.push('\n');
        }
        if let Some(location) = from {
            out.push_str(&format!("# from {location}\n"));
        }
        out.push_str(header);
        out.push('\n');
        Self { out }
    }

    fn entry(&mut self, key: &str, value: Value) {
        self.out.push_str(&format!("{key} = {}\n", value.render()));
    }

    fn string(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.entry(key, Value::Str(value.to_owned()));
        }
    }

    fn int(&mut self, key: &str, value: Option<i64>) {
        if let Some(value) = value {
            self.entry(key, Value::Int(value));
        }
    }

    fn duration(&mut self, key: &str, ms: Option<u64>) {
        if let Some(ms) = ms {
            let text = if ms % 1000 == 0 {
                format!("{}s", ms / 1000)
            } else {
                format!("{ms}ms")
            };
            self.entry(key, Value::Str(text));
        }
    }

    fn notify(&mut self, notify: &[Option<Vec<String>>; 5]) {
        for (key, argv) in NOTIFY_KEYS.iter().zip(notify) {
            if let Some(argv) = argv {
                self.entry(key, strings(argv));
            }
        }
    }
}
