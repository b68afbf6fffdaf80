//! The model and lifecycle: a [`Sim`] holds clusters; a cluster holds etcd members and
//! workers; a worker holds containers. It owns bring-up order, readiness waits and
//! teardown, and hands protocol work to `components` and kernel work to `netns`.
//!
//! Handles ([`Cluster`], [`Worker`], [`EtcdNode`]) are cheap clones that name a node; the
//! state lives once, behind a mutex, and is never held across a slow operation.

pub mod addressing;
pub mod bringup;
mod cluster;
mod handmade;
mod ingress;
pub mod mininet;
mod node_exec;
mod services;
mod skupper;
mod supervise;
mod topology;
mod trace;
mod worker;

pub use cluster::{check_count, Cluster, ClusterSpec, EtcdNode, MAX_ETCD, MAX_WORKERS};
pub use ingress::{IngressInfo, IngressRule};
pub use services::{PortSpec, ServiceSpec};
pub use skupper::{LinkOptions, ListService, SiteOptions, FIRST_SERVICE_PORT};
pub use supervise::{SupervisionEvent, SupervisionOutcome};
pub use trace::{TraceOptions, Walk};
pub use worker::{ContainerInfo, Worker};

pub(crate) use supervise::{DaemonId, DaemonKind, DaemonSpec, Spawned};

use crate::netns::{self, record::Record};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const DEFAULT_INSTANCE: &str = "default";
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest exec time limit: a day (longer is surely a mistake, and a huge number of
/// seconds is no Duration at all).
pub const MAX_EXEC_TIMEOUT_SECS: f64 = 86_400.0;

/// An exec time limit from seconds: above 0 (0 would stop every command before it ran)
/// and at most [`MAX_EXEC_TIMEOUT_SECS`]. The error says what is wrong; callers name the
/// setting (`--exec-timeout`, `set_exec_timeout`).
pub fn exec_timeout_from_secs(s: f64) -> std::result::Result<Duration, String> {
    if !(s.is_finite() && s > 0.0 && s <= MAX_EXEC_TIMEOUT_SECS) {
        return Err(format!(
            "the limit must be a number of seconds above 0 and at most {MAX_EXEC_TIMEOUT_SECS} \
             (got {s:?}; 0 or less would stop every exec at once)"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Names for a message, comma-separated, or `none` when there are none.
pub(crate) fn listed<S: AsRef<str>>(names: &[S], none: &str) -> String {
    if names.is_empty() {
        return none.to_string();
    }
    let names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.join(", ")
}

/// How a simulation is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Instance name: the run directory and (unless "default") a namespace name prefix.
    pub instance: String,
    /// Default bound on `exec*` calls.
    pub exec_timeout: Duration,
    /// The knetsim binary that daemons are started from.
    pub knetsim_exe: PathBuf,
    /// Show progress bars and summaries on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            instance: DEFAULT_INSTANCE.to_string(),
            exec_timeout: DEFAULT_EXEC_TIMEOUT,
            knetsim_exe: std::env::var_os("KNETSIM_EXE")
                .map(PathBuf::from)
                .or_else(|| std::env::current_exe().ok())
                .unwrap_or_else(|| PathBuf::from("knetsim")),
            progress: true,
        }
    }
}

/// Times of the last bring-up, for the benchmark and the summary line.
#[derive(Debug, Clone, Default)]
pub struct BringUpTimes {
    pub total: Duration,
    /// When the last cluster's etcd had a leader (its flannel config put).
    pub etcd_healthy: Duration,
    /// Each cluster's own election, by id ("0"), in the order started: clusters elect at
    /// moments of their own, and what follows the later one depends on which it was.
    pub elections: Vec<(String, Duration)>,
    pub flannel_ready: Duration,
}

/// A running simulation. Clones share it; the last one dropped tears it down.
#[derive(Clone)]
pub struct Sim {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub instance: String,
    pub knetsim_exe: PathBuf,
    pub progress: bool,
    /// The live exec limit (`set_exec_timeout` changes it); [`Options::exec_timeout`] is
    /// only where it starts.
    pub exec_timeout: Mutex<Duration>,
    pub record: Record,
    /// The cluster model only: each feature below keeps its own state.
    pub state: Mutex<State>,
    /// Every daemon started, and the thread that restarts the agents among them.
    pub daemons: Arc<supervise::Supervisor>,
    pub torn_down: AtomicBool,
    pub services: PerCluster<services::ClusterServices>,
    pub ingresses: ingress::Running,
    pub skupper: PerCluster<Option<skupper::SiteState>>,
    /// What exec has already written or created in the run directory (see node_exec).
    pub exec_files: Mutex<node_exec::Written>,
}

/// One feature's state for each cluster (by id), behind the feature's own lock, so a
/// feature never needs the cluster model's lock to change what it owns.
pub(crate) struct PerCluster<T>(Mutex<BTreeMap<String, T>>);

impl<T: Default> PerCluster<T> {
    fn new() -> Self {
        PerCluster(Mutex::new(BTreeMap::new()))
    }

    pub fn with<R>(&self, cluster: &str, f: impl FnOnce(&mut T) -> R) -> R {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(cluster.to_string()).or_default())
    }

    /// Every cluster's state, for a look across clusters (Skupper links).
    pub fn snapshot(&self) -> BTreeMap<String, T>
    where
        T: Clone,
    {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub host_counter: u32,
    pub underlay_ready: bool,
    pub clusters: Vec<ClusterState>,
    pub last_bringup: Option<BringUpTimes>,
}

pub(crate) struct ClusterState {
    pub id: String,
    pub number: u32,
    pub started: bool,
    pub etcd: Vec<EtcdState>,
    pub workers: Vec<WorkerState>,
    /// flannel's network config, written to this cluster's etcd at bring-up.
    pub flannel: crate::components::flannel::config::NetConfig,
}

#[derive(Clone)]
pub(crate) struct EtcdState {
    pub short: String,
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

pub(crate) struct WorkerState {
    pub short: String,
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub started: bool,
    pub containers: BTreeMap<String, ContainerState>,
    /// Pods declared with the cluster (`cluster(id, #{ pods: ... })`), made by start() as
    /// soon as this worker has its subnet, in this order.
    pub planned: Vec<String>,
}

#[derive(Clone)]
pub(crate) struct ContainerState {
    pub ns: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
}

impl State {
    pub fn cluster(&self, id: &str) -> &ClusterState {
        self.clusters
            .iter()
            .find(|c| c.id == id)
            .expect("a handle names a declared cluster")
    }

    pub fn cluster_mut(&mut self, id: &str) -> &mut ClusterState {
        self.clusters
            .iter_mut()
            .find(|c| c.id == id)
            .expect("a handle names a declared cluster")
    }
}

impl ClusterState {
    pub fn name(&self) -> String {
        format!("C{}", self.id)
    }
    pub fn etcd_endpoints(&self) -> String {
        self.etcd
            .iter()
            .map(|e| format!("http://{}:2379", e.ip))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Either kind of node the console can address by name.
#[derive(Clone)]
pub enum Node {
    Worker(Worker),
    Etcd(EtcdNode),
}

impl Node {
    pub fn name(&self) -> String {
        match self {
            Node::Worker(w) => w.name(),
            Node::Etcd(e) => e.name(),
        }
    }
    pub fn exec(&self, cmd: &str) -> Result<String> {
        match self {
            Node::Worker(w) => w.exec(cmd),
            Node::Etcd(e) => e.exec(cmd),
        }
    }
}

/// glibc gives each thread that allocates a 64 MB arena of its own, and bring-up's
/// threads (spawners, waits, netlink sessions) leave a dozen behind: every fork of the
/// simulator (each exec_container, each learner's command) copied their mappings and
/// page tables, about a tenth of a command's latency. Two arenas serve its threads; it is
/// set before the simulation's threads start, so later arenas are never made.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a parameter of the allocator; it takes no pointers.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

impl Sim {
    /// Claims the instance's run directory (refusing a live instance, cleaning a stale one).
    pub fn new(opts: Options) -> Result<Sim> {
        if !nix::unistd::geteuid().is_root() {
            bail!("knetsim needs root to create network namespaces: run it with sudo");
        }
        netns::state::check_instance(&opts.instance)?;
        limit_malloc_arenas();
        let record = Record::claim(&opts.instance)?;
        let daemons = match supervise::Supervisor::start(record.clone()) {
            Ok(d) => d,
            Err(e) => {
                let _ = record.teardown();
                return Err(e);
            }
        };
        let Options {
            instance,
            exec_timeout,
            knetsim_exe,
            progress,
        } = opts;
        Ok(Sim {
            inner: Arc::new(Inner {
                instance,
                knetsim_exe,
                progress,
                exec_timeout: Mutex::new(exec_timeout),
                record,
                state: Mutex::new(State::default()),
                daemons,
                torn_down: AtomicBool::new(false),
                services: PerCluster::new(),
                ingresses: ingress::Running::default(),
                skupper: PerCluster::new(),
                exec_files: Mutex::default(),
            }),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    pub fn run_dir(&self) -> &Path {
        self.inner.record.dir()
    }

    /// Whether progress bars and summaries go to stderr.
    pub fn progress(&self) -> bool {
        self.inner.progress
    }

    pub fn exec_timeout(&self) -> Duration {
        *self
            .inner
            .exec_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_exec_timeout(&self, t: Duration) {
        *self
            .inner
            .exec_timeout
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = t;
    }

    pub fn last_bringup(&self) -> Option<BringUpTimes> {
        self.state().last_bringup.clone()
    }

    /// Declares cluster `id` (named `C<id>`); [`Sim::start`] or [`Cluster::start`] brings it up.
    pub fn cluster(&self, id: &str, spec: ClusterSpec) -> Result<Cluster> {
        cluster::declare(self, id, spec, cluster::default_flannel())
    }

    /// [`Sim::cluster`] with its own flannel network config (checked against the address
    /// plan here, before anything starts).
    pub fn cluster_with_flannel(
        &self,
        id: &str,
        spec: ClusterSpec,
        flannel: crate::components::flannel::config::NetConfig,
    ) -> Result<Cluster> {
        cluster::declare(self, id, spec, flannel)
    }

    pub fn get_cluster(&self, id_or_name: &str) -> Result<Cluster> {
        let id = id_or_name.strip_prefix('C').unwrap_or(id_or_name);
        let st = self.state();
        if st.clusters.iter().any(|c| c.id == id) {
            return Ok(Cluster::handle(self, id));
        }
        let known: Vec<String> = st.clusters.iter().map(|c| c.name()).collect();
        bail!(
            "there is no cluster '{id_or_name}' (clusters: {})",
            listed(&known, "none yet")
        )
    }

    pub fn clusters(&self) -> Vec<Cluster> {
        let ids: Vec<String> = self.state().clusters.iter().map(|c| c.id.clone()).collect();
        ids.iter().map(|id| Cluster::handle(self, id)).collect()
    }

    /// Brings up every declared cluster that is not running yet.
    pub fn start(&self) -> Result<()> {
        let ids: Vec<String> = self
            .state()
            .clusters
            .iter()
            .filter(|c| !c.started)
            .map(|c| c.id.clone())
            .collect();
        if ids.is_empty() {
            let running: Vec<String> = self.state().clusters.iter().map(|c| c.name()).collect();
            let Some(first) = running.first() else {
                bail!("nothing to start: declare a cluster first, e.g. cluster(\"0\", #{{ workers: 3, etcd: 2 }})");
            };
            // A second start() means the script expected something new to come up.
            bail!(
                "already started: {} {} running and no cluster was declared since. \
                 Declare another cluster with cluster(\"{}\", #{{ workers: 3, etcd: 2 }}) first, \
                 or add workers with {first}.add_worker()",
                running.join(", "),
                if running.len() == 1 { "is" } else { "are" },
                self.free_cluster_id()
            );
        }
        bringup::start_clusters(self, &ids)
    }

    /// For benchmarks: what [`Sim::start`] does for every declared cluster up to its etcd
    /// election, and nothing else (no worker is wired; the clusters stay not started).
    /// Each cluster's election since the call, by id; tear the simulation down after.
    #[doc(hidden)]
    pub fn elect_alone(&self) -> Result<Vec<(String, std::time::Duration)>> {
        let ids: Vec<String> = self.state().clusters.iter().map(|c| c.id.clone()).collect();
        bringup::elect_alone(self, &ids)
    }

    /// The smallest cluster id not declared yet, for examples in messages.
    fn free_cluster_id(&self) -> u32 {
        let st = self.state();
        (0..)
            .find(|n| !st.clusters.iter().any(|c| c.number == *n))
            .unwrap_or(0)
    }

    /// A node by its full name (`C0w1`, `C0e1`).
    pub fn node(&self, name: &str) -> Option<Node> {
        let st = self.state();
        for c in &st.clusters {
            if let Some(w) = c.workers.iter().find(|w| w.name == name) {
                return Some(Node::Worker(Worker::handle(self, &c.id, &w.short)));
            }
            if let Some(e) = c.etcd.iter().find(|e| e.name == name) {
                return Some(Node::Etcd(EtcdNode::handle(self, &c.id, &e.short)));
            }
        }
        None
    }

    /// Names of every cluster and node, for completion and console variables.
    pub fn node_names(&self) -> Vec<String> {
        let st = self.state();
        let mut out = Vec::new();
        for c in &st.clusters {
            out.push(c.name());
            out.extend(c.etcd.iter().map(|e| e.name.clone()));
            out.extend(c.workers.iter().map(|w| w.name.clone()));
        }
        out
    }

    pub(crate) fn knetsim_exe(&self) -> String {
        self.inner.knetsim_exe.display().to_string()
    }

    /// PATH for commands the simulator runs: the knetsim binary's directory first, so
    /// `knetsim echo-server ...` works inside `exec*` commands and scripts.
    pub(crate) fn path_env(&self) -> String {
        let old = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        match self.inner.knetsim_exe.parent() {
            Some(d) if d.is_absolute() => format!("{}:{old}", d.display()),
            _ => old,
        }
    }

    pub(crate) fn ns_name(&self, node: &str) -> String {
        addressing::ns_name(&self.inner.instance, node)
    }

    /// Starts a daemon as `spec` says (with PATH finding knetsim first), registered with
    /// the supervisor and recorded for teardown before this returns.
    pub(crate) fn spawn_daemon(&self, mut spec: DaemonSpec) -> Result<Spawned> {
        spec.env.push(("PATH".into(), self.path_env()));
        self.inner.daemons.spawn(spec)
    }

    /// Stops one daemon on purpose (its whole process group), waits until it is reaped,
    /// and forgets it: it is not restarted.
    pub(crate) fn stop_daemon(&self, id: DaemonId) -> Result<()> {
        self.inner.daemons.stop(id, true)
    }

    /// The daemon's pid while it runs (it changes when the supervisor restarts it).
    pub(crate) fn daemon_pid(&self, id: DaemonId) -> Option<u32> {
        self.inner.daemons.pid(id)
    }

    /// Stops everything and removes the run directory. Safe to call more than once.
    pub fn teardown(&self) -> Result<()> {
        self.teardown_keeping_logs(false).map(|_| ())
    }

    /// [`Sim::teardown`]; with `keep_logs` (a failed run) the run directory's logs stay,
    /// root-only, and their directory is returned (`knetsim cleanup` removes them).
    pub fn teardown_keeping_logs(&self, keep_logs: bool) -> Result<Option<PathBuf>> {
        if self.inner.torn_down.swap(true, Ordering::SeqCst) {
            return Ok(None);
        }
        teardown_inner(&self.inner, keep_logs)
    }
}

fn teardown_inner(inner: &Inner, keep_logs: bool) -> Result<Option<PathBuf>> {
    // The supervisor stops first, so nothing is restarted while teardown ends it; it
    // ends and reaps the daemons it started (it is their parent).
    inner.daemons.shutdown();
    // CNI DEL is not needed for teardown: removing the worker namespaces removes their
    // veths and bridges; the IPAM files live in the run directory, removed with it.
    inner.record.teardown_keeping_logs(keep_logs)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if !self.torn_down.swap(true, Ordering::SeqCst) {
            if let Err(e) = teardown_inner(self, false) {
                eprintln!("knetsim: teardown: {e:#}");
            }
        }
    }
}
