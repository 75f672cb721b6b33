//! What the agents logged around a violation, for a failing run's output: a CI log then holds
//! the daemons' own account of the instant, not only the judgement.
//!
//! Guarantees: reads only the agents' log files of the run (`hav-agent-<node>-<n>.log`), keeps
//! the lines at INFO and above whose timestamp falls in the window, merges the nodes by time,
//! and never fails (an unreadable file or line is skipped).

use std::path::Path;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The lines of every agent's log between `from` and `to` (wall clock), at most `limit`, each
/// prefixed with its node.
pub fn agent_lines(log_dir: &Path, from: SystemTime, to: SystemTime, limit: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return Vec::new();
    };
    let mut lines: Vec<(OffsetDateTime, String)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(node) = node_of(&name) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        lines.extend(
            text.lines().filter_map(|line| {
                keep(line, from, to).map(|at| (at, format!("{node:>4} {line}")))
            }),
        );
    }
    lines.sort_by_key(|(at, _)| *at);
    let total = lines.len();
    let mut out: Vec<String> = lines
        .into_iter()
        .take(limit)
        .map(|(_, line)| line)
        .collect();
    if total > limit {
        out.push(format!("… and {} more lines", total - limit));
    }
    out
}

/// `hav-agent-p1b-3.log` → `p1b`.
fn node_of(file: &str) -> Option<&str> {
    let stem = file.strip_prefix("hav-agent-")?.strip_suffix(".log")?;
    let (node, run) = stem.rsplit_once('-')?;
    run.parse::<u32>().ok()?;
    Some(node)
}

/// The line's time, if it is a log line at INFO or above within the window.
fn keep(line: &str, from: SystemTime, to: SystemTime) -> Option<OffsetDateTime> {
    let mut words = line.split_whitespace();
    let at = OffsetDateTime::parse(words.next()?, &Rfc3339).ok()?;
    if matches!(words.next()?, "DEBUG" | "TRACE") {
        return None;
    }
    let at_system = SystemTime::from(at);
    (from <= at_system && at_system <= to).then_some(at)
}

/// The window of wall-clock time around an instant of the run.
pub fn window(at: SystemTime, before: Duration, after: Duration) -> (SystemTime, SystemTime) {
    (at.checked_sub(before).unwrap_or(at), at + after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agent_logs_name_a_node() {
        assert_eq!(node_of("hav-agent-p1b-3.log"), Some("p1b"));
        assert_eq!(node_of("hav-agent-p0a-0.log"), Some("p0a"));
        assert_eq!(node_of("httpd-p0a.log"), None);
        assert_eq!(node_of("hav-agent-p0a.log"), None);
    }

    #[test]
    fn lines_in_the_window_at_info_and_above_are_kept_in_time_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("hav-agent-p0a-0.log"),
            "2026-12-02T23:46:44.714870Z  INFO a: in\n\
             2026-12-02T23:46:44.800000Z DEBUG a: debug\n\
             2026-12-02T23:46:50.000000Z  INFO a: late\n\
             not a log line\n",
        )
        .expect("log written");
        std::fs::write(
            dir.path().join("hav-agent-p0b-1.log"),
            "2026-12-02T23:46:44.700000Z  WARN b: first\n",
        )
        .expect("log written");
        let at = SystemTime::from(
            OffsetDateTime::parse("2026-12-02T23:46:45Z", &Rfc3339).expect("a time"),
        );
        let (from, to) = window(at, Duration::from_secs(1), Duration::from_secs(1));
        let lines = agent_lines(dir.path(), from, to, 10);
        assert_eq!(
            lines,
            [
                " p0b 2026-12-02T23:46:44.700000Z  WARN b: first",
                " p0a 2026-12-02T23:46:44.714870Z  INFO a: in",
            ]
        );
        assert_eq!(
            agent_lines(dir.path(), from, to, 1).len(),
            2,
            "the cut is said"
        );
    }
}
