//! hav's own nftables table: created, owned and removed by the agent, and nothing else touched.
//!
//! Guarantees: the agent only ever changes one table (family `inet`, [`TableName::DEFAULT`]
//! unless a test names another; every name starts with `hav`), never another table, chain or set
//! of the host. Every change rewrites that whole table in one `nft -f -` transaction, which the
//! kernel applies atomically: packets see the old table or the new one, never a mix, and a
//! failed change leaves the old one in place. A table whose sections are all empty is deleted, so
//! the table exists only while some feature needs it, and deleting it is always safe (start-up
//! removes what a crashed run left; a clean stop removes it).
//!
//! Layout: [`ruleset`] renders the transaction text from typed [`Section`]s (one per feature:
//! accept mode, the load balancer's NAT), [`HavTable`]
//! keeps the sections and applies them, [`AcceptFilter`] is the RFC 5798 `Accept_Mode` section,
//! [`lb`] the load balancer's rules (NAT here, DR in a `netdev` table of the same name, [`DrTable`]),
//! [`handover`] the planned hand-over's tables (`ip`, `ip6` and `arp`), [`Firewall`] owns them all.
//! The `nft` program runs in the network namespace of the thread that spawns it.

pub mod accept;
pub mod firewall;
pub mod handover;
pub mod lb;
pub mod lb_applier;
pub mod ruleset;
pub mod table;
pub mod vmac;

/// Stand-ins for tests of what runs `nft`.
#[cfg(test)]
pub(crate) mod testing {
    use super::Nft;

    /// An `nft` stand-in that appends each transaction it reads to `log`. While `fail` exists it
    /// removes it, reads `gate` (a FIFO) to its end, then fails: the test learns that this run
    /// started when its own open of the FIFO for writing returns, and ends it by closing it.
    pub fn fake_nft(dir: &std::path::Path) -> (Nft, std::path::PathBuf, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let (log, fail, gate) = (dir.join("log"), dir.join("fail"), dir.join("gate"));
        let program = dir.join("nft");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\ncat >> {log}\necho '-- end' >> {log}\n\
                 if [ -e {fail} ]; then rm {fail}; cat {gate} > /dev/null; exit 1; fi\n",
                log = log.display(),
                fail = fail.display(),
                gate = gate.display(),
            ),
        )
        .expect("fake nft");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let made = std::process::Command::new("mkfifo")
            .arg(&gate)
            .status()
            .expect("mkfifo");
        assert!(made.success(), "mkfifo {}", gate.display());
        (Nft::with_program(program), log, gate)
    }
}

pub use accept::AcceptFilter;
pub use firewall::Firewall;
pub use handover::{HandoverApplier, HandoverRules, HandoverTables, SecondChance};
pub use lb::{DrTable, Forwarding, LbService, Target};
pub use lb_applier::VirtualServerApplier;
pub use ruleset::{AddressSet, BaseChain, Chain, ChainType, Hook, Section};
pub use table::{HavTable, TableRemoval};

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The nftables family of hav's table: one table for IPv4 and IPv6.
pub const FAMILY: &str = "inet";

/// How long one `nft` run may take before it is killed and reported as failed.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest table name accepted (the kernel allows more; short names stay readable).
const MAX_TABLE_NAME_LEN: usize = 32;

/// The name of hav's table: `hav`, then ASCII lowercase letters, digits or `_`, at most 32 bytes.
/// The prefix keeps the name clear of nft keywords and says whose table it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName(String);

impl TableName {
    /// The table every agent uses.
    pub const DEFAULT: &'static str = "hav";

    /// A validated table name.
    pub fn new(name: &str) -> Result<Self, NftError> {
        let invalid = |reason| NftError::InvalidTableName {
            name: name.to_owned(),
            reason,
        };
        if !name.starts_with(Self::DEFAULT) {
            return Err(invalid("must start with `hav`"));
        }
        if name.len() > MAX_TABLE_NAME_LEN {
            return Err(invalid("longer than 32 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid("only a-z, 0-9 and `_` are allowed"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name alone (`hav`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TableName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

/// `inet hav`: how nft names the table.
impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FAMILY} {}", self.0)
    }
}

/// Errors of hav's nftables table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NftError {
    /// The `nft` program is not installed (not found on `PATH`).
    #[error("the `nft` program (nftables) was not found on PATH ({searched}); install nftables")]
    NotInstalled {
        /// What was looked for, and where.
        searched: String,
    },
    /// A table name that [`TableName::new`] refuses.
    #[error("nftables table name {name:?}: {reason}")]
    InvalidTableName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two sections of the table define the same set or chain.
    #[error("nftables table {table}: section {section} redefines {kind} {name}")]
    NameClash {
        /// `inet hav`.
        table: String,
        /// The section being set.
        section: &'static str,
        /// `set` or `chain`.
        kind: &'static str,
        /// The clashing name.
        name: String,
    },
    /// `nft` could not be started, fed or awaited.
    #[error("nftables table {table}: {op}: running {program} failed")]
    Spawn {
        /// `inet hav`.
        table: String,
        /// What was being done (`block 198.51.100.1`, `delete table`, ...).
        op: String,
        /// The program run.
        program: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `nft` ran and refused the change; the table is as it was.
    #[error("nftables table {table}: {op}: nft {status}: {stderr}")]
    Refused {
        /// `inet hav`.
        table: String,
        /// What was being done.
        op: String,
        /// How nft ended (`exit status: 1`).
        status: String,
        /// What nft said.
        stderr: String,
    },
    /// `nft` did not finish in time and was killed.
    #[error("nftables table {table}: {op}: nft did not finish within {timeout:?}")]
    Timeout {
        /// `inet hav`.
        table: String,
        /// What was being done.
        op: String,
        /// The limit.
        timeout: Duration,
    },
}

/// The `nft` program: found on `PATH` at each use (so installing nftables while the agent runs
/// is enough), or a path given by a test.
#[derive(Debug, Clone)]
pub struct Nft {
    program: OsString,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            program: OsString::from("nft"),
        }
    }
}

impl Nft {
    /// `program` if it contains a `/`, else that name looked up on `PATH`.
    pub fn with_program(program: impl Into<OsString>) -> Self {
        Self {
            program: program.into(),
        }
    }

    /// The executable that will run, or [`NftError::NotInstalled`]. Runs nothing.
    pub fn locate(&self) -> Result<PathBuf, NftError> {
        let program = Path::new(&self.program);
        if program.components().count() > 1 {
            return if is_executable(program) {
                Ok(program.to_owned())
            } else {
                Err(NftError::NotInstalled {
                    searched: program.display().to_string(),
                })
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(|| NftError::NotInstalled {
                searched: format!("{} in {}", program.display(), Path::new(&path).display()),
            })
    }

    /// Runs `nft -f -` with `script` on its standard input: one atomic transaction.
    pub async fn apply(&self, table: &TableName, op: &str, script: &str) -> Result<(), NftError> {
        self.run(table, op, &["-f", "-"], Some(script)).await?;
        Ok(())
    }

    /// Whether `table` exists (`nft list tables inet`).
    pub async fn table_exists(&self, table: &TableName) -> Result<bool, NftError> {
        let listing = self
            .run(table, "list tables", &["list", "tables", FAMILY], None)
            .await?;
        let wanted = format!("table {table}");
        Ok(listing.lines().any(|line| line.trim() == wanted))
    }

    /// Whether the `netdev` table of the same name exists (`nft list tables netdev`).
    pub async fn netdev_table_exists(&self, table: &TableName) -> Result<bool, NftError> {
        let listing = self
            .run(table, "list tables", &["list", "tables", "netdev"], None)
            .await?;
        let wanted = format!("table netdev {}", table.as_str());
        Ok(listing.lines().any(|line| line.trim() == wanted))
    }

    /// Whether the table of the same name in `family` exists (`nft list tables <family>`).
    pub async fn family_table_exists(
        &self,
        family: &str,
        table: &TableName,
    ) -> Result<bool, NftError> {
        let listing = self
            .run(table, "list tables", &["list", "tables", family], None)
            .await?;
        let wanted = format!("table {family} {}", table.as_str());
        Ok(listing.lines().any(|line| line.trim() == wanted))
    }

    /// Runs nft with `args` (and `stdin`), killed after [`NFT_TIMEOUT`]; its standard output.
    async fn run(
        &self,
        table: &TableName,
        op: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, NftError> {
        let program = self.locate()?;
        let spawn_error = |source| NftError::Spawn {
            table: table.to_string(),
            op: op.to_owned(),
            program: program.display().to_string(),
            source,
        };
        let mut child = Command::new(&program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let input = child.stdin.take();
        let feed = async move {
            if let (Some(mut pipe), Some(text)) = (input, stdin) {
                pipe.write_all(text.as_bytes()).await?;
                // Dropping the pipe closes it: nft reads to the end of its input.
            }
            Ok::<(), io::Error>(())
        };
        let finished = tokio::time::timeout(NFT_TIMEOUT, async {
            let (fed, output) = tokio::join!(feed, child.wait_with_output());
            fed.and(output)
        })
        .await;
        let output = match finished {
            Ok(output) => output.map_err(spawn_error)?,
            // The child was dropped with the future, and killed (`kill_on_drop`).
            Err(_) => {
                return Err(NftError::Timeout {
                    table: table.to_string(),
                    op: op.to_owned(),
                    timeout: NFT_TIMEOUT,
                });
            }
        };
        if !output.status.success() {
            return Err(NftError::Refused {
                table: table.to_string(),
                op: op.to_owned(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_start_with_hav_and_stay_simple() {
        assert_eq!(TableName::default().as_str(), "hav");
        assert_eq!(TableName::default().to_string(), "inet hav");
        assert!(TableName::new("hav_test_42").is_ok());
        for bad in [
            "",
            "ha",
            "filter",
            "hav-x",
            "hav x",
            "havA",
            &"hav".repeat(11),
        ] {
            assert!(TableName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_missing_program_is_not_installed() {
        let error = Nft::with_program("/nonexistent/nft")
            .locate()
            .expect_err("no such program");
        assert!(matches!(error, NftError::NotInstalled { .. }), "{error}");
        assert!(error.to_string().contains("install nftables"), "{error}");
    }
}
