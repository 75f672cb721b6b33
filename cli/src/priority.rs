//! `havctl priority set|clear|list`: priority intents kept by the coordinator and applied to the
//! node now and whenever it reconnects, until cleared or expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use hav_proto::v1::{
    ClearPriorityRequest, ListPrioritiesRequest, PriorityIntent, PriorityResponse,
    SetPriorityRequest,
};
use serde_json::{Value, json};

use crate::client::{self, CliError, Target};
use crate::output::{Output, print, row, table};

#[derive(Debug, Subcommand)]
pub enum PriorityCommand {
    /// Run an instance (every instance of the node without --instance) at PRIORITY until
    /// cleared or for --ttl; the coordinator keeps it and gives it to the node again whenever it
    /// reconnects or restarts.
    Set {
        node: String,
        /// 1..254.
        #[arg(value_parser = clap::value_parser!(u32).range(1..=254))]
        priority: u32,
        #[arg(long)]
        instance: Option<String>,
        /// Lapse after this long (e.g. 90s, 30m, 2h); default: until cleared.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u32>,
        /// Why (kept with the intent and in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove a node's intent for an instance (all of the node's intents without --instance):
    /// the instances run at their configured priority again.
    Clear {
        node: String,
        #[arg(long)]
        instance: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The intents in force.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

/// Seconds from `90`, `90s`, `30m` or `2h`.
fn parse_ttl(text: &str) -> Result<u32, String> {
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u32 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 30m or 2h"))?;
    let seconds = match unit {
        "s" => Some(number),
        "m" => number.checked_mul(60),
        "h" => number.checked_mul(3600),
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    match seconds {
        Some(0) => Err("a TTL of 0: leave --ttl out for an intent until cleared".into()),
        Some(seconds) => Ok(seconds),
        None => Err(format!("`{text}` is too long")),
    }
}

pub async fn run(command: PriorityCommand, target: &Target) -> Result<(), CliError> {
    let mut fleet = client::connect(target).await?;
    match command {
        PriorityCommand::Set {
            node,
            priority,
            instance,
            ttl,
            reason,
            output,
        } => {
            let response = fleet
                .set_priority(SetPriorityRequest {
                    node,
                    instance: instance.unwrap_or_default(),
                    priority,
                    ttl_seconds: ttl.unwrap_or(0),
                    reason,
                })
                .await?
                .into_inner();
            print_change("set", &response, output)
        }
        PriorityCommand::Clear {
            node,
            instance,
            reason,
            output,
        } => {
            let response = fleet
                .clear_priority(ClearPriorityRequest {
                    node,
                    instance: instance.unwrap_or_default(),
                    reason,
                })
                .await?
                .into_inner();
            print_change("cleared", &response, output)
        }
        PriorityCommand::List { output } => {
            let intents = fleet
                .list_priorities(ListPrioritiesRequest {})
                .await?
                .into_inner()
                .intents;
            let now = now_ms();
            print(
                output,
                || json!({ "intents": intents.iter().map(intent_json).collect::<Vec<_>>() }),
                || intents_table(&intents, now),
            );
            Ok(())
        }
    }
}

fn print_change(action: &str, response: &PriorityResponse, output: Output) -> Result<(), CliError> {
    let now = now_ms();
    print(
        output,
        || {
            json!({
                "action": action,
                "intents": response.intents.iter().map(intent_json).collect::<Vec<_>>(),
                "applied": response.applied,
                "error": response.error,
            })
        },
        || {
            let mut out = String::new();
            for intent in &response.intents {
                out.push_str(&format!(
                    "{} {}: priority {} {action} ({})\n",
                    intent.node,
                    instance_name(intent),
                    intent.priority,
                    lapse(intent, now)
                ));
            }
            if !response.applied && response.error.is_empty() {
                out.push_str("  the node is not connected: it gets this when it connects\n");
            }
            out
        },
    );
    if response.error.is_empty() {
        Ok(())
    } else {
        Err(CliError::Refused(format!(
            "the node refused the priority: {}",
            response.error
        )))
    }
}

fn instance_name(intent: &PriorityIntent) -> &str {
    match intent.instance.as_str() {
        "*" => "(every instance)",
        name => name,
    }
}

fn lapse(intent: &PriorityIntent, now: u64) -> String {
    match intent.expires_unix_ms {
        0 => "until cleared".into(),
        at => format!(
            "{} left",
            humantime_secs(Duration::from_millis(at.saturating_sub(now)))
        ),
    }
}

/// `1h02m03s`-style, to the second.
fn humantime_secs(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

fn intents_table(intents: &[PriorityIntent], now: u64) -> String {
    if intents.is_empty() {
        return "no priority intents\n".into();
    }
    let mut rows = vec![row(["NODE", "INSTANCE", "PRIO", "LAPSES", "BY", "REASON"])];
    for intent in intents {
        rows.push(vec![
            intent.node.clone(),
            instance_name(intent).to_owned(),
            intent.priority.to_string(),
            lapse(intent, now),
            intent.who.clone(),
            intent.reason.clone(),
        ]);
    }
    table(&rows)
}

fn intent_json(intent: &PriorityIntent) -> Value {
    json!({
        "node": intent.node,
        "instance": intent.instance,
        "priority": intent.priority,
        "expires_unix_ms": (intent.expires_unix_ms != 0).then_some(intent.expires_unix_ms),
        "reason": intent.reason,
        "who": intent.who,
        "since_unix_ms": intent.since_unix_ms,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5d").is_err());
        assert!(parse_ttl("m").is_err());
        assert!(parse_ttl("99999999h").is_err());
    }

    #[test]
    fn the_table_says_what_lapses_when() {
        let intent = PriorityIntent {
            node: "p1a".into(),
            instance: "*".into(),
            priority: 50,
            expires_unix_ms: 10_000 + 3_723_000,
            reason: "kernel update".into(),
            who: "alice".into(),
            since_unix_ms: 0,
        };
        let text = intents_table(&[intent], 10_000);
        assert!(text.contains("(every instance)"), "{text}");
        assert!(text.contains("1h02m03s left"), "{text}");
        assert!(text.contains("kernel update"), "{text}");
        assert_eq!(intents_table(&[], 0), "no priority intents\n");
    }
}
