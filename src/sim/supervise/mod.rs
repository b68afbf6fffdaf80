//! Supervision: the one registry of every daemon the simulator started, and the thread
//! that notices when one exits, as a kubelet notices a DaemonSet's pod exiting.
//!
//! Each daemon is registered once with what it is (its kind and node) and everything
//! needed to start it again identically (program, arguments, environment, namespace,
//! log). The simulator is the parent of every daemon, so a single thread waits on a pidfd
//! per daemon (event driven, no polling loop) and is the only one that reaps them. An
//! exit the simulator did not ask for is reported on the console and recorded as an
//! event; the node agents (flanneld, kube-proxy, the Skupper router) are restarted with
//! the same arguments, the others are not. A crash loop (five unrequested exits within
//! 30 s) stops the restarts; the error quotes the agent's last log lines, and calls and
//! readiness waits that depend on that agent fail at once with it.
//!
//! Stops the simulator asks for (a router replaced for a new configuration, `stop_agent`,
//! teardown) set a "stop requested" flag first, under the registry's lock, so they are
//! neither restarted nor counted. Teardown stops the thread before it ends anything.

mod daemon;
mod handles;

use daemon::{backoff, launch, ordinal, start_hint};
pub(crate) use daemon::{log_tail, DaemonId, DaemonKind, DaemonSpec, Health, Spawned};
pub use daemon::{SupervisionEvent, SupervisionOutcome};

use crate::netns::{process, record::Record};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{BTreeMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Unrequested exits within [`CRASH_LOOP_WINDOW`] after which an agent is given up on.
pub const CRASH_LOOP_EXITS: usize = 5;
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(30);
/// How long a requested stop waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Log lines an error quotes.
const LOG_LINES: usize = 8;

#[derive(Debug)]
enum Status {
    /// `pid` is our child and not reaped yet; `pidfd` is open.
    Running,
    /// Exited without being asked to; restarted at `until`.
    Backoff {
        until: Instant,
        exit: String,
    },
    Stopped,
    Exited(String),
    Failed(String),
}

struct Entry {
    spec: DaemonSpec,
    pid: u32,
    pidfd: Option<OwnedFd>,
    status: Status,
    stop_requested: bool,
    /// When the recent unrequested exits happened (within the crash-loop window).
    exits: VecDeque<Instant>,
}

#[derive(Default)]
struct Registry {
    next: u64,
    entries: BTreeMap<DaemonId, Entry>,
    events: Vec<SupervisionEvent>,
    shutting_down: bool,
}

/// The registry and its thread. The thread holds only this (never the simulation), so
/// the simulation's last handle can still tear down.
pub(crate) struct Supervisor {
    reg: Mutex<Registry>,
    /// Signalled whenever a daemon's status changes.
    changed: Condvar,
    /// An eventfd that wakes the thread when the set of daemons changes.
    wake: EventFd,
    record: Record,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Supervisor {
    pub fn start(record: Record) -> Result<Arc<Supervisor>> {
        let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .context("creating an eventfd")?;
        let sup = Arc::new(Supervisor {
            reg: Mutex::new(Registry::default()),
            changed: Condvar::new(),
            wake,
            record,
            thread: Mutex::new(None),
        });
        let me = sup.clone();
        let handle = std::thread::Builder::new()
            .name("knetsim-supervisor".into())
            .spawn(move || me.run())
            .context("starting the supervisor thread")?;
        *sup.thread.lock().unwrap() = Some(handle);
        Ok(sup)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        // Only a full counter (2^64 - 2 wake-ups unread) fails, and that wakes it anyway.
        let _ = self.wake.write(1);
    }

    /// Starts a daemon and registers it (recorded for teardown before this returns).
    pub fn spawn(&self, spec: DaemonSpec) -> Result<Spawned> {
        let refuse = |spec: &DaemonSpec| {
            anyhow!(
                "the simulation is shutting down: not starting {}",
                spec.title()
            )
        };
        if self.lock().shutting_down {
            return Err(refuse(&spec));
        }
        // Launched outside the lock so agents start side by side (a fork and exec into a
        // namespace mostly waits on the kernel). The thread reaps only registered pids.
        let (pid, start, fd) = launch(&spec, &self.record)?;
        let mut reg = self.lock();
        if reg.shutting_down {
            drop(reg);
            process::kill_group(pid as i32);
            process::reap(pid, true);
            return Err(refuse(&spec));
        }
        reg.next += 1;
        let id = DaemonId(reg.next);
        reg.entries.insert(
            id,
            Entry {
                spec,
                pid,
                pidfd: Some(fd),
                status: Status::Running,
                stop_requested: false,
                exits: VecDeque::new(),
            },
        );
        drop(reg);
        self.wake();
        Ok(Spawned { id, pid, start })
    }

    /// Stops a daemon on purpose (SIGTERM, then SIGKILL after a grace period) and waits
    /// until the supervisor has reaped it; it is neither restarted nor counted. With
    /// `forget` it also leaves the registry, else it stays, stopped, for `start_again`.
    pub fn stop(&self, id: DaemonId, forget: bool) -> Result<()> {
        let mut reg = self.lock();
        let Some(e) = reg.entries.get_mut(&id) else {
            return Ok(());
        };
        e.stop_requested = true;
        let (pid, title) = (e.pid, e.spec.title());
        if matches!(e.status, Status::Running) {
            // Under the lock the supervisor cannot reap it meanwhile, so `pid` is still
            // our child (a zombie at worst): the signal cannot reach anyone else.
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let mut deadline = Instant::now() + STOP_GRACE;
            let mut killed = false;
            loop {
                let running = reg
                    .entries
                    .get(&id)
                    .is_some_and(|e| matches!(e.status, Status::Running));
                if !running || reg.shutting_down {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    if killed {
                        bail!("{title} (pid {pid}) did not end after SIGKILL");
                    }
                    process::kill_group(pid as i32);
                    killed = true;
                    deadline = now + Duration::from_secs(5);
                    continue;
                }
                reg = self
                    .changed
                    .wait_timeout(reg, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        } else if let Some(e) = reg.entries.get_mut(&id) {
            e.status = Status::Stopped;
        }
        // One still unreaped (teardown began meanwhile) stays for shutdown to reap.
        if forget && reg.entries.get(&id).is_some_and(|e| e.pidfd.is_none()) {
            reg.entries.remove(&id);
        }
        Ok(())
    }

    /// Starts a stopped (or given-up) daemon again with its registered arguments.
    pub fn start_again(&self, id: DaemonId) -> Result<Spawned> {
        let mut reg = self.lock();
        if reg.shutting_down {
            bail!("the simulation is shutting down");
        }
        let e = reg
            .entries
            .get_mut(&id)
            .ok_or_else(|| anyhow!("that daemon is no longer registered"))?;
        if let Status::Running = e.status {
            bail!("{} is already running (pid {})", e.spec.title(), e.pid);
        }
        let (pid, start, fd) = launch(&e.spec, &self.record)?;
        e.pid = pid;
        e.pidfd = Some(fd);
        e.status = Status::Running;
        e.stop_requested = false;
        e.exits.clear();
        drop(reg);
        self.wake();
        self.changed.notify_all();
        Ok(Spawned { id, pid, start })
    }

    /// Marks every daemon in namespace `ns` as stopped on purpose: the caller is about to
    /// end everything in it (deleting a pod), so their exits are expected.
    pub fn expect_exit_in(&self, ns: &str) {
        let mut reg = self.lock();
        for e in reg.entries.values_mut().filter(|e| e.spec.ns == ns) {
            e.stop_requested = true;
        }
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self, id: DaemonId) -> Option<u32> {
        let reg = self.lock();
        let e = reg.entries.get(&id)?;
        matches!(e.status, Status::Running).then_some(e.pid)
    }

    pub fn health(&self, id: DaemonId) -> Option<Health> {
        let reg = self.lock();
        reg.entries.get(&id).map(|e| match &e.status {
            Status::Running => Health::Running(e.pid),
            Status::Backoff { .. } => Health::Restarting,
            Status::Stopped => Health::Stopped,
            Status::Exited(x) => Health::Exited(x.clone()),
            Status::Failed(m) => Health::Failed(m.clone()),
        })
    }

    /// The daemon of kind `kind` on `node` (an agent on a worker, etcd on its member), if
    /// one was started there.
    pub fn daemon_on(&self, node: &str, kind: DaemonKind) -> Option<DaemonId> {
        let reg = self.lock();
        reg.entries
            .iter()
            .find(|(_, e)| e.spec.kind == kind && e.spec.node == node)
            .map(|(id, _)| *id)
    }

    /// Kinds of the agents registered on `node`.
    fn agents_on(&self, node: &str) -> Vec<&'static str> {
        let reg = self.lock();
        reg.entries
            .values()
            .filter(|e| e.spec.kind.is_agent() && e.spec.node == node)
            .map(|e| e.spec.kind.name())
            .collect()
    }

    /// The error of the first agent of cluster `id` that was given up on.
    pub fn failure_in_cluster(&self, id: &str) -> Option<String> {
        let prefix = format!("C{id}");
        let reg = self.lock();
        reg.entries.values().find_map(|e| {
            let rest = e.spec.node.strip_prefix(&prefix)?;
            if !rest.starts_with(['w', 'e']) {
                return None;
            }
            match &e.status {
                Status::Failed(m) if e.spec.kind.is_agent() => Some(m.clone()),
                _ => None,
            }
        })
    }

    pub fn events(&self) -> Vec<SupervisionEvent> {
        self.lock().events.clone()
    }

    /// Stops the thread (nothing is restarted after this returns), then ends and reaps
    /// every daemon still running. Teardown calls it before removing anything.
    pub fn shutdown(&self) {
        self.lock().shutting_down = true;
        self.wake();
        self.changed.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        let mut reg = self.lock();
        for e in reg.entries.values_mut() {
            if e.pidfd.take().is_some() {
                // Not reaped yet, so the pid (and its process group) is still ours.
                process::kill_group(e.pid as i32);
                let _ = kill(Pid::from_raw(e.pid as i32), Signal::SIGKILL);
                process::reap(e.pid, true);
                e.status = Status::Stopped;
            }
        }
    }

    fn run(self: Arc<Self>) {
        loop {
            let (watched, timeout) = {
                let reg = self.lock();
                if reg.shutting_down {
                    return;
                }
                let watched: Vec<(DaemonId, RawFd)> = reg
                    .entries
                    .iter()
                    .filter_map(|(id, e)| e.pidfd.as_ref().map(|fd| (*id, fd.as_raw_fd())))
                    .collect();
                let next = reg
                    .entries
                    .values()
                    .filter_map(|e| match e.status {
                        Status::Backoff { until, .. } => Some(until),
                        _ => None,
                    })
                    .min();
                let timeout = next.map_or(-1, |t| {
                    let ms = t.saturating_duration_since(Instant::now()).as_millis() + 1;
                    ms.min(60_000) as i32
                });
                (watched, timeout)
            };
            // Only this thread closes a pidfd (after reaping), so the descriptors stay
            // valid while it polls them; new daemons wake it through the eventfd.
            let mut fds: Vec<libc::pollfd> = std::iter::once(self.wake.as_raw_fd())
                .chain(watched.iter().map(|(_, fd)| *fd))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if fds[0].revents != 0 {
                // Non-blocking: it resets the counter, or finds it read already.
                let _ = self.wake.read();
            }
            let exited: Vec<DaemonId> = fds[1..]
                .iter()
                .zip(&watched)
                .filter(|(p, _)| p.revents != 0)
                .map(|(_, (id, _))| *id)
                .collect();
            let mut lines = Vec::new();
            {
                let mut reg = self.lock();
                if reg.shutting_down {
                    return;
                }
                for id in exited {
                    self.on_exit(&mut reg, id, &mut lines);
                }
                let now = Instant::now();
                let due: Vec<DaemonId> = reg
                    .entries
                    .iter()
                    .filter(
                        |(_, e)| matches!(e.status, Status::Backoff { until, .. } if until <= now),
                    )
                    .map(|(id, _)| *id)
                    .collect();
                for id in due {
                    self.restart(&mut reg, id, &mut lines);
                }
            }
            self.changed.notify_all();
            for l in lines {
                crate::ui::notice(&format!("{} {l}", crate::ui::yellow("!")));
            }
        }
    }

    fn event(
        reg: &mut Registry,
        spec: &DaemonSpec,
        exit: &str,
        outcome: SupervisionOutcome,
        message: String,
        lines: &mut Vec<String>,
    ) {
        lines.push(message.clone());
        reg.events.push(SupervisionEvent {
            node: spec.node.clone(),
            daemon: spec.kind.name().to_string(),
            exit: exit.to_string(),
            outcome,
            message,
        });
    }

    /// A watched daemon's pidfd became readable: reap it and decide what follows.
    fn on_exit(&self, reg: &mut Registry, id: DaemonId, lines: &mut Vec<String>) {
        let Some(e) = reg.entries.get_mut(&id) else {
            return;
        };
        if e.pidfd.is_none() {
            return;
        }
        let pid = e.pid;
        // Until it is reaped the leader is a zombie that keeps its process group id ours:
        // end what it left behind in its group (a background command's group is the
        // user's business and stays).
        if e.stop_requested || e.spec.kind != DaemonKind::Command {
            process::kill_group(pid as i32);
        }
        let Some(status) = process::reap(pid, false) else {
            return;
        };
        e.pidfd = None;
        let _ = self.record.forget_process(pid);
        let exit = process::describe_wait_status(status);
        if e.spec.kind == DaemonKind::Command {
            // Done, as background commands are sooner or later: nothing to keep.
            reg.entries.remove(&id);
            return;
        }
        if e.stop_requested {
            e.status = Status::Stopped;
            return;
        }
        let spec = e.spec.clone();
        let title = spec.title();
        if !spec.kind.is_agent() {
            e.status = Status::Exited(exit.clone());
            let msg = format!(
                "{title} exited ({exit}); not restarted (knetsim restarts only the node agents: flanneld, kube-proxy and the Skupper router). Its log: {}",
                spec.log.display()
            );
            Self::event(
                reg,
                &spec,
                &exit,
                SupervisionOutcome::NotRestarted,
                msg,
                lines,
            );
            return;
        }
        let now = Instant::now();
        e.exits.push_back(now);
        while e
            .exits
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_LOOP_WINDOW)
        {
            e.exits.pop_front();
        }
        let n = e.exits.len();
        if n >= CRASH_LOOP_EXITS {
            let msg = format!(
                "{title} exited ({exit}), its {} exit within {} s: a crash loop, so knetsim stopped restarting it. Its log ({}) ends with:\n{}\n  Fix the cause, then start it again with {}",
                ordinal(n),
                CRASH_LOOP_WINDOW.as_secs(),
                spec.log.display(),
                log_tail(&spec.log, LOG_LINES),
                start_hint(&spec)
            );
            e.status = Status::Failed(msg.clone());
            Self::event(reg, &spec, &exit, SupervisionOutcome::GaveUp, msg, lines);
            return;
        }
        let delay = backoff(n);
        e.status = Status::Backoff {
            until: now + delay,
            exit,
        };
        if delay.is_zero() {
            self.restart(reg, id, lines);
        }
    }

    fn restart(&self, reg: &mut Registry, id: DaemonId, lines: &mut Vec<String>) {
        let Some(e) = reg.entries.get_mut(&id) else {
            return;
        };
        let Status::Backoff { exit, .. } = &e.status else {
            return;
        };
        let exit = exit.clone();
        let spec = e.spec.clone();
        let title = spec.title();
        match launch(&spec, &self.record) {
            Ok((pid, _, fd)) => {
                e.pid = pid;
                e.pidfd = Some(fd);
                e.status = Status::Running;
                let n = e.exits.len();
                let msg = if n <= 1 {
                    format!("{title} exited ({exit}); restarted")
                } else {
                    format!(
                        "{title} exited ({exit}); restarted after {:.2} s ({} exit within {} s; at {} knetsim stops restarting it)",
                        backoff(n).as_secs_f64(),
                        ordinal(n),
                        CRASH_LOOP_WINDOW.as_secs(),
                        CRASH_LOOP_EXITS
                    )
                };
                Self::event(
                    reg,
                    &spec,
                    &exit,
                    SupervisionOutcome::Restarted { pid },
                    msg,
                    lines,
                );
            }
            Err(err) => {
                let msg = format!(
                    "{title} exited ({exit}) and could not be started again: {err:#}. Its log ({}) ends with:\n{}\n  Fix the cause, then start it again with {}",
                    spec.log.display(),
                    log_tail(&spec.log, LOG_LINES),
                    start_hint(&spec)
                );
                e.status = Status::Failed(msg.clone());
                Self::event(reg, &spec, &exit, SupervisionOutcome::GaveUp, msg, lines);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_once_then_doubles() {
        assert_eq!(backoff(1), Duration::ZERO);
        assert_eq!(backoff(2), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_millis(500));
        assert_eq!(backoff(4), Duration::from_millis(1000));
        let total: Duration = (1..CRASH_LOOP_EXITS).map(backoff).sum();
        assert!(
            total < CRASH_LOOP_WINDOW,
            "a crash loop must fit the window"
        );
    }

    #[test]
    fn ordinals_read_as_english() {
        let got: Vec<String> = [1, 2, 3, 4, 5, 11, 12, 13, 21, 22].map(ordinal).to_vec();
        assert_eq!(
            got,
            ["1st", "2nd", "3rd", "4th", "5th", "11th", "12th", "13th", "21st", "22nd"]
        );
    }

    #[test]
    fn only_the_node_agents_are_restarted_and_named_for_stop_agent() {
        for k in [
            DaemonKind::Flanneld,
            DaemonKind::KubeProxy,
            DaemonKind::Router,
        ] {
            assert!(k.is_agent());
            assert_eq!(DaemonKind::agent(k.name()), Some(k));
        }
        for k in [
            DaemonKind::Etcd,
            DaemonKind::Nginx,
            DaemonKind::EchoServer,
            DaemonKind::Command,
        ] {
            assert!(!k.is_agent());
            assert_eq!(DaemonKind::agent(k.name()), None);
        }
    }

    #[test]
    fn log_tails_quote_the_last_lines_or_say_there_were_none() {
        let dir = std::env::temp_dir().join(format!("knetsim-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("a.log");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let t = log_tail(&log, 8);
        assert!(t.contains("    line 20") && t.contains("line 13"), "{t}");
        assert!(!t.contains("line 12"), "{t}");
        assert!(log_tail(&dir.join("missing.log"), 8).contains("printed nothing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
