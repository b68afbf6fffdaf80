//! The one test bed of the integration tests and the examples (these include this file
//! with `#[path]`): a simulation per test with its own instance name, a guard that removes
//! what a test made even when it fails, shell lines in namespaces, free ports, echo
//! servers, and a snapshot of the host's root network namespace to prove it is untouched.
//! `kubeproxy` (a small node topology) and `skupper` (routers on 127.0.0.1) build on it.
#![allow(dead_code)]

pub mod kubeproxy;
pub mod session;
pub mod skupper;

use knetsim::netns::{self, process};
use knetsim::sim::{Options, Sim};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The knetsim binary: cargo names it for integration tests; an example finds it beside
/// itself (`target/<profile>/knetsim`) and exits 3 with the build command when it is missing.
pub fn knetsim_exe() -> PathBuf {
    if let Some(exe) = option_env!("CARGO_BIN_EXE_knetsim") {
        return exe.into();
    }
    let me = std::env::current_exe().expect("current exe");
    match me
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("knetsim"))
    {
        Some(b) if b.exists() => b,
        _ => {
            eprintln!("error: the knetsim binary is not built next to this example; run `cargo build --release --bins --examples` first");
            std::process::exit(3);
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True as root; otherwise says the test is skipped and why (`if !root_or_skip() { return; }`).
pub fn root_or_skip() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: needs root to create network namespaces");
    }
    is_root()
}

/// Runs a shell line in namespace `ns` (the host's with None), bounded; whatever happened.
pub fn run(ns: Option<&str>, script: &str) -> process::Output {
    process::run_shell(ns, script, &[], Duration::from_secs(60), None).expect("running a command")
}

/// Runs a shell line in namespace `ns`: whether it succeeded, and its output.
pub fn sh_any(ns: &str, script: &str) -> (bool, String) {
    let out = run(Some(ns), script);
    (out.success(), out.text)
}

/// Runs a shell line in namespace `ns` and fails with its output when it fails.
pub fn sh(ns: &str, script: &str) -> String {
    let out = run(Some(ns), script);
    assert!(
        out.success(),
        "`{script}` in {ns} failed: {:?}\n{}",
        out.ended,
        out.text
    );
    out.text
}

/// Polls `f` until it returns Some, for at most `limit` (a bound so a broken daemon fails
/// the test instead of hanging it; no timing is asserted).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_for`] a condition.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    wait_for(what, limit, || f().then_some(()))
}

/// What a test made, removed on drop even when the test fails: child processes (killed
/// and reaped), namespaces, directories (kept for reading when the test failed), and
/// server threads (told to stop).
#[derive(Default)]
pub struct Guard {
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
    pub dirs: Vec<PathBuf>,
    pub stop: Arc<AtomicBool>,
}

impl Guard {
    /// A fresh namespace `name` with loopback up (an old one of that name is removed first).
    pub fn ns(&mut self, name: &str) -> String {
        let _ = netns::delete(name);
        netns::create(name).unwrap();
        self.namespaces.push(name.to_string());
        sh(name, "ip link set lo up");
        name.to_string()
    }

    /// File `name` holding `text` in a fresh private directory for `test`, removed on drop.
    pub fn file(&mut self, test: &str, name: &str, text: &str) -> PathBuf {
        let path = self.dir(test).join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A fresh private directory for this test, removed on drop.
    pub fn dir(&mut self, test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("knetsim-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        self.dirs.push(d.clone());
        d
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in self.namespaces.iter().rev() {
            let _ = netns::delete(n);
        }
        for d in &self.dirs {
            if std::thread::panicking() {
                eprintln!("logs kept in {}", d.display());
            } else {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// A port free right now and never handed out before in this process. It is released as
/// soon as it is probed and bound later by the program under test, so it is taken from
/// below the kernel's ephemeral range: a port from that range (what binding port 0
/// gives) could meanwhile become the local port of some outgoing connection, and tests
/// running beside this one open hundreds (a router then failed to listen, and the test
/// waited for a link that never came).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Up to 12,000 ports below the ephemeral range, above the privileged ones; each test
    // process starts at a place of its own, so two of them rarely probe the same ports.
    let low = ephemeral_low.saturating_sub(12_000).max(1024);
    let span = u32::from(ephemeral_low.saturating_sub(low).max(1));
    let mut given = GIVEN.lock().unwrap();
    let start = std::process::id().wrapping_mul(7919) % span;
    for i in 0..span {
        let port = low + ((start + given.len() as u32 * 13 + i) % span) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port between {low} and {ephemeral_low} on 127.0.0.1");
}

/// A TCP server on 127.0.0.1 (a free port, returned) running `handle` on a thread of its
/// own for every connection.
pub fn serve_each(handle: fn(TcpStream)) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || handle(s));
        }
    });
    port
}

/// An echo server on 127.0.0.1: writes back everything, half-closes when the client does.
pub fn echo_server() -> u16 {
    serve_each(|mut s| {
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// The example's argument `n` as a number, or `default`.
pub fn arg_or(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Connects, sends `data`, half-closes, reads everything back until EOF.
pub fn roundtrip(port: u16, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut w = s.try_clone()?;
    let data = data.to_vec();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(&data)?;
        w.shutdown(Shutdown::Write)
    });
    let mut out = vec![];
    s.read_to_end(&mut out)?;
    writer.join().unwrap()?;
    Ok(out)
}

/// Sends `sig` to process `pid` (one this test started).
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Closes `s` with a reset (RST) instead of a FIN.
pub fn close_with_reset(s: TcpStream) {
    knetsim::components::skupper::tcp::socket_zero_linger(&s).expect("SO_LINGER");
}

/// The middle value (the machines are noisy: medians, not means).
pub fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

pub fn options(instance: &str) -> Options {
    Options {
        instance: instance.to_string(),
        knetsim_exe: knetsim_exe(),
        progress: false,
        ..Options::default()
    }
}

pub fn sim(instance: &str) -> Sim {
    new_sim(instance).expect("creating the simulation")
}

/// A simulation without a progress bar, or why not (the examples report it).
pub fn new_sim(instance: &str) -> anyhow::Result<Sim> {
    Sim::new(options(instance))
}

/// Declares cluster `C0` of `workers` workers and `etcd` members (not started).
pub fn declare_c0(sim: &Sim, workers: u32, etcd: u32) -> anyhow::Result<knetsim::sim::Cluster> {
    sim.cluster("0", knetsim::sim::ClusterSpec { workers, etcd })
}

/// A simulation with one running cluster `C0` of `workers` workers and `etcd` members.
pub fn started(instance: &str, workers: u32, etcd: u32) -> (Sim, knetsim::sim::Cluster) {
    new_started(instance, workers, etcd).expect("bring-up")
}

/// [`started`] with two workers and one etcd member, and the two workers.
pub fn two_workers(
    instance: &str,
) -> (
    Sim,
    knetsim::sim::Cluster,
    knetsim::sim::Worker,
    knetsim::sim::Worker,
) {
    let (sim, c) = started(instance, 2, 1);
    let (w1, w2) = (c.worker("w1").unwrap(), c.worker("w2").unwrap());
    (sim, c, w1, w2)
}

/// [`started`] with one etcd member, and its worker w1 with a pod c1 on it.
pub fn with_pod(
    instance: &str,
    workers: u32,
) -> (Sim, knetsim::sim::Cluster, knetsim::sim::Worker) {
    let (sim, c) = started(instance, workers, 1);
    let w1 = c.worker("w1").unwrap();
    w1.create_container("c1", std::collections::BTreeMap::new())
        .unwrap();
    (sim, c, w1)
}

/// [`started`], with what went wrong as an error (for the benchmarks).
pub fn new_started(
    instance: &str,
    workers: u32,
    etcd: u32,
) -> anyhow::Result<(Sim, knetsim::sim::Cluster)> {
    let sim = new_sim(instance)?;
    let c = declare_c0(&sim, workers, etcd)?;
    sim.start()?;
    Ok((sim, c))
}

/// The message of `result`, which must be an error.
pub fn err_text<T, E: std::fmt::Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Asserts that `text` holds every one of `parts`, showing the text when it does not.
pub fn assert_holds(text: &str, parts: &[&str]) {
    for p in parts {
        assert!(text.contains(p), "{p:?} is missing from:\n{text}");
    }
}

/// Asserts that `text` starts with `start`, showing the text when it does not.
pub fn assert_starts(text: &str, start: &str) {
    assert!(text.starts_with(start), "{start:?} does not start:\n{text}");
}

/// How a command ended: its exit status (-1 when a signal ended it) and what it printed,
/// stdout then stderr.
pub struct Run {
    pub code: i32,
    pub text: String,
}

impl Run {
    /// A finished command's [`Run`]; no panic may have reached the user.
    pub fn of(out: std::process::Output) -> Run {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "a panic reached the user:\n{text}"
        );
        Run {
            code: out.status.code().unwrap_or(-1),
            text,
        }
    }
}

/// `knetsim --no-pause --instance INSTANCE SCRIPT`, as a learner runs a lesson.
pub fn knetsim_script(instance: &str, script: &std::path::Path) -> Command {
    let mut cmd = Command::new(knetsim_exe());
    cmd.args(["--no-pause", "--instance", instance]).arg(script);
    cmd
}

/// The processes that the record of `instance` holds, of those whose description starts
/// with `what`: (pid, start time). None recorded (yet) when there is no record.
pub fn recorded_processes(instance: &str, what: &str) -> Vec<(u32, u64)> {
    let Some(record) = knetsim::netns::record::read_record(instance).unwrap_or_default() else {
        return vec![];
    };
    record
        .processes
        .iter()
        .filter(|p| p.what.starts_with(what))
        .map(|p| (p.pid, p.start_time))
        .collect()
}

/// `knetsim cleanup --instance INSTANCE`, which must succeed.
pub fn knetsim_cleanup(instance: &str) {
    let out = Command::new(knetsim_exe())
        .args(["cleanup", "--instance", instance])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// [`started`], for a test that needs root: None, the skip said, without it.
pub fn started_as_root(
    instance: &str,
    workers: u32,
    etcd: u32,
) -> Option<(Sim, knetsim::sim::Cluster)> {
    root_or_skip().then(|| started(instance, workers, etcd))
}

/// A guard holding a fresh namespace `name`, for a test that needs root: None, the skip
/// said, without it.
pub fn guarded_ns(name: &str) -> Option<(Guard, String)> {
    if !root_or_skip() {
        return None;
    }
    let mut g = Guard::default();
    let ns = g.ns(name);
    Some((g, ns))
}

/// Whether `pid` names a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| !s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// Tears `sim` down and asserts that nothing of it is left: no namespace, no state, and
/// none of `pids` (processes it ran) alive.
pub fn tear_down(sim: &Sim, pids: &[u32]) {
    sim.teardown().expect("teardown");
    for &p in pids {
        assert!(!alive(p), "process {p} survived teardown");
    }
    assert_nothing_left(sim.instance(), &[]);
}

/// [`tear_down`], and the host's root namespace is as it was `before` the simulation.
pub fn tear_down_since(sim: &Sim, pids: &[u32], before: HostSnapshot) {
    tear_down(sim, pids);
    assert_eq!(before, HostSnapshot::take(), "the root namespace changed");
}

/// What the simulator must never change in the host's root network namespace.
#[derive(Debug, PartialEq)]
pub struct HostSnapshot {
    links: String,
    addrs: String,
    routes: String,
    nft: String,
    sysctls: String,
}

fn host_sh(cmd: &str) -> String {
    run(None, cmd).text
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        HostSnapshot {
            links: host_sh("ip -o link show | sed 's/ qlen [0-9]*//'"),
            addrs: host_sh("ip -o addr show"),
            routes: host_sh("ip route show table all"),
            nft: host_sh("nft list ruleset"),
            sysctls: host_sh(
                "for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/* \
                 /proc/sys/net/ipv4/conf/default/* /proc/sys/net/bridge/* /proc/sys/net/core/somaxconn; \
                 do [ -r \"$f\" ] && echo \"$f=$(cat $f 2>/dev/null)\"; done",
            ),
        }
    }
}

/// The namespaces of instance `instance` under /run/netns.
pub fn namespaces_of(instance: &str) -> Vec<String> {
    let prefix = format!("{instance}-");
    netns::list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Asserts that nothing of instance `instance` is left: no namespace, no etcd data, and no
/// run directory, except the logs a failed run keeps (only non-empty `*.log` files, in a
/// private directory, no record); those are then removed the way a user would, with
/// `knetsim cleanup`, so the test leaves nothing either.
pub fn assert_nothing_left(instance: &str, namespaces: &[&str]) {
    let listed = knetsim::netns::list();
    for ns in namespaces {
        assert!(
            !listed.iter().any(|n| n == ns),
            "namespace {ns} was left behind: {listed:?}"
        );
    }
    let ours = namespaces_of(instance);
    assert!(ours.is_empty(), "namespaces of {instance} left: {ours:?}");
    let shm = knetsim::netns::record::shm_dir(instance);
    assert!(!shm.exists(), "etcd data {} was left", shm.display());
    let dir = knetsim::netns::record::run_dir(instance);
    if dir.exists() {
        let others = assert_only_logs(&dir);
        assert!(
            others.is_empty(),
            "run directory {} was left with more than logs: {others:?}",
            dir.display()
        );
        let out = Command::new(knetsim_exe())
            .args(["cleanup", "--instance", instance])
            .output()
            .expect("knetsim cleanup");
        assert!(out.status.success(), "cleanup of kept logs failed: {out:?}");
        assert!(!dir.exists(), "cleanup left {}", dir.display());
    }
}

/// Checks that `dir` is private and returns every entry below it that is not a
/// non-empty `*.log` file or a directory.
pub fn assert_only_logs(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(dir).unwrap();
    assert!(
        m.is_dir() && m.uid() == 0 && m.mode() & 0o077 == 0,
        "{} is not a private directory of root's (mode {:o})",
        dir.display(),
        m.mode()
    );
    let mut others = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if !(m.is_file() && m.len() > 0 && p.extension().is_some_and(|x| x == "log")) {
                others.push(p);
            }
        }
    }
    others
}

/// [`piped_console`] after a setup script holding `setup`, in a directory of `instance`'s
/// own (also HOME, so it holds the history file); the output, and the directory.
pub fn console_after(instance: &str, setup: &str, input: &str) -> (std::process::Output, PathBuf) {
    let base = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(instance);
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("setup.rhai");
    std::fs::write(&script, setup).unwrap();
    let _ = std::fs::remove_file(dir.join(".knetsim_history"));
    (piped_console(instance, &script, &dir, input), dir)
}

/// A learner typing into a piped console: `knetsim --instance INSTANCE --console SCRIPT` with
/// `home` as HOME (its history file) and `input` on stdin; returns once knetsim exits.
pub fn piped_console(
    instance: &str,
    script: &std::path::Path,
    home: &std::path::Path,
    input: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(knetsim_exe())
        .args(["--instance", instance, "--console"])
        .arg(script)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting knetsim");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("waiting for knetsim")
}
