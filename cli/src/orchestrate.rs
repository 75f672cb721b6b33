//! havctl's orchestration commands (issue 5): `undrain`, `sla`, `dns show`, `maintenance
//! rollout|resume|abort|status`, and how split-brain and rollout events print in `watch`.
//!
//! A rollout is followed live: one progress bar for the job (nodes done of all) and one line per
//! node step (indicatif draws the bar on a terminal and stays silent otherwise); `-o json` prints
//! each job update as one JSON line instead, for scripts.

use clap::Subcommand;
use hav_proto::v1::{
    ControlRolloutRequest, DnsShowRequest, DrainRequest, RolloutJob, SlaRequest, SplitBrain,
    StartRolloutRequest, control_rollout_request::Action,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{self, CliError, Target};
use crate::commands::Output;

/// Orchestration subcommands (flattened into `havctl`).
#[derive(Debug, Subcommand)]
pub enum OrchestrateCommand {
    /// Undo a drain: the node takes its share of the VIPs back.
    Undrain {
        node: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Availability per VIP and per group for a calendar month (UTC).
    Sla {
        /// YYYY-MM; default: the current month.
        #[arg(long, default_value = "")]
        month: String,
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
    Abort { job: u64 },
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
        OrchestrateCommand::Undrain { node, reason } => {
            let response = fleet
                .drain(DrainRequest {
                    node: node.clone(),
                    undrain: true,
                    reason,
                    ttl_seconds: 0,
                })
                .await?
                .into_inner();
            if response.ok {
                println!("{node}: undrained");
                Ok(())
            } else {
                Err(CliError::Invalid(format!("{node}: {}", response.error)))
            }
        }
        OrchestrateCommand::Sla { month, output } => {
            let report = fleet.sla(SlaRequest { month }).await?.into_inner();
            match output {
                Output::Json => {
                    let rows = |list: &[hav_proto::v1::Availability]| {
                        list.iter().map(availability_json).collect::<Vec<_>>()
                    };
                    let value = json!({
                        "month": report.month,
                        "vips": rows(&report.vips),
                        "groups": rows(&report.groups),
                    });
                    println!("{value}");
                }
                Output::Table => {
                    println!("availability {} (UTC)", report.month);
                    println!(
                        "{:<8} {:<28} {:>10} {:>12} {:>12} {:>12} {:>9}",
                        "KIND", "NAME", "AVAIL %", "NO HOLDER", "SPLIT", "UNOBSERVED", "FAILOVERS"
                    );
                    for (kind, list) in [("vip", &report.vips), ("group", &report.groups)] {
                        for a in list {
                            println!(
                                "{:<8} {:<28} {:>10.4} {:>12} {:>12} {:>12} {:>9}",
                                kind,
                                a.name,
                                a.availability_percent,
                                minutes(a.no_holder_ms),
                                minutes(a.split_brain_ms),
                                minutes(a.unobserved_ms),
                                a.failovers
                            );
                        }
                    }
                }
            }
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
                return Err(CliError::Invalid(
                    "the coordinator has no DNS server configured (--dns-server)".into(),
                ));
            }
            for r in &response.records {
                match output {
                    Output::Json => println!(
                        "{}",
                        json!({
                            "group": r.group, "name": r.name, "vips": r.vips, "held": r.held,
                            "desired": r.desired, "keep_as_is": r.keep_as_is,
                            "published": r.published, "drift": r.drift,
                            "repaired": r.repaired, "error": r.error,
                        })
                    ),
                    Output::Table => {
                        println!("{} ({})", r.name, r.group);
                        println!("  vips:      {}", r.vips.join(" "));
                        println!("  held:      {}", r.held.join(" "));
                        if r.keep_as_is {
                            println!("  desired:   (no VIP held: records left as they are)");
                        } else {
                            println!("  desired:   {}", r.desired.join(" "));
                        }
                        println!("  published: {}", r.published.join(" "));
                        let state = match (r.error.is_empty(), r.drift, r.repaired) {
                            (false, _, _) => format!("error: {}", r.error),
                            (true, true, true) => "drift: repaired".into(),
                            (true, true, false) => "DRIFT (use --repair)".into(),
                            (true, false, _) => "in step".into(),
                        };
                        println!("  state:     {state}");
                    }
                }
            }
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
        MaintenanceCommand::Abort { job } => {
            let state = fleet
                .control_rollout(control(job, Action::Abort))
                .await?
                .into_inner();
            println!("job {job}: abort requested (was {})", state.status);
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
            Output::Json => println!("{}", job_json(&job)),
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
        return Err(CliError::Invalid(format!("job {id}: no state received")));
    };
    if output == Output::Table {
        println!("job {}: {}{}", job.id, job.status, suffix(&job.error));
    }
    if job.status == "done" {
        Ok(())
    } else {
        Err(CliError::Invalid(format!(
            "rollout job {} {}: {} (havctl maintenance resume {} | abort {})",
            job.id, job.status, job.error, job.id, job.id
        )))
    }
}

fn print_job(job: &RolloutJob, output: Output) {
    match output {
        Output::Json => println!("{}", job_json(job)),
        Output::Table => {
            println!("{}", job_summary(job));
            for node in &job.nodes {
                println!("  {}", node_line(node));
            }
        }
    }
}

fn node_line(node: &hav_proto::v1::RolloutNode) -> String {
    let mut line = format!(
        "wave {:>2}  {:<16} {:<16}{}",
        node.wave + 1,
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

fn availability_json(a: &hav_proto::v1::Availability) -> Value {
    json!({
        "name": a.name, "availability_percent": a.availability_percent,
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
            "node": n.node, "wave": n.wave, "step": n.step, "detail": n.detail,
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
