//! From keepalived statements to a hav node config: the mapping of every keyword hav has an
//! equivalent for, and a [`Finding`] for everything else.
//!
//! Meaning is kept, not spelling: keepalived's positive tracking weights (added to the priority
//! while the tracked object is fine) become a higher base priority and a negative hav weight (taken
//! away while it fails), which gives the same effective priority in every state; keepalived's
//! defaults that differ from hav's (VRRP version 2, priority 255 for `state MASTER` without a
//! priority) are written out. `emit` writes the draft as TOML; [`super::finish`] validates it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use super::command::{dev_tcp, process_check, split_command};
use super::draft::{
    Draft, GarpDraft, InstanceDraft, NOTIFY_KEYS, PeerDraft, ProbeDraft, ProcessDraft, ScriptDraft,
    SyncGroupDraft, TrackFileDraft, TrackKind, TrackRef, VipDraft,
};
use super::parser::{Location, Parsed, Statement};
use super::{Finding, FindingKind};

mod alerts;
mod extras;
mod lvs;

/// What a keepalived tracked definition became in hav.
#[derive(Debug, Clone)]
struct Defined {
    kind: TrackKind,
    hav_name: String,
    /// keepalived's default weight for references without one.
    keepalived_weight: i64,
}

#[derive(Default)]
struct Globals {
    router_id: Option<(String, Location)>,
    version: Option<i64>,
    garp: GarpDraft,
    min_garp: bool,
    script_user: Option<(String, Option<String>)>,
    rfc9568_checksum: bool,
    /// `vrrp_strict`: every instance's strict mode unless it says `strict_mode`.
    strict: bool,
    alerts: alerts::AlertGlobals,
}

struct Converter {
    findings: Vec<Finding>,
    globals: Globals,
    /// keepalived definition name → what it became, per keepalived namespace.
    scripts: HashMap<String, Defined>,
    processes: HashMap<String, Defined>,
    track_files: HashMap<String, Defined>,
    /// keepalived instance name → hav instance name.
    instance_names: HashMap<String, String>,
}

/// Converts one parsed keepalived configuration.
pub(crate) fn convert(source: &Path, parsed: Parsed) -> Draft {
    let mut converter = Converter {
        findings: parsed.findings,
        globals: Globals::default(),
        scripts: HashMap::new(),
        processes: HashMap::new(),
        track_files: HashMap::new(),
        instance_names: HashMap::new(),
    };
    let mut draft = Draft {
        source: source.to_owned(),
        files: parsed.files,
        findings: Vec::new(),
        node_name: String::new(),
        scripts: Vec::new(),
        processes: Vec::new(),
        probes: Vec::new(),
        track_files: Vec::new(),
        instances: Vec::new(),
        sync_groups: Vec::new(),
        virtual_servers: Vec::new(),
        node_alerts: Default::default(),
    };
    let statements = parsed.statements;
    // Definitions first, so that references find them wherever they are written.
    for statement in &statements {
        if statement.keyword == "global_defs" {
            converter.global_defs(statement);
        }
    }
    for statement in &statements {
        match statement.keyword.as_str() {
            "vrrp_script" => converter.vrrp_script(statement, &mut draft),
            "vrrp_track_process" => converter.track_process(statement, &mut draft),
            "track_file" | "vrrp_track_file" => converter.track_file(statement, &mut draft),
            _ => {}
        }
    }
    for statement in &statements {
        if statement.keyword == "vrrp_instance" {
            converter.instance(statement, &mut draft);
        }
    }
    for statement in &statements {
        match statement.keyword.as_str() {
            "global_defs" | "vrrp_script" | "vrrp_track_process" | "track_file"
            | "vrrp_track_file" | "vrrp_instance" => {}
            "vrrp_sync_group" => converter.sync_group(statement, &mut draft),
            "virtual_server" => converter.virtual_server(statement, &mut draft),
            _ => converter.top_level_unsupported(statement),
        }
    }
    draft.node_name = match converter.globals.router_id.clone() {
        Some((router_id, location)) => converter.name(&router_id, &location, "router_id"),
        None => {
            let stem = source
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let location = Location {
                file: source.to_owned(),
                line: 1,
                column: 1,
            };
            converter.findings.push(Finding::note(
                location.clone(),
                "global_defs router_id",
                "absent (keepalived then uses the host name); [node] name taken from the file \
                 name: set it to this node's name",
            ));
            converter.name(&stem, &location, "file name")
        }
    };
    draft.node_alerts = converter.node_alerts(&draft.node_name);
    converter
        .findings
        .sort_by(|a, b| a.location.cmp(&b.location));
    draft.findings = converter.findings;
    draft
}

impl Converter {
    fn push(&mut self, kind: FindingKind, location: &Location, item: String, reason: &str) {
        self.findings.push(Finding {
            kind,
            location: location.clone(),
            item,
            reason: reason.to_owned(),
        });
    }

    fn not_converted(&mut self, statement: &Statement, reason: &str) {
        self.push(
            FindingKind::NotConverted,
            &statement.location,
            describe(statement),
            reason,
        );
    }

    fn note(&mut self, statement: &Statement, reason: &str) {
        self.push(
            FindingKind::Note,
            &statement.location,
            describe(statement),
            reason,
        );
    }

    /// A hav name (1 to 64 of `A-Z a-z 0-9 _ - .`) for a keepalived name.
    fn name(&mut self, name: &str, location: &Location, what: &str) -> String {
        let mut cleaned: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        if cleaned.is_empty() {
            cleaned = "unnamed".into();
        }
        if cleaned != name {
            self.push(
                FindingKind::Note,
                location,
                format!("{what} {name}"),
                &format!("renamed {cleaned:?}: hav names are 1 to 64 of A-Z a-z 0-9 _ - ."),
            );
        }
        cleaned
    }

    fn global_defs(&mut self, statement: &Statement) {
        for item in block(statement) {
            if self.global_alert(item) {
                continue;
            }
            let word = first_arg(item);
            match item.keyword.as_str() {
                "router_id" => match word {
                    Some(id) => {
                        self.globals.router_id = Some((id.to_owned(), item.location.clone()))
                    }
                    None => self.not_converted(item, "needs a value"),
                },
                "vrrp_version" => match word.and_then(parse_int) {
                    Some(version @ (2 | 3)) => self.globals.version = Some(version),
                    _ => self.not_converted(item, "expected 2 or 3"),
                },
                "vrrp_garp_master_delay"
                | "vrrp_garp_master_repeat"
                | "vrrp_garp_master_refresh"
                | "vrrp_garp_master_refresh_repeat"
                | "vrrp_garp_interval"
                | "vrrp_gna_interval" => {
                    let mut garp = std::mem::take(&mut self.globals.garp);
                    self.garp_setting(item, &item.keyword["vrrp_".len()..], &mut garp);
                    self.globals.garp = garp;
                }
                "vrrp_min_garp" => {
                    if word.is_none_or(|value| parse_bool(value) == Some(true)) {
                        self.globals.min_garp = true;
                        self.note(
                            item,
                            "converted to garp master_repeat = 1 and master_delay = \"0s\" in \
                             every instance",
                        );
                    }
                }
                "script_user" => match word {
                    Some(user) => {
                        let group = item.args.get(1).map(|g| g.text.trim_start_matches(':'));
                        self.globals.script_user =
                            Some((user.to_owned(), group.map(str::to_owned)));
                        self.note(
                            item,
                            "applied as `user`/`group` to every script that names no user; hav \
                             runs notify programs as hav-agent's own user",
                        );
                    }
                    None => self.not_converted(item, "needs a user name"),
                },
                "enable_script_security" => self.note(
                    item,
                    "hav has no such check: it runs scripts without a shell, as `user` when set; \
                     keep check scripts owned by root and not writable by others",
                ),
                "v3_checksum_as_v2" => {
                    if word.is_none_or(|value| parse_bool(value) == Some(true)) {
                        self.globals.rfc9568_checksum = true;
                    }
                }
                "vrrp_strict" => self.globals.strict = true,
                "vrrp_mcast_group4" | "vrrp_mcast_group6" => self.not_converted(
                    item,
                    "hav sends adverts to the RFC groups 224.0.0.18 and ff02::12 only",
                ),
                "vrrp_iptables"
                | "vrrp_ipsets"
                | "vrrp_iptables_notrack"
                | "nftables"
                | "nftables_priority"
                | "nftables_counters"
                | "nftables_ifindex" => self.not_converted(
                    item,
                    "hav writes no iptables or ipset rules and needs no setting for \
                         nftables: it keeps its own table (`inet hav`) for accept = false, \
                         load balancing and hand-overs, and removes it at stop",
                ),
                "vrrp_skip_check_adv_addr" | "vrrp_check_unicast_src" => self.not_converted(
                    item,
                    "hav always checks the addresses in adverts and their source; nothing to set",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
    }

    /// One `garp_*`/`gna_*` setting (without the `vrrp_` prefix) into `garp`.
    fn garp_setting(&mut self, item: &Statement, key: &str, garp: &mut GarpDraft) {
        let word = first_arg(item);
        match key {
            "garp_master_repeat" => match word.and_then(parse_int) {
                Some(repeat) if repeat >= 0 => garp.master_repeat = Some(repeat),
                _ => self.not_converted(item, "expected a count"),
            },
            "garp_master_delay" | "garp_master_refresh" | "garp_interval" | "gna_interval" => {
                match word.and_then(|text| self.seconds(item, text)) {
                    Some(ms) => match key {
                        "garp_master_delay" => garp.master_delay_ms = Some(ms),
                        "garp_master_refresh" => garp.master_refresh_ms = Some(ms),
                        "garp_interval" => garp.garp_interval_ms = Some(ms),
                        _ => garp.gna_interval_ms = Some(ms),
                    },
                    None => self.not_converted(item, "expected seconds"),
                }
            }
            "garp_master_refresh_repeat" => {
                if word.and_then(parse_int) != Some(1) {
                    self.not_converted(
                        item,
                        "hav sends one announcement per address at each refresh",
                    );
                }
            }
            _ => self.not_converted(item, "no hav equivalent"),
        }
    }

    /// Seconds with an optional fraction, as whole milliseconds (noting any rounding).
    fn seconds(&mut self, item: &Statement, text: &str) -> Option<u64> {
        let micros = parse_seconds_micros(text)?;
        let ms = micros.div_ceil(1000);
        if micros % 1000 != 0 {
            self.note(
                item,
                &format!("hav durations are whole milliseconds: rounded up to {ms}ms"),
            );
        }
        Some(ms)
    }

    fn vrrp_script(&mut self, statement: &Statement, draft: &mut Draft) {
        let Some(keepalived_name) = first_arg(statement) else {
            return self.not_converted(statement, "a vrrp_script needs a name");
        };
        let name = self.name(keepalived_name, &statement.location, "vrrp_script");
        let mut command: Option<(&Statement, Vec<String>)> = None;
        let (mut interval_ms, mut timeout_ms, mut fall, mut rise) = (None, None, None, None);
        let mut weight = 0;
        let mut user = None;
        let mut group = None;
        for item in block(statement) {
            let word = first_arg(item);
            match item.keyword.as_str() {
                "script" => {
                    let argv: Vec<String> = if item.args.len() == 1 {
                        match split_command(&item.args[0].text) {
                            Ok(argv) => argv,
                            Err(reason) => {
                                // Simple TCP checks written for the shell become a probe.
                                if let Some((address, port)) = dev_tcp(&item.args[0].text) {
                                    command = Some((item, vec![format!("tcp:{address}:{port}")]));
                                    continue;
                                }
                                self.not_converted(item, &reason);
                                continue;
                            }
                        }
                    } else {
                        item.words().map(str::to_owned).collect()
                    };
                    command = Some((item, argv));
                }
                "interval" => interval_ms = word.and_then(|text| self.seconds(item, text)),
                "timeout" => timeout_ms = word.and_then(|text| self.seconds(item, text)),
                "fall" => fall = word.and_then(parse_int),
                "rise" => rise = word.and_then(parse_int),
                "weight" => match self.weight(item) {
                    Some(value) => weight = value,
                    None => return,
                },
                "user" => {
                    user = word.map(str::to_owned);
                    group = item
                        .args
                        .get(1)
                        .map(|g| g.text.trim_start_matches(':').to_owned());
                }
                "init_fail" => self.not_converted(
                    item,
                    "hav starts every check as healthy until it fails `fall` times",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        let Some((script_statement, argv)) = command else {
            self.not_converted(
                statement,
                "no convertible `script`, so the vrrp_script and its references are left out",
            );
            return;
        };
        if let Some(target) = argv.first().and_then(|first| first.strip_prefix("tcp:")) {
            let parsed = target
                .rsplit_once(':')
                .and_then(|(address, port)| Some((address.parse().ok()?, port.parse().ok()?)));
            if let Some((address, port)) = parsed {
                self.note(
                    script_statement,
                    "a shell TCP connect check: converted to a built-in tcp probe",
                );
                draft.probes.push(ProbeDraft {
                    name: name.clone(),
                    location: statement.location.clone(),
                    address,
                    port,
                    interval_ms,
                    timeout_ms,
                    fall,
                    rise,
                    weight: hav_weight(weight),
                });
                self.scripts.insert(
                    keepalived_name.to_owned(),
                    Defined {
                        kind: TrackKind::Probe,
                        hav_name: name,
                        keepalived_weight: weight,
                    },
                );
                return;
            }
        }
        if let Some(process) = process_check(&argv) {
            self.note(
                script_statement,
                &format!(
                    "a process check: converted to [[process]] {name} watching command name \
                     {process:?} (event driven; interval, fall and rise do not apply)"
                ),
            );
            draft.processes.push(ProcessDraft {
                name: name.clone(),
                location: statement.location.clone(),
                process,
                min_procs: None,
                weight: hav_weight(weight),
            });
            self.scripts.insert(
                keepalived_name.to_owned(),
                Defined {
                    kind: TrackKind::Process,
                    hav_name: name,
                    keepalived_weight: weight,
                },
            );
            return;
        }
        if !argv.first().is_some_and(|program| program.starts_with('/')) {
            self.not_converted(
                script_statement,
                "hav runs the program without a shell or PATH search: give its absolute path",
            );
            return;
        }
        if user.is_none()
            && let Some((script_user, script_group)) = &self.globals.script_user
        {
            user = Some(script_user.clone());
            group = script_group.clone();
        }
        draft.scripts.push(ScriptDraft {
            name: name.clone(),
            location: statement.location.clone(),
            argv,
            interval_ms,
            timeout_ms,
            fall,
            rise,
            weight: hav_weight(weight),
            user,
            group,
        });
        self.scripts.insert(
            keepalived_name.to_owned(),
            Defined {
                kind: TrackKind::Script,
                hav_name: name,
                keepalived_weight: weight,
            },
        );
    }

    /// A `weight N [reverse]`; `None` (with a finding) when it cannot be converted.
    fn weight(&mut self, item: &Statement) -> Option<i64> {
        let value = first_arg(item).and_then(parse_int);
        match (value, item.args.get(1).map(|arg| arg.text.as_str())) {
            (Some(value), None | Some("noreverse")) if (-253..=253).contains(&value) => Some(value),
            (Some(_), Some("reverse")) => {
                self.not_converted(
                    item,
                    "hav has no reversed tracking; the definition and its references are left out",
                );
                None
            }
            _ => {
                self.not_converted(item, "expected a weight from -253 to 253");
                None
            }
        }
    }

    fn track_process(&mut self, statement: &Statement, draft: &mut Draft) {
        let Some(keepalived_name) = first_arg(statement) else {
            return self.not_converted(statement, "a vrrp_track_process needs a name");
        };
        let name = self.name(keepalived_name, &statement.location, "vrrp_track_process");
        let mut process = None;
        let mut min_procs = None;
        let mut weight = 0;
        for item in block(statement) {
            match item.keyword.as_str() {
                "process" => {
                    let Some(command) = first_arg(item) else {
                        self.not_converted(item, "needs a process name");
                        continue;
                    };
                    if item.args.len() > 1 {
                        self.not_converted(
                            item,
                            "hav matches the command name only, not parameters",
                        );
                        continue;
                    }
                    if command.contains('/') || command.is_empty() || command.len() > 15 {
                        self.not_converted(
                            item,
                            "hav matches /proc/PID/comm: a name of 1 to 15 bytes without '/'",
                        );
                        continue;
                    }
                    process = Some(command.to_owned());
                }
                "quorum" => min_procs = first_arg(item).and_then(parse_int),
                "weight" => match self.weight(item) {
                    Some(value) => weight = value,
                    None => return,
                },
                "quorum_max" | "full_command" | "param_match" => self.not_converted(
                    item,
                    "hav counts processes by command name with a minimum only",
                ),
                "delay" | "fork_delay" | "terminate_delay" => self.not_converted(
                    item,
                    "hav reacts to the process table at once, without delays",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        let Some(process) = process else {
            return self.not_converted(
                statement,
                "no convertible `process`, so the definition and its references are left out",
            );
        };
        draft.processes.push(ProcessDraft {
            name: name.clone(),
            location: statement.location.clone(),
            process,
            min_procs,
            weight: hav_weight(weight),
        });
        self.processes.insert(
            keepalived_name.to_owned(),
            Defined {
                kind: TrackKind::Process,
                hav_name: name,
                keepalived_weight: weight,
            },
        );
    }

    fn track_file(&mut self, statement: &Statement, draft: &mut Draft) {
        let Some(keepalived_name) = first_arg(statement) else {
            return self.not_converted(statement, "a track_file needs a name");
        };
        let name = self.name(keepalived_name, &statement.location, "track_file");
        let mut path = None;
        let mut weight = None;
        for item in block(statement) {
            match item.keyword.as_str() {
                "file" => match first_arg(item) {
                    Some(file) if file.starts_with('/') => path = Some(file.to_owned()),
                    _ => self.not_converted(item, "hav needs an absolute path"),
                },
                "weight" => match self.weight(item) {
                    Some(value) => weight = Some(value),
                    None => return,
                },
                "init_file" => self.not_converted(
                    item,
                    "hav does not create the file; create it when installing",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        let Some(path) = path else {
            return self.not_converted(
                statement,
                "no convertible `file`, so the definition and its references are left out",
            );
        };
        draft.track_files.push(TrackFileDraft {
            name: name.clone(),
            location: statement.location.clone(),
            path,
            weight,
        });
        self.track_files.insert(
            keepalived_name.to_owned(),
            Defined {
                kind: TrackKind::File,
                hav_name: name,
                keepalived_weight: weight.unwrap_or(1),
            },
        );
    }

    fn instance(&mut self, statement: &Statement, draft: &mut Draft) {
        let Some(keepalived_name) = first_arg(statement) else {
            return self.not_converted(statement, "a vrrp_instance needs a name");
        };
        let name = self.name(keepalived_name, &statement.location, "vrrp_instance");
        self.instance_names
            .insert(keepalived_name.to_owned(), name.clone());
        let mut instance = InstanceDraft {
            name,
            location: statement.location.clone(),
            interface: None,
            vrid: None,
            version: 0,
            base_priority: 0,
            priority: 0,
            advert_interval_ms: None,
            preempt: None,
            preempt_delay_ms: None,
            accept: None,
            rfc9568_checksum: self.globals.rfc9568_checksum,
            source_address: None,
            peers: Vec::new(),
            auth_pass: None,
            vips: Vec::new(),
            tracks: Vec::new(),
            notify: Default::default(),
            smtp_alert: None,
            garp: GarpDraft::default(),
            extras: Default::default(),
        };
        let mut explicit_version = None;
        let mut priority = None;
        let mut state_master = false;
        let mut auth: Option<&Statement> = None;
        // keepalived weights of the references, for the base priority.
        let mut positive_weights = 0;
        let mut advert: Option<(&Statement, u64)> = None;
        let mut dont_track_primary = None;
        for item in block(statement) {
            let word = first_arg(item);
            let keyword = item.keyword.as_str();
            match keyword {
                "state" => {
                    state_master = word == Some("MASTER");
                    self.note(
                        item,
                        "keepalived's initial state is only a hint; hav elects by priority",
                    );
                }
                "interface" => instance.interface = word.map(str::to_owned),
                "virtual_router_id" => instance.vrid = word.and_then(parse_int),
                "priority" => priority = word.and_then(parse_int),
                "advert_int" => {
                    if let Some(micros) = word.and_then(parse_seconds_micros) {
                        advert = Some((item, micros));
                    } else {
                        self.not_converted(item, "expected seconds");
                    }
                }
                "version" => explicit_version = word.and_then(parse_int),
                "nopreempt" | "no_preempt" => instance.preempt = Some(false),
                "preempt" => instance.preempt = Some(true),
                "preempt_delay" => {
                    instance.preempt_delay_ms = word.and_then(|text| self.seconds(item, text))
                }
                "accept" => instance.accept = Some(true),
                "no_accept" => instance.accept = Some(false),
                "v3_checksum_as_v2" => {
                    instance.rfc9568_checksum =
                        word.is_none_or(|value| parse_bool(value) == Some(true))
                }
                "unicast_src_ip" | "mcast_src_ip" => {
                    instance.source_address = word.map(str::to_owned)
                }
                "unicast_peer" => {
                    for peer in block(item) {
                        if !peer.args.is_empty() {
                            self.not_converted(
                                peer,
                                "hav takes the peer address only (no TTL checks); the \
                                 address is converted",
                            );
                        }
                        instance.peers.push(PeerDraft {
                            address: peer.keyword.clone(),
                            priority: None,
                        });
                    }
                }
                "authentication" => auth = Some(item),
                "virtual_ipaddress" => {
                    for entry in block(item) {
                        if let Some(vip) = self.vip(entry) {
                            let family_differs = instance.vips.first().is_some_and(|first| {
                                first.address.is_ipv6() != vip.address.is_ipv6()
                            });
                            if family_differs {
                                self.not_converted(
                                    entry,
                                    "a hav instance holds addresses of one family; make a \
                                     second instance for this one",
                                );
                            } else {
                                instance.vips.push(vip);
                            }
                        }
                    }
                }
                "virtual_ipaddress_excluded" => {
                    for entry in block(item) {
                        self.not_converted(
                            entry,
                            "hav advertises every address it manages: add it to `vips` (it is \
                             then in adverts) or to another instance",
                        );
                    }
                }
                "track_interface" | "track_script" | "track_process" | "track_file" => {
                    for entry in block(item) {
                        if let Some((track, weight)) = self.track_ref(keyword, entry) {
                            if weight > 0 && track.kind != TrackKind::File {
                                positive_weights += weight;
                            }
                            instance.tracks.push(track);
                        }
                    }
                }
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    let index = NOTIFY_KEYS
                        .iter()
                        .position(|key| *key == keyword)
                        .unwrap_or(0);
                    instance.notify[index] = self.notify(item);
                }
                "garp_master_delay"
                | "garp_master_repeat"
                | "garp_master_refresh"
                | "garp_master_refresh_repeat"
                | "garp_interval"
                | "gna_interval" => {
                    let mut garp = std::mem::take(&mut instance.garp);
                    self.garp_setting(item, keyword, &mut garp);
                    instance.garp = garp;
                }
                "smtp_alert" => instance.smtp_alert = self.smtp_alert(item),
                "dont_track_primary" => dont_track_primary = Some(item),
                "use_vmac" | "vmac_xmit_base" | "virtual_routes" | "virtual_rules"
                | "strict_mode" => self.instance_extra(item, &mut instance),
                "use_ipvlan" => self.not_converted(
                    item,
                    "hav has no ipvlan mode: use_vmac (a macvlan with the virtual MAC) is the \
                     nearest; without either, hosts learn the new master's MAC from its \
                     gratuitous ARP / unsolicited NA at each change",
                ),
                "track_bfd" => self.not_converted(item, "hav has no BFD"),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        if let Some(item) = dont_track_primary {
            self.dont_track_primary(item, &mut instance);
        }
        // keepalived's defaults, which hav's differ from: version 2, and 255 for state MASTER.
        instance.version = explicit_version.or(self.globals.version).unwrap_or(2);
        if instance.is_v6() && instance.version == 2 {
            instance.version = 3;
            if explicit_version == Some(2) || self.globals.version == Some(2) {
                self.note(
                    statement,
                    "IPv6 instance: version 3, as keepalived also runs it (VRRPv2 is IPv4 only)",
                );
            }
        }
        let base = match priority {
            Some(priority) => priority,
            None if state_master => {
                self.note(
                    statement,
                    "state MASTER without priority: keepalived makes it the address owner, \
                     priority 255",
                );
                255
            }
            None => 100,
        };
        instance.base_priority = base;
        instance.priority = base;
        if positive_weights > 0 && base != 255 {
            let raised = (base + positive_weights).min(254);
            self.note(
                statement,
                &format!(
                    "keepalived adds positive tracking weights while the tracked objects are \
                     fine; hav subtracts weights while they fail. Priority {base} with weights \
                     +{positive_weights} is written as priority {raised} with the weights \
                     negated{}",
                    if base + positive_weights > 254 {
                        " (capped at 254 as keepalived caps the effective priority)"
                    } else {
                        ""
                    }
                ),
            );
            instance.priority = raised;
        }
        if state_master {
            if instance.preempt == Some(false) {
                instance.preempt = None;
                self.note(
                    statement,
                    "nopreempt with state MASTER: keepalived clears nopreempt, so preempt stays on",
                );
            }
            if instance.preempt_delay_ms.take().is_some() {
                self.note(
                    statement,
                    "preempt_delay with state MASTER: keepalived clears it, so there is no delay",
                );
            }
        }
        if let Some((item, micros)) = advert {
            instance.advert_interval_ms =
                Some(self.advert_interval(item, micros, instance.version));
        }
        if let Some(item) = auth {
            instance.auth_pass = self.authentication(item, instance.version);
        }
        // Global GARP settings, overridden per instance.
        let mut garp = self.globals.garp.overlay(&instance.garp);
        if self.globals.min_garp {
            garp.master_repeat = garp.master_repeat.or(Some(1));
            garp.master_delay_ms = garp.master_delay_ms.or(Some(0));
        }
        instance.garp = garp;
        self.finish_extras(
            statement,
            &mut instance,
            self.globals.strict,
            &draft.instances,
        );
        draft.instances.push(instance);
    }

    /// hav faults an instance whose interface is down unless the config tracks that interface
    /// itself; tracked with weight -1, a link down costs one priority point instead.
    fn dont_track_primary(&mut self, item: &Statement, instance: &mut InstanceDraft) {
        let Some(interface) = instance.interface.clone() else {
            return self.not_converted(item, "the instance names no interface");
        };
        let tracked = (instance.tracks.iter())
            .any(|track| track.kind == TrackKind::Interface && track.name == interface);
        if tracked {
            return self.note(
                item,
                "the instance tracks its interface itself, which hav follows instead of \
                 faulting the instance: nothing to add",
            );
        }
        instance.tracks.push(TrackRef {
            kind: TrackKind::Interface,
            name: interface.clone(),
            weight: Some(-1),
            keepalived_weight: 0,
            location: item.location.clone(),
        });
        self.note(
            item,
            &format!(
                "written as track_interface = [{{ name = \"{interface}\", weight = -1 }}]: hav \
                 faults an instance whose interface is down unless it tracks that interface \
                 itself, and weight 0 would fault it too; so a link down costs one priority \
                 point instead of none"
            ),
        );
    }

    fn advert_interval(&mut self, item: &Statement, micros: u64, version: i64) -> u64 {
        if version == 2 {
            let seconds = (micros as f64 / 1e6).round().clamp(1.0, 255.0) as u64;
            if seconds * 1_000_000 != micros {
                self.note(
                    item,
                    &format!("VRRPv2 adverts are whole seconds: {seconds}s"),
                );
            }
            seconds * 1000
        } else {
            let centis = (micros as f64 / 1e4).round().clamp(1.0, 4095.0) as u64;
            if centis * 10_000 != micros {
                self.note(
                    item,
                    &format!("VRRPv3 adverts are whole centiseconds: {}ms", centis * 10),
                );
            }
            centis * 10
        }
    }

    fn authentication(&mut self, item: &Statement, version: i64) -> Option<String> {
        let mut kind = None;
        let mut pass = None;
        for entry in block(item) {
            match entry.keyword.as_str() {
                "auth_type" => kind = first_arg(entry).map(str::to_owned),
                "auth_pass" => pass = first_arg(entry).map(str::to_owned),
                _ => self.not_converted(entry, "no hav equivalent"),
            }
        }
        match kind.as_deref() {
            Some("PASS") if version == 2 => {
                let mut pass = pass.filter(|pass| !pass.is_empty())?;
                if pass.len() > 8 {
                    let mut end = 8;
                    while !pass.is_char_boundary(end) {
                        end -= 1;
                    }
                    pass.truncate(end);
                    self.note(
                        item,
                        "keepalived uses the first 8 characters of auth_pass only; so does the \
                         converted config",
                    );
                }
                Some(pass)
            }
            Some("PASS") => {
                self.not_converted(
                    item,
                    "VRRPv3 has no authentication (keepalived ignores it there too)",
                );
                None
            }
            Some("AH") => {
                self.not_converted(item, "IPsec AH authentication is not supported by hav");
                None
            }
            _ => {
                self.not_converted(item, "expected auth_type PASS");
                None
            }
        }
    }

    fn vip(&mut self, entry: &Statement) -> Option<VipDraft> {
        let (address, prefix) = match entry.keyword.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry.keyword.as_str(), None),
        };
        let Ok(address) = address.parse::<IpAddr>() else {
            self.not_converted(entry, "expected an IP address");
            return None;
        };
        let prefix = match prefix.map(str::parse::<u8>) {
            None => None,
            Some(Ok(prefix)) => Some(prefix),
            Some(Err(_)) => {
                self.not_converted(entry, "expected address/prefix length");
                return None;
            }
        };
        let mut vip = VipDraft {
            address,
            prefix,
            dev: None,
            label: None,
        };
        let words: Vec<&str> = entry.words().collect();
        let mut index = 0;
        while index < words.len() {
            let option = words[index];
            let value = words.get(index + 1).copied();
            match (option, value) {
                ("dev", Some(dev)) => vip.dev = Some(dev.to_owned()),
                ("label", Some(label)) => vip.label = Some(label.to_owned()),
                ("scope", Some("global")) => {}
                ("brd" | "scope" | "peer" | "preferred_lft" | "track_group", Some(value)) => {
                    self.push(
                        FindingKind::NotConverted,
                        &entry.location,
                        format!("{} option {option} {value}", entry.keyword),
                        "hav adds the address with prefix, device and label only; the address \
                         is converted without this option",
                    );
                }
                (
                    "home" | "-nodad" | "nodad" | "mngtmpaddr" | "noprefixroute" | "autojoin"
                    | "no_track" | "use_vmac",
                    _,
                ) => {
                    self.push(
                        FindingKind::NotConverted,
                        &entry.location,
                        format!("{} option {option}", entry.keyword),
                        "hav adds the address with prefix, device and label only; the address \
                         is converted without this option",
                    );
                    index += 1;
                    continue;
                }
                _ => {
                    self.push(
                        FindingKind::NotConverted,
                        &entry.location,
                        format!("{} option {option}", entry.keyword),
                        "unknown address option; the address is converted without it",
                    );
                    index += 1;
                    continue;
                }
            }
            index += 2;
        }
        Some(vip)
    }

    /// One entry of a `track_*` block, with its keepalived weight.
    fn track_ref(&mut self, keyword: &str, entry: &Statement) -> Option<(TrackRef, i64)> {
        let explicit = match entry.args.first().map(|arg| arg.text.as_str()) {
            None => None,
            Some("weight") => {
                let value = entry.args.get(1).and_then(|arg| parse_int(&arg.text));
                let reverse = entry.args.get(2).map(|arg| arg.text.as_str());
                match (value, reverse) {
                    (Some(value), None | Some("noreverse")) if (-254..=254).contains(&value) => {
                        Some(value)
                    }
                    (Some(_), Some("reverse")) => {
                        self.not_converted(entry, "hav has no reversed tracking; left out");
                        return None;
                    }
                    _ => {
                        self.not_converted(entry, "expected `weight N`; left out");
                        return None;
                    }
                }
            }
            Some(_) => {
                self.not_converted(entry, "expected `NAME [weight N]`; left out");
                return None;
            }
        };
        if explicit.is_some_and(|weight| weight.abs() > 253) {
            self.not_converted(entry, "hav weights are -253 to 253; left out");
            return None;
        }
        let (kind, name, default) = if keyword == "track_interface" {
            (TrackKind::Interface, entry.keyword.clone(), 0)
        } else {
            let table = match keyword {
                "track_script" => &self.scripts,
                "track_process" => &self.processes,
                _ => &self.track_files,
            };
            let Some(defined) = table.get(&entry.keyword).cloned() else {
                self.not_converted(
                    entry,
                    "refers to a definition that is missing or was not converted; left out",
                );
                return None;
            };
            (defined.kind, defined.hav_name, defined.keepalived_weight)
        };
        let weight = explicit.unwrap_or(default);
        let hav = match kind {
            TrackKind::File => explicit,
            _ => explicit.map(hav_weight),
        };
        Some((
            TrackRef {
                kind,
                name,
                weight: hav,
                keepalived_weight: weight,
                location: entry.location.clone(),
            },
            weight,
        ))
    }

    /// A notify program as argv; extra words are keepalived's user and group.
    fn notify(&mut self, item: &Statement) -> Option<Vec<String>> {
        let first = item.args.first()?;
        let argv = match split_command(&first.text) {
            Ok(argv) => argv,
            Err(reason) => {
                self.not_converted(item, &reason);
                return None;
            }
        };
        if !argv.first().is_some_and(|program| program.starts_with('/')) {
            self.not_converted(
                item,
                "hav runs the program without a shell or PATH search: give its absolute path",
            );
            return None;
        }
        if item.args.len() > 1 {
            self.push(
                FindingKind::NotConverted,
                &item.location,
                format!("{} user {}", item.keyword, item.args[1].text),
                "hav runs notify programs as hav-agent's user; the program is converted",
            );
        }
        Some(argv)
    }

    fn sync_group(&mut self, statement: &Statement, draft: &mut Draft) {
        let Some(keepalived_name) = first_arg(statement) else {
            return self.not_converted(statement, "a vrrp_sync_group needs a name");
        };
        let name = self.name(keepalived_name, &statement.location, "vrrp_sync_group");
        let mut group = SyncGroupDraft {
            name,
            location: statement.location.clone(),
            instances: Vec::new(),
            notify: Default::default(),
            smtp_alert: None,
        };
        let mut tracking_weight = false;
        for item in block(statement) {
            let keyword = item.keyword.as_str();
            match keyword {
                "group" => {
                    for member in block(item) {
                        for member_name in
                            std::iter::once(member.keyword.as_str()).chain(member.words())
                        {
                            match self.instance_names.get(member_name) {
                                Some(hav_name) => group.instances.push(hav_name.clone()),
                                None => self.push(
                                    FindingKind::NotConverted,
                                    &member.location,
                                    format!("group member {member_name}"),
                                    "no vrrp_instance of that name; left out",
                                ),
                            }
                        }
                    }
                }
                "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    let index = NOTIFY_KEYS
                        .iter()
                        .position(|key| *key == keyword)
                        .unwrap_or(0);
                    group.notify[index] = self.notify(item);
                }
                "track_interface" | "track_script" | "track_process" | "track_file" => self
                    .not_converted(
                        item,
                        "hav tracks per instance: add these to each member instance",
                    ),
                "smtp_alert" => group.smtp_alert = self.smtp_alert(item),
                "sync_group_tracking_weight" => tracking_weight = true,
                "global_tracking" => self.not_converted(
                    item,
                    "deprecated in keepalived; hav applies each member's own tracking",
                ),
                _ => self.not_converted(item, "no hav equivalent"),
            }
        }
        if group.instances.is_empty() {
            return self.not_converted(statement, "no member converted; the group is left out");
        }
        // keepalived ignores weighted trackers of group members.
        if !tracking_weight {
            for instance in &mut draft.instances {
                if !group.instances.contains(&instance.name) {
                    continue;
                }
                let (ignored, kept): (Vec<TrackRef>, Vec<TrackRef>) = (instance.tracks.drain(..))
                    .partition(|track| {
                        track.kind != TrackKind::File && track.keepalived_weight != 0
                    });
                instance.tracks = kept;
                for track in ignored {
                    self.push(
                        FindingKind::NotConverted,
                        &track.location,
                        format!(
                            "{} {} (weight {})",
                            track.kind.key(),
                            track.name,
                            track.keepalived_weight
                        ),
                        "keepalived ignores weighted trackers of sync group members (without \
                         sync_group_tracking_weight); left out to behave the same",
                    );
                    if track.keepalived_weight > 0 && instance.base_priority != 255 {
                        let positive: i64 = (instance.tracks.iter())
                            .filter(|t| t.kind != TrackKind::File && t.keepalived_weight > 0)
                            .map(|t| t.keepalived_weight)
                            .sum();
                        instance.priority = (instance.base_priority + positive)
                            .min(254)
                            .max(instance.base_priority);
                    }
                }
            }
        }
        draft.sync_groups.push(group);
    }

    fn top_level_unsupported(&mut self, statement: &Statement) {
        let reason = match statement.keyword.as_str() {
            "virtual_server_group" => {
                "hav has no virtual_server_group: write one [[virtual_server]] per address and \
                 port of the group (or one with `ports = [...]` for several ports of one address)"
            }
            "static_ipaddress" | "static_routes" | "static_rules" => {
                "hav manages virtual addresses only; configure static ones in the OS network \
                 config"
            }
            "bfd_instance" => "hav has no BFD",
            "include" | "includer" | "includem" | "includew" | "includeb" | "includea" => {
                "not expanded: keepalived reads an include only at the start of a line; put it \
                 on a line of its own"
            }
            "garp_group" => "hav paces announcements per instance (garp interval)",
            "linkbeat_interfaces" | "interface_up_down_delays" | "track_group" => {
                "no hav equivalent"
            }
            keyword if keyword.starts_with('$') => {
                "parameter definitions are not expanded by the importer; expand them first \
                 (keepalived --config-test dumps the result with -d)"
            }
            keyword if keyword.starts_with('@') => {
                "conditional configuration is not evaluated by the importer"
            }
            _ => "no hav equivalent",
        };
        self.not_converted(statement, reason);
    }
}

/// A statement's block, or nothing.
fn block(statement: &Statement) -> &[Statement] {
    statement.block.as_deref().unwrap_or(&[])
}

fn first_arg(statement: &Statement) -> Option<&str> {
    statement.args.first().map(|arg| arg.text.as_str())
}

/// `keyword args...` as written, for findings.
fn describe(statement: &Statement) -> String {
    let mut text = statement.keyword.clone();
    for arg in &statement.args {
        text.push(' ');
        if arg.quoted || arg.text.contains(char::is_whitespace) {
            text.push_str(&format!("{:?}", arg.text));
        } else {
            text.push_str(&arg.text);
        }
    }
    if statement.block.is_some() {
        text.push_str(" { ... }");
    }
    text
}

/// keepalived's weight as hav's: positive weights (added while fine) become negative ones
/// (taken away while failed); the instance's base priority absorbs the difference.
fn hav_weight(keepalived: i64) -> i64 {
    -keepalived.abs()
}

fn parse_int(text: &str) -> Option<i64> {
    text.parse().ok()
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "on" | "true" | "yes" => Some(true),
        "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Decimal seconds (`2`, `0.5`, `1.25`) in microseconds.
fn parse_seconds_micros(text: &str) -> Option<u64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut micros_text: String = fraction.chars().take(6).collect();
    while micros_text.len() < 6 {
        micros_text.push('0');
    }
    let fraction_micros: u64 = micros_text.parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(fraction_micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds_micros("2"), Some(2_000_000));
        assert_eq!(parse_seconds_micros("0.5"), Some(500_000));
        assert_eq!(parse_seconds_micros(".25"), Some(250_000));
        assert_eq!(parse_seconds_micros("1e3"), None);
        assert_eq!(parse_seconds_micros("-1"), None);
    }
}
