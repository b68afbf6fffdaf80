//! Descriptors whose close, and children whose reaping, wait on the kernel: released on a
//! thread of their own.
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
//!
//! Reaping a child (`wait`) frees its /proc entries: the kernel walks every dentry looked
//! up under them (`proc_invalidate_siblings_dcache`, `shrink_dcache_parent`), and the CNI
//! plugins look up their own threads' entries. That took the simulator's thread 0.5 to
//! 10 ms per bring-up, after the election, while it waited for the plugins' results. The
//! result and exit status are read first without reaping
//! ([`crate::netns::process::output_reaping_later`]); the reaping itself is left here.

use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::mpsc::{channel, Sender};
use std::sync::OnceLock;

/// What the closer thread releases.
enum Release {
    Fd(OwnedFd),
    /// A child that has exited (its status already read): the thread reaps it.
    Child(Child),
}

impl Release {
    fn release(self) {
        match self {
            Release::Fd(fd) => drop(fd),
            Release::Child(mut child) => {
                let _ = child.wait();
            }
        }
    }
}

/// Releases `what` on the closer thread (started on first use); where that thread cannot
/// be had, here.
fn release_later(what: Release) {
    static CLOSER: OnceLock<Option<Sender<Release>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (tx, rx) = channel::<Release>();
        std::thread::Builder::new()
            .name("fd-closer".into())
            .spawn(move || rx.into_iter().for_each(Release::release))
            .ok()
            .map(|_| tx)
    });
    match closer {
        Some(tx) => {
            if let Err(unsent) = tx.send(what) {
                unsent.0.release();
            }
        }
        None => what.release(),
    }
}

/// Closes `fd` on the closer thread; where that thread cannot be had, here.
pub fn close_later(fd: OwnedFd) {
    release_later(Release::Fd(fd));
}

/// Reaps `child`, which has exited, on the closer thread; where that thread cannot be
/// had, here.
pub fn reap_later(child: Child) {
    release_later(Release::Child(child));
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

    /// A child handed over is reaped, on the closer thread: its pid soon names no child
    /// of ours (waitpid says ECHILD).
    #[test]
    fn a_child_left_to_reap_later_is_reaped() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        // Exited, its status read without reaping: it stays a zombie until reaped.
        let flags = nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT;
        nix::sys::wait::waitid(nix::sys::wait::Id::Pid(pid), flags).unwrap();
        reap_later(child);
        let reaped = (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            nix::sys::wait::waitid(nix::sys::wait::Id::Pid(pid), flags)
                == Err(nix::errno::Errno::ECHILD)
        });
        assert!(reaped, "the closer thread never reaped the child");
    }
}
