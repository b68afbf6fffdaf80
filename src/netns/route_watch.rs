//! IPv4 route changes inside a named namespace, from the kernel's own announcements: a
//! netlink socket opened inside the namespace and subscribed to RTNLGRP_IPV4_ROUTE (what
//! `ip monitor route` listens to). A readiness wait sleeps on it ([`crate::wait::Wake`])
//! instead of dumping the routes every few milliseconds; the wait's check still reads
//! the routes itself, so an announcement is only ever a reason to look again.

use anyhow::{Context, Result};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};
use std::cell::RefCell;
use std::os::fd::AsFd;
use std::time::Duration;

/// Route announcements of one namespace at a time: [`RouteWatch::listen`] moves it to the
/// namespace a wait looks at now (the others' announcements would only wake it for
/// nothing).
#[derive(Default)]
pub struct RouteWatch {
    socket: RefCell<Option<(String, Socket)>>,
}

impl RouteWatch {
    pub fn new() -> RouteWatch {
        RouteWatch::default()
    }

    /// From now on, wakes on route changes in namespace `ns`. Call it before reading
    /// the routes, so that no change made after the read goes unannounced.
    pub fn listen(&self, ns: &str) -> Result<()> {
        let mut current = self.socket.borrow_mut();
        if current.as_ref().is_some_and(|(n, _)| n == ns) {
            return Ok(());
        }
        let socket = super::run_in(ns, subscribe)
            .with_context(|| format!("watching the routes of namespace '{ns}'"))?;
        *current = Some((ns.to_string(), socket));
        Ok(())
    }
}

/// A netlink socket of this thread's namespace subscribed to IPv4 route changes.
fn subscribe() -> Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    // Unbound, it keeps port id 0, the kernel's own, and the kernel skips the sender's
    // port when it announces: no announcement would arrive.
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .add_membership(libc::RTNLGRP_IPV4_ROUTE)
        .context("subscribing to IPv4 route changes")?;
    // An overrun only means "something changed": the check reads the routes anyway.
    socket
        .set_no_enobufs(true)
        .context("setting NETLINK_NO_ENOBUFS")?;
    socket
        .set_non_blocking(true)
        .context("making the netlink socket non-blocking")?;
    Ok(socket)
}

impl crate::wait::Wake for RouteWatch {
    fn sleep(&self, timeout: Duration) -> bool {
        let current = self.socket.borrow();
        let Some((_, socket)) = current.as_ref() else {
            std::thread::sleep(timeout);
            return false;
        };
        if !crate::wait::readable(socket.as_fd(), timeout) {
            return false;
        }
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            if !socket.recv(&mut buf, 0).is_ok_and(|n| n > 0) {
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::Wake;

    #[test]
    fn a_missing_namespace_is_named() {
        let e = RouteWatch::new().listen("knetsim-no-such-ns").unwrap_err();
        assert!(format!("{e:#}").contains("knetsim-no-such-ns"), "{e:#}");
    }

    #[test]
    fn without_a_namespace_it_sleeps_the_whole_timeout() {
        let w = RouteWatch::new();
        assert!(!w.sleep(Duration::from_millis(1)));
    }
}
