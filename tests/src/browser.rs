//! Headless Chromium in a lab host, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands in on fd 3, answers and events out on fd 4, each a JSON
//! message ending in a NUL byte): no port, no websocket, nothing for another process to reach.
//! It runs in the host's namespace, so `127.0.0.1` is that host's loopback.
//!
//! Waits are event-driven: [`Browser::wait_for`] evaluates a promise in the page that a
//! `MutationObserver` resolves as soon as the condition holds (or a timeout rejects), so a test
//! learns of a change when the page makes it, without polling. JavaScript exceptions thrown in
//! the page are collected ([`Browser::exceptions`]). The browser's process group is killed on
//! drop. The program is `$HAV_CHROMIUM`, else `chromium` (Debian's package).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::topology::Lab;

/// The viewport of every page (and so of every screenshot).
pub const WINDOW: (u32, u32) = (1280, 900);
/// How long a plain protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The DevTools pipe's file descriptors in the browser, as Chromium expects them.
const PIPE_IN: i32 = 3;
const PIPE_OUT: i32 = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrowserError {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("cannot start {program} (install Debian's chromium, or set HAV_CHROMIUM): {source}")]
    Spawn { program: String, source: io::Error },
    #[error("the browser went away (log: {log})")]
    Gone { log: String },
    #[error("{method}: {message}")]
    Protocol { method: String, message: String },
    #[error("timeout after {after:?}: {what}")]
    Timeout { what: String, after: Duration },
    #[error("{expression}: threw {message}")]
    Script { expression: String, message: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> BrowserError {
    let what = what.into();
    move |source| BrowserError::Io { what, source }
}

/// A headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    commands: File,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    log_path: PathBuf,
    exceptions: Vec<String>,
}

impl Browser {
    /// Starts Chromium in `host`'s namespace, its profile and log (`<name>.log`) under the lab's
    /// log dir, and opens one blank page of [`WINDOW`]'s size.
    pub fn start(lab: &Lab, host: &str, name: &str) -> Result<Browser, BrowserError> {
        let namespace = lab
            .host(host)
            .map_err(|e| BrowserError::Io {
                what: format!("host {host}"),
                source: io::Error::other(e.to_string()),
            })?
            .name()
            .to_owned();
        let profile = lab.log_dir().join(format!("{name}-profile"));
        fs::create_dir_all(&profile).map_err(io_error(format!("create {}", profile.display())))?;
        let log_path = lab.log_dir().join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(format!("open {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io_error("dup log"))?;

        // Ours: write commands, read answers. Theirs: read commands (fd 3), write answers (fd 4).
        let (their_in, our_out) = pipe()?;
        let (our_in, their_out) = pipe()?;
        let program = std::env::var("HAV_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &namespace, &program])
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--mute-audio",
                "--force-color-profile=srgb",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            // Nothing of the browser's lands in root's home.
            .env("HOME", &profile)
            .env("XDG_CONFIG_HOME", profile.join("config"))
            .env("XDG_CACHE_HOME", profile.join("cache"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        let (from, to) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        // SAFETY: between fork and exec the closure calls only fcntl and dup2 (async-signal-safe)
        // on descriptors the parent keeps open until spawn returns. Both are first copied above
        // fd 10, so placing one on 3 or 4 cannot clobber the other; dup2 clears close-on-exec.
        unsafe {
            command.pre_exec(move || {
                let high_in = libc::fcntl(from, libc::F_DUPFD, 10);
                let high_out = libc::fcntl(to, libc::F_DUPFD, 10);
                if high_in < 0
                    || high_out < 0
                    || libc::dup2(high_in, PIPE_IN) < 0
                    || libc::dup2(high_out, PIPE_OUT) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                libc::close(high_in);
                libc::close(high_out);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| BrowserError::Spawn {
            program: program.clone(),
            source,
        })?;
        drop((their_in, their_out));

        let (sender, messages) = mpsc::channel();
        let mut answers = File::from(our_in);
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut chunk = [0u8; 64 * 1024];
            loop {
                let read = match answers.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                pending.extend_from_slice(&chunk[..read]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let message: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(value) = serde_json::from_slice::<Value>(&message[..end])
                        && sender.send(value).is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut browser = Browser {
            child,
            commands: File::from(our_out),
            messages,
            next_id: 0,
            session: String::new(),
            log_path,
            exceptions: Vec::new(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": WINDOW.0, "height": WINDOW.1, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        Ok(browser)
    }

    /// Opens `url` and waits for its load event (redirects followed).
    pub fn navigate(&mut self, url: &str) -> Result<(), BrowserError> {
        let answer = self.call("Page.navigate", json!({ "url": url }))?;
        if let Some(error) = answer["errorText"].as_str().filter(|e| !e.is_empty()) {
            return Err(BrowserError::Protocol {
                method: format!("Page.navigate {url}"),
                message: error.to_owned(),
            });
        }
        self.wait_event("Page.loadEventFired", CALL_TIMEOUT)?;
        Ok(())
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value.
    pub fn evaluate(&mut self, expression: &str) -> Result<Value, BrowserError> {
        self.evaluate_within(expression, CALL_TIMEOUT)
    }

    fn evaluate_within(
        &mut self,
        expression: &str,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        let answer = self.call_within(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
            timeout,
        )?;
        if let Some(exception) = answer.get("exceptionDetails") {
            let message = exception["exception"]["description"]
                .as_str()
                .or(exception["text"].as_str())
                .unwrap_or("an exception")
                .to_owned();
            return Err(BrowserError::Script {
                expression: expression.to_owned(),
                message,
            });
        }
        Ok(answer["result"]["value"].clone())
    }

    /// Waits until the JavaScript `condition` holds in the page, re-checked on every DOM
    /// change; how long that took.
    pub fn wait_for(
        &mut self,
        condition: &str,
        timeout: Duration,
    ) -> Result<Duration, BrowserError> {
        let started = Instant::now();
        let millis = timeout.as_millis();
        let expression = format!(
            "new Promise((resolve) => {{
               const check = () => {{ try {{ return Boolean({condition}); }} catch (e) {{ return false; }} }};
               if (check()) {{ resolve(true); return; }}
               const observer = new MutationObserver(() => {{
                 if (check()) {{ observer.disconnect(); clearTimeout(timer); resolve(true); }}
               }});
               observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
               const timer = setTimeout(() => {{ observer.disconnect(); resolve(check()); }}, {millis});
             }})"
        );
        match self.evaluate_within(&expression, timeout + CALL_TIMEOUT)? {
            Value::Bool(true) => Ok(started.elapsed()),
            _ => Err(BrowserError::Timeout {
                what: condition.to_owned(),
                after: timeout,
            }),
        }
    }

    /// The text of the first element matching `selector` (`None` when there is none).
    pub fn text(&mut self, selector: &str) -> Result<Option<String>, BrowserError> {
        let selector = serde_json::to_string(selector).unwrap_or_default();
        let value = self.evaluate(&format!(
            "(() => {{ const e = document.querySelector({selector}); return e ? e.textContent : null; }})()"
        ))?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Clicks the first element matching `selector`.
    pub fn click(&mut self, selector: &str) -> Result<(), BrowserError> {
        let quoted = serde_json::to_string(selector).unwrap_or_default();
        let found = self.evaluate(&format!(
            "(() => {{ const e = document.querySelector({quoted}); if (!e) return false; e.click(); return true; }})()"
        ))?;
        if found != Value::Bool(true) {
            return Err(BrowserError::Script {
                expression: format!("click {selector}"),
                message: "no such element".into(),
            });
        }
        Ok(())
    }

    /// Writes a PNG of the viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }))?;
        let data = shot["data"].as_str().unwrap_or_default();
        let png = (base64::engine::general_purpose::STANDARD.decode(data)).map_err(|error| {
            BrowserError::Protocol {
                method: "Page.captureScreenshot".into(),
                message: format!("the image is not base64: {error}"),
            }
        })?;
        fs::write(path, png).map_err(io_error(format!("write {}", path.display())))
    }

    /// Exceptions thrown in the page so far.
    pub fn exceptions(&self) -> &[String] {
        &self.exceptions
    }

    /// The browser's own output.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.call_within(method, params, CALL_TIMEOUT)
    }

    fn call_within(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.commands.write_all(&bytes).map_err(|_| self.gone())?;
        let answer = self.receive(timeout, method, |m| m["id"] == id)?;
        if let Some(error) = answer.get("error") {
            return Err(BrowserError::Protocol {
                method: method.to_owned(),
                message: error["message"].as_str().unwrap_or("error").to_owned(),
            });
        }
        Ok(answer["result"].clone())
    }

    fn wait_event(&mut self, method: &str, timeout: Duration) -> Result<Value, BrowserError> {
        self.receive(timeout, method, |m| m["method"] == method)
    }

    /// The next message that `wanted` accepts; events on the way are noted.
    fn receive(
        &mut self,
        timeout: Duration,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Value, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(BrowserError::Timeout {
                        what: what.to_owned(),
                        after: timeout,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(self.gone()),
            };
            if message["method"] == "Runtime.exceptionThrown" {
                let details = &message["params"]["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("exception")
                    .to_owned();
                self.exceptions.push(text);
            }
            if wanted(&message) {
                return Ok(message);
            }
        }
    }

    fn gone(&self) -> BrowserError {
        BrowserError::Gone {
            log: self.log_path.display().to_string(),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: the browser, its zygote, renderers and utility processes.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), BrowserError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| BrowserError::Io {
        what: "pipe2".into(),
        source: io::Error::from(e),
    })
}
