//! The two exposition formats a scraper may ask for: Prometheus text 0.0.4 (the default) and
//! OpenMetrics 1.0 (`Accept: application/openmetrics-text`), written by one [`Exposition`].
//!
//! The formats differ where this module says: OpenMetrics names a counter's family without its
//! `_total` and an info metric's without its `_info` (0.0.4 calls both gauges or counters by
//! their sample names), carries exemplars after a `#` on the samples that have one (0.0.4 has
//! none and they are left out), and ends with `# EOF`. Label values escape backslash, double quote
//! and line feed in both. Writing into a `String` cannot fail, so nothing here returns an error.

use std::fmt::Write;

/// Which exposition format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header names it (Prometheus asks for it first), else the
    /// 0.0.4 text format every scraper reads.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let wants = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.trim().starts_with("application/openmetrics-text"))
        });
        if wants {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The `Content-Type` of a scrape answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// An exemplar: the labels (a trace id, say) of one observation, its value and when it was
/// made (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp: f64,
}

/// A scrape being written.
#[derive(Debug)]
pub struct Exposition {
    out: String,
    format: Format,
}

impl Exposition {
    pub fn new(format: Format) -> Exposition {
        Exposition {
            out: String::with_capacity(8192),
            format,
        }
    }

    /// The `# HELP` and `# TYPE` lines of metric `name` (`kind`: counter, gauge, histogram or
    /// info; a counter's name ends in `_total`, an info's in `_info`, as its samples' do).
    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let (family, kind) = match (self.format, kind) {
            (Format::OpenMetrics, "counter") => (name.strip_suffix("_total").unwrap_or(name), kind),
            (Format::OpenMetrics, "info") => (name.strip_suffix("_info").unwrap_or(name), kind),
            (Format::Text, "info") => (name, "gauge"),
            _ => (name, kind),
        };
        let _ = writeln!(
            self.out,
            "# HELP {family} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// One sample line: `name{label="value",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.sample_with_exemplar(name, labels, value, None);
    }

    /// A sample with its exemplar (shown in OpenMetrics only).
    pub fn sample_with_exemplar(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        exemplar: Option<&Exemplar>,
    ) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels.iter().map(|(k, v)| (*k, *v)));
        let _ = write!(self.out, " {}", format_value(value));
        if let (Format::OpenMetrics, Some(exemplar)) = (self.format, exemplar) {
            self.out.push_str(" # ");
            let labels = exemplar
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()));
            if exemplar.labels.is_empty() {
                self.out.push_str("{}");
            } else {
                write_labels(&mut self.out, labels);
            }
            let _ = write!(
                self.out,
                " {} {:.3}",
                format_value(exemplar.value),
                exemplar.timestamp
            );
        }
        self.out.push('\n');
    }

    /// The finished exposition.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut labels = labels.peekable();
    if labels.peek().is_none() {
        return;
    }
    out.push('{');
    for (position, (label, value)) in labels.enumerate() {
        if position > 0 {
            out.push(',');
        }
        let _ = write!(out, "{label}=\"{}\"", escape_label(value));
    }
    out.push('}');
}

/// Label values escape backslash, double quote and line feed (the formats' three).
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
        let mut out = Exposition::new(Format::Text);
        out.sample("m", &[("tracker", "a\"b\\c\nd")], 1.0);
        assert_eq!(out.finish(), "m{tracker=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn headers_and_special_values() {
        let mut out = Exposition::new(Format::Text);
        out.header("m", "gauge", "two\nlines \\ here");
        out.sample("m", &[], f64::INFINITY);
        out.sample("m", &[], f64::NAN);
        out.sample("m", &[], 2.5);
        assert_eq!(
            out.finish(),
            "# HELP m two\\nlines \\\\ here\n# TYPE m gauge\nm +Inf\nm NaN\nm 2.5\n"
        );
    }

    #[test]
    fn openmetrics_names_families_carries_exemplars_and_ends_with_eof() {
        let exemplar = Exemplar {
            labels: vec![("trace_id".into(), "4bf92f3577b34da6a3ce929d0e0e4736".into())],
            value: 0.042,
            timestamp: 1_700_000_000.123_4,
        };
        let write = |format| {
            let mut out = Exposition::new(format);
            out.header("hav_build_info", "info", "Build.");
            out.sample("hav_build_info", &[("version", "1")], 1.0);
            out.header("hav_x_total", "counter", "X.");
            out.sample("hav_x_total", &[], 3.0);
            out.header("hav_d_seconds", "histogram", "D.");
            out.sample_with_exemplar(
                "hav_d_seconds_bucket",
                &[("le", "0.05")],
                1.0,
                Some(&exemplar),
            );
            out.finish()
        };
        assert_eq!(
            write(Format::OpenMetrics),
            "# HELP hav_build Build.\n# TYPE hav_build info\nhav_build_info{version=\"1\"} 1\n\
             # HELP hav_x X.\n# TYPE hav_x counter\nhav_x_total 3\n\
             # HELP hav_d_seconds D.\n# TYPE hav_d_seconds histogram\n\
             hav_d_seconds_bucket{le=\"0.05\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.042 1700000000.123\n\
             # EOF\n"
        );
        assert_eq!(
            write(Format::Text),
            "# HELP hav_build_info Build.\n# TYPE hav_build_info gauge\nhav_build_info{version=\"1\"} 1\n\
             # HELP hav_x_total X.\n# TYPE hav_x_total counter\nhav_x_total 3\n\
             # HELP hav_d_seconds D.\n# TYPE hav_d_seconds histogram\n\
             hav_d_seconds_bucket{le=\"0.05\"} 1\n"
        );
    }

    #[test]
    fn the_accept_header_chooses() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        assert_eq!(Format::negotiate(None), Format::Text);
    }
}
