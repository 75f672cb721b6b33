//! The havctl commands that need no coordinator: the keepalived importer, shell completions and
//! man pages.

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::client::CliError;
use crate::commands::Cli;
use crate::import::{FindingKind, import_keepalived as convert};
use crate::output::{Output, print};

/// `havctl import-keepalived`: each converted config on stdout (or `DIR/<node>.toml`, and
/// `DIR/fleet.toml` for several nodes), a summary and every item not converted (file:line:column
/// and why) on stderr; with `-o json`, all of it as one document on stdout. `DIR` is created
/// before anything is converted, so a directory that cannot be made fails the command first.
pub fn import_keepalived(
    out_dir: Option<PathBuf>,
    files: &[PathBuf],
    output: Output,
) -> Result<(), CliError> {
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let report = convert(files).map_err(|error| CliError::Invalid(error.to_string()))?;
    let fleet_path = match (&out_dir, &report.fleet) {
        (Some(dir), Some(fleet)) => {
            let path = dir.join("fleet.toml");
            std::fs::write(&path, fleet).map_err(|source| CliError::Io {
                path: path.clone(),
                source,
            })?;
            Some(path)
        }
        _ => None,
    };
    let mut written = Vec::new();
    for node in &report.nodes {
        if let Some(dir) = &out_dir {
            let path = dir.join(format!("{}.toml", node.config.node.name));
            std::fs::write(&path, &node.toml).map_err(|source| CliError::Io {
                path: path.clone(),
                source,
            })?;
            written.push(Some(path));
        } else {
            written.push(None);
        }
    }
    if output == Output::Json {
        let nodes: Vec<Value> = (report.nodes.iter().zip(&written))
            .map(|(node, path)| {
                let findings = |kind| {
                    (node.findings.iter())
                        .filter(|f| f.kind == kind)
                        .map(|f| {
                            json!({
                                "location": f.location.to_string(), "item": f.item,
                                "reason": f.reason,
                            })
                        })
                        .collect::<Vec<_>>()
                };
                json!({
                    "node": node.config.node.name,
                    "source": node.source,
                    "instances": node.config.instances.len(),
                    "written_to": path,
                    "toml": if path.is_some() { Value::Null } else { json!(node.toml) },
                    "not_converted": findings(FindingKind::NotConverted),
                    "notes": findings(FindingKind::Note),
                })
            })
            .collect();
        print(
            output,
            || {
                json!({
                    "nodes": nodes,
                    "pair_notes": report.pair_notes,
                    "fleet": if fleet_path.is_some() { Value::Null } else { json!(report.fleet) },
                    "fleet_written_to": fleet_path,
                })
            },
            String::new,
        );
        return Ok(());
    }
    for (node, path) in report.nodes.iter().zip(&written) {
        eprintln!(
            "{}: node {:?}: {} instance(s), {} not converted, {} note(s)",
            node.source.display(),
            node.config.node.name,
            node.config.instances.len(),
            node.not_converted().count(),
            node.notes().count()
        );
        for finding in node.not_converted() {
            eprintln!("  {finding}");
        }
        match path {
            Some(path) => eprintln!("  written to {}", path.display()),
            None => println!("{}", node.toml),
        }
    }
    for note in &report.pair_notes {
        eprintln!("pair: {note}");
    }
    match (&fleet_path, &report.fleet) {
        (Some(path), _) => eprintln!("fleet file written to {}", path.display()),
        (None, Some(fleet)) => println!("{fleet}"),
        (None, None) => {}
    }
    Ok(())
}

/// `havctl completions SHELL`.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut Cli::command(), "havctl", &mut std::io::stdout());
}

/// `havctl man --dir DIR`: `havctl.1` and `havctl-<sub>.1` for every subcommand.
pub fn man_pages(dir: &Path) -> Result<(), CliError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CliError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let command = Cli::command();
    let mut pages = vec![("havctl".to_string(), command.clone())];
    for sub in command.get_subcommands() {
        pages.push((format!("havctl-{}", sub.get_name()), sub.clone()));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(page.name(name.clone()))
            .render(&mut out)
            .map_err(io(&path))?;
        std::fs::write(&path, out).map_err(io(&path))?;
    }
    Ok(())
}
