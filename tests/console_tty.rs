//! The console on a terminal, end to end: `knetsim` (the default scenario, then the
//! console) runs on a pseudo-terminal made here, lines are typed into it and the screen is
//! read back. One test follows the original README's walkthrough as typed there; one
//! checks live commands (output before the end, Ctrl-C, a resize) and the console's answers.
//! Both check that nothing is left and the host's root namespace is unchanged.

mod common;

use common::assert_holds;

use common::{assert_nothing_left, knetsim_exe, tear_down, HostSnapshot};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROMPT: &str = "knetsim> ";

/// knetsim on a pseudo-terminal: what it printed so far, and a way to type.
struct Tty {
    master: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    seen: usize,
    child: Child,
    instance: String,
    /// The root namespace before knetsim started, for [`Tty::exit_cleanly`].
    host: Option<HostSnapshot>,
}

impl Tty {
    fn spawn(instance: &str) -> Tty {
        // rustyline reads plain lines on a dumb terminal; the console still has a tty.
        Tty::spawn_on(instance, "dumb")
    }

    /// [`Tty::spawn`] with `TERM` set to `term` (rustyline drives a real one in raw mode).
    fn spawn_on(instance: &str, term: &str) -> Tty {
        let host = HostSnapshot::take();
        let ws = nix::pty::Winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(instance);
        std::fs::create_dir_all(&home).unwrap();
        // Close-on-exec, or knetsim and every daemon it starts would hold the master.
        // SAFETY: fcntl on the master descriptor openpty just returned.
        unsafe {
            libc::fcntl(pty.master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
        let slave: OwnedFd = pty.slave;
        let mut cmd = Command::new(knetsim_exe());
        cmd.args(["--instance", instance])
            .env("HOME", &home)
            .env("NO_COLOR", "1")
            .env("TERM", term)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: between fork and exec the closure only makes two system calls (setsid, ioctl).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("starting knetsim");
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut r, s) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Tty {
            master,
            screen,
            seen: 0,
            child,
            instance: instance.to_string(),
            host: Some(host),
        }
    }

    fn text_since(&self, from: usize) -> String {
        let s = self.screen.lock().unwrap();
        String::from_utf8_lossy(&s[from.min(s.len())..]).replace('\r', "")
    }

    /// Waits until the screen, from what was not consumed yet, shows `want`; returns that
    /// part (up to and including `want`) and consumes it.
    fn wait_for(&mut self, want: &str, limit: Duration) -> String {
        let t = Instant::now();
        loop {
            {
                let s = self.screen.lock().unwrap();
                let raw = &s[self.seen.min(s.len())..];
                let text = String::from_utf8_lossy(raw);
                if let Some(i) = text.find(want) {
                    let part = text[..i + want.len()].to_string();
                    self.seen += part.len();
                    return part.replace('\r', "");
                }
            }
            assert!(
                t.elapsed() < limit,
                "waited {limit:?} for {want:?}; the screen since then:\n{}",
                self.text_since(self.seen)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_bytes(&mut self, b: &[u8]) {
        self.master.write_all(b).unwrap();
    }

    /// Types `line` and Enter; what it printed up to the next prompt holds each of `parts`.
    fn shows(&mut self, line: &str, parts: &[&str]) {
        assert_holds(&self.run(line, CMD), parts);
    }

    /// Types `line` and Enter, and returns what it printed up to the next prompt.
    fn run(&mut self, line: &str, limit: Duration) -> String {
        self.type_bytes(format!("{line}\r").as_bytes());
        let out = self.wait_for(PROMPT, limit);
        eprintln!("--- {line}\n{out}");
        out
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // The kernel signals SIGWINCH to the terminal's foreground group (knetsim).
        assert_eq!(
            // SAFETY: TIOCSWINSZ reads one winsize from `ws`, which lives for the call.
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) },
            0
        );
    }

    /// Types `exit`: knetsim ends with status 0 and leaves nothing behind, in its run or in
    /// the root namespace.
    fn exit_cleanly(mut self) {
        assert_eq!(self.wait_exit_after(b"exit\r"), 0);
        self.assert_nothing_left();
    }

    /// After knetsim exited: nothing of its run is left, in the run or in the root namespace.
    fn assert_nothing_left(&mut self) {
        let host = self.host.take();
        assert_nothing_left(&self.instance, &[]);
        assert_eq!(
            host,
            Some(HostSnapshot::take()),
            "the host's root namespace changed"
        );
    }

    /// Types `keys` and waits until knetsim has exited; returns its exit status.
    fn wait_exit_after(&mut self, keys: &[u8]) -> i32 {
        self.type_bytes(keys);
        self.wait_exit()
    }

    /// knetsim's side of the terminal, opened once more (without becoming this test's
    /// controlling terminal).
    fn open_slave(&self) -> std::fs::File {
        let mut name = [0u8; 128];
        // SAFETY: ptsname_r writes at most `name.len()` bytes into `name`.
        let r = unsafe {
            libc::ptsname_r(
                self.master.as_raw_fd(),
                name.as_mut_ptr().cast(),
                name.len(),
            )
        };
        assert_eq!(r, 0, "ptsname_r");
        let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let path = std::str::from_utf8(&name[..end]).unwrap().to_string();
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {path}: {e}"))
    }

    /// The mode of knetsim's side of the terminal (as `stty` there would show it).
    fn terminal_mode(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(self.open_slave()).expect("the terminal's mode")
    }

    /// Waits until knetsim has exited on its own; returns its exit status.
    fn wait_exit(&mut self) -> i32 {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "knetsim did not exit:\n{}",
                self.text_since(0)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        // A failed assertion must not leave the simulation up: SIGTERM ends a running
        // command and the run, `exit` leaves a console waiting for a line; both tear down.
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill takes two integers; the pid is our own unreaped child.
            unsafe {
                libc::kill(self.child.id() as i32, libc::SIGTERM);
            }
            let _ = self.master.write_all(b"\x03\rexit\r");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(60) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("knetsim (pid {}) did not exit", self.child.id());
        }
    }
}

const SCENARIO_UP: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(60);

#[test]
fn the_original_readme_walkthrough_as_typed_there() {
    let mut t = Tty::spawn("con-walk");
    let welcome = t.wait_for(PROMPT, SCENARIO_UP);
    assert_holds(&welcome, &["svc1"]);
    assert_holds(&welcome, &["grp1"]);

    t.shows(
        r#"py C0w1.exec_container("c1", "ifconfig")"#,
        &["eth0", "inet 11."],
    );

    t.shows(
        r#"py C0w1.exec_container("c1", "ping 100.64.10.1 -c 5")"#,
        &["5 packets transmitted, 5 received"],
    );

    t.shows(
        "C0w1 nft list ruleset",
        &["table ip kube-proxy", "100.64.10.1"],
    );

    let out = t.run(r#"py C0w3.delete_container("c3")"#, CMD);
    assert!(!out.contains("error"), "{out}");
    let out = t.run("nodes", CMD);
    let c0w3 = out.lines().find(|l| l.contains("C0w3")).unwrap_or_default();
    let pods: Vec<&str> = c0w3
        .split(['┆', ','])
        .filter_map(|p| p.split_whitespace().next())
        .collect();
    assert!(
        pods.contains(&"c4") && !pods.contains(&"c3"),
        "{pods:?}\n{out}"
    );

    t.shows(
        r#"py C1w1.exec_container("c1", "wget 10.0.0.8:1028")"#,
        &["index.html", "saved"],
    );
    // wget ran in C1w1's own directory of the run state, not in the user's folder.
    let page = knetsim::netns::record::run_dir(&t.instance).join("C1w1/index.html");
    let body = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        body.contains("hello from c4"),
        "{}: {body:?}",
        page.display()
    );

    t.shows("C0e1 etcdctl cluster-health", &["cluster is healthy"]);

    t.shows("C0w1 ifconfig", &["flannel.100", "10.0.0.3"]);

    t.shows("C0w1 ps aux | grep skupper", &["skrouterd"]);

    let out = t.run("C0e1 curl -s 10.0.0.3:8001/svc1", CMD);
    assert!(out.contains("S1-W2") || out.contains("S1-W3"), "{out}");

    // etcdctl as tutorials type it: explicit endpoints, v3 get.
    t.shows(
        "C0w1 etcdctl --endpoints http://10.1.0.1:2379 get --prefix /coreos.com --keys-only",
        &["/coreos.com/network/config"],
    );

    t.exit_cleanly();
}

#[test]
fn live_commands_ctrl_c_resize_and_the_consoles_answers() {
    let mut t = Tty::spawn("con-live");
    t.wait_for(PROMPT, SCENARIO_UP);

    // Replies show while ping still runs; Ctrl-C (0x03 on the terminal) ends it through
    // the command's own pty, and the console stays.
    t.type_bytes(b"C0w1 ping 10.0.0.4\r");
    let first = t.wait_for("bytes from 10.0.0.4", CMD);
    assert!(!first.contains("packet loss"), "{first}");
    t.type_bytes(b"\x03");
    let rest = t.wait_for(PROMPT, CMD);
    assert!(
        rest.contains("packet loss"),
        "ping's summary after Ctrl-C:\n{rest}"
    );
    let out = t.run("1 + 1", CMD);
    assert!(out.contains('2'), "the console goes on after Ctrl-C: {out}");

    // Names resolve: nodes, and pods of the node's own cluster by their short name.
    t.shows("C0w1 ping -c 1 C0w2", &["C0w2 (10.0.0.4)", "1 received"]);
    t.shows("C0w1 ping -c 1 c2", &["1 received"]);
    t.shows("C1w2 getent hosts C0-c2", &[" C0-c2", "\n11."]);

    // A non-zero exit is shown; a missing program is named with its package.
    t.shows("C0w1 sh -c 'exit 3'", &["exit status 3"]);
    t.shows(
        "C0w1 no-such-tool-here -x",
        &["no-such-tool-here: command not found"],
    );

    // A resize while a command runs reaches it (TIOCSWINSZ on its pty).
    // (The typed line shows `rea""dy`; only the running command prints `ready`.)
    t.type_bytes(b"C0w1 sh -c 'echo rea\"\"dy; read x; stty size'\r");
    t.wait_for("ready", CMD);
    t.resize(50, 132);
    t.shows("", &["50 132"]);

    t.shows(
        "C0w9 ip a",
        &["no node C0w9 (nodes: C0e1, C0e2, C0w1, C0w2, C0w3, C1e1"],
    );
    t.shows(
        "pingal",
        &["unknown command 'pingal': did you mean pingall?"],
    );

    t.exit_cleanly();
}

#[test]
fn knetsim_exec_passes_its_arguments_as_given_and_names_resolve() {
    let host = HostSnapshot::take();
    let instance = "con-exec";
    let (sim, c) = common::started(instance, 2, 1);
    let w1 = c.worker("w1").unwrap();
    // Any exec brings the cluster's hosts file up to date; `knetsim exec` mounts it too.
    let out = w1.exec("getent hosts C0w2").unwrap();
    assert_holds(&out, &["C0w2"]);
    let exec = |args: &[&str]| {
        Command::new(knetsim_exe())
            .args(["exec", "--instance", instance, "0", "w1", "--"])
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let o = exec(&["sh", "-c", "echo one two"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "one two\n", "{o:?}");
    let o = exec(&["printf", "%s|", "a b", "c"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "a b|c|", "{o:?}");
    let o = exec(&["getent", "hosts", "C0w2"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("C0w2"), "{o:?}");
    let o = exec(&["no-such-tool-here"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert_holds(&err, &["no-such-tool-here: command not found"]);
    let o = exec(&["tcpdump-not-here"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not installed"));
    tear_down(&sim, &[]);
    assert_eq!(
        HostSnapshot::take(),
        host,
        "the host's root namespace changed"
    );
}

/// SIGTERM (a `kill`, a container runtime stopping the run) at a console waiting for a line
/// ends the run at once, with nothing typed: teardown, status 143, and the terminal back in
/// the mode it had (rustyline drives a real terminal in raw mode), for both kinds of
/// terminal rustyline knows.
#[test]
fn sigterm_at_the_waiting_prompt_tears_down_without_a_key() {
    for (instance, term) in [("con-term", "xterm"), ("con-termd", "dumb")] {
        let mut t = Tty::spawn_on(instance, term);
        let before = t.terminal_mode();
        t.wait_for(PROMPT, SCENARIO_UP);
        // Give rustyline time to be waiting in its read, where the signal used to be lost.
        std::thread::sleep(Duration::from_millis(300));
        let waiting = t.terminal_mode();
        if term != "dumb" {
            assert_ne!(
                before.local_flags, waiting.local_flags,
                "rustyline should hold a real terminal in raw mode while it waits"
            );
        }
        // SAFETY: kill takes two integers; the pid is our own unreaped child.
        unsafe {
            libc::kill(t.child.id() as i32, libc::SIGTERM);
        }
        let code = t.wait_exit();
        let screen = t.text_since(0);
        assert_eq!(
            code, 143,
            "TERM={term}: exit status after SIGTERM:\n{screen}"
        );
        assert!(
            screen.contains("leaving the console"),
            "TERM={term}: the console said nothing on leaving:\n{screen}"
        );
        let after = t.terminal_mode();
        assert_eq!(
            (before.local_flags, before.input_flags),
            (after.local_flags, after.input_flags),
            "TERM={term}: the terminal's mode was not put back"
        );
        t.assert_nothing_left();
    }
}

/// The terminal hanging up (a window closed, an SSH connection lost) ends the run as
/// SIGTERM does: teardown, status 129, nothing left. Before, SIGHUP's default killed knetsim
/// and left every namespace and daemon of the run behind.
#[test]
fn a_terminal_that_hangs_up_ends_the_run_and_leaves_nothing() {
    let instance = "con-hup";
    let mut t = Tty::spawn(instance);
    t.wait_for(PROMPT, SCENARIO_UP);
    // The kernel's hang-up of the terminal, as when its last window or connection closes:
    // SIGHUP to knetsim, the terminal's controlling process, and reads and writes there fail.
    let slave = t.open_slave();
    // SAFETY: an ioctl without argument on a descriptor this test holds.
    let r = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCVHANGUP) };
    assert_eq!(r, 0, "TIOCVHANGUP: {}", std::io::Error::last_os_error());
    drop(slave);
    let code = t.wait_exit();
    assert_eq!(
        code,
        129,
        "exit status after the hang-up:\n{}",
        t.text_since(0)
    );
    t.assert_nothing_left();
}

/// A notice from the supervisor while the console waits for a line (here: a flannel agent
/// killed behind its back, and restarted) prints on lines of its own above the prompt,
/// and rustyline draws the prompt again with what was typed so far, instead of the notice
/// running into the prompt's line.
#[test]
fn a_notice_while_the_console_waits_prints_above_the_prompt() {
    let instance = "con-note";
    let mut t = Tty::spawn_on(instance, "xterm");
    t.wait_for(PROMPT, SCENARIO_UP);
    t.type_bytes(b"1 + ");
    t.wait_for("1 + ", CMD);
    // The agent's own log names its pid: the test ends only a process of its own run.
    let log = format!("/dev/shm/knetsim-run/{instance}/C0w1/flanneld.log");
    let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{log}: {e}"));
    let pid: i32 = text
        .split("flanneld[")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {log}:\n{text}"));
    // SAFETY: kill takes two integers; the pid is of the agent this run started.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let note = t.wait_for("restarted", CMD);
    assert!(note.contains("! flanneld"), "{note}");
    // The prompt comes back after the notice, with the half-typed line.
    let after = t.wait_for("1 + ", CMD);
    assert!(
        after.contains(PROMPT),
        "no prompt after the notice:\n{after}"
    );
    t.type_bytes(b"1\r");
    t.wait_for("2", CMD);
    t.wait_for(PROMPT, CMD);
    t.exit_cleanly();
}
