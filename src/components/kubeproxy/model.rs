//! The Service state kube-proxy programs: Kubernetes-shaped Services and their endpoints,
//! plus the original simulator's static all-protocol VIPs. Pure data and validation.
//!
//! Every check here runs before anything touches the kernel, so a rejected change leaves
//! the ruleset exactly as it was.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// The service range every ClusterIP and VIP comes from.
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(100, 64, 0, 0), 16);
/// The original simulator's first VIP; ClusterIP allocation never hands it out.
pub const ORIGINAL_VIP: Ipv4Addr = Ipv4Addr::new(100, 64, 10, 1);
/// Kubernetes' default NodePort range.
pub const NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// Transport protocol of a Service port. Stored as Kubernetes spells it ("TCP").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP", alias = "tcp")]
    Tcp,
    #[serde(rename = "UDP", alias = "udp")]
    Udp,
    #[serde(rename = "SCTP", alias = "sctp")]
    Sctp,
}

impl Protocol {
    /// Parses "tcp", "UDP", ... (any case).
    pub fn parse(s: &str) -> Result<Protocol> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => bail!("bad protocol '{s}': a Service port's protocol is tcp, udp or sctp"),
        }
    }

    /// The name nft uses (`meta l4proto tcp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
}

impl ServiceType {
    pub fn parse(s: &str) -> Result<ServiceType> {
        match s.to_ascii_lowercase().as_str() {
            "clusterip" => Ok(ServiceType::ClusterIP),
            "nodeport" => Ok(ServiceType::NodePort),
            _ => bail!("unknown Service type '{s}': use \"ClusterIP\" or \"NodePort\""),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

impl ServicePort {
    /// The name used in chain names and comments: the port's name, or its number when it
    /// has none (upstream would leave the part empty; a number reads better).
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => self.port.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Ipv4Addr,
    #[serde(rename = "type", default)]
    pub type_: ServiceType,
    pub ports: Vec<ServicePort>,
}

pub fn default_namespace() -> String {
    "default".to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointAddress {
    pub ip: Ipv4Addr,
    /// The pod (container) behind this address.
    pub pod: String,
    /// The worker the pod runs on.
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub service: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub addresses: Vec<EndpointAddress>,
}

/// The original simulator's VIP: every packet to `vip`, whatever its protocol, is DNATed
/// to one of `ips` (so ping works). Static: nobody updates `ips` when a pod goes away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticVip {
    pub vip: Ipv4Addr,
    pub ips: Vec<Ipv4Addr>,
}

/// Everything one kube-proxy programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub services: Vec<Service>,
    pub endpoints: Vec<Endpoints>,
    pub vips: Vec<StaticVip>,
}

/// Checks a port number coming from user input (a script passes i64).
pub fn valid_port(what: &str, value: i64) -> Result<u16> {
    if !(1..=65535).contains(&value) {
        bail!("invalid {what} {value}: a port is a number from 1 to 65535");
    }
    Ok(value as u16)
}

/// True when `ip` lies in 100.64.0.0/16.
pub fn in_service_range(ip: Ipv4Addr) -> bool {
    let (net, len) = SERVICE_CIDR;
    let mask = u32::MAX << (32 - len);
    u32::from(ip) & mask == u32::from(net)
}

fn check_service_ip(what: &str, ip: Ipv4Addr) -> Result<()> {
    let (net, len) = SERVICE_CIDR;
    if !in_service_range(ip) {
        bail!("{what} {ip} is outside the service range {net}/{len}: pick an address in {net}/{len} (or let one be allocated)");
    }
    let last = Ipv4Addr::from(u32::from(net) | !(u32::MAX << (32 - len)));
    if ip == net || ip == last {
        bail!(
            "{what} {ip} is the network or broadcast address of {net}/{len}: pick another address"
        );
    }
    Ok(())
}

/// Names go into nftables chain names and etcd keys: Kubernetes' DNS-label rule.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!("invalid {what} '{name}': use 1-63 lowercase letters, digits or '-', not starting or ending with '-'");
    }
    Ok(())
}

impl Service {
    /// A TCP Service `name` in namespace `default` at `cluster_ip` with one port, `port` to
    /// `target_port` (named `port_name`), of type NodePort when `node_port` is given:
    /// synthetic state for benchmarks and tests.
    pub fn synthetic(
        name: &str,
        cluster_ip: Ipv4Addr,
        port_name: Option<&str>,
        port: u16,
        target_port: u16,
        node_port: Option<u16>,
    ) -> Service {
        Service {
            name: name.to_string(),
            namespace: "default".into(),
            cluster_ip,
            type_: if node_port.is_some() {
                ServiceType::NodePort
            } else {
                ServiceType::ClusterIP
            },
            ports: vec![ServicePort {
                name: port_name.map(str::to_string),
                protocol: Protocol::Tcp,
                port,
                target_port,
                node_port,
            }],
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Checks this Service on its own (ranges, names, ports).
    pub fn validate(&self) -> Result<()> {
        check_name("Service name", &self.name)?;
        check_name("namespace", &self.namespace)?;
        let who = format!("Service {}", self.key());
        check_service_ip(&format!("ClusterIP of {who}:"), self.cluster_ip)?;
        if self.ports.is_empty() {
            bail!(
                "{who} has no ports: give at least one, e.g. ports: [#{{port: 80, target: 8000}}]"
            );
        }
        let mut seen = BTreeSet::new();
        let mut names = BTreeSet::new();
        for p in &self.ports {
            if p.port == 0 {
                bail!("invalid port 0 in {who}: a port is a number from 1 to 65535");
            }
            if p.target_port == 0 {
                bail!("invalid target port 0 in {who}: a port is a number from 1 to 65535");
            }
            if let Some(n) = &p.name {
                check_name(&format!("port name in {who}"), n)?;
                if !names.insert(n.clone()) {
                    bail!("{who} has two ports named '{n}': port names must differ");
                }
            }
            if !seen.insert((p.protocol, p.port)) {
                bail!(
                    "{who} lists {}/{} twice: each protocol and port once",
                    p.protocol,
                    p.port
                );
            }
            match (self.type_, p.node_port) {
                (ServiceType::ClusterIP, Some(np)) => bail!(
                    "{who} is of type ClusterIP but port {} asks for nodePort {np}: use type NodePort",
                    p.port
                ),
                (_, Some(np)) if np < NODE_PORT_RANGE.0 || np > NODE_PORT_RANGE.1 => bail!(
                    "nodePort {np} of {who} is outside {}-{}: pick one in that range (or let one be allocated)",
                    NODE_PORT_RANGE.0,
                    NODE_PORT_RANGE.1
                ),
                (ServiceType::NodePort, None) => bail!(
                    "{who} is of type NodePort but port {} has no nodePort: give one or let the store allocate it",
                    p.port
                ),
                _ => {}
            }
        }
        Ok(())
    }
}

impl StaticVip {
    pub fn validate(&self) -> Result<()> {
        check_service_ip("VIP", self.vip)?;
        if self.ips.is_empty() {
            bail!(
                "VIP {} has no endpoint addresses: give at least one container",
                self.vip
            );
        }
        let mut seen = BTreeSet::new();
        for ip in &self.ips {
            if !seen.insert(*ip) {
                bail!(
                    "VIP {} lists endpoint {ip} twice: list each container once",
                    self.vip
                );
            }
        }
        Ok(())
    }
}

impl Endpoints {
    /// Endpoints of `service` in namespace `default` at `ips`, pods named b1, b2, ... on a
    /// node named `node`: synthetic state for benchmarks and tests.
    pub fn synthetic(service: &str, ips: &[Ipv4Addr]) -> Endpoints {
        Endpoints {
            service: service.to_string(),
            namespace: "default".into(),
            addresses: ips
                .iter()
                .enumerate()
                .map(|(k, ip)| EndpointAddress {
                    ip: *ip,
                    pod: format!("b{}", k + 1),
                    node: "node".into(),
                })
                .collect(),
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.service)
    }
}

impl State {
    /// Checks every object and the rules between them: unique names, unique service
    /// addresses (ClusterIPs and VIPs share the range), unique NodePorts.
    pub fn validate(&self) -> Result<()> {
        let mut ips: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
        let mut names = BTreeSet::new();
        let mut node_ports: BTreeMap<(Protocol, u16), String> = BTreeMap::new();
        for s in &self.services {
            s.validate()?;
            if !names.insert(s.key()) {
                bail!(
                    "Service {} is defined twice: delete the old one first",
                    s.key()
                );
            }
            if let Some(other) = ips.insert(s.cluster_ip, format!("Service {}", s.key())) {
                bail!(
                    "ClusterIP {} of Service {} is already taken by {other}: pick a free address",
                    s.cluster_ip,
                    s.key()
                );
            }
            for p in &s.ports {
                if let Some(np) = p.node_port {
                    if let Some(other) = node_ports.insert((p.protocol, np), s.key()) {
                        bail!(
                            "nodePort {}/{np} of Service {} is already used by Service {other}: pick another",
                            p.protocol,
                            s.key()
                        );
                    }
                }
            }
        }
        for v in &self.vips {
            v.validate()?;
            if let Some(other) = ips.insert(v.vip, format!("VIP {}", v.vip)) {
                bail!(
                    "VIP {} is already taken by {other}: pick a free address in 100.64.0.0/16",
                    v.vip
                );
            }
        }
        let mut eps = BTreeSet::new();
        for e in &self.endpoints {
            if !eps.insert(e.key()) {
                bail!("endpoints of Service {} are given twice", e.key());
            }
            let mut seen = BTreeSet::new();
            for a in &e.addresses {
                if !seen.insert(a.ip) {
                    bail!(
                        "endpoints of Service {} list {} twice: list each pod once",
                        e.key(),
                        a.ip
                    );
                }
            }
        }
        Ok(())
    }

    /// The endpoints of a Service (none when it has no entry).
    pub fn endpoints_of(&self, svc: &Service) -> &[EndpointAddress] {
        self.endpoints
            .iter()
            .find(|e| e.service == svc.name && e.namespace == svc.namespace)
            .map(|e| e.addresses.as_slice())
            .unwrap_or(&[])
    }

    /// Every address taken in the service range.
    pub fn taken_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.services
            .iter()
            .map(|s| s.cluster_ip)
            .chain(self.vips.iter().map(|v| v.vip))
            .collect()
    }

    /// The first free ClusterIP: 100.64.0.1 upward, never the original's 100.64.10.1.
    pub fn free_cluster_ip(&self) -> Result<Ipv4Addr> {
        let taken = self.taken_ips();
        let (net, len) = SERVICE_CIDR;
        let first = u32::from(net) + 1;
        let last = u32::from(net) + (1u32 << (32 - len)) - 2;
        (first..=last)
            .map(Ipv4Addr::from)
            .find(|ip| *ip != ORIGINAL_VIP && !taken.contains(ip))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the service range {net}/{len} is full: delete a Service or VIP first"
                )
            })
    }

    /// The first free NodePort in 30000-32767 for `proto`.
    pub fn free_node_port(&self, proto: Protocol, also_taken: &[u16]) -> Result<u16> {
        let taken: BTreeSet<u16> = self
            .services
            .iter()
            .flat_map(|s| s.ports.iter())
            .filter(|p| p.protocol == proto)
            .filter_map(|p| p.node_port)
            .chain(also_taken.iter().copied())
            .collect();
        (NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1)
            .find(|p| !taken.contains(p))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no free nodePort left in 30000-32767: delete a NodePort Service first"
                )
            })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn web() -> Service {
        let cluster_ip = "100.64.0.10".parse().unwrap();
        Service::synthetic("web", cluster_ip, Some("http"), 80, 8000, None)
    }

    fn err(s: &State) -> String {
        format!("{:#}", s.validate().unwrap_err())
    }

    /// Why a state holding just `svc` is refused.
    fn alone_err(svc: Service) -> String {
        err(&State {
            services: vec![svc],
            ..Default::default()
        })
    }

    #[test]
    fn good_state_validates() {
        let s = State {
            services: vec![web()],
            endpoints: vec![],
            vips: vec![StaticVip {
                vip: ORIGINAL_VIP,
                ips: vec!["11.0.0.2".parse().unwrap()],
            }],
        };
        s.validate().unwrap();
    }

    #[test]
    fn vip_outside_range() {
        let s = State {
            vips: vec![StaticVip {
                vip: "10.0.0.1".parse().unwrap(),
                ips: vec!["11.0.0.2".parse().unwrap()],
            }],
            ..Default::default()
        };
        let e = err(&s);
        assert!(
            e.contains("10.0.0.1 is outside the service range 100.64.0.0/16"),
            "{e}"
        );
    }

    #[test]
    fn cluster_ip_outside_range_and_broadcast() {
        let mut svc = web();
        svc.cluster_ip = "192.168.1.1".parse().unwrap();
        let e = alone_err(svc.clone());
        assert!(e.contains("outside the service range"), "{e}");
        svc.cluster_ip = "100.64.255.255".parse().unwrap();
        let e = alone_err(svc);
        assert!(e.contains("broadcast"), "{e}");
    }

    #[test]
    fn duplicate_vip_and_cluster_ip() {
        let mut other = web();
        other.name = "api".into();
        let e = err(&State {
            services: vec![web(), other],
            ..Default::default()
        });
        assert!(e.contains("already taken by Service default/web"), "{e}");
        let e = err(&State {
            services: vec![web()],
            vips: vec![StaticVip {
                vip: "100.64.0.10".parse().unwrap(),
                ips: vec!["11.0.0.2".parse().unwrap()],
            }],
            ..Default::default()
        });
        assert!(
            e.contains("VIP 100.64.0.10 is already taken by Service default/web"),
            "{e}"
        );
        let e = err(&State {
            services: vec![web(), web()],
            ..Default::default()
        });
        assert!(e.contains("defined twice"), "{e}");
    }

    #[test]
    fn invalid_ports() {
        assert!(format!("{:#}", valid_port("port", 0).unwrap_err()).contains("invalid port 0"));
        assert!(
            format!("{:#}", valid_port("target port", 70000).unwrap_err())
                .contains("invalid target port 70000")
        );
        assert_eq!(valid_port("port", 80).unwrap(), 80);
        let mut svc = web();
        svc.ports[0].port = 0;
        assert!(alone_err(svc).contains("invalid port 0"));
        let mut svc = web();
        svc.ports[0].target_port = 0;
        assert!(alone_err(svc).contains("invalid target port 0"));
        let mut svc = web();
        svc.ports.push(svc.ports[0].clone());
        svc.ports[1].name = None;
        assert!(alone_err(svc).contains("lists tcp/80 twice"));
        let mut svc = web();
        svc.ports.clear();
        assert!(alone_err(svc).contains("has no ports"));
    }

    #[test]
    fn node_ports() {
        let mut svc = web();
        svc.ports[0].node_port = Some(30080);
        assert!(alone_err(svc.clone()).contains("use type NodePort"));
        svc.type_ = ServiceType::NodePort;
        State {
            services: vec![svc.clone()],
            ..Default::default()
        }
        .validate()
        .unwrap();
        let mut other = svc.clone();
        other.name = "api".into();
        other.cluster_ip = "100.64.0.11".parse().unwrap();
        assert!(err(&State {
            services: vec![svc.clone(), other],
            ..Default::default()
        })
        .contains("already used by Service"));
        svc.ports[0].node_port = Some(80);
        assert!(alone_err(svc.clone()).contains("outside 30000-32767"));
        svc.ports[0].node_port = None;
        assert!(alone_err(svc).contains("has no nodePort"));
    }

    #[test]
    fn bad_protocol_type_and_names() {
        let e = format!("{:#}", Protocol::parse("icmp").unwrap_err());
        assert!(e.contains("bad protocol 'icmp'"), "{e}");
        assert_eq!(Protocol::parse("UDP").unwrap(), Protocol::Udp);
        assert!(ServiceType::parse("LoadBalancer").is_err());
        assert_eq!(
            ServiceType::parse("nodeport").unwrap(),
            ServiceType::NodePort
        );
        let mut svc = web();
        svc.name = "Web_1".into();
        assert!(alone_err(svc).contains("invalid Service name 'Web_1'"));
        // JSON as Kubernetes spells it, and a wrong protocol in JSON is refused.
        let j = serde_json::to_string(&web()).unwrap();
        assert!(
            j.contains("\"clusterIP\":\"100.64.0.10\"") && j.contains("\"protocol\":\"TCP\""),
            "{j}"
        );
        assert_eq!(serde_json::from_str::<Service>(&j).unwrap(), web());
        assert!(serde_json::from_str::<Service>(&j.replace("TCP", "ICMP")).is_err());
    }

    #[test]
    fn duplicate_endpoint_ip() {
        let a = EndpointAddress {
            ip: "11.0.0.2".parse().unwrap(),
            pod: "c2".into(),
            node: "w1".into(),
        };
        let e = Endpoints {
            service: "web".into(),
            namespace: "default".into(),
            addresses: vec![a.clone(), a],
        };
        let s = State {
            services: vec![web()],
            endpoints: vec![e],
            vips: vec![],
        };
        assert!(err(&s).contains("list 11.0.0.2 twice"), "{}", err(&s));
    }

    #[test]
    fn vip_endpoints() {
        let s = State {
            vips: vec![StaticVip {
                vip: ORIGINAL_VIP,
                ips: vec![],
            }],
            ..Default::default()
        };
        assert!(err(&s).contains("has no endpoint addresses"));
        let ip: Ipv4Addr = "11.0.0.2".parse().unwrap();
        let s = State {
            vips: vec![StaticVip {
                vip: ORIGINAL_VIP,
                ips: vec![ip, ip],
            }],
            ..Default::default()
        };
        assert!(err(&s).contains("twice"));
    }

    #[test]
    fn allocation_skips_taken_and_original() {
        let mut s = State::default();
        assert_eq!(
            s.free_cluster_ip().unwrap(),
            "100.64.0.1".parse::<Ipv4Addr>().unwrap()
        );
        let mut svc = web();
        svc.cluster_ip = "100.64.0.1".parse().unwrap();
        s.services.push(svc);
        assert_eq!(
            s.free_cluster_ip().unwrap(),
            "100.64.0.2".parse::<Ipv4Addr>().unwrap()
        );
        // Fill up to just before the original VIP: it is skipped.
        for i in 2..=(10 * 256) {
            s.vips.push(StaticVip {
                vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i),
                ips: vec![],
            });
        }
        assert_eq!(
            s.free_cluster_ip().unwrap(),
            "100.64.10.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(s.free_node_port(Protocol::Tcp, &[30000]).unwrap(), 30001);
    }
}
