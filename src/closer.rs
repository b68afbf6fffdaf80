//! Descriptors whose close waits on the kernel, closed on a thread of their own.
//!
//! Two kinds of descriptor make `close()` wait for a grace period of the kernel's, which
//! is 5-16 ms on these machines when idle and more under load:
//! - inotify ([`crate::wait::FileWatch`]): `fsnotify_destroy_group` flushes the mark
//!   reaper, an SRCU grace period, whoever's marks it holds.
//! - nf_tables netlink sockets ([`crate::components::nft::batch::Session`]): on release,
//!   nf_tables flushes its work that frees committed transactions (`nft_rcv_nl_event`
//!   calls `flush_work`, which waits out `synchronize_rcu`) whenever any namespace's
//!   commit is still waiting to be freed. Every commit queues one.
//!
//! Both were on bring-up's critical path: a worker's pods waited about 12 ms for the
//! subnet wait's inotify close, and each flannel agent about 12 ms for its nftables
//! socket's close before it wrote subnet.env. Nothing depends on these closes finishing
//! at once, so the caller hands the descriptor over and goes on.

use std::os::fd::OwnedFd;
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

/// Closes `fd` on the closer thread (started on first use); where that thread cannot be
/// had, here.
pub fn close_later(fd: OwnedFd) {
    static CLOSER: OnceLock<Option<Sender<OwnedFd>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("fd-closer".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    // Unsent (no closer thread), it is closed here as it is dropped.
    if let Some(tx) = closer {
        let _ = tx.send(fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::readable;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::time::Duration;

    /// A descriptor handed over is closed, on the closer thread: the other end of a
    /// socket pair reads end-of-file.
    #[test]
    fn a_descriptor_left_to_close_later_is_closed() {
        let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        close_later(theirs.into());
        assert!(
            readable(ours.as_fd(), Duration::from_secs(10)),
            "the closer thread never closed the descriptor"
        );
        assert_eq!(ours.read(&mut [0u8; 1]).unwrap(), 0, "end-of-file");
    }
}
