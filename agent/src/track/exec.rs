//! Running a program directly (no shell) in its own process group, optionally as another user,
//! with a timeout that kills the whole group.
//!
//! Guarantees: the child is the leader of a new process group; on timeout, or when the future
//! running it is dropped, `SIGKILL` goes to that group while the leader is still unreaped (so the
//! group id cannot have been reused); the program's stdin, stdout and stderr are `/dev/null`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Group, Pid, User};
use tokio::process::{Child, Command};

/// A program and its arguments, executed directly: no shell, so no interpolation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// Run as this user instead of the agent's own (which needs root).
    pub run_as: Option<RunAs>,
}

impl Program {
    pub fn new(
        path: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            path: path.into(),
            args: args.into_iter().map(Into::into).collect(),
            run_as: None,
        }
    }

    pub fn run_as(mut self, run_as: RunAs) -> Self {
        self.run_as = Some(run_as);
        self
    }

    /// What running this program needs from the host and does not find: the user and group to
    /// run as (their absence is a start-up error), the program itself, executable (a run
    /// failure). Reads the host, changes nothing.
    pub(crate) fn host_problems(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let mut problems = Vec::new();
        if let Err(error) = self.prepare() {
            problems.push(error.to_string());
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => problems.push(format!(
                "program {} is not an executable file",
                self.path.display()
            )),
            Err(error) => problems.push(format!("program {}: {error}", self.path.display())),
        }
        problems
    }

    /// Resolves the user and group so that a bad name is a start-up error, not a run failure.
    pub(crate) fn prepare(&self) -> Result<PreparedProgram, RunAsError> {
        let credentials = self.run_as.as_ref().map(RunAs::resolve).transpose()?;
        Ok(PreparedProgram {
            path: self.path.clone(),
            args: self.args.clone(),
            credentials,
        })
    }
}

/// Run a program as `user`, and as `group` if given (else the user's primary group). The
/// supplementary groups are dropped (the standard library does so when the uid is changed by
/// root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub group: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunAsError {
    #[error("no such user {0:?}")]
    UnknownUser(String),
    #[error("no such group {0:?}")]
    UnknownGroup(String),
    #[error("looking up {name:?}: {source}")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    fn resolve(&self) -> Result<Credentials, RunAsError> {
        fn lookup(name: &str) -> impl FnOnce(nix::Error) -> RunAsError + '_ {
            move |source| RunAsError::Lookup {
                name: name.to_owned(),
                source,
            }
        }
        let user = User::from_name(&self.user)
            .map_err(lookup(&self.user))?
            .ok_or_else(|| RunAsError::UnknownUser(self.user.clone()))?;
        let gid = match &self.group {
            None => user.gid,
            Some(group) => {
                Group::from_name(group)
                    .map_err(lookup(group))?
                    .ok_or_else(|| RunAsError::UnknownGroup(group.clone()))?
                    .gid
            }
        };
        Ok(Credentials {
            uid: user.uid.as_raw(),
            gid: gid.as_raw(),
        })
    }
}

/// A [`Program`] whose user and group are resolved.
#[derive(Debug, Clone)]
pub(crate) struct PreparedProgram {
    path: PathBuf,
    args: Vec<String>,
    credentials: Option<Credentials>,
}

impl PreparedProgram {
    /// A command for this program with `extra_args` after the configured ones.
    pub(crate) fn command<'a>(&self, extra_args: impl IntoIterator<Item = &'a str>) -> Command {
        let mut command = Command::new(&self.path);
        command.args(&self.args).args(extra_args);
        if let Some(credentials) = self.credentials {
            command.uid(credentials.uid).gid(credentials.gid);
        }
        command
    }

    pub(crate) fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Exited(ExitStatus),
    TimedOut(Duration),
    SpawnFailed(std::io::Error),
    WaitFailed(std::io::Error),
}

impl Outcome {
    pub(crate) fn succeeded(&self) -> bool {
        matches!(self, Outcome::Exited(status) if status.success())
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(status) => write!(f, "{status}"),
            Outcome::TimedOut(after) => write!(f, "killed after timeout of {after:?}"),
            Outcome::SpawnFailed(error) => write!(f, "cannot start: {error}"),
            Outcome::WaitFailed(error) => write!(f, "cannot wait: {error}"),
        }
    }
}

/// Runs `command` to completion, killing its process group after `timeout`.
pub(crate) async fn run(mut command: Command, timeout: Duration) -> Outcome {
    command
        .process_group(0)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return Outcome::SpawnFailed(error),
    };
    let mut group = GroupGuard::new(child);
    match tokio::time::timeout(timeout, group.child.wait()).await {
        Ok(Ok(status)) => {
            group.reaped = true;
            Outcome::Exited(status)
        }
        Ok(Err(error)) => Outcome::WaitFailed(error),
        Err(_elapsed) => {
            group.kill();
            // SIGKILL cannot be caught; the leader exits promptly and is reaped here.
            if group.child.wait().await.is_ok() {
                group.reaped = true;
            }
            Outcome::TimedOut(timeout)
        }
    }
}

/// Kills the child's process group unless the child was reaped.
struct GroupGuard {
    child: Child,
    group: Option<Pid>,
    reaped: bool,
}

impl GroupGuard {
    fn new(child: Child) -> Self {
        // The child is the group leader (process_group(0)), so its pid is the group id. `id()`
        // is only `None` after the child was reaped, which cannot have happened yet.
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        Self {
            child,
            group,
            reaped: false,
        }
    }

    fn kill(&self) {
        if let Some(group) = self.group
            && let Err(error) = killpg(group, Signal::SIGKILL)
        {
            tracing::debug!(%group, %error, "killpg");
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}
