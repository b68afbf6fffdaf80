//! Recorded processes: reaping our children, and making sure a recorded pid still names
//! the process we started before we signal it.

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

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
