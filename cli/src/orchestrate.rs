//! havctl's orchestration commands: `undrain`, `sla`, `dns show`, `maintenance
//! rollout|resume|abort|status`, and how split-brain and rollout events print in `watch`.
//!
//! A rollout is followed live: one progress bar for the job (nodes done of all) and one line per
//! node step (indicatif draws the bar on a terminal and stays silent otherwise); `-o json` is a
//! stream like `watch -o json`: each job update as one JSON document on its own line, the last
//! one the job as it ended. Waves are numbered from 1 in every form.

use clap::Subcommand;
use hav_proto::v1::{
    ControlRolloutRequest, DnsShowRequest, DrainRequest, RolloutJob, SlaRequest, SplitBrain,
    StartRolloutRequest, control_rollout_request::Action,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{self, CliError, Target};
use crate::output::{Output, print};

/// Orchestration subcommands (flattened into `havctl`).
#[derive(Debug, Subcommand)]
pub enum OrchestrateCommand {
    /// Undo a drain: the node takes its share of the VIPs back.
    Undrain {
        node: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Availability per VIP and per group for a calendar month (UTC); a VIP or group not observed
    /// at all that month has no figures ("no data").
    Sla {
        /// The month, YYYY-MM (e.g. 2026-11); default: the current month.
        #[arg(long, value_name = "YYYY-MM", value_parser = parse_month)]
        month: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The round-robin DNS records of each group.
    Dns {
        #[command(subcommand)]
        command: DnsCommand,
    },
    /// Rolling maintenance over the fleet.
    Maintenance {
        #[command(subcommand)]
        command: MaintenanceCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// The layout (VIPs, which are held) and what the DNS holds; drift is reported.
    Show {
        /// Repair drift found.
        #[arg(long)]
        repair: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Drain, (optionally) run a command on, wait for and undrain each node, one node of each
    /// pair at a time.
    Rollout {
        /// Groups to roll out.
        #[arg(long, required_unless_present = "all")]
        group: Vec<String>,
        /// Every group.
        #[arg(long, conflicts_with = "group")]
        all: bool,
        #[arg(long, default_value_t = 1)]
        max_parallel: u32,
        /// Nodes done alone, one after the other, before the rest.
        #[arg(long, default_value_t = 0)]
        canary: u32,
        /// Command run on each node while drained (program and arguments, no shell).
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        exec: Vec<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Seconds a node may take (command included) to be healthy again.
        #[arg(long, default_value_t = 120)]
        health_timeout: u32,
        /// Seconds a drained node's remaining connections may last (instances with
        /// connection_drain) before they are broken and the node counts as drained (0: 300).
        #[arg(long, default_value_t = 0)]
        connection_deadline: u32,
        /// Start and return (do not follow).
        #[arg(long)]
        detach: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Continue a failed or interrupted job from its first unfinished node.
    Resume {
        job: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Stop a job at its next step (a node it interrupted is undrained).
    Abort {
        job: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// A job's state.
    Status {
        job: u64,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

/// Runs an orchestration subcommand.
pub async fn run(command: OrchestrateCommand, target: &Target) -> Result<(), CliError> {
    let mut fleet = client::connect(target).await?;
    match command {
        OrchestrateCommand::Undrain {
            node,
            reason,
            output,
        } => {
            let response = fleet
                .drain(DrainRequest {
                    node: node.clone(),
                    undrain: true,
                    reason,
                    ..DrainRequest::default()
                })
                .await?
                .into_inner();
            crate::commands::print_drain(&node, true, &response, output)
        }
        OrchestrateCommand::Sla { month, output } => {
            let month = month.unwrap_or_default();
            let report = fleet.sla(SlaRequest { month }).await?.into_inner();
            print(output, || sla_json(&report), || sla_text(&report));
            Ok(())
        }
        OrchestrateCommand::Dns {
            command: DnsCommand::Show { repair, output },
        } => {
            let response = fleet
                .dns_show(DnsShowRequest { repair })
                .await?
                .into_inner();
            if !response.configured {
                return Err(CliError::Refused(
                    "the coordinator has no DNS server configured (--dns-server)".into(),
                ));
            }
            let json = || {
                json!({ "records": response.records.iter().map(|r| json!({
                    "group": r.group, "name": r.name, "vips": r.vips, "held": r.held,
                    "desired": r.desired, "keep_as_is": r.keep_as_is,
                    "published": r.published, "drift": r.drift,
                    "repaired": r.repaired, "error": r.error,
                })).collect::<Vec<_>>() })
            };
            let text = || {
                let mut out = String::new();
                for r in &response.records {
                    out.push_str(&format!("{} ({})\n", r.name, r.group));
                    out.push_str(&format!("  vips:      {}\n", r.vips.join(" ")));
                    out.push_str(&format!("  held:      {}\n", r.held.join(" ")));
                    if r.keep_as_is {
                        out.push_str("  desired:   (no VIP held: records left as they are)\n");
                    } else {
                        out.push_str(&format!("  desired:   {}\n", r.desired.join(" ")));
                    }
                    out.push_str(&format!("  published: {}\n", r.published.join(" ")));
                    let state = match (r.error.is_empty(), r.drift, r.repaired) {
                        (false, _, _) => format!("error: {}", r.error),
                        (true, true, true) => "drift: repaired".into(),
                        (true, true, false) => "DRIFT (use --repair)".into(),
                        (true, false, _) => "in step".into(),
                    };
                    out.push_str(&format!("  state:     {state}\n"));
                }
                out
            };
            print(output, json, text);
            Ok(())
        }
        OrchestrateCommand::Maintenance { command } => maintenance(&mut fleet, command).await,
    }
}

type Fleet = hav_proto::v1::fleet_service_client::FleetServiceClient<tonic::transport::Channel>;

async fn maintenance(fleet: &mut Fleet, command: MaintenanceCommand) -> Result<(), CliError> {
    let control = |job, action: Action| ControlRolloutRequest {
        job,
        action: action as i32,
    };
    match command {
        MaintenanceCommand::Rollout {
            group,
            all,
            max_parallel,
            canary,
            exec,
            reason,
            health_timeout,
            connection_deadline,
            detach,
            output,
        } => {
            let job = fleet
                .start_rollout(StartRolloutRequest {
                    groups: group,
                    all,
                    max_parallel,
                    canary,
                    exec,
                    reason,
                    health_timeout_seconds: health_timeout,
                    connection_deadline_seconds: connection_deadline,
                })
                .await?
                .into_inner();
            if detach {
                print_job(&job, output);
                return Ok(());
            }
            follow(fleet, job.id, output).await
        }
        MaintenanceCommand::Resume { job, output } => {
            fleet.control_rollout(control(job, Action::Resume)).await?;
            follow(fleet, job, output).await
        }
        MaintenanceCommand::Abort { job, output } => {
            let state = fleet
                .control_rollout(control(job, Action::Abort))
                .await?
                .into_inner();
            print(
                output,
                || json!({ "job": job, "abort_requested": true, "was": state.status }),
                || format!("job {job}: abort requested (was {})", state.status),
            );
            Ok(())
        }
        MaintenanceCommand::Status { job, output } => {
            let state = fleet
                .control_rollout(control(job, Action::Status))
                .await?
                .into_inner();
            print_job(&state, output);
            Ok(())
        }
    }
}

/// Follows a job until it stops; fails unless it ended `done`.
async fn follow(fleet: &mut Fleet, id: u64, output: Output) -> Result<(), CliError> {
    let mut updates = fleet
        .watch_rollout(ControlRolloutRequest {
            job: id,
            action: Action::Status as i32,
        })
        .await?
        .into_inner();
    let mut bar: Option<ProgressBar> = None;
    let mut last_steps: std::collections::BTreeMap<String, String> = Default::default();
    let mut last = None;
    while let Some(job) = updates.message().await? {
        match output {
            Output::Json => crate::output::stream_item(&job_json(&job)),
            Output::Table => {
                let bar = bar.get_or_insert_with(|| {
                    let bar = ProgressBar::new(job.nodes.len() as u64);
                    if let Ok(style) =
                        ProgressStyle::with_template("job {msg} [{bar:30}] {pos}/{len} nodes")
                    {
                        bar.set_style(style.progress_chars("=> "));
                    }
                    bar
                });
                for node in &job.nodes {
                    if last_steps.get(&node.node) != Some(&node.step) {
                        last_steps.insert(node.node.clone(), node.step.clone());
                        bar.println(node_line(node));
                    }
                }
                let done = job.nodes.iter().filter(|n| n.step == "done").count();
                bar.set_position(done as u64);
                bar.set_message(format!("{} {}", job.id, job.status));
            }
        }
        last = Some(job);
    }
    if let Some(bar) = bar {
        bar.finish();
    }
    let Some(job) = last else {
        return Err(CliError::Refused(format!("job {id}: no state received")));
    };
    if output == Output::Table {
        println!("job {}: {}{}", job.id, job.status, suffix(&job.error));
    }
    if job.status == "done" {
        Ok(())
    } else {
        Err(CliError::Refused(format!(
            "rollout job {} {}: {} (havctl maintenance resume {} | abort {})",
            job.id, job.status, job.error, job.id, job.id
        )))
    }
}

fn print_job(job: &RolloutJob, output: Output) {
    print(
        output,
        || job_json(job),
        || {
            let mut out = format!("{}\n", job_summary(job));
            for node in &job.nodes {
                out.push_str(&format!("  {}\n", node_line(node)));
            }
            out
        },
    );
}

/// A rollout node's wave as havctl shows it: the coordinator counts from 0, people from 1.
fn wave_number(node: &hav_proto::v1::RolloutNode) -> u32 {
    node.wave.saturating_add(1)
}

fn node_line(node: &hav_proto::v1::RolloutNode) -> String {
    let mut line = format!(
        "wave {:>2}  {:<16} {:<16}{}",
        wave_number(node),
        node.node,
        node.step,
        suffix(&node.detail)
    );
    if node.step == "failed" {
        for out in &node.output {
            line.push_str(&format!("\n      | {out}"));
        }
    }
    line
}

fn suffix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

fn minutes(ms: u64) -> String {
    format!("{:.1}m", ms as f64 / 60_000.0)
}

/// `--month`: YYYY-MM with a month of 01 to 12, checked before anything is sent.
fn parse_month(text: &str) -> Result<String, String> {
    let expected = || format!("`{text}` is not a month: expected YYYY-MM, e.g. 2026-11");
    let (year, month) = text.split_once('-').ok_or_else(expected)?;
    let digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) {
        return Err(expected());
    }
    match month.parse::<u8>() {
        Ok(1..=12) => Ok(text.to_owned()),
        _ => Err(format!(
            "`{text}`: month {month} is not 01 to 12 (expected YYYY-MM)"
        )),
    }
}

fn sla_json(report: &hav_proto::v1::SlaResponse) -> Value {
    let rows = |list: &[hav_proto::v1::Availability]| {
        list.iter().map(availability_json).collect::<Vec<_>>()
    };
    json!({
        "month": report.month,
        "vips": rows(&report.vips),
        "groups": rows(&report.groups),
    })
}

fn sla_text(report: &hav_proto::v1::SlaResponse) -> String {
    let mut out = format!("availability {} (UTC)\n", report.month);
    if report.vips.iter().chain(&report.groups).all(|a| a.no_data) {
        out.push_str(&format!(
            "no data for {}: no VIP was observed that month\n",
            report.month
        ));
        return out;
    }
    out.push_str(&format!(
        "{:<8} {:<28} {:>10} {:>12} {:>12} {:>12} {:>9}\n",
        "KIND", "NAME", "AVAIL %", "NO HOLDER", "SPLIT", "UNOBSERVED", "FAILOVERS"
    ));
    for (kind, list) in [("vip", &report.vips), ("group", &report.groups)] {
        for a in list {
            if !a.no_data {
                out.push_str(&format!(
                    "{:<8} {:<28} {:>10.4} {:>12} {:>12} {:>12} {:>9}\n",
                    kind,
                    a.name,
                    a.availability_percent,
                    minutes(a.no_holder_ms),
                    minutes(a.split_brain_ms),
                    minutes(a.unobserved_ms),
                    a.failovers
                ));
            } else {
                out.push_str(&format!("{kind:<8} {:<28} {:>10}\n", a.name, "no data"));
            }
        }
    }
    out
}

/// A VIP's or group's figures; `availability_percent` is null when nothing of the month was
/// observed (`no_data`).
pub(crate) fn availability_json(a: &hav_proto::v1::Availability) -> Value {
    let availability = (!a.no_data).then_some(a.availability_percent);
    json!({
        "name": a.name, "availability_percent": availability, "no_data": a.no_data,
        "period_ms": a.period_ms, "unobserved_ms": a.unobserved_ms,
        "one_holder_ms": a.one_holder_ms, "no_holder_ms": a.no_holder_ms,
        "split_brain_ms": a.split_brain_ms, "failovers": a.failovers,
    })
}

/// A rollout job as JSON.
pub fn job_json(job: &RolloutJob) -> Value {
    json!({
        "id": job.id, "status": job.status, "who": job.who, "reason": job.reason,
        "waves": job.waves, "error": job.error, "updated_unix_ms": job.updated_unix_ms,
        "nodes": job.nodes.iter().map(|n| json!({
            "node": n.node, "wave": wave_number(n), "step": n.step, "detail": n.detail,
            "output": n.output,
        })).collect::<Vec<_>>(),
    })
}

/// A rollout job in one line.
pub fn job_summary(job: &RolloutJob) -> String {
    let done = job.nodes.iter().filter(|n| n.step == "done").count();
    format!(
        "rollout job {} {} ({done}/{} nodes, {} waves){}",
        job.id,
        job.status,
        job.nodes.len(),
        job.waves,
        suffix(&job.error)
    )
}

/// A split-brain event as JSON.
pub fn split_brain_json(split: &SplitBrain) -> Value {
    json!({ "split_brain": {
        "vip": split.vip, "vrid": split.vrid, "masters": split.masters,
        "resolved": split.resolved, "action": split.action,
    }})
}

/// A split-brain event in one line.
pub fn split_brain_line(split: &SplitBrain) -> String {
    if split.resolved {
        format!("split brain over: {} has one master again", split.vip)
    } else {
        format!(
            "SPLIT BRAIN: {} (VRID {}) mastered by {}{}",
            split.vip,
            split.vrid,
            split.masters.join(" and "),
            suffix(&split.action)
        )
    }
}
