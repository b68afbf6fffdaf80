//! Services: the simulator plays the API server and the endpoints controller. It keeps
//! each cluster's Services and the original's static VIPs, writes them to the cluster's
//! etcd (where every worker's `knetsim kube-proxy` watches them), recomputes a Service's
//! endpoints whenever a matching pod comes or goes, and waits until every worker's
//! nftables has converged before returning, so a lesson's next line sees the change.

mod converge;

pub(super) use converge::start_kube_proxy;

use super::{Cluster, Worker};
use crate::components::etcd;
use crate::components::kubeproxy::{
    self, model, store, CounterRow, EndpointAddress, Endpoints, Protocol, Service, ServicePort,
    ServiceType, State, StaticVip,
};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// One port of a Service, as a script gives it.
#[derive(Debug, Clone, Default)]
pub struct PortSpec {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: i64,
    pub target: Option<i64>,
    pub node_port: Option<i64>,
}

/// A Service as a script declares it: `C0.service("web", #{ selector, ports, type })`.
#[derive(Debug, Clone, Default)]
pub struct ServiceSpec {
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<PortSpec>,
    pub type_: Option<String>,
    pub cluster_ip: Option<String>,
}

/// One cluster's Services and static VIPs, as the simulator (the API server here) holds them.
#[derive(Default)]
pub(crate) struct ClusterServices {
    services: BTreeMap<String, ServiceDef>,
    vips: BTreeMap<Ipv4Addr, StaticVip>,
}

/// A Service and the selector the endpoints controller uses for it.
#[derive(Debug, Clone)]
pub(crate) struct ServiceDef {
    service: Service,
    selector: BTreeMap<String, String>,
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| anyhow!("'{s}' is not an IPv4 address; a {what} looks like 100.64.10.1"))
}

/// Every Kubernetes-facing kube-proxy call runs against the cluster's etcd from inside
/// its first member's namespace, failing over between the members.
fn with_store<F, Fut, R>(c: &Cluster, f: F) -> Result<R>
where
    F: FnOnce(etcd::EtcdClient) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<R>>,
    R: Send + 'static,
{
    etcd::with_client(&c.etcd_ns(), &c.etcd_members(), f)
}

impl Cluster {
    fn services<R>(&self, f: impl FnOnce(&mut ClusterServices) -> R) -> R {
        self.sim.inner.services.with(&self.id, f)
    }

    /// The cluster's Service state as the simulator (the API server here) holds it.
    pub fn service_state(&self) -> State {
        let containers = self.containers_with_ips();
        self.services(|c| {
            let mut st = State {
                services: c.services.values().map(|d| d.service.clone()).collect(),
                vips: c.vips.values().cloned().collect(),
                endpoints: Vec::new(),
            };
            for d in c.services.values() {
                st.endpoints.push(endpoints_for(d, &containers));
            }
            st
        })
    }

    /// (name, worker, ip, labels) of every pod.
    fn containers_with_ips(&self) -> Vec<(String, String, Ipv4Addr, BTreeMap<String, String>)> {
        self.with(|c| {
            c.workers
                .iter()
                .flat_map(|w| {
                    w.containers.iter().filter_map(move |(name, cs)| {
                        cs.ip
                            .parse()
                            .ok()
                            .map(|ip| (name.clone(), w.name.clone(), ip, cs.labels.clone()))
                    })
                })
                .collect()
        })
    }

    fn require_running(&self) -> Result<()> {
        if !self.is_started() {
            bail!("{} is not running yet: call start() first", self.name());
        }
        // Every worker's kube-proxy programs what follows: a crash loop is reported now.
        self.sim.require_agents(&self.id)
    }

    /// The original's `kp_vip_add`: every worker DNATs all traffic for `vip` to the
    /// containers' current IPs, load-balanced. Static: nothing updates it later.
    pub fn kp_vip_add(&self, vip: &str, containers: &[String]) -> Result<()> {
        self.require_running()?;
        let vip_ip = parse_ip("VIP", vip)?;
        if containers.is_empty() {
            bail!("kp_vip_add(\"{vip}\", []): give at least one container, e.g. [\"c2\", \"c3\"]");
        }
        let mut ips = Vec::new();
        for name in containers {
            let w = self.find_container(name).ok_or_else(|| {
                let known: Vec<String> = self.containers().into_iter().map(|(c, _)| c).collect();
                anyhow!(
                    "kp_vip_add: there is no container '{name}' in {} (its containers: {})",
                    self.name(),
                    crate::sim::listed(&known, "none")
                )
            })?;
            ips.push(parse_ip("container IP", &w.container_ip(name)?)?);
        }
        let v = StaticVip { vip: vip_ip, ips };
        let mut next = self.service_state();
        if next.vips.iter().any(|x| x.vip == vip_ip) {
            bail!("VIP {vip} is already in use in {}: delete it with kp_vip_del(\"{vip}\") or pick another address", self.name());
        }
        next.vips.push(v.clone());
        next.validate()
            .with_context(|| format!("kp_vip_add(\"{vip}\")"))?;
        with_store(self, move |mut cl| async move {
            store::put_vip(&mut cl, &v).await
        })?;
        self.services(|c| c.vips.insert(vip_ip, next.vips.last().unwrap().clone()));
        self.wait_converged()
    }

    pub fn kp_vip_del(&self, vip: &str) -> Result<()> {
        self.require_running()?;
        let vip_ip = parse_ip("VIP", vip)?;
        if !self.services(|c| c.vips.contains_key(&vip_ip)) {
            bail!("there is no VIP {vip} in {}", self.name());
        }
        with_store(self, move |mut cl| async move {
            store::delete_vip(&mut cl, vip_ip).await.map(|_| ())
        })?;
        self.services(|c| c.vips.remove(&vip_ip));
        self.wait_converged()
    }

    /// Creates a Service with a selector; returns its ClusterIP. The simulator keeps its
    /// endpoints up to date as pods come and go.
    pub fn service(&self, name: &str, spec: &ServiceSpec) -> Result<Ipv4Addr> {
        self.require_running()?;
        model::check_name("Service name", name)?;
        if self.services(|c| c.services.contains_key(name)) {
            bail!("Service '{name}' already exists in {}: delete it with delete_service(\"{name}\") first", self.name());
        }
        if spec.ports.is_empty() {
            bail!("Service '{name}' needs at least one port, e.g. ports: [#{{ port: 80, target: 8000 }}]");
        }
        let type_ = match &spec.type_ {
            Some(t) => ServiceType::parse(t)?,
            None => ServiceType::ClusterIP,
        };
        let mut ports = Vec::new();
        let mut taken_node_ports = Vec::new();
        let state = self.service_state();
        for p in &spec.ports {
            let port = model::valid_port("port", p.port)?;
            let target = model::valid_port("target port", p.target.unwrap_or(p.port))?;
            let protocol = Protocol::parse(p.protocol.as_deref().unwrap_or("tcp"))?;
            let node_port = match (type_, p.node_port) {
                (ServiceType::NodePort, Some(n)) => Some(model::valid_port("nodePort", n)?),
                (ServiceType::NodePort, None) => {
                    let n = state.free_node_port(protocol, &taken_node_ports)?;
                    Some(n)
                }
                (_, Some(_)) => bail!("Service '{name}': node_port needs type: \"NodePort\""),
                (_, None) => None,
            };
            if let Some(n) = node_port {
                taken_node_ports.push(n);
            }
            ports.push(ServicePort {
                name: p.name.clone(),
                protocol,
                port,
                target_port: target,
                node_port,
            });
        }
        let cluster_ip = match &spec.cluster_ip {
            Some(ip) => parse_ip("ClusterIP", ip)?,
            None => state.free_cluster_ip()?,
        };
        let service = Service {
            name: name.to_string(),
            namespace: model::default_namespace(),
            cluster_ip,
            type_,
            ports,
        };
        let def = ServiceDef {
            service: service.clone(),
            selector: spec.selector.clone(),
        };
        let eps = endpoints_for(&def, &self.containers_with_ips());
        let mut next = state;
        next.services.push(service.clone());
        next.endpoints.push(eps.clone());
        next.validate()
            .with_context(|| format!("Service '{name}'"))?;
        with_store(self, move |mut cl| async move {
            store::put_endpoints(&mut cl, &eps).await?;
            store::put_service(&mut cl, &service).await
        })?;
        self.services(|c| c.services.insert(name.to_string(), def));
        self.wait_converged()?;
        self.sim.refresh_ingresses(&self.id)?;
        Ok(cluster_ip)
    }

    pub fn delete_service(&self, name: &str) -> Result<()> {
        self.require_running()?;
        if !self.services(|c| c.services.contains_key(name)) {
            bail!("there is no Service '{name}' in {}", self.name());
        }
        let n = name.to_string();
        with_store(self, move |mut cl| async move {
            store::delete_service(&mut cl, "default", &n)
                .await
                .map(|_| ())
        })?;
        self.services(|c| c.services.remove(name));
        self.wait_converged()?;
        self.sim.refresh_ingresses(&self.id)
    }

    /// Service `name`'s endpoints behind its TCP port `port`: each pod's IP with the
    /// target port, what an ingress controller proxies to.
    pub(crate) fn service_backends(&self, name: &str, port: u16) -> Result<Vec<SocketAddrV4>> {
        let def = self.services(|c| c.services.get(name).cloned());
        let Some(def) = def else {
            let names: Vec<String> = self.services(|c| c.services.keys().cloned().collect());
            bail!(
                "there is no Service '{name}' in {} (Services: {}): create it first with {}.service(\"{name}\", ...)",
                self.name(),
                crate::sim::listed(&names, "none"),
                self.name()
            );
        };
        let Some(p) = def
            .service
            .ports
            .iter()
            .find(|p| p.port == port && p.protocol == Protocol::Tcp)
        else {
            let ports: Vec<String> = def
                .service
                .ports
                .iter()
                .map(|p| p.port.to_string())
                .collect();
            bail!(
                "Service '{name}' has no TCP port {port} (its ports: {}): name one of them",
                ports.join(", ")
            );
        };
        let eps = endpoints_for(&def, &self.containers_with_ips());
        Ok(eps
            .addresses
            .iter()
            .map(|a| SocketAddrV4::new(a.ip, p.target_port))
            .collect())
    }

    /// The ClusterIP of Service `name`.
    pub fn service_ip(&self, name: &str) -> Result<Ipv4Addr> {
        self.services(|c| c.services.get(name).map(|d| d.service.cluster_ip))
            .ok_or_else(|| anyhow!("there is no Service '{name}' in {}", self.name()))
    }

    /// The endpoints controller: after a pod was created or deleted, rewrites the
    /// endpoints of every Service whose selector matches it.
    pub(crate) fn pods_changed(&self, labels: &BTreeMap<String, String>) -> Result<()> {
        let affected: Vec<ServiceDef> = self.services(|c| {
            c.services
                .values()
                .filter(|d| selects(&d.selector, labels))
                .cloned()
                .collect()
        });
        if affected.is_empty() {
            return Ok(());
        }
        let containers = self.containers_with_ips();
        let all: Vec<Endpoints> = affected
            .iter()
            .map(|d| endpoints_for(d, &containers))
            .collect();
        with_store(self, move |mut cl| async move {
            for eps in &all {
                store::put_endpoints(&mut cl, eps).await?;
            }
            Ok(())
        })?;
        self.wait_converged()?;
        // An ingress controller watches endpoints too: nginx gets the new pod list.
        self.sim.refresh_ingresses(&self.id)
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn endpoints_for(
    def: &ServiceDef,
    containers: &[(String, String, Ipv4Addr, BTreeMap<String, String>)],
) -> Endpoints {
    Endpoints {
        service: def.service.name.clone(),
        namespace: def.service.namespace.clone(),
        addresses: containers
            .iter()
            .filter(|(_, _, _, labels)| selects(&def.selector, labels))
            .map(|(pod, node, ip, _)| EndpointAddress {
                ip: *ip,
                pod: pod.clone(),
                node: node.clone(),
            })
            .collect(),
    }
}

impl Worker {
    /// Per-endpoint counters of this worker's kube-proxy table (flows DNATed to each).
    pub fn nft_counters(&self) -> Result<Vec<CounterRow>> {
        kubeproxy::read_counters(&self.ns())
    }
}
