//! Short commands whose output is returned, bounded by a timeout, a cancel flag and a cap.

use super::{kill_group, shell_command, Setup};
use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
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
        ended: stopped.unwrap_or_else(|| Ended::from(status)),
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

impl From<std::process::ExitStatus> for Ended {
    fn from(status: std::process::ExitStatus) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Ended::Exited(c),
            (None, Some(s)) => Ended::Signalled(s),
            _ => Ended::Exited(-1),
        }
    }
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
}
