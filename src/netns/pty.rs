//! Commands typed at the console, run live: on a pseudo-terminal when the console has a
//! terminal (output as it comes, keystrokes to the command, Ctrl-C to its foreground
//! process group through the pty, the window size passed on), else streamed through a
//! pipe. Neither has a time limit: the user ends the command.

use super::process::{kill_group, Ended};
use anyhow::{Context, Result};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long output may still arrive after the command ended (from its background
/// children); then its process group, which we created, is ended by its id.
const DRAIN: Duration = Duration::from_millis(300);

static RESIZED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_winch(_: libc::c_int) {
    RESIZED.store(true, Ordering::SeqCst);
}

fn window_size(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain integers; all-zero is a valid value.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which lives for the call.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

/// The console's terminal in raw mode while a command runs on the pty (its keystrokes,
/// Ctrl-C included, go to the command as bytes); restored when dropped.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: termios is plain integers and arrays; all-zero is a valid value.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes one termios into `t`, which lives for the call.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: `t` is the termios just read; cfmakeraw and tcsetattr only read and write it.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: `saved` is the termios read in `enter`, for the same descriptor.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved);
        }
    }
}

/// The old SIGWINCH disposition, put back when dropped.
struct WinchHandler(Option<SigAction>);

impl WinchHandler {
    fn install() -> WinchHandler {
        let on = SigAction::new(
            SigHandler::Handler(on_winch),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        WinchHandler(unsafe { sigaction(Signal::SIGWINCH, &on) }.ok())
    }
}

impl Drop for WinchHandler {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            // SAFETY: puts back the disposition that was in place before `install`.
            let _ = unsafe { sigaction(Signal::SIGWINCH, old) };
        }
    }
}

fn write_all_fd(fd: RawFd, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: writes at most buf.len() bytes from a live slice.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if e.kind() == std::io::ErrorKind::WouldBlock {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Reads what is there; Ok(0) at the end (a pty master reads EIO once every slave is closed).
fn read_fd(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: reads at most buf.len() bytes into a live, writable slice.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EIO) => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// How the command ended, once it has, and when: its output is drained for [`DRAIN`]
/// after that.
#[derive(Default)]
struct Ending {
    status: Option<Ended>,
    at: Option<Instant>,
}

impl Ending {
    /// Notes the child's end if it has just ended; true once the drain time after it is over.
    fn drained(&mut self, child: &mut Child) -> Result<bool> {
        if self.status.is_none() {
            if let Some(s) = child.try_wait().context("waiting for the command")? {
                self.status = Some(Ended::from(s));
                self.at = Some(Instant::now());
            }
        }
        Ok(self.at.is_some_and(|t| t.elapsed() > DRAIN))
    }
}

/// Runs `cmd` (built with a new session, e.g. by `process::command_with`) on a new
/// pseudo-terminal that becomes its controlling terminal, wired to the console's terminal
/// `tty_in`/`tty_out`. `cancel` (SIGINT or SIGTERM to knetsim itself) ends the command's
/// process group.
pub fn run_on_pty(
    mut cmd: Command,
    tty_in: RawFd,
    tty_out: RawFd,
    cancel: &AtomicBool,
) -> Result<Ended> {
    let ws = window_size(tty_in).or_else(|| window_size(tty_out));
    let pty = nix::pty::openpty(ws.as_ref().map(winsize_nix).as_ref(), None)
        .context("opening a pseudo-terminal")?;
    let master = pty.master;
    // openpty leaves both ends inheritable: without close-on-exec the command (and every
    // daemon it starts) would keep the master open, and the console would never see the end.
    for fd in [master.as_raw_fd(), pty.slave.as_raw_fd()] {
        // SAFETY: fcntl on descriptors openpty just returned and we own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    cmd.stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave));
    // Runs after the session was created: the pty becomes the controlling terminal, so
    // the line discipline turns Ctrl-C into SIGINT for the command's foreground group.
    // SAFETY: the closure runs between fork and exec and only makes one ioctl on fd 0.
    unsafe {
        cmd.pre_exec(|| {
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let _winch = WinchHandler::install();
    RESIZED.store(false, Ordering::SeqCst);
    let raw = RawMode::enter(tty_in);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    drop(cmd); // closes our copies of the slave
    let pgid = child.id() as i32;
    let mfd = master.as_raw_fd();
    // SAFETY: fcntl on the master descriptor we own.
    unsafe {
        libc::fcntl(mfd, libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut buf = vec![0u8; 16 << 10];
    let mut ending = Ending::default();
    let mut stdin_open = raw.is_some();
    loop {
        if cancel.load(Ordering::SeqCst) && ending.status.is_none() {
            kill_group(pgid);
        }
        if ending.drained(&mut child)? {
            kill_group(pgid);
            break;
        }
        let mut fds = [
            libc::pollfd {
                fd: mfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if stdin_open { tty_in } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfd, as the count says.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 20) };
        // After the poll: a resize signalled before keystrokes arrived reaches the
        // command before they do.
        if RESIZED.swap(false, Ordering::SeqCst) {
            if let Some(ws) = window_size(tty_in) {
                // SAFETY: TIOCSWINSZ reads one winsize from `ws`, which lives for the call.
                unsafe {
                    libc::ioctl(mfd, libc::TIOCSWINSZ, &ws);
                }
            }
        }
        if n < 0 {
            continue; // EINTR (a resize)
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read_fd(mfd, &mut buf) {
                Ok(0) => {
                    if ending.status.is_some() {
                        break;
                    }
                    // Every slave closed but the command still runs: wait for it.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(k) => write_all_fd(tty_out, &buf[..k])?,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("reading the command's terminal"),
            }
        }
        if stdin_open && fds[1].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            match read_fd(tty_in, &mut buf) {
                Ok(0) => stdin_open = false,
                Ok(k) => {
                    if ending.status.is_none() {
                        let _ = write_all_fd(mfd, &buf[..k]);
                    }
                }
                Err(_) => stdin_open = false,
            }
        }
    }
    let ended = match ending.status {
        Some(s) => s,
        None => Ended::from(child.wait()?),
    };
    drop(raw);
    Ok(if cancel.load(Ordering::SeqCst) {
        Ended::Cancelled
    } else {
        ended
    })
}

fn winsize_nix(ws: &libc::winsize) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: ws.ws_row,
        ws_col: ws.ws_col,
        ws_xpixel: ws.ws_xpixel,
        ws_ypixel: ws.ws_ypixel,
    }
}

fn spawn_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("starting the command")
}

/// Runs `cmd` without a terminal, its output (stdout and stderr together) written to
/// `out` as it comes, stdin empty; no time limit. `cancel` ends its process group.
pub fn run_streaming(mut cmd: Command, out: &mut dyn Write, cancel: &AtomicBool) -> Result<Ended> {
    use std::sync::mpsc::{channel, RecvTimeoutError};
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    let writer2 = writer.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer2);
    let mut child: Child = cmd.spawn().map_err(spawn_error)?;
    drop(cmd);
    let pgid = child.id() as i32;
    let (tx, rx) = channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut ending = Ending::default();
    let mut cancelled = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(chunk) => {
                let _ = out.write_all(&chunk);
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => {
                if ending.status.is_some() {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if !cancelled && cancel.load(Ordering::SeqCst) {
            kill_group(pgid);
            cancelled = true;
        }
        if ending.drained(&mut child)? {
            kill_group(pgid);
            while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
                let _ = out.write_all(&chunk);
            }
            break;
        }
    }
    let _ = out.flush();
    Ok(if cancelled {
        Ended::Cancelled
    } else {
        ending.status.unwrap_or(Ended::Exited(-1))
    })
}

/// Whether `fd` is a terminal.
pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_shows_output_before_the_command_ends_and_cancel_ends_it() {
        type Chunks = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;
        struct Seen(Chunks);
        impl Write for Seen {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().push(b.to_vec());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut out = Seen(seen.clone());
        let cancel = std::sync::Arc::new(AtomicBool::new(false));
        let c2 = cancel.clone();
        let seen2 = seen.clone();
        // Cancel only once the first line has been seen: it streamed.
        std::thread::spawn(move || loop {
            if !seen2.lock().unwrap().is_empty() {
                c2.store(true, Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        let mut cmd = super::super::process::command_in(None, "/bin/sh").unwrap();
        cmd.arg("-c").arg("echo first; exec sleep 600");
        let ended = run_streaming(cmd, &mut out, &cancel).unwrap();
        assert_eq!(ended, Ended::Cancelled);
        let all: Vec<u8> = seen.lock().unwrap().concat();
        assert_eq!(String::from_utf8(all).unwrap(), "first\n");
    }

    #[test]
    fn streaming_reports_the_exit_status() {
        let mut cmd = super::super::process::command_in(None, "/bin/sh").unwrap();
        cmd.arg("-c").arg("echo out; echo err >&2; exit 3");
        let mut out = Vec::new();
        let ended = run_streaming(cmd, &mut out, &AtomicBool::new(false)).unwrap();
        assert_eq!(ended, Ended::Exited(3));
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
    }
}
