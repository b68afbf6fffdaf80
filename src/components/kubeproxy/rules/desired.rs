//! The table as it should be for a Service state: per Service port a service chain and one
//! chain per endpoint, per VIP the same, and the map elements that lead to them.

use super::names::{endpoint_chain, external_chain, service_chain, vip_chain, vip_endpoint_chain};
use super::table::{Balancer, Key, MapName, Match, Rule, Statement, Verdict};
use crate::components::kubeproxy::model::{EndpointAddress, ServiceType, State};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";

/// The table as it should be: per-service chains and the elements of every map and set.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Every map, each with its elements (e.g. `100.64.0.10 . tcp . 80 : goto service-...`).
    pub maps: BTreeMap<MapName, BTreeMap<Key, Verdict>>,
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    pub services: usize,
    pub endpoints: usize,
    pub vips: usize,
}

impl Desired {
    fn map(&mut self, m: MapName) -> &mut BTreeMap<Key, Verdict> {
        self.maps.entry(m).or_default()
    }
}

/// The rule of a service (or VIP) chain that picks one of `endpoint_chains`: a random
/// pick among several, or, as upstream kube-proxy does since 2026, a plain goto when there
/// is one (no anonymous map: every map costs the kernel on each later change).
fn pick_endpoint(endpoint_chains: Vec<String>, what: &str) -> Rule {
    let n = endpoint_chains.len();
    let comment = format!("{what} ({n} endpoint{})", if n == 1 { "" } else { "s" });
    let statement = match <[String; 1]>::try_from(endpoint_chains) {
        Ok([one]) => Statement::Verdict(Verdict::Goto(one)),
        Err(targets) => Statement::Balance(Balancer { targets }),
    };
    Rule::new(statement).counted().commented(&comment)
}

/// Marks traffic from an endpoint to its own Service for masquerade, so the answer comes
/// back through the node (hairpin).
fn hairpin(ip: Ipv4Addr, what: &str) -> Rule {
    Rule::verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into()))
        .matching(Match::Saddr(ip))
        .counted()
        .commented(&format!("{what} hairpin: from its own endpoint"))
}

/// Computes the desired table for `state` (which must have been validated).
pub fn desired(state: &State) -> Desired {
    let mut d = Desired::default();
    for m in MapName::ALL {
        d.maps.insert(m, BTreeMap::new());
    }
    // Endpoints by Service (the first entry wins, as in State::endpoints_of), so that a
    // large state is not searched once per Service.
    let mut by_svc: HashMap<(&str, &str), &[EndpointAddress]> = HashMap::new();
    for e in &state.endpoints {
        by_svc
            .entry((e.namespace.as_str(), e.service.as_str()))
            .or_insert(e.addresses.as_slice());
    }
    let reject = || Verdict::Goto(REJECT_CHAIN.into());
    for svc in &state.services {
        d.services += 1;
        let eps: &[_] = by_svc
            .get(&(svc.namespace.as_str(), svc.name.as_str()))
            .copied()
            .unwrap_or(&[]);
        d.cluster_ips.insert(svc.cluster_ip);
        for port in &svc.ports {
            let spn = format!("{}/{}:{}", svc.namespace, svc.name, port.label());
            let key = Key::AddrProtoPort(svc.cluster_ip, port.protocol, port.port);
            let np_key = port
                .node_port
                .filter(|_| svc.type_ == ServiceType::NodePort)
                .map(|np| Key::ProtoPort(port.protocol, np));
            if eps.is_empty() {
                d.map(MapName::NoEndpointServices).insert(key, reject());
                if let Some(k) = np_key {
                    d.map(MapName::NoEndpointNodeports).insert(k, reject());
                }
                continue;
            }
            let svc_chain = service_chain(svc, port);
            let mut ep_chains = Vec::new();
            for ep in eps {
                d.endpoints += 1;
                let c = endpoint_chain(svc, port, ep.ip);
                let dnat = Rule::new(Statement::Dnat {
                    addr: ep.ip,
                    port: Some(port.target_port),
                })
                .matching(Match::L4Proto(port.protocol))
                .counted()
                .commented(&format!("{spn} -> pod {} on {}", ep.pod, ep.node));
                d.chains.insert(c.clone(), vec![hairpin(ep.ip, &spn), dnat]);
                ep_chains.push(c);
            }
            d.chains
                .insert(svc_chain.clone(), vec![pick_endpoint(ep_chains, &spn)]);
            d.map(MapName::ServiceIps)
                .insert(key, Verdict::Goto(svc_chain.clone()));
            if let Some(k) = np_key {
                let ext = external_chain(svc, port);
                let rules = vec![
                    Rule::verdict(Verdict::Jump(MARK_FOR_MASQUERADE.into()))
                        .commented(&format!("{spn} NodePort: masquerade")),
                    Rule::verdict(Verdict::Goto(svc_chain)).commented(&format!("{spn} NodePort")),
                ];
                d.chains.insert(ext.clone(), rules);
                d.map(MapName::ServiceNodeports)
                    .insert(k, Verdict::Goto(ext));
            }
        }
    }
    for v in &state.vips {
        d.vips += 1;
        let what = format!("VIP {}", v.vip);
        let mut ep_chains = Vec::new();
        for ip in &v.ips {
            let c = vip_endpoint_chain(v.vip, *ip);
            let dnat = Rule::new(Statement::Dnat {
                addr: *ip,
                port: None,
            })
            .counted()
            .commented(&format!("{what} -> {ip}"));
            d.chains.insert(c.clone(), vec![hairpin(*ip, &what), dnat]);
            ep_chains.push(c);
        }
        let chain = vip_chain(v.vip);
        let pick = pick_endpoint(ep_chains, &format!("{what} all protocols"));
        d.chains.insert(chain.clone(), vec![pick]);
        d.map(MapName::StaticVips)
            .insert(Key::Addr(v.vip), Verdict::Goto(chain));
    }
    d
}
