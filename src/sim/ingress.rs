//! Ingress on a worker (real nginx in the worker's namespace) and the lessons' echo
//! servers in pods. Both are daemons the simulator records, so teardown and
//! `knetsim cleanup` stop them by pid.
//!
//! `run_ingress` validates everything before anything starts; a second call with the
//! same name writes the new config beside the old one, has `nginx -t` check it, swaps it
//! in and sends SIGHUP to the master, then waits until the old worker processes are gone
//! so the next request sees the new rules.

use super::Worker;
use crate::components::echo;
use crate::components::ingress::{self, IngressConfig, Rule};
use crate::netns::{self, process};
use crate::wait::{Poll, Wait};
use anyhow::{anyhow, bail, Context, Result};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One rule as a script gives it: a path prefix and an `addr:port` endpoint.
#[derive(Debug, Clone)]
pub struct IngressRule {
    pub path: String,
    pub endpoint: String,
}

/// What a running ingress looks like from outside.
#[derive(Debug, Clone)]
pub struct IngressInfo {
    pub name: String,
    pub worker: String,
    pub port: u16,
    pub pid: u32,
    pub conf: PathBuf,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub(crate) struct IngressState {
    pub daemon: super::DaemonId,
    pub pid: u32,
    pub start: u64,
    pub cfg: IngressConfig,
}

impl IngressState {
    fn info(&self, worker: &str) -> IngressInfo {
        IngressInfo {
            name: self.cfg.name.clone(),
            worker: worker.to_string(),
            port: self.cfg.port,
            pid: self.pid,
            conf: self.cfg.conf_path(),
            rules: self.cfg.rules.clone(),
        }
    }
}

/// Who listens on TCP `port` in namespace `ns`, if anyone: found by trying to bind it.
fn port_holder(ns: &str, port: u16) -> Result<Option<String>> {
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
fn wait_listening(
    ns: &str,
    addr: SocketAddr,
    (pid, start): (u32, u64),
    what: &str,
    log: &std::path::Path,
) -> Result<()> {
    let (what, log) = (what.to_string(), log.to_path_buf());
    netns::run_in(ns, move || {
        Wait::new(format!("{what} to listen on {addr}"), READY_TIMEOUT)
            .hint(|| format!("its log ({}) says:{}", log.display(), tail(&log, 5)))
            .until(
                || match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                    Ok(_) => Ok(Poll::Ready(())),
                    Err(e) if process::is_same_process(pid, start) => {
                        Ok(Poll::Pending(format!("connecting: {e}")))
                    }
                    Err(_) => bail!(
                        "{what} exited before it listened on {addr}; its log ({}) says:{}",
                        log.display(),
                        tail(&log, 5)
                    ),
                },
            )
    })
}

/// The last lines of a log, indented, for error messages.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let t = lines[lines.len().saturating_sub(n)..].join("\n    ");
    if t.trim().is_empty() {
        "(it printed nothing)".into()
    } else {
        format!("\n    {t}")
    }
}

/// Pids whose parent is `pid` (nginx's worker processes).
fn children_of(pid: u32) -> Vec<u32> {
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

impl Worker {
    /// The directory of ingress `name`: `<run dir>/<worker>/ingress/<name>`.
    pub fn ingress_dir(&self, name: &str) -> PathBuf {
        self.dir().join("ingress").join(name)
    }

    fn key(&self, name: &str) -> (String, String) {
        (self.name(), name.to_string())
    }

    /// The running ingress `name` on this worker, if any (one whose nginx has died is
    /// forgotten here).
    pub fn ingress(&self, name: &str) -> Option<IngressInfo> {
        let key = self.key(name);
        let mut map = self.sim.inner.ingresses.lock().unwrap();
        let st = map.get(&key)?.clone();
        if self.sim.daemon_pid(st.daemon) != Some(st.pid) {
            map.remove(&key);
            drop(map);
            let _ = self.sim.stop_daemon(st.daemon);
            return None;
        }
        Some(st.info(&self.name()))
    }

    /// Names of the ingresses running on this worker.
    pub fn ingresses(&self) -> Vec<String> {
        let me = self.name();
        let names: Vec<String> = self
            .sim
            .inner
            .ingresses
            .lock()
            .unwrap()
            .keys()
            .filter(|(w, _)| *w == me)
            .map(|(_, n)| n.clone())
            .collect();
        names
            .into_iter()
            .filter(|n| self.ingress(n).is_some())
            .collect()
    }

    /// Starts (or reconfigures) ingress `name`: nginx listening on `port` in this worker's
    /// namespace, one `location` per rule proxying to its endpoint.
    pub fn run_ingress(&self, name: &str, port: i64, rules: &[IngressRule]) -> Result<IngressInfo> {
        // Input first, so a mistake is reported before anything needs to run.
        ingress::check_name(name)?;
        let port = ingress::check_port(port)?;
        let mut parsed = Vec::new();
        for r in rules {
            ingress::check_path(&r.path)?;
            parsed.push(Rule {
                path: r.path.clone(),
                endpoint: ingress::parse_endpoint(&r.endpoint)?,
            });
        }
        ingress::check_rules(&parsed)?;
        self.require_running()?;
        process::require_binary(&ingress::nginx_bin(), ingress::NGINX_PACKAGE)?;
        let existing = self.ingress(name);
        if existing.as_ref().map(|e| e.port) != Some(port) {
            if let Some(who) = port_holder(&self.ns(), port)? {
                bail!(
                    "port {port} on {} is already in use{who}: pick another port for ingress '{name}', \
                     or stop what listens there (`{} ss -ltnp` shows it)",
                    self.name(),
                    self.name()
                );
            }
        }
        let cfg = IngressConfig {
            name: name.to_string(),
            port,
            rules: parsed,
            dir: self.ingress_dir(name),
        };
        cfg.check()?;
        for (_, sub) in ingress::TEMP_PATHS {
            std::fs::create_dir_all(cfg.temp_dir().join(sub))
                .with_context(|| format!("creating {}", cfg.temp_dir().display()))?;
        }
        match existing {
            Some(_) => self.reload_ingress(cfg),
            None => self.start_ingress(cfg),
        }
    }

    fn require_running(&self) -> Result<()> {
        if !self.is_started() {
            bail!(
                "{} is not running yet: call start() (or {}.start()) first",
                self.name(),
                self.cluster().name()
            );
        }
        Ok(())
    }

    /// `nginx -t` against `conf`, inside the worker's namespace.
    fn nginx_test(&self, cfg: &IngressConfig, conf: &std::path::Path) -> Result<()> {
        let mut cmd = process::command_in(Some(&self.ns()), &ingress::nginx_bin())?;
        cmd.args(cfg.test_args(conf));
        let out = process::run_bounded(cmd, Duration::from_secs(10), None)?;
        if !out.success() {
            bail!(
                "nginx rejected the configuration for ingress '{}' ({}):\n    {}",
                cfg.name,
                conf.display(),
                out.text.trim().replace('\n', "\n    ")
            );
        }
        Ok(())
    }

    fn start_ingress(&self, cfg: IngressConfig) -> Result<IngressInfo> {
        let conf = cfg.conf_path();
        std::fs::write(&conf, cfg.render())
            .with_context(|| format!("writing {}", conf.display()))?;
        self.nginx_test(&cfg, &conf)?;
        let log = cfg.dir.join("nginx.log");
        let spawned = self.sim.spawn_daemon(super::DaemonSpec::new(
            super::DaemonKind::Nginx,
            &self.name(),
            &self.ns(),
            &ingress::nginx_bin(),
            cfg.nginx_args(&conf),
            log,
            format!("ingress {} on {} (nginx master)", cfg.name, self.name()),
        ))?;
        let (pid, start) = (spawned.pid, spawned.start);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.port));
        let what = format!("nginx of ingress '{}' on {}", cfg.name, self.name());
        if let Err(e) = wait_listening(&self.ns(), addr, (pid, start), &what, &cfg.error_log()) {
            let _ = self.sim.stop_daemon(spawned.id);
            return Err(e.context(format!(
                "ingress '{}' on {} did not start",
                cfg.name,
                self.name()
            )));
        }
        let st = IngressState {
            daemon: spawned.id,
            pid,
            start,
            cfg,
        };
        let info = st.info(&self.name());
        self.sim
            .inner
            .ingresses
            .lock()
            .unwrap()
            .insert(self.key(&info.name), st);
        Ok(info)
    }

    fn reload_ingress(&self, cfg: IngressConfig) -> Result<IngressInfo> {
        let key = self.key(&cfg.name);
        let old = self
            .sim
            .inner
            .ingresses
            .lock()
            .unwrap()
            .get(&key)
            .cloned()
            .ok_or_else(|| anyhow!("ingress '{}' is not running", cfg.name))?;
        let conf = cfg.conf_path();
        let next = cfg.dir.join("nginx.conf.next");
        std::fs::write(&next, cfg.render())
            .with_context(|| format!("writing {}", next.display()))?;
        if let Err(e) = self.nginx_test(&cfg, &next) {
            let _ = std::fs::remove_file(&next);
            return Err(e.context(format!("ingress '{}' keeps its previous rules", cfg.name)));
        }
        let old_workers = children_of(old.pid);
        std::fs::rename(&next, &conf).with_context(|| format!("replacing {}", conf.display()))?;
        unsafe {
            libc::kill(old.pid as i32, libc::SIGHUP);
        }
        // The master re-reads the config, starts new workers and tells the old ones to
        // finish: once they are gone every new request sees the new rules.
        let what = format!("nginx of ingress '{}' on {}", cfg.name, self.name());
        Wait::new(
            format!("{what} to apply the new configuration (its old workers to finish)"),
            READY_TIMEOUT,
        )
        .every(Duration::from_millis(10))
        .hint(|| format!("its error log says:{}", tail(&cfg.error_log(), 5)))
        .until(|| {
            if !process::is_same_process(old.pid, old.start) {
                self.sim.inner.ingresses.lock().unwrap().remove(&key);
                let _ = self.sim.stop_daemon(old.daemon);
                bail!(
                    "nginx of ingress '{}' on {} exited during the reload; its error log says:{}",
                    cfg.name,
                    self.name(),
                    tail(&cfg.error_log(), 5)
                );
            }
            let now = children_of(old.pid);
            let old_left = now.iter().filter(|p| old_workers.contains(p)).count();
            if !now.is_empty() && old_left == 0 {
                return Ok(Poll::Ready(()));
            }
            Ok(Poll::Pending(format!(
                "{old_left} old and {} new worker processes",
                now.len() - old_left
            )))
        })?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, cfg.port));
        wait_listening(
            &self.ns(),
            addr,
            (old.pid, old.start),
            &what,
            &cfg.error_log(),
        )
        .context("after the reload")?;
        let st = IngressState {
            daemon: old.daemon,
            pid: old.pid,
            start: old.start,
            cfg,
        };
        let info = st.info(&self.name());
        self.sim.inner.ingresses.lock().unwrap().insert(key, st);
        Ok(info)
    }

    /// Stops ingress `name` (by its master's pid); its config and logs stay for reading.
    pub fn stop_ingress(&self, name: &str) -> Result<()> {
        if self.ingress(name).is_none() {
            let running = self.ingresses();
            bail!(
                "there is no ingress '{name}' on {} (running there: {})",
                self.name(),
                if running.is_empty() {
                    "none".into()
                } else {
                    running.join(", ")
                }
            );
        }
        let st = self
            .sim
            .inner
            .ingresses
            .lock()
            .unwrap()
            .remove(&self.key(name));
        if let Some(st) = st {
            let _ = self.sim.stop_daemon(st.daemon);
        }
        Ok(())
    }

    /// Starts `knetsim echo-server` in pod `container`, answering every GET on `port`
    /// with `message`; returns once it accepts connections. Teardown (or deleting the
    /// pod) stops it.
    pub fn echo_server(&self, container: &str, port: i64, message: &str) -> Result<u32> {
        let info = self.container(container)?;
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            anyhow!(
                "echo server port {port} is not a port: use a number from 1 to 65535, e.g. 8000"
            )
        })?;
        echo::check_message(message)?;
        if let Some(who) = port_holder(&info.ns, port)? {
            bail!(
                "port {port} in container '{container}' is already in use{who}: pick another port for its echo server"
            );
        }
        let log = self.dir().join(format!("{container}-echo-{port}.log"));
        let args = vec![
            "echo-server".to_string(),
            "--port".into(),
            port.to_string(),
            // One argument, so a message starting with '-' is not taken for an option.
            format!("--message={message}"),
        ];
        let spawned = self.sim.spawn_daemon(super::DaemonSpec::new(
            super::DaemonKind::EchoServer,
            &self.name(),
            &info.ns,
            &self.sim.knetsim_exe(),
            args,
            log.clone(),
            format!(
                "echo-server {message:?} on {container}:{port} ({})",
                self.name()
            ),
        ))?;
        let (pid, start) = (spawned.pid, spawned.start);
        let ip: Ipv4Addr = info.ip.parse().unwrap_or(Ipv4Addr::LOCALHOST);
        let what = format!("the echo server in '{container}'");
        if let Err(e) = wait_listening(
            &info.ns,
            SocketAddr::from((ip, port)),
            (pid, start),
            &what,
            &log,
        ) {
            let _ = self.sim.stop_daemon(spawned.id);
            return Err(e);
        }
        Ok(pid)
    }
}
