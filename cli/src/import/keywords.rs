//! keepalived's keyword table: per block, how many arguments each keyword takes and which block
//! its own `{ ... }` opens.
//!
//! keepalived reads one statement per line; configurations flattened onto one line (braces
//! delimit the blocks) are split back into statements with this table: a known keyword takes its
//! known number of arguments, optional ones only while the next word is no keyword of the same
//! block, and an unknown keyword the words up to the next known one. Words left after a
//! statement's arguments start the next statement, so the converter reports them with their
//! line and column instead of them vanishing into another statement. Blocks of unknown keywords
//! keep keepalived's rule: a statement takes the rest of its line.

/// The kind of block statements are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Top,
    GlobalDefs,
    Instance,
    Authentication,
    Script,
    TrackProcess,
    TrackFile,
    SyncGroup,
    VirtualServer,
    RealServer,
    Checker,
    Url,
    /// `virtual_ipaddress`, `virtual_ipaddress_excluded`, `static_ipaddress`.
    Addresses,
    /// `unicast_peer`.
    Peers,
    /// `track_interface`, `track_script`, `track_process`, `track_file`, `track_bfd`.
    Tracks,
    /// `group` of a sync group, `notification_email`: one name per word.
    Names,
    /// `virtual_routes`: one route per entry.
    Routes,
    /// `virtual_rules`: one rule per entry.
    Rules,
    /// Anything else: one statement per line, as keepalived reads it.
    LineBased,
}

/// How many words after the keyword belong to its statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arity {
    /// At least `min`; up to `max` while the next word is no keyword of the block.
    Range(usize, usize),
    /// Every word up to the next keyword of the block (a command written without quotes).
    Rest,
}

use Arity::{Range, Rest};

/// Words a statement takes from `following` (the words after its keyword up to the next brace
/// or the end of the line), for `keyword` in a block of kind `context`.
pub(crate) fn argument_count(context: Context, keyword: &str, following: &[&str]) -> usize {
    match context {
        Context::LineBased => following.len(),
        Context::Routes => route_words(keyword, following),
        Context::Rules => rule_words(keyword, following),
        Context::Names => 0,
        Context::Addresses => entry_options(following, address_option),
        Context::Peers => entry_options(following, |word| {
            matches!(word, "min_ttl" | "max_ttl").then_some(1)
        }),
        Context::Tracks => track_options(following),
        _ => {
            let is_keyword = |word: &&str| arity(context, word).is_some();
            match arity(context, keyword) {
                Some(Range(min, max)) => {
                    let mandatory = min.min(following.len());
                    let optional = (following[mandatory..].iter())
                        .take(max - mandatory.min(max))
                        .take_while(|word| !is_keyword(word))
                        .count();
                    mandatory + optional
                }
                Some(Rest) | None => following
                    .iter()
                    .take_while(|word| !is_keyword(word))
                    .count(),
            }
        }
    }
}

/// The kind of block `keyword` opens inside a block of kind `context`.
pub(crate) fn block_context(context: Context, keyword: &str) -> Context {
    match (context, keyword) {
        (Context::Top, "global_defs") => Context::GlobalDefs,
        (Context::Top, "vrrp_instance") => Context::Instance,
        (Context::Top, "vrrp_script") => Context::Script,
        (Context::Top, "vrrp_track_process") => Context::TrackProcess,
        (Context::Top, "track_file" | "vrrp_track_file") => Context::TrackFile,
        (Context::Top, "vrrp_sync_group") => Context::SyncGroup,
        (Context::Top, "virtual_server") => Context::VirtualServer,
        (Context::Top, "static_ipaddress") => Context::Addresses,
        (Context::GlobalDefs, "notification_email") => Context::Names,
        (Context::Instance, "authentication") => Context::Authentication,
        (Context::Instance, "virtual_ipaddress" | "virtual_ipaddress_excluded") => {
            Context::Addresses
        }
        (Context::Instance, "unicast_peer") => Context::Peers,
        (Context::Instance, "virtual_routes") => Context::Routes,
        (Context::Instance, "virtual_rules") => Context::Rules,
        (
            Context::Instance | Context::SyncGroup,
            "track_interface" | "track_script" | "track_process" | "track_file" | "track_bfd",
        ) => Context::Tracks,
        (Context::SyncGroup, "group") => Context::Names,
        (Context::VirtualServer, "real_server") => Context::RealServer,
        (Context::RealServer, keyword) if is_checker(keyword) => Context::Checker,
        (Context::Checker, "url") => Context::Url,
        _ => Context::LineBased,
    }
}

/// keepalived's real server checkers.
pub(crate) fn is_checker(keyword: &str) -> bool {
    matches!(
        keyword,
        "TCP_CHECK"
            | "HTTP_GET"
            | "SSL_GET"
            | "MISC_CHECK"
            | "SMTP_CHECK"
            | "DNS_CHECK"
            | "UDP_CHECK"
            | "PING_CHECK"
            | "BFD_CHECK"
            | "FILE_CHECK"
    )
}

/// keepalived's keywords of each block with the number of arguments they take.
fn arity(context: Context, keyword: &str) -> Option<Arity> {
    let none = Range(0, 0);
    let one = Range(1, 1);
    let flag = Range(0, 1);
    // A program (quoted, or its first word) with an optional user and group.
    let program = Range(1, 3);
    Some(match context {
        Context::Top => match keyword {
            "global_defs"
            | "static_ipaddress"
            | "static_routes"
            | "static_rules"
            | "garp_group"
            | "linkbeat_interfaces" => none,
            "vrrp_script"
            | "vrrp_track_process"
            | "track_file"
            | "vrrp_track_file"
            | "vrrp_instance"
            | "vrrp_sync_group"
            | "virtual_server_group"
            | "bfd_instance"
            | "track_group" => one,
            // `IP PORT`, `fwmark N` or `group NAME`.
            "virtual_server" => Range(1, 2),
            "include" | "includer" | "includem" | "includew" | "includeb" | "includea" => one,
            _ => return None,
        },
        Context::GlobalDefs => match keyword {
            "router_id"
            | "vrrp_version"
            | "vrrp_garp_master_delay"
            | "vrrp_garp_master_repeat"
            | "vrrp_garp_master_refresh"
            | "vrrp_garp_master_refresh_repeat"
            | "vrrp_garp_interval"
            | "vrrp_gna_interval"
            | "vrrp_mcast_group4"
            | "vrrp_mcast_group6"
            | "notification_email_from"
            | "smtp_helo_name"
            | "smtp_connect_timeout"
            | "nftables_priority"
            | "vrrp_priority"
            | "checker_priority"
            | "vrrp_garp_lower_prio_delay"
            | "vrrp_garp_lower_prio_repeat"
            | "lvs_sync_daemon_interface"
            | "dynamic_interfaces"
            | "vrrp_rx_bufs_policy"
            | "vrrp_rx_bufs_multiplier" => one,
            "notification_email"
            | "enable_script_security"
            | "vrrp_strict"
            | "no_email_faults"
            | "vrrp_check_unicast_src"
            | "nftables_counters"
            | "vrrp_no_swap"
            | "checker_no_swap"
            | "bfd_no_swap"
            | "enable_traps"
            | "vrrp_higher_prio_send_advert"
            | "vrrp_lower_prio_no_advert" => none,
            "vrrp_min_garp"
            | "v3_checksum_as_v2"
            | "smtp_alert"
            | "smtp_alert_vrrp"
            | "smtp_alert_checker"
            | "vrrp_skip_check_adv_addr"
            | "nftables"
            | "nftables_ifindex"
            | "max_auto_priority"
            | "vrrp_iptables_notrack" => flag,
            "script_user" | "smtp_server" => Range(1, 2),
            "notify_fifo"
            | "notify_fifo_script"
            | "vrrp_notify_fifo"
            | "vrrp_notify_fifo_script"
            | "lvs_notify_fifo"
            | "lvs_notify_fifo_script" => program,
            "vrrp_iptables" => Range(0, 2),
            "vrrp_ipsets" => Range(0, 4),
            "lvs_timeouts" => Range(2, 6),
            "lvs_sync_daemon" => Range(2, 12),
            _ => return None,
        },
        Context::Instance => match keyword {
            "state"
            | "interface"
            | "virtual_router_id"
            | "priority"
            | "advert_int"
            | "version"
            | "preempt_delay"
            | "unicast_src_ip"
            | "mcast_src_ip"
            | "garp_master_delay"
            | "garp_master_repeat"
            | "garp_master_refresh"
            | "garp_master_refresh_repeat"
            | "garp_interval"
            | "gna_interval"
            | "garp_lower_prio_delay"
            | "garp_lower_prio_repeat"
            | "lvs_sync_daemon_interface"
            | "kernel_rx_buf_size"
            | "unicast_ttl" => one,
            "nopreempt"
            | "no_preempt"
            | "preempt"
            | "accept"
            | "no_accept"
            | "unicast_peer"
            | "authentication"
            | "virtual_ipaddress"
            | "virtual_ipaddress_excluded"
            | "track_interface"
            | "track_script"
            | "track_process"
            | "track_file"
            | "track_bfd"
            | "dont_track_primary"
            | "vmac_xmit_base"
            | "virtual_routes"
            | "virtual_rules"
            | "unicast_fault_no_peer"
            | "track_src_ip"
            | "native_ipv6" => none,
            "v3_checksum_as_v2"
            | "smtp_alert"
            | "use_vmac"
            | "strict_mode"
            | "debug"
            | "lower_prio_no_advert"
            | "higher_prio_send_advert"
            | "skip_check_adv_addr"
            | "old_unicast_checksum" => flag,
            "use_ipvlan" => Range(0, 2),
            "notify"
            | "notify_master"
            | "notify_backup"
            | "notify_fault"
            | "notify_stop"
            | "notify_deleted"
            | "notify_master_rx_lower_pri" => program,
            _ => return None,
        },
        Context::Authentication => match keyword {
            "auth_type" | "auth_pass" => one,
            _ => return None,
        },
        Context::Script => match keyword {
            "script" => Rest,
            "interval" | "timeout" | "fall" | "rise" => one,
            "weight" | "user" => Range(1, 2),
            "init_fail" => none,
            _ => return None,
        },
        Context::TrackProcess => match keyword {
            "process" => Rest,
            "quorum" | "quorum_max" | "delay" | "fork_delay" | "terminate_delay"
            | "param_match" => one,
            "weight" => Range(1, 2),
            "full_command" => none,
            _ => return None,
        },
        Context::TrackFile => match keyword {
            "file" => one,
            "weight" => Range(1, 2),
            "init_file" => Range(0, 2),
            _ => return None,
        },
        Context::SyncGroup => match keyword {
            "group"
            | "track_interface"
            | "track_script"
            | "track_process"
            | "track_file"
            | "track_bfd"
            | "sync_group_tracking_weight"
            | "global_tracking" => none,
            "smtp_alert" => flag,
            "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                program
            }
            _ => return None,
        },
        Context::VirtualServer => match keyword {
            "delay_loop"
            | "lb_algo"
            | "lvs_sched"
            | "lb_kind"
            | "lvs_method"
            | "persistence_timeout"
            | "persistence_granularity"
            | "persistence_engine"
            | "protocol"
            | "virtualhost"
            | "quorum"
            | "hysteresis"
            | "retry"
            | "delay_before_retry"
            | "warmup"
            | "connect_timeout"
            | "ip_family"
            | "sorry_server_lvs_method" => one,
            "ha_suspend"
            | "ops"
            | "alpha"
            | "omega"
            | "one_packet_scheduling"
            | "hash_small"
            | "sh-port"
            | "sh-fallback"
            | "mh-port"
            | "mh-fallback"
            | "flag-1"
            | "flag-2"
            | "flag-3" => none,
            "inhibit_on_failure" | "smtp_alert" | "sorry_server_inhibit" => flag,
            "quorum_up" | "quorum_down" => program,
            "real_server" | "sorry_server" => Range(1, 2),
            _ => return None,
        },
        Context::RealServer => match keyword {
            "weight" | "uthreshold" | "lthreshold" | "delay_loop" | "retry"
            | "delay_before_retry" | "connect_timeout" | "warmup" | "virtualhost" => one,
            "alpha" | "omega" => none,
            "inhibit_on_failure" | "smtp_alert" => flag,
            "notify_up" | "notify_down" => program,
            keyword if is_checker(keyword) => none,
            _ => return None,
        },
        Context::Checker => match keyword {
            "connect_ip" | "connect_port" | "bindto" | "bind_port" | "bind_if"
            | "connect_timeout" | "retry" | "nb_get_retry" | "delay_before_retry" | "warmup"
            | "fwmark" | "misc_timeout" | "virtualhost" | "http_protocol" | "delay_loop"
            | "ssl_ciphers" | "helo_name" | "type" | "name" | "payload" => one,
            "url" | "misc_dynamic" | "enable_sni" | "tls_compliant" | "alpha" | "omega"
            | "require_reply" => none,
            "log_all_failures" => flag,
            "misc_path" => Rest,
            "user" => Range(1, 2),
            _ => return None,
        },
        Context::Url => match keyword {
            "path" | "digest" | "virtualhost" | "regex" => one,
            "regex_no_match" => none,
            "status_code" | "regex_options" => Rest,
            _ => return None,
        },
        Context::Addresses
        | Context::Peers
        | Context::Tracks
        | Context::Names
        | Context::Routes
        | Context::Rules
        | Context::LineBased => return None,
    })
}

/// Options of an address entry and how many values each takes.
fn address_option(word: &str) -> Option<usize> {
    match word {
        "dev" | "brd" | "broadcast" | "label" | "scope" | "peer" | "preferred_lft"
        | "track_group" => Some(1),
        "home" | "-nodad" | "nodad" | "mngtmpaddr" | "noprefixroute" | "autojoin" | "no_track"
        | "use_vmac" => Some(0),
        _ => None,
    }
}

/// An entry's options: each option word with its values, up to a word that starts the next
/// entry (an address); other words stay with the entry, as keepalived reads a line.
fn entry_options(following: &[&str], option: impl Fn(&str) -> Option<usize>) -> usize {
    let mut taken = 0;
    while let Some(word) = following.get(taken) {
        if option(word).is_none() && looks_like_address(word) {
            break;
        }
        taken += 1 + option(word).unwrap_or(0);
    }
    taken.min(following.len())
}

/// Route types that begin an entry.
fn is_route_type(word: &str) -> bool {
    matches!(
        word,
        "unicast" | "blackhole" | "unreachable" | "prohibit" | "throw" | "local" | "broadcast"
    )
}

/// The words of one route that begins with `keyword`: its options with their values, up to a
/// word that begins the next route (a type, `src`, `to`, a destination) once this one has its
/// destination; as keepalived reads one route per line, a route written on one line is whole.
fn route_words(keyword: &str, following: &[&str]) -> usize {
    let takes_value = |word: &str| {
        matches!(
            word,
            "src"
                | "via"
                | "gw"
                | "or"
                | "dev"
                | "table"
                | "metric"
                | "preference"
                | "priority"
                | "scope"
                | "proto"
                | "protocol"
                | "mtu"
                | "advmss"
                | "realms"
                | "tos"
                | "weight"
                | "expires"
                | "pref"
                | "to"
        )
    };
    let mut has_destination = !(is_route_type(keyword) || takes_value(keyword));
    let mut taken = usize::from(takes_value(keyword));
    if keyword == "to" {
        has_destination = true;
    }
    while let Some(word) = following.get(taken) {
        let starts_route = is_route_type(word) || matches!(*word, "src" | "to");
        if has_destination && (starts_route || *word == "default" || looks_like_address(word)) {
            break;
        }
        if takes_value(word) {
            has_destination |= *word == "to";
            taken += 2;
        } else {
            has_destination |= *word == "default" || looks_like_address(word);
            taken += 1;
        }
    }
    taken.min(following.len())
}

/// The words of one rule that begins with `keyword`: selectors and their values, the action
/// (a table lookup or another), and what follows it (a priority), up to a selector that begins
/// the next rule once this one has its action.
fn rule_words(keyword: &str, following: &[&str]) -> usize {
    let is_action = |word: &str| matches!(word, "table" | "lookup" | "goto");
    let is_flag_action =
        |word: &str| matches!(word, "blackhole" | "unreachable" | "prohibit" | "nop");
    let starts_rule = |word: &str| matches!(word, "from" | "to" | "fwmark" | "iif" | "oif");
    let mut has_action = is_action(keyword) || is_flag_action(keyword);
    let mut taken = usize::from(!is_flag_action(keyword) && keyword != "not");
    while let Some(word) = following.get(taken) {
        if has_action && starts_rule(word) {
            break;
        }
        if is_flag_action(word) || *word == "not" {
            has_action |= is_flag_action(word);
            taken += 1;
        } else {
            has_action |= is_action(word);
            taken += 2;
        }
    }
    taken.min(following.len())
}

/// `NAME [weight N [reverse|noreverse]]`.
fn track_options(following: &[&str]) -> usize {
    match following {
        ["weight", _, "reverse" | "noreverse", ..] => 3,
        ["weight", _, ..] => 2,
        ["weight"] => 1,
        _ => 0,
    }
}

fn looks_like_address(word: &str) -> bool {
    let address = word.split_once('/').map_or(word, |(address, _)| address);
    address.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keywords_take_their_arguments_and_leave_the_rest() {
        let words = ["MASTER", "interface", "eth0"];
        assert_eq!(argument_count(Context::Instance, "state", &words), 1);
        // Optional arguments stop at the next keyword of the block.
        let words = ["/bin/notify", "notify_backup", "/bin/other"];
        assert_eq!(
            argument_count(Context::Instance, "notify_master", &words),
            1
        );
        let words = ["/bin/notify", "root", "root", "x"];
        assert_eq!(
            argument_count(Context::Instance, "notify_master", &words),
            3
        );
        // A flag with no value before the next keyword.
        let words = ["state", "BACKUP"];
        assert_eq!(argument_count(Context::Instance, "nopreempt", &words), 0);
        // An unknown keyword keeps words up to the next known one.
        let words = ["a", "b", "priority", "100"];
        assert_eq!(argument_count(Context::Instance, "made_up", &words), 2);
        // Unknown blocks are line based.
        assert_eq!(argument_count(Context::LineBased, "x", &words), 4);
    }

    #[test]
    fn list_entries_split_at_the_next_entry() {
        let words = ["dev", "eth0", "label", "eth0:1", "10.0.0.2/24"];
        assert_eq!(argument_count(Context::Addresses, "10.0.0.1/24", &words), 4);
        // An unknown option stays with its address (reported by the converter).
        assert_eq!(
            argument_count(Context::Addresses, "10.0.0.1", &["bogus", "10.0.0.2"]),
            1
        );
        assert_eq!(
            argument_count(Context::Tracks, "chk", &["weight", "-20", "chk2"]),
            2
        );
        assert_eq!(argument_count(Context::Tracks, "eth0", &["eth1"]), 0);
        assert_eq!(argument_count(Context::Names, "VI_1", &["VI_2"]), 0);
        assert_eq!(
            argument_count(Context::Peers, "10.0.0.2", &["min_ttl", "1", "10.0.0.3"]),
            2
        );
    }

    #[test]
    fn blocks_open_their_context() {
        assert_eq!(
            block_context(Context::Top, "vrrp_instance"),
            Context::Instance
        );
        assert_eq!(
            block_context(Context::RealServer, "HTTP_GET"),
            Context::Checker
        );
        assert_eq!(block_context(Context::Checker, "url"), Context::Url);
        assert_eq!(
            block_context(Context::Instance, "virtual_routes"),
            Context::Routes
        );
        assert_eq!(
            block_context(Context::Instance, "static_routes"),
            Context::LineBased
        );
    }

    #[test]
    fn routes_and_rules_written_on_one_line_split_into_entries() {
        let words = [
            "via",
            "198.51.100.254",
            "table",
            "100",
            "blackhole",
            "198.18.0.0/15",
            "src",
            "198.51.100.1",
            "to",
            "192.0.2.0/24",
            "dev",
            "eth0",
        ];
        assert_eq!(argument_count(Context::Routes, "203.0.113.0/24", &words), 4);
        assert_eq!(argument_count(Context::Routes, "blackhole", &words[5..]), 1);
        assert_eq!(argument_count(Context::Routes, "src", &words[7..]), 5);
        let rules = [
            "198.51.100.1",
            "table",
            "100",
            "priority",
            "1000",
            "from",
            "all",
            "fwmark",
            "0x10",
            "lookup",
            "main",
        ];
        assert_eq!(argument_count(Context::Rules, "from", &rules), 5);
        assert_eq!(argument_count(Context::Rules, "from", &rules[6..]), 5);
    }
}
