//! Changes inside a named namespace, from the kernel's own announcements: a netlink
//! socket opened inside the namespace and subscribed to one multicast group, IPv4 routes
//! (RTNLGRP_IPV4_ROUTE, what `ip monitor route` listens to) or nf_tables (NFNLGRP_NFTABLES,
//! what `nft monitor` listens to). A readiness wait sleeps on it ([`crate::wait::Wake`])
//! instead of reading the routes or the ruleset every few milliseconds; the wait's check
//! still reads them itself, so an announcement is only ever a reason to look again.

use anyhow::{Context, Result};
use rtnetlink::sys::{
    protocols::{NETLINK_NETFILTER, NETLINK_ROUTE},
    Socket,
};
use std::cell::RefCell;
use std::os::fd::AsFd;
use std::time::Duration;

/// What a watch hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    /// IPv4 routes added, replaced or removed (the overlay's readiness).
    Ipv4Routes,
    /// Any nf_tables change: tables, chains, rules, sets, elements (kube-proxy's).
    Nftables,
}

impl Topic {
    fn describe(self) -> &'static str {
        match self {
            Topic::Ipv4Routes => "the routes",
            Topic::Nftables => "the nftables ruleset",
        }
    }
}

/// Announcements of one namespace at a time: [`Announcements::listen`] moves it to the
/// namespace a wait looks at now (the others' announcements would only wake it for
/// nothing).
pub struct Announcements {
    topic: Topic,
    socket: RefCell<Option<(String, Socket)>>,
}

impl Announcements {
    /// IPv4 route changes.
    pub fn routes() -> Announcements {
        Announcements::on(Topic::Ipv4Routes)
    }

    /// nf_tables changes (any table of the namespace).
    pub fn nftables() -> Announcements {
        Announcements::on(Topic::Nftables)
    }

    fn on(topic: Topic) -> Announcements {
        Announcements {
            topic,
            socket: RefCell::new(None),
        }
    }

    /// From now on, wakes on changes in namespace `ns`. Call it before reading what the
    /// wait checks, so that no change made after the read goes unannounced.
    pub fn listen(&self, ns: &str) -> Result<()> {
        let mut current = self.socket.borrow_mut();
        if current.as_ref().is_some_and(|(n, _)| n == ns) {
            return Ok(());
        }
        let topic = self.topic;
        let socket = super::run_in(ns, move || subscribe(topic))
            .with_context(|| format!("watching {} of namespace '{ns}'", topic.describe()))?;
        *current = Some((ns.to_string(), socket));
        Ok(())
    }
}

/// A netlink socket of this thread's namespace subscribed to `topic`'s announcements.
fn subscribe(topic: Topic) -> Result<Socket> {
    let (protocol, group) = match topic {
        Topic::Ipv4Routes => (NETLINK_ROUTE, libc::RTNLGRP_IPV4_ROUTE),
        Topic::Nftables => (NETLINK_NETFILTER, libc::NFNLGRP_NFTABLES as u32),
    };
    let mut socket = Socket::new(protocol).context("opening a netlink socket")?;
    // Unbound, it keeps port id 0, the kernel's own, and the kernel skips the sender's
    // port when it announces: no announcement would arrive.
    socket.bind_auto().context("binding the netlink socket")?;
    socket
        .add_membership(group)
        .with_context(|| format!("subscribing to changes of {}", topic.describe()))?;
    // An overrun only means "something changed": the check reads for itself anyway.
    socket
        .set_no_enobufs(true)
        .context("setting NETLINK_NO_ENOBUFS")?;
    socket
        .set_non_blocking(true)
        .context("making the netlink socket non-blocking")?;
    Ok(socket)
}

impl crate::wait::Wake for Announcements {
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
        let e = Announcements::routes()
            .listen("knetsim-no-such-ns")
            .unwrap_err();
        assert!(format!("{e:#}").contains("knetsim-no-such-ns"), "{e:#}");
    }

    #[test]
    fn without_a_namespace_it_sleeps_the_whole_timeout() {
        let w = Announcements::routes();
        assert!(!w.sleep(Duration::from_millis(1)));
    }
}
