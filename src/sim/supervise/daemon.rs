//! What the supervisor knows of one daemon: its kind (which decides the restart policy),
//! how to start it again identically, how it is doing, and the log lines an error quotes.

use crate::netns::process::{self, DaemonStart};
use crate::netns::record::Record;
use anyhow::Result;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

/// What a daemon is; decides its restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DaemonKind {
    Etcd,
    Flanneld,
    KubeProxy,
    Router,
    Nginx,
    EchoServer,
    /// A command a script started in the background (`exec_async`): it may end whenever
    /// it is done, so its exit is neither restarted nor reported.
    Command,
}

impl DaemonKind {
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::Etcd => "etcd",
            DaemonKind::Flanneld => "flanneld",
            DaemonKind::KubeProxy => "kube-proxy",
            DaemonKind::Router => "skrouterd",
            DaemonKind::Nginx => "nginx",
            DaemonKind::EchoServer => "echo-server",
            DaemonKind::Command => "command",
        }
    }

    /// The node agents, restarted as a DaemonSet's pods are (restartPolicy: Always).
    pub fn is_agent(self) -> bool {
        matches!(
            self,
            DaemonKind::Flanneld | DaemonKind::KubeProxy | DaemonKind::Router
        )
    }

    pub(super) fn agent(name: &str) -> Option<DaemonKind> {
        [
            DaemonKind::Flanneld,
            DaemonKind::KubeProxy,
            DaemonKind::Router,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// Names a registered daemon for as long as the simulation runs (its pid changes when it
/// is restarted; this does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DaemonId(pub(super) u64);

/// A daemon just started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spawned {
    pub id: DaemonId,
    pub pid: u32,
    pub start: u64,
}

/// Everything needed to start a daemon, and to start it again identically.
#[derive(Debug, Clone)]
pub(crate) struct DaemonSpec {
    pub kind: DaemonKind,
    /// The worker or etcd member it belongs to (`C0w1`).
    pub node: String,
    /// The network namespace it runs in.
    pub ns: String,
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// How it is started: a learner's own command (`DaemonKind::Command`) as `ip netns
    /// exec` would; every other daemon needs only its network namespace.
    pub start: DaemonStart,
    pub log: PathBuf,
    /// How the teardown record describes it.
    pub what: String,
}

impl DaemonSpec {
    pub fn new(
        kind: DaemonKind,
        node: &str,
        ns: &str,
        program: &str,
        args: Vec<String>,
        log: PathBuf,
        what: String,
    ) -> DaemonSpec {
        DaemonSpec {
            kind,
            node: node.to_string(),
            ns: ns.to_string(),
            program: program.to_string(),
            args,
            env: Vec::new(),
            start: if kind == DaemonKind::Command {
                DaemonStart::Shell
            } else {
                DaemonStart::Net
            },
            log,
            what,
        }
    }

    /// "kube-proxy on C0w1", for messages.
    pub(super) fn title(&self) -> String {
        match self.kind {
            DaemonKind::Nginx | DaemonKind::EchoServer | DaemonKind::Command => self.what.clone(),
            k => format!("{} on {}", k.name(), self.node),
        }
    }
}

/// What the supervisor did about an exit nobody asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisionOutcome {
    /// Started again with the same arguments; its new pid.
    Restarted { pid: u32 },
    /// Reported only: this kind of daemon is not restarted (etcd, nginx, echo servers).
    NotRestarted,
    /// A crash loop, or the restart itself failed: no more restarts.
    GaveUp,
}

/// One exit the simulator did not ask for, as the console reported it.
#[derive(Debug, Clone)]
pub struct SupervisionEvent {
    /// The worker or etcd member (`C0w1`).
    pub node: String,
    /// `flanneld`, `kube-proxy`, `skrouterd`, `etcd`, `nginx` or `echo-server`.
    pub daemon: String,
    /// How it ended: `signal 9`, `status 1`.
    pub exit: String,
    pub outcome: SupervisionOutcome,
    /// The line printed on the console.
    pub message: String,
}

/// A daemon's state as waits and API calls see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    Running(u32),
    /// Exited; the supervisor starts it again shortly.
    Restarting,
    /// Stopped on purpose (`stop_agent`, a router being replaced).
    Stopped,
    /// Exited on its own and is not restarted (not an agent).
    Exited(String),
    /// Given up on: the message says why and quotes its log.
    Failed(String),
}

/// Starts a daemon as `spec` says and records it; its pid stays ours until we reap it.
pub(super) fn launch(spec: &DaemonSpec, record: &Record) -> Result<(u32, u64, OwnedFd)> {
    let env: Vec<(&str, &str)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let child = process::spawn_daemon_env(
        Some(&spec.ns),
        &spec.program,
        &spec.args,
        &env,
        &spec.log,
        spec.start,
    )?;
    let pid = child.id();
    // The supervisor reaps it (waitpid on the pid); the handle is not needed.
    drop(child);
    let start = process::start_time(pid).unwrap_or(0);
    let tracked =
        process::pidfd_open(pid).and_then(|fd| record.add_process(pid, &spec.what).map(|_| fd));
    match tracked {
        Ok(fd) => Ok((pid, start, fd)),
        Err(e) => {
            process::kill_group(pid as i32);
            process::reap(pid, true);
            Err(e.context(format!("starting {}", spec.title())))
        }
    }
}

/// The last `n` lines of a daemon's log, each indented, for error messages: the one
/// place every feature quotes a log from.
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        text = String::from_utf8_lossy(&buf).into_owned();
    }
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "    (it printed nothing)".into();
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(super) fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Wait before restarting after the `n`th unrequested exit in the window: at once the
/// first time, then doubling from 250 ms, as a kubelet backs off a crashing pod.
pub(super) fn backoff(n: usize) -> Duration {
    match n {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis(250) * (1 << (n - 2).min(6)),
    }
}

/// How an agent's start-again hint reads, e.g. `C0w1.start_agent("flanneld")`.
pub(super) fn start_hint(spec: &DaemonSpec) -> String {
    format!("{}.start_agent(\"{}\")", spec.node, spec.kind.name())
}
