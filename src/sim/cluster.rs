//! Clusters and their etcd members: declaration (names and Mininet numbering), lookup of
//! nodes and containers, and joining a worker to a running cluster.

use super::addressing::{
    check_pod_network, cluster_number, etcd_ip, host_ip, node_name, MAX_HOSTS,
};
use super::{ClusterState, ContainerInfo, EtcdState, Node, Sim, Worker, WorkerState};
use crate::components::etcd;
use crate::components::flannel::config::{self as flannel_config, NetConfig};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The shape of a cluster: how many workers and etcd members.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSpec {
    pub workers: u32,
    pub etcd: u32,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            workers: 3,
            etcd: 2,
        }
    }
}

/// Most workers a cluster is declared with (more can join with `add_worker()`).
pub const MAX_WORKERS: u32 = 200;
/// Most etcd members a cluster has (an odd number of 3 or 5 keeps quorum through failures).
pub const MAX_ETCD: u32 = 5;

/// Checks a count given for `key` ("workers" or "etcd") of cluster `id`; one message for
/// the script's whole numbers and for Rust callers alike.
pub fn check_count(id: &str, key: &str, n: i64) -> Result<u32> {
    let (max, example) = match key {
        "workers" => (MAX_WORKERS, "#{ workers: 3, etcd: 2 }"),
        "etcd" => (MAX_ETCD, "#{ workers: 3, etcd: 3 }"),
        other => bail!(
            "cluster(\"{id}\", ...): unknown option '{other}'; the options are 'workers', 'etcd', 'flannel' and 'pods', e.g. #{{ workers: 3, etcd: 2 }}"
        ),
    };
    if !(1..=max as i64).contains(&n) {
        bail!(
            "cluster(\"{id}\", ...): {key} must be between 1 and {max} (got {n}), e.g. {example}"
        );
    }
    Ok(n as u32)
}

/// The next host number, refused once the underlay's address plan is full.
fn next_host(st: &mut super::State, node: &str) -> Result<u32> {
    if st.host_counter >= MAX_HOSTS {
        bail!(
            "{node} would be host number {}, but the underlay has addresses for {MAX_HOSTS} hosts \
             (10.0.0.1 to 10.0.255.255; beyond them lie the etcd members' 10.1.0.x): use fewer workers",
            st.host_counter as u64 + 1
        );
    }
    st.host_counter += 1;
    Ok(st.host_counter)
}

/// Takes back cluster `id` when it is the one declared last and has not started, with its
/// host numbers: a declaration whose options are refused after it (a script's `pods`)
/// leaves nothing, so the same cluster can be declared again.
pub(super) fn undeclare_last(sim: &Sim, id: &str) {
    let mut st = sim.state();
    if st.clusters.last().is_some_and(|c| c.id == id && !c.started) {
        let c = st.clusters.pop().expect("checked above");
        st.host_counter -= (c.workers.len() + c.etcd.len()) as u32;
    }
}

/// The simulator's flannel config: the original's conf/flannel-network-config.json.
pub(super) fn default_flannel() -> NetConfig {
    flannel_config::parse(flannel_config::SIM_DEFAULT_JSON, "the default config")
        .expect("the default flannel config is valid")
}

pub(super) fn declare(
    sim: &Sim,
    id: &str,
    spec: ClusterSpec,
    flannel: NetConfig,
) -> Result<Cluster> {
    let mut st = sim.state();
    let declared: Vec<String> = st.clusters.iter().map(|c| c.id.clone()).collect();
    let number = cluster_number(id, &declared).map_err(anyhow::Error::msg)?;
    check_pod_network(&format!("C{id}"), &flannel).map_err(anyhow::Error::msg)?;
    check_count(id, "workers", spec.workers.into())?;
    check_count(id, "etcd", spec.etcd.into())?;
    let needed = spec.workers + spec.etcd;
    if st.host_counter.saturating_add(needed) > MAX_HOSTS {
        bail!(
            "cluster C{id} needs {needed} more host addresses, but the underlay has room for {} \
             ({MAX_HOSTS} hosts in 10.0.0.1 to 10.0.255.255): use fewer workers",
            MAX_HOSTS - st.host_counter
        );
    }
    let cluster = format!("C{id}");
    let mut etcd = Vec::new();
    for k in 1..=spec.etcd {
        next_host(&mut st, &cluster)?;
        let short = format!("e{k}");
        let name = node_name(id, &short);
        etcd.push(EtcdState {
            ns: sim.ns_name(&name),
            short,
            name,
            ip: etcd_ip(number, k),
        });
    }
    let mut workers = Vec::new();
    for k in 1..=spec.workers {
        let n = next_host(&mut st, &cluster)?;
        let short = format!("w{k}");
        let name = node_name(id, &short);
        workers.push(WorkerState {
            ns: sim.ns_name(&name),
            short,
            name,
            ip: host_ip(n),
            started: false,
            containers: BTreeMap::new(),
            planned: Vec::new(),
        });
    }
    st.clusters.push(ClusterState {
        id: id.to_string(),
        number,
        started: false,
        etcd,
        workers,
        flannel,
    });
    Ok(Cluster::handle(sim, id))
}

/// A handle on one cluster.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) sim: Sim,
    pub(crate) id: String,
}

impl Cluster {
    pub(crate) fn handle(sim: &Sim, id: &str) -> Cluster {
        Cluster {
            sim: sim.clone(),
            id: id.to_string(),
        }
    }

    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> String {
        format!("C{}", self.id)
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(self.sim.state().cluster(&self.id))
    }

    pub fn is_started(&self) -> bool {
        self.with(|c| c.started)
    }

    /// Brings this cluster up (and the underlay, if needed).
    pub fn start(&self) -> Result<()> {
        if self.is_started() {
            return Ok(());
        }
        super::bringup::start_clusters(&self.sim, std::slice::from_ref(&self.id))
    }

    /// The cluster's flannel network config (what its etcd holds at `<prefix>/config`).
    pub fn flannel(&self) -> NetConfig {
        self.with(|c| c.flannel.clone())
    }

    /// The device a worker's traffic to other workers' pods leaves by: `flannel.<VNI>`
    /// (vxlan) or `eth0` (host-gw).
    pub fn flannel_device(&self) -> String {
        self.with(|c| c.flannel.backend.device("eth0"))
    }

    /// Comma-separated etcd client URLs.
    pub fn etcd_endpoints(&self) -> String {
        self.with(|c| c.etcd_endpoints())
    }

    /// Namespace from which this cluster's etcd can be reached (its first member's).
    pub fn etcd_ns(&self) -> String {
        self.with(|c| c.etcd[0].ns.clone())
    }

    /// The cluster's etcd members by name, for a fail-over [`etcd::EtcdClient`].
    pub fn etcd_members(&self) -> etcd::Members {
        self.with(|c| {
            etcd::Members::named(
                &c.name(),
                c.etcd.iter().map(|e| {
                    let url = format!("http://{}:{}", e.ip, etcd::CLIENT_PORT);
                    (e.name.clone(), url)
                }),
            )
        })
    }

    /// Every etcd member's Status: which are up, which one leads.
    pub fn etcd_health(&self) -> Result<Vec<etcd::MemberHealth>> {
        etcd::health(&self.etcd_ns(), &self.etcd_members())
    }

    pub fn workers(&self) -> Vec<Worker> {
        let shorts: Vec<String> =
            self.with(|c| c.workers.iter().map(|w| w.short.clone()).collect());
        shorts
            .iter()
            .map(|s| Worker::handle(&self.sim, &self.id, s))
            .collect()
    }

    pub fn etcd_nodes(&self) -> Vec<EtcdNode> {
        let shorts: Vec<String> = self.with(|c| c.etcd.iter().map(|e| e.short.clone()).collect());
        shorts
            .iter()
            .map(|s| EtcdNode::handle(&self.sim, &self.id, s))
            .collect()
    }

    /// A node by its short name (`w1`, `e2`) or full name (`C0w1`).
    pub fn get(&self, name: &str) -> Result<Node> {
        let prefix = self.name();
        let short = name.strip_prefix(&prefix).unwrap_or(name);
        let (is_worker, is_etcd, known) = self.with(|c| {
            let known: Vec<String> = c
                .workers
                .iter()
                .map(|w| w.short.clone())
                .chain(c.etcd.iter().map(|e| e.short.clone()))
                .collect();
            (
                c.workers.iter().any(|w| w.short == short),
                c.etcd.iter().any(|e| e.short == short),
                known,
            )
        });
        if is_worker {
            return Ok(Node::Worker(Worker::handle(&self.sim, &self.id, short)));
        }
        if is_etcd {
            return Ok(Node::Etcd(EtcdNode::handle(&self.sim, &self.id, short)));
        }
        bail!(
            "{prefix} has no node '{name}' (its nodes: {})",
            known.join(", ")
        )
    }

    /// A worker by short or full name.
    pub fn worker(&self, name: &str) -> Result<Worker> {
        match self.get(name)? {
            Node::Worker(w) => Ok(w),
            Node::Etcd(e) => bail!("{} is an etcd member, not a worker", e.name()),
        }
    }

    /// The worker hosting container `name`, if any.
    pub fn find_container(&self, name: &str) -> Option<Worker> {
        let short = self.with(|c| {
            c.workers
                .iter()
                .find(|w| w.containers.contains_key(name))
                .map(|w| w.short.clone())
        })?;
        Some(Worker::handle(&self.sim, &self.id, &short))
    }

    /// Every container of the cluster as (container, worker) names.
    pub fn containers(&self) -> Vec<(String, String)> {
        self.with(|c| {
            c.workers
                .iter()
                .flat_map(|w| {
                    w.containers
                        .keys()
                        .map(move |k| (k.clone(), w.short.clone()))
                })
                .collect()
        })
    }

    /// Takes this cluster back when it was declared last and has not started (see
    /// [`Cluster::plan_pods`]'s use in the script's `cluster(id, #{ pods })`).
    pub fn undeclare(&self) {
        undeclare_last(&self.sim, &self.id);
    }

    /// Declares pods for start() to make: `plan` maps a worker (short or full name) to its
    /// pods, as [`Cluster::create_containers`] takes it. start() begins a worker's pods as
    /// soon as that worker is wired and attaches them once it has its subnet, beside the
    /// other workers' bring-up, one after another in the order given (so their addresses
    /// are the same every run). Every name is checked now; only before the cluster is started.
    pub fn plan_pods(&self, plan: &BTreeMap<String, Vec<String>>) -> Result<()> {
        if self.with(|c| c.started) {
            bail!(
                "{}'s pods option is for a cluster not started yet; make pods of a running cluster with {}.create_containers(...)",
                self.name(),
                self.name()
            );
        }
        let mut planned: Vec<(Worker, Vec<String>)> = Vec::new();
        let mut seen: std::collections::BTreeSet<String> = self
            .workers()
            .iter()
            .flat_map(|w| w.with(|s| s.planned.clone()))
            .collect();
        for (worker, pods) in plan {
            let w = self
                .worker(worker)
                .map_err(|e| anyhow::anyhow!("{}'s pods: {e:#}", self.name()))?;
            for pod in pods {
                w.check_new_container(pod)?;
                if !seen.insert(pod.clone()) {
                    bail!(
                        "{}'s pods: pod '{pod}' is named twice; every pod of {} needs its own name",
                        self.name(),
                        self.name()
                    );
                }
            }
            planned.push((w, pods.clone()));
        }
        for (w, pods) in planned {
            w.with_mut(|s| s.planned.extend(pods));
        }
        Ok(())
    }

    /// Makes the pods declared for worker `short` with [`Cluster::plan_pods`]. start() calls
    /// it as soon as the worker is wired, with `ready` waiting for the worker's subnet: the
    /// pods' namespaces and plugins start up meanwhile. They leave the plan whether or not
    /// they are made; without any, it only waits for `ready`.
    pub(crate) fn make_planned_pods(
        &self,
        short: &str,
        ready: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<()> {
        let pods = self
            .worker(short)?
            .with_mut(|s| std::mem::take(&mut s.planned));
        if pods.is_empty() {
            return ready();
        }
        let plan = BTreeMap::from([(short.to_string(), pods)]);
        self.make_pods(&plan, &BTreeMap::new(), Some(ready))?;
        Ok(())
    }

    /// Creates many pods at once: `plan` maps a worker (short or full name) to the pods to
    /// create on it, all with `labels`. Every name is checked before anything is made and
    /// every namespace recorded in one write; then workers are wired concurrently (on each
    /// worker the bridge ADDs one after another, in the order given, so the addresses are
    /// the same on every run; see [`Worker::wire_containers`]) and Services and Skupper
    /// are told once. Pods that were made stay when others fail; the error names the failures.
    pub fn create_containers(
        &self,
        plan: &BTreeMap<String, Vec<String>>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<ContainerInfo>> {
        self.make_pods(plan, labels, None)
    }

    /// [`Cluster::create_containers`]; with `ready`, the pods of a worker still coming up
    /// (its pods' namespaces and plugins start before `ready()` returns, their network
    /// config is read after).
    fn make_pods(
        &self,
        plan: &BTreeMap<String, Vec<String>>,
        labels: &BTreeMap<String, String>,
        ready: Option<&(dyn Fn() -> Result<()> + Sync)>,
    ) -> Result<Vec<ContainerInfo>> {
        let mut jobs: Vec<(Worker, Vec<(String, String)>)> = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (worker, pods) in plan {
            let w = self.worker(worker)?;
            if ready.is_none() {
                w.require_started()?;
            }
            let mut mine = Vec::new();
            for pod in pods {
                w.check_new_container(pod)?;
                if !seen.insert(pod.as_str()) {
                    bail!(
                        "create_containers: pod '{pod}' is named twice; every pod of {} needs its own name",
                        self.name()
                    );
                }
                mine.push((pod.clone(), w.container_ns(pod)));
            }
            jobs.push((w, mine));
        }
        let all_ns: Vec<String> = jobs
            .iter()
            .flat_map(|(_, pods)| pods.iter().map(|(_, ns)| ns.clone()))
            .collect();
        self.sim.inner.record.add_namespaces(&all_ns)?;
        let wired = crate::parallel::each(&jobs, crate::parallel::default_limit(), |(w, pods)| {
            pods.iter()
                .zip(w.wire_containers(pods, ready.unwrap_or(&|| Ok(()))))
                .map(|((pod, ns), res)| (pod.clone(), ns.clone(), res))
                .collect::<Vec<_>>()
        });
        let (mut made, mut failed, mut unmade) = (Vec::new(), Vec::new(), Vec::new());
        for ((w, _), results) in jobs.iter().zip(wired) {
            for (pod, ns, res) in results {
                match res {
                    Ok(ip) => made.push(w.register_container(&pod, ns, ip, labels.clone())),
                    Err(e) => {
                        failed.push(format!("{pod} on {}: {e:#}", w.name()));
                        unmade.push(ns);
                    }
                }
            }
        }
        let made_ns: std::collections::HashSet<&String> = made.iter().map(|c| &c.ns).collect();
        unmade.extend(all_ns.iter().filter(|n| !made_ns.contains(n)).cloned());
        unmade.sort();
        unmade.dedup();
        self.sim.inner.record.forget_namespaces(&unmade)?;
        if !made.is_empty() {
            self.pods_changed(labels)?;
            for c in &made {
                self.skupper_container_created(&c.name, &c.ip)?;
            }
        }
        let tried = made.len() + failed.len();
        if tried < all_ns.len() {
            bail!(
                "interrupted while creating pods: {} of {} made, the rest not started",
                made.len(),
                all_ns.len()
            );
        }
        if !failed.is_empty() {
            bail!(
                "created {} of {} pods; these failed: {}",
                made.len(),
                all_ns.len(),
                failed.join("; ")
            );
        }
        Ok(made)
    }

    /// Adds a worker to the cluster (`C0w4`), bringing it up at once if the cluster runs.
    pub fn add_worker(&self) -> Result<Worker> {
        // Its routes need every other worker's flanneld: a crash loop is reported before
        // anything is declared.
        self.sim.require_agents(&self.id)?;
        let (short, started) = {
            let mut st = self.sim.state();
            let n = next_host(&mut st, &self.name())?;
            let ns_of = |name: &str| self.sim.ns_name(name);
            let c = st
                .clusters
                .iter_mut()
                .find(|c| c.id == self.id)
                .expect("cluster handle");
            let k = c.workers.len() + 1;
            let short = format!("w{k}");
            let name = node_name(&self.id, &short);
            c.workers.push(WorkerState {
                ns: ns_of(&name),
                short: short.clone(),
                name,
                ip: host_ip(n),
                started: false,
                containers: BTreeMap::new(),
                planned: Vec::new(),
            });
            (short, c.started)
        };
        if started {
            super::bringup::join_worker(&self.sim, &self.id, &short)?;
        }
        Ok(Worker::handle(&self.sim, &self.id, &short))
    }
}

/// A handle on one etcd member.
#[derive(Clone)]
pub struct EtcdNode {
    pub(crate) sim: Sim,
    pub(crate) cluster: String,
    pub(crate) short: String,
}

impl EtcdNode {
    pub(crate) fn handle(sim: &Sim, cluster: &str, short: &str) -> EtcdNode {
        EtcdNode {
            sim: sim.clone(),
            cluster: cluster.to_string(),
            short: short.to_string(),
        }
    }

    fn state(&self) -> EtcdState {
        let st = self.sim.state();
        let c = st
            .clusters
            .iter()
            .find(|c| c.id == self.cluster)
            .expect("cluster");
        c.etcd
            .iter()
            .find(|e| e.short == self.short)
            .expect("etcd member")
            .clone()
    }

    pub fn name(&self) -> String {
        node_name(&self.cluster, &self.short)
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.state().ip
    }

    pub fn ns(&self) -> String {
        self.state().ns
    }

    /// The pid of this member's etcd, as recorded when the simulator started it.
    pub fn pid(&self) -> Option<u32> {
        let what = format!("etcd {}", self.name());
        let record = self.sim.inner.record.snapshot();
        record
            .processes
            .iter()
            .find(|p| p.what == what)
            .map(|p| p.pid)
    }

    /// Runs a shell command on this member (bounded by the exec timeout).
    pub fn exec(&self, cmd: &str) -> Result<String> {
        let place = self.exec_place()?;
        super::worker::exec_in(&self.sim, &self.ns(), &self.name(), &place, cmd, None)
    }

    pub fn exec_with_timeout(&self, cmd: &str, timeout: Duration) -> Result<String> {
        let place = self.exec_place()?;
        super::worker::exec_in(
            &self.sim,
            &self.ns(),
            &self.name(),
            &place,
            cmd,
            Some(timeout),
        )
    }

    /// Where commands on this member run (hosts file, directory, PATH with etcdctl).
    pub(crate) fn exec_place(&self) -> Result<super::node_exec::ExecPlace> {
        self.sim.exec_place(&self.cluster, &self.name())
    }
}
