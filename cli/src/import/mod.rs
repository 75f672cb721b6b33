//! Importing keepalived configurations: `keepalived.conf` files (with their includes) become hav
//! node configs.
//!
//! [`import_keepalived`] converts each file given into one node config, validated by parsing it
//! back with [`hav_proto::config::parse_node_config`], so a returned config is one `hav-agent`
//! runs. Everything that has no hav equivalent is listed as a [`Finding`] with the file, line and
//! column it came from; nothing is dropped silently. Given the files of both peers of a pair,
//! each unicast peer also gets the other node's priority, so a master that can no longer win
//! resigns at once, and a fleet file that the fleet expansion accepts describes the pair.
//! Configurations flattened onto one line convert as written one statement per line. Syntax
//! errors name the file, line and column; no input makes the importer panic.

mod command;
mod convert;
mod draft;
mod emit;
mod fleet;
mod keywords;
pub mod lexer;
mod pair;
pub mod parser;

use std::fmt;
use std::path::{Path, PathBuf};

use hav_proto::config::{ConfigErrors, KeyPath, NodeConfig, Segment, parse_node_config};

pub use parser::Location;

/// The result of an import: one node per file given.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// In the order the files were given.
    pub nodes: Vec<ImportedNode>,
    /// Remarks about the files taken together (pairing, fleet config).
    pub pair_notes: Vec<String>,
    /// With two or more files: the fleet file describing them (`deploy/fleet/fleet.toml`'s
    /// schema), when the fleet expansion accepts it; `pair_notes` say why when there is none.
    pub fleet: Option<String>,
}

/// One keepalived.conf converted.
#[derive(Debug, Clone)]
pub struct ImportedNode {
    /// The keepalived.conf given (included files appear in findings' locations).
    pub source: PathBuf,
    /// Every file read: the source, then what it included.
    pub files: Vec<PathBuf>,
    /// The validated config.
    pub config: NodeConfig,
    /// The config as TOML, with the findings as comments at the top; parses to `config`.
    pub toml: String,
    /// What was converted with a remark, and what could not be converted.
    pub findings: Vec<Finding>,
}

impl ImportedNode {
    /// Findings of kind [`FindingKind::NotConverted`].
    pub fn not_converted(&self) -> impl Iterator<Item = &Finding> {
        (self.findings.iter()).filter(|finding| finding.kind == FindingKind::NotConverted)
    }

    /// Findings of kind [`FindingKind::Note`].
    pub fn notes(&self) -> impl Iterator<Item = &Finding> {
        (self.findings.iter()).filter(|finding| finding.kind == FindingKind::Note)
    }
}

/// Something the operator should know about one keepalived statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub location: Location,
    /// The keepalived statement or item, such as `vrrp_strict` or `virtual_server 10.0.0.1 80`.
    pub item: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FindingKind {
    /// Converted, but the hav config differs in a way worth knowing, or keepalived's meaning was
    /// only a hint (`state MASTER`).
    Note,
    /// Not in the hav config: no hav equivalent, or needs a human (shell syntax in a script).
    NotConverted,
}

impl Finding {
    pub(crate) fn note(location: Location, item: impl Into<String>, reason: &str) -> Self {
        Self {
            kind: FindingKind::Note,
            location,
            item: item.into(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FindingKind::Note => "note",
            FindingKind::NotConverted => "not converted",
        };
        write!(
            f,
            "{}: {kind}: {}: {}",
            self.location, self.item, self.reason
        )
    }
}

/// Why an import failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("no keepalived.conf given")]
    NoFiles,
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not UTF-8 text (first bad byte at offset {offset})", file.display())]
    NotUtf8 {
        file: PathBuf,
        line: usize,
        offset: usize,
    },
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The converted config is one hav refuses; `errors` name the hav keys, `located` each with
    /// the keepalived statement it came from (file:line:column) where it can be told.
    #[error(
        "{}: the converted config is not valid for hav:\n{}",
        keepalived.display(),
        located.join("\n")
    )]
    Rejected {
        keepalived: PathBuf,
        errors: ConfigErrors,
        located: Vec<String>,
        toml: String,
    },
}

/// Converts each keepalived.conf in `files` into a hav node config. With two or more files,
/// instances sharing a VRID are taken as peers of each other: unicast peers get the other node's
/// priority, differences between the peers are noted, and a fleet file describes the nodes.
pub fn import_keepalived(files: &[PathBuf]) -> Result<ImportReport, ImportError> {
    if files.is_empty() {
        return Err(ImportError::NoFiles);
    }
    let mut drafts = Vec::new();
    for file in files {
        let parsed = parser::parse_file(file)?;
        drafts.push(convert::convert(file, parsed));
    }
    let pair_notes = pair::pair(&mut drafts);
    let mut pair_notes = pair_notes;
    let mut nodes = Vec::new();
    for draft in drafts {
        nodes.push(finish(draft)?);
    }
    let (fleet, fleet_notes) = fleet::fleet(&nodes);
    pair_notes.extend(fleet_notes);
    Ok(ImportReport {
        nodes,
        pair_notes,
        fleet,
    })
}

/// Converts keepalived configuration text with no includes; `name` stands for its file in
/// locations. For tests and for text that is not in a file.
pub fn import_keepalived_text(text: &str, name: &Path) -> Result<ImportedNode, ImportError> {
    let parsed = parser::parse_text(text, name)?;
    finish(convert::convert(name, parsed))
}

fn finish(draft: draft::Draft) -> Result<ImportedNode, ImportError> {
    let toml = draft.to_toml();
    let origin = format!("converted from {}", draft.source.display());
    match parse_node_config(&toml, &origin) {
        Ok(config) => Ok(ImportedNode {
            source: draft.source,
            files: draft.files,
            config,
            toml,
            findings: draft.findings,
        }),
        Err(errors) => {
            let located = (errors.errors().iter())
                .map(|error| {
                    let at = origin_of(&draft, &error.path)
                        .map_or_else(|| draft.source.display().to_string(), |at| at.to_string());
                    format!("{at}: {}: {}", error.path, error.problem)
                })
                .collect();
            Err(ImportError::Rejected {
                keepalived: draft.source,
                errors,
                located,
                toml,
            })
        }
    }
}

/// The keepalived statement a hav key path of the draft was converted from.
fn origin_of(draft: &draft::Draft, path: &KeyPath) -> Option<Location> {
    let [Segment::Key(section), Segment::Index(index), rest @ ..] = path.segments() else {
        return None;
    };
    let index = *index;
    match section.as_str() {
        "instance" => draft.instances.get(index).map(|item| item.location.clone()),
        "script" => draft.scripts.get(index).map(|item| item.location.clone()),
        "process" => draft.processes.get(index).map(|item| item.location.clone()),
        "probe" => draft.probes.get(index).map(|item| item.location.clone()),
        "track_file" => draft
            .track_files
            .get(index)
            .map(|item| item.location.clone()),
        "sync_group" => draft
            .sync_groups
            .get(index)
            .map(|item| item.location.clone()),
        "virtual_server" => {
            let service = draft.virtual_servers.get(index)?;
            match rest {
                [Segment::Key(key), Segment::Index(server), ..] if key == "real_server" => service
                    .real_servers
                    .get(*server)
                    .map(|s| s.location.clone()),
                _ => Some(service.location.clone()),
            }
        }
        _ => None,
    }
}
