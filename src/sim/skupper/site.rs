//! A cluster's site: created (`skupper_init`), its services exposed, and deleted.

use super::*;

impl Cluster {
    /// Creates this cluster's Skupper site: a CA, a router certificate for the first
    /// worker's underlay address, the configuration, and the router on that worker.
    /// Calling it again with the same options does nothing.
    pub fn skupper_init(&self, opts: SiteOptions) -> Result<()> {
        if !self.is_started() {
            bail!(
                "{} is not running yet: call start() before {}.skupper_init()",
                self.name(),
                self.name()
            );
        }
        if let Some(s) = self.site() {
            if s.manual {
                bail!(
                    "{} already has a router configured with create_conf(); delete it first with {}.skupper_delete()",
                    self.name(),
                    self.name()
                );
            }
            if s.tls == opts.tls {
                return Ok(());
            }
            bail!(
                "{} already has a Skupper site with {} links; delete it first with {}.skupper_delete()",
                self.name(),
                if s.tls { "mutual TLS" } else { "plain" },
                self.name()
            );
        }
        let name = self.name();
        let w = self
            .workers()
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{name} has no worker to run its router on"))?;
        let host = w.ip();
        let dir = skupper_dir(&self.sim).join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        let router_files = if opts.tls {
            let ca = dir.join("ca");
            create_site_ca(&ca, &name)?;
            Some(issue_router_cert(
                &ca,
                &dir.join("router"),
                &name,
                &[&host.to_string()],
            )?)
        } else {
            create_private_dir(&dir)?;
            None
        };
        let site = SiteState {
            worker: w.name(),
            ns: w.ns(),
            host,
            tls: opts.tls,
            dir: dir.clone(),
            router_files,
            running: None,
            router: None,
            tokens: 0,
            links: Vec::new(),
            exposed: BTreeMap::new(),
            manual: false,
        };
        with_site_mut(&self.sim, &self.id, |s| *s = Some(site));
        if let Err(e) = apply(&self.sim) {
            let old = with_site_mut(&self.sim, &self.id, |s| s.take());
            if let Some(old) = old {
                let _ = stop_router(&self.sim, old.router);
            }
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(self.skupper_config_path());
            return Err(e.context(format!("creating {name}'s Skupper site")));
        }
        Ok(())
    }

    /// Exposes `container`'s TCP `port` as service `service`: a tcpConnector in this site
    /// and a tcpListener in every linked site, on the port returned (1028 for the first
    /// service of the simulation, then 1029, ...). Returns once the address is reachable
    /// in every linked site.
    pub fn skupper_expose(&self, service: &str, container: &str, port: i64) -> Result<u16> {
        let name = self.name();
        self.require_site()?;
        if !valid_service_name(service) {
            bail!("'{service}' is not a valid service name: use letters, digits, '-', '_' or '.', starting with a letter (at most 63)");
        }
        if !(1..=65535).contains(&port) {
            bail!("skupper_expose(\"{service}\", \"{container}\", {port}): the port must be between 1 and 65535");
        }
        let w = self.find_container(container).ok_or_else(|| {
            let known: Vec<String> = self.containers().into_iter().map(|(c, _)| c).collect();
            anyhow!(
                "{name} has no container '{container}' to expose (its containers: {}); create it first, e.g. {name}.get(\"w1\").create_container(\"{container}\")",
                crate::sim::listed(&known, "none")
            )
        })?;
        let ip = w.container_ip(container)?;
        let all = sites(&self.sim);
        if let Some((owner, s)) = all
            .iter()
            .find_map(|(id, s)| s.exposed.get(service).map(|e| (id, e)))
        {
            bail!(
                "service '{service}' is already exposed by {} (container {}, port {}); pick another name",
                cluster_name(owner),
                s.container,
                s.port
            );
        }
        let used: BTreeSet<u16> = all
            .values()
            .flat_map(|s| s.exposed.values().map(|e| e.port))
            .collect();
        let listen = (FIRST_SERVICE_PORT..u16::MAX)
            .find(|p| !used.contains(p))
            .ok_or_else(|| anyhow!("no free service port left"))?;
        with_site_mut(&self.sim, &self.id, |s| {
            if let Some(s) = s {
                s.exposed.insert(
                    service.to_string(),
                    Exposed {
                        container: container.to_string(),
                        ip,
                        target_port: port as u16,
                        port: listen,
                    },
                );
            }
        });
        let res = apply(&self.sim).and_then(|_| wait_converged(&self.sim, &self.id));
        if let Err(e) = res {
            with_site_mut(&self.sim, &self.id, |s| {
                if let Some(s) = s {
                    s.exposed.remove(service);
                }
            });
            let _ = apply(&self.sim);
            return Err(e.context(format!("exposing {service} from {name}")));
        }
        Ok(listen)
    }

    /// Deletes this cluster's site (as `skupper delete` does): stops its router, removes
    /// its CA and tokens, and removes the links and listeners other sites had for it.
    pub fn skupper_delete(&self) -> Result<()> {
        let s = self
            .site()
            .ok_or_else(|| anyhow!("{} has no Skupper site to delete", self.name()))?;
        stop_router(&self.sim, s.router)?;
        with_site_mut(&self.sim, &self.id, |site| *site = None);
        let _ = std::fs::remove_dir_all(&s.dir);
        let _ = std::fs::remove_file(self.skupper_config_path());
        // Other sites drop their connectors to it and the listeners of its services.
        let ids: Vec<String> = sites(&self.sim).keys().cloned().collect();
        for id in &ids {
            with_site_mut(&self.sim, id, |site| {
                if let Some(site) = site {
                    site.links.retain(|l| l.peer != self.id);
                }
            });
        }
        apply(&self.sim)?;
        Ok(())
    }

    /// Keeps the services this cluster's site exposes from `container` pointed at its
    /// address after it was created (again), as a Service's endpoints follow its pods.
    pub(crate) fn skupper_container_created(&self, container: &str, ip: &str) -> Result<()> {
        let moved = with_site_mut(&self.sim, &self.id, |s| {
            let Some(s) = s.as_mut().filter(|s| !s.manual) else {
                return false;
            };
            let mut moved = false;
            for e in s.exposed.values_mut().filter(|e| e.container == container) {
                if e.ip != ip {
                    e.ip = ip.to_string();
                    moved = true;
                }
            }
            moved
        });
        if moved {
            apply(&self.sim)?;
            wait_converged(&self.sim, &self.id).with_context(|| {
                format!(
                    "pointing {}'s Skupper services at {container}'s new address {ip}",
                    self.name()
                )
            })?;
        }
        Ok(())
    }
}
