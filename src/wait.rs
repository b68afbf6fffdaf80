//! The one wait every readiness check uses (etcd healthy, subnet.env written, overlay
//! routes, kube-proxy programmed, Skupper links, nginx and echo servers listening).
//!
//! A check says `Ready(value)`, `Pending(what it sees now)`, or fails (an agent died:
//! no point waiting on). Between checks the wait sleeps in slices of at most
//! [`SLICE`], so Ctrl-C or SIGTERM ends it within about that long; on timeout the error
//! names what was awaited and what was seen last, so the learner knows where to look.

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
            sleep_until((now + self.every).min(deadline), &|| self.cancelled());
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
