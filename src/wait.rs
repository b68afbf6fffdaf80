//! The one wait every readiness check uses (etcd healthy, subnet.env written, overlay
//! routes, kube-proxy programmed, Skupper links, nginx and echo servers listening).
//!
//! A check says `Ready(value)`, `Pending(what it sees now)`, or fails (an agent died:
//! no point waiting on). Between checks the wait sleeps in slices of at most
//! [`SLICE`], so Ctrl-C or SIGTERM ends it within about that long; on timeout the error
//! names what was awaited and what was seen last, so the learner knows where to look.
//!
//! Where the kernel announces a change (a file written: inotify, [`FileWatch`]; a route
//! added: netlink, [`crate::netns::route_watch::Announcements`]), the wait sleeps on that
//! instead ([`Wait::wake_on`]) and checks when it fires; `every` is then only the
//! fallback for what the event does not cover (an agent that died meanwhile).

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest a wait sleeps without looking at the interrupt flag.
pub const SLICE: Duration = Duration::from_millis(50);

/// What a check saw.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the text says what it looks like now ("1 of 2 endpoints").
    Pending(String),
}

/// How a wait ended without its condition.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {} waiting for {what} (last seen: {last}){}", seconds(*.after), hint_text(.hint))]
    TimedOut {
        what: String,
        after: Duration,
        last: String,
        hint: Option<String>,
    },
    #[error("interrupted while waiting for {what}")]
    Interrupted { what: String },
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn hint_text(h: &Option<String>) -> String {
    h.as_ref().map(|h| format!("; {h}")).unwrap_or_default()
}

/// A readiness wait: build it with [`Wait::new`], then call [`Wait::until`].
pub struct Wait<'a> {
    what: String,
    timeout: Duration,
    every: Duration,
    hint: Option<Box<dyn FnOnce() -> String + 'a>>,
    cancel: Option<&'a AtomicBool>,
    stop: Option<&'a AtomicBool>,
    wake: Option<&'a dyn Wake>,
}

/// A kernel announcement a wait can sleep on instead of polling.
pub trait Wake {
    /// Sleeps until something happened (true) or `timeout` passed; forgets what happened
    /// (the wait's check looks for itself).
    fn sleep(&self, timeout: Duration) -> bool;
}

/// Sleeps until `fd` has input (true) or `timeout` passed: the common part of every
/// [`Wake`] built on a file descriptor.
pub fn readable(fd: BorrowedFd, timeout: Duration) -> bool {
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0)
}

/// Files appearing or being written in one directory, or appends to one file (inotify), as
/// a wake-up for a wait.
pub struct FileWatch {
    /// Always `Some` until dropped (see the `Drop` impl).
    inotify: Option<Inotify>,
}

impl FileWatch {
    /// Watches directory `dir` for files created, moved in or closed after writing.
    pub fn dir(dir: &Path) -> anyhow::Result<FileWatch> {
        FileWatch::on(
            dir,
            AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
    }

    /// Watches file `path` for appends (a daemon's log, which it keeps open).
    pub fn appends(path: &Path) -> anyhow::Result<FileWatch> {
        FileWatch::on(path, AddWatchFlags::IN_MODIFY)
    }

    fn on(path: &Path, events: AddWatchFlags) -> anyhow::Result<FileWatch> {
        use anyhow::Context;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("starting inotify")?;
        inotify
            .add_watch(path, events)
            .with_context(|| format!("watching {}", path.display()))?;
        Ok(FileWatch {
            inotify: Some(inotify),
        })
    }

    fn inotify(&self) -> &Inotify {
        self.inotify
            .as_ref()
            .expect("a FileWatch keeps its inotify until dropped")
    }
}

impl Wake for FileWatch {
    fn sleep(&self, timeout: Duration) -> bool {
        let inotify = self.inotify();
        if !readable(inotify.as_fd(), timeout) {
            return false;
        }
        while inotify.read_events().is_ok_and(|e| !e.is_empty()) {}
        true
    }
}

/// Closing an inotify descriptor waits for a grace period of the kernel's (see
/// [`crate::closer`]); a wait that has just seen its file must not pay that before its
/// caller goes on.
impl Drop for FileWatch {
    fn drop(&mut self) {
        if let Some(inotify) = self.inotify.take() {
            crate::closer::close_later(inotify.into());
        }
    }
}

impl<'a> Wait<'a> {
    /// `what` completes "waiting for ...": "etcd of C0 to elect a leader".
    pub fn new(what: impl Into<String>, timeout: Duration) -> Wait<'a> {
        Wait {
            what: what.into(),
            timeout,
            every: Duration::from_millis(20),
            hint: None,
            cancel: None,
            stop: None,
            wake: None,
        }
    }

    /// Time between checks (default 20 ms). Long intervals are still slept in slices.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Extra advice added to the timeout message (e.g. the log to read, its last lines),
    /// computed only when the wait times out.
    pub fn hint(mut self, hint: impl FnOnce() -> String + 'a) -> Self {
        self.hint = Some(Box::new(hint));
        self
    }

    /// Ends the wait when `flag` is set instead of on Ctrl-C (for tests).
    pub fn cancel_on(mut self, flag: &'a AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Also ends the wait (as interrupted) when `flag` is set, Ctrl-C still counting: for a
    /// wait that runs beside other work and is moot once that work failed.
    pub fn also_stop_on(mut self, flag: &'a AtomicBool) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Checks again as soon as `watch` sees a change, and at least every `every`.
    pub fn wake_on(mut self, watch: &'a dyn Wake) -> Self {
        self.wake = Some(watch);
        self
    }

    fn cancelled(&self) -> bool {
        if self.stop.is_some_and(|f| f.load(Ordering::SeqCst)) {
            return true;
        }
        match self.cancel {
            Some(f) => f.load(Ordering::SeqCst),
            None => crate::interrupt::is_set(),
        }
    }

    /// Checks at once, then every `every`, until the check is ready, fails, the timeout
    /// passes or the run is interrupted.
    pub fn until<T>(self, mut check: impl FnMut() -> anyhow::Result<Poll<T>>) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if self.cancelled() {
                return Err(WaitError::Interrupted { what: self.what }.into());
            }
            let last = match check()? {
                Poll::Ready(v) => return Ok(v),
                Poll::Pending(seen) => seen,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::TimedOut {
                    what: self.what,
                    after: self.timeout,
                    last,
                    hint: self.hint.map(|h| h()),
                }
                .into());
            }
            // The last check lands on the deadline itself, so a slow start is not cut
            // short by a check that happened to come just before it.
            let next = (now + self.every).min(deadline);
            match self.wake {
                Some(w) => {
                    // In slices too, so Ctrl-C is noticed as quickly as without events.
                    let mut t = Instant::now();
                    while t < next && !self.cancelled() {
                        if w.sleep((next - t).min(SLICE)) {
                            break;
                        }
                        t = Instant::now();
                    }
                }
                None => sleep_until(next, &|| self.cancelled()),
            }
        }
    }
}

/// Sleeps until `until` in slices of at most [`SLICE`], returning early when `cancelled`.
pub fn sleep_until(until: Instant, cancelled: &dyn Fn() -> bool) {
    loop {
        let now = Instant::now();
        if now >= until || cancelled() {
            return;
        }
        std::thread::sleep((until - now).min(SLICE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn returns_the_value_once_ready() {
        let mut n = 0;
        let v = Wait::new("three checks", Duration::from_secs(10))
            .every(Duration::from_millis(1))
            .until(|| {
                n += 1;
                Ok(if n >= 3 {
                    Poll::Ready(n)
                } else {
                    Poll::Pending(format!("{n} checks"))
                })
            })
            .unwrap();
        assert_eq!(v, 3);
    }

    #[test]
    fn a_timeout_names_what_and_the_last_thing_seen() {
        let flag = AtomicBool::new(false);
        let mut n = 0;
        let e = Wait::new(
            "kube-proxy on C0w2 to program service web",
            Duration::from_millis(60),
        )
        .every(Duration::from_millis(10))
        .cancel_on(&flag)
        .hint(|| "see C0w2/kube-proxy.log".into())
        .until(|| -> anyhow::Result<Poll<()>> {
            n += 1;
            Ok(Poll::Pending(format!("{} of 2 endpoints", n.min(1))))
        })
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("timed out after 0.1 s waiting for kube-proxy on C0w2 to program service web (last seen: 1 of 2 endpoints); see C0w2/kube-proxy.log"),
            "{text}"
        );
        assert!(matches!(
            e.downcast_ref::<WaitError>(),
            Some(WaitError::TimedOut { .. })
        ));
    }

    #[test]
    fn a_failing_check_ends_the_wait_with_its_error() {
        let e = Wait::new("an agent", Duration::from_secs(30))
            .until(|| -> anyhow::Result<Poll<()>> { anyhow::bail!("the agent exited") })
            .unwrap_err();
        assert_eq!(e.to_string(), "the agent exited");
    }

    #[test]
    fn a_file_written_ends_the_sleep_before_the_fallback_interval() {
        let dir = std::env::temp_dir().join(format!("knetsim-wait-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("subnet.env");
        let watch = FileWatch::dir(&dir).unwrap();
        let f2 = file.clone();
        let gave_up = Arc::new(AtomicBool::new(false));
        let g2 = gave_up.clone();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(f2, "FLANNEL_SUBNET=11.12.16.1/20\n").unwrap();
            // Without the event the wait would sleep for its hour: end it so the test
            // fails instead of hanging.
            if finished.recv_timeout(Duration::from_secs(20)).is_err() {
                g2.store(true, Ordering::SeqCst);
            }
        });
        let mut checks = 0;
        let res = Wait::new("subnet.env", Duration::from_secs(3600))
            .every(Duration::from_secs(3600))
            .wake_on(&watch)
            .cancel_on(&gave_up)
            .until(|| {
                checks += 1;
                Ok(if file.exists() {
                    Poll::Ready(())
                } else {
                    Poll::Pending("no file".into())
                })
            });
        let _ = done.send(());
        res.expect("the file event ended the wait");
        writer.join().unwrap();
        assert!(checks >= 2, "checked {checks} times");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn watching_a_missing_directory_is_an_error_naming_it() {
        let e = FileWatch::dir(Path::new("/nonexistent/knetsim-dir"))
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("/nonexistent/knetsim-dir"),
            "{e:#}"
        );
    }

    #[test]
    fn the_interrupt_flag_ends_a_long_wait() {
        let flag = Arc::new(AtomicBool::new(false));
        let f2 = flag.clone();
        let raiser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            f2.store(true, Ordering::SeqCst);
            Instant::now()
        });
        // Checks rarely (every 10 s) so only the sliced sleep can notice the flag in time.
        let e = Wait::new("something that never comes", Duration::from_secs(600))
            .every(Duration::from_secs(10))
            .cancel_on(&flag)
            .until(|| -> anyhow::Result<Poll<()>> { Ok(Poll::Pending("nothing".into())) })
            .unwrap_err();
        let noticed = Instant::now();
        let raised = raiser.join().unwrap();
        assert!(
            matches!(
                e.downcast_ref::<WaitError>(),
                Some(WaitError::Interrupted { .. })
            ),
            "{e}"
        );
        eprintln!(
            "wait noticed the interrupt after {:?}",
            noticed.saturating_duration_since(raised)
        );
    }
}
