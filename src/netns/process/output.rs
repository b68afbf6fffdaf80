//! A short-lived child's output and exit status, read on the caller's thread, with the
//! child reaped on the closer thread ([`crate::closer::reap_later`], which says why).

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus, Output};

/// What [`Child::wait_with_output`] returns (stdout and stderr as far as they were piped,
/// read to their end side by side so neither pipe can fill up), but the child is left to
/// the closer thread to reap once its exit status has been read.
pub fn output_reaping_later(mut child: Child) -> std::io::Result<Output> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    match (child.stdout.take(), child.stderr.take()) {
        (Some(mut out), Some(mut err)) => {
            read_both((&mut out, &mut stdout), (&mut err, &mut stderr))?
        }
        (Some(mut out), None) => {
            out.read_to_end(&mut stdout)?;
        }
        (None, Some(mut err)) => {
            err.read_to_end(&mut stderr)?;
        }
        (None, None) => {}
    }
    let status = match exit_status_unreaped(child.id()) {
        Ok(status) => status,
        // Not waitable that way (it cannot be otherwise for our own child): reaped here.
        Err(_) => {
            return child.wait().map(|status| Output {
                status,
                stdout,
                stderr,
            })
        }
    };
    crate::closer::reap_later(child);
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Reads two pipes to their end, whichever has something first.
fn read_both<A: Read + AsFd, B: Read + AsFd>(
    a: (&mut A, &mut Vec<u8>),
    b: (&mut B, &mut Vec<u8>),
) -> std::io::Result<()> {
    let (mut a_open, mut b_open) = (true, true);
    let mut chunk = [0u8; 8192];
    while a_open || b_open {
        let (a_ready, b_ready) = {
            let mut fds = Vec::with_capacity(2);
            if a_open {
                fds.push(PollFd::new(a.0.as_fd(), PollFlags::POLLIN));
            }
            if b_open {
                fds.push(PollFd::new(b.0.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            // Readable, or hung up (end of file), or in error: a read says which.
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            let mut ready = ready.into_iter();
            let a_ready = a_open && ready.next().unwrap_or(false);
            let b_ready = b_open && ready.next().unwrap_or(false);
            (a_ready, b_ready)
        };
        if a_ready {
            a_open = read_some(a.0, a.1, &mut chunk)?;
        }
        if b_ready {
            b_open = read_some(b.0, b.1, &mut chunk)?;
        }
    }
    Ok(())
}

/// One read into `into`; false at end of file.
fn read_some(from: &mut impl Read, into: &mut Vec<u8>, chunk: &mut [u8]) -> std::io::Result<bool> {
    loop {
        match from.read(chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                into.extend_from_slice(&chunk[..n]);
                return Ok(true);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits for child `pid` to exit and returns its status, leaving it unreaped (WNOWAIT).
fn exit_status_unreaped(pid: u32) -> nix::Result<ExitStatus> {
    let pid = Pid::from_raw(pid as i32);
    loop {
        match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                return Ok(ExitStatus::from_raw(
                    signal as i32 | if core { 0x80 } else { 0 },
                ))
            }
            // Only exits were asked for; anything else is asked again.
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn run(script: &str) -> Output {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        output_reaping_later(child).unwrap()
    }

    #[test]
    fn output_and_status_are_those_wait_with_output_gives() {
        let out = run("echo out; echo err >&2; exit 3");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(run("true").status.success());
        let killed = run("kill -9 $$");
        assert_eq!(killed.status.signal(), Some(9), "{:?}", killed.status);
    }

    /// Far more than a pipe holds on both pipes at once: neither read waits on the other.
    #[test]
    fn both_pipes_are_read_side_by_side() {
        let out =
            run("head -c 300000 /dev/zero; head -c 300000 /dev/zero >&2; head -c 300000 /dev/zero");
        assert_eq!(out.stdout.len(), 600_000);
        assert_eq!(out.stderr.len(), 300_000);
        assert!(out.status.success());
    }
}
