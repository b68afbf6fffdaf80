//! Processes inside a namespace: short commands whose output is returned (bounded by a
//! timeout and a cancel flag), and daemons started in a process group of their own (a
//! learner's background command also in a session of its own) with their output in a log
//! file. Processes are only ever ended by their own pid.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod bounded;
mod output;
mod pids;
mod programs;
mod sparse;

pub use bounded::{run_bounded, run_shell, run_shell_with, Ended, Interrupted, Output, OUTPUT_CAP};
pub use output::output_reaping_later;
pub use pids::{
    cmdline, describe_wait_status, is_same_process, is_same_process_cmd, netns_inode, pidfd_open,
    pids_in_namespaces, reap, start_time, stop,
};
pub use programs::{missing_program, shell_command};

/// How a command is set up besides its namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup<'a> {
    /// A hosts file bind-mounted over /etc/hosts in the command's private mount
    /// namespace (as `ip netns exec` does with /etc/netns/NAME/hosts): the host's /etc
    /// is never written.
    pub hosts: Option<&'a Path>,
    /// Working directory.
    pub cwd: Option<&'a Path>,
    /// Keep the caller's session (and terminal), e.g. for an interactive shell.
    pub keep_session: bool,
    /// Enter only the network namespace, without a private mount namespace (so no
    /// private /sys and no hosts file): for daemons and plugins that speak netlink. Each
    /// private mount namespace copies every mount, and each namespace made later under
    /// /run/netns propagates into every copy: with hundreds of daemons that made every
    /// new namespace cost hundreds of mounts.
    pub net_only: bool,
}

/// A command that needs only a network namespace (daemons, CNI plugins, nft): started in
/// a process group of its own (so Ctrl-C at the terminal never reaches it and
/// [`kill_group`] ends it whole) by a thread that has entered the namespace, since a child
/// inherits its creating thread's namespaces. With nothing left to do between fork and
/// exec, std starts it with posix_spawn (a vfork-style clone that shares the memory map)
/// instead of forking the whole multi-threaded simulator: the fork copied every page
/// table, held the memory-map lock meanwhile and threw the copy away at exec, which
/// serialized hundreds of agents started side by side.
pub struct NetCommand {
    cmd: Command,
    /// The namespace to start it in; None for the current one.
    ns: Option<std::fs::File>,
    /// Started under a filter that makes `fallocate` unsupported (see [`sparse`]).
    sparse: bool,
    /// The CPU nice value it starts at; 0 keeps the simulator's.
    nice: i32,
}

/// [`NetCommand`] for `program` in namespace `ns` (None: the current one). The namespace
/// is opened now, so a missing one is reported before anything runs.
pub fn command_net_only(ns: Option<&str>, program: &str) -> Result<NetCommand> {
    let ns = ns.map(super::open).transpose()?;
    let mut cmd = Command::new(program);
    cmd.process_group(0);
    Ok(NetCommand {
        cmd,
        ns,
        sparse: false,
        nice: 0,
    })
}

impl NetCommand {
    /// The command, to give arguments, environment and standard streams.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Starts it so that its files are preallocated sparse: `fallocate` fails as
    /// unsupported and a program that falls back to `ftruncate` (etcd's WAL) gets files
    /// that take memory only as it writes them (see the `sparse` module). Best effort: where the
    /// filter cannot be installed the program starts as it would without this.
    pub fn sparse_preallocation(&mut self) -> &mut Self {
        self.sparse = true;
        self
    }

    /// Starts it at CPU nice value `nice` (below 0: ahead of the simulator's other work
    /// when the cores are busy), it and every thread it makes. Best effort: where raising
    /// a priority is not allowed (a container without CAP_SYS_NICE) it starts at the
    /// simulator's. [`renice`] changes it later.
    pub fn priority(&mut self, nice: i32) -> &mut Self {
        self.nice = nice;
        self
    }

    /// Starts it inside its namespace.
    pub fn spawn(&mut self) -> std::io::Result<Child> {
        if self.ns.is_none() && !self.sparse && self.nice == 0 {
            return self.cmd.spawn();
        }
        let (cmd, ns, sparse, nice) = (&mut self.cmd, &self.ns, self.sparse, self.nice);
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("knetsim spawn".into())
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    // Only this short-lived thread enters the namespace (and takes the
                    // filter); it ends right after the spawn, so no other work ever runs
                    // in the wrong namespace or under the filter.
                    if let Some(ns) = ns {
                        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                    }
                    if sparse {
                        let _ = sparse::deny_fallocate_on_this_thread();
                    }
                    if nice != 0 {
                        // A nice value belongs to a thread, and a child starts with its
                        // creating thread's.
                        let _ = set_nice(0, nice);
                    }
                    cmd.spawn()
                })?
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the spawning thread panicked")))
        })
    }
}

/// Builds a `Command` that will run inside namespace `ns` (or the current one for `None`)
/// in a new session, with a private mount namespace whose /sys shows the namespace's own
/// links (as `ip netns exec` arranges).
pub fn command_in(ns: Option<&str>, program: &str) -> Result<Command> {
    command_with(ns, program, &Setup::default())
}

/// Like [`command_in`]; with `new_session` false the command keeps the caller's terminal
/// (for an interactive shell).
pub fn command_in_session(ns: Option<&str>, program: &str, new_session: bool) -> Result<Command> {
    command_with(
        ns,
        program,
        &Setup {
            keep_session: !new_session,
            ..Setup::default()
        },
    )
}

/// [`command_in`] with a hosts file, a working directory and the session choice.
pub fn command_with(ns: Option<&str>, program: &str, setup: &Setup) -> Result<Command> {
    let mut cmd = Command::new(program);
    if let Some(dir) = setup.cwd {
        cmd.current_dir(dir);
    }
    let new_session = !setup.keep_session;
    let private_mounts = !setup.net_only;
    if let Some(ns) = ns {
        let fd: OwnedFd = super::open(ns)?.into();
        let sysfs = CString::new("sysfs").unwrap();
        let sys = CString::new("/sys").unwrap();
        let root = CString::new("/").unwrap();
        let etc_hosts = CString::new("/etc/hosts").unwrap();
        let name = CString::new(ns).unwrap();
        let hosts = match setup.hosts {
            Some(p) => Some(
                CString::new(p.as_os_str().as_encoded_bytes())
                    .context("a hosts file path with a NUL byte")?,
            ),
            None => None,
        };
        // SAFETY: between fork and exec the closure only makes system calls (setns,
        // unshare, mount, setsid; the hosts bind mount) on values prepared before the fork: no allocation, no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Best effort, like ip netns exec: a private /sys for this namespace.
                if private_mounts && libc::unshare(libc::CLONE_NEWNS) == 0 {
                    libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_SLAVE | libc::MS_REC,
                        std::ptr::null(),
                    );
                    libc::umount2(sys.as_ptr(), libc::MNT_DETACH);
                    libc::mount(
                        name.as_ptr(),
                        sys.as_ptr(),
                        sysfs.as_ptr(),
                        0,
                        std::ptr::null(),
                    );
                    // Only in this private mount namespace: node and pod names resolve.
                    if let Some(h) = &hosts {
                        libc::mount(
                            h.as_ptr(),
                            etc_hosts.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND,
                            std::ptr::null(),
                        );
                    }
                }
                if new_session {
                    libc::setsid();
                }
                Ok(())
            });
        }
    } else if new_session {
        // SAFETY: setsid is async-signal-safe, the only thing the child does before exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    Ok(cmd)
}

/// Sets the nice value of thread `tid` (0: the calling thread).
fn set_nice(tid: i32, nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority only reads its integer arguments. For PRIO_PROCESS Linux takes
    // the id as a thread's.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the CPU nice value of every thread of process `pid` (one we started). A process
/// that has exited meanwhile is left alone. A new thread takes the nice value of the
/// thread that starts it, so one started during a pass by a thread not yet set would keep
/// the old value: passes repeat until one finds no thread it has not set (at most
/// [`RENICE_PASSES`]).
pub fn renice(pid: u32, nice: i32) -> Result<()> {
    let mut set: std::collections::HashSet<i32> = std::collections::HashSet::new();
    for _ in 0..RENICE_PASSES {
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => tasks,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing the threads of pid {pid}")),
        };
        let mut found_new = false;
        for tid in tasks.flatten() {
            let Some(tid) = tid.file_name().to_str().and_then(|t| t.parse::<i32>().ok()) else {
                continue;
            };
            if !set.insert(tid) {
                continue;
            }
            found_new = true;
            match set_nice(tid, nice) {
                Err(e) if e.raw_os_error() != Some(libc::ESRCH) => {
                    return Err(e).with_context(|| format!("setting the priority of pid {pid}"));
                }
                _ => {}
            }
        }
        if !found_new {
            break;
        }
    }
    Ok(())
}

/// How many passes [`renice`] makes over a process's threads at most: a Go runtime
/// starting up adds a thread or two at a time.
const RENICE_PASSES: usize = 4;

/// Whether this process may start others ahead of itself ([`NetCommand::priority`] below
/// 0): it holds CAP_SYS_NICE, as root does outside a container without `--privileged`.
pub fn can_raise_priority() -> bool {
    // CAP_SYS_NICE is bit 23 of the effective capabilities.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|effective| effective & (1 << 23) != 0)
}

/// Sends SIGKILL to process group `pgid` (which we created with setsid).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
    }
}

/// Starts a daemon in namespace `ns` in its own process group (see [`NetCommand`]), output
/// appended to `log`.
pub fn spawn_daemon(ns: Option<&str>, program: &str, args: &[String], log: &Path) -> Result<Child> {
    spawn_daemon_env(ns, program, args, &[], log, DaemonStart::Net)
}

/// How [`spawn_daemon_env`] starts a daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonStart {
    /// A [`NetCommand`] (every daemon of the simulation).
    Net,
    /// A datastore (etcd): a [`NetCommand`] whose files are preallocated sparse
    /// ([`NetCommand::sparse_preallocation`]), started at CPU nice value `nice`
    /// ([`NetCommand::priority`]).
    Datastore { nice: i32 },
    /// A learner's own command: it gets the session and private /sys that `ip netns
    /// exec` would give it (and is forked, to set those up).
    Shell,
}

/// [`spawn_daemon`] with extra environment variables, started as `how` says.
pub fn spawn_daemon_env(
    ns: Option<&str>,
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    how: DaemonStart,
) -> Result<Child> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    let configure = |cmd: &mut Command| -> Result<()> {
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf.try_clone()?);
        Ok(())
    };
    let child = if how != DaemonStart::Shell {
        // std takes the posix_spawn path only for a program given as a path when the
        // environment sets PATH; argv[0] stays the name, so `ps` and the record read the same.
        let path = env.iter().find(|(k, _)| *k == "PATH").map(|(_, v)| *v);
        let resolved = resolve_program(program, path);
        let mut net = command_net_only(ns, &resolved)?;
        net.command().arg0(program);
        configure(net.command())?;
        if let DaemonStart::Datastore { nice } = how {
            net.sparse_preallocation().priority(nice);
        }
        net.spawn()
    } else {
        let mut cmd = command_with(ns, program, &Setup::default())?;
        configure(&mut cmd)?;
        cmd.spawn()
    };
    child.with_context(|| format!("starting {program}"))
}

/// `program` as a path: itself when it names one, else the first match on `path` (or this
/// process's PATH); unchanged when there is none, so the spawn reports it missing.
fn resolve_program(program: &str, path: Option<&str>) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    let path = path
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map_or_else(|| program.to_string(), |p| p.display().to_string())
}

/// Checks that an executable exists, for clear messages before anything starts.
pub fn require_binary(path: &str, package: &str) -> Result<()> {
    let found = if path.contains('/') {
        Path::new(path).exists()
    } else {
        which(path).is_some()
    };
    if !found {
        bail!("'{path}' was not found: install it with `apt-get install {package}` (or run `knetsim doctor`)");
    }
    Ok(())
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_the_given_path_first() {
        assert_eq!(resolve_program("/usr/bin/env", None), "/usr/bin/env");
        assert_eq!(resolve_program("sh", Some("/nonexistent:/bin")), "/bin/sh");
        // Not found: left as given, so the spawn names it in its error.
        assert_eq!(
            resolve_program("no-such-program-here", Some("/bin")),
            "no-such-program-here"
        );
    }

    #[test]
    fn a_command_in_the_current_namespace_leads_its_own_process_group() {
        let mut cmd = command_net_only(None, "/bin/sh").unwrap();
        cmd.command()
            .args(["-c", "cut -d' ' -f5 /proc/$$/stat"])
            .stdout(Stdio::piped());
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        let pgid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(pgid, pid);
    }

    /// The nice value of every thread of `pid`, from /proc (field 19 of each stat).
    fn nice_of_threads(pid: u32) -> Vec<i32> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .map(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
                // After the command's name, which ends at the last ')'.
                let rest = &stat[stat.rfind(')').unwrap() + 2..];
                rest.split(' ').nth(16).unwrap().parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn a_command_starts_at_its_priority_and_renice_changes_every_thread() {
        // A raised nice value (lower priority) is allowed without privileges, and the
        // caller's thread keeps its own.
        let before = nice_of_threads(std::process::id());
        let mut cmd = command_net_only(None, "/bin/sleep").unwrap();
        cmd.command().arg("5");
        let mut child = cmd.priority(7).spawn().unwrap();
        let pid = child.id();
        assert_eq!(nice_of_threads(pid), vec![7]);
        renice(pid, 3).unwrap();
        assert_eq!(nice_of_threads(pid), vec![3]);
        assert_eq!(nice_of_threads(std::process::id()), before);
        child.kill().unwrap();
        child.wait().unwrap();
        // No such process (beyond any pid_max): nothing to change, and no error.
        renice(u32::MAX, 0).unwrap();
    }

    #[test]
    fn a_datastore_starts_ahead_of_the_simulator() {
        if !can_raise_priority() {
            println!("SKIPPED: raising a priority needs CAP_SYS_NICE, which this process lacks");
            return;
        }
        let dir = std::env::temp_dir().join(format!("knetsim-nice-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let started = spawn_daemon_env(
            None,
            "/bin/sleep",
            &["5".to_string()],
            &[],
            &dir.join("log"),
            DaemonStart::Datastore { nice: -3 },
        );
        let nice = started.as_ref().map(|c| nice_of_threads(c.id())).ok();
        if let Ok(mut child) = started {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(nice, Some(vec![-3]));
    }

    #[test]
    fn a_missing_namespace_is_named_before_anything_runs() {
        let err = command_net_only(Some("knetsim-no-such-ns"), "/bin/true")
            .err()
            .expect("refused");
        assert!(err
            .to_string()
            .contains("'knetsim-no-such-ns' does not exist"));
    }
}
