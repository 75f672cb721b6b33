//! The man pages and completions the Debian packages ship: `scripts/gen-assets.sh` run on the
//! built binaries makes a page for each of the three programs (rendered from its command line)
//! and each config file (section 5), pages that groff formats without a warning, and every asset
//! of the packages' metadata that comes from it. Needs `hav-agent`, `hav-coordinator` and
//! `havctl` built (`cargo build -p hav-agent -p hav-coordinator -p havctl`) and gzip.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hav_tests::bench::sibling_binary;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `scripts/gen-assets.sh` on the binaries next to this test into `out`.
fn generate(out: &Path) -> Result<(), Error> {
    let binaries = sibling_binary("havctl")?
        .parent()
        .ok_or("the binaries' directory")?
        .to_owned();
    let run = Command::new(root().join("scripts/gen-assets.sh"))
        .arg(&binaries)
        .arg(out)
        .output()?;
    if !run.status.success() {
        return Err(format!(
            "gen-assets.sh failed: {}",
            String::from_utf8_lossy(&run.stderr)
        )
        .into());
    }
    Ok(())
}

/// A gzipped man page's text.
fn page(path: &Path) -> Result<String, Error> {
    let out = Command::new("gzip").arg("-dc").arg(path).output()?;
    if !out.status.success() {
        return Err(format!("{} is not gzip", path.display()).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// groff's warnings for `roff` (line-breaking ones aside), or `None` without groff.
fn groff_warnings(roff: &str) -> Result<Option<String>, Error> {
    let child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-Wbreak", "-z"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        return Ok(None);
    };
    child
        .stdin
        .take()
        .ok_or("groff's stdin")?
        .write_all(roff.as_bytes())?;
    let out = child.wait_with_output()?;
    Ok(Some(String::from_utf8_lossy(&out.stderr).into_owned()))
}

#[test]
fn every_program_and_config_file_has_a_man_page_and_the_packages_ship_them() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("assets");
    generate(&out)?;
    let man = out.join("man");

    // Each page, its section, and options it must document (taken from the command line, so a
    // page made from a stale binary or by hand would miss them).
    for (file, title, must_mention) in [
        (
            "hav-agent.8.gz",
            ".TH hav-agent 8",
            &["--config", "--check", "status"][..],
        ),
        (
            "hav-coordinator.8.gz",
            ".TH hav-coordinator 8",
            &["--listen", "--cert", "--resolve-split-brain"][..],
        ),
        (
            "havctl.1.gz",
            ".TH havctl 1",
            &["push-config", "--coordinator"][..],
        ),
        (
            "havctl-push-config.1.gz",
            ".TH havctl-push-config 1",
            &["--dry-run", "--output"][..],
        ),
        (
            "hav-agent.toml.5.gz",
            ".TH HAV-AGENT.TOML 5",
            &[
                "[[instance]]",
                "state_dir",
                "[instance.vmac]",
                "[[instance.route]]",
                "[[instance.rule]]",
                "strict",
            ][..],
        ),
        (
            "hav-fleet.toml.5.gz",
            ".TH HAV-FLEET.TOML 5",
            &["[[group]]", "first_vrid"][..],
        ),
        (
            "havctl.toml.5.gz",
            ".TH HAVCTL.TOML 5",
            &["current_context"][..],
        ),
    ] {
        let text = page(&man.join(file))?;
        assert!(text.contains(title), "{file}: no {title:?}");
        for needle in must_mention {
            // roff escapes the hyphens of options.
            let escaped = needle.replace('-', "\\-");
            assert!(
                text.contains(needle) || text.contains(&escaped),
                "{file} does not mention {needle}"
            );
        }
    }
    // Every page formats cleanly.
    for entry in std::fs::read_dir(&man)? {
        let path = entry?.path();
        if let Some(warnings) = groff_warnings(&page(&path)?)? {
            assert!(warnings.is_empty(), "{}: {warnings}", path.display());
        }
    }
    for completion in ["havctl", "_havctl", "havctl.fish"] {
        let text = std::fs::read_to_string(out.join("completions").join(completion))?;
        assert!(text.contains("push-config"), "{completion}");
    }

    // Every generated asset the packages list exists: the metadata and the script agree.
    let mut listed = 0;
    for manifest in [
        "agent/Cargo.toml",
        "coordinator/Cargo.toml",
        "cli/Cargo.toml",
    ] {
        let text = std::fs::read_to_string(root().join(manifest))?;
        for source in text
            .split('"')
            .filter_map(|s| s.strip_prefix("target/release/assets/"))
        {
            listed += 1;
            let (dir, pattern) = source.rsplit_once('/').unwrap_or(("", source));
            let (prefix, suffix) = pattern.split_once('*').unwrap_or((pattern, ""));
            let found = std::fs::read_dir(out.join(dir))?.any(|entry| {
                entry.is_ok_and(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(prefix) && name[prefix.len()..].ends_with(suffix)
                })
            });
            assert!(found, "{manifest}: asset {source} is not generated");
        }
    }
    assert!(listed >= 9, "the packages list {listed} generated assets");
    Ok(())
}
