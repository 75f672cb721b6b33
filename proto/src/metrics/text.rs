//! The Prometheus text exposition format 0.0.4: `# HELP` / `# TYPE` headers and samples with
//! escaped label values. Writing into a `String` cannot fail, so nothing here returns an error.

use std::fmt::Write;

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes the `# HELP` and `# TYPE` lines of metric `name` (`kind`: counter, gauge, histogram).
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample line: `name{label="value",...} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (position, (label, value)) in labels.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

/// Label values escape backslash, double quote and line feed (the text format's three).
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("tracker", "a\"b\\c\nd")], 1.0);
        assert_eq!(out, "m{tracker=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn headers_and_special_values() {
        let mut out = String::new();
        header(&mut out, "m", "gauge", "two\nlines \\ here");
        sample(&mut out, "m", &[], f64::INFINITY);
        sample(&mut out, "m", &[], f64::NAN);
        sample(&mut out, "m", &[], 2.5);
        assert_eq!(
            out,
            "# HELP m two\\nlines \\\\ here\n# TYPE m gauge\nm +Inf\nm NaN\nm 2.5\n"
        );
    }
}
