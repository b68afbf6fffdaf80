//! Changes inside a named namespace, from the kernel's own announcements: a netlink
//! socket opened inside the namespace and subscribed to one multicast group, IPv4 routes
//! (RTNLGRP_IPV4_ROUTE, what `ip monitor route` listens to), links (RTNLGRP_LINK, `ip
//! monitor link`) or nf_tables (NFNLGRP_NFTABLES, what `nft monitor` listens to). A
//! readiness wait sleeps on it ([`crate::wait::Wake`]) instead of reading the routes or
//! the ruleset every few milliseconds; the wait's check still reads them itself, so an
//! announcement is only ever a reason to look again.

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
    /// Links added, changed or removed (a device an agent waits for).
    Links,
    /// Any nf_tables change: tables, chains, rules, sets, elements (kube-proxy's).
    Nftables,
}

impl Topic {
    fn describe(self) -> &'static str {
        match self {
            Topic::Ipv4Routes => "the routes",
            Topic::Links => "the links",
            Topic::Nftables => "the nftables ruleset",
        }
    }
}

/// Announcements of one namespace at a time: [`Announcements::listen`] moves it to the
/// namespace a wait looks at now (the others' announcements would only wake it for
/// nothing).
pub struct Announcements {
    topic: Topic,
    /// Only nf_tables announcements about this table wake the watch.
    table: Option<Table>,
    socket: RefCell<Option<(String, Socket)>>,
}

/// An nf_tables table: its family (`NFPROTO_*`, 2 for `ip`) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    family: u8,
    name: String,
}

/// The namespace name [`Announcements::listen_here`] stands under.
const HERE: &str = "";

impl Announcements {
    /// IPv4 route changes.
    pub fn routes() -> Announcements {
        Announcements::on(Topic::Ipv4Routes)
    }

    /// Links appearing, changing or going away.
    pub fn links() -> Announcements {
        Announcements::on(Topic::Links)
    }

    /// nf_tables changes (any table of the namespace).
    pub fn nftables() -> Announcements {
        Announcements::on(Topic::Nftables)
    }

    /// nf_tables changes to the IPv4 table `name` only: another program's commits in the
    /// same namespace (flanneld's masquerade rules beside kube-proxy's table) do not wake it.
    pub fn nftables_table(name: &str) -> Announcements {
        Announcements {
            topic: Topic::Nftables,
            table: Some(Table {
                family: libc::NFPROTO_IPV4 as u8,
                name: name.to_string(),
            }),
            socket: RefCell::new(None),
        }
    }

    fn on(topic: Topic) -> Announcements {
        Announcements {
            topic,
            table: None,
            socket: RefCell::new(None),
        }
    }

    /// From now on, wakes on changes in this thread's own namespace (an agent started
    /// inside its node's).
    pub fn listen_here(&self) -> Result<()> {
        let socket = subscribe(self.topic)
            .with_context(|| format!("watching {} of this namespace", self.topic.describe()))?;
        self.replace(Some((HERE.to_string(), socket)));
        Ok(())
    }

    /// Takes every announcement waiting, without blocking: whether one of them concerns
    /// what this watch is for.
    fn take(&self) -> bool {
        let current = self.socket.borrow();
        let Some((_, socket)) = current.as_ref() else {
            return false;
        };
        let mut relevant = false;
        let mut buf = Vec::with_capacity(16 * 1024);
        loop {
            buf.clear();
            match socket.recv(&mut buf, 0) {
                Ok(n) if n > 0 => {
                    relevant |= match &self.table {
                        None => true,
                        Some(t) => concerns_table(&buf[..n.min(buf.len())], t),
                    }
                }
                // Would block (all taken) or an overrun: an overrun may have dropped one
                // that mattered, so it counts as a change.
                Ok(_) => return relevant,
                Err(e) => return relevant || e.raw_os_error() == Some(libc::ENOBUFS),
            }
        }
    }

    /// From now on, wakes on changes in namespace `ns`. Call it before reading what the
    /// wait checks, so that no change made after the read goes unannounced.
    pub fn listen(&self, ns: &str) -> Result<()> {
        let current = self.socket.borrow();
        if current.as_ref().is_some_and(|(n, _)| n == ns) {
            return Ok(());
        }
        drop(current);
        let topic = self.topic;
        let socket = super::run_in(ns, move || subscribe(topic))
            .with_context(|| format!("watching {} of namespace '{ns}'", topic.describe()))?;
        self.replace(Some((ns.to_string(), socket)));
        Ok(())
    }

    /// Puts `next` in place of the current socket, which is closed (see [`close`]).
    fn replace(&self, next: Option<(String, Socket)>) {
        let old = std::mem::replace(&mut *self.socket.borrow_mut(), next);
        if let Some((_, socket)) = old {
            close(self.topic, socket);
        }
    }
}

impl Drop for Announcements {
    fn drop(&mut self) {
        self.replace(None);
    }
}

/// Closes a subscription. An nf_tables one is closed on [`crate::closer`]'s thread:
/// closing a netfilter socket waits out the kernel's freeing of recent nf_tables commits
/// while holding its namespace's commit lock, which a worker's next veth and its agents'
/// commits need (a bring-up wait ending would have held them up).
fn close(topic: Topic, socket: Socket) {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    if topic == Topic::Nftables {
        // SAFETY: into_raw_fd gives up the socket's only ownership of the descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) };
        crate::closer::close_later(fd);
    }
}

/// A netlink socket of this thread's namespace subscribed to `topic`'s announcements.
fn subscribe(topic: Topic) -> Result<Socket> {
    let (protocol, group) = match topic {
        Topic::Ipv4Routes => (NETLINK_ROUTE, libc::RTNLGRP_IPV4_ROUTE),
        Topic::Links => (NETLINK_ROUTE, libc::RTNLGRP_LINK),
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

/// nf_tables announcements carry their table in attribute 1 of every message about a
/// table or what it holds (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
/// NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE, ...). `buf` holds one or more
/// netlink messages; whether one of them is about `table`. A commit's closing NEWGEN
/// message names no table and so never matches.
fn concerns_table(buf: &[u8], table: &Table) -> bool {
    const NLMSG_HDRLEN: usize = 16;
    const NFGENMSG_LEN: usize = 4;
    const NFNL_SUBSYS_NFTABLES: u16 = 10;
    const NFT_MSG_NEWGEN: u16 = 15;
    const TABLE_ATTR: u16 = 1;
    let align = |n: usize| (n + 3) & !3;
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return false;
        }
        let msg = &rest[..len];
        let kind = u16_at(msg, 4);
        let body = &msg[NLMSG_HDRLEN..];
        if kind >> 8 == NFNL_SUBSYS_NFTABLES
            && kind & 0xff != NFT_MSG_NEWGEN
            && body.len() >= NFGENMSG_LEN
            && body[0] == table.family
        {
            let mut attrs = &body[NFGENMSG_LEN..];
            while attrs.len() >= 4 {
                let alen = u16_at(attrs, 0) as usize;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                // The top bits flag nesting and byte order, not the type.
                if u16_at(attrs, 2) & 0x3fff == TABLE_ATTR {
                    let name = &attrs[4..alen];
                    let name = name.strip_suffix(&[0]).unwrap_or(name);
                    if name == table.name.as_bytes() {
                        return true;
                    }
                    break;
                }
                attrs = &attrs[align(alen).min(attrs.len())..];
            }
        }
        rest = &rest[align(len).min(rest.len())..];
    }
    false
}

impl crate::wait::Wake for Announcements {
    fn sleep(&self, timeout: Duration) -> bool {
        {
            let current = self.socket.borrow();
            let Some((_, socket)) = current.as_ref() else {
                std::thread::sleep(timeout);
                return false;
            };
            if !crate::wait::readable(socket.as_fd(), timeout) {
                return false;
            }
        }
        self.take()
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

    /// One nf_tables netlink message: header, nfgenmsg of `family`, then `attrs` (type, value).
    fn nft_message(msg: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (kind, value) in attrs {
            body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(value);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((10u16 << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    fn kube_proxy() -> Table {
        Table {
            family: 2,
            name: "kube-proxy".into(),
        }
    }

    const NEWCHAIN: u16 = 3;
    const NEWSETELEM: u16 = 12;
    const NEWGEN: u16 = 15;

    #[test]
    fn a_message_about_the_table_concerns_it_after_other_messages() {
        let mut batch = nft_message(NEWCHAIN, 2, &[(1, b"flannel\0"), (3, b"x\0")]);
        assert!(!concerns_table(&batch, &kube_proxy()));
        // The table attribute after another one, nested flag set on neither.
        batch.extend(nft_message(
            NEWSETELEM,
            2,
            &[(2, b"service-ips\0"), (1, b"kube-proxy\0")],
        ));
        assert!(concerns_table(&batch, &kube_proxy()));
    }

    #[test]
    fn another_table_family_or_the_commit_end_does_not_concern_it() {
        for m in [
            nft_message(NEWCHAIN, 2, &[(1, b"kube-proxy-x\0")]),
            nft_message(NEWCHAIN, 10, &[(1, b"kube-proxy\0")]),
            nft_message(NEWGEN, 2, &[(1, &7u32.to_be_bytes())]),
            // Cut short: its length runs past the buffer.
            nft_message(NEWCHAIN, 2, &[(1, b"kube-proxy\0")])[..20].to_vec(),
        ] {
            assert!(!concerns_table(&m, &kube_proxy()), "{m:?}");
        }
    }

    #[test]
    fn without_a_namespace_it_sleeps_the_whole_timeout() {
        let w = Announcements::routes();
        assert!(!w.sleep(Duration::from_millis(1)));
    }
}
