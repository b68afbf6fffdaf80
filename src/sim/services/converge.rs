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
            self.wait_worker_converged(w, &want, None)
        })
        .into_iter()
        .collect()
    }

    /// Waits until worker `w`'s kube-proxy has programmed the cluster's Services, whether
    /// or not the worker counts as started yet: bring-up waits for each kube-proxy as soon
    /// as it is started, beside etcd's election. `stop` ends the wait early (the work
    /// beside it failed).
    pub(in crate::sim) fn wait_kube_proxy(&self, w: &Worker, stop: &AtomicBool) -> Result<()> {
        let want = rules::desired(&self.service_state());
        self.wait_worker_converged(w, &want, Some(stop))
    }

    fn wait_worker_converged(
        &self,
        w: &Worker,
        want: &rules::Desired,
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
