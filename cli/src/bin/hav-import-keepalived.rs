//! hav-import-keepalived: converts keepalived.conf files into hav node configs.
//!
//! `hav-import-keepalived [--out-dir DIR] FILE...` prints each converted config (or writes
//! `DIR/<node name>.toml`), and lists on stderr everything that was not converted, with file and
//! line. Give both files of a pair to fill in the unicast peers' priorities. Exit status 1 when a
//! file cannot be read or parsed or converts to a config hav refuses.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use havctl::import::{FindingKind, import_keepalived};

#[derive(Parser)]
#[command(version, about = "Convert keepalived.conf files into hav node configs")]
struct Args {
    /// Write DIR/<node name>.toml instead of printing the configs.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// keepalived.conf files, one per node (both nodes of a pair for peer priorities).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = import_keepalived(&args.files)?;
    for node in &report.nodes {
        let not_converted = node.not_converted().count();
        eprintln!(
            "{}: node {:?}: {} instance(s), {} not converted, {} note(s)",
            node.source.display(),
            node.config.node.name,
            node.config.instances.len(),
            not_converted,
            node.notes().count()
        );
        for finding in &node.findings {
            if finding.kind == FindingKind::NotConverted {
                eprintln!("  {finding}");
            }
        }
        match &args.out_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.toml", node.config.node.name));
                std::fs::write(&path, &node.toml)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("  written to {}", path.display());
            }
            None => println!("{}", node.toml),
        }
    }
    for note in &report.pair_notes {
        eprintln!("pair: {note}");
    }
    Ok(())
}
