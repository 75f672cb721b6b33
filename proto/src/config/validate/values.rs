//! Checks of single values shared by every section: names, paths, durations, counts, weights,
//! addresses and commands. Each reports a refused value to the collector and yields `None`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hav_vrrp::Family;

use crate::config::duration;
use crate::config::error::{Collector, KeyPath, Problem};
use crate::config::node::{Command, Notify, TrackWeight};

pub(super) fn notify(
    entries: [&Option<Vec<String>>; 5],
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Notify> {
    let keys = [
        "notify",
        "notify_master",
        "notify_backup",
        "notify_fault",
        "notify_stop",
    ];
    let mut commands: [Option<Command>; 5] = Default::default();
    let mut all_ok = true;
    for ((entry, key), slot) in entries.into_iter().zip(keys).zip(commands.iter_mut()) {
        if let Some(argv) = entry {
            match command(argv, &path.key(key), errors) {
                Some(command) => *slot = Some(command),
                None => all_ok = false,
            }
        }
    }
    let [any, master, backup, fault, stop] = commands;
    all_ok.then_some(Notify {
        any,
        master,
        backup,
        fault,
        stop,
    })
}

pub(super) fn command(argv: &[String], path: &KeyPath, errors: &mut Collector) -> Option<Command> {
    let Some((program, args)) = argv.split_first() else {
        errors.invalid(
            path.clone(),
            "expected the program and its arguments, such as [\"/usr/local/sbin/notify\", \"master\"]",
        );
        return None;
    };
    let program = absolute_path(program, &path.index(0), errors)?;
    Some(Command {
        program,
        args: args.to_vec(),
    })
}

pub(super) fn required<'a, T>(
    value: Option<&'a T>,
    path: &KeyPath,
    expected: &str,
    errors: &mut Collector,
) -> Option<&'a T> {
    if value.is_none() {
        errors.missing(path.clone(), format!("expected {expected}"));
    }
    value
}

/// `Some(None)` when absent, `Some(Some(_))` when present and valid, `None` when invalid.
pub(super) fn optional<T>(
    value: Option<&str>,
    check: impl FnOnce(&str) -> Option<T>,
) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(value) => check(value).map(Some),
    }
}

/// Names of instances, scripts and the like: they appear in logs, metrics and file names.
pub(super) fn identifier(name: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        errors.invalid(
            path.clone(),
            format!("{name:?} is not a name; expected 1 to 64 of A-Z a-z 0-9 _ - ."),
        );
    }
    valid.then(|| name.to_owned())
}

/// A Linux interface name (the kernel's `dev_valid_name`).
pub(super) fn interface_name(name: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if !valid {
        errors.invalid(
            path.clone(),
            format!("{name:?} is not an interface name; expected 1 to 15 bytes without '/', ':' or spaces"),
        );
    }
    valid.then(|| name.to_owned())
}

pub(super) fn absolute_path(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<PathBuf> {
    if text.starts_with('/') {
        Some(PathBuf::from(text))
    } else {
        errors.invalid(
            path.clone(),
            format!("expected an absolute path, got {text:?}"),
        );
        None
    }
}

pub(super) fn non_empty(text: &str, path: &KeyPath, errors: &mut Collector) -> Option<String> {
    if text.is_empty() {
        errors.invalid(path.clone(), "expected a non-empty name");
        None
    } else {
        Some(text.to_owned())
    }
}

pub(super) fn duration_or(
    text: Option<&str>,
    default: Duration,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Duration> {
    match text {
        None => Some(default),
        Some(text) => match duration::parse(text) {
            Ok(duration) => Some(duration),
            Err(reason) => {
                errors.invalid(path.clone(), reason);
                None
            }
        },
    }
}

/// A check's interval (default 1 s) and timeout (default the interval), both non-zero.
pub(super) fn interval_and_timeout(
    interval: Option<&str>,
    timeout: Option<&str>,
    path: &KeyPath,
    errors: &mut Collector,
) -> (Option<Duration>, Option<Duration>) {
    let interval = duration_or(
        interval,
        Duration::from_secs(1),
        &path.key("interval"),
        errors,
    )
    .and_then(|interval| non_zero(interval, &path.key("interval"), errors));
    let timeout = match timeout {
        None => interval,
        Some(text) => duration_or(Some(text), Duration::ZERO, &path.key("timeout"), errors)
            .and_then(|timeout| non_zero(timeout, &path.key("timeout"), errors)),
    };
    (interval, timeout)
}

pub(super) fn non_zero(
    duration: Duration,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<Duration> {
    if duration.is_zero() {
        errors.invalid(path.clone(), "expected a duration above zero");
        None
    } else {
        Some(duration)
    }
}

/// A count such as `fall` or `min_procs`: default 1, at least 1.
pub(super) fn count(value: Option<i64>, path: &KeyPath, errors: &mut Collector) -> Option<u32> {
    let value = value.unwrap_or(1);
    let checked = u32::try_from(value)
        .ok()
        .filter(|value| (1..=1_000_000).contains(value));
    if checked.is_none() {
        errors.invalid(path.clone(), format!("expected 1..=1000000, got {value}"));
    }
    checked
}

pub(super) fn track_weight(
    value: i64,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<TrackWeight> {
    let weight = i16::try_from(value).ok().and_then(TrackWeight::new);
    if weight.is_none() {
        errors.invalid(
            path.clone(),
            format!("expected a weight -253..=253 (0 means fault on failure), got {value}"),
        );
    }
    weight
}

pub(super) fn address_of_family(
    text: &str,
    family: Option<Family>,
    path: &KeyPath,
    errors: &mut Collector,
) -> Option<IpAddr> {
    let Ok(address) = text.parse::<IpAddr>() else {
        errors.invalid(path.clone(), format!("{text:?} is not an IP address"));
        return None;
    };
    match family {
        Some(family) if family != family_of(address) => {
            errors.push(
                path.clone(),
                Problem::Conflict(format!(
                    "{address} is {} but the instance's virtual addresses are {}",
                    family_name(family_of(address)),
                    family_name(family),
                )),
            );
            None
        }
        _ => Some(address),
    }
}

pub(super) fn not_for_kind(
    present: bool,
    path: &KeyPath,
    key: &str,
    kind: &str,
    errors: &mut Collector,
) -> bool {
    if present {
        errors.push(
            path.key(key),
            Problem::Conflict(format!("`{key}` belongs to kind = \"{kind}\" probes")),
        );
    }
    !present
}

pub(super) fn family_of(address: IpAddr) -> Family {
    match address {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

pub(super) fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}
