//! How both daemons log: the `--log-level` and `--log-format` flags and the one `tracing`
//! subscriber they set up (feature `logging`).
//!
//! Guarantees: text carries ANSI colour only when stderr is a terminal (and `NO_COLOR` is unset);
//! `json` is one object per line; under systemd, when `JOURNAL_STREAM` names stderr's device and
//! inode (as systemd documents for telling its journal stream from a redirection), events go to
//! journald natively ([`journald`]) with their syslog priority and fields, so
//! `journalctl -p err` finds the errors. A journal that cannot be reached falls back to text on
//! stderr, with a warning. `--log-level` replaces `RUST_LOG` when both are given: it takes the
//! same filter syntax, so nothing is lost by not combining them. Whatever the format, the
//! system calls that write the log run on an output thread of their own ([`output`]): logging
//! never blocks the thread that logs, and what a stalled output costs is counted and reported.

pub mod journald;
pub mod output;

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// What a daemon's command line says about logging (flattened into its clap arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogOptions {
    /// What to log: error, warn, info, debug or trace, or a filter such as
    /// `info,hav_agent::net=debug` (RUST_LOG syntax). Replaces RUST_LOG; without either, info.
    #[arg(long, value_name = "LEVEL|FILTER")]
    pub log_level: Option<LogFilter>,
    /// text, json (one object per line) or journald (native protocol: priorities and fields).
    /// Default: journald when stderr is the systemd journal (JOURNAL_STREAM), else text.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Where and how events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines on stderr (no timestamp when stderr is the journal, which adds its
    /// own).
    Text,
    /// One JSON object per line on stderr: `timestamp`, `level`, `fields`, `target`, spans.
    Json,
    /// journald's native protocol on `/run/systemd/journal/socket`.
    Journald,
}

/// A validated `tracing` filter: a level or a full `RUST_LOG`-style directive list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl FromStr for LogFilter {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
        let text = text.trim();
        if text.is_empty() {
            return Err("empty: give error, warn, info, debug, trace or a filter".into());
        }
        // A lone word is a target to RUST_LOG (`verbose` would enable one nobody has and silence
        // the rest); here it must be a level. A target takes `target=level`.
        if !text.contains(['=', ',', ':', '['])
            && !LEVELS.iter().any(|level| text.eq_ignore_ascii_case(level))
        {
            return Err(format!(
                "{text:?} is not a level (error, warn, info, debug, trace, off); \
                 a target needs one too, e.g. `{text}=debug`"
            ));
        }
        parse_filter(text).map_err(|error| {
            format!("{text:?} is neither a level (error, warn, info, debug, trace) nor a filter: {error}")
        })?;
        Ok(LogFilter(text.to_owned()))
    }
}

impl fmt::Display for LogFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn parse_filter(text: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::builder().parse(text)
}

/// A layer over the registry: the log output, or what a binary adds next to it (OpenTelemetry,
/// with its own filter).
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// The logging in force, from [`init`]. Dropping it flushes the output (bounded), so a daemon
/// keeps it until it exits.
#[derive(Debug)]
pub struct Logging {
    format: LogFormat,
    output: Option<output::Output>,
}

/// How long a flush waits for a slow output before the process goes on without it.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Logging {
    /// The format in force (journald may have fallen back to text). A daemon reports the error
    /// it exits with as `program: error` on stderr in text, as before logging was set up, and
    /// as an ERROR event otherwise, so that journal and JSON readers see it too.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Waits (at most a couple of seconds) until every event logged so far is written: before
    /// a line goes to stderr directly, and before the process exits.
    pub fn flush(&self) {
        if let Some(output) = &self.output {
            output.flush(FLUSH_TIMEOUT);
        }
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber: the log output chosen by `options` (filtered by
/// `--log-level`, else `RUST_LOG`, else `info`) and the `extra` layers. `program` names the
/// journal entries (`SYSLOG_IDENTIFIER`). Problems (a bad `RUST_LOG`, an unreachable journal)
/// are logged as warnings once the subscriber runs; logging never stops a daemon.
pub fn init(options: &LogOptions, program: &str, extra: Vec<BoxedLayer>) -> Logging {
    let mut warnings = Vec::new();
    let filter = match (&options.log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => parse_filter(&level.0).unwrap_or_else(|_| EnvFilter::new("info")),
        (None, Ok(env)) if !env.trim().is_empty() => parse_filter(&env).unwrap_or_else(|error| {
            warnings.push(format!(
                "RUST_LOG={env:?} is not a filter ({error}); logging at info"
            ));
            EnvFilter::new("info")
        }),
        _ => EnvFilter::new("info"),
    };
    let stderr_is_journal = stderr_is_journal_stream();
    let requested = options.log_format.unwrap_or(if stderr_is_journal {
        LogFormat::Journald
    } else {
        LogFormat::Text
    });
    let journal = match requested {
        LogFormat::Journald => match journald::JournaldLayer::connect(program) {
            Ok(layer) => Some(layer),
            Err(error) => {
                warnings.push(format!(
                    "journald unreachable at {} ({error}); logging text to stderr",
                    journald::SOCKET_PATH
                ));
                None
            }
        },
        LogFormat::Text | LogFormat::Json => None,
    };
    let (format, layer, output) = match journal {
        Some(layer) => {
            let output = layer.output().clone();
            (LogFormat::Journald, layer.boxed(), Some(output))
        }
        // Text and JSON lines go through one output thread to stderr.
        None => {
            let output = output::Output::start(output::Stderr, output::QUEUE_ENTRIES)
                .inspect_err(|error| {
                    warnings.push(format!(
                        "no thread for the log output ({error}); writing it from each thread"
                    ));
                })
                .ok();
            let writer = match &output {
                Some(output) => BoxMakeWriter::new(output::Writer(output.clone())),
                None => BoxMakeWriter::new(std::io::stderr),
            };
            match requested {
                LogFormat::Json => {
                    let layer = tracing_subscriber::fmt::layer().json().with_ansi(false);
                    (LogFormat::Json, layer.with_writer(writer).boxed(), output)
                }
                _ => (
                    LogFormat::Text,
                    text_layer(stderr_is_journal, writer),
                    output,
                ),
            }
        }
    };
    let mut layers = vec![layer.with_filter(filter).boxed()];
    layers.extend(extra);
    if let Err(error) = tracing_subscriber::registry().with(layers).try_init() {
        eprintln!("{program}: logging not set up: {error}");
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Logging { format, output }
}

/// Text lines, written by `writer`.
fn text_layer(stderr_is_journal: bool, writer: BoxMakeWriter) -> BoxedLayer {
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(colour_allowed())
        .with_writer(writer);
    // The journal stamps each line itself.
    if stderr_is_journal {
        layer.without_time().boxed()
    } else {
        layer.boxed()
    }
}

/// Colour only for a person at a terminal who did not ask for none (<https://no-color.org>).
fn colour_allowed() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stderr is the stream systemd connected to the journal: `JOURNAL_STREAM` holds its
/// `device:inode`. A variable inherited through a redirection names another file and is ignored.
pub fn stderr_is_journal_stream() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr()) else {
        return false;
    };
    #[allow(clippy::useless_conversion)] // dev_t and ino_t are not u64 on every target
    let (device, inode) = (u64::from(stat.st_dev), u64::from(stat.st_ino));
    value
        .to_str()
        .is_some_and(|value| journal_stream_is(value, device, inode))
}

/// `JOURNAL_STREAM`'s value (`device:inode`, both decimal) names this device and inode.
fn journal_stream_is(value: &str, device: u64, inode: u64) -> bool {
    value.split_once(':').is_some_and(|(dev, ino)| {
        dev.parse::<u64>() == Ok(device) && ino.parse::<u64>() == Ok(inode)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_or_a_filter_is_accepted_and_nonsense_is_not() {
        for good in [
            "error",
            "warn",
            "info",
            "debug",
            "trace",
            "WARN",
            "info,hav_agent::net=debug",
            "hav_coordinator=trace",
            "off",
        ] {
            assert!(good.parse::<LogFilter>().is_ok(), "{good}");
        }
        for bad in ["", "  ", "loud", "hav_agent", "info,hav_agent=shouty"] {
            assert!(bad.parse::<LogFilter>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_is("8:1234", 8, 1234));
        assert!(!journal_stream_is("8:1235", 8, 1234));
        assert!(!journal_stream_is("9:1234", 8, 1234));
        assert!(!journal_stream_is("8-1234", 8, 1234));
        assert!(!journal_stream_is("", 8, 1234));
        assert!(!journal_stream_is("8:", 8, 1234));
    }
}
