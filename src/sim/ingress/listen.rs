//! Whether a port is taken, and waiting until a daemon listens: shared by nginx and the
//! echo servers.

use crate::netns::{self, process};
use crate::sim::supervise::log_tail;
use crate::wait::{Poll, Wait};
use anyhow::{anyhow, bail, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

pub(super) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Between two connects of [`wait_listening`].
const LISTEN_POLL: Duration = Duration::from_millis(2);

/// Who listens on TCP `port` in namespace `ns`, if anyone: found by trying to bind it.
pub(super) fn port_holder(ns: &str, port: u16) -> Result<Option<String>> {
    let busy = netns::run_in(ns, move || {
        match TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)) {
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Ok(true),
            Err(e) => Err(anyhow!("checking port {port}: {e}")),
        }
    })?;
    if !busy {
        return Ok(None);
    }
    // Name the process for the message (ss -p shows it); best effort.
    let who = process::run_shell(
        Some(ns),
        &format!("ss -ltnpH 'sport = :{port}'"),
        &[],
        Duration::from_secs(3),
        None,
    )
    .ok()
    .and_then(|o| {
        let t = o.text;
        let users = t.find("users:((")?;
        let rest = &t[users + 8..];
        Some(rest[..rest.find(')').unwrap_or(rest.len())].replace('"', ""))
    });
    Ok(Some(who.map(|w| format!(" (by {w})")).unwrap_or_default()))
}

/// Waits until something accepts TCP connections on `addr` inside `ns`. `what` (e.g.
/// "nginx of ingress 'grp1' on C0w1") names the process `pid` (started at `start`) whose
/// log is `log`; its exit ends the wait at once.
pub(super) fn wait_listening(
    ns: &str,
    addr: SocketAddr,
    (pid, start): (u32, u64),
    what: &str,
    log: &std::path::Path,
) -> Result<()> {
    let (what, log) = (what.to_string(), log.to_path_buf());
    netns::run_in(ns, move || {
        Wait::new(format!("{what} to listen on {addr}"), READY_TIMEOUT)
            // No kernel announcement says a socket listens, so this one polls: nginx
            // listens some 5 to 10 ms after it starts, and the default 20 ms between
            // checks made its start take 25 ms. A refused connect costs microseconds.
            .every(LISTEN_POLL)
            .hint(|| format!("its log ({}) says:\n{}", log.display(), log_tail(&log, 5)))
            .until(
                || match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(_) => Ok(Poll::Ready(())),
                    Err(e) if process::is_same_process(pid, start) => {
                        Ok(Poll::Pending(format!("connecting: {e}")))
                    }
                    Err(_) => bail!(
                        "{what} exited before it listened on {addr}; its log ({}) says:\n{}",
                        log.display(),
                        log_tail(&log, 5)
                    ),
                },
            )
    })
}

/// Pids whose parent is `pid` (nginx's worker processes).
pub(super) fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let ppid = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) && !stat[close + 2..].starts_with('Z') {
                out.push(p);
            }
        }
    }
    out
}
