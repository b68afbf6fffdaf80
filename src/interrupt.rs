//! Ctrl-C and SIGTERM: a handler that only records which signal arrived. A running `exec`
//! ends its command when it sees it; a wait gives up; a script stops between statements;
//! the simulator then tears down as usual. Nothing is ever killed from inside the handler.
//!
//! Ctrl-C stops what runs now (the console goes on afterwards); SIGTERM asks the whole
//! run to end, so it stays set once it arrived and everything after it stops too. SIGHUP
//! (the terminal closed: a window shut, an SSH connection lost) ends the run as SIGTERM
//! does; left to its default it killed knetsim and left every namespace and daemon of
//! the run behind.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A signal waits to be handled (commands poll this flag to end early).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Which signal that is: SIGINT or SIGTERM.
static PENDING: AtomicI32 = AtomicI32::new(0);
/// A SIGTERM (or SIGHUP) arrived: the run ends (never cleared).
static TERMINATED: AtomicBool = AtomicBool::new(false);
/// The terminal hung up (SIGHUP).
static HUNG_UP: AtomicBool = AtomicBool::new(false);

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
    if sig == libc::SIGHUP {
        // The terminal is gone and writing to it fails, which would make the teardown's
        // messages panic: from now on they go nowhere. open and dup2 are async-signal-safe.
        // SAFETY: a constant C string, and descriptors this call opens or replaces.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if null >= 0 {
                for fd in 0..=2 {
                    libc::dup2(null, fd);
                }
                if null > 2 {
                    libc::close(null);
                }
            }
        }
        HUNG_UP.store(true, Ordering::SeqCst);
    }
    if sig == libc::SIGTERM || sig == libc::SIGHUP {
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
    use nix::sys::signal::{SIGHUP, SIGINT, SIGTERM};
    let on = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // SAFETY: the handler stores to atomics and, for SIGHUP, opens /dev/null and dup2s
        // it; all of it is async-signal-safe.
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

/// True once SIGTERM (or SIGHUP) arrived: the run is ending.
pub fn terminated() -> bool {
    TERMINATED.load(Ordering::SeqCst)
}

/// True once the terminal hung up (SIGHUP).
pub fn hung_up() -> bool {
    HUNG_UP.load(Ordering::SeqCst)
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
