//! Ctrl-C: a SIGINT handler that only raises a flag. A running `exec` ends its command
//! when it sees the flag; a script stops between statements; the simulator then tears
//! down as usual. Nothing is ever killed from inside the handler.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn install() {
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigint as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

pub fn flag() -> &'static AtomicBool {
    &INTERRUPTED
}

pub fn is_set() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Reads and clears the flag.
pub fn take() -> bool {
    INTERRUPTED.swap(false, Ordering::SeqCst)
}

pub fn raise() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}
