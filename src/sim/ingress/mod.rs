//! Ingress on a worker (real nginx in the worker's namespace) and the lessons' echo
//! servers in pods. Both are daemons the simulator records, so teardown and
//! `knetsim cleanup` stop them by pid.
//!
//! `run_ingress` validates everything before anything starts; a second call with the
//! same name writes the new config beside the old one, has `nginx -t` check it, swaps it
//! in and sends SIGHUP to the master, then waits until the old worker processes are gone
//! so the next request sees the new rules.

mod echo;
mod listen;

use super::supervise::log_tail;
use super::{DaemonId, DaemonKind, DaemonSpec, Worker};
use crate::components::ingress::{self, IngressConfig, Rule};
use crate::netns::process;
use crate::wait::{Poll, Wait};
use anyhow::{anyhow, bail, Context, Result};
use listen::{children_of, port_holder, wait_listening, READY_TIMEOUT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One rule as a script gives it: a path prefix and an endpoint, either an address
/// (`100.64.11.1:8000`, proxied as it is) or a Service's name and port (`svc1:8000`,
/// proxied to its endpoints, as ingress-nginx does).
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

/// The running ingresses, by (worker name, ingress name).
#[derive(Default)]
pub(crate) struct Running(Mutex<BTreeMap<(String, String), IngressState>>);

impl Running {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<(String, String), IngressState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct IngressState {
    daemon: DaemonId,
    pid: u32,
    start: u64,
    cfg: IngressConfig,
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

impl super::Sim {
    /// Rewrites the Service rules of every ingress in cluster `id` with the Services'
    /// current endpoints, reloading the nginx whose endpoints changed (an ingress
    /// controller watches endpoints, so it follows pods as kube-proxy does).
    pub(crate) fn refresh_ingresses(&self, id: &str) -> Result<()> {
        let running: Vec<(String, IngressState)> = self
            .inner
            .ingresses
            .lock()
            .iter()
            .map(|((w, _), st)| (w.clone(), st.clone()))
            .collect();
        for (worker, st) in running {
            let Some(super::Node::Worker(w)) = self.node(&worker) else {
                continue;
            };
            if w.cluster().id() != id {
                continue;
            }
            let mut cfg = st.cfg.clone();
            for r in &mut cfg.rules {
                if let ingress::Backend::Service {
                    name,
                    port,
                    endpoints,
                } = &mut r.endpoint
                {
                    // A Service deleted meanwhile has no endpoints: nginx answers 503.
                    *endpoints = w
                        .cluster()
                        .service_backends(name, *port)
                        .unwrap_or_default();
                }
            }
            if cfg.rules != st.cfg.rules {
                w.reload_ingress(cfg).with_context(|| {
                    format!(
                        "updating ingress '{}' on {worker} to new endpoints",
                        st.cfg.name
                    )
                })?;
            }
        }
        Ok(())
    }
}

impl Worker {
    /// A rule's endpoint: an address as it is, or a Service of this cluster (a name such
    /// as `svc1`, not an address) with its current endpoints.
    fn backend(&self, endpoint: &str) -> Result<ingress::Backend> {
        let named = endpoint
            .rsplit_once(':')
            .filter(|(host, _)| host.starts_with(|c: char| c.is_ascii_lowercase()));
        let Some((name, port)) = named else {
            return ingress::parse_endpoint(endpoint).map(ingress::Backend::Address);
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow!("ingress endpoint '{endpoint}': '{port}' is not a port; a Service endpoint is its name and port, e.g. \"svc1:8000\""))?;
        Ok(ingress::Backend::Service {
            name: name.to_string(),
            port,
            endpoints: self.cluster().service_backends(name, port)?,
        })
    }

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
        let mut map = self.sim.inner.ingresses.lock();
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
                endpoint: self.backend(&r.endpoint)?,
            });
        }
        ingress::check_rules(&parsed)?;
        self.require_started()?;
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
        let spawned = self.sim.spawn_daemon(DaemonSpec::new(
            DaemonKind::Nginx,
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
        let what = format!("nginx of ingress '{}' on {}", cfg.name, self.name());
        if let Err(e) = self.hang_up_and_wait(&old, &old_workers, &cfg, &what) {
            if process::is_same_process(old.pid, old.start) {
                // nginx lives on: put the previous config back and reload it, so the file,
                // nginx and the rules the simulator reports stay the same.
                self.roll_back(&old, &conf);
                return Err(e.context(format!(
                    "ingress '{}' keeps its previous rules ({} was put back)",
                    cfg.name,
                    conf.display()
                )));
            }
            return Err(e);
        }
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
        self.sim.inner.ingresses.lock().insert(key, st);
        Ok(info)
    }

    /// Sends SIGHUP to the master, which re-reads the config, starts new workers and tells
    /// the old ones to finish: once they are gone every new request sees the new rules.
    fn hang_up_and_wait(
        &self,
        old: &IngressState,
        old_workers: &[u32],
        cfg: &IngressConfig,
        what: &str,
    ) -> Result<()> {
        kill(Pid::from_raw(old.pid as i32), Signal::SIGHUP)
            .with_context(|| format!("signalling {what} to reload"))?;
        Wait::new(
            format!("{what} to apply the new configuration (its old workers to finish)"),
            READY_TIMEOUT,
        )
        .every(Duration::from_millis(10))
        .hint(|| format!("its error log says:\n{}", log_tail(&cfg.error_log(), 5)))
        .until(|| {
            if !process::is_same_process(old.pid, old.start) {
                self.sim.inner.ingresses.lock().remove(&self.key(&cfg.name));
                let _ = self.sim.stop_daemon(old.daemon);
                bail!(
                    "{what} exited during the reload; its error log says:\n{}",
                    log_tail(&cfg.error_log(), 5)
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
        })
    }

    /// Writes the recorded config back and has nginx reload it (best effort: the error
    /// that led here is the one to report).
    fn roll_back(&self, old: &IngressState, conf: &std::path::Path) {
        if std::fs::write(conf, old.cfg.render()).is_ok() {
            let _ = kill(Pid::from_raw(old.pid as i32), Signal::SIGHUP);
        }
    }

    /// Stops ingress `name` (by its master's pid); its config and logs stay for reading.
    pub fn stop_ingress(&self, name: &str) -> Result<()> {
        if self.ingress(name).is_none() {
            let running = self.ingresses();
            bail!(
                "there is no ingress '{name}' on {} (running there: {})",
                self.name(),
                crate::sim::listed(&running, "none")
            );
        }
        let st = self.sim.inner.ingresses.lock().remove(&self.key(name));
        if let Some(st) = st {
            let _ = self.sim.stop_daemon(st.daemon);
        }
        Ok(())
    }
}
