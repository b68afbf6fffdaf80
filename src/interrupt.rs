//! Ctrl-C and SIGTERM: a handler that only records which signal arrived. A running `exec`
//! ends its command when it sees it; a wait gives up; a script stops between statements;
//! the simulator then tears down as usual. Nothing is ever killed from inside the handler.
//!
//! Ctrl-C stops what runs now (the console goes on afterwards); SIGTERM asks the whole
//! run to end, so it stays set once it arrived and everything after it stops too.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A signal waits to be handled (commands poll this flag to end early).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Which signal that is: SIGINT or SIGTERM.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// A SIGTERM arrived: the run ends (never cleared).
static TERMINATED: AtomicBool = AtomicBool::new(false);

/// Which signal stopped something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT, from Ctrl-C at the terminal.
    Interrupt,
    /// SIGTERM, e.g. from `kill PID` or a container runtime stopping the run.
    Terminate,
}

impl Signal {
    /// What the user is told: "interrupted (Ctrl-C)" or "terminated (SIGTERM)".
    pub fn describe(self) -> &'static str {
        match self {
            Signal::Interrupt => "interrupted (Ctrl-C)",
            Signal::Terminate => "terminated (SIGTERM)",
        }
    }

    /// The shell's convention: 128 + the signal's number.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 128 + libc::SIGINT,
            Signal::Terminate => 128 + libc::SIGTERM,
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGTERM {
        TERMINATED.store(true, Ordering::SeqCst);
        PENDING.store(sig, Ordering::SeqCst);
    } else {
        // A Ctrl-C never hides a SIGTERM that is still to be handled.
        let _ = PENDING.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let on = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &on) };
    }
}

/// The flag commands poll: set while a signal waits, and for good once SIGTERM arrived.
pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

/// True while a signal waits to be handled, and for good once SIGTERM arrived.
pub fn is_set() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// True once SIGTERM arrived: the run is ending.
pub fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

/// Reads and clears the pending signal (a SIGTERM stays in force, see [`terminated`]).
pub fn take_signal() -> Option<Signal> {
    let terminated = TERMINATED.load(Ordering::SeqCst);
    let was_set = INTERRUPTED.swap(terminated, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if terminated {
        Some(Signal::Terminate)
    } else if was_set || pending != 0 {
        Some(Signal::Interrupt)
    } else {
        None
    }
}

/// Reads and clears the pending signal; true when there was one.
pub fn take() -> bool {
    take_signal().is_some()
}

/// Acts as if Ctrl-C was pressed (tests, and code that stops a run on purpose).
pub fn raise() {
    on_signal(libc::SIGINT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_described_with_the_shells_exit_codes() {
        assert_eq!(Signal::Interrupt.exit_code(), 130);
        assert_eq!(Signal::Terminate.exit_code(), 143);
        assert_eq!(Signal::Interrupt.describe(), "interrupted (Ctrl-C)");
        assert_eq!(Signal::Terminate.describe(), "terminated (SIGTERM)");
    }
}
