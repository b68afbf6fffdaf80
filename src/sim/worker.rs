//! Workers and their containers: creating and deleting pods through CNI, and running
//! commands on a worker or inside a pod.

use super::addressing::{container_node, node_name, valid_name};
use super::{ContainerState, Sim, WorkerState};
use crate::components::cni::{self, WorkerCni};
use crate::netns::{self, process};
use anyhow::{bail, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

/// What a learner can ask about one container.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub name: String,
    pub worker: String,
    pub ns: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
}

/// A handle on one worker.
#[derive(Clone)]
pub struct Worker {
    pub(crate) sim: Sim,
    pub(crate) cluster: String,
    pub(crate) short: String,
}

/// Runs `cmd` with `sh -c` in namespace `ns`, bounded by the timeout and by Ctrl-C, in
/// the node's directory with node and pod names resolving (see [`super::node_exec`]).
/// Returns stdout and stderr as one text, like a terminal shows them; a command ended by
/// Ctrl-C comes back as the error [`process::Interrupted`] carrying its output so far.
pub(crate) fn exec_in(
    sim: &Sim,
    ns: &str,
    who: &str,
    place: &super::node_exec::ExecPlace,
    cmd: &str,
    timeout: Option<Duration>,
) -> Result<String> {
    let timeout = timeout.unwrap_or_else(|| sim.exec_timeout());
    let out = process::run_shell_with(
        Some(ns),
        cmd,
        &place.env(),
        &place.setup(),
        timeout,
        Some(crate::interrupt::flag()),
    )?;
    match out.ended {
        process::Ended::TimedOut => {
            let lines: Vec<&str> = out.text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n    ");
            let so_far = if tail.trim().is_empty() {
                "It printed nothing.".to_string()
            } else {
                format!("Its last output:\n    {tail}")
            };
            bail!(
                "`{cmd}` on {who} did not finish within {:.1} s, so it was stopped. {so_far}\n  \
                 Bound it (e.g. `ping -c 3`), start it with exec_container_async(), or raise the limit with set_exec_timeout(SECONDS).",
                timeout.as_secs_f64()
            )
        }
        process::Ended::Cancelled => {
            crate::interrupt::take();
            Err(process::Interrupted { partial: out.text }.into())
        }
        _ if out.cut => Ok(format!(
            "{}\n[output cut at {} MiB: the command printed {:.0} MiB; send it to a file (`CMD > /tmp/out`) \
             or keep the part you need (`CMD | tail -n 100`)]\n",
            out.text,
            process::OUTPUT_CAP >> 20,
            out.printed as f64 / f64::from(1 << 20)
        )),
        _ => Ok(out.text),
    }
}

impl Worker {
    pub(crate) fn handle(sim: &Sim, cluster: &str, short: &str) -> Worker {
        Worker {
            sim: sim.clone(),
            cluster: cluster.to_string(),
            short: short.to_string(),
        }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&WorkerState) -> R) -> R {
        let st = self.sim.state();
        let c = st.cluster(&self.cluster);
        f(c.workers
            .iter()
            .find(|w| w.short == self.short)
            .expect("a handle names a declared worker"))
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(&mut WorkerState) -> R) -> R {
        let mut st = self.sim.state();
        let c = st.cluster_mut(&self.cluster);
        f(c.workers
            .iter_mut()
            .find(|w| w.short == self.short)
            .expect("a handle names a declared worker"))
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn cluster(&self) -> super::Cluster {
        super::Cluster::handle(&self.sim, &self.cluster)
    }

    pub fn name(&self) -> String {
        node_name(&self.cluster, &self.short)
    }

    pub fn short(&self) -> &str {
        &self.short
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.with(|w| w.ip)
    }

    pub fn ns(&self) -> String {
        self.with(|w| w.ns.clone())
    }

    pub fn is_started(&self) -> bool {
        self.with(|w| w.started)
    }

    /// The worker's own directory in the run directory (subnet.env, logs, CNI state).
    pub fn dir(&self) -> PathBuf {
        self.sim.run_dir().join(self.name())
    }

    /// Where commands on this worker and in its pods run (hosts file, directory, PATH).
    pub(crate) fn exec_place(&self) -> Result<super::node_exec::ExecPlace> {
        self.sim.exec_place(&self.cluster, &self.name())
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.dir().join("subnet.env")
    }

    pub(crate) fn cni(&self) -> WorkerCni {
        let dir = self.dir();
        WorkerCni {
            worker_ns: self.ns(),
            subnet_file: self.subnet_file(),
            data_dir: dir.join("cni").join("flannel"),
            ipam_dir: dir.join("cni").join("networks"),
            bin_dir: PathBuf::from(cni::cni_path()),
        }
    }

    pub(crate) fn require_started(&self) -> Result<()> {
        if !self.is_started() {
            bail!(
                "{} is not running yet: call start() (or {}.start()) first",
                self.name(),
                self.cluster().name()
            );
        }
        Ok(())
    }

    /// Runs a shell command on the worker itself. `etcdctl` there talks to the cluster's
    /// etcd, as a node's tools would be configured to.
    pub fn exec(&self, cmd: &str) -> Result<String> {
        self.exec_with_timeout(cmd, None)
    }

    pub fn exec_with_timeout(&self, cmd: &str, timeout: Option<Duration>) -> Result<String> {
        self.require_started()?;
        exec_in(
            &self.sim,
            &self.ns(),
            &self.name(),
            &self.exec_place()?,
            cmd,
            timeout,
        )
    }

    pub fn containers(&self) -> Vec<String> {
        self.with(|w| w.containers.keys().cloned().collect())
    }

    pub fn container(&self, name: &str) -> Result<ContainerInfo> {
        let found = self.with(|w| w.containers.get(name).cloned());
        match found {
            Some(c) => Ok(ContainerInfo {
                name: name.to_string(),
                worker: self.name(),
                ns: c.ns,
                ip: c.ip,
                labels: c.labels,
            }),
            None => {
                let here = self.containers();
                let elsewhere = self
                    .cluster()
                    .find_container(name)
                    .map(|w| format!("; it runs on {}", w.name()))
                    .unwrap_or_default();
                bail!(
                    "there is no container '{name}' on {} (containers there: {}){elsewhere}",
                    self.name(),
                    super::listed(&here, "none")
                )
            }
        }
    }

    pub fn container_ip(&self, name: &str) -> Result<String> {
        Ok(self.container(name)?.ip)
    }

    /// Creates a pod: a namespace named `C<id>-<name>`, wired by CNI ADD.
    pub fn create_container(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<ContainerInfo> {
        self.require_started()?;
        self.check_new_container(name)?;
        let ns = self.container_ns(name);
        self.sim.inner.record.add_namespace(&ns)?;
        let ip = match self.wire_container(name, &ns) {
            Ok(ip) => ip,
            Err(e) => {
                let _ = self.sim.inner.record.forget_namespace(&ns);
                return Err(e);
            }
        };
        let info = self.register_container(name, ns, ip, labels);
        self.cluster().pods_changed(&info.labels)?;
        self.cluster()
            .skupper_container_created(&info.name, &info.ip)?;
        Ok(info)
    }

    /// Refuses a pod name that is not valid or already taken anywhere in the cluster.
    pub(crate) fn check_new_container(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            bail!("'{name}' is not a valid container name: use letters, digits and '_', starting with a letter (at most 20)");
        }
        if let Some(w) = self.cluster().find_container(name) {
            bail!(
                "a container named '{name}' already exists in {} (on {}); pick another name or delete it first",
                self.cluster().name(),
                w.name()
            );
        }
        Ok(())
    }

    pub(crate) fn container_ns(&self, name: &str) -> String {
        self.sim.ns_name(&container_node(&self.cluster, name))
    }

    /// The kernel side of a new pod: namespace `ns` (already in the record) created and
    /// wired by CNI ADD. Returns the pod's address; on failure nothing of it is left.
    pub(crate) fn wire_container(&self, name: &str, ns: &str) -> Result<String> {
        self.wire_containers(&[(name.to_string(), ns.to_string())], &|| Ok(()))
            .pop()
            .unwrap_or_else(|| bail!("interrupted before container '{name}' was made"))
    }

    /// [`Worker::wire_container`] for several pods `(name, namespace)` of this worker: each
    /// namespace is made just before its pod's plugins start (see [`WorkerCni::add_all`]
    /// for what overlaps), and the addresses follow the order given. The pods' network
    /// config is read once `ready()` returns (at bring-up: once the worker has its subnet).
    /// Stops at Ctrl-C: one result per pod begun, in order.
    pub(crate) fn wire_containers(
        &self,
        pods: &[(String, String)],
        ready: &(dyn Fn() -> Result<()> + Sync),
    ) -> Vec<Result<String>> {
        let cni_pods: Vec<cni::Pod> = pods
            .iter()
            .map(|(name, ns)| cni::Pod {
                id: container_node(&self.cluster, name),
                netns: netns::path(ns),
            })
            .collect();
        // Only a namespace made here is removed on failure: one that was there already
        // (netns::create refuses it) is not ours.
        let mut made = vec![false; pods.len()];
        let results = self.cni().add_all(
            &cni_pods,
            |i| {
                if crate::interrupt::is_set() {
                    return ControlFlow::Break(());
                }
                let created = netns::create(&pods[i].1);
                made[i] = created.is_ok();
                ControlFlow::Continue(created)
            },
            ready,
        );
        results
            .into_iter()
            .zip(pods.iter().zip(made))
            .map(|(res, ((name, ns), made))| match res {
                Ok(a) => Ok(a.ip),
                Err(e) => {
                    if made {
                        let _ = netns::delete(ns);
                    }
                    Err(e.context(format!("wiring container '{name}' on {}", self.name())))
                }
            })
            .collect()
    }

    /// Makes a wired pod part of the model (Services and Skupper are told by the caller).
    pub(crate) fn register_container(
        &self,
        name: &str,
        ns: String,
        ip: String,
        labels: BTreeMap<String, String>,
    ) -> ContainerInfo {
        let state = ContainerState {
            ns: ns.clone(),
            ip: ip.clone(),
            labels: labels.clone(),
        };
        self.with_mut(|w| w.containers.insert(name.to_string(), state));
        ContainerInfo {
            name: name.to_string(),
            worker: self.name(),
            ns,
            ip,
            labels,
        }
    }

    /// Replaces a pod's labels, as `kubectl label --overwrite` would: the endpoints
    /// controller takes it out of the Services its old labels matched and into those its
    /// new labels match, and returns once every kube-proxy has converged.
    pub fn set_labels(&self, name: &str, labels: BTreeMap<String, String>) -> Result<()> {
        let old = self.container(name)?.labels;
        self.with_mut(|w| {
            if let Some(c) = w.containers.get_mut(name) {
                c.labels = labels.clone();
            }
        });
        self.cluster().pods_changed(&old)?;
        self.cluster().pods_changed(&labels)
    }

    /// Deletes a pod: CNI DEL with the config kept at ADD, then its namespace and anything
    /// still running in it.
    pub fn delete_container(&self, name: &str) -> Result<()> {
        let info = self.container(name)?;
        let del = self.cni().del(&cni::Pod {
            id: container_node(&self.cluster, name),
            netns: netns::path(&info.ns),
        });
        self.sim.inner.daemons.expect_exit_in(&info.ns);
        if let Some(ino) = netns::inode(&info.ns) {
            for pid in process::pids_in_namespaces(&[ino]) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        netns::delete(&info.ns)?;
        self.sim.inner.record.forget_namespace(&info.ns)?;
        self.with_mut(|w| w.containers.remove(name));
        self.cluster().pods_changed(&info.labels)?;
        del
    }

    /// Runs a shell command inside a pod, bounded by the exec timeout.
    pub fn exec_container(&self, name: &str, cmd: &str) -> Result<String> {
        self.exec_container_with_timeout(name, cmd, None)
    }

    pub fn exec_container_with_timeout(
        &self,
        name: &str,
        cmd: &str,
        timeout: Option<Duration>,
    ) -> Result<String> {
        let info = self.container(name)?;
        exec_in(
            &self.sim,
            &info.ns,
            &format!("{name} on {}", self.name()),
            &self.exec_place()?,
            cmd,
            timeout,
        )
    }

    /// Starts a long-running command inside a pod and returns at once. Its output goes to
    /// `<run dir>/<worker>/<container>.log`; teardown or delete_container ends it.
    pub fn exec_container_async(&self, name: &str, cmd: &str) -> Result<u32> {
        let info = self.container(name)?;
        let log = self.dir().join(format!("{name}.log"));
        self.spawn_shell(
            &info.ns,
            cmd,
            log,
            format!("{name} on {}: {cmd}", self.name()),
        )
    }

    /// Starts a long-running command on the worker itself (a capture, a server) and
    /// returns its pid at once. Output goes to `<run dir>/<worker>/async.log`.
    pub fn exec_async(&self, cmd: &str) -> Result<u32> {
        self.require_started()?;
        let log = self.dir().join("async.log");
        self.spawn_shell(&self.ns(), cmd, log, format!("{}: {cmd}", self.name()))
    }

    /// Waits until the worker's async.log (what [`Worker::exec_async`] commands print)
    /// holds `count` lines containing `text`, at most `timeout`: "listening on" once a
    /// capture has started, "packets captured" once it has ended. Wakes on the file's
    /// appends; Ctrl-C ends the wait.
    pub fn wait_log(&self, text: &str, count: usize, timeout: Duration) -> Result<()> {
        let log = self.dir().join("async.log");
        // Before the first exec_async there is no log to watch: its directory then.
        let watch = match log.exists() {
            true => crate::wait::FileWatch::appends(&log)?,
            false => crate::wait::FileWatch::dir(&self.dir())?,
        };
        let seen = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(text))
                .count()
        };
        crate::wait::Wait::new(
            format!(
                "{}'s async.log to hold {count} line(s) with {text:?}",
                self.name()
            ),
            timeout,
        )
        .wake_on(&watch)
        .every(Duration::from_millis(250))
        .hint(|| {
            format!(
                "the commands started with exec_async write there ({})",
                log.display()
            )
        })
        .until(|| {
            let n = seen();
            Ok(if n >= count {
                crate::wait::Poll::Ready(())
            } else {
                crate::wait::Poll::Pending(format!("{n} such line(s)"))
            })
        })
    }

    /// `sh -c cmd` in namespace `ns` as a daemon of this worker's, logging to `log`.
    fn spawn_shell(&self, ns: &str, cmd: &str, log: PathBuf, what: String) -> Result<u32> {
        let spec = super::DaemonSpec::new(
            super::DaemonKind::Command,
            &self.name(),
            ns,
            "/bin/sh",
            vec!["-c".to_string(), cmd.to_string()],
            log,
            what,
        );
        Ok(self.sim.spawn_daemon(spec)?.pid)
    }
}
