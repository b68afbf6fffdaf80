//! The supervisor as the simulator's handles show it: events, agent health for waits,
//! and a worker's `stop_agent` / `start_agent`.

use super::{DaemonId, DaemonKind, Health, SupervisionEvent};
use crate::sim::{Sim, Worker};
use anyhow::{anyhow, bail, Result};

impl Sim {
    /// Every exit of a daemon the simulator did not ask for, oldest first, with what the
    /// supervisor did about it (the lines the console printed).
    pub fn events(&self) -> Vec<SupervisionEvent> {
        self.inner.daemons.events()
    }

    /// Fails with the crash-loop error of cluster `id`'s first agent that was given up
    /// on: calls that need every agent of the cluster report it at once.
    pub(crate) fn require_agents(&self, id: &str) -> Result<()> {
        match self.inner.daemons.failure_in_cluster(id) {
            Some(m) => Err(anyhow!(m)),
            None => Ok(()),
        }
    }

    /// What a readiness wait on the `kind` agent of `node` should do: Ok(true) wait for
    /// it, Ok(false) skip it (stopped on purpose: it catches up when started again),
    /// Err when it was given up on.
    pub(crate) fn agent_wait(&self, node: &str, kind: DaemonKind) -> Result<bool> {
        let Some(id) = self.inner.daemons.daemon_on(node, kind) else {
            return Ok(true);
        };
        match self.inner.daemons.health(id) {
            Some(Health::Failed(m)) => Err(anyhow!(m)),
            Some(Health::Stopped) => Ok(false),
            _ => Ok(true),
        }
    }
}

impl Worker {
    fn agent_id(&self, agent: &str) -> Result<DaemonId> {
        let node = self.name();
        let kind = DaemonKind::agent(agent);
        if let Some(id) = kind.and_then(|k| self.sim.inner.daemons.daemon_on(&node, k)) {
            return Ok(id);
        }
        let here = self.sim.inner.daemons.agents_on(&node);
        bail!(
            "{node} has no agent '{agent}': its agents are {} (the Skupper router, skrouterd, runs on its cluster's first worker once skupper_init() made a site)",
            crate::sim::listed(&here, "none yet (call start() first)")
        )
    }

    /// The pid of this worker's agent `agent` (`flanneld`, `kube-proxy`, `skrouterd`)
    /// while it runs; None while it is stopped or being restarted.
    pub fn agent_pid(&self, agent: &str) -> Result<Option<u32>> {
        let id = self.agent_id(agent)?;
        Ok(self.sim.inner.daemons.pid(id))
    }

    /// Stops agent `agent` on purpose, as a break-and-fix lesson does: it is not restarted
    /// until [`Worker::start_agent`], and waits for it skip this worker meanwhile.
    pub fn stop_agent(&self, agent: &str) -> Result<()> {
        let id = self.agent_id(agent)?;
        if matches!(self.sim.inner.daemons.health(id), Some(Health::Stopped)) {
            bail!(
                "{agent} on {} is already stopped; start it with {}.start_agent(\"{agent}\")",
                self.name(),
                self.name()
            );
        }
        self.sim.inner.daemons.stop(id, false)
    }

    /// Starts agent `agent` again with the arguments it was first started with (also
    /// after a crash loop, once its cause is fixed), and waits until the cluster has
    /// converged on it. Returns its pid.
    pub fn start_agent(&self, agent: &str) -> Result<u32> {
        let id = self.agent_id(agent)?;
        if let Some(Health::Running(pid)) = self.sim.inner.daemons.health(id) {
            bail!(
                "{agent} on {} is already running (pid {pid}); stop it first with {}.stop_agent(\"{agent}\")",
                self.name(),
                self.name()
            );
        }
        let spawned = self.sim.inner.daemons.start_again(id)?;
        match DaemonKind::agent(agent) {
            Some(DaemonKind::KubeProxy) => self.cluster().wait_converged()?,
            Some(DaemonKind::Flanneld) => {
                crate::sim::bringup::wait_routes(&self.sim, &self.cluster)?
            }
            _ => {}
        }
        Ok(spawned.pid)
    }
}
