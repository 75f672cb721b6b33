//! How havctl prints what a command did: text and tables for people, or with `-o json` exactly
//! one JSON document on stdout for scripts, printed through [`print`] by every command.
//!
//! A command that got an answer prints it, then fails (exit status 1, one line on stderr) if the
//! answer is a refusal; a command that got no answer prints nothing on stdout. The commands that
//! follow something as it happens (`watch`, and `maintenance rollout|resume` unless detached)
//! are streams instead: with `-o json`, one compact JSON document per line per update
//! ([`stream_item`]), which `jq` and line-based readers take as they come.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde_json::Value;

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Prints a command's result: `json()` as one pretty-printed document with `-o json`, `text()`
/// (its lines as they are; nothing when empty) otherwise. Only the form asked for is made.
pub fn print(output: Output, json: impl FnOnce() -> Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{}", document(&json())),
        Output::Table => {
            let text = text();
            if text.is_empty() || text.ends_with('\n') {
                print!("{text}");
            } else {
                println!("{text}");
            }
        }
    }
}

/// Prints one update of a stream as one JSON document on one line.
pub fn stream_item(value: &Value) {
    println!("{value}");
}

/// `value` as one JSON document (pretty-printed).
pub fn document(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A table row of fixed cells.
pub fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Rows as aligned columns (two spaces apart, no trailing blanks), one line each.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// RFC 3339 UTC time of a Unix timestamp in milliseconds, always with three fractional digits
/// (`2026-11-03T06:52:57.300Z`), so that times line up in columns and sort as text.
pub fn when(unix_ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let nanos = i128::from(unix_ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| unix_ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_their_trailing_zeros() {
        assert_eq!(when(1_793_688_777_300), "2026-11-03T06:52:57.300Z");
        assert_eq!(when(1_793_688_777_000), "2026-11-03T06:52:57.000Z");
        assert_eq!(when(1_793_688_777_042), "2026-11-03T06:52:57.042Z");
    }

    #[test]
    fn tables_align_columns_without_trailing_blanks() {
        let text = table(&[row(["A", "LONGER"]), row(["wide cell", ""])]);
        assert_eq!(text, "A          LONGER\nwide cell\n");
    }
}
