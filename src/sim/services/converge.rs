//! kube-proxy on every worker: started at bring-up, and waited for after each change until
//! its table matches the cluster's Services.

use super::super::{Cluster, DaemonKind, DaemonSpec, Sim, Spawned, Worker};
use crate::components::kubeproxy::{self, rules};
use crate::netns::route_watch::Announcements;
use crate::wait::{Poll, Wait};
use anyhow::Result;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);

/// What kube-proxy still has to do, from the plan that would bring its table in line:
/// "2 chains and 1 map element to add, e.g. `add chain ip kube-proxy service-...`".
fn pending_changes(p: &rules::Plan) -> String {
    let st = &p.stats;
    let mut parts = Vec::new();
    if st.setup {
        parts.push("its table is not set up".to_string());
    }
    for (n, what) in [
        (st.chains_added, "chains to add"),
        (st.chains_rewritten, "chains to rewrite"),
        (st.chains_deleted, "chains to delete"),
        (st.elements_added, "map elements to add"),
        (st.elements_deleted, "map elements to delete"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        parts.push("rules differ".to_string());
    }
    match p.text.lines().find(|l| !l.trim().is_empty()) {
        Some(first) => format!("{}, first: `{}`", parts.join(", "), first.trim()),
        None => parts.join(", "),
    }
}

/// What a kube-proxy wait looks for in the worker's table.
#[derive(Clone, Copy)]
enum Expect<'a> {
    /// Exactly these rules (`nft -j list` compared with the plan).
    Rules(&'a rules::Desired),
    /// The table made at all: enough in a new namespace with no Services (see
    /// [`Cluster::wait_kube_proxy`]).
    TableMade,
}

impl Cluster {
    /// Waits until every running worker's kube-proxy table matches the cluster's state.
    pub fn wait_converged(&self) -> Result<()> {
        let want = rules::desired(&self.service_state());
        let workers: Vec<Worker> = self
            .workers()
            .into_iter()
            .filter(|w| w.is_started())
            .collect();
        // The workers side by side: each check is an `nft` run that mostly waits.
        crate::parallel::each(&workers, crate::parallel::default_limit(), |w| {
            self.wait_worker_converged(w, Expect::Rules(&want), None)
        })
        .into_iter()
        .collect()
    }

    /// Waits until worker `w`'s kube-proxy has programmed the cluster's Services, whether
    /// or not the worker counts as started yet: bring-up waits for each kube-proxy as soon
    /// as it is started, beside etcd's election. `stop` ends the wait early (the work
    /// beside it failed).
    ///
    /// At bring-up the cluster has no Services (they need a running cluster) and the
    /// namespace is new: kube-proxy makes its whole empty table in one atomic transaction
    /// (its netlink batch, else its first sync's `nft -f`), so the table existing is the
    /// table programmed. That is one netlink question instead of an `nft -j list` process
    /// per worker, 200 of them beside the wiring at 200 workers.
    pub(in crate::sim) fn wait_kube_proxy(&self, w: &Worker, stop: &AtomicBool) -> Result<()> {
        let st = self.service_state();
        if st.services.is_empty() && st.vips.is_empty() {
            return self.wait_worker_converged(w, Expect::TableMade, Some(stop));
        }
        let want = rules::desired(&st);
        self.wait_worker_converged(w, Expect::Rules(&want), Some(stop))
    }

    fn wait_worker_converged(
        &self,
        w: &Worker,
        expect: Expect,
        stop: Option<&AtomicBool>,
    ) -> Result<()> {
        // A kube-proxy stopped on purpose catches up once started again.
        if !self.sim.agent_wait(&w.name(), DaemonKind::KubeProxy)? {
            return Ok(());
        }
        let log = w.dir().join("kube-proxy.log");
        // Each check runs `nft -j list`, a process of its own: at hundreds of workers,
        // checking every few milliseconds took CPU from the agents being waited for. The
        // kernel announces every nf_tables commit, so the wait checks once per change to
        // kube-proxy's own table (flanneld's masquerade commits beside it do not count).
        let empty = &rules::desired(&Default::default());
        let changes = Announcements::nftables_table(rules::TABLE);
        changes.listen(&w.ns())?;
        let mut wait = Wait::new(
            format!(
                "kube-proxy on {} to program the cluster's Services",
                w.name()
            ),
            CONVERGE_TIMEOUT,
        )
        // The fallback interval only catches a kube-proxy that died meanwhile.
        .every(Duration::from_millis(250))
        .wake_on(&changes)
        .hint(|| format!("see {}", log.display()));
        if let Some(stop) = stop {
            wait = wait.also_stop_on(stop);
        }
        wait.until(|| {
            // One in a crash loop ends the wait with its error.
            self.sim.agent_wait(&w.name(), DaemonKind::KubeProxy)?;
            let want = match expect {
                Expect::Rules(want) => want,
                Expect::TableMade => {
                    let made = crate::netns::run_in(&w.ns(), || {
                        kubeproxy::nfnl::table_exists(rules::TABLE)
                    });
                    match made {
                        Ok(true) => return Ok(Poll::Ready(())),
                        Ok(false) => {
                            return Ok(Poll::Pending(
                                "its table ip kube-proxy is not made yet".into(),
                            ))
                        }
                        // Not answered over netlink: the listing below says.
                        Err(_) => empty,
                    }
                }
            };
            let cur = kubeproxy::read_current(Some(&w.ns()))?;
            let left = rules::plan(want, &cur);
            if left.is_empty() {
                return Ok(Poll::Ready(()));
            }
            Ok(Poll::Pending(pending_changes(&left)))
        })
    }
}

/// Starts the worker's kube-proxy (after its flannel device exists, so the service route
/// can point at it).
pub(in crate::sim) fn start_kube_proxy(sim: &Sim, w: &Worker) -> Result<Spawned> {
    let args = vec![
        "kube-proxy".to_string(),
        "--etcd-endpoints".into(),
        w.cluster().etcd_endpoints(),
        "--hostname-override".into(),
        w.name(),
        "--service-route-dev".into(),
        w.cluster().flannel_device(),
    ];
    sim.spawn_daemon(DaemonSpec::new(
        DaemonKind::KubeProxy,
        &w.name(),
        &w.ns(),
        &sim.knetsim_exe(),
        args,
        w.dir().join("kube-proxy.log"),
        format!("kube-proxy {}", w.name()),
    ))
}
