//! keepalived's meaning carried into hav: defaults that differ, weights, sync groups, families,
//! authentication, commands; and a converted config hav refuses is an error naming the hav key.

use std::path::Path;
use std::time::Duration;

use hav_proto::config::{Instance, TrackTarget};
use hav_vrrp::{Auth, V3Checksum, Version};
use havctl::import::{ImportError, ImportedNode, import_keepalived_text};

fn import(text: &str) -> ImportedNode {
    import_keepalived_text(text, Path::new("/nonexistent/keepalived.conf"))
        .unwrap_or_else(|error| panic!("{error}"))
}

/// One instance around `body`, with a VIP unless the body has one.
fn one_instance(global: &str, body: &str) -> String {
    let vips = if body.contains("virtual_ipaddress") {
        ""
    } else {
        "virtual_ipaddress {\n 198.51.100.100/24\n}\n"
    };
    format!(
        "global_defs {{\n router_id n1\n{global}\n}}\nvrrp_instance VI_1 {{\n interface eth0\n \
         virtual_router_id 7\n{vips}{body}\n}}\n"
    )
}

fn the_instance(node: &ImportedNode) -> &Instance {
    &node.config.instances[0]
}

fn not_converted_lines(node: &ImportedNode) -> Vec<(usize, String)> {
    node.not_converted()
        .map(|finding| (finding.location.line, finding.item.clone()))
        .collect()
}

#[test]
fn keepalived_defaults_are_written_out() {
    let node = import(&one_instance("", ""));
    let instance = the_instance(&node);
    assert_eq!(instance.version, Version::V2);
    assert_eq!(instance.priority.get(), 100);
    assert!(instance.preempt && instance.accept);
    let master = import(&one_instance("", "state MASTER"));
    assert_eq!(
        the_instance(&master).priority.get(),
        255,
        "MASTER without priority owns"
    );
    let v3 = import(&one_instance(
        "vrrp_version 3\nv3_checksum_as_v2",
        "advert_int 0.25",
    ));
    assert_eq!(the_instance(&v3).version, Version::V3);
    assert_eq!(the_instance(&v3).checksum, V3Checksum::NoPseudoHeader);
    assert_eq!(
        the_instance(&v3).advert_interval.as_duration(),
        Duration::from_millis(250)
    );
}

#[test]
fn state_master_clears_nopreempt_and_preempt_delay_as_keepalived_does() {
    let node = import(&one_instance(
        "",
        "state MASTER\npriority 150\nnopreempt\npreempt_delay 30",
    ));
    assert!(the_instance(&node).preempt);
    assert_eq!(the_instance(&node).preempt_delay, Duration::ZERO);
    let backup = import(&one_instance(
        "",
        "state BACKUP\nnopreempt\npreempt_delay 2.5",
    ));
    assert!(!the_instance(&backup).preempt);
    assert_eq!(
        the_instance(&backup).preempt_delay,
        Duration::from_millis(2500)
    );
}

#[test]
fn positive_weights_fold_into_the_base_priority() {
    let text = "vrrp_script up {\n script /bin/true\n weight 20\n}\n\
                vrrp_script down {\n script /bin/false\n weight -30\n}\n"
        .to_owned()
        + &one_instance(
            "",
            "priority 100\ntrack_script {\n up\n down\n}\ntrack_interface {\n eth1 weight 5\n}",
        );
    let node = import(&text);
    let instance = the_instance(&node);
    assert_eq!(instance.priority.get(), 125);
    let weight = |target: TrackTarget| {
        (instance.track.iter())
            .find(|track| track.target == target)
            .map(|track| track.weight.get())
    };
    assert_eq!(weight(TrackTarget::Script("up".into())), Some(-20));
    assert_eq!(weight(TrackTarget::Script("down".into())), Some(-30));
    assert_eq!(weight(TrackTarget::Interface("eth1".into())), Some(-5));
    // Capped as keepalived caps the effective priority.
    let capped = import(&one_instance(
        "",
        "priority 250\ntrack_interface {\n eth1 weight 20\n}",
    ));
    assert_eq!(the_instance(&capped).priority.get(), 254);
}

#[test]
fn weighted_trackers_of_sync_group_members_are_left_out_as_keepalived_ignores_them() {
    let text = one_instance("", "track_interface {\n eth1 weight -50\n eth2\n}")
        + "vrrp_sync_group G {\n group {\n VI_1\n VI_MISSING\n }\n}\n";
    let node = import(&text);
    let tracked: Vec<_> = the_instance(&node)
        .track
        .iter()
        .map(|t| t.target.clone())
        .collect();
    assert_eq!(tracked, [TrackTarget::Interface("eth2".into())]);
    assert_eq!(node.config.sync_groups[0].instances, ["VI_1"]);
    assert_eq!(
        not_converted_lines(&node),
        [
            (12, "track_interface eth1 (weight -50)".to_owned()),
            (19, "group member VI_MISSING".to_owned())
        ]
    );
    let kept = import(&(text.replace("group {", "sync_group_tracking_weight\n group {")));
    assert_eq!(the_instance(&kept).track.len(), 2);
}

#[test]
fn families_versions_and_addresses() {
    let node = import(&one_instance(
        "",
        "virtual_ipaddress {\n 2001:db8::1/64\n 198.51.100.1/24\n 2001:db8::2 dev eth1 scope global\n}",
    ));
    let instance = the_instance(&node);
    assert_eq!(
        instance.version,
        Version::V3,
        "IPv6 runs VRRPv3 as in keepalived"
    );
    let addresses: Vec<String> = instance
        .vips
        .iter()
        .map(|v| format!("{}/{}@{}", v.address, v.prefix_len, v.dev))
        .collect();
    assert_eq!(addresses, ["2001:db8::1/64@eth0", "2001:db8::2/128@eth1"]);
    assert_eq!(
        not_converted_lines(&node),
        [(10, "198.51.100.1/24".to_owned())]
    );
}

#[test]
fn authentication() {
    let pass = import(&one_instance(
        "",
        "authentication {\n auth_type PASS\n auth_pass 0123456789\n}",
    ));
    assert_eq!(the_instance(&pass).auth, Auth::SimpleText(*b"01234567"));
    let ah = import(&one_instance(
        "",
        "authentication {\n auth_type AH\n auth_pass x\n}",
    ));
    assert_eq!(the_instance(&ah).auth, Auth::None);
    assert_eq!(not_converted_lines(&ah)[0].0, 11);
    let v3 = import(&one_instance(
        "vrrp_version 3",
        "authentication {\n auth_type PASS\n auth_pass x\n}",
    ));
    assert_eq!(the_instance(&v3).auth, Auth::None);
    assert_eq!(v3.not_converted().count(), 1);
}

#[test]
fn commands_split_without_a_shell_and_the_rest_is_listed() {
    let node = import(&one_instance(
        "",
        "notify_master \"/usr/local/bin/n 'two words' x\" proxy\n\
         notify_backup \"/usr/local/bin/n | logger\"\n\
         notify_fault relative-program\n\
         notify_stop /usr/local/bin/stop",
    ));
    let notify = &the_instance(&node).notify;
    let master = notify.master.as_ref().map(|c| c.args.clone());
    assert_eq!(master, Some(vec!["two words".to_owned(), "x".to_owned()]));
    assert!(notify.backup.is_none() && notify.fault.is_none());
    assert!(notify.stop.is_some());
    let lines: Vec<usize> = not_converted_lines(&node)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(
        lines,
        [11, 12, 13],
        "user of notify_master, the pipe, the relative path"
    );
}

#[test]
fn scripts_with_shell_syntax_leave_out_their_references() {
    let text = "vrrp_script chk {\n script \"pgrep squid || exit 1\"\n}\n".to_owned()
        + &one_instance("", "track_script {\n chk\n}");
    let node = import(&text);
    assert!(node.config.scripts.is_empty());
    assert!(the_instance(&node).track.is_empty());
    assert_eq!(
        not_converted_lines(&node),
        [
            (1, "vrrp_script chk { ... }".to_owned()),
            (2, "script \"pgrep squid || exit 1\"".to_owned()),
            (15, "chk".to_owned())
        ]
    );
}

#[test]
fn unsupported_top_level_blocks_are_listed() {
    let text = one_instance("vrrp_strict", "")
        + "virtual_server 198.51.100.100 80 {\n lb_algo rr\n}\nstatic_routes {\n 192.0.2.0/24 via 198.51.100.1\n}\n";
    let node = import(&text);
    let items: Vec<(usize, String)> = not_converted_lines(&node);
    assert_eq!(
        items,
        [
            (13, "virtual_server 198.51.100.100 80 { ... }".to_owned()),
            (16, "static_routes { ... }".to_owned())
        ]
    );
    assert!(
        node.toml.contains("keepalived.conf:13:1: virtual_server"),
        "{}",
        node.toml
    );
}

#[test]
fn a_config_hav_refuses_is_an_error_naming_the_hav_key() {
    let text = "vrrp_instance VI_1 {\n virtual_router_id 300\n virtual_ipaddress {\n 198.51.100.1\n }\n}\n";
    match import_keepalived_text(text, Path::new("k.conf")) {
        Err(error @ ImportError::Rejected { .. }) => {
            let message = error.to_string();
            // Each hav key is named with the keepalived statement it came from.
            assert!(
                message.contains("k.conf:1:1: instance[0].vrid"),
                "{message}"
            );
            assert!(
                message.contains("k.conf:1:1: instance[0].interface"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn includes_expand_globs_relative_to_the_including_file() {
    let dir = std::env::temp_dir().join(format!("hav-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf.d")).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    };
    write(
        "keepalived.conf",
        "global_defs {\n router_id inc\n}\ninclude conf.d/*.{conf,inc}\ninclude missing/*.conf\n",
    );
    write(
        "conf.d/b.inc",
        "vrrp_instance B {\n interface eth0\n virtual_router_id 2\n virtual_ipaddress {\n 198.51.100.2\n }\n}\n",
    );
    write(
        "conf.d/a.conf",
        "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 198.51.100.1\n }\n bogus_keyword 1\n}\n",
    );
    write("conf.d/ignored.txt", "this is not included {");
    let report = havctl::import::import_keepalived(&[dir.join("keepalived.conf")])
        .unwrap_or_else(|e| panic!("{e}"));
    let node = &report.nodes[0];
    let names: Vec<&str> = node
        .config
        .instances
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["A", "B"]);
    let bogus = node
        .not_converted()
        .next()
        .map(|f| (f.location.to_string(), f.item.clone()));
    assert_eq!(
        bogus,
        Some((
            format!("{}:7:2", dir.join("conf.d/a.conf").display()),
            "bogus_keyword 1".to_owned()
        ))
    );
    assert!(
        node.notes()
            .any(|note| note.item == "include missing/*.conf" && note.location.line == 5)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dont_track_primary_becomes_a_weighted_track_of_the_instance_interface() {
    let node = import(&one_instance("", "dont_track_primary"));
    let tracked: Vec<(TrackTarget, i16)> = (the_instance(&node).track.iter())
        .map(|track| (track.target.clone(), track.weight.get()))
        .collect();
    assert_eq!(tracked, [(TrackTarget::Interface("eth0".into()), -1)]);
    assert!(
        node.toml
            .contains("track_interface = [{ name = \"eth0\", weight = -1 }]"),
        "{}",
        node.toml
    );
    assert!(not_converted_lines(&node).is_empty());
    // An interface the instance already tracks keeps its own weight.
    let node = import(&one_instance(
        "",
        "dont_track_primary\ntrack_interface {\n eth0 weight -30\n}",
    ));
    let weights: Vec<i16> = (the_instance(&node).track.iter())
        .map(|track| track.weight.get())
        .collect();
    assert_eq!(weights, [-30]);
}

#[test]
fn what_hav_does_not_do_yet_is_named_per_keyword_with_what_it_does_instead() {
    let global = "vrrp_strict\nnotify_fifo /run/keepalived.fifo\nvrrp_notify_fifo /run/vrrp.fifo\n\
                  vrrp_iptables\nnftables\nlvs_notify_fifo /run/lvs.fifo\nsmtp_alert_checker\n\
                  no_email_faults\nmin_auto_priority_delay 1000\nvrrp_rt_priority 20\nvrrp_priority -5";
    let body = "use_vmac\nvirtual_routes {\n 0.0.0.0/0 via 198.51.100.1\n}\nvirtual_rules {\n from 198.51.100.100 table 10\n}";
    let node = import(&one_instance(global, body));
    for keyword in [
        "vrrp_notify_fifo",
        "vrrp_iptables",
        "nftables",
        "lvs_notify_fifo",
        "smtp_alert_checker",
        "no_email_faults",
        "min_auto_priority_delay",
        "vrrp_rt_priority",
        "vrrp_priority",
    ] {
        let reasons: Vec<&str> = node
            .not_converted()
            .filter(|finding| finding.item.split_whitespace().next() == Some(keyword))
            .map(|finding| finding.reason.as_str())
            .collect();
        assert_eq!(reasons.len(), 1, "{keyword}: {:?}", node.findings);
        assert!(
            reasons[0] != "no hav equivalent" && reasons[0].contains("hav"),
            "{keyword}: {}",
            reasons[0]
        );
    }
}

#[test]
fn notify_fifo_mail_and_max_auto_priority_become_node_settings() {
    let global = "notify_fifo /run/keepalived.fifo\nnotify_fifo_script \"/usr/local/bin/reader -v\"\n\
                  max_auto_priority 10\nnotification_email {\n ops@example.org\n noc@example.org\n}\n\
                  notification_email_from lb@example.org\nsmtp_server 192.0.2.25 2525\n\
                  smtp_helo_name lb1.example.org\nsmtp_connect_timeout 10\nsmtp_alert";
    let node = import(&format!(
        "{}vrrp_sync_group G1 {{\n group {{\n VI_1\n }}\n smtp_alert off\n}}\n",
        one_instance(global, "smtp_alert")
    ));
    assert_eq!(node.not_converted().count(), 0, "{:?}", node.findings);
    let settings = &node.config.node;
    let fifo = settings.notify_fifo.as_ref().expect("notify_fifo");
    assert_eq!(fifo.path, Path::new("/run/keepalived.fifo"));
    let script = fifo.script.as_ref().expect("notify_fifo_script");
    assert_eq!(
        (script.program.as_path(), script.args.as_slice()),
        (Path::new("/usr/local/bin/reader"), &["-v".to_owned()][..])
    );
    assert_eq!(settings.max_auto_priority.map(|p| p.get()), Some(10));
    let smtp = settings.smtp.as_ref().expect("[node.smtp]");
    assert_eq!(smtp.server.to_string(), "192.0.2.25:2525");
    assert_eq!(smtp.connect_timeout, Duration::from_secs(10));
    assert_eq!(smtp.helo_name.as_deref(), Some("lb1.example.org"));
    assert_eq!(smtp.from.as_str(), "lb@example.org");
    let to: Vec<&str> = smtp.to.iter().map(|to| to.as_str()).collect();
    assert_eq!(to, ["ops@example.org", "noc@example.org"]);
    assert!(smtp.alert, "global smtp_alert is the default");
    assert_eq!(the_instance(&node).smtp_alert, Some(true));
    assert_eq!(node.config.sync_groups[0].smtp_alert, Some(false));
}

#[test]
fn mail_without_a_server_or_recipients_is_not_converted_as_keepalived_sends_none() {
    let node = import(&one_instance("smtp_server 192.0.2.25", "smtp_alert"));
    assert!(node.config.node.smtp.is_none());
    let reasons: Vec<&str> = (node.not_converted())
        .filter(|finding| finding.item.starts_with("smtp_server"))
        .map(|finding| finding.reason.as_str())
        .collect();
    assert_eq!(reasons.len(), 1, "{:?}", node.findings);
    assert!(
        reasons[0].contains("no notification_email"),
        "{}",
        reasons[0]
    );
    let node = import(&one_instance(
        "notification_email {\n ops@example.org\n not-an-address\n}",
        "",
    ));
    assert!(node.config.node.smtp.is_none());
    let items: Vec<&str> = (node.not_converted())
        .map(|finding| finding.item.as_str())
        .collect();
    assert_eq!(
        items,
        [
            "notification_email { ... }",
            "notification_email not-an-address"
        ],
        "{:?}",
        node.findings
    );
    // A reader program without its FIFO gets hav's default FIFO.
    let node = import(&one_instance(
        "vrrp_notify_fifo_script /usr/local/bin/reader",
        "",
    ));
    let fifo = node.config.node.notify_fifo.as_ref().expect("notify_fifo");
    assert_eq!(fifo.path, Path::new("/run/hav/notify.fifo"));
    assert_eq!(node.not_converted().count(), 0, "{:?}", node.findings);
}

#[test]
fn an_include_inside_a_line_is_reported_not_expanded_nor_called_unknown() {
    let node = import(&format!(
        "{} include /etc/keepalived/other.conf\n",
        one_instance("", "").replace('\n', " ")
    ));
    let reasons: Vec<String> = node
        .not_converted()
        .filter(|finding| finding.item.starts_with("include "))
        .map(|finding| format!("{}: {}", finding.location, finding.reason))
        .collect();
    assert_eq!(reasons.len(), 1, "{:?}", node.findings);
    assert!(reasons[0].contains("start of a line"), "{}", reasons[0]);
}
