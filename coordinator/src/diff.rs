//! What a push changes on a node and a small line diff of it for config previews
//! (`push-config --dry-run`). Only the part of a config a push sets is compared: the sections an
//! agent keeps from its local file never show up as a change. Configs are a few hundred lines,
//! so the quadratic longest-common-subsequence table is fine.

use std::borrow::Cow;

/// The part of a node config text that a push sets
/// ([`hav_proto::config::NodeConfig::pushed_toml`]), as canonical TOML. A text that does not
/// parse (never one the coordinator validated) is compared as it is.
pub fn pushed_part(text: &str) -> Cow<'_, str> {
    match hav_proto::config::parse_node_config(text, "stored config") {
        Ok(config) => Cow::Owned(config.pushed_toml()),
        Err(_) => Cow::Borrowed(text),
    }
}

/// Lines of `new` not in `old` prefixed `+ `, lines of `old` not in `new` prefixed `- `, common
/// lines omitted. Empty when equal.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{line_diff, pushed_part};

    #[test]
    fn the_local_sections_of_a_config_are_not_what_a_push_changes() {
        let local = "[node]\nname = \"lb-1\"\nstate_dir = \"/srv/hav\"\n\n[telemetry]\n\
                     metrics_listen = \"127.0.0.1:9100\"\n\n[[instance]]\nname = \"web\"\n\
                     interface = \"eth0\"\nvrid = 10\npriority = 150\n\
                     vips = [\"198.51.100.100/24\"]\n";
        let plain = "[node]\nname = \"lb-1\"\n\n[[instance]]\nname = \"web\"\n\
                     interface = \"eth0\"\nvrid = 10\npriority = 150\n\
                     vips = [\"198.51.100.100/24\"]\n";
        assert_eq!(pushed_part(local), pushed_part(plain));
        let part = pushed_part(plain);
        assert!(part.contains("name = \"lb-1\""), "{part}");
        assert!(part.contains("vrid = 10"), "{part}");
        for local_only in [
            "state_dir",
            "metrics_listen",
            "[telemetry]",
            "[coordinator]",
        ] {
            assert!(!part.contains(local_only), "{local_only} in {part}");
        }
    }

    #[test]
    fn shows_changed_lines_only() {
        let diff = line_diff("a = 1\nb = 2\nc = 3\n", "a = 1\nb = 5\nc = 3\nd = 4\n");
        assert_eq!(diff, "- b = 2\n+ b = 5\n+ d = 4\n");
        assert_eq!(line_diff("x\n", "x\n"), "");
    }
}
