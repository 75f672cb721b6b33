//! The coordinator's `Exec` command: run one program on this node during maintenance (e.g. a
//! package upgrade), stream its output back line by line as `ExecOutput` events, and acknowledge
//! when it ends (ok only for exit status 0).
//!
//! The program is executed directly (no shell), with stdin closed, in its own process group,
//! and killed with that group when it outlives its timeout. It runs in its own task: VRRP never
//! waits for it.

use std::process::Stdio;

use hav_proto::v1::{Event, ExecOutput, event};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::control::{EventSender, ExecRequest, PendingCommand};

/// Runs `exec` in the background, sending its output to `events` and acking `command` at the end.
pub fn spawn(command: PendingCommand, exec: ExecRequest, events: EventSender) {
    tokio::spawn(async move {
        let id = command.id;
        let result = run(id, &exec, |output| {
            events.send(Event {
                unix_ms: crate::daemon::fleet::unix_ms(),
                kind: Some(event::Kind::ExecOutput(output)),
            })
        })
        .await;
        match &result {
            Ok(()) => tracing::info!(id, program = %exec.program, "exec command succeeded"),
            Err(error) => {
                tracing::warn!(id, program = %exec.program, %error, "exec command failed")
            }
        }
        command.ack(result);
    });
}

/// Runs `exec` to its end, calling `output` with each line of stdout and stderr.
pub async fn run(
    command_id: u64,
    exec: &ExecRequest,
    mut output: impl FnMut(ExecOutput),
) -> Result<(), String> {
    let (program, args, timeout) = (&exec.program, &exec.args, exec.timeout);
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pid = child.id();
    // Both pipes were requested above, so both are present.
    let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let (Some(mut stdout), Some(mut stderr)) = (stdout, stderr) else {
        return Err("the program's output pipes are missing".into());
    };
    let mut last_line = String::new();
    let body = async {
        let (mut out_open, mut err_open) = (true, true);
        while out_open || err_open {
            let (line, is_stderr) = tokio::select! {
                line = stdout.next_line(), if out_open => (line, false),
                line = stderr.next_line(), if err_open => (line, true),
            };
            match line {
                Ok(Some(line)) => {
                    last_line.clone_from(&line);
                    output(ExecOutput {
                        command_id,
                        line,
                        stderr: is_stderr,
                    });
                }
                _ if is_stderr => err_open = false,
                _ => out_open = false,
            }
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(timeout, body).await {
        Ok(status) => status.map_err(|e| format!("waiting for {program}: {e}"))?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(format!(
                "{program} did not finish within {timeout:?} (killed)"
            ));
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} ended with {status}; last line: {last_line}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exec(argv: &[&str], timeout_seconds: u32) -> ExecRequest {
        ExecRequest {
            program: argv.first().map(|s| s.to_string()).unwrap_or_default(),
            args: argv.iter().skip(1).map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(u64::from(timeout_seconds)),
        }
    }

    #[tokio::test]
    async fn output_lines_come_back_in_order_and_exit_zero_is_ok() {
        let mut lines = Vec::new();
        let result = run(
            7,
            &exec(&["/bin/sh", "-c", "echo one; echo two >&2; echo three"], 10),
            |o| lines.push((o.command_id, o.line, o.stderr)),
        )
        .await;
        assert_eq!(result, Ok(()));
        let stdout: Vec<_> = lines
            .iter()
            .filter(|l| !l.2)
            .map(|l| l.1.as_str())
            .collect();
        assert_eq!(stdout, ["one", "three"]);
        assert!(lines.contains(&(7, "two".into(), true)));
    }

    #[tokio::test]
    async fn a_failing_program_fails_the_command_with_its_last_line() {
        let error = run(
            1,
            &exec(&["/bin/sh", "-c", "echo broken; exit 3"], 10),
            |_| {},
        )
        .await
        .expect_err("exit 3");
        assert!(
            error.contains("exit status: 3") && error.contains("broken"),
            "{error}"
        );
        let error = run(1, &exec(&["/nonexistent/hav-test"], 10), |_| {})
            .await
            .expect_err("missing program");
        assert!(error.contains("cannot run"));
    }

    #[tokio::test]
    async fn a_program_outliving_its_timeout_is_killed() {
        let error = run(1, &exec(&["/bin/sleep", "30"], 1), |_| {})
            .await
            .expect_err("timeout");
        assert!(error.contains("killed"), "{error}");
    }
}
