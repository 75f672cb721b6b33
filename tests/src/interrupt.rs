//! Ctrl-C and SIGTERM for the long-running tools (the lab, the chaos soak): a handler that sets
//! a flag their steps check, so that whatever they built is torn down by its owners' Drop
//! rather than left behind by an abrupt exit. A handler, not a blocked mask: children inherit a
//! blocked mask, and the daemons they start must see their SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set once SIGINT or SIGTERM arrived (after [`watch`]).
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the handler for SIGINT and SIGTERM; a failure is reported on stderr as `program`'s.
pub fn watch(program: &str) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(error) = unsafe { sigaction(signal, &action) } {
            eprintln!("{program}: cannot catch {signal}: {error}");
        }
    }
}
