//! Processes inside a namespace: short commands whose output is returned (bounded by a
//! timeout and a cancel flag), and daemons started in a session and process group of their
//! own with their output in a log file. Processes are only ever ended by their own pid.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Why a bounded command did not finish on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Signalled(i32),
    TimedOut,
    Cancelled,
}

/// The most output a bounded command hands back; the rest is read and dropped, so a
/// command printing without end neither blocks on a full pipe nor fills memory.
pub const OUTPUT_CAP: usize = 16 << 20;

/// What a bounded command left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// stdout and stderr interleaved, as a terminal would show them (at most
    /// [`OUTPUT_CAP`] bytes of it).
    pub text: String,
    pub ended: Ended,
    /// The output was longer than [`OUTPUT_CAP`]: `text` holds only its beginning.
    pub cut: bool,
    /// Bytes the command printed in all.
    pub printed: u64,
}

impl Output {
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited(0)
    }
}

/// A command ended by Ctrl-C, with what it printed until then. It travels as an error so
/// a script stops there; whoever shows it shows the output once.
#[derive(Debug)]
pub struct Interrupted {
    pub partial: String,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted (Ctrl-C)")
    }
}

impl std::error::Error for Interrupted {}

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

/// [`command_in`] without a private mount namespace (see [`Setup::net_only`]).
pub fn command_net_only(ns: Option<&str>, program: &str) -> Result<Command> {
    command_with(
        ns,
        program,
        &Setup {
            net_only: true,
            ..Setup::default()
        },
    )
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

/// Runs `sh -c script` in namespace `ns`, returning its output once it ends, when
/// `timeout` passes, or when `cancel` is set (Ctrl-C). On timeout or cancel the command's
/// whole process group is killed, and only that.
pub fn run_shell(
    ns: Option<&str>,
    script: &str,
    env: &[(&str, &str)],
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<Output> {
    run_shell_with(ns, script, env, &Setup::default(), timeout, cancel)
}

/// [`run_shell`] with a hosts file and a working directory.
pub fn run_shell_with(
    ns: Option<&str>,
    script: &str,
    env: &[(&str, &str)],
    setup: &Setup,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<Output> {
    let mut cmd = shell_command(ns, script, env, setup)?;
    cmd.stdin(Stdio::null());
    run_bounded(cmd, timeout, cancel)
}

/// The command that runs `script` in `ns`: directly when it is plain words, else with
/// `sh -c`. A program that is not installed is named with the package that has it.
pub fn shell_command(
    ns: Option<&str>,
    script: &str,
    env: &[(&str, &str)],
    setup: &Setup,
) -> Result<Command> {
    let path = env
        .iter()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| v.to_string())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    if let Some(msg) = missing_program(script, &path) {
        bail!("{msg}");
    }
    // A plain "program arg arg" line runs directly: the shell would only split it on
    // spaces, and skipping it saves a fork and an exec on every call.
    let mut cmd = match plain_words(script) {
        Some(words) => {
            let mut c = command_with(ns, words[0], setup)?;
            c.args(&words[1..]);
            c
        }
        None => {
            let mut c = command_with(ns, "/bin/sh", setup)?;
            c.arg("-c").arg(script);
            c
        }
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// Debian packages of the tools lessons and tutorials use, for "not installed" answers.
const PACKAGES: &[(&str, &str)] = &[
    ("tcpdump", "tcpdump"),
    ("tshark", "tshark"),
    ("iperf3", "iperf3"),
    ("iperf", "iperf"),
    ("curl", "curl"),
    ("wget", "wget"),
    ("ifconfig", "net-tools"),
    ("netstat", "net-tools"),
    ("route", "net-tools"),
    ("arp", "net-tools"),
    ("conntrack", "conntrack"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("etcdctl", "etcd-client"),
    ("etcd", "etcd-server"),
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("bridge", "iproute2"),
    ("ping", "iputils-ping"),
    ("tracepath", "iputils-tracepath"),
    ("traceroute", "traceroute"),
    ("dig", "bind9-dnsutils"),
    ("nslookup", "bind9-dnsutils"),
    ("nc", "netcat-openbsd"),
    ("socat", "socat"),
    ("python3", "python3"),
    ("nginx", "nginx-light"),
    ("ethtool", "ethtool"),
    ("mtr", "mtr-tiny"),
    ("nmap", "nmap"),
    ("top", "procps"),
    ("ps", "procps"),
    ("busybox", "busybox"),
    ("strace", "strace"),
    ("jq", "jq"),
];

/// When the first word of `script` is a program that is on no directory of `path`,
/// what to say: its name and the Debian package that has it.
pub fn missing_program(script: &str, path: &str) -> Option<String> {
    let first = script.split_whitespace().next()?;
    // Only a bare program name: builtins, assignments, paths and shell syntax are the
    // shell's business.
    if !first
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        || first.starts_with(['-', '.'])
        || SHELL_WORDS.contains(&first)
    {
        return None;
    }
    let found = std::env::split_paths(path).any(|d| d.join(first).is_file());
    if found {
        return None;
    }
    Some(match PACKAGES.iter().find(|(p, _)| *p == first) {
        Some((_, pkg)) => format!(
            "{first}: command not found; it comes with the Debian package {pkg} (apt-get install {pkg})"
        ),
        None => format!("{first}: command not found (not installed on this machine)"),
    })
}

/// Shell builtins and keywords: run by the shell, never looked up on PATH.
const SHELL_WORDS: &[&str] = &[
    "cd", "export", "exit", "set", "unset", "ulimit", "umask", "exec", "if", "for", "while",
    "until", "case", "source", "alias", "wait", "echo", "printf", "read", "test", "true", "false",
    "kill", "trap", "type", "command", "eval", "shift", "times", "local", "return", "break",
    "continue", "getopts", "hash", "jobs", "fg", "bg", "pwd",
];

/// The words of `script` when it has nothing a shell would interpret (quotes, variables,
/// globs, redirections, operators), else None.
fn plain_words(script: &str) -> Option<Vec<&str>> {
    const SPECIAL: &[char] = &[
        '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
        '=', '%', '{', '}', '\n', '!',
    ];
    if script.contains(SPECIAL) {
        return None;
    }
    let words: Vec<&str> = script.split_whitespace().collect();
    let first = words.first()?;
    // Shell builtins and keywords need the shell.
    if matches!(
        *first,
        "cd" | "export"
            | "exit"
            | "set"
            | "ulimit"
            | "umask"
            | "exec"
            | "if"
            | "for"
            | "while"
            | "."
            | "source"
            | "alias"
            | "wait"
    ) {
        return None;
    }
    Some(words)
}

/// Runs a prepared command with stdout+stderr captured into one pipe. A waiter thread
/// blocks on the child, so the result is back as soon as the command ends (no polling
/// delay); the caller's loop only wakes to check the timeout and the cancel flag.
pub fn run_bounded(
    mut cmd: Command,
    timeout: Duration,
    cancel: Option<&AtomicBool>,
) -> Result<Output> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let writer2 = writer.try_clone()?;
    cmd.stdout(writer).stderr(writer2);
    let mut child = cmd.spawn().context("starting command")?;
    drop(cmd); // closes our copies of the write end
    let pgid = child.id() as i32;
    let (text_tx, text_rx) = channel();
    std::thread::spawn(move || {
        let _ = text_tx.send(read_capped(reader, OUTPUT_CAP));
    });
    let (exit_tx, exit_rx) = channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let started = Instant::now();
    let mut stopped: Option<Ended> = None;
    let status = loop {
        match exit_rx.recv_timeout(Duration::from_millis(20)) {
            Ok(status) => break status.context("waiting for command")?,
            Err(RecvTimeoutError::Disconnected) => bail!("lost track of the command"),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if stopped.is_none() {
            if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                kill_group(pgid);
                stopped = Some(Ended::Cancelled);
            } else if started.elapsed() >= timeout {
                kill_group(pgid);
                stopped = Some(Ended::TimedOut);
            }
        }
    };
    // Background children that kept the pipe open would block the reader: after a short
    // grace period the command's process group (which we created) is ended, by its id.
    let (bytes, printed) = match text_rx.recv_timeout(Duration::from_millis(500)) {
        Ok(b) => b,
        Err(_) => {
            kill_group(pgid);
            text_rx
                .recv_timeout(Duration::from_millis(500))
                .unwrap_or_default()
        }
    };
    Ok(Output {
        cut: printed > bytes.len() as u64,
        printed,
        text: into_text(bytes),
        ended: stopped.unwrap_or_else(|| exit_of(status)),
    })
}

/// Reads `r` to its end, keeping the first `cap` bytes and counting the rest.
fn read_capped(mut r: impl std::io::Read, cap: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut printed = 0u64;
    loop {
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                printed += n as u64;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, printed)
}

/// Output as text without copying it when it is valid UTF-8; a character cut in half at
/// the cap is dropped, other invalid bytes become U+FFFD.
fn into_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => {
            let err = e.utf8_error();
            let mut bytes = e.into_bytes();
            if err.error_len().is_none() {
                bytes.truncate(err.valid_up_to());
            }
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }
        }
    }
}

fn exit_of(status: std::process::ExitStatus) -> Ended {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Exited(c),
        (None, Some(s)) => Ended::Signalled(s),
        _ => Ended::Exited(-1),
    }
}

/// Sends SIGKILL to process group `pgid` (which we created with setsid).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        let _ = kill(Pid::from_raw(-pgid), Signal::SIGKILL);
    }
}

/// Starts a daemon in namespace `ns` in its own session, output appended to `log`.
pub fn spawn_daemon(ns: Option<&str>, program: &str, args: &[String], log: &Path) -> Result<Child> {
    spawn_daemon_env(ns, program, args, &[], log, true)
}

/// [`spawn_daemon`] with extra environment variables; `net_only` as in [`Setup`] (a
/// learner's own command keeps the private /sys that `ip netns exec` would give it).
pub fn spawn_daemon_env(
    ns: Option<&str>,
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    net_only: bool,
) -> Result<Child> {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    let setup = Setup {
        net_only,
        ..Setup::default()
    };
    let mut cmd = command_with(ns, program, &setup)?;
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf);
    let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
    Ok(child)
}

/// A pidfd for child `pid` (it becomes readable when the child exits). Only the parent
/// that has not reaped `pid` yet can be sure the pid still names its child.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes two integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("opening a pidfd for process {pid} (needs Linux 5.3 or later)")
        });
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps child `pid` if it has exited (`block`: waits until it has). Returns its wait
/// status, or None when it is still running (or is not our child).
pub fn reap(pid: u32, block: bool) -> Option<i32> {
    let mut status = 0;
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: `status` is a live i32 for waitpid to write.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        if r == pid as libc::pid_t {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

/// "status 1" or "signal 9", for messages.
pub fn describe_wait_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), used
/// with the pid to make sure a recorded pid still names the process we started.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` is alive (not a zombie) and is still the process that started at `start`.
pub fn is_same_process(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

/// A process's command line (/proc/PID/cmdline, arguments joined by spaces), recorded
/// at spawn so a recorded pid is ended only while it still runs the same command.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// [`is_same_process`], and its command line is still `cmd` (an empty `cmd`, nothing
/// recorded, never matches).
pub fn is_same_process_cmd(pid: u32, start: u64, cmd: &str) -> bool {
    !cmd.is_empty() && is_same_process(pid, start) && cmdline(pid).as_deref() == Some(cmd)
}

/// Inode of a process's network namespace.
pub fn netns_inode(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

/// Every pid whose network namespace is one of `inodes`.
pub fn pids_in_namespaces(inodes: &[u64]) -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if pid != me && netns_inode(pid).is_some_and(|i| inodes.contains(&i)) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Ends one recorded process: SIGTERM, a short grace period, then SIGKILL.
pub fn stop(pid: u32, start: u64, grace: Duration) -> Result<()> {
    if !is_same_process(pid, start) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !is_same_process(pid, start) || is_zombie(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
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
    fn output_is_capped_and_the_rest_drained() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("head -c 300000000 /dev/zero | tr '\\0' x; echo done >&2");
        let out = run_bounded(cmd, Duration::from_secs(60), None).unwrap();
        // Drained to the end: the command finished on its own (no SIGPIPE, no timeout).
        assert_eq!(out.ended, Ended::Exited(0), "{:?}", out.ended);
        assert!(out.cut);
        assert_eq!(out.printed, 300_000_000 + "done\n".len() as u64);
        assert_eq!(out.text.len(), OUTPUT_CAP);
        assert!(out.text.bytes().all(|b| b == b'x'));
    }

    /// What is kept never grows past the cap, however much is printed: measured on the
    /// buffer itself, not on the process's peak memory, which other tests running in the
    /// same process move.
    #[test]
    fn memory_kept_is_bounded_by_the_cap_not_by_the_output() {
        use std::io::Read;
        let endless = std::io::repeat(b'x').take(300_000_000);
        let (kept, printed) = read_capped(endless, OUTPUT_CAP);
        assert_eq!(printed, 300_000_000);
        assert_eq!(kept.len(), OUTPUT_CAP);
        // Twice the output (the old read_to_end plus its copy) would be 600 MB.
        assert!(
            kept.capacity() <= 2 * OUTPUT_CAP,
            "kept {} bytes of capacity for a cap of {OUTPUT_CAP}",
            kept.capacity()
        );
    }

    #[test]
    fn short_output_is_whole_and_a_split_character_is_dropped() {
        let mut cmd = Command::new("printf");
        cmd.arg("h\\303\\251llo");
        let out = run_bounded(cmd, Duration::from_secs(10), None).unwrap();
        assert_eq!(
            (out.text.as_str(), out.cut, out.printed),
            ("héllo", false, 6)
        );
        let (kept, printed) = read_capped(&b"h\xc3\xa9llo"[..], 2);
        assert_eq!((into_text(kept), printed), ("h".to_string(), 6));
        assert_eq!(into_text(b"a\xffb".to_vec()), "a\u{fffd}b");
    }

    #[test]
    fn a_missing_program_is_named_with_its_debian_package() {
        let none = "/nonexistent-dir";
        assert_eq!(
            missing_program("tcpdump -ni flannel.100", none).as_deref(),
            Some("tcpdump: command not found; it comes with the Debian package tcpdump (apt-get install tcpdump)")
        );
        assert!(missing_program("ifconfig", none)
            .unwrap()
            .contains("package net-tools"));
        assert!(missing_program("etcdctl get /", none)
            .unwrap()
            .contains("package etcd-client"));
        assert!(missing_program("frobnicate", none)
            .unwrap()
            .contains("not installed"));
        // Found on PATH, shell builtins, assignments and paths are left to run.
        assert_eq!(missing_program("sh -c true", "/bin:/usr/bin"), None);
        for line in [
            "cd /tmp",
            "echo hi",
            "A=1 etcdctl get /",
            "./x",
            "[ -f x ]",
            "",
        ] {
            assert_eq!(missing_program(line, none), None, "{line}");
        }
    }

    #[test]
    fn plain_lines_skip_the_shell_and_others_keep_it() {
        assert_eq!(
            plain_words("ping -c 3 11.0.0.2"),
            Some(vec!["ping", "-c", "3", "11.0.0.2"])
        );
        assert_eq!(plain_words("ip -br addr"), Some(vec!["ip", "-br", "addr"]));
        for shelly in [
            "echo $HOME",
            "ls | wc -l",
            "a && b",
            "echo 'x y'",
            "cat /tmp/*.env",
            "ETCDCTL_API=2 etcdctl cluster-health",
            "cd /tmp",
            "sleep 1 &",
            "",
        ] {
            assert_eq!(plain_words(shelly), None, "{shelly}");
        }
    }
}
