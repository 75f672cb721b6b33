//! The signals the agent handles, delivered to the loop as one typed channel.
//!
//! One task waits on every signal stream and forwards what arrives, so the loop polls a single
//! receiver per wake-up instead of every stream. Guarantees: each stream is registered with the
//! kernel when [`Signals::install`] returns (a signal sent after that is delivered, not acted on
//! by its default disposition); signals reach the loop in the order the task saw them; none that
//! an operator or systemd may send ends the agent uncleanly (the ones that mean nothing to it are
//! in [`IGNORED_SIGNALS`], logged and ignored).

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What a signal asks of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// SIGTERM, SIGINT or SIGQUIT (named): a graceful stop (a second one ends drains at once).
    Stop(&'static str),
    /// SIGHUP: reload the config file.
    Reload,
    /// SIGUSR1: log the status.
    Status,
    /// SIGUSR2: log the statistics (keepalived's stats dump).
    Statistics,
    /// A signal that means nothing to the agent (named).
    Ignored(&'static str),
}

/// Signals whose default action would end the agent and that mean nothing to it: logged and
/// ignored.
const IGNORED_SIGNALS: [(&str, libc::c_int); 5] = [
    ("SIGALRM", libc::SIGALRM),
    ("SIGPWR", libc::SIGPWR),
    ("SIGIO", libc::SIGIO),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
];

/// Every signal the agent acts on or ignores on purpose; a parent may have left them blocked
/// (the mask survives exec), so `main` unblocks them before the runtime starts.
pub const HANDLED_SIGNALS: [libc::c_int; 11] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGPWR,
    libc::SIGIO,
    libc::SIGVTALRM,
    libc::SIGPROF,
];

/// The installed handlers; the forwarding task stops when this is dropped.
pub struct Signals {
    received: mpsc::UnboundedReceiver<Received>,
    task: JoinHandle<()>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Signals {
    /// Registers every handled signal now, then forwards them from a task of the runtime.
    pub fn install() -> std::io::Result<Self> {
        let streams = Streams {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hangup: signal(SignalKind::hangup())?,
            status: signal(SignalKind::user_defined1())?,
            stats: signal(SignalKind::user_defined2())?,
            ignored: (IGNORED_SIGNALS.iter())
                .map(|&(name, number)| Ok((name, signal(SignalKind::from_raw(number))?)))
                .collect::<std::io::Result<_>>()?,
        };
        let (sender, received) = mpsc::unbounded_channel();
        let task = tokio::spawn(streams.forward(sender));
        Ok(Self { received, task })
    }

    /// The next signal; never resolves once the forwarding task is gone.
    pub async fn recv(&mut self) -> Received {
        match self.received.recv().await {
            Some(received) => received,
            None => std::future::pending().await,
        }
    }
}

struct Streams {
    terminate: Signal,
    interrupt: Signal,
    quit: Signal,
    hangup: Signal,
    status: Signal,
    stats: Signal,
    ignored: Vec<(&'static str, Signal)>,
}

impl Streams {
    async fn forward(mut self, sender: mpsc::UnboundedSender<Received>) {
        loop {
            let received = tokio::select! {
                biased;
                _ = self.terminate.recv() => Received::Stop("SIGTERM"),
                _ = self.interrupt.recv() => Received::Stop("SIGINT"),
                _ = self.quit.recv() => Received::Stop("SIGQUIT"),
                _ = self.hangup.recv() => Received::Reload,
                _ = self.status.recv() => Received::Status,
                _ = self.stats.recv() => Received::Statistics,
                name = next_ignored(&mut self.ignored) => Received::Ignored(name),
            };
            if sender.send(received).is_err() {
                return;
            }
        }
    }
}

/// The next of `ignored` to arrive.
async fn next_ignored(ignored: &mut [(&'static str, Signal)]) -> &'static str {
    std::future::poll_fn(|cx| {
        for (name, signal) in ignored.iter_mut() {
            if signal.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready(*name);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raises `number` at this process; its handler is installed, so nothing else happens.
    fn raise(number: libc::c_int) {
        // SAFETY: raise(3) has no preconditions; every signal raised here has a handler.
        assert_eq!(unsafe { libc::raise(number) }, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn each_handled_signal_arrives_as_what_it_asks() {
        let mut signals = Signals::install().expect("signal handlers");
        let cases = [
            (libc::SIGHUP, Received::Reload),
            (libc::SIGUSR1, Received::Status),
            (libc::SIGUSR2, Received::Statistics),
            (libc::SIGALRM, Received::Ignored("SIGALRM")),
            (libc::SIGPWR, Received::Ignored("SIGPWR")),
            (libc::SIGQUIT, Received::Stop("SIGQUIT")),
        ];
        for (number, expected) in cases {
            raise(number);
            assert_eq!(signals.recv().await, expected);
        }
    }
}
