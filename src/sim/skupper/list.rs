//! The original's list form: `create_conf(C, remotes, svcs)` writes a router configuration
//! from a list of services and `start_skupper()` starts it, outside the site model.

use super::*;

/// One service of the original's list form:
/// `{"name": "svc1", "cluster": "0", "host": ip, "port": "80", "lport": 1028}` — a
/// tcpConnector to `host:port` in cluster `cluster`, a tcpListener on `lport` elsewhere.
#[derive(Debug, Clone)]
pub struct ListService {
    pub name: String,
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub lport: u16,
}

impl Cluster {
    /// The original's `create_conf(C, remotes, svcs)`: writes this cluster's router
    /// configuration with a (plain) connector to each remote cluster's router and the
    /// services' tcpConnectors (in their own cluster) or tcpListeners (elsewhere). The
    /// router starts with [`Cluster::start_skupper`]. Returns the configuration's path.
    pub fn create_conf(&self, remotes: &[Cluster], svcs: &[ListService]) -> Result<PathBuf> {
        let name = self.name();
        if !self.is_started() {
            bail!("{name} is not running yet: call start() before create_conf({name}, ...)");
        }
        if let Some(s) = self.site() {
            if !s.manual {
                bail!(
                    "{name} already has a Skupper site made with skupper_init(); create_conf() and skupper_init() do not mix (delete it first with {name}.skupper_delete())"
                );
            }
            if alive(&self.sim, s.router) {
                bail!("{name}'s router is already running: call create_conf({name}, ...) before {name}.start_skupper(), or {name}.skupper_delete() first");
            }
        }
        let mut cfg = site_router(&name, None);
        for r in remotes {
            if r.sim.instance() != self.sim.instance() {
                bail!(
                    "create_conf({name}, ...): remote {} belongs to another simulation",
                    r.name()
                );
            }
            if r.id == self.id {
                bail!("create_conf({name}, [{name}], ...): a cluster cannot be its own remote; list the other clusters, e.g. create_conf(C1, [C0], svcs)");
            }
            let host = r
                .workers()
                .first()
                .map(|w| w.ip().to_string())
                .ok_or_else(|| anyhow!("{} has no worker", r.name()))?;
            cfg.connectors.push(Connector {
                name: r.name(),
                role: Role::InterRouter,
                host,
                port: INTER_ROUTER_PORT,
                cost: 1,
                ssl_profile: None,
                verify_hostname: true,
            });
        }
        let mut seen = BTreeSet::new();
        for (i, sv) in svcs.iter().enumerate() {
            let ctx = format!("create_conf({name}, ...): service {i} ({})", sv.name);
            if !valid_service_name(&sv.name) {
                bail!("{ctx}: 'name' must be letters, digits, '-', '_' or '.', starting with a letter");
            }
            if !seen.insert(sv.name.clone()) {
                bail!("{ctx}: the name '{}' is used twice", sv.name);
            }
            if self.sim.get_cluster(&sv.cluster).is_err() {
                bail!(
                    "{ctx}: 'cluster' is \"{}\", which is not a cluster here; give the id of the cluster running the service, e.g. \"0\"",
                    sv.cluster
                );
            }
            if sv.host.parse::<Ipv4Addr>().is_err() {
                bail!(
                    "{ctx}: 'host' \"{}\" is not an IPv4 address; give the container's IP",
                    sv.host
                );
            }
            if sv.port == 0 || sv.lport == 0 {
                bail!("{ctx}: 'port' and 'lport' must be between 1 and 65535");
            }
            let owner = sv.cluster.strip_prefix('C').unwrap_or(&sv.cluster);
            if owner == self.id {
                cfg.tcp_connectors.push(TcpConnector {
                    name: sv.name.clone(),
                    address: sv.name.clone(),
                    host: sv.host.clone(),
                    port: sv.port,
                });
            } else {
                cfg.tcp_listeners.push(TcpListener {
                    name: sv.name.clone(),
                    address: sv.name.clone(),
                    host: "0.0.0.0".into(),
                    port: sv.lport,
                });
            }
        }
        let w = self
            .workers()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{name} has no worker to run its router on"))?;
        create_private_dir(&skupper_dir(&self.sim))?;
        let path = self.skupper_config_path();
        std::fs::write(&path, cfg.render())
            .with_context(|| format!("writing {}", path.display()))?;
        let site = SiteState {
            worker: w.name(),
            ns: w.ns(),
            host: w.ip(),
            tls: false,
            dir: skupper_dir(&self.sim).join(&name),
            router_files: None,
            running: Some(cfg),
            router: None,
            tokens: 0,
            links: Vec::new(),
            exposed: BTreeMap::new(),
            manual: true,
        };
        with_site_mut(&self.sim, &self.id, |s| *s = Some(site));
        Ok(path)
    }

    /// The original's `C0.start_skupper()`: starts the router configured by
    /// [`Cluster::create_conf`] and waits until every running router of that form has the
    /// links and service addresses its configuration gives it (instead of the original's
    /// fixed 5 s sleep).
    pub fn start_skupper(&self) -> Result<()> {
        let name = self.name();
        let s = self.site().ok_or_else(|| {
            anyhow!(
                "{name} has no router configuration: call create_conf({name}, remotes, svcs) first"
            )
        })?;
        if !s.manual {
            bail!("{name}'s router was started by skupper_init() already");
        }
        if alive(&self.sim, s.router) {
            return Ok(());
        }
        // A router stopped earlier (stop_agent) is replaced, not kept beside the new one.
        stop_router(&self.sim, s.router)?;
        let router = start_router(&self.sim, &self.id, &s)?;
        with_site_mut(&self.sim, &self.id, |site| {
            if let Some(site) = site {
                site.router = Some(router);
            }
        });
        // What each running router of this form should report.
        let all: Vec<(String, SiteState)> = sites(&self.sim)
            .into_iter()
            .filter(|(_, s)| s.manual && alive(&self.sim, s.router))
            .collect();
        let host_of: BTreeMap<String, String> = all
            .iter()
            .map(|(id, s)| (s.host.to_string(), id.clone()))
            .collect();
        let served: BTreeSet<String> = all
            .iter()
            .flat_map(|(_, s)| s.running.iter().flat_map(|c| c.tcp_connectors.iter()))
            .map(|t| t.address.clone())
            .collect();
        let mut targets = Vec::new();
        for (id, s) in &all {
            let Some(cfg) = &s.running else { continue };
            let out = cfg
                .connectors
                .iter()
                .filter(|c| host_of.contains_key(&c.host))
                .count();
            let inbound = all
                .iter()
                .filter(|(other, _)| other != id)
                .flat_map(|(_, o)| o.running.iter().flat_map(|c| c.connectors.iter()))
                .filter(|c| c.host == s.host.to_string())
                .count();
            let addrs: BTreeSet<&String> = cfg
                .tcp_connectors
                .iter()
                .map(|t| &t.address)
                .chain(
                    cfg.tcp_listeners
                        .iter()
                        .map(|t| &t.address)
                        .filter(|a| served.contains(*a)),
                )
                .collect();
            targets.push(Target {
                id: id.clone(),
                ns: s.ns.clone(),
                links: (out + inbound) as u64,
                addrs: addrs.len() as u64,
            });
        }
        wait_metrics(&self.sim, targets).with_context(|| format!("starting {name}'s router"))
    }
}
