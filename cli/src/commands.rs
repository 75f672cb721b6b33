//! The command line: `havctl status|watch|push-config|validate|history|rollback|drain|priority|certs`.

use crate::local;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use hav_proto::identity::Role;
use hav_proto::v1::{
    ApplyOutcome, DrainRequest, DrainResponse, FleetEvent, HistoryRequest, ListNodesRequest,
    NodeChange, NodeConfigEntry, NodePresence, NodeStatus, PushConfigRequest, PushConfigResponse,
    RollbackRequest, ValidateRequest, VrrpState, WatchEventsRequest, event, fleet_event,
};
use serde_json::{Value, json};

use crate::certs::{self, IssueRequest, Kind};
use crate::client::{self, CliError};
use crate::contexts::{self, Context, ContextFile};
pub use crate::output::Output;
use crate::output::{print, row, table, when};

/// The operator's tool for a hav fleet.
#[derive(Debug, Parser)]
#[command(
    name = "havctl",
    version,
    after_help = "Contexts are described in havctl.toml(5), fleet files in hav-fleet.toml(5)."
)]
pub struct Cli {
    /// The coordinator: host:port or https://host:port, or several separated by commas
    /// (coordinators sharing a store, tried in order) [default: the context's, else
    /// 127.0.0.1:7400].
    #[arg(long, global = true, env = "HAVCTL_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Our operator certificate (PEM) [default: the context's].
    #[arg(long, global = true, env = "HAVCTL_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key (PEM) [default: the context's].
    #[arg(long, global = true, env = "HAVCTL_KEY")]
    pub key: Option<PathBuf>,
    /// The fleet CA certificate (PEM) [default: the context's].
    #[arg(long, global = true, env = "HAVCTL_CA")]
    pub ca: Option<PathBuf>,
    /// The context to use instead of the current one (see `havctl config`).
    #[arg(long, global = true, env = "HAVCTL_CONTEXT")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Nodes, their connection and VRRP state.
    Status {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Follow fleet events (transitions, tracker changes, connects) until interrupted.
    Watch {
        /// Only these nodes.
        #[arg(long)]
        node: Vec<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Push node configs: each FILE is `<node>.toml` (or name the node with --node), or a whole
    /// fleet file with --fleet (its pairs are changed one node at a time).
    PushConfig {
        #[arg(required_unless_present = "fleet", conflicts_with = "fleet")]
        files: Vec<PathBuf>,
        /// A fleet file: [[group]] tables of nodes and VIPs, expanded by the coordinator into
        /// node configs (see deploy/fleet/fleet.toml).
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// The node, when pushing one file not named after it.
        #[arg(long)]
        node: Option<String>,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        comment: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check node configs (or a fleet file) without storing them.
    Validate {
        #[arg(required_unless_present = "fleet", conflicts_with = "fleet")]
        files: Vec<PathBuf>,
        #[arg(long)]
        fleet: Option<PathBuf>,
        #[arg(long)]
        node: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Config versions and the audit log.
    History {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Make an older config version current again (as a new version).
    Rollback {
        version: u64,
        #[arg(long, default_value = "")]
        comment: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Drain a node make-before-break (its VIPs move to healthy peers first) or, with --undo,
    /// undrain it.
    Drain {
        node: String,
        #[arg(long)]
        undo: bool,
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        /// Seconds the peers' takeover overrides last (0: the coordinator's default).
        #[arg(long, default_value_t = 0)]
        ttl: u32,
        /// Once the VIPs moved, seconds to wait for the connections the node still serves
        /// (instances with connection_drain) before breaking them (0: the coordinator's
        /// default, 300).
        #[arg(long, default_value_t = 0)]
        deadline: u32,
        /// Break the node's remaining connections at once instead of waiting for them.
        #[arg(long, conflicts_with = "deadline")]
        force: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Priority intents: an instance run at another priority until cleared or for a while,
    /// kept by the coordinator and given to the node again whenever it reconnects.
    Priority {
        #[command(subcommand)]
        command: crate::priority::PriorityCommand,
    },
    #[command(flatten)]
    Orchestrate(crate::orchestrate::OrchestrateCommand),
    /// A live web page for the fleet on 127.0.0.1, acting with this operator's certificate.
    Dashboard(crate::dashboard::DashboardArgs),
    /// Contexts: which coordinator havctl dials and with which certificate
    /// ($HAV_CONFIG, else ~/.config/hav/havctl.toml).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The fleet certificate authority.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Convert keepalived.conf files into hav node configs; everything not converted is listed
    /// with file:line:column. Give both files of a pair to fill in the unicast peers' priorities
    /// and get a fleet file for the pair.
    ImportKeepalived {
        /// Write DIR/<node name>.toml (and DIR/fleet.toml for a pair) instead of printing them;
        /// DIR is created first.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// keepalived.conf files, one per node.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// json: the configs and every finding as one document on stdout (nothing on stderr).
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print a completion script for SHELL (e.g. `havctl completions bash > /etc/bash_completion.d/havctl`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (havctl.1 and one per subcommand) into DIR.
    Man {
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Add or change a context; the first one becomes the current one. Paths are stored
    /// absolute.
    SetContext {
        name: String,
        /// Make it the current context too.
        #[arg(long = "use")]
        make_current: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Make NAME the current context.
    UseContext {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Print the current context's name.
    CurrentContext {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// List the contexts (the current one marked `*`).
    GetContexts {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove a context.
    DeleteContext {
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create the fleet CA (ca.pem, ca.key) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "hav fleet CA")]
        name: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Issue a certificate signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, value_enum)]
        kind: Kind,
        #[arg(long)]
        name: String,
        /// Operator role (operators only; default viewer).
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// Extra DNS name or IP address (repeatable).
        #[arg(long)]
        san: Vec<String>,
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Where to write `<kind>-<name>.pem/.key` (default: DIR).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}`: expected viewer or operator"))
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let given = contexts::Given {
        context: cli.context,
        coordinator: cli.coordinator,
        ca: cli.ca,
        cert: cli.cert,
        key: cli.key,
    };
    let command = match cli.command {
        Command::Config { command } => return run_config(command, given),
        Command::Certs { command } => return run_certs(command),
        Command::ImportKeepalived {
            out_dir,
            files,
            output,
        } => {
            return local::import_keepalived(out_dir, &files, output);
        }
        Command::Completions { shell } => {
            local::completions(shell);
            return Ok(());
        }
        Command::Man { dir } => return local::man_pages(&dir),
        command => command,
    };
    let file = match contexts::path() {
        Some(path) => ContextFile::load(&path)?,
        None => ContextFile::default(),
    };
    let target = contexts::resolve(given, &file)?;
    match command {
        // Carried out above, without a coordinator.
        Command::Config { .. }
        | Command::Certs { .. }
        | Command::ImportKeepalived { .. }
        | Command::Completions { .. }
        | Command::Man { .. } => Ok(()),
        Command::Status { output } => {
            let mut fleet = client::connect(&target).await?;
            let response = fleet.list_nodes(ListNodesRequest {}).await?.into_inner();
            let nodes = response.nodes;
            print(
                output,
                || Value::Array(nodes.iter().map(node_json).collect()),
                || {
                    let header = response
                        .coordinator
                        .as_ref()
                        .and_then(coordinator_line)
                        .map(|line| format!("{line}\n"))
                        .unwrap_or_default();
                    format!("{header}{}", status_table(&nodes))
                },
            );
            Ok(())
        }
        Command::Watch { node, output } => {
            let mut fleet = client::connect(&target).await?;
            let mut events = fleet
                .watch_events(WatchEventsRequest { nodes: node })
                .await?
                .into_inner();
            let mut lines = WatchLines::default();
            while let Some(event) = events.message().await? {
                match output {
                    Output::Json => crate::output::stream_item(&event_json(&event)),
                    Output::Table => {
                        if let Some(line) = lines.line(&event) {
                            println!("{line}");
                        }
                    }
                }
            }
            Ok(())
        }
        Command::PushConfig {
            files,
            fleet: fleet_file,
            node,
            dry_run,
            comment,
            output,
        } => {
            let (configs, (fleet_name, fleet_text)) = match fleet_file {
                Some(path) => (Vec::new(), read_fleet(&path)?),
                None => (read_configs(&files, node)?, Default::default()),
            };
            let mut fleet = client::connect(&target).await?;
            let response = fleet
                .push_config(PushConfigRequest {
                    configs,
                    dry_run,
                    comment,
                    groups: Vec::new(),
                    fleet: fleet_text,
                    fleet_name,
                })
                .await?
                .into_inner();
            print(output, || push_json(&response), || push_text(&response));
            push_result(&response)
        }
        Command::Validate {
            files,
            fleet: fleet_file,
            node,
            output,
        } => {
            let (configs, (fleet_name, fleet_text)) = match fleet_file {
                Some(path) => (Vec::new(), read_fleet(&path)?),
                None => (read_configs(&files, node)?, Default::default()),
            };
            let mut fleet = client::connect(&target).await?;
            let response = fleet
                .validate(ValidateRequest {
                    configs,
                    fleet: fleet_text,
                    fleet_name,
                })
                .await?
                .into_inner();
            print(
                output,
                || {
                    json!({
                        "ok": response.ok,
                        "errors": response.errors.iter().map(|e| json!({
                            "node": e.node, "message": e.message,
                        })).collect::<Vec<_>>(),
                    })
                },
                || if response.ok { "ok" } else { "" }.to_owned(),
            );
            if response.ok {
                Ok(())
            } else {
                let errors: Vec<String> = response
                    .errors
                    .iter()
                    .map(|e| {
                        if e.node.is_empty() || e.message.contains(&e.node) {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.node, e.message)
                        }
                    })
                    .collect();
                Err(CliError::Invalid(errors.join("\n")))
            }
        }
        Command::History { limit, output } => {
            let mut fleet = client::connect(&target).await?;
            let history = fleet.history(HistoryRequest { limit }).await?.into_inner();
            let json = || {
                json!({
                    "versions": history.versions.iter().map(|v| json!({
                        "version": v.version, "unix_ms": v.unix_ms, "author": v.author,
                        "comment": v.comment, "nodes_changed": v.nodes_changed,
                        "rollback_of": v.rollback_of,
                    })).collect::<Vec<_>>(),
                    "audit": history.audit.iter().map(|a| json!({
                        "unix_ms": a.unix_ms, "who": a.who, "action": a.action,
                        "detail": a.detail, "allowed": a.allowed,
                    })).collect::<Vec<_>>(),
                })
            };
            let text = || {
                let mut rows = vec![row(["VERSION", "WHEN", "AUTHOR", "NODES", "COMMENT"])];
                for v in &history.versions {
                    rows.push(vec![
                        v.version.to_string(),
                        when(v.unix_ms),
                        v.author.clone(),
                        v.nodes_changed.join(","),
                        v.comment.clone(),
                    ]);
                }
                let versions = table(&rows);
                let mut rows = vec![row(["WHEN", "WHO", "ACTION", "ALLOWED", "DETAIL"])];
                for a in &history.audit {
                    rows.push(vec![
                        when(a.unix_ms),
                        a.who.clone(),
                        a.action.clone(),
                        a.allowed.to_string(),
                        a.detail.clone(),
                    ]);
                }
                format!("{versions}\n{}", table(&rows))
            };
            print(output, json, text);
            Ok(())
        }
        Command::Rollback {
            version,
            comment,
            output,
        } => {
            let mut fleet = client::connect(&target).await?;
            let response = fleet
                .rollback(RollbackRequest { version, comment })
                .await?
                .into_inner();
            print(output, || push_json(&response), || push_text(&response));
            push_result(&response)
        }
        Command::Orchestrate(command) => crate::orchestrate::run(command, &target).await,
        Command::Priority { command } => crate::priority::run(command, &target).await,
        Command::Dashboard(args) => crate::dashboard::run(args, &target).await,
        Command::Drain {
            node,
            undo,
            reason,
            ttl,
            deadline,
            force,
            output,
        } => {
            let mut fleet = client::connect(&target).await?;
            let response = fleet
                .drain(DrainRequest {
                    node: node.clone(),
                    undrain: undo,
                    reason,
                    ttl_seconds: ttl,
                    connection_deadline_seconds: deadline,
                    force,
                })
                .await?
                .into_inner();
            print_drain(&node, undo, &response, output)
        }
    }
}

/// `havctl config …`: the context file. `set-context` takes the global `--coordinator`,
/// `--ca`, `--cert` and `--key`.
fn run_config(command: ConfigCommand, given: contexts::Given) -> Result<(), CliError> {
    let path = contexts::path().ok_or_else(|| {
        CliError::Usage("no $HAV_CONFIG and no $HOME: nowhere to keep contexts".into())
    })?;
    let mut file = ContextFile::load(&path)?;
    match command {
        ConfigCommand::SetContext {
            name,
            make_current,
            output,
        } => {
            if let Some(address) = &given.coordinator {
                contexts::check_address(address)?;
            }
            let absolute = |path: Option<PathBuf>| path.map(contexts::absolute).transpose();
            file.set(
                &name,
                Context {
                    coordinator: given.coordinator,
                    ca: absolute(given.ca)?,
                    cert: absolute(given.cert)?,
                    key: absolute(given.key)?,
                },
            );
            if make_current {
                file.use_context(&name)?;
            }
            file.save(&path)?;
            let current = file.current_context.as_deref() == Some(name.as_str());
            print(
                output,
                || json!({ "context": name, "file": path, "current": current }),
                || {
                    format!(
                        "context {name} saved in {}{}",
                        path.display(),
                        if current { " (current)" } else { "" }
                    )
                },
            );
        }
        ConfigCommand::UseContext { name, output } => {
            file.use_context(&name)?;
            file.save(&path)?;
            print(
                output,
                || json!({ "current_context": name }),
                || format!("current context: {name}"),
            );
        }
        ConfigCommand::CurrentContext { output } => match &file.current_context {
            Some(name) => print(
                output,
                || json!({ "current_context": name }),
                || name.clone(),
            ),
            None => {
                return Err(CliError::Usage(
                    "no current context; `havctl config set-context NAME --coordinator … \
                     --ca … --cert … --key …` adds one"
                        .into(),
                ));
            }
        },
        ConfigCommand::GetContexts { output } => {
            let is_current = |name: &str| file.current_context.as_deref() == Some(name);
            let json = || {
                let contexts: Vec<Value> = (file.contexts.iter())
                    .map(|(name, context)| {
                        json!({
                            "name": name,
                            "current": is_current(name),
                            "coordinator": context.coordinator,
                            "ca": context.ca,
                            "cert": context.cert,
                            "key": context.key,
                        })
                    })
                    .collect();
                json!({ "contexts": contexts })
            };
            let text = || {
                let mut rows = vec![row(["", "NAME", "COORDINATOR", "CERT"])];
                for (name, context) in &file.contexts {
                    rows.push(vec![
                        if is_current(name) { "*" } else { "" }.to_owned(),
                        name.clone(),
                        (context.coordinator.as_deref())
                            .unwrap_or(contexts::DEFAULT_COORDINATOR)
                            .to_owned(),
                        (context.cert.as_ref()).map_or("-".to_owned(), |p| p.display().to_string()),
                    ]);
                }
                table(&rows)
            };
            print(output, json, text);
        }
        ConfigCommand::DeleteContext { name, output } => {
            file.delete(&name)?;
            file.save(&path)?;
            print(
                output,
                || json!({ "deleted": name }),
                || format!("context {name} deleted"),
            );
        }
    }
    Ok(())
}

fn run_certs(command: CertsCommand) -> Result<(), CliError> {
    match command {
        CertsCommand::Init { dir, name, output } => {
            let written = certs::init_ca(&dir, &name)?;
            print(
                output,
                || json!({ "ca": written.cert, "key": written.key }),
                || {
                    format!(
                        "fleet CA created: {} (key {}, mode 0600; keep it offline)",
                        written.cert.display(),
                        written.key.display()
                    )
                },
            );
        }
        CertsCommand::Issue {
            dir,
            kind,
            name,
            role,
            san,
            days,
            out,
            output,
        } => {
            let mut request = IssueRequest::new(kind, &name, days);
            request.role = role;
            request.sans = san;
            let identity = request.identity()?;
            let written = certs::issue(&dir, &request, out.as_deref().unwrap_or(&dir))?;
            print(
                output,
                || {
                    json!({
                        "identity": identity.to_uri(), "subject": identity.to_string(),
                        "cert": written.cert, "key": written.key,
                    })
                },
                || {
                    format!(
                        "issued {} for {}: {} (key {}, mode 0600)",
                        identity.to_uri(),
                        identity,
                        written.cert.display(),
                        written.key.display()
                    )
                },
            );
        }
    }
    Ok(())
}

/// Reads config files; the node is `--node` (one file only) or each file's stem.
pub fn read_configs(
    files: &[PathBuf],
    node: Option<String>,
) -> Result<Vec<NodeConfigEntry>, CliError> {
    if node.is_some() && files.len() != 1 {
        return Err(CliError::Usage(
            "--node names the node of a single file; name several files <node>.toml instead".into(),
        ));
    }
    files
        .iter()
        .map(|path| {
            let toml = std::fs::read_to_string(path).map_err(|source| CliError::Io {
                path: path.clone(),
                source,
            })?;
            let node = match &node {
                Some(node) => node.clone(),
                None => stem(path)?,
            };
            Ok(NodeConfigEntry { node, toml })
        })
        .collect()
}

/// Reads a fleet file (`hav_proto::fleet`): its name and text. The coordinator expands and
/// validates it as a whole.
pub fn read_fleet(path: &Path) -> Result<(String, String), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

fn stem(path: &Path) -> Result<String, CliError> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| hav_proto::identity::valid_name(s))
        .map(str::to_owned)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: cannot take a node name from this file name; use --node NAME",
                path.display()
            ))
        })
}

/// A push that some node did not apply is an error (exit status 1), after the per-node report.
fn push_result(response: &PushConfigResponse) -> Result<(), CliError> {
    let stopped: Vec<&str> = (response.nodes.iter())
        .filter(|node| {
            matches!(
                ApplyOutcome::try_from(node.outcome),
                Ok(ApplyOutcome::Failed | ApplyOutcome::Timeout | ApplyOutcome::Held)
            )
        })
        .map(|node| node.node.as_str())
        .collect();
    if stopped.is_empty() {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "push stopped: {} kept their previous config (see `havctl history`); fix the config \
         and push again, or `havctl rollback N`",
        stopped.join(", ")
    )))
}

/// A push's (or rollback's) answer as text: the version, then per node its change, outcome and
/// (dry run) diff.
fn push_text(response: &PushConfigResponse) -> String {
    let mut out = if response.version == 0 {
        "no new version (dry run or nothing changed)\n".to_owned()
    } else {
        format!("config version {}\n", response.version)
    };
    for node in &response.nodes {
        let error = if node.error.is_empty() {
            String::new()
        } else {
            format!(": {}", node.error)
        };
        out.push_str(&format!(
            "{}: {}, {}{error}\n",
            node.node,
            change_name(node.change),
            outcome_name(node.outcome)
        ));
        for line in node.diff.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// A push's (or rollback's) answer as JSON; `version` 0: no new version.
fn push_json(response: &PushConfigResponse) -> Value {
    json!({
        "version": response.version,
        "nodes": response.nodes.iter().map(|node| json!({
            "node": node.node,
            "change": change_name(node.change),
            "outcome": outcome_name(node.outcome),
            "error": node.error,
            "diff": node.diff,
        })).collect::<Vec<_>>(),
    })
}

fn change_name(change: i32) -> String {
    NodeChange::try_from(change)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("NODE_CHANGE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

fn outcome_name(outcome: i32) -> String {
    ApplyOutcome::try_from(outcome)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("APPLY_OUTCOME_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "?".into())
}

/// Prints a drain's (or undrain's) answer; a refusal is then an error.
pub(crate) fn print_drain(
    node: &str,
    undo: bool,
    response: &DrainResponse,
    output: Output,
) -> Result<(), CliError> {
    let action = if undo { "undrain" } else { "drain" };
    print(
        output,
        || {
            json!({
                "node": node, "action": action, "ok": response.ok,
                "moved": response.moved, "error": response.error,
                "connections_at_move": response.connections_at_move,
                "connections_broken": response.connections_broken,
            })
        },
        || {
            if !response.ok {
                return String::new();
            }
            let mut out = format!("{node}: {action}ed\n");
            for moved in &response.moved {
                out.push_str(&format!("  {moved}\n"));
            }
            if response.connections_at_move > 0 {
                let ended = response.connections_at_move - response.connections_broken;
                out.push_str(&format!(
                    "  connections: {} still served when the VIPs moved; {ended} ended on their own, {} broken\n",
                    response.connections_at_move, response.connections_broken
                ));
            }
            out
        },
    );
    if response.ok {
        Ok(())
    } else {
        Err(CliError::Refused(match response.error.contains(node) {
            true => response.error.clone(),
            false => format!("{action} of {node} refused: {}", response.error),
        }))
    }
}

pub(crate) fn state_name(state: i32) -> String {
    VrrpState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("VRRP_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("unknown({state})"))
}

/// Whether the coordinator still believes what `node` last reported, by name: `connected`,
/// `disconnected` (its lease runs) or `unknown` (what it reported is stale).
fn presence_name(node: &NodeStatus) -> &'static str {
    match NodePresence::try_from(node.presence) {
        Ok(NodePresence::Connected) => "connected",
        Ok(NodePresence::Unknown) => "unknown",
        Ok(NodePresence::Disconnected) => "disconnected",
        // A coordinator from before presence.
        _ if node.connected => "connected",
        _ => "disconnected",
    }
}

fn is_unknown(node: &NodeStatus) -> bool {
    node.presence == NodePresence::Unknown as i32
}

/// Which coordinator answered and whether it leads, for coordinators that share their store
/// (one alone with its store always leads: nothing to say).
fn coordinator_line(coordinator: &hav_proto::v1::CoordinatorStatus) -> Option<String> {
    if !coordinator.shared_store {
        return None;
    }
    let role = match (coordinator.leader, coordinator.leader_name.as_str()) {
        (true, _) => "leader".to_owned(),
        (false, "") => "follower (no leader elected yet)".to_owned(),
        (false, leader) => format!("follower (leader: {leader})"),
    };
    Some(format!("coordinator {}: {role}", coordinator.name))
}

fn status_table(nodes: &[NodeStatus]) -> String {
    let mut rows = vec![row([
        "NODE", "LINK", "VERSION", "CONFIG", "INSTANCE", "VRID", "STATE", "PRIO", "VIPS",
    ])];
    for node in nodes {
        let link = match presence_name(node) {
            "connected" => "up",
            "unknown" => "unknown",
            _ => "down",
        };
        // What an unknown node last reported is shown as stale, never as its state.
        let shown = |i: &hav_proto::v1::InstanceState| {
            if is_unknown(node) {
                (
                    format!("unknown (last: {})", state_name(i.state)),
                    if i.vips_held.is_empty() {
                        String::new()
                    } else {
                        format!("stale: {}", i.vips_held.join(","))
                    },
                )
            } else {
                let state = match i.draining_connections {
                    // Handed over on purpose, still serving its connections (silently).
                    Some(n) => format!("{} (draining {n} conn)", state_name(i.state)),
                    None => state_name(i.state),
                };
                (state, i.vips_held.join(","))
            }
        };
        let running = node
            .snapshot
            .as_ref()
            .map(|s| s.config_version)
            .unwrap_or(0);
        let config = format!("{running}/{}", node.desired_config_version);
        let instances = node
            .snapshot
            .as_ref()
            .map(|s| s.instances.as_slice())
            .unwrap_or_default();
        if instances.is_empty() {
            rows.push(vec![
                node.name.clone(),
                link.into(),
                node.software_version.clone(),
                config.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for (i, instance) in instances.iter().enumerate() {
            let first = i == 0;
            let (state, vips) = shown(instance);
            rows.push(vec![
                if first {
                    node.name.clone()
                } else {
                    String::new()
                },
                if first { link.into() } else { String::new() },
                if first {
                    node.software_version.clone()
                } else {
                    String::new()
                },
                if first { config.clone() } else { String::new() },
                instance.name.clone(),
                instance.vrid.to_string(),
                state,
                match instance.priority_override {
                    Some(_) => format!("{} (override)", instance.effective_priority),
                    None => instance.effective_priority.to_string(),
                },
                vips,
            ]);
        }
    }
    table(&rows)
}

/// The JSON form of a node's status (stable keys, for scripts). The instances of an `unknown`
/// node are in state `unknown` holding nothing; what it last reported is under `last_report`.
pub fn node_json(node: &NodeStatus) -> Value {
    let snapshot = node.snapshot.as_ref();
    let unknown = is_unknown(node);
    json!({
        "name": node.name,
        "connected": node.connected,
        "presence": presence_name(node),
        "disconnected_unix_ms": node.disconnected_unix_ms,
        "software_version": node.software_version,
        "protocol_version": node.protocol_version,
        "capabilities": node.capabilities,
        "last_seen_unix_ms": node.last_seen_unix_ms,
        "peer_address": node.peer_address,
        "config_version": snapshot.map(|s| s.config_version).unwrap_or(0),
        "desired_config_version": node.desired_config_version,
        "drained": snapshot.is_some_and(|s| s.drained),
        "instances": snapshot.map(|s| s.instances.iter().map(|i| {
            let mut value = json!({
                "name": i.name,
                "vrid": i.vrid,
                "state": state_name(i.state),
                "effective_priority": i.effective_priority,
                "configured_priority": i.configured_priority,
                "priority_override": i.priority_override,
                "draining_connections": i.draining_connections,
                "vips_held": i.vips_held,
                "interface": i.interface,
            });
            if unknown {
                value["last_report"] = json!({
                    "state": state_name(i.state), "vips_held": i.vips_held,
                });
                value["state"] = json!("unknown");
                value["vips_held"] = json!([]);
            }
            value
        }).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

fn event_json(event: &FleetEvent) -> Value {
    let mut value = json!({ "node": event.node, "unix_ms": event.unix_ms });
    let detail = match &event.kind {
        Some(fleet_event::Kind::Presence(p)) => json!({ "presence": {
            "connected": p.connected, "state": presence_event_name(p),
        }}),
        Some(fleet_event::Kind::Lagged(missed)) => json!({ "lagged": missed }),
        Some(fleet_event::Kind::Agent(agent)) => match &agent.kind {
            Some(event::Kind::Transition(t)) => json!({ "transition": {
                "instance": t.instance, "from": state_name(t.from), "to": state_name(t.to),
                "cause": t.cause,
            }}),
            Some(event::Kind::Tracker(t)) => json!({ "tracker": {
                "tracker": t.tracker, "up": t.up, "instances": t.instances,
                "priority_delta": t.priority_delta, "detail": t.detail,
            }}),
            Some(event::Kind::Counters(c)) => json!({ "counters": {
                "instance": c.instance, "values": c.values,
            }}),
            Some(event::Kind::ExecOutput(o)) => json!({ "exec_output": {
                "command_id": o.command_id, "line": o.line, "stderr": o.stderr,
            }}),
            None => json!({ "unknown": true }),
        },
        Some(fleet_event::Kind::SplitBrain(s)) => crate::orchestrate::split_brain_json(s),
        Some(fleet_event::Kind::Rollout(job)) => {
            json!({ "rollout": crate::orchestrate::job_json(job) })
        }
        None => json!({ "unknown": true }),
    };
    if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), detail) {
        map.extend(extra);
    }
    value
}

/// What `havctl watch` prints, event by event. A rollout job is printed only when its line would
/// read differently from the last one printed for it (the coordinator publishes every step of
/// every node); the end of a split brain only after its raise was printed, so that "over" always
/// follows the alarm it ends.
#[derive(Debug, Default)]
pub struct WatchLines {
    /// Per rollout job, the line last printed.
    rollouts: HashMap<u64, String>,
    /// VIPs whose split brain was printed raised and not yet over.
    raised: HashSet<String>,
}

impl WatchLines {
    /// The line for `event`, or `None` when it shows nothing new.
    pub fn line(&mut self, event: &FleetEvent) -> Option<String> {
        match &event.kind {
            Some(fleet_event::Kind::Rollout(job)) => {
                let summary = crate::orchestrate::job_summary(job);
                if self.rollouts.get(&job.id) == Some(&summary) {
                    return None;
                }
                self.rollouts.insert(job.id, summary);
            }
            Some(fleet_event::Kind::SplitBrain(split)) => {
                let shown = if split.resolved {
                    self.raised.remove(&split.vip)
                } else {
                    self.raised.insert(split.vip.clone());
                    true
                };
                if !shown {
                    return None;
                }
            }
            _ => {}
        }
        Some(event_line(event))
    }
}

fn event_line(event: &FleetEvent) -> String {
    let what = match &event.kind {
        Some(fleet_event::Kind::Presence(p)) => match presence_event_name(p) {
            "unknown" => "unknown: no session for its whole presence lease; what it last \
                          reported is no longer believed"
                .to_owned(),
            name => name.to_owned(),
        },
        Some(fleet_event::Kind::Lagged(missed)) => {
            format!("(this watcher was too slow: {missed} events missed)")
        }
        Some(fleet_event::Kind::Agent(agent)) => match &agent.kind {
            Some(event::Kind::Transition(t)) => format!(
                "{}: {} -> {} ({})",
                t.instance,
                state_name(t.from),
                state_name(t.to),
                t.cause
            ),
            Some(event::Kind::Tracker(t)) => format!(
                "tracker {} {} (priority {:+}) {}",
                t.tracker,
                if t.up { "up" } else { "down" },
                t.priority_delta,
                t.detail
            ),
            Some(event::Kind::Counters(c)) => format!("{} counters {:?}", c.instance, c.values),
            Some(event::Kind::ExecOutput(o)) => {
                format!(
                    "exec #{}{} {}",
                    o.command_id,
                    if o.stderr { " (stderr)" } else { "" },
                    o.line
                )
            }
            None => "unknown event".into(),
        },
        Some(fleet_event::Kind::SplitBrain(s)) => crate::orchestrate::split_brain_line(s),
        Some(fleet_event::Kind::Rollout(job)) => crate::orchestrate::job_summary(job),
        None => "unknown event".into(),
    };
    format!("{} {} {what}", when(event.unix_ms), event.node)
}

fn presence_event_name(presence: &hav_proto::v1::Presence) -> &'static str {
    match NodePresence::try_from(presence.state) {
        Ok(NodePresence::Unknown) => "unknown",
        Ok(NodePresence::Connected) => "connected",
        Ok(NodePresence::Disconnected) => "disconnected",
        _ if presence.connected => "connected",
        _ => "disconnected",
    }
}

#[cfg(test)]
mod tests {
    use hav_proto::v1::{InstanceState, StateSnapshot};

    use super::*;

    fn node(presence: NodePresence) -> NodeStatus {
        NodeStatus {
            name: "proxy-c".into(),
            presence: presence as i32,
            disconnected_unix_ms: 7,
            snapshot: Some(StateSnapshot {
                instances: vec![InstanceState {
                    name: "web-vip0".into(),
                    state: VrrpState::Master as i32,
                    vips_held: vec!["198.51.100.110/24".into()],
                    ..InstanceState::default()
                }],
                ..StateSnapshot::default()
            }),
            ..NodeStatus::default()
        }
    }

    fn rollout(id: u64, steps: &[&str]) -> FleetEvent {
        let nodes = (steps.iter().enumerate())
            .map(|(i, step)| hav_proto::v1::RolloutNode {
                node: format!("lb-{i}"),
                step: (*step).to_owned(),
                ..Default::default()
            })
            .collect();
        FleetEvent {
            unix_ms: 1_793_688_777_300,
            kind: Some(fleet_event::Kind::Rollout(hav_proto::v1::RolloutJob {
                id,
                status: "running".into(),
                waves: 2,
                nodes,
                ..Default::default()
            })),
            ..FleetEvent::default()
        }
    }

    fn split_brain(vip: &str, resolved: bool) -> FleetEvent {
        FleetEvent {
            unix_ms: 1_793_688_777_000,
            kind: Some(fleet_event::Kind::SplitBrain(hav_proto::v1::SplitBrain {
                vip: vip.into(),
                vrid: 10,
                masters: vec!["lb-1".into(), "lb-2".into()],
                resolved,
                ..Default::default()
            })),
            ..FleetEvent::default()
        }
    }

    #[test]
    fn watch_prints_a_rollout_line_only_when_it_reads_differently() {
        let mut lines = WatchLines::default();
        let first = lines.line(&rollout(7, &["draining", "pending"]));
        assert!(
            first
                .as_deref()
                .is_some_and(|l| l.starts_with("2026-11-03T06:52:57.300Z")
                    && l.ends_with("rollout job 7 running (0/2 nodes, 2 waves)")),
            "{first:?}"
        );
        // Steps that change no figure of the line print nothing.
        assert_eq!(lines.line(&rollout(7, &["drained", "pending"])), None);
        assert_eq!(lines.line(&rollout(7, &["healthy", "pending"])), None);
        assert!(lines.line(&rollout(7, &["done", "pending"])).is_some());
        // Another job has its own line.
        assert!(lines.line(&rollout(8, &["done", "pending"])).is_some());
    }

    #[test]
    fn watch_prints_a_split_brain_over_only_after_its_raise() {
        let mut lines = WatchLines::default();
        // The end of a candidate never raised (or raised before the watch began).
        assert_eq!(lines.line(&split_brain("198.51.100.10", true)), None);
        let raised = lines.line(&split_brain("198.51.100.10", false));
        assert!(
            raised
                .as_deref()
                .is_some_and(|l| l.contains("SPLIT BRAIN: 198.51.100.10")),
            "{raised:?}"
        );
        let over = lines.line(&split_brain("198.51.100.10", true));
        assert!(
            over.as_deref()
                .is_some_and(|l| l.contains("split brain over: 198.51.100.10")),
            "{over:?}"
        );
        assert_eq!(lines.line(&split_brain("198.51.100.10", true)), None);
    }

    #[test]
    fn an_unknown_nodes_last_report_is_shown_as_stale_never_as_its_state() {
        let json = node_json(&node(NodePresence::Unknown));
        assert_eq!(json["presence"], "unknown");
        let instance = &json["instances"][0];
        assert_eq!(instance["state"], "unknown");
        assert_eq!(instance["vips_held"], json!([]));
        assert_eq!(instance["last_report"]["state"], "master");
        assert_eq!(
            instance["last_report"]["vips_held"],
            json!(["198.51.100.110/24"])
        );
        // Within its lease the last report is still believed.
        let json = node_json(&node(NodePresence::Disconnected));
        assert_eq!(json["presence"], "disconnected");
        assert_eq!(json["instances"][0]["state"], "master");
    }
}
